//! [`SimStorage`]: the simulator's acceptor storage, able to lose the writes of the step a crash
//! cut short.
//!
//! The durable store ([`crate::log::disk`]) syncs inside every write call before returning, so
//! whatever an acceptor sends depends only on synced writes. A crash can hit while a node
//! handles an event: the write being made is torn (the disk store cuts the torn record off at
//! restart) or never reaches the disk, and the step's outputs are never sent. The simulator
//! models this by rolling back writes of the current step (see [`super::GroupsSim`]).
//!
//! Every storage of one simulation shares a [`StepClock`]; the harness starts a step before
//! each event it runs, and each storage keeps undo records only for the writes it got in the
//! current step (they count as synced once the next step starts), numbered in the order they
//! were made across all storages.
//!
//! A storage can also be set to lie ([`SimStorage::set_lying`], a negative control for the
//! checks): it then keeps undo records for every write until told otherwise, so the harness can
//! lose the whole unsynced tail at a crash, including writes whose acknowledgements were sent.

use crate::log::storage::{MemStorage, MemUndo};
use crate::message::LogEntry;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default, Debug)]
struct ClockState {
    step: AtomicU64,
    seq: AtomicU64,
}

/// The step counter and write numbering shared by the storages of one simulation.
#[derive(Clone, Default, Debug)]
pub struct StepClock(Arc<ClockState>);

impl StepClock {
    /// Starts a new step: writes made from now on belong to it.
    pub fn begin_step(&self) {
        self.0.step.fetch_add(1, Ordering::Relaxed);
    }

    fn step(&self) -> u64 {
        self.0.step.load(Ordering::Relaxed)
    }

    fn next_seq(&self) -> u64 {
        self.0.seq.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
struct Journal {
    mem: MemStorage,
    /// Whether writes of past steps are still unsynced.
    lying: bool,
    /// Writes that may still be lost: (number, step, undo records of its operations in order),
    /// oldest first. One storage call is one write: a `write_atomically` is lost or kept whole.
    writes: Vec<(u64, u64, Vec<MemUndo>)>,
}

impl Journal {
    /// Whether a write made in `step` is unsynced now, in step `now`.
    fn unsynced(&self, step: u64, now: u64) -> bool {
        self.lying || step == now
    }
}

/// An in-memory acceptor store that remembers how to undo the writes of the current step. Every
/// clone shares the same state, so the harness keeps one across a node's crashes (like a disk).
#[derive(Clone, Debug)]
pub struct SimStorage {
    journal: Arc<Mutex<Journal>>,
    clock: StepClock,
}

impl SimStorage {
    /// An empty store whose steps follow `clock`.
    pub fn new(clock: StepClock) -> Self {
        SimStorage {
            journal: Arc::default(),
            clock,
        }
    }

    /// Runs `f` on the stored state, outside the journal (inspection and tests).
    pub fn with<R>(&self, f: impl FnOnce(&mut MemStorage) -> R) -> R {
        f(&mut self.journal.lock().mem)
    }

    /// Loses everything stored, as a wiped disk does (nothing can be rolled back afterwards).
    pub fn wipe(&self) {
        let mut j = self.journal.lock();
        j.mem = MemStorage::default();
        j.writes.clear();
        j.lying = false;
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.journal.lock().mem.image() == crate::log::storage::StorageImage::default()
    }

    /// The numbers of the writes made in the current step, oldest first.
    pub fn step_writes(&self) -> Vec<u64> {
        let now = self.clock.step();
        let j = self.journal.lock();
        j.writes
            .iter()
            .filter(|(_, step, _)| *step == now)
            .map(|(seq, _, _)| *seq)
            .collect()
    }

    /// Makes the storage lie about syncing (`true`: every write from now on stays unsynced) or
    /// sync honestly again (`false`: what is unsynced now counts as synced at the next step).
    pub fn set_lying(&self, lying: bool) {
        let now = self.clock.step();
        let mut j = self.journal.lock();
        if lying && !j.lying {
            // Writes of past steps were synced before the lie started.
            j.writes.retain(|(_, step, _)| *step == now);
        }
        j.lying = lying;
    }

    /// Takes back the unsynced writes (the current step's, and every one made while lying)
    /// numbered `from` or later, newest first, as if they never reached the disk. Returns how
    /// many it took back.
    pub fn roll_back_from(&self, from: u64) -> usize {
        let now = self.clock.step();
        let mut j = self.journal.lock();
        let mut n = 0;
        while let Some(&(seq, step, _)) = j.writes.last() {
            if seq < from || !j.unsynced(step, now) {
                break;
            }
            let (_, _, undos) = j.writes.pop().expect("checked");
            for u in undos.into_iter().rev() {
                j.mem.undo(u);
            }
            n += 1;
        }
        n
    }

    fn write(&mut self, ops: Vec<StorageOp<LogEntry>>) -> StorageResult<()> {
        let now = self.clock.step();
        let seq = self.clock.next_seq();
        let mut j = self.journal.lock();
        if !j.lying {
            j.writes.retain(|(_, step, _)| *step == now);
        }
        let undos = ops.into_iter().map(|op| j.mem.write_undoable(op)).collect();
        j.writes.push((seq, now, undos));
        Ok(())
    }
}

macro_rules! read {
    ($($name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.journal.lock().mem.$name($($arg),*) })*
    };
}

impl Storage<LogEntry> for SimStorage {
    fn write_atomically(&mut self, ops: Vec<StorageOp<LogEntry>>) -> StorageResult<()> {
        self.write(ops)
    }
    fn append_entry(&mut self, entry: LogEntry) -> StorageResult<()> {
        self.write(vec![StorageOp::AppendEntry(entry)])
    }
    fn append_entries(&mut self, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.write(vec![StorageOp::AppendEntries(entries)])
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.write(vec![StorageOp::AppendOnPrefix(from_idx, entries)])
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.write(vec![StorageOp::SetPromise(n_prom)])
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.write(vec![StorageOp::SetDecidedIndex(ld)])
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.write(vec![StorageOp::SetAcceptedRound(na)])
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.write(vec![StorageOp::SetStopsign(s)])
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.write(vec![StorageOp::Trim(idx)])
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.write(vec![StorageOp::SetCompactedIdx(idx)])
    }
    fn set_snapshot(&mut self, snapshot: Option<NoSnapshot>) -> StorageResult<()> {
        self.write(vec![StorageOp::SetSnapshot(snapshot)])
    }
    read! {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A distinct entry per `n`.
    fn batch(n: u64) -> LogEntry {
        LogEntry::Skip(n + 1)
    }

    fn ballot(n: u32) -> Ballot {
        Ballot {
            config_id: 0,
            n,
            priority: 0,
            pid: 1,
        }
    }

    #[test]
    fn a_step_is_rolled_back_exactly_and_earlier_steps_are_kept() {
        let clock = StepClock::default();
        let mut a = SimStorage::new(clock.clone());
        let mut b = SimStorage::new(clock.clone());
        // Step 1: a promise and three entries, decided up to 2.
        clock.begin_step();
        a.set_promise(ballot(1)).unwrap();
        a.write_atomically(vec![
            StorageOp::AppendEntries(vec![batch(0), batch(1), batch(2)]),
            StorageOp::SetAcceptedRound(ballot(1)),
        ])
        .unwrap();
        a.set_decided_idx(2).unwrap();
        b.append_entry(batch(0)).unwrap();
        let after_step1 = a.with(|m| m.image());
        let b_after_step1 = b.with(|m| m.image());
        // Step 2 (on `a` only): a new promise, an overwriting append, a decide and a trim.
        clock.begin_step();
        assert!(
            a.step_writes().is_empty(),
            "a new step starts with no writes"
        );
        a.set_promise(ballot(2)).unwrap();
        a.write_atomically(vec![
            StorageOp::AppendOnPrefix(1, vec![batch(7), batch(8), batch(9), batch(10)]),
            StorageOp::SetAcceptedRound(ballot(2)),
        ])
        .unwrap();
        a.set_decided_idx(4).unwrap();
        a.trim(2).unwrap();
        a.set_compacted_idx(2).unwrap();
        a.set_stopsign(None).unwrap();
        let writes = a.step_writes();
        assert_eq!(writes.len(), 6);
        assert!(b.step_writes().is_empty());
        let full = a.with(|m| m.image());
        assert_ne!(full, after_step1);

        // Keeping the first two writes of the step: exactly the state after them.
        let mut replay = SimStorage::new(StepClock::default());
        replay.with(|m| *m = MemStorage::from_image(after_step1.clone()));
        replay.set_promise(ballot(2)).unwrap();
        replay
            .write_atomically(vec![
                StorageOp::AppendOnPrefix(1, vec![batch(7), batch(8), batch(9), batch(10)]),
                StorageOp::SetAcceptedRound(ballot(2)),
            ])
            .unwrap();
        assert_eq!(a.roll_back_from(writes[2]), 4);
        assert_eq!(a.with(|m| m.image()), replay.with(|m| m.image()));
        assert_eq!(a.step_writes(), writes[..2].to_vec());

        // Taking back the rest: exactly the state after step 1; `b` untouched.
        assert_eq!(a.roll_back_from(writes[0]), 2);
        assert_eq!(a.with(|m| m.image()), after_step1);
        assert_eq!(b.with(|m| m.image()), b_after_step1);
        assert_eq!(a.roll_back_from(0), 0, "earlier steps are never taken back");
        assert_eq!(a.with(|m| m.image()), after_step1);

        // Writes of a past step are out of reach once a new step starts.
        clock.begin_step();
        b.append_entry(batch(1)).unwrap();
        clock.begin_step();
        assert!(b.step_writes().is_empty());
        assert_eq!(b.roll_back_from(0), 0);
        assert_eq!(b.with(|m| m.end()), 2);
    }

    #[test]
    fn a_lying_storage_loses_every_write_since_it_started_lying() {
        let clock = StepClock::default();
        let mut a = SimStorage::new(clock.clone());
        clock.begin_step();
        a.append_entry(batch(0)).unwrap();
        let synced = a.with(|m| m.image());
        clock.begin_step();
        a.set_lying(true);
        a.append_entry(batch(1)).unwrap();
        clock.begin_step();
        a.set_promise(ballot(3)).unwrap();
        a.append_on_prefix(0, vec![batch(5)]).unwrap();
        clock.begin_step();
        assert!(a.step_writes().is_empty());
        assert_eq!(a.roll_back_from(0), 3);
        assert_eq!(a.with(|m| m.image()), synced);
        // Honest again: a write counts as synced once its step is over.
        a.set_lying(false);
        a.append_entry(batch(2)).unwrap();
        clock.begin_step();
        assert_eq!(a.roll_back_from(0), 0);
        assert_eq!(a.with(|m| m.end()), 2);
    }
}
