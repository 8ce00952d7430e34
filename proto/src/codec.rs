//! The one module that calls bincode.
//!
//! Grain messages, replies and state are encoded with serde through bincode's standard
//! configuration, with a decode limit so a hostile length prefix cannot make us allocate.
//! Swapping the format later (bincode is unmaintained, RUSTSEC-2025-0141) touches only
//! this file.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest value [`decode`] will materialise: 64 MiB. Frames are capped far lower by the
/// transport; this bound protects direct callers such as storage.
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// An encode or decode failure, with bincode's description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The bytes decoded, but did not use every byte (wrong type or corrupt input).
    #[error("decode left {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends the encoding of `value` to `buf`, returning how many bytes were written.
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    let before = buf.len();
    bincode::serde::encode_into_std_write(value, buf, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(buf.len() - before)
}

/// Decodes a whole buffer; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
