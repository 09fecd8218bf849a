//! [`OrderedLog`] with a single acceptor (f = 0): a proposal is decided at once.
//! omnipaxos requires at least two servers, and a one-node log is still useful for
//! unreplicated baselines and for tests.

use super::{LogError, OrderedLog, Read, TrimError};
use crate::ids::NodeId;
use crate::message::{LogEntry, LogMsg};
use std::collections::VecDeque;

/// A log decided by its only acceptor.
pub struct SoloLog {
    me: NodeId,
    entries: VecDeque<LogEntry>,
    /// Index of `entries[0]`.
    first: u64,
    /// Next index `take_decided` returns.
    cursor: u64,
}

impl SoloLog {
    pub fn new(me: NodeId) -> Self {
        SoloLog {
            me,
            entries: VecDeque::new(),
            first: 0,
            cursor: 0,
        }
    }
}

impl OrderedLog for SoloLog {
    fn propose(&mut self, entry: LogEntry) -> Result<(), LogEntry> {
        self.entries.push_back(entry);
        Ok(())
    }
    fn handle(&mut self, from: NodeId, _msg: LogMsg) -> Result<(), LogError> {
        Err(LogError::UnknownPeer(from))
    }
    fn tick(&mut self) {}
    fn take_outgoing(&mut self, _out: &mut Vec<(NodeId, LogMsg)>) {}
    fn take_decided(&mut self, out: &mut Vec<LogEntry>) -> u64 {
        let start = self.cursor.max(self.first);
        let end = self.first + self.entries.len() as u64;
        out.extend(self.entries.range((start - self.first) as usize..).cloned());
        self.cursor = end;
        start
    }
    fn read_decided(&self, from: u64, max: usize) -> Read {
        if from < self.first {
            return Read::Trimmed { first: self.first };
        }
        let skip = (from - self.first) as usize;
        Read::Entries(self.entries.iter().skip(skip).take(max).cloned().collect())
    }
    fn read_accepted(&self, from: u64, max: usize) -> Vec<LogEntry> {
        match self.read_decided(from, max) {
            Read::Entries(es) => es,
            Read::Trimmed { .. } => Vec::new(),
        }
    }
    fn trim(&mut self, below: u64) -> Result<u64, TrimError> {
        let below = below.min(self.first + self.entries.len() as u64);
        if below <= self.first {
            return Err(TrimError::NothingToTrim(self.first));
        }
        self.entries.drain(..(below - self.first) as usize);
        self.first = below;
        Ok(below)
    }
    fn leader(&self) -> Option<NodeId> {
        Some(self.me)
    }
    fn is_leader(&self) -> bool {
        true
    }
    fn decided_idx(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
    fn accepted_idx(&self) -> u64 {
        self.decided_idx()
    }
    fn first_idx(&self) -> u64 {
        self.first
    }
    fn reconnected(&mut self, _peer: NodeId) {}
}
