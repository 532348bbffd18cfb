//! `List<T>`: a Redis list.

use std::marker::PhantomData;

use brood::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Conn, Error, IntoTarget, Result, dec, enc, key};

/// LSET that answers 0 for an index out of range instead of an error.
const SET: &str = r"
local n = redis.call('LLEN', KEYS[1])
local i = tonumber(ARGV[1])
if i < -n or i >= n then return 0 end
redis.call('LSET', KEYS[1], i, ARGV[2])
return 1
";

/// A list on Redis that processes on any machine share by name (Python's
/// `Manager().list()`). Indexes may be negative, counting from the end, as
/// in Python; out of range is an [`ErrorKind::InvalidState`] error
/// (Python's `IndexError`).
///
/// A Redis list `brood:list:NAME` of MessagePack items. Every call is one
/// command, atomic on its own; a read-modify-write of several calls is not
/// (hold a [`Lock`](super::Lock), as with Python's managed list).
///
/// ```
/// use brood_redis::objects::List;
/// let server = brood_redis::LocalServer::start()?;
/// let l = List::<i32>::new(server.url().as_str(), "l")?;
/// l.extend([1, 2, 3])?;
/// assert_eq!(l.get(-1)?, 3);
/// assert_eq!(l.to_vec()?, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct List<T> {
    conn: Conn,
    name: String,
    key: String,
    set: redis::Script,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List {
            conn: self.conn.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            set: self.set.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List")
            .field("name", &self.name)
            .field("redis", &self.conn.addr())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Attaches to list `name` (empty when it does not exist yet).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// assert!(l.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(target: impl IntoTarget, name: &str) -> Result<List<T>> {
        Ok(List {
            conn: Conn::open(target)?,
            name: name.to_string(),
            key: key("list", name)?,
            set: redis::Script::new(SET),
            _items: PhantomData,
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<T> {
        dec(bytes, &format!("an item of list {:?}", self.name))
    }

    /// Appends `item` (Python's `append`).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.push(&7)?;
    /// assert_eq!(l.len()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(&self, item: &T) -> Result<()> {
        let item = enc(item)?;
        self.conn.call("appending to the list", |c| {
            redis::cmd("RPUSH").arg(&self.key).arg(&item).query::<()>(c)
        })
    }

    /// Appends every item in one command (Python's `extend`).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.to_vec()?, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(&self.key);
        let mut any = false;
        for item in items {
            cmd.arg(enc(&item)?);
            any = true;
        }
        if !any {
            return Ok(());
        }
        self.conn
            .call("appending to the list", |c| cmd.query::<()>(c))
    }

    /// The item at `index` (negative: from the end).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.get(0)?, 1);
    /// assert_eq!(l.get(-1)?, 2);
    /// assert_eq!(l.get(2).unwrap_err().kind(), brood::ErrorKind::InvalidState);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, index: i64) -> Result<T> {
        let item: Option<Vec<u8>> = self.conn.idem("reading the list", |c| {
            redis::cmd("LINDEX").arg(&self.key).arg(index).query(c)
        })?;
        match item {
            Some(item) => self.decode(&item),
            None => Err(Error::new(
                ErrorKind::InvalidState,
                format!("list index {index} out of range (list {:?})", self.name),
            )),
        }
    }

    /// Replaces the item at `index` (negative: from the end).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.extend([1, 2])?;
    /// l.set(-1, &9)?;
    /// assert_eq!(l.to_vec()?, [1, 9]);
    /// assert!(l.set(5, &0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, index: i64, item: &T) -> Result<()> {
        let item = enc(item)?;
        let done: i64 = self.conn.call("writing the list", |c| {
            self.set.key(&self.key).arg(index).arg(&item).invoke(c)
        })?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "list assignment index {index} out of range (list {:?})",
                    self.name
                ),
            ))
        }
    }

    /// Removes and returns the last item (Python's `pop()`); an empty list
    /// is an [`ErrorKind::InvalidState`] error.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.push(&1)?;
    /// assert_eq!(l.pop()?, 1);
    /// assert!(l.pop().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pop(&self) -> Result<T> {
        let item: Option<Vec<u8>> = self.conn.call("popping from the list", |c| {
            redis::cmd("RPOP").arg(&self.key).query(c)
        })?;
        match item {
            Some(item) => self.decode(&item),
            None => Err(Error::new(
                ErrorKind::InvalidState,
                format!("pop from an empty list (list {:?})", self.name),
            )),
        }
    }

    /// How many items.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// assert_eq!(l.len()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.conn.idem("measuring the list", |c| {
            redis::cmd("LLEN").arg(&self.key).query(c)
        })
    }

    /// Whether it has no items.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// assert!(l.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every item, in order (a snapshot).
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.extend([3, 1])?;
    /// assert_eq!(l.to_vec()?, [3, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let raw: Vec<Vec<u8>> = self.conn.idem("reading the list", |c| {
            redis::cmd("LRANGE").arg(&self.key).arg(0).arg(-1).query(c)
        })?;
        raw.iter().map(|i| self.decode(i)).collect()
    }

    /// Removes every item.
    ///
    /// ```
    /// let server = brood_redis::LocalServer::start()?;
    /// let l = brood_redis::objects::List::<u8>::new(server.url().as_str(), "l")?;
    /// l.push(&1)?;
    /// l.clear()?;
    /// assert!(l.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.conn.idem("clearing the list", |c| {
            redis::cmd("DEL").arg(&self.key).query::<()>(c)
        })
    }
}
