//! `flock(2)`: advisory whole-file locks that belong to an open file
//! description and die with it (so with the process), used by `brood::log`.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

/// Which lock to take or drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlockOp {
    /// `LOCK_SH`: many holders at once.
    Shared,
    /// `LOCK_EX`: one holder, no shared holders.
    Exclusive,
    /// `LOCK_UN`: drop what this description holds.
    Unlock,
}

/// `flock(fd, op)`, blocking; retried on `EINTR`.
pub(crate) fn flock(fd: impl AsFd, op: FlockOp) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let op = match op {
        FlockOp::Shared => libc::LOCK_SH,
        FlockOp::Exclusive => libc::LOCK_EX,
        FlockOp::Unlock => libc::LOCK_UN,
    };
    loop {
        // SAFETY: `raw` is a descriptor borrowed for the duration of the
        // call; flock reads no memory of ours.
        let rc = unsafe { libc::flock(raw, op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
