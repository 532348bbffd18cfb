//! Progress of a `map`/`imap`/`imap_unordered`/`as_completed`: an opt-in bar (indicatif,
//! drawn on standard error only when it is a terminal) and a stream of
//! [`ProgressEvent`]s for programs that draw their own (issue 13).
//!
//! ```
//! use brood::pool::Progress;
//!
//! let pool = brood::Pool::new(2)?;
//! let (progress, events) = Progress::channel();
//! let v = pool.progress(progress.show_bar(true)).map(|x: u64| x * 2, 0..100)?;
//! assert_eq!(v.len(), 100);
//! let last = events.try_iter().last().unwrap();
//! assert_eq!((last.done, last.total), (100, Some(100)));
//! assert!(last.finished);
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! Items are counted as their results reach the parent (in the pool's
//! supervisor thread, for every verb alike), so an ordered `imap`'s count
//! runs ahead of what the caller has consumed. Events are throttled (at
//! most one per [`Progress::every`], 100 ms by default) except the last
//! one, which is always sent, once, when `done == total`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::launch;

use super::future::{AsCompleted, TaskFuture};
use super::job::UnitOutcome;
use super::status::Counters;
use super::{IMap, Pool};

type Callback = Box<dyn FnMut(&ProgressEvent) + Send>;

/// Where events go.
enum Sink {
    Call(Callback),
    Channel(Sender<ProgressEvent>),
}

/// How to report the progress of one `map`/`imap`: a bar, events, or
/// both; give it to [`Pool::progress`].
///
/// ```
/// use brood::pool::Progress;
///
/// let pool = brood::Pool::new(1)?;
/// let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
/// let s = seen.clone();
/// let progress = Progress::new().on_event(move |e| s.store(e.done, std::sync::atomic::Ordering::SeqCst));
/// pool.progress(progress).map(|x: u8| x, 0..5)?;
/// assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Progress {
    bar: bool,
    label: Option<String>,
    every: Duration,
    sink: Option<Sink>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("bar", &self.bar)
            .field("label", &self.label)
            .field("every", &self.every)
            .field("events", &self.sink.is_some())
            .finish()
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

/// One report: where a `map`/`imap` stands.
///
/// ```
/// let (progress, rx) = brood::pool::Progress::channel();
/// let pool = brood::Pool::new(1)?;
/// pool.progress(progress).map(|x: u8| x, 0..3)?;
/// let e = rx.try_iter().last().unwrap();
/// assert_eq!((e.done, e.failures), (3, 0));
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEvent {
    /// Items whose result is in (failures included).
    pub done: u64,
    /// How many items there are, once known (an `imap` over an iterator
    /// of unknown length learns it when the iterator ends).
    pub total: Option<u64>,
    /// Items that failed (a panic, a lost worker, ...).
    pub failures: u64,
    /// Workers the pool replaced since this call began (deaths and
    /// recycling).
    pub restarts: u64,
    /// Since the call began.
    pub elapsed: Duration,
    /// Items per second so far.
    pub rate: f64,
    /// The last event: every item is in.
    pub finished: bool,
}

impl Progress {
    /// Reports nothing until told to ([`show_bar`](Progress::show_bar),
    /// [`on_event`](Progress::on_event)).
    ///
    /// ```
    /// let p = brood::pool::Progress::new();
    /// # let _ = p;
    /// ```
    pub fn new() -> Progress {
        Progress {
            bar: false,
            label: None,
            every: Duration::from_millis(100),
            sink: None,
        }
    }

    /// A progress bar on standard error (drawn only if it is a terminal;
    /// elsewhere nothing is written).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let v = pool.progress(brood::pool::Progress::bar()).map(|x: u32| x, 0..10)?;
    /// assert_eq!(v.len(), 10);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn bar() -> Progress {
        Progress::new().show_bar(true)
    }

    /// Events into a channel, and the receiver.
    ///
    /// ```
    /// let (progress, rx) = brood::pool::Progress::channel();
    /// let pool = brood::Pool::new(1)?;
    /// pool.progress(progress).map(|x: u8| x, 0..2)?;
    /// assert!(rx.try_iter().any(|e| e.finished));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn channel() -> (Progress, Receiver<ProgressEvent>) {
        let (tx, rx) = mpsc::channel();
        let mut p = Progress::new();
        p.sink = Some(Sink::Channel(tx));
        (p, rx)
    }

    /// Whether to draw the bar (on a terminal only).
    ///
    /// ```
    /// let p = brood::pool::Progress::new().show_bar(true);
    /// # let _ = p;
    /// ```
    pub fn show_bar(mut self, on: bool) -> Progress {
        self.bar = on;
        self
    }

    /// Text before the bar.
    ///
    /// ```
    /// let p = brood::pool::Progress::bar().label("squares");
    /// # let _ = p;
    /// ```
    pub fn label(mut self, label: &str) -> Progress {
        self.label = Some(label.to_string());
        self
    }

    /// Calls `f` with each event, in the pool's supervisor thread: keep it
    /// short (it holds up every result while it runs). Replaces a channel.
    ///
    /// ```
    /// let p = brood::pool::Progress::new().on_event(|e| eprintln!("{}/{:?}", e.done, e.total));
    /// # let _ = p;
    /// ```
    pub fn on_event(mut self, f: impl FnMut(&ProgressEvent) + Send + 'static) -> Progress {
        self.sink = Some(Sink::Call(Box::new(f)));
        self
    }

    /// At most one event per `interval` (the last one is always sent).
    ///
    /// ```
    /// let p = brood::pool::Progress::new().every(std::time::Duration::from_secs(1));
    /// # let _ = p;
    /// ```
    pub fn every(mut self, interval: Duration) -> Progress {
        self.every = interval;
        self
    }
}

/// A call's counter, fed by the supervisor as units arrive.
pub(crate) struct Meter {
    /// Items per unit (the last unit may have fewer).
    size: u64,
    done: AtomicU64,
    failures: AtomicU64,
    /// `u64::MAX` while unknown.
    total: AtomicU64,
    started: Instant,
    every_ns: u64,
    last_emit_ns: AtomicU64,
    finished: AtomicBool,
    counters: Arc<Counters>,
    restarts_before: u64,
    sink: Mutex<Option<Sink>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Meter {
    fn new(progress: Progress, size: usize, total: Option<u64>, counters: Arc<Counters>) -> Meter {
        let bar = (progress.bar && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                total,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            if let Some(label) = &progress.label {
                bar.set_message(label.clone());
            }
            bar
        });
        Meter {
            size: size.max(1) as u64,
            done: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            total: AtomicU64::new(total.unwrap_or(u64::MAX)),
            started: Instant::now(),
            every_ns: progress.every.as_nanos().min(u128::from(u64::MAX)) as u64,
            last_emit_ns: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            restarts_before: counters.restarts.load(Ordering::Relaxed),
            counters,
            sink: Mutex::new(progress.sink),
            bar,
        }
    }

    /// A unit's outcome arrived (called by `Job::deliver`).
    pub(crate) fn on_unit(&self, index: usize, outcome: &UnitOutcome) {
        let (items, failed) = match outcome {
            UnitOutcome::Items { items, frame, .. } => (
                items.len() as u64,
                items
                    .iter(frame)
                    .filter(|i| i.tag != launch::TAG_RETURNED)
                    .count() as u64,
            ),
            UnitOutcome::Failed(_) => {
                let n = self.unit_items(index);
                (n, n)
            }
        };
        if failed > 0 {
            self.failures.fetch_add(failed, Ordering::Relaxed);
        }
        let done = self.done.fetch_add(items, Ordering::Relaxed) + items;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
        self.maybe_emit(done);
    }

    /// Items in unit `index`: `size`, but the last unit holds the rest.
    fn unit_items(&self, index: usize) -> u64 {
        let total = self.total.load(Ordering::Relaxed);
        let before = index as u64 * self.size;
        if total == u64::MAX {
            self.size
        } else {
            total.saturating_sub(before).min(self.size)
        }
    }

    /// The input ended after `total` items.
    fn set_total(&self, total: u64) {
        if self.total.swap(total, Ordering::Relaxed) == total {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
        self.maybe_emit(self.done.load(Ordering::Relaxed));
    }

    fn maybe_emit(&self, done: u64) {
        let total = self.total.load(Ordering::Relaxed);
        if total != u64::MAX && done >= total {
            if !self.finished.swap(true, Ordering::AcqRel) {
                self.emit(true);
                if let Some(bar) = &self.bar {
                    bar.finish();
                }
            }
            return;
        }
        let now = self.started.elapsed().as_nanos() as u64;
        let last = self.last_emit_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.every_ns
            && self
                .last_emit_ns
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.emit(false);
        }
    }

    fn emit(&self, finished: bool) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sink) = sink.as_mut() else {
            return;
        };
        let elapsed = self.started.elapsed();
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let event = ProgressEvent {
            done,
            total: (total != u64::MAX).then_some(total),
            failures: self.failures.load(Ordering::Relaxed),
            restarts: self
                .counters
                .restarts
                .load(Ordering::Relaxed)
                .saturating_sub(self.restarts_before),
            elapsed,
            rate: done as f64 / elapsed.as_secs_f64().max(1e-9),
            finished,
        };
        match sink {
            Sink::Call(f) => {
                // A callback that panics must not take the supervisor down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&event)));
            }
            Sink::Channel(tx) => {
                let _ = tx.send(event);
            }
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

/// An input iterator that tells the meter its length when it ends.
struct Counted<I> {
    inner: I,
    seen: u64,
    meter: Arc<Meter>,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let next = self.inner.next();
        match next {
            Some(_) => self.seen += 1,
            None => self.meter.set_total(self.seen),
        }
        next
    }
}

/// The pool's verbs with a progress report, from [`Pool::progress`].
///
/// ```
/// use brood::pool::Progress;
///
/// let pool = brood::Pool::new(2)?;
/// let (progress, rx) = Progress::channel();
/// let mut v: Vec<u32> = pool
///     .progress(progress)
///     .chunksize(4)
///     .imap_unordered(|x: u32| x + 1, 0..20)
///     .collect::<brood::Result<_>>()?;
/// v.sort();
/// assert_eq!(v, (1..=20).collect::<Vec<_>>());
/// assert!(rx.try_iter().any(|e| e.finished && e.done == 20));
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug)]
pub struct WithProgress<'a> {
    pool: &'a Pool,
    progress: Progress,
    chunksize: Option<usize>,
}

impl Pool {
    /// The verbs `map`, `imap`, `imap_unordered` and `as_completed` with a progress
    /// report: a bar on a terminal, events, or both (see [`Progress`]).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let v = pool.progress(brood::pool::Progress::bar().label("double")).map(|x: u32| 2 * x, 0..8)?;
    /// assert_eq!(v[7], 14);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn progress(&self, progress: Progress) -> WithProgress<'_> {
        WithProgress {
            pool: self,
            progress,
            chunksize: None,
        }
    }
}

impl<'a> WithProgress<'a> {
    /// An explicit chunksize, as [`Pool::chunksize`]. Zero is an error from
    /// the verb.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let v = pool.progress(brood::pool::Progress::new()).chunksize(3).map(|x: u8| x, 0..7)?;
    /// assert_eq!(v.len(), 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn chunksize(mut self, chunksize: usize) -> WithProgress<'a> {
        self.chunksize = Some(chunksize);
        self
    }

    /// [`Pool::map`] with progress: the values in order; the first error
    /// in input order fails the map (after every item is in, so the last
    /// event says `done == total`).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let (progress, rx) = brood::pool::Progress::channel();
    /// let err = pool.progress(progress).map(|x: u8| -> u8 { if x == 3 { panic!("three") } else { x } }, 0..6).unwrap_err();
    /// assert!(err.to_string().contains("three"));
    /// let last = rx.try_iter().last().unwrap();
    /// assert_eq!((last.done, last.failures), (6, 1));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        drop(f);
        let items: Vec<A> = items.into_iter().collect();
        let n = items.len() as u64;
        let counters = self.pool.board.counters.clone();
        let progress = self.progress;
        // As `Pool::map`, with the meter on the job before its first unit
        // is queued.
        let job = self.pool.submit_many_with(
            super::func1::<F, A, R>(),
            &items,
            self.chunksize,
            None,
            |job, size| {
                let meter = Arc::new(Meter::new(progress, size, Some(n), counters));
                if n == 0 {
                    meter.maybe_emit(0);
                }
                let _ = job.meter.set(meter);
            },
        )?;
        super::async_result(job, super::job::decode_all::<R>).get()
    }

    /// [`Pool::imap`] with progress.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let v: Vec<u8> = pool.progress(brood::pool::Progress::new()).imap(|x: u8| x, 0..4).collect::<brood::Result<_>>()?;
    /// assert_eq!(v, [0, 1, 2, 3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap<F, A, R, I>(self, f: F, items: I) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.stream(f, items, true)
    }

    /// [`Pool::imap_unordered`] with progress.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let n = pool.progress(brood::pool::Progress::new()).imap_unordered(|x: u8| x, 0..4).count();
    /// assert_eq!(n, 4);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap_unordered<F, A, R, I>(self, f: F, items: I) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.stream(f, items, false)
    }

    fn stream<F, A, R, I>(self, f: F, items: I, ordered: bool) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        drop(f);
        let input = items.into_iter();
        let total = match input.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        };
        let size = self.chunksize.unwrap_or(1);
        let meter = Arc::new(Meter::new(
            self.progress,
            size,
            total,
            self.pool.board.counters.clone(),
        ));
        let counted = Counted {
            inner: input,
            seen: 0,
            meter: meter.clone(),
        };
        let imap: IMap<'a, R> = self.pool.imap_job(
            Ok(super::func1::<F, A, R>()),
            counted,
            self.chunksize,
            ordered,
        );
        // Set before the first unit is submitted (the iterator is lazy).
        let _ = imap.job.meter.set(meter);
        imap
    }
}

impl<'a> WithProgress<'a> {
    /// [`as_completed`](crate::as_completed) with progress: the futures in
    /// the order they finish, each counted (and a failure counted as one)
    /// as the iterator yields it, like `tqdm(as_completed(fs),
    /// total=len(fs))` in Python. The total is `futures.len()`; the last
    /// event (`finished`) comes with the last future.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let futures = (0..6u32)
    ///     .map(|x| pool.submit(|x: u32| -> u32 { if x == 4 { panic!("four") } else { x } }, x))
    ///     .collect::<brood::Result<Vec<_>>>()?;
    /// let (progress, rx) = brood::pool::Progress::channel();
    /// let n = pool.progress(progress).as_completed(&futures).count();
    /// assert_eq!(n, 6);
    /// let last = rx.try_iter().last().unwrap();
    /// assert_eq!((last.done, last.total, last.failures, last.finished), (6, Some(6), 1, true));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn as_completed<R>(self, futures: &'a [TaskFuture<R>]) -> AsCompletedProgress<'a, R> {
        let meter = Meter::new(
            self.progress,
            1,
            Some(futures.len() as u64),
            self.pool.board.counters.clone(),
        );
        if futures.is_empty() {
            meter.maybe_emit(0);
        }
        AsCompletedProgress {
            inner: crate::as_completed(futures),
            meter,
        }
    }
}

/// The iterator of [`WithProgress::as_completed`]: [`AsCompleted`] that
/// counts each future it yields.
///
/// ```
/// let pool = brood::Pool::new(1)?;
/// let futures = vec![pool.submit(|x: u8| x, 1)?];
/// let mut it = pool.progress(brood::pool::Progress::new()).as_completed(&futures);
/// assert_eq!(it.next().unwrap().result()?, 1);
/// assert!(it.next().is_none());
/// # Ok::<(), brood::Error>(())
/// ```
pub struct AsCompletedProgress<'a, R> {
    inner: AsCompleted<'a, R>,
    meter: Meter,
}

impl<'a, R> Iterator for AsCompletedProgress<'a, R> {
    type Item = &'a TaskFuture<R>;

    fn next(&mut self) -> Option<&'a TaskFuture<R>> {
        let f = self.inner.next()?;
        if f.failed() {
            self.meter.failures.fetch_add(1, Ordering::Relaxed);
        }
        let done = self.meter.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.meter.bar {
            bar.set_position(done);
        }
        self.meter.maybe_emit(done);
        Some(f)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<R> std::fmt::Debug for AsCompletedProgress<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedProgress")
            .field("left", &self.inner.size_hint().0)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_unit_holds_the_rest() {
        let m = Meter::new(Progress::new(), 4, Some(10), Arc::default());
        assert_eq!(m.unit_items(0), 4);
        assert_eq!(m.unit_items(2), 2);
        let unknown = Meter::new(Progress::new(), 4, None, Arc::default());
        assert_eq!(unknown.unit_items(5), 4);
    }
}
