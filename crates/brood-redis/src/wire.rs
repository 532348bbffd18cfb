//! What travels in stream fields besides the task's own codec bytes.

use serde::{Deserialize, Serialize};

/// The task ran and returned a value (codec bytes).
pub(crate) const VALUE: u8 = 0;
/// The task ran and failed (panic, bad arguments): a message.
pub(crate) const FAILED: u8 = 1;
/// The task went to the dead-letter stream: the reason.
pub(crate) const DEAD: u8 = 2;

/// One task's result, as a worker sends it to the caller's reply stream
/// (many in one entry).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Rec {
    /// The caller's sequence number of the task.
    pub(crate) seq: u64,
    /// How many times the task had been delivered when this run ended.
    pub(crate) deliveries: u32,
    /// [`VALUE`], [`FAILED`] or [`DEAD`].
    pub(crate) kind: u8,
    /// The value, or the message.
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}
