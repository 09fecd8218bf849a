//! The DS-SMR oracle (sans-IO): one replica of the partition that holds the map from objects
//! to partitions (reference notes, d'.6, with the two fixes: the map gains the object on
//! create and loses it on delete).
//!
//! The oracle never waits: it answers consults with prophecies, applies moves to its map
//! (a move of an object that is not in the source is ignored: the source sends a null value
//! and nothing changes), decides creates (and tells the new object's partition) and deletes,
//! and answers their clients. It delivers every move, create and delete in the same relative
//! order as the partitions they involve, so its view of a partition equals the partition's own
//! at each of them; with `record_views` it records that view for the tests to compare.

use super::attempts::{AttemptTable, Seen};
use super::common::{check_oracle_snapshot, check_restored_hash, decode_snapshot, partition_core};
use super::common::{reply_to, send_to_client, Outbox, Output};
use super::msg::{CommandMsg, Exchange, Multicast, Outcome, Peer, Prophecy, ToClient};
use super::service::{member_mix, Kind, ObjectId, PartitionId, PartitionedService};
use super::ServerOptions;
use crate::checkpoint::CheckpointError;
use crate::hash::Fnv64;
use crate::wire;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counters of one oracle replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OracleStats {
    /// Delivered multicasts handled.
    pub handled: u64,
    pub consults: u64,
    /// Moves applied, and moves of objects that were not in their source (ignored).
    pub moves: u64,
    pub moves_ignored: u64,
    pub created: u64,
    pub deleted: u64,
    /// Deletes sent to a partition that does not hold the object: answered `retry`.
    pub retries: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub pulls_answered: u64,
}

/// An oracle replica's state at a checkpoint: its map and bookkeeping, as decoded.
#[derive(Deserialize)]
struct Snapshot<V, R> {
    partitions: u32,
    location: BTreeMap<ObjectId, PartitionId>,
    digests: Vec<u64>,
    table: AttemptTable<Outcome<R>>,
    outbox: Outbox<V>,
    stats: OracleStats,
    views: Vec<(MsgId, PartitionId, u64)>,
    /// The state hash when it was taken (checked on restore).
    hash: u64,
}

/// [`Snapshot`] as encoded, borrowing the oracle's state (same layout).
#[derive(Serialize)]
struct SnapshotRef<'a, V, R> {
    partitions: u32,
    location: &'a BTreeMap<ObjectId, PartitionId>,
    digests: &'a [u64],
    table: &'a AttemptTable<Outcome<R>>,
    outbox: &'a Outbox<V>,
    stats: &'a OracleStats,
    views: &'a [(MsgId, PartitionId, u64)],
    hash: u64,
}

/// One replica of the oracle.
pub struct OracleServer<S: PartitionedService> {
    service: Arc<S>,
    cfg: Arc<ClusterConfig>,
    node: NodeId,
    opts: ServerOptions,
    partitions: u32,
    sender: bool,
    location: BTreeMap<ObjectId, PartitionId>,
    digests: Vec<u64>,
    table: AttemptTable<Outcome<S::Reply>>,
    outbox: Outbox<S::Value>,
    out: Vec<Output>,
    pub stats: OracleStats,
    views: Vec<(MsgId, PartitionId, u64)>,
    /// Snapshots taken at checkpoint marks, not yet taken by the host.
    snapshots: Vec<(u64, u64, Vec<u8>)>,
}

impl<S: PartitionedService> OracleServer<S> {
    /// Replica `node` of the oracle of `partitions` partitions (group `partitions`), knowing
    /// where the service's preloaded objects are.
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let sender = cfg.members(GroupId(partitions)).iter().min() == Some(&node);
        let mut location = BTreeMap::new();
        let mut digests = vec![0; partitions as usize];
        for (id, _) in service.preload() {
            let p = service.place(id, partitions);
            if location.insert(id, p).is_none() {
                digests[p as usize] ^= member_mix(id);
            }
        }
        OracleServer {
            outbox: Outbox::new(opts.outbox_max),
            service,
            cfg,
            node,
            opts,
            partitions,
            sender,
            location,
            digests,
            table: AttemptTable::default(),
            out: Vec::new(),
            stats: OracleStats::default(),
            views: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    /// This replica's state, encoded (the oracle handles each delivery at once, so this is
    /// its state after everything delivered so far).
    pub fn snapshot(&self) -> Vec<u8> {
        wire::encode(&SnapshotRef {
            partitions: self.partitions,
            location: &self.location,
            digests: &self.digests,
            table: &self.table,
            outbox: &self.outbox,
            stats: &self.stats,
            views: &self.views,
            hash: self.state_hash(),
        })
    }

    /// An oracle replica rebuilt from [`OracleServer::snapshot`]'s bytes; the arguments are
    /// [`OracleServer::new`]'s.
    pub fn restore(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        partitions: u32,
        opts: ServerOptions,
        bytes: &[u8],
    ) -> Result<Self, CheckpointError> {
        let snap: Snapshot<S::Value, S::Reply> = decode_snapshot(bytes, "oracle snapshot")?;
        let fits = snap.digests.len() == partitions as usize;
        check_oracle_snapshot(snap.partitions, fits, &snap.location, partitions)?;
        let mut o = Self::new(service, cfg, node, partitions, opts);
        o.location = snap.location;
        o.digests = snap.digests;
        o.table = snap.table;
        o.outbox = snap.outbox;
        o.stats = snap.stats;
        o.views = snap.views;
        check_restored_hash(o.state_hash(), snap.hash)?;
        Ok(o)
    }

    /// Where `object` is, if it exists.
    pub fn location(&self, object: ObjectId) -> Option<PartitionId> {
        self.location.get(&object).copied()
    }

    /// The whole map.
    pub fn locations(&self) -> impl Iterator<Item = (ObjectId, PartitionId)> + '_ {
        self.location.iter().map(|(o, p)| (*o, *p))
    }

    /// The oracle's membership digest of partition `p`.
    pub fn digest(&self, p: PartitionId) -> u64 {
        self.digests[p as usize]
    }

    /// The oracle's view of each partition after each membership change (when
    /// `record_views`).
    pub fn views(&self) -> &[(MsgId, PartitionId, u64)] {
        &self.views
    }

    pub fn state_hash(&self) -> u64 {
        let mut h = Fnv64::new();
        h.word(u64::from(self.partitions) << 32 | 0x0ac1e);
        for (o, p) in &self.location {
            h.word(*o).word(u64::from(*p));
        }
        h.get() ^ self.table.digest().rotate_left(17)
    }

    pub fn take_outputs(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.out);
    }

    /// A point-to-point message from another replica (a pull for a create verdict).
    pub fn peer(&mut self, payload: &[u8]) {
        answer_pull(
            payload,
            &self.outbox,
            &mut self.out,
            &mut self.stats.pulls_answered,
        );
    }

    fn view(&mut self, id: MsgId, p: PartitionId) {
        if self.opts.record_views && p < self.partitions {
            self.views.push((id, p, self.digests[p as usize]));
        }
    }

    fn reply(&mut self, c: &CommandMsg, outcome: Outcome<S::Reply>) {
        reply_to(&mut self.out, c, outcome);
    }

    /// An atomically delivered command ([`crate::wire::FeedMsg::Command`]'s body); handled at
    /// once.
    pub fn deliver(&mut self, id: MsgId, payload: &[u8]) {
        let Some(msg) = decode_multicast(payload, &mut self.stats.rejected) else {
            return;
        };
        self.stats.handled += 1;
        match msg {
            Multicast::Consult {
                client,
                seq,
                attempt,
                query,
            } => {
                self.stats.consults += 1;
                let prophecy = self.prophecy(&query);
                let body = ToClient::<S::Reply>::Prophecy {
                    seq,
                    attempt,
                    prophecy,
                };
                send_to_client(&mut self.out, client, &body);
            }
            Multicast::Move { object, from, to } => {
                if from == to || from >= self.partitions || to >= self.partitions {
                    return;
                }
                if self.location.get(&object) == Some(&from) {
                    self.location.insert(object, to);
                    self.digests[from as usize] ^= member_mix(object);
                    self.digests[to as usize] ^= member_mix(object);
                    self.stats.moves += 1;
                } else {
                    self.stats.moves_ignored += 1;
                }
                self.view(id, from);
                self.view(id, to);
            }
            Multicast::Command(c) => self.command(id, &c),
            // DynaStar's messages never reach a DS-SMR oracle.
            Multicast::Routed { .. }
            | Multicast::Plan(_)
            | Multicast::Hints { .. }
            | Multicast::Repartition => {}
        }
    }

    fn prophecy(&self, query: &Kind) -> Prophecy {
        let place = |o| self.service.place(o, self.partitions);
        locate(&self.location, query, place, Prophecy::Locations)
    }

    fn valid(&self, c: &CommandMsg) -> Result<S::Command, String> {
        let cmd: S::Command =
            wire::decode(&c.command).map_err(|e| format!("undecodable command: {e}"))?;
        if self.service.kind(&cmd) != c.kind {
            return Err(format!(
                "the message's kind {:?} is not the command's",
                c.kind
            ));
        }
        if c.partitions.is_empty()
            || c.partitions.windows(2).any(|w| w[0] >= w[1])
            || c.partitions.iter().any(|p| *p >= self.partitions)
            || (c.fallback && c.partitions.len() != self.partitions as usize)
        {
            return Err(format!("bad destination partitions {:?}", c.partitions));
        }
        Ok(cmd)
    }

    fn command(&mut self, id: MsgId, c: &CommandMsg) {
        if matches!(c.kind, Kind::Access(_)) {
            return; // accesses never involve the oracle
        }
        let (outcome, apply) = match self.table.check(c.client, c.seq, c.attempt, c.floor) {
            Seen::New => {
                let decided = self.decide(c);
                record_decision(&mut self.table, &mut self.stats.rejected, c, decided)
            }
            seen => again(seen, &mut self.stats.duplicates),
        };
        // Every partition the message names waits for a verdict on every copy.
        for p in named_partitions(c, self.partitions) {
            self.verdict(id, p, apply);
            self.view(id, p);
        }
        if let Some(o) = outcome {
            self.reply(c, o);
        }
    }

    /// The outcome of a new create or delete, and whether the named partition applies it.
    fn decide(&mut self, c: &CommandMsg) -> (Outcome<S::Reply>, bool) {
        if let Err(e) = self.valid(c) {
            return (Outcome::Rejected(e), false);
        }
        match c.kind {
            Kind::Create(object) => {
                if c.partitions.len() != 1 || c.fallback {
                    return (
                        Outcome::Rejected("a create names one partition".into()),
                        false,
                    );
                }
                if self.location.contains_key(&object) {
                    return (Outcome::AlreadyExists, false);
                }
                let p = c.partitions[0];
                if !self.opts.oracle_as_published {
                    self.location.insert(object, p);
                    self.digests[p as usize] ^= member_mix(object);
                }
                self.stats.created += 1;
                (Outcome::Created, true)
            }
            Kind::Delete(object) => match self.location.get(&object).copied() {
                None => (Outcome::Deleted, false),
                Some(p) if c.partitions.contains(&p) => {
                    if !self.opts.oracle_as_published {
                        self.location.remove(&object);
                        self.digests[p as usize] ^= member_mix(object);
                    }
                    self.stats.deleted += 1;
                    (Outcome::Deleted, true)
                }
                Some(_) => {
                    self.stats.retries += 1;
                    (Outcome::Retry, false)
                }
            },
            Kind::Access(_) => unreachable!("accesses never reach decide"),
        }
    }

    fn verdict(&mut self, id: MsgId, p: PartitionId, apply: bool) {
        let ex = Exchange::Verdict { msg: id, apply };
        if let Some(o) = self
            .outbox
            .put(GroupSet::singleton(GroupId(p)), ex, self.sender)
        {
            self.out.push(o);
        }
    }
}
partition_core!(oracle OracleServer);

/// An oracle's first sight of command `c` (decided as `decided`: the outcome, and whether
/// the partitions apply it): counts a rejection and records the outcome for the client.
pub(crate) fn record_decision<R: Clone>(
    table: &mut AttemptTable<Outcome<R>>,
    rejected: &mut u64,
    c: &CommandMsg,
    decided: (Outcome<R>, bool),
) -> (Option<Outcome<R>>, bool) {
    let (outcome, apply) = decided;
    if matches!(outcome, Outcome::Rejected(_)) {
        *rejected += 1;
    }
    table.record(c.client, c.seq, c.attempt, Some(outcome.clone()));
    (Some(outcome), apply)
}

/// An oracle's answer to a command it has seen before: the recorded outcome if it still has
/// it, never applied again.
pub(crate) fn again<R>(seen: Seen<Outcome<R>>, duplicates: &mut u64) -> (Option<Outcome<R>>, bool) {
    *duplicates += 1;
    match seen {
        Seen::Again(o) => (o, false),
        _ => (None, false),
    }
}

/// An oracle's delivered multicast, decoded; an undecodable one is counted in `rejected`,
/// logged and dropped.
pub(crate) fn decode_multicast(payload: &[u8], rejected: &mut u64) -> Option<Multicast> {
    match wire::decode::<Multicast>(payload) {
        Ok(m) => Some(m),
        Err(e) => {
            *rejected += 1;
            tracing::warn!(error = %e, "oracle: undecodable multicast dropped");
            None
        }
    }
}

/// Answers a replica's pull for an exchange of the oracle's from `outbox` into `out` (counted
/// in `answered`); anything else a peer sends an oracle is dropped.
pub(crate) fn answer_pull<V: Clone + Serialize + serde::de::DeserializeOwned>(
    payload: &[u8],
    outbox: &Outbox<V>,
    out: &mut Vec<Output>,
    answered: &mut u64,
) {
    if let Ok(Peer::Pull { msg, requester }) = wire::decode::<Peer<V>>(payload) {
        if outbox.answer(msg, requester, out) {
            *answered += 1;
        }
    }
}

/// The oracle's answer to a consult about `query` from `location`: an access's objects'
/// partitions (as `placed` words them) or `Nok` if one is unknown; a create's partition by
/// `place` or `Nok` if it exists; a delete's object's partition, or `Ok` if it is unknown.
pub(crate) fn locate(
    location: &BTreeMap<ObjectId, PartitionId>,
    query: &Kind,
    place: impl FnOnce(ObjectId) -> PartitionId,
    placed: impl FnOnce(Vec<(ObjectId, PartitionId)>) -> Prophecy,
) -> Prophecy {
    match query {
        Kind::Access(objects) => {
            let found: Option<Vec<(ObjectId, PartitionId)>> = objects
                .iter()
                .map(|o| location.get(o).map(|p| (*o, *p)))
                .collect();
            match found {
                Some(locations) if !locations.is_empty() => placed(locations),
                _ => Prophecy::Nok,
            }
        }
        Kind::Create(o) => match location.get(o) {
            Some(_) => Prophecy::Nok,
            None => Prophecy::Locations(vec![(*o, place(*o))]),
        },
        Kind::Delete(o) => match location.get(o) {
            Some(p) => Prophecy::Locations(vec![(*o, *p)]),
            None => Prophecy::Ok,
        },
    }
}

/// The partitions a command names that exist (of `partitions`), sorted, each once: every one
/// waits for the oracle's verdict.
pub(crate) fn named_partitions(c: &CommandMsg, partitions: u32) -> Vec<PartitionId> {
    let mut named: Vec<PartitionId> = c
        .partitions
        .iter()
        .copied()
        .filter(|p| *p < partitions)
        .collect();
    named.sort_unstable();
    named.dedup();
    named
}
