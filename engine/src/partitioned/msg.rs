//! What scale-out clients, partitions and the oracle send each other.
//!
//! - [`Multicast`]: the payload of an atomic multicast (consults, moves, commands).
//! - [`Exchange`]: reliable multicast between the replicas of different partitions (and the
//!   oracle): S-SMR's signals with variables, DS-SMR's moved values and create outcomes.
//!   Every exchange names the delivered multicast it belongs to (its [`MsgId`]), so the
//!   receiver matches it with the right delivery even if the same command was delivered twice.
//! - [`ToClient`]: replies and prophecies, sent point to point in [`crate::wire::AppMsg::ToClient`].
//! - [`Peer`]: point-to-point messages between replicas (pulling a missed exchange).

use super::service::{Kind, ObjectId, PartitionId};
use crate::wire::ClientId;
use bytes::Bytes;
use groups::ids::{MsgId, NodeId};
use serde::{Deserialize, Serialize};

/// An atomically multicast message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Multicast {
    /// DS-SMR: where are these objects? Multicast to the oracle; answered with a [`Prophecy`].
    Consult {
        client: ClientId,
        seq: u64,
        attempt: u32,
        query: Kind,
    },
    /// DS-SMR: move `object` from partition `from` to `to`. Multicast to the oracle and both
    /// partitions; nobody answers.
    Move {
        object: ObjectId,
        from: PartitionId,
        to: PartitionId,
    },
    /// A client command.
    Command(CommandMsg),
    /// DynaStar: an access multicast to every partition that holds one of its objects
    /// (`cmd.partitions`, as the oracle or the client's cache placed them); `target` executes
    /// it with the objects the others lend it, and returns them (reference notes, e.6, with
    /// the fix of e.7: the destinations and the target travel in the message).
    Routed {
        cmd: CommandMsg,
        target: PartitionId,
    },
    /// DynaStar: one chunk of placement `epoch` (chunks `0..chunks`), multicast by the oracle
    /// to itself and every partition; the first delivered copy of a chunk counts.
    Plan(PlanChunk),
    /// DynaStar: what partition `from` executed lately, for the oracle's workload graph.
    Hints {
        from: PartitionId,
        hints: super::dynastar::workload::Hints,
    },
    /// DynaStar: repartition now (an operator's or a test's request to the oracle).
    Repartition,
}

/// A chunk of a DynaStar placement: moves applied at one position of every stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChunk {
    pub epoch: u64,
    pub index: u32,
    pub chunks: u32,
    /// `(object, from, to)`, sorted by object; a move of an object that is not in `from` any
    /// more is ignored (the source sends no value).
    pub moves: Vec<(ObjectId, PartitionId, PartitionId)>,
}

/// A command as multicast by a client proxy. The command itself is encoded separately, so a
/// replica that cannot decode it can still answer the client ([`Outcome::Rejected`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandMsg {
    pub client: ClientId,
    pub seq: u64,
    /// 1 for the first attempt; the proxy increments it at every retry.
    pub attempt: u32,
    /// Every request of this client below `floor` has its reply: replicas may forget them.
    pub floor: u64,
    /// What the command does, with the objects of this attempt (an access's object set grows
    /// when a replica answers [`Outcome::Gather`]).
    pub kind: Kind,
    /// The destination partitions, sorted (the oracle, when it is a destination, is not
    /// listed).
    pub partitions: Vec<PartitionId>,
    /// DS-SMR: the retry threshold was reached; run the S-SMR way on every partition.
    pub fallback: bool,
    pub command: Bytes,
}

/// A replica-to-replica message about one delivered multicast, `msg`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Exchange<V> {
    /// S-SMR (and the DS-SMR fallback): the objects of the command that partition `from`
    /// owns, with their values as of the command's position. It is also `from`'s signal
    /// (execution atomicity): `from` has delivered the command.
    Values {
        msg: MsgId,
        from: PartitionId,
        values: Vec<(ObjectId, V)>,
    },
    /// DS-SMR move: the moved object's value, or `None` if the source did not own it (so the
    /// destination does not wait forever).
    MoveValue { msg: MsgId, value: Option<V> },
    /// DS-SMR create or delete: the oracle's verdict, sent to the partitions the command
    /// names for every copy the oracle delivers. `apply`: install the created object, or drop
    /// the deleted one. The oracle answers these commands as soon as it delivers them, so a
    /// partition cannot tell new copies from old ones by its own client table (the client's
    /// floor may already have passed): it follows the oracle.
    Verdict { msg: MsgId, apply: bool },
    /// DynaStar: partition `from` lends the target the objects of the command it owns.
    Lend {
        msg: MsgId,
        from: PartitionId,
        values: Vec<(ObjectId, V)>,
    },
    /// DynaStar: the target returns the lent objects to partition `to`, with their values
    /// after the command.
    Return {
        msg: MsgId,
        to: PartitionId,
        values: Vec<(ObjectId, V)>,
    },
    /// DynaStar: partition `from`'s part of a placement chunk for partition `to`: every object
    /// the chunk moves from `from` to `to`, with its value, or `None` if `from` did
    /// not own it.
    Transfer {
        msg: MsgId,
        from: PartitionId,
        to: PartitionId,
        values: Vec<(ObjectId, Option<V>)>,
    },
}

impl<V> Exchange<V> {
    pub fn msg(&self) -> MsgId {
        match self {
            Exchange::Values { msg, .. }
            | Exchange::MoveValue { msg, .. }
            | Exchange::Verdict { msg, .. }
            | Exchange::Lend { msg, .. }
            | Exchange::Return { msg, .. }
            | Exchange::Transfer { msg, .. } => *msg,
        }
    }
}

/// Point-to-point messages between replicas.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Peer<V> {
    /// "I am blocked on `msg` and miss what `partition` sends for it": a restarted replica, or
    /// one whose sender crashed, asks every replica of that partition (or of the oracle).
    Pull { msg: MsgId, requester: NodeId },
    /// An answer to a pull: the exchange as originally sent.
    Answer(Exchange<V>),
}

/// The oracle's answer to a consult.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prophecy {
    /// Nothing to do: the command's answer is known (deleting an object that exists nowhere).
    Ok,
    /// The command fails: an access or delete of an object that does not exist, or a create
    /// of one that does.
    Nok,
    /// Where each object is (for a create: where it will go).
    Locations(Vec<(ObjectId, PartitionId)>),
    /// DynaStar: where each object is under placement `epoch` (a client that learns a newer
    /// epoch forgets its cached locations).
    Placed {
        epoch: u64,
        locations: Vec<(ObjectId, PartitionId)>,
    },
}

/// What a replica answers a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome<R> {
    Done(R),
    Created,
    AlreadyExists,
    Deleted,
    /// An object the command names does not exist.
    NotFound,
    /// DS-SMR: an object was not where the client thought; ask the oracle again.
    Retry,
    /// The command needs these objects too: retry with them (`retry(gamma)`).
    Gather(Vec<ObjectId>),
    /// The command could not be executed (malformed, or not a command of this service).
    Rejected(String),
}

/// Messages to a client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToClient<R> {
    Reply {
        seq: u64,
        attempt: u32,
        outcome: Outcome<R>,
    },
    Prophecy {
        seq: u64,
        attempt: u32,
        prophecy: Prophecy,
    },
}

/// The result of a scale-out command, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Response<R> {
    Done(R),
    Created,
    AlreadyExists,
    Deleted,
    NotFound,
}
