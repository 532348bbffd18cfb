//! `Pool::forked`: capturing closures in a pool that forks. Each call forks
//! short-lived workers after the closure exists; they run only that call's
//! tasks and are gone (reaped, no zombie, no fd left) when it is done. A
//! short-lived worker SIGKILLed mid-task fails exactly that task with
//! `WorkerLost`; the pool's own workers serve other work meanwhile. Under
//! spawn and forkserver every verb is an `InvalidState` error. Every wait
//! has a bound: a hang fails the test.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brood::os::{self, Pid};
use brood::{ErrorKind, Pool, Process, RawValue, StartMethod};

fn fork_pool(n: usize) -> Pool {
    common::allow_fork();
    Pool::builder()
        .processes(n)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap()
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// This process's live children (pids), zombies included.
fn children() -> BTreeSet<Pid> {
    os::proc::children(os::getpid())
        .unwrap()
        .into_iter()
        .map(|k| k.pid)
        .collect()
}

/// Whether `pid` is gone (or a zombie nobody of ours holds).
fn gone(pid: Pid) -> bool {
    match os::ProcInfo::read(pid) {
        Err(_) => true,
        Ok(info) => info.state == os::ProcState::Zombie,
    }
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        sleep_ms(5);
    }
}

/// After a forked call: the same children as before (no short-lived
/// worker left, no zombie) and the same number of open fds.
fn assert_clean(children_before: &BTreeSet<Pid>, fds_before: usize) {
    assert_eq!(&children(), children_before, "children changed");
    common::assert_no_zombie_children();
    assert_eq!(common::open_fds(), fds_before, "fd count changed");
}

#[test]
fn closures_that_capture_a_vec_and_an_arc() {
    let pool = fork_pool(2);
    // Warm up what a first fork caches (a spare result pipe), then measure.
    let warm = 1;
    assert_eq!(pool.forked().apply(move |x: u8| x + warm, 1).unwrap(), 2);
    let kids = children();
    let fds = common::open_fds();

    let weights: Vec<u64> = (0..100).map(|i| i * 3).collect();
    let names = Arc::new(vec!["zero".to_string(), "one".into(), "two".into()]);
    let expected: Vec<u64> = (0..100).map(|i| i * 3 + 7).collect();

    let (w, n) = (weights.clone(), names.clone());
    let f = move |i: usize| w[i] + n.len() as u64 + 4;
    assert_eq!(pool.forked().map(f.clone(), 0..100).unwrap(), expected);
    assert_clean(&kids, fds);
    assert_eq!(
        pool.forked().chunksize(7).map(f.clone(), 0..100).unwrap(),
        expected
    );
    assert_clean(&kids, fds);
    let ordered: Vec<u64> = pool
        .forked()
        .imap(f.clone(), 0..100)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ordered, expected);
    assert_clean(&kids, fds);
    let mut unordered: Vec<u64> = pool
        .forked()
        .chunksize(3)
        .imap_unordered(f.clone(), 0..100)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    unordered.sort();
    assert_eq!(unordered, expected);
    assert_clean(&kids, fds);

    let n = names.clone();
    assert_eq!(
        pool.forked()
            .apply(move |i: usize| n[i].clone(), 2)
            .unwrap(),
        "two"
    );
    let n = names.clone();
    let r = pool
        .forked()
        .apply_async(move |i: usize| n[i].len(), 0)
        .unwrap();
    assert_eq!(r.get().unwrap(), 4);
    let w = weights.clone();
    assert_eq!(
        pool.forked()
            .map_async(move |i: usize| w[i], [5, 6])
            .unwrap()
            .get()
            .unwrap(),
        [15, 18]
    );
    let w = weights.clone();
    assert_eq!(
        pool.forked()
            .starmap(move |i: usize, k: u64| w[i] * k, [(1, 2), (2, 10)])
            .unwrap(),
        [6, 60]
    );
    let n = names.clone();
    assert_eq!(
        pool.forked()
            .starmap_async(
                move |a: usize, b: usize| format!("{}{}", n[a], n[b]),
                [(1, 2)]
            )
            .unwrap()
            .get()
            .unwrap(),
        ["onetwo"]
    );
    // An empty input forks nothing.
    let w = weights.clone();
    assert!(
        pool.forked()
            .map(move |i: usize| w[i], Vec::new())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        pool.forked()
            .chunksize(0)
            .map(f.clone(), 0..3)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidState
    );

    // The closure ran in neither the parent nor one of the pool's workers.
    let pids = pool.worker_pids();
    let ran_in = pool
        .forked()
        .map(move |_: u8| os::getpid(), 0..8u8)
        .unwrap();
    for pid in ran_in {
        assert_ne!(pid, os::getpid());
        assert!(!pids.contains(&pid), "{pid} is one of the pool's workers");
    }
    assert_eq!(pool.worker_pids(), pids, "the pool's workers were touched");
    // The async calls' workers leave right after their values are in.
    wait_for("async workers gone", Duration::from_secs(10), || {
        children() == kids
    });
    assert_clean(&kids, fds);
}

#[test]
fn a_panic_comes_back_with_message_and_location() {
    let pool = fork_pool(1);
    let secret = String::from("forty-two");
    let err = pool
        .forked()
        .apply(move |x: u32| -> u32 { panic!("bad {x}: {secret}") }, 7)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let report = err.panic().expect("a panic report");
    assert_eq!(report.message, "bad 7: forty-two");
    assert!(
        report
            .location
            .as_deref()
            .is_some_and(|l| l.contains("pool_forked.rs")),
        "{report:?}"
    );
    // A map fails with the first error; imap yields it in its place.
    let limit = 3;
    let f = move |x: u32| -> u32 {
        assert!(x < limit, "too big: {x}");
        x
    };
    let err = pool.forked().map(f, 0..5).unwrap_err();
    assert!(err.to_string().contains("too big: 3"), "{err}");
    let out: Vec<_> = pool.forked().imap(f, 0..5).unwrap().collect();
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 3);
    assert_eq!(out[4].as_ref().unwrap_err().kind(), ErrorKind::Panicked);
    // The pool goes on.
    assert_eq!(pool.apply(|x: u8| x + 1, 1).unwrap(), 2);
}

fn invalid_under(m: StartMethod) {
    common::allow_fork();
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .build()
        .unwrap();
    let data = Arc::new(vec![1u32, 2, 3]);
    let check = |err: brood::Error| {
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
        let text = err.to_string();
        assert!(text.contains("StartMethod::Fork"), "{text}");
        assert!(text.contains("#[brood::task]"), "{text}");
    };
    let d = data.clone();
    let f = move |i: usize| d[i];
    check(pool.forked().map(f.clone(), 0..3).unwrap_err());
    check(pool.forked().map_async(f.clone(), 0..3).unwrap_err());
    check(pool.forked().chunksize(2).map(f.clone(), 0..3).unwrap_err());
    check(pool.forked().imap(f.clone(), 0..3).unwrap_err());
    check(pool.forked().imap_unordered(f.clone(), 0..3).unwrap_err());
    check(pool.forked().apply(f.clone(), 0).unwrap_err());
    check(pool.forked().apply_async(f.clone(), 0).unwrap_err());
    let d = data.clone();
    let g = move |i: usize, k: u32| d[i] * k;
    check(pool.forked().starmap(g.clone(), [(0, 1)]).unwrap_err());
    check(pool.forked().starmap_async(g, [(0, 1)]).unwrap_err());
    // Refused before anything is forked, even for no items.
    check(pool.forked().map(f, Vec::new()).unwrap_err());
    // The ordinary verbs are unaffected.
    assert_eq!(pool.map(|x: u32| x * 2, 0..3).unwrap(), [0, 2, 4]);
}

#[test]
fn spawn_is_invalid_state() {
    invalid_under(StartMethod::Spawn);
}

#[test]
fn forkserver_is_invalid_state() {
    invalid_under(StartMethod::ForkServer);
}

#[test]
fn without_the_opt_in_it_is_fork_with_threads() {
    // A spawned child: a fresh program that never opted in.
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target(|| {
            let pool = Pool::builder()
                .processes(1)
                .start_method(StartMethod::Fork)
                .build()
                .unwrap();
            let n = 1;
            let err = pool.forked().apply(move |x: u8| x + n, 1).unwrap_err();
            (format!("{:?}", err.kind()), err.to_string())
        });
    p.start().unwrap();
    let (kind, text) = p.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(kind, "ForkWithThreads", "{text}");
    assert!(text.contains("allow_fork_with_threads"), "{text}");
}

#[test]
fn a_killed_short_lived_worker_fails_only_its_task() {
    let pool = fork_pool(2);
    let warm = 1;
    pool.forked().apply(move |x: u8| x + warm, 1).unwrap();
    let victim: RawValue<i32> = RawValue::new(0).unwrap();
    let kids = children();
    let fds = common::open_fds();
    let ordinary = pool.worker_pids();

    let factor = Arc::new(10u64);
    let slot = victim.clone();
    let f = move |x: u64| {
        if x == 5 {
            slot.set(os::getpid().as_raw());
            sleep_ms(60_000);
        }
        x * *factor
    };
    let started = Instant::now();
    let killer = {
        let victim = victim.clone();
        std::thread::spawn(move || {
            wait_for("the victim's pid", Duration::from_secs(30), || {
                victim.get() != 0
            });
            let pid = Pid::from_raw(victim.get()).unwrap();
            os::kill(pid, libc::SIGKILL).unwrap();
            pid
        })
    };
    let out: Vec<brood::Result<u64>> = pool.forked().imap(f, 0..20).unwrap().collect();
    let pid = killer.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "took too long");
    assert!(!ordinary.contains(&pid), "the victim was a pool worker");
    assert_eq!(out.len(), 20);
    for (i, r) in out.iter().enumerate() {
        if i == 5 {
            let err = r.as_ref().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
            assert_eq!(err.signal(), Some(libc::SIGKILL), "{err}");
            assert!(err.to_string().contains(&pid.to_string()), "{err}");
            assert!(err.to_string().contains("ForkedWorker-"), "{err}");
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64 * 10);
        }
    }
    assert!(gone(pid));
    assert_clean(&kids, fds);
    assert_eq!(pool.worker_pids(), ordinary);

    // The same with map: the whole map fails with WorkerLost, and ends.
    victim.set(0);
    let slot = victim.clone();
    let killer = {
        let victim = victim.clone();
        std::thread::spawn(move || {
            wait_for("the victim's pid", Duration::from_secs(30), || {
                victim.get() != 0
            });
            os::kill(Pid::from_raw(victim.get()).unwrap(), libc::SIGKILL).unwrap();
        })
    };
    let err = pool
        .forked()
        .chunksize(1)
        .map(
            move |x: u64| {
                if x == 3 {
                    slot.set(os::getpid().as_raw());
                    sleep_ms(60_000);
                }
                x
            },
            0..8,
        )
        .unwrap_err();
    killer.join().unwrap();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    assert_clean(&kids, fds);
}

#[test]
fn the_pools_workers_serve_other_work_meanwhile() {
    common::allow_fork();
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .start_method(StartMethod::Fork)
            .name("meanwhile")
            .build()
            .unwrap(),
    );
    // Before.
    assert_eq!(pool.map(|x: u32| x + 1, 0..10).unwrap().len(), 10);
    let ordinary = pool.worker_pids();
    let kids = children();
    let gate: RawValue<u32> = RawValue::new(0).unwrap();
    let entered: RawValue<u32> = RawValue::new(0).unwrap();
    let (g, e) = (gate.clone(), entered.clone());
    let tag = String::from("held");
    let forked = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.forked().chunksize(1).map(
                move |x: u32| {
                    e.set(1);
                    // Holds its worker until the test opens the gate.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while g.get() == 0 && Instant::now() < deadline {
                        sleep_ms(2);
                    }
                    format!("{tag}-{x}")
                },
                0..4,
            )
        })
    };
    wait_for("a forked task running", Duration::from_secs(30), || {
        entered.get() == 1
    });
    // During: the forked call's tasks hold their workers, and the pool's
    // own workers run ordinary work from this thread and another.
    assert_eq!(pool.map(|x: u64| x * x, 0..200).unwrap()[199], 199 * 199);
    let other = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.apply(|s: String| s.len(), "abc".into()).unwrap())
    };
    assert_eq!(other.join().unwrap(), 3);
    assert_eq!(gate.get(), 0, "the forked tasks were released early");
    assert_eq!(pool.worker_pids(), ordinary);
    // `brood top` shows the call's workers on a page of its own.
    let pages = brood::pool::status::snapshot().unwrap();
    let mine = |name: &str| {
        pages
            .iter()
            .find(|p| p.owner == os::getpid() && p.name == name)
            .unwrap_or_else(|| panic!("no page {name:?}"))
    };
    let forked_pids: BTreeSet<Pid> = mine("meanwhile (forked)")
        .workers
        .iter()
        .filter_map(|w| w.pid)
        .collect();
    assert_eq!(forked_pids.len(), 2, "{forked_pids:?}");
    assert!(forked_pids.iter().all(|p| !ordinary.contains(p)));
    assert!(forked_pids.is_subset(&children()));
    assert_eq!(
        mine("meanwhile")
            .workers
            .iter()
            .filter(|w| w.pid.is_some())
            .count(),
        2
    );
    gate.set(1);
    let out = forked.join().unwrap().unwrap();
    assert_eq!(out, ["held-0", "held-1", "held-2", "held-3"]);
    // After.
    assert_eq!(pool.starmap(|a: u8, b: u8| a + b, [(1, 2)]).unwrap(), [3]);
    assert_eq!(pool.worker_pids(), ordinary);
    assert_eq!(children(), kids);
    common::assert_no_zombie_children();
    // The call's page went with it.
    assert!(
        !brood::pool::status::snapshot()
            .unwrap()
            .iter()
            .any(|p| p.owner == os::getpid() && p.name == "meanwhile (forked)")
    );
}

#[test]
fn terminate_and_join_reach_forked_calls() {
    let pool = fork_pool(1);
    let pid_slot: RawValue<i32> = RawValue::new(0).unwrap();
    let slot = pid_slot.clone();
    let long = Duration::from_secs(60);
    let r = pool
        .forked()
        .apply_async(
            move |()| {
                slot.set(os::getpid().as_raw());
                std::thread::sleep(long);
            },
            (),
        )
        .unwrap();
    wait_for("the forked task running", Duration::from_secs(30), || {
        pid_slot.get() != 0
    });
    let pid = Pid::from_raw(pid_slot.get()).unwrap();
    let t = Instant::now();
    pool.terminate();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(r.get().unwrap_err().kind(), ErrorKind::PoolClosed);
    assert!(gone(pid), "the forked worker outlived terminate");
    common::assert_no_zombie_children();
    let n = 1;
    assert_eq!(
        pool.forked()
            .apply(move |x: u8| x + n, 1)
            .unwrap_err()
            .kind(),
        ErrorKind::PoolClosed
    );

    // close + join waits for a forked call's work, then its workers.
    let pool = fork_pool(1);
    let kids = children();
    let add = 5u64;
    let r = pool
        .forked()
        .map_async(
            move |x: u64| {
                sleep_ms(50);
                x + add
            },
            0..4,
        )
        .unwrap();
    pool.close();
    pool.join().unwrap();
    assert!(r.ready());
    assert_eq!(r.get().unwrap(), [5, 6, 7, 8]);
    assert!(children().is_subset(&kids));
    common::assert_no_zombie_children();
}

#[test]
fn chaos_short_lived_workers_killed_every_20_ms_are_replaced() {
    let pool = fork_pool(2);
    let warm = 1;
    pool.forked().apply(move |x: u8| x + warm, 1).unwrap();
    let kids = children();
    let fds = common::open_fds();
    let ordinary = pool.worker_pids();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (stop, kids) = (stop.clone(), kids.clone());
        std::thread::spawn(move || {
            let mut killed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sleep_ms(20);
                // A short-lived worker: a child that was not there before.
                if let Some(&pid) = children().difference(&kids).next() {
                    let _ = os::kill(pid, libc::SIGKILL);
                    killed += 1;
                }
            }
            killed
        })
    };
    let factor = Arc::new(3u64);
    let n = 1500u64;
    let out: Vec<brood::Result<(u64, Pid)>> = pool
        .forked()
        .imap(
            move |x: u64| {
                sleep_ms(1);
                (x * *factor, os::getpid())
            },
            0..n,
        )
        .unwrap()
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.join().unwrap();
    assert_eq!(out.len(), n as usize, "every task has exactly one outcome");
    let mut lost = 0;
    let mut ran_in = BTreeSet::new();
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok((v, pid)) => {
                assert_eq!(*v, i as u64 * 3);
                assert!(!ordinary.contains(pid));
                ran_in.insert(*pid);
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e}");
                lost += 1;
            }
        }
    }
    assert!(killed >= 3, "only {killed} kills");
    assert!(lost >= 1 && lost <= killed, "{lost} lost to {killed} kills");
    // Killed workers were replaced by new forks of the same closure.
    assert!(
        ran_in.len() > 2,
        "values came from {} workers",
        ran_in.len()
    );
    assert_clean(&kids, fds);
    assert_eq!(pool.worker_pids(), ordinary);
    assert_eq!(pool.apply(|x: u8| x + 1, 1).unwrap(), 2);
}

#[test]
fn the_pools_initializer_and_limits_apply_to_short_lived_workers() {
    common::allow_fork();
    let started = brood::Value::new(0u32).unwrap();
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .initializer(
            |v: brood::Value<u32>| *v.lock().unwrap() += 1,
            started.clone(),
        )
        .hard_time_limit(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_eq!(pool.map(|x: u8| x, 0..4).unwrap().len(), 4);
    assert_eq!(started.get().unwrap(), 2);
    // min(processes, units) workers per call, each running the
    // initializer (with its own copy of the Value's fd) first.
    let k = 1u8;
    assert_eq!(pool.forked().apply(move |x: u8| x + k, 1).unwrap(), 2);
    assert_eq!(started.get().unwrap(), 3);
    assert_eq!(
        pool.forked()
            .chunksize(1)
            .map(move |x: u8| x + k, 0..9)
            .unwrap(),
        (1..10).collect::<Vec<u8>>()
    );
    assert_eq!(started.get().unwrap(), 5);
    // The pool's hard time limit holds for a forked task: its worker is
    // killed, the task fails with TimedOut, and the call ends.
    let t = Instant::now();
    let err = pool
        .forked()
        .apply(
            move |x: u8| -> u8 {
                loop {
                    std::hint::black_box(x + k);
                }
            },
            1,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(pool.apply(|x: u8| x + 1, 1).unwrap(), 2);
}

#[test]
fn a_killed_parent_leaves_no_short_lived_worker() {
    // Slots the short-lived workers write their pids into, made here so
    // that this test reads them after their parent is gone.
    let slots = brood::RawArray::new(&[0i32; 2]).unwrap();
    common::allow_fork();
    let mut parent = Process::builder()
        .start_method(StartMethod::Fork)
        .target_with(
            |slots: brood::RawArray<i32>| {
                let pool = Pool::builder()
                    .processes(2)
                    .start_method(StartMethod::Fork)
                    .build()
                    .unwrap();
                let s = slots.clone();
                let busy = pool
                    .forked()
                    .chunksize(1)
                    .map_async(
                        move |i: usize| {
                            s.set(i, os::getpid().as_raw()).unwrap();
                            sleep_ms(60_000);
                        },
                        0..2,
                    )
                    .unwrap();
                let _ = busy.get();
            },
            slots.clone(),
        );
    parent.start().unwrap();
    wait_for("both short-lived workers", Duration::from_secs(30), || {
        (0..2).all(|i| slots.get(i).unwrap() != 0)
    });
    let pids: Vec<Pid> = (0..2)
        .map(|i| Pid::from_raw(slots.get(i).unwrap()).unwrap())
        .collect();
    assert!(pids.iter().all(|&p| !gone(p)));
    parent.kill().unwrap();
    assert_eq!(parent.join().unwrap_err().signal(), Some(libc::SIGKILL));
    for pid in pids {
        wait_for("a short-lived worker gone", Duration::from_secs(10), || {
            gone(pid)
        });
    }
}
