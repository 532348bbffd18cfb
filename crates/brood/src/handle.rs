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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::error::Result;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The fds recorded once per key (an arena's) in the transfer in
    /// progress: key → index.
    static OUTGOING_KEYS: RefCell<Option<HashMap<u64, u32>>> = const { RefCell::new(None) };
}

/// Encodes `value`, collecting (duplicates of) the fds it holds.
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let previous = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let previous_keys = OUTGOING_KEYS.with(|k| k.borrow_mut().replace(HashMap::new()));
    let bytes = codec::encode(value);
    let fds = OUTGOING
        .with(|o| std::mem::replace(&mut *o.borrow_mut(), previous))
        .unwrap_or_default();
    OUTGOING_KEYS.with(|k| *k.borrow_mut() = previous_keys);
    Ok((bytes?, fds))
}

/// Encodes `value` into `buf`, collecting (duplicates of) the fds it holds
/// (what `Connection::send` does: the fds travel with the message).
pub(crate) fn encode_into_with_fds<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<Vec<OwnedFd>> {
    let previous = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let previous_keys = OUTGOING_KEYS.with(|k| k.borrow_mut().replace(HashMap::new()));
    let encoded = codec::encode_into(buf, value);
    let fds = OUTGOING
        .with(|o| std::mem::replace(&mut *o.borrow_mut(), previous))
        .unwrap_or_default();
    OUTGOING_KEYS.with(|k| *k.borrow_mut() = previous_keys);
    encoded.map(|()| fds)
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
        // SAFETY: F_DUPFD_CLOEXEC on a borrowed, open fd returns a new fd.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(format!(
                "cannot duplicate fd: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `dup` is a fresh fd owned by nothing else.
        list.push(unsafe { OwnedFd::from_raw_fd(dup) });
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
