//! Reads served off the log by a partition replica (S-SMR and DS-SMR fast reads).
//!
//! A client with fast reads on ([`super::proxy::ClientOptions::fast_reads`]) sends a
//! read-only access ([`super::service::PartitionedService::read_only`]) whose objects are all
//! in one partition (S-SMR: by the placement rule; DS-SMR: by its location cache) to one
//! replica of that partition, point to point ([`crate::wire::AppMsg::Read`], a
//! [`super::msg::CommandMsg`]). The replica asks its node for a read index of every log it
//! merges ([`groups::readindex`]): per log, a position past every entry decided before the
//! read reached it. It answers the read once
//!
//! 1. its own merge has wholly merged every one of those logs up to the read's position
//!    ([`groups::merge::Merger::merged_below`]), and
//! 2. its partition core has handled every delivery that came from below that position (a
//!    multi-partition command waiting for another partition's exchange holds later reads
//!    back; one from above the position does not),
//!
//! from the core's state at that moment, on copies of the objects, changing nothing
//! replicated (no client table entry, no replicated counter): replicas that served different
//! reads stay identical.
//!
//! **Why it is linearizable.** A write acknowledged before the read began was executed by a
//! replica of the partition that then owned the objects, at the write's place in that
//! partition's stream, which is an entry decided before the read began: below the read's
//! position in one of the logs the partition merges. By 1 and 2 the serving replica has
//! handled it, and everything before it in its stream. Objects that moved (DS-SMR): a move
//! into the partition decided before the read began is below the position, so the object and
//! the value the source sent (with every write the source executed before the move) are here;
//! a move out of the partition decided before the read began is below it too, so the object is
//! gone and the read is refused. The state read is the partition's state at a point of its
//! stream between the read's start and its answer, so the read can be placed there. A
//! deposed leader cannot make this stale: the read index is confirmed by a quorum of the log's
//! acceptors ([`groups::readindex`]).
//!
//! **Refusals.** An object the partition does not own at that point (DS-SMR: a stale cache or
//! a concurrent move; S-SMR: a client that placed it wrongly), an access that needs more
//! objects (`retry(gamma)`), a command that is not read-only, and a core that does not serve
//! reads this way (the oracle, DynaStar partitions, combined-mode partitions, and any replica
//! whose node merges its logs for it) are answered [`super::msg::Outcome::Retry`] (or what the
//! access would answer): the client then orders the command through the logs as any other.

use super::msg::CommandMsg;
use groups::ids::LogId;
use groups::merge::Merger;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Where a delivery the core has not handled yet came from (`None`: a checkpoint mark).
pub(crate) type Place = Option<(LogId, u64)>;

/// Per log, the position a read waits for (a read index), shared by the reads of one index.
type Positions = Arc<[(LogId, u64)]>;

/// A partition replica's reads off the log: those that arrived since the last read index was
/// asked for, those waiting for their index, and those waiting for the core to reach it.
#[derive(Default)]
pub(crate) struct Reads {
    new: Vec<CommandMsg>,
    asked: BTreeMap<u64, Vec<CommandMsg>>,
    next_token: u64,
    ready: Vec<(Positions, CommandMsg)>,
    /// Per delivery handed to the core and not yet handled (in the core's queue order), where
    /// it came from.
    unhandled: VecDeque<Place>,
    /// Reads answered by this incarnation (not replicated).
    pub served: u64,
}

impl Reads {
    /// A read arrived from a client.
    pub fn arrived(&mut self, c: CommandMsg) {
        self.new.push(c);
    }

    /// The token of a read index to ask for the reads that arrived since the last one, if any.
    pub fn ask(&mut self) -> Option<u64> {
        if self.new.is_empty() {
            return None;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.asked.insert(token, std::mem::take(&mut self.new));
        Some(token)
    }

    /// Read index `token` completed at `positions`.
    pub fn indexed(&mut self, token: u64, positions: Vec<(LogId, u64)>) {
        if let Some(reads) = self.asked.remove(&token) {
            let positions: Positions = positions.into();
            self.ready
                .extend(reads.into_iter().map(|c| (positions.clone(), c)));
        }
    }

    /// The core queued a delivery (or a checkpoint mark) from `place`.
    pub fn queued(&mut self, place: Place) {
        self.unhandled.push_back(place);
    }

    /// The core's queue now holds `backlog` items: the ones before them were handled (a core
    /// handles its queue in order).
    pub fn handled_down_to(&mut self, backlog: usize) {
        while self.unhandled.len() > backlog {
            self.unhandled.pop_front();
        }
    }

    /// The core's state was replaced (a checkpoint installed): nothing it held is pending.
    pub fn reset_queue(&mut self) {
        self.unhandled.clear();
    }

    /// Takes the reads whose positions the replica has reached (see the module docs):
    /// `merger` has wholly merged each of their logs below the position, and no unhandled
    /// delivery comes from below it.
    pub fn take_reached(&mut self, merger: &Merger, out: &mut Vec<CommandMsg>) {
        if self.ready.is_empty() {
            return;
        }
        // Per log, the lowest entry an unhandled delivery came from (a log's deliveries are
        // queued in entry order, so its first one).
        let mut lowest: Vec<(LogId, u64)> = Vec::new();
        for &(log, index) in self.unhandled.iter().flatten() {
            if !lowest.iter().any(|(l, _)| *l == log) {
                lowest.push((log, index));
            }
        }
        let reached = |positions: &[(LogId, u64)]| {
            positions.iter().all(|&(log, pos)| {
                merger.merged_below(log).is_none_or(|m| m >= pos)
                    && !lowest.iter().any(|&(l, i)| l == log && i < pos)
            })
        };
        let before = out.len();
        let mut i = 0;
        while i < self.ready.len() {
            if reached(&self.ready[i].0) {
                out.push(self.ready.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        self.served += (out.len() - before) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ClientId;
    use bytes::Bytes;
    use groups::groupset::GroupSet;
    use groups::ids::GroupId;
    use groups::ids::NodeId;
    use groups::message::LogEntry;

    fn read(seq: u64) -> CommandMsg {
        CommandMsg {
            client: ClientId::new(NodeId(9), 1),
            seq,
            attempt: 1,
            floor: 0,
            kind: super::super::service::Kind::Access(vec![1]),
            partitions: vec![0],
            fallback: false,
            command: Bytes::new(),
        }
    }

    #[test]
    fn a_read_waits_for_the_merge_and_for_unhandled_deliveries_below_its_position() {
        let log = LogId(0);
        let mut merger = Merger::new(&[log], GroupSet::singleton(GroupId(0)), 1);
        let mut r = Reads::default();
        r.arrived(read(1));
        let token = r.ask().expect("a read index is asked for");
        assert_eq!(r.ask(), None, "one index per batch of reads");
        r.indexed(token, vec![(log, 2)]);
        let mut out = Vec::new();
        r.take_reached(&merger, &mut out);
        assert!(out.is_empty(), "nothing merged yet");
        merger
            .push(log, 0, &[LogEntry::Skip(1), LogEntry::Skip(1)])
            .unwrap();
        let mut d = Vec::new();
        merger.poll(&mut d);
        assert_eq!(merger.merged_below(log), Some(2));
        r.queued(Some((log, 1)));
        r.take_reached(&merger, &mut out);
        assert!(out.is_empty(), "a delivery from entry 1 is not handled yet");
        r.queued(Some((log, 2)));
        r.handled_down_to(1);
        r.take_reached(&merger, &mut out);
        assert_eq!(
            out.len(),
            1,
            "only a delivery from above the position is left"
        );
        assert_eq!(r.served, 1);
        out.clear();
        r.take_reached(&merger, &mut out);
        assert!(out.is_empty(), "a read is served once");
    }
}
