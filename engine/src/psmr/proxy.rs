//! The P-SMR client proxy: turns commands into multicasts and replies into results.
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
//! With fast reads ([`ClientProxy::with_fast_reads`]), a read-only command
//! ([`Service::read_only`]) whose conservative map is one worker is not multicast: it goes to
//! one replica ([`AppMsg::Read`]), which serves it off the log after a read index (see
//! [`super::workers`], "Reads"). Clients spread over the replicas by their index; a read
//! unanswered on time goes to the next replica. A read refused as misrouted is multicast
//! like any command.

use super::msg::{Attempt, Outcome, Reply, Request};
use super::service::{Service, Target};
use crate::calls::{HandleApp, HandleOf};
use crate::host::client::{
    incarnation_index, ClientError, ClientHost, ClientStats, Completion, Driver, Proxy,
};
use crate::host::OnNode;
use crate::wire::{self, AppMsg, ClientId, FeedMsg};
use bytes::Bytes;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// The simulated campaigns' convention: even numbers P-SMR, odd ones opt-PSMR.
    pub fn alternating(n: u64) -> Mode {
        if n.is_multiple_of(2) {
            Mode::Psmr
        } else {
            Mode::OptPsmr
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Smr => "smr",
            Mode::Psmr => "psmr",
            Mode::OptPsmr => "opt-psmr",
        }
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
    /// A read sent off the log: the replica it went to last (an index into the replicas).
    read_at: Option<usize>,
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
    fast_reads: bool,
    /// The replicas reads go to (found when the node starts).
    replicas: Vec<NodeId>,
    sends: Vec<(NodeId, Bytes)>,
}

/// Tries of a command refused as misrouted before it is multicast to every worker (which is
/// never misrouted), so a client whose routes keep lagging behind moving ranges still ends.
pub const MISROUTES_MAX: u32 = 3;

/// Most recent all-worker commands whose replica hashes are kept for comparison.
const HASHES_KEPT: usize = 4096;

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
            fast_reads: false,
            replicas: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// Serves this client's single-worker read-only commands off the log (see the module
    /// docs) when `on`.
    pub fn with_fast_reads(mut self, on: bool) -> Self {
        self.fast_reads = on;
        self
    }

    /// The replicas fast reads go to: the nodes of `config` that subscribe to every group of
    /// this client's workers.
    pub fn find_replicas(&mut self, config: &groups::config::ClusterConfig) {
        let all = GroupSet::all(self.workers as u32);
        self.replicas = config
            .nodes
            .iter()
            .filter(|n| {
                let mut g = GroupSet::new();
                for s in &n.subscriptions {
                    g = g.union(s);
                }
                all.iter().all(|x| g.contains(x))
            })
            .map(|n| n.id)
            .collect();
    }

    /// Whether `command` goes to one replica off the log.
    fn reads_off_log(&self, command: &S::Command) -> bool {
        self.fast_reads
            && !self.replicas.is_empty()
            && self.service.read_only(command)
            && (self.mode == Mode::Smr
                || matches!(
                    self.service.conservative(command, self.workers),
                    Target::One(_)
                ))
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

    fn request(&self, seq: u64, attempt: Attempt, round: u32, command: &S::Command) -> Request {
        let floor = self
            .pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
            .min(seq);
        Request {
            client: self.id,
            seq,
            attempt,
            round,
            floor,
            command: Bytes::from(wire::encode(command)),
        }
    }

    fn encode(&self, seq: u64, attempt: Attempt, round: u32, command: &S::Command) -> Bytes {
        FeedMsg::command(&self.request(seq, attempt, round, command))
    }

    /// Submits a command; returns its sequence number.
    pub fn submit(&mut self, command: S::Command) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let read = self.reads_off_log(&command);
        let (target, attempt) = self.map(&command, self.mode == Mode::OptPsmr && !read);
        let dests = self.dests(&target);
        let payload = if read {
            AppMsg::read(&self.request(seq, attempt, 0, &command))
        } else {
            self.encode(seq, attempt, 0, &command)
        };
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
        let read_at = read.then(|| self.id.index() as usize % self.replicas.len());
        match read_at {
            Some(i) => {
                self.stats.reads_off_log += 1;
                self.sends.push((self.replicas[i], payload.clone()));
            }
            None => self.out.push((dests.clone(), payload.clone())),
        }
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
                read_at,
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
        p.read_at = None;
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
        let before = self.sends.len();
        for p in self.pending.values_mut() {
            if now >= p.sent_at + (self.resend_ticks << p.tries.min(5)) {
                p.sent_at = now;
                p.tries += 1;
                match p.read_at.as_mut() {
                    // The replica may be down: the next one.
                    Some(i) => {
                        *i = (*i + 1) % self.replicas.len();
                        self.sends.push((self.replicas[*i], p.payload.clone()));
                    }
                    None => resend.push((p.dests.clone(), p.payload.clone())),
                }
            }
        }
        self.stats.resends += (resend.len() + self.sends.len() - before) as u64;
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
    fn attach(&mut self, config: &groups::config::ClusterConfig) {
        if self.fast_reads && self.replicas.is_empty() {
            self.find_replicas(config);
        }
    }
    fn take_sends(&mut self, out: &mut Vec<(NodeId, Bytes)>) {
        out.append(&mut self.sends);
    }
}

/// How the P-SMR clients of a node run.
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
    /// Serve single-worker read-only commands off the log ([`ClientProxy::with_fast_reads`]).
    pub fast_reads: bool,
}

/// The P-SMR clients of `node`.
pub fn proxies<S: Service>(
    node: NodeId,
    service: &Arc<S>,
    o: &ClientOptions,
) -> Vec<ClientProxy<S>> {
    (0..o.clients)
        .map(|i| {
            ClientProxy::new(
                ClientId::new(node, o.first_index.wrapping_add(i as u32)),
                service.clone(),
                o.mode,
                o.workers,
                o.resend_ticks,
            )
            .with_fast_reads(o.fast_reads)
        })
        .collect()
}

/// The P-SMR clients of `node`, fed by `driver`, as its runtime runs them.
pub fn client_app<S: Service, D: Driver<S::Command, S::Reply>>(
    node: NodeId,
    service: Arc<S>,
    o: ClientOptions,
    driver: D,
) -> OnNode<ClientHost<ClientProxy<S>, D>> {
    OnNode::new(ClientHost::new(
        proxies(node, &service, &o),
        o.window,
        driver,
    ))
}

/// An app for blocking P-SMR calls: `clients` clients with one command outstanding each
/// (client indexes from this process's [`incarnation_index`]), with fast reads or not.
pub fn handle_app<S: Service>(
    node: NodeId,
    clients: usize,
    service: Arc<S>,
    mode: Mode,
    workers: usize,
    resend_ticks: u64,
    fast_reads: bool,
) -> (HandleApp<ClientProxy<S>>, HandleOf<ClientProxy<S>>) {
    let o = ClientOptions {
        clients,
        window: 1,
        mode,
        workers,
        resend_ticks,
        first_index: incarnation_index(),
        fast_reads,
    };
    crate::calls::handle_app(proxies(node, &service, &o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psmr::msg::Outcome;
    use crate::testing::{KvCommand, KvReply, KvService};
    use groups::config::{ClusterConfig, LogConfig, NodeConfig, Tuning};

    /// Two replicas (n1, n2) subscribed to both workers' groups, a client node n3.
    fn cluster() -> ClusterConfig {
        let sub = |g: u32| GroupSet::singleton(GroupId(g));
        let nodes = vec![
            NodeConfig {
                id: NodeId(1),
                addr: None,
                subscriptions: vec![sub(0), sub(1)],
            },
            NodeConfig {
                id: NodeId(2),
                addr: None,
                subscriptions: vec![sub(0), sub(1)],
            },
            NodeConfig {
                id: NodeId(3),
                addr: None,
                subscriptions: vec![],
            },
        ];
        let logs = vec![LogConfig {
            id: groups::ids::LogId(0),
            covers: GroupSet::all(2),
            acceptors: vec![NodeId(1)],
        }];
        ClusterConfig::new(1, 2, nodes, logs, Tuning::default()).unwrap()
    }

    fn proxy(fast: bool) -> ClientProxy<KvService> {
        let mut p = ClientProxy::new(
            ClientId::new(NodeId(3), 1),
            Arc::new(KvService::default()),
            Mode::Psmr,
            2,
            10,
        )
        .with_fast_reads(fast);
        Proxy::attach(&mut p, &cluster());
        p
    }

    /// What the proxy sends point to point, and multicasts.
    type Out = (Vec<(NodeId, Bytes)>, Vec<(GroupSet, Bytes)>);

    fn drain(p: &mut ClientProxy<KvService>) -> Out {
        let (mut s, mut m) = (Vec::new(), Vec::new());
        Proxy::take_sends(p, &mut s);
        p.take_multicasts(&mut m);
        (s, m)
    }

    fn reply(seq: u64, round: u32, outcome: Outcome<KvReply>) -> Reply<KvReply> {
        Reply {
            client: ClientId::new(NodeId(3), 1),
            seq,
            attempt: Attempt::Conservative,
            round,
            replica: NodeId(1),
            outcome,
            state_hash: None,
        }
    }

    #[test]
    fn a_single_worker_read_goes_to_one_replica_and_moves_on_after_a_timeout() {
        let mut p = proxy(true);
        let seq = p.submit(KvCommand::Get(3));
        let (sends, multicasts) = drain(&mut p);
        assert!(multicasts.is_empty(), "a read is not multicast");
        assert_eq!(sends.len(), 1);
        let first = sends[0].0;
        assert!(matches!(AppMsg::parse(&sends[0].1), Ok(AppMsg::Read(_))));
        p.tick(10);
        let (sends, _) = drain(&mut p);
        assert_eq!(sends.len(), 1, "resent after the timeout");
        assert_ne!(sends[0].0, first, "to the other replica");
        let done = p.on_reply(reply(seq, 0, Outcome::Done(KvReply::Value(Some(7)))));
        assert_eq!(done.unwrap().result.unwrap(), KvReply::Value(Some(7)));
        assert_eq!(p.stats.reads_off_log, 1);
    }

    #[test]
    fn writes_and_multi_worker_reads_go_through_the_log_and_fast_reads_are_off_by_default() {
        let mut p = proxy(true);
        p.submit(KvCommand::Put(3, 1));
        p.submit(KvCommand::Sum);
        let (sends, multicasts) = drain(&mut p);
        assert!(sends.is_empty());
        assert_eq!(multicasts.len(), 2);
        let mut p = proxy(false);
        p.submit(KvCommand::Get(3));
        let (sends, multicasts) = drain(&mut p);
        assert!(sends.is_empty());
        assert_eq!(multicasts.len(), 1);
    }

    #[test]
    fn a_misrouted_read_is_multicast_next() {
        let mut p = proxy(true);
        let seq = p.submit(KvCommand::Get(3));
        drain(&mut p);
        let none = p.on_reply(reply(seq, 0, Outcome::Misrouted(Bytes::new())));
        assert!(none.is_none());
        let (sends, multicasts) = drain(&mut p);
        assert!(sends.is_empty());
        assert_eq!(multicasts.len(), 1, "the next try goes through the log");
        p.tick(10);
        let (sends, multicasts) = drain(&mut p);
        assert!(
            sends.is_empty() && multicasts.len() == 1,
            "and so do its resends"
        );
    }
}
