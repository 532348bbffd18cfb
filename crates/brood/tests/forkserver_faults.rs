//! The forkserver under faults: killed mid-run, and sent malformed
//! requests. Its own binary, one test at a time (a lock), because these
//! kill or poke the one server every forkserver test in a binary shares.

mod common;

use std::collections::HashSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use brood::os::Pid;
use brood::{Process, StartMethod};

static SERIAL: Mutex<()> = Mutex::new(());

/// The forkserver of this process, if one runs.
fn forkserver_pid() -> Option<Pid> {
    let me = brood::os::getpid();
    brood::os::proc::children(me)
        .unwrap()
        .into_iter()
        .find(|k| k.name == "brood-forksrv" && k.state != brood::os::ProcState::Zombie)
        .map(|k| k.pid)
}

fn sleeper(ms: u64) -> Process<()> {
    Process::builder()
        .start_method(StartMethod::ForkServer)
        .target_with(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), ms)
}

fn run_one() {
    let mut p = Process::builder()
        .start_method(StartMethod::ForkServer)
        .target_with(|x: u32| x + 1, 1);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 2);
    assert_eq!(p.exitcode(), Some(0));
}

/// Python reports 255 for a child whose forkserver was killed; brood did
/// not report any code, and waited 10 s for a status that could not come.
#[test]
fn join_returns_with_an_exit_code_after_the_forkserver_is_killed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut p = sleeper(500);
    p.start().unwrap();
    let server = forkserver_pid().expect("no forkserver");
    brood::os::kill(server, libc::SIGKILL).unwrap();
    let t0 = Instant::now();
    p.join().unwrap();
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "join took {waited:?} for a 0.5 s child"
    );
    assert_eq!(p.exitcode(), Some(255));
    assert!(!p.is_alive());
    // A later child gets a fresh server and its real status.
    run_one();
    assert_ne!(forkserver_pid(), Some(server));
}

/// The same when another process still holds the server's end of the
/// socket (so it never reaches end of file): brood used to wait its full
/// 10 s for a status, then reported none.
#[test]
fn join_returns_at_once_even_when_the_dead_servers_socket_stays_open() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut p = sleeper(500);
    p.start().unwrap();
    let server = forkserver_pid().expect("no forkserver");
    let server_fd = brood::os::PidFd::open(server).unwrap();
    // A copy of the server's socket (its fd 3) in this process.
    // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags, and
    // returns a new fd (close-on-exec) that this process owns.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_getfd, server_fd.as_raw_fd(), 3, 0) };
    assert!(raw >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    let held =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as RawFd) };
    brood::os::kill(server, libc::SIGKILL).unwrap();
    let t0 = Instant::now();
    p.join().unwrap();
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "join took {waited:?} for a 0.5 s child"
    );
    assert_eq!(p.exitcode(), Some(255));
    drop(held);
    run_one();
}

/// The inode of each socket this process holds.
fn socket_inodes() -> HashSet<(RawFd, String)> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_str()?.to_string();
            link.starts_with("socket:").then_some((fd, link))
        })
        .collect()
}

/// This process's socket to a fresh forkserver: the socket that appears
/// when a new server starts.
fn fresh_server_socket() -> RawFd {
    if let Some(old) = forkserver_pid() {
        brood::os::kill(old, libc::SIGKILL).unwrap();
        let fd = brood::os::PidFd::open(old).unwrap();
        assert!(fd.wait_timeout(Some(Duration::from_secs(10))).unwrap());
    }
    // A tree's first child also starts the shared-memory tracker, whose
    // connection is one more socket: start it first (spawn, which needs no
    // forkserver), so the server's socket is the only new one.
    let mut warm = brood::Process::builder()
        .start_method(brood::StartMethod::Spawn)
        .target(|| ());
    warm.start().unwrap();
    warm.join().unwrap();
    let before = socket_inodes();
    run_one();
    let new: Vec<RawFd> = socket_inodes()
        .difference(&before)
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(new.len(), 1, "expected one new socket, found {new:?}");
    new[0]
}

fn send_request(sock: RawFd, len: u64, body: &[u8], fd: Option<RawFd>) {
    let header = len.to_le_bytes();
    let mut iov = libc::iovec {
        iov_base: header.as_ptr() as *mut libc::c_void,
        iov_len: header.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid empty msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
        // SAFETY: the control buffer holds one cmsg with room for one fd.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::copy_nonoverlapping(
                (&fd as *const RawFd).cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                4,
            );
        }
    }
    // SAFETY: `msg` points to live buffers for the call.
    assert_eq!(unsafe { libc::sendmsg(sock, &msg, 0) }, 8);
    if !body.is_empty() {
        // SAFETY: `body` is valid for reads of its length.
        let n = unsafe { libc::send(sock, body.as_ptr().cast(), body.len(), 0) };
        assert_eq!(n, body.len() as isize);
    }
}

/// The next reply other than a child's exit status: (kind, value).
fn read_answer(sock: RawFd) -> (u8, i32) {
    loop {
        let mut pfd = libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1, "no answer");
        let mut buf = [0u8; 12];
        // SAFETY: `buf` is 12 writable bytes; MSG_WAITALL reads the whole reply.
        let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), 12, libc::MSG_WAITALL) };
        assert_eq!(n, 12, "the forkserver closed its socket");
        if buf[0] != 3 {
            return (buf[0], i32::from_le_bytes(buf[8..12].try_into().unwrap()));
        }
    }
}

/// Before: any request the server could not read made it SIGKILL every
/// daemon child and exit. Now it answers FAILED, logs, and serves on.
#[test]
fn a_malformed_forkserver_request_leaves_other_children_alive() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let sock = fresh_server_socket();
    let server = forkserver_pid().expect("no forkserver");
    let mut daemon = Process::builder()
        .start_method(StartMethod::ForkServer)
        .daemon(true)
        .target_with(
            |ms: u64| std::thread::sleep(Duration::from_millis(ms)),
            30_000,
        );
    daemon.start().unwrap();
    let mut plain = sleeper(30_000);
    plain.start().unwrap();

    const FAILED: u8 = 2;
    // No result fd.
    send_request(sock, 5, b"hello", None);
    assert_eq!(read_answer(sock), (FAILED, libc::EINVAL));
    // Bytes that are no job.
    let (_r, w) = common::pipe();
    send_request(sock, 4, &[0xff; 4], Some(w.as_raw_fd()));
    assert_eq!(read_answer(sock).0, FAILED);
    // An empty job.
    send_request(sock, 0, &[], Some(w.as_raw_fd()));
    assert_eq!(read_answer(sock).0, FAILED);

    std::thread::sleep(Duration::from_millis(100));
    assert!(daemon.is_alive(), "the daemon child was killed");
    assert!(plain.is_alive(), "the child was killed");
    assert_eq!(forkserver_pid(), Some(server), "the forkserver left");
    // The same server still serves, in step with the client.
    run_one();
    assert_eq!(forkserver_pid(), Some(server));

    daemon.kill().unwrap();
    plain.kill().unwrap();
    assert_eq!(daemon.join().unwrap_err().signal(), Some(libc::SIGKILL));
    assert_eq!(plain.join().unwrap_err().signal(), Some(libc::SIGKILL));
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A signal while the client waits for a status used to drop it into a
/// blocking receive that ignored the wait's bound (holding the client's
/// lock): with the server stopped, `is_alive` hung until it ran again. Now
/// the wait keeps its bound (10 s) however often it is interrupted.
#[test]
fn a_signal_does_not_unbound_the_wait_for_a_status() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a handler that does nothing is async-signal-safe; no
    // SA_RESTART, so every interrupted call returns EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    let mut p = sleeper(300);
    p.start().unwrap();
    let server = forkserver_pid().expect("no forkserver");
    brood::os::kill(server, libc::SIGSTOP).unwrap();
    // The child ends; the stopped server cannot reap it or say so.
    let mut pfd = libc::pollfd {
        fd: p.sentinel().unwrap().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pester = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                // SAFETY: tgkill to a thread of this process.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), me, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_millis(20));
                if t0.elapsed() > Duration::from_secs(25) {
                    // Let a hung receive return, so the test fails, not hangs.
                    let _ = brood::os::kill(server, libc::SIGCONT);
                }
            }
        })
    };
    let t0 = Instant::now();
    let alive = p.is_alive();
    let waited = t0.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    pester.join().unwrap();
    brood::os::kill(server, libc::SIGCONT).unwrap();
    assert!(!alive);
    assert!(
        waited < Duration::from_secs(20),
        "is_alive waited {waited:?} for a stopped server"
    );
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// Bit `SIGINT` of a `/proc/PID/status` mask line (`SigBlk:` is hex).
fn sigint_blocked_in(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (libc::SIGINT - 1)) != 0
}

fn sigint_here_and_in_parent((): ()) -> (bool, bool) {
    let me = brood::os::getpid().as_raw();
    let parent = brood::os::getppid().as_raw();
    (sigint_blocked_in(me), sigint_blocked_in(parent))
}

#[test]
fn the_forkserver_blocks_sigint_and_its_children_do_not() {
    // The server keeps a Ctrl-C pending for ever; each child unblocks it
    // first thing (a raw rt_sigprocmask on x86-64), so a SIGINT reaches it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = Process::builder()
        .start_method(StartMethod::ForkServer)
        .target_with(sigint_here_and_in_parent, ());
    p.start().unwrap();
    let (child, server) = p.join().unwrap();
    assert!(!child, "a forkserver child runs with SIGINT blocked");
    assert!(
        server,
        "the forkserver (the child's parent) does not block SIGINT"
    );
}
