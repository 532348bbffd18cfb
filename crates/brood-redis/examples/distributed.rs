//! The distributed pool in one file: the same binary is the worker node and
//! the caller, as on real machines (both sides must register the tasks).
//!
//! ```text
//! cargo run -p brood-redis --example distributed                    # all in one: a private redis-server, a worker, a caller
//! cargo run -p brood-redis --example distributed -- worker URL      # a worker node (on each machine)
//! cargo run -p brood-redis --example distributed -- caller URL      # sends tasks, prints results
//! ```

use std::time::{Duration, Instant};

use brood_redis::{LocalServer, RedisPool, Worker};

/// A task: registered by name, `module::path::function`.
#[brood::task]
fn collatz_steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

fn task() -> String {
    format!("{}::collatz_steps", module_path!())
}

fn caller(url: &str) -> Result<(), brood_redis::Error> {
    let pool = RedisPool::connect(url, "example")?;
    let t = Instant::now();
    let one: u32 = pool.apply(&task(), (27u64,))?;
    println!(
        "collatz_steps(27) = {one} ({:.2} ms round trip)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let steps: Vec<u32> = pool.chunksize(100).map(&task(), 1..=10_000u64)?;
    let (best, n) = steps
        .iter()
        .zip(1..)
        .max()
        .map(|(s, n)| (*s, n))
        .unwrap_or((0, 0));
    println!(
        "10,000 tasks in {:.0} ms: the longest chain below 10,001 starts at {n} ({best} steps)",
        t.elapsed().as_secs_f64() * 1e3
    );
    for s in brood_redis::status(url, Some("example"))? {
        print!("{s}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, url] if mode == "worker" => Worker::new(url, "example").run()?,
        [mode, url] if mode == "caller" => caller(url)?,
        [] => {
            let server = LocalServer::start()?;
            println!("private redis-server at {}", server.url());
            let worker = Worker::new(&server.url(), "example")
                .processes(2)
                .lease(Duration::from_secs(1))
                .spawn()?;
            caller(&server.url())?;
            worker.stop();
        }
        _ => eprintln!("usage: distributed [worker URL | caller URL]"),
    }
    Ok(())
}
