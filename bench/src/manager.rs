//! The managers table: brood's `Manager` proxies against Python's
//! `multiprocessing.Manager` (`bench/python/manager.py` runs the same tests).
//!
//! - `dict`: one `insert` + one `get` on a managed dict from the owner
//!   process (two round trips to the server), each pair timed; µs. The
//!   owner is on the server's host, so its link uses shared-memory rings;
//!   a second brood row turns them off (`use_local_rings(false)`): the
//!   socket, as a client on another host has it.
//! - `queue`: one `put` + one `get` on a managed queue; µs (brood rows:
//!   on the server's host, where the proxy maps the queue's ring and makes
//!   no round trip; the socket, where each call is one; and the put
//!   pipelined).
//! - `workers-N`: the reference's master/worker pattern over TCP on
//!   127.0.0.1 with an auth key: N worker processes, connected first, take
//!   10,000 integer tasks from a task queue and put each square on a result
//!   queue; the time runs from the master's first `put` to its 10,000th
//!   result; thousand tasks per second. The workers are on the server's
//!   host, so they move to rings through its local alias, and the two
//!   plain queues are shared-memory rings they (and the master) map and
//!   use themselves; the "TCP only" row keeps every process on TCP (what
//!   workers on other hosts get: each call a round trip to the server). A
//!   third brood row puts the tasks with one `put_many` (one round trip)
//!   and the workers put results with `put_pipelined` (no round trip).
//!
//! Prints `mgr<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n` (lo/hi:
//! p10/p90 of the pairs, or the slowest/fastest run).

use std::time::{Duration, Instant};

use brood::Manager;

use crate::{percentile, selected};

const PAIRS: usize = 20_000;
const WARMUP: usize = 1_000;
const TASKS: u64 = 10_000;
const RUNS: usize = 3;
const KEY: &[u8] = b"bench key";

fn emit(test: &str, name: &str, mut v: Vec<f64>, spread_is_percentile: bool) {
    v.sort_by(f64::total_cmp);
    let (lo, hi) = if spread_is_percentile {
        (percentile(&v, 0.1), percentile(&v, 0.9))
    } else {
        (v[0], v[v.len() - 1])
    };
    println!(
        "mgr\t{test}\t{name}\t{:.3}\t{lo:.3}\t{hi:.3}\t{}",
        percentile(&v, 0.5),
        v.len()
    );
}

fn time_pairs(mut pair: impl FnMut(u64)) -> Vec<f64> {
    for i in 0..WARMUP {
        pair(i as u64);
    }
    (0..PAIRS)
        .map(|i| {
            let t = Instant::now();
            pair(i as u64);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn worker((address, key, pipelined, rings): (String, Vec<u8>, bool, bool)) {
    brood::manager::use_local_rings(rings);
    let manager = Manager::connect(&address.parse().unwrap(), &key).unwrap();
    let tasks = manager.named("tasks").queue::<Option<u64>>(0).unwrap();
    let results = manager.named("results").queue::<u64>(0).unwrap();
    manager
        .named("ready")
        .semaphore(0)
        .unwrap()
        .release()
        .unwrap();
    while let Some(n) = tasks.get().unwrap() {
        if pipelined {
            results.put_pipelined(&(n * n)).unwrap();
        } else {
            results.put(&(n * n)).unwrap();
        }
    }
}

/// One master/worker run with `workers` workers; thousand tasks per second.
fn master_worker(workers: usize, batch: bool, rings: bool) -> f64 {
    brood::manager::use_local_rings(rings);
    let master = Manager::serve(&"127.0.0.1:0".parse().unwrap(), KEY).unwrap();
    let tasks = master.named("tasks").queue::<Option<u64>>(0).unwrap();
    let results = master.named("results").queue::<u64>(0).unwrap();
    let ready = master.named("ready").semaphore(0).unwrap();
    let mut procs: Vec<_> = (0..workers)
        .map(|_| {
            let mut p = brood::Process::with_args(
                worker,
                (master.address().to_string(), KEY.to_vec(), batch, rings),
            );
            p.start().unwrap();
            p
        })
        .collect();
    for _ in 0..workers {
        assert!(ready.acquire_timeout(Duration::from_secs(60)).unwrap());
    }
    let t = Instant::now();
    if batch {
        tasks.put_many((0..TASKS).map(Some)).unwrap();
    } else {
        for n in 0..TASKS {
            tasks.put(&Some(n)).unwrap();
        }
    }
    let mut sum = 0u64;
    for _ in 0..TASKS {
        sum = sum.wrapping_add(results.get().unwrap());
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sum, (0..TASKS).map(|n| n * n).sum::<u64>());
    for _ in 0..workers {
        tasks.put(&None).unwrap();
    }
    for p in &mut procs {
        p.join().unwrap();
    }
    brood::manager::use_local_rings(true);
    TASKS as f64 / secs / 1e3
}

pub(crate) fn row_names() -> impl Iterator<Item = &'static str> {
    [
        "dict: brood ManagedMap insert + get",
        "dict: brood ManagedMap insert + get, socket",
        "queue: brood ManagedQueue put + get",
        "queue: brood ManagedQueue put + get, socket",
        "queue: brood ManagedQueue put_pipelined + get",
        "workers-1/2/4: brood master/worker over TCP",
        "workers-1/2/4: brood master/worker over TCP only",
        "workers-1/2/4: brood master/worker over TCP, put_many + put_pipelined",
    ]
    .into_iter()
}

pub(crate) fn run(only: Option<&str>) {
    for (rings, suffix) in [(true, ""), (false, ", socket")] {
        // A server per transport: a link keeps the way it was opened.
        brood::manager::use_local_rings(rings);
        let manager = Manager::start().unwrap();
        let name = format!("brood ManagedMap insert + get{suffix}");
        if selected(only, "manager dict", &name) {
            let d = manager.dict::<u64, u64>().unwrap();
            let v = time_pairs(|i| {
                d.insert(&i, &i).unwrap();
                assert_eq!(d.get(&i).unwrap(), Some(i));
            });
            emit("dict", &name, v, true);
        }
        let name = format!("brood ManagedQueue put + get{suffix}");
        if selected(only, "manager queue", &name) {
            let q = manager.queue::<u64>(0).unwrap();
            let v = time_pairs(|i| {
                q.put(&i).unwrap();
                assert_eq!(q.get().unwrap(), i);
            });
            emit("queue", &name, v, true);
        }
    }
    brood::manager::use_local_rings(true);
    let manager = Manager::start().unwrap();
    let name = "brood ManagedQueue put_pipelined + get";
    if selected(only, "manager queue", name) {
        let q = manager.queue::<u64>(0).unwrap();
        let v = time_pairs(|i| {
            q.put_pipelined(&i).unwrap();
            assert_eq!(q.get().unwrap(), i);
        });
        emit("queue", name, v, true);
    }
    for workers in [1, 2, 4] {
        let test = format!("workers-{workers}");
        for (batch, rings, name) in [
            (false, true, "brood master/worker over TCP"),
            (false, false, "brood master/worker over TCP only"),
            (
                true,
                true,
                "brood master/worker over TCP, put_many + put_pipelined",
            ),
        ] {
            if selected(only, &format!("manager {test}"), name) {
                let runs = (0..RUNS)
                    .map(|_| master_worker(workers, batch, rings))
                    .collect();
                emit(&test, name, runs, false);
            }
        }
    }
}
