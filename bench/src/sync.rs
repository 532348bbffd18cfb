//! The "Shared memory and locks" table: brood's `sync` and `shm` against
//! the C floors (`bench/c/sync.c`, driven over its stdin like the pipes
//! table's socketpair) and, in `bench/python/sync.py`, Python's
//! `multiprocessing`. Five tests, each with its rows interleaved in rounds:
//!
//! - `lock`: uncontended acquire+release pairs in one process, [`LOCK_PAIRS`]
//!   per run, [`LOCK_RUNS`] runs; million pairs per second.
//! - `counter`: two forked children each add 1 to a shared `i64`
//!   [`COUNTER_N`] times, each increment under the lock. The children say
//!   they are ready and spin (with `sched_yield`) on a go flag; the time is
//!   from the parent raising the flag to the later child's last increment
//!   (`CLOCK_MONOTONIC`, read in each child); [`COUNTER_RUNS`] runs; ms.
//!   Run twice: as the scheduler places the processes (`counter`: on two
//!   CPUs they contend, and a contended lock sleeps and wakes in the
//!   kernel), then with the harness, its children and the C floor pinned
//!   to the last CPU (`counter-pinned`: the children take turns, and only a
//!   preemption inside the critical section makes the other one wait).
//! - `fill`: a fresh forked child takes an `Array<f64>`'s lock, copies
//!   its [`FILL_N`] elements (8 MB, already faulted in by the parent) from
//!   a source the parent built before the fork (as the Python and C rows
//!   do: every row copies the same 8 MB) and lets go; the child times that and nothing else (the start and the join are
//!   not counted); [`FILL_RUNS`] children; µs.
//! - `shm`: one write of the whole of a [`SHM_BYTES`] named segment
//!   (`shm_open`), by memcpy from a warm source segment or by memset;
//!   [`SHM_RUNS`] runs; GB/s (10^9 bytes written per second). Each brood
//!   row and its C floor are a pair: every round the pair gets one fresh
//!   segment, faulted in (untimed) here, and both write it in turn (the C
//!   driver maps it with every page in), copying from the same source
//!   segment, which of the two first alternating from round to round
//!   (`shm_order`). Both write the same physical pages from the same
//!   physical pages ([`ShmPairs`]), so the median of the per-pair ratios
//!   is the row's share of the floor (`shm-paired` lines; see
//!   `print_paired_shm`).
//! - `sem`: round trips between the parent and one child (started once)
//!   over two semaphores; each round trip timed, [`SEM_ITERS`] in
//!   [`SEM_ROUNDS`] rounds after [`SEM_WARMUP`]; µs. Run twice, as the
//!   counter: `sem` and `sem-pinned` (where the two take turns, and a round
//!   trip is the software path alone).
//!
//! - `create`: [`CREATE_N`] `Value<i64>`s and as many `Lock`s made and kept
//!   (the time of the making only; they are dropped after), [`CREATE_RUNS`]
//!   runs; ms.
//!
//! Every run is preceded, per row, by one untimed run (the warm-up). Prints
//! `sync<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n` per row: `lo`
//! and `hi` are the slowest and fastest run (the minimum and maximum), and
//! for `sem` the p10 and p90 of the round trips.

use std::cell::RefCell;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};

use std::process::{Child, ChildStdin, ChildStdout};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use brood::shm::{Array, SharedMemory, Value};
use brood::sync::{Lock, Semaphore};

use crate::{percentile, selected};

pub(crate) const LOCK_PAIRS: usize = 5_000_000;
pub(crate) const LOCK_RUNS: usize = 7;
pub(crate) const COUNTER_N: usize = 100_000;
pub(crate) const COUNTER_RUNS: usize = 15;
pub(crate) const FILL_N: usize = 1_000_000;
pub(crate) const FILL_RUNS: usize = 15;
pub(crate) const SHM_BYTES: usize = 100 << 20;
pub(crate) const SHM_RUNS: usize = 64;
pub(crate) const SEM_WARMUP: usize = 2_000;
pub(crate) const SEM_ITERS: usize = 20_000;
pub(crate) const SEM_ROUNDS: usize = 10;
pub(crate) const CREATE_N: usize = 10_000;
pub(crate) const CREATE_RUNS: usize = 7;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Test {
    Lock,
    Counter,
    /// The `Counter` rows again, everything pinned to one CPU.
    CounterPinned,
    Fill,
    Shm,
    Sem,
    /// The `Sem` rows again, everything pinned to one CPU.
    SemPinned,
    Create,
}

impl Test {
    const ALL: [Test; 8] = [
        Test::Lock,
        Test::Counter,
        Test::CounterPinned,
        Test::Fill,
        Test::Shm,
        Test::Sem,
        Test::SemPinned,
        Test::Create,
    ];

    fn key(self) -> &'static str {
        match self {
            Test::Lock => "lock",
            Test::Counter => "counter",
            Test::CounterPinned => "counter-pinned",
            Test::Fill => "fill",
            Test::Shm => "shm",
            Test::Sem => "sem",
            Test::SemPinned => "sem-pinned",
            Test::Create => "create",
        }
    }

    /// The test whose rows this one runs.
    fn rows(self) -> Test {
        match self {
            Test::CounterPinned => Test::Counter,
            Test::SemPinned => Test::Sem,
            t => t,
        }
    }

    fn pinned(self) -> bool {
        self != self.rows()
    }

    /// (warm-up count, count per run, runs): the count is pairs,
    /// increments per child, elements, bytes or round trips.
    fn schedule(self) -> (usize, usize, usize) {
        match self.rows() {
            Test::Lock => (LOCK_PAIRS / 5, LOCK_PAIRS, LOCK_RUNS),
            Test::Fill => (FILL_N, FILL_N, FILL_RUNS),
            Test::Shm => (SHM_BYTES, SHM_BYTES, SHM_RUNS),
            Test::Sem => (SEM_WARMUP, SEM_ITERS / SEM_ROUNDS, SEM_ROUNDS),
            Test::Create => (CREATE_N, CREATE_N, CREATE_RUNS),
            _ => (COUNTER_N, COUNTER_N, COUNTER_RUNS),
        }
    }
}

/// One row's measurement, set up and ready.
trait Runner {
    /// One run over `n` (see [`Test::schedule`]); its samples.
    fn run(&mut self, n: usize) -> Vec<f64>;
    /// Stops what the row started.
    fn finish(self: Box<Self>) {}
}

struct FnRunner<F>(F);

impl<F: FnMut(usize) -> Vec<f64>> Runner for FnRunner<F> {
    fn run(&mut self, n: usize) -> Vec<f64> {
        (self.0)(n)
    }
}

fn runner(f: impl FnMut(usize) -> Vec<f64> + 'static) -> Option<Box<dyn Runner>> {
    Some(Box::new(FnRunner(f)))
}

struct Row {
    test: Test,
    name: &'static str,
    start: fn(&mut Ctx) -> Option<Box<dyn Runner>>,
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row { test: Test::Lock, name: "brood Lock lock() guard", start: brood_lock_guard },
    Row { test: Test::Lock, name: "brood Lock acquire/release", start: brood_lock_acquire },
    Row { test: Test::Lock, name: C_FUTEX, start: |c| c.c_row("lock futex") },
    Row { test: Test::Lock, name: "C sem_t (pshared) sem_wait/sem_post", start: |c| c.c_row("lock sem") },
    Row { test: Test::Lock, name: C_ROBUST, start: |c| c.c_row("lock robust") },
    Row { test: Test::Lock, name: "C robust-list protocol inline (brood's fast path in C)", start: |c| c.c_row("lock robustlist") },
    Row { test: Test::Lock, name: "C glibc's robust-list protocol inline", start: |c| c.c_row("lock glibc") },
    Row { test: Test::Lock, name: "C futex word holding the owner's TID", start: |c| c.c_row("lock tid") },
    Row { test: Test::Counter, name: "brood Value<i64> lock() += 1", start: brood_counter },
    Row { test: Test::Counter, name: C_FUTEX, start: |c| c.c_row("counter futex") },
    Row { test: Test::Counter, name: C_ROBUST, start: |c| c.c_row("counter robust") },
    Row { test: Test::Fill, name: "brood Array<f64> lock() + copy_from_slice", start: brood_fill },
    Row { test: Test::Fill, name: "C futex mutex + memcpy", start: |c| c.c_row("fill") },
    Row { test: Test::Shm, name: "brood SharedMemory write_at (memcpy)", start: |c| c.brood_shm(false) },
    Row { test: Test::Shm, name: "brood SharedMemory as_mut_slice().fill (memset)", start: |c| c.brood_shm(true) },
    Row { test: Test::Shm, name: "C memcpy", start: |c| c.c_shm(false) },
    Row { test: Test::Shm, name: "C memset", start: |c| c.c_shm(true) },
    Row { test: Test::Sem, name: "brood Semaphore", start: brood_sem },
    Row { test: Test::Sem, name: "C sem_t (pshared)", start: |c| c.c_row("sem") },
    Row { test: Test::Create, name: "brood Value<i64>::new + Lock::new", start: brood_create },
];

const C_FUTEX: &str = "C futex mutex (3-state, shared)";
const C_ROBUST: &str = "C pthread mutex (pshared, robust, errorcheck)";

pub(crate) fn row_names() -> impl Iterator<Item = String> {
    ROWS.iter().map(|r| format!("{}: {}", r.test.key(), r.name))
}

// ----- helpers -----

/// `CLOCK_MONOTONIC` in ns: one clock for every process of the machine
/// (what Rust's `Instant`, C's and Python's monotonic clocks read).
fn mono_ns() -> i64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid for writes.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

/// Flags the harness shares with its children: a page of anonymous shared
/// memory, mapped once (forked children inherit it), never unmapped.
struct Flags {
    ready: AtomicU32,
    go: AtomicU32,
    stop: AtomicU32,
}

fn flags() -> &'static Flags {
    static FLAGS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *FLAGS.get_or_init(|| {
        // SAFETY: a fresh anonymous shared mapping; the kernel picks the
        // address and zero-fills it (all-zero atomics are valid).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        p as usize
    });
    // SAFETY: the page is mapped for the life of the process (and of its
    // forked children), aligned, and holds only atomics.
    unsafe { &*(addr as *const Flags) }
}

fn wait_until(cond: impl Fn() -> bool) {
    while !cond() {
        // SAFETY: sched_yield takes no arguments and cannot fail.
        unsafe { libc::sched_yield() };
    }
}

// ----- brood rows -----

fn brood_lock_guard(_: &mut Ctx) -> Option<Box<dyn Runner>> {
    let lock = Lock::new().unwrap();
    runner(move |n| {
        let lock = black_box(&lock);
        let t = Instant::now();
        for _ in 0..n {
            drop(lock.lock().unwrap());
        }
        vec![n as f64 / t.elapsed().as_secs_f64() / 1e6]
    })
}

fn brood_lock_acquire(_: &mut Ctx) -> Option<Box<dyn Runner>> {
    let lock = Lock::new().unwrap();
    runner(move |n| {
        let lock = black_box(&lock);
        let t = Instant::now();
        for _ in 0..n {
            lock.acquire(true, None).unwrap();
            lock.release().unwrap();
        }
        vec![n as f64 / t.elapsed().as_secs_f64() / 1e6]
    })
}

fn brood_counter(_: &mut Ctx) -> Option<Box<dyn Runner>> {
    let value = Value::new(0i64).unwrap();
    runner(move |n| {
        let f = flags();
        value.set(0).unwrap();
        f.ready.store(0, Ordering::SeqCst);
        f.go.store(0, Ordering::SeqCst);
        let mut kids: Vec<brood::Process<i64>> = (0..2)
            .map(|_| {
                let value = value.clone();
                brood::Process::fork(move || {
                    let f = flags();
                    f.ready.fetch_add(1, Ordering::SeqCst);
                    wait_until(|| f.go.load(Ordering::Acquire) != 0);
                    for _ in 0..n {
                        *value.lock().unwrap() += 1;
                    }
                    mono_ns()
                })
            })
            .collect();
        for k in &mut kids {
            k.start().unwrap();
        }
        wait_until(|| f.ready.load(Ordering::SeqCst) == 2);
        let t0 = mono_ns();
        f.go.store(1, Ordering::Release);
        let end = kids.iter_mut().map(|k| k.join().unwrap()).max().unwrap();
        assert_eq!(value.get().unwrap(), 2 * n as i64, "lost increments");
        vec![(end - t0) as f64 / 1e6]
    })
}

fn brood_fill(_: &mut Ctx) -> Option<Box<dyn Runner>> {
    let mut array: Option<Array<f64>> = None;
    let mut runs = 0;
    runner(move |n| {
        let array = array.get_or_insert_with(|| {
            let a = Array::<f64>::zeroed(n).unwrap();
            a.lock().unwrap().fill(0.0); // fault the pages in
            a
        });
        assert_eq!(array.len(), n);
        runs += 1;
        let x = runs as f64;
        // The source, built before the fork as Python's and C's are: every
        // row copies 8 MB from it.
        let src = vec![x; n];
        let child_array = array.clone();
        let mut child = brood::Process::fork(move || {
            let t = Instant::now();
            {
                let mut g = child_array.lock().unwrap();
                g.copy_from_slice(&src);
            }
            t.elapsed().as_secs_f64() * 1e6
        });
        child.start().unwrap();
        let us = child.join().unwrap();
        assert_eq!(
            array.get(n - 1).unwrap(),
            x,
            "the child did not fill the array"
        );
        vec![us]
    })
}

fn brood_create(_: &mut Ctx) -> Option<Box<dyn Runner>> {
    runner(move |n| {
        let t = Instant::now();
        let values: Vec<Value<i64>> = (0..n).map(|i| Value::new(i as i64).unwrap()).collect();
        let locks: Vec<Lock> = (0..n).map(|_| Lock::new().unwrap()).collect();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(values[n - 1].get().unwrap(), n as i64 - 1);
        assert!(locks[n - 1].try_lock().is_ok());
        drop((values, locks));
        vec![ms]
    })
}

struct BroodSem {
    ping: Semaphore,
    pong: Semaphore,
    child: brood::Process<()>,
}

impl Runner for BroodSem {
    fn run(&mut self, n: usize) -> Vec<f64> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.ping.release().unwrap();
            assert!(self.pong.acquire(true, None));
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times
    }
    fn finish(mut self: Box<Self>) {
        flags().stop.store(1, Ordering::SeqCst);
        self.ping.release().unwrap();
        self.child.join().unwrap();
    }
}

fn brood_sem(_: &mut Ctx) -> Option<Box<dyn Runner>> {
    let ping = Semaphore::new(0).unwrap();
    let pong = Semaphore::new(0).unwrap();
    flags().stop.store(0, Ordering::SeqCst);
    let (p, q) = (ping.clone(), pong.clone());
    let mut child = brood::Process::fork(move || {
        loop {
            assert!(p.acquire(true, None));
            if flags().stop.load(Ordering::SeqCst) != 0 {
                return;
            }
            q.release().unwrap();
        }
    });
    child.start().unwrap();
    Some(Box::new(BroodSem { ping, pong, child }))
}

/// What a pair of shm rows (a brood row and its C floor) write through:
/// one fresh segment per pair and round, which both rows of the pair write
/// in turn (the brood row here, the C driver through its own mapping of the
/// same pages), and, for memcpy, one warm source segment both copy from.
/// Both rows therefore write the same physical pages from the same
/// physical pages: the ratio compares the writes, not where each
/// process's pages landed (with a segment and a source of its own each, a
/// run's median ratio swung 0.83-1.14 from one run to the next on this
/// VM, with 16 or 64 pairs alike).
struct ShmPairs {
    /// The memcpy source: named (the C driver maps it), filled once.
    src: SharedMemory,
    /// The current segment, the pair it belongs to (0 memcpy, 1 memset)
    /// and which of the pair's two rows (bit 0 brood, bit 1 C) wrote it.
    seg: Option<(SharedMemory, usize, u8)>,
    /// Runs so far: each memset writes a byte of its own.
    runs: u8,
}

impl ShmPairs {
    fn new() -> ShmPairs {
        let src = SharedMemory::options()
            .named()
            .size(SHM_BYTES)
            .track(false)
            .create()
            .unwrap();
        // SAFETY: no other process or thread knows this segment yet.
        for (i, b) in unsafe { src.as_mut_slice() }.iter_mut().enumerate() {
            *b = (i * 31 + 7) as u8;
        }
        ShmPairs {
            src,
            seg: None,
            runs: 0,
        }
    }

    /// The segment the row `side` (0 brood, 1 C) of `pair` writes now: the
    /// current one if the other row of the pair wrote it and this one has
    /// not, else a fresh one (the last one goes first), named (Python's
    /// kind, `shm_open`), untracked, and faulted in here (untimed).
    fn segment(
        current: &mut Option<(SharedMemory, usize, u8)>,
        pair: usize,
        side: u8,
        n: usize,
    ) -> &SharedMemory {
        let bit = 1 << side;
        let reuse =
            matches!(current, Some((s, p, used)) if *p == pair && *used & bit == 0 && s.len() == n);
        if !reuse {
            if let Some((old, _, _)) = current.take() {
                old.unlink().unwrap();
            }
            let seg = SharedMemory::options()
                .named()
                .size(n)
                .track(false)
                .create()
                .unwrap();
            // SAFETY: the C driver maps it only while this process waits.
            unsafe { seg.as_mut_slice() }.fill(0); // warm: every page in
            *current = Some((seg, pair, 0));
        }
        let (seg, _, used) = current.as_mut().unwrap();
        *used |= bit;
        seg
    }
}

impl Drop for ShmPairs {
    fn drop(&mut self) {
        if let Some((seg, _, _)) = self.seg.take() {
            let _ = seg.unlink();
        }
        let _ = self.src.unlink();
    }
}

// ----- the C floors -----

struct CDriver {
    child: Child,
    cmd: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl CDriver {
    /// `$BROOD_BENCH_SYNC`, else `sync` in the directory above this
    /// executable's (where `bench/run` builds it: `bench/target/`).
    fn start() -> Option<CDriver> {
        let (child, cmd, out) = crate::start_c_driver("BROOD_BENCH_SYNC", "sync")?;
        Some(CDriver { child, cmd, out })
    }

    fn ask(&mut self, command: &str) -> Vec<f64> {
        self.say(command)
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    }

    fn say(&mut self, command: &str) -> String {
        writeln!(self.cmd, "{command}").unwrap();
        self.cmd.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "bench/c/sync stopped answering ({command})"
        );
        line
    }

    fn finish(mut self) {
        writeln!(self.cmd, "exit").unwrap();
        drop(self.cmd);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "bench/c/sync: {status}");
    }
}

struct CRow {
    driver: Rc<RefCell<CDriver>>,
    command: &'static str,
}

impl Runner for CRow {
    fn run(&mut self, n: usize) -> Vec<f64> {
        self.driver
            .borrow_mut()
            .ask(&format!("{} {n}", self.command))
    }
}

/// A C shm row: the C driver writes the segment the pair shares.
struct CShm {
    driver: Rc<RefCell<CDriver>>,
    pairs: Rc<RefCell<ShmPairs>>,
    memset: bool,
}

impl Runner for CShm {
    fn run(&mut self, n: usize) -> Vec<f64> {
        let mut p = self.pairs.borrow_mut();
        p.runs = p.runs.wrapping_add(1);
        let (byte, src) = (p.runs, p.src.name().unwrap().to_string());
        let p = &mut *p;
        let seg = ShmPairs::segment(&mut p.seg, usize::from(self.memset), 1, n);
        let command = if self.memset {
            format!("shmat memset {} {byte} {n}", seg.name().unwrap())
        } else {
            format!("shmat memcpy {} {src} {n}", seg.name().unwrap())
        };
        let rate = self.driver.borrow_mut().ask(&command);
        let mut last = [0u8];
        seg.read_at(n - 1, &mut last).unwrap();
        let src_last = {
            let mut b = [0u8];
            p.src.read_at(n - 1, &mut b).unwrap();
            b[0]
        };
        assert_eq!(last[0], if self.memset { byte } else { src_last });
        rate
    }
}

/// What the rows of one table run share: the C driver (one process for
/// every C row) and the shm rows' segments.
#[derive(Default)]
struct Ctx {
    driver: Option<Option<Rc<RefCell<CDriver>>>>,
    shm: Option<Rc<RefCell<ShmPairs>>>,
}

impl Ctx {
    /// The C driver, started on first use.
    fn driver(&mut self) -> Option<Rc<RefCell<CDriver>>> {
        self.driver
            .get_or_insert_with(|| CDriver::start().map(|d| Rc::new(RefCell::new(d))))
            .clone()
    }

    fn c_row(&mut self, command: &'static str) -> Option<Box<dyn Runner>> {
        let driver = self.driver()?;
        Some(Box::new(CRow { driver, command }))
    }

    fn shm_pairs(&mut self) -> Rc<RefCell<ShmPairs>> {
        self.shm
            .get_or_insert_with(|| Rc::new(RefCell::new(ShmPairs::new())))
            .clone()
    }

    fn c_shm(&mut self, memset: bool) -> Option<Box<dyn Runner>> {
        let driver = self.driver()?;
        let pairs = self.shm_pairs();
        Some(Box::new(CShm {
            driver,
            pairs,
            memset,
        }))
    }

    fn brood_shm(&mut self, memset: bool) -> Option<Box<dyn Runner>> {
        let pairs = self.shm_pairs();
        runner(move |n| {
            let mut p = pairs.borrow_mut();
            p.runs = p.runs.wrapping_add(1);
            let byte = p.runs;
            let p = &mut *p;
            let seg = ShmPairs::segment(&mut p.seg, usize::from(memset), 0, n);
            // SAFETY: the source is written only before the first run.
            let src = unsafe { p.src.as_slice() };
            let t = Instant::now();
            if memset {
                // SAFETY: the C driver maps the segment only while this
                // process waits for its answer.
                unsafe { seg.as_mut_slice() }.fill(byte);
            } else {
                seg.write_at(0, &src[..n]).unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let mut last = [0u8];
            seg.read_at(n - 1, &mut last).unwrap();
            assert_eq!(last[0], if memset { byte } else { src[n - 1] });
            vec![n as f64 / secs / 1e9]
        })
    }
}

// ----- the schedule -----

/// The shm rows that each have a C floor, as (brood row, C row).
const SHM_PAIRS: &[(&str, &str)] = &[
    ("brood SharedMemory write_at (memcpy)", "C memcpy"),
    (
        "brood SharedMemory as_mut_slice().fill (memset)",
        "C memset",
    ),
];

/// The order of the shm rows in `round`: each pair of [`SHM_PAIRS`] back
/// to back, brood first in even rounds and the C floor first in odd ones;
/// the rows of no pair after them.
fn shm_order(rows: &[&Row], round: usize) -> Vec<usize> {
    let find = |name: &str| rows.iter().position(|r| r.name == name);
    let mut order = Vec::new();
    for &(brood, floor) in SHM_PAIRS {
        let mut pair: Vec<usize> = [find(brood), find(floor)].into_iter().flatten().collect();
        if round % 2 == 1 {
            pair.reverse();
        }
        order.extend(pair);
    }
    let rest: Vec<usize> = (0..rows.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    order
}

/// For each brood shm row and its C floor: the median, lowest and highest
/// of the per-round ratios (brood's rate / C's), each from one pair of runs
/// made back to back in the same round into the pair's one fresh segment
/// ([`ShmPairs`]), the pair's order alternating from round to round
/// ([`shm_order`]). Two independent medians of 100 MiB writes swing with
/// where each process's pages land and with load from elsewhere on the
/// machine; a pair sees the same pages at the same moment, and its ratio
/// compares the writes. Printed as `sync<TAB>shm-paired<TAB>brood row<TAB>
/// median<TAB>lo<TAB>hi<TAB>pairs` (ratios, not GB/s).
fn print_paired_shm(rows: &[&Row], samples: &[Vec<f64>]) {
    let find = |name: &str| rows.iter().position(|r| r.name == name);
    for &(brood, floor) in SHM_PAIRS {
        let (Some(b), Some(c)) = (find(brood), find(floor)) else {
            continue;
        };
        let mut ratios: Vec<f64> = samples[b]
            .iter()
            .zip(&samples[c])
            .map(|(b, c)| b / c)
            .collect();
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "sync\tshm-paired\t{brood}\t{:.4}\t{:.4}\t{:.4}\t{}",
            percentile(&ratios, 0.5),
            ratios[0],
            ratios[ratios.len() - 1],
            ratios.len()
        );
    }
}

/// Allows this process (and the children it forks from now on) only
/// `cpus`; returns the CPUs it was allowed before.
fn set_cpus(cpus: &[usize]) -> Vec<usize> {
    // SAFETY: all-zero cpu_set_t values are valid empty sets; the calls
    // read and write at most their size.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &old))
            .collect()
    }
}

pub(crate) fn run(only: Option<&str>) {
    let mut ctx = Ctx::default();
    // SAFETY: sysconf only reads a system value.
    let last_cpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } - 1;
    for test in Test::ALL {
        let table = format!("sync {}", test.key());
        let rows: Vec<&Row> = ROWS
            .iter()
            .filter(|r| r.test == test.rows() && selected(only, &table, r.name))
            .collect();
        if rows.is_empty() || (test.pinned() && last_cpu < 1) {
            continue;
        }
        let mut unpin = None;
        if test.pinned() {
            // The C floor first (started now, it would take the pinned set
            // for all its CPUs), then this process; children inherit it.
            if rows.iter().any(|r| r.name.starts_with("C "))
                && let Some(d) = ctx.driver()
            {
                d.borrow_mut().say(&format!("pin {last_cpu}"));
            }
            unpin = Some(set_cpus(&[last_cpu as usize]));
        }
        let (rows, mut runners): (Vec<&Row>, Vec<Box<dyn Runner>>) = rows
            .into_iter()
            .filter_map(|r| Some((r, (r.start)(&mut ctx)?)))
            .unzip();
        let (warmup, n, runs) = test.schedule();
        for r in &mut runners {
            r.run(warmup);
        }
        let mut samples: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
        for round in 0..runs {
            // shm: every run maps and fills a fresh segment; each brood row
            // runs back to back with its C floor (a pair), and which of the
            // two gets its pages first alternates from round to round.
            let order: Vec<usize> = if test.rows() == Test::Shm {
                shm_order(&rows, round)
            } else {
                (0..runners.len()).collect()
            };
            for i in order {
                samples[i].extend(runners[i].run(n));
            }
        }
        for r in runners {
            r.finish();
        }
        if let Some(all) = unpin {
            set_cpus(&all);
            if let Some(Some(d)) = &ctx.driver {
                d.borrow_mut().say("pin -1");
            }
        }
        if test.rows() == Test::Shm {
            print_paired_shm(&rows, &samples);
        }
        for (row, mut s) in rows.iter().zip(samples) {
            s.sort_by(f64::total_cmp);
            let (lo, hi) = if test.rows() == Test::Sem {
                (percentile(&s, 0.1), percentile(&s, 0.9))
            } else {
                (s[0], s[s.len() - 1])
            };
            println!(
                "sync\t{}\t{}\t{:.4}\t{:.4}\t{:.4}\t{}",
                test.key(),
                row.name,
                percentile(&s, 0.5),
                lo,
                hi,
                s.len()
            );
        }
    }
    if let Some(Some(driver)) = ctx.driver.take() {
        match Rc::try_unwrap(driver) {
            Ok(d) => d.into_inner().finish(),
            Err(_) => unreachable!("every C row is finished"),
        }
    }
}
