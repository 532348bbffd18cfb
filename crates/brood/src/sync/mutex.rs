//! The robust, process-shared mutex underneath `Lock`, `RLock`,
//! `Condition`, `Barrier` and `Value`.
//!
//! The memory is a glibc `pthread_mutex_t` (`PTHREAD_PROCESS_SHARED`,
//! `PTHREAD_MUTEX_ROBUST`, `ERRORCHECK`), followed by a poison flag, the
//! holder's extra recursion levels and whether it is an `RLock`, all in shared
//! memory. Its first word is the kernel's robust-futex word: 0 when free,
//! else the holder's TID, plus `FUTEX_WAITERS` (someone may sleep on it)
//! and `FUTEX_OWNER_DIED` (the kernel's mark for a holder that died).
//!
//! Two ways to run that protocol, which interoperate on the same memory:
//!
//! - **fast** (the default where glibc's layout checks out at run time):
//!   brood runs the kernel's robust-futex protocol inline — one CAS to
//!   lock, one to unlock — on the calling thread's robust list (glibc's
//!   list, whose head `get_robust_list` names, in glibc's format). The one
//!   mutex a thread holds alone stays *parked* in the head's
//!   `list_op_pending`, which the kernel handles at the thread's death as
//!   it does the list; a second one links the parked one onto the list
//!   first, as glibc would. Either way the kernel marks a dead holder's
//!   mutex `FUTEX_OWNER_DIED`;
//! - **pthread** (the fallback): `pthread_mutex_lock` and friends.
//!
//! Either way the next acquirer after a holder's death gets the lock and a
//! report; we then make the mutex consistent at once (so it stays usable)
//! and raise the poison flag, which every acquirer sees until someone
//! clears it — `std::sync::Mutex` poisoning, across processes. The protocol
//! and its invariants are in `sync/README.md`.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering, compiler_fence};
use std::time::Duration;

use super::futex::{self, Deadline};

// glibc's values (not all of them are in the libc crate for every target).
const PTHREAD_MUTEX_ERRORCHECK: libc::c_int = 2;
const PTHREAD_PROCESS_SHARED: libc::c_int = 1;
const PTHREAD_MUTEX_ROBUST: libc::c_int = 1;

// The kernel's robust-futex word (linux/futex.h).
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

// glibc's `struct __pthread_mutex_s` on 64-bit targets: `__lock` at 0,
// `__owner` at 8, `__list.__prev` at 24, `__list.__next` at 32 (the robust
// list links `__next` fields; the kernel finds the word at
// `&__next + futex_offset`). Checked at run time before use.
const OFF_OWNER: usize = 8;
const OFF_PREV: usize = 24;
const OFF_NEXT: usize = 32;
/// What glibc stores as the robust list head's `futex_offset`.
const FUTEX_OFFSET: isize = -(OFF_NEXT as isize);
/// `sizeof(struct robust_list_head)`: list, futex_offset, list_op_pending.
const HEAD_LEN: usize = 3 * std::mem::size_of::<usize>();

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() >= OFF_NEXT + 8);
// A node's `__prev` is the word before its `__next` (the code below uses
// `link - 8`).
const _: () = assert!(OFF_PREV + 8 == OFF_NEXT);
const _: () = assert!(std::mem::align_of::<libc::pthread_mutex_t>() >= 8);

/// How long an acquire may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum How {
    /// Until acquired.
    Block,
    /// Not at all.
    Try,
    /// Until the deadline.
    Until(Deadline),
}

impl How {
    /// Python's `acquire(block, timeout)`.
    #[inline]
    pub(crate) fn python(block: bool, timeout: Option<Duration>) -> How {
        match (block, timeout) {
            (false, _) => How::Try,
            (true, None) => How::Block,
            (true, Some(t)) => How::Until(Deadline::after(Some(t))),
        }
    }
}

/// What an acquire found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Held now; `poisoned`: a holder died (or panicked) since the state
    /// was last marked consistent.
    Acquired { poisoned: bool },
    /// Not acquired: busy and not allowed to wait (longer).
    Busy,
}

#[repr(C)]
pub(crate) struct RobustMutex {
    /// A glibc robust mutex; in fast mode only its word, its `__owner`
    /// (see `take_over`) and its list links are touched, as glibc would.
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    poisoned: AtomicU32,
    /// Recursion levels beyond the first (an `RLock` taken again by its
    /// holder); 0 whenever the mutex is free, so taking it leaves it alone.
    /// Written only by the holder (and by whoever takes over from a dead
    /// one).
    extra: AtomicU32,
    /// 1 for an `RLock`; set before the mutex is shared, never after.
    recursive: AtomicU32,
}

// SAFETY: the pthread mutex is made for concurrent use through a pointer
// (from any thread of any process mapping it), and brood's fast path uses
// its word only through atomics; the other fields are atomics.
unsafe impl Sync for RobustMutex {}

// ----- the calling thread -----

/// The calling thread, as the lock protocol needs it.
#[derive(Clone, Copy)]
struct Me {
    /// Its TID; 0: not looked up yet (in this process).
    tid: u32,
    /// Its robust list head (glibc's `struct robust_list_head`), or 0 when
    /// this thread takes the pthread path.
    head: usize,
}

const UNKNOWN: Me = Me { tid: 0, head: 0 };

thread_local! {
    static ME: Cell<Me> = const { Cell::new(UNKNOWN) };
    /// This thread's choice made with `force_pthread` (kept in a forked
    /// child, whose only thread is a copy of the forking one).
    static FORCED_HERE: Cell<Option<bool>> = const { Cell::new(None) };
}

static INIT: Once = Once::new();
/// glibc's layout checked out (set once, by `init_process`).
static LAYOUT_OK: AtomicBool = AtomicBool::new(false);
/// The pthread path is forced for every thread that made no choice of its
/// own (`BROOD_LOCK_FALLBACK` in the environment).
static FORCED: AtomicBool = AtomicBool::new(false);

/// `pthread_atfork` child handler: the forked child's only thread has a
/// new TID (and glibc gave it a fresh, empty robust list). A lock the
/// forking thread held parked is its parent's, not the child's: the child
/// forgets it, and clears the `list_op_pending` it inherited (glibc's fork
/// leaves that word alone, as glibc itself never forks in the middle of a
/// lock operation).
extern "C" fn forked_child() {
    // A const-initialised Cell without destructor: always accessible.
    let me = ME.get();
    if me.head != 0 {
        // SAFETY: `me.head` is the forking thread's list head, glibc's
        // `robust_head` in its descriptor, which the child's only thread
        // has at the same address (a copy of the forking thread).
        unsafe { set_pending(me.head, 0) };
    }
    ME.set(UNKNOWN);
}

fn init_process() {
    INIT.call_once(|| {
        // SAFETY: `forked_child` only writes a const-initialised thread
        // local, fit to run in a child right after fork.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        if std::env::var_os("BROOD_LOCK_FALLBACK").is_some_and(|v| !v.is_empty() && v != "0") {
            FORCED.store(true, Ordering::Relaxed);
        }
        LAYOUT_OK.store(glibc_layout_holds(FUTEX_OFFSET), Ordering::Relaxed);
    });
}

/// The calling thread's TID and list head, without a syscall after the
/// first call of each thread.
#[inline(always)]
fn me() -> Me {
    let me = ME.get();
    if me.tid != 0 {
        return me;
    }
    me_slow()
}

#[cold]
#[inline(never)]
fn me_slow() -> Me {
    init_process();
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let forced = FORCED_HERE
        .get()
        .unwrap_or_else(|| FORCED.load(Ordering::Relaxed));
    let head = if LAYOUT_OK.load(Ordering::Relaxed) && !forced {
        thread_head().unwrap_or(0)
    } else {
        0
    };
    let me = Me { tid, head };
    ME.set(me);
    me
}

/// Forces the pthread path for the calling thread (`on`) — as when glibc's
/// layout fails the check — or lets it take the fast path where it can; a
/// child forked from this thread inherits the choice. Test support: both
/// paths speak the same protocol on the same memory, so switching between
/// operations is safe.
pub(crate) fn force_pthread(on: bool) {
    // A lock held parked goes onto the list first: glibc's unlock, which
    // the pthread path uses, unlinks it from there.
    let me = ME.get();
    if me.head != 0 {
        unpark(me);
        // SAFETY: `me.head` is this thread's list head; a parked lock is on
        // the list now.
        unsafe { set_pending(me.head, 0) };
    }
    FORCED_HERE.set(Some(on));
    ME.set(UNKNOWN);
}

/// Whether the calling thread takes the fast path.
pub(crate) fn fast_path_active() -> bool {
    me().head != 0
}

/// The calling thread's robust list head, if it is glibc's (length and
/// futex offset as checked by `glibc_layout_holds`).
fn thread_head() -> Option<usize> {
    let mut head: usize = 0;
    let mut len: usize = 0;
    // SAFETY: pid 0 is the calling thread; both out-pointers are valid for
    // one word each.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut usize,
            &mut len as *mut usize,
        )
    };
    if rc != 0 || head == 0 || !head.is_multiple_of(8) || len != HEAD_LEN {
        return None;
    }
    // SAFETY: the kernel holds `head` as this thread's registered list
    // head, `len` (three words) long: glibc's `robust_head` in the thread's
    // descriptor, alive as long as the thread.
    let offset = unsafe { (*((head + 8) as *const AtomicUsize)).load(Ordering::Relaxed) };
    (offset as isize == FUTEX_OFFSET).then_some(head)
}

/// Whether glibc's robust list works the way brood's fast path assumes:
/// locks and unlocks two real robust mutexes with glibc and checks, at
/// each step, the list head, the links, the word and `__owner`.
fn glibc_layout_holds(expected_offset: isize) -> bool {
    if !cfg!(all(target_env = "gnu", target_pointer_width = "64")) {
        return false;
    }
    let Some(head) = thread_head() else {
        return false;
    };
    // SAFETY: `head` is this thread's robust list head (three words);
    // reads only.
    let (offset, pending) = unsafe { (word_at(head + 8), word_at(head + 16)) };
    if offset as isize != expected_offset || pending != 0 {
        return false;
    }
    let a = Probe::new();
    let b = Probe::new();
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as usize;
    // SAFETY: every address read is in `head`'s three words, in a probe
    // (boxed, alive until the end of this function), or the `__prev` word
    // of the node that glibc's list linked first (8 bytes before the
    // link, which glibc itself writes on every enqueue).
    unsafe {
        let first = word_at(head);
        let (la, lb) = (a.link(), b.link());
        if a.lock() != 0 {
            return false;
        }
        let mut ok = word_at(head) == la
            && word_at(la) == first
            && word_at(la - 8) == head
            && word_at((first & !1) - 8) == la
            && word_at(head + 16) == 0
            && (word_at(a.base()) as u32 as usize) == tid
            && (word_at(a.base() + OFF_OWNER) as u32 as usize) == tid;
        if b.lock() != 0 {
            a.unlock();
            return false;
        }
        ok = ok
            && word_at(head) == lb
            && word_at(lb) == la
            && word_at(lb - 8) == head
            && word_at(la - 8) == lb;
        // Out of order: `a` sits behind `b`.
        a.unlock();
        ok = ok
            && word_at(head) == lb
            && word_at(lb) == first
            && word_at(la) == 0
            && word_at(la - 8) == 0
            && word_at(a.base()) as u32 == 0
            && word_at(a.base() + OFF_OWNER) as u32 == 0;
        b.unlock();
        ok && word_at(head) == first && word_at(lb) == 0 && word_at(lb - 8) == 0
    }
}

/// Reads a word.
///
/// # Safety
///
/// `addr` is aligned and valid for reads of a word.
unsafe fn word_at(addr: usize) -> usize {
    // SAFETY: the caller's promise.
    unsafe { std::ptr::read_volatile(addr as *const usize) }
}

/// A private robust mutex for `glibc_layout_holds`.
struct Probe(Box<UnsafeCell<libc::pthread_mutex_t>>);

impl Probe {
    fn new() -> Option<Probe> {
        // SAFETY: an all-zero pthread_mutex_t is valid storage for init.
        let probe = Probe(Box::new(UnsafeCell::new(unsafe { std::mem::zeroed() })));
        // SAFETY: fresh, unshared memory.
        unsafe { init_pthread(probe.0.get()) }.ok()?;
        Some(probe)
    }
    fn base(&self) -> usize {
        self.0.get() as usize
    }
    fn link(&self) -> usize {
        self.base() + OFF_NEXT
    }
    fn lock(&self) -> libc::c_int {
        // SAFETY: an initialised mutex, alive as long as `self`.
        unsafe { libc::pthread_mutex_lock(self.0.get()) }
    }
    fn unlock(&self) {
        // SAFETY: as for `lock`; held by this thread.
        unsafe { libc::pthread_mutex_unlock(self.0.get()) };
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: initialised, and not held (every lock is unlocked).
        unsafe { libc::pthread_mutex_destroy(self.0.get()) };
    }
}

/// `pthread_mutex_init` as a robust, process-shared, error-checking mutex.
///
/// # Safety
///
/// `m` points to zeroed memory that no one else uses yet.
unsafe fn init_pthread(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: `attr` is initialised before use and destroyed after; the
    // caller hands us `m` exclusively.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        check(libc::pthread_mutexattr_init(&mut attr))?;
        let result = (|| {
            check(libc::pthread_mutexattr_settype(
                &mut attr,
                PTHREAD_MUTEX_ERRORCHECK,
            ))?;
            check(libc::pthread_mutexattr_setpshared(
                &mut attr,
                PTHREAD_PROCESS_SHARED,
            ))?;
            check(libc::pthread_mutexattr_setrobust(
                &mut attr,
                PTHREAD_MUTEX_ROBUST,
            ))?;
            check(libc::pthread_mutex_init(m, &attr))
        })();
        libc::pthread_mutexattr_destroy(&mut attr);
        result
    }
}

// ----- the robust list (glibc's format) -----

/// The link word at `addr`: a node's `__next` field, or the head's `list`.
/// A node's `__prev` is the word before its `__next`.
///
/// # Safety
///
/// `addr` is an aligned word that stays valid while the result is used:
/// the calling thread's list head or a link of a mutex on its list.
#[inline(always)]
unsafe fn link<'a>(addr: usize) -> &'a AtomicUsize {
    // SAFETY: the caller's promise; only the calling thread touches its
    // list (the kernel reads it once the thread is gone).
    unsafe { AtomicUsize::from_ptr(addr as *mut usize) }
}

/// The head's `list_op_pending`: outside a lock operation, 0 or the link
/// of the mutex this thread holds parked (see `sync/README.md`).
///
/// # Safety
///
/// `head` is the calling thread's list head.
#[inline(always)]
unsafe fn pending(head: usize) -> usize {
    // SAFETY: the caller's promise (the third word of the head).
    unsafe { link(head + 16) }.load(Ordering::Relaxed)
}

/// Sets the head's `list_op_pending`: the kernel checks that entry too
/// when the thread dies (after the list; an entry on both is handled
/// once).
///
/// # Safety
///
/// `head` is the calling thread's list head.
#[inline(always)]
unsafe fn set_pending(head: usize, entry: usize) {
    // SAFETY: the caller's promise (the third word of the head).
    unsafe { link(head + 16) }.store(entry, Ordering::Relaxed);
}

/// glibc's `ENQUEUE_MUTEX`: links `entry` first on the list at `head`.
///
/// # Safety
///
/// `head` is the calling thread's list head; `entry` the link of a mutex
/// the thread has just acquired, mapped while it holds it.
#[inline(always)]
unsafe fn enqueue(head: usize, entry: usize) {
    // SAFETY: the caller's promise; `first` is the head or a listed link,
    // each with its `__prev` word before it.
    unsafe {
        let first = link(head).load(Ordering::Relaxed);
        link((first & !1) - 8).store(entry, Ordering::Relaxed);
        link(entry).store(first, Ordering::Relaxed);
        link(entry - 8).store(head, Ordering::Relaxed);
        // The entry is complete before the kernel can reach it.
        compiler_fence(Ordering::SeqCst);
        link(head).store(entry, Ordering::Relaxed);
    }
}

/// glibc's `DEQUEUE_MUTEX`, less its last two stores: unlinks `entry` from
/// the calling thread's list. glibc then also zeroes the entry's own links;
/// no one reads them (the kernel only walks from the head, and the next
/// holder's enqueue writes both before it links the entry), so we save the
/// stores.
///
/// # Safety
///
/// `entry` is the link of a mutex on the calling thread's list.
#[inline(always)]
unsafe fn dequeue(entry: usize) {
    // SAFETY: the caller's promise; its neighbours are the head or listed
    // links of mutexes this thread holds.
    unsafe {
        let next = link(entry).load(Ordering::Relaxed);
        let prev = link(entry - 8).load(Ordering::Relaxed);
        link((next & !1) - 8).store(prev, Ordering::Relaxed);
        link(prev & !1).store(next, Ordering::Relaxed);
    }
}

/// Links the mutex this thread holds parked (if any) onto its list: a lock
/// operation on another mutex is about to use `list_op_pending`, which
/// still names the parked one (the caller overwrites it next).
#[cold]
#[inline(never)]
fn unpark(me: Me) {
    // SAFETY: `me.head` is this thread's list head (the fast path's).
    let parked = unsafe { pending(me.head) };
    if parked == 0 {
        return;
    }
    // SAFETY: `parked` is the link of a mutex this thread holds (outside
    // an operation, only a parked mutex's link is left in the slot), mapped
    // while held (`must_stay_mapped`); `list_op_pending` names it while it
    // is linked, so a death meanwhile is reported either way (the kernel
    // skips the pending entry on its walk of the list and handles it once,
    // after).
    unsafe {
        compiler_fence(Ordering::SeqCst);
        enqueue(me.head, parked);
        compiler_fence(Ordering::SeqCst);
    }
}

/// Whether `entry` is on the calling thread's list (a walk from the head:
/// the list holds the robust mutexes this thread holds linked, most
/// recently linked first).
///
/// # Safety
///
/// `head` is the calling thread's list head.
unsafe fn on_list(head: usize, entry: usize) -> bool {
    // SAFETY: the caller's promise; every node on the list is a robust
    // mutex this thread holds (mapped while held), linked by brood or
    // glibc in the same format; only this thread changes the list.
    unsafe {
        let mut node = link(head).load(Ordering::Relaxed) & !1;
        // A consistent list ends at its head; the bound only stops a walk
        // of a list someone else corrupted.
        for _ in 0..(1usize << 24) {
            if node == head || node == 0 {
                return false;
            }
            if node == entry {
                return true;
            }
            node = link(node).load(Ordering::Relaxed) & !1;
        }
        false
    }
}

// ----- the mutex -----

impl RobustMutex {
    /// Sets up a mutex in a block's fresh state (zeroed, unshared): the
    /// safe form of [`init`](RobustMutex::init) for `Block::new_fresh`.
    pub(crate) fn init_fresh(
        fresh: crate::shm::Fresh<'_, RobustMutex>,
        recursive: bool,
    ) -> io::Result<()> {
        // SAFETY: a `Fresh` is zeroed, aligned memory in a live mapping that
        // no one else knows yet, which is `init`'s contract.
        unsafe { RobustMutex::init(fresh.as_mut_ptr(), recursive) }
    }

    /// Sets up the mutex in place.
    ///
    /// # Safety
    ///
    /// `this` points to zeroed memory that no one else uses yet.
    pub(crate) unsafe fn init(this: *mut RobustMutex, recursive: bool) -> io::Result<()> {
        // SAFETY: the caller hands us `this` exclusively.
        unsafe {
            init_pthread(UnsafeCell::raw_get(&raw const (*this).mutex))?;
            (*this).recursive = AtomicU32::new(recursive as u32);
        }
        Ok(())
    }

    #[inline(always)]
    fn base(&self) -> usize {
        self.mutex.get() as usize
    }

    /// The futex word (glibc's `__lock`).
    #[inline(always)]
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the first field of the pthread mutex, an aligned u32 in
        // memory mapped while `self` is borrowed; glibc, too, changes it
        // only with atomic instructions.
        unsafe { AtomicU32::from_ptr(self.mutex.get().cast::<u32>()) }
    }

    /// The robust list link (glibc's `__list.__next`).
    #[inline(always)]
    fn entry(&self) -> usize {
        self.base() + OFF_NEXT
    }

    /// Acquires the mutex. Relocking a non-recursive mutex the calling
    /// thread holds panics when blocking (it would deadlock) and is `Busy`
    /// otherwise.
    #[inline]
    pub(crate) fn acquire(&self, how: How) -> Outcome {
        let me = me();
        if me.head == 0 {
            return self.acquire_pthread(how, me);
        }
        // SAFETY: `me.head` is this thread's list head (checked when it
        // was looked up).
        if unsafe { pending(me.head) } != 0 {
            return self.acquire_beside_parked(how, me);
        }
        self.acquire_fast(how, me)
    }

    /// The fast path with `list_op_pending` free (nothing parked): park
    /// this mutex there and CAS the word 0 → TID.
    #[inline(always)]
    fn acquire_fast(&self, how: How, me: Me) -> Outcome {
        let entry = self.entry();
        // SAFETY: `me.head` is this thread's list head (checked when it
        // was looked up); `entry` is this mutex's link, mapped while
        // `self` is borrowed and, once held, until released
        // (`must_stay_mapped`).
        unsafe { set_pending(me.head, entry) };
        compiler_fence(Ordering::SeqCst);
        if self
            .word()
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired(false);
        }
        self.acquire_contended(how, me)
    }

    /// An acquire while this thread holds a mutex parked: a relock of a
    /// held mutex leaves the list alone; otherwise the parked mutex goes
    /// onto the list, freeing `list_op_pending` for this one.
    #[cold]
    #[inline(never)]
    fn acquire_beside_parked(&self, how: How, me: Me) -> Outcome {
        if self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK == me.tid {
            return self.relock(how);
        }
        unpark(me);
        self.acquire_fast(how, me)
    }

    /// The fast path's slow part: glibc's robust lock loop.
    /// `list_op_pending` names this mutex on entry, and nothing is parked.
    #[cold]
    fn acquire_contended(&self, how: How, me: Me) -> Outcome {
        let word = self.word();
        let deadline = match how {
            How::Block => Deadline::after(None),
            How::Try => Deadline::after(Some(Duration::ZERO)),
            How::Until(d) => d,
        };
        let done = |outcome| {
            // SAFETY: as in `acquire`.
            unsafe { set_pending(me.head, 0) };
            outcome
        };
        // Set once this thread may have shared FUTEX_WAITERS with others:
        // it must then keep it set, or a wake-up is lost.
        let mut waiters = 0;
        let mut old = word.load(Ordering::Relaxed);
        loop {
            if old == 0 {
                match word.compare_exchange(
                    0,
                    me.tid | waiters,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return self.parked(me, false),
                    Err(now) => {
                        old = now;
                        continue;
                    }
                }
            }
            if old & FUTEX_OWNER_DIED != 0 {
                let new = me.tid | (old & FUTEX_WAITERS) | waiters;
                match word.compare_exchange(old, new, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return self.parked(me, true),
                    Err(now) => {
                        old = now;
                        continue;
                    }
                }
            }
            if old & FUTEX_TID_MASK == me.tid {
                // SAFETY: as in `acquire`.
                unsafe { set_pending(me.head, 0) };
                return self.relock(how);
            }
            if deadline.expired() {
                return done(Outcome::Busy);
            }
            if old & FUTEX_WAITERS == 0 {
                if let Err(now) = word.compare_exchange(
                    old,
                    old | FUTEX_WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    old = now;
                    continue;
                }
                old |= FUTEX_WAITERS;
            }
            waiters = FUTEX_WAITERS;
            futex::wait(word, old, deadline);
            old = word.load(Ordering::Relaxed);
        }
    }

    /// Just acquired on the fast path's slow part: it stays parked in
    /// `list_op_pending`, which names it already; take over from a dead
    /// holder (`died`).
    fn parked(&self, me: Me, died: bool) -> Outcome {
        if died {
            // A pthread-path holder that died before making it consistent
            // left glibc's `__owner` marked inconsistent; a pthread-path
            // unlock would then make it unrecoverable. We make it
            // consistent (what `pthread_mutex_consistent` stores).
            // SAFETY: glibc's `__owner`, an aligned i32 of the mutex,
            // written only by the holder: us.
            unsafe { AtomicI32::from_ptr((self.base() + OFF_OWNER) as *mut i32) }
                .store(me.tid as i32, Ordering::Relaxed);
        }
        self.acquired(died)
    }

    /// Held now (`died`: taken over from a dead holder).
    #[inline(always)]
    fn acquired(&self, died: bool) -> Outcome {
        if died {
            // The dead holder's levels died with it.
            self.extra.store(0, Ordering::Relaxed);
            self.poisoned.store(1, Ordering::SeqCst);
        }
        // Read under the lock, which orders it after the holder's store.
        Outcome::Acquired {
            poisoned: self.poisoned.load(Ordering::Relaxed) != 0,
        }
    }

    /// An acquire by the thread that holds it already.
    fn relock(&self, how: How) -> Outcome {
        if self.recursive.load(Ordering::Relaxed) != 0 {
            let extra = self.extra.load(Ordering::Relaxed);
            self.extra.store(extra.saturating_add(1), Ordering::Relaxed);
            return Outcome::Acquired {
                poisoned: self.poisoned.load(Ordering::Relaxed) != 0,
            };
        }
        match how {
            How::Block => panic!(
                "brood::sync: this thread already holds this Lock, and a Lock is not \
                 reentrant (acquiring it again would deadlock; use an RLock)"
            ),
            _ => Outcome::Busy,
        }
    }

    /// The pthread path (the fallback).
    fn acquire_pthread(&self, how: How, me: Me) -> Outcome {
        if self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK == me.tid {
            return self.relock(how);
        }
        let m = self.mutex.get();
        // SAFETY: `m` points to a mutex initialised by `init` (checked by the
        // block's magic word) in memory mapped while `self` is borrowed.
        let rc = unsafe {
            match how {
                How::Block => libc::pthread_mutex_lock(m),
                How::Try => libc::pthread_mutex_trylock(m),
                How::Until(deadline) => match deadline.remaining() {
                    None => libc::pthread_mutex_lock(m),
                    Some(left) if left.is_zero() => libc::pthread_mutex_trylock(m),
                    Some(left) => {
                        let at = realtime_after(left);
                        libc::pthread_mutex_timedlock(m, &at)
                    }
                },
            }
        };
        match rc {
            0 => self.acquired(false),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD hands it over).
                unsafe { libc::pthread_mutex_consistent(m) };
                self.acquired(true)
            }
            libc::EBUSY | libc::ETIMEDOUT | libc::EDEADLK => Outcome::Busy,
            other => panic!(
                "brood::sync: pthread_mutex_lock failed: {}",
                io::Error::from_raw_os_error(other)
            ),
        }
    }

    /// Releases one level; `EPERM` when the calling thread does not hold it.
    #[inline]
    pub(crate) fn release(&self) -> io::Result<()> {
        let me = me();
        if me.head != 0 {
            let entry = self.entry();
            // SAFETY: `me.head` is this thread's list head.
            if unsafe { pending(me.head) } == entry {
                // Parked, so held by this thread (no need to read the word,
                // whose CAS just below checks it anyway).
                let extra = self.extra.load(Ordering::Relaxed);
                if extra > 0 {
                    self.extra.store(extra - 1, Ordering::Relaxed);
                    return Ok(());
                }
                // Release the word, then clear the slot (a death in between
                // leaves a word whose owner is 0 or another thread: the
                // kernel at most wakes one waiter).
                self.release_word(me);
                compiler_fence(Ordering::SeqCst);
                // SAFETY: as above.
                unsafe { set_pending(me.head, 0) };
                return Ok(());
            }
        }
        self.release_unparked(me)
    }

    /// Releases a mutex that is not parked: held on the pthread path, or
    /// linked on the list, or parked once but its `list_op_pending` taken
    /// by a glibc robust mutex operation of this thread; or not held
    /// (`EPERM`).
    #[cold]
    #[inline(never)]
    fn release_unparked(&self, me: Me) -> io::Result<()> {
        if self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK != me.tid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let extra = self.extra.load(Ordering::Relaxed);
        if extra > 0 {
            self.extra.store(extra - 1, Ordering::Relaxed);
            return Ok(());
        }
        if me.head == 0 {
            // SAFETY: initialised mutex in mapped memory (see `acquire`).
            let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            return Ok(());
        }
        let entry = self.entry();
        // SAFETY: `me.head` is this thread's list head.
        if unsafe { on_list(me.head, entry) } {
            self.release_linked(me, entry);
        } else {
            // Parked once, and glibc cleared the slot since (the limit in
            // sync/README.md): nothing names it, nothing to unlink.
            self.release_word(me);
        }
        Ok(())
    }

    /// CAS the word TID → 0; if that fails, `FUTEX_WAITERS` is set: swap 0
    /// and wake one.
    #[inline(always)]
    fn release_word(&self, me: Me) {
        let word = self.word();
        if word
            .compare_exchange(me.tid, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
            && word.swap(0, Ordering::Release) & FUTEX_WAITERS != 0
        {
            futex::wake(word, 1);
        }
    }

    /// Releases a held mutex that is on this thread's list (glibc's
    /// unlock protocol, with `list_op_pending` naming it throughout).
    #[cold]
    #[inline(never)]
    fn release_linked(&self, me: Me, entry: usize) {
        unpark(me);
        // SAFETY: as in `acquire`; held by this thread and not parked, so
        // `entry` is on its list (whichever path linked it: both use
        // glibc's format).
        unsafe {
            set_pending(me.head, entry);
            compiler_fence(Ordering::SeqCst);
            dequeue(entry);
            compiler_fence(Ordering::SeqCst);
            self.release_word(me);
            compiler_fence(Ordering::SeqCst);
            set_pending(me.head, 0);
        }
    }

    /// Whether the calling thread holds the mutex.
    #[inline]
    pub(crate) fn is_mine(&self) -> bool {
        self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK == me().tid
    }

    /// Whether a thread of this process holds the mutex (then its memory
    /// must stay mapped: the thread's robust list points into it).
    pub(crate) fn held_in_this_process(&self) -> bool {
        let owner = self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK;
        if owner == 0 {
            return false;
        }
        if owner == me().tid {
            return true;
        }
        // SAFETY: signal 0 only checks that `owner` is a thread of this
        // process (thread group); nothing is sent.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), owner as libc::pid_t, 0) == 0 }
    }

    /// The calling thread's recursion depth (0 when it does not hold it).
    pub(crate) fn depth_if_mine(&self) -> u32 {
        if self.is_mine() {
            self.extra.load(Ordering::Relaxed).saturating_add(1)
        } else {
            0
        }
    }

    /// Who holds the mutex now, as (pid, tid, depth); `None` when free. A
    /// snapshot, for `locked()` and `Debug`: the word names the holder's
    /// thread; its process comes from `/proc/<tid>/status` (0 when that is
    /// unreadable: the holder just went, or lives in another pid
    /// namespace); `depth` is exact for the calling thread's own hold.
    pub(crate) fn holder(&self) -> Option<(i32, i32, u32)> {
        let tid = self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK;
        if tid == 0 {
            return None;
        }
        let depth = self.extra.load(Ordering::Relaxed).saturating_add(1);
        let pid = if tid == me().tid {
            crate::os::getpid().as_raw()
        } else {
            process_of(tid).unwrap_or(0)
        };
        Some((pid, tid as i32, depth))
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(1, Ordering::SeqCst);
    }

    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::SeqCst);
    }
}

/// The process (thread group) of thread `tid`, from `/proc/<tid>/status`.
fn process_of(tid: u32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `CLOCK_REALTIME` now plus `left`, for `pthread_mutex_timedlock`.
fn realtime_after(left: Duration) -> libc::timespec {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is valid for writes.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let secs = left.as_secs().min(i32::MAX as u64) as libc::time_t;
    let mut tv_sec = now.tv_sec.saturating_add(secs);
    let mut tv_nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
    if tv_nsec >= 1_000_000_000 {
        tv_nsec -= 1_000_000_000;
        tv_sec = tv_sec.saturating_add(1);
    }
    libc::timespec { tv_sec, tv_nsec }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_layout_is_recognised_and_a_wrong_one_refused() {
        assert!(glibc_layout_holds(FUTEX_OFFSET), "this glibc's layout");
        assert!(!glibc_layout_holds(FUTEX_OFFSET + 8));
        assert!(!glibc_layout_holds(0));
    }

    /// A fresh, private mutex (leaked: tests only).
    fn private_mutex() -> &'static RobustMutex {
        // SAFETY: all-zero is valid storage for a RobustMutex before init
        // (atomics and a pthread mutex's bytes).
        let m: &'static mut RobustMutex = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: zeroed, unshared.
        unsafe { RobustMutex::init(m, false) }.unwrap();
        m
    }

    /// This thread's (list head's first link, `list_op_pending`).
    fn list_state(me: Me) -> (usize, usize) {
        // SAFETY: the head is this thread's; reads only.
        unsafe { (word_at(me.head), word_at(me.head + 16)) }
    }

    #[test]
    fn one_lock_held_is_parked_and_a_second_links_it_like_glibc() {
        force_pthread(false);
        let me = me();
        assert_ne!(me.head, 0, "this thread takes the fast path");
        let (first, pending) = list_state(me);
        assert_eq!(pending, 0);
        let (a, b) = (private_mutex(), private_mutex());
        assert_eq!(a.acquire(How::Block), Outcome::Acquired { poisoned: false });
        assert_eq!(a.word().load(Ordering::Relaxed), me.tid);
        assert_eq!(
            list_state(me),
            (first, a.entry()),
            "parked: off the list, named by list_op_pending"
        );
        // A second lock links the first onto the list, then parks itself.
        assert_eq!(b.acquire(How::Block), Outcome::Acquired { poisoned: false });
        assert_eq!(list_state(me), (a.entry(), b.entry()));
        // SAFETY: `a` is linked first on this thread's list.
        unsafe {
            assert_eq!(word_at(a.entry()), first);
            assert_eq!(word_at(a.entry() - 8), me.head);
        }
        // glibc unlocks what brood linked, on the same list.
        // SAFETY: held by this thread.
        assert_eq!(unsafe { libc::pthread_mutex_unlock(a.mutex.get()) }, 0);
        assert_eq!(list_state(me).0, first);
        assert_eq!(a.word().load(Ordering::Relaxed), 0);
        // glibc's unlock cleared list_op_pending behind brood's back: the
        // parked `b` lost it (the limit in sync/README.md), but brood's
        // release, which trusts its own record, still leaves all in order.
        b.release().unwrap();
        assert_eq!(list_state(me), (first, 0));
        // And brood unlocks what glibc locked (linked, not parked).
        // SAFETY: initialised.
        assert_eq!(unsafe { libc::pthread_mutex_lock(a.mutex.get()) }, 0);
        assert_eq!(list_state(me), (a.entry(), 0));
        a.release().unwrap();
        assert_eq!(list_state(me), (first, 0));
        assert_eq!(a.word().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn locks_released_in_any_order_leave_the_list_as_it_was() {
        force_pthread(false);
        let me = me();
        let (first, _) = list_state(me);
        let ms: Vec<&RobustMutex> = (0..4).map(|_| private_mutex()).collect();
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            for m in &ms {
                assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            }
            // The last one taken is parked, the others linked.
            assert_eq!(list_state(me), (ms[2].entry(), ms[3].entry()));
            for i in order {
                ms[i].release().unwrap();
                assert_eq!(ms[i].word().load(Ordering::Relaxed), 0);
                assert!(ms[i].release().is_err(), "released once only");
            }
            assert_eq!(list_state(me), (first, 0));
        }
    }

    #[test]
    fn a_recursive_mutex_taken_again_while_parked_stays_parked() {
        force_pthread(false);
        let me = me();
        let (first, _) = list_state(me);
        // SAFETY: as in `private_mutex`.
        let r: &'static mut RobustMutex = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: zeroed, unshared.
        unsafe { RobustMutex::init(r, true) }.unwrap();
        let r: &'static RobustMutex = r;
        for _ in 0..3 {
            assert_eq!(r.acquire(How::Try), Outcome::Acquired { poisoned: false });
            assert_eq!(list_state(me), (first, r.entry()));
        }
        assert_eq!(r.depth_if_mine(), 3);
        for _ in 0..3 {
            r.release().unwrap();
        }
        assert_eq!(list_state(me), (first, 0));
        assert_eq!(r.word().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn switching_to_the_pthread_path_links_a_parked_lock_for_glibc() {
        force_pthread(false);
        let me = me();
        let (first, _) = list_state(me);
        let a = private_mutex();
        assert_eq!(a.acquire(How::Try), Outcome::Acquired { poisoned: false });
        force_pthread(true);
        assert!(!fast_path_active());
        assert_eq!(list_state(me), (a.entry(), 0), "linked, as glibc expects");
        a.release().unwrap();
        assert_eq!(list_state(me), (first, 0));
        force_pthread(false);
    }

    #[test]
    fn a_forked_child_forgets_its_parents_parked_lock() {
        init_process();
        force_pthread(false);
        let parent = me();
        let a = private_mutex();
        assert_eq!(a.acquire(How::Try), Outcome::Acquired { poisoned: false });
        assert_eq!(list_state(parent).1, a.entry());
        // SAFETY: the child only reads memory, runs atomics and raw
        // syscalls before `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let child = me();
            // SAFETY: the child's own head (the same address); a read.
            let pending = unsafe { word_at(child.head + 16) };
            let ok = child.head == parent.head
                && child.tid != parent.tid
                && pending == 0
                && !a.is_mine()
                && a.acquire(How::Try) == Outcome::Busy;
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our own child; `status` is valid for writes.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0, "the child's list_op_pending was clear");
        assert_eq!(list_state(parent).1, a.entry(), "still parked here");
        a.release().unwrap();
    }

    /// Forks a child that runs `steps` on `lock`'s mutex and exits without
    /// unlocking (its thread ends: the kernel walks its robust list), then
    /// returns the word the child left.
    fn child_dies_after(lock: &crate::sync::Lock, steps: fn(&RobustMutex, Me)) -> u32 {
        force_pthread(false);
        assert!(fast_path_active());
        // SAFETY: the child only runs atomics and raw syscalls (no
        // allocation, no lock) before `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let me = me();
            if me.head != 0 {
                steps(lock.mutex(), me);
            }
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if me.head != 0 { 0 } else { 3 }) };
        }
        let mut status = 0;
        // SAFETY: our own child; `status` is valid for writes.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0, "the child took the fast path");
        lock.mutex().word().load(Ordering::SeqCst)
    }

    #[test]
    fn a_holder_that_dies_with_its_lock_parked_is_reported() {
        let lock = crate::sync::Lock::new().unwrap();
        let word = child_dies_after(&lock, |m, me| {
            assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            // SAFETY: the child's own head; a read.
            assert_eq!(unsafe { word_at(me.head + 16) }, m.entry());
            // ...and dies: only list_op_pending names it.
        });
        assert_eq!(word, FUTEX_OWNER_DIED, "the kernel marked it");
        let m = lock.mutex();
        assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: true });
        m.release().unwrap();
        m.clear_poison();
        assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
        m.release().unwrap();
    }

    #[test]
    fn a_holder_that_dies_between_parking_and_its_cas_leaves_it_free() {
        let lock = crate::sync::Lock::new().unwrap();
        let word = child_dies_after(&lock, |m, me| {
            // SAFETY: the child's own head and the lock's link (mapped).
            unsafe { set_pending(me.head, m.entry()) };
            // ...and dies before the CAS: the word's owner is 0, so the
            // kernel only wakes a waiter, if any.
        });
        assert_eq!(word, 0);
        let m = lock.mutex();
        assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
        m.release().unwrap();
    }

    #[test]
    fn a_holder_that_dies_after_releasing_a_parked_lock_leaves_it_free() {
        let lock = crate::sync::Lock::new().unwrap();
        let word = child_dies_after(&lock, |m, me| {
            assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            m.release_word(me);
            // ...and dies before clearing list_op_pending, which still
            // names the now free word: the kernel leaves it alone.
        });
        assert_eq!(word, 0);
        let m = lock.mutex();
        assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
        m.release().unwrap();
    }

    #[test]
    fn a_holder_that_dies_while_unparking_has_both_locks_reported() {
        let locks = [
            crate::sync::Lock::new().unwrap(),
            crate::sync::Lock::new().unwrap(),
        ];
        static SECOND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        SECOND
            .set(locks[1].mutex() as *const RobustMutex as usize)
            .unwrap();
        child_dies_after(&locks[0], |m, me| {
            // SAFETY: the parent's lock, mapped in the child (a copy).
            let second = unsafe { &*(*SECOND.get().unwrap() as *const RobustMutex) };
            assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            // The second acquire's first steps: link the parked lock, name
            // the second in list_op_pending, CAS its word...
            unpark(me);
            // SAFETY: the child's own head and the lock's link (mapped).
            unsafe { set_pending(me.head, second.entry()) };
            compiler_fence(Ordering::SeqCst);
            assert!(
                second
                    .word()
                    .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            );
            // ...and dies: the first is on the list, the second pending.
        });
        for l in &locks {
            assert_eq!(l.mutex().word().load(Ordering::SeqCst), FUTEX_OWNER_DIED);
        }
    }

    #[test]
    fn a_holder_that_dies_between_unlinking_and_unlocking_is_reported() {
        let lock = crate::sync::Lock::new().unwrap();
        let word = child_dies_after(&lock, |m, me| {
            assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            unpark(me);
            // SAFETY: held and linked: the link is on the child's list.
            unsafe {
                set_pending(me.head, m.entry());
                compiler_fence(Ordering::SeqCst);
                dequeue(m.entry());
            }
            // ...and dies before the word is cleared.
        });
        assert_eq!(word, FUTEX_OWNER_DIED);
        let m = lock.mutex();
        assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: true });
        m.release().unwrap();
    }

    #[test]
    fn a_holder_that_dies_after_unlocking_a_linked_lock_leaves_it_free() {
        let lock = crate::sync::Lock::new().unwrap();
        let word = child_dies_after(&lock, |m, me| {
            assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            unpark(me);
            // SAFETY: as above.
            unsafe {
                set_pending(me.head, m.entry());
                compiler_fence(Ordering::SeqCst);
                dequeue(m.entry());
            }
            m.word().store(0, Ordering::Release);
            // ...and dies before clearing list_op_pending: the word's owner
            // is 0, so the kernel leaves it alone.
        });
        assert_eq!(word, 0);
        let m = lock.mutex();
        assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
        m.release().unwrap();
    }

    #[test]
    fn a_holder_of_several_locks_that_dies_has_all_of_them_reported() {
        let locks: Vec<crate::sync::Lock> =
            (0..3).map(|_| crate::sync::Lock::new().unwrap()).collect();
        let pair = (locks[0].clone(), locks[1].clone());
        static PAIR: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
        PAIR.set((
            pair.0.mutex() as *const RobustMutex as usize,
            pair.1.mutex() as *const RobustMutex as usize,
        ))
        .unwrap();
        child_dies_after(&locks[2], |third, _| {
            let (a, b) = *PAIR.get().unwrap();
            // SAFETY: the parent's locks stay mapped (and alive) in the
            // child, a copy of its address space.
            let (a, b) = unsafe { (&*(a as *const RobustMutex), &*(b as *const RobustMutex)) };
            for m in [a, b, third] {
                assert_eq!(m.acquire(How::Try), Outcome::Acquired { poisoned: false });
            }
            // Out of order: the middle one goes first.
            b.release().unwrap();
        });
        let state = |l: &crate::sync::Lock| l.mutex().word().load(Ordering::SeqCst);
        assert_eq!(state(&locks[0]), FUTEX_OWNER_DIED);
        assert_eq!(state(&locks[1]), 0, "released before the death");
        assert_eq!(state(&locks[2]), FUTEX_OWNER_DIED);
        drop(pair);
    }
}
