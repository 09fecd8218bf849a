//! The server proxy of one replica of a partition (sans-IO).
//!
//! It executes the commands its partition delivers, in delivery order, one at a time:
//!
//! - **Single-partition access.** Runs on the partition's own objects. In DS-SMR an object
//!   the partition does not own means the client's information was stale: `retry` (nothing
//!   changes). In S-SMR placement is static, so a missing object does not exist: `NotFound`.
//! - **Multi-partition access** (S-SMR, and the DS-SMR fallback). Each destination partition
//!   sends the others the objects of the command it owns ([`Exchange::Values`]: both its
//!   signal and its variables), waits for every other destination's values, then executes the
//!   command on copies of all the objects and keeps the new values of the objects it owns.
//!   If an object exists nowhere, every partition answers `NotFound` (the fix for the
//!   fallback's "variable that exists nowhere"). Replicas of the lowest destination reply.
//! - **Move** (DS-SMR). The source sends the object's value, or `None` if it does not own it,
//!   and drops it; the destination blocks until the value arrives (reference notes, d'.5).
//! - **Create / delete** (DS-SMR). A create waits for the oracle's verdict and installs the
//!   object if it is `ok`; a delete drops the object if owned. The oracle answers the client.
//!   In S-SMR both run locally and the partition answers.
//!
//! Exchanges travel by reliable multicast from one designated replica of each partition (the
//! lowest node id). Every replica keeps what it would have sent (`Outbox`); a replica that
//! waits longer than `pull_ticks` for an exchange asks every replica of the partition it waits
//! for, so a crashed designated sender or a restarted receiver (which replays the logs from
//! the start and needs every exchange again) still makes progress.
//!
//! **Checkpoints.** A host that runs its own merge marks where a checkpoint request lies in
//! the partition's stream ([`PartitionServer::mark_checkpoint`]); when the mark reaches the
//! head of the queue (everything delivered before it handled, nothing after it begun) the
//! server records its state ([`PartitionServer::snapshot`]): objects, client table, the
//! exchanges that already arrived for later commands, what it sent (its outbox, for pulls),
//! recent deliveries, counters and views. [`PartitionServer::restore`] rebuilds a replica
//! from those bytes (see [`super::replica`]).
//!
//! The partition logic knows nothing about threads: a host delivers messages and ticks and
//! performs the [`Output`]s (see [`super::replica`]); a P-SMR-style host with several workers
//! per partition can drive it the same way.

use super::attempts::{AttemptTable, Seen};
use super::common::Output;
use super::common::{
    check_partition_snapshot, check_restored_hash, decode_exchange, decode_snapshot,
    partition_core, reply_to, PartitionState,
};
use super::msg::{CommandMsg, Exchange, Multicast, Outcome, Peer};
use super::service::{value_hash, Kind, ObjectId, Objects, PartitionId, PartitionedService};
use super::{Scheme, ServerOptions};
use crate::checkpoint::CheckpointError;
use crate::hash::Fnv64;
use crate::wire::{self, AppMsg};
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Counters of one partition replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Delivered multicasts fully handled (equal at replicas that handled the same stream).
    pub handled: u64,
    /// Accesses executed on this partition alone.
    pub single: u64,
    /// Multi-partition accesses executed (S-SMR, or the DS-SMR fallback).
    pub multi: u64,
    pub fallbacks: u64,
    /// Accesses answered `retry` (DS-SMR: an object was elsewhere).
    pub retries: u64,
    /// Accesses answered `retry(gamma)`.
    pub gathers: u64,
    /// Objects given to the service's `execute` (work done, for cost models).
    pub objects: u64,
    pub moves_in: u64,
    pub moves_out: u64,
    /// Moves of an object the source did not own (null moves).
    pub moves_null: u64,
    pub created: u64,
    pub deleted: u64,
    /// Copies of a handled attempt (resends) answered from the client table.
    pub duplicates: u64,
    pub rejected: u64,
    pub pulls_sent: u64,
    pub pulls_answered: u64,
    /// Times an object arrived that this partition already owned, or two partitions sent the
    /// same object for one command: a broken single-ownership invariant (must stay 0).
    pub double_owned: u64,
    /// DynaStar: objects lent to a command's target.
    pub lent: u64,
    /// DynaStar: placement chunks applied.
    pub plan_chunks: u64,
    /// Combined mode: `handled` of each worker of the replica, by worker index (empty
    /// otherwise; [`ServerStats::absorb`] leaves it alone).
    pub worker_handled: Vec<u64>,
    /// Combined mode: the CPU each worker's thread is pinned to
    /// ([`super::ServerOptions::pin_cpus`]; `None`: not pinned), by worker index.
    pub worker_cpus: Vec<Option<usize>>,
}

/// Counts the outcome, records it in the client table (with the outcome only where this
/// replica answers the command) and, if it answers, replies: how S-SMR, DS-SMR and DynaStar
/// partitions end a command.
pub(crate) fn finish_command<R: Clone + Serialize>(
    table: &mut AttemptTable<Outcome<R>>,
    out: &mut Vec<Output>,
    stats: &mut ServerStats,
    c: &CommandMsg,
    outcome: Outcome<R>,
    answers: bool,
) {
    match &outcome {
        Outcome::Retry => stats.retries += 1,
        Outcome::Gather(_) => stats.gathers += 1,
        Outcome::Rejected(_) => stats.rejected += 1,
        _ => {}
    }
    if answers {
        table.record(c.client, c.seq, c.attempt, Some(outcome.clone()));
        reply_to(out, c, outcome);
    } else {
        table.record(c.client, c.seq, c.attempt, None);
    }
}

impl ServerStats {
    /// Adds `other`'s counts to these (a combined partition sums its workers').
    pub fn absorb(&mut self, other: &ServerStats) {
        let ServerStats {
            handled,
            single,
            multi,
            fallbacks,
            retries,
            gathers,
            objects,
            moves_in,
            moves_out,
            moves_null,
            created,
            deleted,
            duplicates,
            rejected,
            pulls_sent,
            pulls_answered,
            double_owned,
            lent,
            plan_chunks,
            worker_handled: _,
            worker_cpus: _,
        } = other;
        self.handled += handled;
        self.single += single;
        self.multi += multi;
        self.fallbacks += fallbacks;
        self.retries += retries;
        self.gathers += gathers;
        self.objects += objects;
        self.moves_in += moves_in;
        self.moves_out += moves_out;
        self.moves_null += moves_null;
        self.created += created;
        self.deleted += deleted;
        self.duplicates += duplicates;
        self.rejected += rejected;
        self.pulls_sent += pulls_sent;
        self.pulls_answered += pulls_answered;
        self.double_owned += double_owned;
        self.lent += lent;
        self.plan_chunks += plan_chunks;
    }
}

#[derive(Debug)]
enum Phase {
    Fresh,
    /// Waiting for exchanges (the values were sent).
    Waiting,
}

/// What a queue item is: a delivered multicast, or the place of a checkpoint request.
#[derive(Debug)]
enum Work {
    Msg(Multicast),
    Mark(u64),
}

#[derive(Debug)]
struct Item<C> {
    id: MsgId,
    msg: Work,
    phase: Phase,
    command: Option<C>,
}

/// A partition replica's state at a checkpoint (see the module docs), as decoded.
#[derive(Deserialize)]
struct Snapshot<V, R> {
    partition: PartitionId,
    state: PartitionState<V, R>,
    stats: ServerStats,
    views: Vec<(MsgId, u64)>,
    /// The state hash when it was taken (checked on restore).
    hash: u64,
}

/// [`Snapshot`] as encoded, borrowing the server's state (same layout).
#[derive(Serialize)]
struct SnapshotRef<'a, V, R> {
    partition: PartitionId,
    state: &'a PartitionState<V, R>,
    stats: &'a ServerStats,
    views: &'a [(MsgId, u64)],
    hash: u64,
}

enum Step {
    Done,
    /// Waiting for an exchange from these groups.
    Blocked(Vec<GroupId>),
}

/// One replica of partition `me`.
pub struct PartitionServer<S: PartitionedService> {
    service: Arc<S>,
    opts: ServerOptions,
    cfg: Arc<ClusterConfig>,
    me: PartitionId,
    node: NodeId,
    partitions: u32,
    /// Whether this replica sends the partition's exchanges.
    sender: bool,
    /// Objects, client table, exchanges, finished deliveries, outbox, digest.
    st: PartitionState<S::Value, S::Reply>,
    queue: VecDeque<Item<S::Command>>,
    /// The delivery the head waits on, since when, last pull.
    blocked: Option<(MsgId, Vec<GroupId>, u64, u64)>,
    now: u64,
    out: Vec<Output>,
    pub stats: ServerStats,
    views: Vec<(MsgId, u64)>,
    /// Checkpoints recorded at marks and not yet taken by the host: round, state hash and
    /// bytes.
    snapshots: Vec<(u64, u64, Vec<u8>)>,
}

impl<S: PartitionedService> PartitionServer<S> {
    /// Replica `node` of partition `me` (of `partitions`), with the service's preloaded
    /// objects that [`PartitionedService::place`] puts here.
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
        PartitionServer {
            st,
            service,
            opts,
            cfg,
            me,
            node,
            partitions,
            sender,
            queue: VecDeque::new(),
            blocked: None,
            now: 0,
            out: Vec::new(),
            stats: ServerStats::default(),
            views: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    /// A replica rebuilt from [`PartitionServer::snapshot`]'s bytes (taken by a replica of
    /// the same partition); the arguments are [`PartitionServer::new`]'s.
    pub fn restore(
        service: Arc<S>,
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        me: PartitionId,
        partitions: u32,
        opts: ServerOptions,
        bytes: &[u8],
    ) -> Result<Self, CheckpointError> {
        let snap: Snapshot<S::Value, S::Reply> = decode_snapshot(bytes, "partition snapshot")?;
        check_partition_snapshot(snap.partition, me)?;
        let mut s = Self::new(service, cfg, node, me, partitions, opts);
        s.st = snap.state.restored();
        s.stats = snap.stats;
        s.views = snap.views;
        check_restored_hash(s.state_hash(), snap.hash)?;
        Ok(s)
    }

    /// This replica's state, encoded (everything delivered so far handled: call it when the
    /// queue is empty, or let a mark reach the head, see [`PartitionServer::mark_checkpoint`]).
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotRef {
            partition: self.me,
            state: &self.st,
            stats: &self.stats,
            views: &self.views,
            hash: self.state_hash(),
        };
        wire::encode(&snap)
    }

    /// Marks the place of checkpoint request `round` in the stream: when everything delivered
    /// before it is handled the server records a snapshot ([`PartitionServer::take_snapshots`]).
    pub fn mark_checkpoint(&mut self, round: u64) {
        self.queue.push_back(Item {
            id: MsgId {
                sender: NodeId(u32::MAX),
                epoch: 0,
                seq: round,
            },
            msg: Work::Mark(round),
            phase: Phase::Fresh,
            command: None,
        });
    }

    /// Snapshots recorded at marks since the last call: round, state hash
    /// ([`PartitionServer::state_hash`]) and bytes.
    pub fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
        out.append(&mut self.snapshots);
    }

    pub fn partition(&self) -> PartitionId {
        self.me
    }

    /// Emits every exchange, as the designated sender does (a combined-mode worker: its host
    /// hands the exchanges for its own partition's other workers over in memory at every
    /// replica, and sends the others only from the designated replica).
    pub(crate) fn emit_all_exchanges(&mut self) {
        self.sender = true;
    }

    /// Whether delivery `msg` waits in the queue (not yet handled).
    pub fn expects(&self, msg: &MsgId) -> bool {
        self.queue.iter().any(|i| i.id == *msg)
    }

    /// An atomically delivered command ([`crate::wire::FeedMsg::Command`]'s body).
    pub fn deliver(&mut self, id: MsgId, payload: &[u8]) {
        match wire::decode::<Multicast>(payload) {
            Ok(msg) => self.queue.push_back(Item {
                id,
                msg: Work::Msg(msg),
                phase: Phase::Fresh,
                command: None,
            }),
            Err(e) => {
                self.stats.rejected += 1;
                tracing::warn!(partition = self.me, error = %e, "undecodable multicast dropped");
            }
        }
    }

    /// A reliably delivered exchange (from another partition's replica or the oracle).
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
        // A partition's own values come back in answers to pulls from a replica that holds
        // several cells' exchanges for one delivery (combined mode): not an exchange to use.
        if !matches!(&ex, Exchange::Values { from, .. } if *from == self.me) {
            self.st.keep_exchange(ex);
        }
    }

    /// Advances time and pulls what a blocked command has waited for too long.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        if let Some((msg, groups, _, last)) = &mut self.blocked {
            if now >= *last + self.opts.pull_ticks {
                *last = now;
                let pull = AppMsg::peer(&Peer::<S::Value>::Pull {
                    msg: *msg,
                    requester: self.node,
                });
                for g in groups.iter() {
                    for &n in self.cfg.members(*g) {
                        if n != self.node {
                            self.out.push(Output::Send(n, pull.clone()));
                        }
                    }
                }
                self.stats.pulls_sent += 1;
            }
        }
    }

    /// Handles delivered commands until one must wait.
    pub fn run(&mut self) {
        while let Some(mut item) = self.queue.pop_front() {
            if let Work::Mark(round) = item.msg {
                let snap = self.snapshot();
                self.snapshots.push((round, self.state_hash(), snap));
                self.blocked = None;
                continue;
            }
            match self.handle(&mut item) {
                Step::Done => {
                    self.stats.handled += 1;
                    self.st.finished.insert(item.id);
                    self.st.inbox.remove(&item.id);
                    self.blocked = None;
                }
                Step::Blocked(groups) => {
                    if self.blocked.as_ref().is_none_or(|b| b.0 != item.id) {
                        self.blocked = Some((item.id, groups, self.now, self.now));
                    }
                    self.queue.push_front(item);
                    break;
                }
            }
        }
    }

    /// What to perform.
    pub fn take_outputs(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.out);
    }

    /// What the head of the queue waits for: the delivery, the groups whose exchange is
    /// missing, and since when (ticks).
    pub fn waiting_on(&self) -> Option<(MsgId, &[GroupId], u64)> {
        self.blocked
            .as_ref()
            .map(|(m, g, since, _)| (*m, g.as_slice(), *since))
    }

    /// A short description of the head of the queue (debugging).
    pub fn head(&self) -> Option<String> {
        self.queue.front().map(|i| {
            format!("{:?} {:?}", i.id, i.msg)
                .chars()
                .take(300)
                .collect()
        })
    }

    /// Delivered commands not yet handled.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// The objects this replica owns.
    pub fn objects(&self) -> impl Iterator<Item = (ObjectId, &S::Value)> + '_ {
        self.st.store.iter().map(|(k, v)| (*k, v))
    }

    pub fn owns(&self, id: ObjectId) -> bool {
        self.st.store.contains_key(&id)
    }

    /// The membership digest (XOR of [`member_mix`] over owned objects).
    pub fn digest(&self) -> u64 {
        self.st.digest
    }

    /// The membership digest after each membership change, by delivery (when
    /// `record_views`): compared with the oracle's view of this partition in tests.
    pub fn views(&self) -> &[(MsgId, u64)] {
        &self.views
    }

    /// A hash of the replicated state: objects and client table.
    pub fn state_hash(&self) -> u64 {
        let mut h = Fnv64::new();
        h.word(u64::from(self.me));
        for (k, v) in &self.st.store {
            h.word(*k).word(value_hash(v));
        }
        h.get() ^ self.st.table.digest().rotate_left(17)
    }

    fn view(&mut self, id: MsgId) {
        if self.opts.record_views {
            self.views.push((id, self.st.digest));
        }
    }

    fn own(&mut self, id: ObjectId, v: S::Value) {
        if !self.st.own(id, v) {
            self.stats.double_owned += 1;
            tracing::error!(
                partition = self.me,
                object = id,
                "object arrived at a partition that owns it"
            );
        }
    }

    fn disown(&mut self, id: ObjectId) -> Option<S::Value> {
        self.st.disown(id)
    }

    fn reply(&mut self, c: &CommandMsg, outcome: Outcome<S::Reply>) {
        reply_to(&mut self.out, c, outcome);
    }

    fn finish(&mut self, c: &CommandMsg, outcome: Outcome<S::Reply>, answers: bool) {
        let (table, out, stats) = (&mut self.st.table, &mut self.out, &mut self.stats);
        finish_command(table, out, stats, c, outcome, answers);
    }

    fn handle(&mut self, item: &mut Item<S::Command>) -> Step {
        let Item {
            id,
            msg,
            phase,
            command,
        } = item;
        match msg {
            Work::Mark(_)
            | Work::Msg(Multicast::Consult { .. })
            | Work::Msg(Multicast::Routed { .. })
            | Work::Msg(Multicast::Plan(_))
            | Work::Msg(Multicast::Hints { .. })
            | Work::Msg(Multicast::Repartition) => Step::Done,
            Work::Msg(Multicast::Move { object, from, to }) => {
                self.on_move(*id, *object, *from, *to)
            }
            Work::Msg(Multicast::Command(c)) => self.on_command(*id, phase, command, c),
        }
    }

    fn on_move(&mut self, id: MsgId, object: ObjectId, from: PartitionId, to: PartitionId) -> Step {
        if self.opts.scheme != Scheme::Dssmr || from == to || to >= self.partitions {
            return Step::Done;
        }
        if self.me == from {
            let value = self.disown(object);
            if value.is_some() {
                self.stats.moves_out += 1;
            } else {
                self.stats.moves_null += 1;
            }
            let ex = Exchange::MoveValue { msg: id, value };
            if let Some(o) = self
                .st
                .outbox
                .put(GroupSet::singleton(GroupId(to)), ex, self.sender)
            {
                self.out.push(o);
            }
            self.view(id);
            Step::Done
        } else if self.me == to {
            let Some(slot) = self.st.inbox.get_mut(&id) else {
                return Step::Blocked(vec![GroupId(from)]);
            };
            let Some(i) = slot
                .iter()
                .position(|e| matches!(e, Exchange::MoveValue { .. }))
            else {
                return Step::Blocked(vec![GroupId(from)]);
            };
            if let Exchange::MoveValue { value, .. } = slot.swap_remove(i) {
                match value {
                    Some(v) => {
                        self.stats.moves_in += 1;
                        self.own(object, v);
                    }
                    None => self.stats.moves_null += 1,
                }
            }
            self.view(id);
            Step::Done
        } else {
            Step::Done
        }
    }

    /// Decodes the command and checks that it is what the message says it is.
    fn validate(&self, c: &CommandMsg) -> Result<S::Command, String> {
        let cmd: S::Command =
            wire::decode(&c.command).map_err(|e| format!("undecodable command: {e}"))?;
        let kind = self.service.kind(&cmd);
        let ok = match (&kind, &c.kind) {
            (Kind::Access(base), Kind::Access(all)) => {
                all.windows(2).all(|w| w[0] < w[1])
                    && base.iter().all(|o| all.binary_search(o).is_ok())
            }
            (a, b) => a == b,
        };
        if !ok {
            return Err(format!(
                "the command is a {kind:?}, the message says {:?}",
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
        if self.opts.scheme == Scheme::Ssmr {
            // Static placement: the client must have multicast to every object's partition.
            if let Some(o) = c.kind.objects().iter().find(|o| {
                c.partitions
                    .binary_search(&self.service.place(**o, self.partitions))
                    .is_err()
            }) {
                return Err(format!(
                    "object {o} is placed outside partitions {:?}",
                    c.partitions
                ));
            }
        }
        Ok(cmd)
    }

    fn on_command(
        &mut self,
        id: MsgId,
        phase: &mut Phase,
        command: &mut Option<S::Command>,
        c: &CommandMsg,
    ) -> Step {
        if !c.partitions.contains(&self.me) {
            return Step::Done;
        }
        let dssmr = self.opts.scheme == Scheme::Dssmr;
        let multi = matches!(c.kind, Kind::Access(_)) && (c.partitions.len() > 1 || c.fallback);
        // Who answers: DS-SMR creates and deletes are answered by the oracle; multi-partition
        // accesses by the lowest destination; the rest by the partition.
        let answers = match c.kind {
            Kind::Create(_) | Kind::Delete(_) if dssmr => false,
            _ if multi => c.partitions.first() == Some(&self.me),
            _ => true,
        };
        if dssmr && matches!(c.kind, Kind::Create(_) | Kind::Delete(_)) {
            return self.on_verdict(id, c);
        }
        if let Phase::Fresh = phase {
            match self.st.table.check(c.client, c.seq, c.attempt, c.floor) {
                Seen::New => {}
                Seen::Again(o) => {
                    self.stats.duplicates += 1;
                    if let Some(o) = o {
                        self.reply(c, o);
                    }
                    return Step::Done;
                }
                Seen::Stale | Seen::Forgotten => {
                    self.stats.duplicates += 1;
                    return Step::Done;
                }
            }
            let cmd = match self.validate(c) {
                Ok(cmd) => cmd,
                Err(e) => {
                    self.finish(c, Outcome::Rejected(e), answers);
                    return Step::Done;
                }
            };
            match &c.kind {
                Kind::Access(objects) if !multi => {
                    let outcome = self.single(&cmd, objects, dssmr);
                    self.finish(c, outcome, answers);
                    return Step::Done;
                }
                Kind::Access(objects) => {
                    let values: Vec<(ObjectId, S::Value)> = objects
                        .iter()
                        .filter_map(|o| self.st.store.get(o).map(|v| (*o, v.clone())))
                        .collect();
                    let others: GroupSet = c
                        .partitions
                        .iter()
                        .filter(|p| **p != self.me)
                        .map(|p| GroupId(*p))
                        .collect();
                    if !others.is_empty() {
                        let ex = Exchange::Values {
                            msg: id,
                            from: self.me,
                            values,
                        };
                        if let Some(o) = self.st.outbox.put(others, ex, self.sender) {
                            self.out.push(o);
                        }
                    }
                }
                Kind::Create(object) if !dssmr => {
                    let outcome = if self.st.store.contains_key(object) {
                        Outcome::AlreadyExists
                    } else {
                        self.own(*object, self.service.initial(&cmd));
                        self.stats.created += 1;
                        Outcome::Created
                    };
                    self.finish(c, outcome, answers);
                    return Step::Done;
                }
                Kind::Delete(object) => {
                    if self.disown(*object).is_some() {
                        self.stats.deleted += 1;
                    }
                    self.finish(c, Outcome::Deleted, answers);
                    return Step::Done;
                }
                Kind::Create(_) => {
                    unreachable!("S-SMR creates are handled above, DS-SMR ones by verdict")
                }
            }
            *command = Some(cmd);
            *phase = Phase::Waiting;
        }
        // Waiting for exchanges.
        match &c.kind {
            Kind::Access(objects) => {
                let slot = self.st.inbox.get(&id);
                let missing: Vec<GroupId> = c
                    .partitions
                    .iter()
                    .filter(|p| **p != self.me)
                    .filter(|p| {
                        !slot.is_some_and(|s| {
                            s.iter()
                                .any(|e| matches!(e, Exchange::Values { from, .. } if from == *p))
                        })
                    })
                    .map(|p| GroupId(*p))
                    .collect();
                if !missing.is_empty() {
                    return Step::Blocked(missing);
                }
                let received = self.st.inbox.remove(&id).unwrap_or_default();
                let cmd = command.take().expect("validated");
                let outcome = self.multi(&cmd, objects, received);
                self.stats.multi += 1;
                if c.fallback {
                    self.stats.fallbacks += 1;
                }
                self.finish(c, outcome, answers);
                Step::Done
            }
            Kind::Create(_) | Kind::Delete(_) => Step::Done,
        }
    }

    /// DS-SMR creates and deletes: wait for the oracle's verdict on this copy and follow it.
    fn on_verdict(&mut self, id: MsgId, c: &CommandMsg) -> Step {
        let verdict = self.st.inbox.get(&id).and_then(|s| {
            s.iter().find_map(|e| match e {
                Exchange::Verdict { apply, .. } => Some(*apply),
                _ => None,
            })
        });
        let Some(apply) = verdict else {
            return Step::Blocked(vec![GroupId(self.partitions)]);
        };
        if apply {
            match c.kind {
                Kind::Create(object) => match self.validate(c) {
                    Ok(cmd) => {
                        let v = self.service.initial(&cmd);
                        self.own(object, v);
                        self.stats.created += 1;
                    }
                    Err(e) => {
                        // The oracle validated the same message; this cannot differ.
                        tracing::error!(error = %e, "the oracle applied a create this replica refuses");
                        self.stats.rejected += 1;
                    }
                },
                Kind::Delete(object) => {
                    if self.disown(object).is_some() {
                        self.stats.deleted += 1;
                    }
                }
                Kind::Access(_) => {}
            }
        }
        self.view(id);
        Step::Done
    }

    /// S-SMR and DS-SMR partitions serve reads off the log ([`super::reads`]).
    fn serves_reads(&self) -> bool {
        true
    }

    /// Answers `c`, a read off the log, from the state now, on copies of its objects (see
    /// [`super::reads`]): nothing replicated changes, the client table included.
    fn serve_read(&mut self, c: &CommandMsg) {
        let outcome = self.read_outcome(c);
        reply_to(&mut self.out, c, outcome);
    }

    fn read_outcome(&self, c: &CommandMsg) -> Outcome<S::Reply> {
        let Kind::Access(objects) = &c.kind else {
            return Outcome::Retry;
        };
        if c.partitions != [self.me] || c.fallback {
            return Outcome::Retry;
        }
        let cmd = match self.validate(c) {
            Ok(cmd) => cmd,
            Err(e) => return Outcome::Rejected(e),
        };
        if !self.service.read_only(&cmd) {
            return Outcome::Rejected(format!("{cmd:?} is not read-only; it goes through the log"));
        }
        let mut items = Vec::with_capacity(objects.len());
        for o in objects {
            match self.st.store.get(o) {
                Some(v) => items.push((*o, v.clone())),
                // DS-SMR: not here (a stale cache, or a move): ordered, the oracle knows.
                None if self.opts.scheme == Scheme::Dssmr => return Outcome::Retry,
                // S-SMR: placement is static, so an object missing here does not exist.
                None => return Outcome::NotFound,
            }
        }
        let result = self.service.execute(&cmd, &mut Objects::new(&mut items));
        gather_outcome(result, objects)
    }

    fn single(&mut self, cmd: &S::Command, objects: &[ObjectId], dssmr: bool) -> Outcome<S::Reply> {
        if objects.iter().any(|o| !self.st.store.contains_key(o)) {
            return if dssmr {
                Outcome::Retry
            } else {
                Outcome::NotFound
            };
        }
        let mut items: Vec<(ObjectId, S::Value)> = objects
            .iter()
            .map(|o| (*o, self.st.store.remove(o).expect("checked")))
            .collect();
        let result = self.service.execute(cmd, &mut Objects::new(&mut items));
        self.stats.objects += items.len() as u64;
        for (o, v) in items {
            self.st.store.insert(o, v);
        }
        self.stats.single += 1;
        gather_outcome(result, objects)
    }

    fn multi(
        &mut self,
        cmd: &S::Command,
        objects: &[ObjectId],
        received: Vec<Exchange<S::Value>>,
    ) -> Outcome<S::Reply> {
        let mut all: BTreeMap<ObjectId, S::Value> = objects
            .iter()
            .filter_map(|o| self.st.store.get(o).map(|v| (*o, v.clone())))
            .collect();
        for ex in received {
            if let Exchange::Values { values, .. } = ex {
                for (o, v) in values {
                    if all.insert(o, v).is_some() {
                        self.stats.double_owned += 1;
                        tracing::error!(object = o, "two partitions sent the same object");
                    }
                }
            }
        }
        if objects.iter().any(|o| !all.contains_key(o)) {
            return Outcome::NotFound;
        }
        let mut items: Vec<(ObjectId, S::Value)> = all
            .into_iter()
            .filter(|(o, _)| objects.binary_search(o).is_ok())
            .collect();
        let result = self.service.execute(cmd, &mut Objects::new(&mut items));
        self.stats.objects += items.len() as u64;
        if result.is_ok() {
            for (o, v) in items {
                if let Some(slot) = self.st.store.get_mut(&o) {
                    *slot = v;
                }
            }
        }
        gather_outcome(result, objects)
    }
}

partition_core!(partition PartitionServer);

/// What a command's execution comes to: its reply, or the further objects it needs (those it
/// does not have yet, sorted and without repeats), or a rejection if it asks again for objects
/// it already has.
pub(crate) fn gather_outcome<R>(
    result: Result<R, super::service::Need>,
    objects: &[ObjectId],
) -> Outcome<R> {
    match result {
        Ok(r) => Outcome::Done(r),
        Err(need) => {
            let mut more: Vec<ObjectId> = need
                .0
                .into_iter()
                .filter(|o| objects.binary_search(o).is_err())
                .collect();
            more.sort_unstable();
            more.dedup();
            if more.is_empty() {
                Outcome::Rejected("the service asked for objects the command already has".into())
            } else {
                Outcome::Gather(more)
            }
        }
    }
}

/// Whether two exchanges fill the same slot (a duplicate copy).
pub(crate) fn same_slot<V>(a: &Exchange<V>, b: &Exchange<V>) -> bool {
    match (a, b) {
        (Exchange::Values { from: x, .. }, Exchange::Values { from: y, .. }) => x == y,
        (Exchange::MoveValue { .. }, Exchange::MoveValue { .. }) => true,
        (Exchange::Verdict { .. }, Exchange::Verdict { .. }) => true,
        (Exchange::Lend { from: x, .. }, Exchange::Lend { from: y, .. }) => x == y,
        (Exchange::Return { to: x, .. }, Exchange::Return { to: y, .. }) => x == y,
        (Exchange::Transfer { from: x, .. }, Exchange::Transfer { from: y, .. }) => x == y,
        _ => false,
    }
}
