//! `Semaphore`: bounded permits as leases in a Redis sorted set (member: a
//! holder id, score: the lease's expiry in Redis's clock).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use brood::ErrorKind;

use super::lease::{Keeper, holder_id};
use super::lock::DEFAULT_LEASE;
use super::{Backoff, Conn, Error, IntoTarget, Result, deadline, key, millis};

/// Redis's clock in milliseconds, as a Lua prelude.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Drops lapsed permits, then takes one for ARGV[1] if fewer than the
/// limit are out: 1, else 0.
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
";

/// Extends ARGV[1]'s permit if it has not lapsed: 1, else 0.
const RENEW: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
";

/// Returns ARGV[1]'s permit: 1 if it was still live, else 0.
const RELEASE: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if s and tonumber(s) > now then return 1 end
return 0
";

/// Permits free now: the limit less the live permits.
const VALUE: &str = r"
local limit = tonumber(redis.call('GET', KEYS[2]) or '0')
return limit - redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// A bounded semaphore on Redis for processes on any machine (Python's
/// `Manager().BoundedSemaphore(n)`), whose permits are **leases**: each
/// acquired permit is renewed by the holder's heartbeat thread, and the
/// permit of a holder that died comes back after its lease.
///
/// A permit belongs to the handle that acquired it (one `Semaphore` value
/// may hold several); [`release`](Semaphore::release) returns the most
/// recent one and is an [`ErrorKind::InvalidState`] error when this handle
/// holds none (Python's `BoundedSemaphore` raises `ValueError` for a
/// release past the bound; a plain Python semaphore lets anyone release,
/// and its count can grow: this one cannot). [`Clone`] gives another
/// holder with no permits. Dropping a handle returns its permits.
///
/// ```
/// use brood_redis::objects::Semaphore;
/// let server = brood_redis::LocalServer::start()?;
/// let slots = Semaphore::new(server.url().as_str(), "gpu", 2)?;
/// slots.acquire()?;
/// assert_eq!(slots.value()?, 1);
/// slots.release()?;
/// assert_eq!(slots.value()?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Semaphore {
    conn: Conn,
    name: String,
    key: String,
    limit_key: String,
    lease: Duration,
    held: Mutex<Vec<Permit>>,
}

struct Permit {
    id: String,
    keeper: Keeper,
    pid: u32,
}

impl Clone for Semaphore {
    /// Another holder on the same semaphore (holding no permit).
    fn clone(&self) -> Self {
        Semaphore {
            conn: self.conn.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            limit_key: self.limit_key.clone(),
            lease: self.lease,
            held: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .field("lease", &self.lease)
            .finish()
    }
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{NOW}{body}"))
}

impl Semaphore {
    /// Attaches to semaphore `name` with `value` permits and the default
    /// lease (10 s). The first process to name it sets the number of
    /// permits; another number later is an [`ErrorKind::InvalidState`]
    /// error.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 3)?;
    /// assert_eq!(s.value()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str, value: u64) -> Result<Semaphore> {
        Semaphore::with_lease(target, name, value, DEFAULT_LEASE)
    }

    /// As [`new`](Semaphore::new), with this handle's permits lasting
    /// `lease` without a renewal (renewed every `lease / 3`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::with_lease(server.url().as_str(), "s", 1, Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_lease(
        target: impl IntoTarget,
        name: &str,
        value: u64,
        lease: Duration,
    ) -> Result<Semaphore> {
        let conn = Conn::open(target)?;
        let key = key("semaphore", name)?;
        let sem = Semaphore {
            conn,
            name: name.to_string(),
            limit_key: format!("{key}:limit"),
            key,
            lease: lease.max(Duration::from_millis(30)),
            held: Mutex::new(Vec::new()),
        };
        let old: Option<u64> = sem.conn.idem("setting the semaphore's value", |c| {
            redis::cmd("SET")
                .arg(&sem.limit_key)
                .arg(value)
                .arg("NX")
                .arg("GET")
                .query(c)
        })?;
        match old {
            Some(old) if old != value => Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "semaphore {name:?} exists with {old} permits, not {value} (redis at {})",
                    sem.conn.addr()
                ),
            )),
            _ => Ok(sem),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Permit>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        held.retain(|p| p.pid == pid);
        held
    }

    fn try_once(&self) -> Result<bool> {
        let id = holder_id();
        let got: i64 = self.conn.call("acquiring a permit", |c| {
            script(ACQUIRE)
                .key(&self.key)
                .key(&self.limit_key)
                .arg(&id)
                .arg(millis(self.lease))
                .invoke(c)
        })?;
        if got == 0 {
            return Ok(false);
        }
        let (key, member, lease_ms) = (self.key.clone(), id.clone(), millis(self.lease));
        let keeper = Keeper::start(self.conn.clone(), self.lease, move |c| {
            let renewed: i64 = script(RENEW)
                .key(&key)
                .arg(&member)
                .arg(lease_ms)
                .invoke(c)?;
            Ok(renewed == 1)
        });
        self.held().push(Permit {
            id,
            keeper,
            pid: std::process::id(),
        });
        Ok(true)
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut backoff = Backoff::new();
        loop {
            match self.try_once() {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                // Stopped and continued mid-call: a miss (a permit taken
                // without its answer lapses after one lease).
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if !backoff.sleep(deadline) {
                return Ok(false);
            }
        }
    }

    /// Takes a permit, waiting while none is free (polling, 1 ms growing
    /// to 50 ms).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 1)?;
    /// s.acquire()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_until(None).map(drop)
    }

    /// Takes a permit, waiting at most `timeout`: whether it got one.
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 1)?;
    /// assert!(s.acquire_timeout(Duration::from_millis(10))?);
    /// assert!(!s.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_until(deadline(timeout))
    }

    /// Takes a permit if one is free now.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 1)?;
    /// assert!(s.try_acquire()?);
    /// assert!(!s.try_acquire()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.try_once()
    }

    /// Returns this handle's most recent permit. An error when it holds
    /// none, and when the permit's lease had lapsed (it was already back).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 1)?;
    /// assert!(s.release().is_err());
    /// s.acquire()?;
    /// s.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        let Some(Permit { id, keeper, .. }) = self.held().pop() else {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "semaphore {:?} released too many times: this handle holds no permit",
                    self.name
                ),
            ));
        };
        drop(keeper);
        let live: i64 = self.conn.call("releasing a permit", |c| {
            script(RELEASE).key(&self.key).arg(&id).invoke(c)
        })?;
        if live == 1 {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "semaphore {:?}: the permit's lease lapsed before its release \
                     (the holder stalled or lost Redis for longer than {:?})",
                    self.name, self.lease
                ),
            ))
        }
    }

    /// Permits free now (the bound less the live permits).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 2)?;
    /// assert_eq!(s.value()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn value(&self) -> Result<u64> {
        let v: i64 = self.conn.idem("reading the semaphore", |c| {
            script(VALUE).key(&self.key).key(&self.limit_key).invoke(c)
        })?;
        Ok(v.max(0) as u64)
    }

    /// How many permits this handle holds.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let s = brood_redis::objects::Semaphore::new(server.url().as_str(), "s", 2)?;
    /// s.acquire()?;
    /// assert_eq!(s.held_permits(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn held_permits(&self) -> usize {
        self.held().len()
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // Each release pops a permit, whatever Redis answers.
        while !self.held().is_empty() {
            let _ = self.release();
        }
    }
}
