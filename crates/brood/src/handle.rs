//! File descriptors inside values that cross to a child process.
//!
//! A value handed to a child as an argument (`Process::with_args`,
//! `Builder::target_with`) may hold open files: pipe ends, sockets, shared
//! memory segments. Its `Serialize` impl calls [`serialize_fd`], which
//! duplicates the fd and records it beside the encoded bytes; the launcher
//! carries the recorded fds to the child (inherited under fork, SCM_RIGHTS
//! under spawn and forkserver), where [`deserialize_fd`] hands each back as
//! an `OwnedFd`. A value sent with `Connection::send` over a Unix
//! connection carries its fds the same way (SCM_RIGHTS, with the message),
//! so a `Connection` or a shared-memory segment can be sent to a running
//! process. Outside such a transfer (`codec::encode`, a TCP connection)
//! serializing an fd is an error, never a dangling number.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::fd::OwnedFd;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Output(
//!     #[serde(serialize_with = "brood::handle::serialize_fd", deserialize_with = "brood::handle::deserialize_fd")]
//!     OwnedFd,
//! );
//!
//! let path = std::env::temp_dir().join(format!("brood-handle-doc-{}", std::process::id()));
//! let file = std::fs::File::create(&path).unwrap();
//! let mut p = brood::Process::with_args(
//!     |out: Output| std::fs::File::from(out.0).write_all(b"written by the child").unwrap(),
//!     Output(file.into()),
//! );
//! p.start().unwrap();
//! p.join().unwrap();
//! let mut text = String::new();
//! std::fs::File::open(&path).unwrap().read_to_string(&mut text).unwrap();
//! assert_eq!(text, "written by the child");
//! std::fs::remove_file(&path).unwrap();
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::error::Result;
use crate::shm::arena::Pin;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The fds recorded once per key (an arena's) in the transfer in
    /// progress: key → index.
    static OUTGOING_KEYS: RefCell<Option<HashMap<u64, u32>>> = const { RefCell::new(None) };
    /// The holds the transfer in progress took on arena blocks, and how its
    /// bytes are decoded.
    static PINS: RefCell<Option<(Decoded, Vec<Pin>)>> = const { RefCell::new(None) };
}

/// How many times a transfer's bytes may be decoded; says what becomes of
/// the hold its serialization takes on each arena block it carries
/// (`shm/README.md`, "Freeing").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decoded {
    /// At most once (a message, a child's arguments): the decoder takes
    /// the hold over and gives it back when its handle goes; bytes never
    /// decoded keep it for ever.
    AtMostOnce,
    /// Any number of times (a pool's initializer, a task that may be
    /// retried): the block is never reused (its count is stuck).
    AnyNumber,
}

/// The holds a transfer took on arena blocks: given back when dropped
/// (the bytes were not sent), kept by [`Pinned::keep`].
#[must_use]
pub(crate) struct Pinned(Vec<Pin>);

impl Pinned {
    /// The bytes are sent: the holds now belong to them.
    pub(crate) fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pin in self.0.drain(..) {
            pin.undo();
        }
    }
}

/// Runs `encode` as one transfer: the fds its value holds are duplicated
/// into it, and its arena blocks pinned (see [`Decoded`]).
fn transfer<R>(
    decoded: Decoded,
    encode: impl FnOnce() -> Result<R>,
) -> Result<(R, Vec<OwnedFd>, Pinned)> {
    let previous = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let previous_keys = OUTGOING_KEYS.with(|k| k.borrow_mut().replace(HashMap::new()));
    let previous_pins = PINS.with(|p| p.borrow_mut().replace((decoded, Vec::new())));
    let encoded = encode();
    let fds = OUTGOING
        .with(|o| std::mem::replace(&mut *o.borrow_mut(), previous))
        .unwrap_or_default();
    OUTGOING_KEYS.with(|k| *k.borrow_mut() = previous_keys);
    let pins = PINS
        .with(|p| std::mem::replace(&mut *p.borrow_mut(), previous_pins))
        .map(|(_, pins)| Pinned(pins))
        .unwrap_or(Pinned(Vec::new()));
    // On failure `pins` is dropped here: the holds are given back.
    encoded.map(|r| (r, fds, pins))
}

/// Encodes `value`, collecting (duplicates of) the fds it holds. The bytes
/// may be decoded any number of times: the arena blocks they carry are
/// never reused by their creator.
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let (bytes, fds, pins) = transfer(Decoded::AnyNumber, || codec::encode(value))?;
    pins.keep();
    Ok((bytes, fds))
}

/// Encodes `value` for bytes decoded at most once (a child's arguments):
/// the decoder takes over the holds on the arena blocks they carry, so
/// their space comes back once every process is done with them.
pub(crate) fn encode_once_with_fds<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let (bytes, fds, pins) = transfer(Decoded::AtMostOnce, || codec::encode(value))?;
    pins.keep();
    Ok((bytes, fds))
}

/// Encodes `value` into `buf`, collecting (duplicates of) the fds it holds
/// (bytes that may be decoded any number of times: a pool's task).
pub(crate) fn encode_into_with_fds<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<Vec<OwnedFd>> {
    let ((), fds, pins) = transfer(Decoded::AnyNumber, || codec::encode_into(buf, value))?;
    pins.keep();
    Ok(fds)
}

/// Encodes `value` into `buf` for one message (`Connection::send`: decoded
/// at most once), collecting (duplicates of) the fds it holds; the holds
/// taken on arena blocks are given back unless the caller keeps them once
/// the message is on its way ([`Pinned::keep`]).
pub(crate) fn encode_into_once_with_fds<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<(Vec<OwnedFd>, Pinned)> {
    let ((), fds, pins) = transfer(Decoded::AtMostOnce, || codec::encode_into(buf, value))?;
    Ok((fds, pins))
}

/// Whether the transfer in progress is decoded at most once (its arena
/// blocks are then handed over to the decoder, see [`Decoded`]).
pub(crate) fn decoded_at_most_once() -> bool {
    PINS.with(|p| {
        p.borrow()
            .as_ref()
            .is_some_and(|(decoded, _)| *decoded == Decoded::AtMostOnce)
    })
}

/// Records the hold the transfer in progress took on an arena block, to
/// give back if the transfer fails.
pub(crate) fn note_pin(pin: Pin) {
    PINS.with(|p| match p.borrow_mut().as_mut() {
        Some((_, pins)) => pins.push(pin),
        // Not in a transfer (never: `decoded_at_most_once` said it was).
        None => drop(pin),
    });
}

/// Runs `f` (which decodes) with `fds` available to [`deserialize_fd`].
pub(crate) fn with_incoming<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let previous = INCOMING.with(|i| i.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let out = f();
    INCOMING.with(|i| *i.borrow_mut() = previous);
    out
}

/// Decodes a value received with its fds (what a child does; unit tests
/// use it to round-trip values without starting one).
#[cfg(test)]
pub(crate) fn decode_with_fds<T: de::DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T> {
    with_incoming(fds, || codec::decode(bytes))
}

/// Records (a duplicate of) `fd` for the transfer in progress, once per
/// `key`: every later call with the same key in the same transfer returns
/// the same index (an arena's fd crosses once, however many of its objects
/// do).
pub(crate) fn outgoing_fd_once(key: u64, fd: BorrowedFd<'_>) -> std::result::Result<u32, String> {
    let known = OUTGOING_KEYS.with(|k| k.borrow().as_ref().and_then(|m| m.get(&key).copied()));
    if let Some(index) = known {
        return Ok(index);
    }
    let index = record_outgoing(fd)?;
    OUTGOING_KEYS.with(|k| {
        if let Some(m) = k.borrow_mut().as_mut() {
            m.insert(key, index);
        }
    });
    Ok(index)
}

/// Takes fd `#index` of the transfer being decoded (`None`: no transfer,
/// no such fd, or already taken).
pub(crate) fn take_incoming_fd(index: u32) -> Option<OwnedFd> {
    INCOMING.with(|slot| {
        slot.borrow_mut()
            .as_mut()
            .and_then(|list| list.get_mut(index as usize))
            .and_then(Option::take)
    })
}

/// Duplicates `fd` into the transfer in progress; its index.
fn record_outgoing(fd: BorrowedFd<'_>) -> std::result::Result<u32, String> {
    OUTGOING.with(|o| -> std::result::Result<u32, String> {
        let mut slot = o.borrow_mut();
        let Some(list) = slot.as_mut() else {
            return Err(
                "a file descriptor can only cross to another process as an argument of \
                        Process::with_args / Builder::target_with, or in a value sent with \
                        Connection::send over a Unix connection (or Connection::send_fd)"
                    .into(),
            );
        };
        let dup =
            crate::os::fd::dup_cloexec(fd, 3).map_err(|e| format!("cannot duplicate fd: {e}"))?;
        list.push(dup);
        Ok((list.len() - 1) as u32)
    })
}

/// Serializes an fd for a transfer to a child process (use with
/// `#[serde(serialize_with = "brood::handle::serialize_fd")]`).
///
/// The fd is duplicated, so the caller keeps its own. Outside a transfer
/// brood manages, this fails with a clear message.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Holder(#[serde(serialize_with = "brood::handle::serialize_fd")] std::fs::File);
/// let f = std::fs::File::open("/dev/null").unwrap();
/// // Plain encoding cannot carry an fd:
/// assert!(brood::codec::encode(&Holder(f)).is_err());
/// ```
pub fn serialize_fd<F: AsFd, S: Serializer>(
    fd: &F,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let index = record_outgoing(fd.as_fd());
    match index {
        Ok(i) => FdIndex(i).serialize(serializer),
        Err(msg) => Err(serde::ser::Error::custom(msg)),
    }
}

/// Deserializes an fd carried by a transfer (use with
/// `#[serde(deserialize_with = "brood::handle::deserialize_fd")]`); the
/// result owns it. See the module example.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Holder(#[serde(deserialize_with = "brood::handle::deserialize_fd")] std::os::fd::OwnedFd);
/// let bytes = brood::codec::encode(&[0u32]).unwrap();
/// // No transfer in progress: a clear error, not a guessed fd.
/// assert!(brood::codec::decode::<Holder>(&bytes).is_err());
/// ```
pub fn deserialize_fd<'de, D: Deserializer<'de>, F: From<OwnedFd>>(
    deserializer: D,
) -> std::result::Result<F, D::Error> {
    let FdIndex(i) = FdIndex::deserialize(deserializer)?;
    take_incoming_fd(i)
        .map(F::from)
        .ok_or_else(|| de::Error::custom(format!("no file descriptor #{i} came with this message")))
}

#[derive(Serialize, Deserialize)]
struct FdIndex(u32);
