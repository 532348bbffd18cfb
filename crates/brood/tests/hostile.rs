//! A peer that does not play by the rules: attaches file descriptors where
//! none belong, makes the kernel drop fds, makes brood close the
//! connection. Nothing it sends may pile up fds in the receiver, lose a
//! message silently, or panic the receiving program. Also: connections that
//! travel over connections, and connections made from an fd.

#[macro_use]
mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use brood::connection::{Listener, wait};
use brood::{Connection, ErrorKind, Process, StartMethod};
use common::open_fds;

/// One `sendmsg` of `bytes` with `fd` attached (SCM_RIGHTS), as a hostile
/// peer would: the frame layout is the caller's business.
fn send_with_fd(sock: RawFd, bytes: &[u8], fd: RawFd) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid empty msghdr; the control buffer holds
    // CMSG_SPACE(4) bytes (24 on 64-bit Linux) in 32, aligned for cmsghdr.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::copy_nonoverlapping((&fd as *const RawFd).cast::<u8>(), libc::CMSG_DATA(cmsg), 4);
        let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        assert_eq!(
            n,
            bytes.len() as isize,
            "sendmsg: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A frame as a `Connection` writes it: 4-byte big-endian length, payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

/// The peer (a child process) sends 1,000 messages, each with an fd
/// attached; the receiver reads them as bytes and as values. Its fd count
/// stays where it was all along: fds no API asked for are closed at once.
fn thousand_messages_with_fds_leave_no_fd(m: StartMethod) {
    common::allow_fork();
    let (mut ours, theirs) = brood::pipe(true).unwrap();
    let mut peer = Process::builder().start_method(m).target_with(
        |c: Connection| {
            let null = std::fs::File::open("/dev/null").unwrap();
            let sock = c.as_fd().as_raw_fd();
            for i in 0..1000u32 {
                let payload = brood::codec::encode(&i).unwrap();
                send_with_fd(sock, &frame(&payload), null.as_raw_fd());
            }
        },
        theirs,
    );
    peer.start().unwrap();
    let before = open_fds();
    let mut most = before;
    for i in 0..1000u32 {
        let got = if i % 2 == 0 {
            let bytes = ours.recv_bytes().unwrap();
            brood::codec::decode::<u32>(&bytes).unwrap()
        } else {
            ours.recv::<u32>().unwrap()
        };
        assert_eq!(got, i, "messages arrive whole and in order");
        if i % 50 == 0 {
            most = most.max(open_fds());
        }
    }
    assert_eq!(open_fds(), before, "fds the peer attached stayed open");
    peer.join().unwrap();
    // At most one message read ahead may hold its fd for a moment.
    assert!(most <= before + 2, "fds piled up: {before} -> {most}");
}

/// Fds attached to every byte of a message (a stream of one-byte sends):
/// only one batch (the message's first byte) is ever held, and none once
/// the message is read.
#[test]
fn fds_on_every_byte_of_one_message_are_not_kept() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut conn = Connection::from_owned_fd(b.into()).unwrap();
    let null = dev_null();
    let raw_null = null.as_raw_fd();
    let payload = vec![7u8; 200];
    let bytes = frame(&payload);
    let before = open_fds();
    let writer = std::thread::spawn(move || {
        for byte in &bytes {
            send_with_fd(a.as_raw_fd(), std::slice::from_ref(byte), raw_null);
        }
        a
    });
    // Read while the sender trickles: the message arrives in ~200 reads.
    let got = conn.recv_bytes().unwrap();
    let a = writer.join().unwrap();
    assert_eq!(got, payload);
    assert_eq!(open_fds(), before);
    drop((a, null));
}

/// A hostile client on a Unix listener with an authkey sends its response
/// one byte at a time, each with an fd, and stalls before the last: the
/// server holds at most one of those fds while it waits, and none after
/// the handshake fails.
#[test]
fn fds_sent_mid_handshake_do_not_pile_up() {
    let path = std::env::temp_dir().join(format!("brood-hostile-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let address: brood::connection::Address = path.to_str().unwrap().parse().unwrap();
    let null = dev_null();
    let before = open_fds();
    let listener = Listener::bind(&address, Some(b"secret")).unwrap();
    let server = std::thread::spawn(move || {
        let got = listener.accept_timeout(Duration::from_secs(30));
        (got.map(|_| ()), listener)
    });
    let client = UnixStream::connect(&path).unwrap();
    // The server's challenge comes first; read and ignore it.
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut header = [0u8; 4];
    std::io::Read::read_exact(&mut &client, &mut header).unwrap();
    let mut challenge = vec![0u8; u32::from_be_bytes(header) as usize];
    std::io::Read::read_exact(&mut &client, &mut challenge).unwrap();
    // A 200-byte "response", every byte with an fd, all but the last.
    let response = frame(&[b'x'; 200]);
    let (last, head) = response.split_last().unwrap();
    for byte in head {
        send_with_fd(
            client.as_raw_fd(),
            std::slice::from_ref(byte),
            null.as_raw_fd(),
        );
    }
    // Give the server time to read what is there.
    std::thread::sleep(Duration::from_millis(300));
    let waiting = open_fds();
    // The listener, the client socket, the accepted socket, and at most
    // the one batch that came with the response's first byte.
    assert!(
        waiting <= before + 4,
        "the server holds the hostile client's fds: {before} -> {waiting}"
    );
    send_with_fd(
        client.as_raw_fd(),
        std::slice::from_ref(last),
        null.as_raw_fd(),
    );
    let (result, listener) = server.join().unwrap();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Auth);
    drop(client);
    drop(listener);
    assert_eq!(open_fds(), before);
}

/// A child whose fd table is full cannot take the fd that comes with a
/// message (the kernel truncates the control data, `MSG_CTRUNC`). The
/// message before it, read in the same `recvmsg`, is still delivered; the
/// one whose fd was dropped fails with a clear error and the connection is
/// closed (never left open having lost bytes).
fn truncated_fds_close_the_connection_and_lose_no_earlier_message(m: StartMethod) {
    common::allow_fork();
    let (mut ours, theirs) = brood::pipe(true).unwrap();
    let mut child = Process::builder().start_method(m).target_with(
        |mut c: Connection| -> (String, String, bool, String) {
            // Fill the fd table: the lowest free fd becomes the limit.
            // SAFETY: dup/close on fd 0 and setrlimit with a valid struct.
            unsafe {
                let lowest = libc::dup(0);
                assert!(lowest >= 0);
                libc::close(lowest);
                let limit = libc::rlimit {
                    rlim_cur: lowest as libc::rlim_t,
                    rlim_max: libc::RLIM_INFINITY,
                };
                let mut old: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
                let limit = libc::rlimit {
                    rlim_max: old.rlim_max,
                    ..limit
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
            }
            c.send(&"ready").unwrap();
            // Let all three messages queue up, so one read takes the first
            // and the fd-carrying second together.
            while !c.poll(Some(Duration::from_secs(10))).unwrap() {}
            std::thread::sleep(Duration::from_millis(200));
            let first = c.recv::<String>().map_err(|e| e.to_string()).unwrap();
            let second = match c.recv_fd() {
                Ok(_) => "received an fd at the fd limit?".to_string(),
                Err(e) => format!("{:?}: {e}", e.kind()),
            };
            let closed = c.closed();
            let third = match c.recv::<String>() {
                Ok(v) => v,
                Err(e) => format!("{:?}", e.kind()),
            };
            (first, second, closed, third)
        },
        theirs,
    );
    child.start().unwrap();
    assert_eq!(ours.recv::<String>().unwrap(), "ready");
    ours.send(&"first").unwrap();
    ours.send_fd(&dev_null()).unwrap();
    ours.send(&"third").unwrap();
    let (first, second, closed, third) = child.join().unwrap();
    assert_eq!(first, "first", "the message before the lost fd was lost");
    assert!(
        second.starts_with("Io:") && second.contains("dropped"),
        "{second}"
    );
    assert!(closed, "a connection that lost fds stays open");
    assert_eq!(third, "Closed");
}

/// A peer can make brood close a connection (a message over the limit);
/// `as_fd`, `wait` and every receive then behave, none panics.
#[test]
fn a_close_the_peer_caused_panics_nothing() {
    let (mut a, mut b) = brood::pipe(true).unwrap();
    b.set_max_message(8);
    a.send_bytes(&[1u8; 64]).unwrap();
    assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::TooLarge);
    assert!(b.closed());
    let fd = b.as_fd().as_raw_fd();
    assert!(fd >= 0);
    // Waitable and ready at once (the next receive reports the close).
    assert_eq!(wait(&[&b], Some(Duration::from_secs(5))).unwrap(), vec![0]);
    for _ in 0..3 {
        assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::Closed);
    }
    assert_eq!(b.send(&1).unwrap_err().kind(), ErrorKind::Closed);
    assert!(b.try_clone().is_err());
    // The peer learns: its sends fail or its receives see the end.
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_secs(5))
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
    b.close();
    assert!(b.closed());
}

/// A connection sent over another one (Python's `reduction` does this):
/// the receiver's copy talks to the same peer; the sender's copy is its own.
#[test]
fn a_connection_travels_over_a_connection() {
    let (mut a, mut b) = brood::pipe(true).unwrap();
    let (mut c, d) = brood::pipe(true).unwrap();
    let before = open_fds();
    a.send(&d).unwrap();
    drop(d);
    let mut got: Connection = b.recv().unwrap();
    got.send(&"via the received end").unwrap();
    assert_eq!(c.recv::<String>().unwrap(), "via the received end");
    c.send(&5u8).unwrap();
    assert_eq!(got.recv::<u8>().unwrap(), 5);
    // Inside a larger value, twice.
    let (e, f) = brood::pipe(false).unwrap();
    a.send(&(1u8, vec![e, f], "tail")).unwrap();
    let (one, mut ends, tail): (u8, Vec<Connection>, String) = b.recv().unwrap();
    assert_eq!((one, tail.as_str()), (1, "tail"));
    let mut f = ends.pop().unwrap();
    let mut e = ends.pop().unwrap();
    f.send(&"one way").unwrap();
    assert_eq!(e.recv::<String>().unwrap(), "one way");
    assert!(e.send(&1).is_err(), "the read end stays read-only");
    drop((e, f, got));
    // d's own copy was dropped before: only the received one was left.
    assert_eq!(open_fds(), before - 1);
    // Not over TCP: a clear error.
    let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || l.accept().unwrap());
    let mut tcp = brood::connection::Client::connect(&addr, None).unwrap();
    let _server = t.join().unwrap();
    let err = tcp.send(&c).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
}

/// A child receives a connection over its pipe (not as an argument) and
/// uses it to talk to a third party.
fn a_child_uses_a_connection_it_received(m: StartMethod) {
    common::allow_fork();
    let (mut ours, theirs) = brood::pipe(true).unwrap();
    let (mut far, near) = brood::pipe(true).unwrap();
    let mut child = Process::builder().start_method(m).target_with(
        |mut c: Connection| {
            let mut other: Connection = c.recv().unwrap();
            let n: u64 = other.recv().unwrap();
            other.send(&(n * 3)).unwrap();
            c.send(&"done").unwrap();
        },
        theirs,
    );
    child.start().unwrap();
    ours.send(&near).unwrap();
    drop(near);
    far.send(&14u64).unwrap();
    assert_eq!(far.recv::<u64>().unwrap(), 42);
    assert_eq!(ours.recv::<String>().unwrap(), "done");
    child.join().unwrap();
    // The child's copy is gone with it; ours was dropped: the end is closed.
    assert_eq!(
        far.recv_bytes_timeout(Duration::from_secs(10))
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
}

/// `Connection::from_owned_fd` takes stream sockets, Unix or TCP, and
/// refuses the rest with a clear error.
#[test]
fn connections_from_owned_fds() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut a = Connection::from_owned_fd(a.into()).unwrap();
    let mut b = Connection::try_from(OwnedFd::from(b)).unwrap();
    a.send(&[1u16, 2]).unwrap();
    assert_eq!(b.recv::<[u16; 2]>().unwrap(), [1, 2]);
    // fds pass over a Unix one.
    b.send_fd(&dev_null()).unwrap();
    let _fd = a.recv_fd().unwrap();

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
    let (server, _) = tcp.accept().unwrap();
    let mut client = Connection::from_owned_fd(client.into()).unwrap();
    let mut server = Connection::from_owned_fd(server.into()).unwrap();
    client.send_bytes(b"over tcp").unwrap();
    assert_eq!(server.recv_bytes().unwrap(), b"over tcp");
    assert_eq!(
        server.send_fd(&dev_null()).unwrap_err().kind(),
        ErrorKind::InvalidState
    );

    for (what, fd) in [
        ("a pipe", OwnedFd::from(std::io::pipe().unwrap().0)),
        ("a file", dev_null()),
        (
            "a datagram socket",
            OwnedFd::from(std::os::unix::net::UnixDatagram::unbound().unwrap()),
        ),
    ] {
        let err = Connection::from_owned_fd(fd).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{what}: {err}");
        assert!(err.to_string().contains("socket"), "{what}: {err}");
    }

    // A non-blocking socket: receives wait instead of spinning or failing.
    let (x, y) = UnixStream::pair().unwrap();
    y.set_nonblocking(true).unwrap();
    let mut y = Connection::from_owned_fd(y.into()).unwrap();
    let mut x = Connection::from_owned_fd(x.into()).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        x.send(&"late").unwrap();
        x
    });
    let started = Instant::now();
    assert_eq!(y.recv::<String>().unwrap(), "late");
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(t.join().unwrap());
}

suite!(
    thousand_messages_with_fds_leave_no_fd,
    truncated_fds_close_the_connection_and_lose_no_earlier_message,
    a_child_uses_a_connection_it_received,
);
