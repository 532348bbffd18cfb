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
//!   the `pthread_atfork` prepare and parent handlers this module registers
//!   before it first caches anything: the prepare handler marks a fork in
//!   flight, and while one is, no one trusts or fills the copy. The child
//!   inherits the mark (and the parent's pid beside it), so its first
//!   [`current`] asks the kernel, sees another pid than the marked one, and
//!   caches its own; the parent's handler clears the mark after the fork;
//! - a fresh program (spawn, the forkserver, any `exec`) starts with no
//!   copy at all.
//!
//! Why no child handler: glibc runs it in every forked child, and its code
//! is one more 64 KiB window of text the child maps with a page fault
//! (about 2 µs of every brood fork start+join). The prepare and parent
//! handlers run in the parent, whose text is mapped already, and write a
//! word on a page the parent writes anyway after a fork (the children
//! table's).
//!
//! Invariant: the copy is trusted only while the handlers are registered
//! (or in a child brood's own fork refreshed) and no fork is in flight, so
//! a glibc fork can never leave a stale copy behind. A process made by a
//! raw `clone` syscall that bypasses glibc (and returns into Rust code
//! rather than calling `exec`) is not seen: such a child must call
//! [`refresh`] itself.
//!
//! ```
//! use brood::os;
//!
//! assert_eq!(os::pid::current(), os::getpid());
//! assert_eq!(os::pid::current().as_raw() as u32, std::process::id());
//! ```

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::Pid;
use crate::child_page::PAGE;

/// The cached pid. It lies in `crate::child_page::PAGE` with brood's other
/// statics a forked child writes: a forked child that refreshes it then
/// writes no extra page (each page a forked child writes is a
/// copy-on-write fault).
pub(crate) struct Cache {
    /// 0 unregistered, 1 registering, 2 registered: whether the
    /// `pthread_atfork` handlers are in place.
    handler: AtomicU8,
    /// `(forks in flight << 32) | pid` (pid 0: unknown). The pid is trusted
    /// only when no fork is in flight.
    word: AtomicU64,
}

impl Cache {
    pub(crate) const fn new() -> Cache {
        Cache {
            handler: AtomicU8::new(0),
            word: AtomicU64::new(0),
        }
    }
}

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;

/// One fork in flight, in [`Cache::word`].
const IN_FLIGHT: u64 = 1 << 32;

fn pid_of(word: u64) -> i32 {
    word as u32 as i32
}

fn in_flight(word: u64) -> bool {
    word >> 32 != 0
}

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
///         // A fork brood did not make: glibc ran brood's atfork handlers
///         // in the parent, and the copy the child inherited is marked.
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
    let word = PAGE.pid.word.load(Ordering::Acquire);
    match Pid::from_raw(pid_of(word)) {
        Some(pid) if !in_flight(word) => pid,
        _ => learn(word),
    }
}

/// Asks the kernel, and caches the answer once the atfork handlers are in
/// place (registering them first if no one has). `seen` is the word the
/// caller read.
#[cold]
#[inline(never)]
fn learn(seen: u64) -> Pid {
    let registered = match PAGE.pid.handler.compare_exchange(
        UNREGISTERED,
        REGISTERING,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            // SAFETY: `before_fork` and `after_fork_parent` are
            // `extern "C" fn()`s that only update an atomic (and the
            // prepare one may call `getpid`); no child handler.
            let rc =
                unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), None) };
            let state = if rc == 0 { REGISTERED } else { UNREGISTERED };
            PAGE.pid.handler.store(state, Ordering::Release);
            rc == 0
        }
        Err(state) => state == REGISTERED,
    };
    let pid = super::getpid();
    if registered {
        let known = pid_of(seen);
        // Unknown and no fork in flight: ours to fill. Marked in flight
        // with another process's pid: this is a child of that fork (the
        // fork is over here), which starts with no fork of its own in
        // flight. Marked with our own pid: a fork of this process is in
        // flight, and its child would inherit what we store: left alone.
        let fill = if in_flight(seen) {
            known != 0 && known != pid.as_raw()
        } else {
            known == 0
        };
        if fill {
            let _ = PAGE.pid.word.compare_exchange(
                seen,
                u64::from(pid.as_raw() as u32),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
    pid
}

/// glibc's `fork` runs this in the parent before every fork: one more
/// fork in flight, with this process's pid beside it (learned if unknown),
/// so the child can tell the copy it inherits is not its own.
extern "C" fn before_fork() {
    let mut seen = PAGE.pid.word.load(Ordering::Acquire);
    loop {
        let (flying, pid) = match pid_of(seen) {
            known if known != 0 && !in_flight(seen) => (0, known),
            known => {
                let me = super::getpid().as_raw();
                // Marked with another pid: inherited from the fork that
                // made this process, none of ours is in flight.
                let ours = if known == me { seen >> 32 } else { 0 };
                (ours, me)
            }
        };
        let next = (flying + 1) << 32 | u64::from(pid as u32);
        match PAGE
            .pid
            .word
            .compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return,
            Err(now) => seen = now,
        }
    }
}

/// glibc's `fork` runs this in the parent after every fork (made or
/// failed): that fork is no longer in flight.
extern "C" fn after_fork_parent() {
    PAGE.pid.word.fetch_sub(IN_FLIGHT, Ordering::AcqRel);
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
    // Cached only under the invariant (handlers registered): else
    // forgotten, so a later `current` registers them first. Never
    // registers here: a forked child takes no lock before the user's
    // function runs. A fresh child has no fork of its own in flight.
    let keep = if PAGE.pid.handler.load(Ordering::Acquire) == REGISTERED {
        pid.as_raw() as u32
    } else {
        0
    };
    PAGE.pid.word.store(u64::from(keep), Ordering::Release);
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_matches_the_kernel_and_is_cached_after_the_first_call() {
        let me = current();
        assert_eq!(me, super::super::getpid());
        assert_eq!(PAGE.pid.handler.load(Ordering::Acquire), REGISTERED);
        assert_eq!(
            PAGE.pid.word.load(Ordering::Relaxed),
            u64::from(me.as_raw() as u32)
        );
    }
}
