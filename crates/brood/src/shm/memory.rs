//! `SharedMemory`: a mapping of a memfd (anonymous) or of a POSIX shared
//! memory object (named, Python-compatible), and the typed block the
//! process-shared primitives live in.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::arena::{self, Allocation};
use super::tracker;
use crate::error::{Error, Result};

/// The mode of a segment brood creates with tracking on: the owner-execute
/// bit (meaningless for shared memory) marks it, so that every brood process
/// that attaches also registers it with its tracker. Python and untracked
/// segments are created `0o600` and are never unlinked by a tracker.
pub(crate) const TRACKED_MODE: libc::mode_t = 0o700;
const UNTRACKED_MODE: libc::mode_t = 0o600;

/// A block of memory shared between processes: `memfd` + `mmap` when
/// anonymous, `shm_open` + `mmap` when named (Python's
/// `multiprocessing.shared_memory.SharedMemory`).
///
/// Named segments live in the same POSIX namespace as Python's, so a Python
/// process can attach to a brood segment by [`name`](SharedMemory::name)
/// and the reverse. A named segment brood creates is *tracked*: it is
/// unlinked once no brood process that created or attached to it is alive,
/// even after `SIGKILL` — never under a live user (unlike Python's resource
/// tracker). Turn that off with [`Options::track`].
///
/// A `SharedMemory` crosses to a child process as an argument
/// (`Process::with_args`): an anonymous one carries its fd, a named one its
/// name. A named one also travels back, as a `join` value or over a
/// [`Connection`](crate::Connection): a tracked segment is kept while its
/// handle is in flight, even if every process that used it has exited by
/// the time the receiver attaches. Clones share one mapping.
///
/// ```
/// use brood::shm::SharedMemory;
///
/// let shm = SharedMemory::new(4096)?;
/// shm.write_at(0, b"hello")?;
/// let mut buf = [0u8; 5];
/// shm.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert_eq!(shm.len(), 4096);
/// assert!(shm.name().is_none());
/// # Ok::<(), brood::Error>(())
/// ```
///
/// # Caveats
///
/// Another process may write the bytes at any moment, so plain slices of
/// them are `unsafe` ([`as_slice`](SharedMemory::as_slice)); the copies
/// [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at)
/// are safe but may see a concurrent write half done. Guard shared data with
/// a [`Lock`](crate::sync::Lock), or use [`Value`](super::Value) and
/// [`Array`](super::Array). A Python process attaching to a segment does not
/// count as a user for brood's tracker.
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Mapping>,
}

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    /// The POSIX name without its leading slash (as Python's `.name`).
    name: Option<String>,
    tracked: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; every
// access goes through raw pointers whose users uphold their own rules, so
// moving it or sharing the handle across threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only hands out the pointer and metadata.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing
        // borrows the mapping any more (this is the last handle).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// How to create a [`SharedMemory`]: its size, whether it has a name, and
/// whether the tracker unlinks it.
///
/// ```
/// use brood::shm::SharedMemory;
///
/// // Named, with a random name, left alone by the tracker:
/// let shm = SharedMemory::options().size(64).named().track(false).create()?;
/// assert!(!shm.is_tracked());
/// shm.unlink()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    size: usize,
    name: NameChoice,
    track: bool,
}

#[derive(Debug, Clone)]
enum NameChoice {
    Anonymous,
    Random,
    Given(String),
}

impl Options {
    /// The size in bytes (required, more than zero).
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::options().size(10).create()?;
    /// assert_eq!(shm.len(), 10);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn size(mut self, size: usize) -> Options {
        self.size = size;
        self
    }

    /// Gives the segment this POSIX name (with or without the leading
    /// slash), as Python's `SharedMemory(name=..., create=True)`.
    ///
    /// ```
    /// let name = format!("brood-doc-opt-{}", std::process::id());
    /// let shm = brood::shm::SharedMemory::options().name(&name).size(8).create()?;
    /// assert_eq!(shm.name(), Some(name.as_str()));
    /// shm.unlink()?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn name(mut self, name: &str) -> Options {
        self.name = NameChoice::Given(name.to_string());
        self
    }

    /// Gives the segment a random name (`brood_` and 8 hex digits), as
    /// Python's `SharedMemory(create=True, size=n)`.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::options().named().size(8).create()?;
    /// assert!(shm.name().unwrap().starts_with("brood_"));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn named(mut self) -> Options {
        if let NameChoice::Anonymous = self.name {
            self.name = NameChoice::Random;
        }
        self
    }

    /// Whether brood's tracker unlinks the named segment once no brood
    /// process that created or attached to it is alive (default: yes).
    /// Without tracking the segment outlives every process until someone
    /// calls [`SharedMemory::unlink`]. Anonymous segments need no tracking.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::options().named().size(8).track(false).create()?;
    /// shm.unlink()?; // ours to remove
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn track(mut self, track: bool) -> Options {
        self.track = track;
        self
    }

    /// Creates the segment, zero-filled. A given name that exists already is
    /// an error (`EEXIST`), as in Python.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::options().size(3).create()?;
    /// assert_eq!(shm.to_vec(), vec![0, 0, 0]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn create(self) -> Result<SharedMemory> {
        if self.size == 0 {
            return Err(Error::invalid(
                "a shared memory segment must be larger than 0 bytes",
            ));
        }
        match self.name {
            NameChoice::Anonymous => create_anonymous(self.size),
            NameChoice::Given(name) => create_named(&posix_name(&name)?, self.size, self.track),
            NameChoice::Random => loop {
                let name = random_name()?;
                match create_named(&name, self.size, self.track) {
                    Err(e) if e.io().and_then(io::Error::raw_os_error) == Some(libc::EEXIST) => {
                        continue;
                    }
                    other => break other,
                }
            },
        }
    }
}

impl SharedMemory {
    /// An anonymous segment of `size` zero bytes (`memfd_create`): no name,
    /// nothing to unlink, gone when the last process holding it closes it.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::new(100)?;
    /// assert_eq!(shm.len(), 100);
    /// # Ok::<(), brood::Error>(())
    /// ```
    #[doc(alias = "memfd_create")]
    pub fn new(size: usize) -> Result<SharedMemory> {
        SharedMemory::options().size(size).create()
    }

    /// Creates a named, tracked segment of `size` zero bytes
    /// (`shm_open(O_CREAT | O_EXCL)`), as Python's
    /// `SharedMemory(name, create=True, size=size)`; `None` picks a random
    /// name.
    ///
    /// ```
    /// use brood::shm::SharedMemory;
    /// let shm = SharedMemory::create(None, 4096)?;
    /// let again = SharedMemory::open(shm.name().unwrap())?;
    /// again.write_at(0, &[7])?;
    /// assert_eq!(shm.to_vec()[0], 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    #[doc(alias = "shm_open")]
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        let options = SharedMemory::options().size(size).named();
        match name {
            Some(name) => options.name(name),
            None => options,
        }
        .create()
    }

    /// Attaches to the named segment (`shm_open`), created by brood, Python
    /// or anyone else; its size is the segment's. A missing name is an
    /// [`Io`](crate::ErrorKind::Io) error of kind `NotFound`.
    ///
    /// If brood created the segment with tracking, this process now counts
    /// as one of its users: the segment outlives the creator while this
    /// process is alive.
    ///
    /// ```
    /// let err = brood::shm::SharedMemory::open("brood-no-such-segment").unwrap_err();
    /// assert_eq!(err.io().unwrap().kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> Result<SharedMemory> {
        open_named(&posix_name(name)?)
    }

    /// A builder for the less common cases (random names, no tracking).
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::options().size(16).create()?;
    /// assert_eq!(shm.len(), 16);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn options() -> Options {
        Options {
            size: 0,
            name: NameChoice::Anonymous,
            track: true,
        }
    }

    /// The size in bytes.
    ///
    /// ```
    /// assert_eq!(brood::shm::SharedMemory::new(8)?.len(), 8);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always `false`: a segment has at least one byte.
    ///
    /// ```
    /// assert!(!brood::shm::SharedMemory::new(1)?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The POSIX name without its leading slash (Python's `.name`), or
    /// `None` for an anonymous segment.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::create(None, 8)?;
    /// assert!(shm.name().is_some());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Whether brood's tracker will unlink this named segment once no brood
    /// process uses it.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::create(None, 8)?;
    /// assert!(shm.is_tracked());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_tracked(&self) -> bool {
        self.inner.tracked
    }

    /// The start of the mapping. Reads and writes through it race with
    /// other processes unless they agree on a protocol.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::new(8)?;
    /// assert!(!shm.as_ptr().is_null());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.ptr.as_ptr()
    }

    /// The bytes, as a slice (Python's `.buf`).
    ///
    /// # Safety
    ///
    /// No process (nor thread) may write the bytes while the slice lives,
    /// e.g. because every writer holds a [`Lock`](crate::sync::Lock) the
    /// caller holds too.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::new(4)?;
    /// // SAFETY: nobody else knows this segment yet.
    /// assert_eq!(unsafe { shm.as_slice() }, &[0, 0, 0, 0]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self`
        // lives; the caller rules out concurrent writers.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The bytes, as a mutable slice (Python's `.buf`).
    ///
    /// # Safety
    ///
    /// Nothing else — no other process, thread, slice or copy — may read or
    /// write the bytes while the slice lives.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::new(4)?;
    /// // SAFETY: nobody else knows this segment yet.
    /// unsafe { shm.as_mut_slice() }.copy_from_slice(b"abcd");
    /// assert_eq!(shm.to_vec(), b"abcd");
    /// # Ok::<(), brood::Error>(())
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes for as long as `self`
        // lives; the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`; out of bounds is an
    /// [`InvalidState`](crate::ErrorKind::InvalidState) error.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::new(4)?;
    /// let mut two = [1u8; 2];
    /// shm.read_at(2, &mut two)?;
    /// assert_eq!(two, [0, 0]);
    /// assert!(shm.read_at(3, &mut two).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: the range is inside the mapping (checked above) and `buf`
        // is a distinct local buffer; no reference to the shared bytes is
        // formed, so a concurrent writer can only tear the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `bytes` into the segment at `offset`; out of bounds is an
    /// [`InvalidState`](crate::ErrorKind::InvalidState) error.
    ///
    /// ```
    /// let shm = brood::shm::SharedMemory::new(4)?;
    /// shm.write_at(1, b"xy")?;
    /// assert_eq!(shm.to_vec(), b"\0xy\0");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.check_range(offset, bytes.len())?;
        // SAFETY: the range is inside the writable mapping (checked above);
        // no reference to the shared bytes is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.as_ptr().add(offset), bytes.len())
        };
        Ok(())
    }

    /// A copy of all the bytes.
    ///
    /// ```
    /// assert_eq!(brood::shm::SharedMemory::new(2)?.to_vec(), vec![0, 0]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        // In bounds by construction.
        let _ = self.read_at(0, &mut out);
        out
    }

    /// Removes the segment's name (`shm_unlink`), as Python's `unlink()`:
    /// processes that have it mapped keep using it, no one can attach any
    /// more. An anonymous segment has no name: this does nothing.
    ///
    /// ```
    /// use brood::shm::SharedMemory;
    /// let shm = SharedMemory::create(None, 8)?;
    /// let name = shm.name().unwrap().to_string();
    /// shm.unlink()?;
    /// assert!(SharedMemory::open(&name).is_err());
    /// shm.write_at(0, b"mapped")?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    #[doc(alias = "shm_unlink")]
    pub fn unlink(&self) -> Result<()> {
        let Some(name) = &self.inner.name else {
            return Ok(());
        };
        let c = CString::new(format!("/{name}")).map_err(|e| Error::invalid(e.to_string()))?;
        // SAFETY: `c` is a NUL-terminated string alive for the call.
        if unsafe { libc::shm_unlink(c.as_ptr()) } == -1 {
            return Err(Error::os_error(
                format!("cannot unlink shared memory {name:?}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::invalid(format!(
                "range {offset}..{} is outside the {}-byte segment",
                offset.saturating_add(len),
                self.len()
            ))),
        }
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.inner.name)
            .field("len", &self.inner.len)
            .field("tracked", &self.inner.tracked)
            .finish()
    }
}

#[derive(Serialize)]
enum WireRef<'a> {
    Fd(#[serde(serialize_with = "crate::handle::serialize_fd")] BorrowedFd<'a>),
    /// An untracked segment: its name is all a receiver needs.
    Named(&'a str),
    /// A tracked segment, pinned by this tree's tracker until the receiver
    /// has attached and sends the token back.
    Pinned(&'a str, u64),
}

#[derive(Deserialize)]
enum WireOwned {
    Fd(#[serde(deserialize_with = "crate::handle::deserialize_fd")] OwnedFd),
    Named(String),
    Pinned(String, u64),
}

/// A handle crosses to another process as its fd (anonymous) or its name
/// (named). A tracked named segment is *pinned* first: the tracker keeps it
/// while the handle is in flight, even if every process that used it exits
/// before the receiver attaches (a child returning it from `join`, or
/// sending it and leaving). The receiver attaches, then releases the pin.
/// A handle that is never received keeps its segment until its tree's last
/// process has exited.
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.inner.name {
            Some(name) if self.inner.tracked => {
                let token = tracker::pin(&self.inner.fd, &format!("/{name}")).map_err(|e| {
                    serde::ser::Error::custom(format!(
                        "cannot pin shared memory {name:?} with the resource tracker: {e}"
                    ))
                })?;
                WireRef::Pinned(name, token)
            }
            Some(name) => WireRef::Named(name),
            None => WireRef::Fd(self.inner.fd.as_fd()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let shm = match WireOwned::deserialize(deserializer)? {
            WireOwned::Fd(fd) => map_fd(fd, None, false),
            WireOwned::Named(name) => posix_name(&name).and_then(|n| open_named(&n)),
            WireOwned::Pinned(name, token) => {
                let shm = posix_name(&name).and_then(|n| open_named(&n));
                // Attached (our own lock and registration come first), or
                // never will be: either way the pin has done its work.
                let _ = tracker::unpin(token);
                shm
            }
        };
        shm.map_err(serde::de::Error::custom)
    }
}

/// `name` with its leading slash, checked: what `shm_open` takes.
fn posix_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > 250 || bare.contains(['/', '\0']) {
        return Err(Error::invalid(format!(
            "{name:?} is not a valid shared memory name (1 to 250 characters, no '/' after the first)"
        )));
    }
    Ok(format!("/{bare}"))
}

fn random_name() -> Result<String> {
    let mut bytes = [0u8; 4];
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(Error::os_error("getrandom", io::Error::last_os_error()));
    }
    Ok(format!("/brood_{:08x}", u32::from_ne_bytes(bytes)))
}

fn create_anonymous(size: usize) -> Result<SharedMemory> {
    // SAFETY: the name is a NUL-terminated literal; flags are plain ints.
    let raw = unsafe { libc::memfd_create(c"brood".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Error::os_error("memfd_create", io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    truncate(&fd, size)?;
    map_fd(fd, None, false)
}

fn create_named(posix: &str, size: usize, track: bool) -> Result<SharedMemory> {
    let mode = if track { TRACKED_MODE } else { UNTRACKED_MODE };
    let c = CString::new(posix).map_err(|e| Error::invalid(e.to_string()))?;
    // SAFETY: `c` is NUL-terminated and alive for the call.
    let raw = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            mode,
        )
    };
    if raw < 0 {
        return Err(Error::os_error(
            format!("cannot create shared memory {:?}", &posix[1..]),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: shm_open returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let setup = (|| {
        // The umask may have cleared bits of `mode`: set it exactly.
        // SAFETY: fchmod on an open fd touches no memory.
        if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } == -1 {
            return Err(Error::os_error("fchmod", io::Error::last_os_error()));
        }
        tracker::hold_shared(&fd, false)
            .map_err(|e| Error::os_error("cannot lock shared memory", e))?;
        truncate(&fd, size)?;
        if track {
            tracker::register(&fd, posix)
                .map_err(|e| Error::os_error("cannot register with the resource tracker", e))?;
        }
        Ok(())
    })();
    // Every failure after shm_open (the mode, the lock, the size, the
    // tracker, the mapping: `1 << 48` bytes pass ftruncate on tmpfs and fail
    // in mmap) removes the name again: a failed create leaves nothing.
    let made = setup.and_then(|()| map_fd(fd, Some(posix[1..].to_string()), track));
    if made.is_err() {
        // SAFETY: `c` is NUL-terminated; we created this name just now.
        unsafe { libc::shm_unlink(c.as_ptr()) };
    }
    made
}

fn open_named(posix: &str) -> Result<SharedMemory> {
    let bare = &posix[1..];
    let c = CString::new(posix).map_err(|e| Error::invalid(e.to_string()))?;
    let not_found = || {
        Error::os_error(
            format!("no shared memory named {bare:?}"),
            io::Error::from_raw_os_error(libc::ENOENT),
        )
    };
    loop {
        // SAFETY: `c` is NUL-terminated and alive for the call.
        let raw = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if raw < 0 {
            return Err(Error::os_error(
                format!("cannot open shared memory {bare:?}"),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: shm_open returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Waits only while a tracker is deciding to unlink this very
        // segment; afterwards the name says whether it survived.
        tracker::hold_shared(&fd, true)
            .map_err(|e| Error::os_error("cannot lock shared memory", e))?;
        let ours = tracker::identity(&fd).map_err(|e| Error::os_error("fstat", e))?;
        match tracker::name_identity(posix) {
            Ok(Some(now)) if now == ours => {}
            // Replaced under the same name meanwhile: attach to the new one.
            Ok(Some(_)) => continue,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(Error::os_error("fstat", e)),
        }
        let tracked = ours.mode & 0o777 == TRACKED_MODE;
        if tracked {
            tracker::register(&fd, posix)
                .map_err(|e| Error::os_error("cannot register with the resource tracker", e))?;
        }
        return map_fd(fd, Some(bare.to_string()), tracked);
    }
}

fn truncate(fd: &OwnedFd, size: usize) -> Result<()> {
    // SAFETY: ftruncate on an open fd touches no memory.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } == -1 {
        return Err(Error::os_error("ftruncate", io::Error::last_os_error()));
    }
    Ok(())
}

/// Maps all of `fd` (its size from `fstat`).
fn map_fd(fd: OwnedFd, name: Option<String>, tracked: bool) -> Result<SharedMemory> {
    let len = tracker::identity(&fd)
        .map_err(|e| Error::os_error("fstat", e))?
        .size;
    if len == 0 {
        return Err(Error::invalid("cannot map an empty shared memory segment"));
    }
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
    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::invalid("mmap returned null"))?;
    Ok(SharedMemory {
        inner: Arc::new(Mapping {
            ptr,
            len,
            fd,
            name,
            tracked,
        }),
    })
}

/// State that lives at the start of a shared block: the process-shared
/// primitives and the headers of `Value`/`Array`.
///
/// # Safety
///
/// The type must be `#[repr(C)]`, valid when all-zero (a fresh segment),
/// and shared only through atomics or cells whose users synchronise.
pub(crate) unsafe trait SharedState: Sync {
    /// Tells blocks of different types apart when one crosses to a child.
    const MAGIC: u32;

    /// Whether the memory must stay mapped even after the last handle in
    /// this process goes (a robust mutex in it that a thread of this
    /// process holds is on that thread's robust list, which must never
    /// point at unmapped memory).
    fn must_stay_mapped(&self) -> bool {
        false
    }
}

#[repr(C)]
struct Slot<T> {
    magic: u32,
    state: T,
}

/// A block of shared memory holding a `T` at its start (after a magic
/// word), and any bytes after it: a piece of an arena when it is small
/// (`shm/arena.rs`), a segment of its own otherwise. The memory stays
/// mapped as long as the block (or a clone) lives.
pub(crate) struct Block<T: SharedState> {
    /// The address of the `Slot<T>`, and the block's length.
    base: usize,
    len: usize,
    place: Place,
    _state: PhantomData<fn() -> T>,
}

#[derive(Clone)]
enum Place {
    /// A segment of its own.
    Own(SharedMemory),
    /// A piece of an arena.
    Arena(Arc<Allocation>),
}

impl Place {
    /// Whether this is the last handle of the memory in this process.
    fn is_last(&self) -> bool {
        match self {
            Place::Own(mem) => Arc::strong_count(&mem.inner) == 1,
            Place::Arena(a) => Arc::strong_count(a) == 1,
        }
    }
}

impl<T: SharedState> Drop for Block<T> {
    fn drop(&mut self) {
        if self.place.is_last() && self.get().must_stay_mapped() {
            // Never unmapped, never reused: a robust list points into it.
            std::mem::forget(self.place.clone());
        }
    }
}

impl<T: SharedState> Clone for Block<T> {
    fn clone(&self) -> Self {
        Block {
            base: self.base,
            len: self.len,
            place: self.place.clone(),
            _state: PhantomData,
        }
    }
}

/// How a block crosses to another process (see [`Block::from_wire`]).
#[derive(Clone, Deserialize)]
pub(crate) enum BlockWire {
    Own(SharedMemory),
    Arena {
        key: u64,
        fd: u32,
        offset: u64,
        len: u64,
    },
}

#[derive(Serialize)]
enum BlockWireRef<'a> {
    Own(&'a SharedMemory),
    Arena {
        key: u64,
        fd: u32,
        offset: u64,
        len: u64,
    },
}

impl<T: SharedState> Serialize for Block<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.place {
            Place::Own(mem) => BlockWireRef::Own(mem),
            Place::Arena(a) => {
                let (key, fd, offset, len) = a.wire().map_err(serde::ser::Error::custom)?;
                BlockWireRef::Arena {
                    key,
                    fd,
                    offset,
                    len,
                }
            }
        }
        .serialize(serializer)
    }
}

/// The state of a block just allocated: zeroed, and known to no one else
/// yet. What [`Block::new_fresh`]'s set-up gets, so that setting up a
/// shared primitive needs no `unsafe` outside `shm/` and `sync/`'s mutex.
/// Only `new_fresh` makes one, and only for the duration of the set-up.
pub(crate) struct Fresh<'a, T> {
    ptr: *mut T,
    _life: PhantomData<&'a mut T>,
}

impl<'a, T> Fresh<'a, T> {
    /// The state, to set through its atomics. Valid: a `SharedState` is
    /// valid all-zero, and so is each of its fields.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: `ptr` points at a zeroed (so valid, per `SharedState`),
        // aligned `T` in a live mapping, for the set-up's duration; no one
        // else knows it, and it is only changed through shared references
        // (atomics) or by the owner of this `Fresh`.
        unsafe { &*self.ptr }
    }

    /// One part of the state (a field), itself fresh; `part` must return a
    /// reference into the state, or this panics.
    pub(crate) fn part<U>(&self, part: impl FnOnce(&T) -> &U) -> Fresh<'a, U> {
        let start = self.ptr as usize;
        let at = part(self.get()) as *const U as usize;
        assert!(
            at >= start && at + std::mem::size_of::<U>() <= start + std::mem::size_of::<T>(),
            "brood: Fresh::part must name a field of the fresh state"
        );
        Fresh {
            ptr: at as *mut U,
            _life: PhantomData,
        }
    }

    /// The raw address, for the raw-memory types that set themselves up in
    /// place (`sync::mutex`).
    pub(crate) fn as_mut_ptr(&self) -> *mut T {
        self.ptr
    }
}

impl<T: SharedState> Block<T> {
    /// [`new`](Block::new), with the set-up given the fresh state as a
    /// [`Fresh`] instead of a raw pointer.
    pub(crate) fn new_fresh(
        tail: usize,
        align: usize,
        init: impl FnOnce(Fresh<'_, T>) -> io::Result<()>,
    ) -> Result<Block<T>> {
        Block::new(tail, align, |ptr| {
            init(Fresh {
                ptr,
                _life: PhantomData,
            })
        })
    }

    /// The offset of the first byte after the state, aligned to `align`.
    pub(crate) fn tail_offset(align: usize) -> usize {
        std::mem::size_of::<Slot<T>>().next_multiple_of(align.max(64))
    }

    /// A block with `tail` more bytes (aligned to `align`) after the state,
    /// zeroed, then set up by `init` before anyone else can see it.
    pub(crate) fn new(
        tail: usize,
        align: usize,
        init: impl FnOnce(*mut T) -> io::Result<()>,
    ) -> Result<Block<T>> {
        let size = Self::tail_offset(align)
            .checked_add(tail)
            .ok_or_else(|| Error::invalid("shared block too large"))?;
        let (base, len, place) = if size <= arena::MAX_OBJECT && align <= arena::GRAIN {
            let a = arena::alloc(size)?;
            (a.ptr() as usize, a.len(), Place::Arena(Arc::new(a)))
        } else {
            let mem = SharedMemory::new(size)?;
            (mem.as_ptr() as usize, mem.len(), Place::Own(mem))
        };
        let slot = base as *mut Slot<T>;
        // SAFETY: the memory is `GRAIN`- or page-aligned, zero-filled, at
        // least `size_of::<Slot<T>>()` bytes, and known to no one else yet.
        unsafe {
            init(&raw mut (*slot).state)
                .map_err(|e| Error::os_error("cannot set up shared state", e))?;
            (*slot).magic = T::MAGIC;
        }
        Ok(Block {
            base,
            len,
            place,
            _state: PhantomData,
        })
    }

    /// A block received from another process, checked for size and type.
    pub(crate) fn from_wire(wire: BlockWire, tail: usize, align: usize) -> Result<Block<T>> {
        let (base, len, place) = match wire {
            BlockWire::Own(mem) => (mem.as_ptr() as usize, mem.len(), Place::Own(mem)),
            BlockWire::Arena {
                key,
                fd,
                offset,
                len,
            } => {
                let a = arena::receive(key, fd, offset, len)?;
                (a.ptr() as usize, a.len(), Place::Arena(Arc::new(a)))
            }
        };
        let need = Self::tail_offset(align).saturating_add(tail);
        if len < need {
            return Err(Error::invalid("shared block is smaller than its type"));
        }
        // SAFETY: the memory is aligned (page or `GRAIN`) and holds at
        // least a Slot<T>; the magic word is only written before the block
        // is shared.
        let magic = unsafe { (*(base as *const Slot<T>)).magic };
        if magic != T::MAGIC {
            return Err(Error::invalid("shared block holds another type"));
        }
        Ok(Block {
            base,
            len,
            place,
            _state: PhantomData,
        })
    }

    /// Deserializes a block and checks it (see [`from_wire`](Self::from_wire)).
    pub(crate) fn deserialize_checked<'de, D: Deserializer<'de>>(
        deserializer: D,
        tail: usize,
        align: usize,
    ) -> std::result::Result<Block<T>, D::Error> {
        let wire = BlockWire::deserialize(deserializer)?;
        Block::from_wire(wire, tail, align).map_err(serde::de::Error::custom)
    }

    /// The shared state.
    #[inline]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: checked (or initialised) at construction: the memory holds
        // a valid Slot<T> for as long as `self` keeps it mapped; T is Sync
        // and only mutated through its own interior mutability.
        unsafe { &(*(self.base as *const Slot<T>)).state }
    }

    /// The first byte after the state.
    pub(crate) fn tail(&self, align: usize) -> *mut u8 {
        (self.base + Self::tail_offset(align)) as *mut u8
    }

    /// The block's length in bytes (state and tail, and any rounding).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Event, Lock};

    fn memory_of(value: &SharedMemory) -> SharedMemory {
        // Round-trip through the codec with the fds a child would get.
        let (bytes, fds) = crate::handle::encode_with_fds(value).unwrap();
        crate::handle::decode_with_fds(&bytes, fds).unwrap()
    }

    #[test]
    fn a_block_of_another_type_is_refused() {
        type LockBlock = Block<crate::sync::lock::LockState>;
        let lock = Lock::new().unwrap();
        let (bytes, fds) = crate::handle::encode_with_fds(&lock).unwrap();
        let wire: BlockWire = crate::handle::decode_with_fds(&bytes, fds).unwrap();
        assert!(LockBlock::from_wire(wire, 0, 1).is_ok());
        let (bytes, fds) = crate::handle::encode_with_fds(&lock).unwrap();
        let as_event: Result<Event> = crate::handle::decode_with_fds(&bytes, fds);
        assert!(as_event.is_err());
        let too_small = SharedMemory::new(8).unwrap();
        assert!(LockBlock::from_wire(BlockWire::Own(too_small), 0, 1).is_err());
    }

    #[test]
    fn an_arena_object_outside_its_arena_is_refused() {
        type LockBlock = Block<crate::sync::lock::LockState>;
        let lock = Lock::new().unwrap();
        let (bytes, fds) = crate::handle::encode_with_fds(&lock).unwrap();
        let wire: BlockWire = crate::handle::decode_with_fds(&bytes, fds).unwrap();
        let BlockWire::Arena { key, fd, .. } = wire else {
            panic!("a Lock lives in an arena")
        };
        for (offset, len) in [
            (u64::MAX - 63, 64),
            (1 << 40, 64),
            (3, 64),
            (0, 0),
            (0, 1 << 20),
        ] {
            let bad = BlockWire::Arena {
                key,
                fd,
                offset,
                len,
            };
            assert!(LockBlock::from_wire(bad, 0, 1).is_err(), "{offset} {len}");
        }
    }

    #[test]
    fn freed_arena_space_is_reused_and_zeroed() {
        type LockBlock = Block<crate::sync::lock::LockState>;
        // A fork by another test thread in between keeps the space (a child
        // may hold it): try again then.
        for _ in 0..100 {
            let forks = arena::forks();
            let first = LockBlock::new(0, 1, |_| Ok(())).unwrap();
            let at = first.base;
            let tail = first.len() - LockBlock::tail_offset(1);
            // SAFETY: fresh block of this test; nothing else uses it.
            unsafe { std::ptr::write_bytes(first.tail(1), 0xAB, tail) };
            drop(first);
            let again = LockBlock::new(0, 1, |_| Ok(())).unwrap();
            if arena::forks() != forks {
                continue;
            }
            assert_eq!(again.base, at, "the freed slot is the next one handed out");
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(again.tail(1), tail) };
            assert!(bytes.iter().all(|&b| b == 0), "reused space is zeroed");
            return;
        }
        panic!("forks all the time");
    }

    #[test]
    fn an_anonymous_segment_crosses_as_its_fd() {
        let shm = SharedMemory::new(16).unwrap();
        shm.write_at(0, b"same pages").unwrap();
        let copy = memory_of(&shm);
        let mut buf = [0u8; 10];
        copy.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"same pages");
        copy.write_at(0, b"SAME").unwrap();
        shm.read_at(0, &mut buf[..4]).unwrap();
        assert_eq!(&buf[..4], b"SAME");
    }
}
