//! An event engine: typed events, handlers registered per kind, run in
//! worker processes, timers, and a stop that drains or drops (the
//! reference's multi-process event engine). Design, ownership and what a
//! dying worker loses: `events/README.md`.
//!
//! ```
//! use brood::events::{Event, EventEngine, Stop};
//!
//! fn on_tick(event: &Event<u32>) {
//!     assert_ne!(event.payload, 13);
//! }
//!
//! let mut engine = EventEngine::<u32>::builder().workers(1).build()?;
//! engine.register("tick", on_tick);
//! engine.start()?;
//! engine.put(Event::new("tick", 1))?;
//! let report = engine.stop(Stop::Drain)?;
//! assert_eq!(report.handled, 1);
//! # Ok::<(), brood::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::context::StartMethod;
use crate::error::{Error, ErrorKind, Result};
use crate::process::Process;
use crate::queue::{GetError, Queue};
use crate::shm::RawArray;
use crate::task::{self, Fail};

/// One event: a kind (what handlers are registered for) and a payload of
/// any serde type.
///
/// ```
/// let e = brood::events::Event::new("tick", 7u8);
/// assert_eq!(e.kind, "tick");
/// assert_eq!(e.payload, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<E> {
    /// The kind: every handler registered for it runs, in registration order.
    pub kind: String,
    /// The event's data.
    pub payload: E,
}

impl<E> Event<E> {
    /// An event of `kind` carrying `payload`.
    ///
    /// ```
    /// let e = brood::events::Event::new(String::from("price"), 1.5f64);
    /// assert_eq!(e.kind, "price");
    /// ```
    pub fn new(kind: impl Into<String>, payload: E) -> Event<E> {
        Event {
            kind: kind.into(),
            payload,
        }
    }
}

/// What a handler may return: `()` (success unless it panics) or a
/// `Result` whose error is reported as a [`Failure`].
///
/// ```
/// use brood::events::Outcome;
/// assert_eq!(().into_outcome(), Ok(()));
/// assert_eq!(Err::<(), _>("bad price").into_outcome(), Err("bad price".to_string()));
/// ```
pub trait Outcome {
    /// `Ok(())`, or the error's message.
    fn into_outcome(self) -> std::result::Result<(), String>;
}

impl Outcome for () {
    fn into_outcome(self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<T, X: fmt::Display> Outcome for std::result::Result<T, X> {
    fn into_outcome(self) -> std::result::Result<(), String> {
        self.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Why an event (or one handler's run of it) failed.
///
/// ```
/// use brood::events::Reason;
/// assert!(Reason::Lost("killed by signal 9 (SIGKILL)".into()).to_string().contains("SIGKILL"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The handler panicked (the panic's message); the worker goes on.
    Panicked(String),
    /// The handler returned an error (its message).
    Error(String),
    /// The worker died with the event in its hands (how it died); the
    /// engine started a replacement.
    Lost(String),
    /// The event could not be decoded in the worker (the codec's message).
    Undelivered(String),
    /// A worker could not be started (the error); the engine retries.
    Worker(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Panicked(m) => write!(f, "handler panicked: {m}"),
            Reason::Error(m) => write!(f, "handler failed: {m}"),
            Reason::Lost(how) => write!(f, "lost: the worker {how}"),
            Reason::Undelivered(m) => write!(f, "could not be decoded: {m}"),
            Reason::Worker(m) => write!(f, "worker could not start: {m}"),
        }
    }
}

/// A failure reported by the engine (read them from
/// [`EventEngine::failures`]).
///
/// ```
/// use brood::events::{Failure, Reason};
/// let f = Failure {
///     seq: Some(3),
///     kind: Some("tick".into()),
///     handler: None,
///     worker: 0,
///     pid: None,
///     reason: Reason::Error("no".into()),
/// };
/// assert_eq!(f.to_string(), "event 3 (tick) on worker 0: handler failed: no");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The event's number as [`EventEngine::put`] returned it (`None`: not
    /// known, e.g. a worker killed in the instant between taking an event
    /// and marking it as in hand).
    pub seq: Option<u64>,
    /// The event's kind, when known.
    pub kind: Option<String>,
    /// The handler's name (`std::any::type_name`), for handler failures.
    pub handler: Option<String>,
    /// The worker's index (`0..workers`).
    pub worker: usize,
    /// The worker process's pid, when known.
    pub pid: Option<i32>,
    /// What happened.
    pub reason: Reason,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "event {seq}")?,
            None => f.write_str("an event")?,
        }
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        if let Some(h) = &self.handler {
            write!(f, " in {h}")?;
        }
        write!(f, " on worker {}: {}", self.worker, self.reason)
    }
}

/// What [`EventEngine::stop`] does with the events still queued.
///
/// ```
/// assert_ne!(brood::events::Stop::Drain, brood::events::Stop::Drop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Handle every event put before `stop`, then stop.
    Drain,
    /// Discard the events no worker has taken yet; the ones in hand finish.
    Drop,
}

/// What happened to the events, counted when the engine stopped.
///
/// ```
/// let r = brood::events::StopReport::default();
/// assert_eq!((r.handled, r.dropped, r.lost, r.unreported), (0, 0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Events a worker finished (failed handlers included).
    pub handled: u64,
    /// Events discarded by [`Stop::Drop`].
    pub dropped: u64,
    /// Events lost with a worker that died.
    pub lost: u64,
    /// Failures not delivered because [`EventEngine::failures`] already
    /// held [`FAILURES_BOUND`] unread ones (counted instead of kept).
    pub unreported: u64,
}

/// How many unread failures the engine keeps; past that it counts them
/// ([`StopReport::unreported`]) so that an engine nobody reads from does
/// not grow without bound.
///
/// ```
/// assert_eq!(brood::events::FAILURES_BOUND, 65_536);
/// ```
pub const FAILURES_BOUND: usize = 65_536;

/// One event as it travels to a worker, built by hand in one buffer at
/// `put` so that the event is encoded once and the job adds no second
/// encoding: `seq` (u64, little-endian), the number of handlers (u32 LE),
/// each handler's trampoline offset (i64 LE), then the event's codec
/// bytes, which the worker hands to each handler's trampoline as they lie.
#[derive(Serialize, Deserialize)]
struct Job(#[serde(with = "serde_bytes")] Vec<u8>);

/// Where a job's handler offsets start.
const JOB_HEAD: usize = 12;

/// A job's parts, read in place.
struct JobView<'a> {
    seq: u64,
    handlers: &'a [u8],
    event: &'a [u8],
}

impl Job {
    /// The job's parts; `None` if the bytes are not a job (never from
    /// `put`, but a queue is shared memory: do not trust it blindly).
    fn view(&self) -> Option<JobView<'_>> {
        let b = &self.0;
        let seq = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(b.get(8..JOB_HEAD)?.try_into().ok()?) as usize;
        let end = n.checked_mul(8)?.checked_add(JOB_HEAD)?;
        Some(JobView {
            seq,
            handlers: b.get(JOB_HEAD..end)?,
            event: b.get(end..)?,
        })
    }
}

impl JobView<'_> {
    fn handlers(&self) -> impl Iterator<Item = i64> + '_ {
        self.handlers
            .chunks_exact(8)
            .map(|h| i64::from_le_bytes(h.try_into().expect("8 bytes")))
    }
}

thread_local! {
    /// The job buffer `put` builds in, reused by every put of the thread.
    static JOB: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A failure as a worker reports it.
#[derive(Serialize, Deserialize)]
struct Report {
    worker: usize,
    pid: i32,
    seq: Option<u64>,
    kind: Option<String>,
    handler: Option<i64>,
    reason: Reason,
}

/// `(index, inbox, outbox, stats, exe)`: what a worker process is started
/// with (`exe`: the engine's executable, which handler offsets are valid for).
type WorkerArgs = (usize, Queue<Job>, Queue<Report>, RawArray<u64>, (u64, u64));

/// Per worker slot `i`, in `stats`: `[2i]` the seq + 1 of the event in hand
/// (0: none), `[2i + 1]` the events finished so far (across replacements).
const IN_HAND: usize = 0;
const FINISHED: usize = 1;

fn worker_main((index, inbox, outbox, stats, exe): WorkerArgs) {
    let pid = crate::os::pid::current().as_raw();
    let mut finished = stats.get(2 * index + FINISHED).unwrap_or(0);
    loop {
        let job = match inbox.get() {
            Ok(job) => job,
            Err(GetError::Closed) => return,
            Err(e) if e.is_empty() => continue,
            Err(e) => {
                let _ = outbox.put(Report {
                    worker: index,
                    pid,
                    seq: None,
                    kind: None,
                    handler: None,
                    reason: Reason::Undelivered(e.to_string()),
                });
                continue;
            }
        };
        let Some(job) = job.view() else {
            let _ = outbox.put(Report {
                worker: index,
                pid,
                seq: None,
                kind: None,
                handler: None,
                reason: Reason::Undelivered("a malformed job in the inbox".to_string()),
            });
            finished += 1;
            let _ = stats.set(2 * index + FINISHED, finished);
            continue;
        };
        let _ = stats.set(2 * index + IN_HAND, job.seq + 1);
        for handler in job.handlers() {
            if let Some(reason) = run_handler(handler, exe, job.event) {
                let kind = codec::decode::<Event<IgnoredAny>>(job.event)
                    .ok()
                    .map(|e| e.kind);
                let _ = outbox.put(Report {
                    worker: index,
                    pid,
                    seq: Some(job.seq),
                    kind,
                    handler: Some(handler),
                    reason,
                });
            }
        }
        finished += 1;
        let _ = stats.set(2 * index + FINISHED, finished);
        let _ = stats.set(2 * index + IN_HAND, 0);
    }
}

/// Runs one handler on one encoded event; `None` when it succeeded.
/// `exe` is the engine's executable: the offset names a trampoline there,
/// which `task::resolve` checks is this worker's executable too.
fn run_handler(offset: i64, exe: (u64, u64), event: &[u8]) -> Option<Reason> {
    let Some(call) = task::resolve(offset, exe) else {
        return Some(Reason::Undelivered(
            "the worker runs another executable than the engine".to_string(),
        ));
    };
    match call(event) {
        Ok(bytes) if bytes.is_empty() => None,
        Ok(bytes) => Some(
            codec::decode::<Reason>(&bytes).unwrap_or_else(|e| Reason::Undelivered(e.to_string())),
        ),
        Err(Fail::BadArgs(m) | Fail::Encode(m) | Fail::UnknownTask(m)) => {
            Some(Reason::Undelivered(m))
        }
    }
}

/// Decodes the event, calls `F` on it under `catch_unwind`, and returns no
/// bytes for success, else the encoded `Reason`.
fn handler_trampoline<F, E, R>(bytes: &[u8]) -> std::result::Result<Vec<u8>, Fail>
where
    F: Fn(&Event<E>) -> R,
    E: DeserializeOwned,
    R: Outcome,
{
    let event: Event<E> = codec::decode(bytes).map_err(|e| Fail::BadArgs(e.to_string()))?;
    // Only instantiated by `EventEngine::register`, which was given a value
    // of `F` (a function item or a capture-free closure).
    let call = || task::call_capture_free::<F, _, _>(&event).into_outcome();
    let reason = match catch_unwind(AssertUnwindSafe(call)) {
        // Success is no bytes (no allocation): the common case stays cheap.
        Ok(Ok(())) => return Ok(Vec::new()),
        Ok(Err(m)) => Reason::Error(m),
        Err(payload) => Reason::Panicked(panic_message(&*payload)),
    };
    codec::encode(&reason).map_err(|e| Fail::Encode(e.to_string()))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// FNV-1a: the registry's hash (kinds are short strings looked up on every
/// `put`; no hostile input reaches the engine's own map) and the route.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { FNV_BASIS } else { self.0 };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The worker a kind goes to: FNV-1a of the kind, modulo the workers (the
/// same kind always goes to the same worker, hence per-kind order).
fn route(kind: &str, workers: usize) -> usize {
    let mut h = Fnv(FNV_BASIS);
    h.write(kind.as_bytes());
    (h.finish() % workers as u64) as usize
}

/// One worker slot's inbox and the number of jobs the engine put into it
/// (under the lock, so the supervisor can count what a dead worker took).
struct Slot {
    inbox: Queue<Job>,
    puts: Mutex<u64>,
}

/// What `put` (from any thread, timers included) and the supervisor share.
struct Shared {
    slots: Vec<Slot>,
    registry: RwLock<HashMap<String, Vec<i64>, BuildHasherDefault<Fnv>>>,
    names: RwLock<HashMap<i64, &'static str>>,
    seq: AtomicU64,
    stopped: AtomicBool,
    /// The live workers' pids, per slot (kept by the supervisor).
    pids: Mutex<Vec<Option<i32>>>,
}

impl Shared {
    fn put<E: Serialize>(&self, event: &Event<E>) -> Result<u64> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::simple(
                ErrorKind::Closed,
                "the event engine is stopped",
            ));
        }
        // The job is built in this thread's buffer: the header, the
        // handlers as they are now (no copy of the registry's list), then
        // the event, encoded once.
        let mut buf = JOB.take();
        buf.clear();
        buf.extend_from_slice(&[0; JOB_HEAD]);
        let handlers = {
            let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
            let list = registry
                .get(event.kind.as_str())
                .map_or(&[][..], |l| &l[..]);
            for h in list {
                buf.extend_from_slice(&h.to_le_bytes());
            }
            list.len()
        };
        let result = self.put_job(&mut buf, handlers, event);
        if buf.capacity() <= 1 << 20 {
            JOB.set(buf);
        }
        result
    }

    fn put_job<E: Serialize>(
        &self,
        buf: &mut Vec<u8>,
        handlers: usize,
        event: &Event<E>,
    ) -> Result<u64> {
        codec::encode_into(buf, event)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if handlers == 0 {
            return Ok(seq);
        }
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        let n = u32::try_from(handlers).map_err(|_| Error::invalid("too many handlers"))?;
        buf[8..JOB_HEAD].copy_from_slice(&n.to_le_bytes());
        let job = Job(std::mem::take(buf));
        let slot = &self.slots[route(&event.kind, self.slots.len())];
        let mut puts = slot.puts.lock().unwrap_or_else(|p| p.into_inner());
        let put = slot.inbox.put_ref(&job).map_err(|e| match e {
            crate::queue::PutError::Closed(_) => {
                Error::simple(ErrorKind::Closed, "the event engine is stopped")
            }
            other => Error::from(other),
        });
        *buf = job.0;
        put?;
        *puts += 1;
        Ok(seq)
    }
}

/// Builds an [`EventEngine`]: the number of workers, their start method
/// and name.
///
/// ```
/// let engine = brood::events::EventEngine::<String>::builder()
///     .workers(2)
///     .name("prices")
///     .build()?;
/// assert_eq!(engine.workers(), 2);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EngineBuilder<E> {
    workers: usize,
    method: Option<StartMethod>,
    name: String,
    _event: PhantomData<fn(E)>,
}

impl<E: Serialize + DeserializeOwned + 'static> EngineBuilder<E> {
    /// The number of worker processes (default: [`cpu_count`](crate::cpu_count),
    /// at most 8). Zero is an error from [`build`](Self::build).
    ///
    /// ```
    /// assert!(brood::events::EventEngine::<u8>::builder().workers(0).build().is_err());
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// How workers start (default: brood's default start method).
    ///
    /// ```
    /// let b = brood::events::EventEngine::<u8>::builder().start_method(brood::StartMethod::Spawn);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The workers' name prefix (`{name}-worker-{i}`; default `events`).
    ///
    /// ```
    /// let e = brood::events::EventEngine::<u8>::builder().name("bus").build()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The engine (stopped: register handlers and timers, then
    /// [`start`](EventEngine::start)). Makes one queue per worker and the
    /// shared counters; starts no process yet.
    ///
    /// ```
    /// let e = brood::events::EventEngine::<u8>::builder().workers(3).build()?;
    /// assert_eq!(e.workers(), 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn build(self) -> Result<EventEngine<E>> {
        if self.workers == 0 {
            return Err(Error::invalid("an event engine needs at least one worker"));
        }
        let slots = (0..self.workers)
            .map(|_| {
                Ok(Slot {
                    inbox: Queue::new()?,
                    puts: Mutex::new(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::sync_channel(FAILURES_BOUND);
        Ok(EventEngine {
            shared: Arc::new(Shared {
                slots,
                registry: RwLock::new(HashMap::default()),
                names: RwLock::new(HashMap::new()),
                seq: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
                pids: Mutex::new(vec![None; self.workers]),
            }),
            method: self.method,
            name: self.name,
            outbox: Queue::new()?,
            stats: RawArray::zeroed(2 * self.workers)?,
            failures_tx: Some(tx),
            failures: rx,
            timers: Vec::new(),
            running_timers: Vec::new(),
            supervisor: None,
            state: EngineState::Created,
            _event: PhantomData,
        })
    }
}

type MakeEvent<E> = Box<dyn FnMut() -> Event<E> + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineState {
    Created,
    Running,
    Stopped,
}

/// A typed event engine whose handlers run in worker processes.
///
/// - [`register`](Self::register) a capture-free function (a `fn` item or
///   a closure without captures) for a kind; it runs in a worker, under
///   every start method.
/// - [`put`](Self::put) an event: all events of one kind go to the same
///   worker, so they are handled in the order they were put.
/// - [`every`](Self::every): a timer that puts an event periodically.
/// - [`failures`](Self::failures): handlers that panicked or returned an
///   error, and events lost with a worker that died (the engine replaces
///   the worker).
/// - [`stop`](Self::stop): [`Stop::Drain`] or [`Stop::Drop`] what is
///   still queued.
///
/// Handlers are resolved when an event is put: a handler registered later
/// sees only later events, and an event of a kind with no handler is
/// discarded at `put` (as the reference's engine does).
///
/// ```
/// use brood::events::{Event, EventEngine, Reason, Stop};
/// use std::time::Duration;
///
/// fn strict(event: &Event<i32>) -> Result<(), String> {
///     if event.payload < 0 { Err(format!("negative: {}", event.payload)) } else { Ok(()) }
/// }
///
/// let mut engine = EventEngine::builder().workers(1).build()?;
/// engine.register("n", strict);
/// engine.start()?;
/// engine.put(Event::new("n", 1))?;
/// let bad = engine.put(Event::new("n", -1))?;
/// let failure = engine.failures().recv_timeout(Duration::from_secs(30)).unwrap();
/// assert_eq!(failure.seq, Some(bad));
/// assert_eq!(failure.reason, Reason::Error("negative: -1".into()));
/// assert_eq!(engine.stop(Stop::Drain)?.handled, 2);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct EventEngine<E> {
    shared: Arc<Shared>,
    method: Option<StartMethod>,
    name: String,
    outbox: Queue<Report>,
    stats: RawArray<u64>,
    failures_tx: Option<mpsc::SyncSender<Failure>>,
    failures: mpsc::Receiver<Failure>,
    timers: Vec<(Duration, MakeEvent<E>)>,
    running_timers: Vec<(mpsc::Sender<()>, JoinHandle<()>)>,
    supervisor: Option<(mpsc::Sender<Command>, JoinHandle<StopReport>)>,
    state: EngineState,
    _event: PhantomData<fn(E)>,
}

impl<E> fmt::Debug for EventEngine<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventEngine")
            .field("name", &self.name)
            .field("workers", &self.shared.slots.len())
            .field("state", &self.state)
            .finish()
    }
}

impl<E: Serialize + DeserializeOwned + 'static> EventEngine<E> {
    /// An engine with the default builder (up to 8 workers, one per CPU).
    ///
    /// ```
    /// let engine = brood::events::EventEngine::<u8>::new()?;
    /// assert!(engine.workers() >= 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<EventEngine<E>> {
        EventEngine::builder().build()
    }

    /// A builder: workers, start method, name.
    ///
    /// ```
    /// let b = brood::events::EventEngine::<u8>::builder().workers(2);
    /// assert_eq!(b.build()?.workers(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn builder() -> EngineBuilder<E> {
        EngineBuilder {
            workers: crate::cpu_count().clamp(1, 8),
            method: None,
            name: "events".to_string(),
            _event: PhantomData,
        }
    }

    /// The number of worker processes.
    ///
    /// ```
    /// assert_eq!(brood::events::EventEngine::<u8>::builder().workers(2).build()?.workers(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.shared.slots.len()
    }

    /// Registers `handler` for events of `kind` (several handlers of one
    /// kind run in registration order; registering one twice runs it
    /// twice). `handler` must capture nothing (a compile error otherwise):
    /// it runs in another process.
    ///
    /// ```
    /// use brood::events::{Event, EventEngine};
    /// fn log(e: &Event<String>) { println!("{}", e.payload); }
    /// let engine = EventEngine::<String>::new()?;
    /// engine.register("log", log);
    /// engine.register("log", |e: &Event<String>| assert!(!e.payload.is_empty()));
    /// # Ok::<(), brood::Error>(())
    /// ```
    ///
    /// A handler that captures a variable cannot cross to a worker:
    ///
    /// ```compile_fail
    /// use brood::events::{Event, EventEngine};
    /// let engine = EventEngine::<String>::new().unwrap();
    /// let prefix = String::from("> ");
    /// engine.register("log", move |e: &Event<String>| println!("{prefix}{}", e.payload));
    /// ```
    pub fn register<F, R>(&self, kind: impl Into<String>, handler: F)
    where
        F: Fn(&Event<E>) -> R + Send + 'static,
        R: Outcome,
    {
        let offset = handler_offset::<F, E, R>(&handler);
        self.shared
            .names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(offset, std::any::type_name::<F>());
        self.shared
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.into())
            .or_default()
            .push(offset);
    }

    /// Removes every registration of `handler` for `kind`; whether there
    /// was one. Events already put still run it.
    ///
    /// ```
    /// use brood::events::{Event, EventEngine};
    /// fn h(_: &Event<u8>) {}
    /// let engine = EventEngine::<u8>::new()?;
    /// engine.register("k", h);
    /// assert!(engine.unregister("k", h));
    /// assert!(!engine.unregister("k", h));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn unregister<F, R>(&self, kind: &str, handler: F) -> bool
    where
        F: Fn(&Event<E>) -> R + Send + 'static,
        R: Outcome,
    {
        let offset = handler_offset::<F, E, R>(&handler);
        let mut registry = self
            .shared
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let Some(list) = registry.get_mut(kind) else {
            return false;
        };
        let before = list.len();
        list.retain(|&h| h != offset);
        let removed = list.len() != before;
        if list.is_empty() {
            registry.remove(kind);
        }
        removed
    }

    /// Queues `event` for its kind's worker and returns its number (the
    /// `seq` a [`Failure`] names). Before [`start`](Self::start) events
    /// wait in the queue; after [`stop`](Self::stop) it is an
    /// [`ErrorKind::Closed`] error. An event that does not encode is an
    /// [`ErrorKind::Codec`] error and nothing is queued.
    ///
    /// ```
    /// use brood::events::{Event, EventEngine, Stop};
    /// let mut engine = EventEngine::<u8>::builder().workers(1).build()?;
    /// let a = engine.put(Event::new("nobody-listens", 1))?;
    /// let b = engine.put(Event::new("nobody-listens", 2))?;
    /// assert_eq!(b, a + 1);
    /// engine.start()?;
    /// engine.stop(Stop::Drain)?;
    /// assert!(engine.put(Event::new("late", 3)).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put(&self, event: Event<E>) -> Result<u64> {
        self.shared.put(&event)
    }

    /// The pids of the worker processes alive now, by worker index (`None`:
    /// not started, or being replaced).
    ///
    /// ```
    /// use brood::events::{EventEngine, Stop};
    /// let mut engine = EventEngine::<u8>::builder().workers(1).build()?;
    /// assert_eq!(engine.worker_pids(), [None]);
    /// engine.start()?;
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    /// while engine.worker_pids()[0].is_none() && std::time::Instant::now() < deadline {
    ///     std::thread::sleep(std::time::Duration::from_millis(5));
    /// }
    /// assert!(engine.worker_pids()[0].is_some());
    /// engine.stop(Stop::Drain)?;
    /// assert_eq!(engine.worker_pids(), [None]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<Option<i32>> {
        self.shared
            .pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The failures reported so far and to come: handlers that panicked or
    /// returned an error, events lost with a killed worker, workers that
    /// could not start. The channel ends when the engine has stopped.
    ///
    /// ```
    /// let engine = brood::events::EventEngine::<u8>::new()?;
    /// assert!(engine.failures().try_recv().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn failures(&self) -> &mpsc::Receiver<Failure> {
        &self.failures
    }

    /// Starts the workers and the timers. A second `start`, or one after
    /// `stop`, is an [`ErrorKind::InvalidState`] error.
    ///
    /// ```
    /// use brood::events::{EventEngine, Stop};
    /// let mut engine = EventEngine::<u8>::builder().workers(1).build()?;
    /// engine.start()?;
    /// assert!(engine.start().is_err());
    /// engine.stop(Stop::Drop)?;
    /// assert!(engine.start().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn start(&mut self) -> Result<()> {
        if self.state != EngineState::Created {
            return Err(Error::simple(
                ErrorKind::InvalidState,
                "an event engine starts once",
            ));
        }
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let sup = Supervisor {
            shared: Arc::clone(&self.shared),
            outbox: self.outbox.clone(),
            stats: self.stats.clone(),
            method: self.method,
            name: self.name.clone(),
            failures: self.failures_tx.take().expect("set until start"),
            unreported: 0,
            lost: vec![0; self.workers()],
            dropped: vec![0; self.workers()],
        };
        let handle = std::thread::Builder::new()
            .name(format!("{}-supervisor", self.name))
            .spawn(move || sup.run(cmd_rx))
            .map_err(|e| Error::os_error("starting the supervisor thread", e))?;
        self.supervisor = Some((cmd_tx, handle));
        self.state = EngineState::Running;
        for (period, make) in std::mem::take(&mut self.timers) {
            self.spawn_timer(period, make)?;
        }
        Ok(())
    }

    /// A timer: puts `event` every `period`, from the engine's process, from
    /// `start` until `stop` (a timer added while running starts now). The
    /// schedule is fixed (missed ticks are skipped, never bunched). A zero
    /// period is an [`ErrorKind::InvalidState`] error.
    ///
    /// ```
    /// use brood::events::{Event, EventEngine};
    /// use std::time::Duration;
    /// let mut engine = EventEngine::<()>::new()?;
    /// engine.every(Duration::from_secs(1), Event::new("timer", ()))?;
    /// assert!(engine.every(Duration::ZERO, Event::new("timer", ())).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn every(&mut self, period: Duration, event: Event<E>) -> Result<()>
    where
        E: Clone + Send,
    {
        if period.is_zero() {
            return Err(Error::invalid("a timer's period must be positive"));
        }
        let make: MakeEvent<E> = Box::new(move || event.clone());
        match self.state {
            EngineState::Created => {
                self.timers.push((period, make));
                Ok(())
            }
            EngineState::Running => self.spawn_timer(period, make),
            EngineState::Stopped => Err(Error::simple(
                ErrorKind::Closed,
                "the event engine is stopped",
            )),
        }
    }

    fn spawn_timer(&mut self, period: Duration, mut make: MakeEvent<E>) -> Result<()> {
        let (tx, rx) = mpsc::channel::<()>();
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name(format!("{}-timer", self.name))
            .spawn(move || {
                let mut next = Instant::now() + period;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if shared.put(&make()).is_err() {
                        return;
                    }
                    next += period;
                    let now = Instant::now();
                    if next <= now {
                        // Skip the ticks missed (a stalled process), keep the phase.
                        let behind = (now - next).as_nanos() / period.as_nanos() + 1;
                        next += period * u32::try_from(behind).unwrap_or(u32::MAX);
                    }
                }
            })
            .map_err(|e| Error::os_error("starting a timer thread", e))?;
        self.running_timers.push((tx, handle));
        Ok(())
    }

    /// Stops the engine: timers first, then the workers, after they
    /// handled ([`Stop::Drain`]) or without ([`Stop::Drop`]) the events
    /// still queued; returns the counts. A worker that dies during a drain
    /// is replaced until the queue is empty. Stopping an engine that never
    /// started handles nothing (`Drop`) or starts it to drain (`Drain`);
    /// a second `stop` returns zeros. Dropping a running engine without
    /// `stop` drops what is queued and kills the workers (so a hung handler
    /// cannot hang the drop); the events they held are lost.
    ///
    /// ```
    /// use brood::events::{Event, EventEngine, Stop};
    /// fn h(_: &Event<u8>) {}
    /// let mut engine = EventEngine::<u8>::builder().workers(1).build()?;
    /// engine.register("k", h);
    /// for i in 0..10 { engine.put(Event::new("k", i))?; }
    /// let report = engine.stop(Stop::Drop)?;
    /// assert_eq!((report.handled, report.dropped), (0, 10));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn stop(&mut self, mode: Stop) -> Result<StopReport> {
        match self.state {
            EngineState::Stopped => return Ok(StopReport::default()),
            EngineState::Created if mode == Stop::Drain => self.start()?,
            _ => {}
        }
        self.shared.stopped.store(true, Ordering::SeqCst);
        for (tx, _) in &self.running_timers {
            let _ = tx.send(());
        }
        for (_, handle) in self.running_timers.drain(..) {
            let _ = handle.join();
        }
        self.state = EngineState::Stopped;
        match self.supervisor.take() {
            Some((tx, handle)) => {
                let _ = tx.send(Command::Stop(mode));
                handle
                    .join()
                    .map_err(|_| Error::invalid("the event engine's supervisor panicked"))
            }
            None => {
                // Never started: nothing ran; drop what was queued.
                let mut dropped = 0;
                for slot in &self.shared.slots {
                    slot.inbox.close();
                    while slot.inbox.try_get().is_ok() {
                        dropped += 1;
                    }
                }
                Ok(StopReport {
                    dropped,
                    ..StopReport::default()
                })
            }
        }
    }
}

impl<E> Drop for EventEngine<E> {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for (tx, _) in &self.running_timers {
            let _ = tx.send(());
        }
        for (_, handle) in self.running_timers.drain(..) {
            let _ = handle.join();
        }
        if let Some((tx, handle)) = self.supervisor.take() {
            let _ = tx.send(Command::Kill);
            let _ = handle.join();
        }
    }
}

/// The trampoline offset that names handler `F` (checks at compile time
/// that `F` captures nothing).
fn handler_offset<F, E, R>(_handler: &F) -> i64
where
    F: Fn(&Event<E>) -> R + Send + 'static,
    E: DeserializeOwned + 'static,
    R: Outcome,
{
    const { task::assert_captures_nothing::<F>() };
    task::to_offset(handler_trampoline::<F, E, R>)
}

/// The supervisor thread: starts the workers (from a thread that lives as
/// long as the engine, so `PR_SET_PDEATHSIG` does not fire early), forwards
/// the workers' failure reports, replaces dead workers and reports the event
/// each had in hand, and carries out `stop`.
struct Supervisor {
    shared: Arc<Shared>,
    outbox: Queue<Report>,
    stats: RawArray<u64>,
    method: Option<StartMethod>,
    name: String,
    failures: mpsc::SyncSender<Failure>,
    /// Failures the channel had no room for.
    unreported: u64,
    /// Per slot: events lost with dead workers, events dropped by `stop`.
    lost: Vec<u64>,
    dropped: Vec<u64>,
}

/// What the engine asks of its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// `stop(mode)`: drain or drop, and let the events in hand finish.
    Stop(Stop),
    /// The engine was dropped without `stop`: drop what is queued and kill
    /// the workers (a handler that never returns cannot hang a drop).
    Kill,
}

/// How often the supervisor looks at the workers when nothing is reported.
const TICK: Duration = Duration::from_millis(10);

impl Supervisor {
    fn send(&mut self, failure: Failure) {
        if let Err(mpsc::TrySendError::Full(_)) = self.failures.try_send(failure) {
            self.unreported += 1;
        }
    }

    fn spawn(&self, index: usize) -> Result<Process<()>> {
        let mut b = Process::builder()
            .name(format!("{}-worker-{index}", self.name))
            .daemon(true);
        if let Some(m) = self.method {
            b = b.start_method(m);
        }
        let mut p = b.target_with(
            worker_main,
            (
                index,
                self.shared.slots[index].inbox.clone(),
                self.outbox.clone(),
                self.stats.clone(),
                task::exe_identity(),
            ),
        );
        p.start()?;
        Ok(p)
    }

    fn set_pid(&self, i: usize, pid: Option<i32>) {
        self.shared.pids.lock().unwrap_or_else(|p| p.into_inner())[i] = pid;
    }

    fn report(&mut self, r: Report) {
        let handler = r.handler.and_then(|h| {
            self.shared
                .names
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&h)
                .map(|n| n.to_string())
        });
        self.send(Failure {
            seq: r.seq,
            kind: r.kind,
            handler,
            worker: r.worker,
            pid: Some(r.pid),
            reason: r.reason,
        });
    }

    fn forward_reports(&mut self, wait: Duration) {
        let mut first = true;
        loop {
            let got = if first {
                self.outbox.get_timeout(wait)
            } else {
                self.outbox.try_get()
            };
            first = false;
            match got {
                Ok(r) => self.report(r),
                Err(_) => return,
            }
        }
    }

    /// Counts what the dead worker of slot `i` took but did not finish, and
    /// reports it as lost.
    fn account_death(&mut self, i: usize, pid: Option<i32>, how: String) {
        let slot = &self.shared.slots[i];
        let puts = *slot.puts.lock().unwrap_or_else(|p| p.into_inner());
        let queued = slot.inbox.qsize() as u64;
        let finished = self.stats.get(2 * i + FINISHED).unwrap_or(0);
        let taken = puts.saturating_sub(queued + self.dropped[i]);
        let missing = taken.saturating_sub(finished + self.lost[i]);
        let in_hand = self.stats.get(2 * i + IN_HAND).unwrap_or(0);
        let _ = self.stats.set(2 * i + IN_HAND, 0);
        if missing == 0 {
            return;
        }
        self.lost[i] += missing;
        for n in 0..missing {
            self.send(Failure {
                seq: (n == 0 && in_hand > 0).then(|| in_hand - 1),
                kind: None,
                handler: None,
                worker: i,
                pid,
                reason: Reason::Lost(how.clone()),
            });
        }
    }

    fn drop_queued(&mut self, i: usize) {
        let slot = &self.shared.slots[i];
        let _puts = slot.puts.lock().unwrap_or_else(|p| p.into_inner());
        slot.inbox.close();
        while slot.inbox.try_get().is_ok() {
            self.dropped[i] += 1;
        }
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) -> StopReport {
        let n = self.shared.slots.len();
        let mut workers: Vec<Option<Process<()>>> = (0..n).map(|_| None).collect();
        let mut retry_at = vec![Instant::now(); n];
        let mut done = vec![false; n];
        let mut stopping: Option<Stop> = None;
        loop {
            if stopping.is_none() {
                let command = match commands.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::TryRecvError::Disconnected) => Some(Command::Kill),
                    Err(mpsc::TryRecvError::Empty) => None,
                };
                if let Some(command) = command {
                    let mode = match command {
                        Command::Stop(mode) => mode,
                        Command::Kill => Stop::Drop,
                    };
                    stopping = Some(mode);
                    for i in 0..n {
                        match mode {
                            Stop::Drain => self.shared.slots[i].inbox.close(),
                            Stop::Drop => self.drop_queued(i),
                        }
                    }
                    if command == Command::Kill {
                        // The engine is dropped: do not wait for handlers.
                        for p in workers.iter().flatten() {
                            let _ = p.kill();
                        }
                    }
                }
            }
            for i in 0..n {
                if done[i] {
                    continue;
                }
                if let Some(p) = &mut workers[i] {
                    if p.is_alive() {
                        continue;
                    }
                    let pid = p.pid().map(|p| p.as_raw());
                    let how = match p.join() {
                        Ok(()) => "exited".to_string(),
                        Err(e) => e.to_string(),
                    };
                    workers[i] = None;
                    self.set_pid(i, None);
                    self.account_death(i, pid, how);
                }
                let inbox = &self.shared.slots[i].inbox;
                if stopping.is_some() && inbox.is_closed() && inbox.is_empty() {
                    done[i] = true;
                    continue;
                }
                if Instant::now() < retry_at[i] {
                    continue;
                }
                match self.spawn(i) {
                    Ok(p) => {
                        self.set_pid(i, p.pid().map(|p| p.as_raw()));
                        workers[i] = Some(p);
                    }
                    Err(e) => {
                        retry_at[i] = Instant::now() + Duration::from_millis(100);
                        self.send(Failure {
                            seq: None,
                            kind: None,
                            handler: None,
                            worker: i,
                            pid: None,
                            reason: Reason::Worker(e.to_string()),
                        });
                        if stopping.is_some() {
                            // No worker to drain into: what is left is dropped.
                            self.drop_queued(i);
                        }
                    }
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            self.forward_reports(TICK);
        }
        // Every worker has exited: all its reports are in the outbox.
        self.forward_reports(Duration::ZERO);
        StopReport {
            handled: (0..n)
                .map(|i| self.stats.get(2 * i + FINISHED).unwrap_or(0))
                .sum(),
            dropped: self.dropped.iter().sum(),
            lost: self.lost.iter().sum(),
            unreported: self.unreported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, handlers: &[i64], event: &[u8]) -> Job {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&(handlers.len() as u32).to_le_bytes());
        for h in handlers {
            b.extend_from_slice(&h.to_le_bytes());
        }
        b.extend_from_slice(event);
        Job(b)
    }

    #[test]
    fn a_job_reads_back_its_parts() {
        let j = job(7, &[-3, 9], b"\x92\xa1k\x01");
        let v = j.view().unwrap();
        assert_eq!(v.seq, 7);
        assert_eq!(v.handlers().collect::<Vec<_>>(), [-3, 9]);
        assert_eq!(v.event, b"\x92\xa1k\x01");
    }

    #[test]
    fn malformed_jobs_are_refused_not_misread() {
        // Too short for the header, a handler count past the end, a count
        // that would overflow the length arithmetic.
        assert!(Job(vec![0; 11]).view().is_none());
        let mut j = job(1, &[5], b"");
        j.0[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(j.view().is_none());
        j.0[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(j.view().is_none());
        // An empty event is a job whose event fails to decode in the
        // handler (reported as undelivered), not a malformed one.
        assert!(job(1, &[], b"").view().is_some());
    }
}
