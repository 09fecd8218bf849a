//! Running a deployment in one process (threads and channels).

use crate::layout::Deployment;
use crate::psmr::replica::{ReplicaApp, ReplicaOptions};
use crate::service::Service;
use groups::ids::NodeId;
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::inproc::{App, InProcCluster};
use groups::runtime::Waker;
use std::sync::Arc;

/// What runs on a node of a deployment: a replica `R` (a P-SMR [`ReplicaApp`], or a scale-out
/// [`crate::partitioned::replica::ScaleOutReplica`]), a client node `C`, or a bare acceptor.
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
) -> InProcCluster<EngineApp<ReplicaApp<S>, C>> {
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
                EngineApp::Replica(Box::new(ReplicaApp::new(service.clone(), options.clone())))
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
pub fn start_scaleout<S: crate::partitioned::service::PartitionedService, C: App>(
    layout: &crate::partitioned::layout::ScaleOutLayout,
    service: Arc<S>,
    options: crate::partitioned::ServerOptions,
    make_client: impl FnMut(NodeId) -> C,
) -> InProcCluster<EngineApp<crate::partitioned::replica::ScaleOutReplica<S>, C>> {
    start_scaleout_with(layout, service, options, make_client, |_| {})
}

/// Like [`start_scaleout`], calling `on_replica` on every replica before it starts (to share
/// its counters, for example).
pub fn start_scaleout_with<S: crate::partitioned::service::PartitionedService, C: App>(
    layout: &crate::partitioned::layout::ScaleOutLayout,
    service: Arc<S>,
    options: crate::partitioned::ServerOptions,
    mut make_client: impl FnMut(NodeId) -> C,
    mut on_replica: impl FnMut(&mut crate::partitioned::replica::ScaleOutReplica<S>),
) -> InProcCluster<EngineApp<crate::partitioned::replica::ScaleOutReplica<S>, C>> {
    let cfg = Arc::new(layout.config.clone());
    InProcCluster::start_with(
        layout.config.clone(),
        |_| NodeOptions::default(),
        |id| match layout.role(id) {
            Some(role) => {
                let mut r = crate::partitioned::replica::ScaleOutReplica::new(
                    service.clone(),
                    cfg.clone(),
                    id,
                    role,
                    layout.partitions,
                    options.clone(),
                );
                on_replica(&mut r);
                EngineApp::Replica(Box::new(r))
            }
            None if layout.is_client(id) => EngineApp::Client(make_client(id)),
            None => EngineApp::Acceptor,
        },
    )
}
