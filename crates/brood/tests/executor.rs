//! The pool as an executor (Python's `concurrent.futures`) with real
//! worker processes, one suite per start method: futures in completion
//! order, `wait`, `cancel` before a task starts and never after, futures
//! awaited from tokio, hard time limits that kill and replace a worker
//! stuck in a loop or a system call, a soft limit polled by the task,
//! retries after a worker was killed, and `shutdown(cancel_futures)`.
//! Every wait has a bound: a hang fails the test.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brood::pool::{RetryOn, RetryPolicy};
use brood::{ErrorKind, Pool, PoolBuilder, StartMethod, TaskFuture, WaitMode};

const BOUND: Duration = Duration::from_secs(30);

fn builder(m: StartMethod) -> PoolBuilder {
    common::allow_fork();
    Pool::builder().start_method(m)
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A path no other test (nor run) uses, in the temporary directory.
fn marker(tag: &str) -> PathBuf {
    std::env::temp_dir().join(common::unique_name(tag))
}

/// Waits (bounded) until `path` exists: a task has begun.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + BOUND;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ----- futures -----

fn as_completed_yields_in_completion_order(m: StartMethod) {
    let pool = builder(m).processes(3).build().unwrap();
    // Submitted slowest first: completion order is the reverse.
    let futures: Vec<TaskFuture<u64>> = [900u64, 50, 450]
        .into_iter()
        .map(|ms| pool.submit(sleep_ms, ms).unwrap())
        .collect();
    let order: Vec<u64> = brood::as_completed(&futures)
        .map(|f| f.result().unwrap())
        .collect();
    assert_eq!(order, [50, 450, 900]);
    // Each yielded once; all done now.
    assert!(futures.iter().all(TaskFuture::done));
    assert_eq!(brood::as_completed(&futures).count(), 3);
}

fn as_completed_timeout_stops_with_an_error(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let futures = vec![
        pool.submit(sleep_ms, 0).unwrap(),
        pool.submit(sleep_ms, 20_000).unwrap(),
    ];
    let t = Instant::now();
    let got: Vec<_> = brood::as_completed_timeout(&futures, Duration::from_millis(300)).collect();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref().unwrap().result().unwrap(), 0);
    assert!(got[1].as_ref().unwrap_err().is_timeout());
    pool.terminate();
    assert_eq!(
        futures[1].result().unwrap_err().kind(),
        ErrorKind::PoolClosed
    );
}

fn wait_first_completed_returns_as_one_is_done(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let futures = vec![
        pool.submit(sleep_ms, 20_000).unwrap(),
        pool.submit(sleep_ms, 100).unwrap(),
    ];
    let t = Instant::now();
    let done = brood::wait(&futures, WaitMode::FirstCompleted, Some(BOUND));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(90), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(done.done, [1]);
    assert_eq!(done.not_done, [0]);
    // A timeout is no error: not_done says what is left.
    let d = brood::wait(
        &futures,
        WaitMode::AllCompleted,
        Some(Duration::from_millis(50)),
    );
    assert_eq!((d.done, d.not_done), (vec![1], vec![0]));
    pool.terminate();
}

fn wait_first_exception_and_all_completed(m: StartMethod) {
    let pool = builder(m).processes(3).build().unwrap();
    let futures: Vec<TaskFuture<u64>> = vec![
        pool.submit(sleep_ms, 20_000).unwrap(),
        pool.submit(sleep_ms, 10).unwrap(),
        pool.submit(
            |ms: u64| -> u64 {
                sleep_ms(ms);
                panic!("failed after {ms} ms")
            },
            200,
        )
        .unwrap(),
    ];
    let t = Instant::now();
    let d = brood::wait(&futures, WaitMode::FirstException, Some(BOUND));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!((d.done, d.not_done), (vec![1, 2], vec![0]));
    let err = futures[2].result().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(err.panic().unwrap().message, "failed after 200 ms");
    assert!(
        err.panic()
            .unwrap()
            .location
            .as_deref()
            .unwrap()
            .contains("executor.rs")
    );
    // The outcome stays: asked again, the same error.
    assert_eq!(
        futures[2].result().unwrap_err().to_string(),
        err.to_string()
    );
    pool.terminate();

    let pool = builder(m).processes(2).build().unwrap();
    let futures: Vec<_> = (0..6u64)
        .map(|i| pool.submit(sleep_ms, i * 20).unwrap())
        .collect();
    let d = brood::wait(&futures, WaitMode::AllCompleted, Some(BOUND));
    assert_eq!(d.done, (0..6).collect::<Vec<_>>());
    assert!(d.not_done.is_empty());
}

fn cancel_only_before_the_task_starts(m: StartMethod) {
    let dir = marker("cancel");
    std::fs::create_dir(&dir).unwrap();
    let pool = builder(m).processes(1).build().unwrap();
    // Each task leaves a file named after its number: a cancelled one
    // must leave none.
    fn mark((dir, i, ms): (PathBuf, u32, u64)) -> u32 {
        std::fs::write(dir.join(i.to_string()), b"ran").unwrap();
        sleep_ms(ms);
        i
    }
    let running = pool.submit(mark, (dir.clone(), 0, 400)).unwrap();
    wait_for_file(&dir.join("0"));
    let queued: Vec<TaskFuture<u32>> = (1..=6)
        .map(|i| pool.submit(mark, (dir.clone(), i, 0)).unwrap())
        .collect();
    assert!(!running.cancel(), "a running task cannot be cancelled");
    assert!(!running.cancelled());
    // The last ones are still queued (a worker holds at most one behind
    // the running one).
    assert!(queued[5].cancel());
    assert!(queued[4].cancel());
    assert!(queued[5].cancelled() && queued[5].done());
    assert!(queued[5].cancel() || queued[5].cancelled());
    assert_eq!(queued[4].result().unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(running.result().unwrap(), 0);
    for (i, f) in queued.iter().enumerate().take(4) {
        assert_eq!(f.result().unwrap(), i as u32 + 1);
        assert!(!f.cancel(), "a finished task cannot be cancelled");
        assert!(!f.cancelled());
    }
    pool.close();
    pool.join().unwrap();
    assert!(dir.join("4").exists());
    assert!(!dir.join("5").exists(), "a cancelled task ran");
    assert!(!dir.join("6").exists(), "a cancelled task ran");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[brood::task]
fn cube(x: i64) -> i64 {
    x * x * x
}

fn submit_task_by_name(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let f = pool
        .submit_task::<i64, _>(concat!(module_path!(), "::cube"), (-3i64,))
        .unwrap();
    assert_eq!(f.result().unwrap(), -27);
    let err = pool
        .submit_task::<i64, _>("no::such::task", (1i64,))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownTask);
}

fn tokio_awaits_a_thousand_futures(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let futures: Vec<TaskFuture<u64>> = (0..1000u64)
        .map(|x| pool.submit(|x: u64| x * 2 + 1, x).unwrap())
        .collect();
    let got: Vec<u64> = rt.block_on(async {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap().unwrap());
        }
        out
    });
    assert_eq!(got, (0..1000u64).map(|x| x * 2 + 1).collect::<Vec<_>>());
    // Awaited directly too, and a task error comes back as an error.
    let err = rt
        .block_on(
            pool.submit(|()| -> u8 { panic!("async boom") }, ())
                .unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.panic().unwrap().message, "async boom");
}

fn shutdown_cancel_futures_cancels_pending_ones(m: StartMethod) {
    let dir = marker("shutdown");
    std::fs::create_dir(&dir).unwrap();
    let pool = builder(m).processes(1).build().unwrap();
    fn mark((dir, i, ms): (PathBuf, u32, u64)) -> u32 {
        std::fs::write(dir.join(i.to_string()), b"ran").unwrap();
        sleep_ms(ms);
        i
    }
    let running = pool.submit(mark, (dir.clone(), 0, 300)).unwrap();
    wait_for_file(&dir.join("0"));
    let queued: Vec<TaskFuture<u32>> = (1..=8)
        .map(|i| pool.submit(mark, (dir.clone(), i, 0)).unwrap())
        .collect();
    let t = Instant::now();
    pool.shutdown(false, true);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "shutdown(wait=false) waited"
    );
    // At most one was handed to the worker behind the running one.
    let cancelled = queued.iter().filter(|f| f.cancelled()).count();
    assert!(cancelled >= 7, "only {cancelled} of 8 cancelled");
    assert!(queued[7].cancelled());
    assert_eq!(
        pool.submit(|x: u8| x, 1).unwrap_err().kind(),
        ErrorKind::PoolClosed
    );
    pool.join().unwrap();
    assert_eq!(running.result().unwrap(), 0, "a running task finishes");
    for (i, f) in queued.iter().enumerate() {
        match f.result() {
            Ok(v) => assert_eq!(v, i as u32 + 1),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
                assert!(
                    !dir.join((i + 1).to_string()).exists(),
                    "a cancelled task ran"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn shutdown_wait_finishes_the_work(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let futures: Vec<_> = (0..20u64)
        .map(|i| pool.submit(sleep_ms, i % 3).unwrap())
        .collect();
    pool.shutdown(true, false);
    assert!(pool.worker_pids().is_empty());
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result_timeout(Duration::ZERO).unwrap(), i as u64 % 3);
    }
    common::assert_no_zombie_children();
}

// ----- time limits -----

fn endless_loop_times_out_and_the_pool_goes_on(m: StartMethod) {
    let pool = builder(m)
        .processes(1)
        .hard_time_limit(Duration::from_millis(200))
        .build()
        .unwrap();
    let before = pool.worker_pids();
    let t = Instant::now();
    let f = pool
        .submit(
            |()| -> u8 {
                loop {
                    std::hint::spin_loop();
                }
            },
            (),
        )
        .unwrap();
    let err = f.result_timeout(BOUND).unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(took >= Duration::from_millis(200), "killed early: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let msg = err.to_string();
    assert!(msg.contains("ran for") && msg.contains("200ms"), "{msg}");
    // The worker was replaced, and the next task runs.
    assert_eq!(pool.apply(|x: u32| x + 1, 41).unwrap(), 42);
    let after = pool.worker_pids();
    assert_eq!(after.len(), 1);
    assert_ne!(before, after);

    // Blocked in a system call (a long sleep): stopped the same way.
    let t = Instant::now();
    let err = pool
        .submit(sleep_ms, 60_000)
        .unwrap()
        .result_timeout(BOUND)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    // Tasks within the limit are untouched.
    assert_eq!(pool.map(|x: u64| x * 2, 0..100).unwrap().len(), 100);
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

fn per_task_hard_limit_over_the_pools(m: StartMethod) {
    // The pool's limit is long; this task's own is short.
    let pool = builder(m)
        .processes(2)
        .hard_time_limit(Duration::from_secs(60))
        .build()
        .unwrap();
    let stuck = pool
        .options()
        .hard_time_limit(Duration::from_millis(150))
        .submit(sleep_ms, 60_000)
        .unwrap();
    let fine = pool.submit(sleep_ms, 300).unwrap();
    assert_eq!(
        stuck.result_timeout(BOUND).unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert_eq!(
        fine.result_timeout(BOUND).unwrap(),
        300,
        "the other worker's task is untouched"
    );
    // Zero is refused, not a kill on sight.
    assert!(
        pool.options()
            .hard_time_limit(Duration::ZERO)
            .submit(sleep_ms, 1)
            .is_err()
    );
    assert!(builder(m).soft_time_limit(Duration::ZERO).build().is_err());
}

fn hard_limit_applies_to_a_whole_chunk(m: StartMethod) {
    let pool = builder(m)
        .processes(1)
        .hard_time_limit(Duration::from_millis(300))
        .build()
        .unwrap();
    // 4 items of 120 ms in one chunk: the chunk runs past 300 ms.
    let err = pool
        .chunksize(4)
        .map(sleep_ms, vec![120u64; 4])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    // One item per chunk: each is within the limit.
    assert_eq!(
        pool.chunksize(1)
            .map(sleep_ms, vec![120u64; 4])
            .unwrap()
            .len(),
        4
    );
}

fn soft_deadline_lets_a_task_end_cleanly(m: StartMethod) {
    let pool = builder(m)
        .processes(1)
        .soft_time_limit(Duration::from_millis(150))
        .hard_time_limit(Duration::from_secs(20))
        .build()
        .unwrap();
    let t = Instant::now();
    let f = pool
        .submit(
            |()| {
                let deadline = brood::task_deadline().expect("a soft deadline");
                let mut rounds = 0u64;
                while !brood::task_cancelled() {
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                (rounds, Instant::now() >= deadline)
            },
            (),
        )
        .unwrap();
    let (rounds, past) = f.result_timeout(BOUND).unwrap();
    let took = t.elapsed();
    assert!(past && rounds > 0);
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // No soft limit for this one: no deadline, never cancelled.
    let plain = builder(m).processes(1).build().unwrap();
    assert_eq!(
        plain
            .apply(
                |()| (brood::task_deadline().is_some(), brood::task_cancelled()),
                ()
            )
            .unwrap(),
        (false, false)
    );
    // A per-task soft limit.
    let has = plain
        .options()
        .soft_time_limit(Duration::from_secs(9))
        .submit(|()| brood::task_deadline().is_some(), ())
        .unwrap();
    assert!(has.result().unwrap());
}

// ----- retries -----

/// Kills its own worker (SIGKILL) unless the marker file exists; creates
/// it first, so a second attempt succeeds.
fn die_once(path: PathBuf) -> String {
    if !path.exists() {
        std::fs::write(&path, b"first attempt").unwrap();
        brood::os::kill(brood::os::getpid(), 9).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    "second attempt".to_string()
}

fn a_killed_worker_is_retried_and_says_two_attempts(m: StartMethod) {
    let path = marker("retry");
    let pool = builder(m)
        .processes(1)
        .retry(
            RetryPolicy::new(1)
                .on(RetryOn::WORKER_LOST)
                .backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .build()
        .unwrap();
    let f = pool.submit(die_once, path.clone()).unwrap();
    assert_eq!(f.result_timeout(BOUND).unwrap(), "second attempt");
    assert_eq!(f.attempts(), 2);
    std::fs::remove_file(&path).unwrap();

    // Without a retry policy, the same task fails with WorkerLost.
    let path = marker("noretry");
    let plain = builder(m).processes(1).build().unwrap();
    let f = plain.submit(die_once, path.clone()).unwrap();
    let err = f.result_timeout(BOUND).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    assert_eq!(err.signal(), Some(9));
    assert_eq!(f.attempts(), 1);
    std::fs::remove_file(&path).unwrap();
}

fn retries_run_out_and_the_error_says_how_many(m: StartMethod) {
    let pool = builder(m)
        .processes(2)
        .hard_time_limit(Duration::from_millis(100))
        .retry(
            RetryPolicy::new(2)
                .on(RetryOn::TIMED_OUT | RetryOn::TASK_ERROR)
                .backoff(Duration::ZERO, Duration::ZERO),
        )
        .build()
        .unwrap();
    let f = pool.submit(sleep_ms, 60_000).unwrap();
    let err = f.result_timeout(BOUND).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert_eq!(f.attempts(), 3);
    // A panicking task, retried on task errors, fails with its panic.
    // (Its own, longer hard limit: with RUST_BACKTRACE set, a debug
    // build's worker may take over 100 ms to capture the backtrace.)
    let f = pool
        .options()
        .hard_time_limit(Duration::from_secs(20))
        .submit(|x: u8| -> u8 { panic!("bad {x}") }, 7)
        .unwrap();
    let err = f.result_timeout(BOUND).unwrap_err();
    assert_eq!(
        err.panic().unwrap_or_else(|| panic!("{err}")).message,
        "bad 7"
    );
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert_eq!(f.attempts(), 3);
    // Per task: no retries for this one.
    let f = pool
        .options()
        .retry(RetryPolicy::default())
        .hard_time_limit(Duration::from_secs(20))
        .submit(|x: u8| -> u8 { panic!("once {x}") }, 1)
        .unwrap();
    assert!(f.result_timeout(BOUND).is_err());
    assert_eq!(f.attempts(), 1);
    // Successes are untouched by the policy.
    assert_eq!(pool.map(|x: u32| x + 1, 0..50).unwrap().len(), 50);
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

suite!(
    as_completed_yields_in_completion_order,
    as_completed_timeout_stops_with_an_error,
    wait_first_completed_returns_as_one_is_done,
    wait_first_exception_and_all_completed,
    cancel_only_before_the_task_starts,
    submit_task_by_name,
    tokio_awaits_a_thousand_futures,
    shutdown_cancel_futures_cancels_pending_ones,
    shutdown_wait_finishes_the_work,
    endless_loop_times_out_and_the_pool_goes_on,
    per_task_hard_limit_over_the_pools,
    hard_limit_applies_to_a_whole_chunk,
    soft_deadline_lets_a_task_end_cleanly,
    a_killed_worker_is_retried_and_says_two_attempts,
    retries_run_out_and_the_error_says_how_many,
);
