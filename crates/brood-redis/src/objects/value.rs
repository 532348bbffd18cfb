//! `Value<T>`: one Redis string key; atomic updates by `WATCH`/`MULTI`,
//! fenced writes by a Lua script.

use std::marker::PhantomData;
use std::time::Duration;

use brood::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lock::DEFAULT_LEASE;
use super::{Conn, Error, IntoTarget, Lock, Result, dec, enc, key};

/// Writes ARGV[1] if token ARGV[2] is not older than the newest token seen
/// (KEYS[2]): -1 when written, else the newest token.
const SET_FENCED: &str = r"
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[2])
if token < newest then return newest end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
return -1
";

/// A single typed value on Redis for processes on any machine (Python's
/// `Manager().Value(typecode, v)`).
///
/// The key `brood:value:NAME` holds the value's MessagePack. `get` and
/// `set` are one command each; [`update`](Value::update) is an atomic
/// read-modify-write (optimistic: `WATCH`, read, `MULTI`/`SET`/`EXEC`,
/// again if another process wrote in between), so concurrent updates from
/// many processes lose nothing. [`set_fenced`](Value::set_fenced) takes a
/// [`Lock`]'s fencing token and refuses a write from a holder older than
/// the newest one that wrote.
///
/// ```
/// use brood_redis::objects::Value;
/// let server = brood_redis::LocalServer::start()?;
/// let hits = Value::new(server.url().as_str(), "hits", &0u64)?;
/// hits.update(|n| n + 1)?;
/// assert_eq!(hits.get()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Value<T> {
    conn: Conn,
    name: String,
    key: String,
    fence_key: String,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            conn: self.conn.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            fence_key: self.fence_key.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// Attaches to value `name`, setting it to `initial` when it does not
    /// exist yet (an existing value is kept: every process may pass the
    /// same initial value).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let url = server.url();
    /// let a = brood_redis::objects::Value::new(url.as_str(), "v", &1i32)?;
    /// a.set(&5)?;
    /// let b = brood_redis::objects::Value::new(url.as_str(), "v", &1i32)?;
    /// assert_eq!(b.get()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str, initial: &T) -> Result<Value<T>> {
        let key = key("value", name)?;
        let v = Value {
            conn: Conn::open(target)?,
            name: name.to_string(),
            fence_key: format!("{key}:fence"),
            key,
            _type: PhantomData,
        };
        let initial = enc(initial)?;
        v.conn.idem("creating the value", |c| {
            redis::cmd("SET")
                .arg(&v.key)
                .arg(&initial)
                .arg("NX")
                .query::<()>(c)
        })?;
        Ok(v)
    }

    fn decode(&self, bytes: Option<Vec<u8>>) -> Result<T> {
        match bytes {
            Some(b) => dec(&b, &format!("value {:?}", self.name)),
            None => Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "value {:?} no longer exists in redis at {} (deleted, or redis lost it)",
                    self.name,
                    self.conn.addr()
                ),
            )),
        }
    }

    /// The value now.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let v = brood_redis::objects::Value::new(server.url().as_str(), "v", &"hi".to_string())?;
    /// assert_eq!(v.get()?, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        let b: Option<Vec<u8>> = self.conn.idem("reading the value", |c| {
            redis::cmd("GET").arg(&self.key).query(c)
        })?;
        self.decode(b)
    }

    /// Replaces the value.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let v = brood_redis::objects::Value::new(server.url().as_str(), "v", &1u8)?;
    /// v.set(&2)?;
    /// assert_eq!(v.get()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, value: &T) -> Result<()> {
        let b = enc(value)?;
        self.conn.idem("writing the value", |c| {
            redis::cmd("SET").arg(&self.key).arg(&b).query::<()>(c)
        })
    }

    /// Applies `f` to the value atomically and returns the new value: no
    /// other write lands between the read and the write (when one does, the
    /// transaction aborts and `f` runs again on the newer value, so `f`
    /// may run more than once and should have no side effects).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let v = brood_redis::objects::Value::new(server.url().as_str(), "v", &vec![1u8])?;
    /// assert_eq!(v.update(|mut xs| { xs.push(2); xs })?, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(&self, mut f: impl FnMut(T) -> T) -> Result<T> {
        loop {
            let attempt: Result<Option<T>> = self.conn.call("updating the value", |c| {
                redis::cmd("WATCH").arg(&self.key).query::<()>(c)?;
                let now: Option<Vec<u8>> = redis::cmd("GET").arg(&self.key).query(c)?;
                let new = match self.decode(now).and_then(|v| {
                    let new = f(v);
                    enc(&new).map(|b| (new, b))
                }) {
                    Ok(new) => new,
                    Err(e) => {
                        redis::cmd("UNWATCH").query::<()>(c)?;
                        return Ok(Err(e));
                    }
                };
                let done: Option<()> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&self.key)
                    .arg(&new.1)
                    .ignore()
                    .query(c)?;
                Ok(Ok(done.map(|()| new.0)))
            })?;
            if let Some(v) = attempt? {
                return Ok(v);
            }
        }
    }

    /// Replaces the value on behalf of the holder of fencing token `token`
    /// (from [`Lock::token`] or a [`LockGuard`](super::LockGuard)): refused
    /// with an [`ErrorKind::InvalidState`] error when a newer token already
    /// wrote, i.e. when this writer's lock lease lapsed and someone else
    /// took the lock since.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let v = brood_redis::objects::Value::new(server.url().as_str(), "v", &0u32)?;
    /// v.set_fenced(&1, 7)?;
    /// assert!(v.set_fenced(&2, 6).is_err());
    /// assert_eq!(v.get()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_fenced(&self, value: &T, token: u64) -> Result<()> {
        let b = enc(value)?;
        let newest: i64 = self.conn.call("writing the value (fenced)", |c| {
            redis::Script::new(SET_FENCED)
                .key(&self.key)
                .key(&self.fence_key)
                .arg(&b)
                .arg(token)
                .invoke(c)
        })?;
        if newest < 0 {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "value {:?}: stale fencing token {token} refused (token {newest} wrote since; \
                     the writer's lock lease lapsed)",
                    self.name
                ),
            ))
        }
    }

    /// A [`Lock`] that belongs with this value (Python's `get_lock()`):
    /// lock `value:NAME`, on the same Redis, with the default lease.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let v = brood_redis::objects::Value::new(server.url().as_str(), "v", &0u32)?;
    /// let lock = v.get_lock()?;
    /// let held = lock.lock()?;
    /// v.set_fenced(&(v.get()? + 1), held.token())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_lock(&self) -> Result<Lock> {
        self.get_lock_with_lease(DEFAULT_LEASE)
    }

    /// As [`get_lock`](Value::get_lock), with a lease of `lease`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = brood_redis::LocalServer::start()?;
    /// let v = brood_redis::objects::Value::new(server.url().as_str(), "v", &0u32)?;
    /// let lock = v.get_lock_with_lease(Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_lock_with_lease(&self, lease: Duration) -> Result<Lock> {
        Lock::on(self.conn.clone(), &format!("value:{}", self.name), lease)
    }
}
