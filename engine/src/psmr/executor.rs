//! What a worker does with a delivered request, independent of how workers are run (threads
//! in [`super::replica`], one deterministic scheduler in [`crate::sim`]).

use super::msg::{Attempt, Outcome, Reply, Request};
use crate::psmr::client_table::{ClientTable, Refusal, Seen};
use crate::psmr::service::{Access, Service, Shards};
use crate::wire::{self, AppMsg, FeedMsg};
use bytes::Bytes;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::merge::Delivery;
use parking_lot::Mutex;
use std::sync::Arc;

/// How a replica executes.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Record what each command reads and writes and panic when two commands running at the
    /// same time conflict (the service's command map broke P-SMR's obligation).
    pub check_conflicts: bool,
    /// Hash the whole state after every command for all workers and put the hash in the
    /// replies (clients compare replicas). Costs a full pass over the state.
    pub state_hashes: bool,
}

impl ExecOptions {
    /// The state hashed into every reply (clients compare replicas), conflicts checked or not.
    pub fn hashing(check_conflicts: bool) -> Self {
        ExecOptions {
            check_conflicts,
            state_hashes: true,
        }
    }
}

/// Counters of one worker (replicated: equal at every replica at the same point of the
/// stream, so they are part of a checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStats {
    /// Commands executed on this worker's shard alone.
    pub single: u64,
    /// Commands this worker executed for several workers.
    pub multi: u64,
    /// Multi-worker commands this worker parked for.
    pub parked: u64,
    /// Optimistic attempts refused (opt-PSMR aborts).
    pub aborts: u64,
    /// Tries refused as misrouted (mapped with stale routes: see [`Service::misrouted`]).
    pub misrouted: u64,
    /// Retried requests answered from the client table.
    pub duplicates: u64,
    /// Requests that could not be decoded.
    pub rejected: u64,
}

/// One worker's replicated bookkeeping.
pub struct WorkerState<S: Service> {
    pub id: usize,
    pub table: ClientTable<S::Reply>,
    pub stats: WorkerStats,
    /// The round of the latest checkpoint this worker took part in (0: none); a checkpoint
    /// request for a round not above it is a duplicate and ignored.
    pub checkpoint_round: u64,
}

impl<S: Service> WorkerState<S> {
    pub fn new(id: usize) -> Self {
        WorkerState {
            id,
            table: ClientTable::default(),
            stats: WorkerStats::default(),
            checkpoint_round: 0,
        }
    }
}

/// What the workers of one replica share: the service, the options, the conflict detector.
pub struct Executor<S: Service> {
    pub service: Arc<S>,
    pub workers: usize,
    pub replica: NodeId,
    pub options: ExecOptions,
    detector: Option<ConflictDetector<S::Command>>,
}

/// A delivered request, decoded.
pub struct Job<C> {
    pub id: MsgId,
    /// The workers involved, sorted.
    pub involved: Vec<usize>,
    pub kind: JobKind<C>,
}

/// What a delivery asks of the workers.
pub enum JobKind<C> {
    /// A client's request, with its command or why the command did not decode.
    Command {
        request: Request,
        command: Result<C, String>,
    },
    /// A checkpoint request (see [`crate::checkpoint`]): every worker records its part.
    Checkpoint { round: u64 },
}

impl<C> Job<C> {
    /// The worker that runs the command (the lowest involved one).
    pub fn executor(&self) -> usize {
        self.involved[0]
    }

    /// The round, if this is a checkpoint request (see [`crate::checkpoint`]) rather than a
    /// client's command.
    pub fn checkpoint_round(&self) -> Option<u64> {
        match self.kind {
            JobKind::Checkpoint { round } => Some(round),
            JobKind::Command { .. } => None,
        }
    }
}

/// A read served off the log by one worker (see [`super::workers`], "Reads").
pub struct ReadJob<C> {
    pub request: Request,
    pub command: C,
    /// Per log, the position the worker must have executed up to (a read index).
    pub positions: Arc<[(LogId, u64)]>,
}

/// An answer to send: (client node, encoded reply).
pub type Outgoing = (NodeId, Bytes);

impl<S: Service> Executor<S> {
    pub fn new(service: Arc<S>, workers: usize, replica: NodeId, options: ExecOptions) -> Self {
        let detector = options.check_conflicts.then(ConflictDetector::default);
        Executor {
            service,
            workers,
            replica,
            options,
            detector,
        }
    }

    /// Decodes a delivery. `None` for a payload that is not a request at all (logged).
    pub fn decode(&self, d: &Delivery) -> Option<Job<S::Command>> {
        let drop = |why: &dyn std::fmt::Display| {
            tracing::warn!(replica = %self.replica, id = %d.msg.id, error = %why, "delivered payload is not a request; dropped");
            None
        };
        let body = match FeedMsg::parse(&d.msg.payload) {
            Ok(FeedMsg::Command(body)) => body,
            Ok(FeedMsg::Checkpoint { .. }) => {
                let round = crate::checkpoint::round_of(&d.msg, self.workers)?;
                return Some(Job {
                    id: d.msg.id,
                    involved: (0..self.workers).collect(),
                    kind: JobKind::Checkpoint { round },
                });
            }
            Err(e) => return drop(&e),
        };
        let request: Request = match wire::decode(body) {
            Ok(r) => r,
            Err(e) => return drop(&e),
        };
        let involved: Vec<usize> = d
            .msg
            .dests
            .iter()
            .map(|GroupId(g)| g as usize)
            .filter(|&g| g < self.workers)
            .collect();
        if involved.is_empty() {
            return None;
        }
        let command = wire::decode(&request.command).map_err(|e| e.to_string());
        Some(Job {
            id: d.msg.id,
            involved,
            kind: JobKind::Command { request, command },
        })
    }

    /// Whether delivery `d` is a client's command for exactly the workers `involved` (sorted,
    /// as in [`Job::involved`]), judged without decoding it: such a command may run under the
    /// loan of shards taken for the one before it (see [`super::workers`], "Runs").
    pub fn for_workers(&self, d: &Delivery, involved: &[usize]) -> bool {
        matches!(FeedMsg::parse(&d.msg.payload), Ok(FeedMsg::Command(_)))
            && d.msg
                .dests
                .iter()
                .map(|GroupId(g)| g as usize)
                .filter(|&g| g < self.workers)
                .eq(involved.iter().copied())
    }

    /// Runs a job that involves only `w`'s shard.
    pub fn run_single(
        &self,
        w: &mut WorkerState<S>,
        shard: &mut S::Shard,
        job: &Job<S::Command>,
    ) -> Option<Outgoing> {
        let worker = w.id;
        let mut one = [(worker, shard)];
        self.run(w, &mut one, job)
    }

    /// Runs a job on its executor with every involved shard (sorted by worker).
    pub fn run_multi(
        &self,
        w: &mut WorkerState<S>,
        shards: &mut [(usize, &mut S::Shard)],
        job: &Job<S::Command>,
    ) -> Option<Outgoing> {
        self.run(w, shards, job)
    }

    fn run(
        &self,
        w: &mut WorkerState<S>,
        shards: &mut [(usize, &mut S::Shard)],
        job: &Job<S::Command>,
    ) -> Option<Outgoing> {
        let JobKind::Command {
            request: req,
            command,
        } = &job.kind
        else {
            return None;
        };
        let reply = |outcome, hash| {
            let r = Reply::to(req, self.replica, outcome, hash);
            Some((req.client.node(), AppMsg::to_client(req.client, &r)))
        };
        let cmd = match command {
            Ok(c) => c,
            Err(e) => {
                w.stats.rejected += 1;
                return reply(
                    Outcome::Rejected(format!("not a {} command: {e}", self.service.name())),
                    None,
                );
            }
        };
        match w.table.check(req.client, req.seq, req.floor) {
            Seen::New => {}
            Seen::Done(o, h) => {
                w.stats.duplicates += 1;
                return reply(o, h);
            }
            // A refused try binds later copies of it (and of earlier tries) only; the client
            // has moved on to a later try, which is the command's one real execution.
            Seen::Refused(round, why) if req.round <= round => {
                w.stats.duplicates += 1;
                return reply(refusal(why), None);
            }
            Seen::Refused(..) => {}
            Seen::Forgotten => {
                w.stats.duplicates += 1;
                return None;
            }
        }
        let mut access = Access::recording(self.detector.is_some());
        let token = self.detector.as_ref().map(|d| d.begin());
        let single = job.involved.len() == 1;
        let mut view = Shards::new(shards, self.workers);
        // Before anything runs: does the command still belong to the workers it reached?
        // (Judged from the shards' replicated state, like the optimistic check.)
        if let Some(routes) = self.service.misrouted(&mut view, cmd) {
            w.stats.misrouted += 1;
            w.table
                .record_refused(req.client, req.seq, req.round, Refusal::Misrouted);
            if let (Some(d), Some(t)) = (&self.detector, token) {
                d.end(t, &job.involved, cmd, access);
            }
            return reply(Outcome::Misrouted(routes.into()), None);
        }
        let outcome = if single && req.attempt == Attempt::Optimistic {
            match self.service.execute_optimistic(&mut view, cmd, &mut access) {
                Ok(r) => Outcome::Done(r),
                Err(_) => {
                    w.stats.aborts += 1;
                    w.table
                        .record_refused(req.client, req.seq, req.round, Refusal::Unsafe);
                    if let (Some(d), Some(t)) = (&self.detector, token) {
                        d.end(t, &job.involved, cmd, access);
                    }
                    return reply(Outcome::RetryConservative, None);
                }
            }
        } else {
            Outcome::Done(self.service.execute(&mut view, cmd, &mut access))
        };
        if let (Some(d), Some(t)) = (&self.detector, token) {
            d.end(t, &job.involved, cmd, access);
        }
        if single {
            w.stats.single += 1;
        } else {
            w.stats.multi += 1;
        }
        let for_all_workers = job.involved.len() == self.workers;
        let hash = (self.options.state_hashes && for_all_workers).then(|| {
            let all: Vec<&S::Shard> = shards.iter().map(|(_, s)| &**s).collect();
            self.service.state_hash(&all)
        });
        w.table
            .record_done(req.client, req.seq, outcome.clone(), hash);
        reply(outcome, hash)
    }
}

impl<S: Service> Executor<S> {
    /// Runs a read on worker `worker`'s shard: the client's answer, encoded. Nothing
    /// replicated changes (no client table, no counters). A read misrouted under the shard's
    /// state is refused as [`Outcome::Misrouted`]; one that writes (with the debug mode on) is
    /// refused as [`Outcome::Rejected`] and logged: the service declared it read-only.
    pub fn run_read(
        &self,
        worker: usize,
        shard: &mut S::Shard,
        job: &ReadJob<S::Command>,
    ) -> Bytes {
        let req = &job.request;
        let mut one = [(worker, shard)];
        let mut view = Shards::new(&mut one, self.workers);
        let outcome = match self.service.misrouted(&mut view, &job.command) {
            Some(routes) => Outcome::Misrouted(routes.into()),
            None => {
                let mut access = Access::recording(self.detector.is_some());
                let r = self
                    .service
                    .execute_read(&mut view, &job.command, &mut access);
                if access.writes.is_empty() {
                    Outcome::Done(r)
                } else {
                    tracing::error!(replica = %self.replica, command = ?job.command, "a command declared read-only wrote; this replica's state may have diverged");
                    Outcome::Rejected(format!("{:?} is declared read-only but wrote", job.command))
                }
            }
        };
        AppMsg::to_client(req.client, &Reply::to(req, self.replica, outcome, None))
    }
}

/// The answer to a late copy of a refused try: the same refusal (a misrouted one without
/// routes; the client's next try falls back to every worker if it keeps missing).
fn refusal<R>(why: Refusal) -> Outcome<R> {
    match why {
        Refusal::Unsafe => Outcome::RetryConservative,
        Refusal::Misrouted => Outcome::Misrouted(Bytes::new()),
    }
}

/// Debug mode: checks that commands running at the same time do not conflict.
///
/// Every command takes a start stamp from a global counter when it begins and an end stamp
/// when it ends; at its end, its recorded accesses are compared with those of every command
/// whose interval overlaps its own. Any object written by one and touched by the other means
/// the service's command map let two dependent commands run in parallel.
struct ConflictDetector<C> {
    inner: Mutex<DetectorState<C>>,
}

struct DetectorState<C> {
    clock: u64,
    /// Starts of commands still running.
    running: Vec<u64>,
    /// Finished commands that may still overlap a running one.
    done: Vec<Finished<C>>,
}

struct Finished<C> {
    start: u64,
    end: u64,
    workers: Vec<usize>,
    command: C,
    access: Access,
}

impl<C> Default for ConflictDetector<C> {
    fn default() -> Self {
        ConflictDetector {
            inner: Mutex::new(DetectorState {
                clock: 0,
                running: Vec::new(),
                done: Vec::new(),
            }),
        }
    }
}

impl<C: Clone + std::fmt::Debug> ConflictDetector<C> {
    fn begin(&self) -> u64 {
        let mut st = self.inner.lock();
        st.clock += 1;
        let t = st.clock;
        st.running.push(t);
        t
    }

    fn end(&self, start: u64, workers: &[usize], command: &C, access: Access) {
        let mut st = self.inner.lock();
        st.clock += 1;
        let end = st.clock;
        st.running.retain(|&t| t != start);
        for f in &st.done {
            let overlaps = f.end > start && f.start < end;
            if overlaps && !f.workers.iter().any(|w| workers.contains(w)) {
                if let Some(obj) = access.conflict_with(&f.access) {
                    panic!(
                        "P-SMR dependency violation: {command:?} (workers {workers:?}) and {:?} (workers {:?}) ran at the same time and both touched object {obj:#x}, one writing it; the service's command map must send them to a common worker",
                        f.command, f.workers
                    );
                }
            }
        }
        st.done.push(Finished {
            start,
            end,
            workers: workers.to_vec(),
            command: command.clone(),
            access,
        });
        let oldest_running = st.running.iter().copied().min().unwrap_or(end);
        st.done.retain(|f| f.end > oldest_running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "P-SMR dependency violation")]
    fn detector_catches_overlapping_conflicting_commands() {
        let d: ConflictDetector<&str> = ConflictDetector::default();
        let a = d.begin();
        let b = d.begin();
        let mut wa = Access::recording(true);
        wa.write(42);
        let mut rb = Access::recording(true);
        rb.read(42);
        d.end(a, &[0], &"put 42", wa);
        d.end(b, &[1], &"get 42", rb);
    }

    #[test]
    fn detector_accepts_sequential_or_disjoint_commands() {
        let d: ConflictDetector<&str> = ConflictDetector::default();
        let mut w = Access::recording(true);
        w.write(1);
        let a = d.begin();
        d.end(a, &[0], &"put 1", w.clone());
        let b = d.begin();
        d.end(b, &[1], &"put 1 again, later", w.clone());
        let c = d.begin();
        let e = d.begin();
        let mut other = Access::recording(true);
        other.write(2);
        d.end(c, &[0], &"put 1", w);
        d.end(e, &[1], &"put 2", other);
    }
}
