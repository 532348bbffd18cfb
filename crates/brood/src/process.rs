//! `Process`: run a function in a child process and get its value back.
//!
//! The same verbs as Python's `multiprocessing.Process` — `start`, `join`,
//! `join_timeout`, `is_alive`, `pid`, `name`, `exitcode`, `terminate`,
//! `kill`, `close`, daemon children — except that `join` hands back what the
//! function returned, or an error that says why there is nothing.
//!
//! ```
//! use brood::Process;
//!
//! let a = 1;
//! let mut p = Process::with_args(|a: i32| a + 10_000, a);
//! p.start()?;
//! assert_eq!(p.join()?, 10_001);
//! assert_eq!(p.exitcode(), Some(0));
//! # Ok::<(), brood::Error>(())
//! ```

use std::cell::{Cell, OnceCell};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children;
use crate::codec;
use crate::error::{Error, ErrorKind, PanicReport, Result};
use crate::handle;
use crate::launch::{self, Body, HEADER_LEN, Launcher, Popen, Spec, Work};
use crate::os::{self, ExitStatus, Pid, PidFd};
use crate::start_method::StartMethod;
use crate::task;

/// A function running (or about to run) in a child process.
///
/// `R` is what the function returns; it crosses back to the parent through
/// the codec, so it must be serde-serializable.
///
/// # Start method
///
/// A child starts by one of three methods ([`StartMethod`]): `ForkServer`
/// (the default, as in Python 3.14), `Spawn` or `Fork`. Choose one per
/// process with [`Builder::start_method`], per [`Context`](crate::Context),
/// or for the program with [`set_start_method`](crate::set_start_method).
/// Under spawn and forkserver the function must capture nothing (its
/// arguments and value cross through the codec); a closure that captures
/// runs only in a forked child ([`Process::fork`]). Forking a program that
/// runs other threads is hazardous (a lock another thread held at the
/// moment of the fork stays locked in the child), so then brood refuses a
/// capturing closure ([`ErrorKind::ForkWithThreads`]) and has the
/// forkserver fork capture-free functions, unless the program opted in
/// with [`allow_fork_with_threads`].
///
/// # Differences from Python
///
/// - `join` returns the function's value; an error says whether the child
///   panicked (with message and location), was killed by a signal, or exited
///   early. A later `join` returns an [`ErrorKind::InvalidState`] error.
/// - `join_timeout` returns a [`ErrorKind::Timeout`] error while the child runs,
///   where Python's `join(timeout)` returns `None` silently.
/// - A daemon child also dies when its parent is SIGKILLed
///   (`PR_SET_PDEATHSIG`), where Python's daemon child lives on. The kernel
///   sends that signal when the *thread* that started the child exits, so
///   start long-lived daemon children from a long-lived thread.
///
/// ```
/// use std::time::Duration;
/// use brood::Process;
///
/// let mut p = Process::builder().name("sleeper").target(|| std::thread::sleep(Duration::from_secs(10)));
/// p.start()?;
/// assert!(p.join_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
/// assert!(p.is_alive());
/// p.terminate()?;
/// assert!(p.join().is_err());
/// assert_eq!(p.exitcode(), Some(-15));
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Process<R> {
    /// The given name; `None`: the default for `identity` (made in
    /// `default_name` when asked for: a start allocates nothing for it).
    name: Option<String>,
    default_name: OnceCell<String>,
    daemon: bool,
    identity: children::Ident,
    /// The start method asked for (`None`: the default), then the one used.
    method: Option<StartMethod>,
    /// The child's auth key: its own, else its creator's when it was made.
    authkey: Option<children::Key>,
    state: State<R>,
    _value: PhantomData<fn() -> R>,
}

enum State<R> {
    Ready(Result<Work>),
    Running(Running),
    Done(Done<R>),
    Closed,
}

struct Running {
    popen: Popen,
    result: OwnedFd,
    /// Bytes of the result frame read so far: the first read's in
    /// `small` (a small frame, the usual case, then allocates nothing: each
    /// allocation and free is a heap page written while a child may share
    /// it, so a copy-on-write fault), later ones in `buf`.
    small: [u8; SMALL_FRAME],
    small_len: u8,
    buf: Vec<u8>,
    /// Whether the result pipe has reached end of file.
    eof: bool,
    /// The exit status, once reaped by `is_alive`/`exitcode`.
    status: Cell<Option<ExitStatus>>,
    /// The fork launcher's write end (see `Launched::keep`).
    keep: Option<OwnedFd>,
}

struct Done<R> {
    status: Option<ExitStatus>,
    pid: Pid,
    outcome: Option<Result<R>>,
}

/// Sets a child's name and daemon flag before it exists (Python's
/// `Process(name=..., daemon=...)` keywords).
///
/// ```
/// let p = brood::Process::builder().name("worker").daemon(true).target(|| 1);
/// assert_eq!(p.name(), "worker");
/// assert!(p.is_daemon());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    authkey: Option<Vec<u8>>,
}

impl Builder {
    /// The process's name; the default is Python's `Process-N`.
    ///
    /// ```
    /// assert_eq!(brood::Process::builder().name("x").target(|| ()).name(), "x");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is terminated when its parent exits (and killed when the
    /// parent dies abruptly) instead of being waited for, and may not start
    /// children of its own.
    ///
    /// ```
    /// assert!(brood::Process::builder().daemon(true).target(|| ()).is_daemon());
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// The start method for this process; the default is
    /// [`get_start_method`](crate::get_start_method).
    ///
    /// ```
    /// use brood::StartMethod;
    /// let mut p = brood::Process::builder().start_method(StartMethod::Spawn).target(|| 1);
    /// p.start().unwrap();
    /// assert_eq!(p.start_method(), Some(StartMethod::Spawn));
    /// p.join().unwrap();
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// The child's auth key (Python's `Process(...).authkey = key` before
    /// `start`): what [`authkey`](crate::authkey) returns in it, and what
    /// its own children inherit. The default is this process's key when
    /// the `Process` is made (as in Python: a later
    /// [`set_authkey`](crate::set_authkey) does not reach it).
    ///
    /// ```
    /// let mut p = brood::Process::builder().authkey(b"for the child").target(brood::authkey);
    /// p.start()?;
    /// assert_eq!(p.join()?, b"for the child");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn authkey(mut self, key: impl Into<Vec<u8>>) -> Builder {
        self.authkey = Some(key.into());
        self
    }

    /// The function the child runs, which must capture nothing (a compile
    /// error otherwise), so that every start method can run it.
    ///
    /// ```
    /// let mut p = brood::Process::builder().target(|| "hi".to_string());
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), "hi");
    /// ```
    pub fn target<F, R>(self, f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        const { task::assert_captures_nothing::<F>() };
        drop(f);
        let work = codec::encode(&()).map(|args| Work::Function {
            call: task::trampoline0::<F, R>,
            args,
            fds: Vec::new(),
        });
        self.build(work, None)
    }

    /// The function the child runs, called with `args` (Python's `args=`).
    /// `f` must capture nothing; `args` cross through the codec.
    ///
    /// ```
    /// let mut p = brood::Process::builder().target_with(|(a, b): (i32, i32)| a * b, (6, 7));
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 42);
    /// ```
    pub fn target_with<F, A, R>(self, f: F, args: A) -> Process<R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        const { task::assert_captures_nothing::<F>() };
        drop(f);
        let work = handle::encode_once_with_fds(&args).map(|(args, fds)| Work::Function {
            call: task::trampoline1::<F, A, R>,
            args,
            fds,
        });
        self.build(work, None)
    }

    /// Any closure, captures included, run in a forked child: the start
    /// method is always [`StartMethod::Fork`]. In a program that runs other
    /// threads, `start` refuses it ([`ErrorKind::ForkWithThreads`]) unless
    /// the program opted in with [`allow_fork_with_threads`].
    ///
    /// ```
    /// let greeting = String::from("hello");
    /// let mut p = brood::Process::builder().name("greeter").fork(move || greeting.len());
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 5);
    /// ```
    pub fn fork<F, R>(self, f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let body: Body = Box::new(move || {
            let value = f();
            launch::encode_small(&value)
        });
        self.build(Ok(Work::Closure(body)), Some(StartMethod::Fork))
    }

    /// A task registered with `#[brood::task]`, called by name with `args`.
    /// An unknown name is an [`ErrorKind::UnknownTask`] error from `start`;
    /// arguments of the wrong type, an [`ErrorKind::Codec`] error from `join`.
    ///
    /// ```
    /// #[brood::task]
    /// fn double(x: u64) -> u64 { 2 * x }
    ///
    /// let name = concat!(module_path!(), "::double");
    /// let mut p = brood::Process::builder().task::<u64, _>(name, (21u64,));
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 42);
    /// ```
    pub fn task<R, A>(self, name: &str, args: A) -> Process<R>
    where
        A: Serialize,
        R: Serialize + DeserializeOwned + 'static,
    {
        let work = handle::encode_once_with_fds(&args).map(|(args, fds)| Work::Task {
            name: name.to_string(),
            args,
            fds,
        });
        self.build(work, None)
    }

    fn build<R>(self, work: Result<Work>, forced: Option<StartMethod>) -> Process<R> {
        let mut table = children::lock();
        let identity = table.next_identity();
        // As in Python, a process takes its creator's key when it is made
        // (`Process.__init__` copies the config), not when it starts.
        let authkey = match self.authkey {
            Some(key) => children::Key::given(key),
            None => table
                .me
                .authkey
                .get_or_insert_with(children::Key::random)
                .clone(),
        };
        drop(table);
        Process {
            name: self.name,
            default_name: OnceCell::new(),
            daemon: self.daemon,
            identity,
            method: forced.or(self.method),
            authkey: Some(authkey),
            state: State::Ready(work),
            _value: PhantomData,
        }
    }
}

/// Lets brood fork this program even while it runs other threads.
///
/// Without it, a capturing closure ([`Process::fork`]) is refused in a
/// multi-threaded program, and functions that capture nothing under
/// [`StartMethod::Fork`] are forked by the forkserver instead.
///
/// A forked child has only the thread that forked; a lock another thread
/// held at that moment stays held in the child for ever. What brood does
/// about that, and what is left to you:
///
/// - brood's own locks (its process table, the forkserver client, the
///   default start method) and std's stdout and stderr locks are taken
///   before each fork and released in the child, so the child never
///   inherits them held (the parent first waits for a thread that is
///   printing, as a print would). The child can print, and it flushes
///   stdout at exit.
/// - Between the fork and your function, the child takes no other lock
///   and reads no environment variable; it allocates only to decode the
///   function's arguments (a capturing closure: not at all), and glibc
///   makes its allocator safe across fork. After the function, brood only
///   encodes the result and writes it to a pipe.
/// - A panic in the child runs std's panic hook; brood's part of it reads
///   no environment (the parent read `RUST_BACKTRACE` before the fork).
///
/// # Safety
///
/// At the moment of each fork, no other thread may hold a lock that the
/// child's function (or a panic in it) will take: a `Mutex` of yours, the
/// environment's lock (`std::env::var`, `set_var`), std's backtrace lock (a
/// thread printing a panic), a C library's lock. Test harnesses, whose
/// other thread only waits for tests to finish or prints results, meet
/// this.
///
/// ```
/// // SAFETY: the only other thread of this doctest waits on a channel.
/// unsafe { brood::allow_fork_with_threads() };
/// ```
pub unsafe fn allow_fork_with_threads() {
    os::sys::allow_threaded_fork();
}

/// Whether forking now could deadlock the child: other threads run and the
/// program did not opt in. `patient`: before saying yes (a refusal, for a
/// capturing closure), look again for about 10 ms.
fn fork_is_hazardous(patient: bool) -> bool {
    if os::sys::threaded_fork_allowed() || os::single_threaded() {
        return false;
    }
    let ours = usize::from(children::reaper_running());
    // A thread that was just joined can still be listed for a moment: the
    // kernel wakes its joiner (clearing its tid) before it takes the
    // thread off the process's task list. Look again a few times, about
    // 10 ms in all, before refusing.
    let pauses: &[u64] = if patient {
        &[0, 20, 50, 100, 200, 400, 800, 1600, 3200, 3200]
    } else {
        &[0]
    };
    for &pause_us in pauses {
        if pause_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(pause_us));
        }
        match os::thread_count_fast() {
            Ok(n) if n <= 1 + ours => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    true
}

impl<R> Process<R>
where
    R: Serialize + DeserializeOwned + 'static,
{
    /// A process that will run `f`, with the default name and start method.
    /// `f` must capture nothing (a compile error otherwise); to send data,
    /// use [`with_args`](Process::with_args); to run a capturing closure in a
    /// forked child, use [`fork`](Process::fork).
    ///
    /// ```
    /// let mut p = brood::Process::new(|| vec![1, 2, 3]);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn new<F>(f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
    {
        Builder::default().target(f)
    }

    /// A process that will run `f(args)` (Python's `Process(target, args)`).
    ///
    /// ```
    /// let mut p = brood::Process::with_args(|n: u32| n + 1, 41);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 42);
    /// ```
    pub fn with_args<F, A>(f: F, args: A) -> Process<R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        Builder::default().target_with(f, args)
    }

    /// A process that will run any closure, captures included, in a forked
    /// child (see [`Builder::fork`]).
    ///
    /// ```
    /// let base = 10_000;
    /// let mut p = brood::Process::fork(move || base + 1);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 10_001);
    /// ```
    pub fn fork<F>(f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
    {
        Builder::default().fork(f)
    }

    /// A process that will call the registered task `name` with `args` (see
    /// [`Builder::task`]).
    ///
    /// ```
    /// let mut p = brood::Process::<u8>::task("no::such::task", ());
    /// assert_eq!(p.start().unwrap_err().kind(), brood::ErrorKind::UnknownTask);
    /// ```
    pub fn task<A: Serialize>(name: &str, args: A) -> Process<R> {
        Builder::default().task(name, args)
    }
}

impl<R> Process<R> {
    /// Sets the child's auth key before [`start`](Process::start) (Python's
    /// `p.authkey = key`; see [`Builder::authkey`]). After `start` it is an
    /// [`ErrorKind::InvalidState`] error: the child has its key.
    ///
    /// ```
    /// let mut p = brood::Process::new(brood::authkey);
    /// p.set_authkey(b"k2")?;
    /// p.start()?;
    /// assert!(p.set_authkey(b"late").is_err());
    /// assert_eq!(p.join()?, b"k2");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set_authkey(&mut self, key: impl Into<Vec<u8>>) -> Result<()> {
        if !matches!(self.state, State::Ready(_)) {
            return Err(Error::invalid(
                "the auth key of a started process cannot change",
            ));
        }
        self.authkey = Some(children::Key::given(key.into()));
        Ok(())
    }
}

impl Process<()> {
    /// Starts setting up a process (name, daemon, start method) before
    /// giving its function.
    ///
    /// ```
    /// let p = brood::Process::builder().name("w").target(|| 2u8);
    /// assert_eq!(p.name(), "w");
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<R> Process<R>
where
    R: DeserializeOwned,
{
    /// Starts the child. A process starts once: a second `start` is an
    /// [`ErrorKind::InvalidState`] error, and so is starting a child from a
    /// daemon process (as in Python).
    ///
    /// A start that fails leaves the process as it was, ready to start:
    /// its function and arguments are kept (a child that was created but
    /// could not be held is killed first), so `start` can be called again
    /// once the cause is gone, and `join` says it was never started. The
    /// one exception is arguments that could not be encoded when the
    /// process was made: every `start` reports that error again.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| 1);
    /// p.start().unwrap();
    /// assert!(p.start().is_err());
    /// p.join().unwrap();
    /// ```
    pub fn start(&mut self) -> Result<()> {
        crate::bootstrap::ensure_linked();
        let work = match std::mem::replace(&mut self.state, State::Closed) {
            State::Ready(work) => work,
            other => {
                let closed = matches!(other, State::Closed);
                self.state = other;
                return Err(if closed {
                    self.closed_error()
                } else {
                    Error::invalid("processes can only be started once")
                });
            }
        };
        let work = match work {
            Ok(work) => work,
            Err(e) => {
                // The arguments could not be encoded when the process was
                // made: every start says so again (nothing was consumed,
                // nothing can succeed).
                let again = Error::simple(e.kind(), e.to_string());
                self.state = State::Ready(Err(again));
                return Err(e.in_process(self.name()));
            }
        };
        let (daemonic, parent_name) = {
            let table = children::lock();
            (table.me.daemon, table.me.name.clone())
        };
        if daemonic {
            self.state = State::Ready(Ok(work));
            return Err(Error::invalid(
                "daemonic processes are not allowed to have children",
            ));
        }
        if let Work::Task { name, .. } = &work
            && let Err(e) = task::lookup(name)
        {
            self.state = State::Ready(Ok(work));
            return Err(e);
        }
        let requested = self
            .method
            .unwrap_or_else(crate::start_method::get_start_method);
        let method = match (&work, requested) {
            (Work::Closure(_), _) if fork_is_hazardous(true) => {
                self.state = State::Ready(Ok(work));
                return Err(Error::simple(
                    ErrorKind::ForkWithThreads,
                    format!(
                        "cannot fork process {}: this program runs other threads, and a lock one of \
                         them holds at the fork would stay locked in the child. Use a function that \
                         captures nothing (Process::new / Process::with_args) with the spawn or \
                         forkserver start method, or opt in with brood::allow_fork_with_threads()",
                        self.name()
                    ),
                ));
            }
            (Work::Closure(_), _) => StartMethod::Fork,
            (_, StartMethod::Fork) if fork_is_hazardous(false) => StartMethod::ForkServer,
            (_, method) => method,
        };
        let me = os::pid::current();
        let spec = Spec {
            name: self.name.clone(),
            daemon: self.daemon,
            identity: self.identity.clone(),
            parent_pid: me.as_raw(),
            parent_name,
            parent_start: own_start_time(me),
            authkey: match &self.authkey {
                Some(key) => key.clone(),
                None => children::lock()
                    .me
                    .authkey
                    .get_or_insert_with(children::Key::random)
                    .clone(),
            },
            start_method: requested,
        };
        // One resource tracker per process tree: the child shares ours.
        let _ = crate::shm::tracker_for_child();
        let mut work = Some(work);
        let launched = match method {
            StartMethod::Fork => launch::fork::Fork.launch(spec, &mut work),
            StartMethod::Spawn => launch::spawn::Spawn.launch(spec, &mut work),
            StartMethod::ForkServer => launch::forkserver::ForkServer.launch(spec, &mut work),
        };
        if launched.is_ok() {
            // What the launcher left of the work is the parent's copy.
            drop(work.take());
        } else if let Some(work) = work.take() {
            // Nothing ran it: the process can be started again.
            self.state = State::Ready(Ok(work));
        }
        match launched {
            Ok(launched) => {
                self.method = Some(method);
                self.state = State::Running(Running {
                    popen: launched.popen,
                    result: launched.result,
                    small: [0; SMALL_FRAME],
                    small_len: 0,
                    buf: Vec::new(),
                    eof: false,
                    status: Cell::new(None),
                    keep: launched.keep,
                });
                Ok(())
            }
            Err(e) => Err(Error::os_error(
                format!("cannot start process {} ({method})", self.name()),
                e,
            )),
        }
    }

    /// The start method: the one asked for before `start` (`None` for the
    /// default), the one actually used after it.
    ///
    /// ```
    /// let mut p = brood::Process::builder().start_method(brood::StartMethod::ForkServer).target(|| ());
    /// p.start().unwrap();
    /// assert_eq!(p.start_method(), Some(brood::StartMethod::ForkServer));
    /// p.join().unwrap();
    /// ```
    pub fn start_method(&self) -> Option<StartMethod> {
        self.method
    }

    /// Waits for the child to end and returns its function's value.
    ///
    /// The error says why there is no value: the child panicked
    /// ([`Error::panic`]), a signal killed it ([`Error::signal`]), or it
    /// exited first ([`Error::exit_code`]). Joining a process that was never
    /// started, or joining twice, is an [`ErrorKind::InvalidState`] error.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| 6 * 7);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 42);
    /// ```
    pub fn join(&mut self) -> Result<R> {
        self.join_deadline(None)
    }

    /// Like [`join`](Process::join), but gives up after `timeout` with an
    /// [`ErrorKind::Timeout`] error and leaves the child running; join again
    /// later.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut p = brood::Process::new(|| 5);
    /// p.start().unwrap();
    /// assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), 5);
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.join_deadline(crate::time::deadline(timeout))
    }

    fn join_deadline(&mut self, deadline: Option<Instant>) -> Result<R> {
        let running = match &mut self.state {
            State::Running(running) => running,
            State::Done(done) => {
                return done
                    .outcome
                    .take()
                    .unwrap_or_else(|| Err(Error::invalid("the process was already joined")));
            }
            State::Ready(_) => return Err(Error::invalid("can only join a started process")),
            State::Closed => return Err(self.closed_error()),
        };
        let status = match running.wait(deadline) {
            Ok(Some(status)) => status,
            Ok(None) => {
                return Err(Error::timeout(format!(
                    "process {} is still running",
                    self.name()
                )));
            }
            Err(e) => return Err(e.in_process(self.name())),
        };
        let outcome = running
            .outcome(status)
            .map_err(|e| e.in_process(name_of(&self.name, &self.default_name, &self.identity)));
        let pid = running.popen.pid();
        children::lock().forget(pid);
        let done = State::Done(Done {
            status,
            pid,
            outcome: None,
        });
        if let State::Running(Running {
            result,
            keep: Some(keep),
            status: reaped,
            eof,
            ..
        }) = std::mem::replace(&mut self.state, done)
            && reaped.get().is_some()
        {
            // Reaped, so nothing writes to the pipe any more; drained to
            // `EAGAIN` unless a whole frame ended the reading.
            launch::fork::recycle(result, keep, !eof);
        }
        outcome
    }

    /// Whether the child has started and not yet exited (Python's
    /// `is_alive()`); reaps it once it has exited. `false` after `close`.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| ());
    /// assert!(!p.is_alive());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert!(!p.is_alive());
    /// ```
    pub fn is_alive(&self) -> bool {
        match &self.state {
            State::Running(running) => running.poll_status().is_none(),
            _ => false,
        }
    }

    /// The child's exit code in Python's convention: `None` while it runs (or
    /// before it starts), its code once it exits, minus the signal number if
    /// a signal ended it.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| -> () { brood::os::exit_now(3) });
    /// assert_eq!(p.exitcode(), None);
    /// p.start().unwrap();
    /// let _ = p.join();
    /// assert_eq!(p.exitcode(), Some(3));
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        self.status().and_then(ExitStatus::exitcode)
    }

    /// The child's decoded exit status, once it has exited.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| ());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.status(), Some(brood::os::ExitStatus::Exited(0)));
    /// ```
    pub fn status(&self) -> Option<ExitStatus> {
        match &self.state {
            State::Running(running) => running.poll_status().flatten(),
            State::Done(done) => done.status,
            _ => None,
        }
    }

    /// The child's pid, once started.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| ());
    /// assert!(p.pid().is_none());
    /// p.start().unwrap();
    /// assert!(p.pid().is_some());
    /// p.join().unwrap();
    /// ```
    pub fn pid(&self) -> Option<Pid> {
        match &self.state {
            State::Running(running) => Some(running.popen.pid()),
            State::Done(done) => Some(done.pid),
            _ => None,
        }
    }

    /// An fd that turns readable when the child exits (Python's `sentinel`),
    /// for [`connection::wait`](crate::connection::wait); `None` before
    /// `start` and once the child was joined.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| ());
    /// assert!(p.sentinel().is_none());
    /// p.start().unwrap();
    /// assert!(p.sentinel().is_some());
    /// p.join().unwrap();
    /// ```
    pub fn sentinel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match &self.state {
            State::Running(running) => Some(running.popen.sentinel().as_fd()),
            _ => None,
        }
    }

    /// The process's name (`Process-N` unless one was given).
    ///
    /// ```
    /// assert!(brood::Process::new(|| ()).name().starts_with("Process-"));
    /// ```
    pub fn name(&self) -> &str {
        name_of(&self.name, &self.default_name, &self.identity)
    }

    /// Whether this is a daemon process (see [`Builder::daemon`]).
    ///
    /// ```
    /// assert!(!brood::Process::new(|| ()).is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Sends SIGTERM to the child (Python's `terminate()`). Does nothing if
    /// it has already exited; an error before `start` or after `close`.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| std::thread::sleep(std::time::Duration::from_secs(10)));
    /// p.start().unwrap();
    /// p.terminate().unwrap();
    /// assert_eq!(p.join().unwrap_err().signal(), Some(15));
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// Sends SIGKILL to the child (Python's `kill()`).
    ///
    /// ```
    /// let mut p = brood::Process::new(|| std::thread::sleep(std::time::Duration::from_secs(10)));
    /// p.start().unwrap();
    /// p.kill().unwrap();
    /// assert_eq!(p.join().unwrap_err().signal(), Some(9));
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// Sends any signal to the child, through its pidfd (never to a reused
    /// pid). Does nothing if the child has already exited.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| std::thread::sleep(std::time::Duration::from_secs(10)));
    /// p.start().unwrap();
    /// p.send_signal(libc::SIGINT).unwrap();
    /// assert_eq!(p.join().unwrap_err().signal(), Some(libc::SIGINT));
    /// ```
    pub fn send_signal(&self, signal: i32) -> Result<()> {
        match &self.state {
            State::Running(running) => {
                if running.status.get().is_some() {
                    return Ok(());
                }
                match running.popen.signal(signal) {
                    Ok(()) => Ok(()),
                    // Exited, not yet reaped: nothing to signal.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                    Err(e) => Err(Error::os_error(
                        format!("cannot signal process {}", self.name()),
                        e,
                    )),
                }
            }
            State::Done(_) => Ok(()),
            State::Ready(_) => Err(Error::invalid("can only signal a started process")),
            State::Closed => Err(self.closed_error()),
        }
    }

    /// Releases the process's resources (Python's `close()`). An error while
    /// the child is still running; afterwards most methods return an
    /// [`ErrorKind::Closed`] error.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| ());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// p.close().unwrap();
    /// assert_eq!(p.join().unwrap_err().kind(), brood::ErrorKind::Closed);
    /// ```
    pub fn close(&mut self) -> Result<()> {
        if let State::Running(running) = &self.state {
            if running.poll_status().is_none() {
                return Err(Error::invalid(
                    "cannot close a process while it is still running; join or terminate it first",
                ));
            }
            children::lock().forget(running.popen.pid());
        }
        self.state = State::Closed;
        Ok(())
    }

    fn closed_error(&self) -> Error {
        Error::simple(
            ErrorKind::Closed,
            format!("process object {} is closed", self.name()),
        )
    }
}

impl Running {
    /// Reaps the child if it has exited: `None` while it runs, `Some(None)`
    /// if it exited but its status could not be read (SIGCHLD ignored, or
    /// someone else reaped it).
    fn poll_status(&self) -> Option<Option<ExitStatus>> {
        if let Some(status) = self.status.get() {
            return Some(Some(status));
        }
        match self.popen.try_reap() {
            Ok(Some(status)) => {
                self.status.set(Some(status));
                Some(Some(status))
            }
            Ok(None) => None,
            Err(_) => Some(None),
        }
    }

    /// Waits for exit while draining the result pipe (a large value must not
    /// block the child's write while we wait for its exit).
    ///
    /// Two syscalls are saved on the common path (each is a kernel entry):
    /// the first check for an exit is the `poll` itself, which returns at
    /// once for a child that has exited already (no `waitid` before it),
    /// and a pipe that poll saw empty *after* the exit is not read again.
    /// The kernel checks poll's fds in order, the pidfd first: when it is
    /// readable the child has exited, so everything it wrote is in the
    /// pipe by then, and a pipe seen unreadable in that same pass is empty
    /// for good (only the process `child_main` started in writes a frame).
    fn wait(&mut self, deadline: Option<Instant>) -> Result<Option<Option<ExitStatus>>> {
        let mut polled = self.status.get().is_some();
        // Set by a poll that saw the exit and an empty pipe.
        let mut empty = false;
        let mut quick = true;
        loop {
            if self.eof && quick && self.status.get().is_none() {
                // The frame is in: a forkserver child's status comes on the
                // server's socket (one wake-up instead of two).
                quick = false;
                if let Some(status) = self.popen.quick_status(deadline) {
                    self.status.set(Some(status));
                    return Ok(Some(Some(status)));
                }
            }
            if polled && let Some(status) = self.poll_status() {
                if !empty {
                    self.drain()?;
                }
                return Ok(Some(status));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if polled && left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let mut fds = [
                os::fd::pollin(self.popen.sentinel().as_raw_fd()),
                os::fd::pollin(self.result.as_raw_fd()),
            ];
            let nfds = if self.eof { 1 } else { 2 };
            if let Err(err) = os::fd::poll(&mut fds[..nfds], left) {
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::os_error("waiting for a child", err));
                }
                continue;
            }
            polled = true;
            let exited = fds[0].revents != 0;
            if !self.eof && fds[1].revents != 0 {
                self.drain()?;
            } else if exited {
                empty = true;
            }
        }
    }

    /// Reads what the pipe holds now, without blocking.
    fn drain(&mut self) -> Result<()> {
        // The first read goes to a small stack buffer: nothing is allocated
        // for a child that sends nothing (`()` under fork) or a small frame
        // (a 4 KiB allocation here would make glibc consolidate its free
        // chunks: copy-on-write faults while a child shares the heap).
        while !self.eof {
            // Read straight into the buffer's spare room: no zeroed scratch
            // buffer, whose pages would be copy-on-write faults after a fork.
            let first = self.small_len == 0;
            if !first {
                if self.buf.is_empty() {
                    // A second read: the frame is larger than `small`.
                    self.buf.reserve(4096);
                    self.buf
                        .extend_from_slice(&self.small[..usize::from(self.small_len)]);
                }
                if self.buf.capacity() - self.buf.len() < 4096 {
                    self.buf.reserve(self.buf.len().clamp(4096, 1 << 20));
                }
            }
            let n = if first {
                rustix::io::read(&self.result, &mut self.small[..]).inspect(|&n| {
                    self.small_len = n as u8;
                })
            } else {
                // rustix reads into the spare capacity and extends the
                // length by what the kernel wrote.
                rustix::io::read(&self.result, rustix::buffer::spare_capacity(&mut self.buf))
            };
            match n {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    if self.buf.len() > codec::DEFAULT_MAX_FRAME + HEADER_LEN {
                        return Err(Error::simple(
                            ErrorKind::TooLarge,
                            "the child's result is larger than the frame limit",
                        ));
                    }
                    if self.frame_complete() {
                        // Nothing more is coming: stop watching the pipe.
                        self.eof = true;
                    }
                }
                Err(errno) => {
                    let err = std::io::Error::from(errno);
                    match err.kind() {
                        std::io::ErrorKind::Interrupted => continue,
                        std::io::ErrorKind::WouldBlock => return Ok(()),
                        // A spawned child that died before reading its job
                        // resets the socket: no value, its status explains.
                        std::io::ErrorKind::ConnectionReset => self.eof = true,
                        _ => return Err(Error::os_error("reading a child's result", err)),
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes of the result frame read so far.
    fn frame(&self) -> &[u8] {
        if self.buf.is_empty() {
            &self.small[..usize::from(self.small_len)]
        } else {
            &self.buf
        }
    }

    /// Whether the buffer holds a whole result frame.
    fn frame_complete(&self) -> bool {
        let frame = self.frame();
        frame.len() >= HEADER_LEN
            && u64::from_le_bytes(frame[1..HEADER_LEN].try_into().expect("8 bytes"))
                == (frame.len() - HEADER_LEN) as u64
    }

    /// Decodes the result frame, or explains its absence from the status.
    fn outcome<R: DeserializeOwned>(&self, status: Option<ExitStatus>) -> Result<R> {
        let frame = self.frame();
        if frame.len() >= HEADER_LEN {
            let len = u64::from_le_bytes(frame[1..HEADER_LEN].try_into().expect("8 bytes"));
            let payload = &frame[HEADER_LEN..];
            if payload.len() as u64 == len {
                return match frame[0] {
                    launch::TAG_RETURNED => codec::decode(payload),
                    launch::TAG_PANICKED => {
                        Err(Error::panicked(codec::decode::<PanicReport>(payload)?))
                    }
                    launch::TAG_ENCODE_FAILED => Err(Error::simple(
                        ErrorKind::Codec,
                        format!(
                            "the child's value could not be encoded: {}",
                            String::from_utf8_lossy(payload)
                        ),
                    )),
                    launch::TAG_BAD_ARGS => Err(Error::simple(
                        ErrorKind::Codec,
                        format!(
                            "the child could not decode its arguments: {}",
                            String::from_utf8_lossy(payload)
                        ),
                    )),
                    launch::TAG_UNKNOWN_TASK => Err(Error::simple(
                        ErrorKind::UnknownTask,
                        String::from_utf8_lossy(payload).into_owned(),
                    )),
                    tag => Err(Error::simple(
                        ErrorKind::Codec,
                        format!("unknown result tag {tag}"),
                    )),
                };
            }
        }
        // No frame and exit code 0: under fork, a function that returned
        // `()` (or another zero-sized value encoded as nil) sends none.
        if std::mem::size_of::<R>() == 0
            && frame.is_empty()
            && status == Some(ExitStatus::Exited(0))
            && let Ok(value) = codec::decode(launch::UNIT_ENCODING)
        {
            return Ok(value);
        }
        Err(match status {
            Some(ExitStatus::Signaled {
                signal,
                core_dumped,
            }) => Error::signaled(signal, core_dumped),
            Some(ExitStatus::Exited(code)) => Error::exited(code),
            _ => Error::invalid(
                "the child's exit status is unknown (SIGCHLD ignored?) and it sent no value",
            ),
        })
    }
}

impl<R> Drop for Process<R> {
    /// A finished child is reaped now; a running one goes to the orphan
    /// queue and is reaped as soon as it exits. Neither leaves a zombie.
    fn drop(&mut self) {
        if let State::Running(running) = std::mem::replace(&mut self.state, State::Closed) {
            let pid = running.popen.pid();
            let exited =
                running.status.get().is_some() || !matches!(running.popen.try_reap(), Ok(None));
            if exited {
                children::lock().forget(pid);
            } else if let Some(pidfd) = running.popen.into_orphan() {
                children::adopt_orphan(pidfd);
            }
            // A forkserver child stays listed (the server reaps it) so that
            // exit waits for it; `active_children` drops it once it is gone.
        }
    }
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready(_) => "initial".to_string(),
            State::Running(r) => match r.status.get() {
                Some(status) => format!("stopped ({status})"),
                None => format!("started pid={}", r.popen.pid()),
            },
            State::Done(d) => match d.status {
                Some(status) => format!("stopped ({status})"),
                None => "stopped".into(),
            },
            State::Closed => "closed".into(),
        };
        f.debug_struct("Process")
            .field(
                "name",
                &name_of(&self.name, &self.default_name, &self.identity),
            )
            .field("daemon", &self.daemon)
            .field("state", &state)
            .finish()
    }
}

/// What [`current_process`] and [`parent_process`] describe.
///
/// ```
/// let me = brood::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, brood::os::getpid());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProcessInfo {
    /// The process's name (`MainProcess` for the program itself).
    pub name: String,
    /// Its pid.
    pub pid: Pid,
    /// Whether it is a daemon process.
    pub daemon: bool,
}

/// The calling process: `MainProcess` in the program, or the name given to
/// the child (Python's `multiprocessing.current_process()`).
///
/// ```
/// let mut p = brood::Process::builder().name("kid").target(|| brood::current_process().name);
/// p.start().unwrap();
/// assert_eq!(p.join().unwrap(), "kid");
/// assert_eq!(brood::current_process().name, "MainProcess");
/// ```
pub fn current_process() -> ProcessInfo {
    let table = children::lock();
    ProcessInfo {
        name: table.me.name(),
        pid: os::pid::current(),
        daemon: table.me.daemon,
    }
}

/// The process that started this one, or `None` in the main process (Python's
/// `parent_process()`): its name and pid, whether it still runs, and a way
/// to wait for its end.
///
/// For a forkserver child too this is the process that called `start` (as
/// in Python), not the server that forked it.
///
/// ```
/// assert!(brood::parent_process().is_none());
/// let mut p = brood::Process::new(|| brood::parent_process().map(|p| (p.pid.as_raw(), p.is_alive())));
/// p.start().unwrap();
/// assert_eq!(p.join().unwrap(), Some((brood::os::getpid().as_raw(), true)));
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let table = children::lock();
    let name = table.me.parent_name()?;
    table.me.parent.as_ref().map(|(pid, _)| ParentProcess {
        name,
        pid: *pid,
        start: table.me.parent_start,
    })
}

/// What [`parent_process`] returns (Python's `_ParentProcess`): the parent's
/// name and pid, [`is_alive`](ParentProcess::is_alive) and
/// [`join`](ParentProcess::join).
///
/// A pid alone could name a stranger once the parent has died and its pid
/// been reused, so the parent is known by its pid *and* its start time.
/// Each check opens a pidfd of the pid, reads that pid's start time from
/// `/proc`, then polls the pidfd: if the pidfd's process has not exited by
/// the poll, it held the pid all along, so the start time read was its own
/// — the parent's exactly when it matches. No fd is kept between calls.
///
/// ```
/// let mut p = brood::Process::new(|| {
///     let parent = brood::parent_process().unwrap();
///     // The parent is waiting in join: it is alive, and outlives 10 ms.
///     (parent.is_alive(), parent.join_timeout(std::time::Duration::from_millis(10)).is_err())
/// });
/// p.start()?;
/// assert_eq!(p.join()?, (true, true));
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ParentProcess {
    /// The parent's name (`MainProcess` for the program itself).
    pub name: String,
    /// Its pid.
    pub pid: Pid,
    /// Its start time since boot, when known.
    start: Option<Duration>,
}

impl ParentProcess {
    /// A pidfd of the parent, or `None` once it has ended (exited, or gone
    /// and its pid reused).
    fn pidfd(&self) -> Result<Option<PidFd>> {
        let fd = match PidFd::open(self.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(Error::os_error("cannot open a pidfd of the parent", e)),
        };
        match self.start {
            Some(start) => match os::ProcInfo::read(self.pid) {
                Ok(info) if info.start_time == start => {}
                Ok(_) => return Ok(None), // another process has the pid now
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::os_error("cannot read the parent's /proc entry", e)),
            },
            // No start time: the parent is ours while it is our parent.
            None if os::getppid() != self.pid => return Ok(None),
            None => {}
        }
        // Exited (a zombie not yet reaped counts): the parent has ended, or
        // the pid's holder the start time came from is not the pidfd's.
        let ended = fd
            .wait_timeout(Some(Duration::ZERO))
            .map_err(|e| Error::os_error("poll", e))?;
        Ok((!ended).then_some(fd))
    }

    /// Whether the parent still runs (Python's `is_alive()`).
    ///
    /// ```
    /// let mut p = brood::Process::new(|| brood::parent_process().unwrap().is_alive());
    /// p.start()?;
    /// assert!(p.join()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        matches!(self.pidfd(), Ok(Some(_)))
    }

    /// Waits until the parent has ended (Python's `join()`); at once if it
    /// already has.
    ///
    /// ```no_run
    /// // A child that outlives its parent, then goes on alone:
    /// brood::parent_process().unwrap().join()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        match self.pidfd()? {
            Some(fd) => fd
                .wait_timeout(None)
                .map(|_| ())
                .map_err(|e| Error::os_error("poll", e)),
            None => Ok(()),
        }
    }

    /// Waits at most `timeout` for the parent to end (Python's
    /// `join(timeout)`): `Ok` once it has, an [`ErrorKind::Timeout`] error
    /// if it still runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut p = brood::Process::new(|| {
    ///     brood::parent_process().unwrap().join_timeout(Duration::from_millis(20)).unwrap_err().is_timeout()
    /// });
    /// p.start()?;
    /// assert!(p.join()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        match self.pidfd()? {
            Some(fd) => match fd.wait_timeout(Some(timeout)) {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::timeout(format!(
                    "the parent {} ({}) still runs",
                    self.name, self.pid
                ))),
                Err(e) => Err(Error::os_error("poll", e)),
            },
            None => Ok(()),
        }
    }

    /// A pidfd of the parent, readable once it ends, for
    /// [`connection::wait`](crate::connection::wait) beside connections
    /// (Python's `sentinel`); `None` if it has ended already.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| {
    ///     let fd = brood::parent_process().unwrap().sentinel().unwrap().unwrap();
    ///     brood::connection::wait(&[&fd], Some(std::time::Duration::from_millis(10))).unwrap().is_empty()
    /// });
    /// p.start()?;
    /// assert!(p.join()?);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn sentinel(&self) -> Result<Option<PidFd>> {
        self.pidfd()
    }
}

/// The room for a result frame read without allocating (a `u8` length):
/// a header and what a forked child encodes in place (`launch::INLINE`).
const SMALL_FRAME: usize = HEADER_LEN + launch::INLINE;

/// A process's name: the given one, else the default for its identity
/// (made once, when first asked for).
fn name_of<'a>(
    name: &'a Option<String>,
    default_name: &'a OnceCell<String>,
    identity: &children::Ident,
) -> &'a str {
    match name {
        Some(name) => name,
        None => default_name.get_or_init(|| identity.default_name()),
    }
}

/// This process's start time since boot, read once per process.
fn own_start_time(me: Pid) -> Option<Duration> {
    static PID: AtomicI32 = AtomicI32::new(0);
    static NANOS: AtomicU64 = AtomicU64::new(0);
    if PID.load(Ordering::Acquire) == me.as_raw() {
        return Some(Duration::from_nanos(NANOS.load(Ordering::Relaxed)));
    }
    let start = os::ProcInfo::read(me).ok()?.start_time;
    NANOS.store(start.as_nanos() as u64, Ordering::Relaxed);
    PID.store(me.as_raw(), Ordering::Release);
    Some(start)
}

/// This process's auth key (Python's `current_process().authkey`): random
/// (32 bytes from the kernel) in the main process, inherited by every child
/// — or the child's own, given with [`Builder::authkey`]. Listeners and
/// clients do not use it unless given it: as in Python 3.11, a `None` key
/// there means no handshake.
///
/// ```
/// use brood::connection::{Client, Listener};
/// let key = brood::authkey();
/// assert_eq!(key.len(), 32);
/// let l = Listener::new(Some(&key))?;
/// let mut p = brood::Process::with_args(
///     |address: String| {
///         // The child's key is its parent's.
///         Client::connect(&address.parse().unwrap(), Some(&brood::authkey())).unwrap().send(&1u8).unwrap();
///     },
///     l.address().to_string(),
/// );
/// p.start()?;
/// assert_eq!(l.accept()?.recv::<u8>()?, 1);
/// p.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
pub fn authkey() -> Vec<u8> {
    children::lock()
        .me
        .authkey
        .get_or_insert_with(children::Key::random)
        .bytes()
        .to_vec()
}

/// Sets this process's auth key (Python's `current_process().authkey =
/// key`): children made from now on inherit it (a `Process` made before
/// keeps the key it was made with, as in Python).
///
/// ```
/// brood::set_authkey(b"shared secret");
/// assert_eq!(brood::authkey(), b"shared secret");
/// let mut p = brood::Process::new(brood::authkey);
/// p.start()?;
/// assert_eq!(p.join()?, b"shared secret");
/// # Ok::<(), brood::Error>(())
/// ```
pub fn set_authkey(key: impl Into<Vec<u8>>) {
    children::lock().me.authkey = Some(children::Key::given(key.into()));
}

/// The children of this process that are still running, including those
/// whose handles were dropped (Python's `active_children()`). Finished
/// orphans are reaped on the way.
///
/// ```
/// let mut p = brood::Process::builder().name("busy").target(|| std::thread::sleep(std::time::Duration::from_secs(10)));
/// p.start().unwrap();
/// assert!(brood::active_children().iter().any(|c| c.name == "busy"));
/// p.kill().unwrap();
/// let _ = p.join();
/// assert!(!brood::active_children().iter().any(|c| c.name == "busy"));
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut table = children::lock();
    table.reap_orphans();
    // Forget entries whose process is gone (forkserver children whose
    // handles were dropped are reaped by the server, not by us).
    table.live.retain(|pid, entry| match &entry.served {
        Some(fd) => !os::fd::ready_now(&**fd),
        None => os::ProcInfo::read(*pid).is_ok(),
    });
    let mut children: Vec<ProcessInfo> = table
        .live
        .iter()
        .filter(|(pid, _)| {
            // Still running? A zombie (exited, not yet joined) does not count.
            os::ProcInfo::read(*pid).is_ok_and(|info| info.state != os::ProcState::Zombie)
        })
        .map(|(pid, entry)| ProcessInfo {
            name: entry.name(),
            pid,
            daemon: entry.daemon,
        })
        .collect();
    children.sort_by_key(|c| c.pid);
    children
}

/// The number of CPUs this process may use (Python's `cpu_count()`, but
/// honouring the affinity mask like `os.process_cpu_count()`).
///
/// ```
/// assert!(brood::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    os::cpu_count()
}
