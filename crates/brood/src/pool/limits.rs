//! Time limits and retries for pool tasks: the policy types, the per-task
//! options ([`TaskOptions`]), and what a running task can see of its own
//! soft limit ([`task_deadline`], [`task_cancelled`]).

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

use super::future::TaskFuture;
use super::{Pool, func_named, func1};

/// Which failures a [`RetryPolicy`] retries; combine with `|`.
///
/// ```
/// use brood::pool::RetryOn;
///
/// let on = RetryOn::WORKER_LOST | RetryOn::TIMED_OUT;
/// assert!(on.contains(RetryOn::TIMED_OUT));
/// assert!(!on.contains(RetryOn::TASK_ERROR));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryOn(u8);

impl RetryOn {
    /// Nothing is retried.
    ///
    /// ```
    /// use brood::pool::RetryOn;
    /// assert!(!RetryOn::NOTHING.contains(RetryOn::WORKER_LOST));
    /// ```
    pub const NOTHING: RetryOn = RetryOn(0);
    /// The worker died while it held the task ([`ErrorKind::WorkerLost`]).
    ///
    /// ```
    /// let p = brood::pool::RetryPolicy::new(1).on(brood::pool::RetryOn::WORKER_LOST);
    /// # let _ = p;
    /// ```
    pub const WORKER_LOST: RetryOn = RetryOn(1);
    /// The task ran past its hard time limit ([`ErrorKind::TimedOut`]).
    ///
    /// ```
    /// use brood::pool::RetryOn;
    /// assert!(RetryOn::ANY.contains(RetryOn::TIMED_OUT));
    /// ```
    pub const TIMED_OUT: RetryOn = RetryOn(2);
    /// The task itself failed: it panicked ([`ErrorKind::Panicked`]).
    ///
    /// ```
    /// use brood::pool::RetryOn;
    /// assert!(!RetryOn::TIMED_OUT.contains(RetryOn::TASK_ERROR));
    /// ```
    pub const TASK_ERROR: RetryOn = RetryOn(4);
    /// All three.
    ///
    /// ```
    /// use brood::pool::RetryOn;
    /// assert!(RetryOn::ANY.contains(RetryOn::WORKER_LOST) && RetryOn::ANY.contains(RetryOn::TASK_ERROR));
    /// ```
    pub const ANY: RetryOn = RetryOn(7);

    /// Whether every failure in `other` is in `self`.
    ///
    /// ```
    /// use brood::pool::RetryOn;
    /// assert!(RetryOn::ANY.contains(RetryOn::TASK_ERROR));
    /// ```
    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;

    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

/// How a pool retries a failed task (Celery's `autoretry_for`,
/// `max_retries`, `retry_backoff`, `retry_jitter`). The default is no retry.
///
/// A retry runs the task again on a worker, after a backoff: the supervisor
/// requeues it; the caller waits on the same handle and sees only the last
/// attempt's outcome, and [`TaskFuture::attempts`] says how many there
/// were (a final error says it too: `"...; after 3 attempts"`). The n-th
/// retry waits `backoff × 2ⁿ⁻¹`, at most `max_backoff`; with jitter (the
/// default), a random time between half of that and all of it.
///
/// A retried unit runs again as a whole: under `map` with a chunksize over
/// 1, a chunk whose worker died reruns every item of the chunk.
///
/// ```
/// use std::time::Duration;
/// use brood::pool::{RetryOn, RetryPolicy};
///
/// let policy = RetryPolicy::new(3)
///     .on(RetryOn::WORKER_LOST | RetryOn::TIMED_OUT)
///     .backoff(Duration::from_millis(10), Duration::from_secs(1));
/// assert_eq!(policy.max_retries, 3);
/// let pool = brood::Pool::builder().processes(1).retry(policy).build()?;
/// # let _ = pool;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub max_retries: u32,
    /// Which failures are retried.
    pub on: RetryOn,
    /// The wait before the first retry; doubled for each one after.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Whether each wait is drawn at random between half of it and all of
    /// it (so many retries do not come back at once).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// No retry.
    fn default() -> Self {
        RetryPolicy::new(0)
    }
}

impl RetryPolicy {
    /// Up to `max_retries` retries of a task whose worker died or that ran
    /// past its hard limit ([`RetryOn::WORKER_LOST`] `|`
    /// [`RetryOn::TIMED_OUT`]), after 50 ms, doubling up to 5 s, with
    /// jitter.
    ///
    /// ```
    /// let p = brood::pool::RetryPolicy::new(2);
    /// assert_eq!((p.max_retries, p.jitter), (2, true));
    /// ```
    pub fn new(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            on: RetryOn::WORKER_LOST | RetryOn::TIMED_OUT,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            jitter: true,
        }
    }

    /// Which failures are retried.
    ///
    /// ```
    /// use brood::pool::{RetryOn, RetryPolicy};
    /// assert_eq!(RetryPolicy::new(1).on(RetryOn::ANY).on, RetryOn::ANY);
    /// ```
    pub fn on(mut self, on: RetryOn) -> RetryPolicy {
        self.on = on;
        self
    }

    /// The first wait and the longest one.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = brood::pool::RetryPolicy::new(1).backoff(Duration::ZERO, Duration::ZERO);
    /// assert_eq!(p.backoff, Duration::ZERO);
    /// ```
    pub fn backoff(mut self, first: Duration, max: Duration) -> RetryPolicy {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Whether waits are drawn at random (see the type's docs).
    ///
    /// ```
    /// assert!(!brood::pool::RetryPolicy::new(1).jitter(false).jitter);
    /// ```
    pub fn jitter(mut self, on: bool) -> RetryPolicy {
        self.jitter = on;
        self
    }

    /// Whether a unit that failed with `kind` on attempt `attempts` (1 is
    /// the first) runs again.
    pub(crate) fn retries(&self, kind: ErrorKind, attempts: u32) -> bool {
        let on = match kind {
            ErrorKind::WorkerLost => RetryOn::WORKER_LOST,
            ErrorKind::TimedOut => RetryOn::TIMED_OUT,
            ErrorKind::Panicked => RetryOn::TASK_ERROR,
            _ => return false,
        };
        self.on.contains(on) && attempts <= self.max_retries
    }

    /// The wait before attempt `attempts + 1`; `random` is uniform in
    /// `[0, 1)`.
    pub(crate) fn delay(&self, attempts: u32, random: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let full = self
            .backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        if self.jitter {
            full / 2 + full.mul_f64(random.clamp(0.0, 1.0) / 2.0)
        } else {
            full
        }
    }
}

/// Time limits and retry policy as set on a builder or per task.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Limits {
    pub(crate) soft: Option<Duration>,
    pub(crate) hard: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
}

impl Limits {
    /// These limits, each unset one taken from `defaults`.
    pub(crate) fn over(self, defaults: &Limits) -> Limits {
        Limits {
            soft: self.soft.or(defaults.soft),
            hard: self.hard.or(defaults.hard),
            retry: self.retry.or(defaults.retry),
        }
    }

    /// What each unit carries.
    pub(crate) fn for_unit(&self) -> UnitLimits {
        UnitLimits {
            soft: self.soft,
            hard: self.hard,
            retry: self.retry.map(Arc::new),
        }
    }
}

/// What a unit carries besides its items: its time limits inline (no
/// shared counter to bump per unit from two threads) and its retry
/// policy, shared, only if it has one.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnitLimits {
    pub(crate) soft: Option<Duration>,
    pub(crate) hard: Option<Duration>,
    pub(crate) retry: Option<Arc<RetryPolicy>>,
}

impl UnitLimits {
    /// Whether the unit header carries a limits field (the worker then
    /// records when it began the unit, and its soft deadline).
    pub(crate) fn on_wire(&self) -> bool {
        self.soft.is_some() || self.hard.is_some()
    }
}

pub(crate) fn check_limit(what: &str, d: Duration) -> Result<Duration> {
    if d.is_zero() {
        return Err(Error::invalid(format!("a {what} must be longer than zero")));
    }
    Ok(d)
}

thread_local! {
    /// The soft deadline of the unit this worker runs now.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Sets (or clears) the running unit's soft deadline (worker side).
pub(crate) fn set_task_deadline(deadline: Option<Instant>) {
    DEADLINE.with(|d| d.set(deadline));
}

/// The soft deadline of the pool task running in this thread: when its
/// soft time limit runs out (the limit counts from when the worker began
/// the task, or the whole chunk under `map` with a chunksize over 1).
/// `None` outside a pool task, or when the task has no soft limit.
///
/// A task that can stop early polls it (or [`task_cancelled`]) and returns
/// what it has: the soft limit never interrupts anything itself (a hard
/// limit does, by killing the worker).
///
/// ```
/// use std::time::Duration;
///
/// let pool = brood::Pool::builder()
///     .processes(1)
///     .soft_time_limit(Duration::from_millis(100))
///     .build()?;
/// let has_deadline = pool.apply(|()| brood::task_deadline().is_some(), ())?;
/// assert!(has_deadline);
/// assert!(brood::task_deadline().is_none()); // not in a task here
/// # Ok::<(), brood::Error>(())
/// ```
pub fn task_deadline() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// Whether the pool task running in this thread was asked to stop: its
/// soft time limit has run out. Always `false` outside a pool task.
///
/// ```
/// use std::time::Duration;
///
/// let pool = brood::Pool::builder()
///     .processes(1)
///     .soft_time_limit(Duration::from_millis(50))
///     .build()?;
/// // Counts until asked to stop, then returns cleanly.
/// let n = pool.apply(|()| {
///     let mut n = 0u64;
///     while !brood::task_cancelled() {
///         n += 1;
///         std::thread::sleep(Duration::from_millis(1));
///     }
///     n
/// }, ())?;
/// assert!(n > 0);
/// # Ok::<(), brood::Error>(())
/// ```
pub fn task_cancelled() -> bool {
    task_deadline().is_some_and(|d| Instant::now() >= d)
}

/// Per-task options, from [`Pool::options`]: time limits and a retry
/// policy for the tasks submitted through it, in place of the pool's
/// defaults (each option not set here keeps the pool's).
///
/// ```
/// use std::time::Duration;
/// use brood::pool::RetryPolicy;
///
/// let pool = brood::Pool::new(1)?;
/// let fut = pool
///     .options()
///     .soft_time_limit(Duration::from_secs(5))
///     .hard_time_limit(Duration::from_secs(10))
///     .retry(RetryPolicy::new(1))
///     .submit(|x: u32| x + 1, 1)?;
/// assert_eq!(fut.result()?, 2);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug)]
pub struct TaskOptions<'a> {
    pub(crate) pool: &'a Pool,
    pub(crate) limits: Limits,
    pub(crate) error: Option<Error>,
}

impl<'a> TaskOptions<'a> {
    /// The soft time limit of these tasks (see
    /// [`PoolBuilder::soft_time_limit`](crate::PoolBuilder::soft_time_limit)).
    /// Zero is an [`ErrorKind::InvalidState`] error from the verb.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.options().soft_time_limit(std::time::Duration::from_secs(1))
    ///     .submit(|()| brood::task_deadline().is_some(), ())?;
    /// assert!(f.result()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn soft_time_limit(mut self, limit: Duration) -> TaskOptions<'a> {
        match check_limit("soft time limit", limit) {
            Ok(d) => self.limits.soft = Some(d),
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// The hard time limit of these tasks (see
    /// [`PoolBuilder::hard_time_limit`](crate::PoolBuilder::hard_time_limit)).
    /// Zero is an [`ErrorKind::InvalidState`] error from the verb.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.options().hard_time_limit(Duration::from_millis(100))
    ///     .submit(|()| std::thread::sleep(Duration::from_secs(60)), ())?;
    /// assert_eq!(f.result().unwrap_err().kind(), brood::ErrorKind::TimedOut);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn hard_time_limit(mut self, limit: Duration) -> TaskOptions<'a> {
        match check_limit("hard time limit", limit) {
            Ok(d) => self.limits.hard = Some(d),
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// The retry policy of these tasks.
    ///
    /// ```
    /// use brood::pool::{RetryOn, RetryPolicy};
    /// let pool = brood::Pool::new(1)?;
    /// let policy = RetryPolicy::new(2).on(RetryOn::TASK_ERROR).backoff(Default::default(), Default::default());
    /// let f = pool.options().retry(policy).submit(|()| -> u8 { panic!("always") }, ())?;
    /// let err = f.result().unwrap_err();
    /// assert_eq!(f.attempts(), 3);
    /// assert!(err.to_string().contains("after 3 attempts"), "{err}");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> TaskOptions<'a> {
        self.limits.retry = Some(policy);
        self
    }

    fn check(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(e.duplicate()),
            None => Ok(()),
        }
    }

    /// [`Pool::submit`] with these options.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// assert_eq!(pool.options().submit(|x: u8| x * 2, 4)?.result()?, 8);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn submit<F, A, R>(self, f: F, args: A) -> Result<TaskFuture<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        drop(f);
        self.check()?;
        self.pool
            .submit_future(func1::<F, A, R>(), &args, Some(self.limits))
    }

    /// [`Pool::submit_task`] with these options.
    ///
    /// ```
    /// #[brood::task]
    /// fn half(x: u32) -> u32 { x / 2 }
    ///
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.options().submit_task::<u32, _>(concat!(module_path!(), "::half"), (8u32,))?;
    /// assert_eq!(f.result()?, 4);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn submit_task<R, A>(self, name: &str, args: A) -> Result<TaskFuture<R>>
    where
        A: Serialize,
        R: DeserializeOwned + 'static,
    {
        self.check()?;
        self.pool
            .submit_future(func_named(name)?, &args, Some(self.limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::new(5)
            .backoff(Duration::from_millis(10), Duration::from_millis(35))
            .jitter(false);
        assert_eq!(p.delay(1, 0.5), Duration::from_millis(10));
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(20));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(35));
        assert_eq!(p.delay(40, 0.5), Duration::from_millis(35));
        let j = p.jitter(true);
        assert_eq!(j.delay(1, 0.0), Duration::from_millis(5));
        assert!(j.delay(1, 0.99) <= Duration::from_millis(10));
    }

    #[test]
    fn retries_only_what_it_is_told() {
        let p = RetryPolicy::new(1);
        assert!(p.retries(ErrorKind::WorkerLost, 1));
        assert!(!p.retries(ErrorKind::WorkerLost, 2));
        assert!(!p.retries(ErrorKind::Panicked, 1));
        assert!(!p.retries(ErrorKind::PoolClosed, 1));
        assert!(
            RetryPolicy::new(1)
                .on(RetryOn::ANY)
                .retries(ErrorKind::Panicked, 1)
        );
        assert!(!RetryPolicy::default().retries(ErrorKind::TimedOut, 1));
    }
}
