//! The robust, process-shared mutex underneath `Lock`, `RLock`,
//! `Condition`, `Barrier` and `Value`: a glibc `pthread_mutex_t` with
//! `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`, plus a poison flag
//! and the holder's identity, all in shared memory.
//!
//! Robustness comes from the kernel: each thread's robust list (kept by
//! libc) names the mutexes it holds, and when the thread dies the kernel
//! marks each one `FUTEX_OWNER_DIED` and wakes a waiter, whose lock call
//! returns `EOWNERDEAD`. We then mark the mutex consistent at once (so it
//! stays usable) and raise the poison flag, which every acquirer sees until
//! someone clears it — `std::sync::Mutex` poisoning, across processes.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use super::futex::Deadline;

// glibc's values (not all of them are in the libc crate for every target).
const PTHREAD_MUTEX_RECURSIVE: libc::c_int = 1;
const PTHREAD_MUTEX_ERRORCHECK: libc::c_int = 2;
const PTHREAD_PROCESS_SHARED: libc::c_int = 1;
const PTHREAD_MUTEX_ROBUST: libc::c_int = 1;

/// How long an acquire may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum How {
    /// Until acquired.
    Block,
    /// Not at all.
    Try,
    /// Until the deadline.
    Until(Deadline),
}

impl How {
    /// Python's `acquire(block, timeout)`.
    pub(crate) fn python(block: bool, timeout: Option<Duration>) -> How {
        match (block, timeout) {
            (false, _) => How::Try,
            (true, None) => How::Block,
            (true, Some(t)) => How::Until(Deadline::after(Some(t))),
        }
    }
}

/// What an acquire found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Held now; `poisoned`: a holder died (or panicked) since the state
    /// was last marked consistent.
    Acquired { poisoned: bool },
    /// Not acquired: busy and not allowed to wait (longer).
    Busy,
}

#[repr(C)]
pub(crate) struct RobustMutex {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    poisoned: AtomicU32,
    owner_pid: AtomicI32,
    owner_tid: AtomicI32,
    /// Recursion depth; written only by the holder.
    depth: AtomicU32,
}

// SAFETY: the pthread mutex is made for concurrent use through a pointer
// (from any thread of any process mapping it); the other fields are atomics.
unsafe impl Sync for RobustMutex {}

/// Bumped in the child of every `fork` (a `pthread_atfork` handler), so the
/// ids cached per thread below are refreshed in a forked child.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn forked() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// (fork generation, pid, tid) of the calling thread.
    static IDS: Cell<(u32, i32, i32)> = const { Cell::new((u32::MAX, 0, 0)) };
}

/// The caller's (pid, tid), without a syscall after the first call of each
/// thread (they cost most of an uncontended acquire otherwise).
#[inline]
fn ids() -> (i32, i32) {
    ATFORK.call_once(|| {
        // SAFETY: `forked` is a plain function that only bumps an atomic,
        // fit to run in a child right after fork.
        unsafe { libc::pthread_atfork(None, None, Some(forked)) };
    });
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    IDS.with(|cell| {
        let (cached, pid, tid) = cell.get();
        if cached == generation {
            return (pid, tid);
        }
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) as i32 };
        let pid = crate::os::getpid().as_raw();
        cell.set((generation, pid, tid));
        (pid, tid)
    })
}

impl RobustMutex {
    /// Sets up the mutex in place.
    ///
    /// # Safety
    ///
    /// `this` points to zeroed memory that no one else uses yet.
    pub(crate) unsafe fn init(this: *mut RobustMutex, recursive: bool) -> io::Result<()> {
        let kind = if recursive {
            PTHREAD_MUTEX_RECURSIVE
        } else {
            PTHREAD_MUTEX_ERRORCHECK
        };
        // SAFETY: `attr` is initialised before use and destroyed after; the
        // caller hands us `this` exclusively, so initialising the mutex in
        // it races with no one.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            let result = (|| {
                check(libc::pthread_mutexattr_settype(&mut attr, kind))?;
                check(libc::pthread_mutexattr_setpshared(
                    &mut attr,
                    PTHREAD_PROCESS_SHARED,
                ))?;
                check(libc::pthread_mutexattr_setrobust(
                    &mut attr,
                    PTHREAD_MUTEX_ROBUST,
                ))?;
                check(libc::pthread_mutex_init(
                    UnsafeCell::raw_get(&raw const (*this).mutex),
                    &attr,
                ))
            })();
            libc::pthread_mutexattr_destroy(&mut attr);
            result
        }
    }

    /// Acquires the mutex. Relocking a non-recursive mutex the calling
    /// thread holds panics when blocking (it would deadlock) and is `Busy`
    /// otherwise.
    #[inline]
    pub(crate) fn acquire(&self, how: How) -> Outcome {
        let m = self.mutex.get();
        // SAFETY: `m` points to a mutex initialised by `init` (checked by the
        // block's magic word) in memory mapped while `self` is borrowed.
        let rc = unsafe {
            match how {
                How::Block => libc::pthread_mutex_lock(m),
                How::Try => libc::pthread_mutex_trylock(m),
                How::Until(deadline) => match deadline.remaining() {
                    None => libc::pthread_mutex_lock(m),
                    Some(left) if left.is_zero() => libc::pthread_mutex_trylock(m),
                    Some(left) => {
                        let at = realtime_after(left);
                        libc::pthread_mutex_timedlock(m, &at)
                    }
                },
            }
        };
        match rc {
            0 => {}
            libc::EOWNERDEAD => {
                // The holder died: its depth is meaningless now.
                self.depth.store(0, Ordering::Relaxed);
                self.poisoned.store(1, Ordering::SeqCst);
                // SAFETY: we hold the mutex (EOWNERDEAD hands it over).
                unsafe { libc::pthread_mutex_consistent(m) };
            }
            libc::EBUSY | libc::ETIMEDOUT => return Outcome::Busy,
            libc::EDEADLK => match how {
                How::Block => panic!(
                    "brood::sync: this thread already holds this Lock, and a Lock is not \
                     reentrant (acquiring it again would deadlock; use an RLock)"
                ),
                _ => return Outcome::Busy,
            },
            other => panic!(
                "brood::sync: pthread_mutex_lock failed: {}",
                io::Error::from_raw_os_error(other)
            ),
        }
        let depth = self.depth.load(Ordering::Relaxed);
        if depth == 0 {
            let (pid, tid) = ids();
            self.owner_pid.store(pid, Ordering::Relaxed);
            self.owner_tid.store(tid, Ordering::Relaxed);
        }
        self.depth.store(depth + 1, Ordering::Relaxed);
        // Read under the lock, which orders it after the holder's store.
        Outcome::Acquired {
            poisoned: self.poisoned.load(Ordering::Relaxed) != 0,
        }
    }

    /// Releases one level; `EPERM` when the calling thread does not hold it.
    #[inline]
    pub(crate) fn release(&self) -> io::Result<()> {
        if !self.is_mine() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let depth = self.depth.load(Ordering::Relaxed);
        let (pid, tid) = (
            self.owner_pid.load(Ordering::Relaxed),
            self.owner_tid.load(Ordering::Relaxed),
        );
        if depth == 1 {
            self.owner_pid.store(0, Ordering::Relaxed);
            self.owner_tid.store(0, Ordering::Relaxed);
        }
        self.depth.store(depth - 1, Ordering::Relaxed);
        // SAFETY: initialised mutex in mapped memory (see `acquire`).
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
        if rc != 0 {
            self.depth.store(depth, Ordering::Relaxed);
            self.owner_pid.store(pid, Ordering::Relaxed);
            self.owner_tid.store(tid, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Whether the calling thread holds the mutex.
    #[inline]
    pub(crate) fn is_mine(&self) -> bool {
        let (pid, tid) = ids();
        self.depth.load(Ordering::Relaxed) > 0
            && self.owner_tid.load(Ordering::Relaxed) == tid
            && self.owner_pid.load(Ordering::Relaxed) == pid
    }

    /// Whether a thread of this process holds the mutex (then its memory
    /// must stay mapped: libc's robust list points into it).
    pub(crate) fn held_in_this_process(&self) -> bool {
        self.depth.load(Ordering::Relaxed) > 0 && self.owner_pid.load(Ordering::Relaxed) == ids().0
    }

    /// The calling thread's recursion depth (0 when it does not hold it).
    pub(crate) fn depth_if_mine(&self) -> u32 {
        if self.is_mine() {
            self.depth.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Who holds the mutex now, as (pid, tid, depth); `None` when free. A
    /// snapshot, for `locked()` and `Debug`.
    pub(crate) fn holder(&self) -> Option<(i32, i32, u32)> {
        let depth = self.depth.load(Ordering::Relaxed);
        let pid = self.owner_pid.load(Ordering::Relaxed);
        let tid = self.owner_tid.load(Ordering::Relaxed);
        (depth > 0 && pid != 0).then_some((pid, tid, depth))
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(1, Ordering::SeqCst);
    }

    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::SeqCst);
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `CLOCK_REALTIME` now plus `left`, for `pthread_mutex_timedlock`.
fn realtime_after(left: Duration) -> libc::timespec {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is valid for writes.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let secs = left.as_secs().min(i32::MAX as u64) as libc::time_t;
    let mut tv_sec = now.tv_sec.saturating_add(secs);
    let mut tv_nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
    if tv_nsec >= 1_000_000_000 {
        tv_nsec -= 1_000_000_000;
        tv_sec = tv_sec.saturating_add(1);
    }
    libc::timespec { tv_sec, tv_nsec }
}
