//! Building the `groups` cluster of a scale-out deployment.
//!
//! Groups are partitions: group `p` is partition `p`; with DS-SMR, group `partitions` is the
//! oracle. Each group has its own log, run by the group's replicas (the paper's "replicas
//! colocated with acceptors"; topped up with acceptor-only nodes when a group has fewer than
//! 2f+1 replicas), plus one log covering every group for commands, moves and creates that
//! involve several, run by replicas of different groups. Replicas subscribe to their own
//! group; clients subscribe to nothing.
//!
//! Node ids: partition `p`'s replicas are `p * r + 1 ..= p * r + r`, the oracle's come next,
//! then acceptor-only nodes; client nodes start at 1000.

use super::replica::Role;
use super::service::PartitionId;
use super::Scheme;
use crate::psmr::deployment::FIRST_CLIENT;
use crate::sim::Roles;
use groups::config::{ClusterConfig, ConfigError, LogConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};

/// The nodes of a scale-out deployment and its cluster configuration.
#[derive(Clone, Debug)]
pub struct ScaleOutLayout {
    pub scheme: Scheme,
    /// The protocol's partitions: with one worker per partition the partitions, in combined
    /// mode the cells (partitions x workers, see [`ScaleOutLayout::combined`]).
    pub partitions: u32,
    /// Workers per partition replica (1 unless combined).
    pub workers: u32,
    /// Replicas of each partition (and of the oracle).
    pub replicas: usize,
    pub partition_replicas: Vec<Vec<NodeId>>,
    /// Empty in S-SMR.
    pub oracle_replicas: Vec<NodeId>,
    /// Acceptor-only nodes (when groups have fewer than 2f+1 replicas).
    pub extra_acceptors: Vec<NodeId>,
    pub clients: Vec<NodeId>,
    pub config: ClusterConfig,
}

/// Tuning defaults for scale-out deployments: receivers pull the exchanges they miss, so
/// reliable multicast does not relay.
pub fn tuning() -> Tuning {
    Tuning {
        rm_relay: false,
        ..Tuning::default()
    }
}

impl ScaleOutLayout {
    /// `partitions` partitions of `replicas` replicas each (plus an oracle of `replicas`
    /// replicas in DS-SMR), logs tolerating `f` crashed acceptors, `clients` client nodes.
    pub fn new(
        scheme: Scheme,
        partitions: u32,
        replicas: usize,
        f: usize,
        clients: usize,
        tuning: Tuning,
    ) -> Result<Self, ConfigError> {
        Self::combined(scheme, partitions, 1, replicas, f, clients, tuning)
    }

    /// A combined deployment ([`super::combined`]): `partitions` partitions of `replicas`
    /// replicas each running `workers` workers, one multicast group per (partition, worker)
    /// cell. Cell `p * workers + w` is group `p * workers + w`; with an oracle, its group is
    /// the next. Logs: one per partition covering its cells (run by the partition's
    /// replicas: a command of one worker or of several workers of the partition), the
    /// oracle's, and the global log covering every group (commands of several partitions,
    /// checkpoint requests). A partition's replicas subscribe to its cells and merge its log
    /// with the global one. (A log per cell would order nothing more: the replica merges all
    /// of its cells' logs in one stream anyway, and would batch less per log.) `partitions` in the result counts the
    /// cells (the protocol's partitions); `partition_replicas` has one set per partition.
    /// With one worker this is [`ScaleOutLayout::new`]'s layout.
    pub fn combined(
        scheme: Scheme,
        partitions: u32,
        workers: u32,
        replicas: usize,
        f: usize,
        clients: usize,
        tuning: Tuning,
    ) -> Result<Self, ConfigError> {
        if partitions == 0 || replicas == 0 || workers == 0 {
            return Err(ConfigError::Invalid(
                "a scale-out deployment needs at least one partition, one replica each and one worker".into(),
            ));
        }
        if workers > 1 && scheme == Scheme::Dynastar {
            return Err(ConfigError::Invalid(
                "combined mode (more than one worker per partition) runs S-SMR or DS-SMR, not DynaStar".into(),
            ));
        }
        let k = workers;
        let cells = partitions * k;
        let r = replicas as u32;
        let partition_replicas: Vec<Vec<NodeId>> = (0..partitions)
            .map(|p| (1..=r).map(|i| NodeId(p * r + i)).collect())
            .collect();
        let oracle_replicas: Vec<NodeId> = if scheme.has_oracle() {
            (1..=r).map(|i| NodeId(partitions * r + i)).collect()
        } else {
            Vec::new()
        };
        // Replica sets: the partitions', then the oracle's.
        let mut sets: Vec<Vec<NodeId>> = partition_replicas.clone();
        if scheme.has_oracle() {
            sets.push(oracle_replicas.clone());
        }
        let groups = cells + u32::from(scheme.has_oracle());
        let cells_of = |p: u32| -> GroupSet { (p * k..(p + 1) * k).map(GroupId).collect() };
        let quorum = 2 * f + 1;
        let next = sets.len() as u32 * r + 1;
        let extra_acceptors: Vec<NodeId> = if replicas < quorum {
            (0..(quorum - replicas) as u32)
                .map(|i| NodeId(next + i))
                .collect()
        } else {
            Vec::new()
        };
        let acceptors_of = |members: &[NodeId]| -> Vec<NodeId> {
            let mut a: Vec<NodeId> = members.iter().copied().take(quorum).collect();
            a.extend(extra_acceptors.iter().copied().take(quorum - a.len()));
            a
        };
        // One log per partition covering its cells, run by its replicas; the oracle's.
        let mut logs: Vec<LogConfig> = (0..partitions)
            .map(|p| LogConfig {
                id: LogId(p),
                covers: cells_of(p),
                acceptors: acceptors_of(&partition_replicas[p as usize]),
            })
            .collect();
        if scheme.has_oracle() {
            logs.push(LogConfig {
                id: LogId(partitions),
                covers: GroupSet::singleton(GroupId(cells)),
                acceptors: acceptors_of(&oracle_replicas),
            });
        }
        if sets.len() > 1 {
            // Replicas of different sets, round robin, so the global log's load is spread.
            let mut spread = Vec::new();
            for i in 0..replicas {
                for members in &sets {
                    if spread.len() < quorum {
                        spread.push(members[i]);
                    }
                }
            }
            logs.push(LogConfig {
                id: LogId(logs.len() as u32),
                covers: GroupSet::all(groups),
                acceptors: acceptors_of(&spread),
            });
        }
        let clients: Vec<NodeId> = (0..clients as u32)
            .map(|i| NodeId(FIRST_CLIENT + i))
            .collect();
        let mut nodes: Vec<NodeConfig> = Vec::new();
        for (p, members) in partition_replicas.iter().enumerate() {
            for &id in members {
                nodes.push(NodeConfig {
                    id,
                    addr: None,
                    subscriptions: vec![cells_of(p as u32)],
                });
            }
        }
        for &id in &oracle_replicas {
            nodes.push(NodeConfig {
                id,
                addr: None,
                subscriptions: vec![GroupSet::singleton(GroupId(cells))],
            });
        }
        for &id in extra_acceptors.iter().chain(&clients) {
            nodes.push(NodeConfig {
                id,
                addr: None,
                subscriptions: vec![],
            });
        }
        let cluster_id = 0x5CA1_E000_0000
            + (u64::from(partitions) << 8)
            + replicas as u64
            + (u64::from(k - 1) << 24);
        let config = ClusterConfig::new(cluster_id, groups, nodes, logs, tuning)?;
        Ok(ScaleOutLayout {
            scheme,
            partitions: cells,
            workers: k,
            replicas,
            partition_replicas,
            oracle_replicas,
            extra_acceptors,
            clients,
            config,
        })
    }

    /// Gives every node a loopback address from `base_port` on (for the TCP runtime).
    pub fn with_loopback_addresses(mut self, base_port: u16) -> Result<Self, ConfigError> {
        self.config = self.config.with_loopback_addresses(base_port)?;
        Ok(self)
    }

    /// The role of a replica node, if it is one.
    pub fn role(&self, id: NodeId) -> Option<Role> {
        if let Some(p) = self.partition_replicas.iter().position(|m| m.contains(&id)) {
            return Some(Role::Partition(p as PartitionId));
        }
        self.oracle_replicas.contains(&id).then_some(Role::Oracle)
    }

    pub fn is_client(&self, id: NodeId) -> bool {
        self.clients.contains(&id)
    }

    /// The nodes by role, for the simulator.
    pub fn roles(&self) -> Roles {
        let mut replica_sets = self.partition_replicas.clone();
        if !self.oracle_replicas.is_empty() {
            replica_sets.push(self.oracle_replicas.clone());
        }
        let mut acceptors: Vec<NodeId> = self
            .config
            .logs
            .iter()
            .flat_map(|l| l.acceptors.iter().copied())
            .collect();
        acceptors.sort();
        acceptors.dedup();
        Roles {
            config: self.config.clone(),
            replica_sets,
            acceptors,
            clients: self.clients.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dssmr_layout_has_an_oracle_group_and_a_global_log() {
        let l = ScaleOutLayout::new(Scheme::Dssmr, 2, 3, 1, 1, tuning()).unwrap();
        assert_eq!(
            l.partition_replicas,
            vec![
                vec![NodeId(1), NodeId(2), NodeId(3)],
                vec![NodeId(4), NodeId(5), NodeId(6)]
            ]
        );
        assert_eq!(l.oracle_replicas, vec![NodeId(7), NodeId(8), NodeId(9)]);
        assert_eq!(l.config.groups, 3);
        assert_eq!(l.config.logs.len(), 4);
        assert_eq!(
            l.config.logs[3].acceptors,
            vec![NodeId(1), NodeId(4), NodeId(7)]
        );
        assert_eq!(l.role(NodeId(5)), Some(Role::Partition(1)));
        assert_eq!(l.role(NodeId(8)), Some(Role::Oracle));
        assert!(l.extra_acceptors.is_empty());
    }

    #[test]
    fn small_groups_are_topped_up_with_acceptors() {
        let l = ScaleOutLayout::new(Scheme::Ssmr, 3, 2, 1, 2, tuning()).unwrap();
        assert_eq!(l.extra_acceptors, vec![NodeId(7)]);
        assert_eq!(
            l.config.logs[0].acceptors,
            vec![NodeId(1), NodeId(2), NodeId(7)]
        );
        assert_eq!(
            l.config.logs[3].acceptors,
            vec![NodeId(1), NodeId(3), NodeId(5)]
        );
        assert_eq!(l.roles().replica_sets.len(), 3);
        assert!(ScaleOutLayout::new(Scheme::Ssmr, 0, 2, 1, 2, tuning()).is_err());
    }
}
