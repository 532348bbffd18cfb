//! Jobs: what the supervisor fills in and the caller waits on, and the
//! typed handles over them (`AsyncResult`, the `imap` iterators).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, ErrorKind, PanicReport, Result};
use crate::launch;

use super::supervisor::{Shared, Unit};

/// One item's result as the worker sent it: a launch result tag and where
/// its payload (the encoded value, a panic report, or a message) lies in
/// the unit's result frame. Items share the frame: no copy per item.
pub(crate) struct Item {
    pub(crate) tag: u8,
    pub(crate) payload: std::ops::Range<usize>,
}

/// Where a unit's items lie in its result frame: `n` records back to back
/// from byte `start` on, each `[tag u8][len u32][payload]`, checked whole
/// by the supervisor when the frame arrived ([`ItemList::parse`]). Nothing
/// is allocated per item or per unit: the records are walked again where
/// they are read.
pub(crate) struct ItemList {
    start: usize,
    n: u32,
}

impl ItemList {
    /// Checks that `frame[start..]` holds exactly `n` well-formed records;
    /// `None` if it does not.
    pub(crate) fn parse(frame: &[u8], start: usize, n: u32) -> Option<ItemList> {
        let mut at = start;
        for _ in 0..n {
            let len = frame.get(at + 1..at + 5)?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            at = at.checked_add(5 + len)?;
        }
        (at == frame.len()).then_some(ItemList { start, n })
    }

    /// How many items.
    pub(crate) fn len(&self) -> usize {
        self.n as usize
    }

    /// The items, in order, read from `frame` (the frame they were parsed
    /// from).
    pub(crate) fn iter<'a>(&self, frame: &'a [u8]) -> ItemIter<'a> {
        ItemIter {
            frame,
            at: self.start,
            left: self.n,
        }
    }

    /// The first item.
    pub(crate) fn first(&self, frame: &[u8]) -> Option<Item> {
        self.iter(frame).next()
    }
}

/// The items of an [`ItemList`]. A record that does not fit the frame (the
/// list was parsed from another one) comes out as an item with an unknown
/// tag, which decodes to an error: never a panic, never an item lost.
pub(crate) struct ItemIter<'a> {
    frame: &'a [u8],
    at: usize,
    left: u32,
}

impl Iterator for ItemIter<'_> {
    type Item = Item;

    #[inline]
    fn next(&mut self) -> Option<Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.at;
        let record = self
            .frame
            .get(at..at + 5)
            .map(|h| (h[0], u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize))
            .filter(|(_, len)| at + 5 + len <= self.frame.len());
        match record {
            Some((tag, len)) => {
                self.at = at + 5 + len;
                Some(Item {
                    tag,
                    payload: at + 5..at + 5 + len,
                })
            }
            None => Some(Item {
                tag: u8::MAX,
                payload: 0..0,
            }),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// What became of one unit (a chunk of items).
pub(crate) enum UnitOutcome {
    /// The worker ran every item; each has its own result, a slice of
    /// `frame`.
    Items {
        worker: Arc<str>,
        frame: Vec<u8>,
        items: ItemList,
        /// How many times the unit was run (1 unless it was retried).
        attempts: u32,
    },
    /// No result: the worker died holding it, or the pool was terminated
    /// or interrupted. Every item of the unit fails with this error.
    Failed(Error),
}

/// Runs once when a job's last unit is in (callbacks), before waiters wake.
pub(crate) type Hook = Box<dyn FnOnce(&mut JobInner) + Send>;

pub(crate) struct JobInner {
    /// Unit outcomes in arrival order, with their unit index.
    pub(crate) arrived: VecDeque<(usize, UnitOutcome)>,
    /// How many units the job has, once known.
    pub(crate) expected: Option<usize>,
    pub(crate) received: usize,
    hook: Option<Hook>,
    /// The value the hook decoded (a `Result<R>`), for `get`.
    pub(crate) decoded: Option<Box<dyn Any + Send>>,
    /// Whether `get` handed the value out already.
    taken: bool,
    /// Set once `expected == received` and the hook ran.
    pub(crate) complete: bool,
    /// Threads waiting for arrivals (`imap`): only then does a delivery
    /// wake anyone.
    arrival_waiters: usize,
    /// Threads waiting for completion: woken once, at the end, and only if
    /// there are any (a notify is a syscall; most `apply_async` results
    /// are complete before their `get`).
    complete_waiters: usize,
    /// A future's job: the supervisor handed its unit to a worker (from
    /// then on `cancel` fails).
    claimed: bool,
    /// A future's job: `cancel` won (its one outcome is `Cancelled`).
    pub(crate) cancelled: bool,
    /// Attempts so far (the most of any unit; 1 unless retried).
    pub(crate) attempts: u32,
    /// The async task awaiting this job (`TaskFuture` as a `Future`).
    waker: Option<Waker>,
    /// `as_completed` / `wait` sets waiting on this job, with this job's
    /// index in theirs.
    listeners: Vec<(Arc<Signal>, usize)>,
}

/// Where completions of many jobs meet (`as_completed`, `wait`): each job
/// pushes its index once, at completion.
pub(crate) struct Signal {
    done: Mutex<VecDeque<usize>>,
    cond: Condvar,
}

impl Signal {
    pub(crate) fn new() -> Arc<Signal> {
        Arc::new(Signal {
            done: Mutex::new(VecDeque::new()),
            cond: Condvar::new(),
        })
    }

    fn push(&self, index: usize) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(index);
        self.cond.notify_all();
    }

    /// The next completed index, waiting until `deadline`; `None` when it
    /// passed first.
    pub(crate) fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = done.pop_front() {
                return Some(i);
            }
            done = match deadline {
                None => self.cond.wait(done).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.cond
                        .wait_timeout(done, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// Shared by the supervisor (which delivers) and one typed handle.
pub(crate) struct Job {
    inner: Mutex<JobInner>,
    cond: Condvar,
    /// Progress reports (issue 13, `progress.rs`): fed as units arrive.
    pub(crate) meter: std::sync::OnceLock<Arc<super::progress::Meter>>,
    /// Its verb failed after some of its units were queued (an item that
    /// cannot be encoded, `map` hands units over as it encodes them): no
    /// one will read it, and the supervisor drops its units that no
    /// worker was handed yet.
    abandoned: std::sync::atomic::AtomicBool,
}

impl Job {
    pub(crate) fn new(expected: Option<usize>, hook: Option<Hook>) -> Arc<Job> {
        let job = Arc::new(Job {
            inner: Mutex::new(JobInner {
                arrived: VecDeque::new(),
                expected,
                received: 0,
                hook,
                decoded: None,
                taken: false,
                complete: false,
                arrival_waiters: 0,
                complete_waiters: 0,
                claimed: false,
                cancelled: false,
                attempts: 1,
                waker: None,
                listeners: Vec::new(),
            }),
            cond: Condvar::new(),
            meter: std::sync::OnceLock::new(),
            abandoned: std::sync::atomic::AtomicBool::new(false),
        });
        if expected == Some(0) {
            job.finish(&mut job.lock());
        }
        job
    }

    /// Marks the job abandoned (see the field).
    pub(crate) fn abandon(&self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the job was abandoned: its queued units need not run.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, JobInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a unit's outcome; the last one runs the hook and wakes
    /// everyone waiting.
    pub(crate) fn deliver(&self, index: usize, outcome: UnitOutcome, attempts: u32) {
        // Progress reports (issue 13): one atomic load when there are none.
        if let Some(meter) = self.meter.get() {
            meter.on_unit(index, &outcome);
        }
        let mut inner = self.lock();
        if inner.cancelled {
            return; // its one outcome was the cancel
        }
        inner.attempts = inner.attempts.max(attempts);
        inner.arrived.push_back((index, outcome));
        inner.received += 1;
        let mut wake = inner.arrival_waiters > 0;
        let mut waker = None;
        let mut listeners = Vec::new();
        if inner.expected == Some(inner.received) {
            self.finish(&mut inner);
            wake |= inner.complete_waiters > 0;
            waker = inner.waker.take();
            listeners = std::mem::take(&mut inner.listeners);
        }
        drop(inner);
        if wake {
            self.cond.notify_all();
        }
        Job::wake_others(waker, listeners);
    }

    /// Says how many units the job has, once its verb has queued them all
    /// (`map` over an iterator learns it at the end); completes the job if
    /// they are all in already.
    pub(crate) fn set_expected(&self, count: usize) {
        let mut inner = self.lock();
        if inner.complete || inner.cancelled {
            return;
        }
        inner.expected = Some(count);
        if inner.received != count {
            return;
        }
        self.finish_and_wake(inner);
    }

    /// Completes the job (its last outcome is in) and, unlocked, wakes
    /// every kind of waiter.
    fn finish_and_wake(&self, mut inner: MutexGuard<'_, JobInner>) {
        self.finish(&mut inner);
        let wake = inner.complete_waiters > 0 || inner.arrival_waiters > 0;
        let waker = inner.waker.take();
        let listeners = std::mem::take(&mut inner.listeners);
        drop(inner);
        if wake {
            self.cond.notify_all();
        }
        Job::wake_others(waker, listeners);
    }

    fn wake_others(waker: Option<Waker>, listeners: Vec<(Arc<Signal>, usize)>) {
        if let Some(w) = waker {
            w.wake();
        }
        for (signal, index) in listeners {
            signal.push(index);
        }
    }

    /// A future's unit is about to go to a worker: whether it may (false
    /// if it was cancelled; then the supervisor drops it).
    pub(crate) fn claim(&self) -> bool {
        let mut inner = self.lock();
        if inner.cancelled {
            return false;
        }
        inner.claimed = true;
        true
    }

    /// Cancels a one-unit job that no worker has been handed yet: its one
    /// outcome becomes a `Cancelled` error. True if it is cancelled (now
    /// or before, as Python's `cancel()`); false if it was handed out or
    /// finished.
    pub(crate) fn try_cancel(&self, why: &str) -> bool {
        let mut inner = self.lock();
        if inner.cancelled {
            return true;
        }
        if inner.claimed || inner.complete {
            return false;
        }
        inner.cancelled = true;
        inner.arrived.push_back((
            0,
            UnitOutcome::Failed(Error::simple(ErrorKind::Cancelled, why)),
        ));
        inner.received += 1;
        self.finish_and_wake(inner);
        true
    }

    /// Records that a unit of this job runs again (attempt `attempts`).
    pub(crate) fn note_attempt(&self, attempts: u32) {
        let mut inner = self.lock();
        inner.attempts = inner.attempts.max(attempts);
    }

    /// Asks for `waker` to be woken at completion (the caller holds the
    /// lock and saw the job incomplete); replaces an earlier waker.
    pub(crate) fn set_waker(&self, inner: &mut JobInner, waker: &Waker) {
        match &mut inner.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    /// Has `signal` told (with `index`) when this job completes: at once if
    /// it already is.
    pub(crate) fn listen(&self, signal: &Arc<Signal>, index: usize) {
        let mut inner = self.lock();
        if inner.complete {
            drop(inner);
            signal.push(index);
        } else {
            inner.listeners.push((signal.clone(), index));
        }
    }

    /// Waits until complete or `deadline`; whether it is complete.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.wait_complete(self.lock(), deadline).1
    }

    fn finish(&self, inner: &mut JobInner) {
        if let Some(hook) = inner.hook.take() {
            // A callback that panics must not take the supervisor down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(inner)));
        }
        inner.complete = true;
    }

    /// Waits until complete or `deadline`; whether it is complete.
    fn wait_complete<'a>(
        &'a self,
        mut inner: MutexGuard<'a, JobInner>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, JobInner>, bool) {
        while !inner.complete {
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return (inner, false);
                    }
                    Some(left)
                }
            };
            // Counted under the lock, so `deliver` cannot miss us.
            inner.complete_waiters += 1;
            inner = match left {
                None => self.cond.wait(inner).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.cond
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            inner.complete_waiters -= 1;
        }
        (inner, true)
    }

    /// Waits for the next arrivals (streaming jobs) and moves them all
    /// to `into` (one lock for however many came).
    fn wait_arrivals(&self, into: &mut VecDeque<(usize, UnitOutcome)>) {
        let mut inner = self.lock();
        loop {
            if !inner.arrived.is_empty() {
                into.extend(inner.arrived.drain(..));
                return;
            }
            inner.arrival_waiters += 1;
            inner = self.cond.wait(inner).unwrap_or_else(|e| e.into_inner());
            inner.arrival_waiters -= 1;
        }
    }
}

/// A deadline `timeout` from now; `None` (forever) if that overflows, so
/// `Duration::MAX` means "no limit".
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Says how many attempts a retried unit took, in its error.
pub(crate) fn note_attempts<R>(result: Result<R>, attempts: u32) -> Result<R> {
    match result {
        Err(e) if attempts > 1 => Err(e.with_note(format!("after {attempts} attempts"))),
        other => other,
    }
}

/// Decodes one item's result; `attempts` over 1 is said in an error.
pub(crate) fn decode_item_of<R: DeserializeOwned>(
    worker: &str,
    frame: &[u8],
    item: &Item,
    attempts: u32,
) -> Result<R> {
    note_attempts(decode_item(worker, frame, item), attempts)
}

/// Decodes one item's result.
pub(crate) fn decode_item<R: DeserializeOwned>(
    worker: &str,
    frame: &[u8],
    item: &Item,
) -> Result<R> {
    let payload = frame.get(item.payload.clone()).unwrap_or_default();
    let text = || String::from_utf8_lossy(payload).into_owned();
    match item.tag {
        launch::TAG_RETURNED => codec::decode(payload),
        launch::TAG_PANICKED => {
            Err(Error::panicked(codec::decode::<PanicReport>(payload)?).in_process(worker))
        }
        launch::TAG_ENCODE_FAILED => Err(Error::simple(
            ErrorKind::Codec,
            format!("the task's value could not be encoded: {}", text()),
        )),
        launch::TAG_BAD_ARGS => Err(Error::simple(
            ErrorKind::Codec,
            format!(
                "the worker could not decode the task's arguments: {}",
                text()
            ),
        )),
        launch::TAG_UNKNOWN_TASK => Err(Error::simple(ErrorKind::UnknownTask, text())),
        tag => Err(Error::simple(
            ErrorKind::Codec,
            format!("unknown result tag {tag}"),
        )),
    }
}

/// A copy of a unit-level error for each of its items (the first item
/// gets the original).
fn fan_out(err: Error, n: usize) -> Vec<Error> {
    let kind = err.kind();
    let message = err.to_string();
    let mut out = vec![err];
    for _ in 1..n {
        out.push(Error::simple(kind, message.clone()));
    }
    out
}

/// Decodes every item of a unit of `n` items.
pub(crate) fn decode_unit<R: DeserializeOwned>(outcome: UnitOutcome, n: usize) -> Vec<Result<R>> {
    match outcome {
        UnitOutcome::Items {
            worker,
            frame,
            items,
            attempts,
        } => items
            .iter(&frame)
            .map(|item| decode_item_of(&worker, &frame, &item, attempts))
            .collect(),
        UnitOutcome::Failed(err) => fan_out(err, n.max(1)).into_iter().map(Err).collect(),
    }
}

/// How a handle turns a complete job into its value.
pub(crate) type Decode<R> = fn(&mut JobInner) -> Result<R>;

/// The value of a one-unit, one-item job (`apply`).
pub(crate) fn decode_one<R: DeserializeOwned>(inner: &mut JobInner) -> Result<R> {
    match inner.arrived.pop_front() {
        Some((
            _,
            UnitOutcome::Items {
                worker,
                frame,
                items,
                attempts,
            },
        )) => match items.first(&frame) {
            Some(item) => decode_item_of(&worker, &frame, &item, attempts),
            None => Err(Error::simple(ErrorKind::Codec, "the worker sent no result")),
        },
        Some((_, UnitOutcome::Failed(err))) => Err(err),
        None => Err(Error::invalid("the result was already taken")),
    }
}

/// The values of a many-unit job in input order (`map`): the first error
/// in input order fails the whole map, as in Python.
pub(crate) fn decode_all<R: DeserializeOwned>(inner: &mut JobInner) -> Result<Vec<R>> {
    // Units arrive in about input order; each goes to its index's slot
    // (their indices are 0..count, each once) rather than being sorted.
    let count = inner.arrived.len();
    let mut slots: Vec<Option<UnitOutcome>> = Vec::with_capacity(count);
    slots.resize_with(count, || None);
    for (i, unit) in inner.arrived.drain(..) {
        match slots.get_mut(i) {
            Some(slot @ None) => *slot = Some(unit),
            _ => {
                return Err(Error::simple(
                    ErrorKind::Codec,
                    format!("a map's unit {i} arrived twice or out of range"),
                ));
            }
        }
    }
    let units: Vec<(usize, UnitOutcome)> = slots
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            (
                i,
                u.expect("every slot is filled: count units, distinct indices"),
            )
        })
        .collect();
    let total = units
        .iter()
        .map(|(_, unit)| match unit {
            UnitOutcome::Items { items, .. } => items.len(),
            UnitOutcome::Failed(_) => 0,
        })
        .sum();
    let mut out = Vec::with_capacity(total);
    for (_, unit) in units {
        match unit {
            UnitOutcome::Items {
                worker,
                frame,
                items,
                attempts,
            } => {
                for item in items.iter(&frame) {
                    out.push(decode_item_of(&worker, &frame, &item, attempts)?);
                }
            }
            UnitOutcome::Failed(err) => return Err(err),
        }
    }
    Ok(out)
}

/// `map`'s values in input order, decoding each unit as soon as it and
/// those before it are in, while the workers still run later ones (for
/// jobs of few, large units: the caller is woken once per arrival). Same
/// outcome as [`decode_all`]: the values, or the first error in input
/// order, returned once every unit is in.
pub(crate) fn collect_streaming<R: DeserializeOwned>(job: &Job, items: usize) -> Result<Vec<R>> {
    let mut inner = job.lock();
    let expected = inner.expected.unwrap_or(0);
    let mut slots: Vec<Option<UnitOutcome>> = Vec::with_capacity(expected);
    slots.resize_with(expected, || None);
    let mut out = Vec::with_capacity(items);
    let mut next = 0;
    let mut first_err: Option<Error> = None;
    loop {
        let arrived: Vec<(usize, UnitOutcome)> = inner.arrived.drain(..).collect();
        if arrived.is_empty() {
            if inner.complete {
                break;
            }
            // Counted under the lock, so `deliver` cannot miss us.
            inner.arrival_waiters += 1;
            inner = job.cond.wait(inner).unwrap_or_else(|e| e.into_inner());
            inner.arrival_waiters -= 1;
            continue;
        }
        drop(inner);
        for (i, unit) in arrived {
            match slots.get_mut(i) {
                Some(slot @ None) => *slot = Some(unit),
                _ => {
                    first_err.get_or_insert_with(|| {
                        Error::simple(
                            ErrorKind::Codec,
                            format!("a map's unit {i} arrived twice or out of range"),
                        )
                    });
                }
            }
        }
        while let Some(unit) = slots.get_mut(next).and_then(Option::take) {
            next += 1;
            if first_err.is_some() {
                continue; // the map's outcome is that error
            }
            match unit {
                UnitOutcome::Items {
                    worker,
                    frame,
                    items,
                    attempts,
                } => {
                    for item in items.iter(&frame) {
                        match decode_item_of(&worker, &frame, &item, attempts) {
                            Ok(v) => out.push(v),
                            Err(e) => {
                                first_err = Some(e);
                                break;
                            }
                        }
                    }
                }
                UnitOutcome::Failed(err) => first_err = Some(err),
            }
        }
        inner = job.lock();
    }
    inner.taken = true;
    drop(inner);
    match first_err {
        Some(e) => Err(e),
        None if next != expected => Err(Error::simple(
            ErrorKind::Codec,
            "a map's units did not all arrive",
        )),
        None => Ok(out),
    }
}

/// The value of a one-unit, one-item job, decoded again each time (the
/// outcome stays in the job): a future's `result` may be asked for twice.
pub(crate) fn peek_one<R: DeserializeOwned>(inner: &JobInner) -> Result<R> {
    match inner.arrived.front() {
        Some((
            _,
            UnitOutcome::Items {
                worker,
                frame,
                items,
                attempts,
            },
        )) => match items.first(frame) {
            Some(item) => decode_item_of(worker, frame, &item, *attempts),
            None => Err(Error::simple(ErrorKind::Codec, "the worker sent no result")),
        },
        Some((_, UnitOutcome::Failed(err))) => Err(err.duplicate()),
        None => Err(Error::invalid("the result is not there")),
    }
}

/// Whether a complete job succeeded (Python's `successful()`).
pub(crate) fn job_successful(inner: &JobInner) -> bool {
    if let Some(decoded) = &inner.decoded {
        // Hooks store a `bool` beside the value: see `with_callbacks`.
        if let Some(ok) = decoded.downcast_ref::<Decoded>() {
            return ok.ok;
        }
    }
    inner.arrived.iter().all(|(_, unit)| match unit {
        UnitOutcome::Items { items, frame, .. } => {
            items.iter(frame).all(|i| i.tag == launch::TAG_RETURNED)
        }
        UnitOutcome::Failed(_) => false,
    })
}

/// What a hook leaves for `get`: whether it succeeded, and the
/// `Result<R>` itself.
pub(crate) struct Decoded {
    pub(crate) ok: bool,
    pub(crate) value: Option<Box<dyn Any + Send>>,
}

type OnSuccess<R> = Box<dyn FnOnce(&R) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

/// Success and error callbacks for the `*_async_with` verbs (Python's
/// `callback=` and `error_callback=`). They run in the pool's supervisor
/// thread, exactly once, when the result is complete and before `ready()`
/// turns true; keep them short, as Python asks (they hold up the results
/// of every other task while they run). A callback that panics is caught.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// let pool = brood::Pool::new(1)?;
/// let seen = Arc::new(AtomicU64::new(0));
/// let s = seen.clone();
/// let callbacks = brood::pool::Callbacks::new().on_success(move |v: &u64| {
///     s.store(*v, Ordering::SeqCst);
/// });
/// let r = pool.apply_async_with(|x: u64| x + 1, 41, callbacks)?;
/// assert_eq!(r.get()?, 42);
/// assert_eq!(seen.load(Ordering::SeqCst), 42);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Callbacks<R> {
    pub(crate) success: Option<OnSuccess<R>>,
    pub(crate) error: Option<OnError>,
}

impl<R> Default for Callbacks<R> {
    fn default() -> Self {
        Callbacks {
            success: None,
            error: None,
        }
    }
}

impl<R> fmt::Debug for Callbacks<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("success", &self.success.is_some())
            .field("error", &self.error.is_some())
            .finish()
    }
}

impl<R> Callbacks<R> {
    /// No callbacks yet.
    ///
    /// ```
    /// let c = brood::pool::Callbacks::<u8>::new();
    /// # let _ = c;
    /// ```
    pub fn new() -> Callbacks<R> {
        Callbacks::default()
    }

    /// Called with the value when the task succeeds (Python's `callback`).
    ///
    /// ```
    /// let c = brood::pool::Callbacks::new().on_success(|v: &u8| println!("{v}"));
    /// # let _ = c;
    /// ```
    pub fn on_success(mut self, f: impl FnOnce(&R) + Send + 'static) -> Callbacks<R> {
        self.success = Some(Box::new(f));
        self
    }

    /// Called with the error when the task fails (Python's
    /// `error_callback`).
    ///
    /// ```
    /// let c = brood::pool::Callbacks::<u8>::new().on_error(|e| eprintln!("{e}"));
    /// # let _ = c;
    /// ```
    pub fn on_error(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Callbacks<R> {
        self.error = Some(Box::new(f));
        self
    }

    /// The hook that decodes the value, runs the right callback, and keeps
    /// the value for `get`.
    pub(crate) fn into_hook(self, decode: Decode<R>) -> Option<Hook>
    where
        R: Send + 'static,
    {
        if self.success.is_none() && self.error.is_none() {
            return None;
        }
        Some(Box::new(move |inner: &mut JobInner| {
            let value = decode(inner);
            match &value {
                Ok(v) => {
                    if let Some(f) = self.success {
                        f(v);
                    }
                }
                Err(e) => {
                    if let Some(f) = self.error {
                        f(e);
                    }
                }
            }
            inner.decoded = Some(Box::new(Decoded {
                ok: value.is_ok(),
                value: Some(Box::new(value)),
            }));
        }))
    }
}

/// A result that will be ready later (Python's `AsyncResult`), from
/// [`Pool::apply_async`](crate::Pool::apply_async) and the other `_async`
/// verbs.
///
/// Every wait ends: with the value, the task's error (a panic with its
/// message and location), [`ErrorKind::WorkerLost`] if the worker died
/// holding the task, or [`ErrorKind::PoolClosed`] if the pool was
/// terminated first. The value is handed out once: `get` after a
/// successful `get` is an [`ErrorKind::InvalidState`] error (Python hands
/// the same object out again; Rust values move).
///
/// ```
/// use std::time::Duration;
///
/// let pool = brood::Pool::new(2)?;
/// let slow = pool.apply_async(|ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms }, 200)?;
/// assert!(!slow.ready());
/// assert!(slow.successful().is_err()); // not ready yet: an error, as in Python
/// assert!(slow.get_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// assert_eq!(slow.get()?, 200); // a later get still works
/// assert!(slow.successful()?);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct AsyncResult<R> {
    pub(crate) job: Arc<Job>,
    pub(crate) decode: Decode<R>,
    pub(crate) _value: PhantomData<fn() -> R>,
}

impl<R: 'static> AsyncResult<R> {
    /// Waits for the value (Python's `get()`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// assert_eq!(pool.apply_async(|x: i32| x * 2, 21)?.get()?, 42);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> Result<R> {
        self.get_deadline(None)
    }

    /// Waits at most `timeout` ([`ErrorKind::Timeout`] after it; the result
    /// stays available for a later `get`). `Duration::MAX` waits forever.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let r = pool.apply_async(|x: i32| x, 7)?;
    /// assert_eq!(r.get_timeout(std::time::Duration::from_secs(30))?, 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.get_deadline(deadline_after(timeout))
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<R> {
        let (mut inner, complete) = self.job.wait_complete(self.job.lock(), deadline);
        if !complete {
            return Err(Error::timeout("the pool's result is not ready yet"));
        }
        if let Some(mut decoded) = inner.decoded.take() {
            if let Some(d) = decoded.downcast_mut::<Decoded>()
                && let Some(value) = d.value.take()
                && let Ok(value) = value.downcast::<Result<R>>()
            {
                inner.taken = true;
                inner.decoded = Some(decoded);
                return *value;
            }
            inner.decoded = Some(decoded);
        }
        if inner.taken {
            return Err(Error::invalid(
                "the result was already taken by an earlier get",
            ));
        }
        inner.taken = true;
        (self.decode)(&mut inner)
    }

    /// Waits until the result is ready (Python's `wait()`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let r = pool.apply_async(|x: i32| x, 1)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) {
        let _ = self.job.wait_complete(self.job.lock(), None);
    }

    /// Waits at most `timeout`; whether the result is ready (Python's
    /// `wait(timeout)` returns nothing: call `ready()` after it).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let r = pool.apply_async(|x: i32| x, 1)?;
    /// assert!(r.wait_timeout(std::time::Duration::from_secs(30)));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.job
            .wait_complete(self.job.lock(), deadline_after(timeout))
            .1
    }

    /// Whether the result is ready (Python's `ready()`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let r = pool.apply_async(|x: i32| x, 1)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.job.lock().complete
    }

    /// Whether the task succeeded; an [`ErrorKind::InvalidState`] error
    /// while it is not ready (Python raises `ValueError`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let r = pool.apply_async(|x: i32| -> i32 { if x > 0 { panic!("no") } else { x } }, 1)?;
    /// r.wait();
    /// assert!(!r.successful()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        let inner = self.job.lock();
        if !inner.complete {
            return Err(Error::invalid("the result is not ready"));
        }
        Ok(job_successful(&inner))
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.job.lock().complete)
            .finish()
    }
}

/// Feeds a streaming job: encodes the next items into the unit with the
/// given index; `None` once the input is exhausted.
pub(crate) type Feed<'a> = Box<dyn FnMut(usize) -> Option<Result<Unit>> + 'a>;

/// The iterator of [`Pool::imap`](crate::Pool::imap) (ordered) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per
/// input item.
///
/// Lazy: input is pulled (and sent to the workers) only while fewer than a
/// small window of units are in flight, so an endless iterator works, and
/// dropping the iterator early leaves nothing behind (the tasks in flight
/// finish and are discarded).
///
/// ```
/// let pool = brood::Pool::new(2)?;
/// let squares: Vec<u64> = pool
///     .imap(|x: u64| x * x, 0..)          // an endless input
///     .take(5)
///     .collect::<brood::Result<_>>()?;
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct IMap<'a, R> {
    pub(crate) job: Arc<Job>,
    pub(crate) feed: Feed<'a>,
    /// Owned: a forked call's iterator feeds its own supervisor
    /// (`forked.rs`).
    pub(crate) shared: Arc<Shared>,
    /// An error to yield once everything before it was yielded (an item
    /// that did not encode, or a pool that stopped taking work).
    pub(crate) deferred: Option<Error>,
    pub(crate) ordered: bool,
    pub(crate) window: usize,
    /// Units submitted, with their item counts.
    pub(crate) sizes: Vec<usize>,
    /// Units handed to the caller so far (ordered: the next index wanted).
    pub(crate) consumed: usize,
    pub(crate) exhausted: bool,
    pub(crate) held: BTreeMap<usize, UnitOutcome>,
    /// Units arrived and taken from the job, not yet looked at.
    pub(crate) arrivals: VecDeque<(usize, UnitOutcome)>,
    pub(crate) current: VecDeque<Result<R>>,
    pub(crate) _value: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> IMap<'_, R> {
    /// Pulls input while fewer than `window` units are in flight, and
    /// submits what it pulled in one go.
    fn top_up(&mut self) {
        let mut units = Vec::new();
        while !self.exhausted && self.sizes.len() + units.len() - self.consumed < self.window {
            match (self.feed)(self.sizes.len() + units.len()) {
                Some(Ok(unit)) => units.push(unit),
                Some(Err(e)) => {
                    self.deferred = Some(e);
                    self.exhausted = true;
                }
                None => self.exhausted = true,
            }
        }
        if units.is_empty() {
            return;
        }
        let sizes: Vec<usize> = units.iter().map(|u| u.n as usize).collect();
        match self.shared.submit(units) {
            Ok(()) => self.sizes.extend(sizes),
            Err(e) => {
                self.deferred = Some(e);
                self.exhausted = true;
            }
        }
    }
}

impl<R> IMap<'_, R> {
    fn next_arrival(&mut self) -> (usize, UnitOutcome) {
        loop {
            if let Some(arrival) = self.arrivals.pop_front() {
                return arrival;
            }
            self.job.wait_arrivals(&mut self.arrivals);
        }
    }
}

impl<R: DeserializeOwned> Iterator for IMap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(item) = self.current.pop_front() {
                return Some(item);
            }
            self.top_up();
            if self.consumed == self.sizes.len() {
                return self.deferred.take().map(Err);
            }
            let (index, outcome) = if self.ordered {
                let want = self.consumed;
                loop {
                    if let Some(outcome) = self.held.remove(&want) {
                        break (want, outcome);
                    }
                    let (i, outcome) = self.next_arrival();
                    self.held.insert(i, outcome);
                }
            } else {
                self.next_arrival()
            };
            self.consumed += 1;
            let n = self.sizes[index];
            self.current.extend(decode_unit::<R>(outcome, n));
        }
    }
}

impl<R> fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("submitted", &self.sizes.len())
            .field("consumed", &self.consumed)
            .finish()
    }
}
