//! What partition and oracle replicas share: the [`PartitionCore`] seam the replica host drives, its [`Output`]s, and their bookkeeping.

use super::msg::{Exchange, Peer};
use crate::checkpoint::CheckpointError;
use bytes::Bytes;
use groups::groupset::GroupSet;
use groups::ids::{MsgId, NodeId};
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
    /// A delivered command ([`crate::wire::FeedMsg::Command`]'s body).
    fn deliver(&mut self, id: MsgId, body: &[u8]);
    /// A reliably delivered exchange from another group.
    fn exchange(&mut self, _payload: &[u8]) {}
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
}
