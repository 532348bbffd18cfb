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
//! created or attached to one is alive — however it died — a tracker
//! process unlinks it (see [`SharedMemory`]).

mod arena;
mod memory;
mod tracker;
mod value;

pub use bytemuck::{Pod, Zeroable};
pub(crate) use memory::{Block, BlockWire, SharedState};
pub use memory::{Options, SharedMemory};
pub use value::{Array, ArrayGuard, RawArray, RawValue, Typecode, Value, ValueGuard};

/// The resource tracker's loop (bootstrap mode `tracker`), run before `main`
/// in a process started with `launch::spawn::spawn_self("tracker", ...)`.
pub(crate) fn serve_tracker(fd: i32) -> ! {
    tracker::serve(fd)
}
