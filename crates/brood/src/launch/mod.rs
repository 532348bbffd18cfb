//! How a child is started: one small launcher seam, one implementation per
//! start method. `Process` knows nothing about how its child came to be; it
//! gets back a [`Popen`] (pid, a sentinel fd that turns readable at exit,
//! reap, signal) and the read end of the result pipe.
//!
//! The result protocol is the same under every start method: the child
//! writes one frame `[tag: u8][len: u64 LE][payload]` to the result pipe and
//! exits. Tag 0: the function returned, payload is the encoded value; tag 1:
//! it panicked, payload is an encoded [`PanicReport`]; tag 2: the value could
//! not be encoded, payload is the message. No complete frame means the child
//! died (or exited) before returning, and its exit status says how — except
//! under fork, where a `()` (zero-sized, nil-encoded) value is sent as no
//! frame and exit code 0 (see `UNIT_ENCODING` and README.md).

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};

use serde::{Deserialize, Serialize};

use crate::child_page::PAGE;
use crate::error::PanicReport;
use crate::os::{self, ExitStatus, Pid, PidFd};
use crate::task::{Encoded, Fail, Trampoline};

pub(crate) const TAG_RETURNED: u8 = 0;
pub(crate) const TAG_PANICKED: u8 = 1;
pub(crate) const TAG_ENCODE_FAILED: u8 = 2;
pub(crate) const TAG_BAD_ARGS: u8 = 3;
pub(crate) const TAG_UNKNOWN_TASK: u8 = 4;
pub(crate) const HEADER_LEN: usize = 9;

/// The child's work, ready to run in the same address space: runs the
/// user's function and encodes its value (or says why it could not).
pub(crate) type Body = Box<dyn FnOnce() -> Result<Encoded, Fail> + Send>;

/// What a child runs.
pub(crate) enum Work {
    /// Any closure; only a forked child can run it.
    Closure(Body),
    /// A function that captures nothing, with its encoded arguments and
    /// the fds they carry (see `handle`).
    Function {
        call: Trampoline,
        args: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    /// A registered task, by name, with its encoded arguments and fds.
    Task {
        name: String,
        args: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
}

impl Work {
    /// Runs the work in this address space (a forked child): like
    /// [`into_body`](Work::into_body) but without boxing it first. Inlined
    /// into the fork launcher (see `child_main_with`).
    #[inline(always)]
    pub(crate) fn run(self) -> Result<Encoded, Fail> {
        match self {
            Work::Closure(body) => body(),
            Work::Function { call, args, fds } => {
                crate::handle::with_incoming(fds, || call(&args)).map(Encoded::from)
            }
            Work::Task { name, args, fds } => match crate::task::lookup(&name) {
                Ok(call) => crate::handle::with_incoming(fds, || call(&args)).map(Encoded::from),
                Err(e) => Err(Fail::UnknownTask(e.to_string())),
            },
        }
    }

    /// The work as a body to run in this address space.
    pub(crate) fn into_body(self) -> Body {
        match self {
            Work::Closure(body) => body,
            Work::Function { call, args, fds } => Box::new(move || {
                crate::handle::with_incoming(fds, || call(&args)).map(Encoded::from)
            }),
            Work::Task { name, args, fds } => Box::new(move || match crate::task::lookup(&name) {
                Ok(call) => crate::handle::with_incoming(fds, || call(&args)).map(Encoded::from),
                Err(e) => Err(Fail::UnknownTask(e.to_string())),
            }),
        }
    }

    /// The work as it crosses to a fresh process (spawn, forkserver): the
    /// target, the encoded arguments, and the fds that go with them.
    fn to_wire(&self) -> Option<(WireTarget, &[u8], Vec<RawFd>)> {
        let raw = |fds: &[OwnedFd]| fds.iter().map(AsRawFd::as_raw_fd).collect();
        match self {
            Work::Closure(_) => None,
            Work::Function { call, args, fds } => Some((
                WireTarget::Offset(crate::task::to_offset(*call)),
                args,
                raw(fds),
            )),
            Work::Task { name, args, fds } => {
                Some((WireTarget::Named(name.clone()), args, raw(fds)))
            }
        }
    }
}

/// A function as named on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireTarget {
    /// A trampoline's offset from the crate's anchor (same executable only).
    Offset(i64),
    /// A registered task's name.
    Named(String),
}

/// What a child needs to know about itself. Default names are not
/// carried (the child makes them from its identity when asked), and the
/// random auth key is a static's address: for a child with a default name
/// the fork launcher makes a `Spec` without allocating.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    /// The given name; `None`: the default for `identity`.
    pub(crate) name: Option<String>,
    pub(crate) daemon: bool,
    pub(crate) identity: crate::children::Ident,
    pub(crate) parent_pid: i32,
    /// The parent's given name; `None`: the default for its identity.
    pub(crate) parent_name: Option<String>,
    /// The parent's start time (since boot, `/proc/PID/stat`): with
    /// `parent_pid`, names the parent for `parent_process()` even after its
    /// pid is reused.
    #[serde(default)]
    pub(crate) parent_start: Option<std::time::Duration>,
    /// The child's auth key (Python's `authkey`): its `Process`'s own, else
    /// the parent's.
    #[serde(default)]
    pub(crate) authkey: crate::children::Key,
    /// The start method the parent asked for: the child's own default.
    pub(crate) start_method: crate::start_method::StartMethod,
}

impl Spec {
    /// Who the child this spec describes is, as its children table knows
    /// it, made of the spec's own fields (no copy: the fork launcher builds
    /// it in the parent, where each allocation and each free is a page
    /// written between two forks, so a copy-on-write fault).
    pub(crate) fn into_me(self) -> crate::children::Me {
        crate::children::Me {
            name: self.name,
            identity: self.identity,
            counter: 0,
            daemon: self.daemon,
            parent: Pid::from_raw(self.parent_pid).map(|pid| (pid, self.parent_name)),
            parent_start: self.parent_start,
            authkey: Some(self.authkey),
        }
    }

    /// Who the child this spec describes is, as its children table knows
    /// it, its strings and identity moved out of the spec (which keeps
    /// none): a freshly forked forkserver child makes it without
    /// allocating (each allocation there is a copy-on-write fault, and
    /// malloc's code one more page).
    pub(crate) fn take_me(&mut self) -> crate::children::Me {
        Spec {
            name: self.name.take(),
            daemon: self.daemon,
            identity: std::mem::replace(&mut self.identity, crate::children::Ident::main()),
            parent_pid: self.parent_pid,
            parent_name: self.parent_name.take(),
            parent_start: self.parent_start,
            // The key's own bytes stay shared (a static, or an `Arc`).
            authkey: self.authkey.clone(),
            start_method: self.start_method,
        }
        .into_me()
    }

    /// The entry for this child in its parent's table.
    pub(crate) fn entry(&self) -> crate::children::Entry {
        crate::children::Entry {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            served: None,
        }
    }
}

/// In a freshly started spawn or forkserver child: it has no children yet,
/// becomes the process `spec` describes, and its default start method
/// becomes the one its parent asked for (a fresh, single-threaded process:
/// no lock order to keep yet). The fork launcher does the same under its
/// held locks.
pub(crate) fn enter_child(spec: &mut Spec) {
    let method = spec.start_method;
    crate::children::lock().become_child(spec.take_me());
    crate::start_method::inherit(method);
}

/// Everything a spawned or forkserver child receives.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) spec: Spec,
    /// Device and inode of the parent's executable: the child checks it runs
    /// the same file before it trusts a code offset.
    pub(crate) exe: (u64, u64),
    pub(crate) target: WireTarget,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    /// The last fd that comes with the job is the parent's resource tracker
    /// connection: one tracker per process tree (see `shm/README.md`).
    #[serde(default)]
    pub(crate) tracker: bool,
}

impl Job {
    /// The job for `work`, and the fds that must travel with it; `None`
    /// for a closure, which cannot leave this address space.
    pub(crate) fn new(spec: &Spec, work: &Work) -> Option<(Job, Vec<RawFd>)> {
        let (target, args, mut fds) = work.to_wire()?;
        let tracker = crate::shm::tracker_for_child();
        fds.extend(tracker);
        let job = Job {
            spec: spec.clone(),
            exe: exe_identity(),
            target,
            args: args.to_vec(),
            tracker: tracker.is_some(),
        };
        Some((job, fds))
    }

    /// Turns a received job into a body; refuses a code offset from another
    /// executable.
    pub(crate) fn into_body(self, mut fds: Vec<OwnedFd>) -> Result<Body, String> {
        if self.tracker
            && let Some(fd) = fds.pop()
        {
            crate::shm::adopt_tracker(fd);
        }
        match self.target {
            WireTarget::Offset(offset) => {
                // Only valid in this same executable file (device and inode
                // checked by `resolve`).
                let Some(call) = crate::task::resolve(offset, self.exe) else {
                    return Err("the parent runs a different executable; functions cross by offset only within the same one (use #[brood::task])".into());
                };
                let args = self.args;
                Ok(Work::Function { call, args, fds }.into_body())
            }
            WireTarget::Named(name) => {
                let args = self.args;
                Ok(Work::Task { name, args, fds }.into_body())
            }
        }
    }
}

pub(crate) use crate::task::exe_identity;

/// The trampoline at `offset`, if this process runs the executable whose
/// device and inode are `exe` (what the pool's workers use for each task:
/// the offset came from a parent that runs `exe`).
pub(crate) fn trampoline_at(exe: (u64, u64), offset: i64) -> Option<Trampoline> {
    crate::task::resolve(offset, exe)
}

/// A start method: makes a child that runs the work in `work` (always
/// `Some` when called).
///
/// On success the launcher may have taken the work (the caller drops what
/// is left). On failure it leaves the work in place whenever no child ran
/// it, so the process can be started again: a launcher takes the work only
/// where a child runs it (the fork child's own copy), and kills a child it
/// created but could not hold before it reports the error.
pub(crate) trait Launcher {
    fn launch(&self, spec: Spec, work: &mut Option<Work>) -> io::Result<Launched>;
}

/// A started child, as the parent sees it.
pub(crate) struct Launched {
    pub(crate) popen: Popen,
    /// Read end of the result pipe (non-blocking, close-on-exec).
    pub(crate) result: OwnedFd,
    /// The fork launcher's own copy of the pipe's write end: kept while the
    /// child runs (so the child's exit is one wake-up, not an end-of-file
    /// and then the exit), and the pipe reused for the next child once this
    /// one is joined (see `fork::recycle`). `None` for the other launchers.
    pub(crate) keep: Option<OwnedFd>,
}

/// The parent's view of one running child, whatever started it.
#[derive(Debug)]
pub(crate) enum Popen {
    /// A direct child held through a pidfd (fork, spawn).
    Direct(PidFd),
    /// A child of the forkserver: its pidfd (passed by the server) tells
    /// when it exits; the server reaps it and sends the status.
    Served(PidFd),
}

impl Popen {
    pub(crate) fn pid(&self) -> Pid {
        self.sentinel().pid()
    }

    /// The fd that turns readable when the child exits.
    pub(crate) fn sentinel(&self) -> &PidFd {
        match self {
            Popen::Direct(fd) | Popen::Served(fd) => fd,
        }
    }

    pub(crate) fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        match self {
            Popen::Direct(fd) => fd.try_reap(),
            Popen::Served(fd) => forkserver::try_reap(fd),
        }
    }

    /// For a forkserver child that has sent its frame: its status, if the
    /// server's reply comes within a few milliseconds (see
    /// `forkserver::quick_status`); `None` otherwise, and always for a
    /// direct child.
    pub(crate) fn quick_status(&self, deadline: Option<std::time::Instant>) -> Option<ExitStatus> {
        match self {
            Popen::Direct(_) => None,
            Popen::Served(fd) => forkserver::quick_status(fd, deadline),
        }
    }

    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        self.sentinel().send_signal(signal)
    }

    /// The pidfd, for the orphan queue; `None` for a forkserver child, which
    /// the server reaps.
    pub(crate) fn into_orphan(self) -> Option<PidFd> {
        match self {
            Popen::Direct(fd) => Some(fd),
            Popen::Served(fd) => {
                forkserver::forget(fd.pid());
                None
            }
        }
    }
}

/// For a daemon child: die (SIGKILL) when the parent does, and leave at
/// once if it already has (the race before the prctl).
pub(crate) fn die_with_parent(parent: Pid) {
    let _ = os::set_parent_death_signal(libc::SIGKILL);
    if os::getppid() != parent {
        os::exit_now(1);
    }
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<PanicReport>> = const { std::cell::RefCell::new(None) };
}

/// What a child process knows about itself (in `crate::child_page::PAGE`,
/// with brood's other statics a forked child writes: each page it writes
/// costs it a copy-on-write fault).
pub(crate) struct ChildFlags {
    /// Set in every brood child (`child_main`).
    pub(crate) in_child: std::sync::atomic::AtomicBool,
    /// Set in a forked child (`fork.rs`): other threads of the parent may
    /// have held locks at the fork, so the child reads nothing lockable on
    /// brood's behalf (the backtrace wish comes from [`WANT_BACKTRACE`]).
    pub(crate) forked: std::sync::atomic::AtomicBool,
    /// Set in a forked child whose parent can read its exit status (SIGCHLD
    /// not ignored): a value that encodes as [`UNIT_ENCODING`] is then sent
    /// as no frame at all.
    pub(crate) unit_without_frame: std::sync::atomic::AtomicBool,
}

impl ChildFlags {
    pub(crate) const fn new() -> ChildFlags {
        ChildFlags {
            in_child: std::sync::atomic::AtomicBool::new(false),
            forked: std::sync::atomic::AtomicBool::new(false),
            unit_without_frame: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// The pid of a spawned child (set by `spawn::child`): that process, and
/// no child it forks, ends through `exit` so its atexit handlers run.
static EXIT_HOOKS_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Called by a spawned child: it ends through `exit`, as a Rust `main`
/// ending with `std::process::exit` would (see [`child_main`]).
pub(crate) fn run_exit_hooks_here() {
    EXIT_HOOKS_PID.store(
        os::pid::current().as_raw(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// `RUST_BACKTRACE` as the parent read it just before the fork.
static WANT_BACKTRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reads `RUST_BACKTRACE` for the child about to be forked.
pub(crate) fn note_backtrace_wish() {
    use std::sync::atomic::Ordering::Relaxed;
    // Stored only when it changes: a write to a page costs a copy-on-write
    // fault per child.
    let want = backtrace_wanted();
    if WANT_BACKTRACE.load(Relaxed) != want {
        WANT_BACKTRACE.store(want, Relaxed);
    }
}

fn backtrace_wanted() -> bool {
    // A single-threaded process reads it without std's environment lock
    // (no other thread can be writing the environment): taking the lock is
    // a write to a page the parent otherwise leaves alone between forks,
    // and each such page costs it a copy-on-write fault per child.
    if let Some(want) = os::env_flag_unlocked(c"RUST_BACKTRACE") {
        return want;
    }
    std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
}
static HOOK: std::sync::Once = std::sync::Once::new();

/// Installs, once per process, a panic hook that — in a brood child only —
/// records where the panic happened (and a backtrace when `RUST_BACKTRACE`
/// asks for one: as a spawn or forkserver child's environment says when it
/// panics, as the parent's said at the fork for a forked child, which must
/// not take std's environment lock), then lets the previous hook print as
/// usual. It is
/// installed in the parent before the first fork, so a forked child
/// inherits it instead of allocating a new one (its pages are shared
/// copy-on-write with the parent; every write there costs a fault). A hook
/// the program sets later replaces it: children then report the panic's
/// message without its location.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if PAGE
                .child
                .in_child
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                // A forked child must not take std's environment lock.
                let want_bt = if PAGE.child.forked.load(std::sync::atomic::Ordering::Relaxed) {
                    WANT_BACKTRACE.load(std::sync::atomic::Ordering::Relaxed)
                } else {
                    backtrace_wanted()
                };
                let report = PanicReport {
                    message: payload_message(info.payload()),
                    location: info
                        .location()
                        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
                    backtrace: want_bt
                        .then(|| std::backtrace::Backtrace::force_capture().to_string()),
                };
                LAST_PANIC.with(|slot| *slot.borrow_mut() = Some(report));
            }
            previous(info);
        }));
    });
}

/// The report of a panic just caught in this child, for a loop that
/// catches panics itself and goes on (the pool's worker).
pub(crate) fn take_panic_report(payload: &(dyn std::any::Any + Send)) -> PanicReport {
    LAST_PANIC
        .with(|slot| slot.borrow_mut().take())
        .unwrap_or_else(|| PanicReport {
            message: payload_message(payload),
            location: None,
            backtrace: None,
        })
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// Writes header and payload with as few writes as the pipe allows (one,
/// usually), so the parent wakes once. The fd may be non-blocking (the
/// fork launcher's pipe is, at both ends): a full pipe is waited out with
/// `poll`, never dropped.
fn write_frame(fd: &OwnedFd, header: &[u8], payload: &[u8]) {
    let (mut header, mut payload) = (header, payload);
    while !header.is_empty() || !payload.is_empty() {
        let iov = [
            std::io::IoSlice::new(header),
            std::io::IoSlice::new(payload),
        ];
        // rustix makes the syscall itself: no allocation, no lock.
        let n = match rustix::io::writev(fd, &iov) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                // The parent drains the pipe while it waits for us.
                os::wait_writable(fd);
                continue;
            }
            Err(_) => return,
        };
        let from_header = n.min(header.len());
        header = &header[from_header..];
        payload = &payload[n - from_header..];
    }
}

// The value encoding lives with the trampolines that use it (`task`,
// below this module); re-exported for the launchers and `Process`.
pub(crate) use crate::task::{INLINE, UNIT_ENCODING, encode_small};

/// The child's side of every start method: run the body under
/// `catch_unwind`, write the result frame, clean up its own children, flush
/// stdout, and exit — a panic never unwinds into the parent's code.
///
/// How it exits follows Python's children. Every child flushes std's
/// stdout buffer (stderr has none; Python flushes `sys.stdout` and
/// `sys.stderr`). A spawned child — a fresh process running this program —
/// then ends through `exit` (`std::process::exit`), so the atexit handlers
/// registered in it run and C stdio buffers are flushed, as a Python spawn
/// child ends with `sys.exit` and runs `atexit`. A forked or forkserver
/// child ends with `_exit`, as Python's do (`os._exit`): the atexit
/// handlers it inherited belong to its parent (or the forkserver) and must
/// not run twice. Rust never drops statics, so a buffered writer kept in a
/// static is flushed by nobody, under any method: flush it in the function.
pub(crate) fn child_main(body: Body, result: OwnedFd) -> ! {
    install_panic_hook();
    child_main_with(body, result, os::pid::current())
}

/// The frame's tag, payload and exit code for a body that did not return a
/// value.
#[cold]
#[inline(never)]
fn failure_frame(
    outcome: Result<Result<Encoded, Fail>, Box<dyn std::any::Any + Send>>,
) -> (u8, Encoded, i32) {
    match outcome {
        Ok(Ok(bytes)) => (TAG_RETURNED, bytes, 0),
        Ok(Err(Fail::Encode(message))) => (TAG_ENCODE_FAILED, message.into_bytes().into(), 1),
        Ok(Err(Fail::BadArgs(message))) => (TAG_BAD_ARGS, message.into_bytes().into(), 1),
        Ok(Err(Fail::UnknownTask(message))) => (TAG_UNKNOWN_TASK, message.into_bytes().into(), 1),
        Err(payload) => {
            let report = LAST_PANIC
                .with(|slot| slot.borrow_mut().take())
                .unwrap_or_else(|| PanicReport {
                    message: payload_message(&*payload),
                    location: None,
                    backtrace: None,
                });
            // Leak the payload: dropping it could panic again.
            std::mem::forget(payload);
            let bytes = crate::codec::encode(&report).unwrap_or_default();
            (TAG_PANICKED, bytes.into(), 1)
        }
    }
}

/// [`child_main`] for any function (a forked child runs its copy of the
/// work in place). Inlined into the fork launcher: a forked child maps each
/// 64 KiB of code it runs with a page fault, so its path stays together.
/// The panic hook must be installed already (the fork launcher installs it
/// in the parent, so the child does not run `install_panic_hook`'s code:
/// one page fault fewer).
/// `me` is this process's pid (the caller has it: one `getpid` fewer).
#[inline(always)]
pub(crate) fn child_main_with(
    body: impl FnOnce() -> Result<Encoded, Fail>,
    result: OwnedFd,
    me: Pid,
) -> ! {
    PAGE.child
        .in_child
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Who writes the frame: this process (`me`), not a process the
    // function forked and let return here (its frame would land in a pipe
    // the parent may have reused for another child by then).
    let outcome = panic::catch_unwind(AssertUnwindSafe(body));
    let (tag, payload, code) = match outcome {
        Ok(Ok(bytes)) => (TAG_RETURNED, bytes, 0),
        // Out of line: the common path stays a two-way branch (a jump
        // table would be one more page for a forked child to fault in).
        other => failure_frame(other),
    };
    let mut header = [0u8; HEADER_LEN];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.as_slice().len() as u64).to_le_bytes());
    // Clean up first and write the result last, right before `_exit`: the
    // parent wakes for the result and finds the child gone (or nearly), one
    // wake-up instead of two.
    // The kernel's answer, not the cached pid: this must hold even in a
    // process the function made with a raw `clone` (which no atfork
    // handler sees).
    let now = os::getpid();
    let _ = panic::catch_unwind(|| crate::children::exit_cleanup_in(now));
    let _ = panic::catch_unwind(flush_stdout);
    // A returned nil-encoded value needs no frame under fork: exit code 0
    // says it (the parent decodes `UNIT_ENCODING`). Elsewhere it is sent.
    let unit = tag == TAG_RETURNED && payload.as_slice().is_empty();
    if now == me
        && !(unit
            && PAGE
                .child
                .unit_without_frame
                .load(std::sync::atomic::Ordering::Relaxed))
    {
        let payload: &[u8] = if unit {
            UNIT_ENCODING
        } else {
            payload.as_slice()
        };
        header[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        write_frame(&result, &header, payload);
    }
    // Not closed: exit closes it (one syscall fewer).
    std::mem::forget(result);
    if EXIT_HOOKS_PID.load(std::sync::atomic::Ordering::Relaxed) == now.as_raw() {
        std::process::exit(code)
    }
    os::exit_now(code)
}

/// std's stdout handle, kept by the first [`flush_stdout`] (in a fork
/// launcher's parent, before its first fork; in a forkserver, before its
/// first child): a forked child then flushes through it and never runs
/// `std::io::stdout` (its code is a 64 KiB window apart from the flush's:
/// one page fault in every child).
static STDOUT: std::sync::OnceLock<std::io::Stdout> = std::sync::OnceLock::new();

/// Flushes std's stdout (before a fork, so the child does not print the
/// parent's pending output again, and at a child's end, as Python's child
/// flushes `sys.stdout`).
#[inline(always)]
pub(crate) fn flush_stdout() {
    use std::io::Write;
    let _ = match STDOUT.get() {
        Some(mut out) => out.flush(),
        None => STDOUT.get_or_init(std::io::stdout).flush(),
    };
}
