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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_is_no_deadline() {
        assert!(deadline(Duration::MAX).is_none());
        assert!(deadline(Duration::from_secs(1)).is_some());
    }
}
