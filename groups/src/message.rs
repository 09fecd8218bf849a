//! Messages: what a multicast carries, what a log stores, and what nodes send each other.

use crate::groupset::GroupSet;
use crate::ids::{LogId, MsgId, NodeId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One atomic-multicast message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MsgId,
    /// The sender's count of its messages to the same log (0, 1, 2, ... per sender
    /// incarnation and log). Subscribers filter duplicates by it: every message of a log passes
    /// through every merger of that log, so these numbers arrive nearly contiguous even when
    /// a subscriber delivers only some of the sender's messages.
    pub log_seq: u64,
    /// The explicit destination set. Subscribers whose groups do not intersect it drop it.
    pub dests: GroupSet,
    pub payload: Bytes,
}

/// One entry of a consensus log.
///
/// Each message of a batch occupies one *virtual slot* of the log; a `Skip(n)` occupies `n`
/// empty slots. The merge takes slots, not entries, from each log in turn, so batching does not
/// change the merged order's fairness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogEntry {
    /// A batch of messages (never empty), shared rather than copied by the log and the feeds.
    Batch(Arc<[Message]>),
    /// `n > 0` empty slots proposed by the leader to keep the log's rate up.
    Skip(u64),
}

impl LogEntry {
    /// Virtual slots this entry occupies.
    pub fn slots(&self) -> u64 {
        match self {
            LogEntry::Batch(m) => m.len() as u64,
            LogEntry::Skip(n) => *n,
        }
    }

    /// Whether the entry is well formed (a decoded entry from a peer must be checked).
    pub fn is_valid(&self) -> bool {
        self.slots() > 0
    }
}

impl omnipaxos::storage::Entry for LogEntry {
    type Snapshot = omnipaxos::storage::NoSnapshot;
}

/// The consensus protocol's own messages, wrapped so the [`crate::log::OrderedLog`] seam does not
/// leak a particular implementation into the rest of the crate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LogMsg {
    /// An omnipaxos message from the sender's `incarnation` (see [`crate::log::recovery`]:
    /// acceptors drop messages of a peer's earlier incarnations once they saw a later one).
    OmniPaxos {
        incarnation: u64,
        msg: omnipaxos::messages::Message<LogEntry>,
    },
    /// The recovery of an acceptor that lost its state ([`crate::log::recovery`]).
    Recovery(RecoveryMsg),
}

/// Which recovery attempt a [`RecoveryMsg`] belongs to: the recovering acceptor's incarnation
/// and its attempt number in that incarnation. Answers to another attempt are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub incarnation: u64,
    pub attempt: u32,
}

/// What an acceptor holds of one log, as it answers a recovering peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The highest ballot it promised (`None`: it never promised anything).
    pub promise: Option<omnipaxos::ballot_leader_election::Ballot>,
    /// The round of the entries it accepted last (`None`: it never accepted any).
    pub accepted_round: Option<omnipaxos::ballot_leader_election::Ballot>,
    /// One past its last entry.
    pub accepted_idx: u64,
    pub decided_idx: u64,
    /// Its first entry still held (entries below were trimmed).
    pub first_idx: u64,
}

impl Summary {
    /// Whether the acceptor ever voted (promised, accepted, or learned a decision).
    pub fn has_state(&self) -> bool {
        self.promise.is_some()
            || self.accepted_round.is_some()
            || self.accepted_idx > 0
            || self.decided_idx > 0
    }
}

/// How an acceptor answers a recovering peer's query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStatus {
    /// It votes, holding this state. `floors`: per other acceptor of the log, the highest
    /// incarnation it has seen (it drops consensus messages of lower ones). `bootstrapped`:
    /// if it started empty with a confirmed majority of recovering acceptors, those (with
    /// their incarnations), all of them recovering at one instant.
    Voting {
        summary: Summary,
        floors: Vec<(NodeId, u64)>,
        bootstrapped: Vec<(NodeId, u64)>,
    },
    /// It does not vote (it is recovering too); `incarnation` is its own.
    Recovering { incarnation: u64 },
    /// It already saw incarnation `floor` of the querying node, at or above the query's: the
    /// query comes from an older process, or the node's clock went back.
    Stale { floor: u64 },
}

/// The recovery protocol of one log (see [`crate::log::recovery`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RecoveryMsg {
    /// A recovering acceptor asks for every other acceptor's state.
    Query { attempt: Attempt },
    /// The answer to a query.
    Status {
        attempt: Attempt,
        status: PeerStatus,
    },
    /// The recovering acceptor copies up to `max` entries from index `from` of the source's log.
    Fetch {
        attempt: Attempt,
        from: u64,
        max: u32,
    },
    /// Entries of the source's log from index `from`, with the round and first index the
    /// source holds now (the copy restarts if they changed).
    Chunk {
        attempt: Attempt,
        round: Option<omnipaxos::ballot_leader_election::Ballot>,
        first_idx: u64,
        from: u64,
        entries: Vec<LogEntry>,
    },
}

/// Every message one node sends another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NetMsg {
    /// Consensus traffic of one log, between its acceptors (boxed: consensus messages are
    /// large and rare next to the rest).
    Log { log: LogId, msg: Box<LogMsg> },
    /// A sender asks the leader of `log` to order these messages.
    Submit { log: LogId, msgs: Vec<Message> },
    /// The receiver of a `Submit` does not lead `log`; `leader` is its best guess.
    NotLeader { log: LogId, leader: Option<NodeId> },
    /// The leader of `log` has these messages of the receiver (by `(epoch, seq)`) decided.
    Ack { log: LogId, ids: Vec<(u32, u64)> },
    /// Decided entries of `log` starting at index `start`, pushed by the leader or answering a fetch.
    Entries {
        log: LogId,
        start: u64,
        entries: Vec<LogEntry>,
    },
    /// A subscriber asks an acceptor for decided entries of `log` from index `from`.
    Fetch { log: LogId, from: u64 },
    /// Entries below `first` have been trimmed away.
    Trimmed { log: LogId, first: u64 },
    /// A subscriber has received every entry of `log` below `next`.
    Progress { log: LogId, next: u64 },
    /// A subscriber blocked on `log`, holding its entries below `index`, needs `slots` more
    /// virtual slots from there on; the leader pads the log with a skip if it has fewer.
    SkipHint { log: LogId, index: u64, slots: u64 },
    /// Reliable multicast data.
    RData {
        id: MsgId,
        dests: GroupSet,
        payload: Bytes,
    },
    /// Reliable multicast acknowledgement.
    RAck { id: MsgId },
    /// A point-to-point message of the application (for example a replica's reply to a
    /// client). Unordered and best effort: the application resends what matters.
    App { payload: Bytes },
    /// A subscriber holds a checkpoint of its state that covers every entry of `log` below
    /// `next` (it can be restarted from the checkpoint and the log from `next` on). The log's
    /// acceptors trim below the lowest such position of the subscribers that checkpoint.
    Checkpointed { log: LogId, next: u64 },
    /// A node asks an acceptor of `log` for its accepted index (see [`crate::readindex`]).
    IndexQuery {
        log: LogId,
        read: crate::readindex::ReadToken,
    },
    /// An acceptor's answer to an `IndexQuery`: the length of its copy of `log`.
    IndexReply {
        log: LogId,
        read: crate::readindex::ReadToken,
        accepted: u64,
    },
}

impl NetMsg {
    /// Whether this is leader-election traffic, which runtimes deliver ahead of bulk data so
    /// a busy leader's heartbeats do not queue behind the entries it is replicating (a busy
    /// leader must not look dead).
    pub fn is_control(&self) -> bool {
        matches!(self, NetMsg::Log { msg, .. } if matches!(**msg, LogMsg::OmniPaxos { msg: omnipaxos::messages::Message::BLE(_), .. }))
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NetMsg::Log { .. } => "log",
            NetMsg::Submit { .. } => "submit",
            NetMsg::NotLeader { .. } => "not-leader",
            NetMsg::Ack { .. } => "ack",
            NetMsg::Entries { .. } => "entries",
            NetMsg::Fetch { .. } => "fetch",
            NetMsg::Trimmed { .. } => "trimmed",
            NetMsg::Progress { .. } => "progress",
            NetMsg::SkipHint { .. } => "skip-hint",
            NetMsg::RData { .. } => "rdata",
            NetMsg::RAck { .. } => "rack",
            NetMsg::App { .. } => "app",
            NetMsg::Checkpointed { .. } => "checkpointed",
            NetMsg::IndexQuery { .. } => "index-query",
            NetMsg::IndexReply { .. } => "index-reply",
        }
    }
}
