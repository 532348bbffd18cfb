//! Re-executing this program as a brood helper: the one primitive the
//! spawn launcher, the forkserver client and the shared-memory tracker
//! start their processes with, and the constants the child's entry
//! (`bootstrap`) reads on the other side.
//!
//! It sits below all of them, so that none of them reaches up into another:
//! `bootstrap` → `launch`, `shm` → `reexec` → `os`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::os::{self, Pid};

/// The environment variable that tells a process it is a brood child, and
/// which (its value is the bootstrap mode: `spawn`, `forkserver`, `tracker`).
pub(crate) const ENV: &CStr = c"__BROOD_BOOTSTRAP";

/// The fd a spawned child, the forkserver or the tracker finds its socket on.
pub(crate) const CHILD_FD: RawFd = 3;

/// Starts this executable again (`/proc/self/exe`, through `posix_spawn`,
/// safe in a program with threads) with `__BROOD_BOOTSTRAP=mode`, with each
/// `(from, to)` fd of `fds` placed at `to` in the child, and `argv[0]` the
/// caller's (so `ps` shows the program's name).
pub(crate) fn spawn_self(mode: &str, fds: &[(BorrowedFd<'_>, RawFd)]) -> io::Result<Pid> {
    // Move the sources out of the way of the targets first (a source that
    // happens to sit on another pair's target would be clobbered).
    let mut high = Vec::with_capacity(fds.len());
    for (from, _) in fds {
        high.push(os::fd::dup_cloexec(from.as_fd(), 64)?);
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
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| CString::new(a.as_bytes()).ok())
        .unwrap_or_else(|| c"brood-child".to_owned());
    let placed: Vec<(BorrowedFd<'_>, RawFd)> = high
        .iter()
        .zip(fds)
        .map(|(fd, &(_, to))| (fd.as_fd(), to))
        .collect();
    os::spawn::spawn(c"/proc/self/exe", &argv0, &env, &placed)
}

/// The program's name as the parent was started (`argv[0]`'s last part):
/// executing `/proc/self/exe` would otherwise name the child `exe` in `ps`.
pub(crate) fn program_name() -> Vec<u8> {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    base_name(cmdline.split(|b| *b == 0).next().unwrap_or_default())
}

/// The last part of a path, or `brood-child` for an empty one.
pub(crate) fn base_name(path: &[u8]) -> Vec<u8> {
    let base = path.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if base.is_empty() {
        b"brood-child".to_vec()
    } else {
        base.to_vec()
    }
}

/// Sets the name `ps` shows (`/proc/self/comm`, at most 15 bytes).
pub(crate) fn set_name(name: &[u8]) {
    os::sys::set_name(name);
}
