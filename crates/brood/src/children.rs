//! The process-wide table of children: what `active_children` lists, what is
//! cleaned up at exit, and the orphan queue for handles dropped unjoined.
//!
//! Invariants:
//! - Every child brood started and has not reaped is in `live`, keyed by pid.
//!   A pid in `live` cannot be reused by another process, because only brood
//!   reaps it (through the child's pidfd), so `kill(pid)` on it is safe.
//! - A handle dropped while its child runs moves its pidfd into `orphans`.
//!   The reaper thread (started on the first such drop, so programs that
//!   always join stay single-threaded) polls the orphans' pidfds and reaps
//!   each as it exits: no zombie outlives its exit by more than a poll wake-up.
//!   Orphans are also reaped opportunistically at every `start`.
//! - A forkserver child's handle dropped while it runs makes it an orphan
//!   too (the server reaps it): once its pidfd turns readable, its entry and
//!   that fd go, so nothing stays behind per child.
//! - `fork` takes the table's lock around the fork itself, so the child never
//!   inherits it locked; the child then clears its copy (those processes are
//!   its siblings, not its children).
//! - At normal exit (an `atexit` handler), daemon children get SIGTERM and are
//!   waited for, and non-daemon children are waited for, as Python does.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use crate::os::{self, Pid, PidFd};

/// What the table knows of one child.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// For a forkserver child (not ours to reap, so its pid may be reused
    /// once the server reaps it): a copy of its pidfd, so that exit never
    /// waits for a stranger that got the pid.
    pub(crate) served: Option<std::sync::Arc<OwnedFd>>,
}

/// Who the current process is (Python's `current_process()`).
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub(crate) name: Option<String>,
    pub(crate) identity: Vec<u32>,
    pub(crate) counter: u32,
    pub(crate) daemon: bool,
    pub(crate) parent: Option<(Pid, String)>,
    /// The parent's start time (see `Spec::parent_start`).
    pub(crate) parent_start: Option<std::time::Duration>,
    /// This process's auth key; `None` in the main process until first
    /// asked for (then random, as Python's `os.urandom(32)`).
    pub(crate) authkey: Option<Vec<u8>>,
}

pub(crate) struct Table {
    /// The process this table belongs to; a forked child that finds another
    /// pid here clears the inherited copy.
    owner: i32,
    pub(crate) me: Me,
    pub(crate) live: Live,
    orphans: Vec<Orphan>,
    /// Wakes the reaper thread when an orphan is added (an eventfd).
    reaper_wake: Option<OwnedFd>,
}

/// The live children, by pid. The first [`INLINE`] sit in the table itself
/// (in the static, beside its lock, on a page a start writes anyway): a
/// start+join then writes no heap node. A `BTreeMap`'s node is a heap page
/// the parent writes between two forks, so one more copy-on-write fault
/// per child. More children than that spill into the map.
pub(crate) struct Live {
    inline: [Option<(Pid, Entry)>; INLINE],
    spill: BTreeMap<Pid, Entry>,
}

const INLINE: usize = 2;

impl Live {
    const fn new() -> Live {
        Live {
            inline: [None, None],
            spill: BTreeMap::new(),
        }
    }

    fn insert(&mut self, pid: Pid, entry: Entry) {
        if let Some(slot) = self.inline.iter_mut().find(|s| s.is_none()) {
            *slot = Some((pid, entry));
        } else {
            self.spill.insert(pid, entry);
        }
    }

    fn remove(&mut self, pid: &Pid) -> Option<Entry> {
        for slot in &mut self.inline {
            if slot.as_ref().is_some_and(|(p, _)| p == pid) {
                return slot.take().map(|(_, e)| e);
            }
        }
        self.spill.remove(pid)
    }

    pub(crate) fn get(&self, pid: &Pid) -> Option<&Entry> {
        self.inline
            .iter()
            .flatten()
            .find(|(p, _)| p == pid)
            .map(|(_, e)| e)
            .or_else(|| self.spill.get(pid))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inline.iter().all(Option::is_none) && self.spill.is_empty()
    }

    /// Every live child, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Pid, &Entry)> {
        self.inline
            .iter()
            .flatten()
            .map(|(p, e)| (*p, e))
            .chain(self.spill.iter().map(|(p, e)| (*p, e)))
    }

    /// Keeps the children for which `keep` says true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Pid, &Entry) -> bool) {
        for slot in &mut self.inline {
            if slot.as_ref().is_some_and(|(p, e)| !keep(p, e)) {
                *slot = None;
            }
        }
        self.spill.retain(|p, e| keep(p, e));
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    owner: 0,
    me: Me {
        name: None,
        identity: Vec::new(),
        counter: 0,
        daemon: false,
        parent: None,
        parent_start: None,
        authkey: None,
    },
    live: Live::new(),
    orphans: Vec::new(),
    reaper_wake: None,
});

static ATEXIT: Once = Once::new();

/// The pid of the last process that registered a child (-1: none yet; a
/// non-zero start keeps it in `.data` beside `TABLE`). A forked child
/// inherits its parent's pid here, so [`exit_cleanup`] in a child that
/// started no children of its own returns without taking the table's lock
/// (no lock code to map: one page fault fewer per child).
static REGISTERED_IN: AtomicI32 = AtomicI32::new(-1);

/// A child whose handle was dropped while it ran.
enum Orphan {
    /// Ours to reap.
    Direct(PidFd),
    /// A forkserver child (the server reaps it): the fd its entry holds.
    Served(Pid, std::sync::Arc<OwnedFd>),
}

impl Orphan {
    fn pid(&self) -> Pid {
        match self {
            Orphan::Direct(fd) => fd.pid(),
            Orphan::Served(pid, _) => *pid,
        }
    }

    fn raw_fd(&self) -> i32 {
        match self {
            Orphan::Direct(fd) => fd.as_raw_fd(),
            Orphan::Served(_, fd) => fd.as_raw_fd(),
        }
    }

    /// Whether it is gone: reaped now (direct), or exited (served).
    fn gone(&self) -> bool {
        match self {
            // Exited and reaped, or no longer ours to reap (ECHILD).
            Orphan::Direct(fd) => !matches!(fd.try_reap(), Ok(None)),
            Orphan::Served(_, fd) => os::fd::ready_now(fd.as_fd()),
        }
    }
}

/// Locks the table, clearing it first if it was inherited through a fork
/// made outside brood (brood's own fork clears it in the child).
pub(crate) fn lock() -> MutexGuard<'static, Table> {
    let mut table = TABLE.lock().unwrap_or_else(|poison| poison.into_inner());
    let me = os::pid::current().as_raw();
    if table.owner != me {
        table.reset(me);
    }
    table
}

impl Table {
    #[inline]
    fn reset(&mut self, owner: i32) {
        self.owner = owner;
        // The parent's entries are not ours. They are forgotten, not freed:
        // freeing would write to heap pages the child shares copy-on-write
        // with its parent, a page fault each, for memory the child's short
        // life does not need back. The orphans' pidfds and the eventfd are
        // closed (they would keep the parent's children's fds open here).
        std::mem::forget(std::mem::replace(&mut self.live, Live::new()));
        // (Checked first: a forked child of a parent without orphans runs
        // no drain code, one code page, so one page fault, fewer.)
        if !self.orphans.is_empty() {
            self.orphans.clear();
        }
        self.reaper_wake = None;
    }

    /// Called in a freshly started child (holding the guard, for fork): it
    /// has no children yet, and becomes the process `me` describes (built
    /// from the launch's `Spec` by `launch`; the fork launcher builds it in
    /// the parent, so the child allocates nothing: every allocation there
    /// is a copy-on-write fault).
    #[inline]
    pub(crate) fn become_child(&mut self, me: Me) {
        self.become_child_as(me, os::pid::current());
    }

    /// [`become_child`](Table::become_child) for the process whose pid is
    /// `pid` (the fork launcher's child knows it: one `getpid` fewer).
    #[inline]
    pub(crate) fn become_child_as(&mut self, me: Me, pid: Pid) {
        self.reset(pid.as_raw());
        // Forgotten, not freed, as in `reset`.
        std::mem::forget(std::mem::replace(&mut self.me, me));
    }

    /// This process's name, as its children know their parent.
    pub(crate) fn my_name(&self) -> String {
        self.me.name.clone().unwrap_or_else(|| "MainProcess".into())
    }

    /// The identity and default name of the next child (Python's
    /// `Process-1`, `Process-1:2` for a grandchild).
    pub(crate) fn next_identity(&mut self) -> (Vec<u32>, String) {
        self.me.counter += 1;
        let mut identity = Vec::with_capacity(self.me.identity.len() + 1);
        identity.extend_from_slice(&self.me.identity);
        identity.push(self.me.counter);
        // One allocation for the name (each allocation and free is a heap
        // page written, so a copy-on-write fault after a fork).
        let mut name = String::with_capacity(8 + 11 * identity.len());
        name.push_str("Process");
        for (i, n) in identity.iter().enumerate() {
            use std::fmt::Write;
            let _ = write!(name, "{}{n}", if i == 0 { '-' } else { ':' });
        }
        (identity, name)
    }

    pub(crate) fn register(&mut self, pid: Pid, entry: Entry) {
        ATEXIT.call_once(|| {
            // `at_exit` never unwinds (it catches panics). Without room for
            // it, children are still waited for by `join` and `Drop`.
            let _ = os::sys::at_exit(at_exit);
        });
        // Written once per process, not per child: each write is a page
        // written between two forks.
        if REGISTERED_IN.load(Ordering::Relaxed) != self.owner {
            REGISTERED_IN.store(self.owner, Ordering::Relaxed);
        }
        self.live.insert(pid, entry);
    }

    pub(crate) fn forget(&mut self, pid: Pid) {
        self.live.remove(&pid);
    }

    /// Reaps the orphans that have exited, when no reaper thread owns them.
    pub(crate) fn reap_orphans(&mut self) {
        if self.reaper_wake.is_some() {
            return;
        }
        self.reap_exited_orphans();
    }

    fn reap_exited_orphans(&mut self) {
        let mut i = 0;
        while i < self.orphans.len() {
            if self.orphans[i].gone() {
                let gone = self.orphans.swap_remove(i);
                self.live.remove(&gone.pid());
            } else {
                i += 1;
            }
        }
    }
}

/// Whether brood's own reaper thread runs in this process (it holds no
/// lock while it sleeps, so it does not make a fork hazardous).
pub(crate) fn reaper_running() -> bool {
    lock().reaper_wake.is_some()
}

/// Hands a dropped, still-running child to the reaper.
pub(crate) fn adopt_orphan(pidfd: PidFd) {
    add_orphan(lock(), Orphan::Direct(pidfd));
}

/// Hands a dropped, still-running forkserver child to the reaper, which
/// forgets its entry (and closes the fd the entry holds) once it exits.
pub(crate) fn adopt_served(pid: Pid) {
    let table = lock();
    let Some(fd) = table.live.get(&pid).and_then(|e| e.served.clone()) else {
        return;
    };
    add_orphan(table, Orphan::Served(pid, fd));
}

fn add_orphan(mut table: MutexGuard<'static, Table>, orphan: Orphan) {
    // It may have exited between the caller's check and now.
    if orphan.gone() {
        table.forget(orphan.pid());
        return;
    }
    table.orphans.push(orphan);
    if table.reaper_wake.is_none() {
        match start_reaper() {
            Ok(wake) => table.reaper_wake = Some(wake),
            // No thread: the orphan is reaped at the next start or at exit.
            Err(_) => return,
        }
    }
    if let Some(wake) = &table.reaper_wake {
        let one = 1u64.to_ne_bytes();
        os::write_all_raw(wake, &one);
    }
}

fn start_reaper() -> std::io::Result<OwnedFd> {
    let wake = os::fd::eventfd()?;
    let wake_raw = wake.as_raw_fd();
    std::thread::Builder::new()
        .name("brood-reaper".into())
        .spawn(move || reaper_loop(wake_raw))?;
    Ok(wake)
}

/// The reaper thread: sleeps in `poll` on the orphans' pidfds and the wake
/// eventfd, and reaps each orphan as it exits. It holds the table's lock only
/// while it builds the poll set and while it reaps, never while it sleeps.
fn reaper_loop(wake: i32) {
    let owner = os::pid::current();
    loop {
        let mut fds = vec![os::fd::pollin(wake)];
        {
            let table = lock();
            if os::pid::current() != owner {
                return;
            }
            fds.extend(table.orphans.iter().map(|o| os::fd::pollin(o.raw_fd())));
        }
        // The orphan fds stay open while we sleep: only this thread removes
        // orphans once it runs (see `Table::reap_orphans`), and the wake fd
        // lives as long as the table holds it, which is as long as we run.
        if !matches!(os::fd::poll(&mut fds, None), Ok(n) if n > 0) {
            continue;
        }
        let mut table = lock();
        if fds[0].revents != 0
            && let Some(wake) = &table.reaper_wake
        {
            os::fd::drain_eventfd(wake);
        }
        table.reap_exited_orphans();
    }
}

/// Terminates daemon children and waits for all children, as Python's
/// `_exit_function` does. Runs at normal exit of the main process (atexit)
/// and at the end of every forked child's body.
pub(crate) fn exit_cleanup() {
    exit_cleanup_in(os::pid::current());
}

/// [`exit_cleanup`] in the process whose pid is `me` (the caller's, which
/// it knows already: one `getpid` fewer).
pub(crate) fn exit_cleanup_in(me: Pid) {
    if REGISTERED_IN.load(Ordering::Relaxed) != me.as_raw() {
        // This process never registered a child: nothing to wait for.
        return;
    }
    let table = lock();
    if table.live.is_empty() {
        return;
    }
    let live: Vec<(Pid, Entry)> = table.live.iter().map(|(p, e)| (p, e.clone())).collect();
    drop(table);
    let mut waits = Vec::new();
    for (pid, entry) in live {
        // A direct child's pid is still our unreaped child (see the module
        // invariants), so it cannot name another process; a forkserver
        // child is held by its own pidfd.
        let pidfd = match &entry.served {
            Some(fd) => fd.try_clone().map(|fd| PidFd::from_parts(fd, pid)),
            None => PidFd::open(pid),
        };
        let Ok(pidfd) = pidfd else {
            continue;
        };
        if entry.daemon {
            let _ = pidfd.send_signal(libc::SIGTERM);
        }
        waits.push(pidfd);
    }
    for pidfd in waits {
        let _ = pidfd.wait_timeout(None);
        let _ = pidfd.try_reap();
        lock().forget(pidfd.pid());
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(exit_cleanup);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            daemon: false,
            served: None,
        }
    }

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n).unwrap()
    }

    fn pids(live: &Live) -> Vec<i32> {
        let mut all: Vec<i32> = live.iter().map(|(p, _)| p.as_raw()).collect();
        all.sort();
        all
    }

    #[test]
    fn live_children_past_the_inline_slots_spill_and_come_back() {
        let mut live = Live::new();
        assert!(live.is_empty());
        for n in 1..=5 {
            live.insert(pid(n), entry(&format!("c{n}")));
        }
        assert_eq!(pids(&live), [1, 2, 3, 4, 5]);
        assert_eq!(live.spill.len(), 5 - INLINE);
        for n in 1..=5 {
            assert_eq!(live.get(&pid(n)).unwrap().name, format!("c{n}"));
        }
        assert!(live.get(&pid(6)).is_none());
        // An inline slot freed is taken by the next child.
        assert_eq!(live.remove(&pid(1)).unwrap().name, "c1");
        assert!(live.remove(&pid(1)).is_none());
        live.insert(pid(7), entry("c7"));
        assert_eq!(live.spill.len(), 5 - INLINE);
        assert_eq!(pids(&live), [2, 3, 4, 5, 7]);
        // From the spill map too.
        assert_eq!(live.remove(&pid(4)).unwrap().name, "c4");
        live.retain(|p, _| p.as_raw() % 2 == 1);
        assert_eq!(pids(&live), [3, 5, 7]);
        for n in [3, 5, 7] {
            assert!(live.remove(&pid(n)).is_some());
        }
        assert!(live.is_empty());
    }
}
