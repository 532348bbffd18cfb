//! brood's pool and shared objects on Redis Streams.
//!
//! `RedisPool` hands `#[brood::task]` functions to workers on any machine
//! that reach the same Redis; `Worker` runs them in a local brood `Pool`.
//! See `README.md` in this folder for the design.

pub mod objects;
mod server;

pub use server::LocalServer;

mod admin;
mod conn;
mod error;
mod pool;
mod wire;
mod worker;

pub use admin::{Status, WorkerStatus, requeue, status};
pub use error::{Error, ErrorKind, Result};
pub use pool::{Chunked, ImapUnordered, RedisFuture, RedisPool, RedisPoolBuilder};
pub use worker::{Worker, WorkerHandle};
