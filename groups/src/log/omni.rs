//! [`OrderedLog`] over `omnipaxos` Sequence Paxos.
//!
//! omnipaxos numbers its servers 1..=n and indexes vectors by that number, so acceptor `i` of
//! the log's acceptor list is pid `i + 1`, and every incoming message's pids are checked before
//! omnipaxos sees it.
//!
//! One liveness workaround (found by the simulator, seed 46 of `multicast_faults`): when a
//! leader receives a `PrepareReq` from a follower it has already synchronised (a duplicate, or
//! a resend that crossed the sync), it forgets that follower's promise and sends `Prepare`
//! again with its current ballot; omnipaxos 0.2.4 followers ignore a `Prepare` whose ballot
//! equals their promise while they are in the Accept phase. The leader then never sends that
//! follower another accept, and with two such followers the log stops with a live majority.
//! [`OmniPaxosLog::handle`] answers such a `Prepare` by first moving the follower back to
//! recovery (omnipaxos's own `reconnected`), which makes it promise again, and drops the
//! `PrepareReq` that call emits so the cycle does not restart.
//!
//! And one safety guard (seeds 1396 and 1247): omnipaxos applies an `AcceptSync` whenever the
//! follower is in the Prepare phase, so a stale one (built by the leader from a duplicated or
//! delayed `Promise` of an earlier round) that arrives after the follower started a newer round
//! is applied against a log it was not computed for. Starting below the follower's decided index
//! it rewrites decided entries (omnipaxos only checks this with a `debug_assert!`); starting
//! beyond the follower's last entry it appends its suffix at the wrong index, while omnipaxos's
//! cached accepted index assumes the right one, so every later entry is stored one slot off. A
//! current `AcceptSync` always starts between the follower's decided and accepted indexes
//! (neither moves during the Prepare phase), so [`OmniPaxosLog::handle`] drops any other; the
//! follower's periodic Promise resend then gets a current one.

use super::recovery::Voter;
use super::{LogError, OrderedLog, Read, TrimError};
use crate::ids::NodeId;
use crate::message::{LogEntry, LogMsg, Summary};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use omnipaxos::messages::Message as OpMessage;
use omnipaxos::storage::{NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use omnipaxos::util::LogEntry as OpEntry;
use omnipaxos::{ClusterConfig as OpClusterConfig, CompactionErr, OmniPaxos, ServerConfig};
use parking_lot::Mutex;
use std::sync::Arc;

/// Timing of one omnipaxos instance, in ticks.
#[derive(Clone, Copy, Debug)]
pub struct OmniTiming {
    pub election_ticks: u64,
    pub resend_ticks: u64,
}

/// One acceptor's omnipaxos instance for one log.
pub struct OmniPaxosLog<B: Storage<LogEntry>> {
    op: OmniPaxos<LogEntry, Tracked<B>>,
    /// The accepted round in the storage (omnipaxos does not expose it; a recovering peer
    /// asks for it).
    accepted_round: Arc<Mutex<Option<Ballot>>>,
    acceptors: Vec<NodeId>,
    me: u64,
    /// Next index `take_decided` returns.
    cursor: u64,
    scratch: Vec<OpMessage<LogEntry>>,
    /// Messages taken out of omnipaxos early (see the module docs), sent with the next drain.
    early: Vec<OpMessage<LogEntry>>,
}

impl<B: Storage<LogEntry> + Send> OmniPaxosLog<B> {
    /// Builds the acceptor `me` of a log run by `acceptors` (at least 2; see [`super::solo`]
    /// for one). `preferred_leader` gets a higher election priority, which spreads the leaders
    /// of several logs over their acceptors. A storage that already holds a promise is
    /// recovered (the acceptor rejoins through omnipaxos's fail-recovery path).
    pub fn new(
        acceptors: Vec<NodeId>,
        me: NodeId,
        preferred_leader: NodeId,
        timing: OmniTiming,
        mut storage: B,
    ) -> Self {
        assert!(acceptors.len() >= 2, "omnipaxos needs at least 2 acceptors");
        repair_decided_beyond_end(&mut storage);
        let storage = Tracked::new(storage);
        let accepted_round = storage.round.clone();
        let pos = acceptors
            .iter()
            .position(|&a| a == me)
            .expect("node is an acceptor of the log");
        let me_pid = pos as u64 + 1;
        let cluster = OpClusterConfig {
            configuration_id: 1,
            nodes: (1..=acceptors.len() as u64).collect(),
            flexible_quorum: None,
        };
        let server = ServerConfig {
            pid: me_pid,
            election_tick_timeout: timing.election_ticks,
            resend_message_tick_timeout: timing.resend_ticks,
            buffer_size: 1024,
            batch_size: 1,
            flush_batch_tick_timeout: 1,
            leader_priority: u32::from(me == preferred_leader),
        };
        let op = cluster
            .build_for_server(server, storage)
            .expect("validated omnipaxos configuration");
        // A recovered acceptor returns its whole held log again: its node lost everything
        // it had delivered and replays from the first entry it still holds.
        let cursor = op.get_compacted_idx() as u64;
        OmniPaxosLog {
            op,
            accepted_round,
            acceptors,
            me: me_pid,
            cursor,
            scratch: Vec::new(),
            early: Vec::new(),
        }
    }

    fn pid_of(&self, node: NodeId) -> Option<u64> {
        self.acceptors
            .iter()
            .position(|&a| a == node)
            .map(|p| p as u64 + 1)
    }

    fn node_of(&self, pid: u64) -> Option<NodeId> {
        (pid as usize)
            .checked_sub(1)
            .and_then(|i| self.acceptors.get(i).copied())
    }
}

impl<B: Storage<LogEntry> + Send> OmniPaxosLog<B> {
    /// See the module docs: a follower in the Accept phase that gets a `Prepare` with the
    /// ballot it promised re-enters recovery so that omnipaxos answers it.
    fn unblock_equal_prepare(&mut self, ballot: omnipaxos::ballot_leader_election::Ballot) {
        let leader = ballot.pid;
        if leader == self.me
            || self.op.get_promise() != ballot
            || self.op.get_current_leader() != Some((leader, true))
        {
            return;
        }
        self.op.take_outgoing_messages(&mut self.early);
        let keep = self.early.len();
        self.op.reconnected(leader);
        self.op.take_outgoing_messages(&mut self.early);
        let mut i = keep;
        while i < self.early.len() {
            let is_req = matches!(
                &self.early[i],
                OpMessage::SequencePaxos(PaxosMessage { to, msg: PaxosMsg::PrepareReq(_), .. }) if *to == leader
            );
            if is_req {
                self.early.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// A stored decided index beyond the stored log's end (left by a leader that took a decided
/// index from a promise whose log it did not adopt, e.g. one from another cluster's state) is
/// cut back to the end before omnipaxos sees it: omnipaxos never lowers a decided index, and
/// reads of a decided suffix that runs past the log return nothing, so such a log would deliver
/// nothing more until it grew that far. Lowering the local mark is safe: the entries below it
/// are unchanged, and the acceptor learns the decided index again from its leader.
fn repair_decided_beyond_end<B: Storage<LogEntry>>(storage: &mut B) {
    let (Ok(decided), Ok(compacted), Ok(len)) = (
        storage.get_decided_idx(),
        storage.get_compacted_idx(),
        storage.get_log_len(),
    ) else {
        return;
    };
    // `get_log_len` counts the entries held, from the compacted index on.
    let end = compacted + len;
    if decided > end {
        tracing::warn!(
            decided,
            end,
            "stored decided index beyond the log's end; cutting it back"
        );
        let _ = storage.set_decided_idx(end);
    }
}

fn entries_valid(msg: &OpMessage<LogEntry>) -> bool {
    let all = |es: &[LogEntry]| es.iter().all(LogEntry::is_valid);
    match msg {
        OpMessage::SequencePaxos(p) => match &p.msg {
            PaxosMsg::AcceptDecide(a) => all(&a.entries),
            PaxosMsg::AcceptSync(a) => all(&a.log_sync.suffix),
            PaxosMsg::Promise(p) => p.log_sync.as_ref().is_none_or(|s| all(&s.suffix)),
            PaxosMsg::ProposalForward(es) => all(es),
            _ => true,
        },
        OpMessage::BLE(_) => true,
    }
}

impl<B: Storage<LogEntry> + Send> OrderedLog for OmniPaxosLog<B> {
    fn propose(&mut self, entry: LogEntry) -> Result<(), LogEntry> {
        if !self.is_leader() {
            return Err(entry);
        }
        self.op.append(entry).map_err(|e| match e {
            omnipaxos::ProposeErr::PendingReconfigEntry(e) => e,
            other => unreachable!("no reconfiguration is ever proposed: {other:?}"),
        })
    }

    fn handle(&mut self, from: NodeId, msg: LogMsg) -> Result<(), LogError> {
        let LogMsg::OmniPaxos { msg, .. } = msg else {
            return Err(LogError::Unexpected("a recovery message"));
        };
        let claimed = msg.get_sender();
        match self.pid_of(from) {
            None => return Err(LogError::UnknownPeer(from)),
            Some(pid) if pid != claimed => return Err(LogError::Spoofed { from, claimed }),
            Some(_) => {}
        }
        if msg.get_receiver() != self.me {
            return Err(LogError::Misaddressed(msg.get_receiver()));
        }
        if !entries_valid(&msg) {
            return Err(LogError::InvalidEntry);
        }
        if let OpMessage::SequencePaxos(PaxosMessage { msg: m, .. }) = &msg {
            match m {
                PaxosMsg::Prepare(p) => self.unblock_equal_prepare(p.n),
                PaxosMsg::AcceptSync(a)
                    if a.log_sync.sync_idx < self.op.get_decided_idx()
                        || a.log_sync.sync_idx > self.op.get_accepted_idx() =>
                {
                    tracing::debug!(
                        sync_idx = a.log_sync.sync_idx,
                        decided = self.op.get_decided_idx(),
                        accepted = self.op.get_accepted_idx(),
                        "stale AcceptSync dropped"
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        self.op.handle_incoming(msg);
        Ok(())
    }

    fn tick(&mut self) {
        self.op.tick();
    }

    fn take_outgoing(&mut self, out: &mut Vec<(NodeId, LogMsg)>) {
        self.scratch.append(&mut self.early);
        self.op.take_outgoing_messages(&mut self.scratch);
        for m in self.scratch.drain(..) {
            if let Some(to) = self
                .acceptors
                .get((m.get_receiver() as usize).wrapping_sub(1))
                .copied()
            {
                out.push((
                    to,
                    // The incarnation is stamped by the recovery layer around the log.
                    LogMsg::OmniPaxos {
                        incarnation: 0,
                        msg: m,
                    },
                ));
            }
        }
    }

    fn take_decided(&mut self, out: &mut Vec<LogEntry>) -> u64 {
        let decided = self.op.get_decided_idx() as u64;
        let mut start = self.cursor;
        if decided <= self.cursor {
            return start;
        }
        if let Some(entries) = self.op.read_decided_suffix(self.cursor as usize) {
            let mut taken = 0u64;
            for e in entries {
                match e {
                    OpEntry::Decided(x) => {
                        out.push(x);
                        taken += 1;
                    }
                    OpEntry::Trimmed(first) => {
                        debug_assert_eq!(taken, 0);
                        start = first as u64;
                    }
                    _ => break,
                }
            }
            self.cursor = start + taken;
        }
        start
    }

    fn read_decided(&self, from: u64, max: usize) -> Read {
        let decided = self.op.get_decided_idx() as u64;
        let first = self.op.get_compacted_idx() as u64;
        if from < first {
            return Read::Trimmed { first };
        }
        let to = decided.min(from.saturating_add(max as u64));
        if to <= from {
            return Read::Entries(Vec::new());
        }
        let entries = self
            .op
            .read_entries(from as usize..to as usize)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e {
                OpEntry::Decided(x) => out.push(x),
                OpEntry::Trimmed(first) => {
                    return Read::Trimmed {
                        first: first as u64,
                    }
                }
                _ => break,
            }
        }
        Read::Entries(out)
    }

    fn read_accepted(&self, from: u64, max: usize) -> Vec<LogEntry> {
        let to = self.accepted_idx().min(from.saturating_add(max as u64));
        if from < self.first_idx() || to <= from {
            return Vec::new();
        }
        let entries = self
            .op
            .read_entries(from as usize..to as usize)
            .unwrap_or_default();
        entries
            .into_iter()
            .map_while(|e| match e {
                OpEntry::Decided(x) | OpEntry::Undecided(x) => Some(x),
                _ => None,
            })
            .collect()
    }

    fn trim(&mut self, below: u64) -> Result<u64, TrimError> {
        let first = self.op.get_compacted_idx() as u64;
        let target = below.min(self.op.get_decided_idx() as u64);
        if target <= first {
            return Err(TrimError::NothingToTrim(first));
        }
        match self.op.trim(Some(target as usize)) {
            Ok(()) => Ok(target),
            Err(CompactionErr::NotAllDecided(all)) if all as u64 > first => {
                let all = all as u64;
                self.op
                    .trim(Some(all as usize))
                    .map(|()| all)
                    .map_err(|_| TrimError::NothingToTrim(first))
            }
            Err(CompactionErr::NotCurrentLeader(_)) => Err(TrimError::NotLeader),
            Err(_) => Err(TrimError::NothingToTrim(first)),
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.op
            .get_current_leader()
            .and_then(|(pid, _)| self.node_of(pid))
    }

    fn is_leader(&self) -> bool {
        self.op.get_current_leader() == Some((self.me, true))
    }

    fn decided_idx(&self) -> u64 {
        self.op.get_decided_idx() as u64
    }

    fn accepted_idx(&self) -> u64 {
        self.op.get_accepted_idx() as u64
    }

    fn first_idx(&self) -> u64 {
        self.op.get_compacted_idx() as u64
    }

    fn reconnected(&mut self, peer: NodeId) {
        if let Some(pid) = self.pid_of(peer) {
            self.op.reconnected(pid);
        }
    }

    fn status(&self) -> String {
        let ui = self.op.get_ui_states();
        format!(
            "pid={} promise={:?} leader/accept-phase={:?} ballot={:?} heartbeats={:?}",
            self.me,
            self.op.get_promise(),
            self.op.get_current_leader(),
            ui.current_ballot,
            ui.heartbeats
        )
    }
}

impl<B: Storage<LogEntry> + Send> Voter for OmniPaxosLog<B> {
    fn summary(&self) -> Summary {
        let promise = self.op.get_promise();
        Summary {
            promise: (promise != Ballot::default()).then_some(promise),
            accepted_round: *self.accepted_round.lock(),
            accepted_idx: self.accepted_idx(),
            decided_idx: self.decided_idx(),
            first_idx: self.first_idx(),
        }
    }
}

/// A storage that remembers its accepted round where the log can read it (omnipaxos keeps the
/// storage and does not say).
struct Tracked<B> {
    inner: B,
    round: Arc<Mutex<Option<Ballot>>>,
}

impl<B: Storage<LogEntry>> Tracked<B> {
    fn new(inner: B) -> Self {
        let round = inner.get_accepted_round().ok().flatten();
        Tracked {
            inner,
            round: Arc::new(Mutex::new(round)),
        }
    }

    fn note(&self, result: &StorageResult<()>) {
        if result.is_ok() {
            *self.round.lock() = self.inner.get_accepted_round().ok().flatten();
        }
    }
}

impl<B: Storage<LogEntry>> Storage<LogEntry> for Tracked<B> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<LogEntry>>) -> StorageResult<()> {
        let sets_round = ops
            .iter()
            .any(|op| matches!(op, StorageOp::SetAcceptedRound(_)));
        let r = self.inner.write_atomically(ops);
        if sets_round {
            self.note(&r);
        }
        r
    }
    fn append_entry(&mut self, entry: LogEntry) -> StorageResult<()> {
        self.inner.append_entry(entry)
    }
    fn append_entries(&mut self, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.inner.append_entries(entries)
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<LogEntry>) -> StorageResult<()> {
        self.inner.append_on_prefix(from_idx, entries)
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.inner.set_promise(n_prom)
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.inner.set_decided_idx(ld)
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.inner.get_decided_idx()
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        let r = self.inner.set_accepted_round(na);
        self.note(&r);
        r
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.inner.get_accepted_round()
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<LogEntry>> {
        self.inner.get_entries(from, to)
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        self.inner.get_log_len()
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<LogEntry>> {
        self.inner.get_suffix(from)
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.inner.get_promise()
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.inner.set_stopsign(s)
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.inner.get_stopsign()
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.inner.trim(idx)
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.inner.set_compacted_idx(idx)
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.inner.get_compacted_idx()
    }
    fn set_snapshot(&mut self, snapshot: Option<NoSnapshot>) -> StorageResult<()> {
        self.inner.set_snapshot(snapshot)
    }
    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        self.inner.get_snapshot()
    }
}
