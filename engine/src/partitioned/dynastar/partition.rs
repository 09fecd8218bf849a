//! One replica of a DynaStar partition (sans-IO; reference notes, e.6 with the fixes of e.7).
//!
//! The partition executes what it delivers with **per-object ordering** instead of one queue
//! that blocks on its head: every delivered item *claims* the objects it names, and an item
//! starts only when no earlier unfinished item claims one of its objects. Items on other
//! objects keep running while one waits, so neither a borrowed object nor a placement transfer
//! stops the partition (the "present / in-flight" flags of e.7 are the claims of the items
//! that hold an object away: a lend waiting for its return, a placement chunk waiting for its
//! transfer, a create waiting for its verdict).
//!
//! - **Routed access** (`Multicast::Routed`: the destinations and the target travel in the
//!   message). A single-partition access runs if the partition owns every object, else it is
//!   answered `retry`. For a multi-partition access every destination but the target lends
//!   the target the objects of the command it owns ([`Exchange::Lend`], possibly none) and
//!   waits for their return; the target waits for every lend, executes the command if it has
//!   all its objects (else `retry`: a placement moved one in the meantime), answers the client
//!   and returns every lender its objects with their new values ([`Exchange::Return`]).
//! - **Placement chunk** (`Multicast::Plan`, the first delivered copy of each chunk). For
//!   every move from this partition it sends the object's value, or `None` if it does not own
//!   it, to the new owner ([`Exchange::Transfer`]); for every move to it, it waits for the
//!   source's transfer. Commands after the chunk that touch a moving object wait for it;
//!   the others do not notice.
//! - **Create / delete**: as in DS-SMR, the oracle decides and sends its verdict.
//! - **Checkpoint mark**: a barrier: it waits for everything before it, and nothing after it
//!   is admitted until the snapshot is taken.
//!
//! **Determinism.** Replicas of a partition see the same deliveries in the same order but
//! exchanges at different times, so the order in which items *finish* differs between
//! replicas. Nothing replicated depends on it: an item's outcome depends only on the objects
//! it claims, whose values and ownership change only through earlier items claiming them
//! (finished first at every replica), and the client table is consulted at *admission*,
//! which is in delivery order.
//!
//! Exchanges are sent by one designated replica (the lowest id) and kept in every replica's
//! outbox; an item that waits longer than `pull_ticks` pulls them from the sending group's
//! replicas. The designated replica also collects hints (objects executed together) and
//! multicasts them to the oracle every `hint_ticks`.

use super::super::attempts::Seen;
use super::super::common::{
    check_partition_snapshot, check_restored_hash, decode_exchange, decode_snapshot,
    partition_core, reply_to, Output, PartitionState,
};
use super::super::msg::{CommandMsg, Exchange, Multicast, Outcome, Peer, PlanChunk};
use super::super::server::{finish_command, gather_outcome, ServerStats};
use super::super::service::{value_hash, Kind, ObjectId, Objects, PartitionId, PartitionedService};
use super::super::ServerOptions;
use super::workload::HintBuffer;
use crate::checkpoint::CheckpointError;
use crate::wire::{self, AppMsg, FeedMsg};
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Where an object a target executes on came from (`None`: the target itself).
type Origin = Option<PartitionId>;
type Values<S> = Vec<(ObjectId, <S as PartitionedService>::Value)>;
type Transfers<S> = Vec<(ObjectId, Option<<S as PartitionedService>::Value>)>;

/// Edges recorded per executed command at most (a star from the command's own objects).
const EDGES_PER_COMMAND_MAX: usize = 4096;

#[derive(Debug)]
enum Work {
    Routed {
        cmd: CommandMsg,
        target: PartitionId,
    },
    /// A create or delete: follow the oracle's verdict.
    Verdict(CommandMsg),
    Plan(PlanChunk),
    Mark(u64),
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    New,
    /// A lender waiting for its objects, a target for its lends, a receiver for transfers.
    Waiting,
}

#[derive(Debug)]
struct Item<C> {
    id: MsgId,
    work: Work,
    /// The objects it claims (sorted, distinct).
    claims: Vec<ObjectId>,
    /// Its place in delivery order (this replica's count of pushed items).
    seq: u64,
    /// How many of `claims` (a prefix) it is already the earliest queued claimant of; an
    /// item stays the earliest once it is (later items have larger `seq`).
    first_of: usize,
    admitted: bool,
    phase: Phase,
    command: Option<C>,
    /// Whether this replica answers the client (the target, for accesses).
    answers: bool,
    /// Waiting for exchanges from these groups: since, last pull.
    waiting: Option<(Vec<GroupId>, u64, u64)>,
}

enum Step {
    Done,
    Wait(Vec<GroupId>),
}

/// A DynaStar partition replica's state at a checkpoint, as decoded.
#[derive(Deserialize)]
struct Snapshot<V, R> {
    partition: PartitionId,
    state: PartitionState<V, R>,
    stats: ServerStats,
    applied: (u64, BTreeSet<u32>),
    views: Vec<(MsgId, ObjectId, bool)>,
    hash: u64,
}

#[derive(Serialize)]
struct SnapshotRef<'a, V, R> {
    partition: PartitionId,
    state: &'a PartitionState<V, R>,
    stats: &'a ServerStats,
    applied: &'a (u64, BTreeSet<u32>),
    views: &'a [(MsgId, ObjectId, bool)],
    hash: u64,
}

/// One replica of DynaStar partition `me`.
pub struct DynaPartition<S: PartitionedService> {
    service: Arc<S>,
    opts: ServerOptions,
    cfg: Arc<ClusterConfig>,
    me: PartitionId,
    node: NodeId,
    partitions: u32,
    sender: bool,
    /// Objects, client table, exchanges, finished deliveries, outbox, digest.
    st: PartitionState<S::Value, S::Reply>,
    queue: VecDeque<Item<S::Command>>,
    /// For every object claimed by a queued item, the queued claimants' `seq` in delivery
    /// order (derived from `queue`; an item may start when it is the front of every claim's).
    claimants: FxHashMap<ObjectId, VecDeque<u64>>,
    pushed: u64,
    /// The latest placement epoch delivered and the chunks of it delivered.
    applied: (u64, BTreeSet<u32>),
    hints: HintBuffer,
    last_hints: u64,
    now: u64,
    out: Vec<Output>,
    pub stats: ServerStats,
    /// `(delivery, object, joined)` at every ownership change (when `record_views`).
    views: Vec<(MsgId, ObjectId, bool)>,
    snapshots: Vec<(u64, u64, Vec<u8>)>,
}

impl<S: PartitionedService> DynaPartition<S> {
    /// Replica `node` of partition `me` (of `partitions`), with the preloaded objects the
    /// placement rule puts here.
    pub fn new(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        me: PartitionId,
        partitions: u32,
        opts: ServerOptions,
    ) -> Self {
        let (sender, st) =
            PartitionState::start(&*service, &cfg, node, me, partitions, opts.outbox_max);
        DynaPartition {
            st,
            hints: HintBuffer::new(opts.dynastar.hint_entries_max),
            service,
            opts,
            cfg,
            me,
            node,
            partitions,
            sender,
            queue: VecDeque::new(),
            claimants: FxHashMap::default(),
            pushed: 0,
            applied: (0, BTreeSet::new()),
            last_hints: 0,
            now: 0,
            out: Vec::new(),
            stats: ServerStats::default(),
            views: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    /// A replica rebuilt from [`DynaPartition::snapshot`]'s bytes.
    pub fn restore(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        me: PartitionId,
        partitions: u32,
        opts: ServerOptions,
        bytes: &[u8],
    ) -> Result<Self, CheckpointError> {
        let snap: Snapshot<S::Value, S::Reply> =
            decode_snapshot(bytes, "dynastar partition snapshot")?;
        check_partition_snapshot(snap.partition, me)?;
        let mut s = Self::new(service, cfg, node, me, partitions, opts);
        s.st = snap.state.restored();
        s.stats = snap.stats;
        s.applied = snap.applied;
        s.views = snap.views;
        check_restored_hash(s.state_hash(), snap.hash)?;
        Ok(s)
    }

    /// This replica's state, encoded (call it when nothing is in progress, or let a mark
    /// reach the head).
    pub fn snapshot(&self) -> Vec<u8> {
        wire::encode(&SnapshotRef {
            partition: self.me,
            state: &self.st,
            stats: &self.stats,
            applied: &self.applied,
            views: &self.views,
            hash: self.state_hash(),
        })
    }

    pub fn partition(&self) -> PartitionId {
        self.me
    }

    /// The latest placement epoch this replica delivered.
    pub fn epoch(&self) -> u64 {
        self.applied.0
    }

    pub fn objects(&self) -> impl Iterator<Item = (ObjectId, &S::Value)> + '_ {
        self.st.store.iter().map(|(k, v)| (*k, v))
    }

    pub fn owns(&self, id: ObjectId) -> bool {
        self.st.store.contains_key(&id)
    }

    /// Every ownership change, by delivery (when `record_views`).
    pub fn views(&self) -> &[(MsgId, ObjectId, bool)] {
        &self.views
    }

    /// Delivered items not finished.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// The oldest item waiting for an exchange: its delivery, the groups, since when.
    pub fn waiting_on(&self) -> Option<(MsgId, &[GroupId], u64)> {
        self.queue.iter().find_map(|i| {
            i.waiting
                .as_ref()
                .map(|(g, since, _)| (i.id, g.as_slice(), *since))
        })
    }

    /// Its own formula (the partition id is not multiplied in, unlike S-SMR's): checkpoints
    /// already written record this hash, so it stays.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = crate::hash::FNV_OFFSET ^ u64::from(self.me);
        for (k, v) in &self.st.store {
            for x in [*k, value_hash(v)] {
                h = (h ^ x).wrapping_mul(crate::hash::FNV_PRIME);
            }
        }
        h ^ self.st.table.digest().rotate_left(17)
    }

    pub fn mark_checkpoint(&mut self, round: u64) {
        self.push(
            MsgId {
                sender: NodeId(u32::MAX),
                epoch: 0,
                seq: round,
            },
            Work::Mark(round),
            Vec::new(),
        );
    }

    pub fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
        out.append(&mut self.snapshots);
    }

    pub fn take_outputs(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.out);
    }

    fn push(&mut self, id: MsgId, work: Work, mut claims: Vec<ObjectId>) {
        claims.sort_unstable();
        claims.dedup();
        let seq = self.pushed;
        self.pushed += 1;
        for o in &claims {
            self.claimants.entry(*o).or_default().push_back(seq);
        }
        self.queue.push_back(Item {
            id,
            work,
            claims,
            seq,
            first_of: 0,
            admitted: false,
            phase: Phase::New,
            command: None,
            answers: false,
            waiting: None,
        });
    }

    /// An atomically delivered multicast.
    pub fn deliver(&mut self, id: MsgId, payload: &[u8]) {
        let msg = match wire::decode::<Multicast>(payload) {
            Ok(m) => m,
            Err(e) => {
                self.stats.rejected += 1;
                tracing::warn!(partition = self.me, error = %e, "undecodable multicast dropped");
                return;
            }
        };
        match msg {
            Multicast::Routed { cmd, target } => {
                if !cmd.partitions.contains(&self.me) {
                    return;
                }
                let claims = cmd.kind.objects().to_vec();
                self.push(id, Work::Routed { cmd, target }, claims);
            }
            Multicast::Command(cmd)
                if matches!(cmd.kind, Kind::Create(_) | Kind::Delete(_))
                    && cmd.partitions.contains(&self.me) =>
            {
                let claims = cmd.kind.objects().to_vec();
                self.push(id, Work::Verdict(cmd), claims);
            }
            Multicast::Plan(mut chunk) => {
                chunk.moves.sort_unstable();
                chunk.moves.dedup_by_key(|m| m.0);
                let mut claims: Vec<ObjectId> = chunk
                    .moves
                    .iter()
                    .filter(|(_, f, t)| *f != *t && (*f == self.me || *t == self.me))
                    .map(|(o, _, _)| *o)
                    .collect();
                claims.sort_unstable();
                claims.dedup();
                self.push(id, Work::Plan(chunk), claims);
            }
            // Consults, hints and repartition requests are the oracle's; an access sent to a
            // DynaStar partition unrouted is malformed.
            _ => {}
        }
    }

    /// A reliably delivered exchange.
    pub fn exchange(&mut self, payload: &[u8]) {
        if let Some(ex) = decode_exchange(payload, self.me) {
            self.on_exchange(ex);
        }
    }

    /// A point-to-point message from another replica.
    pub fn peer(&mut self, payload: &[u8]) {
        let answered = &mut self.stats.pulls_answered;
        if let Some(ex) = self.st.peer(payload, self.me, &mut self.out, answered) {
            self.on_exchange(ex);
        }
    }

    fn on_exchange(&mut self, ex: Exchange<S::Value>) {
        if let Exchange::Return { to, .. } | Exchange::Transfer { to, .. } = &ex {
            if *to != self.me {
                // A pull's answer carries everything the sender sent for the delivery: every
                // lender's return, every receiver's transfer.
                return;
            }
        }
        self.st.keep_exchange(ex);
    }

    /// Advances time: pulls what items have waited for too long; sends hints when due.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        let pull_ticks = self.opts.pull_ticks;
        let mut pulls: Vec<(MsgId, Vec<GroupId>)> = Vec::new();
        for item in self.queue.iter_mut() {
            if let Some((groups, _, last)) = &mut item.waiting {
                if now >= *last + pull_ticks {
                    *last = now;
                    pulls.push((item.id, groups.clone()));
                }
            }
        }
        for (msg, groups) in pulls {
            let pull = AppMsg::peer(&Peer::<S::Value>::Pull {
                msg,
                requester: self.node,
            });
            for g in groups {
                for &n in self.cfg.members(g) {
                    if n != self.node {
                        self.out.push(Output::Send(n, pull.clone()));
                    }
                }
            }
            self.stats.pulls_sent += 1;
        }
        let every = self.opts.dynastar.hint_ticks;
        if self.sender && every > 0 && now >= self.last_hints + every && !self.hints.is_empty() {
            self.last_hints = now;
            let msg = Multicast::Hints {
                from: self.me,
                hints: self.hints.drain(),
            };
            self.out.push(Output::Multicast(
                GroupSet::singleton(GroupId(self.partitions)),
                FeedMsg::command(&msg),
            ));
        }
    }

    /// Runs every item that can run (see the module docs): an item starts when no earlier
    /// queued item claims one of its objects, i.e. when it is the earliest queued claimant of
    /// every object it claims ([`DynaPartition::claimants`], kept as items come and go, so
    /// that a pass costs the queue's length, not the sum of its claims).
    pub fn run(&mut self) {
        let mut queue = std::mem::take(&mut self.queue);
        let mut kept = VecDeque::with_capacity(queue.len());
        let mut barrier = false;
        while let Some(mut item) = queue.pop_front() {
            if barrier {
                kept.push_back(item);
                continue;
            }
            if let Work::Mark(round) = item.work {
                if kept.is_empty() {
                    let snap = self.snapshot();
                    self.snapshots.push((round, self.state_hash(), snap));
                    self.release(&item);
                } else {
                    barrier = true;
                    kept.push_back(item);
                }
                continue;
            }
            if !item.admitted {
                item.admitted = true;
                if !self.admit(&mut item) {
                    self.done(&item);
                    continue;
                }
            }
            if item.phase == Phase::New && !self.first_claimant(&mut item) {
                kept.push_back(item);
                continue;
            }
            match self.step(&mut item) {
                Step::Done => self.done(&item),
                Step::Wait(groups) => {
                    if item.waiting.as_ref().is_none_or(|w| w.0 != groups) {
                        item.waiting = Some((groups, self.now, self.now));
                    }
                    kept.push_back(item);
                }
            }
        }
        self.queue = kept;
    }

    /// Whether `item` is the earliest queued claimant of every object it claims.
    fn first_claimant(&self, item: &mut Item<S::Command>) -> bool {
        while let Some(o) = item.claims.get(item.first_of) {
            if self.claimants.get(o).and_then(|q| q.front()) != Some(&item.seq) {
                return false;
            }
            item.first_of += 1;
        }
        true
    }

    /// Takes a finished item out of the claimants.
    fn release(&mut self, item: &Item<S::Command>) {
        for o in &item.claims {
            if let Some(q) = self.claimants.get_mut(o) {
                if let Some(i) = q.iter().position(|s| *s == item.seq) {
                    q.remove(i);
                }
                if q.is_empty() {
                    self.claimants.remove(o);
                }
            }
        }
    }

    fn done(&mut self, item: &Item<S::Command>) {
        self.release(item);
        self.stats.handled += 1;
        self.st.finished.insert(item.id);
        self.st.inbox.remove(&item.id);
    }

    /// Admission, in delivery order: the client table and validation. Returns whether the
    /// item still has work to do.
    fn admit(&mut self, item: &mut Item<S::Command>) -> bool {
        match &item.work {
            Work::Routed { cmd, target } => {
                let c = cmd.clone();
                let answers = *target == self.me;
                item.answers = answers;
                match self.st.table.check(c.client, c.seq, c.attempt, c.floor) {
                    Seen::New => {}
                    Seen::Again(o) => {
                        self.stats.duplicates += 1;
                        if let Some(o) = o {
                            self.reply(&c, o);
                        }
                        return false;
                    }
                    Seen::Stale | Seen::Forgotten => {
                        self.stats.duplicates += 1;
                        return false;
                    }
                }
                // In progress: a copy delivered before this one finishes is a duplicate.
                self.st.table.record(c.client, c.seq, c.attempt, None);
                match self.validate(&c, *target) {
                    Ok(command) => {
                        item.command = Some(command);
                        true
                    }
                    Err(e) => {
                        self.finish(&c, Outcome::Rejected(e), answers);
                        false
                    }
                }
            }
            Work::Plan(chunk) => {
                let (epoch, seen) = &mut self.applied;
                if chunk.epoch < *epoch || (chunk.epoch == *epoch && seen.contains(&chunk.index)) {
                    return false; // another copy of a chunk already applied
                }
                if chunk.epoch > *epoch {
                    *epoch = chunk.epoch;
                    seen.clear();
                }
                seen.insert(chunk.index);
                self.stats.plan_chunks += 1;
                true
            }
            Work::Verdict(_) => true,
            Work::Mark(_) => unreachable!("marks are handled in run"),
        }
    }

    fn validate(&self, c: &CommandMsg, target: PartitionId) -> Result<S::Command, String> {
        let cmd: S::Command =
            wire::decode(&c.command).map_err(|e| format!("undecodable command: {e}"))?;
        let kind = self.service.kind(&cmd);
        let ok = match (&kind, &c.kind) {
            (Kind::Access(base), Kind::Access(all)) => {
                all.windows(2).all(|w| w[0] < w[1])
                    && base.iter().all(|o| all.binary_search(o).is_ok())
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "a routed command must be an access; the command is a {kind:?}, the message says {:?}",
                c.kind
            ));
        }
        if c.partitions.is_empty()
            || c.partitions.windows(2).any(|w| w[0] >= w[1])
            || c.partitions.iter().any(|p| *p >= self.partitions)
            || c.partitions.binary_search(&target).is_err()
        {
            return Err(format!(
                "bad destination partitions {:?} (target {target})",
                c.partitions
            ));
        }
        Ok(cmd)
    }

    fn step(&mut self, item: &mut Item<S::Command>) -> Step {
        match &item.work {
            Work::Routed { cmd, target } => {
                let (cmd, target) = (cmd.clone(), *target);
                if target == self.me {
                    self.target_step(item.id, &cmd, item.command.as_ref().expect("validated"))
                } else {
                    self.lender_step(item, &cmd, target)
                }
            }
            Work::Verdict(cmd) => {
                let cmd = cmd.clone();
                self.verdict_step(item.id, &cmd)
            }
            Work::Plan(chunk) => {
                let chunk = chunk.clone();
                self.plan_step(item, &chunk)
            }
            Work::Mark(_) => Step::Done,
        }
    }

    fn send_exchange(&mut self, to: PartitionId, ex: Exchange<S::Value>) {
        if let Some(o) = self
            .st
            .outbox
            .put(GroupSet::singleton(GroupId(to)), ex, self.sender)
        {
            self.out.push(o);
        }
    }

    fn lender_step(
        &mut self,
        item: &mut Item<S::Command>,
        c: &CommandMsg,
        target: PartitionId,
    ) -> Step {
        let id = item.id;
        if item.phase == Phase::New {
            let values: Vec<(ObjectId, S::Value)> = c
                .kind
                .objects()
                .iter()
                .filter_map(|o| self.st.store.get(o).map(|v| (*o, v.clone())))
                .collect();
            self.stats.lent += values.len() as u64;
            self.send_exchange(
                target,
                Exchange::Lend {
                    msg: id,
                    from: self.me,
                    values,
                },
            );
            item.phase = Phase::Waiting;
        }
        let returned = self.st.inbox.get_mut(&id).and_then(|slot| {
            let i = slot
                .iter()
                .position(|e| matches!(e, Exchange::Return { to, .. } if *to == self.me))?;
            Some(slot.swap_remove(i))
        });
        let Some(Exchange::Return { values, .. }) = returned else {
            return Step::Wait(vec![GroupId(target)]);
        };
        for (o, v) in values {
            match self.st.store.get_mut(&o) {
                Some(slot) => *slot = v,
                None => {
                    self.stats.double_owned += 1;
                    tracing::error!(
                        partition = self.me,
                        object = o,
                        "an object came back that this partition did not lend"
                    );
                }
            }
        }
        self.st.table.record(c.client, c.seq, c.attempt, None);
        Step::Done
    }

    fn target_step(&mut self, id: MsgId, c: &CommandMsg, cmd: &S::Command) -> Step {
        let objects = c.kind.objects().to_vec();
        let lenders: Vec<PartitionId> = c
            .partitions
            .iter()
            .copied()
            .filter(|p| *p != self.me)
            .collect();
        if lenders.is_empty() {
            let outcome = if objects.iter().all(|o| self.st.store.contains_key(o)) {
                let mut items: Vec<(ObjectId, S::Value)> = objects
                    .iter()
                    .map(|o| (*o, self.st.store.remove(o).expect("checked")))
                    .collect();
                let result = self.service.execute(cmd, &mut Objects::new(&mut items));
                self.stats.objects += items.len() as u64;
                self.stats.single += 1;
                for (o, v) in items {
                    self.st.store.insert(o, v);
                }
                self.record_hints(cmd, &objects, &result);
                gather_outcome(result, &objects)
            } else {
                Outcome::Retry
            };
            self.finish(c, outcome, true);
            return Step::Done;
        }
        let slot = self.st.inbox.get(&id);
        let missing: Vec<GroupId> = lenders
            .iter()
            .filter(|p| {
                !slot.is_some_and(|s| {
                    s.iter()
                        .any(|e| matches!(e, Exchange::Lend { from, .. } if from == *p))
                })
            })
            .map(|p| GroupId(*p))
            .collect();
        if !missing.is_empty() {
            return Step::Wait(missing);
        }
        let lends = self.st.inbox.remove(&id).unwrap_or_default();
        // Every object with where it came from (None: this partition).
        let mut all: BTreeMap<ObjectId, (Option<PartitionId>, S::Value)> = objects
            .iter()
            .filter_map(|o| self.st.store.get(o).map(|v| (*o, (None, v.clone()))))
            .collect();
        let mut returns: BTreeMap<PartitionId, Vec<(ObjectId, S::Value)>> =
            lenders.iter().map(|p| (*p, Vec::new())).collect();
        for ex in lends {
            if let Exchange::Lend { from, values, .. } = ex {
                for (o, v) in values {
                    match all.entry(o) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            self.stats.double_owned += 1;
                            tracing::error!(object = o, "two partitions lent the same object");
                            returns.entry(from).or_default().push((o, v));
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert((Some(from), v));
                        }
                    }
                }
            }
        }
        let outcome = if objects.iter().all(|o| all.contains_key(o)) {
            let (origin, mut items): (Vec<Origin>, Values<S>) =
                all.into_iter().map(|(o, (from, v))| (from, (o, v))).unzip();
            let result = self.service.execute(cmd, &mut Objects::new(&mut items));
            self.stats.objects += items.len() as u64;
            self.stats.multi += 1;
            let ok = result.is_ok();
            for ((o, v), from) in items.into_iter().zip(origin) {
                match from {
                    Some(p) => returns.entry(p).or_default().push((o, v)),
                    None if ok => {
                        self.st.store.insert(o, v);
                    }
                    None => {}
                }
            }
            self.record_hints(cmd, &objects, &result);
            gather_outcome(result, &objects)
        } else {
            for (o, (from, v)) in all {
                if let Some(p) = from {
                    returns.entry(p).or_default().push((o, v));
                }
            }
            Outcome::Retry
        };
        for (to, values) in returns {
            self.send_exchange(
                to,
                Exchange::Return {
                    msg: id,
                    to,
                    values,
                },
            );
        }
        self.finish(c, outcome, true);
        Step::Done
    }

    fn verdict_step(&mut self, id: MsgId, c: &CommandMsg) -> Step {
        let verdict = self.st.inbox.get(&id).and_then(|s| {
            s.iter().find_map(|e| match e {
                Exchange::Verdict { apply, .. } => Some(*apply),
                _ => None,
            })
        });
        let Some(apply) = verdict else {
            return Step::Wait(vec![GroupId(self.partitions)]);
        };
        if apply {
            match c.kind {
                Kind::Create(object) => {
                    match wire::decode::<S::Command>(&c.command) {
                        Ok(cmd) => {
                            let v = self.service.initial(&cmd);
                            self.own(id, object, v);
                            self.stats.created += 1;
                        }
                        Err(e) => {
                            // The oracle decoded the same bytes; this cannot differ.
                            tracing::error!(error = %e, "the oracle applied a create this replica cannot decode");
                            self.stats.rejected += 1;
                        }
                    }
                }
                Kind::Delete(object) => {
                    if self.disown(id, object).is_some() {
                        self.stats.deleted += 1;
                    }
                }
                Kind::Access(_) => {}
            }
        }
        Step::Done
    }

    fn plan_step(&mut self, item: &mut Item<S::Command>, chunk: &PlanChunk) -> Step {
        let id = item.id;
        let k = self.partitions;
        let valid = |p: PartitionId| p < k;
        if item.phase == Phase::New {
            let mut out: BTreeMap<PartitionId, Transfers<S>> = BTreeMap::new();
            for &(o, from, to) in &chunk.moves {
                if from == self.me && to != from && valid(to) {
                    let v = self.disown(id, o);
                    if v.is_some() {
                        self.stats.moves_out += 1;
                    } else {
                        self.stats.moves_null += 1;
                    }
                    out.entry(to).or_default().push((o, v));
                }
            }
            for (to, values) in out {
                self.send_exchange(
                    to,
                    Exchange::Transfer {
                        msg: id,
                        from: self.me,
                        to,
                        values,
                    },
                );
            }
            item.phase = Phase::Waiting;
        }
        let senders: BTreeSet<PartitionId> = chunk
            .moves
            .iter()
            .filter(|(_, from, to)| *to == self.me && *from != *to && valid(*from))
            .map(|(_, from, _)| *from)
            .collect();
        let slot = self.st.inbox.get(&id);
        let missing: Vec<GroupId> = senders
            .iter()
            .filter(|p| {
                !slot.is_some_and(|s| {
                    s.iter()
                        .any(|e| matches!(e, Exchange::Transfer { from, .. } if from == *p))
                })
            })
            .map(|p| GroupId(*p))
            .collect();
        if !missing.is_empty() {
            return Step::Wait(missing);
        }
        let transfers = self.st.inbox.remove(&id).unwrap_or_default();
        for ex in transfers {
            if let Exchange::Transfer { values, from, .. } = ex {
                for (o, v) in values {
                    // Only what the chunk moves here from that sender.
                    if !chunk
                        .moves
                        .binary_search_by_key(&o, |m| m.0)
                        .is_ok_and(|i| chunk.moves[i].1 == from && chunk.moves[i].2 == self.me)
                    {
                        continue;
                    }
                    match v {
                        Some(v) => {
                            self.stats.moves_in += 1;
                            self.own(id, o, v);
                        }
                        None => self.stats.moves_null += 1,
                    }
                }
            }
        }
        Step::Done
    }

    fn own(&mut self, msg: MsgId, id: ObjectId, v: S::Value) {
        if !self.st.own(id, v) {
            self.stats.double_owned += 1;
            tracing::error!(
                partition = self.me,
                object = id,
                "object arrived at a partition that owns it"
            );
        } else if self.opts.record_views {
            self.views.push((msg, id, true));
        }
    }

    fn disown(&mut self, msg: MsgId, id: ObjectId) -> Option<S::Value> {
        let v = self.st.disown(id);
        if v.is_some() && self.opts.record_views {
            self.views.push((msg, id, false));
        }
        v
    }

    fn record_hints(
        &mut self,
        cmd: &S::Command,
        objects: &[ObjectId],
        result: &Result<S::Reply, super::super::service::Need>,
    ) {
        if !self.sender || self.opts.dynastar.hint_ticks == 0 {
            return;
        }
        let kind = self.service.kind(cmd);
        let base = kind.objects();
        let mut all: Vec<ObjectId> = objects.to_vec();
        if let Err(need) = result {
            all.extend(need.0.iter().copied());
            all.sort_unstable();
            all.dedup();
        }
        let mut edges = Vec::new();
        'outer: for &b in base {
            for &o in &all {
                if o != b && (base.binary_search(&o).is_err() || b < o) {
                    edges.push((b, o));
                    if edges.len() >= EDGES_PER_COMMAND_MAX {
                        break 'outer;
                    }
                }
            }
        }
        self.hints.record(objects, &edges);
    }

    fn reply(&mut self, c: &CommandMsg, outcome: Outcome<S::Reply>) {
        reply_to(&mut self.out, c, outcome);
    }

    fn finish(&mut self, c: &CommandMsg, outcome: Outcome<S::Reply>, answers: bool) {
        let (table, out, stats) = (&mut self.st.table, &mut self.out, &mut self.stats);
        finish_command(table, out, stats, c, outcome, answers);
    }

    /// A DynaStar partition does not serve reads off the log (a placement chunk may be
    /// moving the objects; not built).
    fn serves_reads(&self) -> bool {
        false
    }

    fn serve_read(&mut self, c: &CommandMsg) {
        crate::partitioned::common::refuse_read::<S::Reply>(&mut self.out, c);
    }
}

partition_core!(partition DynaPartition);
