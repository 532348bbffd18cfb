//! The caller's side: `RedisPool` and its handles.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conn::{self, GROUP, Keys};
use crate::error::{Error, ErrorKind, Result};
use crate::wire::{self, Rec};

/// How many XADDs go in one pipeline (one round trip).
const PIPELINE: usize = 1000;
/// How long the reader's XREAD blocks (also how soon it notices `close`).
const READ_BLOCK_MS: u64 = 200;

/// Settings of a [`RedisPool`] before it connects.
///
/// ```no_run
/// use std::time::Duration;
/// let pool = brood_redis::RedisPool::builder("redis://127.0.0.1:6379/", "demo")
///     .connect_timeout(Duration::from_secs(1))
///     .reconnect_for(Duration::from_secs(60))
///     .connect()?;
/// # Ok::<(), brood_redis::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedisPoolBuilder {
    url: String,
    name: String,
    connect_timeout: Duration,
    reconnect_for: Duration,
}

impl RedisPoolBuilder {
    /// How long connecting may take before it is an error (default 2 s).
    ///
    /// ```
    /// let b = brood_redis::RedisPool::builder("redis://127.0.0.1/", "x")
    ///     .connect_timeout(std::time::Duration::from_millis(500));
    /// # let _ = b;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisPoolBuilder {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long the pool keeps trying to reconnect after Redis went away
    /// before pending results fail with [`ErrorKind::Unreachable`]
    /// (default 30 s).
    ///
    /// ```
    /// let b = brood_redis::RedisPool::builder("redis://127.0.0.1/", "x")
    ///     .reconnect_for(std::time::Duration::from_secs(5));
    /// # let _ = b;
    /// ```
    pub fn reconnect_for(mut self, window: Duration) -> RedisPoolBuilder {
        self.reconnect_for = window;
        self
    }

    /// Connects: an [`ErrorKind::Unreachable`] error naming the URL and
    /// what the OS said if Redis does not answer within the connect
    /// timeout, [`ErrorKind::Auth`] if it refuses the password.
    ///
    /// ```no_run
    /// let pool = brood_redis::RedisPool::builder("redis://127.0.0.1/", "x").connect()?;
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn connect(self) -> Result<RedisPool> {
        let client = Client::open(self.url.as_str()).map_err(|e| {
            Error::new(
                ErrorKind::Redis,
                format!("bad Redis URL {}: {e}", conn::redact(&self.url)),
            )
        })?;
        let mut submit = conn::connect(&client, &self.url, self.connect_timeout, None)?;
        conn::ensure_group(&mut submit, &Keys::new(&self.name))
            .map_err(|e| conn::connect_error(&self.url, self.connect_timeout, &e))?;
        let run_id = conn::run_id(&mut submit);
        let reader_con = conn::connect(
            &client,
            &self.url,
            self.connect_timeout,
            Some(Duration::from_millis(READ_BLOCK_MS) + self.connect_timeout),
        )?;
        let keys = Keys::new(&self.name);
        let caller = format!(
            "{}-{}-{:x}",
            crate::worker::hostname(),
            std::process::id(),
            conn::random() & 0xffff_ffff
        );
        let inner = Arc::new(Inner {
            reply: keys.reply(&caller),
            keys,
            caller,
            url: self.url,
            client,
            connect_timeout: self.connect_timeout,
            reconnect_for: self.reconnect_for,
            submit: Mutex::new(Some(submit)),
            slots: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            run_id: Mutex::new(run_id),
            stray: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let reader = std::thread::Builder::new()
            .name("brood-redis-results".into())
            .spawn(move || reader_loop(weak, reader_con))
            .map_err(|e| Error::new(ErrorKind::Closed, format!("cannot start a thread: {e}")))?;
        Ok(RedisPool {
            inner,
            reader: Some(reader),
        })
    }
}

/// Brood's pool verbs for `#[brood::task]` functions, run by
/// [`Worker`](crate::Worker)s on any machine that reaches the same Redis.
///
/// Tasks are named as `#[brood::task]` registers them
/// (`module::path::function`); the worker binary must register the same
/// tasks. Arguments cross as the task's parameters in a tuple (as
/// [`brood::Pool::apply_task`]); values come back typed.
///
/// ```no_run
/// #[brood::task]
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1:6379/", "demo")?;
/// let name = concat!(module_path!(), "::add");
/// assert_eq!(pool.apply::<u64, _>(name, (2u64, 3u64))?, 5);
/// let sums: Vec<u64> = pool.starmap(name, (0..10u64).map(|i| (i, i)))?;
/// assert_eq!(sums[9], 18);
/// # Ok::<(), brood_redis::Error>(())
/// ```
pub struct RedisPool {
    inner: Arc<Inner>,
    reader: Option<JoinHandle<()>>,
}

struct Inner {
    url: String,
    client: Client,
    keys: Keys,
    caller: String,
    reply: String,
    connect_timeout: Duration,
    reconnect_for: Duration,
    /// The connection tasks are sent on (`None` while broken).
    submit: Mutex<Option<Connection>>,
    /// Every task without a result, and finished ones whose handle lives.
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_seq: AtomicU64,
    closed: AtomicBool,
    /// The Redis server's `run_id` when last connected.
    run_id: Mutex<String>,
    /// Results that came for tasks nobody waits on any more.
    stray: AtomicU64,
}

/// One task at the caller.
struct Slot {
    seq: u64,
    name: Arc<str>,
    args: Vec<u8>,
    state: Mutex<State>,
    cv: Condvar,
    /// Where `imap_unordered` hears of a finished task.
    notify: Option<Sender<u64>>,
}

#[derive(Default)]
struct State {
    outcome: Option<Result<Vec<u8>>>,
    taken: bool,
    /// Results received (the first one counts; later ones are reruns).
    runs: u32,
    /// The highest delivery count any result reported.
    deliveries: u32,
    /// The stream entry id of the latest submission.
    entry: Option<String>,
    /// The entry carries other tasks too (a chunk): not cancellable alone.
    chunked: bool,
    waker: Option<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    /// Records an outcome; `run` says it is a worker's result (a run),
    /// not a local ending (closed, unreachable, cancelled).
    fn finish(&self, outcome: Result<Vec<u8>>, deliveries: u32, run: bool) {
        let mut st = lock(&self.state);
        if run {
            st.runs += 1;
        }
        st.deliveries = st.deliveries.max(deliveries);
        if st.outcome.is_some() || st.taken {
            return;
        }
        st.outcome = Some(outcome);
        let waker = st.waker.take();
        drop(st);
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(tx) = &self.notify {
            let _ = tx.send(self.seq);
        }
    }

    fn done(&self) -> bool {
        let st = lock(&self.state);
        st.outcome.is_some() || st.taken
    }
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("url", &conn::redact(&self.inner.url))
            .field("tasks", &self.inner.keys.tasks)
            .field("caller", &self.inner.caller)
            .finish()
    }
}

impl RedisPool {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port/[db]`)
    /// for the pool called `name`, with the default settings (see
    /// [`builder`](RedisPool::builder)).
    ///
    /// ```
    /// // Nothing listens on port 1: a clear error, quickly.
    /// let err = brood_redis::RedisPool::connect("redis://127.0.0.1:1/", "x").unwrap_err();
    /// assert_eq!(err.kind(), brood_redis::ErrorKind::Unreachable);
    /// assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    /// ```
    pub fn connect(url: &str, name: &str) -> Result<RedisPool> {
        RedisPool::builder(url, name).connect()
    }

    /// Settings before connecting.
    ///
    /// ```
    /// let b = brood_redis::RedisPool::builder("redis://127.0.0.1/", "x");
    /// # let _ = b;
    /// ```
    pub fn builder(url: &str, name: &str) -> RedisPoolBuilder {
        RedisPoolBuilder {
            url: url.to_owned(),
            name: name.to_owned(),
            connect_timeout: Duration::from_secs(2),
            reconnect_for: Duration::from_secs(30),
        }
    }

    /// This caller's id: task ids are `CALLER:SEQ`.
    ///
    /// ```no_run
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// println!("{}", pool.caller());
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn caller(&self) -> &str {
        &self.inner.caller
    }

    /// Results that arrived for tasks whose handle was already finished and
    /// dropped (a rerun's second result), counted and dropped.
    ///
    /// ```no_run
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// assert_eq!(pool.stray_results(), 0);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn stray_results(&self) -> u64 {
        self.inner.stray.load(Ordering::Relaxed)
    }

    /// Sends one call of the task `name` with `args` (its parameters as a
    /// tuple) and returns at once (Python's `apply_async`).
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn double(x: u32) -> u32 { 2 * x }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.apply_async::<u32, _>(concat!(module_path!(), "::double"), (21u32,))?;
    /// assert_eq!(r.get()?, 42);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn apply_async<R, A>(&self, name: &str, args: A) -> Result<RedisFuture<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let args = brood::codec::encode(&args)?;
        let slot = self.send(name, vec![args], None, 1)?.pop();
        let slot = slot.ok_or_else(|| Error::new(ErrorKind::Closed, "no task was sent"))?;
        Ok(self.handle(slot))
    }

    /// [`apply_async`](RedisPool::apply_async) under the executor's name: a
    /// handle with `result`, `result_timeout`, `cancel`, `done`, usable as
    /// a [`Future`](std::future::Future).
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn hello(who: String) -> String { format!("hello {who}") }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let f = pool.submit::<String, _>(concat!(module_path!(), "::hello"), ("you".to_string(),))?;
    /// assert_eq!(f.result()?, "hello you");
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn submit<R, A>(&self, name: &str, args: A) -> Result<RedisFuture<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.apply_async(name, args)
    }

    /// Calls the task and waits for its value (Python's `apply`).
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn mul(a: i64, b: i64) -> i64 { a * b }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// assert_eq!(pool.apply::<i64, _>(concat!(module_path!(), "::mul"), (6i64, 7i64))?, 42);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn apply<R, A>(&self, name: &str, args: A) -> Result<R>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.apply_async(name, args)?.get()
    }

    /// Sends one call per item, each item being the task's whole argument
    /// tuple, in pipelines of 1,000; one handle per call, in order.
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let hs = pool.submit_all::<u64, _, _>(concat!(module_path!(), "::add"), [(1u64, 2u64), (3, 4)])?;
    /// assert_eq!(hs[1].get()?, 7);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn submit_all<R, A, I>(&self, name: &str, items: I) -> Result<Vec<RedisFuture<R>>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.chunksize(1).submit_all(name, items)
    }

    /// Calls the one-parameter task on every item and returns the values
    /// in order (Python's `map`: each item is the single argument). The
    /// first error in input order fails the whole map, as in Python.
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let v: Vec<u64> = pool.map(concat!(module_path!(), "::square"), 0..4u64)?;
    /// assert_eq!(v, [0, 1, 4, 9]);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn map<R, A, I>(&self, name: &str, items: I) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.chunksize(1).map(name, items)
    }

    /// Calls the task with each item's tuple as its arguments, values in
    /// order (Python's `starmap`).
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let v: Vec<u64> = pool.starmap(concat!(module_path!(), "::add"), [(1u64, 2u64), (3, 4)])?;
    /// assert_eq!(v, [3, 7]);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn starmap<R, A, I>(&self, name: &str, items: I) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.chunksize(1).starmap(name, items)
    }

    /// Calls the one-parameter task on every item and yields each value
    /// (or error, in its place) as soon as it is back, in completion order
    /// (Python's `imap_unordered`). Every call is sent before the first
    /// value is yielded.
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let mut v: Vec<u64> = pool
    ///     .imap_unordered(concat!(module_path!(), "::square"), 0..4u64)?
    ///     .collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, [0, 1, 4, 9]);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn imap_unordered<R, A, I>(&self, name: &str, items: I) -> Result<ImapUnordered<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let args = encode_all(items, |a| (a,))?;
        let (tx, rx) = channel();
        let slots = self.send(name, args, Some(tx), 1)?;
        Ok(ImapUnordered {
            rx,
            remaining: slots.into_iter().map(|s| (s.seq, s)).collect(),
            pool: Arc::downgrade(&self.inner),
            _value: PhantomData,
        })
    }

    /// The batch verbs with `size` tasks per stream entry (Celery's
    /// `chunks`): far fewer Redis operations per task, so much higher
    /// rates; a worker still runs and retries each task on its own, but
    /// the entry is acknowledged (and redelivered) as a whole, and its
    /// tasks cannot be cancelled one by one. `size` 1 is the default.
    ///
    /// ```no_run
    /// #[brood::task]
    /// fn inc(x: u64) -> u64 { x + 1 }
    ///
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let v: Vec<u64> = pool.chunksize(100).map(concat!(module_path!(), "::inc"), 0..1000u64)?;
    /// assert_eq!(v[999], 1000);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn chunksize(&self, size: usize) -> Chunked<'_> {
        Chunked {
            pool: self,
            size: size.max(1),
        }
    }

    /// Stops the result reader and deletes this caller's reply stream;
    /// handles still pending end with [`ErrorKind::Closed`]. Tasks already
    /// queued still run on the workers. Dropping the pool does the same.
    ///
    /// ```no_run
    /// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// pool.close();
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).drain().map(|(_, s)| s).collect();
        for s in slots.iter().filter(|s| !s.done()) {
            s.finish(
                Err(Error::new(ErrorKind::Closed, "the RedisPool was closed")),
                0,
                false,
            );
        }
        if let Some(con) = lock(&self.inner.submit).as_mut() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.inner.reply).query(con);
        }
    }

    fn handle<R>(&self, slot: Arc<Slot>) -> RedisFuture<R> {
        RedisFuture {
            slot,
            pool: Arc::downgrade(&self.inner),
            _value: PhantomData,
        }
    }

    /// Registers the slots and sends the tasks.
    fn send(
        &self,
        name: &str,
        args: Vec<Vec<u8>>,
        notify: Option<Sender<u64>>,
        chunksize: usize,
    ) -> Result<Vec<Arc<Slot>>> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Closed, "the RedisPool was closed"));
        }
        let name: Arc<str> = Arc::from(name);
        let first = self
            .inner
            .next_seq
            .fetch_add(args.len() as u64, Ordering::Relaxed);
        let slots: Vec<Arc<Slot>> = args
            .into_iter()
            .enumerate()
            .map(|(i, args)| {
                Arc::new(Slot {
                    seq: first + i as u64,
                    name: name.clone(),
                    args,
                    state: Mutex::new(State::default()),
                    cv: Condvar::new(),
                    notify: notify.clone(),
                })
            })
            .collect();
        {
            let mut map = lock(&self.inner.slots);
            for s in &slots {
                map.insert(s.seq, s.clone());
            }
        }
        if let Err(e) = self.inner.xadd(&slots, chunksize) {
            let mut map = lock(&self.inner.slots);
            for s in &slots {
                map.remove(&s.seq);
            }
            return Err(e);
        }
        Ok(slots)
    }
}

/// [`RedisPool`]'s batch verbs with a chunk size (from
/// [`RedisPool::chunksize`]).
///
/// ```no_run
/// # #[brood::task] fn add(a: u64, b: u64) -> u64 { a + b }
/// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
/// let v: Vec<u64> = pool.chunksize(2).starmap(concat!(module_path!(), "::add"), [(1u64, 2u64), (3, 4), (5, 6)])?;
/// assert_eq!(v, [3, 7, 11]);
/// # Ok::<(), brood_redis::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chunked<'a> {
    pool: &'a RedisPool,
    size: usize,
}

impl Chunked<'_> {
    /// [`RedisPool::submit_all`] with this chunk size.
    ///
    /// ```no_run
    /// # #[brood::task] fn add(a: u64, b: u64) -> u64 { a + b }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let hs = pool.chunksize(10).submit_all::<u64, _, _>(concat!(module_path!(), "::add"), [(1u64, 2u64)])?;
    /// assert_eq!(hs[0].get()?, 3);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn submit_all<R, A, I>(self, name: &str, items: I) -> Result<Vec<RedisFuture<R>>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let args = encode_all(items, |a| a)?;
        let slots = self.pool.send(name, args, None, self.size)?;
        Ok(slots.into_iter().map(|s| self.pool.handle(s)).collect())
    }

    /// [`RedisPool::map`] with this chunk size.
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let v: Vec<u64> = pool.chunksize(10).map(concat!(module_path!(), "::inc"), 0..3u64)?;
    /// assert_eq!(v, [1, 2, 3]);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn map<R, A, I>(self, name: &str, items: I) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let args = encode_all(items, |a| (a,))?;
        let slots = self.pool.send(name, args, None, self.size)?;
        slots
            .into_iter()
            .map(|s| self.pool.handle::<R>(s).get())
            .collect()
    }

    /// [`RedisPool::starmap`] with this chunk size.
    ///
    /// ```no_run
    /// # #[brood::task] fn add(a: u64, b: u64) -> u64 { a + b }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let v: Vec<u64> = pool.chunksize(10).starmap(concat!(module_path!(), "::add"), [(1u64, 1u64)])?;
    /// assert_eq!(v, [2]);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn starmap<R, A, I>(self, name: &str, items: I) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.submit_all(name, items)?
            .into_iter()
            .map(|h| h.get())
            .collect()
    }
}

impl Drop for RedisPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn encode_all<A: Serialize, T: Serialize, I: IntoIterator<Item = A>>(
    items: I,
    wrap: impl Fn(A) -> T,
) -> Result<Vec<Vec<u8>>> {
    items
        .into_iter()
        .map(|a| brood::codec::encode(&wrap(a)).map_err(Error::from))
        .collect()
}

impl Inner {
    fn unreachable(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::Unreachable,
            format!(
                "Redis at {} unreachable for {:.1} s: {why}",
                conn::redact(&self.url),
                self.reconnect_for.as_secs_f64()
            ),
        )
    }

    /// XADDs the slots' tasks, in pipelines; reconnects (for up to
    /// `reconnect_for`) and resends on a broken connection.
    fn xadd(&self, slots: &[Arc<Slot>], size: usize) -> Result<()> {
        let size = size.max(1);
        let mut guard = lock(&self.submit);
        let give_up = Instant::now() + self.reconnect_for;
        for chunk in slots.chunks(PIPELINE * size) {
            let mut attempt = 0;
            loop {
                if guard.is_none() {
                    match conn::reconnect(
                        &self.client,
                        &self.url,
                        self.connect_timeout,
                        None,
                        Some(give_up),
                        &|| self.closed.load(Ordering::SeqCst),
                    ) {
                        Ok(mut c) => {
                            let _ = conn::ensure_group(&mut c, &self.keys);
                            let id = conn::run_id(&mut c);
                            *guard = Some(c);
                            self.restarted(&mut guard, id);
                        }
                        Err(e) => return Err(self.unreachable(e.message())),
                    }
                }
                let Some(con) = guard.as_mut() else { continue };
                let mut pipe = redis::pipe();
                for entry in chunk.chunks(size) {
                    let first = &entry[0];
                    let cmd = pipe
                        .cmd("XADD")
                        .arg(&self.keys.tasks)
                        .arg("*")
                        .arg("f")
                        .arg(&*first.name)
                        .arg("r")
                        .arg(&self.reply)
                        .arg("s")
                        .arg(first.seq);
                    if entry.len() == 1 {
                        cmd.arg("a").arg(&first.args);
                    } else {
                        let all: Vec<&serde_bytes::Bytes> = entry
                            .iter()
                            .map(|s| serde_bytes::Bytes::new(&s.args))
                            .collect();
                        let packed = brood::codec::encode(&all)?;
                        cmd.arg("a").arg(packed).arg("n").arg(entry.len());
                    }
                }
                match pipe.query::<Vec<String>>(con) {
                    Ok(ids) => {
                        for (entry, id) in chunk.chunks(size).zip(ids) {
                            for s in entry {
                                let mut st = lock(&s.state);
                                st.entry = Some(id.clone());
                                st.chunked = entry.len() > 1;
                            }
                        }
                        break;
                    }
                    Err(e) if conn::retryable(&e) && Instant::now() < give_up => {
                        *guard = None;
                        std::thread::sleep(conn::backoff(attempt, Duration::from_secs(1)));
                        attempt += 1;
                    }
                    Err(e) if conn::retryable(&e) => return Err(self.unreachable(&e.to_string())),
                    Err(e) => {
                        return Err(Error::new(
                            ErrorKind::Redis,
                            format!("Redis at {}: {e}", conn::redact(&self.url)),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// After a reconnect: if Redis is a new instance (a restart may have
    /// lost its last writes), sends again every task without a result.
    fn restarted(&self, guard: &mut MutexGuard<'_, Option<Connection>>, id: String) {
        {
            let mut known = lock(&self.run_id);
            if *known == id {
                return;
            }
            *known = id;
        }
        let pending: Vec<Arc<Slot>> = lock(&self.slots)
            .values()
            .filter(|s| !s.done())
            .cloned()
            .collect();
        let Some(con) = guard.as_mut() else { return };
        for chunk in pending.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.cmd("XADD")
                    .arg(&self.keys.tasks)
                    .arg("*")
                    .arg("f")
                    .arg(&*s.name)
                    .arg("a")
                    .arg(&s.args)
                    .arg("r")
                    .arg(&self.reply)
                    .arg("s")
                    .arg(s.seq);
            }
            match pipe.query::<Vec<String>>(con) {
                Ok(ids) => {
                    for (s, id) in chunk.iter().zip(ids) {
                        let mut st = lock(&s.state);
                        st.entry = Some(id);
                        st.chunked = false;
                    }
                }
                Err(_) => {
                    // Broken again: the next reconnect (with a new run id
                    // or not) decides; forget the run id so it resends.
                    lock(&self.run_id).clear();
                    **guard = None;
                    return;
                }
            }
        }
    }

    /// Opens a new submit connection and, if `id` is a new Redis instance,
    /// resends every task without a result.
    fn fresh_submit(&self, id: String) {
        let mut guard = lock(&self.submit);
        *guard = None;
        if let Ok(mut s) = conn::connect(&self.client, &self.url, self.connect_timeout, None) {
            let _ = conn::ensure_group(&mut s, &self.keys);
            *guard = Some(s);
            self.restarted(&mut guard, id);
        } else {
            // Not now: the reader's loop tries again.
            lock(&self.run_id).clear();
        }
    }

    /// Applies results from one reply entry.
    fn deliver(&self, recs: Vec<Rec>) {
        let mut map = lock(&self.slots);
        for rec in recs {
            let Some(slot) = map.get(&rec.seq).cloned() else {
                self.stray.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let outcome = match rec.kind {
                wire::VALUE => Ok(rec.payload),
                wire::DEAD => Err(Error::new(
                    ErrorKind::DeadLetter,
                    String::from_utf8_lossy(&rec.payload).into_owned(),
                )),
                _ => Err(Error::new(
                    ErrorKind::Task,
                    String::from_utf8_lossy(&rec.payload).into_owned(),
                )),
            };
            slot.finish(outcome, rec.deliveries, true);
            // Nobody holds a handle: the result was the last use of it.
            if Arc::strong_count(&slot) <= 2 {
                map.remove(&rec.seq);
            }
        }
    }

    fn fail_pending(&self, e: &Error) {
        let pending: Vec<Arc<Slot>> = lock(&self.slots)
            .values()
            .filter(|s| !s.done())
            .cloned()
            .collect();
        for s in pending {
            s.finish(Err(e.clone()), 0, false);
        }
    }
}

/// The caller's reader thread: XREAD on the reply stream, fill handles,
/// delete what it read; reconnect with backoff when Redis goes away.
fn reader_loop(weak: Weak<Inner>, con: Connection) {
    let mut con = Some(con);
    let mut last = "0-0".to_owned();
    let mut down_since: Option<Instant> = None;
    let mut attempt = 0u32;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if con.is_none() {
            let since = *down_since.get_or_insert_with(Instant::now);
            match conn::connect(
                &inner.client,
                &inner.url,
                inner.connect_timeout,
                Some(Duration::from_millis(READ_BLOCK_MS) + inner.connect_timeout),
            ) {
                Ok(mut c) => {
                    let id = conn::run_id(&mut c);
                    con = Some(c);
                    down_since = None;
                    attempt = 0;
                    // The submit connection broke too: replace it, then
                    // resend what a restarted Redis may have lost.
                    inner.fresh_submit(id);
                }
                Err(e) => {
                    if since.elapsed() >= inner.reconnect_for {
                        inner.fail_pending(&inner.unreachable(e.message()));
                    }
                    drop(inner);
                    std::thread::sleep(conn::backoff(attempt, Duration::from_secs(1)));
                    attempt += 1;
                    continue;
                }
            }
        }
        // A resend that broke off is tried again.
        if lock(&inner.run_id).is_empty() {
            let id = con.as_mut().map(conn::run_id).unwrap_or_default();
            if !id.is_empty() {
                inner.fresh_submit(id);
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let reply: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&inner.reply)
            .arg(&last)
            .query(c);
        match reply {
            Ok(redis::Value::Array(streams)) => {
                let mut ids = Vec::new();
                for stream in &streams {
                    if let redis::Value::Array(kv) = stream
                        && kv.len() == 2
                    {
                        for (id, fields) in conn::parse_entries(&kv[1]) {
                            if let Some(b) = conn::field(&fields, "b")
                                && let Ok(recs) = brood::codec::decode::<Vec<Rec>>(b)
                            {
                                inner.deliver(recs);
                            }
                            last.clone_from(&id);
                            ids.push(id);
                        }
                    }
                }
                if !ids.is_empty() {
                    let _: redis::RedisResult<()> =
                        redis::cmd("XDEL").arg(&inner.reply).arg(&ids).query(c);
                }
            }
            Ok(_) => {}
            Err(e) if conn::retryable(&e) => con = None,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A task sent to Redis: its value later, typed (from
/// [`RedisPool::apply_async`] and [`RedisPool::submit`]). Also a
/// [`Future`](std::future::Future) of the same result.
///
/// ```no_run
/// #[brood::task]
/// fn inc(x: u64) -> u64 { x + 1 }
///
/// let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
/// let f = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
/// assert_eq!(f.result_timeout(std::time::Duration::from_secs(10))?, 2);
/// assert!(f.done());
/// assert!(f.runs() >= 1);
/// # Ok::<(), brood_redis::Error>(())
/// ```
pub struct RedisFuture<R> {
    slot: Arc<Slot>,
    pool: Weak<Inner>,
    _value: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RedisFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFuture")
            .field("seq", &self.slot.seq)
            .field("task", &self.slot.name)
            .field("done", &self.slot.done())
            .finish()
    }
}

impl<R: DeserializeOwned> RedisFuture<R> {
    /// Waits for the value. It always comes: a value, the task's error, a
    /// dead letter, or [`ErrorKind::Unreachable`] once Redis has been gone
    /// longer than the pool's reconnect window — but while no worker runs,
    /// the task waits in the queue (use
    /// [`result_timeout`](RedisFuture::result_timeout) to bound it).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.apply_async::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// assert_eq!(r.get()?, 2);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn get(&self) -> Result<R> {
        self.wait_until(None)
    }

    /// The executor's name for [`get`](RedisFuture::get).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// assert_eq!(r.result()?, 2);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn result(&self) -> Result<R> {
        self.get()
    }

    /// Waits at most `timeout`: [`ErrorKind::Timeout`] after it (the
    /// result stays available for a later call).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// assert_eq!(r.result_timeout(std::time::Duration::from_secs(5))?, 2);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<R> {
        let mut st = lock(&self.slot.state);
        loop {
            if let Some(outcome) = st.outcome.take() {
                st.taken = true;
                drop(st);
                return decode(outcome);
            }
            if st.taken {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the result was already taken by an earlier call",
                ));
            }
            match deadline {
                None => st = self.slot.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("task {} is not done yet", self.id()),
                        ));
                    }
                    st = self
                        .slot
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// Whether the result is here (or was taken).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// let _ = r.done();
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn done(&self) -> bool {
        self.slot.done()
    }

    /// Cancels the task if no worker has taken it yet (its stream entry is
    /// deleted, atomically with the check): `Ok(true)` then, and the handle
    /// ends with [`ErrorKind::Cancelled`]. `Ok(false)` if a worker holds
    /// it or it is done (as Python's `Future.cancel`).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// if r.cancel()? {
    ///     assert!(r.result().is_err());
    /// }
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn cancel(&self) -> Result<bool> {
        if self.done() {
            return Ok(false);
        }
        let Some(inner) = self.pool.upgrade() else {
            return Ok(false);
        };
        let entry = {
            let st = lock(&self.slot.state);
            if st.chunked { None } else { st.entry.clone() }
        };
        let Some(entry) = entry else {
            return Ok(false);
        };
        let script = redis::Script::new(
            r"
            local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
            if #p > 0 then return 0 end
            return redis.call('XDEL', KEYS[1], ARGV[2])
            ",
        );
        let mut guard = lock(&inner.submit);
        let Some(con) = guard.as_mut() else {
            return Err(inner.unreachable("not connected"));
        };
        let deleted: i64 = script
            .key(&inner.keys.tasks)
            .arg(GROUP)
            .arg(&entry)
            .invoke(con)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Redis,
                    format!("cancel on {}: {e}", conn::redact(&inner.url)),
                )
            })?;
        drop(guard);
        if deleted == 1 {
            self.slot.finish(
                Err(Error::new(
                    ErrorKind::Cancelled,
                    format!("task {} was cancelled", self.id()),
                )),
                0,
                false,
            );
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// How many results came back for this task: 1 normally, more when it
    /// ran again after a redelivery and both runs finished (only the first
    /// result is used). Later duplicates raise it while the handle lives.
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// r.result()?;
    /// assert!(r.runs() >= 1);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn runs(&self) -> u32 {
        lock(&self.slot.state).runs
    }

    /// The highest delivery count a result reported: 1 if the first worker
    /// that took the task finished it, more if it was redelivered (its
    /// worker died or went silent, or its pool worker crashed).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// r.result()?;
    /// assert!(r.deliveries() >= 1);
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn deliveries(&self) -> u32 {
        lock(&self.slot.state).deliveries
    }

    /// Whether the task was run (or delivered) more than once.
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// r.result()?;
    /// let _ = r.reran();
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn reran(&self) -> bool {
        let st = lock(&self.slot.state);
        st.runs > 1 || st.deliveries > 1
    }

    /// The task's id, `CALLER:SEQ`: the same across redeliveries.
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// assert!(r.id().starts_with(pool.caller()));
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn id(&self) -> String {
        match self.pool.upgrade() {
            Some(p) => format!("{}:{}", p.caller, self.slot.seq),
            None => format!("?:{}", self.slot.seq),
        }
    }

    /// The caller's sequence number of the task (the second half of
    /// [`id`](RedisFuture::id)).
    ///
    /// ```no_run
    /// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
    /// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
    /// let r = pool.submit::<u64, _>(concat!(module_path!(), "::inc"), (1u64,))?;
    /// let _ = r.seq();
    /// # Ok::<(), brood_redis::Error>(())
    /// ```
    pub fn seq(&self) -> u64 {
        self.slot.seq
    }
}

fn decode<R: DeserializeOwned>(outcome: Result<Vec<u8>>) -> Result<R> {
    brood::codec::decode(&outcome?).map_err(Error::from)
}

impl<R> Drop for RedisFuture<R> {
    fn drop(&mut self) {
        if self.slot.done()
            && let Some(inner) = self.pool.upgrade()
        {
            lock(&inner.slots).remove(&self.slot.seq);
        }
    }
}

impl<R: DeserializeOwned> std::future::Future for RedisFuture<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let mut st = lock(&self.slot.state);
        if let Some(outcome) = st.outcome.take() {
            st.taken = true;
            return Poll::Ready(decode(outcome));
        }
        if st.taken {
            return Poll::Ready(Err(Error::new(
                ErrorKind::Closed,
                "the result was already taken by an earlier call",
            )));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The values of [`RedisPool::imap_unordered`], in completion order.
///
/// ```no_run
/// # #[brood::task] fn inc(x: u64) -> u64 { x + 1 }
/// # let pool = brood_redis::RedisPool::connect("redis://127.0.0.1/", "x")?;
/// let it = pool.imap_unordered::<u64, _, _>(concat!(module_path!(), "::inc"), 0..3u64)?;
/// assert_eq!(it.len(), 3);
/// # Ok::<(), brood_redis::Error>(())
/// ```
pub struct ImapUnordered<R> {
    rx: Receiver<u64>,
    remaining: HashMap<u64, Arc<Slot>>,
    pool: Weak<Inner>,
    _value: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("remaining", &self.remaining.len())
            .finish()
    }
}

impl<R: DeserializeOwned> Iterator for ImapUnordered<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.remaining.is_empty() {
            return None;
        }
        loop {
            let seq = match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(seq) => seq,
                Err(_) => {
                    // Slots that finished while nobody could notify (a
                    // closed pool) are found by looking.
                    match self.remaining.values().find(|s| s.done()) {
                        Some(s) => s.seq,
                        None => continue,
                    }
                }
            };
            let Some(slot) = self.remaining.remove(&seq) else {
                continue;
            };
            let outcome = {
                let mut st = lock(&slot.state);
                st.taken = true;
                st.outcome.take()
            };
            if let Some(inner) = self.pool.upgrade() {
                lock(&inner.slots).remove(&seq);
            }
            return Some(match outcome {
                Some(o) => decode(o),
                None => Err(Error::new(ErrorKind::Closed, "the RedisPool was closed")),
            });
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining.len(), Some(self.remaining.len()))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for ImapUnordered<R> {}
