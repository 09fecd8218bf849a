//! The client proxy: turns commands into multicasts and replies into results.
//!
//! [`ClientProxy`] is sans-IO. It numbers commands `(client, seq)`, maps each to its workers
//! (conservatively for P-SMR, optimistically for opt-PSMR), keeps many commands outstanding,
//! takes the first reply of any replica, resends on timeout (replicas answer a resent command
//! from their client table, so it takes effect at most once), and on an opt-PSMR
//! `RetryConservative` multicasts the command again with the conservative map, once. A try
//! refused as `Misrouted` (the service's routes moved: key ranges changed workers) teaches the
//! service the replica's routes and is tried again with the same kind of map; after
//! [`MISROUTES_MAX`] such refusals the command goes to every worker, which never misses.
//!
//! [`ClientApp`] hosts many proxies of any kind ([`Proxy`]: this one, or the scale-out proxy of
//! [`crate::partitioned`]) on one node of a runtime, fed by a [`Driver`] (a workload generator,
//! or [`ChannelDriver`] for blocking calls from other threads).

use crate::service::{Service, Target};
use crate::wire::{self, Attempt, ClientId, Outcome, Reply, Request};
use bytes::Bytes;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};
use groups::node::GroupsNode;
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The replication mode a client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One worker, one group: classical state-machine replication.
    Smr,
    /// Conservative command map.
    Psmr,
    /// Optimistic command map, conservative retry on refusal.
    OptPsmr,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Smr => "smr",
            Mode::Psmr => "psmr",
            Mode::OptPsmr => "opt-psmr",
        }
    }
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the replicas rejected the command: {0}")]
    Rejected(String),
    /// The command's request would exceed the cluster's multicast payload limit
    /// (`payload_bytes_max` in the tuning); it was not sent.
    #[error("the request is {bytes} bytes, over the cluster's limit of {max} (payload_bytes_max); not sent")]
    TooLarge { bytes: usize, max: usize },
}

/// Counters of one client proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub submitted: u64,
    pub completed: u64,
    /// Commands multicast again after a timeout.
    pub resends: u64,
    /// opt-PSMR attempts a worker refused (each retried conservatively once).
    pub aborts: u64,
    /// Tries refused as misrouted (stale routes), each tried again with the routes learnt.
    pub misroutes: u64,
    /// Replies from two replicas that disagree on the state hash after the same command.
    pub divergences: u64,
    /// Scale-out: oracle consultations (DS-SMR).
    pub consults: u64,
    /// Scale-out: objects the client asked to move (DS-SMR).
    pub moves: u64,
    /// Scale-out: attempts answered `retry` (an object was not where the client thought) or
    /// `retry(gamma)` (the command needs more objects).
    pub retries: u64,
    /// Scale-out: commands that reached the retry threshold and ran the S-SMR way (DS-SMR).
    pub fallbacks: u64,
    /// Commands refused before sending, as too large ([`ClientError::TooLarge`]).
    pub too_large: u64,
    /// Scale-out: times the location cache was emptied for a newer placement epoch
    /// (DynaStar).
    pub cache_epochs: u64,
}

impl std::ops::AddAssign<&ClientStats> for ClientStats {
    fn add_assign(&mut self, o: &ClientStats) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.resends += o.resends;
        self.aborts += o.aborts;
        self.misroutes += o.misroutes;
        self.divergences += o.divergences;
        self.consults += o.consults;
        self.moves += o.moves;
        self.cache_epochs += o.cache_epochs;
        self.retries += o.retries;
        self.fallbacks += o.fallbacks;
        self.too_large += o.too_large;
    }
}

impl<'a> std::iter::Sum<&'a ClientStats> for ClientStats {
    fn sum<I: Iterator<Item = &'a ClientStats>>(iter: I) -> Self {
        let mut s = ClientStats::default();
        for x in iter {
            s += x;
        }
        s
    }
}

struct Pending<C> {
    command: C,
    attempt: Attempt,
    /// The current try ([`Request::round`]) and how many tries were refused as misrouted.
    round: u32,
    misroutes: u32,
    dests: GroupSet,
    payload: Bytes,
    sent_at: u64,
    tries: u32,
}

/// One logical client.
pub struct ClientProxy<S: Service> {
    id: ClientId,
    service: Arc<S>,
    mode: Mode,
    workers: usize,
    next_seq: u64,
    pending: BTreeMap<u64, Pending<S::Command>>,
    out: Vec<(GroupSet, Bytes)>,
    now: u64,
    resend_ticks: u64,
    /// First state hash reported for a recent all-worker command, and by whom.
    hashes: BTreeMap<u64, (u64, NodeId)>,
    /// The largest request the cluster accepts, and commands refused for exceeding it.
    payload_max: usize,
    refused: Vec<Completion<S::Command, S::Reply>>,
    pub stats: ClientStats,
}

/// A finished command.
#[derive(Debug)]
pub struct Completion<C, R> {
    pub seq: u64,
    pub command: C,
    pub result: Result<R, ClientError>,
}

/// A client proxy (sans-IO): what [`ClientApp`] and the simulator's clients host. It numbers
/// the commands it is given, turns them into multicasts, and turns replicas' messages into
/// completions.
pub trait Proxy: Send + 'static {
    type Command: Clone + std::fmt::Debug + Send + 'static;
    type Reply: Clone + std::fmt::Debug + Send + 'static;

    fn id(&self) -> ClientId;
    /// Submits a command; returns its sequence number.
    fn submit(&mut self, command: Self::Command) -> u64;
    /// Handles the body of a message a replica addressed to this client
    /// ([`wire::to_client`]); returns a completion if a command finished.
    fn on_message(&mut self, body: &[u8]) -> Option<Completion<Self::Command, Self::Reply>>;
    /// Advances time to `now` (ticks): resends overdue messages.
    fn tick(&mut self, now: u64);
    /// Multicasts to perform: `(destination groups, payload)`.
    fn take_multicasts(&mut self, out: &mut Vec<(GroupSet, Bytes)>);
    /// Commands submitted and not completed.
    fn outstanding(&self) -> usize;
    fn stats(&self) -> &ClientStats;
    /// The cluster's payload limit (`payload_bytes_max`): a command whose requests would
    /// exceed it is not sent but completes at once with [`ClientError::TooLarge`].
    fn set_payload_limit(&mut self, max: usize);
    /// Commands that completed without being sent (too large), since the last call.
    fn take_refused(&mut self, out: &mut Vec<Completion<Self::Command, Self::Reply>>);
}

/// Most recent all-worker commands whose replica hashes are kept for comparison.
const HASHES_KEPT: usize = 4096;

/// Tries of a command refused as misrouted before it is multicast to every worker (which is
/// never misrouted), so a client whose routes keep lagging behind moving ranges still ends.
pub const MISROUTES_MAX: u32 = 3;

impl<S: Service> ClientProxy<S> {
    /// A client for a deployment with `workers` workers per replica. `resend_ticks` is the
    /// first resend timeout (doubling per attempt).
    pub fn new(
        id: ClientId,
        service: Arc<S>,
        mode: Mode,
        workers: usize,
        resend_ticks: u64,
    ) -> Self {
        assert!(workers > 0);
        assert!(mode != Mode::Smr || workers == 1, "smr runs one worker");
        ClientProxy {
            id,
            service,
            mode,
            workers,
            next_seq: 0,
            pending: BTreeMap::new(),
            out: Vec::new(),
            now: 0,
            resend_ticks,
            hashes: BTreeMap::new(),
            payload_max: usize::MAX,
            refused: Vec::new(),
            stats: ClientStats::default(),
        }
    }

    pub fn id(&self) -> ClientId {
        self.id
    }

    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn dests(&self, t: &Target) -> GroupSet {
        match t {
            Target::All => GroupSet::all(self.workers as u32),
            t => t
                .workers(self.workers)
                .into_iter()
                .map(|w| GroupId(w as u32))
                .collect(),
        }
    }

    fn encode(&self, seq: u64, attempt: Attempt, round: u32, command: &S::Command) -> Bytes {
        let floor = self
            .pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
            .min(seq);
        Bytes::from(wire::encode(&Request {
            client: self.id,
            seq,
            attempt,
            round,
            floor,
            command: Bytes::from(wire::encode(command)),
        }))
    }

    /// Submits a command; returns its sequence number.
    pub fn submit(&mut self, command: S::Command) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (target, attempt) = self.map(&command, self.mode == Mode::OptPsmr);
        let dests = self.dests(&target);
        let payload = self.encode(seq, attempt, 0, &command);
        self.stats.submitted += 1;
        if payload.len() > self.payload_max {
            // A conservative retry of an optimistic attempt is the same size, so the first
            // encoding decides.
            self.stats.too_large += 1;
            self.refused.push(Completion {
                seq,
                command,
                result: Err(ClientError::TooLarge {
                    bytes: payload.len(),
                    max: self.payload_max,
                }),
            });
            return seq;
        }
        self.out.push((dests.clone(), payload.clone()));
        self.pending.insert(
            seq,
            Pending {
                command,
                attempt,
                round: 0,
                misroutes: 0,
                dests,
                payload,
                sent_at: self.now,
                tries: 0,
            },
        );
        seq
    }

    /// Handles a replica's reply; returns the completion if this is the first answer.
    pub fn on_reply(&mut self, reply: Reply<S::Reply>) -> Option<Completion<S::Command, S::Reply>> {
        if let Some(h) = reply.state_hash {
            self.audit(reply.seq, h, reply.replica);
        }
        let p = self.pending.get(&reply.seq)?;
        if p.attempt != reply.attempt || p.round != reply.round {
            return None; // an answer to an earlier try
        }
        let result = match reply.outcome {
            Outcome::Done(r) => Ok(r),
            Outcome::Rejected(e) => Err(ClientError::Rejected(e)),
            Outcome::RetryConservative => {
                if p.attempt == Attempt::Optimistic {
                    self.stats.aborts += 1;
                    let target = self.service.conservative(&p.command, self.workers);
                    self.retry(reply.seq, target, Attempt::Conservative);
                }
                return None;
            }
            Outcome::Misrouted(routes) => {
                self.stats.misroutes += 1;
                if !routes.is_empty() {
                    self.service.learn_routes(&routes);
                }
                let p = self.pending.get_mut(&reply.seq).expect("checked");
                p.misroutes += 1;
                let (target, attempt) = if p.misroutes > MISROUTES_MAX {
                    (Target::All, Attempt::Conservative)
                } else {
                    let optimistic = p.attempt == Attempt::Optimistic;
                    let command = p.command.clone();
                    self.map(&command, optimistic)
                };
                self.retry(reply.seq, target, attempt);
                return None;
            }
        };
        let p = self.pending.remove(&reply.seq).expect("checked");
        self.stats.completed += 1;
        Some(Completion {
            seq: reply.seq,
            command: p.command,
            result,
        })
    }

    /// The command's target and attempt kind: optimistic where asked and the optimistic map
    /// gives one worker, else conservative (one worker in `smr`).
    fn map(&self, command: &S::Command, optimistic: bool) -> (Target, Attempt) {
        if self.mode == Mode::Smr {
            return (Target::One(0), Attempt::Conservative);
        }
        if optimistic {
            if let t @ Target::One(_) = self.service.optimistic(command, self.workers) {
                return (t, Attempt::Optimistic);
            }
        }
        (
            self.service.conservative(command, self.workers),
            Attempt::Conservative,
        )
    }

    /// Multicasts the next try of pending command `seq` to `target`.
    fn retry(&mut self, seq: u64, target: Target, attempt: Attempt) {
        let dests = self.dests(&target);
        let p = self.pending.get(&seq).expect("pending");
        let round = p.round + 1;
        let payload = self.encode(seq, attempt, round, &p.command);
        self.out.push((dests.clone(), payload.clone()));
        let now = self.now;
        let p = self.pending.get_mut(&seq).expect("pending");
        p.attempt = attempt;
        p.round = round;
        p.dests = dests;
        p.payload = payload;
        p.sent_at = now;
        p.tries = 0;
    }

    fn audit(&mut self, seq: u64, hash: u64, replica: NodeId) {
        match self.hashes.get(&seq) {
            Some(&(h, r)) if h != hash && r != replica => {
                self.stats.divergences += 1;
                tracing::error!(client = ?self.id, seq, first = ?r, then = ?replica, "replica states diverged after the same command");
            }
            Some(_) => {}
            None => {
                self.hashes.insert(seq, (hash, replica));
                if self.hashes.len() > HASHES_KEPT {
                    self.hashes.pop_first();
                }
            }
        }
    }

    /// Advances time to `now` (ticks) and resends overdue commands.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        let mut resend = Vec::new();
        for (&seq, p) in self.pending.iter_mut() {
            if now >= p.sent_at + (self.resend_ticks << p.tries.min(5)) {
                p.sent_at = now;
                p.tries += 1;
                resend.push((p.dests.clone(), p.payload.clone()));
                let _ = seq;
            }
        }
        self.stats.resends += resend.len() as u64;
        self.out.extend(resend);
    }

    /// Multicasts to perform: `(destination groups, payload)`.
    pub fn take_multicasts(&mut self, out: &mut Vec<(GroupSet, Bytes)>) {
        out.append(&mut self.out);
    }
}

impl<S: Service> Proxy for ClientProxy<S> {
    type Command = S::Command;
    type Reply = S::Reply;

    fn id(&self) -> ClientId {
        self.id
    }
    fn submit(&mut self, command: S::Command) -> u64 {
        ClientProxy::submit(self, command)
    }
    fn on_message(&mut self, body: &[u8]) -> Option<Completion<S::Command, S::Reply>> {
        match wire::decode::<Reply<S::Reply>>(body) {
            Ok(reply) => self.on_reply(reply),
            Err(e) => {
                tracing::warn!(client = ?self.id, error = %e, "undecodable reply dropped");
                None
            }
        }
    }
    fn tick(&mut self, now: u64) {
        ClientProxy::tick(self, now)
    }
    fn take_multicasts(&mut self, out: &mut Vec<(GroupSet, Bytes)>) {
        ClientProxy::take_multicasts(self, out)
    }
    fn outstanding(&self) -> usize {
        ClientProxy::outstanding(self)
    }
    fn stats(&self) -> &ClientStats {
        &self.stats
    }
    fn set_payload_limit(&mut self, max: usize) {
        self.payload_max = max;
    }
    fn take_refused(&mut self, out: &mut Vec<Completion<S::Command, S::Reply>>) {
        out.append(&mut self.refused);
    }
}

/// Produces commands `C` for the clients of a [`ClientApp`] and learns their outcomes `R`.
pub trait Driver<C, R>: Send + 'static {
    /// Client `client` has room for another command; return one, or `None` for now.
    fn next(&mut self, client: usize) -> Option<C>;
    /// A command of `client` finished after `latency`.
    fn complete(
        &mut self,
        client: usize,
        command: C,
        result: Result<R, ClientError>,
        latency: Duration,
    );
}

/// Many client proxies on one node.
pub struct ClientApp<P: Proxy, D: Driver<P::Command, P::Reply>> {
    proxies: Vec<P>,
    first_index: u32,
    started: Vec<BTreeMap<u64, Instant>>,
    window: usize,
    pub driver: D,
    inbox: Vec<(NodeId, Bytes)>,
    multicasts: VecDeque<(GroupSet, Bytes)>,
    scratch: Vec<(GroupSet, Bytes)>,
    waker: Option<Waker>,
    shared: Option<(SharedStats, u64)>,
    refused: Vec<Completion<P::Command, P::Reply>>,
}

/// A node's client counters, readable from other threads (see [`ClientApp::share_stats`]).
pub type SharedStats = Arc<parking_lot::Mutex<ClientStats>>;

/// How the clients of a [`ClientApp`] run.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Logical clients on the node.
    pub clients: usize,
    /// Commands each keeps outstanding.
    pub window: usize,
    pub mode: Mode,
    /// Workers per replica (the command maps need it).
    pub workers: usize,
    /// First resend timeout, in ticks (doubling per attempt).
    pub resend_ticks: u64,
    /// Client `i` of this node is `ClientId::new(node, first_index + i)`. A process that
    /// restarts must not reuse indexes (replicas remember requests per client): pick this
    /// from the process's incarnation (see [`incarnation_index`]).
    pub first_index: u32,
}

/// A client index base unlikely to repeat across restarts of a process: the low bits of the
/// boot time and of the process id.
pub fn incarnation_index() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pid = std::process::id();
    // The low byte stays free for up to 256 clients per process.
    (((secs as u32) << 12) ^ (pid << 20) ^ (pid << 8)) & !0xff
}

impl<S: Service, D: Driver<S::Command, S::Reply>> ClientApp<ClientProxy<S>, D> {
    /// The P-SMR clients of `node`.
    pub fn new(node: NodeId, service: Arc<S>, o: ClientOptions, driver: D) -> Self {
        let proxies = (0..o.clients)
            .map(|i| {
                ClientProxy::new(
                    ClientId::new(node, o.first_index.wrapping_add(i as u32)),
                    service.clone(),
                    o.mode,
                    o.workers,
                    o.resend_ticks,
                )
            })
            .collect();
        ClientApp::from_proxies(proxies, o.window, driver)
    }
}

impl<P: Proxy, D: Driver<P::Command, P::Reply>> ClientApp<P, D> {
    /// Hosts `proxies`, which must be the clients `first_index, first_index + 1, ...` of one
    /// node, each keeping up to `window` commands outstanding.
    pub fn from_proxies(proxies: Vec<P>, window: usize, driver: D) -> Self {
        let first_index = proxies.first().map_or(0, |p| p.id().index());
        debug_assert!(proxies
            .iter()
            .enumerate()
            .all(|(i, p)| p.id().index() == first_index.wrapping_add(i as u32)));
        ClientApp {
            started: vec![BTreeMap::new(); proxies.len()],
            proxies,
            window: window.max(1),
            first_index,
            driver,
            inbox: Vec::new(),
            multicasts: VecDeque::new(),
            scratch: Vec::new(),
            waker: None,
            shared: None,
            refused: Vec::new(),
        }
    }

    /// Publishes this node's counters (summed over its clients) to a shared copy, refreshed
    /// once per tick, so a benchmark can sample them while the node runs.
    pub fn share_stats(&mut self) -> SharedStats {
        let s = SharedStats::default();
        self.shared = Some((s.clone(), u64::MAX));
        s
    }

    /// Counters summed over this node's clients.
    pub fn stats(&self) -> ClientStats {
        self.proxies.iter().map(|p| p.stats()).sum()
    }

    /// Commands outstanding over all clients.
    pub fn outstanding(&self) -> usize {
        self.proxies.iter().map(|p| p.outstanding()).sum()
    }
}

impl<P: Proxy, D: Driver<P::Command, P::Reply>> App for ClientApp<P, D> {
    fn attach(&mut self, node: &mut GroupsNode, waker: Waker) {
        let max = node.config().tuning.payload_bytes_max;
        for p in &mut self.proxies {
            p.set_payload_limit(max);
        }
        self.waker = Some(waker);
    }

    fn step(&mut self, node: &mut GroupsNode) {
        let now = Instant::now();
        node.take_app(&mut self.inbox);
        for (_, bytes) in self.inbox.drain(..) {
            let Some((client, body)) = wire::addressee(&bytes) else {
                tracing::warn!("message without an addressee dropped");
                continue;
            };
            let i = client.index().wrapping_sub(self.first_index) as usize;
            let Some(p) = self.proxies.get_mut(i).filter(|p| p.id() == client) else {
                continue;
            };
            if let Some(c) = p.on_message(body) {
                let t0 = self.started[i].remove(&c.seq).unwrap_or(now);
                self.driver
                    .complete(i, c.command, c.result, now.saturating_duration_since(t0));
            }
        }
        let tick = node.now();
        for (i, p) in self.proxies.iter_mut().enumerate() {
            p.tick(tick);
            while p.outstanding() < self.window {
                let Some(cmd) = self.driver.next(i) else {
                    break;
                };
                let seq = p.submit(cmd);
                self.started[i].insert(seq, now);
                p.take_refused(&mut self.refused);
                for c in self.refused.drain(..) {
                    self.started[i].remove(&c.seq);
                    self.driver.complete(i, c.command, c.result, Duration::ZERO);
                }
            }
            p.take_multicasts(&mut self.scratch);
            self.multicasts.extend(self.scratch.drain(..));
        }
        while let Some((dests, payload)) = self.multicasts.pop_front() {
            if let Err(e) = node.multicast(dests.clone(), payload.clone()) {
                if matches!(e, groups::MulticastError::Backpressure { .. }) {
                    self.multicasts.push_front((dests, payload));
                    break;
                }
                tracing::error!(error = %e, "multicast refused");
            }
        }
        if let Some((shared, at)) = &self.shared {
            if *at != tick {
                let s = self.stats();
                *shared.lock() = s;
                if let Some((_, at)) = &mut self.shared {
                    *at = tick;
                }
            }
        }
    }
}

/// Where a blocking call's result goes.
type ResultTx<R> = crossbeam_channel::Sender<Result<R, ClientError>>;
/// A blocking call: client, command, result channel.
type Call<C, R> = (usize, C, ResultTx<R>);

/// A [`Driver`] fed by other threads through [`ClientHandle`]s.
pub struct ChannelDriver<C, R> {
    rx: crossbeam_channel::Receiver<Call<C, R>>,
    queued: Vec<VecDeque<(C, ResultTx<R>)>>,
    waiting: Vec<VecDeque<ResultTx<R>>>,
}

/// Submits commands to a node's [`ClientApp`] and waits for their results.
pub struct ClientHandle<C, R> {
    tx: crossbeam_channel::Sender<Call<C, R>>,
    waker: Arc<parking_lot::Mutex<Option<Waker>>>,
}

impl<C, R> Clone for ClientHandle<C, R> {
    fn clone(&self) -> Self {
        ClientHandle {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<C, R> ChannelDriver<C, R> {
    /// A driver for `clients` clients and the handle that feeds it.
    pub fn new(clients: usize) -> (Self, ClientHandle<C, R>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            ChannelDriver {
                rx,
                queued: (0..clients).map(|_| VecDeque::new()).collect(),
                waiting: (0..clients).map(|_| VecDeque::new()).collect(),
            },
            ClientHandle {
                tx,
                waker: Arc::new(parking_lot::Mutex::new(None)),
            },
        )
    }
}

impl<C: Send + 'static, R: Send + 'static> Driver<C, R> for ChannelDriver<C, R> {
    fn next(&mut self, client: usize) -> Option<C> {
        while let Ok((c, cmd, reply)) = self.rx.try_recv() {
            if let Some(q) = self.queued.get_mut(c) {
                q.push_back((cmd, reply));
            }
        }
        let (cmd, reply) = self.queued.get_mut(client)?.pop_front()?;
        self.waiting[client].push_back(reply);
        Some(cmd)
    }

    fn complete(
        &mut self,
        client: usize,
        _command: C,
        result: Result<R, ClientError>,
        _latency: Duration,
    ) {
        // One command outstanding per client when used through handles: results arrive in
        // submission order.
        if let Some(tx) = self.waiting[client].pop_front() {
            let _ = tx.send(result);
        }
    }
}

impl<C, R> ClientHandle<C, R> {
    /// Lets the handle wake the node's loop (set by [`ClientApp`] users once the node runs).
    pub fn set_waker(&self, waker: Waker) {
        *self.waker.lock() = Some(waker);
    }

    /// Runs `command` as client `client` and waits up to `timeout` for its result.
    pub fn call(
        &self,
        client: usize,
        command: C,
        timeout: Duration,
    ) -> Option<Result<R, ClientError>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.send((client, command, tx)).ok()?;
        if let Some(w) = self.waker.lock().as_ref() {
            w.wake();
        }
        rx.recv_timeout(timeout).ok()
    }
}

/// A [`ClientApp`] with a [`ChannelDriver`] also passes its waker on to the handles.
pub struct HandleApp<P: Proxy> {
    pub app: ClientApp<P, ChannelDriver<P::Command, P::Reply>>,
    handle_waker: Arc<parking_lot::Mutex<Option<Waker>>>,
}

/// The handle of a [`HandleApp`] hosting proxies `P`.
pub type HandleOf<P> = ClientHandle<<P as Proxy>::Command, <P as Proxy>::Reply>;

impl<S: Service> HandleApp<ClientProxy<S>> {
    /// An app for blocking P-SMR calls: `clients` clients with one command outstanding each.
    pub fn new(
        node: NodeId,
        clients: usize,
        service: Arc<S>,
        mode: Mode,
        workers: usize,
        resend_ticks: u64,
    ) -> (Self, HandleOf<ClientProxy<S>>) {
        let first = incarnation_index();
        let proxies = (0..clients)
            .map(|i| {
                ClientProxy::new(
                    ClientId::new(node, first.wrapping_add(i as u32)),
                    service.clone(),
                    mode,
                    workers,
                    resend_ticks,
                )
            })
            .collect();
        HandleApp::from_proxies(proxies)
    }
}

impl<P: Proxy> HandleApp<P> {
    /// An app for blocking calls through `proxies` (one command outstanding each).
    pub fn from_proxies(proxies: Vec<P>) -> (Self, HandleOf<P>) {
        let (driver, handle) = ChannelDriver::new(proxies.len());
        let app = ClientApp::from_proxies(proxies, 1, driver);
        (
            HandleApp {
                app,
                handle_waker: handle.waker.clone(),
            },
            handle,
        )
    }
}

impl<P: Proxy> App for HandleApp<P> {
    fn attach(&mut self, node: &mut GroupsNode, waker: Waker) {
        *self.handle_waker.lock() = Some(waker.clone());
        self.app.attach(node, waker);
    }
    fn step(&mut self, node: &mut GroupsNode) {
        self.app.step(node);
    }
}
