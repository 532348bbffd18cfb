//! The pool's throughput on the four workloads of issue 12's figures, for
//! before/after comparisons of a change: `chunksize(1).map` of 100,000
//! trivial tasks, `imap_unordered` of as many, 10,000 `apply_async` then
//! every `get`, and `map` over 1,000,000 items with the automatic
//! chunksize; 2 workers, tasks `x + 1`.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --example
//! pool_speed -- [ROUNDS]` (5 by default). Rows run interleaved (one run
//! each per round) on pools started once, after one untimed run; prints
//! per row the median rate, slowest and fastest, and the parent's CPU
//! time per task (caller and supervisor threads together).

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

type Run = Box<dyn FnMut() -> u64>;

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
            let v = p.chunksize(1).map(|x: u64| x + 1, 0..100_000u64).unwrap();
            assert_eq!(v.len(), 100_000);
            100_000
        }),
    ));
    let p = mk();
    rows.push((
        "trivial imap_unordered",
        Box::new(move || p.imap_unordered(|x: u64| x + 1, 0..100_000u64).count() as u64),
    ));
    let p = mk();
    rows.push((
        "apply_async 10,000",
        Box::new(move || {
            let rs: Vec<_> = (0..10_000u64)
                .map(|x| p.apply_async(|x: u64| x + 1, x).unwrap())
                .collect();
            for r in rs {
                r.get().unwrap();
            }
            10_000
        }),
    ));
    let p = mk();
    rows.push((
        "automap 1,000,000",
        Box::new(move || {
            let v = p.map(|x: u64| x + 1, 0..1_000_000u64).unwrap();
            assert_eq!(v.len(), 1_000_000);
            1_000_000
        }),
    ));
    if let Some(only) = &only {
        rows.retain(|(name, _)| name.contains(only.as_str()));
    }
    for (_, run) in &mut rows {
        run();
    }
    let mut rates: Vec<Vec<(f64, f64)>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for ((_, run), out) in rows.iter_mut().zip(&mut rates) {
            let (t, c) = (Instant::now(), cpu_now());
            let n = run() as f64;
            out.push((n / t.elapsed().as_secs_f64(), (cpu_now() - c) / n));
        }
    }
    for ((name, _), mut r) in rows.iter().zip(rates) {
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut cpu: Vec<f64> = r.iter().map(|x| x.1).collect();
        cpu.sort_by(f64::total_cmp);
        println!(
            "{name}\t{:.0}\t{:.0}\t{:.0}\tcpu_ns/task {:.0}",
            r[r.len() / 2].0,
            r[0].0,
            r[r.len() - 1].0,
            cpu[cpu.len() / 2]
        );
    }
}
