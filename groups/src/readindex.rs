//! Read indexes: for a set of logs, a position per log that covers every entry decided before
//! the request was made, found without writing to any log.
//!
//! Method (a quorum read, leaderless: Charapko et al., "Linearizable Quorum Reads in Paxos",
//! HotStorage 2019): the node asks every acceptor of each log for its accepted index (the
//! length of its log, decided or not) and takes, per log, the largest answer of a majority. An
//! entry decided before the request was accepted by a majority; that majority and the one that
//! answered share an acceptor, and an acceptor's log never gets shorter than an entry chosen
//! in it (every later leader's log holds the chosen entries, and a follower's log is only ever
//! replaced by a leader's), so the answer is past that entry. No leader is involved, so a
//! deposed leader that still believes it leads cannot answer for the log with a stale index:
//! at worst it raises the position with entries of its own that will never be chosen, which
//! costs time, not safety.
//!
//! A caller then waits until its own delivery stream has passed the positions and executes the
//! read against its state: the state then reflects every write acknowledged before the read
//! began (linearizable reads without ordering them). The node helps with liveness: a position
//! beyond a log's end (raised by a deposed leader's extra entries, on a log with no traffic
//! and no periodic skips) makes the node ask the log's leader for padding, with skip hints,
//! until its feed has passed the position.
//!
//! Answers are matched to requests by `(epoch, seq)`: a restarted node (a new epoch) never
//! takes an answer to a request of its earlier incarnation, which could predate writes
//! acknowledged since. Only an acceptor that votes answers; one still recovering its state
//! ([`crate::log::recovery`]) does not, as its index would not cover what it has not copied.

use crate::config::ClusterConfig;
use crate::ids::{LogId, NodeId};
use crate::message::NetMsg;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Names one read-index request of one node incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadToken {
    pub epoch: u32,
    pub seq: u64,
}

/// A completed read index: for each requested log, a position (an entry index) past every
/// entry decided before the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadIndex {
    /// The request's number, as [`crate::node::GroupsNode::read_index`] returned it.
    pub seq: u64,
    pub positions: Vec<(LogId, u64)>,
}

struct LogQuery {
    log: LogId,
    acceptors: Vec<NodeId>,
    answers: BTreeMap<NodeId, u64>,
}

impl LogQuery {
    fn majority(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    fn complete(&self) -> bool {
        self.answers.len() >= self.majority()
    }
}

struct Pending {
    sent_at: u64,
    logs: Vec<LogQuery>,
}

/// The read-index requests of one node (see the module docs).
pub(crate) struct ReadIndexes {
    cfg: Arc<ClusterConfig>,
    epoch: u32,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    done: Vec<ReadIndex>,
    /// Per log, the largest position a completed read index named (kept until this node's
    /// feed passes it; see the module docs on liveness).
    targets: BTreeMap<LogId, u64>,
}

/// Why a read index cannot be asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadIndexError {
    #[error("no log {0} in the configuration")]
    UnknownLog(LogId),
    #[error("a read index needs at least one log")]
    NoLogs,
}

impl ReadIndexes {
    pub fn new(cfg: Arc<ClusterConfig>, epoch: u32) -> Self {
        ReadIndexes {
            cfg,
            epoch,
            next_seq: 0,
            pending: BTreeMap::new(),
            done: Vec::new(),
            targets: BTreeMap::new(),
        }
    }

    /// Starts a request for `logs` (duplicates ignored) and queues its queries.
    pub fn ask(
        &mut self,
        logs: &[LogId],
        now: u64,
        out: &mut Vec<(NodeId, NetMsg)>,
    ) -> Result<u64, ReadIndexError> {
        if logs.is_empty() {
            return Err(ReadIndexError::NoLogs);
        }
        let mut queries: Vec<LogQuery> = Vec::with_capacity(logs.len());
        for &log in logs {
            if queries.iter().any(|q| q.log == log) {
                continue;
            }
            let lc = self.cfg.log(log).ok_or(ReadIndexError::UnknownLog(log))?;
            queries.push(LogQuery {
                log,
                acceptors: lc.acceptors.clone(),
                answers: BTreeMap::new(),
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let p = Pending {
            sent_at: now,
            logs: queries,
        };
        Self::send(self.epoch, seq, &p, out);
        self.pending.insert(seq, p);
        Ok(seq)
    }

    fn send(epoch: u32, seq: u64, p: &Pending, out: &mut Vec<(NodeId, NetMsg)>) {
        let read = ReadToken { epoch, seq };
        for q in p.logs.iter().filter(|q| !q.complete()) {
            for &a in q.acceptors.iter().filter(|a| !q.answers.contains_key(a)) {
                out.push((a, NetMsg::IndexQuery { log: q.log, read }));
            }
        }
    }

    /// An acceptor's answer. Returns false if `from` is not an acceptor of `log` (the caller
    /// counts it as refused); answers to unknown or finished requests are ignored.
    pub fn on_reply(&mut self, from: NodeId, log: LogId, read: ReadToken, accepted: u64) -> bool {
        let Some(lc) = self.cfg.log(log) else {
            return false;
        };
        if !lc.acceptors.contains(&from) {
            return false;
        }
        if read.epoch != self.epoch {
            return true;
        }
        let Some(p) = self.pending.get_mut(&read.seq) else {
            return true;
        };
        let Some(q) = p.logs.iter_mut().find(|q| q.log == log) else {
            return true;
        };
        let e = q.answers.entry(from).or_insert(accepted);
        *e = (*e).max(accepted);
        if p.logs.iter().all(LogQuery::complete) {
            let p = self.pending.remove(&read.seq).expect("present");
            let positions: Vec<(LogId, u64)> = p
                .logs
                .iter()
                .map(|q| (q.log, q.answers.values().copied().max().unwrap_or(0)))
                .collect();
            for &(log, pos) in &positions {
                let t = self.targets.entry(log).or_insert(0);
                *t = (*t).max(pos);
            }
            self.done.push(ReadIndex {
                seq: read.seq,
                positions,
            });
        }
        true
    }

    /// Resends the queries of requests unanswered for `resend_ticks`.
    pub fn tick(&mut self, now: u64, resend_ticks: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        for (&seq, p) in self.pending.iter_mut() {
            if now >= p.sent_at + resend_ticks.max(1) {
                p.sent_at = now;
                Self::send(self.epoch, seq, p, out);
            }
        }
    }

    pub fn take_done(&mut self, out: &mut Vec<ReadIndex>) {
        out.append(&mut self.done);
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Positions named by completed read indexes that `feed_next` (the node's feed position of
    /// a log, `None` if it has no feed for it) has not reached.
    pub fn open_targets(&self, feed_next: impl Fn(LogId) -> Option<u64>) -> Vec<(LogId, u64)> {
        self.targets
            .iter()
            .filter(|&(&log, &pos)| feed_next(log).is_some_and(|next| next < pos))
            .map(|(&l, &p)| (l, p))
            .collect()
    }

    /// Drops the targets `feed_next` has reached, and those of logs without a feed; returns
    /// the logs whose targets remain, with their feed positions.
    pub fn prune_targets(&mut self, feed_next: impl Fn(LogId) -> Option<u64>) -> Vec<(LogId, u64)> {
        let mut open = Vec::new();
        self.targets.retain(|&log, &mut pos| match feed_next(log) {
            Some(next) if next < pos => {
                open.push((log, next));
                true
            }
            _ => false,
        });
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogConfig, NodeConfig, Tuning};
    use crate::groupset::GroupSet;
    use crate::ids::GroupId;

    fn cfg() -> Arc<ClusterConfig> {
        let nodes = (1..=4)
            .map(|i| NodeConfig {
                id: NodeId(i),
                addr: None,
                subscriptions: vec![GroupSet::singleton(GroupId(0))],
            })
            .collect();
        let logs = vec![LogConfig {
            id: LogId(0),
            covers: GroupSet::singleton(GroupId(0)),
            acceptors: vec![NodeId(1), NodeId(2), NodeId(3)],
        }];
        Arc::new(ClusterConfig::new(1, 1, nodes, logs, Tuning::default()).unwrap())
    }

    #[test]
    fn a_majority_answers_and_the_largest_index_wins() {
        let mut r = ReadIndexes::new(cfg(), 7);
        let mut out = Vec::new();
        let seq = r.ask(&[LogId(0), LogId(0)], 5, &mut out).unwrap();
        assert_eq!(out.len(), 3, "one query per acceptor, duplicates ignored");
        let t = ReadToken { epoch: 7, seq };
        assert!(r.on_reply(NodeId(1), LogId(0), t, 10));
        assert!(
            r.on_reply(NodeId(1), LogId(0), t, 4),
            "a duplicate counts once"
        );
        let mut done = Vec::new();
        r.take_done(&mut done);
        assert!(done.is_empty(), "one answer of three is not a majority");
        assert!(r.on_reply(NodeId(3), LogId(0), t, 12));
        r.take_done(&mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].positions, vec![(LogId(0), 12)]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn answers_of_an_earlier_incarnation_or_from_strangers_are_not_taken() {
        let mut r = ReadIndexes::new(cfg(), 8);
        let mut out = Vec::new();
        let seq = r.ask(&[LogId(0)], 0, &mut out).unwrap();
        let old = ReadToken { epoch: 7, seq };
        assert!(r.on_reply(NodeId(1), LogId(0), old, 1));
        assert!(r.on_reply(NodeId(2), LogId(0), old, 1));
        assert!(!r.on_reply(NodeId(4), LogId(0), ReadToken { epoch: 8, seq }, 1));
        let mut done = Vec::new();
        r.take_done(&mut done);
        assert!(done.is_empty());
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn unanswered_queries_are_resent_to_the_silent_acceptors_only() {
        let mut r = ReadIndexes::new(cfg(), 1);
        let mut out = Vec::new();
        let seq = r.ask(&[LogId(0)], 0, &mut out).unwrap();
        out.clear();
        r.on_reply(NodeId(2), LogId(0), ReadToken { epoch: 1, seq }, 3);
        r.tick(5, 10, &mut out);
        assert!(out.is_empty(), "not yet due");
        r.tick(10, 10, &mut out);
        let to: Vec<NodeId> = out.iter().map(|(n, _)| *n).collect();
        assert_eq!(to, vec![NodeId(1), NodeId(3)]);
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut r = ReadIndexes::new(cfg(), 1);
        let mut out = Vec::new();
        assert_eq!(r.ask(&[], 0, &mut out), Err(ReadIndexError::NoLogs));
        assert_eq!(
            r.ask(&[LogId(9)], 0, &mut out),
            Err(ReadIndexError::UnknownLog(LogId(9)))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn targets_stay_open_until_the_feed_passes_them() {
        let mut r = ReadIndexes::new(cfg(), 1);
        let mut out = Vec::new();
        let seq = r.ask(&[LogId(0)], 0, &mut out).unwrap();
        for n in [1, 2] {
            r.on_reply(NodeId(n), LogId(0), ReadToken { epoch: 1, seq }, 9);
        }
        assert_eq!(r.open_targets(|_| Some(4)), vec![(LogId(0), 9)]);
        assert_eq!(r.open_targets(|_| Some(9)), vec![]);
        assert_eq!(
            r.prune_targets(|_| Some(4)),
            vec![(LogId(0), 4)],
            "kept until reached, with the feed's position"
        );
        assert_eq!(r.open_targets(|_| Some(4)), vec![(LogId(0), 9)]);
        assert_eq!(r.prune_targets(|_| Some(9)), vec![]);
        assert_eq!(r.open_targets(|_| Some(4)), vec![], "dropped once reached");
    }
}
