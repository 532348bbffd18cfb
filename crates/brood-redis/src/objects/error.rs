//! The error of the shared objects: a brood [`ErrorKind`] to match on, a
//! message that names the Redis address (never the password), and the
//! redis-rs error underneath when there is one.

use std::fmt;

use brood::ErrorKind;

/// A `Result` whose error is the shared objects' [`Error`].
///
/// ```
/// fn nothing() -> brood_redis::objects::Result<()> {
///     Ok(())
/// }
/// assert!(nothing().is_ok());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a shared-object call failed.
///
/// [`kind`](Error::kind) is one of brood's [`ErrorKind`]s, so code written
/// against the manager's proxies matches on the same tags: Python's
/// `queue.Empty` and `queue.Full` are [`ErrorKind::Timeout`] (with
/// [`is_empty`](Error::is_empty) / [`is_full`](Error::is_full) to tell them
/// apart), an unreachable Redis is [`ErrorKind::Io`], a wrong or missing
/// password [`ErrorKind::Auth`], a connection lost mid-call
/// [`ErrorKind::Closed`], a value of another type [`ErrorKind::Codec`], and a
/// call that does not fit the object's state (releasing a lock this handle
/// does not hold, a stale fencing token, a key of another Redis type)
/// [`ErrorKind::InvalidState`], and a call cut by a stop signal (the
/// process was stopped and continued inside it) [`ErrorKind::Interrupted`].
///
/// ```
/// use brood_redis::objects::Queue;
/// let server = brood_redis::LocalServer::start()?;
/// let q = Queue::<u8>::new(server.url().as_str(), "jobs")?;
/// let err = q.get_nowait().unwrap_err();
/// assert!(err.is_empty());
/// assert_eq!(err.kind(), brood::ErrorKind::Timeout);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Error {
    kind: ErrorKind,
    what: What,
    message: String,
    source: Option<redis::RedisError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Empty,
    Full,
    Other,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            what: What::Other,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn empty(name: &str) -> Error {
        Error {
            what: What::Empty,
            ..Error::new(ErrorKind::Timeout, format!("queue {name:?} is empty"))
        }
    }

    pub(crate) fn full(name: &str, max: u64) -> Error {
        Error {
            what: What::Full,
            ..Error::new(
                ErrorKind::Timeout,
                format!("queue {name:?} is full ({max} items)"),
            )
        }
    }

    pub(crate) fn codec(what: &str, err: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Codec, format!("{what}: {err}"))
    }

    /// Classifies a redis-rs error met while talking to `addr`.
    pub(crate) fn from_redis(addr: &str, doing: &str, err: redis::RedisError) -> Error {
        let code = err.code().unwrap_or("");
        let (kind, message) = if err.kind() == redis::ErrorKind::AuthenticationFailed
            || code == "NOAUTH"
            || code == "WRONGPASS"
        {
            (
                ErrorKind::Auth,
                format!(
                    "redis at {addr} refused the credentials (wrong or missing password): {err}"
                ),
            )
        } else if super::interrupted(&err) {
            (
                ErrorKind::Interrupted,
                format!(
                    "interrupted while {doing} on redis at {addr}: the process was stopped \
                     (SIGSTOP, Ctrl-Z) and continued inside the call, and a socket with a \
                     timeout is never resumed after that (signal(7)); a reply in flight is \
                     dropped with the connection: {err}"
                ),
            )
        } else if err.is_timeout() {
            (
                ErrorKind::Timeout,
                format!("redis at {addr} did not answer in time while {doing}: {err}"),
            )
        } else if err.is_connection_refusal() {
            (
                ErrorKind::Io,
                format!("cannot reach redis at {addr}: {err}"),
            )
        } else if err.is_io_error() || err.is_connection_dropped() {
            (
                ErrorKind::Closed,
                format!(
                    "connection to redis at {addr} lost while {doing} (the next call reconnects): {err}"
                ),
            )
        } else if code == "WRONGTYPE" {
            (
                ErrorKind::InvalidState,
                format!(
                    "redis at {addr}: the key is used by another kind of object ({doing}): {err}"
                ),
            )
        } else {
            (
                ErrorKind::Io,
                format!("redis at {addr} failed while {doing}: {err}"),
            )
        };
        Error {
            source: Some(err),
            ..Error::new(kind, message)
        }
    }

    /// What went wrong, as one of brood's error kinds.
    ///
    /// ```
    /// let err = brood_redis::objects::Dict::<u8, u8>::new("redis://127.0.0.1:1/", "d").unwrap_err();
    /// assert_eq!(err.kind(), brood::ErrorKind::Io);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether a wait ran out (also true for [`is_empty`](Error::is_empty)
    /// and [`is_full`](Error::is_full), as brood's queues).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert!(q.get_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// Python's `queue.Empty`: a get found nothing (now, or before its
    /// timeout ran out).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::new(server.url().as_str(), "q")?;
    /// assert!(q.get_nowait().unwrap_err().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.what == What::Empty
    }

    /// Python's `queue.Full`: a bounded queue had no room (now, or before
    /// the put's timeout ran out).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let q = brood_redis::objects::Queue::<u8>::bounded(server.url().as_str(), "q", 1)?;
    /// q.put(&1)?;
    /// assert!(q.put_nowait(&2).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.what == What::Full
    }

    /// The redis-rs error underneath, when Redis (or the connection to it)
    /// failed.
    ///
    /// ```
    /// let err = brood_redis::objects::List::<u8>::new("redis://127.0.0.1:1/", "l").unwrap_err();
    /// assert!(err.redis().is_some());
    /// ```
    pub fn redis(&self) -> Option<&redis::RedisError> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
