//! Process-shared synchronization: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`] — Python's
//! `multiprocessing` primitives, with Python's semantics, usable by children
//! of every start method.
//!
//! Each lives in a small block of a shared arena (many primitives share
//! one `memfd`) and crosses to a child as an argument (`Process::with_args`)
//! or by inheritance (`Process::fork`); every copy is the same primitive.
//!
//! Unlike Python's, a lock whose holder died is never silently locked
//! forever: the next acquirer gets the lock together with an [`OwnerDied`]
//! report (like `std::sync::Mutex` poisoning), and the lock stays poisoned
//! until someone marks the state consistent again with `clear_poison`.
//!
//! ```
//! use brood::sync::Lock;
//! use brood::Process;
//!
//! let lock = Lock::new()?;
//! let mut child = Process::with_args(
//!     |lock: Lock| {
//!         let _held = lock.lock().unwrap();
//!         "done in the child".to_string()
//!     },
//!     lock.clone(),
//! );
//! child.start()?;
//! assert_eq!(child.join()?, "done in the child");
//! assert!(lock.try_lock().is_ok());
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! The protocols and their invariants are described in `sync/README.md`.

mod barrier;
mod condition;
mod event;
pub(crate) mod futex;
pub(crate) mod lock;
pub(crate) mod mutex;
mod semaphore;

use std::fmt;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionLock, Truthy};
pub use event::Event;
pub use lock::{Lock, LockGuard, Owner, RLock};
pub use semaphore::{BoundedSemaphore, Semaphore};

use crate::error::{Error, ErrorKind};

/// The lock was acquired, but a holder died (or panicked) while holding it
/// since its state was last marked consistent: the data it guards may be
/// half updated. Carries what the acquire returned (a guard, or `true`),
/// like `std::sync::PoisonError`.
///
/// ```
/// use brood::sync::Lock;
///
/// let lock = Lock::new()?;
/// let _ = std::panic::catch_unwind(|| {
///     let _held = lock.lock().unwrap();
///     panic!("a holder dies while holding the lock");
/// });
/// let guard = match lock.lock() {
///     Ok(guard) => guard,
///     Err(died) => {
///         // ... repair the shared data, then:
///         lock.clear_poison();
///         died.into_inner()
///     }
/// };
/// drop(guard);
/// assert!(!lock.is_poisoned());
/// # Ok::<(), brood::Error>(())
/// ```
pub struct OwnerDied<G> {
    inner: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(inner: G) -> OwnerDied<G> {
        OwnerDied { inner }
    }

    /// What the acquire returned (the lock is held).
    ///
    /// ```
    /// let died = brood::sync::OwnerDied::from(true);
    /// assert!(died.into_inner());
    /// ```
    pub fn into_inner(self) -> G {
        self.inner
    }

    /// A reference to what the acquire returned.
    ///
    /// ```
    /// let died = brood::sync::OwnerDied::from(true);
    /// assert!(*died.get_ref());
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.inner
    }

    /// A mutable reference to what the acquire returned.
    ///
    /// ```
    /// let mut died = brood::sync::OwnerDied::from(1);
    /// *died.get_mut() += 1;
    /// assert_eq!(died.into_inner(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.inner
    }
}

impl<G> From<G> for OwnerDied<G> {
    fn from(inner: G) -> OwnerDied<G> {
        OwnerDied { inner }
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDied").finish_non_exhaustive()
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a holder of the lock died while holding it; the state may be inconsistent")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// Why a non-blocking or timed acquire returned no guard.
///
/// ```
/// use brood::sync::{Lock, TryLockError};
///
/// let lock = Lock::new()?;
/// let _held = lock.lock().unwrap();
/// // A Lock is not reentrant: a second try from this thread fails.
/// assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
/// # Ok::<(), brood::Error>(())
/// ```
pub enum TryLockError<G> {
    /// Someone else holds it (and the timeout, if any, ran out).
    WouldBlock,
    /// Acquired, but a holder died: see [`OwnerDied`].
    OwnerDied(OwnerDied<G>),
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
            TryLockError::OwnerDied(e) => fmt::Debug::fmt(e, f),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("the lock is held by someone else"),
            TryLockError::OwnerDied(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for TryLockError<G> {}

/// The result of a blocking acquire: `Err` carries the guard when a holder
/// died (see [`OwnerDied`]).
///
/// ```
/// use brood::sync::{LockGuard, LockResult, RLock};
/// let lock = RLock::new()?;
/// let result: LockResult<LockGuard<'_>> = lock.lock();
/// assert!(result.is_ok());
/// # Ok::<(), brood::Error>(())
/// ```
pub type LockResult<G> = std::result::Result<G, OwnerDied<G>>;

/// The result of a non-blocking or timed acquire.
///
/// ```
/// use brood::sync::{Lock, TryLockError, TryLockResult};
/// let lock = Lock::new()?;
/// let first: TryLockResult<_> = lock.try_lock();
/// assert!(first.is_ok());
/// assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
/// # Ok::<(), brood::Error>(())
/// ```
pub type TryLockResult<G> = std::result::Result<G, TryLockError<G>>;

/// The error a `Condition` wait returns when it reacquired its lock from a
/// holder that died (the lock is held by the caller then).
pub(crate) fn owner_died_error() -> Error {
    Error::simple(
        ErrorKind::OwnerDied,
        "a holder of the lock died while holding it (the lock is now held by the caller and \
         poisoned; call clear_poison once the state is consistent)",
    )
}

/// The error `Value::get` and friends return when a holder of the lock died
/// (they let go of the lock before returning).
pub(crate) fn owner_died_error_released() -> Error {
    Error::simple(
        ErrorKind::OwnerDied,
        "a holder of the lock died while holding it (the lock is poisoned: take it with lock() \
         to read past the error, and call clear_poison once the state is consistent)",
    )
}

/// Test support, not part of the API: makes the calling thread use the
/// pthread fallback for brood's locks, as when glibc's robust-list layout
/// fails the check at run time (`on`), or lets it use the fast path again.
/// A child forked from this thread inherits the choice; other threads keep
/// theirs. Both paths interoperate on the same lock memory.
/// `BROOD_LOCK_FALLBACK=1` in the environment forces the fallback for every
/// thread of a process from the start.
///
/// ```
/// brood::sync::__force_pthread_fallback(true);
/// assert!(!brood::sync::__fast_path_active());
/// let lock = brood::sync::Lock::new()?;
/// drop(lock.lock().unwrap());
/// brood::sync::__force_pthread_fallback(false);
/// # Ok::<(), brood::Error>(())
/// ```
#[doc(hidden)]
pub fn __force_pthread_fallback(on: bool) {
    mutex::force_pthread(on)
}

/// Test support, not part of the API: whether the calling thread takes
/// brood's own robust-list fast path (false: the pthread fallback).
///
/// ```
/// let _ = brood::sync::__fast_path_active();
/// ```
#[doc(hidden)]
pub fn __fast_path_active() -> bool {
    mutex::fast_path_active()
}

/// Python's `BrokenBarrierError`.
pub(crate) fn broken_barrier_error() -> Error {
    Error::simple(ErrorKind::BrokenBarrier, "the barrier is broken")
}

/// Implements `Serialize`/`Deserialize` for a primitive that is one
/// `Block<$state>` field named `block`, with `$tail` bytes after the state.
macro_rules! shared_serde {
    ($ty:ty, $state:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                self.block.serialize(serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                crate::shm::Block::<$state>::deserialize_checked(deserializer, 0, 1)
                    .map(|block| Self { block })
            }
        }
    };
}
pub(crate) use shared_serde;
