//! One host for every protocol and every runtime.
//!
//! A node of a deployment runs a `groups` [`GroupsNode`] (multicast, logs, feeds) and, on top
//! of it, one *host*: a [`ReplicaHost`] (a replica of any protocol: its protocol logic is a
//! pluggable [`ReplicaCore`]) or a [`ClientHost`] (client proxies of any protocol). Hosts are
//! sans-IO: a step takes [`Inputs`] (what the node delivered since the last step: decided log
//! entries or merged deliveries, reliable-multicast exchanges, point-to-point messages, feed
//! events, the time) and produces [`Action`]s (messages to send, multicasts, skip requests,
//! checkpoint positions, feed restarts). They never touch sockets, threads or clocks
//! themselves; a core may run threads (the production P-SMR workers), which is a property of
//! that core's driver, not of the host.
//!
//! [`OnNode`] is the one adapter between a host and a node: it implements the runtimes'
//! [`App`] seam, so the in-process runtime, the TCP runtime and the simulator
//! ([`crate::sim`]) all drive the same host types the same way.

pub mod client;
pub mod replica;

pub use client::ClientHost;
pub use replica::{ReplicaCore, ReplicaHost};

use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::feed::FeedEvent;
use groups::groupset::GroupSet;
use groups::ids::{LogId, NodeId};
use groups::merge::{Delivery, SkipNeed};
use groups::node::{GroupsNode, LogEntries};
use groups::readindex::ReadIndex;
use groups::rmcast::RDelivery;
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use groups::MulticastError;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// What the node gave a host since its last step.
#[derive(Default, Debug)]
pub struct Inputs {
    /// The node's time, in ticks.
    pub now: u64,
    /// A finer time in microseconds (virtual in the simulator), for latencies and durations.
    pub now_us: u64,
    /// Decided entries, for hosts whose core merges the logs itself.
    pub entries: Vec<LogEntries>,
    /// Merged deliveries (with their subscription's index), for the others.
    pub delivered: Vec<(usize, Delivery)>,
    /// Reliable-multicast deliveries (S-SMR and DS-SMR exchanges).
    pub exchanges: Vec<RDelivery>,
    /// Point-to-point messages ([`crate::wire::AppMsg`]) and who sent them.
    pub app: Vec<(NodeId, Bytes)>,
    /// Conditions to act on (a log trimmed past this subscriber).
    pub events: Vec<FeedEvent>,
    /// Read indexes completed ([`Action::ReadIndex`]): the host's token and, per log, a
    /// position past every entry decided before it was asked.
    pub read_indexes: Vec<(u64, Vec<(LogId, u64)>)>,
}

/// What a host asks its node to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A point-to-point message ([`crate::wire::AppMsg`]).
    Send(NodeId, Bytes),
    /// An atomic multicast ([`crate::wire::FeedMsg`]). Refused for backpressure, it is held and
    /// tried again, in order, before the host's next actions.
    Multicast(GroupSet, Bytes),
    /// A reliable multicast.
    Rmcast(GroupSet, Bytes),
    /// Ask a log's acceptors to pad it (a merger is blocked on it).
    RequestSkip(SkipNeed),
    /// This replica's latest checkpoint covers these logs up to these positions.
    SetCheckpointed(Vec<(LogId, u64)>),
    /// Read the logs again from these positions (a checkpoint was installed); what the node
    /// had not handed out yet is dropped.
    RestartFeeds(Vec<(LogId, u64)>),
    /// Ask for a read index of these logs ([`groups::readindex`]); it comes back in
    /// [`Inputs::read_indexes`] with `token`.
    ReadIndex { token: u64, logs: Vec<LogId> },
}

/// What a host learns when its node starts.
pub struct Attached {
    pub id: NodeId,
    pub config: Arc<ClusterConfig>,
    /// Makes the node's loop run a step as soon as possible, from any thread.
    pub waker: Waker,
    pub now: u64,
}

/// A sans-IO host (see the module docs).
pub trait Host: Send + 'static {
    /// Whether the node must hand out decided entries instead of merging them
    /// ([`groups::node::NodeOptions::merge_locally`] off).
    fn reads_entries(&self) -> bool;
    /// Called once, before the first step.
    fn attach(&mut self, at: &Attached, out: &mut Vec<Action>);
    /// Takes the inputs (leaving the vectors empty) and says what to do.
    fn step(&mut self, input: &mut Inputs, out: &mut Vec<Action>);
    /// Called once when the node stops.
    fn detach(&mut self) {}
}

/// Where [`OnNode`] reads microseconds from.
enum Clock {
    Wall(Instant),
    /// Set by the simulator before every step.
    Virtual(u64),
}

/// A host on a node: the [`App`] every runtime drives (see the module docs).
pub struct OnNode<H> {
    pub host: H,
    clock: Clock,
    inputs: Inputs,
    actions: Vec<Action>,
    /// Multicasts refused for backpressure, to try again first.
    held: VecDeque<(GroupSet, Bytes)>,
    discard: Vec<LogEntries>,
    /// Read indexes asked for: the node's request number -> the host's token.
    read_tokens: BTreeMap<u64, u64>,
    read_done: Vec<ReadIndex>,
}

impl<H: Host> OnNode<H> {
    /// `host` on a node of a real runtime (microseconds from the wall clock).
    pub fn new(host: H) -> Self {
        OnNode {
            host,
            clock: Clock::Wall(Instant::now()),
            inputs: Inputs::default(),
            actions: Vec::new(),
            held: VecDeque::new(),
            discard: Vec::new(),
            read_tokens: BTreeMap::new(),
            read_done: Vec::new(),
        }
    }

    /// `host` on a simulated node: time comes from [`OnNode::set_time_us`].
    pub fn simulated(host: H) -> Self {
        OnNode {
            clock: Clock::Virtual(0),
            ..OnNode::new(host)
        }
    }

    /// The simulator's virtual time.
    pub fn set_time_us(&mut self, now_us: u64) {
        self.clock = Clock::Virtual(now_us);
    }

    fn now_us(&self) -> u64 {
        match &self.clock {
            Clock::Wall(t0) => t0.elapsed().as_micros() as u64,
            Clock::Virtual(us) => *us,
        }
    }

    fn perform(&mut self, node: &mut GroupsNode) {
        while let Some((dests, payload)) = self.held.pop_front() {
            if let Err(e) = node.multicast(dests.clone(), payload.clone()) {
                if matches!(e, MulticastError::Backpressure { .. }) {
                    self.held.push_front((dests, payload));
                    break;
                }
                tracing::error!(error = %e, "multicast refused");
            }
        }
        for a in self.actions.drain(..) {
            match a {
                Action::Send(to, bytes) => node.send_app(to, bytes),
                Action::Multicast(dests, payload) => {
                    if !self.held.is_empty() {
                        self.held.push_back((dests, payload));
                    } else if let Err(e) = node.multicast(dests.clone(), payload.clone()) {
                        if matches!(e, MulticastError::Backpressure { .. }) {
                            self.held.push_back((dests, payload));
                        } else {
                            tracing::error!(error = %e, "multicast refused");
                        }
                    }
                }
                Action::Rmcast(dests, payload) => {
                    if let Err(e) = node.rmcast(dests, payload) {
                        // Receivers pull what they miss.
                        tracing::warn!(error = %e, "reliable multicast not sent");
                    }
                }
                Action::RequestSkip(need) => node.request_skip(need),
                Action::SetCheckpointed(positions) => node.set_checkpointed(&positions),
                Action::RestartFeeds(positions) => {
                    node.take_entries(&mut self.discard);
                    self.discard.clear();
                    node.restart_feeds(&positions);
                }
                Action::ReadIndex { token, logs } => match node.read_index(&logs) {
                    Ok(seq) => {
                        self.read_tokens.insert(seq, token);
                    }
                    // The host asked for logs of its own configuration; a refusal is a bug.
                    Err(e) => tracing::error!(error = %e, "read index refused"),
                },
            }
        }
    }
}

impl<H: Host> App for OnNode<H> {
    fn attach(&mut self, node: &mut GroupsNode, waker: Waker) {
        let at = Attached {
            id: node.id(),
            config: node.config().clone(),
            waker,
            now: node.now(),
        };
        self.host.attach(&at, &mut self.actions);
        self.perform(node);
    }

    fn step(&mut self, node: &mut GroupsNode) {
        let now_us = self.now_us();
        let i = &mut self.inputs;
        i.now = node.now();
        i.now_us = now_us;
        node.take_entries(&mut i.entries);
        node.take_delivered(&mut i.delivered);
        node.take_rdelivered(&mut i.exchanges);
        node.take_app(&mut i.app);
        node.take_events(&mut i.events);
        node.take_read_indexes(&mut self.read_done);
        for r in self.read_done.drain(..) {
            if let Some(token) = self.read_tokens.remove(&r.seq) {
                i.read_indexes.push((token, r.positions));
            }
        }
        self.host.step(&mut self.inputs, &mut self.actions);
        self.perform(node);
    }

    fn detach(&mut self, _node: &mut GroupsNode) {
        self.host.detach();
    }
}
