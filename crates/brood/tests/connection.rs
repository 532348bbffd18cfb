//! Pipes and connections with real processes and hostile peers.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use brood::connection::{self, Address, Client, Listener, pipe, wait};
use brood::{Connection, ErrorKind, Process, StartMethod};
use serde::{Deserialize, Serialize};

/// Writes raw bytes on a connection's fd, bypassing its framing.
fn raw_write(c: &Connection, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length; the fd is open.
    let n = unsafe { libc::write(c.as_fd().as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n, bytes.len() as isize);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unit;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Newtype(i64);
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TupleStruct(u8, String, Vec<bool>);
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fields {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    nested: Option<Box<Fields>>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Newtype(u32),
    Tuple(i8, f32),
    Struct { x: f64, y: f64 },
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(i64),
    Text(String),
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flattened {
    id: u32,
    #[serde(flatten)]
    extra: BTreeMap<String, u32>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Internally {
    A { a: u8 },
    B { b: String },
}

fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
    a: &mut Connection,
    b: &mut Connection,
    v: T,
) {
    a.send(&v).unwrap();
    assert_eq!(b.recv::<T>().unwrap(), v);
}

#[test]
fn every_serde_shape_round_trips() {
    let (mut a, mut b) = pipe(true).unwrap();
    let (a, b) = (&mut a, &mut b);
    round_trip(a, b, ());
    round_trip(a, b, true);
    round_trip(a, b, -5i8);
    round_trip(a, b, u64::MAX);
    round_trip(a, b, i64::MIN);
    round_trip(a, b, 1.5f32);
    round_trip(a, b, f64::INFINITY);
    round_trip(a, b, 'é');
    round_trip(a, b, String::from("héllo wörld"));
    round_trip(a, b, String::new());
    round_trip(a, b, vec![0u8, 1, 255]);
    round_trip(a, b, Vec::<u32>::new());
    round_trip(a, b, (1u8, "two".to_string(), 3.0f64));
    round_trip(a, b, [7u16; 5]);
    round_trip(a, b, Some(Some(3)));
    round_trip(a, b, None::<u8>);
    round_trip(a, b, Unit);
    round_trip(a, b, Newtype(-9));
    round_trip(a, b, TupleStruct(1, "x".into(), vec![true, false]));
    round_trip(
        a,
        b,
        Fields {
            name: "outer".into(),
            tags: vec!["t".into()],
            nested: Some(Box::new(Fields {
                name: "inner".into(),
                tags: vec![],
                nested: None,
            })),
        },
    );
    for s in [
        Shape::Unit,
        Shape::Newtype(4),
        Shape::Tuple(-1, 0.5),
        Shape::Struct { x: 1.0, y: -2.0 },
    ] {
        round_trip(a, b, s);
    }
    round_trip(
        a,
        b,
        vec![Untagged::Number(5), Untagged::Text("five".into())],
    );
    round_trip(
        a,
        b,
        Flattened {
            id: 1,
            extra: [("k".to_string(), 2u32)].into_iter().collect(),
        },
    );
    round_trip(
        a,
        b,
        vec![Internally::A { a: 1 }, Internally::B { b: "b".into() }],
    );
    round_trip(a, b, HashMap::from([((1u8, 2u8), "tuple key".to_string())]));
    round_trip(a, b, BTreeMap::from([(-1i32, vec![Some(1u8)])]));
    round_trip(a, b, vec![1u32; 300_000]);
    let nan: f64 = {
        a.send(&f64::NAN).unwrap();
        b.recv().unwrap()
    };
    assert!(nan.is_nan());
}

#[test]
fn a_one_way_pipe_has_a_read_end_and_a_write_end() {
    let (mut r, mut w) = pipe(false).unwrap();
    w.send(&"one way").unwrap();
    assert_eq!(r.recv::<String>().unwrap(), "one way");
    assert_eq!(r.send(&1).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(w.recv::<u8>().unwrap_err().kind(), ErrorKind::InvalidState);
}

#[test]
fn a_short_buffer_keeps_the_message() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send_bytes(b"0123456789").unwrap();
    a.send_bytes(b"next").unwrap();
    let mut small = [0u8; 4];
    let err = b.recv_bytes_into(&mut small).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BufferTooShort);
    assert!(err.to_string().contains("10 bytes"), "{err}");
    assert_eq!(b.recv_bytes().unwrap(), b"0123456789");
    assert_eq!(b.recv_bytes_into(&mut small).unwrap(), 4);
    assert_eq!(&small, b"next");
}

#[test]
fn the_peer_closing_gives_closed_never_a_hang() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send(&1u8).unwrap();
    drop(a);
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    assert_eq!(b.recv::<u8>().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(b.send(&2u8).unwrap_err().kind(), ErrorKind::Closed);
    b.close();
    assert_eq!(b.recv::<u8>().unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn a_peer_dying_mid_frame_gives_closed() {
    common::allow_fork();
    let (mut mine, theirs) = pipe(true).unwrap();
    let mut p = Process::fork(move || -> () {
        // A header promising 100 bytes, 50 of them, then death.
        let mut frame = 100i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[7u8; 50]);
        raw_write(&theirs, &frame);
        brood::os::exit_now(0)
    });
    p.start().unwrap();
    let err = mine
        .recv_bytes_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(err.to_string().contains("middle of a message"), "{err}");
    let _ = p.join();
}

#[test]
fn an_oversized_frame_is_refused_without_allocating_it() {
    let (a, mut b) = pipe(true).unwrap();
    // -1 then an 8-byte length of 1 TiB: nothing of that size may be allocated.
    let mut header = (-1i32).to_be_bytes().to_vec();
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    raw_write(&a, &header);
    let err = b.recv_bytes().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    // The stream position is lost, so the connection is closed, as Python does.
    assert!(b.closed());
    // A negative length is garbage, refused the same way.
    let (a, mut b) = pipe(true).unwrap();
    raw_write(&a, &(-7i32).to_be_bytes());
    assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::TooLarge);
}

#[test]
fn sending_over_the_limit_is_refused_and_the_connection_stays_usable() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.set_max_message(8);
    assert_eq!(
        a.send_bytes(&[0u8; 9]).unwrap_err().kind(),
        ErrorKind::TooLarge
    );
    a.send_bytes(b"fits").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"fits");
}

#[test]
fn garbage_payload_is_a_codec_error_and_the_connection_stays_usable() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send_bytes(&[0xc1, 0xff, 0x00]).unwrap();
    a.send(&"after the garbage").unwrap();
    assert_eq!(
        b.recv::<Vec<String>>().unwrap_err().kind(),
        ErrorKind::Codec
    );
    assert_eq!(b.recv::<String>().unwrap(), "after the garbage");
}

#[test]
fn a_timeout_mid_message_keeps_what_was_read() {
    let (a, mut b) = pipe(true).unwrap();
    let mut frame = 6i32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"hel");
    raw_write(&a, &frame);
    let t = Instant::now();
    assert!(
        b.recv_bytes_timeout(Duration::from_millis(50))
            .unwrap_err()
            .is_timeout()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    raw_write(&a, b"lo!");
    assert_eq!(
        b.recv_bytes_timeout(Duration::from_secs(5)).unwrap(),
        b"hello!"
    );
    // A large message split across a timeout, too.
    let (mut a, mut b) = pipe(true).unwrap();
    let big = vec![3u8; 1 << 20];
    let mut frame = (big.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&big[..1000]);
    raw_write(&a, &frame);
    assert!(
        b.recv_bytes_timeout(Duration::from_millis(30))
            .unwrap_err()
            .is_timeout()
    );
    let rest = big[1000..].to_vec();
    let writer = std::thread::spawn(move || {
        // SAFETY: `rest` is valid for reads of its length.
        let fd = a.as_fd().as_raw_fd();
        let mut off = 0;
        while off < rest.len() {
            // SAFETY: as above.
            let n = unsafe { libc::write(fd, rest[off..].as_ptr().cast(), rest.len() - off) };
            assert!(n > 0);
            off += n as usize;
        }
        a.send_bytes(b"then this").unwrap();
    });
    assert_eq!(b.recv_bytes_timeout(Duration::from_secs(10)).unwrap(), big);
    assert_eq!(b.recv_bytes().unwrap(), b"then this");
    writer.join().unwrap();
}

#[test]
fn a_peer_that_never_reads_gives_a_send_timeout() {
    let (mut a, _b) = pipe(true).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let t = Instant::now();
    let err = loop {
        match a.send_bytes_timeout(&chunk, Duration::from_millis(100)) {
            Ok(()) => assert!(
                t.elapsed() < Duration::from_secs(20),
                "buffers never filled"
            ),
            Err(e) => break e,
        }
    };
    assert!(err.is_timeout(), "{err}");
}

#[test]
fn a_silent_peer_gives_a_recv_timeout() {
    let (_a, mut b) = pipe(true).unwrap();
    let t = Instant::now();
    assert!(
        b.recv_timeout::<u8>(Duration::from_millis(100))
            .unwrap_err()
            .is_timeout()
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(!b.poll(Some(Duration::from_millis(10))).unwrap());
}

fn echo_doubled(mut c: Connection) {
    // Stops on a sentinel, not on end of file: a forked child holds a copy
    // of the parent's end too, so closing it there is no EOF here (the same
    // holds in Python).
    while let Ok(n) = c.recv::<u64>() {
        if n == u64::MAX {
            break;
        }
        c.send(&(n * 2)).unwrap();
    }
}

#[test]
fn connections_pass_to_children_under_every_start_method() {
    common::allow_fork();
    for m in StartMethod::ALL {
        let (mut mine, theirs) = pipe(true).unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .target_with(echo_doubled, theirs);
        p.start().unwrap();
        for n in 0..10u64 {
            mine.send(&n).unwrap();
            assert_eq!(
                mine.recv_timeout::<u64>(Duration::from_secs(10)).unwrap(),
                2 * n,
                "{m}"
            );
        }
        mine.send(&u64::MAX).unwrap();
        p.join_timeout(Duration::from_secs(10)).unwrap();
    }
}

fn write_into_received_file(mut c: Connection) {
    let mut f = std::fs::File::from(c.recv_fd().unwrap());
    f.write_all(b"the child wrote this").unwrap();
    c.send(&"done").unwrap();
}

#[test]
fn a_child_writes_into_a_file_whose_fd_it_received() {
    common::allow_fork();
    for m in StartMethod::ALL {
        let path = std::env::temp_dir().join(format!("brood-fdpass-{}-{m}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let (mut mine, theirs) = pipe(true).unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .target_with(write_into_received_file, theirs);
        p.start().unwrap();
        mine.send_fd(&file).unwrap();
        assert_eq!(
            mine.recv_timeout::<String>(Duration::from_secs(10))
                .unwrap(),
            "done"
        );
        p.join().unwrap();
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "the child wrote this", "{m}");
    }
}

#[test]
fn wait_reports_connections_and_process_sentinels() {
    let (mut a, b) = pipe(true).unwrap();
    let mut p = Process::new(|| std::thread::sleep(Duration::from_millis(100)));
    p.start().unwrap();
    assert!(
        wait(&[&b, &p], Some(Duration::from_millis(10)))
            .unwrap()
            .is_empty()
    );
    a.send(&1).unwrap();
    assert_eq!(
        wait(&[&b, &p], Some(Duration::from_secs(5))).unwrap(),
        vec![0]
    );
    let (_c, d) = pipe(true).unwrap();
    assert_eq!(
        wait(&[&d, &p], Some(Duration::from_secs(10))).unwrap(),
        vec![1]
    );
    p.join().unwrap();
    // A joined process is ready at once.
    assert_eq!(wait(&[&d, &p], None).unwrap(), vec![1]);
}

fn serve_one(listener_addr: (String, Option<Vec<u8>>)) -> String {
    let (addr, key) = listener_addr;
    let mut c = Client::connect(&addr.parse().unwrap(), key.as_deref()).unwrap();
    c.send(&"ping").unwrap();
    c.recv::<String>().unwrap()
}

#[test]
fn listener_and_client_over_unix_path_abstract_and_tcp_with_an_authkey() {
    let path = std::env::temp_dir().join(format!("brood-listener-{}.sock", std::process::id()));
    let addresses = [
        Address::Unix(path.clone()),
        format!("@brood-test-{}", std::process::id())
            .parse()
            .unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ];
    for addr in addresses {
        for key in [None, Some(b"sesame".to_vec())] {
            let listener = Listener::bind(&addr, key.as_deref()).unwrap();
            let mut p =
                Process::with_args(serve_one, (listener.address().to_string(), key.clone()));
            p.start().unwrap();
            let mut conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(
                conn.recv_timeout::<String>(Duration::from_secs(10))
                    .unwrap(),
                "ping"
            );
            conn.send(&"pong").unwrap();
            assert_eq!(p.join().unwrap(), "pong", "{addr}");
        }
    }
    // The socket file is removed with its listener.
    assert!(!path.exists());
}

fn connect_with(args: (String, Vec<u8>)) -> (ErrorKind, bool) {
    let err = Client::connect_timeout(
        &args.0.parse().unwrap(),
        Some(&args.1),
        Duration::from_secs(10),
    )
    .unwrap_err();
    (err.kind(), err.to_string().contains("rejected"))
}

#[test]
fn a_wrong_authkey_fails_on_both_sides_and_no_data_is_exchanged() {
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"right key")).unwrap();
    let mut p = Process::with_args(
        connect_with,
        (listener.address().to_string(), b"wrong key".to_vec()),
    );
    p.start().unwrap();
    let err = listener
        .accept_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert_eq!(p.join().unwrap(), (ErrorKind::Auth, true));
    // A client without any key against a keyed listener: refused too.
    let mut p = Process::with_args(
        |addr: String| {
            let mut c = Client::connect(&addr.parse().unwrap(), None).unwrap();
            let _ = c.send(&"sneaky data");
            // Every frame until the server closes.
            let mut frames = Vec::new();
            while let Ok(f) = c.recv_bytes_timeout(Duration::from_secs(10)) {
                frames.push(f);
            }
            frames
        },
        listener.address().to_string(),
    );
    p.start().unwrap();
    let err = listener
        .accept_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    // The client got the challenge, then a failure (its data was taken
    // for a wrong answer), never a welcome.
    let frames = p.join().unwrap();
    assert!(
        frames
            .first()
            .is_some_and(|f| f.starts_with(b"#CHALLENGE#")),
        "{frames:?}"
    );
    assert_eq!(&frames[1..], [b"#FAILURE#".to_vec()], "{frames:?}");
}

/// Python's auth handshake as CPython 3.12+ ships it
/// (Lib/multiprocessing/connection.py): SHA-256 with a `{sha256}` prefix.
/// The `python3` here may be 3.11, whose handshake is HMAC-MD5 only, so on
/// an older Python these functions, copied from 3.12, stand in for the
/// module's own; on 3.12+ the module's are used.
const PY_AUTH: &str = r#"
import hmac, os, sys
from multiprocessing import connection as mpc
CHALLENGE, WELCOME, FAILURE = b'#CHALLENGE#', b'#WELCOME#', b'#FAILURE#'
def deliver_challenge(c, authkey):
    message = b'{sha256}' + os.urandom(40)
    c.send_bytes(CHALLENGE + message)
    response = c.recv_bytes(256)
    expected = b'{sha256}' + hmac.new(authkey, message, 'sha256').digest()
    if hmac.compare_digest(response, expected):
        c.send_bytes(WELCOME)
    else:
        c.send_bytes(FAILURE)
        raise mpc.AuthenticationError('digest received was wrong')
def answer_challenge(c, authkey):
    message = c.recv_bytes(256)
    assert message[:len(CHALLENGE)] == CHALLENGE
    message = message[len(CHALLENGE):]
    c.send_bytes(b'{sha256}' + hmac.new(authkey, message, 'sha256').digest())
    if c.recv_bytes(256) != WELCOME:
        raise mpc.AuthenticationError('digest sent was rejected')
if sys.version_info < (3, 12):
    mpc.deliver_challenge, mpc.answer_challenge = deliver_challenge, answer_challenge
"#;

#[test]
fn python_clients_and_listeners_speak_the_same_protocol() {
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"shared key")).unwrap();
    let Address::Tcp(addr) = listener.address().clone() else {
        unreachable!()
    };
    let script = format!(
        "{PY_AUTH}\n\
         from multiprocessing.connection import Client\n\
         c = Client(('127.0.0.1', {port}), authkey=b'shared key')\n\
         c.send_bytes(b'from python')\n\
         print(c.recv_bytes().decode())\n",
        port = addr.port()
    );
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        conn.recv_bytes_timeout(Duration::from_secs(20)).unwrap(),
        b"from python"
    );
    conn.send_bytes(b"from rust").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from rust");

    // And a brood Client against Python's Listener, with a wrong key first.
    let script = format!(
        "{PY_AUTH}\n\
         from multiprocessing.connection import Listener\n\
         l = Listener(('127.0.0.1', 0), authkey=b'py key')\n\
         print(l.address[1], flush=True)\n\
         for _ in range(2):\n\
         \x20   try:\n\
         \x20       c = l.accept()\n\
         \x20   except Exception as e:\n\
         \x20       print('refused', type(e).__name__, flush=True)\n\
         \x20       continue\n\
         \x20   c.send_bytes(c.recv_bytes().upper())\n"
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr: Address = format!("127.0.0.1:{}", line.trim()).parse().unwrap();
    let err = Client::connect_timeout(&addr, Some(b"not it"), Duration::from_secs(20)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "refused AuthenticationError");
    let mut c = Client::connect_timeout(&addr, Some(b"py key"), Duration::from_secs(20)).unwrap();
    c.send_bytes(b"shout").unwrap();
    assert_eq!(
        c.recv_bytes_timeout(Duration::from_secs(20)).unwrap(),
        b"SHOUT"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn python_311_framing_without_a_key() {
    // Whatever the Python version, the frames are the same bytes.
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    let Address::Tcp(addr) = listener.address().clone() else {
        unreachable!()
    };
    let script = format!(
        "from multiprocessing.connection import Client\n\
         c = Client(('127.0.0.1', {port}))\n\
         c.send_bytes(b'x' * 100000)\n\
         print(len(c.recv_bytes()))\n",
        port = addr.port()
    );
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        conn.recv_bytes_timeout(Duration::from_secs(20)).unwrap(),
        vec![b'x'; 100_000]
    );
    conn.send_bytes(&[0u8; 70_000]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "70000");
}

#[test]
fn connection_api_surface() {
    let (a, _b) = pipe(true).unwrap();
    assert!(a.readable() && a.writable() && !a.closed());
    assert_eq!(a.max_message(), connection::DEFAULT_MAX_MESSAGE);
    // A connection cannot be encoded outside a transfer to a child.
    assert_eq!(
        brood::codec::encode(&a).unwrap_err().kind(),
        ErrorKind::Codec
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any byte stream, then end of file: every receive ends in a value
        /// or an error, never a panic or a hang, and never allocates more
        /// than the limit.
        #[test]
        fn arbitrary_streams_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..2048), limit in 0usize..4096) {
            let (a, mut b) = pipe(true).unwrap();
            b.set_max_message(limit);
            raw_write(&a, &stream);
            drop(a);
            for _ in 0..stream.len() + 2 {
                match b.recv::<Vec<String>>() {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::Closed | ErrorKind::TooLarge) => break,
                    Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Codec),
                }
            }
        }

        /// Every message sent whole comes back whole, whatever its bytes.
        #[test]
        fn messages_round_trip(messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 0..20)) {
            let (mut a, mut b) = pipe(true).unwrap();
            let sent = messages.clone();
            let writer = std::thread::spawn(move || {
                for m in &sent {
                    a.send_bytes(m).unwrap();
                }
            });
            for m in &messages {
                prop_assert_eq!(&b.recv_bytes_timeout(Duration::from_secs(10)).unwrap(), m);
            }
            writer.join().unwrap();
        }

        /// The codec's decoder on arbitrary bytes: an error or a value.
        #[test]
        fn codec_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = brood::codec::decode::<(Vec<u32>, Option<String>, BTreeMap<String, f64>)>(&bytes);
            let _ = brood::codec::decode::<Shape>(&bytes);
        }
    }
}
