//! Running a deployment in one process (threads and channels).

use crate::host::OnNode;
use crate::partitioned::layout::ScaleOutLayout;
use crate::partitioned::replica::ScaleOutReplica;
use crate::partitioned::service::PartitionedService;
use crate::partitioned::ServerOptions;
use crate::psmr::deployment::Deployment;
use crate::psmr::replica::ReplicaOptions;
use crate::psmr::service::Service;
use crate::psmr::threaded::ThreadedReplica;
use groups::ids::NodeId;
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::inproc::{App, InProcCluster};
use groups::runtime::Waker;
use std::sync::Arc;

/// What runs on a node of a deployment: a replica `R` (the replica host on its node: a P-SMR
/// [`ThreadedReplica`] or a [`ScaleOutReplica`]), a client node `C`, or a bare acceptor.
pub enum EngineApp<R: App, C: App> {
    Replica(Box<R>),
    Client(C),
    /// An acceptor that is not a replica.
    Acceptor,
}

impl<R: App, C: App> App for EngineApp<R, C> {
    fn attach(&mut self, node: &mut GroupsNode, waker: Waker) {
        match self {
            EngineApp::Replica(r) => r.attach(node, waker),
            EngineApp::Client(c) => c.attach(node, waker),
            EngineApp::Acceptor => {}
        }
    }
    fn step(&mut self, node: &mut GroupsNode) {
        match self {
            EngineApp::Replica(r) => r.step(node),
            EngineApp::Client(c) => c.step(node),
            EngineApp::Acceptor => {}
        }
    }
    fn detach(&mut self, node: &mut GroupsNode) {
        match self {
            EngineApp::Replica(r) => r.detach(node),
            EngineApp::Client(c) => c.detach(node),
            EngineApp::Acceptor => {}
        }
    }
}

impl<R: App, C: App> EngineApp<R, C> {
    pub fn as_replica(&self) -> Option<&R> {
        match self {
            EngineApp::Replica(r) => Some(r),
            _ => None,
        }
    }
    pub fn as_client(&self) -> Option<&C> {
        match self {
            EngineApp::Client(c) => Some(c),
            _ => None,
        }
    }
}

/// Starts every node of `d` on threads: replicas run `service` with `options`, client nodes
/// run `make_client(id)`.
pub fn start<S: Service, C: App>(
    d: &Deployment,
    service: Arc<S>,
    options: ReplicaOptions,
    mut make_client: impl FnMut(NodeId) -> C,
) -> InProcCluster<EngineApp<OnNode<ThreadedReplica<S>>, C>> {
    let replicas = d.replicas.clone();
    let clients = d.clients.clone();
    InProcCluster::start_with(
        d.config.clone(),
        |id| NodeOptions {
            merge_locally: !replicas.contains(&id),
            ..NodeOptions::default()
        },
        |id| {
            if replicas.contains(&id) {
                EngineApp::Replica(Box::new(OnNode::new(ThreadedReplica::threaded(
                    service.clone(),
                    options.clone(),
                ))))
            } else if clients.contains(&id) {
                EngineApp::Client(make_client(id))
            } else {
                EngineApp::Acceptor
            }
        },
    )
}

/// Starts every node of a scale-out deployment on threads: partition and oracle replicas run
/// `service` with `options`, client nodes run `make_client(id)`.
pub fn start_scaleout<S: PartitionedService, C: App>(
    layout: &ScaleOutLayout,
    service: Arc<S>,
    options: ServerOptions,
    make_client: impl FnMut(NodeId) -> C,
) -> InProcCluster<EngineApp<OnNode<ScaleOutReplica<S>>, C>> {
    start_scaleout_with(layout, service, options, make_client, |_| {})
}

/// Like [`start_scaleout`], calling `on_replica` on every replica before it starts (to share
/// its counters, for example).
pub fn start_scaleout_with<S: PartitionedService, C: App>(
    layout: &ScaleOutLayout,
    service: Arc<S>,
    options: ServerOptions,
    mut make_client: impl FnMut(NodeId) -> C,
    mut on_replica: impl FnMut(&mut ScaleOutReplica<S>),
) -> InProcCluster<EngineApp<OnNode<ScaleOutReplica<S>>, C>> {
    let cfg = Arc::new(layout.config.clone());
    // Replicas that serve reads off the log merge their logs themselves.
    let merge_self = options.fast_reads;
    InProcCluster::start_with(
        layout.config.clone(),
        |id| NodeOptions {
            merge_locally: !(merge_self && layout.role(id).is_some()),
            ..NodeOptions::default()
        },
        |id| match layout.role(id) {
            Some(role) => {
                let mut r = ScaleOutReplica::scaleout(
                    service.clone(),
                    cfg.clone(),
                    id,
                    role,
                    layout.partitions,
                    options.clone(),
                );
                if merge_self {
                    r = r.checkpointing(&cfg, id, None);
                }
                on_replica(&mut r);
                EngineApp::Replica(Box::new(OnNode::new(r)))
            }
            None if layout.is_client(id) => EngineApp::Client(make_client(id)),
            None => EngineApp::Acceptor,
        },
    )
}

/// Waits (up to `timeout`) until the `replicas` of a running in-process cluster have taken in
/// the same prefix of every log (their feeds stand at the same positions), so that a test that
/// stops the cluster next compares replicas that saw the same commands: a client's reply comes
/// from the fastest replica, and the others may still be a few entries behind. Returns the
/// positions each replica reached if they never agreed in time.
pub fn await_level<A: App>(
    cluster: &InProcCluster<A>,
    replicas: &[NodeId],
    timeout: std::time::Duration,
) -> Result<(), Vec<Vec<u64>>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let positions: Vec<Vec<u64>> = replicas
            .iter()
            .map(|&r| {
                cluster
                    .node(r)
                    .call(|n| {
                        let logs: Vec<_> = n.config().logs.iter().map(|l| l.id).collect();
                        logs.into_iter()
                            .map(|l| n.feed_next(l).unwrap_or(0))
                            .collect::<Vec<u64>>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        if positions.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(positions);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
