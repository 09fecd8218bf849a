//! Combined scale-up and scale-out: P-SMR-style workers inside every partition.
//!
//! A combined deployment has `P` partitions (replica sets, each ordered by its own logs)
//! and `k` workers in every replica of a partition. The objects are spread over `P x k`
//! **cells**: cell `p * k + w` is worker `w` of partition `p` ([`Cells`]). The service's
//! placement rule ([`super::service::PartitionedService::place`] with `P x k`) and, in
//! DS-SMR, the oracle and the clients' location caches place and locate objects by cell, so
//! a move of an object between two partitions brings it into the destination partition's
//! correct worker, and a move between two workers of one partition is a move like any
//! other.
//!
//! **Ordering** (the groups and logs of [`super::layout::ScaleOutLayout::combined`]): one
//! multicast group per cell; one log per partition covering its `k` cells (a command of one
//! worker or of several workers of one partition), run by the partition's replicas; one log
//! covering every group (a command of several partitions, checkpoint requests; with DS-SMR
//! the oracle's group too), plus the oracle's own log. A replica of partition `p` subscribes
//! to its `k` cells and merges the partition's log with the global one into one stream (a
//! projection of the one total order, as every subscriber's), handing each delivery to the
//! workers of the cells it is addressed to. A log per cell would order nothing more (the
//! replica merges every log of its cells in one stream anyway), costs a merge over more
//! logs, and batches less per log; it measured slower (1 x 8 simulated Timeline 94k cmds/s
//! against 151k with the partition's one log).
//!
//! **Execution.** Worker `w` is an S-SMR / DS-SMR partition core ([`PartitionServer`]) for
//! cell `p * k + w`, fed exactly the deliveries addressed to its cell, in stream order:
//!
//! - a command of one cell runs on that worker alone, in parallel with the other workers;
//! - a command of several cells of one partition synchronises their workers: each sends the
//!   others the command's objects it owns (S-SMR's signal with its variables) *in memory*,
//!   at every replica, waits for theirs, and executes on the gathered copies keeping its own
//!   objects' new values (the rendezvous of P-SMR, with values exchanged instead of shards
//!   lent, so that the same core serves both levels);
//! - a command of several partitions adds S-SMR's reliable multicast of the same exchanges
//!   between the partitions, sent by the partition's designated replica (its lowest node)
//!   for all of its workers; each receiving replica hands an exchange to the workers of the
//!   cells it is addressed to, and pulls what it misses as a plain partition does.
//!
//! **Why it is linearizable and execution-atomic.** The cells are S-SMR's (or DS-SMR's)
//! partitions: every cell receives the projection of one total order on its group
//! (atomic multicast: every log covering a cell is read by the one merge of its replicas,
//! and every replica of a partition merges the same logs), each worker executes its cell's stream in
//! order, and a multi-cell command completes at a worker only after every other destination
//! cell delivered it (its exchange is that cell's signal, sent when the command reaches the
//! cell's head). This is exactly S-SMR's argument with partitions = cells (reference notes,
//! d); nothing depends on whether an exchange crossed a network or a channel, since a cell's
//! exchange for one delivery is the same at every replica (deterministic cores, same
//! stream). Replies come from the lowest destination cell's worker at every replica, as
//! in S-SMR. DS-SMR's oracle map, moves, creates, deletes and fallback are unchanged with
//! cells for partitions, so DS-SMR's argument holds too.
//!
//! **Checkpoints.** A checkpoint request goes to every group (the global log), so it has one
//! place in every cell's stream, and a command before it at one cell is before it at every
//! cell that delivers both. Each worker records its part when the request reaches the head
//! of its queue; the partition's checkpoint is every worker's part of the same round, taken
//! at one position of the replica's merged stream ([`super::replica`] records the merger's
//! state there), and installing it restores every worker.
//!
//! **Runs.** The simulator steps the workers on the replica's thread, in an order that
//! rotates every step; production ([`ServerOptions::worker_threads`]) runs each worker on
//! its own thread, with the workers' exchanges to each other over channels, and only what
//! leaves the replica (replies, remote exchanges, pulls, snapshots) back through the node.

use super::common::{check_partition_snapshot, decode_snapshot, Output, PartitionCore};
use super::msg::{CommandMsg, Multicast, Peer};
use super::server::{PartitionServer, ServerStats};
use super::service::{PartitionId, PartitionedService};
use super::ServerOptions;
use crate::checkpoint::CheckpointError;
use crate::hash::Fnv64;
use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, Sender};
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use groups::runtime::Waker;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The cells of a combined deployment: worker `w` of partition `p` owns cell `p * k + w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cells {
    pub partitions: u32,
    pub workers: u32,
}

impl Cells {
    pub fn new(partitions: u32, workers: u32) -> Self {
        Cells {
            partitions,
            workers: workers.max(1),
        }
    }
    /// How many cells (the groups the protocol calls partitions).
    pub fn count(self) -> u32 {
        self.partitions * self.workers
    }
    pub fn cell(self, partition: PartitionId, worker: u32) -> u32 {
        partition * self.workers + worker
    }
    /// The partition (replica set) a cell belongs to.
    pub fn partition_of(self, cell: u32) -> PartitionId {
        cell / self.workers
    }
    pub fn worker_of(self, cell: u32) -> u32 {
        cell % self.workers
    }
}

/// Where a worker's outputs go: exchanges for the partition's own cells to their workers,
/// the rest out of the replica (remote exchanges only from the designated replica).
#[derive(Clone, Copy, Debug)]
struct Route {
    base: u32,
    k: u32,
    designated: bool,
}

impl Route {
    fn local(&self, g: GroupId) -> Option<usize> {
        (g.0 >= self.base && g.0 < self.base + self.k).then(|| (g.0 - self.base) as usize)
    }

    fn split(
        &self,
        o: Output,
        local: &mut impl FnMut(usize, Bytes),
        remote: &mut impl FnMut(Output),
    ) {
        match o {
            Output::Rmcast(dests, payload) => {
                let mut rest = GroupSet::new();
                for g in dests.iter() {
                    match self.local(g) {
                        Some(w) => local(w, payload.clone()),
                        None => {
                            rest.insert(g);
                        }
                    }
                }
                if !rest.is_empty() && self.designated {
                    remote(Output::Rmcast(rest, payload));
                }
            }
            other => remote(other),
        }
    }
}

/// A worker's part of a checkpoint: its state hash and snapshot.
type Part = (u64, Vec<u8>);

/// A partition's checkpoint: every worker's part of one round.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    partition: PartitionId,
    workers: u32,
    parts: Vec<Vec<u8>>,
}

/// What a worker thread is handed.
enum In {
    Deliver(MsgId, Bytes),
    Exchange(Bytes),
    /// A pull (answered if the worker sent what it asks for).
    Pull(Bytes),
    /// An answer to a pull, for the worker if it still waits for that delivery.
    Answer(MsgId, Bytes),
    Tick(u64),
    Mark(u64),
    Hash(Sender<u64>),
    Stop,
}

/// What a worker thread hands back.
enum Out {
    Output(Output),
    Snapshot(usize, (u64, u64, Vec<u8>)),
}

/// A worker thread's counters, read by the replica's thread.
#[derive(Default)]
struct View {
    handled: AtomicU64,
    backlog: AtomicU64,
    stats: parking_lot::Mutex<ServerStats>,
    /// The CPU the thread was pinned to, plus one (0: not pinned, or pinning failed).
    pinned: AtomicU64,
}

/// The workers on threads of their own.
struct Pool {
    inboxes: Vec<Sender<In>>,
    outs: Receiver<Out>,
    threads: Vec<JoinHandle<()>>,
    views: Vec<Arc<View>>,
    ticked: u64,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for tx in &self.inboxes {
            let _ = tx.send(In::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

enum Exec<S: PartitionedService> {
    /// Stepped on the replica's thread (the simulator), with the exchanges between workers
    /// waiting in `local`.
    Inline {
        workers: Vec<PartitionServer<S>>,
        local: VecDeque<(usize, Bytes)>,
    },
    Threads(Pool),
}

/// A replica of a combined-mode partition: `k` workers, one per cell (see the module docs).
pub struct WorkerPartition<S: PartitionedService> {
    service: Arc<S>,
    cfg: Arc<ClusterConfig>,
    node: NodeId,
    opts: ServerOptions,
    partition: PartitionId,
    cells: Cells,
    route: Route,
    exec: Exec<S>,
    /// The workers' counters summed (refreshed as they run).
    stats: ServerStats,
    /// Checkpoint parts by round, until every worker recorded its part.
    parts: BTreeMap<u64, Vec<Option<Part>>>,
    snaps: Vec<(u64, u64, Vec<u8>)>,
    out: Vec<Output>,
    waker: Option<Waker>,
    turn: usize,
    buf: Vec<Output>,
}

impl<S: PartitionedService> WorkerPartition<S> {
    /// Replica `node` of partition `partition`, its `opts.workers` workers owning cells
    /// `partition * k ..`, of `cells` cells in all (the deployment's groups).
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        partition: PartitionId,
        cells: u32,
        opts: ServerOptions,
    ) -> Self {
        let k = opts.workers.max(1);
        let workers = (0..k)
            .map(|w| {
                PartitionServer::new(
                    service.clone(),
                    cfg.clone(),
                    node,
                    partition * k + w,
                    cells,
                    opts.clone(),
                )
            })
            .collect();
        Self::with_workers(service, cfg, node, partition, cells, opts, workers)
    }

    fn with_workers(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        partition: PartitionId,
        cells: u32,
        opts: ServerOptions,
        mut workers: Vec<PartitionServer<S>>,
    ) -> Self {
        let k = opts.workers.max(1);
        let base = partition * k;
        for w in &mut workers {
            w.emit_all_exchanges();
        }
        // The partition's designated replica: the lowest member of its cells' groups.
        let designated = cfg.members(GroupId(base)).iter().min() == Some(&node);
        let mut me = WorkerPartition {
            service,
            cfg,
            node,
            opts,
            partition,
            cells: Cells::new(cells / k, k),
            route: Route {
                base,
                k,
                designated,
            },
            exec: Exec::Inline {
                workers,
                local: VecDeque::new(),
            },
            stats: ServerStats::default(),
            parts: BTreeMap::new(),
            snaps: Vec::new(),
            out: Vec::new(),
            waker: None,
            turn: node.0 as usize,
            buf: Vec::new(),
        };
        me.refresh_stats();
        me
    }

    /// The partition (replica set) this replica belongs to.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The deployment's cells.
    pub fn cells(&self) -> Cells {
        self.cells
    }

    /// The workers' counters, summed.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The workers, when they run on the replica's thread (the simulator; `None` once they
    /// run on threads of their own).
    pub fn workers(&self) -> Option<&[PartitionServer<S>]> {
        match &self.exec {
            Exec::Inline { workers, .. } => Some(workers),
            Exec::Threads(_) => None,
        }
    }

    /// Moves the workers onto threads of their own (not pinned: a process may host many
    /// replicas, as the in-process deployments do).
    fn spawn(&mut self, waker: &Waker) {
        let Exec::Inline { workers, local } = &mut self.exec else {
            return;
        };
        let mut workers = std::mem::take(workers);
        // Exchanges still waiting between workers go first.
        let mut pending: Vec<Vec<Bytes>> = vec![Vec::new(); workers.len()];
        for (w, p) in local.drain(..) {
            pending[w].push(p);
        }
        let (out_tx, outs) = unbounded();
        let channels: Vec<(Sender<In>, Receiver<In>)> =
            workers.iter().map(|_| unbounded()).collect();
        let inboxes: Vec<Sender<In>> = channels.iter().map(|(tx, _)| tx.clone()).collect();
        for (w, list) in pending.into_iter().enumerate() {
            for p in list {
                let _ = inboxes[w].send(In::Exchange(p));
            }
        }
        let mut threads = Vec::new();
        let mut views = Vec::new();
        for (w, (server, (_, rx))) in workers.drain(..).zip(channels).enumerate() {
            let view = Arc::new(View::default());
            let cpu = self
                .opts
                .pin_cpus
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| c[(self.route.base as usize + w) % c.len()]);
            let thread = WorkerThread {
                worker: w,
                cpu,
                inbox: rx,
                peers: inboxes.clone(),
                route: self.route,
                outs: out_tx.clone(),
                waker: waker.clone(),
                view: view.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!(
                    "partition-{}-n{}-w{w}",
                    self.partition, self.node.0
                ))
                .spawn(move || thread.run(server))
                .expect("spawn worker");
            threads.push(handle);
            views.push(view);
        }
        self.exec = Exec::Threads(Pool {
            inboxes,
            outs,
            threads,
            views,
            ticked: u64::MAX,
        });
    }

    /// Combined mode on threads: the CPU each worker's thread is pinned to (`None`: not
    /// pinned, pinning failed, or the workers are stepped inline).
    pub fn worker_cpus(&self) -> Vec<Option<usize>> {
        match &self.exec {
            Exec::Inline { workers, .. } => vec![None; workers.len()],
            Exec::Threads(pool) => pool
                .views
                .iter()
                .map(|v| v.pinned.load(Ordering::Acquire).checked_sub(1))
                .map(|c| c.map(|c| c as usize))
                .collect(),
        }
    }

    fn refresh_stats(&mut self) {
        let mut sum = ServerStats::default();
        match &self.exec {
            Exec::Inline { workers, .. } => {
                for w in workers {
                    sum.absorb(&w.stats);
                    sum.worker_handled.push(w.stats.handled);
                }
            }
            Exec::Threads(pool) => {
                for v in &pool.views {
                    let s = v.stats.lock();
                    sum.absorb(&s);
                    sum.worker_handled.push(s.handled);
                }
            }
        }
        sum.worker_cpus = self.worker_cpus();
        self.stats = sum;
    }

    /// Records worker `w`'s part of a round; the partition's checkpoint once all are in.
    fn part(&mut self, w: usize, (round, hash, bytes): (u64, u64, Vec<u8>)) {
        let k = self.cells.workers as usize;
        let slot = self.parts.entry(round).or_insert_with(|| vec![None; k]);
        slot[w] = Some((hash, bytes));
        if slot.iter().all(Option::is_some) {
            let slot = self.parts.remove(&round).unwrap_or_default();
            let (hashes, parts): (Vec<u64>, Vec<Vec<u8>>) = slot.into_iter().flatten().unzip();
            let snap = Snapshot {
                partition: self.partition,
                workers: self.cells.workers,
                parts,
            };
            let hash = combine(self.partition, hashes);
            self.snaps.push((round, hash, crate::wire::encode(&snap)));
        }
    }

    /// The local workers a set of groups addresses.
    fn addressed<'a>(&'a self, dests: &'a GroupSet) -> impl Iterator<Item = usize> + 'a {
        dests.iter().filter_map(|g| self.route.local(g))
    }

    /// Gives every worker the same input: stepped on this thread, or sent to every worker
    /// thread.
    fn give_every_worker(
        &mut self,
        inline: impl Fn(&mut PartitionServer<S>),
        threaded: impl Fn() -> In,
    ) {
        match &mut self.exec {
            Exec::Inline { workers, .. } => workers.iter_mut().for_each(inline),
            Exec::Threads(pool) => {
                for tx in &pool.inboxes {
                    let _ = tx.send(threaded());
                }
            }
        }
    }

    fn run_inline(&mut self) {
        let Exec::Inline { workers, local } = &mut self.exec else {
            return;
        };
        let n = workers.len();
        let mut snaps = Vec::new();
        let mut parts = Vec::new();
        loop {
            for i in 0..n {
                let w = (i + self.turn) % n;
                workers[w].run();
                workers[w].take_outputs(&mut self.buf);
                for o in self.buf.drain(..) {
                    self.route
                        .split(o, &mut |to, p| local.push_back((to, p)), &mut |o| {
                            self.out.push(o)
                        });
                }
                workers[w].take_snapshots(&mut snaps);
                parts.extend(snaps.drain(..).map(|s| (w, s)));
            }
            if local.is_empty() {
                break;
            }
            for (w, p) in local.drain(..) {
                workers[w].exchange(&p);
            }
        }
        self.turn = self.turn.wrapping_add(1);
        for (w, s) in parts {
            self.part(w, s);
        }
    }

    fn drain_pool(&mut self) {
        let Exec::Threads(pool) = &mut self.exec else {
            return;
        };
        let mut parts = Vec::new();
        while let Ok(o) = pool.outs.try_recv() {
            match o {
                Out::Output(o) => self.out.push(o),
                Out::Snapshot(w, s) => parts.push((w, s)),
            }
        }
        for (w, s) in parts {
            self.part(w, s);
        }
    }
}

/// A partition's state hash from its workers' (in worker order).
fn combine(partition: PartitionId, hashes: impl IntoIterator<Item = u64>) -> u64 {
    let mut h = Fnv64::new();
    h.word(u64::from(partition)).words(hashes);
    h.get()
}

impl<S: PartitionedService> PartitionCore for WorkerPartition<S> {
    fn group(&self) -> u32 {
        self.route.base
    }

    fn start(&mut self, waker: &Waker) {
        self.waker = Some(waker.clone());
        if self.opts.worker_threads {
            self.spawn(waker);
        }
    }

    fn deliver(&mut self, id: MsgId, body: &[u8]) {
        // Without the delivery's destinations: the ones the multicast names.
        let dests: GroupSet = match crate::wire::decode::<Multicast>(body) {
            Ok(Multicast::Command(c)) => c.partitions.iter().map(|p| GroupId(*p)).collect(),
            Ok(Multicast::Move { from, to, .. }) => {
                [GroupId(from), GroupId(to)].into_iter().collect()
            }
            Ok(_) => GroupSet::new(),
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "undecodable multicast dropped");
                self.stats.rejected += 1;
                return;
            }
        };
        self.deliver_to(id, &dests, Bytes::copy_from_slice(body));
    }

    fn deliver_to(&mut self, id: MsgId, dests: &GroupSet, body: Bytes) {
        let targets: Vec<usize> = self.addressed(dests).collect();
        match &mut self.exec {
            Exec::Inline { workers, .. } => {
                for w in targets {
                    workers[w].deliver(id, &body);
                }
            }
            Exec::Threads(pool) => {
                for w in targets {
                    let _ = pool.inboxes[w].send(In::Deliver(id, body.clone()));
                }
            }
        }
    }

    fn exchange_to(&mut self, dests: &GroupSet, payload: &[u8]) {
        let targets: Vec<usize> = self.addressed(dests).collect();
        match &mut self.exec {
            Exec::Inline { workers, .. } => {
                for w in targets {
                    workers[w].exchange(payload);
                }
            }
            Exec::Threads(pool) => {
                let b = Bytes::copy_from_slice(payload);
                for w in targets {
                    let _ = pool.inboxes[w].send(In::Exchange(b.clone()));
                }
            }
        }
    }

    fn exchange(&mut self, payload: &[u8]) {
        // Without destinations, every worker (an exchange for a cell it is not waits in its
        // inbox until a checkpoint drops it; the host always passes destinations).
        let all = GroupSet::from_iter((0..self.route.k).map(|w| GroupId(self.route.base + w)));
        self.exchange_to(&all, payload);
    }

    /// Combined-mode partitions do not serve reads off the log (the read would have to wait
    /// for the worker of its cell; not built).
    fn refuse_read(&mut self, c: &CommandMsg) {
        super::common::refuse_read::<S::Reply>(&mut self.out, c);
    }

    fn peer(&mut self, body: &[u8]) {
        let answer = match crate::wire::decode::<Peer<S::Value>>(body) {
            Ok(Peer::Pull { .. }) => None,
            Ok(Peer::Answer(ex)) => Some(ex.msg()),
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "undecodable peer message dropped");
                return;
            }
        };
        match &mut self.exec {
            Exec::Inline { workers, .. } => {
                for w in workers.iter_mut() {
                    if answer.is_none_or(|m| w.expects(&m)) {
                        w.peer(body);
                    }
                }
            }
            Exec::Threads(pool) => {
                let b = Bytes::copy_from_slice(body);
                for tx in &pool.inboxes {
                    let m = match answer {
                        None => In::Pull(b.clone()),
                        Some(msg) => In::Answer(msg, b.clone()),
                    };
                    let _ = tx.send(m);
                }
            }
        }
    }

    fn tick(&mut self, now: u64) {
        if let Exec::Threads(pool) = &mut self.exec {
            if pool.ticked == now {
                return;
            }
            pool.ticked = now;
        }
        self.give_every_worker(|w| w.tick(now), || In::Tick(now));
    }

    fn run(&mut self) {
        match self.exec {
            Exec::Inline { .. } => self.run_inline(),
            Exec::Threads(_) => self.drain_pool(),
        }
        self.refresh_stats();
    }

    fn take_outputs(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.out);
    }

    fn mark_checkpoint(&mut self, round: u64) {
        self.give_every_worker(|w| w.mark_checkpoint(round), || In::Mark(round));
    }

    fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
        out.append(&mut self.snaps);
    }

    fn restored(&self, snapshot: &[u8]) -> Result<Self, CheckpointError> {
        let snap: Snapshot = decode_snapshot(snapshot, "combined partition snapshot")?;
        check_partition_snapshot(snap.partition, self.partition)?;
        let k = self.cells.workers;
        if snap.workers != k || snap.parts.len() != k as usize {
            return Err(CheckpointError::Mismatch(format!(
                "the snapshot is of a partition of {} workers ({} parts), this one has {k}",
                snap.workers,
                snap.parts.len()
            )));
        }
        let mut workers = Vec::with_capacity(k as usize);
        for (w, part) in snap.parts.iter().enumerate() {
            workers.push(PartitionServer::restore(
                self.service.clone(),
                self.cfg.clone(),
                self.node,
                self.route.base + w as u32,
                self.cells.count(),
                self.opts.clone(),
                part,
            )?);
        }
        let mut me = Self::with_workers(
            self.service.clone(),
            self.cfg.clone(),
            self.node,
            self.partition,
            self.cells.count(),
            self.opts.clone(),
            workers,
        );
        me.turn = self.turn;
        if let Some(waker) = &self.waker {
            me.waker = Some(waker.clone());
            if self.opts.worker_threads {
                me.spawn(waker);
            }
        }
        Ok(me)
    }

    fn handled(&self) -> u64 {
        match &self.exec {
            Exec::Inline { workers, .. } => workers.iter().map(|w| w.stats.handled).sum(),
            Exec::Threads(pool) => pool
                .views
                .iter()
                .map(|v| v.handled.load(Ordering::Acquire))
                .sum(),
        }
    }

    fn backlog(&self) -> usize {
        match &self.exec {
            Exec::Inline { workers, .. } => workers.iter().map(|w| w.backlog()).sum(),
            Exec::Threads(pool) => pool
                .views
                .iter()
                .map(|v| v.backlog.load(Ordering::Acquire) as usize)
                .sum(),
        }
    }

    fn state_hash(&self) -> u64 {
        match &self.exec {
            Exec::Inline { workers, .. } => {
                combine(self.partition, workers.iter().map(|w| w.state_hash()))
            }
            Exec::Threads(pool) => {
                // Asks every worker (each answers after the batch it is on).
                let asks: Vec<Receiver<u64>> = pool
                    .inboxes
                    .iter()
                    .map(|tx| {
                        let (atx, arx) = crossbeam_channel::bounded(1);
                        let _ = tx.send(In::Hash(atx));
                        arx
                    })
                    .collect();
                combine(
                    self.partition,
                    asks.iter().map(|a| a.recv().unwrap_or_default()),
                )
            }
        }
    }
}

/// One worker on its own thread.
struct WorkerThread {
    worker: usize,
    /// The CPU to pin this thread to.
    cpu: Option<usize>,
    inbox: Receiver<In>,
    peers: Vec<Sender<In>>,
    route: Route,
    outs: Sender<Out>,
    waker: Waker,
    view: Arc<View>,
}

impl WorkerThread {
    fn run<S: PartitionedService>(self, mut s: PartitionServer<S>) {
        if let Some(cpu) = self.cpu {
            if crate::topology::pin_current_thread(cpu) {
                self.view.pinned.store(cpu as u64 + 1, Ordering::Release);
            } else {
                tracing::warn!(
                    worker = self.worker,
                    cpu,
                    "could not pin combined-mode worker"
                );
            }
        }
        let mut buf = Vec::new();
        let mut snaps = Vec::new();
        let mut asks: Vec<Sender<u64>> = Vec::new();
        while let Ok(first) = self.inbox.recv() {
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    In::Stop => return,
                    In::Deliver(id, b) => s.deliver(id, &b),
                    In::Exchange(b) => s.exchange(&b),
                    In::Pull(b) => s.peer(&b),
                    In::Answer(msg, b) => {
                        if s.expects(&msg) {
                            s.peer(&b)
                        }
                    }
                    In::Tick(now) => s.tick(now),
                    In::Mark(round) => s.mark_checkpoint(round),
                    In::Hash(tx) => asks.push(tx),
                }
                next = self.inbox.try_recv().ok();
            }
            s.run();
            s.take_outputs(&mut buf);
            let mut woke = false;
            for o in buf.drain(..) {
                self.route.split(
                    o,
                    &mut |to, p| {
                        let _ = self.peers[to].send(In::Exchange(p));
                    },
                    &mut |o| {
                        woke = true;
                        let _ = self.outs.send(Out::Output(o));
                    },
                );
            }
            s.take_snapshots(&mut snaps);
            for x in snaps.drain(..) {
                woke = true;
                let _ = self.outs.send(Out::Snapshot(self.worker, x));
            }
            self.view.handled.store(s.stats.handled, Ordering::Release);
            self.view
                .backlog
                .store(s.backlog() as u64, Ordering::Release);
            self.view.stats.lock().clone_from(&s.stats);
            if !asks.is_empty() {
                let h = s.state_hash();
                for tx in asks.drain(..) {
                    let _ = tx.send(h);
                }
            }
            if woke {
                self.waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioned::layout::{self, ScaleOutLayout};
    use crate::partitioned::Scheme;
    use crate::testing::scaleout::ObjectKv;
    use crate::topology::Topology;
    use std::time::{Duration, Instant};

    /// Replica `node` of partition `partition` of a 2 x 2 S-SMR deployment, on threads.
    fn threaded(partition: u32, node: u32, pin: Option<Vec<usize>>) -> WorkerPartition<ObjectKv> {
        let lay = ScaleOutLayout::combined(Scheme::Ssmr, 2, 2, 3, 1, 1, layout::tuning()).unwrap();
        let opts = ServerOptions {
            workers: 2,
            worker_threads: true,
            pin_cpus: pin,
            ..ServerOptions::new(Scheme::Ssmr)
        };
        let mut w = WorkerPartition::new(
            Arc::new(ObjectKv { preload: 8 }),
            Arc::new(lay.config),
            NodeId(node),
            partition,
            4,
            opts,
        );
        w.start(&Waker::noop());
        w
    }

    /// The CPUs the workers report once both threads started (or what they report after 5 s).
    fn settled(w: &WorkerPartition<ObjectKv>, want: &[Option<usize>]) -> Vec<Option<usize>> {
        let by = Instant::now() + Duration::from_secs(5);
        loop {
            let got = w.worker_cpus();
            if got == want || Instant::now() > by {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn worker_threads_are_pinned_by_cell_to_the_cpus_given() {
        let cpus: Vec<usize> = Topology::detect().cpus.iter().map(|c| c.id).collect();
        let (a, b) = (cpus[0], *cpus.last().unwrap());
        // A list of `workers` CPUs places by worker, whatever the partition.
        let w = threaded(1, 4, Some(vec![b, a]));
        assert_eq!(settled(&w, &[Some(b), Some(a)]), vec![Some(b), Some(a)]);
        // A list of partitions x workers CPUs places by cell: partition 1 takes entries 2, 3.
        let w = threaded(1, 4, Some(vec![a, a, b, a]));
        assert_eq!(settled(&w, &[Some(b), Some(a)]), vec![Some(b), Some(a)]);
        let w = threaded(0, 1, Some(vec![a, b, b, b]));
        assert_eq!(settled(&w, &[Some(a), Some(b)]), vec![Some(a), Some(b)]);
        // Unpinned by default; stepped inline, nothing is pinned.
        let w = threaded(0, 1, None);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(w.worker_cpus(), vec![None, None]);
        let lay = ScaleOutLayout::combined(Scheme::Ssmr, 2, 2, 3, 1, 1, layout::tuning()).unwrap();
        let inline = WorkerPartition::new(
            Arc::new(ObjectKv { preload: 8 }),
            Arc::new(lay.config),
            NodeId(1),
            0,
            4,
            ServerOptions {
                workers: 2,
                pin_cpus: Some(vec![a]),
                ..ServerOptions::new(Scheme::Ssmr)
            },
        );
        assert_eq!(inline.worker_cpus(), vec![None, None]);
    }

    #[test]
    fn a_cpu_the_process_may_not_use_is_left_unpinned() {
        // Beyond what a CPU set can name, and (on any machine this runs on) not a CPU.
        let w = threaded(0, 1, Some(vec![usize::MAX >> 1, 1000]));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(w.worker_cpus(), vec![None, None]);
    }
}
