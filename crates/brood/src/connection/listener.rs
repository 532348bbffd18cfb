//! `Listener` and `Client`: connections between unrelated processes over a
//! Unix path, an abstract Unix name or TCP, with Python's auth-key
//! challenge (HMAC-SHA256, both ways, before anything else is decoded).

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Connection, Waitable, wait_fd};
use crate::error::{Error, ErrorKind, Result};

/// Where a [`Listener`] listens and a [`Client`] connects.
///
/// Parsed from text: `unix:/run/x.sock` or any path with a `/`; `@name` or
/// `abstract:name` for Linux's abstract namespace (no file, gone with the
/// listener); `tcp:127.0.0.1:6000` or `host:port`.
///
/// ```
/// use brood::connection::Address;
/// assert_eq!("@brood".parse::<Address>().unwrap(), Address::Abstract(b"brood".to_vec()));
/// assert!(matches!("/tmp/x.sock".parse::<Address>().unwrap(), Address::Unix(_)));
/// assert!(matches!("127.0.0.1:0".parse::<Address>().unwrap(), Address::Tcp(_)));
/// assert!("".parse::<Address>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket file; the listener removes it when dropped.
    Unix(PathBuf),
    /// A name in Linux's abstract Unix namespace.
    Abstract(Vec<u8>),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Address> {
        let bad = || {
            Error::invalid(format!(
                "not an address: {s:?} (try unix:/path, @name or host:port)"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.is_empty() {
                Err(bad())
            } else {
                Ok(Address::Unix(path.into()))
            };
        }
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix("abstract:")) {
            return if name.is_empty() {
                Err(bad())
            } else {
                Ok(Address::Abstract(name.as_bytes().to_vec()))
            };
        }
        let tcp = s.strip_prefix("tcp:").unwrap_or(s);
        if s.contains('/') && !s.starts_with("tcp:") {
            return Ok(Address::Unix(s.into()));
        }
        tcp.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(Address::Tcp)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Accepts connections, checking the auth key first when it has one
/// (Python's `multiprocessing.connection.Listener`).
///
/// ```
/// use brood::connection::{Client, Listener};
///
/// let listener = Listener::bind(&"127.0.0.1:0".parse()?, Some(b"secret"))?;
/// let address = listener.address().clone();
/// let mut p = brood::Process::with_args(
///     |address: String| {
///         let mut c = Client::connect(&address.parse().unwrap(), Some(b"secret")).unwrap();
///         c.send(&"hello from the client").unwrap();
///     },
///     address.to_string(),
/// );
/// p.start()?;
/// let mut conn = listener.accept()?;
/// assert_eq!(conn.recv::<String>()?, "hello from the client");
/// p.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Listener {
    /// `None` once closed.
    inner: Option<Inner>,
    address: Address,
    authkey: Option<Vec<u8>>,
    last_accepted: Mutex<Option<Address>>,
    /// The private directory [`Listener::new`] made for its socket,
    /// removed with it.
    own_dir: Option<PathBuf>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "<hidden>"))
            .field("closed", &self.inner.is_none())
            .finish()
    }
}

impl Listener {
    /// Listens on `address` (TCP port 0 picks a free port; see
    /// [`address`](Listener::address)). With `authkey`, every accepted
    /// connection must answer the challenge first.
    ///
    /// ```
    /// let l = brood::connection::Listener::bind(&"@brood-doc-bind".parse().unwrap(), None).unwrap();
    /// assert_eq!(l.address().to_string(), "@brood-doc-bind");
    /// ```
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Listener> {
        let ctx = |e| Error::os_error(format!("cannot listen on {address}"), e);
        let (inner, address) = match address {
            Address::Unix(path) => (
                Inner::Unix(UnixListener::bind(path).map_err(ctx)?),
                address.clone(),
            ),
            Address::Abstract(name) => {
                let addr = UnixAddr::from_abstract_name(name).map_err(ctx)?;
                (
                    Inner::Unix(UnixListener::bind_addr(&addr).map_err(ctx)?),
                    address.clone(),
                )
            }
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr).map_err(ctx)?;
                let bound = l.local_addr().map_err(ctx)?;
                (Inner::Tcp(l), Address::Tcp(bound))
            }
        };
        Ok(Listener {
            inner: Some(inner),
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            last_accepted: Mutex::new(None),
            own_dir: None,
        })
    }

    /// Listens on an address of its own choosing (Python's `Listener()`
    /// without an address): a Unix socket in a fresh private directory
    /// (mode 0700) under the temp dir (`$TMPDIR`, else `/tmp`), so only
    /// this user reaches it; [`address`](Listener::address) says where.
    /// [`close`](Listener::close) or drop removes the socket and the
    /// directory.
    ///
    /// ```
    /// use brood::connection::{Address, Client, Listener};
    /// let l = Listener::new(Some(b"key"))?;
    /// let Address::Unix(path) = l.address().clone() else { unreachable!() };
    /// assert!(path.exists());
    /// let addr = l.address().clone();
    /// let t = std::thread::spawn(move || Client::connect(&addr, Some(b"key")).unwrap().send(&1u8).unwrap());
    /// assert_eq!(l.accept()?.recv::<u8>()?, 1);
    /// t.join().unwrap();
    /// drop(l);
    /// assert!(!path.exists() && !path.parent().unwrap().exists());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(authkey: Option<&[u8]>) -> Result<Listener> {
        let dir = private_dir()?;
        match Listener::bind(&Address::Unix(dir.join("listener")), authkey) {
            Ok(mut l) => {
                l.own_dir = Some(dir);
                Ok(l)
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Stops listening: the socket is closed and a Unix socket file
    /// removed (Python's `close()`). Later [`accept`](Listener::accept)s
    /// fail with [`ErrorKind::InvalidState`] ("the listener is closed");
    /// closing again does nothing. Connections already accepted stay open.
    ///
    /// ```
    /// let mut l = brood::connection::Listener::new(None)?;
    /// l.close();
    /// l.close();
    /// assert!(l.closed());
    /// assert_eq!(l.accept().unwrap_err().kind(), brood::ErrorKind::InvalidState);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn close(&mut self) {
        if self.inner.take().is_some() {
            self.remove_files();
        }
    }

    /// Whether [`close`](Listener::close) was called.
    ///
    /// ```
    /// assert!(!brood::connection::Listener::new(None)?.closed());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// The peer address of the last connection accepted, `None` before the
    /// first (Python's `last_accepted`). A Unix peer usually has no name:
    /// then it is `Address::Unix` of an empty path (Python's `''`).
    ///
    /// ```
    /// use brood::connection::{Address, Client, Listener};
    /// let l = Listener::bind(&"127.0.0.1:0".parse()?, None)?;
    /// assert_eq!(l.last_accepted(), None);
    /// let addr = l.address().clone();
    /// let t = std::thread::spawn(move || Client::connect(&addr, None).unwrap());
    /// let _conn = l.accept()?;
    /// let client = t.join().unwrap();
    /// let Some(Address::Tcp(peer)) = l.last_accepted() else { unreachable!() };
    /// assert_eq!(peer.ip().to_string(), "127.0.0.1");
    /// # drop(client);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remove_files(&mut self) {
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = self.own_dir.take() {
            let _ = std::fs::remove_dir(dir);
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.as_ref().map(|inner| match inner {
            Inner::Unix(l) => l.as_fd(),
            Inner::Tcp(l) => l.as_fd(),
        })
    }

    /// Where it listens (with the real port for TCP port 0).
    ///
    /// ```
    /// let l = brood::connection::Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    /// assert!(l.address().to_string().starts_with("tcp:127.0.0.1:"));
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a client and, with an auth key, runs the challenge both
    /// ways; a client with the wrong key gets an [`ErrorKind::Auth`] error
    /// here and on its side, and no data is exchanged.
    ///
    /// ```no_run
    /// let l = brood::connection::Listener::bind(&"@svc".parse().unwrap(), None).unwrap();
    /// let mut conn = l.accept().unwrap();
    /// ```
    pub fn accept(&self) -> Result<Connection> {
        self.accept_until(None)
    }

    /// Like [`accept`](Listener::accept), giving up after `timeout` (which
    /// also bounds the auth exchange) with [`ErrorKind::Timeout`].
    ///
    /// ```
    /// let l = brood::connection::Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    /// let err = l.accept_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout());
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_until(crate::time::deadline(timeout))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Connection> {
        let Some(inner) = &self.inner else {
            return Err(Error::invalid("the listener is closed"));
        };
        let raw = match inner {
            Inner::Unix(l) => l.as_raw_fd(),
            Inner::Tcp(l) => l.as_raw_fd(),
        };
        if deadline.is_some() {
            wait_fd(raw, libc::POLLIN, deadline)?;
        }
        let ctx = |e| Error::os_error(format!("cannot accept on {}", self.address), e);
        let (mut conn, peer) = match inner {
            Inner::Unix(l) => {
                let (s, addr) = l.accept().map_err(ctx)?;
                let peer = match (addr.as_pathname(), addr.as_abstract_name()) {
                    (Some(path), _) => Address::Unix(path.to_path_buf()),
                    (None, Some(name)) => Address::Abstract(name.to_vec()),
                    (None, None) => Address::Unix(PathBuf::new()),
                };
                (Connection::from_fd(OwnedFd::from(s), true), peer)
            }
            Inner::Tcp(l) => {
                let (s, addr) = l.accept().map_err(ctx)?;
                let _ = s.set_nodelay(true);
                (
                    Connection::from_fd(OwnedFd::from(s), false),
                    Address::Tcp(addr),
                )
            }
        };
        // Recorded before the handshake, as Python records it.
        *self.last_accepted.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
        if let Some(key) = &self.authkey {
            deliver_challenge(&mut conn, key, deadline)?;
            answer_challenge(&mut conn, key, deadline)?;
        }
        Ok(conn)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.remove_files();
        }
    }
}

/// A listener is ready when a client waits to be accepted; a closed one is
/// ready at once (its `accept` fails without waiting).
///
/// ```
/// use std::time::Duration;
/// use brood::connection::{wait, Client, Listener};
/// let l = Listener::new(None)?;
/// assert!(wait(&[&l], Some(Duration::from_millis(10)))?.is_empty());
/// let _c = Client::connect(l.address(), None)?;
/// assert_eq!(wait(&[&l], Some(Duration::from_secs(10)))?, [0]);
/// # Ok::<(), brood::Error>(())
/// ```
impl Waitable for Listener {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd()
    }
    fn ready_now(&self) -> bool {
        self.inner.is_none()
    }
}

/// A fresh directory only this user can enter, under the temp dir.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let mut random = [0u8; 8];
        fill_random(&mut random)?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("brood-{name}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(Error::os_error(
                    format!("cannot make a directory in {}", base.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::os_error(
        format!("cannot make a fresh directory in {}", base.display()),
        last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)),
    ))
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
///
/// ```
/// use brood::connection::{Client, Listener};
/// let l = Listener::bind(&"@brood-doc-client".parse().unwrap(), Some(b"k")).unwrap();
/// let addr = l.address().clone();
/// let t = std::thread::spawn(move || l.accept().unwrap().recv::<u8>().unwrap());
/// Client::connect(&addr, Some(b"k")).unwrap().send(&7u8).unwrap();
/// assert_eq!(t.join().unwrap(), 7);
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects, answering (and then delivering) the auth challenge when
    /// `authkey` is given.
    ///
    /// ```no_run
    /// let mut c = brood::connection::Client::connect(&"@svc".parse().unwrap(), None).unwrap();
    /// c.send(&"hi").unwrap();
    /// ```
    pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<Connection> {
        Client::connect_until(address, authkey, None)
    }

    /// Like [`connect`](Client::connect), with `timeout` bounding the auth
    /// exchange (and the TCP connect).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let c = brood::connection::Client::connect_timeout(&"127.0.0.1:6000".parse().unwrap(), None, Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(
        address: &Address,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        Client::connect_until(address, authkey, crate::time::deadline(timeout))
    }

    fn connect_until(
        address: &Address,
        authkey: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<Connection> {
        let ctx = |e| Error::os_error(format!("cannot connect to {address}"), e);
        let mut conn = match address {
            Address::Unix(path) => {
                Connection::from_fd(OwnedFd::from(UnixStream::connect(path).map_err(ctx)?), true)
            }
            Address::Abstract(name) => {
                let addr = UnixAddr::from_abstract_name(name).map_err(ctx)?;
                Connection::from_fd(
                    OwnedFd::from(UnixStream::connect_addr(&addr).map_err(ctx)?),
                    true,
                )
            }
            Address::Tcp(addr) => {
                let s = match deadline {
                    Some(d) => TcpStream::connect_timeout(
                        addr,
                        d.saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(1)),
                    ),
                    None => TcpStream::connect(addr),
                }
                .map_err(ctx)?;
                let _ = s.set_nodelay(true);
                Connection::from_fd(OwnedFd::from(s), false)
            }
        };
        if let Some(key) = authkey {
            answer_challenge(&mut conn, key, deadline)?;
            deliver_challenge(&mut conn, key, deadline)?;
        }
        Ok(conn)
    }
}

// ----- Python's auth-key handshake (multiprocessing/connection.py) -----

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const DIGEST: &[u8] = b"{sha256}";
const MESSAGE_LENGTH: usize = 40;
/// Handshake messages are short; a peer sending more is not speaking it.
const HANDSHAKE_MAX: usize = 256;

fn auth_error(message: &str) -> Error {
    Error::simple(ErrorKind::Auth, message.to_string())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

fn recv_handshake(conn: &mut Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    let limit = conn.max_message;
    conn.max_message = HANDSHAKE_MAX;
    let got = conn.read_frame(deadline);
    conn.max_message = limit;
    got.map_err(|e| match e.kind() {
        ErrorKind::Timeout => e,
        _ => auth_error(&format!("the auth handshake failed: {e}")),
    })
}

fn send_handshake(conn: &mut Connection, bytes: &[u8], deadline: Option<Instant>) -> Result<()> {
    conn.write_frame(bytes, &[], deadline)
}

/// Sends a random challenge and checks the peer's HMAC of it.
fn deliver_challenge(conn: &mut Connection, key: &[u8], deadline: Option<Instant>) -> Result<()> {
    let mut random = [0u8; MESSAGE_LENGTH];
    fill_random(&mut random)?;
    let mut message = DIGEST.to_vec();
    message.extend_from_slice(&random);
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&message);
    send_handshake(conn, &frame, deadline)?;
    let response = recv_handshake(conn, deadline)?;
    let ok = response
        .strip_prefix(DIGEST)
        .is_some_and(|mac| hmac_sha256(key, &message).verify_slice(mac).is_ok());
    if ok {
        send_handshake(conn, WELCOME, deadline)
    } else {
        let _ = send_handshake(conn, FAILURE, deadline);
        conn.close();
        Err(auth_error(
            "the peer's digest was wrong (different authkey?)",
        ))
    }
}

/// Answers the peer's challenge with our HMAC of it.
fn answer_challenge(conn: &mut Connection, key: &[u8], deadline: Option<Instant>) -> Result<()> {
    let frame = recv_handshake(conn, deadline)?;
    let Some(message) = frame.strip_prefix(CHALLENGE) else {
        conn.close();
        return Err(auth_error("the peer sent no auth challenge"));
    };
    if !message.starts_with(DIGEST) {
        conn.close();
        return Err(auth_error("the peer asked for a digest other than sha256"));
    }
    let mut response = DIGEST.to_vec();
    response.extend_from_slice(&hmac_sha256(key, message).finalize().into_bytes());
    send_handshake(conn, &response, deadline)?;
    let verdict = recv_handshake(conn, deadline)?;
    if verdict == WELCOME {
        Ok(())
    } else {
        conn.close();
        Err(auth_error(
            "the digest we sent was rejected (different authkey?)",
        ))
    }
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`).
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid for writes of its length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::os_error("getrandom", err));
        }
        filled += n as usize;
    }
    Ok(())
}
