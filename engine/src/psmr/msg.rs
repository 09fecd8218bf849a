//! What P-SMR clients and replicas send each other: a [`Request`] is the payload of an atomic
//! multicast; a [`Reply`] travels back point to point as an application message.

use crate::wire::ClientId;
use groups::ids::NodeId;
use serde::{Deserialize, Serialize};

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

impl<R> Reply<R> {
    /// `replica`'s answer to `req` (the try it names).
    pub fn to(
        req: &Request,
        replica: NodeId,
        outcome: Outcome<R>,
        state_hash: Option<u64>,
    ) -> Self {
        Reply {
            client: req.client,
            seq: req.seq,
            attempt: req.attempt,
            round: req.round,
            replica,
            outcome,
            state_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};

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
