//! Task arguments that carry fds (`Value`, `Connection`, `Lock`, `Queue`)
//! cross to pool workers with the batch (`SCM_RIGHTS`), under every start
//! method: through `apply`, `apply_async`, `map`, `starmap`, `imap` and
//! `submit`; a unit requeued after its worker died still has valid fds; a
//! cancelled one closes them; thousands of such tasks leak no fd in the
//! parent. Every wait has a bound: a hang fails the test.

#[macro_use]
mod common;

use std::sync::Mutex;
use std::time::Duration;

use brood::os::{self, Pid};
use brood::pool::{RetryOn, RetryPolicy};
use brood::sync::Lock;
use brood::{Connection, ErrorKind, Pool, PoolBuilder, Queue, StartMethod, Value};

/// The tests of this file count the process's fds: one at a time even when
/// the harness runs them as threads of one process.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn builder(m: StartMethod) -> PoolBuilder {
    common::allow_fork();
    Pool::builder().start_method(m)
}

const BOUND: Duration = Duration::from_secs(60);

fn shared_objects_as_task_arguments(m: StartMethod) {
    let _serial = serial();
    let pool = builder(m).processes(2).build().unwrap();

    // A Value through apply: the worker's increment is seen by the parent.
    let count = Value::new(0u32).unwrap();
    pool.apply(|v: Value<u32>| *v.lock().unwrap() += 1, count.clone())
        .unwrap();
    assert_eq!(count.get().unwrap(), 1);

    // A Connection through apply_async: the worker writes to the parent.
    let (mut rx, tx) = brood::pipe(false).unwrap();
    let r = pool
        .apply_async(
            |mut c: Connection| {
                c.send(&os::getpid()).unwrap();
                7u8
            },
            tx,
        )
        .unwrap();
    assert_eq!(r.get_timeout(BOUND).unwrap(), 7);
    let pid: Pid = rx.recv_timeout(BOUND).unwrap();
    assert!(pool.worker_pids().contains(&pid));

    // Values in map (chunks of several items, each with its own fds), next
    // to a plain argument in the same tuple (starmap).
    let values: Vec<Value<u32>> = (0..40).map(|i| Value::new(i).unwrap()).collect();
    let doubled = pool
        .chunksize(3)
        .map(
            |v: Value<u32>| {
                let mut g = v.lock().unwrap();
                *g *= 2;
                *g
            },
            values.clone(),
        )
        .unwrap();
    assert_eq!(doubled, (0..40).map(|i| i * 2).collect::<Vec<_>>());
    assert!(
        values
            .iter()
            .enumerate()
            .all(|(i, v)| v.get().unwrap() == 2 * i as u32)
    );
    let added = pool
        .starmap(
            |v: Value<u32>, k: u32| v.get().unwrap() + k,
            values.iter().cloned().zip(0..40u32).collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(added, (0..40).map(|i| 3 * i).collect::<Vec<_>>());

    // Chunks of 100 fds each: at most 253 fds are in flight at once, so
    // units wait for results rather than overrun the kernel's limit.
    let many: Vec<Value<u32>> = (0..600).map(|i| Value::new(i).unwrap()).collect();
    let got = pool
        .chunksize(100)
        .map(|v: Value<u32>| v.get().unwrap(), many)
        .unwrap();
    assert_eq!(got, (0..600).collect::<Vec<_>>());

    // A chunk where only some items hold fds.
    let mixed = pool
        .chunksize(4)
        .map(
            |v: Option<Value<u32>>| v.map_or(0, |v| v.get().unwrap()),
            (0..10).map(|i| (i % 3 == 0).then(|| Value::new(i).unwrap())),
        )
        .unwrap();
    assert_eq!(
        mixed,
        (0..10)
            .map(|i| if i % 3 == 0 { i } else { 0 })
            .collect::<Vec<_>>()
    );

    // imap, lazily fed.
    let seen: Vec<u32> = pool
        .imap(
            |v: Value<u32>| v.get().unwrap(),
            values.iter().take(10).cloned(),
        )
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(seen, (0..10).map(|i| 2 * i).collect::<Vec<_>>());

    // A Lock and a Queue through submit: the worker takes the lock the
    // parent gives it and puts into the queue the parent reads.
    let lock = Lock::new().unwrap();
    let q = Queue::<Pid>::new().unwrap();
    let f = pool
        .submit(
            |(l, q): (Lock, Queue<Pid>)| {
                let _g = l.lock().unwrap();
                q.put(os::getpid()).unwrap();
            },
            (lock.clone(), q.clone()),
        )
        .unwrap();
    f.result_timeout(BOUND).unwrap();
    let pid = q.get_timeout(BOUND).unwrap();
    assert!(pool.worker_pids().contains(&pid));
    assert!(!lock.locked(), "the worker left the lock held");
    assert!(lock.lock_timeout(BOUND).is_ok());

    pool.close();
    pool.join().unwrap();
}

/// 2,000 tasks each given a `Value` and a `Connection` leak no fd in the
/// parent, and every one ran.
fn many_fd_tasks_leak_nothing(m: StartMethod) {
    let _serial = serial();
    let n = 2_000;
    let pool = builder(m).processes(2).build().unwrap();
    // Both workers up (each is a connection and a pidfd in the parent).
    let deadline = std::time::Instant::now() + BOUND;
    while pool.worker_pids().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "workers not up");
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.chunksize(1).map(|x: u8| x, 0..8).unwrap();
    let count = Value::new(0u32).unwrap();
    let (mut rx, tx) = brood::pipe(false).unwrap();
    let before = common::open_fds() - 1; // less `rx`, which the reader takes
    // Read what the workers send as they send it (a socket holds only so
    // many messages).
    let reader = std::thread::spawn(move || {
        let mut got: Vec<u32> = (0..n).map(|_| rx.recv_timeout(BOUND).unwrap()).collect();
        got.sort_unstable();
        got
    });
    let results: Vec<_> = (0..n)
        .map(|i| {
            pool.apply_async(
                |(v, mut c, i): (Value<u32>, Connection, u32)| {
                    *v.lock().unwrap() += 1;
                    c.send(&i).unwrap();
                    i
                },
                (count.clone(), tx.try_clone().unwrap(), i),
            )
            .unwrap()
        })
        .collect();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.get_timeout(BOUND).unwrap(), i as u32);
    }
    assert_eq!(reader.join().unwrap(), (0..n).collect::<Vec<_>>());
    assert_eq!(count.get().unwrap(), n);
    assert_eq!(common::open_fds(), before, "fds leaked in the parent");
    pool.close();
    pool.join().unwrap();
}

/// A worker dies holding a task: the units queued behind it in its batch
/// are requeued to its replacement, and their fds are still good there.
fn requeued_units_keep_their_fds(m: StartMethod) {
    let _serial = serial();
    let pool = builder(m).processes(1).build().unwrap();
    pool.apply(|x: u8| x, 1).unwrap();
    let count = Value::new(0u32).unwrap();
    let fatal = pool
        .apply_async(
            |v: Value<u32>| {
                std::thread::sleep(Duration::from_millis(200));
                if v.get().is_ok() {
                    std::process::abort();
                }
                0u8
            },
            count.clone(),
        )
        .unwrap();
    let rest: Vec<_> = (0..20)
        .map(|_| {
            pool.apply_async(|v: Value<u32>| *v.lock().unwrap() += 1, count.clone())
                .unwrap()
        })
        .collect();
    let err = fatal.get_timeout(BOUND).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    for r in rest {
        r.get_timeout(BOUND).unwrap();
    }
    assert_eq!(count.get().unwrap(), 20);
}

/// A task retried after its worker died runs again with the fds it was
/// given: the parent kept its duplicates until the unit's outcome.
fn a_retried_task_gets_its_fds_again(m: StartMethod) {
    let _serial = serial();
    let pool = builder(m)
        .processes(1)
        .retry(
            RetryPolicy::new(1)
                .on(RetryOn::WORKER_LOST)
                .backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .build()
        .unwrap();
    pool.apply(|x: u8| x, 1).unwrap();
    let tries = Value::new(0u32).unwrap();
    let (mut rx, tx) = brood::pipe(false).unwrap();
    let before = common::open_fds();
    let f = pool
        .submit(
            |(v, mut c): (Value<u32>, Connection)| {
                let attempt = {
                    let mut g = v.lock().unwrap();
                    *g += 1;
                    *g
                };
                c.send(&attempt).unwrap();
                if attempt == 1 {
                    let _ = os::kill(os::getpid(), 9);
                    std::thread::sleep(Duration::from_secs(10));
                }
                attempt
            },
            (tries.clone(), tx.try_clone().unwrap()),
        )
        .unwrap();
    assert_eq!(f.result_timeout(BOUND).unwrap(), 2);
    assert_eq!(f.attempts(), 2);
    assert_eq!(rx.recv_timeout(BOUND).map(|n: u32| n).unwrap(), 1);
    assert_eq!(rx.recv_timeout(BOUND).map(|n: u32| n).unwrap(), 2);
    assert_eq!(tries.get().unwrap(), 2);
    assert_eq!(common::open_fds(), before, "fds leaked in the parent");
}

/// Futures cancelled before a worker took them close their fds.
fn cancelled_units_close_their_fds(m: StartMethod) {
    let _serial = serial();
    let pool = builder(m).processes(1).build().unwrap();
    pool.apply(|x: u8| x, 1).unwrap();
    let (mut rx, tx) = brood::pipe(false).unwrap();
    let count = Value::new(0u32).unwrap();
    let before = common::open_fds();
    let busy = pool
        .submit(
            |mut c: Connection| {
                c.send(&1u8).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            },
            tx.try_clone().unwrap(),
        )
        .unwrap();
    let _: u8 = rx.recv_timeout(BOUND).unwrap(); // the worker is busy
    let futures: Vec<_> = (0..50)
        .map(|_| {
            pool.submit(|v: Value<u32>| *v.lock().unwrap() += 1, count.clone())
                .unwrap()
        })
        .collect();
    let cancelled = futures.iter().filter(|f| f.cancel()).count();
    assert!(cancelled > 0, "no future could be cancelled");
    busy.result_timeout(BOUND).unwrap();
    for f in &futures {
        if !f.cancelled() {
            f.result_timeout(BOUND).unwrap();
        }
    }
    assert_eq!(count.get().unwrap() as usize, 50 - cancelled);
    drop(futures);
    // The supervisor drops a cancelled unit when it reaches it: a last
    // task behind them all proves it has.
    pool.apply(|x: u8| x, 1).unwrap();
    assert_eq!(common::open_fds(), before, "fds leaked in the parent");
}

/// One unit carries at most 253 fds (one `sendmsg`): more is a clear
/// error from the verb, and the pool goes on.
fn too_many_fds_in_one_unit_is_an_error(m: StartMethod) {
    let _serial = serial();
    let pool = builder(m).processes(1).build().unwrap();
    let before = common::open_fds();
    let conns: Vec<Connection> = (0..300).map(|_| brood::pipe(false).unwrap().1).collect();
    let err = pool.apply(|c: Vec<Connection>| c.len(), conns).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("253"), "{err}");
    assert_eq!(common::open_fds(), before);
    assert_eq!(pool.apply(|x: u8| x + 1, 1).unwrap(), 2);
}

suite!(
    shared_objects_as_task_arguments,
    many_fd_tasks_leak_nothing,
    requeued_units_keep_their_fds,
    cancelled_units_close_their_fds,
    a_retried_task_gets_its_fds_again,
    too_many_fds_in_one_unit_is_an_error,
);
