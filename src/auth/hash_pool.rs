//! The threads that run bcrypt: a pool of its own, at a lower scheduling
//! priority than everything else in the process.
//!
//! bcrypt is the one CPU-bound work authql does. On tokio's blocking pool
//! it competed with the async workers as an equal, so during a flood of
//! logins a cached `me` waited behind a 280 ms hash for a core. Here each
//! hashing thread lowers its own priority once (Linux: `nice` is per
//! thread), and the kernel hands a core to a woken worker first. With no
//! other work to do, a niced thread still gets the whole core: a login
//! alone is as fast as before.

use std::panic::AssertUnwindSafe;

type Job = Box<dyn FnOnce() + Send>;

/// How much lower than the process the hashing threads run (`nice` steps;
/// 10 gives a thread about a tenth of a contended core's time).
const NICE_STEP: i32 = 10;

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
                    for job in queue {
                        // A panicking job drops its answer channel, which
                        // its caller sees; the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a hashing thread, in the caller's span: `None` when
    /// it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _ = answer.send(span.in_scope(work));
        });
        // The threads live as long as `self`, so the send cannot fail.
        self.jobs.send(job).ok()?;
        answered.await.ok()
    }
}

/// Lowers the calling thread's priority by [`NICE_STEP`]; where that is
/// not possible it runs as it is (the work is bounded by the semaphore in
/// front either way).
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
                if libc::setpriority(libc::PRIO_PROCESS, tid, lower) != 0 {
                    tracing::debug!("could not lower the hashing thread's priority");
                }
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

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_goes_on() {
        let pool = HashPool::new(1).unwrap();
        let panicked = pool.run(|| -> u32 { panic!("in a hashing job") }).await;
        assert!(panicked.is_none());
        assert_eq!(pool.run(|| 7).await, Some(7));
    }
}
