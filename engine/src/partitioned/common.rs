//! What partition and oracle replicas share: the [`PartitionCore`] seam the replica host drives, its [`Output`]s, and their bookkeeping.

use super::attempts::AttemptTable;
use super::msg::{CommandMsg, Exchange, Outcome, Peer, ToClient};
use super::service::{member_mix, ObjectId, PartitionId, PartitionedService};
use crate::checkpoint::CheckpointError;
use crate::wire::{AppMsg, ClientId};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What a replica core asks its host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Reliably multicast to the members of these groups.
    Rmcast(GroupSet, Bytes),
    /// Send point to point (to a client, or to another replica).
    Send(NodeId, Bytes),
    /// Atomically multicast (DynaStar: hints to the oracle, placements from it).
    Multicast(GroupSet, Bytes),
}

/// The exchanges a replica produced, kept so that replicas that missed them can pull them
/// (a restarted replica replaying the logs, or a receiver whose designated sender crashed).
/// Bounded: the oldest go first. Without checkpoints a replica that restarts replays the
/// logs from the start, so a bound this small makes very long-lived deployments depend on the
/// designated senders staying up; checkpoints (recovery issue) lift that. Part of a
/// replica's checkpoint (a restored replica answers the pulls its peer would have).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outbox<V> {
    max: usize,
    order: VecDeque<MsgId>,
    items: BTreeMap<MsgId, Vec<(GroupSet, Exchange<V>)>>,
}

impl<V: Clone + Serialize> Outbox<V> {
    pub fn new(max: usize) -> Self {
        Outbox {
            max: max.max(1),
            order: VecDeque::new(),
            items: BTreeMap::new(),
        }
    }

    /// Records `ex` for `dests`; returns the rmcast to perform if `send`.
    pub fn put(&mut self, dests: GroupSet, ex: Exchange<V>, send: bool) -> Option<Output> {
        let msg = ex.msg();
        let out =
            send.then(|| Output::Rmcast(dests.clone(), Bytes::from(crate::wire::encode(&ex))));
        let slot = self.items.entry(msg).or_default();
        if slot.is_empty() {
            self.order.push_back(msg);
        }
        slot.push((dests, ex));
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.items.remove(&old);
            }
        }
        out
    }

    /// Answers to a pull for `msg` from `requester`.
    pub fn answer(&self, msg: MsgId, requester: NodeId, out: &mut Vec<Output>) -> bool {
        let Some(list) = self.items.get(&msg) else {
            return false;
        };
        for (_, ex) in list {
            let body = Peer::Answer(ex.clone());
            out.push(Output::Send(requester, crate::wire::AppMsg::peer(&body)));
        }
        true
    }
}

/// Recently finished deliveries, so late copies of their exchanges are dropped instead of
/// waiting in the inbox forever. Bounded. Part of a partition replica's checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recent {
    max: usize,
    order: VecDeque<MsgId>,
    set: FxHashSet<MsgId>,
}

impl Recent {
    pub fn new(max: usize) -> Self {
        Recent {
            max: max.max(1),
            order: VecDeque::new(),
            set: FxHashSet::default(),
        }
    }

    pub fn insert(&mut self, msg: MsgId) {
        if self.set.insert(msg) {
            self.order.push_back(msg);
            while self.order.len() > self.max {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, msg: &MsgId) -> bool {
        self.set.contains(msg)
    }
}

/// The protocol logic of one replica of a scale-out group (see [`super::replica`]).
///
/// The host delivers the group's commands in delivery order ([`PartitionCore::deliver`]),
/// marks where checkpoint requests lie in that order ([`PartitionCore::mark_checkpoint`]),
/// hands over exchanges and peer messages, ticks it and lets it run, then performs its
/// [`Output`]s. A core records a snapshot for a mark once everything delivered before it is
/// handled and nothing after it has begun.
pub trait PartitionCore: Send + Sized + 'static {
    /// The group whose replicas run this core (a partition, or the oracle's group).
    fn group(&self) -> u32;
    /// Called once, when the node starts, with what wakes the node's loop from another
    /// thread (a core that runs threads of its own keeps it).
    fn start(&mut self, _waker: &groups::runtime::Waker) {}
    /// A delivered command ([`crate::wire::FeedMsg::Command`]'s body).
    fn deliver(&mut self, id: MsgId, body: &[u8]);
    /// A delivered command with the groups it was multicast to (`body` shares the
    /// delivery's buffer); a core hosting several groups' parts routes by them. By default,
    /// [`PartitionCore::deliver`].
    fn deliver_to(&mut self, id: MsgId, _dests: &GroupSet, body: bytes::Bytes) {
        self.deliver(id, &body)
    }
    /// A reliably delivered exchange from another group.
    fn exchange(&mut self, _payload: &[u8]) {}
    /// A reliably delivered exchange with the groups it was sent to. By default,
    /// [`PartitionCore::exchange`].
    fn exchange_to(&mut self, _dests: &GroupSet, payload: &[u8]) {
        self.exchange(payload)
    }
    /// A message from another replica ([`crate::wire::AppMsg::Peer`]'s body).
    fn peer(&mut self, body: &[u8]);
    /// Advances time (ticks).
    fn tick(&mut self, _now: u64) {}
    /// Handles delivered commands until one must wait.
    fn run(&mut self) {}
    /// What to perform.
    fn take_outputs(&mut self, out: &mut Vec<Output>);
    /// Marks the place of checkpoint request `round` in the delivery order.
    fn mark_checkpoint(&mut self, round: u64);
    /// Snapshots recorded at marks since the last call: round, state hash, bytes.
    fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>);
    /// A core like this one rebuilt from a snapshot of this group's (refused, with a typed
    /// error, if it is not this group's or does not restore to its own hash).
    fn restored(&self, snapshot: &[u8]) -> Result<Self, CheckpointError>;
    /// Delivered commands fully handled (equal at replicas that handled the same stream).
    fn handled(&self) -> u64;
    /// Delivered commands waiting.
    fn backlog(&self) -> usize {
        0
    }
    /// A hash of the replicated state.
    fn state_hash(&self) -> u64;
    /// Whether the core answers reads off the log ([`super::reads`]); the host refuses the
    /// others' at once ([`PartitionCore::serve_read`]).
    fn serves_reads(&self) -> bool {
        false
    }
    /// Answers `c`, a read off the log, from the core's state now (the host calls it once
    /// everything delivered below the read's index is handled, see [`super::reads`]), into
    /// its outputs; it changes nothing replicated. A core that does not serve reads answers
    /// [`Outcome::Retry`] ([`PartitionCore::refuse_read`]).
    fn serve_read(&mut self, c: &CommandMsg) {
        self.refuse_read(c)
    }
    /// Answers the read off the log `c` [`Outcome::Retry`]: the client then orders the
    /// command through the logs.
    fn refuse_read(&mut self, c: &CommandMsg);
}

/// Decodes a reliably delivered exchange for a replica of partition `me`; an undecodable one
/// is logged and dropped.
pub(crate) fn decode_exchange<V: serde::de::DeserializeOwned>(
    payload: &[u8],
    me: PartitionId,
) -> Option<Exchange<V>> {
    match crate::wire::decode::<Exchange<V>>(payload) {
        Ok(ex) => Some(ex),
        Err(e) => {
            tracing::warn!(partition = me, error = %e, "undecodable exchange dropped");
            None
        }
    }
}

/// A point-to-point message from another replica of partition `me`: a pull is answered from
/// `outbox` into `out` (counted in `answered`); an answer's exchange is returned for the
/// replica to take in; an undecodable message is logged and dropped.
pub(crate) fn on_peer<V: Clone + Serialize + serde::de::DeserializeOwned>(
    payload: &[u8],
    me: PartitionId,
    outbox: &Outbox<V>,
    out: &mut Vec<Output>,
    answered: &mut u64,
) -> Option<Exchange<V>> {
    match crate::wire::decode::<Peer<V>>(payload) {
        Ok(Peer::Pull { msg, requester }) => {
            if outbox.answer(msg, requester, out) {
                *answered += 1;
            }
            None
        }
        Ok(Peer::Answer(ex)) => Some(ex),
        Err(e) => {
            tracing::warn!(partition = me, error = %e, "undecodable peer message dropped");
            None
        }
    }
}

/// What every partition replica keeps, S-SMR / DS-SMR and DynaStar alike: its objects, client
/// table, the exchanges that arrived for commands it has not finished, the deliveries it
/// finished lately, and what it sent (for pulls), in the order their snapshots encode them
/// (postcard encodes a nested struct as its fields in order, so a snapshot holding this is
/// byte for byte the flat one it replaced), and the membership digest, derived from the
/// objects and not encoded.
#[derive(Serialize, Deserialize)]
pub(crate) struct PartitionState<V, R> {
    pub store: BTreeMap<ObjectId, V>,
    pub table: AttemptTable<Outcome<R>>,
    pub inbox: BTreeMap<MsgId, Vec<Exchange<V>>>,
    pub finished: Recent,
    pub outbox: Outbox<V>,
    /// XOR of [`member_mix`] over the owned objects.
    #[serde(skip)]
    pub digest: u64,
}

impl<V: Clone + Serialize + serde::de::DeserializeOwned, R> PartitionState<V, R> {
    /// A partition replica's start: whether `node` is its partition's designated sender (the
    /// lowest member of group `me`), and its state: the service's preloaded objects that
    /// [`PartitionedService::place`] puts at partition `me` (of `partitions`), nothing else.
    pub fn start<S: PartitionedService<Value = V, Reply = R>>(
        service: &S,
        cfg: &ClusterConfig,
        node: NodeId,
        me: PartitionId,
        partitions: u32,
        outbox_max: usize,
    ) -> (bool, Self) {
        let sender = cfg.members(GroupId(me)).iter().min() == Some(&node);
        let mut st = PartitionState {
            store: BTreeMap::new(),
            table: AttemptTable::default(),
            inbox: BTreeMap::new(),
            finished: Recent::new(outbox_max),
            outbox: Outbox::new(outbox_max),
            digest: 0,
        };
        for (id, v) in service.preload() {
            if service.place(id, partitions) == me {
                st.own(id, v);
            }
        }
        (sender, st)
    }

    /// The state decoded from a snapshot, with its digest computed again.
    pub fn restored(mut self) -> Self {
        self.digest = self.store.keys().fold(0, |d, id| d ^ member_mix(*id));
        self
    }

    /// Takes in object `id` with value `v`; false if it was owned already (the value is
    /// replaced: a broken single-ownership invariant, which the caller reports).
    pub fn own(&mut self, id: ObjectId, v: V) -> bool {
        if self.store.insert(id, v).is_some() {
            return false;
        }
        self.digest ^= member_mix(id);
        true
    }

    /// Gives object `id` up, if owned.
    pub fn disown(&mut self, id: ObjectId) -> Option<V> {
        let v = self.store.remove(&id);
        if v.is_some() {
            self.digest ^= member_mix(id);
        }
        v
    }

    /// Keeps exchange `ex` for its delivery, unless that delivery is finished or the slot it
    /// fills is taken (a duplicate copy).
    pub fn keep_exchange(&mut self, ex: Exchange<V>) {
        let msg = ex.msg();
        if self.finished.contains(&msg) {
            return;
        }
        let slot = self.inbox.entry(msg).or_default();
        if !slot.iter().any(|e| super::server::same_slot(e, &ex)) {
            slot.push(ex);
        }
    }

    /// A message from another replica of partition `me`: see [`on_peer`].
    pub fn peer(
        &self,
        payload: &[u8],
        me: PartitionId,
        out: &mut Vec<Output>,
        answered: &mut u64,
    ) -> Option<Exchange<V>> {
        on_peer(payload, me, &self.outbox, out, answered)
    }
}

/// Decodes a core's snapshot; `what` names it in the error ("partition snapshot").
pub(crate) fn decode_snapshot<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, CheckpointError> {
    crate::wire::decode(bytes).map_err(|e| CheckpointError::Decode(format!("{what}: {e}")))
}

/// Refuses a partition replica's snapshot that another partition's replica took.
pub(crate) fn check_partition_snapshot(snapshot_of: u32, me: u32) -> Result<(), CheckpointError> {
    if snapshot_of == me {
        Ok(())
    } else {
        Err(CheckpointError::Mismatch(format!(
            "the snapshot is partition {snapshot_of}'s, this replica is partition {me}'s"
        )))
    }
}

/// Refuses an oracle snapshot taken for another number of partitions (`fits`: whatever else
/// the snapshot sizes by them matches too), or one that locates an object out of range.
pub(crate) fn check_oracle_snapshot(
    snapshot_partitions: u32,
    fits: bool,
    location: &BTreeMap<ObjectId, PartitionId>,
    partitions: u32,
) -> Result<(), CheckpointError> {
    if snapshot_partitions != partitions || !fits {
        return Err(CheckpointError::Mismatch(format!(
            "the snapshot is of an oracle of {snapshot_partitions} partitions, this one has {partitions}"
        )));
    }
    if let Some((o, p)) = location.iter().find(|(_, p)| **p >= partitions) {
        return Err(CheckpointError::Mismatch(format!(
            "object {o} is located at partition {p}, out of range"
        )));
    }
    Ok(())
}

/// Sends `body` to `client` (partition and oracle replicas answer the same way).
pub(crate) fn send_to_client<R: Serialize>(
    out: &mut Vec<Output>,
    client: ClientId,
    body: &ToClient<R>,
) {
    out.push(Output::Send(client.node(), AppMsg::to_client(client, body)));
}

/// Answers the command `c` with `outcome`.
pub(crate) fn reply_to<R: Serialize>(out: &mut Vec<Output>, c: &CommandMsg, outcome: Outcome<R>) {
    let body = ToClient::Reply {
        seq: c.seq,
        attempt: c.attempt,
        outcome,
    };
    send_to_client(out, c.client, &body);
}

/// Refuses a read off the log ([`super::reads`]): the client orders it through the logs.
pub(crate) fn refuse_read<R: Serialize>(out: &mut Vec<Output>, c: &CommandMsg) {
    reply_to(out, c, Outcome::<R>::Retry);
}

/// Refuses a restored core whose state hash is not the one its snapshot recorded.
pub(crate) fn check_restored_hash(restored: u64, recorded: u64) -> Result<(), CheckpointError> {
    if restored == recorded {
        Ok(())
    } else {
        Err(CheckpointError::Mismatch(
            "the restored state's hash differs from the snapshot's".into(),
        ))
    }
}

/// Implements [`PartitionCore`] for a partition or oracle core by forwarding to the core's
/// inherent methods of the same names, so that the four cores (S-SMR/DS-SMR partition and
/// oracle, DynaStar partition and oracle) share one statement of the seam.
///
/// - `partition T`: the core's group is its `me`; it handles exchanges, runs its queue, marks
///   checkpoints itself and is rebuilt by `T::restore(service, cfg, node, me, partitions,
///   opts, snapshot)`.
/// - `oracle T` (optionally `, tick`): the group is the oracle's (`partitions`); it handles
///   every delivery at once, so its state at a mark is its state now, and it is rebuilt by
///   `T::restore(service, cfg, node, partitions, opts, snapshot)`. Its snapshots wait in a
///   `snapshots` field.
macro_rules! partition_core {
    (partition $ty:ident) => {
        impl<S: $crate::partitioned::service::PartitionedService>
            $crate::partitioned::common::PartitionCore for $ty<S>
        {
            fn group(&self) -> u32 {
                self.me
            }
            fn exchange(&mut self, payload: &[u8]) {
                $ty::exchange(self, payload)
            }
            fn tick(&mut self, now: u64) {
                $ty::tick(self, now)
            }
            fn run(&mut self) {
                $ty::run(self)
            }
            fn mark_checkpoint(&mut self, round: u64) {
                $ty::mark_checkpoint(self, round)
            }
            fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
                $ty::take_snapshots(self, out)
            }
            fn backlog(&self) -> usize {
                $ty::backlog(self)
            }
            fn serves_reads(&self) -> bool {
                $ty::serves_reads(self)
            }
            fn serve_read(&mut self, c: &$crate::partitioned::msg::CommandMsg) {
                $ty::serve_read(self, c)
            }
            $crate::partitioned::common::partition_core!(@shared $ty, me, partitions);
        }
    };
    (oracle $ty:ident $(, $tick:ident)?) => {
        impl<S: $crate::partitioned::service::PartitionedService>
            $crate::partitioned::common::PartitionCore for $ty<S>
        {
            fn group(&self) -> u32 {
                self.partitions
            }
            $(
                fn $tick(&mut self, now: u64) {
                    $ty::$tick(self, now)
                }
            )?
            /// The oracle handles every delivery at once: its state at the mark is its state now.
            fn mark_checkpoint(&mut self, round: u64) {
                self.snapshots
                    .push((round, $ty::state_hash(self), self.snapshot()));
            }
            fn take_snapshots(&mut self, out: &mut Vec<(u64, u64, Vec<u8>)>) {
                out.append(&mut self.snapshots);
            }
            $crate::partitioned::common::partition_core!(@shared $ty, partitions);
        }
    };
    // What every core forwards alike; `restore` takes the fields named after `$ty`
    // (the group's place) between the node and the options.
    (@shared $ty:ident, $($place:ident),+) => {
        fn deliver(&mut self, id: ::groups::ids::MsgId, body: &[u8]) {
            $ty::deliver(self, id, body)
        }
        fn peer(&mut self, body: &[u8]) {
            $ty::peer(self, body)
        }
        fn take_outputs(&mut self, out: &mut Vec<$crate::partitioned::common::Output>) {
            $ty::take_outputs(self, out)
        }
        fn restored(&self, snapshot: &[u8]) -> Result<Self, $crate::checkpoint::CheckpointError> {
            Self::restore(
                self.service.clone(),
                self.cfg.clone(),
                self.node,
                $(self.$place,)+
                self.opts.clone(),
                snapshot,
            )
        }
        fn handled(&self) -> u64 {
            self.stats.handled
        }
        fn state_hash(&self) -> u64 {
            $ty::state_hash(self)
        }
        fn refuse_read(&mut self, c: &$crate::partitioned::msg::CommandMsg) {
            $crate::partitioned::common::refuse_read::<S::Reply>(&mut self.out, c)
        }
    };
}
pub(crate) use partition_core;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioned::layout::{self, ScaleOutLayout};
    use crate::partitioned::Scheme;
    use crate::testing::scaleout::{ObjectKv, Reply};
    use crate::wire;

    /// Checkpoints written before the state was one struct hold its fields flat, in order: a
    /// nested struct must encode exactly as those fields did.
    #[test]
    fn the_shared_state_encodes_as_its_fields_in_order_and_restores_its_digest() {
        let l = ScaleOutLayout::new(Scheme::Dssmr, 2, 3, 1, 1, layout::tuning()).unwrap();
        let service = ObjectKv { preload: 10 };
        let (sender, mut st): (bool, PartitionState<i64, Reply>) =
            PartitionState::start(&service, &l.config, NodeId(1), 0, 2, 16);
        assert!(sender, "the lowest member sends");
        assert!(!st.own(0, 5), "preloaded object 0 is owned already");
        assert!(st.own(101, 7));
        assert_eq!(st.disown(2), Some(crate::testing::scaleout::INITIAL));
        st.keep_exchange(Exchange::MoveValue {
            msg: MsgId {
                sender: NodeId(3),
                epoch: 1,
                seq: 9,
            },
            value: Some(4),
        });
        let mut flat = wire::encode(&st.store);
        for part in [
            wire::encode(&st.table),
            wire::encode(&st.inbox),
            wire::encode(&st.finished),
            wire::encode(&st.outbox),
        ] {
            flat.extend(part);
        }
        let bytes = wire::encode(&st);
        assert_eq!(bytes, flat);
        let back: PartitionState<i64, Reply> = wire::decode::<PartitionState<i64, Reply>>(&bytes)
            .unwrap()
            .restored();
        assert_eq!(back.digest, st.digest);
        assert_eq!(back.store, st.store);
    }
}
