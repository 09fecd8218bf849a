//! A partition or oracle replica on a `groups` node: the host of the sans-IO cores.
//!
//! The node merges the replica's one subscription (its partition's group, or the oracle's)
//! and hands over deliveries, reliable-multicast exchanges and point-to-point messages; the
//! host feeds them to the core and performs the core's outputs. One thread runs a replica
//! (execution within a partition is sequential here; the combined mode will host several
//! workers per partition the same way).
//!
//! With checkpoints ([`ScaleOutReplica::with_checkpoints`]) the node hands out decided
//! entries instead (`merge_locally = false`) and the replica merges them itself, so that it
//! can record its merger's position at a checkpoint request, restore it, and move its feeds
//! after a state transfer (see [`super::checkpoint`]).

use super::checkpoint::{self as ckpt, ScaleOutCheckpoint};
use super::common::Output;
use super::dynastar::oracle::DynaOracle;
use super::dynastar::partition::DynaPartition;
use super::oracle::{OracleServer, OracleStats};
use super::server::{PartitionServer, ServerStats};
use super::service::{PartitionId, PartitionedService};
use super::ServerOptions;
use crate::checkpoint::{
    self, CheckpointError, CheckpointPolicy, Recovery, Store, Transfer, Trigger,
};
use crate::psmr::replica::SharedCheckpoints;
use crate::sim::CheckpointStats;
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};
use groups::merge::{Delivery, Merger, MergerState};
use groups::node::{GroupsNode, LogEntries};
use groups::rmcast::RDelivery;
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a scale-out replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Partition(PartitionId),
    Oracle,
}

/// The core a replica runs.
pub enum Core<S: PartitionedService> {
    Partition(Box<PartitionServer<S>>),
    Oracle(Box<OracleServer<S>>),
    DynaPartition(Box<DynaPartition<S>>),
    DynaOracle(Box<DynaOracle<S>>),
}

/// A partition replica's counters, readable from other threads (see
/// [`ScaleOutReplica::share_stats`]).
pub type SharedServerStats = Arc<parking_lot::Mutex<ServerStats>>;

/// An oracle replica's counters, readable from other threads (see
/// [`ScaleOutReplica::share_oracle_stats`]).
pub type SharedOracleStats = Arc<parking_lot::Mutex<OracleStats>>;

/// What a replica needs to build (or rebuild) its core.
struct CoreArgs<S: PartitionedService> {
    service: Arc<S>,
    cfg: Arc<ClusterConfig>,
    node: NodeId,
    role: Role,
    partitions: u32,
    opts: ServerOptions,
}

impl<S: PartitionedService> CoreArgs<S> {
    fn fresh(&self) -> Core<S> {
        let a = self;
        let dynastar = a.opts.scheme == super::Scheme::Dynastar;
        match a.role {
            Role::Partition(p) if dynastar => Core::DynaPartition(Box::new(DynaPartition::new(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                p,
                a.partitions,
                a.opts.clone(),
            ))),
            Role::Oracle if dynastar => Core::DynaOracle(Box::new(DynaOracle::new(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                a.partitions,
                a.opts.clone(),
            ))),
            Role::Partition(p) => Core::Partition(Box::new(PartitionServer::new(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                p,
                a.partitions,
                a.opts.clone(),
            ))),
            Role::Oracle => Core::Oracle(Box::new(OracleServer::new(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                a.partitions,
                a.opts.clone(),
            ))),
        }
    }

    fn restore(&self, bytes: &[u8]) -> Result<Core<S>, CheckpointError> {
        let a = self;
        let dynastar = a.opts.scheme == super::Scheme::Dynastar;
        Ok(match a.role {
            Role::Partition(p) if dynastar => {
                Core::DynaPartition(Box::new(DynaPartition::restore(
                    a.service.clone(),
                    a.cfg.clone(),
                    a.node,
                    p,
                    a.partitions,
                    a.opts.clone(),
                    bytes,
                )?))
            }
            Role::Oracle if dynastar => Core::DynaOracle(Box::new(DynaOracle::restore(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                a.partitions,
                a.opts.clone(),
                bytes,
            )?)),
            Role::Partition(p) => Core::Partition(Box::new(PartitionServer::restore(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                p,
                a.partitions,
                a.opts.clone(),
                bytes,
            )?)),
            Role::Oracle => Core::Oracle(Box::new(OracleServer::restore(
                a.service.clone(),
                a.cfg.clone(),
                a.node,
                a.partitions,
                a.opts.clone(),
                bytes,
            )?)),
        })
    }

    /// The replica's group.
    fn group(&self) -> u32 {
        match self.role {
            Role::Partition(p) => p,
            Role::Oracle => self.partitions,
        }
    }
}

/// A replica's own merge and checkpoint machinery (see [`super::checkpoint`]).
struct Checkpointing {
    sub: GroupSet,
    logs: Vec<LogId>,
    merger: Merger,
    /// Every group: where checkpoint requests go.
    all: GroupSet,
    groups: usize,
    started: bool,
    /// The latest round whose request this replica's stream delivered.
    stream_round: u64,
    /// Rounds marked in the stream and not yet recorded by the core, with the merger's
    /// position right after each request.
    marks: BTreeMap<u64, MergerState>,
    trigger: Option<Trigger>,
    store: Store,
    recovery: Option<Recovery>,
    resend_ticks: u64,
    stats: CheckpointStats,
    entries: Vec<LogEntries>,
    merged: Vec<Delivery>,
    snaps: Vec<(u64, u64, Vec<u8>)>,
    app_out: Vec<(NodeId, Bytes)>,
    live: SharedCheckpoints,
}

/// A scale-out replica.
pub struct ScaleOutReplica<S: PartitionedService> {
    pub core: Core<S>,
    args: CoreArgs<S>,
    ckpt: Option<Box<Checkpointing>>,
    deliveries: Vec<(usize, Delivery)>,
    exchanges: Vec<RDelivery>,
    inbox: Vec<(NodeId, Bytes)>,
    outputs: Vec<Output>,
    shared: Option<(SharedServerStats, u64)>,
    shared_oracle: Option<(SharedOracleStats, u64)>,
}

impl<S: PartitionedService> ScaleOutReplica<S> {
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        role: Role,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let args = CoreArgs {
            service,
            cfg,
            node,
            role,
            partitions,
            opts,
        };
        ScaleOutReplica {
            core: args.fresh(),
            args,
            ckpt: None,
            deliveries: Vec::new(),
            exchanges: Vec::new(),
            inbox: Vec::new(),
            outputs: Vec::new(),
            shared: None,
            shared_oracle: None,
        }
    }

    /// Runs the replica's own merge and takes part in checkpoints: it records its part of
    /// every checkpoint round any replica asks for, serves its checkpoints to peers, reports
    /// them to the log acceptors (which may then trim below them), and recovers by state
    /// transfer when a log was trimmed past it. With a `policy` it also asks for checkpoints.
    /// The replica's node must hand out entries (`NodeOptions::merge_locally = false`).
    pub fn with_checkpoints(mut self, policy: Option<CheckpointPolicy>) -> Self {
        let cfg = self.args.cfg.clone();
        let sub = cfg
            .node(self.args.node)
            .and_then(|n| n.subscriptions.first().cloned())
            .unwrap_or_else(|| GroupSet::singleton(GroupId(self.args.group())));
        let logs = cfg.logs_for(&sub);
        self.ckpt = Some(Box::new(Checkpointing {
            merger: Merger::new(&logs, sub.clone(), cfg.tuning.merge_m),
            sub,
            logs,
            all: GroupSet::all(cfg.groups),
            groups: cfg.groups as usize,
            started: false,
            stream_round: 0,
            marks: BTreeMap::new(),
            trigger: policy.map(Trigger::new),
            store: Store::default(),
            recovery: None,
            resend_ticks: policy
                .map_or(CheckpointPolicy::default().resend_ticks, |p| p.resend_ticks),
            stats: CheckpointStats::default(),
            entries: Vec::new(),
            merged: Vec::new(),
            snaps: Vec::new(),
            app_out: Vec::new(),
            live: SharedCheckpoints::default(),
        }));
        self
    }

    /// What checkpointing did at this replica (this incarnation); default if it does not
    /// checkpoint.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.ckpt
            .as_ref()
            .map(|c| c.stats.clone())
            .unwrap_or_default()
    }

    /// The replica's checkpoint counters, readable from other threads (see
    /// [`crate::metrics::render_checkpoints`]; the timings stay 0); `None` if it does not
    /// checkpoint.
    pub fn share_checkpoints(&self) -> Option<SharedCheckpoints> {
        self.ckpt.as_ref().map(|c| c.live.clone())
    }

    /// Whether a state transfer is in progress.
    pub fn recovering(&self) -> bool {
        self.ckpt.as_ref().is_some_and(|c| c.recovery.is_some())
    }

    /// Publishes a partition replica's counters to a shared copy, refreshed once per tick, so
    /// a benchmark can sample them (moves over time) while the replica runs.
    pub fn share_stats(&mut self) -> SharedServerStats {
        let s = SharedServerStats::default();
        self.shared = Some((s.clone(), u64::MAX));
        s
    }

    /// Publishes an oracle replica's counters to a shared copy, refreshed once per tick (as
    /// [`Self::share_stats`] does for a partition replica).
    pub fn share_oracle_stats(&mut self) -> SharedOracleStats {
        let s = SharedOracleStats::default();
        self.shared_oracle = Some((s.clone(), u64::MAX));
        s
    }

    /// Takes what `node` delivered, runs the core, and performs its outputs.
    pub fn step(&mut self, node: &mut GroupsNode) {
        if self.ckpt.is_some() {
            self.merge(node);
        } else {
            node.take_delivered(&mut self.deliveries);
        }
        node.take_rdelivered(&mut self.exchanges);
        node.take_app(&mut self.inbox);
        let mut transfers = Vec::new();
        if self.ckpt.is_some() {
            self.inbox.retain(|(from, m)| match ckpt::untag(m) {
                Some(t) => {
                    transfers.push((*from, t));
                    false
                }
                None => true,
            });
        }
        match &mut self.core {
            Core::Partition(s) => {
                for (_, d) in self.deliveries.drain(..) {
                    s.deliver(d.msg.id, &d.msg.payload);
                }
                for r in self.exchanges.drain(..) {
                    s.exchange(&r.payload);
                }
                for (_, m) in self.inbox.drain(..) {
                    s.peer(&m);
                }
                s.tick(node.now());
                s.run();
                s.take_outputs(&mut self.outputs);
                if let Some(c) = self.ckpt.as_mut() {
                    s.take_snapshots(&mut c.snaps);
                }
            }
            Core::Oracle(o) => {
                for (_, d) in self.deliveries.drain(..) {
                    o.deliver(d.msg.id, &d.msg.payload);
                }
                self.exchanges.clear();
                for (_, m) in self.inbox.drain(..) {
                    o.peer(&m);
                }
                o.take_outputs(&mut self.outputs);
            }
            Core::DynaPartition(s) => {
                for (_, d) in self.deliveries.drain(..) {
                    s.deliver(d.msg.id, &d.msg.payload);
                }
                for r in self.exchanges.drain(..) {
                    s.exchange(&r.payload);
                }
                for (_, m) in self.inbox.drain(..) {
                    s.peer(&m);
                }
                s.tick(node.now());
                s.run();
                s.take_outputs(&mut self.outputs);
                if let Some(c) = self.ckpt.as_mut() {
                    s.take_snapshots(&mut c.snaps);
                }
            }
            Core::DynaOracle(o) => {
                for (_, d) in self.deliveries.drain(..) {
                    o.deliver(d.msg.id, &d.msg.payload);
                }
                self.exchanges.clear();
                for (_, m) in self.inbox.drain(..) {
                    o.peer(&m);
                }
                o.tick(node.now());
                o.take_outputs(&mut self.outputs);
            }
        }
        for out in self.outputs.drain(..) {
            match out {
                Output::Rmcast(dests, payload) => {
                    if let Err(e) = node.rmcast(dests, payload) {
                        // Receivers pull what they miss.
                        tracing::warn!(error = %e, "exchange not sent");
                    }
                }
                Output::Send(to, payload) => node.send_app(to, payload),
                Output::Multicast(dests, payload) => {
                    if let Err(e) = node.multicast(dests, payload) {
                        // Hints are advisory; a plan is multicast again by another replica.
                        tracing::warn!(error = %e, "multicast not sent");
                    }
                }
            }
        }
        if self.ckpt.is_some() {
            self.pump_checkpoints(node, transfers);
        }
        if let Some((shared, at)) = &mut self.shared {
            let stats = match &self.core {
                Core::Partition(s) => Some(&s.stats),
                Core::DynaPartition(s) => Some(&s.stats),
                _ => None,
            };
            if let Some(stats) = stats {
                if *at != node.now() {
                    *at = node.now();
                    *shared.lock() = stats.clone();
                }
            }
        }
        if let (Some((shared, at)), Core::Oracle(o)) = (&mut self.shared_oracle, &self.core) {
            if *at != node.now() {
                *at = node.now();
                *shared.lock() = o.stats.clone();
            }
        }
    }

    /// Feeds the decided entries to the replica's merge and its deliveries to the core,
    /// marking checkpoint requests in the stream.
    fn merge(&mut self, node: &mut GroupsNode) {
        let Some(c) = self.ckpt.as_mut() else {
            return;
        };
        if !c.started {
            c.started = true;
            if c.trigger.is_some() {
                // A replica that checkpoints says so from the start (its initial state is a
                // checkpoint at position 0), so acceptors hold it to the checkpoint rule.
                let start: Vec<(LogId, u64)> = c.logs.iter().map(|l| (*l, 0)).collect();
                node.set_checkpointed(&start);
            }
        }
        node.take_entries(&mut c.entries);
        for e in c.entries.drain(..) {
            if let Err(gap) = c.merger.push(e.log, e.start, &e.entries) {
                // Cannot happen: feeds hand out contiguous entries, restarted with the merger.
                tracing::error!(replica = %node.id(), error = %gap, "entries dropped");
            }
        }
        loop {
            let groups = c.groups;
            let stopped = c
                .merger
                .poll_until(&mut c.merged, |m| checkpoint::is_request(m, groups));
            for d in c.merged.drain(..) {
                let round = checkpoint::is_request(&d.msg, groups)
                    .then(|| crate::wire::decode::<crate::wire::Request>(&d.msg.payload))
                    .and_then(Result::ok)
                    .map(|r| r.seq);
                match (round, &mut self.core) {
                    (Some(round), core) => {
                        // The request is the last delivery of the batch: the merger's state
                        // is the state right after it.
                        if round <= c.stream_round {
                            continue;
                        }
                        c.stream_round = round;
                        c.marks.insert(round, c.merger.state());
                        match core {
                            Core::Partition(s) => s.mark_checkpoint(round),
                            Core::Oracle(o) => c.snaps.push((round, o.state_hash(), o.snapshot())),
                            Core::DynaPartition(s) => s.mark_checkpoint(round),
                            Core::DynaOracle(o) => {
                                c.snaps.push((round, o.state_hash(), o.snapshot()))
                            }
                        }
                    }
                    (None, Core::Partition(s)) => s.deliver(d.msg.id, &d.msg.payload),
                    (None, Core::Oracle(o)) => o.deliver(d.msg.id, &d.msg.payload),
                    (None, Core::DynaPartition(s)) => s.deliver(d.msg.id, &d.msg.payload),
                    (None, Core::DynaOracle(o)) => o.deliver(d.msg.id, &d.msg.payload),
                }
            }
            if !stopped {
                break;
            }
        }
        if let Some(need) = c.merger.blocked_on() {
            node.request_skip(need);
        }
    }

    /// Assembles recorded snapshots into checkpoints, asks for checkpoints when due, answers
    /// peers' transfer requests, and recovers by state transfer when a log was trimmed past
    /// this replica.
    fn pump_checkpoints(&mut self, node: &mut GroupsNode, transfers: Vec<(NodeId, Transfer)>) {
        let now = node.now();
        let handled = self.handled();
        let group = self.args.group();
        let Some(c) = self.ckpt.as_mut() else {
            return;
        };
        for (round, hash, core) in std::mem::take(&mut c.snaps) {
            let Some(merger) = c.marks.remove(&round) else {
                continue;
            };
            c.marks = c.marks.split_off(&round);
            let ck = ScaleOutCheckpoint {
                round,
                group,
                merger,
                hash,
                core,
            };
            let bytes = ck.encode();
            Self::completed(c, node, &ck, bytes, handled);
        }
        let latest = c.store.latest().map_or(0, |(r, _)| r);
        let round = c
            .trigger
            .as_mut()
            .and_then(|t| t.poll(latest.max(c.stream_round), handled, now));
        if let (Some(round), None) = (round, &c.recovery) {
            if let Err(e) = node.multicast(c.all.clone(), checkpoint::request_payload(round)) {
                tracing::debug!(error = %e, "checkpoint request not sent");
            }
        }
        let mut events = Vec::new();
        node.take_events(&mut events);
        if !events.is_empty() && c.recovery.is_none() {
            tracing::warn!(replica = %node.id(), ?events, "log trimmed past this replica: recovering by state transfer");
            let peers = checkpoint::peers_of(node.config(), node.id());
            c.recovery = Some(Recovery::start(peers, c.resend_ticks, now, &mut c.app_out));
        }
        let mut installs = Vec::new();
        for (from, msg) in transfers {
            match msg {
                Transfer::Get { round, offset } => {
                    let answer = c.store.answer(round, offset);
                    c.app_out.push((from, answer.encode()));
                    c.live.lock().chunks_sent = c.store.chunks_sent;
                }
                other => {
                    let Some(r) = c.recovery.as_mut() else {
                        continue;
                    };
                    if let Some(whole) = r.on_message(from, other, now, &mut c.app_out) {
                        installs.push(whole);
                    }
                }
            }
        }
        for whole in installs {
            self.install(node, whole);
        }
        let Some(c) = self.ckpt.as_mut() else {
            return;
        };
        if let Some(r) = c.recovery.as_mut() {
            r.tick(now, &mut c.app_out);
        }
        for (to, bytes) in c.app_out.drain(..) {
            node.send_app(to, ckpt::tag(&bytes));
        }
    }

    /// A checkpoint is complete here (taken, or installed): keep it and report its
    /// positions.
    fn completed(
        c: &mut Checkpointing,
        node: &mut GroupsNode,
        ck: &ScaleOutCheckpoint,
        bytes: Bytes,
        handled: u64,
    ) {
        let positions = ck.positions();
        node.set_checkpointed(&positions);
        {
            let mut live = c.live.lock();
            live.taken += 1;
            live.round = ck.round;
            live.bytes = bytes.len() as u64;
            live.positions = positions;
            live.state_hash = Some((ck.round, ck.hash));
        }
        c.stats.taken += 1;
        c.stats.round = ck.round;
        c.stats.bytes = bytes.len() as u64;
        c.store.set(ck.round, bytes);
        if let Some(t) = c.trigger.as_mut() {
            t.taken(handled, node.now());
        }
    }

    /// Installs a checkpoint received from a peer: the core and the merger are rebuilt from
    /// it, and the feeds restart at its positions.
    fn install(&mut self, node: &mut GroupsNode, bytes: Bytes) {
        let group = self.args.group();
        let Some(c) = self.ckpt.as_mut() else {
            return;
        };
        let cfg = self.args.cfg.clone();
        let restored = ScaleOutCheckpoint::decode(&bytes).and_then(|ck| {
            if ck.group != group {
                return Err(CheckpointError::Mismatch(format!(
                    "a checkpoint of group {}, this replica is in group {group}",
                    ck.group
                )));
            }
            let merger = Merger::restore(&c.logs, c.sub.clone(), cfg.tuning.merge_m, &ck.merger)
                .map_err(|e| CheckpointError::Mismatch(e.to_string()))?;
            let core = self.args.restore(&ck.core)?;
            let hash = core_hash(&core);
            if hash != ck.hash {
                return Err(CheckpointError::Mismatch(
                    "the restored state's hash is not the checkpoint's".into(),
                ));
            }
            Ok((ck, merger, core))
        });
        let (ck, merger, core) = match restored {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(replica = %node.id(), error = %e, "checkpoint from a peer refused");
                c.stats.refused += 1;
                c.live.lock().refused += 1;
                if let Some(r) = c.recovery.as_mut() {
                    r.next_peer(node.now(), &mut c.app_out);
                }
                return;
            }
        };
        self.core = core;
        c.merger = merger;
        c.stream_round = ck.round;
        c.marks.clear();
        c.snaps.clear();
        c.entries.clear();
        let mut stale = Vec::new();
        node.take_entries(&mut stale);
        c.recovery = None;
        c.stats.installed += 1;
        c.live.lock().installed += 1;
        node.restart_feeds(&ck.positions());
        let handled = match &self.core {
            Core::Partition(s) => s.stats.handled,
            Core::Oracle(o) => o.stats.handled,
            Core::DynaPartition(s) => s.stats.handled,
            Core::DynaOracle(o) => o.stats.handled,
        };
        Self::completed(c, node, &ck, bytes, handled);
        tracing::info!(replica = %node.id(), round = ck.round, bytes = c.stats.bytes, "checkpoint installed");
    }

    pub fn partition(&self) -> Option<&PartitionServer<S>> {
        match &self.core {
            Core::Partition(s) => Some(s),
            _ => None,
        }
    }

    pub fn oracle(&self) -> Option<&OracleServer<S>> {
        match &self.core {
            Core::Oracle(o) => Some(o),
            _ => None,
        }
    }

    pub fn dyna_partition(&self) -> Option<&DynaPartition<S>> {
        match &self.core {
            Core::DynaPartition(s) => Some(s),
            _ => None,
        }
    }

    pub fn dyna_oracle(&self) -> Option<&DynaOracle<S>> {
        match &self.core {
            Core::DynaOracle(o) => Some(o),
            _ => None,
        }
    }

    /// A partition replica's counters (S-SMR, DS-SMR or DynaStar).
    pub fn server_stats(&self) -> Option<&ServerStats> {
        match &self.core {
            Core::Partition(s) => Some(&s.stats),
            Core::DynaPartition(s) => Some(&s.stats),
            _ => None,
        }
    }

    /// Delivered commands waiting.
    pub fn backlog(&self) -> usize {
        match &self.core {
            Core::Partition(s) => s.backlog(),
            Core::DynaPartition(s) => s.backlog(),
            _ => 0,
        }
    }

    /// Delivered multicasts handled.
    pub fn handled(&self) -> u64 {
        match &self.core {
            Core::Partition(s) => s.stats.handled,
            Core::Oracle(o) => o.stats.handled,
            Core::DynaPartition(s) => s.stats.handled,
            Core::DynaOracle(o) => o.stats.handled,
        }
    }

    pub fn state_hash(&self) -> u64 {
        core_hash(&self.core)
    }
}

fn core_hash<S: PartitionedService>(core: &Core<S>) -> u64 {
    match core {
        Core::Partition(s) => s.state_hash(),
        Core::Oracle(o) => o.state_hash(),
        Core::DynaPartition(s) => s.state_hash(),
        Core::DynaOracle(o) => o.state_hash(),
    }
}

impl<S: PartitionedService> App for ScaleOutReplica<S> {
    fn attach(&mut self, _node: &mut GroupsNode, _waker: Waker) {}

    fn step(&mut self, node: &mut GroupsNode) {
        ScaleOutReplica::step(self, node)
    }
}
