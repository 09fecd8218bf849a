//! [`GroupSet`]: a compact set of groups.
//!
//! Most messages go to one group or a handful, so the common case is a sorted inline array with
//! no heap allocation. Sets that are dense relative to their largest id (for example "all
//! 4096 groups" of a partitions x workers layout) switch to a bitmap, so a set never costs more
//! than about one bit per group. The representation is chosen automatically after every
//! mutation; equality, ordering and hashing depend only on the members.

use crate::ids::GroupId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Inline capacity of the sparse form.
const INLINE: usize = 6;

#[derive(Clone)]
enum Repr {
    /// Strictly increasing ids.
    Sparse(SmallVec<[u32; INLINE]>),
    /// Bit `i` of word `i / 64` is group `i`. The last word is non-zero.
    Dense(Box<[u64]>),
}

/// A set of [`GroupId`]s.
#[derive(Clone)]
pub struct GroupSet(Repr);

impl Default for GroupSet {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupSet {
    /// The empty set.
    pub fn new() -> Self {
        GroupSet(Repr::Sparse(SmallVec::new()))
    }

    /// A set with one member.
    pub fn singleton(g: GroupId) -> Self {
        let mut v = SmallVec::new();
        v.push(g.0);
        GroupSet(Repr::Sparse(v))
    }

    /// Groups `0..n`.
    pub fn all(n: u32) -> Self {
        (0..n).map(GroupId).collect()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Sparse(v) => v.len(),
            Repr::Dense(w) => w.iter().map(|x| x.count_ones() as usize).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Sparse(v) => v.is_empty(),
            Repr::Dense(_) => false,
        }
    }

    pub fn contains(&self, g: GroupId) -> bool {
        match &self.0 {
            Repr::Sparse(v) => v.binary_search(&g.0).is_ok(),
            Repr::Dense(w) => dense_get(w, g.0),
        }
    }

    /// The smallest member.
    pub fn first(&self) -> Option<GroupId> {
        self.iter().next()
    }

    /// The largest member.
    pub fn last(&self) -> Option<GroupId> {
        match &self.0 {
            Repr::Sparse(v) => v.last().map(|&x| GroupId(x)),
            Repr::Dense(w) => {
                let i = w.len() - 1;
                Some(GroupId(i as u32 * 64 + 63 - w[i].leading_zeros()))
            }
        }
    }

    /// Adds `g`; returns whether it was absent.
    pub fn insert(&mut self, g: GroupId) -> bool {
        let added = match &mut self.0 {
            Repr::Sparse(v) => match v.binary_search(&g.0) {
                Ok(_) => false,
                Err(pos) => {
                    v.insert(pos, g.0);
                    true
                }
            },
            Repr::Dense(w) => {
                if dense_get(w, g.0) {
                    false
                } else {
                    let word = (g.0 / 64) as usize;
                    if word >= w.len() {
                        let mut grown = w.to_vec();
                        grown.resize(word + 1, 0);
                        *w = grown.into_boxed_slice();
                    }
                    w[word] |= 1 << (g.0 % 64);
                    true
                }
            }
        };
        if added {
            self.normalize();
        }
        added
    }

    /// Removes `g`; returns whether it was present.
    pub fn remove(&mut self, g: GroupId) -> bool {
        let removed = match &mut self.0 {
            Repr::Sparse(v) => match v.binary_search(&g.0) {
                Ok(pos) => {
                    v.remove(pos);
                    true
                }
                Err(_) => false,
            },
            Repr::Dense(w) => {
                if dense_get(w, g.0) {
                    w[(g.0 / 64) as usize] &= !(1 << (g.0 % 64));
                    true
                } else {
                    false
                }
            }
        };
        if removed {
            self.normalize();
        }
        removed
    }

    /// Members in increasing order.
    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Repr::Sparse(v) => Iter::Sparse(v.iter()),
            Repr::Dense(w) => Iter::Dense {
                words: w,
                word: 0,
                bits: w.first().copied().unwrap_or(0),
            },
        }
    }

    /// Whether the two sets share a member.
    pub fn intersects(&self, other: &GroupSet) -> bool {
        match (&self.0, &other.0) {
            (Repr::Sparse(a), Repr::Sparse(b)) => {
                let (mut i, mut j) = (0, 0);
                while i < a.len() && j < b.len() {
                    match a[i].cmp(&b[j]) {
                        Ordering::Less => i += 1,
                        Ordering::Greater => j += 1,
                        Ordering::Equal => return true,
                    }
                }
                false
            }
            (Repr::Dense(a), Repr::Dense(b)) => a.iter().zip(b.iter()).any(|(x, y)| x & y != 0),
            (Repr::Sparse(s), Repr::Dense(d)) | (Repr::Dense(d), Repr::Sparse(s)) => {
                s.iter().any(|&g| dense_get(d, g))
            }
        }
    }

    /// Whether every member of `self` is in `other`.
    pub fn is_subset(&self, other: &GroupSet) -> bool {
        match (&self.0, &other.0) {
            (Repr::Dense(a), Repr::Dense(b)) => {
                a.len() <= b.len() && a.iter().zip(b.iter()).all(|(x, y)| x & !y == 0)
            }
            _ => self.iter().all(|g| other.contains(g)),
        }
    }

    /// Members of both sets.
    pub fn intersection(&self, other: &GroupSet) -> GroupSet {
        self.iter().filter(|g| other.contains(*g)).collect()
    }

    /// Members of either set.
    pub fn union(&self, other: &GroupSet) -> GroupSet {
        let mut out = self.clone();
        for g in other.iter() {
            out.insert(g);
        }
        out
    }

    /// Chooses the smaller representation: sparse while the sorted ids take no more room than
    /// the bitmap (or while they fit inline), dense otherwise.
    fn normalize(&mut self) {
        let len = self.len();
        let last = match self.last() {
            Some(g) => g.0,
            None => {
                self.0 = Repr::Sparse(SmallVec::new());
                return;
            }
        };
        let words = (last / 64 + 1) as usize;
        let want_dense = len > INLINE && words * 2 < len;
        match (&self.0, want_dense) {
            (Repr::Sparse(v), true) => {
                let mut w = vec![0u64; words];
                for &g in v {
                    w[(g / 64) as usize] |= 1 << (g % 64);
                }
                self.0 = Repr::Dense(w.into_boxed_slice());
            }
            (Repr::Dense(w), false) => {
                let v: SmallVec<[u32; INLINE]> = dense_iter(w).collect();
                self.0 = Repr::Sparse(v);
            }
            (Repr::Dense(w), true) if w.len() != words => {
                self.0 = Repr::Dense(w[..words].to_vec().into_boxed_slice());
            }
            _ => {}
        }
    }

    fn from_sorted_unique(ids: SmallVec<[u32; INLINE]>) -> Self {
        let mut s = GroupSet(Repr::Sparse(ids));
        s.normalize();
        s
    }
}

fn dense_get(w: &[u64], g: u32) -> bool {
    w.get((g / 64) as usize)
        .is_some_and(|x| x & (1 << (g % 64)) != 0)
}

fn dense_iter(w: &[u64]) -> impl Iterator<Item = u32> + '_ {
    w.iter().enumerate().flat_map(|(i, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            Some(i as u32 * 64 + b)
        })
    })
}

/// Iterator over a [`GroupSet`], in increasing order.
pub enum Iter<'a> {
    Sparse(std::slice::Iter<'a, u32>),
    Dense {
        words: &'a [u64],
        word: usize,
        bits: u64,
    },
}

impl Iterator for Iter<'_> {
    type Item = GroupId;
    fn next(&mut self) -> Option<GroupId> {
        match self {
            Iter::Sparse(it) => it.next().map(|&g| GroupId(g)),
            Iter::Dense { words, word, bits } => loop {
                if *bits != 0 {
                    let b = bits.trailing_zeros();
                    *bits &= *bits - 1;
                    return Some(GroupId(*word as u32 * 64 + b));
                }
                *word += 1;
                if *word >= words.len() {
                    return None;
                }
                *bits = words[*word];
            },
        }
    }
}

impl<'a> IntoIterator for &'a GroupSet {
    type Item = GroupId;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<GroupId> for GroupSet {
    fn from_iter<I: IntoIterator<Item = GroupId>>(iter: I) -> Self {
        let mut ids: SmallVec<[u32; INLINE]> = iter.into_iter().map(|g| g.0).collect();
        ids.sort_unstable();
        ids.dedup();
        GroupSet::from_sorted_unique(ids)
    }
}

impl From<GroupId> for GroupSet {
    fn from(g: GroupId) -> Self {
        GroupSet::singleton(g)
    }
}

impl PartialEq for GroupSet {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Sparse(a), Repr::Sparse(b)) => a == b,
            (Repr::Dense(a), Repr::Dense(b)) => a == b,
            _ => self.iter().eq(other.iter()),
        }
    }
}
impl Eq for GroupSet {}

impl Hash for GroupSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for g in self.iter() {
            state.write_u32(g.0);
        }
    }
}

impl PartialOrd for GroupSet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GroupSet {
    /// Lexicographic order of the sorted members.
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl fmt::Debug for GroupSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Wire form: the representation itself, validated on the way in.
#[derive(Serialize)]
enum Wire {
    Sparse(SmallVec<[u32; INLINE]>),
    Dense(Vec<u64>),
}

/// The same wire form, decoded into `Vec`s: serde's `Vec` reserves at most a bounded amount
/// before the elements arrive, where smallvec's visitor reserves whatever length the input
/// claims (7 bytes could ask for 16 GiB; found by fuzzing).
#[derive(Deserialize)]
#[serde(rename = "Wire")]
enum WireIn {
    Sparse(Vec<u32>),
    Dense(Vec<u64>),
}

impl Serialize for GroupSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Sparse(v) => Wire::Sparse(v.clone()),
            Repr::Dense(w) => Wire::Dense(w.to_vec()),
        }
        .serialize(s)
    }
}

/// Largest group id accepted from the wire: bounds the bitmap a peer can make us allocate.
pub const MAX_GROUP_ID: u32 = 1 << 20;

impl<'de> Deserialize<'de> for GroupSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match WireIn::deserialize(d)? {
            WireIn::Sparse(v) => {
                if v.windows(2).any(|p| p[0] >= p[1]) {
                    return Err(D::Error::custom("group set not strictly increasing"));
                }
                if v.last().is_some_and(|&g| g > MAX_GROUP_ID) {
                    return Err(D::Error::custom("group id too large"));
                }
                Ok(GroupSet::from_sorted_unique(SmallVec::from_vec(v)))
            }
            WireIn::Dense(w) => {
                if w.len() > (MAX_GROUP_ID / 64 + 1) as usize {
                    return Err(D::Error::custom("group bitmap too large"));
                }
                let ids: SmallVec<[u32; INLINE]> = dense_iter(&w).collect();
                Ok(GroupSet::from_sorted_unique(ids))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn gs(ids: &[u32]) -> GroupSet {
        ids.iter().map(|&g| GroupId(g)).collect()
    }

    #[test]
    fn small_sets_stay_inline_and_dense_sets_use_bitmaps() {
        assert!(matches!(gs(&[3, 1, 2]).0, Repr::Sparse(_)));
        assert!(matches!(GroupSet::all(4096).0, Repr::Dense(_)));
        assert!(matches!(gs(&[10, 100_000]).0, Repr::Sparse(_)));
        assert_eq!(GroupSet::all(4096).len(), 4096);
        assert_eq!(GroupSet::all(4096).last(), Some(GroupId(4095)));
    }

    #[test]
    fn equality_ignores_representation() {
        let mut dense = GroupSet::all(100);
        for g in 5..100 {
            dense.remove(GroupId(g));
        }
        assert_eq!(dense, gs(&[0, 1, 2, 3, 4]));
    }

    #[test]
    fn rejects_unsorted_wire_input() {
        let bytes = bitcode::serialize(&Wire::Sparse(smallvec::smallvec![3, 1])).unwrap();
        assert!(bitcode::deserialize::<GroupSet>(&bytes).is_err());
        let bytes =
            bitcode::serialize(&Wire::Sparse(smallvec::smallvec![MAX_GROUP_ID + 1])).unwrap();
        assert!(bitcode::deserialize::<GroupSet>(&bytes).is_err());
    }

    proptest! {
        /// Every operation agrees with `BTreeSet`, whatever representation is in use.
        #[test]
        fn matches_btreeset(ops in proptest::collection::vec((0u8..3, 0u32..300), 0..400),
                            other in proptest::collection::btree_set(0u32..300, 0..200)) {
            let mut set = GroupSet::new();
            let mut model = BTreeSet::new();
            for (op, g) in ops {
                match op {
                    0 | 1 => prop_assert_eq!(set.insert(GroupId(g)), model.insert(g)),
                    _ => prop_assert_eq!(set.remove(GroupId(g)), model.remove(&g)),
                }
                prop_assert_eq!(set.len(), model.len());
            }
            let members: Vec<u32> = set.iter().map(|g| g.0).collect();
            prop_assert_eq!(&members, &model.iter().copied().collect::<Vec<_>>());
            let o: GroupSet = other.iter().map(|&g| GroupId(g)).collect();
            prop_assert_eq!(set.intersects(&o), !model.is_disjoint(&other));
            prop_assert_eq!(set.is_subset(&o), model.is_subset(&other));
            prop_assert_eq!(o.is_subset(&set), other.is_subset(&model));
            let inter: Vec<u32> = set.intersection(&o).iter().map(|g| g.0).collect();
            prop_assert_eq!(inter, model.intersection(&other).copied().collect::<Vec<_>>());
            let uni: Vec<u32> = set.union(&o).iter().map(|g| g.0).collect();
            prop_assert_eq!(uni, model.union(&other).copied().collect::<Vec<_>>());
            for g in 0..300 {
                prop_assert_eq!(set.contains(GroupId(g)), model.contains(&g));
            }
            prop_assert_eq!(set.first().map(|g| g.0), model.first().copied());
            prop_assert_eq!(set.last().map(|g| g.0), model.last().copied());
            let back: GroupSet = bitcode::deserialize(&bitcode::serialize(&set).unwrap()).unwrap();
            prop_assert_eq!(back, set);
        }
    }
}
