//! The client side: one [`Server`] per (address, instance) in this process,
//! holding a pool of authenticated connections, and the [`Handle`] every
//! typed proxy wraps. The proxies: `collections.rs` (map, list, namespace,
//! value, array, queue) and `sync.rs` (lock, condition, event, semaphore,
//! barrier).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::AsFd;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::link::{Link, Rings};
use super::protocol::{Bytes, Create, Hello, Kind, Micros, Op, Out, Request, Welcome};
use super::server::HANDSHAKE_TIMEOUT;
use crate::codec;
use crate::connection::{self, Address, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::queue::{GetError, PutError};

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
    pool: Mutex<(u32, Vec<Link>)>,
    /// This process's socket link for receiving queue rings (`Op::Attach`),
    /// with the pid that opened it.
    line: Mutex<(u32, LineState)>,
}

enum LineState {
    Untried,
    /// The server is on another host, or rings are off.
    Elsewhere,
    /// The link, and a second handle on its socket for liveness checks.
    Open(Box<Link>, Arc<std::os::fd::OwnedFd>),
}

/// How long a proxy blocked on a mapped ring waits before it looks at its
/// server again (a server that dies fails the call within this).
const RING_SLICE: Duration = Duration::from_millis(100);

fn ring_slice(deadline: Option<Instant>) -> Duration {
    deadline.map_or(RING_SLICE, |d| {
        d.saturating_duration_since(Instant::now()).min(RING_SLICE)
    })
}

/// A plain managed queue's ring, mapped in this process: a proxy on the
/// server's host puts and gets on it itself, no round trip to the server.
/// `line` is a socket to the server that carries nothing once the ring
/// is here: it reads end-of-file exactly when the server is gone.
pub(crate) struct Attached {
    pub(crate) queue: super::registry::RingQueue,
    line: Arc<std::os::fd::OwnedFd>,
    /// The coarse clock (`crate::time::coarse_ns`) when a look last found
    /// the server there, and [`ENDED`] then.
    seen_alive: AtomicU64,
    seen_ended: AtomicU64,
}

/// Servers this process has stopped (`Manager::shutdown`, counted once the
/// server is gone): a look at liveness made before the count moved is not
/// trusted after it, so a call that follows a shutdown in this process
/// always looks.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// Called once a server this process stopped is gone.
pub(crate) fn server_stopped_here() {
    ENDED.fetch_add(1, Ordering::SeqCst);
}

impl Attached {
    /// Whether the server is still there: one `recv` that does not wait
    /// and takes nothing, at most once per tick of the coarse clock (1 to
    /// 10 ms): a call within the tick of a look that found the server
    /// alive trusts it (unless this process stopped a server since). To a
    /// caller, a server that died a moment before such a call is no
    /// different from one that died a moment after it: either way the
    /// call succeeded and its item went down with the server.
    pub(crate) fn server_alive(&self) -> bool {
        let now = crate::time::coarse_ns();
        let ended = ENDED.load(Ordering::SeqCst);
        if self.seen_alive.load(Ordering::Relaxed) == now
            && self.seen_ended.load(Ordering::Relaxed) == ended
        {
            return true;
        }
        let mut buf = [0u8; 1];
        let alive = loop {
            match rustix::net::recv(
                &*self.line,
                &mut buf,
                rustix::net::RecvFlags::DONTWAIT | rustix::net::RecvFlags::PEEK,
            ) {
                Ok((0, _)) => break false,
                Ok(_) | Err(rustix::io::Errno::AGAIN) => break true,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break false,
            }
        };
        if alive {
            self.seen_ended.store(ended, Ordering::Relaxed);
            self.seen_alive.store(now, Ordering::Relaxed);
        }
        alive
    }
}

type ServerKey = (String, u64);

static SERVERS: Mutex<Option<HashMap<ServerKey, Arc<Server>>>> = Mutex::new(None);
static KEYS: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);
static SESSION: Mutex<(u32, u64)> = Mutex::new((0, 0));

thread_local! {
    /// Per thread: the connections it pipelined on (server, pid, connection).
    static STICKY: std::cell::RefCell<Vec<(usize, u32, Link)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// This process's session id (a fresh one in a forked child).
fn session() -> Result<u64> {
    let mut s = SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let pid = crate::os::pid::current().as_raw() as u32;
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
                    pool: Mutex::new((crate::os::pid::current().as_raw() as u32, Vec::new())),
                    line: Mutex::new((0, LineState::Untried)),
                })
            })
            .clone()
    }

    /// An idle connection of this process (`pid`), or a new one.
    fn checkout(&self, pid: u32) -> Result<Link> {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.0 != pid {
                // Inherited through fork: the parent's connections, not ours.
                pool.1.clear();
                pool.0 = pid;
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

    fn checkin(&self, conn: Link) {
        self.checkin_as(conn, crate::os::pid::current().as_raw() as u32);
    }

    fn checkin_as(&self, conn: Link, pid: u32) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.0 == pid {
            pool.1.push(conn);
        }
    }

    /// The connection this thread pipelined on, if any: every later call
    /// of the thread goes through it, so they stay in order after its
    /// pipelined requests.
    fn take_sticky(&self, pid: u32) -> Option<Link> {
        let me = self as *const Server as usize;
        STICKY.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_empty() {
                return None;
            }
            // Connections a forked child inherited are not its own.
            s.retain(|(_, p, _)| *p == pid);
            let i = s.iter().position(|(server, _, _)| *server == me)?;
            Some(s.swap_remove(i).2)
        })
    }

    fn keep_sticky(&self, conn: Link, pid: u32) {
        let me = self as *const Server as usize;
        STICKY.with(|s| s.borrow_mut().push((me, pid, conn)));
    }

    /// A connection for one call, and whether it is this thread's sticky
    /// one. `pid` is this process's id, read once per call (`getpid` is a
    /// system call: the pool and the sticky list check it so that a forked
    /// child never uses its parent's connections).
    fn take(&self, pid: u32) -> Result<(Link, bool)> {
        match self.take_sticky(pid) {
            Some(conn) => Ok((conn, true)),
            None => Ok((self.checkout(pid)?, false)),
        }
    }

    fn give_back(&self, conn: Link, sticky: bool, pid: u32) {
        if sticky {
            self.keep_sticky(conn, pid);
        } else {
            self.checkin_as(conn, pid);
        }
    }

    /// One request without a reply (pipelined); see
    /// `ManagedQueue::put_pipelined`.
    pub(crate) fn call_quiet(&self, object: u64, op: Op) -> Result<()> {
        let pid = crate::os::pid::current().as_raw() as u32;
        let (mut conn, _) = self.take(pid)?;
        match conn.send_request(Request {
            object,
            op,
            quiet: true,
        }) {
            Ok(()) => {
                self.keep_sticky(conn, pid);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Codec && !conn.closed() => {
                self.keep_sticky(conn, pid);
                Err(e)
            }
            Err(e) => Err(self.lost(e)),
        }
    }

    /// One request, one reply.
    pub(crate) fn call(&self, object: u64, op: Op) -> Result<Out> {
        let pid = crate::os::pid::current().as_raw() as u32;
        let (mut conn, sticky) = self.take(pid)?;
        let reply = conn
            .send_request(Request {
                object,
                op,
                quiet: false,
            })
            .and_then(|()| conn.recv_reply());
        match reply {
            Ok(reply) => {
                self.give_back(conn, sticky, pid);
                reply.map_err(Error::from)
            }
            // A request that cannot be encoded never left: the connection is fine.
            Err(e) if e.kind() == ErrorKind::Codec && !conn.closed() => {
                self.give_back(conn, sticky, pid);
                Err(e)
            }
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Plain queue `id`'s ring, mapped here, if the server is on this host
    /// (and rings are on); `None` otherwise, or for an object that is not
    /// a plain queue (the server then answers its calls).
    pub(crate) fn attach(&self, id: u64) -> Result<Option<Arc<Attached>>> {
        let pid = crate::os::pid::current().as_raw() as u32;
        let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        if line.0 != pid {
            // A forked child makes its own line (requests on an inherited
            // one would mix with its parent's).
            *line = (pid, LineState::Untried);
        }
        if matches!(line.1, LineState::Untried) {
            line.1 = if rings_enabled() {
                let (link, _, local) = open_as(
                    &self.address,
                    &self.key,
                    Some(self.instance),
                    HANDSHAKE_TIMEOUT,
                    Mode::Line,
                )
                .map_err(|e| self.lost(e))?;
                let peek = local
                    .then(|| link.conn.as_fd().try_clone_to_owned().ok())
                    .flatten();
                match peek {
                    Some(fd) => LineState::Open(Box::new(link), Arc::new(fd)),
                    None => LineState::Elsewhere,
                }
            } else {
                LineState::Elsewhere
            };
        }
        let LineState::Open(link, fd) = &mut line.1 else {
            return Ok(None);
        };
        let asked = link
            .send_request(Request {
                object: id,
                op: Op::Attach,
                quiet: false,
            })
            .and_then(|()| link.recv_reply());
        let got = match asked {
            Ok(Ok(Out::Unit)) => super::registry::RingQueue::recv_from(&mut link.conn),
            // Not a plain queue (or an unknown object): the server answers.
            Ok(_) => return Ok(None),
            Err(e) => Err(e),
        };
        match got {
            Ok(queue) => Ok(Some(Arc::new(Attached {
                queue,
                line: fd.clone(),
                seen_alive: AtomicU64::new(0),
                seen_ended: AtomicU64::new(0),
            }))),
            Err(e) => {
                // The line is in an unknown state: the next attach opens
                // another. A server that is still there serves this proxy
                // through requests instead (the ring could not be had
                // here, e.g. this process is out of fds).
                line.1 = LineState::Untried;
                if e.kind() == ErrorKind::Closed {
                    Err(self.lost(e))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The error for a connection that failed mid-call. Tells a restarted
    /// server from a dead one (the request is not sent again: it may have
    /// been applied).
    fn lost(&self, e: Error) -> Error {
        match open(&self.address, &self.key, Some(self.instance), DIAGNOSE) {
            Err(restarted) if restarted.kind() == ErrorKind::InvalidState => restarted,
            _ => Error::simple(
                ErrorKind::Closed,
                format!("lost the manager server at {}: {e}", self.address),
            ),
        }
    }

    pub(crate) fn create(self: &Arc<Self>, how: Create, name: Option<&str>) -> Result<Handle> {
        match self.call(0, Op::Create(how, name.map(str::to_string)))? {
            Out::Created(id, kind) => Ok(Handle {
                server: self.clone(),
                id,
                kind,
                direct: std::sync::OnceLock::new(),
            }),
            other => Err(unexpected(&other)),
        }
    }
}

/// What kind of link [`open`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Shared-memory rings to a server on this host (through its local
    /// alias for a TCP address) if rings are on; else the socket.
    Calls,
    /// A plain socket link, on a Unix socket if the server is on this
    /// host (through its alias for TCP): to receive fds on.
    Line,
}

/// Opens an authenticated connection; with `expect`, checks the server is
/// still the instance the proxies were made for.
fn open(
    address: &Address,
    key: &[u8],
    expect: Option<u64>,
    timeout: Duration,
) -> Result<(Link, u64)> {
    open_as(address, key, expect, timeout, Mode::Calls).map(|(link, instance, _)| (link, instance))
}

fn open_as(
    address: &Address,
    key: &[u8],
    expect: Option<u64>,
    timeout: Duration,
    mode: Mode,
) -> Result<(Link, u64, bool)> {
    let on_unix = matches!(address, Address::Unix(_) | Address::Abstract(_));
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
    super::server::keep_alive(&conn);
    // A client on this host offers shared-memory rings (`link.rs`); a pair
    // that cannot be made leaves the link on the socket.
    let rings = if on_unix && mode == Mode::Calls && rings_enabled() {
        Rings::new().ok()
    } else {
        None
    };
    // A line holds nothing (no lock, no queue item is leased through it),
    // so it is a session of its own: a forked child that keeps an
    // inherited line open does not keep its parent's session alive.
    let session = match mode {
        Mode::Calls => session()?,
        Mode::Line => {
            let mut random = [0u8; 8];
            connection::fill_random(&mut random)?;
            u64::from_le_bytes(random)
        }
    };
    conn.send(&Hello {
        session,
        rings: rings.is_some(),
    })?;
    if let Some(r) = &rings {
        conn.send(&(&r.req, &r.rep, &r.bell))?;
    }
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
    let rings = if welcome.rings { rings } else { None };
    // A TCP server on this host: reconnect through its local alias (the
    // TCP connection closes once that one is up; a server on another host
    // or network namespace has no such name here).
    if !on_unix
        && rings_enabled()
        && let Some(name) = &welcome.local
    {
        let alias = Address::Abstract(name.clone().into_bytes());
        if let Ok((local, instance, true)) =
            open_as(&alias, key, Some(welcome.instance), timeout, mode)
            && (mode == Mode::Line || local.rings.is_some())
        {
            return Ok((local, instance, true));
        }
    }
    Ok((Link { conn, rings }, welcome.instance, on_unix))
}

/// Set by [`use_local_rings`](crate::manager::use_local_rings).
static RINGS_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether local connections use shared-memory rings: yes, unless turned
/// off in this process or the environment says `BROOD_MANAGER_RINGS=0`.
fn rings_enabled() -> bool {
    static ENV_ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !RINGS_OFF.load(Ordering::Relaxed)
        && *ENV_ON.get_or_init(|| std::env::var_os("BROOD_MANAGER_RINGS").is_none_or(|v| v != "0"))
}

/// Whether this process's new connections to manager servers on this host
/// use shared-memory rings (the default: on). Off, every request and
/// reply goes through the socket, as it does to a server on another host:
/// for a client that must stay on the network path (measuring it, or a
/// test that plays a remote host). Connections already open keep their
/// way. The environment variable `BROOD_MANAGER_RINGS=0` turns them off
/// for a whole program.
///
/// ```
/// brood::manager::use_local_rings(false);
/// let manager = brood::Manager::start()?;
/// let d = manager.dict::<u32, u32>()?;
/// d.insert(&1, &2)?; // through the socket
/// brood::manager::use_local_rings(true);
/// # Ok::<(), brood::Error>(())
/// ```
pub fn use_local_rings(on: bool) {
    RINGS_OFF.store(!on, Ordering::Relaxed);
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
    /// A plain queue's ring once this proxy (or the one it was cloned
    /// from) looked for it: `Some(None)` when the server answers instead.
    direct: std::sync::OnceLock<Option<Arc<Attached>>>,
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
            direct: std::sync::OnceLock::new(),
        })
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} #{} at {}", self.kind, self.id, self.server.address)
    }
}

impl Handle {
    /// A plain queue's ring, mapped here (looked for once per proxy and
    /// its clones), when this process is on the server's host.
    fn ring(&self) -> Result<Option<&Attached>> {
        if self.kind != Kind::Queue {
            return Ok(None);
        }
        if let Some(found) = self.direct.get() {
            return Ok(found.as_deref());
        }
        let found = self.server.attach(self.id)?;
        Ok(self.direct.get_or_init(|| found).as_deref())
    }

    /// Puts `item` on a mapped ring, waiting at most `timeout` for room
    /// (`None`: as long as it takes), in slices between which it checks
    /// that the server is still there.
    fn ring_put(&self, ring: &Attached, mut item: Bytes, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.and_then(crate::time::deadline);
        loop {
            if !ring.server_alive() {
                return Err(self.server_gone());
            }
            match ring.queue.put_timeout(item, ring_slice(deadline)) {
                Ok(()) => return Ok(()),
                Err(PutError::Timeout(back) | PutError::Full(back)) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::timeout("the managed queue is full"));
                    }
                    item = back;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes the oldest item of a mapped ring, as [`ring_put`](Self::ring_put) waits.
    fn ring_get(&self, ring: &Attached, timeout: Option<Duration>) -> Result<Bytes> {
        let deadline = timeout.and_then(crate::time::deadline);
        loop {
            if !ring.server_alive() {
                return Err(self.server_gone());
            }
            match ring.queue.get_timeout(ring_slice(deadline)) {
                Ok(item) => return Ok(item),
                Err(GetError::Timeout | GetError::Empty) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::timeout("the managed queue is empty"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The error for a call on a ring whose server is gone.
    fn server_gone(&self) -> Error {
        self.server.lost(Error::simple(
            ErrorKind::Closed,
            "the server's end of the connection is closed",
        ))
    }

    fn call(&self, op: Op) -> Result<Out> {
        self.server.call(self.id, op)
    }
    pub(crate) fn call_op(&self, op: Op) -> Result<Out> {
        self.call(op)
    }
    fn quiet(&self, op: Op) -> Result<()> {
        self.server.call_quiet(self.id, op)
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

mod collections;
mod sync;

pub use collections::{
    ManagedArray, ManagedList, ManagedMap, ManagedQueue, ManagedValue, Namespace,
};
pub use sync::{
    ManagedBarrier, ManagedCondition, ManagedEvent, ManagedLock, ManagedLockGuard, ManagedSemaphore,
};
