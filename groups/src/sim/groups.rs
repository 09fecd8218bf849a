//! [`GroupsSim`]: a simulated multicast cluster that records every delivery stream and checks
//! them with [`crate::checker`].
//!
//! Acceptor state survives crashes (each acceptor's log storage is kept by the harness and
//! handed to the restarted node, like a disk); everything else a node held is lost, and a
//! restarted node delivers its streams again from the start as a new incarnation.
//!
//! Besides crashes between events, a node can be armed to crash in the middle of a step
//! ([`GroupsSim::arm_step_crash`]): the next step in which it writes to its storage (or, for a
//! node that stores nothing, its next step) is cut short. [`StepCrash::MidStep`] is a fault the
//! protocol must survive: the step's writes from a seeded-random one on are lost (the torn
//! last write and anything after it) and nothing the step produced is sent.
//! [`StepCrash::LyingDisk`] is a negative control: all the step's writes are lost but its
//! messages and deliveries do get out, like a disk that acknowledged syncs it never did. A
//! longer lie, [`GroupsSim::set_lying_disk`], loses every write since it started at the node's
//! next crash (the lost unsynced tail).

use super::storage::{SimStorage, StepClock};
use super::{NetFaults, Network, Sim};
use crate::checker::{self, Sent, Stream, StreamId, Violation};
use crate::config::ClusterConfig;
use crate::groupset::GroupSet;
use crate::ids::{LogId, MsgId, NodeId};
use crate::log::recovery::Policy;
use crate::node::{GroupsNode, NodeOptions};
use crate::rmcast::RDelivery;
use bytes::Bytes;
use omnipaxos::storage::Storage;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How a simulation starts.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub net: NetFaults,
}

impl SimOptions {
    /// A fault-free network.
    pub fn calm(seed: u64) -> Self {
        SimOptions {
            seed,
            net: NetFaults::calm(),
        }
    }
}

/// How an armed node crashes in the middle of a step (see [`GroupsSim::arm_step_crash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepCrash {
    /// A crash while handling the event: the step's writes from a random one on are lost (a
    /// torn record cut off at restart, or writes that never reached the disk) and nothing the
    /// step produced is sent. Safe: nothing that depended on a lost write got out.
    MidStep,
    /// A disk that lies about syncing (negative control): every write of the step (and every
    /// one since [`GroupsSim::set_lying_disk`], if set) is lost, but the step's messages and
    /// deliveries do get out before the node crashes.
    LyingDisk,
}

/// One mid-step crash that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepCrashRecord {
    pub at_us: u64,
    pub node: NodeId,
    pub mode: StepCrash,
    /// Writes the step made, and how many writes were lost (the step's, and earlier unsynced
    /// ones of a lying disk).
    pub writes: usize,
    pub lost: usize,
}

/// One read index asked for in the simulation, with what it must cover.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    pub node: NodeId,
    pub incarnation: u32,
    pub seq: u64,
    pub asked_at_us: u64,
    /// Per log, one past the last entry known decided when the read was asked (delivered by
    /// any stream, or decided at any live acceptor): the position must be at least this.
    pub floor: Vec<(LogId, u64)>,
    /// What the node answered, once it did.
    pub positions: Option<Vec<(LogId, u64)>>,
    pub done_at_us: Option<u64>,
}

struct SentRecord {
    id: MsgId,
    dests: GroupSet,
    incarnation: u32,
    at_us: u64,
}

/// A simulated multicast cluster with recording.
pub struct GroupsSim {
    pub sim: Sim<GroupsNode>,
    cfg: Arc<ClusterConfig>,
    storages: BTreeMap<(NodeId, LogId), SimStorage>,
    clock: StepClock,
    /// Nodes that store something (acceptors of logs with more than one acceptor).
    writers: BTreeSet<NodeId>,
    armed: BTreeMap<NodeId, StepCrash>,
    /// Nodes whose disk lies (see [`GroupsSim::set_lying_disk`]).
    lying: BTreeSet<NodeId>,
    /// Nodes whose stored state was lost ([`GroupsSim::wipe`]) and not yet recovered: their
    /// logs with nothing stored start recovering, as a real node that lost its data does.
    wiped: BTreeSet<NodeId>,
    /// How those logs recover: as nodes in memory ([`GroupsSim::with_lost_state`]) or as
    /// durable nodes restarted with `--recover` ([`GroupsSim::wipe`] on a cluster built by
    /// [`GroupsSim::new`]).
    lost_state: Policy,
    step_crashes: Vec<StepCrashRecord>,
    /// Writes lost by storage faults so far.
    lost_writes: usize,
    /// Draws which writes a mid-step crash loses (apart from the network's RNG, so that arming
    /// a crash does not change the run before it fires).
    fault_rng: ChaCha8Rng,
    sent: Vec<SentRecord>,
    rsent: Vec<SentRecord>,
    streams: BTreeMap<StreamId, Vec<MsgId>>,
    /// Where each delivery came from: (log, entry index), parallel to `streams`.
    origins: BTreeMap<StreamId, Vec<(LogId, u64)>>,
    rstreams: BTreeMap<(NodeId, u32), Vec<MsgId>>,
    deliveries: Vec<(usize, crate::merge::Delivery)>,
    rdeliveries: Vec<RDelivery>,
    /// When each node incarnation started.
    started: BTreeMap<(NodeId, u32), u64>,
    /// Per log, one past the highest entry index any stream delivered from it.
    delivered_floor: BTreeMap<LogId, u64>,
    reads: Vec<ReadRecord>,
    read_at: BTreeMap<(NodeId, u32, u64), usize>,
}

impl GroupsSim {
    pub fn new(cfg: ClusterConfig, opts: SimOptions) -> Self {
        let cfg = Arc::new(cfg);
        Self::build(
            cfg,
            opts,
            BTreeSet::new(),
            Policy::Durable { recover: true },
        )
    }

    /// A cluster whose acceptors all start without state, as a cluster in memory mode does:
    /// their logs must bootstrap together ([`crate::log::recovery`]).
    pub fn with_lost_state(cfg: ClusterConfig, opts: SimOptions) -> Self {
        let all = cfg.nodes.iter().map(|n| n.id).collect();
        Self::build(Arc::new(cfg), opts, all, Policy::InMemory)
    }

    fn build(
        cfg: Arc<ClusterConfig>,
        opts: SimOptions,
        wiped: BTreeSet<NodeId>,
        lost_state: Policy,
    ) -> Self {
        let clock = StepClock::default();
        let mut storages = BTreeMap::new();
        let mut writers = BTreeSet::new();
        for l in &cfg.logs {
            for &a in &l.acceptors {
                storages.insert((a, l.id), SimStorage::new(clock.clone()));
                if l.acceptors.len() > 1 {
                    writers.insert(a);
                }
            }
        }
        let mut sim = Sim::new(opts.seed, cfg.tuning.tick_us, Network::new(opts.net));
        for n in &cfg.nodes {
            sim.add(
                n.id,
                make_node(&cfg, &storages, &wiped, lost_state, n.id, 0),
            );
        }
        GroupsSim {
            sim,
            cfg,
            storages,
            clock,
            writers,
            armed: BTreeMap::new(),
            lying: BTreeSet::new(),
            wiped,
            lost_state,
            step_crashes: Vec::new(),
            lost_writes: 0,
            fault_rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x70a2_d15c_c2a5_4ed0),
            sent: Vec::new(),
            rsent: Vec::new(),
            streams: BTreeMap::new(),
            origins: BTreeMap::new(),
            rstreams: BTreeMap::new(),
            deliveries: Vec::new(),
            rdeliveries: Vec::new(),
            started: BTreeMap::new(),
            delivered_floor: BTreeMap::new(),
            reads: Vec::new(),
            read_at: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.cfg
    }

    /// The storage that acceptor `node` keeps for `log` across its crashes (its "disk"), for
    /// inspection and for faults that replace what is on it.
    pub fn storage(&self, node: NodeId, log: LogId) -> Option<&SimStorage> {
        self.storages.get(&(node, log))
    }

    /// Asks `from` for a read index of `logs` now and records what it must cover; `None` if
    /// the node is down or refused the request.
    pub fn read_index(&mut self, from: NodeId, logs: &[LogId]) -> Option<u64> {
        let inc = self.sim.incarnation(from);
        let floor: Vec<(LogId, u64)> = logs
            .iter()
            .map(|&log| {
                let delivered = self.delivered_floor.get(&log).copied().unwrap_or(0);
                let decided = self
                    .sim
                    .up_nodes()
                    .into_iter()
                    .filter_map(|n| self.sim.actor(n).and_then(|a| a.decided_idx(log)))
                    .max()
                    .unwrap_or(0);
                (log, delivered.max(decided))
            })
            .collect();
        let seq = self.sim.with(from, |n| n.read_index(logs))?.ok()?;
        self.read_at.insert((from, inc, seq), self.reads.len());
        self.reads.push(ReadRecord {
            node: from,
            incarnation: inc,
            seq,
            asked_at_us: self.sim.now_us(),
            floor,
            positions: None,
            done_at_us: None,
        });
        Some(seq)
    }

    /// Every read index asked for so far.
    pub fn reads(&self) -> &[ReadRecord] {
        &self.reads
    }

    /// Checks the read indexes: every answered one covers its floor (safety), and, if
    /// `complete`, every read of a node's current incarnation was answered and the node's
    /// feeds have reached the positions (liveness, once the cluster is quiet).
    pub fn check_reads(&self, complete: bool) -> Result<(), Vec<String>> {
        let mut bad = Vec::new();
        for r in &self.reads {
            match &r.positions {
                Some(pos) => {
                    for &(log, floor) in &r.floor {
                        let got = pos.iter().find(|(l, _)| *l == log).map(|&(_, p)| p);
                        if got.is_none_or(|p| p < floor) {
                            bad.push(format!(
                                "read {}#{} of {} asked at {}us: position {got:?} of {log} is below {floor}, the end of what was decided before it",
                                r.node, r.seq, r.incarnation, r.asked_at_us
                            ));
                        }
                    }
                    if complete && self.correct(r.node, r.incarnation) {
                        for &(log, p) in pos {
                            let next = self.sim.actor(r.node).and_then(|a| a.feed_next(log));
                            if next.is_some_and(|n| n < p) {
                                bad.push(format!(
                                    "liveness: {}'s feed of {log} stays at {next:?}, short of read {}'s position {p}",
                                    r.node, r.seq
                                ));
                            }
                        }
                    }
                }
                None if complete && self.correct(r.node, r.incarnation) => bad.push(format!(
                    "liveness: read {}#{} asked at {}us never answered",
                    r.node, r.seq, r.asked_at_us
                )),
                None => {}
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }

    /// Multicasts from `from` now; `None` if the node is down or the multicast was refused.
    pub fn multicast(&mut self, from: NodeId, dests: GroupSet, payload: Bytes) -> Option<MsgId> {
        let inc = self.sim.incarnation(from);
        let d = dests.clone();
        let id = self.sim.with(from, |n| n.multicast(d, payload))?.ok()?;
        self.sent.push(SentRecord {
            id,
            dests,
            incarnation: inc,
            at_us: self.sim.now_us(),
        });
        self.collect(from);
        Some(id)
    }

    /// Reliably multicasts from `from` now.
    pub fn rmcast(&mut self, from: NodeId, dests: GroupSet, payload: Bytes) -> Option<MsgId> {
        let inc = self.sim.incarnation(from);
        let d = dests.clone();
        let id = self.sim.with(from, |n| n.rmcast(d, payload))?.ok()?;
        self.rsent.push(SentRecord {
            id,
            dests,
            incarnation: inc,
            at_us: self.sim.now_us(),
        });
        self.collect(from);
        Some(id)
    }

    pub fn crash(&mut self, node: NodeId) {
        self.sim.crash(node);
        self.lose_unsynced(node);
    }

    /// Negative control: from now on `node`'s disk acknowledges writes without syncing them,
    /// and the node's next crash (of any kind) loses every write since. It syncs honestly again
    /// after that crash.
    pub fn set_lying_disk(&mut self, node: NodeId) {
        self.lying.insert(node);
        for s in node_storages(&self.storages, node) {
            s.set_lying(true);
        }
    }

    /// At a crash of `node`: a lying disk loses what it never synced. Returns how many writes.
    fn lose_unsynced(&mut self, node: NodeId) -> usize {
        if !self.lying.remove(&node) {
            return 0;
        }
        let lost: usize = node_storages(&self.storages, node)
            .map(|s| {
                let n = s.roll_back_from(0);
                s.set_lying(false);
                n
            })
            .sum();
        self.lost_writes += lost;
        lost
    }

    /// Arms `node` to crash in the middle of its next step that writes to its storage (its
    /// next step, if it stores nothing), as `mode` says. The node stays down until restarted;
    /// [`GroupsSim::disarm_step_crash`] cancels a crash that has not happened yet.
    pub fn arm_step_crash(&mut self, node: NodeId, mode: StepCrash) {
        self.armed.insert(node, mode);
    }

    /// Cancels the step crash armed on `node`, if it has not happened; returns whether one was
    /// armed.
    pub fn disarm_step_crash(&mut self, node: NodeId) -> bool {
        self.armed.remove(&node).is_some()
    }

    /// The mid-step crashes that happened so far, in order.
    pub fn step_crashes(&self) -> &[StepCrashRecord] {
        &self.step_crashes
    }

    /// How many writes storage faults (mid-step crashes, lying disks) have lost so far.
    pub fn lost_writes(&self) -> usize {
        self.lost_writes
    }

    /// Crashes `node` (if it is up) and loses everything its acceptors stored, as a deleted
    /// data directory does. Restarted, its logs recover their state from their peers before
    /// they vote ([`crate::log::recovery`]).
    pub fn wipe(&mut self, node: NodeId) {
        if self.sim.is_up(node) {
            self.crash(node);
        }
        self.armed.remove(&node);
        for s in node_storages(&self.storages, node) {
            s.wipe();
        }
        self.wiped.insert(node);
    }

    /// Whether `node` lost its state ([`GroupsSim::wipe`]) and has not recovered it yet: it is
    /// down, or some log of it does not vote yet.
    pub fn is_wiped(&self, node: NodeId) -> bool {
        self.wiped.contains(&node)
            && self
                .sim
                .actor(node)
                .is_none_or(|n| !self.sim.is_up(node) || !n.recovering().is_empty())
    }

    pub fn restart(&mut self, node: NodeId) {
        if self.sim.is_up(node) {
            return;
        }
        let inc = self.sim.incarnation(node) + 1;
        self.clock.begin_step();
        if node_storages(&self.storages, node).all(|s| !s.is_empty()) {
            self.wiped.remove(&node);
        }
        let fresh = make_node(
            &self.cfg,
            &self.storages,
            &self.wiped,
            self.lost_state,
            node,
            inc,
        );
        self.started.insert((node, inc), self.sim.now_us());
        self.sim.restart(node, |_| fresh);
    }

    fn collect(&mut self, node: NodeId) {
        let inc = self.sim.incarnation(node);
        let (mut d, mut r) = (
            std::mem::take(&mut self.deliveries),
            std::mem::take(&mut self.rdeliveries),
        );
        self.sim.with(node, |n| {
            n.take_delivered(&mut d);
            n.take_rdelivered(&mut r);
        });
        for (_, del) in &d {
            let f = self.delivered_floor.entry(del.log).or_insert(0);
            *f = (*f).max(del.index + 1);
        }
        for (sub, del) in d.drain(..) {
            let sid = StreamId {
                node,
                incarnation: inc,
                subscription: sub,
            };
            self.streams.entry(sid).or_default().push(del.msg.id);
            self.origins
                .entry(sid)
                .or_default()
                .push((del.log, del.index));
        }
        for del in r.drain(..) {
            self.rstreams.entry((node, inc)).or_default().push(del.id);
        }
        let mut done = Vec::new();
        self.sim.with(node, |n| n.take_read_indexes(&mut done));
        let now = self.sim.now_us();
        for ri in done {
            if let Some(&i) = self.read_at.get(&(node, inc, ri.seq)) {
                self.reads[i].positions = Some(ri.positions);
                self.reads[i].done_at_us = Some(now);
            }
        }
        self.deliveries = d;
        self.rdeliveries = r;
    }

    /// Runs until virtual time `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        let mut touched = Vec::new();
        while self.sim.next_at().is_some_and(|t| t <= until_us) {
            if let Some(n) = self.sim_step() {
                touched.push(n);
                if touched.len() >= 64 {
                    self.collect_touched(&mut touched);
                }
            }
        }
        self.collect_touched(&mut touched);
        self.sim.run_until(until_us, |_, _| {});
    }

    /// Processes one event and records what it delivered; returns the node it touched.
    pub fn step(&mut self) -> Option<NodeId> {
        let n = self.sim_step()?;
        self.collect(n);
        Some(n)
    }

    /// One event of the simulation as a step of the storage clock, with the armed mid-step
    /// crashes.
    fn sim_step(&mut self) -> Option<NodeId> {
        self.clock.begin_step();
        if self.armed.is_empty() {
            return self.sim.step();
        }
        let now = self.sim.next_at()?;
        let (armed, storages, writers) = (&mut self.armed, &self.storages, &self.writers);
        let mut fired = None;
        let touched = self.sim.step_with(&mut |node| {
            let Some(&mode) = armed.get(&node) else {
                return false;
            };
            let writes = step_writes(storages, node);
            if writes.is_empty() && writers.contains(&node) {
                return false;
            }
            armed.remove(&node);
            fired = Some((node, mode, writes));
            // A lying disk lets the step's outputs out.
            mode == StepCrash::MidStep
        });
        let Some((node, mode, writes)) = fired else {
            return touched;
        };
        let step_lost = match mode {
            StepCrash::MidStep => {
                // The crash hits during write `cut` (torn, cut off at restart) or, when `cut`
                // is past the last one, after every write but before anything is sent.
                let cut = self.fault_rng.random_range(0..=writes.len());
                let lost = writes.len() - cut;
                if let Some(&from) = writes.get(cut) {
                    roll_back(&self.storages, node, from);
                }
                lost
            }
            StepCrash::LyingDisk => {
                // The step's outputs got out; then the disk turns out never to have synced.
                self.collect(node);
                if let Some(&from) = writes.first() {
                    roll_back(&self.storages, node, from);
                }
                self.sim.crash(node);
                writes.len()
            }
        };
        self.lost_writes += step_lost;
        let lost = step_lost + self.lose_unsynced(node);
        self.step_crashes.push(StepCrashRecord {
            at_us: now,
            node,
            mode,
            writes: writes.len(),
            lost,
        });
        touched
    }

    fn collect_touched(&mut self, touched: &mut Vec<NodeId>) {
        touched.sort();
        touched.dedup();
        for n in touched.drain(..) {
            self.collect(n);
        }
    }

    /// Runs until every multicast and reliable multicast has reached every live subscriber
    /// and no sender has anything in flight, or until `max_us` more virtual time has passed.
    /// Returns whether it got quiet.
    pub fn run_until_quiet(&mut self, max_us: u64) -> bool {
        let deadline = self.sim.now_us() + max_us;
        loop {
            if self.is_quiet() {
                return true;
            }
            if self.sim.now_us() >= deadline {
                return false;
            }
            let next = (self.sim.now_us() + 10_000).min(deadline);
            self.run_until(next);
        }
    }

    fn is_quiet(&self) -> bool {
        let up = self.sim.up_nodes();
        // A node still recovering an acceptor's state is not done either.
        let busy = up.iter().any(|&n| {
            self.sim.actor(n).is_some_and(|a| {
                a.multicasts_in_flight() > 0
                    || a.rmcasts_in_flight() > 0
                    || a.read_indexes_pending() > 0
                    || !a.read_targets_open().is_empty()
                    || !a.recovering().is_empty()
            })
        });
        if busy {
            return false;
        }
        let (sent, streams) = self.history();
        let (rsent, rstreams) = self.reliable_history();
        // Everything validity or agreement obliges a correct stream to deliver has arrived.
        let complete = |sent: &[Sent], streams: &[Stream], agreement: checker::Agreement| {
            let delivered: std::collections::HashSet<&MsgId> = streams
                .iter()
                .filter(|s| match agreement {
                    checker::Agreement::Uniform => true,
                    checker::Agreement::Correct => s.correct,
                    checker::Agreement::None => false,
                })
                .flat_map(|s| s.delivered.iter())
                .collect();
            streams.iter().filter(|s| s.correct).all(|s| {
                let got: std::collections::HashSet<&MsgId> = s.delivered.iter().collect();
                sent.iter()
                    .filter(|m| {
                        (m.sender_correct || delivered.contains(&m.id))
                            && m.sent_at >= s.started_at
                            && m.dests.intersects(&s.groups)
                    })
                    .all(|m| got.contains(&m.id))
            })
        };
        complete(&sent, &streams, checker::Agreement::Uniform)
            && complete(&rsent, &rstreams, self.reliable_agreement())
    }

    fn correct(&self, node: NodeId, incarnation: u32) -> bool {
        self.sim.is_up(node) && self.sim.incarnation(node) == incarnation
    }

    /// What was multicast and every delivery stream, ready for [`checker::check_atomic`].
    pub fn history(&self) -> (Vec<Sent>, Vec<Stream>) {
        let sent = self
            .sent
            .iter()
            .map(|r| Sent {
                id: r.id,
                dests: r.dests.clone(),
                sender_correct: self.correct(r.id.sender, r.incarnation),
                sent_at: r.at_us,
            })
            .collect();
        let mut streams = Vec::new();
        for n in &self.cfg.nodes {
            let last = self.sim.incarnation(n.id);
            for inc in 0..=last {
                for (sub, groups) in n.subscriptions.iter().enumerate() {
                    let id = StreamId {
                        node: n.id,
                        incarnation: inc,
                        subscription: sub,
                    };
                    streams.push(Stream {
                        id,
                        groups: groups.clone(),
                        correct: self.correct(n.id, inc),
                        started_at: 0,
                        delivered: self.streams.get(&id).cloned().unwrap_or_default(),
                    });
                }
            }
        }
        (sent, streams)
    }

    /// Reliable multicasts and each node incarnation's reliable deliveries.
    pub fn reliable_history(&self) -> (Vec<Sent>, Vec<Stream>) {
        let sent = self
            .rsent
            .iter()
            .map(|r| Sent {
                id: r.id,
                dests: r.dests.clone(),
                sender_correct: self.correct(r.id.sender, r.incarnation),
                sent_at: r.at_us,
            })
            .collect();
        let mut streams = Vec::new();
        for n in &self.cfg.nodes {
            let groups = n
                .subscriptions
                .iter()
                .fold(GroupSet::new(), |acc, s| acc.union(s));
            if groups.is_empty() {
                continue;
            }
            for inc in 0..=self.sim.incarnation(n.id) {
                streams.push(Stream {
                    id: StreamId {
                        node: n.id,
                        incarnation: inc,
                        subscription: 0,
                    },
                    groups: groups.clone(),
                    correct: self.correct(n.id, inc),
                    started_at: self.started.get(&(n.id, inc)).copied().unwrap_or(0),
                    delivered: self.rstreams.get(&(n.id, inc)).cloned().unwrap_or_default(),
                });
            }
        }
        (sent, streams)
    }

    /// Checks atomic multicast on everything recorded so far.
    pub fn check(&self) -> Result<(), Vec<Violation>> {
        let (sent, streams) = self.history();
        checker::check_atomic(&sent, &streams)
    }

    /// Checks reliable multicast on everything recorded so far: agreement among correct
    /// members when receivers relay (`rm_relay`), validity only otherwise.
    pub fn check_reliable(&self) -> Result<(), Vec<Violation>> {
        let (sent, streams) = self.reliable_history();
        checker::check_reliable(&sent, &streams, self.reliable_agreement())
    }

    fn reliable_agreement(&self) -> checker::Agreement {
        if self.cfg.tuning.rm_relay {
            checker::Agreement::Correct
        } else {
            checker::Agreement::None
        }
    }

    /// Message ids delivered by the current incarnation of `node` (first subscription).
    pub fn delivered(&self, node: NodeId) -> Vec<MsgId> {
        let id = StreamId {
            node,
            incarnation: self.sim.incarnation(node),
            subscription: 0,
        };
        self.streams.get(&id).cloned().unwrap_or_default()
    }

    /// The deliveries of a stream with their (log, entry index), for debugging.
    pub fn stream_detail(&self, id: StreamId) -> Vec<(MsgId, LogId, u64)> {
        let ids = self.streams.get(&id).cloned().unwrap_or_default();
        let origins = self.origins.get(&id).cloned().unwrap_or_default();
        ids.into_iter()
            .zip(origins)
            .map(|(m, (l, i))| (m, l, i))
            .collect()
    }

    /// Acceptors whose stored log length differs from what their consensus instance believes
    /// (debugging aid): `(node, log, stored end, accepted index)`.
    pub fn storage_mismatches(&self) -> Vec<(NodeId, LogId, u64, u64)> {
        let mut v = Vec::new();
        for (&(n, l), st) in &self.storages {
            let Some((_, _, accepted)) = self.sim.actor(n).and_then(|a| a.log_status(l)) else {
                continue;
            };
            let end = st.with(|m| m.end());
            if end != accepted {
                v.push((n, l, end, accepted));
            }
        }
        v
    }

    /// The state of every live node, for debugging.
    pub fn describe(&self) -> String {
        self.sim
            .up_nodes()
            .into_iter()
            .filter_map(|n| self.sim.actor(n).map(GroupsNode::describe))
            .collect()
    }

    /// Number of multicasts recorded.
    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }
}

/// The numbers of the writes `node` made in the current step, over all its storages, oldest
/// first.
fn step_writes(storages: &BTreeMap<(NodeId, LogId), SimStorage>, node: NodeId) -> Vec<u64> {
    let mut v: Vec<u64> = node_storages(storages, node)
        .flat_map(SimStorage::step_writes)
        .collect();
    v.sort_unstable();
    v
}

/// Takes back the current step's writes of `node` numbered `from` or later.
fn roll_back(storages: &BTreeMap<(NodeId, LogId), SimStorage>, node: NodeId, from: u64) {
    for s in node_storages(storages, node) {
        s.roll_back_from(from);
    }
}

/// The storages of `node`'s acceptors.
fn node_storages(
    storages: &BTreeMap<(NodeId, LogId), SimStorage>,
    node: NodeId,
) -> impl Iterator<Item = &SimStorage> {
    storages
        .range((node, LogId(0))..=(node, LogId(u32::MAX)))
        .map(|(_, s)| s)
}

/// Builds incarnation `incarnation` of `id`, its acceptors over the storage that outlives it. A
/// log of a node in `wiped` with nothing stored recovers first; its recovered state is written
/// to the storage in one write (kept or lost whole by a crash) before it votes.
fn make_node(
    cfg: &Arc<ClusterConfig>,
    storages: &BTreeMap<(NodeId, LogId), SimStorage>,
    wiped: &BTreeSet<NodeId>,
    policy: Policy,
    id: NodeId,
    incarnation: u32,
) -> GroupsNode {
    let opts = NodeOptions {
        epoch: incarnation,
        merge_locally: true,
        incarnation: u64::from(incarnation),
        recover: false,
    };
    let inc = opts.incarnation;
    GroupsNode::new(cfg.clone(), id, opts, |lc| {
        let storage = storages[&(id, lc.id)].clone();
        if !wiped.contains(&id) || !storage.is_empty() {
            return crate::node::log_over(cfg, lc, id, inc, storage);
        }
        let (c, l) = (cfg.clone(), lc.clone());
        let build = Box::new(move |image| {
            let mut storage = storage;
            storage
                .write_atomically(crate::log::storage::image_ops(image))
                .expect("the simulated storage never fails");
            crate::node::omni_voter(&c, &l, id, storage)
        });
        crate::node::recovering_log(
            cfg,
            lc,
            id,
            inc,
            policy,
            crate::log::recovery::Completion::Build(build),
        )
    })
}
