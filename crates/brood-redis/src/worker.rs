//! The worker node: takes tasks from the stream, runs them in a local
//! `brood::Pool`, stores results, then acknowledges.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection};
use serde_bytes::ByteBuf;

use crate::conn::{self, Entry, GROUP, Keys};
use crate::error::{Error, ErrorKind, Result};
use crate::wire::{self, Rec};

/// A task to hand to the local pool again: when, entry id, part.
type Retry = (Instant, String, usize);

/// At most this many outcomes go in one writer pipeline.
const FLUSH_MAX: usize = 4096;

/// A worker node: `Worker::new(url, name).processes(n).run()` in the
/// user's binary (which registers the tasks with `#[brood::task]`), on any
/// machine that reaches the Redis.
///
/// ```no_run
/// #[brood::task]
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// fn main() -> Result<(), brood_redis::Error> {
///     brood_redis::Worker::new("redis://127.0.0.1:6379/", "demo")
///         .processes(4)
///         .run()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Worker {
    url: String,
    name: String,
    processes: usize,
    lease: Duration,
    max_deliveries: u32,
    result_ttl: Duration,
    connect_timeout: Duration,
    window: Option<usize>,
    quiet: bool,
}

impl Worker {
    /// A worker for the pool `name` on the Redis at `url`, with one local
    /// process per CPU, a 5 s lease, 3 deliveries before a dead letter and
    /// results kept 1 h.
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo");
    /// # let _ = w;
    /// ```
    pub fn new(url: &str, name: &str) -> Worker {
        Worker {
            url: url.to_owned(),
            name: name.to_owned(),
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lease: Duration::from_secs(5),
            max_deliveries: 3,
            result_ttl: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(2),
            window: None,
            quiet: false,
        }
    }

    /// How many local worker processes run tasks (at least 1).
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").processes(2);
    /// # let _ = w;
    /// ```
    pub fn processes(mut self, n: usize) -> Worker {
        self.processes = n.max(1);
        self
    }

    /// How long a task may stay unheartbeated before another worker takes
    /// it over (default 5 s; at least 100 ms). This worker heartbeats its
    /// tasks every `lease / 3`.
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo")
    ///     .lease(std::time::Duration::from_secs(1));
    /// # let _ = w;
    /// ```
    pub fn lease(mut self, lease: Duration) -> Worker {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// After how many deliveries a task that keeps killing its worker goes
    /// to the dead-letter stream (default 3; at least 1).
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").max_deliveries(5);
    /// # let _ = w;
    /// ```
    pub fn max_deliveries(mut self, n: u32) -> Worker {
        self.max_deliveries = n.max(1);
        self
    }

    /// How long results wait in a caller's reply stream (default 1 h).
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo")
    ///     .result_ttl(std::time::Duration::from_secs(60));
    /// # let _ = w;
    /// ```
    pub fn result_ttl(mut self, ttl: Duration) -> Worker {
        self.result_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long connecting may take at start (default 2 s).
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo")
    ///     .connect_timeout(std::time::Duration::from_millis(500));
    /// # let _ = w;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Worker {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many tasks this node holds at once (read but not acknowledged;
    /// default 256 per process).
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").window(64);
    /// # let _ = w;
    /// ```
    pub fn window(mut self, n: usize) -> Worker {
        self.window = Some(n.max(1));
        self
    }

    /// Prints nothing about reconnections on stderr.
    ///
    /// ```
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").quiet(true);
    /// # let _ = w;
    /// ```
    pub fn quiet(mut self, quiet: bool) -> Worker {
        self.quiet = quiet;
        self
    }

    /// Runs the worker until the process ends (a signal). Errors at start:
    /// Redis unreachable or refusing the password (within the connect
    /// timeout), or the local pool not starting.
    ///
    /// ```no_run
    /// brood_redis::Worker::new("redis://127.0.0.1/", "demo").run()?;
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn run(self) -> Result<()> {
        self.spawn()?.join();
        Ok(())
    }

    /// Starts the worker on threads of this process and returns a handle
    /// to stop it.
    ///
    /// ```no_run
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").spawn()?;
    /// w.stop();
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn spawn(self) -> Result<WorkerHandle> {
        let client = Client::open(self.url.as_str()).map_err(|e| {
            Error::new(
                ErrorKind::Redis,
                format!("bad Redis URL {}: {e}", conn::redact(&self.url)),
            )
        })?;
        let keys = Keys::new(&self.name);
        let block = block_time(self.lease);
        let mut read_con = conn::connect(
            &client,
            &self.url,
            self.connect_timeout,
            Some(block + self.connect_timeout),
        )?;
        conn::ensure_group(&mut read_con, &keys)
            .map_err(|e| conn::connect_error(&self.url, self.connect_timeout, &e))?;
        let write_con = conn::connect(&client, &self.url, self.connect_timeout, None)?;
        let pool = brood::Pool::builder()
            .processes(self.processes)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Task, format!("cannot start the local pool: {e}"))
            })?;
        let (tx, rx) = channel();
        let consumer = format!(
            "{}-{}-{:x}",
            hostname(),
            std::process::id(),
            conn::random() & 0xffff
        );
        let node = Arc::new(Node {
            window: self.window.unwrap_or(256 * self.processes),
            known: brood::task::registered().collect(),
            cfg: self,
            client,
            keys,
            consumer,
            pool,
            held: Mutex::new(HashMap::new()),
            tasks: AtomicUsize::new(0),
            room: Condvar::new(),
            events: Mutex::new(tx),
            stop: AtomicBool::new(false),
            done: AtomicU64::new(0),
        });
        let n = node.clone();
        let writer = std::thread::Builder::new()
            .name("brood-redis-writer".into())
            .spawn(move || n.write_loop(write_con, rx))
            .map_err(|e| Error::new(ErrorKind::Closed, format!("cannot start a thread: {e}")))?;
        let n = node.clone();
        let reader = std::thread::Builder::new()
            .name("brood-redis-reader".into())
            .spawn(move || n.read_loop(read_con))
            .map_err(|e| Error::new(ErrorKind::Closed, format!("cannot start a thread: {e}")))?;
        Ok(WorkerHandle {
            node,
            reader: Some(reader),
            writer: Some(writer),
        })
    }
}

/// A worker started with [`Worker::spawn`].
///
/// ```no_run
/// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").spawn()?;
/// println!("consumer {}", w.consumer());
/// w.stop();
/// # Ok::<(), brood_redis::Error>(())
/// ```
pub struct WorkerHandle {
    node: Arc<Node>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("consumer", &self.node.consumer)
            .finish()
    }
}

impl WorkerHandle {
    /// This worker's consumer name in the group (`host-pid-xxxx`).
    ///
    /// ```no_run
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").spawn()?;
    /// assert!(w.consumer().contains(&std::process::id().to_string()));
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn consumer(&self) -> &str {
        &self.node.consumer
    }

    /// Tasks finished (results stored and acknowledged) so far.
    ///
    /// ```no_run
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").spawn()?;
    /// assert_eq!(w.done(), 0);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn done(&self) -> u64 {
        self.node.done.load(Ordering::Relaxed)
    }

    /// Stops taking tasks, finishes and acknowledges the ones it holds (for
    /// up to a lease; what is left is taken over by other workers after
    /// the lease), leaves the worker list and returns.
    ///
    /// ```no_run
    /// let w = brood_redis::Worker::new("redis://127.0.0.1/", "demo").spawn()?;
    /// w.stop();
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn stop(mut self) {
        self.node.stop.store(true, Ordering::SeqCst);
        self.join_threads();
    }

    /// Waits until the worker ends (it ends only through [`stop`] from
    /// another handle-less path: in practice, when the process is killed).
    ///
    /// [`stop`]: WorkerHandle::stop
    fn join(mut self) {
        self.join_threads();
    }

    fn join_threads(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.node.stop.store(true, Ordering::SeqCst);
        self.join_threads();
    }
}

/// The host name, for consumer and caller names.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}

fn block_time(lease: Duration) -> Duration {
    (lease / 2).min(Duration::from_secs(1))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs in a local pool worker process: calls the registered task.
fn run_task((name, args): (String, ByteBuf)) -> (u8, ByteBuf) {
    match brood::task::call(&name, &args) {
        Ok(v) => (wire::VALUE, ByteBuf::from(v)),
        Err(e) => (wire::FAILED, ByteBuf::from(e.to_string().into_bytes())),
    }
}

/// A stream entry this node holds (read, not yet acknowledged): one task,
/// or a chunk of tasks of the same function (`n` > 1, consecutive seqs).
struct Held {
    seq: u64,
    reply: String,
    name: String,
    deliveries: u32,
    parts: Vec<Part>,
    /// Parts without an outcome yet.
    open: usize,
}

/// One task of a held entry.
struct Part {
    args: Vec<u8>,
    /// `(kind, payload)` once known.
    outcome: Option<(u8, Vec<u8>)>,
}

enum Event {
    /// A task ran: a value or its error.
    Done {
        id: String,
        index: usize,
        kind: u8,
        payload: Vec<u8>,
    },
    /// Its pool worker died: a failed delivery.
    Lost {
        id: String,
        index: usize,
        why: String,
    },
    /// The whole entry goes to dead letters.
    Dead { id: String, why: String },
}

struct Node {
    cfg: Worker,
    client: Client,
    keys: Keys,
    consumer: String,
    window: usize,
    known: HashSet<&'static str>,
    pool: brood::Pool,
    held: Mutex<HashMap<String, Held>>,
    /// Tasks in `held` (parts of all entries).
    tasks: AtomicUsize,
    room: Condvar,
    events: Mutex<Sender<Event>>,
    stop: AtomicBool,
    done: AtomicU64,
}

impl Node {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn say(&self, what: &str) {
        if !self.cfg.quiet {
            eprintln!("brood-redis worker {}: {what}", self.consumer);
        }
    }

    fn send(&self, ev: Event) {
        let _ = lock(&self.events).send(ev);
    }

    /// Reconnects (forever, with backoff) until it works or the node stops.
    fn reconnect(&self, read_timeout: Option<Duration>) -> Option<Connection> {
        let c = conn::reconnect(
            &self.client,
            &self.cfg.url,
            self.cfg.connect_timeout,
            read_timeout,
            None,
            &|| self.stopping(),
        )
        .ok()?;
        Some(c)
    }

    // ---- reader ----------------------------------------------------------

    fn read_loop(&self, con: Connection) {
        let block = block_time(self.cfg.lease);
        let read_timeout = Some(block + self.cfg.connect_timeout);
        let mut con = Some(con);
        let mut cursor = "0-0".to_owned();
        let mut next_claim = Instant::now();
        let mut broken_since: Option<Instant> = None;
        while !self.stopping() {
            let free = {
                let held = lock(&self.held);
                let tasks = self.tasks.load(Ordering::SeqCst);
                if tasks >= self.window {
                    let _ = self.room.wait_timeout(held, Duration::from_millis(100));
                    continue;
                }
                self.window - tasks
            };
            let Some(c) = con.as_mut() else {
                con = self.reconnect(read_timeout);
                if let Some(c) = con.as_mut() {
                    let _ = conn::ensure_group(c, &self.keys);
                    if let Some(t) = broken_since.take() {
                        self.say(&format!(
                            "reconnected to {} after {:.1} s",
                            conn::redact(&self.cfg.url),
                            t.elapsed().as_secs_f64()
                        ));
                    }
                }
                continue;
            };
            let r = self.read_once(c, free, block, &mut cursor, &mut next_claim);
            if let Err(e) = r {
                if conn::nogroup(&e) {
                    let _ = conn::ensure_group(c, &self.keys);
                } else if conn::retryable(&e) {
                    self.say(&format!(
                        "lost Redis at {} ({e}); reconnecting",
                        conn::redact(&self.cfg.url)
                    ));
                    broken_since = Some(Instant::now());
                    con = None;
                } else {
                    self.say(&format!("Redis error: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn read_once(
        &self,
        c: &mut Connection,
        free: usize,
        block: Duration,
        cursor: &mut String,
        next_claim: &mut Instant,
    ) -> redis::RedisResult<()> {
        if Instant::now() >= *next_claim {
            *next_claim = Instant::now() + self.cfg.lease / 2;
            let v: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.keys.tasks)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.cfg.lease.as_millis() as u64)
                .arg(cursor.as_str())
                .arg("COUNT")
                .arg(free)
                .query(c)?;
            if let redis::Value::Array(parts) = &v
                && parts.len() >= 2
            {
                *cursor = conn::as_string(&parts[0]);
                let entries = conn::parse_entries(&parts[1]);
                if !entries.is_empty() {
                    let mut pipe = redis::pipe();
                    for (id, _) in &entries {
                        pipe.cmd("XPENDING")
                            .arg(&self.keys.tasks)
                            .arg(GROUP)
                            .arg(id)
                            .arg(id)
                            .arg(1);
                    }
                    let counts: Vec<redis::Value> = pipe.query(c)?;
                    let counts: Vec<u32> = counts.iter().map(pending_count).collect();
                    self.say(&format!(
                        "took over {} task(s) of a silent worker",
                        entries.len()
                    ));
                    for (entry, n) in entries.into_iter().zip(counts) {
                        self.accept(entry, n.max(2));
                    }
                }
            }
        }
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(free)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.tasks)
            .arg(">")
            .query(c)?;
        if let redis::Value::Array(streams) = &v {
            for s in streams {
                if let redis::Value::Array(kv) = s
                    && kv.len() == 2
                {
                    for entry in conn::parse_entries(&kv[1]) {
                        self.accept(entry, 1);
                    }
                }
            }
        } else if let redis::Value::Map(streams) = &v {
            for (_, entries) in streams {
                for entry in conn::parse_entries(entries) {
                    self.accept(entry, 1);
                }
            }
        }
        Ok(())
    }

    /// Holds an entry (replacing an older copy of it, if any).
    fn hold(&self, id: &str, held: Held) {
        let n = held.parts.len();
        if let Some(old) = lock(&self.held).insert(id.to_owned(), held) {
            self.tasks.fetch_sub(old.parts.len(), Ordering::SeqCst);
        }
        self.tasks.fetch_add(n, Ordering::SeqCst);
    }

    /// Takes one entry: runs its tasks, or sends it to dead letters.
    fn accept(&self, (id, fields): Entry, deliveries: u32) {
        let name = conn::field(&fields, "f").map(|b| String::from_utf8_lossy(b).into_owned());
        let seq = conn::field(&fields, "s")
            .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok());
        let reply = conn::field(&fields, "r").map(|b| String::from_utf8_lossy(b).into_owned());
        let n = conn::field(&fields, "n")
            .and_then(|b| std::str::from_utf8(b).ok()?.parse::<usize>().ok())
            .unwrap_or(1);
        let args: Option<Vec<Vec<u8>>> = conn::field(&fields, "a").and_then(|a| {
            if n == 1 {
                Some(vec![a.to_vec()])
            } else {
                brood::codec::decode::<Vec<ByteBuf>>(a)
                    .ok()
                    .filter(|v| v.len() == n)
                    .map(|v| v.into_iter().map(ByteBuf::into_vec).collect())
            }
        });
        let (Some(name), Some(seq), Some(reply), Some(args)) = (name, seq, reply, args) else {
            self.hold(
                &id,
                Held {
                    seq: 0,
                    reply: String::new(),
                    name: String::new(),
                    deliveries,
                    parts: Vec::new(),
                    open: 0,
                },
            );
            self.send(Event::Dead {
                id,
                why: "malformed task entry (fields f, a, r, s expected)".into(),
            });
            return;
        };
        let known = self.known.contains(name.as_str());
        let work: Vec<Vec<u8>> = if known && deliveries <= self.cfg.max_deliveries {
            args.clone()
        } else {
            Vec::new()
        };
        self.hold(
            &id,
            Held {
                seq,
                reply,
                name: name.clone(),
                deliveries,
                open: args.len(),
                parts: args
                    .into_iter()
                    .map(|args| Part {
                        args,
                        outcome: None,
                    })
                    .collect(),
            },
        );
        if !known {
            self.send(Event::Dead {
                id,
                why: format!(
                    "no task named {name:?} is registered in the worker binary {} on {} \
                     (register it with #[brood::task] in the binary that runs the Worker)",
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    hostname()
                ),
            });
        } else if deliveries > self.cfg.max_deliveries {
            // This delivery is one too many: the ones before it ran and
            // their workers died or went silent.
            let ran = deliveries - 1;
            if let Some(h) = lock(&self.held).get_mut(&id) {
                h.deliveries = ran;
            }
            self.send(Event::Dead {
                id,
                why: format!(
                    "task {name:?} was delivered {ran} times (max_deliveries {}) and its \
                     workers died or went silent every time",
                    self.cfg.max_deliveries
                ),
            });
        } else {
            for (index, args) in work.into_iter().enumerate() {
                self.submit(id.clone(), index, name.clone(), args);
            }
        }
    }

    /// Hands one task of a held entry to the local pool.
    fn submit(&self, id: String, index: usize, name: String, args: Vec<u8>) {
        let tx_ok = lock(&self.events).clone();
        let tx_err = tx_ok.clone();
        let id_ok = id.clone();
        let id_err = id.clone();
        let callbacks = brood::pool::Callbacks::new()
            .on_success(move |(kind, payload): &(u8, ByteBuf)| {
                let _ = tx_ok.send(Event::Done {
                    id: id_ok,
                    index,
                    kind: *kind,
                    payload: payload.to_vec(),
                });
            })
            .on_error(move |e: &brood::Error| {
                let _ = tx_err.send(outcome_of_error(id_err, index, e));
            });
        if let Err(e) = self
            .pool
            .apply_async_with(run_task, (name, ByteBuf::from(args)), callbacks)
        {
            self.send(Event::Lost {
                id,
                index,
                why: format!("the local pool refused it: {e}"),
            });
        }
    }

    // ---- writer ----------------------------------------------------------

    fn write_loop(&self, con: Connection, rx: Receiver<Event>) {
        let mut con = Some(con);
        let heartbeat_every = self.cfg.lease / 3;
        let mut next_beat = Instant::now();
        let mut retries: Vec<Retry> = Vec::new();
        let mut last_done = 0u64;
        let mut last_beat = Instant::now();
        let mut beats = 0u64;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut wake = next_beat;
            if let Some(t) = retries.iter().map(|r| r.0).min() {
                wake = wake.min(t);
            }
            let mut batch = Vec::new();
            match rx.recv_timeout(
                wake.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ) {
                Ok(ev) => {
                    batch.push(ev);
                    while batch.len() < FLUSH_MAX {
                        match rx.try_recv() {
                            Ok(ev) => batch.push(ev),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if !batch.is_empty() {
                self.flush(&mut con, batch, &mut retries);
            }
            // Retries that are due go back to the local pool.
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = retries.drain(..).partition(|r| r.0 <= now);
            retries = later;
            for (_, id, index) in due {
                let task = lock(&self.held).get(&id).and_then(|h| {
                    let p = h.parts.get(index)?;
                    p.outcome
                        .is_none()
                        .then(|| (h.name.clone(), p.args.clone()))
                });
                if let Some((name, args)) = task {
                    self.submit(id, index, name, args);
                }
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + heartbeat_every;
                let done = self.done.load(Ordering::Relaxed);
                let rate = (done - last_done) as f64 / last_beat.elapsed().as_secs_f64().max(1e-3);
                last_done = done;
                last_beat = Instant::now();
                beats += 1;
                if let Some(c) = con.as_mut() {
                    if let Err(e) = self.heartbeat(c, done, rate, beats % 16 == 1)
                        && conn::retryable(&e)
                    {
                        con = None;
                    }
                } else {
                    con = self.reconnect(None);
                }
            }
            if self.stopping() {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + self.cfg.lease);
                if lock(&self.held).is_empty() || Instant::now() >= deadline {
                    if let Some(c) = con.as_mut() {
                        let _: redis::RedisResult<()> = redis::cmd("HDEL")
                            .arg(&self.keys.workers)
                            .arg(&self.consumer)
                            .query(c);
                    }
                    return;
                }
            }
        }
    }

    /// Records outcomes; stores the entries that are complete (results,
    /// dead letters), then acknowledges them. Retries on a broken
    /// connection until it works (or the node stops).
    fn flush(&self, con: &mut Option<Connection>, batch: Vec<Event>, retries: &mut Vec<Retry>) {
        let mut complete: Vec<String> = Vec::new();
        // Lost tasks first: one that reached max_deliveries gets its dead
        // outcome here, and is stored with the rest.
        let mut outcomes: Vec<(String, usize, u8, Vec<u8>)> = Vec::new();
        let mut dead_entries: Vec<(String, String)> = Vec::new();
        for ev in batch {
            match ev {
                Event::Done {
                    id,
                    index,
                    kind,
                    payload,
                } => outcomes.push((id, index, kind, payload)),
                Event::Dead { id, why } => dead_entries.push((id, why)),
                Event::Lost { id, index, why } => {
                    if let Some(why) = self.lost(con, &id, index, why, retries) {
                        outcomes.push((id, index, wire::DEAD, why.into_bytes()));
                    }
                }
            }
        }
        {
            let mut held = lock(&self.held);
            for (id, index, kind, payload) in outcomes {
                if let Some(h) = held.get_mut(&id)
                    && let Some(p) = h.parts.get_mut(index)
                    && p.outcome.is_none()
                {
                    p.outcome = Some((kind, payload));
                    h.open -= 1;
                    if h.open == 0 {
                        complete.push(id);
                    }
                }
            }
            for (id, why) in dead_entries {
                if let Some(h) = held.get_mut(&id) {
                    for p in &mut h.parts {
                        if p.outcome.is_none() {
                            p.outcome = Some((wire::DEAD, why.clone().into_bytes()));
                        }
                    }
                    h.open = 0;
                    complete.push(id);
                }
            }
        }
        complete.sort();
        complete.dedup();
        if complete.is_empty() {
            return;
        }
        let mut attempt = 0;
        loop {
            let Some(c) = con.as_mut() else {
                *con = self.reconnect(None);
                if con.is_none() {
                    return;
                }
                continue;
            };
            match self.store(c, &complete) {
                Ok(()) => break,
                Err(e) if conn::retryable(&e) || conn::nogroup(&e) => {
                    if conn::nogroup(&e) {
                        let _ = conn::ensure_group(c, &self.keys);
                    } else {
                        *con = None;
                    }
                    std::thread::sleep(conn::backoff(attempt, Duration::from_secs(1)));
                    attempt += 1;
                }
                Err(e) => {
                    self.say(&format!("cannot store results: {e}"));
                    std::thread::sleep(conn::backoff(attempt, Duration::from_secs(1)));
                    attempt += 1;
                    if attempt > 20 {
                        return;
                    }
                }
            }
        }
        let mut n = 0;
        {
            let mut held = lock(&self.held);
            for id in &complete {
                if let Some(h) = held.remove(id) {
                    n += h.parts.len();
                }
            }
        }
        self.tasks.fetch_sub(n, Ordering::SeqCst);
        self.room.notify_all();
        self.done.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One pipeline: results per caller, dead letters, then XACK + XDEL
    /// of the complete entries.
    fn store(&self, c: &mut Connection, complete: &[String]) -> redis::RedisResult<()> {
        let held = lock(&self.held);
        let mut per_reply: HashMap<&str, Vec<Rec>> = HashMap::new();
        let mut ids: Vec<&str> = Vec::new();
        let mut pipe = redis::pipe();
        for id in complete {
            let Some(h) = held.get(id) else { continue };
            ids.push(id);
            for (i, p) in h.parts.iter().enumerate() {
                let Some((kind, payload)) = &p.outcome else {
                    continue;
                };
                let seq = h.seq + i as u64;
                if *kind == wire::DEAD {
                    pipe.cmd("XADD")
                        .arg(&self.keys.dead)
                        .arg("*")
                        .arg("f")
                        .arg(&h.name)
                        .arg("a")
                        .arg(&p.args)
                        .arg("r")
                        .arg(&h.reply)
                        .arg("s")
                        .arg(seq)
                        .arg("why")
                        .arg(payload.as_slice())
                        .arg("deliveries")
                        .arg(h.deliveries)
                        .arg("worker")
                        .arg(&self.consumer)
                        .arg("id")
                        .arg(id)
                        .ignore();
                }
                if !h.reply.is_empty() {
                    per_reply.entry(&h.reply).or_default().push(Rec {
                        seq,
                        deliveries: h.deliveries,
                        kind: *kind,
                        payload: payload.clone(),
                    });
                }
            }
            if h.parts.is_empty() {
                // A malformed entry: a dead letter of its own.
                pipe.cmd("XADD")
                    .arg(&self.keys.dead)
                    .arg("*")
                    .arg("why")
                    .arg("malformed task entry (fields f, a, r, s expected)")
                    .arg("id")
                    .arg(id)
                    .ignore();
            }
        }
        for (reply, recs) in &per_reply {
            let blob = brood::codec::encode(recs).unwrap_or_default();
            pipe.cmd("XADD")
                .arg(*reply)
                .arg("*")
                .arg("b")
                .arg(blob)
                .ignore();
            pipe.cmd("EXPIRE")
                .arg(*reply)
                .arg(self.cfg.result_ttl.as_secs())
                .ignore();
        }
        drop(held);
        if !ids.is_empty() {
            pipe.cmd("XACK")
                .arg(&self.keys.tasks)
                .arg(GROUP)
                .arg(&ids)
                .ignore();
            pipe.cmd("XDEL").arg(&self.keys.tasks).arg(&ids).ignore();
        }
        pipe.query(c)
    }

    /// A pool worker died under a task: count a delivery (XCLAIM), then
    /// retry after a backoff; at max_deliveries, returns the dead-letter
    /// reason instead.
    fn lost(
        &self,
        con: &mut Option<Connection>,
        id: &str,
        index: usize,
        why: String,
        retries: &mut Vec<Retry>,
    ) -> Option<String> {
        let Some(c) = con.as_mut() else {
            // No Redis now: try again after a lease.
            retries.push((Instant::now() + self.cfg.lease, id.to_owned(), index));
            return None;
        };
        // Deliveries so far; below the limit, XCLAIM counts one more.
        let count = redis::cmd("XPENDING")
            .arg(&self.keys.tasks)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query::<redis::Value>(c)
            .map(|v| pending_count(&v));
        let count = match count {
            Ok(n) => n,
            Err(e) => {
                if conn::retryable(&e) {
                    *con = None;
                }
                retries.push((Instant::now() + self.cfg.lease, id.to_owned(), index));
                return None;
            }
        };
        if count == 0 {
            // Not pending any more (deleted, or Redis lost it): the caller
            // resends what a restarted Redis lost.
            if let Some(h) = lock(&self.held).remove(id) {
                self.tasks.fetch_sub(h.parts.len(), Ordering::SeqCst);
            }
            self.room.notify_all();
            return None;
        }
        let name = {
            let mut held = lock(&self.held);
            let h = held.get_mut(id)?;
            h.deliveries = h.deliveries.max(count);
            h.name.clone()
        };
        if count >= self.cfg.max_deliveries {
            return Some(format!(
                "task {name:?} was delivered {count} times (max_deliveries {}) and its \
                 worker died every time; the last run ended with: {why}",
                self.cfg.max_deliveries
            ));
        }
        let claimed: redis::RedisResult<()> = redis::cmd("XCLAIM")
            .arg(&self.keys.tasks)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(id)
            .query(c);
        if let Err(e) = claimed
            && conn::retryable(&e)
        {
            *con = None;
        }
        if let Some(h) = lock(&self.held).get_mut(id) {
            h.deliveries = h.deliveries.max(count + 1);
        }
        let wait = conn::backoff(count.saturating_sub(1), Duration::from_secs(2));
        retries.push((Instant::now() + wait, id.to_owned(), index));
        None
    }

    /// Resets the idle time of every held task (XCLAIM JUSTID, which does
    /// not count a delivery) and writes this worker's heartbeat; now and
    /// then removes workers silent for long with nothing pending.
    fn heartbeat(
        &self,
        c: &mut Connection,
        done: u64,
        rate: f64,
        sweep: bool,
    ) -> redis::RedisResult<()> {
        let ids: Vec<String> = lock(&self.held).keys().cloned().collect();
        let mut pipe = redis::pipe();
        for chunk in ids.chunks(1000) {
            pipe.cmd("XCLAIM")
                .arg(&self.keys.tasks)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .ignore();
        }
        let info = format!(
            "{} {} {:.0} {} {} {}",
            conn::now_ms(),
            done,
            rate,
            self.cfg.processes,
            std::process::id(),
            hostname()
        );
        pipe.cmd("HSET")
            .arg(&self.keys.workers)
            .arg(&self.consumer)
            .arg(info)
            .ignore();
        pipe.query::<()>(c)?;
        if sweep {
            self.sweep(c)?;
        }
        Ok(())
    }

    /// Forgets workers silent for 10 leases (at least 30 s) that hold no
    /// task any more (their tasks were taken over).
    fn sweep(&self, c: &mut Connection) -> redis::RedisResult<()> {
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&self.keys.workers).query(c)?;
        let silent_after = (self.cfg.lease * 10)
            .max(Duration::from_secs(30))
            .as_millis() as u64;
        let now = conn::now_ms();
        let pending = pending_per_consumer(c, &self.keys)?;
        for (consumer, info) in all {
            let hb: u64 = info
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if consumer != self.consumer
                && now.saturating_sub(hb) > silent_after
                && pending.get(&consumer).copied().unwrap_or(0) == 0
            {
                let _: i64 = redis::cmd("HDEL")
                    .arg(&self.keys.workers)
                    .arg(&consumer)
                    .query(c)?;
                let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.keys.tasks)
                    .arg(GROUP)
                    .arg(&consumer)
                    .query(c);
            }
        }
        Ok(())
    }
}

/// What a local pool error means for a task: a dead pool worker (or a pool
/// that cannot run it) is a failed delivery; anything else is the task's
/// own error, its result.
fn outcome_of_error(id: String, index: usize, e: &brood::Error) -> Event {
    use brood::ErrorKind as K;
    match e.kind() {
        K::WorkerLost | K::Signaled | K::Exited | K::PoolClosed | K::Interrupted => Event::Lost {
            id,
            index,
            why: e.to_string(),
        },
        _ => Event::Done {
            id,
            index,
            kind: wire::FAILED,
            payload: e.to_string().into_bytes(),
        },
    }
}

/// The delivery count in an `XPENDING key group id id 1` reply.
fn pending_count(v: &redis::Value) -> u32 {
    if let redis::Value::Array(rows) = v
        && let Some(redis::Value::Array(row)) = rows.first()
        && row.len() >= 4
    {
        return conn::as_int(&row[3]).max(0) as u32;
    }
    0
}

/// Pending tasks per consumer (`XPENDING key group` summary).
pub(crate) fn pending_per_consumer(
    c: &mut Connection,
    keys: &Keys,
) -> redis::RedisResult<HashMap<String, u64>> {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(&keys.tasks)
        .arg(GROUP)
        .query(c)?;
    let mut out = HashMap::new();
    if let redis::Value::Array(parts) = &v
        && let Some(redis::Value::Array(consumers)) = parts.get(3)
    {
        for row in consumers {
            if let redis::Value::Array(pair) = row
                && pair.len() == 2
            {
                out.insert(conn::as_string(&pair[0]), conn::as_int(&pair[1]) as u64);
            }
        }
    }
    Ok(out)
}
