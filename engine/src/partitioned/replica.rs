//! A partition or oracle replica on a `groups` node: the host of the sans-IO cores.
//!
//! The node merges the replica's one subscription (its partition's group, or the oracle's)
//! and hands over deliveries, reliable-multicast exchanges and point-to-point messages; the
//! host feeds them to the core and performs the core's outputs. One thread runs a replica
//! (execution within a partition is sequential here; the combined mode will host several
//! workers per partition the same way).

use super::common::Output;
use super::oracle::{OracleServer, OracleStats};
use super::server::{PartitionServer, ServerStats};
use super::service::{PartitionId, PartitionedService};
use super::ServerOptions;
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use groups::merge::Delivery;
use groups::node::GroupsNode;
use groups::rmcast::RDelivery;
use groups::runtime::inproc::App;
use groups::runtime::Waker;
use std::sync::Arc;

/// What a scale-out replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Partition(PartitionId),
    Oracle,
}

/// The core a replica runs.
pub enum Core<S: PartitionedService> {
    Partition(Box<PartitionServer<S>>),
    Oracle(Box<OracleServer<S>>),
}

/// A partition replica's counters, readable from other threads (see
/// [`ScaleOutReplica::share_stats`]).
pub type SharedServerStats = Arc<parking_lot::Mutex<ServerStats>>;

/// An oracle replica's counters, readable from other threads (see
/// [`ScaleOutReplica::share_oracle_stats`]).
pub type SharedOracleStats = Arc<parking_lot::Mutex<OracleStats>>;

/// A scale-out replica.
pub struct ScaleOutReplica<S: PartitionedService> {
    pub core: Core<S>,
    deliveries: Vec<(usize, Delivery)>,
    exchanges: Vec<RDelivery>,
    inbox: Vec<(NodeId, Bytes)>,
    outputs: Vec<Output>,
    shared: Option<(SharedServerStats, u64)>,
    shared_oracle: Option<(SharedOracleStats, u64)>,
}

impl<S: PartitionedService> ScaleOutReplica<S> {
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        role: Role,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let core = match role {
            Role::Partition(p) => Core::Partition(Box::new(PartitionServer::new(
                service, cfg, node, p, partitions, opts,
            ))),
            Role::Oracle => Core::Oracle(Box::new(OracleServer::new(
                service, cfg, node, partitions, opts,
            ))),
        };
        ScaleOutReplica {
            core,
            deliveries: Vec::new(),
            exchanges: Vec::new(),
            inbox: Vec::new(),
            outputs: Vec::new(),
            shared: None,
            shared_oracle: None,
        }
    }

    /// Publishes a partition replica's counters to a shared copy, refreshed once per tick, so
    /// a benchmark can sample them (moves over time) while the replica runs.
    pub fn share_stats(&mut self) -> SharedServerStats {
        let s = SharedServerStats::default();
        self.shared = Some((s.clone(), u64::MAX));
        s
    }

    /// Publishes an oracle replica's counters to a shared copy, refreshed once per tick (as
    /// [`Self::share_stats`] does for a partition replica).
    pub fn share_oracle_stats(&mut self) -> SharedOracleStats {
        let s = SharedOracleStats::default();
        self.shared_oracle = Some((s.clone(), u64::MAX));
        s
    }

    /// Takes what `node` delivered, runs the core, and performs its outputs.
    pub fn step(&mut self, node: &mut GroupsNode) {
        node.take_delivered(&mut self.deliveries);
        node.take_rdelivered(&mut self.exchanges);
        node.take_app(&mut self.inbox);
        match &mut self.core {
            Core::Partition(s) => {
                for (_, d) in self.deliveries.drain(..) {
                    s.deliver(d.msg.id, &d.msg.payload);
                }
                for r in self.exchanges.drain(..) {
                    s.exchange(&r.payload);
                }
                for (_, m) in self.inbox.drain(..) {
                    s.peer(&m);
                }
                s.tick(node.now());
                s.run();
                s.take_outputs(&mut self.outputs);
            }
            Core::Oracle(o) => {
                for (_, d) in self.deliveries.drain(..) {
                    o.deliver(d.msg.id, &d.msg.payload);
                }
                self.exchanges.clear();
                for (_, m) in self.inbox.drain(..) {
                    o.peer(&m);
                }
                o.take_outputs(&mut self.outputs);
            }
        }
        for out in self.outputs.drain(..) {
            match out {
                Output::Rmcast(dests, payload) => {
                    if let Err(e) = node.rmcast(dests, payload) {
                        // Receivers pull what they miss.
                        tracing::warn!(error = %e, "exchange not sent");
                    }
                }
                Output::Send(to, payload) => node.send_app(to, payload),
            }
        }
        if let (Some((shared, at)), Core::Partition(s)) = (&mut self.shared, &self.core) {
            if *at != node.now() {
                *at = node.now();
                *shared.lock() = s.stats.clone();
            }
        }
        if let (Some((shared, at)), Core::Oracle(o)) = (&mut self.shared_oracle, &self.core) {
            if *at != node.now() {
                *at = node.now();
                *shared.lock() = o.stats.clone();
            }
        }
    }

    pub fn partition(&self) -> Option<&PartitionServer<S>> {
        match &self.core {
            Core::Partition(s) => Some(s),
            Core::Oracle(_) => None,
        }
    }

    pub fn oracle(&self) -> Option<&OracleServer<S>> {
        match &self.core {
            Core::Oracle(o) => Some(o),
            Core::Partition(_) => None,
        }
    }

    /// Delivered commands waiting.
    pub fn backlog(&self) -> usize {
        self.partition().map_or(0, PartitionServer::backlog)
    }

    /// Delivered multicasts handled.
    pub fn handled(&self) -> u64 {
        match &self.core {
            Core::Partition(s) => s.stats.handled,
            Core::Oracle(o) => o.stats.handled,
        }
    }

    pub fn state_hash(&self) -> u64 {
        match &self.core {
            Core::Partition(s) => s.state_hash(),
            Core::Oracle(o) => o.state_hash(),
        }
    }
}

impl<S: PartitionedService> App for ScaleOutReplica<S> {
    fn attach(&mut self, _node: &mut GroupsNode, _waker: Waker) {}

    fn step(&mut self, node: &mut GroupsNode) {
        ScaleOutReplica::step(self, node)
    }
}
