//! brood: Python's `multiprocessing`, rebuilt for Rust.
//!
//! Run work in child processes and get the results back; later releases add
//! pools, pipes, queues, shared memory and process-shared locks. Linux first:
//! brood waits on pidfds, never on a global SIGCHLD handler, and leaves no
//! zombie behind.
//!
//! ```
//! use brood::Process;
//!
//! let mut child = Process::builder().name("adder").target(|| 40 + 2);
//! child.start()?;
//! assert_eq!(child.join()?, 42);
//! assert_eq!(child.exitcode(), Some(0));
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! The syscall layer is public too, for the lessons of the tutorial this
//! crate follows (`fork`, `wait`, zombies, orphans): see [`os`].

mod bootstrap;
mod children;
pub mod codec;
pub mod connection;
mod context;
mod error;
pub mod handle;
mod launch;
pub mod os;
mod process;
pub mod shm;
pub mod sync;
pub mod task;

pub use brood_macros::task;
pub use connection::{Connection, pipe};
pub use context::{Context, StartMethod, get_context, get_start_method, set_start_method};
pub use error::{Error, ErrorKind, PanicReport, Result};
pub use process::{
    Builder, Process, ProcessInfo, active_children, allow_fork_with_threads, cpu_count,
    current_process, parent_process,
};
pub use shm::{Array, RawArray, RawValue, SharedMemory, Value};

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
