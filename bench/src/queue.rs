//! The "Queues" table: brood's `Queue` against ipc-channel,
//! crossbeam-channel between two threads (the in-process ceiling), and the
//! C floor (`bench/c/ring.c`, a raw SPSC shared-memory ring, run by
//! `bench/run`) and, in `bench/python/queues.py`, Python's `Queue` and
//! `SimpleQueue`. Four tests:
//!
//! - `1to1-8B`: one producer process puts [`SMALL_N`] `u64`s, the parent
//!   takes them; million messages per second (from the go to the last get).
//! - `1to1-1MiB`: the same with [`BIG_N`] 1 MiB byte strings (`serde_bytes`;
//!   the producer puts the same warm buffer with `put_ref`, the consumer gets
//!   a fresh `ByteBuf` each time); GB/s (10^9 payload bytes per second).
//! - `4x4-8B`: four producer processes put [`SMALL_N`] `u64`s in all, four
//!   consumer processes take them until the queue is closed; million
//!   messages per second, from the go to the last consumer's exit.
//! - `rtt`: a ping-pong round trip, a request on one queue and the reply on
//!   another, both sides busy in the exchange (they spin before sleeping);
//!   the median of [`RTT_BATCHES`] batches of 1000; microseconds.
//!
//! brood's queues get a 4 MiB ring (`Options::max_bytes`), the C ring's
//! size: an unbounded `Queue::new()` whose producer runs ahead spreads into
//! fresh pages of its 1 GiB ring, and would pay their page faults.
//!
//! Every row runs [`RUNS`] times after one smaller untimed run; the median is
//! printed: `queue<TAB>test<TAB>name<TAB>value<TAB>n`.

use std::time::Instant;

use brood::queue::Options;
use brood::sync::Event;
use brood::{Process, Queue};
use ipc_channel::ipc;
use serde_bytes::ByteBuf;

use crate::selected;

pub(crate) const SMALL_N: u64 = 2_000_000;
pub(crate) const BIG_N: u64 = 2_000;
pub(crate) const RTT_BATCHES: usize = 100;
pub(crate) const RUNS: usize = 5;
const MIB: usize = 1 << 20;

/// A queue with the C ring's capacity.
fn queue<T: serde::Serialize + serde::de::DeserializeOwned>() -> Queue<T> {
    Queue::with_options(Options::new().max_bytes(4 * MIB)).unwrap()
}

pub(crate) const ROW_NAMES: &[(&str, &str)] = &[
    ("1to1-8B", "brood Queue<u64> (4 MiB ring)"),
    ("1to1-8B", "ipc-channel IpcSender<u64> (fork)"),
    ("1to1-8B", "crossbeam-channel (2 threads)"),
    ("1to1-1MiB", "brood Queue<ByteBuf> (4 MiB ring)"),
    ("1to1-1MiB", "ipc-channel IpcBytesSender (fork)"),
    (
        "1to1-1MiB",
        "crossbeam-channel (2 threads, a fresh Vec per message)",
    ),
    ("4x4-8B", "brood Queue<u64> (4 MiB ring)"),
    ("4x4-8B", "crossbeam-channel (8 threads)"),
    ("rtt", "brood Queue<u64> (4 MiB ring)"),
    ("rtt", "ipc-channel IpcSender<u64> (fork)"),
    ("rtt", "crossbeam-channel (2 threads)"),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fork(f: impl FnOnce() + Send + 'static) -> libc::pid_t {
    // SAFETY: the bench is single-threaded here (no thread row is running);
    // the child runs `f` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: leaves at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    pid
}

// ----- 1 -> 1 -----

fn brood_small(n: u64) -> f64 {
    let q = queue::<u64>();
    let go = Event::new().unwrap();
    let (cq, cgo) = (q.clone(), go.clone());
    let mut child = Process::fork(move || {
        cgo.wait(None);
        for i in 0..n {
            cq.put(i).unwrap();
        }
    });
    child.start().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1));
    let t = Instant::now();
    go.set();
    for i in 0..n {
        assert_eq!(q.get().unwrap(), i);
    }
    let secs = t.elapsed().as_secs_f64();
    child.join().unwrap();
    n as f64 / secs / 1e6
}

fn ipc_small(n: u64) -> f64 {
    let (tx, rx) = ipc::channel::<u64>().unwrap();
    let pid = fork(move || {
        for i in 0..n {
            tx.send(i).unwrap();
        }
    });
    let t = Instant::now();
    for i in 0..n {
        assert_eq!(rx.recv().unwrap(), i);
    }
    let secs = t.elapsed().as_secs_f64();
    crate::reap(pid);
    n as f64 / secs / 1e6
}

fn crossbeam_small(n: u64) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let t = Instant::now();
    let producer = std::thread::spawn(move || {
        for i in 0..n {
            tx.send(i).unwrap();
        }
    });
    for i in 0..n {
        assert_eq!(rx.recv().unwrap(), i);
    }
    let secs = t.elapsed().as_secs_f64();
    producer.join().unwrap();
    n as f64 / secs / 1e6
}

fn brood_big(n: u64) -> f64 {
    let q = queue::<ByteBuf>();
    let go = Event::new().unwrap();
    let (cq, cgo) = (q.clone(), go.clone());
    let mut child = Process::fork(move || {
        let buf = ByteBuf::from(vec![7u8; MIB]);
        cgo.wait(None);
        for _ in 0..n {
            cq.put_ref(&buf).unwrap();
        }
    });
    child.start().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1));
    let t = Instant::now();
    go.set();
    for _ in 0..n {
        assert_eq!(q.get().unwrap().len(), MIB);
    }
    let secs = t.elapsed().as_secs_f64();
    child.join().unwrap();
    (n as usize * MIB) as f64 / secs / 1e9
}

fn ipc_big(n: u64) -> f64 {
    let (tx, rx) = ipc::bytes_channel().unwrap();
    let pid = fork(move || {
        let buf = vec![7u8; MIB];
        for _ in 0..n {
            tx.send(&buf).unwrap();
        }
    });
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(rx.recv().unwrap().len(), MIB);
    }
    let secs = t.elapsed().as_secs_f64();
    crate::reap(pid);
    (n as usize * MIB) as f64 / secs / 1e9
}

fn crossbeam_big(n: u64) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<u8>>();
    let buf = vec![7u8; MIB];
    let t = Instant::now();
    let producer = std::thread::spawn(move || {
        for _ in 0..n {
            tx.send(buf.clone()).unwrap();
        }
    });
    for _ in 0..n {
        assert_eq!(rx.recv().unwrap().len(), MIB);
    }
    let secs = t.elapsed().as_secs_f64();
    producer.join().unwrap();
    (n as usize * MIB) as f64 / secs / 1e9
}

// ----- 4 x 4 -----

fn brood_4x4(n: u64) -> f64 {
    let q = queue::<u64>();
    let go = Event::new().unwrap();
    let mut kids = Vec::new();
    for p in 0..4u64 {
        let (cq, cgo) = (q.clone(), go.clone());
        let mut k = Process::fork(move || {
            cgo.wait(None);
            for i in 0..n / 4 {
                cq.put(p << 40 | i).unwrap();
            }
            0u64
        });
        k.start().unwrap();
        kids.push(k);
    }
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let (cq, cgo) = (q.clone(), go.clone());
        let mut k = Process::fork(move || {
            cgo.wait(None);
            let mut got = 0u64;
            while cq.get().is_ok() {
                got += 1;
            }
            got
        });
        k.start().unwrap();
        consumers.push(k);
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let t = Instant::now();
    go.set();
    for k in &mut kids {
        k.join().unwrap();
    }
    q.close();
    let mut total = 0;
    for k in &mut consumers {
        total += k.join().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(total, n / 4 * 4);
    total as f64 / secs / 1e6
}

fn crossbeam_4x4(n: u64) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let t = Instant::now();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..n / 4 {
                    tx.send(p << 40 | i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || rx.iter().count() as u64)
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let total: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(total, n / 4 * 4);
    total as f64 / secs / 1e6
}

// ----- round trip -----

fn batches(mut one: impl FnMut(u64) -> u64) -> f64 {
    for i in 0..2000 {
        assert_eq!(one(i), i);
    }
    let mut us = Vec::with_capacity(RTT_BATCHES);
    for _ in 0..RTT_BATCHES {
        let t = Instant::now();
        for i in 0..1000 {
            assert_eq!(one(i), i);
        }
        us.push(t.elapsed().as_secs_f64() * 1e6 / 1000.0);
    }
    median(us)
}

fn brood_rtt() -> f64 {
    let (req, rep) = (queue::<u64>(), queue::<u64>());
    let (creq, crep) = (req.clone(), rep.clone());
    let mut child = Process::fork(move || {
        while let Ok(m) = creq.get() {
            crep.put(m).unwrap();
        }
    });
    child.start().unwrap();
    let us = batches(|i| {
        req.put(i).unwrap();
        rep.get().unwrap()
    });
    req.close();
    child.join().unwrap();
    us
}

fn ipc_rtt() -> f64 {
    let (tx, crx) = ipc::channel::<u64>().unwrap();
    let (ctx, rx) = ipc::channel::<u64>().unwrap();
    let pid = fork(move || {
        while let Ok(m) = crx.recv() {
            if m == u64::MAX {
                break;
            }
            ctx.send(m).unwrap();
        }
    });
    let us = batches(|i| {
        tx.send(i).unwrap();
        rx.recv().unwrap()
    });
    tx.send(u64::MAX).unwrap();
    crate::reap(pid);
    us
}

fn crossbeam_rtt() -> f64 {
    let (tx, crx) = crossbeam_channel::unbounded::<u64>();
    let (ctx, rx) = crossbeam_channel::unbounded::<u64>();
    let echo = std::thread::spawn(move || {
        for m in crx {
            ctx.send(m).unwrap();
        }
    });
    let us = batches(|i| {
        tx.send(i).unwrap();
        rx.recv().unwrap()
    });
    drop(tx);
    echo.join().unwrap();
    us
}

/// Runs the table's rows (those `--only` keeps), interleaved in rounds.
pub(crate) fn run(only: Option<&str>) {
    type Row = (&'static str, &'static str, u64, fn(u64) -> f64);
    let rows: [Row; 11] = [
        ("1to1-8B", ROW_NAMES[0].1, SMALL_N, brood_small),
        ("1to1-8B", ROW_NAMES[1].1, SMALL_N / 4, ipc_small),
        ("1to1-8B", ROW_NAMES[2].1, SMALL_N, crossbeam_small),
        ("1to1-1MiB", ROW_NAMES[3].1, BIG_N, brood_big),
        ("1to1-1MiB", ROW_NAMES[4].1, BIG_N, ipc_big),
        ("1to1-1MiB", ROW_NAMES[5].1, BIG_N, crossbeam_big),
        ("4x4-8B", ROW_NAMES[6].1, SMALL_N, brood_4x4),
        ("4x4-8B", ROW_NAMES[7].1, SMALL_N, crossbeam_4x4),
        ("rtt", ROW_NAMES[8].1, 0, |_| brood_rtt()),
        ("rtt", ROW_NAMES[9].1, 0, |_| ipc_rtt()),
        ("rtt", ROW_NAMES[10].1, 0, |_| crossbeam_rtt()),
    ];
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|(test, name, _, _)| selected(only, &format!("queue {test}"), name))
        .collect();
    for (_, _, n, f) in &rows {
        f((*n / 10).max(1));
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..RUNS {
        for ((_, _, n, f), out) in rows.iter().zip(&mut results) {
            out.push(f(*n));
        }
    }
    for ((test, name, n, _), out) in rows.iter().zip(results) {
        let n = if *test == "rtt" {
            RTT_BATCHES as u64 * 1000
        } else {
            *n
        };
        println!("queue\t{test}\t{name}\t{:.3}\t{n}", median(out));
    }
}
