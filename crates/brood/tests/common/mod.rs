//! Helpers shared by the integration tests.
#![allow(dead_code, unused_macros)]

/// Instantiates each `fn name(m: StartMethod)` as one test per start
/// method, in modules `fork`, `spawn` and `forkserver`. Bring it in with
/// `#[macro_use] mod common;`.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod fork {
            $(#[test] fn $test() { super::$test(brood::StartMethod::Fork) })*
        }
        mod spawn {
            $(#[test] fn $test() { super::$test(brood::StartMethod::Spawn) })*
        }
        mod forkserver {
            $(#[test] fn $test() { super::$test(brood::StartMethod::ForkServer) })*
        }
    };
}

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The number of open fds of this process (entries of `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Fails if this process has a zombie child: every child that exited has
/// been reaped.
pub fn assert_no_zombie_children() {
    let me = brood::os::getpid();
    for kid in brood::os::proc::children(me).unwrap() {
        assert_ne!(
            kid.state,
            brood::os::ProcState::Zombie,
            "zombie child {} ({})",
            kid.pid,
            kid.name
        );
    }
}

/// A plain pipe for tests to pass numbers between processes.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded; both fds are fresh and owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub fn write_i32(fd: &OwnedFd, v: i32) {
    let b = v.to_ne_bytes();
    // SAFETY: `b` is 4 readable bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 4) };
    assert_eq!(n, 4);
}

/// Reads one i32, waiting at most 10 s.
pub fn read_i32(fd: &OwnedFd) -> i32 {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "nothing to read within 10 s");
    let mut b = [0u8; 4];
    // SAFETY: `b` is 4 writable bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
    assert_eq!(n, 4);
    i32::from_ne_bytes(b)
}

/// Lets `Process::fork` and `StartMethod::Fork` fork this test binary.
///
/// Sound under cargo-nextest (one test per process; the main thread only
/// waits) and under `cargo test -- --test-threads=1`. With several test
/// threads, libtest's main thread may hold stdout's lock while it prints a
/// result at the moment another test forks: a child that then prints would
/// wait forever (the hazard `allow_fork_with_threads` names).
pub fn allow_fork() {
    // SAFETY: the test harness's other thread only waits for tests to end
    // and holds no lock a child needs; no test holds one across a start.
    unsafe { brood::allow_fork_with_threads() };
}

/// A `Process` builder for `m`, with forking allowed in this test process.
pub fn builder(m: brood::StartMethod) -> brood::Builder {
    allow_fork();
    brood::Process::builder().start_method(m)
}

/// Asserts that `f` took about `expected` (at least it, and not hanging).
pub fn returns_in_time<R>(expected: std::time::Duration, f: impl FnOnce() -> R) -> R {
    let t = std::time::Instant::now();
    let out = f();
    let took = t.elapsed();
    assert!(
        took + std::time::Duration::from_millis(2) >= expected,
        "returned early: {took:?}"
    );
    assert!(
        took < expected + std::time::Duration::from_secs(3),
        "took {took:?}"
    );
    out
}

/// A shared-memory name no other test (nor run) uses.
pub fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("brood-test-{}-{tag}-{n}", std::process::id())
}

/// Whether `/dev/shm/name` exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Polls until the segment's name is gone, for at most 10 s.
pub fn assert_unlinked_soon(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while exists(name) {
        assert!(
            std::time::Instant::now() < deadline,
            "/dev/shm/{name} is still there 10 s after its last user died"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs one task on a throwaway one-worker pool, so that what a first pool
/// creates once per process (the forkserver, the tracker) exists before a
/// test counts fds or processes.
pub fn warm_up_pools(pool: brood::Pool) {
    pool.apply(|x: u8| x, 1).unwrap();
    pool.close();
    pool.join().unwrap();
}

/// Bytes of brood arenas mapped in this process (`/proc/self/maps`).
pub fn arena_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:brood-arena"))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap()
        })
        .sum()
}
