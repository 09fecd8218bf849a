//! At-most-once filters keyed by sender.

use crate::ids::{MsgId, NodeId};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;

/// The sequence numbers seen from one sender incarnation: everything below `floor`, plus the
/// members of `above`. Senders number messages 0, 1, 2, ... and most arrive in order, so `above`
/// stays small.
#[derive(Default, Debug, Clone)]
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
#[derive(Default, Debug, Clone)]
pub struct Dedup {
    seen: FxHashMap<(NodeId, u32), SeqWindow>,
}

impl Dedup {
    /// Records `id`; returns whether it was new.
    pub fn insert(&mut self, id: MsgId) -> bool {
        self.seen
            .entry((id.sender, id.epoch))
            .or_default()
            .insert(id.seq)
    }

    pub fn contains(&self, id: MsgId) -> bool {
        self.seen
            .get(&(id.sender, id.epoch))
            .is_some_and(|w| w.contains(id.seq))
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
