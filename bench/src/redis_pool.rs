//! The `redis` table: brood-redis end to end on a private redis-server
//! (loopback): tasks per second for 10,000 trivial `#[brood::task]` calls
//! with 1, 2 and 4 worker nodes (separate processes: this binary started
//! again as a `brood_redis::Worker`), the round trip of one task, and
//! redis-benchmark's XADD rates (unpipelined and pipelined) as the
//! ceiling. The Python side (Celery, RQ, Dramatiq, a hand-batched Streams
//! loop, BaseManager) is in `bench/python/`.
//!
//! Lines: `redis<TAB>row<TAB>median<TAB>lo<TAB>hi<TAB>unit<TAB>n`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brood_redis::{LocalServer, RedisPool, Worker};

use crate::{percentile, selected};

/// The trivial task.
#[brood::task]
fn inc(x: u64) -> u64 {
    x + 1
}

/// A CPU-bound task: spins for `micros` µs (wall clock, busy),
/// then returns it (for the scaling rows: trivial tasks are bound by the
/// caller and Redis, not by the workers).
#[brood::task]
fn spin(micros: u64) -> u64 {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < Duration::from_micros(micros) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    micros
}

const ENV: &str = "BROOD_BENCH_REDIS_WORKER";

/// In a worker node started by this table: runs the worker (never
/// returns). Elsewhere: returns at once.
pub(crate) fn worker_main() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let mut parts = spec.splitn(3, ' ');
    let (Some(processes), Some(name), Some(url)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("bad {ENV}: {spec:?}");
    };
    // Die with the benchmark.
    let _ = brood::os::set_parent_death_signal(libc::SIGKILL);
    let r = Worker::new(url, name)
        .processes(processes.parse().unwrap())
        .quiet(true)
        .run();
    eprintln!("brood-bench redis worker: {r:?}");
    std::process::exit(1);
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node(url: &str, name: &str, processes: usize) -> Node {
    Node(
        Command::new(std::env::current_exe().unwrap())
            .env(ENV, format!("{processes} {name} {url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn inc_name() -> String {
    format!("{}::inc", module_path!())
}

/// Sends `n` tasks at once (pipelined) and waits for every value.
fn batch(pool: &RedisPool, n: u64) -> Duration {
    chunked(pool, n, 1)
}

/// Sends `n` tasks, `size` per stream entry, and waits for every value.
fn chunked(pool: &RedisPool, n: u64, size: usize) -> Duration {
    let t = Instant::now();
    let hs = pool
        .chunksize(size)
        .submit_all::<u64, _, _>(&inc_name(), (0..n).map(|i| (i,)))
        .unwrap();
    for (i, h) in hs.iter().enumerate() {
        assert_eq!(
            h.result_timeout(Duration::from_secs(120)).unwrap(),
            i as u64 + 1
        );
    }
    t.elapsed()
}

/// One row in bench/python/redis_queues.py's format, so its report puts
/// brood's rows in the same table as Celery's, RQ's and Dramatiq's:
/// `redis<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n`, rates in
/// thousands per second, latencies in µs (p10 and p90 as the spread).
fn report(test: &str, name: &str, mut values: Vec<f64>, percentiles: bool) {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (lo, hi) = if percentiles {
        (percentile(&values, 0.1), percentile(&values, 0.9))
    } else {
        (values[0], values[values.len() - 1])
    };
    println!(
        "redis\t{test}\t{name}\t{:.3}\t{lo:.3}\t{hi:.3}\t{}",
        percentile(&values, 0.5),
        values.len()
    );
}

/// redis-benchmark's rate for `XADD` on the server, `pipeline` deep.
fn redis_benchmark(port: u16, pipeline: usize) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-n", "200000", "-q", "-P"])
        .arg(pipeline.to_string())
        .args(["XADD", "benchstream", "*", "f", "v"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "XADD benchstream * f v: 123456.79 requests per second, p50=..."
    let rate = text
        .rsplit('\r')
        .next()?
        .split(':')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(rate)
}

pub(crate) fn run(only: Option<&str>) {
    if !LocalServer::available() {
        eprintln!("brood-bench: no redis-server on PATH; the redis table is skipped");
        return;
    }
    let server = LocalServer::start().unwrap();
    let url = server.url();
    let n = 10_000u64;
    for nodes in [1usize, 2, 4] {
        let row = format!("10k trivial tasks, {nodes} worker node(s) x 1 process");
        if !selected(only, "redis", &row) {
            continue;
        }
        let name = format!("b{nodes}");
        let _nodes: Vec<Node> = (0..nodes).map(|_| node(&url, &name, 1)).collect();
        let pool = RedisPool::connect(&url, &name).unwrap();
        batch(&pool, 2_000); // warm-up: every node up and reading
        let rates: Vec<f64> = (0..5)
            .map(|_| n as f64 / batch(&pool, n).as_secs_f64() / 1e3)
            .collect();
        report(
            &format!("tasks-{nodes}"),
            "brood-redis, a task per entry",
            rates,
            false,
        );
    }
    for nodes in [1usize, 2, 4] {
        let row = format!("10k trivial tasks in chunks of 100, {nodes} worker node(s) x 1 process");
        if !selected(only, "redis", &row) {
            continue;
        }
        let name = format!("c{nodes}");
        let _nodes: Vec<Node> = (0..nodes).map(|_| node(&url, &name, 1)).collect();
        let pool = RedisPool::connect(&url, &name).unwrap();
        chunked(&pool, 2_000, 100);
        let rates: Vec<f64> = (0..5)
            .map(|_| n as f64 / chunked(&pool, n, 100).as_secs_f64() / 1e3)
            .collect();
        report(
            &format!("tasks-{nodes}"),
            "brood-redis, chunks of 100",
            rates,
            false,
        );
    }
    for processes in [2usize, 4] {
        let row = format!("10k trivial tasks, 1 worker node x {processes} processes");
        if !selected(only, "redis", &row) {
            continue;
        }
        let name = format!("p{processes}");
        let _node = node(&url, &name, processes);
        let pool = RedisPool::connect(&url, &name).unwrap();
        batch(&pool, 2_000);
        let rates: Vec<f64> = (0..5)
            .map(|_| n as f64 / batch(&pool, n).as_secs_f64() / 1e3)
            .collect();
        report(
            &format!("tasks-{processes}"),
            "brood-redis, 1 node with that many processes",
            rates,
            false,
        );
    }
    // Scaling where the workers are the bottleneck: 2 ms CPU-bound tasks,
    // 1 and 2 worker nodes of one process each (this machine's cores).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for nodes in [1usize, 2, 4].into_iter().filter(|&n| n <= cores.max(2)) {
        let row = format!("400 CPU-bound 2 ms tasks, {nodes} worker node(s) x 1 process");
        if !selected(only, "redis", &row) {
            continue;
        }
        let name = format!("s{nodes}");
        let _nodes: Vec<Node> = (0..nodes).map(|_| node(&url, &name, 1)).collect();
        let pool = RedisPool::connect(&url, &name).unwrap();
        let spin_name = format!("{}::spin", module_path!());
        let run = |n: u64| {
            let t = Instant::now();
            let hs = pool
                .submit_all::<u64, _, _>(&spin_name, (0..n).map(|_| (2_000u64,)))
                .unwrap();
            for h in &hs {
                assert_eq!(h.result_timeout(Duration::from_secs(120)).unwrap(), 2_000);
            }
            t.elapsed()
        };
        run(20); // warm-up: every node up and reading
        let rates: Vec<f64> = (0..3)
            .map(|_| 400.0 / run(400).as_secs_f64() / 1e3)
            .collect();
        report(
            &format!("cpu-{nodes}"),
            "brood-redis, 2 ms CPU-bound tasks",
            rates,
            false,
        );
    }
    let row = "one task round trip (apply), 1 worker node";
    if selected(only, "redis", row) {
        let _node = node(&url, "rtt", 1);
        let pool = RedisPool::connect(&url, "rtt").unwrap();
        batch(&pool, 100);
        let lat: Vec<f64> = (0..500)
            .map(|i| {
                let t = Instant::now();
                let v: u64 = pool.apply(&inc_name(), (i as u64,)).unwrap();
                assert_eq!(v, i as u64 + 1);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        report("latency", "brood-redis, a task per entry", lat, true);
    }
    for pipeline in [1usize, 64] {
        let row = format!("redis-benchmark XADD, pipeline {pipeline} (ceiling)");
        if selected(only, "redis", &row)
            && let Some(rate) = redis_benchmark(server.port(), pipeline)
        {
            report(
                "ceiling",
                &format!("redis-benchmark XADD, pipeline {pipeline}"),
                vec![rate / 1e3],
                false,
            );
        }
    }
}
