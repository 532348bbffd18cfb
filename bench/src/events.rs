//! The events table: brood's `EventEngine` against a Python event engine
//! built the same way (`bench/python/events.py`: two worker processes, one
//! `multiprocessing.Queue` each, events routed by kind, handlers looked up
//! by kind in the worker).
//!
//! One row, `throughput`: put N events of 3 kinds (a `u64` payload, a
//! handler that does nothing), then `stop(Stop::Drain)`; events per second
//! from the first put to the last worker's exit, in thousands. Median of 3
//! runs. Prints `events<TAB>throughput<TAB>name<TAB>kev_per_s<TAB>n`.

use std::time::{Duration, Instant};

use brood::events::{Event, EventEngine, Stop};

/// Events per run.
const N: u64 = 200_000;
const RUNS: usize = 3;

fn noop(e: &Event<u64>) {
    std::hint::black_box(e.payload);
}

fn one_run() -> f64 {
    let mut engine = EventEngine::<u64>::builder().workers(2).build().unwrap();
    let kinds = ["tick", "trade", "quote"];
    for k in kinds {
        engine.register(k, noop);
    }
    engine.start().unwrap();
    // Wait until both workers are up, so the start is not timed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.worker_pids().iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "workers did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    for i in 0..N {
        engine.put(Event::new(kinds[(i % 3) as usize], i)).unwrap();
    }
    let report = engine.stop(Stop::Drain).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.handled, N);
    N as f64 / secs / 1e3
}

pub(crate) fn run(only: Option<&str>) {
    if !crate::selected(only, "events", "brood EventEngine") {
        return;
    }
    let mut v: Vec<f64> = (0..RUNS).map(|_| one_run()).collect();
    v.sort_by(f64::total_cmp);
    println!(
        "events\tthroughput\tbrood EventEngine\t{:.1}\t{RUNS}",
        v[RUNS / 2]
    );
}
