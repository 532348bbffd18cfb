//! Arenas: many small shared objects in one `memfd` mapping (Python's
//! `multiprocessing.heap`), so that a program's `Value`s, small `Array`s and
//! `sync` primitives cost a few fds, not one or two each. The allocator and
//! its invariants are described in `shm/README.md`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
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

/// One object's bytes in an arena: `len` (a multiple of `GRAIN`) at
/// `offset`. Dropped in the process that allocated it, its bytes go back to
/// the free list — unless another process may hold it: it crossed to one
/// (serialized) or this process forked since it was allocated. Another
/// process may hold its lock then, with the lock on that thread's robust
/// list: reused, the space would be zeroed under that list.
pub(crate) struct Allocation {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    /// (allocator generation, arena index, forks of this process so far)
    /// where this process allocated it; `None` when it came from another
    /// process (never freed here).
    home: Option<(u64, u32, u64)>,
    /// Serialized at least once: another process may hold it.
    crossed: AtomicBool,
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
    /// arena it carries — the offset and the length.
    pub(crate) fn wire(&self) -> std::result::Result<(u64, u32, u64, u64), String> {
        let fd = crate::handle::outgoing_fd_once(self.arena.key, self.arena.fd.as_fd())?;
        self.crossed.store(true, Ordering::Relaxed);
        Ok((self.arena.key, fd, self.offset as u64, self.len as u64))
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let Some((generation, index, forks)) = self.home else {
            return;
        };
        if self.crossed.load(Ordering::Relaxed) || FORKS.load(Ordering::Acquire) != forks {
            // Another process may use it (and hold its lock): never reused.
            return;
        }
        if GENERATION.load(Ordering::Acquire) != generation {
            // Allocated by the process this one was forked from: its free
            // list is not ours (Python's heap behaves the same).
            return;
        }
        let state = state();
        if state.generation != generation {
            return;
        }
        let mut inner = lock(&state.inner);
        inner.free[self.len / GRAIN - 1].push((index, self.offset as u32));
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
}

static GENERATION: AtomicU64 = AtomicU64::new(1);
/// Forks this process made (a `pthread_atfork` parent handler counts them).
static FORKS: AtomicU64 = AtomicU64::new(0);
static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
static ATFORK: Once = Once::new();

extern "C" fn forked_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

extern "C" fn forked_parent() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This generation's allocator, made on first use.
fn state() -> &'static State {
    ATFORK.call_once(|| {
        // SAFETY: both handlers only bump an atomic, fit to run right after
        // fork (in the parent, in the child).
        unsafe { libc::pthread_atfork(None, Some(forked_parent), Some(forked_child)) };
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
    if let Some((index, offset)) = inner.free[class - 1].pop() {
        let arena = inner.arenas[index as usize].clone();
        drop(inner);
        let offset = offset as usize;
        // SAFETY: `offset..offset + len` lies in the arena (it was allocated
        // there) and is ours alone now: it left the free list under the
        // lock, and no handle of its previous object is left here.
        unsafe { std::ptr::write_bytes((arena.ptr + offset) as *mut u8, 0, len) };
        return Ok(Allocation {
            arena,
            offset,
            len,
            home: Some((state.generation, index, FORKS.load(Ordering::Acquire))),
            crossed: AtomicBool::new(false),
        });
    }
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
    Ok(Allocation {
        arena: inner.arenas[index].clone(),
        offset,
        len,
        home: Some((
            state.generation,
            index as u32,
            FORKS.load(Ordering::Acquire),
        )),
        crossed: AtomicBool::new(false),
    })
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
    Ok(Allocation {
        arena,
        offset,
        len,
        home: None,
        crossed: AtomicBool::new(true),
    })
}

/// Forks this process has made since its allocator started (test support).
#[cfg(test)]
pub(crate) fn forks() -> u64 {
    FORKS.load(Ordering::Acquire)
}
