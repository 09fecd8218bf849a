//! P-SMR and opt-PSMR deployments in the deterministic simulator.
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
//! [`SimClient`]s record a history: call time, command, and completion time and result (or
//! none, if the command was still outstanding at the end), for the linearizability checker.

use crate::client::{ClientError, ClientProxy, Mode};
use crate::layout::Deployment;
use crate::psmr::core::{ExecOptions, Executor, Job, WorkerState, WorkerStats};
use crate::service::Service;
use crate::wire::{self, ClientId, Reply};
use bytes::Bytes;
use groups::ids::{LogId, NodeId};
use groups::log::storage::{MemStorage, Shared};
use groups::merge::Merger;
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
}

impl<S: Service> SimReplica<S> {
    fn new(
        node: GroupsNode,
        service: Arc<S>,
        workers: usize,
        exec: ExecOptions,
        seed: u64,
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
        SimReplica {
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
        for (w, m) in self.mergers.iter_mut().enumerate() {
            m.poll(&mut delivered);

            for d in delivered.drain(..) {
                if let Some(job) = self.executor.decode(&d) {
                    self.queues[w].push_back(job);
                }
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
    }

    fn can_run(&self, w: usize) -> bool {
        let Some(job) = self.queues[w].front() else {
            return false;
        };
        job.involved.len() == 1
            || (job.executor() == w
                && job
                    .involved
                    .iter()
                    .all(|&o| self.queues[o].front().is_some_and(|j| j.id == job.id)))
    }

    fn run_head(&mut self, w: usize) {
        let job = self.queues[w].pop_front().expect("runnable");
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

    pub fn node(&self) -> &GroupsNode {
        &self.node
    }
}

/// Produces the commands of a simulated client: `(rng, client index) -> command`.
pub type Workload<C> = Arc<dyn Fn(&mut ChaCha8Rng, usize) -> C + Send + Sync>;

/// One operation of a recorded history.
#[derive(Debug)]
pub struct Op<S: Service> {
    pub client: ClientId,
    pub command: S::Command,
    pub call_us: u64,
    /// Completion time and result; `None` if the command never completed.
    pub ret: Option<(u64, Result<S::Reply, ClientError>)>,
}

/// Simulated client proxies with a workload, recording their history.
pub struct SimClient<S: Service> {
    node: GroupsNode,
    proxies: Vec<ClientProxy<S>>,
    budget: Vec<usize>,
    open: Vec<BTreeMap<u64, usize>>,
    window: usize,
    workload: Workload<S::Command>,
    rng: ChaCha8Rng,
    now_us: u64,
    /// Mean pause between a client's submissions, and when each client may submit next.
    think_us: u64,
    next_at: Vec<u64>,
    pub history: Vec<Op<S>>,
    inbox: Vec<(NodeId, Bytes)>,
    out: Vec<(groups::GroupSet, Bytes)>,
}

impl<S: Service> SimClient<S> {
    pub fn done(&self) -> bool {
        self.budget.iter().all(|&b| b == 0) && self.proxies.iter().all(|p| p.outstanding() == 0)
    }

    pub fn stats(&self) -> crate::client::ClientStats {
        self.proxies.iter().map(|p| &p.stats).sum()
    }

    fn pump(&mut self) {
        self.node.take_app(&mut self.inbox);
        for (_, bytes) in self.inbox.drain(..) {
            let Ok(reply) = wire::decode::<Reply<S::Reply>>(&bytes) else {
                continue;
            };
            let i = reply.client.index() as usize;
            if let Some(c) = self.proxies.get_mut(i).and_then(|p| p.on_reply(reply)) {
                if let Some(op) = self.open[i].remove(&c.seq) {
                    self.history[op].ret = Some((self.now_us, c.result));
                }
            }
        }
        let tick = self.node.now();
        for i in 0..self.proxies.len() {
            self.proxies[i].tick(tick);
            while self.budget[i] > 0
                && self.proxies[i].outstanding() < self.window
                && self.now_us >= self.next_at[i]
            {
                self.budget[i] -= 1;
                if self.think_us > 0 {
                    self.next_at[i] = self.now_us + self.rng.random_range(0..2 * self.think_us);
                }
                let cmd = (self.workload)(&mut self.rng, i);
                let seq = self.proxies[i].submit(cmd.clone());
                self.open[i].insert(seq, self.history.len());
                self.history.push(Op {
                    client: self.proxies[i].id(),
                    command: cmd,
                    call_us: self.now_us,
                    ret: None,
                });
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

impl<S: Service> Clone for Op<S> {
    fn clone(&self) -> Self {
        Op {
            client: self.client,
            command: self.command.clone(),
            call_us: self.call_us,
            ret: self.ret.clone(),
        }
    }
}

/// A node of a simulated deployment.
pub enum SimNode<S: Service> {
    Replica(Box<SimReplica<S>>),
    Client(Box<SimClient<S>>),
    Acceptor(Box<GroupsNode>),
}

impl<S: Service> SimNode<S> {
    fn node_mut(&mut self) -> &mut GroupsNode {
        match self {
            SimNode::Replica(r) => &mut r.node,
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
    pub fn as_replica(&self) -> Option<&SimReplica<S>> {
        match self {
            SimNode::Replica(r) => Some(r),
            _ => None,
        }
    }
    pub fn as_client(&self) -> Option<&SimClient<S>> {
        match self {
            SimNode::Client(c) => Some(c),
            _ => None,
        }
    }
}

impl<S: Service> Actor for SimNode<S> {
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
}

/// How a simulated deployment runs.
#[derive(Clone)]
pub struct SimSetup<S: Service> {
    pub seed: u64,
    pub net: NetFaults,
    pub mode: Mode,
    pub exec: ExecOptions,
    /// Logical clients per client node, their window, and commands each.
    pub clients_per_node: usize,
    pub window: usize,
    pub ops_per_client: usize,
    pub workload: Workload<S::Command>,
    pub resend_ticks: u64,
    /// Mean pause between a client's submissions (0: none).
    pub think_us: u64,
}

/// A simulated deployment.
pub struct EngineSim<S: Service> {
    pub sim: Sim<SimNode<S>>,
    pub deployment: Deployment,
    service: Arc<S>,
    setup: SimSetup<S>,
    storages: BTreeMap<(NodeId, LogId), Shared<MemStorage>>,
}

impl<S: Service> EngineSim<S> {
    pub fn new(service: Arc<S>, deployment: Deployment, setup: SimSetup<S>) -> Self {
        let cfg = Arc::new(deployment.config.clone());
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
            deployment,
            service,
            setup,
            storages,
        };
        for n in &cfg.nodes {
            sim.add(n.id, s.make(n.id, 0));
        }
        s.sim = sim;
        s
    }

    fn make(&self, id: NodeId, incarnation: u32) -> SimNode<S> {
        let cfg = Arc::new(self.deployment.config.clone());
        let replica = self.deployment.is_replica(id);
        let opts = NodeOptions {
            epoch: incarnation,
            merge_locally: !replica,
        };
        let storages = &self.storages;
        let c = cfg.clone();
        let node = GroupsNode::new(cfg, id, opts, |lc| {
            default_log(&c, lc, id, storages[&(id, lc.id)].clone())
        });
        let seed = self.setup.seed ^ (u64::from(id.0) << 32) ^ u64::from(incarnation);
        if replica {
            SimNode::Replica(Box::new(SimReplica::new(
                node,
                self.service.clone(),
                self.deployment.workers,
                self.setup.exec.clone(),
                seed,
            )))
        } else if self.deployment.is_client(id) {
            assert_eq!(incarnation, 0, "simulated clients do not restart");
            let n = self.setup.clients_per_node;
            SimNode::Client(Box::new(SimClient {
                node,
                proxies: (0..n)
                    .map(|i| {
                        ClientProxy::new(
                            ClientId::new(id, i as u32),
                            self.service.clone(),
                            self.setup.mode,
                            self.deployment.workers,
                            self.setup.resend_ticks,
                        )
                    })
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
            }))
        } else {
            SimNode::Acceptor(Box::new(node))
        }
    }

    /// Crashes a node; a replica's state is lost (it replays the logs when restarted).
    pub fn crash(&mut self, id: NodeId) {
        assert!(
            !self.deployment.is_client(id),
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

    /// Whether every client finished its workload and the live replicas converged: nothing
    /// waits in their queues and every worker has handled the same requests at every replica
    /// (the workers' streams are identical, so equal counters mean a replica has caught up;
    /// a restarted replica replaying the logs is not done before that).
    pub fn quiet(&self) -> bool {
        let clients_done = self.deployment.clients.iter().all(|c| {
            self.sim
                .actor(*c)
                .and_then(SimNode::as_client)
                .is_some_and(SimClient::done)
        });
        let replicas: Vec<&SimReplica<S>> = self
            .deployment
            .replicas
            .iter()
            .filter_map(|r| self.sim.actor(*r).and_then(SimNode::as_replica))
            .collect();
        clients_done
            && replicas.iter().all(|r| r.backlog() == 0)
            && replicas
                .windows(2)
                .all(|w| w[0].worker_stats() == w[1].worker_stats())
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
    pub fn history(&self) -> Vec<Op<S>> {
        self.deployment
            .clients
            .iter()
            .filter_map(|c| self.sim.actor(*c).and_then(SimNode::as_client))
            .flat_map(|c| c.history.iter().cloned())
            .collect()
    }

    /// State hashes of the live replicas.
    pub fn replica_hashes(&self) -> Vec<(NodeId, u64)> {
        self.deployment
            .replicas
            .iter()
            .filter_map(|&r| {
                self.sim
                    .actor(r)
                    .and_then(SimNode::as_replica)
                    .map(|x| (r, x.state_hash()))
            })
            .collect()
    }

    /// Client counters summed over all client nodes.
    pub fn client_stats(&self) -> crate::client::ClientStats {
        let mut s = crate::client::ClientStats::default();
        for c in &self.deployment.clients {
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
}

impl Default for Campaign {
    fn default() -> Self {
        Campaign {
            fault_phase_us: 1_200_000,
            settle_us: 30_000_000,
            crashes_max: 3,
            partitions_max: 2,
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
    pub events: Vec<String>,
}

impl<S: Service> EngineSim<S> {
    /// Runs a fault campaign drawn from `seed` on this deployment (with `f` = 1: one replica
    /// or acceptor down at a time), then heals, restarts everything and settles.
    pub fn campaign(&mut self, seed: u64, c: &Campaign) -> CampaignReport {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17);
        let crashable: Vec<NodeId> = {
            let mut v = self.deployment.replicas.clone();
            for a in &self.deployment.acceptors {
                if !v.contains(a) {
                    v.push(*a);
                }
            }
            v
        };
        let all: Vec<NodeId> = self.deployment.config.nodes.iter().map(|n| n.id).collect();
        enum Ev {
            Crash(NodeId),
            Restart(NodeId),
            Cut(Vec<NodeId>, Vec<NodeId>),
            OneWay(NodeId, NodeId),
            Heal,
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
            }
        }
        self.run_until(c.fault_phase_us);
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
pub fn lincheck_history<S: Service>(
    ops: &[Op<S>],
) -> Vec<crate::lincheck::Operation<S::Command, S::Reply>> {
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
