//! Managers: shared objects in a server process (Python's
//! `multiprocessing.managers`), on one machine or across machines.
//!
//! [`Manager::start`] runs a server process and hands out typed proxies —
//! [`ManagedMap`], [`ManagedList`], [`Namespace`], [`ManagedValue`],
//! [`ManagedLock`] (`Lock`/`RLock`), [`ManagedEvent`], [`ManagedSemaphore`]
//! (plain or bounded), [`ManagedQueue`] (plain or joinable),
//! [`ManagedBarrier`], [`ManagedCondition`], [`ManagedArray`]. Proxies are
//! cheap to clone and cross to other processes like any brood value (as
//! `Process` arguments, inside values sent over a `Connection`); each call
//! is one request to the server.
//! [`Manager::serve`] listens on an address of your choice (TCP, a Unix
//! path, an abstract name) and [`Manager::connect`] reaches it from
//! anywhere that has the key; [`Manager::named`] finds objects by name, as
//! Python's `BaseManager.register` does for the master/worker pattern.
//!
//! ```
//! use brood::manager::{ManagedList, ManagedLock, ManagedMap};
//!
//! let manager = brood::Manager::start()?;
//! let counts = manager.dict::<String, u64>()?;
//! let log = manager.list::<u32>()?;
//! let lock = manager.lock()?;
//! let mut children = Vec::new();
//! for i in 0..3u32 {
//!     let mut p = brood::Process::with_args(
//!         |(i, counts, log, lock): (u32, ManagedMap<String, u64>, ManagedList<u32>, ManagedLock)| {
//!             let _held = lock.lock().unwrap();
//!             let n = counts.get(&"total".into()).unwrap().unwrap_or(0);
//!             counts.insert(&"total".into(), &(n + 1)).unwrap();
//!             log.push(&i).unwrap();
//!         },
//!         (i, counts.clone(), log.clone(), lock.clone()),
//!     );
//!     p.start()?;
//!     children.push(p);
//! }
//! for mut p in children {
//!     p.join()?;
//! }
//! assert_eq!(counts.get(&"total".into())?, Some(3));
//! assert_eq!(log.len()?, 3);
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! The protocol, the threat model and what happens when a client or the
//! server dies mid-request are in this module's `README.md`.

mod custom;
mod link;
mod protocol;
mod proxy;
mod registry;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::connection::{self, Address, Connection};
use crate::error::{Error, ErrorKind, Result};
use crate::process::Process;
use crate::start_method::StartMethod;
use protocol::Create;
use proxy::Server;

pub use custom::SharedObject;
#[doc(hidden)]
pub use custom::{__call, __make, __unknown_method, FromRawProxy, RawProxy, SharedType};
pub use proxy::{
    ManagedArray, ManagedBarrier, ManagedCondition, ManagedEvent, ManagedList, ManagedLock,
    ManagedLockGuard, ManagedMap, ManagedQueue, ManagedSemaphore, ManagedValue, Namespace,
    use_local_rings,
};
pub use server::{
    KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, MAX_CONNECTIONS, MAX_REQUEST,
};

/// How long `start`/`serve` wait for the server process to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A manager: the handle on a server process that holds shared objects,
/// and the factory of proxies to them.
///
/// From [`start`](Manager::start) or [`serve`](Manager::serve) it owns the
/// server (a daemon child process: stopped by [`shutdown`](Manager::shutdown)
/// or drop, and killed with its owner); from [`connect`](Manager::connect)
/// it only talks to one.
///
/// ```
/// let manager = brood::Manager::start()?;
/// let q = manager.queue::<u32>(0)?;
/// q.put(&7)?;
/// assert_eq!(q.get()?, 7);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Manager {
    server: Arc<Server>,
    process: Option<Process<()>>,
    /// The private directory of a `start`ed server's socket.
    dir: Option<PathBuf>,
    /// The process that made it: a forked child's copy stops nothing.
    owner: u32,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.server.address)
            .field("owns_server", &self.process.is_some())
            .finish()
    }
}

impl Manager {
    /// Starts a server process listening on a Unix socket in a fresh
    /// private directory, with this process's
    /// [`authkey`](crate::authkey) (which children inherit, so proxies work
    /// in them under every start method).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.address().to_string().starts_with("unix:"));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn start() -> Result<Manager> {
        Manager::start_server(None)
    }

    /// Like [`start`](Manager::start), starting the server process with
    /// `method` (the default is [`get_start_method`](crate::get_start_method)).
    ///
    /// ```
    /// let manager = brood::Manager::start_with(brood::StartMethod::Spawn)?;
    /// assert_eq!(manager.value(&1u8)?.get()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn start_with(method: StartMethod) -> Result<Manager> {
        Manager::start_server(Some(method))
    }

    fn start_server(method: Option<StartMethod>) -> Result<Manager> {
        let dir = private_dir()?;
        let started = Manager::spawn_server(
            &Address::Unix(dir.join("manager.sock")),
            &crate::authkey(),
            method,
        );
        match started {
            Ok(mut m) => {
                m.dir = Some(dir);
                Ok(m)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Starts a server process listening on `address` (TCP — port 0 picks
    /// one, see [`address`](Manager::address) —, a Unix path, or an
    /// abstract name) for clients that hold `authkey` (Python's
    /// `BaseManager(address, authkey).start()`).
    ///
    /// ```
    /// use brood::Manager;
    /// let server = Manager::serve(&"127.0.0.1:0".parse()?, b"secret")?;
    /// let tasks = server.named("tasks").queue::<u32>(0)?;
    /// tasks.put(&1)?;
    /// let client = Manager::connect(server.address(), b"secret")?;
    /// assert_eq!(client.named("tasks").queue::<u32>(0)?.get()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn serve(address: &Address, authkey: &[u8]) -> Result<Manager> {
        Manager::spawn_server(address, authkey, None)
    }

    /// Connects to a server started elsewhere (Python's
    /// `BaseManager(address, authkey).connect()`); a wrong key is an
    /// [`ErrorKind::Auth`] error, no server an [`ErrorKind::Closed`] one.
    ///
    /// ```
    /// use brood::{ErrorKind, Manager};
    /// let server = Manager::serve(&"@brood-doc-connect".parse()?, b"right")?;
    /// let err = Manager::connect(server.address(), b"wrong").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Auth);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Manager> {
        Ok(Manager {
            server: Server::connect(address, authkey)?,
            process: None,
            dir: None,
            owner: crate::os::pid::current().as_raw() as u32,
        })
    }

    fn spawn_server(
        address: &Address,
        authkey: &[u8],
        method: Option<StartMethod>,
    ) -> Result<Manager> {
        let (mut mine, theirs) = connection::pipe(true)?;
        let mut builder = Process::builder().name("brood-manager").daemon(true);
        if let Some(method) = method {
            builder = builder.start_method(method);
        }
        let mut process = builder.target_with(
            |(address, key, ready): (String, ByteBuf, Connection)| {
                server::child_main(address, key.into_vec(), ready)
            },
            (address.to_string(), ByteBuf::from(authkey.to_vec()), theirs),
        );
        process.start()?;
        let answer = mine.recv_timeout::<std::result::Result<(String, u64), String>>(START_TIMEOUT);
        let fail = |process: &mut Process<()>, e: Error| {
            let _ = process.kill();
            let _ = process.join();
            Err(e)
        };
        let bound = match answer {
            Ok(Ok((bound, _instance))) => bound,
            Ok(Err(message)) => {
                return fail(
                    &mut process,
                    Error::simple(
                        ErrorKind::Io,
                        format!("the manager server cannot listen on {address}: {message}"),
                    ),
                );
            }
            Err(e) => {
                return fail(
                    &mut process,
                    Error::simple(e.kind(), format!("the manager server did not start: {e}")),
                );
            }
        };
        let address: Address = bound.parse()?;
        match Server::connect(&address, authkey) {
            Ok(server) => Ok(Manager {
                server,
                process: Some(process),
                dir: None,
                owner: crate::os::pid::current().as_raw() as u32,
            }),
            Err(e) => fail(&mut process, e),
        }
    }

    /// Where the server listens (for [`connect`](Manager::connect)).
    ///
    /// ```
    /// let manager = brood::Manager::serve(&"127.0.0.1:0".parse()?, b"k")?;
    /// assert!(manager.address().to_string().starts_with("tcp:127.0.0.1:"));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.server.address
    }

    /// The server process's pid, for a manager that started one (Python's
    /// `manager._process.pid`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.server_pid().is_some());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn server_pid(&self) -> Option<crate::os::Pid> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Stops the server this manager started (nothing for a connected
    /// one, nor in a forked child holding a copy); every proxy to it fails
    /// from then on with [`ErrorKind::Closed`]. Drop does the same.
    ///
    /// ```
    /// let mut manager = brood::Manager::start()?;
    /// let d = manager.dict::<u8, u8>()?;
    /// manager.shutdown()?;
    /// assert_eq!(d.len().unwrap_err().kind(), brood::ErrorKind::Closed);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn shutdown(&mut self) -> Result<()> {
        if self.owner != crate::os::pid::current().as_raw() as u32 {
            // A copy inherited through fork: the server is not ours to stop.
            if let Some(process) = self.process.take() {
                std::mem::forget(process);
            }
            self.dir = None;
            return Ok(());
        }
        if let Some(mut process) = self.process.take() {
            let _ = process.terminate();
            if process.join_timeout(Duration::from_secs(5)).is_err() {
                let _ = process.kill();
                let _ = process.join();
            }
            // Calls on queue rings in this process look again.
            proxy::server_stopped_here();
            // The server died by signal: its socket file is ours to remove.
            if let Address::Unix(path) = &self.server.address {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    /// Objects by name: the `named(name)` constructors make the object the
    /// first time and return the same one afterwards, to every client (the
    /// equivalent of registering `get_task_queue` on a Python
    /// `BaseManager`). Asking for a name with another kind is an error.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.named("results").list::<u8>()?.push(&1)?;
    /// assert_eq!(manager.named("results").list::<u8>()?.len()?, 1);
    /// assert!(manager.named("results").dict::<u8, u8>().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn named<'a>(&'a self, name: &'a str) -> Named<'a> {
        Named {
            manager: self,
            name: Some(name),
        }
    }

    fn anonymous(&self) -> Named<'_> {
        Named {
            manager: self,
            name: None,
        }
    }

    /// A new shared dict (Python's `manager.dict()`); see [`ManagedMap`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let d = manager.dict::<String, Vec<u8>>()?;
    /// d.insert(&"k".into(), &vec![1, 2])?;
    /// assert_eq!(d.get(&"k".into())?, Some(vec![1, 2]));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<ManagedMap<K, V>> {
        self.anonymous().dict()
    }

    /// A new shared list; see [`ManagedList`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.list::<u8>()?.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn list<T>(&self) -> Result<ManagedList<T>> {
        self.anonymous().list()
    }

    /// A new namespace; see [`Namespace`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.namespace()?.names()?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn namespace(&self) -> Result<Namespace> {
        self.anonymous().namespace()
    }

    /// A new shared value; see [`ManagedValue`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.value(&3i64)?.get()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn value<T: Serialize + DeserializeOwned>(&self, initial: &T) -> Result<ManagedValue<T>> {
        self.anonymous().value(initial)
    }

    /// A new lock (Python's `manager.Lock()`); see [`ManagedLock`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.lock()?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ManagedLock> {
        self.anonymous().lock()
    }

    /// A new reentrant lock (Python's `manager.RLock()`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let r = manager.rlock()?;
    /// assert!(r.try_acquire()? && r.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn rlock(&self) -> Result<ManagedLock> {
        self.anonymous().rlock()
    }

    /// A new event; see [`ManagedEvent`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(!manager.event()?.is_set()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn event(&self) -> Result<ManagedEvent> {
        self.anonymous().event()
    }

    /// A new semaphore starting at `value`.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.semaphore(2)?.value()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn semaphore(&self, value: u64) -> Result<ManagedSemaphore> {
        self.anonymous().semaphore(value)
    }

    /// A new bounded semaphore: releasing above `value` is an error.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.bounded_semaphore(1)?.release().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn bounded_semaphore(&self, value: u64) -> Result<ManagedSemaphore> {
        self.anonymous().bounded_semaphore(value)
    }

    /// A new queue holding at most `maxsize` items (0: unbounded).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.queue::<u8>(0)?.empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn queue<T>(&self, maxsize: usize) -> Result<ManagedQueue<T>> {
        self.anonymous().queue(maxsize)
    }

    /// A new joinable queue (`task_done`, `join`, `abandoned`).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.joinable_queue::<u8>(0)?.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn joinable_queue<T>(&self, maxsize: usize) -> Result<ManagedQueue<T>> {
        self.anonymous().joinable_queue(maxsize)
    }

    /// A new barrier for `parties` waiters.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.barrier(1)?.wait()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn barrier(&self, parties: u64) -> Result<ManagedBarrier> {
        self.anonymous().barrier(parties)
    }

    /// A new custom shared object holding `initial` (a type declared with
    /// [`shared_object!`](crate::shared_object)), and its typed proxy.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Stack(Vec<u32>);
    /// impl Stack {
    ///     fn push(&mut self, x: u32) { self.0.push(x) }
    ///     fn pop(&mut self) -> Option<u32> { self.0.pop() }
    /// }
    /// brood::shared_object! {
    ///     pub struct StackProxy for Stack {
    ///         fn push(&mut self, x: u32);
    ///         fn pop(&mut self) -> Option<u32>;
    ///     }
    /// }
    /// let manager = brood::Manager::start()?;
    /// let s: StackProxy = manager.shared(&Stack(vec![1]))?;
    /// s.push(2)?;
    /// assert_eq!(s.pop()?, Some(2));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn shared<T: SharedObject>(&self, initial: &T) -> Result<T::Proxy> {
        self.anonymous().shared(initial)
    }

    /// A new condition (with its own reentrant lock); see
    /// [`ManagedCondition`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// let c = manager.condition()?;
    /// drop(c.lock()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn condition(&self) -> Result<ManagedCondition> {
        self.anonymous().condition()
    }

    /// A new fixed-length array holding `items`; see [`ManagedArray`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.array(&[0.5f64; 3])?.len()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn array<T: Serialize + DeserializeOwned>(&self, items: &[T]) -> Result<ManagedArray<T>> {
        self.anonymous().array(items)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Constructors of named objects; see [`Manager::named`].
///
/// ```
/// let manager = brood::Manager::start()?;
/// let a = manager.named("counter").value(&0u32)?;
/// let b = manager.named("counter").value(&99u32)?; // the same object
/// a.set(&5)?;
/// assert_eq!(b.get()?, 5);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    manager: &'a Manager,
    name: Option<&'a str>,
}

impl Named<'_> {
    fn create(&self, how: Create) -> Result<proxy::Handle> {
        self.manager.server.create(how, self.name)
    }

    /// The dict of this name; see [`Manager::dict`].
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.named("d").dict::<u8, u8>()?.insert(&1, &1)?;
    /// assert_eq!(manager.named("d").dict::<u8, u8>()?.len()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<ManagedMap<K, V>> {
        self.create(Create::Map).map(ManagedMap::from_handle)
    }

    /// The list of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.named("l").list::<u8>()?.is_empty()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn list<T>(&self) -> Result<ManagedList<T>> {
        self.create(Create::List).map(ManagedList::from_handle)
    }

    /// The namespace of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.named("cfg").namespace()?.set("x", &1)?;
    /// assert_eq!(manager.named("cfg").namespace()?.get::<u8>("x")?, Some(1));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn namespace(&self) -> Result<Namespace> {
        self.create(Create::Namespace).map(Namespace::from_handle)
    }

    /// The value of this name (`initial` is used only when it is made).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.named("v").value(&1u8)?.get()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn value<T: Serialize + DeserializeOwned>(&self, initial: &T) -> Result<ManagedValue<T>> {
        let bytes = crate::codec::encode(initial)?;
        self.create(Create::Value(ByteBuf::from(bytes)))
            .map(ManagedValue::from_handle)
    }

    /// The lock of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.named("l").lock()?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ManagedLock> {
        self.create(Create::Lock { reentrant: false })
            .map(ManagedLock::from_handle)
    }

    /// The reentrant lock of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.named("r").rlock()?.try_acquire()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn rlock(&self) -> Result<ManagedLock> {
        self.create(Create::Lock { reentrant: true })
            .map(ManagedLock::from_handle)
    }

    /// The event of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.named("go").event()?.set()?;
    /// assert!(manager.named("go").event()?.is_set()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn event(&self) -> Result<ManagedEvent> {
        self.create(Create::Event).map(ManagedEvent::from_handle)
    }

    /// The semaphore of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.named("s").semaphore(2)?.value()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn semaphore(&self, value: u64) -> Result<ManagedSemaphore> {
        self.create(Create::Semaphore {
            value,
            bounded: false,
        })
        .map(ManagedSemaphore::from_handle)
    }

    /// The bounded semaphore of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.named("b").bounded_semaphore(2)?.value()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn bounded_semaphore(&self, value: u64) -> Result<ManagedSemaphore> {
        self.create(Create::Semaphore {
            value,
            bounded: true,
        })
        .map(ManagedSemaphore::from_handle)
    }

    /// The queue of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.named("q").queue::<u8>(0)?.put(&1)?;
    /// assert_eq!(manager.named("q").queue::<u8>(0)?.get()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn queue<T>(&self, maxsize: usize) -> Result<ManagedQueue<T>> {
        self.create(Create::Queue {
            maxsize: maxsize as u64,
            joinable: false,
        })
        .map(ManagedQueue::from_handle)
    }

    /// The joinable queue of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// manager.named("jq").joinable_queue::<u8>(0)?.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn joinable_queue<T>(&self, maxsize: usize) -> Result<ManagedQueue<T>> {
        self.create(Create::Queue {
            maxsize: maxsize as u64,
            joinable: true,
        })
        .map(ManagedQueue::from_handle)
    }

    /// The barrier of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.named("b").barrier(2)?.parties()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn barrier(&self, parties: u64) -> Result<ManagedBarrier> {
        self.create(Create::Barrier { parties })
            .map(ManagedBarrier::from_handle)
    }

    /// The custom shared object of this name (`initial` is used only when
    /// it is made); see [`Manager::shared`].
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Total(u64);
    /// impl Total { fn add(&mut self, n: u64) -> u64 { self.0 += n; self.0 } }
    /// brood::shared_object! {
    ///     pub struct TotalProxy for Total { fn add(&mut self, n: u64) -> u64; }
    /// }
    /// let manager = brood::Manager::start()?;
    /// let a: TotalProxy = manager.named("total").shared(&Total(0))?;
    /// let b: TotalProxy = manager.named("total").shared(&Total(0))?;
    /// a.add(2)?;
    /// assert_eq!(b.add(3)?, 5);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn shared<T: SharedObject>(&self, initial: &T) -> Result<T::Proxy> {
        let init = ByteBuf::from(crate::codec::encode(initial)?);
        self.create(Create::Custom(T::TYPE_NAME.to_string(), init))
            .map(|h| T::Proxy::__from_raw(RawProxy::new(h)))
    }

    /// The condition of this name.
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert!(manager.named("c").condition()?.acquire_timeout(std::time::Duration::ZERO)?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn condition(&self) -> Result<ManagedCondition> {
        self.create(Create::Condition)
            .map(ManagedCondition::from_handle)
    }

    /// The array of this name (`items` are used only when it is made).
    ///
    /// ```
    /// let manager = brood::Manager::start()?;
    /// assert_eq!(manager.named("a").array(&[1u8, 2])?.to_vec()?, [1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn array<T: Serialize + DeserializeOwned>(&self, items: &[T]) -> Result<ManagedArray<T>> {
        let items = items
            .iter()
            .map(|i| crate::codec::encode(i).map(ByteBuf::from))
            .collect::<Result<Vec<_>>>()?;
        self.create(Create::Array(items))
            .map(ManagedArray::from_handle)
    }
}

/// A fresh directory only this user can enter, under the temp dir.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let mut random = [0u8; 8];
        connection::fill_random(&mut random)?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("brood-manager-{name}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::os_error(
        format!("cannot make a private directory in {}", base.display()),
        last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)),
    ))
}
