//! Building the `groups` cluster of a P-SMR deployment.
//!
//! Groups are workers: group `i` is worker `i` of every replica. There is one log per group
//! plus one log covering all groups (for commands of several workers), run by 2f+1 acceptors.
//! Replicas subscribe to every group, one subscription per worker; clients subscribe to
//! nothing (they only multicast and receive replies).
//!
//! Node ids: replicas are 1..=r; acceptors are the first replicas, topped up with
//! acceptor-only nodes numbered after the replicas; client nodes start at 1000.

use groups::config::{ClusterConfig, ConfigError, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};

/// First client node id.
pub const FIRST_CLIENT: u32 = 1000;

/// The nodes of a deployment and its cluster configuration.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub replicas: Vec<NodeId>,
    pub acceptors: Vec<NodeId>,
    pub clients: Vec<NodeId>,
    pub workers: usize,
    pub config: ClusterConfig,
}

impl Deployment {
    /// The simulated campaigns' deployment: `replicas` replicas of `workers` workers each,
    /// f = 1, 2 client nodes, default tuning with the logs trimmed every `trim_every_entries`
    /// entries, or never (`None`: a restarted replica replays them from the start).
    pub fn simulated(
        replicas: usize,
        workers: usize,
        trim_every_entries: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let base = Tuning::default();
        let tuning = Tuning {
            trim: trim_every_entries.is_some(),
            trim_every_entries: trim_every_entries.unwrap_or(base.trim_every_entries),
            ..base
        };
        Deployment::new(replicas, 1, workers, 2, tuning)
    }

    /// `replicas` replicas of `workers` workers each, `2f+1` acceptors, `clients` client nodes.
    pub fn new(
        replicas: usize,
        f: usize,
        workers: usize,
        clients: usize,
        tuning: Tuning,
    ) -> Result<Self, ConfigError> {
        assert!(replicas > 0 && workers > 0);
        let acceptor_count = 2 * f + 1;
        let replica_ids: Vec<NodeId> = (1..=replicas as u32).map(NodeId).collect();
        let mut acceptors: Vec<NodeId> = replica_ids.iter().copied().take(acceptor_count).collect();
        let mut next = replicas as u32 + 1;
        while acceptors.len() < acceptor_count {
            acceptors.push(NodeId(next));
            next += 1;
        }
        let clients: Vec<NodeId> = (0..clients as u32)
            .map(|i| NodeId(FIRST_CLIENT + i))
            .collect();
        let per_worker: Vec<GroupSet> = (0..workers as u32)
            .map(|g| GroupSet::singleton(GroupId(g)))
            .collect();
        let mut nodes: Vec<NodeConfig> = replica_ids
            .iter()
            .map(|&id| NodeConfig {
                id,
                addr: None,
                subscriptions: per_worker.clone(),
            })
            .collect();
        for &a in acceptors.iter().filter(|a| !replica_ids.contains(a)) {
            nodes.push(NodeConfig {
                id: a,
                addr: None,
                subscriptions: vec![],
            });
        }
        for &c in &clients {
            nodes.push(NodeConfig {
                id: c,
                addr: None,
                subscriptions: vec![],
            });
        }
        let config = ClusterConfig::per_group_plus_global(
            0xC40_0000 + workers as u64,
            workers as u32,
            nodes,
            acceptors.clone(),
            tuning,
        )?;
        Ok(Deployment {
            replicas: replica_ids,
            acceptors,
            clients,
            workers,
            config,
        })
    }

    /// Gives every node a loopback address from `base_port` on (for the TCP runtime).
    pub fn with_loopback_addresses(mut self, base_port: u16) -> Result<Self, ConfigError> {
        self.config = self.config.with_loopback_addresses(base_port)?;
        Ok(self)
    }

    pub fn is_replica(&self, id: NodeId) -> bool {
        self.replicas.contains(&id)
    }

    pub fn is_client(&self, id: NodeId) -> bool {
        self.clients.contains(&id)
    }

    /// The role of an in-process thread of this deployment, by its name, for CPU breakdowns
    /// ([`crate::load::cpu`]): `workers` (a replica's worker threads), `replica nodes` (a
    /// replica's node thread: multicast, consensus at its acceptor, merge, dispatch to the
    /// workers, replies out), `client nodes` (client proxies, encoding, replies in),
    /// `acceptors` (acceptor-only nodes) or `other`.
    pub fn thread_role(&self, name: &str) -> &'static str {
        if name.starts_with("replica-") {
            return "workers";
        }
        match name
            .strip_prefix("node-")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(n) if self.is_replica(NodeId(n)) => "replica nodes",
            Some(n) if self.is_client(NodeId(n)) => "client nodes",
            Some(n) if self.acceptors.contains(&NodeId(n)) => "acceptors",
            _ => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_replicas_three_acceptors() {
        let d = Deployment::new(2, 1, 4, 2, Tuning::default()).unwrap();
        assert_eq!(d.replicas, vec![NodeId(1), NodeId(2)]);
        assert_eq!(d.acceptors, vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(d.clients, vec![NodeId(1000), NodeId(1001)]);
        assert_eq!(d.config.logs.len(), 5);
        assert_eq!(d.config.node(NodeId(2)).unwrap().subscriptions.len(), 4);
        assert!(d.config.node(NodeId(3)).unwrap().subscriptions.is_empty());
    }
}
