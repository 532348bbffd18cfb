//! The calling process's id without a syscall: [`current`] reads a cached
//! copy, which every fork brood knows of refreshes in the child.
//!
//! `std::process::id()` and [`getpid`](super::getpid) enter the kernel each
//! time (glibc stopped caching the pid in 2.25, because a raw `clone`
//! left the cache stale). brood asks for its own pid on hot paths (every
//! log line, every start, every pool and event message), so it keeps one
//! copy here, and keeps it right:
//!
//! - every fork brood makes goes through [`super::fork`], which refreshes
//!   the copy in the child before returning there;
//! - a fork made by anyone else through glibc's `fork` (`libc::fork`,
//!   `nix::unistd::fork`, Python's `os.fork` in an embedding program) runs
//!   the `pthread_atfork` child handler this module registers before it
//!   first caches anything: the handler forgets the copy, and the next
//!   [`current`] asks the kernel again;
//! - a fresh program (spawn, the forkserver, any `exec`) starts with no
//!   copy at all.
//!
//! Invariant: the copy is non-zero only while the handler is registered
//! (or in a child brood's own fork refreshed), so a glibc fork can never
//! leave a stale copy behind. A process made by a raw `clone` syscall that
//! bypasses glibc (and returns into Rust code rather than calling `exec`)
//! is not seen: such a child must call [`refresh`] itself.
//!
//! ```
//! use brood::os;
//!
//! assert_eq!(os::pid::current(), os::getpid());
//! assert_eq!(os::pid::current().as_raw() as u32, std::process::id());
//! ```

use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use super::Pid;

/// The cached pid (0: unknown), in one static that starts with a non-zero
/// byte so it lies in `.data`, with brood's other statics a forked child
/// writes (`launch::CHILD`, the children table): a forked child that
/// refreshes it then writes no extra page (each page a forked child writes
/// is a copy-on-write fault).
#[repr(C)]
struct Cache {
    _in_data: u8,
    /// 0 unregistered, 1 registering, 2 registered: whether the
    /// `pthread_atfork` child handler is in place.
    handler: AtomicU8,
    pid: AtomicI32,
}

static CACHE: Cache = Cache {
    _in_data: 1,
    handler: AtomicU8::new(0),
    pid: AtomicI32::new(0),
};

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;

/// This process's id, as [`getpid`](super::getpid) returns it, without a
/// syscall once known (see the module documentation for how it stays
/// right across forks).
///
/// ```
/// use brood::os::{self, ForkResult, WaitFlags};
///
/// let parent = os::pid::current();
/// // SAFETY: the child only compares two numbers and calls `_exit`.
/// match unsafe { libc::fork() } {
///     0 => {
///         // A fork brood did not make: glibc ran brood's atfork handler.
///         let ok = os::pid::current() == os::getpid() && os::pid::current() != parent;
///         os::exit_now(if ok { 0 } else { 1 })
///     }
///     child => {
///         let child = os::Pid::from_raw(child).unwrap();
///         let (_, status) = os::waitpid(Some(child), WaitFlags::empty()).unwrap().unwrap();
///         assert_eq!(status.code(), Some(0));
///     }
/// }
/// ```
#[inline]
pub fn current() -> Pid {
    match Pid::from_raw(CACHE.pid.load(Ordering::Relaxed)) {
        Some(pid) => pid,
        None => learn(),
    }
}

/// Asks the kernel, and caches the answer once the atfork handler is in
/// place (registering it first if no one has).
#[cold]
#[inline(never)]
fn learn() -> Pid {
    let registered = match CACHE.handler.compare_exchange(
        UNREGISTERED,
        REGISTERING,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            // SAFETY: `forget_in_child` is an `extern "C" fn()` that only
            // stores to an atomic (async-signal-safe, as a handler run in
            // the child of a multi-threaded parent must be); no prepare or
            // parent handler.
            let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
            let state = if rc == 0 { REGISTERED } else { UNREGISTERED };
            CACHE.handler.store(state, Ordering::Release);
            rc == 0
        }
        Err(state) => state == REGISTERED,
    };
    let pid = super::getpid();
    if registered {
        CACHE.pid.store(pid.as_raw(), Ordering::Relaxed);
    }
    pid
}

/// glibc's `fork` runs this in every child: the copy is the parent's, so
/// it is forgotten (the next [`current`] asks the kernel).
extern "C" fn forget_in_child() {
    CACHE.pid.store(0, Ordering::Relaxed);
}

/// Asks the kernel for this process's id and caches it: what a child made
/// without glibc's `fork` (a raw `clone`) calls before anything reads
/// [`current`]. brood's own forks call it for you.
///
/// ```
/// assert_eq!(brood::os::pid::refresh(), brood::os::getpid());
/// ```
#[inline]
pub fn refresh() -> Pid {
    let pid = super::getpid();
    // Cached only under the invariant (handler registered): else forgotten,
    // so a later `current` registers it first. Never registers here: a
    // forked child takes no lock before the user's function runs.
    let keep = if CACHE.handler.load(Ordering::Acquire) == REGISTERED {
        pid.as_raw()
    } else {
        0
    };
    CACHE.pid.store(keep, Ordering::Relaxed);
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_matches_the_kernel_and_is_cached_after_the_first_call() {
        let me = current();
        assert_eq!(me, super::super::getpid());
        assert_eq!(CACHE.handler.load(Ordering::Acquire), REGISTERED);
        assert_eq!(CACHE.pid.load(Ordering::Relaxed), me.as_raw());
    }
}
