//! Cluster configuration: nodes, groups, the logs that order them, and tuning.
//!
//! The layout of logs is configuration, not code: each [`LogConfig`] names the groups it
//! *covers* and its acceptors (2f+1 nodes). A message addressed to a set of groups `D` is ordered
//! by the log with the smallest coverage that contains `D` (ties: lowest log id), so a layout of
//! one log per group plus one log covering every group can order any destination set.
//!
//! Every value that counts time is in *ticks*: the runtimes call `tick()` every
//! [`Tuning::tick_us`] microseconds of real or virtual time.
//!
//! `cluster_id` is the cluster's 128-bit identity ([`ClusterId`]): an integer, or a string of
//! hexadecimal digits such as `"0x5f0c8a...` (32 digits) as `--write-config` draws them.
//!
//! The optional top-level key `secret_file = "path"` turns on peer authentication in the TCP
//! runtime (see [`crate::runtime::tcp`]): every node must then read the same secret from its
//! file. The file is read and checked when the TCP runtime starts
//! ([`crate::runtime::tcp::TcpNode::bind`]), not when the configuration is parsed, so a
//! configuration naming a secret file still loads in the in-process runtime and the simulator,
//! which ignore it.
//!
//! The optional `[limits]` table bounds what a TCP node accepts from the network (connections,
//! inbound buffer bytes, handshake and frame deadlines): [`Limits`].
//!
//! The optional top-level keys `durability = "memory" | "disk"` and `data_dir = "path"` choose
//! where the acceptors of the consensus logs keep their state ([`Durability`]; default
//! `"memory"`). `"disk"` needs `data_dir`; its logs are trimmed only below durable
//! checkpoints (see [`ClusterConfig::durability`]).

use crate::groupset::{GroupSet, MAX_GROUP_ID};
use crate::ids::{ClusterId, GroupId, LogId, NodeId};
pub use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the cluster has no nodes")]
    NoNodes,
    #[error("node {0} is listed twice")]
    DuplicateNode(NodeId),
    #[error("the cluster has no groups")]
    NoGroups,
    #[error("{0} groups exceed the maximum of {MAX_GROUP_ID}")]
    TooManyGroups(u32),
    #[error("log {0} is listed twice")]
    DuplicateLog(LogId),
    #[error("log {0} covers no group")]
    EmptyCoverage(LogId),
    #[error("{what} refers to group {group}, but the cluster has groups 0..{groups}")]
    UnknownGroup {
        what: String,
        group: GroupId,
        groups: u32,
    },
    #[error("log {log} has {count} acceptors; a log needs 2f+1 (an odd number, at least 1)")]
    AcceptorCount { log: LogId, count: usize },
    #[error("log {log} names acceptor {node} twice")]
    DuplicateAcceptor { log: LogId, node: NodeId },
    #[error("{what} names node {node}, which is not in the cluster")]
    UnknownNode { what: String, node: NodeId },
    #[error("group {0} is covered by no log, so nothing can be multicast to it")]
    UncoveredGroup(GroupId),
    #[error("node {0} has an empty subscription")]
    EmptySubscription(NodeId),
    #[error("limit {name} in [limits] must be {rule}")]
    Limit { name: &'static str, rule: String },
    #[error("tuning value {name} must be {rule}")]
    Tuning {
        name: &'static str,
        rule: &'static str,
    },
    #[error("durability = {0:?} is not a durability mode: \"memory\" (the default) or \"disk\"")]
    UnknownDurability(String),
    #[error(
        "durability = \"disk\" needs data_dir = \"path\" (node N keeps its logs in <data_dir>/node-N/)"
    )]
    DiskWithoutDataDir,
    #[error(
        "data_dir is set but durability is \"memory\": set durability = \"disk\" to keep the logs \
         on disk, or remove data_dir"
    )]
    DataDirWithoutDisk,
    /// A layout built on top of a configuration (by the engine) is impossible.
    #[error("{0}")]
    Invalid(String),
}

/// One process of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Listening address for the TCP runtime (`host:port`); unused in-process and in the simulator.
    #[serde(default)]
    pub addr: Option<String>,
    /// Each entry is one merged delivery stream of this node (a worker of a P-SMR replica has
    /// its own). A node with no subscription only sends, or only accepts.
    #[serde(default)]
    pub subscriptions: Vec<GroupSet>,
}

/// One consensus log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogConfig {
    pub id: LogId,
    /// The groups whose messages this log may order.
    pub covers: GroupSet,
    /// The 2f+1 nodes that run this log's consensus.
    pub acceptors: Vec<NodeId>,
}

/// Tuning knobs. Defaults suit an in-process cluster with a 1 ms tick.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Real time per tick in the threaded and TCP runtimes, and virtual time per tick in the
    /// simulator.
    pub tick_us: u64,
    /// A leader closes a batch once it holds this many payload bytes.
    pub batch_bytes_max: usize,
    /// A leader closes a partly filled batch after this many ticks. 0: at every drain of
    /// outgoing messages, i.e. a batch holds whatever arrived since the last drain.
    pub batch_delay_ticks: u32,
    /// Undecided entries a leader lets into its log before it holds further batches back
    /// (flow control: keeps heartbeats from queuing behind bulk data).
    pub inflight_entries_max: u64,
    /// Multi-Ring merge: entries (virtual slots) taken from each log per round.
    pub merge_m: u64,
    /// Multi-Ring merge: a leader checks every `skip_delta_ticks` whether its log grew by at
    /// least `skip_lambda_per_delta` slots in the last interval, and proposes one skip entry
    /// for the shortfall. This is lambda (rate) times Delta (interval).
    pub skip_lambda_per_delta: u64,
    /// Multi-Ring merge: Delta, the interval of the skip check.
    pub skip_delta_ticks: u32,
    /// Subscribers blocked on an idle log ask its leader to skip up to the other logs'
    /// frontier, instead of waiting for the next Delta. An improvement over the seed systems'
    /// fixed-rate padding: a log whose real rate exceeds lambda no longer throttles its
    /// subscribers to lambda.
    pub skip_hints: bool,
    /// Consensus: ticks without a leader heartbeat before an election.
    pub election_ticks: u64,
    /// Consensus and senders: ticks before an unacknowledged message is resent.
    pub resend_ticks: u64,
    /// Multicasts a sender keeps in flight (submitted, not yet acknowledged as ordered).
    pub sender_window: usize,
    /// Senders batch: a node sends its multicasts to a log's leader once every this many
    /// ticks (or once a batch reaches the `Submit` size limit), one message holding all of
    /// them, instead of at every drain of its outgoing messages. Costs a client up to this
    /// many ticks of latency and saves the leader one message per multicast: what a client
    /// machine hosting many closed-loop clients wants when the leader is the bottleneck.
    /// 0 (the default): no delay.
    pub submit_delay_ticks: u32,
    /// Multicasts a sender queues beyond its window before `multicast` reports backpressure.
    pub sender_queue_max: usize,
    /// A subscriber with no new entries for this many ticks asks an acceptor for them.
    pub fetch_poll_ticks: u64,
    /// Entries an acceptor returns for one fetch.
    pub fetch_entries_max: usize,
    /// How often subscribers report their position (for trimming and flow control), in ticks.
    pub progress_ticks: u64,
    /// Flow control on subscribers: a leader holds new batches while a live subscriber (one
    /// that reported within `20 * progress_ticks`) lags more than this many ticks behind the
    /// decided end of the log, so a slow replica slows the log instead of queueing without
    /// bound. 0 disables it. A subscriber more than `catch_up_ticks` behind is catching up by
    /// fetching (a restarted node) and does not hold the log.
    pub subscriber_lag_ticks_max: u64,
    pub catch_up_ticks: u64,
    /// Whether leaders trim entries every subscriber has received (with durable logs: every
    /// subscriber holds in a durable checkpoint; see [`crate::server::LogServer::trim_bound`]).
    pub trim: bool,
    /// A leader trims once at least this many entries can go.
    pub trim_every_entries: u64,
    /// Reliable multicast: first resend delay (doubles up to `rm_resend_ticks_max`).
    pub rm_resend_ticks: u64,
    pub rm_resend_ticks_max: u64,
    /// Reliable multicast: receivers forward a message to the other destinations once, so a
    /// message delivered anywhere reaches every correct destination even if its sender crashes.
    pub rm_relay: bool,
    /// Largest payload accepted by `multicast` and `rmcast`.
    pub payload_bytes_max: usize,
    /// Durable logs: a write-ahead file larger than this is rewritten without its trimmed
    /// entries once they are more than half of it (see [`crate::log::disk`], "Compaction"),
    /// so a trimmed log's file stays below about `max(wal_compact_bytes, 2 x live state)`.
    pub wal_compact_bytes: u64,
    /// Durable logs: group commit (see [`crate::log::disk`], "What fsync covers"): a node
    /// writes what its logs' calls queued as one record per log and syncs it once, before any
    /// message leaves or any decision is handed up, and a decided index alone is never synced.
    /// Off: one record and one sync per call, as the store did first (to measure against).
    pub wal_group_commit: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            tick_us: 1000,
            batch_bytes_max: 256 * 1024,
            batch_delay_ticks: 0,
            inflight_entries_max: 256,
            merge_m: 64,
            skip_lambda_per_delta: 5000,
            skip_delta_ticks: 5,
            skip_hints: true,
            election_ticks: 50,
            resend_ticks: 20,
            sender_window: 4096,
            submit_delay_ticks: 0,
            sender_queue_max: 1 << 20,
            fetch_poll_ticks: 20,
            fetch_entries_max: 1024,
            progress_ticks: 5,
            subscriber_lag_ticks_max: 50,
            catch_up_ticks: 2000,
            trim: true,
            trim_every_entries: 1024,
            rm_resend_ticks: 10,
            rm_resend_ticks_max: 1000,
            rm_relay: true,
            payload_bytes_max: 4 << 20,
            wal_compact_bytes: 64 << 20,
            wal_group_commit: true,
        }
    }
}

impl Tuning {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 12] = [
            ("tick_us", self.tick_us),
            ("batch_bytes_max", self.batch_bytes_max as u64),
            ("inflight_entries_max", self.inflight_entries_max),
            ("merge_m", self.merge_m),
            ("skip_delta_ticks", self.skip_delta_ticks as u64),
            ("election_ticks", self.election_ticks),
            ("resend_ticks", self.resend_ticks),
            ("sender_window", self.sender_window as u64),
            ("fetch_poll_ticks", self.fetch_poll_ticks),
            ("fetch_entries_max", self.fetch_entries_max as u64),
            ("progress_ticks", self.progress_ticks),
            ("rm_resend_ticks", self.rm_resend_ticks),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Tuning {
                    name,
                    rule: "greater than 0",
                });
            }
        }
        if self.skip_lambda_per_delta == 0 && !self.skip_hints {
            return Err(ConfigError::Tuning {
                name: "skip_lambda_per_delta",
                rule: "greater than 0 unless skip_hints is on (with neither, an idle log blocks every merge that reads it)",
            });
        }
        if self.subscriber_lag_ticks_max > 0 && self.catch_up_ticks <= self.subscriber_lag_ticks_max
        {
            return Err(ConfigError::Tuning {
                name: "catch_up_ticks",
                rule: "greater than subscriber_lag_ticks_max",
            });
        }
        if self.wal_compact_bytes < 4096 {
            return Err(ConfigError::Tuning {
                name: "wal_compact_bytes",
                rule: "at least 4096",
            });
        }
        if self.rm_resend_ticks_max < self.rm_resend_ticks {
            return Err(ConfigError::Tuning {
                name: "rm_resend_ticks_max",
                rule: "at least rm_resend_ticks",
            });
        }
        if self.payload_bytes_max == 0 || self.payload_bytes_max > crate::frame::FRAME_BYTES_MAX / 2
        {
            return Err(ConfigError::Tuning {
                name: "payload_bytes_max",
                rule: "between 1 and half the frame size cap",
            });
        }
        Ok(())
    }
}

/// Where the acceptors of a node's consensus logs keep their state: the top-level keys
/// `durability` and `data_dir` of the cluster file.
///
/// ```toml
/// durability = "disk"        # "memory" (the default) or "disk"
/// data_dir = "/var/lib/chorus"  # required with "disk"; node N uses <data_dir>/node-N/
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acceptor state in memory only: a node that crashes loses it and rejoins empty, so the
    /// cluster survives only while a majority of each log's acceptors stays up. No disk I/O.
    #[default]
    Memory,
    /// Acceptor state in write-ahead files ([`crate::log::disk::DiskStorage`]), synced before
    /// any promise or accept leaves the node: a whole-cluster restart keeps every
    /// acknowledged entry. Costs one `fsync` per consensus write (batched entries share it);
    /// logs are trimmed only below durable checkpoints (see [`ClusterConfig::durability`]).
    /// `data_dir` is resolved against the working directory of the process when relative;
    /// node N keeps its files in `<data_dir>/node-N/`.
    Disk { data_dir: String },
}

impl Durability {
    /// From the words of a cluster file or a command line: `"memory"` or `"disk"`, and the data
    /// directory (required with `"disk"`, refused with `"memory"`).
    pub fn from_words(word: &str, data_dir: Option<&str>) -> Result<Self, ConfigError> {
        match (word, data_dir) {
            ("memory", None) => Ok(Durability::Memory),
            ("memory", Some(_)) => Err(ConfigError::DataDirWithoutDisk),
            ("disk", Some(d)) if !d.trim().is_empty() => Ok(Durability::Disk {
                data_dir: d.to_string(),
            }),
            ("disk", _) => Err(ConfigError::DiskWithoutDataDir),
            (other, _) => Err(ConfigError::UnknownDurability(other.to_string())),
        }
    }

    /// `"memory"` or `"disk"`.
    pub fn name(&self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Disk { .. } => "disk",
        }
    }

    /// The data directory of `"disk"`.
    pub fn data_dir(&self) -> Option<&str> {
        match self {
            Durability::Memory => None,
            Durability::Disk { data_dir } => Some(data_dir),
        }
    }
}

/// Mutual TLS between the nodes (the `[tls]` table of the cluster file; see
/// [`crate::runtime::tcp`], "TLS"). Paths are PEM files, resolved like `secret_file` (a
/// relative path against the node's working directory); `{node}` in `cert_file` and `key_file`
/// stands for the node's id, so one cluster file serves every member:
///
/// ```toml
/// [tls]
/// ca_file = "d.tls/ca.crt"
/// cert_file = "d.tls/node-{node}.crt"
/// key_file = "d.tls/node-{node}.key"
/// ```
///
/// Every member's certificate must chain to the CA and name the member as a DNS subject
/// alternative name [`crate::credentials::member_name`] (`node-<id>.cluster-<cluster id in
/// hex>.chorus`). `btree-server --write-config --tls` and `chirper-server --write-config --tls`
/// write such a CA and one certificate and key per node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA's certificate(s).
    pub ca_file: String,
    /// This node's certificate chain (`{node}`: its id).
    pub cert_file: String,
    /// This node's private key (`{node}`: its id).
    pub key_file: String,
}

impl TlsFiles {
    /// `cert_file` for node `id`.
    pub fn cert_of(&self, id: NodeId) -> String {
        self.cert_file.replace("{node}", &id.0.to_string())
    }

    /// `key_file` for node `id`.
    pub fn key_of(&self, id: NodeId) -> String {
        self.key_file.replace("{node}", &id.0.to_string())
    }

    fn check(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::File {
                    path: "<text>".into(),
                    reason: format!("[tls] {key} is empty; name a PEM file"),
                });
            }
        }
        Ok(())
    }
}

/// A validated cluster configuration. Build with [`ClusterConfig::new`] or [`ClusterConfig::from_toml`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// The cluster's identity (128 bits; frames carry [`ClusterId::frame_tag`], data
    /// directories the whole id).
    pub cluster_id: ClusterId,
    /// Groups are `0..groups`.
    pub groups: u32,
    pub nodes: Vec<NodeConfig>,
    pub logs: Vec<LogConfig>,
    pub tuning: Tuning,
    /// Where the TCP runtime reads the cluster secret that authenticates peers (top-level key
    /// `secret_file` of the cluster file). `None`: links are not authenticated. A relative path
    /// is resolved against the working directory of the process that starts the node, not
    /// against the directory of the cluster file. The file holds the secret itself (any
    /// bytes, at least 16 once trailing whitespace and newlines are trimmed), e.g. the output
    /// of `head -c 32 /dev/urandom | base64`.
    pub secret_file: Option<String>,
    /// Where the acceptors keep their log state (top-level keys `durability` and `data_dir`;
    /// default [`Durability::Memory`]). Applied by [`crate::node::GroupsNode::from_config`].
    ///
    /// With [`Durability::Disk`] and `trim` on, a log is trimmed only below positions its
    /// subscribers reported as covered by a checkpoint (which the engine's replicas write to
    /// disk before reporting, `engine::checkpoint::disk`); a subscriber that never reports
    /// one holds the whole log, since after a restart it replays it from index 0
    /// ([`crate::server::LogServer::trim_bound`]). So a whole-cluster restart finds every
    /// trimmed prefix inside some replica's durable checkpoint.
    pub durability: Durability,
    /// What a TCP node accepts from the network (the `[limits]` table; default
    /// [`Limits::default`]). Set with [`ClusterConfig::with_limits`], which validates it.
    pub limits: Limits,
    /// Whether the TCP runtime may run without authentication when the configuration names
    /// neither a `secret_file` nor TLS certificates ([`crate::runtime::tcp::TcpNode::bind`]
    /// refuses to otherwise). Set by a binary's `--insecure` flag; never read from or written
    /// to the cluster file, so a file cannot turn authentication off by itself.
    pub insecure: bool,
    /// Mutual TLS between the nodes (the `[tls]` table; `None`: plain TCP). Set with
    /// [`ClusterConfig::with_tls`].
    pub tls: Option<TlsFiles>,
    derived: Arc<Derived>,
}

/// Lookups computed once at validation.
#[derive(Debug, PartialEq, Default)]
struct Derived {
    /// For each group, the log that orders messages addressed to that group alone.
    single_route: Vec<LogId>,
    /// Members of each group: nodes with a subscription that contains it.
    members: Vec<Vec<NodeId>>,
    /// Subscriber nodes of each log: nodes with a subscription that intersects its coverage.
    log_subscribers: BTreeMap<LogId, Vec<NodeId>>,
    log_index: BTreeMap<LogId, usize>,
}

impl ClusterConfig {
    /// Validates and builds a configuration.
    pub fn new(
        cluster_id: impl Into<ClusterId>,
        groups: u32,
        mut nodes: Vec<NodeConfig>,
        mut logs: Vec<LogConfig>,
        tuning: Tuning,
    ) -> Result<Self, ConfigError> {
        if nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        if groups == 0 {
            return Err(ConfigError::NoGroups);
        }
        if groups > MAX_GROUP_ID {
            return Err(ConfigError::TooManyGroups(groups));
        }
        tuning.validate()?;
        nodes.sort_by_key(|n| n.id);
        logs.sort_by_key(|l| l.id);
        let mut node_ids = BTreeSet::new();
        for n in &nodes {
            if !node_ids.insert(n.id) {
                return Err(ConfigError::DuplicateNode(n.id));
            }
            for s in &n.subscriptions {
                if s.is_empty() {
                    return Err(ConfigError::EmptySubscription(n.id));
                }
                check_groups(s, groups, || format!("a subscription of node {}", n.id))?;
            }
        }
        let mut log_ids = BTreeSet::new();
        for l in &logs {
            if !log_ids.insert(l.id) {
                return Err(ConfigError::DuplicateLog(l.id));
            }
            if l.covers.is_empty() {
                return Err(ConfigError::EmptyCoverage(l.id));
            }
            check_groups(&l.covers, groups, || format!("log {}", l.id))?;
            if l.acceptors.len() % 2 == 0 {
                return Err(ConfigError::AcceptorCount {
                    log: l.id,
                    count: l.acceptors.len(),
                });
            }
            let mut seen = BTreeSet::new();
            for &a in &l.acceptors {
                if !seen.insert(a) {
                    return Err(ConfigError::DuplicateAcceptor { log: l.id, node: a });
                }
                if !node_ids.contains(&a) {
                    return Err(ConfigError::UnknownNode {
                        what: format!("log {}", l.id),
                        node: a,
                    });
                }
            }
        }
        let mut cfg = ClusterConfig {
            cluster_id: cluster_id.into(),
            groups,
            nodes,
            logs,
            tuning,
            secret_file: None,
            durability: Durability::Memory,
            limits: Limits::default(),
            insecure: false,
            tls: None,
            derived: Arc::default(),
        };
        let mut d = Derived::default();
        for g in 0..groups {
            let g = GroupId(g);
            match cfg.route_uncached(&GroupSet::singleton(g)) {
                Some(l) => d.single_route.push(l),
                None => return Err(ConfigError::UncoveredGroup(g)),
            }
            d.members.push(
                cfg.nodes
                    .iter()
                    .filter(|n| n.subscriptions.iter().any(|s| s.contains(g)))
                    .map(|n| n.id)
                    .collect(),
            );
        }
        for (i, l) in cfg.logs.iter().enumerate() {
            d.log_index.insert(l.id, i);
            let subs = cfg
                .nodes
                .iter()
                .filter(|n| n.subscriptions.iter().any(|s| s.intersects(&l.covers)))
                .map(|n| n.id)
                .collect();
            d.log_subscribers.insert(l.id, subs);
        }
        cfg.derived = Arc::new(d);
        Ok(cfg)
    }

    /// A common layout: one log per group plus one log covering all groups, every log run by
    /// the same acceptors. Log `g` orders group `g`; log `groups` orders multi-group messages.
    pub fn per_group_plus_global(
        cluster_id: impl Into<ClusterId>,
        groups: u32,
        nodes: Vec<NodeConfig>,
        acceptors: Vec<NodeId>,
        tuning: Tuning,
    ) -> Result<Self, ConfigError> {
        let mut logs: Vec<LogConfig> = (0..groups)
            .map(|g| LogConfig {
                id: LogId(g),
                covers: GroupSet::singleton(GroupId(g)),
                acceptors: acceptors.clone(),
            })
            .collect();
        if groups > 1 {
            logs.push(LogConfig {
                id: LogId(groups),
                covers: GroupSet::all(groups),
                acceptors,
            });
        }
        ClusterConfig::new(cluster_id, groups, nodes, logs, tuning)
    }

    /// This configuration with another cluster id (a deployment file written for real use draws
    /// a random one; see [`ClusterId`]).
    pub fn with_cluster_id(mut self, id: ClusterId) -> Self {
        self.cluster_id = id;
        self
    }

    /// This configuration with peer authentication read from `path` (see
    /// [`ClusterConfig::secret_file`]).
    pub fn with_secret_file(mut self, path: impl Into<String>) -> Self {
        self.secret_file = Some(path.into());
        self
    }

    /// This configuration with every node at a loopback address, from `base_port` on in node
    /// order (a TCP deployment on one machine); validated again.
    pub fn with_loopback_addresses(self, base_port: u16) -> Result<Self, ConfigError> {
        let mut nodes = self.nodes.clone();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.addr = Some(format!("127.0.0.1:{}", base_port as usize + i));
        }
        let checked = ClusterConfig::new(
            self.cluster_id,
            self.groups,
            nodes,
            self.logs.clone(),
            self.tuning.clone(),
        )?;
        Ok(ClusterConfig {
            nodes: checked.nodes,
            derived: checked.derived,
            ..self
        })
    }

    /// This configuration, allowed (`true`) or not to run unauthenticated TCP links when it
    /// names no secret and no TLS (see [`ClusterConfig::insecure`]).
    pub fn with_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// This configuration with mutual TLS between its nodes (see [`TlsFiles`]).
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// This configuration with these limits on inbound connections (see [`Limits`]), validated
    /// against it.
    pub fn with_limits(mut self, limits: Limits) -> Result<Self, ConfigError> {
        limits.validate(self.nodes.len())?;
        self.limits = limits;
        Ok(self)
    }

    /// This configuration with its acceptors' state kept as `durability` says (see
    /// [`ClusterConfig::durability`]).
    pub fn with_durability(mut self, durability: Durability) -> Result<Self, ConfigError> {
        self.durability = durability;
        Ok(self)
    }

    /// Reads and validates a TOML cluster file (format: see `examples/multicast-cluster.toml`
    /// at the repository root).
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::File { reason, .. } => ConfigError::File {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: toml_form::File = toml::from_str(text).map_err(|e| ConfigError::File {
            path: "<text>".into(),
            reason: e.to_string(),
        })?;
        file.into_config()
    }

    /// The TOML text of this configuration (round-trips through [`ClusterConfig::from_toml`]).
    pub fn to_toml(&self) -> String {
        toml::to_string(&toml_form::File::from_config(self)).expect("config serializes")
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn log(&self, id: LogId) -> Option<&LogConfig> {
        self.derived.log_index.get(&id).map(|&i| &self.logs[i])
    }

    /// The log that orders messages addressed to `dests`: the one with the smallest coverage
    /// that contains `dests`, ties to the lowest id. `None` if no log covers `dests`.
    pub fn route(&self, dests: &GroupSet) -> Option<LogId> {
        if dests.len() == 1 {
            let g = dests.first()?;
            return self.derived.single_route.get(g.0 as usize).copied();
        }
        self.route_uncached(dests)
    }

    fn route_uncached(&self, dests: &GroupSet) -> Option<LogId> {
        self.logs
            .iter()
            .filter(|l| dests.is_subset(&l.covers))
            .min_by_key(|l| (l.covers.len(), l.id))
            .map(|l| l.id)
    }

    /// Nodes with a subscription containing `g`.
    pub fn members(&self, g: GroupId) -> &[NodeId] {
        self.derived
            .members
            .get(g.0 as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Nodes with a subscription that intersects the coverage of `log`.
    pub fn log_subscribers(&self, log: LogId) -> &[NodeId] {
        self.derived
            .log_subscribers
            .get(&log)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The logs a subscription to `groups` must merge, in log-id order.
    pub fn logs_for(&self, groups: &GroupSet) -> Vec<LogId> {
        self.logs
            .iter()
            .filter(|l| l.covers.intersects(groups))
            .map(|l| l.id)
            .collect()
    }

    /// Every group as a set.
    pub fn all_groups(&self) -> GroupSet {
        GroupSet::all(self.groups)
    }
}

fn check_groups(set: &GroupSet, groups: u32, what: impl Fn() -> String) -> Result<(), ConfigError> {
    match set.last() {
        Some(g) if g.0 >= groups => Err(ConfigError::UnknownGroup {
            what: what(),
            group: g,
            groups,
        }),
        _ => Ok(()),
    }
}

/// The human-written TOML form: plain integers, `"all"` for every group.
mod toml_form {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct File {
        cluster_id: Id,
        groups: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_file: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        durability: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_dir: Option<String>,
        #[serde(rename = "node")]
        nodes: Vec<Node>,
        #[serde(rename = "log")]
        logs: Vec<Log>,
        #[serde(default)]
        tuning: Tuning,
        #[serde(default, skip_serializing_if = "Limits::is_default")]
        limits: Limits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<TlsFiles>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Node {
        id: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
        #[serde(default)]
        subscribe: Vec<Groups>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Log {
        id: u32,
        covers: Groups,
        acceptors: Vec<u32>,
    }

    /// A cluster id as written: an integer (TOML's are below 2^63) or a string of hex digits.
    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Id {
        Int(u64),
        Text(String),
    }

    impl Id {
        fn resolve(self) -> Result<ClusterId, ConfigError> {
            match self {
                Id::Int(n) => Ok(ClusterId::from(n)),
                Id::Text(t) => ClusterId::parse(&t).map_err(|reason| ConfigError::File {
                    path: "<text>".into(),
                    reason,
                }),
            }
        }
        fn of(id: ClusterId) -> Id {
            match u64::try_from(id.0) {
                Ok(n) if n <= i64::MAX as u64 => Id::Int(n),
                _ => Id::Text(id.to_string()),
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Groups {
        List(Vec<u32>),
        Word(String),
    }

    impl Groups {
        fn resolve(self, groups: u32) -> Result<GroupSet, ConfigError> {
            match self {
                Groups::List(v) => Ok(v.into_iter().map(GroupId).collect()),
                // Checked here too: `all` of a huge count would be built before the
                // configuration's own check runs (found by fuzzing).
                Groups::Word(w) if w == "all" && groups > MAX_GROUP_ID => {
                    Err(ConfigError::TooManyGroups(groups))
                }
                Groups::Word(w) if w == "all" => Ok(GroupSet::all(groups)),
                Groups::Word(w) => Err(ConfigError::File {
                    path: "<text>".into(),
                    reason: format!("a group set is a list of ids or \"all\", not {w:?}"),
                }),
            }
        }
        fn of(set: &GroupSet, groups: u32) -> Groups {
            if set.len() == groups as usize && groups > 1 {
                Groups::Word("all".into())
            } else {
                Groups::List(set.iter().map(|g| g.0).collect())
            }
        }
    }

    impl File {
        pub(super) fn into_config(self) -> Result<ClusterConfig, ConfigError> {
            let groups = self.groups;
            let nodes = self
                .nodes
                .into_iter()
                .map(|n| {
                    Ok(NodeConfig {
                        id: NodeId(n.id),
                        addr: n.addr,
                        subscriptions: n
                            .subscribe
                            .into_iter()
                            .map(|g| g.resolve(groups))
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            let logs = self
                .logs
                .into_iter()
                .map(|l| {
                    Ok(LogConfig {
                        id: LogId(l.id),
                        covers: l.covers.resolve(groups)?,
                        acceptors: l.acceptors.into_iter().map(NodeId).collect(),
                    })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            if self
                .secret_file
                .as_deref()
                .is_some_and(|p| p.trim().is_empty())
            {
                return Err(ConfigError::File {
                    path: "<text>".into(),
                    reason: "secret_file is empty; name the file that holds the cluster secret, \
                             or leave the key out to run without authentication"
                        .into(),
                });
            }
            let durability = Durability::from_words(
                self.durability.as_deref().unwrap_or("memory"),
                self.data_dir.as_deref(),
            )?;
            let mut cfg =
                ClusterConfig::new(self.cluster_id.resolve()?, groups, nodes, logs, self.tuning)?;
            cfg.secret_file = self.secret_file;
            if let Some(t) = &self.tls {
                t.check()?;
            }
            cfg.tls = self.tls;
            cfg.with_durability(durability)?.with_limits(self.limits)
        }

        pub(super) fn from_config(c: &ClusterConfig) -> File {
            File {
                cluster_id: Id::of(c.cluster_id),
                groups: c.groups,
                secret_file: c.secret_file.clone(),
                durability: match c.durability {
                    Durability::Memory => None,
                    Durability::Disk { .. } => Some(c.durability.name().to_string()),
                },
                data_dir: c.durability.data_dir().map(str::to_string),
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| Node {
                        id: n.id.0,
                        addr: n.addr.clone(),
                        subscribe: n
                            .subscriptions
                            .iter()
                            .map(|s| Groups::of(s, c.groups))
                            .collect(),
                    })
                    .collect(),
                logs: c
                    .logs
                    .iter()
                    .map(|l| Log {
                        id: l.id.0,
                        covers: Groups::of(&l.covers, c.groups),
                        acceptors: l.acceptors.iter().map(|a| a.0).collect(),
                    })
                    .collect(),
                tuning: c.tuning.clone(),
                limits: c.limits.clone(),
                tls: c.tls.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, subs: &[&[u32]]) -> NodeConfig {
        NodeConfig {
            id: NodeId(id),
            addr: None,
            subscriptions: subs
                .iter()
                .map(|s| s.iter().map(|&g| GroupId(g)).collect())
                .collect(),
        }
    }

    fn three_groups() -> ClusterConfig {
        ClusterConfig::per_group_plus_global(
            9,
            3,
            vec![node(1, &[&[0]]), node(2, &[&[1, 2]]), node(3, &[])],
            vec![NodeId(1), NodeId(2), NodeId(3)],
            Tuning::default(),
        )
        .unwrap()
    }

    #[test]
    fn routes_to_the_smallest_covering_log() {
        let c = three_groups();
        let set = |v: &[u32]| v.iter().map(|&g| GroupId(g)).collect::<GroupSet>();
        assert_eq!(c.route(&set(&[1])), Some(LogId(1)));
        assert_eq!(c.route(&set(&[0, 2])), Some(LogId(3)));
        assert_eq!(
            c.logs_for(&set(&[1, 2])),
            vec![LogId(1), LogId(2), LogId(3)]
        );
        assert_eq!(c.members(GroupId(2)), &[NodeId(2)]);
        assert_eq!(c.log_subscribers(LogId(0)), &[NodeId(1)]);
        assert_eq!(c.log_subscribers(LogId(3)), &[NodeId(1), NodeId(2)]);
    }

    #[test]
    fn the_example_cluster_file_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/multicast-cluster.toml"
        );
        let c = ClusterConfig::from_toml_file(Path::new(path)).unwrap();
        assert_eq!(c.logs.len(), 4);
        assert_eq!(c.log(LogId(3)).unwrap().covers, GroupSet::all(3));
        assert_eq!(
            c.node(NodeId(2)).unwrap().addr.as_deref(),
            Some("127.0.0.1:7102")
        );
    }

    #[test]
    fn toml_round_trip() {
        let c = three_groups();
        let text = c.to_toml();
        assert!(text.contains("covers = \"all\""), "{text}");
        assert_eq!(ClusterConfig::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn a_128_bit_cluster_id_round_trips_as_hex_text() {
        let id = ClusterId(0x5f0c_8a11_0000_0000_dead_beef_0000_0001);
        let c = three_groups().with_cluster_id(id);
        let text = c.to_toml();
        assert!(
            text.contains("cluster_id = \"0x5f0c8a1100000000deadbeef00000001\""),
            "{text}"
        );
        assert_eq!(ClusterConfig::from_toml(&text).unwrap(), c);
        // Small ids stay integers (files written before ids were 128 bits read the same).
        assert!(three_groups().to_toml().contains("cluster_id = 9\n"));
        let bad = text.replace("0x5f0c8a11", "0xnot-hex");
        let err = ClusterConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("hexadecimal"), "{err}");
    }

    #[test]
    fn limits_round_trip_default_and_are_validated() {
        let c = three_groups();
        assert!(!c.to_toml().contains("[limits]"));
        let c = c
            .with_limits(Limits {
                frame_deadline_ms: 750,
                inbound_connections_max: 40,
                inbound_connections_per_ip_max: 20,
                ..Limits::default()
            })
            .unwrap();
        let text = c.to_toml();
        assert!(text.contains("[limits]") && text.contains("frame_deadline_ms = 750"));
        let back = ClusterConfig::from_toml(&text).unwrap();
        assert_eq!(back.limits.frame_deadline_ms, 750);
        assert_eq!(back.limits.handshake_deadline_ms, 5000, "default kept");
        assert_eq!(back, c);
        let bad = text.replace("frame_deadline_ms = 750", "frame_deadline_ms = 0");
        assert!(matches!(
            ClusterConfig::from_toml(&bad),
            Err(ConfigError::Limit {
                name: "frame_deadline_ms",
                ..
            })
        ));
        let unknown = text.replace("frame_deadline_ms", "frame_deadline_s");
        assert!(ClusterConfig::from_toml(&unknown).is_err());
    }

    #[test]
    fn secret_file_round_trips_and_defaults_to_none() {
        let c = three_groups();
        assert_eq!(c.secret_file, None);
        assert!(!c.to_toml().contains("secret_file"));
        let c = c.with_secret_file("conf/cluster.secret");
        let text = c.to_toml();
        assert!(
            text.contains("secret_file = \"conf/cluster.secret\""),
            "{text}"
        );
        let back = ClusterConfig::from_toml(&text).unwrap();
        assert_eq!(back.secret_file.as_deref(), Some("conf/cluster.secret"));
        assert_eq!(back, c);
        let hand = "secret_file = \"/etc/chorus/secret\"\ncluster_id = 1\ngroups = 1\n[[node]]\nid = 1\n[[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n";
        assert_eq!(
            ClusterConfig::from_toml(hand)
                .unwrap()
                .secret_file
                .as_deref(),
            Some("/etc/chorus/secret")
        );
    }

    fn no_trim_groups() -> ClusterConfig {
        ClusterConfig::per_group_plus_global(
            9,
            3,
            vec![node(1, &[&[0]]), node(2, &[&[1, 2]]), node(3, &[])],
            vec![NodeId(1), NodeId(2), NodeId(3)],
            Tuning {
                trim: false,
                ..Tuning::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn durability_round_trips_and_defaults_to_memory() {
        let c = no_trim_groups();
        assert_eq!(c.durability, Durability::Memory);
        let text = c.to_toml();
        assert!(
            !text.contains("durability") && !text.contains("data_dir"),
            "{text}"
        );
        let disk = Durability::Disk {
            data_dir: "var/chorus".into(),
        };
        let c = c.with_durability(disk.clone()).unwrap();
        let text = c.to_toml();
        assert!(text.contains("durability = \"disk\""), "{text}");
        assert!(text.contains("data_dir = \"var/chorus\""), "{text}");
        assert!(text.contains("trim = false"), "{text}");
        let back = ClusterConfig::from_toml(&text).unwrap();
        assert_eq!(back.durability, disk);
        assert_eq!(back, c);
        // Written by hand, and "memory" spelled out.
        let hand = "durability = \"disk\"\ndata_dir = \"/srv/chorus\"\ncluster_id = 1\ngroups = 1\n[[node]]\nid = 1\n[[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n[tuning]\ntrim = false\n";
        assert_eq!(
            ClusterConfig::from_toml(hand)
                .unwrap()
                .durability
                .data_dir(),
            Some("/srv/chorus")
        );
        let memory = "durability = \"memory\"\ncluster_id = 1\ngroups = 1\n[[node]]\nid = 1\n[[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n";
        assert_eq!(
            ClusterConfig::from_toml(memory).unwrap().durability,
            Durability::Memory
        );
    }

    #[test]
    fn bad_durability_settings_are_refused_with_reasons() {
        let file = |top: &str, trim: bool| {
            format!("{top}cluster_id = 1\ngroups = 1\n[[node]]\nid = 1\n[[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n[tuning]\ntrim = {trim}\n")
        };
        assert_eq!(
            ClusterConfig::from_toml(&file("durability = \"disk\"\n", false)),
            Err(ConfigError::DiskWithoutDataDir)
        );
        assert_eq!(
            ClusterConfig::from_toml(&file("durability = \"disk\"\ndata_dir = \" \"\n", false)),
            Err(ConfigError::DiskWithoutDataDir)
        );
        // Trimming on (also the default tuning) with "disk": accepted (logs are trimmed below
        // durable checkpoints only, see `LogServer::trim_bound`).
        let on = ClusterConfig::from_toml(&file("durability = \"disk\"\ndata_dir = \"d\"\n", true))
            .unwrap();
        assert!(on.tuning.trim && on.durability.data_dir() == Some("d"));
        assert!(three_groups()
            .with_durability(Durability::Disk {
                data_dir: "d".into()
            })
            .is_ok());
        let err = ClusterConfig::from_toml(&file("durability = \"flash\"\n", false)).unwrap_err();
        assert_eq!(err, ConfigError::UnknownDurability("flash".into()));
        assert!(err.to_string().contains("\"memory\""), "{err}");
        assert_eq!(
            ClusterConfig::from_toml(&file("data_dir = \"d\"\n", false)),
            Err(ConfigError::DataDirWithoutDisk)
        );
        assert!(ClusterConfig::from_toml(&file("durability = 3\n", false)).is_err());
    }

    #[test]
    fn rejects_bad_layouts_with_reasons() {
        let t = Tuning::default;
        let log = |id: u32, covers: &[u32], acc: &[u32]| LogConfig {
            id: LogId(id),
            covers: covers.iter().map(|&g| GroupId(g)).collect(),
            acceptors: acc.iter().map(|&a| NodeId(a)).collect(),
        };
        let nodes = || vec![node(1, &[&[0]]), node(2, &[]), node(3, &[])];
        assert_eq!(
            ClusterConfig::new(1, 2, nodes(), vec![log(0, &[0], &[1, 2, 3])], t()),
            Err(ConfigError::UncoveredGroup(GroupId(1)))
        );
        assert_eq!(
            ClusterConfig::new(1, 1, nodes(), vec![log(0, &[0], &[1, 2])], t()),
            Err(ConfigError::AcceptorCount {
                log: LogId(0),
                count: 2
            })
        );
        assert!(matches!(
            ClusterConfig::new(1, 1, nodes(), vec![log(0, &[0], &[1, 2, 9])], t()),
            Err(ConfigError::UnknownNode { .. })
        ));
        assert!(matches!(
            ClusterConfig::new(1, 1, nodes(), vec![log(0, &[0, 5], &[1])], t()),
            Err(ConfigError::UnknownGroup { .. })
        ));
        let no_padding = Tuning {
            skip_lambda_per_delta: 0,
            skip_hints: false,
            ..Tuning::default()
        };
        assert!(matches!(
            ClusterConfig::new(1, 1, nodes(), vec![log(0, &[0], &[1])], no_padding),
            Err(ConfigError::Tuning {
                name: "skip_lambda_per_delta",
                ..
            })
        ));
        let bad = Tuning {
            merge_m: 0,
            ..Tuning::default()
        };
        assert!(matches!(
            ClusterConfig::new(1, 1, nodes(), vec![log(0, &[0], &[1])], bad),
            Err(ConfigError::Tuning {
                name: "merge_m",
                ..
            })
        ));
        let err = ClusterConfig::from_toml("cluster_id = 1\ngroups = 1\nsecret_file = \"\"\n[[node]]\nid = 1\n[[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n").unwrap_err();
        assert!(err.to_string().contains("secret_file is empty"), "{err}");
        let err = ClusterConfig::from_toml("cluster_id = 1\ngroups = 1\n[[node]]\nid = 1\nsubscribe = [\"some\"]\n[[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n").unwrap_err();
        assert!(err.to_string().contains("\"some\""), "{err}");
    }
}
