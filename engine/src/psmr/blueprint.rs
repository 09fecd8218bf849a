//! P-SMR and opt-PSMR deployments in the simulator: the blueprint, and what the simulator
//! reads from a replica whose workers a seeded scheduler runs.

use super::deployment::Deployment;
use super::executor::ExecOptions;
use super::proxy::{ClientProxy, Mode};
use super::replica::{PsmrCore, ReplicaOptions};
use super::scheduled::Scheduled;
use super::scheduled::SimulatedReplica;
use super::service::Service;
use crate::checkpoint::CheckpointPolicy;
use crate::host::ReplicaHost;
use crate::sim::{Blueprint, Roles, SimCore};
use crate::wire::ClientId;
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use std::sync::Arc;

/// The blueprint of P-SMR and opt-PSMR deployments.
pub struct Psmr<S: Service> {
    pub service: Arc<S>,
    pub deployment: Deployment,
    pub mode: Mode,
    pub exec: ExecOptions,
    /// Clients' first resend timeout, in ticks.
    pub resend_ticks: u64,
    /// Replicas ask for checkpoints by this policy (`None`, the default: never; replicas
    /// still take part in rounds, serve and ask for state transfers).
    pub checkpoints: Option<CheckpointPolicy>,
    /// Clients serve single-worker reads off the log ([`ClientProxy::with_fast_reads`]).
    pub fast_reads: bool,
    roles: Roles,
}

impl<S: Service> Psmr<S> {
    pub fn new(
        service: Arc<S>,
        deployment: Deployment,
        mode: Mode,
        exec: ExecOptions,
        resend_ticks: u64,
    ) -> Self {
        let roles = Roles {
            config: deployment.config.clone(),
            replica_sets: vec![deployment.replicas.clone()],
            acceptors: deployment.acceptors.clone(),
            clients: deployment.clients.clone(),
        };
        Psmr {
            service,
            deployment,
            mode,
            exec,
            resend_ticks,
            checkpoints: None,
            fast_reads: false,
            roles,
        }
    }
}

impl<S: Service> Blueprint for Psmr<S> {
    type Core = PsmrCore<S, Scheduled<S>>;
    type Proxy = ClientProxy<S>;
    fn roles(&self) -> &Roles {
        &self.roles
    }
    fn replica(&self, _id: NodeId, _config: &Arc<ClusterConfig>, seed: u64) -> SimulatedReplica<S> {
        let options = ReplicaOptions {
            exec: self.exec.clone(),
            ..ReplicaOptions::new(self.deployment.workers)
        };
        let r = ReplicaHost::scheduled(self.service.clone(), options, seed);
        match self.checkpoints {
            Some(p) => r.with_checkpoints(p),
            None => r,
        }
    }
    fn proxy(&self, id: ClientId) -> ClientProxy<S> {
        ClientProxy::new(
            id,
            self.service.clone(),
            self.mode,
            self.deployment.workers,
            self.resend_ticks,
        )
        .with_fast_reads(self.fast_reads)
    }
}

impl<S: Service> SimCore for PsmrCore<S, Scheduled<S>> {
    fn backlog(&self) -> usize {
        self.driver.workers().iter().map(|w| w.backlog()).sum()
    }

    /// Every worker's counters: a replica's workers see the same streams as every other
    /// replica's, so equal counters mean a replica has caught up.
    fn progress(&self) -> Vec<u64> {
        self.driver
            .workers()
            .iter()
            .flat_map(|w| {
                let s = w.stats();
                [
                    s.single,
                    s.multi,
                    s.parked,
                    s.aborts,
                    s.misrouted,
                    s.duplicates,
                    s.rejected,
                ]
            })
            .collect()
    }

    fn state_hash(&self) -> Option<u64> {
        self.driver.state_hash()
    }
}
