//! One replica of the DynaStar oracle (sans-IO; reference notes, e.6, oracle tasks 1-5).
//!
//! - **Consults** are answered with where the objects are and the placement epoch
//!   ([`Prophecy::Placed`]); the client routes the command itself (to every partition holding
//!   one of its objects, with the target that holds most of them), so the oracle never waits
//!   and never multicasts commands.
//! - **Creates and deletes** are decided here as in DS-SMR (the map gains or loses the object;
//!   the partition follows the oracle's verdict; the oracle answers the client).
//! - **Hints** from the partitions update the workload graph; after `repartition_hints`
//!   batches (or on a [`Multicast::Repartition`] request) the oracle computes a placement from
//!   the graph and the current map ([`super::placement`]) and turns the difference into a plan
//!   of moves, epoch `e + 1`, in chunks. Every replica computes the same plan at the same
//!   position of its stream; the designated replica multicasts the chunks to the oracle and
//!   every partition (the others do if the chunks are not delivered within
//!   `plan_resend_ticks`), and the first delivered copy of each chunk is applied: the map
//!   changes there, exactly where the partitions hand the objects over. A plan is computed
//!   only when the previous one is fully delivered.

use super::super::attempts::{AttemptTable, Seen};
use super::super::common::{
    check_oracle_snapshot, check_restored_hash, decode_snapshot, partition_core, reply_to,
    send_to_client, Outbox, Output,
};
use super::super::msg::{CommandMsg, Exchange, Multicast, Outcome, PlanChunk, Prophecy, ToClient};
use super::super::oracle::{
    again, answer_pull, decode_multicast, locate, named_partitions, record_decision,
};
use super::super::service::{Kind, ObjectId, PartitionId, PartitionedService};
use super::super::ServerOptions;
use super::placement::{self, Method};
use super::workload::WorkloadGraph;
use crate::checkpoint::CheckpointError;
use crate::wire::{self, FeedMsg};
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Counters of one DynaStar oracle replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynaOracleStats {
    pub handled: u64,
    pub consults: u64,
    pub created: u64,
    pub deleted: u64,
    pub retries: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub pulls_answered: u64,
    /// Hint batches applied.
    pub hints: u64,
    /// Placements computed, those that moved nothing, plans fully delivered.
    pub repartitions: u64,
    pub repartitions_empty: u64,
    pub plans_completed: u64,
    /// Moves applied (the object was where the plan said) and ignored.
    pub moves: u64,
    pub moves_ignored: u64,
}

impl DynaOracleStats {
    /// The counters every oracle has, as a DS-SMR oracle's.
    pub fn common(&self) -> super::super::oracle::OracleStats {
        super::super::oracle::OracleStats {
            handled: self.handled,
            consults: self.consults,
            moves: self.moves,
            moves_ignored: self.moves_ignored,
            created: self.created,
            deleted: self.deleted,
            retries: self.retries,
            duplicates: self.duplicates,
            rejected: self.rejected,
            pulls_answered: self.pulls_answered,
        }
    }
}

/// What the latest repartition computed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    pub epoch: u64,
    pub vertices: usize,
    pub edges: usize,
    /// Objects the plan moves, and the graph's cut before and after.
    pub moved: usize,
    pub cut_before: u64,
    pub cut_after: u64,
    pub method: String,
    /// What METIS from scratch would have cut and moved, and the incremental refinement.
    pub metis: Option<(u64, usize)>,
    pub incremental: Option<(u64, usize)>,
    pub imbalance_percent: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingPlan {
    epoch: u64,
    chunks: Vec<PlanChunk>,
    delivered: BTreeSet<u32>,
}

#[derive(Deserialize)]
struct Snapshot<V, R> {
    partitions: u32,
    location: BTreeMap<ObjectId, PartitionId>,
    table: AttemptTable<Outcome<R>>,
    outbox: Outbox<V>,
    stats: DynaOracleStats,
    views: Vec<OracleView>,
    applied: (u64, BTreeSet<u32>),
    graph: WorkloadGraph,
    plan: Option<PendingPlan>,
    planned: u64,
    hint_batches: u64,
    report: Option<PlanReport>,
    hash: u64,
}

#[derive(Serialize)]
struct SnapshotRef<'a, V, R> {
    partitions: u32,
    location: &'a BTreeMap<ObjectId, PartitionId>,
    table: &'a AttemptTable<Outcome<R>>,
    outbox: &'a Outbox<V>,
    stats: &'a DynaOracleStats,
    views: &'a [OracleView],
    applied: &'a (u64, BTreeSet<u32>),
    graph: &'a WorkloadGraph,
    plan: &'a Option<PendingPlan>,
    planned: u64,
    hint_batches: u64,
    report: &'a Option<PlanReport>,
    hash: u64,
}

/// An ownership change as the oracle saw it: delivery, object, from, to (`None`: created or
/// deleted).
pub type OracleView = (MsgId, ObjectId, Option<PartitionId>, Option<PartitionId>);

/// One replica of the DynaStar oracle.
pub struct DynaOracle<S: PartitionedService> {
    service: Arc<S>,
    cfg: Arc<ClusterConfig>,
    node: NodeId,
    opts: ServerOptions,
    partitions: u32,
    sender: bool,
    location: BTreeMap<ObjectId, PartitionId>,
    table: AttemptTable<Outcome<S::Reply>>,
    outbox: Outbox<S::Value>,
    out: Vec<Output>,
    pub stats: DynaOracleStats,
    views: Vec<OracleView>,
    /// The latest epoch delivered and its chunks delivered.
    applied: (u64, BTreeSet<u32>),
    graph: WorkloadGraph,
    plan: Option<PendingPlan>,
    /// The latest epoch planned.
    planned: u64,
    hint_batches: u64,
    report: Option<PlanReport>,
    /// When this replica last multicast the pending plan's chunks (its own clock).
    plan_sent_at: Option<u64>,
    now: u64,
    /// Snapshots taken at checkpoint marks, for the host.
    snapshots: Vec<(u64, u64, Vec<u8>)>,
}

impl<S: PartitionedService> DynaOracle<S> {
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let sender = cfg.members(GroupId(partitions)).iter().min() == Some(&node);
        let mut location = BTreeMap::new();
        for (id, _) in service.preload() {
            location.insert(id, service.place(id, partitions));
        }
        DynaOracle {
            outbox: Outbox::new(opts.outbox_max),
            graph: WorkloadGraph::new(opts.dynastar.graph),
            service,
            cfg,
            node,
            opts,
            partitions,
            sender,
            location,
            table: AttemptTable::default(),
            out: Vec::new(),
            stats: DynaOracleStats::default(),
            views: Vec::new(),
            applied: (0, BTreeSet::new()),
            plan: None,
            planned: 0,
            hint_batches: 0,
            report: None,
            plan_sent_at: None,
            now: 0,
            snapshots: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        wire::encode(&SnapshotRef {
            partitions: self.partitions,
            location: &self.location,
            table: &self.table,
            outbox: &self.outbox,
            stats: &self.stats,
            views: &self.views,
            applied: &self.applied,
            graph: &self.graph,
            plan: &self.plan,
            planned: self.planned,
            hint_batches: self.hint_batches,
            report: &self.report,
            hash: self.state_hash(),
        })
    }

    pub fn restore(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        partitions: u32,
        opts: ServerOptions,
        bytes: &[u8],
    ) -> Result<Self, CheckpointError> {
        let snap: Snapshot<S::Value, S::Reply> =
            decode_snapshot(bytes, "dynastar oracle snapshot")?;
        check_oracle_snapshot(snap.partitions, true, &snap.location, partitions)?;
        let mut o = Self::new(service, cfg, node, partitions, opts);
        o.location = snap.location;
        o.table = snap.table;
        o.outbox = snap.outbox;
        o.stats = snap.stats;
        o.views = snap.views;
        o.applied = snap.applied;
        o.graph = snap.graph;
        o.plan = snap.plan;
        o.planned = snap.planned;
        o.hint_batches = snap.hint_batches;
        o.report = snap.report;
        check_restored_hash(o.state_hash(), snap.hash)?;
        Ok(o)
    }

    pub fn location(&self, object: ObjectId) -> Option<PartitionId> {
        self.location.get(&object).copied()
    }

    pub fn locations(&self) -> impl Iterator<Item = (ObjectId, PartitionId)> + '_ {
        self.location.iter().map(|(o, p)| (*o, *p))
    }

    /// Every ownership change (when `record_views`).
    pub fn views(&self) -> &[OracleView] {
        &self.views
    }

    /// The latest placement epoch delivered.
    pub fn epoch(&self) -> u64 {
        self.applied.0
    }

    pub fn graph(&self) -> &WorkloadGraph {
        &self.graph
    }

    /// What the latest repartition computed.
    pub fn report(&self) -> Option<&PlanReport> {
        self.report.as_ref()
    }

    /// Whether a plan is computed and not fully delivered.
    pub fn repartitioning(&self) -> bool {
        self.plan.is_some()
    }

    /// Bytes the oracle's map and graph hold, roughly.
    pub fn memory_bytes(&self) -> usize {
        self.location.len() * (std::mem::size_of::<(ObjectId, PartitionId)>() + 16)
            + self.graph.memory_bytes()
    }

    pub fn state_hash(&self) -> u64 {
        // Its own basis and mixing (checkpoints already written record this hash).
        let mut h: u64 = 0x84222325cbf29ce4 ^ self.applied.0;
        for (o, p) in &self.location {
            for x in [*o, u64::from(*p)] {
                h = (h ^ x).wrapping_mul(crate::hash::FNV_PRIME);
            }
        }
        h ^= (self.graph.edge_count() as u64).rotate_left(7)
            ^ (self.graph.vertex_count() as u64).rotate_left(41);
        h ^ self.table.digest().rotate_left(17)
    }

    pub fn take_outputs(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.out);
    }

    pub fn peer(&mut self, payload: &[u8]) {
        answer_pull(
            payload,
            &self.outbox,
            &mut self.out,
            &mut self.stats.pulls_answered,
        );
    }

    /// Advances time: multicasts a pending plan's undelivered chunks when the designated
    /// replica's copies are overdue.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        let resend = self.opts.dynastar.plan_resend_ticks;
        if let (Some(plan), Some(at)) = (&self.plan, self.plan_sent_at) {
            if now >= at + resend {
                let chunks: Vec<PlanChunk> = plan
                    .chunks
                    .iter()
                    .filter(|c| !plan.delivered.contains(&c.index))
                    .cloned()
                    .collect();
                self.multicast_chunks(&chunks);
                self.plan_sent_at = Some(now);
            }
        }
    }

    fn multicast_chunks(&mut self, chunks: &[PlanChunk]) {
        let all = GroupSet::all(self.partitions + 1);
        for c in chunks {
            let m = Multicast::Plan(c.clone());
            self.out
                .push(Output::Multicast(all.clone(), FeedMsg::command(&m)));
        }
    }

    fn view(&mut self, id: MsgId, o: ObjectId, from: Option<PartitionId>, to: Option<PartitionId>) {
        if self.opts.record_views {
            self.views.push((id, o, from, to));
        }
    }

    pub fn deliver(&mut self, id: MsgId, payload: &[u8]) {
        let Some(msg) = decode_multicast(payload, &mut self.stats.rejected) else {
            return;
        };
        self.stats.handled += 1;
        match msg {
            Multicast::Consult {
                client,
                seq,
                attempt,
                query,
            } => {
                self.stats.consults += 1;
                let prophecy = self.prophecy(&query);
                let body = ToClient::<S::Reply>::Prophecy {
                    seq,
                    attempt,
                    prophecy,
                };
                send_to_client(&mut self.out, client, &body);
            }
            Multicast::Command(c) => self.command(id, &c),
            Multicast::Hints { from, hints } => {
                if from < self.partitions {
                    let location = &self.location;
                    self.graph.apply(&hints, |o| location.contains_key(&o));
                    self.stats.hints += 1;
                    self.hint_batches += 1;
                    let every = self.opts.dynastar.repartition_hints;
                    if every > 0 && self.hint_batches >= every && self.plan.is_none() {
                        self.repartition();
                    }
                }
            }
            Multicast::Repartition => {
                if self.plan.is_none() {
                    self.repartition();
                }
            }
            Multicast::Plan(chunk) => self.apply_chunk(id, chunk),
            Multicast::Move { .. } | Multicast::Routed { .. } => {}
        }
    }

    fn prophecy(&self, query: &Kind) -> Prophecy {
        let place = |o| self.service.place(o, self.partitions);
        let epoch = self.applied.0;
        locate(&self.location, query, place, |locations| Prophecy::Placed {
            epoch,
            locations,
        })
    }

    /// Computes a placement and, if it moves anything, the plan of the next epoch.
    fn repartition(&mut self) {
        self.hint_batches = 0;
        self.stats.repartitions += 1;
        let objects: Vec<ObjectId> = self.location.keys().copied().collect();
        let current: Vec<u32> = self.location.values().copied().collect();
        let csr = self.graph.build(&objects);
        let d = &self.opts.dynastar;
        let p = placement::place(&csr, &current, self.partitions, &d.placement);
        let moves: Vec<(ObjectId, PartitionId, PartitionId)> = objects
            .iter()
            .zip(current.iter().zip(&p.part))
            .filter(|(_, (a, b))| a != b)
            .map(|(o, (a, b))| (*o, *a, *b))
            .collect();
        self.graph.decay();
        let epoch = self.planned.max(self.applied.0) + 1;
        self.report = Some(PlanReport {
            epoch,
            vertices: csr.vertices(),
            edges: csr.adj.len() / 2,
            moved: moves.len(),
            cut_before: csr.cut(&current),
            cut_after: p.cut,
            method: match p.method {
                Method::Incremental => "incremental",
                Method::Metis => "metis",
                Method::Best => "best",
            }
            .into(),
            metis: p.metis,
            incremental: p.incremental,
            imbalance_percent: p.imbalance_percent,
        });
        if moves.is_empty() {
            self.stats.repartitions_empty += 1;
            return;
        }
        self.planned = epoch;
        let per = d.plan_chunk_moves.max(1);
        let n = moves.len().div_ceil(per) as u32;
        let chunks: Vec<PlanChunk> = moves
            .chunks(per)
            .enumerate()
            .map(|(i, m)| PlanChunk {
                epoch,
                index: i as u32,
                chunks: n,
                moves: m.to_vec(),
            })
            .collect();
        if self.sender {
            self.multicast_chunks(&chunks);
        }
        self.plan_sent_at = Some(self.now);
        self.plan = Some(PendingPlan {
            epoch,
            chunks,
            delivered: BTreeSet::new(),
        });
    }

    fn apply_chunk(&mut self, id: MsgId, mut chunk: PlanChunk) {
        chunk.moves.sort_unstable();
        chunk.moves.dedup_by_key(|m| m.0);
        let (epoch, seen) = &mut self.applied;
        if chunk.epoch < *epoch || (chunk.epoch == *epoch && seen.contains(&chunk.index)) {
            return; // another copy
        }
        if chunk.epoch > *epoch {
            *epoch = chunk.epoch;
            seen.clear();
        }
        seen.insert(chunk.index);
        for (o, from, to) in chunk.moves {
            if from == to || to >= self.partitions {
                continue;
            }
            if self.location.get(&o) == Some(&from) {
                self.location.insert(o, to);
                self.stats.moves += 1;
                self.view(id, o, Some(from), Some(to));
            } else {
                self.stats.moves_ignored += 1;
            }
        }
        if let Some(plan) = self.plan.as_mut() {
            if plan.epoch == chunk.epoch {
                plan.delivered.insert(chunk.index);
                if plan.delivered.len() == plan.chunks.len() {
                    self.plan = None;
                    self.plan_sent_at = None;
                    self.stats.plans_completed += 1;
                }
            }
        }
    }

    fn valid(&self, c: &CommandMsg) -> Result<S::Command, String> {
        let cmd: S::Command =
            wire::decode(&c.command).map_err(|e| format!("undecodable command: {e}"))?;
        if self.service.kind(&cmd) != c.kind {
            return Err(format!(
                "the message's kind {:?} is not the command's",
                c.kind
            ));
        }
        if c.partitions.len() != 1 || c.partitions[0] >= self.partitions || c.fallback {
            return Err(format!(
                "a create or delete names one partition (got {:?})",
                c.partitions
            ));
        }
        Ok(cmd)
    }

    fn command(&mut self, id: MsgId, c: &CommandMsg) {
        if matches!(c.kind, Kind::Access(_)) {
            return;
        }
        let (outcome, apply) = match self.table.check(c.client, c.seq, c.attempt, c.floor) {
            Seen::New => {
                let decided = self.decide(id, c);
                record_decision(&mut self.table, &mut self.stats.rejected, c, decided)
            }
            seen => again(seen, &mut self.stats.duplicates),
        };
        for p in named_partitions(c, self.partitions) {
            let ex = Exchange::Verdict { msg: id, apply };
            if let Some(o) = self
                .outbox
                .put(GroupSet::singleton(GroupId(p)), ex, self.sender)
            {
                self.out.push(o);
            }
        }
        if let Some(o) = outcome {
            reply_to(&mut self.out, c, o);
        }
    }

    fn decide(&mut self, id: MsgId, c: &CommandMsg) -> (Outcome<S::Reply>, bool) {
        if let Err(e) = self.valid(c) {
            return (Outcome::Rejected(e), false);
        }
        let p = c.partitions[0];
        match c.kind {
            Kind::Create(object) => {
                if self.location.contains_key(&object) {
                    return (Outcome::AlreadyExists, false);
                }
                self.location.insert(object, p);
                self.stats.created += 1;
                self.view(id, object, None, Some(p));
                (Outcome::Created, true)
            }
            Kind::Delete(object) => match self.location.get(&object).copied() {
                None => (Outcome::Deleted, false),
                Some(q) if q == p => {
                    self.location.remove(&object);
                    self.graph.remove(object);
                    self.stats.deleted += 1;
                    self.view(id, object, Some(p), None);
                    (Outcome::Deleted, true)
                }
                Some(_) => {
                    self.stats.retries += 1;
                    (Outcome::Retry, false)
                }
            },
            Kind::Access(_) => unreachable!("accesses never reach decide"),
        }
    }
}

partition_core!(oracle DynaOracle, tick);
