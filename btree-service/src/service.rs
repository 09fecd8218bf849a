//! The replicated B+-tree as an engine [`Service`].
//!
//! The key space `[0, key_space)` is range-partitioned across the workers (worker `w` owns
//! `[w * key_space / k, (w + 1) * key_space / k)`; keys beyond belong to the last worker).
//! The tree is a shared *top* (the sorted list of subtree boundaries, a one-level index like a
//! B+-tree root) over *subtrees*, each a [`BPlusTree`] owned by the worker whose range holds
//! it. Every shard keeps its own copy of the top (an `Arc`, replaced only by commands for all
//! workers, which run while every worker is parked), so reading it needs no lock.
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
//! - `Size`: all workers.

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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeReply {
    Value(Option<Bytes>),
    Inserted(Option<Bytes>),
    Updated(bool),
    Deleted(Option<Bytes>),
    Entries(Vec<(u64, Bytes)>),
    Size(u64),
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

    /// The worker owning `key` among `workers`: the last worker whose range starts at or
    /// before `key` (defined by [`TreeConfig::range_start`], so the two always agree).
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

    /// The first key of worker `w`'s range.
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

/// The shared top: subtree `entries[i]` holds keys in `[low_i, low_{i+1})`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Top {
    entries: Vec<TopEntry>,
    next_id: SubtreeId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct TopEntry {
    low: u64,
    id: SubtreeId,
    owner: usize,
}

impl Top {
    fn find(&self, key: u64) -> usize {
        self.entries
            .partition_point(|e| e.low <= key)
            .saturating_sub(1)
    }

    /// Number of subtrees.
    pub fn subtrees(&self) -> usize {
        self.entries.len()
    }
}

/// One worker's part of the tree.
pub struct TreeShard {
    top: Arc<Top>,
    subtrees: BTreeMap<SubtreeId, BPlusTree<u64, Bytes>>,
}

impl TreeShard {
    /// The top as this shard sees it.
    pub fn top(&self) -> &Top {
        &self.top
    }

    /// Entries held by this shard.
    pub fn len(&self) -> u64 {
        self.subtrees.values().map(|t| t.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every subtree's invariants and that each holds only keys of its top range.
    pub fn check(&self, worker: usize) -> Result<(), String> {
        for (i, e) in self.top.entries.iter().enumerate() {
            if e.owner != worker {
                continue;
            }
            let t = self
                .subtrees
                .get(&e.id)
                .ok_or_else(|| format!("worker {worker} lacks its subtree {}", e.id))?;
            t.check_invariants()?;
            let hi = self.top.entries.get(i + 1).map(|n| n.low);
            if t.first_key().is_some_and(|k| *k < e.low)
                || hi.is_some_and(|h| t.last_key().is_some_and(|k| *k >= h))
            {
                return Err(format!(
                    "subtree {} holds keys outside [{}, {hi:?})",
                    e.id, e.low
                ));
            }
        }
        Ok(())
    }
}

/// A shard in a checkpoint: its copy of the top and its subtrees, exactly as they are.
#[derive(Serialize, Deserialize)]
struct ShardImage {
    top: Top,
    subtrees: Vec<(SubtreeId, TreeImage<u64, Bytes>)>,
}

/// Object ids for the debug-mode access sets.
const TOP_OBJECT: u64 = u64::MAX;
fn subtree_object(id: SubtreeId) -> u64 {
    (1 << 62) | id
}

/// The replicated B+-tree service.
pub struct TreeService {
    pub config: TreeConfig,
}

impl TreeService {
    /// The service for a valid configuration (see [`TreeService::try_new`]).
    pub fn new(config: TreeConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|e| panic!("invalid tree configuration: {e}"))
    }

    pub fn try_new(config: TreeConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(TreeService { config })
    }

    fn value(&self, i: u64) -> Bytes {
        let mut v = vec![0u8; self.config.value_bytes];
        for (j, b) in v.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31).wrapping_add(j as u64)) as u8;
        }
        Bytes::from(v)
    }

    fn subtree<'a>(
        shards: &'a mut Shards<'_, '_, TreeShard>,
        top: &Top,
        key: u64,
        access: &mut Access,
    ) -> &'a mut BPlusTree<u64, Bytes> {
        access.read(TOP_OBJECT);
        let e = top.entries[top.find(key)];
        shards
            .get(e.owner)
            .subtrees
            .get_mut(&e.id)
            .expect("the top names a subtree its owner holds")
    }

    /// Like a B+-tree root that overflows and grows a level: when a worker holds more than
    /// `fanout` subtrees, adjacent pairs of them are joined into taller subtrees, so the top
    /// stays small and subtree roots split rarely.
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
            if a.owner == owner && b.owner == owner {
                let upper = shard.subtrees.remove(&b.id).expect("subtree");
                let lower = shard.subtrees.get_mut(&a.id).expect("subtree");
                lower
                    .absorb(upper)
                    .expect("adjacent subtrees hold increasing keys");
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
                let idx = top.find(*k);
                let e = top.entries[idx];
                access.write(subtree_object(e.id));
                let t = shards
                    .get(e.owner)
                    .subtrees
                    .get_mut(&e.id)
                    .expect("subtree");
                if t.insert_would_split_root(k) && t.len() >= 2 {
                    // Split the subtree into two siblings in the top rather than growing it.
                    let (low, upper) = t.split_off_upper().expect("at least two entries");
                    let id = top.next_id;
                    top.next_id += 1;
                    top.entries.insert(
                        idx + 1,
                        TopEntry {
                            low,
                            id,
                            owner: e.owner,
                        },
                    );
                    access.write(TOP_OBJECT);
                    shards.get(e.owner).subtrees.insert(id, upper);
                }
                let e = top.entries[top.find(*k)];
                let t = shards
                    .get(e.owner)
                    .subtrees
                    .get_mut(&e.id)
                    .expect("subtree");
                let old = t.insert(*k, v.clone());
                self.regroup(shards, &mut top, e.owner, access);
                TreeReply::Inserted(old)
            }
            TreeCommand::Delete(k) => {
                let idx = top.find(*k);
                let e = top.entries[idx];
                access.write(subtree_object(e.id));
                let t = shards
                    .get(e.owner)
                    .subtrees
                    .get_mut(&e.id)
                    .expect("subtree");
                let old = t.remove(k);
                // An emptied subtree leaves the top unless it is the first of its worker's
                // range (which keeps the range's lower bound).
                let first_of_range = idx == 0 || top.entries[idx - 1].owner != e.owner;
                if t.is_empty() && !first_of_range {
                    shards.get(e.owner).subtrees.remove(&e.id);
                    top.entries.remove(idx);
                    access.write(TOP_OBJECT);
                }
                TreeReply::Deleted(old)
            }
            other => unreachable!("not structural: {other:?}"),
        };
        let top = Arc::new(top);
        for (_, s) in shards.iter_mut() {
            s.top = top.clone();
        }
        reply
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
            });
            trees.push(tree);
        }
        let top = Arc::new(Top {
            entries,
            next_id: workers as SubtreeId,
        });
        trees
            .into_iter()
            .enumerate()
            .map(|(w, t)| TreeShard {
                top: top.clone(),
                subtrees: BTreeMap::from([(w as SubtreeId, t)]),
            })
            .collect()
    }

    fn conservative(&self, cmd: &TreeCommand, workers: usize) -> Target {
        let owner = |k| self.config.owner(k, workers);
        match cmd {
            TreeCommand::Get(k) | TreeCommand::Update(k, _) => Target::One(owner(*k)),
            TreeCommand::Insert(..) | TreeCommand::Delete(_) | TreeCommand::Size => Target::All,
            TreeCommand::Scan { lo, hi, .. } => {
                if hi <= lo {
                    Target::One(owner(*lo))
                } else {
                    Target::of((owner(*lo)..=owner(hi - 1)).collect())
                }
            }
        }
    }

    fn optimistic(&self, cmd: &TreeCommand, workers: usize) -> Target {
        match cmd {
            TreeCommand::Insert(k, _) | TreeCommand::Delete(k) => {
                Target::One(self.config.owner(*k, workers))
            }
            other => self.conservative(other, workers),
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
            TreeCommand::Get(k) => {
                let t = Self::subtree(shards, &top, *k, access);
                access.read(*k);
                TreeReply::Value(t.get(k).cloned())
            }
            TreeCommand::Update(k, v) => {
                let t = Self::subtree(shards, &top, *k, access);
                access.write(*k);
                match t.get_mut(k) {
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
            TreeCommand::Scan { lo, hi, limit } => {
                access.read(TOP_OBJECT);
                let mut out = Vec::new();
                if lo < hi {
                    for e in top.entries[top.find(*lo)..]
                        .iter()
                        .take_while(|e| e.low < *hi)
                    {
                        if out.len() >= *limit as usize {
                            break;
                        }
                        access.read(subtree_object(e.id));
                        let t = shards.get(e.owner).subtrees.get(&e.id).expect("subtree");
                        let want = *limit as usize - out.len();
                        out.extend(t.scan(lo, hi, want));
                    }
                }
                TreeReply::Entries(out)
            }
            TreeCommand::Size => {
                access.read(TOP_OBJECT);
                TreeReply::Size(shards.iter_mut().map(|(_, s)| s.len()).sum())
            }
        }
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
                let t = Self::subtree(shards, &top, *k, access);
                if t.insert_would_split_root(k) {
                    return Err(Unsafe);
                }
                access.write(*k);
                access.write(subtree_object(top.entries[top.find(*k)].id));
                Ok(TreeReply::Inserted(t.insert(*k, v.clone())))
            }
            TreeCommand::Delete(k) => {
                let t = Self::subtree(shards, &top, *k, access);
                if t.remove_would_shrink_root(k) {
                    return Err(Unsafe);
                }
                access.write(*k);
                access.write(subtree_object(top.entries[top.find(*k)].id));
                Ok(TreeReply::Deleted(t.remove(k)))
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
                .map(|(id, t)| (*id, t.to_image()))
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
        let top = &image.top;
        if top.entries.is_empty() || top.entries[0].low != 0 {
            return Err(bad("the top does not start at key 0".into()));
        }
        if top.entries.windows(2).any(|w| w[0].low >= w[1].low) {
            return Err(bad("the top's ranges are not increasing".into()));
        }
        if top
            .entries
            .iter()
            .any(|e| e.owner >= workers || e.id >= top.next_id)
        {
            return Err(bad("the top names an unknown worker or subtree".into()));
        }
        let mine = top.entries.iter().filter(|e| e.owner == worker).count();
        let mut subtrees = BTreeMap::new();
        for (id, t) in image.subtrees {
            let t = BPlusTree::from_image(t).map_err(|e| bad(format!("subtree {id}: {e}")))?;
            if t.fanout() != self.config.fanout {
                return Err(bad(format!("subtree {id} has fan-out {}", t.fanout())));
            }
            subtrees.insert(id, t);
        }
        if subtrees.len() != mine {
            return Err(bad(format!(
                "{} subtrees, the top gives the worker {mine}",
                subtrees.len()
            )));
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
        for e in &top.entries {
            let t = &shards[e.owner].subtrees[&e.id];
            h.words([e.low, e.owner as u64, t.len() as u64, t.content_hash()]);
        }
        h.get()
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

    fn run(
        service: &TreeService,
        shards: &mut [TreeShard],
        cmd: &TreeCommand,
        optimistic: bool,
    ) -> (TreeReply, bool) {
        let k = shards.len();
        let mut access = Access::recording(true);
        let target = if optimistic {
            service.optimistic(cmd, k)
        } else {
            service.conservative(cmd, k)
        };
        let mut refused = false;
        if let (true, Target::One(w)) = (optimistic, &target) {
            let before = service.state_hash(&shards.iter().collect::<Vec<_>>());
            let mut one = [(*w, &mut shards[*w])];
            match service.execute_optimistic(&mut Shards::new(&mut one, k), cmd, &mut access) {
                Ok(r) => return (r, false),
                Err(Unsafe) => {
                    refused = true;
                    let after = service.state_hash(&shards.iter().collect::<Vec<_>>());
                    assert_eq!(before, after, "a refused command changed the state");
                }
            }
        }
        let target = if refused {
            service.conservative(cmd, k)
        } else {
            target
        };
        let workers = target.workers(k);
        let mut refs: Vec<(usize, &mut TreeShard)> = shards
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| workers.contains(i))
            .collect();
        (
            service.execute(&mut Shards::new(&mut refs, k), cmd, &mut access),
            refused,
        )
    }

    fn expected(model: &mut Model<u64, Bytes>, cmd: &TreeCommand) -> TreeReply {
        match cmd {
            TreeCommand::Get(k) => TreeReply::Value(model.get(k).cloned()),
            TreeCommand::Insert(k, v) => TreeReply::Inserted(model.insert(*k, v.clone())),
            TreeCommand::Update(k, v) => match model.get_mut(k) {
                Some(slot) => {
                    *slot = v.clone();
                    TreeReply::Updated(true)
                }
                None => TreeReply::Updated(false),
            },
            TreeCommand::Delete(k) => TreeReply::Deleted(model.remove(k)),
            TreeCommand::Scan { lo, hi, limit } => TreeReply::Entries(if lo < hi {
                model
                    .range(*lo..*hi)
                    .take(*limit as usize)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect()
            } else {
                vec![]
            }),
            TreeCommand::Size => TreeReply::Size(model.len() as u64),
        }
    }

    fn command() -> impl Strategy<Value = TreeCommand> {
        let key = 0u64..300;
        prop_oneof![
            1 => key.clone().prop_map(TreeCommand::Get),
            4 => (key.clone(), any::<u8>()).prop_map(|(k, b)| TreeCommand::Insert(k, Bytes::from(vec![b]))),
            1 => (key.clone(), any::<u8>()).prop_map(|(k, b)| TreeCommand::Update(k, Bytes::from(vec![b]))),
            3 => key.clone().prop_map(TreeCommand::Delete),
            1 => (key.clone(), 0u64..80, 0u32..30).prop_map(|(lo, w, limit)| TreeCommand::Scan { lo, hi: lo + w, limit }),
            1 => Just(TreeCommand::Size),
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
                prop_assert_eq!(got, expected(&mut model, cmd), "after {:?}", cmd);
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
}
