//! The wire codec seam. Everything that crosses a process boundary is a serde type encoded by a
//! [`Codec`]; the frame layer ([`crate::frame`]) bounds the size before any decoding happens.
//!
//! [`Bitcode`] is the default: compact and fast, and it rejects malformed input with an error
//! rather than a panic (checked by the frame fuzz tests).

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

/// Encodes and decodes serde types.
pub trait Codec: Send + Sync + 'static {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError>;
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// The `bitcode` crate's serde format.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bitcode;

impl Codec for Bitcode {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        bitcode::serialize(value).map_err(|e| CodecError(e.to_string()))
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        bitcode::deserialize(bytes).map_err(|e| CodecError(e.to_string()))
    }
}
