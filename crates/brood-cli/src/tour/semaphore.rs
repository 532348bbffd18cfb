//! Semaphores and friends: the reference's `Semaphore(3)` letting at most
//! three tasks run at a time, `BoundedSemaphore`, `Event` and `Barrier`,
//! each shared by several processes.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use brood::shm::Array;
use brood::sync::{Barrier, BoundedSemaphore, Event, Semaphore};
use brood::{ErrorKind, Process, os};
use serde::{Deserialize, Serialize};

use super::kit::{self, BOUND, Guarded, explain, line, python};
use super::reference;

/// What a child hands back: its value, or the text of the error that
/// stopped it.
type Answer<T> = std::result::Result<T, String>;

/// An error's text, for an [`Answer`].
fn text(e: impl Display) -> String {
    e.to_string()
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the
/// machine, so times taken in different processes compare.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds from `t0` to `t` (both [`mono_ns`]).
fn ms_after(t0: u64, t: u64) -> f64 {
    (t as f64 - t0 as f64) / 1e6
}

/// How many units the semaphore has: at most this many tasks at a time.
const UNITS: u32 = 3;

/// How many tasks want to run.
const TASKS: usize = 6;

/// How long each task holds its unit.
const HOLD: Duration = Duration::from_millis(150);

/// What one task did, in its own process.
#[derive(Debug, Serialize, Deserialize)]
struct Slot {
    /// Its number, 0..TASKS.
    index: usize,
    /// Its pid.
    pid: i32,
    /// When it got a unit ([`mono_ns`]).
    start: u64,
    /// When it was done, just before giving the unit back.
    end: u64,
    /// How many tasks ran, itself included, right after it started
    /// (counted in shared memory).
    running: i32,
}

/// The reference's `rnewu`: waits for the go, takes a unit (waiting at
/// most [`BOUND`]), counts itself in `busy` (`[running, most]`), works for
/// [`HOLD`], and gives the unit back.
fn task((sem, go, busy, index): (Semaphore, Event, Array<i32>, usize)) -> Answer<Slot> {
    if !go.wait(Some(BOUND)) {
        return Err(format!("no go within {BOUND:?}"));
    }
    if !sem.acquire(true, Some(BOUND)) {
        return Err(format!("no unit of the semaphore within {BOUND:?}"));
    }
    let start = mono_ns();
    line("task", "执行任务.....执行完成");
    let running = {
        let mut b = busy.lock().map_err(text)?;
        b[0] += 1;
        b[1] = b[1].max(b[0]);
        b[0]
    };
    std::thread::sleep(HOLD);
    busy.lock().map_err(text)?[0] -= 1;
    let end = mono_ns();
    sem.release().map_err(text)?;
    Ok(Slot {
        index,
        pid: os::getpid().as_raw(),
        start,
        end,
        running,
    })
}

/// The most intervals `[start, end)` that overlap at any moment.
fn most_at_once(slots: &[Slot]) -> usize {
    let mut edges: Vec<(u64, i32)> = slots
        .iter()
        .flat_map(|s| [(s.start, 1), (s.end, -1)])
        .collect();
    // At equal times, an end comes before a start: touching is not overlapping.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// A row of the timeline: `#` where the task ran, `.` elsewhere.
fn bar(t0: u64, total_ms: f64, slot: &Slot) -> String {
    const COLUMNS: usize = 48;
    let column = |t: u64| {
        let f = ms_after(t0, t) / total_ms * COLUMNS as f64;
        (f.round().max(0.0) as usize).min(COLUMNS)
    };
    let (a, b) = (
        column(slot.start),
        column(slot.end).max(column(slot.start) + 1),
    );
    (0..COLUMNS)
        .map(|c| if c >= a && c < b { '#' } else { '.' })
        .collect()
}

/// The reference's `Semaphore(3)`, with six tasks started at once.
fn at_most_three() -> Result<()> {
    explain(
        "A semaphore is a counter that every process sees: acquire() takes one unit, and \
         waits while there is none; release() gives one back and wakes a waiter. \
         Semaphore(3) lets at most three tasks run at a time. (The reference starts and \
         joins its three tasks one after the other, so only one ever runs; here six \
         start together.) Each task notes when it got its unit and when it gave it back, \
         with one clock for all processes (CLOCK_MONOTONIC), and counts itself in a \
         shared Array while it runs.",
    );
    kit::reference("§7.4", reference::SEMAPHORE);
    kit::correction(
        "its loop calls p.start() then p.join() for each task in turn, so one task runs \
         at a time, and the semaphore never makes anyone wait: the example cannot show \
         what it is for. Below, six tasks start together and all are joined afterwards.",
    );
    python(
        "sem = Semaphore(3)                  # at most 3 tasks at a time\n\
         def rnewu(i):\n\
         \x20   sem.acquire()                   # -1, waits at 0\n\
         \x20   start = time.monotonic(); time.sleep(0.15); end = time.monotonic()\n\
         \x20   sem.release()                   # +1, wakes a waiter\n\
         ps = [Process(target=rnewu, args=(i,)) for i in range(6)]\n\
         for p in ps: p.start()\n\
         for p in ps: p.join()",
    );
    kit::rust(
        "let sem = Semaphore::new(3)?;                 // 最多允许3个任务同时执行\n\
         fn task((sem, ..): (Semaphore, ..)) {\n\
         \x20   sem.acquire(true, Some(BOUND));           // 每执行一次减少一个信号量\n\
         \x20   println!(\"执行任务.....执行完成\");   sleep(150 ms);\n\
         \x20   sem.release()?;                           // 执行完成后增加信号量\n\
         }\n\
         let mut ps: Vec<_> = (0..6)\n\
         \x20   .map(|i| Process::builder().target_with(task, (sem.clone(), ..)))\n\
         \x20   .collect();\n\
         for p in &mut ps { p.start()?; }              // all six start, then\n\
         for p in &mut ps { p.join()?; }               // all six are joined",
    );
    let sem = Semaphore::new(UNITS)?;
    let go = Event::new()?;
    let busy = Array::<i32>::zeroed(2)?;
    let mut tasks = Vec::new();
    for index in 0..TASKS {
        let mut p = Guarded(
            Process::builder()
                .name(format!("task-{index}"))
                .target_with(task, (sem.clone(), go.clone(), busy.clone(), index)),
        );
        kit::flush();
        p.start()?;
        tasks.push(p);
    }
    line(
        "parent",
        format!(
            "started {TASKS} tasks; sem.get_value() = {}; go!",
            sem.get_value()
        ),
    );
    let t0 = mono_ns();
    go.set();
    let mut slots = Vec::new();
    for p in &mut tasks {
        slots.push(p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?);
    }
    let total_ms = slots
        .iter()
        .map(|s| ms_after(t0, s.end))
        .fold(1.0, f64::max);
    println!("    timeline, 0 to {total_ms:.0} ms after the go (# = holding a unit):");
    println!(
        "    ((N running) = how many tasks held a unit just after this one took its own, \
         itself included,"
    );
    println!("     counted in a shared Array: never more than {UNITS})");
    for s in &slots {
        println!(
            "    task {} pid {:>7} |{}| start {:>6.1} ms  end {:>6.1} ms  ({} running)",
            s.index,
            s.pid,
            bar(t0, total_ms, s),
            ms_after(t0, s.start),
            ms_after(t0, s.end),
            s.running
        );
    }
    let most = most_at_once(&slots);
    let counted = busy.get(1)?;
    line(
        "parent",
        format!(
            "at most {most} tasks ran at the same time (the timeline), {counted} by the \
             shared count; the semaphore has {UNITS} units"
        ),
    );
    ensure!(
        most <= UNITS as usize && counted <= UNITS as i32,
        "more than {UNITS} tasks ran at once: {most} by the timeline, {counted} by the count"
    );
    ensure!(
        sem.get_value() == UNITS,
        "every unit should be back, sem.get_value() = {}",
        sem.get_value()
    );
    line(
        "parent",
        format!("every unit is back: sem.get_value() = {}", sem.get_value()),
    );
    println!();
    Ok(())
}

/// `Semaphore` vs `BoundedSemaphore` on a release too many.
fn bounded() -> Result<()> {
    explain(
        "A Semaphore has no upper limit: a release() without an acquire() quietly adds a \
         unit, and from then on one more task may run than was meant to. A \
         BoundedSemaphore refuses to go above its initial value: Python raises \
         ValueError, brood returns an InvalidState error, and the count stays put.",
    );
    python(
        "s = Semaphore(2); s.release(); s.get_value()     # 3\n\
         b = BoundedSemaphore(2); b.acquire(); b.release()\n\
         b.release()                                     # ValueError: Semaphore released too many times",
    );
    let plain = Semaphore::new(2)?;
    plain.release()?;
    line(
        "parent",
        format!(
            "Semaphore::new(2), release() -> Ok; get_value() = {}",
            plain.get_value()
        ),
    );
    ensure!(plain.get_value() == 3, "a plain semaphore counts past 2");
    let bounded = BoundedSemaphore::new(2)?;
    ensure!(bounded.acquire(true, Some(BOUND)), "a free unit");
    bounded.release()?;
    line(
        "parent",
        format!(
            "BoundedSemaphore::new(2): acquire(), release() -> Ok; get_value() = {}",
            bounded.get_value()
        ),
    );
    match bounded.release() {
        Ok(()) => bail!("a BoundedSemaphore at its bound accepted a release"),
        Err(e) => {
            line(
                "parent",
                format!(
                    "release() once more -> Err({:?}): {e}; get_value() = {}",
                    e.kind(),
                    bounded.get_value()
                ),
            );
            ensure!(
                e.kind() == ErrorKind::InvalidState && bounded.get_value() == 2,
                "expected InvalidState and the count left at 2"
            );
        }
    }
    println!();
    Ok(())
}

/// Waits for `event` (at most [`BOUND`]); returns its pid, whether the
/// event was set, and how long it waited, in ms.
fn waiter(event: Event) -> (i32, bool, f64) {
    let t0 = Instant::now();
    let set = event.wait(Some(BOUND));
    (
        os::getpid().as_raw(),
        set,
        t0.elapsed().as_secs_f64() * 1000.0,
    )
}

/// `Event`: three children wait, one `set` wakes them all.
fn event() -> Result<()> {
    explain(
        "An Event is a flag every process sees: wait() blocks until it is set (or the \
         timeout runs out, then it returns False); set() wakes every waiter at once; \
         clear() lowers it again.",
    );
    python(
        "e = Event()\n\
         e.wait(0.05)                        # False: nobody set it\n\
         for i in range(3): Process(target=e.wait, args=(10,)).start()\n\
         time.sleep(0.1); e.set()            # all three wake",
    );
    let e = Event::new()?;
    let t0 = Instant::now();
    let early = e.wait(Some(Duration::from_millis(50)));
    line(
        "parent",
        format!(
            "e.wait(50 ms) -> {early} after {:.0} ms: not set",
            t0.elapsed().as_secs_f64() * 1000.0
        ),
    );
    ensure!(!early, "nobody set the event yet");
    let mut waiters = Vec::new();
    for i in 0..3 {
        let mut p = Guarded(
            Process::builder()
                .name(format!("waiter-{i}"))
                .target_with(waiter, e.clone()),
        );
        kit::flush();
        p.start()?;
        waiters.push(p);
    }
    std::thread::sleep(Duration::from_millis(100));
    e.set();
    line("parent", "three waiters started; 100 ms later: e.set()");
    for p in &mut waiters {
        let (pid, set, waited) = p.join_timeout(BOUND)?;
        line(
            "parent",
            format!("waiter {pid}: e.wait(10 s) -> {set} after {waited:.0} ms"),
        );
        ensure!(set, "waiter {pid} was not woken by set()");
    }
    let before = e.is_set();
    e.clear();
    line(
        "parent",
        format!("is_set() = {before}; e.clear(); is_set() = {}", e.is_set()),
    );
    ensure!(before && !e.is_set(), "set, then cleared");
    println!();
    Ok(())
}

/// What one party of the barrier saw.
#[derive(Debug, Serialize, Deserialize)]
struct Party {
    /// Its pid.
    pid: i32,
    /// How long it worked before waiting, in ms.
    delay: u64,
    /// When it reached the barrier ([`mono_ns`]).
    arrived: u64,
    /// The index `wait` returned.
    index: usize,
    /// When `wait` returned.
    left: u64,
}

/// Works for `delay` ms, then waits at the barrier (at most [`BOUND`]).
fn party((barrier, delay): (Barrier, u64)) -> Answer<Party> {
    std::thread::sleep(Duration::from_millis(delay));
    let arrived = mono_ns();
    let index = barrier.wait(Some(BOUND)).map_err(text)?;
    Ok(Party {
        pid: os::getpid().as_raw(),
        delay,
        arrived,
        index,
        left: mono_ns(),
    })
}

/// `Barrier(4)`: nobody goes on until all four arrived; each gets an index.
fn barrier() -> Result<()> {
    explain(
        "A Barrier for n parties holds each process that calls wait() until n of them \
         wait; then all go on together, and each gets its own index, 0 to n - 1, in the \
         order they arrived. A timeout breaks it for everyone (BrokenBarrierError).",
    );
    python(
        "b = Barrier(4)\n\
         def party(delay): time.sleep(delay); i = b.wait(10)   # i: 0, 1, 2 or 3\n\
         b2 = Barrier(2); b2.wait(0.05)      # alone: BrokenBarrierError",
    );
    let delays = [90u64, 30, 60, 0];
    let b = Barrier::new(delays.len() as u32)?;
    let t0 = mono_ns();
    let mut parties = Vec::new();
    for (i, delay) in delays.into_iter().enumerate() {
        let mut p = Guarded(
            Process::builder()
                .name(format!("party-{i}"))
                .target_with(party, (b.clone(), delay)),
        );
        kit::flush();
        p.start()?;
        parties.push(p);
    }
    let mut seen = Vec::new();
    for p in &mut parties {
        seen.push(p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?);
    }
    seen.sort_by_key(|p| p.arrived);
    let last = seen.iter().map(|p| p.arrived).max().unwrap_or(t0);
    for p in &seen {
        line(
            "parent",
            format!(
                "party {} (works {:>2} ms): arrived at {:>5.1} ms, went on at {:>5.1} ms, \
                 wait() -> index {}",
                p.pid,
                p.delay,
                ms_after(t0, p.arrived),
                ms_after(t0, p.left),
                p.index
            ),
        );
    }
    let indices: BTreeSet<usize> = seen.iter().map(|p| p.index).collect();
    ensure!(
        indices == (0..delays.len()).collect(),
        "each party should get its own index 0..{}, got {indices:?}",
        delays.len()
    );
    ensure!(
        seen.iter().all(|p| p.left >= last),
        "a party went on before the last one arrived"
    );
    let in_order = seen.iter().enumerate().all(|(i, p)| p.index == i);
    line(
        "parent",
        format!(
            "indices 0..4, one each; nobody went on before the last arrived ({:.1} ms); \
             index = order of arrival: {in_order}",
            ms_after(t0, last)
        ),
    );
    let lonely = Barrier::new(2)?;
    match lonely.wait(Some(Duration::from_millis(50))) {
        Ok(i) => bail!("a barrier for 2 let one party through alone (index {i})"),
        Err(e) => {
            line(
                "parent",
                format!(
                    "Barrier::new(2), one party waits 50 ms -> Err({:?}): {e}; broken() = {}",
                    e.kind(),
                    lonely.broken()
                ),
            );
            ensure!(
                e.kind() == ErrorKind::BrokenBarrier && lonely.broken(),
                "a timeout should break the barrier"
            );
        }
    }
    lonely.reset();
    line("parent", format!("reset(): broken() = {}", lonely.broken()));
    Ok(())
}

/// The reference's Semaphore example, then BoundedSemaphore, Event and
/// Barrier.
pub(crate) fn run() -> Result<()> {
    at_most_three()?;
    bounded()?;
    event()?;
    barrier()?;
    ensure!(
        brood::active_children().is_empty(),
        "every child should be joined"
    );
    Ok(())
}
