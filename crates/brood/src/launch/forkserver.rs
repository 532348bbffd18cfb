//! The forkserver start method.
//!
//! On first use, the program re-executes itself (like spawn) as a server
//! that never runs `main` and never starts a thread, so its forks are always
//! safe. For each child the client sends a request and the server forks.
//!
//! Protocol over one Unix stream socket (the server's fd 3):
//! - request: `[len: u64 LE]` carrying the result pipe's write end as
//!   SCM_RIGHTS, then `len` bytes of an encoded `Job`;
//! - replies, 12 bytes each: `[kind: u8][pad: 3][pid: i32 LE][value: i32 LE]`
//!   with kind `STARTED` (and the child's pidfd as SCM_RIGHTS), `FAILED`
//!   (value = errno), `EXITED` (value = raw wait status) or `LOST` (value =
//!   the errno of a `waitpid` that failed: the status is unknown, never
//!   "exited 0"). `EXITED`/`LOST` come whenever a child is reaped, so the
//!   client keeps the ones it reads while waiting for something else.
//!
//! Every request gets exactly one `STARTED` or `FAILED`. A malformed one (a
//! length over the frame limit, no result fd, bytes that do not decode) is
//! answered `FAILED` and logged on stderr; the server keeps serving.
//!
//! Lifetime: the server leaves when its socket reaches end of file — when
//! the client exits, however abruptly — after SIGKILLing its daemon
//! children (their parent is gone). Nothing else makes it leave. It blocks
//! SIGINT, so a Ctrl-C reaches the client and the children, not the server.
//!
//! A server that dies (killed) takes the statuses of its running children
//! with it: they are reparented and reaped elsewhere. The client notices at
//! once (the server's pidfd turns readable, or its socket ends) and reports
//! such a child, once its own pidfd says it ended, as exited with code 255 —
//! what Python reports when its forkserver was killed.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::spawn::capturing_closure;
use super::{Job, Launched, Launcher, Popen, Spec, Work, child_main, die_with_parent};
use crate::children;
use crate::codec;
use crate::os::fd::socketpair;
use crate::os::scm::{recv_exact_with_fds, send_all, send_with_fds};
use crate::os::{self, ExitStatus, ForkResult, Pid, PidFd};
use crate::reexec::{CHILD_FD, program_name, set_name, spawn_self};
use crate::task::Fail;

const STARTED: u8 = 1;
const FAILED: u8 = 2;
const EXITED: u8 = 3;
const LOST: u8 = 4;
const REPLY_LEN: usize = 12;

/// The exit code reported for a child whose server died before reporting
/// its status (Python's forkserver reports 255 too).
const LOST_WITH_SERVER: i32 = 255;

/// How long a client waits for the server to report a child's status after
/// the child's pidfd turned readable (the server reaps at once; this bounds a
/// server that died).
const STATUS_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Client {
    owner: i32,
    server: Pid,
    /// The server's pidfd: readable once it died, even if another process
    /// holds a copy of its socket (so the socket never ends).
    server_fd: Option<PidFd>,
    sock: OwnedFd,
    /// Children this server started whose status has not come yet.
    started: HashSet<i32>,
    /// Statuses read and not yet taken: a raw wait status, or the errno of
    /// the server's failed `waitpid`.
    statuses: HashMap<i32, std::result::Result<i32, i32>>,
    /// Children whose handles were dropped: their status is not wanted.
    ignored: HashSet<i32>,
}

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

fn client() -> MutexGuard<'static, Option<Client>> {
    let mut guard = CLIENT.lock().unwrap_or_else(|p| p.into_inner());
    if guard
        .as_ref()
        .is_some_and(|c| c.owner != os::pid::current().as_raw())
    {
        // Inherited through a fork: the socket was closed in the child (or
        // belongs to the parent); forget it without closing again.
        if let Some(old) = guard.take() {
            std::mem::forget(old.sock);
        }
    }
    guard
}

/// Takes the client's lock for a fork (before the children table's lock,
/// the order `ForkServer::launch` uses too), so the child never inherits it
/// held by another thread.
#[inline]
pub(crate) fn hold_for_fork() -> MutexGuard<'static, Option<Client>> {
    CLIENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// In a freshly forked child, with the guard from [`hold_for_fork`]: drop
/// the parent's connection, so the server sees end of file when the parent
/// exits, not when its last child does.
#[inline]
pub(crate) fn release_in_child(mut guard: MutexGuard<'static, Option<Client>>) {
    if let Some(old) = guard.take() {
        // Its socket is closed below, through its raw number; the rest is
        // forgotten too, not freed (frees would be copy-on-write faults).
        std::mem::forget(old);
    }
    drop(guard);
    close_in_child();
}

/// The part of [`release_in_child`] that needs no lock: closes the
/// inherited client socket through its raw number. What the child's
/// `CLIENT` still holds is forgotten by [`client`] (its owner is the
/// parent) the first time the child asks for a client.
#[inline]
pub(crate) fn close_in_child() {
    // The client that owns it is forgotten in the child (by the caller, or
    // by `client` the first time this process asks for one).
    crate::child_page::PAGE.client_fd.close_in_child();
}

pub(crate) struct ForkServer;

impl Launcher for ForkServer {
    fn launch(&self, spec: Spec, work: &mut Option<Work>) -> io::Result<Launched> {
        let work = work.as_ref().ok_or_else(super::spawn::no_work)?;
        let (job, arg_fds) = Job::new(&spec, work).ok_or_else(capturing_closure)?;
        let bytes = codec::encode(&job).map_err(io::Error::other)?;
        if bytes.len() > codec::DEFAULT_MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the job (its arguments) is larger than the frame limit",
            ));
        }
        // Both ends non-blocking, in one `pipe2` (no `fcntl` after it): the
        // child's frame writer waits out a full pipe with poll.
        let (read, write) = os::pipe_cloexec_nonblocking()?;
        let mut fds = vec![write.as_raw_fd()];
        fds.extend(arg_fds);
        let mut guard = client();
        let mut last_error = None;
        for _attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(Client::start()?);
            }
            let c = guard.as_mut().expect("just started");
            match c.request(&bytes, &fds) {
                Ok(pidfd) => {
                    let held = std::os::fd::AsFd::as_fd(&pidfd).try_clone_to_owned().ok();
                    children::lock().register(
                        pidfd.pid(),
                        children::Entry {
                            served: held.map(std::sync::Arc::new),
                            ..spec.entry()
                        },
                    );
                    return Ok(Launched {
                        popen: Popen::Served(pidfd),
                        result: read,
                        keep: None,
                    });
                }
                Err(e) if is_broken(&e) => {
                    // The server died: reap it and start a fresh one, once.
                    if let Some(old) = guard.take() {
                        old.shut();
                    }
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("forkserver unavailable")))
    }
}

fn is_broken(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    )
}

impl Client {
    fn start() -> io::Result<Client> {
        let (ours, theirs) = socketpair()?;
        let server = spawn_self("forkserver", &[(theirs.as_fd(), CHILD_FD)])?;
        drop(theirs);
        crate::child_page::PAGE.client_fd.publish(&ours);
        Ok(Client {
            owner: os::pid::current().as_raw(),
            server,
            // The server is our unreaped child: its pid is still its own.
            server_fd: PidFd::open(server).ok(),
            sock: ours,
            started: HashSet::new(),
            statuses: HashMap::new(),
            ignored: HashSet::new(),
        })
    }

    /// Closes the connection and reaps a dead server.
    fn shut(self) {
        crate::child_page::PAGE.client_fd.withdraw();
        drop(self.sock);
        let _ = os::waitpid(Some(self.server), os::WaitFlags::NOHANG);
    }

    /// Asks for a child; `fds` are the result pipe's write end, then the
    /// fds the arguments carry.
    fn request(&mut self, job: &[u8], fds: &[RawFd]) -> io::Result<PidFd> {
        // Header, fds and job in one `sendmsg` (the fds ride with the
        // header's first byte; the server reads the header first).
        let header = (job.len() as u64).to_le_bytes();
        let sent = crate::os::scm::sendmsg_fds(
            self.sock.as_raw_fd(),
            &[&header, job],
            fds,
            libc::MSG_NOSIGNAL,
        )?;
        if sent < header.len() {
            // Not even the header went (fds go with its first byte): the
            // rest of it, then the job.
            send_all(&self.sock, &header[sent..])?;
            send_all(&self.sock, job)?;
        } else {
            send_all(&self.sock, &job[sent - header.len()..])?;
        }
        loop {
            let (kind, pid, value, fd) = self.read_reply(None)?;
            let fd = fd.into_iter().next();
            match kind {
                STARTED => {
                    let fd = fd.ok_or_else(|| io::Error::other("forkserver sent no pidfd"))?;
                    let pid = Pid::from_raw(pid)
                        .ok_or_else(|| io::Error::other("forkserver sent a bad pid"))?;
                    // A reused pid: whatever was kept for its last owner is stale.
                    self.statuses.remove(&pid.as_raw());
                    self.ignored.remove(&pid.as_raw());
                    self.started.insert(pid.as_raw());
                    return Ok(PidFd::from_parts(fd, pid));
                }
                FAILED => return Err(io::Error::from_raw_os_error(value)),
                _ => {}
            }
        }
    }

    /// Reads one reply (waiting at most until `deadline`), keeping any
    /// EXITED or LOST status it carries. A dead server is an error of kind
    /// `BrokenPipe` (or `UnexpectedEof`), whether or not its socket ended.
    fn read_reply(
        &mut self,
        deadline: Option<Instant>,
    ) -> io::Result<(u8, i32, i32, Vec<OwnedFd>)> {
        self.wait_readable(deadline)?;
        let mut buf = [0u8; REPLY_LEN];
        let fd = recv_exact_with_fds(&self.sock, &mut buf)?;
        let kind = buf[0];
        let pid = i32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        let value = i32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if kind == EXITED || kind == LOST {
            self.started.remove(&pid);
            if !self.ignored.remove(&pid) {
                let status = if kind == EXITED {
                    Ok(value)
                } else {
                    Err(value)
                };
                self.statuses.insert(pid, status);
            }
        }
        Ok((kind, pid, value, fd))
    }

    /// Waits until the socket is readable (a reply, or its end), the server
    /// died, or `deadline` passed; a signal does not end the wait early.
    fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<()> {
        let server = self.server_fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // A negative fd (no server pidfd) is skipped by the kernel.
            let mut fds = [self.sock.as_raw_fd(), server].map(os::fd::pollin);
            match os::fd::poll(&mut fds, left) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Replies the server sent before it died are read first.
            if fds[0].revents != 0 {
                return Ok(());
            }
            if fds[1].revents != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the forkserver died",
                ));
            }
            if left.is_some_and(|l| l.is_zero()) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the forkserver did not answer",
                ));
            }
        }
    }
}

/// How long [`quick_status`] waits for the server's reply.
const QUICK: Duration = Duration::from_millis(5);

/// Once a served child has sent its frame (it exits right after): waits up
/// to `QUICK` (or `deadline`) for the server's EXITED reply on the socket
/// itself, which says the child exited *and* carries its status: one
/// wake-up, where waiting on the child's pidfd first is two (the exit, then
/// the reply the server sends once it has reaped it). `None`: no status
/// yet (the caller then waits on the pidfd as usual, which also covers a
/// reply another thread took from the socket meanwhile: it is kept for us).
/// The socket is polled without the client's lock, so other threads can
/// start children meanwhile.
pub(crate) fn quick_status(fd: &PidFd, deadline: Option<Instant>) -> Option<ExitStatus> {
    let pid = fd.pid().as_raw();
    let limit = Instant::now() + QUICK;
    let limit = deadline.map_or(limit, |d| d.min(limit));
    let mut readable = false;
    loop {
        let (sock, server) = {
            let mut guard = client();
            let c = guard.as_mut()?;
            // The reply poll saw (if another thread has not taken it).
            if readable && c.read_reply(Some(Instant::now())).is_err() {
                return None;
            }
            match c.statuses.get(&pid) {
                Some(Ok(raw)) => {
                    let raw = *raw;
                    c.statuses.remove(&pid);
                    return Some(ExitStatus::from_raw(raw));
                }
                Some(Err(_)) => return None,
                None if !c.started.contains(&pid) => return None,
                None => {}
            }
            let server = c.server_fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
            (c.sock.as_raw_fd(), server)
        };
        let left = limit.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // Without the lock: a stale fd number (the client was replaced
        // meanwhile) costs at most this short wait.
        let mut fds = [sock, server].map(os::fd::pollin);
        match os::fd::poll(&mut fds, Some(left)) {
            Ok(_) if fds[1].revents != 0 => return None,
            Ok(_) => readable = fds[0].revents != 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => readable = false,
            Err(_) => return None,
        }
    }
}

/// The status of a forkserver child, once it has exited. A child whose
/// server died first is reported as exited with code 255 (its real status
/// went with the server), as soon as its pidfd says it ended.
pub(crate) fn try_reap(fd: &PidFd) -> io::Result<Option<ExitStatus>> {
    if !fd.wait_timeout(Some(Duration::ZERO))? {
        return Ok(None);
    }
    let pid = fd.pid().as_raw();
    let lost = Ok(Some(ExitStatus::Exited(LOST_WITH_SERVER)));
    let mut guard = client();
    let Some(c) = guard.as_mut() else {
        return lost;
    };
    let deadline = crate::time::deadline(STATUS_WAIT);
    loop {
        match c.statuses.get(&pid) {
            Some(Ok(raw)) => {
                let raw = *raw;
                c.statuses.remove(&pid);
                return Ok(Some(ExitStatus::from_raw(raw)));
            }
            // Kept, so that every later look gives the same answer.
            Some(Err(errno)) => return Err(io::Error::from_raw_os_error(*errno)),
            None => {}
        }
        if !c.started.contains(&pid) {
            // Started by an earlier server, which died.
            return lost;
        }
        match c.read_reply(deadline) {
            Ok(_) => {}
            Err(e) if is_broken(&e) => return lost,
            Err(e) => return Err(e),
        }
    }
}

/// A dropped handle: its status, when it comes, is not wanted; the child's
/// entry in the children table goes once it has exited.
pub(crate) fn forget(pid: Pid) {
    if let Some(c) = client().as_mut()
        && c.statuses.remove(&pid.as_raw()).is_none()
        && c.started.contains(&pid.as_raw())
    {
        c.ignored.insert(pid.as_raw());
    }
    children::adopt_served(pid);
}

/// The server's loop, called by the bootstrap before `main`.
pub(crate) fn serve(fd: RawFd) -> ! {
    let sock = match os::fd::claim_inherited(fd) {
        Ok(sock) => sock,
        Err(e) => {
            eprintln!("brood forkserver: no socket from the client: {e}");
            os::exit_now(70)
        }
    };
    // Block (not ignore) SIGINT: a Ctrl-C stays pending here forever, while
    // a SIGINT sent to a child before it unblocks is delivered, not lost.
    os::sys::block_sigint(true);
    // What every child needs and the server can know once, before its first
    // fork (each child would otherwise read /proc for them: six syscalls
    // before the user's function runs, while the client waits).
    let name = program_name();
    let _ = crate::task::exe_identity();
    // Every child decodes its arguments inside `handle::with_incoming`,
    // whose thread-local registers its destructor on first use, through
    // libc's lazily bound `__cxa_thread_atexit_impl` and the dynamic
    // loader's symbol lookup: about ten page faults in each child, while
    // the client waits. Used once here, before the first fork, the
    // children inherit it registered and bound.
    crate::handle::with_incoming(Vec::new(), || ());
    // Likewise the panic hook (`child_main` installs it once per process:
    // in each child, std's hook lock, a `Box` and their code's pages).
    super::install_panic_hook();
    // And std's stdout handle, which every child flushes at its end: made
    // here once (its `OnceLock` and buffer), not in each child.
    super::flush_stdout();
    let mut kids: Vec<(PidFd, bool)> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(sock.as_raw_fd())
            .chain(kids.iter().map(|(k, _)| k.as_raw_fd()))
            .map(os::fd::pollin)
            .collect();
        if os::fd::poll(&mut fds, None).is_err() {
            continue;
        }
        // Reap first, so EXITED replies precede anything that depends on them.
        let mut i = 0;
        kids.retain(|(kid, _)| {
            i += 1;
            if fds[i].revents == 0 {
                return true;
            }
            let pid = kid.pid().as_raw();
            match os::sys::waitpid_raw(kid.pid(), true) {
                Ok(None) => true,
                Ok(Some(status)) => {
                    let _ = reply(&sock, EXITED, pid, status, &[]);
                    false
                }
                Err(err) => {
                    // Its status is unknown: say so, never "exited 0".
                    eprintln!("brood forkserver: cannot reap child {pid}: {err}");
                    let errno = err.raw_os_error().unwrap_or(libc::EIO);
                    let _ = reply(&sock, LOST, pid, errno, &[]);
                    false
                }
            }
        });
        if fds[0].revents != 0 {
            match read_request(&sock) {
                Request::Job(job, fds) => {
                    if let Some(child) = handle(&sock, &mut kids, &job, fds, &name) {
                        // In the new child: it keeps only its result pipe.
                        drop(sock);
                        for (kid, _) in kids.drain(..) {
                            drop(kid);
                        }
                        child.run()
                    }
                }
                Request::Malformed(e) => {
                    // Answered, logged, and nothing else: only the client's
                    // exit ends the server and its daemon children.
                    eprintln!("brood forkserver: refusing a malformed request: {e}");
                    let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
                    let _ = reply(&sock, FAILED, 0, errno, &[]);
                }
                Request::Gone => {
                    // The client is gone: so is every daemon child's parent.
                    for (kid, daemon) in &kids {
                        if *daemon {
                            let _ = kid.send_signal(libc::SIGKILL);
                        }
                    }
                    os::exit_now(0);
                }
            }
        }
    }
}

/// What the server read from its socket.
enum Request {
    /// A job's bytes, and its fds (the result pipe's write end first).
    Job(Vec<u8>, Vec<OwnedFd>),
    /// A request that cannot be served; the stream stays in step (its
    /// announced bytes were read).
    Malformed(io::Error),
    /// End of file: the client exited.
    Gone,
}

/// Whether a read error means the client is gone.
fn client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// Reads one request: `[len: u64 LE]` with fds, then `len` bytes.
fn read_request(sock: &OwnedFd) -> Request {
    let mut header = [0u8; 8];
    let fds = match recv_exact_with_fds(sock, &mut header) {
        Ok(fds) => fds,
        Err(e) if client_gone(&e) => return Request::Gone,
        Err(e) => return Request::Malformed(e),
    };
    let len = u64::from_le_bytes(header);
    if len > codec::DEFAULT_MAX_FRAME as u64 {
        // Skip the announced bytes, in bounded pieces, to stay in step.
        let mut scratch = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let piece = left.min(scratch.len() as u64) as usize;
            match os::read_full(sock, &mut scratch[..piece]) {
                Ok(n) if n == piece => left -= n as u64,
                Ok(_) => return Request::Gone,
                Err(e) if client_gone(&e) => return Request::Gone,
                Err(e) => return Request::Malformed(e),
            }
        }
        return Request::Malformed(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a request of {len} bytes, over the frame limit"),
        ));
    }
    let mut job = vec![0u8; len as usize];
    match os::read_full(sock, &mut job) {
        Ok(n) if n == job.len() => {}
        Ok(_) => return Request::Gone,
        Err(e) if client_gone(&e) => return Request::Gone,
        Err(e) => return Request::Malformed(e),
    }
    if fds.is_empty() {
        return Request::Malformed(io::Error::new(
            io::ErrorKind::InvalidData,
            "a request without a result fd",
        ));
    }
    Request::Job(job, fds)
}

/// What a freshly forked child takes from the server to run its job.
struct ForkedChild {
    server: Pid,
    job: Job,
    fds: Vec<OwnedFd>,
    result: OwnedFd,
}

impl ForkedChild {
    /// The child's side, once it has closed the server's fds.
    fn run(self) -> ! {
        let ForkedChild {
            server,
            mut job,
            fds,
            result,
        } = self;
        if job.spec.daemon {
            die_with_parent(server);
        }
        super::enter_child(&mut job.spec);
        let body = match job.into_body(fds) {
            Ok(body) => body,
            Err(msg) => Box::new(move || Err(Fail::UnknownTask(msg))),
        };
        child_main(body, result)
    }
}

/// Forks a child for one request. Returns in the new child only (with what
/// it needs to run); the server answers the client and keeps serving.
fn handle(
    sock: &OwnedFd,
    kids: &mut Vec<(PidFd, bool)>,
    job: &[u8],
    mut fds: Vec<OwnedFd>,
    name: &[u8],
) -> Option<ForkedChild> {
    let result = fds.remove(0);
    let job: Job = match codec::decode(job) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("brood forkserver: refusing a malformed request: {e}");
            let _ = reply(sock, FAILED, 0, libc::EINVAL, &[]);
            return None;
        }
    };
    let server = os::pid::current();
    // The server is single-threaded (it never starts a thread and runs
    // before main), so the checked fork succeeds and the child may do
    // anything; it ends in `_exit`.
    match os::sys::fork_single_threaded() {
        Err(e) => {
            let _ = reply(sock, FAILED, 0, e.raw_os_error().unwrap_or(libc::EIO), &[]);
            None
        }
        Ok(ForkResult::Child) => {
            os::sys::block_sigint(false);
            set_name(name);
            Some(ForkedChild {
                server,
                job,
                fds,
                result,
            })
        }
        Ok(ForkResult::Parent { child }) => {
            drop(result);
            drop(fds);
            match PidFd::open(child) {
                Ok(pidfd) => {
                    let _ = reply(sock, STARTED, child.as_raw(), 0, &[pidfd.as_raw_fd()]);
                    kids.push((pidfd, job.spec.daemon));
                }
                Err(e) => {
                    let _ = os::kill(child, libc::SIGKILL);
                    let _ = os::waitpid(Some(child), os::WaitFlags::empty());
                    let _ = reply(sock, FAILED, 0, e.raw_os_error().unwrap_or(libc::EIO), &[]);
                }
            }
            None
        }
    }
}

fn reply(sock: &OwnedFd, kind: u8, pid: i32, value: i32, fds: &[RawFd]) -> io::Result<()> {
    let mut buf = [0u8; REPLY_LEN];
    buf[0] = kind;
    buf[4..8].copy_from_slice(&pid.to_le_bytes());
    buf[8..12].copy_from_slice(&value.to_le_bytes());
    send_with_fds(sock, &buf, fds)
}
