//! `Semaphore` and `BoundedSemaphore`: a futex word holding the count.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex::{self, Deadline};
use super::shared_serde;
use crate::error::{Error, Result};
use crate::shm::{Block, SharedState};

/// The count is the futex word; `waiters` lets `release` skip the wake-up
/// syscall when no one sleeps. `max` is 0 for an unbounded semaphore.
#[repr(C)]
pub(crate) struct SemState {
    value: AtomicU32,
    waiters: AtomicU32,
    max: AtomicU32,
}

// SAFETY: repr(C), atomics only, zero is a valid count.
unsafe impl SharedState for SemState {
    const MAGIC: u32 = u32::from_be_bytes(*b"SEMA");
}

#[repr(C)]
pub(crate) struct BoundedState {
    sem: SemState,
}

// SAFETY: as for SemState.
unsafe impl SharedState for BoundedState {
    const MAGIC: u32 = u32::from_be_bytes(*b"BSEM");
}

impl SemState {
    fn acquire(&self, block: bool, timeout: Option<Duration>) -> bool {
        let deadline = if block {
            Deadline::after(timeout)
        } else {
            Deadline::after(Some(Duration::ZERO))
        };
        loop {
            let v = self.value.load(Ordering::SeqCst);
            if v > 0 {
                if self
                    .value
                    .compare_exchange(v, v - 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if deadline.expired() {
                return false;
            }
            // Announce the sleep, then look again: a release either sees
            // the announcement (and wakes us) or happened before the look.
            self.waiters.fetch_add(1, Ordering::SeqCst);
            if self.value.load(Ordering::SeqCst) == 0 {
                futex::wait(&self.value, 0, deadline);
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn release(&self) -> Result<()> {
        let max = self.max.load(Ordering::Relaxed);
        let limit = if max == 0 { u32::MAX } else { max };
        let mut v = self.value.load(Ordering::SeqCst);
        loop {
            if v >= limit {
                return Err(Error::invalid("semaphore or lock released too many times"));
            }
            match self
                .value
                .compare_exchange(v, v + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.value, 1);
        }
        Ok(())
    }
}

macro_rules! semaphore_methods {
    ($ty:ident, $name:literal) => {
        impl $ty {
            /// Python's `acquire(block, timeout)`: takes one unit, waiting
            /// (at most `timeout`, unless `block` is false) while the count
            /// is zero. Returns whether it took one.
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("let sem = brood::sync::", $name, "::new(1)?;")]
            /// assert!(sem.acquire(true, None));
            /// assert!(!sem.acquire(false, None));
            /// assert!(!sem.acquire(true, Some(Duration::from_millis(10))));
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> bool {
                self.state().acquire(block, timeout)
            }

            /// Takes one unit if the count is above zero, without waiting.
            ///
            /// ```
            #[doc = concat!("let sem = brood::sync::", $name, "::new(1)?;")]
            /// assert!(sem.try_acquire());
            /// assert!(!sem.try_acquire());
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn try_acquire(&self) -> bool {
                self.state().acquire(false, None)
            }

            /// The current count (Python's `get_value()`).
            ///
            /// ```
            #[doc = concat!("let sem = brood::sync::", $name, "::new(3)?;")]
            /// assert_eq!(sem.get_value(), 3);
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn get_value(&self) -> u32 {
                self.state().value.load(Ordering::SeqCst)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($name)
                    .field("value", &self.get_value())
                    .finish()
            }
        }
    };
}

/// A process-shared counting semaphore (Python's
/// `multiprocessing.Semaphore`). It has no owner: any process may release.
///
/// ```
/// use brood::sync::Semaphore;
///
/// let ready = Semaphore::new(0)?;
/// let mut child = brood::Process::with_args(|ready: Semaphore| ready.release().unwrap(), ready.clone());
/// child.start()?;
/// assert!(ready.acquire(true, Some(std::time::Duration::from_secs(10))));
/// child.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    block: Block<SemState>,
}

impl Semaphore {
    /// A semaphore whose count starts at `value`.
    ///
    /// ```
    /// assert_eq!(brood::sync::Semaphore::new(2)?.get_value(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        let block = Block::<SemState>::new_fresh(0, 1, |state| {
            state.get().value.store(value, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Semaphore { block })
    }

    /// Adds one unit, waking one waiter. Fails only if the count would
    /// overflow `u32`.
    ///
    /// ```
    /// let sem = brood::sync::Semaphore::new(0)?;
    /// sem.release()?;
    /// sem.release()?; // no bound
    /// assert_eq!(sem.get_value(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state().release()
    }

    fn state(&self) -> &SemState {
        self.block.get()
    }
}

semaphore_methods!(Semaphore, "Semaphore");
shared_serde!(Semaphore, SemState);

/// A semaphore that refuses to be released above its initial value
/// (Python's `multiprocessing.BoundedSemaphore`): an over-release is an
/// [`InvalidState`](crate::ErrorKind::InvalidState) error.
///
/// ```
/// let sem = brood::sync::BoundedSemaphore::new(1)?;
/// assert!(sem.release().is_err()); // already at its bound
/// assert!(sem.acquire(true, None));
/// sem.release()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    block: Block<BoundedState>,
}

impl BoundedSemaphore {
    /// A semaphore whose count starts at, and may never exceed, `value`.
    ///
    /// ```
    /// assert_eq!(brood::sync::BoundedSemaphore::new(2)?.get_value(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        if value == 0 {
            return Err(Error::invalid(
                "a BoundedSemaphore bounded at 0 could never be acquired",
            ));
        }
        let block = Block::<BoundedState>::new_fresh(0, 1, |state| {
            state.get().sem.value.store(value, Ordering::Relaxed);
            state.get().sem.max.store(value, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(BoundedSemaphore { block })
    }

    /// Adds one unit, waking one waiter; an error if the count is already
    /// at its bound (Python's `ValueError`).
    ///
    /// ```
    /// let sem = brood::sync::BoundedSemaphore::new(1)?;
    /// assert!(sem.try_acquire());
    /// sem.release()?;
    /// assert!(sem.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state().release()
    }

    fn state(&self) -> &SemState {
        &self.block.get().sem
    }
}

semaphore_methods!(BoundedSemaphore, "BoundedSemaphore");
shared_serde!(BoundedSemaphore, BoundedState);
