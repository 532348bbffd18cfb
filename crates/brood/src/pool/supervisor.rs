//! The supervisor: the one thread that owns the pool's workers. It starts
//! them, sends them units, reads their results, notices deaths, reaps and
//! replaces, and ends them. See `README.md` for the invariants it keeps.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::{self, Connection, Waitable};
use crate::error::{Error, ErrorKind, Result};
use crate::os::{self, ExitStatus, Pid};
use crate::process::Process;
use crate::shm::RawValue;
use crate::shm::spsc::Spsc;
use crate::start_method::StartMethod;

use super::job::{ItemList, Job, UnitOutcome};
use super::limits::{RetryOn, RetryPolicy, UnitLimits};
use super::worker::{
    self, Boot, FUNC_LIMITS, FUNC_SOFT_LIMIT, InitBlob, Reader, SEQ_INIT_FAILED, UNIT_FDS,
};

/// Unacknowledged bytes a worker may hold (invariant 3).
const MAX_IN_FLIGHT_BYTES: usize = 64 << 10;
/// Most units a fast worker may hold.
const MAX_WINDOW: usize = 128;
/// How much queued work a worker should hold, in time.
const TARGET_QUEUED: Duration = Duration::from_micros(500);
/// How long a worker may take to leave after the quit frame.
const QUIT_GRACE: Duration = Duration::from_secs(5);

/// A chunk of items for one function: what a worker holds at a time.
pub(crate) struct Unit {
    pub(crate) job: Arc<Job>,
    pub(crate) index: usize,
    /// The encoded function reference (`worker::encode_func`).
    pub(crate) func: Arc<[u8]>,
    /// `n` items, each `[len u32][codec bytes]`.
    pub(crate) items: Vec<u8>,
    pub(crate) n: u32,
    /// Time limits and retry policy (the task's, else the pool's).
    pub(crate) limits: UnitLimits,
    /// A future's unit: it goes to a worker only if its job is not
    /// cancelled (`Job::claim`).
    pub(crate) claim: bool,
    /// Which attempt this is (1 unless retried).
    pub(crate) attempts: u32,
    /// The fds its items hold (empty, without an allocation, on the fast
    /// path). The parent keeps them until the unit is dropped (its outcome
    /// delivered, or cancelled): a unit requeued after a worker's death
    /// sends them again.
    pub(crate) fds: UnitFds,
}

/// The fds a unit's items hold, and how many belong to each item.
#[derive(Default)]
pub(crate) struct UnitFds {
    /// Per item, how many of `fds` it takes, in order; empty when no item
    /// holds any.
    pub(crate) counts: Vec<u8>,
    /// The parent's duplicates, in item order.
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
}

impl UnitFds {
    /// Bytes of the `[UNIT_FDS][n u32][n × u8]` header (0: none).
    fn wire_len(&self) -> usize {
        if self.counts.is_empty() {
            0
        } else {
            5 + self.counts.len()
        }
    }
}

impl Unit {
    /// A unit on its first attempt.
    pub(crate) fn new(
        job: Arc<Job>,
        index: usize,
        func: Arc<[u8]>,
        items: Vec<u8>,
        n: u32,
        limits: UnitLimits,
    ) -> Unit {
        Unit {
            job,
            index,
            func,
            items,
            n,
            limits,
            claim: false,
            attempts: 1,
            fds: UnitFds::default(),
        }
    }

    fn wire_len(&self) -> usize {
        let limits = if self.limits.on_wire() { 9 } else { 0 };
        8 + limits + self.fds.wire_len() + self.func.len() + 4 + self.items.len()
    }

    /// Closes the parent's duplicates of the fds its items hold, just
    /// before its one outcome is delivered: whoever sees the outcome sees
    /// them closed. (Never before: a unit that is retried or requeued
    /// sends them again.)
    fn close_fds(&mut self) {
        if !self.fds.fds.is_empty() {
            drop(std::mem::take(&mut self.fds.fds));
        }
    }

    fn hard_limit(&self) -> Option<Duration> {
        self.limits.hard
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.limits.retry.as_deref().copied()
    }

    fn fail(mut self, err: Error) {
        self.close_fds();
        let err = if self.attempts > 1 {
            err.with_note(format!("after {} attempts", self.attempts))
        } else {
            err
        };
        self.job
            .deliver(self.index, UnitOutcome::Failed(err), self.attempts);
    }
}

/// The coarse clock (`crate::time::coarse_ns`): one clock for every
/// process on the machine, so a worker's "began at" is comparable with the
/// supervisor's "now", and one the worker reads per unit for a few
/// nanoseconds (the fine clock costs ~60 ns on a VM: 4% of a trivial
/// task). It moves once per kernel tick; [`coarse_tick`] says how far it
/// may lag.
pub(crate) use crate::time::coarse_ns as monotonic_ns;

/// The coarse clock's resolution (one kernel tick, 1 to 10 ms).
fn coarse_tick() -> Duration {
    static TICK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let t = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
            .clamp(Duration::from_millis(1), Duration::from_millis(10))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Taking work.
    Running,
    /// `close` was called: finish what was submitted, then end the workers.
    Closing,
    /// `terminate` (or drop) was called: kill the workers now.
    Terminating,
    /// The supervisor has ended.
    Done,
}

/// What user threads and the supervisor share.
pub(crate) struct State {
    pub(crate) pending: VecDeque<Unit>,
    pub(crate) phase: Phase,
    /// The supervisor sleeps in `poll`: a submitter must write a wake byte.
    sleeping: bool,
    waker: Connection,
    /// The workers' pids, for `Pool::worker_pids`.
    pub(crate) pids: Vec<Pid>,
    /// Why the pool stopped taking work, if it broke (an initializer failed).
    pub(crate) broken: Option<String>,
    /// `shutdown(cancel_futures)` calls so far, and how many of them the
    /// supervisor has carried out (cancelled every queued unit that no
    /// worker had been handed).
    cancel_requests: u64,
    cancels_done: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled when a cancel request is carried out, or the supervisor
    /// ends.
    acked: Condvar,
    /// Items buffers of large units whose outcome is in, for the next
    /// large `map` to encode into: memory already faulted in, rather than
    /// fresh pages each call (see `recycle`).
    spare: Mutex<Spare>,
}

/// Recycled items buffers and their total capacity.
#[derive(Default)]
pub(crate) struct Spare {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// Only buffers of at least this capacity are recycled (smaller ones cost
/// `malloc` little, and a unit of one small task pays no lock).
const SPARE_MIN: usize = 64 << 10;
/// At most this much capacity is kept in recycled buffers per pool.
const SPARE_BYTES: usize = 16 << 20;

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a finished unit's items buffer for a later one, if it is
    /// large and the pool keeps less than `SPARE_BYTES` already.
    pub(crate) fn recycle(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap < SPARE_MIN {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.bytes + cap <= SPARE_BYTES {
            buf.clear();
            spare.bytes += cap;
            spare.buffers.push(buf);
        }
    }

    /// An empty buffer for a unit's items with room for `want` bytes: a
    /// recycled one if `large` (a chunk of many items) and there is one,
    /// else a new one.
    pub(crate) fn items_buffer(&self, want: usize, large: bool) -> Vec<u8> {
        if large || want >= SPARE_MIN {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut buf) = spare.buffers.pop() {
                spare.bytes -= buf.capacity();
                drop(spare);
                buf.reserve(want);
                return buf;
            }
        }
        Vec::with_capacity(want)
    }

    /// Queues units for the workers; an error once the pool stopped taking
    /// work.
    pub(crate) fn submit(&self, units: Vec<Unit>) -> Result<()> {
        self.submit_iter(units)
    }

    /// [`submit`](Shared::submit) of one unit (no `Vec`: `apply_async`).
    pub(crate) fn submit_one(&self, unit: Unit) -> Result<()> {
        self.submit_iter(std::iter::once(unit))
    }

    fn submit_iter(&self, units: impl IntoIterator<Item = Unit>) -> Result<()> {
        let mut st = self.lock();
        st.accepting()?;
        st.pending.extend(units);
        st.wake();
        Ok(())
    }

    /// Has the supervisor cancel every queued unit (`shutdown` with
    /// `cancel_futures`); returns once it did, or once it has ended.
    pub(crate) fn cancel_queued(&self) {
        let mut st = self.lock();
        if st.phase == Phase::Done {
            return;
        }
        st.cancel_requests += 1;
        let want = st.cancel_requests;
        st.wake();
        while st.cancels_done < want && st.phase != Phase::Done {
            st = self.acked.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Moves the pool to `phase` (never backwards) and wakes the supervisor.
    pub(crate) fn set_phase(&self, phase: Phase) {
        let mut st = self.lock();
        let rank = |p: &Phase| match p {
            Phase::Running => 0,
            Phase::Closing => 1,
            Phase::Terminating => 2,
            Phase::Done => 3,
        };
        if rank(&phase) > rank(&st.phase) {
            st.phase = phase;
        }
        st.wake();
    }
}

/// The error for work given to a pool that no longer runs.
pub(crate) fn not_running() -> Error {
    Error::simple(
        ErrorKind::PoolClosed,
        "the pool is not running (it was closed or terminated)",
    )
}

impl State {
    /// Whether the pool takes new work: running and not broken.
    pub(crate) fn accepting(&self) -> Result<()> {
        if self.phase != Phase::Running {
            return Err(not_running());
        }
        if let Some(why) = &self.broken {
            return Err(Error::simple(
                ErrorKind::PoolClosed,
                format!("the pool is broken: {why}"),
            ));
        }
        Ok(())
    }

    fn wake(&mut self) {
        if self.sleeping {
            self.sleeping = false;
            let _ = self.waker.send_bytes(&[]);
        }
    }
}

/// What every worker is made from.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: Option<StartMethod>,
    pub(crate) init: Option<InitBlob>,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) sigint: bool,
    /// Status page, `max_rss`, cgroups (issue 13, `status.rs`).
    pub(crate) board: super::status::Board,
    /// A forked call's closure (`forked.rs`): its workers are forked with
    /// it. `None` for a pool's own workers.
    pub(crate) closure: Option<super::forked::JobFn>,
}

struct Worker {
    process: Process<()>,
    /// `seq + 1` of the unit it began last (see `Boot::started`).
    started: RawValue<u64>,
    /// When it began that unit, if the unit has time limits (see
    /// `Boot::began_at`).
    began_at: RawValue<u64>,
    /// The pool killed it for a hard time limit: the unit's seq, how long
    /// it had run, and the limit.
    killed: Option<(u64, Duration, Duration)>,
    conn: Connection,
    name: Arc<str>,
    pid: Pid,
    /// Units sent, in order, with their sequence numbers and send times.
    outstanding: VecDeque<(u64, Unit, Instant)>,
    bytes_in_flight: usize,
    /// The fds its outstanding units hold (sent to it or being run).
    fds_in_flight: usize,
    units_sent: usize,
    /// The quit frame went out: it takes no more work.
    quitting: bool,
    /// Its results (`worker::send_result`): the consumer's end.
    results: Spsc,
    /// Its pidfd fired or its connection ended.
    dead: bool,
    /// Mean time per unit, for the window.
    service: Duration,
    last_result: Instant,
    window: usize,
    /// Its row on the status page, memory probe, cgroup (issue 13).
    slot: super::status::WorkerSlot,
}

impl Worker {
    fn can_take(&self, bytes: usize, max_tasks: Option<usize>) -> bool {
        !self.dead
            && !self.quitting
            && self.outstanding.len() < self.window
            && (self.bytes_in_flight == 0 || self.bytes_in_flight + bytes <= MAX_IN_FLIGHT_BYTES)
            && max_tasks.is_none_or(|m| self.units_sent < m)
    }
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    config: Config,
    wake_rx: Connection,
    sigint: Option<os::SigintPipe>,
    workers: Vec<Worker>,
    queue: VecDeque<Unit>,
    next_seq: u64,
    next_worker: usize,
    /// The last failure to start a worker, and when to try again.
    start_failure: Option<(Error, Instant)>,
    /// The initializer failed: no more workers are started.
    broken: bool,
    /// Workers that died before they began any unit, since the last result
    /// from any worker: too many means they cannot start (an initializer
    /// that crashes the process), and the pool breaks instead of looping.
    boot_deaths: usize,
    /// Units waiting out a retry's backoff, with when they may go again.
    delayed: Vec<(Instant, Unit)>,
    /// The backoff jitter's generator (xorshift).
    rng: u64,
    /// Batch buffers kept from one `dispatch` to the next (at most one per
    /// worker, each at most `KEEP_BATCH` bytes), so that a large unit is
    /// not copied into freshly mapped memory each time.
    spare_batches: Vec<Vec<u8>>,
}

/// The largest batch buffer `dispatch` keeps for the next one.
const KEEP_BATCH: usize = 4 << 20;

impl Waitable for os::SigintPipe {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.reader.as_fd())
    }
}

/// Makes the shared state and a supervisor that has started its first
/// workers; the caller runs it on its own thread.
pub(crate) fn new(config: Config) -> Result<(Arc<Shared>, Supervisor)> {
    let (wake_rx, waker) = connection::pipe(false)?;
    let sigint = if config.sigint {
        Some(os::subscribe_sigint().map_err(|e| Error::os_error("cannot route SIGINT", e))?)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            pending: VecDeque::new(),
            phase: Phase::Running,
            sleeping: false,
            waker,
            pids: Vec::new(),
            broken: None,
            cancel_requests: 0,
            cancels_done: 0,
        }),
        acked: Condvar::new(),
        spare: Mutex::default(),
    });
    let sup = Supervisor {
        shared: shared.clone(),
        config,
        wake_rx,
        sigint,
        workers: Vec::new(),
        queue: VecDeque::new(),
        next_seq: 0,
        next_worker: 1,
        start_failure: None,
        broken: false,
        boot_deaths: 0,
        delayed: Vec::new(),
        rng: (u64::from(crate::os::pid::current().as_raw() as u32) << 32) ^ monotonic_ns() | 1,
        spare_batches: Vec::new(),
    };
    Ok((shared, sup))
}

impl Supervisor {
    /// Starts the first workers (on the supervisor's thread, so that their
    /// parent-death signal is tied to it); the first failure is returned.
    pub(crate) fn start_workers(&mut self) -> Result<()> {
        while self.workers.len() < self.config.processes {
            let w = self.start_worker()?;
            self.workers.push(w);
        }
        self.publish_pids();
        Ok(())
    }

    fn start_worker(&mut self) -> Result<Worker> {
        let (mine, theirs) = connection::pipe(true)?;
        let mut mine = mine;
        mine.set_max_message(crate::codec::DEFAULT_MAX_FRAME);
        // A forked call's workers are told apart (`forked.rs`).
        let kind = match self.config.closure {
            Some(_) => "ForkedWorker",
            None => "PoolWorker",
        };
        let name: Arc<str> = format!("{kind}-{}", self.next_worker).into();
        self.next_worker += 1;
        let started = RawValue::new(0u64)?;
        let began_at = RawValue::new(0u64)?;
        let results = Spsc::new(worker::RESULT_RING_BYTES)?;
        let boot = Boot {
            results: results.handle(),
            started: started.clone(),
            began_at: began_at.clone(),
            conn: theirs,
            exe: crate::launch::exe_identity(),
            init: self.config.init.clone(),
            ignore_sigint: self.config.sigint,
        };
        let mut builder = Process::builder().name(&*name).daemon(true);
        if let Some(m) = self.config.method {
            builder = builder.start_method(m);
        }
        let mut process = match &self.config.closure {
            // A forked call's short-lived worker (`forked.rs`).
            Some(f) => super::forked::fork_worker(builder, f.clone(), boot),
            None => builder.target_with(worker::worker_main, boot),
        };
        process.start()?;
        let pid = process.pid().expect("a started process has a pid");
        // Issue 13: a row on the status page, its cgroup (which may fail).
        let slot = match self.config.board.attach(pid) {
            Ok(slot) => slot,
            Err(e) => {
                let _ = process.kill();
                let _ = reap(&mut process);
                return Err(e);
            }
        };
        Ok(Worker {
            process,
            started,
            began_at,
            killed: None,
            conn: mine,
            name,
            pid,
            outstanding: VecDeque::new(),
            bytes_in_flight: 0,
            fds_in_flight: 0,
            units_sent: 0,
            quitting: false,
            results,
            dead: false,
            service: Duration::from_millis(1),
            last_result: Instant::now(),
            window: 2,
            slot,
        })
    }

    fn publish_pids(&self) {
        let pids = self
            .workers
            .iter()
            .filter(|w| !w.dead)
            .map(|w| w.pid)
            .collect();
        self.shared.lock().pids = pids;
    }

    /// The supervisor's loop; returns when the pool is done.
    pub(crate) fn run(mut self) {
        // What the last `poll` reported readable: the wake connection and
        // the SIGINT pipe are read only then (each read is a syscall).
        let (mut woken, mut signalled) = (false, self.sigint.is_some());
        loop {
            let (phase, cancel) = {
                let mut st = self.shared.lock();
                st.sleeping = false;
                self.queue.extend(st.pending.drain(..));
                let cancel = (st.cancels_done < st.cancel_requests).then_some(st.cancel_requests);
                (st.phase.clone(), cancel)
            };
            if std::mem::take(&mut woken) {
                self.drain_wake();
            }
            if std::mem::take(&mut signalled)
                && let Some(sig) = &self.sigint
                && sig.drain()
            {
                self.interrupt();
                return;
            }
            if phase == Phase::Terminating {
                self.fail_everything(|| {
                    Error::simple(
                        ErrorKind::PoolClosed,
                        "the pool was terminated before this task ran to the end",
                    )
                });
                return;
            }
            if let Some(request) = cancel {
                self.cancel_queued();
                self.shared.lock().cancels_done = request;
                self.shared.acked.notify_all();
            }
            let next_retry = self.release_delayed();
            self.retire_or_replace(&phase);
            self.dispatch();
            let (killed, next_limit) = self.enforce_limits();
            if killed {
                continue; // replace the worker, retry or go on
            }
            if phase == Phase::Closing && self.idle() {
                self.quit_all();
                return;
            }
            // Results that came through the rings while we were busy:
            // take them and go round again (more work may go out).
            if self.drain_rings() {
                continue;
            }
            // Sleep until a worker, a submitter or a signal has news, or
            // until the next hard deadline or retry. Each worker rings
            // (a byte on its socket) only if asked to (`sleep_begin`).
            if !self.workers.iter().all(|w| w.results.sleep_begin()) {
                self.wake_rings();
                continue;
            }
            {
                let mut st = self.shared.lock();
                if !st.pending.is_empty()
                    || st.phase != phase
                    || st.cancels_done < st.cancel_requests
                {
                    drop(st);
                    self.wake_rings();
                    continue;
                }
                st.sleeping = true;
            }
            let wake_at = [
                self.start_failure.as_ref().map(|(_, at)| *at),
                next_limit,
                next_retry,
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = wake_at.map(|at| at.saturating_duration_since(Instant::now()));
            let ready = {
                let mut objects: Vec<&dyn Waitable> = vec![&self.wake_rx];
                if let Some(sig) = &self.sigint {
                    objects.push(sig);
                }
                let base = objects.len();
                for w in &self.workers {
                    objects.push(&w.conn);
                    objects.push(&w.process);
                }
                match connection::wait(&objects, timeout) {
                    Ok(ready) => ready
                        .into_iter()
                        .filter(|&i| {
                            woken |= i == 0;
                            signalled |= i == 1 && base == 2;
                            i >= base
                        })
                        .map(|i| ((i - base) / 2, (i - base) % 2 == 1))
                        .collect::<Vec<_>>(),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(1));
                        Vec::new()
                    }
                }
            };
            self.wake_rings();
            for (i, sentinel) in ready {
                if sentinel {
                    self.workers[i].dead = true;
                }
                self.read_results(i, true);
            }
            self.bury_dead();
        }
    }

    /// Takes every result waiting in the workers' rings (no system call
    /// unless one announces a frame on the socket); whether there were
    /// any.
    fn drain_rings(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.workers.len() {
            if self.workers[i].results.has_data() {
                any = true;
                self.read_results(i, false);
            }
        }
        if any {
            self.bury_dead();
        }
        any
    }

    /// Awake: no worker needs to ring.
    fn wake_rings(&self) {
        for w in &self.workers {
            w.results.sleep_end();
        }
    }

    fn drain_wake(&mut self) {
        while self.wake_rx.recv_bytes_timeout(Duration::ZERO).is_ok() {}
    }

    /// No work anywhere.
    fn idle(&self) -> bool {
        self.queue.is_empty()
            && self.delayed.is_empty()
            && self.workers.iter().all(|w| w.outstanding.is_empty())
    }

    /// `shutdown(cancel_futures)`: every queued unit no worker was handed
    /// gets its one outcome, `Cancelled` (a future's through its job, so
    /// that `cancelled()` says so). Units waiting to be retried have begun
    /// once: they are left to run, as running tasks are.
    fn cancel_queued(&mut self) {
        const WHY: &str = "cancelled by shutdown(cancel_futures) before it started";
        for unit in self.queue.drain(..) {
            // A future's job may have been cancelled by its owner already
            // (then `try_cancel` is true and nothing more happens).
            if !(unit.claim && unit.job.try_cancel(WHY)) {
                unit.fail(Error::simple(ErrorKind::Cancelled, WHY));
            }
        }
    }

    /// Moves retries whose backoff is over to the front of the queue;
    /// when the next one is due.
    fn release_delayed(&mut self) -> Option<Instant> {
        if self.delayed.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut next = None::<Instant>;
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, unit) = self.delayed.swap_remove(i);
                self.queue.push_front(unit);
            } else {
                let at = self.delayed[i].0;
                next = Some(next.map_or(at, |n| n.min(at)));
                i += 1;
            }
        }
        next
    }

    /// A random number in `[0, 1)` (xorshift64; for jitter only).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fails `unit` with `err`, or, if its retry policy says so, queues it
    /// to run again after its backoff.
    fn fail_or_retry(&mut self, mut unit: Unit, err: Error) {
        match unit.retry_policy() {
            Some(policy) if !self.broken && policy.retries(err.kind(), unit.attempts) => {
                let delay = policy.delay(unit.attempts, self.random());
                unit.attempts += 1;
                unit.job.note_attempt(unit.attempts);
                self.delayed.push((Instant::now() + delay, unit));
            }
            _ => unit.fail(err),
        }
    }

    /// Kills every worker whose running unit is past its hard time limit
    /// (the unit then fails with `TimedOut` in `bury_dead`); whether it
    /// killed any, and when the next limit runs out.
    fn enforce_limits(&mut self) -> (bool, Option<Instant>) {
        let mut next = None::<Instant>;
        let mut killed = false;
        // Both clocks read once per scan, and only if a unit has a limit.
        let mut clock = None::<(u64, Instant)>;
        for w in &mut self.workers {
            let Some((seq, unit, _)) = w.outstanding.front() else {
                continue;
            };
            let Some(hard) = unit.hard_limit() else {
                continue;
            };
            if w.dead || w.killed.is_some() {
                continue;
            }
            let at = if w.started.get() == seq.wrapping_add(1) {
                // Pairs with the worker's fence between its two stores:
                // `began_at` is this unit's.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                let began = w.began_at.get();
                let (now, instant) = *clock.get_or_insert_with(|| (monotonic_ns(), Instant::now()));
                // Both ends read the coarse clock: `ran` may be short or
                // long by one tick. Kill only once it is past the limit by
                // a tick, so never early (late by at most two ticks).
                let ran = Duration::from_nanos(now.saturating_sub(began));
                let hard = hard + coarse_tick();
                if ran >= hard {
                    w.killed = Some((*seq, ran, hard - coarse_tick()));
                    let _ = w.process.kill();
                    w.dead = true;
                    killed = true;
                    continue;
                }
                instant + (hard - ran)
            } else {
                // Not begun yet (the worker is busy before it, or has not
                // read it): look again soon; its result or this timer
                // brings the supervisor back.
                let (_, instant) = *clock.get_or_insert_with(|| (monotonic_ns(), Instant::now()));
                instant + hard.min(Duration::from_millis(20))
            };
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if killed {
            self.bury_dead();
        }
        (killed, next)
    }

    /// Reads every result worker `i` has handed over so far: its ring's
    /// records in order, each a result frame or (empty) the announcement
    /// of one on the socket, which is then read (blocking: the worker sends
    /// it right after; end of file if it died first, and the unit stays
    /// outstanding). With `socket`, also the socket's own frames (the
    /// doorbells, an initializer's failure), until it has none; the
    /// socket's end of file marks the worker dead.
    fn read_results(&mut self, i: usize, socket: bool) {
        let now = Instant::now();
        // A frame read off the socket before its announcement in the ring
        // was seen (the worker publishes the record before it sends).
        let mut early: Option<Vec<u8>> = None;
        loop {
            let w = &mut self.workers[i];
            let frame = match w.results.pop() {
                Ok(Some(record)) if record.is_empty() => match early.take() {
                    Some(frame) => frame,
                    None => match recv_announced(&mut w.conn) {
                        Some(frame) => frame,
                        None => {
                            w.dead = true;
                            return;
                        }
                    },
                },
                Ok(Some(record)) => record,
                Ok(None) if early.is_some() => {
                    // A frame nothing announced: not a worker we know.
                    self.distrust(i);
                    return;
                }
                Ok(None) => {
                    if !socket {
                        return;
                    }
                    match w.conn.poll(Some(Duration::ZERO)) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(_) => {
                            w.dead = true;
                            return;
                        }
                    }
                    match w.conn.recv_bytes() {
                        // A doorbell: the ring has news (or had).
                        Ok(frame) if frame.is_empty() => continue,
                        Ok(frame) if frame.get(..8) == Some(&SEQ_INIT_FAILED.to_le_bytes()) => {
                            frame
                        }
                        Ok(frame) => {
                            early = Some(frame);
                            continue;
                        }
                        Err(_) => {
                            w.dead = true;
                            return;
                        }
                    }
                }
                Err(_) => {
                    self.distrust(i);
                    return;
                }
            };
            if self.on_result(i, frame, now).is_none() {
                self.distrust(i);
                return;
            }
        }
    }

    /// A worker sent something that makes no sense: it is not trustworthy
    /// any more.
    fn distrust(&mut self, i: usize) {
        let w = &mut self.workers[i];
        let _ = w.process.kill();
        w.dead = true;
    }

    /// Handles one result frame; `None` if it is malformed.
    fn on_result(&mut self, i: usize, frame: Vec<u8>, now: Instant) -> Option<()> {
        let mut r = Reader::new(&frame);
        let seq = r.u64()?;
        let n = r.u32()?;
        // Checked whole here, read item by item where it is decoded.
        let items = ItemList::parse(&frame, 12, n)?;
        if seq == SEQ_INIT_FAILED {
            self.initializer_failed(i, &frame, items);
            return Some(());
        }
        let w = &mut self.workers[i];
        let (expect, _, _) = w.outstanding.front()?;
        if *expect != seq || items.len() != w.outstanding.front()?.1.n as usize {
            return None;
        }
        let (_, mut unit, sent) = w.outstanding.pop_front().expect("checked above");
        w.bytes_in_flight -= unit.wire_len();
        w.fds_in_flight -= unit.fds.fds.len();
        // Service time: since the previous result if the worker was busy
        // all along, else since this unit was sent.
        let since = if sent < w.last_result {
            w.last_result
        } else {
            sent
        };
        let sample = now.saturating_duration_since(since);
        w.service = (w.service * 7 + sample) / 8;
        w.last_result = now;
        let per = w.service.as_nanos().max(1);
        w.window = ((TARGET_QUEUED.as_nanos() / per) as usize).clamp(2, MAX_WINDOW);
        // Issue 13: the status page, and recycling past `max_rss`.
        let next = w.outstanding.front().map(|(seq, _, _)| *seq);
        if let Some(why) = self.config.board.finished(&mut w.slot, unit.n, next, now) {
            self.config.board.retiring(&mut w.slot, why);
            w.quitting = true;
            if w.conn.send_bytes(&[]).is_err() {
                w.dead = true;
            }
        }
        let worker = w.name.clone();
        self.boot_deaths = 0;
        if let Some(policy) = unit.retry_policy()
            && policy.on.contains(RetryOn::TASK_ERROR)
            && items
                .iter(&frame)
                .any(|it| it.tag == crate::launch::TAG_PANICKED)
        {
            // A panic is only retried through `fail_or_retry`'s policy
            // check; the unit's frame is dropped if it runs again.
            if policy.retries(ErrorKind::Panicked, unit.attempts) {
                self.fail_or_retry(unit, Error::simple(ErrorKind::Panicked, ""));
                return Some(());
            }
        }
        let attempts = unit.attempts;
        unit.close_fds();
        self.shared.recycle(std::mem::take(&mut unit.items));
        unit.job.deliver(
            unit.index,
            UnitOutcome::Items {
                worker,
                frame,
                items,
                attempts,
            },
            attempts,
        );
        Some(())
    }

    /// A worker's initializer failed: the pool cannot run anything. Fail
    /// all work with the initializer's error and take no more.
    fn initializer_failed(&mut self, i: usize, frame: &[u8], items: ItemList) {
        let why = items
            .first(frame)
            .map(|item| {
                let worker = self.workers[i].name.clone();
                match super::job::decode_item::<()>(&worker, frame, &item) {
                    Err(e) => e.to_string(),
                    Ok(()) => "the initializer failed".to_string(),
                }
            })
            .unwrap_or_else(|| "the initializer failed".into());
        let message = format!("the pool's initializer failed in a worker: {why}");
        self.shared.lock().broken = Some(message.clone());
        self.broken = true;
        self.workers[i].dead = true;
        self.fail_everything_keep_workers(|| Error::simple(ErrorKind::PoolClosed, message.clone()));
    }

    /// Reaps dead workers, failing the unit each held and requeueing the
    /// ones it never began (invariant 2).
    fn bury_dead(&mut self) {
        let mut changed = false;
        let mut i = 0;
        while i < self.workers.len() {
            if !self.workers[i].dead {
                i += 1;
                continue;
            }
            changed = true;
            // Results written before it died are still in its ring and
            // socket.
            self.read_results(i, true);
            let mut w = self.workers.remove(i);
            let status = reap(&mut w.process);
            // Issue 13: the status page, and an OOM kill by its cgroup.
            let note = self.config.board.gone(w.slot, &describe(status));
            let mut held = std::mem::take(&mut w.outstanding);
            // It held the first outstanding unit only if it began it; if
            // it died before (killed while idle, or before reading), that
            // unit goes back to the queue like the others.
            let began = w.started.get();
            if let Some((seq, _, _)) = held.front()
                && began == seq.wrapping_add(1)
                && let Some((seq, unit, _)) = held.pop_front()
            {
                let how = format!("{}{note}", describe(status));
                let err = match w.killed {
                    Some((killed_seq, ran, limit)) if killed_seq == seq => Error::simple(
                        ErrorKind::TimedOut,
                        format!(
                            "the task ran for {ran:.2?}, past its hard time limit of {limit:?}: \
                             the pool killed worker {} (pid {}) and replaced it",
                            w.name, w.pid
                        ),
                    ),
                    Some(_) => Error::worker_lost(
                        format!(
                            "worker {} (pid {}) was killed by the pool for the hard time limit \
                             of the task before this one, which finished just then",
                            w.name, w.pid
                        ),
                        status,
                    ),
                    None => Error::worker_lost(
                        format!(
                            "worker {} (pid {}) {how} while it held this task",
                            w.name, w.pid
                        ),
                        status,
                    ),
                };
                self.fail_or_retry(unit, err);
            }
            // The rest never began: back to the front, in order.
            while let Some((_, unit, _)) = held.pop_back() {
                self.queue.push_front(unit);
            }
            if began == 0 && !w.quitting && w.killed.is_none() {
                self.boot_deaths += 1;
                if self.boot_deaths > 2 * self.config.processes + 2 && !self.broken {
                    let message = format!(
                        "the pool's workers keep dying before they run anything (the last one {}); \
                         is the initializer crashing?",
                        describe(status)
                    );
                    self.shared.lock().broken = Some(message.clone());
                    self.broken = true;
                    self.fail_everything_keep_workers(|| {
                        Error::simple(ErrorKind::PoolClosed, message.clone())
                    });
                }
            }
        }
        if changed {
            self.publish_pids();
        }
    }

    /// Starts replacements for dead or retired workers, and retires workers
    /// that reached `max_tasks_per_child`.
    fn retire_or_replace(&mut self, phase: &Phase) {
        if let Some(max) = self.config.max_tasks {
            for w in &mut self.workers {
                if !w.quitting && !w.dead && w.units_sent >= max && w.outstanding.is_empty() {
                    w.quitting = true;
                    // Issue 13: shown on the status page.
                    let why = format!("retired after max_tasks_per_child ({max})");
                    self.config.board.retiring(&mut w.slot, why);
                    if w.conn.send_bytes(&[]).is_err() {
                        w.dead = true;
                    }
                }
            }
        }
        let live = self
            .workers
            .iter()
            .filter(|w| !w.quitting && !w.dead)
            .count();
        let wanted = match phase {
            _ if self.broken => 0,
            Phase::Running => self.config.processes,
            Phase::Closing if !self.queue.is_empty() || !self.delayed.is_empty() => {
                self.config.processes
            }
            _ => 0,
        };
        if live >= wanted {
            return;
        }
        if let Some((_, at)) = &self.start_failure
            && Instant::now() < *at
        {
            return;
        }
        let mut started = false;
        for _ in live..wanted {
            match self.start_worker() {
                Ok(w) => {
                    self.workers.push(w);
                    self.start_failure = None;
                    started = true;
                }
                Err(e) => {
                    // Nobody left to run the work: fail it rather than
                    // leave it waiting on a pool that cannot start workers.
                    if self.workers.iter().all(|w| w.dead || w.quitting) {
                        let message = format!("the pool cannot start a worker: {e}");
                        for unit in self.queue.drain(..) {
                            unit.fail(Error::simple(e.kind(), message.clone()));
                        }
                    }
                    self.start_failure = Some((e, Instant::now() + Duration::from_millis(100)));
                    break;
                }
            }
        }
        if started {
            self.publish_pids();
        }
    }

    /// Hands queued units to the least-loaded workers that have room, one
    /// batch (one send) per worker.
    fn dispatch(&mut self) {
        if self.queue.is_empty() || self.workers.is_empty() {
            return;
        }
        let mut batches: Vec<Vec<u8>> = (0..self.workers.len())
            .map(|_| self.spare_batches.pop().unwrap_or_default())
            .collect();
        // The raw fds each batch carries; allocated only once a unit that
        // holds fds is sent (the fast path has none).
        let mut batch_fds: Vec<Vec<std::os::fd::RawFd>> = Vec::new();
        let now = Instant::now();
        while let Some(unit) = self.queue.front() {
            let bytes = unit.wire_len();
            let nfds = unit.fds.fds.len();
            // At most one `sendmsg`'s worth of fds (253) in flight across
            // all workers (the kernel counts fds in flight against the
            // user's RLIMIT_NOFILE and refuses a send past it); a unit with
            // fds waits for results while they are out.
            if nfds > 0 {
                let out: usize = self.workers.iter().map(|w| w.fds_in_flight).sum();
                if out > 0 && out + nfds > os::scm::MAX_FDS {
                    break;
                }
            }
            // A busy worker is refilled only once it has run down to half
            // its window (then up to all of it): one send per half window
            // of units rather than one per result.
            let best = self
                .workers
                .iter()
                .enumerate()
                .filter(|(i, w)| {
                    w.can_take(bytes, self.config.max_tasks)
                        && (!batches[*i].is_empty() || w.outstanding.len() <= w.window / 2)
                })
                .min_by_key(|(_, w)| w.outstanding.len())
                .map(|(i, _)| i);
            let Some(i) = best else {
                break;
            };
            let unit = self.queue.pop_front().expect("front exists");
            if unit.claim && !unit.job.claim() {
                continue; // cancelled: its one outcome is given
            }
            if unit.job.is_abandoned() {
                continue; // its verb failed: no one reads it
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let batch = &mut batches[i];
            batch.extend_from_slice(&seq.to_le_bytes());
            if unit.limits.on_wire() {
                let soft = unit.limits.soft.map_or(u64::MAX, |d| {
                    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
                });
                batch.push(if unit.limits.hard.is_some() {
                    FUNC_LIMITS
                } else {
                    FUNC_SOFT_LIMIT
                });
                batch.extend_from_slice(&soft.to_le_bytes());
            }
            if !unit.fds.counts.is_empty() {
                batch.push(UNIT_FDS);
                batch.extend_from_slice(&(unit.fds.counts.len() as u32).to_le_bytes());
                batch.extend_from_slice(&unit.fds.counts);
                if batch_fds.is_empty() {
                    batch_fds.resize_with(self.workers.len(), Vec::new);
                }
                batch_fds[i].extend(unit.fds.fds.iter().map(std::os::fd::AsRawFd::as_raw_fd));
            }
            batch.extend_from_slice(&unit.func);
            batch.extend_from_slice(&unit.n.to_le_bytes());
            batch.extend_from_slice(&unit.items);
            let w = &mut self.workers[i];
            w.bytes_in_flight += bytes;
            w.fds_in_flight += unit.fds.fds.len();
            w.units_sent += 1;
            w.outstanding.push_back((seq, unit, now));
            if w.outstanding.len() == 1 {
                // Issue 13: it begins this unit now (status page).
                self.config.board.sent(&w.slot, seq, now);
            }
        }
        for (i, mut batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                self.spare_batches.push(batch);
                continue;
            }
            // The fds stay open in the units now in `outstanding`.
            let sent = match batch_fds.get(i) {
                Some(fds) if !fds.is_empty() => {
                    self.workers[i].conn.send_bytes_with_fds(&batch, fds)
                }
                _ => self.workers[i].conn.send_bytes(&batch),
            };
            if sent.is_err() {
                // It died: `bury_dead` fails the first unit and requeues
                // the others.
                self.workers[i].dead = true;
            }
            if batch.capacity() <= KEEP_BATCH {
                batch.clear();
                self.spare_batches.push(batch);
            }
        }
        self.spare_batches.truncate(self.workers.len());
        self.bury_dead();
    }

    /// `close`: every unit is done; send each worker the quit frame, wait
    /// (bounded) for them to leave, and reap them.
    fn quit_all(&mut self) {
        for w in &mut self.workers {
            if !w.quitting {
                w.quitting = true;
                let _ = w.conn.send_bytes(&[]);
            }
        }
        let deadline = Instant::now() + QUIT_GRACE;
        for w in &mut self.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if w.process.join_timeout(left).is_err() && w.process.is_alive() {
                let _ = w.process.kill();
            }
            let _ = reap(&mut w.process);
        }
        self.workers.clear();
        self.publish_pids();
    }

    /// Kills every worker, then fails every unit the pool still holds.
    fn fail_everything(&mut self, err: impl Fn() -> Error) {
        for w in &self.workers {
            let _ = w.process.kill();
        }
        for w in &mut self.workers {
            let _ = reap(&mut w.process);
        }
        // The workers are gone before anyone waiting hears of it.
        let workers = std::mem::take(&mut self.workers);
        self.publish_pids();
        for w in workers {
            for (_, unit, _) in w.outstanding {
                unit.fail(err());
            }
        }
        self.fail_queued(&err);
    }

    /// Fails all work but keeps live workers (a broken pool still has to be
    /// closed or terminated by its owner).
    fn fail_everything_keep_workers(&mut self, err: impl Fn() -> Error) {
        for w in &mut self.workers {
            for (_, unit, _) in w.outstanding.drain(..) {
                unit.fail(err());
            }
            w.bytes_in_flight = 0;
            w.fds_in_flight = 0;
        }
        self.fail_queued(&err);
    }

    fn fail_queued(&mut self, err: &impl Fn() -> Error) {
        let pending: Vec<Unit> = self.shared.lock().pending.drain(..).collect();
        let delayed: Vec<Unit> = self.delayed.drain(..).map(|(_, u)| u).collect();
        for unit in self.queue.drain(..).chain(delayed).chain(pending) {
            unit.fail(err());
        }
    }

    /// Ctrl-C: stop the workers now; all work ends with `Interrupted`, and
    /// the pool takes no more.
    fn interrupt(&mut self) {
        {
            let mut st = self.shared.lock();
            st.broken = Some("it was interrupted by Ctrl-C (SIGINT)".into());
        }
        self.fail_everything(|| {
            Error::simple(
                ErrorKind::Interrupted,
                "interrupted by Ctrl-C (SIGINT): the pool's workers were stopped",
            )
        });
    }
}

impl Drop for Supervisor {
    /// However the loop ended (even by a panic), no worker stays and no
    /// job waits forever.
    fn drop(&mut self) {
        self.fail_everything(|| {
            Error::simple(
                ErrorKind::PoolClosed,
                "the pool was shut down before this task ran to the end",
            )
        });
        let mut st = self.shared.lock();
        st.phase = Phase::Done;
        st.pids.clear();
        drop(st);
        self.shared.acked.notify_all();
    }
}

/// The frame a ring record announced: the next non-empty frame on the
/// socket (doorbells skipped); `None` at end of file (the worker died
/// before it sent it all) or on an error.
fn recv_announced(conn: &mut Connection) -> Option<Vec<u8>> {
    loop {
        match conn.recv_bytes() {
            Ok(frame) if frame.is_empty() => continue,
            Ok(frame) => return Some(frame),
            Err(_) => return None,
        }
    }
}

/// Waits for a worker that is gone (or about to be) and returns its status.
fn reap(process: &mut Process<()>) -> Option<ExitStatus> {
    if process.join_timeout(Duration::from_secs(2)).is_err() && process.is_alive() {
        let _ = process.kill();
        let _ = process.join();
    }
    process.status()
}

/// How a worker died, for the `WorkerLost` message.
fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(ExitStatus::Signaled {
            signal,
            core_dumped,
        }) => format!(
            "was killed by signal {signal} ({}){}",
            os::signal_name(signal),
            if core_dumped { ", core dumped" } else { "" }
        ),
        Some(ExitStatus::Exited(code)) => format!("exited with code {code}"),
        _ => "died".to_string(),
    }
}
