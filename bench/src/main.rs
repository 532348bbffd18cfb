//! Times "start + join of a child that returns at once" for each workload in
//! [`WORKLOADS`] and prints one TSV line per workload:
//!
//! `name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n`
//!
//! Usage: `brood-bench [--iters N] [--only SUBSTRING]`. `--iters` overrides
//! every row's default count; `--only` keeps the rows whose name contains it.
//! Run through `bench/run`, which also runs the Python side and writes the
//! report.

use std::time::Instant;

/// One row of the report: a name and one start+join to time.
struct Workload {
    name: &'static str,
    /// Timed iterations by default (`--iters` overrides).
    iters: usize,
    /// One iteration: start a child that returns at once, and join it.
    run: fn(),
}

/// The rows. Add a row here to add a workload. Rows run interleaved, so no
/// row may leave a thread behind: brood refuses to fork a threaded program
/// (procspawn's `spawn` starts none; its pools do).
#[rustfmt::skip]
const WORKLOADS: &[Workload] = &[
    Workload { name: "raw fork+_exit+waitpid", iters: 2000, run: raw_fork },
    Workload { name: "brood fork", iters: 2000, run: brood_fork },
    Workload { name: "procspawn (re-exec)", iters: 300, run: procspawn_reexec },
];

/// The floor: what the kernel charges for fork, exit and reap.
fn raw_fork() {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: `_exit` never returns and touches no parent state.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is our unreaped child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        r,
        pid,
        "waitpid failed: {}",
        std::io::Error::last_os_error()
    );
}

/// `Process::fork` pins the fork start method (`Process::new` follows
/// `get_start_method`, whose default is the forkserver).
fn brood_fork() {
    let mut p = brood::Process::fork(|| ());
    p.start().unwrap();
    p.join().unwrap();
}

fn procspawn_reexec() {
    procspawn::spawn((), |()| ()).join().unwrap();
}

/// Each row's iterations are split into this many rounds, run in turn.
const ROUNDS: usize = 10;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn main() {
    procspawn::init();

    let mut iters: Option<usize> = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iters" => {
                iters = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&n| n > 0)
                        .expect("--iters needs a positive number"),
                )
            }
            "--only" => only = Some(args.next().expect("--only needs a substring")),
            "-h" | "--help" => {
                eprintln!("usage: brood-bench [--iters N] [--only SUBSTRING]");
                for w in WORKLOADS {
                    eprintln!("  {} (default {} iterations)", w.name, w.iters);
                }
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }

    let rows: Vec<(&Workload, usize)> = WORKLOADS
        .iter()
        .filter(|w| only.as_deref().is_none_or(|s| w.name.contains(s)))
        .map(|w| (w, iters.unwrap_or(w.iters)))
        .collect();
    // Warm-up: page in code, fill allocator caches, let the first re-exec
    // load the binary into the page cache.
    for &(w, n) in &rows {
        for _ in 0..(n / 10).clamp(5, 200) {
            (w.run)();
        }
    }
    // Timed iterations, interleaved in rounds so that a burst of load from
    // elsewhere on the machine hits every row alike.
    let mut times: Vec<Vec<f64>> = rows.iter().map(|&(_, n)| Vec::with_capacity(n)).collect();
    for round in 0..ROUNDS {
        for (&(w, n), times) in rows.iter().zip(&mut times) {
            let share = n * (round + 1) / ROUNDS - n * round / ROUNDS;
            for _ in 0..share {
                let t = Instant::now();
                (w.run)();
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    for (&(w, n), mut times) in rows.iter().zip(times) {
        times.sort_by(f64::total_cmp);
        println!(
            "{}\t{:.1}\t{:.1}\t{:.1}\t{}",
            w.name,
            percentile(&times, 0.5),
            percentile(&times, 0.1),
            percentile(&times, 0.9),
            n
        );
    }
}
