//! The subscriber side of one log: turns pushed, fetched and locally decided entries into one
//! contiguous stream, and catches up by index after loss or restart.
//!
//! Entries arrive from three places: the leader's pushes, answers to this node's fetches, and
//! (on an acceptor) its own consensus instance. Anything that does not extend the stream
//! exactly is either old (ignored) or ahead of a hole, which triggers a fetch from the next
//! index. A feed that has seen nothing new for `fetch_poll_ticks` fetches anyway, so a lost
//! last push is recovered even on an idle log. Every `progress_ticks` the feed reports its
//! position to the log's acceptors (and, on a node that checkpoints its state, the position its
//! latest checkpoint covers), which trim below what every subscriber needs (see
//! [`crate::server`]).

use crate::config::ClusterConfig;
use crate::ids::{LogId, NodeId};
use crate::message::{LogEntry, NetMsg};
use std::sync::Arc;

/// What a feed observed that its node must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// The entries from `next` on were trimmed before this node received them; it must
    /// recover its state by transfer from a peer (see the recovery issue).
    Trimmed { log: LogId, next: u64, first: u64 },
}

pub(crate) struct Feed {
    log: LogId,
    cfg: Arc<ClusterConfig>,
    /// Acceptors to fetch from (without this node).
    sources: Vec<NodeId>,
    next: u64,
    advanced_at: u64,
    fetched_at: Option<u64>,
    rotation: usize,
    reported_at: u64,
    reported_next: u64,
    trimmed: bool,
    /// The position this node's checkpoint covers (reported with progress), if it checkpoints.
    checkpointed: Option<u64>,
    pub fetches: u64,
}

/// A feed also reports its position whenever it advanced this many entries since the last
/// report, so a node starved of CPU (which ticks rarely) still tells the leader how far behind
/// it is.
const REPORT_EVERY_ENTRIES: u64 = 64;

impl Feed {
    pub fn new(cfg: Arc<ClusterConfig>, log: LogId, me: NodeId) -> Self {
        let sources: Vec<NodeId> = cfg
            .log(log)
            .expect("log exists")
            .acceptors
            .iter()
            .copied()
            .filter(|&a| a != me)
            .collect();
        Feed {
            log,
            rotation: log.0 as usize,
            cfg,
            sources,
            next: 0,
            advanced_at: 0,
            fetched_at: None,
            reported_at: 0,
            reported_next: 0,
            trimmed: false,
            checkpointed: None,
            fetches: 0,
        }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// Offers entries starting at `start`. Returns the part that extends the stream, with its
    /// start index; asks for the missing part if the entries are ahead of a hole.
    pub fn offer<'a>(
        &mut self,
        start: u64,
        entries: &'a [LogEntry],
        now: u64,
        out: &mut Vec<(NodeId, NetMsg)>,
    ) -> Option<(u64, &'a [LogEntry])> {
        let end = start + entries.len() as u64;
        if start > self.next {
            self.fetch(now, out, true);
            return None;
        }
        if end <= self.next {
            return None;
        }
        let fresh = &entries[(self.next - start) as usize..];
        let at = self.next;
        self.next = end;
        self.advanced_at = now;
        self.fetched_at = None;
        if self.next >= self.reported_next + REPORT_EVERY_ENTRIES {
            self.report(now, out);
        }
        Some((at, fresh))
    }

    /// Records that this node's latest checkpoint covers the entries below `next`; reported to
    /// the acceptors from now on (at once, and with every progress report).
    pub fn set_checkpointed(&mut self, next: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        if self.checkpointed.is_some_and(|c| c >= next) {
            return;
        }
        self.checkpointed = Some(next);
        self.report_checkpoint(out);
    }

    pub fn checkpointed(&self) -> Option<u64> {
        self.checkpointed
    }

    /// Moves the stream to `next` (a checkpoint's position was installed): entries from there
    /// on are handed out next, fetched at once. Forgets that the log was trimmed past it.
    pub fn restart_at(&mut self, next: u64, now: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        self.next = next;
        self.trimmed = false;
        self.advanced_at = now;
        self.fetched_at = None;
        self.reported_next = next;
        self.fetch(now, out, true);
    }

    pub fn on_trimmed(&mut self, first: u64) -> Option<FeedEvent> {
        if first <= self.next || self.trimmed {
            return None;
        }
        self.trimmed = true;
        Some(FeedEvent::Trimmed {
            log: self.log,
            next: self.next,
            first,
        })
    }

    /// Sends a fetch for the next index, at most once per tick (`urgent`) or once per
    /// `fetch_poll_ticks`, rotating over the acceptors so a dead one is passed over.
    fn fetch(&mut self, now: u64, out: &mut Vec<(NodeId, NetMsg)>, urgent: bool) {
        if self.sources.is_empty() || self.trimmed {
            return;
        }
        let spacing = if urgent {
            1
        } else {
            self.cfg.tuning.fetch_poll_ticks
        };
        if self.fetched_at.is_some_and(|t| now < t + spacing) {
            return;
        }
        self.fetched_at = Some(now);
        self.fetches += 1;
        self.rotation += 1;
        let to = self.sources[self.rotation % self.sources.len()];
        out.push((
            to,
            NetMsg::Fetch {
                log: self.log,
                from: self.next,
            },
        ));
    }

    pub fn tick(&mut self, now: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        let cfg = self.cfg.clone();
        let t = &cfg.tuning;
        if now >= self.advanced_at + t.fetch_poll_ticks {
            self.fetch(now, out, false);
        }
        if now >= self.reported_at + t.progress_ticks {
            self.report(now, out);
        }
    }

    fn report_checkpoint(&self, out: &mut Vec<(NodeId, NetMsg)>) {
        let Some(next) = self.checkpointed else {
            return;
        };
        for &a in &self.cfg.log(self.log).expect("log exists").acceptors {
            out.push((
                a,
                NetMsg::Checkpointed {
                    log: self.log,
                    next,
                },
            ));
        }
    }

    fn report(&mut self, now: u64, out: &mut Vec<(NodeId, NetMsg)>) {
        self.report_checkpoint(out);
        self.reported_at = now;
        self.reported_next = self.next;
        for &a in &self.cfg.log(self.log).expect("log exists").acceptors {
            out.push((
                a,
                NetMsg::Progress {
                    log: self.log,
                    next: self.next,
                },
            ));
        }
    }
}
