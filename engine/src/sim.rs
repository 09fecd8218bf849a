//! Engine deployments in the deterministic simulator.
//!
//! [`EngineSim`] runs any deployment described by a [`Blueprint`]: which nodes are replicas
//! (in sets that must reach identical states), acceptors and clients, how to build a replica
//! (a [`ReplicaHost`] with the blueprint's core) and a client proxy ([`Proxy`]). The
//! blueprints of P-SMR and of S-SMR / DS-SMR deployments are [`crate::psmr::blueprint`] and
//! [`crate::partitioned::blueprint`].
//!
//! The simulator hosts what production hosts: every replica node runs the one
//! [`ReplicaHost`] through the same [`OnNode`] adapter the in-process and TCP runtimes drive,
//! with the production cores; only the P-SMR workers' driver differs (a seeded scheduler,
//! [`crate::psmr::scheduled`], instead of a thread per worker), so worker interleavings are
//! explored by seeds.
//!
//! [`SimClient`]s (hosting any [`Proxy`]) record a history: call time, command, and
//! completion time and result (or none, if the command was still outstanding at the end), for
//! the linearizability checker.

use crate::host::client::{ClientError, ClientHost, ClientStats, Completion, Driver, Proxy};
use crate::host::replica::{CheckpointStats, ReplicaCore};
use crate::host::{Host, OnNode, ReplicaHost};
use crate::wire::ClientId;
use groups::config::ClusterConfig;
use groups::ids::{LogId, NodeId};
use groups::log::storage::{MemStorage, Shared};
use groups::node::{default_log, GroupsNode, NodeOptions};
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use groups::sim::{Actor, NetFaults, Network, Sim};
use groups::NetMsg;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the simulator asks of a replica core besides driving it.
pub trait SimCore: ReplicaCore {
    /// Delivered commands not yet finished (waiting on something).
    fn backlog(&self) -> usize;
    /// Counters that are equal at every replica of a set once they have handled the same
    /// delivered commands (how [`EngineSim::quiet`] tells that a restarted replica caught up).
    fn progress(&self) -> Vec<u64>;
    /// A hash of the replicated state (`None` while it cannot be computed: a P-SMR shard
    /// lent in a multi-worker command).
    fn state_hash(&self) -> Option<u64>;
    /// Work done so far, for the simulator's cost model: commands handled and objects
    /// executed on (see [`Blueprint::work_costs`]). Default none.
    fn work_done(&self) -> [u64; 2] {
        [0, 0]
    }
    /// Work done so far per worker that runs in parallel with the others (a combined-mode
    /// partition's workers), written into `out` (cleared first): the cost model charges the
    /// busiest worker's work, not the sum, or queues each on a core of its own (see
    /// [`Blueprint::work_on_own_cores`]). Default one lane, [`SimCore::work_done`].
    fn work_lanes(&self, out: &mut Vec<[u64; 2]>) {
        out.clear();
        out.push(self.work_done());
    }
}

/// A host on a simulated node, and its node.
pub struct Hosted<H> {
    pub node: GroupsNode,
    pub app: OnNode<H>,
}

impl<H: Host> Hosted<H> {
    fn new(mut node: GroupsNode, host: H) -> Self {
        let mut app = OnNode::simulated(host);
        app.attach(&mut node, Waker::noop());
        Hosted { node, app }
    }

    fn pump(&mut self) {
        self.app.step(&mut self.node);
    }

    pub fn node(&self) -> &GroupsNode {
        &self.node
    }

    pub fn host(&self) -> &H {
        &self.app.host
    }
}

impl<H> std::ops::Deref for Hosted<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.app.host
    }
}

/// Charges a replica's work to the cost model, per lane (worker running in parallel): on
/// the node's thread the most any one lane did since the last step; on cores of their own,
/// each lane's queued on its core.
pub struct Meter {
    costs: [f64; 2],
    /// Each lane's work counters as last charged, and as read this step.
    charged: Vec<[u64; 2]>,
    lanes: Vec<[u64; 2]>,
    /// On cores of their own: per lane, when it is free again, and the work (in
    /// microseconds) of the step being charged.
    free_at: Vec<u64>,
    pending: Vec<f64>,
    own_cores: bool,
}

impl Meter {
    fn new(costs: [f64; 2], own_cores: bool) -> Self {
        Meter {
            costs,
            charged: Vec::new(),
            lanes: Vec::new(),
            free_at: Vec::new(),
            pending: Vec::new(),
            own_cores,
        }
    }

    /// The work done since the last call, per lane. On the node's thread, the busiest
    /// lane's is returned to block the node; on cores of their own it is kept for
    /// [`Meter::offloaded_until`] and the node is not blocked.
    fn charge(&mut self, core: &impl SimCore) -> f64 {
        core.work_lanes(&mut self.lanes);
        self.charge_lanes()
    }

    /// [`Meter::charge`] of the counters in `lanes`.
    fn charge_lanes(&mut self) -> f64 {
        self.charged.resize(self.lanes.len(), [0, 0]);
        self.pending.clear();
        for (done, charged) in self.lanes.iter().zip(&mut self.charged) {
            let d = [
                done[0].saturating_sub(charged[0]),
                done[1].saturating_sub(charged[1]),
            ];
            *charged = *done;
            self.pending
                .push(d[0] as f64 * self.costs[0] + d[1] as f64 * self.costs[1]);
        }
        if !self.own_cores {
            return self.pending.drain(..).fold(0.0, f64::max);
        }
        0.0
    }

    /// The lanes start the step's work when the node's handling ends at `end_us` (the
    /// commands are handed over then) or when they are free, whichever is later; the time
    /// the last of them is done.
    fn offloaded_until(&mut self, end_us: u64) -> Option<u64> {
        if !self.own_cores {
            return None;
        }
        self.free_at.resize(self.pending.len(), 0);
        let mut done = None;
        for (work, free) in self.pending.drain(..).zip(&mut self.free_at) {
            if work > 0.0 {
                *free = (*free).max(end_us) + work.round() as u64;
                done = done.max(Some(*free));
            }
        }
        done
    }
}

/// A simulated replica: the replica host with the blueprint's core.
pub type SimReplica<C> = Hosted<ReplicaHost<C>>;

/// The nodes of a simulated deployment, by role.
#[derive(Clone, Debug)]
pub struct Roles {
    pub config: ClusterConfig,
    /// Replicas in sets that must reach identical states (P-SMR: all replicas; scale-out: the
    /// replicas of each partition, and of the oracle).
    pub replica_sets: Vec<Vec<NodeId>>,
    pub acceptors: Vec<NodeId>,
    pub clients: Vec<NodeId>,
}

impl Roles {
    pub fn replicas(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replica_sets.iter().flatten().copied()
    }
    pub fn is_replica(&self, id: NodeId) -> bool {
        self.replicas().any(|r| r == id)
    }
    pub fn is_client(&self, id: NodeId) -> bool {
        self.clients.contains(&id)
    }
    /// Replicas and acceptors: the nodes a campaign may crash.
    pub fn crashable(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.replicas().collect();
        for a in &self.acceptors {
            if !v.contains(a) {
                v.push(*a);
            }
        }
        v
    }
}

/// What a simulated deployment is made of.
pub trait Blueprint: Send + Sync + 'static {
    type Core: SimCore;
    type Proxy: Proxy;
    fn roles(&self) -> &Roles;
    /// A (re)started replica for node `id`; `seed` differs per node and incarnation.
    fn replica(
        &self,
        id: NodeId,
        config: &Arc<ClusterConfig>,
        seed: u64,
    ) -> ReplicaHost<Self::Core>;
    /// A client proxy.
    fn proxy(&self, id: ClientId) -> Self::Proxy;
    /// CPU microseconds charged per command handled and per object executed on
    /// ([`SimCore::work_done`]), under the simulator's cost model. Default none.
    fn work_costs(&self) -> [f64; 2] {
        [0.0, 0.0]
    }
    /// Whether the replicas' work ([`SimCore::work_lanes`]) runs on cores other than the
    /// node's thread, one per lane: the cost model then does not block the node with it,
    /// queues it on its lane, and sends what the step produced when the lanes are done.
    /// Default `false`: the node's thread is charged the busiest lane's work.
    fn work_on_own_cores(&self) -> bool {
        false
    }
}

/// Produces the commands of a simulated client: `(rng, client index) -> command`.
pub type Workload<C> = Arc<dyn Fn(&mut ChaCha8Rng, usize) -> C + Send + Sync>;

/// One operation of a recorded history.
#[derive(Debug, Clone)]
pub struct Op<C, R> {
    pub client: ClientId,
    pub command: C,
    pub call_us: u64,
    /// Completion time and result; `None` if the command never completed.
    pub ret: Option<(u64, Result<R, ClientError>)>,
}

/// The operations of proxies `P`.
pub type OpOf<P> = Op<<P as Proxy>::Command, <P as Proxy>::Reply>;

/// The simulator's clients' driver: each client submits `ops_per_client` commands drawn
/// from the workload with a seeded RNG, pausing a random think time between submissions, and
/// every invocation and response is recorded with its virtual time.
pub struct SimDriver<C, R> {
    clients: Vec<ClientId>,
    budget: Vec<usize>,
    workload: Workload<C>,
    rng: ChaCha8Rng,
    /// Mean pause between a client's submissions, and when each client may submit next.
    think_us: u64,
    next_at: Vec<u64>,
    /// The command `next` returned, until it is submitted.
    drawn: Option<(C, u64)>,
    /// Per client, the history index of each outstanding command.
    open: Vec<BTreeMap<u64, usize>>,
    pub history: Vec<Op<C, R>>,
}

impl<C, R> SimDriver<C, R> {
    /// Whether every client submitted its whole budget.
    pub fn exhausted(&self) -> bool {
        self.budget.iter().all(|&b| b == 0)
    }
}

impl<C: Clone + Send + 'static, R: Send + 'static> Driver<C, R> for SimDriver<C, R> {
    fn next(&mut self, client: usize, now_us: u64) -> Option<C> {
        if self.budget[client] == 0 || now_us < self.next_at[client] {
            return None;
        }
        self.budget[client] -= 1;
        if self.think_us > 0 {
            self.next_at[client] = now_us + self.rng.random_range(0..2 * self.think_us);
        }
        let cmd = (self.workload)(&mut self.rng, client);
        self.drawn = Some((cmd.clone(), now_us));
        Some(cmd)
    }

    fn submitted(&mut self, client: usize, seq: u64, _now_us: u64) {
        let Some((command, call_us)) = self.drawn.take() else {
            return;
        };
        self.open[client].insert(seq, self.history.len());
        self.history.push(Op {
            client: self.clients[client],
            command,
            call_us,
            ret: None,
        });
    }

    fn complete(&mut self, client: usize, done: Completion<C, R>, latency: Duration) {
        if let Some(op) = self.open[client].remove(&done.seq) {
            let op = &mut self.history[op];
            op.ret = Some((op.call_us + latency.as_micros() as u64, done.result));
        }
    }
}

/// A simulated client node: the client host with the recording driver.
pub type SimClient<P> =
    Hosted<ClientHost<P, SimDriver<<P as Proxy>::Command, <P as Proxy>::Reply>>>;

impl<P: Proxy> SimClient<P> {
    /// Whether every client submitted its workload and got every answer.
    pub fn done(&self) -> bool {
        self.driver.exhausted() && self.outstanding() == 0
    }
}

/// A node of a simulated deployment.
pub enum SimNode<B: Blueprint> {
    Replica(Box<SimReplica<B::Core>>, Meter),
    Client(Box<SimClient<B::Proxy>>),
    Acceptor(Box<GroupsNode>),
}

impl<B: Blueprint> SimNode<B> {
    /// The node's `groups` node.
    pub fn node(&self) -> &GroupsNode {
        match self {
            SimNode::Replica(r, _) => &r.node,
            SimNode::Client(c) => &c.node,
            SimNode::Acceptor(n) => n,
        }
    }
    fn node_mut(&mut self) -> &mut GroupsNode {
        match self {
            SimNode::Replica(r, _) => &mut r.node,
            SimNode::Client(c) => &mut c.node,
            SimNode::Acceptor(n) => n,
        }
    }
    fn pump(&mut self) {
        match self {
            SimNode::Replica(r, _) => r.pump(),
            SimNode::Client(c) => c.pump(),
            SimNode::Acceptor(_) => {}
        }
    }
    pub fn as_replica(&self) -> Option<&SimReplica<B::Core>> {
        match self {
            SimNode::Replica(r, _) => Some(r),
            _ => None,
        }
    }
    pub fn as_client(&self) -> Option<&SimClient<B::Proxy>> {
        match self {
            SimNode::Client(c) => Some(c),
            _ => None,
        }
    }
}

impl<B: Blueprint> Actor for SimNode<B> {
    type Msg = NetMsg;
    fn handle(&mut self, from: NodeId, msg: NetMsg) {
        self.node_mut().handle(from, msg);
        self.pump();
    }
    fn tick(&mut self) {
        self.node_mut().tick();
        self.pump();
    }
    fn take_outgoing(&mut self, out: &mut Vec<(NodeId, NetMsg)>) {
        self.node_mut().take_outgoing(out);
        // Self-addressed messages were handled inside; they may have produced work.
        self.pump();
        self.node_mut().take_outgoing(out);
    }
    fn reconnected(&mut self, peer: NodeId) {
        self.node_mut().reconnected(peer);
    }
    fn set_time(&mut self, now_us: u64) {
        match self {
            SimNode::Replica(r, _) => r.app.set_time_us(now_us),
            SimNode::Client(c) => c.app.set_time_us(now_us),
            SimNode::Acceptor(_) => {}
        }
    }
    fn msg_bytes(msg: &NetMsg) -> usize {
        groups::sim::wire_bytes(msg)
    }
    fn take_work_us(&mut self) -> f64 {
        match self {
            SimNode::Replica(r, m) => m.charge(&r.core),
            _ => 0.0,
        }
    }
    fn take_offloaded_until(&mut self, end_us: u64) -> Option<u64> {
        match self {
            SimNode::Replica(_, m) => m.offloaded_until(end_us),
            _ => None,
        }
    }
}

/// How a simulated deployment's clients run, and its network.
#[derive(Clone)]
pub struct SimSetup<C> {
    pub seed: u64,
    pub net: NetFaults,
    /// Logical clients per client node, their window, and commands each.
    pub clients_per_node: usize,
    pub window: usize,
    pub ops_per_client: usize,
    pub workload: Workload<C>,
    /// Mean pause between a client's submissions (0: none).
    pub think_us: u64,
}

/// A simulated deployment.
pub struct EngineSim<B: Blueprint> {
    pub sim: Sim<SimNode<B>>,
    pub blueprint: Arc<B>,
    setup: SimSetup<<B::Proxy as Proxy>::Command>,
    storages: BTreeMap<(NodeId, LogId), Shared<MemStorage>>,
}

impl<B: Blueprint> EngineSim<B> {
    pub fn new(blueprint: B, setup: SimSetup<<B::Proxy as Proxy>::Command>) -> Self {
        let cfg = Arc::new(blueprint.roles().config.clone());
        let mut storages = BTreeMap::new();
        for l in &cfg.logs {
            for &a in &l.acceptors {
                storages.insert((a, l.id), Shared::default());
            }
        }
        let mut sim = Sim::new(
            setup.seed,
            cfg.tuning.tick_us,
            Network::new(setup.net.clone()),
        );
        let mut s = EngineSim {
            sim: Sim::new(0, 1, Network::new(NetFaults::calm())),
            blueprint: Arc::new(blueprint),
            setup,
            storages,
        };
        for n in &cfg.nodes {
            sim.add(n.id, s.make(n.id, 0));
        }
        s.sim = sim;
        s
    }

    pub fn roles(&self) -> &Roles {
        self.blueprint.roles()
    }

    fn make(&self, id: NodeId, incarnation: u32) -> SimNode<B> {
        let roles = self.blueprint.roles();
        let cfg = Arc::new(roles.config.clone());
        let seed = self.setup.seed ^ (u64::from(id.0) << 32) ^ u64::from(incarnation);
        let replica = roles
            .is_replica(id)
            .then(|| self.blueprint.replica(id, &cfg, seed));
        let opts = NodeOptions {
            epoch: incarnation,
            merge_locally: !replica.as_ref().is_some_and(Host::reads_entries),
            incarnation: u64::from(incarnation),
            recover: false,
        };
        let storages = &self.storages;
        let c = cfg.clone();
        let node = GroupsNode::new(cfg, id, opts, |lc| {
            default_log(
                &c,
                lc,
                id,
                u64::from(incarnation),
                storages[&(id, lc.id)].clone(),
            )
        });
        if let Some(host) = replica {
            let meter = Meter::new(
                self.blueprint.work_costs(),
                self.blueprint.work_on_own_cores(),
            );
            SimNode::Replica(Box::new(Hosted::new(node, host)), meter)
        } else if roles.is_client(id) {
            assert_eq!(incarnation, 0, "simulated clients do not restart");
            let n = self.setup.clients_per_node;
            let proxies: Vec<B::Proxy> = (0..n)
                .map(|i| self.blueprint.proxy(ClientId::new(id, i as u32)))
                .collect();
            let driver = SimDriver {
                clients: proxies.iter().map(Proxy::id).collect(),
                budget: vec![self.setup.ops_per_client; n],
                workload: self.setup.workload.clone(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                think_us: self.setup.think_us,
                next_at: vec![0; n],
                drawn: None,
                open: vec![BTreeMap::new(); n],
                history: Vec::new(),
            };
            let host = ClientHost::new(proxies, self.setup.window, driver);
            SimNode::Client(Box::new(Hosted::new(node, host)))
        } else {
            SimNode::Acceptor(Box::new(node))
        }
    }

    /// Crashes a node; a replica's state is lost (it replays the logs when restarted).
    pub fn crash(&mut self, id: NodeId) {
        assert!(
            !self.roles().is_client(id),
            "simulated clients do not crash"
        );
        self.sim.crash(id);
    }

    pub fn restart(&mut self, id: NodeId) {
        if self.sim.is_up(id) {
            return;
        }
        let fresh = self.make(id, self.sim.incarnation(id) + 1);
        self.sim.restart(id, |_| fresh);
    }

    pub fn run_until(&mut self, until_us: u64) {
        self.sim.run_until(until_us, |_, _| {});
    }

    /// Turns on the simulator's cost model (performance experiments): every node handles its
    /// messages one at a time, each taking virtual CPU time. Client nodes are free.
    pub fn set_cpu_model(&mut self, mut model: groups::sim::CpuModel) {
        model.free.extend(self.roles().clients.iter().copied());
        self.sim.set_cpu_model(model);
    }

    /// The live replicas, with their node ids.
    pub fn replicas(&self) -> impl Iterator<Item = (NodeId, &SimReplica<B::Core>)> + '_ {
        self.roles().replicas().filter_map(|r| {
            self.sim
                .actor(r)
                .and_then(SimNode::as_replica)
                .map(|x| (r, x))
        })
    }

    /// Whether every client finished its workload and the live replicas converged: nothing
    /// waits in their queues and the replicas of each set report the same progress (a
    /// restarted replica replaying the logs is not done before that).
    pub fn quiet(&self) -> bool {
        let clients_done = self.roles().clients.iter().all(|c| {
            self.sim
                .actor(*c)
                .and_then(SimNode::as_client)
                .is_some_and(SimClient::done)
        });
        clients_done
            && self.replicas().all(|(_, r)| r.core.backlog() == 0)
            && self.roles().replica_sets.iter().all(|set| {
                let progress: Vec<Vec<u64>> = set
                    .iter()
                    .filter_map(|r| self.sim.actor(*r).and_then(SimNode::as_replica))
                    .map(|r| r.core.progress())
                    .collect();
                progress.windows(2).all(|w| w[0] == w[1])
            })
    }

    /// Runs until [`EngineSim::quiet`] or `max_us` more virtual time.
    pub fn run_until_quiet(&mut self, max_us: u64) -> bool {
        let deadline = self.sim.now_us() + max_us;
        while !self.quiet() {
            if self.sim.now_us() >= deadline {
                return false;
            }
            let next = (self.sim.now_us() + 10_000).min(deadline);
            self.run_until(next);
        }
        true
    }

    /// Every client's history, in one list.
    pub fn history(&self) -> Vec<OpOf<B::Proxy>> {
        self.roles()
            .clients
            .iter()
            .filter_map(|c| self.sim.actor(*c).and_then(SimNode::as_client))
            .flat_map(|c| c.driver.history.iter().cloned())
            .collect()
    }

    /// State hashes of the live replicas.
    pub fn replica_hashes(&self) -> Vec<(NodeId, Option<u64>)> {
        self.replicas()
            .map(|(r, x)| (r, x.core.state_hash()))
            .collect()
    }

    /// A description of the replica sets whose live replicas' states differ, if any.
    pub fn divergence(&self) -> Option<String> {
        let bad: Vec<String> = self
            .roles()
            .replica_sets
            .iter()
            .filter_map(|set| {
                let hashes: Vec<(NodeId, Option<u64>)> = set
                    .iter()
                    .filter_map(|r| {
                        self.sim
                            .actor(*r)
                            .and_then(SimNode::as_replica)
                            .map(|x| (*r, x.core.state_hash()))
                    })
                    .collect();
                hashes
                    .windows(2)
                    .any(|w| w[0].1 != w[1].1)
                    .then(|| format!("{hashes:?}"))
            })
            .collect();
        (!bad.is_empty()).then(|| format!("replicas diverged: {}", bad.join("; ")))
    }

    /// What the checks every simulated run ends with find: live replicas of a set in
    /// different states, clients that saw two replicas disagree on a state hash, and a history
    /// that `model` does not explain (within `budget`). One line per problem; liveness (a run
    /// that did not get quiet) is the caller's to judge.
    pub fn outcome_problems<M>(&self, model: &M, budget: crate::lincheck::Budget) -> Vec<String>
    where
        M: crate::lincheck::Model<
            Input = <B::Proxy as Proxy>::Command,
            Output = <B::Proxy as Proxy>::Reply,
        >,
        <B::Proxy as Proxy>::Reply: Clone,
    {
        let mut problems: Vec<String> = self.divergence().into_iter().collect();
        let divergences = self.client_stats().divergences;
        if divergences > 0 {
            problems.push(format!(
                "{divergences} state-hash disagreements seen by clients"
            ));
        }
        let history = lincheck_history(&self.history());
        match crate::lincheck::check(model, &history, budget) {
            crate::lincheck::Verdict::Linearizable => {}
            v => problems.push(format!("not linearizable: {v}")),
        }
        problems
    }

    /// Client counters summed over all client nodes.
    pub fn client_stats(&self) -> ClientStats {
        let mut s = ClientStats::default();
        for c in &self.roles().clients {
            if let Some(x) = self.sim.actor(*c).and_then(SimNode::as_client) {
                s += &x.stats();
            }
        }
        s
    }
}

/// How hard a fault campaign hits.
#[derive(Clone, Debug)]
pub struct Campaign {
    /// Faults happen during `[0, fault_phase_us)`; then the network heals, every node is
    /// restarted, and the run must get quiet within `settle_us`.
    pub fault_phase_us: u64,
    pub settle_us: u64,
    /// Crashes of replicas or acceptors (never more than `f` down at a time), most restarted.
    pub crashes_max: usize,
    /// Symmetric partitions or one-way cuts.
    pub partitions_max: usize,
    /// Pauses of a replica or acceptor (SIGSTOP, then SIGCONT after 20-400 ms: it keeps its
    /// state, stays silent, and finds a backlog and an outdated view when it resumes).
    pub pauses_max: usize,
    /// Deposed leaders: whoever leads a random log at that moment is paused for 50-400 ms
    /// (the others elect a new leader; it resumes believing it still leads).
    pub deposes_max: usize,
}

impl Default for Campaign {
    fn default() -> Self {
        Campaign {
            fault_phase_us: 1_200_000,
            settle_us: 30_000_000,
            crashes_max: 3,
            partitions_max: 2,
            pauses_max: 2,
            deposes_max: 0,
        }
    }
}

/// A random lossy, duplicating, reordering network.
pub fn faulty_network(rng: &mut ChaCha8Rng) -> NetFaults {
    NetFaults {
        latency_us: (50, rng.random_range(100..=500)),
        spike_prob: rng.random_range(0.0..0.1),
        spike_us: rng.random_range(1000..=5000),
        loss: rng.random_range(0.0..0.03),
        dup: rng.random_range(0.0..0.03),
    }
}

/// What a campaign did.
#[derive(Clone, Debug, Default)]
pub struct CampaignReport {
    pub quiet: bool,
    pub crashes: usize,
    pub partitions: usize,
    pub pauses: usize,
    /// Leaders paused while they led (see [`Campaign::deposes_max`]).
    pub deposed: usize,
    pub events: Vec<String>,
}

impl CampaignReport {
    /// The faults in a few words, for a campaign's summary line.
    pub fn faults(&self) -> String {
        format!(
            "{} crashes, {} partitions, {} pauses ({} deposed leaders)",
            self.crashes, self.partitions, self.pauses, self.deposed
        )
    }
}

impl<B: Blueprint> EngineSim<B> {
    /// Runs a fault campaign drawn from `seed` on this deployment (with `f` = 1: one replica
    /// or acceptor down at a time), then heals, restarts everything and settles.
    pub fn campaign(&mut self, seed: u64, c: &Campaign) -> CampaignReport {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17);
        let crashable = self.roles().crashable();
        let all: Vec<NodeId> = self.roles().config.nodes.iter().map(|n| n.id).collect();
        enum Ev {
            Crash(NodeId),
            Restart(NodeId),
            Cut(Vec<NodeId>, Vec<NodeId>),
            OneWay(NodeId, NodeId),
            Heal,
            Pause(NodeId),
            Resume(NodeId),
            Depose(LogId, u64),
        }
        let mut plan: Vec<(u64, Ev)> = Vec::new();
        // Crashes never overlap (f = 1).
        let mut free_at = 0;
        for _ in 0..rng.random_range(0..=c.crashes_max) {
            let at = rng.random_range(free_at..c.fault_phase_us.max(free_at + 1));
            let down = rng.random_range(30_000..=300_000);
            let victim = crashable[rng.random_range(0..crashable.len())];
            plan.push((at, Ev::Crash(victim)));
            plan.push((at + down, Ev::Restart(victim)));
            free_at = at + down + 1;
            if free_at >= c.fault_phase_us {
                break;
            }
        }
        for _ in 0..rng.random_range(0..=c.partitions_max) {
            let at = rng.random_range(0..c.fault_phase_us);
            let until = (at + rng.random_range(30_000..=250_000)).min(c.fault_phase_us);
            plan.push((
                at,
                match groups::sim::Cut::draw(&mut rng, &all) {
                    groups::sim::Cut::Partition(a, b) => Ev::Cut(a, b),
                    groups::sim::Cut::OneWay(x, y) => Ev::OneWay(x, y),
                },
            ));
            plan.push((until, Ev::Heal));
        }
        // Pauses are drawn from their own stream, so adding them left the crash and partition
        // plans of earlier seeds as they were.
        let mut prng = ChaCha8Rng::seed_from_u64(seed ^ 0x0051_570b);
        for _ in 0..prng.random_range(0..=c.pauses_max) {
            let at = prng.random_range(0..c.fault_phase_us);
            let until = at + prng.random_range(20_000..=400_000);
            let victim = crashable[prng.random_range(0..crashable.len())];
            plan.push((at, Ev::Pause(victim)));
            plan.push((until.min(c.fault_phase_us), Ev::Resume(victim)));
        }
        // Deposed leaders, from a stream of their own too.
        let mut drng = ChaCha8Rng::seed_from_u64(seed ^ 0xde90_5ed1);
        let logs: Vec<LogId> = self.roles().config.logs.iter().map(|l| l.id).collect();
        for _ in 0..drng.random_range(0..=c.deposes_max) {
            let at = drng.random_range(0..c.fault_phase_us);
            let until = (at + drng.random_range(50_000..=400_000)).min(c.fault_phase_us);
            let log = logs[drng.random_range(0..logs.len())];
            plan.push((at, Ev::Depose(log, until)));
        }
        // A stable sort: a pause and its resume at the same time stay in that order.
        plan.sort_by_key(|(t, _)| *t);
        let mut report = CampaignReport::default();
        // Deposed leaders to resume: (when, who), in time order.
        let mut deposed: Vec<(u64, NodeId)> = Vec::new();
        for (at, ev) in plan {
            while deposed.first().is_some_and(|&(t, _)| t <= at) {
                let (t, l) = deposed.remove(0);
                self.run_until(t);
                if self.sim.resume(l) {
                    report.events.push(format!("t={t}us resume {l}"));
                }
            }
            self.run_until(at);

            match ev {
                Ev::Crash(n) => {
                    report.crashes += 1;
                    report.events.push(format!("t={at}us crash {n}"));
                    self.crash(n);
                }
                Ev::Restart(n) => {
                    report.events.push(format!("t={at}us restart {n}"));
                    self.restart(n);
                }
                Ev::Cut(a, b) => {
                    report.partitions += 1;
                    report
                        .events
                        .push(format!("t={at}us partition {a:?} | {b:?}"));
                    self.sim.net.partition(&a, &b);
                }
                Ev::OneWay(a, b) => {
                    report.partitions += 1;
                    report.events.push(format!("t={at}us cut {a} -> {b}"));
                    self.sim.net.cut_one_way(a, b);
                }
                Ev::Heal => {
                    report.events.push(format!("t={at}us heal"));
                    self.sim.net.heal_all();
                    self.sim.reconnect_all();
                }
                Ev::Pause(n) => {
                    // A node that is down (or already paused) is left alone.
                    if self.sim.pause(n) {
                        report.pauses += 1;
                        report.events.push(format!("t={at}us pause {n}"));
                    }
                }
                Ev::Resume(n) => {
                    if self.sim.resume(n) {
                        report.events.push(format!("t={at}us resume {n}"));
                    }
                }
                Ev::Depose(log, until) => {
                    let leader = self
                        .sim
                        .up_nodes()
                        .into_iter()
                        .find(|&n| self.sim.actor(n).is_some_and(|a| a.node().leads(log)));
                    if let Some(l) = leader.filter(|&l| self.sim.pause(l)) {
                        report.pauses += 1;
                        report.deposed += 1;
                        report.events.push(format!(
                            "t={at}us depose {l}, leader of {log}, until {until}us"
                        ));
                        deposed.push((until, l));
                        deposed.sort_unstable();
                    }
                }
            }
        }
        for (t, l) in deposed {
            self.run_until(t);
            self.sim.resume(l);
        }
        self.run_until(c.fault_phase_us);
        for n in self.sim.nodes().collect::<Vec<_>>() {
            self.sim.resume(n);
        }
        self.sim.net.heal_all();
        self.sim.net.faults = NetFaults::calm();
        for n in crashable {
            self.restart(n);
        }
        self.sim.reconnect_all();
        report.quiet = self.run_until_quiet(c.settle_us);
        report
    }
}

impl<C> SimSetup<C> {
    /// The simulated campaigns' clients: 2 per client node, each with a window of 2, running
    /// `ops_per_client` commands of `workload` with `think_us` between submissions.
    pub fn two_by_two(
        seed: u64,
        net: NetFaults,
        ops_per_client: usize,
        think_us: u64,
        workload: Workload<C>,
    ) -> Self {
        SimSetup {
            seed,
            net,
            clients_per_node: 2,
            window: 2,
            ops_per_client,
            workload,
            think_us,
        }
    }
}

/// The simulated campaigns' checkpoints: one asked for every `every_commands` commands, or
/// every 100 ticks if any command ran, asked again (and a transfer retried) after 50 ticks.
pub fn checkpoint_every(every_commands: u64) -> crate::checkpoint::CheckpointPolicy {
    crate::checkpoint::CheckpointPolicy {
        every_commands,
        every_ticks: 100,
        resend_ticks: 50,
    }
}

/// A simulated run's verdict: `Ok(summary())` when the checks found no problem, else the
/// problems, one a line, under `label()` (what the seed drew).
pub fn verdict<T>(
    problems: Vec<String>,
    label: impl FnOnce() -> String,
    summary: impl FnOnce() -> T,
) -> Result<T, String> {
    if problems.is_empty() {
        Ok(summary())
    } else {
        Err(format!("{}:\n  {}", label(), problems.join("\n  ")))
    }
}

/// What [`EngineSim::isolate_until_trimmed`] left behind.
#[derive(Clone, Debug)]
pub struct Isolation {
    /// Per log of the victim, the first entry it had not received when it was taken away.
    pub held: Vec<(LogId, u64)>,
    /// When every acceptor had trimmed those logs past it.
    pub trimmed_by_us: u64,
}

impl<B: Blueprint> EngineSim<B> {
    /// Runs the default fault campaign drawn from `seed` ([`EngineSim::campaign`]), printing
    /// its events after `label` (what the seed drew) when `verbose`: its report, and the
    /// problems found so far (the run did not get quiet after the faults stopped).
    pub fn default_campaign(
        &mut self,
        seed: u64,
        verbose: bool,
        label: &str,
    ) -> (CampaignReport, Vec<String>) {
        self.judged_campaign(seed, &Campaign::default(), verbose, label)
    }

    /// Like [`EngineSim::default_campaign`], with the faults of `campaign` (deposed leaders,
    /// say).
    pub fn judged_campaign(
        &mut self,
        seed: u64,
        campaign: &Campaign,
        verbose: bool,
        label: &str,
    ) -> (CampaignReport, Vec<String>) {
        let report = self.campaign(seed, campaign);
        if verbose {
            eprintln!("seed {seed}: {label}, {:?}", report.events);
        }
        let mut problems = Vec::new();
        if !report.quiet {
            problems.push("liveness: not quiet after the faults stopped".to_string());
        }
        (report, problems)
    }

    /// The recovery campaigns' scenario, first half: at `at_us` the replica `victim` is
    /// crashed (`crash`) or cut off from every other node, and the run goes on (the clients
    /// keep loading) until every live acceptor of each of `logs` has trimmed it past what the
    /// victim had received. An error if that takes more than `patience_us`. `verbose` prints
    /// what happened after `label` (what the seed drew), or every replica's checkpoints and
    /// node on an error.
    #[allow(clippy::too_many_arguments)]
    pub fn isolate_until_trimmed(
        &mut self,
        victim: NodeId,
        logs: &[LogId],
        crash: bool,
        at_us: u64,
        patience_us: u64,
        verbose: bool,
        label: &str,
    ) -> Result<Isolation, String> {
        self.run_until(at_us);
        let held: Vec<(LogId, u64)> = {
            let (_, x) = self
                .replicas()
                .find(|(r, _)| *r == victim)
                .ok_or("victim not up")?;
            logs.iter()
                .map(|&l| (l, x.node().feed_next(l).unwrap_or(0)))
                .collect()
        };
        let others: Vec<NodeId> = self
            .roles()
            .config
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&n| n != victim)
            .collect();
        if crash {
            self.crash(victim);
        } else {
            self.sim.net.partition(&[victim], &others);
        }
        let trimmed_past = |sim: &Self| {
            held.iter().all(|&(l, next)| {
                let acceptors = &sim.roles().config.log(l).expect("a log").acceptors;
                sim.replicas()
                    .filter(|(r, _)| acceptors.contains(r))
                    .all(|(_, x)| x.node().first_idx(l).is_some_and(|f| f > next))
            })
        };
        let mut t = at_us;
        while !trimmed_past(self) {
            t += 10_000;
            if t > at_us + patience_us {
                let firsts: Vec<_> = self
                    .replicas()
                    .map(|(r, x)| {
                        (
                            r,
                            logs.iter()
                                .map(|&l| x.node().first_idx(l))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                if verbose {
                    for (r, x) in self.replicas() {
                        eprintln!("{r}: {:?}\n{}", x.checkpoint_stats(), x.node().describe());
                    }
                }
                return Err(format!(
                    "logs not trimmed past the victim {victim} (held {held:?}) {} s after the crash: first indexes {firsts:?}",
                    patience_us as f64 / 1e6
                ));
            }
            self.run_until(t);
        }
        if verbose {
            let what = if crash { "crashed" } else { "cut off" };
            eprintln!("{label}, victim {victim} {what} at {at_us} us holding {held:?}, trimmed past by {t} us");
        }
        Ok(Isolation {
            held,
            trimmed_by_us: t,
        })
    }

    /// The recovery scenario's second half: the victim restarts empty (`crash`) or the
    /// network heals, and the run goes on until quiet, for at most `settle_us`. The problems
    /// found (the run did not get quiet).
    pub fn rejoin(&mut self, victim: NodeId, crash: bool, settle_us: u64) -> Vec<String> {
        if crash {
            self.restart(victim);
        } else {
            self.sim.net.heal_all();
            self.sim.reconnect_all();
        }
        if self.run_until_quiet(settle_us) {
            Vec::new()
        } else {
            vec!["liveness: not quiet after the restart".to_string()]
        }
    }

    /// The checks a recovery run ends with: the victim installed a checkpoint by state
    /// transfer, every replica holds one, every replica is up and every command completed.
    /// The problems, and the victim's checkpoint counters.
    pub fn recovery_problems(&self, victim: NodeId) -> (Vec<String>, CheckpointStats) {
        let mut problems = Vec::new();
        let stats: Vec<(NodeId, CheckpointStats)> = self
            .replicas()
            .map(|(r, x)| (r, x.checkpoint_stats()))
            .collect();
        let victim_stats = match stats.iter().find(|(r, _)| *r == victim) {
            Some((_, s)) if s.installed >= 1 => s.clone(),
            other => {
                problems.push(format!(
                    "the victim did not recover by state transfer: {other:?}"
                ));
                CheckpointStats::default()
            }
        };
        if stats.iter().any(|(_, s)| s.taken == 0) {
            problems.push(format!("a replica holds no checkpoint: {stats:?}"));
        }
        if self.replicas().count() != self.roles().replicas().count() {
            problems.push("a replica is down at the end".into());
        }
        if self.history().iter().any(|o| o.ret.is_none()) {
            problems.push("a command never completed".into());
        }
        (problems, victim_stats)
    }
}

/// A recorded history as the linearizability checker's operations (a command that never
/// completed, or failed, has an unknown outcome: it may or may not have taken effect).
pub fn lincheck_history<C: Clone, R: Clone>(
    ops: &[Op<C, R>],
) -> Vec<crate::lincheck::Operation<C, R>> {
    ops.iter()
        .map(|op| match &op.ret {
            Some((t, Ok(r))) => crate::lincheck::Operation::completed(
                op.client.0,
                op.command.clone(),
                op.call_us,
                *t,
                r.clone(),
            ),
            _ => crate::lincheck::Operation::unknown(op.client.0, op.command.clone(), op.call_us),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Meter;

    #[test]
    fn a_meter_charges_the_busiest_lane_or_queues_each_on_its_own_core() {
        // 10 us per command, 1 us per object.
        let mut m = Meter::new([10.0, 1.0], false);
        m.lanes = vec![[1, 0], [3, 5]];
        assert_eq!(m.charge_lanes(), 35.0, "the busiest lane blocks the node");
        assert_eq!(m.offloaded_until(100), None);
        m.lanes = vec![[1, 0], [3, 5]];
        assert_eq!(m.charge_lanes(), 0.0, "only what was done since");

        let mut m = Meter::new([10.0, 1.0], true);
        m.lanes = vec![[2, 0], [0, 0]];
        assert_eq!(m.charge_lanes(), 0.0, "the node is not blocked");
        assert_eq!(
            m.offloaded_until(100),
            Some(120),
            "lane 0 starts when the node hands over"
        );
        m.lanes = vec![[3, 0], [1, 0]];
        m.charge_lanes();
        assert_eq!(
            m.offloaded_until(105),
            Some(130),
            "lane 0 queues behind its own work (free at 120), lane 1 starts at once (115)"
        );
        m.lanes = vec![[3, 0], [1, 0]];
        m.charge_lanes();
        assert_eq!(m.offloaded_until(200), None, "no work, nothing to wait for");
    }
}
