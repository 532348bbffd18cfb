//! Where brood's fork start+join time goes: interleaved variants of raw
//! fork against brood fork: per-cycle median time, and page faults per
//! cycle (child's, from RUSAGE_CHILDREN; parent's, from RUSAGE_SELF), and
//! the parent's heap allocations per cycle (a counting global allocator;
//! the harness's own are made before the timed loops).
//!
//! Usage: `forkprobe [ITERS [ROW-SUBSTRING [noraw]]]`; `FORKPROBE_SERVER=1`
//! starts a forkserver first, as the bench's start table does. A
//! diagnostic: the raw rows call libc directly (each child only `_exit`s).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counts the allocations made in this process (a forked child counts in
/// its own copy, which the parent never sees).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; the count is a
// relaxed atomic add, which neither allocates nor blocks.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn rusage(who: i32) -> i64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    ru.ru_minflt
}

fn reap(pid: i32) {
    let mut st = 0;
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn raw() {
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    reap(pid);
}

fn poll1(fd: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, -1) };
}

fn waitid_fd(fd: i32) {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    unsafe { libc::waitid(libc::P_PIDFD, fd as u32, &mut info, libc::WEXITED) };
}

/// Raw fork with what a brood start+join allocated around it until issue
/// 10 removed them: seven small blocks made before the fork and freed
/// after it (the `Process`'s name and identity, the child's copies of
/// them, its parent's name and its auth key; a start+join of a child with
/// a default name now allocates none). Each page malloc and free write
/// between two forks (glibc's tcache, the chunks, errno's page on every
/// `free`) is a copy-on-write fault: this row prices them.
fn raw_allocs() {
    let blocks: Vec<Box<[u8]>> = (0..7)
        .map(|i| vec![i as u8; if i == 5 { 32 } else { 12 }].into_boxed_slice())
        .collect();
    let blocks = std::hint::black_box(blocks);
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    drop(blocks);
    reap(pid);
}

fn raw_pidfd() {
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    poll1(fd);
    waitid_fd(fd);
    unsafe { libc::close(fd) };
}

/// As `raw_pidfd`, but the parent sleeps in a blocking `waitid` on the
/// pidfd instead of `poll` and then a `waitid` (one syscall fewer).
fn raw_pidfd_waitid() {
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    waitid_fd(fd);
    unsafe { libc::close(fd) };
}

/// As `raw`, plus `pidfd_open` and `close` only (the pidfd's cost without
/// waiting on it).
fn raw_pidfd_open_only() {
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    reap(pid);
    unsafe { libc::close(fd) };
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn raw_clone3() {
    let mut pidfd: i32 = -1;
    let args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut i32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args, std::mem::size_of::<CloneArgs>()) };
    if pid == 0 {
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    poll1(pidfd);
    waitid_fd(pidfd);
    unsafe { libc::close(pidfd) };
}

fn pipe_variant(two_wakes: bool, touch: usize) {
    let mut fds = [0; 2];
    unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::close(fds[0]) };
        for i in 0..touch {
            unsafe { std::ptr::write_volatile(BIG.0.as_ptr().add(i * 4096) as *mut u8, 1) };
        }
        let b = [0u8; 10];
        unsafe { libc::write(fds[1], b.as_ptr().cast(), 10) };
        unsafe { libc::_exit(0) };
    }
    unsafe { libc::close(fds[1]) };
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    let mut buf = [0u8; 64];
    if two_wakes {
        poll1(fds[0]);
        unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 64) };
        poll1(fd);
        waitid_fd(fd);
    } else {
        poll1(fd);
        waitid_fd(fd);
        unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 64) };
    }
    unsafe { libc::close(fd) };
    unsafe { libc::close(fds[0]) };
}

#[repr(align(4096))]
struct Big([u8; 4096 * 32]);
static BIG: Big = Big([0; 4096 * 32]);

fn poll2(a: i32, b: i32) -> (i16, i16) {
    let mut p = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
    (p[0].revents, p[1].revents)
}

/// How often the pipe's end of file woke the parent before the exit did.
static HUPFIRST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The child writes nothing; the parent polls pidfd and pipe (HUP at exit),
/// then pidfd alone if the HUP came first; or (hold) keeps the write end.
fn nowrite(hold: bool) {
    let mut fds = [0; 2];
    unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    if !hold {
        unsafe { libc::close(fds[1]) };
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    let (a, _) = poll2(fd, fds[0]);
    if a == 0 {
        HUPFIRST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        poll1(fd);
    }
    waitid_fd(fd);
    unsafe { libc::close(fd) };
    unsafe { libc::close(fds[0]) };
    if hold {
        unsafe { libc::close(fds[1]) };
    }
}
fn nowrite_hup() {
    nowrite(false)
}
fn nowrite_hold() {
    nowrite(true)
}

fn pipe1() {
    pipe_variant(false, 0)
}
fn pipe2w() {
    pipe_variant(true, 0)
}
fn pipe1_touch16() {
    pipe_variant(false, 16)
}

fn brood_unit() {
    let mut p = brood::Process::fork(|| ());
    p.start().unwrap();
    p.join().unwrap();
}

fn brood_server() {
    let mut p = brood::Process::builder()
        .start_method(brood::StartMethod::ForkServer)
        .target(|| ());
    p.start().unwrap();
    p.join().unwrap();
}

fn brood_u64() {
    let mut p = brood::Process::fork(|| 7u64);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 7);
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let only = std::env::args().nth(2);
    let rows: Vec<(&str, fn())> = vec![
        ("raw", raw),
        ("raw+pidfd poll", raw_pidfd),
        ("raw+pidfd waitid", raw_pidfd_waitid),
        ("raw+pidfd open", raw_pidfd_open_only),
        ("raw + 7 allocs", raw_allocs),
        ("clone3 pidfd", raw_clone3),
        ("pipe 1 wake", pipe1),
        ("pipe 2 wakes", pipe2w),
        ("pipe1 touch16", pipe1_touch16),
        ("nowrite hup", nowrite_hup),
        ("nowrite hold", nowrite_hold),
        ("brood ()", brood_unit),
        ("brood u64", brood_u64),
        ("brood forkserver", brood_server),
    ];
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(n, _)| {
            (*n == "raw" && std::env::args().nth(3).is_none())
                || only.as_deref().is_none_or(|o| n.contains(o))
        })
        .collect();
    if std::env::var_os("FORKPROBE_SERVER").is_some() {
        // As in the bench's start table: a forkserver client exists.
        let mut p = brood::Process::builder()
            .start_method(brood::StartMethod::ForkServer)
            .target(|| ());
        p.start().unwrap();
        p.join().unwrap();
    }
    for (_, f) in &rows {
        for _ in 0..200 {
            f();
        }
    }
    let mut times: Vec<Vec<f64>> = (0..rows.len())
        .map(|_| Vec::with_capacity(n + 10))
        .collect();
    let mut cflt = vec![0i64; rows.len()];
    let mut pflt = vec![0i64; rows.len()];
    let mut allocs = vec![0u64; rows.len()];
    for _round in 0..10 {
        for (i, (_, f)) in rows.iter().enumerate() {
            let c0 = rusage(libc::RUSAGE_CHILDREN);
            let p0 = rusage(libc::RUSAGE_SELF);
            let a0 = ALLOCS.load(Ordering::Relaxed);
            for _ in 0..n / 10 {
                let t = Instant::now();
                f();
                times[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
            cflt[i] += rusage(libc::RUSAGE_CHILDREN) - c0;
            allocs[i] += ALLOCS.load(Ordering::Relaxed) - a0;
            pflt[i] += rusage(libc::RUSAGE_SELF) - p0;
        }
    }
    let med = |t: &Vec<f64>, q: f64| {
        let mut t = t.clone();
        t.sort_by(f64::total_cmp);
        t[(t.len() as f64 * q) as usize]
    };
    let med0 = med(&times[0], 0.5);
    println!(
        "end of file before exit (nowrite rows): {}",
        HUPFIRST.load(std::sync::atomic::Ordering::Relaxed)
    );
    for (i, (name, _)) in rows.iter().enumerate() {
        let m = med(&times[i], 0.5);
        println!(
            "{name:16} median {m:7.1} us  p10 {:7.1}  ratio {:.2}x  child flt/cycle {:5.1}  parent flt/cycle {:5.2}  parent allocs/cycle {:4.1}",
            med(&times[i], 0.1),
            m / med0,
            cflt[i] as f64 / n as f64,
            pflt[i] as f64 / n as f64,
            allocs[i] as f64 / n as f64
        );
    }
}
