//! The range map: which worker owns which keys, as clients route by it.
//!
//! The tree's shared top ([`crate::service::Top`]) is the authority: it lists the subtrees
//! and their owners, and only commands for every worker change it. A [`RangeMap`] is its
//! routing part, compressed: consecutive keys with one owner form one span. Clients keep one
//! ([`RouteView`]) to map commands to workers; a replica that receives a command its top no
//! longer gives to the workers it reached refuses it (`Misrouted`) and hands back its current
//! map, which the client installs if it is newer (`version`).
//!
//! A span is *plain* (one owner for all its keys) or *striped*: key `k` of a striped span
//! belongs to `owners[(k / stripe_keys) % owners.len()]`, so consecutive keys alternate
//! between workers. Striping is how the rebalancer spreads keys that arrive in increasing
//! order (time-ordered ids), which would otherwise all land on the last range.
//!
//! Owners are worker indexes. The combined scale-up and scale-out mode (several P-SMR workers
//! inside each partition, not built yet) would make an owner a (partition, worker) pair; the
//! map's shape (sorted spans, plain or striped) and its versioning stay as they are.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One span of keys: `[low, next span's low)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    pub low: u64,
    /// Keys per stripe (striped spans; 1 for plain ones).
    pub stripe_keys: u64,
    /// One owner (plain) or the owner of each stripe class (striped).
    pub owners: Vec<u32>,
}

impl Span {
    /// The owner of `key` (a key of this span).
    pub fn owner(&self, key: u64) -> usize {
        if self.owners.len() == 1 {
            self.owners[0] as usize
        } else {
            let class = (key / self.stripe_keys.max(1)) % self.owners.len() as u64;
            self.owners[class as usize] as usize
        }
    }
}

/// The stripe classes (part indexes) of a striped range of `count` parts, `stripe_keys` wide,
/// that hold keys of `[lo, hi)` (sorted; empty if `hi <= lo`). Clients and replicas compute
/// a scan's workers with this one function, so they agree.
pub fn stripe_classes(lo: u64, hi: u64, stripe_keys: u64, count: usize) -> Vec<usize> {
    let (w, n) = (stripe_keys.max(1), count.max(1) as u64);
    if hi <= lo {
        return Vec::new();
    }
    if (hi - lo) / w >= n {
        return (0..count.max(1)).collect();
    }
    let mut out = Vec::new();
    let mut k = lo;
    while k < hi {
        out.push(((k / w) % n) as usize);
        k = match (k / w + 1).checked_mul(w) {
            Some(next) => next,
            None => break,
        };
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Who owns which keys, at one version of the top.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeMap {
    /// Bumped whenever ownership changes; a newer map replaces an older one.
    pub version: u64,
    /// Sorted by `low`, strictly increasing, the first at 0.
    pub spans: Vec<Span>,
}

impl RangeMap {
    /// Checks the map's shape (it may come from the network), saying what is wrong.
    pub fn validate(&self, workers: usize) -> Result<(), String> {
        if self.spans.first().is_none_or(|s| s.low != 0) {
            return Err("the first span must start at key 0".into());
        }
        if self.spans.windows(2).any(|w| w[0].low >= w[1].low) {
            return Err("spans are not in increasing order".into());
        }
        for s in &self.spans {
            if s.owners.is_empty() || s.stripe_keys == 0 {
                return Err(format!(
                    "span at {} has no owners or no stripe width",
                    s.low
                ));
            }
            if let Some(w) = s.owners.iter().find(|&&w| w as usize >= workers) {
                return Err(format!("span at {} names worker {w} of {workers}", s.low));
            }
        }
        Ok(())
    }

    fn span(&self, key: u64) -> &Span {
        let i = self.spans.partition_point(|s| s.low <= key);
        &self.spans[i.saturating_sub(1)]
    }

    /// The worker owning `key`.
    pub fn owner(&self, key: u64) -> usize {
        self.span(key).owner(key)
    }

    /// The workers owning any key of `[lo, hi)` (sorted, distinct; empty if `hi <= lo`).
    pub fn owners(&self, lo: u64, hi: u64) -> Vec<usize> {
        if hi <= lo {
            return Vec::new();
        }
        let first = self
            .spans
            .partition_point(|s| s.low <= lo)
            .saturating_sub(1);
        let mut out: Vec<usize> = Vec::new();
        let spans = &self.spans[first..];
        for (i, s) in spans.iter().enumerate().take_while(|(_, s)| s.low < hi) {
            if s.owners.len() == 1 {
                out.push(s.owners[0] as usize);
            } else {
                // Only the stripes the range crosses (a short scan inside a striped span).
                let end = spans.get(i + 1).map_or(hi, |n| n.low.min(hi));
                let classes = stripe_classes(lo.max(s.low), end, s.stripe_keys, s.owners.len());
                out.extend(classes.into_iter().map(|c| s.owners[c] as usize));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A client's view of the range map, shared by the clients of a process: `None` until a
/// replica first hands one back, meaning the initial even split of the key space.
#[derive(Debug, Default)]
pub struct RouteView {
    map: parking_lot::RwLock<Option<Arc<RangeMap>>>,
}

impl RouteView {
    /// The map learnt so far, if any.
    pub fn get(&self) -> Option<Arc<RangeMap>> {
        self.map.read().clone()
    }

    /// Installs `map` if it is newer than the one held. Returns whether it was.
    pub fn learn(&self, map: RangeMap) -> bool {
        let mut held = self.map.write();
        if held.as_ref().is_some_and(|h| h.version >= map.version) {
            return false;
        }
        *held = Some(Arc::new(map));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(low: u64, stripe_keys: u64, owners: &[u32]) -> Span {
        Span {
            low,
            stripe_keys,
            owners: owners.to_vec(),
        }
    }

    #[test]
    fn owners_follow_plain_and_striped_spans() {
        let m = RangeMap {
            version: 3,
            spans: vec![span(0, 1, &[1]), span(100, 1, &[0]), span(200, 4, &[0, 1])],
        };
        assert!(m.validate(2).is_ok());
        assert_eq!(m.owner(5), 1);
        assert_eq!(m.owner(150), 0);
        assert_eq!((m.owner(200), m.owner(203), m.owner(204)), (0, 0, 1));
        assert_eq!(m.owners(90, 110), vec![0, 1]);
        assert_eq!(m.owners(100, 150), vec![0]);
        assert_eq!(m.owners(200, 203), vec![0], "inside one stripe");
        assert_eq!(m.owners(203, 206), vec![0, 1]);
        assert_eq!(m.owners(300, u64::MAX), vec![0, 1]);
        assert!(m.owners(7, 7).is_empty());
    }

    #[test]
    fn bad_maps_are_refused_and_only_newer_ones_learnt() {
        let good = RangeMap {
            version: 2,
            spans: vec![span(0, 1, &[0]), span(10, 1, &[1])],
        };
        let mut bad = good.clone();
        bad.spans[1].owners = vec![2];
        assert!(bad.validate(2).unwrap_err().contains("worker 2"));
        bad.spans = vec![span(5, 1, &[0])];
        assert!(bad.validate(2).unwrap_err().contains("key 0"));
        bad.spans = vec![span(0, 1, &[0]), span(0, 1, &[1])];
        assert!(bad.validate(2).is_err());
        bad.spans = vec![span(0, 0, &[0, 1])];
        assert!(bad.validate(2).is_err());
        let v = RouteView::default();
        assert!(v.learn(good.clone()));
        assert!(!v.learn(RangeMap {
            version: 1,
            ..good.clone()
        }));
        assert_eq!(v.get().unwrap().version, 2);
    }
}
