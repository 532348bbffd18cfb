//! `Lock`: a lease in Redis (`SET NX PX`) with a fencing token (`INCR`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use brood::ErrorKind;

use super::lease::Keeper;
use super::{Backoff, Conn, Error, IntoTarget, Result, deadline, key, millis};

/// Takes the lock when free: a new fencing token, else 0.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], t, 'PX', ARGV[1])
return t
";

/// Extends the lease if token ARGV[1] still holds it: 1, else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Frees the lock if token ARGV[1] still holds it: 1, else 0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How long a lease lasts by default without a renewal.
///
/// ```
/// assert_eq!(brood_redis::objects::DEFAULT_LEASE, std::time::Duration::from_secs(10));
/// ```
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// A mutual-exclusion lock on Redis for processes on any machine (Python's
/// `Manager().Lock()`), held as a **lease**: the holder's heartbeat thread
/// renews it every third of the lease; a holder that dies (or stops, or
/// loses Redis) for longer than the lease loses it, and the lock frees
/// itself. Every acquisition gets a **fencing token**, larger than every
/// earlier one: hand it to what the lock protects (see
/// [`Value::set_fenced`](super::Value::set_fenced)) so a holder that lost
/// its lease without knowing cannot overwrite a newer holder's work.
///
/// One `Lock` value is one holder: [`Clone`] gives a new holder on the same
/// lock (for another thread), not a copy of this one's hold. The lock is
/// not reentrant: acquiring it again through the same handle without a
/// timeout is an [`ErrorKind::InvalidState`] error (Python would deadlock);
/// with a timeout it waits the timeout out and answers false, and
/// `try_acquire` answers false, as in Python. Dropping a handle that holds
/// the lock releases it.
///
/// ```
/// use brood_redis::objects::Lock;
/// let server = brood_redis::LocalServer::start()?;
/// let lock = Lock::new(server.url().as_str(), "printer")?;
/// {
///     let held = lock.lock()?;
///     println!("printing with fencing token {}", held.token());
/// }
/// assert!(!lock.locked()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Lock {
    conn: Conn,
    name: String,
    key: String,
    fence_key: String,
    lease: Duration,
    held: Mutex<Option<Held>>,
}

struct Held {
    token: u64,
    keeper: Keeper,
    pid: u32,
}

impl Clone for Lock {
    /// Another holder of the same lock (not holding it).
    fn clone(&self) -> Self {
        Lock {
            conn: self.conn.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            fence_key: self.fence_key.clone(),
            lease: self.lease,
            held: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .field("lease", &self.lease)
            .field("token", &self.token())
            .finish()
    }
}

impl Lock {
    /// Attaches to lock `name` with the default lease (10 s).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// assert!(!lock.locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str) -> Result<Lock> {
        Lock::with_lease(target, name, DEFAULT_LEASE)
    }

    /// Attaches to lock `name`; this handle's holds last `lease` without a
    /// renewal (its heartbeat renews every `lease / 3`). A short lease frees
    /// a dead holder's lock sooner, and lapses sooner under a stall.
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::with_lease(server.url().as_str(), "l", Duration::from_secs(2))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_lease(target: impl IntoTarget, name: &str, lease: Duration) -> Result<Lock> {
        Lock::on(Conn::open(target)?, name, lease)
    }

    pub(crate) fn on(conn: Conn, name: &str, lease: Duration) -> Result<Lock> {
        let key = key("lock", name)?;
        Ok(Lock {
            conn,
            name: name.to_string(),
            fence_key: format!("{key}:fence"),
            key,
            lease: lease.max(Duration::from_millis(30)),
            held: Mutex::new(None),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.as_ref().is_some_and(|h| h.pid != std::process::id()) {
            // A forked child's copy of its parent's hold: not the child's.
            *held = None;
        }
        held
    }

    fn try_once(&self, held: &mut Option<Held>) -> Result<bool> {
        if held.is_some() {
            // Not reentrant: this holder waits for itself, as in Python.
            return Ok(false);
        }
        let token: u64 = self.conn.call("acquiring the lock", |c| {
            redis::Script::new(ACQUIRE)
                .key(&self.key)
                .key(&self.fence_key)
                .arg(millis(self.lease))
                .invoke(c)
        })?;
        if token == 0 {
            return Ok(false);
        }
        let (key, lease_ms) = (self.key.clone(), millis(self.lease));
        let keeper = Keeper::start(self.conn.clone(), self.lease, move |c| {
            let renewed: i64 = redis::Script::new(RENEW)
                .key(&key)
                .arg(token)
                .arg(lease_ms)
                .invoke(c)?;
            Ok(renewed == 1)
        });
        *held = Some(Held {
            token,
            keeper,
            pid: std::process::id(),
        });
        Ok(true)
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if deadline.is_none()
            && let Some(h) = self.held().as_ref()
        {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "lock {:?} is already held by this handle (token {}); it is not \
                     reentrant, and waiting for itself would never end",
                    self.name, h.token
                ),
            ));
        }
        let mut backoff = Backoff::new();
        loop {
            match self.try_once(&mut self.held()) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                // Stopped and continued mid-call: count it a miss. If the
                // script ran, that hold has no heartbeat and lapses after
                // one lease; then this loop takes the lock.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if !backoff.sleep(deadline) {
                return Ok(false);
            }
        }
    }

    /// Takes the lock, waiting while another holder has it (polling, 1 ms
    /// growing to 50 ms; a dead holder's lock frees itself after its lease).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// lock.acquire()?;
    /// lock.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_until(None).map(drop)
    }

    /// Takes the lock, waiting at most `timeout`: whether it was taken
    /// (Python's `acquire(timeout=...)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let a = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// let b = a.clone();
    /// assert!(a.acquire_timeout(Duration::from_millis(10))?);
    /// assert!(!b.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_until(deadline(timeout))
    }

    /// Takes the lock if it is free now (Python's `acquire(False)`).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// assert!(lock.try_acquire()?);
    /// assert!(!lock.clone().try_acquire()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.try_once(&mut self.held())
    }

    /// Frees the lock this handle holds. Releasing a lock this handle does
    /// not hold is an [`ErrorKind::InvalidState`] error (Python's
    /// `RuntimeError`), and so is a release after the lease lapsed (the
    /// holder stalled for longer than the lease: another holder may have
    /// run in between; nothing is freed, the lock is no longer this
    /// handle's).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// assert!(lock.release().is_err());
    /// lock.acquire()?;
    /// lock.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        let Some(held) = self.held().take() else {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "release of lock {:?}, which this handle does not hold",
                    self.name
                ),
            ));
        };
        let Held { token, keeper, .. } = held;
        drop(keeper);
        let freed: i64 = self.conn.call("releasing the lock", |c| {
            redis::Script::new(RELEASE)
                .key(&self.key)
                .arg(token)
                .invoke(c)
        })?;
        if freed == 1 {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "lock {:?}: the lease of fencing token {token} lapsed before its release \
                     (the holder stalled or lost Redis for longer than {:?}); another holder may have run",
                    self.name, self.lease
                ),
            ))
        }
    }

    /// Whether any holder has the lock now.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// assert!(!lock.locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn locked(&self) -> Result<bool> {
        self.conn.idem("reading the lock", |c| {
            redis::cmd("EXISTS").arg(&self.key).query(c)
        })
    }

    /// This handle's fencing token while it holds the lock.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// assert_eq!(lock.token(), None);
    /// lock.acquire()?;
    /// assert!(lock.token().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token(&self) -> Option<u64> {
        self.held().as_ref().map(|h| h.token)
    }

    /// Whether this handle's heartbeat found its lease gone (the lock is
    /// then no longer safely this handle's; [`release`](Lock::release) will
    /// say so).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// lock.acquire()?;
    /// assert!(!lock.lease_lost());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lease_lost(&self) -> bool {
        self.held().as_ref().is_some_and(|h| h.keeper.lost())
    }

    /// Takes the lock and returns a guard that releases it when dropped.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// {
    ///     let _held = lock.lock()?;
    ///     assert!(lock.locked()?);
    /// }
    /// assert!(!lock.locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.acquire()?;
        Ok(LockGuard {
            lock: self,
            token: self.token().unwrap_or(0),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.held().is_some() {
            let _ = self.release();
        }
    }
}

/// Holds a [`Lock`] until dropped.
///
/// ```
/// let server = brood_redis::LocalServer::start()?;
/// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
/// let guard = lock.lock()?;
/// assert!(guard.token() > 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    token: u64,
}

impl LockGuard<'_> {
    /// The fencing token of this hold.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// let first = lock.lock()?.token();
    /// let second = lock.lock()?.token();
    /// assert!(second > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Releases now, reporting an error (a lapsed lease) that drop would
    /// swallow.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let lock = brood_redis::objects::Lock::new(server.url().as_str(), "l")?;
    /// lock.lock()?.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(self) -> Result<()> {
        let lock = self.lock;
        std::mem::forget(self);
        lock.release()
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}
