//! The client side: one [`Server`] per (address, instance) in this process,
//! holding a pool of authenticated connections, and the typed proxies.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::protocol::{Bytes, Create, Hello, Kind, Micros, Op, Out, Reply, Request, Welcome};
use super::server::HANDSHAKE_TIMEOUT;
use crate::codec;
use crate::connection::{self, Address, Client, Connection};
use crate::error::{Error, ErrorKind, Result};

/// How long a failed call may spend finding out whether the server was
/// restarted (rather than gone).
const DIAGNOSE: Duration = Duration::from_millis(500);

/// The client's view of one server.
pub(crate) struct Server {
    pub(crate) address: Address,
    key: Vec<u8>,
    pub(crate) instance: u64,
    /// Idle connections, with the pid that opened them (a forked child
    /// must not share its parent's).
    pool: Mutex<(u32, Vec<Connection>)>,
}

type ServerKey = (String, u64);

static SERVERS: Mutex<Option<HashMap<ServerKey, Arc<Server>>>> = Mutex::new(None);
static KEYS: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);
static SESSION: Mutex<(u32, u64)> = Mutex::new((0, 0));

/// This process's session id (a fresh one in a forked child).
fn session() -> Result<u64> {
    let mut s = SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if s.0 != pid {
        let mut random = [0u8; 8];
        connection::fill_random(&mut random)?;
        *s = (pid, u64::from_le_bytes(random));
    }
    Ok(s.1)
}

/// A number naming the calling thread (an RLock's owner is a session and
/// a thread).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! { static ME: Cell<u64> = const { Cell::new(0) }; }
    ME.with(|me| {
        if me.get() == 0 {
            me.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        me.get()
    })
}

/// Remembers the key for `address` (used to decode proxies for it).
pub(crate) fn remember_key(address: &Address, key: &[u8]) {
    KEYS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(address.to_string(), key.to_vec());
}

fn key_for(address: &str) -> Vec<u8> {
    KEYS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|keys| keys.get(address).cloned())
        .unwrap_or_else(crate::authkey)
}

impl Server {
    /// Connects once to learn the server's instance and registers it.
    pub(crate) fn connect(address: &Address, key: &[u8]) -> Result<Arc<Server>> {
        remember_key(address, key);
        let (conn, instance) = open(address, key, None, HANDSHAKE_TIMEOUT)?;
        let server = Server::lookup(address.to_string(), instance, address.clone(), key.to_vec());
        server.checkin(conn);
        Ok(server)
    }

    fn lookup(name: String, instance: u64, address: Address, key: Vec<u8>) -> Arc<Server> {
        let mut servers = SERVERS.lock().unwrap_or_else(|p| p.into_inner());
        servers
            .get_or_insert_with(HashMap::new)
            .entry((name, instance))
            .or_insert_with(|| {
                Arc::new(Server {
                    address,
                    key,
                    instance,
                    pool: Mutex::new((std::process::id(), Vec::new())),
                })
            })
            .clone()
    }

    fn checkout(&self) -> Result<Connection> {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.0 != std::process::id() {
                // Inherited through fork: the parent's connections, not ours.
                pool.1.clear();
                pool.0 = std::process::id();
            }
            if let Some(conn) = pool.1.pop() {
                return Ok(conn);
            }
        }
        Ok(open(
            &self.address,
            &self.key,
            Some(self.instance),
            HANDSHAKE_TIMEOUT,
        )?
        .0)
    }

    fn checkin(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.0 == std::process::id() {
            pool.1.push(conn);
        }
    }

    /// One request, one reply.
    pub(crate) fn call(&self, object: u64, op: Op) -> Result<Out> {
        let mut conn = self.checkout()?;
        let reply = conn
            .send(&Request { object, op })
            .and_then(|()| conn.recv::<Reply>());
        match reply {
            Ok(reply) => {
                self.checkin(conn);
                reply.map_err(Error::from)
            }
            // A request that cannot be encoded never left: the connection is fine.
            Err(e) if e.kind() == ErrorKind::Codec && !conn.closed() => {
                self.checkin(conn);
                Err(e)
            }
            Err(e) => {
                // Tell a restarted server from a dead one (the request is
                // not sent again: it may have been applied).
                match open(&self.address, &self.key, Some(self.instance), DIAGNOSE) {
                    Err(restarted) if restarted.kind() == ErrorKind::InvalidState => Err(restarted),
                    _ => Err(Error::simple(
                        ErrorKind::Closed,
                        format!("lost the manager server at {}: {e}", self.address),
                    )),
                }
            }
        }
    }

    pub(crate) fn create(self: &Arc<Self>, how: Create, name: Option<&str>) -> Result<Handle> {
        match self.call(0, Op::Create(how, name.map(str::to_string)))? {
            Out::Created(id, kind) => Ok(Handle {
                server: self.clone(),
                id,
                kind,
            }),
            other => Err(unexpected(&other)),
        }
    }
}

/// Opens an authenticated connection; with `expect`, checks the server is
/// still the instance the proxies were made for.
fn open(
    address: &Address,
    key: &[u8],
    expect: Option<u64>,
    timeout: Duration,
) -> Result<(Connection, u64)> {
    let mut conn = Client::connect_timeout(address, Some(key), timeout).map_err(|e| {
        let kind = match e.kind() {
            ErrorKind::Auth => ErrorKind::Auth,
            _ => ErrorKind::Closed,
        };
        Error::simple(
            kind,
            format!("cannot reach the manager server at {address}: {e}"),
        )
    })?;
    conn.send(&Hello {
        session: session()?,
    })?;
    let welcome: Welcome = conn.recv_timeout(timeout).map_err(|e| {
        Error::simple(
            ErrorKind::Closed,
            format!("the manager server at {address} did not answer: {e}"),
        )
    })?;
    if let Some(instance) = expect
        && instance != welcome.instance
    {
        return Err(Error::invalid(format!(
            "the manager server at {address} was restarted; proxies made before are stale \
             (make new ones from a new Manager::connect)"
        )));
    }
    Ok((conn, welcome.instance))
}

fn unexpected(out: &Out) -> Error {
    Error::simple(
        ErrorKind::Codec,
        format!("unexpected reply from the manager server: {out:?}"),
    )
}

fn enc<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    codec::encode(value).map(Bytes::from)
}

fn dec<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    codec::decode(bytes)
}

fn micros(timeout: Duration) -> Micros {
    crate::time::deadline(timeout).map(|_| u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX))
}

/// A reference to one object on one server: what every proxy holds, and
/// what crosses to other processes: `(address, instance, id, kind)`, never
/// the key.
#[derive(Clone)]
pub(crate) struct Handle {
    server: Arc<Server>,
    id: u64,
    kind: Kind,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    address: String,
    instance: u64,
    id: u64,
    kind: Kind,
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Wire {
            address: self.server.address.to_string(),
            instance: self.server.instance,
            id: self.id,
            kind: self.kind,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Handle, D::Error> {
        let wire = Wire::deserialize(d)?;
        let address: Address = wire.address.parse().map_err(serde::de::Error::custom)?;
        let key = key_for(&wire.address);
        Ok(Handle {
            server: Server::lookup(wire.address, wire.instance, address, key),
            id: wire.id,
            kind: wire.kind,
        })
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} #{} at {}", self.kind, self.id, self.server.address)
    }
}

impl Handle {
    fn call(&self, op: Op) -> Result<Out> {
        self.server.call(self.id, op)
    }
    fn unit(&self, op: Op) -> Result<()> {
        match self.call(op)? {
            Out::Unit => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
    fn flag(&self, op: Op) -> Result<bool> {
        match self.call(op)? {
            Out::Bool(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }
    fn count(&self, op: Op) -> Result<u64> {
        match self.call(op)? {
            Out::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }
    fn item<T: DeserializeOwned>(&self, op: Op) -> Result<Option<T>> {
        match self.call(op)? {
            Out::Item(item) => item.as_ref().map(dec).transpose(),
            other => Err(unexpected(&other)),
        }
    }
    fn items<T: DeserializeOwned>(&self, op: Op) -> Result<Vec<T>> {
        match self.call(op)? {
            Out::Items(items) => items.iter().map(dec).collect(),
            other => Err(unexpected(&other)),
        }
    }
}

macro_rules! typed_proxy {
    ($(#[$meta:meta])* $name:ident<$($t:ident),+>) => {
        $(#[$meta])*
        pub struct $name<$($t),+> {
            handle: Handle,
            _types: PhantomData<fn() -> ($($t,)+)>,
        }

        impl<$($t),+> $name<$($t),+> {
            pub(crate) fn from_handle(handle: Handle) -> Self {
                $name { handle, _types: PhantomData }
            }
        }

        impl<$($t),+> Clone for $name<$($t),+> {
            fn clone(&self) -> Self {
                Self::from_handle(self.handle.clone())
            }
        }

        impl<$($t),+> fmt::Debug for $name<$($t),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.handle)
            }
        }

        impl<$($t),+> Serialize for $name<$($t),+> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.handle.serialize(s)
            }
        }

        impl<'de, $($t),+> Deserialize<'de> for $name<$($t),+> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Handle::deserialize(d).map(Self::from_handle)
            }
        }
    };
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name {
            handle: Handle,
        }

        impl $name {
            pub(crate) fn from_handle(handle: Handle) -> Self {
                $name { handle }
            }
        }
    };
}

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
    /// [`ErrorKind::InvalidState`] error (Python's `IndexError`).
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
    /// A lock in the manager's server (`manager.lock()` is Python's
    /// `Lock`, `manager.rlock()` its `RLock`: reentrant, released only by
    /// the thread that holds it). Unlike Python, the lock is a **lease**:
    /// when the process holding it dies or disconnects, the server releases
    /// it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// {
    ///     let _guard = lock.lock()?;
    ///     assert!(lock.locked()?);
    ///     assert!(!lock.try_acquire()?);
    /// }
    /// assert!(!lock.locked()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedLock
}

impl ManagedLock {
    /// Waits for the lock and takes it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.rlock()?;
    /// lock.acquire()?;
    /// lock.acquire()?; // reentrant
    /// lock.release()?;
    /// lock.release()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_inner(None).map(drop)
    }

    /// Waits at most `timeout`; whether it took the lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// assert!(lock.acquire_timeout(Duration::from_millis(10))?);
    /// assert!(!lock.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_inner(micros(timeout))
    }

    /// Takes the lock if it is free, without waiting.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.lock()?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_inner(Some(0))
    }

    fn acquire_inner(&self, timeout: Micros) -> Result<bool> {
        self.handle.flag(Op::Acquire {
            thread: thread_token(),
            timeout,
        })
    }

    /// Releases the lock; an unlocked lock (or an RLock held by another
    /// thread) is an [`ErrorKind::InvalidState`] error.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.handle.unit(Op::Release {
            thread: thread_token(),
        })
    }

    /// Whether someone holds it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.lock()?.locked()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn locked(&self) -> Result<bool> {
        self.handle.flag(Op::Locked)
    }

    /// Acquires and returns a guard that releases on drop.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let lock = manager.lock()?;
    /// drop(lock.lock()?);
    /// assert!(!lock.locked()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ManagedLockGuard<'_>> {
        self.acquire()?;
        Ok(ManagedLockGuard { lock: self })
    }
}

/// Releases a [`ManagedLock`] when dropped (an error releasing is ignored:
/// the server releases the lease of a client it lost anyway).
///
/// ```
/// let manager = brood::Manager::start()?;
/// let lock = manager.lock()?;
/// let guard = lock.lock()?;
/// drop(guard);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug)]
pub struct ManagedLockGuard<'a> {
    lock: &'a ManagedLock,
}

impl Drop for ManagedLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

typed_proxy! {
    /// An event in the manager's server (Python's `manager.Event()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?);
    /// e.set()?;
    /// assert!(e.is_set()? && e.wait_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedEvent
}

impl ManagedEvent {
    /// Sets the flag, waking every waiter.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// e.set()?;
    /// e.wait()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self) -> Result<()> {
        self.handle.unit(Op::EventSet)
    }

    /// Clears the flag.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// e.set()?;
    /// e.clear()?;
    /// assert!(!e.is_set()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.unit(Op::EventClear)
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.event()?.is_set()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        self.handle.flag(Op::EventIsSet)
    }

    /// Waits until the flag is set.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let e = manager.event()?;
    /// let mut p = brood::Process::with_args(|e: brood::manager::ManagedEvent| e.set().unwrap(), e.clone());
    /// p.start()?;
    /// e.wait()?;
    /// p.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.handle.flag(Op::EventWait(None)).map(drop)
    }

    /// Waits at most `timeout`; whether the flag is set.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.event()?.wait_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::EventWait(micros(timeout)))
    }
}

typed_proxy! {
    /// A semaphore in the manager's server (`semaphore(n)`,
    /// `bounded_semaphore(n)`: releasing above `n` is an error). No lease:
    /// a semaphore is a counter, not an owner.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let s = manager.bounded_semaphore(1)?;
    /// s.acquire()?;
    /// assert!(!s.try_acquire()?);
    /// s.release()?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedSemaphore
}

impl ManagedSemaphore {
    /// Waits for the counter to be positive and decrements it.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let s = manager.semaphore(2)?;
    /// s.acquire()?;
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.handle.flag(Op::SemAcquire(None)).map(drop)
    }

    /// Waits at most `timeout`; whether it decremented.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let s = manager.semaphore(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(5))?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.flag(Op::SemAcquire(micros(timeout)))
    }

    /// Decrements if positive, without waiting.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.semaphore(1)?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.handle.flag(Op::SemAcquire(Some(0)))
    }

    /// Increments (a bounded semaphore refuses to go above its start).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let s = manager.semaphore(0)?;
    /// s.release()?;
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.handle.unit(Op::SemRelease)
    }

    /// The counter now.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.semaphore(3)?.value()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn value(&self) -> Result<u64> {
        self.handle.count(Op::SemValue)
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
        self.handle.unit(Op::Put(enc(item)?, None))
    }

    /// Like [`put`](ManagedQueue::put), waiting at most `timeout` for room
    /// ([`ErrorKind::Timeout`] otherwise: Python's `queue.Full`).
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
        self.handle.unit(Op::Put(enc(item)?, micros(timeout)))
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
    /// ([`ErrorKind::Timeout`] otherwise: Python's `queue.Empty`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let q = manager.queue::<u8>(0)?;
    /// assert!(q.get_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_inner(micros(timeout))
    }

    fn get_inner(&self, timeout: Micros) -> Result<T> {
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
    /// A barrier in the manager's server (Python's `manager.Barrier(n)`).
    /// A waiter that times out or whose client leaves breaks it for all.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// let mut p = brood::Process::with_args(|b: brood::manager::ManagedBarrier| b.wait().unwrap(), b.clone());
    /// p.start()?;
    /// b.wait()?;
    /// p.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    ManagedBarrier
}

impl ManagedBarrier {
    /// Waits until `parties` clients wait; returns this one's arrival index.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(1)?.wait()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u64> {
        self.handle.count(Op::BarrierWait(None))
    }

    /// Like [`wait`](ManagedBarrier::wait), breaking the barrier
    /// ([`ErrorKind::BrokenBarrier`]) after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// let e = b.wait_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(e.kind(), brood::ErrorKind::BrokenBarrier);
    /// assert!(b.broken()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.handle.count(Op::BarrierWait(micros(timeout)))
    }

    /// Breaks the barrier: waiters and later `wait`s fail.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// b.abort()?;
    /// assert!(b.wait().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        self.handle.unit(Op::BarrierAbort)
    }

    /// Back to the empty, unbroken state (current waiters fail).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let b = manager.barrier(1)?;
    /// b.abort()?;
    /// b.reset()?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        self.handle.unit(Op::BarrierReset)
    }

    fn state(&self) -> Result<(u64, u64, bool)> {
        let raw: Vec<serde_bytes::ByteBuf> = match self.handle.call(Op::BarrierState)? {
            Out::Items(items) => items,
            other => return Err(unexpected(&other)),
        };
        let num = |b: &serde_bytes::ByteBuf| {
            <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| unexpected(&Out::Unit))
        };
        match raw.as_slice() {
            [p, c, b] => Ok((num(p)?, num(c)?, b.first() == Some(&1))),
            _ => Err(unexpected(&Out::Unit)),
        }
    }

    /// How many parties it waits for.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(3)?.parties()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn parties(&self) -> Result<u64> {
        Ok(self.state()?.0)
    }

    /// How many wait now.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(3)?.n_waiting()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn n_waiting(&self) -> Result<u64> {
        Ok(self.state()?.1)
    }

    /// Whether it is broken.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.barrier(3)?.broken()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn broken(&self) -> Result<bool> {
        Ok(self.state()?.2)
    }
}
