//! Shared objects on Redis, shaped like brood's manager proxies, for
//! programs on several machines: [`Queue`], [`Dict`], [`List`], [`Lock`],
//! [`Event`], [`Semaphore`] and [`Value`].
//!
//! Each constructor takes a Redis URL (or a `redis::Client`, or a
//! [`Target`] with timeouts of its own) and a name: processes on any
//! machine that open the same kind of object under the same name on the
//! same Redis share it. Values are typed and travel as MessagePack
//! (rmp-serde). Nothing panics and nothing waits without bound: an
//! unreachable Redis, a wrong password or a lost connection is an
//! [`Error`] with a brood [`ErrorKind`](brood::ErrorKind) and the address.
//! What each object is in Redis, its invariants and what happens when a
//! process dies mid-way: `README.md` in this folder.
//!
//! ```
//! use brood_redis::objects::{Dict, Queue};
//! let server = brood_redis::LocalServer::start()?;
//! let url = server.url();
//! let jobs = Queue::<String>::new(url.as_str(), "jobs")?;
//! jobs.put(&"resize a.png".to_string())?;
//! // Another process, on another machine, attaches by name:
//! let same = Queue::<String>::new(url.as_str(), "jobs")?;
//! assert_eq!(same.get()?, "resize a.png");
//! let seen = Dict::<String, u32>::new(url.as_str(), "seen")?;
//! seen.insert(&"a.png".to_string(), &1)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dict;
mod error;
mod event;
mod lease;
mod list;
mod lock;
mod queue;
mod semaphore;
mod value;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use brood::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use dict::Dict;
pub use error::{Error, Result};
pub use event::Event;
pub use list::List;
pub use lock::{DEFAULT_LEASE, Lock, LockGuard};
pub use queue::Queue;
pub use semaphore::Semaphore;
pub use value::Value;

/// How long a connection attempt (TCP connect, `AUTH`, the first `PING`)
/// may take by default.
///
/// ```
/// assert!(brood_redis::objects::CONNECT_TIMEOUT >= std::time::Duration::from_secs(1));
/// ```
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long Redis may take to answer one command by default (blocking
/// commands get their own wait on top).
///
/// ```
/// assert!(brood_redis::objects::RESPONSE_TIMEOUT >= brood_redis::objects::CONNECT_TIMEOUT);
/// ```
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the objects live: a Redis client and the timeouts to use with it.
///
/// ```
/// use std::time::Duration;
/// use brood_redis::objects::{Queue, Target};
/// let server = brood_redis::LocalServer::start()?;
/// let target = Target::new(&server.url())?
///     .connect_timeout(Duration::from_secs(1))
///     .response_timeout(Duration::from_secs(2));
/// let q = Queue::<u32>::new(target, "jobs")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Target {
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Target {
    /// A target for `url` (`redis://[:password@]host:port/[db]`,
    /// `unix:///path`), with the default timeouts.
    ///
    /// ```
    /// use brood_redis::objects::Target;
    /// assert!(Target::new("redis://127.0.0.1:6379/").is_ok());
    /// assert_eq!(
    ///     Target::new("http://nope").unwrap_err().kind(),
    ///     brood::ErrorKind::InvalidState
    /// );
    /// ```
    pub fn new(url: &str) -> Result<Target> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::new(
                ErrorKind::InvalidState,
                format!("not a redis URL ({}): {e}", redact(url)),
            )
        })?;
        Ok(Target::from(client))
    }

    /// Bounds each connection attempt (default [`CONNECT_TIMEOUT`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let t = brood_redis::objects::Target::new("redis://127.0.0.1/")?
    ///     .connect_timeout(Duration::from_millis(500));
    /// # Ok::<(), brood_redis::objects::Error>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Target {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Bounds the wait for each answer (default [`RESPONSE_TIMEOUT`]);
    /// blocking calls wait their own timeout on top of it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let t = brood_redis::objects::Target::new("redis://127.0.0.1/")?
    ///     .response_timeout(Duration::from_secs(1));
    /// # Ok::<(), brood_redis::objects::Error>(())
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Target {
        self.response_timeout = timeout.max(Duration::from_millis(1));
        self
    }
}

impl From<redis::Client> for Target {
    fn from(client: redis::Client) -> Target {
        Target {
            client,
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
        }
    }
}

/// What an object's constructor accepts: a URL (`&str`, `String`), a
/// `redis::Client` or a [`Target`].
///
/// ```
/// use brood_redis::objects::IntoTarget;
/// let t = "redis://127.0.0.1:6379/".into_target()?;
/// let t = redis::Client::open("redis://127.0.0.1/").unwrap().into_target()?;
/// # Ok::<(), brood_redis::objects::Error>(())
/// ```
pub trait IntoTarget {
    /// The target, or an error for a malformed URL.
    fn into_target(self) -> Result<Target>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target> {
        Ok(self.clone())
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target> {
        Target::new(self)
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target> {
        Target::new(&self)
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<Target> {
        Target::new(self)
    }
}

impl IntoTarget for redis::Client {
    fn into_target(self) -> Result<Target> {
        Ok(Target::from(self))
    }
}

impl IntoTarget for &redis::Client {
    fn into_target(self) -> Result<Target> {
        Ok(Target::from(self.clone()))
    }
}

/// A URL with its password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The shared part of every object: the client, the address for messages
/// and a small pool of connections (one per thread inside a call at the
/// same time; a forked child drops its parent's).
#[derive(Clone)]
pub(crate) struct Conn {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    client: redis::Client,
    addr: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    pool: Mutex<Pool>,
}

struct Pool {
    pid: u32,
    idle: Vec<redis::Connection>,
}

/// Idle connections kept per object.
const MAX_IDLE: usize = 8;

impl Conn {
    /// Connects once (`PING`), so a wrong address or password is an error
    /// here, at the constructor, within the connect timeout.
    pub(crate) fn open(target: impl IntoTarget) -> Result<Conn> {
        let target = target.into_target()?;
        let addr = target.client.get_connection_info().addr().to_string();
        let conn = Conn {
            inner: Arc::new(ConnInner {
                client: target.client,
                addr,
                connect_timeout: target.connect_timeout,
                response_timeout: target.response_timeout,
                pool: Mutex::new(Pool {
                    pid: std::process::id(),
                    idle: Vec::new(),
                }),
            }),
        };
        conn.idem("checking the connection", |c| {
            redis::cmd("PING").query::<String>(c)
        })?;
        Ok(conn)
    }

    /// The address, for messages (never the password).
    pub(crate) fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// A new connection, its timeouts set.
    pub(crate) fn connect(&self) -> Result<redis::Connection> {
        let i = &self.inner;
        let mut tries = 0;
        let con = loop {
            match i.client.get_connection_with_timeout(i.connect_timeout) {
                Ok(con) => break con,
                // Stopped and continued while connecting: connect again.
                Err(e) if interrupted(&e) && tries < 3 => tries += 1,
                Err(e) => return Err(Error::from_redis(&i.addr, "connecting", e)),
            }
        };
        con.set_read_timeout(Some(i.response_timeout))
            .and_then(|()| con.set_write_timeout(Some(i.response_timeout)))
            .map_err(|e| Error::from_redis(&i.addr, "connecting", e))?;
        Ok(con)
    }

    fn take(&self) -> Result<redis::Connection> {
        let pooled = {
            let mut pool = self
                .inner
                .pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let pid = std::process::id();
            if pool.pid != pid {
                // A forked child: the parent's sockets are not ours to use.
                pool.pid = pid;
                pool.idle.clear();
            }
            pool.idle.pop()
        };
        match pooled {
            Some(con) => Ok(con),
            None => self.connect(),
        }
    }

    fn put_back(&self, con: redis::Connection) {
        let mut pool = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pool.pid == std::process::id() && pool.idle.len() < MAX_IDLE {
            pool.idle.push(con);
        }
    }

    /// Runs `f` on a pooled connection. A connection that failed at the
    /// transport level (or timed out: its answer may still come) is dropped;
    /// the next call connects anew. While Redis says it is loading its data
    /// (just restarted) the call is retried, for up to the response
    /// timeout: the command did not run.
    pub(crate) fn call<R>(
        &self,
        doing: &str,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        self.call_with(doing, false, f)
    }

    /// As [`call`](Conn::call) for a command that may run twice (a read,
    /// or a write of the same value): also retried after `EINTR` (the
    /// process was stopped and continued inside it, see [`interrupted`]).
    pub(crate) fn idem<R>(
        &self,
        doing: &str,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        self.call_with(doing, true, f)
    }

    fn call_with<R>(
        &self,
        doing: &str,
        idempotent: bool,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let deadline = std::time::Instant::now() + self.inner.response_timeout;
        let mut backoff = Backoff::new();
        loop {
            let mut con = self.take()?;
            match f(&mut con) {
                Ok(r) => {
                    self.put_back(con);
                    return Ok(r);
                }
                Err(e) => {
                    if !broken(&e) {
                        self.put_back(con);
                    }
                    let loading = matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    );
                    let again = loading || (idempotent && interrupted(&e));
                    if !(again && backoff.sleep(Some(deadline))) {
                        return Err(Error::from_redis(self.addr(), doing, e));
                    }
                }
            }
        }
    }

    /// As [`call`](Conn::call) for a command that blocks up to `wait` in
    /// Redis (`BLPOP`): the read timeout is `wait` plus the response
    /// timeout for this call.
    pub(crate) fn call_blocking<R>(
        &self,
        doing: &str,
        wait: Duration,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let rt = self.inner.response_timeout;
        self.call(doing, |con| {
            con.set_read_timeout(Some(wait + rt))?;
            let r = f(con);
            con.set_read_timeout(Some(rt))?;
            r
        })
    }
}

/// Whether `e` is `EINTR` from a socket read or write: Linux never resumes
/// a socket call with a timeout after a stop signal (signal(7)), so a
/// process stopped and continued inside a call gets it. redis-rs keeps the
/// `io::Error` private, so this reads its message.
pub(crate) fn interrupted(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("os error 4")
}

/// Whether the connection must be dropped after `e`.
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Parse
}

/// The Redis key of object `name` of `kind`.
pub(crate) fn key(kind: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidState,
            format!("a {kind} needs a name (an empty name was given)"),
        ));
    }
    Ok(format!("brood:{kind}:{name}"))
}

pub(crate) fn enc<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::codec("cannot encode the value", e))
}

pub(crate) fn dec<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        Error::codec(
            &format!("{what} does not decode as {}", std::any::type_name::<T>()),
            e,
        )
    })
}

/// The instant `timeout` from now; `None` (no limit) when it is too far
/// to represent (`Duration::MAX`), as everywhere in brood.
pub(crate) fn deadline(timeout: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

/// Milliseconds for Redis, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Sleeps for a poll step that grows from 1 ms to 50 ms, never past
/// `deadline`.
pub(crate) struct Backoff {
    step: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            step: Duration::from_millis(1),
        }
    }

    /// Sleeps; false (without sleeping) when `deadline` has passed.
    pub(crate) fn sleep(&mut self, deadline: Option<std::time::Instant>) -> bool {
        let mut d = self.step;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            d = d.min(left);
        }
        std::thread::sleep(d);
        self.step = (self.step * 2).min(Duration::from_millis(50));
        true
    }
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn every_object_crosses_threads() {
        send_sync::<super::Queue<String>>();
        send_sync::<super::Dict<String, Vec<u8>>>();
        send_sync::<super::List<u8>>();
        send_sync::<super::Lock>();
        send_sync::<super::Event>();
        send_sync::<super::Semaphore>();
        send_sync::<super::Value<u64>>();
        send_sync::<super::Error>();
    }

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            super::redact("redis://:s3cret@host:1/"),
            "redis://***@host:1/"
        );
        assert_eq!(super::redact("redis://host:1/"), "redis://host:1/");
    }
}
