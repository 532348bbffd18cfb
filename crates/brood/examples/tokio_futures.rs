//! Pool futures awaited from a tokio runtime: the pool runs the work in
//! worker processes, the async code awaits `TaskFuture`s like any other
//! future (brood depends on no runtime; the job wakes the task's waker).
//! Run: `cargo run -p brood --example tokio_futures`.

use std::time::Duration;

use brood::pool::{RetryOn, RetryPolicy};
use brood::{ErrorKind, Pool};

/// CPU work worth a process: the number of primes below `n`.
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), brood::Error> {
    let pool = Pool::builder()
        .processes(4)
        .hard_time_limit(Duration::from_secs(5))
        .retry(RetryPolicy::new(1).on(RetryOn::WORKER_LOST))
        .build()?;

    // Many futures at once: spawn each on the runtime, await them all.
    let handles: Vec<_> = (1..=100u64)
        .map(|i| pool.submit(count_primes, i * 1000).map(tokio::spawn))
        .collect::<Result<_, _>>()?;
    let mut total = 0;
    for h in handles {
        total += h.await.expect("the tokio task")?;
    }
    println!("primes below 1000, 2000, ..., 100000, summed: {total}");

    // One awaited directly, racing a tokio timer.
    let slow = pool.submit(
        |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        },
        200,
    )?;
    tokio::select! {
        v = slow => println!("the slow task finished first: {} ms", v?),
        _ = tokio::time::sleep(Duration::from_secs(3)) => println!("the timer won"),
    }

    // Errors arrive through the future too: here a task past the pool's
    // hard limit (its own, shorter one), killed and reported.
    let stuck = pool
        .options()
        .hard_time_limit(Duration::from_millis(300))
        .submit(
            |()| -> u8 {
                loop {
                    std::hint::spin_loop()
                }
            },
            (),
        )?;
    let err = stuck.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    println!("stopped: {err}");

    pool.shutdown(true, false);
    Ok(())
}
