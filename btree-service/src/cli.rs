//! What the binaries share: the deployment file and the text command language.
//!
//! A deployment file is a `groups` cluster file (nodes, logs, tuning) plus a `[service]`
//! table:
//!
//! ```toml
//! [service]
//! mode = "opt-psmr"      # smr, psmr or opt-psmr
//! workers = 4
//! replicas = [1, 2, 3]   # the other nodes are acceptors or clients
//! fanout = 64
//! key_space = 16777216
//! prefill = 1000000
//! value_bytes = 16
//! ```
//!
//! `btree-server --write-config FILE` writes one for a loopback cluster.
//!
//! The cluster part may keep the acceptors' logs on disk (top-level keys, before `[service]`;
//! see [`groups::config::Durability`]):
//!
//! ```toml
//! durability = "disk"    # default "memory"
//! data_dir = "data"      # node N keeps its logs in data/node-N/
//! [tuning]
//! trim = false           # required with "disk": replicas replay the logs from the start
//! ```

use crate::service::{TreeCommand, TreeConfig, TreeReply};
use bytes::Bytes;
use engine::client::Mode;
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `[service]` table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub mode: String,
    pub workers: usize,
    pub replicas: Vec<u32>,
    pub fanout: usize,
    pub key_space: u64,
    pub prefill: u64,
    pub value_bytes: usize,
}

/// A parsed deployment file.
#[derive(Clone, Debug)]
pub struct DeploymentFile {
    pub mode: Mode,
    pub workers: usize,
    pub replicas: Vec<NodeId>,
    pub tree: TreeConfig,
    pub cluster: ClusterConfig,
}

pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "smr" => Ok(Mode::Smr),
        "psmr" => Ok(Mode::Psmr),
        "opt-psmr" => Ok(Mode::OptPsmr),
        other => Err(format!(
            "unknown mode {other:?}: one of smr, psmr, opt-psmr"
        )),
    }
}

impl DeploymentFile {
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let service = table.remove("service").ok_or("missing [service] table")?;
        let service: ServiceSection = service
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        let cluster =
            ClusterConfig::from_toml(&toml::to_string(&table).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let mode = parse_mode(&service.mode)?;
        let tree = TreeConfig {
            fanout: service.fanout,
            key_space: service.key_space,
            prefill: service.prefill,
            value_bytes: service.value_bytes,
        };
        tree.validate()?;
        if mode == Mode::Smr && service.workers != 1 {
            return Err("mode smr runs exactly one worker".into());
        }
        if cluster.groups as usize != service.workers {
            return Err(format!(
                "the cluster has {} groups but the service runs {} workers (one group per worker)",
                cluster.groups, service.workers
            ));
        }
        let replicas: Vec<NodeId> = service.replicas.iter().map(|&r| NodeId(r)).collect();
        for r in &replicas {
            let n = cluster
                .node(*r)
                .ok_or_else(|| format!("replica {r} is not a node of the cluster"))?;
            if n.subscriptions.len() != service.workers {
                return Err(format!(
                    "replica {r} must subscribe to one group per worker ({}), it has {}",
                    service.workers,
                    n.subscriptions.len()
                ));
            }
        }
        Ok(DeploymentFile {
            mode,
            workers: service.workers,
            replicas,
            tree,
            cluster,
        })
    }

    /// The text of a deployment file; an error if a value cannot be written in TOML (integers
    /// above `i64::MAX`).
    pub fn render(&self) -> Result<String, String> {
        let section = ServiceSection {
            mode: self.mode.name().to_string(),
            workers: self.workers,
            replicas: self.replicas.iter().map(|r| r.0).collect(),
            fanout: self.tree.fanout,
            key_space: self.tree.key_space,
            prefill: self.tree.prefill,
            value_bytes: self.tree.value_bytes,
        };
        let mut table = toml::Table::new();
        table.insert(
            "service".into(),
            toml::Value::try_from(section)
                .map_err(|e| format!("the [service] section cannot be written: {e}"))?,
        );
        // Top-level keys first: in TOML, keys after a `[table]` header belong to that table.
        Ok(format!(
            "{}\n{}",
            self.cluster.to_toml(),
            toml::to_string(&table)
                .map_err(|e| format!("the deployment cannot be written: {e}"))?
        ))
    }
}

/// Parses one command line: `get K`, `put K V`, `update K V`, `del K`,
/// `scan LO HI [LIMIT]`, `size`, `rebalance` (with the default policy).
pub fn parse_command(words: &[&str]) -> Result<TreeCommand, String> {
    let key = |i: usize| -> Result<u64, String> {
        words
            .get(i)
            .ok_or_else(|| format!("`{}` needs a key", words[0]))?
            .parse()
            .map_err(|_| format!("{:?} is not a key (an unsigned integer)", words[i]))
    };
    let value = |i: usize| -> Result<Bytes, String> {
        words
            .get(i)
            .map(|v| Bytes::from(v.as_bytes().to_vec()))
            .ok_or_else(|| format!("`{}` needs a value", words[0]))
    };
    match words.first().copied() {
        Some("get") => Ok(TreeCommand::Get(key(1)?)),
        Some("put") | Some("insert") => Ok(TreeCommand::Insert(key(1)?, value(2)?)),
        Some("update") => Ok(TreeCommand::Update(key(1)?, value(2)?)),
        Some("del") | Some("delete") => Ok(TreeCommand::Delete(key(1)?)),
        Some("scan") => Ok(TreeCommand::Scan {
            lo: key(1)?,
            hi: key(2)?,
            limit: match words.get(3) {
                Some(l) => l.parse().map_err(|_| format!("{l:?} is not a limit"))?,
                None => 100,
            },
        }),
        Some("size") => Ok(TreeCommand::Size),
        Some("rebalance") => Ok(TreeCommand::Rebalance(Default::default())),
        Some(other) => Err(format!(
            "unknown command {other:?}: get, put, update, del, scan, size, rebalance"
        )),
        None => Err("empty command".into()),
    }
}

/// A reply as text.
pub fn render_reply(r: &TreeReply) -> String {
    let v = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    match r {
        TreeReply::Value(Some(x)) => v(x),
        TreeReply::Value(None) => "(absent)".into(),
        TreeReply::Inserted(Some(old)) => format!("ok (replaced {})", v(old)),
        TreeReply::Inserted(None) => "ok (new)".into(),
        TreeReply::Updated(true) => "ok".into(),
        TreeReply::Updated(false) => "(absent)".into(),
        TreeReply::Deleted(Some(old)) => format!("deleted {}", v(old)),
        TreeReply::Deleted(None) => "(absent)".into(),
        TreeReply::Entries(es) => es
            .iter()
            .map(|(k, x)| format!("{k} {}", v(x)))
            .collect::<Vec<_>>()
            .join("\n"),
        TreeReply::Size(n) => n.to_string(),
        TreeReply::Rebalanced(r) => format!(
            "rebalanced: {} moves, {} splits, {} stripes (range map version {}; worker loads {:?})",
            r.moves, r.splits, r.stripes, r.version, r.loads
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_input_says_why() {
        assert_eq!(parse_command(&["get", "5"]), Ok(TreeCommand::Get(5)));
        assert_eq!(
            parse_command(&["scan", "1", "9"]),
            Ok(TreeCommand::Scan {
                lo: 1,
                hi: 9,
                limit: 100
            })
        );
        assert!(parse_command(&["get"]).unwrap_err().contains("needs a key"));
        assert!(parse_command(&["get", "x"])
            .unwrap_err()
            .contains("not a key"));
        assert!(parse_command(&["fly"])
            .unwrap_err()
            .contains("unknown command"));
    }

    #[test]
    fn deployment_file_round_trips_and_is_validated() {
        let d = engine::layout::Deployment::new(3, 1, 2, 1, groups::config::Tuning::default())
            .unwrap()
            .with_loopback_addresses(7300)
            .unwrap();
        let f = DeploymentFile {
            mode: Mode::OptPsmr,
            workers: 2,
            replicas: d.replicas.clone(),
            tree: TreeConfig::default(),
            cluster: d.config,
        };
        let back = DeploymentFile::parse(&f.render().unwrap()).unwrap();
        assert_eq!(back.replicas, f.replicas);
        assert_eq!(back.cluster, f.cluster);
        let broken = f.render().unwrap().replace("workers = 2", "workers = 3");
        assert!(DeploymentFile::parse(&broken)
            .unwrap_err()
            .contains("one group per worker"));
        let broken = f
            .render()
            .unwrap()
            .replace("mode = \"opt-psmr\"", "mode = \"fast\"");
        assert!(DeploymentFile::parse(&broken)
            .unwrap_err()
            .contains("unknown mode"));
    }
}
