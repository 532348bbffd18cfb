//! Leak checks: the only tests in their binary, run one after the other
//! under a lock, so no other test opens fds or starts children while they
//! count.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use brood::{Process, StartMethod};
use common::{assert_no_zombie_children, open_fds};

static SERIAL: Mutex<()> = Mutex::new(());

fn zombie_children() -> usize {
    let me = brood::os::getpid();
    brood::os::proc::children(me)
        .unwrap()
        .iter()
        .filter(|k| k.state == brood::os::ProcState::Zombie)
        .count()
}

fn cycles(m: StartMethod, n: u32) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::allow_fork();
    let run = |i: u32| {
        let mut p = Process::builder()
            .start_method(m)
            .target_with(|i: u32| i, i);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), i);
    };
    // Warm up once so lazily opened fds (the forkserver's socket, the
    // resource tracker's connection) exist before counting.
    run(0);
    let before = open_fds();
    let zombies = zombie_children();
    for i in 0..n {
        run(i);
    }
    assert_eq!(open_fds(), before, "fds leaked under {m}");
    assert_eq!(zombie_children(), zombies, "zombies left under {m}");
    assert_no_zombie_children();
}

/// Starts `n` children and drops each handle at once, while it runs: the
/// reaper (or, under forkserver, the server) takes them over. Once they
/// have all ended, the fd count and the zombie count are back where they
/// started — nothing stays behind per child. (Under forkserver each dropped
/// handle used to leave one fd open until `active_children` ran.)
fn drop_cycles(m: StartMethod, n: u32) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::allow_fork();
    let start = |ms: u64| {
        let mut p = Process::builder()
            .start_method(m)
            .target_with(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), ms);
        p.start().unwrap();
        p
    };
    // Warm up: a handle dropped while its child runs starts the reaper
    // thread (and its eventfd) once per process. Wait until that child is
    // gone (and its fds with it) before counting.
    let mut first = start(0);
    first.join().unwrap();
    let warm = start(50);
    let warm_pid = warm.pid().unwrap();
    drop(warm);
    let bound = Instant::now() + Duration::from_secs(30);
    while brood::os::ProcInfo::read(warm_pid).is_ok() && Instant::now() < bound {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let settled = |before: usize, zombies: usize| {
        let bound = Instant::now() + Duration::from_secs(60);
        loop {
            let (fds, z) = (open_fds(), zombie_children());
            if (fds, z) == (before, zombies) || Instant::now() > bound {
                return (fds, z);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let before = open_fds();
    let zombies = zombie_children();
    for _ in 0..n {
        drop(start(0));
    }
    let (fds, z) = settled(before, zombies);
    assert_eq!(
        fds, before,
        "fds left behind under {m} after {n} dropped handles"
    );
    assert_eq!(z, zombies, "zombies left behind under {m}");
    assert_no_zombie_children();
}

#[test]
fn ten_thousand_fork_cycles_leak_no_zombie_and_no_fd() {
    cycles(StartMethod::Fork, 10_000);
}

/// 2,000 by default, not 10,000: each spawn is a whole `exec` of this test
/// binary (6–11 ms on the shared 2-core CI machine, where 10,000 took 57 s
/// alone and 113 s beside the other leak tests), and the suite runs twice.
/// The test command's nextest pass runs the full 10,000
/// (`BROOD_SPAWN_CYCLES=10000`, set in `scripts/test.sh`).
#[test]
fn spawn_cycles_leak_no_zombie_and_no_fd() {
    let n = std::env::var("BROOD_SPAWN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    cycles(StartMethod::Spawn, n);
}

#[test]
fn ten_thousand_forkserver_cycles_leak_no_zombie_and_no_fd() {
    cycles(StartMethod::ForkServer, 10_000);
}

#[test]
fn two_thousand_dropped_fork_children_leak_nothing() {
    drop_cycles(StartMethod::Fork, 2_000);
}

#[test]
fn two_thousand_dropped_spawn_children_leak_nothing() {
    drop_cycles(StartMethod::Spawn, 2_000);
}

#[test]
fn two_thousand_dropped_forkserver_children_leak_nothing() {
    drop_cycles(StartMethod::ForkServer, 2_000);
}

#[test]
fn capturing_fork_cycles_leak_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::allow_fork();
    // Warm up once: the first child starts the tree's resource tracker,
    // whose connection stays open, and the fork launcher keeps the last
    // joined child's result pipe for the next child (one pipe, never more).
    let mut p = Process::fork(|| ());
    p.start().unwrap();
    p.join().unwrap();
    let before = open_fds();
    for i in 0..1_000u32 {
        let label = format!("cycle {i}");
        let mut p = Process::fork(move || label.len());
        p.start().unwrap();
        assert!(p.join().unwrap() >= 7);
    }
    assert_eq!(open_fds(), before);
    assert_no_zombie_children();
}
