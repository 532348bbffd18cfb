//! `Pool` with real worker processes, one suite per start method: Python's
//! verbs, panics, workers that die (killed, aborted, exiting) failing
//! exactly the task they held, chaos (a thread SIGKILLs random workers
//! while 10,000 tasks run), `max_tasks_per_child`, `terminate`, lazy
//! `imap`, AsyncResult semantics, a parent killed with its pool busy, and
//! Ctrl-C. Every wait has a bound: a hang fails the test.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brood::os::{self, Pid};
use brood::pool::Callbacks;
use brood::{Connection, ErrorKind, Pool, PoolBuilder, Process, StartMethod, Value};

fn builder(m: StartMethod) -> PoolBuilder {
    common::allow_fork();
    Pool::builder().start_method(m)
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Whether `pid` is gone (or a zombie nobody of ours holds).
fn gone(pid: Pid) -> bool {
    match os::ProcInfo::read(pid) {
        Err(_) => true,
        Ok(info) => info.state == os::ProcState::Zombie,
    }
}

fn wait_gone(pids: &[Pid], bound: Duration) {
    let deadline = Instant::now() + bound;
    for &pid in pids {
        while !gone(pid) {
            assert!(
                Instant::now() < deadline,
                "worker {pid} still alive after {bound:?}"
            );
            sleep_ms(10);
        }
    }
}

// ----- Python's verbs -----

fn verbs(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    assert_eq!(pool.apply(|(a, b): (u32, u32)| a * b, (6, 7)).unwrap(), 42);
    let r = pool
        .apply_async(|s: String| s.to_uppercase(), "hi".into())
        .unwrap();
    assert_eq!(r.get().unwrap(), "HI");
    assert_eq!(
        pool.map(|x: u64| x * x, 0..100).unwrap(),
        (0..100).map(|x| x * x).collect::<Vec<_>>()
    );
    assert_eq!(
        pool.chunksize(7).map(|x: u64| x + 1, 0..50).unwrap(),
        (1..51).collect::<Vec<_>>()
    );
    assert_eq!(
        pool.map_async(|x: i32| -x, vec![1, 2])
            .unwrap()
            .get()
            .unwrap(),
        [-1, -2]
    );
    assert_eq!(
        pool.starmap(|a: u8, b: u8| a + b, vec![(1, 2), (3, 4)])
            .unwrap(),
        [3, 7]
    );
    assert_eq!(
        pool.starmap_async(|a: u8, b: u8, c: u8| a * b * c, [(1, 2, 3)])
            .unwrap()
            .get()
            .unwrap(),
        [6]
    );
    let v: Vec<u32> = pool
        .imap(|x: u32| x * 3, 0..20)
        .map(Result::unwrap)
        .collect();
    assert_eq!(v, (0..20).map(|x| x * 3).collect::<Vec<_>>());
    let mut v: Vec<u32> = pool
        .chunksize(3)
        .imap_unordered(|x: u32| x, 0..20)
        .map(Result::unwrap)
        .collect();
    v.sort();
    assert_eq!(v, (0..20).collect::<Vec<_>>());
    assert!(pool.map(|x: u8| x, Vec::<u8>::new()).unwrap().is_empty());
    // Tasks that return nothing: one `()` per item.
    assert_eq!(
        pool.map(|x: u8| assert!(x < 3), 0..3).unwrap(),
        [(), (), ()]
    );
    pool.apply(|()| (), ()).unwrap();
    assert_eq!(
        pool.chunksize(0).map(|x: u8| x, [1]).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    pool.close();
    pool.join().unwrap();
    assert!(pool.worker_pids().is_empty());
    common::assert_no_zombie_children();
}

#[brood::task]
fn add_one(x: u64) -> u64 {
    x + 1
}

fn named_tasks(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let name = concat!(module_path!(), "::add_one");
    assert_eq!(pool.apply_task::<u64, _>(name, (1u64,)).unwrap(), 2);
    let v: Vec<u64> = pool.map_task(name, (0..10u64).map(|x| (x,))).unwrap();
    assert_eq!(v, (1..11).collect::<Vec<_>>());
    let err = pool
        .apply_task::<u64, _>("no::such::task", (1u64,))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownTask);
}

fn panic_comes_back_and_pool_goes_on(m: StartMethod) {
    let pool = builder(m).processes(1).build().unwrap();
    let pid = pool.worker_pids()[0];
    let err = pool
        .apply(
            |x: u32| -> u32 { if x == 7 { panic!("seven is bad") } else { x } },
            7,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let report = err.panic().unwrap();
    assert_eq!(report.message, "seven is bad");
    assert!(
        report.location.as_deref().unwrap().contains("pool.rs:"),
        "{report:?}"
    );
    assert!(err.to_string().contains("PoolWorker-"), "{err}");
    // The same worker goes on.
    assert_eq!(pool.apply(|x: u32| x, 8).unwrap(), 8);
    assert_eq!(pool.worker_pids(), [pid]);
    // In a map, the first failing item fails the map (Python's rule)...
    let err = pool
        .chunksize(2)
        .map(
            |x: u32| -> u32 { if x == 3 { panic!("three") } else { x } },
            0..6,
        )
        .unwrap_err();
    assert_eq!(err.panic().unwrap().message, "three");
    // ...and in imap only that item.
    let out: Vec<_> = pool
        .imap(
            |x: u32| -> u32 { if x == 1 { panic!("one") } else { x } },
            0..3,
        )
        .collect();
    assert!(out[0].is_ok() && out[1].is_err() && out[2].is_ok());
}

fn dead_worker_fails_only_its_task(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let slow: Vec<_> = (0..4)
        .map(|i| {
            pool.apply_async(
                |x: u64| {
                    sleep_ms(100);
                    x
                },
                i,
            )
            .unwrap()
        })
        .collect();
    let exits = pool
        .apply_async(|()| -> u8 { os::exit_now(3) }, ())
        .unwrap();
    let aborts = pool
        .apply_async(|()| -> u8 { std::process::abort() }, ())
        .unwrap();
    let killed = pool
        .apply_async(
            |()| -> u8 {
                os::kill(os::getpid(), libc::SIGKILL).unwrap();
                0
            },
            (),
        )
        .unwrap();
    let more: Vec<_> = (0..4)
        .map(|i| pool.apply_async(|x: u64| x * 2, i).unwrap())
        .collect();

    let e = exits.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e}");
    assert_eq!(e.exit_code(), Some(3));
    assert!(e.to_string().contains("exited with code 3"), "{e}");
    let e = aborts.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerLost);
    assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
    let e = killed.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
    assert!(e.to_string().contains("SIGKILL"), "{e}");
    for (i, r) in slow.iter().enumerate() {
        assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), i as u64);
    }
    for (i, r) in more.iter().enumerate() {
        assert_eq!(
            r.get_timeout(Duration::from_secs(30)).unwrap(),
            2 * i as u64
        );
    }
    // Replaced: the pool still has two workers and runs tasks.
    assert_eq!(pool.map(|x: u8| x, 0..10).unwrap().len(), 10);
    assert_eq!(pool.worker_pids().len(), 2);
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

// ----- chaos -----

fn chaos(m: StartMethod) {
    // A spawned worker re-executes this (large, debug) test binary, so each
    // replacement costs milliseconds: fewer tasks keep CI time in check
    // while still going through dozens of kills.
    let n: usize = if m == StartMethod::Spawn {
        3_000
    } else {
        10_000
    };
    common::warm_up_pools(builder(m).processes(1).build().unwrap());
    let fds_before = common::open_fds();
    let ok = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let pool = builder(m).processes(4).build().unwrap();
    let stop = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seed = 0x9e3779b97f4a7c15u64 ^ u64::from(os::getpid().as_raw() as u32);
            while !stop.load(Ordering::SeqCst) {
                sleep_ms(20);
                let pids = pool.worker_pids();
                if pids.is_empty() {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let victim = pids[(seed % pids.len() as u64) as usize];
                if os::kill(victim, libc::SIGKILL).is_ok() {
                    kills.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let results: Vec<_> = (0..n as u64)
            .map(|i| {
                let (ok, lost) = (ok.clone(), lost.clone());
                let cb = Callbacks::new()
                    .on_success(move |_: &u64| {
                        ok.fetch_add(1, Ordering::SeqCst);
                    })
                    .on_error(move |_| {
                        lost.fetch_add(1, Ordering::SeqCst);
                    });
                pool.apply_async_with(
                    |x: u64| {
                        std::thread::sleep(Duration::from_micros(200));
                        x * 2
                    },
                    i,
                    cb,
                )
                .unwrap()
            })
            .collect();
        let (mut values, mut worker_lost) = (0, 0);
        for (i, r) in results.iter().enumerate() {
            match r.get_timeout(Duration::from_secs(120)) {
                Ok(v) => {
                    assert_eq!(v, 2 * i as u64);
                    values += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e}");
                    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
                    worker_lost += 1;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        assert_eq!(values + worker_lost, n);
        // Callbacks ran exactly once per task, and agree with get.
        assert_eq!(ok.load(Ordering::SeqCst), values);
        assert_eq!(lost.load(Ordering::SeqCst), worker_lost);
        let kills = kills.load(Ordering::SeqCst);
        assert!(kills >= 5, "only {kills} kills in {:?}", started.elapsed());
        assert!(
            worker_lost >= 1 && worker_lost <= kills,
            "{worker_lost} lost, {kills} kills"
        );
        eprintln!(
            "{m}: {n} tasks, {kills} kills, {worker_lost} WorkerLost, {:?}",
            started.elapsed()
        );
    });
    // The pool finishes and still works.
    assert_eq!(pool.map(|x: u32| x, 0..100).unwrap().len(), 100);
    let pids = pool.worker_pids();
    pool.close();
    pool.join().unwrap();
    drop(pool);
    wait_gone(&pids, Duration::from_secs(10));
    common::assert_no_zombie_children();
    assert_eq!(common::open_fds(), fds_before, "fds leaked");
}

// ----- imap -----

fn imap_endless_input(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let fds = common::open_fds();
    let pulled = AtomicUsize::new(0);
    let v: Vec<u64> = pool
        .imap(
            |x: u64| x * 2,
            (0u64..).inspect(|_| {
                pulled.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .take(1000)
        .map(Result::unwrap)
        .collect();
    assert_eq!(v, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    // Lazy: only a small window beyond what was taken was pulled.
    let pulled = pulled.load(Ordering::SeqCst);
    assert!((1000..1200).contains(&pulled), "pulled {pulled}");
    // The pool is free again: nothing left behind.
    assert_eq!(pool.map(|x: u8| x, 0..10).unwrap().len(), 10);
    assert_eq!(common::open_fds(), fds);
}

fn imap_unordered_yields_as_tasks_finish(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let started = Instant::now();
    let mut it = pool.imap_unordered(
        |ms: u64| {
            sleep_ms(ms);
            ms
        },
        vec![2_000, 10],
    );
    assert_eq!(it.next().unwrap().unwrap(), 10);
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(it.next().unwrap().unwrap(), 2_000);
    assert!(it.next().is_none());
}

// ----- lifecycle -----

fn max_tasks_per_child_changes_pids(m: StartMethod) {
    let pool = builder(m)
        .processes(2)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<Pid> = pool
        .chunksize(1)
        .map(
            |_: u32| {
                sleep_ms(5);
                os::getpid()
            },
            0..24,
        )
        .unwrap();
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    // 24 tasks, 3 per worker: at least 8 workers did them.
    assert!(distinct.len() >= 8, "{} distinct pids", distinct.len());
    for pid in &distinct {
        assert!(pids.iter().filter(|p| *p == pid).count() <= 3);
    }
    pool.close();
    pool.join().unwrap();
    wait_gone(&distinct, Duration::from_secs(10));
    common::assert_no_zombie_children();
}

fn terminate_is_prompt(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let pids = pool.worker_pids();
    let results: Vec<_> = (0..1000)
        .map(|_| pool.apply_async(|()| sleep_ms(10_000), ()).unwrap())
        .collect();
    sleep_ms(100);
    let t = Instant::now();
    pool.terminate();
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "terminate took {:?}",
        t.elapsed()
    );
    for r in &results {
        assert_eq!(
            r.get_timeout(Duration::from_secs(5)).unwrap_err().kind(),
            ErrorKind::PoolClosed
        );
    }
    assert!(pool.worker_pids().is_empty());
    wait_gone(&pids, Duration::from_secs(1));
    common::assert_no_zombie_children();
    pool.join().unwrap();
}

fn initializer_runs_once_per_worker(m: StartMethod) {
    let count = Value::new(0u32).unwrap();
    let pool = builder(m)
        .processes(3)
        .initializer(|v: Value<u32>| *v.lock().unwrap() += 1, count.clone())
        .build()
        .unwrap();
    assert_eq!(pool.map(|x: u32| x, 0..30).unwrap().len(), 30);
    pool.close();
    pool.join().unwrap();
    assert_eq!(count.get().unwrap(), 3);
}

fn initializer_connection_reaches_every_worker(m: StartMethod) {
    let (mut rx, tx) = brood::pipe(false).unwrap();
    let pool = builder(m)
        .processes(2)
        .initializer(|mut c: Connection| c.send(&os::getpid()).unwrap(), tx)
        .build()
        .unwrap();
    let mut seen: Vec<Pid> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    let mut pids = pool.worker_pids();
    seen.sort();
    pids.sort();
    assert_eq!(seen, pids);
}

fn parent_killed_leaves_no_worker(m: StartMethod) {
    let (mut rx, tx) = brood::pipe(false).unwrap();
    common::allow_fork();
    let mut parent = Process::builder()
        .start_method(StartMethod::Fork)
        .target_with(
            |(mut tx, m): (Connection, StartMethod)| {
                let pool = Pool::builder()
                    .processes(2)
                    .start_method(m)
                    .build()
                    .unwrap();
                let busy = pool
                    .map_async(
                        |ms: u64| {
                            sleep_ms(ms);
                            ms
                        },
                        vec![60_000; 4],
                    )
                    .unwrap();
                tx.send(&pool.worker_pids()).unwrap();
                let _ = busy.get();
            },
            (tx, m),
        );
    parent.start().unwrap();
    let pids: Vec<Pid> = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(pids.len(), 2);
    sleep_ms(100);
    parent.kill().unwrap();
    assert_eq!(parent.join().unwrap_err().signal(), Some(libc::SIGKILL));
    wait_gone(&pids, Duration::from_secs(10));
}

fn ctrl_c_interrupts_a_running_map(m: StartMethod) {
    let (mut rx, tx) = brood::pipe(false).unwrap();
    common::allow_fork();
    let mut parent = Process::builder()
        .start_method(StartMethod::Fork)
        .target_with(
            |(mut tx, m): (Connection, StartMethod)| {
                let pool = Pool::builder()
                    .processes(2)
                    .start_method(m)
                    .interrupt_on_sigint(true)
                    .build()
                    .unwrap();
                let busy = pool
                    .map_async(
                        |ms: u64| {
                            sleep_ms(ms);
                            ms
                        },
                        vec![60_000; 4],
                    )
                    .unwrap();
                tx.send(&pool.worker_pids()).unwrap();
                let err = busy.get().unwrap_err();
                let after = pool.apply(|x: u8| x, 1).unwrap_err().kind();
                (err.kind(), after, pool.worker_pids().len())
            },
            (tx, m),
        );
    parent.start().unwrap();
    let pids: Vec<Pid> = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    sleep_ms(100);
    let t = Instant::now();
    parent.send_signal(libc::SIGINT).unwrap();
    let (kind, after, left) = parent.join_timeout(Duration::from_secs(20)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(kind, ErrorKind::Interrupted);
    assert_eq!(after, ErrorKind::PoolClosed);
    assert_eq!(left, 0);
    wait_gone(&pids, Duration::from_secs(5));
}

suite!(
    verbs,
    named_tasks,
    panic_comes_back_and_pool_goes_on,
    dead_worker_fails_only_its_task,
    chaos,
    imap_endless_input,
    imap_unordered_yields_as_tasks_finish,
    max_tasks_per_child_changes_pids,
    terminate_is_prompt,
    initializer_runs_once_per_worker,
    initializer_connection_reaches_every_worker,
    parent_killed_leaves_no_worker,
    ctrl_c_interrupts_a_running_map,
);

// ----- Python's rules for close, join and AsyncResult -----

#[test]
fn join_before_close_is_an_error() {
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.join().unwrap_err().kind(), ErrorKind::InvalidState);
    pool.close();
    pool.join().unwrap();
    pool.join().unwrap(); // joining again is fine, as in Python
}

#[test]
fn apply_after_close_is_an_error() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(|x: u8| x, 5).unwrap();
    pool.close();
    assert_eq!(
        pool.apply(|x: u8| x, 1).unwrap_err().kind(),
        ErrorKind::PoolClosed
    );
    assert_eq!(
        pool.map(|x: u8| x, [1]).unwrap_err().kind(),
        ErrorKind::PoolClosed
    );
    let first = pool.imap(|x: u8| x, [1]).next().unwrap();
    assert_eq!(first.unwrap_err().kind(), ErrorKind::PoolClosed);
    // Work submitted before close still finishes.
    assert_eq!(r.get().unwrap(), 5);
    pool.join().unwrap();
}

#[test]
fn async_result_semantics() {
    let pool = Pool::new(2).unwrap();
    let r = pool
        .apply_async(
            |ms: u64| {
                sleep_ms(ms);
                ms
            },
            300,
        )
        .unwrap();
    assert!(!r.ready());
    assert_eq!(r.successful().unwrap_err().kind(), ErrorKind::InvalidState);
    assert!(
        r.get_timeout(Duration::from_millis(10))
            .unwrap_err()
            .is_timeout()
    );
    assert!(!r.wait_timeout(Duration::from_millis(1)));
    assert_eq!(r.get().unwrap(), 300); // a later get still works
    assert!(r.ready());
    assert!(r.successful().unwrap());
    assert_eq!(r.get().unwrap_err().kind(), ErrorKind::InvalidState); // handed out once
    // Duration::MAX saturates to "no limit" instead of overflowing.
    let r = pool.apply_async(|x: u8| x, 1).unwrap();
    assert_eq!(r.get_timeout(Duration::MAX).unwrap(), 1);
    assert!(
        pool.apply_async(|x: u8| x, 1)
            .unwrap()
            .wait_timeout(Duration::MAX)
    );

    // Callbacks run exactly once, in the parent, before ready() is true.
    let calls = Arc::new(AtomicUsize::new(0));
    let (c1, c2) = (calls.clone(), calls.clone());
    let parent = os::getpid();
    let cb = Callbacks::new()
        .on_success(move |v: &u32| {
            assert_eq!(os::getpid(), parent);
            assert_eq!(*v, 9);
            c1.fetch_add(1, Ordering::SeqCst);
        })
        .on_error(move |_| {
            c2.fetch_add(100, Ordering::SeqCst);
        });
    let r = pool.apply_async_with(|x: u32| x * 3, 3, cb).unwrap();
    r.wait();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.get().unwrap(), 9);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let errors = Arc::new(AtomicUsize::new(0));
    let e1 = errors.clone();
    let cb = Callbacks::new().on_error(move |e: &brood::Error| {
        assert_eq!(e.kind(), ErrorKind::Panicked);
        e1.fetch_add(1, Ordering::SeqCst);
    });
    let r = pool
        .map_async_with(
            |x: u32| -> u32 { if x == 2 { panic!("two") } else { x } },
            0..4,
            cb,
        )
        .unwrap();
    assert_eq!(r.get().unwrap_err().kind(), ErrorKind::Panicked);
    assert!(!r.successful().unwrap());
    assert_eq!(errors.load(Ordering::SeqCst), 1);
}

#[test]
fn drop_terminates_the_pool() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.worker_pids();
    let r = pool.apply_async(|()| sleep_ms(60_000), ()).unwrap();
    sleep_ms(50);
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(r.get().unwrap_err().kind(), ErrorKind::PoolClosed);
    wait_gone(&pids, Duration::from_secs(2));
    common::assert_no_zombie_children();
}

#[test]
fn a_failing_initializer_breaks_the_pool_instead_of_looping() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(|()| panic!("no database"), ())
        .build()
        .unwrap();
    let err = pool.apply(|x: u8| x, 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolClosed);
    assert!(err.to_string().contains("no database"), "{err}");
    let err = pool.apply(|x: u8| x, 1).unwrap_err();
    assert!(err.to_string().contains("no database"), "{err}");
}

#[test]
fn zero_processes_is_an_error() {
    assert_eq!(Pool::new(0).unwrap_err().kind(), ErrorKind::InvalidState);
}

#[test]
fn an_initializer_that_kills_its_worker_breaks_the_pool_instead_of_looping() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(|()| os::exit_now(7), ())
        .build()
        .unwrap();
    let r = pool.apply_async(|x: u8| x, 1);
    let err = match r {
        Ok(r) => r.get_timeout(Duration::from_secs(30)).unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::PoolClosed, "{err}");
    assert!(err.to_string().contains("exited with code 7"), "{err}");
    let pids = pool.worker_pids();
    drop(pool);
    wait_gone(&pids, Duration::from_secs(5));
    common::assert_no_zombie_children();
}
