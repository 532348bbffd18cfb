//! Futures over pool tasks (Python's `concurrent.futures`): [`TaskFuture`],
//! [`as_completed`] and [`wait`].
//!
//! A [`TaskFuture`] is both a blocking handle (`result`, `cancel`, `done`)
//! and a [`std::future::Future`]: the job keeps the awaiting task's waker
//! and the supervisor wakes it when the outcome arrives, so any async
//! runtime can `.await` it (the library depends on none).

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

use super::job::{self, Job, Signal};

/// A task submitted with [`Pool::submit`](crate::Pool::submit) (Python's
/// `concurrent.futures.Future`): wait for it with [`result`](Self::result),
/// or `.await` it from async code.
///
/// Its outcome is exactly one of: the value, the task's panic (message and
/// location), [`ErrorKind::WorkerLost`](crate::ErrorKind::WorkerLost), [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) (a hard
/// time limit), [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled), or [`ErrorKind::PoolClosed`](crate::ErrorKind::PoolClosed)
/// (terminated first). The outcome stays in the future: `result` may be
/// called again and returns it again (as in Python).
///
/// ```
/// let pool = brood::Pool::new(2)?;
/// let fut = pool.submit(|x: u64| x * x, 12)?;
/// assert_eq!(fut.result()?, 144);
/// assert!(fut.done());
/// assert_eq!(fut.attempts(), 1);
/// # Ok::<(), brood::Error>(())
/// ```
///
/// From async code (any runtime; here a minimal executor):
///
/// ```
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Wake, Waker};
/// #     use std::sync::Arc;
/// #     struct T(std::thread::Thread);
/// #     impl Wake for T { fn wake(self: Arc<Self>) { self.0.unpark() } }
/// #     let waker = Waker::from(Arc::new(T(std::thread::current())));
/// #     let mut cx = Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } std::thread::park(); }
/// # }
/// let pool = brood::Pool::new(1)?;
/// let fut = pool.submit(|s: String| s.len(), "hello".to_string())?;
/// assert_eq!(block_on(fut)?, 5);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct TaskFuture<R> {
    pub(crate) job: Arc<Job>,
    pub(crate) _value: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.job.lock();
        f.debug_struct("TaskFuture")
            .field("done", &inner.complete)
            .field("cancelled", &inner.cancelled)
            .field("attempts", &inner.attempts)
            .finish()
    }
}

impl<R: DeserializeOwned> TaskFuture<R> {
    pub(crate) fn new(job: Arc<Job>) -> TaskFuture<R> {
        TaskFuture {
            job,
            _value: PhantomData,
        }
    }

    /// Waits for the outcome (Python's `result()`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let fut = pool.submit(|x: i32| -> i32 { if x < 0 { panic!("negative: {x}") } else { x } }, -1)?;
    /// let err = fut.result().unwrap_err();
    /// assert_eq!(err.kind(), brood::ErrorKind::Panicked);
    /// assert_eq!(err.panic().unwrap().message, "negative: -1");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn result(&self) -> Result<R> {
        self.result_deadline(None)
    }

    /// Waits at most `timeout` (Python's `result(timeout)`): after it, an
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error, and the task goes on (ask again
    /// later). `Duration::MAX` waits forever.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = brood::Pool::new(1)?;
    /// let fut = pool.submit(|()| std::thread::sleep(Duration::from_millis(300)), ())?;
    /// assert!(fut.result_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// fut.result_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.result_deadline(job::deadline_after(timeout))
    }

    fn result_deadline(&self, deadline: Option<Instant>) -> Result<R> {
        if !self.job.wait_until(deadline) {
            return Err(Error::timeout("the task is not done yet"));
        }
        job::peek_one(&self.job.lock())
    }
}

impl<R> TaskFuture<R> {
    /// Cancels the task if no worker has been handed it yet (Python's
    /// `cancel()`): then its outcome is an [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) error
    /// and it never runs; true again if it was cancelled already. False if
    /// it started (was handed to a worker —
    /// as in Python's executor, a worker may hold one queued task behind
    /// the running one, which counts as started), or finished.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = brood::Pool::new(1)?;
    /// let busy = pool.submit(|()| std::thread::sleep(Duration::from_millis(200)), ())?;
    /// let queued: Vec<_> = (0..4).map(|i| pool.submit(|x: u8| x, i)).collect::<Result<_, _>>()?;
    /// assert!(queued[3].cancel()); // still queued in the parent
    /// assert!(queued[3].cancelled());
    /// assert_eq!(queued[3].result().unwrap_err().kind(), brood::ErrorKind::Cancelled);
    /// busy.result()?;
    /// assert!(!busy.cancel()); // done: too late
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.job
            .try_cancel("the task was cancelled before it started")
    }

    /// Whether [`cancel`](Self::cancel) (or `shutdown` with
    /// `cancel_futures`) cancelled it.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.submit(|x: u8| x, 1)?;
    /// f.result()?;
    /// assert!(!f.cancelled());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn cancelled(&self) -> bool {
        self.job.lock().cancelled
    }

    /// Whether it has its outcome (done, failed or cancelled; Python's
    /// `done()`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.submit(|x: u8| x, 1)?;
    /// f.wait();
    /// assert!(f.done());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn done(&self) -> bool {
        self.job.lock().complete
    }

    /// Waits until it is done, without taking the value.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.submit(|x: u8| x, 1)?;
    /// f.wait();
    /// assert!(f.done());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) {
        self.job.wait_until(None);
    }

    /// How many times the task ran (or began): 1, or more if a
    /// [`RetryPolicy`](crate::pool::RetryPolicy) ran it again; final once
    /// it is done.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.submit(|x: u8| x, 1)?;
    /// f.result()?;
    /// assert_eq!(f.attempts(), 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn attempts(&self) -> u32 {
        self.job.lock().attempts
    }

    /// Whether it is done with an error other than a cancel (what
    /// [`WaitMode::FirstException`] waits for).
    pub(crate) fn failed(&self) -> bool {
        let inner = self.job.lock();
        inner.complete && !inner.cancelled && !job::job_successful(&inner)
    }
}

impl<R: DeserializeOwned> std::future::Future for TaskFuture<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let mut inner = self.job.lock();
        if inner.complete {
            return Poll::Ready(job::peek_one(&inner));
        }
        self.job.set_waker(&mut inner, cx.waker());
        Poll::Pending
    }
}

/// Yields futures as they finish (Python's
/// `concurrent.futures.as_completed`): those already done first, then each
/// one as its outcome arrives. Each future is yielded once.
///
/// ```
/// use std::time::Duration;
///
/// let pool = brood::Pool::new(3)?;
/// let futures: Vec<_> = [300u64, 10, 150]
///     .into_iter()
///     .map(|ms| pool.submit(|ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms }, ms))
///     .collect::<Result<_, _>>()?;
/// let order: Vec<u64> = brood::as_completed(&futures).map(|f| f.result()).collect::<Result<_, _>>()?;
/// assert_eq!(order, [10, 150, 300]);
/// # Ok::<(), brood::Error>(())
/// ```
pub fn as_completed<R>(futures: &[TaskFuture<R>]) -> AsCompleted<'_, R> {
    AsCompleted {
        inner: Completions::new(futures, None),
    }
}

/// [`as_completed`] with a time limit for the whole iteration (Python's
/// `as_completed(fs, timeout)`): each item is `Ok(future)`, or, once the
/// time is up with futures still pending, one [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error
/// and the end.
///
/// ```
/// use std::time::Duration;
///
/// let pool = brood::Pool::new(2)?;
/// let futures = vec![
///     pool.submit(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 0)?,
///     pool.submit(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 5_000)?,
/// ];
/// let mut it = brood::as_completed_timeout(&futures, Duration::from_millis(500));
/// assert!(it.next().unwrap().is_ok());
/// assert!(it.next().unwrap().unwrap_err().is_timeout());
/// assert!(it.next().is_none());
/// # Ok::<(), brood::Error>(())
/// ```
pub fn as_completed_timeout<R>(
    futures: &[TaskFuture<R>],
    timeout: Duration,
) -> AsCompletedTimeout<'_, R> {
    AsCompletedTimeout {
        inner: Completions::new(futures, job::deadline_after(timeout)),
        timed_out: false,
    }
}

/// What [`as_completed`] and [`wait`] share: one signal every future's job
/// pushes its index to when it completes.
struct Completions<'a, R> {
    futures: &'a [TaskFuture<R>],
    signal: Arc<Signal>,
    left: usize,
    deadline: Option<Instant>,
}

impl<'a, R> Completions<'a, R> {
    fn new(futures: &'a [TaskFuture<R>], deadline: Option<Instant>) -> Self {
        let signal = Signal::new();
        for (i, f) in futures.iter().enumerate() {
            f.job.listen(&signal, i);
        }
        Completions {
            futures,
            signal,
            left: futures.len(),
            deadline,
        }
    }

    /// The next finished index; `Err` when the deadline passed first;
    /// `Ok(None)` when every future was yielded.
    fn next_index(&mut self) -> std::result::Result<Option<usize>, ()> {
        if self.left == 0 {
            return Ok(None);
        }
        match self.signal.next(self.deadline) {
            Some(i) => {
                self.left -= 1;
                Ok(Some(i))
            }
            None => Err(()),
        }
    }
}

/// The iterator of [`as_completed`].
///
/// ```
/// let pool = brood::Pool::new(1)?;
/// let futures = vec![pool.submit(|x: u8| x, 1)?];
/// assert_eq!(brood::as_completed(&futures).count(), 1);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct AsCompleted<'a, R> {
    inner: Completions<'a, R>,
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = &'a TaskFuture<R>;

    fn next(&mut self) -> Option<&'a TaskFuture<R>> {
        match self.inner.next_index() {
            Ok(Some(i)) => Some(&self.inner.futures[i]),
            _ => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.left, Some(self.inner.left))
    }
}

impl<R> fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.inner.left)
            .finish()
    }
}

/// The iterator of [`as_completed_timeout`].
///
/// ```
/// let pool = brood::Pool::new(1)?;
/// let futures = vec![pool.submit(|x: u8| x, 1)?];
/// let it = brood::as_completed_timeout(&futures, std::time::Duration::from_secs(30));
/// assert_eq!(it.filter(|r| r.is_ok()).count(), 1);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct AsCompletedTimeout<'a, R> {
    inner: Completions<'a, R>,
    timed_out: bool,
}

impl<'a, R> Iterator for AsCompletedTimeout<'a, R> {
    type Item = Result<&'a TaskFuture<R>>;

    fn next(&mut self) -> Option<Result<&'a TaskFuture<R>>> {
        if self.timed_out {
            return None;
        }
        match self.inner.next_index() {
            Ok(Some(i)) => Some(Ok(&self.inner.futures[i])),
            Ok(None) => None,
            Err(()) => {
                self.timed_out = true;
                Some(Err(Error::timeout(format!(
                    "as_completed: {} of {} futures not done in time",
                    self.inner.left,
                    self.inner.futures.len()
                ))))
            }
        }
    }
}

impl<R> fmt::Debug for AsCompletedTimeout<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompletedTimeout")
            .field("left", &self.inner.left)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

/// When [`wait`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
///
/// ```
/// assert_ne!(brood::WaitMode::FirstCompleted, brood::WaitMode::AllCompleted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// As soon as any future is done (or cancelled).
    FirstCompleted,
    /// As soon as any future fails (an error other than a cancel), else
    /// when all are done.
    FirstException,
    /// When all are done.
    AllCompleted,
}

/// What [`wait`] found: the indices (into the slice it was given) of the
/// futures done and of those not done, each in increasing order (Python's
/// `DoneAndNotDoneFutures`, as index lists).
///
/// ```
/// let pool = brood::Pool::new(1)?;
/// let futures = vec![pool.submit(|x: u8| x, 1)?];
/// let d = brood::wait(&futures, brood::WaitMode::AllCompleted, None);
/// assert_eq!((d.done, d.not_done), (vec![0], vec![]));
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Done {
    /// Futures done (value, error or cancel).
    pub done: Vec<usize>,
    /// Futures still pending or running.
    pub not_done: Vec<usize>,
}

/// Waits until `mode` is met or `timeout` passes (Python's
/// `concurrent.futures.wait`), and says which futures are done. A timeout
/// is not an error: `not_done` is then non-empty (as in Python).
///
/// ```
/// use std::time::Duration;
/// use brood::WaitMode;
///
/// let pool = brood::Pool::new(2)?;
/// let futures = vec![
///     pool.submit(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 10)?,
///     pool.submit(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 3_000)?,
/// ];
/// let d = brood::wait(&futures, WaitMode::FirstCompleted, Some(Duration::from_secs(2)));
/// assert_eq!((d.done, d.not_done), (vec![0], vec![1]));
/// # Ok::<(), brood::Error>(())
/// ```
pub fn wait<R>(futures: &[TaskFuture<R>], mode: WaitMode, timeout: Option<Duration>) -> Done {
    let deadline = timeout.and_then(job::deadline_after);
    let mut c = Completions::new(futures, deadline);
    while let Ok(Some(i)) = c.next_index() {
        let stop = match mode {
            WaitMode::FirstCompleted => true,
            WaitMode::FirstException => futures[i].failed(),
            WaitMode::AllCompleted => false,
        };
        if stop {
            break;
        }
    }
    let (done, not_done): (Vec<usize>, Vec<usize>) =
        (0..futures.len()).partition(|&i| futures[i].done());
    Done { done, not_done }
}
