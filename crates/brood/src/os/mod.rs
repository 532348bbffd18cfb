//! The syscall layer: safe, typed wrappers over `fork`, `wait`, pidfds,
//! signals, `prctl` and `/proc`.
//!
//! This module is where brood's syscalls live, behind safe wrappers, so
//! the rest of the crate holds (almost) no `unsafe` of its own; the other
//! places allowed `unsafe` are the raw-memory types (`shm`'s segments,
//! values and arenas, the queue's ring) and the futex word and mutex in
//! `sync`. Where `rustix` has a safe call it is used (pidfds, `waitid`,
//! `waitpid`, pipes, socket pairs, `fcntl`, eventfds, `prctl`,
//! `getrandom`); what it cannot express safely is written here once, each
//! `unsafe` block with a `SAFETY:` comment: `fork` (its contract is the
//! caller's, or checked: `sys::fork_single_threaded`), `poll` over raw
//! pollfds, SCM_RIGHTS messages into raw buffers (`scm`), `posix_spawn`
//! (`spawn`), signal dispositions and masks, `atexit`, OFD locks (`fd`).
//! Each wrapper follows the same three steps: the call, the errno check, a
//! typed result. The names follow Python's `os` module where one exists
//! (`fork`, `getpid`, `getppid`, `_exit` → [`exit_now`], `wait`, `waitpid`).
//!
//! ```
//! use brood::os;
//!
//! let me = os::getpid();
//! assert!(me.as_raw() > 0);
//! assert_ne!(os::getppid(), me);
//! ```

pub(crate) mod code;
pub(crate) mod fd;
pub(crate) mod flock;
pub mod pid;
mod pidfd;
pub mod proc;
pub(crate) mod scm;
mod sigint;
pub(crate) mod spawn;
pub(crate) mod sys;

use std::fmt;
use std::io;
use std::time::Duration;

pub(crate) use sigint::{
    SigintPipe, forget_in_child as forget_sigint_in_child, ignore_sigint,
    subscribe as subscribe_sigint,
};

pub use pidfd::PidFd;
pub use proc::{ProcInfo, ProcState};

/// A process id: a positive integer the kernel hands out.
///
/// ```
/// let me = brood::os::getpid();
/// assert_eq!(brood::os::Pid::from_raw(me.as_raw()), Some(me));
/// assert_eq!(brood::os::Pid::from_raw(0), None);
/// println!("I am {me}");
/// ```
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Pid(i32);

impl Pid {
    /// Wraps a raw pid; `None` unless it is positive.
    ///
    /// ```
    /// assert!(brood::os::Pid::from_raw(1).is_some());
    /// assert!(brood::os::Pid::from_raw(-4).is_none());
    /// ```
    pub const fn from_raw(raw: i32) -> Option<Pid> {
        if raw > 0 { Some(Pid(raw)) } else { None }
    }

    /// The raw number, for syscalls and display.
    ///
    /// ```
    /// assert_eq!(brood::os::Pid::from_raw(42).unwrap().as_raw(), 42);
    /// ```
    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What [`fork`] returns: on which side of the fork the caller now stands.
///
/// ```no_run
/// use brood::os::{self, ForkResult};
///
/// // SAFETY: the child only calls async-signal-safe functions, then `_exit`.
/// match unsafe { os::fork() }.unwrap() {
///     ForkResult::Parent { child } => {
///         let (_, status) = os::waitpid(Some(child), os::WaitFlags::empty()).unwrap().unwrap();
///         assert_eq!(status.code(), Some(7));
///     }
///     ForkResult::Child => os::exit_now(7),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkResult {
    /// The original process; `child` is the new process's pid (Python's
    /// `os.fork()` returning a positive number).
    Parent {
        /// The pid of the new child.
        child: Pid,
    },
    /// The new process (Python's `os.fork()` returning 0).
    Child,
}

/// Creates a child process that is a copy of the caller (`fork(2)`).
///
/// ```
/// use brood::os::{self, ForkResult, WaitFlags};
/// // SAFETY: the child only calls `_exit`, which is async-signal-safe.
/// match unsafe { os::fork() }.unwrap() {
///     ForkResult::Child => os::exit_now(0),
///     ForkResult::Parent { child } => {
///         let (pid, status) = os::waitpid(Some(child), WaitFlags::empty()).unwrap().unwrap();
///         assert_eq!((pid, status.success()), (child, true));
///     }
/// }
/// ```
///
/// Returns twice: once in the parent with the child's pid, once in the child.
/// Each side then has its own copy of every variable: a write on one side is
/// not seen by the other.
///
/// Prefer [`crate::Process`], which runs a closure in the child under
/// `catch_unwind`, always ends it with `_exit`, and hands back the result.
///
/// # Safety
///
/// In a program with more than one thread, the child holds a copy of every
/// lock exactly as it was at the moment of the fork, and only the forking
/// thread exists in it: a lock another thread held (the allocator's, stdout's,
/// any `Mutex`) stays locked forever. Until it calls `exec` or [`exit_now`],
/// the child of a multi-threaded parent may therefore only call
/// async-signal-safe functions (see `signal-safety(7)`): no allocation, no
/// printing, no locks. In a single-threaded program the child may do anything
/// the parent could. Either way the child must not return into code that
/// expects to run once (a test harness, `main`'s cleanup): end it with
/// [`exit_now`].
#[inline]
pub unsafe fn fork() -> io::Result<ForkResult> {
    // SAFETY: fork(2) has no memory-safety preconditions of its own; the
    // caller upholds what the child may do afterwards (see `# Safety`).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // The cached pid is the parent's: the child's own, before
            // anything reads it (see `pid`).
            pid::refresh();
            Ok(ForkResult::Child)
        }
        child => Ok(ForkResult::Parent { child: Pid(child) }),
    }
}

/// The calling process's id (`getpid(2)`, Python's `os.getpid()`): a
/// syscall every time; [`pid::current`] is the cached copy.
///
/// ```
/// assert_eq!(brood::os::getpid().as_raw() as u32, std::process::id());
/// ```
pub fn getpid() -> Pid {
    Pid(rustix::process::getpid().as_raw_nonzero().get())
}

/// In a single-threaded process ([`single_threaded`]), whether the
/// environment variable `name` is set to something other than `0` (how std
/// reads `RUST_BACKTRACE`), read without std's environment lock and without
/// allocating; `None` when other threads may exist (then use `std::env`,
/// which takes the lock).
pub(crate) fn env_flag_unlocked(name: &std::ffi::CStr) -> Option<bool> {
    if !single_threaded() {
        return None;
    }
    // SAFETY: no other thread exists, so nothing modifies the environment
    // during the call; getenv returns null or a NUL-terminated string that
    // stays valid until the environment changes (we read it at once).
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return Some(false);
    }
    // SAFETY: as above: a valid C string, read before anything can change it.
    Some(unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() != b"0")
}

/// Whether this process has never run a second thread: glibc's
/// `__libc_single_threaded`, which the first `pthread_create` clears (it
/// stays clear after threads exit). `false` means "maybe several threads";
/// `true` is certain, and lets a fork skip what only guards against other
/// threads (the `/proc/self/task` count, holding locks across the fork).
pub(crate) fn single_threaded() -> bool {
    unsafe extern "C" {
        static __libc_single_threaded: libc::c_char;
    }
    // SAFETY: glibc (2.32+) defines this byte for the life of the process.
    // It is written only by a thread that is about to create another one,
    // so while it reads true no other thread exists to write it; once false
    // it stays false (the read is volatile, a plain byte load either way).
    unsafe { std::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// The parent's process id (`getppid(2)`, Python's `os.getppid()`).
///
/// After the parent dies this is the process that adopted the caller: the
/// nearest child subreaper, or init (pid 1).
///
/// ```
/// let parent = brood::os::getppid();
/// assert!(parent.as_raw() >= 1);
/// ```
pub fn getppid() -> Pid {
    // Inside a pid namespace whose parent lies outside it, getppid returns 0;
    // report init then, as the kernel does for adopted processes.
    Pid(rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get()))
}

/// Ends the calling process at once with `code` (`_exit(2)`, Python's
/// `os._exit`): no destructors, no `atexit` handlers, no flushing of Rust's
/// stdout buffer.
///
/// This is how a forked child must end. The parent reads `code` back through
/// [`wait`]/[`waitpid`] as [`ExitStatus::code`].
///
/// ```no_run
/// brood::os::exit_now(3);
/// ```
#[doc(alias = "_exit")]
#[inline]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// How a child changed state, decoded from the raw status `wait` returns.
///
/// ```
/// use brood::os::ExitStatus;
///
/// let exited = ExitStatus::Exited(3);
/// assert_eq!(exited.code(), Some(3));
/// assert_eq!(exited.exitcode(), Some(3));
/// let killed = ExitStatus::Signaled { signal: 15, core_dumped: false };
/// assert_eq!(killed.signal(), Some(15));
/// assert_eq!(killed.exitcode(), Some(-15)); // Python's convention
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit`/`_exit` (or returned from `main`) with this code
    /// (`WIFEXITED`, `WEXITSTATUS`).
    Exited(i32),
    /// A signal ended it (`WIFSIGNALED`, `WTERMSIG`, `WCOREDUMP`).
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
    /// A signal stopped it (`WIFSTOPPED`, `WSTOPSIG`); only reported with
    /// [`WaitFlags::UNTRACED`].
    Stopped(i32),
    /// `SIGCONT` resumed it (`WIFCONTINUED`); only reported with
    /// [`WaitFlags::CONTINUED`].
    Continued,
}

impl ExitStatus {
    /// Decodes a raw `wait` status word.
    ///
    /// ```
    /// use brood::os::ExitStatus;
    /// assert_eq!(ExitStatus::from_raw(3 << 8), ExitStatus::Exited(3));
    /// assert_eq!(ExitStatus::from_raw(9), ExitStatus::Signaled { signal: 9, core_dumped: false });
    /// ```
    pub fn from_raw(status: i32) -> ExitStatus {
        if libc::WIFEXITED(status) {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else if libc::WIFSTOPPED(status) {
            ExitStatus::Stopped(libc::WSTOPSIG(status))
        } else {
            ExitStatus::Continued
        }
    }

    /// The exit code, if the child exited normally (`WEXITSTATUS`).
    ///
    /// ```
    /// assert_eq!(brood::os::ExitStatus::Exited(0).code(), Some(0));
    /// ```
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// The signal that ended the child, if one did (`WTERMSIG`).
    ///
    /// ```
    /// let st = brood::os::ExitStatus::Signaled { signal: 9, core_dumped: false };
    /// assert_eq!(st.signal(), Some(9));
    /// ```
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(signal),
            _ => None,
        }
    }

    /// Python's `Process.exitcode`: the exit code, or minus the signal number
    /// for a child a signal ended; `None` for a stop or continue report.
    ///
    /// ```
    /// let st = brood::os::ExitStatus::Signaled { signal: 9, core_dumped: false };
    /// assert_eq!(st.exitcode(), Some(-9));
    /// ```
    pub fn exitcode(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(code),
            ExitStatus::Signaled { signal, .. } => Some(-signal),
            _ => None,
        }
    }

    /// Whether the child exited with code 0.
    ///
    /// ```
    /// assert!(brood::os::ExitStatus::Exited(0).success());
    /// ```
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal} ({})", signal_name(signal))?;
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
            ExitStatus::Stopped(signal) => {
                write!(f, "stopped by signal {signal} ({})", signal_name(signal))
            }
            ExitStatus::Continued => f.write_str("continued"),
        }
    }
}

/// The conventional name of a signal number (`SIGTERM` for 15), or `"SIG?"`.
///
/// ```
/// assert_eq!(brood::os::signal_name(9), "SIGKILL");
/// ```
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "SIG?",
    }
}

/// Options for [`waitpid`] (`WNOHANG`, `WUNTRACED`, `WCONTINUED`), combined
/// with `|`.
///
/// ```
/// use brood::os::WaitFlags;
/// let flags = WaitFlags::NOHANG | WaitFlags::UNTRACED;
/// assert!(flags.contains(WaitFlags::NOHANG));
/// assert!(!WaitFlags::empty().contains(WaitFlags::NOHANG));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaitFlags(i32);

impl WaitFlags {
    /// Return at once if no child has changed state (`WNOHANG`).
    ///
    /// ```
    /// assert!(brood::os::WaitFlags::NOHANG.contains(brood::os::WaitFlags::NOHANG));
    /// ```
    pub const NOHANG: WaitFlags = WaitFlags(libc::WNOHANG);
    /// Also report stopped children (`WUNTRACED`).
    ///
    /// ```
    /// assert_ne!(brood::os::WaitFlags::UNTRACED, brood::os::WaitFlags::empty());
    /// ```
    pub const UNTRACED: WaitFlags = WaitFlags(libc::WUNTRACED);
    /// Also report children resumed by `SIGCONT` (`WCONTINUED`).
    ///
    /// ```
    /// assert_ne!(brood::os::WaitFlags::CONTINUED, brood::os::WaitFlags::NOHANG);
    /// ```
    pub const CONTINUED: WaitFlags = WaitFlags(libc::WCONTINUED);

    /// No flags: block until a child exits.
    ///
    /// ```
    /// assert_eq!(brood::os::WaitFlags::empty(), brood::os::WaitFlags::default());
    /// ```
    pub const fn empty() -> WaitFlags {
        WaitFlags(0)
    }

    /// Whether every flag of `other` is set in `self`.
    ///
    /// ```
    /// use brood::os::WaitFlags;
    /// assert!((WaitFlags::NOHANG | WaitFlags::CONTINUED).contains(WaitFlags::CONTINUED));
    /// ```
    pub const fn contains(self, other: WaitFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for WaitFlags {
    type Output = WaitFlags;
    fn bitor(self, rhs: WaitFlags) -> WaitFlags {
        WaitFlags(self.0 | rhs.0)
    }
}

/// Waits for any child to exit (`wait(2)`, Python's `os.wait()`), returning
/// its pid and decoded status. Fails with `ECHILD` when there is no child.
///
/// ```no_run
/// let (pid, status) = brood::os::wait().unwrap();
/// println!("{pid} {status}");
/// ```
pub fn wait() -> io::Result<(Pid, ExitStatus)> {
    loop {
        if let Some(got) = waitpid(None, WaitFlags::empty())? {
            return Ok(got);
        }
    }
}

/// Waits for the child `pid` (or any child, for `None`) to change state
/// (`waitpid(2)`, Python's `os.waitpid`).
///
/// With [`WaitFlags::NOHANG`] and no change yet, returns `Ok(None)` where
/// Python returns `(0, 0)`.
///
/// ```no_run
/// use brood::os::{self, WaitFlags};
/// match os::waitpid(None, WaitFlags::NOHANG) {
///     Ok(Some((pid, status))) => println!("{pid}: {status}"),
///     Ok(None) => println!("children still running"),
///     Err(e) => println!("no children: {e}"),
/// }
/// ```
pub fn waitpid(pid: Option<Pid>, flags: WaitFlags) -> io::Result<Option<(Pid, ExitStatus)>> {
    let target = pid.and_then(|p| rustix::process::Pid::from_raw(p.as_raw()));
    let options = rustix::process::WaitOptions::from_bits_retain(flags.0 as u32);
    loop {
        // `None` is any child (waitpid(-1)): rustix's `waitpid(None)` is
        // only the caller's process group (waitpid(0)), which misses
        // children that made their own session or group.
        let got = match target {
            Some(_) => rustix::process::waitpid(target, options),
            None => rustix::process::wait(options),
        };
        match got {
            Ok(Some((got, status))) => {
                let got = Pid(got.as_raw_nonzero().get());
                return Ok(Some((got, ExitStatus::from_raw(status.as_raw()))));
            }
            Ok(None) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets `SIGCHLD` to `SIG_IGN`: the kernel then reaps every child as it
/// exits, so none becomes a zombie, and `wait` fails with `ECHILD`
/// (Python's `signal.signal(signal.SIGCHLD, signal.SIG_IGN)`).
///
/// This also stops [`crate::Process`] from reading its children's exit
/// status; restore the default with [`default_children`].
///
/// ```no_run
/// brood::os::ignore_children().unwrap();
/// // ... fork children that nobody waits for ...
/// brood::os::default_children().unwrap();
/// ```
pub fn ignore_children() -> io::Result<()> {
    set_sigchld(libc::SIG_IGN)
}

/// Restores `SIGCHLD` to its default action, undoing [`ignore_children`].
///
/// ```
/// brood::os::default_children().unwrap();
/// ```
pub fn default_children() -> io::Result<()> {
    set_sigchld(libc::SIG_DFL)
}

/// Whether the kernel reaps children by itself (SIGCHLD ignored, or
/// `SA_NOCLDWAIT`): then no exit status can be read back.
pub(crate) fn children_ignored() -> bool {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten, and a
    // null new action only queries the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) == 0
            && (old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0)
    }
}

fn set_sigchld(action: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: installing SIG_IGN or SIG_DFL runs no code of ours in signal
    // context; the previous handler is discarded.
    let previous = unsafe { libc::signal(libc::SIGCHLD, action) };
    if previous == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Marks the caller a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`):
/// orphaned descendants are then re-parented to it instead of to init, and it
/// must reap them.
///
/// ```no_run
/// brood::os::set_child_subreaper(true).unwrap();
/// ```
#[doc(alias = "PR_SET_CHILD_SUBREAPER")]
pub fn set_child_subreaper(on: bool) -> io::Result<()> {
    // rustix passes the pid as the flag: any pid (non-zero) turns it on.
    let flag = on.then(rustix::process::getpid);
    Ok(rustix::process::set_child_subreaper(flag)?)
}

/// Asks the kernel to send `signal` to the caller when its parent thread
/// exits (`prctl(PR_SET_PDEATHSIG)`); 0 turns it off.
///
/// ```no_run
/// brood::os::set_parent_death_signal(libc::SIGKILL).unwrap();
/// ```
#[doc(alias = "PR_SET_PDEATHSIG")]
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends `signal` to `pid` (`kill(2)`, Python's `os.kill`).
///
/// Prefer [`PidFd::send_signal`] for children you hold: a pid can be reused
/// after its process is reaped, a pidfd cannot.
///
/// ```
/// // Signal 0 checks that the process exists.
/// brood::os::kill(brood::os::getpid(), 0).unwrap();
/// ```
pub fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers.
    let rc = unsafe { libc::kill(pid.0, signal) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What [`daemonize`] returns on each side.
///
/// ```
/// use brood::os::{Daemonized, Pid};
/// let parent_side = Daemonized::Parent { daemon: Pid::from_raw(42).unwrap() };
/// assert_ne!(parent_side, Daemonized::Daemon);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemonized {
    /// The original caller: the middle process has already exited and been
    /// reaped; `daemon` is the grandchild, now adopted by init or the nearest
    /// subreaper.
    Parent {
        /// The grandchild's pid.
        daemon: Pid,
    },
    /// The grandchild: in a new session, with no controlling terminal, and no
    /// longer a child of the caller.
    Daemon,
}

/// The double fork: the caller forks a middle process, which starts a new
/// session (`setsid`), forks the grandchild and exits at once. The caller
/// reaps the middle process straight away, so no zombie is ever left, and the
/// grandchild is adopted by init (or the nearest subreaper) — nobody has to
/// wait for it.
///
/// The working directory, umask and standard streams are left as they are;
/// a long-lived daemon usually changes all three.
///
/// # Safety
///
/// As for [`fork`]: in a multi-threaded program the grandchild may only call
/// async-signal-safe functions until it calls `exec` or [`exit_now`]. The
/// grandchild must end with [`exit_now`].
///
/// ```no_run
/// use brood::os::{self, Daemonized};
/// // SAFETY: single-threaded program; the daemon ends with exit_now.
/// match unsafe { os::daemonize() }.unwrap() {
///     Daemonized::Parent { daemon } => println!("daemon is {daemon}"),
///     Daemonized::Daemon => {
///         // ... serve ...
///         os::exit_now(0);
///     }
/// }
/// ```
pub unsafe fn daemonize() -> io::Result<Daemonized> {
    let (read, write) = pipe_cloexec()?;
    // SAFETY: the caller upholds fork's contract for the grandchild; the
    // middle process only calls async-signal-safe functions (setsid, fork,
    // write, _exit).
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(read);
            // Fails only for a process-group leader, which a fresh child is not.
            let _ = rustix::process::setsid();
            // SAFETY: as above; the grandchild returns to the caller.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(write);
                    Ok(Daemonized::Daemon)
                }
                Ok(ForkResult::Parent { child }) => {
                    let bytes = child.0.to_ne_bytes();
                    write_all_raw(&write, &bytes);
                    exit_now(0)
                }
                Err(_) => exit_now(1),
            }
        }
        ForkResult::Parent { child } => {
            drop(write);
            let mut buf = [0u8; 4];
            let got = read_full(&read, &mut buf);
            waitpid(Some(child), WaitFlags::empty())?;
            match got {
                Ok(4) => {
                    let pid = i32::from_ne_bytes(buf);
                    Ok(Daemonized::Parent { daemon: Pid(pid) })
                }
                Ok(_) => Err(io::Error::other(
                    "daemonize: the middle process could not fork",
                )),
                Err(e) => Err(e),
            }
        }
    }
}

/// A pipe whose two ends close on `exec`.
pub(crate) fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A pipe whose two ends close on `exec` and never block (`pipe2` with
/// `O_CLOEXEC | O_NONBLOCK`: one syscall where `pipe_cloexec` plus
/// `fcntl` take three).
pub(crate) fn pipe_cloexec_nonblocking() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>
{
    use rustix::pipe::PipeFlags;
    Ok(rustix::pipe::pipe_with(
        PipeFlags::CLOEXEC | PipeFlags::NONBLOCK,
    )?)
}

/// A slot for one pair of fds kept for reuse, shared by threads without a
/// lock (so a forked child never inherits it held), that a process forked
/// while it was full does not use: [`take`](FdPairSlot::take) closes fds
/// put there by another process (its parent).
pub(crate) struct FdPairSlot {
    /// The two fds (first in the low 32 bits), or `EMPTY`.
    pair: std::sync::atomic::AtomicU64,
    /// The pid of the process that filled the slot.
    owner: std::sync::atomic::AtomicI32,
}

impl FdPairSlot {
    const EMPTY: u64 = u64::MAX;

    pub(crate) const fn new() -> FdPairSlot {
        FdPairSlot {
            pair: std::sync::atomic::AtomicU64::new(Self::EMPTY),
            owner: std::sync::atomic::AtomicI32::new(0),
        }
    }

    /// Takes the pair, if the slot holds one that `me` (the caller's pid)
    /// put there.
    pub(crate) fn take(&self, me: Pid) -> Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
        use std::os::fd::FromRawFd;
        use std::sync::atomic::Ordering;
        let packed = self.pair.swap(Self::EMPTY, Ordering::AcqRel);
        if packed == Self::EMPTY {
            return None;
        }
        // SAFETY: `put` stored two open fds it owned and gave up; the swap
        // above made this call their only owner.
        let pair = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(packed as u32 as i32),
                std::os::fd::OwnedFd::from_raw_fd((packed >> 32) as u32 as i32),
            )
        };
        if self.owner.load(Ordering::Acquire) != me.as_raw() {
            // Inherited through a fork: this process's copies, closed.
            return None;
        }
        Some(pair)
    }

    /// Puts a pair in the slot (closing the one it held, if any); `me` is
    /// the caller's pid.
    pub(crate) fn put(&self, me: Pid, pair: (std::os::fd::OwnedFd, std::os::fd::OwnedFd)) {
        use std::os::fd::IntoRawFd;
        use std::sync::atomic::Ordering;
        let (a, b) = (pair.0.into_raw_fd(), pair.1.into_raw_fd());
        self.owner.store(me.as_raw(), Ordering::Release);
        let packed = u64::from(a as u32) | (u64::from(b as u32) << 32);
        let old = self.pair.swap(packed, Ordering::AcqRel);
        if old != Self::EMPTY {
            // SAFETY: as in `take`: the swap made us their only owner.
            unsafe {
                libc::close(old as u32 as i32);
                libc::close((old >> 32) as u32 as i32);
            }
        }
    }
}

/// Whether a non-blocking pipe's read end holds nothing now (a read finds
/// no data; what it read, if anything, is lost, so the pipe is not reused).
pub(crate) fn is_drained(fd: &impl std::os::fd::AsFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        rustix::io::read(fd, &mut byte),
        Err(rustix::io::Errno::AGAIN)
    )
}

/// Closes `fd` (errors ignored, as `OwnedFd`'s drop does), with
/// [`close_raw_now`].
pub(crate) fn close_now(fd: std::os::fd::OwnedFd) {
    use std::os::fd::IntoRawFd;
    // SAFETY: the fd was owned and is given up here, so it is closed once.
    unsafe { close_raw_now(fd.into_raw_fd()) }
}

/// Closes a raw fd, errors ignored. On x86-64 Linux it makes the `close`
/// syscall itself rather than through libc: a freshly forked child maps
/// each 64 KiB of code it runs with a page fault, and libc's `close`
/// wrapper would cost it one more.
///
/// # Safety
///
/// `raw` must be an open fd that nothing else will use or close.
pub(crate) unsafe fn close_raw_now(raw: std::os::fd::RawFd) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    // SAFETY: per the contract `raw` is closed once. The `syscall`
    // instruction takes the number in rax and the first argument in rdi,
    // returns in rax, and clobbers rcx and r11 (declared); it touches no
    // memory of ours and leaves the stack alone.
    unsafe {
        let _ret: i64;
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_close => _ret,
            in("rdi") i64::from(raw),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    // SAFETY: as above, `raw` is closed once.
    unsafe {
        libc::close(raw);
    }
}

/// Blocks until `fd` is writable (or in error); async-signal-safe.
pub(crate) fn wait_writable(fd: &impl std::os::fd::AsRawFd) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call; EINTR just returns early and the
    // caller retries its write.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// Writes all of `buf`, retrying on EINTR; async-signal-safe (no allocation),
/// errors are dropped (for use in a child right before `_exit`).
pub(crate) fn write_all_raw(fd: &impl std::os::fd::AsFd, mut buf: &[u8]) -> bool {
    // rustix makes the raw syscall: no allocation, no lock.
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Reads until `buf` is full or EOF; returns how many bytes were read.
pub(crate) fn read_full(fd: &impl std::os::fd::AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        // rustix makes the raw syscall: no allocation, no lock.
        match rustix::io::read(fd, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// The number of CPUs this process may run on (its affinity mask), at least 1.
///
/// ```
/// assert!(brood::os::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The number of threads in the calling process, read from `/proc/self/stat`.
///
/// ```
/// assert!(brood::os::thread_count().unwrap() >= 1);
/// ```
pub fn thread_count() -> io::Result<usize> {
    proc::ProcInfo::read(getpid()).map(|info| info.threads)
}

/// The number of threads, from the link count of `/proc/self/task` (one
/// `stat`, no parsing): each thread is a subdirectory there.
pub(crate) fn thread_count_fast() -> io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let nlink = std::fs::metadata("/proc/self/task")?.nlink();
    Ok((nlink as usize).saturating_sub(2).max(1))
}

pub(crate) fn duration_to_poll_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => {
            // Round up so a 0.4 ms timeout does not spin as a 0 ms poll.
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        }
    }
}
