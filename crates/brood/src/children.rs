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
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, Once, OnceLock};

use crate::child_page::PAGE;
use crate::os::{self, Pid, PidFd};

/// What the table knows of one child.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its given name; `None`: the default for its identity.
    pub(crate) name: Option<String>,
    pub(crate) identity: Ident,
    pub(crate) daemon: bool,
    /// For a forkserver child (not ours to reap, so its pid may be reused
    /// once the server reaps it): a copy of its pidfd, so that exit never
    /// waits for a stranger that got the pid.
    pub(crate) served: Option<std::sync::Arc<OwnedFd>>,
}

impl Entry {
    /// The child's name.
    pub(crate) fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.identity.default_name())
    }
}

/// Who the current process is (Python's `current_process()`).
///
/// Names are kept only when given: a default name (`MainProcess`,
/// `Process-1:2`) is made from the identity when asked for, so starting a
/// child with one allocates nothing (each allocation and free is a heap
/// page written between two forks, so a copy-on-write fault).
#[derive(Debug, Clone)]
pub(crate) struct Me {
    /// The given name; `None`: the default for `identity`.
    pub(crate) name: Option<String>,
    pub(crate) identity: Ident,
    pub(crate) counter: u32,
    pub(crate) daemon: bool,
    /// The parent's pid and given name (`None`: the default for the
    /// parent's identity, which is ours less its last number).
    pub(crate) parent: Option<(Pid, Option<String>)>,
    /// The parent's start time (see `Spec::parent_start`).
    pub(crate) parent_start: Option<std::time::Duration>,
    /// This process's auth key; `None` in the main process until first
    /// asked for (then random, as Python's `os.urandom(32)`).
    pub(crate) authkey: Option<Key>,
}

impl Me {
    /// This process's name.
    pub(crate) fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.identity.default_name())
    }

    /// The parent's name, if this process has a parent.
    pub(crate) fn parent_name(&self) -> Option<String> {
        let (_, given) = self.parent.as_ref()?;
        Some(
            given
                .clone()
                .unwrap_or_else(|| self.identity.parent().default_name()),
        )
    }
}

/// How many numbers of an identity are kept inline.
const IDS: usize = 6;

/// A process's identity (Python's `_identity`): the main process's is
/// empty, its third child's `[3]`, that child's first child's `[3, 1]`.
/// Up to [`IDS`] deep it is kept inline, so making, copying and dropping
/// one touches no heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ident {
    Inline { len: u8, ids: [u32; IDS] },
    Heap(Vec<u32>),
}

impl Ident {
    /// The main process's (empty) identity.
    pub(crate) const fn main() -> Ident {
        Ident::Inline {
            len: 0,
            ids: [0; IDS],
        }
    }

    fn from_slice(ids: &[u32]) -> Ident {
        if ids.len() <= IDS {
            let mut inline = [0; IDS];
            inline[..ids.len()].copy_from_slice(ids);
            Ident::Inline {
                len: ids.len() as u8,
                ids: inline,
            }
        } else {
            Ident::Heap(ids.to_vec())
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            Ident::Inline { len, ids } => &ids[..usize::from(*len)],
            Ident::Heap(ids) => ids,
        }
    }

    /// The identity of this process's `n`th child.
    pub(crate) fn child(&self, n: u32) -> Ident {
        let me = self.as_slice();
        if me.len() < IDS {
            let mut ids = [0; IDS];
            ids[..me.len()].copy_from_slice(me);
            ids[me.len()] = n;
            Ident::Inline {
                len: me.len() as u8 + 1,
                ids,
            }
        } else {
            let mut ids = Vec::with_capacity(me.len() + 1);
            ids.extend_from_slice(me);
            ids.push(n);
            Ident::Heap(ids)
        }
    }

    /// The identity of this process's parent (the main process's own for
    /// the main process).
    pub(crate) fn parent(&self) -> Ident {
        let me = self.as_slice();
        Ident::from_slice(&me[..me.len().saturating_sub(1)])
    }

    /// The default name: `MainProcess` for the empty identity, else
    /// Python's `Process-1`, `Process-1:2`.
    pub(crate) fn default_name(&self) -> String {
        let ids = self.as_slice();
        if ids.is_empty() {
            return "MainProcess".into();
        }
        let mut name = String::with_capacity(8 + 11 * ids.len());
        name.push_str("Process");
        for (i, n) in ids.iter().enumerate() {
            use std::fmt::Write;
            let _ = write!(name, "{}{n}", if i == 0 { '-' } else { ':' });
        }
        name
    }
}

impl serde::Serialize for Ident {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Ident {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ident, D::Error> {
        Vec::<u32>::deserialize(d).map(|ids| Ident::from_slice(&ids))
    }
}

/// An auth key. The random one a process makes for itself lives in a
/// static, made once: copying it (into each `Process` and each child's
/// `Spec`) writes nothing, where a `Vec` would be an allocation and a free
/// each time.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    Random(&'static [u8; 32]),
    Given(Arc<[u8]>),
}

impl Key {
    /// This process's random key (32 bytes from the kernel, as Python's
    /// `os.urandom(32)`), made the first time it is asked for. A forked
    /// child inherits its parent's, which is also its key.
    pub(crate) fn random() -> Key {
        static RANDOM: OnceLock<[u8; 32]> = OnceLock::new();
        Key::Random(RANDOM.get_or_init(|| {
            let mut key = [0u8; 32];
            if let Err(e) = crate::connection::fill_random(&mut key) {
                // getrandom(2) fails only on kernels older than 3.17, which
                // brood does not run on (it needs pidfds); there is no key
                // to make up.
                panic!("brood: no random bytes for an auth key: {e}");
            }
            key
        }))
    }

    pub(crate) fn given(key: Vec<u8>) -> Key {
        Key::Given(key.into())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Key::Random(key) => &key[..],
            Key::Given(key) => key,
        }
    }
}

impl Default for Key {
    fn default() -> Key {
        Key::given(Vec::new())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(self.bytes()).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|key| Key::given(key.into_vec()))
    }
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

impl Table {
    /// An empty table (the static's start: `crate::child_page::PAGE`).
    pub(crate) const INIT: Table = Table {
        owner: 0,
        me: Me {
            name: None,
            identity: Ident::main(),
            counter: 0,
            daemon: false,
            parent: None,
            parent_start: None,
            authkey: None,
        },
        live: Live::new(),
        orphans: Vec::new(),
        reaper_wake: None,
    };
}

static ATEXIT: Once = Once::new();

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
    let mut table = PAGE
        .table
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
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
    pub(crate) fn become_child(&mut self, mut me: Me) {
        self.become_child_as(&mut me, os::pid::current());
        // What `me` holds now is the parent's: forgotten, as in `reset`.
        std::mem::forget(me);
    }

    /// [`become_child`](Table::become_child) for the process whose pid is
    /// `pid` (the fork launcher's child knows it: one `getpid` fewer). The
    /// table's old fields are swapped into `me`, for the caller to forget
    /// (not free, as in `reset`). Field by field, through a reference:
    /// moving the whole struct is a call to libc's `memcpy`, whose code a
    /// forked child would map with one more page fault.
    #[inline(always)]
    pub(crate) fn become_child_as(&mut self, me: &mut Me, pid: Pid) {
        self.reset(pid.as_raw());
        let old = &mut self.me;
        std::mem::swap(&mut old.name, &mut me.name);
        std::mem::swap(&mut old.identity, &mut me.identity);
        std::mem::swap(&mut old.counter, &mut me.counter);
        std::mem::swap(&mut old.daemon, &mut me.daemon);
        std::mem::swap(&mut old.parent, &mut me.parent);
        std::mem::swap(&mut old.parent_start, &mut me.parent_start);
        std::mem::swap(&mut old.authkey, &mut me.authkey);
    }

    /// The identity of the next child (Python's `Process-1`, `Process-1:2`
    /// for a grandchild, is its default name).
    pub(crate) fn next_identity(&mut self) -> Ident {
        self.me.counter += 1;
        self.me.identity.child(self.me.counter)
    }

    pub(crate) fn register(&mut self, pid: Pid, entry: Entry) {
        ATEXIT.call_once(|| {
            // `at_exit` never unwinds (it catches panics). Without room for
            // it, children are still waited for by `join` and `Drop`.
            let _ = os::sys::at_exit(at_exit);
        });
        // Written once per process, not per child: each write is a page
        // written between two forks.
        if PAGE.registered_in.load(Ordering::Relaxed) != self.owner {
            PAGE.registered_in.store(self.owner, Ordering::Relaxed);
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
/// Inlined: a forked child runs it, and a process that never registered
/// a child runs only this check (its own code window would be one more
/// page fault for every forked child).
#[inline(always)]
pub(crate) fn exit_cleanup_in(me: Pid) {
    if PAGE.registered_in.load(Ordering::Relaxed) != me.as_raw() {
        // This process never registered a child: nothing to wait for.
        return;
    }
    exit_cleanup_registered();
}

/// [`exit_cleanup_in`] in a process that registered children.
#[cold]
#[inline(never)]
fn exit_cleanup_registered() {
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
            name: Some(name.into()),
            identity: Ident::main(),
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
            assert_eq!(live.get(&pid(n)).unwrap().name(), format!("c{n}"));
        }
        assert!(live.get(&pid(6)).is_none());
        // An inline slot freed is taken by the next child.
        assert_eq!(live.remove(&pid(1)).unwrap().name(), "c1");
        assert!(live.remove(&pid(1)).is_none());
        live.insert(pid(7), entry("c7"));
        assert_eq!(live.spill.len(), 5 - INLINE);
        assert_eq!(pids(&live), [2, 3, 4, 5, 7]);
        // From the spill map too.
        assert_eq!(live.remove(&pid(4)).unwrap().name(), "c4");
        live.retain(|p, _| p.as_raw() % 2 == 1);
        assert_eq!(pids(&live), [3, 5, 7]);
        for n in [3, 5, 7] {
            assert!(live.remove(&pid(n)).is_some());
        }
        assert!(live.is_empty());
    }

    #[test]
    fn identities_stay_inline_six_deep_then_spill_and_name_themselves() {
        let main = Ident::main();
        assert_eq!(main.default_name(), "MainProcess");
        assert_eq!(main.parent(), main);
        let mut id = main.child(3);
        assert_eq!(id.default_name(), "Process-3");
        assert_eq!(id.parent().default_name(), "MainProcess");
        for n in 1..=5 {
            id = id.child(n);
        }
        assert!(matches!(id, Ident::Inline { len: 6, .. }));
        assert_eq!(id.default_name(), "Process-3:1:2:3:4:5");
        let deep = id.child(9);
        assert!(matches!(deep, Ident::Heap(_)));
        assert_eq!(deep.as_slice(), [3, 1, 2, 3, 4, 5, 9]);
        assert_eq!(deep.default_name(), "Process-3:1:2:3:4:5:9");
        assert_eq!(deep.parent(), id);
        // On the wire, an identity is its numbers, inline or not.
        for id in [main, id, deep] {
            let bytes = rmp_serde::to_vec(&id).unwrap();
            assert_eq!(bytes, rmp_serde::to_vec(id.as_slice()).unwrap());
            assert_eq!(rmp_serde::from_slice::<Ident>(&bytes).unwrap(), id);
        }
    }

    #[test]
    fn the_random_key_is_made_once_and_keys_cross_as_bytes() {
        let a = Key::random();
        let b = Key::random();
        assert_eq!(a.bytes().len(), 32);
        assert!(std::ptr::eq(a.bytes(), b.bytes()));
        for key in [a, Key::given(b"given".to_vec()), Key::default()] {
            let bytes = rmp_serde::to_vec(&key).unwrap();
            let back: Key = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back.bytes(), key.bytes());
        }
    }

    #[test]
    fn default_names_come_from_identities() {
        let me = Me {
            name: None,
            identity: Ident::main().child(2).child(7),
            counter: 0,
            daemon: false,
            parent: Some((pid(1), None)),
            parent_start: None,
            authkey: None,
        };
        assert_eq!(me.name(), "Process-2:7");
        assert_eq!(me.parent_name().as_deref(), Some("Process-2"));
        let named = Me {
            name: Some("kid".into()),
            parent: Some((pid(1), Some("mum".into()))),
            ..me
        };
        assert_eq!(named.name(), "kid");
        assert_eq!(named.parent_name().as_deref(), Some("mum"));
        let orphan = Me {
            parent: None,
            ..named
        };
        assert_eq!(orphan.parent_name(), None);
    }
}
