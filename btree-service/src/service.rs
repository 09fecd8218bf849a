//! The replicated B+-tree as an engine [`Service`].
//!
//! The key space is range-partitioned across the workers. At start worker `w` owns
//! `[w * key_space / k, (w + 1) * key_space / k)` (keys beyond belong to the last worker);
//! the rebalancer moves ranges later. The tree is a shared *top* (the sorted list of subtree
//! boundaries and owners, a one-level index like a B+-tree root, and the range map clients
//! route by) over *subtrees*, each a [`BPlusTree`] owned by one worker. Every shard keeps its
//! own copy of the top (an `Arc`, replaced only by commands for all workers, which run while
//! every worker is parked), so reading it needs no lock.
//!
//! What runs where:
//! - `Get`, `Update` (no structural change): the key's worker, both modes.
//! - `Insert`, `Delete`: P-SMR maps them to all workers, because an insert may split and a
//!   delete may shrink a subtree's root, which changes the shared top. opt-PSMR sends them to
//!   the key's worker, which refuses (changing nothing) exactly when the insert would split the
//!   subtree's root or the delete would shrink it; that check reads only the worker's own
//!   subtree and its copy of the top, so every replica reaches the same verdict. The refused
//!   command is retried for all workers: a root split then becomes two sibling subtrees in the
//!   top instead of a taller subtree, and an emptied subtree leaves the top.
//! - `Scan`: the workers whose ranges it covers (one or several).
//! - `Size`, `Rebalance`: all workers.
//!
//! **Load and rebalancing.** Every executed command counts, in the subtree it touched, one
//! command (and whether it was an append: an insert above the subtree's largest key at the
//! latest rebalance round) and now and then its key: the counters live in the shards, are changed only by executed commands and
//! travel with checkpoints, so they are replicated state and every replica has the same ones at
//! the same point of the stream. `Rebalance` (for all workers, sent by a client or an operator
//! whenever it likes) computes from them and from the policy it carries which subtrees to
//! split, move to another worker or stripe ([`crate::rebalance`]), and applies that to every
//! shard and every copy of the top at once; moves bump the top's `version`.
//!
//! **Striped ranges.** Keys that arrive in increasing order (time-ordered ids) all land on the
//! last subtree, and moving it moves the problem. The rebalancer instead turns the keys above
//! its last key into a *striped* range: a group of top entries with the same low bound, one
//! per worker, where part `i` holds the keys `k` with `(k / stripe_keys) % parts == i`. Parts
//! are subtrees like any other (they may be moved), but they grow taller instead of splitting
//! into siblings, so inserts into them are never refused by opt-PSMR's check.
//!
//! **Stale routes.** Clients map commands with their view of the range map ([`RouteView`]),
//! which lags behind moves. Before a command runs, the worker that executes it checks against
//! its copy of the top that every worker the command needs is among those it was multicast to
//! ([`Service::misrouted`]); if not, it refuses it, changing nothing, and hands back the
//! current range map, which the client learns before trying again. The copy of the top is
//! changed only by commands for all workers, so the verdict is the same at every replica.

use crate::ranges::{stripe_classes, RangeMap, RouteView, Span};
use crate::rebalance::{self, Action, PartLoad, RebalancePolicy};
use crate::tree::{BPlusTree, TreeImage};
use bytes::Bytes;
use engine::psmr::service::{Access, Service, Shards, SnapshotError, Target, Unsafe};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeCommand {
    Get(u64),
    /// Inserts or overwrites; returns the previous value.
    Insert(u64, Bytes),
    /// Overwrites an existing key only.
    Update(u64, Bytes),
    Delete(u64),
    /// Keys in `[lo, hi)`, at most `limit`, in order.
    Scan {
        lo: u64,
        hi: u64,
        limit: u32,
    },
    Size,
    /// Splits, moves and stripes subtrees as the replicated load counters and the policy
    /// decide (see the module documentation). Changes no key or value.
    Rebalance(RebalancePolicy),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeReply {
    Value(Option<Bytes>),
    Inserted(Option<Bytes>),
    Updated(bool),
    Deleted(Option<Bytes>),
    Entries(Vec<(u64, Bytes)>),
    Size(u64),
    Rebalanced(RebalanceReport),
}

/// What a `Rebalance` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceReport {
    /// The top's version after it (bumped when some keys changed owner).
    pub version: u64,
    pub moves: u32,
    pub splits: u32,
    pub stripes: u32,
    /// Each worker's counted load (decayed commands) that the decision looked at.
    pub loads: Vec<u64>,
}

impl RebalanceReport {
    /// Splits, moves and stripes applied.
    pub fn actions(&self) -> u32 {
        self.moves + self.splits + self.stripes
    }
}

/// How the tree is set up (the same at every replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeConfig {
    /// Node fan-out of the subtrees.
    pub fanout: usize,
    /// Keys are expected in `[0, key_space)`; the space is split evenly across workers.
    pub key_space: u64,
    /// Keys present at start: `prefill` keys spread evenly over the key space.
    pub prefill: u64,
    /// Bytes of every prefilled value.
    pub value_bytes: usize,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            fanout: 64,
            key_space: 1 << 24,
            prefill: 1_000_000,
            value_bytes: 16,
        }
    }
}

impl TreeConfig {
    /// Checks the configuration, saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.fanout < crate::tree::MIN_FANOUT {
            return Err(format!(
                "fan-out {} is below the minimum of {}",
                self.fanout,
                crate::tree::MIN_FANOUT
            ));
        }
        if self.key_space == 0 {
            return Err("the key space must hold at least one key".into());
        }
        if self.prefill > self.key_space {
            return Err(format!(
                "cannot pre-fill {} distinct keys into a key space of {}",
                self.prefill, self.key_space
            ));
        }
        Ok(())
    }

    /// The worker owning `key` among `workers` in the initial layout: the last worker whose
    /// range starts at or before `key` (defined by [`TreeConfig::range_start`], so the two
    /// always agree).
    pub fn owner(&self, key: u64, workers: usize) -> usize {
        let mut w = (u128::from(key) * workers as u128 / u128::from(self.key_space.max(1)))
            .min(workers as u128 - 1) as usize;
        while w + 1 < workers && self.range_start(w + 1, workers) <= key {
            w += 1;
        }
        while w > 0 && self.range_start(w, workers) > key {
            w -= 1;
        }
        w
    }

    /// The first key of worker `w`'s initial range.
    pub fn range_start(&self, w: usize, workers: usize) -> u64 {
        (u128::from(self.key_space) * w as u128 / workers as u128) as u64
    }

    /// The `i`-th prefilled key.
    pub fn prefill_key(&self, i: u64) -> u64 {
        (u128::from(i) * u128::from(self.key_space) / u128::from(self.prefill.max(1))) as u64
    }

    /// Whether `key` is one of the prefilled keys.
    pub fn is_prefilled(&self, key: u64) -> bool {
        if self.prefill == 0 || key >= self.key_space {
            return false;
        }
        // The largest i with prefill_key(i) <= key, then check equality.
        let i = (u128::from(key) * u128::from(self.prefill) / u128::from(self.key_space)) as u64;
        (i.saturating_sub(1)..=(i + 1).min(self.prefill - 1)).any(|j| self.prefill_key(j) == key)
    }
}

type SubtreeId = u64;

/// The shared top: the subtrees in key order, each with its range and owner. A plain entry's
/// subtree holds every key of `[low, next low)`; a striped range is a group of entries with
/// the same `low`, in part order, each holding its stripe class of the range's keys.
///
/// Invariants ([`Top::check`]): the first low is 0; lows increase from group to group; a
/// group is one plain entry or `count >= 2` striped entries with equal width and count and
/// parts `0..count`; every id is below `next_id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Top {
    entries: Vec<TopEntry>,
    next_id: SubtreeId,
    /// Bumped by every rebalance that changes who owns some keys.
    version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct TopEntry {
    low: u64,
    id: SubtreeId,
    owner: usize,
    stripe: Stripe,
}

/// Which keys of its range an entry's subtree holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Stripe {
    keys: u64,
    index: u32,
    count: u32,
}

impl Stripe {
    /// All the keys of the range.
    const PLAIN: Stripe = Stripe {
        keys: 1,
        index: 0,
        count: 1,
    };

    fn is_plain(self) -> bool {
        self.count == 1
    }

    fn holds(self, key: u64) -> bool {
        self.is_plain() || (key / self.keys) % u64::from(self.count) == u64::from(self.index)
    }
}

impl Top {
    /// The entry whose subtree holds `key` (or would).
    fn locate(&self, key: u64) -> usize {
        let last = self
            .entries
            .partition_point(|e| e.low <= key)
            .saturating_sub(1);
        let e = self.entries[last];
        if e.stripe.is_plain() {
            last
        } else {
            // `last` is the group's last part; the key's part is counted back from it.
            let first = last + 1 - e.stripe.count as usize;
            first + ((key / e.stripe.keys) % u64::from(e.stripe.count)) as usize
        }
    }

    /// The first entry of entry `i`'s group, and the entry after the group.
    fn group(&self, i: usize) -> (usize, usize) {
        let e = self.entries[i];
        let first = i - e.stripe.index as usize;
        (first, first + e.stripe.count as usize)
    }

    /// The exclusive upper bound of entry `i`'s range (`None`: up to the largest key).
    fn high(&self, i: usize) -> Option<u64> {
        self.entries.get(self.group(i).1).map(|e| e.low)
    }

    fn position(&self, id: SubtreeId) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    /// The entries (by index) whose subtrees may hold keys of `[lo, hi)`, in key order
    /// (within a striped range, the parts whose stripes the range crosses).
    fn covering(&self, lo: u64, hi: u64) -> Vec<usize> {
        let mut out = Vec::new();
        if hi <= lo {
            return out;
        }
        let (mut g, _) = self.group(self.locate(lo));
        while g < self.entries.len() && self.entries[g].low < hi {
            let (first, end) = self.group(g);
            let e = self.entries[first];
            if e.stripe.is_plain() {
                out.push(first);
            } else {
                let to = self.high(first).map_or(hi, |h| h.min(hi));
                let classes = stripe_classes(lo.max(e.low), to, e.stripe.keys, end - first);
                out.extend(classes.into_iter().map(|c| first + c));
            }
            g = end;
        }
        out
    }

    /// The workers owning some key of `[lo, hi)`.
    fn owners_of(&self, lo: u64, hi: u64) -> Vec<usize> {
        let mut w: Vec<usize> = self
            .covering(lo, hi)
            .into_iter()
            .map(|i| self.entries[i].owner)
            .collect();
        w.sort_unstable();
        w.dedup();
        w
    }

    /// Number of subtrees.
    pub fn subtrees(&self) -> usize {
        self.entries.len()
    }

    /// Bumped by every rebalance that moved keys to another worker.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Striped ranges.
    pub fn striped_ranges(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !e.stripe.is_plain() && e.stripe.index == 0)
            .count()
    }

    /// The routing part of the top: who owns which keys.
    pub fn ranges(&self) -> RangeMap {
        let mut spans: Vec<Span> = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            let (first, end) = self.group(i);
            let e = self.entries[first];
            if e.stripe.is_plain() {
                let same = spans
                    .last()
                    .is_some_and(|s| s.owners.len() == 1 && s.owners[0] as usize == e.owner);
                if !same {
                    spans.push(Span {
                        low: e.low,
                        stripe_keys: 1,
                        owners: vec![e.owner as u32],
                    });
                }
            } else {
                spans.push(Span {
                    low: e.low,
                    stripe_keys: e.stripe.keys,
                    owners: self.entries[first..end]
                        .iter()
                        .map(|p| p.owner as u32)
                        .collect(),
                });
            }
            i = end;
        }
        RangeMap {
            version: self.version,
            spans,
        }
    }

    /// Checks the invariants for `workers` workers, saying what is wrong.
    pub fn check(&self, workers: usize) -> Result<(), String> {
        if self.entries.first().is_none_or(|e| e.low != 0) {
            return Err("the top does not start at key 0".into());
        }
        let mut i = 0;
        let mut prev_low = None;
        while i < self.entries.len() {
            let e = self.entries[i];
            let count = e.stripe.count as usize;
            if e.stripe.index != 0 || count == 0 || e.stripe.keys == 0 {
                return Err(format!("the range at {} starts with a bad part", e.low));
            }
            if prev_low.is_some_and(|p| p >= e.low) {
                return Err("the top's ranges are not increasing".into());
            }
            let parts = self
                .entries
                .get(i..i + count)
                .ok_or_else(|| format!("the striped range at {} lacks parts", e.low))?;
            for (j, p) in parts.iter().enumerate() {
                if p.low != e.low
                    || p.stripe.index as usize != j
                    || p.stripe.count != e.stripe.count
                    || p.stripe.keys != e.stripe.keys
                {
                    return Err(format!("the striped range at {} is malformed", e.low));
                }
            }
            prev_low = Some(e.low);
            i += count;
        }
        if self
            .entries
            .iter()
            .any(|e| e.owner >= workers || e.id >= self.next_id)
        {
            return Err("the top names an unknown worker or subtree".into());
        }
        let mut ids: Vec<SubtreeId> = self.entries.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("the top names a subtree twice".into());
        }
        Ok(())
    }
}

/// Commands counted per subtree: where the load is, for the rebalancer. Replicated state:
/// changed only by executed commands and by `Rebalance`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Load {
    /// Commands that touched the subtree (halved after every rebalance round).
    ops: u64,
    /// Of them, inserts of a key above `mark`: appends at the subtree's upper end.
    appends: u64,
    /// The subtree's largest key at the latest rebalance round (or when it was made): keys
    /// above it are new at the top. Concurrent clients' increasing keys arrive a little out
    /// of order, so "above the largest key now" would miss half of them.
    mark: Option<u64>,
    /// Commands ever counted here (never halved: it picks the sample slots).
    seen: u64,
    /// The keys of every [`SAMPLE_EVERY`]-th command, in [`SAMPLES`] slots round-robin.
    samples: Vec<u64>,
}

const SAMPLE_EVERY: u64 = 4;
const SAMPLES: usize = 16;

impl Load {
    fn record(&mut self, key: u64, append: bool) {
        self.ops += 1;
        self.appends += u64::from(append);
        if self.seen.is_multiple_of(SAMPLE_EVERY) {
            let slot = (self.seen / SAMPLE_EVERY) as usize % SAMPLES;
            match self.samples.get_mut(slot) {
                Some(s) => *s = key,
                None => self.samples.push(key),
            }
        }
        self.seen += 1;
    }

    /// The commands estimated at or above `at`, by the samples (half without any).
    fn ops_from(&self, at: u64) -> u64 {
        let above = self.samples.iter().filter(|&&k| k >= at).count() as u128;
        (u128::from(self.ops) * above)
            .checked_div(self.samples.len() as u128)
            .map_or(self.ops / 2, |x| x as u64)
    }

    /// Takes the part of the load at or above `at` (by the samples; half without any).
    fn split_off(&mut self, at: u64) -> Load {
        let ops = self.ops_from(at);
        let upper = Load {
            ops,
            appends: self.appends.min(ops),
            mark: self.mark,
            seen: self.seen,
            samples: self.samples.iter().copied().filter(|&k| k >= at).collect(),
        };
        self.ops -= upper.ops;
        self.appends -= upper.appends;
        self.samples.retain(|&k| k < at);
        upper
    }

    fn absorb(&mut self, other: Load) {
        self.ops += other.ops;
        self.appends += other.appends;
        self.mark = self.mark.max(other.mark);
        self.seen = self.seen.max(other.seen);
        self.samples.extend(other.samples);
        self.samples.truncate(SAMPLES);
    }

    fn decay(&mut self) {
        self.ops /= 2;
        self.appends /= 2;
    }

    fn hash_into(&self, mix: &mut impl FnMut(u64)) {
        mix(self.ops);
        mix(self.appends);
        mix(self.mark.map_or(0, |m| m.wrapping_add(1)));
        mix(self.seen);
        for &k in &self.samples {
            mix(k);
        }
    }
}

/// A subtree and its load.
struct Subtree {
    tree: BPlusTree<u64, Bytes>,
    load: Load,
}

impl Subtree {
    fn new(tree: BPlusTree<u64, Bytes>) -> Self {
        let load = Load {
            mark: tree.last_key().copied(),
            ..Load::default()
        };
        Subtree { tree, load }
    }

    /// Inserts, counting the command (an append if `key` is above the mark).
    fn insert(&mut self, key: u64, value: Bytes) -> Option<Bytes> {
        let append = self.load.mark.is_none_or(|m| key > m);
        self.load.record(key, append);
        self.tree.insert(key, value)
    }
}

/// What is wrong with one replica's shards (worker by worker; `None`: a shard lent at the
/// moment, which a replica at rest never has), one line per problem: the checks of
/// [`TreeShard::check`]. Simulated campaigns run it on every replica at the end.
pub fn shard_problems(
    replica: impl std::fmt::Display,
    shards: &[Option<&TreeShard>],
) -> Vec<String> {
    shards
        .iter()
        .enumerate()
        .filter_map(|(w, shard)| match shard.map(|s| s.check(w)) {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(format!("replica {replica} worker {w}: {e}")),
            None => Some(format!("replica {replica} worker {w}: its shard is lent")),
        })
        .collect()
}

/// One worker's part of the tree.
pub struct TreeShard {
    top: Arc<Top>,
    subtrees: BTreeMap<SubtreeId, Subtree>,
}

impl TreeShard {
    /// The top as this shard sees it.
    pub fn top(&self) -> &Top {
        &self.top
    }

    /// Entries held by this shard.
    pub fn len(&self) -> u64 {
        self.subtrees.values().map(|t| t.tree.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commands counted in this shard's subtrees (decayed), the load the rebalancer sees.
    pub fn counted_load(&self) -> u64 {
        self.subtrees.values().map(|t| t.load.ops).sum()
    }

    /// Checks every subtree's invariants, that each holds only keys of its range (and stripe),
    /// and that the shard holds exactly the subtrees the top gives the worker.
    pub fn check(&self, worker: usize) -> Result<(), String> {
        let top = &self.top;
        let mut mine = 0;
        for (i, e) in top.entries.iter().enumerate() {
            if e.owner != worker {
                continue;
            }
            mine += 1;
            let t = &self
                .subtrees
                .get(&e.id)
                .ok_or_else(|| format!("worker {worker} lacks its subtree {}", e.id))?
                .tree;
            t.check_invariants()?;
            let hi = top.high(i);
            if t.first_key().is_some_and(|k| *k < e.low)
                || hi.is_some_and(|h| t.last_key().is_some_and(|k| *k >= h))
            {
                return Err(format!(
                    "subtree {} holds keys outside [{}, {hi:?})",
                    e.id, e.low
                ));
            }
            if !e.stripe.is_plain() {
                if let Some((k, _)) = t.iter().find(|(k, _)| !e.stripe.holds(**k)) {
                    return Err(format!(
                        "striped part {} holds key {k} of another part",
                        e.id
                    ));
                }
            }
        }
        if self.subtrees.len() != mine {
            return Err(format!(
                "worker {worker} holds {} subtrees, the top gives it {mine}",
                self.subtrees.len()
            ));
        }
        Ok(())
    }
}

/// A shard in a checkpoint: its copy of the top and its subtrees with their loads, exactly as
/// they are.
#[derive(Serialize, Deserialize)]
struct ShardImage {
    top: Top,
    subtrees: Vec<(SubtreeId, TreeImage<u64, Bytes>, Load)>,
}

/// Object ids for the debug-mode access sets.
const TOP_OBJECT: u64 = u64::MAX;
fn subtree_object(id: SubtreeId) -> u64 {
    (1 << 62) | id
}

/// The replicated B+-tree service. Clients use its [`RouteView`] to route; replicas never
/// read it (they decide from their shards' tops).
pub struct TreeService {
    pub config: TreeConfig,
    routes: RouteView,
}

impl TreeService {
    /// The service for a valid configuration (see [`TreeService::try_new`]).
    pub fn new(config: TreeConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|e| panic!("invalid tree configuration: {e}"))
    }

    pub fn try_new(config: TreeConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(TreeService {
            config,
            routes: RouteView::default(),
        })
    }

    /// The range map this client has learnt (`None`: the initial layout).
    pub fn learnt_routes(&self) -> Option<Arc<RangeMap>> {
        self.routes.get()
    }

    fn value(&self, i: u64) -> Bytes {
        let mut v = vec![0u8; self.config.value_bytes];
        for (j, b) in v.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31).wrapping_add(j as u64)) as u8;
        }
        Bytes::from(v)
    }

    /// The subtree of entry `e` (its owner's shard must be here: the misrouted check ran).
    fn sub<'a>(shards: &'a mut Shards<'_, '_, TreeShard>, e: &TopEntry) -> &'a mut Subtree {
        shards
            .get(e.owner)
            .subtrees
            .get_mut(&e.id)
            .expect("the top names a subtree its owner holds")
    }

    /// A `Get` or a `Scan` (anything else: `Size`, the only other command that changes
    /// nothing). `count_load`: count it in the subtrees' load statistics (replicated state
    /// that drives rebalancing), as a command in the log does; a read served off the log by
    /// one replica must not.
    fn lookup(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        top: &Top,
        cmd: &TreeCommand,
        access: &mut Access,
        count_load: bool,
    ) -> TreeReply {
        match cmd {
            TreeCommand::Get(k) => {
                let t = Self::subtree_for(shards, top, *k, access);
                access.read(*k);
                if count_load {
                    t.load.record(*k, false);
                }
                TreeReply::Value(t.tree.get(k).cloned())
            }
            TreeCommand::Scan { lo, hi, limit } => {
                access.read(TOP_OBJECT);
                let mut out = Vec::new();
                let limit = *limit as usize;
                let covering = top.covering(*lo, *hi);
                let mut i = 0;
                while i < covering.len() && out.len() < limit {
                    // The entries of one range: one plain subtree or the crossed parts.
                    let low = top.entries[covering[i]].low;
                    let mut part: Vec<(u64, Bytes)> = Vec::new();
                    let want = limit - out.len();
                    while i < covering.len() && top.entries[covering[i]].low == low {
                        let e = top.entries[covering[i]];
                        access.read(subtree_object(e.id));
                        let t = Self::sub(shards, &e);
                        if count_load {
                            t.load.record((*lo).max(e.low), false);
                        }
                        part.extend(t.tree.scan(lo, hi, want));
                        i += 1;
                    }
                    part.sort_unstable_by_key(|(k, _)| *k);
                    part.truncate(want);
                    out.extend(part);
                }
                TreeReply::Entries(out)
            }
            _ => {
                access.read(TOP_OBJECT);
                TreeReply::Size(shards.iter_mut().map(|(_, s)| s.len()).sum())
            }
        }
    }

    fn subtree_for<'a>(
        shards: &'a mut Shards<'_, '_, TreeShard>,
        top: &Top,
        key: u64,
        access: &mut Access,
    ) -> &'a mut Subtree {
        access.read(TOP_OBJECT);
        Self::sub(shards, &top.entries[top.locate(key)])
    }

    /// Like a B+-tree root that overflows and grows a level: when a worker holds more than
    /// `fanout` subtrees, adjacent pairs of its plain subtrees are joined into taller ones, so
    /// the top stays small and subtree roots split rarely.
    fn regroup(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        top: &mut Top,
        owner: usize,
        access: &mut Access,
    ) {
        let mine = top.entries.iter().filter(|e| e.owner == owner).count();
        if mine <= self.config.fanout {
            return;
        }
        access.write(TOP_OBJECT);
        let shard = shards.get(owner);
        let mut i = 0;
        while i + 1 < top.entries.len() {
            let (a, b) = (top.entries[i], top.entries[i + 1]);
            if a.owner == owner && b.owner == owner && a.stripe.is_plain() && b.stripe.is_plain() {
                let upper = shard.subtrees.remove(&b.id).expect("subtree");
                let lower = shard.subtrees.get_mut(&a.id).expect("subtree");
                lower
                    .tree
                    .absorb(upper.tree)
                    .expect("adjacent subtrees hold increasing keys");
                lower.load.absorb(upper.load);
                top.entries.remove(i + 1);
            }
            i += 1;
        }
    }

    /// Runs a command that changes structure (insert or delete), with all shards at hand.
    fn structural(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        cmd: &TreeCommand,
        access: &mut Access,
    ) -> TreeReply {
        let mut top = (*shards.iter_mut().next().expect("a shard").1.top).clone();
        let reply = match cmd {
            TreeCommand::Insert(k, v) => {
                let idx = top.locate(*k);
                let e = top.entries[idx];
                access.write(subtree_object(e.id));
                let t = Self::sub(shards, &e);
                if e.stripe.is_plain() && t.tree.insert_would_split_root(k) && t.tree.len() >= 2 {
                    // Split the subtree into two siblings in the top rather than growing it.
                    let (low, upper) = t.tree.split_off_upper().expect("at least two entries");
                    let load = t.load.split_off(low);
                    let id = top.next_id;
                    top.next_id += 1;
                    top.entries.insert(
                        idx + 1,
                        TopEntry {
                            low,
                            id,
                            owner: e.owner,
                            stripe: Stripe::PLAIN,
                        },
                    );
                    access.write(TOP_OBJECT);
                    shards
                        .get(e.owner)
                        .subtrees
                        .insert(id, Subtree { tree: upper, load });
                }
                let e = top.entries[top.locate(*k)];
                let old = Self::sub(shards, &e).insert(*k, v.clone());
                self.regroup(shards, &mut top, e.owner, access);
                TreeReply::Inserted(old)
            }
            TreeCommand::Delete(k) => {
                let idx = top.locate(*k);
                let e = top.entries[idx];
                access.write(subtree_object(e.id));
                let t = Self::sub(shards, &e);
                t.load.record(*k, false);
                let old = t.tree.remove(k);
                // An emptied plain subtree leaves the top when the one before it is plain and
                // has the same owner (its range then covers the keys; nobody's keys move).
                let joins = idx > 0 && {
                    let p = top.entries[idx - 1];
                    p.stripe.is_plain() && p.owner == e.owner
                };
                if t.tree.is_empty() && e.stripe.is_plain() && joins {
                    let gone = shards.get(e.owner).subtrees.remove(&e.id).expect("subtree");
                    let prev = top.entries[idx - 1];
                    Self::sub(shards, &prev).load.absorb(gone.load);
                    top.entries.remove(idx);
                    access.write(TOP_OBJECT);
                }
                TreeReply::Deleted(old)
            }
            other => unreachable!("not structural: {other:?}"),
        };
        install(shards, top);
        reply
    }

    /// What the counters say about every subtree, for the planner.
    fn part_loads(shards: &mut Shards<'_, '_, TreeShard>, top: &Top) -> Vec<PartLoad> {
        (0..top.entries.len())
            .map(|i| {
                let e = top.entries[i];
                let high = top.high(i);
                let t = Self::sub(shards, &e);
                let (tree, load) = (&t.tree, &t.load);
                let split = (e.stripe.is_plain() && tree.len() >= 2).then(|| {
                    let (first, last) =
                        (*tree.first_key().expect("2"), *tree.last_key().expect("2"));
                    let mut keys = load.samples.clone();
                    keys.sort_unstable();
                    let at = keys
                        .get(keys.len() / 2)
                        .copied()
                        .filter(|&k| first < k && k <= last)
                        .unwrap_or_else(|| *tree.iter().nth(tree.len() / 2).expect("len").0);
                    (at, load.ops_from(at))
                });
                let append_at = match tree.last_key() {
                    None => Some(e.low),
                    Some(l) => l.checked_add(1),
                }
                .filter(|&a| e.stripe.is_plain() && high.is_none_or(|h| a < h));
                PartLoad {
                    id: e.id,
                    owner: e.owner,
                    striped: !e.stripe.is_plain(),
                    ops: load.ops,
                    appends: load.appends,
                    split,
                    append_at,
                }
            })
            .collect()
    }

    /// Runs a `Rebalance`: the plan from the replicated counters, applied to every shard.
    fn rebalance(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        policy: &RebalancePolicy,
        access: &mut Access,
    ) -> TreeReply {
        let workers = shards.total();
        let mut top = (*shards.iter_mut().next().expect("a shard").1.top).clone();
        if shards.len() != workers {
            // Never happens (the command maps to every worker and is otherwise refused as
            // misrouted); doing nothing is the same at every replica.
            return TreeReply::Rebalanced(RebalanceReport {
                version: top.version,
                ..RebalanceReport::default()
            });
        }
        access.write(TOP_OBJECT);
        let parts = Self::part_loads(shards, &top);
        let loads = rebalance::worker_loads(&parts, workers);
        let actions = rebalance::plan(&parts, workers, top.next_id, policy);
        let mut report = RebalanceReport {
            loads: loads.clone(),
            ..RebalanceReport::default()
        };
        let mut moved_keys = false;
        for a in &actions {
            if self.apply(shards, &mut top, a) {
                match a {
                    Action::Split { .. } => report.splits += 1,
                    Action::Move { .. } => report.moves += 1,
                    Action::Stripe { .. } => report.stripes += 1,
                }
                moved_keys |= a.moves_keys();
            }
        }
        if moved_keys {
            top.version += 1;
        }
        let counted = loads.iter().sum::<u64>() >= policy.ops_min.max(1);
        for (_, s) in shards.iter_mut() {
            for t in s.subtrees.values_mut() {
                if counted {
                    t.load.decay();
                }
                t.load.mark = t.tree.last_key().copied();
            }
        }
        report.version = top.version;
        install(shards, top);
        TreeReply::Rebalanced(report)
    }

    /// Applies one step of a rebalancing plan to the shards and `top`; `false` (and nothing
    /// changed) if it does not fit them (a stale or malformed step).
    fn apply(&self, shards: &mut Shards<'_, '_, TreeShard>, top: &mut Top, a: &Action) -> bool {
        let workers = shards.total();
        match a {
            Action::Move { id, to } => {
                let Some(i) = top.position(*id) else {
                    return false;
                };
                let from = top.entries[i].owner;
                if *to >= workers || *to == from || !shards.has(*to) || !shards.has(from) {
                    return false;
                }
                let sub = shards.get(from).subtrees.remove(id).expect("subtree");
                shards.get(*to).subtrees.insert(*id, sub);
                top.entries[i].owner = *to;
                true
            }
            Action::Split { id, at, upper } => {
                let Some(i) = top.position(*id) else {
                    return false;
                };
                let e = top.entries[i];
                let fits = e.stripe.is_plain()
                    && *at > e.low
                    && top.high(i).is_none_or(|h| *at < h)
                    && *upper >= top.next_id
                    && shards.has(e.owner);
                if !fits {
                    return false;
                }
                let t = Self::sub(shards, &e);
                let tree = t.tree.split_off_at(at);
                let load = t.load.split_off(*at);
                shards
                    .get(e.owner)
                    .subtrees
                    .insert(*upper, Subtree { tree, load });
                top.entries.insert(
                    i + 1,
                    TopEntry {
                        low: *at,
                        id: *upper,
                        owner: e.owner,
                        stripe: Stripe::PLAIN,
                    },
                );
                top.next_id = upper + 1;
                true
            }
            Action::Stripe {
                id,
                at,
                stripe_keys,
                parts,
            } => {
                let Some(i) = top.position(*id) else {
                    return false;
                };
                let e = top.entries[i];
                let mut ids: Vec<SubtreeId> = parts.iter().map(|p| p.0).collect();
                ids.sort_unstable();
                ids.dedup();
                let fits = e.stripe.is_plain()
                    && *at >= e.low
                    && top.high(i).is_none_or(|h| *at < h)
                    && (2..=u32::MAX as usize).contains(&parts.len())
                    && ids.len() == parts.len()
                    && ids[0] >= top.next_id
                    && *stripe_keys >= 1
                    && parts.iter().all(|p| p.1 < workers && shards.has(p.1))
                    && shards.has(e.owner);
                if !fits {
                    return false;
                }
                let t = Self::sub(shards, &e);
                let upper = t.tree.split_off_at(at);
                let load = t.load.split_off(*at);
                let n = parts.len() as u64;
                let mut classes: Vec<Vec<(u64, Bytes)>> = vec![Vec::new(); parts.len()];
                for (k, v) in upper.into_sorted_vec() {
                    classes[((k / stripe_keys) % n) as usize].push((k, v));
                }
                let mut at_pos = i + 1;
                if *at == e.low {
                    // The whole range is striped: the old subtree goes.
                    shards.get(e.owner).subtrees.remove(id);
                    top.entries.remove(i);
                    at_pos = i;
                }
                for (j, ((pid, owner), entries)) in parts.iter().zip(classes).enumerate() {
                    let tree = BPlusTree::from_sorted(self.config.fanout, entries)
                        .expect("keys stay increasing");
                    let part_load = Load {
                        ops: load.ops / n,
                        appends: load.appends / n,
                        mark: tree.last_key().copied(),
                        seen: load.seen,
                        samples: Vec::new(),
                    };
                    shards.get(*owner).subtrees.insert(
                        *pid,
                        Subtree {
                            tree,
                            load: part_load,
                        },
                    );
                    top.entries.insert(
                        at_pos + j,
                        TopEntry {
                            low: *at,
                            id: *pid,
                            owner: *owner,
                            stripe: Stripe {
                                keys: *stripe_keys,
                                index: j as u32,
                                count: n as u32,
                            },
                        },
                    );
                }
                top.next_id = ids[ids.len() - 1] + 1;
                true
            }
        }
    }

    /// Applies `action` to a whole replica's shards (`shards[w]` is worker `w`'s), as a
    /// `Rebalance` would; `false` (nothing changed) if it does not fit them. For tests and
    /// tools that place ranges by hand.
    pub fn apply_action(&self, shards: &mut [TreeShard], action: &Action) -> bool {
        let total = shards.len();
        let mut refs: Vec<(usize, &mut TreeShard)> = shards.iter_mut().enumerate().collect();
        let mut view = Shards::new(&mut refs, total);
        let mut top = (*view.iter_mut().next().expect("a shard").1.top).clone();
        let done = self.apply(&mut view, &mut top, action);
        if done && action.moves_keys() {
            top.version += 1;
        }
        install(&mut view, top);
        done
    }
}

/// Gives every shard here (all of them, for a structural command) the new top.
fn install(shards: &mut Shards<'_, '_, TreeShard>, top: Top) {
    let top = Arc::new(top);
    for (_, s) in shards.iter_mut() {
        s.top = top.clone();
    }
}

impl Service for TreeService {
    type Command = TreeCommand;
    type Reply = TreeReply;
    type Shard = TreeShard;

    fn name(&self) -> &'static str {
        "btree"
    }

    fn shards(&self, workers: usize) -> Vec<TreeShard> {
        let c = &self.config;
        let mut entries = Vec::with_capacity(workers);
        let mut trees = Vec::with_capacity(workers);
        let mut i = 0u64;
        for w in 0..workers {
            let end = if w + 1 == workers {
                u64::MAX
            } else {
                c.range_start(w + 1, workers)
            };
            let start_i = i;
            while i < c.prefill && c.prefill_key(i) < end {
                i += 1;
            }
            let tree = BPlusTree::from_sorted(
                c.fanout,
                (start_i..i).map(|j| (c.prefill_key(j), self.value(j))),
            )
            .expect("prefill keys are increasing");
            entries.push(TopEntry {
                low: c.range_start(w, workers),
                id: w as SubtreeId,
                owner: w,
                stripe: Stripe::PLAIN,
            });
            trees.push(tree);
        }
        let top = Arc::new(Top {
            entries,
            next_id: workers as SubtreeId,
            version: 0,
        });
        trees
            .into_iter()
            .enumerate()
            .map(|(w, t)| TreeShard {
                top: top.clone(),
                subtrees: BTreeMap::from([(w as SubtreeId, Subtree::new(t))]),
            })
            .collect()
    }

    fn conservative(&self, cmd: &TreeCommand, workers: usize) -> Target {
        let routes = self.routes.get();
        let owner = |k: u64| match &routes {
            Some(m) => m.owner(k),
            None => self.config.owner(k, workers),
        };
        let target = match cmd {
            TreeCommand::Get(k) | TreeCommand::Update(k, _) => Target::One(owner(*k)),
            TreeCommand::Insert(..)
            | TreeCommand::Delete(_)
            | TreeCommand::Size
            | TreeCommand::Rebalance(_) => Target::All,
            TreeCommand::Scan { lo, hi, .. } => match &routes {
                _ if hi <= lo => Target::One(owner(*lo)),
                Some(m) => Target::of(m.owners(*lo, *hi)),
                None => Target::of((owner(*lo)..=owner(hi - 1)).collect()),
            },
        };
        within(target, workers)
    }

    fn optimistic(&self, cmd: &TreeCommand, workers: usize) -> Target {
        match cmd {
            TreeCommand::Insert(k, _) | TreeCommand::Delete(k) => {
                let w = match self.routes.get() {
                    Some(m) => m.owner(*k),
                    None => self.config.owner(*k, workers),
                };
                within(Target::One(w), workers)
            }
            other => self.conservative(other, workers),
        }
    }

    fn misrouted(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        cmd: &TreeCommand,
    ) -> Option<Vec<u8>> {
        let top = shards.iter_mut().next()?.1.top.clone();
        let fits = match cmd {
            TreeCommand::Get(k)
            | TreeCommand::Update(k, _)
            | TreeCommand::Insert(k, _)
            | TreeCommand::Delete(k) => shards.has(top.entries[top.locate(*k)].owner),
            TreeCommand::Scan { lo, hi, .. } => {
                top.owners_of(*lo, *hi).iter().all(|&w| shards.has(w))
            }
            TreeCommand::Size | TreeCommand::Rebalance(_) => shards.len() == shards.total(),
        };
        (!fits).then(|| engine::wire::encode(&top.ranges()))
    }

    fn learn_routes(&self, routes: &[u8]) {
        match engine::wire::decode::<RangeMap>(routes) {
            Ok(map) => match map.validate(u32::MAX as usize + 1) {
                Ok(()) => {
                    self.routes.learn(map);
                }
                Err(e) => tracing::warn!(error = %e, "a replica's range map is malformed; ignored"),
            },
            Err(e) => tracing::warn!(error = %e, "a replica's range map does not decode; ignored"),
        }
    }

    fn execute(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        cmd: &TreeCommand,
        access: &mut Access,
    ) -> TreeReply {
        let top = shards.iter_mut().next().expect("a shard").1.top.clone();
        match cmd {
            TreeCommand::Get(_) | TreeCommand::Scan { .. } | TreeCommand::Size => {
                self.lookup(shards, &top, cmd, access, true)
            }
            TreeCommand::Update(k, v) => {
                let t = Self::subtree_for(shards, &top, *k, access);
                access.write(*k);
                t.load.record(*k, false);
                match t.tree.get_mut(k) {
                    Some(slot) => {
                        *slot = v.clone();
                        TreeReply::Updated(true)
                    }
                    None => TreeReply::Updated(false),
                }
            }
            TreeCommand::Insert(..) | TreeCommand::Delete(_) => {
                self.structural(shards, cmd, access)
            }
            TreeCommand::Rebalance(policy) => self.rebalance(shards, policy, access),
        }
    }

    fn read_only(&self, cmd: &TreeCommand) -> bool {
        matches!(
            cmd,
            TreeCommand::Get(_) | TreeCommand::Scan { .. } | TreeCommand::Size
        )
    }

    fn execute_read(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        cmd: &TreeCommand,
        access: &mut Access,
    ) -> TreeReply {
        let top = shards.iter_mut().next().expect("a shard").1.top.clone();
        self.lookup(shards, &top, cmd, access, false)
    }

    fn execute_optimistic(
        &self,
        shards: &mut Shards<'_, '_, TreeShard>,
        cmd: &TreeCommand,
        access: &mut Access,
    ) -> Result<TreeReply, Unsafe> {
        let top = shards.iter_mut().next().expect("a shard").1.top.clone();
        match cmd {
            TreeCommand::Insert(k, v) => {
                let e = top.entries[top.locate(*k)];
                let t = Self::subtree_for(shards, &top, *k, access);
                // A striped part grows taller instead: its root split touches no shared state.
                if e.stripe.is_plain() && t.tree.insert_would_split_root(k) {
                    return Err(Unsafe);
                }
                access.write(*k);
                access.write(subtree_object(e.id));
                Ok(TreeReply::Inserted(t.insert(*k, v.clone())))
            }
            TreeCommand::Delete(k) => {
                let e = top.entries[top.locate(*k)];
                let t = Self::subtree_for(shards, &top, *k, access);
                if e.stripe.is_plain() && t.tree.remove_would_shrink_root(k) {
                    return Err(Unsafe);
                }
                access.write(*k);
                access.write(subtree_object(e.id));
                t.load.record(*k, false);
                Ok(TreeReply::Deleted(t.tree.remove(k)))
            }
            other => Ok(self.execute(shards, other, access)),
        }
    }

    fn snapshot_shard(&self, _worker: usize, shard: &TreeShard) -> Vec<u8> {
        let image = ShardImage {
            top: (*shard.top).clone(),
            subtrees: shard
                .subtrees
                .iter()
                .map(|(id, t)| (*id, t.tree.to_image(), t.load.clone()))
                .collect(),
        };
        engine::wire::encode(&image)
    }

    fn restore_shard(
        &self,
        worker: usize,
        workers: usize,
        bytes: &[u8],
    ) -> Result<TreeShard, SnapshotError> {
        let bad = |e: String| SnapshotError(format!("worker {worker}: {e}"));
        let image: ShardImage = engine::wire::decode(bytes).map_err(|e| bad(e.to_string()))?;
        image.top.check(workers).map_err(bad)?;
        let mut subtrees = BTreeMap::new();
        for (id, t, load) in image.subtrees {
            let tree = BPlusTree::from_image(t).map_err(|e| bad(format!("subtree {id}: {e}")))?;
            if tree.fanout() != self.config.fanout {
                return Err(bad(format!("subtree {id} has fan-out {}", tree.fanout())));
            }
            if load.samples.len() > SAMPLES {
                return Err(bad(format!("subtree {id} has too many load samples")));
            }
            subtrees.insert(id, Subtree { tree, load });
        }
        let shard = TreeShard {
            top: Arc::new(image.top),
            subtrees,
        };
        shard.check(worker).map_err(bad)?;
        Ok(shard)
    }

    fn state_hash(&self, shards: &[&TreeShard]) -> u64 {
        let mut h = engine::hash::Fnv64::new();
        let top = &shards[0].top;
        h.words([top.version, top.next_id]);
        for e in &top.entries {
            let t = &shards[e.owner].subtrees[&e.id];
            h.words([
                e.low,
                e.id,
                e.owner as u64,
                e.stripe.keys,
                u64::from(e.stripe.index) << 32 | u64::from(e.stripe.count),
                t.tree.len() as u64,
                t.tree.content_hash(),
            ]);
            t.load.hash_into(&mut |x| {
                h.word(x);
            });
        }
        h.get()
    }
}

/// `target`, or every worker if it names one beyond `workers` (routes learnt from a
/// deployment with more workers than this client's: the replicas sort it out).
fn within(target: Target, workers: usize) -> Target {
    let fits = match &target {
        Target::One(w) => *w < workers,
        Target::Many(ws) => ws.iter().all(|&w| w < workers),
        Target::All => true,
    };
    if fits {
        target
    } else {
        Target::All
    }
}

#[cfg(test)]
mod tests {
    //! The service against a `BTreeMap`, through the engine's contract: each command is run as a
    //! worker would run it (optimistically on its worker's shard first when the optimistic map
    //! gives one worker; on refusal the state must be untouched and the command then runs on
    //! every shard), and after each command every subtree is checked.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    /// Runs `cmd` as the engine would: mapped by the service's own routes (which go stale
    /// when a `Rebalance` moves ranges), refused as misrouted and retried with the learnt
    /// routes (every worker after `MISROUTES_MAX` misses), optimistically first when asked.
    /// Returns the reply and whether an optimistic attempt was refused as unsafe.
    fn run(
        service: &TreeService,
        shards: &mut [TreeShard],
        cmd: &TreeCommand,
        optimistic: bool,
    ) -> (TreeReply, bool) {
        let k = shards.len();
        let mut access = Access::recording(true);
        let (mut refused, mut misses, mut opt) = (false, 0, optimistic);
        loop {
            let target = if misses > engine::psmr::proxy::MISROUTES_MAX {
                Target::All
            } else if opt {
                service.optimistic(cmd, k)
            } else {
                service.conservative(cmd, k)
            };
            let single = matches!(target, Target::One(_));
            let before = service.state_hash(&shards.iter().collect::<Vec<_>>());
            let workers = target.workers(k);
            let mut refs: Vec<(usize, &mut TreeShard)> = shards
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| workers.contains(i))
                .collect();
            let mut view = Shards::new(&mut refs, k);
            if let Some(routes) = service.misrouted(&mut view, cmd) {
                assert!(workers.len() < k, "a command for every worker was refused");
                drop(refs);
                let after = service.state_hash(&shards.iter().collect::<Vec<_>>());
                assert_eq!(before, after, "a misrouted command changed the state");
                service.learn_routes(&routes);
                misses += 1;
                continue;
            }
            if opt && single {
                match service.execute_optimistic(&mut view, cmd, &mut access) {
                    Ok(r) => return (r, refused),
                    Err(Unsafe) => {
                        refused = true;
                        opt = false;
                        drop(refs);
                        let after = service.state_hash(&shards.iter().collect::<Vec<_>>());
                        assert_eq!(before, after, "a refused command changed the state");
                        continue;
                    }
                }
            }
            return (service.execute(&mut view, cmd, &mut access), refused);
        }
    }

    /// The reply the model gives, and whether `got` matches it (any report for a rebalance).
    fn matches_model(model: &mut Model<u64, Bytes>, cmd: &TreeCommand, got: &TreeReply) -> bool {
        let want = crate::model::apply(model, cmd);
        match cmd {
            TreeCommand::Rebalance(_) => matches!(got, TreeReply::Rebalanced(_)),
            _ => *got == want,
        }
    }

    fn policy() -> impl Strategy<Value = RebalancePolicy> {
        (0u32..50, 1u64..20, 1u32..5, 1u64..4).prop_map(
            |(tolerance_pct, ops_min, actions_max, stripe_keys)| RebalancePolicy {
                tolerance_pct,
                ops_min,
                actions_max,
                stripe_keys,
                subtrees_max: 64,
            },
        )
    }

    /// Commands over a small key space, with sequential-looking inserts above it now and
    /// then (so the rebalancer sees appends and stripes) and rebalances.
    fn command() -> impl Strategy<Value = TreeCommand> {
        let key = 0u64..300;
        prop_oneof![
            1 => key.clone().prop_map(TreeCommand::Get),
            4 => (key.clone(), any::<u8>()).prop_map(|(k, b)| TreeCommand::Insert(k, Bytes::from(vec![b]))),
            2 => (300u64..420, any::<u8>()).prop_map(|(k, b)| TreeCommand::Insert(k, Bytes::from(vec![b]))),
            1 => (key.clone(), any::<u8>()).prop_map(|(k, b)| TreeCommand::Update(k, Bytes::from(vec![b]))),
            3 => key.clone().prop_map(TreeCommand::Delete),
            1 => (key.clone(), 0u64..80, 0u32..30).prop_map(|(lo, w, limit)| TreeCommand::Scan { lo, hi: lo + w, limit }),
            1 => Just(TreeCommand::Size),
            1 => policy().prop_map(TreeCommand::Rebalance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn matches_a_btreemap_in_both_modes(
            cmds in proptest::collection::vec(command(), 1..400),
            workers in 1usize..6,
            prefill in 0u64..120,
            key_space in 120u64..300,
            optimistic in any::<bool>(),
        ) {
            let service = TreeService::new(TreeConfig { fanout: 4, key_space, prefill, value_bytes: 2 });
            let mut shards = service.shards(workers);
            let mut model: Model<u64, Bytes> = (0..prefill)
                .map(|i| (service.config.prefill_key(i), service.value(i)))
                .collect();
            let mut refusals = 0;
            for cmd in &cmds {
                let (got, refused) = run(&service, &mut shards, cmd, optimistic);
                refusals += usize::from(refused);
                prop_assert!(matches_model(&mut model, cmd, &got), "{:?} answered {:?}", cmd, got);
                for (w, s) in shards.iter().enumerate() {
                    if let Err(e) = s.check(w) {
                        return Err(TestCaseError::fail(format!("worker {w}: {e}")));
                    }
                    prop_assert_eq!(s.top(), shards[0].top(), "every shard sees one top");
                }
            }
            if !optimistic {
                prop_assert_eq!(refusals, 0);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]
        /// Shards restored from snapshots taken midway behave exactly like the originals from
        /// then on: same replies, same optimistic refusals (which depend on the subtrees'
        /// shapes, not only their contents), same hashes; damaged snapshots are refused or
        /// restored, never a panic.
        #[test]
        fn restored_shards_behave_exactly_like_the_originals(
            before in proptest::collection::vec(command(), 0..300),
            after in proptest::collection::vec(command(), 1..300),
            workers in 1usize..5,
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..), 1..4),
        ) {
            let service = TreeService::new(TreeConfig { fanout: 4, key_space: 200, prefill: 60, value_bytes: 2 });
            let mut shards = service.shards(workers);
            for cmd in &before {
                run(&service, &mut shards, cmd, true);
            }
            let snaps: Vec<Vec<u8>> = shards.iter().enumerate().map(|(w, s)| service.snapshot_shard(w, s)).collect();
            let mut copy: Vec<TreeShard> = snaps
                .iter()
                .enumerate()
                .map(|(w, b)| service.restore_shard(w, workers, b).unwrap())
                .collect();
            let hash = |s: &[TreeShard]| service.state_hash(&s.iter().collect::<Vec<_>>());
            prop_assert_eq!(hash(&copy), hash(&shards));
            for cmd in &after {
                prop_assert_eq!(run(&service, &mut copy, cmd, true), run(&service, &mut shards, cmd, true), "{:?}", cmd);
            }
            prop_assert_eq!(hash(&copy), hash(&shards));
            // Another worker's snapshot, or a damaged one, is refused or (if the damage hit
            // nothing that matters) restored, never a panic.
            if workers > 1 {
                prop_assert!(service.restore_shard(1, workers, &snaps[0]).is_err());
            }
            let mut bad = snaps[0].clone();
            for (i, m) in &flips {
                let at = i.index(bad.len());
                bad[at] ^= m;
            }
            let _ = service.restore_shard(0, workers, &bad);
            prop_assert!(service.restore_shard(0, workers, &bad[..bad.len() / 2]).is_err());
        }
    }

    proptest! {
        /// The command map's owner and the top's ranges agree for every key and worker count.
        #[test]
        fn owner_agrees_with_ranges(key_space in 1u64..10_000, workers in 1usize..17, key in 0u64..20_000) {
            let c = TreeConfig { key_space, ..TreeConfig::default() };
            let w = c.owner(key, workers);
            prop_assert!(c.range_start(w, workers) <= key || w == 0);
            prop_assert!(w + 1 == workers || key < c.range_start(w + 1, workers));
        }
    }

    #[test]
    fn rejects_bad_configurations_with_reasons() {
        let bad = |c: TreeConfig| TreeService::try_new(c).err().unwrap_or_default();
        let base = TreeConfig::default();
        assert!(bad(TreeConfig {
            fanout: 3,
            ..base.clone()
        })
        .contains("fan-out 3"));
        assert!(bad(TreeConfig {
            key_space: 10,
            prefill: 11,
            ..base.clone()
        })
        .contains("11 distinct keys"));
        assert!(bad(TreeConfig {
            key_space: 0,
            prefill: 0,
            ..base
        })
        .contains("key space"));
    }

    /// opt-PSMR's premise (reference notes b.2): most inserts stay inside their worker's
    /// subtree. Growing a tree from empty at a small fan-out is the worst case.
    #[test]
    fn few_optimistic_inserts_are_refused() {
        let service = TreeService::new(TreeConfig {
            fanout: 8,
            key_space: 1 << 20,
            prefill: 0,
            value_bytes: 1,
        });
        let mut shards = service.shards(2);
        let mut refused = 0;
        for i in 0..20_000u64 {
            let k = (i * 2_654_435_761) % (1 << 20);
            refused += usize::from(
                run(
                    &service,
                    &mut shards,
                    &TreeCommand::Insert(k, Bytes::new()),
                    true,
                )
                .1,
            );
        }
        for (w, s) in shards.iter().enumerate() {
            s.check(w).unwrap();
            assert!(
                s.top().subtrees() <= 2 * (service.config.fanout + 1),
                "the top stays small"
            );
        }
        assert!(refused > 0, "some inserts reached a subtree root");
        assert!(refused < 20_000 / 50, "fewer than 2% refused: {refused}");
    }

    /// A step of a rebalancing plan drawn blindly (it may not fit the top: then it must
    /// change nothing), or a command.
    #[derive(Clone, Debug)]
    enum Step {
        Split(proptest::sample::Index, u64),
        Move(proptest::sample::Index, usize),
        Stripe(proptest::sample::Index, u64, u64, usize),
        Stale(u64),
        Command(TreeCommand),
    }

    fn step() -> impl Strategy<Value = Step> {
        let at = prop_oneof![0u64..450, Just(u64::MAX)];
        prop_oneof![
            2 => (any::<proptest::sample::Index>(), at.clone()).prop_map(|(i, a)| Step::Split(i, a)),
            2 => (any::<proptest::sample::Index>(), 0usize..5).prop_map(|(i, w)| Step::Move(i, w)),
            1 => (any::<proptest::sample::Index>(), at, 1u64..5, 2usize..5)
                .prop_map(|(i, a, w, n)| Step::Stripe(i, a, w, n)),
            1 => (0u64..4).prop_map(Step::Stale),
            4 => command().prop_map(Step::Command),
        ]
    }

    /// Which entry's subtree holds `key`, by looking at every entry (the naive reference).
    fn holders(top: &Top, key: u64) -> Vec<usize> {
        (0..top.entries.len())
            .filter(|&i| {
                let e = top.entries[i];
                e.low <= key && top.high(i).is_none_or(|h| key < h) && e.stripe.holds(key)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]
        /// After any sequence of splits, moves and stripes (fitting or not) mixed with
        /// commands, the top still covers the key space exactly once: every key has exactly
        /// one entry (by a naive look at every entry), `locate` finds it, the range map clients
        /// route by agrees, and the owner is what a naive per-key model of the moves says.
        /// Entries and replies stay those of a plain map.
        #[test]
        fn range_map_covers_the_key_space_exactly_once(
            steps in proptest::collection::vec(step(), 1..120),
            workers in 1usize..5,
            prefill in 0u64..100,
        ) {
            let service = TreeService::new(TreeConfig { fanout: 4, key_space: 300, prefill, value_bytes: 2 });
            let mut shards = service.shards(workers);
            let mut model: Model<u64, Bytes> = (0..prefill)
                .map(|i| (service.config.prefill_key(i), service.value(i)))
                .collect();
            let probes: Vec<u64> = (0..460).chain([u64::MAX - 1, u64::MAX]).collect();
            let mut owner: BTreeMap<u64, usize> = probes
                .iter()
                .map(|&k| (k, service.config.owner(k, workers)))
                .collect();
            for st in &steps {
                let top = shards[0].top().clone();
                let len = top.entries.len();
                let action = match st {
                    Step::Split(i, at) => Some(Action::Split { id: top.entries[i.index(len)].id, at: *at, upper: top.next_id }),
                    Step::Move(i, w) => Some(Action::Move { id: top.entries[i.index(len)].id, to: *w }),
                    Step::Stripe(i, at, keys, n) => Some(Action::Stripe {
                        id: top.entries[i.index(len)].id,
                        at: *at,
                        stripe_keys: *keys,
                        parts: (0..*n).map(|j| (top.next_id + j as u64, j % workers)).collect(),
                    }),
                    // An id in use, a stale one, or one never given out.
                    Step::Stale(id) => Some(Action::Split { id: *id, at: 150, upper: (*id).min(top.next_id.saturating_sub(1)) }),
                    Step::Command(cmd) => {
                        let (got, _) = run(&service, &mut shards, cmd, true);
                        prop_assert!(matches_model(&mut model, cmd, &got), "{:?} answered {:?}", cmd, got);
                        if let TreeCommand::Rebalance(_) = cmd {
                            // The plan moved keys its own way: take the tree's word for it,
                            // the other checks below still hold it to covering every key once.
                            for (k, o) in owner.iter_mut() {
                                *o = shards[0].top().entries[shards[0].top().locate(*k)].owner;
                            }
                        }
                        None
                    }
                };
                if let Some(a) = action {
                    let hash = service.state_hash(&shards.iter().collect::<Vec<_>>());
                    let before = shards[0].top().clone();
                    if service.apply_action(&mut shards, &a) {
                        // The naive model of what the step does to owners.
                        match &a {
                            Action::Move { id, to } => {
                                let i = before.position(*id).unwrap();
                                for (k, o) in owner.iter_mut() {
                                    if holders(&before, *k) == vec![i] {
                                        *o = *to;
                                    }
                                }
                            }
                            Action::Stripe { id, at, stripe_keys, parts } => {
                                let i = before.position(*id).unwrap();
                                for (k, o) in owner.iter_mut() {
                                    if *k >= *at && holders(&before, *k) == vec![i] {
                                        *o = parts[((*k / stripe_keys) % parts.len() as u64) as usize].1;
                                    }
                                }
                            }
                            Action::Split { .. } => {}
                        }
                    } else {
                        prop_assert_eq!(hash, service.state_hash(&shards.iter().collect::<Vec<_>>()), "{:?} did not fit but changed the state", a);
                    }
                }
                let top = shards[0].top();
                prop_assert!(top.check(workers).is_ok(), "{:?}", top.check(workers));
                let map = top.ranges();
                prop_assert!(map.validate(workers).is_ok());
                for &k in &probes {
                    let h = holders(top, k);
                    prop_assert_eq!(h.len(), 1, "key {} held by entries {:?} after {:?}", k, h, st);
                    prop_assert_eq!(h[0], top.locate(k));
                    prop_assert_eq!(map.owner(k), top.entries[h[0]].owner);
                    prop_assert_eq!(owner[&k], top.entries[h[0]].owner, "key {} after {:?}", k, st);
                }
                for (w, s) in shards.iter().enumerate() {
                    prop_assert!(s.check(w).is_ok(), "worker {}: {:?}", w, s.check(w));
                    prop_assert_eq!(s.top(), shards[0].top(), "every shard sees one top");
                }
            }
        }
    }

    /// Appends above the last key are striped, and the striped range then spreads new keys
    /// over both workers and answers scans and gets across its parts in key order.
    #[test]
    fn the_rebalancer_stripes_appends_and_spreads_them() {
        let service = TreeService::new(TreeConfig {
            fanout: 64,
            key_space: 1000,
            prefill: 100,
            value_bytes: 1,
        });
        let mut shards = service.shards(2);
        let policy = RebalancePolicy {
            ops_min: 50,
            ..RebalancePolicy::default()
        };
        for k in 1000..1200u64 {
            run(
                &service,
                &mut shards,
                &TreeCommand::Insert(k, Bytes::from_static(b"v")),
                true,
            );
        }
        let TreeReply::Rebalanced(r) =
            run(&service, &mut shards, &TreeCommand::Rebalance(policy), true).0
        else {
            panic!("not a rebalance reply")
        };
        assert_eq!((r.stripes, r.version), (1, 1), "{r:?}");
        assert_eq!(shards[0].top().striped_ranges(), 1);
        let before: Vec<u64> = shards.iter().map(TreeShard::len).collect();
        for k in 1200..1400u64 {
            run(
                &service,
                &mut shards,
                &TreeCommand::Insert(k, Bytes::from_static(b"v")),
                true,
            );
        }
        let grew: Vec<u64> = shards
            .iter()
            .zip(&before)
            .map(|(s, b)| s.len() - b)
            .collect();
        assert_eq!(
            grew,
            vec![100, 100],
            "new keys alternate between the workers"
        );
        let (got, _) = run(
            &service,
            &mut shards,
            &TreeCommand::Scan {
                lo: 1150,
                hi: 1260,
                limit: 1000,
            },
            true,
        );
        let TreeReply::Entries(es) = got else {
            panic!()
        };
        assert_eq!(
            es.iter().map(|e| e.0).collect::<Vec<_>>(),
            (1150..1260).collect::<Vec<_>>()
        );
        let quiet = run(&service, &mut shards, &TreeCommand::Rebalance(policy), true).0;
        assert!(
            matches!(
                quiet,
                TreeReply::Rebalanced(RebalanceReport {
                    moves: 0,
                    splits: 0,
                    stripes: 0,
                    ..
                })
            ),
            "{quiet:?}"
        );
        for (w, s) in shards.iter().enumerate() {
            s.check(w).unwrap();
        }
    }

    /// Unscrambled-Zipf-like load on the first worker's lowest keys: the rebalancer splits
    /// the hot subtree and moves part of it until the two workers' counted loads are close.
    #[test]
    fn the_rebalancer_splits_and_moves_a_hot_range() {
        let service = TreeService::new(TreeConfig {
            fanout: 16,
            key_space: 10_000,
            prefill: 10_000,
            value_bytes: 1,
        });
        let mut shards = service.shards(2);
        let policy = RebalancePolicy {
            ops_min: 100,
            ..RebalancePolicy::default()
        };
        let mut rounds = Vec::new();
        for round in 0..12u64 {
            for i in 0..2000u64 {
                // Keys 0..2000 get most of the load, evenly.
                let k = (i * 7 + round) % 2000;
                run(&service, &mut shards, &TreeCommand::Get(k), true);
            }
            let TreeReply::Rebalanced(r) =
                run(&service, &mut shards, &TreeCommand::Rebalance(policy), true).0
            else {
                panic!()
            };
            rounds.push(r);
        }
        let last = rounds.last().unwrap();
        let (a, b) = (last.loads[0] as f64, last.loads[1] as f64);
        assert!(
            a.max(b) / ((a + b) / 2.0) < 1.25,
            "still unbalanced: {rounds:?}"
        );
        assert!(rounds.iter().map(|r| r.splits).sum::<u32>() >= 1);
        assert!(rounds.iter().map(|r| r.moves).sum::<u32>() >= 1);
        for (w, s) in shards.iter().enumerate() {
            s.check(w).unwrap();
        }
    }
}
