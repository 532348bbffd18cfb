//! Start methods and the process-wide default (Python's
//! `set_start_method`, `get_start_method`).
//!
//! Below `Process` and the launchers, which read the default, and below
//! `Context`, which builds processes with a method of its own.
//!
//! ```
//! use brood::StartMethod;
//! assert!(StartMethod::ALL.contains(&brood::get_start_method()));
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::Serialize;

use crate::child_page::PAGE;
use crate::error::{Error, ErrorKind, Result};

/// How a child process is started.
///
/// | method | how | closures | safe with threads | cost |
/// |---|---|---|---|---|
/// | `Fork` | `fork()` of the caller | any (via [`Process::fork`](crate::Process::fork)) | no (see below) | lowest |
/// | `Spawn` | re-executes the program; the child runs only the function | capture nothing | yes | one `exec` |
/// | `ForkServer` | a clean single-threaded helper, started once, forks each child | capture nothing | yes | a fork + two messages |
///
/// The default is `ForkServer`, as in Python 3.14 on Linux: forking a program
/// that runs threads can deadlock the child, because a lock another thread
/// held at the moment of the fork stays locked in it forever. When `Fork` is
/// chosen and the program runs threads, brood forks from the forkserver
/// instead for functions that capture nothing, and refuses capturing
/// closures ([`ErrorKind::ForkWithThreads`]) unless the program opted in with
/// [`allow_fork_with_threads`](crate::allow_fork_with_threads).
///
/// ```
/// use brood::StartMethod;
/// assert_eq!("spawn".parse::<StartMethod>().unwrap(), StartMethod::Spawn);
/// assert_eq!(StartMethod::ForkServer.to_string(), "forkserver");
/// assert!("vfork".parse::<StartMethod>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum StartMethod {
    /// `fork()` the caller: the child is a copy of the parent.
    Fork,
    /// Re-execute the current program; the child runs the function and exits.
    Spawn,
    /// Ask a single-threaded helper process to fork the child.
    ForkServer,
}

impl StartMethod {
    /// Every start method, in Python's order.
    ///
    /// ```
    /// assert_eq!(brood::StartMethod::ALL.len(), 3);
    /// ```
    pub const ALL: [StartMethod; 3] = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ];

    /// Python's name for it: `fork`, `spawn` or `forkserver`.
    ///
    /// ```
    /// assert_eq!(brood::StartMethod::Fork.name(), "fork");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StartMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<StartMethod> {
        StartMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::simple(
                    ErrorKind::InvalidState,
                    format!("cannot find context for {s:?}"),
                )
            })
    }
}

/// The process-wide default: 0 unset, else [`StartMethod::code`]. One
/// atomic byte, not a lock: a forked child sets its own default without
/// taking a lock another thread may have held at the fork, and without the
/// lock's code (each 64 KiB of code a forked child runs is a page fault).
/// It lies in `crate::child_page::PAGE`, beside brood's other statics a
/// forked child writes (each page it writes is a copy-on-write fault).
pub(crate) struct Default {
    method: AtomicU8,
}

impl Default {
    pub(crate) const fn new() -> Default {
        Default {
            method: AtomicU8::new(0),
        }
    }
}

impl StartMethod {
    /// The method's non-zero code in [`Default`].
    const fn code(self) -> u8 {
        match self {
            StartMethod::Fork => 1,
            StartMethod::Spawn => 2,
            StartMethod::ForkServer => 3,
        }
    }

    fn from_code(code: u8) -> Option<StartMethod> {
        match code {
            1 => Some(StartMethod::Fork),
            2 => Some(StartMethod::Spawn),
            3 => Some(StartMethod::ForkServer),
            _ => None,
        }
    }
}

/// Sets the process-wide default start method, once (Python's
/// `set_start_method`). A second call is an [`ErrorKind::InvalidState`]
/// error ("context has already been set") unless `force` is true.
///
/// ```
/// use brood::StartMethod;
/// brood::set_start_method(StartMethod::Spawn, false).unwrap();
/// assert!(brood::set_start_method(StartMethod::Fork, false).is_err());
/// brood::set_start_method(StartMethod::Fork, true).unwrap();
/// assert_eq!(brood::get_start_method(), StartMethod::Fork);
/// ```
pub fn set_start_method(method: StartMethod, force: bool) -> Result<()> {
    if force {
        PAGE.method.method.store(method.code(), Ordering::Release);
        return Ok(());
    }
    PAGE.method
        .method
        .compare_exchange(0, method.code(), Ordering::AcqRel, Ordering::Acquire)
        .map(drop)
        .map_err(|_| Error::invalid("context has already been set"))
}

/// The process-wide default start method: the one set with
/// [`set_start_method`], else [`StartMethod::ForkServer`]. As in Python,
/// asking fixes the default, so a later `set_start_method` without `force`
/// fails.
///
/// In a child it is the method its parent asked for when it started it (the
/// context's, or the parent's default), so the child starts its own
/// children the same way (Python forces the same on its children).
///
/// ```
/// use brood::StartMethod;
/// let mut p = brood::Context::new(StartMethod::Spawn).process(brood::get_start_method);
/// p.start()?;
/// assert_eq!(p.join()?, StartMethod::Spawn);
/// # Ok::<(), brood::Error>(())
/// ```
///
/// ```
/// let m = brood::get_start_method();
/// assert!(brood::StartMethod::ALL.contains(&m));
/// ```
pub fn get_start_method() -> StartMethod {
    let set = PAGE.method.method.load(Ordering::Acquire);
    let set = if set == 0 {
        // Asking fixes it (unless someone set it meanwhile).
        match PAGE.method.method.compare_exchange(
            0,
            StartMethod::ForkServer.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => StartMethod::ForkServer.code(),
            Err(now) => now,
        }
    } else {
        set
    };
    StartMethod::from_code(set).unwrap_or(StartMethod::ForkServer)
}

/// In a freshly started child: its default becomes `method`, set (as by
/// `set_start_method(method, true)`). Inlined, and written only when it
/// changes: a forked child calls it.
#[inline(always)]
pub(crate) fn inherit(method: StartMethod) {
    if PAGE.method.method.load(Ordering::Relaxed) != method.code() {
        PAGE.method.method.store(method.code(), Ordering::Release);
    }
}

/// Every start method, the default first (Python 3.14's
/// `get_all_start_methods()`: `['forkserver', 'fork', 'spawn']` on Linux).
/// The default here is the built-in one, [`StartMethod::ForkServer`], as
/// in Python: [`set_start_method`] does not reorder the list, and asking
/// does not fix the default.
///
/// ```
/// use brood::StartMethod;
/// let all = brood::get_all_start_methods();
/// assert_eq!(all, [StartMethod::ForkServer, StartMethod::Fork, StartMethod::Spawn]);
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    let default = StartMethod::ForkServer;
    std::iter::once(default)
        .chain(StartMethod::ALL.into_iter().filter(|m| *m != default))
        .collect()
}

/// Python's `set_forkserver_preload(module_names)`, accepted so ported code
/// keeps its shape; in Rust it does nothing, on purpose.
///
/// Python's forkserver is a fresh interpreter: preloading imports modules
/// into it once, so that the children it forks start with them loaded.
/// brood's forkserver is this same executable, with every function and
/// every `#[brood::task]` already linked in, and a Rust program has no
/// import step to pay for in each child — there is nothing to preload. Work
/// a child should find done (a table computed once, a file read once) is
/// better passed to it as an argument or kept in shared memory
/// ([`SharedMemory`](crate::SharedMemory), [`Value`](crate::Value)), which
/// every start method honours. The names are ignored (Python too ignores
/// modules that fail to import).
///
/// ```
/// brood::set_forkserver_preload(&["__main__", "numpy"]);
/// let mut p = brood::Process::new(|| 1);
/// p.start()?;
/// assert_eq!(p.join()?, 1);
/// # Ok::<(), brood::Error>(())
/// ```
pub fn set_forkserver_preload(module_names: &[&str]) {
    let _ = module_names;
}
