//! The production driver of a P-SMR replica's workers: one thread per worker.
//!
//! The node's thread hands each log's entries to the workers that read it (shared, not
//! copied) over a channel; worker `i` runs on its own thread (pinned to a core if asked),
//! merges its logs and steps its [`Worker`] over the waiting [`Rendezvous`]: a command for
//! worker `i` alone runs on the shard it owns, with no lock; for a command of several workers
//! the lenders' steps wait until their shard is back and the executor's until every lender
//! arrived. Replies and checkpoint parts come back over a channel, and a worker wakes the
//! node's loop when it has any.

use super::executor::{ReadJob, WorkerStats};
use super::rendezvous::Rendezvous;
use super::replica::{Driver, PsmrCore, ReplicaOptions, Restorer};
use super::service::Service;
use super::workers::{Lent, Loan, Progress, Worker, WorkerEvent, WorkerSet};
use crate::host::ReplicaHost;
use crate::metrics::{service_histogram, SharedWorkerStats};
use crate::topology::Topology;
use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use groups::ids::{LogId, MsgId};
use groups::merge::SkipNeed;
use groups::node::LogEntries;
use groups::runtime::Waker;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a blocked worker repeats its skip request.
const NEED_REPEAT: Duration = Duration::from_millis(5);
/// How often a worker adds its recent service times to its shared histogram at most.
const PUBLISH_TIMES: Duration = Duration::from_millis(100);

enum Input<C> {
    Entries(Arc<LogEntries>),
    Read(ReadJob<C>),
    Stop,
}

struct Running<S: Service> {
    inboxes: Vec<Sender<Input<S::Command>>>,
    threads: Vec<JoinHandle<Worker<S>>>,
    readers: BTreeMap<LogId, Vec<usize>>,
    events: Receiver<WorkerEvent>,
    needs: Receiver<SkipNeed>,
    rendezvous: Arc<Rendezvous<MsgId, Loan<S>>>,
}

/// One thread per worker (see the module docs).
pub struct Threads<S: Service> {
    pin_cores: bool,
    running: Option<Running<S>>,
    live: Vec<SharedWorkerStats>,
    executed: Arc<AtomicU64>,
    epoch: Instant,
    /// Checkpoint state hashes (round, hash) computed on helper threads.
    hashes_tx: Sender<(u64, u64)>,
    hashes: Receiver<(u64, u64)>,
}

impl<S: Service> Threads<S> {
    pub fn new(workers: usize, pin_cores: bool) -> Self {
        let (hashes_tx, hashes) = unbounded();
        Threads {
            pin_cores,
            running: None,
            live: (0..workers).map(|_| SharedWorkerStats::default()).collect(),
            executed: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            hashes_tx,
            hashes,
        }
    }

    /// The workers' live counters and service times (one per worker, in worker order), which
    /// each worker refreshes after every batch of deliveries it executes (see
    /// [`crate::metrics::render_workers`]).
    pub fn share_worker_stats(&self) -> Vec<SharedWorkerStats> {
        self.live.clone()
    }
}

impl<S: Service> Driver<S> for Threads<S> {
    fn start(&mut self, set: WorkerSet<S>, waker: &Waker) {
        let k = set.workers.len();
        let placement = self.pin_cores.then(|| Topology::detect().placement(k));
        let rendezvous = Arc::new(Rendezvous::new(k));
        let (event_tx, events) = unbounded();
        let (need_tx, needs) = unbounded();
        let WorkerSet {
            executor,
            workers,
            readers,
        } = set;
        let mut inboxes = Vec::new();
        let mut threads = Vec::new();
        for w in workers {
            let (tx, rx) = unbounded();
            let i = w.id;
            let thread = WorkerThread {
                executor: executor.clone(),
                rendezvous: rendezvous.clone(),
                inbox: rx,
                events: event_tx.clone(),
                needs: need_tx.clone(),
                executed: self.executed.clone(),
                waker: waker.clone(),
                cpu: placement.as_ref().map(|p| p[i]),
                live: self.live[i].clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("replica-{}-w{i}", executor.replica.0))
                .spawn(move || thread.run(w))
                .expect("spawn worker");
            inboxes.push(tx);
            threads.push(handle);
        }
        self.running = Some(Running {
            inboxes,
            threads,
            readers,
            events,
            needs,
            rendezvous,
        });
    }

    fn entries(&mut self, batch: &mut Vec<LogEntries>) {
        let Some(r) = self.running.as_ref() else {
            batch.clear();
            return;
        };
        for e in batch.drain(..) {
            let e = Arc::new(e);
            for &w in r.readers.get(&e.log).map(Vec::as_slice).unwrap_or(&[]) {
                let _ = r.inboxes[w].send(Input::Entries(e.clone()));
            }
        }
    }

    fn read(&mut self, worker: usize, job: ReadJob<S::Command>) {
        if let Some(tx) = self.running.as_ref().and_then(|r| r.inboxes.get(worker)) {
            let _ = tx.send(Input::Read(job));
        }
    }

    fn run(&mut self, events: &mut Vec<WorkerEvent>, needs: &mut Vec<SkipNeed>) {
        if let Some(r) = self.running.as_ref() {
            events.extend(r.events.try_iter());
            needs.extend(r.needs.try_iter());
        }
    }

    fn stop(&mut self) -> Vec<(WorkerStats, Option<Lent<S>>)> {
        let Some(r) = self.running.take() else {
            return Vec::new();
        };
        for tx in &r.inboxes {
            let _ = tx.send(Input::Stop);
        }
        // Each worker first executes what it was handed, which may take a multi-worker command
        // through the rendezvous: it closes only once every worker has stopped or waits there
        // for a partner that stopped short of that command (its entries never came).
        while !r.rendezvous.stuck(|i| r.threads[i].is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        r.rendezvous.close();
        r.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .map(Worker::into_parts)
            .collect()
    }

    fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }

    fn clock_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Hashes the checkpoint's state on a helper thread (a full pass over the state, off the
    /// workers' and the node's path).
    fn taken(&mut self, round: u64, bytes: &Bytes, restore: Restorer<S>) {
        let tx = self.hashes_tx.clone();
        let bytes = bytes.clone();
        let _ = std::thread::Builder::new()
            .name("checkpoint-hash".into())
            .spawn(move || {
                if let Ok(h) = restore.state_hash(&bytes) {
                    let _ = tx.send((round, h));
                }
            });
    }

    fn hashes(&mut self, out: &mut Vec<(u64, u64)>) {
        out.extend(self.hashes.try_iter());
    }
}

impl<S: Service> Drop for Threads<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a worker's thread needs besides its [`Worker`].
struct WorkerThread<S: Service> {
    executor: Arc<super::executor::Executor<S>>,
    rendezvous: Arc<Rendezvous<MsgId, Loan<S>>>,
    inbox: Receiver<Input<S::Command>>,
    events: Sender<WorkerEvent>,
    needs: Sender<SkipNeed>,
    executed: Arc<AtomicU64>,
    waker: Waker,
    cpu: Option<usize>,
    live: SharedWorkerStats,
}

impl<S: Service> WorkerThread<S> {
    fn run(self, mut w: Worker<S>) -> Worker<S> {
        if let Some(cpu) = self.cpu {
            if !crate::topology::pin_current_thread(cpu) {
                tracing::warn!(worker = w.id, cpu, "could not pin worker");
            }
        }
        let mut out = Vec::new();
        let mut last_need: Option<(SkipNeed, Instant)> = None;
        let mut times = service_histogram();
        let mut times_published = Instant::now();
        // A stop asked for: the worker still executes what it was handed before it (so two
        // replicas stopped after the same entries end in the same state), then stops.
        let mut stopping = false;
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
                    Input::Entries(e) => {
                        if let Err(gap) = w.push(&e) {
                            tracing::error!(worker = w.id, error = %gap, "entries dropped");
                        }
                    }
                    Input::Read(job) => w.read(job),
                    Input::Stop => {
                        stopping = true;
                        break;
                    }
                }
                input = self.inbox.try_recv().ok();
            }
            let received = Instant::now();
            let before = w.executed;
            let mut stepped = false;
            let mut woke = false;
            w.poll();
            loop {
                let pause = w.next_is_checkpoint().then(Instant::now);
                match w.step(&self.executor, &mut &*self.rendezvous, &mut out) {
                    Progress::Stepped => stepped = true,
                    Progress::Idle | Progress::Waiting => break,
                    Progress::Closed => break 'outer,
                }
                for mut e in out.drain(..) {
                    match &mut e {
                        WorkerEvent::Reply(..) => {
                            times.saturating_record(received.elapsed().as_micros() as u64)
                        }
                        WorkerEvent::Part { pause_us, .. } => {
                            *pause_us = pause.map_or(0, |t| t.elapsed().as_micros() as u64)
                        }
                    }
                    let _ = self.events.send(e);
                    woke = true;
                }
            }
            self.executed
                .fetch_add(w.executed - before, Ordering::Relaxed);
            if stepped || (idle && !times.is_empty()) {
                let now = Instant::now();
                let mut live = self.live.lock();
                live.stats.clone_from(w.stats());
                if idle || now >= times_published + PUBLISH_TIMES {
                    times_published = now;
                    // Same bounds: adding cannot fail.
                    let _ = live.service_us.add(&times);
                    drop(live);
                    times.reset();
                }
            }
            let now = Instant::now();
            if let Some(n) = w.blocked_on() {
                let repeat = last_need.is_none_or(|(l, at)| l != n || now >= at + NEED_REPEAT);
                if repeat {
                    let _ = self.needs.send(n);
                    last_need = Some((n, now));
                    woke = true;
                }
            }
            if woke {
                self.waker.wake();
            }
            if stopping {
                break;
            }
        }
        let mut live = self.live.lock();
        live.stats.clone_from(w.stats());
        let _ = live.service_us.add(&times);
        drop(live);
        w
    }
}

/// A P-SMR replica as production runs it: a thread per worker.
pub type ThreadedReplica<S> = ReplicaHost<PsmrCore<S, Threads<S>>>;

impl<S: Service> ReplicaHost<PsmrCore<S, Threads<S>>> {
    /// A replica whose workers run on their own threads.
    pub fn threaded(service: Arc<S>, options: ReplicaOptions) -> Self {
        let driver = Threads::new(options.workers, options.pin_cores);
        ReplicaHost::new(PsmrCore::new(service, options, driver))
    }

    /// The workers' live counters and service times (see [`Threads::share_worker_stats`]).
    pub fn share_worker_stats(&self) -> Vec<crate::metrics::SharedWorkerStats> {
        self.core.driver.share_worker_stats()
    }
}
