//! What clients and replicas send each other: a [`Request`] is the payload of an atomic
//! multicast; a [`Reply`] travels back point to point as an application message.

use groups::codec::{Bitcode, Codec, CodecError};
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

/// How a command was mapped to workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attempt {
    /// The conservative (P-SMR) map: always executed.
    Conservative,
    /// opt-PSMR's optimistic map: a single worker may refuse it (then the client retries
    /// conservatively, once).
    Optimistic,
}

/// A command as multicast by a client proxy. The command itself is encoded separately, so a
/// replica that cannot decode it can still tell the client ([`Outcome::Rejected`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub client: ClientId,
    pub seq: u64,
    pub attempt: Attempt,
    /// Which try of the command this is, from 0. The client sends try `n + 1` only after try
    /// `n` was refused (an optimistic refusal, or [`Outcome::Misrouted`]); a worker that
    /// refused try `n` refuses every later copy of tries up to `n`.
    pub round: u32,
    /// Every request of this client below `floor` has its reply: replicas may forget them.
    pub floor: u64,
    pub command: bytes::Bytes,
}

/// The outcome of a request at one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome<R> {
    Done(R),
    /// The optimistic attempt would reach beyond its worker: nothing changed; multicast the
    /// command again with the conservative map.
    RetryConservative,
    /// The workers it was multicast to are not (or no longer) the ones the command needs:
    /// the client mapped it with stale routes (key ranges moved between workers since).
    /// Nothing changed. The bytes are the service's current routes (possibly empty), for the
    /// client to learn before it multicasts the command again.
    Misrouted(bytes::Bytes),
    /// The request could not be executed (malformed, or not a command of this service).
    Rejected(String),
}

/// A replica's answer to a request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply<R> {
    pub client: ClientId,
    pub seq: u64,
    pub attempt: Attempt,
    /// The try answered ([`Request::round`]).
    pub round: u32,
    /// The replica that answers.
    pub replica: NodeId,
    pub outcome: Outcome<R>,
    /// For commands for all workers: the hash of the replica's whole state right after the
    /// command. Clients compare the hashes of different replicas' replies.
    pub state_hash: Option<u64>,
}

/// Encodes a message for a client: the client id (8 bytes, little-endian), then `body`. A client
/// node hosting many clients routes the message by the prefix without knowing the body's type
/// ([`addressee`]).
pub fn to_client<T: Serialize>(client: ClientId, body: &T) -> bytes::Bytes {
    let mut out = client.0.to_le_bytes().to_vec();
    out.extend_from_slice(&encode(body));
    out.into()
}

/// The client a message from [`to_client`] is for, and its body.
pub fn addressee(bytes: &[u8]) -> Option<(ClientId, &[u8])> {
    let (id, body) = bytes.split_first_chunk::<8>()?;
    Some((ClientId(u64::from_le_bytes(*id)), body))
}

/// Encodes a wire value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    Bitcode.encode(value).expect("wire types encode")
}

/// Decodes a wire value, with a typed error for malformed input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Bitcode.decode(bytes)
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
    fn client_messages_carry_their_addressee() {
        let c = ClientId::new(NodeId(1000), 42);
        let m = to_client(c, &(7u64, "x".to_string()));
        let (to, body) = addressee(&m).unwrap();
        assert_eq!(to, c);
        assert_eq!(decode::<(u64, String)>(body).unwrap(), (7, "x".to_string()));
        assert!(addressee(&m[..5]).is_none());
    }

    #[test]
    fn a_request_with_a_foreign_command_still_decodes_its_envelope() {
        let r = Request {
            client: ClientId::new(NodeId(1), 0),
            seq: 9,
            attempt: Attempt::Optimistic,
            round: 0,
            floor: 0,
            command: encode(&"not a number".to_string()).into(),
        };
        let back: Request = decode(&encode(&r)).unwrap();
        assert_eq!((back.client, back.seq), (r.client, 9));
        assert!(decode::<(u64, u64)>(&back.command).is_err());
    }
}
