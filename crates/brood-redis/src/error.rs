//! brood-redis's error: what went wrong, with the Redis URL (password
//! hidden) where it matters.

use std::fmt;

/// What kind of failure an [`Error`] is.
///
/// ```
/// let e = brood_redis::Error::new(brood_redis::ErrorKind::Timeout, "slow");
/// assert_eq!(e.kind(), brood_redis::ErrorKind::Timeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Redis could not be reached (at start within the connect timeout, or
    /// for longer than the reconnect window later); the message names the
    /// URL and what the operating system said.
    Unreachable,
    /// Redis refused the credentials (wrong password or user).
    Auth,
    /// Redis answered with an error to a command.
    Redis,
    /// The task ran and failed: it panicked, or its arguments or value did
    /// not decode.
    Task,
    /// The task was moved to the dead-letter stream (it killed its worker
    /// too many times, or no worker knows its name); the message says why.
    DeadLetter,
    /// The task was cancelled before any worker took it.
    Cancelled,
    /// A timed wait ran out; the result may still come.
    Timeout,
    /// A value could not be encoded or decoded.
    Codec,
    /// The pool was closed.
    Closed,
}

/// An error from brood-redis.
///
/// ```
/// let e = brood_redis::Error::new(brood_redis::ErrorKind::Task, "boom");
/// assert_eq!(e.to_string(), "boom");
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of `kind` with `message`.
    ///
    /// ```
    /// let e = brood_redis::Error::new(brood_redis::ErrorKind::Closed, "closed");
    /// assert_eq!(e.message(), "closed");
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    ///
    /// ```
    /// let e = brood_redis::Error::new(brood_redis::ErrorKind::Auth, "no");
    /// assert_eq!(e.kind(), brood_redis::ErrorKind::Auth);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    ///
    /// ```
    /// let e = brood_redis::Error::new(brood_redis::ErrorKind::Auth, "no");
    /// assert_eq!(e.message(), "no");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<brood::Error> for Error {
    fn from(e: brood::Error) -> Error {
        let kind = match e.kind() {
            brood::ErrorKind::Codec | brood::ErrorKind::TooLarge => ErrorKind::Codec,
            brood::ErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::Task,
        };
        Error::new(kind, e.to_string())
    }
}

/// brood-redis's result type.
///
/// ```
/// fn connect(url: &str) -> brood_redis::Result<brood_redis::RedisPool> {
///     brood_redis::RedisPool::connect(url, "jobs")
/// }
/// assert!(connect("redis://127.0.0.1:1/").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
