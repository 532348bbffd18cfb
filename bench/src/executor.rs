//! The "Executor" table: `brood::Pool` used as `concurrent.futures`
//! (`submit`, `TaskFuture::result`, `as_completed`) against Python's
//! `ProcessPoolExecutor` and loky (in `bench/python/executor.py`), and the
//! cost of time limits on trivial tasks (the same work with a hard time
//! limit on and off).
//!
//! Workloads (2 workers, tasks `x + 1`):
//! - `submit`: 10,000 `submit`, then `result` of each in order;
//! - `as_completed`: 10,000 `submit`, then `as_completed` over them, each
//!   `result` read;
//! - `limits`: trivial-task throughput with and without a pool hard time
//!   limit (60 s: never reached; what it costs is the limit's bookkeeping:
//!   the unit's limits field, the worker's clock read and the
//!   supervisor's deadline scan): `chunksize(1).map` of 100,000 and
//!   `submit`+`result` of 10,000; and `chunksize(1).map` with a soft limit
//!   on (the worker's deadline per unit).
//!
//! Each row runs [`RUNS`] times after one untimed run, the rows
//! interleaved run by run, each round starting at the next row (pools are
//! started once per row and reused).
//! Prints
//! `executor<TAB>workload<TAB>name<TAB>median_rate<TAB>slowest<TAB>fastest<TAB>runs`
//! with rates in tasks per second, and for the `limits` rows also
//! `executor<TAB>cpu<TAB>name<TAB>median_ns<TAB>least<TAB>most<TAB>runs`:
//! CPU time per task, this process (`CLOCK_PROCESS_CPUTIME_ID`: caller and
//! supervisor) plus the workers (`/proc/PID/schedstat`), which a loaded
//! machine disturbs far less than the rate.

use std::time::{Duration, Instant};

use brood::{Pool, TaskFuture};

use crate::selected;

const RUNS: usize = 7;
const SUBMIT: u64 = 10_000;
const TRIVIAL: u64 = 100_000;

struct Row {
    workload: &'static str,
    name: &'static str,
    /// One run: tasks done, and the CPU time its workers used (ns), if
    /// measured.
    run: Box<dyn FnMut() -> (u64, Option<u64>)>,
}

/// Nanoseconds on a CPU of this process, all threads.
fn process_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Nanoseconds on a CPU of the pool's (single-threaded) workers.
fn workers_cpu_ns(p: &Pool) -> u64 {
    p.worker_pids()
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Runs `f` on `p`, with the workers' CPU time.
fn with_cpu(p: &Pool, f: fn(&Pool) -> u64) -> (u64, Option<u64>) {
    let before = workers_cpu_ns(p);
    let n = f(p);
    (n, Some(workers_cpu_ns(p).saturating_sub(before)))
}

fn inc(x: u64) -> u64 {
    x + 1
}

fn submit_result(p: &Pool) -> u64 {
    let futures: Vec<TaskFuture<u64>> = (0..SUBMIT).map(|x| p.submit(inc, x).unwrap()).collect();
    for (x, f) in futures.iter().enumerate() {
        assert_eq!(f.result().unwrap(), x as u64 + 1);
    }
    SUBMIT
}

fn submit_as_completed(p: &Pool) -> u64 {
    let futures: Vec<TaskFuture<u64>> = (0..SUBMIT).map(|x| p.submit(inc, x).unwrap()).collect();
    let mut n = 0;
    for f in brood::as_completed(&futures) {
        f.result().unwrap();
        n += 1;
    }
    assert_eq!(n, SUBMIT);
    n
}

fn trivial_map(p: &Pool) -> u64 {
    let v = p.chunksize(1).map(inc, 0..TRIVIAL).unwrap();
    assert_eq!(v.len() as u64, TRIVIAL);
    TRIVIAL
}

const NEVER: Duration = Duration::from_secs(60);

fn rows(only: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |workload: &'static str,
                   name: &'static str,
                   make: &dyn Fn() -> Box<dyn FnMut() -> (u64, Option<u64>)>| {
        if selected(only, "executor", &format!("{workload} {name}")) {
            rows.push(Row {
                workload,
                name,
                run: make(),
            });
        }
    };
    let plain = || Pool::new(2).expect("a pool");
    let hard = || {
        Pool::builder()
            .processes(2)
            .hard_time_limit(NEVER)
            .build()
            .expect("a pool")
    };
    let soft = || {
        Pool::builder()
            .processes(2)
            .soft_time_limit(NEVER)
            .build()
            .expect("a pool")
    };
    add("submit", "brood submit+result", &|| {
        let p = plain();
        Box::new(move || (submit_result(&p), None))
    });
    add("as_completed", "brood submit+as_completed", &|| {
        let p = plain();
        Box::new(move || (submit_as_completed(&p), None))
    });
    add("limits", "brood chunksize(1).map, no limit", &|| {
        let p = plain();
        Box::new(move || with_cpu(&p, trivial_map))
    });
    add("limits", "brood chunksize(1).map, hard limit on", &|| {
        let p = hard();
        Box::new(move || with_cpu(&p, trivial_map))
    });
    add("limits", "brood chunksize(1).map, soft limit on", &|| {
        let p = soft();
        Box::new(move || with_cpu(&p, trivial_map))
    });
    add("limits", "brood submit+result, no limit", &|| {
        let p = plain();
        Box::new(move || with_cpu(&p, submit_result))
    });
    add("limits", "brood submit+result, hard limit on", &|| {
        let p = hard();
        Box::new(move || with_cpu(&p, submit_result))
    });
    rows
}

pub(crate) fn run(only: Option<&str>) {
    let mut rows = rows(only);
    for row in &mut rows {
        (row.run)(); // warm-up
    }
    let mut rates: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
    let mut cpus: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 0..RUNS {
        // Each round starts at the next row (the order rotates), so no row
        // always runs first or right after a given other one.
        let len = rows.len();
        for k in 0..len {
            let i = (round + k) % len;
            let (row, rates, cpus) = (&mut rows[i], &mut rates[i], &mut cpus[i]);
            let cpu = process_cpu_ns();
            let t = Instant::now();
            let (n, workers) = (row.run)();
            rates.push(n as f64 / t.elapsed().as_secs_f64());
            if let Some(w) = workers {
                cpus.push((process_cpu_ns() - cpu + w) as f64 / n as f64);
            }
        }
    }
    for (row, mut cpus) in rows.iter().zip(cpus) {
        if cpus.is_empty() {
            continue;
        }
        cpus.sort_by(f64::total_cmp);
        println!(
            "executor\tcpu\t{}\t{:.0}\t{:.0}\t{:.0}\t{}",
            row.name,
            cpus[cpus.len() / 2],
            cpus[0],
            cpus[cpus.len() - 1],
            cpus.len()
        );
    }
    for (row, mut rates) in rows.iter().zip(rates) {
        rates.sort_by(f64::total_cmp);
        println!(
            "executor\t{}\t{}\t{:.0}\t{:.0}\t{:.0}\t{}",
            row.workload,
            row.name,
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            rates.len()
        );
    }
}

/// The workloads, for `--help`.
pub(crate) fn row_names() -> Vec<String> {
    ["submit", "as_completed", "limits"]
        .iter()
        .map(|w| w.to_string())
        .collect()
}
