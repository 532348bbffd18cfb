//! The syscall layer with real processes: fork's two returns, wait and its
//! decoded status, SIGCHLD ignored, orphans adopted by a subreaper or init,
//! the double fork, zombies in /proc.
//!
//! Tests that change process-wide state (subreaper, SIGCHLD disposition) do
//! it inside a `Process` child, so the test binary itself stays untouched.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use brood::Process;
use brood::os::{
    self, Daemonized, ExitStatus, ForkResult, Pid, PidFd, ProcInfo, ProcState, WaitFlags,
};

/// Forks a child that runs `f` then `_exit`s with its return value.
fn fork_with(f: impl FnOnce() -> i32) -> Pid {
    // SAFETY: the child runs `f` (which only does what a single-threaded
    // child of a test may: the tests that call this are their own child
    // processes or only use async-signal-safe calls) and then `_exit`s.
    match unsafe { os::fork() }.unwrap() {
        ForkResult::Child => os::exit_now(f()),
        ForkResult::Parent { child } => child,
    }
}

#[test]
fn fork_returns_twice_and_wait_decodes_the_code() {
    let child = fork_with(|| 3);
    let (pid, status) = os::waitpid(Some(child), WaitFlags::empty())
        .unwrap()
        .unwrap();
    assert_eq!(pid, child);
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(status.code(), Some(3));
    assert_eq!(status.signal(), None);
    assert_eq!(status.to_string(), "exited with code 3");
}

/// `waitpid(None, ..)` is waitpid(-1): any child, also one that left this
/// process group (a new session), as the subreaper check in the test
/// command relies on. (rustix's `waitpid(None)` alone is waitpid(0).)
#[test]
fn waitpid_none_reaps_a_child_in_another_session() {
    let child = fork_with(|| {
        // SAFETY: setsid is async-signal-safe and touches only this process.
        unsafe { libc::setsid() };
        7
    });
    let (pid, status) = os::waitpid(None, WaitFlags::empty()).unwrap().unwrap();
    assert_eq!(pid, child);
    assert_eq!(status, ExitStatus::Exited(7));
}

#[test]
fn wait_decodes_a_signal_death() {
    let child = fork_with(|| {
        // SAFETY: pause(2) is async-signal-safe and only returns on a signal.
        unsafe { libc::pause() };
        0
    });
    os::kill(child, libc::SIGKILL).unwrap();
    let (_, status) = os::waitpid(Some(child), WaitFlags::empty())
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.exitcode(), Some(-9));
    assert!(status.to_string().contains("SIGKILL"));
}

#[test]
fn waitpid_nohang_and_stop_continue_reports() {
    let child = fork_with(|| {
        // SAFETY: as above.
        unsafe { libc::pause() };
        0
    });
    assert_eq!(os::waitpid(Some(child), WaitFlags::NOHANG).unwrap(), None);
    os::kill(child, libc::SIGSTOP).unwrap();
    let (_, status) = os::waitpid(Some(child), WaitFlags::UNTRACED)
        .unwrap()
        .unwrap();
    assert_eq!(status, ExitStatus::Stopped(libc::SIGSTOP));
    assert_eq!(ProcInfo::read(child).unwrap().state, ProcState::Stopped);
    os::kill(child, libc::SIGCONT).unwrap();
    let (_, status) = os::waitpid(Some(child), WaitFlags::CONTINUED)
        .unwrap()
        .unwrap();
    assert_eq!(status, ExitStatus::Continued);
    os::kill(child, libc::SIGTERM).unwrap();
    let (_, status) = os::waitpid(Some(child), WaitFlags::empty())
        .unwrap()
        .unwrap();
    assert_eq!(status.exitcode(), Some(-15));
}

#[test]
fn a_zombie_shows_as_z_until_reaped() {
    let child = fork_with(|| 0);
    let fd = PidFd::open(child).unwrap();
    assert!(fd.wait_timeout(Some(Duration::from_secs(10))).unwrap());
    let info = ProcInfo::read(child).unwrap();
    assert_eq!(info.state, ProcState::Zombie);
    assert!(info.stat().starts_with('Z'));
    assert_eq!(info.ppid, os::getpid().as_raw());
    assert_eq!(fd.try_reap().unwrap(), Some(ExitStatus::Exited(0)));
    assert!(ProcInfo::read(child).is_err());
}

#[test]
fn wait_without_children_is_echild() {
    // Inside a fresh child, which has no children of its own.
    let mut p = Process::new(|| os::wait().unwrap_err().raw_os_error());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), Some(libc::ECHILD));
}

#[test]
fn ignored_sigchld_lets_the_kernel_reap() {
    let mut p = Process::new(|| {
        os::ignore_children().unwrap();
        // The kid waits for a go: the kernel reaps it the moment it exits,
        // so its pidfd must be open before.
        let (go, hold) = common::pipe();
        let (go_raw, hold_raw) = (go.as_raw_fd(), hold.as_raw_fd());
        let kid = fork_with(move || {
            let mut b = [0u8; 1];
            // SAFETY: closing the child's copy of the write end, then a
            // read(2) into a 1-byte buffer; EOF (the parent closed its copy)
            // is the go.
            unsafe {
                libc::close(hold_raw);
                libc::read(go_raw, b.as_mut_ptr().cast(), 1);
            }
            0
        });
        let fd = PidFd::open(kid).unwrap();
        drop(hold);
        drop(go);
        fd.wait_timeout(Some(Duration::from_secs(10))).unwrap();
        // Give the kernel's auto-reap a moment, then look.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ProcInfo::read(kid).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let gone = ProcInfo::read(kid).is_err();
        let echild = os::waitpid(None, WaitFlags::empty())
            .unwrap_err()
            .raw_os_error();
        os::default_children().unwrap();
        (gone, echild)
    });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (true, Some(libc::ECHILD)));
}

#[test]
fn an_orphan_is_adopted_by_the_subreaper() {
    // The test's child becomes a subreaper; its child (the middle) forks a
    // grandchild and exits; the grandchild reports its new parent.
    let mut p = Process::new(|| {
        os::set_child_subreaper(true).unwrap();
        let (read, write) = common::pipe();
        let middle = fork_with(|| {
            let me = os::getpid();
            fork_with(move || {
                // Wait (bounded) until the middle process is gone.
                let deadline = Instant::now() + Duration::from_secs(10);
                while os::getppid() == me && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                common::write_i32(&write, os::getppid().as_raw());
                0
            });
            0
        });
        os::waitpid(Some(middle), WaitFlags::empty()).unwrap();
        let new_parent = common::read_i32(&read);
        // The adopted grandchild is ours to reap now.
        let (reaped, _) = os::waitpid(None, WaitFlags::empty()).unwrap().unwrap();
        (
            new_parent,
            os::getpid().as_raw(),
            middle.as_raw(),
            reaped.as_raw(),
        )
    });
    p.start().unwrap();
    let (new_parent, subreaper, middle, _) = p.join().unwrap();
    assert_ne!(new_parent, middle);
    assert_eq!(new_parent, subreaper);
}

#[test]
fn the_double_fork_leaves_no_zombie_and_the_daemon_is_adopted() {
    let (read, write) = common::pipe();
    let me = os::getpid();
    // SAFETY: the daemon only sleeps, reads its ppid and writes to a pipe
    // (async-signal-safe calls), then `_exit`s.
    match unsafe { os::daemonize() }.unwrap() {
        Daemonized::Daemon => {
            // Wait (bounded) for the middle process to exit.
            for _ in 0..5000 {
                if os::getppid() != me {
                    break;
                }
                // SAFETY: usleep is async-signal-safe in practice (nanosleep).
                unsafe { libc::usleep(1000) };
            }
            common::write_i32(&write, os::getppid().as_raw());
            common::write_i32(&write, os::getpid().as_raw());
            // SAFETY: getsid has no preconditions.
            common::write_i32(&write, unsafe { libc::getsid(0) });
            os::exit_now(0);
        }
        Daemonized::Parent { daemon } => {
            drop(write);
            let ppid = common::read_i32(&read);
            // Adopted by init or the nearest subreaper: neither us nor the
            // middle process, which daemonize already reaped.
            assert_ne!(ppid, me.as_raw());
            assert!(ppid >= 1);
            // The pid daemonize reported is the daemon's own, and the
            // daemon runs in a session of its own (the middle's setsid).
            assert_eq!(common::read_i32(&read), daemon.as_raw());
            // SAFETY: getsid has no preconditions.
            assert_ne!(common::read_i32(&read), unsafe { libc::getsid(0) });
            common::assert_no_zombie_children();
        }
    }
}

#[test]
fn proc_reader_sees_this_process() {
    let me = ProcInfo::read(os::getpid()).unwrap();
    assert_eq!(me.pid, os::getpid());
    assert_eq!(me.ppid, os::getppid().as_raw());
    assert!(me.threads >= 1);
    assert!(!me.cmdline.is_empty());
    assert!(me.started_at().unwrap() <= std::time::SystemTime::now());
    let tree = os::proc::ProcTree::read().unwrap();
    let mut depth_of_me = None;
    tree.walk(tree.roots(), &mut |info, depth| {
        if info.pid == me.pid {
            depth_of_me = Some(depth);
        }
    });
    assert!(depth_of_me.unwrap() >= 1);
}

#[test]
fn a_sleeping_child_shows_as_s() {
    let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(10)));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ProcInfo::read(pid).unwrap().state != ProcState::Sleeping {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill().unwrap();
    let _ = p.join();
}
