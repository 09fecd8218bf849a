//! Reliable multicast (reference notes, section 1.2) from a node to the members of a set of
//! groups: every correct member of every destination group delivers the message exactly once,
//! and nothing is delivered that was not sent. There is no ordering.
//!
//! The sender resends to each member until that member acknowledges, backing off from
//! `rm_resend_ticks` to `rm_resend_ticks_max`. With `rm_relay` (the default), a member that
//! delivers a message also takes over resending it to the other members, so the message
//! reaches every correct member even if its sender crashes right after the first send
//! (agreement). Receivers filter duplicates by `(sender, epoch, seq)`.

use crate::config::ClusterConfig;
use crate::dedup::Dedup;
use crate::groupset::GroupSet;
use crate::ids::{MsgId, NodeId};
use crate::message::NetMsg;
use crate::sender::MulticastError;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A reliably delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RDelivery {
    pub id: MsgId,
    pub dests: GroupSet,
    pub payload: Bytes,
}

struct Holding {
    dests: GroupSet,
    payload: Bytes,
    unacked: BTreeSet<NodeId>,
    next_send: u64,
    interval: u64,
}

pub(crate) struct Rmcast {
    cfg: Arc<ClusterConfig>,
    me: NodeId,
    epoch: u32,
    next_seq: u64,
    holding: BTreeMap<MsgId, Holding>,
    seen: Dedup,
    delivered: Vec<RDelivery>,
}

impl Rmcast {
    pub fn new(cfg: Arc<ClusterConfig>, me: NodeId, epoch: u32) -> Self {
        Rmcast {
            cfg,
            me,
            epoch,
            next_seq: 0,
            holding: BTreeMap::new(),
            seen: Dedup::default(),
            delivered: Vec::new(),
        }
    }

    fn members(&self, dests: &GroupSet) -> BTreeSet<NodeId> {
        dests
            .iter()
            .flat_map(|g| self.cfg.members(g).iter().copied())
            .collect()
    }

    pub fn send(
        &mut self,
        dests: GroupSet,
        payload: Bytes,
        now: u64,
        out: &mut Vec<(NodeId, NetMsg)>,
    ) -> Result<MsgId, MulticastError> {
        MulticastError::check_destinations(&dests, self.cfg.groups)?;
        let max = self.cfg.tuning.payload_bytes_max;
        if payload.len() > max {
            return Err(MulticastError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        let id = MsgId {
            sender: self.me,
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let mut members = self.members(&dests);
        if members.remove(&self.me) {
            self.seen.insert_id(id);
            self.delivered.push(RDelivery {
                id,
                dests: dests.clone(),
                payload: payload.clone(),
            });
        }
        self.hold(id, dests, payload, members, now, out);
        Ok(id)
    }

    fn hold(
        &mut self,
        id: MsgId,
        dests: GroupSet,
        payload: Bytes,
        to: BTreeSet<NodeId>,
        now: u64,
        out: &mut Vec<(NodeId, NetMsg)>,
    ) {
        if to.is_empty() {
            return;
        }
        for &n in &to {
            out.push((
                n,
                NetMsg::RData {
                    id,
                    dests: dests.clone(),
                    payload: payload.clone(),
                },
            ));
        }
        let interval = self.cfg.tuning.rm_resend_ticks;
        self.holding.insert(
            id,
            Holding {
                dests,
                payload,
                unacked: to,
                next_send: now + interval,
                interval,
            },
        );
    }

    pub fn on_data(
        &mut self,
        from: NodeId,
        id: MsgId,
        dests: GroupSet,
        payload: Bytes,
        now: u64,
        out: &mut Vec<(NodeId, NetMsg)>,
    ) {
        out.push((from, NetMsg::RAck { id }));
        let mut members = self.members(&dests);
        if !members.remove(&self.me) {
            tracing::warn!(%from, %id, "reliable multicast for groups this node is not in; ignored");
            return;
        }
        if !self.seen.insert_id(id) {
            return;
        }
        self.delivered.push(RDelivery {
            id,
            dests: dests.clone(),
            payload: payload.clone(),
        });
        if self.cfg.tuning.rm_relay {
            members.remove(&from);
            members.remove(&id.sender);
            self.hold(id, dests, payload, members, now, out);
        }
    }

    pub fn on_ack(&mut self, from: NodeId, id: MsgId) {
        if let Some(h) = self.holding.get_mut(&id) {
            h.unacked.remove(&from);
            if h.unacked.is_empty() {
                self.holding.remove(&id);
            }
        }
    }

    pub fn tick(&mut self, now: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        let max = self.cfg.tuning.rm_resend_ticks_max;
        for (&id, h) in self.holding.iter_mut().filter(|(_, h)| h.next_send <= now) {
            for &n in &h.unacked {
                out.push((
                    n,
                    NetMsg::RData {
                        id,
                        dests: h.dests.clone(),
                        payload: h.payload.clone(),
                    },
                ));
            }
            h.interval = (h.interval * 2).min(max);
            h.next_send = now + h.interval;
        }
    }

    pub fn take_delivered(&mut self, out: &mut Vec<RDelivery>) {
        out.append(&mut self.delivered);
    }

    /// Messages still being resent by this node.
    pub fn holding(&self) -> usize {
        self.holding.len()
    }
}
