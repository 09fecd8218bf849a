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
//! accepted round, log end, decided and first index) and its incarnation *floors* (below),
//! or `Recovering` with its own incarnation. Answers count only for the current attempt (the
//! recovering node's incarnation and attempt number). Except where rules 2 and 3 say
//! otherwise, it decides once **every** other acceptor answered and the answers are
//! *fenced*: every voting answer shows a floor for each peer that answered `Recovering` at
//! least that peer's incarnation (it asks everyone again at every resend, so outdated
//! answers get replaced). Then, with V the voting answers:
//!
//! 1. **Someone holds state** (an answer in V with a promise, an accepted round or entries):
//!    if V has fewer than f + 1 members, more than f acceptors lost their state and no copy
//!    is known to be safe: it waits (and says so). Otherwise it takes `promise := max promise
//!    over V`, picks the source X in V with the largest `(accepted round, log end)` (the rule
//!    omnipaxos's leader uses in its Prepare phase; ties to the lowest node id) and copies X's
//!    log from X's first index to the end X reported, in chunks (`Fetch` / `Chunk`, at most
//!    `chunk_entries` entries and [`CHUNK_BYTES_MAX`] bytes). Every chunk carries X's accepted
//!    round and first index now: if the round changed or X trimmed past the copy, the attempt
//!    starts over. Then `decided := min(max decided over V, copied end)`, and the log is built
//!    from that state (promise, X's accepted round, first index, entries, decided) and joins
//!    through omnipaxos's fail-recovery path, like a restarted durable acceptor. Its node's
//!    subscribers see the entries below the first index as trimmed and recover by state
//!    transfer, as they already do.
//! 2. **Nobody holds state** (a brand-new cluster, or one whose every member lost
//!    everything): if every other acceptor answered and at least f + 1 vote (with nothing),
//!    it starts voting empty (bootstrap). Otherwise at least f answered `Recovering`; an
//!    answer may be stale (that peer may vote by now, with state), so it asks again in a new
//!    attempt and bootstraps only if at least f peers answer `Recovering` in both, in the
//!    same incarnation: those were all recovering, with it, when the first attempt ended (a
//!    node only goes from recovering to voting). Under [`Policy::InMemory`] that confirmed
//!    majority is enough, even if some acceptor never answers (it is down); it starts the
//!    confirming attempt when all answered or its queries go unanswered for `resend_ticks`.
//!    Under [`Policy::Durable`] every other acceptor must have answered (two empty
//!    directories may be two wiped ones while the node that has the data is down). A node
//!    that bootstrapped with a confirmed majority names them (and itself, with
//!    incarnations) in its answers (`bootstrapped`); a recovering node named there in its
//!    current incarnation starts empty too, whatever its peers hold by now: it was recovering
//!    at an instant when the log had no state, and it has not voted since. So a cluster's
//!    first start does not depend on which node decided first.
//! 3. Under [`Policy::Durable`] without `recover` (a node whose data directory is missing,
//!    started without `--recover`), the first answer that holds state stops the node
//!    instead ([`RecoveryState::Stopped`], with a message naming the peer's state), unless
//!    rule 2 named it: it lost its data and the operator must say so.
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
//! again (a clock that went back). Floors live in memory: an acceptor that restarts forgets
//! them, which is harmless because messages of a process that died before it restarted cannot
//! reach its new incarnation (connections die with it; the simulator drops them too).
//!
//! # Why it is safe (at most f of 2f + 1 acceptors without state at once)
//!
//! Let n be the recovering acceptor and n' its lost incarnation (dead before n started). Call
//! *lost* the acceptors that answered `Recovering` (their earlier incarnations are dead too)
//! and V the voting ones; at most f acceptors (n included) are lost, so |V| >= f + 1 and every
//! quorum holds a member of V. Fencing gives: **each answer in V reflects every message of n'
//! and of every lost acceptor's earlier incarnation that its acceptor handled, and it handles
//! none of them afterwards.** The claim: after recovery n holds a state that an acceptor which
//! never lost anything could hold (so the usual Paxos invariants carry over).
//!
//! - *Promises.* Say n' promised ballot b, led by L. If L is in V: omnipaxos's leader promises
//!   its own ballot before it sends `Prepare` (`handle_leader`), promises only grow, and L
//!   answered after n' died, so `max promise over V >= b`. If L is n' or lost, its leadership
//!   died with it and its messages reach no member of V after its answer: ballot b can only
//!   get accepts from members of V before their answers (then `max promise >= b` again) or
//!   from lost acceptors, which are fewer than a quorum. So either n's promise is at least b,
//!   or nothing can ever be chosen in b and promising lower is harmless. This is why n waits
//!   for *every* other acceptor: with f + 1 of the 2f others (the rule one would try first) V
//!   can miss a live L while the other members of b's promise quorum promise b only after
//!   answering; for f >= 2 that lets n accept a lower ballot whose value b's leader never
//!   sees, and two values get chosen at one index. The same holds for a lost acceptor's dead
//!   leadership whose in-flight `Accept`s land after the answers: fencing closes that. (Crash
//!   vectors, Michael et al., DISC 2017, would let a recovering node use f + 1 answers; not
//!   built.)
//! - *Ballots n' led.* n may create the same ballot number again. If any member of V promised
//!   or accepted in a ballot b of n' before answering, n's promise is at least b and
//!   omnipaxos's leader takes only ballots above its promise (`handle_leader`); n''s messages
//!   are dropped by V after the answers.
//! - *Chosen entries.* Let e be chosen at index i in round r with n''s vote: a quorum Q that
//!   includes n' accepted it in round r. If r's leader L is in V, it held e at round r before
//!   n' accepted (so before n' died, before L answered): L's answer has round >= r and, if
//!   equal, a log holding e. If L is n' or lost, every member of Q in V (there is one)
//!   accepted e before its answer (later `Accept`s are dropped), with the same consequence.
//!   X dominates that answer in `(round, end)`: if X's round is r, both logs are prefixes of
//!   r's leader's log and X's is at least as long, so it holds e; if it is larger, the Paxos
//!   lemma (every round above r proposes logs extending what r chose) gives the same. n copies
//!   e. While X keeps its round its entries below the reported end do not change (within a
//!   round an acceptor's log only grows; the copy restarts otherwise), so n's log and round
//!   are ones X itself held, and n's promise (at least X's) is at least its round: a legal
//!   acceptor state.
//! - *Decided index.* A member of V that decided index d learned it in a round it accepted,
//!   with the chosen entries in its log; X's `(round, end)` dominates it, so by the same
//!   argument X's entries below `min(d, X's end)` are the chosen ones.
//! - *Bootstrap* happens only when no answer holds state, or when a peer's `bootstrapped`
//!   names n. With every other acceptor answering and f + 1 voting, it is the case above
//!   with an empty copy. Otherwise n and f confirmed peers were all without state at one
//!   instant (the end of the earlier attempt: each of them answered `Recovering` before it
//!   and again after it, in one incarnation). The fault model (at most f acceptors of a log
//!   without state at once) allows that only while the log has no state at all: on a
//!   cluster's first start, or once every acceptor lost everything (then the log is gone in
//!   any design; memory mode's premise). So n joins as an acceptor that never voted, which
//!   is a legal state whatever the others hold; the same holds for a node that a peer's
//!   `bootstrapped` names in its current incarnation. Without the confirmation, f = 2 has a
//!   counterexample: n, then q1, then q2 lose their state, q1 recovering from q2 in
//!   between; n hears `Recovering` from q1 (stale) and q2 and nothing from two acceptors
//!   that never saw the log's entries, bootstraps, and forms with them a quorum that never
//!   saw what q1 holds (`recovery_rules.rs` plays it). A run that breaks the fault model may
//!   lose data in any design; memory mode may then also fork the log (a majority that lost
//!   its state starts over while the one acceptor with state is down), disk mode does not:
//!   only a node without a data directory bootstraps, only once every acceptor answered,
//!   and without `--recover` it stops as soon as a peer holds state.
//!
//! # Liveness
//!
//! Recovery from peers with state needs every other acceptor of the log to answer: a
//! recovering node waits while a peer is down (with f = 1 that is the fault model anyway: a
//! second failure). Several recovering acceptors of one log finish together (fencing only
//! needs their queries to reach the voting ones), as long as at least f + 1 vote. More than f
//! acceptors without state while some acceptor holds state wait forever: that acceptor's
//! data may be all that is left, and only an operator can say what to do.
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

/// Where a recovering log's missing state comes from, which decides how it treats peers
/// that hold state and when it may start empty (module docs, "The protocol").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A node in memory: every start is without state. It recovers from peers that hold
    /// state, and starts empty with a confirmed majority of recovering acceptors (a majority
    /// without state at once is the whole log lost: the cluster's first start, or a restart
    /// of all of it), even while some acceptor does not answer.
    InMemory,
    /// A durable node without a data directory: it starts empty only once every other
    /// acceptor answered without state (durable acceptors do not lose state, so that is a
    /// new cluster). If a peer holds state, it lost its data: with `recover` (`--recover`) it
    /// recovers from its peers, otherwise it stops and the operator must say so.
    Durable { recover: bool },
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
    /// If it started empty with a confirmed majority of recovering acceptors: them (and
    /// itself) with their incarnations, all recovering at one instant. A peer named here, in
    /// the same incarnation, may start empty too ([`PeerStatus::Voting`]'s `bootstrapped`).
    bootstrapped: Vec<(NodeId, u64)>,
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
    /// Whether it said that too few acceptors vote (said once per attempt).
    warned: bool,
    /// The peers that answered `Recovering` (with their incarnations) when an earlier attempt
    /// ended without a holder of state and with fewer than f + 1 voting answers: a bootstrap
    /// needs f of them still recovering in the same incarnation (module docs, "Bootstrap").
    confirming: BTreeMap<NodeId, u64>,
    /// Queries resent without a decision, to say now and then whom it waits for.
    resends: u64,
}

/// A recovering log names the acceptors it still waits for every this many resends of its
/// queries (about 5 s with the default tuning).
const WAITING_LOG_RESENDS: u64 = 250;

impl Recovery {
    /// The peers that answered `Recovering` in this attempt, with their incarnations.
    fn recovering(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.answers.iter().filter_map(|(&a, s)| match s {
            PeerStatus::Recovering { incarnation } => Some((a, *incarnation)),
            _ => None,
        })
    }

    /// Whether every voting answer shows that its acceptor had fenced the earlier
    /// incarnations of every peer that answered `Recovering` (its floor for the peer is at
    /// least the peer's incarnation): messages of those dead processes handled before the
    /// answer are reflected in it, and none is handled after it.
    fn fenced(&self) -> bool {
        self.answers.values().all(|s| match s {
            PeerStatus::Voting { floors, .. } => self.fences_all(floors),
            _ => true,
        })
    }

    /// Whether `floors` (of one voting answer) fence every peer that answered `Recovering`.
    fn fences_all(&self, floors: &[(NodeId, u64)]) -> bool {
        self.answers.iter().all(|(peer, s)| match s {
            PeerStatus::Recovering { incarnation } => floors
                .iter()
                .any(|(n, floor)| n == peer && floor >= incarnation),
            _ => true,
        })
    }
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
            warned: false,
            confirming: BTreeMap::new(),
            resends: 0,
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
            bootstrapped: Vec::new(),
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

    /// Queries every other acceptor, again at every resend while it waits: an answer may be
    /// missing, outdated (its acceptor had not yet fenced a recovering peer's earlier
    /// incarnations; see [`Recovery::fenced`]), say `Recovering` (the peer may vote by now), or
    /// come from a process that died since (its restarted incarnation has not seen this node's
    /// query, so it does not show the fence a recovering peer needs).
    fn send_queries(&mut self) {
        let Some(attempt) = self.current_attempt() else {
            return;
        };
        let others: Vec<NodeId> = self.others().collect();
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        r.last_sent = self.now;
        for a in others {
            self.out
                .push((a, LogMsg::Recovery(RecoveryMsg::Query { attempt })));
        }
    }

    /// Every [`WAITING_LOG_RESENDS`] resends, logs the acceptors that have not answered the
    /// current attempt (recovery needs every one of them; one may be down).
    fn say_whom_it_waits_for(&mut self) {
        let others: Vec<NodeId> = self.others().collect();
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        r.resends += 1;
        if r.resends % WAITING_LOG_RESENDS != 0 {
            return;
        }
        let silent: Vec<String> = others
            .iter()
            .filter(|a| !r.answers.contains_key(a))
            .map(|a| a.to_string())
            .collect();
        if !silent.is_empty() {
            tracing::warn!(log = %self.name.log, node = %self.name.me, attempt = r.attempt,
                "recovering: does not vote until every other acceptor of the log answered; waiting for {}",
                silent.join(", "));
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
            r.warned = false;
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
                        State::Voting(v) => PeerStatus::Voting {
                            summary: v.summary(),
                            floors: self.floors.iter().map(|(&n, &i)| (n, i)).collect(),
                            bootstrapped: self.bootstrapped.clone(),
                        },
                        _ => PeerStatus::Recovering {
                            incarnation: self.incarnation,
                        },
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
                let State::Voting(v) = &self.state else {
                    // Not (or no longer) a source: the copier starts over.
                    self.out.push((
                        from,
                        LogMsg::Recovery(RecoveryMsg::Status {
                            attempt,
                            status: PeerStatus::Recovering {
                                incarnation: self.incarnation,
                            },
                        }),
                    ));
                    return;
                };
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
                let State::Recovering(r) = &mut self.state else {
                    return;
                };
                match &r.copy {
                    None => {
                        r.answers.insert(from, status);
                        self.decide();
                    }
                    Some(c) if c.source == from && !matches!(status, PeerStatus::Voting { .. }) => {
                        self.restart_attempt("the copy's source no longer votes");
                    }
                    Some(_) => {}
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

    /// After an answer: bootstrap, start copying, stop, or wait (module docs, "The protocol").
    fn decide(&mut self) {
        let others: Vec<NodeId> = self.others().collect();
        let f = self.f();
        let me = (self.name.me, self.incarnation);
        let State::Recovering(r) = &mut self.state else {
            return;
        };
        let voting: Vec<(NodeId, Summary)> = others
            .iter()
            .filter_map(|a| match r.answers.get(a) {
                Some(PeerStatus::Voting { summary, .. }) => Some((*a, *summary)),
                _ => None,
            })
            .collect();
        let named = r.answers.values().any(
            |s| matches!(s, PeerStatus::Voting { bootstrapped, .. } if bootstrapped.contains(&me)),
        );
        if named {
            tracing::info!(log = %self.name.log, node = %self.name.me,
                "a peer started the log empty with this node among a majority of recovering acceptors: starting empty");
            self.complete(StorageImage::default());
            return;
        }
        let holder = voting.iter().find(|(_, s)| s.has_state()).copied();
        if let (Some((peer, s)), Policy::Durable { recover: false }) = (holder, r.policy) {
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
                promise = s
                    .promise
                    .map_or("none".into(), |b| format!("n={} by #{}", b.n, b.pid)),
            );
            tracing::error!("{reason}");
            self.state = State::Stopped(reason);
            return;
        }
        if !r.fenced() {
            return;
        }
        let everyone = others.iter().all(|a| r.answers.contains_key(a));
        if holder.is_none() {
            let confirmed: Vec<(NodeId, u64)> = r
                .recovering()
                .filter(|(a, i)| r.confirming.get(a) == Some(i))
                .collect();
            let majority_may_start = everyone || r.policy == Policy::InMemory;
            if everyone && voting.len() > f {
                tracing::info!(log = %self.name.log, node = %self.name.me, voting = voting.len(),
                    "no acceptor holds state: starting empty");
                self.complete(StorageImage::default());
            } else if majority_may_start && confirmed.len() >= f {
                tracing::info!(log = %self.name.log, node = %self.name.me, ?confirmed,
                    "no acceptor holds state and a majority recovers: starting empty");
                let mut with = confirmed;
                with.push(me);
                self.bootstrapped = with;
                self.complete(StorageImage::default());
            } else if everyone && r.recovering().count() >= f {
                self.confirm_recovering();
            }
            return;
        }
        if !everyone {
            return;
        }
        if voting.len() <= f {
            // More than f acceptors lost their state: the log may have lost entries, and no
            // copy is known to be safe. Wait (a peer that recovers or restarts with its disk
            // answers `Voting` later).
            if !r.warned {
                r.warned = true;
                tracing::error!(log = %self.name.log, node = %self.name.me, voting = voting.len(), f,
                    "only {} of the other acceptors vote; recovery needs {} (more than f acceptors lost their state)",
                    voting.len(), f + 1);
            }
            return;
        }
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
            .expect("at least f + 1 voting answers");
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

    /// Nobody answered with state, and at least f answered `Recovering`, but those answers may
    /// be stale: remembers who was recovering now and asks everyone again (module docs,
    /// "Bootstrap").
    fn confirm_recovering(&mut self) {
        if let State::Recovering(r) = &mut self.state {
            r.confirming = r.recovering().collect();
        }
        self.restart_attempt(
            "no acceptor holds state; confirming that the recovering ones still are",
        );
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

/// What a recovering log resends when its answers are late.
enum Resend {
    Fetch,
    Query,
    Confirm,
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
        let f = self.f();
        let resend = match &mut self.state {
            State::Voting(v) => {
                v.tick();
                None
            }
            State::Recovering(r) if self.now >= r.last_sent + self.settings.resend_ticks.max(1) => {
                let holder = r.answers.values().any(
                    |s| matches!(s, PeerStatus::Voting { summary, .. } if summary.has_state()),
                );
                Some(if r.copy.is_some() {
                    Resend::Fetch
                } else if r.policy == Policy::InMemory && !holder && r.recovering().count() >= f {
                    // In memory, a majority may start empty without every acceptor's answer
                    // (one may be down): confirm the recovering ones once answers stop coming.
                    Resend::Confirm
                } else {
                    Resend::Query
                })
            }
            _ => None,
        };
        match resend {
            Some(Resend::Fetch) => self.send_fetch(),
            Some(Resend::Confirm) => self.confirm_recovering(),
            Some(Resend::Query) => {
                self.say_whom_it_waits_for();
                self.send_queries()
            }
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
