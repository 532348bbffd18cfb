//! The reference's distributed worker (Python's `task_worker.py`): connect
//! to the master's manager over TCP with the auth key, take tasks, put
//! results, and stop when no task comes for a second.
//!
//! ```text
//! cargo run --example distributed_worker -- 127.0.0.1:5000
//! ```

use std::time::Duration;

use brood::Manager;

const AUTHKEY: &[u8] = b"abc";

fn main() -> brood::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".into());
    println!("worker: connecting to {address}...");
    let manager = Manager::connect(&address.parse()?, AUTHKEY)?;
    let tasks = manager.named("tasks").joinable_queue::<u64>(0)?;
    let results = manager.named("results").queue::<String>(0)?;
    loop {
        let n = match tasks.get_timeout(Duration::from_secs(1)) {
            Ok(n) => n,
            Err(e) if e.is_timeout() => {
                println!("worker: task queue is empty; done");
                return Ok(());
            }
            Err(e) if e.kind() == brood::ErrorKind::Closed => {
                println!("worker: the master has gone; done");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        println!("worker: run task {n} * {n}");
        results.put(&format!("{n} * {n} = {}", n * n))?;
        tasks.task_done()?;
    }
}
