//! `Event`: a Redis key (set or absent) plus a pub/sub channel that wakes
//! waiters.

use std::time::{Duration, Instant};

use brood::ErrorKind;

use super::{Conn, Error, IntoTarget, Result, deadline, key};

/// How often a waiter re-reads the flag itself (a wake-up lost with a
/// dropped pub/sub connection costs at most this).
const RECHECK: Duration = Duration::from_millis(500);

/// An event flag on Redis for processes on any machine (Python's
/// `Manager().Event()`): [`set`](Event::set) wakes every waiter,
/// [`clear`](Event::clear) resets it.
///
/// The flag is the key `brood:event:NAME` (present: set); `set` writes it
/// and publishes on the channel of the same name in one transaction.
/// A waiter subscribes first, then reads the flag (so a `set` between the
/// two is never missed), then waits for a message, re-reading the flag
/// every 500 ms as a fallback. As in Python, a waiter woken by a `set`
/// returns true even if the flag was cleared again right after.
///
/// ```
/// use std::time::Duration;
/// use brood_redis::objects::Event;
/// let server = brood_redis::LocalServer::start()?;
/// let ready = Event::new(server.url().as_str(), "ready")?;
/// assert!(!ready.wait_timeout(Duration::from_millis(10))?);
/// ready.set()?;
/// assert!(ready.wait_timeout(Duration::from_secs(1))?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Event {
    conn: Conn,
    name: String,
    key: String,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .finish()
    }
}

impl Event {
    /// Attaches to event `name` (clear when it does not exist yet).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let e = brood_redis::objects::Event::new(server.url().as_str(), "e")?;
    /// assert!(!e.is_set()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str) -> Result<Event> {
        Ok(Event {
            conn: Conn::open(target)?,
            name: name.to_string(),
            key: key("event", name)?,
        })
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let e = brood_redis::objects::Event::new(server.url().as_str(), "e")?;
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self) -> Result<()> {
        self.conn.idem("setting the event", |c| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&self.key)
                .arg(1)
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.key)
                .arg(1)
                .ignore()
                .query::<()>(c)
        })
    }

    /// Resets the flag.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let e = brood_redis::objects::Event::new(server.url().as_str(), "e")?;
    /// e.set()?;
    /// e.clear()?;
    /// assert!(!e.is_set()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.conn.idem("clearing the event", |c| {
            redis::cmd("DEL").arg(&self.key).query::<()>(c)
        })
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let e = brood_redis::objects::Event::new(server.url().as_str(), "e")?;
    /// assert!(!e.is_set()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        self.conn.idem("reading the event", |c| {
            redis::cmd("EXISTS").arg(&self.key).query(c)
        })
    }

    /// Waits until the flag is set.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let e = brood_redis::objects::Event::new(server.url().as_str(), "e")?;
    /// e.set()?;
    /// e.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None).map(drop)
    }

    /// Waits at most `timeout` for the flag: whether it was set (Python's
    /// `wait(timeout)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let e = brood_redis::objects::Event::new(server.url().as_str(), "e")?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(deadline(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            match self.wait_once(deadline) {
                // Stopped and continued mid-wait (Ctrl-Z, SIGSTOP): the
                // socket calls failed with EINTR; subscribe again.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn wait_once(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.is_set()? {
            return Ok(true);
        }
        let fail = |e| Error::from_redis(self.conn.addr(), "waiting for the event", e);
        let mut con = self.conn.connect()?;
        let mut sub = con.as_pubsub();
        sub.subscribe(&self.key).map_err(fail)?;
        loop {
            // Subscribed before reading: a set from here on is a message.
            if self.is_set()? {
                return Ok(true);
            }
            let mut wait = RECHECK;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                wait = wait.min(left);
            }
            sub.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(fail)?;
            match sub.get_message() {
                Ok(_) => return Ok(true),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(fail(e)),
            }
        }
    }
}
