//! `posix_spawn`, behind a safe call: start a program with a chosen
//! environment and some fds placed at fixed numbers.
//!
//! `posix_spawn` is a vfork-style clone: unlike `fork`, it is safe in a
//! program that runs threads, because the child runs no code of ours before
//! `exec`. `rustix` has no `posix_spawn`, and `std::process::Command` can
//! place an fd at a fixed number only through an `unsafe` `pre_exec` hook (a
//! fork), so it is written here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::Pid;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts `path` with `argv` = `[argv0]` and the environment `env`
/// (`KEY=value` strings), with each `(fd, to)` of `fds` duplicated onto
/// number `to` in the child (`dup2` clears close-on-exec there). The child
/// starts with an empty signal mask and the default action for SIGCHLD,
/// SIGINT and SIGTERM, whatever the caller set.
///
/// No source fd may sit on another pair's target: the caller moves them out
/// of the way first (duplicates at 64 and above do).
pub(crate) fn spawn(
    path: &CStr,
    argv0: &CStr,
    env: &[CString],
    fds: &[(BorrowedFd<'_>, RawFd)],
) -> io::Result<Pid> {
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    let argv: [*mut libc::c_char; 2] = [argv0.as_ptr() as *mut _, std::ptr::null_mut()];
    // SAFETY: every pointer handed to posix_spawn (path, argv, envp and the
    // strings they point to, owned by the caller's `env` and `argv0`, the
    // file actions and attributes) lives until it returns; the actions and
    // attributes are initialised before use and destroyed after; the fds
    // are borrowed, so open for the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for (fd, to) in fds {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    fd.as_raw_fd(),
                    *to,
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
