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

mod listener;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use listener::{Address, Client, Listener};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::os::{self, scm};

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
/// messages (the data in flight stays in cache: 117% vs 78% of a raw
/// socketpair with 4 MiB buffers, `bench/run --only pipes`), and the round
/// trip does not depend on it.
const SOCKET_BUFFER: libc::c_int = 256 << 10;

/// One end of a pipe or of a socket connection.
///
/// Methods take `&mut self`: one thread uses an end at a time. For a
/// second handle on the same end (say, a writer thread), use
/// [`try_clone`](Connection::try_clone). A `Connection` crosses to a child
/// as an argument under every start method (its fd travels with it), and a
/// forked child inherits those it captured.
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
    /// length so far is what arrived) and the length it will have.
    partial: Option<(Vec<u8>, usize)>,
    /// A large buffer kept from the last large message, for the next one.
    spare: Vec<u8>,
    /// Encoding buffer for `send`, kept between messages.
    wbuf: Vec<u8>,
    /// A message a too-short `recv_bytes_into` left for the next receive.
    pending: Option<Vec<u8>>,
    /// Fds that arrived with data and were not claimed yet.
    fds: VecDeque<OwnedFd>,
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
    let (a, b) =
        crate::launch::spawn::socketpair().map_err(|e| Error::os_error("socketpair", e))?;
    for fd in [&a, &b] {
        set_buffers(fd);
    }
    let mut first = Connection::from_fd(a, true);
    let mut second = Connection::from_fd(b, true);
    if !duplex {
        // SAFETY: shutdown(2) on an open socket touches no memory.
        unsafe {
            libc::shutdown(first.raw(), libc::SHUT_WR);
            libc::shutdown(second.raw(), libc::SHUT_RD);
        }
        first.writable = false;
        second.readable = false;
    }
    Ok((first, second))
}

fn set_buffers(fd: &impl AsRawFd) {
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: the option value is a valid c_int for the call's duration.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&SOCKET_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
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
        }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    fn open_fd(&self) -> Result<RawFd> {
        match &self.fd {
            Some(fd) => Ok(fd.as_raw_fd()),
            None => Err(Error::simple(ErrorKind::Closed, "the connection is closed")),
        }
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

    /// Whether [`close`](Connection::close) was called.
    ///
    /// ```
    /// let (mut a, _b) = brood::connection::pipe(true).unwrap();
    /// a.close();
    /// assert!(a.closed());
    /// ```
    pub fn closed(&self) -> bool {
        self.fd.is_none()
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
        let fd = self.open_fd()?;
        // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd we own.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(Error::os_error("dup", io::Error::last_os_error()));
        }
        // SAFETY: `dup` is fresh and owned by nothing else.
        let mut c = Connection::from_fd(unsafe { OwnedFd::from_raw_fd(dup) }, self.unix);
        c.readable = self.readable;
        c.writable = self.writable;
        c.max_message = self.max_message;
        Ok(c)
    }

    // ----- sending -----

    /// Sends a value through the codec (Python's `send`).
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
        let sent = codec::encode_into(&mut buf, value)
            .and_then(|()| self.write_frame(&buf, &[], deadline));
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
                        self.close();
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
                    io::ErrorKind::WouldBlock => continue,
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
        match self.next_frame(deadline)? {
            Frame::Buffered { start, len } => {
                let value = codec::decode(&self.rbuf[start..start + len]);
                self.consume(start + len);
                value
            }
            Frame::Owned(msg) => {
                let value = codec::decode(&msg);
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
        let msg = self.read_frame(None)?;
        if msg != b"fd" {
            return Err(Error::simple(
                ErrorKind::Codec,
                "expected a file descriptor message",
            ));
        }
        self.fds.pop_front().ok_or_else(|| {
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

    /// The next message's bytes, owned.
    fn read_frame(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>> {
        Ok(match self.next_frame(deadline)? {
            Frame::Buffered { start, len } => {
                let msg = self.rbuf[start..start + len].to_vec();
                self.consume(start + len);
                msg
            }
            Frame::Owned(msg) => msg,
        })
    }

    /// Reads until a whole message is there and says where it lies. A
    /// `Buffered` frame must be released with [`consume`](Self::consume).
    fn next_frame(&mut self, deadline: Option<Instant>) -> Result<Frame> {
        let fd = self.check_readable()?;
        if let Some(msg) = self.pending.take() {
            return Ok(Frame::Owned(msg));
        }
        loop {
            if let Some((msg, want)) = &self.partial {
                if msg.len() >= *want {
                    let (msg, _) = self.partial.take().expect("partial message");
                    return Ok(Frame::Owned(msg));
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
                    self.close();
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
                    return Ok(Frame::Buffered {
                        start: self.rpos + hlen,
                        len,
                    });
                }
                if len > READ_CHUNK {
                    // Reuse the last large buffer; never zero-fill it.
                    let mut msg = std::mem::take(&mut self.spare);
                    msg.clear();
                    msg.reserve_exact(len);
                    msg.extend_from_slice(body);
                    self.rbuf.clear();
                    self.rpos = 0;
                    self.partial = Some((msg, len));
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
            let (ptr, room): (*mut u8, usize) = match target {
                Target::ReadAhead => {
                    self.rbuf.reserve(READ_CHUNK);
                    let room = self.rbuf.capacity() - self.rbuf.len();
                    (self.rbuf.spare_capacity_mut().as_mut_ptr().cast(), room)
                }
                Target::Partial => {
                    let (msg, want) = self.partial.as_mut().expect("partial message");
                    // `next_frame` reserved `want` bytes for it.
                    let room = *want - msg.len();
                    (msg.spare_capacity_mut().as_mut_ptr().cast(), room)
                }
            };
            let got = if self.unix {
                let mut fds = Vec::new();
                // SAFETY: `ptr` is the buffer's spare capacity, at least
                // `room` bytes (reserved above, or the message's length).
                let r = unsafe { scm::recv_raw_with_fds(&Fd(fd), ptr, room, &mut fds, flags) };
                self.fds.extend(fds);
                r
            } else {
                // SAFETY: as above.
                let n = unsafe { libc::recv(fd, ptr.cast(), room, flags) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            };
            match got {
                Ok(n) => {
                    let buf: &mut Vec<u8> = match target {
                        Target::ReadAhead => &mut self.rbuf,
                        Target::Partial => &mut self.partial.as_mut().expect("partial message").0,
                    };
                    // SAFETY: the kernel wrote `n` bytes into the spare capacity.
                    unsafe { buf.set_len(buf.len() + n) };
                    return Ok(n);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
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
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, os::duration_to_poll_ms(left)) };
        if n > 0 {
            return Ok(());
        }
        if n == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::timeout("timed out waiting for the connection"));
            }
            continue;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::os_error("poll", err));
        }
    }
}

impl AsFd for Connection {
    /// The connection's fd (panics if it was closed; check
    /// [`closed`](Connection::closed)).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("the connection is closed").as_fd()
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
        self.fd.as_ref().map(AsFd::as_fd)
    }
    fn ready_now(&self) -> bool {
        Connection::ready_now(self) || self.fd.is_none()
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
        // SAFETY: `fds` is a valid array of pollfds for the call.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                os::duration_to_poll_ms(left),
            )
        };
        if n > 0 {
            return Ok((0..fds.len()).filter(|&i| fds[i].revents != 0).collect());
        }
        if n == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
            continue;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::os_error("poll", err));
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
