//! Partition and oracle replicas: the scale-out cores behind the one replica host.
//!
//! A [`PartitionCore`] is the protocol logic of one replica of a group, as a sans-IO state
//! machine that executes its group's deliveries in order: [`PartitionServer`] (an S-SMR or
//! DS-SMR partition) and [`OracleServer`] (the DS-SMR oracle) implement it, and so can a
//! future core (a DynaStar oracle; a partition whose execution is a P-SMR worker set).
//! [`PartitionedCore`] turns any of them into a [`ReplicaCore`] for the
//! [`crate::host::ReplicaHost`]: it feeds the core the node's merged deliveries (or, when the
//! replica takes part in checkpoints, merges the group's logs itself), its exchanges and peer
//! messages, ticks it, performs its outputs, and turns its snapshots into checkpoints.
//! [`ScaleOutServer`] is the core of a node that is either (the binaries and deployments
//! build one type of replica for every role).
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

use super::combined::WorkerPartition;
use super::common::Output;
pub use super::common::PartitionCore;
use super::dynastar::oracle::DynaOracle;
use super::dynastar::partition::DynaPartition;
use super::msg::CommandMsg;
use super::oracle::{OracleServer, OracleStats};
use super::reads::Reads;
use super::server::{PartitionServer, ServerStats};
use super::service::{PartitionId, PartitionedService};
use super::ServerOptions;
use crate::checkpoint::{CheckpointError, CheckpointPolicy};
use crate::host::replica::{CoreOut, Installed, ReplicaCore, Taken};
use crate::host::{Action, Attached, ReplicaHost};
use crate::wire::{self, FeedMsg};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::merge::{Delivery, Merger, MergerState};
use groups::node::LogEntries;
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

/// A replica's own merge of its group's logs, with checkpoint marks (a replica that takes
/// part in checkpoints).
struct OwnMerge {
    sub: GroupSet,
    logs: Vec<LogId>,
    merger: Merger,
    /// Every group: a checkpoint request goes to all of them.
    groups: usize,
    merge_m: u64,
    /// The latest round whose request this replica's stream delivered.
    stream_round: u64,
    /// Rounds marked in the stream and not yet recorded by the core, with the merger's state
    /// right after each request.
    marks: BTreeMap<u64, MergerState>,
    merged: Vec<Delivery>,
}

/// Publishes a core's counters for other threads (see [`PartitionedCore::share_with`]).
type Publish<C> = Box<dyn FnMut(&C) + Send>;

/// A [`PartitionCore`] as a replica host's core (see the module docs).
pub struct PartitionedCore<C: PartitionCore> {
    pub server: C,
    merge: Option<Box<OwnMerge>>,
    outputs: Vec<Output>,
    snaps: Vec<(u64, u64, Vec<u8>)>,
    /// Publishers of the core's counters, and the tick they last ran.
    publish: Vec<Publish<C>>,
    published_at: u64,
    /// Reads off the log (a core that merges its logs itself and serves them).
    reads: Reads,
    served: Vec<CommandMsg>,
}

impl<C: PartitionCore> PartitionedCore<C> {
    /// A core whose node merges the group's logs (it takes no part in checkpoints).
    pub fn new(server: C) -> Self {
        PartitionedCore {
            server,
            merge: None,
            outputs: Vec::new(),
            snaps: Vec::new(),
            publish: Vec::new(),
            published_at: u64::MAX,
            reads: Reads::default(),
            served: Vec::new(),
        }
    }

    /// A core that merges its group's logs itself, so that it takes part in every checkpoint
    /// round, records its merger's position at the request, restores it and moves its feeds
    /// after a state transfer (its node must hand out entries).
    pub fn merging(server: C, cfg: &ClusterConfig, node: NodeId) -> Self {
        let sub = cfg
            .node(node)
            .and_then(|n| n.subscriptions.first().cloned())
            .unwrap_or_else(|| GroupSet::singleton(GroupId(server.group())));
        let logs = cfg.logs_for(&sub);
        PartitionedCore {
            merge: Some(Box::new(OwnMerge {
                merger: Merger::new(&logs, sub.clone(), cfg.tuning.merge_m),
                sub,
                logs,
                groups: cfg.groups as usize,
                merge_m: cfg.tuning.merge_m,
                stream_round: 0,
                marks: BTreeMap::new(),
                merged: Vec::new(),
            })),
            ..PartitionedCore::new(server)
        }
    }

    /// Calls `publish` with the core at most once per tick (a benchmark or the metrics
    /// endpoint samples the counters while the replica runs).
    pub fn share_with(&mut self, publish: impl FnMut(&C) + Send + 'static) {
        self.publish.push(Box::new(publish));
    }

    /// Reads off the log this incarnation answered.
    pub fn reads_served(&self) -> u64 {
        self.reads.served
    }

    /// Hands delivery `d` to the core; with `reads` (a replica that serves reads off the log),
    /// records where it came from if the core queued it.
    fn deliver(server: &mut C, reads: Option<&mut Reads>, d: &Delivery) {
        match FeedMsg::parse(&d.msg.payload) {
            Ok(FeedMsg::Command(body)) => {
                let body = d.msg.payload.slice_ref(body);
                let before = server.backlog();
                server.deliver_to(d.msg.id, &d.msg.dests, body);
                if let Some(reads) = reads.filter(|_| server.backlog() > before) {
                    reads.queued(Some((d.log, d.index)));
                }
            }
            // Only replicas that merge themselves take part in checkpoints.
            Ok(FeedMsg::Checkpoint { .. }) => {}
            Err(e) => tracing::warn!(id = %d.msg.id, error = %e, "delivered payload dropped"),
        }
    }
}

impl<C: PartitionCore> ReplicaCore for PartitionedCore<C> {
    fn reads_entries(&self) -> bool {
        self.merge.is_some()
    }

    fn entries(&mut self, batch: &mut Vec<LogEntries>) {
        let Some(m) = self.merge.as_mut() else {
            batch.clear();
            return;
        };
        for e in batch.drain(..) {
            if let Err(gap) = m.merger.push(e.log, e.start, &e.entries) {
                // Cannot happen: feeds hand out contiguous entries, restarted with the merger.
                tracing::error!(error = %gap, "entries dropped");
            }
        }
        let groups = m.groups;
        let serves = self.server.serves_reads();
        loop {
            let stopped = m.merger.poll_until(&mut m.merged, |msg| {
                crate::checkpoint::round_of(msg, groups).is_some()
            });
            for d in m.merged.drain(..) {
                match crate::checkpoint::round_of(&d.msg, groups) {
                    // The request is the last delivery of the batch: the merger's state is
                    // the state right after it.
                    Some(round) if round > m.stream_round => {
                        m.stream_round = round;
                        m.marks.insert(round, m.merger.state());
                        let before = self.server.backlog();
                        self.server.mark_checkpoint(round);
                        if serves && self.server.backlog() > before {
                            self.reads.queued(None);
                        }
                    }
                    Some(_) => {}
                    None => {
                        let reads = serves.then_some(&mut self.reads);
                        Self::deliver(&mut self.server, reads, &d)
                    }
                }
            }
            if !stopped {
                break;
            }
        }
    }

    /// Its node merges for it, so it serves no reads off the log (nothing to track).
    fn delivered(&mut self, d: Delivery) {
        Self::deliver(&mut self.server, None, &d);
    }

    fn start(&mut self, at: &Attached) {
        self.server.start(&at.waker);
    }

    fn exchange(&mut self, dests: &GroupSet, payload: &[u8]) {
        self.server.exchange_to(dests, payload);
    }

    fn peer(&mut self, _from: NodeId, body: &[u8]) {
        self.server.peer(body);
    }

    /// A read off the log ([`super::reads`]): served once this replica's merge and core
    /// reach its read index, refused at once by a core that does not serve reads or whose
    /// node merges its logs for it (it cannot tell where its deliveries come from).
    fn read(&mut self, from: NodeId, body: &[u8]) {
        let c = match wire::decode::<CommandMsg>(body) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%from, error = %e, "undecodable read dropped");
                return;
            }
        };
        if self.merge.is_some() && self.server.serves_reads() {
            self.reads.arrived(c);
        } else {
            self.server.refuse_read(&c);
        }
    }

    fn read_index(&mut self, token: u64, positions: Vec<(LogId, u64)>) {
        self.reads.indexed(token, positions);
    }

    fn step(&mut self, now: u64, out: &mut CoreOut) {
        if let Some(need) = self.merge.as_ref().and_then(|m| m.merger.blocked_on()) {
            out.actions.push(Action::RequestSkip(need));
        }
        self.server.tick(now);
        self.server.run();
        if let Some(m) = self.merge.as_ref().filter(|_| self.server.serves_reads()) {
            self.reads.handled_down_to(self.server.backlog());
            if let Some(token) = self.reads.ask() {
                out.actions.push(Action::ReadIndex {
                    token,
                    logs: m.logs.clone(),
                });
            }
            self.reads.take_reached(&m.merger, &mut self.served);
            for c in self.served.drain(..) {
                self.server.serve_read(&c);
            }
        }
        self.server.take_outputs(&mut self.outputs);
        out.actions.extend(self.outputs.drain(..).map(|o| match o {
            Output::Rmcast(dests, payload) => Action::Rmcast(dests, payload),
            Output::Send(to, payload) => Action::Send(to, payload),
            Output::Multicast(dests, payload) => Action::Multicast(dests, payload),
        }));
        if let Some(m) = self.merge.as_mut() {
            self.server.take_snapshots(&mut self.snaps);
            for (round, hash, core) in self.snaps.drain(..) {
                let Some(merger) = m.marks.remove(&round) else {
                    continue;
                };
                m.marks = m.marks.split_off(&round);
                let ck = ScaleOutCheckpoint {
                    round,
                    group: self.server.group(),
                    merger,
                    hash,
                    core,
                };
                out.taken.push(Taken {
                    round,
                    positions: ck.positions(),
                    bytes: ck.encode(),
                    state_hash: Some(hash),
                    take_us: 0,
                    assemble_us: 0,
                });
            }
        }
        if self.published_at != now && !self.publish.is_empty() {
            self.published_at = now;
            for publish in &mut self.publish {
                publish(&self.server);
            }
        }
    }

    fn install(&mut self, bytes: &Bytes) -> Result<Installed, CheckpointError> {
        let Some(m) = self.merge.as_mut() else {
            return Err(CheckpointError::Mismatch(
                "this replica does not merge its logs: it cannot install a checkpoint".into(),
            ));
        };
        let ck = ScaleOutCheckpoint::decode(bytes)?;
        let group = self.server.group();
        if ck.group != group {
            return Err(CheckpointError::Mismatch(format!(
                "a checkpoint of group {}, this replica is in group {group}",
                ck.group
            )));
        }
        let merger = Merger::restore(&m.logs, m.sub.clone(), m.merge_m, &ck.merger)
            .map_err(|e| CheckpointError::Mismatch(e.to_string()))?;
        let server = self.server.restored(&ck.core)?;
        if server.state_hash() != ck.hash {
            return Err(CheckpointError::Mismatch(
                "the restored state's hash is not the checkpoint's".into(),
            ));
        }
        self.server = server;
        self.reads.reset_queue();
        m.merger = merger;
        m.stream_round = ck.round;
        m.marks.clear();
        self.snaps.clear();
        Ok(Installed {
            round: ck.round,
            positions: ck.positions(),
            state_hash: Some(ck.hash),
            install_us: 0,
        })
    }

    fn executed(&self) -> u64 {
        self.server.handled()
    }

    fn stream_round(&self) -> u64 {
        self.merge.as_ref().map_or(0, |m| m.stream_round)
    }
}

/// The core of a scale-out node, whichever its role and scheme.
pub enum ScaleOutServer<S: PartitionedService> {
    /// An S-SMR or DS-SMR partition.
    Partition(Box<PartitionServer<S>>),
    /// The DS-SMR oracle.
    Oracle(Box<OracleServer<S>>),
    /// A DynaStar partition.
    DynaPartition(Box<DynaPartition<S>>),
    /// The DynaStar oracle.
    DynaOracle(Box<DynaOracle<S>>),
    /// A combined-mode partition: S-SMR or DS-SMR with several workers, one per cell.
    Combined(Box<WorkerPartition<S>>),
}

impl<S: PartitionedService> ScaleOutServer<S> {
    /// Replica `node` of `role` (of a deployment of `partitions` partitions).
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        role: Role,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let dynastar = opts.scheme == super::Scheme::Dynastar;
        match role {
            Role::Partition(p) if dynastar => ScaleOutServer::DynaPartition(Box::new(
                DynaPartition::new(service, cfg, node, p, partitions, opts),
            )),
            Role::Oracle if dynastar => ScaleOutServer::DynaOracle(Box::new(DynaOracle::new(
                service, cfg, node, partitions, opts,
            ))),
            Role::Partition(p) if opts.workers > 1 => ScaleOutServer::Combined(Box::new(
                WorkerPartition::new(service, cfg, node, p, partitions, opts),
            )),
            Role::Partition(p) => ScaleOutServer::Partition(Box::new(PartitionServer::new(
                service, cfg, node, p, partitions, opts,
            ))),
            Role::Oracle => ScaleOutServer::Oracle(Box::new(OracleServer::new(
                service, cfg, node, partitions, opts,
            ))),
        }
    }

    /// An S-SMR or DS-SMR partition.
    pub fn partition(&self) -> Option<&PartitionServer<S>> {
        match self {
            ScaleOutServer::Partition(s) => Some(s),
            _ => None,
        }
    }

    /// The DS-SMR oracle.
    pub fn oracle(&self) -> Option<&OracleServer<S>> {
        match self {
            ScaleOutServer::Oracle(o) => Some(o),
            _ => None,
        }
    }

    /// A DynaStar partition.
    pub fn dyna_partition(&self) -> Option<&DynaPartition<S>> {
        match self {
            ScaleOutServer::DynaPartition(s) => Some(s),
            _ => None,
        }
    }

    /// The DynaStar oracle.
    pub fn dyna_oracle(&self) -> Option<&DynaOracle<S>> {
        match self {
            ScaleOutServer::DynaOracle(o) => Some(o),
            _ => None,
        }
    }

    /// A partition's counters, whichever the scheme.
    pub fn server_stats(&self) -> Option<&ServerStats> {
        match self {
            ScaleOutServer::Partition(s) => Some(&s.stats),
            ScaleOutServer::DynaPartition(s) => Some(&s.stats),
            ScaleOutServer::Combined(c) => Some(c.stats()),
            _ => None,
        }
    }

    /// A combined-mode partition (several workers).
    pub fn combined(&self) -> Option<&WorkerPartition<S>> {
        match self {
            ScaleOutServer::Combined(c) => Some(c),
            _ => None,
        }
    }

    fn core(&self) -> &dyn DynCore {
        match self {
            ScaleOutServer::Partition(s) => &**s,
            ScaleOutServer::Oracle(o) => &**o,
            ScaleOutServer::DynaPartition(s) => &**s,
            ScaleOutServer::DynaOracle(o) => &**o,
            ScaleOutServer::Combined(c) => &**c,
        }
    }

    fn core_mut(&mut self) -> &mut dyn DynCore {
        match self {
            ScaleOutServer::Partition(s) => &mut **s,
            ScaleOutServer::Oracle(o) => &mut **o,
            ScaleOutServer::DynaPartition(s) => &mut **s,
            ScaleOutServer::DynaOracle(o) => &mut **o,
            ScaleOutServer::Combined(c) => &mut **c,
        }
    }
}

/// The object-safe part of [`PartitionCore`], through which [`ScaleOutServer`] delegates.
trait DynCore {
    fn group(&self) -> u32;
    fn start(&mut self, waker: &Waker);
    fn deliver_to(&mut self, id: MsgId, dests: &GroupSet, body: Bytes);
    fn deliver(&mut self, id: MsgId, body: &[u8]);
    fn exchange_to(&mut self, dests: &GroupSet, payload: &[u8]);
    fn exchange(&mut self, payload: &[u8]);
    fn peer(&mut self, body: &[u8]);
    fn tick(&mut self, now: u64);
    fn run(&mut self);
    fn take_outputs(&mut self, out: &mut Vec<Output>);
    fn mark_checkpoint(&mut self, round: u64);
    fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>);
    fn handled(&self) -> u64;
    fn backlog(&self) -> usize;
    fn state_hash(&self) -> u64;
    fn serves_reads(&self) -> bool;
    fn serve_read(&mut self, c: &CommandMsg);
    fn refuse_read(&mut self, c: &CommandMsg);
}

impl<C: PartitionCore> DynCore for C {
    fn group(&self) -> u32 {
        PartitionCore::group(self)
    }
    fn start(&mut self, waker: &Waker) {
        PartitionCore::start(self, waker)
    }
    fn deliver_to(&mut self, id: MsgId, dests: &GroupSet, body: Bytes) {
        PartitionCore::deliver_to(self, id, dests, body)
    }
    fn deliver(&mut self, id: MsgId, body: &[u8]) {
        PartitionCore::deliver(self, id, body)
    }
    fn exchange_to(&mut self, dests: &GroupSet, payload: &[u8]) {
        PartitionCore::exchange_to(self, dests, payload)
    }
    fn exchange(&mut self, payload: &[u8]) {
        PartitionCore::exchange(self, payload)
    }
    fn peer(&mut self, body: &[u8]) {
        PartitionCore::peer(self, body)
    }
    fn tick(&mut self, now: u64) {
        PartitionCore::tick(self, now)
    }
    fn run(&mut self) {
        PartitionCore::run(self)
    }
    fn take_outputs(&mut self, out: &mut Vec<Output>) {
        PartitionCore::take_outputs(self, out)
    }
    fn mark_checkpoint(&mut self, round: u64) {
        PartitionCore::mark_checkpoint(self, round)
    }
    fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
        PartitionCore::take_snapshots(self, out)
    }
    fn handled(&self) -> u64 {
        PartitionCore::handled(self)
    }
    fn backlog(&self) -> usize {
        PartitionCore::backlog(self)
    }
    fn state_hash(&self) -> u64 {
        PartitionCore::state_hash(self)
    }
    fn serves_reads(&self) -> bool {
        PartitionCore::serves_reads(self)
    }
    fn serve_read(&mut self, c: &CommandMsg) {
        PartitionCore::serve_read(self, c)
    }
    fn refuse_read(&mut self, c: &CommandMsg) {
        PartitionCore::refuse_read(self, c)
    }
}

impl<S: PartitionedService> PartitionCore for ScaleOutServer<S> {
    fn group(&self) -> u32 {
        self.core().group()
    }
    fn start(&mut self, waker: &Waker) {
        self.core_mut().start(waker)
    }
    fn deliver_to(&mut self, id: MsgId, dests: &GroupSet, body: Bytes) {
        self.core_mut().deliver_to(id, dests, body)
    }
    fn deliver(&mut self, id: MsgId, body: &[u8]) {
        self.core_mut().deliver(id, body)
    }
    fn exchange_to(&mut self, dests: &GroupSet, payload: &[u8]) {
        self.core_mut().exchange_to(dests, payload)
    }
    fn exchange(&mut self, payload: &[u8]) {
        self.core_mut().exchange(payload)
    }
    fn peer(&mut self, body: &[u8]) {
        self.core_mut().peer(body)
    }
    fn tick(&mut self, now: u64) {
        self.core_mut().tick(now)
    }
    fn run(&mut self) {
        self.core_mut().run()
    }
    fn take_outputs(&mut self, out: &mut Vec<Output>) {
        self.core_mut().take_outputs(out)
    }
    fn mark_checkpoint(&mut self, round: u64) {
        self.core_mut().mark_checkpoint(round)
    }
    fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
        self.core_mut().take_snapshots(out)
    }
    fn restored(&self, snapshot: &[u8]) -> Result<Self, CheckpointError> {
        Ok(match self {
            ScaleOutServer::Partition(s) => {
                ScaleOutServer::Partition(Box::new(s.restored(snapshot)?))
            }
            ScaleOutServer::Oracle(o) => ScaleOutServer::Oracle(Box::new(o.restored(snapshot)?)),
            ScaleOutServer::DynaPartition(s) => {
                ScaleOutServer::DynaPartition(Box::new(s.restored(snapshot)?))
            }
            ScaleOutServer::DynaOracle(o) => {
                ScaleOutServer::DynaOracle(Box::new(o.restored(snapshot)?))
            }
            ScaleOutServer::Combined(c) => {
                ScaleOutServer::Combined(Box::new(c.restored(snapshot)?))
            }
        })
    }
    fn handled(&self) -> u64 {
        self.core().handled()
    }
    fn backlog(&self) -> usize {
        self.core().backlog()
    }
    fn state_hash(&self) -> u64 {
        self.core().state_hash()
    }
    fn serves_reads(&self) -> bool {
        self.core().serves_reads()
    }
    fn serve_read(&mut self, c: &CommandMsg) {
        self.core_mut().serve_read(c)
    }
    fn refuse_read(&mut self, c: &CommandMsg) {
        self.core_mut().refuse_read(c)
    }
}

/// A partition's counters, readable from other threads (see [`ScaleOutReplica::share_stats`]).
pub type SharedServerStats = Arc<parking_lot::Mutex<ServerStats>>;

/// An oracle replica's counters: a DS-SMR oracle's, or a DynaStar oracle's (which also
/// counts hint batches, repartitions and plans).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OracleCounters {
    DsSmr(OracleStats),
    Dynastar(super::dynastar::oracle::DynaOracleStats),
}

impl Default for OracleCounters {
    fn default() -> Self {
        OracleCounters::DsSmr(OracleStats::default())
    }
}

/// An oracle's counters, readable from other threads (see
/// [`ScaleOutReplica::share_oracle_stats`]).
pub type SharedOracleStats = Arc<parking_lot::Mutex<OracleCounters>>;

/// A scale-out replica: the one replica host with a partition or oracle core.
pub type ScaleOutReplica<S> = ReplicaHost<PartitionedCore<ScaleOutServer<S>>>;

impl<S: PartitionedService> ReplicaHost<PartitionedCore<ScaleOutServer<S>>> {
    /// Replica `node` of `role`; its node merges the logs, and it takes no part in
    /// checkpoints (see [`ScaleOutReplica::checkpointing`]).
    pub fn scaleout(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        role: Role,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let server = ScaleOutServer::new(service, cfg, node, role, partitions, opts);
        ReplicaHost::new(PartitionedCore::new(server))
    }

    /// Merges the logs itself and takes part in checkpoints: it records its part of every
    /// round any replica asks for, serves its checkpoints to peers, reports them to the log
    /// acceptors (which may then trim below them), and recovers by state transfer when a
    /// log was trimmed past it. With a `policy` it also asks for checkpoints. Its node must
    /// hand out entries (`NodeOptions::merge_locally = false`).
    pub fn checkpointing(
        mut self,
        cfg: &ClusterConfig,
        node: NodeId,
        policy: Option<CheckpointPolicy>,
    ) -> Self {
        let PartitionedCore {
            server, publish, ..
        } = self.core;
        self.core = PartitionedCore::merging(server, cfg, node);
        self.core.publish = publish;
        match policy {
            Some(p) => self.with_checkpoints(p),
            None => self,
        }
    }

    pub fn partition(&self) -> Option<&PartitionServer<S>> {
        self.core.server.partition()
    }

    pub fn oracle(&self) -> Option<&OracleServer<S>> {
        self.core.server.oracle()
    }

    pub fn dyna_partition(&self) -> Option<&DynaPartition<S>> {
        self.core.server.dyna_partition()
    }

    pub fn dyna_oracle(&self) -> Option<&DynaOracle<S>> {
        self.core.server.dyna_oracle()
    }

    /// A combined-mode partition replica's workers.
    pub fn combined(&self) -> Option<&WorkerPartition<S>> {
        self.core.server.combined()
    }

    /// A partition replica's counters (S-SMR, DS-SMR or DynaStar).
    pub fn server_stats(&self) -> Option<&ServerStats> {
        self.core.server.server_stats()
    }

    /// Delivered commands waiting.
    pub fn backlog(&self) -> usize {
        PartitionCore::backlog(&self.core.server)
    }

    /// Reads off the log this incarnation answered ([`super::reads`]).
    pub fn reads_served(&self) -> u64 {
        self.core.reads_served()
    }

    /// Delivered multicasts handled.
    pub fn handled(&self) -> u64 {
        PartitionCore::handled(&self.core.server)
    }

    pub fn state_hash(&self) -> u64 {
        PartitionCore::state_hash(&self.core.server)
    }

    /// Publishes a partition replica's counters to a shared copy, refreshed once per tick, so
    /// a benchmark can sample them (moves over time) while the replica runs.
    pub fn share_stats(&mut self) -> SharedServerStats {
        let s = SharedServerStats::default();
        let shared = s.clone();
        self.core.share_with(move |c: &ScaleOutServer<S>| {
            if let Some(stats) = c.server_stats() {
                shared.lock().clone_from(stats);
            }
        });
        s
    }

    /// Publishes an oracle replica's counters to a shared copy, refreshed once per tick.
    pub fn share_oracle_stats(&mut self) -> SharedOracleStats {
        let s = SharedOracleStats::default();
        let shared = s.clone();
        self.core.share_with(move |c: &ScaleOutServer<S>| {
            if let Some(o) = c.oracle() {
                *shared.lock() = OracleCounters::DsSmr(o.stats.clone());
            } else if let Some(o) = c.dyna_oracle() {
                *shared.lock() = OracleCounters::Dynastar(o.stats.clone());
            }
        });
        s
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
