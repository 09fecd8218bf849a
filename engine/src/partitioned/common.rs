//! Bookkeeping shared by partition and oracle replicas.

use super::wire::{Exchange, Peer};
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
            out.push(Output::Send(
                requester,
                Bytes::from(crate::wire::encode(&body)),
            ));
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
