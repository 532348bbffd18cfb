//! The spawn start method: re-execute this program (`/proc/self/exe`)
//! through `posix_spawn` (a vfork-style clone, safe in a program with
//! threads); the bootstrap runs the job before `main`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::{Job, Launched, Launcher, Popen, Spec, Work, child_main, die_with_parent};
use crate::bootstrap::{CHILD_FD, ENV};
use crate::children;
use crate::codec;
use crate::os::scm::{recv_exact_with_fds, send_all};
use crate::os::{self, Pid, PidFd};
use crate::task::Fail;

pub(crate) struct Spawn;

impl Launcher for Spawn {
    fn launch(&self, spec: &Spec, work: &mut Option<Work>) -> io::Result<Launched> {
        let work = work.as_ref().ok_or_else(no_work)?;
        let (job, fds) = Job::new(spec, work).ok_or_else(capturing_closure)?;
        let bytes = codec::encode(&job).map_err(io::Error::other)?;
        let (ours, theirs) = socketpair()?;
        let pid = spawn_self("spawn", &[(theirs.as_raw_fd(), CHILD_FD)])?;
        drop(theirs);
        let pidfd = match PidFd::open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = os::kill(pid, libc::SIGKILL);
                let _ = os::waitpid(Some(pid), os::WaitFlags::empty());
                return Err(e);
            }
        };
        children::lock().register(
            pid,
            children::Entry {
                name: spec.name.clone(),
                daemon: spec.daemon,
                served: None,
            },
        );
        // A child that died before reading gives EPIPE here; its exit status
        // then tells the story, so the error is not the caller's.
        let _ = send_frame(&ours, &bytes, &fds);
        set_nonblocking(&ours)?;
        Ok(Launched {
            popen: Popen::Direct(pidfd),
            result: ours,
            keep: None,
        })
    }
}

/// The error for a launch without work (a bug in the caller, reported
/// rather than panicked).
pub(crate) fn no_work() -> io::Error {
    io::Error::other("internal error: nothing to launch")
}

pub(crate) fn capturing_closure() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a capturing closure can only run in a forked child (Process::fork)",
    )
}

/// The spawned child's side, called by the bootstrap before `main`.
pub(crate) fn child(fd: RawFd) -> ! {
    // SAFETY: the parent put our end of the socket pair on `fd` for us
    // alone; nothing else in this fresh process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Programs the job execs must not inherit it.
    // SAFETY: F_SETFD on an open fd touches no memory.
    unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let received = recv_frame(&sock)
        .and_then(|(b, fds)| Ok((codec::decode::<Job>(&b).map_err(io::Error::other)?, fds)));
    let (job, fds) = match received {
        Ok(got) => got,
        Err(e) => {
            let msg = format!("the spawned child could not read its job: {e}");
            child_main(Box::new(move || Err(Fail::BadArgs(msg))), sock)
        }
    };
    if job.spec.daemon
        && let Some(parent) = Pid::from_raw(job.spec.parent_pid)
    {
        die_with_parent(parent);
    }
    children::lock().enter_child(&job.spec);
    // A fresh process: it ends through `exit`, running its atexit
    // handlers, as Python's spawn children do.
    super::run_exit_hooks_here();
    let body = match job.into_body(fds) {
        Ok(body) => body,
        Err(msg) => Box::new(move || Err(Fail::UnknownTask(msg))),
    };
    child_main(body, sock)
}

/// Starts this executable again with `__BROOD_BOOTSTRAP=mode`, with each
/// `(from, to)` fd of `fds` placed at `to` in the child.
pub(crate) fn spawn_self(mode: &str, fds: &[(RawFd, RawFd)]) -> io::Result<Pid> {
    // Move the sources out of the way of the targets first (a source that
    // happens to sit on another pair's target would be clobbered).
    let mut high = Vec::new();
    for &(from, _) in fds {
        // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd we own.
        let dup = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 64) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a fresh fd owned by nothing else.
        high.push(unsafe { OwnedFd::from_raw_fd(dup) });
    }
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k.as_bytes() != ENV.to_bytes())
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(
        CString::new(format!("{}={mode}", ENV.to_str().unwrap_or_default()))
            .map_err(io::Error::other)?,
    );
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| CString::new(a.as_bytes()).ok())
        .unwrap_or_else(|| c"brood-child".to_owned());
    let argv: [*mut libc::c_char; 2] = [argv0.as_ptr() as *mut _, std::ptr::null_mut()];
    let path = c"/proc/self/exe";

    // SAFETY: every pointer handed to posix_spawn (path, argv, envp, the
    // file actions and attributes) lives until it returns; the actions and
    // attributes are initialised before use and destroyed after.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        check(libc::posix_spawnattr_init(&mut attr))?;
        let result = (|| {
            for (fd, &(_, to)) in high.iter().zip(fds) {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    fd.as_raw_fd(),
                    to,
                ))?;
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            libc::sigaddset(&mut defaults, libc::SIGCHLD);
            libc::sigaddset(&mut defaults, libc::SIGINT);
            libc::sigaddset(&mut defaults, libc::SIGTERM);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            ))?;
            Pid::from_raw(pid).ok_or_else(|| io::Error::other("posix_spawn returned no pid"))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on an open fd touch no memory.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes `[len: u64 LE][bytes]` on a blocking socket, without SIGPIPE,
/// with `fds` attached to the header.
pub(crate) fn send_frame(fd: &impl AsRawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    // Header and body in one sendmsg when the socket takes them at once.
    let header = (bytes.len() as u64).to_le_bytes();
    let sent =
        crate::os::scm::sendmsg_fds(fd.as_raw_fd(), &[&header, bytes], fds, libc::MSG_NOSIGNAL)?;
    if sent < header.len() {
        send_all(fd, &header[sent..])?;
        send_all(fd, bytes)
    } else {
        send_all(fd, &bytes[sent - header.len()..])
    }
}

/// Reads one `[len: u64 LE][bytes]` frame and the fds that came with it,
/// refusing lengths over the limit.
pub(crate) fn recv_frame(fd: &impl AsRawFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut header = [0u8; 8];
    let fds = recv_exact_with_fds(fd, &mut header)?;
    let len = u64::from_le_bytes(header);
    if len > codec::DEFAULT_MAX_FRAME as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    if os::read_full(fd, &mut bytes)? != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed mid-frame",
        ));
    }
    Ok((bytes, fds))
}
