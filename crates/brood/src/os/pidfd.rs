//! Process file descriptors: wait for, signal and reap one child without a
//! SIGCHLD handler and without the pid-reuse race.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::process::{WaitId, WaitIdOptions};

use super::{ExitStatus, Pid};

/// A file descriptor that refers to one process (`pidfd_open(2)`).
///
/// It turns readable when the process exits, signals reach exactly that
/// process even after its pid is reused, and for a child it reaps exactly
/// that child (`waitid(P_PIDFD)`). The fd is close-on-exec.
///
/// ```
/// use brood::os::PidFd;
/// let me = PidFd::open(brood::os::getpid()).unwrap();
/// assert!(!me.wait_timeout(Some(std::time::Duration::ZERO)).unwrap()); // still running
/// ```
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: Pid,
}

impl PidFd {
    /// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3+).
    ///
    /// ```
    /// let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// assert_eq!(fd.pid(), brood::os::getpid());
    /// ```
    #[doc(alias = "pidfd_open")]
    pub fn open(pid: Pid) -> io::Result<PidFd> {
        let raw = rustix::process::Pid::from_raw(pid.as_raw())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())?;
        Ok(PidFd { fd, pid })
    }

    /// Wraps a pidfd received from elsewhere (the forkserver).
    pub(crate) fn from_parts(fd: OwnedFd, pid: Pid) -> PidFd {
        PidFd { fd, pid }
    }

    /// The pid this descriptor refers to.
    ///
    /// ```
    /// let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// assert!(fd.pid().as_raw() > 0);
    /// ```
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits until the process exits or `timeout` passes (`None`: no limit);
    /// returns whether it has exited. Does not reap it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// assert!(!fd.wait_timeout(Some(Duration::from_millis(1))).unwrap());
    /// ```
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.and_then(crate::time::deadline);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut pfd = [super::fd::pollin(self.fd.as_raw_fd())];
            match super::fd::poll(&mut pfd, left) {
                Ok(0) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(false);
                    }
                }
                Ok(_) => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends `signal` to the process (`pidfd_send_signal(2)`). A process that
    /// has exited but is not yet reaped gives `ESRCH`.
    ///
    /// ```
    /// let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// fd.send_signal(0).unwrap(); // signal 0: only checks
    /// ```
    #[doc(alias = "pidfd_send_signal")]
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: the fd is open for the call; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Reaps the child if it has exited (`waitid(P_PIDFD, WEXITED|WNOHANG)`):
    /// `Ok(None)` while it runs. Only works for the caller's own children;
    /// `ECHILD` otherwise (or when `SIGCHLD` is ignored and the kernel reaped
    /// it already).
    ///
    /// ```no_run
    /// # let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// if let Some(status) = fd.try_reap().unwrap() {
    ///     println!("{status}");
    /// }
    /// ```
    pub fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        self.waitid(WaitIdOptions::EXITED | WaitIdOptions::NOHANG)
    }

    /// Blocks until the child exits and reaps it (`waitid(P_PIDFD, WEXITED)`).
    ///
    /// ```no_run
    /// # let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// let status = fd.reap().unwrap();
    /// ```
    pub fn reap(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.waitid(WaitIdOptions::EXITED)? {
                return Ok(status);
            }
        }
    }

    fn waitid(&self, options: WaitIdOptions) -> io::Result<Option<ExitStatus>> {
        loop {
            let info = match rustix::process::waitid(WaitId::PidFd(self.fd.as_fd()), options) {
                Ok(Some(info)) => info,
                // Nothing changed yet (under NOHANG).
                Ok(None) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let decoded = if let Some(code) = info.exit_status() {
                ExitStatus::Exited(code)
            } else if let Some(signal) = info.terminating_signal() {
                ExitStatus::Signaled {
                    signal,
                    core_dumped: info.dumped(),
                }
            } else if let Some(signal) = info.stopping_signal().or(info.trapping_signal()) {
                ExitStatus::Stopped(signal)
            } else {
                ExitStatus::Continued
            };
            if matches!(decoded, ExitStatus::Exited(_) | ExitStatus::Signaled { .. }) {
                // Reaped: what its fork lent it is free (shm/arena.rs).
                crate::shm::arena::child_exited(self.pid.as_raw());
            }
            return Ok(Some(decoded));
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
