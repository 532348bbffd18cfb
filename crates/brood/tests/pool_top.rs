//! Issue 13, the pool's status page, recycling and progress, with real
//! worker processes: the status snapshot agrees with the pool's own view
//! (pids, tasks per worker, a running task), pages vanish with their pool
//! and stale pages of a dead owner are skipped and cleaned, a task that
//! grows its RSS by 200 MiB gets its worker replaced under a 100 MiB
//! ceiling, a cgroup memory cap reports `OutOfMemory` (or `build` says why
//! it cannot), and the progress stream ends with `done == total`.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use brood::os::{self, Pid};
use brood::pool::status::{self, PoolStatus, WorkerState};
use brood::pool::{Progress, ProgressEvent};
use brood::{Connection, ErrorKind, Pool, Process, StartMethod};

/// This process's pool named `name`, as the status pages show it.
fn my_page(name: &str) -> Option<PoolStatus> {
    status::snapshot()
        .unwrap()
        .into_iter()
        .find(|p| p.owner == os::getpid() && p.name == name)
}

fn sorted(mut v: Vec<Pid>) -> Vec<Pid> {
    v.sort();
    v
}

/// Grows this process's resident memory by `mib` MiB, for good (a leak).
fn leak_mib(mib: usize) {
    let mut v = vec![0u8; mib << 20];
    // Touch every page so that it is resident, not just reserved.
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(&v);
    std::mem::forget(v);
}

#[test]
fn the_snapshot_shows_the_pools_workers_and_counts() {
    common::allow_fork();
    let pool = Pool::builder()
        .processes(3)
        .name("top-snapshot")
        .build()
        .unwrap();
    let ran: Vec<Pid> = pool.chunksize(1).map(|_: u32| os::getpid(), 0..60).unwrap();
    let page = my_page("top-snapshot").expect("the pool's page is in the snapshot");
    assert_eq!(page.processes, 3);
    assert_eq!(page.tasks_done, 60);
    assert_eq!(page.restarts, 0);
    let pids: Vec<Pid> = page.workers.iter().filter_map(|w| w.pid).collect();
    assert_eq!(sorted(pids), sorted(pool.worker_pids()));
    let mut per_pid: HashMap<Pid, u64> = HashMap::new();
    for pid in ran {
        *per_pid.entry(pid).or_default() += 1;
    }
    for w in &page.workers {
        let pid = w.pid.unwrap();
        assert_eq!(
            w.tasks_done,
            per_pid.get(&pid).copied().unwrap_or(0),
            "{w:?}"
        );
        assert!(matches!(w.state, WorkerState::Idle { .. }), "{w:?}");
        assert!(w.rss.unwrap() > 0);
        assert_eq!(w.restarts, 0);
    }
    let positions: Vec<Option<usize>> = page.workers.iter().map(|w| w.position).collect();
    assert_eq!(positions, [Some(0), Some(1), Some(2)]);

    // A task that is running shows as running, since about when it began.
    let slow = pool
        .apply_async(
            |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                os::getpid()
            },
            1500,
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let page = my_page("top-snapshot").unwrap();
    let running: Vec<_> = page
        .workers
        .iter()
        .filter(|w| matches!(w.state, WorkerState::Running { .. }))
        .collect();
    assert_eq!(running.len(), 1, "{page:#?}");
    let WorkerState::Running { for_, .. } = running[0].state else {
        unreachable!()
    };
    assert!(for_ >= Duration::from_millis(300), "{for_:?}");
    assert!(for_ < Duration::from_secs(10), "{for_:?}");
    assert_eq!(Some(slow.get().unwrap()), running[0].pid);
}

#[test]
fn a_killed_worker_shows_as_a_restart_with_its_cause() {
    common::allow_fork();
    let pool = Pool::builder()
        .processes(2)
        .name("top-killed")
        .build()
        .unwrap();
    let before = pool.worker_pids();
    let victim = before[0];
    os::kill(victim, libc::SIGKILL).unwrap();
    // The pool notices, reaps and replaces it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = my_page("top-killed").unwrap();
        let pids: Vec<Pid> = page.workers.iter().filter_map(|w| w.pid).collect();
        if page.restarts == 1 && pids.len() == 2 && !pids.contains(&victim) {
            break page;
        }
        assert!(Instant::now() < deadline, "{page:#?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        sorted(page.workers.iter().filter_map(|w| w.pid).collect()),
        sorted(pool.worker_pids())
    );
    let replaced: Vec<_> = page.workers.iter().filter(|w| w.restarts == 1).collect();
    assert_eq!(replaced.len(), 1, "{page:#?}");
    let why = replaced[0].last_restart.as_deref().unwrap();
    assert!(why.contains("signal 9 (SIGKILL)"), "{why}");
    assert_eq!(pool.map(|x: u8| x, 0..10).unwrap().len(), 10);
}

#[test]
fn pages_vanish_with_their_pool() {
    common::allow_fork();
    let pool = Pool::builder()
        .processes(1)
        .name("top-vanish")
        .build()
        .unwrap();
    let path = pool.status_page().unwrap().to_path_buf();
    assert!(path.exists());
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("brood-pool-{}-", os::getpid()))
    );
    pool.close();
    pool.join().unwrap();
    assert!(!path.exists(), "join removes the page");
    drop(pool);

    let pool = Pool::builder()
        .processes(1)
        .name("top-vanish-drop")
        .build()
        .unwrap();
    let path = pool.status_page().unwrap().to_path_buf();
    assert!(my_page("top-vanish-drop").is_some());
    drop(pool);
    assert!(!path.exists(), "drop removes the page");
    assert!(my_page("top-vanish-drop").is_none());

    let off = Pool::builder()
        .processes(1)
        .name("top-off")
        .status_page(false)
        .build()
        .unwrap();
    assert!(off.status_page().is_none());
    assert_eq!(off.apply(|x: u8| x + 1, 1).unwrap(), 2);
    assert!(my_page("top-off").is_none());
}

#[test]
fn a_dead_owners_page_is_skipped_and_cleaned() {
    common::allow_fork();
    let (mut rx, tx) = brood::pipe(false).unwrap();
    // A child makes a pool, reports its page, and is killed with it.
    let mut owner = Process::builder()
        .start_method(StartMethod::Fork)
        .target_with(
            |mut tx: Connection| {
                let pool = Pool::builder()
                    .processes(1)
                    .name("top-stale")
                    .build()
                    .unwrap();
                let page = pool.status_page().unwrap().to_string_lossy().into_owned();
                tx.send(&page).unwrap();
                std::thread::sleep(Duration::from_secs(60));
            },
            tx,
        );
    owner.start().unwrap();
    let page: String = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let owner_pid = owner.pid().unwrap();
    assert!(
        status::snapshot()
            .unwrap()
            .iter()
            .any(|p| p.owner == owner_pid && p.name == "top-stale")
    );
    owner.kill().unwrap();
    assert_eq!(owner.join().unwrap_err().signal(), Some(libc::SIGKILL));
    // Its page is never shown again, and is gone soon (the resource
    // tracker or `clean_stale`, whichever comes first).
    assert!(
        !status::snapshot()
            .unwrap()
            .iter()
            .any(|p| p.owner == owner_pid)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&page).exists() {
        status::clean_stale().unwrap();
        assert!(Instant::now() < deadline, "{page} is still there");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hostile_files_named_like_pages_are_skipped_without_hanging() {
    let me = os::getpid();
    let dir = std::path::Path::new("/dev/shm");
    let garbage = dir.join(format!("brood-pool-{me}-900001"));
    let short = dir.join(format!("brood-pool-{me}-900002"));
    let huge_rows = dir.join(format!("brood-pool-{me}-900003"));
    let fifo = dir.join(format!("brood-pool-{me}-900004"));
    std::fs::write(&garbage, vec![0xA5u8; 4096]).unwrap();
    std::fs::write(&short, b"BROOD").unwrap();
    // A valid header that claims a million rows and a name that is not
    // UTF-8, in a file that holds two.
    let mut page = vec![0u8; (32 + 2 * 16) * 8];
    let word = |page: &mut Vec<u8>, i: usize, v: u64| {
        page[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes())
    };
    word(&mut page, 0, u64::from_le_bytes(*b"BROODTOP"));
    word(&mut page, 1, 1);
    word(&mut page, 2, me.as_raw() as u64);
    word(&mut page, 4, 1_000_000);
    page[16 * 8..16 * 8 + 4].copy_from_slice(&[0xff, 0xfe, b'x', 0]);
    word(&mut page, 32, (3 << 56) | 5); // running unit 4
    word(&mut page, 34, u64::MAX); // pid out of range
    std::fs::write(&huge_rows, &page).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path, alive for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    let t = Instant::now();
    let pools = status::snapshot().unwrap();
    status::clean_stale().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let odd: Vec<_> = pools
        .iter()
        .filter(|p| p.page.starts_with(dir) && p.page.to_string_lossy().contains("-9000"))
        .collect();
    // Only the well-formed one is read, and read within its bounds.
    assert_eq!(odd.len(), 1, "{odd:#?}");
    assert_eq!(odd[0].page, huge_rows);
    assert_eq!(odd[0].workers.len(), 1);
    assert_eq!(odd[0].workers[0].pid, None);
    for f in [garbage, short, huge_rows, fifo] {
        assert!(f.exists(), "a live owner's file is not removed");
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn a_worker_past_max_rss_is_replaced_and_its_result_counts() {
    common::allow_fork();
    let pool = Pool::builder()
        .processes(1)
        .name("top-max-rss")
        .max_rss(100 << 20)
        .build()
        .unwrap();
    let first = pool.worker_pids();
    let (pid, value) = pool
        .apply(
            |x: u64| {
                leak_mib(200);
                (os::getpid(), x * 2)
            },
            21,
        )
        .unwrap();
    assert_eq!(value, 42, "the task's result still counts");
    assert_eq!(first, [pid]);
    let next = pool.apply(|()| os::getpid(), ()).unwrap();
    assert_ne!(next, pid, "the worker past the ceiling was replaced");
    // The old one finishes and leaves (alive until then, and listed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.worker_pids() != [next] {
        assert!(Instant::now() < deadline, "{:?}", pool.worker_pids());
        std::thread::sleep(Duration::from_millis(5));
    }
    let page = my_page("top-max-rss").unwrap();
    assert_eq!(page.restarts, 1, "{page:#?}");
    let w = page.workers.iter().find(|w| w.pid == Some(next)).unwrap();
    assert_eq!(w.restarts, 1);
    let why = w.last_restart.as_deref().unwrap();
    assert!(why.contains("recycled: RSS"), "{why}");
    assert!(why.contains("100.0 MiB"), "{why}");
    // A worker under the ceiling stays.
    for _ in 0..5 {
        assert_eq!(pool.apply(|()| os::getpid(), ()).unwrap(), next);
    }
}

#[test]
fn a_cgroup_memory_cap_reports_out_of_memory_and_the_pool_goes_on() {
    common::allow_fork();
    let built = Pool::builder()
        .processes(1)
        .name("top-cgroup")
        .cgroup_limits(Some(64 << 20), Some(1.0))
        .build();
    let pool = match built {
        Ok(pool) => pool,
        Err(e) => {
            // Not silently without limits: a clear error says what is
            // missing on this machine.
            let text = e.to_string();
            assert!(text.contains("cgroup v2"), "{text}");
            eprintln!("SKIPPED (this machine cannot cap a worker's memory): {text}");
            return;
        }
    };
    let err = pool
        .apply(
            |()| {
                leak_mib(256);
                os::getpid()
            },
            (),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    assert!(err.to_string().contains("OutOfMemory"), "{err}");
    assert_eq!(err.signal(), Some(libc::SIGKILL));
    assert_eq!(pool.apply(|x: u8| x + 1, 1).unwrap(), 2, "the pool goes on");
    let page = my_page("top-cgroup").unwrap();
    assert_eq!(page.restarts, 1);
}

#[test]
fn bad_cgroup_limits_are_refused() {
    let err = Pool::builder()
        .processes(1)
        .cgroup_limits(Some(0), None)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("memory_max"), "{err}");
    let err = Pool::builder()
        .processes(1)
        .cgroup_limits(None, Some(f64::NAN))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cpu_max"), "{err}");
    let err = Pool::builder()
        .processes(1)
        .name(&"x".repeat(65))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
}

fn last(events: &std::sync::mpsc::Receiver<ProgressEvent>) -> ProgressEvent {
    let all: Vec<ProgressEvent> = events.try_iter().collect();
    assert_eq!(
        all.iter().filter(|e| e.finished).count(),
        1,
        "exactly one last event"
    );
    all.last().cloned().unwrap()
}

#[test]
fn progress_ends_with_done_equal_total() {
    common::allow_fork();
    let pool = Pool::new(2).unwrap();

    let (progress, events) = Progress::channel();
    let v = pool
        .progress(progress.show_bar(true))
        .map(|x: u64| x + 1, 0..500)
        .unwrap();
    assert_eq!(v, (1..=500).collect::<Vec<_>>());
    let e = last(&events);
    assert_eq!((e.done, e.total, e.failures), (500, Some(500), 0));
    assert!(e.finished && e.rate > 0.0);

    // An input of unknown length: the total is learned when it ends.
    let (progress, events) = Progress::channel();
    let n = pool
        .progress(progress)
        .chunksize(7)
        .imap_unordered(|x: u64| x, (0..300u64).filter(|x| x % 3 == 0))
        .count();
    assert_eq!(n, 100);
    let e = last(&events);
    assert_eq!((e.done, e.total), (100, Some(100)));

    // Failures and a lost worker are counted; the restart too.
    let (progress, events) = Progress::channel();
    let results: Vec<brood::Result<u8>> = pool
        .progress(progress)
        .imap(
            |x: u8| -> u8 {
                match x {
                    3 => panic!("three"),
                    5 => os::exit_now(9),
                    x => x,
                }
            },
            0..8,
        )
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
    assert_eq!(
        results[5].as_ref().unwrap_err().kind(),
        ErrorKind::WorkerLost
    );
    let e = last(&events);
    assert_eq!((e.done, e.total, e.failures), (8, Some(8), 2));
    assert!(e.restarts >= 1, "{e:?}");
}

#[test]
fn as_completed_progress_counts_each_future_as_it_is_yielded() {
    common::allow_fork();
    let pool = Pool::new(2).unwrap();
    let futures = (0..40u64)
        .map(|x| {
            pool.submit(
                |x: u64| -> u64 {
                    if x % 10 == 3 {
                        panic!("bad {x}")
                    }
                    std::thread::sleep(Duration::from_millis(x % 5));
                    x
                },
                x,
            )
            .unwrap()
        })
        .collect::<Vec<_>>();
    let (progress, events) = Progress::channel();
    let mut seen = 0u64;
    let mut all: Vec<ProgressEvent> = Vec::new();
    for f in pool
        .progress(progress.every(Duration::ZERO))
        .as_completed(&futures)
    {
        seen += 1;
        assert!(f.done(), "as_completed yields done futures only");
        // Events so far never count more than what was yielded.
        all.extend(events.try_iter());
        let counted = all.iter().map(|e| e.done).max().unwrap_or(0);
        assert!(counted <= seen, "{counted} counted, {seen} yielded");
    }
    assert_eq!(seen, 40);
    all.extend(events.try_iter());
    let e = all.last().cloned().expect("a final event");
    assert_eq!((e.done, e.total, e.failures), (40, Some(40), 4));
    assert!(e.finished);
    assert_eq!(all.iter().filter(|e| e.finished).count(), 1);
}
