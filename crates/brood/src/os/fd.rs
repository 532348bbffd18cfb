//! Safe wrappers over the fd syscalls the rest of the crate needs: `poll`,
//! eventfds, `fcntl` (duplicate, close-on-exec, non-blocking), socket pairs,
//! and taking the one fd a re-executed child inherits from its parent.
//!
//! Where `rustix` has a safe call it is used; `poll` is written here over
//! `libc::pollfd`, because the reaper thread polls fds it does not own while
//! the children table's lock is released (see `children.rs`), which a
//! borrowed-fd API cannot express, and because the millisecond rounding of
//! [`duration_to_poll_ms`] is part of brood's timeout behaviour.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::duration_to_poll_ms;

/// A `pollfd` waiting for `fd` to turn readable (`POLLIN`). A negative `fd`
/// is skipped by the kernel (its `revents` stay 0).
pub(crate) fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no limit);
/// returns how many entries have `revents` set (`poll(2)`). An interrupted
/// call is returned as an error of kind `Interrupted`, for the caller to
/// retry with the time it has left.
///
/// Polling a number that is not an open fd is not a memory error: the
/// kernel reports `POLLNVAL` for it.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfds for the
    // whole call; poll(2) writes only their `revents`.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            duration_to_poll_ms(timeout),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether `fd` is readable (or hung up) right now: a poll with a zero
/// timeout. An error counts as ready, so a caller never waits on a broken fd.
pub(crate) fn ready_now(fd: impl AsFd) -> bool {
    let mut pfd = [pollin(fd.as_fd().as_raw_fd())];
    !matches!(poll(&mut pfd, Some(Duration::ZERO)), Ok(0))
}

/// A close-on-exec, non-blocking eventfd with counter 0 (`eventfd(2)`).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Resets an eventfd's counter (one 8-byte read); nothing to read is fine.
pub(crate) fn drain_eventfd(fd: impl AsFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

/// A close-on-exec duplicate of `fd` numbered `min` or above
/// (`fcntl(F_DUPFD_CLOEXEC)`).
pub(crate) fn dup_cloexec(fd: impl AsFd, min: RawFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, min)?)
}

/// Sets close-on-exec on `fd` (`fcntl(F_SETFD, FD_CLOEXEC)`).
pub(crate) fn set_cloexec(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?)
}

/// Sets `O_NONBLOCK` on `fd`, keeping its other status flags.
pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    use rustix::fs::OFlags;
    let fd = fd.as_fd();
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK)?)
}

/// The raw number of an fd that an owner elsewhere holds (an `OwnedFd` of
/// a process-wide client), published so that a forked child can close its
/// copy without taking the owner's lock (a forked child of a
/// single-threaded parent takes no lock: each is a copy-on-write fault).
///
/// The owner's side: [`publish`](Self::publish) when it opens the fd,
/// [`withdraw`](Self::withdraw) before it closes it. The child's side:
/// [`close_in_child`](Self::close_in_child), after which the child must
/// never drop its copy of the owner (it forgets it): the fd is closed once.
pub(crate) struct ForkFdSlot(std::sync::atomic::AtomicI32);

impl ForkFdSlot {
    pub(crate) const fn new() -> ForkFdSlot {
        ForkFdSlot(std::sync::atomic::AtomicI32::new(-1))
    }

    /// Publishes the owner's fd.
    pub(crate) fn publish(&self, fd: &impl AsRawFd) {
        self.0.store(fd.as_raw_fd(), Ordering::SeqCst);
    }

    /// Withdraws it (the owner is about to close it).
    pub(crate) fn withdraw(&self) {
        self.0.store(-1, Ordering::SeqCst);
    }

    /// In a freshly forked child: closes the inherited copy of the
    /// published fd, once (the slot is emptied), with a bare syscall.
    /// Inlined: a forked child maps each 64 KiB of code it runs.
    #[inline]
    pub(crate) fn close_in_child(&self) {
        let fd = self.0.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: the fd was published by its owner and not withdrawn,
            // so it is open here (inherited), and the slot is now empty, so
            // this is the only close through the slot; the owner's copy in
            // this process is forgotten, never dropped (the contract
            // above), so the fd is closed once.
            unsafe { super::close_raw_now(fd) };
        }
    }
}

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Set once the inherited fd has been claimed: there is one owner per process.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the fd a re-executed child finds at number `fd` (the
/// launch protocol's `CHILD_FD`: the parent put its end of a socket pair
/// there before `exec`), and makes it close-on-exec so programs the child
/// execs do not inherit it.
///
/// Fails if it was claimed already in this process or `fd` is not open.
pub(crate) fn claim_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if CLAIMED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the inherited fd was claimed already",
        ));
    }
    // SAFETY: F_GETFD reads the flags of an fd number and touches no memory;
    // it only checks that the number is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the launch protocol reserves this number for the child: its
    // parent placed the socket there for it alone, the bootstrap claims it
    // before `main` (so before any code of the program could have taken it),
    // and `CLAIMED` makes this the one owner in the process.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned)?;
    Ok(owned)
}

/// A whole-file lock on an open file description (`F_OFD_SETLK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfdLock {
    /// A read lock: many holders.
    Shared,
    /// A write lock: one holder, and no shared ones.
    Exclusive,
    /// Lets go of either.
    Unlock,
}

/// Takes or releases an open-file-description lock on the whole of `fd`
/// (`fcntl(F_OFD_SETLK[W])`): it belongs to the open file, not to the
/// process, so it is shared by dups and fds passed over sockets, and goes
/// when the last of them closes. With `wait`, blocks while a conflicting
/// lock is held; without, returns `Ok(false)` then.
///
/// `rustix::fs::fcntl_lock` takes process-associated locks (`F_SETLK`),
/// which a process's every close of the file drops; hence this wrapper.
pub(crate) fn ofd_lock(fd: impl AsFd, kind: OfdLock, wait: bool) -> io::Result<bool> {
    // SAFETY: an all-zero flock is a valid value of the C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        OfdLock::Shared => libc::F_RDLCK,
        OfdLock::Exclusive => libc::F_WRLCK,
        OfdLock::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start = l_len = 0: the whole file; l_pid must be 0 for OFD locks.
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    let fd = fd.as_fd();
    loop {
        // SAFETY: `fl` is a valid flock for the call; the fd is borrowed, so
        // open.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_now_follows_the_pipe() {
        let (read, write) = crate::os::pipe_cloexec().unwrap();
        assert!(!ready_now(&read));
        assert!(crate::os::write_all_raw(&write, b"x"));
        assert!(ready_now(&read));
    }

    #[test]
    fn poll_times_out_and_skips_negative_fds() {
        let (read, _write) = crate::os::pipe_cloexec().unwrap();
        let mut fds = [pollin(read.as_raw_fd()), pollin(-1)];
        let started = std::time::Instant::now();
        assert_eq!(poll(&mut fds, Some(Duration::from_millis(20))).unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn eventfd_wakes_and_drains() {
        let fd = eventfd().unwrap();
        assert!(!ready_now(&fd));
        assert!(crate::os::write_all_raw(&fd, &1u64.to_ne_bytes()));
        assert!(ready_now(&fd));
        drain_eventfd(&fd);
        assert!(!ready_now(&fd));
    }

    #[test]
    fn ofd_locks_conflict_between_open_files_not_dups() {
        let path = std::env::temp_dir().join(format!("brood-ofd-{}", std::process::id()));
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let (a, b) = (open(), open());
        std::fs::remove_file(&path).unwrap();
        assert!(ofd_lock(&a, OfdLock::Shared, false).unwrap());
        // A dup shares the open file, and so the lock.
        let dup = dup_cloexec(&a, 3).unwrap();
        assert!(ofd_lock(&dup, OfdLock::Exclusive, false).unwrap());
        // Another open file of the same file is refused, without waiting.
        assert!(!ofd_lock(&b, OfdLock::Shared, false).unwrap());
        assert!(ofd_lock(&a, OfdLock::Unlock, false).unwrap());
        assert!(ofd_lock(&b, OfdLock::Exclusive, false).unwrap());
    }

    #[test]
    fn dup_cloexec_numbers_from_min_and_sets_the_flag() {
        let (read, _write) = crate::os::pipe_cloexec().unwrap();
        let dup = dup_cloexec(&read, 100).unwrap();
        assert!(dup.as_raw_fd() >= 100);
        let flags = rustix::io::fcntl_getfd(&dup).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn claim_inherited_takes_one_owner_only() {
        // An fd number nobody owns any more, as a re-executed child finds
        // its socket (the only claim in this test binary).
        let (read, write) = crate::os::pipe_cloexec().unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(read);
        let owned = claim_inherited(raw).unwrap();
        assert_eq!(owned.as_raw_fd(), raw);
        let again = claim_inherited(raw).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        // It is the pipe's read end, and close-on-exec.
        assert!(crate::os::write_all_raw(&write, b"y"));
        assert!(ready_now(&owned));
        let flags = rustix::io::fcntl_getfd(&owned).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }
}
