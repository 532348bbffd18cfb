//! Arenas: many small shared objects in one `memfd` mapping (Python's
//! `multiprocessing.heap`), so that a program's `Value`s, small `Array`s and
//! `sync` primitives cost a few fds, not one or two each. The allocator and
//! its invariants are described in `shm/README.md`.

use std::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
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
        if len == 0 || len > MAX_ARENA.max(MAX_OBJECT) {
            return Err(Error::invalid("a received arena has an impossible size"));
        }
        Arena::map(fd, key, len)
    }
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

/// Where, in every arena allocation, its cross-process reference count
/// lives: bytes 4..8, right after the block's magic word (`memory.rs`'s
/// `Slot` keeps the field there). An `AtomicU32` in shared memory.
pub(crate) const REFS_AT: usize = 4;

/// One object's bytes in an arena: `len` (a multiple of `GRAIN`) at
/// `offset`. Each `Allocation` is one reference of this process, counted in
/// the block's shared reference count (see `shm/README.md`): +1 when it is
/// made, when a handle to it is serialized for another process, and for a
/// forked child (every live `Allocation` of the parent, at the fork); -1
/// when it is dropped (or, for a child that ends in `child_main`, when the
/// process ends). The space is reused once the count is 0, by the process
/// that allocated it (its allocator's generation).
pub(crate) struct Allocation {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    /// (allocator generation, arena index) where this process allocated
    /// it; `None` when it came from another process or was inherited at a
    /// fork (only its allocator reuses it).
    home: Option<(u64, u32)>,
}

impl Allocation {
    pub(crate) fn ptr(&self) -> *mut u8 {
        (self.arena.ptr + self.offset) as *mut u8
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The block's shared reference count.
    fn refs(&self) -> &AtomicU32 {
        refs_at(self.arena.ptr + self.offset)
    }

    /// What crosses to another process: the arena's key, (a duplicate of)
    /// its fd — recorded once per transfer however many objects of the
    /// arena it carries — the offset and the length. Counts one reference
    /// for the receiver (a handle never received keeps it: the block is
    /// then never reused, see `shm/README.md`).
    pub(crate) fn wire(&self) -> std::result::Result<(u64, u32, u64, u64), String> {
        let fd = crate::handle::outgoing_fd_once(self.arena.key, self.arena.fd.as_fd())?;
        self.refs().fetch_add(1, Ordering::AcqRel);
        Ok((self.arena.key, fd, self.offset as u64, self.len as u64))
    }

    /// Never let this process's reference go, not even when the process
    /// ends: the block stays as it is for good (a robust list of a thread
    /// of this process points into it; see `SharedState::must_stay_mapped`).
    /// Called on an allocation whose last handle is leaked.
    pub(crate) fn pin_forever(&self) {
        with_registry(|r| forget_ref(r, self.refs_addr()));
    }

    fn refs_addr(&self) -> usize {
        self.arena.ptr + self.offset + REFS_AT
    }
}

/// The reference count word at `block + REFS_AT`.
fn refs_at(block: usize) -> &'static AtomicU32 {
    // SAFETY: `block` is the start of an allocation in a mapped arena
    // (GRAIN-aligned, at least GRAIN bytes), so `block + REFS_AT` is a
    // 4-aligned word inside it, shared by every process only through this
    // atomic. The reference is used only while the caller holds the
    // allocation (so the arena stays mapped); `'static` only spares a
    // lifetime parameter on this private helper.
    unsafe { AtomicU32::from_ptr((block + REFS_AT) as *mut u32) }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let addr = self.refs_addr();
        if !with_registry(|r| forget_ref(r, addr)) {
            // Pinned for good (`pin_forever`), or given up already as this
            // process ends (`release_all`).
            return;
        }
        let before = self.refs().fetch_sub(1, Ordering::AcqRel);
        let Some((generation, index)) = self.home else {
            return;
        };
        if GENERATION.load(Ordering::Acquire) != generation {
            return;
        }
        let state = state();
        if state.generation != generation {
            return;
        }
        let class = self.len / GRAIN - 1;
        let mut inner = lock(&state.inner);
        if before == 1 {
            // The last reference anywhere: reusable now.
            inner.free[class].push((index, self.offset as u32));
        } else {
            // Another process still holds it: looked at again when this
            // class runs out of free space.
            inner.lent[class].push_back((index, self.offset as u32));
        }
    }
}

/// The live `Allocation`s of this process: the address of each one's count
/// word, and how many `Allocation`s of this process name it. A forked child
/// inherits this table with the objects it lists; the fork counts one more
/// reference for each (`count_for_fork`), under this lock, held across the
/// fork so that no allocation is made or dropped in between.
struct Registry {
    locked: AtomicBool,
    refs: UnsafeCell<Option<Table>>,
}

/// Addresses of count words (distinct multiples of `GRAIN` plus 4): a
/// multiplicative hash of the grain number spreads them well, at a
/// fraction of SipHash's cost (the table is touched on every allocation
/// and drop).
type Table = HashMap<usize, u32, std::hash::BuildHasherDefault<AddrHasher>>;

#[derive(Default)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = ((n as u64) >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

// SAFETY: `refs` is only touched by the thread holding `locked`.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    locked: AtomicBool::new(false),
    refs: UnsafeCell::new(None),
};

fn registry_lock() {
    while REGISTRY
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn registry_unlock() {
    REGISTRY.locked.store(false, Ordering::Release);
}

/// Runs `f` on the registry, under its lock.
fn with_registry<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    registry_lock();
    // SAFETY: the lock is held, so no other thread touches `refs`; the
    // reference does not outlive this call.
    let refs = unsafe { &mut *REGISTRY.refs.get() };
    let out = f(refs.get_or_insert_with(Table::default));
    registry_unlock();
    out
}

fn note_ref(r: &mut Table, addr: usize) {
    *r.entry(addr).or_insert(0) += 1;
}

/// Drops one reference of this process from the table; `false` if it was
/// not there (pinned for good).
fn forget_ref(r: &mut Table, addr: usize) -> bool {
    match r.get_mut(&addr) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            r.remove(&addr);
            true
        }
        None => false,
    }
}

/// `pthread_atfork` prepare handler: takes the registry's lock (released in
/// both processes after the fork) and counts one reference more for each
/// live `Allocation` (the child's copy of it).
extern "C" fn count_for_fork() {
    registry_lock();
    // SAFETY: the lock is held (until the parent and child handlers).
    if let Some(refs) = unsafe { &*REGISTRY.refs.get() } {
        for (&addr, &n) in refs {
            refs_at(addr - REFS_AT).fetch_add(n, Ordering::AcqRel);
        }
    }
}

/// Gives up every reference this process holds, as it ends: called by a
/// brood child in `child_main` once its function has returned and it has
/// one thread left (a thread still running could still use an object). A
/// process that ends otherwise (killed, or with threads) keeps its
/// references: their blocks are never reused (see `shm/README.md`).
pub(crate) fn release_all() {
    if !ATFORK.is_completed() {
        // No arena was ever used here or before the fork: nothing to do
        // (and no page written).
        return;
    }
    // Emptied: a drop after this finds nothing to give up.
    with_registry(|r| {
        for (&addr, &n) in r.iter() {
            refs_at(addr - REFS_AT).fetch_sub(n, Ordering::AcqRel);
        }
        r.clear();
    });
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
    /// Per size class: allocations this process dropped while another
    /// process still held them; reused once their count is 0.
    lent: Vec<VecDeque<(u32, u32)>>,
}

/// How many lent blocks an allocation looks at, at most, before it takes
/// fresh space (the queue rotates, so every block is looked at in turn).
const LENT_LOOKS: usize = 16;

static GENERATION: AtomicU64 = AtomicU64::new(1);
/// Forks this process made (a `pthread_atfork` parent handler counts them).
static FORKS: AtomicU64 = AtomicU64::new(0);
static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
static ATFORK: Once = Once::new();

extern "C" fn forked_child() {
    registry_unlock();
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

extern "C" fn forked_parent() {
    registry_unlock();
    FORKS.fetch_add(1, Ordering::AcqRel);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This generation's allocator, made on first use.
fn state() -> &'static State {
    ATFORK.call_once(|| {
        // SAFETY: the handlers take and release a spin lock, read a table
        // nobody changes under that lock and bump atomics (in shared
        // memory and here): fit to run around fork.
        unsafe {
            libc::pthread_atfork(
                Some(count_for_fork),
                Some(forked_parent),
                Some(forked_child),
            )
        };
    });
    loop {
        let generation = GENERATION.load(Ordering::Acquire);
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
                lent: vec![VecDeque::new(); CLASSES],
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

/// A lent block of this class that no process holds any more, if one of
/// the first `LENT_LOOKS` in the queue is.
fn reclaim(inner: &mut Inner, class: usize) -> Option<(u32, u32)> {
    for _ in 0..LENT_LOOKS.min(inner.lent[class].len()) {
        let (index, offset) = inner.lent[class].pop_front()?;
        let block = inner.arenas[index as usize].ptr + offset as usize;
        if refs_at(block).load(Ordering::Acquire) == 0 {
            return Some((index, offset));
        }
        inner.lent[class].push_back((index, offset));
    }
    None
}

/// `size` bytes (rounded up to `GRAIN`; at most `MAX_OBJECT`), zeroed but
/// for its reference count (1: this process's), `GRAIN`-aligned, in one of
/// this process's arenas.
pub(crate) fn alloc(size: usize) -> Result<Allocation> {
    debug_assert!(size <= MAX_OBJECT);
    let class = size.div_ceil(GRAIN).clamp(1, CLASSES);
    let len = class * GRAIN;
    let state = state();
    let mut inner = lock(&state.inner);
    let reused = match inner.free[class - 1].pop() {
        Some(slot) => Some(slot),
        None => reclaim(&mut inner, class - 1),
    };
    let allocation = if let Some((index, offset)) = reused {
        let arena = inner.arenas[index as usize].clone();
        drop(inner);
        let offset = offset as usize;
        // SAFETY: `offset..offset + len` lies in the arena (it was allocated
        // there) and is ours alone now: it left the free list under the
        // lock, and its count is 0, so no process holds it.
        unsafe { std::ptr::write_bytes((arena.ptr + offset) as *mut u8, 0, len) };
        Allocation {
            arena,
            offset,
            len,
            home: Some((state.generation, index)),
        }
    } else {
        let full = inner.arenas.last().is_none_or(|a| inner.bump + len > a.len);
        if full {
            let size = (FIRST_ARENA << inner.arenas.len().min(6)).min(MAX_ARENA);
            let arena = Arc::new(Arena::create(size)?);
            remember(state, &arena);
            inner.arenas.push(arena);
            inner.bump = 0;
        }
        let index = inner.arenas.len() - 1;
        let offset = inner.bump;
        inner.bump += len;
        // Fresh memfd pages are zero.
        Allocation {
            arena: inner.arenas[index].clone(),
            offset,
            len,
            home: Some((state.generation, index as u32)),
        }
    };
    allocation.refs().store(1, Ordering::Release);
    with_registry(|r| note_ref(r, allocation.refs_addr()));
    Ok(allocation)
}

/// An allocation that came from another process: its arena's mapping here
/// (mapped from fd `#fd` of the transfer being decoded if this process has
/// not mapped it yet), checked for bounds.
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
    let (offset, len) = (offset as usize, len as usize);
    let fits = offset.checked_add(len).is_some_and(|end| end <= arena.len);
    if !fits || len == 0 || len > MAX_OBJECT || offset % GRAIN != 0 || len % GRAIN != 0 {
        return Err(Error::invalid("a shared object lies outside its arena"));
    }
    if refs_at(arena.ptr + offset).load(Ordering::Acquire) == 0 {
        // Its sender counted a reference for us before it sent the handle:
        // a zero count means no process holds it (a forged or stale handle).
        return Err(Error::invalid(
            "a shared object arrived that no process holds any more",
        ));
    }
    let allocation = Allocation {
        arena,
        offset,
        len,
        home: None,
    };
    with_registry(|r| note_ref(r, allocation.refs_addr()));
    Ok(allocation)
}

/// Forks this process has made since its allocator started (test support).
#[cfg(test)]
pub(crate) fn forks() -> u64 {
    FORKS.load(Ordering::Acquire)
}
