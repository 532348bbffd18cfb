//! brood: Python's `multiprocessing`, rebuilt for Rust.
//!
//! Run work in child processes and get the results back, let processes talk
//! through pipes and socket connections, and share memory and process-shared
//! locks between them. Linux first: brood waits on pidfds, never on a global
//! SIGCHLD handler, and leaves no zombie, fd or `/dev/shm` name behind.
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
//! # Map
//!
//! - [`Process`], [`Builder`], [`current_process`], [`parent_process`],
//!   [`active_children`], [`authkey`]: children whose `join` returns the
//!   function's value. How they start: [`StartMethod`] (fork, spawn,
//!   forkserver — the default, first in [`get_all_start_methods`]) and
//!   [`Context`]; functions reach other processes as described in
//!   [`task`](mod@task).
//! - [`connection`]: [`pipe`], [`Connection`], `Listener`/`Client` with an
//!   auth key, `wait`; file descriptors travel inside values ([`handle`]).
//! - [`shm`]: [`SharedMemory`] (Python's namespace), [`Value`], [`Array`];
//!   [`sync`]: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//!   `Condition`, `Event`, `Barrier`, all process-shared, with a dead holder
//!   reported rather than deadlocking.
//! - [`Pool`] ([`pool`]): worker processes for `apply`, `map`, `imap` and
//!   friends; a dead worker fails only the task it held, never a hang.
//!   Futures as in `concurrent.futures` ([`Pool::submit`], [`TaskFuture`],
//!   [`as_completed`], [`wait`]; `.await`-able), per-task soft and hard
//!   time limits ([`task_deadline`], [`task_cancelled`]) and retries.
//! - [`queue`]: [`Queue`], [`SimpleQueue`], [`JoinableQueue`] — first in,
//!   first out between processes, in shared memory, with no feeder thread;
//!   a producer or consumer killed mid-operation blocks no one.
//! - [`manager`]: [`Manager`], shared objects in a server process
//!   ([`ManagedMap`], [`ManagedList`], queues, locks…), local or over TCP.
//! - [`os`]: the syscall layer, public for the lessons of the tutorial this
//!   crate follows (`fork`, `wait`, zombies, orphans, `/proc`).
//! - [`codec`]: the one serialization format (MessagePack).
//! - [`log`](mod@log): one log file that many processes append to, rotated
//!   once across them; an `io::Write`, a `tracing` writer, a `log` backend.
//! - [`events`]: [`EventEngine`], typed events whose handlers run in
//!   worker processes, per-kind order, timers, drain or drop on stop.
//!
//! Values cross between processes and back as pieces of a program's data:
//!
//! ```
//! use brood::{Process, Value};
//!
//! let total = Value::new(0i64)?;
//! let mut workers = Vec::new();
//! for _ in 0..2 {
//!     let mut p = Process::with_args(
//!         |v: Value<i64>| {
//!             for _ in 0..1000 {
//!                 *v.lock().unwrap() += 1;
//!             }
//!         },
//!         total.clone(),
//!     );
//!     p.start()?;
//!     workers.push(p);
//! }
//! for mut p in workers {
//!     p.join()?;
//! }
//! assert_eq!(total.get()?, 2000);
//! # Ok::<(), brood::Error>(())
//! ```

mod bootstrap;
mod child_page;
mod children;
pub mod codec;
pub mod connection;
mod context;
mod error;
pub mod events;
pub mod handle;
mod launch;
pub mod log;
pub mod manager;
pub mod os;
pub mod pool;
mod process;
pub mod queue;
mod reexec;
pub mod shm;
mod start_method;
pub mod sync;
pub mod task;
mod time;

pub use brood_macros::task;
pub use connection::{Connection, pipe};
pub use context::{Context, get_context};
pub use error::{Error, ErrorKind, PanicReport, Result};
pub use events::EventEngine;
pub use manager::{ManagedList, ManagedMap, Manager};
pub use pool::{
    AsyncResult, Done, Pool, PoolBuilder, TaskFuture, WaitMode, as_completed, as_completed_timeout,
    task_cancelled, task_deadline, wait,
};
pub use process::{
    Builder, ParentProcess, Process, ProcessInfo, active_children, allow_fork_with_threads,
    authkey, cpu_count, current_process, parent_process, set_authkey,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use shm::{Array, RawArray, RawValue, SharedMemory, Value};
pub use start_method::{
    StartMethod, get_all_start_methods, get_start_method, set_forkserver_preload, set_start_method,
};

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
