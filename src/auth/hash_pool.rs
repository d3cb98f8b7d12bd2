//! The threads that run bcrypt: a pool of its own, at a lower scheduling
//! priority than everything else in the process.
//!
//! bcrypt is the one CPU-bound work authql does. On tokio's blocking pool
//! it competed with the async workers as an equal, so during a flood of
//! logins a cached `me` waited behind a 280 ms hash for a core. Here each
//! hashing thread lowers its own priority once (Linux: `nice` is per
//! thread), asks for the shortest time slice, and while it hashes offers
//! its core every 2 ms (`yielding`), so the kernel hands a core to a
//! woken worker first and soon. With no other work to do, a niced thread
//! still gets the whole core: a login alone runs within a few percent of
//! an unniced one (bench/RESULTS.md).

use std::panic::AssertUnwindSafe;

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
                    let offers = yielding::Offers::for_this_thread();
                    for job in queue {
                        #[cfg(target_os = "linux")]
                        let _offering = offers.as_ref().map(yielding::Offers::start);
                        // A panicking job drops its answer channel, which
                        // its caller sees; the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a hashing thread, its log lines with the caller's
    /// request id: `None` when it panicked.
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

/// A hashing thread at work offers its core to any other thread every
/// [`yielding::EVERY`].
///
/// Why the niceness and the short slice are not enough: Linux's scheduler
/// (EEVDF) keeps a thread's lag across a sleep. An async worker that ran
/// more than its share wakes up not yet eligible, so it does not preempt
/// the hashing thread when it wakes; the kernel looks again only at its
/// next tick (4 ms at 250 Hz), whatever the hashing thread's nice value
/// or slice. `perf sched` showed woken workers waiting 3 to 4 ms behind a
/// hashing thread that way during a login storm (bench/RESULTS.md). A
/// timer signal whose handler calls `sched_yield` makes the kernel look
/// again every [`yielding::EVERY`] while a hash runs, without privileges;
/// with nothing else to run, `sched_yield` returns at once. A thread that
/// has not worked 1 ms of CPU since its last offer makes none, so one
/// kept waiting is not sent to the back again as soon as it returns. (`SCHED_IDLE`
/// would be preempted at once too, but a thread cannot leave it without
/// privileges, and under a load that fills the cores it would starve
/// logins.)
#[cfg(target_os = "linux")]
mod yielding {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    /// How long a woken worker may wait behind a hash, at most. Every
    /// 0.5 ms cost a login alone 7% of its rate (bench/RESULTS.md); every
    /// 2 ms, 3%, for the same gain in a storm.
    pub const EVERY: Duration = Duration::from_millis(2);

    /// The CPU time a thread must have used since its last offer to make
    /// another. The timer counts wall time, so a thread that was kept off
    /// its core for 2 ms comes back to a signal already due; yielding then
    /// would hand the core away again at once, and under a load that fills
    /// the cores would leave a hash less than its nice value's share.
    const WORKED_NANOS: u64 = 1_000_000;

    thread_local! {
        /// Offers the thread has made (for the tests). Both are
        /// constant-initialised without a destructor, so the handler's
        /// access is a plain TLS access, with no lazy set-up.
        static OFFERED: AtomicU64 = const { AtomicU64::new(0) };
        /// The thread's CPU time at its last offer, in nanoseconds.
        static LAST_OFFER: AtomicU64 = const { AtomicU64::new(0) };
        /// Signals the thread has received, offer or not (for the tests).
        static SIGNALLED: AtomicU64 = const { AtomicU64::new(0) };
    }

    /// How many offers the calling thread has made.
    #[cfg(test)]
    pub fn offered() -> u64 {
        OFFERED.with(|offered| offered.load(Ordering::Relaxed))
    }

    /// How many of the timer's signals the calling thread has received.
    #[cfg(test)]
    pub fn signalled() -> u64 {
        SIGNALLED.with(|signalled| signalled.load(Ordering::Relaxed))
    }

    /// The timer's signal: a real-time one, raised only at the thread that
    /// made the timer. Neither std, tokio nor glibc uses it.
    fn signal() -> libc::c_int {
        libc::SIGRTMIN() + 7
    }

    /// The calling thread's CPU time, in nanoseconds.
    fn cpu_nanos() -> u64 {
        // SAFETY: clock_gettime is async-signal-safe; the timespec outlives
        // the call. It cannot fail for this clock; zero if it did.
        unsafe {
            let mut now: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now);
            (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
        }
    }

    extern "C" fn offer_the_core(_: libc::c_int) {
        SIGNALLED.with(|signalled| signalled.fetch_add(1, Ordering::Relaxed));
        let now = cpu_nanos();
        if now.saturating_sub(LAST_OFFER.with(|last| last.load(Ordering::Relaxed))) < WORKED_NANOS {
            return;
        }
        LAST_OFFER.with(|last| last.store(now, Ordering::Relaxed));
        OFFERED.with(|offered| offered.fetch_add(1, Ordering::Relaxed));
        // SAFETY: sched_yield is async-signal-safe, cannot fail and leaves
        // errno alone.
        unsafe {
            libc::sched_yield();
        }
    }

    /// A timer that signals the thread that made it; it stops when dropped.
    pub struct Offers {
        timer: libc::timer_t,
    }

    /// The timer running, until dropped (at the end of a job).
    pub struct Offering<'a>(&'a Offers);

    impl Offers {
        /// The calling thread's timer, stopped; None where the kernel
        /// refuses one (the thread then hashes without offering its core).
        pub fn for_this_thread() -> Option<Offers> {
            // Without the handler the signal's default action would end the
            // process: no handler, no timer.
            static HANDLER: OnceLock<bool> = OnceLock::new();
            let installed = *HANDLER.get_or_init(|| {
                // SAFETY: the action outlives the call; the handler only
                // reads a clock, counts and yields. SA_RESTART: a system
                // call the signal interrupts (a log line's write) is
                // restarted.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = offer_the_core as extern "C" fn(libc::c_int) as usize;
                    action.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    libc::sigaction(signal(), &action, std::ptr::null_mut()) == 0
                }
            });
            if !installed {
                return None;
            }
            // SAFETY: the event and the timer id outlive the call.
            unsafe {
                let mut event: libc::sigevent = std::mem::zeroed();
                event.sigev_notify = libc::SIGEV_THREAD_ID;
                event.sigev_signo = signal();
                event.sigev_notify_thread_id = libc::gettid();
                let mut timer: libc::timer_t = std::ptr::null_mut();
                (libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) == 0)
                    .then_some(Offers { timer })
            }
        }

        /// Starts the timer for one job.
        pub fn start(&self) -> Offering<'_> {
            self.set(EVERY);
            Offering(self)
        }

        /// Every `every`, from `every` on; zero stops the timer.
        fn set(&self, every: Duration) {
            // SAFETY: zero is a valid timespec and itimerspec (plain
            // integers); starting from it keeps any private padding field
            // of other targets. The timer is alive; the spec outlives the
            // call.
            unsafe {
                let mut period: libc::timespec = std::mem::zeroed();
                period.tv_sec = every.as_secs() as _;
                period.tv_nsec = every.subsec_nanos() as _;
                let mut spec: libc::itimerspec = std::mem::zeroed();
                spec.it_interval = period;
                spec.it_value = period;
                libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut());
            }
        }
    }

    impl Drop for Offering<'_> {
        fn drop(&mut self) {
            self.0.set(Duration::ZERO);
        }
    }

    impl Drop for Offers {
        fn drop(&mut self) {
            // SAFETY: the timer is ours and used no more.
            unsafe {
                libc::timer_delete(self.timer);
            }
        }
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_working_hashing_thread_offers_its_core_and_an_idle_one_does_not() {
        use std::time::{Duration, Instant};
        let pool = HashPool::new(1).unwrap();
        // A job that computes until it has made three offers (one every
        // 2 ms), or gives up after 10 s.
        let seen = pool
            .run(|| {
                let before = yielding::offered();
                let deadline = Instant::now() + Duration::from_secs(10);
                while yielding::offered() - before < 3 && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                yielding::offered() - before
            })
            .await
            .unwrap();
        assert!(seen >= 3, "{seen} offers");
        // Idle for 200 ms: a running timer would signal about 100 times; a
        // stopped one, at most a signal still pending at the end of the
        // job, and those in the next job's first moments (a loaded machine
        // may keep it off its core for a while).
        let signalled = pool.run(yielding::signalled).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = pool.run(yielding::signalled).await.unwrap();
        assert!(
            next - signalled < 10,
            "{} signals while idle",
            next - signalled
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_job_that_waits_makes_no_offers_and_is_not_cut_short() {
        use std::io::{Read as _, Write as _};
        use std::time::Duration;
        let pool = HashPool::new(1).unwrap();
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        let late_writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(40));
            // Fails only when the read already has.
            let _ = writer.write_all(b"x");
        });
        // One read, which std does not retry: a signal that cut it short
        // (no SA_RESTART) would show as an error.
        let (read, signals, offers) = pool
            .run(move || {
                let (signals, offers) = (yielding::signalled(), yielding::offered());
                let mut byte = [0u8; 1];
                let read = reader.read(&mut byte).map_err(|err| err.kind());
                (
                    read,
                    yielding::signalled() - signals,
                    yielding::offered() - offers,
                )
            })
            .await
            .unwrap();
        assert_eq!(read, Ok(1));
        late_writer.join().unwrap();
        assert!(signals >= 3, "{signals} signals");
        // Off the CPU, the thread has nothing to hand over.
        assert!(offers <= 1, "{offers} offers while waiting");
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_goes_on() {
        let pool = HashPool::new(1).unwrap();
        let panicked = pool.run(|| -> u32 { panic!("in a hashing job") }).await;
        assert!(panicked.is_none());
        assert_eq!(pool.run(|| 7).await, Some(7));
    }
}
