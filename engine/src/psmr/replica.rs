//! The P-SMR replica core: a [`WorkerSet`] run by a [`Driver`], as a [`ReplicaCore`].
//!
//! The replica's node subscribes to `[{0}, {1}, ..., {k-1}]` and hands out decided log entries
//! (`NodeOptions::merge_locally = false`); the core passes each log's entries to the workers
//! that read that log, and every worker merges its own group's logs ([`super::workers`]). What
//! the workers produce comes back here: replies become messages to the clients' nodes, skip
//! requests go to the logs' acceptors, and the workers' checkpoint parts are assembled into
//! checkpoints ([`super::snapshot`]) that the host keeps, reports and serves. Installing a
//! peer's checkpoint stops the workers and starts new ones from it.
//!
//! The driver runs the workers: [`super::threaded::Threads`] (one thread per worker, in
//! production) or [`super::scheduled::Scheduled`] (a seeded scheduler, in the simulator). Both
//! run the same [`super::workers::Worker::step`].

use super::executor::{ExecOptions, Executor, ReadJob, WorkerStats};
use super::msg::{Outcome, Reply, Request};
use super::service::Service;
use super::service::Target;
use super::snapshot::{self, Assembly, Checkpoint};
use super::workers::{Lent, WorkerEvent, WorkerSet};
use crate::checkpoint::CheckpointError;
use crate::host::replica::{CoreOut, Installed, ReplicaCore, Taken};
use crate::host::{Action, Attached};
use crate::wire::{self, AppMsg};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{LogId, NodeId};
use groups::merge::{Delivery, SkipNeed};
use groups::node::LogEntries;
use groups::runtime::Waker;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a replica runs.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    pub workers: usize,
    /// Pin worker `i` to its own core (threads only; see
    /// [`crate::topology::Topology::placement`]).
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
    /// Hash of the final state (`None` if a worker stopped while its shard was lent).
    pub state_hash: Option<u64>,
}

/// What runs a replica's workers (see the module docs).
pub trait Driver<S: Service>: Send + 'static {
    /// Starts running `set`; `waker` wakes the node's loop.
    fn start(&mut self, set: WorkerSet<S>, waker: &Waker);
    /// Hands decided entries to the workers that read their logs.
    fn entries(&mut self, batch: &mut Vec<LogEntries>);
    /// Hands worker `worker` a read to serve (see [`super::workers`], "Reads"); dropped if
    /// the workers are not running (the client sends it again).
    fn read(&mut self, worker: usize, job: ReadJob<S::Command>);
    /// Lets the workers run (a scheduler runs them now; threads run on their own) and
    /// collects what they produced and the skips their mergers need.
    fn run(&mut self, events: &mut Vec<WorkerEvent>, needs: &mut Vec<SkipNeed>);
    /// Stops the workers; returns their counters and shards (`None`: stopped while lent).
    fn stop(&mut self) -> Vec<(WorkerStats, Option<Lent<S>>)>;
    /// Commands the workers took from their streams, over every start of this driver.
    fn executed(&self) -> u64;
    /// Microseconds for durations reported in metrics (0 where nothing is measured).
    fn clock_us(&self) -> u64 {
        0
    }
    /// A checkpoint of `round` was taken: a driver may compute its state hash off the
    /// workers' path and hand it back from [`Driver::hashes`].
    fn taken(&mut self, _round: u64, _bytes: &Bytes, _restore: Restorer<S>) {}
    /// State hashes computed since the last call: (round, hash).
    fn hashes(&mut self, _out: &mut Vec<(u64, u64)>) {}
}

/// What rebuilds a replica's state from a checkpoint's bytes (for a driver that hashes
/// checkpoints elsewhere).
pub struct Restorer<S: Service> {
    pub service: Arc<S>,
    pub config: Arc<ClusterConfig>,
    pub subscriptions: Vec<GroupSet>,
}

impl<S: Service> Restorer<S> {
    /// The state hash of the checkpoint in `bytes`.
    pub fn state_hash(&self, bytes: &[u8]) -> Result<u64, CheckpointError> {
        let ck = Checkpoint::decode(bytes)?;
        let r = snapshot::restore(&*self.service, &ck, &self.config, &self.subscriptions)?;
        let all: Vec<&S::Shard> = r.shards.iter().collect();
        Ok(self.service.state_hash(&all))
    }
}

/// A P-SMR / opt-PSMR replica's core (see the module docs).
pub struct PsmrCore<S: Service, D: Driver<S>> {
    service: Arc<S>,
    options: ReplicaOptions,
    pub driver: D,
    started: Option<Started<S>>,
    assembly: Assembly,
    /// Per round in assembly, the longest a worker paused to record its part.
    part_us: BTreeMap<u64, u64>,
    events: Vec<WorkerEvent>,
    needs: Vec<SkipNeed>,
    /// Filled when the node stops.
    pub report: Option<ReplicaReport>,
    reads: Reads<S::Command>,
}

/// Reads served off the log (see [`super::workers`], "Reads"): those that arrived since the
/// last read index was asked for, and those waiting for theirs.
struct Reads<C> {
    /// Every log this replica's workers read.
    logs: Vec<LogId>,
    new: Vec<(usize, Request, C)>,
    asked: BTreeMap<u64, Vec<(usize, Request, C)>>,
    next_token: u64,
    /// Refusals to send: (client node, encoded reply).
    refused: Vec<(NodeId, Bytes)>,
}

struct Started<S: Service> {
    me: NodeId,
    cfg: Arc<ClusterConfig>,
    subs: Vec<GroupSet>,
    executor: Arc<Executor<S>>,
    waker: Waker,
}

impl<S: Service, D: Driver<S>> PsmrCore<S, D> {
    pub fn new(service: Arc<S>, options: ReplicaOptions, driver: D) -> Self {
        assert!(options.workers > 0, "a replica needs a worker");
        PsmrCore {
            service,
            options,
            driver,
            started: None,
            assembly: Assembly::default(),
            part_us: BTreeMap::new(),
            events: Vec::new(),
            needs: Vec::new(),
            report: None,
            reads: Reads {
                logs: Vec::new(),
                new: Vec::new(),
                asked: BTreeMap::new(),
                next_token: 0,
                refused: Vec::new(),
            },
        }
    }

    pub fn options(&self) -> &ReplicaOptions {
        &self.options
    }

    fn restorer(&self) -> Option<Restorer<S>> {
        self.started.as_ref().map(|s| Restorer {
            service: self.service.clone(),
            config: s.cfg.clone(),
            subscriptions: s.subs.clone(),
        })
    }
}

impl<S: Service, D: Driver<S>> ReplicaCore for PsmrCore<S, D> {
    fn reads_entries(&self) -> bool {
        true
    }

    fn start(&mut self, at: &Attached) {
        let subs = at
            .config
            .node(at.id)
            .map(|n| n.subscriptions.clone())
            .unwrap_or_default();
        let k = self.options.workers;
        assert_eq!(
            subs.len(),
            k,
            "replica {} must subscribe to one group per worker ({k}), it has {subs:?}",
            at.id
        );
        let executor = Arc::new(Executor::new(
            self.service.clone(),
            k,
            at.id,
            self.options.exec.clone(),
        ));
        let set = WorkerSet::new(executor.clone(), &at.config, &subs, None);
        let mut logs: Vec<LogId> = set.readers.keys().copied().collect();
        logs.sort_unstable();
        self.reads.logs = logs;
        self.driver.start(set, &at.waker);
        self.started = Some(Started {
            me: at.id,
            cfg: at.config.clone(),
            subs,
            executor,
            waker: at.waker.clone(),
        });
    }

    fn entries(&mut self, batch: &mut Vec<LogEntries>) {
        self.driver.entries(batch);
    }

    fn delivered(&mut self, d: Delivery) {
        tracing::warn!(id = %d.msg.id, "a P-SMR replica merges its logs itself; a merged delivery is dropped");
    }

    fn read(&mut self, from: NodeId, body: &[u8]) {
        let Some(s) = self.started.as_ref() else {
            return;
        };
        let request: Request = match wire::decode(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%from, error = %e, "undecodable read dropped");
                return;
            }
        };
        let k = self.options.workers;
        let checked = wire::decode::<S::Command>(&request.command)
            .map_err(|e| format!("not a {} command: {e}", self.service.name()))
            .and_then(|command| {
                if !self.service.read_only(&command) {
                    return Err(format!(
                        "{command:?} is not read-only; it goes through the log"
                    ));
                }
                match (k, self.service.conservative(&command, k)) {
                    (1, _) => Ok((0, command)),
                    (_, Target::One(w)) if w < k => Ok((w, command)),
                    (_, t) => Err(format!(
                        "a read off the log runs on one worker; {command:?} maps to {t:?}"
                    )),
                }
            });
        match checked {
            Ok((worker, command)) => self.reads.new.push((worker, request, command)),
            Err(why) => {
                let reply: Reply<S::Reply> =
                    Reply::to(&request, s.me, Outcome::Rejected(why), None);
                let to_client = AppMsg::to_client(request.client, &reply);
                self.reads.refused.push((request.client.node(), to_client));
            }
        }
    }

    fn read_index(&mut self, token: u64, positions: Vec<(LogId, u64)>) {
        let Some(reads) = self.reads.asked.remove(&token) else {
            return;
        };
        let positions: Arc<[(LogId, u64)]> = positions.into();
        for (worker, request, command) in reads {
            self.driver.read(
                worker,
                ReadJob {
                    request,
                    command,
                    positions: positions.clone(),
                },
            );
        }
    }

    fn step(&mut self, _now: u64, out: &mut CoreOut) {
        // One read index for every read that arrived since the last one was asked for.
        if !self.reads.new.is_empty() {
            let token = self.reads.next_token;
            self.reads.next_token += 1;
            let batch = std::mem::take(&mut self.reads.new);
            self.reads.asked.insert(token, batch);
            out.actions.push(Action::ReadIndex {
                token,
                logs: self.reads.logs.clone(),
            });
        }
        out.actions.extend(
            self.reads
                .refused
                .drain(..)
                .map(|(to, bytes)| Action::Send(to, bytes)),
        );
        self.driver.run(&mut self.events, &mut self.needs);
        let k = self.options.workers;
        let mut done = Vec::new();
        for e in self.events.drain(..) {
            match e {
                WorkerEvent::Reply(to, bytes) => out.actions.push(Action::Send(to, bytes)),
                WorkerEvent::Part {
                    round,
                    part,
                    pause_us,
                } => {
                    let m = self.part_us.entry(round).or_default();
                    *m = (*m).max(pause_us);
                    if let Some(ck) = self.assembly.add(round, k, part) {
                        done.push(ck);
                    }
                }
            }
        }
        out.actions
            .extend(self.needs.drain(..).map(Action::RequestSkip));
        for ck in done {
            let t0 = self.driver.clock_us();
            let bytes = ck.encode();
            let assemble_us = self.driver.clock_us().saturating_sub(t0);
            let take_us = self.part_us.remove(&ck.round).unwrap_or(0);
            self.part_us = self.part_us.split_off(&ck.round);
            if let Some(r) = self.restorer() {
                self.driver.taken(ck.round, &bytes, r);
            }
            out.taken.push(Taken {
                round: ck.round,
                positions: ck.positions(),
                bytes,
                state_hash: None,
                take_us,
                assemble_us,
            });
        }
        self.driver.hashes(&mut out.hashes);
    }

    fn install(&mut self, bytes: &Bytes) -> Result<Installed, CheckpointError> {
        let t0 = self.driver.clock_us();
        let Some(s) = self.started.as_ref() else {
            return Err(CheckpointError::Mismatch(
                "the replica has not started".into(),
            ));
        };
        let ck = Checkpoint::decode(bytes)?;
        let restored = snapshot::restore(&*self.service, &ck, &s.cfg, &s.subs)?;
        self.driver.stop();
        self.assembly = Assembly::default();
        self.part_us.clear();
        let set = WorkerSet::new(s.executor.clone(), &s.cfg, &s.subs, Some(restored));
        self.driver.start(set, &s.waker);
        tracing::debug!(replica = %s.me, round = ck.round, "workers restarted from a checkpoint");
        Ok(Installed {
            round: ck.round,
            positions: ck.positions(),
            state_hash: None,
            install_us: self.driver.clock_us().saturating_sub(t0),
        })
    }

    fn executed(&self) -> u64 {
        self.driver.executed()
    }

    fn stop(&mut self) {
        let stopped = self.driver.stop();
        let mut report = ReplicaReport::default();
        let mut shards = Vec::new();
        for (stats, shard) in stopped {
            report.workers.push(stats);
            shards.push(shard);
        }
        let all: Option<Vec<&S::Shard>> = shards.iter().map(|s| s.as_deref()).collect();
        report.state_hash = all
            .filter(|a| !a.is_empty())
            .map(|a| self.service.state_hash(&a));
        self.report = Some(report);
    }
}
