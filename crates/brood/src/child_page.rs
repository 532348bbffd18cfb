//! The statics a forked child writes, together in one block that cannot
//! straddle a page boundary.
//!
//! After a fork every page the child writes is a copy-on-write fault (about
//! 2.5 µs on the VM the figures come from). Before the user's function, a
//! forked child writes its pid into the pid cache, its flags (`in_child`,
//! `forked`, `unit_without_frame`), its own identity into the children
//! table, its start method and, when a forkserver runs, the client's fd
//! slot. As separate statics these went wherever the linker put them: one
//! page in one build, two in another (forkprobe's `()` child took 11 faults
//! or 12 for the same code). Here they are fields of one static, aligned to
//! 1024 bytes and at most 1024 bytes long, so they always share one page.

use std::sync::Mutex;
use std::sync::atomic::AtomicI32;

/// Everything a forked child writes before the user's function runs.
#[repr(C, align(1024))]
pub(crate) struct ChildPage {
    /// `os::pid`'s cached pid.
    pub(crate) pid: crate::os::pid::Cache,
    /// What a child process knows about itself (`launch`).
    pub(crate) child: crate::launch::ChildFlags,
    /// The process-wide default start method (`start_method`).
    pub(crate) method: crate::start_method::Default,
    /// The forkserver client's socket, for a forked child to close
    /// without the client's lock (`launch::forkserver`).
    pub(crate) client_fd: crate::os::fd::ForkFdSlot,
    /// The pid of the last process that registered a child (`children`).
    pub(crate) registered_in: AtomicI32,
    /// The children table (`children`).
    pub(crate) table: Mutex<crate::children::Table>,
}

pub(crate) static PAGE: ChildPage = ChildPage {
    pid: crate::os::pid::Cache::new(),
    child: crate::launch::ChildFlags::new(),
    method: crate::start_method::Default::new(),
    client_fd: crate::os::fd::ForkFdSlot::new(),
    registered_in: AtomicI32::new(-1),
    table: Mutex::new(crate::children::Table::INIT),
};

// One page, whatever the address: 1024-aligned and no longer than 1024.
const _: () = assert!(std::mem::size_of::<ChildPage>() <= 1024);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_a_forked_child_writes_lies_on_one_page() {
        let page = |at: usize| at / 4096;
        let start = &PAGE as *const ChildPage as usize;
        let end = start + std::mem::size_of::<ChildPage>() - 1;
        assert_eq!(start % 1024, 0);
        assert_eq!(page(start), page(end));
        for field in [
            &PAGE.pid as *const _ as usize,
            &PAGE.child as *const _ as usize,
            &PAGE.method as *const _ as usize,
            &PAGE.client_fd as *const _ as usize,
            &PAGE.registered_in as *const _ as usize,
            &PAGE.table as *const _ as usize,
        ] {
            assert_eq!(page(field), page(start));
        }
    }
}
