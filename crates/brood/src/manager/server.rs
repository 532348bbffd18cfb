//! The server: an accept loop, one thread per client connection, the
//! auth-key handshake in that thread, and sessions (one per client process)
//! whose end releases what they held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::link::{Link, Rings, ring_peer_gone};
use super::protocol::{Hello, Op, Out, Reply, Request, Welcome, WireError};
use super::registry::{Caller, Registry, Writer};
use crate::connection::{self, Address, Connection, Listener};
use crate::error::{Error, ErrorKind, Result};
use crate::queue::Queue;
use crate::shm::SharedMemory;
use serde_bytes::ByteBuf;

/// Live client connections a server accepts; more are closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// The largest request frame a server reads (64 MiB); a larger one closes
/// that client's connection before anything is allocated.
pub const MAX_REQUEST: usize = 64 << 20;
/// How long a new connection has to prove the auth key.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshake messages are short.
const HANDSHAKE_MAX: usize = 256;
/// Stack of a client thread: requests are decoded into the heap.
const CLIENT_STACK: usize = 256 << 10;

/// TCP keep-alive on manager connections (both ends): after this long
/// without traffic the kernel probes the peer...
///
/// ```
/// assert_eq!(brood::manager::KEEPALIVE_IDLE, std::time::Duration::from_secs(5));
/// ```
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// ...every this long...
///
/// ```
/// assert_eq!(brood::manager::KEEPALIVE_INTERVAL, std::time::Duration::from_secs(2));
/// ```
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// ...and gives up after this many unanswered probes; the same bound
/// (`TCP_USER_TIMEOUT`, idle + interval × count = 11 s) applies to data
/// sent and never acknowledged. So a peer host that vanishes without
/// closing its sockets (power loss, a cut cable) is noticed within 11 s:
/// the server ends that client's session (its locks are released, its
/// unfinished joinable-queue items move to `abandoned()`), and a proxy
/// call waiting on a vanished server fails with an `ErrorKind::Closed`
/// error. A host that is up but lost the connection (a reboot) answers
/// the first probe with a reset: noticed after [`KEEPALIVE_IDLE`].
///
/// ```
/// use brood::manager::{KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL};
/// let bound = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT;
/// assert_eq!(bound, std::time::Duration::from_secs(11));
/// ```
pub const KEEPALIVE_COUNT: u32 = 3;

/// Turns TCP keep-alive on for a TCP connection (a Unix socket needs none:
/// its peer is on this host, and the kernel closes it with the process).
/// Best effort: an option the kernel refuses leaves its default.
pub(crate) fn keep_alive(conn: &Connection) {
    use rustix::net::{AddressFamily, sockopt};
    match sockopt::socket_domain(conn) {
        Ok(family) if family == AddressFamily::INET || family == AddressFamily::INET6 => {}
        _ => return,
    }
    let _ = sockopt::set_socket_keepalive(conn, true);
    let _ = sockopt::set_tcp_keepidle(conn, KEEPALIVE_IDLE);
    let _ = sockopt::set_tcp_keepintvl(conn, KEEPALIVE_INTERVAL);
    let _ = sockopt::set_tcp_keepcnt(conn, KEEPALIVE_COUNT);
    let total = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT;
    let _ = sockopt::set_tcp_user_timeout(conn, total.as_millis() as u32);
}

struct Shared {
    registry: Registry,
    key: Vec<u8>,
    instance: u64,
    live: AtomicUsize,
    /// The abstract Unix name this (TCP) server also listens on.
    local: Option<String>,
    /// Open connections per client session.
    sessions: Mutex<HashMap<u64, usize>>,
}

/// Serves `listener` until the process ends. A TCP server also listens on
/// an abstract Unix name (`@brood-manager-<instance>`) that it tells its
/// clients in [`Welcome`]: one on the same host reconnects there, with the
/// same key, and gets shared-memory rings (`link.rs`).
pub(crate) fn run(listener: Listener, key: Vec<u8>, instance: u64) -> Result<()> {
    let local = match listener.address() {
        Address::Tcp(_) => {
            let name = format!("brood-manager-{instance:016x}");
            Listener::bind(&Address::Abstract(name.clone().into_bytes()), None)
                .ok()
                .map(|l| (name, l))
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        registry: Registry::default(),
        key,
        instance,
        live: AtomicUsize::new(0),
        local: local.as_ref().map(|(name, _)| name.clone()),
        sessions: Mutex::new(HashMap::new()),
    });
    if let Some((_, alias)) = local {
        let mine = shared.clone();
        // Should the thread not start, the alias is closed with it, and
        // clients that try it stay on TCP.
        let _ = std::thread::Builder::new()
            .name("brood-manager-local".into())
            .spawn(move || accept_loop(alias, &mine));
    }
    accept_loop(listener, &shared)
}

fn accept_loop(listener: Listener, shared: &Arc<Shared>) -> Result<()> {
    loop {
        let conn = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::InvalidState => return Err(e),
            Err(_) => {
                // EMFILE and friends: let connections close, then retry.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if shared.live.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            drop(conn);
            continue;
        }
        shared.live.fetch_add(1, Ordering::AcqRel);
        let mine = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("brood-manager-client".into())
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                serve_client(conn, &mine);
                mine.live.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve_client(mut conn: Connection, shared: &Shared) {
    keep_alive(&conn);
    conn.set_max_message(HANDSHAKE_MAX);
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    if handshake(&mut conn, &shared.key, deadline).is_err() {
        return;
    }
    let Ok(hello) = conn.recv_timeout::<Hello>(left(deadline)) else {
        return;
    };
    // A local client's rings (mapped here; a pair that does not map, or
    // fails its checks, leaves the link on the socket).
    let rings = if hello.rings {
        match conn.recv_timeout::<(Queue<ByteBuf>, Queue<ByteBuf>, SharedMemory)>(left(deadline)) {
            Ok((req, rep, bell)) => Rings::received(req, rep, bell),
            Err(e) if e.kind() == ErrorKind::Codec => None,
            Err(_) => return,
        }
    } else {
        None
    };
    conn.set_max_message(MAX_REQUEST);
    if conn
        .send(&Welcome {
            instance: shared.instance,
            rings: rings.is_some(),
            local: shared.local.clone(),
        })
        .is_err()
    {
        return;
    }
    let mut link = Link { conn, rings };
    let session = hello.session;
    *shared
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(session)
        .or_default() += 1;
    serve_requests(&mut link, shared, session);
    let ended = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let n = sessions.get_mut(&session).expect("a counted session");
        *n -= 1;
        *n == 0 && sessions.remove(&session).is_some()
    };
    if ended {
        shared.registry.end_session(session);
    }
}

fn serve_requests(link: &mut Link, shared: &Shared, session: u64) {
    // A pipelined request that failed, and how many pipelined requests
    // after it were dropped unrun: answered to the next request.
    let mut deferred: Option<(Error, u64)> = None;
    // A second handle on this connection, made when a `get` on a ring
    // queue first answers through it (with a deadline).
    let mut writer: Option<Writer> = None;
    loop {
        // Decoded where it lies in the read-ahead buffer (no copy). A frame
        // that does not decode gets an error reply (it is consumed whole);
        // oversized frames, a peer gone mid-frame: the connection ends.
        let request = match link.recv_request() {
            Ok(request) => request,
            Err(e) if e.kind() == ErrorKind::Codec => {
                if link.send_reply(Reply::Err(e.into())).is_err() {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        if request.quiet {
            if let Some((_, dropped)) = &mut deferred {
                *dropped += 1;
                continue;
            }
        } else if let Some((e, dropped)) = deferred.take() {
            let reply: Reply = Err(WireError {
                kind: e.kind(),
                message: format!(
                    "an earlier pipelined put failed: {e}; this request was not run{}",
                    if dropped > 0 {
                        format!(" and {dropped} later pipelined puts were dropped")
                    } else {
                        String::new()
                    }
                ),
            });
            if link.send_reply(reply).is_err() {
                return;
            }
            continue;
        }
        let Request { object, op, quiet } = request;
        let op = match op {
            // A pipelined put never waits: the connection's next frames are
            // already on their way.
            Op::Put(item, _) if quiet => Op::Put(item, Some(0)),
            op if quiet => {
                deferred = Some((Error::invalid(format!("{op:?} cannot be pipelined")), 0));
                continue;
            }
            op => op,
        };
        // In ring mode the socket is only the liveness line (a stale
        // wake-up byte is no request): a client gone reads end-of-file.
        let ring_mode = link.rings.is_some();
        if let (id, Op::Attach) = (object, &op) {
            // The ring of a plain queue, for a client on this host: the
            // reply, then the ring's fd on the socket (not in ring mode:
            // the socket is the doorbell there).
            let ring = if ring_mode {
                Err(Error::invalid(
                    "a queue's ring is sent over a socket link only",
                ))
            } else {
                shared.registry.ring_of(id)
            };
            let sent = match ring {
                Ok(q) => link
                    .send_reply(Ok(Out::Unit))
                    .and_then(|()| q.send_to(&mut link.conn)),
                Err(e) => link.send_reply(Err(e.into())),
            };
            if sent.is_err() {
                return;
            }
            continue;
        }
        let peer = &link.conn;
        let mut gone = || {
            if ring_mode {
                ring_peer_gone(peer)
            } else {
                connection::wait(&[peer], Some(Duration::ZERO)).map_or(true, |r| !r.is_empty())
            }
        };
        let mut get_writer = || {
            if ring_mode {
                return None;
            }
            if writer.is_none() {
                writer = peer.try_clone().ok().map(|w| Arc::new(Mutex::new(w)));
            }
            writer.clone()
        };
        let mut caller = Caller {
            session,
            gone: &mut gone,
            writer: &mut get_writer,
        };
        let out = match (object, op) {
            (0, Op::Create(how, name)) => shared.registry.create(how, name),
            (0, _) => Err(Error::invalid(
                "object 0 (the manager) only creates objects",
            )),
            (id, op) => shared.registry.apply(id, op, &mut caller),
        };
        let reply: Reply = match out {
            // The client left while we waited for it: nothing to answer.
            Err(e) if e.kind() == ErrorKind::Closed => return,
            // The operation wrote its answer itself.
            Ok(Out::Handed) => continue,
            Err(e) if quiet => {
                deferred = Some((e, 0));
                continue;
            }
            Ok(_) if quiet => continue,
            out => out.map_err(Into::into),
        };
        if link.send_reply(reply).is_err() {
            return;
        }
    }
}

/// Raises this (server) process's soft limit on open files to its hard
/// limit, as Go's runtime does for every program: each plain queue holds
/// its ring's fd, and each client connection a socket, so a server of
/// many queues or clients would otherwise stop at the usual soft 1024.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

// ----- Python's auth-key handshake, server side (challenge first) -----

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const DIGEST: &[u8] = b"{sha256}";

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

fn auth_error(message: &str) -> Error {
    Error::simple(ErrorKind::Auth, message.to_string())
}

/// Runs the handshake the way `Listener::accept` does, but here, in the
/// client's own thread, so a silent peer delays nobody else.
fn handshake(conn: &mut Connection, key: &[u8], deadline: Instant) -> Result<()> {
    let mut random = [0u8; 40];
    connection::fill_random(&mut random)?;
    let mut message = DIGEST.to_vec();
    message.extend_from_slice(&random);
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&message);
    conn.send_bytes_timeout(&frame, left(deadline))?;
    let response = conn.recv_bytes_timeout(left(deadline))?;
    let ok = response
        .strip_prefix(DIGEST)
        .is_some_and(|m| mac(key, &message).verify_slice(m).is_ok());
    if !ok {
        let _ = conn.send_bytes_timeout(FAILURE, left(deadline));
        return Err(auth_error("wrong digest"));
    }
    conn.send_bytes_timeout(WELCOME, left(deadline))?;
    let frame = conn.recv_bytes_timeout(left(deadline))?;
    let Some(message) = frame.strip_prefix(CHALLENGE) else {
        return Err(auth_error("no challenge from the client"));
    };
    if !message.starts_with(DIGEST) {
        return Err(auth_error("the client asked for another digest"));
    }
    let mut response = DIGEST.to_vec();
    response.extend_from_slice(&mac(key, message).finalize().into_bytes());
    conn.send_bytes_timeout(&response, left(deadline))?;
    if conn.recv_bytes_timeout(left(deadline))? == WELCOME {
        Ok(())
    } else {
        Err(auth_error("the client rejected our digest"))
    }
}

/// What a server child gets: where to listen, the key, and a connection to
/// report the bound address (or why it could not bind) on.
pub(crate) fn child_main(address: String, key: Vec<u8>, mut ready: Connection) {
    raise_fd_limit();
    let bound = address
        .parse()
        .and_then(|a| Listener::bind(&a, None))
        .map_err(|e| e.to_string());
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(&Err::<(String, u64), String>(e));
            return;
        }
    };
    let mut instance = [0u8; 8];
    if let Err(e) = connection::fill_random(&mut instance) {
        let _ = ready.send(&Err::<(String, u64), String>(e.to_string()));
        return;
    }
    let instance = u64::from_le_bytes(instance) | 1;
    if ready
        .send(&Ok::<(String, u64), String>((
            listener.address().to_string(),
            instance,
        )))
        .is_err()
    {
        return;
    }
    drop(ready);
    let _ = run(listener, key, instance);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_bytes::ByteBuf;

    use super::super::protocol::{Create, Hello, Op, Out, Reply, Request, Welcome};
    use crate::connection::Client;
    use crate::manager::Manager;

    /// A remote getter (socket link) that stops reading is cut off once the
    /// answer to its `get` does not go through within `HANDOFF_TIMEOUT`,
    /// and the item is not lost: it goes back into the queue for the next
    /// getter.
    #[test]
    fn a_remote_getter_that_stops_reading_is_cut_off_and_the_item_kept() {
        let key = b"hand-off".to_vec();
        let server = Manager::serve(&"127.0.0.1:0".parse().unwrap(), &key).unwrap();
        // A raw client on TCP (no rings): names the queue, then asks for an
        // item and never reads its answer.
        let mut raw = Client::connect(server.address(), Some(&key)).unwrap();
        raw.send(&Hello {
            session: 0x5eed,
            rings: false,
        })
        .unwrap();
        let _: Welcome = raw.recv().unwrap();
        let create = Op::Create(
            Create::Queue {
                maxsize: 0,
                joinable: false,
            },
            Some("q".into()),
        );
        let request = |object, op| Request {
            object,
            op,
            quiet: false,
        };
        raw.send(&request(0, create)).unwrap();
        let id = match raw.recv::<Reply>().unwrap() {
            Ok(Out::Created(id, _)) => id,
            other => panic!("unexpected reply {other:?}"),
        };
        raw.send(&request(id, Op::Get(None))).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // 32 MiB: more than the socket's buffers take while nobody reads.
        // The owner is on this host: it puts on the queue's ring itself,
        // and the raw getter's server thread takes the item from there.
        let q = server.named("q").queue::<ByteBuf>(0).unwrap();
        let item = ByteBuf::from(vec![7u8; 32 << 20]);
        let t = Instant::now();
        q.put(&item).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "a put waited");
        assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), item);
        assert!(
            t.elapsed() >= super::super::registry::HANDOFF_TIMEOUT - Duration::from_millis(500),
            "the item came back after {:?}: before the getter's deadline",
            t.elapsed()
        );
        // The raw getter never gets a whole answer: its connection is cut.
        assert!(raw.recv::<Reply>().is_err());
    }
}
