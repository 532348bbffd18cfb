//! A pool of worker processes (Python's `multiprocessing.Pool`).
//!
//! ```
//! let pool = brood::Pool::new(4)?;
//! let squares = pool.map(|x: u64| x * x, 0..10)?;
//! assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! let r = pool.apply_async(|(a, b): (u32, u32)| a + b, (2, 3))?;
//! assert_eq!(r.get()?, 5);
//! pool.close();
//! pool.join()?;
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! Tasks are what [`Process`](crate::Process) runs: functions and closures
//! that capture nothing (under every start method; a capturing closure is a
//! compile error), and `#[brood::task]` functions by name
//! ([`Pool::apply_task`], [`Pool::map_task`]). Arguments and values cross
//! through the codec. A pool that forks also runs closures that capture,
//! through [`Pool::forked`] (each call forks short-lived workers after the
//! closure exists).
//!
//! # Never a hang
//!
//! A worker that dies — SIGKILL, segfault, abort, the OOM killer,
//! `exit_now` in a task — fails exactly the task (or chunk) it held with an
//! [`ErrorKind::WorkerLost`] error that says how it died
//! ([`Error::signal`](crate::Error::signal),
//! [`Error::exit_code`](crate::Error::exit_code)); it is replaced and the
//! pool goes on. A task that panics comes back as an
//! [`ErrorKind::Panicked`] error with its message and location, and its
//! worker goes on. Python's pool waits forever in both cases.
//!
//! # Drop
//!
//! Dropping a pool that was not joined **terminates** it, as Python's
//! `with Pool() as p:` does on exit: the workers are killed and reaped, and
//! results still pending end with [`ErrorKind::PoolClosed`]. To wait for
//! the work instead, call [`Pool::close`] and [`Pool::join`] first. (A drop
//! that waited could block forever on a task that never ends; one that left
//! workers running would leak processes.)
//!
//! # Ctrl-C
//!
//! By default SIGINT is left alone: a Ctrl-C in a terminal reaches the
//! parent and the workers alike (one process group), the default action
//! ends them all, and nothing is left behind (workers also die with their
//! parent). With [`PoolBuilder::interrupt_on_sigint`], the pool catches
//! SIGINT while it lives instead (the workers ignore it): it kills its
//! workers at once, every pending result ends with
//! [`ErrorKind::Interrupted`], and the program goes on to handle it.
//!
//! See `src/pool/README.md` for the design: one supervisor thread owns the
//! workers, each worker has its own channel, and the invariants that make
//! every task end with exactly one outcome.

mod forked;
mod future;
mod job;
mod limits;
mod supervisor;
mod worker;
// Issue 13: status page (`brood top`), progress, recycling by memory.
mod progress;
mod recycle;
pub mod status;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::launch::WireTarget;
use crate::os::Pid;
use crate::start_method::StartMethod;
use crate::task;

pub use forked::{ForkStarFn, Forked, ForkedIMap};
pub use future::{
    AsCompleted, AsCompletedTimeout, Done, TaskFuture, WaitMode, as_completed,
    as_completed_timeout, wait,
};
pub use job::{AsyncResult, Callbacks, IMap};
pub use limits::{RetryOn, RetryPolicy, TaskOptions, task_cancelled, task_deadline};
pub use progress::{AsCompletedProgress, Progress, ProgressEvent, WithProgress};

use job::{Decode, Hook, Job};
use limits::{Limits, UnitLimits, check_limit};
use supervisor::{Config, Phase, Shared, Unit, UnitFds};
use worker::{FdArg, InitBlob};

// Defined with the trampolines that call it (`task`, below this module).
#[doc(inline)]
pub use crate::task::StarFn;

/// Sets a pool up before it starts (Python's `Pool(processes, initializer,
/// initargs, maxtasksperchild)` keywords, and the start method of
/// `get_context(method).Pool`).
///
/// ```
/// use brood::{Pool, StartMethod};
///
/// let pool = Pool::builder()
///     .processes(2)
///     .start_method(StartMethod::Spawn)
///     .max_tasks_per_child(100)
///     .build()?;
/// assert_eq!(pool.processes(), 2);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    init: Option<Result<InitBlob>>,
    max_tasks: Option<usize>,
    sigint: bool,
    limits: Limits,
    limit_error: Option<Error>,
    /// Name, status page, `max_rss`, cgroups (issue 13, `status.rs`).
    status: status::Setup,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("initializer", &self.init.is_some())
            .field("max_tasks_per_child", &self.max_tasks)
            .field("interrupt_on_sigint", &self.sigint)
            .field("soft_time_limit", &self.limits.soft)
            .field("hard_time_limit", &self.limits.hard)
            .field("retry", &self.limits.retry)
            .field("status", &self.status)
            .finish()
    }
}

impl PoolBuilder {
    /// The number of workers; the default is [`cpu_count`](crate::cpu_count).
    /// Zero is an [`ErrorKind::InvalidState`] error from `build`.
    ///
    /// ```
    /// assert!(brood::Pool::builder().processes(0).build().is_err());
    /// ```
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = Some(n);
        self
    }

    /// How workers start; the default is
    /// [`get_start_method`](crate::get_start_method). Every method works.
    /// Fork in a program that runs other threads (the pool's own
    /// supervisor thread counts) goes through the forkserver unless the
    /// program opted in with [`allow_fork_with_threads`](crate::allow_fork_with_threads),
    /// as for [`Process`](crate::Process).
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).start_method(brood::StartMethod::ForkServer).build()?;
    /// assert_eq!(pool.apply(|x: u8| x + 1, 1)?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// A function each worker runs once, with `args`, before its first task
    /// (Python's `initializer` and `initargs`). `f` captures nothing;
    /// `args` may hold a `Connection`, `Value`, `Array`, lock or any other
    /// value whose fds cross to a child: each worker gets its own copy.
    /// If it panics, the pool breaks: pending results and later calls
    /// report [`ErrorKind::PoolClosed`] with the panic's message (Python
    /// restarts the worker forever).
    ///
    /// ```
    /// use brood::{Pool, Value};
    ///
    /// let started = Value::new(0u32)?;
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .initializer(|v: Value<u32>| *v.lock().unwrap() += 1, started.clone())
    ///     .build()?;
    /// pool.map(|x: u8| x, 0..4)?;
    /// pool.close();
    /// pool.join()?;
    /// assert_eq!(started.get()?, 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn initializer<F, A>(mut self, f: F, args: A) -> PoolBuilder
    where
        F: FnOnce(A) + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        const { task::assert_captures_nothing::<F>() };
        drop(f);
        let call = task::trampoline1::<F, A, ()>;
        self.init = Some(
            crate::handle::encode_with_fds(&args).map(|(args, fds)| InitBlob {
                target: WireTarget::Offset(task::to_offset(call)),
                args,
                fds: fds.into_iter().map(|fd| FdArg(Arc::new(fd))).collect(),
            }),
        );
        self
    }

    /// Replaces a worker after it ran `n` tasks (chunks), as Python's
    /// `maxtasksperchild`; the default is never.
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    /// let a = pool.apply(|()| brood::os::getpid(), ())?;
    /// let b = pool.apply(|()| brood::os::getpid(), ())?;
    /// assert_ne!(a, b);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn max_tasks_per_child(mut self, n: usize) -> PoolBuilder {
        self.max_tasks = Some(n.max(1));
        self
    }

    /// Opt-in Ctrl-C handling: while the pool lives, SIGINT in this process
    /// stops the workers at once and every pending result (a running `map`
    /// included) ends with [`ErrorKind::Interrupted`]; the workers ignore
    /// SIGINT themselves. The pool then takes no more work. The handler
    /// only writes a byte to a pipe; the previous SIGINT disposition comes
    /// back when the last such pool is gone. Off by default, because it
    /// changes the program's SIGINT handling.
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).interrupt_on_sigint(true).build()?;
    /// assert_eq!(pool.apply(|x: u8| x, 3)?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn interrupt_on_sigint(mut self, on: bool) -> PoolBuilder {
        self.sigint = on;
        self
    }

    /// A soft time limit for every task (per task:
    /// [`Pool::options`]): from when a worker begins a task,
    /// [`task_deadline`] returns the instant the limit runs out, and
    /// [`task_cancelled`] turns true after it. The task is never
    /// interrupted; it may poll either and stop early (Celery's
    /// `soft_time_limit`, without an exception: Rust has no asynchronous
    /// ones). With a chunksize over 1, the limit counts for the whole
    /// chunk, from its first item. Zero is an [`ErrorKind::InvalidState`]
    /// error from `build`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = brood::Pool::builder()
    ///     .processes(1)
    ///     .soft_time_limit(Duration::from_millis(50))
    ///     .build()?;
    /// let stopped_early = pool.apply(|()| {
    ///     while !brood::task_cancelled() {
    ///         std::thread::sleep(Duration::from_millis(5));
    ///     }
    ///     true
    /// }, ())?;
    /// assert!(stopped_early);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn soft_time_limit(mut self, limit: Duration) -> PoolBuilder {
        match check_limit("soft time limit", limit) {
            Ok(d) => self.limits.soft = Some(d),
            Err(e) => self.limit_error = Some(e),
        }
        self
    }

    /// A hard time limit for every task (per task: [`Pool::options`]):
    /// once a task has run this long, the supervisor kills its worker
    /// (SIGKILL: a task in an endless loop or blocked in a system call is
    /// stopped too), the task fails with [`ErrorKind::TimedOut`] (whose
    /// message says how long it ran), a new worker takes the old one's
    /// place and the pool goes on (Celery's `time_limit`). The limit counts
    /// from when the worker began the task; with a chunksize over 1, for
    /// the whole chunk (all its items fail). Zero is an
    /// [`ErrorKind::InvalidState`] error from `build`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = brood::Pool::builder()
    ///     .processes(1)
    ///     .hard_time_limit(Duration::from_millis(200))
    ///     .build()?;
    /// let err = pool.apply(|()| -> u8 { loop { std::hint::spin_loop() } }, ()).unwrap_err();
    /// assert_eq!(err.kind(), brood::ErrorKind::TimedOut);
    /// assert_eq!(pool.apply(|x: u8| x + 1, 1)?, 2); // the pool goes on
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn hard_time_limit(mut self, limit: Duration) -> PoolBuilder {
        match check_limit("hard time limit", limit) {
            Ok(d) => self.limits.hard = Some(d),
            Err(e) => self.limit_error = Some(e),
        }
        self
    }

    /// The retry policy of every task (per task: [`Pool::options`]); the
    /// default is none. See [`RetryPolicy`].
    ///
    /// ```
    /// use brood::pool::{RetryOn, RetryPolicy};
    ///
    /// let pool = brood::Pool::builder()
    ///     .processes(1)
    ///     .retry(RetryPolicy::new(2).on(RetryOn::WORKER_LOST))
    ///     .build()?;
    /// # let _ = pool;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> PoolBuilder {
        self.limits.retry = Some(policy);
        self
    }

    /// Starts the supervisor and the workers.
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(2).build()?;
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn build(self) -> Result<Pool> {
        crate::bootstrap::ensure_linked();
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(Error::invalid("a pool needs at least one process"));
        }
        if let Some(e) = self.limit_error {
            return Err(e);
        }
        let init = self.init.transpose()?;
        let defaults = self.limits;
        // What a forked call's short-lived workers share (`forked.rs`).
        let forks = forked::Forks::new(forked::Recipe {
            method: self.method,
            init: init.clone(),
            sigint: self.sigint,
            setup: self.status.clone(),
            limits: defaults.for_unit(),
        });
        // Issue 13: the status page, max_rss and cgroups (`status.rs`).
        let board = status::Board::new(self.status, processes)?;
        let info = board.info();
        let config = Config {
            processes,
            method: self.method,
            init,
            max_tasks: self.max_tasks,
            sigint: self.sigint,
            board,
            closure: None,
        };
        let (shared, mut sup) = supervisor::new(config)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("brood-pool".into())
            .spawn(move || match sup.start_workers() {
                Ok(()) => {
                    let _ = tx.send(Ok(()));
                    sup.run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::os_error("cannot start the pool's supervisor thread", e))?;
        let started = rx.recv();
        let pool = Pool {
            shared,
            supervisor: Mutex::new(Some(handle)),
            processes,
            unit_defaults: defaults.for_unit(),
            defaults,
            board: info,
            forks,
        };
        match started {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::invalid(
                "the pool's supervisor thread failed to start",
            )),
        }
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`); see the
/// [module docs](self) for what it guarantees.
///
/// A `Pool` is `Sync`: several threads may submit to it at once.
///
/// ```
/// let pool = brood::Pool::new(2)?;
/// assert_eq!(pool.apply(|s: String| s.len(), "four".to_string())?, 4);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    /// The builder's time limits and retry policy, for every unit.
    defaults: Limits,
    /// The same, as each unit carries them.
    unit_defaults: UnitLimits,
    /// Name, status page, counters (issue 13, `status.rs`).
    board: status::BoardInfo,
    /// Forked calls (`forked.rs`): how to make them, and those running.
    forks: forked::Forks,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("phase", &st.phase)
            .field("pids", &st.pids)
            .finish()
    }
}

/// The encoded reference to a function that captures nothing.
pub(crate) fn func1<F, A, R>() -> Arc<[u8]>
where
    F: FnOnce(A) -> R + Send + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    const { task::assert_captures_nothing::<F>() };
    let entry: task::IntoEntry = task::into_entry1::<F, A, R>;
    into_func(task::into_offset(entry))
}

/// The `func` of an [`IntoEntry`](task::IntoEntry) offset
/// (`[FUNC_INTO][offset i64]`), in one allocation (this runs once per
/// `apply_async`).
fn into_func(offset: i64) -> Arc<[u8]> {
    let mut out = [0u8; 9];
    out[0] = worker::FUNC_INTO;
    out[1..].copy_from_slice(&offset.to_le_bytes());
    Arc::from(&out[..])
}

fn func_star<F, A, R>() -> Arc<[u8]>
where
    F: StarFn<A, R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    const { task::assert_captures_nothing::<F>() };
    let entry: task::IntoEntry = task::into_entry_star::<F, A, R>;
    into_func(task::into_offset(entry))
}

pub(crate) fn func_named(name: &str) -> Result<Arc<[u8]>> {
    task::lookup(name)?;
    Ok(worker::encode_func(&WireTarget::Named(name.to_string())).into())
}

/// Appends one item, `[len u32][codec bytes]`.
#[inline]
fn encode_item<A: Serialize>(out: &mut Vec<u8>, item: &A) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    crate::codec::encode_into(out, item)?;
    let len = u32::try_from(out.len() - at - 4)
        .map_err(|_| Error::simple(ErrorKind::TooLarge, "a task's arguments are over 4 GiB"))?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// A unit's items as the caller's thread encodes them: `[len u32][codec
/// bytes]` each, and the fds they hold. An item is first encoded as plain
/// bytes (the fast path: no fds, nothing more to do); only if that fails is
/// it encoded again collecting its fds (`SCM_RIGHTS` duplicates the parent
/// keeps until the unit's outcome).
#[derive(Default)]
pub(crate) struct Items {
    bytes: Vec<u8>,
    n: u32,
    fds: UnitFds,
}

impl Items {
    /// Room for one small item without growing (`apply`, `submit`).
    pub(crate) fn one() -> Items {
        Items {
            bytes: Vec::with_capacity(32),
            ..Items::default()
        }
    }

    /// Items encoded into `bytes` (empty).
    fn in_buffer(bytes: Vec<u8>) -> Items {
        Items {
            bytes,
            ..Items::default()
        }
    }

    /// Appends one item.
    #[inline]
    pub(crate) fn push<A: Serialize>(&mut self, item: &A) -> Result<()> {
        let at = self.bytes.len();
        match encode_item(&mut self.bytes, item) {
            Ok(()) => {
                if !self.fds.counts.is_empty() {
                    self.fds.counts.push(0);
                }
            }
            Err(plain) => self.push_with_fds(item, at, plain)?,
        }
        self.n += 1;
        Ok(())
    }

    /// [`push`](Items::push) of an item that did not encode as plain bytes
    /// (`plain`, the error): encoded again collecting its fds, if it holds
    /// any; the error otherwise. `at`: where the item began.
    #[cold]
    fn push_with_fds<A: Serialize>(&mut self, item: &A, at: usize, plain: Error) -> Result<()> {
        self.bytes.truncate(at);
        let fds = match encode_item_with_fds(&mut self.bytes, item) {
            Ok(fds) if !fds.is_empty() => fds,
            Ok(_) => {
                self.bytes.truncate(at);
                return Err(plain);
            }
            Err(e) => {
                self.bytes.truncate(at);
                return Err(e);
            }
        };
        if self.fds.fds.len() + fds.len() > crate::os::scm::MAX_FDS {
            self.bytes.truncate(at);
            return Err(Error::simple(
                ErrorKind::TooLarge,
                format!(
                    "the arguments of one task (or chunk) hold {} file descriptors; \
                     at most {} cross at once (use a smaller chunksize)",
                    self.fds.fds.len() + fds.len(),
                    crate::os::scm::MAX_FDS
                ),
            ));
        }
        self.fds.counts.resize(self.n as usize, 0);
        self.fds.counts.push(fds.len() as u8);
        self.fds.fds.extend(fds);
        Ok(())
    }

    /// Whether it holds no item.
    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The unit these items make.
    pub(crate) fn into_unit(
        self,
        job: Arc<Job>,
        index: usize,
        func: Arc<[u8]>,
        limits: UnitLimits,
    ) -> Unit {
        let mut unit = Unit::new(job, index, func, self.bytes, self.n, limits);
        unit.fds = self.fds;
        unit
    }
}

/// Appends one item whose value holds fds; returns (duplicates of) them.
fn encode_item_with_fds<A: Serialize>(
    out: &mut Vec<u8>,
    item: &A,
) -> Result<Vec<std::os::fd::OwnedFd>> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let fds = crate::handle::encode_into_with_fds(out, item)?;
    let len = u32::try_from(out.len() - at - 4)
        .map_err(|_| Error::simple(ErrorKind::TooLarge, "a task's arguments are over 4 GiB"))?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(fds)
}

/// A `map` hands its units to the supervisor once it has encoded this
/// many bytes of them, or this many units, whichever comes first.
const PIPELINE_BYTES: usize = 64 << 10;
const PIPELINE_UNITS: usize = 512;

/// `map` decodes units as they arrive (rather than once all are in) when
/// they hold at least this many items.
const STREAM_MIN_ITEMS: usize = 256;

/// Python's automatic chunksize: `divmod(len, 4 * processes)`, plus one
/// if there is a remainder (at least 1).
fn auto_chunksize(len: usize, processes: usize) -> usize {
    let (q, r) = (len / (4 * processes), len % (4 * processes));
    (q + usize::from(r > 0)).max(1)
}

fn check_chunksize(chunksize: Option<usize>) -> Result<()> {
    if chunksize == Some(0) {
        return Err(Error::invalid("chunksize must be at least 1"));
    }
    Ok(())
}

impl Pool {
    /// A pool of `processes` workers with the default start method.
    ///
    /// ```
    /// let pool = brood::Pool::new(3)?;
    /// assert_eq!(pool.processes(), 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// Sets a pool up (processes, start method, initializer,
    /// `max_tasks_per_child`, Ctrl-C handling).
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).build()?;
    /// # let _ = pool;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers the pool keeps.
    ///
    /// ```
    /// assert_eq!(brood::Pool::new(2)?.processes(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers alive now (they change as workers die and
    /// are replaced).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let pid = pool.apply(|()| brood::os::getpid(), ())?;
    /// assert!(pool.worker_pids().contains(&pid));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<Pid> {
        self.shared.lock().pids.clone()
    }

    /// Verbs with an explicit chunksize (Python's `chunksize=` keyword):
    /// `pool.chunksize(100).map(f, items)`. Zero is an error from the verb.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let v = pool.chunksize(10).map(|x: u32| x + 1, 0..100)?;
    /// assert_eq!(v.len(), 100);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn chunksize(&self, chunksize: usize) -> Chunked<'_> {
        Chunked {
            pool: self,
            chunksize: Some(chunksize),
        }
    }

    /// Verbs that take closures which capture (`Fn(A) -> R + Send + Sync +
    /// 'static`), for a pool that forks: each call forks short-lived
    /// workers after the closure exists, which run only that call's tasks
    /// and leave when its last one is done, while the pool's own workers
    /// serve other work. Under any start method other than
    /// [`StartMethod::Fork`] every verb is an [`ErrorKind::InvalidState`]
    /// error; the program must also have opted in with
    /// [`allow_fork_with_threads`](crate::allow_fork_with_threads) (the
    /// pool's supervisor is a thread). See [`Forked`] for the costs.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let lookup = Arc::new(vec!["zero", "one", "two"]);
    /// let names = pool.forked().map(move |i: usize| lookup[i].to_uppercase(), [2, 0])?;
    /// assert_eq!(names, ["TWO", "ZERO"]);
    ///
    /// // Under another start method, a clear error rather than a surprise:
    /// let spawned = Pool::builder().processes(1).start_method(StartMethod::Spawn).build()?;
    /// let n = 7;
    /// let err = spawned.forked().apply(move |x: u32| x + n, 1).unwrap_err();
    /// assert_eq!(err.kind(), brood::ErrorKind::InvalidState);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn forked(&self) -> Forked<'_> {
        Forked {
            pool: self,
            chunksize: None,
        }
    }

    fn verbs(&self) -> Chunked<'_> {
        Chunked {
            pool: self,
            chunksize: None,
        }
    }

    /// Submits a one-item job.
    fn submit_one<A: Serialize>(
        &self,
        func: Arc<[u8]>,
        args: &A,
        hook: Option<Hook>,
    ) -> Result<Arc<Job>> {
        let mut items = Items::one();
        items.push(args)?;
        let job = Job::new(Some(1), hook);
        self.shared.submit_one(items.into_unit(
            job.clone(),
            0,
            func,
            self.unit_defaults.clone(),
        ))?;
        Ok(job)
    }

    /// Submits a one-item job whose handle is a future (cancellable until a
    /// worker is handed it). `limits`: the task's own, over the pool's.
    pub(crate) fn submit_future<A: Serialize, R: DeserializeOwned>(
        &self,
        func: Arc<[u8]>,
        args: &A,
        limits: Option<Limits>,
    ) -> Result<TaskFuture<R>> {
        let mut items = Items::one();
        items.push(args)?;
        let limits = match limits {
            None => self.unit_defaults.clone(),
            Some(own) => own.over(&self.defaults).for_unit(),
        };
        let job = Job::new(Some(1), None);
        let mut unit = items.into_unit(job.clone(), 0, func, limits);
        unit.claim = true;
        self.shared.submit_one(unit)?;
        Ok(TaskFuture::new(job))
    }

    /// Submits a job over a whole list, cut into chunks, calling `prepare`
    /// with the job and the chunksize before the first unit is queued
    /// (progress hangs its meter on the job there).
    fn submit_many_with<A: Serialize>(
        &self,
        func: Arc<[u8]>,
        items: &[A],
        chunksize: Option<usize>,
        hook: Option<Hook>,
        prepare: impl FnOnce(&Arc<Job>, usize),
    ) -> Result<Arc<Job>> {
        self.submit_stream::<A, &A>(func, items.iter(), items.len(), chunksize, hook, prepare)
            .map(|(job, _, _)| job)
    }

    /// Submits a job over an input of any kind: one whose length is known
    /// in advance (its `size_hint` is exact: a range, a vector, a slice's
    /// iterator and the adaptors that keep the length) is read as it is
    /// encoded, without a list of its items; any other is collected first,
    /// as Python's `map` makes a list of an input without `len`. Returns
    /// the job, how many items it has, and the chunksize.
    fn submit_input<A: Serialize>(
        &self,
        func: Arc<[u8]>,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        hook: Option<Hook>,
    ) -> Result<(Arc<Job>, usize, usize)> {
        let items = items.into_iter();
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => {
                self.submit_stream::<A, A>(func, items, lo, chunksize, hook, |_, _| {})
            }
            _ => {
                let items: Vec<A> = items.collect();
                let len = items.len();
                self.submit_stream::<A, A>(func, items.into_iter(), len, chunksize, hook, |_, _| {})
            }
        }
    }

    /// Cuts `items` into chunks, encodes them and hands them over as it
    /// goes. `len` is how many items it should have (it sets the automatic
    /// chunksize); an iterator that yields another number (its
    /// `size_hint` lied) is still read to its end, each of its items
    /// runs, and the job counts the units it really made. Returns the job,
    /// how many items it has, and the chunksize.
    fn submit_stream<A: Serialize, B: std::borrow::Borrow<A>>(
        &self,
        func: Arc<[u8]>,
        items: impl Iterator<Item = B>,
        len: usize,
        chunksize: Option<usize>,
        hook: Option<Hook>,
        prepare: impl FnOnce(&Arc<Job>, usize),
    ) -> Result<(Arc<Job>, usize, usize)> {
        check_chunksize(chunksize)?;
        let size = chunksize.unwrap_or_else(|| auto_chunksize(len, self.processes));
        // The count of units is set once the input is seen to end, before
        // the last unit is queued: so the job completes (and its
        // callbacks run) in the supervisor's thread, as for any job.
        let job = Job::new(None, hook);
        prepare(&job, size);
        let mut items = items.peekable();
        // Units are handed over as they are encoded (every
        // `PIPELINE_BYTES` or `PIPELINE_UNITS`), so the workers start
        // while the caller encodes the rest.
        let mut units = Vec::new();
        let mut queued = 0;
        let mut count = 0;
        let mut total = 0;
        let limits = self.unit_defaults.clone();
        // Each chunk's buffer is sized after the one before (chunks are
        // alike): one allocation per chunk instead of a doubling series;
        // a large chunk takes a buffer of a finished unit if the pool
        // kept one (already faulted in).
        let mut last_len = 0;
        loop {
            let buf = self
                .shared
                .items_buffer(last_len + last_len / 16, size >= STREAM_MIN_ITEMS);
            let mut bytes = Items::in_buffer(buf);
            for item in items.by_ref().take(size) {
                if let Err(e) = bytes.push(item.borrow()) {
                    // Units already handed over may run (as Python's
                    // earlier batches do); those not begun are dropped.
                    job.abandon();
                    return Err(e);
                }
            }
            if bytes.is_empty() {
                // An empty input: the job is complete at once.
                self.shared.recycle(bytes.bytes);
                job.set_expected(0);
                break;
            }
            total += bytes.n as usize;
            last_len = bytes.bytes.len();
            queued += bytes.bytes.len();
            units.push(bytes.into_unit(job.clone(), count, func.clone(), limits.clone()));
            count += 1;
            let last = items.peek().is_none();
            if last {
                job.set_expected(count);
            }
            if last || queued >= PIPELINE_BYTES || units.len() >= PIPELINE_UNITS {
                queued = 0;
                if let Err(e) = self.shared.submit(std::mem::take(&mut units)) {
                    job.abandon();
                    return Err(e);
                }
            }
            if last {
                break;
            }
        }
        Ok((job, total, size))
    }

    fn imap_job<'a, A, R, I>(
        &'a self,
        func: Result<Arc<[u8]>>,
        items: I,
        chunksize: Option<usize>,
        ordered: bool,
    ) -> IMap<'a, R>
    where
        A: Serialize,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        let job = Job::new(None, None);
        let size = chunksize.unwrap_or(1);
        let mut input = items.into_iter();
        let unit_job = job.clone();
        let (func, mut first_error) = match check_chunksize(chunksize).and(func) {
            Ok(func) => (Some(func), None),
            Err(e) => (None, Some(e)),
        };
        let limits = self.unit_defaults.clone();
        let feed: job::Feed<'a> = Box::new(move |index| {
            if let Some(e) = first_error.take() {
                return Some(Err(e));
            }
            let func = func.clone()?;
            let mut bytes = Items::default();
            for item in input.by_ref().take(size) {
                if let Err(e) = bytes.push(&item) {
                    return Some(Err(e));
                }
            }
            if bytes.is_empty() {
                return None;
            }
            Some(Ok(bytes.into_unit(
                unit_job.clone(),
                index,
                func,
                limits.clone(),
            )))
        });
        IMap {
            job,
            feed,
            shared: self.shared.clone(),
            deferred: None,
            ordered,
            window: (32 * self.processes).max(64),
            sizes: Vec::new(),
            consumed: 0,
            exhausted: false,
            held: Default::default(),
            arrivals: Default::default(),
            current: Default::default(),
            _value: PhantomData,
        }
    }

    /// Runs `f(args)` in a worker and waits for its value (Python's
    /// `apply`). `f` captures nothing; several arguments go in a tuple.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// assert_eq!(pool.apply(|(a, b): (i32, i32)| a * b, (6, 7))?, 42);
    /// # Ok::<(), brood::Error>(())
    /// ```
    ///
    /// Arguments may hold shared objects (a [`Value`](crate::Value),
    /// [`Connection`](crate::Connection), lock or [`Queue`](crate::Queue)),
    /// in every verb: their fds go with the task (`SCM_RIGHTS`), at most
    /// 253 per task (or chunk).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let hits = brood::Value::new(0u32)?;
    /// pool.apply(|v: brood::Value<u32>| *v.lock().unwrap() += 1, hits.clone())?;
    /// assert_eq!(hits.get()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Starts `f(args)` in a worker and returns at once (Python's
    /// `apply_async`).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let results: Vec<_> = (0..4).map(|i| pool.apply_async(|x: u32| x * 10, i)).collect::<Result<_, _>>()?;
    /// let values: Vec<u32> = results.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(values, [0, 10, 20, 30]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        drop(f);
        let job = self.submit_one(func1::<F, A, R>(), &args, None)?;
        Ok(async_result(job, job::decode_one::<R>))
    }

    /// [`apply_async`](Pool::apply_async) with success and error callbacks
    /// (Python's `callback=` and `error_callback=`), run once in the
    /// parent.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let pool = brood::Pool::new(1)?;
    /// let errors = Arc::new(Mutex::new(Vec::new()));
    /// let e2 = errors.clone();
    /// let cb = brood::pool::Callbacks::new().on_error(move |e: &brood::Error| e2.lock().unwrap().push(e.to_string()));
    /// let r = pool.apply_async_with(|x: u8| -> u8 { panic!("bad {x}") }, 1, cb)?;
    /// assert!(r.get().is_err());
    /// assert!(errors.lock().unwrap()[0].contains("bad 1"));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        args: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        drop(f);
        let hook = callbacks.into_hook(job::decode_one::<R>);
        let job = self.submit_one(func1::<F, A, R>(), &args, hook)?;
        Ok(async_result(job, job::decode_one::<R>))
    }

    /// Submits `f(args)` and returns a future for it (Python's
    /// `ProcessPoolExecutor.submit`): wait on it with
    /// [`TaskFuture::result`], `.await` it, cancel it while it is queued,
    /// or gather many with [`as_completed`] and [`wait`]. The pool's time
    /// limits and retry policy apply; per task, see
    /// [`options`](Pool::options).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let futures: Vec<_> = (0..8u64).map(|x| pool.submit(|x: u64| x * 3, x)).collect::<Result<_, _>>()?;
    /// let total: u64 = futures.iter().map(|f| f.result()).sum::<Result<_, _>>()?;
    /// assert_eq!(total, 84);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        drop(f);
        self.submit_future(func1::<F, A, R>(), &args, None)
    }

    /// [`submit`](Pool::submit) for the `#[brood::task]` named `name`
    /// (`args` is its argument tuple). An unknown name is an
    /// [`ErrorKind::UnknownTask`] error at once.
    ///
    /// ```
    /// #[brood::task]
    /// fn shout(s: String) -> String { s.to_uppercase() }
    ///
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.submit_task::<String, _>(concat!(module_path!(), "::shout"), ("hey".to_string(),))?;
    /// assert_eq!(f.result()?, "HEY");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn submit_task<R, A>(&self, name: &str, args: A) -> Result<TaskFuture<R>>
    where
        A: Serialize,
        R: DeserializeOwned + 'static,
    {
        self.submit_future(func_named(name)?, &args, None)
    }

    /// Per-task time limits and retry policy, over the pool's defaults:
    /// `pool.options().hard_time_limit(d).retry(policy).submit(f, args)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = brood::Pool::new(1)?;
    /// let f = pool.options().hard_time_limit(Duration::from_secs(5)).submit(|x: u8| x, 7)?;
    /// assert_eq!(f.result()?, 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn options(&self) -> TaskOptions<'_> {
        TaskOptions {
            pool: self,
            limits: Limits::default(),
            error: None,
        }
    }

    /// Calls the `#[brood::task]` named `name` with `args` in a worker.
    /// An unknown name is an [`ErrorKind::UnknownTask`] error at once.
    ///
    /// ```
    /// #[brood::task]
    /// fn triple(x: u64) -> u64 { 3 * x }
    ///
    /// let pool = brood::Pool::new(1)?;
    /// let name = concat!(module_path!(), "::triple");
    /// assert_eq!(pool.apply_task::<u64, _>(name, (5u64,))?, 15);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn apply_task<R, A>(&self, name: &str, args: A) -> Result<R>
    where
        A: Serialize,
        R: DeserializeOwned + 'static,
    {
        let job = self.submit_one(func_named(name)?, &args, None)?;
        async_result(job, job::decode_one::<R>).get()
    }

    /// Calls `f` on every item and returns the values in order (Python's
    /// `map`); the chunksize is automatic, as in Python (see
    /// [`chunksize`](Pool::chunksize)). The first error in input order
    /// fails the whole map, as in Python.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.map(|x: i64| -x, vec![1, 2, 3])?, [-1, -2, -3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.verbs().map(f, items)
    }

    /// [`map`](Pool::map) without waiting (Python's `map_async`).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let r = pool.map_async(|x: u8| x as u32 * 2, 0..3)?;
    /// assert_eq!(r.get()?, [0, 2, 4]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.verbs().map_async(f, items)
    }

    /// [`map_async`](Pool::map_async) with callbacks, which receive the
    /// whole list (or the first error), as in Python.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let cb = brood::pool::Callbacks::new().on_success(|v: &Vec<u8>| assert_eq!(v.len(), 3));
    /// pool.map_async_with(|x: u8| x, 0..3, cb)?.get()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_async_with<F, A, R, I>(
        &self,
        f: F,
        items: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.verbs().map_async_with(f, items, callbacks)
    }

    /// Calls the `#[brood::task]` named `name` on every item (each item is
    /// the task's argument tuple), values in order.
    ///
    /// ```
    /// #[brood::task]
    /// fn inc(x: u64) -> u64 { x + 1 }
    ///
    /// let pool = brood::Pool::new(2)?;
    /// let v: Vec<u64> = pool.map_task(concat!(module_path!(), "::inc"), (0..3u64).map(|x| (x,)))?;
    /// assert_eq!(v, [1, 2, 3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_task<R, A, I>(&self, name: &str, items: I) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.verbs().map_task(name, items)
    }

    /// A lazy, ordered iterator of `f` over `items` (Python's `imap`,
    /// chunksize 1 unless [`chunksize`](Pool::chunksize) says otherwise).
    /// Each value comes as soon as it and those before it are done; an
    /// error is yielded in its place and iteration goes on.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let v: Vec<u32> = pool.imap(|x: u32| x + 1, 0..5).collect::<Result<_, _>>()?;
    /// assert_eq!(v, [1, 2, 3, 4, 5]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap<'a, F, A, R, I>(&'a self, f: F, items: I) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.verbs().imap(f, items)
    }

    /// Like [`imap`](Pool::imap), but values come in the order they finish
    /// (Python's `imap_unordered`).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let mut v: Vec<u32> = pool.imap_unordered(|x: u32| x * 2, 0..4).collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, [0, 2, 4, 6]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap_unordered<'a, F, A, R, I>(&'a self, f: F, items: I) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.verbs().imap_unordered(f, items)
    }

    /// Calls `f(a, b, ...)` for every tuple `(a, b, ...)` (Python's
    /// `starmap`), values in order.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.starmap(|a: u32, b: u32| a.pow(b), vec![(2, 3), (3, 2)])?, [8, 9]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: StarFn<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.verbs().starmap(f, items)
    }

    /// [`starmap`](Pool::starmap) without waiting (Python's
    /// `starmap_async`).
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let r = pool.starmap_async(|a: u8, b: u8| a + b, vec![(1, 1), (2, 2)])?;
    /// assert_eq!(r.get()?, [2, 4]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.verbs().starmap_async(f, items)
    }

    /// Takes no more work (Python's `close`): the workers finish what was
    /// submitted, then leave. Later submissions are
    /// [`ErrorKind::PoolClosed`] errors.
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// pool.close();
    /// assert_eq!(pool.apply(|x: u8| x, 1).unwrap_err().kind(), brood::ErrorKind::PoolClosed);
    /// pool.join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn close(&self) {
        self.shared.set_phase(Phase::Closing);
        self.forks.close();
    }

    /// Stops the workers now (Python's `terminate`): they are killed
    /// (SIGKILL) and reaped before this returns, and every result still
    /// pending ends with [`ErrorKind::PoolClosed`].
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// let r = pool.apply_async(|()| std::thread::sleep(std::time::Duration::from_secs(60)), ())?;
    /// pool.terminate();
    /// assert_eq!(r.get().unwrap_err().kind(), brood::ErrorKind::PoolClosed);
    /// assert!(pool.worker_pids().is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.shared.set_phase(Phase::Terminating);
        self.forks.terminate();
        self.wait_supervisor();
    }

    /// Takes no more work and, with `wait`, waits for the work submitted to
    /// finish and the workers to leave (Python's `Executor.shutdown(wait,
    /// cancel_futures)`). With `cancel_futures`, every task no worker has
    /// been handed yet is cancelled first (its outcome is
    /// [`ErrorKind::Cancelled`]; a future's [`TaskFuture::cancelled`] is
    /// true); running tasks finish. Without `wait` it returns at once and
    /// the pool winds down in the background: call [`join`](Pool::join)
    /// later to wait, because dropping the pool still terminates it (its
    /// running tasks then end with [`ErrorKind::PoolClosed`]).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = brood::Pool::new(1)?;
    /// let running = pool.submit(|()| std::thread::sleep(Duration::from_millis(200)), ())?;
    /// std::thread::sleep(Duration::from_millis(50)); // let it start
    /// let queued: Vec<_> = (0..5).map(|i| pool.submit(|x: u8| x, i)).collect::<Result<_, _>>()?;
    /// pool.shutdown(false, true);
    /// assert!(queued[4].cancelled());
    /// pool.join()?;
    /// running.result()?; // it was running: it finished
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            // Returns once the supervisor has cancelled every queued task.
            self.shared.cancel_queued();
        }
        self.shared.set_phase(Phase::Closing);
        self.forks.close();
        if wait {
            self.wait_supervisor();
        }
    }

    /// Waits for the workers to leave (Python's `join`): after
    /// [`close`](Pool::close), once all the work is done; after
    /// [`terminate`](Pool::terminate), at once. Before either, an
    /// [`ErrorKind::InvalidState`] error (Python raises `ValueError`).
    ///
    /// ```
    /// let pool = brood::Pool::new(1)?;
    /// assert!(pool.join().is_err()); // not closed yet
    /// let r = pool.apply_async(|x: u8| x, 9)?;
    /// pool.close();
    /// pool.join()?;
    /// assert_eq!(r.get()?, 9);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.shared.lock().phase == Phase::Running {
            return Err(Error::invalid(
                "join before close or terminate: call pool.close() (or terminate()) first",
            ));
        }
        self.wait_supervisor();
        Ok(())
    }

    fn wait_supervisor(&self) {
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        // Forked calls' workers too (`forked.rs`).
        self.forks.wait();
    }
}

impl Drop for Pool {
    /// Terminates the pool unless it was joined (see the module docs).
    fn drop(&mut self) {
        self.terminate();
    }
}

fn async_result<R>(job: Arc<Job>, decode: Decode<R>) -> AsyncResult<R> {
    AsyncResult {
        job,
        decode,
        _value: PhantomData,
    }
}

/// The pool's verbs with an explicit chunksize, from [`Pool::chunksize`]
/// (Python's `chunksize=` keyword). The methods are those of [`Pool`].
///
/// ```
/// let pool = brood::Pool::new(2)?;
/// let v: Vec<u32> = pool.chunksize(4).imap(|x: u32| x, 0..10).collect::<Result<_, _>>()?;
/// assert_eq!(v, (0..10).collect::<Vec<_>>());
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chunked<'a> {
    pool: &'a Pool,
    chunksize: Option<usize>,
}

impl<'a> Chunked<'a> {
    /// [`Pool::map`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(1).map(|x: u8| x, 0..3)?, [0, 1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        drop(f);
        let (job, len, size) =
            self.pool
                .submit_input(func1::<F, A, R>(), items, self.chunksize, None)?;
        if size >= STREAM_MIN_ITEMS {
            // Few, large units: decode each as it arrives, while the
            // workers run the next ones.
            job::collect_streaming::<R>(&job, len)
        } else {
            async_result(job, job::decode_all::<R>).get()
        }
    }

    /// [`Pool::map_async`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(2).map_async(|x: u8| x, 0..3)?.get()?, [0, 1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_async<F, A, R, I>(self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        drop(f);
        let (job, _, _) =
            self.pool
                .submit_input(func1::<F, A, R>(), items, self.chunksize, None)?;
        Ok(async_result(job, job::decode_all::<R>))
    }

    /// [`Pool::map_async_with`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// let cb = brood::pool::Callbacks::new().on_success(|v: &Vec<u8>| assert_eq!(v.len(), 3));
    /// pool.chunksize(1).map_async_with(|x: u8| x, 0..3, cb)?.get()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_async_with<F, A, R, I>(
        self,
        f: F,
        items: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        drop(f);
        let hook = callbacks.into_hook(job::decode_all::<R>);
        let (job, _, _) =
            self.pool
                .submit_input(func1::<F, A, R>(), items, self.chunksize, hook)?;
        Ok(async_result(job, job::decode_all::<R>))
    }

    /// [`Pool::map_task`] with this chunksize.
    ///
    /// ```
    /// #[brood::task]
    /// fn neg(x: i64) -> i64 { -x }
    ///
    /// let pool = brood::Pool::new(1)?;
    /// let v: Vec<i64> = pool.chunksize(2).map_task(concat!(module_path!(), "::neg"), [(1i64,), (2,)])?;
    /// assert_eq!(v, [-1, -2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_task<R, A, I>(self, name: &str, items: I) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let (job, _, _) = self
            .pool
            .submit_input(func_named(name)?, items, self.chunksize, None)?;
        async_result(job, job::decode_all::<R>).get()
    }

    /// [`Pool::imap`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(3).imap(|x: u8| x, 0..4).count(), 4);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap<F, A, R, I>(self, f: F, items: I) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        drop(f);
        self.pool
            .imap_job(Ok(func1::<F, A, R>()), items, self.chunksize, true)
    }

    /// [`Pool::imap_unordered`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(3).imap_unordered(|x: u8| x, 0..4).count(), 4);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap_unordered<F, A, R, I>(self, f: F, items: I) -> IMap<'a, R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        drop(f);
        self.pool
            .imap_job(Ok(func1::<F, A, R>()), items, self.chunksize, false)
    }

    /// [`Pool::starmap`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(1).starmap(|a: u8, b: u8| a * b, [(2, 3)])?, [6]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn starmap<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>>
    where
        F: StarFn<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.starmap_async(f, items)?.get()
    }

    /// [`Pool::starmap_async`] with this chunksize.
    ///
    /// ```
    /// let pool = brood::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(1).starmap_async(|a: u8, b: u8| a * b, [(2, 3)])?.get()?, [6]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn starmap_async<F, A, R, I>(self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        drop(f);
        let (job, _, _) =
            self.pool
                .submit_input(func_star::<F, A, R>(), items, self.chunksize, None)?;
        Ok(async_result(job, job::decode_all::<R>))
    }
}

#[cfg(test)]
mod tests {
    use super::auto_chunksize;

    #[test]
    fn chunksize_as_python() {
        // divmod(len, 4 * processes), +1 on a remainder.
        assert_eq!(auto_chunksize(1_000_000, 2), 125_000);
        assert_eq!(auto_chunksize(10, 2), 2);
        assert_eq!(auto_chunksize(9, 2), 2);
        assert_eq!(auto_chunksize(8, 2), 1);
        assert_eq!(auto_chunksize(0, 4), 1);
        assert_eq!(auto_chunksize(1, 4), 1);
    }
}
