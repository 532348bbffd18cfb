//! Leak checks: the only test in its binary, so no other test opens fds or
//! starts children while it counts.

mod common;

use brood::Process;
use common::{assert_no_zombie_children, open_fds};

#[test]
fn ten_thousand_cycles_leak_no_zombie_and_no_fd() {
    // Warm up once so lazily opened fds (if any) exist before counting.
    let mut p = Process::new(|| ());
    p.start().unwrap();
    p.join().unwrap();
    let before = open_fds();
    for i in 0..10_000u32 {
        let mut p = Process::new(move || i);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), i);
    }
    assert_eq!(open_fds(), before);
    assert_no_zombie_children();
}
