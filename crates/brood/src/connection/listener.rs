//! `Listener` and `Client`: connections between unrelated processes over a
//! Unix path, an abstract Unix name or TCP, with Python's auth-key
//! challenge (HMAC-SHA256, both ways, before anything else is decoded).

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Connection, wait_fd};
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
    inner: Inner,
    address: Address,
    authkey: Option<Vec<u8>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "<hidden>"))
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
            inner,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
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
        let raw = match &self.inner {
            Inner::Unix(l) => l.as_raw_fd(),
            Inner::Tcp(l) => l.as_raw_fd(),
        };
        if deadline.is_some() {
            wait_fd(raw, libc::POLLIN, deadline)?;
        }
        let ctx = |e| Error::os_error(format!("cannot accept on {}", self.address), e);
        let mut conn = match &self.inner {
            Inner::Unix(l) => {
                let (s, _) = l.accept().map_err(ctx)?;
                Connection::from_fd(OwnedFd::from(s), true)
            }
            Inner::Tcp(l) => {
                let (s, _) = l.accept().map_err(ctx)?;
                let _ = s.set_nodelay(true);
                Connection::from_fd(OwnedFd::from(s), false)
            }
        };
        if let Some(key) = &self.authkey {
            deliver_challenge(&mut conn, key, deadline)?;
            answer_challenge(&mut conn, key, deadline)?;
        }
        Ok(conn)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }
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

fn fill_random(buf: &mut [u8]) -> Result<()> {
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
