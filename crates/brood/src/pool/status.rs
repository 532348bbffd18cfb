//! Every pool's status page, and how to read them all (what `brood top`
//! shows).
//!
//! A pool publishes a small page of shared memory,
//! `/dev/shm/brood-pool-<owner pid>-<n>`: its owner and name, and per
//! worker its pid, state (idle, running a task and since when, stopping,
//! restarting), tasks done, restarts and why the last one happened. No
//! server: the supervisor stores into the page as it works (a few relaxed
//! stores per result), and any process reads it with [`snapshot`]. A
//! worker's resident memory is read by the reader from
//! `/proc/<pid>/statm`, never by the pool.
//!
//! ```
//! use brood::pool::status;
//!
//! let pool = brood::Pool::builder().processes(2).name("doc-status").build()?;
//! pool.map(|x: u32| x + 1, 0..10)?;
//! let mine = status::snapshot()?
//!     .into_iter()
//!     .find(|p| p.owner == brood::os::getpid() && p.name == "doc-status")
//!     .expect("the pool's page");
//! let mut pids: Vec<_> = mine.workers.iter().filter_map(|w| w.pid).collect();
//! let mut expected = pool.worker_pids();
//! pids.sort();
//! expected.sort();
//! assert_eq!(pids, expected);
//! assert_eq!(mine.tasks_done, 10);
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! The page goes when the pool ends (drop, `join`); a page whose owner
//! died without removing it (SIGKILL) is removed by brood's resource
//! tracker once no process maps it, is skipped by [`snapshot`], and is
//! removed by [`clean_stale`] (which `brood top` calls). Turn the page off
//! with [`PoolBuilder::status_page`](super::PoolBuilder::status_page).
//! The layout is in `src/pool/README.md`, "Status page".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::os::{Pid, ProcInfo};
use crate::shm::{ReadOnlyWords, SharedMemory};

use super::recycle::{self, CgroupLimits, PoolCgroup, RssProbe, WorkerCgroup};

/// Where the pages are (tmpfs; the POSIX shared memory namespace).
const DIR: &str = "/dev/shm";
/// Every page's name starts with this.
const PREFIX: &str = "brood-pool-";
/// "BROODTOP", the last word written when a page is made.
const MAGIC: u64 = u64::from_le_bytes(*b"BROODTOP");
const VERSION: u64 = 1;

// Header words.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_OWNER: usize = 2;
const H_OWNER_START: usize = 3;
const H_ROWS: usize = 4;
const H_CREATED_MS: usize = 5;
const H_PROCESSES: usize = 6;
const H_RETIRED_DONE: usize = 7;
const H_RESTARTS: usize = 8;
const H_NAME: usize = 16; // 8 words: 64 bytes of UTF-8, NUL-padded
const HEADER_WORDS: usize = 32;

// Row words (one row per worker position, then rows for stopping workers).
const R_STATE: usize = 0; // state << 56 | (seq + 1)
const R_SINCE: usize = 1; // ms since the page was made
const R_PID: usize = 2;
const R_DONE: usize = 3;
const R_RESTARTS: usize = 4;
const R_POSITION: usize = 5; // position + 1
const R_CAUSE_GEN: usize = 6; // odd while the cause text is being written
const R_CAUSE: usize = 8; // 8 words of text
const ROW_WORDS: usize = 16;
const TEXT_WORDS: usize = 8;
const MAX_ROWS: usize = 100_000;

const ST_EMPTY: u64 = 0;
const ST_STARTING: u64 = 1;
const ST_IDLE: u64 = 2;
const ST_RUNNING: u64 = 3;
const ST_STOPPING: u64 = 4;
const ST_RESTARTING: u64 = 5;
const SEQ_MASK: u64 = (1 << 56) - 1;

/// A worker's RSS is read after its first result, then after a result at
/// most this often: reading `/proc/<pid>/statm` costs microseconds, as
/// much as a trivial task, and memory that leaks fast enough to matter
/// does not hide for 10 ms.
const RSS_EVERY: Duration = Duration::from_millis(10);

/// Numbers pools in this process: default names (`pool-N`) and page names.
static NEXT_POOL: AtomicUsize = AtomicUsize::new(1);

/// The next pool number of this process.
pub(crate) fn next_pool_number() -> usize {
    NEXT_POOL.fetch_add(1, Ordering::Relaxed)
}

/// What the builder asked for beyond the pool's core.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) name: Option<String>,
    pub(crate) page: bool,
    pub(crate) max_rss: Option<u64>,
    pub(crate) cgroup: Option<CgroupLimits>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            name: None,
            page: true,
            max_rss: None,
            cgroup: None,
        }
    }
}

/// Pool-wide counters the progress reports read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Workers replaced after a death, or recycled.
    pub(crate) restarts: AtomicU64,
}

/// What a `Pool` keeps of its board (the supervisor owns the board).
#[derive(Debug, Clone)]
pub(crate) struct BoardInfo {
    pub(crate) name: Arc<str>,
    pub(crate) page: Option<PathBuf>,
    pub(crate) counters: Arc<Counters>,
}

/// The page as its pool writes it.
struct Page {
    shm: SharedMemory,
    rows: usize,
    path: PathBuf,
}

impl Page {
    fn create(number: usize, name: &str, processes: usize, created_ms: u64) -> Result<Page> {
        // Positions past the cap get no row (the page stays under 16 MiB).
        let rows = (2 * processes + 4).min(MAX_ROWS);
        let size = (HEADER_WORDS + rows * ROW_WORDS) * 8;
        let owner = crate::os::pid::current();
        let mut number = number;
        let shm = loop {
            let page_name = format!("{PREFIX}{owner}-{number}");
            match SharedMemory::options().name(&page_name).size(size).create() {
                Ok(shm) => break shm,
                Err(e) if e.io().and_then(std::io::Error::raw_os_error) == Some(libc::EEXIST) => {
                    // A page left by an earlier process with our pid, or
                    // another pool's: clear the former, skip the latter.
                    let path = Path::new(DIR).join(&page_name);
                    if !page_is_live(&path) {
                        let _ = std::fs::remove_file(&path);
                    } else {
                        number += 1_000;
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let path = Path::new(DIR).join(shm.name().unwrap_or_default());
        let w = shm.words();
        w[H_VERSION].store(VERSION, Ordering::Relaxed);
        w[H_OWNER].store(owner.as_raw() as u64, Ordering::Relaxed);
        w[H_OWNER_START].store(start_stamp(owner).unwrap_or(0), Ordering::Relaxed);
        w[H_ROWS].store(rows as u64, Ordering::Relaxed);
        w[H_CREATED_MS].store(created_ms, Ordering::Relaxed);
        w[H_PROCESSES].store(processes as u64, Ordering::Relaxed);
        store_text(&w[H_NAME..H_NAME + TEXT_WORDS], name);
        w[H_MAGIC].store(MAGIC, Ordering::Release);
        Ok(Page { shm, rows, path })
    }

    fn row(&self, row: usize) -> &[AtomicU64] {
        let at = HEADER_WORDS + row * ROW_WORDS;
        &self.shm.words()[at..at + ROW_WORDS]
    }

    fn header(&self, word: usize) -> &AtomicU64 {
        &self.shm.words()[word]
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.shm.unlink();
    }
}

/// A process's start time (ns since boot), to tell it from a later
/// process with the same pid.
fn start_stamp(pid: Pid) -> Option<u64> {
    ProcInfo::read(pid)
        .ok()
        .map(|info| info.start_time.as_nanos() as u64)
}

fn store_text(words: &[AtomicU64], text: &str) {
    let mut bytes = [0u8; TEXT_WORDS * 8];
    // Cut on a character boundary.
    let mut end = text.len().min(bytes.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
    for (i, w) in words.iter().enumerate() {
        let chunk: [u8; 8] = bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes");
        w.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
    }
}

fn load_text(words: &[AtomicU64]) -> String {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for w in words {
        bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The supervisor's side of a worker on the board.
pub(crate) struct WorkerSlot {
    /// Its row on the page, if it has one.
    row: Option<usize>,
    /// Its position (0..processes), until it is retired or dies.
    position: Option<usize>,
    pid: Pid,
    done: u64,
    rss: Option<RssProbe>,
    /// When `rss` was last read (at most every [`RSS_EVERY`]).
    rss_read: Option<Instant>,
    cgroup: Option<WorkerCgroup>,
    /// Why it was retired, once it was.
    retired: Option<String>,
}

/// A worker position: its restarts and the last one's cause.
#[derive(Default)]
struct Position {
    occupied: bool,
    restarts: u64,
    cause: String,
}

/// The status page and the recycling rules, as the supervisor drives them.
/// Every method is cheap when the page is off and no limit is set.
pub(crate) struct Board {
    page: Option<Page>,
    name: Arc<str>,
    created: Instant,
    positions: Vec<Position>,
    free_rows: Vec<usize>,
    counters: Arc<Counters>,
    max_rss: Option<u64>,
    cgroup: Option<PoolCgroup>,
}

impl Board {
    pub(crate) fn new(setup: Setup, processes: usize) -> Result<Board> {
        let number = next_pool_number();
        let name: Arc<str> = setup
            .name
            .unwrap_or_else(|| format!("pool-{number}"))
            .into();
        if name.len() > TEXT_WORDS * 8 {
            return Err(Error::invalid(format!(
                "a pool's name is at most {} bytes, {name:?} is {}",
                TEXT_WORDS * 8,
                name.len()
            )));
        }
        let created = Instant::now();
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        // The cgroup first: it is the part that may refuse.
        let cgroup = match setup.cgroup {
            Some(limits) => Some(PoolCgroup::create(limits, &number.to_string())?),
            None => None,
        };
        let page = if setup.page {
            Some(Page::create(number, &name, processes, created_ms)?)
        } else {
            None
        };
        let free_rows = match &page {
            Some(p) => (processes..p.rows).rev().collect(),
            None => Vec::new(),
        };
        Ok(Board {
            page,
            name,
            created,
            positions: (0..processes).map(|_| Position::default()).collect(),
            free_rows,
            counters: Arc::default(),
            max_rss: setup.max_rss,
            cgroup,
        })
    }

    pub(crate) fn info(&self) -> BoardInfo {
        BoardInfo {
            name: self.name.clone(),
            page: self.page.as_ref().map(|p| p.path.clone()),
            counters: self.counters.clone(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_millis() as u64
    }

    /// A worker started: it takes a vacant position (and that position's
    /// row), goes into its cgroup, and gets its memory probe.
    pub(crate) fn attach(&mut self, pid: Pid) -> Result<WorkerSlot> {
        let position = match self.positions.iter().position(|p| !p.occupied) {
            Some(i) => i,
            None => {
                self.positions.push(Position::default());
                self.positions.len() - 1
            }
        };
        let cgroup = match &mut self.cgroup {
            Some(c) => Some(c.add(pid)?),
            None => None,
        };
        let pos = &mut self.positions[position];
        pos.occupied = true;
        let slot = WorkerSlot {
            row: self
                .page
                .as_ref()
                .filter(|p| position < p.rows)
                .map(|_| position),
            position: Some(position),
            pid,
            done: 0,
            rss: self.max_rss.and_then(|_| RssProbe::open(pid)),
            rss_read: None,
            cgroup,
            retired: None,
        };
        if let (Some(page), Some(row)) = (&self.page, slot.row) {
            let r = page.row(row);
            r[R_PID].store(pid.as_raw() as u64, Ordering::Relaxed);
            r[R_DONE].store(0, Ordering::Relaxed);
            r[R_RESTARTS].store(pos.restarts, Ordering::Relaxed);
            r[R_POSITION].store(position as u64 + 1, Ordering::Relaxed);
            write_cause(r, &pos.cause);
            r[R_SINCE].store(self.ms(Instant::now()), Ordering::Relaxed);
            r[R_STATE].store(ST_IDLE << 56, Ordering::Release);
        }
        Ok(slot)
    }

    /// The worker was idle and was just sent unit `seq`.
    #[inline]
    pub(crate) fn sent(&self, slot: &WorkerSlot, seq: u64, now: Instant) {
        if let (Some(page), Some(row)) = (&self.page, slot.row) {
            let r = page.row(row);
            r[R_SINCE].store(self.ms(now), Ordering::Relaxed);
            r[R_STATE].store(ST_RUNNING << 56 | (seq + 1) & SEQ_MASK, Ordering::Release);
        }
    }

    /// The worker sent the result of a unit of `items` items; `next` is
    /// the unit it runs now, if any. Returns why it must be recycled, if
    /// it must (its memory is past the ceiling).
    #[inline]
    pub(crate) fn finished(
        &self,
        slot: &mut WorkerSlot,
        items: u32,
        next: Option<u64>,
        now: Instant,
    ) -> Option<String> {
        slot.done += u64::from(items);
        if let (Some(page), Some(row)) = (&self.page, slot.row) {
            let r = page.row(row);
            r[R_DONE].store(slot.done, Ordering::Relaxed);
            r[R_SINCE].store(self.ms(now), Ordering::Relaxed);
            let state = match next {
                Some(seq) => ST_RUNNING << 56 | (seq + 1) & SEQ_MASK,
                None => ST_IDLE << 56,
            };
            r[R_STATE].store(state, Ordering::Release);
        }
        let ceiling = self.max_rss?;
        if slot.retired.is_some()
            || slot
                .rss_read
                .is_some_and(|at| now.saturating_duration_since(at) < RSS_EVERY)
        {
            return None;
        }
        slot.rss_read = Some(now);
        let rss = slot.rss.as_ref()?.rss()?;
        (rss > ceiling).then(|| {
            format!(
                "recycled: RSS {} over the {} ceiling",
                recycle::human_bytes(rss),
                recycle::human_bytes(ceiling)
            )
        })
    }

    /// The worker takes no more work (recycled, or `max_tasks_per_child`):
    /// its position is vacated for a replacement, and it moves to a spare
    /// row while it finishes.
    pub(crate) fn retiring(&mut self, slot: &mut WorkerSlot, cause: String) {
        if slot.retired.is_some() {
            return;
        }
        slot.retired = Some(cause.clone());
        self.vacate(slot, &cause);
        if let Some(page) = &self.page {
            slot.row = self.free_rows.pop();
            if let Some(row) = slot.row {
                let r = page.row(row);
                r[R_PID].store(slot.pid.as_raw() as u64, Ordering::Relaxed);
                r[R_DONE].store(slot.done, Ordering::Relaxed);
                r[R_RESTARTS].store(0, Ordering::Relaxed);
                r[R_POSITION].store(0, Ordering::Relaxed);
                write_cause(r, &cause);
                r[R_SINCE].store(self.ms(Instant::now()), Ordering::Relaxed);
                r[R_STATE].store(ST_STOPPING << 56, Ordering::Release);
            }
        }
    }

    /// Marks the worker's position vacant, with the cause (a restart).
    fn vacate(&mut self, slot: &mut WorkerSlot, cause: &str) {
        let Some(position) = slot.position.take() else {
            return;
        };
        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
        let pos = &mut self.positions[position];
        pos.occupied = false;
        pos.restarts += 1;
        pos.cause = cause.to_string();
        if let (Some(page), Some(row)) = (&self.page, slot.row) {
            let r = page.row(row);
            page.header(H_RETIRED_DONE)
                .fetch_add(slot.done, Ordering::Relaxed);
            page.header(H_RESTARTS).fetch_add(1, Ordering::Relaxed);
            r[R_PID].store(0, Ordering::Relaxed);
            r[R_DONE].store(0, Ordering::Relaxed);
            r[R_RESTARTS].store(pos.restarts, Ordering::Relaxed);
            write_cause(r, cause);
            r[R_SINCE].store(self.ms(Instant::now()), Ordering::Relaxed);
            r[R_STATE].store(ST_RESTARTING << 56, Ordering::Release);
        }
        slot.row = None;
    }

    /// The worker is dead and reaped; `how` says how it died ("was killed
    /// by signal 9 (SIGKILL)"). Returns what the `WorkerLost` message
    /// should add (its cgroup's OOM kill), and frees its row and cgroup.
    pub(crate) fn gone(&mut self, mut slot: WorkerSlot, how: &str) -> String {
        let oom = slot.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
        let note = if oom {
            let cap = self
                .cgroup
                .as_ref()
                .and_then(|c| c.limits().memory_max)
                .map(|b| format!(" of {}", recycle::human_bytes(b)))
                .unwrap_or_default();
            format!(
                ": OutOfMemory (its cgroup's memory.max{cap} was reached and the kernel's OOM killer ended it)"
            )
        } else {
            String::new()
        };
        if slot.position.is_some() {
            let cause = if oom {
                "OutOfMemory (cgroup memory.max)".to_string()
            } else {
                how.to_string()
            };
            self.vacate(&mut slot, &cause);
        } else if let (Some(page), Some(row)) = (&self.page, slot.row.take()) {
            // A retired worker left: its spare row is free again.
            page.header(H_RETIRED_DONE)
                .fetch_add(slot.done, Ordering::Relaxed);
            page.row(row)[R_STATE].store(ST_EMPTY, Ordering::Release);
            self.free_rows.push(row);
        }
        if let (Some(pool), Some(c)) = (&mut self.cgroup, slot.cgroup.take()) {
            pool.remove(c);
        }
        note
    }
}

fn write_cause(row: &[AtomicU64], cause: &str) {
    let generation = row[R_CAUSE_GEN].load(Ordering::Relaxed);
    row[R_CAUSE_GEN].store(generation | 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    store_text(&row[R_CAUSE..R_CAUSE + TEXT_WORDS], cause);
    row[R_CAUSE_GEN].store((generation | 1) + 1, Ordering::Release);
}

fn read_cause(row: &[AtomicU64]) -> String {
    for _ in 0..100 {
        let before = row[R_CAUSE_GEN].load(Ordering::Acquire);
        let text = load_text(&row[R_CAUSE..R_CAUSE + TEXT_WORDS]);
        std::sync::atomic::fence(Ordering::Acquire);
        if before & 1 == 0 && row[R_CAUSE_GEN].load(Ordering::Relaxed) == before {
            return text;
        }
        std::thread::yield_now();
    }
    String::new()
}

/// One pool, as its status page shows it.
///
/// ```
/// let pool = brood::Pool::builder().processes(1).name("doc-pool-status").build()?;
/// let page = brood::pool::status::snapshot()?
///     .into_iter()
///     .find(|p| p.name == "doc-pool-status" && p.owner == brood::os::getpid())
///     .unwrap();
/// assert_eq!(page.processes, 1);
/// assert_eq!(page.workers.len(), 1);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    /// The process that owns the pool.
    pub owner: Pid,
    /// The pool's name ([`PoolBuilder::name`](super::PoolBuilder::name);
    /// `pool-N` by default).
    pub name: String,
    /// The page's file (`/dev/shm/brood-pool-<owner>-<n>`).
    pub page: PathBuf,
    /// How many workers the pool keeps.
    pub processes: usize,
    /// When the pool started.
    pub started: SystemTime,
    /// Tasks (items) done by every worker the pool ever had.
    pub tasks_done: u64,
    /// Workers replaced so far (deaths and recycling).
    pub restarts: u64,
    /// Its workers: one per position, then workers on their way out.
    pub workers: Vec<WorkerStatus>,
}

/// One worker (or a vacant worker position) of a [`PoolStatus`].
///
/// ```
/// use brood::pool::status::{snapshot, WorkerState};
///
/// let pool = brood::Pool::builder().processes(1).name("doc-worker-status").build()?;
/// pool.apply(|()| (), ())?;
/// let page = snapshot()?.into_iter().find(|p| p.name == "doc-worker-status").unwrap();
/// let w = &page.workers[0];
/// assert_eq!(w.tasks_done, 1);
/// assert!(matches!(w.state, WorkerState::Idle { .. }));
/// assert!(w.rss.unwrap() > 0);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    /// Its position in the pool (0..processes); `None` for a worker that
    /// was retired and is finishing (its replacement holds the position).
    pub position: Option<usize>,
    /// Its pid; `None` for a vacant position (a replacement is starting).
    pub pid: Option<Pid>,
    /// What it is doing.
    pub state: WorkerState,
    /// Tasks (items) it ran.
    pub tasks_done: u64,
    /// How many workers this position had before this one.
    pub restarts: u64,
    /// Why the last one was replaced ("was killed by signal 9 (SIGKILL)",
    /// "recycled: RSS ... over the ... ceiling", "max_tasks_per_child").
    pub last_restart: Option<String>,
    /// Resident memory in bytes, from `/proc/<pid>/statm` at snapshot time.
    pub rss: Option<u64>,
}

/// What a worker is doing, with for how long.
///
/// ```
/// use brood::pool::status::WorkerState;
/// let s = WorkerState::Running { task: 3, for_: std::time::Duration::from_secs(2) };
/// assert_eq!(s.to_string(), "running task 3 for 2.0s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, before its first report.
    Starting,
    /// Waiting for work.
    Idle {
        /// Since its last result (or its start).
        for_: Duration,
    },
    /// Running the pool's unit number `task` (a chunk of items).
    Running {
        /// The unit's sequence number in the pool.
        task: u64,
        /// Since it began it.
        for_: Duration,
    },
    /// Retired: finishing what it holds, then leaving.
    Stopping,
    /// The position's worker is gone; its replacement is starting.
    Restarting,
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerState::Starting => f.write_str("starting"),
            WorkerState::Idle { for_ } => write!(f, "idle for {:.1}s", for_.as_secs_f64()),
            WorkerState::Running { task, for_ } => {
                write!(f, "running task {task} for {:.1}s", for_.as_secs_f64())
            }
            WorkerState::Stopping => f.write_str("stopping"),
            WorkerState::Restarting => f.write_str("restarting"),
        }
    }
}

/// The owner pid a page's file name claims.
fn owner_of(file_name: &str) -> Option<Pid> {
    let rest = file_name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    Pid::from_raw(pid.parse().ok()?)
}

/// Whether the page at `path` belongs to a live owner (its pid runs and
/// started when the page says).
fn page_is_live(path: &Path) -> bool {
    let Some(owner) = path.file_name().and_then(|n| n.to_str()).and_then(owner_of) else {
        return false;
    };
    let Some(now) = start_stamp(owner) else {
        return false;
    };
    match ReadOnlyWords::open(path) {
        Ok(Some(map)) => {
            let w = map.words();
            if w.len() < HEADER_WORDS || w[H_MAGIC].load(Ordering::Acquire) != MAGIC {
                return true; // being made: its owner is alive
            }
            let stamp = w[H_OWNER_START].load(Ordering::Relaxed);
            stamp == 0 || stamp == now
        }
        _ => true,
    }
}

fn page_paths() -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::os_error(format!("cannot list {DIR}"), e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(PREFIX))
        })
        .map(|e| e.path())
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads one page; `None` if it is not a (finished, live) status page.
pub(crate) fn read_page(path: &Path) -> Option<PoolStatus> {
    let map = ReadOnlyWords::open(path).ok()??;
    let w = map.words();
    if w.len() < HEADER_WORDS
        || w[H_MAGIC].load(Ordering::Acquire) != MAGIC
        || w[H_VERSION].load(Ordering::Relaxed) != VERSION
    {
        return None;
    }
    let owner = Pid::from_raw(w[H_OWNER].load(Ordering::Relaxed) as i32)?;
    let stamp = w[H_OWNER_START].load(Ordering::Relaxed);
    if start_stamp(owner).is_none_or(|now| stamp != 0 && now != stamp) {
        return None; // its owner is gone: a stale page
    }
    let rows =
        (w[H_ROWS].load(Ordering::Relaxed) as usize).min((w.len() - HEADER_WORDS) / ROW_WORDS);
    let created_ms = w[H_CREATED_MS].load(Ordering::Relaxed);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut tasks_done = w[H_RETIRED_DONE].load(Ordering::Relaxed);
    let mut workers = Vec::new();
    for row in 0..rows {
        let r = &w[HEADER_WORDS + row * ROW_WORDS..HEADER_WORDS + (row + 1) * ROW_WORDS];
        // Read the fields between two loads of the state word; retry if
        // the supervisor moved on meanwhile.
        let mut tries = 0;
        let (state, since, pid, done, restarts, position) = loop {
            let state = r[R_STATE].load(Ordering::Acquire);
            let fields = (
                r[R_SINCE].load(Ordering::Relaxed),
                r[R_PID].load(Ordering::Relaxed),
                r[R_DONE].load(Ordering::Relaxed),
                r[R_RESTARTS].load(Ordering::Relaxed),
                r[R_POSITION].load(Ordering::Relaxed),
            );
            std::sync::atomic::fence(Ordering::Acquire);
            tries += 1;
            if r[R_STATE].load(Ordering::Relaxed) == state || tries > 100 {
                break (state, fields.0, fields.1, fields.2, fields.3, fields.4);
            }
        };
        let kind = state >> 56;
        if kind == ST_EMPTY {
            continue;
        }
        tasks_done += done;
        let for_ = Duration::from_millis(now_ms.saturating_sub(created_ms + since));
        let state = match kind {
            ST_STARTING => WorkerState::Starting,
            ST_IDLE => WorkerState::Idle { for_ },
            ST_RUNNING => WorkerState::Running {
                task: (state & SEQ_MASK).saturating_sub(1),
                for_,
            },
            ST_STOPPING => WorkerState::Stopping,
            _ => WorkerState::Restarting,
        };
        let pid = Pid::from_raw(pid as i32).filter(|_| pid != 0);
        let cause = read_cause(r);
        workers.push(WorkerStatus {
            position: position.checked_sub(1).map(|p| p as usize),
            pid,
            state,
            tasks_done: done,
            restarts,
            last_restart: (!cause.is_empty()).then_some(cause),
            rss: pid.and_then(recycle::rss_of),
        });
    }
    Some(PoolStatus {
        owner,
        name: load_text(&w[H_NAME..H_NAME + TEXT_WORDS]),
        page: path.to_path_buf(),
        processes: w[H_PROCESSES].load(Ordering::Relaxed) as usize,
        started: UNIX_EPOCH + Duration::from_millis(created_ms),
        tasks_done,
        restarts: w[H_RESTARTS].load(Ordering::Relaxed),
        workers,
    })
}

/// Every live brood pool on this machine (that this user may read), by
/// page name. Pages of owners that are gone are skipped (see
/// [`clean_stale`]).
///
/// ```
/// let pool = brood::Pool::builder().processes(1).name("doc-snapshot").build()?;
/// let pools = brood::pool::status::snapshot()?;
/// assert!(pools.iter().any(|p| p.name == "doc-snapshot" && p.owner == brood::os::getpid()));
/// drop(pool);
/// let pools = brood::pool::status::snapshot()?;
/// assert!(!pools.iter().any(|p| p.name == "doc-snapshot" && p.owner == brood::os::getpid()));
/// # Ok::<(), brood::Error>(())
/// ```
pub fn snapshot() -> Result<Vec<PoolStatus>> {
    Ok(page_paths()?.iter().filter_map(|p| read_page(p)).collect())
}

/// Removes the status pages whose owner is gone (killed before its pool
/// could remove the page); returns how many. `brood top` calls it.
///
/// ```
/// let removed = brood::pool::status::clean_stale()?;
/// # let _ = removed;
/// # Ok::<(), brood::Error>(())
/// ```
pub fn clean_stale() -> Result<usize> {
    let mut removed = 0;
    for path in page_paths()? {
        if !page_is_live(&path) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

impl super::PoolBuilder {
    /// The pool's name, as [`snapshot`] and `brood top` show it (at most
    /// 64 bytes; an [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState)
    /// error from `build` beyond). The default is `pool-N`, N counting the
    /// pools of this process from 1.
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).name("thumbnails").build()?;
    /// assert_eq!(pool.name(), "thumbnails");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn name(mut self, name: &str) -> super::PoolBuilder {
        self.status.name = Some(name.to_string());
        self
    }

    /// Whether the pool publishes its status page (default: yes). Off, the
    /// pool is invisible to [`snapshot`] and `brood top`, and the
    /// supervisor skips the few stores per result the page costs.
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).status_page(false).build()?;
    /// assert!(pool.status_page().is_none());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn status_page(mut self, on: bool) -> super::PoolBuilder {
        self.status.page = on;
        self
    }
}

impl super::Pool {
    /// The pool's name ([`PoolBuilder::name`](super::PoolBuilder::name),
    /// `pool-N` by default).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// assert!(pool.name().starts_with("pool-"));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.board.name
    }

    /// The file of the pool's status page
    /// (`/dev/shm/brood-pool-<pid>-<n>`), unless it was turned off.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let page = pool.status_page().unwrap().to_path_buf();
    /// assert!(page.exists());
    /// drop(pool);
    /// assert!(!page.exists());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn status_page(&self) -> Option<&Path> {
        self.board.page.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let words: Vec<AtomicU64> = (0..TEXT_WORDS).map(|_| AtomicU64::new(0)).collect();
        store_text(&words, "pool-7");
        assert_eq!(load_text(&words), "pool-7");
        let long = "é".repeat(40); // 80 bytes: cut on a char boundary
        store_text(&words, &long);
        assert_eq!(load_text(&words), "é".repeat(32));
    }

    #[test]
    fn owners_come_from_page_names() {
        assert_eq!(owner_of("brood-pool-123-4"), Pid::from_raw(123));
        assert_eq!(owner_of("brood-pool-x-4"), None);
        assert_eq!(owner_of("brood_abc"), None);
    }
}
