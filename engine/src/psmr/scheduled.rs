//! The simulator's driver of a P-SMR replica's workers: a seeded scheduler on one thread.
//!
//! The workers are the production ones ([`Worker`], stepped by [`Worker::step`]) over the
//! polled rendezvous ([`Slots`]). Whenever the host lets the workers run, the scheduler
//! repeatedly picks, with its seeded RNG, one worker whose step would move (it has a delivery
//! to handle, or the rendezvous it waits on is ready) and steps it, until none can: which
//! worker reaches a multi-worker command first, how far the others run meanwhile, when a
//! lender gets its shard back, where a checkpoint request falls between them, all differ by
//! seed and by replica, as they would between threads. If the service's command map let
//! dependent commands run in parallel, replicas would end in different states, which the
//! simulated campaigns compare.

use super::executor::{ReadJob, WorkerStats};
use super::rendezvous::Slots;
use super::replica::{Driver, PsmrCore, ReplicaOptions, Restorer};
use super::service::Service;
use super::workers::{Lent, Loan, Progress, Worker, WorkerEvent, WorkerSet};
use crate::host::ReplicaHost;
use groups::ids::MsgId;
use groups::merge::SkipNeed;
use groups::node::LogEntries;
use groups::runtime::Waker;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A seeded scheduler over a replica's workers (see the module docs).
pub struct Scheduled<S: Service> {
    set: Option<WorkerSet<S>>,
    slots: Slots<MsgId, Loan<S>>,
    rng: ChaCha8Rng,
    /// Commands executed by workers of earlier starts (a state transfer restarts them).
    executed_before: u64,
    /// Steps taken, for tests.
    pub steps: u64,
    /// State hashes of the checkpoints taken, not yet handed to the host.
    hashes: Vec<(u64, u64)>,
}

impl<S: Service> Scheduled<S> {
    pub fn new(seed: u64) -> Self {
        Scheduled {
            set: None,
            slots: Slots::new(0),
            rng: ChaCha8Rng::seed_from_u64(seed),
            executed_before: 0,
            steps: 0,
            hashes: Vec::new(),
        }
    }

    /// The workers (empty before the start).
    pub fn workers(&self) -> &[Worker<S>] {
        self.set.as_ref().map_or(&[], |s| &s.workers)
    }

    /// A hash of the whole state, if no shard is lent.
    pub fn state_hash(&self) -> Option<u64> {
        self.set.as_ref().and_then(WorkerSet::state_hash)
    }
}

impl<S: Service> Driver<S> for Scheduled<S> {
    fn start(&mut self, set: WorkerSet<S>, _waker: &Waker) {
        self.slots = Slots::new(set.workers.len());
        self.set = Some(set);
    }

    fn entries(&mut self, batch: &mut Vec<LogEntries>) {
        let Some(set) = self.set.as_mut() else {
            batch.clear();
            return;
        };
        for e in batch.drain(..) {
            set.push(&e);
        }
        for w in &mut set.workers {
            w.poll();
        }
    }

    fn read(&mut self, worker: usize, job: ReadJob<S::Command>) {
        if let Some(w) = self.set.as_mut().and_then(|s| s.workers.get_mut(worker)) {
            w.read(job);
        }
    }

    fn run(&mut self, events: &mut Vec<WorkerEvent>, needs: &mut Vec<SkipNeed>) {
        let Some(set) = self.set.as_mut() else {
            return;
        };
        let mut ready = Vec::with_capacity(set.workers.len());
        loop {
            ready.clear();
            ready.extend(
                set.workers
                    .iter()
                    .filter(|w| w.can_step(&self.slots))
                    .map(|w| w.id),
            );
            if ready.is_empty() {
                break;
            }
            let w = ready[self.rng.random_range(0..ready.len())];
            let p = set.workers[w].step(&set.executor, &mut self.slots, events);
            debug_assert_eq!(p, Progress::Stepped, "a worker that can step moves");
            self.steps += 1;
        }
        needs.extend(set.workers.iter().filter_map(Worker::blocked_on));
    }

    fn stop(&mut self) -> Vec<(WorkerStats, Option<Lent<S>>)> {
        let Some(set) = self.set.take() else {
            return Vec::new();
        };
        self.executed_before += set.workers.iter().map(|w| w.executed).sum::<u64>();
        set.workers.into_iter().map(Worker::into_parts).collect()
    }

    fn executed(&self) -> u64 {
        self.executed_before + self.workers().iter().map(|w| w.executed).sum::<u64>()
    }

    /// Hashes the checkpoint's state at once (the simulator compares replicas' checkpoints).
    fn taken(&mut self, round: u64, bytes: &bytes::Bytes, restore: Restorer<S>) {
        match restore.state_hash(bytes) {
            Ok(h) => self.hashes.push((round, h)),
            Err(e) => {
                tracing::error!(round, error = %e, "a checkpoint taken here does not restore")
            }
        }
    }

    fn hashes(&mut self, out: &mut Vec<(u64, u64)>) {
        out.append(&mut self.hashes);
    }
}

/// A P-SMR replica as the simulator runs it: a seeded scheduler over the same workers.
pub type SimulatedReplica<S> = ReplicaHost<PsmrCore<S, Scheduled<S>>>;

impl<S: Service> ReplicaHost<PsmrCore<S, Scheduled<S>>> {
    /// A replica whose workers a scheduler seeded with `seed` runs.
    pub fn scheduled(service: Arc<S>, options: ReplicaOptions, seed: u64) -> Self {
        ReplicaHost::new(PsmrCore::new(service, options, Scheduled::new(seed)))
    }

    /// The workers' shards (`None` while lent).
    pub fn shards(&self) -> Vec<Option<&S::Shard>> {
        self.core
            .driver
            .workers()
            .iter()
            .map(|w| w.shard())
            .collect()
    }

    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.core
            .driver
            .workers()
            .iter()
            .map(|w| w.stats().clone())
            .collect()
    }
}
