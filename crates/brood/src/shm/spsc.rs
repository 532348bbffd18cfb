//! A single-producer, single-consumer ring of byte records in shared
//! memory, with a "consumer sleeps" flag: how a pool worker hands its
//! results to the supervisor without a system call while both are busy
//! (`pool/README.md`, "Wire protocol" and invariant 2).
//!
//! - The **producer** (one process: the worker) writes a record at its
//!   tail, then publishes the new tail (release). A record is
//!   `[len u32][kind u32]` then `len` bytes, padded to 8; one that would
//!   cross the end of the ring is preceded by a `WRAP` header and starts
//!   at offset 0. A record is never larger than a quarter of the ring.
//! - The **consumer** (one thread: the supervisor) reads records between
//!   its head and the published tail (acquire), copies each out, and
//!   publishes its head (release), which frees the room.
//! - **Sleeping**: before the consumer blocks (in `poll`, on other fds
//!   too) it stores `sleeping = 1`, a SeqCst fence, then looks at the
//!   tail once more; the producer, after publishing, a SeqCst fence, then
//!   looks at `sleeping` and, if set, clears it and rings the consumer's
//!   doorbell (the pool: an empty frame on the worker's socket). The two
//!   fences make sure one of them sees the other's store: the consumer
//!   never sleeps on a record it did not see, and the producer rings at
//!   most once per sleep.
//! - **A process dies in the middle**: a record is either published (the
//!   tail covers it: the consumer reads it whole, even after the producer
//!   is gone, since the memory stays mapped by the consumer) or not (a
//!   half-written record past the tail is never read). Each side keeps its
//!   own position in its own memory and never trusts the other's shared
//!   word beyond checking it: a scribbled tail or header is an error for
//!   the consumer (the pool kills that worker), never a read out of bounds.

use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::shm::{Block, SharedState};

/// Record header bytes; records are 8-byte aligned.
const HDR: u64 = 8;
const DATA: u32 = u32::from_be_bytes(*b"DATA");
const WRAP: u32 = u32::from_be_bytes(*b"WRAP");
/// The data starts on its own cache line.
const DATA_ALIGN: usize = 64;
/// The smallest ring.
const MIN_BYTES: u64 = 4096;
/// The largest ring (records' lengths are u32).
const MAX_BYTES: u64 = 1 << 30;

/// A cache line of its own.
#[repr(C, align(64))]
struct Line<T>(T);

/// The control block at the start of the ring's segment.
#[repr(C)]
pub(crate) struct SpscState {
    /// Ring bytes, a power of two; written before the block is shared.
    cap: u64,
    /// Bytes published by the producer (a running count, never wrapped).
    tail: Line<AtomicU64>,
    /// Bytes released by the consumer (a running count).
    head: Line<AtomicU64>,
    /// 1 while the consumer sleeps (or is about to) and wants a doorbell.
    sleeping: Line<AtomicU32>,
}

// SAFETY: repr(C); all-zero is valid (a zero `cap` is set before the block
// is shared, and checked by every receiver); shared only through atomics
// and the record bytes, which the protocol above hands from one side to
// the other with release/acquire on `tail` and `head`.
unsafe impl SharedState for SpscState {
    const MAGIC: u32 = u32::from_be_bytes(*b"SPSC");
}

/// One end of a ring: the producer's or the consumer's (the protocol is
/// the caller's to keep: one producing process, one consuming thread).
pub(crate) struct Spsc {
    block: Block<SpscState>,
    /// The ring's size as this side learned it (checked once).
    cap: u64,
    /// This side's own position: the producer's tail, or the consumer's
    /// head. Never read back from shared memory, which the other side
    /// could scribble on.
    pos: u64,
}

impl Spsc {
    /// A new, empty ring of at least `bytes` (rounded up to a power of
    /// two).
    pub(crate) fn new(bytes: u64) -> Result<Spsc> {
        let cap = bytes
            .clamp(MIN_BYTES, MAX_BYTES)
            .checked_next_power_of_two()
            .unwrap_or(MAX_BYTES);
        let tail = usize::try_from(cap).map_err(|_| Error::invalid("ring too large"))?;
        let block = Block::<SpscState>::new_fresh(tail, DATA_ALIGN, |s| {
            // SAFETY: fresh, zeroed memory that no one else knows yet; the
            // one plain field is written before the block is shared.
            unsafe { (*s.as_mut_ptr()).cap = cap };
            Ok(())
        })?;
        Ok(Spsc { block, cap, pos: 0 })
    }

    /// Another handle of the same ring, at the same position (the other
    /// end before it crosses to its process).
    pub(crate) fn handle(&self) -> Spsc {
        Spsc {
            block: self.block.clone(),
            cap: self.cap,
            pos: self.pos,
        }
    }

    #[inline]
    fn s(&self) -> &SpscState {
        self.block.get()
    }

    #[inline]
    fn data(&self) -> *mut u8 {
        self.block.tail(DATA_ALIGN)
    }

    /// The largest record the ring takes.
    pub(crate) fn max_record(&self) -> usize {
        (self.cap / 4) as usize
    }

    /// Producer: appends `bytes` as one record and publishes it; false if
    /// there is no room (or it is larger than [`max_record`](Self::max_record)).
    pub(crate) fn try_put(&mut self, bytes: &[u8]) -> bool {
        let cap = self.cap;
        let len = bytes.len() as u64;
        if len > cap / 4 {
            return false;
        }
        let need = HDR + len.next_multiple_of(8);
        // Pairs with the consumer's release of `head`: its reads of the
        // room we are about to reuse are done.
        let head = self.s().head.0.load(Ordering::Acquire);
        let off = self.pos & (cap - 1);
        let skip = if off + need > cap { cap - off } else { 0 };
        let end = self.pos + skip + need;
        if end.wrapping_sub(head) > cap {
            return false; // full (or a head that makes no sense)
        }
        let at = (self.pos + skip) & (cap - 1);
        // SAFETY: `off` and `at` are 8-aligned offsets inside the ring's
        // `cap` bytes (records and skips are multiples of 8 and `cap` is a
        // power of two ≥ 4096); `at + need ≤ cap` (a record that would
        // cross the end starts at 0 instead, and `need ≤ cap/4 + 8`). The
        // bytes from our tail to `head + cap` are ours: the consumer reads
        // only below the tail we publish, and has released those below
        // `head`.
        unsafe {
            if skip > 0 {
                self.write_header(off, 0, WRAP);
            }
            self.write_header(at, len as u32, DATA);
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.data().add((at + HDR) as usize),
                bytes.len(),
            );
        }
        self.pos = end;
        self.s().tail.0.store(end, Ordering::Release);
        true
    }

    /// # Safety
    ///
    /// `off` is an 8-aligned offset below `cap - 8` in the ring, in room
    /// the producer owns.
    unsafe fn write_header(&self, off: u64, len: u32, kind: u32) {
        let word = u64::from(len) | (u64::from(kind) << 32);
        // SAFETY: per the contract; the data is 64-aligned, so `off` is an
        // aligned u64.
        unsafe { ptr::write_volatile(self.data().add(off as usize).cast::<u64>(), word) };
    }

    /// Producer, after [`try_put`](Self::try_put): whether the consumer
    /// sleeps and must be woken (true at most once per sleep).
    pub(crate) fn consumer_asleep(&self) -> bool {
        // Orders our tail store before the load of `sleeping` (pairs with
        // the fence in `sleep_begin`).
        fence(Ordering::SeqCst);
        let flag = &self.s().sleeping.0;
        flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::Relaxed) != 0
    }

    /// Consumer: whether a record is published and not read yet.
    pub(crate) fn has_data(&self) -> bool {
        self.s().tail.0.load(Ordering::Relaxed) != self.pos
    }

    /// Consumer: takes the next record, if any. An error if the producer
    /// published something that is not a record (the ring is then left
    /// as it is: stop reading it).
    pub(crate) fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        let cap = self.cap;
        loop {
            // Pairs with the producer's release: the record is written.
            let tail = self.s().tail.0.load(Ordering::Acquire);
            let avail = tail.wrapping_sub(self.pos);
            if avail == 0 {
                return Ok(None);
            }
            if avail > cap || !avail.is_multiple_of(8) {
                return Err(corrupt());
            }
            let off = self.pos & (cap - 1);
            // SAFETY: `off` is 8-aligned (positions move by multiples of
            // 8) and below `cap`, so the header is inside the ring; the
            // producer wrote it before publishing a tail past it.
            let word = unsafe { ptr::read_volatile(self.data().add(off as usize).cast::<u64>()) };
            let (len, kind) = (word as u32 as u64, (word >> 32) as u32);
            let need = match kind {
                WRAP => cap - off,
                DATA if len <= cap / 4 => HDR + len.next_multiple_of(8),
                _ => return Err(corrupt()),
            };
            if need > avail || (kind == DATA && off + need > cap) {
                return Err(corrupt());
            }
            let record = (kind == DATA).then(|| {
                let mut out = Vec::with_capacity(len as usize);
                // SAFETY: `off + HDR + len ≤ cap` (checked above): the
                // bytes are inside the ring, published, and the producer
                // does not touch them until we release them below; `out`
                // has room for `len` bytes, all of which are written.
                unsafe {
                    ptr::copy_nonoverlapping(
                        self.data().add((off + HDR) as usize),
                        out.as_mut_ptr(),
                        len as usize,
                    );
                    out.set_len(len as usize);
                }
                out
            });
            self.pos += need;
            self.s().head.0.store(self.pos, Ordering::Release);
            if record.is_some() {
                return Ok(record);
            }
        }
    }

    /// Consumer, before it blocks: asks for a doorbell; false if a record
    /// arrived meanwhile (then do not sleep, and call
    /// [`sleep_end`](Self::sleep_end)).
    pub(crate) fn sleep_begin(&self) -> bool {
        self.s().sleeping.0.store(1, Ordering::Relaxed);
        // Orders the flag before the tail load (pairs with the fence in
        // `consumer_asleep`).
        fence(Ordering::SeqCst);
        self.s().tail.0.load(Ordering::Relaxed) == self.pos
    }

    /// Consumer, awake: no doorbell wanted.
    pub(crate) fn sleep_end(&self) {
        self.s().sleeping.0.store(0, Ordering::Relaxed);
    }
}

fn corrupt() -> Error {
    Error::invalid("a shared ring holds something that is not a record")
}

impl Serialize for Spsc {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Spsc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Spsc, D::Error> {
        let block = Block::<SpscState>::deserialize_checked(d, 0, DATA_ALIGN)?;
        let cap = block.get().cap;
        let room = (block.len() - Block::<SpscState>::tail_offset(DATA_ALIGN)) as u64;
        if !cap.is_power_of_two() || !(MIN_BYTES..=MAX_BYTES).contains(&cap) || cap > room {
            return Err(serde::de::Error::custom(
                "a shared ring's control block is corrupt",
            ));
        }
        let pos = block.get().tail.0.load(Ordering::Acquire);
        Ok(Spsc { block, cap, pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_out_in_order_across_wraps() {
        let mut p = Spsc::new(4096).unwrap();
        let mut c = p.handle();
        let mut expect = std::collections::VecDeque::new();
        for i in 0..10_000u32 {
            let rec: Vec<u8> = (0..(i % 700)).map(|k| (k ^ i) as u8).collect();
            while !p.try_put(&rec) {
                // Full: the consumer takes one, which frees room.
                assert!(!expect.is_empty(), "refused with an empty ring");
                assert_eq!(c.pop().unwrap(), expect.pop_front());
            }
            expect.push_back(rec);
        }
        while let Some(rec) = c.pop().unwrap() {
            assert_eq!(Some(rec), expect.pop_front());
        }
        assert!(expect.is_empty());
        assert!(!c.has_data());
    }

    #[test]
    fn too_large_or_full_is_refused() {
        let mut p = Spsc::new(4096).unwrap();
        assert!(!p.try_put(&[0; 1025]));
        assert!(p.try_put(&[]));
        let mut n = 1;
        while p.try_put(&[7; 100]) {
            n += 1;
        }
        assert!(n > 30);
        let mut c = p.handle();
        c.pos = 0;
        assert_eq!(c.pop().unwrap(), Some(vec![]));
        // 8 bytes freed: not room for 112.
        assert!(!p.try_put(&[7; 100]));
        assert_eq!(c.pop().unwrap(), Some(vec![7; 100]));
        assert!(p.try_put(&[7; 100]));
    }

    #[test]
    fn a_doorbell_is_asked_for_once_per_sleep() {
        let mut p = Spsc::new(4096).unwrap();
        let mut c = p.handle();
        assert!(!p.consumer_asleep());
        assert!(c.sleep_begin());
        assert!(p.try_put(b"x"));
        assert!(p.consumer_asleep());
        assert!(!p.consumer_asleep());
        // A record in the ring: the consumer must not sleep.
        assert!(!c.sleep_begin());
        c.sleep_end();
        assert!(!p.consumer_asleep());
        assert_eq!(c.pop().unwrap(), Some(b"x".to_vec()));
    }

    #[test]
    fn a_scribbled_tail_is_an_error_not_a_wild_read() {
        let p = Spsc::new(4096).unwrap();
        let mut c = p.handle();
        p.s().tail.0.store(1 << 40, Ordering::Release);
        assert!(c.pop().is_err());
        p.s().tail.0.store(16, Ordering::Release);
        // A header that names no kind.
        // SAFETY: offset 0 of the ring, which no producer is writing.
        unsafe { p.write_header(0, 4, 0xdead) };
        assert!(c.pop().is_err());
        // A length past what was published.
        // SAFETY: as above.
        unsafe { p.write_header(0, 900, DATA) };
        assert!(c.pop().is_err());
    }

    #[test]
    fn it_crosses_as_its_fd_and_works_across_threads() {
        let mut c = Spsc::new(1 << 16).unwrap();
        // Round-trip through the codec with the fds a child would get.
        let (bytes, fds) = crate::handle::encode_with_fds(&c.handle()).unwrap();
        let mut p: Spsc = crate::handle::decode_with_fds(&bytes, fds).unwrap();
        let producer = std::thread::spawn(move || {
            for i in 0..100_000u32 {
                while !p.try_put(&i.to_le_bytes()[..(i % 5) as usize]) {
                    std::thread::yield_now();
                }
            }
        });
        let mut got = 0u32;
        while got < 100_000 {
            match c.pop().unwrap() {
                Some(rec) => {
                    assert_eq!(rec, got.to_le_bytes()[..(got % 5) as usize]);
                    got += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert!(!c.has_data());
    }
}
