//! The sending side of atomic multicast: submits messages to the leader of the log that
//! orders their destinations, and resends them until that leader acknowledges them as decided.
//!
//! A resent message may be ordered twice (its first copy was decided but the acknowledgement
//! lost in a leader change); the merge delivers only the first copy (see [`crate::merge`]).

use crate::config::{ClusterConfig, Tuning};
use crate::groupset::GroupSet;
use crate::ids::{GroupId, LogId, MsgId, NodeId};
use crate::message::{Message, NetMsg};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Why `multicast` refused a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MulticastError {
    #[error("a message needs at least one destination group")]
    NoDestinations,
    #[error("group {group} does not exist (the cluster has groups 0..{groups})")]
    UnknownGroup { group: GroupId, groups: u32 },
    #[error("no log covers the destination set {0:?}; add a log whose coverage includes it")]
    NoCoveringLog(GroupSet),
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("{queued} messages already wait for the send window; retry later")]
    Backpressure { queued: usize },
}

impl MulticastError {
    /// Checks a multicast's destinations against the cluster's `groups` groups: at least one,
    /// every one of them existing.
    pub fn check_destinations(dests: &GroupSet, groups: u32) -> Result<(), MulticastError> {
        if dests.is_empty() {
            return Err(MulticastError::NoDestinations);
        }
        match dests.last().filter(|g| g.0 >= groups) {
            Some(group) => Err(MulticastError::UnknownGroup { group, groups }),
            None => Ok(()),
        }
    }
}

struct Pending {
    msg: Message,
    log: LogId,
    sent_to: NodeId,
    sent_at: u64,
    attempts: u32,
    /// The tick of this message's last redirect on a `NotLeader` hint.
    redirected_at: Option<u64>,
}

/// Most payload bytes in one `Submit`.
const SUBMIT_BYTES_MAX: usize = 1 << 20;

pub(crate) struct Sender {
    cfg: Arc<ClusterConfig>,
    me: NodeId,
    epoch: u32,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    queued: VecDeque<(Message, LogId)>,
    /// Index into the log's acceptors of the node believed to lead it.
    target: FxHashMap<LogId, usize>,
    /// When a `NotLeader` hint last chose a log's target (a timeout does not rotate away
    /// from a target chosen after the message was sent).
    hinted_at: FxHashMap<LogId, u64>,
    outbox: BTreeMap<(NodeId, LogId), Vec<Message>>,
    /// Next `log_seq` per log.
    log_seqs: FxHashMap<LogId, u64>,
    /// Smoothed time from submission to acknowledgement, in 1/8 ticks (as TCP keeps its
    /// smoothed round-trip time): resends wait for several of these, so an overloaded but
    /// working leader is not flooded with copies.
    srtt_eighths: u64,
    /// With `submit_delay_ticks`: ticks since the outbox was last sent whole, and whether it
    /// is due.
    ticks_since_flush: u32,
    flush_due: bool,
    pub multicasts: u64,
    pub resends: u64,
    pub redirects: u64,
}

impl Sender {
    pub fn new(cfg: Arc<ClusterConfig>, me: NodeId, epoch: u32) -> Self {
        Sender {
            cfg,
            me,
            epoch,
            next_seq: 0,
            pending: BTreeMap::new(),
            queued: VecDeque::new(),
            target: FxHashMap::default(),
            hinted_at: FxHashMap::default(),
            outbox: BTreeMap::new(),
            log_seqs: FxHashMap::default(),
            srtt_eighths: 0,
            ticks_since_flush: 0,
            flush_due: false,
            multicasts: 0,
            resends: 0,
            redirects: 0,
        }
    }

    fn tuning(&self) -> &Tuning {
        &self.cfg.tuning
    }

    /// Validates `dests` and returns the log that orders them.
    pub fn route(&self, dests: &GroupSet) -> Result<LogId, MulticastError> {
        MulticastError::check_destinations(dests, self.cfg.groups)?;
        self.cfg
            .route(dests)
            .ok_or_else(|| MulticastError::NoCoveringLog(dests.clone()))
    }

    pub fn multicast(
        &mut self,
        dests: GroupSet,
        payload: Bytes,
        now: u64,
    ) -> Result<MsgId, MulticastError> {
        let max = self.tuning().payload_bytes_max;
        if payload.len() > max {
            return Err(MulticastError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        let log = self.route(&dests)?;
        if self.pending.len() >= self.tuning().sender_window
            && self.queued.len() >= self.tuning().sender_queue_max
        {
            return Err(MulticastError::Backpressure {
                queued: self.queued.len(),
            });
        }
        let id = MsgId {
            sender: self.me,
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.multicasts += 1;
        let ls = self.log_seqs.entry(log).or_insert(0);
        let msg = Message {
            id,
            log_seq: *ls,
            dests,
            payload,
        };
        *ls += 1;
        if self.pending.len() < self.tuning().sender_window {
            self.dispatch(msg, log, now, 0);
        } else {
            self.queued.push_back((msg, log));
        }
        Ok(id)
    }

    /// Messages submitted and not yet acknowledged, plus those waiting for the window.
    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.queued.len()
    }

    fn leader_guess(&self, log: LogId) -> NodeId {
        let acceptors = &self.cfg.log(log).expect("routed log exists").acceptors;
        let i = self.target.get(&log).copied().unwrap_or(log.0 as usize);
        acceptors[i % acceptors.len()]
    }

    fn dispatch(&mut self, msg: Message, log: LogId, now: u64, attempts: u32) {
        self.dispatch_redirected(msg, log, now, attempts, None);
    }

    fn dispatch_redirected(
        &mut self,
        msg: Message,
        log: LogId,
        now: u64,
        attempts: u32,
        redirected_at: Option<u64>,
    ) {
        let to = self.leader_guess(log);
        self.outbox.entry((to, log)).or_default().push(msg.clone());
        self.pending.insert(
            msg.id.seq,
            Pending {
                msg,
                log,
                sent_to: to,
                sent_at: now,
                attempts,
                redirected_at,
            },
        );
    }

    pub fn on_ack(&mut self, log: LogId, ids: &[(u32, u64)], now: u64) {
        for &(epoch, seq) in ids {
            if epoch == self.epoch && self.pending.get(&seq).is_some_and(|p| p.log == log) {
                let p = self.pending.remove(&seq).expect("checked");
                if p.attempts == 0 {
                    // srtt += (sample - srtt) / 8, kept in eighths of a tick
                    let sample = now.saturating_sub(p.sent_at) * 8;
                    self.srtt_eighths = self.srtt_eighths - self.srtt_eighths / 8 + sample / 8;
                }
            }
        }
        while self.pending.len() < self.tuning().sender_window {
            let Some((msg, log)) = self.queued.pop_front() else {
                break;
            };
            self.dispatch(msg, log, now, 0);
        }
    }

    pub fn on_not_leader(&mut self, from: NodeId, log: LogId, leader: Option<NodeId>, now: u64) {
        let Some(acceptors) = self.cfg.log(log).map(|l| l.acceptors.clone()) else {
            return;
        };
        let Some(pos) = leader
            .filter(|&l| l != from)
            .and_then(|l| acceptors.iter().position(|&a| a == l))
        else {
            // No better guess: the resend timer will try the next acceptor.
            return;
        };
        self.target.insert(log, pos);
        self.hinted_at.insert(log, now);
        // Redirect each message at most once per tick: two acceptors that each name the other
        // as leader (a restarted one's stale view) would otherwise bounce it back and forth at
        // network speed, and duplicated replies would multiply the bouncing. A later hint in
        // the same tick only moves the target; the resend timer takes it from there.
        let redirect: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.log == log && p.sent_to == from && p.redirected_at != Some(now))
            .map(|(&s, _)| s)
            .collect();
        for seq in redirect {
            self.redirects += 1;
            let p = self.pending.remove(&seq).expect("listed");
            self.dispatch_redirected(p.msg, log, now, p.attempts, Some(now));
        }
    }

    /// Resends overdue messages, each log's to the next acceptor in turn. A message is overdue
    /// after the larger of `resend_ticks` and four smoothed acknowledgement times, doubled per
    /// attempt (up to 16x), so an overloaded leader is not flooded with copies.
    pub fn tick(&mut self, now: u64) {
        let delay = self.tuning().submit_delay_ticks;
        if delay > 0 {
            self.ticks_since_flush += 1;
            if self.ticks_since_flush >= delay {
                self.ticks_since_flush = 0;
                self.flush_due = true;
            }
        }
        let base = self.tuning().resend_ticks.max(self.srtt_eighths / 2);
        let overdue: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.sent_at) >= base << p.attempts.min(4))
            .map(|(&s, _)| s)
            .collect();
        let mut rotated = Vec::new();
        for seq in overdue {
            self.resends += 1;
            let p = self.pending.remove(&seq).expect("listed");
            // Try the next acceptor, unless a hint chose the target after this was sent.
            let hinted_since = self.hinted_at.get(&p.log).is_some_and(|&h| h >= p.sent_at);
            if !hinted_since && !rotated.contains(&p.log) {
                rotated.push(p.log);
                *self.target.entry(p.log).or_insert(p.log.0 as usize) += 1;
            }
            self.dispatch(p.msg, p.log, now, p.attempts + 1);
        }
    }

    /// Sends the outbox as `Submit`s of at most [`SUBMIT_BYTES_MAX`] each; with
    /// `submit_delay_ticks`, between due ticks only full ones leave and the rest waits.
    pub fn take_outgoing(&mut self, out: &mut Vec<(NodeId, NetMsg)>) {
        let hold = self.tuning().submit_delay_ticks > 0 && !self.flush_due;
        self.flush_due = false;
        for ((to, log), msgs) in std::mem::take(&mut self.outbox) {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for m in msgs {
                bytes += m.payload.len() + 32;
                chunk.push(m);
                if bytes >= SUBMIT_BYTES_MAX {
                    out.push((to, NetMsg::Submit { log, msgs: chunk }));
                    chunk = Vec::new();
                    bytes = 0;
                }
            }
            if chunk.is_empty() {
                continue;
            }
            if hold {
                self.outbox.insert((to, log), chunk);
            } else {
                out.push((to, NetMsg::Submit { log, msgs: chunk }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeConfig, Tuning};
    use crate::ids::GroupId;

    fn sender() -> Sender {
        sender_with(Tuning::default())
    }

    fn sender_with(tuning: Tuning) -> Sender {
        let nodes = (1..=4)
            .map(|i| NodeConfig {
                id: NodeId(i),
                addr: None,
                subscriptions: vec![],
            })
            .collect();
        let cfg = ClusterConfig::per_group_plus_global(
            1,
            1,
            nodes,
            vec![NodeId(1), NodeId(2), NodeId(3)],
            tuning,
        )
        .unwrap();
        Sender::new(Arc::new(cfg), NodeId(4), 0)
    }

    fn sent_to(s: &mut Sender) -> Vec<NodeId> {
        let mut out = Vec::new();
        s.take_outgoing(&mut out);
        out.into_iter().map(|(to, _)| to).collect()
    }

    #[test]
    fn a_submit_delay_batches_multicasts_until_the_due_tick() {
        let mut s = sender_with(Tuning {
            submit_delay_ticks: 2,
            ..Tuning::default()
        });
        let submits = |s: &mut Sender| -> Vec<usize> {
            let mut out = Vec::new();
            s.take_outgoing(&mut out);
            out.into_iter()
                .map(|(_, m)| match m {
                    NetMsg::Submit { msgs, .. } => msgs.len(),
                    other => panic!("not a submit: {other:?}"),
                })
                .collect()
        };
        for i in 0..3u8 {
            s.multicast(GroupSet::singleton(GroupId(0)), Bytes::from(vec![i]), 0)
                .unwrap();
            assert!(submits(&mut s).is_empty(), "held before the due tick");
        }
        s.tick(1);
        assert!(submits(&mut s).is_empty(), "one tick of two");
        s.tick(2);
        assert_eq!(submits(&mut s), vec![3], "one message with all three");
        assert!(submits(&mut s).is_empty(), "nothing left behind");
        s.multicast(GroupSet::singleton(GroupId(0)), Bytes::from_static(b"x"), 2)
            .unwrap();
        assert!(submits(&mut s).is_empty(), "the next batch waits again");
    }

    #[test]
    fn follows_leader_hints_and_keeps_them_across_timeouts() {
        let mut s = sender();
        s.multicast(GroupSet::singleton(GroupId(0)), Bytes::new(), 0)
            .unwrap();
        assert_eq!(
            sent_to(&mut s),
            vec![NodeId(1)],
            "first guess: the log's preferred leader"
        );
        s.on_not_leader(NodeId(1), LogId(0), Some(NodeId(2)), 0);
        assert_eq!(sent_to(&mut s), vec![NodeId(2)], "redirected at once");
        // n2 (stale) names n1 in the same tick: no second redirect, no ping-pong.
        s.on_not_leader(NodeId(2), LogId(0), Some(NodeId(1)), 0);
        assert!(sent_to(&mut s).is_empty());
        // The timeout resends to the hinted node rather than rotating past it.
        s.tick(Tuning::default().resend_ticks);
        assert_eq!(sent_to(&mut s), vec![NodeId(1)]);
        // With no hint since, the next timeout tries the next acceptor.
        s.tick(10 * Tuning::default().resend_ticks);
        assert_eq!(sent_to(&mut s), vec![NodeId(2)]);
        s.on_ack(LogId(0), &[(0, 0)], 1000);
        assert_eq!(s.in_flight(), 0);
    }
}
