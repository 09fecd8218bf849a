//! The acceptor side of one log: consensus plus everything around it.
//!
//! While this acceptor leads the log it
//! - batches submitted messages (closing a batch at `batch_bytes_max` or after
//!   `batch_delay_ticks`) and proposes batches while fewer than `inflight_entries_max` entries
//!   are undecided (flow control);
//! - pads the log with skip entries: every Delta it proposes `Skip(n)` for the shortfall below
//!   lambda*Delta slots, and on a subscriber's hint it pads up to what that subscriber needs;
//! - pushes newly decided entries to subscribers that are not acceptors, acknowledges decided
//!   messages to their senders, and trims below what every subscriber needs (what it
//!   received, or for a subscriber that checkpoints, what its checkpoint covers; see
//!   [`LogServer::trim_bound`]).
//!
//! Every acceptor, leader or not, answers fetches from its decided log.

use crate::config::{ClusterConfig, Tuning};
use crate::ids::{LogId, NodeId};
use crate::log::{OrderedLog, Read};
use crate::message::{LogEntry, Message, NetMsg};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub(crate) struct LogServer {
    id: LogId,
    cfg: Arc<ClusterConfig>,
    /// Subscriber nodes that are not acceptors: the leader pushes decided entries to them.
    push_to: Vec<NodeId>,
    log: Box<dyn OrderedLog>,
    batch: Vec<Message>,
    batch_bytes: usize,
    batch_opened_at: u64,
    /// Closed batches waiting for the in-flight bound.
    held: VecDeque<LogEntry>,
    /// Slots proposed in the current Delta interval, and when it started.
    interval_slots: u64,
    interval_start: u64,
    was_leader: bool,
    /// Highest `next` index each subscriber node reported, and when it last reported.
    progress: BTreeMap<NodeId, (u64, u64)>,
    /// Highest position each checkpointing subscriber's checkpoint covers, and when it last
    /// reported it.
    checkpoints: BTreeMap<NodeId, (u64, u64)>,
    /// `(tick, decided index)` whenever the decided index grew, over the last
    /// `catch_up_ticks`: when each entry was decided, for measuring subscriber lag in ticks.
    decided_at: VecDeque<(u64, u64)>,
    last_trim_check: u64,
    scratch: Vec<LogEntry>,
    /// Entries decided and not yet taken by the node.
    decided: Option<(u64, Vec<LogEntry>)>,
    /// Counters (see [`crate::node::NodeStats`]).
    pub rejected: u64,
    pub became_leader: u64,
    pub skips_proposed: u64,
    pub batches_proposed: u64,
    pub held_back: u64,
}

impl LogServer {
    pub fn new(cfg: Arc<ClusterConfig>, id: LogId, log: Box<dyn OrderedLog>) -> Self {
        let lc = cfg.log(id).expect("log exists");
        let push_to = cfg
            .log_subscribers(id)
            .iter()
            .copied()
            .filter(|n| !lc.acceptors.contains(n))
            .collect();
        LogServer {
            id,
            push_to,
            log,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_opened_at: 0,
            held: VecDeque::new(),
            interval_slots: 0,
            interval_start: 0,
            was_leader: false,
            progress: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            decided_at: VecDeque::new(),
            last_trim_check: 0,
            scratch: Vec::new(),
            decided: None,
            rejected: 0,
            became_leader: 0,
            skips_proposed: 0,
            batches_proposed: 0,
            held_back: 0,
            cfg,
        }
    }

    fn tuning(&self) -> &Tuning {
        &self.cfg.tuning
    }

    pub fn describe(&self) -> String {
        format!(
            "batch={} held={} interval_slots={} subscribers-progress={:?} checkpoints={:?}",
            self.batch.len(),
            self.held.len(),
            self.interval_slots,
            self.progress,
            self.checkpoints
        )
    }

    pub fn log(&self) -> &dyn OrderedLog {
        self.log.as_ref()
    }

    pub fn log_mut(&mut self) -> &mut dyn OrderedLog {
        self.log.as_mut()
    }

    pub fn on_log_msg(&mut self, from: NodeId, msg: crate::message::LogMsg) {
        if let Err(e) = self.log.handle(from, msg) {
            self.rejected += 1;
            tracing::warn!(log = %self.id, %from, error = %e, "consensus message refused");
        }
    }

    pub fn on_submit(
        &mut self,
        from: NodeId,
        msgs: Vec<Message>,
        now: u64,
        out: &mut Vec<(NodeId, NetMsg)>,
    ) {
        if !self.log.is_leader() {
            out.push((
                from,
                NetMsg::NotLeader {
                    log: self.id,
                    leader: self.log.leader(),
                },
            ));
            return;
        }
        let cfg = self.cfg.clone();
        let covers = &cfg.log(self.id).expect("log exists").covers;
        let max = self.tuning().payload_bytes_max;
        for m in msgs {
            if m.dests.is_empty() || !m.dests.is_subset(covers) || m.payload.len() > max {
                self.rejected += 1;
                tracing::warn!(log = %self.id, %from, id = %m.id, "submitted message refused: destinations outside the log's coverage or payload too large");
                continue;
            }
            if self.batch.is_empty() {
                self.batch_opened_at = now;
            }
            self.batch_bytes += m.payload.len();
            self.batch.push(m);
            if self.batch_bytes >= self.tuning().batch_bytes_max {
                self.close_batch();
            }
        }
    }

    fn close_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let msgs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.held.push_back(LogEntry::Batch(Arc::from(msgs)));
    }

    fn inflight(&self) -> u64 {
        self.log.accepted_idx() - self.log.decided_idx()
    }

    /// Proposes held batches while the in-flight bound allows. Called when outgoing messages
    /// are drained, so everything submitted since the last drain travels in one batch.
    pub fn flush(&mut self, now: u64) {
        let delay = self.tuning().batch_delay_ticks as u64;
        if !self.batch.is_empty() && now.saturating_sub(self.batch_opened_at) >= delay {
            self.close_batch();
        }
        let lagging = self.subscriber_lag(now) > self.tuning().subscriber_lag_ticks_max
            && self.tuning().subscriber_lag_ticks_max > 0;
        while !lagging
            && !self.held.is_empty()
            && self.inflight() < self.tuning().inflight_entries_max
        {
            let entry = self.held.pop_front().expect("non-empty");
            self.propose(entry);
        }
        if !self.held.is_empty() {
            self.held_back += 1;
        }
    }

    fn propose(&mut self, entry: LogEntry) {
        let slots = entry.slots();
        let is_skip = matches!(entry, LogEntry::Skip(_));
        match self.log.propose(entry) {
            Ok(()) => {
                self.interval_slots += slots;
                if is_skip {
                    self.skips_proposed += 1;
                } else {
                    self.batches_proposed += 1;
                }
            }
            Err(lost) => {
                // Leadership lost: the senders resend to the new leader.
                if let LogEntry::Batch(m) = lost {
                    tracing::debug!(log = %self.id, messages = m.len(), "batch dropped on leadership loss");
                }
            }
        }
    }

    /// A subscriber that has entries below `index` needs `slots` more slots from there on.
    pub fn on_skip_hint(&mut self, index: u64, slots: u64) {
        if !self.log.is_leader() || slots == 0 {
            return;
        }
        let accepted = self.log.accepted_idx();
        // A subscriber far behind is not blocked by an idle log; it just has to catch up. One
        // that claims to hold entries beyond this log's end got them from somewhere else (a
        // node with another cluster's state, issue 18): padding for it would only add a skip
        // at the wrong index, and its next hint would ask again, without end.
        if index < self.log.first_idx() || index > accepted || accepted - index > 4096 {
            return;
        }
        let pending: u64 =
            self.batch.len() as u64 + self.held.iter().map(LogEntry::slots).sum::<u64>();
        let logged: u64 = self
            .log
            .read_accepted(index, (accepted.saturating_sub(index)) as usize)
            .iter()
            .map(LogEntry::slots)
            .sum();
        if pending + logged < slots && self.inflight() < self.tuning().inflight_entries_max {
            self.propose(LogEntry::Skip(slots - pending - logged));
        }
    }

    pub fn on_fetch(&mut self, from: NodeId, index: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        match self
            .log
            .read_decided(index, self.tuning().fetch_entries_max)
        {
            Read::Entries(entries) if entries.is_empty() => {}
            Read::Entries(entries) => out.push((
                from,
                NetMsg::Entries {
                    log: self.id,
                    start: index,
                    entries,
                },
            )),
            Read::Trimmed { first } => out.push((
                from,
                NetMsg::Trimmed {
                    log: self.id,
                    first,
                },
            )),
        }
    }

    pub fn on_progress(&mut self, from: NodeId, next: u64, now: u64) {
        let p = self.progress.entry(from).or_insert((0, now));
        *p = (p.0.max(next), now);
    }

    /// A subscriber holds a checkpoint covering the entries below `next`.
    pub fn on_checkpointed(&mut self, from: NodeId, next: u64, now: u64) {
        let p = self.checkpoints.entry(from).or_insert((0, now));
        *p = (p.0.max(next), now);
    }

    /// How many ticks the slowest live subscriber is behind: the time since the first entry it
    /// lacks was decided. Subscribers silent for `20 * progress_ticks` (crashed or cut off)
    /// and those more than `catch_up_ticks` behind (catching up by fetching) do not count.
    pub fn subscriber_lag(&self, now: u64) -> u64 {
        let t = self.tuning();
        let silent_after = 20 * t.progress_ticks;
        let decided = self.log.decided_idx();
        let mut worst = 0;
        for &(next, at) in self.progress.values() {
            if next >= decided || now > at + silent_after {
                continue;
            }
            // The first sample past `next` tells when entry `next` was decided. If that is
            // the oldest sample, the entry was decided before the window began: the
            // subscriber is catching up (or the leader just started) and does not count.
            let i = self.decided_at.partition_point(|&(_, d)| d <= next);
            if i == 0 {
                continue;
            }
            if let Some(&(tick, _)) = self.decided_at.get(i) {
                worst = worst.max(now.saturating_sub(tick));
            }
        }
        worst
    }

    fn record_decided(&mut self, now: u64) {
        let d = self.log.decided_idx();
        if self.decided_at.back().is_none_or(|&(_, last)| last < d) {
            self.decided_at.push_back((now, d));
        }
        let keep = self.tuning().catch_up_ticks;
        while self
            .decided_at
            .front()
            .is_some_and(|&(t, _)| t + keep < now)
        {
            self.decided_at.pop_front();
        }
    }

    pub fn tick(&mut self, now: u64) {
        self.log.tick();
        self.record_decided(now);
        let leader = self.log.is_leader();
        if leader != self.was_leader {
            self.was_leader = leader;
            if leader {
                self.became_leader += 1;
            }
            self.interval_slots = 0;
            self.interval_start = now;
            if !leader {
                self.batch.clear();
                self.batch_bytes = 0;
                self.held.clear();
            }
        }
        if !leader {
            return;
        }
        let t = self.tuning();
        let (delta, lambda) = (t.skip_delta_ticks as u64, t.skip_lambda_per_delta);
        if now >= self.interval_start + delta {
            // Skips obey the in-flight bound too: a log that cannot decide gains nothing from
            // more proposals, and the shortfall is made up in a later interval.
            if lambda > self.interval_slots && self.inflight() < self.tuning().inflight_entries_max
            {
                self.propose(LogEntry::Skip(lambda - self.interval_slots));
            }
            self.interval_slots = 0;
            self.interval_start = now;
        }
        if self.tuning().trim && now >= self.last_trim_check + self.tuning().progress_ticks {
            self.last_trim_check = now;
            self.maybe_trim(now);
        }
    }

    /// The index below which the log may be trimmed: the minimum over its subscribers of
    /// - for a subscriber that reports checkpoints (a replica that can be restored from a
    ///   peer's checkpoint): the position its latest checkpoint covers; such a subscriber
    ///   silent for `20 * progress_ticks` (crashed, cut off) does not count: when it comes
    ///   back it recovers by state transfer from a peer whose checkpoint does count;
    /// - for any other subscriber: what it reported received (0 before its first report),
    ///   whether it is alive or not, since it has no other way to recover.
    ///
    /// `None` when no subscriber counts.
    pub fn trim_bound(&self, now: u64) -> Option<u64> {
        let silent_after = 20 * self.tuning().progress_ticks;
        self.cfg
            .log_subscribers(self.id)
            .iter()
            .filter_map(|n| match self.checkpoints.get(n) {
                Some(&(next, at)) => {
                    let heard = self.progress.get(n).map_or(at, |p| p.1.max(at));
                    (now <= heard + silent_after).then_some(next)
                }
                None => Some(self.progress.get(n).map_or(0, |p| p.0)),
            })
            .min()
    }

    fn maybe_trim(&mut self, now: u64) {
        let Some(below) = self.trim_bound(now) else {
            return;
        };
        if below >= self.log.first_idx() + self.tuning().trim_every_entries {
            if let Err(e) = self.log.trim(below) {
                tracing::trace!(log = %self.id, error = %e, "trim skipped");
            }
        }
    }

    /// Collects decided entries; as leader, pushes them to non-acceptor subscribers and
    /// acknowledges their messages to the senders.
    pub fn poll_decided(&mut self, out: &mut Vec<(NodeId, NetMsg)>) {
        self.scratch.clear();
        let start = self.log.take_decided(&mut self.scratch);
        if self.scratch.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.scratch);
        if self.log.is_leader() {
            let mut acks: BTreeMap<NodeId, Vec<(u32, u64)>> = BTreeMap::new();
            for e in &entries {
                if let LogEntry::Batch(msgs) = e {
                    for m in msgs.iter() {
                        acks.entry(m.id.sender)
                            .or_default()
                            .push((m.id.epoch, m.id.seq));
                    }
                }
            }
            for (sender, ids) in acks {
                out.push((sender, NetMsg::Ack { log: self.id, ids }));
            }
            for &n in &self.push_to {
                out.push((
                    n,
                    NetMsg::Entries {
                        log: self.id,
                        start,
                        entries: entries.clone(),
                    },
                ));
            }
        }
        match &mut self.decided {
            Some((s, es)) if *s + es.len() as u64 == start => es.extend(entries),
            slot => *slot = Some((start, entries)),
        }
    }

    /// Decided entries since the last call, for the node's own subscriptions.
    pub fn take_decided(&mut self) -> Option<(u64, Vec<LogEntry>)> {
        self.decided.take()
    }

    /// Moves the log's consensus messages into `out`.
    pub fn take_outgoing(&mut self, out: &mut Vec<(NodeId, NetMsg)>) {
        let mut raw = Vec::new();
        self.log.take_outgoing(&mut raw);
        out.extend(raw.into_iter().map(|(to, msg)| {
            (
                to,
                NetMsg::Log {
                    log: self.id,
                    msg: Box::new(msg),
                },
            )
        }));
    }

    pub fn reconnected(&mut self, peer: NodeId) {
        self.log.reconnected(peer);
    }
}
