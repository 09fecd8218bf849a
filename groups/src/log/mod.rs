//! The [`OrderedLog`] seam: one group's fault-tolerant ordered log, as a sans-IO state machine.
//!
//! Contract for callers, in the order a runtime performs it:
//! 1. feed every message from a peer acceptor to [`OrderedLog::handle`];
//! 2. call [`OrderedLog::tick`] at the configured tick rate (elections, resends);
//! 3. propose with [`OrderedLog::propose`] only while [`OrderedLog::is_leader`] holds; an entry
//!    proposed elsewhere is handed back, never silently forwarded or dropped;
//! 4. after handling input, drain [`OrderedLog::take_outgoing`] and send each message to its
//!    node, and drain [`OrderedLog::take_decided`]: every entry is returned exactly once, in
//!    index order, and a decided entry never changes;
//! 5. [`OrderedLog::trim`] only on the leader, only below an index every consumer has read.
//!
//! Implementations: [`omni::OmniPaxosLog`] (Sequence Paxos from the `omnipaxos` crate, 2f+1
//! acceptors) and [`solo::SoloLog`] (one acceptor, f = 0: decides on proposal). The omnipaxos
//! log keeps its acceptor state in a [`storage::MemStorage`] (lost on a real crash) or a
//! [`disk::DiskStorage`] (a write-ahead file, synced before every acknowledgement).

pub mod disk;
pub mod identity;
pub mod omni;
pub mod recovery;
pub mod solo;
pub mod storage;

use crate::ids::NodeId;
use crate::message::{LogEntry, LogMsg};

/// Result of reading decided entries.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Decided entries from the requested index on (possibly none yet).
    Entries(Vec<LogEntry>),
    /// The requested index has been trimmed; the log now starts at `first`.
    Trimmed { first: u64 },
}

/// A message the log refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("message from {0}, which is not an acceptor of this log")]
    UnknownPeer(NodeId),
    #[error("message claims to come from acceptor #{claimed} but arrived from {from}")]
    Spoofed { from: NodeId, claimed: u64 },
    #[error("message is addressed to acceptor #{0}, not to this node")]
    Misaddressed(u64),
    #[error("message carries an empty batch or skip")]
    InvalidEntry,
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// Why a trim did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrimError {
    #[error("only the leader trims")]
    NotLeader,
    #[error("nothing to trim below {0}")]
    NothingToTrim(u64),
}

/// One log's consensus, as seen by one acceptor. See the module docs for the contract.
pub trait OrderedLog: Send {
    /// Appends `entry` if this node leads and is ready to accept proposals; otherwise hands
    /// it back untouched.
    fn propose(&mut self, entry: LogEntry) -> Result<(), LogEntry>;
    /// Handles a consensus message from acceptor `from`.
    fn handle(&mut self, from: NodeId, msg: LogMsg) -> Result<(), LogError>;
    /// Advances the log's logical clock by one tick.
    fn tick(&mut self);
    /// Moves outgoing messages, each with its destination, into `out`.
    fn take_outgoing(&mut self, out: &mut Vec<(NodeId, LogMsg)>);
    /// Appends the entries decided since the last call to `out` and returns the log index of
    /// the first of them. If entries this acceptor never returned were trimmed meanwhile, the
    /// returned index is past them.
    fn take_decided(&mut self, out: &mut Vec<LogEntry>) -> u64;
    /// Up to `max` decided entries from index `from`.
    fn read_decided(&self, from: u64, max: usize) -> Read;
    /// Up to `max` entries from index `from`, decided or not (empty if `from` was trimmed).
    /// Undecided entries may still change; callers use them only for estimates.
    fn read_accepted(&self, from: u64, max: usize) -> Vec<LogEntry>;
    /// Trims entries below `below` (or below the highest index all acceptors hold, if lower).
    /// Returns the new first index.
    fn trim(&mut self, below: u64) -> Result<u64, TrimError>;
    /// The current leader, as far as this acceptor knows.
    fn leader(&self) -> Option<NodeId>;
    /// Whether this acceptor leads and accepts proposals.
    fn is_leader(&self) -> bool;
    /// Number of decided entries (the index one past the last decided entry).
    fn decided_idx(&self) -> u64;
    /// Number of entries in this acceptor's log, decided or not.
    fn accepted_idx(&self) -> u64;
    /// Index of the first entry still held (entries below were trimmed).
    fn first_idx(&self) -> u64;
    /// Tells the log that the connection to `peer` was re-established (messages may have been lost).
    fn reconnected(&mut self, peer: NodeId);
    /// Protocol state in words, for debugging.
    fn status(&self) -> String {
        String::new()
    }
    /// Whether this acceptor votes, or is still recovering its state
    /// ([`recovery::RecoveringLog`]); a log that never loses its state always votes.
    fn recovery(&self) -> recovery::RecoveryState {
        recovery::RecoveryState::Voting
    }
    /// The recovered state of a log in [`recovery::RecoveryState::Recovered`], once.
    fn take_recovered(&mut self) -> Option<storage::StorageImage> {
        None
    }
    /// Makes a [`recovery::RecoveryState::Recovered`] log vote through `voter`, built over a
    /// storage that holds the recovered state.
    fn activate(&mut self, voter: Box<dyn recovery::Voter>) {
        drop(voter);
    }
    /// Stops a log for good (its node could not persist its recovered state).
    fn stop(&mut self, reason: String) {
        tracing::error!("{reason}");
    }
}
