//! Arenas: many small shared objects in one `memfd` mapping (Python's
//! `multiprocessing.heap`), so that a program's `Value`s, small `Array`s and
//! `sync` primitives cost a few fds, not one or two each. The allocator and
//! its invariants are described in `shm/README.md`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};

use crate::error::{Error, Result};

/// Allocation unit and alignment: one cache line (two objects never share
/// one, so two locks never bounce one line between CPUs).
pub(crate) const GRAIN: usize = 64;
/// Blocks up to this size (state and tail) live in arenas; larger ones get
/// a segment of their own.
pub(crate) const MAX_OBJECT: usize = 4096;
const CLASSES: usize = MAX_OBJECT / GRAIN;
/// The first arena's size; each new one doubles, up to `MAX_ARENA`. The
/// memfd's pages are allocated as they are first touched.
const FIRST_ARENA: usize = 1 << 20;
const MAX_ARENA: usize = 64 << 20;
/// In a block's length on the wire: the serialization took a hold that its
/// one decoder takes over (a message, a child's arguments). Without it the
/// bytes may be decoded any number of times: the block's count is stuck
/// (never reused) and each decoder takes a hold of its own (a no-op).
const HANDED_OVER: u64 = 1 << 32;
/// A holders count that no longer moves (saturated): its block is never
/// reused.
const STUCK: u32 = u32::MAX;

/// The bytes at the head of an arena of `len` bytes that hold its blocks'
/// holders counts: one `u32` per grain (1/16 of the arena, its pages
/// touched only as blocks are).
fn table_len(len: usize) -> usize {
    (len / GRAIN * 4).next_multiple_of(GRAIN)
}

/// One arena: a `memfd`, mapped whole.
pub(crate) struct Arena {
    ptr: usize,
    len: usize,
    fd: OwnedFd,
    /// Names the arena across processes (random): a receiver that has it
    /// mapped already uses its mapping and ignores the fd.
    key: u64,
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; the last
        // allocation in it (each holds an `Arc<Arena>`) is gone.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

impl Arena {
    fn create(len: usize) -> Result<Arena> {
        // SAFETY: the name is a NUL-terminated literal; flags are plain ints.
        let raw = unsafe { libc::memfd_create(c"brood-arena".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::os_error("memfd_create", io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on an open fd touches no memory.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } == -1 {
            return Err(Error::os_error("ftruncate", io::Error::last_os_error()));
        }
        Arena::map(fd, random_key()?, len)
    }

    fn map(fd: OwnedFd, key: u64, len: usize) -> Result<Arena> {
        // SAFETY: a fresh shared mapping of an open fd; the kernel picks the
        // address, so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::os_error("mmap", io::Error::last_os_error()));
        }
        Ok(Arena {
            ptr: ptr as usize,
            len,
            fd,
            key,
        })
    }

    /// Maps an arena received from another process (its size from `fstat`).
    fn receive(fd: OwnedFd, key: u64) -> Result<Arena> {
        // SAFETY: an all-zero stat is valid; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is valid for writes; the fd is open.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == -1 {
            return Err(Error::os_error("fstat", io::Error::last_os_error()));
        }
        let len = usize::try_from(st.st_size).unwrap_or(0);
        if len < table_len(len) + GRAIN || len > MAX_ARENA {
            return Err(Error::invalid("a received arena has an impossible size"));
        }
        Arena::map(fd, key, len)
    }

    /// The holders count of the block at `offset` (a multiple of `GRAIN`
    /// past the table and inside the arena, checked by every caller).
    fn holders(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(
            offset.is_multiple_of(GRAIN) && offset >= table_len(self.len) && offset < self.len
        );
        // SAFETY: entry `offset / GRAIN` lies in the table at the head of
        // the mapping (`offset < len`, so `offset / GRAIN * 4 <
        // table_len(len)`), 4-aligned (the mapping is page-aligned), and
        // mapped as long as `self`; a `u32` atomic is valid for any bits,
        // and the table is only ever accessed atomically, by every process.
        unsafe { &*((self.ptr + offset / GRAIN * 4) as *const AtomicU32) }
    }
}

/// Takes one hold on a block (a count that is stuck stays stuck).
fn take_hold(count: &AtomicU32) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n != STUCK).then(|| n + 1)
    });
}

/// Gives one hold back: the holds left, or `None` when there was none to
/// give (a count that is stuck, or zero, never moves: that block is then
/// never reused, never corrupted).
fn give_hold(count: &AtomicU32) -> Option<u32> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n != STUCK && n != 0).then(|| n - 1)
        })
        .ok()
        .map(|before| before - 1)
}

fn random_key() -> Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(Error::os_error("getrandom", io::Error::last_os_error()));
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// A hold a serialization took on a block (see `handle`): given back if
/// the transfer fails before its bytes leave.
pub(crate) struct Pin {
    arena: Arc<Arena>,
    offset: usize,
}

impl Pin {
    /// Gives the hold back (the transfer's bytes were never sent).
    pub(crate) fn undo(self) {
        give_hold(self.arena.holders(self.offset));
    }
}

/// One hold on one object's bytes in an arena: `len` (a multiple of
/// `GRAIN`) at `offset`. A block's holders count, in the arena, counts the
/// holds every process has on it; its creator reuses the space once the
/// count is 0 and no child it forked since the hold was taken can still use
/// it (see `shm/README.md`, "Freeing").
pub(crate) struct Allocation {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    /// The allocator generation the hold belongs to: dropped in another
    /// one (a forked child's inherited copy, which took no hold), it gives
    /// nothing back.
    generation: u64,
    /// Forks of this process surely made before the hold was taken: the
    /// children of later ones may have inherited it.
    epoch: u64,
    /// The creator's own hold: the arena's index in its allocator.
    home: Option<u32>,
}

impl Allocation {
    pub(crate) fn ptr(&self) -> *mut u8 {
        (self.arena.ptr + self.offset) as *mut u8
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// What crosses to another process: the arena's key, (a duplicate of)
    /// its fd — recorded once per transfer however many objects of the
    /// arena it carries — the offset and the length. The transfer takes a
    /// hold on the block first (see `HANDED_OVER`).
    pub(crate) fn wire(&self) -> std::result::Result<(u64, u32, u64, u64), String> {
        let fd = crate::handle::outgoing_fd_once(self.arena.key, self.arena.fd.as_fd())?;
        let count = self.arena.holders(self.offset);
        let handed_over = crate::handle::decoded_at_most_once();
        if handed_over {
            take_hold(count);
            crate::handle::note_pin(Pin {
                arena: self.arena.clone(),
                offset: self.offset,
            });
        } else {
            // Bytes any number of processes may decode, for as long as
            // they exist: the block is never reused (nor watched).
            count.swap(STUCK, Ordering::AcqRel);
        }
        let len = self.len as u64 | if handed_over { HANDED_OVER } else { 0 };
        Ok((self.arena.key, fd, self.offset as u64, len))
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let Some(state) = current_state(self.generation) else {
            // Inherited through a fork: the parent's hold covers it.
            return;
        };
        let mut inner = lock(&state.inner);
        inner.give_back(&self.arena, self.offset, self.len, self.home, self.epoch);
    }
}

/// A hold given back while a child forked since it was taken may still
/// use the block.
struct Deferred {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    home: Option<u32>,
}

/// A lease: how many processes may use what one fork of this process
/// copied (the child and its forked descendants). In a shared anonymous
/// page that is never unmapped, so it lies at the same address in every
/// descendant; `up` is the lease of the process that forked (the chain of
/// leases a process holds, one per generation above it).
#[repr(C)]
struct Lease {
    count: AtomicU32,
    up: AtomicUsize,
}

/// The lease of a fork made when no page for leases could be mapped: held
/// for ever, so what existed at that fork is never reused.
static FOREVER: Lease = Lease {
    count: AtomicU32::new(1),
    up: AtomicUsize::new(0),
};

/// Takes (or gives back) one hold on every lease of the chain from `lease`
/// up.
fn walk_chain(lease: *const Lease, take: bool) {
    let mut at = lease;
    while !at.is_null() {
        // SAFETY: leases live in shared pages that are never unmapped (or
        // are `FOREVER`), and every lease of a chain this process walks is
        // held by it (or by the child it walks for), so never recycled.
        let lease = unsafe { &*at };
        if take {
            take_hold(&lease.count);
        } else {
            give_hold(&lease.count);
        }
        at = lease.up.load(Ordering::Acquire) as *const Lease;
    }
}

/// The allocator of one process (one generation: a forked child starts a
/// new one, never touching its parent's, whose mutex another thread of the
/// parent may have held at the fork).
struct State {
    generation: u64,
    inner: Mutex<Inner>,
    /// Every arena mapped in this generation, by key (dead entries are
    /// pruned when one is added).
    mapped: Mutex<HashMap<u64, Weak<Arena>>>,
}

#[derive(Default)]
struct Inner {
    arenas: Vec<Arc<Arena>>,
    /// The next free byte of the last arena.
    bump: usize,
    /// Per size class (`len / GRAIN - 1`): (arena index, offset) of freed
    /// allocations.
    free: Vec<Vec<(u32, u32)>>,
    /// Blocks this process created whose own hold it gave back while
    /// others still held them, (arena index, offset, len): free once their
    /// count is 0 (`sweep_watch`).
    watch: Vec<(u32, u32, u32)>,
    /// Holds given back while a child forked since may use the block, by
    /// (the hold's epoch, forks started when it was given back): given
    /// back for real once no lease of a fork in between is held.
    deferred: BTreeMap<(u64, u64), Vec<Deferred>>,
    /// This process's forks whose lease may be held: fork number → lease.
    leases: BTreeMap<u64, &'static Lease>,
    /// brood's forked children, by pid: their fork number.
    by_pid: HashMap<i32, u64>,
    /// Leases no one holds, to use again.
    spare_leases: Vec<&'static Lease>,
    /// The unused rest of the last page of leases.
    lease_page: (usize, usize),
    /// Allocations since the watch list was last swept.
    since_sweep: usize,
}

impl Inner {
    /// Gives back a hold taken at `epoch`, now or once no child forked
    /// since can use the block.
    fn give_back(
        &mut self,
        arena: &Arc<Arena>,
        offset: usize,
        len: usize,
        home: Option<u32>,
        epoch: u64,
    ) {
        let started = started_forks();
        if epoch < started && self.lease_held(epoch, started) {
            self.deferred
                .entry((epoch, started))
                .or_default()
                .push(Deferred {
                    arena: arena.clone(),
                    offset,
                    len,
                    home,
                });
            return;
        }
        self.release(arena, offset, len, home);
    }

    /// Whether a lease of one of forks `after + 1 ..= upto` is held.
    fn lease_held(&self, after: u64, upto: u64) -> bool {
        self.leases
            .range(after + 1..=upto)
            .any(|(_, lease)| lease.count.load(Ordering::Acquire) > 0)
    }

    /// Gives the hold back now; the creator's own hold frees the block (at
    /// once if it was the last, else once the others are gone).
    fn release(&mut self, arena: &Arena, offset: usize, len: usize, home: Option<u32>) {
        let left = give_hold(arena.holders(offset));
        let Some(index) = home else { return };
        match left {
            Some(0) => self.free[len / GRAIN - 1].push((index, offset as u32)),
            Some(_) => self.watch.push((index, offset as u32, len as u32)),
            None => {}
        }
    }

    /// Forgets the leases no one holds any more and gives back the
    /// deferred holds no held lease covers.
    fn sweep_deferred(&mut self) {
        let dead: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.count.load(Ordering::Acquire) == 0)
            .map(|(&k, _)| k)
            .collect();
        for k in dead {
            if let Some(lease) = self.leases.remove(&k) {
                self.spare_leases.push(lease);
            }
        }
        let ready: Vec<(u64, u64)> = self
            .deferred
            .keys()
            .filter(|&&(epoch, upto)| self.leases.range(epoch + 1..=upto).next().is_none())
            .copied()
            .collect();
        for key in ready {
            for d in self.deferred.remove(&key).unwrap_or_default() {
                self.release(&d.arena, d.offset, d.len, d.home);
            }
        }
    }

    /// Frees the watched blocks no one holds any more.
    fn sweep_watch(&mut self) {
        self.since_sweep = 0;
        let mut i = 0;
        while i < self.watch.len() {
            let (index, offset, len) = self.watch[i];
            let arena = &self.arenas[index as usize];
            if arena.holders(offset as usize).load(Ordering::Acquire) == 0 {
                self.watch.swap_remove(i);
                self.free[len as usize / GRAIN - 1].push((index, offset));
            } else {
                i += 1;
            }
        }
    }

    /// A lease no one holds: a spare one, or the next in a page of them.
    fn lease(&mut self) -> Option<&'static Lease> {
        if let Some(lease) = self.spare_leases.pop() {
            return Some(lease);
        }
        let size = std::mem::size_of::<Lease>();
        if self.lease_page.0 == 0 || self.lease_page.0 + size > self.lease_page.1 {
            const PAGE: usize = 4096;
            // SAFETY: a fresh shared anonymous mapping; the kernel picks
            // the address, so no existing memory is affected.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return None;
            }
            self.lease_page = (ptr as usize, ptr as usize + PAGE);
        }
        let at = self.lease_page.0;
        self.lease_page.0 += size;
        // SAFETY: `at` is an unused, aligned slot of a zero-filled shared
        // page that is never unmapped; an all-zero `Lease` is valid.
        Some(unsafe { &*(at as *const Lease) })
    }
}

/// What a fork changes in the child, together in one cache line of
/// `.data` (the generation starts at 1), so the child's handler writes one
/// page.
#[repr(C, align(64))]
struct Forks {
    /// The allocator generation (a forked child starts a new one).
    generation: AtomicU64,
    /// This process's forks: (forks started << 16) | forks in flight. A
    /// hold taken while forks are in flight counts them as possibly
    /// seeing it.
    word: AtomicU64,
    /// The lease this process holds (taken by its parent at the fork that
    /// made it; null in a process no fork made since arenas were used),
    /// the head of its chain.
    head: AtomicPtr<Lease>,
}

static FORKS: Forks = Forks {
    generation: AtomicU64::new(1),
    word: AtomicU64::new(0),
    head: AtomicPtr::new(std::ptr::null_mut()),
};
static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
static ATFORK: Once = Once::new();

thread_local! {
    /// The fork this thread is making: (its lease, its number).
    static PENDING: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
    /// The number of the last fork this thread made, until `forked` names
    /// its child.
    static LAST: Cell<u64> = const { Cell::new(0) };
}

/// Forks surely made before now (those in flight count as not yet made).
fn fork_epoch() -> u64 {
    let word = FORKS.word.load(Ordering::Acquire);
    (word >> 16) - (word & 0xffff)
}

/// Forks started so far.
fn started_forks() -> u64 {
    FORKS.word.load(Ordering::Acquire) >> 16
}

/// `pthread_atfork` prepare handler: this fork's lease, held by the child
/// (count 1), and one more hold on each lease this process holds (the
/// child holds what this process inherited too). O(generations above), not
/// O(objects).
extern "C" fn before_fork() {
    let state = state();
    let mut inner = lock(&state.inner);
    let number = started_forks() + 1;
    let head = FORKS.head.load(Ordering::Acquire);
    let lease = match inner.lease() {
        Some(lease) => {
            lease.up.store(head as usize, Ordering::Release);
            lease.count.store(1, Ordering::Release);
            walk_chain(head, true);
            PENDING.set((lease as *const Lease as usize, number));
            lease
        }
        None => {
            // No page for leases: what exists now is never reused, and the
            // chain above stays held for ever (leaked, never corrupted).
            walk_chain(head, true);
            PENDING.set((0, number));
            &FOREVER
        }
    };
    inner.leases.insert(number, lease);
    FORKS.word.fetch_add((1 << 16) | 1, Ordering::AcqRel);
}

/// `pthread_atfork` parent handler.
extern "C" fn after_fork_parent() {
    FORKS.word.fetch_sub(1, Ordering::AcqRel);
    LAST.set(PENDING.get().1);
}

/// `pthread_atfork` child handler: a new generation (a new allocator on
/// first use), no fork in flight, and the lease taken for it as its head.
extern "C" fn after_fork_child() {
    FORKS.generation.fetch_add(1, Ordering::AcqRel);
    let word = FORKS.word.load(Ordering::Relaxed);
    FORKS.word.store(word >> 16 << 16, Ordering::Release);
    FORKS
        .head
        .store(PENDING.get().0 as *mut Lease, Ordering::Release);
}

/// Names the child of the fork this thread just made (the fork launcher
/// calls it), so that its exit gives its lease back (`child_exited`). A
/// fork never named keeps its lease for ever.
pub(crate) fn forked(pid: i32) {
    // Read before it is cleared: in a process that never used arenas (no
    // atfork handlers, so nothing was pending) the thread-local is not
    // written at all. A write here, after the fork, is a copy-on-write
    // fault on its page for the parent of every child.
    if LAST.get() == 0 {
        return;
    }
    let number = LAST.replace(0);
    if let Some(state) = existing_state() {
        lock(&state.inner).by_pid.insert(pid, number);
    }
}

/// A child of this process has exited (it was reaped): the lease its fork
/// took is given back, and the holds it deferred that no other held lease
/// covers are given back now.
pub(crate) fn child_exited(pid: i32) {
    let Some(state) = existing_state() else {
        return;
    };
    let mut inner = lock(&state.inner);
    let Some(number) = inner.by_pid.remove(&pid) else {
        return;
    };
    let Some(&lease) = inner.leases.get(&number) else {
        return;
    };
    if std::ptr::eq(lease, &FOREVER) {
        return;
    }
    walk_chain(lease, false);
    if lease.count.load(Ordering::Acquire) == 0 {
        inner.sweep_deferred();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This generation's allocator, if it was made.
fn existing_state() -> Option<&'static State> {
    current_state(FORKS.generation.load(Ordering::Acquire))
}

/// Generation `generation`'s allocator, if it is this process's current
/// one and was made.
fn current_state(generation: u64) -> Option<&'static State> {
    if FORKS.generation.load(Ordering::Acquire) != generation {
        return None;
    }
    let current = STATE.load(Ordering::Acquire);
    if current.is_null() {
        return None;
    }
    // SAFETY: a non-null STATE was leaked by `Box::into_raw` in `state` and
    // is never freed.
    let state: &'static State = unsafe { &*current };
    (state.generation == generation).then_some(state)
}

/// This generation's allocator, made on first use.
fn state() -> &'static State {
    ATFORK.call_once(|| {
        // SAFETY: the handlers are fit to run around fork: the prepare one
        // runs before it, in the parent (locks, may allocate); the others
        // bump atomics and set a thread-local (the parent's may also set
        // a thread-local).
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            )
        };
    });
    loop {
        let generation = FORKS.generation.load(Ordering::Acquire);
        let current = STATE.load(Ordering::Acquire);
        // SAFETY: a non-null STATE was leaked by `Box::into_raw` below and
        // is never freed.
        if !current.is_null() && unsafe { (*current).generation } == generation {
            // SAFETY: as above.
            return unsafe { &*current };
        }
        let fresh = Box::into_raw(Box::new(State {
            generation,
            inner: Mutex::new(Inner {
                free: vec![Vec::new(); CLASSES],
                ..Inner::default()
            }),
            mapped: Mutex::new(HashMap::new()),
        }));
        if STATE
            .compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `fresh` was never shared.
            drop(unsafe { Box::from_raw(fresh) });
        }
        // On success the replaced state (the parent's, in a forked child)
        // is leaked on purpose: its mutexes may be held forever.
    }
}

fn remember(state: &State, arena: &Arc<Arena>) {
    let mut mapped = lock(&state.mapped);
    mapped.retain(|_, w| w.strong_count() > 0);
    mapped.insert(arena.key, Arc::downgrade(arena));
}

/// `size` bytes (rounded up to `GRAIN`; at most `MAX_OBJECT`), zeroed,
/// `GRAIN`-aligned, in one of this process's arenas.
pub(crate) fn alloc(size: usize) -> Result<Allocation> {
    debug_assert!(size <= MAX_OBJECT);
    let class = size.div_ceil(GRAIN).clamp(1, CLASSES);
    let len = class * GRAIN;
    let state = state();
    let mut inner = lock(&state.inner);
    inner.since_sweep += 1;
    if inner.free[class - 1].is_empty()
        && !inner.watch.is_empty()
        && inner.since_sweep > 64 + inner.watch.len()
    {
        // Amortized: a sweep costs the watch list's length, and comes at
        // most once per that many allocations.
        inner.sweep_watch();
    }
    let epoch = fork_epoch();
    if let Some((index, offset)) = inner.free[class - 1].pop() {
        let arena = inner.arenas[index as usize].clone();
        drop(inner);
        let offset = offset as usize;
        // SAFETY: `offset..offset + len` lies in the arena (it was allocated
        // there) and is ours alone now: its holders count is 0 (no process
        // holds it, none can take a hold without one), it left the free
        // list under the lock, and no handle of its previous object is left.
        unsafe { std::ptr::write_bytes((arena.ptr + offset) as *mut u8, 0, len) };
        arena.holders(offset).store(1, Ordering::Release);
        return Ok(Allocation {
            arena,
            offset,
            len,
            generation: state.generation,
            epoch,
            home: Some(index),
        });
    }
    let full = inner.arenas.last().is_none_or(|a| inner.bump + len > a.len);
    if full {
        let size = (FIRST_ARENA << inner.arenas.len().min(6)).min(MAX_ARENA);
        let arena = Arc::new(Arena::create(size)?);
        remember(state, &arena);
        inner.bump = table_len(arena.len);
        inner.arenas.push(arena);
    }
    let index = inner.arenas.len() - 1;
    let offset = inner.bump;
    inner.bump += len;
    // Fresh memfd pages are zero.
    let arena = inner.arenas[index].clone();
    arena.holders(offset).store(1, Ordering::Release);
    Ok(Allocation {
        arena,
        offset,
        len,
        generation: state.generation,
        epoch,
        home: Some(index as u32),
    })
}

/// An allocation that came from another process: its arena's mapping here
/// (mapped from fd `#fd` of the transfer being decoded if this process has
/// not mapped it yet), checked for bounds, with a hold of this process's
/// own (the transfer's, taken over, or a new one).
pub(crate) fn receive(key: u64, fd: u32, offset: u64, len: u64) -> Result<Allocation> {
    let state = state();
    let known = lock(&state.mapped).get(&key).and_then(Weak::upgrade);
    let arena = match known {
        Some(arena) => arena,
        None => {
            let fd = crate::handle::take_incoming_fd(fd)
                .ok_or_else(|| Error::invalid("a shared object's arena came without its fd"))?;
            let arena = Arc::new(Arena::receive(fd, key)?);
            remember(state, &arena);
            arena
        }
    };
    let handed_over = len & HANDED_OVER != 0;
    let (offset, len) = (offset as usize, (len & !HANDED_OVER) as usize);
    let fits = offset.checked_add(len).is_some_and(|end| end <= arena.len);
    if !fits
        || len == 0
        || len > MAX_OBJECT
        || offset < table_len(arena.len)
        || offset % GRAIN != 0
        || len % GRAIN != 0
    {
        return Err(Error::invalid("a shared object lies outside its arena"));
    }
    if !handed_over {
        take_hold(arena.holders(offset));
    }
    Ok(Allocation {
        arena,
        offset,
        len,
        generation: state.generation,
        epoch: fork_epoch(),
        home: None,
    })
}

/// Forks this process has started (test support).
#[cfg(test)]
pub(crate) fn forks() -> u64 {
    started_forks()
}
