//! The resource tracker: named segments brood created are unlinked once no
//! brood process that created or attached to them is alive, and no handle
//! to them is in flight. The protocol, its invariants and what happens when
//! a process dies mid-way are in `shm/README.md`; in short:
//!
//! - Every brood process that creates or attaches to a tracked segment
//!   holds a *shared* OFD lock (`fcntl(F_OFD_SETLK, F_RDLCK)`) on its fd.
//!   The kernel drops it when the last fd of that open file goes away —
//!   when the process exits, however it dies.
//! - One tracker per process tree: a re-execution of the program (bootstrap
//!   mode `tracker`) that detaches from its parent. The connection to it is
//!   started before a process's first child (any start method), inherited
//!   by forked children and handed down to spawn and forkserver children
//!   with their job. Each create/attach is sent to it over a
//!   `SOCK_SEQPACKET` socket with the segment's fd and the sender's pid;
//!   the tracker opens the segment again (its own open file) and a pidfd
//!   for the sender.
//! - A handle that leaves a process (serialized: a join value, a
//!   connection's message, a child's argument) *pins* the segment first: the
//!   tracker holds a shared lock of its own until a receiver of this tree
//!   has attached and sends the pin's token back (or until the tree ends).
//! - When a registered pid dies, when a pin goes, and when the socket
//!   reaches end of file (the whole tree has exited), the tracker asks for
//!   an *exclusive* lock on its own fd. Granted means no one holds a shared
//!   lock: it unlinks the name (if it still names the same segment).
//!   Refused means a user is alive; the last user's tracker will unlink it.
//! - The tracker is two processes: `brood-trkguard` forks the worker
//!   `brood-tracker` and forks a new one if it is killed; the worker logs
//!   each message before taking it off the socket (and folds the log into
//!   snapshots), and the new one starts from them. Messages wait in the
//!   socket meanwhile.
//!
//! Segments created with tracking off, and those Python creates, have mode
//! `0o600` and are never registered; tracked ones have `0o700`.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::os::scm::{recv_with_fds, sendmsg_fds};
use crate::os::{self, Pid, PidFd};

/// `[R][pid: i32 LE][posix name]` + the segment's fd: a user.
const REGISTER: u8 = b'R';
/// `[P][pid: i32 LE][token: u64 LE][posix name]` + the segment's fd: a user
/// whose handle is leaving; keep the segment until `UNPIN token`.
const PIN: u8 = b'P';
/// `[U][token: u64 LE]`: a handle arrived (the receiver now holds its own
/// lock), or will never be received.
const UNPIN: u8 = b'U';
const MAX_MESSAGE: usize = 512;
/// Pins one tracker remembers token by token; past that, a pinned segment
/// stays pinned until the tree ends (no memory grows without bound).
const MAX_PINS: usize = 1 << 16;
/// What `ps` shows.
const WORKER_NAME: &str = "brood-tracker";
const GUARD_NAME: &str = "brood-trkguard";

/// What identifies a segment, and its size and mode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) mode: u32,
    pub(crate) size: usize,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Identity) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// `fstat` of an open fd.
pub(crate) fn identity(fd: &impl AsRawFd) -> io::Result<Identity> {
    // SAFETY: an all-zero stat is a valid value of the C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes; the fd is open.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(Identity {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        size: st.st_size as usize,
    })
}

/// Opens the POSIX name (with its slash); `None` if nothing has it.
fn open_name(posix: &str, flags: libc::c_int) -> io::Result<Option<OwnedFd>> {
    let c = CString::new(posix).map_err(io::Error::other)?;
    // SAFETY: `c` is NUL-terminated and alive for the call.
    let raw = unsafe { libc::shm_open(c.as_ptr(), flags | libc::O_CLOEXEC, 0) };
    if raw < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: shm_open returned a fresh fd that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// What the POSIX name (with its slash) names now; `None` if nothing.
pub(crate) fn name_identity(posix: &str) -> io::Result<Option<Identity>> {
    match open_name(posix, libc::O_RDONLY)? {
        Some(fd) => identity(&fd).map(Some),
        None => Ok(None),
    }
}

fn ofd_lock(fd: &impl AsRawFd, kind: libc::c_int, wait: bool) -> io::Result<bool> {
    // SAFETY: an all-zero flock is a valid value of the C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start = l_len = 0: the whole file; l_pid must be 0 for OFD locks.
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: `fl` is a valid flock for the call; the fd is open.
        if unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Takes the shared lock that marks this process as a user of the segment
/// (waiting, with `wait`, while a tracker holds the exclusive one).
pub(crate) fn hold_shared(fd: &impl AsRawFd, wait: bool) -> io::Result<()> {
    if ofd_lock(fd, libc::F_RDLCK, wait)? {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }
}

/// A second open file of the segment open on `fd` (a received fd shares the
/// sender's open file, whose lock must not be kept alive by us).
fn reopen(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(file.into())
}

// ---------------------------------------------------------------------------
// Client side.

/// This process tree's connection to its tracker (inherited by forked
/// children, handed to spawn and forkserver children), or -1. An atomic,
/// not a mutex: a child forked while another thread registers must not
/// inherit a lock held forever.
static CLIENT: AtomicI32 = AtomicI32::new(-1);

/// Tells the tracker that this process created or attached to the tracked
/// segment `posix` (with its slash), open on `fd`.
pub(crate) fn register(fd: &impl AsRawFd, posix: &str) -> io::Result<()> {
    let mut message = Vec::with_capacity(5 + posix.len());
    message.push(REGISTER);
    message.extend_from_slice(&os::getpid().as_raw().to_le_bytes());
    message.extend_from_slice(posix.as_bytes());
    send(&message, Some(fd.as_raw_fd()))
}

/// Pins the tracked segment `posix`, open on `fd`, before a handle to it
/// leaves this process: the tracker keeps it until [`unpin`] with the
/// returned token (sent by the receiver once it holds its own lock), or
/// until this tree's last process is gone.
pub(crate) fn pin(fd: &impl AsRawFd, posix: &str) -> io::Result<u64> {
    let token = new_token();
    let mut message = Vec::with_capacity(13 + posix.len());
    message.push(PIN);
    message.extend_from_slice(&os::getpid().as_raw().to_le_bytes());
    message.extend_from_slice(&token.to_le_bytes());
    message.extend_from_slice(posix.as_bytes());
    send(&message, Some(fd.as_raw_fd()))?;
    Ok(token)
}

/// Releases a pin (see [`pin`]). A token of another tree's tracker means
/// nothing to ours: that pin goes when its tree ends.
pub(crate) fn unpin(token: u64) -> io::Result<()> {
    let mut message = [0u8; 9];
    message[0] = UNPIN;
    message[1..].copy_from_slice(&token.to_le_bytes());
    send(&message, None)
}

/// A token no other pin of any process is likely to have: this process's
/// randomly keyed hash of its pid and a counter.
fn new_token() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i32(os::getpid().as_raw());
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn send(message: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    if message.len() > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    let fds: Vec<RawFd> = fd.into_iter().collect();
    for _ in 0..3 {
        let sock = connection()?;
        match sendmsg_fds(sock, &[message], &fds, libc::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            // The tracker (guard and worker) is gone: start another one. The
            // dead connection's fd stays open (another thread may be sending
            // on it right now, and a closed fd number could be reused); this
            // only happens if someone kills both tracker processes.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)) => {
                let _ = CLIENT.compare_exchange(sock, -1, Ordering::SeqCst, Ordering::SeqCst);
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("the resource tracker keeps dying"))
}

/// The tracker connection, started on first use.
fn connection() -> io::Result<RawFd> {
    let current = CLIENT.load(Ordering::SeqCst);
    if current >= 0 {
        return Ok(current);
    }
    let fresh = start()?;
    match CLIENT.compare_exchange(-1, fresh.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Ok(fresh.into_raw_fd()),
        // Another thread won the race: its tracker serves us; ours sees
        // end of file with nothing registered and leaves.
        Err(winner) => Ok(winner),
    }
}

/// Before a child starts (any start method): this tree's tracker, started
/// now if it is not yet, so that the child shares it — a segment the child
/// creates and hands back must be known to the tracker the parent uses.
/// Returns the connection to hand to a spawn or forkserver child; `None`
/// if no tracker can start (the child then starts its own when it needs
/// one).
pub(crate) fn for_child() -> Option<RawFd> {
    connection().ok()
}

/// In a spawn or forkserver child: the tracker connection its parent handed
/// down, used instead of starting another tracker.
pub(crate) fn adopt(fd: OwnedFd) {
    if CLIENT
        .compare_exchange(-1, fd.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        let _ = fd.into_raw_fd();
    }
}

fn start() -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pid = crate::launch::spawn::spawn_self(
        "tracker",
        &[(theirs.as_raw_fd(), crate::bootstrap::CHILD_FD)],
    )?;
    drop(theirs);
    // The tracker detaches at once (it forks and its first process exits),
    // so it is never a child a `wait()` of ours would block on: reap that
    // first process. ECHILD (someone else reaped it) is fine.
    let _ = os::waitpid(Some(pid), os::WaitFlags::empty());
    Ok(ours)
}

// ---------------------------------------------------------------------------
// Server side.

/// Sets the name `ps` shows for this (single-threaded) process.
fn set_name(name: &str) {
    let _ = std::fs::write("/proc/self/comm", name);
}

/// The tracker (bootstrap mode `tracker`): detaches, then guards a worker
/// that serves the socket on `fd` until every process of its tree has
/// gone, unlinks what no one uses, and exits.
pub(crate) fn serve(fd: RawFd) -> ! {
    // SAFETY: the client put the socket on `fd` for us alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    detach();
    match StateFiles::create() {
        Ok(state) => guard(sock, state),
        // No state file: a worker that cannot be replaced is still a worker.
        Err(_) => worker(sock, None),
    }
}

/// Outlives a Ctrl-C or a hang-up of the terminal (like Python's tracker),
/// lets go of the standard streams (a reader waiting for their end of file
/// must not wait for us), and stops being the client's child.
fn detach() {
    // SAFETY: single-threaded before main. SIG_IGN runs no code of ours;
    // the fds are plain ints; the forked child only continues this same
    // single-threaded program, and the parent leaves with _exit.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for target in 0..3 {
                libc::dup2(null, target);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::chdir(c"/".as_ptr());
        match os::fork() {
            Ok(os::ForkResult::Child) => {
                libc::setsid();
            }
            Ok(os::ForkResult::Parent { .. }) => os::exit_now(0),
            // Cannot detach: serve as the client's child instead.
            Err(_) => {}
        }
    }
}

/// The guard: forks the worker, and forks a new one (which starts from the
/// state file) whenever a worker dies of anything but its normal end. It
/// keeps the socket open, so what clients send meanwhile waits there.
fn guard(sock: OwnedFd, state: StateFiles) -> ! {
    set_name(GUARD_NAME);
    let mut deaths: Vec<Instant> = Vec::new();
    loop {
        // SAFETY: the guard is single-threaded (it runs before main and
        // starts no thread); the child runs the worker and ends in _exit.
        match unsafe { os::fork() } {
            Ok(os::ForkResult::Child) => worker(sock, Some(state)),
            Ok(os::ForkResult::Parent { child }) => {
                match os::waitpid(Some(child), os::WaitFlags::empty()) {
                    Ok(Some((_, status))) if status.code() == Some(0) => os::exit_now(0),
                    Ok(Some(_)) => {}
                    // Not ours to wait for (someone set SIGCHLD to be
                    // ignored?): the worker cannot be guarded.
                    _ => os::exit_now(0),
                }
                // A worker that keeps dying at once is not helped by more
                // workers: after 5 deaths in 10 s, leave (clients then
                // start a fresh tracker).
                let now = Instant::now();
                deaths.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
                deaths.push(now);
                if deaths.len() > 5 {
                    os::exit_now(1);
                }
            }
            Err(_) => worker(sock, Some(state)),
        }
    }
}

fn worker(sock: OwnedFd, state: Option<StateFiles>) -> ! {
    set_name(WORKER_NAME);
    let mut server = Server {
        sock,
        segments: Vec::new(),
        pids: HashMap::new(),
        tokens: HashMap::new(),
        state,
    };
    server.restore();
    server.run();
    server.finish();
    os::exit_now(0)
}

struct Segment {
    /// With its leading slash.
    posix: String,
    /// The tracker's own open file (never locked but to decide).
    fd: OwnedFd,
    id: Identity,
    pids: Vec<i32>,
    /// Tokens of handles in flight.
    pins: HashSet<u64>,
    /// Pinned until the tree ends (more pins than the tracker remembers).
    sticky: bool,
    /// While pinned: another open file of ours, holding a shared lock, so
    /// that other trees' trackers see the segment in use too.
    pin_fd: Option<OwnedFd>,
}

enum Check {
    /// Unlinked by us, or no longer under that name: forget it.
    Done,
    /// Someone still holds a shared lock, or a handle is in flight.
    Held,
}

impl Segment {
    fn pinned(&self) -> bool {
        self.sticky || !self.pins.is_empty()
    }

    /// Holds the pin lock exactly while pinned.
    fn sync_pin_lock(&mut self) {
        if !self.pinned() {
            self.pin_fd = None;
        } else if self.pin_fd.is_none()
            && let Ok(fd) = reopen(&self.fd)
            && hold_shared(&fd, true).is_ok()
        {
            self.pin_fd = Some(fd);
        }
    }

    fn check(&self) -> Check {
        match name_identity(&self.posix) {
            Ok(Some(now)) if now == self.id => {}
            Ok(_) => return Check::Done,
            // Cannot tell: try again later.
            Err(_) => return Check::Held,
        }
        if self.pinned() {
            return Check::Held;
        }
        match ofd_lock(&self.fd, libc::F_WRLCK, false) {
            Ok(true) => {
                if let Ok(c) = CString::new(self.posix.as_str()) {
                    // SAFETY: `c` is NUL-terminated and alive for the call.
                    unsafe { libc::shm_unlink(c.as_ptr()) };
                }
                let _ = ofd_lock(&self.fd, libc::F_UNLCK, false);
                Check::Done
            }
            _ => Check::Held,
        }
    }
}

struct Server {
    sock: OwnedFd,
    segments: Vec<Segment>,
    pids: HashMap<i32, PidFd>,
    /// Token of each pin, and the segment it pins.
    tokens: HashMap<u64, Identity>,
    state: Option<StateFiles>,
}

impl Server {
    fn run(&mut self) {
        loop {
            self.compact();
            let watched: Vec<i32> = self.pids.keys().copied().collect();
            let mut pfds = vec![libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            pfds.extend(watched.iter().map(|pid| libc::pollfd {
                fd: self.pids[pid].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: `pfds` is a valid array of pollfds for the call.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            let dead: Vec<i32> = pfds[1..]
                .iter()
                .zip(&watched)
                .filter(|(pfd, _)| pfd.revents != 0)
                .map(|(_, pid)| *pid)
                .collect();
            // Every message queued now first: whatever a process sent before
            // it died (a pin above all) is in the socket by the time its
            // pidfd turns readable.
            let eof = self.drain();
            for pid in dead {
                self.pids.remove(&pid);
                self.died(pid);
            }
            if eof {
                return;
            }
        }
    }

    /// Handles every queued message; true at end of file.
    ///
    /// Each message is peeked, written to the state log, and only then
    /// taken off the socket and handled: a worker killed at any point
    /// leaves every message either in the socket or in the log (or both:
    /// handling is idempotent), never lost.
    fn drain(&mut self) -> bool {
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let mut fds = Vec::new();
            let flags = libc::MSG_DONTWAIT | libc::MSG_PEEK;
            let n = match recv_with_fds(&self.sock, &mut buf, &mut fds, flags) {
                Ok(0) => return true,
                Ok(n) => n.min(MAX_MESSAGE),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => 0,
                Err(_) => return true,
            };
            let fd = fds.into_iter().next();
            if n > 0
                && let Some(state) = self.state.as_mut()
            {
                let id = fd.as_ref().and_then(|f| identity(f).ok());
                state.log(id, &buf[..n]);
            }
            // Now take it (the fds come again: ours are from the peek).
            let mut again = [0u8; MAX_MESSAGE];
            let mut extra = Vec::new();
            match recv_with_fds(&self.sock, &mut again, &mut extra, libc::MSG_DONTWAIT) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
                Err(_) => return true,
            }
            drop(extra);
            if n > 0 {
                self.message(&buf[..n], fd);
            }
        }
    }

    fn message(&mut self, msg: &[u8], fd: Option<OwnedFd>) {
        match (msg.first(), fd) {
            (Some(&REGISTER), Some(fd)) if msg.len() > 5 => {
                let pid = i32::from_le_bytes(msg[1..5].try_into().expect("4 bytes"));
                if let Ok(posix) = std::str::from_utf8(&msg[5..]) {
                    self.register(pid, posix, fd, None);
                }
            }
            (Some(&PIN), Some(fd)) if msg.len() > 13 => {
                let pid = i32::from_le_bytes(msg[1..5].try_into().expect("4 bytes"));
                let token = u64::from_le_bytes(msg[5..13].try_into().expect("8 bytes"));
                if let Ok(posix) = std::str::from_utf8(&msg[13..]) {
                    self.register(pid, posix, fd, Some(token));
                }
            }
            (Some(&UNPIN), None) if msg.len() == 9 => {
                let token = u64::from_le_bytes(msg[1..9].try_into().expect("8 bytes"));
                self.unpin(token);
            }
            _ => {}
        }
    }

    /// Records `pid` as a user of the segment open on `fd` and, with a
    /// token, pins it — before anything else, so a pinner that died right
    /// after sending still leaves the segment pinned.
    fn register(&mut self, pid: i32, posix: &str, fd: OwnedFd, token: Option<u64>) {
        let Ok(id) = identity(&fd) else { return };
        let alive = self.watch(pid);
        let i = match self.segments.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                let Ok(own) = reopen(&fd) else { return };
                self.segments.push(Segment {
                    posix: posix.to_string(),
                    fd: own,
                    id,
                    pids: Vec::new(),
                    pins: HashSet::new(),
                    sticky: false,
                    pin_fd: None,
                });
                self.segments.len() - 1
            }
        };
        drop(fd);
        let seg = &mut self.segments[i];
        if !seg.pids.contains(&pid) {
            seg.pids.push(pid);
        }
        if let Some(token) = token {
            self.pin(i, token);
        }
        if !alive {
            // Died before we could watch it: its lock is gone already.
            self.died(pid);
        }
    }

    /// Watches `pid` (a pidfd); false if it is gone already.
    fn watch(&mut self, pid: i32) -> bool {
        if self.pids.contains_key(&pid) {
            return true;
        }
        match Pid::from_raw(pid).map(PidFd::open) {
            Some(Ok(pidfd)) => {
                self.pids.insert(pid, pidfd);
                true
            }
            _ => false,
        }
    }

    fn pin(&mut self, i: usize, token: u64) {
        let seg = &mut self.segments[i];
        if self.tokens.len() >= MAX_PINS {
            seg.sticky = true;
        } else if seg.pins.insert(token) {
            self.tokens.insert(token, seg.id);
        }
        seg.sync_pin_lock();
    }

    fn unpin(&mut self, token: u64) {
        let Some(id) = self.tokens.remove(&token) else {
            return;
        };
        let Some(i) = self.segments.iter().position(|s| s.id == id) else {
            return;
        };
        let seg = &mut self.segments[i];
        seg.pins.remove(&token);
        seg.sync_pin_lock();
        if !seg.pinned() && matches!(seg.check(), Check::Done) {
            self.forget(i);
        }
    }

    /// Drops segment `i` (unlinked, or its name gone) and its pins.
    fn forget(&mut self, i: usize) {
        let seg = self.segments.swap_remove(i);
        for token in &seg.pins {
            self.tokens.remove(token);
        }
    }

    /// A registered process has exited: its locks are gone.
    fn died(&mut self, pid: i32) {
        let mut i = 0;
        while i < self.segments.len() {
            let seg = &mut self.segments[i];
            if let Some(k) = seg.pids.iter().position(|&p| p == pid) {
                seg.pids.swap_remove(k);
                if matches!(seg.check(), Check::Done) {
                    self.forget(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Every process of the tree has closed the socket: each has exited or
    /// exec'd, and no handle can arrive any more, so pins go. Files may still
    /// be closing for a moment, so a segment still held is tried again a few
    /// times before it is left to its other users (whose own trackers will
    /// unlink it).
    fn finish(&mut self) {
        self.tokens.clear();
        for seg in &mut self.segments {
            seg.pins.clear();
            seg.sticky = false;
            seg.sync_pin_lock();
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut pause = Duration::from_millis(1);
        loop {
            self.segments
                .retain(|seg| matches!(seg.check(), Check::Held));
            self.snapshot();
            if self.segments.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Folds the log into a snapshot once it outgrows the last snapshot
    /// (so both stay proportional to what is tracked).
    fn compact(&mut self) {
        if self
            .state
            .as_ref()
            .is_some_and(|state| state.log_len > (64 << 10).max(state.snapshot_len))
        {
            self.snapshot();
        }
    }

    /// Writes what this worker tracks as a snapshot and empties the log.
    fn snapshot(&mut self) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let saved = Saved {
            segments: self
                .segments
                .iter()
                .map(|s| SavedSegment {
                    posix: s.posix.clone(),
                    dev: s.id.dev,
                    ino: s.id.ino,
                    pids: s.pids.clone(),
                    pins: s.pins.iter().copied().collect(),
                    sticky: s.sticky,
                })
                .collect(),
        };
        state.snapshot(&saved);
    }

    /// Takes over what a killed worker tracked (the snapshot, then the
    /// messages logged after it, handled again), and starts a snapshot and
    /// log of its own. (The first worker finds both empty.)
    fn restore(&mut self) {
        let Some((saved, logged)) = self.state.as_mut().map(StateFiles::load) else {
            return;
        };
        let mut gone = Vec::new();
        for s in saved.segments {
            // Still under its name? (A segment unlinked meanwhile is done.)
            let Some(fd) = open_same(&s.posix, s.dev, s.ino) else {
                continue;
            };
            let Ok(id) = identity(&fd) else { continue };
            for &pid in &s.pids {
                if !self.watch(pid) {
                    gone.push(pid);
                }
            }
            let mut seg = Segment {
                posix: s.posix,
                fd,
                id,
                pids: s.pids,
                pins: s.pins.into_iter().collect(),
                sticky: s.sticky,
                pin_fd: None,
            };
            for token in &seg.pins {
                self.tokens.insert(*token, id);
            }
            seg.sync_pin_lock();
            self.segments.push(seg);
        }
        // Users that died while no worker watched: decide for them now.
        gone.sort_unstable();
        gone.dedup();
        for pid in gone {
            self.died(pid);
        }
        for (id, msg) in logged {
            // The fd that came with a message: the segment, opened again by
            // its name if that still names the same one.
            let fd = match (id, message_name(&msg)) {
                (Some((dev, ino)), Some(posix)) => match open_same(posix, dev, ino) {
                    Some(fd) => Some(fd),
                    None => continue,
                },
                _ => None,
            };
            self.message(&msg, fd);
        }
        // Segments no known user holds any more.
        let mut i = 0;
        while i < self.segments.len() {
            let seg = &self.segments[i];
            if seg.pids.is_empty() && matches!(seg.check(), Check::Done) {
                self.forget(i);
            } else {
                i += 1;
            }
        }
        self.snapshot();
    }
}

/// The segment named `posix`, opened again, if the name still names the
/// inode (`dev`, `ino`).
fn open_same(posix: &str, dev: u64, ino: u64) -> Option<OwnedFd> {
    let fd = open_name(posix, libc::O_RDWR).ok()??;
    let id = identity(&fd).ok()?;
    (id.dev == dev && id.ino == ino).then_some(fd)
}

/// The name a REGISTER or PIN message carries.
fn message_name(msg: &[u8]) -> Option<&str> {
    let start = match *msg.first()? {
        REGISTER => 5,
        PIN => 13,
        _ => return None,
    };
    std::str::from_utf8(msg.get(start..)?).ok()
}

// ---------------------------------------------------------------------------
// The state file.

#[derive(Serialize, Deserialize)]
struct Saved {
    segments: Vec<SavedSegment>,
}

#[derive(Serialize, Deserialize)]
struct SavedSegment {
    posix: String,
    dev: u64,
    ino: u64,
    pids: Vec<i32>,
    pins: Vec<u64>,
    sticky: bool,
}

const STATE_MAGIC: u64 = 0x6272_6f6f_6474_726b; // "broodtrk"
const LOG_MAGIC: u64 = 0x6272_6f6f_646c_6f67; // "broodlog"
const STATE_HEADER: usize = 32;
const LOG_HEADER: usize = 16;

/// Unnamed files (tmpfs, `O_TMPFILE`) the guard opens and every worker
/// inherits: two snapshot slots and a log.
///
/// - A snapshot slot holds `[magic][generation][length][checksum]` (u64 LE
///   each), then the encoded state. Snapshots alternate between the slots,
///   so a worker killed in the middle of one leaves the other whole.
/// - The log holds `[magic][generation]`, then one record per message the
///   worker took since the snapshot of that generation:
///   `[length: u32][checksum: u32][dev: u64][ino: u64][message]` (`dev` and
///   `ino` of the fd that came with it, 0 without one). A record cut short
///   ends the log.
struct StateFiles {
    slots: [File; 2],
    log: File,
    generation: u64,
    log_len: u64,
    snapshot_len: u64,
}

/// A logged message: the identity of its fd, and its bytes.
type Logged = (Option<(u64, u64)>, Vec<u8>);

impl StateFiles {
    fn create() -> io::Result<StateFiles> {
        let open = || {
            let try_in = |dir: &std::path::Path| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                    .mode(0o600)
                    .open(dir)
            };
            try_in(std::path::Path::new("/dev/shm")).or_else(|_| try_in(&std::env::temp_dir()))
        };
        let mut files = StateFiles {
            slots: [open()?, open()?],
            log: open()?,
            generation: 0,
            log_len: 0,
            snapshot_len: 0,
        };
        files.reset_log()?;
        Ok(files)
    }

    fn reset_log(&mut self) -> io::Result<()> {
        self.log.set_len(0)?;
        let mut header = [0u8; LOG_HEADER];
        header[..8].copy_from_slice(&LOG_MAGIC.to_le_bytes());
        header[8..].copy_from_slice(&self.generation.to_le_bytes());
        self.log.write_all_at(&header, 0)?;
        self.log_len = LOG_HEADER as u64;
        Ok(())
    }

    /// Appends a message (before it is taken off the socket).
    fn log(&mut self, id: Option<Identity>, msg: &[u8]) {
        let (dev, ino) = id.map_or((0, 0), |i| (i.dev, i.ino));
        let mut payload = Vec::with_capacity(16 + msg.len());
        payload.extend_from_slice(&dev.to_le_bytes());
        payload.extend_from_slice(&ino.to_le_bytes());
        payload.extend_from_slice(msg);
        let mut record = Vec::with_capacity(8 + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&(checksum(&payload) as u32).to_le_bytes());
        record.extend_from_slice(&payload);
        if self.log.write_all_at(&record, self.log_len).is_ok() {
            self.log_len += record.len() as u64;
        }
    }

    fn snapshot(&mut self, saved: &Saved) {
        let Ok(body) = crate::codec::encode(saved) else {
            return;
        };
        let generation = self.generation + 1;
        let mut bytes = Vec::with_capacity(STATE_HEADER + body.len());
        bytes.extend_from_slice(&STATE_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&generation.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        if self.slots[(generation % 2) as usize]
            .write_all_at(&bytes, 0)
            .is_ok()
        {
            self.generation = generation;
            self.snapshot_len = bytes.len() as u64;
            // Killed before the log is emptied: its generation is older
            // than the snapshot's, and the next worker ignores it.
            let _ = self.reset_log();
        }
    }

    /// The newest whole snapshot (empty if none) and the messages logged
    /// after it; later writes go after them.
    fn load(&mut self) -> (Saved, Vec<Logged>) {
        let mut best: Option<(u64, Saved)> = None;
        for slot in &self.slots {
            let mut header = [0u8; STATE_HEADER];
            if slot.read_exact_at(&mut header, 0).is_err() {
                continue;
            }
            let word = |k: usize| u64::from_le_bytes(header[k * 8..k * 8 + 8].try_into().unwrap());
            let (magic, generation, len, sum) = (word(0), word(1), word(2), word(3));
            if magic != STATE_MAGIC || len > crate::codec::DEFAULT_MAX_FRAME as u64 {
                continue;
            }
            let mut body = vec![0u8; len as usize];
            if slot.read_exact_at(&mut body, STATE_HEADER as u64).is_err() || checksum(&body) != sum
            {
                continue;
            }
            if best.as_ref().is_some_and(|(g, _)| *g >= generation) {
                continue;
            }
            if let Ok(saved) = crate::codec::decode::<Saved>(&body) {
                best = Some((generation, saved));
            }
        }
        let (generation, saved) = best.unwrap_or((
            0,
            Saved {
                segments: Vec::new(),
            },
        ));
        self.generation = generation;
        let logged = self.read_log(generation);
        (saved, logged)
    }

    /// The records of the log, if it follows the snapshot `generation`.
    fn read_log(&mut self, generation: u64) -> Vec<Logged> {
        let mut out = Vec::new();
        let Ok(len) = self.log.metadata().map(|m| m.len()) else {
            return out;
        };
        let mut header = [0u8; LOG_HEADER];
        if self.log.read_exact_at(&mut header, 0).is_err()
            || header[..8] != LOG_MAGIC.to_le_bytes()
            || header[8..] != generation.to_le_bytes()
        {
            return out;
        }
        let mut at = LOG_HEADER as u64;
        while at + 8 <= len {
            let mut head = [0u8; 8];
            if self.log.read_exact_at(&mut head, at).is_err() {
                break;
            }
            let size = u32::from_le_bytes(head[..4].try_into().unwrap()) as u64;
            let sum = u32::from_le_bytes(head[4..].try_into().unwrap());
            if !(16..=16 + MAX_MESSAGE as u64).contains(&size) || at + 8 + size > len {
                break;
            }
            let mut payload = vec![0u8; size as usize];
            if self.log.read_exact_at(&mut payload, at + 8).is_err()
                || checksum(&payload) as u32 != sum
            {
                break;
            }
            let dev = u64::from_le_bytes(payload[..8].try_into().unwrap());
            let ino = u64::from_le_bytes(payload[8..16].try_into().unwrap());
            let id = (dev != 0 || ino != 0).then_some((dev, ino));
            out.push((id, payload[16..].to_vec()));
            at += 8 + size;
        }
        // New records go after the last whole one.
        self.log_len = at;
        out
    }
}

/// FNV-1a: tells a whole state from one cut short.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(names: &[&str]) -> Saved {
        Saved {
            segments: names
                .iter()
                .map(|n| SavedSegment {
                    posix: n.to_string(),
                    dev: 1,
                    ino: 2,
                    pids: vec![3],
                    pins: vec![4],
                    sticky: false,
                })
                .collect(),
        }
    }

    fn names(s: &Saved) -> Vec<&str> {
        s.segments.iter().map(|s| s.posix.as_str()).collect()
    }

    fn id(dev: u64, ino: u64) -> Identity {
        Identity {
            dev,
            ino,
            mode: 0,
            size: 0,
        }
    }

    #[test]
    fn the_log_replays_after_the_snapshot_it_follows() {
        let mut files = StateFiles::create().unwrap();
        let (empty, logged) = files.load();
        assert!(empty.segments.is_empty() && logged.is_empty());
        files.log(Some(id(7, 8)), b"R\x01\x00\x00\x00/a");
        files.log(None, b"U12345678");
        let (_, logged) = files.load();
        assert_eq!(
            logged,
            vec![
                (Some((7, 8)), b"R\x01\x00\x00\x00/a".to_vec()),
                (None, b"U12345678".to_vec())
            ]
        );
        // A snapshot takes the log's place.
        files.snapshot(&saved(&["/a"]));
        let (snap, logged) = files.load();
        assert_eq!(names(&snap), ["/a"]);
        assert!(logged.is_empty());
        files.log(None, b"U87654321");
        assert_eq!(files.load().1.len(), 1);
    }

    #[test]
    fn a_record_cut_short_ends_the_log_and_is_written_over() {
        let mut files = StateFiles::create().unwrap();
        files.log(None, b"U11111111");
        let whole = files.log_len;
        files.log(None, b"U22222222");
        // Killed mid-append: the second record is cut short.
        files.log.set_len(whole + 5).unwrap();
        let (_, logged) = files.load();
        assert_eq!(logged, vec![(None, b"U11111111".to_vec())]);
        files.log(None, b"U33333333");
        let (_, logged) = files.load();
        assert_eq!(logged.len(), 2);
        assert_eq!(logged[1].1, b"U33333333");
    }

    #[test]
    fn a_torn_snapshot_falls_back_to_the_other_slot_and_its_log() {
        let mut files = StateFiles::create().unwrap();
        files.snapshot(&saved(&["/old"]));
        files.log(None, b"U11111111");
        // The next snapshot is torn (its checksum fails) before the log is
        // emptied: the older snapshot and its log still hold.
        let generation = files.generation + 1;
        let slot = &files.slots[(generation % 2) as usize];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&STATE_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&generation.to_le_bytes());
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(b"torn");
        slot.write_all_at(&bytes, 0).unwrap();
        let (snap, logged) = files.load();
        assert_eq!(names(&snap), ["/old"]);
        assert_eq!(logged.len(), 1);
    }

    #[test]
    fn a_log_older_than_the_snapshot_is_ignored() {
        let mut files = StateFiles::create().unwrap();
        files.log(None, b"U11111111");
        // Killed between writing a snapshot and emptying the log.
        let log_len = files.log_len;
        let body = crate::codec::encode(&saved(&["/new"])).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&STATE_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        files.slots[1].write_all_at(&bytes, 0).unwrap();
        assert_eq!(files.log_len, log_len);
        let (snap, logged) = files.load();
        assert_eq!(names(&snap), ["/new"]);
        assert!(logged.is_empty(), "the old log is in the snapshot already");
    }

    #[test]
    fn message_names() {
        assert_eq!(message_name(b"R\x01\x00\x00\x00/seg"), Some("/seg"));
        assert_eq!(message_name(b"P\x01\x00\x00\x0012345678/seg"), Some("/seg"));
        assert_eq!(message_name(b"U12345678"), None);
        assert_eq!(message_name(b"P\x01"), None);
    }
}
