//! The client host: many client proxies of any protocol on one node.
//!
//! A [`Proxy`] is one logical client of some protocol (the P-SMR one is
//! [`crate::psmr::proxy::ClientProxy`], the scale-out one
//! [`crate::partitioned::proxy::ScaleOutClient`]). A [`ClientHost`] hosts many of them on one
//! node, fed by a [`Driver`]: a closed-loop workload ([`crate::load::ClosedLoop`]), blocking
//! calls from other threads ([`crate::calls`]), or the simulator's recording workload
//! ([`crate::sim::SimDriver`]). Like the replica host it is sans-IO: messages for its clients,
//! the tick and the time in; multicasts out. Latencies are measured on the time it is given
//! ([`super::Inputs::now_us`]: the wall clock in production, virtual time in the simulator).

use super::{Action, Attached, Host, Inputs};
use crate::wire::{AppMsg, ClientId};
use bytes::Bytes;
use groups::groupset::GroupSet;
use groups::ids::NodeId;
use groups::runtime::Waker;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
    /// Read-only commands sent to one replica, off the log (P-SMR fast reads).
    pub reads_off_log: u64,
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
        self.reads_off_log += o.reads_off_log;
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

/// A finished command.
#[derive(Debug)]
pub struct Completion<C, R> {
    pub seq: u64,
    pub command: C,
    pub result: Result<R, ClientError>,
}

/// A client proxy (sans-IO): what a [`ClientHost`] hosts. It numbers
/// the commands it is given, turns them into multicasts, and turns replicas' messages into
/// completions.
pub trait Proxy: Send + 'static {
    type Command: Clone + std::fmt::Debug + Send + 'static;
    type Reply: Clone + std::fmt::Debug + Send + 'static;

    fn id(&self) -> ClientId;
    /// Submits a command; returns its sequence number.
    fn submit(&mut self, command: Self::Command) -> u64;
    /// Handles the body of a message a replica addressed to this client
    /// ([`crate::wire::AppMsg::ToClient`]); returns a completion if a command finished.
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
    /// The node started in this cluster (a proxy that talks to replicas directly finds them
    /// here).
    fn attach(&mut self, _config: &groups::config::ClusterConfig) {}
    /// Point-to-point messages to perform ([`crate::wire::AppMsg`]s to replicas).
    fn take_sends(&mut self, _out: &mut Vec<(NodeId, Bytes)>) {}
}

/// Produces commands `C` for the clients of a [`ClientHost`] and learns their outcomes `R`.
pub trait Driver<C, R>: Send + 'static {
    /// The node started; `waker` makes it step soon (for a driver fed by other threads).
    fn attach(&mut self, _waker: &Waker) {}
    /// Client `client` has room for another command at `now_us`; return one, or `None` for
    /// now.
    fn next(&mut self, client: usize, now_us: u64) -> Option<C>;
    /// The command `next` just returned was submitted as `seq`.
    fn submitted(&mut self, _client: usize, _seq: u64, _now_us: u64) {}
    /// A command of `client` finished after `latency`.
    fn complete(&mut self, client: usize, done: Completion<C, R>, latency: Duration);
}

/// A node's client counters, readable from other threads (see [`ClientHost::share_stats`]).
pub type SharedStats = Arc<parking_lot::Mutex<ClientStats>>;

/// Many client proxies on one node (see the module docs).
pub struct ClientHost<P: Proxy, D: Driver<P::Command, P::Reply>> {
    proxies: Vec<P>,
    first_index: u32,
    /// Per client, when each outstanding command was submitted (microseconds).
    started: Vec<BTreeMap<u64, u64>>,
    window: usize,
    pub driver: D,
    /// The tick the proxies last saw (their timers only need each new tick).
    ticked: u64,
    shared: Option<(SharedStats, u64)>,
    refused: Vec<Completion<P::Command, P::Reply>>,
    multicasts: Vec<(GroupSet, Bytes)>,
    sends: Vec<(NodeId, Bytes)>,
}

impl<P: Proxy, D: Driver<P::Command, P::Reply>> ClientHost<P, D> {
    /// Hosts `proxies`, which must be the clients `first_index, first_index + 1, ...` of one
    /// node, each keeping up to `window` commands outstanding.
    pub fn new(proxies: Vec<P>, window: usize, driver: D) -> Self {
        let first_index = proxies.first().map_or(0, |p| p.id().index());
        debug_assert!(proxies
            .iter()
            .enumerate()
            .all(|(i, p)| p.id().index() == first_index.wrapping_add(i as u32)));
        ClientHost {
            started: vec![BTreeMap::new(); proxies.len()],
            proxies,
            window: window.max(1),
            first_index,
            driver,
            ticked: u64::MAX,
            shared: None,
            refused: Vec::new(),
            multicasts: Vec::new(),
            sends: Vec::new(),
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

    pub fn proxies(&self) -> &[P] {
        &self.proxies
    }
}

impl<P: Proxy, D: Driver<P::Command, P::Reply>> Host for ClientHost<P, D> {
    fn reads_entries(&self) -> bool {
        false
    }

    fn attach(&mut self, at: &Attached, _out: &mut Vec<Action>) {
        let max = at.config.tuning.payload_bytes_max;
        for p in &mut self.proxies {
            p.set_payload_limit(max);
            p.attach(&at.config);
        }
        self.driver.attach(&at.waker);
    }

    fn step(&mut self, input: &mut Inputs, out: &mut Vec<Action>) {
        let now_us = input.now_us;
        input.entries.clear();
        input.delivered.clear();
        input.exchanges.clear();
        input.events.clear();
        input.read_indexes.clear();
        for (from, bytes) in input.app.drain(..) {
            let (client, body) = match AppMsg::parse(&bytes) {
                Ok(AppMsg::ToClient { client, body }) => (client, body),
                Ok(_) => {
                    tracing::debug!(%from, "a replica's message at a client node; dropped");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%from, error = %e, "message for no client dropped");
                    continue;
                }
            };
            let i = client.index().wrapping_sub(self.first_index) as usize;
            let Some(p) = self.proxies.get_mut(i).filter(|p| p.id() == client) else {
                continue;
            };
            if let Some(c) = p.on_message(body) {
                let t0 = self.started[i].remove(&c.seq).unwrap_or(now_us);
                let latency = Duration::from_micros(now_us.saturating_sub(t0));
                self.driver.complete(i, c, latency);
            }
        }
        let new_tick = input.now != self.ticked;
        self.ticked = input.now;
        for (i, p) in self.proxies.iter_mut().enumerate() {
            if new_tick {
                p.tick(input.now);
            }
            while p.outstanding() < self.window {
                let Some(cmd) = self.driver.next(i, now_us) else {
                    break;
                };
                let seq = p.submit(cmd);
                self.started[i].insert(seq, now_us);
                self.driver.submitted(i, seq, now_us);
                p.take_refused(&mut self.refused);
                for c in self.refused.drain(..) {
                    self.started[i].remove(&c.seq);
                    self.driver.complete(i, c, Duration::ZERO);
                }
            }
            p.take_multicasts(&mut self.multicasts);
            p.take_sends(&mut self.sends);
        }
        out.extend(self.sends.drain(..).map(|(to, b)| Action::Send(to, b)));
        out.extend(
            self.multicasts
                .drain(..)
                .map(|(dests, payload)| Action::Multicast(dests, payload)),
        );
        if new_tick {
            if let Some((shared, at)) = &mut self.shared {
                if *at != input.now {
                    *at = input.now;
                    let s: ClientStats = self.proxies.iter().map(|p| p.stats()).sum();
                    *shared.lock() = s;
                }
            }
        }
    }
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
