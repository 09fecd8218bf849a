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
    OmniPaxos(omnipaxos::messages::Message<LogEntry>),
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
}

impl NetMsg {
    /// Whether this is leader-election traffic, which runtimes deliver ahead of bulk data so
    /// a busy leader's heartbeats do not queue behind the entries it is replicating (a busy
    /// leader must not look dead).
    pub fn is_control(&self) -> bool {
        matches!(self, NetMsg::Log { msg, .. } if matches!(**msg, LogMsg::OmniPaxos(omnipaxos::messages::Message::BLE(_))))
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
        }
    }
}
