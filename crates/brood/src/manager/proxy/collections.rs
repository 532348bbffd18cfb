//! Data proxies: map, list, namespace, value, array, queue.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Handle, dec, enc, micros, unexpected};
use crate::error::{Error, Result};
use crate::manager::protocol::{Op, Out};

typed_proxy! {
    /// A dict in the manager's server (Python's `manager.dict()`): keys and
    /// values of any serde type, stored as codec bytes. Keys are equal when
    /// their encodings are. Iteration follows insertion order, as Python's.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let scores = manager.dict::<String, u32>()?;
    /// scores.insert(&"ada".to_string(), &3)?;
    /// let mut p = brood::Process::with_args(
    ///     |m: brood::manager::ManagedMap<String, u32>| m.insert(&"bob".into(), &5).unwrap(),
    ///     scores.clone(),
    /// );
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(scores.items()?, [("ada".to_string(), 3), ("bob".to_string(), 5)]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedMap<K, V>
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> ManagedMap<K, V> {
    /// The value for `key`, if any.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// assert_eq!(m.get(&1)?, None);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.handle.item(Op::MapGet(enc(key)?))
    }

    /// Sets `key` to `value`, returning the old value.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// assert_eq!(m.insert(&1, &10)?, None);
    /// assert_eq!(m.insert(&1, &11)?, Some(10));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        self.handle.item(Op::MapInsert(enc(key)?, enc(value)?))
    }

    /// Removes `key`, returning its value.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.insert(&1, &10)?;
    /// assert_eq!(m.remove(&1)?, Some(10));
    /// assert_eq!(m.remove(&1)?, None);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        self.handle.item(Op::MapRemove(enc(key)?))
    }

    /// Whether `key` is there (Python's `key in d`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.insert(&1, &10)?;
    /// assert!(m.contains_key(&1)? && !m.contains_key(&2)?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.handle.flag(Op::MapContains(enc(key)?))
    }

    /// How many entries.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.update([(1, 1), (2, 2)])?;
    /// assert_eq!(m.len()?, 2);
    /// assert!(!m.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.handle.count(Op::MapLen).map(|n| n as usize)
    }

    /// Whether it has no entries.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.dict::<u8, u8>()?.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.update([(2, 0), (1, 0)])?;
    /// assert_eq!(m.keys()?, [2, 1]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        self.handle.items(Op::MapKeys)
    }

    /// The values, in insertion order of their keys.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.update([(2, 20), (1, 10)])?;
    /// assert_eq!(m.values()?, [20, 10]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        self.handle.items(Op::MapValues)
    }

    /// The entries, in insertion order (a snapshot).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.insert(&1, &10)?;
    /// assert_eq!(m.items()?, [(1, 10)]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.handle.call(Op::MapItems)? {
            Out::Pairs(pairs) => pairs.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes every entry.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<u8, u8>()?;
    /// m.insert(&1, &10)?;
    /// m.clear()?;
    /// assert!(m.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::MapClear)
    }

    /// Inserts every pair in one request (Python's `d.update(...)`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let m = manager.dict::<String, i32>()?;
    /// m.update([("a".to_string(), 1), ("b".to_string(), 2)])?;
    /// assert_eq!(m.get(&"b".to_string())?, Some(2));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.handle.unit(Op::MapUpdate(pairs))
    }
}

typed_proxy! {
    /// A list in the manager's server (Python's `manager.list()`). Indexes
    /// may be negative, counting from the end, as in Python.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<i32>()?;
    /// l.extend([1, 2, 3])?;
    /// assert_eq!(l.get(-1)?, 3);
    /// assert_eq!(l.to_vec()?, [1, 2, 3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedList<T>
}

impl<T: Serialize + DeserializeOwned> ManagedList<T> {
    /// Appends `item` (Python's `append`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.push(&7)?;
    /// assert_eq!(l.len()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn push(&self, item: &T) -> Result<()> {
        self.handle.unit(Op::ListPush(enc(item)?))
    }

    /// Appends every item, in one request.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.to_vec()?, [1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items = items.into_iter().map(|i| enc(&i)).collect::<Result<_>>()?;
        self.handle.unit(Op::ListExtend(items))
    }

    /// The item at `index` (negative: from the end); out of range is an
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) error (Python's `IndexError`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.get(0)?, 1);
    /// assert!(l.get(5).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self, index: i64) -> Result<T> {
        self.handle
            .item(Op::ListGet(index))?
            .ok_or_else(|| Error::invalid("list index out of range"))
    }

    /// Replaces the item at `index`.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.push(&1)?;
    /// l.set(0, &9)?;
    /// assert_eq!(l.get(0)?, 9);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, index: i64, item: &T) -> Result<()> {
        self.handle.unit(Op::ListSet(index, enc(item)?))
    }

    /// Inserts `item` before `index` (clamped, as Python's `insert`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.extend([1, 3])?;
    /// l.insert(1, &2)?;
    /// assert_eq!(l.to_vec()?, [1, 2, 3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn insert(&self, index: i64, item: &T) -> Result<()> {
        self.handle.unit(Op::ListInsert(index, enc(item)?))
    }

    /// Removes and returns the last item (`None` when empty).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.push(&1)?;
    /// assert_eq!(l.pop()?, Some(1));
    /// assert_eq!(l.pop()?, None);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn pop(&self) -> Result<Option<T>> {
        self.handle.item(Op::ListPop(None))
    }

    /// Removes and returns the item at `index`.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.remove(0)?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn remove(&self, index: i64) -> Result<T> {
        self.handle
            .item(Op::ListPop(Some(index)))?
            .ok_or_else(|| Error::invalid("pop from an empty list"))
    }

    /// How many items.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.list::<u8>()?.len()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.handle.count(Op::ListLen).map(|n| n as usize)
    }

    /// Whether it has no items.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.list::<u8>()?.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of every item.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<String>()?;
    /// l.push(&"x".into())?;
    /// assert_eq!(l.to_vec()?, ["x"]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.handle.items(Op::ListItems)
    }

    /// Removes every item.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let l = manager.list::<u8>()?;
    /// l.push(&1)?;
    /// l.clear()?;
    /// assert!(l.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::ListClear)
    }
}

typed_proxy! {
    /// Named fields in the manager's server (Python's `manager.Namespace()`),
    /// each of its own type, read and written by name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let ns = manager.namespace()?;
    /// ns.set("x", &10)?;
    /// ns.set("name", &"brood")?;
    /// assert_eq!(ns.get::<i32>("x")?, Some(10));
    /// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("brood"));
    /// assert_eq!(ns.get::<i32>("missing")?, None);
    /// # Ok::<(), brood::Error>(())
    /// ```
    Namespace
}

impl Namespace {
    /// The field `name`, decoded as `T` (`None` if it is not set).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let ns = manager.namespace()?;
    /// assert_eq!(ns.get::<u8>("y")?, None);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.handle.item(Op::MapGet(enc(name)?))
    }

    /// Sets the field `name`.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let ns = manager.namespace()?;
    /// ns.set("y", &1.5f64)?;
    /// assert_eq!(ns.get::<f64>("y")?, Some(1.5));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.handle
            .item::<serde::de::IgnoredAny>(Op::MapInsert(enc(name)?, enc(value)?))
            .map(drop)
    }

    /// Removes the field `name`; whether it was set.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let ns = manager.namespace()?;
    /// ns.set("y", &1)?;
    /// assert!(ns.remove("y")?);
    /// assert!(!ns.remove("y")?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.handle
            .item::<serde::de::IgnoredAny>(Op::MapRemove(enc(name)?))
            .map(|old| old.is_some())
    }

    /// The names of the fields set, in the order they were first set.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let ns = manager.namespace()?;
    /// ns.set("b", &1)?;
    /// ns.set("a", &2)?;
    /// assert_eq!(ns.names()?, ["b", "a"]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn names(&self) -> Result<Vec<String>> {
        self.handle.items(Op::MapKeys)
    }
}

typed_proxy! {
    /// One value in the manager's server (Python's `manager.Value(typecode,
    /// value)`, any serde type).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let v = manager.value(&1.5f64)?;
    /// v.set(&2.5)?;
    /// assert_eq!(v.get()?, 2.5);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedValue<T>
}

impl<T: Serialize + DeserializeOwned> ManagedValue<T> {
    /// The value.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let v = manager.value(&"hi".to_string())?;
    /// assert_eq!(v.get()?, "hi");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.handle
            .item(Op::ValueGet)?
            .ok_or_else(|| unexpected(&Out::Item(None)))
    }

    /// Replaces the value.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let v = manager.value(&1u8)?;
    /// v.set(&2)?;
    /// assert_eq!(v.get()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, value: &T) -> Result<()> {
        self.handle.unit(Op::ValueSet(enc(value)?))
    }
}

typed_proxy! {
    /// A FIFO queue in the manager's server (Python's `manager.Queue()` and
    /// `manager.JoinableQueue()`), which unlike a plain pipe queue works
    /// with pools. A joinable queue remembers which client took each item
    /// until it calls [`task_done`](ManagedQueue::task_done): items taken
    /// by a client that died are listed by
    /// [`abandoned`](ManagedQueue::abandoned) and no longer block
    /// [`join`](ManagedQueue::join).
    ///
    /// A plain queue (`manager.queue(maxsize)`) is a shared-memory ring
    /// (brood's [`Queue`](crate::Queue)) that the server keeps: a proxy in
    /// a process on the server's host maps it (once, on its first call)
    /// and puts and gets on it itself, with no round trip to the server
    /// (it only checks, with one non-blocking `recv` on its socket to the
    /// server at most once per tick of the coarse clock, that the server
    /// is still there); clients on other hosts go
    /// through the server, which serves them from the same ring. It holds
    /// at most 1 GiB of encoded items at a time (a put waits for room
    /// beyond that, as on a full bounded queue).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<String>(0)?;
    /// let mut p = brood::Process::with_args(
    ///     |q: brood::manager::ManagedQueue<String>| q.put(&"from the child".into()).unwrap(),
    ///     q.clone(),
    /// );
    /// p.start()?;
    /// assert_eq!(q.get()?, "from the child");
    /// p.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedQueue<T>
}

impl<T: Serialize + DeserializeOwned> ManagedQueue<T> {
    /// Appends `item`, waiting while a bounded queue is full.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u8>(0)?;
    /// q.put(&1)?;
    /// assert_eq!(q.qsize()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put(&self, item: &T) -> Result<()> {
        if let Some(ring) = self.handle.ring()? {
            return self.handle.ring_put(ring, enc(item)?, None);
        }
        self.handle.unit(Op::Put(enc(item)?, None))
    }

    /// Like [`put`](ManagedQueue::put), waiting at most `timeout` for room
    /// ([`ErrorKind::Timeout`](crate::ErrorKind::Timeout) otherwise: Python's `queue.Full`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u8>(1)?;
    /// q.put(&1)?;
    /// assert!(q.put_timeout(&2, Duration::from_millis(5)).unwrap_err().is_timeout());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        if let Some(ring) = self.handle.ring()? {
            return self.handle.ring_put(ring, enc(item)?, Some(timeout));
        }
        self.handle.unit(Op::Put(enc(item)?, micros(timeout)))
    }

    /// Appends `item` without waiting for the server's answer. It never
    /// waits for room: on a full bounded queue the item is refused.
    ///
    /// On the server's host (where the proxy puts on the queue's shared
    /// ring itself, see [`ManagedQueue`]) this is a put refused when the
    /// queue is full at the call: the item is in the queue when the call
    /// returns, and a refusal is this call's
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error.
    /// From another host the request is pipelined (no round trip): later
    /// calls of this thread to the same server run after it, in order; a
    /// refused or failed pipelined put is reported by this thread's next
    /// call to that server (which is then not run: an error saying so),
    /// and pipelined puts after a failed one are dropped; another process
    /// sees the item once the server has read it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u32>(2)?;
    /// q.put_pipelined(&0)?;
    /// q.put_pipelined(&1)?;
    /// // The third does not fit: refused (here at once; from another
    /// // host, by the thread's next call).
    /// let refused = q.put_pipelined(&2).and_then(|()| q.qsize().map(drop));
    /// assert!(refused.is_err());
    /// assert_eq!(q.qsize()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put_pipelined(&self, item: &T) -> Result<()> {
        if let Some(ring) = self.handle.ring()? {
            // Refused when full at the call; otherwise a put (waiting for
            // the ring's lock, which a producer holds only for a copy: a
            // zero-timeout put would take a holder preempted on a busy
            // CPU for a full queue).
            if ring.queue.is_full() {
                return Err(crate::Error::timeout("the managed queue is full"));
            }
            return self.handle.ring_put(ring, enc(item)?, None);
        }
        self.handle.quiet(Op::Put(enc(item)?, Some(0)))
    }

    /// Appends every item in one request (one round trip for all: what a
    /// master filling a task queue wants), waiting for room as
    /// [`put`](ManagedQueue::put) does.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u32>(0)?;
    /// q.put_many(0..1000)?;
    /// assert_eq!(q.qsize()?, 1000);
    /// assert_eq!(q.get()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put_many(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        if let Some(ring) = self.handle.ring()? {
            for item in items {
                self.handle.ring_put(ring, enc(&item)?, None)?;
            }
            return Ok(());
        }
        let items = items.into_iter().map(|i| enc(&i)).collect::<Result<_>>()?;
        self.handle.unit(Op::PutMany(items))
    }

    /// Takes the oldest item, waiting for one.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u8>(0)?;
    /// q.put(&1)?;
    /// assert_eq!(q.get()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_inner(None)
    }

    /// Takes the oldest item, waiting at most `timeout`
    /// ([`ErrorKind::Timeout`](crate::ErrorKind::Timeout) otherwise: Python's `queue.Empty`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u8>(0)?;
    /// assert!(q.get_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_inner(Some(timeout))
    }

    fn get_inner(&self, timeout: Option<Duration>) -> Result<T> {
        if let Some(ring) = self.handle.ring()? {
            return dec(&self.handle.ring_get(ring, timeout)?);
        }
        let timeout = timeout.and_then(micros);
        self.handle
            .item(Op::Get(timeout))?
            .ok_or_else(|| unexpected(&Out::Item(None)))
    }

    /// How many items wait.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.queue::<u8>(0)?.qsize()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        if let Some(ring) = self.handle.ring()? {
            if !ring.server_alive() {
                return Err(self.handle.server_gone());
            }
            return Ok(ring.queue.qsize());
        }
        self.handle.count(Op::Qsize).map(|n| n as usize)
    }

    /// Whether no item waits.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.queue::<u8>(0)?.empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Marks one item this client took as done (joinable queues only).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let q = manager.joinable_queue::<u8>(0)?;
    /// q.put(&1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?;
    /// assert!(q.task_done().is_err()); // too many times
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.handle.unit(Op::TaskDone)
    }

    /// Waits until every item put was taken and marked done (or abandoned
    /// by a client that died).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.joinable_queue::<u8>(0)?.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.handle.flag(Op::Join(None)).map(drop)
    }

    /// Like [`join`](ManagedQueue::join), waiting at most `timeout`; whether
    /// everything is done.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let q = manager.joinable_queue::<u8>(0)?;
    /// q.put(&1)?;
    /// assert!(!q.join_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::Join(micros(timeout)))
    }

    /// Items taken by clients that ended before marking them done, oldest
    /// first (joinable queues; always empty for a plain queue).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.joinable_queue::<u8>(0)?.abandoned()?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn abandoned(&self) -> Result<Vec<T>> {
        self.handle.items(Op::Abandoned)
    }
}

typed_proxy! {
    /// A fixed-length array in the manager's server (Python's
    /// `manager.Array(typecode, seq)`, any serde type): read and write by
    /// index, no growing or shrinking.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let a = manager.array(&[0i32; 4])?;
    /// a.set(2, &7)?;
    /// assert_eq!(a.to_vec()?, [0, 0, 7, 0]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedArray<T>
}

impl<T: Serialize + DeserializeOwned> ManagedArray<T> {
    /// The item at `index` (negative: from the end).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let a = manager.array(&[1u8, 2])?;
    /// assert_eq!(a.get(-1)?, 2);
    /// assert!(a.get(2).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self, index: i64) -> Result<T> {
        self.handle
            .item(Op::ListGet(index))?
            .ok_or_else(|| Error::invalid("array index out of range"))
    }

    /// Replaces the item at `index`.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let a = manager.array(&[1u8])?;
    /// a.set(0, &5)?;
    /// assert_eq!(a.get(0)?, 5);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, index: i64, item: &T) -> Result<()> {
        self.handle.unit(Op::ListSet(index, enc(item)?))
    }

    /// Its length.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.array(&[1u8, 2, 3])?.len()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.handle.count(Op::ListLen).map(|n| n as usize)
    }

    /// Whether it has length 0.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.array::<u8>(&[])?.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of every item.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.array(&["a".to_string()])?.to_vec()?, ["a"]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.handle.items(Op::ListItems)
    }
}
