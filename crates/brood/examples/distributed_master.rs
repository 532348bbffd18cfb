//! The reference's distributed master (Python's `task_master.py`): serve a
//! task queue and a result queue on TCP with an auth key, put tasks, and
//! collect the results that workers on this or other machines send back.
//!
//! ```text
//! cargo run --example distributed_master -- 127.0.0.1:5000 10
//! cargo run --example distributed_worker -- 127.0.0.1:5000   # in another shell
//! ```
//!
//! Unlike Python's master, this one never waits forever for a worker that
//! died: tasks a dead worker took are reported as abandoned and put back.

use std::time::Duration;

use brood::Manager;

/// The key both sides share (Python's example uses `b'abc'`).
const AUTHKEY: &[u8] = b"abc";

fn main() -> brood::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:5000".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let manager = Manager::serve(&address.parse()?, AUTHKEY)?;
    println!("master: serving on {}", manager.address());
    let tasks = manager.named("tasks").joinable_queue::<u64>(0)?;
    let results = manager.named("results").queue::<String>(0)?;
    for i in 0..count {
        let n = (i * 7919 + 13) % 10_000;
        println!("master: put task {n}");
        tasks.put(&n)?;
    }
    println!("master: waiting for results...");
    let mut received = 0;
    while received < count {
        match results.get_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                println!("master: result: {line}");
                received += 1;
            }
            Err(e) if e.is_timeout() => {
                // A worker that died with tasks in hand: put them back.
                let lost = tasks.abandoned()?;
                if lost.is_empty() {
                    println!("master: no result for 10 s; start a worker (distributed_worker)");
                }
                for n in lost {
                    println!("master: task {n} was taken by a worker that died; queued again");
                    tasks.put(&n)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    println!("master: all {count} results in; shutting down");
    Ok(())
}
