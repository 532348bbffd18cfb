//! Process file descriptors: wait for, signal and reap one child without a
//! SIGCHLD handler and without the pid-reuse race.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{ExitStatus, Pid, duration_to_poll_ms};

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
        // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
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
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, duration_to_poll_ms(left)) };
            if n > 0 {
                return Ok(true);
            }
            if n == 0 {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
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
        self.waitid(libc::WEXITED | libc::WNOHANG)
    }

    /// Blocks until the child exits and reaps it (`waitid(P_PIDFD, WEXITED)`).
    ///
    /// ```no_run
    /// # let fd = brood::os::PidFd::open(brood::os::getpid()).unwrap();
    /// let status = fd.reap().unwrap();
    /// ```
    pub fn reap(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.waitid(libc::WEXITED)? {
                return Ok(status);
            }
        }
    }

    fn waitid(&self, options: i32) -> io::Result<Option<ExitStatus>> {
        loop {
            // SAFETY: an all-zero siginfo_t is a valid value of the C struct.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is valid for writes; the fd is open.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.fd.as_raw_fd() as libc::id_t,
                    &mut info,
                    options,
                )
            };
            if rc == -1 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            // SAFETY: waitid filled `info` for a SIGCHLD; si_pid/si_status are
            // the fields the kernel sets for it (both zero under WNOHANG when
            // nothing changed).
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            let decoded = match info.si_code {
                libc::CLD_EXITED => ExitStatus::Exited(status),
                libc::CLD_KILLED => ExitStatus::Signaled {
                    signal: status,
                    core_dumped: false,
                },
                libc::CLD_DUMPED => ExitStatus::Signaled {
                    signal: status,
                    core_dumped: true,
                },
                libc::CLD_STOPPED | libc::CLD_TRAPPED => ExitStatus::Stopped(status),
                _ => ExitStatus::Continued,
            };
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
