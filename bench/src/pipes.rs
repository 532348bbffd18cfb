//! The pipes table: one child process per transport, started once; then
//!
//! - round trip: the parent sends an 8-byte message, the child echoes it;
//!   every round trip is timed ([`RTT_ITERS`] after [`RTT_WARMUP`]), and the
//!   line gives the median, p10 and p90;
//! - throughput: the parent sends [`BW_MSGS`] messages of 1 MiB, the child
//!   receives each (into a fresh buffer per message where the API hands
//!   one out) and acks the run with one small message; [`BW_RUNS`] runs
//!   after a warm-up run. The line gives all the runs' bytes over all their
//!   time, and the slowest and the fastest run, in GB/s (10^9 bytes per
//!   second, payload only).
//!
//! Rows run interleaved (round trips in [`ROUNDS`] rounds, throughput runs
//! one per row in turn), every child alive at once, so that load from
//! elsewhere on the machine hits every row alike. The C floor
//! (`bench/c/socketpair.c`) takes part in the same rounds: this harness
//! runs it with `--driven` and tells it, over its stdin, what to do next;
//! it times its own round trips and runs, and writes the times back.
//! `bench/python/pipe.py` follows the same schedule on its own.
//!
//! What a Rust row's child does is told by the message's length:
//! [`RTT_LEN`] bytes, echo it; [`ACK_LEN`], echo it (the end of a throughput
//! run); [`EXIT_LEN`], leave; anything else (1 MiB), drop it.

use std::io::{BufRead, BufReader, Write};

use std::process::{Child, ChildStdin, ChildStdout};
use std::time::Instant;

use ipc_channel::ipc;
use serde_bytes::{ByteBuf, Bytes};

use crate::{print_quantiles, selected};

pub(crate) const RTT_LEN: usize = 8;
pub(crate) const ACK_LEN: usize = 1;
pub(crate) const EXIT_LEN: usize = 2;
pub(crate) const BIG_LEN: usize = 1 << 20;

const RTT_WARMUP: usize = 2_000;
const RTT_ITERS: usize = 20_000;
const ROUNDS: usize = 10;
/// 1 MiB messages per throughput run: 512 MiB.
const BW_MSGS: usize = 512;
/// Timed runs per row: 2 GiB in all.
const BW_RUNS: usize = 4;
/// Messages in the untimed warm-up run.
const BW_WARMUP_MSGS: usize = 64;

/// One row's parent side, its child running.
trait Transport {
    /// `n` round trips, each timed (µs) into `times`.
    fn round_trips(&mut self, n: usize, times: &mut Vec<f64>);
    /// One throughput run of `n` 1 MiB messages and the ack; seconds.
    fn stream(&mut self, n: usize) -> f64;
    /// Tells the child to leave, and reaps it.
    fn finish(self: Box<Self>);
}

struct Row {
    name: &'static str,
    start: fn() -> Option<Box<dyn Transport>>,
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row { name: "raw socketpair (C)", start: c_floor },
    Row { name: "brood Connection send_bytes/recv_bytes", start: brood_bytes },
    Row { name: "brood Connection send/recv (serde_bytes)", start: brood_value },
    Row { name: "ipc-channel IpcBytesSender (fork)", start: ipc_bytes },
    Row { name: "ipc-channel IpcSender<ByteBuf> (fork)", start: ipc_value },
];

pub(crate) const ROW_NAMES: [&str; 5] = [
    ROWS[0].name,
    ROWS[1].name,
    ROWS[2].name,
    ROWS[3].name,
    ROWS[4].name,
];

// ----- message-based rows (brood, ipc-channel) -----

/// The parent's end of a message-based transport.
trait Pipe {
    /// Sends one message (`'static`: the few buffers are made once and
    /// leaked, so that by-value APIs need no copy).
    fn send(&mut self, msg: &'static [u8]);
    /// Receives one message; its length.
    fn recv(&mut self) -> usize;
    /// Reaps the child (it has been sent [`EXIT_LEN`] bytes).
    fn reap(self: Box<Self>);
}

/// The messages the parent sends, made once.
struct Msgs {
    small: &'static [u8],
    ack: &'static [u8],
    exit: &'static [u8],
    big: &'static [u8],
}

fn msgs() -> &'static Msgs {
    static MSGS: std::sync::OnceLock<Msgs> = std::sync::OnceLock::new();
    fn leak(len: usize) -> &'static [u8] {
        Vec::leak((0..len).map(|i| (i * 31 + 7) as u8).collect())
    }
    MSGS.get_or_init(|| Msgs {
        small: leak(RTT_LEN),
        ack: leak(ACK_LEN),
        exit: leak(EXIT_LEN),
        big: leak(BIG_LEN),
    })
}

impl<P: Pipe + ?Sized> Transport for Box<P> {
    fn round_trips(&mut self, n: usize, times: &mut Vec<f64>) {
        let m = msgs();
        for _ in 0..n {
            let t = Instant::now();
            self.send(m.small);
            let got = self.recv();
            times.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(got, RTT_LEN);
        }
    }
    fn stream(&mut self, n: usize) -> f64 {
        let m = msgs();
        let t = Instant::now();
        for _ in 0..n {
            self.send(m.big);
        }
        self.send(m.ack);
        assert_eq!(self.recv(), ACK_LEN);
        t.elapsed().as_secs_f64()
    }
    fn finish(mut self: Box<Self>) {
        self.send(msgs().exit);
        (*self).reap();
    }
}

fn boxed(p: impl Pipe + 'static) -> Option<Box<dyn Transport>> {
    let p: Box<dyn Pipe> = Box::new(p);
    Some(Box::new(p))
}

/// The child's loop, whatever the transport: `recv` one message, act on
/// its length.
fn serve(mut recv: impl FnMut() -> Vec<u8>, mut send: impl FnMut(Vec<u8>)) {
    loop {
        let m = recv();
        match m.len() {
            RTT_LEN | ACK_LEN => send(m),
            EXIT_LEN => return,
            _ => drop(m),
        }
    }
}

struct Brood {
    conn: brood::Connection,
    child: brood::Process<()>,
    value: bool,
}

impl Pipe for Brood {
    fn send(&mut self, msg: &'static [u8]) {
        if self.value {
            self.conn.send(Bytes::new(msg)).unwrap();
        } else {
            self.conn.send_bytes(msg).unwrap();
        }
    }
    fn recv(&mut self) -> usize {
        if self.value {
            self.conn.recv::<ByteBuf>().unwrap().len()
        } else {
            self.conn.recv_bytes().unwrap().len()
        }
    }
    fn reap(mut self: Box<Self>) {
        self.child.join().unwrap();
    }
}

/// The child's end crosses by capture into a forked child (`Process::fork`).
fn brood_bytes() -> Option<Box<dyn Transport>> {
    let (parent, mut child) = brood::connection::pipe(true).unwrap();
    let mut p = brood::Process::fork(move || {
        let mut tx = child.try_clone().unwrap();
        serve(
            || child.recv_bytes().unwrap(),
            |m| tx.send_bytes(&m).unwrap(),
        )
    });
    p.start().unwrap();
    boxed(Brood {
        conn: parent,
        child: p,
        value: false,
    })
}

fn brood_value() -> Option<Box<dyn Transport>> {
    let (parent, mut child) = brood::connection::pipe(true).unwrap();
    let mut p = brood::Process::fork(move || {
        let mut tx = child.try_clone().unwrap();
        serve(
            || child.recv::<ByteBuf>().unwrap().into_vec(),
            |m| tx.send(&ByteBuf::from(m)).unwrap(),
        )
    });
    p.start().unwrap();
    boxed(Brood {
        conn: parent,
        child: p,
        value: true,
    })
}

/// Forks a child that runs `body` and `_exit`s (0, or 1 if it panicked).
fn fork_child(body: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the bench process runs no other thread; the child ends in
    // `_exit` and never returns into the caller.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_ok();
        // SAFETY: leaves the child at once, running nothing of the parent's.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

struct IpcBytes {
    tx: ipc::IpcBytesSender,
    rx: ipc::IpcBytesReceiver,
    pid: libc::pid_t,
}

impl Pipe for IpcBytes {
    fn send(&mut self, msg: &'static [u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self) -> usize {
        self.rx.recv().unwrap().len()
    }
    fn reap(self: Box<Self>) {
        crate::reap(self.pid);
    }
}

/// Two byte channels (ipc-channel's are one-way); the child is a plain
/// `fork`, which inherits the fds.
fn ipc_bytes() -> Option<Box<dyn Transport>> {
    let (tx, child_rx) = ipc::bytes_channel().unwrap();
    let (child_tx, rx) = ipc::bytes_channel().unwrap();
    let pid =
        fork_child(move || serve(|| child_rx.recv().unwrap(), |m| child_tx.send(&m).unwrap()));
    boxed(IpcBytes { tx, rx, pid })
}

/// The typed path: `IpcSender<T>` serializes with postcard. The parent
/// sends `&'static Bytes` (the same wire format as `ByteBuf`, and no copy
/// of the payload before the send), the child receives and echoes `ByteBuf`.
struct IpcValue {
    tx: ipc::IpcSender<&'static Bytes>,
    rx: ipc::IpcReceiver<ByteBuf>,
    pid: libc::pid_t,
}

impl Pipe for IpcValue {
    fn send(&mut self, msg: &'static [u8]) {
        self.tx.send(Bytes::new(msg)).unwrap();
    }
    fn recv(&mut self) -> usize {
        self.rx.recv().unwrap().len()
    }
    fn reap(self: Box<Self>) {
        crate::reap(self.pid);
    }
}

fn ipc_value() -> Option<Box<dyn Transport>> {
    let (tx, child_rx) = ipc::channel::<ByteBuf>().unwrap();
    let (child_tx, rx) = ipc::channel::<ByteBuf>().unwrap();
    let pid = fork_child(move || {
        serve(
            || child_rx.recv().unwrap().into_vec(),
            |m| child_tx.send(ByteBuf::from(m)).unwrap(),
        )
    });
    let tx = tx.to_opaque().to::<&'static Bytes>();
    boxed(IpcValue { tx, rx, pid })
}

// ----- the C floor, driven over its stdin -----

struct CFloor {
    child: Child,
    cmd: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl CFloor {
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.cmd, "{command}").unwrap();
        self.cmd.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "bench/c/socketpair stopped answering ({command})"
        );
        line
    }
}

impl Transport for CFloor {
    fn round_trips(&mut self, n: usize, times: &mut Vec<f64>) {
        let line = self.ask(&format!("rtt {n}"));
        times.extend(line.split_whitespace().map(|t| t.parse::<f64>().unwrap()));
    }
    fn stream(&mut self, n: usize) -> f64 {
        self.ask(&format!("bw {n}")).trim().parse().unwrap()
    }
    fn finish(mut self: Box<Self>) {
        writeln!(self.cmd, "exit").unwrap();
        drop(self.cmd);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "bench/c/socketpair: {status}");
    }
}

/// `$BROOD_BENCH_SOCKETPAIR`, else `socketpair` in the directory above
/// this executable's (where `bench/run` builds it: `bench/target/`).
fn c_floor() -> Option<Box<dyn Transport>> {
    let (child, cmd, out) = crate::start_c_driver("BROOD_BENCH_SOCKETPAIR", "socketpair")?;
    Some(Box::new(CFloor { child, cmd, out }))
}

// ----- the schedule -----

/// How many CPUs this process may run on (`bench/run` runs the table once
/// as the scheduler places it, and once under `taskset` on one CPU); the
/// children inherit it.
fn allowed_cpus() -> u32 {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 0;
        }
        libc::CPU_COUNT(&set) as u32
    }
}

pub(crate) fn run(only: Option<&str>) {
    let (rows, mut ts): (Vec<&Row>, Vec<Box<dyn Transport>>) = ROWS
        .iter()
        .filter(|r| selected(only, "pipes", r.name))
        .filter_map(|r| Some((r, (r.start)()?)))
        .unzip();
    let mut warm = Vec::new();
    for t in &mut ts {
        t.round_trips(RTT_WARMUP, &mut warm);
        warm.clear();
    }
    let mut rtts: Vec<Vec<f64>> = rows.iter().map(|_| Vec::with_capacity(RTT_ITERS)).collect();
    for _ in 0..ROUNDS {
        for (t, times) in ts.iter_mut().zip(&mut rtts) {
            t.round_trips(RTT_ITERS / ROUNDS, times);
        }
    }
    for t in &mut ts {
        t.stream(BW_WARMUP_MSGS);
    }
    let mut secs: Vec<Vec<f64>> = rows.iter().map(|_| Vec::with_capacity(BW_RUNS)).collect();
    for _ in 0..BW_RUNS {
        for (t, secs) in ts.iter_mut().zip(&mut secs) {
            secs.push(t.stream(BW_MSGS));
        }
    }
    for t in ts {
        t.finish();
    }

    let run_bytes = (BW_MSGS * BIG_LEN) as f64;
    let cpus = allowed_cpus();
    for ((row, mut times), secs) in rows.iter().zip(rtts).zip(secs) {
        times.sort_by(f64::total_cmp);
        print_quantiles(
            &format!("rtt\t{cpus}\t{}", row.name),
            &times,
            2,
            times.len(),
        );
        let total: f64 = secs.iter().sum();
        let slowest = secs.iter().copied().fold(0.0, f64::max);
        let fastest = secs.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "bw\t{cpus}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}",
            row.name,
            run_bytes * secs.len() as f64 / total / 1e9,
            run_bytes / slowest / 1e9,
            run_bytes / fastest / 1e9,
            secs.len(),
            BW_MSGS
        );
    }
}
