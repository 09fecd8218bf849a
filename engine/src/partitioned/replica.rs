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
//! after a state transfer (see [`super::replica`]).

//!
//! **Checkpoints and state transfer** (partition and oracle replicas).
//!
//! The same scheme as P-SMR replicas' ([`crate::checkpoint`]), with one merge per replica:
//!
//! - **Where a checkpoint lies.** A replica that checkpoints runs its own merge of its group's
//!   logs (its node hands out decided entries, `merge_locally = false`). A checkpoint request
//!   ([`crate::checkpoint::request`]) is multicast to *every* group (the layout's
//!   global log covers them all), so it has one place in every partition's and the oracle's
//!   stream, and the streams being projections of one total order, a command before it at one
//!   partition is before it at every partition that delivers both. A replica takes part in a
//!   round above the last one it took (duplicates are ignored the same way everywhere).
//! - **What it holds.** The merger's position right after the request, and the core's state
//!   once everything delivered before the request was handled and nothing after it begun:
//!   a partition's objects, client table, the exchanges that already arrived for later
//!   commands, its outbox (what it sent, so it can still answer pulls), recent deliveries,
//!   counters and views ([`super::server::PartitionServer::snapshot`]); the oracle's map,
//!   digests, client table, outbox, counters and views
//!   ([`super::oracle::OracleServer::snapshot`]). Exchanges for later commands that had not
//!   arrived yet, and the ones a restored replica misses while it installs, are pulled from
//!   the sending partition's replicas as always (`pull_ticks`).
//! - **Trimming and transfer.** As for P-SMR: the replica reports the checkpoint's positions
//!   ([`groups::node::GroupsNode::set_checkpointed`]); a replica whose log was trimmed past it
//!   fetches a peer's checkpoint in chunks ([`crate::checkpoint::Recovery`],
//!   [`crate::checkpoint::Store`]), installs it and restarts its feeds at its positions.

use super::common::Output;
use super::oracle::{OracleServer, OracleStats};
use super::server::{PartitionServer, ServerStats};
use super::service::{PartitionId, PartitionedService};
use super::ServerOptions;
use crate::checkpoint::{
    self, CheckpointError, CheckpointPolicy, Recovery, Store, Transfer, Trigger,
};
use crate::psmr::replica::SharedCheckpoints;
use crate::sim::CheckpointStats;
use crate::wire::{self, AppMsg, FeedMsg};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};
use groups::merge::{Delivery, Merger, MergerState};
use groups::node::{GroupsNode, LogEntries};
use groups::rmcast::RDelivery;
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use serde::{Deserialize, Serialize};
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
        match a.role {
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
        Ok(match a.role {
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

/// A replica's own merge and checkpoint machinery (see [`super::replica`]).
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
        let mut peers = Vec::new();
        for (from, m) in self.inbox.drain(..) {
            match AppMsg::parse(&m) {
                Ok(AppMsg::Transfer(body)) => match Transfer::decode(body) {
                    Ok(t) if self.ckpt.is_some() => transfers.push((from, t)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "undecodable transfer message dropped")
                    }
                },
                Ok(AppMsg::Peer(body)) => peers.push((from, m.slice_ref(body))),
                Ok(AppMsg::ToClient { .. }) => {}
                Err(e) => tracing::debug!(%from, error = %e, "application message dropped"),
            }
        }
        match &mut self.core {
            Core::Partition(s) => {
                for (_, d) in self.deliveries.drain(..) {
                    if let Ok(FeedMsg::Command(body)) = FeedMsg::parse(&d.msg.payload) {
                        s.deliver(d.msg.id, body);
                    }
                }
                for r in self.exchanges.drain(..) {
                    s.exchange(&r.payload);
                }
                for (_, m) in peers.drain(..) {
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
                    if let Ok(FeedMsg::Command(body)) = FeedMsg::parse(&d.msg.payload) {
                        o.deliver(d.msg.id, body);
                    }
                }
                self.exchanges.clear();
                for (_, m) in peers.drain(..) {
                    o.peer(&m);
                }
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
            }
        }
        if self.ckpt.is_some() {
            self.pump_checkpoints(node, transfers);
        }
        if let (Some((shared, at)), Core::Partition(s)) = (&mut self.shared, &self.core) {
            if *at != node.now() {
                *at = node.now();
                *shared.lock() = s.stats.clone();
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
                .poll_until(&mut c.merged, |m| checkpoint::round_of(m, groups).is_some());
            for d in c.merged.drain(..) {
                let round = checkpoint::round_of(&d.msg, groups);
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
                        }
                    }
                    (None, core) => {
                        let Ok(FeedMsg::Command(body)) = FeedMsg::parse(&d.msg.payload) else {
                            continue;
                        };
                        match core {
                            Core::Partition(s) => s.deliver(d.msg.id, body),
                            Core::Oracle(o) => o.deliver(d.msg.id, body),
                        }
                    }
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
            if let Err(e) = node.multicast(c.all.clone(), checkpoint::request(round)) {
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
            node.send_app(to, bytes);
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
            let hash = match &core {
                Core::Partition(s) => s.state_hash(),
                Core::Oracle(o) => o.state_hash(),
            };
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
        };
        Self::completed(c, node, &ck, bytes, handled);
        tracing::info!(replica = %node.id(), round = ck.round, bytes = c.stats.bytes, "checkpoint installed");
    }

    pub fn partition(&self) -> Option<&PartitionServer<S>> {
        match &self.core {
            Core::Partition(s) => Some(s),
            Core::Oracle(_) => None,
        }
    }

    pub fn oracle(&self) -> Option<&OracleServer<S>> {
        match &self.core {
            Core::Oracle(o) => Some(o),
            Core::Partition(_) => None,
        }
    }

    /// Delivered commands waiting.
    pub fn backlog(&self) -> usize {
        self.partition().map_or(0, PartitionServer::backlog)
    }

    /// Delivered multicasts handled.
    pub fn handled(&self) -> u64 {
        match &self.core {
            Core::Partition(s) => s.stats.handled,
            Core::Oracle(o) => o.stats.handled,
        }
    }

    pub fn state_hash(&self) -> u64 {
        match &self.core {
            Core::Partition(s) => s.state_hash(),
            Core::Oracle(o) => o.state_hash(),
        }
    }
}

impl<S: PartitionedService> App for ScaleOutReplica<S> {
    fn attach(&mut self, _node: &mut GroupsNode, _waker: Waker) {}

    fn step(&mut self, node: &mut GroupsNode) {
        ScaleOutReplica::step(self, node)
    }
}

/// A scale-out replica's checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleOutCheckpoint {
    pub round: u64,
    /// The group whose replicas took it (a partition, or the oracle's group).
    pub group: u32,
    /// The replica's merger right after the checkpoint request.
    pub merger: MergerState,
    /// The core's state hash when it was taken (equal at every replica of the group for
    /// the same round).
    pub hash: u64,
    /// The core's snapshot.
    pub core: Vec<u8>,
}

impl ScaleOutCheckpoint {
    /// Per log, the first entry the checkpoint does not cover.
    pub fn positions(&self) -> Vec<(LogId, u64)> {
        self.merger.resume_at().collect()
    }

    pub fn encode(&self) -> Bytes {
        wire::encode(self).into()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        wire::decode(bytes).map_err(|e| CheckpointError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_restore_their_own_snapshots_and_refuse_others_with_typed_errors() {
        use crate::partitioned::layout::{self, ScaleOutLayout};
        use crate::partitioned::oracle::OracleServer;
        use crate::partitioned::server::PartitionServer;
        use crate::partitioned::{Scheme, ServerOptions};
        use crate::testing::scaleout::ObjectKv;
        use groups::ids::NodeId;
        use std::sync::Arc;

        let l = ScaleOutLayout::new(Scheme::Dssmr, 2, 3, 1, 1, layout::tuning()).unwrap();
        let cfg = Arc::new(l.config.clone());
        let service = Arc::new(ObjectKv { preload: 10 });
        let opts = ServerOptions::new(Scheme::Dssmr);
        let p0 = PartitionServer::new(service.clone(), cfg.clone(), NodeId(1), 0, 2, opts.clone());
        assert!(p0.objects().count() > 0, "preloaded objects");
        let snap = p0.snapshot();
        let back = PartitionServer::restore(
            service.clone(),
            cfg.clone(),
            NodeId(2),
            0,
            2,
            opts.clone(),
            &snap,
        )
        .unwrap();
        assert_eq!(back.state_hash(), p0.state_hash());
        assert_eq!(back.digest(), p0.digest());
        assert!(matches!(
            PartitionServer::restore(
                service.clone(),
                cfg.clone(),
                NodeId(4),
                1,
                2,
                opts.clone(),
                &snap
            ),
            Err(CheckpointError::Mismatch(_))
        ));
        assert!(matches!(
            PartitionServer::restore(
                service.clone(),
                cfg.clone(),
                NodeId(2),
                0,
                2,
                opts.clone(),
                &snap[..snap.len() / 2]
            ),
            Err(CheckpointError::Decode(_))
        ));
        let o = OracleServer::new(service.clone(), cfg.clone(), NodeId(7), 2, opts.clone());
        let snap = o.snapshot();
        let back = OracleServer::restore(
            service.clone(),
            cfg.clone(),
            NodeId(8),
            2,
            opts.clone(),
            &snap,
        )
        .unwrap();
        assert_eq!(back.state_hash(), o.state_hash());
        assert_eq!(
            back.locations().collect::<Vec<_>>(),
            o.locations().collect::<Vec<_>>()
        );
        assert!(matches!(
            OracleServer::restore(
                service.clone(),
                cfg.clone(),
                NodeId(8),
                3,
                opts.clone(),
                &snap
            ),
            Err(CheckpointError::Mismatch(_))
        ));
        assert!(OracleServer::restore(service, cfg, NodeId(8), 2, opts, b"junk").is_err());
    }
}
