//! The replica host: what every replica does whatever its protocol, around a pluggable core.
//!
//! The [`ReplicaHost`] hands the node's inputs to its [`ReplicaCore`] (the protocol: P-SMR
//! workers, an S-SMR / DS-SMR partition, the DS-SMR oracle) and performs the core's outputs,
//! and it owns everything a replica does around its protocol (see [`crate::checkpoint`]):
//!
//! - asking for checkpoints by its [`Trigger`] (a [`crate::wire::FeedMsg::Checkpoint`] to every group);
//! - keeping the latest checkpoints the core took ([`Store`]) and reporting their positions to
//!   the log acceptors, which trim below them;
//! - answering peers' [`Transfer`] requests, and, when a log was trimmed past this replica,
//!   fetching a peer's checkpoint ([`Recovery`]) and having the core install it;
//! - with durable checkpoints ([`ReplicaHost::with_durable_checkpoints`]): making every
//!   checkpoint durable (through a [`Saver`]: inline, or on a writer thread so that a large
//!   checkpoint's write and syncs never stall the node's loop) before reporting its
//!   positions, and installing the one loaded from disk when the node starts, so only the
//!   log suffix after it is replayed;
//! - routing point-to-point messages ([`AppMsg`]): transfers to itself, peer messages to the
//!   core.
//!
//! A core never sees a transfer message or a trigger; the host never sees a command.

use super::{Action, Attached, Host, Inputs};
use crate::checkpoint::disk::CheckpointFile;
use crate::checkpoint::saver::{Saved, Saver};
use crate::checkpoint::{
    self, CheckpointError, CheckpointPolicy, Recovery, Store, Transfer, Trigger,
};
use crate::wire::AppMsg;
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{LogId, NodeId};
use groups::merge::Delivery;
use groups::node::LogEntries;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The protocol logic of a replica, as its host drives it.
///
/// Per step the host first feeds the core (entries or deliveries, exchanges, peer messages),
/// then calls [`ReplicaCore::step`] once, then performs the core's actions. A core that merges
/// the logs itself ([`ReplicaCore::reads_entries`]) must record its mergers' state at every
/// checkpoint request it delivers and take its checkpoint at that point of its stream.
pub trait ReplicaCore: Send + 'static {
    /// Whether the core merges the logs itself (from decided entries).
    fn reads_entries(&self) -> bool;
    /// Called once, when the node starts.
    fn start(&mut self, _at: &Attached) {}
    /// Decided entries (a core that reads entries).
    fn entries(&mut self, batch: &mut Vec<LogEntries>);
    /// A merged delivery (a core that does not).
    fn delivered(&mut self, d: Delivery);
    /// A reliable-multicast delivery.
    fn exchange(&mut self, _dests: &GroupSet, _payload: &[u8]) {}
    /// A message from another replica's core ([`AppMsg::Peer`]'s body).
    fn peer(&mut self, _from: NodeId, _body: &[u8]) {}
    /// A client's read to serve off the log ([`AppMsg::Read`]'s body). A core that does not
    /// serve reads this way drops it (the client's resend goes elsewhere, then times out).
    fn read(&mut self, from: NodeId, _body: &[u8]) {
        tracing::debug!(%from, "this replica does not serve reads off the log; dropped");
    }
    /// A read index this core asked for ([`Action::ReadIndex`]) completed.
    fn read_index(&mut self, _token: u64, _positions: Vec<(LogId, u64)>) {}
    /// Runs what can run at tick `now`; says what to do.
    fn step(&mut self, now: u64, out: &mut CoreOut);
    /// Installs a peer's checkpoint (as the core encoded it in [`Taken::bytes`]); the host
    /// then restarts the feeds at the returned positions.
    fn install(&mut self, bytes: &Bytes) -> Result<Installed, CheckpointError>;
    /// Commands handled by this incarnation (drives the checkpoint trigger).
    fn executed(&self) -> u64;
    /// The latest checkpoint round the core's stream delivered (0 if it does not know).
    fn stream_round(&self) -> u64 {
        0
    }
    /// Called once when the node stops.
    fn stop(&mut self) {}
}

/// What a core's step produced.
#[derive(Default, Debug)]
pub struct CoreOut {
    pub actions: Vec<Action>,
    /// Checkpoints completed at this replica.
    pub taken: Vec<Taken>,
    /// State hashes of checkpoints computed after they were taken: (round, hash).
    pub hashes: Vec<(u64, u64)>,
}

/// A checkpoint a core completed.
#[derive(Debug)]
pub struct Taken {
    pub round: u64,
    /// Encoded, as [`ReplicaCore::install`] takes it.
    pub bytes: Bytes,
    /// Per log, the first entry it does not cover.
    pub positions: Vec<(LogId, u64)>,
    /// The state's hash, when the core knows it at once.
    pub state_hash: Option<u64>,
    /// The longest a worker paused to record its part, and the time to encode the whole (a
    /// threaded core measures them; 0 otherwise).
    pub take_us: u64,
    pub assemble_us: u64,
}

/// A checkpoint a core installed.
#[derive(Debug)]
pub struct Installed {
    pub round: u64,
    pub positions: Vec<(LogId, u64)>,
    pub state_hash: Option<u64>,
    /// Microseconds the core took (a threaded core measures it; 0 otherwise).
    pub install_us: u64,
}

/// What a replica's checkpointing did (this incarnation), for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints completed here (taken, or installed by a state transfer).
    pub taken: u64,
    /// Checkpoints installed from a peer.
    pub installed: u64,
    /// Checkpoints received from a peer that did not install.
    pub refused: u64,
    /// The latest checkpoint: round, size in bytes, and per log the first entry it does not
    /// cover.
    pub round: u64,
    pub bytes: u64,
    pub positions: Vec<(LogId, u64)>,
    /// The state hash of the latest checkpoint (round, hash), once known: equal at every
    /// replica of a group for the same round.
    pub state_hash: Option<(u64, u64)>,
    /// For the latest checkpoint taken here: the longest a worker took to record its part,
    /// and the time to encode the whole checkpoint.
    pub take_us: u64,
    pub assemble_us: u64,
    /// The latest state transfer: microseconds to fetch the checkpoint, and to install it.
    pub transfer_us: u64,
    pub install_us: u64,
    /// Chunks sent to peers recovering from this replica.
    pub chunks_sent: u64,
    /// Durable checkpoints: loaded from disk at start (0 or 1), written, failed writes, and
    /// the microseconds of the latest write and of the load's install.
    pub loaded: u64,
    /// The round of the checkpoint loaded from disk (0: none).
    pub loaded_round: u64,
    pub saved: u64,
    pub save_errors: u64,
    /// Checkpoints not written because a newer one was handed to the writer first (a
    /// writer slower than the checkpoint period).
    pub save_superseded: u64,
    pub save_us: u64,
    pub load_us: u64,
}

/// A replica's checkpoint counters, readable from other threads.
pub type SharedCheckpoints = Arc<parking_lot::Mutex<CheckpointStats>>;

/// A replica of any protocol (see the module docs).
pub struct ReplicaHost<C: ReplicaCore> {
    pub core: C,
    me: NodeId,
    cfg: Option<Arc<ClusterConfig>>,
    trigger: Option<Trigger>,
    resend_ticks: u64,
    store: Store,
    /// The transfer in progress and when it started (microseconds).
    recovery: Option<(Recovery, u64)>,
    stats: CheckpointStats,
    live: SharedCheckpoints,
    /// `stats` changed since it was last published to `live`.
    dirty: bool,
    out: CoreOut,
    transfers: Vec<(NodeId, Transfer)>,
    app_out: Vec<(NodeId, Bytes)>,
    durable: Option<Durable>,
    /// Scratch for [`ReplicaHost::durable_saves`].
    saved: Vec<Saved>,
}

/// Durable checkpoints of a replica: where they go, and the one loaded at start.
struct Durable {
    saver: Saver,
    loaded: Option<CheckpointFile>,
    cluster: groups::ids::ClusterId,
}

impl<C: ReplicaCore> ReplicaHost<C> {
    pub fn new(core: C) -> Self {
        ReplicaHost {
            core,
            me: NodeId(0),
            cfg: None,
            trigger: None,
            resend_ticks: CheckpointPolicy::default().resend_ticks,
            store: Store::default(),
            recovery: None,
            stats: CheckpointStats::default(),
            live: SharedCheckpoints::default(),
            dirty: false,
            out: CoreOut::default(),
            transfers: Vec::new(),
            app_out: Vec::new(),
            durable: None,
            saved: Vec::new(),
        }
    }

    /// Makes every checkpoint durable with `saver` before reporting its positions to the
    /// acceptors (so they trim only below durable checkpoints), and starts from `loaded` (the newest valid
    /// checkpoint found there, see [`crate::checkpoint::disk::CheckpointDir::load`]): the core
    /// installs it when the node starts and the feeds restart at its positions. A checkpoint
    /// that cannot be written is logged and not reported, so nothing is trimmed below it.
    pub fn with_durable_checkpoints(
        mut self,
        saver: Saver,
        loaded: Option<CheckpointFile>,
    ) -> Self {
        self.durable = Some(Durable {
            saver,
            loaded,
            cluster: groups::ids::ClusterId(0),
        });
        self
    }

    /// Asks for checkpoints by `policy`, and reports them to the log acceptors, which trim
    /// below them. Without it the replica still takes part in the rounds others ask for (if
    /// its core reads entries), serves its checkpoints to peers and recovers by state
    /// transfer.
    pub fn with_checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.trigger = Some(Trigger::new(policy));
        self.resend_ticks = policy.resend_ticks;
        self
    }

    /// What checkpointing did at this replica (this incarnation).
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.stats.clone()
    }

    /// The same counters, refreshed at every change, readable from other threads (see
    /// [`crate::metrics::render_checkpoints`]).
    pub fn share_checkpoints(&self) -> SharedCheckpoints {
        self.live.clone()
    }

    /// Whether a state transfer is in progress.
    pub fn recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// A checkpoint is complete here (taken, or installed): keep it, report its positions.
    fn completed(
        &mut self,
        round: u64,
        bytes: Bytes,
        positions: Vec<(LogId, u64)>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.dirty = true;
        let s = &mut self.stats;
        s.taken += 1;
        s.round = round;
        s.bytes = bytes.len() as u64;
        s.positions.clone_from(&positions);
        match self.durable.as_mut() {
            None => out.push(Action::SetCheckpointed(positions)),
            Some(d) => {
                // Reported once durable ([`ReplicaHost::durable_saves`]): at once when the
                // saver writes inline, in a later step when it writes in the background.
                d.saver.submit(CheckpointFile {
                    cluster: d.cluster,
                    node: self.me,
                    round,
                    positions,
                    bytes: bytes.clone(),
                });
                self.durable_saves(out);
            }
        }
        self.store.set(round, bytes);
        let executed = self.core.executed();
        if let Some(t) = self.trigger.as_mut() {
            t.taken(executed, now);
        }
    }

    /// Reports the checkpoints the saver made durable since the last call (their positions
    /// go to the acceptors, which may then trim below them); a failed write is logged and
    /// not reported, so nothing is trimmed below it.
    fn durable_saves(&mut self, out: &mut Vec<Action>) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let mut saved = std::mem::take(&mut self.saved);
        d.saver.poll(&mut saved);
        let s = &mut self.stats;
        for done in saved.drain(..) {
            self.dirty = true;
            s.save_superseded += done.superseded;
            match done.result {
                Ok(us) => {
                    s.saved += 1;
                    s.save_us = us;
                    out.push(Action::SetCheckpointed(done.positions));
                }
                Err(e) => {
                    s.save_errors += 1;
                    tracing::error!(replica = %self.me, round = done.round, error = %e, "checkpoint not written to disk: not reported, so the logs are not trimmed below it");
                }
            }
        }
        self.saved = saved;
    }

    fn install(&mut self, bytes: Bytes, now: u64, now_us: u64, out: &mut Vec<Action>) {
        match self.core.install(&bytes) {
            Ok(i) => {
                let started = self.recovery.take().map_or(now_us, |(_, at)| at);
                out.push(Action::RestartFeeds(i.positions.clone()));
                self.completed(i.round, bytes, i.positions, now, out);
                let s = &mut self.stats;
                s.installed += 1;
                s.transfer_us = now_us.saturating_sub(started);
                s.install_us = i.install_us;
                if let Some(h) = i.state_hash {
                    s.state_hash = Some((i.round, h));
                }
                tracing::info!(replica = %self.me, round = i.round, bytes = s.bytes, transfer_us = s.transfer_us, install_us = s.install_us, "checkpoint installed");
            }
            Err(e) => {
                tracing::warn!(replica = %self.me, error = %e, "checkpoint from a peer refused");
                self.stats.refused += 1;
                self.dirty = true;
                if let Some((r, _)) = self.recovery.as_mut() {
                    r.next_peer(now, &mut self.app_out);
                }
            }
        }
    }

    /// Installs the checkpoint loaded from disk at start; the feeds restart at its positions
    /// (the suffix after it is replayed), and it is kept and reported like a taken one.
    fn install_loaded(&mut self, file: CheckpointFile, now: u64, out: &mut Vec<Action>) {
        let t0 = std::time::Instant::now();
        match self.core.install(&file.bytes) {
            Ok(i) => {
                if i.positions != file.positions || i.round != file.round {
                    // The checkpoint's own bytes (checksummed with the header) decide.
                    tracing::warn!(replica = %self.me, file_round = file.round, round = i.round, file_positions = ?file.positions, positions = ?i.positions, "checkpoint file's header disagrees with its checkpoint; using the checkpoint's");
                }
                out.push(Action::RestartFeeds(i.positions.clone()));
                out.push(Action::SetCheckpointed(i.positions.clone()));
                let s = &mut self.stats;
                s.loaded += 1;
                s.loaded_round = i.round;
                s.load_us = t0.elapsed().as_micros() as u64;
                s.round = i.round;
                s.bytes = file.bytes.len() as u64;
                s.positions.clone_from(&i.positions);
                if let Some(h) = i.state_hash {
                    s.state_hash = Some((i.round, h));
                }
                self.dirty = true;
                tracing::info!(replica = %self.me, round = i.round, bytes = s.bytes, positions = ?i.positions, load_us = s.load_us, "checkpoint loaded from disk; replaying the logs after it");
                self.store.set(i.round, file.bytes);
                let executed = self.core.executed();
                if let Some(t) = self.trigger.as_mut() {
                    t.taken(executed, now);
                }
            }
            Err(e) => {
                tracing::error!(replica = %self.me, round = file.round, error = %e, "checkpoint on disk does not install; starting without it (the replica replays the logs or recovers from a peer)");
            }
        }
    }

    /// Asks for a checkpoint when due, answers peers' transfer requests, and recovers by
    /// state transfer when a log was trimmed past this replica.
    fn checkpoints(&mut self, input: &mut Inputs, out: &mut Vec<Action>) {
        let now = input.now;
        let latest = self.store.latest().map_or(0, |(r, _)| r);
        let executed = self.core.executed();
        let stream_round = self.core.stream_round();
        let round = self
            .trigger
            .as_mut()
            .and_then(|t| t.poll(latest.max(stream_round), executed, now));
        if let (Some(round), None, Some(cfg)) = (round, &self.recovery, &self.cfg) {
            out.push(Action::Multicast(
                GroupSet::all(cfg.groups),
                checkpoint::request(round),
            ));
        }
        if !input.events.is_empty() && self.recovery.is_none() {
            tracing::warn!(replica = %self.me, events = ?input.events, "log trimmed past this replica: recovering by state transfer");
            let peers = self
                .cfg
                .as_ref()
                .map(|c| checkpoint::peers_of(c, self.me))
                .unwrap_or_default();
            let r = Recovery::start(peers, self.resend_ticks, now, &mut self.app_out);
            self.recovery = Some((r, input.now_us));
        }
        input.events.clear();
        for (from, msg) in std::mem::take(&mut self.transfers) {
            match msg {
                Transfer::Get { round, offset } => {
                    let answer = self.store.answer(round, offset);
                    self.app_out.push((from, answer.encode()));
                    self.stats.chunks_sent = self.store.chunks_sent;
                    self.dirty = true;
                }
                other => {
                    let Some((r, _)) = self.recovery.as_mut() else {
                        continue;
                    };
                    if let Some(whole) = r.on_message(from, other, now, &mut self.app_out) {
                        self.install(whole, now, input.now_us, out);
                    }
                }
            }
        }
        if let Some((r, _)) = self.recovery.as_mut() {
            r.tick(now, &mut self.app_out);
        }
        out.extend(self.app_out.drain(..).map(|(to, b)| Action::Send(to, b)));
    }
}

impl<C: ReplicaCore> Host for ReplicaHost<C> {
    fn reads_entries(&self) -> bool {
        self.core.reads_entries()
    }

    fn attach(&mut self, at: &Attached, out: &mut Vec<Action>) {
        self.me = at.id;
        self.cfg = Some(at.config.clone());
        if self.trigger.is_some() && self.core.reads_entries() {
            // A replica that checkpoints says so from the start (its initial state is a
            // checkpoint at position 0), so the acceptors hold it to the checkpoint rule, not
            // the received-position rule, even before its first checkpoint.
            let logs: BTreeSet<LogId> = at
                .config
                .node(at.id)
                .map(|n| {
                    n.subscriptions
                        .iter()
                        .flat_map(|g| at.config.logs_for(g))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Action::SetCheckpointed(
                logs.into_iter().map(|l| (l, 0)).collect(),
            ));
        }
        self.core.start(at);
        if let Some(d) = self.durable.as_mut() {
            d.cluster = at.config.cluster_id;
            if let Some(file) = d.loaded.take() {
                self.install_loaded(file, at.now, out);
            }
        }
    }

    fn step(&mut self, input: &mut Inputs, out: &mut Vec<Action>) {
        if self.core.reads_entries() {
            self.core.entries(&mut input.entries);
        } else {
            input.entries.clear();
        }
        for (_, d) in input.delivered.drain(..) {
            self.core.delivered(d);
        }
        for r in input.exchanges.drain(..) {
            self.core.exchange(&r.dests, &r.payload);
        }
        for (token, positions) in input.read_indexes.drain(..) {
            self.core.read_index(token, positions);
        }
        for (from, m) in input.app.drain(..) {
            match AppMsg::parse(&m) {
                Ok(AppMsg::Transfer(body)) => match Transfer::decode(body) {
                    Ok(t) => self.transfers.push((from, t)),
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "undecodable transfer message dropped")
                    }
                },
                Ok(AppMsg::Peer(body)) => self.core.peer(from, body),
                Ok(AppMsg::Read(body)) => self.core.read(from, body),
                Ok(AppMsg::ToClient { .. }) => {
                    tracing::debug!(%from, "a client's message at a replica; dropped")
                }
                Err(e) => tracing::debug!(%from, error = %e, "application message dropped"),
            }
        }
        self.core.step(input.now, &mut self.out);
        out.append(&mut self.out.actions);
        for t in std::mem::take(&mut self.out.taken) {
            self.completed(t.round, t.bytes, t.positions, input.now, out);
            let s = &mut self.stats;
            s.take_us = t.take_us;
            s.assemble_us = t.assemble_us;
            if let Some(h) = t.state_hash {
                s.state_hash = Some((t.round, h));
            }
        }
        for (round, hash) in self.out.hashes.drain(..) {
            if self.stats.state_hash.is_none_or(|(r, _)| r <= round) {
                self.stats.state_hash = Some((round, hash));
                self.dirty = true;
            }
        }
        self.checkpoints(input, out);
        self.durable_saves(out);
        if self.dirty {
            self.dirty = false;
            self.live.lock().clone_from(&self.stats);
        }
    }

    fn detach(&mut self) {
        self.core.stop();
    }
}
