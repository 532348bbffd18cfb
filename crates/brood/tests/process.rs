//! `Process` behaviour with real children, one suite instantiated for each
//! start method (fork, spawn, forkserver): exit codes, signals, panics,
//! timeouts, names, daemon children, zombies.
//!
//! Functions here capture nothing, so every start method can run them; data
//! goes in as arguments. Fork-only behaviour (capturing closures) is at the
//! end of the file.

#[macro_use]
mod common;

use common::builder;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use brood::os::{self, ProcState};
use brood::{ErrorKind, Process, StartMethod};

fn sleep_secs(s: u64) {
    std::thread::sleep(Duration::from_secs(s));
}

/// A fresh path under the temp dir for a child to write a pid into.
fn temp_path(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::env::temp_dir().join(format!("brood-test-{}-{tag}-{n}", os::getpid()))
}

/// Waits (bounded) for a child to write a pid into `path`.
fn read_pid_file(path: &PathBuf) -> os::Pid {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(n) = text.trim().parse::<i32>()
        {
            let _ = std::fs::remove_file(path);
            return os::Pid::from_raw(n).unwrap();
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn returns_the_value(m: StartMethod) {
    let mut p = builder(m).target_with(|a: i32| a + 10_000, 1);
    p.start().unwrap();
    // `builder` opted in to forking with threads: Fork means fork.
    assert_eq!(p.start_method(), Some(m));
    assert_eq!(p.join().unwrap(), 10_001);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
}

fn exit_code_3(m: StartMethod) {
    let mut p = builder(m).target(|| -> () { os::exit_now(3) });
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exited);
    assert_eq!(err.exit_code(), Some(3));
    assert_eq!(p.exitcode(), Some(3));
}

fn std_exit_code_is_kept(m: StartMethod) {
    let mut p = builder(m).target(|| -> () { std::process::exit(4) });
    p.start().unwrap();
    assert_eq!(p.join().unwrap_err().exit_code(), Some(4));
    assert_eq!(p.exitcode(), Some(4));
}

fn sigterm_gives_minus_15(m: StartMethod) {
    let mut p = builder(m).target(|| sleep_secs(10));
    p.start().unwrap();
    p.terminate().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Signaled);
    assert_eq!(err.signal(), Some(libc::SIGTERM));
    assert!(err.to_string().contains("SIGTERM"), "{err}");
    assert_eq!(p.exitcode(), Some(-15));
}

fn sigkill_gives_minus_9(m: StartMethod) {
    let mut p = builder(m).target(|| sleep_secs(10));
    p.start().unwrap();
    p.kill().unwrap();
    assert_eq!(p.join().unwrap_err().signal(), Some(9));
    assert_eq!(p.exitcode(), Some(-9));
}

fn panic_carries_message_and_location(m: StartMethod) {
    let mut p = builder(m).target_with(|n: u32| -> u32 { panic!("the answer is {n}") }, 42);
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

fn join_timeout_returns_early_with_the_child_alive(m: StartMethod) {
    let mut p = builder(m).target(|| sleep_secs(10));
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

fn large_values_and_arguments_cross(m: StartMethod) {
    let mut p = builder(m).target_with(
        |v: Vec<u8>| v.iter().map(|b| b.wrapping_add(1)).collect::<Vec<u8>>(),
        vec![6u8; 4 << 20],
    );
    p.start().unwrap();
    let v = p.join().unwrap();
    assert_eq!(v.len(), 4 << 20);
    assert!(v.iter().all(|b| *b == 7));
}

fn state_errors(m: StartMethod) {
    let mut p = builder(m).target(|| 1);
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

fn close_refuses_a_running_child(m: StartMethod) {
    let mut p = builder(m).target(|| sleep_secs(10));
    p.start().unwrap();
    assert_eq!(p.close().unwrap_err().kind(), ErrorKind::InvalidState);
    p.kill().unwrap();
    let _ = p.join();
    p.close().unwrap();
}

fn names_pids_and_parents(m: StartMethod) {
    let mut p = builder(m).name("worker").target(|| {
        (
            brood::current_process(),
            brood::parent_process().unwrap(),
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
    assert_eq!(parent.pid, os::getpid());
    assert_eq!(parent.name, "MainProcess");
    assert!(brood::parent_process().is_none());
    assert_eq!(brood::current_process().name, "MainProcess");
}

fn default_names_follow_python(m: StartMethod) {
    // Each child gets Process-N; a grandchild Process-N:1.
    let mut p = builder(m).target(|| {
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

fn daemon_children_may_not_have_children(m: StartMethod) {
    let mut p = builder(m).daemon(true).target(|| {
        let mut q = Process::new(|| ());
        q.start().map_err(|e| e.kind())
    });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), Err(ErrorKind::InvalidState));
}

fn active_children_lists_running_ones(m: StartMethod) {
    let mut p = builder(m).name("listed").target(|| sleep_secs(10));
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

/// Five at once: more than the children table keeps inline (two), so the
/// rest live in its map; all are listed, in pid order, and each joins.
fn active_children_lists_more_children_than_the_table_keeps_inline(m: StartMethod) {
    let mut kids: Vec<_> = (0..5)
        .map(|i| {
            builder(m)
                .name(format!("many-{i}"))
                .target(|| sleep_secs(10))
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    let listed: Vec<_> = brood::active_children()
        .into_iter()
        .filter(|c| c.name.starts_with("many-"))
        .collect();
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed.windows(2).all(|w| w[0].pid < w[1].pid));
    // Joined out of order: the first (an inline slot) and the last (the map).
    for i in [0, 4, 2, 1, 3] {
        kids[i].kill().unwrap();
        assert_eq!(kids[i].join().unwrap_err().signal(), Some(9));
        assert!(
            !brood::active_children()
                .iter()
                .any(|c| c.name == format!("many-{i}"))
        );
    }
    assert!(
        !brood::active_children()
            .iter()
            .any(|c| c.name.starts_with("many-"))
    );
}

fn dropped_handle_of_a_finished_child_leaves_no_zombie(m: StartMethod) {
    let mut p = builder(m).target(|| ());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    if m != StartMethod::ForkServer {
        let fd = os::PidFd::open(pid).unwrap();
        assert!(fd.wait_timeout(Some(Duration::from_secs(10))).unwrap());
        // Exited, not reaped: a zombie of ours until the handle goes.
        assert_eq!(os::ProcInfo::read(pid).unwrap().state, ProcState::Zombie);
    }
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(5);
    while os::ProcInfo::read(pid).is_ok() {
        assert!(Instant::now() < deadline, "pid {pid} still in /proc");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn dropped_handle_of_a_running_child_is_reaped_when_it_exits(m: StartMethod) {
    let mut p = builder(m).target(|| std::thread::sleep(Duration::from_millis(300)));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(10);
    while os::ProcInfo::read(pid).is_ok() {
        assert!(Instant::now() < deadline, "orphan {pid} was not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The middle process of the daemon tests: starts a daemon child with the
/// same start method, writes its pid to `path`, then sleeps or returns.
fn start_daemon_and_report((m, path, then_sleep): (StartMethod, PathBuf, bool)) {
    let mut daemon = Process::builder()
        .start_method(m)
        .daemon(true)
        .target(|| sleep_secs(30));
    daemon.start().unwrap();
    std::fs::write(&path, daemon.pid().unwrap().to_string()).unwrap();
    if then_sleep {
        sleep_secs(30);
    }
    // Returning without joining: the daemon is terminated at our end.
    std::mem::forget(daemon);
}

fn daemon_child_dies_with_a_sigkilled_parent(m: StartMethod) {
    let path = temp_path("daemon");
    let mut middle = builder(m).target_with(start_daemon_and_report, (m, path.clone(), true));
    middle.start().unwrap();
    let daemon_pid = read_pid_file(&path);
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

fn daemon_children_are_terminated_when_their_parent_ends(m: StartMethod) {
    let path = temp_path("daemon-end");
    let go = temp_path("daemon-end-go");
    // The middle process starts a daemon (which would sleep 30 s), reports
    // its pid, and ends only once told: the daemon is certainly alive
    // while we open its pidfd.
    let mut middle = builder(m).target_with(
        |(m, path, go): (StartMethod, PathBuf, PathBuf)| {
            let mut daemon = Process::builder()
                .start_method(m)
                .daemon(true)
                .target(|| sleep_secs(30));
            daemon.start().unwrap();
            std::fs::write(&path, daemon.pid().unwrap().to_string()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !go.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            // Returning without joining: the daemon is terminated at our end.
            std::mem::forget(daemon);
        },
        (m, path.clone(), go.clone()),
    );
    middle.start().unwrap();
    let daemon_pid = read_pid_file(&path);
    let daemon_fd = os::PidFd::open(daemon_pid).unwrap();
    assert!(!daemon_fd.wait_timeout(Some(Duration::ZERO)).unwrap());
    std::fs::write(&go, b"go").unwrap();
    middle.join_timeout(Duration::from_secs(10)).unwrap();
    let _ = std::fs::remove_file(&go);
    assert!(
        daemon_fd
            .wait_timeout(Some(Duration::from_secs(5)))
            .unwrap(),
        "daemon child {daemon_pid} outlived its parent's end by 5 s"
    );
}

fn non_daemon_children_are_waited_for_at_the_end_of_their_parent(m: StartMethod) {
    let mut middle = builder(m).target_with(
        |m: StartMethod| {
            let mut kid = Process::builder()
                .start_method(m)
                .target(|| std::thread::sleep(Duration::from_millis(300)));
            kid.start().unwrap();
            let pid = kid.pid().unwrap();
            drop(kid);
            pid.as_raw()
        },
        m,
    );
    middle.start().unwrap();
    let t = Instant::now();
    let kid = middle.join().unwrap();
    // The middle process waited for its child, as Python's does at exit.
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    let kid = os::Pid::from_raw(kid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while os::ProcInfo::read(kid).is_ok_and(|i| i.state != ProcState::Zombie) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stdout_and_stderr_go_where_the_parents_go(m: StartMethod) {
    // The child's output reaches the same fds: checked by redirecting our
    // stdout is not possible under a test harness, so compare the targets.
    let mut p = builder(m).target(|| {
        let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        (link(1), link(2))
    });
    p.start().unwrap();
    let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    assert_eq!(p.join().unwrap(), (link(1), link(2)));
}

/// A file handed to the child as an argument: the fd travels with it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Output(
    #[serde(
        serialize_with = "brood::handle::serialize_fd",
        deserialize_with = "brood::handle::deserialize_fd"
    )]
    std::fs::File,
);

fn fds_in_arguments_reach_the_child(m: StartMethod) {
    use std::io::{Read, Seek, Write};
    let path = temp_path("fd");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let arg = Output(file.try_clone().unwrap());
    let mut p = builder(m).target_with(
        |(out, text): (Output, String)| {
            let mut f = out.0;
            f.write_all(text.as_bytes()).unwrap();
            os::getpid().as_raw()
        },
        (arg, "written by the child".to_string()),
    );
    p.start().unwrap();
    let child = p.join().unwrap();
    assert_ne!(child, os::getpid().as_raw());
    file.rewind().unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "written by the child");
}

fn the_child_is_named_like_the_program(m: StartMethod) {
    // A forked child is a copy of the calling thread, name included; a
    // spawned one takes the program's name (not `exe`).
    let source = if m == StartMethod::Fork {
        "/proc/thread-self/comm"
    } else {
        "/proc/self/comm"
    };
    let comm = || std::fs::read_to_string(source).unwrap().trim().to_string();
    let mut p = builder(m).target(move || {
        std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_string()
    });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), comm());
}

suite!(
    returns_the_value,
    exit_code_3,
    std_exit_code_is_kept,
    sigterm_gives_minus_15,
    sigkill_gives_minus_9,
    panic_carries_message_and_location,
    join_timeout_returns_early_with_the_child_alive,
    large_values_and_arguments_cross,
    state_errors,
    close_refuses_a_running_child,
    names_pids_and_parents,
    default_names_follow_python,
    daemon_children_may_not_have_children,
    active_children_lists_running_ones,
    active_children_lists_more_children_than_the_table_keeps_inline,
    dropped_handle_of_a_finished_child_leaves_no_zombie,
    dropped_handle_of_a_running_child_is_reaped_when_it_exits,
    daemon_child_dies_with_a_sigkilled_parent,
    daemon_children_are_terminated_when_their_parent_ends,
    non_daemon_children_are_waited_for_at_the_end_of_their_parent,
    stdout_and_stderr_go_where_the_parents_go,
    fds_in_arguments_reach_the_child,
    the_child_is_named_like_the_program,
);

// Fork only: capturing closures.

#[test]
fn fork_runs_capturing_closures() {
    common::allow_fork();
    let greeting = String::from("hello");
    let mut p = Process::fork(move || greeting.len() + 10_000);
    p.start().unwrap();
    assert_eq!(p.start_method(), Some(StartMethod::Fork));
    assert_eq!(p.join().unwrap(), 10_005);
}

#[test]
fn child_writes_do_not_reach_the_parent() {
    common::allow_fork();
    let mut a = Box::new(1);
    let addr = (&mut *a as *mut i32) as usize;
    let mut p = Process::fork(move || {
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
