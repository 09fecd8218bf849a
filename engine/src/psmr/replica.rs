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

use super::core::{ExecOptions, Executor, Outgoing, WorkerState, WorkerStats};
use super::rendezvous::Rendezvous;
use crate::metrics::{service_histogram, SharedWorkerStats};
use crate::service::Service;
use crate::topology::Topology;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use groups::ids::{LogId, MsgId};
use groups::merge::{Merger, SkipNeed};
use groups::node::{GroupsNode, LogEntries};
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use std::collections::BTreeMap;
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

/// What a worker thread returns: its counters and its shard (unless it stopped while parked).
type WorkerEnd<S> = (WorkerStats, Option<Box<<S as Service>::Shard>>);

struct Running<S: Service> {
    workers: Vec<(Sender<Input>, JoinHandle<WorkerEnd<S>>)>,
    readers: BTreeMap<LogId, Vec<usize>>,
    replies: Receiver<Outgoing>,
    needs: Receiver<SkipNeed>,
    rendezvous: Arc<Rendezvous<MsgId, Box<S::Shard>>>,
}

/// A P-SMR / opt-PSMR replica, as the application of a `groups` node.
pub struct ReplicaApp<S: Service> {
    service: Arc<S>,
    options: ReplicaOptions,
    running: Option<Running<S>>,
    entries: Vec<LogEntries>,
    live: Vec<SharedWorkerStats>,
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
            report: None,
        }
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
        let executor = Arc::new(Executor::new(
            self.service.clone(),
            k,
            me,
            self.options.exec.clone(),
        ));
        let rendezvous = Arc::new(Rendezvous::new(k));
        let (reply_tx, replies) = unbounded();
        let (need_tx, needs) = unbounded();
        let placement = self
            .options
            .pin_cores
            .then(|| Topology::detect().placement(k));
        let mut readers: BTreeMap<LogId, Vec<usize>> = BTreeMap::new();
        let mut workers = Vec::new();
        for (i, shard) in self.service.shards(k).into_iter().enumerate() {
            let logs = cfg.logs_for(&subs[i]);
            for &l in &logs {
                readers.entry(l).or_default().push(i);
            }
            let merger = Merger::new(&logs, subs[i].clone(), cfg.tuning.merge_m);
            let (tx, rx) = unbounded();
            let w = Worker {
                id: i,
                executor: executor.clone(),
                rendezvous: rendezvous.clone(),
                merger,
                inbox: rx,
                replies: reply_tx.clone(),
                needs: need_tx.clone(),
                waker: waker.clone(),
                cpu: placement.as_ref().map(|p| p[i]),
                live: self.live[i].clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("replica-{}-w{i}", me.0))
                .spawn(move || w.run(Box::new(shard)))
                .expect("spawn worker");
            workers.push((tx, thread));
        }
        self.running = Some(Running {
            workers,
            readers,
            replies,
            needs,
            rendezvous,
        });
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
    }

    fn detach(&mut self, _node: &mut GroupsNode) {
        let Some(r) = self.running.take() else {
            return;
        };
        for (tx, _) in &r.workers {
            let _ = tx.send(Input::Stop);
        }
        r.rendezvous.close();
        let mut report = ReplicaReport::default();
        let mut shards = Vec::new();
        for (_, t) in r.workers {
            if let Ok((stats, shard)) = t.join() {
                report.workers.push(stats);
                shards.push(shard);
            }
        }
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

struct Worker<S: Service> {
    id: usize,
    executor: Arc<Executor<S>>,
    rendezvous: Arc<Rendezvous<MsgId, Box<S::Shard>>>,
    merger: Merger,
    inbox: Receiver<Input>,
    replies: Sender<Outgoing>,
    needs: Sender<SkipNeed>,
    waker: Waker,
    cpu: Option<usize>,
    live: SharedWorkerStats,
}

/// How often a blocked worker repeats its skip request.
const NEED_REPEAT: Duration = Duration::from_millis(5);
/// How often a worker adds its recent service times to its shared histogram at most.
const PUBLISH_TIMES: Duration = Duration::from_millis(100);

impl<S: Service> Worker<S> {
    fn run(mut self, shard: Box<S::Shard>) -> (WorkerStats, Option<Box<S::Shard>>) {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                tracing::warn!(worker = self.id, cpu, "could not pin worker");
            }
        }
        let mut state = WorkerState::<S>::new(self.id);
        let mut shard = Some(shard);
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
            self.merger.poll(&mut deliveries);
            let executed = !deliveries.is_empty();
            let mut replied = false;
            for d in deliveries.drain(..) {
                let Some(job) = self.executor.decode(&d) else {
                    continue;
                };
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
