//! The contract between a partitioned service and the engine (scale-out: S-SMR and DS-SMR).
//!
//! A partitioned service's state is a set of *objects*, each with an id and a value, spread
//! over partitions. A command is one of three kinds ([`Kind`]): an *access* to a set of
//! existing objects, the *creation* of one object, or the *deletion* of one. The service's
//! [`PartitionedService::execute`] runs an access over the objects it touches and knows
//! nothing about partitions: the engine brings the objects together, in one partition
//! (DS-SMR moves them there) or by exchanging copies (S-SMR, and the DS-SMR fallback).
//!
//! An access may find that it needs objects it did not name (Chirper's post needs every
//! follower of the poster): it returns [`Need`], changing nothing, and the client proxy retries
//! it with the larger object set (the paper's `retry(gamma)`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

/// An object's id.
pub type ObjectId = u64;

/// A partition: `0..partitions`. (The DS-SMR oracle is multicast group `partitions`; it is not
/// a partition and holds no objects, only their locations.)
pub type PartitionId = u32;

/// What a command does to objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Reads and writes existing objects (sorted, distinct ids).
    Access(Vec<ObjectId>),
    /// Creates one object, with the value [`PartitionedService::initial`] gives.
    Create(ObjectId),
    /// Deletes one object (deleting one that does not exist succeeds).
    Delete(ObjectId),
}

impl Kind {
    /// An access to `objects` (sorted and deduplicated here).
    pub fn access(mut objects: Vec<ObjectId>) -> Kind {
        objects.sort_unstable();
        objects.dedup();
        Kind::Access(objects)
    }

    /// The objects the command names.
    pub fn objects(&self) -> &[ObjectId] {
        match self {
            Kind::Access(v) => v,
            Kind::Create(o) | Kind::Delete(o) => std::slice::from_ref(o),
        }
    }
}

/// An access needs these objects besides the ones it was given (`retry(gamma)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need(pub Vec<ObjectId>);

/// The objects an access runs on, by id.
pub struct Objects<'a, V> {
    items: &'a mut [(ObjectId, V)],
}

impl<'a, V> Objects<'a, V> {
    /// `items` must be sorted by id, without duplicates.
    pub fn new(items: &'a mut [(ObjectId, V)]) -> Self {
        debug_assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
        Objects { items }
    }

    fn index(&self, id: ObjectId) -> Option<usize> {
        self.items.binary_search_by_key(&id, |(o, _)| *o).ok()
    }

    /// The value of `id`, if the access has it.
    pub fn get(&self, id: ObjectId) -> Option<&V> {
        self.index(id).map(|i| &self.items[i].1)
    }

    pub fn get_mut(&mut self, id: ObjectId) -> Option<&mut V> {
        self.index(id).map(|i| &mut self.items[i].1)
    }

    /// Two distinct objects at once.
    pub fn pair_mut(&mut self, a: ObjectId, b: ObjectId) -> Option<(&mut V, &mut V)> {
        let (i, j) = (self.index(a)?, self.index(b)?);
        if i == j {
            return None;
        }
        let (lo, hi) = (i.min(j), i.max(j));
        let (left, right) = self.items.split_at_mut(hi);
        let (x, y) = (&mut left[lo].1, &mut right[0].1);
        Some(if i < j { (x, y) } else { (y, x) })
    }

    pub fn has(&self, id: ObjectId) -> bool {
        self.index(id).is_some()
    }

    /// Every object, in id order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ObjectId, &mut V)> {
        self.items.iter_mut().map(|(o, v)| (*o, v))
    }

    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.items.iter().map(|(o, _)| *o)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A service whose state is split over partitions.
pub trait PartitionedService: Send + Sync + 'static {
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    type Reply: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static;
    /// An object's value. Moved between partitions (DS-SMR) or copied to the other partitions
    /// of a command (S-SMR), so keep it reasonably small.
    type Value: Serialize + DeserializeOwned + Clone + Debug + Hash + Send + Sync + 'static;

    /// A short name for logs and results.
    fn name(&self) -> &'static str;

    /// What `cmd` does. Must be a function of the command alone (clients and every replica
    /// compute it).
    fn kind(&self, cmd: &Self::Command) -> Kind;

    /// The value a [`Kind::Create`] command gives its new object.
    fn initial(&self, cmd: &Self::Command) -> Self::Value;

    /// Runs an access on `objects`: every object the command named (plus any it asked for with
    /// [`Need`] on an earlier attempt), all existing. Returns [`Need`] with the missing ids if
    /// it must read or write an object it was not given; it must then have changed nothing.
    /// Deterministic.
    fn execute(
        &self,
        cmd: &Self::Command,
        objects: &mut Objects<'_, Self::Value>,
    ) -> Result<Self::Reply, Need>;

    /// Whether `cmd` only reads (an access that changes no object). A client with fast reads
    /// on ([`super::proxy::ClientOptions::fast_reads`]) sends such a command, when all its
    /// objects are in one partition, to one replica of that partition, which answers it off
    /// the log after a read index ([`super::reads`]); it runs on copies of the objects, so a
    /// command wrongly declared read-only still changes nothing. Must be a function of the
    /// command alone. The default: none is.
    fn read_only(&self, _cmd: &Self::Command) -> bool {
        false
    }

    /// The placement rule: where a new object goes (and, in S-SMR, where every object lives,
    /// forever). Clients and replicas must agree on it.
    fn place(&self, object: ObjectId, partitions: u32) -> PartitionId;

    /// Objects that exist from the start, each in the partition [`PartitionedService::place`]
    /// gives it. Every replica and the oracle load them; default none.
    fn preload(&self) -> Vec<(ObjectId, Self::Value)> {
        Vec::new()
    }

    /// DS-SMR: the partition an access whose objects are spread over several partitions is
    /// gathered in, given where they are (`locations`, by object) and a random `draw`. The
    /// default picks one of the partitions involved uniformly at random (as the seed
    /// library's `getTargetPartition`).
    fn target(
        &self,
        _cmd: &Self::Command,
        locations: &[(ObjectId, PartitionId)],
        draw: u64,
    ) -> PartitionId {
        let mut ps: Vec<PartitionId> = locations.iter().map(|(_, p)| *p).collect();
        ps.sort_unstable();
        ps.dedup();
        ps[(draw % ps.len().max(1) as u64) as usize]
    }
}

/// A stable hash of a value (the same in every replica of a run).
pub fn value_hash<V: Hash>(v: &V) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    v.hash(&mut h);
    h.finish()
}

/// The contribution of object `id` to a partition's membership digest (an order-independent
/// XOR over the objects it owns, so oracle and partition can compare views cheaply).
pub fn member_mix(id: ObjectId) -> u64 {
    // splitmix64 finalizer
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_hand_out_disjoint_pairs() {
        let mut items = vec![(1u64, 10i64), (5, 50), (9, 90)];
        let mut o = Objects::new(&mut items);
        let (a, b) = o.pair_mut(9, 1).unwrap();
        *a += 1;
        *b += 2;
        assert!(o.pair_mut(5, 5).is_none());
        assert!(o.pair_mut(5, 6).is_none());
        assert_eq!(o.get(9), Some(&91));
        assert_eq!(o.get(1), Some(&12));
        assert!(!o.has(2));
    }

    #[test]
    fn access_kinds_are_sorted_and_distinct() {
        assert_eq!(Kind::access(vec![3, 1, 3]), Kind::Access(vec![1, 3]));
        assert_eq!(Kind::Create(4).objects(), &[4]);
    }
}
