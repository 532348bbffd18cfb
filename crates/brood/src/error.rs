//! The crate error: one opaque type with a kind and predicates, in the style
//! of `std::io::Error` (and procspawn's error), so callers decide on kinds,
//! never on message strings.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// A `Result` whose error is brood's [`Error`].
///
/// ```
/// fn run() -> brood::Result<u8> {
///     let mut p = brood::Process::new(|| 7u8);
///     p.start()?;
///     p.join()
/// }
/// assert_eq!(run().unwrap(), 7);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a plain tag to match on.
///
/// ```
/// use brood::{ErrorKind, Process};
/// let mut p = Process::new(|| -> () { panic!("boom") });
/// p.start().unwrap();
/// assert_eq!(p.join().unwrap_err().kind(), ErrorKind::Panicked);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The child's function panicked; see [`Error::panic`].
    Panicked,
    /// A signal ended the child before it returned; see [`Error::signal`].
    Signaled,
    /// The child exited (e.g. through `exit_now`) before returning; see
    /// [`Error::exit_code`].
    Exited,
    /// A timed wait ran out; the operation can be retried.
    Timeout,
    /// The call does not fit the object's state (e.g. `start` twice, `join`
    /// before `start`, `close` of a running process).
    InvalidState,
    /// The object was closed, or its peer closed the connection (Python's
    /// `EOFError`).
    Closed,
    /// A value could not be encoded or decoded.
    Codec,
    /// A message was larger than the configured limit.
    TooLarge,
    /// An operating-system call failed; see [`Error::io`].
    Io,
    /// A receive buffer was too small for the message (which is kept).
    BufferTooShort,
    /// The peer failed (or refused) the auth-key challenge.
    Auth,
    /// A lock's holder died while holding it (the lock is poisoned until
    /// cleared; see `brood::sync`).
    OwnerDied,
    /// A barrier was aborted, reset, or timed out (Python's
    /// `BrokenBarrierError`).
    BrokenBarrier,
    /// No task of that name is registered (`#[brood::task]`).
    UnknownTask,
    /// A fork was refused because other threads run (see
    /// [`allow_fork_with_threads`](crate::allow_fork_with_threads)).
    ForkWithThreads,
    /// A pool worker died while it held this task; [`Error::signal`] or
    /// [`Error::exit_code`] say how (see [`Pool`](crate::Pool)).
    WorkerLost,
    /// The work was stopped by Ctrl-C (SIGINT) in the parent.
    Interrupted,
    /// The pool was closed or terminated: it takes no more work, or the
    /// work was cut off.
    PoolClosed,
    /// A pool task ran past its hard time limit: the pool killed the worker
    /// that ran it (SIGKILL) and replaced it; the message says how long it
    /// ran. (Not to be confused with [`ErrorKind::Timeout`], a wait of the
    /// caller's that ran out.) See
    /// [`PoolBuilder::hard_time_limit`](crate::PoolBuilder::hard_time_limit).
    TimedOut,
    /// The task was cancelled before it started
    /// ([`TaskFuture::cancel`](crate::TaskFuture::cancel), or
    /// [`Pool::shutdown`](crate::Pool::shutdown) with `cancel_futures`);
    /// Python's `CancelledError`.
    Cancelled,
}

/// A panic caught in a child process, carried back to the parent.
///
/// ```
/// let mut p = brood::Process::new(|| -> u8 { panic!("no luck") });
/// p.start().unwrap();
/// let err = p.join().unwrap_err();
/// let panic = err.panic().unwrap();
/// assert_eq!(panic.message, "no luck");
/// assert!(panic.location.as_deref().unwrap().contains(".rs:"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicReport {
    /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
    pub message: String,
    /// `file:line:column` where it panicked, when known.
    pub location: Option<String>,
    /// The child's backtrace, captured when `RUST_BACKTRACE` is set.
    pub backtrace: Option<String>,
}

impl fmt::Display for PanicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Repr {
    Panicked(PanicReport),
    Signaled { signal: i32, core_dumped: bool },
    Exited(i32),
    Simple(ErrorKind, String),
    Io(String, io::Error),
    WorkerLost(String, Option<crate::os::ExitStatus>),
}

/// brood's error: opaque, with a [`kind`](Error::kind) and predicates.
///
/// ```
/// let mut p = brood::Process::new(|| -> () { brood::os::exit_now(3) });
/// p.start().unwrap();
/// let err = p.join().unwrap_err();
/// assert_eq!(err.exit_code(), Some(3));
/// assert_eq!(err.to_string(), "process Process-1 exited with code 3 before returning a value");
/// ```
pub struct Error {
    repr: Box<Repr>,
    process: Option<String>,
    /// Said after the message (how many attempts a retried task took).
    note: Option<String>,
}

impl Error {
    pub(crate) fn panicked(report: PanicReport) -> Error {
        Error::new(Repr::Panicked(report))
    }

    pub(crate) fn signaled(signal: i32, core_dumped: bool) -> Error {
        Error::new(Repr::Signaled {
            signal,
            core_dumped,
        })
    }

    pub(crate) fn exited(code: i32) -> Error {
        Error::new(Repr::Exited(code))
    }

    pub(crate) fn simple(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(Repr::Simple(kind, message.into()))
    }

    pub(crate) fn os_error(context: impl Into<String>, err: io::Error) -> Error {
        Error::new(Repr::Io(context.into(), err))
    }

    pub(crate) fn worker_lost(message: String, status: Option<crate::os::ExitStatus>) -> Error {
        Error::new(Repr::WorkerLost(message, status))
    }

    pub(crate) fn timeout(what: impl Into<String>) -> Error {
        Error::simple(ErrorKind::Timeout, what)
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Error {
        Error::simple(ErrorKind::InvalidState, what)
    }

    fn new(repr: Repr) -> Error {
        Error {
            repr: Box::new(repr),
            process: None,
            note: None,
        }
    }

    /// Adds a note after the message (`"...; after 2 attempts"`).
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Error {
        self.note = Some(note.into());
        self
    }

    /// A copy of this error (same kind, message, panic report, exit status;
    /// an I/O error keeps its kind and text), for a result handed out more
    /// than once.
    pub(crate) fn duplicate(&self) -> Error {
        let repr = match &*self.repr {
            Repr::Panicked(report) => Repr::Panicked(report.clone()),
            Repr::Signaled {
                signal,
                core_dumped,
            } => Repr::Signaled {
                signal: *signal,
                core_dumped: *core_dumped,
            },
            Repr::Exited(code) => Repr::Exited(*code),
            Repr::Simple(kind, message) => Repr::Simple(*kind, message.clone()),
            Repr::Io(context, err) => {
                Repr::Io(context.clone(), io::Error::new(err.kind(), err.to_string()))
            }
            Repr::WorkerLost(message, status) => Repr::WorkerLost(message.clone(), *status),
        };
        Error {
            repr: Box::new(repr),
            process: self.process.clone(),
            note: self.note.clone(),
        }
    }

    /// Names the process the error is about, for the message.
    pub(crate) fn in_process(mut self, name: &str) -> Error {
        self.process = Some(name.to_string());
        self
    }

    /// The kind of error.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| 1);
    /// assert_eq!(p.join().unwrap_err().kind(), brood::ErrorKind::InvalidState);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match &*self.repr {
            Repr::Panicked(_) => ErrorKind::Panicked,
            Repr::Signaled { .. } => ErrorKind::Signaled,
            Repr::Exited(_) => ErrorKind::Exited,
            Repr::Simple(kind, _) => *kind,
            Repr::Io(..) => ErrorKind::Io,
            Repr::WorkerLost(..) => ErrorKind::WorkerLost,
        }
    }

    /// The panic caught in the child, if that is what happened.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| 7);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// ```
    pub fn panic(&self) -> Option<&PanicReport> {
        match &*self.repr {
            Repr::Panicked(report) => Some(report),
            _ => None,
        }
    }

    /// The signal that ended the child, if one did.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| std::thread::sleep(std::time::Duration::from_secs(10)));
    /// p.start().unwrap();
    /// p.kill().unwrap();
    /// assert_eq!(p.join().unwrap_err().signal(), Some(9));
    /// ```
    pub fn signal(&self) -> Option<i32> {
        match &*self.repr {
            Repr::Signaled { signal, .. } => Some(*signal),
            Repr::WorkerLost(_, status) => status.and_then(crate::os::ExitStatus::signal),
            _ => None,
        }
    }

    /// The code the child exited with before returning, if it did.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| -> () { brood::os::exit_now(5) });
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap_err().exit_code(), Some(5));
    /// ```
    pub fn exit_code(&self) -> Option<i32> {
        match &*self.repr {
            Repr::Exited(code) => Some(*code),
            Repr::WorkerLost(_, status) => status.and_then(crate::os::ExitStatus::code),
            _ => None,
        }
    }

    /// The operating-system error underneath, if any.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| 1);
    /// assert!(p.join().unwrap_err().io().is_none());
    /// ```
    pub fn io(&self) -> Option<&io::Error> {
        match &*self.repr {
            Repr::Io(_, err) => Some(err),
            _ => None,
        }
    }

    /// Whether the child panicked.
    ///
    /// ```
    /// let mut p = brood::Process::new(|| -> () { panic!() });
    /// p.start().unwrap();
    /// assert!(p.join().unwrap_err().is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        self.kind() == ErrorKind::Panicked
    }

    /// Whether a timed wait ran out (the operation may be retried).
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut p = brood::Process::new(|| std::thread::sleep(Duration::from_secs(5)));
    /// p.start().unwrap();
    /// assert!(p.join_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// p.kill().unwrap();
    /// let _ = p.join();
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.process.as_deref();
        let prefix = |f: &mut fmt::Formatter<'_>| match who {
            Some(name) => write!(f, "process {name} "),
            None => write!(f, "the child process "),
        };
        match &*self.repr {
            Repr::Panicked(report) => {
                prefix(f)?;
                write!(f, "panicked: {report}")?;
                if let Some(note) = &self.note {
                    write!(f, "; {note}")?;
                }
                if let Some(bt) = &report.backtrace {
                    write!(f, "\nchild backtrace:\n{bt}")?;
                }
                return Ok(());
            }
            Repr::Signaled {
                signal,
                core_dumped,
            } => {
                prefix(f)?;
                write!(
                    f,
                    "was killed by signal {signal} ({}){} before returning a value",
                    crate::os::signal_name(*signal),
                    if *core_dumped { ", core dumped" } else { "" }
                )
            }
            Repr::Exited(code) => {
                prefix(f)?;
                write!(f, "exited with code {code} before returning a value")
            }
            Repr::Simple(_, message) | Repr::WorkerLost(message, _) => f.write_str(message),
            Repr::Io(context, err) => write!(f, "{context}: {err}"),
        }?;
        match &self.note {
            Some(note) => write!(f, "; {note}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.repr {
            Repr::Io(_, err) => Some(err),
            _ => None,
        }
    }
}
