//! [`RecoveringLog`]: an acceptor that lost its state does not vote until it has safely
//! recovered it from its peers (issue 16: the Paxos amnesia hazard).
//!
//! # The hazard
//!
//! Paxos is safe because an acceptor never forgets what it promised or accepted. An acceptor
//! restarted without its state (every restart in memory mode; a missing or wiped data
//! directory in disk mode) that votes at once breaks that: an entry accepted by {1, 3} and
//! acknowledged, then 3 wiped and 1 lost, leaves {2, 3} a quorum that never saw it, and they
//! decide something else at its index (`groups/tests/amnesia.rs` plays exactly that).
//!
//! # The protocol
//!
//! Every multi-acceptor log of a node is a `RecoveringLog`. One whose acceptor state is
//! trusted (a durable directory checked by its identity file, or the simulator's disk) votes
//! from the start. One that starts without state is *recovering*: its omnipaxos instance does
//! not exist yet, so it answers no `Prepare` and no `Accept` (consensus messages are dropped).
//! It queries the log's other acceptors (`Query`, resent every `resend_ticks` until it is
//! done); each answers with its [`PeerStatus`]: `Voting` with its [`Summary`] (promise,
//! accepted round, log end, decided and first index), or `Recovering`. Answers count only for
//! the current attempt (the recovering node's incarnation and attempt number). Then:
//!
//! 1. **Someone holds state** (a voting answer with a promise, an accepted round or entries):
//!    it waits until **every** other acceptor of the log answered `Voting` (a set R of 2f
//!    nodes), takes `promise := max promise over R`, picks the source X in R with the largest
//!    `(accepted round, log end)` (the rule omnipaxos's leader uses in its Prepare phase; ties
//!    to the lowest node id) and copies X's log from X's first index to the end X reported, in
//!    chunks (`Fetch` / `Chunk`, at most `chunk_entries` entries and [`CHUNK_BYTES_MAX`]
//!    bytes). Every chunk carries X's accepted round and first index now: if the round changed
//!    or X trimmed past the copy, the attempt starts over. Then `decided := min(max decided
//!    over R, copied end)`, and the log is built from that state (promise, X's accepted round,
//!    first index, entries, decided) and joins through omnipaxos's fail-recovery path, like a
//!    restarted durable acceptor. Its node's subscribers see the entries below the first
//!    index as trimmed and recover by state transfer, as they already do.
//! 2. **Nobody holds state** (a brand-new cluster): if a majority of the acceptors (itself
//!    included) are recovering in answers to this attempt, or every other acceptor answered
//!    `Voting` with nothing, it starts voting empty (bootstrap). A node that sees any state
//!    never bootstraps.
//! 3. Under [`Policy::RefuseIfPeersHoldState`] (a durable node whose data directory is
//!    missing, started without `--recover`), case 1 stops the node instead
//!    ([`RecoveryState::Stopped`], with a message naming the peer's state): it lost its data
//!    and the operator must say so.
//!
//! # Incarnations
//!
//! Every consensus message carries its sender's incarnation (a number larger at every start of
//! a node: the simulator counts restarts, real processes use the wall clock in microseconds),
//! and each acceptor keeps, per peer, the highest incarnation it has seen (its *floor*). A
//! message from below a peer's floor comes from a process that is dead or was recovered over:
//! it is dropped. A query raises the floor to the recovering incarnation before the answer is
//! produced, so every message of the lost incarnation that an answering acceptor handles is
//! reflected in its answer, and none is handled after it. A query from below the floor is
//! answered `Stale`, and the recovering node moves its incarnation above the floor and asks
//! again (a clock that went back).
//!
//! # Why it is safe (f failures, 2f + 1 acceptors)
//!
//! Let n be the recovering acceptor and n' its lost incarnation. The claim: after recovery n
//! behaves as an acceptor that kept its state would, so the usual Paxos invariants hold.
//!
//! - *Promises.* n' promised ballot b only after b's leader L set its own promise to b; if
//!   L = n' itself, see the next point. Otherwise L is in R, its promise only grows (a voting
//!   node that recovered earlier got a promise at least as high, by induction), and L answered
//!   after n' died: so `max promise over R >= b`, and n never accepts below anything n'
//!   promised. This is why R must hold *every* other acceptor: with f + 1 of the 2f others
//!   (the rule one would try first) R can miss L while the other members of b's promise
//!   quorum promise b only after answering; for f >= 2 that lets n accept a lower ballot
//!   whose value b's leader never sees, and two values get chosen at one index. (Crash
//!   vectors, Michael et al., DISC 2017, would allow f + 1 answers; not built.) For f = 1, R
//!   is the f + 1 others anyway.
//! - *Ballots n' led.* n may create the same ballot number again. If any acceptor promised or
//!   accepted in ballot b of n' before answering, n's promise is at least b and omnipaxos's
//!   leader election only picks ballots above its promise. Every message of n' that reaches
//!   an acceptor after it answered is dropped (its floor), so no one acts on b afterwards.
//! - *Accepted entries.* An entry chosen with n''s vote was chosen at round r by a quorum Q;
//!   the leader of r had it in its log before n' voted and, if it counts n''s vote after
//!   answering, the vote is dropped, so the entry was chosen by votes counted before the
//!   answers. The usual Paxos argument over those votes gives: every log accepted at round r
//!   or later holds it, in particular X's (whose round is the largest in R and at least the round
//!   any member of Q ∩ R accepted it at); n copies it. While X keeps its round its entries
//!   below the reported end do not change (the copy restarts otherwise), so n's state is one
//!   X itself held: a legal acceptor state with a promise at least its round.
//! - *Bootstrap* is the case where no acceptor ever voted. It is safe under the fault model
//!   "at most f acceptors of a log are down or recovering at once, except before the log has
//!   any state": f + 1 recovering answers to one attempt mean nobody can have decided
//!   anything. A run that loses more than f acceptors' state at once may lose data anyway;
//!   then bootstrap can also fork the log (a node that still has state but is cut off misses
//!   the vote). Disk mode narrows this: only a node without a data directory bootstraps.
//!
//! What is not covered: a data directory restored from an older copy has an identity and is
//! trusted (it votes with its old promises). Detecting it would need peers to remember the
//! latest incarnation of every node durably; see ARCHITECTURE.md.

use super::storage::StorageImage;
use super::{LogError, OrderedLog, Read, TrimError};
use crate::ids::{ClusterId, LogId, NodeId};
use crate::message::{Attempt, LogEntry, LogMsg, PeerStatus, RecoveryMsg, Summary};
use omnipaxos::ballot_leader_election::Ballot;
use std::collections::BTreeMap;

/// A chunk of a log copied to a recovering acceptor stops after this many payload bytes (frames
/// are capped at 16 MiB).
pub const CHUNK_BYTES_MAX: usize = 4 << 20;

/// A voting acceptor of a log: an [`OrderedLog`] that can say what it holds.
pub trait Voter: OrderedLog {
    fn summary(&self) -> Summary;
}

/// Where a recovering log stands ([`OrderedLog::recovery`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryState {
    /// It votes.
    Voting,
    /// It waits for its peers' answers or copies a peer's log.
    Recovering,
    /// It has its state and waits for [`OrderedLog::activate`] (a durable node writes its
    /// directory first).
    Recovered,
    /// It must not go on: the reason, for the operator.
    Stopped(String),
}

/// How a recovering log treats peers that hold state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Recover from them (memory mode, or a durable node started with `--recover`).
    Recover,
    /// Stop: a durable node without a data directory whose peers hold state lost its data,
    /// and only the operator may decide to rejoin.
    RefuseIfPeersHoldState,
}

/// What a recovering log does with its state once it has it.
pub enum Completion {
    /// Builds the voting log from it at once.
    Build(Box<dyn FnOnce(StorageImage) -> Box<dyn Voter> + Send>),
    /// Keeps it until [`OrderedLog::activate`] ([`OrderedLog::take_recovered`] hands it out).
    Hold,
}

/// Timing and sizes of the recovery.
#[derive(Clone, Copy, Debug)]
pub struct RecoverySettings {
    /// Queries and fetches are resent after this many ticks without an answer.
    pub resend_ticks: u64,
    /// Entries per copied chunk.
    pub chunk_entries: usize,
}

/// Who the log belongs to, for messages to the operator.
#[derive(Clone, Copy, Debug)]
pub struct LogName {
    pub cluster: ClusterId,
    pub log: LogId,
    pub me: NodeId,
}

/// One acceptor of a log, voting or recovering. See the module docs.
pub struct RecoveringLog {
    name: LogName,
    acceptors: Vec<NodeId>,
    incarnation: u64,
    /// Per peer, the highest incarnation seen.
    floors: BTreeMap<NodeId, u64>,
    settings: RecoverySettings,
    now: u64,
    state: State,
    out: Vec<(NodeId, LogMsg)>,
    /// Consensus messages dropped because they came from a peer's earlier incarnation.
    pub dropped_stale: u64,
}

enum State {
    Voting(Box<dyn Voter>),
    Recovering(Box<Recovery>),
    Recovered(Option<StorageImage>),
    Stopped(String),
}

struct Recovery {
    attempt: u32,
    policy: Policy,
    completion: Option<Completion>,
    answers: BTreeMap<NodeId, PeerStatus>,
    copy: Option<Copying>,
    last_sent: u64,
}

struct Copying {
    source: NodeId,
    round: Option<Ballot>,
    promise: Option<Ballot>,
    decided: u64,
    first: u64,
    end: u64,
    next: u64,
    entries: Vec<LogEntry>,
}

impl RecoveringLog {
    /// An acceptor whose state is trusted: it votes at once.
    pub fn voting(
        name: LogName,
        acceptors: Vec<NodeId>,
        incarnation: u64,
        settings: RecoverySettings,
        voter: Box<dyn Voter>,
    ) -> Self {
        Self::with_state(name, acceptors, incarnation, settings, State::Voting(voter))
    }

    /// An acceptor without state: it recovers first (module docs).
    pub fn recovering(
        name: LogName,
        acceptors: Vec<NodeId>,
        incarnation: u64,
        settings: RecoverySettings,
        policy: Policy,
        completion: Completion,
    ) -> Self {
        let recovery = Recovery {
            attempt: 0,
            policy,
            completion: Some(completion),
            answers: BTreeMap::new(),
            copy: None,
            last_sent: 0,
        };
        let mut log = Self::with_state(
            name,
            acceptors,
            incarnation,
            settings,
            State::Recovering(Box::new(recovery)),
        );
        log.send_queries();
        log
    }

    fn with_state(
        name: LogName,
        acceptors: Vec<NodeId>,
        incarnation: u64,
        settings: RecoverySettings,
        state: State,
    ) -> Self {
        RecoveringLog {
            name,
            acceptors,
            incarnation,
            floors: BTreeMap::new(),
            settings,
            now: 0,
            state,
            out: Vec::new(),
            dropped_stale: 0,
        }
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.name.me;
        self.acceptors.iter().copied().filter(move |&a| a != me)
    }

    fn f(&self) -> usize {
        (self.acceptors.len() - 1) / 2
    }

    fn current_attempt(&self) -> Option<Attempt> {
        match &self.state {
            State::Recovering(r) => Some(Attempt {
                incarnation: self.incarnation,
                attempt: r.attempt,
            }),
            _ => None,
        }
    }

    /// Queries every other acceptor that has not answered `Voting` in this attempt.
    fn send_queries(&mut self) {
        let Some(attempt) = self.current_attempt() else {
            return;
        };
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        r.last_sent = self.now;
        let me = self.name.me;
        for &a in self.acceptors.iter().filter(|&&a| a != me) {
            if !matches!(r.answers.get(&a), Some(PeerStatus::Voting(_))) {
                self.out
                    .push((a, LogMsg::Recovery(RecoveryMsg::Query { attempt })));
            }
        }
    }

    fn send_fetch(&mut self) {
        let Some(attempt) = self.current_attempt() else {
            return;
        };
        let max = self.settings.chunk_entries.clamp(1, u32::MAX as usize) as u32;
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        r.last_sent = self.now;
        if let Some(c) = &r.copy {
            self.out.push((
                c.source,
                LogMsg::Recovery(RecoveryMsg::Fetch {
                    attempt,
                    from: c.next,
                    max,
                }),
            ));
        }
    }

    /// Starts the recovery over with a new attempt number (answers of the old one no longer
    /// count).
    fn restart_attempt(&mut self, why: &str) {
        if let State::Recovering(r) = &mut self.state {
            tracing::info!(log = %self.name.log, node = %self.name.me, attempt = r.attempt, "recovery starts over: {why}");
            r.attempt += 1;
            r.answers.clear();
            r.copy = None;
        }
        self.send_queries();
    }

    fn on_recovery(&mut self, from: NodeId, msg: RecoveryMsg) {
        match msg {
            RecoveryMsg::Query { attempt } => {
                let floor = self.floors.entry(from).or_insert(0);
                let status = if attempt.incarnation < *floor {
                    PeerStatus::Stale { floor: *floor }
                } else {
                    *floor = attempt.incarnation;
                    match &self.state {
                        State::Voting(v) => PeerStatus::Voting(v.summary()),
                        _ => PeerStatus::Recovering,
                    }
                };
                self.out.push((
                    from,
                    LogMsg::Recovery(RecoveryMsg::Status { attempt, status }),
                ));
            }
            RecoveryMsg::Fetch {
                attempt,
                from: idx,
                max,
            } => {
                if let State::Voting(v) = &self.state {
                    let s = v.summary();
                    let mut entries = v.read_accepted(idx, max as usize);
                    let mut bytes = 0usize;
                    let mut keep = 0;
                    for e in &entries {
                        bytes += entry_bytes(e);
                        if keep > 0 && bytes > CHUNK_BYTES_MAX {
                            break;
                        }
                        keep += 1;
                    }
                    entries.truncate(keep);
                    self.out.push((
                        from,
                        LogMsg::Recovery(RecoveryMsg::Chunk {
                            attempt,
                            round: s.accepted_round,
                            first_idx: s.first_idx,
                            from: idx,
                            entries,
                        }),
                    ));
                }
            }
            RecoveryMsg::Status { attempt, status } => {
                if self.current_attempt() != Some(attempt) {
                    return;
                }
                if let PeerStatus::Stale { floor } = status {
                    tracing::warn!(log = %self.name.log, node = %self.name.me, peer = %from, floor, incarnation = self.incarnation,
                        "a peer saw a later incarnation of this node (clock went back?); moving above it");
                    self.incarnation = self.incarnation.max(floor + 1);
                    self.restart_attempt("incarnation moved");
                    return;
                }
                if let State::Recovering(r) = &mut self.state {
                    if r.copy.is_none() {
                        r.answers.insert(from, status);
                        self.decide();
                    }
                }
            }
            RecoveryMsg::Chunk {
                attempt,
                round,
                first_idx,
                from: idx,
                entries,
            } => {
                if self.current_attempt() != Some(attempt) {
                    return;
                }
                let State::Recovering(r) = &mut self.state else {
                    return;
                };
                let Some(c) = &mut r.copy else {
                    return;
                };
                if from != c.source || idx != c.next {
                    return;
                }
                if round != c.round {
                    self.restart_attempt("the source's accepted round changed during the copy");
                    return;
                }
                if first_idx > c.next {
                    self.restart_attempt("the source trimmed past the copy");
                    return;
                }
                if entries.is_empty() || !entries.iter().all(LogEntry::is_valid) {
                    self.restart_attempt("the source's log ended before the copy");
                    return;
                }
                let take = entries.len().min((c.end - c.next) as usize);
                c.next += take as u64;
                c.entries.extend(entries.into_iter().take(take));
                if c.next >= c.end {
                    self.finish_copy();
                } else {
                    self.send_fetch();
                }
            }
        }
    }

    /// After an answer: bootstrap, start copying, stop, or wait (module docs).
    fn decide(&mut self) {
        let others: Vec<NodeId> = self.others().collect();
        let f = self.f();
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        let voting: Vec<(NodeId, Summary)> = others
            .iter()
            .filter_map(|a| match r.answers.get(a) {
                Some(PeerStatus::Voting(s)) => Some((*a, *s)),
                _ => None,
            })
            .collect();
        let recovering = others
            .iter()
            .filter(|a| matches!(r.answers.get(a), Some(PeerStatus::Recovering)))
            .count();
        let holder = voting.iter().find(|(_, s)| s.has_state()).copied();
        match holder {
            Some((peer, s)) if r.policy == Policy::RefuseIfPeersHoldState => {
                let reason = format!(
                    "node {me} has no data directory but its peers hold state of cluster {cluster} \
                     (log {log}: {peer} holds entries up to index {end}, {decided} decided, \
                     promise {promise}): it lost its data. Restart it with --recover to rejoin \
                     safely (it then copies its state from its peers before it votes)",
                    me = self.name.me,
                    cluster = self.name.cluster,
                    log = self.name.log,
                    end = s.accepted_idx,
                    decided = s.decided_idx,
                    promise = s.promise.map_or("none".into(), |b| format!("n={} by #{}", b.n, b.pid)),
                );
                tracing::error!("{reason}");
                self.state = State::Stopped(reason);
            }
            Some(_) if voting.len() == others.len() => {
                let promise = voting.iter().filter_map(|(_, s)| s.promise).max();
                let decided = voting.iter().map(|(_, s)| s.decided_idx).max().unwrap_or(0);
                let (source, x) = voting
                    .iter()
                    .copied()
                    .max_by(|(a, sa), (b, sb)| {
                        (sa.accepted_round, sa.accepted_idx)
                            .cmp(&(sb.accepted_round, sb.accepted_idx))
                            .then(b.cmp(a))
                    })
                    .expect("at least one voting answer");
                r.copy = Some(Copying {
                    source,
                    round: x.accepted_round,
                    promise,
                    decided,
                    first: x.first_idx,
                    end: x.accepted_idx,
                    next: x.first_idx,
                    entries: Vec::new(),
                });
                tracing::info!(log = %self.name.log, node = %self.name.me, %source, from = x.first_idx, to = x.accepted_idx,
                    "recovering: copying the log of the most advanced peer");
                if x.accepted_idx <= x.first_idx {
                    self.finish_copy();
                } else {
                    self.send_fetch();
                }
            }
            Some(_) => {}
            None if 1 + recovering > f || voting.len() == others.len() => {
                tracing::info!(log = %self.name.log, node = %self.name.me, recovering, voting = voting.len(),
                    "no acceptor holds state: starting empty");
                self.complete(StorageImage::default());
            }
            None => {}
        }
    }

    fn finish_copy(&mut self) {
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        let Some(c) = r.copy.take() else {
            return;
        };
        let end = c.first + c.entries.len() as u64;
        let image = StorageImage {
            entries: c.entries,
            trimmed: c.first,
            compacted: c.first,
            promise: c.promise,
            accepted_round: c.round,
            decided: c.decided.min(end).max(c.first),
            stopsign: None,
        };
        tracing::info!(log = %self.name.log, node = %self.name.me, source = %c.source, first = c.first, end,
            decided = image.decided, "recovered the log's state from its peers");
        self.complete(image);
    }

    fn complete(&mut self, image: StorageImage) {
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        self.state = match r.completion.take() {
            Some(Completion::Build(build)) => State::Voting(build(image)),
            _ => State::Recovered(Some(image)),
        };
    }

    /// The voting log, if it votes.
    pub fn voter(&self) -> Option<&dyn Voter> {
        match &self.state {
            State::Voting(v) => Some(v.as_ref()),
            _ => None,
        }
    }
}

/// About what an entry costs on the wire.
fn entry_bytes(e: &LogEntry) -> usize {
    match e {
        LogEntry::Skip(_) => 16,
        LogEntry::Batch(m) => m.iter().map(|m| 64 + m.payload.len()).sum(),
    }
}

impl OrderedLog for RecoveringLog {
    fn propose(&mut self, entry: LogEntry) -> Result<(), LogEntry> {
        match &mut self.state {
            State::Voting(v) => v.propose(entry),
            _ => Err(entry),
        }
    }

    fn handle(&mut self, from: NodeId, msg: LogMsg) -> Result<(), LogError> {
        if from == self.name.me || !self.acceptors.contains(&from) {
            return Err(LogError::UnknownPeer(from));
        }
        match msg {
            LogMsg::OmniPaxos { incarnation, msg } => {
                let floor = self.floors.entry(from).or_insert(0);
                if incarnation < *floor {
                    self.dropped_stale += 1;
                    tracing::debug!(log = %self.name.log, %from, incarnation, floor = *floor,
                        "consensus message from an earlier incarnation dropped");
                    return Ok(());
                }
                *floor = incarnation;
                match &mut self.state {
                    State::Voting(v) => v.handle(from, LogMsg::OmniPaxos { incarnation, msg }),
                    // Not voting: no promise, no accept.
                    _ => Ok(()),
                }
            }
            LogMsg::Recovery(r) => {
                self.on_recovery(from, r);
                Ok(())
            }
        }
    }

    fn tick(&mut self) {
        self.now += 1;
        let resend = match &mut self.state {
            State::Voting(v) => {
                v.tick();
                None
            }
            State::Recovering(r) => (self.now >= r.last_sent + self.settings.resend_ticks.max(1))
                .then_some(r.copy.is_some()),
            _ => None,
        };
        match resend {
            Some(true) => self.send_fetch(),
            Some(false) => self.send_queries(),
            None => {}
        }
    }

    fn take_outgoing(&mut self, out: &mut Vec<(NodeId, LogMsg)>) {
        if let State::Voting(v) = &mut self.state {
            let from = out.len();
            v.take_outgoing(out);
            for (_, m) in &mut out[from..] {
                if let LogMsg::OmniPaxos { incarnation, .. } = m {
                    *incarnation = self.incarnation;
                }
            }
        }
        out.append(&mut self.out);
    }

    fn take_decided(&mut self, out: &mut Vec<LogEntry>) -> u64 {
        match &mut self.state {
            State::Voting(v) => v.take_decided(out),
            _ => 0,
        }
    }

    fn read_decided(&self, from: u64, max: usize) -> Read {
        match &self.state {
            State::Voting(v) => v.read_decided(from, max),
            _ => Read::Entries(Vec::new()),
        }
    }

    fn read_accepted(&self, from: u64, max: usize) -> Vec<LogEntry> {
        self.voter()
            .map(|v| v.read_accepted(from, max))
            .unwrap_or_default()
    }

    fn trim(&mut self, below: u64) -> Result<u64, TrimError> {
        match &mut self.state {
            State::Voting(v) => v.trim(below),
            _ => Err(TrimError::NotLeader),
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.voter().and_then(|v| v.leader())
    }

    fn is_leader(&self) -> bool {
        self.voter().is_some_and(|v| v.is_leader())
    }

    fn decided_idx(&self) -> u64 {
        self.voter().map_or(0, |v| v.decided_idx())
    }

    fn accepted_idx(&self) -> u64 {
        self.voter().map_or(0, |v| v.accepted_idx())
    }

    fn first_idx(&self) -> u64 {
        self.voter().map_or(0, |v| v.first_idx())
    }

    fn reconnected(&mut self, peer: NodeId) {
        if let State::Voting(v) = &mut self.state {
            v.reconnected(peer);
        }
    }

    fn status(&self) -> String {
        match &self.state {
            State::Voting(v) => format!("inc={} {}", self.incarnation, v.status()),
            State::Recovering(r) => format!(
                "RECOVERING inc={} attempt={} answers={:?} copy={:?}",
                self.incarnation,
                r.attempt,
                r.answers,
                r.copy.as_ref().map(|c| (c.source, c.next, c.end))
            ),
            State::Recovered(_) => "RECOVERED (waiting for its storage)".into(),
            State::Stopped(why) => format!("STOPPED: {why}"),
        }
    }

    fn recovery(&self) -> RecoveryState {
        match &self.state {
            State::Voting(_) => RecoveryState::Voting,
            State::Recovering(_) => RecoveryState::Recovering,
            State::Recovered(_) => RecoveryState::Recovered,
            State::Stopped(why) => RecoveryState::Stopped(why.clone()),
        }
    }

    fn take_recovered(&mut self) -> Option<StorageImage> {
        match &mut self.state {
            State::Recovered(image) => image.take(),
            _ => None,
        }
    }

    fn activate(&mut self, voter: Box<dyn Voter>) {
        debug_assert!(matches!(self.state, State::Recovered(_)));
        if matches!(self.state, State::Recovered(_)) {
            self.state = State::Voting(voter);
        }
    }

    fn stop(&mut self, reason: String) {
        self.state = State::Stopped(reason);
    }
}
