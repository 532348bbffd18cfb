//! `Queue<T>`: a Redis list, FIFO (`RPUSH` / `BLPOP`), optionally bounded.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use brood::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Backoff, Conn, Error, IntoTarget, Result, deadline, dec, enc, key};

/// Puts all of ARGV, or nothing when the bound (KEYS[2], absent = none)
/// would be passed: -1 then, else the new length.
const PUT: &str = r"
local max = tonumber(redis.call('GET', KEYS[2]) or '0')
if max > 0 and redis.call('LLEN', KEYS[1]) + #ARGV > max then return -1 end
local n = 0
for i = 1, #ARGV do n = redis.call('RPUSH', KEYS[1], ARGV[i]) end
return n
";

/// How long one `BLPOP` waits when the caller waits longer (so a Redis
/// that went away is noticed).
const BLOCK_STEP: Duration = Duration::from_secs(2);

/// A FIFO queue on Redis that processes on any machine share by name
/// (Python's `Manager().Queue(maxsize)` / `queue.Queue` semantics).
///
/// Items are MessagePack in a Redis list `brood:queue:NAME`; a bound, when
/// set, lives in `brood:queue:NAME:max` and every put checks it atomically
/// (a Lua script), so all processes obey the same bound. `get` on an empty
/// queue and `put` on a full one wait; the `_nowait` and `_timeout` forms
/// fail with [`Error::is_empty`] / [`Error::is_full`] (Python's
/// `queue.Empty` / `queue.Full`, brood's [`ErrorKind::Timeout`]).
///
/// ```
/// use brood_redis::objects::Queue;
/// let server = brood_redis::LocalServer::start()?;
/// let q = Queue::<(u32, String)>::new(server.url().as_str(), "work")?;
/// q.put(&(1, "one".into()))?;
/// assert_eq!(q.qsize()?, 1);
/// assert_eq!(q.get()?, (1, "one".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    conn: Conn,
    name: String,
    key: String,
    max_key: String,
    put: redis::Script,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            conn: self.conn.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            max_key: self.max_key.clone(),
            put: self.put.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Attaches to queue `name`, creating it (unbounded) when it does not
    /// exist; an existing bound is kept.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert!(q.empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str) -> Result<Queue<T>> {
        let conn = Conn::open(target)?;
        let key = key("queue", name)?;
        Ok(Queue {
            conn,
            name: name.to_string(),
            max_key: format!("{key}:max"),
            key,
            put: redis::Script::new(PUT),
            _items: PhantomData,
        })
    }

    /// Attaches to queue `name` with room for `maxsize` items (0: no
    /// bound). The first process to name a bound sets it; a different
    /// bound later is an [`ErrorKind::InvalidState`] error.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::bounded(server.url().as_str(), "q", 2)?;
    /// assert_eq!(q.maxsize()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(target: impl IntoTarget, name: &str, maxsize: u64) -> Result<Queue<T>> {
        let q = Queue::new(target, name)?;
        let set: Option<u64> = q.conn.idem("setting the queue's bound", |c| {
            redis::cmd("SET")
                .arg(&q.max_key)
                .arg(maxsize)
                .arg("NX")
                .arg("GET")
                .query(c)
        })?;
        match set {
            Some(old) if old != maxsize => Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "queue {name:?} exists with maxsize {old}, not {maxsize} (redis at {})",
                    q.conn.addr()
                ),
            )),
            _ => Ok(q),
        }
    }

    /// The bound (0: none).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert_eq!(q.maxsize()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn maxsize(&self) -> Result<u64> {
        let max: Option<u64> = self.conn.idem("reading the queue's bound", |c| {
            redis::cmd("GET").arg(&self.max_key).query(c)
        })?;
        Ok(max.unwrap_or(0))
    }

    /// Tries to put now: whether there was room.
    fn try_put_encoded(&self, items: &[Vec<u8>]) -> Result<bool> {
        let n: i64 = self.conn.call("putting into the queue", |c| {
            let mut inv = self.put.key(&self.key);
            inv.key(&self.max_key);
            for item in items {
                inv.arg(item.as_slice());
            }
            inv.invoke(c)
        })?;
        Ok(n >= 0)
    }

    fn put_until(&self, items: &[Vec<u8>], deadline: Option<Instant>) -> Result<()> {
        let mut backoff = Backoff::new();
        loop {
            if self.try_put_encoded(items)? {
                return Ok(());
            }
            if !backoff.sleep(deadline) {
                return Err(Error::full(&self.name, self.maxsize()?));
            }
        }
    }

    /// Appends `item`, waiting while a bounded queue is full (it polls,
    /// 1 ms growing to 50 ms).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// q.put(&1)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_until(&[enc(item)?], None)
    }

    /// Appends `item`, waiting at most `timeout` for room
    /// ([`Error::is_full`] otherwise: Python's `queue.Full`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::bounded(server.url().as_str(), "q", 1)?;
    /// q.put(&1)?;
    /// assert!(q.put_timeout(&2, Duration::from_millis(20)).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.put_until(&[enc(item)?], deadline(timeout))
    }

    /// Appends `item` if there is room now ([`Error::is_full`] otherwise).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::bounded(server.url().as_str(), "q", 1)?;
    /// q.put_nowait(&1)?;
    /// assert!(q.put_nowait(&2).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_nowait(&self, item: &T) -> Result<()> {
        if self.try_put_encoded(&[enc(item)?])? {
            Ok(())
        } else {
            Err(Error::full(&self.name, self.maxsize()?))
        }
    }

    /// Appends every item in one round trip, all or none: on a bounded
    /// queue it waits until all of them fit (more than the bound never
    /// fits: an [`ErrorKind::InvalidState`] error).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u32>::new(server.url().as_str(), "q")?;
    /// q.put_many(0..100)?;
    /// assert_eq!(q.qsize()?, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_many(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items = items
            .into_iter()
            .map(|i| enc(&i))
            .collect::<Result<Vec<_>>>()?;
        if items.is_empty() {
            return Ok(());
        }
        let max = self.maxsize()?;
        if max > 0 && items.len() as u64 > max {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "{} items never fit in queue {:?} (maxsize {max})",
                    items.len(),
                    self.name
                ),
            ));
        }
        self.put_until(&items, None)
    }

    fn decode(&self, bytes: Vec<u8>) -> Result<T> {
        dec(&bytes, &format!("an item of queue {:?}", self.name))
    }

    /// Takes the oldest item, waiting for one (in `BLPOP`s of 2 s, so a
    /// Redis that went away is an error, not a hang).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// q.put(&7)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        loop {
            if let Some(item) = self.blpop(BLOCK_STEP)? {
                return self.decode(item);
            }
        }
    }

    /// Takes the oldest item, waiting at most `timeout`
    /// ([`Error::is_empty`] otherwise: Python's `queue.Empty`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert!(q.get_timeout(Duration::from_millis(20)).unwrap_err().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        let Some(deadline) = deadline(timeout) else {
            return self.get();
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.get_nowait();
            }
            if let Some(item) = self.blpop(left.min(BLOCK_STEP))? {
                return self.decode(item);
            }
        }
    }

    /// Takes the oldest item if there is one now ([`Error::is_empty`]
    /// otherwise).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert!(q.get_nowait().unwrap_err().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T> {
        let item: Option<Vec<u8>> = self.conn.call("taking from the queue", |c| {
            redis::cmd("LPOP").arg(&self.key).query(c)
        })?;
        match item {
            Some(item) => self.decode(item),
            None => Err(Error::empty(&self.name)),
        }
    }

    fn blpop(&self, wait: Duration) -> Result<Option<Vec<u8>>> {
        let got: Option<(String, Vec<u8>)> =
            self.conn.call_blocking("waiting on the queue", wait, |c| {
                redis::cmd("BLPOP")
                    .arg(&self.key)
                    .arg(format!("{:.3}", wait.as_secs_f64().max(0.001)))
                    .query(c)
            })?;
        Ok(got.map(|(_, v)| v))
    }

    /// How many items wait.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert_eq!(q.qsize()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        self.conn.idem("measuring the queue", |c| {
            redis::cmd("LLEN").arg(&self.key).query(c)
        })
    }

    /// Whether no item waits.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert!(q.empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether a bounded queue has no room.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::bounded(server.url().as_str(), "q", 1)?;
    /// q.put(&1)?;
    /// assert!(q.full()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn full(&self) -> Result<bool> {
        let max = self.maxsize()?;
        Ok(max > 0 && self.qsize()? as u64 >= max)
    }
}
