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

use crate::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use engine::psmr::proxy::Mode;
use engine::serve::psmr::{Plan, ScaleUpApp};
pub use engine::serve::ConfigFile;
use engine::serve::{join_file, split_file};
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use serde::{Deserialize, Serialize};

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

pub use engine::serve::psmr::parse_mode;

impl ConfigFile for DeploymentFile {
    fn parse(text: &str) -> Result<Self, String> {
        let (service, cluster): (ServiceSection, ClusterConfig) = split_file(text)?;
        let plan = Plan::from_words(&service.mode, service.workers, &service.replicas)?;
        let tree = TreeConfig {
            fanout: service.fanout,
            key_space: service.key_space,
            prefill: service.prefill,
            value_bytes: service.value_bytes,
        };
        tree.validate()?;
        plan.check(&cluster)?;
        Ok(DeploymentFile {
            mode: plan.mode,
            workers: plan.workers,
            replicas: plan.replicas,
            tree,
            cluster,
        })
    }

    fn render(&self) -> Result<String, String> {
        let section = ServiceSection {
            mode: self.mode.name().to_string(),
            workers: self.workers,
            replicas: self.replicas.iter().map(|r| r.0).collect(),
            fanout: self.tree.fanout,
            key_space: self.tree.key_space,
            prefill: self.tree.prefill,
            value_bytes: self.tree.value_bytes,
        };
        join_file(&section, &self.cluster)
    }

    fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    fn cluster_mut(&mut self) -> &mut ClusterConfig {
        &mut self.cluster
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

/// The tree's own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeFlags {
    /// Keys pre-filled into the tree (in-process or --write-config).
    #[arg(long, default_value_t = 100_000)]
    pub prefill: u64,
}

impl TreeFlags {
    fn tree(&self) -> TreeConfig {
        TreeConfig {
            prefill: self.prefill,
            ..TreeConfig::default()
        }
    }
}

/// The replicated B+-tree's binaries (`btree-server`, `btree-client`).
impl ScaleUpApp for TreeService {
    const SERVER: &'static str = "btree-server";
    const CLIENT: &'static str = "btree-client";
    const ABOUT: &'static str = "Serve the replicated B+-tree";
    const BASE_PORT: u16 = 7300;
    const COMMANDS: &'static str =
        "get K | put K V | update K V | del K | scan LO HI [LIMIT] | size";
    type Flags = TreeFlags;
    type File = DeploymentFile;

    fn from_flags(flags: &TreeFlags) -> Result<Self, String> {
        TreeService::try_new(flags.tree())
    }

    fn file(
        flags: &TreeFlags,
        plan: &Plan,
        cluster: ClusterConfig,
    ) -> Result<DeploymentFile, String> {
        Ok(DeploymentFile {
            mode: plan.mode,
            workers: plan.workers,
            replicas: plan.replicas.clone(),
            tree: flags.tree(),
            cluster,
        })
    }

    fn plan(file: &DeploymentFile) -> Plan {
        Plan {
            mode: file.mode,
            workers: file.workers,
            replicas: file.replicas.clone(),
        }
    }

    fn from_file(file: &DeploymentFile) -> Result<Self, String> {
        TreeService::try_new(file.tree.clone())
    }

    fn describe(flags: &TreeFlags) -> String {
        format!("{} keys pre-filled", flags.prefill)
    }

    fn parse(words: &[&str], _fresh: u64) -> Result<TreeCommand, String> {
        parse_command(words)
    }

    fn render(reply: &TreeReply) -> String {
        render_reply(reply)
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
        let d = engine::psmr::deployment::Deployment::new(
            3,
            1,
            2,
            1,
            groups::config::Tuning::default(),
        )
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
