//! A hashing thread at work steps off its core for a moment while more
//! threads are runnable than the machine has cores.
//!
//! Why nice +15 and a short slice are not enough: Linux's scheduler
//! (EEVDF) keeps a thread's lag across a sleep, so an async worker that
//! ran more than its share wakes up not yet eligible and does not preempt
//! the hashing thread; the kernel looks again only at its next tick (4 ms
//! at 250 Hz). `perf sched` showed woken workers waiting 3 to 4 ms that
//! way during a login storm. Calling `sched_yield` on a timer helped only
//! where it also gave the core away each time a thread kept waiting came
//! back to it, which starved logins under a full load. Leaving the run
//! queue for a moment is what works: with the hashing thread asleep, the
//! waiting worker runs at once (bench/RESULTS.md has the three measured).
//!
//! So a timer signal raised at the hashing thread looks, every
//! [`WATCH_EVERY`], whether more threads are runnable than the machine has
//! cores online (`/proc/loadavg`, `/sys/devices/system/cpu/online`).
//! Once a look finds them, the thread sleeps [`STEP_FOR`] every
//! [`STEP_EVERY`], so a woken worker waits about that long at most (the
//! first wait after a quiet spell can still last a tick), and it looks
//! again every [`LOOK_EVERY`] steps. With nothing else to run it never
//! sleeps: a login alone is as fast as without. A thread steps aside only
//! after [`WORKED`] of its own CPU since its last step, so under a load
//! that fills every core a hash keeps about its nice share: slowed, never
//! starved.
//!
//! Both counts are the whole machine's: in a container limited by a CPU
//! quota or a cpuset, the threads step aside when the host is busy, not
//! when the container's own cores are. Everything the signal handler
//! calls is async-signal-safe (signal-safety(7)); it needs no privileges.
//! A step that interrupts a job holding a lock (a log line's writer) makes
//! whoever waits for that lock wait 0.1 ms longer. Jobs are CPU work: a
//! system call in one that `SA_RESTART` does not restart (`poll`,
//! `epoll_wait`, a socket read with a timeout) may end early with `EINTR`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// How often a hashing thread looks whether a core is wanted, while none
/// was: a look costs a few microseconds.
const WATCH_EVERY: Duration = Duration::from_millis(4);

/// How often a hashing thread steps aside while cores are wanted: about
/// the longest a woken worker waits behind it. Every 1 ms left most of
/// the storm's tail (bench/RESULTS.md).
const STEP_EVERY: Duration = Duration::from_micros(500);

/// How long a step lasts: room for a woken worker to answer a few
/// requests (a cached `me` takes about 20 µs).
const STEP_FOR: Duration = Duration::from_micros(100);

/// The CPU time a thread must have had since its last step (or the start
/// of its job) to take another. The timer counts wall time, so a thread
/// kept off its core comes back to a signal already due; stepping aside
/// again at once would leave a hash less than its nice share under a load
/// that fills the cores (bench/RESULTS.md: `sched_yield` on a timer
/// without such a guard starved logins).
const WORKED: Duration = Duration::from_micros(250);

/// Steps between two looks while stepping: a look every 4 ms either way.
const LOOK_EVERY: u32 = 8;

/// What one tick of the timer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Nothing: no core is wanted.
    Rest,
    /// Sleep for [`STEP_FOR`].
    StepAside,
    /// Cores became wanted: tick every [`STEP_EVERY`], and step aside now.
    StartStepping,
    /// No core is wanted any more: tick every [`WATCH_EVERY`] again.
    StopStepping,
}

/// The tick's action; `cores_wanted` is only asked when a look is due.
fn next_action(stepping: bool, look_due: bool, cores_wanted: impl FnOnce() -> bool) -> Action {
    if stepping && !look_due {
        return Action::StepAside;
    }
    match (stepping, cores_wanted()) {
        (false, true) => Action::StartStepping,
        (false, false) => Action::Rest,
        (true, true) => Action::StepAside,
        (true, false) => Action::StopStepping,
    }
}

/// The number of runnable threads in `/proc/loadavg`'s text
/// ("0.52 0.58 0.59 3/1212 12345": the fourth field's first number).
/// Allocates nothing: the signal handler calls it.
fn runnable_threads(loadavg: &[u8]) -> Option<u64> {
    let field = loadavg.split(|&byte| byte == b' ').nth(3)?;
    let digits = field.split(|&byte| byte == b'/').next()?;
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &byte| {
        byte.is_ascii_digit()
            .then(|| number * 10 + u64::from(byte - b'0'))
    })
}

/// The number of CPUs in a kernel CPU list such as
/// `/sys/devices/system/cpu/online`'s ("0-3,5,7-9").
fn cpus_in_list(list: &str) -> Option<u64> {
    list.trim().split(',').try_fold(0u64, |count, range| {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
        (first <= last).then(|| count + last - first + 1)
    })
}

/// The machine's cores online, as `/proc/loadavg` counts threads: all of
/// them, whatever this process's affinity (musl's `sysconf` counts only
/// those). At least 1.
fn online_cores() -> u64 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| cpus_in_list(&list))
        .or_else(|| {
            // SAFETY: sysconf only reads.
            u64::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).ok()
        })
        .unwrap_or(1)
        .max(1)
}

/// [`online_cores`], read once, before the handler is installed.
static ONLINE_CORES: AtomicU64 = AtomicU64::new(1);

/// The state the signal handler reads and writes: only ever its own
/// thread's, so relaxed atomics suffice (they make each access whole
/// when the handler interrupts the thread). Constant-initialised and
/// without a destructor, so the handler's access is a plain TLS access.
struct ThreadState {
    /// A job is running (the timer is armed only then).
    hashing: AtomicBool,
    /// The thread's timer (a `timer_t`).
    timer: AtomicUsize,
    /// `/proc/loadavg`, open; -1 when it could not be opened.
    loadavg: AtomicI32,
    /// Ticking every [`STEP_EVERY`] rather than [`WATCH_EVERY`].
    stepping: AtomicBool,
    /// Steps since the last look.
    steps_since_look: AtomicU64,
    /// The thread's CPU time at its last step or the start of its job,
    /// in nanoseconds.
    cpu_at_last_step: AtomicU64,
    /// Signals received, ticks handled while hashing, and steps taken
    /// (for the tests).
    signals: AtomicU64,
    ticks: AtomicU64,
    steps: AtomicU64,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            hashing: AtomicBool::new(false),
            timer: AtomicUsize::new(0),
            loadavg: AtomicI32::new(-1),
            stepping: AtomicBool::new(false),
            steps_since_look: AtomicU64::new(0),
            cpu_at_last_step: AtomicU64::new(0),
            signals: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            steps: AtomicU64::new(0),
        }
    };
}

/// The timer's signal: a real-time one, raised only at the thread that
/// made the timer. Neither std, tokio nor glibc uses it.
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 7
}

fn timespec(duration: Duration) -> libc::timespec {
    // SAFETY: zero is a valid timespec (plain integers); starting from it
    // keeps any private padding field of other targets.
    let mut spec: libc::timespec = unsafe { std::mem::zeroed() };
    spec.tv_sec = duration.as_secs() as _;
    spec.tv_nsec = duration.subsec_nanos() as _;
    spec
}

/// Arms `timer` to tick every `every`; zero stops it.
fn arm(timer: libc::timer_t, every: Duration) {
    // SAFETY: zero is a valid itimerspec; the spec outlives the call;
    // timer_settime is async-signal-safe, and an id that is no timer
    // (never the case here) only makes it fail.
    unsafe {
        let mut spec: libc::itimerspec = std::mem::zeroed();
        spec.it_interval = timespec(every);
        spec.it_value = timespec(every);
        libc::timer_settime(timer, 0, &spec, std::ptr::null_mut());
    }
}

/// The calling thread's CPU time, in nanoseconds.
fn cpu_nanos() -> u64 {
    // SAFETY: clock_gettime is async-signal-safe; the timespec outlives
    // the call. It cannot fail for this clock; zero if it did.
    unsafe {
        let mut now = timespec(Duration::ZERO);
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now);
        (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
    }
}

/// More threads are runnable than there are cores: one is waiting.
fn cores_wanted(loadavg: libc::c_int) -> bool {
    let mut text = [0u8; 128];
    // SAFETY: lseek and read are async-signal-safe; the buffer outlives
    // the call and is as long as said. Reading /proc/loadavg from its
    // start makes the kernel write it afresh.
    let read = unsafe {
        if libc::lseek(loadavg, 0, libc::SEEK_SET) != 0 {
            return false;
        }
        libc::read(loadavg, text.as_mut_ptr().cast(), text.len())
    };
    let Ok(read) = usize::try_from(read) else {
        return false;
    };
    runnable_threads(&text[..read]).is_some_and(|runnable| runnable > ONLINE_CORES.load(Relaxed))
}

impl ThreadState {
    fn tick(&self) {
        self.signals.fetch_add(1, Relaxed);
        if !self.hashing.load(Relaxed) {
            return;
        }
        self.ticks.fetch_add(1, Relaxed);
        let cpu = cpu_nanos();
        if cpu.saturating_sub(self.cpu_at_last_step.load(Relaxed)) < WORKED.as_nanos() as u64 {
            return;
        }
        let stepping = self.stepping.load(Relaxed);
        let look_due = self.steps_since_look.load(Relaxed) >= u64::from(LOOK_EVERY);
        let timer = self.timer.load(Relaxed) as libc::timer_t;
        match next_action(stepping, look_due, || {
            cores_wanted(self.loadavg.load(Relaxed))
        }) {
            Action::Rest => {}
            Action::StopStepping => {
                self.stepping.store(false, Relaxed);
                arm(timer, WATCH_EVERY);
            }
            Action::StartStepping => {
                self.stepping.store(true, Relaxed);
                self.steps_since_look.store(0, Relaxed);
                arm(timer, STEP_EVERY);
                self.step_aside(cpu);
            }
            Action::StepAside => {
                if look_due {
                    self.steps_since_look.store(0, Relaxed);
                }
                self.step_aside(cpu);
            }
        }
    }

    fn step_aside(&self, cpu: u64) {
        self.steps_since_look.fetch_add(1, Relaxed);
        self.steps.fetch_add(1, Relaxed);
        self.cpu_at_last_step.store(cpu, Relaxed);
        let pause = timespec(STEP_FOR);
        // SAFETY: pselect is async-signal-safe (nanosleep is not listed);
        // with no descriptors it only sleeps. The timeout outlives the call.
        unsafe {
            libc::pselect(
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &pause,
                std::ptr::null(),
            );
        }
    }
}

extern "C" fn on_tick(_: libc::c_int) {
    // SAFETY: the handler's system calls may set errno; the interrupted
    // code must find it as it left it.
    let errno = unsafe { *libc::__errno_location() };
    THREAD.with(ThreadState::tick);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Installs the handler once; false when the kernel refused it.
fn handler_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        ONLINE_CORES.store(online_cores(), Relaxed);
        // SAFETY: the actions outlive the calls; the handler touches only
        // its own thread's state and async-signal-safe calls.
        // SA_RESTART: a system call the signal interrupts (a log line's
        // write) is restarted.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_tick as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal(), &action, &mut previous) != 0 {
                return false;
            }
            // Someone else's handler (a library's) stays, and the threads
            // hash without stepping aside.
            if previous.sa_sigaction != libc::SIG_DFL {
                libc::sigaction(signal(), &previous, std::ptr::null_mut());
                return false;
            }
            true
        }
    })
}

/// A hashing thread's timer, stopped between jobs. It belongs to the
/// thread that made it (the signal goes to that thread): not `Send`.
pub struct Ticker {
    timer: libc::timer_t,
    _loadavg: OwnedFd,
}

/// The timer running, until dropped (at the end of a job).
pub struct Ticking<'a>(&'a Ticker);

impl Ticker {
    /// The calling thread's timer; None where the handler, the timer or
    /// `/proc/loadavg` is refused (the thread then hashes as it is).
    pub fn for_this_thread() -> Option<Ticker> {
        // Without the handler the signal's default action would end the
        // process: no handler, no timer.
        if !handler_installed() {
            return None;
        }
        // SAFETY: a NUL-terminated path; the descriptor returned is ours.
        let loadavg = unsafe {
            let fd = libc::open(c"/proc/loadavg".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))?
        };
        // SAFETY: the event and the timer id outlive the call.
        let timer = unsafe {
            let mut event: libc::sigevent = std::mem::zeroed();
            event.sigev_notify = libc::SIGEV_THREAD_ID;
            event.sigev_signo = signal();
            event.sigev_notify_thread_id = libc::gettid();
            let mut timer: libc::timer_t = std::ptr::null_mut();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) != 0 {
                return None;
            }
            timer
        };
        THREAD.with(|state| {
            state.timer.store(timer as usize, Relaxed);
            state.loadavg.store(loadavg.as_raw_fd(), Relaxed);
        });
        Some(Ticker {
            timer,
            _loadavg: loadavg,
        })
    }

    /// Starts the timer for one job, watching; the job's first step
    /// comes after [`WORKED`] of its own CPU at the earliest.
    pub fn start(&self) -> Ticking<'_> {
        THREAD.with(|state| {
            state.stepping.store(false, Relaxed);
            state.cpu_at_last_step.store(cpu_nanos(), Relaxed);
        });
        // Armed before the job counts as hashing: a stray signal in
        // between does nothing.
        arm(self.timer, WATCH_EVERY);
        THREAD.with(|state| state.hashing.store(true, Relaxed));
        Ticking(self)
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        // Not hashing first: a tick between the two lines then does
        // nothing, and cannot arm the timer again.
        THREAD.with(|state| state.hashing.store(false, Relaxed));
        arm(self.0.timer, Duration::ZERO);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        THREAD.with(|state| {
            state.hashing.store(false, Relaxed);
            state.loadavg.store(-1, Relaxed);
        });
        // SAFETY: the timer is ours and used no more.
        unsafe {
            libc::timer_delete(self.timer);
        }
    }
}

/// [`ONLINE_CORES`], the count the handler compares with.
#[cfg(test)]
pub fn compared_cores() -> u64 {
    ONLINE_CORES.load(Relaxed)
}

/// What the calling thread's handler has seen and done so far.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Signals received, hashing or not.
    pub signals: u64,
    /// Signals received while hashing.
    pub ticks: u64,
    /// Steps aside.
    pub steps: u64,
}

#[cfg(test)]
pub fn counts() -> Counts {
    THREAD.with(|state| Counts {
        signals: state.signals.load(Relaxed),
        ticks: state.ticks.load(Relaxed),
        steps: state.steps.load(Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runnable_count_is_read_from_loadavg() {
        assert_eq!(runnable_threads(b"0.52 0.58 0.59 3/1212 12345\n"), Some(3));
        assert_eq!(runnable_threads(b"10.00 9.00 8.00 17/80 1\n"), Some(17));
        for text in [
            &b""[..],
            b"0.52 0.58 0.59",
            b"0.52 0.58 0.59 /1212 12345",
            b"0.52 0.58 0.59 x/1212 12345",
            b"0.52 0.58 0.59 99999999999999999999/1 1",
        ] {
            assert_eq!(runnable_threads(text), None, "{text:?}");
        }
    }

    #[test]
    fn cpus_are_counted_from_a_kernel_cpu_list() {
        assert_eq!(cpus_in_list("0\n"), Some(1));
        assert_eq!(cpus_in_list("0-1\n"), Some(2));
        assert_eq!(cpus_in_list("0-3,5,7-9"), Some(8));
        for list in ["", "x", "3-1", "0-", "0,,1"] {
            assert_eq!(cpus_in_list(list), None, "{list:?}");
        }
        assert!(online_cores() >= 1);
    }

    #[test]
    fn this_machine_s_loadavg_counts_the_caller() {
        let text = std::fs::read("/proc/loadavg").unwrap();
        assert!(runnable_threads(&text).unwrap() >= 1);
    }

    #[test]
    fn a_thread_steps_aside_only_while_cores_are_wanted() {
        use Action::*;
        // Watching: it looks at every tick.
        assert_eq!(next_action(false, false, || true), StartStepping);
        assert_eq!(next_action(false, true, || true), StartStepping);
        assert_eq!(next_action(false, false, || false), Rest);
        // Stepping: it looks only when a look is due.
        assert_eq!(next_action(true, false, || panic!("looked")), StepAside);
        assert_eq!(next_action(true, true, || true), StepAside);
        assert_eq!(next_action(true, true, || false), StopStepping);
    }
}
