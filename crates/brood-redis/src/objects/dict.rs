//! `Dict<K, V>`: a Redis hash whose fields are encoded keys.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Conn, IntoTarget, Result, dec, enc, key};

/// HGET then HSET (or HDEL when ARGV[2] is absent), atomically: the old value.
const SWAP: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return old
";

/// Marks the key and value types (Send + Sync whatever they are).
type Types<K, V> = fn(K, V) -> (K, V);

/// A dict on Redis that processes on any machine share by name (Python's
/// `Manager().dict()`).
///
/// A Redis hash `brood:dict:NAME`: each field is a key's MessagePack
/// encoding and its value the value's; keys are equal when their encodings
/// are (as in brood's `ManagedMap`). Unlike Python (and `ManagedMap`) the
/// order of `keys`/`items` is Redis's, not insertion order.
///
/// ```
/// use brood_redis::objects::Dict;
/// let server = brood_redis::LocalServer::start()?;
/// let d = Dict::<String, u32>::new(server.url().as_str(), "scores")?;
/// d.insert(&"ada".into(), &3)?;
/// assert_eq!(d.get(&"ada".into())?, Some(3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dict<K, V> {
    conn: Conn,
    name: String,
    key: String,
    swap: redis::Script,
    _types: PhantomData<Types<K, V>>,
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict {
            conn: self.conn.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            swap: self.swap.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dict")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .finish()
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    /// Attaches to dict `name` (empty when it does not exist yet).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str) -> Result<Dict<K, V>> {
        Ok(Dict {
            conn: Conn::open(target)?,
            name: name.to_string(),
            key: key("dict", name)?,
            swap: redis::Script::new(SWAP),
            _types: PhantomData,
        })
    }

    fn value(&self, bytes: Option<Vec<u8>>) -> Result<Option<V>> {
        bytes
            .map(|b| dec(&b, &format!("a value of dict {:?}", self.name)))
            .transpose()
    }

    /// The value for `key`, if any.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// assert_eq!(d.get(&1)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let field = enc(key)?;
        let v: Option<Vec<u8>> = self.conn.idem("reading the dict", |c| {
            redis::cmd("HGET").arg(&self.key).arg(&field).query(c)
        })?;
        self.value(v)
    }

    /// Sets `key` to `value`, returning the old value (atomically).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// assert_eq!(d.insert(&1, &10)?, None);
    /// assert_eq!(d.insert(&1, &11)?, Some(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        let (field, value) = (enc(key)?, enc(value)?);
        let old: Option<Vec<u8>> = self.conn.call("writing the dict", |c| {
            self.swap.key(&self.key).arg(&field).arg(&value).invoke(c)
        })?;
        self.value(old)
    }

    /// Removes `key`, returning its value (atomically).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.insert(&1, &10)?;
    /// assert_eq!(d.remove(&1)?, Some(10));
    /// assert_eq!(d.remove(&1)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let field = enc(key)?;
        let old: Option<Vec<u8>> = self.conn.call("removing from the dict", |c| {
            self.swap.key(&self.key).arg(&field).invoke(c)
        })?;
        self.value(old)
    }

    /// Sets `key` to `value` only when it has no value; the value it has
    /// afterwards (Python's `setdefault`).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// assert_eq!(d.setdefault(&1, &10)?, 10);
    /// assert_eq!(d.setdefault(&1, &99)?, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn setdefault(&self, key: &K, value: &V) -> Result<V> {
        let (field, value) = (enc(key)?, enc(value)?);
        let (_, now): (bool, Vec<u8>) = self.conn.idem("writing the dict", |c| {
            redis::pipe()
                .atomic()
                .cmd("HSETNX")
                .arg(&self.key)
                .arg(&field)
                .arg(&value)
                .cmd("HGET")
                .arg(&self.key)
                .arg(&field)
                .query(c)
        })?;
        dec(&now, &format!("a value of dict {:?}", self.name))
    }

    /// Whether `key` is there (Python's `key in d`).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.insert(&1, &10)?;
    /// assert!(d.contains_key(&1)? && !d.contains_key(&2)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let field = enc(key)?;
        self.conn.idem("reading the dict", |c| {
            redis::cmd("HEXISTS").arg(&self.key).arg(&field).query(c)
        })
    }

    /// How many entries.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.update([(1, 1), (2, 2)])?;
    /// assert_eq!(d.len()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.conn.idem("measuring the dict", |c| {
            redis::cmd("HLEN").arg(&self.key).query(c)
        })
    }

    /// Whether it has no entries.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The entries (a snapshot, in Redis's order).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.insert(&1, &10)?;
    /// assert_eq!(d.items()?, [(1, 10)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = self.conn.idem("reading the dict", |c| {
            redis::cmd("HGETALL").arg(&self.key).query(c)
        })?;
        let what = format!("an entry of dict {:?}", self.name);
        raw.into_iter()
            .map(|(k, v)| Ok((dec(&k, &what)?, dec(&v, &what)?)))
            .collect()
    }

    /// The keys (a snapshot, in Redis's order).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.insert(&1, &10)?;
    /// assert_eq!(d.keys()?, [1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        let raw: Vec<Vec<u8>> = self.conn.idem("reading the dict", |c| {
            redis::cmd("HKEYS").arg(&self.key).query(c)
        })?;
        let what = format!("a key of dict {:?}", self.name);
        raw.iter().map(|k| dec(k, &what)).collect()
    }

    /// The values (a snapshot, in Redis's order).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.insert(&1, &10)?;
    /// assert_eq!(d.values()?, [10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        let raw: Vec<Vec<u8>> = self.conn.idem("reading the dict", |c| {
            redis::cmd("HVALS").arg(&self.key).query(c)
        })?;
        let what = format!("a value of dict {:?}", self.name);
        raw.iter().map(|v| dec(v, &what)).collect()
    }

    /// Inserts every pair in one command (Python's `d.update(...)`).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<String, i32>::new(server.url().as_str(), "d")?;
    /// d.update([("a".to_string(), 1), ("b".to_string(), 2)])?;
    /// assert_eq!(d.get(&"b".to_string())?, Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.key);
        let mut any = false;
        for (k, v) in pairs {
            cmd.arg(enc(&k)?).arg(enc(&v)?);
            any = true;
        }
        if !any {
            return Ok(());
        }
        self.conn.idem("writing the dict", |c| cmd.query::<()>(c))
    }

    /// Removes every entry.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let d = brood_redis::objects::Dict::<u8, u8>::new(server.url().as_str(), "d")?;
    /// d.insert(&1, &10)?;
    /// d.clear()?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.conn.idem("clearing the dict", |c| {
            redis::cmd("DEL").arg(&self.key).query::<()>(c)
        })
    }
}
