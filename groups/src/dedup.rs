//! At-most-once filters keyed by sender.

use crate::ids::{MsgId, NodeId};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;

/// The sequence numbers seen from one sender incarnation: everything below `floor`, plus the
/// members of `above`. Senders number messages 0, 1, 2, ... and most arrive in order, so `above`
/// stays small.
#[derive(Default, Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqWindow {
    floor: u64,
    above: BTreeSet<u64>,
}

impl SeqWindow {
    /// Records `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq < self.floor {
            return false;
        }
        if seq == self.floor {
            self.floor += 1;
            while self.above.remove(&self.floor) {
                self.floor += 1;
            }
            return true;
        }
        self.above.insert(seq)
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq < self.floor || self.above.contains(&seq)
    }
}

/// A [`SeqWindow`] per sender incarnation.
///
/// A window only stays small if it sees every sequence number of its sender: reliable
/// multicast numbers messages per sender and every destination member sees all of them; the
/// merge numbers them per sender *and log* ([`crate::message::Message::log_seq`]) and runs
/// every message of the log through the filter, delivered or not.
#[derive(Default, Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dedup {
    seen: FxHashMap<(NodeId, u32), SeqWindow>,
}

impl Dedup {
    /// Records `seq` of `sender`'s incarnation `epoch`; returns whether it was new.
    pub fn insert(&mut self, sender: NodeId, epoch: u32, seq: u64) -> bool {
        self.seen.entry((sender, epoch)).or_default().insert(seq)
    }

    /// Records a reliable-multicast id; returns whether it was new.
    pub fn insert_id(&mut self, id: MsgId) -> bool {
        self.insert(id.sender, id.epoch, id.seq)
    }

    pub fn contains(&self, sender: NodeId, epoch: u32, seq: u64) -> bool {
        self.seen
            .get(&(sender, epoch))
            .is_some_and(|w| w.contains(seq))
    }

    /// Sequence numbers held above the contiguous floors (a leak detector for tests).
    pub fn held_above(&self) -> usize {
        self.seen.values().map(|w| w.above.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    proptest! {
        #[test]
        fn window_matches_a_set(seqs in proptest::collection::vec(0u64..64, 0..300)) {
            let mut w = SeqWindow::default();
            let mut model = HashSet::new();
            for s in seqs {
                prop_assert_eq!(w.insert(s), model.insert(s));
                for q in 0..64 {
                    prop_assert_eq!(w.contains(q), model.contains(&q));
                }
            }
        }
    }
}
