//! The spawn start method: re-execute this program (`/proc/self/exe`)
//! through `posix_spawn` (a vfork-style clone, safe in a program with
//! threads); the bootstrap runs the job before `main`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::{Job, Launched, Launcher, Popen, Spec, Work, child_main, die_with_parent};
use crate::children;
use crate::codec;
use crate::os::scm::{recv_exact_with_fds, send_all};
use crate::os::{self, Pid, PidFd};
use crate::reexec::{CHILD_FD, spawn_self};
use crate::task::Fail;

pub(crate) struct Spawn;

impl Launcher for Spawn {
    fn launch(&self, spec: Spec, work: &mut Option<Work>) -> io::Result<Launched> {
        let work = work.as_ref().ok_or_else(no_work)?;
        let (job, fds) = Job::new(&spec, work).ok_or_else(capturing_closure)?;
        let bytes = codec::encode(&job).map_err(io::Error::other)?;
        let (ours, theirs) = os::fd::socketpair()?;
        let pid = spawn_self("spawn", &[(theirs.as_fd(), CHILD_FD)])?;
        drop(theirs);
        let pidfd = match PidFd::open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = os::kill(pid, libc::SIGKILL);
                let _ = os::waitpid(Some(pid), os::WaitFlags::empty());
                return Err(e);
            }
        };
        children::lock().register(pid, spec.entry());
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
    // Ours alone, and close-on-exec: programs the job execs must not
    // inherit it.
    let sock = match os::fd::claim_inherited(fd) {
        Ok(sock) => sock,
        Err(e) => {
            eprintln!("brood: the spawned child has no socket from its parent: {e}");
            os::exit_now(70)
        }
    };
    let received = recv_frame(&sock)
        .and_then(|(b, fds)| Ok((codec::decode::<Job>(&b).map_err(io::Error::other)?, fds)));
    let (mut job, fds) = match received {
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
    super::enter_child(&mut job.spec);
    // A fresh process: it ends through `exit`, running its atexit
    // handlers, as Python's spawn children do.
    super::run_exit_hooks_here();
    let body = match job.into_body(fds) {
        Ok(body) => body,
        Err(msg) => Box::new(move || Err(Fail::UnknownTask(msg))),
    };
    child_main(body, sock)
}

/// Kept here for the fork launcher, which sets its result pipe the same way.
pub(crate) use crate::os::fd::set_nonblocking;

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
pub(crate) fn recv_frame(fd: &(impl AsRawFd + AsFd)) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
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
