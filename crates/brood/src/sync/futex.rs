//! Shared (non-private) futex wait and wake, and deadlines.
//!
//! The words live in `MAP_SHARED` memory, so every call here leaves out
//! `FUTEX_PRIVATE_FLAG`: the kernel then keys a waiter by the page's inode
//! and offset, and a wake from any process that maps the page reaches it.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// When a wait gives up: never, or at an instant (`CLOCK_MONOTONIC`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now; `None` means no limit.
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        // A timeout too far away to represent is no limit.
        Deadline(timeout.and_then(crate::time::deadline))
    }

    /// The time left (zero once passed); `None` when there is no limit.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }
}

/// Sleeps while `word` holds `expected`, until a wake, a signal, or the
/// deadline. Spurious returns are possible: callers re-check their
/// condition and the deadline in a loop.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) {
    let ts;
    let timeout = match deadline.remaining() {
        None => std::ptr::null(),
        Some(left) if left.is_zero() => return,
        Some(left) => {
            ts = libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            &ts as *const libc::timespec
        }
    };
    // SAFETY: `word` is a valid, aligned u32 for the whole call; FUTEX_WAIT
    // only reads it; `timeout` is null or points to `ts`, alive until the
    // call returns. Errors (EAGAIN: the value changed, ETIMEDOUT, EINTR)
    // all mean "re-check", which every caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            timeout,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` waiters on `word` (all of them for `u32::MAX`).
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: FUTEX_WAKE only uses the word's address as a key; it never
    // dereferences beyond the aligned u32 `word` points to.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
