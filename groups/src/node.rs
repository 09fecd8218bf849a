//! [`GroupsNode`]: everything one process runs, as one sans-IO state machine.
//!
//! A node may at once be an acceptor of some logs, a subscriber (one merged delivery stream per
//! subscription), an atomic-multicast sender and a reliable-multicast endpoint. The runtime's
//! duties, in order:
//! 1. pass every message from a peer to [`GroupsNode::handle`];
//! 2. call [`GroupsNode::tick`] every `tuning.tick_us`;
//! 3. after a burst of input, drain [`GroupsNode::take_outgoing`] and send each message to its
//!    node (the node has already handled the ones it addressed to itself);
//! 4. drain [`GroupsNode::take_delivered`], [`GroupsNode::take_rdelivered`] and
//!    [`GroupsNode::take_events`] and give them to the application.
//!
//! There are no threads, sockets, clocks or random numbers in here; time is the tick count.

use crate::config::{ClusterConfig, Durability, LogConfig};
use crate::feed::{Feed, FeedEvent};
use crate::groupset::GroupSet;
use crate::ids::{LogId, MsgId, NodeId};
use crate::log::disk::{self, DiskError, DiskOptions, DiskStorage, WalSync};
use crate::log::identity;
use crate::log::omni::{OmniPaxosLog, OmniTiming};
use crate::log::recovery::{
    Completion, LogName, Policy, RecoveringLog, RecoverySettings, RecoveryState, Voter,
};
use crate::log::solo::SoloLog;
use crate::log::storage::{self, MemStorage, Shared};
use crate::log::OrderedLog;
use crate::merge::{Delivery, Merger, SkipNeed};
use crate::message::{LogEntry, NetMsg};
use crate::readindex::{ReadIndex, ReadIndexError, ReadIndexes};
use crate::rmcast::{RDelivery, Rmcast};
use crate::sender::{MulticastError, Sender};
use crate::server::LogServer;
use bytes::Bytes;
use omnipaxos::storage::Storage;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// An epoch for a process that starts now: distinct from the epochs of this node's earlier
/// incarnations (it mixes the wall-clock time in milliseconds with the process id), as
/// [`NodeOptions::epoch`] requires. Runtimes of real processes use it; the simulator numbers
/// incarnations instead.
pub fn fresh_epoch() -> u32 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (ms as u32) ^ std::process::id().rotate_left(16)
}

/// A number larger at every start of a process (the wall clock in microseconds): the
/// incarnation that a real process's acceptors stamp on their consensus messages
/// ([`NodeOptions::incarnation`]). A clock that goes back across a restart is caught and
/// corrected by the recovery protocol ([`crate::log::recovery`]).
pub fn fresh_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Incarnation of this node; a restarted node must use an epoch it has not used before.
    pub epoch: u32,
    /// Merge each subscription inside the node (the default). When false, the node hands out
    /// the contiguous decided entries of every log it subscribes to through
    /// [`GroupsNode::take_entries`], and the caller runs its own [`Merger`]s (a P-SMR replica
    /// gives each worker thread its own, so no single thread merges for everyone).
    pub merge_locally: bool,
    /// The acceptors' incarnation: larger than at any earlier start of this node (the simulator
    /// counts restarts; real processes use [`fresh_incarnation`]). Peers drop consensus
    /// messages of a node's earlier incarnations once they have seen a later one.
    pub incarnation: u64,
    /// A durable node whose data directory is missing while its peers hold state recovers its
    /// state from them (`--recover`) instead of stopping with an error. See
    /// [`GroupsNode::durable`].
    pub recover: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            epoch: 0,
            merge_locally: true,
            incarnation: 0,
            recover: false,
        }
    }
}

impl NodeOptions {
    /// Options for a node hosted by a process that starts now: a [`fresh_epoch`] and a
    /// [`fresh_incarnation`], merging locally.
    pub fn fresh() -> Self {
        NodeOptions {
            epoch: fresh_epoch(),
            merge_locally: true,
            incarnation: fresh_incarnation(),
            recover: false,
        }
    }
}

/// Decided entries of one log, contiguous with the previous ones handed out.
#[derive(Clone, Debug)]
pub struct LogEntries {
    pub log: LogId,
    pub start: u64,
    pub entries: Vec<LogEntry>,
}

/// The default consensus log for acceptor `me` of `lc`, voting at once over `storage` (its
/// state is trusted): omnipaxos, or a [`SoloLog`] when the log has a single acceptor.
pub fn default_log(
    cfg: &ClusterConfig,
    lc: &LogConfig,
    me: NodeId,
    incarnation: u64,
    storage: Shared<MemStorage>,
) -> Box<dyn OrderedLog> {
    log_over(cfg, lc, me, incarnation, storage)
}

/// Like [`default_log`], over any omnipaxos storage (a single-acceptor log ignores it).
pub(crate) fn log_over<B: Storage<LogEntry> + Send + 'static>(
    cfg: &ClusterConfig,
    lc: &LogConfig,
    me: NodeId,
    incarnation: u64,
    storage: B,
) -> Box<dyn OrderedLog> {
    if lc.acceptors.len() == 1 {
        return Box::new(SoloLog::new(me));
    }
    Box::new(RecoveringLog::voting(
        log_name(cfg, lc, me),
        lc.acceptors.clone(),
        incarnation,
        recovery_settings(cfg),
        omni_voter(cfg, lc, me, storage),
    ))
}

/// A leader's message that carries entries it appended or a decided index, to a follower.
fn is_leader_replication(m: &NetMsg) -> bool {
    use omnipaxos::messages::sequence_paxos::PaxosMsg;
    let NetMsg::Log { msg, .. } = m else {
        return false;
    };
    let crate::message::LogMsg::OmniPaxos { msg, .. } = &**msg else {
        return false;
    };
    matches!(
        msg,
        omnipaxos::messages::Message::SequencePaxos(p)
            if matches!(p.msg, PaxosMsg::AcceptDecide(_) | PaxosMsg::Decide(_))
    )
}

/// Moves from `queued` into `early` the leader replication messages to other nodes that no
/// message to the same node which must wait for the sync precedes (per peer, messages keep
/// their order); returns the rest, in order.
fn split_replication(
    queued: Vec<(NodeId, NetMsg)>,
    me: NodeId,
    early: &mut Vec<(NodeId, NetMsg)>,
) -> Vec<(NodeId, NetMsg)> {
    let mut held = std::collections::BTreeSet::new();
    let mut rest = Vec::with_capacity(queued.len());
    for (to, m) in queued {
        if to != me && !held.contains(&to) && is_leader_replication(&m) {
            early.push((to, m));
        } else {
            held.insert(to);
            rest.push((to, m));
        }
    }
    rest
}

/// The consensus log of acceptor `me` of `lc` when its state was lost (or never existed): it
/// recovers first ([`crate::log::recovery`]) and then votes over the storage `completion`
/// builds. A single-acceptor log has nothing to recover from and starts empty.
pub(crate) fn recovering_log(
    cfg: &ClusterConfig,
    lc: &LogConfig,
    me: NodeId,
    incarnation: u64,
    policy: Policy,
    completion: Completion,
) -> Box<dyn OrderedLog> {
    if lc.acceptors.len() == 1 {
        return Box::new(SoloLog::new(me));
    }
    Box::new(RecoveringLog::recovering(
        log_name(cfg, lc, me),
        lc.acceptors.clone(),
        incarnation,
        recovery_settings(cfg),
        policy,
        completion,
    ))
}

/// A recovering log of a node in memory: its recovered state goes into a [`MemStorage`].
fn recovering_in_memory(
    cfg: &Arc<ClusterConfig>,
    lc: &LogConfig,
    me: NodeId,
    incarnation: u64,
) -> Box<dyn OrderedLog> {
    let (c, l) = (cfg.clone(), lc.clone());
    let build =
        Box::new(move |image| omni_voter(&c, &l, me, Shared::new(MemStorage::from_image(image))));
    recovering_log(
        cfg,
        lc,
        me,
        incarnation,
        Policy::InMemory,
        Completion::Build(build),
    )
}

/// The omnipaxos acceptor `me` of `lc` over `storage`.
pub(crate) fn omni_voter<B: Storage<LogEntry> + Send + 'static>(
    cfg: &ClusterConfig,
    lc: &LogConfig,
    me: NodeId,
    storage: B,
) -> Box<dyn Voter> {
    let preferred = lc.acceptors[lc.id.0 as usize % lc.acceptors.len()];
    let timing = OmniTiming {
        election_ticks: cfg.tuning.election_ticks,
        resend_ticks: cfg.tuning.resend_ticks,
    };
    Box::new(OmniPaxosLog::new(
        lc.acceptors.clone(),
        me,
        preferred,
        timing,
        storage,
    ))
}

fn log_name(cfg: &ClusterConfig, lc: &LogConfig, me: NodeId) -> LogName {
    LogName {
        cluster: cfg.cluster_id,
        log: lc.id,
        me,
    }
}

fn recovery_settings(cfg: &ClusterConfig) -> RecoverySettings {
    RecoverySettings {
        resend_ticks: cfg.tuning.resend_ticks,
        chunk_entries: cfg.tuning.fetch_entries_max,
    }
}

/// A durable node's directory that does not exist yet: it is written once every log has
/// recovered (or bootstrapped), before any of them votes. See [`GroupsNode::durable`].
struct PendingDir {
    data_dir: std::path::PathBuf,
    identity: identity::Identity,
    disk_opts: DiskOptions,
}

/// What [`check_node_dir`] found.
enum NodeDir {
    /// This node's directory; its identity was rewritten with the incarnation counted up.
    Known,
    /// No directory yet (any leftover of a creation cut short was removed).
    Fresh(identity::Identity),
}

/// Checks node `me`'s data directory under `data_dir` against its identity (cluster, node, the
/// `logs` it keeps durably) before anything in it is touched. See [`GroupsNode::durable`].
fn check_node_dir(
    cfg: &ClusterConfig,
    me: NodeId,
    data_dir: &Path,
    logs: &[&LogConfig],
) -> Result<NodeDir, DiskError> {
    let dir = disk::node_dir(data_dir, me);
    let expected = identity::Identity::new(cfg.cluster_id, me, logs.iter().map(|l| l.id).collect());
    match identity::check_dir(&dir, &expected)? {
        identity::Verdict::Fresh => {
            let creating = creating_dir(data_dir, me);
            if creating.exists() {
                // A creation cut short: nothing in it ever voted.
                std::fs::remove_dir_all(&creating).map_err(|source| DiskError::Io {
                    path: creating.clone(),
                    source,
                })?;
            }
            Ok(NodeDir::Fresh(expected))
        }
        identity::Verdict::Known(found) => {
            let id = identity::Identity {
                incarnation: found.incarnation + 1,
                ..found
            };
            identity::write(&dir, &id)?;
            Ok(NodeDir::Known)
        }
    }
}

/// Where a fresh node directory is assembled before it is renamed into place.
fn creating_dir(data_dir: &Path, me: NodeId) -> std::path::PathBuf {
    data_dir.join(format!("node-{}.creating", me.0))
}

/// Counters of one node since it started (for metrics, benchmarks and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Multicasts accepted from the application.
    pub multicasts: u64,
    /// Multicasts resent after a timeout (each may be ordered twice; the merge drops copies).
    pub resends: u64,
    /// Multicasts redirected to a new leader on a `NotLeader` answer.
    pub redirects: u64,
    /// Times this node became leader of one of its logs.
    pub became_leader: u64,
    pub batches_proposed: u64,
    pub skips_proposed: u64,
    /// Flushes that left batches waiting for the in-flight bound.
    pub held_back: u64,
    /// Fetches sent by this node's feeds (catch-up after loss, or polls of idle logs).
    pub fetches: u64,
    /// Messages delivered, over all subscriptions.
    pub delivered: u64,
    /// Peer messages refused as malformed or misrouted.
    pub rejected: u64,
}

pub struct GroupsNode {
    cfg: Arc<ClusterConfig>,
    me: NodeId,
    now: u64,
    servers: BTreeMap<LogId, LogServer>,
    feeds: BTreeMap<LogId, Feed>,
    mergers: Vec<Merger>,
    merge_locally: bool,
    sender: Sender,
    rm: Rmcast,
    reads: ReadIndexes,
    out: Vec<(NodeId, NetMsg)>,
    delivered: Vec<(usize, Delivery)>,
    exported: Vec<LogEntries>,
    app_in: Vec<(NodeId, Bytes)>,
    events: Vec<FeedEvent>,
    hinted: BTreeMap<LogId, (SkipNeed, u64)>,
    /// Peer messages refused as malformed or misrouted.
    rejected: u64,
    delivered_total: u64,
    /// A durable node's directory to write once every log has recovered.
    pending_dir: Option<PendingDir>,
    /// Why the node must stop (its logs' recovery, or its directory), once it must.
    stopped: Option<String>,
    /// The durable logs' files, synced before any message leaves and any decision is handed
    /// up (group commit, see [`crate::log::disk`]).
    wals: Vec<WalSync>,
    /// A log file could not be synced: nothing leaves the node any more.
    halted: bool,
}

impl GroupsNode {
    /// Builds node `me`; `make_log` supplies the consensus log of every log `me` accepts for.
    pub fn new(
        cfg: Arc<ClusterConfig>,
        me: NodeId,
        opts: NodeOptions,
        mut make_log: impl FnMut(&LogConfig) -> Box<dyn OrderedLog>,
    ) -> Self {
        let nc = cfg.node(me).expect("node is in the configuration").clone();
        let servers = cfg
            .logs
            .iter()
            .filter(|l| l.acceptors.contains(&me))
            .map(|l| (l.id, LogServer::new(cfg.clone(), l.id, make_log(l))))
            .collect();
        let mut feeds = BTreeMap::new();
        let mut mergers = Vec::new();
        for sub in &nc.subscriptions {
            let logs = cfg.logs_for(sub);
            for &l in &logs {
                feeds
                    .entry(l)
                    .or_insert_with(|| Feed::new(cfg.clone(), l, me));
            }
            if opts.merge_locally {
                mergers.push(Merger::new(&logs, sub.clone(), cfg.tuning.merge_m));
            }
        }
        GroupsNode {
            sender: Sender::new(cfg.clone(), me, opts.epoch),
            rm: Rmcast::new(cfg.clone(), me, opts.epoch),
            reads: ReadIndexes::new(cfg.clone(), opts.epoch),
            cfg,
            me,
            now: 0,
            servers,
            feeds,
            mergers,
            merge_locally: opts.merge_locally,
            out: Vec::new(),
            delivered: Vec::new(),
            exported: Vec::new(),
            app_in: Vec::new(),
            events: Vec::new(),
            hinted: BTreeMap::new(),
            rejected: 0,
            delivered_total: 0,
            pending_dir: None,
            stopped: None,
            wals: Vec::new(),
            halted: false,
        }
    }

    /// A node whose logs keep their state in memory (lost on a real crash). Every log starts
    /// without state, so it recovers its acceptor state from its peers before it votes, or
    /// starts empty together with them when nobody has any ([`crate::log::recovery`]).
    pub fn in_memory(cfg: Arc<ClusterConfig>, me: NodeId, opts: NodeOptions) -> Self {
        let c = cfg.clone();
        let inc = opts.incarnation;
        Self::new(cfg, me, opts, |lc| recovering_in_memory(&c, lc, me, inc))
    }

    /// The node the configuration asks for ([`ClusterConfig::durability`]):
    /// [`GroupsNode::in_memory`] for [`Durability::Memory`], [`GroupsNode::durable`] on the
    /// configured `data_dir` (relative: against the working directory) for
    /// [`Durability::Disk`].
    pub fn from_config(
        cfg: Arc<ClusterConfig>,
        me: NodeId,
        opts: NodeOptions,
    ) -> Result<Self, DiskError> {
        match &cfg.durability {
            Durability::Memory => Ok(Self::in_memory(cfg, me, opts)),
            Durability::Disk { data_dir } => {
                let dir = Path::new(data_dir).to_path_buf();
                let disk_opts = DiskOptions {
                    compact_bytes: cfg.tuning.wal_compact_bytes,
                    group_commit: cfg.tuning.wal_group_commit,
                };
                Self::durable_with(cfg, me, opts, &dir, disk_opts)
            }
        }
    }

    /// A node whose omnipaxos logs keep their acceptor state in write-ahead files under
    /// `data_dir` (one [`DiskStorage`] per log, at [`disk::log_path`]), synced before every
    /// promise or accept leaves the node. A node restarted on the same directory recovers each
    /// log's promise, accepted round, entries and decided index, and rejoins through
    /// omnipaxos's fail-recovery path; its subscriptions replay the decided entries it still
    /// holds. Logs with a single acceptor (f = 0, [`SoloLog`]) stay in memory.
    ///
    /// Before it opens anything, it checks the directory's identity file
    /// ([`crate::log::identity`]): a directory of another cluster, node or set of logs, one
    /// with files but no identity, or an identity it cannot read is refused
    /// ([`DiskError::Identity`]) and left exactly as it was (`opts.recover` does not change
    /// that). A known directory gets its incarnation counted up and its logs vote at once.
    ///
    /// A missing (or empty) directory means a brand-new node, or one that lost its data. Its
    /// logs start without state and ask their peers ([`crate::log::recovery`]): when nobody
    /// holds state (the cluster's first start) they start empty; when a peer does, the node
    /// stops ([`GroupsNode::stopped`]: "it lost its data; restart with --recover") unless
    /// `opts.recover` is set, in which case they recover their state from their peers. Only
    /// then, before any log votes, the directory is written: assembled as
    /// `<data_dir>/node-<id>.creating/` (log files, then the identity), synced, and renamed
    /// into place, so a crash leaves either no directory or a complete one.
    ///
    /// Fails if a log file cannot be created or read, or is corrupt (a torn last write is
    /// not an error: it is cut off; see [`crate::log::disk`]).
    pub fn durable(
        cfg: Arc<ClusterConfig>,
        me: NodeId,
        opts: NodeOptions,
        data_dir: &Path,
    ) -> Result<Self, DiskError> {
        Self::durable_with(cfg, me, opts, data_dir, DiskOptions::default())
    }

    /// [`GroupsNode::durable`] with explicit store options.
    pub fn durable_with(
        cfg: Arc<ClusterConfig>,
        me: NodeId,
        opts: NodeOptions,
        data_dir: &Path,
        disk_opts: DiskOptions,
    ) -> Result<Self, DiskError> {
        let durable_logs: Vec<&LogConfig> = cfg
            .logs
            .iter()
            .filter(|l| l.acceptors.len() > 1 && l.acceptors.contains(&me))
            .collect();
        let inc = opts.incarnation;
        let c = cfg.clone();
        match check_node_dir(&cfg, me, data_dir, &durable_logs)? {
            NodeDir::Fresh(id) if durable_logs.is_empty() => {
                let dir = disk::node_dir(data_dir, me);
                disk::create_dir_durable(&dir)?;
                identity::write(&dir, &id)?;
                Ok(Self::in_memory(cfg, me, opts))
            }
            NodeDir::Fresh(identity) => {
                let policy = Policy::Durable {
                    recover: opts.recover,
                };
                let mut node = Self::new(cfg, me, opts, |lc| {
                    if lc.acceptors.len() > 1 {
                        recovering_log(&c, lc, me, inc, policy, Completion::Hold)
                    } else {
                        Box::new(SoloLog::new(me))
                    }
                });
                node.pending_dir = Some(PendingDir {
                    data_dir: data_dir.to_path_buf(),
                    identity,
                    disk_opts,
                });
                Ok(node)
            }
            NodeDir::Known => {
                let mut stores = BTreeMap::new();
                for lc in durable_logs {
                    let path = disk::log_path(data_dir, me, lc.id);
                    stores.insert(lc.id, DiskStorage::open_with(path, disk_opts)?);
                }
                let wals = stores.values().map(DiskStorage::sync_handle).collect();
                let mut node = Self::new(cfg, me, opts, |lc| match stores.remove(&lc.id) {
                    Some(store) => log_over(&c, lc, me, inc, store),
                    None => Box::new(SoloLog::new(me)),
                });
                node.wals = wals;
                Ok(node)
            }
        }
    }

    /// Why the node must stop, if it must: a log found that this node lost its data (see
    /// [`GroupsNode::durable`]), or its data directory could not be written. Runtimes stop the
    /// node and report it.
    pub fn stopped(&self) -> Option<String> {
        if let Some(why) = &self.stopped {
            return Some(why.clone());
        }
        self.servers
            .values()
            .find_map(|s| match s.log().recovery() {
                RecoveryState::Stopped(why) => Some(why),
                _ => None,
            })
    }

    /// The logs whose acceptor here does not vote yet (still recovering its state).
    pub fn recovering(&self) -> Vec<LogId> {
        self.servers
            .iter()
            .filter(|(_, s)| s.log().recovery() != RecoveryState::Voting)
            .map(|(l, _)| *l)
            .collect()
    }

    /// A durable node without a directory: once every log has its state, writes the directory
    /// and lets the logs vote over it (see [`GroupsNode::durable`]).
    fn settle_pending_dir(&mut self) {
        if self.pending_dir.is_none() || self.stopped.is_some() {
            return;
        }
        let all_ready = self.servers.values().all(|s| {
            matches!(
                s.log().recovery(),
                RecoveryState::Recovered | RecoveryState::Voting
            )
        });
        if !all_ready {
            return;
        }
        let pending = self.pending_dir.take().expect("checked");
        if let Err(e) = self.write_node_dir(&pending) {
            let why = format!(
                "node {}: cannot create its data directory under {}: {e}",
                self.me,
                pending.data_dir.display()
            );
            tracing::error!("{why}");
            for s in self.servers.values_mut() {
                s.log_mut().stop(why.clone());
            }
            self.stopped = Some(why);
        }
    }

    fn write_node_dir(&mut self, pending: &PendingDir) -> Result<(), DiskError> {
        let me = self.me;
        let creating = creating_dir(&pending.data_dir, me);
        let dir = disk::node_dir(&pending.data_dir, me);
        disk::create_dir_durable(&creating)?;
        let mut images = Vec::new();
        for (log, s) in self.servers.iter_mut() {
            if let Some(image) = s.log_mut().take_recovered() {
                let file = creating.join(format!("log-{}.wal", log.0));
                let mut store = DiskStorage::open_with(&file, pending.disk_opts)?;
                store
                    .write_atomically(storage::image_ops(image))
                    .map_err(|e| DiskError::Io {
                        path: file.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                store.sync()?;
                images.push(*log);
            }
        }
        identity::write(&creating, &pending.identity)?;
        // An empty directory (or one holding only a temporary identity) was checked to be
        // fresh at start; make room for the rename, after checking again.
        if dir.exists() {
            if identity::check_dir(&dir, &pending.identity)? != identity::Verdict::Fresh {
                return Err(DiskError::Io {
                    path: dir,
                    source: std::io::Error::other("the directory appeared while the node started"),
                });
            }
            std::fs::remove_dir_all(&dir).map_err(|source| DiskError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        std::fs::rename(&creating, &dir).map_err(|source| DiskError::Io {
            path: dir.clone(),
            source,
        })?;
        disk::sync_dir(&pending.data_dir)?;
        tracing::info!(node = %me, dir = %dir.display(), logs = images.len(), "data directory created");
        let cfg = self.cfg.clone();
        for log in images {
            let store = DiskStorage::open_with(
                disk::log_path(&pending.data_dir, me, log),
                pending.disk_opts,
            )?;
            let lc = cfg.log(log).expect("a log of the configuration");
            self.wals.push(store.sync_handle());
            let voter = omni_voter(&cfg, lc, me, store);
            self.servers
                .get_mut(&log)
                .expect("listed")
                .log_mut()
                .activate(voter);
        }
        Ok(())
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.cfg
    }

    /// Ticks elapsed since the node started.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Atomically multicasts `payload` to every subscriber of any group in `dests`.
    pub fn multicast(&mut self, dests: GroupSet, payload: Bytes) -> Result<MsgId, MulticastError> {
        self.sender.multicast(dests, payload, self.now)
    }

    /// Reliably multicasts `payload` to every member of the groups in `dests` (no ordering).
    pub fn rmcast(&mut self, dests: GroupSet, payload: Bytes) -> Result<MsgId, MulticastError> {
        self.rm.send(dests, payload, self.now, &mut self.out)
    }

    /// Sends an application message to `to` (point to point, unordered, best effort).
    pub fn send_app(&mut self, to: NodeId, payload: Bytes) {
        self.out.push((to, NetMsg::App { payload }));
    }

    /// Application messages received since the last call, with their senders.
    pub fn take_app(&mut self, out: &mut Vec<(NodeId, Bytes)>) {
        out.append(&mut self.app_in);
    }

    /// Multicasts submitted by this node and not yet acknowledged as ordered.
    pub fn multicasts_in_flight(&self) -> usize {
        self.sender.in_flight()
    }

    /// Reliable multicasts this node is still resending (its own and relayed ones).
    pub fn rmcasts_in_flight(&self) -> usize {
        self.rm.holding()
    }

    /// The leader of `log` as seen by this node, if it is one of the log's acceptors.
    pub fn leader_of(&self, log: LogId) -> Option<NodeId> {
        self.servers.get(&log).and_then(|s| s.log().leader())
    }

    /// Whether this node leads `log`.
    pub fn leads(&self, log: LogId) -> bool {
        self.servers.get(&log).is_some_and(|s| s.log().is_leader())
    }

    /// Decided index of `log` at this acceptor.
    pub fn decided_idx(&self, log: LogId) -> Option<u64> {
        self.servers.get(&log).map(|s| s.log().decided_idx())
    }

    /// `(first held, decided, accepted)` indexes of this acceptor's copy of `log`.
    pub fn log_status(&self, log: LogId) -> Option<(u64, u64, u64)> {
        self.servers.get(&log).map(|s| {
            let l = s.log();
            (l.first_idx(), l.decided_idx(), l.accepted_idx())
        })
    }

    /// Up to `max` entries of this acceptor's copy of `log` from `from`, decided or not
    /// (debugging and tests).
    pub fn log_entries(&self, log: LogId, from: u64, max: usize) -> Vec<LogEntry> {
        self.servers
            .get(&log)
            .map(|s| s.log().read_accepted(from, max))
            .unwrap_or_default()
    }

    /// First index still held by this acceptor's copy of `log`.
    pub fn first_idx(&self, log: LogId) -> Option<u64> {
        self.servers.get(&log).map(|s| s.log().first_idx())
    }

    /// The next entry index this node's subscriptions need from `log`.
    pub fn feed_next(&self, log: LogId) -> Option<u64> {
        self.feeds.get(&log).map(Feed::next)
    }

    /// Tells the acceptors of every log in `positions` that this node holds a checkpoint of
    /// its state covering the entries below the given index (reported from now on with the
    /// feeds' progress; see [`crate::server`] for how that lets logs be trimmed). Positions
    /// only grow; logs this node does not subscribe to are ignored.
    pub fn set_checkpointed(&mut self, positions: &[(LogId, u64)]) {
        for &(log, next) in positions {
            if let Some(f) = self.feeds.get_mut(&log) {
                f.set_checkpointed(next, &mut self.out);
            }
        }
    }

    /// The position this node last reported as checkpointed for `log`.
    pub fn checkpointed(&self, log: LogId) -> Option<u64> {
        self.feeds.get(&log).and_then(Feed::checkpointed)
    }

    /// Restarts the feeds of the logs in `positions` at the given indexes: a state transfer
    /// installed a checkpoint that covers the entries below them. Entries of those logs
    /// handed out before and not yet taken ([`GroupsNode::take_entries`]) are dropped, and
    /// the feeds fetch from the new positions at once (whether that is ahead of or behind
    /// where they were). Only for nodes that run their own mergers (`merge_locally` off): a
    /// node's own mergers cannot be moved. Logs this node does not subscribe to are ignored.
    pub fn restart_feeds(&mut self, positions: &[(LogId, u64)]) {
        debug_assert!(
            !self.merge_locally,
            "restart_feeds needs merge_locally = false"
        );
        let now = self.now;
        for &(log, next) in positions {
            if let Some(f) = self.feeds.get_mut(&log) {
                f.restart_at(next, now, &mut self.out);
                self.exported.retain(|e| e.log != log);
            }
        }
        // What the local acceptor already decided is not pushed again: offer it now.
        let logs: Vec<LogId> = positions.iter().map(|p| p.0).collect();
        for log in logs {
            let Some(s) = self.servers.get(&log) else {
                continue;
            };
            let Some(next) = self.feeds.get(&log).map(Feed::next) else {
                continue;
            };
            let l = s.log();
            if next >= l.first_idx() && next < l.decided_idx() {
                let n = (l.decided_idx() - next) as usize;
                if let crate::log::Read::Entries(es) = l.read_decided(next, n) {
                    if !es.is_empty() {
                        self.offer(log, next, &es);
                    }
                }
            }
        }
    }

    /// A one-line-per-item description of the node's state, for debugging failed runs.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = format!(
            "{} t={} in-flight={} rm-holding={}\n",
            self.me,
            self.now,
            self.sender.in_flight(),
            self.rm.holding()
        );
        for (log, srv) in &self.servers {
            let l = srv.log();
            let _ = writeln!(
                s,
                "  acceptor {log}: leader={:?} leads={} first={} decided={} accepted={} {}\n    {}",
                l.leader(),
                l.is_leader(),
                l.first_idx(),
                l.decided_idx(),
                l.accepted_idx(),
                srv.describe(),
                l.status()
            );
        }
        for (log, f) in &self.feeds {
            let _ = writeln!(s, "  feed {log}: next={}", f.next());
        }
        for (i, m) in self.mergers.iter().enumerate() {
            let _ = writeln!(
                s,
                "  merger {i} {:?}: blocked={:?}",
                m.groups(),
                m.blocked_on()
            );
        }
        s
    }

    /// Peer messages refused as malformed or misrouted so far.
    pub fn rejected(&self) -> u64 {
        self.rejected + self.servers.values().map(|s| s.rejected).sum::<u64>()
    }

    /// Counters since the node started.
    pub fn stats(&self) -> NodeStats {
        let sum = |f: fn(&LogServer) -> u64| self.servers.values().map(f).sum::<u64>();
        NodeStats {
            multicasts: self.sender.multicasts,
            resends: self.sender.resends,
            redirects: self.sender.redirects,
            became_leader: sum(|s| s.became_leader),
            batches_proposed: sum(|s| s.batches_proposed),
            skips_proposed: sum(|s| s.skips_proposed),
            held_back: sum(|s| s.held_back),
            fetches: self.feeds.values().map(|f| f.fetches).sum(),
            delivered: self.delivered_total,
            rejected: self.rejected(),
        }
    }

    pub fn handle(&mut self, from: NodeId, msg: NetMsg) {
        match msg {
            NetMsg::Log { log, msg } => match self.servers.get_mut(&log) {
                Some(s) => {
                    s.on_log_msg(from, *msg);
                    self.after_log_activity(log);
                }
                None => self.refuse(
                    from,
                    "consensus message for a log this node does not accept for",
                ),
            },
            NetMsg::Submit { log, msgs } => match self.servers.get_mut(&log) {
                Some(s) => s.on_submit(from, msgs, self.now, &mut self.out),
                None => self.refuse(from, "submit for a log this node does not accept for"),
            },
            NetMsg::NotLeader { log, leader } => {
                self.sender.on_not_leader(from, log, leader, self.now)
            }
            NetMsg::Ack { log, ids } => self.sender.on_ack(log, &ids, self.now),
            NetMsg::Entries {
                log,
                start,
                entries,
            } => {
                if entries.iter().all(LogEntry::is_valid) {
                    self.offer(log, start, &entries);
                } else {
                    self.refuse(from, "entries with an empty batch or skip");
                }
            }
            NetMsg::Fetch { log, from: idx } => match self.servers.get_mut(&log) {
                Some(s) => s.on_fetch(from, idx, &mut self.out),
                None => self.refuse(from, "fetch for a log this node does not accept for"),
            },
            NetMsg::Trimmed { log, first } => {
                if let Some(e) = self.feeds.get_mut(&log).and_then(|f| f.on_trimmed(first)) {
                    tracing::warn!(
                        ?e,
                        "log trimmed past this subscriber; state transfer needed"
                    );
                    self.events.push(e);
                }
            }
            NetMsg::Progress { log, next } => {
                if let Some(s) = self.servers.get_mut(&log) {
                    s.on_progress(from, next, self.now);
                }
            }
            NetMsg::SkipHint { log, index, slots } => {
                if let Some(s) = self.servers.get_mut(&log) {
                    s.on_skip_hint(index, slots);
                }
            }
            NetMsg::RData { id, dests, payload } => {
                self.rm
                    .on_data(from, id, dests, payload, self.now, &mut self.out)
            }
            NetMsg::RAck { id } => self.rm.on_ack(from, id),
            NetMsg::App { payload } => self.app_in.push((from, payload)),
            NetMsg::Checkpointed { log, next } => {
                if let Some(s) = self.servers.get_mut(&log) {
                    s.on_checkpointed(from, next, self.now);
                }
            }
            NetMsg::IndexQuery { log, read } => match self.servers.get(&log) {
                // An acceptor still recovering its state stays silent (see `readindex`).
                Some(s) if s.log().recovery() == RecoveryState::Voting => {
                    let accepted = s.log().accepted_idx();
                    self.out.push((
                        from,
                        NetMsg::IndexReply {
                            log,
                            read,
                            accepted,
                        },
                    ));
                }
                Some(_) => {}
                None => self.refuse(from, "index query for a log this node does not accept for"),
            },
            NetMsg::IndexReply {
                log,
                read,
                accepted,
            } => {
                if !self.reads.on_reply(from, log, read, accepted) {
                    self.refuse(
                        from,
                        "index reply from a node that is not an acceptor of the log",
                    );
                }
            }
        }
    }

    /// Asks for a read index of `logs` (see [`crate::readindex`]): once a majority of each
    /// log's acceptors has answered, [`GroupsNode::take_read_indexes`] hands out, per log, a
    /// position past every entry decided before this call. Returns the request's number.
    pub fn read_index(&mut self, logs: &[LogId]) -> Result<u64, ReadIndexError> {
        self.reads.ask(logs, self.now, &mut self.out)
    }

    /// Read indexes completed since the last call.
    pub fn take_read_indexes(&mut self, out: &mut Vec<ReadIndex>) {
        self.reads.take_done(out);
    }

    /// Read-index requests not answered by a majority yet.
    pub fn read_indexes_pending(&self) -> usize {
        self.reads.pending()
    }

    /// Positions of completed read indexes this node's feeds have not reached yet (the node
    /// asks the logs' leaders for padding until they are reached).
    pub fn read_targets_open(&self) -> Vec<(LogId, u64)> {
        self.reads
            .open_targets(|l| self.feeds.get(&l).map(Feed::next))
    }

    fn refuse(&mut self, from: NodeId, what: &str) {
        self.rejected += 1;
        tracing::warn!(node = %self.me, %from, "refused {what}");
    }

    /// After consensus activity on `log`: push and acknowledge what was decided, and feed the
    /// node's own subscriptions.
    fn after_log_activity(&mut self, log: LogId) {
        self.settle_pending_dir();
        let Some(s) = self.servers.get_mut(&log) else {
            return;
        };
        s.poll_decided(&mut self.out);
        if let Some((start, entries)) = s.take_decided() {
            if self.feeds.contains_key(&log) {
                self.offer(log, start, &entries);
            }
        }
    }

    fn offer(&mut self, log: LogId, start: u64, entries: &[LogEntry]) {
        let Some(feed) = self.feeds.get_mut(&log) else {
            return;
        };
        let Some((at, fresh)) = feed.offer(start, entries, self.now, &mut self.out) else {
            return;
        };
        if !self.merge_locally {
            self.exported.push(LogEntries {
                log,
                start: at,
                entries: fresh.to_vec(),
            });
            return;
        }
        for (i, m) in self.mergers.iter_mut().enumerate() {
            if m.next_index(log).is_none() {
                continue;
            }
            m.push(log, at, fresh)
                .expect("feeds hand out contiguous entries");
            let mut batch = Vec::new();
            m.poll(&mut batch);
            self.delivered_total += batch.len() as u64;
            self.delivered.extend(batch.into_iter().map(|d| (i, d)));
        }
    }

    pub fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        let logs: Vec<LogId> = self.servers.keys().copied().collect();
        for log in logs {
            self.servers.get_mut(&log).expect("listed").tick(now);
            self.after_log_activity(log);
        }
        for f in self.feeds.values_mut() {
            f.tick(now, &mut self.out);
        }
        self.sender.tick(now);
        self.rm.tick(now, &mut self.out);
        let resend = self.cfg.tuning.resend_ticks;
        self.reads.tick(now, resend, &mut self.out);
        if now.is_multiple_of(resend.max(1)) {
            // A read position beyond a log's end (see `readindex`): ask for padding up to it.
            let feeds = &self.feeds;
            for (log, next) in self.reads.prune_targets(|l| feeds.get(&l).map(Feed::next)) {
                self.request_skip(SkipNeed {
                    log,
                    index: next,
                    slots: 1,
                });
            }
        }
        if self.cfg.tuning.skip_hints {
            let needs: Vec<SkipNeed> = self.mergers.iter().filter_map(Merger::blocked_on).collect();
            for need in needs {
                self.request_skip(need);
            }
        }
    }

    /// Asks the acceptors of `need.log` to pad it (used by callers that run their own mergers).
    /// A request is sent only if it asks for more than the last one for the same log (a later
    /// index, or more slots), or `resend_ticks` after it: several mergers (the workers of a
    /// replica) blocked on one log, with different needs, must not alternate into a flood.
    pub fn request_skip(&mut self, need: SkipNeed) {
        let now = self.now;
        if let Some((last, at)) = self.hinted.get(&need.log) {
            let covered =
                need.index < last.index || (need.index == last.index && need.slots <= last.slots);
            if covered && now < at + self.cfg.tuning.resend_ticks {
                return;
            }
        }
        self.hinted.insert(need.log, (need, now));
        if let Some(lc) = self.cfg.log(need.log) {
            for &a in &lc.acceptors {
                self.out.push((
                    a,
                    NetMsg::SkipHint {
                        log: need.log,
                        index: need.index,
                        slots: need.slots,
                    },
                ));
            }
        }
    }

    /// Tells the node that its connection to `peer` was re-established.
    pub fn reconnected(&mut self, peer: NodeId) {
        for s in self.servers.values_mut() {
            s.reconnected(peer);
        }
    }

    /// Moves outgoing messages into `out`. Messages the node addressed to itself are handled
    /// here, before returning.
    pub fn take_outgoing(&mut self, out: &mut Vec<(NodeId, NetMsg)>) {
        const SELF_ROUNDS_MAX: usize = 64;
        for _ in 0..SELF_ROUNDS_MAX {
            self.flush();
            if !self.sync_logs() {
                self.out.clear();
                return;
            }
            let mut mine = Vec::new();
            for (to, m) in self.out.drain(..) {
                if to == self.me {
                    mine.push(m);
                } else {
                    out.push((to, m));
                }
            }
            if mine.is_empty() {
                return;
            }
            for m in mine {
                self.handle(self.me, m);
            }
        }
    }

    /// Group commit, pipelined: while a durable log has writes to sync, moves into `out` the
    /// leader's replication messages (`AcceptDecide`, `Decide`) to other nodes, which may
    /// leave before the sync; everything else waits for [`GroupsNode::take_outgoing`] (or
    /// for the sync that taking deliveries or entries does first). Call it before the
    /// application takes deliveries, or their sync comes first and nothing overlaps. A runtime that sends these, then syncs through `take_outgoing`, overlaps
    /// its own fsync with the followers' (as etcd's leader does). Safe because a leader
    /// counts a follower's acceptance only in a later turn of the loop, after this turn's
    /// sync: its own acceptance it counts with it is then on disk (see
    /// [`crate::log::disk`], "What fsync covers").
    pub fn take_replication_before_sync(&mut self, out: &mut Vec<(NodeId, NetMsg)>) {
        if self.halted || self.wals.is_empty() {
            return;
        }
        self.flush();
        if self.wals.iter().any(WalSync::must_sync) {
            self.out = split_replication(std::mem::take(&mut self.out), self.me, out);
        }
    }

    /// Group commit: syncs what the durable logs queued that must be durable (one record and
    /// one `fdatasync` per log with something queued). Called before messages leave and
    /// decisions are handed up; false once a sync failed (the node then stops: its image is
    /// ahead of its file, so it must not speak again).
    fn sync_logs(&mut self) -> bool {
        if self.halted {
            return false;
        }
        for w in &self.wals {
            if let Err(e) = w.sync() {
                let why = format!("node {}: cannot sync its log file: {e}", self.me);
                tracing::error!("{why}");
                for s in self.servers.values_mut() {
                    s.log_mut().stop(why.clone());
                }
                self.stopped = Some(why);
                self.halted = true;
                self.out.clear();
                self.delivered.clear();
                self.exported.clear();
                return false;
            }
        }
        true
    }

    fn flush(&mut self) {
        let now = self.now;
        let logs: Vec<LogId> = self.servers.keys().copied().collect();
        for log in logs {
            let s = self.servers.get_mut(&log).expect("listed");
            s.flush(now);
            self.after_log_activity(log);
        }
        self.sender.take_outgoing(&mut self.out);
        for s in self.servers.values_mut() {
            s.take_outgoing(&mut self.out);
        }
    }

    /// Messages delivered by the node's subscriptions since the last call, each with the index
    /// of its subscription (the order of `subscriptions` in the node's configuration).
    pub fn take_delivered(&mut self, out: &mut Vec<(usize, Delivery)>) {
        if self.sync_logs() {
            out.append(&mut self.delivered);
        }
    }

    /// Reliably multicast messages delivered since the last call.
    pub fn take_rdelivered(&mut self, out: &mut Vec<RDelivery>) {
        self.rm.take_delivered(out);
    }

    /// Decided entries since the last call (only when `merge_locally` is off).
    pub fn take_entries(&mut self, out: &mut Vec<LogEntries>) {
        if self.sync_logs() {
            out.append(&mut self.exported);
        }
    }

    /// Conditions the application must act on.
    pub fn take_events(&mut self, out: &mut Vec<FeedEvent>) {
        out.append(&mut self.events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::LogMsg;
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::sequence_paxos::{
        AcceptDecide, Accepted, Decide, PaxosMessage, PaxosMsg,
    };
    use omnipaxos::util::SequenceNumber;

    fn paxos(msg: PaxosMsg<LogEntry>) -> NetMsg {
        NetMsg::Log {
            log: LogId(0),
            msg: Box::new(LogMsg::OmniPaxos {
                incarnation: 1,
                msg: omnipaxos::messages::Message::SequencePaxos(PaxosMessage {
                    from: 1,
                    to: 2,
                    msg,
                }),
            }),
        }
    }

    #[test]
    fn only_a_leaders_accepts_and_decides_may_leave_before_the_sync() {
        let n = Ballot::with(1, 1, 0, 1);
        let seq_num = SequenceNumber::default();
        assert!(is_leader_replication(&paxos(PaxosMsg::AcceptDecide(
            AcceptDecide {
                n,
                seq_num,
                decided_idx: 3,
                entries: vec![LogEntry::Skip(1)],
            }
        ))));
        assert!(is_leader_replication(&paxos(PaxosMsg::Decide(Decide {
            n,
            seq_num,
            decided_idx: 3,
        }))));
        // A follower's acceptance must wait for its sync; so must everything else.
        assert!(!is_leader_replication(&paxos(PaxosMsg::Accepted(
            Accepted { n, accepted_idx: 3 }
        ))));
        assert!(!is_leader_replication(&NetMsg::Progress {
            log: LogId(0),
            next: 3
        }));
    }

    #[test]
    fn replication_leaves_early_only_where_nothing_to_the_same_peer_waits_before_it() {
        let n = Ballot::with(1, 1, 0, 1);
        let decide = |i| {
            paxos(PaxosMsg::Decide(Decide {
                n,
                seq_num: SequenceNumber::default(),
                decided_idx: i,
            }))
        };
        let progress = |i| NetMsg::Progress {
            log: LogId(0),
            next: i,
        };
        let (me, a, b) = (NodeId(1), NodeId(2), NodeId(3));
        let queued = vec![
            (a, decide(1)),
            (b, progress(1)),
            (b, decide(2)),
            (me, decide(3)),
            (a, decide(4)),
        ];
        let mut early = Vec::new();
        let rest = split_replication(queued, me, &mut early);
        let key = |v: &[(NodeId, NetMsg)]| -> Vec<(u32, String)> {
            v.iter().map(|(to, m)| (to.0, format!("{m:?}"))).collect()
        };
        assert_eq!(key(&early), key(&[(a, decide(1)), (a, decide(4))]));
        assert_eq!(
            key(&rest),
            key(&[(b, progress(1)), (b, decide(2)), (me, decide(3))]),
            "b's decide waits behind its progress report; a message to itself never leaves"
        );
    }
}
