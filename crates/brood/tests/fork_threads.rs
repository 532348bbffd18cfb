//! Forking under `allow_fork_with_threads` while other threads take the
//! locks a child might need: std's stdout and stderr locks and the
//! environment lock. A child must never inherit one of them held by a
//! thread that does not exist in it (it would wait for ever). Each fork
//! gets a hard time bound; with the locks churning, a child that inherited
//! one held would miss it.
//!
//! Its own test binary: the opt-in and the churning threads are
//! process-wide.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use brood::Process;

const FORKS: u64 = 40;
const BOUND: Duration = Duration::from_secs(20);

/// A thread that holds `take()`'s guard most of the time, letting go
/// briefly, until `stop`.
fn churn<G>(stop: &Arc<AtomicBool>, take: impl Fn() -> G + Send + 'static) -> JoinHandle<()> {
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let guard = take();
            std::thread::sleep(Duration::from_micros(500));
            drop(guard);
            std::thread::sleep(Duration::from_micros(20));
        }
    })
}

fn allow() {
    // SAFETY: the churning threads hold only std's stream locks, which
    // brood takes across the fork itself; the test harness's thread waits.
    unsafe { brood::allow_fork_with_threads() };
}

/// Forked children that never print, and children that do, while another
/// thread holds stdout's lock almost all the time: none hangs (each child
/// flushes stdout at exit, so one that inherited the lock held would).
#[test]
fn fork_while_another_thread_holds_stdout_does_not_hang() {
    allow();
    let stop = Arc::new(AtomicBool::new(false));
    let out = churn(&stop, || std::io::stdout().lock());
    let err = churn(&stop, || std::io::stderr().lock());
    for i in 0..FORKS {
        let mut quiet = Process::fork(move || i * 2);
        quiet.start().unwrap();
        assert_eq!(
            quiet.join_timeout(BOUND).unwrap(),
            i * 2,
            "fork {i} (quiet)"
        );
        let mut loud = Process::fork(move || {
            // Through `Stdout`/`Stderr` themselves, and so their locks
            // (`print!` would go to libtest's capture under `cargo test`).
            let mut out = std::io::stdout();
            write!(out, "child {i} without a newline").unwrap();
            writeln!(out, " and with one").unwrap();
            writeln!(std::io::stderr(), "child {i} on stderr").unwrap();
            out.flush().unwrap();
            i
        });
        loud.start().unwrap();
        assert_eq!(loud.join_timeout(BOUND).unwrap(), i, "fork {i} (printing)");
    }
    stop.store(true, Ordering::Relaxed);
    out.join().unwrap();
    err.join().unwrap();
}

/// Children that panic (their panic hook runs) while another thread keeps
/// writing the environment: brood's hook reads nothing from the
/// environment in a forked child, so none hangs on std's environment lock.
#[test]
fn a_panicking_fork_while_another_thread_writes_the_environment_does_not_hang() {
    allow();
    // std's own hook reads RUST_BACKTRACE once per process and caches it;
    // let that happen here, before the threads start (what is left to
    // brood's own hook is the test).
    let _ = std::panic::catch_unwind(|| panic!("priming std's panic hook"));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: test-only; nothing in this process reads this
                // variable, and the child never reads the environment.
                unsafe { std::env::set_var("BROOD_TEST_CHURN", n.to_string()) };
                n += 1;
            }
        })
    };
    for i in 0..FORKS {
        let mut p = Process::fork(move || -> u64 { panic!("planned panic {i}") });
        p.start().unwrap();
        let err = p.join_timeout(BOUND).unwrap_err();
        assert!(
            err.panic()
                .is_some_and(|r| r.message == format!("planned panic {i}")),
            "fork {i}: {err}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}
