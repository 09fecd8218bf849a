//! Storage for the omnipaxos log: an in-memory store, and a shared handle that survives a
//! simulated crash (the simulator keeps one handle and gives it to the restarted node).

use crate::message::LogEntry;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// The acceptor state of one log, kept in memory.
///
/// Invariant: `entries[i]` is log index `trimmed + i`; `decided <= trimmed + entries.len()`
/// once the log has caught up (omnipaxos may record a decided index ahead of what it holds
/// while syncing).
#[derive(Default, Debug)]
pub struct MemStorage {
    entries: VecDeque<LogEntry>,
    /// Trimmed entries not dropped yet, oldest first. The store that drops a batch last frees
    /// every message in it; dropping a whole trim step at once (1024 batches, ~80 k cold
    /// allocations at 700 k msgs/s) held one node's thread for 7-16 ms at every trim, a
    /// stall every ~120 ms that set the multicast p99. They are released a few per write
    /// instead ([`RELEASE_PER_WRITE`]), so a step is gone well before the next trim; while
    /// the log is idle at most one trim step stays held.
    released: VecDeque<LogEntry>,
    trimmed: usize,
    compacted: usize,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided: usize,
    stopsign: Option<StopSign>,
}

/// The whole acceptor state of one log as a plain value: what [`MemStorage::image`] returns and
/// [`MemStorage::from_image`] rebuilds from. The durable store ([`super::disk`]) writes it as
/// its compaction snapshot; tests compare two stores through it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageImage {
    /// Entries from index `trimmed` on.
    pub entries: Vec<LogEntry>,
    pub trimmed: u64,
    pub compacted: u64,
    pub promise: Option<Ballot>,
    pub accepted_round: Option<Ballot>,
    pub decided: u64,
    pub stopsign: Option<StopSign>,
}

/// The operations that turn an empty store into one holding exactly `image` (written as one
/// `write_atomically` call, so a crash keeps all of it or none of it).
pub fn image_ops(image: StorageImage) -> Vec<StorageOp<LogEntry>> {
    let mut ops = vec![
        StorageOp::Trim(image.trimmed as usize),
        StorageOp::SetCompactedIdx(image.compacted as usize),
    ];
    if !image.entries.is_empty() {
        ops.push(StorageOp::AppendEntries(image.entries));
    }
    if let Some(p) = image.promise {
        ops.push(StorageOp::SetPromise(p));
    }
    if let Some(r) = image.accepted_round {
        ops.push(StorageOp::SetAcceptedRound(r));
    }
    ops.push(StorageOp::SetDecidedIndex(image.decided as usize));
    if image.stopsign.is_some() {
        ops.push(StorageOp::SetStopsign(image.stopsign));
    }
    ops
}

/// Trimmed entries dropped per appended entry, and per other write (at least): more than one,
/// so the entries of a trim step are gone before the next step is trimmed.
const RELEASE_PER_WRITE: usize = 4;

impl MemStorage {
    /// Drops up to `n` trimmed entries.
    fn release(&mut self, n: usize) {
        let n = n.min(self.released.len());
        self.released.drain(..n);
    }

    /// Trimmed entries still held (tests).
    #[cfg(test)]
    fn released_len(&self) -> usize {
        self.released.len()
    }

    /// A copy of the whole state.
    pub fn image(&self) -> StorageImage {
        StorageImage {
            entries: self.entries.iter().cloned().collect(),
            trimmed: self.trimmed as u64,
            compacted: self.compacted as u64,
            promise: self.promise,
            accepted_round: self.accepted_round,
            decided: self.decided as u64,
            stopsign: self.stopsign.clone(),
        }
    }

    /// The store holding exactly `image`.
    pub fn from_image(image: StorageImage) -> Self {
        MemStorage {
            entries: image.entries.into(),
            released: VecDeque::new(),
            trimmed: image.trimmed as usize,
            compacted: image.compacted as usize,
            promise: image.promise,
            accepted_round: image.accepted_round,
            decided: image.decided as usize,
            stopsign: image.stopsign,
        }
    }

    /// One past the last entry held (trimmed entries count).
    pub fn end(&self) -> u64 {
        (self.trimmed + self.entries.len()) as u64
    }

    fn slice(&self, from: usize, to: usize) -> Vec<LogEntry> {
        if from < self.trimmed || to < from || to - self.trimmed > self.entries.len() {
            return Vec::new();
        }
        self.entries
            .range(from - self.trimmed..to - self.trimmed)
            .cloned()
            .collect()
    }
}

impl Storage<LogEntry> for MemStorage {
    fn write_atomically(&mut self, ops: Vec<StorageOp<LogEntry>>) -> StorageResult<()> {
        for op in ops {
            match op {
                StorageOp::AppendEntry(e) => self.append_entry(e)?,
                StorageOp::AppendEntries(es) => self.append_entries(es)?,
                StorageOp::AppendOnPrefix(i, es) => self.append_on_prefix(i, es)?,
                StorageOp::SetPromise(b) => self.set_promise(b)?,
                StorageOp::SetDecidedIndex(i) => self.set_decided_idx(i)?,
                StorageOp::SetAcceptedRound(b) => self.set_accepted_round(b)?,
                StorageOp::SetCompactedIdx(i) => self.set_compacted_idx(i)?,
                StorageOp::Trim(i) => self.trim(i)?,
                StorageOp::SetStopsign(s) => self.set_stopsign(s)?,
                StorageOp::SetSnapshot(s) => self.set_snapshot(s)?,
            }
        }
        Ok(())
    }
    fn append_entry(&mut self, entry: LogEntry) -> StorageResult<()> {
        self.entries.push_back(entry);
        self.release(RELEASE_PER_WRITE);
        Ok(())
    }
    fn append_entries(&mut self, entries: Vec<LogEntry>) -> StorageResult<()> {
        let n = entries.len();
        self.entries.extend(entries);
        self.release(RELEASE_PER_WRITE * n.max(1));
        Ok(())
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.entries.truncate(from_idx.saturating_sub(self.trimmed));
        self.append_entries(entries)
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.promise = Some(n_prom);
        Ok(())
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.decided = ld;
        self.release(RELEASE_PER_WRITE);
        Ok(())
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.decided)
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.accepted_round = Some(na);
        Ok(())
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.accepted_round)
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<LogEntry>> {
        Ok(self.slice(from, to))
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.entries.len())
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<LogEntry>> {
        Ok(self.slice(from.max(self.trimmed), self.trimmed + self.entries.len()))
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.promise)
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.stopsign = s;
        Ok(())
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.stopsign.clone())
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        let n = idx.saturating_sub(self.trimmed).min(self.entries.len());
        self.released.extend(self.entries.drain(..n));
        self.release(RELEASE_PER_WRITE);
        self.trimmed = self.trimmed.max(idx);
        Ok(())
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.compacted = idx;
        Ok(())
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.compacted)
    }
    fn set_snapshot(&mut self, _: Option<NoSnapshot>) -> StorageResult<()> {
        Ok(())
    }
    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        Ok(None)
    }
}

/// A cloneable handle to a storage backend. Every clone sees the same state, so a runtime can
/// keep one to rebuild a crashed acceptor from what it had stored.
pub struct Shared<S>(Arc<Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<S: Default> Default for Shared<S> {
    fn default() -> Self {
        Shared(Arc::new(Mutex::new(S::default())))
    }
}

impl<S> Shared<S> {
    pub fn new(s: S) -> Self {
        Shared(Arc::new(Mutex::new(s)))
    }
    /// Runs `f` on the backend (tests and fault injection).
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.0.lock())
    }
}

macro_rules! delegate {
    ($($name:ident(&mut self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&mut self $(, $arg: $ty)*) -> $ret { self.0.lock().$name($($arg),*) })*
    };
}
macro_rules! delegate_ref {
    ($($name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.0.lock().$name($($arg),*) })*
    };
}

impl<S: Storage<LogEntry>> Storage<LogEntry> for Shared<S> {
    delegate! {
        write_atomically(&mut self, ops: Vec<StorageOp<LogEntry>>) -> StorageResult<()>;
        append_entry(&mut self, entry: LogEntry) -> StorageResult<()>;
        append_entries(&mut self, entries: Vec<LogEntry>) -> StorageResult<()>;
        append_on_prefix(&mut self, from_idx: usize, entries: Vec<LogEntry>) -> StorageResult<()>;
        set_promise(&mut self, n_prom: Ballot) -> StorageResult<()>;
        set_decided_idx(&mut self, ld: usize) -> StorageResult<()>;
        set_accepted_round(&mut self, na: Ballot) -> StorageResult<()>;
        set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()>;
        trim(&mut self, idx: usize) -> StorageResult<()>;
        set_compacted_idx(&mut self, idx: usize) -> StorageResult<()>;
        set_snapshot(&mut self, snapshot: Option<NoSnapshot>) -> StorageResult<()>;
    }
    delegate_ref! {
        get_decided_idx(&self) -> StorageResult<usize>;
        get_accepted_round(&self) -> StorageResult<Option<Ballot>>;
        get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<LogEntry>>;
        get_log_len(&self) -> StorageResult<usize>;
        get_suffix(&self, from: usize) -> StorageResult<Vec<LogEntry>>;
        get_promise(&self) -> StorageResult<Option<Ballot>>;
        get_stopsign(&self) -> StorageResult<Option<StopSign>>;
        get_compacted_idx(&self) -> StorageResult<usize>;
        get_snapshot(&self) -> StorageResult<Option<NoSnapshot>>;
    }
}

/// What one write changed in a [`MemStorage`], enough to take it back with
/// [`MemStorage::undo`]. The simulator uses it to lose the writes of a step cut short by a crash
/// (see `sim::SimStorage`).
#[derive(Clone, Debug)]
pub struct MemUndo {
    trimmed: usize,
    compacted: usize,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided: usize,
    stopsign: Option<StopSign>,
    /// Entries a trim removed from the front.
    front: Vec<LogEntry>,
    /// The write left entries before index `keep` as they were; `tail` held those from `keep` on.
    keep: usize,
    tail: Vec<LogEntry>,
}

impl MemStorage {
    /// Applies `op` and returns how to take it back.
    pub fn write_undoable(&mut self, op: StorageOp<LogEntry>) -> MemUndo {
        let end = self.trimmed + self.entries.len();
        let keep = match &op {
            StorageOp::AppendOnPrefix(i, _) => (*i).clamp(self.trimmed, end),
            _ => end,
        };
        let front = match &op {
            StorageOp::Trim(i) => {
                let n = i.saturating_sub(self.trimmed).min(self.entries.len());
                self.entries.range(..n).cloned().collect()
            }
            _ => Vec::new(),
        };
        let undo = MemUndo {
            trimmed: self.trimmed,
            compacted: self.compacted,
            promise: self.promise,
            accepted_round: self.accepted_round,
            decided: self.decided,
            stopsign: self.stopsign.clone(),
            front,
            keep,
            tail: self.slice(keep, end),
        };
        // MemStorage never fails.
        let _ = self.write_atomically(vec![op]);
        undo
    }

    /// Takes back the write that returned `undo` (the writes after it first, newest first).
    pub fn undo(&mut self, undo: MemUndo) {
        for e in undo.front.into_iter().rev() {
            self.entries.push_front(e);
        }
        self.trimmed = undo.trimmed;
        self.entries.truncate(undo.keep - self.trimmed);
        self.entries.extend(undo.tail);
        self.compacted = undo.compacted;
        self.promise = undo.promise;
        self.accepted_round = undo.accepted_round;
        self.decided = undo.decided;
        self.stopsign = undo.stopsign;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groupset::GroupSet;
    use crate::ids::{GroupId, MsgId, NodeId};
    use crate::message::Message;
    use bytes::Bytes;

    fn batch(seq: u64) -> (LogEntry, Arc<[Message]>) {
        let msgs: Arc<[Message]> = Arc::from(vec![Message {
            id: MsgId {
                sender: NodeId(1),
                epoch: 0,
                seq,
            },
            log_seq: seq,
            dests: GroupSet::singleton(GroupId(0)),
            payload: Bytes::from(seq.to_le_bytes().to_vec()),
        }]);
        (LogEntry::Batch(msgs.clone()), msgs)
    }

    /// A trim hides the entries at once but drops them over the following writes: every
    /// trimmed batch is freed before as many entries as were trimmed have been appended again,
    /// and what the store answers is the same as if they had been dropped at once.
    #[test]
    fn trimmed_entries_are_released_over_the_next_writes() {
        let mut s = MemStorage::default();
        let mut held = Vec::new();
        for i in 0..1000 {
            let (e, m) = batch(i);
            s.append_entry(e).unwrap();
            held.push(m);
        }
        s.set_decided_idx(1000).unwrap();
        s.trim(900).unwrap();
        assert_eq!(s.get_log_len().unwrap(), 100);
        assert_eq!(
            s.get_entries(899, 901).unwrap().len(),
            0,
            "trimmed prefix is gone"
        );
        assert_eq!(s.get_entries(900, 1000).unwrap().len(), 100);
        assert_eq!(s.get_suffix(0).unwrap().len(), 100);
        assert!(
            s.image().entries.len() == 100,
            "an image holds only live entries"
        );
        assert!(
            s.released_len() > 800,
            "not all dropped at once: {}",
            s.released_len()
        );
        let mut appended = 0;
        while s.released_len() > 0 {
            let (e, _) = batch(1000 + appended);
            s.append_entry(e).unwrap();
            appended += 1;
            assert!(
                appended <= 900 / RELEASE_PER_WRITE as u64 + 1,
                "released too slowly"
            );
        }
        for (i, m) in held.iter().enumerate() {
            let expected = if i < 900 { 1 } else { 2 };
            assert_eq!(Arc::strong_count(m), expected, "batch {i}");
        }
        assert_eq!(s.get_entries(900, 901).unwrap().len(), 1);
    }

    /// Appending many entries at once releases proportionally many.
    #[test]
    fn bulk_appends_release_in_proportion() {
        let mut s = MemStorage::default();
        s.append_entries((0..100).map(|i| batch(i).0).collect())
            .unwrap();
        s.trim(100).unwrap();
        assert!(s.released_len() > 0);
        s.append_entries((100..125).map(|i| batch(i).0).collect())
            .unwrap();
        assert_eq!(s.released_len(), 0);
        assert_eq!(s.get_log_len().unwrap(), 25);
    }
}
