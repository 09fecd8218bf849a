//! The deterministic Multi-Ring merge (reference notes, section c.3 and c.5).
//!
//! A subscriber to a set of groups merges every log that covers one of them. Number the
//! *virtual slots* of log `r` as `v_r[0], v_r[1], ...` (each message of a batch is one slot, a
//! `Skip(n)` is `n` empty slots) and give `v_r[j]` the key `(j / M, rank(r), j mod M)`, where
//! `rank` is the position of `r` in increasing log-id order among *all* logs. A subscriber
//! consumes its logs' slots in increasing key order, delivering the messages addressed to its
//! groups and dropping the rest. Because every subscriber uses the same `M`, the same log
//! order and the same slot counting, all delivery streams are projections of one total order
//! of all messages, which gives acyclic order and prefix order (section 1.3); agreement and
//! validity come from the logs themselves.
//!
//! A log that has no slot for the current round blocks the merge. Leaders pad idle logs with
//! skips at rate lambda; [`Merger::blocked_on`] tells the caller which log blocks and how far
//! it would have to be padded, so a skip hint can be sent to its leader.
//!
//! Duplicates (a sender retransmitting across a leader change) always land in the same log,
//! because the log is a function of the destination set; the first copy in log order is
//! delivered, later ones are dropped. Every subscriber sees the same first copy. The filter of
//! each log sees every message of that log (delivered here or not), keyed by the sender's
//! per-log sequence number, so it stays a contiguous floor plus a handful of exceptions.

use crate::dedup::Dedup;
use crate::groupset::GroupSet;
use crate::ids::LogId;
use crate::message::{LogEntry, Message};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One delivered message, with the log position it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub msg: Message,
    pub log: LogId,
    /// Index of the log entry that carried it.
    pub index: u64,
}

/// Entries pushed to a [`Merger`] must continue exactly where the previous push ended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("log {log}: entries pushed from index {got}, the merger expects {expected}")]
pub struct Gap {
    pub log: LogId,
    pub expected: u64,
    pub got: u64,
}

/// What a blocked merge needs from one log (see [`Merger::blocked_on`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipNeed {
    pub log: LogId,
    /// The next entry index the merger expects from `log`.
    pub index: u64,
    /// Slots needed from `index` on.
    pub slots: u64,
}

struct Lane {
    log: LogId,
    dedup: Dedup,
    queue: VecDeque<LogEntry>,
    /// Log index of `queue[0]`.
    head_index: u64,
    /// Slots of `queue[0]` already consumed.
    head_offset: u64,
    /// Slots received so far (the lane's frontier).
    slots_received: u64,
    slots_consumed: u64,
}

impl Lane {
    fn next_index(&self) -> u64 {
        self.head_index + self.queue.len() as u64
    }
}

/// A merger's position (see [`Merger::state`]); part of a replica's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergerState {
    pub m: u64,
    pub cur: u32,
    pub taken: u64,
    pub lanes: Vec<LaneState>,
}

/// One log's part of a [`MergerState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneState {
    pub log: LogId,
    pub dedup: Dedup,
    /// The entry the merge reads next (partly consumed if `head_offset > 0`).
    pub head_index: u64,
    pub head_offset: u64,
    pub slots_consumed: u64,
}

impl MergerState {
    /// Per log, the first entry a merger restored from this state needs.
    pub fn resume_at(&self) -> impl Iterator<Item = (LogId, u64)> + '_ {
        self.lanes.iter().map(|l| (l.log, l.head_index))
    }
}

/// A [`MergerState`] that does not fit the merger it should restore.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("merger state does not fit: {0}")]
pub struct BadMergerState(pub &'static str);

/// At the start of a round: if every lane's head is a skip with at least `m` slots left, takes
/// as many whole rounds as all of them allow at once (each round takes `m` slots of every lane
/// and delivers nothing), so a stretch of long skips costs one step instead of one per `m`
/// slots. Without this, a skip of billions of slots (issue 18: padding inflated by a node that
/// served another cluster's entries) took minutes of merging at every replay of the log.
fn skip_whole_rounds(lanes: &mut [Lane], m: u64) {
    let mut rounds = u64::MAX;
    for lane in lanes.iter() {
        match lane.queue.front() {
            Some(LogEntry::Skip(n)) => {
                rounds = rounds.min(n.saturating_sub(lane.head_offset) / m);
            }
            _ => return,
        }
    }
    if rounds == 0 {
        return;
    }
    let slots = rounds * m;
    for lane in lanes.iter_mut() {
        let remaining = lane.queue.front().map_or(0, LogEntry::slots) - lane.head_offset;
        lane.slots_consumed += slots;
        if remaining == slots {
            lane.queue.pop_front();
            lane.head_index += 1;
            lane.head_offset = 0;
        } else {
            lane.head_offset += slots;
        }
    }
}

/// Merges the decided entries of several logs into one delivery stream.
pub struct Merger {
    groups: GroupSet,
    m: u64,
    lanes: Vec<Lane>,
    cur: usize,
    /// Slots taken from `lanes[cur]` in the current round.
    taken: u64,
}

impl Merger {
    /// A merger for a subscription to `groups` over `logs` (the logs covering any of
    /// `groups`, see [`crate::config::ClusterConfig::logs_for`]), taking `m` slots per log per round.
    pub fn new(logs: &[LogId], groups: GroupSet, m: u64) -> Self {
        assert!(m > 0, "merge_m must be positive");
        assert!(!logs.is_empty(), "a subscription merges at least one log");
        let mut ids = logs.to_vec();
        ids.sort();
        ids.dedup();
        Merger {
            groups,
            m,
            lanes: ids
                .into_iter()
                .map(|log| Lane {
                    log,
                    dedup: Dedup::default(),
                    queue: VecDeque::new(),
                    head_index: 0,
                    head_offset: 0,
                    slots_received: 0,
                    slots_consumed: 0,
                })
                .collect(),
            cur: 0,
            taken: 0,
        }
    }

    pub fn groups(&self) -> &GroupSet {
        &self.groups
    }

    /// The logs this merger reads, in merge order.
    pub fn logs(&self) -> impl Iterator<Item = LogId> + '_ {
        self.lanes.iter().map(|l| l.log)
    }

    /// Index of the next entry `log` expects (`None` if the merger does not read `log`).
    pub fn next_index(&self, log: LogId) -> Option<u64> {
        self.lane(log).map(|l| self.lanes[l].next_index())
    }

    /// Index of the first entry of `log` not wholly merged yet: every message of the entries
    /// below it has been delivered (or dropped as not addressed to this merger or a
    /// duplicate). `None` if the merger does not read `log`.
    pub fn merged_below(&self, log: LogId) -> Option<u64> {
        self.lane(log).map(|l| self.lanes[l].head_index)
    }

    fn lane(&self, log: LogId) -> Option<usize> {
        self.lanes.binary_search_by_key(&log, |l| l.log).ok()
    }

    /// Appends decided entries of `log` that start at log index `start`. Entries the merger
    /// already has are ignored; a push that would leave a hole is refused.
    pub fn push(&mut self, log: LogId, start: u64, entries: &[LogEntry]) -> Result<(), Gap> {
        let Some(l) = self.lane(log) else {
            return Ok(());
        };
        let lane = &mut self.lanes[l];
        let expected = lane.next_index();
        if start > expected {
            return Err(Gap {
                log,
                expected,
                got: start,
            });
        }
        let skip = (expected - start) as usize;
        for e in entries.iter().skip(skip) {
            debug_assert!(e.is_valid());
            lane.slots_received += e.slots();
            lane.queue.push_back(e.clone());
        }
        Ok(())
    }

    /// Delivers every message the merge order allows now. Returns how many it appended.
    pub fn poll(&mut self, out: &mut Vec<Delivery>) -> usize {
        let before = out.len();
        self.poll_until(out, |_| false);
        out.len() - before
    }

    /// Like [`Merger::poll`], but stops right after delivering a message for which `stop`
    /// returns true, and then returns true: the merger's state ([`Merger::state`]) is then
    /// exactly the state after that message, which is how a replica records where a
    /// checkpoint lies in its streams. Returns false when the merge ran out of slots.
    pub fn poll_until(
        &mut self,
        out: &mut Vec<Delivery>,
        mut stop: impl FnMut(&Message) -> bool,
    ) -> bool {
        let Merger {
            groups,
            m,
            lanes,
            cur,
            taken,
        } = self;
        loop {
            if *taken == 0 {
                skip_whole_rounds(lanes, *m);
            }
            let lane = &mut lanes[*cur];
            let Some(head) = lane.queue.front() else {
                return false;
            };
            let want = *m - *taken;
            // Saturating: a restored lane whose partly consumed head entry turns out shorter
            // than recorded just moves past it.
            let remaining = head.slots().saturating_sub(lane.head_offset);
            let mut k = want.min(remaining);
            let mut stopped = false;
            if let (LogEntry::Batch(msgs), true) = (head, k > 0) {
                let from = lane.head_offset as usize;
                for (i, msg) in msgs[from..from + k as usize].iter().enumerate() {
                    let first = lane.dedup.insert(msg.id.sender, msg.id.epoch, msg.log_seq);
                    if first && msg.dests.intersects(groups) {
                        out.push(Delivery {
                            msg: msg.clone(),
                            log: lane.log,
                            index: lane.head_index,
                        });
                        if stop(msg) {
                            k = i as u64 + 1;
                            stopped = true;
                            break;
                        }
                    }
                }
            }
            lane.head_offset += k;
            lane.slots_consumed += k;
            if k == remaining {
                lane.queue.pop_front();
                lane.head_index += 1;
                lane.head_offset = 0;
            }
            *taken += k;
            if *taken == *m {
                *taken = 0;
                *cur = (*cur + 1) % lanes.len();
            }
            if stopped {
                return true;
            }
        }
    }

    /// The merge position: per log, the entry it reads next and the slots of that entry
    /// already consumed, the duplicate filter, and the round-robin cursor. Entries received
    /// and not yet consumed are not part of it: a merger restored from it
    /// ([`Merger::restore`]) takes the entries again from [`MergerState::resume_at`] on and
    /// then delivers exactly what this one delivers.
    pub fn state(&self) -> MergerState {
        MergerState {
            m: self.m,
            cur: self.cur as u32,
            taken: self.taken,
            lanes: self
                .lanes
                .iter()
                .map(|l| LaneState {
                    log: l.log,
                    dedup: l.dedup.clone(),
                    head_index: l.head_index,
                    head_offset: l.head_offset,
                    slots_consumed: l.slots_consumed,
                })
                .collect(),
        }
    }

    /// A merger for `groups` over `logs` (as in [`Merger::new`]) at the position `state`,
    /// which must come from a merger of the same logs and `m`.
    pub fn restore(
        logs: &[LogId],
        groups: GroupSet,
        m: u64,
        state: &MergerState,
    ) -> Result<Merger, BadMergerState> {
        let mut merger = Merger::new(logs, groups, m);
        let logs_match = merger.lanes.len() == state.lanes.len()
            && merger
                .lanes
                .iter()
                .zip(&state.lanes)
                .all(|(a, b)| a.log == b.log);
        if !logs_match {
            return Err(BadMergerState("it merges other logs"));
        }
        if state.m != m {
            return Err(BadMergerState("it takes another number of slots per round"));
        }
        if state.cur as usize >= merger.lanes.len() || state.taken >= m {
            return Err(BadMergerState("its round-robin cursor is out of range"));
        }
        for (lane, s) in merger.lanes.iter_mut().zip(&state.lanes) {
            if s.head_offset > s.slots_consumed {
                return Err(BadMergerState(
                    "a lane consumed fewer slots than its offset",
                ));
            }
            lane.dedup = s.dedup.clone();
            lane.head_index = s.head_index;
            lane.head_offset = s.head_offset;
            lane.slots_consumed = s.slots_consumed;
            lane.slots_received = s.slots_consumed - s.head_offset;
        }
        merger.cur = state.cur as usize;
        merger.taken = state.taken;
        Ok(merger)
    }

    /// If the merge waits on a log while others have slots to go: that log, the index of the
    /// next entry it needs, and how many more slots it needs so that everything received so
    /// far can be delivered.
    pub fn blocked_on(&self) -> Option<SkipNeed> {
        let lane = &self.lanes[self.cur];
        if !lane.queue.is_empty() {
            return None;
        }
        let frontier = self.lanes.iter().map(|l| l.slots_received).max()?;
        let target = frontier.div_ceil(self.m) * self.m;
        (target > lane.slots_received).then_some(SkipNeed {
            log: lane.log,
            index: lane.next_index(),
            slots: target - lane.slots_received,
        })
    }

    /// Sequence numbers the duplicate filters hold beyond their contiguous floors (stays small
    /// unless senders crash with messages in flight).
    pub fn dedup_exceptions(&self) -> usize {
        self.lanes.iter().map(|l| l.dedup.held_above()).sum()
    }

    /// Whether every received entry has been consumed.
    pub fn is_drained(&self) -> bool {
        self.lanes.iter().all(|l| l.queue.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupId, MsgId, NodeId};
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn msg(seq: u64, dests: &[u32]) -> Message {
        Message {
            log_seq: seq,
            id: MsgId {
                sender: NodeId(1),
                epoch: 0,
                seq,
            },
            dests: dests.iter().map(|&g| GroupId(g)).collect(),
            payload: Bytes::new(),
        }
    }

    fn batch(msgs: Vec<Message>) -> LogEntry {
        LogEntry::Batch(Arc::from(msgs))
    }

    fn seqs(out: &[Delivery]) -> Vec<u64> {
        out.iter().map(|d| d.msg.id.seq).collect()
    }

    #[test]
    fn takes_m_slots_per_log_in_log_order() {
        let g: GroupSet = [GroupId(0), GroupId(1)].into_iter().collect();
        let mut mg = Merger::new(&[LogId(0), LogId(1)], g, 2);
        mg.push(
            LogId(1),
            0,
            &[batch(vec![msg(10, &[1]), msg(11, &[1]), msg(12, &[1])])],
        )
        .unwrap();
        let mut out = vec![];
        assert_eq!(mg.poll(&mut out), 0, "log 0 has nothing yet");
        assert_eq!(
            mg.blocked_on(),
            Some(SkipNeed {
                log: LogId(0),
                index: 0,
                slots: 4
            })
        );
        mg.push(LogId(0), 0, &[batch(vec![msg(0, &[0])]), LogEntry::Skip(5)])
            .unwrap();
        mg.poll(&mut out);
        // round 0: log 0 slots 0-1 (msg 0, skip), log 1 slots 0-1 (10, 11);
        // round 1: log 0 slots 2-3 (skip), log 1 slot 2 (12), then log 1 runs dry.
        assert_eq!(seqs(&out), vec![0, 10, 11, 12]);
    }

    #[test]
    fn drops_other_groups_and_duplicates() {
        let mut mg = Merger::new(&[LogId(0)], GroupSet::singleton(GroupId(0)), 4);
        mg.push(
            LogId(0),
            0,
            &[batch(vec![
                msg(0, &[0]),
                msg(1, &[1]),
                msg(0, &[0]),
                msg(2, &[0, 1]),
            ])],
        )
        .unwrap();
        let mut out = vec![];
        mg.poll(&mut out);
        assert_eq!(seqs(&out), vec![0, 2]);
    }

    /// A subscriber that delivers only some of a sender's messages must not accumulate them
    /// in its duplicate filter (the filter runs over every message of the log).
    #[test]
    fn duplicate_filter_stays_contiguous() {
        let mut mg = Merger::new(&[LogId(0)], GroupSet::singleton(GroupId(0)), 8);
        let msgs: Vec<Message> = (0..1000)
            .map(|i| msg(i, if i % 4 == 0 { &[0, 1] } else { &[1, 2] }))
            .collect();
        mg.push(LogId(0), 0, &[batch(msgs)]).unwrap();
        let mut out = vec![];
        mg.poll(&mut out);
        assert_eq!(out.len(), 250);
        assert_eq!(mg.dedup_exceptions(), 0);
    }

    #[test]
    fn refuses_holes_and_ignores_overlaps() {
        let mut mg = Merger::new(&[LogId(0)], GroupSet::singleton(GroupId(0)), 1);
        assert_eq!(
            mg.push(LogId(0), 1, &[LogEntry::Skip(1)]),
            Err(Gap {
                log: LogId(0),
                expected: 0,
                got: 1
            })
        );
        mg.push(LogId(0), 0, &[batch(vec![msg(0, &[0])])]).unwrap();
        mg.push(
            LogId(0),
            0,
            &[batch(vec![msg(0, &[0])]), batch(vec![msg(1, &[0])])],
        )
        .unwrap();
        let mut out = vec![];
        mg.poll(&mut out);
        assert_eq!(seqs(&out), vec![0, 1]);
        assert_eq!(mg.next_index(LogId(0)), Some(2));
    }

    /// A merger stopped right after any delivered message, saved and restored into a new
    /// merger that is then fed the entries again from its resume positions, delivers exactly
    /// what the original delivers from there on.
    #[test]
    fn restored_state_continues_the_same_stream() {
        proptest!(|(shape in proptest::collection::vec((0usize..3, 0u64..4, any::<bool>()), 1..50),
                    m in 1u64..5, stop_at in 0usize..40)| {
            let mut logs: [Vec<LogEntry>; 3] = Default::default();
            let mut seq = [0u64; 3];
            for &(log, n, dup) in &shape {
                let dests: &[u32] = [&[0u32][..], &[1], &[0, 1, 2]][log];
                logs[log].push(if n == 0 {
                    LogEntry::Skip(2)
                } else {
                    batch((0..n).map(|_| {
                        seq[log] += 1;
                        // Now and then a resent copy of the previous message.
                        msg(if dup { seq[log] - 1 } else { seq[log] }, dests)
                    }).collect())
                });
            }
            let set: GroupSet = [GroupId(0), GroupId(2)].into_iter().collect();
            let mine = [LogId(0), LogId(2)];
            let feed = |mg: &mut Merger| {
                for l in &mine {
                    let at = mg.next_index(*l).unwrap() as usize;
                    let es = &logs[l.0 as usize];
                    if at < es.len() {
                        mg.push(*l, at as u64, &es[at..]).unwrap();
                    }
                }
            };
            let mut whole = Merger::new(&mine, set.clone(), m);
            feed(&mut whole);
            let mut all = vec![];
            whole.poll(&mut all);
            let mut first = Merger::new(&mine, set.clone(), m);
            feed(&mut first);
            let mut head = vec![];
            let mut n = 0;
            let stopped = first.poll_until(&mut head, |_| { n += 1; n > stop_at });
            prop_assert_eq!(stopped, all.len() > stop_at);
            let state = first.state();
            let mut second = Merger::restore(&mine, set.clone(), m, &state).unwrap();
            for (l, at) in state.resume_at() {
                prop_assert_eq!(second.next_index(l), Some(at));
            }
            feed(&mut second);
            let mut tail = vec![];
            second.poll(&mut tail);
            head.extend(tail);
            prop_assert_eq!(seqs(&head), seqs(&all));
            prop_assert_eq!(second.state(), whole.state());
            prop_assert!(Merger::restore(&mine, set.clone(), m + 1, &state).is_err());
            prop_assert!(Merger::restore(&[LogId(0)], set, m, &state).is_err());
        });
    }

    /// Long skips are taken whole rounds at a time (`skip_whole_rounds`); the stream must be
    /// the one the naive merge gives, which the same logs with every skip cut into skips of one
    /// slot (never taken more than one slot at a time) stand in for. Also: a skip of 2^40 slots
    /// on every log is merged at once.
    #[test]
    fn long_skips_merge_like_unit_skips() {
        proptest!(|(shape in proptest::collection::vec((0usize..3, 0u64..4, 1u64..300), 1..40),
                    m in 1u64..9)| {
            let mut long: [Vec<LogEntry>; 3] = Default::default();
            let mut unit: [Vec<LogEntry>; 3] = Default::default();
            let mut seq = 0;
            for &(log, n, skip) in &shape {
                let dests: &[u32] = [&[0u32][..], &[1], &[0, 1, 2]][log];
                if n == 0 {
                    long[log].push(LogEntry::Skip(skip));
                    unit[log].extend((0..skip).map(|_| LogEntry::Skip(1)));
                } else {
                    let b = batch((0..n).map(|_| { seq += 1; msg(seq, dests) }).collect());
                    long[log].push(b.clone());
                    unit[log].push(b);
                }
            }
            let set: GroupSet = [GroupId(0), GroupId(1)].into_iter().collect();
            let logs = [LogId(0), LogId(1), LogId(2)];
            let run = |entries: &[Vec<LogEntry>; 3]| {
                let mut mg = Merger::new(&logs, set.clone(), m);
                for (i, es) in entries.iter().enumerate() {
                    mg.push(LogId(i as u32), 0, es).unwrap();
                }
                let mut out = vec![];
                mg.poll(&mut out);
                (seqs(&out), mg.lanes.iter().map(|l| l.slots_consumed).collect::<Vec<_>>())
            };
            prop_assert_eq!(run(&long), run(&unit));
        });
        let mut mg = Merger::new(&[LogId(0), LogId(1)], GroupSet::singleton(GroupId(0)), 64);
        mg.push(
            LogId(0),
            0,
            &[LogEntry::Skip(1 << 40), batch(vec![msg(1, &[0])])],
        )
        .unwrap();
        mg.push(LogId(1), 0, &[LogEntry::Skip(1 << 40)]).unwrap();
        let mut out = vec![];
        mg.poll(&mut out);
        assert_eq!(seqs(&out), vec![1]);
    }

    /// Log `i` carries messages to group `i` (logs 0, 1) or to all groups (log 2), mixed with
    /// skips. A subscriber's stream must not depend on how entries are chunked, and the
    /// streams of two subscribers must agree on common messages up to where one of them is
    /// blocked (section c.5: all streams are projections of one order).
    #[test]
    fn streams_are_projections_of_one_order() {
        proptest!(|(shape in proptest::collection::vec((0usize..3, 0u64..4), 1..60),
                    m in 1u64..5, chunk in 1usize..7)| {
            let mut logs: [Vec<LogEntry>; 3] = Default::default();
            let mut seq = 0;
            for &(log, n) in &shape {
                let dests: &[u32] = [&[0u32][..], &[1], &[0, 1, 2]][log];
                logs[log].push(if n == 0 {
                    LogEntry::Skip(2)
                } else {
                    batch((0..n).map(|_| { seq += 1; msg(seq, dests) }).collect())
                });
            }
            let run = |groups: &[u32], chunk: usize| {
                let set: GroupSet = groups.iter().map(|&g| GroupId(g)).collect();
                let mine: Vec<LogId> = (0..3u32)
                    .filter(|&l| l == 2 || set.contains(GroupId(l)))
                    .map(LogId)
                    .collect();
                let mut mg = Merger::new(&mine, set, m);
                let mut out = vec![];
                let mut at = 0;
                while at < 60 {
                    for l in &mine {
                        let es = &logs[l.0 as usize];
                        let end = (at + chunk).min(es.len());
                        if at < end {
                            mg.push(*l, at as u64, &es[at..end]).unwrap();
                        }
                    }
                    mg.poll(&mut out);
                    at += chunk;
                }
                out
            };
            let a = run(&[0, 1], chunk);
            prop_assert_eq!(seqs(&a), seqs(&run(&[0, 1], 1)));
            let b = seqs(&run(&[1], chunk));
            let a_on_1: Vec<u64> = a
                .iter()
                .filter(|d| d.msg.dests.contains(GroupId(1)))
                .map(|d| d.msg.id.seq)
                .collect();
            let n = a_on_1.len().min(b.len());
            prop_assert_eq!(&a_on_1[..n], &b[..n]);
        });
    }
}
