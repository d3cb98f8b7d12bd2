//! The threads that run bcrypt: a pool of its own, at a lower scheduling
//! priority than everything else in the process.
//!
//! bcrypt is the one CPU-bound work authql does. On tokio's blocking pool
//! it competed with the async workers as an equal, so during a flood of
//! logins a cached `me` waited behind a 280 ms hash for a core. Here each
//! hashing thread lowers its own priority once (Linux: `nice` is per
//! thread), asks for the shortest time slice, and while it hashes steps
//! off its core for a moment whenever more threads are runnable than the
//! machine has cores (`step_aside`), so the kernel hands a core to a woken
//! worker first and soon. With no other work to do, a hashing thread
//! still gets the whole core: a login alone is as fast as before.

use std::panic::AssertUnwindSafe;

#[cfg(target_os = "linux")]
mod step_aside;

type Job = Box<dyn FnOnce() + Send>;

/// How much lower than the process the hashing threads run, in `nice`
/// steps: 15 gives a thread a weight of 36 against a normal thread's 1,024
/// (bench/RESULTS.md has what 10 and 15 did to a login storm).
const NICE_STEP: i32 = 15;

pub struct HashPool {
    jobs: crossbeam_channel::Sender<Job>,
}

impl HashPool {
    /// Starts `threads` hashing threads; they end when the pool is dropped.
    ///
    /// # Errors
    /// When the operating system refuses a thread.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("authql-hash-{n}"))
                .spawn(move || {
                    lower_priority();
                    #[cfg(target_os = "linux")]
                    let ticker = step_aside::Ticker::for_this_thread();
                    for job in queue {
                        #[cfg(target_os = "linux")]
                        let _ticking = ticker.as_ref().map(step_aside::Ticker::start);
                        // A panicking job drops its answer channel, which
                        // its caller sees; the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a hashing thread, its log lines with the caller's
    /// request id: `None` when it panicked. `work` should be CPU work: on
    /// Linux the thread's timer signal may end a system call that is not
    /// restarted after a signal (`poll`, say) early.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let request_id = crate::telemetry::current_request_id();
        let job: Job = Box::new(move || {
            let _ = answer.send(crate::telemetry::with_request_id(request_id, work));
        });
        // The threads live as long as `self`, so the send cannot fail.
        self.jobs.send(job).ok()?;
        answered.await.ok()
    }
}

/// Lowers the calling thread's priority by [`NICE_STEP`], and asks for
/// the shortest time slice the kernel allows; where that is not possible
/// it runs as it is (the work is bounded by the semaphore in front either
/// way).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            if *libc::__errno_location() == 0 {
                let lower = (current + NICE_STEP).min(19);
                if !set_nice_and_slice(lower)
                    && libc::setpriority(libc::PRIO_PROCESS, tid, lower) != 0
                {
                    tracing::debug!("could not lower the hashing thread's priority");
                }
            }
        }
    }
}

/// The time slice a hashing thread asks for (the kernel's least, 0.1 ms):
/// the scheduler lets a running thread finish its slice before a woken
/// async worker takes the core, so a short slice bounds that wait.
#[cfg(target_os = "linux")]
const SLICE_NANOS: u64 = 100_000;

/// `sched_attr`'s flag that keeps the thread's policy (an inherited batch
/// or idle policy stays), changing only its nice value and slice.
#[cfg(target_os = "linux")]
const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;

/// `sched_setattr` on the calling thread: its own policy kept, at `nice`,
/// with [`SLICE_NANOS`] as its slice (Linux 6.12 and later; earlier
/// kernels ignore the slice). False when the call is refused (a kernel
/// older than 4.13, a real-time policy, a seccomp filter).
#[cfg(target_os = "linux")]
fn set_nice_and_slice(nice: i32) -> bool {
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: 0, // ignored: SCHED_FLAG_KEEP_POLICY
        sched_flags: SCHED_FLAG_KEEP_POLICY,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: SLICE_NANOS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: the attributes outlive the call, which only reads them;
    // pid 0 is the calling thread.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        // SAFETY: as in `lower_priority`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_below_the_callers_priority() {
        let pool = HashPool::new(1).unwrap();
        let caller = own_nice();
        let worker = pool.run(own_nice).await.unwrap();
        assert!(
            worker > caller || worker == 19,
            "caller {caller}, worker {worker}"
        );
    }

    /// The kernel's own account of the calling thread's slice, where it
    /// honours a slice asked for (Linux 6.12 and later).
    #[cfg(target_os = "linux")]
    fn own_slice_if_settable() -> Option<u64> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        let mut version = release.trim().split(['.', '-']).map(str::parse::<u32>);
        let (Some(Ok(major)), Some(Ok(minor))) = (version.next(), version.next()) else {
            return None;
        };
        if (major, minor) < (6, 12) {
            return None;
        }
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|line| line.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_ask_for_the_shortest_slice() {
        let pool = HashPool::new(1).unwrap();
        // The slice the thread started with; then whether this kernel lets
        // a thread set one at all (asking again changes nothing).
        let (slice, settable) = pool
            .run(|| (own_slice_if_settable(), set_nice_and_slice(own_nice())))
            .await
            .unwrap();
        if let (Some(slice), true) = (slice, settable) {
            assert_eq!(slice, SLICE_NANOS);
            assert_ne!(own_slice_if_settable(), Some(SLICE_NANOS));
        }
    }

    /// Threads that spin, at the lowest priority (nice 19), until dropped.
    #[cfg(target_os = "linux")]
    struct Spinners {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    #[cfg(target_os = "linux")]
    impl Spinners {
        /// As many as the machine has cores online (installing the
        /// handler reads that count): with the hashing thread, one more
        /// runnable thread than cores, while the hashing thread, niced
        /// less, still gets most of its core.
        async fn filling_every_core(pool: &HashPool) -> Self {
            pool.run(|| ()).await.unwrap();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let threads = (0..step_aside::compared_cores())
                .map(|_| {
                    let stop = std::sync::Arc::clone(&stop);
                    std::thread::spawn(move || {
                        // SAFETY: as in `lower_priority`.
                        unsafe {
                            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
                        }
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                })
                .collect();
            Self { stop, threads }
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for Spinners {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_hashing_thread_steps_aside_while_every_core_is_busy() {
        use std::time::{Duration, Instant};
        let pool = HashPool::new(1).unwrap();
        let spinners = Spinners::filling_every_core(&pool).await;
        // Spins until three steps were taken, or 10 s have passed.
        let steps = pool
            .run(|| {
                let before = step_aside::counts().steps;
                let deadline = Instant::now() + Duration::from_secs(10);
                while step_aside::counts().steps - before < 3 && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                step_aside::counts().steps - before
            })
            .await
            .unwrap();
        drop(spinners);
        assert!(steps >= 3, "{steps} steps");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_timer_ticks_while_a_job_runs_and_stops_after() {
        use std::time::{Duration, Instant};
        let pool = HashPool::new(1).unwrap();
        // 20 ms of work: about 5 ticks of the watching timer.
        let during = pool
            .run(|| {
                let before = step_aside::counts();
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(20) {
                    std::hint::spin_loop();
                }
                step_aside::counts().ticks - before.ticks
            })
            .await
            .unwrap();
        assert!(during >= 1, "{during} ticks while hashing");
        // Idle for 200 ms: a running timer would signal about 50 times; a
        // stopped one, at most one already due as the job ended, and
        // those in the next job's first moments on a loaded machine.
        let before = pool.run(step_aside::counts).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = pool.run(step_aside::counts).await.unwrap();
        assert!(
            after.signals - before.signals < 5,
            "{} signals while idle",
            after.signals - before.signals
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_job_that_waits_is_not_cut_short_and_takes_no_step() {
        use std::io::{Read as _, Write as _};
        use std::time::Duration;
        let pool = HashPool::new(1).unwrap();
        // Cores wanted all along: only the CPU the job has not used keeps
        // it from stepping aside.
        let spinners = Spinners::filling_every_core(&pool).await;
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        let (reading, read_begins) = std::sync::mpsc::channel::<()>();
        let late_writer = std::thread::spawn(move || {
            // 40 ms after the read begins: about 10 ticks of the timer.
            if read_begins.recv().is_ok() {
                std::thread::sleep(Duration::from_millis(40));
                // Fails only when the read already has.
                let _ = writer.write_all(b"x");
            }
        });
        // One read, which std does not retry: a signal that cut it short
        // (no SA_RESTART) would show as an error.
        let (read, ticks, steps) = pool
            .run(move || {
                let before = step_aside::counts();
                let _ = reading.send(());
                let mut byte = [0u8; 1];
                let read = reader.read(&mut byte).map_err(|err| err.kind());
                let after = step_aside::counts();
                (read, after.ticks - before.ticks, after.steps - before.steps)
            })
            .await
            .unwrap();
        drop(spinners);
        late_writer.join().unwrap();
        assert_eq!(read, Ok(1));
        assert!(ticks >= 3, "{ticks} ticks");
        // Off the CPU, the thread has nothing to step away from.
        assert_eq!(steps, 0, "steps while waiting");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_signal_at_a_thread_that_is_not_hashing_does_nothing() {
        let pool = HashPool::new(1).unwrap();
        // Once a job ran, the pool's thread has installed the handler
        // (without one, the signal would end the process); raise its
        // signal here.
        pool.run(|| ()).await.unwrap();
        let before = step_aside::counts();
        // SAFETY: raising a signal whose handler is installed.
        assert_eq!(unsafe { libc::raise(libc::SIGRTMIN() + 7) }, 0);
        let after = step_aside::counts();
        assert_eq!(after.signals, before.signals + 1);
        assert_eq!((after.ticks, after.steps), (before.ticks, before.steps));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_goes_on() {
        let pool = HashPool::new(1).unwrap();
        let panicked = pool.run(|| -> u32 { panic!("in a hashing job") }).await;
        assert!(panicked.is_none());
        assert_eq!(pool.run(|| 7).await, Some(7));
    }
}
