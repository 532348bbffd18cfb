//! Synchronization proxies: lock, condition, event, semaphore, barrier.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Handle, micros, thread_token, unexpected};
use crate::error::Result;
use crate::manager::protocol::{Micros, Op, Out};

typed_proxy! {
    /// A lock in the manager's server (`manager.lock()` is Python's
    /// `Lock`, `manager.rlock()` its `RLock`: reentrant, released only by
    /// the thread that holds it). Unlike Python, the lock is a **lease**:
    /// when the process holding it dies or disconnects, the server releases
    /// it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// {
    ///     let _guard = lock.lock()?;
    ///     assert!(lock.locked()?);
    ///     assert!(!lock.try_acquire()?);
    /// }
    /// assert!(!lock.locked()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedLock
}

impl ManagedLock {
    /// Waits for the lock and takes it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.rlock()?;
    /// lock.acquire()?;
    /// lock.acquire()?; // reentrant
    /// lock.release()?;
    /// lock.release()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_inner(None).map(drop)
    }

    /// Waits at most `timeout`; whether it took the lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// assert!(lock.acquire_timeout(Duration::from_millis(10))?);
    /// assert!(!lock.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_inner(micros(timeout))
    }

    /// Takes the lock if it is free, without waiting.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.lock()?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_inner(Some(0))
    }

    fn acquire_inner(&self, timeout: Micros) -> Result<bool> {
        self.handle.flag(Op::Acquire {
            thread: thread_token(),
            timeout,
        })
    }

    /// Releases the lock; an unlocked lock (or an RLock held by another
    /// thread) is an [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) error.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.handle.unit(Op::Release {
            thread: thread_token(),
        })
    }

    /// Whether someone holds it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.lock()?.locked()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn locked(&self) -> Result<bool> {
        self.handle.flag(Op::Locked)
    }

    /// Acquires and returns a guard that releases on drop.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// drop(lock.lock()?);
    /// assert!(!lock.locked()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ManagedLockGuard<'_>> {
        self.acquire()?;
        Ok(ManagedLockGuard { lock: self })
    }
}

/// Releases a [`ManagedLock`] when dropped (an error releasing is ignored:
/// the server releases the lease of a client it lost anyway).
///
/// ```
/// let manager = brood::Manager::start()?;
/// let lock = manager.lock()?;
/// let guard = lock.lock()?;
/// drop(guard);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug)]
pub struct ManagedLockGuard<'a> {
    lock: &'a ManagedLock,
}

impl Drop for ManagedLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

typed_proxy! {
    /// An event in the manager's server (Python's `manager.Event()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?);
    /// e.set()?;
    /// assert!(e.is_set()? && e.wait_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedEvent
}

impl ManagedEvent {
    /// Sets the flag, waking every waiter.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// e.set()?;
    /// e.wait()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self) -> Result<()> {
        self.handle.unit(Op::EventSet)
    }

    /// Clears the flag.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// e.set()?;
    /// e.clear()?;
    /// assert!(!e.is_set()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::EventClear)
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.event()?.is_set()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        self.handle.flag(Op::EventIsSet)
    }

    /// Waits until the flag is set.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// let mut p = brood::Process::with_args(|e: brood::manager::ManagedEvent| e.set().unwrap(), e.clone());
    /// p.start()?;
    /// e.wait()?;
    /// p.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.handle.flag(Op::EventWait(None)).map(drop)
    }

    /// Waits at most `timeout`; whether the flag is set.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.event()?.wait_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::EventWait(micros(timeout)))
    }
}

typed_proxy! {
    /// A semaphore in the manager's server (`semaphore(n)`,
    /// `bounded_semaphore(n)`: releasing above `n` is an error). No lease:
    /// a semaphore is a counter, not an owner.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let s = manager.bounded_semaphore(1)?;
    /// s.acquire()?;
    /// assert!(!s.try_acquire()?);
    /// s.release()?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedSemaphore
}

impl ManagedSemaphore {
    /// Waits for the counter to be positive and decrements it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let s = manager.semaphore(2)?;
    /// s.acquire()?;
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.handle.flag(Op::SemAcquire(None)).map(drop)
    }

    /// Waits at most `timeout`; whether it decremented.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let s = manager.semaphore(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::SemAcquire(micros(timeout)))
    }

    /// Decrements if positive, without waiting.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.semaphore(1)?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.handle.flag(Op::SemAcquire(Some(0)))
    }

    /// Increments (a bounded semaphore refuses to go above its start).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let s = manager.semaphore(0)?;
    /// s.release()?;
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.handle.unit(Op::SemRelease)
    }

    /// The counter now.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.semaphore(3)?.value()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn value(&self) -> Result<u64> {
        self.handle.count(Op::SemValue)
    }
}

typed_proxy! {
    /// A barrier in the manager's server (Python's `manager.Barrier(n)`).
    /// A waiter that times out or whose client leaves breaks it for all.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// let mut p = brood::Process::with_args(|b: brood::manager::ManagedBarrier| b.wait().unwrap(), b.clone());
    /// p.start()?;
    /// b.wait()?;
    /// p.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedBarrier
}

impl ManagedBarrier {
    /// Waits until `parties` clients wait; returns this one's arrival index.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(1)?.wait()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u64> {
        self.handle.count(Op::BarrierWait(None))
    }

    /// Like [`wait`](ManagedBarrier::wait), breaking the barrier
    /// ([`ErrorKind::BrokenBarrier`](crate::ErrorKind::BrokenBarrier)) after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// let e = b.wait_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(e.kind(), brood::ErrorKind::BrokenBarrier);
    /// assert!(b.broken()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.handle.count(Op::BarrierWait(micros(timeout)))
    }

    /// Breaks the barrier: waiters and later `wait`s fail.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// b.abort()?;
    /// assert!(b.wait().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        self.handle.unit(Op::BarrierAbort)
    }

    /// Back to the empty, unbroken state (current waiters fail).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(1)?;
    /// b.abort()?;
    /// b.reset()?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        self.handle.unit(Op::BarrierReset)
    }

    fn state(&self) -> Result<(u64, u64, bool)> {
        let raw: Vec<serde_bytes::ByteBuf> = match self.handle.call(Op::BarrierState)? {
            Out::Items(items) => items,
            other => return Err(unexpected(&other)),
        };
        let num = |b: &serde_bytes::ByteBuf| {
            <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| unexpected(&Out::Unit))
        };
        match raw.as_slice() {
            [p, c, b] => Ok((num(p)?, num(c)?, b.first() == Some(&1))),
            _ => Err(unexpected(&Out::Unit)),
        }
    }

    /// How many parties it waits for.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(3)?.parties()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn parties(&self) -> Result<u64> {
        Ok(self.state()?.0)
    }

    /// How many wait now.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(3)?.n_waiting()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn n_waiting(&self) -> Result<u64> {
        Ok(self.state()?.1)
    }

    /// Whether it is broken.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.barrier(3)?.broken()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn broken(&self) -> Result<bool> {
        Ok(self.state()?.2)
    }
}

/// A condition variable in the manager's server (Python's
/// `manager.Condition()`): a reentrant lock plus waiters. `wait` releases
/// the lock while it waits and takes it back before returning; the lock is
/// a lease like [`ManagedLock`]'s.
///
/// ```
/// use brood::manager::ManagedCondition;
/// let manager = brood::Manager::start()?;
/// let cond = manager.condition()?;
/// let ready = manager.value(&false)?;
/// let mut p = brood::Process::with_args(
///     |(cond, ready): (ManagedCondition, brood::manager::ManagedValue<bool>)| {
///         let _held = cond.lock().unwrap();
///         ready.set(&true).unwrap();
///         cond.notify_all().unwrap();
///     },
///     (cond.clone(), ready.clone()),
/// );
/// let held = cond.lock()?;
/// p.start()?;
/// assert!(cond.wait_for(|| ready.get().unwrap(), std::time::Duration::from_secs(20))?);
/// drop(held);
/// p.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ManagedCondition {
    lock: ManagedLock,
}

impl ManagedCondition {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        ManagedCondition {
            lock: ManagedLock::from_handle(handle),
        }
    }

    /// Takes the condition's lock (reentrant).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// c.acquire()?;
    /// c.release()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.lock.acquire()
    }

    /// Takes the lock, waiting at most `timeout`; whether it did.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.condition()?.acquire_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.lock.acquire_timeout(timeout)
    }

    /// Releases the lock once.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.condition()?.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.lock.release()
    }

    /// Takes the lock and returns a guard that releases it on drop.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// let g = c.lock()?;
    /// c.notify()?;
    /// drop(g);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ManagedLockGuard<'_>> {
        self.lock.lock()
    }

    /// Releases the lock, waits for a notify, takes the lock back. Not
    /// holding the lock is an [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) error.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.condition()?.wait().is_err()); // not held
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_inner(None).map(drop)
    }

    /// Like [`wait`](ManagedCondition::wait), at most `timeout`; whether it
    /// was notified (the lock is held again either way).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// let _g = c.lock()?;
    /// assert!(!c.wait_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_inner(micros(timeout))
    }

    fn wait_inner(&self, timeout: Micros) -> Result<bool> {
        self.lock.handle.flag(Op::CondWait {
            thread: thread_token(),
            timeout,
        })
    }

    /// Waits until `predicate` holds, at most `timeout` in all (Python's
    /// `wait_for`); the predicate's last value.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// let _g = c.lock()?;
    /// assert!(c.wait_for(|| true, Duration::from_millis(5))?);
    /// assert!(!c.wait_for(|| false, Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_for(&self, mut predicate: impl FnMut() -> bool, timeout: Duration) -> Result<bool> {
        let deadline = crate::time::deadline(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(std::time::Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(false);
            }
            self.wait_timeout(left)?;
        }
    }

    /// Wakes one waiter (the lock must be held).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// assert!(c.notify().is_err()); // not held
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// let _g = c.lock()?;
    /// c.notify_n(3)?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn notify_n(&self, n: u64) -> Result<()> {
        self.lock.handle.unit(Op::CondNotify {
            thread: thread_token(),
            n,
        })
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// let _g = c.lock()?;
    /// c.notify_all()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(u64::MAX)
    }
}
