//! Shared memory seen as 64-bit atomic words: how the pool's status page
//! (`pool/status.rs`) is written by its pool and read by `brood top`.
//!
//! - [`SharedMemory::words`]: the writer's view of a segment it created.
//! - [`ReadOnlyWords`]: a reader's view of a file under `/dev/shm`, mapped
//!   `PROT_READ` without the tracker's lock or registration (a reader must
//!   never keep a page alive, nor be able to scribble on it).
//!
//! Both hand out `&[AtomicU64]` tied to the mapping's lifetime: any
//! process may store to the words at any moment, and atomics are the only
//! sound way to look at memory that changes under us.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use super::SharedMemory;

impl SharedMemory {
    /// The segment as atomic 64-bit words (its length rounded down to a
    /// multiple of 8).
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping starts on a page boundary (mmap), so it is
        // aligned for `AtomicU64`; it is `len` bytes long and stays mapped
        // while `self` (which holds it) is borrowed. `AtomicU64` has the
        // size and alignment of `u64`, and every access through it is
        // atomic, so concurrent stores by other processes are no data race.
        unsafe { std::slice::from_raw_parts(self.as_ptr().cast::<AtomicU64>(), self.len() / 8) }
    }
}

/// The first `len` bytes of a regular file mapped read-write and shared,
/// seen as atomic 64-bit words: how `brood::log`'s writers share the current
/// file's size and identity through the log's lock file, across unrelated
/// processes (see `log/README.md`). The file must stay at least `len` bytes
/// long while mapped (a store past its end would be `SIGBUS`).
pub(crate) struct FileWords {
    ptr: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is owned by this value and only reached through atomics.
unsafe impl Send for FileWords {}
// SAFETY: as above: every access through a shared reference is atomic.
unsafe impl Sync for FileWords {}

impl FileWords {
    /// Maps `len` bytes (a multiple of 8) of `file` from offset 0; the
    /// caller has made the file at least that long.
    pub(crate) fn map(file: &std::fs::File, len: usize) -> io::Result<FileWords> {
        if len == 0 || !len.is_multiple_of(8) || file.metadata()?.len() < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file too short to map its words",
            ));
        }
        // SAFETY: a fresh shared mapping of an open file; the kernel picks
        // the address, so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(FileWords {
            ptr,
            words: len / 8,
        })
    }

    /// The words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is page-aligned and `words * 8` bytes are mapped
        // read-write for as long as `self` lives; `AtomicU64` has the size
        // and alignment of `u64`, and other processes' stores are atomic
        // too, so there is no data race.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for FileWords {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned; no borrow of it can
        // outlive `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 8) };
    }
}

/// A file mapped read-only, seen as atomic 64-bit words.
pub(crate) struct ReadOnlyWords {
    ptr: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is owned by this value and only read, through atomics.
unsafe impl Send for ReadOnlyWords {}
// SAFETY: as above: shared references only load atomically.
unsafe impl Sync for ReadOnlyWords {}

impl ReadOnlyWords {
    /// Maps all of `path` read-only; `Ok(None)` if it is shorter than 8
    /// bytes (a page still being created).
    pub(crate) fn open(path: &Path) -> io::Result<Option<ReadOnlyWords>> {
        use std::os::unix::fs::OpenOptionsExt;
        // Never block on a FIFO or follow a link someone named like a page.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let len = meta.len();
        let len = usize::try_from(len).unwrap_or(usize::MAX) & !7;
        // More than 64 MiB is not a status page: refuse rather than map
        // whatever someone named like one.
        if !(8..=64 << 20).contains(&len) {
            return Ok(None);
        }
        // SAFETY: a fresh shared read-only mapping of an open file; the
        // kernel picks the address, so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Some(ReadOnlyWords {
            ptr,
            words: len / 8,
        }))
    }

    /// The words. Loads only: the memory is mapped read-only.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is page-aligned and `words * 8` bytes are mapped
        // for as long as `self` lives. Relaxed and acquire loads of a
        // native 64-bit atomic are plain loads, which read-only memory
        // allows (std documents atomic loads of read-only memory as fine
        // for lock-free sizes up to the pointer width); nothing here
        // stores or does read-modify-write.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for ReadOnlyWords {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned; no borrow of it can
        // outlive `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_reader_sees_the_writers_words() {
        let name = format!("brood-words-test-{}", std::process::id());
        let shm = SharedMemory::options()
            .name(&name)
            .size(4096)
            .track(false)
            .create()
            .unwrap();
        shm.words()[3].store(42, Ordering::Release);
        let reader = ReadOnlyWords::open(&Path::new("/dev/shm").join(&name))
            .unwrap()
            .unwrap();
        assert_eq!(reader.words().len(), 512);
        assert_eq!(reader.words()[3].load(Ordering::Acquire), 42);
        shm.words()[3].store(7, Ordering::Release);
        assert_eq!(reader.words()[3].load(Ordering::Acquire), 7);
        shm.unlink().unwrap();
    }
}
