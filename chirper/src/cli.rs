//! What the Chirper binaries and the benchmark share: the deployment file, building the
//! service from it, and the text command language.
//!
//! A deployment file is a `groups` cluster file plus a `[service]` table. Every process builds
//! the same social graph from it (generated from the seed, or read from an edge list) and the
//! same placement:
//!
//! ```toml
//! [service]
//! scheme = "ds-smr"          # or "s-smr", "dynastar"
//! partitions = 2
//! retry_max = 3              # DS-SMR attempts before the S-SMR fallback
//! timeline_len = 16
//! users = 10000              # generated graph (ignored with edge_list)
//! communities = 100
//! mean_followees = 20.0
//! locality = 0.9
//! popularity_exponent = 1.0
//! graph_seed = 42
//! placement_quality = 1.0    # 1: every user in its community's partition; 0: random
//! edge_list = ""             # a SNAP-style "follower followee" file instead of the generator
//! ```
//!
//! A replica's role comes from its subscription in the cluster part: group `p` below
//! `partitions` is partition `p`; group `partitions` is the oracle.
//!
//! The cluster part may keep the acceptors' logs on disk (top-level keys, before `[service]`;
//! see [`groups::config::Durability`]): `durability = "disk"` (default `"memory"`) with
//! `data_dir = "DIR"` (node N keeps its logs in `DIR/node-N/`, a checkpointing replica its
//! checkpoints in `DIR/node-N.checkpoints/`); the logs are trimmed below durable checkpoints
//! only (`engine::checkpoint::disk`).

use crate::graph::{generate, place_by_community, read_edge_list, GraphSpec, SocialGraph};
use crate::service::{Chirper, ChirperConfig, Command, Reply, UserId};
use bytes::Bytes;
use engine::partitioned::msg::Response;
use engine::partitioned::replica::Role;
use engine::partitioned::Scheme;
use engine::serve::partitioned::{Plan, ScaleOutApp};
pub use engine::serve::ConfigFile;
use engine::serve::{join_file, split_file};
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The `[service]` table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub scheme: String,
    pub partitions: u32,
    /// Workers per partition replica (combined mode; users are sharded over a partition's
    /// workers by id).
    #[serde(default = "default_workers")]
    pub workers: u32,
    #[serde(default = "default_retry_max")]
    pub retry_max: u32,
    #[serde(default = "default_timeline_len")]
    pub timeline_len: usize,
    pub users: u32,
    pub communities: u32,
    pub mean_followees: f64,
    pub locality: f64,
    pub popularity_exponent: f64,
    pub graph_seed: u64,
    pub placement_quality: f64,
    #[serde(default)]
    pub edge_list: String,
}

fn default_workers() -> u32 {
    1
}

fn default_retry_max() -> u32 {
    3
}

fn default_timeline_len() -> usize {
    ChirperConfig::default().timeline_len
}

impl ServiceSection {
    /// A section for a generated graph with the given shape.
    pub fn generated(scheme: Scheme, partitions: u32, spec: &GraphSpec, quality: f64) -> Self {
        ServiceSection {
            scheme: scheme.name().into(),
            partitions,
            workers: default_workers(),
            retry_max: default_retry_max(),
            timeline_len: default_timeline_len(),
            users: spec.users,
            communities: spec.communities,
            mean_followees: spec.mean_followees,
            locality: spec.locality,
            popularity_exponent: spec.popularity_exponent,
            graph_seed: spec.seed,
            placement_quality: quality,
            edge_list: String::new(),
        }
    }

    pub fn scheme(&self) -> Result<Scheme, String> {
        parse_scheme(&self.scheme)
    }

    /// The social graph: read from `edge_list` if set, else generated.
    pub fn graph(&self) -> Result<SocialGraph, String> {
        if !self.edge_list.is_empty() {
            let f = std::fs::File::open(&self.edge_list)
                .map_err(|e| format!("{}: {e}", self.edge_list))?;
            return read_edge_list(std::io::BufReader::new(f))
                .map_err(|e| format!("{}: {e}", self.edge_list));
        }
        generate(&GraphSpec {
            users: self.users,
            communities: self.communities,
            mean_followees: self.mean_followees,
            locality: self.locality,
            popularity_exponent: self.popularity_exponent,
            seed: self.graph_seed,
        })
        .map_err(|e| e.to_string())
    }

    /// The service, with the graph placed by community.
    pub fn service(&self) -> Result<Chirper, String> {
        let graph = Arc::new(self.graph()?);
        let placement = place_by_community(
            &graph,
            self.partitions,
            self.placement_quality,
            self.graph_seed,
        )
        .map_err(|e| e.to_string())?;
        let workers = self.workers.max(1);
        let placement = crate::graph::shard_over_workers(&placement, workers);
        let config = ChirperConfig {
            timeline_len: self.timeline_len,
        };
        if config.timeline_len == 0 {
            return Err("timeline_len must be at least 1".into());
        }
        Chirper::with_graph(config, graph, self.partitions * workers, placement)
    }

    /// The protocol's partitions (partitions x workers).
    pub fn cells(&self) -> u32 {
        self.partitions * self.workers.max(1)
    }
}

pub use engine::serve::partitioned::parse_scheme;

/// A parsed deployment file.
#[derive(Clone, Debug)]
pub struct DeploymentFile {
    pub section: ServiceSection,
    pub scheme: Scheme,
    pub cluster: ClusterConfig,
}

impl ConfigFile for DeploymentFile {
    fn parse(text: &str) -> Result<Self, String> {
        let (section, cluster): (ServiceSection, ClusterConfig) = split_file(text)?;
        let scheme = section.scheme()?;
        if section.partitions == 0 || section.workers == 0 {
            return Err("partitions and workers must be at least 1".into());
        }
        if section.workers > 1 && scheme == Scheme::Dynastar {
            return Err("workers above 1 (combined mode) need s-smr or ds-smr".into());
        }
        let groups = section
            .partitions
            .checked_mul(section.workers)
            .and_then(|c| c.checked_add(u32::from(scheme.has_oracle())))
            .ok_or_else(|| {
                format!(
                    "{} partitions and the oracle are more groups than a cluster can have",
                    section.partitions
                )
            })?;
        if cluster.groups != groups {
            return Err(format!(
                "the cluster has {} groups; {} with {} partitions x {} workers needs {groups}",
                cluster.groups, section.scheme, section.partitions, section.workers
            ));
        }
        Ok(DeploymentFile {
            section,
            scheme,
            cluster,
        })
    }

    /// The role of node `id`: from its one subscription (none: an acceptor or a client).
    fn render(&self) -> Result<String, String> {
        join_file(&self.section, &self.cluster)
    }

    fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    fn cluster_mut(&mut self) -> &mut ClusterConfig {
        &mut self.cluster
    }
}

impl DeploymentFile {
    /// The role of node `id`: a partition or the oracle, or `None` (an acceptor or client).
    pub fn role(&self, id: NodeId) -> Result<Option<Role>, String> {
        engine::serve::partitioned::role(&self.cluster, self.section.cells(), id)
    }
}

/// Chirper's own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ChirperFlags {
    /// Users of the generated social graph.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    #[arg(long, default_value_t = 10)]
    pub communities: u32,
    /// How well the initial placement follows communities (1: perfectly, 0: random).
    #[arg(long, default_value_t = 1.0)]
    pub placement_quality: f64,
}

impl ChirperFlags {
    fn section(&self, plan: &Plan) -> Result<ServiceSection, String> {
        let spec = GraphSpec {
            users: self.users,
            communities: self.communities,
            ..GraphSpec::default()
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(ServiceSection {
            workers: plan.workers,
            ..ServiceSection::generated(plan.scheme, plan.partitions, &spec, self.placement_quality)
        })
    }
}

/// Chirper's binaries (`chirper-server`, `chirper-client`).
impl ScaleOutApp for Chirper {
    const SERVER: &'static str = "chirper-server";
    const CLIENT: &'static str = "chirper-client";
    const ABOUT: &'static str = "Serve Chirper on S-SMR or DS-SMR";
    const BASE_PORT: u16 = 7400;
    const COMMANDS: &'static str =
        "create U | post U TEXT | follow A B | unfollow A B | timeline U";
    type Flags = ChirperFlags;
    type File = DeploymentFile;

    fn from_flags(flags: &ChirperFlags, plan: &Plan) -> Result<Self, String> {
        flags.section(plan)?.service()
    }

    fn file(
        flags: &ChirperFlags,
        plan: &Plan,
        cluster: ClusterConfig,
    ) -> Result<DeploymentFile, String> {
        Ok(DeploymentFile {
            section: flags.section(plan)?,
            scheme: plan.scheme,
            cluster,
        })
    }

    fn plan(file: &DeploymentFile) -> Plan {
        Plan {
            scheme: file.scheme,
            partitions: file.section.partitions,
            workers: file.section.workers,
            retry_max: file.section.retry_max,
        }
    }

    fn from_file(file: &DeploymentFile) -> Result<Self, String> {
        file.section.service()
    }

    fn describe(flags: &ChirperFlags) -> String {
        format!("{} users (ids 0..{})", flags.users, flags.users)
    }

    fn parse(words: &[&str], fresh: u64) -> Result<Command, String> {
        parse_command(words, fresh)
    }

    fn render(reply: &Response<Reply>) -> String {
        render_response(reply)
    }
}

pub fn parse_command(words: &[&str], next_id: u64) -> Result<Command, String> {
    let user = |i: usize| -> Result<UserId, String> {
        words
            .get(i)
            .ok_or_else(|| format!("`{}` needs a user id", words[0]))?
            .parse()
            .map_err(|_| format!("{:?} is not a user id", words[i]))
    };
    match words.first().copied() {
        Some("create") => Ok(Command::CreateUser(user(1)?)),
        Some("post") => {
            let u = user(1)?;
            if words.len() < 3 {
                return Err("`post` needs a text".into());
            }
            Ok(Command::Post {
                user: u,
                id: next_id,
                text: Bytes::from(words[2..].join(" ")),
            })
        }
        Some("follow") => Ok(Command::Follow {
            follower: user(1)?,
            followee: user(2)?,
        }),
        Some("unfollow") => Ok(Command::Unfollow {
            follower: user(1)?,
            followee: user(2)?,
        }),
        Some("timeline") => Ok(Command::GetTimeline(user(1)?)),
        Some(other) => Err(format!(
            "unknown command {other:?}: create, post, follow, unfollow, timeline"
        )),
        None => Err("empty command".into()),
    }
}

/// A response as text.
pub fn render_response(r: &Response<Reply>) -> String {
    match r {
        Response::Done(Reply::Posted { followers }) => format!("posted to {followers} followers"),
        Response::Done(Reply::Followed(true)) => "following".into(),
        Response::Done(Reply::Followed(false)) => "(already following)".into(),
        Response::Done(Reply::Unfollowed(true)) => "unfollowed".into(),
        Response::Done(Reply::Unfollowed(false)) => "(was not following)".into(),
        Response::Done(Reply::Timeline(posts)) if posts.is_empty() => "(empty timeline)".into(),
        Response::Done(Reply::Timeline(posts)) => posts
            .iter()
            .map(|p| format!("@{}: {}", p.author, String::from_utf8_lossy(&p.text)))
            .collect::<Vec<_>>()
            .join("\n"),
        Response::Created => "created".into(),
        Response::AlreadyExists => "(already exists)".into(),
        Response::Deleted => "deleted".into(),
        Response::NotFound => "(no such user)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::partitioned::layout::{self, ScaleOutLayout};

    #[test]
    fn commands_parse_and_bad_input_says_why() {
        assert_eq!(
            parse_command(&["timeline", "5"], 0),
            Ok(Command::GetTimeline(5))
        );
        assert_eq!(
            parse_command(&["post", "1", "hello", "world"], 9),
            Ok(Command::Post {
                user: 1,
                id: 9,
                text: Bytes::from_static(b"hello world")
            })
        );
        assert!(parse_command(&["follow", "1"], 0)
            .unwrap_err()
            .contains("needs a user"));
        assert!(parse_command(&["post", "1"], 0)
            .unwrap_err()
            .contains("needs a text"));
        assert!(parse_command(&["fly"], 0)
            .unwrap_err()
            .contains("unknown command"));
    }

    #[test]
    fn deployment_file_round_trips_and_gives_roles() {
        let l = ScaleOutLayout::new(Scheme::Dssmr, 2, 3, 1, 1, layout::tuning())
            .unwrap()
            .with_loopback_addresses(7400)
            .unwrap();
        let spec = GraphSpec {
            users: 200,
            communities: 4,
            ..GraphSpec::default()
        };
        let f = DeploymentFile {
            section: ServiceSection::generated(Scheme::Dssmr, 2, &spec, 0.9),
            scheme: Scheme::Dssmr,
            cluster: l.config.clone(),
        };
        let back = DeploymentFile::parse(&f.render().unwrap()).unwrap();
        assert_eq!(back.section, f.section);
        assert_eq!(back.cluster, f.cluster);
        assert_eq!(back.role(NodeId(4)), Ok(Some(Role::Partition(1))));
        assert_eq!(back.role(NodeId(7)), Ok(Some(Role::Oracle)));
        assert_eq!(back.role(NodeId(1000)), Ok(None));
        assert!(back.role(NodeId(99)).is_err());
        let s = back.section.service().unwrap();
        assert_eq!(s.preloaded_users(), 200);
        let broken = f
            .render()
            .unwrap()
            .replace("partitions = 2", "partitions = 3");
        assert!(DeploymentFile::parse(&broken)
            .unwrap_err()
            .contains("groups"));
        let broken = f
            .render()
            .unwrap()
            .replace("scheme = \"ds-smr\"", "scheme = \"x\"");
        assert!(DeploymentFile::parse(&broken)
            .unwrap_err()
            .contains("unknown scheme"));
    }
}
