//! The one serialization codec: MessagePack through `rmp-serde`.
//!
//! Why MessagePack: it is self-describing, so every serde shape round-trips
//! (enums, `flatten`, untagged enums, maps with any key), and Python reads it
//! (`msgpack`), which managers, Redis and interop tests need. Structs are
//! written as maps with field names (`to_vec_named`), so a reader that knows
//! the fields by name — Python, or a newer build of the same struct — decodes
//! them. `bincode` is not used: it is unmaintained.
//!
//! Every decode is bounded: the input is a slice whose length the caller has
//! already checked against a frame limit, and rmp-serde never allocates more
//! than the input can describe.
//!
//! ```
//! let bytes = brood::codec::encode(&(1u8, "two", vec![3.0f64])).unwrap();
//! let back: (u8, String, Vec<f64>) = brood::codec::decode(&bytes).unwrap();
//! assert_eq!(back, (1, "two".to_string(), vec![3.0]));
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// The largest frame brood accepts by default: 1 GiB.
///
/// ```
/// assert_eq!(brood::codec::DEFAULT_MAX_FRAME, 1 << 30);
/// ```
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// Encodes a value.
///
/// ```
/// assert_eq!(brood::codec::encode(&7u32).unwrap(), vec![7]);
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| Error::simple(ErrorKind::Codec, format!("cannot encode value: {e}")))
}

/// Encodes a value at the end of `buf` (reusing its allocation).
///
/// ```
/// let mut buf = Vec::new();
/// brood::codec::encode_into(&mut buf, &"hi").unwrap();
/// assert_eq!(brood::codec::decode::<String>(&buf).unwrap(), "hi");
/// ```
#[inline]
pub fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<()> {
    rmp_serde::encode::write_named(buf, value)
        .map_err(|e| Error::simple(ErrorKind::Codec, format!("cannot encode value: {e}")))
}

/// Decodes a value; bad input gives a [`ErrorKind::Codec`] error, never a panic.
///
/// ```
/// assert!(brood::codec::decode::<String>(&[0xc1]).is_err());
/// ```
#[inline]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(
        #[cold]
        |e| {
            Error::simple(
                ErrorKind::Codec,
                format!(
                    "cannot decode {} from {} bytes: {e}",
                    std::any::type_name::<T>(),
                    bytes.len()
                ),
            )
        },
    )
}
