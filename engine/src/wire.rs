//! What travels between the engine's nodes, whatever the protocol: logical client ids, the
//! encoding, and (point to point) messages addressed to a client.

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
}
