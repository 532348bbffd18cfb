//! The resource tracker: named segments brood created are unlinked once no
//! brood process that created or attached to them is alive.
//!
//! Python's tracker unlinks a segment when the process that registered it
//! exits, even while others still use it. brood counts users instead, with
//! the kernel's help:
//!
//! - Every brood process that creates or attaches to a segment holds a
//!   *shared* OFD lock (`fcntl(F_OFD_SETLK, F_RDLCK)`) on its fd. The kernel
//!   drops it when the last fd of that open file goes away — when the
//!   process exits, however it dies.
//! - Each tree of processes (a process and its forked children, which
//!   inherit the connection) has one tracker: a re-execution of the program
//!   (bootstrap mode `tracker`) that detaches from its parent. Each
//!   create/attach of a tracked segment is sent to it over a `SOCK_SEQPACKET`
//!   socket with the segment's fd and the sender's pid; the tracker opens the
//!   segment again (its own open file, holding no lock) and a pidfd for the
//!   sender.
//! - When a registered pid dies, and when the socket reaches end of file
//!   (every process of the tree has exited or exec'd), the tracker asks for
//!   an *exclusive* lock on its own fd. Granted means no one holds a shared
//!   lock: it unlinks the name (if it still names the same segment), then
//!   lets go. Refused means a user is alive; the last user's tracker will
//!   unlink it.
//! - An attacher takes its shared lock with `F_OFD_SETLKW`, then checks the
//!   name still names its segment, so it never counts on a segment a
//!   tracker is unlinking at that very moment.
//!
//! Segments created with tracking off, and those Python creates, have mode
//! `0o600` and are never registered; tracked ones have `0o700`.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::os::{self, Pid, PidFd};

const REGISTER: u8 = b'R';
const MAX_MESSAGE: usize = 512;

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

/// What the POSIX name (with its slash) names now; `None` if nothing.
pub(crate) fn name_identity(posix: &str) -> io::Result<Option<Identity>> {
    let c = CString::new(posix).map_err(io::Error::other)?;
    // SAFETY: `c` is NUL-terminated and alive for the call.
    let raw = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if raw < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: shm_open returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    identity(&fd).map(Some)
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

// ---------------------------------------------------------------------------
// Client side.

/// This process tree's connection to its tracker (inherited by forked
/// children, which share the tracker), or -1. An atomic, not a mutex: a
/// child forked while another thread registers must not inherit a lock
/// held forever.
static CLIENT: AtomicI32 = AtomicI32::new(-1);

/// Tells the tracker that this process created or attached to the tracked
/// segment `posix` (with its slash), open on `fd`.
pub(crate) fn register(fd: &impl AsRawFd, posix: &str) -> io::Result<()> {
    let mut message = Vec::with_capacity(5 + posix.len());
    message.push(REGISTER);
    message.extend_from_slice(&os::getpid().as_raw().to_le_bytes());
    message.extend_from_slice(posix.as_bytes());
    if message.len() > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    for _ in 0..3 {
        let sock = connection()?;
        match send_with_fd(sock, &message, fd.as_raw_fd()) {
            Ok(()) => return Ok(()),
            // The tracker is gone (killed?): start another one. The dead
            // connection's fd stays open (another thread may be sending on
            // it right now, and a closed fd number could be reused); this
            // only happens if someone kills a tracker.
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

fn send_with_fd(sock: RawFd, buf: &[u8], fd: RawFd) -> io::Result<()> {
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the control buffer (32 bytes) holds CMSG_SPACE(4) bytes, so
    // the header and one fd fit; `iov`, `control` and `buf` outlive the call.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::copy_nonoverlapping((&fd as *const RawFd).cast::<u8>(), libc::CMSG_DATA(cmsg), 4);
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        }
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Server side.

/// A message: its bytes, and the fd that came with it.
fn recv_with_fd(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid empty msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: `iov` and `control` are valid for writes of their lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut received = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in; each
    // SCM_RIGHTS payload holds fds now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / 4 {
                    let raw = std::ptr::read_unaligned(data.add(i * 4).cast::<RawFd>());
                    received.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, received.into_iter().next()))
}

struct Segment {
    /// With its leading slash.
    posix: String,
    /// The tracker's own open file (never locked but to decide).
    fd: OwnedFd,
    id: Identity,
    pids: Vec<i32>,
}

enum Check {
    /// Unlinked by us, or no longer under that name: forget it.
    Done,
    /// Someone still holds a shared lock.
    Held,
}

impl Segment {
    fn check(&self) -> Check {
        match name_identity(&self.posix) {
            Ok(Some(now)) if now == self.id => {}
            Ok(_) => return Check::Done,
            // Cannot tell: try again later.
            Err(_) => return Check::Held,
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
}

/// The tracker's loop (bootstrap mode `tracker`): serves the socket on
/// `fd` until every process of its tree has gone, then unlinks what no one
/// uses and exits.
pub(crate) fn serve(fd: RawFd) -> ! {
    // SAFETY: the client put the socket on `fd` for us alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    detach();
    let mut server = Server {
        sock,
        segments: Vec::new(),
        pids: HashMap::new(),
    };
    server.run();
    server.finish();
    os::exit_now(0)
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

impl Server {
    fn run(&mut self) {
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
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
            for (pfd, pid) in pfds[1..].iter().zip(&watched) {
                if pfd.revents != 0 {
                    self.pids.remove(pid);
                    self.died(*pid);
                }
            }
            if pfds[0].revents != 0 {
                match recv_with_fd(&self.sock, &mut buf) {
                    Ok((0, _)) => return,
                    Ok((n, fd)) => self.message(&buf[..n], fd),
                    Err(_) => return,
                }
            }
        }
    }

    fn message(&mut self, msg: &[u8], fd: Option<OwnedFd>) {
        let (Some(&REGISTER), Some(fd)) = (msg.first(), fd) else {
            return;
        };
        if msg.len() < 6 {
            return;
        }
        let pid = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
        let Ok(posix) = std::str::from_utf8(&msg[5..]) else {
            return;
        };
        let Ok(id) = identity(&fd) else {
            return;
        };
        let mut alive = true;
        if let Some(p) = Pid::from_raw(pid)
            && !self.pids.contains_key(&pid)
        {
            match PidFd::open(p) {
                Ok(pidfd) => {
                    self.pids.insert(pid, pidfd);
                }
                Err(_) => alive = false,
            }
        }
        match self.segments.iter_mut().find(|s| s.id == id) {
            Some(seg) => {
                if !seg.pids.contains(&pid) {
                    seg.pids.push(pid);
                }
            }
            None => {
                // Our own open file of the segment: the received fd shares
                // the sender's, whose shared lock we must not keep alive.
                let path = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
                // SAFETY: `path` is NUL-terminated and alive for the call.
                let raw =
                    unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
                if raw < 0 {
                    return;
                }
                // SAFETY: open returned a fresh fd that nothing else owns.
                let own = unsafe { OwnedFd::from_raw_fd(raw) };
                self.segments.push(Segment {
                    posix: posix.to_string(),
                    fd: own,
                    id,
                    pids: vec![pid],
                });
            }
        }
        drop(fd);
        if !alive {
            self.died(pid);
        }
    }

    /// A registered process has exited: its locks are gone.
    fn died(&mut self, pid: i32) {
        self.segments.retain_mut(|seg| {
            let Some(i) = seg.pids.iter().position(|&p| p == pid) else {
                return true;
            };
            seg.pids.swap_remove(i);
            matches!(seg.check(), Check::Held)
        });
    }

    /// Every process of the tree has closed the socket: each has exited or
    /// exec'd. Their files may still be closing for a moment, so a segment
    /// still held is tried again a few times before it is left to its other
    /// users (whose own trackers will unlink it).
    fn finish(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut pause = Duration::from_millis(1);
        loop {
            self.segments
                .retain(|seg| matches!(seg.check(), Check::Held));
            if self.segments.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}
