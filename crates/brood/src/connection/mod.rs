//! Pipes and connections (Python's `multiprocessing.connection`).
//!
//! [`pipe`] gives two connected [`Connection`]s; [`Listener`] and
//! [`Client`] connect processes over a Unix path, an abstract Unix name or
//! TCP, optionally proving a shared `authkey` (HMAC-SHA256, both ways)
//! before anything else is read; [`wait`] tells which of several
//! connections, listeners and processes are ready.
//!
//! ```
//! use brood::connection::pipe;
//!
//! let (mut a, mut b) = pipe(true)?;
//! a.send(&("hello", 42))?;
//! let (word, n): (String, i32) = b.recv()?;
//! assert_eq!((word.as_str(), n), ("hello", 42));
//! b.send_bytes(b"raw bytes")?;
//! assert_eq!(a.recv_bytes()?, b"raw bytes");
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! # Wire format
//!
//! Each message is a frame as Python's `Connection` writes it: a 4-byte
//! big-endian signed length, or `-1` and an 8-byte length for messages over
//! 2 GiB, then the payload. `send_bytes`/`recv_bytes` therefore talk to
//! Python's `Connection.send_bytes`/`recv_bytes`, and the auth handshake is
//! Python's, so a Python `Client` can connect to a brood `Listener` with
//! the same key. `send`/`recv` put brood's codec (MessagePack) in the
//! payload, where Python would put a pickle.
//!
//! # Limits and hostile peers
//!
//! A frame whose header claims more than the connection's limit
//! ([`DEFAULT_MAX_MESSAGE`], see [`Connection::set_max_message`]) is refused
//! before anything is allocated: [`ErrorKind::TooLarge`], and the connection
//! is closed (its stream position is lost), as Python closes it. A peer that
//! closes or dies mid-frame gives [`ErrorKind::Closed`]; garbage where a
//! value was expected gives [`ErrorKind::Codec`] and the connection stays
//! usable (the frame was consumed). Without a timeout a receive waits for
//! the peer as long as it lives; every operation has a `_timeout` form.
//!
//! File descriptors arrive only where an API expects them: with a
//! [`Connection::recv_fd`] message, or with a value whose type holds
//! handles (a `Connection`, a shared-memory segment, a `brood::handle`
//! field). Fds a peer attaches anywhere else (to a `recv_bytes` message, to
//! the middle of a message, during the auth handshake) are closed as soon
//! as they arrive or as soon as their message is read, so a peer cannot
//! exhaust this process's fds. If the kernel drops fds on the way (the
//! process is at its fd limit: `MSG_CTRUNC`), the bytes are kept: every
//! message before the one that lost its fds is delivered, that one fails
//! with an [`ErrorKind::Io`] error, and the connection is closed. A
//! connection brood closes this way (or after a message over the limit, or
//! a send cut off mid-message) keeps its fd, shut down, until your own
//! `close` or drop: `as_fd` stays valid, and nothing a peer sends can make
//! it panic.

mod listener;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) use listener::fill_random;
pub use listener::{Address, Client, Listener};

use crate::error::{Error, ErrorKind, Result};
use crate::os::{self, scm};
use crate::{codec, handle};

/// The default limit on one message: 128 MiB.
///
/// ```
/// let (a, _b) = brood::pipe(true).unwrap();
/// assert_eq!(a.max_message(), brood::connection::DEFAULT_MAX_MESSAGE);
/// ```
pub const DEFAULT_MAX_MESSAGE: usize = 128 << 20;

/// Bytes read ahead at once; small messages cost one `recvmsg` each.
const READ_CHUNK: usize = 64 * 1024;

/// Socket buffers asked for. 256 KiB measured faster than 4 MiB for 1 MiB
/// messages (the data in flight stays in cache), and the round trip does
/// not depend on it. The C floor of `bench/run --only pipes`
/// (`bench/c/socketpair.c`) uses the same size, so "% of raw" compares
/// equal setups.
const SOCKET_BUFFER: libc::c_int = 256 << 10;

/// One end of a pipe or of a socket connection.
///
/// Methods take `&mut self`: one thread uses an end at a time. For a
/// second handle on the same end (say, a writer thread), use
/// [`try_clone`](Connection::try_clone). A `Connection` crosses to a child
/// as an argument under every start method (its fd travels with it), can
/// be sent over another Unix connection with [`send`](Connection::send)
/// (as Python's `reduction` does), and a forked child inherits those it
/// captured. [`from_owned_fd`](Connection::from_owned_fd) makes one from a
/// stream socket of your own.
///
/// ```
/// let (mut parent, child) = brood::connection::pipe(true)?;
/// let mut p = brood::Process::with_args(
///     |mut c: brood::Connection| {
///         let n: u64 = c.recv().unwrap();
///         c.send(&(n * 2)).unwrap();
///     },
///     child,
/// );
/// p.start()?;
/// parent.send(&21u64)?;
/// assert_eq!(parent.recv::<u64>()?, 42);
/// p.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    fd: Option<OwnedFd>,
    readable: bool,
    writable: bool,
    /// Unix sockets carry fds; TCP does not.
    unix: bool,
    max_message: usize,
    /// Read-ahead bytes; `rbuf[rpos..]` is unread.
    rbuf: Vec<u8>,
    rpos: usize,
    /// A large message being read straight into its own buffer (its
    /// length so far is what arrived), the length it will have, and the
    /// length of its frame header.
    partial: Option<(Vec<u8>, usize, usize)>,
    /// A large buffer kept from the last large message, for the next one.
    spare: Vec<u8>,
    /// Encoding buffer for `send`, kept between messages.
    wbuf: Vec<u8>,
    /// A message a too-short `recv_bytes_into` left for the next receive.
    pending: Option<Vec<u8>>,
    /// Fds that arrived and wait for their message, each batch with the
    /// stream position of the last byte of the read that brought it (a
    /// byte of the message it belongs to; see [`Connection::fds_arrived`]).
    fds: VecDeque<(u64, Vec<OwnedFd>)>,
    /// Bytes read from the socket so far (a stream position).
    received: u64,
    /// Stream position of the first byte of the next message not yet
    /// handed out.
    frame_start: u64,
    /// Stream position of a read whose fds the kernel dropped
    /// (`MSG_CTRUNC`): the message holding it fails, and the connection
    /// with it.
    fds_lost_at: Option<u64>,
    /// Why brood closed the connection after an error it could not recover
    /// from (the stream position was lost); the fd stays open, shut down,
    /// until `close` or drop, so `as_fd` stays valid.
    broken: Option<String>,
}

/// Two connected ends (Python's `Pipe(duplex)`).
///
/// With `duplex`, both ends send and receive. Without, the first end only
/// receives and the second only sends, as in Python (`r, w = Pipe(False)`).
/// Both are Unix stream sockets, so either can pass fds.
///
/// ```
/// let (mut r, mut w) = brood::connection::pipe(false)?;
/// w.send(&"one way")?;
/// assert_eq!(r.recv::<String>()?, "one way");
/// assert!(r.send(&1).is_err()); // the read end cannot send
/// # Ok::<(), brood::Error>(())
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let (a, b) = crate::os::fd::socketpair().map_err(|e| Error::os_error("socketpair", e))?;
    for fd in [&a, &b] {
        set_buffers(fd);
    }
    let mut first = Connection::from_fd(a, true);
    let mut second = Connection::from_fd(b, true);
    if !duplex {
        scm::shutdown(&Fd(first.raw()), libc::SHUT_WR);
        scm::shutdown(&Fd(second.raw()), libc::SHUT_RD);
        first.writable = false;
        second.readable = false;
    }
    Ok((first, second))
}

fn set_buffers(fd: impl std::os::fd::AsFd) {
    use rustix::net::sockopt;
    // A size the kernel does not take leaves its default: not an error.
    let _ = sockopt::set_socket_send_buffer_size(&fd, SOCKET_BUFFER as usize);
    let _ = sockopt::set_socket_recv_buffer_size(&fd, SOCKET_BUFFER as usize);
}

impl Connection {
    pub(crate) fn from_fd(fd: OwnedFd, unix: bool) -> Connection {
        Connection {
            fd: Some(fd),
            readable: true,
            writable: true,
            unix,
            max_message: DEFAULT_MAX_MESSAGE,
            rbuf: Vec::new(),
            rpos: 0,
            partial: None,
            spare: Vec::new(),
            wbuf: Vec::new(),
            pending: None,
            fds: VecDeque::new(),
            received: 0,
            frame_start: 0,
            fds_lost_at: None,
            broken: None,
        }
    }

    /// A connection on a stream socket you opened or received yourself (a
    /// Unix or TCP socket: `UnixStream`, `TcpStream`, one end of a
    /// `socketpair`, an fd from [`recv_fd`](Connection::recv_fd)); it
    /// speaks the same framing as every other connection. Anything else (a
    /// pipe, a file, a datagram socket) is an [`ErrorKind::InvalidState`]
    /// error, and the fd is closed. Also available as
    /// `Connection::try_from(fd)`.
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use brood::Connection;
    ///
    /// let (a, b) = UnixStream::pair().unwrap();
    /// let mut a = Connection::from_owned_fd(a.into())?;
    /// let mut b = Connection::try_from(std::os::fd::OwnedFd::from(b))?;
    /// a.send(&"over my own socket")?;
    /// assert_eq!(b.recv::<String>()?, "over my own socket");
    /// // A pipe is not a socket: refused.
    /// let (r, _w) = std::io::pipe().unwrap();
    /// assert!(Connection::from_owned_fd(r.into()).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn from_owned_fd(fd: OwnedFd) -> Result<Connection> {
        let (kind, family) = scm::socket_kind(&fd).map_err(|err| {
            if err.raw_os_error() == Some(libc::ENOTSOCK) {
                Error::invalid("a Connection needs a stream socket; this fd is not a socket")
            } else {
                Error::os_error("getsockopt", err)
            }
        })?;
        if kind != libc::SOCK_STREAM {
            return Err(Error::invalid(
                "a Connection needs a stream socket (SOCK_STREAM); this one is not",
            ));
        }
        let unix = match family {
            libc::AF_UNIX => true,
            libc::AF_INET | libc::AF_INET6 => false,
            other => {
                return Err(Error::invalid(format!(
                    "a Connection needs a Unix or TCP socket, not address family {other}"
                )));
            }
        };
        Ok(Connection::from_fd(fd, unix))
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    fn open_fd(&self) -> Result<RawFd> {
        match (&self.fd, &self.broken) {
            (Some(fd), None) => Ok(fd.as_raw_fd()),
            (Some(_), Some(why)) => Err(Error::simple(
                ErrorKind::Closed,
                format!("the connection was closed after an earlier error: {why}"),
            )),
            (None, _) => Err(Error::simple(ErrorKind::Closed, "the connection is closed")),
        }
    }

    /// Closes the connection after an error that lost the stream's
    /// position: shuts the socket down (`how`: both ways, so the peer
    /// learns at once, as if the fd were closed; clones made with
    /// `try_clone` share the socket and see the end too), drops everything
    /// buffered, and keeps the fd itself until `close` or drop (so `as_fd`
    /// never dangles).
    fn break_off(&mut self, how: libc::c_int, why: impl Into<String>) {
        if let Some(fd) = &self.fd {
            scm::shutdown(fd, how);
        }
        self.broken = Some(why.into());
        self.rbuf = Vec::new();
        self.rpos = 0;
        self.partial = None;
        self.pending = None;
        self.fds.clear();
        self.fds_lost_at = None;
    }

    fn check_readable(&self) -> Result<RawFd> {
        let fd = self.open_fd()?;
        if !self.readable {
            return Err(Error::invalid("connection is write-only"));
        }
        Ok(fd)
    }

    fn check_writable(&self) -> Result<RawFd> {
        let fd = self.open_fd()?;
        if !self.writable {
            return Err(Error::invalid("connection is read-only"));
        }
        Ok(fd)
    }

    /// Whether this end can receive.
    ///
    /// ```
    /// let (r, w) = brood::connection::pipe(false).unwrap();
    /// assert!(r.readable() && !w.readable());
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    ///
    /// ```
    /// let (r, w) = brood::connection::pipe(false).unwrap();
    /// assert!(w.writable() && !r.writable());
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether [`close`](Connection::close) was called, or brood closed
    /// the connection after an error that lost its stream position (a
    /// message over the limit, a send cut off mid-message, file
    /// descriptors the kernel dropped).
    ///
    /// ```
    /// let (mut a, _b) = brood::connection::pipe(true).unwrap();
    /// a.close();
    /// assert!(a.closed());
    /// ```
    pub fn closed(&self) -> bool {
        self.fd.is_none() || self.broken.is_some()
    }

    /// The largest message this end accepts ([`DEFAULT_MAX_MESSAGE`] unless
    /// set).
    ///
    /// ```
    /// let (a, _b) = brood::connection::pipe(true).unwrap();
    /// assert_eq!(a.max_message(), brood::connection::DEFAULT_MAX_MESSAGE);
    /// ```
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Sets the largest message this end sends or accepts.
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// b.set_max_message(4);
    /// a.send_bytes(b"12345").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap_err().kind(), brood::ErrorKind::TooLarge);
    /// ```
    pub fn set_max_message(&mut self, limit: usize) {
        self.max_message = limit;
    }

    /// Closes this end; the peer's receives then report
    /// [`ErrorKind::Closed`]. Closing twice does nothing.
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.close();
    /// assert_eq!(b.recv_bytes().unwrap_err().kind(), brood::ErrorKind::Closed);
    /// ```
    pub fn close(&mut self) {
        self.fd = None;
        self.fds.clear();
        self.rbuf = Vec::new();
        self.rpos = 0;
        self.partial = None;
        self.pending = None;
    }

    /// Another handle on the same end (`dup`); both share the stream, so
    /// let one of them send and the other receive.
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// let mut writer = a.try_clone().unwrap();
    /// writer.send(&1u8).unwrap();
    /// assert_eq!(b.recv::<u8>().unwrap(), 1);
    /// b.send(&2u8).unwrap();
    /// assert_eq!(a.recv::<u8>().unwrap(), 2);
    /// ```
    pub fn try_clone(&self) -> Result<Connection> {
        self.open_fd()?;
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| Error::simple(ErrorKind::Closed, "the connection is closed"))?;
        let dup = os::fd::dup_cloexec(fd, 3).map_err(|e| Error::os_error("dup", e))?;
        let mut c = Connection::from_fd(dup, self.unix);
        c.readable = self.readable;
        c.writable = self.writable;
        c.max_message = self.max_message;
        Ok(c)
    }

    // ----- sending -----

    /// Sends a value through the codec (Python's `send`).
    ///
    /// A value may hold file descriptors — a [`Connection`], a shared
    /// memory segment, a field using [`brood::handle`](crate::handle) — as
    /// Python's `send` pickles a `Connection` through `reduction`: the
    /// receiver gets its own copies (Unix connections only).
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.send(&vec![1, 2, 3]).unwrap();
    /// assert_eq!(b.recv::<Vec<i32>>().unwrap(), [1, 2, 3]);
    /// ```
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send_value(value, None)
    }

    /// Encodes into the kept buffer (no allocation once it has grown) and
    /// sends it as one frame.
    fn send_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.wbuf);
        buf.clear();
        let sent = handle::encode_into_once_with_fds(&mut buf, value).and_then(|(fds, pins)| {
            if fds.is_empty() {
                return self.write_frame(&buf, &[], deadline);
            }
            // The value holds handles (a `Connection`, a shared-memory
            // segment, a `brood::handle` field): they travel with the
            // frame's first byte, as `send_fd` sends one.
            if !self.unix {
                return Err(Error::invalid(
                    "a value holding file descriptors can only be sent over a Unix connection",
                ));
            }
            if fds.len() > scm::MAX_FDS {
                return Err(Error::invalid(format!(
                    "a value can carry at most {} file descriptors, this one holds {}",
                    scm::MAX_FDS,
                    fds.len()
                )));
            }
            let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            // The holds taken on arena blocks belong to the message now
            // (its receiver takes them over), even if the write fails.
            pins.keep();
            // `fds` are duplicates, closed here once sent.
            self.write_frame(&buf, &raw, deadline)
        });
        // Keep a modest buffer; let a huge one go.
        if buf.capacity() <= 4 << 20 {
            self.wbuf = buf;
        }
        sent
    }

    /// Sends a value, giving up after `timeout` with [`ErrorKind::Timeout`].
    /// A timeout mid-message leaves the stream cut: the connection is closed.
    ///
    /// ```
    /// let (mut a, _b) = brood::connection::pipe(true).unwrap();
    /// a.send_timeout(&"hi", std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn send_timeout<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<()> {
        self.send_value(value, crate::time::deadline(timeout))
    }

    /// Sends raw bytes as one message (Python's `send_bytes`).
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.send_bytes(b"abc").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"abc");
    /// ```
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_frame(bytes, &[], None)
    }

    /// Sends raw bytes as one message with `fds` attached to it
    /// (`SCM_RIGHTS`, at most 253); the caller keeps its own fds. The pool's
    /// supervisor sends a batch of units whose arguments hold fds this way.
    pub(crate) fn send_bytes_with_fds(&mut self, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
        if !self.unix {
            return Err(Error::invalid(
                "file descriptors can only be passed over Unix sockets",
            ));
        }
        self.write_frame(bytes, fds, None)
    }

    /// Receives the next message's bytes and the fds that came with it
    /// (a pool worker's batch: the fds of its units' arguments).
    pub(crate) fn recv_bytes_with_fds(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        self.read_frame_with_fds(None)
    }

    /// Sends raw bytes, giving up after `timeout` (see
    /// [`send_timeout`](Connection::send_timeout)).
    ///
    /// ```
    /// let (mut a, _b) = brood::connection::pipe(true).unwrap();
    /// a.send_bytes_timeout(b"x", std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn send_bytes_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.write_frame(bytes, &[], crate::time::deadline(timeout))
    }

    /// Sends an open file descriptor (a file, a socket, a memfd) to the
    /// peer process, which gets its own copy with
    /// [`recv_fd`](Connection::recv_fd) (`SCM_RIGHTS`; Python's
    /// `reduction.send_handle`). Unix connections only.
    ///
    /// ```
    /// use std::io::{Read, Seek, Write};
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// let file = std::fs::File::open("/proc/self/stat").unwrap();
    /// a.send_fd(&file).unwrap();
    /// let got = std::fs::File::from(b.recv_fd().unwrap());
    /// assert!(got.metadata().unwrap().is_file());
    /// ```
    pub fn send_fd(&mut self, fd: &impl AsFd) -> Result<()> {
        if !self.unix {
            return Err(Error::invalid(
                "file descriptors can only be passed over Unix sockets",
            ));
        }
        let raw = fd.as_fd().as_raw_fd();
        self.write_frame(b"fd", &[raw], None)
    }

    fn write_frame(
        &mut self,
        payload: &[u8],
        fds: &[RawFd],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let fd = self.check_writable()?;
        if payload.len() > self.max_message {
            return Err(Error::simple(
                ErrorKind::TooLarge,
                format!(
                    "message of {} bytes is over this connection's limit of {} bytes",
                    payload.len(),
                    self.max_message
                ),
            ));
        }
        let mut header = [0u8; 12];
        let hlen = if payload.len() > 0x7fff_ffff {
            header[..4].copy_from_slice(&(-1i32).to_be_bytes());
            header[4..].copy_from_slice(&(payload.len() as u64).to_be_bytes());
            12
        } else {
            header[..4].copy_from_slice(&(payload.len() as i32).to_be_bytes());
            4
        };
        let mut parts: [&[u8]; 2] = [&header[..hlen], payload];
        let mut sent = 0;
        while !parts[0].is_empty() || !parts[1].is_empty() {
            let n = match self.write_some(fd, &parts, if sent == 0 { fds } else { &[] }, deadline) {
                Ok(n) => n,
                Err(e) => {
                    if sent > 0 {
                        // Part of the frame went out: the stream is cut.
                        self.break_off(
                            libc::SHUT_RDWR,
                            format!("a send stopped in the middle of a message ({e})"),
                        );
                    }
                    return Err(e);
                }
            };
            sent += n;
            let from_header = n.min(parts[0].len());
            parts[0] = &parts[0][from_header..];
            parts[1] = &parts[1][n - from_header..];
        }
        Ok(())
    }

    /// One `sendmsg` of the two parts (fds attached), waiting for room
    /// until `deadline`.
    fn write_some(
        &self,
        fd: RawFd,
        parts: &[&[u8]; 2],
        fds: &[RawFd],
        deadline: Option<Instant>,
    ) -> Result<usize> {
        let flags = libc::MSG_NOSIGNAL
            | if deadline.is_some() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
        loop {
            if let Some(deadline) = deadline {
                wait_fd(fd, libc::POLLOUT, Some(deadline))?;
            }
            match scm::sendmsg_fds(fd, parts, fds, flags) {
                Ok(n) => return Ok(n),
                Err(err) => match err.kind() {
                    io::ErrorKind::WouldBlock => {
                        if deadline.is_none() {
                            // A socket made non-blocking by its owner
                            // (`from_owned_fd`): wait instead of spinning.
                            wait_fd(fd, libc::POLLOUT, None)?;
                        }
                        continue;
                    }
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                        return Err(Error::simple(
                            ErrorKind::Closed,
                            "the peer closed the connection",
                        ));
                    }
                    _ => return Err(Error::os_error("send", err)),
                },
            }
        }
    }

    // ----- receiving -----

    /// Receives a value sent with [`send`](Connection::send) (Python's
    /// `recv`). [`ErrorKind::Closed`] once the peer has closed and
    /// everything it sent was read (Python's `EOFError`).
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.send(&Some(3.5)).unwrap();
    /// assert_eq!(b.recv::<Option<f64>>().unwrap(), Some(3.5));
    /// ```
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.recv_value(None)
    }

    /// Decodes the next frame where it lies (the read-ahead buffer, or a
    /// large message's own buffer, kept afterwards for the next one).
    fn recv_value<T: DeserializeOwned>(&mut self, deadline: Option<Instant>) -> Result<T> {
        // The fds that came with this message are the value's handles;
        // whatever it does not take is closed here.
        fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
            if fds.is_empty() {
                codec::decode(bytes)
            } else {
                handle::with_incoming(fds, || codec::decode(bytes))
            }
        }
        match self.next_frame(deadline)? {
            (Frame::Buffered { start, len }, fds) => {
                let value = decode(&self.rbuf[start..start + len], fds);
                self.consume(start + len);
                value
            }
            (Frame::Owned(msg), fds) => {
                let value = decode(&msg, fds);
                self.spare = msg;
                value
            }
        }
    }

    /// Receives a value, or [`ErrorKind::Timeout`] after `timeout`; a
    /// message half-read at the timeout is kept for the next receive.
    ///
    /// ```
    /// let (_a, mut b) = brood::connection::pipe(true).unwrap();
    /// let err = b.recv_timeout::<u8>(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout());
    /// ```
    pub fn recv_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
        self.recv_value(crate::time::deadline(timeout))
    }

    /// Receives one message's raw bytes (Python's `recv_bytes`).
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.send_bytes(&[0, 255]).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), [0, 255]);
    /// ```
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.read_frame(None)
    }

    /// Receives one message's raw bytes, or [`ErrorKind::Timeout`].
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.send_bytes(b"x").unwrap();
    /// assert_eq!(b.recv_bytes_timeout(std::time::Duration::from_secs(1)).unwrap(), b"x");
    /// ```
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.read_frame(crate::time::deadline(timeout))
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`). If `buf` is too short, the error is
    /// [`ErrorKind::BufferTooShort`] and the message is kept: the next
    /// receive returns it.
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// a.send_bytes(b"hello").unwrap();
    /// let mut small = [0u8; 2];
    /// assert_eq!(b.recv_bytes_into(&mut small).unwrap_err().kind(), brood::ErrorKind::BufferTooShort);
    /// let mut big = [0u8; 16];
    /// assert_eq!(b.recv_bytes_into(&mut big).unwrap(), 5);
    /// assert_eq!(&big[..5], b"hello");
    /// ```
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let msg = self.read_frame(None)?;
        if msg.len() > buf.len() {
            let needed = msg.len();
            self.pending = Some(msg);
            return Err(Error::simple(
                ErrorKind::BufferTooShort,
                format!(
                    "the message is {needed} bytes, the buffer only {}",
                    buf.len()
                ),
            ));
        }
        buf[..msg.len()].copy_from_slice(&msg);
        Ok(msg.len())
    }

    /// Receives a file descriptor sent with [`send_fd`](Connection::send_fd).
    ///
    /// ```
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// let (r, w) = brood::connection::pipe(true).unwrap();
    /// a.send_fd(&w).unwrap();
    /// let _copy = b.recv_fd().unwrap();
    /// # drop((r, w));
    /// ```
    pub fn recv_fd(&mut self) -> Result<OwnedFd> {
        let (msg, fds) = self.read_frame_with_fds(None)?;
        if msg != b"fd" {
            return Err(Error::simple(
                ErrorKind::Codec,
                "expected a file descriptor message",
            ));
        }
        // One fd is expected; any others the peer attached are closed.
        fds.into_iter().next().ok_or_else(|| {
            Error::simple(ErrorKind::Codec, "the message carried no file descriptor")
        })
    }

    /// Whether a message can be received without waiting, waiting up to
    /// `timeout` for one (`None`: as long as it takes; Python's `poll`).
    /// True also when the peer closed (the receive then reports it).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, mut b) = brood::connection::pipe(true).unwrap();
    /// assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    /// a.send(&1).unwrap();
    /// assert!(b.poll(Some(Duration::from_secs(1))).unwrap());
    /// ```
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let fd = self.check_readable()?;
        if self.ready_now() {
            return Ok(true);
        }
        let deadline = timeout.and_then(crate::time::deadline);
        match wait_fd(fd, libc::POLLIN, deadline) {
            Ok(()) => Ok(true),
            Err(e) if e.is_timeout() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether buffered data is waiting (a whole message may be there).
    fn ready_now(&self) -> bool {
        self.pending.is_some() || self.rbuf.len() > self.rpos
    }

    /// The next message's bytes, owned; fds that came with it are closed.
    fn read_frame(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>> {
        self.read_frame_with_fds(deadline).map(|(msg, _closed)| msg)
    }

    /// The next message's bytes and the fds that came with it.
    fn read_frame_with_fds(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        Ok(match self.next_frame(deadline)? {
            (Frame::Buffered { start, len }, fds) => {
                let msg = self.rbuf[start..start + len].to_vec();
                self.consume(start + len);
                (msg, fds)
            }
            (Frame::Owned(msg), fds) => (msg, fds),
        })
    }

    /// Hands out the fds of the message that takes the next `len` bytes of
    /// the stream (the one at `frame_start`), closes stale ones, and fails
    /// (closing the connection) if the kernel dropped some of its fds.
    fn claim_fds(&mut self, len: u64) -> Result<Vec<OwnedFd>> {
        let start = self.frame_start;
        let end = start.saturating_add(len);
        if let Some(at) = self.fds_lost_at
            && at < end
        {
            self.fds_lost_at = None;
            if at >= start {
                let why = "file descriptors sent with a message were dropped by the kernel \
                           (MSG_CTRUNC; is this process at its fd limit?), so the message \
                           is incomplete";
                self.break_off(libc::SHUT_RDWR, why);
                return Err(Error::os_error(
                    "recvmsg",
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{why}; the connection was closed"),
                    ),
                ));
            }
        }
        let mut mine = Vec::new();
        while let Some((at, _)) = self.fds.front() {
            if *at >= end {
                break;
            }
            let (at, batch) = self.fds.pop_front().expect("a batch");
            if at >= start {
                mine.extend(batch);
            }
        }
        self.frame_start = end;
        Ok(mine)
    }

    /// Files fds that a read of the bytes `[from, to]` (stream positions)
    /// brought. The kernel delivers fds with the first byte of the
    /// `sendmsg` that carried them and ends the read with that send's
    /// bytes, so the last byte read, `to`, lies in their message; a sender
    /// that attaches fds (brood, Python) attaches them to a message's first
    /// byte, so that message must start within this read. Fds anywhere
    /// else — in the middle of a message, or with a message no API here
    /// expects them on — are closed at once: a peer cannot pile up fds in
    /// this process (at most one batch waits per message, and only messages
    /// read ahead hold one).
    fn fds_arrived(
        &mut self,
        target: Target,
        from: u64,
        to: u64,
        fds: Vec<OwnedFd>,
        dropped: bool,
    ) {
        let owner = match target {
            // A large message's own buffer: it started before this read.
            Target::Partial => None,
            Target::ReadAhead => Some(self.message_holding(to)),
        };
        if owner.is_some_and(|start| start >= from) {
            if dropped && self.fds_lost_at.is_none() {
                self.fds_lost_at = Some(to);
            }
            if !fds.is_empty() {
                self.fds.push_back((to, fds));
            }
        }
        // Otherwise `fds` is dropped: closed now.
    }

    /// The stream position where the message holding stream position
    /// `pos` (already read ahead) starts.
    fn message_holding(&self, pos: u64) -> u64 {
        let mut i = self.rpos;
        let mut at = self.received - (self.rbuf.len() - self.rpos) as u64;
        loop {
            let Some((hlen, len)) = parse_header(&self.rbuf[i..]) else {
                return at;
            };
            let end = at.saturating_add(hlen as u64).saturating_add(len);
            if pos < end {
                return at;
            }
            // `end <= pos < received`: the whole message is in `rbuf`.
            i += (end - at) as usize;
            at = end;
        }
    }

    /// Reads until a whole message is there and says where it lies. A
    /// `Buffered` frame must be released with [`consume`](Self::consume).
    fn next_frame(&mut self, deadline: Option<Instant>) -> Result<(Frame, Vec<OwnedFd>)> {
        let fd = self.check_readable()?;
        if let Some(msg) = self.pending.take() {
            return Ok((Frame::Owned(msg), Vec::new()));
        }
        loop {
            if let Some((msg, want, hlen)) = &self.partial {
                if msg.len() >= *want {
                    let len = (*hlen + *want) as u64;
                    let (msg, _, _) = self.partial.take().expect("partial message");
                    let fds = self.claim_fds(len)?;
                    return Ok((Frame::Owned(msg), fds));
                }
                // A large message: read straight into its own buffer.
                if self.fill(fd, Target::Partial, deadline)? == 0 {
                    self.partial = None;
                    return Err(closed_mid_message());
                }
                continue;
            }
            let avail = &self.rbuf[self.rpos..];
            if let Some((hlen, len)) = parse_header(avail) {
                if len > self.max_message as u64 {
                    self.break_off(
                        libc::SHUT_RDWR,
                        format!("an incoming message of {len} bytes was over the limit"),
                    );
                    return Err(Error::simple(
                        ErrorKind::TooLarge,
                        format!(
                            "incoming message of {len} bytes is over this connection's limit of {} bytes; the connection was closed",
                            self.max_message
                        ),
                    ));
                }
                let len = len as usize;
                let body = &avail[hlen..];
                if body.len() >= len {
                    let fds = self.claim_fds((hlen + len) as u64)?;
                    return Ok((
                        Frame::Buffered {
                            start: self.rpos + hlen,
                            len,
                        },
                        fds,
                    ));
                }
                if len > READ_CHUNK {
                    // Reuse the last large buffer; never zero-fill it.
                    let mut msg = std::mem::take(&mut self.spare);
                    msg.clear();
                    msg.reserve_exact(len);
                    msg.extend_from_slice(body);
                    self.rbuf.clear();
                    self.rpos = 0;
                    self.partial = Some((msg, len, hlen));
                    continue;
                }
            }
            if self.fill(fd, Target::ReadAhead, deadline)? == 0 {
                return Err(if self.rbuf.len() > self.rpos {
                    closed_mid_message()
                } else {
                    Error::simple(ErrorKind::Closed, "the peer closed the connection")
                });
            }
        }
    }

    /// Releases the read-ahead bytes up to `end`.
    fn consume(&mut self, end: usize) {
        self.rpos = end;
        self.compact();
    }

    fn compact(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > READ_CHUNK {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }

    /// One read into the read-ahead buffer or the partial message, waiting
    /// until `deadline`; returns the byte count (0 at end of file).
    fn fill(&mut self, fd: RawFd, target: Target, deadline: Option<Instant>) -> Result<usize> {
        loop {
            if deadline.is_some() {
                wait_fd(fd, libc::POLLIN, deadline)?;
            }
            let flags = if deadline.is_some() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
            // Read into spare capacity: nothing is zero-filled first.
            let (buf, room): (&mut Vec<u8>, usize) = match target {
                Target::ReadAhead => {
                    self.rbuf.reserve(READ_CHUNK);
                    let room = self.rbuf.capacity() - self.rbuf.len();
                    (&mut self.rbuf, room)
                }
                Target::Partial => {
                    let (msg, want, _) = self.partial.as_mut().expect("partial message");
                    // `next_frame` reserved `want` bytes for it.
                    let room = *want - msg.len();
                    (msg, room)
                }
            };
            let mut fds = Vec::new();
            let got =
                scm::recv_into_spare(&Fd(fd), buf, room, self.unix.then_some(&mut fds), flags);
            match got {
                Ok(got) => {
                    let n = got.bytes;
                    // Bytes are kept even when fds were dropped: the
                    // message they belong to fails when it is reached,
                    // and every message before it is delivered.
                    let from = self.received;
                    self.received += n as u64;
                    if n > 0 && (!fds.is_empty() || got.fds_dropped) {
                        self.fds_arrived(target, from, self.received - 1, fds, got.fds_dropped);
                    }
                    return Ok(n);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        if deadline.is_none() {
                            // A socket made non-blocking by its owner
                            // (`from_owned_fd`): wait instead of spinning.
                            wait_fd(fd, libc::POLLIN, None)?;
                        }
                        continue;
                    }
                    io::ErrorKind::ConnectionReset => return Ok(0),
                    _ => return Err(Error::os_error("recv", e)),
                },
            }
        }
    }
}

/// Where [`Connection::next_frame`] found a whole message.
enum Frame {
    /// In the read-ahead buffer, at `start`, `len` bytes.
    Buffered { start: usize, len: usize },
    /// In a buffer of its own.
    Owned(Vec<u8>),
}

#[derive(Clone, Copy)]
enum Target {
    ReadAhead,
    Partial,
}

struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn closed_mid_message() -> Error {
    Error::simple(
        ErrorKind::Closed,
        "the peer closed the connection in the middle of a message",
    )
}

/// Decodes a frame header: `(header length, payload length)`, or `None`
/// until enough bytes are there. A negative length other than -1 is read
/// as huge (and so refused by the limit).
fn parse_header(buf: &[u8]) -> Option<(usize, u64)> {
    let first = i32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    if first == -1 {
        let len = u64::from_be_bytes(buf.get(4..12)?.try_into().ok()?);
        Some((12, len))
    } else if first < 0 {
        Some((4, u64::MAX))
    } else {
        Some((4, first as u64))
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes
/// ([`ErrorKind::Timeout`]).
fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> Result<()> {
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut pfd = [libc::pollfd {
            fd,
            events,
            revents: 0,
        }];
        match os::fd::poll(&mut pfd, left) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::timeout("timed out waiting for the connection"));
                }
            }
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::os_error("poll", err)),
        }
    }
}

impl AsFd for Connection {
    /// The connection's fd. Valid as long as the `Connection` lives, also
    /// after brood closed it because of something the peer sent (the
    /// socket is then shut down, its fd still open): only your own
    /// [`close`](Connection::close) releases it, and `as_fd` after that
    /// panics — nothing a peer sends can reach that panic.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// let (a, mut b) = brood::pipe(true).unwrap();
    /// b.set_max_message(2);
    /// let mut a = a;
    /// a.send_bytes(b"too long").unwrap();
    /// assert!(b.recv_bytes().is_err()); // the peer made brood close it
    /// assert!(b.closed());
    /// let _still_valid = b.as_fd();
    /// ```
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("as_fd on a Connection after its own close()")
            .as_fd()
    }
}

impl TryFrom<OwnedFd> for Connection {
    type Error = Error;

    /// See [`Connection::from_owned_fd`].
    fn try_from(fd: OwnedFd) -> Result<Connection> {
        Connection::from_owned_fd(fd)
    }
}

/// How a connection crosses to a child: its fd (through `brood::handle`),
/// its direction, kind and limit.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(
        serialize_with = "crate::handle::serialize_fd",
        deserialize_with = "crate::handle::deserialize_fd"
    )]
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    unix: bool,
    max_message: u64,
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fd = self
            .fd
            .as_ref()
            .filter(|_| self.broken.is_none())
            .ok_or_else(|| S::Error::custom("cannot send a closed connection"))?;
        if self.ready_now() || self.partial.is_some() {
            return Err(S::Error::custom(
                "cannot send a connection that holds data it has read ahead",
            ));
        }
        // `serialize_fd` duplicates; this borrowed copy only lives for the call.
        let borrowed = fd.try_clone().map_err(S::Error::custom)?;
        Wire {
            fd: borrowed,
            readable: self.readable,
            writable: self.writable,
            unix: self.unix,
            max_message: self.max_message as u64,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Connection, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let mut c = Connection::from_fd(wire.fd, wire.unix);
        c.readable = wire.readable;
        c.writable = wire.writable;
        c.max_message = usize::try_from(wire.max_message).unwrap_or(usize::MAX);
        Ok(c)
    }
}

/// Something [`wait`] can wait for: a connection (a message or end of
/// file), a listener (a client), a process (its exit), a pidfd.
///
/// ```
/// use brood::connection::Waitable;
/// let (mut a, b) = brood::pipe(true).unwrap();
/// assert!(!Waitable::ready_now(&b));
/// a.send(&1).unwrap();
/// assert!(Waitable::wait_fd(&b).is_some());
/// ```
pub trait Waitable {
    /// The fd that turns readable when the object is ready; `None` if it is
    /// ready (or finished) already.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether the object is ready without looking at its fd (buffered data).
    fn ready_now(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .filter(|_| self.broken.is_none())
            .map(AsFd::as_fd)
    }
    fn ready_now(&self) -> bool {
        Connection::ready_now(self) || self.closed()
    }
}

impl Waitable for os::PidFd {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl<R: DeserializeOwned> Waitable for crate::Process<R> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel()
    }
    fn ready_now(&self) -> bool {
        self.sentinel().is_none()
    }
}

/// Waits until at least one of `objects` is ready or `timeout` passes, and
/// returns the indices of those that are (Python's
/// `multiprocessing.connection.wait`); empty after a timeout.
///
/// ```
/// use std::time::Duration;
/// use brood::connection::{pipe, wait};
///
/// let (mut a1, b1) = pipe(true)?;
/// let (_a2, b2) = pipe(true)?;
/// a1.send(&"ready")?;
/// assert_eq!(wait(&[&b1, &b2], Some(Duration::from_secs(1)))?, vec![0]);
/// assert!(wait(&[&b2], Some(Duration::from_millis(10)))?.is_empty());
/// # Ok::<(), brood::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let now: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].ready_now())
        .collect();
    if !now.is_empty() {
        return Ok(now);
    }
    let mut fds: Vec<libc::pollfd> = objects
        .iter()
        .map(|o| libc::pollfd {
            fd: o.wait_fd().map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = timeout.and_then(crate::time::deadline);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // A negative fd (an object with nothing to wait on) is skipped.
        match os::fd::poll(&mut fds, left) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Vec::new());
                }
            }
            Ok(_) => return Ok((0..fds.len()).filter(|&i| fds[i].revents != 0).collect()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::os_error("poll", err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn headers() {
        assert_eq!(parse_header(&[0, 0, 0]), None);
        assert_eq!(parse_header(&[0, 0, 0, 5]), Some((4, 5)));
        assert_eq!(
            parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some((12, 1 << 32))
        );
        assert_eq!(parse_header(&[0x80, 0, 0, 0]), Some((4, u64::MAX)));
    }
}
