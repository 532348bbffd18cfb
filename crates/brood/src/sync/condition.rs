//! `Condition`: a sequence word to sleep on and wake-up tokens, beside a
//! `Lock` or `RLock`.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::futex::{self, Deadline};
use super::lock::{blocking, guard_result, python_acquire, python_release};
use super::mutex::{How, Outcome, RobustMutex};
use super::{Lock, LockGuard, LockResult, RLock, TryLockResult, owner_died_error};
use crate::error::{Error, Result};
use crate::shm::{Block, BlockWire, SharedState};

/// All three change under the condition's lock, except that a woken waiter
/// takes a token without it (see `sync/README.md`). A waiter may take a
/// token only once `seq` differs from its value when the waiter registered,
/// so a wake-up never goes to a wait that began after the notify.
#[repr(C)]
pub(crate) struct CondState {
    /// Bumped by every notify that hands out tokens; waiters sleep on it.
    seq: AtomicU32,
    /// Wake-ups handed out and not yet taken.
    tokens: AtomicU32,
    /// Waiters that hold no token yet.
    sleepers: AtomicU32,
}

// SAFETY: repr(C), atomics only, all-zero is "no waiter".
unsafe impl SharedState for CondState {
    const MAGIC: u32 = u32::from_be_bytes(*b"COND");
}

impl CondState {
    fn take_token(&self) -> bool {
        let mut t = self.tokens.load(Ordering::SeqCst);
        while t > 0 {
            match self
                .tokens
                .compare_exchange(t, t - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => t = now,
            }
        }
        false
    }
}

/// The lock a [`Condition`] is built on: Python's default is an `RLock`.
///
/// ```
/// use brood::sync::{Condition, Lock};
/// let cond = Condition::with_lock(Lock::new()?)?;
/// assert!(matches!(cond.get_lock(), brood::sync::ConditionLock::Lock(_)));
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ConditionLock {
    /// A non-reentrant lock.
    Lock(Lock),
    /// A reentrant lock; `wait` releases every level and restores them.
    RLock(RLock),
}

impl ConditionLock {
    fn mutex(&self) -> &RobustMutex {
        match self {
            ConditionLock::Lock(l) => l.mutex(),
            ConditionLock::RLock(l) => l.mutex(),
        }
    }
}

impl From<Lock> for ConditionLock {
    fn from(lock: Lock) -> ConditionLock {
        ConditionLock::Lock(lock)
    }
}

impl From<RLock> for ConditionLock {
    fn from(lock: RLock) -> ConditionLock {
        ConditionLock::RLock(lock)
    }
}

/// A process-shared condition variable (Python's
/// `multiprocessing.Condition`): hold its lock, then `wait` until another
/// process changes the state and calls `notify`.
///
/// `notify(n)` wakes at most `n` of the waiters that were waiting when it
/// ran — never a wait that starts later, the notifier's own next `wait`
/// included — and a notify is never lost while someone was waiting. A waiter that dies while waiting may
/// cost one later waiter a spurious wake-up, which is why the state is
/// re-checked in a loop ([`wait_for`](Condition::wait_for) does it).
///
/// ```
/// use brood::sync::Condition;
/// use brood::shm::Value;
/// use std::time::Duration;
///
/// let cond = Condition::new()?;
/// let ready = Value::new(0u32)?;
/// let mut child = brood::Process::with_args(
///     |(cond, ready): (Condition, Value<u32>)| {
///         let _held = cond.lock().unwrap();
///         ready.set(1).unwrap();
///         cond.notify_all().unwrap();
///     },
///     (cond.clone(), ready.clone()),
/// );
/// let held = cond.lock().unwrap();
/// child.start()?;
/// assert!(cond.wait_for(|| ready.get().unwrap() == 1, Some(Duration::from_secs(10)))?);
/// drop(held);
/// child.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    block: Block<CondState>,
    lock: ConditionLock,
}

impl Condition {
    /// A condition with a new [`RLock`] (Python's `Condition()`).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// assert!(matches!(cond.get_lock(), brood::sync::ConditionLock::RLock(_)));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::with_lock(RLock::new()?)
    }

    /// A condition on an existing [`Lock`] or [`RLock`] (Python's
    /// `Condition(lock)`).
    ///
    /// ```
    /// let lock = brood::sync::RLock::new()?;
    /// let cond = brood::sync::Condition::with_lock(lock.clone())?;
    /// let _held = lock.lock().unwrap();
    /// cond.notify(1)?; // the same lock: held
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_lock(lock: impl Into<ConditionLock>) -> Result<Condition> {
        Ok(Condition {
            block: Block::new(0, 1, |_| Ok(()))?,
            lock: lock.into(),
        })
    }

    /// The lock underneath (Python's `_lock`).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// let _ = cond.get_lock();
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_lock(&self) -> &ConditionLock {
        &self.lock
    }

    /// Acquires the lock (see [`Lock::lock`]).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// let _held = cond.lock().unwrap();
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        let mutex = self.lock.mutex();
        blocking(guard_result(mutex, mutex.acquire(How::Block)))
    }

    /// Acquires the lock if free, without waiting (see [`Lock::try_lock`]).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// assert!(cond.try_lock().is_ok());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        let mutex = self.lock.mutex();
        guard_result(mutex, mutex.acquire(How::Try))
    }

    /// Python's `acquire(block, timeout)` on the lock (see
    /// [`Lock::acquire`]).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// assert!(cond.acquire(true, None).unwrap());
    /// cond.release()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> LockResult<bool> {
        python_acquire(self.lock.mutex(), block, timeout)
    }

    /// Python's `release()` on the lock (see [`Lock::release`]).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// assert!(cond.release().is_err()); // not held
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        python_release(self.lock.mutex(), "Condition's lock")
    }

    /// Whether the calling thread holds the lock.
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// let _held = cond.lock().unwrap();
    /// assert!(cond.is_owned());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_owned(&self) -> bool {
        self.lock.mutex().is_mine()
    }

    /// Whether a holder of the lock died (see [`Lock::is_poisoned`]).
    ///
    /// ```
    /// assert!(!brood::sync::Condition::new()?.is_poisoned());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.lock.mutex().is_poisoned()
    }

    /// Marks the state consistent again (see [`Lock::clear_poison`]).
    ///
    /// ```
    /// brood::sync::Condition::new()?.clear_poison();
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn clear_poison(&self) {
        self.lock.mutex().clear_poison()
    }

    /// Releases the lock (every level of an `RLock`), sleeps until notified
    /// or until `timeout` runs out (`None`: no limit), then takes the lock
    /// back as it was. Returns `false` if the timeout ran out (Python's
    /// `wait`).
    ///
    /// Errors: the calling thread does not hold the lock
    /// ([`InvalidState`](crate::ErrorKind::InvalidState)); or the lock was
    /// taken back from a holder that died — then it *is* held again, and
    /// poisoned, as for [`OwnerDied`](super::OwnerDied).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = brood::sync::Condition::new()?;
    /// assert!(cond.wait(None).is_err()); // lock not held
    /// let _held = cond.lock().unwrap();
    /// assert_eq!(cond.wait(Some(Duration::from_millis(10)))?, false);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        let mutex = self.lock.mutex();
        let s = self.block.get();
        let depth = mutex.depth_if_mine();
        if depth == 0 {
            return Err(Error::invalid("cannot wait on an un-acquired lock"));
        }
        // A wake-up is ours only if handed out after we registered: a
        // notify bumps `seq`, so a waiter that still reads the `seq` of its
        // registration (made under the lock) takes no token.
        let registered = s.seq.load(Ordering::SeqCst);
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        for _ in 0..depth {
            // Held by this thread (checked above): cannot fail.
            let _ = mutex.release();
        }
        let deadline = Deadline::after(timeout);
        let mut notified = false;
        loop {
            let seq = s.seq.load(Ordering::SeqCst);
            if seq != registered && s.take_token() {
                notified = true;
                break;
            }
            if deadline.expired() {
                break;
            }
            futex::wait(&s.seq, seq, deadline);
        }
        let mut poisoned = false;
        for _ in 0..depth {
            if let Outcome::Acquired { poisoned: true } = mutex.acquire(How::Block) {
                poisoned = true;
            }
        }
        if !notified {
            // Under the lock again: a token left by a notify made since we
            // registered is ours (notified just before the timeout, as in
            // Python); otherwise leave the count of sleepers.
            if s.seq.load(Ordering::SeqCst) != registered && s.take_token() {
                notified = true;
            } else {
                let left = s.sleepers.load(Ordering::SeqCst);
                s.sleepers.store(left.saturating_sub(1), Ordering::SeqCst);
            }
        }
        if poisoned {
            return Err(owner_died_error());
        }
        Ok(notified)
    }

    /// Waits until `predicate` returns a truthy value ([`Truthy`]: `true`,
    /// `Some`, a non-zero number, a non-empty `Vec`), at most `timeout` in
    /// all, and returns the predicate's last value — the truthy one, or the
    /// falsy one it gave when the timeout ran out (Python's `wait_for`).
    /// The lock must be held; the predicate runs with it held, first before
    /// any wait (so a `timeout` of zero only checks).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = brood::sync::Condition::new()?;
    /// let _held = cond.lock().unwrap();
    /// assert!(cond.wait_for(|| true, None)?);
    /// assert!(!cond.wait_for(|| false, Some(Duration::from_millis(20)))?);
    /// // Any truthy value comes back, as in Python.
    /// assert_eq!(cond.wait_for(|| Some(7), None)?, Some(7));
    /// assert_eq!(cond.wait_for(|| 0usize, Some(Duration::ZERO))?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_for<R: Truthy>(
        &self,
        mut predicate: impl FnMut() -> R,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let deadline = Deadline::after(timeout);
        let mut result = predicate();
        while !result.is_truthy() {
            let left = deadline.remaining();
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            self.wait(left)?;
            result = predicate();
        }
        Ok(result)
    }

    /// Wakes at most `n` of the waiters. The calling thread must hold the
    /// lock ([`InvalidState`](crate::ErrorKind::InvalidState) otherwise).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// assert!(cond.notify(1).is_err()); // lock not held
    /// let _held = cond.lock().unwrap();
    /// cond.notify(1)?; // no waiter: nothing happens
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn notify(&self, n: u32) -> Result<()> {
        if !self.lock.mutex().is_mine() {
            return Err(Error::invalid("cannot notify on an un-acquired lock"));
        }
        let s = self.block.get();
        let sleepers = s.sleepers.load(Ordering::SeqCst);
        let k = n.min(sleepers);
        if k == 0 {
            return Ok(());
        }
        s.sleepers.store(sleepers - k, Ordering::SeqCst);
        s.tokens.fetch_add(k, Ordering::SeqCst);
        s.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&s.seq, k);
        Ok(())
    }

    /// Wakes every waiter (the lock must be held).
    ///
    /// ```
    /// let cond = brood::sync::Condition::new()?;
    /// let _held = cond.lock().unwrap();
    /// cond.notify_all()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify(u32::MAX)
    }
}

/// What [`Condition::wait_for`] waits for: a value that counts as true, as
/// Python's truth testing has it.
///
/// ```
/// use brood::sync::Truthy;
/// assert!(true.is_truthy() && Some(0).is_truthy() && 3u32.is_truthy());
/// assert!(!None::<u8>.is_truthy() && !0i64.is_truthy() && !Vec::<u8>::new().is_truthy());
/// ```
pub trait Truthy {
    /// Whether the value counts as true.
    ///
    /// ```
    /// use brood::sync::Truthy;
    /// assert!(vec![0].is_truthy());
    /// ```
    fn is_truthy(&self) -> bool;
}

impl Truthy for bool {
    fn is_truthy(&self) -> bool {
        *self
    }
}

impl<T> Truthy for Option<T> {
    fn is_truthy(&self) -> bool {
        self.is_some()
    }
}

impl<T> Truthy for Vec<T> {
    fn is_truthy(&self) -> bool {
        !self.is_empty()
    }
}

macro_rules! truthy_numbers {
    ($($t:ty),*) => {
        $(impl Truthy for $t {
            fn is_truthy(&self) -> bool {
                *self != 0
            }
        })*
    };
}
truthy_numbers!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field(
                "sleepers",
                &self.block.get().sleepers.load(Ordering::SeqCst),
            )
            .finish()
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        (&self.block, &self.lock).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let (wire, lock) = <(BlockWire, ConditionLock)>::deserialize(deserializer)?;
        let block = Block::from_wire(wire, 0, 1).map_err(serde::de::Error::custom)?;
        Ok(Condition { block, lock })
    }
}
