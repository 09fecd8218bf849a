//! What travels between the engine's nodes, whatever the protocol: logical client ids, the
//! encoding, and (point to point) messages addressed to a client.

use groups::codec::{Codec, CodecError};
use groups::ids::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A logical client: several can share one node (a load generator runs many).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl ClientId {
    /// Client number `index` on node `node`.
    pub fn new(node: NodeId, index: u32) -> Self {
        ClientId((u64::from(node.0) << 32) | u64::from(index))
    }
    /// The node that hosts the client (where replies go).
    pub fn node(self) -> NodeId {
        NodeId((self.0 >> 32) as u32)
    }
    pub fn index(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.node().0, self.index())
    }
}

/// Why bytes are not an envelope ([`FeedMsg`], [`AppMsg`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty message")]
    Empty,
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("a {kind} message needs {need} bytes, got {got}")]
    Truncated {
        kind: &'static str,
        need: usize,
        got: usize,
    },
}

/// Every payload the engine multicasts, as a replica reads it from its feed: one kind byte,
/// then the kind's body. The engine's own requests (checkpoints) cannot be mistaken for a
/// client's command, whatever the command's encoding, and a replica tells them apart without
/// decoding the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMsg<'a> {
    /// A client's command in its protocol's format: [`crate::psmr::msg::Request`] for P-SMR,
    /// [`crate::partitioned::msg::Multicast`] for S-SMR and DS-SMR.
    Command(&'a [u8]),
    /// A checkpoint request for `round` (see [`crate::checkpoint`]).
    Checkpoint { round: u64 },
}

const FEED_COMMAND: u8 = 0xC1;
const FEED_CHECKPOINT: u8 = 0xC2;

impl<'a> FeedMsg<'a> {
    /// The multicast payload of a command.
    pub fn command<T: Serialize>(body: &T) -> bytes::Bytes {
        tagged(FEED_COMMAND, None, body)
    }

    /// The multicast payload of a checkpoint request.
    pub fn checkpoint(round: u64) -> bytes::Bytes {
        let mut out = Vec::with_capacity(9);
        out.push(FEED_CHECKPOINT);
        out.extend_from_slice(&round.to_le_bytes());
        out.into()
    }

    pub fn parse(bytes: &'a [u8]) -> Result<FeedMsg<'a>, EnvelopeError> {
        let (&kind, body) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        match kind {
            FEED_COMMAND => Ok(FeedMsg::Command(body)),
            FEED_CHECKPOINT => {
                let round = body.try_into().map_err(|_| EnvelopeError::Truncated {
                    kind: "checkpoint request",
                    need: 9,
                    got: bytes.len(),
                })?;
                Ok(FeedMsg::Checkpoint {
                    round: u64::from_le_bytes(round),
                })
            }
            other => Err(EnvelopeError::UnknownKind(other)),
        }
    }
}

/// Every point-to-point message between the engine's nodes: one kind byte, then the kind's
/// body. A client node hosting many clients routes a reply by its addressee without knowing
/// the body's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppMsg<'a> {
    /// For client `client` of the receiving node: a reply (or a DS-SMR prophecy) in the
    /// protocol's format.
    ToClient { client: ClientId, body: &'a [u8] },
    /// State transfer between replicas ([`crate::checkpoint::Transfer`]).
    Transfer(&'a [u8]),
    /// Between the protocol cores of two replicas (S-SMR and DS-SMR pulls and their answers,
    /// [`crate::partitioned::msg::Peer`]).
    Peer(&'a [u8]),
    /// A client's read-only command sent to one replica, to be served off the log after a
    /// read index (P-SMR: a [`crate::psmr::msg::Request`]).
    Read(&'a [u8]),
}

const APP_TO_CLIENT: u8 = 0xA1;
const APP_TRANSFER: u8 = 0xA2;
const APP_PEER: u8 = 0xA3;
const APP_READ: u8 = 0xA4;

impl<'a> AppMsg<'a> {
    /// A message for `client`.
    pub fn to_client<T: Serialize>(client: ClientId, body: &T) -> bytes::Bytes {
        tagged(APP_TO_CLIENT, Some(client), body)
    }

    /// A state-transfer message.
    pub fn transfer<T: Serialize>(body: &T) -> bytes::Bytes {
        tagged(APP_TRANSFER, None, body)
    }

    /// A message between protocol cores.
    pub fn peer<T: Serialize>(body: &T) -> bytes::Bytes {
        tagged(APP_PEER, None, body)
    }

    /// A read served off the log.
    pub fn read<T: Serialize>(body: &T) -> bytes::Bytes {
        tagged(APP_READ, None, body)
    }

    pub fn parse(bytes: &'a [u8]) -> Result<AppMsg<'a>, EnvelopeError> {
        let (&kind, body) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        match kind {
            APP_TO_CLIENT => {
                let (id, body) = body
                    .split_first_chunk::<8>()
                    .ok_or(EnvelopeError::Truncated {
                        kind: "client",
                        need: 9,
                        got: bytes.len(),
                    })?;
                Ok(AppMsg::ToClient {
                    client: ClientId(u64::from_le_bytes(*id)),
                    body,
                })
            }
            APP_TRANSFER => Ok(AppMsg::Transfer(body)),
            APP_PEER => Ok(AppMsg::Peer(body)),
            APP_READ => Ok(AppMsg::Read(body)),
            other => Err(EnvelopeError::UnknownKind(other)),
        }
    }
}

/// `kind`, the client id if any (8 bytes, little-endian), then `body` encoded after them in
/// the same buffer (encoded once, not copied).
fn tagged<T: Serialize>(kind: u8, client: Option<ClientId>, body: &T) -> bytes::Bytes {
    let mut out = Vec::with_capacity(64);
    out.push(kind);
    if let Some(c) = client {
        out.extend_from_slice(&c.0.to_le_bytes());
    }
    postcard::to_extend(body, out)
        .expect("wire types encode")
        .into()
}

/// Encodes a wire value: the engine's one encoding of commands, replies, exchanges, transfers
/// and checkpoints, `postcard` (serde; varints, byte strings copied whole, no per-call set-up:
/// measured against `bitcode`'s serde mode by `bench codec`; the groups layer's TCP frames use
/// the same format, [`groups::codec::Postcard`]).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("wire types encode")
}

/// Decodes a wire value, with a typed error for malformed input (trailing bytes included: a
/// value is the whole of its bytes).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    groups::codec::Postcard.decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_name_their_node() {
        let c = ClientId::new(NodeId(7), 3);
        assert_eq!(c.node(), NodeId(7));
        assert_eq!(c.index(), 3);
    }

    #[test]
    fn envelopes_round_trip_and_bad_ones_say_why() {
        let c = ClientId::new(NodeId(1000), 42);
        let m = AppMsg::to_client(c, &(7u64, "x".to_string()));
        let AppMsg::ToClient { client, body } = AppMsg::parse(&m).unwrap() else {
            panic!("a client message");
        };
        assert_eq!(client, c);
        assert_eq!(decode::<(u64, String)>(body).unwrap(), (7, "x".to_string()));
        assert!(matches!(
            AppMsg::parse(&m[..5]),
            Err(EnvelopeError::Truncated { .. })
        ));
        assert_eq!(AppMsg::parse(&[]), Err(EnvelopeError::Empty));
        assert_eq!(
            AppMsg::parse(&AppMsg::peer(&5u8)),
            Ok(AppMsg::Peer(&encode(&5u8)[..]))
        );
        assert_eq!(
            FeedMsg::parse(&FeedMsg::checkpoint(9)),
            Ok(FeedMsg::Checkpoint { round: 9 })
        );
        let cmd = FeedMsg::command(&"not a round".to_string());
        assert!(matches!(FeedMsg::parse(&cmd), Ok(FeedMsg::Command(_))));
        assert!(matches!(
            FeedMsg::parse(&FeedMsg::checkpoint(9)[..5]),
            Err(EnvelopeError::Truncated { .. })
        ));
        // A client message is not a feed message and the other way round.
        assert_eq!(FeedMsg::parse(&m), Err(EnvelopeError::UnknownKind(m[0])));
        assert!(AppMsg::parse(&cmd).is_err());
    }
}
