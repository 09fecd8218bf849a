//! Scale-out deployments in the deterministic simulator, and the invariants checked on them.

use super::combined::WorkerPartition;
use super::layout::ScaleOutLayout;
use super::proxy::{ClientOptions, LocationCache, ScaleOutClient};
use super::replica::{PartitionCore, PartitionedCore, ScaleOutReplica, ScaleOutServer};
use super::server::PartitionServer;
use super::service::{ObjectId, PartitionId, PartitionedService};
use super::{Scheme, ServerOptions};
use crate::checkpoint::CheckpointPolicy;
use crate::sim::{Blueprint, EngineSim, Roles, SimCore};
use crate::wire::ClientId;
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Application work charged to a replica under the simulator's cost model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkCosts {
    /// Per delivered multicast handled (decode, table, bookkeeping).
    pub per_command_us: f64,
    /// Per object a command executes on (the service's work grows with it: a post writes
    /// every follower's timeline).
    pub per_object_us: f64,
    /// Whether execution runs on cores of its own (worker threads, one per worker, as
    /// `ServerOptions::worker_threads` runs it) while the node's thread handles messages:
    /// the node is then not blocked by it, and what a step sends leaves when its workers are
    /// done. `false`: the node's thread executes (charged its busiest worker's work).
    pub own_cores: bool,
}

/// The blueprint of an S-SMR or DS-SMR deployment.
pub struct ScaleOut<S: PartitionedService> {
    pub service: Arc<S>,
    pub layout: ScaleOutLayout,
    pub client: ClientOptions,
    pub server: ServerOptions,
    /// Zero unless a cost model is in use.
    pub work: WorkCosts,
    /// The clients of a node share one location cache (as one machine's threads would).
    pub cache_per_node: bool,
    /// Replicas merge their logs themselves, take part in checkpoints and ask for them by
    /// this policy (see [`super::replica`]); `None`, the default: the nodes merge and
    /// nothing is checkpointed.
    pub checkpoints: Option<CheckpointPolicy>,
    caches: parking_lot::Mutex<BTreeMap<NodeId, LocationCache>>,
    roles: Roles,
}

impl<S: PartitionedService> ScaleOut<S> {
    /// A deployment of `layout`; `server.workers` follows the layout's workers per
    /// partition.
    pub fn new(
        service: Arc<S>,
        layout: ScaleOutLayout,
        client: ClientOptions,
        mut server: ServerOptions,
    ) -> Self {
        let roles = layout.roles();
        server.workers = layout.workers;
        ScaleOut {
            service,
            layout,
            client,
            server,
            work: WorkCosts::default(),
            cache_per_node: true,
            checkpoints: None,
            caches: Default::default(),
            roles,
        }
    }
}

impl<S: PartitionedService> SimCore for PartitionedCore<ScaleOutServer<S>> {
    fn backlog(&self) -> usize {
        PartitionCore::backlog(&self.server)
    }
    fn progress(&self) -> Vec<u64> {
        vec![PartitionCore::handled(&self.server)]
    }
    fn state_hash(&self) -> Option<u64> {
        Some(PartitionCore::state_hash(&self.server))
    }
    fn work_done(&self) -> [u64; 2] {
        match &self.server {
            ScaleOutServer::Partition(s) => [s.stats.handled, s.stats.objects],
            ScaleOutServer::Oracle(o) => [o.stats.handled, 0],
            ScaleOutServer::DynaPartition(s) => [s.stats.handled, s.stats.objects],
            ScaleOutServer::DynaOracle(o) => [o.stats.handled, 0],
            ScaleOutServer::Combined(c) => [c.stats().handled, c.stats().objects],
        }
    }
    fn work_lanes(&self, out: &mut Vec<[u64; 2]>) {
        out.clear();
        match self.server.combined().and_then(|c| c.workers()) {
            Some(workers) => out.extend(workers.iter().map(|w| [w.stats.handled, w.stats.objects])),
            None => out.push(self.work_done()),
        }
    }
}

impl<S: PartitionedService> Blueprint for ScaleOut<S> {
    type Core = PartitionedCore<ScaleOutServer<S>>;
    type Proxy = ScaleOutClient<S>;

    fn roles(&self) -> &Roles {
        &self.roles
    }
    fn replica(&self, id: NodeId, config: &Arc<ClusterConfig>, _seed: u64) -> ScaleOutReplica<S> {
        let role = self.layout.role(id).expect("a replica node");
        let replica = ScaleOutReplica::scaleout(
            self.service.clone(),
            config.clone(),
            id,
            role,
            self.layout.partitions,
            self.server.clone(),
        );
        match self.checkpoints {
            Some(policy) => replica.checkpointing(config, id, Some(policy)),
            // A replica serves reads off the log only if it merges its logs itself.
            None if self.client.fast_reads || self.server.fast_reads => {
                replica.checkpointing(config, id, None)
            }
            None => replica,
        }
    }
    fn proxy(&self, id: ClientId) -> ScaleOutClient<S> {
        let cache = if self.cache_per_node {
            self.caches.lock().entry(id.node()).or_default().clone()
        } else {
            LocationCache::default()
        };
        ScaleOutClient::with_cache(id, self.service.clone(), self.client, cache)
    }
    fn work_costs(&self) -> [f64; 2] {
        [self.work.per_command_us, self.work.per_object_us]
    }
    fn work_on_own_cores(&self) -> bool {
        self.work.own_cores
    }
}

/// Checks the S-SMR, DS-SMR and DynaStar invariants on a quiet simulated deployment; returns
/// the violations found:
///
/// - every replica's `double_owned` counter is 0 (no object ever arrived where it was owned,
///   and no two partitions sent the same object for one command);
/// - no object is owned by two partitions (at the end);
/// - DS-SMR: every oracle replica's map equals the partitions' ownership, and the oracle's
///   view of each partition equals the partition's own view after every move, create and
///   delete both delivered (when `record_views` is on);
/// - DynaStar: every oracle replica's map equals the partitions' ownership, and (when
///   `record_views` is on) for every object, the sequence of deliveries at which it joined or
///   left each partition is the same at the oracle and at every replica of the partition.
///   The oracle's map moves an object from exactly one owner to exactly one at each of those
///   positions, so every object is owned by exactly one partition at every position of the
///   streams, by the oracle's account and by every partition's.
pub fn check_ownership<S: PartitionedService>(sim: &EngineSim<ScaleOut<S>>) -> Vec<String> {
    let mut problems = Vec::new();
    let layout = &sim.blueprint.layout;
    let replica = |id: NodeId| sim.sim.actor(id).and_then(|a| a.as_replica());
    let mut owner: BTreeMap<ObjectId, PartitionId> = BTreeMap::new();
    for (p, members) in layout.partition_replicas.iter().enumerate() {
        let mut first = true;
        for &id in members {
            let Some(r) = replica(id) else { continue };
            let stats = r.server_stats().expect("partition replica");
            if stats.double_owned > 0 {
                problems.push(format!(
                    "partition {p} replica {id}: {} double ownerships",
                    stats.double_owned
                ));
            }
            if first {
                first = false;
                // (object, the protocol partition: in combined mode the worker's cell)
                let objects: Vec<(ObjectId, PartitionId)> = match (r.partition(), r.combined()) {
                    (Some(s), _) => s.objects().map(|(o, _)| (o, p as PartitionId)).collect(),
                    (None, Some(c)) => cell_servers(c)
                        .flat_map(|(cell, w)| w.objects().map(move |(o, _)| (o, cell)))
                        .collect(),
                    (None, None) => r
                        .dyna_partition()
                        .expect("partition replica")
                        .objects()
                        .map(|(o, _)| (o, p as PartitionId))
                        .collect(),
                };
                for (o, cell) in objects {
                    if let Some(q) = owner.insert(o, cell) {
                        problems.push(format!("object {o} is owned by partitions {q} and {cell}"));
                    }
                }
            }
        }
    }
    if layout.scheme == Scheme::Dynastar {
        problems.extend(check_dynastar(sim, &owner));
    }
    if layout.scheme == Scheme::Dssmr {
        type Views = Vec<(groups::MsgId, u64)>;
        let views: Vec<(NodeId, PartitionId, Views)> = layout
            .partition_replicas
            .iter()
            .enumerate()
            .flat_map(|(p, m)| m.iter().map(move |id| (p, *id)))
            .flat_map(|(p, id)| {
                let Some(r) = replica(id) else {
                    return Vec::new();
                };
                match r.combined() {
                    Some(c) => cell_servers(c)
                        .map(|(cell, w)| (id, cell, w.views().to_vec()))
                        .collect(),
                    None => {
                        let s = r.partition().expect("partition replica");
                        vec![(id, p as PartitionId, s.views().to_vec())]
                    }
                }
            })
            .collect();
        for &id in &layout.oracle_replicas {
            let Some(r) = replica(id) else { continue };
            let o = r.oracle().expect("oracle replica");
            let map: BTreeMap<ObjectId, PartitionId> = o.locations().collect();
            if map != owner {
                let wrong: Vec<String> = map
                    .iter()
                    .filter(|(k, v)| owner.get(k) != Some(v))
                    .map(|(k, v)| format!("{k}@{v} (owner {:?})", owner.get(k)))
                    .chain(
                        owner
                            .iter()
                            .filter(|(k, _)| !map.contains_key(k))
                            .map(|(k, v)| format!("{k} owned by {v}, unknown to the oracle")),
                    )
                    .take(8)
                    .collect();
                problems.push(format!(
                    "oracle {id} disagrees with the partitions: {wrong:?}"
                ));
            }
            if sim.blueprint.server.record_views {
                for (pid, p, seen) in &views {
                    let expected: Vec<(groups::MsgId, u64)> = o
                        .views()
                        .iter()
                        .filter(|(_, q, _)| q == p)
                        .map(|(m, _, d)| (*m, *d))
                        .collect();
                    if *seen != expected {
                        let at = seen
                            .iter()
                            .zip(&expected)
                            .position(|(a, b)| a != b)
                            .unwrap_or(seen.len().min(expected.len()));
                        problems.push(format!(
                            "partition {p} replica {pid} and oracle {id} disagree on the partition's objects at change {at} ({} vs {} changes)",
                            seen.len(),
                            expected.len()
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// A combined partition's workers with their cells (the simulator runs them inline).
fn cell_servers<S: PartitionedService>(
    c: &WorkerPartition<S>,
) -> impl Iterator<Item = (PartitionId, &PartitionServer<S>)> {
    c.workers()
        .expect("simulated workers run inline")
        .iter()
        .map(|w| (w.partition(), w))
}

/// DynaStar's part of [`check_ownership`].
fn check_dynastar<S: PartitionedService>(
    sim: &EngineSim<ScaleOut<S>>,
    owner: &BTreeMap<ObjectId, PartitionId>,
) -> Vec<String> {
    type Events = BTreeMap<ObjectId, Vec<(groups::MsgId, bool)>>;
    let mut problems = Vec::new();
    let layout = &sim.blueprint.layout;
    let replica = |id: NodeId| sim.sim.actor(id).and_then(|a| a.as_replica());
    let record = sim.blueprint.server.record_views;
    for &id in &layout.oracle_replicas {
        let Some(r) = replica(id) else { continue };
        let o = r.dyna_oracle().expect("oracle replica");
        let map: BTreeMap<ObjectId, PartitionId> = o.locations().collect();
        if &map != owner {
            let wrong: Vec<String> = map
                .iter()
                .filter(|(k, v)| owner.get(k) != Some(v))
                .map(|(k, v)| format!("{k}@{v} (owner {:?})", owner.get(k)))
                .chain(
                    owner
                        .iter()
                        .filter(|(k, _)| !map.contains_key(k))
                        .map(|(k, v)| format!("{k} owned by {v}, unknown to the oracle")),
                )
                .take(8)
                .collect();
            problems.push(format!(
                "oracle {id} disagrees with the partitions: {wrong:?}"
            ));
        }
        if !record {
            continue;
        }
        for (p, members) in layout.partition_replicas.iter().enumerate() {
            let p = p as PartitionId;
            let mut expected: Events = BTreeMap::new();
            for (msg, obj, from, to) in o.views() {
                if *from == Some(p) {
                    expected.entry(*obj).or_default().push((*msg, false));
                }
                if *to == Some(p) {
                    expected.entry(*obj).or_default().push((*msg, true));
                }
            }
            for &pid in members {
                let Some(r) = replica(pid) else { continue };
                let s = r.dyna_partition().expect("partition replica");
                let mut seen: Events = BTreeMap::new();
                for (msg, obj, joined) in s.views() {
                    seen.entry(*obj).or_default().push((*msg, *joined));
                }
                if seen != expected {
                    let bad: Vec<String> = expected
                        .keys()
                        .chain(seen.keys())
                        .filter(|k| seen.get(k) != expected.get(k))
                        .take(4)
                        .map(|k| {
                            format!(
                                "object {k}: partition {:?}, oracle {:?}",
                                seen.get(k),
                                expected.get(k)
                            )
                        })
                        .collect();
                    problems.push(format!(
                        "partition {p} replica {pid} and oracle {id} disagree on ownership changes: {bad:?}"
                    ));
                }
            }
        }
    }
    problems
}
