//! brood's pool and shared objects on Redis Streams.
//!
//! `RedisPool` hands `#[brood::task]` functions to workers on any machine
//! that reach the same Redis; `Worker` runs them in a local brood `Pool`.
//! See `README.md` in this folder for the design.

pub mod objects;
mod server;

pub use server::LocalServer;
