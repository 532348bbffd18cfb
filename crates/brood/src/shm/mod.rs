//! Shared memory: [`SharedMemory`] segments (anonymous or named, the latter
//! compatible with Python's `multiprocessing.shared_memory`), and typed
//! [`Value`], [`Array`], [`RawValue`], [`RawArray`] (Python's
//! `multiprocessing.Value` and friends).
//!
//! ```
//! use brood::shm::{Array, Value};
//!
//! let counter = Value::new(0u64)?;
//! let squares = Array::<i32>::zeroed(4)?;
//! for i in 0..4 {
//!     squares.set(i, (i * i) as i32)?;
//!     *counter.lock().unwrap() += 1;
//! }
//! assert_eq!(squares.to_vec()?, [0, 1, 4, 9]);
//! assert_eq!(counter.get()?, 4);
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! Named segments that brood creates are tracked: once no brood process that
//! created or attached to one is alive — however it died — and no handle to
//! it is in flight, a tracker process (`brood-tracker` in `ps`, one per
//! process tree, started with a process's first child) unlinks it (see
//! [`SharedMemory`] and this folder's README.md).

pub(crate) mod arena;
mod memory;
// The queue's shared-memory ring (a raw-memory type, used by `queue`).
pub(crate) mod ring;
// The pool's result rings: one producer, one consumer (worker → supervisor).
pub(crate) mod spsc;
mod tracker;
mod value;
// The pool's status page: shared memory as atomic words (issue 13).
mod words;

pub use bytemuck::{Pod, Zeroable};
pub(crate) use memory::{Block, BlockWire, Fresh, SharedState};
pub use memory::{Options, SharedMemory};
pub use value::{Array, ArrayGuard, RawArray, RawValue, Typecode, Value, ValueGuard};
pub(crate) use words::{FileWords, ReadOnlyWords};

/// Before a child starts: makes sure this process tree's resource tracker
/// runs (so the child shares it) and returns the connection to hand to a
/// spawn or forkserver child, if there is one.
pub(crate) fn tracker_for_child() -> Option<std::os::fd::RawFd> {
    tracker::for_child()
}

/// In a spawn or forkserver child: the tracker connection the parent handed
/// down (see [`tracker_for_child`]).
pub(crate) fn adopt_tracker(fd: std::os::fd::OwnedFd) {
    tracker::adopt(fd)
}

/// The resource tracker's loop (bootstrap mode `tracker`), run before `main`
/// in a process started with `reexec::spawn_self("tracker", ...)`.
pub(crate) fn serve_tracker(fd: i32) -> ! {
    tracker::serve(fd)
}
