//! What issue 13's pool features cost on trivial tasks: the status page
//! (on by default), progress reports, and the `max_rss` probe, each with
//! the feature on and off, on 2 workers, `chunksize(1).map` of `x + 1`
//! (the worst case: one result frame, one status update, one progress
//! count per task).
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --example
//! pool_features -- [TASKS] [ROUNDS]` (50,000 tasks, 7 rounds by
//! default). Rows run interleaved, one run each per round, so load from
//! elsewhere hits them alike; each row's pool is started once, with one
//! untimed run. Prints per row the median rate (tasks/s), the slowest and
//! fastest round, and the median's ratio to its "off" row; then the
//! parent's CPU time per task (all its threads: the caller and the
//! supervisor, where every one of these features runs) and its ratio.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use brood::Pool;
use brood::pool::{Progress, ProgressEvent};

struct Row {
    name: &'static str,
    /// The row it is compared with.
    base: &'static str,
    run: Box<dyn FnMut(u64)>,
    rates: Vec<f64>,
    /// The parent's CPU time (user + system, all threads) per task, in
    /// ns: what the features add runs in the parent, and CPU time is less
    /// disturbed by other load on the machine than wall time.
    cpu_ns: Vec<f64>,
}

/// This process's CPU time so far (user + system), in ns.
fn cpu_now() -> f64 {
    // SAFETY: getrusage writes one rusage into `u`, valid for writes.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e9 + tv.tv_usec as f64 * 1e3;
    t(u.ru_utime) + t(u.ru_stime)
}

fn pool(page: bool, max_rss: Option<u64>) -> Pool {
    let mut b = Pool::builder().processes(2).status_page(page);
    if let Some(bytes) = max_rss {
        b = b.max_rss(bytes);
    }
    b.build().expect("a pool")
}

fn plain(p: Pool) -> Box<dyn FnMut(u64)> {
    Box::new(move |n| {
        let v = p.chunksize(1).map(|x: u64| x + 1, 0..n).unwrap();
        assert_eq!(v.len() as u64, n);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tasks: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let mut rows = vec![
        Row {
            name: "status page off",
            base: "status page off",
            run: plain(pool(false, None)),
            rates: Vec::new(),
            cpu_ns: Vec::new(),
        },
        Row {
            name: "status page on (default)",
            base: "status page off",
            run: plain(pool(true, None)),
            rates: Vec::new(),
            cpu_ns: Vec::new(),
        },
        Row {
            name: "progress events on (page on)",
            base: "status page on (default)",
            run: {
                let p = pool(true, None);
                Box::new(move |n| {
                    let (progress, rx): (Progress, Receiver<ProgressEvent>) = Progress::channel();
                    let v = p
                        .progress(progress.show_bar(true))
                        .chunksize(1)
                        .map(|x: u64| x + 1, 0..n)
                        .unwrap();
                    assert_eq!(v.len() as u64, n);
                    let last = rx.try_iter().last().unwrap();
                    assert_eq!(last.done, n);
                })
            },
            rates: Vec::new(),
            cpu_ns: Vec::new(),
        },
        Row {
            name: "max_rss probe on (page on)",
            base: "status page on (default)",
            run: plain(pool(true, Some(1 << 40))),
            rates: Vec::new(),
            cpu_ns: Vec::new(),
        },
    ];
    for row in &mut rows {
        (row.run)(tasks / 10); // warm-up
    }
    for _ in 0..rounds {
        for row in &mut rows {
            let (t, cpu) = (Instant::now(), cpu_now());
            (row.run)(tasks);
            row.rates.push(tasks as f64 / t.elapsed().as_secs_f64());
            row.cpu_ns.push((cpu_now() - cpu) / tasks as f64);
        }
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    println!(
        "{tasks} trivial tasks, chunksize 1, 2 workers, {rounds} interleaved rounds (stderr a terminal: {})",
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    );
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>9} {:>16} {:>9}",
        "row", "median/s", "slowest/s", "fastest/s", "vs off", "parent CPU/task", "vs off"
    );
    for row in &rows {
        let base = rows.iter().find(|r| r.name == row.base).unwrap();
        let m = median(&row.rates);
        let min = row.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.rates.iter().copied().fold(0.0, f64::max);
        let cpu = median(&row.cpu_ns);
        println!(
            "{:<32} {:>12.0} {:>12.0} {:>12.0} {:>8.3}x {:>13.0} ns {:>8.3}x",
            row.name,
            m,
            min,
            max,
            m / median(&base.rates),
            cpu,
            cpu / median(&base.cpu_ns)
        );
    }
}
