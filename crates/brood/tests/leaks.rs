//! Leak checks: the only tests in their binary, run one after the other
//! under a lock, so no other test opens fds or starts children while they
//! count.

mod common;

use std::sync::Mutex;

use brood::{Process, StartMethod};
use common::{assert_no_zombie_children, open_fds};

static SERIAL: Mutex<()> = Mutex::new(());

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
    // Warm up once so lazily opened fds (the forkserver's socket) exist
    // before counting.
    run(0);
    let before = open_fds();
    for i in 0..n {
        run(i);
    }
    assert_eq!(open_fds(), before, "fds leaked under {m}");
    assert_no_zombie_children();
}

#[test]
fn ten_thousand_fork_cycles_leak_no_zombie_and_no_fd() {
    cycles(StartMethod::Fork, 10_000);
}

#[test]
fn a_thousand_spawn_cycles_leak_no_zombie_and_no_fd() {
    cycles(StartMethod::Spawn, 1_000);
}

#[test]
fn a_thousand_forkserver_cycles_leak_no_zombie_and_no_fd() {
    cycles(StartMethod::ForkServer, 1_000);
}

#[test]
fn capturing_fork_cycles_leak_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::allow_fork();
    // Warm up once: the fork launcher keeps the last joined child's result
    // pipe for the next child (one pipe, never more).
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
