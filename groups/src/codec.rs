//! The wire codec seam. Everything that crosses a process boundary is a serde type encoded by a
//! [`Codec`]; the frame layer ([`crate::frame`]) bounds the size before any decoding happens.
//!
//! [`Postcard`] is the frame codec of the TCP runtime: varints, byte strings
//! copied whole, encoded straight into the connection's write buffer with no per-call set-up
//! or intermediate buffer (`bench codec` measures it against `bitcode`'s serde mode, which
//! encodes into a fresh buffer it grows as it goes). [`Bitcode`] stays for the durable log's
//! records, whose on-disk format it defines. Both reject malformed input with an error rather
//! than a panic (checked by the frame fuzz and property tests), trailing bytes included.

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

/// Encodes and decodes serde types.
pub trait Codec: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`. On error `out` is as it was.
    fn encode_into<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Decodes a value that is the whole of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
    /// The encoding of `value` in a buffer of its own.
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode_into(value, &mut out)?;
        Ok(out)
    }
}

/// The `bitcode` crate's serde format.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bitcode;

impl Codec for Bitcode {
    fn encode_into<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let bytes = bitcode::serialize(value).map_err(|e| CodecError(e.to_string()))?;
        out.extend_from_slice(&bytes);
        Ok(())
    }
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        bitcode::serialize(value).map_err(|e| CodecError(e.to_string()))
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        bitcode::deserialize(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

/// The `postcard` crate's serde format, encoding in place at the end of the caller's buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

/// A postcard output that appends to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl Codec for Postcard {
    fn encode_into<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        postcard::serialize_with_flavor(value, Append(out)).map_err(|e| {
            out.truncate(start);
            CodecError(e.to_string())
        })
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError(format!(
                "{} trailing bytes after the value",
                rest.len()
            ))),
            Err(e) => Err(CodecError(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: u64,
        b: Option<String>,
        c: Vec<u32>,
        d: bytes::Bytes,
    }

    fn sample() -> Sample {
        Sample {
            a: 300,
            b: Some("x".into()),
            c: vec![1, 2, 1 << 30],
            d: bytes::Bytes::from_static(b"payload"),
        }
    }

    fn round_trips<C: Codec>(codec: C) {
        let mut out = b"head".to_vec();
        codec.encode_into(&sample(), &mut out).unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(out[4..], codec.encode(&sample()).unwrap()[..]);
        assert_eq!(codec.decode::<Sample>(&out[4..]).unwrap(), sample());
        let mut longer = out[4..].to_vec();
        longer.push(0);
        assert!(codec.decode::<Sample>(&longer).is_err());
        for cut in 0..out.len() - 4 {
            assert!(codec.decode::<Sample>(&out[4..4 + cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn both_codecs_append_round_trip_and_refuse_prefixes_and_trailing_bytes() {
        round_trips(Postcard);
        round_trips(Bitcode);
    }

    /// A value postcard cannot encode (a sequence of unknown length) leaves the buffer as it
    /// was, so a connection's write buffer never holds half a frame.
    #[test]
    fn a_failed_encoding_leaves_the_buffer_unchanged() {
        struct Unsized;
        impl serde::Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&1u8)?;
                seq.end()
            }
        }
        let mut out = b"kept".to_vec();
        assert!(Postcard.encode_into(&(7u8, Unsized), &mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
