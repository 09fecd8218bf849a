//! The P-SMR worker set as a sans-IO state machine: one type, two drivers.
//!
//! A [`Worker`] is data: its merger (it merges the logs of its own group, so no thread merges
//! for everyone), the deliveries it has merged and not yet handled, its shard, its replicated
//! bookkeeping ([`WorkerState`]: client table, counters, checkpoint round) and where it stands
//! in a multi-worker command (`Stage`). [`Worker::step`] advances it by one delivery, or by
//! one move of the rendezvous: a command for this worker alone runs on its shard (no lock); a
//! command for several workers runs on the lowest involved one, which collects the others'
//! shards through the [`Lending`] seam, runs it and gives them back; a checkpoint request makes
//! it record its part. What it produces ([`WorkerEvent`]: replies, checkpoint parts) goes into
//! a vector; it never blocks, sleeps or reads a clock itself.
//!
//! Who calls `step` is the driver's business:
//!
//! - production ([`super::threaded`]): every worker on its own thread, possibly pinned to a
//!   core, over the waiting [`super::rendezvous::Rendezvous`] (a lender's step waits until its
//!   shard is back, an executor's until every lender arrived);
//! - the simulator ([`super::scheduled`]): every worker of every replica on the simulator's one
//!   thread, over the polled [`Slots`]; a seeded scheduler picks which worker that can move
//!   steps next, so the races between workers (who reaches a multi-worker command first, who
//!   lends while the executor still runs single-worker commands, a checkpoint request between
//!   them) are explored by seeds.
//!
//! Both run this code; only the order of the steps differs.
//!
//! **Runs.** Consecutive multi-worker commands for the same workers share one loan: a lender
//! lends its shard with the *run* it can offer (the command, then the deliveries right after
//! it in its own stream that are commands for the same workers, as far as it has merged
//! them), and the executor runs the longest prefix common to every lender's run and its own,
//! one command after another, before it gives the shards back with the prefix it ran; each
//! lender then passes over those commands. Every involved worker has them consecutively in
//! its stream, so every shard sees the same commands in the same order as with one loan per
//! command, and the replicated state and counters are the same whatever the run lengths
//! were (they depend on timing, and differ between replicas). What it saves is the hand-offs:
//! with threads, two wake-ups per command become two per run (an insert-heavy B+-tree
//! workload on P-SMR's conservative map sends half its commands to every worker).
//!
//! **Reads.** A read-only command for one worker that a client sent to this replica alone
//! ([`crate::wire::AppMsg::Read`]) comes with a read index: per log, a position past every
//! entry decided before the read reached the replica ([`groups::readindex`]). The worker runs
//! it between two deliveries, once it is between commands, its merger has wholly merged every
//! log it reads up to the read's position, and none of the deliveries it merged and has not
//! handled yet comes from below that position: its shard then reflects every write
//! acknowledged before the read began (every such write is in a log the worker reads, below
//! the position). Reads change nothing replicated (no client table, no counters of the
//! checkpoint), so replicas that served different reads stay identical.

use super::executor::{Executor, Job, ReadJob, WorkerState, WorkerStats};
use super::rendezvous::{Closed, Lending, Slots};
use super::service::Service;
use super::snapshot::{Restored, WorkerPart};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{LogId, MsgId, NodeId};
use groups::merge::{Delivery, Gap, Merger, MergerState, SkipNeed};
use groups::node::LogEntries;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// What a worker produced.
#[derive(Debug)]
pub enum WorkerEvent {
    /// An answer for a client's node (an [`crate::wire::AppMsg::ToClient`]).
    Reply(NodeId, Bytes),
    /// This worker's part of checkpoint `round`; `pause_us`: how long recording it took (a
    /// driver that measures it fills it in; 0 otherwise).
    Part {
        round: u64,
        part: WorkerPart,
        pause_us: u64,
    },
}

/// What one [`Worker::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// It handled a delivery or moved through the rendezvous.
    Stepped,
    /// Nothing delivered to handle.
    Idle,
    /// It waits on the rendezvous (only a polled rendezvous says so).
    Waiting,
    /// The replica is shutting down.
    Closed,
}

/// Where a worker stands.
enum Stage<C> {
    /// Between commands: it owns its shard.
    Ready,
    /// The executor of a multi-worker command, waiting for the other involved workers.
    Collecting(Job<C>),
    /// A lender of a multi-worker command, waiting for its shard to come back.
    Lending(MsgId),
}

/// Where a worker stands, as seen from outside (diagnostics and the rendezvous scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Between commands: it owns its shard.
    Ready,
    /// The executor of multi-worker command `.0`, waiting for its lenders.
    Collecting(MsgId),
    /// Lent its shard for multi-worker command `.0` and waits for it to come back.
    Lending(MsgId),
}

/// Who reached a multi-worker command first, as this worker's executions saw it (local,
/// not replicated: it differs between replicas and runs; only a polled rendezvous tells the
/// executor that it came first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meetings {
    /// The executor arrived and waited for lenders.
    pub executor_first: u64,
    /// Every lender had lent when the executor arrived.
    pub lenders_first: u64,
    /// Commands this worker ran as executor under the loan taken for an earlier command.
    pub batched: u64,
}

/// The shards workers lend each other.
pub type Lent<S> = Box<<S as Service>::Shard>;

/// A lender's shard on its way to the executor and back (see the module docs, "Runs").
pub struct Loan<S: Service> {
    pub shard: Lent<S>,
    /// Lent: the commands the executor may run on the shard under this loan, this loan's own
    /// first, then those right after it in the lender's stream for the same workers. Given
    /// back: the prefix the executor ran.
    pub run: Vec<MsgId>,
}

/// The most commands one loan covers.
pub const RUN_MAX: usize = 64;

/// One worker of a replica (see the module docs).
pub struct Worker<S: Service> {
    pub id: usize,
    merger: Merger,
    /// Delivered and not yet handled, in stream order.
    pending: VecDeque<Delivery>,
    /// The merger's state right after each checkpoint request in `pending`, in order.
    marks: VecDeque<MergerState>,
    /// `None` only while lent.
    shard: Option<Lent<S>>,
    state: WorkerState<S>,
    stage: Stage<S::Command>,
    /// Groups of the cluster: a checkpoint request goes to all of them.
    groups: usize,
    /// Commands taken from the stream by this incarnation (not replicated: it drives the
    /// checkpoint trigger).
    pub executed: u64,
    pub meetings: Meetings,
    scratch: Vec<Delivery>,
    /// Reads waiting for the worker to reach their positions (see the module docs, "Reads").
    reads: Vec<ReadJob<S::Command>>,
    /// Reads this incarnation served (not replicated).
    pub reads_served: u64,
}

impl<S: Service> Worker<S> {
    fn new(
        id: usize,
        merger: Merger,
        shard: S::Shard,
        state: WorkerState<S>,
        groups: usize,
    ) -> Self {
        Worker {
            id,
            merger,
            pending: VecDeque::new(),
            marks: VecDeque::new(),
            shard: Some(Box::new(shard)),
            state,
            stage: Stage::Ready,
            groups,
            executed: 0,
            meetings: Meetings::default(),
            scratch: Vec::new(),
            reads: Vec::new(),
            reads_served: 0,
        }
    }

    /// A read to serve once the worker has reached its positions (see the module docs).
    pub fn read(&mut self, job: ReadJob<S::Command>) {
        self.reads.push(job);
    }

    /// The first waiting read the worker's state covers now (it must be between commands).
    fn ready_read(&self) -> Option<usize> {
        self.reads.iter().position(|r| {
            r.positions.iter().all(|&(log, pos)| {
                self.merger.merged_below(log).is_none_or(|m| {
                    m >= pos && !self.pending.iter().any(|d| d.log == log && d.index < pos)
                })
            })
        })
    }

    /// Decided entries of a log this worker reads (contiguous with the previous ones).
    pub fn push(&mut self, e: &LogEntries) -> Result<(), Gap> {
        self.merger.push(e.log, e.start, &e.entries)
    }

    /// Merges what it can into the pending deliveries, recording the merger's state right
    /// after every checkpoint request.
    pub fn poll(&mut self) {
        let groups = self.groups;
        loop {
            let stopped = self.merger.poll_until(&mut self.scratch, |m| {
                crate::checkpoint::round_of(m, groups).is_some()
            });
            self.pending.extend(self.scratch.drain(..));
            if !stopped {
                break;
            }
            self.marks.push_back(self.merger.state());
        }
    }

    /// Advances by one delivery or one move of the rendezvous (see the module docs).
    pub fn step<L: Lending<MsgId, Loan<S>>>(
        &mut self,
        ex: &Executor<S>,
        rv: &mut L,
        out: &mut Vec<WorkerEvent>,
    ) -> Progress {
        match std::mem::replace(&mut self.stage, Stage::Ready) {
            Stage::Ready => {}
            Stage::Collecting(job) => return self.execute_multi(job, ex, rv, out, false),
            Stage::Lending(key) => {
                return match rv.reclaim(self.id, key) {
                    Err(Closed) => Progress::Closed,
                    Ok(None) => {
                        self.stage = Stage::Lending(key);
                        Progress::Waiting
                    }
                    Ok(Some(loan)) => {
                        self.take_back(loan);
                        Progress::Stepped
                    }
                };
            }
        }
        if self.pending.is_empty() {
            self.poll();
        }
        if !self.reads.is_empty() {
            if let Some(i) = self.ready_read() {
                let job = self.reads.swap_remove(i);
                let shard = self
                    .shard
                    .as_deref_mut()
                    .expect("a worker owns its shard between commands");
                out.push(WorkerEvent::Reply(
                    job.request.client.node(),
                    ex.run_read(self.id, shard, &job),
                ));
                self.reads_served += 1;
                return Progress::Stepped;
            }
        }
        let Some(d) = self.pending.pop_front() else {
            return Progress::Idle;
        };
        let Some(job) = ex.decode(&d) else {
            return Progress::Stepped;
        };
        if let Some(round) = job.checkpoint_round() {
            // Every worker records its own part at this point of its stream; no rendezvous
            // (see crate::psmr::snapshot).
            let mark = self.marks.pop_front();
            if round > self.state.checkpoint_round {
                self.state.checkpoint_round = round;
                if let (Some(mark), Some(shard)) = (mark, self.shard.as_deref()) {
                    let part = WorkerPart::take(&*ex.service, &self.state, shard, mark);
                    out.push(WorkerEvent::Part {
                        round,
                        part,
                        pause_us: 0,
                    });
                }
            }
            return Progress::Stepped;
        }
        self.executed += 1;
        if job.involved.len() == 1 {
            let shard = self
                .shard
                .as_deref_mut()
                .expect("a worker owns its shard between commands");
            if let Some((to, bytes)) = ex.run_single(&mut self.state, shard, &job) {
                out.push(WorkerEvent::Reply(to, bytes));
            }
            return Progress::Stepped;
        }
        if job.executor() == self.id {
            return self.execute_multi(job, ex, rv, out, true);
        }
        self.state.stats.parked += 1;
        let mine = Loan {
            shard: self.shard.take().expect("a worker owns its shard"),
            run: self.run_of(ex, &job),
        };
        if rv.lend(self.id, job.executor(), job.id, mine).is_err() {
            return Progress::Closed;
        }
        match rv.reclaim(self.id, job.id) {
            Err(Closed) => Progress::Closed,
            Ok(None) => {
                self.stage = Stage::Lending(job.id);
                Progress::Stepped
            }
            Ok(Some(loan)) => {
                self.take_back(loan);
                Progress::Stepped
            }
        }
    }

    /// `job`'s run as this worker can offer it: `job` (just taken from the stream), then the
    /// pending deliveries right after it that are commands for the same workers.
    fn run_of(&self, ex: &Executor<S>, job: &Job<S::Command>) -> Vec<MsgId> {
        let mut run = Vec::with_capacity(4);
        run.push(job.id);
        run.extend(
            self.pending
                .iter()
                .take(RUN_MAX - 1)
                .take_while(|d| ex.for_workers(d, &job.involved))
                .map(|d| d.msg.id),
        );
        run
    }

    /// A lender's shard is back: it passes over the rest of the run the executor ran.
    fn take_back(&mut self, loan: Loan<S>) {
        for &id in &loan.run[1..] {
            let d = self.pending.pop_front().map(|d| d.msg.id);
            // The executor ran a prefix of what this worker offered, which it still holds:
            // it stepped nothing while lent.
            assert_eq!(
                d,
                Some(id),
                "worker {}: a run is a prefix of the lender's stream",
                self.id
            );
            self.executed += 1;
            self.state.stats.parked += 1;
        }
        self.shard = Some(loan.shard);
    }

    /// Runs a multi-worker command once every lender arrived; `fresh`: the worker just took
    /// it from its stream (a step, even if it must wait).
    fn execute_multi<L: Lending<MsgId, Loan<S>>>(
        &mut self,
        job: Job<S::Command>,
        ex: &Executor<S>,
        rv: &mut L,
        out: &mut Vec<WorkerEvent>,
        fresh: bool,
    ) -> Progress {
        let mut lent = match rv.collect(self.id, job.id, job.involved.len() - 1) {
            Err(Closed) => return Progress::Closed,
            Ok(None) => {
                self.stage = Stage::Collecting(job);
                return if fresh {
                    self.meetings.executor_first += 1;
                    Progress::Stepped
                } else {
                    Progress::Waiting
                };
            }
            Ok(Some(lent)) => {
                if fresh {
                    self.meetings.lenders_first += 1;
                }
                lent
            }
        };
        // The run: the longest prefix common to this worker's and every lender's.
        let mut run = self.run_of(ex, &job);
        for (_, loan) in &lent {
            let common = run
                .iter()
                .zip(&loan.run)
                .take_while(|(a, b)| a == b)
                .count();
            run.truncate(common);
        }
        let mut mine = self.shard.take().expect("the executor owns its shard");
        {
            let mut refs: Vec<(usize, &mut S::Shard)> = Vec::with_capacity(lent.len() + 1);
            refs.push((self.id, &mut *mine));
            refs.extend(lent.iter_mut().map(|(w, l)| (*w, &mut *l.shard)));
            refs.sort_by_key(|(w, _)| *w);
            if let Some((to, bytes)) = ex.run_multi(&mut self.state, &mut refs, &job) {
                out.push(WorkerEvent::Reply(to, bytes));
            }
            for _ in 1..run.len() {
                let d = self.pending.pop_front().expect("the run is pending");
                self.executed += 1;
                self.meetings.batched += 1;
                let Some(next) = ex.decode(&d) else {
                    continue;
                };
                if let Some((to, bytes)) = ex.run_multi(&mut self.state, &mut refs, &next) {
                    out.push(WorkerEvent::Reply(to, bytes));
                }
            }
        }
        self.shard = Some(mine);
        for (w, mut loan) in lent {
            loan.run.truncate(run.len());
            rv.give_back(w, job.id, loan);
        }
        Progress::Stepped
    }

    /// Whether a step would move on a polled rendezvous (the scheduler steps only those).
    pub fn can_step(&self, rv: &Slots<MsgId, Loan<S>>) -> bool {
        match &self.stage {
            Stage::Ready => !self.pending.is_empty() || self.ready_read().is_some(),
            Stage::Collecting(job) => rv.slot(self.id).arrived(job.id) == job.involved.len() - 1,
            Stage::Lending(key) => rv.slot(self.id).is_returned(*key),
        }
    }

    /// Whether the next delivery to handle is a checkpoint request (a driver that times the
    /// worker's pause asks).
    pub fn next_is_checkpoint(&self) -> bool {
        matches!(self.stage, Stage::Ready)
            && self
                .pending
                .front()
                .is_some_and(|d| crate::checkpoint::round_of(&d.msg, self.groups).is_some())
    }

    /// Where the worker stands in the rendezvous.
    pub fn standing(&self) -> Standing {
        match &self.stage {
            Stage::Ready => Standing::Ready,
            Stage::Collecting(job) => Standing::Collecting(job.id),
            Stage::Lending(key) => Standing::Lending(*key),
        }
    }

    /// What the merger waits for, if it is blocked on an idle log.
    pub fn blocked_on(&self) -> Option<SkipNeed> {
        self.merger.blocked_on()
    }

    /// Deliveries merged and not yet handled, and a multi-worker command in progress.
    pub fn backlog(&self) -> usize {
        self.pending.len() + usize::from(!matches!(self.stage, Stage::Ready))
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.state.stats
    }

    /// The worker's shard (`None` while lent).
    pub fn shard(&self) -> Option<&S::Shard> {
        self.shard.as_deref()
    }

    /// The counters and the shard (`None` if it stopped while lent).
    pub fn into_parts(self) -> (WorkerStats, Option<Lent<S>>) {
        (self.state.stats, self.shard)
    }
}

/// A replica's workers and what they share (see the module docs).
pub struct WorkerSet<S: Service> {
    pub executor: Arc<Executor<S>>,
    pub workers: Vec<Worker<S>>,
    /// For each log, the workers that read it.
    pub readers: BTreeMap<LogId, Vec<usize>>,
}

impl<S: Service> WorkerSet<S> {
    /// The workers of a replica subscribed to `subs` (one group set per worker), from the
    /// initial state or a restored checkpoint.
    pub fn new(
        executor: Arc<Executor<S>>,
        cfg: &ClusterConfig,
        subs: &[GroupSet],
        restored: Option<Restored<S>>,
    ) -> Self {
        let k = executor.workers;
        assert_eq!(subs.len(), k, "one subscription per worker");
        let (shards, states, mut mergers) = match restored {
            Some(r) => (
                r.shards,
                r.states,
                r.mergers.into_iter().map(Some).collect(),
            ),
            None => (
                executor.service.shards(k),
                (0..k).map(WorkerState::new).collect(),
                (0..k).map(|_| None).collect::<Vec<_>>(),
            ),
        };
        let mut readers: BTreeMap<LogId, Vec<usize>> = BTreeMap::new();
        let workers = shards
            .into_iter()
            .zip(states)
            .enumerate()
            .map(|(i, (shard, state))| {
                let logs = cfg.logs_for(&subs[i]);
                for &l in &logs {
                    readers.entry(l).or_default().push(i);
                }
                let merger = mergers[i]
                    .take()
                    .unwrap_or_else(|| Merger::new(&logs, subs[i].clone(), cfg.tuning.merge_m));
                Worker::new(i, merger, shard, state, cfg.groups as usize)
            })
            .collect();
        WorkerSet {
            executor,
            workers,
            readers,
        }
    }

    /// The workers that read `log`.
    pub fn readers_of(&self, log: LogId) -> &[usize] {
        self.readers.get(&log).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Hands decided entries to the workers that read their log.
    pub fn push(&mut self, e: &LogEntries) {
        let readers = self.readers.get(&e.log).map(Vec::as_slice).unwrap_or(&[]);
        for &w in readers {
            if let Err(gap) = self.workers[w].push(e) {
                // Cannot happen: the node hands out contiguous entries, restarted with the
                // mergers after a state transfer.
                tracing::error!(worker = w, error = %gap, "entries dropped");
            }
        }
    }

    /// A hash of the whole state, if every worker holds its shard.
    pub fn state_hash(&self) -> Option<u64> {
        let all: Option<Vec<&S::Shard>> = self.workers.iter().map(Worker::shard).collect();
        all.map(|all| self.executor.service.state_hash(&all))
    }
}
