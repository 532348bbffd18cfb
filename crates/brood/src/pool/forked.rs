//! Capturing closures in a pool that forks ([`Pool::forked`]).
//!
//! The pool's own workers were started before the closure existed, so they
//! cannot call it. Each call of a verb here gets short-lived workers of its
//! own, forked after the closure exists: a small supervisor (the pool's
//! `Supervisor`, in a thread of its own, the pool's `Phase::Closing` doing
//! the rest) forks `min(processes, units)` of them from its thread, hands
//! them only this call's units, replaces one that dies while units remain,
//! and quits and reaps them all once the last unit is done. The pool's
//! own workers serve other jobs meanwhile. See `README.md`, "Capturing
//! closures when the pool forks".

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::launch::WireTarget;
use crate::process::{Builder, Process};
use crate::start_method::StartMethod;
use crate::task::{self, Fail};

use super::job::{self, AsyncResult, IMap, Job};
use super::limits::UnitLimits;
use super::supervisor::{self, Config, Phase, Shared, Unit};
use super::worker::{self, Boot, FdArg, InitBlob};
use super::{Items, Pool, async_result, auto_chunksize, check_chunksize, status};

/// A call's closure as its short-lived workers run it: decode the
/// arguments, call, encode the value.
pub(crate) type JobFn = Arc<dyn Fn(&[u8]) -> std::result::Result<Vec<u8>, Fail> + Send + Sync>;

thread_local! {
    /// The closure of the call this process was forked for: set in a
    /// short-lived worker only, just after its fork (the parent never sets
    /// it, so no address crosses and a worker knows only its own call's
    /// closure).
    static JOB_FN: RefCell<Option<JobFn>> = const { RefCell::new(None) };
}

/// The function every unit of a forked call names (by trampoline offset,
/// as any capture-free function): it calls the closure the worker was
/// forked with. In any other process it fails the item with a clear
/// error instead of running something else.
fn call_job(args: &[u8]) -> std::result::Result<Vec<u8>, Fail> {
    let f = JOB_FN.with(|j| j.borrow().clone());
    match f {
        Some(f) => f(args),
        None => Err(Fail::UnknownTask(
            "internal error: a forked call's task reached a worker that was not forked for it"
                .into(),
        )),
    }
}

/// The encoded function reference of a forked call's units.
fn job_func() -> Arc<[u8]> {
    worker::encode_func(&WireTarget::Offset(task::to_offset(call_job))).into()
}

/// A short-lived worker: the ordinary worker loop, in a child forked (from
/// the supervisor's thread) with the call's closure (`supervisor.rs`,
/// `start_worker`, when `Config::closure` is set).
pub(crate) fn fork_worker(builder: Builder, f: JobFn, mut boot: Boot) -> Process<()> {
    builder.fork(move || {
        JOB_FN.with(|j| *j.borrow_mut() = Some(f));
        // The initializer's fds are the supervisor's own, shared (`Arc`)
        // with its `Config`: a spawned worker gets them as fresh fds
        // through its encoded `Boot`, this forked one takes duplicates
        // (`run_init` uses an fd only if it alone holds it).
        if let Some(init) = &mut boot.init {
            for fd in &mut init.fds {
                if let Ok(own) = fd.0.try_clone() {
                    *fd = FdArg(Arc::new(own));
                }
            }
        }
        worker::worker_main(boot);
    })
}

/// `f` as its workers call it.
fn boxed<F, A, R>(f: F) -> JobFn
where
    F: Fn(A) -> R + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    Arc::new(move |args: &[u8]| {
        let args: A = crate::codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
        task::encode_value(&f(args))
    })
}

/// `f`, called with each tuple's items, as its workers call it.
fn boxed_star<F, A, R>(f: F) -> JobFn
where
    F: ForkStarFn<A, R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    Arc::new(move |args: &[u8]| {
        let args: A = crate::codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
        task::encode_value(&f.call_star(args))
    })
}

/// A closure of several arguments that [`Forked::starmap`] calls with the
/// items of each tuple (the forked counterpart of
/// [`StarFn`](crate::pool::StarFn): called by reference, many times, so
/// it may capture). Implemented for every `Fn(A, B, ...) -> R + Send +
/// Sync + 'static` of up to six arguments.
///
/// ```
/// use brood::pool::ForkStarFn;
///
/// let offset = 100;
/// let f = move |a: u32, b: u32| a + b + offset;
/// assert_eq!(f.call_star((1, 2)), 103);
/// ```
pub trait ForkStarFn<Args, R>: Send + Sync + 'static {
    /// Calls the closure with the tuple's items as its arguments.
    fn call_star(&self, args: Args) -> R;
}

macro_rules! fork_star_fn {
    ($($a:ident),+) => {
        impl<F, R, $($a),+> ForkStarFn<($($a,)+), R> for F
        where
            F: Fn($($a),+) -> R + Send + Sync + 'static,
        {
            #[allow(non_snake_case)]
            fn call_star(&self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
        }
    };
}
fork_star_fn!(A);
fork_star_fn!(A, B);
fork_star_fn!(A, B, C);
fork_star_fn!(A, B, C, D);
fork_star_fn!(A, B, C, D, E);
fork_star_fn!(A, B, C, D, E, G);

/// What a pool keeps to make its forked calls' supervisors, and the calls
/// running now (so that `close`, `terminate`, `join` and drop of the pool
/// reach their workers too).
pub(crate) struct Forks {
    recipe: Recipe,
    subs: Mutex<Subs>,
}

/// The pool's settings a call's short-lived workers share.
pub(crate) struct Recipe {
    /// The pool's start method (`None`: the default, read at each call).
    pub(crate) method: Option<StartMethod>,
    pub(crate) init: Option<InitBlob>,
    pub(crate) sigint: bool,
    /// Status page, `max_rss`, cgroups: as the pool's.
    pub(crate) setup: status::Setup,
    /// The pool's time limits and retry policy, as each unit carries them.
    pub(crate) limits: UnitLimits,
}

struct Subs {
    /// `Running` until the pool is closed or terminated.
    phase: Phase,
    /// The calls' supervisors; a finished one is gone (its thread held the
    /// last strong reference but the call's own).
    live: Vec<Weak<Sub>>,
}

/// One call's supervisor, as the pool and the call see it.
struct Sub {
    shared: Arc<Shared>,
    /// Set once its thread has ended: every short-lived worker was reaped.
    done: Mutex<bool>,
    cond: Condvar,
}

impl Sub {
    /// Waits until its workers are all gone (never forever: it ends once
    /// its units have their outcomes, or at once when terminated).
    fn wait_done(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.cond.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Says `done` when the supervisor's thread ends, however it ends.
struct DoneGuard(Arc<Sub>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        *self.0.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.cond.notify_all();
    }
}

impl Forks {
    pub(crate) fn new(recipe: Recipe) -> Forks {
        Forks {
            recipe,
            subs: Mutex::new(Subs {
                phase: Phase::Running,
                live: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls running now.
    fn live(&self) -> Vec<Arc<Sub>> {
        self.lock().live.iter().filter_map(Weak::upgrade).collect()
    }

    /// The pool was closed: running calls finish what they were given and
    /// take no more (a forked `imap` stops pulling input); later calls
    /// are refused.
    pub(crate) fn close(&self) {
        let mut subs = self.lock();
        if subs.phase == Phase::Running {
            subs.phase = Phase::Closing;
        }
        drop(subs);
        for sub in self.live() {
            sub.shared.set_phase(Phase::Closing);
        }
    }

    /// The pool was terminated: every call's workers are killed and
    /// reaped before this returns; their pending results end with
    /// `PoolClosed`.
    pub(crate) fn terminate(&self) {
        self.lock().phase = Phase::Terminating;
        let live = self.live();
        for sub in &live {
            sub.shared.set_phase(Phase::Terminating);
        }
        for sub in &live {
            sub.wait_done();
        }
    }

    /// Waits for every running call's workers to be gone (`join`).
    pub(crate) fn wait(&self) {
        for sub in self.live() {
            sub.wait_done();
        }
    }

    /// Whether a forked call may run on `pool` now: its start method is
    /// fork, it takes work, and forking is allowed.
    fn check(&self, pool: &Pool) -> Result<()> {
        let method = self
            .recipe
            .method
            .unwrap_or_else(crate::start_method::get_start_method);
        if method != StartMethod::Fork {
            return Err(Error::invalid(format!(
                "pool.forked() runs a capturing closure in workers forked after it exists, so the \
                 pool must use StartMethod::Fork, and this one uses {method}. Build it with \
                 .start_method(StartMethod::Fork), or use the ordinary verbs with a function that \
                 captures nothing (data as arguments) or a #[brood::task] (pool.map_task)"
            )));
        }
        if self.lock().phase != Phase::Running {
            return Err(supervisor::not_running());
        }
        pool.shared.lock().accepting()?;
        if !crate::os::sys::threaded_fork_allowed() && !crate::os::single_threaded() {
            return Err(Error::simple(
                ErrorKind::ForkWithThreads,
                "pool.forked() forks this program while it runs other threads (the pool's own \
                 supervisor at least), and a lock one of them holds at the fork would stay locked \
                 in the worker. Opt in with brood::allow_fork_with_threads() (see its safety \
                 rules), or use the ordinary verbs with a function that captures nothing or a \
                 #[brood::task]",
            ));
        }
        Ok(())
    }

    /// Starts a call's supervisor and its `workers` short-lived workers,
    /// forked with `f`; they are all running when this returns.
    fn start(&self, pool: &Pool, f: JobFn, workers: usize) -> Result<Arc<Sub>> {
        let mut setup = self.recipe.setup.clone();
        setup.name = Some(sub_name(&pool.board.name));
        let board = status::Board::new(setup, workers)?;
        let config = Config {
            processes: workers,
            method: Some(StartMethod::Fork),
            init: self.recipe.init.clone(),
            max_tasks: None,
            sigint: self.recipe.sigint,
            board,
            closure: Some(f),
        };
        let (shared, sup) = supervisor::new(config)?;
        let sub = Arc::new(Sub {
            shared,
            done: Mutex::new(false),
            cond: Condvar::new(),
        });
        // Listed before its thread starts: a `terminate` from now on
        // reaches it (and waits for its workers) even if it races with
        // this start.
        {
            let mut subs = self.lock();
            if subs.phase != Phase::Running {
                return Err(supervisor::not_running());
            }
            subs.live.retain(|w| w.strong_count() > 0);
            subs.live.push(Arc::downgrade(&sub));
        }
        let guard = DoneGuard(sub.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("brood-pool-fork".into())
            .spawn(move || {
                let _done = guard;
                // Dropped before `_done`: the workers are reaped first.
                let mut sup = sup;
                match sup.start_workers() {
                    Ok(()) => {
                        let _ = tx.send(Ok(()));
                        sup.run();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        if let Err(e) = spawned {
            return Err(Error::os_error(
                "cannot start the supervisor thread of a forked call",
                e,
            ));
        }
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                sub.wait_done();
                return Err(e);
            }
            Err(_) => {
                sub.wait_done();
                return Err(Error::invalid(
                    "the supervisor thread of a forked call failed to start",
                ));
            }
        }
        Ok(sub)
    }
}

/// A call's supervisor's name (its status page): the pool's, marked.
fn sub_name(pool: &str) -> String {
    let mut name = format!("{pool} (forked)");
    if name.len() > 64 {
        let mut end = 64 - " (forked)".len();
        while !pool.is_char_boundary(end) {
            end -= 1;
        }
        name = format!("{} (forked)", &pool[..end]);
    }
    name
}

/// The pool's verbs for closures that capture, from [`Pool::forked`]:
/// each call forks short-lived workers after the closure exists, which
/// run only that call's tasks and leave when its last task is done. The
/// pool must use [`StartMethod::Fork`] (any other start method: every verb
/// is an [`ErrorKind::InvalidState`] error), and, since the pool runs a
/// supervisor thread, the program must have opted in with
/// [`allow_fork_with_threads`](crate::allow_fork_with_threads) (else an
/// [`ErrorKind::ForkWithThreads`] error). The ordinary verbs keep refusing
/// capturing closures at compile time.
///
/// Costs: one `fork` per worker per call (about a millisecond for a small
/// parent, more for a large one): worth it for a `map`, not for a tight
/// loop of `apply`. The workers start with only the forking thread, so a
/// closure that takes a lock another thread of this program held at the
/// fork waits for ever (the fork start method's rule everywhere).
///
/// ```
/// use std::sync::Arc;
/// use brood::{Pool, StartMethod};
///
/// // SAFETY: this program's other threads (the pool's) hold no lock the
/// // closure takes.
/// unsafe { brood::allow_fork_with_threads() };
/// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
/// let prices = Arc::new(vec![3, 5, 7]);
/// let rate = 2;
/// let v = pool.forked().map(move |i: usize| prices[i] * rate, 0..3)?;
/// assert_eq!(v, [6, 10, 14]);
/// # Ok::<(), brood::Error>(())
/// ```
///
/// The ordinary verbs still refuse the same closure, at compile time:
///
/// ```compile_fail
/// let pool = brood::Pool::new(2)?;
/// let rate = 2;
/// let v = pool.map(move |x: u32| x * rate, 0..3)?; // captures `rate`: a compile error
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Forked<'a> {
    pub(crate) pool: &'a Pool,
    pub(crate) chunksize: Option<usize>,
}

impl fmt::Debug for Forked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forked")
            .field("processes", &self.pool.processes)
            .field("chunksize", &self.chunksize)
            .finish()
    }
}

impl<'a> Forked<'a> {
    /// The same verbs with an explicit chunksize (Python's `chunksize=`;
    /// automatic as in Python when not given). Zero is an error from the
    /// verb.
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let step = 10;
    /// let v = pool.forked().chunksize(5).map(move |x: u32| x * step, 0..20)?;
    /// assert_eq!(v[19], 190);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn chunksize(self, chunksize: usize) -> Forked<'a> {
        Forked {
            chunksize: Some(chunksize),
            ..self
        }
    }

    /// Encodes `items` into units of one new job, forks their workers and
    /// hands them the units; `None` for the call's supervisor when there
    /// is nothing to run.
    fn submit_many<A: Serialize>(
        &self,
        f: JobFn,
        items: &[A],
    ) -> Result<(Arc<Job>, Option<Arc<Sub>>)> {
        let pool = self.pool;
        pool.forks.check(pool)?;
        check_chunksize(self.chunksize)?;
        let size = self
            .chunksize
            .unwrap_or_else(|| auto_chunksize(items.len(), pool.processes));
        let count = items.len().div_ceil(size);
        let job = Job::new(Some(count), None);
        // Encoded before anything is forked: an argument that does not
        // encode costs no fork.
        let func = job_func();
        let limits = &pool.forks.recipe.limits;
        let mut units: Vec<Unit> = Vec::with_capacity(count);
        for (index, chunk) in items.chunks(size).enumerate() {
            let mut bytes = Items::default();
            for item in chunk {
                bytes.push(item)?;
            }
            units.push(bytes.into_unit(job.clone(), index, func.clone(), limits.clone()));
        }
        if units.is_empty() {
            return Ok((job, None));
        }
        let sub = pool.forks.start(pool, f, count.min(pool.processes))?;
        let submitted = sub.shared.submit(units);
        // Nothing more comes: the workers leave once these are done.
        sub.shared.set_phase(Phase::Closing);
        if let Err(e) = submitted {
            sub.wait_done();
            return Err(e);
        }
        Ok((job, Some(sub)))
    }

    /// Runs `f(args)` in a worker forked for it and waits for its value
    /// (Python's `apply`, with a closure that captures). The worker is gone
    /// when this returns.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::Arc;
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(1).start_method(StartMethod::Fork).build()?;
    /// let ages = Arc::new(HashMap::from([("ada", 36), ("alan", 41)]));
    /// let age = pool.forked().apply(move |name: String| ages[name.as_str()], "alan".to_string())?;
    /// assert_eq!(age, 41);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn apply<F, A, R>(self, f: F, args: A) -> Result<R>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let (job, sub) = self.submit_many(boxed(f), std::slice::from_ref(&args))?;
        finish(async_result(job, job::decode_one::<R>).get(), sub)
    }

    /// Starts `f(args)` in a worker forked for it and returns at once
    /// (Python's `apply_async`, with a closure that captures). The worker
    /// leaves right after the value is in (the pool's `join` or
    /// `terminate` waits for it).
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(1).start_method(StartMethod::Fork).build()?;
    /// let greeting = String::from("hello");
    /// let r = pool.forked().apply_async(move |who: String| format!("{greeting}, {who}"), "you".to_string())?;
    /// assert_eq!(r.get()?, "hello, you");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn apply_async<F, A, R>(self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let (job, _sub) = self.submit_many(boxed(f), std::slice::from_ref(&args))?;
        Ok(async_result(job, job::decode_one::<R>))
    }

    /// Calls `f` on every item in workers forked for this call, values in
    /// order (Python's `map`, with a closure that captures). The first
    /// error in input order fails the whole map, as in Python. The workers
    /// are gone when this returns.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let words = Arc::new(vec!["a", "bb", "ccc"]);
    /// assert_eq!(pool.forked().map(move |i: usize| words[i].len(), 0..3)?, [1, 2, 3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        let (job, sub) = self.submit_many(boxed(f), &items)?;
        finish(async_result(job, job::decode_all::<R>).get(), sub)
    }

    /// [`map`](Forked::map) without waiting (Python's `map_async`).
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let bonus = vec![100u32, 200];
    /// let r = pool.forked().map_async(move |i: usize| bonus[i % 2], 0..4)?;
    /// assert_eq!(r.get()?, [100, 200, 100, 200]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn map_async<F, A, R, I>(self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        let (job, _sub) = self.submit_many(boxed(f), &items)?;
        Ok(async_result(job, job::decode_all::<R>))
    }

    /// Calls `f(a, b, ...)` for every tuple `(a, b, ...)` in workers
    /// forked for this call (Python's `starmap`, with a closure that
    /// captures), values in order.
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let scale = 10;
    /// let v = pool.forked().starmap(move |a: u32, b: u32| (a + b) * scale, [(1, 2), (3, 4)])?;
    /// assert_eq!(v, [30, 70]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn starmap<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>>
    where
        F: ForkStarFn<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        let (job, sub) = self.submit_many(boxed_star(f), &items)?;
        finish(async_result(job, job::decode_all::<R>).get(), sub)
    }

    /// [`starmap`](Forked::starmap) without waiting (Python's
    /// `starmap_async`).
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let sep = String::from("-");
    /// let r = pool.forked().starmap_async(move |a: String, b: String| format!("{a}{sep}{b}"), [("x".into(), "y".into())])?;
    /// assert_eq!(r.get()?, ["x-y"]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn starmap_async<F, A, R, I>(self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: ForkStarFn<A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        let (job, _sub) = self.submit_many(boxed_star(f), &items)?;
        Ok(async_result(job, job::decode_all::<R>))
    }

    /// A lazy, ordered iterator of `f` over `items` in workers forked for
    /// this call (Python's `imap`, with a closure that captures; chunksize
    /// 1 unless [`chunksize`](Forked::chunksize) says otherwise). Input is
    /// pulled as workers free up, so an endless iterator works. The
    /// workers are forked by this call (its errors: see [`Forked`]) and
    /// are gone once the iterator has returned `None`; dropped early, the
    /// iterator lets the tasks in flight finish in the background, then
    /// the workers leave.
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let base = 1_000u64;
    /// let v: Vec<u64> = pool.forked().imap(move |x: u64| base + x, 0..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(v, [1_000, 1_001, 1_002]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap<F, A, R, I>(self, f: F, items: I) -> Result<ForkedIMap<'a, R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_job(boxed(f), items, true)
    }

    /// Like [`imap`](Forked::imap), but values come in the order they
    /// finish (Python's `imap_unordered`).
    ///
    /// ```
    /// use brood::{Pool, StartMethod};
    ///
    /// // SAFETY: this program's other threads (the pool's) hold no lock the
    /// // closure takes.
    /// unsafe { brood::allow_fork_with_threads() };
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// let k = 3u32;
    /// let mut v: Vec<u32> = pool.forked().imap_unordered(move |x: u32| x * k, 0..4)?.collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, [0, 3, 6, 9]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn imap_unordered<F, A, R, I>(self, f: F, items: I) -> Result<ForkedIMap<'a, R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_job(boxed(f), items, false)
    }

    fn imap_job<A, R, I>(self, f: JobFn, items: I, ordered: bool) -> Result<ForkedIMap<'a, R>>
    where
        A: Serialize,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        let pool = self.pool;
        pool.forks.check(pool)?;
        check_chunksize(self.chunksize)?;
        let sub = pool.forks.start(pool, f, pool.processes)?;
        // The pool's lazy iterator, fed to this call's supervisor instead
        // of the pool's (it submits nothing before its first `next`).
        let mut inner = pool.imap_job(Ok(job_func()), items, self.chunksize, ordered);
        inner.shared = sub.shared.clone();
        Ok(ForkedIMap {
            inner,
            sub,
            closed: false,
        })
    }
}

/// A blocking verb's value, once its workers are gone.
fn finish<R>(value: Result<R>, sub: Option<Arc<Sub>>) -> Result<R> {
    if let Some(sub) = sub {
        sub.wait_done();
    }
    value
}

/// The iterator of [`Forked::imap`] and [`Forked::imap_unordered`]: one
/// `Result` per input item, as [`IMap`](crate::pool::IMap).
///
/// Lazy: input is pulled (and sent to the call's workers) only while a
/// small window of tasks is in flight, so an endless input works. Once the
/// input is exhausted the workers leave after the last task; once the
/// iterator returned `None` they are gone. Dropped early, it lets the
/// tasks in flight finish in the background and the workers leave then.
///
/// ```
/// use brood::{Pool, StartMethod};
///
/// // SAFETY: this program's other threads (the pool's) hold no lock the
/// // closure takes.
/// unsafe { brood::allow_fork_with_threads() };
/// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
/// let suffix = String::from("!");
/// let mut it = pool.forked().imap(move |s: String| s + &suffix, ["hi".to_string()])?;
/// assert_eq!(it.next().transpose()?, Some("hi!".to_string()));
/// assert!(it.next().is_none());
/// # Ok::<(), brood::Error>(())
/// ```
pub struct ForkedIMap<'a, R> {
    inner: IMap<'a, R>,
    sub: Arc<Sub>,
    /// The call's supervisor was told to take no more units.
    closed: bool,
}

impl<R: DeserializeOwned> Iterator for ForkedIMap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let item = self.inner.next();
        if !self.closed && (self.inner.exhausted || item.is_none()) {
            // No more input: the workers leave after the last unit.
            self.sub.shared.set_phase(Phase::Closing);
            self.closed = true;
        }
        if item.is_none() {
            // Every unit has its outcome: they are leaving now.
            self.sub.wait_done();
        }
        item
    }
}

impl<R> Drop for ForkedIMap<'_, R> {
    /// Lets the units in flight finish, then the workers leave (it does
    /// not wait for them: a task may run long).
    fn drop(&mut self) {
        if !self.closed {
            self.sub.shared.set_phase(Phase::Closing);
        }
    }
}

impl<R> fmt::Debug for ForkedIMap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForkedIMap")
            .field("inner", &self.inner)
            .field("closed", &self.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::sub_name;

    #[test]
    fn sub_names_fit_the_status_page() {
        assert_eq!(sub_name("pool-3"), "pool-3 (forked)");
        let long = "é".repeat(40); // 80 bytes
        let name = sub_name(&long);
        assert!(name.len() <= 64, "{}", name.len());
        assert!(name.ends_with(" (forked)"));
    }
}
