//! Length-prefixed frames for the TCP runtime.
//!
//! ```text
//! offset  size  field
//! 0       4     length of everything after this field (little endian), at most FRAME_BYTES_MAX
//! 4       1     protocol version (PROTOCOL_VERSION)
//! 5       1     kind (FrameKind)
//! 6       8     cluster id (little endian)
//! 14      ...   body, encoded by the codec
//! ```
//!
//! The length is checked against the cap as soon as its four bytes arrive, before anything is
//! buffered or allocated for the frame. Every malformed input yields a [`FrameError`]; the
//! caller logs it and closes the connection.
//!
//! Kinds: [`Hello`] opens every connection (dialer to acceptor); [`Challenge`] (acceptor to
//! dialer) and [`Proof`] (dialer to acceptor) complete the authentication handshake when the
//! cluster has a secret; `Msg` carries a [`NetMsg`]. Which kind may come when is the runtime's
//! business ([`crate::runtime::tcp`]); this module only checks that each frame is well formed.
//!
//! Version 2 added the handshake (the `nonce` of `Hello`, and the `Challenge` and `Proof`
//! kinds); version 3 encodes bodies with [`crate::codec::Postcard`] instead of
//! bitcode. Nodes of different versions refuse each other's frames with
//! [`FrameError::BadVersion`].

use crate::codec::{Codec, CodecError};
use crate::ids::NodeId;
use crate::message::NetMsg;
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u8 = 3;
/// Largest frame accepted or produced (length field value).
pub const FRAME_BYTES_MAX: usize = 16 << 20;
const HEADER_BYTES: usize = 10;

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame on a connection: who is connecting.
    Hello = 1,
    /// A [`NetMsg`].
    Msg = 2,
    /// Acceptor's answer to an authenticating `Hello`.
    Challenge = 3,
    /// Dialer's answer to a `Challenge`.
    Proof = 4,
}

/// Bytes of a handshake nonce and of an HMAC-SHA256 proof.
pub const NONCE_BYTES: usize = 32;

/// First frame of every connection, from the dialer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The dialing node.
    pub node: NodeId,
    /// The dialer's fresh nonce when it authenticates (the cluster has a secret), else `None`.
    pub nonce: Option<[u8; NONCE_BYTES]>,
}

/// The acceptor's fresh nonce and its proof that it knows the cluster secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub nonce: [u8; NONCE_BYTES],
    pub proof: [u8; NONCE_BYTES],
}

/// The dialer's proof that it knows the cluster secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub proof: [u8; NONCE_BYTES],
}

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    Hello(Hello),
    Msg(NetMsg),
    Challenge(Challenge),
    Proof(Proof),
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Msg(_) => FrameKind::Msg,
            Frame::Challenge(_) => FrameKind::Challenge,
            Frame::Proof(_) => FrameKind::Proof,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the cap of {max}")]
    Oversized { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than its {HEADER_BYTES}-byte header")]
    TooShort { len: usize },
    #[error("connection closed inside a frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("protocol version {got}, this node speaks {PROTOCOL_VERSION}")]
    BadVersion { got: u8 },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame for cluster {got}, this node is in cluster {want}")]
    WrongCluster { got: u64, want: u64 },
    #[error("malformed frame body: {0}")]
    Malformed(#[from] CodecError),
}

/// Encodes one frame, appending it to `out`: the body is encoded in place behind the header
/// (no intermediate buffer). On error `out` is as it was.
pub fn encode<C: Codec>(
    codec: &C,
    cluster: u64,
    frame: &Frame,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(PROTOCOL_VERSION);
    out.push(frame.kind() as u8);
    out.extend_from_slice(&cluster.to_le_bytes());
    let body = match frame {
        Frame::Hello(h) => codec.encode_into(h, out),
        Frame::Msg(m) => codec.encode_into(m, out),
        Frame::Challenge(c) => codec.encode_into(c, out),
        Frame::Proof(p) => codec.encode_into(p, out),
    };
    if let Err(e) = body {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - 4;
    if len > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(FrameError::Oversized {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Incremental decoder for one connection's byte stream.
pub struct FrameDecoder<C> {
    codec: C,
    cluster: u64,
    max: usize,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed by returned frames.
    pos: usize,
}

impl<C: Codec> FrameDecoder<C> {
    pub fn new(codec: C, cluster: u64) -> Self {
        Self::with_max(codec, cluster, FRAME_BYTES_MAX)
    }

    pub fn with_max(codec: C, cluster: u64, max: usize) -> Self {
        FrameDecoder {
            codec,
            cluster,
            max,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Appends received bytes, growing the buffer's capacity to at most `capacity_max` bytes
    /// (or exactly to what the bytes need, if that is more): the caller bounds the memory a
    /// connection holds by what it reads and by this, and the buffer grows with the bytes that
    /// arrive, never to a frame's declared length up front.
    pub fn extend_bounded(&mut self, bytes: &[u8], capacity_max: usize) {
        self.compact();
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let target = (self.buf.capacity() * 2)
                .max(need)
                .min(capacity_max.max(need));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes of memory the buffer holds (its capacity).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back buffer memory beyond what is buffered and `keep` bytes.
    pub fn shrink_to(&mut self, keep: usize) {
        self.compact();
        if self.buf.capacity() > keep.max(self.buf.len()) {
            self.buf.shrink_to(keep.max(self.buf.len()));
        }
    }

    /// The size of the frame that starts the buffered bytes (its 4-byte length field included),
    /// once its length field has arrived.
    pub fn head_frame_bytes(&self) -> Option<usize> {
        let avail = &self.buf[self.pos..];
        (avail.len() >= 4)
            .then(|| 4 + u32::from_le_bytes(avail[..4].try_into().expect("4 bytes")) as usize)
    }

    /// Changes the largest frame accepted from now on (the TCP runtime allows only small frames
    /// before a connection's handshake is complete).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        if len < HEADER_BYTES {
            return Err(FrameError::TooShort { len });
        }
        let version = avail.get(4).copied();
        if let Some(v) = version.filter(|&v| v != PROTOCOL_VERSION) {
            return Err(FrameError::BadVersion { got: v });
        }
        if avail.len() < 4 + len {
            self.compact();
            return Ok(None);
        }
        let frame = &avail[4..4 + len];
        let kind = frame[1];
        let cluster = u64::from_le_bytes(frame[2..10].try_into().expect("8 bytes"));
        if cluster != self.cluster {
            return Err(FrameError::WrongCluster {
                got: cluster,
                want: self.cluster,
            });
        }
        let body = &frame[HEADER_BYTES..];
        let decoded = match kind {
            k if k == FrameKind::Hello as u8 => Frame::Hello(self.codec.decode(body)?),
            k if k == FrameKind::Msg as u8 => Frame::Msg(self.codec.decode(body)?),
            k if k == FrameKind::Challenge as u8 => Frame::Challenge(self.codec.decode(body)?),
            k if k == FrameKind::Proof as u8 => Frame::Proof(self.codec.decode(body)?),
            k => return Err(FrameError::UnknownKind(k)),
        };
        self.pos += 4 + len;
        Ok(Some(decoded))
    }

    /// Call at end of stream: an incomplete frame left in the buffer is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        let have = self.buffered();
        if have == 0 {
            return Ok(());
        }
        let need = if have >= 4 {
            4 + u32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().expect("4")) as usize
        } else {
            4
        };
        Err(FrameError::Truncated { have, need })
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Postcard;
    use crate::groupset::GroupSet;
    use crate::ids::{GroupId, LogId, MsgId};
    use crate::message::{LogEntry, Message};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn sample() -> NetMsg {
        NetMsg::Entries {
            log: LogId(3),
            start: 17,
            entries: vec![
                LogEntry::Skip(5),
                LogEntry::Batch(Arc::from(vec![Message {
                    log_seq: 4,
                    id: MsgId {
                        sender: NodeId(2),
                        epoch: 1,
                        seq: 9,
                    },
                    dests: [GroupId(0), GroupId(4)].into_iter().collect::<GroupSet>(),
                    payload: bytes::Bytes::from_static(b"payload"),
                }])),
            ],
        }
    }

    fn encoded(cluster: u64, f: &Frame) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&Postcard, cluster, f, &mut v).unwrap();
        v
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut bytes = encoded(
            5,
            &Frame::Hello(Hello {
                node: NodeId(3),
                nonce: None,
            }),
        );
        bytes.extend(encoded(5, &Frame::Msg(sample())));
        let (got, d) = byte_by_byte(bytes);
        assert!(matches!(
            &got[0],
            Frame::Hello(Hello {
                node: NodeId(3),
                nonce: None
            })
        ));
        assert!(
            matches!(&got[1], Frame::Msg(NetMsg::Entries { start: 17, entries, .. }) if entries.len() == 2)
        );
        d.finish().unwrap();
    }

    #[test]
    fn typed_errors_for_bad_frames() {
        let good = encoded(5, &Frame::Msg(sample()));
        let decode = |bytes: &[u8], cluster: u64| {
            let mut d = FrameDecoder::with_max(Postcard, cluster, 1 << 20);
            d.extend(bytes);
            d.next_frame().map(|_| ())
        };
        assert_eq!(
            decode(&good, 6),
            Err(FrameError::WrongCluster { got: 5, want: 6 })
        );
        let mut v = good.clone();
        v[4] = 9;
        assert_eq!(decode(&v, 5), Err(FrameError::BadVersion { got: 9 }));
        let mut v = good.clone();
        v[5] = 77;
        assert_eq!(decode(&v, 5), Err(FrameError::UnknownKind(77)));
        let mut v = good.clone();
        v[..4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(decode(&v, 5), Err(FrameError::Oversized { .. })));
        let mut v = good.clone();
        v[..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode(&v, 5), Err(FrameError::TooShort { len: 3 }));
        // A well-formed header around a body that is not a NetMsg.
        let mut v = Vec::new();
        v.extend_from_slice(&13u32.to_le_bytes());
        v.push(PROTOCOL_VERSION);
        v.push(FrameKind::Msg as u8);
        v.extend_from_slice(&5u64.to_le_bytes());
        v.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode(&v, 5), Err(FrameError::Malformed(_))));
        let mut d = FrameDecoder::new(Postcard, 5);
        d.extend(&good[..good.len() - 1]);
        assert_eq!(d.next_frame().unwrap().map(|_| ()), None);
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::with_max(Postcard, 1, 1024);
        d.extend(&(1u32 << 30).to_le_bytes());
        assert_eq!(
            d.next_frame().map(|_| ()),
            Err(FrameError::Oversized {
                len: 1 << 30,
                max: 1024
            })
        );
        assert_eq!(d.buffered(), 4, "nothing was allocated for the body");
    }

    fn handshake_frames() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                node: NodeId(7),
                nonce: Some([0xa5; NONCE_BYTES]),
            }),
            Frame::Challenge(Challenge {
                nonce: std::array::from_fn(|i| i as u8),
                proof: std::array::from_fn(|i| 255 - i as u8),
            }),
            Frame::Proof(Proof {
                proof: std::array::from_fn(|i| (i * 7) as u8),
            }),
        ]
    }

    /// The frames of cluster 5 that `bytes` decode to when fed one byte at a time, and the
    /// decoder.
    fn byte_by_byte(bytes: Vec<u8>) -> (Vec<Frame>, FrameDecoder<Postcard>) {
        let mut d = FrameDecoder::new(Postcard, 5);
        let mut got = Vec::new();
        for b in bytes {
            d.extend(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        (got, d)
    }

    #[test]
    fn handshake_frames_round_trip() {
        let mut bytes = Vec::new();
        for f in handshake_frames() {
            encode(&Postcard, 5, &f, &mut bytes).unwrap();
        }
        let (got, d) = byte_by_byte(bytes);
        d.finish().unwrap();
        assert_eq!(got.len(), 3);
        for (got, want) in got.iter().zip(handshake_frames()) {
            assert_eq!(got.kind(), want.kind());
            match (got, &want) {
                (Frame::Hello(a), Frame::Hello(b)) => assert_eq!(a, b),
                (Frame::Challenge(a), Frame::Challenge(b)) => assert_eq!(a, b),
                (Frame::Proof(a), Frame::Proof(b)) => assert_eq!(a, b),
                other => panic!("unexpected pair {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_and_mutated_handshake_frames_are_typed_errors() {
        let decode = |bytes: &[u8]| {
            let mut d = FrameDecoder::with_max(Postcard, 5, 1 << 20);
            d.extend(bytes);
            d.next_frame().map(|f| f.map(|f| f.kind()))
        };
        for f in handshake_frames() {
            let good = encoded(5, &f);
            assert_eq!(decode(&good), Ok(Some(f.kind())));
            // Every truncation: no frame yet, and a typed error at end of stream.
            for cut in 1..good.len() {
                let mut d = FrameDecoder::new(Postcard, 5);
                d.extend(&good[..cut]);
                assert_eq!(d.next_frame().map(|f| f.is_some()), Ok(false), "cut {cut}");
                assert_eq!(
                    d.finish(),
                    Err(FrameError::Truncated {
                        have: cut,
                        need: if cut >= 4 { good.len() } else { 4 }
                    })
                );
            }
            // A body one byte short whose length field agrees: the codec refuses it.
            let mut short = good[..good.len() - 1].to_vec();
            let len = (short.len() - 4) as u32;
            short[..4].copy_from_slice(&len.to_le_bytes());
            assert!(
                matches!(decode(&short), Err(FrameError::Malformed(_))),
                "{:?}: {:?}",
                f.kind(),
                decode(&short)
            );
            // A handshake from a version 1 node, another cluster, or of an unknown kind.
            let mut v = good.clone();
            v[4] = 1;
            assert_eq!(decode(&v), Err(FrameError::BadVersion { got: 1 }));
            let mut v = good.clone();
            v[6] ^= 1;
            assert_eq!(
                decode(&v),
                Err(FrameError::WrongCluster { got: 4, want: 5 })
            );
            let mut v = good.clone();
            v[5] = 5;
            assert_eq!(decode(&v), Err(FrameError::UnknownKind(5)));
        }
        // A Proof's body under the Challenge kind is too short for a Challenge.
        let mut v = encoded(5, &handshake_frames()[2]);
        v[5] = FrameKind::Challenge as u8;
        assert!(matches!(decode(&v), Err(FrameError::Malformed(_))));
        // A Hello whose nonce option tag is neither None nor Some.
        let hello = encoded(5, &handshake_frames()[0]);
        let plain = encoded(
            5,
            &Frame::Hello(Hello {
                node: NodeId(7),
                nonce: None,
            }),
        );
        let tag = (HEADER_BYTES + 4..plain.len())
            .find(|&i| plain[i] != hello[i])
            .expect("the option tag differs");
        let mut v = hello.clone();
        v[tag] = 0x7f;
        assert!(matches!(decode(&v), Err(FrameError::Malformed(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Random bytes, random mutations of valid frames (messages and handshake frames), and
        /// truncations never panic.
        #[test]
        fn random_input_never_panics(noise in proptest::collection::vec(any::<u8>(), 0..600),
                                     flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                                     cut in any::<prop::sample::Index>(),
                                     which in 0..4usize) {
            let mut d = FrameDecoder::with_max(Postcard, 5, 4096);
            d.extend(&noise);
            while let Ok(Some(_)) = d.next_frame() {}
            let _ = d.finish();

            let mut v = match which {
                0 => encoded(5, &Frame::Msg(sample())),
                k => encoded(5, &handshake_frames()[k - 1]),
            };
            for (i, b) in flips {
                let at = i.index(v.len());
                v[at] ^= b;
            }
            let v = &v[..cut.index(v.len() + 1)];
            let mut d = FrameDecoder::with_max(Postcard, 5, 4096);
            d.extend(v);
            while let Ok(Some(_)) = d.next_frame() {}
            let _ = d.finish();
        }
    }
}
