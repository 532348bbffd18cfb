//! The supervisor: the one thread that owns the pool's workers. It starts
//! them, sends them units, reads their results, notices deaths, reaps and
//! replaces, and ends them. See `README.md` for the invariants it keeps.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::{self, Connection, Waitable};
use crate::error::{Error, ErrorKind, Result};
use crate::os::{self, ExitStatus, Pid};
use crate::process::Process;
use crate::shm::RawValue;
use crate::start_method::StartMethod;

use super::job::{Item, Job, UnitOutcome};
use super::worker::{self, Boot, InitBlob, Reader, SEQ_INIT_FAILED};

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
}

impl Unit {
    fn wire_len(&self) -> usize {
        8 + self.func.len() + 4 + self.items.len()
    }

    fn fail(self, err: Error) {
        self.job.deliver(self.index, UnitOutcome::Failed(err));
    }
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
}

pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues units for the workers; an error once the pool stopped taking
    /// work.
    pub(crate) fn submit(&self, units: Vec<Unit>) -> Result<()> {
        let mut st = self.lock();
        if st.phase != Phase::Running {
            return Err(Error::simple(
                ErrorKind::PoolClosed,
                "the pool is not running (it was closed or terminated)",
            ));
        }
        if let Some(why) = &st.broken {
            return Err(Error::simple(
                ErrorKind::PoolClosed,
                format!("the pool is broken: {why}"),
            ));
        }
        st.pending.extend(units);
        st.wake();
        Ok(())
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

impl State {
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
}

struct Worker {
    process: Process<()>,
    /// `seq + 1` of the unit it began last (see `Boot::started`).
    started: RawValue<u64>,
    conn: Connection,
    name: Arc<str>,
    pid: Pid,
    /// Units sent, in order, with their sequence numbers and send times.
    outstanding: VecDeque<(u64, Unit, Instant)>,
    bytes_in_flight: usize,
    units_sent: usize,
    /// The quit frame went out: it takes no more work.
    quitting: bool,
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
}

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
        }),
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
        let name: Arc<str> = format!("PoolWorker-{}", self.next_worker).into();
        self.next_worker += 1;
        let started = RawValue::new(0u64)?;
        let boot = Boot {
            started: started.clone(),
            conn: theirs,
            exe: crate::launch::exe_identity(),
            init: self.config.init.clone(),
            ignore_sigint: self.config.sigint,
        };
        let mut builder = Process::builder().name(&*name).daemon(true);
        if let Some(m) = self.config.method {
            builder = builder.start_method(m);
        }
        let mut process = builder.target_with(worker::worker_main, boot);
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
            conn: mine,
            name,
            pid,
            outstanding: VecDeque::new(),
            bytes_in_flight: 0,
            units_sent: 0,
            quitting: false,
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
            let phase = {
                let mut st = self.shared.lock();
                st.sleeping = false;
                self.queue.extend(st.pending.drain(..));
                st.phase.clone()
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
            self.retire_or_replace(&phase);
            self.dispatch();
            if phase == Phase::Closing && self.idle() {
                self.quit_all();
                return;
            }
            // Sleep until a worker, a submitter or a signal has news.
            {
                let mut st = self.shared.lock();
                if !st.pending.is_empty() || st.phase != phase {
                    continue;
                }
                st.sleeping = true;
            }
            let timeout = self
                .start_failure
                .as_ref()
                .map(|(_, at)| at.saturating_duration_since(Instant::now()));
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
            for (i, sentinel) in ready {
                if sentinel {
                    self.workers[i].dead = true;
                }
                self.read_results(i);
            }
            self.bury_dead();
        }
    }

    fn drain_wake(&mut self) {
        while self.wake_rx.recv_bytes_timeout(Duration::ZERO).is_ok() {}
    }

    /// No work anywhere.
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.workers.iter().all(|w| w.outstanding.is_empty())
    }

    /// Reads every result frame worker `i` has sent so far. Frames already
    /// read ahead are parsed without a syscall; a frame cut by the read-ahead
    /// is finished with a blocking read, whose rest is already on its way
    /// (one `sendmsg` per frame) or is end of file if the worker died.
    fn read_results(&mut self, i: usize) {
        let now = Instant::now();
        loop {
            let w = &mut self.workers[i];
            match w.conn.poll(Some(Duration::ZERO)) {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    w.dead = true;
                    return;
                }
            }
            match w.conn.recv_bytes() {
                Ok(frame) => {
                    if self.on_result(i, frame, now).is_none() {
                        // A frame that makes no sense: the worker is not
                        // trustworthy any more.
                        let w = &mut self.workers[i];
                        let _ = w.process.kill();
                        w.dead = true;
                        return;
                    }
                }
                Err(_) => {
                    self.workers[i].dead = true;
                    return;
                }
            }
        }
    }

    /// Handles one result frame; `None` if it is malformed.
    fn on_result(&mut self, i: usize, frame: Vec<u8>, now: Instant) -> Option<()> {
        let mut r = Reader::new(&frame);
        let seq = r.u64()?;
        let n = r.u32()?;
        // Each item is at least 5 bytes: a lying count cannot allocate
        // more than the frame justifies.
        let mut items = Vec::with_capacity((n as usize).min(frame.len() / 5));
        for _ in 0..n {
            let tag = r.u8()?;
            let len = r.u32()? as usize;
            let start = frame.len() - r.remaining();
            r.take(len)?;
            items.push(Item {
                tag,
                payload: start..start + len,
            });
        }
        if seq == SEQ_INIT_FAILED {
            self.initializer_failed(i, &frame, items);
            return Some(());
        }
        let w = &mut self.workers[i];
        let (expect, _, _) = w.outstanding.front()?;
        if *expect != seq || items.len() != w.outstanding.front()?.1.n as usize {
            return None;
        }
        let (_, unit, sent) = w.outstanding.pop_front().expect("checked above");
        w.bytes_in_flight -= unit.wire_len();
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
        unit.job.deliver(
            unit.index,
            UnitOutcome::Items {
                worker,
                frame,
                items,
            },
        );
        Some(())
    }

    /// A worker's initializer failed: the pool cannot run anything. Fail
    /// all work with the initializer's error and take no more.
    fn initializer_failed(&mut self, i: usize, frame: &[u8], items: Vec<Item>) {
        let why = items
            .first()
            .map(|item| {
                let worker = self.workers[i].name.clone();
                match super::job::decode_item::<()>(&worker, frame, item) {
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
            // Results written before it died are still in the socket.
            self.read_results(i);
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
                && let Some((_, unit, _)) = held.pop_front()
            {
                let how = format!("{}{note}", describe(status));
                unit.fail(Error::worker_lost(
                    format!(
                        "worker {} (pid {}) {how} while it held this task",
                        w.name, w.pid
                    ),
                    status,
                ));
            }
            // The rest never began: back to the front, in order.
            while let Some((_, unit, _)) = held.pop_back() {
                self.queue.push_front(unit);
            }
            if began == 0 && !w.quitting {
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
            Phase::Closing if !self.queue.is_empty() => self.config.processes,
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
        let mut batches: Vec<Vec<u8>> = vec![Vec::new(); self.workers.len()];
        let now = Instant::now();
        while let Some(unit) = self.queue.front() {
            let bytes = unit.wire_len();
            let best = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.can_take(bytes, self.config.max_tasks))
                .min_by_key(|(_, w)| w.outstanding.len())
                .map(|(i, _)| i);
            let Some(i) = best else {
                break;
            };
            let unit = self.queue.pop_front().expect("front exists");
            let seq = self.next_seq;
            self.next_seq += 1;
            let batch = &mut batches[i];
            batch.extend_from_slice(&seq.to_le_bytes());
            batch.extend_from_slice(&unit.func);
            batch.extend_from_slice(&unit.n.to_le_bytes());
            batch.extend_from_slice(&unit.items);
            let w = &mut self.workers[i];
            w.bytes_in_flight += bytes;
            w.units_sent += 1;
            w.outstanding.push_back((seq, unit, now));
            if w.outstanding.len() == 1 {
                // Issue 13: it begins this unit now (status page).
                self.config.board.sent(&w.slot, seq, now);
            }
        }
        for (i, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() && self.workers[i].conn.send_bytes(&batch).is_err() {
                // It died: `bury_dead` fails the first unit and requeues
                // the others.
                self.workers[i].dead = true;
            }
        }
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
        }
        self.fail_queued(&err);
    }

    fn fail_queued(&mut self, err: &impl Fn() -> Error) {
        let pending: Vec<Unit> = self.shared.lock().pending.drain(..).collect();
        for unit in self.queue.drain(..).chain(pending) {
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
