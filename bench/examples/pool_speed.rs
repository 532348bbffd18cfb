//! The pool's throughput on the four workloads of issue 12's figures, for
//! before/after comparisons of a change: `chunksize(1).map` of 100,000
//! trivial tasks, `imap_unordered` of as many, 10,000 `apply_async` then
//! every `get`, and `map` over 1,000,000 items with the automatic
//! chunksize; 2 workers, tasks `x + 1`.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --example
//! pool_speed -- [ROUNDS]` (5 by default). Rows run interleaved (one run
//! each per round) on pools started once, after one untimed run; prints
//! per row the median rate, slowest and fastest, the parent's CPU time
//! per task (caller and supervisor threads together), and the CPU time per
//! task of the parent and the workers together.

use std::time::Instant;

use brood::Pool;

fn cpu_now() -> f64 {
    // SAFETY: getrusage writes one rusage into `u`, valid for writes.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e9 + tv.tv_usec as f64 * 1e3;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU time (ns) the workers of `pool` have used so far (their threads'
/// `schedstat`): with the parent's, what a task costs the machine, which
/// other load disturbs less than wall time.
fn workers_cpu(pool: &Pool) -> f64 {
    pool.worker_pids()
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{}/schedstat", pid.as_raw())).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

type Run = Box<dyn FnMut() -> (u64, f64)>;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |s| s.parse().expect("ROUNDS"));
    let only = std::env::args().nth(2);
    let mk = || Pool::new(2).expect("a pool");
    let mut rows: Vec<(&str, Run)> = Vec::new();
    let p = mk();
    rows.push((
        "trivial chunksize(1).map",
        Box::new(move || {
            let c = workers_cpu(&p);
            let v = p.chunksize(1).map(|x: u64| x + 1, 0..100_000u64).unwrap();
            assert_eq!(v.len(), 100_000);
            (100_000, workers_cpu(&p) - c)
        }),
    ));
    let p = mk();
    rows.push((
        "trivial imap_unordered",
        Box::new(move || {
            let c = workers_cpu(&p);
            let n = p.imap_unordered(|x: u64| x + 1, 0..100_000u64).count() as u64;
            (n, workers_cpu(&p) - c)
        }),
    ));
    let p = mk();
    rows.push((
        "apply_async 10,000",
        Box::new(move || {
            let c = workers_cpu(&p);
            let rs: Vec<_> = (0..10_000u64)
                .map(|x| p.apply_async(|x: u64| x + 1, x).unwrap())
                .collect();
            for r in rs {
                r.get().unwrap();
            }
            (10_000, workers_cpu(&p) - c)
        }),
    ));
    let p = mk();
    rows.push((
        "automap 1,000,000",
        Box::new(move || {
            let c = workers_cpu(&p);
            let v = p.map(|x: u64| x + 1, 0..1_000_000u64).unwrap();
            assert_eq!(v.len(), 1_000_000);
            (1_000_000, workers_cpu(&p) - c)
        }),
    ));
    if let Some(only) = &only {
        rows.retain(|(name, _)| name.contains(only.as_str()));
    }
    for (_, run) in &mut rows {
        run();
    }
    let mut rates: Vec<Vec<(f64, f64, f64)>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for ((_, run), out) in rows.iter_mut().zip(&mut rates) {
            let (t, c) = (Instant::now(), cpu_now());
            let (n, wc) = run();
            let n = n as f64;
            let parent = cpu_now() - c;
            out.push((n / t.elapsed().as_secs_f64(), parent / n, (parent + wc) / n));
        }
    }
    for ((name, _), mut r) in rows.iter().zip(rates) {
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let median = |k: fn(&(f64, f64, f64)) -> f64| {
            let mut v: Vec<f64> = r.iter().map(k).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{name}\t{:.0}\t{:.0}\t{:.0}\tparent_cpu_ns/task {:.0}\tall_cpu_ns/task {:.0}",
            r[r.len() / 2].0,
            r[0].0,
            r[r.len() - 1].0,
            median(|x| x.1),
            median(|x| x.2),
        );
    }
}
