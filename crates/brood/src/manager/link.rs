//! One client connection, as both ends use it: the authenticated socket,
//! and, for a client on this host (a Unix socket), a pair of shared-memory
//! rings that carry the requests and replies instead of the socket.
//!
//! A round trip over a socket costs two system calls a side and two
//! wake-ups through the kernel's socket layer. Over the rings (brood's own
//! queue, `shm/ring.rs`) a message is a copy into shared memory; a side
//! waiting for one spins a little (while spinning pays off on this thread:
//! on busy CPUs the peer is not running while we spin) and then sleeps on
//! the *socket*: it raises its flag in a shared doorbell word, looks at its
//! ring once more, and blocks reading the socket. A side that has put a
//! message and finds the peer's flag up takes it down and writes one byte
//! to the socket. Sleeping on the socket rather than on a futex matters on
//! a busy machine: a socket wake-up is a "sync" one (the kernel runs the
//! woken thread on the waker's CPU, which is about to block), a futex
//! wake-up is not (the woken thread queues behind whatever its own CPU
//! runs): measured on 2 busy vCPUs, futex sleeping made a dict round trip
//! over rings 5-10x slower than over the socket, and this way it is not.
//!
//! The socket is also the liveness line: it reads end-of-file when the
//! peer's process is gone (the kernel closes its end), which wakes a
//! sleeper at once. A side busy putting into a full ring checks it every
//! [`LIVENESS`].
//!
//! Lost wake-ups cannot happen: the sleeper raises its flag, then (after a
//! SeqCst fence) looks at the ring; the waker commits its message, then
//! (after a SeqCst fence) looks at the flag. One of them sees the other.
//! A wake-up byte that arrives after the sleeper found its message by
//! itself is stale: it is read the next time that side sleeps (a spurious
//! wake-up, which looks again), or drained when the server asks whether
//! the client is still there.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use serde_bytes::ByteBuf;

use super::protocol::{Reply, Request};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::{GetError, Options, PutError, Queue};
use crate::shm::SharedMemory;

/// How often a side putting into a full ring asks whether its peer is
/// still there.
pub(crate) const LIVENESS: Duration = Duration::from_millis(100);

/// Bytes of each ring; a longer message streams through it in pieces.
const RING_BYTES: usize = 1 << 20;

/// The two rings of a local client (requests to the server, replies
/// back) and their doorbell: word [`CLIENT`] is up while the client
/// sleeps waiting for a reply, word [`SERVER`] while the server's thread
/// for it sleeps waiting for a request.
pub(crate) struct Rings {
    pub req: Queue<ByteBuf>,
    pub rep: Queue<ByteBuf>,
    pub bell: SharedMemory,
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

impl Rings {
    /// A fresh set (the client makes them and sends them over the socket).
    pub(crate) fn new() -> Result<Rings> {
        Ok(Rings {
            req: Queue::with_options(Options::new().max_bytes(RING_BYTES))?,
            rep: Queue::with_options(Options::new().max_bytes(RING_BYTES))?,
            bell: SharedMemory::new(64)?,
        })
    }

    /// A set received from a client, if its doorbell is large enough.
    pub(crate) fn received(
        req: Queue<ByteBuf>,
        rep: Queue<ByteBuf>,
        bell: SharedMemory,
    ) -> Option<Rings> {
        (bell.words().len() >= 2).then_some(Rings { req, rep, bell })
    }

    fn word(&self, side: usize) -> &AtomicU64 {
        &self.bell.words()[side]
    }
}

/// A connection to (or, in the server, from) one client.
pub(crate) struct Link {
    pub conn: Connection,
    pub rings: Option<Rings>,
}

fn closed() -> Error {
    Error::simple(ErrorKind::Closed, "the peer closed the connection")
}

/// The longest piece of a message one ring message carries: a longer
/// message goes as several, so that every ring message is whole (the
/// ring's own piece-wise messages would let a reader sleep on the socket
/// while a writer waits for room mid-message).
const PIECE: usize = 128 << 10;

/// Tags, the last byte of every ring message.
const WHOLE: u8 = 0;
const MORE: u8 = 1;
const LAST: u8 = 2;

/// Sends `value` as ring messages on `q` and wakes the peer (`peer`'s
/// doorbell word) if it sleeps.
fn send<T: serde::Serialize>(
    rings: &Rings,
    q: &Queue<ByteBuf>,
    conn: &Connection,
    peer: usize,
    value: &T,
) -> Result<()> {
    let mut bytes = crate::codec::encode(value)?;
    if bytes.len() < PIECE {
        bytes.push(WHOLE);
        return put(rings, q, conn, peer, bytes);
    }
    let count = bytes.len().div_ceil(PIECE);
    for (i, chunk) in bytes.chunks(PIECE).enumerate() {
        let mut piece = Vec::with_capacity(chunk.len() + 1);
        piece.extend_from_slice(chunk);
        piece.push(if i + 1 == count { LAST } else { MORE });
        put(rings, q, conn, peer, piece)?;
    }
    Ok(())
}

/// Puts one ring message; rings the doorbell after it (and while the ring
/// is full: its reader must be awake to make room).
fn put(
    rings: &Rings,
    q: &Queue<ByteBuf>,
    conn: &Connection,
    peer: usize,
    msg: Vec<u8>,
) -> Result<()> {
    let mut msg = ByteBuf::from(msg);
    loop {
        match q.put_timeout(msg, LIVENESS) {
            Ok(()) => break,
            Err(PutError::Timeout(back) | PutError::Full(back)) => {
                ring(rings, conn, peer)?;
                if ring_peer_gone(conn) {
                    return Err(closed());
                }
                msg = back;
            }
            Err(PutError::Encode(_, message)) => {
                return Err(Error::simple(ErrorKind::Codec, message));
            }
            Err(PutError::Closed(_)) => return Err(closed()),
            Err(PutError::Corrupt(_, message)) => return Err(scribbled(&message)),
        }
    }
    fence(Ordering::SeqCst);
    ring(rings, conn, peer)
}

/// Wakes `peer` if its flag is up.
fn ring(rings: &Rings, conn: &Connection, peer: usize) -> Result<()> {
    if rings.word(peer).swap(0, Ordering::SeqCst) != 0 {
        match rustix::net::send(conn, &[1], rustix::net::SendFlags::NOSIGNAL) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
            Err(_) => return Err(closed()),
        }
    }
    Ok(())
}

fn scribbled(message: &str) -> Error {
    Error::simple(
        ErrorKind::Closed,
        format!("the connection's shared memory was scribbled on: {message}"),
    )
}

/// Takes the next ring message from `q` if there is one.
fn take(q: &Queue<ByteBuf>) -> Result<Option<Vec<u8>>> {
    match q.try_get() {
        Ok(msg) => Ok(Some(msg.into_vec())),
        Err(GetError::Empty | GetError::Timeout) => Ok(None),
        Err(GetError::Decode(message)) => Err(Error::simple(ErrorKind::Codec, message)),
        Err(GetError::Closed) => Err(closed()),
        Err(GetError::Corrupt(message)) => Err(scribbled(&message)),
    }
}

/// The next message from `q` (its pieces put together, at most `limit`
/// bytes), decoded.
fn receive<T: serde::de::DeserializeOwned>(
    rings: &Rings,
    q: &Queue<ByteBuf>,
    conn: &Connection,
    me: usize,
    limit: usize,
) -> Result<T> {
    let mut whole: Vec<u8> = Vec::new();
    loop {
        let mut msg = next(rings, q, conn, me)?;
        let tag = msg.pop();
        if whole.len().saturating_add(msg.len()) > limit {
            return Err(Error::simple(
                ErrorKind::TooLarge,
                format!("a message over this connection's limit of {limit} bytes"),
            ));
        }
        match tag {
            Some(WHOLE) if whole.is_empty() => return crate::codec::decode(&msg),
            Some(MORE) => whole.extend_from_slice(&msg),
            Some(LAST) => {
                whole.extend_from_slice(&msg);
                return crate::codec::decode(&whole);
            }
            _ => {
                return Err(Error::simple(
                    ErrorKind::Closed,
                    "a ring message out of order: the connection is broken",
                ));
            }
        }
    }
}

/// The next ring message, sleeping on the socket (`me`'s doorbell word
/// up) when there is none.
fn next(rings: &Rings, q: &Queue<ByteBuf>, conn: &Connection, me: usize) -> Result<Vec<u8>> {
    loop {
        if let Some(msg) = take(q)? {
            return Ok(msg);
        }
        if crate::shm::ring::spin_until(|| !q.is_empty()) {
            continue;
        }
        let flag = rings.word(me);
        flag.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !q.is_empty() {
            flag.store(0, Ordering::SeqCst);
            continue;
        }
        // Sleep until a wake-up byte (or several, stale ones included)
        // or the end of the socket.
        let mut buf = [0u8; 64];
        match rustix::io::read(conn, &mut buf) {
            Ok(0) => {
                flag.store(0, Ordering::SeqCst);
                // The peer is gone; it may have sent first.
                return take(q)?.ok_or_else(closed);
            }
            Ok(_) | Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => return take(q)?.ok_or_else(closed),
        }
    }
}

/// Whether the peer of a ring-mode link is gone: the socket is at its end.
/// Stale wake-up bytes are read and dropped on the way.
pub(crate) fn ring_peer_gone(conn: &Connection) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match rustix::net::recv(conn, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((0, _)) => return true,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return false,
            Err(_) => return true,
        }
    }
}

impl Link {
    /// Client: sends one request.
    pub(crate) fn send_request(&mut self, request: Request) -> Result<()> {
        match &self.rings {
            Some(r) => send(r, &r.req, &self.conn, SERVER, &request),
            None => self.conn.send(&request),
        }
    }

    /// Client: the next reply.
    pub(crate) fn recv_reply(&mut self) -> Result<Reply> {
        match &self.rings {
            Some(r) => receive(r, &r.rep, &self.conn, CLIENT, usize::MAX),
            None => self.conn.recv::<Reply>(),
        }
    }

    /// Server: the next request.
    pub(crate) fn recv_request(&mut self) -> Result<Request> {
        match &self.rings {
            Some(r) => receive(r, &r.req, &self.conn, SERVER, super::server::MAX_REQUEST),
            None => self.conn.recv::<Request>(),
        }
    }

    /// Server: sends one reply.
    pub(crate) fn send_reply(&mut self, reply: Reply) -> Result<()> {
        match &self.rings {
            Some(r) => send(r, &r.rep, &self.conn, CLIENT, &reply),
            None => self.conn.send(&reply),
        }
    }

    /// Whether the link was cut (a send stopped mid-message).
    pub(crate) fn closed(&self) -> bool {
        self.conn.closed()
    }
}
