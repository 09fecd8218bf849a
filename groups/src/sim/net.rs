//! The simulated network: latency, jitter, loss, duplication and cuts, all drawn from the
//! simulation's seeded RNG.

use crate::ids::NodeId;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

/// Probabilistic faults and delays of the network.
#[derive(Clone, Debug)]
pub struct NetFaults {
    /// One-way delay of a message, uniform in this range (microseconds).
    pub latency_us: (u64, u64),
    /// Probability that a message gets an extra delay uniform in `0..spike_us` (this is what
    /// reorders messages beyond the base jitter).
    pub spike_prob: f64,
    pub spike_us: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub dup: f64,
}

impl NetFaults {
    /// A fast, reliable network.
    pub fn calm() -> Self {
        NetFaults {
            latency_us: (50, 150),
            spike_prob: 0.0,
            spike_us: 0,
            loss: 0.0,
            dup: 0.0,
        }
    }
}

/// Network state: the fault model plus the directed links that are cut.
#[derive(Clone, Debug)]
pub struct Network {
    pub faults: NetFaults,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    pub fn new(faults: NetFaults) -> Self {
        Network {
            faults,
            cut: BTreeSet::new(),
        }
    }

    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts the link from `a` to `b` only (one-way partition).
    pub fn cut_one_way(&mut self, a: NodeId, b: NodeId) {
        if a != b {
            self.cut.insert((a, b));
        }
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.cut_one_way(a, b);
                self.cut_one_way(b, a);
            }
        }
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    pub fn cuts(&self) -> usize {
        self.cut.len()
    }

    /// What happens to one message: `None` if lost, else its delay and, if duplicated, the
    /// delay of the copy.
    pub(crate) fn fate(
        &self,
        rng: &mut ChaCha8Rng,
        from: NodeId,
        to: NodeId,
    ) -> Option<(u64, Option<u64>)> {
        if !self.connected(from, to) {
            return None;
        }
        let f = &self.faults;
        if f.loss > 0.0 && rng.random_bool(f.loss) {
            return None;
        }
        let first = draw_delay(rng, f);
        let dup = if f.dup > 0.0 && rng.random_bool(f.dup) {
            Some(draw_delay(rng, f))
        } else {
            None
        };
        Some((first, dup))
    }
}

fn draw_delay(rng: &mut ChaCha8Rng, f: &NetFaults) -> u64 {
    let (lo, hi) = f.latency_us;
    let mut d = if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    };
    if f.spike_prob > 0.0 && f.spike_us > 0 && rng.random_bool(f.spike_prob) {
        d += rng.random_range(0..f.spike_us);
    }
    d
}
