//! Engine deployments in the deterministic simulator.
//!
//! [`EngineSim`] runs any deployment described by a [`Blueprint`]: which nodes are replicas
//! (in sets that must reach identical states), acceptors and clients, how to build a replica
//! ([`SimRole`]) and a client proxy ([`Proxy`]). [`Psmr`] is the blueprint of P-SMR and
//! opt-PSMR deployments; the scale-out blueprints live in [`crate::partitioned::sim`].
//!
//! [`SimReplica`] runs a replica's workers without threads: each worker merges its own logs
//! into its own queue exactly as a threaded worker does, and a seeded scheduler repeatedly
//! picks one worker that can proceed: one whose next command involves only itself, or whose
//! next command is a multi-worker command that every involved worker has reached (the
//! rendezvous). Different replicas draw different interleavings, as threads would; if the
//! service's command map let dependent commands run in parallel, replicas would end in
//! different states, which the tests compare. The execution code is the same as the threaded
//! replica's ([`Executor`]).
//!
//! [`SimClient`]s (hosting any [`Proxy`]) record a history: call time, command, and completion time and result (or
//! none, if the command was still outstanding at the end), for the linearizability checker.

use crate::checkpoint::{
    self, Assembly, Checkpoint, CheckpointPolicy, Recovery, Store, Transfer, Trigger, WorkerPart,
};
use crate::client::{ClientError, ClientProxy, ClientStats, Mode, Proxy};
use crate::layout::Deployment;
use crate::psmr::core::{ExecOptions, Executor, Job, WorkerState, WorkerStats};
use crate::service::Service;
use crate::wire::{self, ClientId};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::ids::{LogId, NodeId};
use groups::log::storage::{MemStorage, Shared};
use groups::merge::{Merger, MergerState};
use groups::node::{default_log, GroupsNode, LogEntries, NodeOptions};
use groups::sim::{Actor, NetFaults, Network, Sim};
use groups::NetMsg;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A replica whose workers are scheduled by a seeded RNG.
pub struct SimReplica<S: Service> {
    node: GroupsNode,
    executor: Executor<S>,
    mergers: Vec<Merger>,
    readers: BTreeMap<LogId, Vec<usize>>,
    queues: Vec<VecDeque<Job<S::Command>>>,
    shards: Vec<S::Shard>,
    states: Vec<WorkerState<S>>,
    rng: ChaCha8Rng,
    entries: Vec<LogEntries>,
    /// Checkpoints and state transfer ([`crate::checkpoint`]).
    ckpt: SimCheckpoints,
}

/// A simulated replica's checkpoint machinery.
struct SimCheckpoints {
    subs: Vec<groups::GroupSet>,
    all_groups: groups::GroupSet,
    /// Asking for checkpoints (`None`: this replica never asks, but still takes part in the
    /// rounds others ask for, and answers and asks for transfers).
    trigger: Option<Trigger>,
    /// Per worker, its merger's position at each checkpoint request still in its queue.
    marks: Vec<VecDeque<MergerState>>,
    assembly: Assembly,
    store: Store,
    recovery: Option<Recovery>,
    resend_ticks: u64,
    /// Commands this incarnation ran (not replicated: the trigger's count).
    executed: u64,
    stats: CheckpointStats,
    app_in: Vec<(NodeId, Bytes)>,
    app_out: Vec<(NodeId, Bytes)>,
}

/// What a replica's checkpointing did (this incarnation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints completed here (taken, or installed by a transfer).
    pub taken: u64,
    /// Checkpoints installed from a peer (state transfers).
    pub installed: u64,
    /// The latest checkpoint's round and size in bytes.
    pub round: u64,
    pub bytes: u64,
    /// Checkpoints received that could not be installed.
    pub refused: u64,
}

impl<S: Service> SimReplica<S> {
    fn new(
        node: GroupsNode,
        service: Arc<S>,
        workers: usize,
        exec: ExecOptions,
        seed: u64,
        checkpoints: Option<CheckpointPolicy>,
    ) -> Self {
        let cfg = node.config().clone();
        let me = node.id();
        let subs = cfg
            .node(me)
            .expect("replica in config")
            .subscriptions
            .clone();
        assert_eq!(subs.len(), workers);
        let mut readers: BTreeMap<LogId, Vec<usize>> = BTreeMap::new();
        let mergers = subs
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let logs = cfg.logs_for(g);
                for &l in &logs {
                    readers.entry(l).or_default().push(i);
                }
                Merger::new(&logs, g.clone(), cfg.tuning.merge_m)
            })
            .collect();
        let resend_ticks = checkpoints.map_or(500, |p| p.resend_ticks);
        let ckpt = SimCheckpoints {
            all_groups: subs.iter().flat_map(|g| g.iter()).collect(),
            subs: subs.clone(),
            trigger: checkpoints.map(Trigger::new),
            marks: (0..workers).map(|_| VecDeque::new()).collect(),
            assembly: Assembly::default(),
            store: Store::default(),
            recovery: None,
            resend_ticks,
            executed: 0,
            stats: CheckpointStats::default(),
            app_in: Vec::new(),
            app_out: Vec::new(),
        };
        let mut node = node;
        if checkpoints.is_some() {
            // A replica that checkpoints says so from the start (its initial state is a
            // checkpoint at position 0), so the acceptors hold it to the checkpoint rule, not
            // the received-position rule, even before its first checkpoint.
            let start: Vec<(LogId, u64)> = cfg.logs.iter().map(|l| (l.id, 0)).collect();
            node.set_checkpointed(&start);
        }
        SimReplica {
            ckpt,
            executor: Executor::new(service.clone(), workers, me, exec),
            shards: service.shards(workers),
            states: (0..workers).map(WorkerState::new).collect(),
            queues: (0..workers).map(|_| VecDeque::new()).collect(),
            mergers,
            readers,
            node,
            rng: ChaCha8Rng::seed_from_u64(seed),
            entries: Vec::new(),
        }
    }

    /// Feeds decided entries to the workers' merges and runs every command that can run.
    fn pump(&mut self) {
        self.node.take_entries(&mut self.entries);

        let mut delivered = Vec::new();
        for e in self.entries.drain(..) {
            for &w in self.readers.get(&e.log).map(Vec::as_slice).unwrap_or(&[]) {
                self.mergers[w]
                    .push(e.log, e.start, &e.entries)
                    .expect("contiguous entries");
            }
        }
        let k = self.mergers.len();
        for (w, m) in self.mergers.iter_mut().enumerate() {
            loop {
                let stopped = m.poll_until(&mut delivered, |msg| checkpoint::is_request(msg, k));
                for d in delivered.drain(..) {
                    if let Some(job) = self.executor.decode(&d) {
                        self.queues[w].push_back(job);
                    }
                }
                if !stopped {
                    break;
                }
                self.ckpt.marks[w].push_back(m.state());
            }
        }
        loop {
            let runnable: Vec<usize> = (0..self.queues.len())
                .filter(|&w| self.can_run(w))
                .collect();
            if runnable.is_empty() {
                break;
            }
            let w = runnable[self.rng.random_range(0..runnable.len())];
            self.run_head(w);
        }
        for m in &self.mergers {
            if let Some(need) = m.blocked_on() {
                self.node.request_skip(need);
            }
        }
        self.pump_checkpoints();
    }

    /// Asks for checkpoints when due, answers peers' transfer requests, and recovers by state
    /// transfer when a log was trimmed past this replica.
    fn pump_checkpoints(&mut self) {
        let now = self.node.now();
        let latest = self.ckpt.store.latest().map_or(0, |(r, _)| r);
        let executed = self.ckpt.executed;
        let round = self
            .ckpt
            .trigger
            .as_mut()
            .and_then(|t| t.poll(latest, executed, now));
        if let (Some(round), None) = (round, &self.ckpt.recovery) {
            let _ = self.node.multicast(
                self.ckpt.all_groups.clone(),
                checkpoint::request_payload(round),
            );
        }
        let mut events = Vec::new();
        self.node.take_events(&mut events);
        if !events.is_empty() && self.ckpt.recovery.is_none() {
            let peers = checkpoint::peers_of(self.node.config(), self.node.id());
            self.ckpt.recovery = Some(Recovery::start(
                peers,
                self.ckpt.resend_ticks,
                now,
                &mut self.ckpt.app_out,
            ));
        }
        self.node.take_app(&mut self.ckpt.app_in);
        let inbox = std::mem::take(&mut self.ckpt.app_in);
        for (from, bytes) in inbox {
            let Ok(msg) = Transfer::decode(&bytes) else {
                continue;
            };
            match msg {
                Transfer::Get { round, offset } => {
                    let answer = self.ckpt.store.answer(round, offset);
                    self.ckpt.app_out.push((from, answer.encode()));
                }
                other => {
                    let Some(r) = self.ckpt.recovery.as_mut() else {
                        continue;
                    };
                    if let Some(whole) = r.on_message(from, other, now, &mut self.ckpt.app_out) {
                        self.install(whole);
                    }
                }
            }
        }
        if let Some(r) = self.ckpt.recovery.as_mut() {
            r.tick(now, &mut self.ckpt.app_out);
        }
        for (to, bytes) in self.ckpt.app_out.drain(..) {
            self.node.send_app(to, bytes);
        }
    }

    /// Installs a checkpoint received from a peer: every worker's shard, table, counters and
    /// merger; the feeds restart at the checkpoint's positions.
    fn install(&mut self, bytes: Bytes) {
        let cfg = self.node.config().clone();
        let restored = Checkpoint::decode(&bytes).and_then(|c| {
            checkpoint::restore(&*self.executor.service, &c, &cfg, &self.ckpt.subs).map(|r| (c, r))
        });
        let (ck, r) = match restored {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(replica = %self.node.id(), error = %e, "checkpoint refused");
                self.ckpt.stats.refused += 1;
                if let Some(rec) = self.ckpt.recovery.as_mut() {
                    rec.next_peer(self.node.now(), &mut self.ckpt.app_out);
                }
                return;
            }
        };
        self.shards = r.shards;
        self.states = r.states;
        self.mergers = r.mergers;
        for q in &mut self.queues {
            q.clear();
        }
        for m in &mut self.ckpt.marks {
            m.clear();
        }
        self.entries.clear();
        self.ckpt.assembly = Assembly::default();
        self.ckpt.recovery = None;
        self.ckpt.stats.installed += 1;
        let positions = ck.positions();
        self.node.restart_feeds(&positions);
        self.completed(ck.round, bytes, &positions);
    }

    fn completed(&mut self, round: u64, bytes: Bytes, positions: &[(LogId, u64)]) {
        self.ckpt.stats.taken += 1;
        self.ckpt.stats.round = round;
        self.ckpt.stats.bytes = bytes.len() as u64;
        self.ckpt.store.set(round, bytes);
        self.node.set_checkpointed(positions);
        let now = self.node.now();
        let executed = self.ckpt.executed;
        if let Some(t) = self.ckpt.trigger.as_mut() {
            t.taken(executed, now);
        }
    }

    /// What checkpointing did at this replica.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.ckpt.stats.clone()
    }

    /// Whether a state transfer is in progress.
    pub fn recovering(&self) -> bool {
        self.ckpt.recovery.is_some()
    }

    fn can_run(&self, w: usize) -> bool {
        let Some(job) = self.queues[w].front() else {
            return false;
        };
        // A checkpoint request needs no rendezvous: each worker records its own part.
        job.involved.len() == 1
            || job.checkpoint_round().is_some()
            || (job.executor() == w
                && job
                    .involved
                    .iter()
                    .all(|&o| self.queues[o].front().is_some_and(|j| j.id == job.id)))
    }

    fn run_head(&mut self, w: usize) {
        let job = self.queues[w].pop_front().expect("runnable");
        if let Some(round) = job.checkpoint_round() {
            let mark = self.ckpt.marks[w].pop_front();
            if round <= self.states[w].checkpoint_round {
                return;
            }
            self.states[w].checkpoint_round = round;
            let Some(mark) = mark else {
                return;
            };
            let part = WorkerPart::take(
                &*self.executor.service,
                &self.states[w],
                &self.shards[w],
                mark,
            );
            if let Some(ck) = self.ckpt.assembly.add(round, self.shards.len(), part) {
                let positions = ck.positions();
                self.completed(round, ck.encode(), &positions);
            }
            return;
        }
        self.ckpt.executed += 1;
        let out = if job.involved.len() == 1 {
            self.executor
                .run_single(&mut self.states[w], &mut self.shards[w], &job)
        } else {
            for &o in &job.involved[1..] {
                self.queues[o].pop_front();
            }
            let mut refs: Vec<(usize, &mut S::Shard)> = self
                .shards
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| job.involved.contains(i))
                .collect();
            self.executor
                .run_multi(&mut self.states[w], &mut refs, &job)
        };
        if let Some((to, bytes)) = out {
            self.node.send_app(to, bytes);
        }
    }

    /// Hash of the replica's state.
    pub fn state_hash(&self) -> u64 {
        let all: Vec<&S::Shard> = self.shards.iter().collect();
        self.executor.service.state_hash(&all)
    }

    /// The workers' shards (tests and debugging).
    pub fn shards(&self) -> &[S::Shard] {
        &self.shards
    }

    /// Commands waiting in the workers' queues.
    pub fn backlog(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.states.iter().map(|s| s.stats.clone()).collect()
    }
}

impl<S: Service> SimRole for SimReplica<S> {
    fn node(&self) -> &GroupsNode {
        &self.node
    }
    fn node_mut(&mut self) -> &mut GroupsNode {
        &mut self.node
    }
    fn pump(&mut self) {
        SimReplica::pump(self)
    }
    fn backlog(&self) -> usize {
        SimReplica::backlog(self)
    }
    /// Every worker's counters: a replica's workers see the same streams as every other
    /// replica's, so equal counters mean a replica has caught up.
    fn progress(&self) -> Vec<u64> {
        self.states
            .iter()
            .flat_map(|s| {
                let w = &s.stats;
                [
                    w.single,
                    w.multi,
                    w.parked,
                    w.aborts,
                    w.misrouted,
                    w.duplicates,
                    w.rejected,
                ]
            })
            .collect()
    }
    fn state_hash(&self) -> u64 {
        SimReplica::state_hash(self)
    }
}

/// A replica the simulator can run.
pub trait SimRole: Send + 'static {
    fn node(&self) -> &GroupsNode;
    fn node_mut(&mut self) -> &mut GroupsNode;
    /// Takes what the node delivered and executes whatever can run.
    fn pump(&mut self);
    /// Delivered commands not yet finished (waiting on something).
    fn backlog(&self) -> usize;
    /// Counters that are equal at every replica of a set once they have handled the same
    /// delivered commands (how [`EngineSim::quiet`] tells that a restarted replica caught up).
    fn progress(&self) -> Vec<u64>;
    /// A hash of the replicated state.
    fn state_hash(&self) -> u64;
    /// Application work (CPU microseconds) since the last call, for the simulator's cost
    /// model. Default none.
    fn take_work_us(&mut self) -> f64 {
        0.0
    }
}

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
    type Replica: SimRole;
    type Proxy: Proxy;
    fn roles(&self) -> &Roles;
    /// Replica nodes merge their subscriptions inside the node (see
    /// [`NodeOptions::merge_locally`]) rather than in the replica.
    fn replicas_merge_locally(&self) -> bool;
    /// A (re)started replica on `node`; `seed` differs per node and incarnation.
    fn replica(&self, node: GroupsNode, seed: u64) -> Self::Replica;
    /// A client proxy.
    fn proxy(&self, id: ClientId) -> Self::Proxy;
}

/// The blueprint of P-SMR and opt-PSMR deployments.
pub struct Psmr<S: Service> {
    pub service: Arc<S>,
    pub deployment: Deployment,
    pub mode: Mode,
    pub exec: ExecOptions,
    /// Clients' first resend timeout, in ticks.
    pub resend_ticks: u64,
    /// Replicas ask for checkpoints by this policy (`None`, the default: never; replicas
    /// still take part in rounds, serve and ask for state transfers).
    pub checkpoints: Option<CheckpointPolicy>,
    roles: Roles,
}

impl<S: Service> Psmr<S> {
    pub fn new(
        service: Arc<S>,
        deployment: Deployment,
        mode: Mode,
        exec: ExecOptions,
        resend_ticks: u64,
    ) -> Self {
        let roles = Roles {
            config: deployment.config.clone(),
            replica_sets: vec![deployment.replicas.clone()],
            acceptors: deployment.acceptors.clone(),
            clients: deployment.clients.clone(),
        };
        Psmr {
            service,
            deployment,
            mode,
            exec,
            resend_ticks,
            checkpoints: None,
            roles,
        }
    }
}

impl<S: Service> Blueprint for Psmr<S> {
    type Replica = SimReplica<S>;
    type Proxy = ClientProxy<S>;
    fn roles(&self) -> &Roles {
        &self.roles
    }
    fn replicas_merge_locally(&self) -> bool {
        false
    }
    fn replica(&self, node: GroupsNode, seed: u64) -> SimReplica<S> {
        SimReplica::new(
            node,
            self.service.clone(),
            self.deployment.workers,
            self.exec.clone(),
            seed,
            self.checkpoints,
        )
    }
    fn proxy(&self, id: ClientId) -> ClientProxy<S> {
        ClientProxy::new(
            id,
            self.service.clone(),
            self.mode,
            self.deployment.workers,
            self.resend_ticks,
        )
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

/// Simulated client proxies with a workload, recording their history.
pub struct SimClient<P: Proxy> {
    node: GroupsNode,
    proxies: Vec<P>,
    budget: Vec<usize>,
    open: Vec<BTreeMap<u64, usize>>,
    window: usize,
    workload: Workload<P::Command>,
    rng: ChaCha8Rng,
    now_us: u64,
    /// Mean pause between a client's submissions, and when each client may submit next.
    think_us: u64,
    next_at: Vec<u64>,
    pub history: Vec<OpOf<P>>,
    inbox: Vec<(NodeId, Bytes)>,
    out: Vec<(groups::GroupSet, Bytes)>,
    /// The tick the proxies last saw (their timers only need each new tick).
    ticked: u64,
}

impl<P: Proxy> SimClient<P> {
    pub fn done(&self) -> bool {
        self.budget.iter().all(|&b| b == 0) && self.proxies.iter().all(|p| p.outstanding() == 0)
    }

    pub fn stats(&self) -> ClientStats {
        self.proxies.iter().map(|p| p.stats()).sum()
    }

    fn pump(&mut self) {
        let max = self.node.config().tuning.payload_bytes_max;
        self.node.take_app(&mut self.inbox);
        for (_, bytes) in self.inbox.drain(..) {
            let Some((client, body)) = wire::addressee(&bytes) else {
                continue;
            };
            let i = client.index() as usize;
            let Some(p) = self.proxies.get_mut(i).filter(|p| p.id() == client) else {
                continue;
            };
            if let Some(c) = p.on_message(body) {
                if let Some(op) = self.open[i].remove(&c.seq) {
                    self.history[op].ret = Some((self.now_us, c.result));
                }
            }
        }
        let tick = self.node.now();
        let new_tick = tick != self.ticked;
        self.ticked = tick;
        for i in 0..self.proxies.len() {
            if new_tick {
                self.proxies[i].tick(tick);
            }
            while self.budget[i] > 0
                && self.proxies[i].outstanding() < self.window
                && self.now_us >= self.next_at[i]
            {
                self.budget[i] -= 1;
                if self.think_us > 0 {
                    self.next_at[i] = self.now_us + self.rng.random_range(0..2 * self.think_us);
                }
                let cmd = (self.workload)(&mut self.rng, i);
                self.proxies[i].set_payload_limit(max);
                let seq = self.proxies[i].submit(cmd.clone());
                self.open[i].insert(seq, self.history.len());
                self.history.push(Op {
                    client: self.proxies[i].id(),
                    command: cmd,
                    call_us: self.now_us,
                    ret: None,
                });
                let mut refused = Vec::new();
                self.proxies[i].take_refused(&mut refused);
                for c in refused {
                    if let Some(op) = self.open[i].remove(&c.seq) {
                        self.history[op].ret = Some((self.now_us, c.result));
                    }
                }
            }
            self.proxies[i].take_multicasts(&mut self.out);
        }
        for (dests, payload) in self.out.drain(..) {
            // Backpressure cannot persist here: windows are small; a refused multicast is
            // resent by the proxy's timer.
            let _ = self.node.multicast(dests, payload);
        }
    }
}

/// A node of a simulated deployment.
pub enum SimNode<B: Blueprint> {
    Replica(Box<B::Replica>),
    Client(Box<SimClient<B::Proxy>>),
    Acceptor(Box<GroupsNode>),
}

impl<B: Blueprint> SimNode<B> {
    fn node_mut(&mut self) -> &mut GroupsNode {
        match self {
            SimNode::Replica(r) => r.node_mut(),
            SimNode::Client(c) => &mut c.node,
            SimNode::Acceptor(n) => n,
        }
    }
    fn pump(&mut self) {
        match self {
            SimNode::Replica(r) => r.pump(),
            SimNode::Client(c) => c.pump(),
            SimNode::Acceptor(_) => {}
        }
    }
    pub fn as_replica(&self) -> Option<&B::Replica> {
        match self {
            SimNode::Replica(r) => Some(r),
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
        if let SimNode::Client(c) = self {
            c.now_us = now_us;
        }
    }
    fn msg_bytes(msg: &NetMsg) -> usize {
        groups::sim::wire_bytes(msg)
    }
    fn take_work_us(&mut self) -> f64 {
        match self {
            SimNode::Replica(r) => r.take_work_us(),
            _ => 0.0,
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
        let replica = roles.is_replica(id);
        let opts = NodeOptions {
            epoch: incarnation,
            merge_locally: !replica || self.blueprint.replicas_merge_locally(),
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
        let seed = self.setup.seed ^ (u64::from(id.0) << 32) ^ u64::from(incarnation);
        if replica {
            SimNode::Replica(Box::new(self.blueprint.replica(node, seed)))
        } else if roles.is_client(id) {
            assert_eq!(incarnation, 0, "simulated clients do not restart");
            let n = self.setup.clients_per_node;
            SimNode::Client(Box::new(SimClient {
                node,
                proxies: (0..n)
                    .map(|i| self.blueprint.proxy(ClientId::new(id, i as u32)))
                    .collect(),
                budget: vec![self.setup.ops_per_client; n],
                open: vec![BTreeMap::new(); n],
                window: self.setup.window,
                workload: self.setup.workload.clone(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                now_us: 0,
                think_us: self.setup.think_us,
                next_at: vec![0; n],
                history: Vec::new(),
                inbox: Vec::new(),
                out: Vec::new(),
                ticked: u64::MAX,
            }))
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
    pub fn replicas(&self) -> impl Iterator<Item = (NodeId, &B::Replica)> + '_ {
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
            && self.replicas().all(|(_, r)| r.backlog() == 0)
            && self.roles().replica_sets.iter().all(|set| {
                let progress: Vec<Vec<u64>> = set
                    .iter()
                    .filter_map(|r| self.sim.actor(*r).and_then(SimNode::as_replica))
                    .map(SimRole::progress)
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
            .flat_map(|c| c.history.iter().cloned())
            .collect()
    }

    /// State hashes of the live replicas.
    pub fn replica_hashes(&self) -> Vec<(NodeId, u64)> {
        self.replicas().map(|(r, x)| (r, x.state_hash())).collect()
    }

    /// A description of the replica sets whose live replicas' states differ, if any.
    pub fn divergence(&self) -> Option<String> {
        let bad: Vec<String> = self
            .roles()
            .replica_sets
            .iter()
            .filter_map(|set| {
                let hashes: Vec<(NodeId, u64)> = set
                    .iter()
                    .filter_map(|r| {
                        self.sim
                            .actor(*r)
                            .and_then(SimNode::as_replica)
                            .map(|x| (*r, x.state_hash()))
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
}

impl Default for Campaign {
    fn default() -> Self {
        Campaign {
            fault_phase_us: 1_200_000,
            settle_us: 30_000_000,
            crashes_max: 3,
            partitions_max: 2,
            pauses_max: 2,
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
    pub events: Vec<String>,
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
            if rng.random_bool(0.5) {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for &n in &all {
                    if rng.random_bool(0.5) {
                        a.push(n)
                    } else {
                        b.push(n)
                    }
                }
                plan.push((at, Ev::Cut(a, b)));
            } else {
                let x = all[rng.random_range(0..all.len())];
                let y = all[rng.random_range(0..all.len())];
                plan.push((at, Ev::OneWay(x, y)));
            }
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
        // A stable sort: a pause and its resume at the same time stay in that order.
        plan.sort_by_key(|(t, _)| *t);
        let mut report = CampaignReport::default();
        for (at, ev) in plan {
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
            }
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
