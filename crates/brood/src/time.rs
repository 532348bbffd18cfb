//! Deadlines from timeouts, the one way every `_timeout` API computes them.
//!
//! `Instant::now() + timeout` panics when the sum does not fit
//! (`Duration::MAX`, or any timeout of a few hundred billion years); a
//! timeout that large means "wait as long as it takes", so it becomes no
//! deadline at all.

use std::time::{Duration, Instant};

/// `timeout` from now, or `None` (no limit) when the instant is too far
/// away to represent.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: read in a few nanoseconds (no
/// system call, no fine clock source), moving once per kernel tick (1 to
/// 10 ms).
pub(crate) fn coarse_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_is_no_deadline() {
        assert!(deadline(Duration::MAX).is_none());
        assert!(deadline(Duration::from_secs(1)).is_some());
    }
}
