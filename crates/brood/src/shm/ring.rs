//! The shared ring underneath every queue: the control block, records,
//! put, get, and the waits. The protocol and its invariants are in
//! `queue/README.md`; the comments here name them (I1..I4).

use std::cell::RefCell;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::shm::{Block, BlockWire, SharedState};
use crate::sync::futex::{self, Deadline};
use crate::sync::mutex::{How, Outcome, RobustMutex};

/// Kinds of queue sharing the ring (a block of one kind is refused as
/// another when it crosses to a child).
pub(crate) const KIND_QUEUE: u32 = 1;
pub(crate) const KIND_SIMPLE: u32 = 2;
pub(crate) const KIND_JOINABLE: u32 = 3;

// Record kinds: whole words, so a scribbled header is unlikely to pass.
const WHOLE: u32 = u32::from_be_bytes(*b"WHOL");
const FIRST: u32 = u32::from_be_bytes(*b"FRST");
const MORE: u32 = u32::from_be_bytes(*b"MORE");
const LAST: u32 = u32::from_be_bytes(*b"LAST");
const WRAP: u32 = u32::from_be_bytes(*b"WRAP");

/// Header bytes of a record; records and positions are in 8-byte units.
const HDR: u64 = 8;
const UNIT: u64 = 8;
/// Packed positions: messages in the high 27 bits, 8-byte units in the low 37.
const POS_BITS: u32 = 37;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const MSG_MASK: u64 = (1 << (64 - POS_BITS)) - 1;

/// The ring starts on its own page.
const DATA_ALIGN: usize = 4096;
/// The smallest ring, and the default (1 GiB, sparse).
pub(crate) const MIN_BYTES: u64 = 4096;
pub(crate) const DEFAULT_BYTES: u64 = 1 << 30;
/// The largest ring: positions wrap at 2^37 units, so the ring is at most
/// half of that; records' lengths are u32.
const MAX_BYTES: u64 = 1 << 39;
/// Where a producer wraps early when the start of the ring is free.
const SOFT_BYTES: u64 = 2 << 20;
/// The longest a sleeper sleeps before re-checking on its own (I4).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// How often a reassembling consumer checks that its writer is still there.
const WRITER_CHECK: Duration = Duration::from_millis(10);

#[inline]
fn pack(msgs: u64, units: u64) -> u64 {
    ((msgs & MSG_MASK) << POS_BITS) | (units & POS_MASK)
}
#[inline]
fn units(p: u64) -> u64 {
    p & POS_MASK
}
#[inline]
fn msgs(p: u64) -> u64 {
    p >> POS_BITS
}
/// Messages between two packed positions.
#[inline]
fn msgs_between(tail: u64, head: u64) -> u64 {
    msgs(tail).wrapping_sub(msgs(head)) & MSG_MASK
}
/// Bytes between two packed positions.
#[inline]
fn bytes_between(tail: u64, head: u64) -> u64 {
    (units(tail).wrapping_sub(units(head)) & POS_MASK) * UNIT
}
#[inline]
fn advance(p: u64, bytes: u64, messages: u64) -> u64 {
    pack(msgs(p) + messages, units(p) + bytes / UNIT)
}

/// A cache line of its own.
#[repr(C, align(64))]
struct Line<T>(T);

#[repr(C)]
struct ProducerSide {
    put_lock: RobustMutex,
    /// Packed: committed messages and bytes (I1). Written under `put_lock`.
    tail: AtomicU64,
    /// The last `head` a producer read (under `put_lock`).
    head_seen: AtomicU64,
}

#[repr(C)]
struct ConsumerSide {
    get_lock: RobustMutex,
    /// Packed: taken (or skipped) messages and bytes. Written under `get_lock`.
    head: AtomicU64,
    /// The last `tail` a consumer read (under `get_lock`).
    tail_seen: AtomicU64,
}

#[repr(C)]
struct Events {
    /// Bumped when a producer commits and consumers sleep (futex word).
    put_event: AtomicU32,
    /// Consumers sleeping (or about to) on `put_event`.
    get_sleepers: AtomicU32,
}

#[repr(C)]
struct Events2 {
    /// Bumped when a consumer frees room and producers sleep (futex word).
    get_event: AtomicU32,
    /// Producers sleeping (or about to) on `get_event`.
    put_sleepers: AtomicU32,
    /// JoinableQueue: tasks done, modulo 2^27 (futex word).
    done: AtomicU32,
    join_sleepers: AtomicU32,
    closed: AtomicU32,
}

/// The control block at the start of the queue's segment.
#[repr(C)]
pub(crate) struct QueueState {
    /// Ring bytes: a power of two. Set before the block is shared.
    cap: u64,
    soft: u64,
    /// Python's maxsize (0: no bound in messages).
    maxsize: u64,
    kind: u32,
    _reserved: u32,
    type_hash: u64,
    producer: Line<ProducerSide>,
    consumer: Line<ConsumerSide>,
    events: Line<Events>,
    events2: Line<Events2>,
}

// SAFETY: repr(C); all-zero is valid before `init` (atomics and a mutex
// initialised in place); shared only through atomics and the robust mutexes.
unsafe impl SharedState for QueueState {
    const MAGIC: u32 = u32::from_be_bytes(*b"QUEU");
    fn must_stay_mapped(&self) -> bool {
        self.producer.0.put_lock.held_in_this_process()
            || self.consumer.0.get_lock.held_in_this_process()
    }
}

/// How long an operation may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all (Python's `block=False`, a zero timeout).
    Poll,
    /// Until the deadline (none: forever).
    Until(Deadline),
}

impl Wait {
    pub(crate) fn forever() -> Wait {
        Wait::Until(Deadline::after(None))
    }
    pub(crate) fn timeout(t: Duration) -> Wait {
        if t.is_zero() {
            Wait::Poll
        } else {
            Wait::Until(Deadline::after(Some(t)))
        }
    }
    /// Python's `(block, timeout)`: `block=false` wins over any timeout.
    pub(crate) fn python(block: bool, timeout: Option<Duration>) -> Wait {
        match (block, timeout) {
            (false, _) => Wait::Poll,
            (true, None) => Wait::forever(),
            (true, Some(t)) => Wait::timeout(t),
        }
    }
    fn expired(self) -> bool {
        match self {
            Wait::Poll => true,
            Wait::Until(d) => d.expired(),
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    /// Would have had to wait, and `Wait::Poll` forbade it.
    WouldBlock,
    /// The deadline passed.
    TimedOut,
    /// The queue is closed (puts), or closed and drained (gets).
    Closed,
    /// A record or the control block was scribbled on (I3).
    Corrupt(String),
}

/// Whether spinning can help: another CPU may run the peer.
fn may_spin() -> bool {
    static SPIN: OnceLock<bool> = OnceLock::new();
    *SPIN.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

thread_local! {
    /// This thread's spins in a row that ran out without their condition
    /// coming true (adaptive spinning, as glibc's adaptive mutexes do).
    static SPIN_MISSES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// After this many spins in a row that ran out, a thread spins only on
/// every [`SPIN_PROBE`]th wait until one pays off again: on a machine whose
/// CPUs are all busy the peer is not running while we spin, and each spin
/// would only burn the `SPIN` the peer needs.
const SPIN_MISSES_MAX: u32 = 4;
const SPIN_PROBE: u32 = 16;

/// Spins (at most `SPIN`, only when another CPU can make progress, and
/// while spinning pays off on this thread) until `ready` holds; returns
/// whether it did. Also the manager's ring links wait with it.
#[inline]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    if ready() {
        return true;
    }
    if !may_spin() {
        return false;
    }
    let misses = SPIN_MISSES.with(|m| m.get());
    if misses >= SPIN_MISSES_MAX {
        // Skipping: counted from SPIN_MISSES_MAX + 1 up, back at
        // SPIN_MISSES_MAX every SPIN_PROBE waits, which spin once more.
        let next = SPIN_MISSES_MAX + (misses - SPIN_MISSES_MAX + 1) % SPIN_PROBE;
        SPIN_MISSES.with(|m| m.set(next));
        if next != SPIN_MISSES_MAX {
            return false;
        }
    }
    let start = std::time::Instant::now();
    let mut i = 0u32;
    loop {
        std::hint::spin_loop();
        if ready() {
            SPIN_MISSES.with(|m| m.set(0));
            return true;
        }
        i += 1;
        if i.is_multiple_of(64) {
            if start.elapsed() > SPIN {
                SPIN_MISSES.with(|m| m.set((m.get() + 1).min(SPIN_MISSES_MAX + 1)));
                return false;
            }
            if i.is_multiple_of(1024) {
                std::thread::yield_now();
            }
        }
    }
}
/// How long a waiter spins before it sleeps.
const SPIN: Duration = Duration::from_micros(30);

/// Releases a robust mutex when dropped.
struct Held<'a>(&'a RobustMutex);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.release();
    }
}

/// How long a zero-timeout call (`Wait::Poll`) waits for a lock whose
/// holder is mid-copy (or was preempted, or stopped, there) when the call
/// could go through: past this, it says full or empty after all.
const POLL_PATIENCE: Duration = Duration::from_secs(1);

/// Takes `m`: a few tries with a spin, then as `wait` allows. A dead
/// holder's poison is cleared at once: every crash point leaves the state
/// consistent (I1). Under `Wait::Poll`, a lock still held after a few
/// yields is waited for (up to [`POLL_PATIENCE`]) only when `could_go`
/// says the call would go through (room for a put, a message for a get):
/// a zero-timeout put on a queue with room does not say "full" because
/// another producer holds the lock (Python's `put_nowait` never does), and
/// one on a full queue says so at once.
fn take(m: &RobustMutex, wait: Wait, could_go: impl FnOnce() -> bool) -> Option<Held<'_>> {
    let got = |o: Outcome| match o {
        Outcome::Acquired { poisoned } => {
            if poisoned {
                m.clear_poison();
            }
            Some(Held(m))
        }
        Outcome::Busy => None,
    };
    let rounds = if may_spin() { 200 } else { 1 };
    for i in 0..rounds {
        if let Some(h) = got(m.acquire(How::Try)) {
            return Some(h);
        }
        if i % 32 == 31 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    match wait {
        Wait::Poll => {
            // A short holder (a copy in progress) is not "full"/"empty":
            // yield a few times, never sleep.
            for _ in 0..64 {
                std::thread::yield_now();
                if let Some(h) = got(m.acquire(How::Try)) {
                    return Some(h);
                }
            }
            if could_go() {
                got(m.acquire(How::Until(Deadline::after(Some(POLL_PATIENCE)))))
            } else {
                None
            }
        }
        Wait::Until(d) => got(m.acquire(How::Until(d))),
    }
}

/// Sleeps on `word` (which held `seen`) with the I4 protocol: count
/// ourselves in `sleepers`, re-check `ready`, sleep at most until the
/// deadline and at most `MAX_SLEEP`.
fn sleep_on(
    word: &AtomicU32,
    sleepers: &AtomicU32,
    seen: u32,
    deadline: Deadline,
    ready: impl Fn() -> bool,
) {
    sleepers.fetch_add(1, Ordering::SeqCst);
    if !ready() {
        let cap = Deadline::after(Some(MAX_SLEEP));
        let until = match (deadline.remaining(), cap.remaining()) {
            (Some(a), Some(b)) if a < b => deadline,
            _ => cap,
        };
        futex::wait(word, seen, until);
    }
    sleepers.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes one sleeper on `word` if any (I4: after the commit's SeqCst store).
#[inline]
fn wake_one(word: &AtomicU32, sleepers: &AtomicU32) {
    if sleepers.load(Ordering::SeqCst) > 0 {
        word.fetch_add(1, Ordering::SeqCst);
        futex::wake(word, 1);
    }
}

fn wake_all(word: &AtomicU32) {
    word.fetch_add(1, Ordering::SeqCst);
    futex::wake(word, u32::MAX);
}

/// A stable hash of a type's name (the same in every process of one build).
pub(crate) fn type_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

thread_local! {
    /// The encode buffer, reused by every put of this thread.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's (emptied) encode buffer.
pub(crate) fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.clear();
    let out = f(&mut buf);
    if buf.capacity() <= 4 << 20 {
        BUF.with(|b| *b.borrow_mut() = buf);
    }
    out
}

/// The queue's segment.
#[derive(Clone)]
pub(crate) struct Ring {
    block: Block<QueueState>,
}

impl Ring {
    /// A new ring of at least `bytes` (rounded up to a power of two).
    pub(crate) fn new(kind: u32, type_hash: u64, maxsize: u64, bytes: u64) -> Result<Ring> {
        let cap = bytes
            .clamp(MIN_BYTES, MAX_BYTES)
            .checked_next_power_of_two()
            .unwrap_or(MAX_BYTES)
            .min(MAX_BYTES);
        let tail = usize::try_from(cap).map_err(|_| Error::invalid("queue too large"))?;
        let block = Block::<QueueState>::new(tail, DATA_ALIGN, |s| {
            // SAFETY: fresh, zeroed memory no one else knows yet; fields
            // are written through the raw pointer before any reference.
            unsafe {
                (*s).cap = cap;
                (*s).soft = SOFT_BYTES.min(cap);
                (*s).maxsize = maxsize;
                (*s).kind = kind;
                (*s).type_hash = type_hash;
                RobustMutex::init(&raw mut (*s).producer.0.put_lock, false)?;
                RobustMutex::init(&raw mut (*s).consumer.0.get_lock, false)?;
            }
            Ok::<(), io::Error>(())
        })?;
        Ok(Ring { block })
    }

    /// A ring received from another process, checked.
    pub(crate) fn from_wire(wire: BlockWire, kind: u32, type_hash: u64) -> Result<Ring> {
        let block = Block::<QueueState>::from_wire(wire, 0, DATA_ALIGN)?;
        let s = block.get();
        let room = block.len() - Block::<QueueState>::tail_offset(DATA_ALIGN);
        if !s.cap.is_power_of_two() || s.cap < MIN_BYTES || s.cap > room as u64 {
            return Err(Error::invalid("the queue's control block is corrupt"));
        }
        if s.kind != kind {
            return Err(Error::invalid(
                "a queue of another kind (Queue, SimpleQueue, JoinableQueue) was received",
            ));
        }
        if s.type_hash != type_hash {
            return Err(Error::invalid(
                "a queue of another message type was received",
            ));
        }
        Ok(Ring { block })
    }

    /// The block, as it crosses to another process.
    pub(crate) fn block(&self) -> &Block<QueueState> {
        &self.block
    }

    #[inline]
    fn s(&self) -> &QueueState {
        self.block.get()
    }

    #[inline]
    fn data(&self) -> *mut u8 {
        self.block.tail(DATA_ALIGN)
    }

    #[inline]
    fn offset(&self, p: u64) -> u64 {
        (units(p) * UNIT) & (self.s().cap - 1)
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.s().maxsize
    }

    pub(crate) fn capacity_bytes(&self) -> u64 {
        self.s().cap
    }

    /// Complete messages in the queue (exact while no one puts or gets).
    pub(crate) fn qsize(&self) -> u64 {
        let s = self.s();
        let head = s.consumer.0.head.load(Ordering::SeqCst);
        let tail = s.producer.0.tail.load(Ordering::SeqCst);
        msgs_between(tail, head)
    }

    pub(crate) fn close(&self) {
        let s = self.s();
        s.events2.0.closed.store(1, Ordering::SeqCst);
        wake_all(&s.events.0.put_event);
        wake_all(&s.events2.0.get_event);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.s().events2.0.closed.load(Ordering::SeqCst) != 0
    }

    /// The longest payload of one record.
    fn piece_max(&self) -> u64 {
        (self.s().cap / 2 - HDR).min(u64::from(u32::MAX) & !(UNIT - 1))
    }

    // ----- put -----

    /// Puts one encoded message (I1), waiting as `wait` allows.
    pub(crate) fn put(&self, bytes: &[u8], wait: Wait) -> std::result::Result<(), Fail> {
        let s = self.s();
        let p = &s.producer.0;
        let max = self.piece_max();
        let len = bytes.len() as u64;
        loop {
            if self.is_closed() {
                return Err(Fail::Closed);
            }
            let first_len = len.min(max);
            let Some(held) = take(&p.put_lock, wait, || self.room_now(first_len + HDR)) else {
                return Err(if matches!(wait, Wait::Poll) {
                    Fail::WouldBlock
                } else {
                    Fail::TimedOut
                });
            };
            let tail = p.tail.load(Ordering::Relaxed);
            match self.room(tail, first_len + HDR, true) {
                Room::Corrupt(e) => return Err(e),
                Room::No => {
                    drop(held);
                    self.wait_for_room(wait, first_len + HDR, true)?;
                    continue;
                }
                Room::Yes { wrap } => {
                    if len <= max {
                        let next = self.write(tail, wrap, WHOLE, bytes);
                        self.commit(next);
                        return Ok(());
                    }
                    // Pieces (README, put step 5): keep the lock throughout.
                    let next = self.write(tail, wrap, FIRST, &bytes[..max as usize]);
                    self.commit(next);
                    let result = self.put_rest(&bytes[max as usize..], wait);
                    if result.is_err() {
                        self.take_back(tail);
                    }
                    drop(held);
                    return result;
                }
            }
        }
    }

    /// The pieces after the first, `put_lock` held.
    fn put_rest(&self, mut rest: &[u8], wait: Wait) -> std::result::Result<(), Fail> {
        let p = &self.s().producer.0;
        let max = self.piece_max() as usize;
        while !rest.is_empty() {
            let n = rest.len().min(max);
            let kind = if n == rest.len() { LAST } else { MORE };
            loop {
                let tail = p.tail.load(Ordering::Relaxed);
                match self.room(tail, n as u64 + HDR, false) {
                    Room::Corrupt(e) => return Err(e),
                    Room::Yes { wrap } => {
                        let next = self.write(tail, wrap, kind, &rest[..n]);
                        self.commit(next);
                        break;
                    }
                    Room::No => {
                        if self.is_closed() {
                            return Err(Fail::Closed);
                        }
                        self.wait_for_room(wait, n as u64 + HDR, false)?;
                    }
                }
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    /// With `put_lock` held, after a piece-wise put gave up (timeout,
    /// `block=false`, close): takes its committed pieces back by moving
    /// `tail` back to `start`, where the message began, so that they take
    /// no room and an empty queue accepts the next put at once (Python:
    /// a put that raised `Full` left nothing behind). Only when no consumer
    /// holds `get_lock` (else that consumer is reassembling the message and
    /// drops it itself, I2) and `head` has not passed `start`. Order for
    /// crash safety (I5): `tail_seen` first (a consumer that finds it short
    /// of `tail` just reloads `tail`), then `tail`; a producer killed in
    /// between leaves orphan pieces, which consumers skip (I2).
    fn take_back(&self, start: u64) {
        let s = self.s();
        let c = &s.consumer.0;
        match c.get_lock.acquire(How::Try) {
            Outcome::Busy => return,
            Outcome::Acquired { poisoned } => {
                if poisoned {
                    c.get_lock.clear_poison();
                }
            }
        }
        let held = Held(&c.get_lock);
        let head = c.head.load(Ordering::SeqCst);
        let tail = s.producer.0.tail.load(Ordering::Relaxed);
        // `head` in [.., start]: the pieces in [start, tail) are all there.
        if bytes_between(tail, head) >= bytes_between(tail, start) && msgs(tail) == msgs(start) {
            c.tail_seen.store(start, Ordering::SeqCst);
            s.producer.0.tail.store(start, Ordering::SeqCst);
        }
        drop(held);
    }

    /// Whether a record of `need` bytes (header included) fits at `tail`;
    /// `counts`: it starts a message, so the bound in messages applies.
    fn room(&self, tail: u64, need: u64, counts: bool) -> Room {
        let s = self.s();
        let p = &s.producer.0;
        let need = need.next_multiple_of(UNIT);
        let mut head = p.head_seen.load(Ordering::Relaxed);
        for fresh in [false, true] {
            if fresh {
                head = s.consumer.0.head.load(Ordering::Acquire);
                p.head_seen.store(head, Ordering::Relaxed);
            }
            let used = bytes_between(tail, head);
            if used > s.cap || msgs_between(tail, head) > s.cap / UNIT {
                if !fresh {
                    continue;
                }
                return Room::Corrupt(Fail::Corrupt(format!(
                    "queue control block is corrupt: {used} bytes in use in a {}-byte ring",
                    s.cap
                )));
            }
            if counts && s.maxsize > 0 && msgs_between(tail, head) >= s.maxsize {
                continue;
            }
            let free = s.cap - used;
            let off = self.offset(tail);
            let to_end = s.cap - off;
            if need <= to_end {
                if off >= s.soft && free >= to_end + need {
                    return Room::Yes { wrap: true };
                }
                if free >= need {
                    return Room::Yes { wrap: false };
                }
            } else if free >= to_end + need {
                return Room::Yes { wrap: true };
            }
        }
        Room::No
    }

    /// Writes a record at `tail` (after a WRAP record when `wrap`); returns
    /// the new tail, not yet published.
    fn write(&self, tail: u64, wrap: bool, kind: u32, payload: &[u8]) -> u64 {
        let filled = self.write_with(tail, wrap, kind, payload.len(), |dst| {
            dst.copy_from_slice(payload);
            true
        });
        filled.unwrap_or(tail)
    }

    /// Writes a record of `len` payload bytes at `tail` (after a WRAP record
    /// when `wrap`), the payload by `fill`; returns the new tail, not yet
    /// published, or `None` if `fill` failed (nothing to publish).
    fn write_with(
        &self,
        tail: u64,
        wrap: bool,
        kind: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Option<u64> {
        let cap = self.s().cap;
        let mut at = tail;
        let mut wrap_at = None;
        if wrap {
            let off = self.offset(at);
            wrap_at = Some((off, cap - off));
            at = advance(at, cap - off, 0);
        }
        let off = self.offset(at);
        // SAFETY: `room` checked `off + HDR + len <= cap` and that these
        // bytes are free (not between head and tail); only the put_lock
        // holder writes free space, and nothing reads it until the commit,
        // so this is the only reference to them.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(self.data().add((off + HDR) as usize), len) };
        if !fill(dst) {
            return None;
        }
        // SAFETY: both headers are 8-aligned, inside the ring and in free
        // space owned by the put_lock holder (checked by `room`).
        unsafe {
            if let Some((woff, to_end)) = wrap_at {
                self.write_header(woff, (to_end - HDR) as u32, WRAP);
            }
            self.write_header(off, len as u32, kind);
        }
        let counted = u64::from(kind == WHOLE || kind == LAST);
        Some(advance(
            at,
            (HDR + len as u64).next_multiple_of(UNIT),
            counted,
        ))
    }

    /// Puts one message of `len` encoded bytes, written straight into the
    /// ring by `fill` (no intermediate buffer). `Ok(false)`: `len` is over
    /// one record's limit, or `fill` failed; nothing was put.
    pub(crate) fn put_direct(
        &self,
        len: usize,
        wait: Wait,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> std::result::Result<bool, Fail> {
        let s = self.s();
        let p = &s.producer.0;
        if len as u64 > self.piece_max() {
            return Ok(false);
        }
        let need = len as u64 + HDR;
        loop {
            if self.is_closed() {
                return Err(Fail::Closed);
            }
            let Some(held) = take(&p.put_lock, wait, || self.room_now(need)) else {
                return Err(if matches!(wait, Wait::Poll) {
                    Fail::WouldBlock
                } else {
                    Fail::TimedOut
                });
            };
            let tail = p.tail.load(Ordering::Relaxed);
            match self.room(tail, need, true) {
                Room::Corrupt(e) => return Err(e),
                Room::No => {
                    drop(held);
                    self.wait_for_room(wait, need, true)?;
                }
                Room::Yes { wrap } => {
                    return Ok(match self.write_with(tail, wrap, WHOLE, len, fill) {
                        Some(next) => {
                            self.commit(next);
                            true
                        }
                        None => false,
                    });
                }
            }
        }
    }

    /// # Safety
    ///
    /// `off` is 8-aligned, `off + 8 <= cap`, and the caller owns those bytes.
    unsafe fn write_header(&self, off: u64, len: u32, kind: u32) {
        let word = (u64::from(kind) << 32) | u64::from(len);
        // SAFETY: per the contract; the data area is page-aligned, so an
        // 8-aligned offset is 8-aligned in memory.
        unsafe { std::ptr::write(self.data().add(off as usize).cast::<u64>(), word) };
    }

    /// Publishes records up to `next` (I1) and wakes a consumer (I4).
    #[inline]
    fn commit(&self, next: u64) {
        let s = self.s();
        s.producer.0.tail.store(next, Ordering::SeqCst);
        wake_one(&s.events.0.put_event, &s.events.0.get_sleepers);
    }

    /// Waits (spin, then sleep) until consumers may have made room.
    fn wait_for_room(&self, wait: Wait, need: u64, counts: bool) -> std::result::Result<(), Fail> {
        let s = self.s();
        let deadline = match wait {
            Wait::Poll => return Err(Fail::WouldBlock),
            Wait::Until(d) => d,
        };
        let ready = || {
            self.is_closed() || {
                let tail = s.producer.0.tail.load(Ordering::SeqCst);
                matches!(
                    self.room_peek(tail, need, counts),
                    Room::Yes { .. } | Room::Corrupt(_)
                )
            }
        };
        if spin_until(ready) {
            return Ok(());
        }
        let ev = &s.events2.0;
        let seen = ev.get_event.load(Ordering::SeqCst);
        sleep_on(&ev.get_event, &ev.put_sleepers, seen, deadline, ready);
        if wait.expired() && !ready() {
            return Err(Fail::TimedOut);
        }
        Ok(())
    }

    /// Whether a message of `need` bytes (header included) would fit now,
    /// as seen without the lock.
    fn room_now(&self, need: u64) -> bool {
        let tail = self.s().producer.0.tail.load(Ordering::SeqCst);
        matches!(self.room_peek(tail, need, true), Room::Yes { .. })
    }

    /// `room` without touching the cached head (readable without the lock).
    fn room_peek(&self, tail: u64, need: u64, counts: bool) -> Room {
        let s = self.s();
        let need = need.next_multiple_of(UNIT);
        let head = s.consumer.0.head.load(Ordering::SeqCst);
        let used = bytes_between(tail, head);
        if used > s.cap {
            return Room::Corrupt(Fail::Corrupt(String::new()));
        }
        if counts && s.maxsize > 0 && msgs_between(tail, head) >= s.maxsize {
            return Room::No;
        }
        let free = s.cap - used;
        let to_end = s.cap - self.offset(tail);
        if (need <= to_end && free >= need) || free >= to_end + need {
            Room::Yes { wrap: false }
        } else {
            Room::No
        }
    }

    // ----- get -----

    /// Takes one message and hands its payload to `decode` (in place, or
    /// reassembled), waiting as `wait` allows.
    pub(crate) fn get<R>(
        &self,
        wait: Wait,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Fail> {
        let s = self.s();
        let c = &s.consumer.0;
        let mut decode = Some(decode);
        loop {
            let Some(held) = take(&c.get_lock, wait, || !self.drained()) else {
                if self.is_closed() && self.drained() {
                    return Err(Fail::Closed);
                }
                return Err(if matches!(wait, Wait::Poll) {
                    Fail::WouldBlock
                } else {
                    Fail::TimedOut
                });
            };
            match self.take_one(&mut decode)? {
                Some(r) => {
                    drop(held);
                    return Ok(r);
                }
                None => {
                    drop(held);
                    if self.is_closed() && self.drained() {
                        return Err(Fail::Closed);
                    }
                    self.wait_for_data(wait)?;
                }
            }
        }
    }

    /// Whether nothing is committed.
    fn drained(&self) -> bool {
        let s = self.s();
        units(s.producer.0.tail.load(Ordering::SeqCst))
            == units(s.consumer.0.head.load(Ordering::SeqCst))
    }

    /// With `get_lock` held: takes the next message, or `None` when there
    /// is none. Skips WRAP records and orphan pieces (I2).
    fn take_one<R>(
        &self,
        decode: &mut Option<impl FnOnce(&[u8]) -> R>,
    ) -> std::result::Result<Option<R>, Fail> {
        let s = self.s();
        let c = &s.consumer.0;
        let mut partial: Option<Vec<u8>> = None;
        loop {
            let head = c.head.load(Ordering::Relaxed);
            let mut tail = c.tail_seen.load(Ordering::Relaxed);
            if units(tail) == units(head) {
                tail = s.producer.0.tail.load(Ordering::Acquire);
                c.tail_seen.store(tail, Ordering::Relaxed);
            }
            if units(tail) == units(head) {
                match partial {
                    None => return Ok(None),
                    Some(_) => {
                        // Reassembling: the writer holds put_lock and is
                        // writing the next piece (README, get step 4).
                        if !self.wait_for_piece(head) {
                            partial = None;
                        }
                        continue;
                    }
                }
            }
            let (kind, len, off) = match self.check(head, tail) {
                Ok(h) => h,
                Err(e) => {
                    // I3: discard everything committed so far.
                    let now = s.producer.0.tail.load(Ordering::SeqCst);
                    c.tail_seen.store(now, Ordering::Relaxed);
                    c.head.store(now, Ordering::SeqCst);
                    wake_one(&s.events2.0.get_event, &s.events2.0.put_sleepers);
                    return Err(e);
                }
            };
            let rec = (HDR + len).next_multiple_of(UNIT);
            // SAFETY: `check` proved `off + HDR + len <= cap` and that the
            // record lies in [head, tail): committed bytes (I1) that no
            // producer writes until head passes them, and we hold get_lock.
            let payload = unsafe {
                std::slice::from_raw_parts(self.data().add((off + HDR) as usize), len as usize)
            };
            let mut out = None;
            let counted = match kind {
                WRAP => {
                    let next = advance(head, s.cap - off, 0);
                    c.head.store(next, Ordering::SeqCst);
                    continue;
                }
                WHOLE => {
                    partial = None;
                    out = Some(decode.take().expect("one decode per get")(payload));
                    1
                }
                FIRST => {
                    partial = Some(payload.to_vec());
                    0
                }
                MORE => {
                    if let Some(buf) = partial.as_mut() {
                        buf.extend_from_slice(payload);
                    }
                    0
                }
                _ => {
                    // LAST
                    if let Some(mut buf) = partial.take() {
                        buf.extend_from_slice(payload);
                        out = Some(decode.take().expect("one decode per get")(&buf));
                    }
                    1
                }
            };
            let next = advance(head, rec, counted);
            c.head.store(next, Ordering::SeqCst);
            wake_one(&s.events2.0.get_event, &s.events2.0.put_sleepers);
            if out.is_some() {
                // More waiting and consumers asleep: pass the wake-up on.
                if units(tail) != units(next) {
                    wake_one(&s.events.0.put_event, &s.events.0.get_sleepers);
                }
                return Ok(out);
            }
        }
    }

    /// Validates the record at `head` (I3): (kind, payload length, offset).
    fn check(&self, head: u64, tail: u64) -> std::result::Result<(u32, u64, u64), Fail> {
        let cap = self.s().cap;
        let in_use = bytes_between(tail, head);
        let corrupt = |what: String| Err(Fail::Corrupt(format!("queue record is corrupt: {what}")));
        if in_use > cap {
            return corrupt(format!("{in_use} bytes in use in a {cap}-byte ring"));
        }
        let off = self.offset(head);
        // SAFETY: `off` is 8-aligned and below cap; the header is inside
        // [head, tail) (in_use >= 8: head != tail), committed bytes (I1).
        let word = unsafe { std::ptr::read(self.data().add(off as usize).cast::<u64>()) };
        let (kind, len) = ((word >> 32) as u32, u64::from(word as u32));
        if !matches!(kind, WHOLE | FIRST | MORE | LAST | WRAP) {
            return corrupt(format!("unknown record kind {kind:#x} at offset {off}"));
        }
        let rec = if kind == WRAP {
            if len != cap - off - HDR {
                return corrupt(format!("a wrap record of {len} bytes at offset {off}"));
            }
            cap - off
        } else {
            (HDR + len).next_multiple_of(UNIT)
        };
        if off + rec > cap || rec > in_use {
            return corrupt(format!(
                "a record of {len} bytes at offset {off} runs past the ring or the tail"
            ));
        }
        Ok((kind, len, off))
    }

    /// Reassembling, with `get_lock` held: waits for the next piece after
    /// `head`. False when the writer is gone (README, get step 4).
    fn wait_for_piece(&self, head: u64) -> bool {
        let s = self.s();
        let more = || units(s.producer.0.tail.load(Ordering::SeqCst)) != units(head);
        loop {
            if spin_until(more) {
                return true;
            }
            let ev = &s.events.0;
            let seen = ev.put_event.load(Ordering::SeqCst);
            sleep_on(
                &ev.put_event,
                &ev.get_sleepers,
                seen,
                Deadline::after(Some(WRITER_CHECK)),
                more,
            );
            if more() {
                return true;
            }
            // No progress: is anyone holding put_lock (writing to us)?
            if let Outcome::Acquired { poisoned } = s.producer.0.put_lock.acquire(How::Try) {
                if poisoned {
                    s.producer.0.put_lock.clear_poison();
                }
                let _held = Held(&s.producer.0.put_lock);
                return more();
            }
        }
    }

    /// Waits (spin, then sleep) until something may be committed.
    fn wait_for_data(&self, wait: Wait) -> std::result::Result<(), Fail> {
        let s = self.s();
        let deadline = match wait {
            Wait::Poll => return Err(Fail::WouldBlock),
            Wait::Until(d) => d,
        };
        let ready = || self.is_closed() || !self.drained();
        if spin_until(ready) {
            return Ok(());
        }
        if wait.expired() {
            return Err(Fail::TimedOut);
        }
        let ev = &s.events.0;
        let seen = ev.put_event.load(Ordering::SeqCst);
        sleep_on(&ev.put_event, &ev.get_sleepers, seen, deadline, ready);
        if wait.expired() && !ready() {
            return Err(Fail::TimedOut);
        }
        Ok(())
    }

    // ----- JoinableQueue -----

    /// Tasks put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let s = self.s();
        let put = msgs(s.producer.0.tail.load(Ordering::SeqCst));
        let done = u64::from(s.events2.0.done.load(Ordering::SeqCst));
        put.wrapping_sub(done) & MSG_MASK
    }

    /// Marks one task done; false when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let s = self.s();
        let ev = &s.events2.0;
        let mut done = ev.done.load(Ordering::SeqCst);
        loop {
            let put = msgs(s.producer.0.tail.load(Ordering::SeqCst));
            if put.wrapping_sub(u64::from(done)) & MSG_MASK == 0 {
                return false;
            }
            let next = ((u64::from(done) + 1) & MSG_MASK) as u32;
            match ev
                .done
                .compare_exchange(done, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        if ev.join_sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&ev.done, u32::MAX);
        }
        true
    }

    /// Waits until every task put is done; false on timeout.
    pub(crate) fn join(&self, deadline: Deadline) -> bool {
        let ev = &self.s().events2.0;
        loop {
            let seen = ev.done.load(Ordering::SeqCst);
            if self.unfinished() == 0 {
                return true;
            }
            if deadline.expired() {
                return false;
            }
            sleep_on(&ev.done, &ev.join_sleepers, seen, deadline, || {
                self.unfinished() == 0
            });
        }
    }
}

enum Room {
    Yes { wrap: bool },
    No,
    Corrupt(Fail),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(bytes: u64, maxsize: u64) -> Ring {
        Ring::new(KIND_QUEUE, 0, maxsize, bytes).unwrap()
    }

    fn get(r: &Ring) -> std::result::Result<Vec<u8>, Fail> {
        r.get(Wait::Poll, |b| b.to_vec())
    }

    /// A zero-timeout put or get whose lock another thread holds (a copy in
    /// progress, or a holder preempted or stopped there) waits for it when
    /// the call can go through, and says full or empty at once when it
    /// cannot: before, it said full (empty) after 64 yields either way.
    #[test]
    fn a_zero_timeout_call_waits_out_a_holder_only_when_it_could_go() {
        use std::time::Instant;
        let hold = Duration::from_millis(150);
        let r = ring(4096, 2);
        let p = &r.s().producer.0;
        let c = &r.s().consumer.0;
        // Room, lock held: the put waits for the holder and goes in.
        for (i, msg) in [&b"one"[..], b"two"].into_iter().enumerate() {
            let held = take(&p.put_lock, Wait::Poll, || false).unwrap();
            let r2 = r.clone();
            let t = Instant::now();
            let putter = std::thread::spawn(move || (r2.put(msg, Wait::Poll), t.elapsed()));
            std::thread::sleep(hold);
            drop(held);
            let (put, took) = putter.join().unwrap();
            assert_eq!(put, Ok(()), "put {i}");
            assert!(took >= hold, "put {i} went in while the lock was held");
        }
        // Full (maxsize 2), lock held: full at once.
        let held = take(&p.put_lock, Wait::Poll, || false).unwrap();
        let t = Instant::now();
        assert_eq!(r.put(b"three", Wait::Poll), Err(Fail::WouldBlock));
        assert!(t.elapsed() < Duration::from_millis(500));
        drop(held);
        // Messages there, get lock held: the get waits and takes one.
        let held = take(&c.get_lock, Wait::Poll, || false).unwrap();
        let r2 = r.clone();
        let t = Instant::now();
        let getter = std::thread::spawn(move || (get(&r2), t.elapsed()));
        std::thread::sleep(hold);
        drop(held);
        let (got, took) = getter.join().unwrap();
        assert_eq!(got.unwrap(), b"one");
        assert!(took >= hold);
        assert_eq!(get(&r).unwrap(), b"two");
        // Empty, get lock held: empty at once.
        let held = take(&c.get_lock, Wait::Poll, || false).unwrap();
        let t = Instant::now();
        assert_eq!(get(&r), Err(Fail::WouldBlock));
        assert!(t.elapsed() < Duration::from_millis(500));
        drop(held);
        // A holder that never lets go (this thread, while another puts):
        // the put gives up after the patience.
        let held = take(&p.put_lock, Wait::Poll, || false).unwrap();
        let r2 = r.clone();
        let t = Instant::now();
        let putter = std::thread::spawn(move || (r2.put(b"late", Wait::Poll), t.elapsed()));
        let (put, took) = putter.join().unwrap();
        assert_eq!(put, Err(Fail::WouldBlock));
        assert!(took >= POLL_PATIENCE, "{took:?}");
        drop(held);
        r.put(b"late", Wait::Poll).unwrap();
        assert_eq!(get(&r).unwrap(), b"late");
    }

    #[test]
    fn records_wrap_and_keep_order() {
        let r = ring(4096, 0);
        for round in 0..200u32 {
            let msg = vec![round as u8; (round as usize * 7) % 900];
            r.put(&msg, Wait::Poll).unwrap();
            r.put(&msg, Wait::Poll).unwrap();
            assert_eq!(r.qsize(), 2);
            assert_eq!(get(&r).unwrap(), msg);
            assert_eq!(get(&r).unwrap(), msg);
        }
        assert_eq!(get(&r), Err(Fail::WouldBlock));
    }

    #[test]
    fn a_message_larger_than_the_ring_passes_in_pieces() {
        let r = ring(4096, 0);
        let big: Vec<u8> = (0..50_000u32).map(|i| (i * 31) as u8).collect();
        let r2 = r.clone();
        let reader = std::thread::spawn(move || r2.get(Wait::forever(), |b| b.to_vec()));
        r.put(&big, Wait::forever()).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), big);
        assert_eq!(r.qsize(), 0);
    }

    #[test]
    fn a_put_that_gives_up_takes_its_pieces_back_unless_a_consumer_reads() {
        let r = ring(4096, 0);
        let big = vec![9u8; 50_000];
        let start = r.s().producer.0.tail.load(Ordering::SeqCst);
        // No consumer: the pieces written are taken back (I5).
        assert_eq!(r.put(&big, Wait::Poll), Err(Fail::WouldBlock));
        assert_eq!(r.s().producer.0.tail.load(Ordering::SeqCst), start);
        assert_eq!(r.s().consumer.0.tail_seen.load(Ordering::SeqCst), start);
        r.put(b"next", Wait::Poll).unwrap();
        assert_eq!(get(&r).unwrap(), b"next");
        // get_lock held (a consumer mid-get): the pieces stay, and the next
        // get skips them (I2).
        let held = take(&r.s().consumer.0.get_lock, Wait::Poll, || false).unwrap();
        let before = r.s().producer.0.tail.load(Ordering::SeqCst);
        assert_eq!(r.put(&big, Wait::Poll), Err(Fail::WouldBlock));
        assert_ne!(r.s().producer.0.tail.load(Ordering::SeqCst), before);
        drop(held);
        assert_eq!(r.qsize(), 0);
        assert_eq!(get(&r), Err(Fail::WouldBlock));
        r.put(b"after", Wait::Poll).unwrap();
        assert_eq!(get(&r).unwrap(), b"after");
    }

    #[test]
    fn orphan_pieces_are_skipped() {
        let r = ring(4096, 0);
        let p = &r.s().producer.0;
        let mut tail = p.tail.load(Ordering::Relaxed);
        // The rest of a message whose consumer died after its FIRST piece.
        for (kind, fill) in [(MORE, 1u8), (LAST, 2)] {
            tail = r.write(tail, false, kind, &[fill; 100]);
            r.commit(tail);
        }
        // A writer that died after its first piece, then a whole message.
        tail = r.write(tail, false, FIRST, &[3; 100]);
        r.commit(tail);
        assert_eq!(r.qsize(), 1);
        r.put(b"after", Wait::Poll).unwrap();
        assert_eq!(r.qsize(), 2);
        // The orphans are skipped, the partial dropped: only "after" comes.
        assert_eq!(get(&r).unwrap(), b"after");
        assert_eq!(r.qsize(), 0);
        assert_eq!(get(&r), Err(Fail::WouldBlock));
    }

    #[test]
    fn a_scribbled_header_is_an_error_and_the_queue_recovers() {
        let r = ring(4096, 0);
        r.put(b"one", Wait::Poll).unwrap();
        r.put(b"two", Wait::Poll).unwrap();
        // SAFETY: test-only scribble on the first header; nothing else
        // uses the ring.
        unsafe { std::ptr::write(r.data().cast::<u64>(), u64::MAX) };
        match get(&r) {
            Err(Fail::Corrupt(m)) => assert!(m.contains("corrupt"), "{m}"),
            other => panic!("{other:?}"),
        }
        r.put(b"three", Wait::Poll).unwrap();
        assert_eq!(get(&r).unwrap(), b"three");
        // A huge length is refused, never allocated.
        r.put(b"four", Wait::Poll).unwrap();
        let off = r.offset(r.s().consumer.0.head.load(Ordering::Relaxed));
        // SAFETY: as above.
        unsafe { r.write_header(off, u32::MAX - 7, WHOLE) };
        assert!(matches!(get(&r), Err(Fail::Corrupt(_))));
    }

    #[test]
    fn a_bound_in_messages_is_kept() {
        let r = ring(4096, 2);
        r.put(b"a", Wait::Poll).unwrap();
        r.put(b"b", Wait::Poll).unwrap();
        assert_eq!(r.put(b"c", Wait::Poll), Err(Fail::WouldBlock));
        assert_eq!(
            r.put(b"c", Wait::timeout(Duration::from_millis(20))),
            Err(Fail::TimedOut)
        );
        assert_eq!(get(&r).unwrap(), b"a");
        r.put(b"c", Wait::Poll).unwrap();
    }
}
