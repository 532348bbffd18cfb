//! `Lock` and `RLock`: robust, process-shared mutexes.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::futex::Deadline;
use super::mutex::{How, Outcome, RobustMutex};
use super::{LockResult, OwnerDied, TryLockError, TryLockResult, shared_serde};
use crate::error::{Error, Result};
use crate::shm::{Block, SharedState};

#[repr(C)]
pub(crate) struct LockState {
    pub(crate) mutex: RobustMutex,
}

// SAFETY: repr(C); zeroed is valid before `init`; the mutex is Sync.
unsafe impl SharedState for LockState {
    const MAGIC: u32 = u32::from_be_bytes(*b"LOCK");
    fn must_stay_mapped(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// An `RLock`'s state: the same, under its own magic word.
#[repr(C)]
pub(crate) struct RLockState {
    pub(crate) mutex: RobustMutex,
}

// SAFETY: as for LockState.
unsafe impl SharedState for RLockState {
    const MAGIC: u32 = u32::from_be_bytes(*b"RLCK");
    fn must_stay_mapped(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// Holds a [`Lock`] or [`RLock`] (one level of it) until dropped.
///
/// Not `Send`: the thread that acquired the lock releases it. Dropped
/// while the thread panics, it poisons the lock, as `std::sync::Mutex` does.
///
/// ```
/// let lock = brood::sync::Lock::new()?;
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.is_owned());
/// }
/// assert!(!lock.is_owned());
/// # Ok::<(), brood::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    mutex: &'a RobustMutex,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    #[inline]
    pub(crate) fn new(mutex: &'a RobustMutex) -> LockGuard<'a> {
        LockGuard {
            mutex,
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        }
    }
}

impl Drop for LockGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.mutex.poison();
        }
        let _ = self.mutex.release();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

#[inline]
pub(crate) fn guard_result(mutex: &RobustMutex, outcome: Outcome) -> TryLockResult<LockGuard<'_>> {
    match outcome {
        Outcome::Acquired { poisoned: false } => Ok(LockGuard::new(mutex)),
        Outcome::Acquired { poisoned: true } => Err(TryLockError::OwnerDied(OwnerDied::new(
            LockGuard::new(mutex),
        ))),
        Outcome::Busy => Err(TryLockError::WouldBlock),
    }
}

#[inline]
pub(crate) fn blocking(result: TryLockResult<LockGuard<'_>>) -> LockResult<LockGuard<'_>> {
    match result {
        Ok(guard) => Ok(guard),
        Err(TryLockError::OwnerDied(died)) => Err(died),
        Err(TryLockError::WouldBlock) => unreachable!("a blocking acquire returned busy"),
    }
}

/// `mutex.acquire(how)`, except that a timed acquire by the thread that
/// already holds a non-reentrant lock waits out its timeout before it
/// fails, as Python's does (nothing else can release the lock meanwhile).
/// A timeout too far away to wait out is a deadlock, reported like a
/// blocking relock.
#[inline]
pub(crate) fn timed_acquire(mutex: &RobustMutex, how: How) -> Outcome {
    if let How::Until(deadline) = how {
        return timed_acquire_until(mutex, deadline);
    }
    mutex.acquire(how)
}

#[cold]
#[inline(never)]
fn timed_acquire_until(mutex: &RobustMutex, deadline: Deadline) -> Outcome {
    if mutex.is_mine() {
        let outcome = mutex.acquire(How::Try);
        if outcome != Outcome::Busy {
            return outcome; // an RLock: one level more
        }
        match deadline.remaining() {
            Some(left) => std::thread::sleep(left),
            None => return mutex.acquire(How::Block),
        }
        return Outcome::Busy;
    }
    mutex.acquire(How::Until(deadline))
}

#[inline]
pub(crate) fn python_acquire(
    mutex: &RobustMutex,
    block: bool,
    timeout: Option<Duration>,
) -> LockResult<bool> {
    match timed_acquire(mutex, How::python(block, timeout)) {
        Outcome::Acquired { poisoned: false } => Ok(true),
        Outcome::Acquired { poisoned: true } => Err(OwnerDied::new(true)),
        Outcome::Busy => Ok(false),
    }
}

#[inline]
pub(crate) fn python_release(mutex: &RobustMutex, what: &str) -> Result<()> {
    mutex.release().map_err(|_| not_held(what))
}

#[cold]
#[inline(never)]
fn not_held(what: &str) -> Error {
    Error::invalid(format!(
        "cannot release an un-acquired {what} (it is not held by this thread)"
    ))
}

/// Who holds a [`Lock`] or [`RLock`]: its process and thread (Python's
/// repr names the owner the same way).
///
/// ```
/// let lock = brood::sync::RLock::new()?;
/// let _g = lock.lock().unwrap();
/// let owner = lock.owner().unwrap();
/// assert_eq!(owner.pid, brood::os::getpid());
/// assert_eq!(owner.count, 1);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The holder's process.
    pub pid: crate::os::Pid,
    /// The holder's thread id (`gettid`).
    pub tid: i32,
    /// How many times it holds the lock (1 for a `Lock`).
    pub count: u32,
    mine: bool,
}

impl Owner {
    fn of(mutex: &RobustMutex) -> Option<Owner> {
        let (pid, tid, count) = mutex.holder()?;
        Some(Owner {
            pid: crate::os::Pid::from_raw(pid)?,
            tid,
            count,
            mine: mutex.is_mine(),
        })
    }

    /// Whether the holder was the calling thread when the snapshot was
    /// taken.
    ///
    /// ```
    /// let lock = brood::sync::Lock::new()?;
    /// let _g = lock.lock().unwrap();
    /// assert!(lock.owner().unwrap().is_current_thread());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_current_thread(&self) -> bool {
        self.mine
    }
}

macro_rules! lock_methods {
    ($ty:ident, $name:literal) => {
        impl $ty {
            /// Acquires the lock, blocking until it is free; the guard
            /// releases it. `Err` when a holder died: the lock is held all
            /// the same, and the guard is inside.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// let guard = lock.lock().unwrap();
            /// drop(guard);
            /// # Ok::<(), brood::Error>(())
            /// ```
            #[inline(always)]
            pub fn lock(&self) -> LockResult<LockGuard<'_>> {
                let mutex = self.mutex();
                super::lock::blocking(guard_result(mutex, mutex.acquire(How::Block)))
            }

            /// Acquires the lock if no one holds it, without waiting.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert!(lock.try_lock().is_ok());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
                let mutex = self.mutex();
                guard_result(mutex, mutex.acquire(How::Try))
            }

            /// Acquires the lock, waiting at most `timeout`
            /// ([`TryLockError::WouldBlock`] when it runs out). The thread
            /// that holds a `Lock` already waits out the whole timeout, then
            /// fails, as in Python.
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert!(lock.lock_timeout(Duration::from_millis(10)).is_ok());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
                let mutex = self.mutex();
                guard_result(
                    mutex,
                    timed_acquire(mutex, How::Until(Deadline::after(Some(timeout)))),
                )
            }

            /// Python's `acquire(block, timeout)`: `Ok(true)` once acquired,
            /// `Ok(false)` if not (with `block` false, or when `timeout`
            /// runs out). `Err(OwnerDied(true))`: acquired, but a holder
            /// died. Release with [`release`](Self::release); prefer
            /// [`lock`](Self::lock), whose guard cannot be forgotten.
            ///
            /// As in Python, a `Lock`'s holder that calls `acquire(true,
            /// Some(t))` again waits the whole `t` and gets `Ok(false)`;
            /// `acquire(true, None)` by the holder panics instead of
            /// deadlocking (see the type's caveats).
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert_eq!(lock.acquire(true, None).unwrap(), true);
            /// lock.release()?;
            /// # Ok::<(), brood::Error>(())
            /// ```
            #[inline]
            pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> LockResult<bool> {
                python_acquire(self.mutex(), block, timeout)
            }

            /// Python's `release()`: releases one level the calling thread
            /// holds. Releasing a lock this thread does not hold is an
            /// [`InvalidState`](crate::ErrorKind::InvalidState) error.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert!(lock.release().is_err()); // not held
            /// # Ok::<(), brood::Error>(())
            /// ```
            #[inline]
            pub fn release(&self) -> Result<()> {
                python_release(self.mutex(), $name)
            }

            /// Whether the calling thread holds the lock.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// let _g = lock.lock().unwrap();
            /// assert!(lock.is_owned());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn is_owned(&self) -> bool {
                self.mutex().is_mine()
            }

            /// Whether any thread of any process holds the lock now (a
            /// snapshot: it may change at once). A holder that died
            /// without releasing it still counts until the next acquire
            /// takes it over.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert!(!lock.locked());
            /// let _g = lock.lock().unwrap();
            /// assert!(lock.locked());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn locked(&self) -> bool {
                self.mutex().holder().is_some()
            }

            /// Who holds the lock now (a snapshot), or `None` when it is
            /// free.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert!(lock.owner().is_none());
            /// let _g = lock.lock().unwrap();
            /// let owner = lock.owner().unwrap();
            /// assert_eq!(owner.pid, brood::os::getpid());
            /// assert!(owner.is_current_thread());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn owner(&self) -> Option<Owner> {
                Owner::of(self.mutex())
            }

            /// Whether a holder died (or panicked) holding the lock since its
            /// state was last marked consistent.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// assert!(!lock.is_poisoned());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn is_poisoned(&self) -> bool {
                self.mutex().is_poisoned()
            }

            /// Marks the guarded state consistent again (after repairing
            /// it): acquirers stop seeing [`OwnerDied`]. Also known as
            /// `pthread_mutex_consistent`'s job, done across processes.
            ///
            /// ```
            #[doc = concat!("let lock = brood::sync::", $name, "::new()?;")]
            /// lock.clear_poison();
            /// assert!(!lock.is_poisoned());
            /// # Ok::<(), brood::Error>(())
            /// ```
            #[doc(alias = "mark_consistent")]
            pub fn clear_poison(&self) {
                self.mutex().clear_poison()
            }
        }

        impl fmt::Debug for $ty {
            /// Python's repr shows the owner (and an `RLock`'s count): so
            /// does this, with `count` the holder's recursion depth.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let holder = self.mutex().holder();
                f.debug_struct($name)
                    .field("owner", &Owner::of(self.mutex()))
                    .field("count", &holder.map_or(0, |(_, _, depth)| depth))
                    .field("owned", &self.is_owned())
                    .field("poisoned", &self.is_poisoned())
                    .finish()
            }
        }
    };
}

/// A process-shared, non-reentrant lock (Python's `multiprocessing.Lock`).
///
/// Held by a thread: only that thread releases it (dropping the guard, or
/// [`release`](Lock::release)). If the holder dies — killed, crashed,
/// exited — the next acquirer gets the lock with an [`OwnerDied`] report,
/// within milliseconds.
///
/// ```
/// use brood::sync::Lock;
///
/// let lock = Lock::new()?;
/// let child_lock = lock.clone();
/// let mut child = brood::Process::with_args(
///     |lock: Lock| lock.lock().map(|_guard| "held and released".to_string()).unwrap(),
///     child_lock,
/// );
/// child.start()?;
/// assert_eq!(child.join()?, "held and released");
/// # Ok::<(), brood::Error>(())
/// ```
///
/// # Caveats
///
/// Python lets any thread release a `Lock`; brood's belongs to the thread
/// that acquired it, which is what lets a dead holder be detected. Signal
/// with a [`Semaphore`](super::Semaphore) or an [`Event`](super::Event)
/// instead. Relocking a `Lock` from the thread that holds it without a
/// timeout panics rather than deadlocking; a non-blocking attempt fails at
/// once, and a timed one waits out its timeout and fails, as in Python.
#[derive(Clone)]
pub struct Lock {
    block: Block<LockState>,
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// ```
    /// let lock = brood::sync::Lock::new()?;
    /// assert!(!lock.is_owned());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        let block = Block::<LockState>::new_fresh(0, 1, |state| {
            RobustMutex::init_fresh(state.part(|s| &s.mutex), false)
        })?;
        Ok(Lock { block })
    }

    #[inline]
    pub(crate) fn mutex(&self) -> &RobustMutex {
        &self.block.get().mutex
    }
}

lock_methods!(Lock, "Lock");
shared_serde!(Lock, LockState);

/// A process-shared reentrant lock (Python's `multiprocessing.RLock`): the
/// thread that holds it may acquire it again, and must release it as many
/// times. Release by a thread that does not hold it is an error.
///
/// ```
/// let lock = brood::sync::RLock::new()?;
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap();
/// assert_eq!(lock.recursion_count(), 2);
/// drop(inner);
/// drop(outer);
/// assert_eq!(lock.recursion_count(), 0);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    block: Block<RLockState>,
}

impl RLock {
    /// A new, unlocked reentrant lock.
    ///
    /// ```
    /// let lock = brood::sync::RLock::new()?;
    /// assert_eq!(lock.recursion_count(), 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        let block = Block::<RLockState>::new_fresh(0, 1, |state| {
            RobustMutex::init_fresh(state.part(|s| &s.mutex), true)
        })?;
        Ok(RLock { block })
    }

    /// How many times the calling thread holds the lock (0: not at all).
    ///
    /// ```
    /// let lock = brood::sync::RLock::new()?;
    /// lock.acquire(true, None).unwrap();
    /// assert_eq!(lock.recursion_count(), 1);
    /// lock.release()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn recursion_count(&self) -> u32 {
        self.mutex().depth_if_mine()
    }

    #[inline]
    pub(crate) fn mutex(&self) -> &RobustMutex {
        &self.block.get().mutex
    }
}

lock_methods!(RLock, "RLock");
shared_serde!(RLock, RLockState);
