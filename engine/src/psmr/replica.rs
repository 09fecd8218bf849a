//! The threaded P-SMR replica.
//!
//! The replica runs on a node of a `groups` runtime (in-process or TCP) whose subscriptions
//! are `[{0}, {1}, ..., {k-1}]` and that hands out decided log entries instead of merging them
//! (`NodeOptions::merge_locally = false`). [`ReplicaApp`] runs on the node's thread: it passes
//! each log's entries to the workers that read that log (shared, not copied), sends the
//! workers' replies, and forwards their skip requests. Worker `i` runs on its own thread
//! (pinned to a core if asked): it merges the logs of group `i` itself, so no thread merges for
//! everyone, and executes what it delivers:
//! - a command for worker `i` alone runs on its shard, which it owns: no lock;
//! - a command for several workers runs on the lowest one, which collects the others' shards
//!   through the [`Rendezvous`]; the others are parked until their shard comes back.

use super::executor::{ExecOptions, Executor, Outgoing, WorkerState, WorkerStats};
use super::rendezvous::Rendezvous;
use super::snapshot::{self, Assembly, Checkpoint, Restored, WorkerPart};
use crate::checkpoint::{self, CheckpointPolicy, Recovery, Store, Transfer, Trigger};
use crate::metrics::{service_histogram, SharedWorkerStats};
use crate::psmr::service::Service;
use crate::topology::Topology;
use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use groups::ids::{LogId, MsgId, NodeId};
use groups::merge::MergerState;
use groups::merge::{Merger, SkipNeed};
use groups::node::{GroupsNode, LogEntries};
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a replica runs.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    pub workers: usize,
    /// Pin worker `i` to its own core (see [`Topology::placement`]).
    pub pin_cores: bool,
    pub exec: ExecOptions,
}

impl ReplicaOptions {
    pub fn new(workers: usize) -> Self {
        ReplicaOptions {
            workers,
            pin_cores: false,
            exec: ExecOptions::default(),
        }
    }
}

/// What a stopped replica reports.
#[derive(Clone, Debug, Default)]
pub struct ReplicaReport {
    pub workers: Vec<WorkerStats>,
    /// Hash of the final state (`None` if a worker stopped while parked).
    pub state_hash: Option<u64>,
}

enum Input {
    Entries(Arc<LogEntries>),
    Stop,
}

/// The stopped workers' counters and shards (a shard is `None` if its worker stopped while
/// parked).
type Stopped<S> = (Vec<WorkerStats>, Vec<Option<Box<<S as Service>::Shard>>>);

/// What a worker thread returns: its counters and its shard (unless it stopped while parked).
type WorkerEnd<S> = (WorkerStats, Option<Box<<S as Service>::Shard>>);

struct Running<S: Service> {
    workers: Vec<(Sender<Input>, JoinHandle<WorkerEnd<S>>)>,
    readers: BTreeMap<LogId, Vec<usize>>,
    replies: Receiver<Outgoing>,
    needs: Receiver<SkipNeed>,
    parts: Receiver<(u64, WorkerPart, u64)>,
    rendezvous: Arc<Rendezvous<MsgId, Box<S::Shard>>>,
}

/// What a replica's checkpointing did, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointLive {
    /// Checkpoints completed here (taken, or installed by a state transfer).
    pub taken: u64,
    /// Checkpoints installed from a peer.
    pub installed: u64,
    /// Checkpoints received from a peer that did not install.
    pub refused: u64,
    /// The latest checkpoint: round, size in bytes, and per log the first entry it does not
    /// cover.
    pub round: u64,
    pub bytes: u64,
    pub positions: Vec<(LogId, u64)>,
    /// [`Service::state_hash`] of the latest checkpoint's state, once computed (on a helper
    /// thread, from the checkpoint's bytes): equal at every replica for the same round.
    pub state_hash: Option<(u64, u64)>,
    /// For the latest checkpoint taken here: the longest a worker took to record its part
    /// (the worker's pause), and the node thread's time to encode the whole checkpoint.
    pub take_us: u64,
    pub assemble_us: u64,
    /// The latest state transfer: microseconds to fetch the checkpoint, and to install it.
    pub transfer_us: u64,
    pub install_us: u64,
    /// Chunks sent to peers recovering from this replica.
    pub chunks_sent: u64,
}

/// A replica's checkpoint counters, readable from other threads.
pub type SharedCheckpoints = Arc<parking_lot::Mutex<CheckpointLive>>;

/// The node thread's checkpoint machinery.
struct Checkpoints {
    trigger: Option<Trigger>,
    assembly: Assembly,
    /// Per round in assembly, the longest a worker took to record its part.
    part_us: BTreeMap<u64, u64>,
    store: Store,
    recovery: Option<(Recovery, Instant)>,
    resend_ticks: u64,
    /// Commands the workers executed (this process).
    executed: Arc<AtomicU64>,
    live: SharedCheckpoints,
    app_in: Vec<(NodeId, Bytes)>,
    app_out: Vec<(NodeId, Bytes)>,
}

/// A P-SMR / opt-PSMR replica, as the application of a `groups` node.
pub struct ReplicaApp<S: Service> {
    service: Arc<S>,
    options: ReplicaOptions,
    running: Option<Running<S>>,
    entries: Vec<LogEntries>,
    live: Vec<SharedWorkerStats>,
    ckpt: Checkpoints,
    waker: Option<Waker>,
    pub report: Option<ReplicaReport>,
}

impl<S: Service> ReplicaApp<S> {
    pub fn new(service: Arc<S>, options: ReplicaOptions) -> Self {
        assert!(options.workers > 0, "a replica needs a worker");
        let live = (0..options.workers)
            .map(|_| SharedWorkerStats::default())
            .collect();
        ReplicaApp {
            service,
            options,
            running: None,
            entries: Vec::new(),
            live,
            ckpt: Checkpoints {
                trigger: None,
                assembly: Assembly::default(),
                part_us: BTreeMap::new(),
                store: Store::default(),
                recovery: None,
                resend_ticks: CheckpointPolicy::default().resend_ticks,
                executed: Arc::new(AtomicU64::new(0)),
                live: SharedCheckpoints::default(),
                app_in: Vec::new(),
                app_out: Vec::new(),
            },
            waker: None,
            report: None,
        }
    }

    /// Asks for checkpoints by `policy` (see [`crate::checkpoint`]); the replica then reports
    /// its checkpoints to the log acceptors, which trim below them. Without it the replica
    /// still takes part in checkpoint rounds other replicas ask for, serves its checkpoints
    /// to peers, and recovers by state transfer when a log was trimmed past it.
    pub fn with_checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.ckpt.trigger = Some(Trigger::new(policy));
        self.ckpt.resend_ticks = policy.resend_ticks;
        self
    }

    /// The replica's checkpoint counters (see [`crate::metrics::render_checkpoints`]).
    pub fn share_checkpoints(&self) -> SharedCheckpoints {
        self.ckpt.live.clone()
    }

    /// Starts the worker threads, from the initial state or a restored checkpoint.
    fn spawn(&mut self, node: &GroupsNode, restored: Option<Restored<S>>) {
        let Some(waker) = self.waker.clone() else {
            return;
        };
        let cfg = node.config().clone();
        let me = node.id();
        let subs = cfg
            .node(me)
            .map(|n| n.subscriptions.clone())
            .unwrap_or_default();
        let k = self.options.workers;
        let executor = Arc::new(Executor::new(
            self.service.clone(),
            k,
            me,
            self.options.exec.clone(),
        ));
        let rendezvous = Arc::new(Rendezvous::new(k));
        let (reply_tx, replies) = unbounded();
        let (need_tx, needs) = unbounded();
        let (part_tx, parts) = unbounded();
        let placement = self
            .options
            .pin_cores
            .then(|| Topology::detect().placement(k));
        let mut readers: BTreeMap<LogId, Vec<usize>> = BTreeMap::new();
        let mut workers = Vec::new();
        let (shards, states, mergers) = match restored {
            Some(r) => (
                r.shards,
                r.states,
                r.mergers.into_iter().map(Some).collect(),
            ),
            None => (
                self.service.shards(k),
                (0..k).map(WorkerState::new).collect(),
                (0..k).map(|_| None).collect::<Vec<_>>(),
            ),
        };
        for (i, ((shard, state), merger)) in shards.into_iter().zip(states).zip(mergers).enumerate()
        {
            let logs = cfg.logs_for(&subs[i]);
            for &l in &logs {
                readers.entry(l).or_default().push(i);
            }
            let merger =
                merger.unwrap_or_else(|| Merger::new(&logs, subs[i].clone(), cfg.tuning.merge_m));
            let (tx, rx) = unbounded();
            let w = Worker {
                id: i,
                executor: executor.clone(),
                rendezvous: rendezvous.clone(),
                merger,
                inbox: rx,
                replies: reply_tx.clone(),
                needs: need_tx.clone(),
                parts: part_tx.clone(),
                executed: self.ckpt.executed.clone(),
                waker: waker.clone(),
                cpu: placement.as_ref().map(|p| p[i]),
                live: self.live[i].clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("replica-{}-w{i}", me.0))
                .spawn(move || w.run(Box::new(shard), state))
                .expect("spawn worker");
            workers.push((tx, thread));
        }
        self.running = Some(Running {
            workers,
            readers,
            replies,
            needs,
            parts,
            rendezvous,
        });
    }

    /// Stops the worker threads; returns their counters and shards.
    fn stop(&mut self) -> Option<Stopped<S>> {
        let r = self.running.take()?;
        for (tx, _) in &r.workers {
            let _ = tx.send(Input::Stop);
        }
        r.rendezvous.close();
        let mut stats = Vec::new();
        let mut shards = Vec::new();
        for (_, t) in r.workers {
            if let Ok((s, shard)) = t.join() {
                stats.push(s);
                shards.push(shard);
            }
        }
        Some((stats, shards))
    }

    /// Asks for checkpoints when due, assembles the workers' parts, answers peers' transfer
    /// requests, and recovers by state transfer when a log was trimmed past this replica.
    fn pump_checkpoints(&mut self, node: &mut GroupsNode) {
        let now = node.now();
        let mut done = Vec::new();
        if let Some(r) = self.running.as_ref() {
            while let Ok((round, part, us)) = r.parts.try_recv() {
                let m = self.ckpt.part_us.entry(round).or_default();
                *m = (*m).max(us);
                if let Some(ck) = self.ckpt.assembly.add(round, self.options.workers, part) {
                    done.push(ck);
                }
            }
        }
        for ck in done {
            let started = Instant::now();
            let bytes = ck.encode();
            let us = started.elapsed().as_micros() as u64;
            let take_us = self.ckpt.part_us.remove(&ck.round).unwrap_or(0);
            self.ckpt.part_us = self.ckpt.part_us.split_off(&ck.round);
            self.completed(node, &ck, bytes);
            let mut live = self.ckpt.live.lock();
            live.assemble_us = us;
            live.take_us = take_us;
        }
        let latest = self.ckpt.store.latest().map_or(0, |(r, _)| r);
        let executed = self.ckpt.executed.load(Ordering::Relaxed);
        let round = self
            .ckpt
            .trigger
            .as_mut()
            .and_then(|t| t.poll(latest, executed, now));
        if let (Some(round), None) = (round, &self.ckpt.recovery) {
            let all: groups::GroupSet = (0..self.options.workers as u32)
                .map(groups::ids::GroupId)
                .collect();
            let _ = node.multicast(all, checkpoint::request(round));
        }
        let mut events = Vec::new();
        node.take_events(&mut events);
        if !events.is_empty() && self.ckpt.recovery.is_none() {
            tracing::warn!(replica = %node.id(), ?events, "log trimmed past this replica: recovering by state transfer");
            let peers = checkpoint::peers_of(node.config(), node.id());
            let rec = Recovery::start(peers, self.ckpt.resend_ticks, now, &mut self.ckpt.app_out);
            self.ckpt.recovery = Some((rec, Instant::now()));
        }
        node.take_app(&mut self.ckpt.app_in);
        let inbox = std::mem::take(&mut self.ckpt.app_in);
        for (from, bytes) in inbox {
            let Ok(msg) = transfer_in(&bytes) else {
                tracing::debug!(%from, "application message that is not a transfer message; dropped");
                continue;
            };
            match msg {
                Transfer::Get { round, offset } => {
                    let answer = self.ckpt.store.answer(round, offset);
                    self.ckpt.app_out.push((from, answer.encode()));
                    self.ckpt.live.lock().chunks_sent = self.ckpt.store.chunks_sent;
                }
                other => {
                    let Some((r, _)) = self.ckpt.recovery.as_mut() else {
                        continue;
                    };
                    if let Some(whole) = r.on_message(from, other, now, &mut self.ckpt.app_out) {
                        self.install(node, whole);
                    }
                }
            }
        }
        if let Some((r, _)) = self.ckpt.recovery.as_mut() {
            r.tick(now, &mut self.ckpt.app_out);
        }
        for (to, bytes) in self.ckpt.app_out.drain(..) {
            node.send_app(to, bytes);
        }
    }

    /// A checkpoint is complete here (taken, or installed): keep it, report its positions,
    /// and hash its state on a helper thread.
    fn completed(&mut self, node: &mut GroupsNode, ck: &Checkpoint, bytes: Bytes) {
        let positions = ck.positions();
        node.set_checkpointed(&positions);
        {
            let mut live = self.ckpt.live.lock();
            live.taken += 1;
            live.round = ck.round;
            live.bytes = bytes.len() as u64;
            live.positions = positions;
        }
        self.ckpt.store.set(ck.round, bytes.clone());
        let executed = self.ckpt.executed.load(Ordering::Relaxed);
        if let Some(t) = self.ckpt.trigger.as_mut() {
            t.taken(executed, node.now());
        }
        let service = self.service.clone();
        let cfg = node.config().clone();
        let subs = cfg
            .node(node.id())
            .map(|n| n.subscriptions.clone())
            .unwrap_or_default();
        let live = self.ckpt.live.clone();
        let round = ck.round;
        let _ = std::thread::Builder::new()
            .name("checkpoint-hash".into())
            .spawn(move || {
                let restored = Checkpoint::decode(&bytes)
                    .and_then(|c| snapshot::restore(&*service, &c, &cfg, &subs));
                if let Ok(r) = restored {
                    let all: Vec<&S::Shard> = r.shards.iter().collect();
                    let h = service.state_hash(&all);
                    let mut l = live.lock();
                    if l.state_hash.is_none_or(|(x, _)| x <= round) {
                        l.state_hash = Some((round, h));
                    }
                }
            });
    }

    /// Installs a checkpoint received from a peer: the workers are stopped and started again
    /// from it, and the feeds restart at its positions.
    fn install(&mut self, node: &mut GroupsNode, bytes: Bytes) {
        let fetched_us = self
            .ckpt
            .recovery
            .as_ref()
            .map_or(0, |(_, at)| at.elapsed().as_micros() as u64);
        let started = Instant::now();
        let cfg = node.config().clone();
        let subs = cfg
            .node(node.id())
            .map(|n| n.subscriptions.clone())
            .unwrap_or_default();
        let restored = Checkpoint::decode(&bytes)
            .and_then(|c| snapshot::restore(&*self.service, &c, &cfg, &subs).map(|r| (c, r)));
        let (ck, r) = match restored {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(replica = %node.id(), error = %e, "checkpoint from a peer refused");
                self.ckpt.live.lock().refused += 1;
                if let Some((rec, _)) = self.ckpt.recovery.as_mut() {
                    rec.next_peer(node.now(), &mut self.ckpt.app_out);
                }
                return;
            }
        };
        self.stop();
        self.entries.clear();
        let mut stale = Vec::new();
        node.take_entries(&mut stale);
        self.ckpt.assembly = Assembly::default();
        self.ckpt.part_us.clear();
        self.spawn(node, Some(r));
        let positions = ck.positions();
        node.restart_feeds(&positions);
        self.completed(node, &ck, bytes);
        self.ckpt.recovery = None;
        let mut live = self.ckpt.live.lock();
        live.installed += 1;
        live.transfer_us = fetched_us;
        live.install_us = started.elapsed().as_micros() as u64;
        tracing::info!(replica = %node.id(), round = ck.round, bytes = live.bytes, transfer_us = fetched_us, install_us = live.install_us, "checkpoint installed");
    }

    /// The workers' live counters and service times (one per worker, in worker order), which
    /// each worker refreshes after every batch of deliveries it executes (see
    /// [`crate::metrics::render_workers`]).
    pub fn share_worker_stats(&self) -> Vec<SharedWorkerStats> {
        self.live.clone()
    }
}

impl<S: Service> App for ReplicaApp<S> {
    fn attach(&mut self, node: &mut GroupsNode, waker: Waker) {
        let cfg = node.config().clone();
        let me = node.id();
        let subs = cfg
            .node(me)
            .map(|n| n.subscriptions.clone())
            .unwrap_or_default();
        let k = self.options.workers;
        assert_eq!(
            subs.len(),
            k,
            "replica {me} must subscribe to one group per worker ({k}), it has {subs:?}"
        );
        self.waker = Some(waker);
        if self.ckpt.trigger.is_some() {
            // A replica that checkpoints says so from the start (its initial state is a
            // checkpoint at position 0), so acceptors hold it to the checkpoint rule.
            let start: Vec<(LogId, u64)> = cfg.logs.iter().map(|l| (l.id, 0)).collect();
            node.set_checkpointed(&start);
        }
        self.spawn(node, None);
    }

    fn step(&mut self, node: &mut GroupsNode) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        node.take_entries(&mut self.entries);
        for e in self.entries.drain(..) {
            let e = Arc::new(e);
            for &w in r.readers.get(&e.log).map(Vec::as_slice).unwrap_or(&[]) {
                let _ = r.workers[w].0.send(Input::Entries(e.clone()));
            }
        }
        while let Ok((to, bytes)) = r.replies.try_recv() {
            node.send_app(to, bytes);
        }
        while let Ok(need) = r.needs.try_recv() {
            node.request_skip(need);
        }
        self.pump_checkpoints(node);
    }

    fn detach(&mut self, _node: &mut GroupsNode) {
        let Some((stats, shards)) = self.stop() else {
            return;
        };
        let mut report = ReplicaReport {
            workers: stats,
            ..ReplicaReport::default()
        };
        if shards.iter().all(Option::is_some) {
            let all: Vec<&S::Shard> = shards
                .iter()
                .map(|s| &**s.as_ref().expect("checked"))
                .collect();
            report.state_hash = Some(self.service.state_hash(&all));
        }
        self.report = Some(report);
    }
}

/// The transfer message in an application message, if it is one.
pub(crate) fn transfer_in(bytes: &[u8]) -> Result<Transfer, String> {
    match crate::wire::AppMsg::parse(bytes) {
        Ok(crate::wire::AppMsg::Transfer(body)) => {
            Transfer::decode(body).map_err(|e| e.to_string())
        }
        Ok(_) => Err("not a transfer message".into()),
        Err(e) => Err(e.to_string()),
    }
}

struct Worker<S: Service> {
    id: usize,
    executor: Arc<Executor<S>>,
    rendezvous: Arc<Rendezvous<MsgId, Box<S::Shard>>>,
    merger: Merger,
    inbox: Receiver<Input>,
    replies: Sender<Outgoing>,
    needs: Sender<SkipNeed>,
    parts: Sender<(u64, WorkerPart, u64)>,
    executed: Arc<AtomicU64>,
    waker: Waker,
    cpu: Option<usize>,
    live: SharedWorkerStats,
}

/// How often a blocked worker repeats its skip request.
const NEED_REPEAT: Duration = Duration::from_millis(5);
/// How often a worker adds its recent service times to its shared histogram at most.
const PUBLISH_TIMES: Duration = Duration::from_millis(100);

impl<S: Service> Worker<S> {
    fn run(
        mut self,
        shard: Box<S::Shard>,
        mut state: WorkerState<S>,
    ) -> (WorkerStats, Option<Box<S::Shard>>) {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                tracing::warn!(worker = self.id, cpu, "could not pin worker");
            }
        }
        let mut shard = Some(shard);
        // The merger's position at each checkpoint request among `deliveries`.
        let mut marks: std::collections::VecDeque<MergerState> = Default::default();
        let workers = self.executor.workers;
        let mut deliveries = Vec::new();
        let mut last_need: Option<(SkipNeed, Instant)> = None;
        let mut times = service_histogram();
        let mut times_published = Instant::now();
        'outer: loop {
            let first = match self.inbox.recv_timeout(NEED_REPEAT) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Nothing arrived for a while: publish what is left of the service times.
            let idle = first.is_none();
            let mut input = first;
            while let Some(i) = input {
                match i {
                    Input::Entries(e) => self
                        .merger
                        .push(e.log, e.start, &e.entries)
                        .expect("the node hands out contiguous entries"),
                    Input::Stop => break 'outer,
                }
                input = self.inbox.try_recv().ok();
            }
            let received = Instant::now();
            while self.merger.poll_until(&mut deliveries, |m| {
                checkpoint::round_of(m, workers).is_some()
            }) {
                marks.push_back(self.merger.state());
            }
            let executed = !deliveries.is_empty();
            let mut replied = false;
            for d in deliveries.drain(..) {
                let Some(job) = self.executor.decode(&d) else {
                    continue;
                };
                if let Some(round) = job.checkpoint_round() {
                    // Every worker records its own part at this point of its stream; no
                    // rendezvous (see crate::checkpoint).
                    let mark = marks.pop_front();
                    if round > state.checkpoint_round {
                        state.checkpoint_round = round;
                        if let (Some(mark), Some(s)) = (mark, shard.as_ref()) {
                            let t = Instant::now();
                            let part = WorkerPart::take(&*self.executor.service, &state, s, mark);
                            let us = t.elapsed().as_micros() as u64;
                            let _ = self.parts.send((round, part, us));
                            replied = true;
                        }
                    }
                    continue;
                }
                self.executed.fetch_add(1, Ordering::Relaxed);
                let out = if job.involved.len() == 1 {
                    let s = shard
                        .as_mut()
                        .expect("a worker owns its shard between commands");
                    self.executor.run_single(&mut state, s, &job)
                } else if job.executor() == self.id {
                    let Ok(lent) = self
                        .rendezvous
                        .collect(self.id, job.id, job.involved.len() - 1)
                    else {
                        break 'outer;
                    };
                    let mut mine = shard.take().expect("own shard");
                    let mut lent = lent;
                    let out = {
                        let mut refs: Vec<(usize, &mut S::Shard)> =
                            Vec::with_capacity(lent.len() + 1);
                        refs.push((self.id, &mut *mine));
                        refs.extend(lent.iter_mut().map(|(w, s)| (*w, &mut **s)));
                        refs.sort_by_key(|(w, _)| *w);
                        self.executor.run_multi(&mut state, &mut refs, &job)
                    };
                    shard = Some(mine);
                    for (w, s) in lent {
                        self.rendezvous.give_back(w, job.id, s);
                    }
                    out
                } else {
                    state.stats.parked += 1;
                    let mine = shard.take().expect("own shard");
                    match self.rendezvous.lend(self.id, job.executor(), job.id, mine) {
                        Ok(back) => shard = Some(back),
                        Err(_) => break 'outer,
                    }
                    None
                };
                if let Some(o) = out {
                    let _ = self.replies.send(o);
                    replied = true;
                    times.saturating_record(received.elapsed().as_micros() as u64);
                }
            }
            if executed || (idle && !times.is_empty()) {
                let now = Instant::now();
                let mut live = self.live.lock();
                live.stats.clone_from(&state.stats);
                if idle || now >= times_published + PUBLISH_TIMES {
                    times_published = now;
                    // Same bounds: adding cannot fail.
                    let _ = live.service_us.add(&times);
                    drop(live);
                    times.reset();
                }
            }
            let need = self.merger.blocked_on();
            let now = Instant::now();
            if let Some(n) = need {
                let repeat = last_need.is_none_or(|(l, at)| l != n || now >= at + NEED_REPEAT);
                if repeat {
                    let _ = self.needs.send(n);
                    last_need = Some((n, now));
                    replied = true;
                }
            }
            if replied {
                self.waker.wake();
            }
        }
        let mut live = self.live.lock();
        live.stats.clone_from(&state.stats);
        let _ = live.service_us.add(&times);
        drop(live);
        (state.stats, shard)
    }
}
