//! `Process` behaviour with real children: exit codes, signals, panics,
//! timeouts, daemon children, zombies and fd leaks.

mod common;

use std::time::{Duration, Instant};

use brood::os::{self, ProcState};
use brood::{ErrorKind, Process};

#[test]
fn returns_the_value() {
    let a = 1;
    let mut p = Process::new(move || a + 10_000);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 10_001);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
}

#[test]
fn child_writes_do_not_reach_the_parent() {
    let mut a = Box::new(1);
    let ptr: *mut i32 = &mut *a;
    let addr = ptr as usize;
    let mut p = Process::new(move || {
        // SAFETY: the child has its own copy of the parent's heap, so the
        // address is valid there and the write touches only the copy.
        unsafe { *(addr as *mut i32) = 10_000 };
        // SAFETY: as above.
        unsafe { *(addr as *const i32) }
    });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 10_000);
    assert_eq!(*a, 1);
    *a += 1;
    assert_eq!(*a, 2);
}

#[test]
fn exit_code_3() {
    let mut p = Process::new(|| -> () { os::exit_now(3) });
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exited);
    assert_eq!(err.exit_code(), Some(3));
    assert_eq!(p.exitcode(), Some(3));
}

#[test]
fn std_exit_code_is_kept() {
    let mut p = Process::new(|| -> () { std::process::exit(4) });
    p.start().unwrap();
    assert_eq!(p.join().unwrap_err().exit_code(), Some(4));
    assert_eq!(p.exitcode(), Some(4));
}

#[test]
fn sigterm_gives_minus_15() {
    let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(10)));
    p.start().unwrap();
    p.terminate().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Signaled);
    assert_eq!(err.signal(), Some(libc::SIGTERM));
    assert_eq!(p.exitcode(), Some(-15));
}

#[test]
fn sigkill_gives_minus_9() {
    let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(10)));
    p.start().unwrap();
    p.kill().unwrap();
    assert_eq!(p.join().unwrap_err().signal(), Some(9));
    assert_eq!(p.exitcode(), Some(-9));
}

#[test]
fn panic_carries_message_and_location() {
    let mut p = Process::new(|| -> u32 { panic!("the answer is {}", 42) });
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert!(err.is_panic());
    let report = err.panic().unwrap();
    assert_eq!(report.message, "the answer is 42");
    let location = report.location.as_deref().unwrap();
    assert!(location.contains("tests/process.rs:"), "{location}");
    assert!(err.to_string().contains("panicked: the answer is 42"));
    // Python: an exception in the target gives exit code 1.
    assert_eq!(p.exitcode(), Some(1));
}

#[test]
fn join_timeout_returns_early_with_the_child_alive() {
    let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(10)));
    p.start().unwrap();
    let t = Instant::now();
    let err = p.join_timeout(Duration::from_millis(100)).unwrap_err();
    let took = t.elapsed();
    assert!(err.is_timeout());
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    p.terminate().unwrap();
    assert!(p.join().is_err());
    assert_eq!(p.exitcode(), Some(-15));
}

#[test]
fn large_results_do_not_deadlock_join() {
    let mut p = Process::new(|| vec![7u8; 8 << 20]);
    p.start().unwrap();
    let v = p.join().unwrap();
    assert_eq!(v.len(), 8 << 20);
    assert!(v.iter().all(|b| *b == 7));
}

#[test]
fn state_errors() {
    let mut p = Process::new(|| 1);
    assert_eq!(p.join().unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(p.terminate().unwrap_err().kind(), ErrorKind::InvalidState);
    p.start().unwrap();
    assert_eq!(p.start().unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(p.join().unwrap(), 1);
    assert_eq!(p.join().unwrap_err().kind(), ErrorKind::InvalidState);
    p.terminate().unwrap();
    p.close().unwrap();
    assert_eq!(p.join().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(p.start().unwrap_err().kind(), ErrorKind::Closed);
    assert!(!p.is_alive());
}

#[test]
fn close_refuses_a_running_child() {
    let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(10)));
    p.start().unwrap();
    assert_eq!(p.close().unwrap_err().kind(), ErrorKind::InvalidState);
    p.kill().unwrap();
    let _ = p.join();
    p.close().unwrap();
}

#[test]
fn names_pids_and_parents() {
    let mut p = Process::builder().name("worker").target(|| {
        (
            brood::current_process(),
            brood::parent_process().unwrap().pid,
            os::getpid(),
        )
    });
    assert_eq!(p.name(), "worker");
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let (me, parent, seen_pid) = p.join().unwrap();
    assert_eq!(me.name, "worker");
    assert_eq!(me.pid, pid);
    assert_eq!(seen_pid, pid);
    assert_eq!(parent, os::getpid());
    assert!(brood::parent_process().is_none());
    assert_eq!(brood::current_process().name, "MainProcess");
}

#[test]
fn default_names_follow_python() {
    // Each child gets Process-N; a grandchild Process-N:1.
    let mut p = Process::new(|| {
        let mut q = Process::new(|| brood::current_process().name);
        q.start().unwrap();
        (brood::current_process().name, q.join().unwrap())
    });
    let name = p.name().to_string();
    assert!(name.starts_with("Process-"));
    p.start().unwrap();
    let (child, grandchild) = p.join().unwrap();
    assert_eq!(child, name);
    assert_eq!(grandchild, format!("{name}:1"));
}

#[test]
fn daemon_children_may_not_have_children() {
    let mut p = Process::builder().daemon(true).target(|| {
        let mut q = Process::new(|| ());
        q.start().map_err(|e| e.kind())
    });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), Err(ErrorKind::InvalidState));
}

#[test]
fn active_children_lists_running_ones() {
    let mut p = Process::builder()
        .name("listed")
        .target(|| std::thread::sleep(Duration::from_secs(10)));
    p.start().unwrap();
    let kids = brood::active_children();
    assert!(
        kids.iter()
            .any(|c| c.name == "listed" && Some(c.pid) == p.pid())
    );
    p.kill().unwrap();
    let _ = p.join();
    assert!(!brood::active_children().iter().any(|c| c.name == "listed"));
}

#[test]
fn dropped_handle_of_a_finished_child_leaves_no_zombie() {
    let mut p = Process::new(|| ());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    // Wait for the exit without reaping: the child is a zombie now.
    let fd = os::PidFd::open(pid).unwrap();
    assert!(fd.wait_timeout(Some(Duration::from_secs(10))).unwrap());
    assert_eq!(os::ProcInfo::read(pid).unwrap().state, ProcState::Zombie);
    drop(p);
    assert!(os::ProcInfo::read(pid).is_err(), "pid {pid} still in /proc");
}

#[test]
fn dropped_handle_of_a_running_child_is_reaped_when_it_exits() {
    let mut p = Process::new(|| std::thread::sleep(Duration::from_millis(300)));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(10);
    while os::ProcInfo::read(pid).is_ok() {
        assert!(Instant::now() < deadline, "orphan {pid} was not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemon_child_dies_with_a_sigkilled_parent() {
    // The middle process starts a daemon child, reports its pid, and sleeps.
    let (read, write) = common::pipe();
    let mut middle = Process::new(move || {
        let mut daemon = Process::builder()
            .daemon(true)
            .target(|| std::thread::sleep(Duration::from_secs(30)));
        daemon.start().unwrap();
        common::write_i32(&write, daemon.pid().unwrap().as_raw());
        std::thread::sleep(Duration::from_secs(30));
    });
    middle.start().unwrap();
    let daemon_pid = os::Pid::from_raw(common::read_i32(&read)).unwrap();
    let daemon_fd = os::PidFd::open(daemon_pid).unwrap();
    middle.kill().unwrap();
    assert_eq!(middle.join().unwrap_err().signal(), Some(9));
    let t = Instant::now();
    assert!(
        daemon_fd
            .wait_timeout(Some(Duration::from_secs(1)))
            .unwrap(),
        "daemon child {daemon_pid} outlived its parent by a second"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn daemon_children_are_terminated_when_their_parent_ends() {
    let (read, write) = common::pipe();
    let mut middle = Process::new(move || {
        let mut daemon = Process::builder()
            .daemon(true)
            .target(|| std::thread::sleep(Duration::from_secs(30)));
        daemon.start().unwrap();
        common::write_i32(&write, daemon.pid().unwrap().as_raw());
        // Return normally without joining the daemon: it is terminated.
        std::mem::forget(daemon);
    });
    middle.start().unwrap();
    let daemon_pid = os::Pid::from_raw(common::read_i32(&read)).unwrap();
    let daemon_fd = os::PidFd::open(daemon_pid).ok();
    middle.join_timeout(Duration::from_secs(10)).unwrap();
    if let Some(fd) = daemon_fd {
        assert!(fd.wait_timeout(Some(Duration::from_secs(5))).unwrap());
    }
}

#[test]
fn non_daemon_children_are_waited_for_at_the_end_of_their_parent() {
    let mut middle = Process::new(|| {
        let mut kid = Process::new(|| std::thread::sleep(Duration::from_millis(300)));
        kid.start().unwrap();
        let pid = kid.pid().unwrap();
        drop(kid);
        pid.as_raw()
    });
    middle.start().unwrap();
    let t = Instant::now();
    let kid = middle.join().unwrap();
    // The middle process waited for its child, as Python's does at exit.
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert!(os::ProcInfo::read(os::Pid::from_raw(kid).unwrap()).is_err());
}
