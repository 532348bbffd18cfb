//! The cached pid (`os::pid::current`) is each process's own, however it
//! came to be: a child brood forked, a grandchild, a child of a raw
//! `libc::fork` (glibc runs brood's `pthread_atfork` prepare handler, which
//! marks the copy stale for the child), a
//! child of brood's `os::fork`, and spawn and forkserver children. Every
//! check compares the cache with the kernel's answer (`getpid`) and with the
//! parent's pid, in the child itself, after the cache was filled in the
//! parent before the fork (so a stale copy would show).

mod common;

use brood::os::{self, ForkResult, Pid, WaitFlags};
use brood::{Process, StartMethod};

/// (cached, kernel's) pid of the calling process, the cached one asked
/// twice (the second from the cache).
fn both() -> (i32, i32, i32) {
    let first = os::pid::current().as_raw();
    let again = os::pid::current().as_raw();
    (first, again, os::getpid().as_raw())
}

fn both_fn((): ()) -> (i32, i32, i32) {
    both()
}

/// A child reports the pids as `both` does: all three equal, and not the
/// parent's.
fn assert_own(parent: i32, (first, again, kernel): (i32, i32, i32)) {
    assert_eq!(first, kernel, "the cache is the kernel's pid");
    assert_eq!(again, kernel, "and stays so");
    assert_ne!(kernel, parent, "it ran in another process");
}

/// Forks with `libc::fork` (not brood's): the child runs `f` and exits 0
/// when it returns true, 1 otherwise; the parent returns that code.
fn raw_fork_exit_code(f: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child only reads pids (syscalls and an atomic), compares
    // them and calls `_exit`; the test harness's other thread holds no lock
    // the child needs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        os::exit_now(if f() { 0 } else { 1 });
    }
    let child = Pid::from_raw(pid).unwrap();
    let (_, status) = os::waitpid(Some(child), WaitFlags::empty())
        .unwrap()
        .unwrap();
    status.code().unwrap_or(-1)
}

fn own_in_child(parent: Pid) -> bool {
    let (first, again, kernel) = both();
    first == kernel && again == kernel && kernel != parent.as_raw()
}

#[test]
fn the_cached_pid_is_the_kernels() {
    assert_eq!(os::pid::current(), os::getpid());
    assert_eq!(os::pid::current().as_raw() as u32, std::process::id());
    assert_eq!(os::pid::refresh(), os::getpid());
    assert_eq!(os::pid::current(), os::getpid());
}

#[test]
fn a_child_brood_forks_has_its_own_cached_pid() {
    common::allow_fork();
    let parent = os::pid::current().as_raw();
    let mut p = Process::fork(both);
    p.start().unwrap();
    assert_own(parent, p.join().unwrap());
    // The function form under the fork start method too.
    let mut p = common::builder(StartMethod::Fork).target_with(both_fn, ());
    p.start().unwrap();
    let got = p.join().unwrap();
    assert_own(parent, got);
    assert_eq!(Some(got.2), p.pid().map(Pid::as_raw));
}

#[test]
fn a_grandchild_brood_forks_has_its_own_cached_pid() {
    common::allow_fork();
    let parent = os::pid::current().as_raw();
    let mut p = Process::fork(move || {
        let child = both();
        let mut q = Process::fork(both);
        q.start().unwrap();
        (child, q.join().unwrap())
    });
    p.start().unwrap();
    let (child, grandchild) = p.join().unwrap();
    assert_own(parent, child);
    assert_own(parent, grandchild);
    assert_ne!(child.2, grandchild.2);
}

#[test]
fn a_child_of_a_raw_libc_fork_has_its_own_cached_pid() {
    // The cache is filled before the fork: the child's copy is the
    // parent's until the atfork handler forgets it.
    let parent = os::pid::current();
    assert_eq!(raw_fork_exit_code(|| own_in_child(parent)), 0);
}

#[test]
fn a_raw_libc_fork_inside_a_brood_child_and_a_brood_fork_after_it() {
    common::allow_fork();
    let parent = os::pid::current();
    let mut p = Process::fork(move || {
        let me = os::pid::current();
        // A raw fork in the brood child, which itself starts a brood child.
        let code = raw_fork_exit_code(|| {
            let mut q = Process::fork(both);
            own_in_child(me)
                && q.start().is_ok()
                && q.join().is_ok_and(|got| {
                    got.0 == got.2 && got.1 == got.2 && got.2 != os::getpid().as_raw()
                })
        });
        (me.as_raw(), os::getpid().as_raw(), code)
    });
    p.start().unwrap();
    let (cached, kernel, code) = p.join().unwrap();
    assert_eq!(cached, kernel);
    assert_ne!(cached, parent.as_raw());
    assert_eq!(code, 0, "the raw child or its brood child saw a stale pid");
}

#[test]
fn raw_forks_while_another_thread_reads_the_pid_leave_no_stale_copy() {
    // Between the prepare handler and the fork, the other thread finds the
    // copy marked and must not fill it in (the child would inherit it).
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let parent = os::pid::current();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(std::hint::black_box(os::pid::current()), parent);
            }
        })
    };
    for _ in 0..200 {
        assert_eq!(
            raw_fork_exit_code(|| own_in_child(parent)),
            0,
            "a raw child saw a stale pid"
        );
        assert_eq!(os::pid::current(), parent);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}

#[test]
fn a_child_that_forks_before_asking_for_its_pid_and_its_child_have_their_own() {
    // The copy the first child inherits is marked; it forks again before
    // any `current` there: the grandchild inherits the mark too.
    let parent = os::pid::current();
    let code = raw_fork_exit_code(|| {
        let grandchild = raw_fork_exit_code(|| own_in_child(parent));
        grandchild == 0 && own_in_child(parent)
    });
    assert_eq!(code, 0, "the child or the grandchild saw a stale pid");
}

#[test]
fn a_child_of_os_fork_has_its_own_cached_pid() {
    let parent = os::pid::current();
    // SAFETY: the child only reads pids and calls `_exit`.
    match unsafe { os::fork() }.unwrap() {
        ForkResult::Child => os::exit_now(if own_in_child(parent) { 0 } else { 1 }),
        ForkResult::Parent { child } => {
            let (_, status) = os::waitpid(Some(child), WaitFlags::empty())
                .unwrap()
                .unwrap();
            assert_eq!(status.code(), Some(0));
        }
    }
}

#[test]
fn spawn_and_forkserver_children_have_their_own_cached_pid() {
    let parent = os::pid::current().as_raw();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = common::builder(m).target_with(both_fn, ());
        p.start().unwrap();
        let got = p.join().unwrap();
        assert_own(parent, got);
        assert_eq!(Some(got.2), p.pid().map(Pid::as_raw), "{m:?}");
    }
    // Two forkserver children in a row: the server forked both, each has
    // its own.
    let mut a = common::builder(StartMethod::ForkServer).target_with(both_fn, ());
    let mut b = common::builder(StartMethod::ForkServer).target_with(both_fn, ());
    a.start().unwrap();
    b.start().unwrap();
    let (x, y) = (a.join().unwrap(), b.join().unwrap());
    assert_own(parent, x);
    assert_own(parent, y);
    assert_ne!(x.2, y.2);
}
