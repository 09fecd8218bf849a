//! An in-memory B+-tree with an arena of nodes.
//!
//! # Layout
//!
//! All nodes live in one `Vec<Node>` (the *arena*) and refer to each other by
//! `u32` ids; ids of released nodes are kept on a free list and reused by the
//! next allocation. Cloning a tree is therefore a plain clone of two vectors,
//! and no node is ever boxed individually.
//!
//! * A **leaf** holds its entries as two parallel, sorted vectors (`keys`,
//!   `vals`) plus the id of the next leaf to the right (`next`, or `NIL` for
//!   the last leaf). Following `next` from the leftmost leaf (`head`) visits
//!   every entry in key order, which is what range scans do.
//! * An **internal** node holds `c` child ids and `c - 1` separator keys. With
//!   separators `s_1 < ... < s_{c-1}`, child `i` holds exactly the keys `k`
//!   with `s_i <= k < s_{i+1}` (`s_0 = -inf`, `s_c = +inf`). A separator is a
//!   copy of some key that was the smallest key of its right subtree at some
//!   point; it may outlive that key (removal never rewrites separators except
//!   while rebalancing), which is harmless because only the bounding property
//!   above is required.
//! * The tree always has a root. The empty tree is a single empty leaf, so
//!   `height()` is 1 for it. All leaves are at depth `height()`.
//!
//! # Occupancy rule
//!
//! Let `m = fanout` (at least [`MIN_FANOUT`] = 4) and `min = ceil(m / 2)`.
//!
//! * every leaf holds at most `m` entries, every internal node has at most `m`
//!   children;
//! * every **non-root** leaf holds at least `min` entries and every non-root
//!   internal node has at least `min` children;
//! * a root leaf may hold 0..=m entries; an internal root has 2..=m children.
//!
//! The rule is closed under the rebalancing operations: splitting an
//! overfull node with `m + 1` entries/children yields `ceil((m+1)/2)` and
//! `floor((m+1)/2) = ceil(m/2)` items, and merging an underfull node
//! (`min - 1`) with a sibling that is at the minimum (`min`) yields
//! `2*min - 1 <= m`. [`BPlusTree::check_invariants`] enforces it.
//!
//! # Insertion
//!
//! Insertion descends to the leaf, inserts, and splits bottom-up: an overfull
//! leaf keeps its lower `ceil((m+1)/2)` entries and moves the rest to a new
//! right sibling (separator = the new sibling's first key); an overfull
//! internal node keeps `ceil((m+1)/2)` children and pushes its middle
//! separator up. A split of the root adds a new root (height + 1). Hence the
//! root splits exactly when the key is absent and every node on the
//! root-to-leaf path is full, which is what
//! [`BPlusTree::insert_would_split_root`] reports.
//!
//! # Removal
//!
//! Removal descends to the leaf and removes the entry. On the way back up,
//! a child left with `min - 1` items is rebalanced, in this order:
//!
//! 1. if its left sibling has more than `min` items, move the left sibling's
//!    last entry/child over (for internal nodes, rotate through the parent
//!    separator);
//! 2. else if its right sibling has more than `min` items, move the right
//!    sibling's first entry/child over;
//! 3. else merge it with its left sibling if it has one, otherwise with its
//!    right sibling (the right node of the pair is always merged into the left
//!    one and released; the leaf chain is patched).
//!
//! A merge removes one child from the parent, which may underflow in turn.
//! When the root is an internal node left with a single child, that child
//! becomes the root (height - 1). [`BPlusTree::remove_would_shrink_root`]
//! mirrors this decision procedure without modifying anything.
//!
//! # Bulk operations
//!
//! [`BPlusTree::from_sorted`] builds the tree level by level in O(n), filling
//! nodes to about 3/4 of the fanout (spreading items evenly so every node
//! respects the occupancy rule). [`BPlusTree::absorb`] grafts the other tree
//! (copied into this arena) onto the right spine at the matching height, then
//! repairs the seam with one merge/redistribution and splits upwards, so it
//! costs O(size of `other` + height). [`BPlusTree::split_off_upper`] drains
//! and rebuilds both halves (O(n)); it is expected to be rare.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::iter::FusedIterator;
use std::mem;
use std::ops::Bound;

/// The smallest accepted fanout.
pub const MIN_FANOUT: usize = 4;

/// Id of "no node" (end of the leaf chain).
const NIL: u32 = u32::MAX;

/// Nodes pre-allocate room for `fanout + 1` items, but never more than this.
const MAX_PREALLOC: usize = 256;

/// Errors returned by [`BPlusTree`] constructors and structural operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// The requested fanout is below [`MIN_FANOUT`].
    FanoutTooSmall {
        /// The rejected fanout.
        fanout: usize,
    },
    /// `from_sorted` got a key that is not strictly greater than its
    /// predecessor.
    UnsortedInput {
        /// Zero-based position of the offending entry in the input.
        index: usize,
    },
    /// `absorb` was given a tree whose smallest key is not greater than this
    /// tree's largest key.
    AbsorbOverlap,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::FanoutTooSmall { fanout } => {
                write!(f, "fanout {fanout} is too small (minimum is {MIN_FANOUT})")
            }
            TreeError::UnsortedInput { index } => write!(
                f,
                "input entry {index} is not strictly greater than its predecessor"
            ),
            TreeError::AbsorbOverlap => write!(
                f,
                "cannot absorb a tree whose keys are not all greater than this tree's keys"
            ),
        }
    }
}

impl std::error::Error for TreeError {}

#[derive(Clone)]
struct Leaf<K, V> {
    keys: Vec<K>,
    vals: Vec<V>,
    next: u32,
}

#[derive(Clone)]
struct Internal<K> {
    keys: Vec<K>,
    children: Vec<u32>,
}

#[derive(Clone)]
enum Node<K, V> {
    Leaf(Leaf<K, V>),
    Internal(Internal<K>),
    Free,
}

/// Index of the child of an internal node whose key range contains `k`.
#[inline]
fn route<K: Ord>(separators: &[K], k: &K) -> usize {
    separators.partition_point(|s| s <= k)
}

/// Number of nodes to cut `n >= 1` items into so that every node gets between
/// `min` and `max` items (when there is more than one node) and about
/// `target` items each. Items are then spread evenly over the nodes.
fn group_count(n: usize, min: usize, target: usize) -> usize {
    n.div_ceil(target).min(n / min).max(1)
}

/// Result of inserting into a subtree.
enum Ins<K, V> {
    Replaced(V),
    Done,
    Split(K, u32),
}

/// A [`BPlusTree`] as plain data (see [`BPlusTree::to_image`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TreeImage<K, V> {
    nodes: Vec<ImageNode<K, V>>,
    free: Vec<u32>,
    root: u32,
    head: u32,
    height: u64,
    len: u64,
    fanout: u64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum ImageNode<K, V> {
    Leaf {
        keys: Vec<K>,
        vals: Vec<V>,
        next: u32,
    },
    Internal {
        keys: Vec<K>,
        children: Vec<u32>,
    },
    Free,
}

/// An in-memory B+-tree map; see the module documentation for the design.
#[derive(Clone)]
pub struct BPlusTree<K, V> {
    nodes: Vec<Node<K, V>>,
    free: Vec<u32>,
    root: u32,
    head: u32,
    height: usize,
    len: usize,
    fanout: usize,
}

impl<K: Ord + Clone, V: Clone> BPlusTree<K, V> {
    /// Creates an empty tree. `fanout` is the maximum number of children of an
    /// internal node and the maximum number of entries of a leaf.
    pub fn new(fanout: usize) -> Result<Self, TreeError> {
        if fanout < MIN_FANOUT {
            return Err(TreeError::FanoutTooSmall { fanout });
        }
        let mut tree = BPlusTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            head: NIL,
            height: 1,
            len: 0,
            fanout,
        };
        tree.reset();
        Ok(tree)
    }

    /// Builds a tree from entries with strictly increasing keys in O(n).
    /// Nodes are filled to about 3/4 of the fanout.
    pub fn from_sorted<I>(fanout: usize, entries: I) -> Result<Self, TreeError>
    where
        I: IntoIterator<Item = (K, V)>,
    {
        let mut tree = Self::new(fanout)?;
        let iter = entries.into_iter();
        let mut all: Vec<(K, V)> = Vec::with_capacity(iter.size_hint().0);
        for (index, (k, v)) in iter.enumerate() {
            if let Some((last, _)) = all.last() {
                if *last >= k {
                    return Err(TreeError::UnsortedInput { index });
                }
            }
            all.push((k, v));
        }
        tree.build(all);
        Ok(tree)
    }

    /// The fanout this tree was created with.
    pub fn fanout(&self) -> usize {
        self.fanout
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the tree holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of levels; a tree whose root is a leaf (including the empty
    /// tree) has height 1.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Removes all entries (keeps the fanout).
    pub fn clear(&mut self) {
        self.reset();
    }

    /// The smallest key.
    pub fn first_key(&self) -> Option<&K> {
        self.leaf(self.head).keys.first()
    }

    /// The largest key.
    pub fn last_key(&self) -> Option<&K> {
        self.leaf(self.last_leaf()).keys.last()
    }

    /// The value stored under `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        let leaf = self.leaf(self.find_leaf(k));
        leaf.keys.binary_search(k).ok().map(|i| &leaf.vals[i])
    }

    /// Mutable access to the value stored under `k`.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let id = self.find_leaf(k);
        let leaf = self.leaf_mut(id);
        match leaf.keys.binary_search(k) {
            Ok(i) => Some(&mut leaf.vals[i]),
            Err(_) => None,
        }
    }

    /// True if `k` is present.
    pub fn contains_key(&self, k: &K) -> bool {
        self.leaf(self.find_leaf(k)).keys.binary_search(k).is_ok()
    }

    /// Inserts `v` under `k`; returns the previous value if `k` was present
    /// (the stored key is kept in that case).
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.insert_rec(self.root, k, v) {
            Ins::Replaced(old) => Some(old),
            Ins::Done => {
                self.len += 1;
                None
            }
            Ins::Split(sep, right) => {
                self.len += 1;
                let cap = self.node_cap();
                let mut keys = Vec::with_capacity(cap);
                keys.push(sep);
                let mut children = Vec::with_capacity(cap);
                children.push(self.root);
                children.push(right);
                self.root = self.alloc(Node::Internal(Internal { keys, children }));
                self.height += 1;
                None
            }
        }
    }

    /// Removes `k`; returns its value if it was present.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let root = self.root;
        let v = self.remove_rec(root, k)?;
        self.len -= 1;
        self.collapse_root();
        Some(v)
    }

    /// True iff `insert(k, _)` would split the root node (and so grow the
    /// height): `k` is absent and every node on its root-to-leaf path is full.
    pub fn insert_would_split_root(&self, k: &K) -> bool {
        let mut id = self.root;
        loop {
            match self.node(id) {
                Node::Leaf(leaf) => {
                    return leaf.keys.len() >= self.fanout && leaf.keys.binary_search(k).is_err();
                }
                Node::Internal(n) => {
                    if n.children.len() < self.fanout {
                        return false;
                    }
                    id = n.children[route(&n.keys, k)];
                }
                Node::Free => unreachable!("free node {id} reachable"),
            }
        }
    }

    /// True iff `remove(k)` would change the root node: the internal root
    /// loses its last separator (height decreases), or the tree becomes empty.
    /// False if `k` is absent.
    pub fn remove_would_shrink_root(&self, k: &K) -> bool {
        let min = self.min_occupancy();
        let mut id = self.root;
        match self.node(id) {
            Node::Leaf(leaf) => return leaf.keys.len() == 1 && leaf.keys[0] == *k,
            Node::Internal(n) => {
                if n.children.len() != 2 {
                    return false;
                }
            }
            Node::Free => unreachable!("free root"),
        }
        // Every node below the root on the path must underflow and then merge
        // (no adjacent sibling can lend), so that the merges reach the root.
        loop {
            let n = self.internal(id);
            let idx = route(&n.keys, k);
            let child = n.children[idx];
            if self.occupancy(child) != min {
                return false;
            }
            if idx > 0 && self.occupancy(n.children[idx - 1]) > min {
                return false;
            }
            if idx + 1 < n.children.len() && self.occupancy(n.children[idx + 1]) > min {
                return false;
            }
            match self.node(child) {
                Node::Leaf(leaf) => return leaf.keys.binary_search(k).is_ok(),
                Node::Internal(_) => id = child,
                Node::Free => unreachable!("free node {child} reachable"),
            }
        }
    }

    /// Entries with keys within `(lo, hi)`, in key order. Bounds that denote
    /// an empty interval (`lo > hi`, or `lo == hi` unless both are included)
    /// yield nothing.
    pub fn range<'a>(&'a self, lo: Bound<&K>, hi: Bound<&K>) -> Range<'a, K, V> {
        let (leaf, idx) = self.lower_position(lo);
        let (end_leaf, end_idx) = self.upper_position(hi);
        let empty = match (lo, hi) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                match a.cmp(b) {
                    Ordering::Less => false,
                    Ordering::Greater => true,
                    Ordering::Equal => {
                        !(matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_)))
                    }
                }
            }
            _ => false,
        };
        let (leaf, idx) = if empty {
            (end_leaf, end_idx)
        } else {
            (leaf, idx)
        };
        Range {
            nodes: &self.nodes,
            leaf,
            idx,
            end_leaf,
            end_idx,
        }
    }

    /// All entries in key order.
    pub fn iter(&self) -> Range<'_, K, V> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// At most `limit` entries with `lo <= key < hi`, in key order.
    pub fn scan(&self, lo: &K, hi: &K, limit: usize) -> Vec<(K, V)> {
        if limit == 0 {
            return Vec::new();
        }
        self.range(Bound::Included(lo), Bound::Excluded(hi))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Moves the upper half of the entries (by count: `ceil(len / 2)` of
    /// them) into a new tree with the same fanout and returns it together with
    /// its smallest key. `None` if the tree has fewer than 2 entries.
    pub fn split_off_upper(&mut self) -> Option<(K, BPlusTree<K, V>)> {
        if self.len < 2 {
            return None;
        }
        let mut lower = self.take_entries();
        let upper = lower.split_off(lower.len() / 2);
        let key = upper[0].0.clone();
        let mut other = BPlusTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            head: NIL,
            height: 1,
            len: 0,
            fanout: self.fanout,
        };
        other.build(upper);
        self.build(lower);
        Some((key, other))
    }

    /// Moves the entries with keys `>= at` into a new tree with the same fanout and returns
    /// it. When no key is `>= at` this tree is left as it is (the new tree is empty);
    /// otherwise both are rebuilt (O(len)).
    pub fn split_off_at(&mut self, at: &K) -> BPlusTree<K, V> {
        let mut other = BPlusTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            head: NIL,
            height: 1,
            len: 0,
            fanout: self.fanout,
        };
        if self.last_key().is_none_or(|k| k < at) {
            other.build(Vec::new());
            return other;
        }
        let mut lower = self.take_entries();
        let cut = lower.partition_point(|(k, _)| k < at);
        let upper = lower.split_off(cut);
        other.build(upper);
        self.build(lower);
        other
    }

    /// True if `absorb(other)` would succeed: either tree is empty or every
    /// key of `other` is greater than every key of `self`.
    pub fn can_absorb(&self, other: &BPlusTree<K, V>) -> bool {
        match (self.last_key(), other.first_key()) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        }
    }

    /// Moves all entries of `other` into `self`. Requires every key of `other`
    /// to be greater than every key of `self`; otherwise returns
    /// [`TreeError::AbsorbOverlap`] and leaves `self` unchanged (`other` is
    /// dropped; use [`BPlusTree::can_absorb`] first to keep it).
    ///
    /// With equal fanouts this costs O(size of `other` + height); with
    /// different fanouts both trees are rebuilt with `self`'s fanout.
    pub fn absorb(&mut self, other: BPlusTree<K, V>) -> Result<(), TreeError> {
        if !self.can_absorb(&other) {
            return Err(TreeError::AbsorbOverlap);
        }
        if other.is_empty() {
            return Ok(());
        }
        if other.fanout != self.fanout {
            let mut all = self.take_entries();
            all.extend(other.into_sorted_vec());
            self.build(all);
            return Ok(());
        }
        if self.is_empty() {
            *self = other;
            return Ok(());
        }
        self.join(other);
        Ok(())
    }

    /// All entries in key order, consuming the tree.
    pub fn into_sorted_vec(mut self) -> Vec<(K, V)> {
        self.take_entries()
    }

    /// Deterministic hash of the entries in key order (FNV-1a, 64 bit, with
    /// integers fed little-endian). Trees with equal contents hash equally
    /// whatever their shape or fanout.
    pub fn content_hash(&self) -> u64
    where
        K: Hash,
        V: Hash,
    {
        let mut h = engine::hash::Fnv64::new();
        h.write_u64(self.len as u64);
        for (k, v) in self.iter() {
            k.hash(&mut h);
            v.hash(&mut h);
        }
        h.finish()
    }

    /// The tree exactly as it is (arena, free list, root, leaf chain, fan-out), for a
    /// checkpoint: a tree rebuilt from it ([`BPlusTree::from_image`]) has the same shape, so
    /// it splits and merges exactly like this one from then on (a bulk-loaded copy of the same
    /// entries would not).
    pub fn to_image(&self) -> TreeImage<K, V> {
        TreeImage {
            nodes: self
                .nodes
                .iter()
                .map(|n| match n {
                    Node::Leaf(l) => ImageNode::Leaf {
                        keys: l.keys.clone(),
                        vals: l.vals.clone(),
                        next: l.next,
                    },
                    Node::Internal(i) => ImageNode::Internal {
                        keys: i.keys.clone(),
                        children: i.children.clone(),
                    },
                    Node::Free => ImageNode::Free,
                })
                .collect(),
            free: self.free.clone(),
            root: self.root,
            head: self.head,
            height: self.height as u64,
            len: self.len as u64,
            fanout: self.fanout as u64,
        }
    }

    /// Rebuilds a tree from [`BPlusTree::to_image`]'s output. The image may come from
    /// another process: it must pass [`BPlusTree::check_invariants`], or it is refused.
    pub fn from_image(image: TreeImage<K, V>) -> Result<Self, String> {
        let fanout = usize::try_from(image.fanout).map_err(|_| "fan-out too large")?;
        if fanout < MIN_FANOUT {
            return Err(format!("fan-out {fanout} below the minimum"));
        }
        // The checker recurses once per level: bound it before it runs (a tree of fan-out 4
        // and height 64 would hold more than 2^63 entries).
        if image.height > 64 {
            return Err(format!("height {} is absurd", image.height));
        }
        let tree = BPlusTree {
            nodes: image
                .nodes
                .into_iter()
                .map(|n| match n {
                    ImageNode::Leaf { keys, vals, next } => Node::Leaf(Leaf { keys, vals, next }),
                    ImageNode::Internal { keys, children } => {
                        Node::Internal(Internal { keys, children })
                    }
                    ImageNode::Free => Node::Free,
                })
                .collect(),
            free: image.free,
            root: image.root,
            head: image.head,
            height: usize::try_from(image.height).map_err(|_| "height too large")?,
            len: usize::try_from(image.len).map_err(|_| "length too large")?,
            fanout,
        };
        tree.check_invariants()?;
        Ok(tree)
    }

    /// Checks every structural invariant (see the module documentation):
    /// ordering within nodes and across leaves, separator bounds, uniform leaf
    /// depth, occupancy, the leaf chain, `len`, and arena/free-list
    /// consistency.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.fanout < MIN_FANOUT {
            return Err(format!("fanout {} below minimum", self.fanout));
        }
        if self.height == 0 {
            return Err("height is 0".to_string());
        }
        let n = self.nodes.len();
        if self.root as usize >= n {
            return Err(format!("root id {} outside the arena ({n})", self.root));
        }
        let mut ctx = CheckCtx {
            seen: vec![false; n],
            leaves: Vec::new(),
            entries: 0,
        };
        self.check_node(self.root, None, None, 1, true, &mut ctx)?;
        if ctx.entries != self.len {
            return Err(format!(
                "len() is {} but the leaves hold {} entries",
                self.len, ctx.entries
            ));
        }
        // Leaf chain: must visit exactly the leaves in tree order, and keys
        // must increase strictly across leaf boundaries.
        if ctx.leaves.first() != Some(&self.head) {
            return Err(format!("head {} is not the leftmost leaf", self.head));
        }
        let mut id = self.head;
        let mut pos = 0usize;
        let mut last: Option<&K> = None;
        while id != NIL {
            if pos >= ctx.leaves.len() || ctx.leaves[pos] != id {
                return Err(format!(
                    "leaf chain diverges from tree order at position {pos}"
                ));
            }
            let leaf = self.leaf(id);
            if let (Some(prev), Some(first)) = (last, leaf.keys.first()) {
                if prev >= first {
                    return Err(format!("keys not increasing across leaf {id}"));
                }
            }
            if let Some(k) = leaf.keys.last() {
                last = Some(k);
            }
            id = leaf.next;
            pos += 1;
        }
        if pos != ctx.leaves.len() {
            return Err(format!(
                "leaf chain visits {pos} leaves, tree has {}",
                ctx.leaves.len()
            ));
        }
        // Free list: every entry is a free node, listed once, not live; every
        // arena slot is either live (reachable) or free.
        let mut listed = vec![false; n];
        for &f in &self.free {
            let fi = f as usize;
            if fi >= n {
                return Err(format!("free id {f} outside the arena"));
            }
            if listed[fi] {
                return Err(format!("free id {f} listed twice"));
            }
            listed[fi] = true;
            if ctx.seen[fi] {
                return Err(format!("node {f} is both live and free"));
            }
            if !matches!(self.nodes[fi], Node::Free) {
                return Err(format!("free-listed node {f} is not marked free"));
            }
        }
        if let Some(i) = (0..n).find(|&i| !ctx.seen[i] && !listed[i]) {
            return Err(format!("node {i} is neither reachable nor free"));
        }
        Ok(())
    }

    // ----- internals -------------------------------------------------------

    fn min_occupancy(&self) -> usize {
        self.fanout.div_ceil(2)
    }

    fn node_cap(&self) -> usize {
        self.fanout.saturating_add(1).min(MAX_PREALLOC)
    }

    fn node(&self, id: u32) -> &Node<K, V> {
        &self.nodes[id as usize]
    }

    fn leaf(&self, id: u32) -> &Leaf<K, V> {
        match &self.nodes[id as usize] {
            Node::Leaf(l) => l,
            _ => unreachable!("node {id} is not a leaf"),
        }
    }

    fn leaf_mut(&mut self, id: u32) -> &mut Leaf<K, V> {
        match &mut self.nodes[id as usize] {
            Node::Leaf(l) => l,
            _ => unreachable!("node {id} is not a leaf"),
        }
    }

    fn internal(&self, id: u32) -> &Internal<K> {
        match &self.nodes[id as usize] {
            Node::Internal(n) => n,
            _ => unreachable!("node {id} is not internal"),
        }
    }

    fn internal_mut(&mut self, id: u32) -> &mut Internal<K> {
        match &mut self.nodes[id as usize] {
            Node::Internal(n) => n,
            _ => unreachable!("node {id} is not internal"),
        }
    }

    /// Entries of a leaf, children of an internal node.
    fn occupancy(&self, id: u32) -> usize {
        match self.node(id) {
            Node::Leaf(l) => l.keys.len(),
            Node::Internal(n) => n.children.len(),
            Node::Free => unreachable!("free node {id} reachable"),
        }
    }

    fn alloc(&mut self, node: Node<K, V>) -> u32 {
        if let Some(id) = self.free.pop() {
            self.nodes[id as usize] = node;
            id
        } else {
            let id = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&id| id != NIL)
                .expect("B+-tree arena exhausted (more than u32::MAX - 1 nodes)");
            self.nodes.push(node);
            id
        }
    }

    fn release(&mut self, id: u32) {
        self.nodes[id as usize] = Node::Free;
        self.free.push(id);
    }

    fn new_leaf(&self) -> Leaf<K, V> {
        let cap = self.node_cap();
        Leaf {
            keys: Vec::with_capacity(cap),
            vals: Vec::with_capacity(cap),
            next: NIL,
        }
    }

    /// Makes this an empty tree (one empty leaf root), dropping all nodes.
    fn reset(&mut self) {
        self.nodes.clear();
        self.free.clear();
        let leaf = self.new_leaf();
        self.root = self.alloc(Node::Leaf(leaf));
        self.head = self.root;
        self.height = 1;
        self.len = 0;
    }

    fn find_leaf(&self, k: &K) -> u32 {
        let mut id = self.root;
        loop {
            match self.node(id) {
                Node::Internal(n) => id = n.children[route(&n.keys, k)],
                Node::Leaf(_) => return id,
                Node::Free => unreachable!("free node {id} reachable"),
            }
        }
    }

    fn last_leaf(&self) -> u32 {
        let mut id = self.root;
        loop {
            match self.node(id) {
                Node::Internal(n) => id = *n.children.last().expect("internal node has children"),
                Node::Leaf(_) => return id,
                Node::Free => unreachable!("free node {id} reachable"),
            }
        }
    }

    /// Canonical position: an index past the end of a leaf becomes the start
    /// of the next leaf (or `(NIL, 0)`). Non-root leaves are never empty, so
    /// each entry (and the end) has exactly one canonical position.
    fn normalize(&self, leaf: u32, idx: usize) -> (u32, usize) {
        let l = self.leaf(leaf);
        if idx >= l.keys.len() {
            (l.next, 0)
        } else {
            (leaf, idx)
        }
    }

    /// Position of the first entry that satisfies the lower bound.
    fn lower_position(&self, lo: Bound<&K>) -> (u32, usize) {
        match lo {
            Bound::Unbounded => self.normalize(self.head, 0),
            Bound::Included(k) => {
                let id = self.find_leaf(k);
                let idx = self.leaf(id).keys.partition_point(|x| x < k);
                self.normalize(id, idx)
            }
            Bound::Excluded(k) => {
                let id = self.find_leaf(k);
                let idx = self.leaf(id).keys.partition_point(|x| x <= k);
                self.normalize(id, idx)
            }
        }
    }

    /// Position of the first entry that is beyond the upper bound.
    fn upper_position(&self, hi: Bound<&K>) -> (u32, usize) {
        match hi {
            Bound::Unbounded => (NIL, 0),
            Bound::Included(k) => {
                let id = self.find_leaf(k);
                let idx = self.leaf(id).keys.partition_point(|x| x <= k);
                self.normalize(id, idx)
            }
            Bound::Excluded(k) => {
                let id = self.find_leaf(k);
                let idx = self.leaf(id).keys.partition_point(|x| x < k);
                self.normalize(id, idx)
            }
        }
    }

    fn insert_rec(&mut self, id: u32, k: K, v: V) -> Ins<K, V> {
        let fanout = self.fanout;
        match &mut self.nodes[id as usize] {
            Node::Leaf(leaf) => match leaf.keys.binary_search(&k) {
                Ok(i) => Ins::Replaced(mem::replace(&mut leaf.vals[i], v)),
                Err(i) => {
                    leaf.keys.insert(i, k);
                    leaf.vals.insert(i, v);
                    if leaf.keys.len() <= fanout {
                        Ins::Done
                    } else {
                        let (sep, right) = self.split_leaf(id);
                        Ins::Split(sep, right)
                    }
                }
            },
            Node::Internal(n) => {
                let idx = route(&n.keys, &k);
                let child = n.children[idx];
                match self.insert_rec(child, k, v) {
                    Ins::Split(sep, right) => {
                        let n = self.internal_mut(id);
                        n.keys.insert(idx, sep);
                        n.children.insert(idx + 1, right);
                        if n.children.len() <= fanout {
                            Ins::Done
                        } else {
                            let (sep, right) = self.split_internal(id);
                            Ins::Split(sep, right)
                        }
                    }
                    other => other,
                }
            }
            Node::Free => unreachable!("free node {id} reachable"),
        }
    }

    /// Splits an overfull leaf; the left part keeps `ceil(len / 2)` entries.
    /// Returns the separator (first key of the new right leaf) and its id.
    fn split_leaf(&mut self, id: u32) -> (K, u32) {
        let cap = self.node_cap();
        let leaf = self.leaf_mut(id);
        let at = leaf.keys.len().div_ceil(2);
        let mut keys = Vec::with_capacity(cap);
        keys.extend(leaf.keys.drain(at..));
        let mut vals = Vec::with_capacity(cap);
        vals.extend(leaf.vals.drain(at..));
        let next = leaf.next;
        let sep = keys[0].clone();
        let right = self.alloc(Node::Leaf(Leaf { keys, vals, next }));
        self.leaf_mut(id).next = right;
        (sep, right)
    }

    /// Splits an overfull internal node; the left part keeps
    /// `ceil(children / 2)` children and the middle separator moves up.
    fn split_internal(&mut self, id: u32) -> (K, u32) {
        let cap = self.node_cap();
        let n = self.internal_mut(id);
        let at = n.children.len().div_ceil(2);
        let mut children = Vec::with_capacity(cap);
        children.extend(n.children.drain(at..));
        let mut keys = Vec::with_capacity(cap);
        keys.extend(n.keys.drain(at..));
        let sep = n.keys.pop().expect("overfull internal node has separators");
        let right = self.alloc(Node::Internal(Internal { keys, children }));
        (sep, right)
    }

    fn remove_rec(&mut self, id: u32, k: &K) -> Option<V> {
        match &mut self.nodes[id as usize] {
            Node::Leaf(leaf) => {
                let i = leaf.keys.binary_search(k).ok()?;
                leaf.keys.remove(i);
                Some(leaf.vals.remove(i))
            }
            Node::Internal(n) => {
                let idx = route(&n.keys, k);
                let child = n.children[idx];
                let v = self.remove_rec(child, k)?;
                if self.occupancy(child) < self.min_occupancy() {
                    self.rebalance(id, idx);
                }
                Some(v)
            }
            Node::Free => unreachable!("free node {id} reachable"),
        }
    }

    /// Repairs the underfull child `idx` of `parent` (see module docs).
    fn rebalance(&mut self, parent: u32, idx: usize) {
        let min = self.min_occupancy();
        let p = self.internal(parent);
        let left = if idx > 0 {
            Some(p.children[idx - 1])
        } else {
            None
        };
        let right = p.children.get(idx + 1).copied();
        if left.is_some_and(|l| self.occupancy(l) > min) {
            self.move_left_to_right(parent, idx - 1);
        } else if right.is_some_and(|r| self.occupancy(r) > min) {
            self.move_right_to_left(parent, idx);
        } else if left.is_some() {
            self.merge_children(parent, idx - 1);
        } else {
            self.merge_children(parent, idx);
        }
    }

    /// If the root is an internal node with a single child, that child
    /// becomes the root.
    fn collapse_root(&mut self) {
        let root = self.root;
        if let Node::Internal(n) = self.node(root) {
            if n.children.len() == 1 {
                let child = n.children[0];
                self.release(root);
                self.root = child;
                self.height -= 1;
            }
        }
    }

    /// Moves the last entry/child of child `i` of `parent` to the front of
    /// child `i + 1`, fixing the separator between them.
    fn move_left_to_right(&mut self, parent: u32, i: usize) {
        let (lid, rid) = {
            let p = self.internal(parent);
            (p.children[i], p.children[i + 1])
        };
        if matches!(self.node(lid), Node::Leaf(_)) {
            let (k, v) = {
                let l = self.leaf_mut(lid);
                (
                    l.keys.pop().expect("lender is not empty"),
                    l.vals.pop().expect("lender is not empty"),
                )
            };
            self.internal_mut(parent).keys[i] = k.clone();
            let r = self.leaf_mut(rid);
            r.keys.insert(0, k);
            r.vals.insert(0, v);
        } else {
            let (child, up) = {
                let l = self.internal_mut(lid);
                (
                    l.children.pop().expect("lender is not empty"),
                    l.keys.pop().expect("lender has separators"),
                )
            };
            let down = mem::replace(&mut self.internal_mut(parent).keys[i], up);
            let r = self.internal_mut(rid);
            r.keys.insert(0, down);
            r.children.insert(0, child);
        }
    }

    /// Moves the first entry/child of child `i + 1` of `parent` to the end of
    /// child `i`, fixing the separator between them.
    fn move_right_to_left(&mut self, parent: u32, i: usize) {
        let (lid, rid) = {
            let p = self.internal(parent);
            (p.children[i], p.children[i + 1])
        };
        if matches!(self.node(lid), Node::Leaf(_)) {
            let (k, v, sep) = {
                let r = self.leaf_mut(rid);
                let k = r.keys.remove(0);
                let v = r.vals.remove(0);
                (k, v, r.keys[0].clone())
            };
            self.internal_mut(parent).keys[i] = sep;
            let l = self.leaf_mut(lid);
            l.keys.push(k);
            l.vals.push(v);
        } else {
            let (child, up) = {
                let r = self.internal_mut(rid);
                (r.children.remove(0), r.keys.remove(0))
            };
            let down = mem::replace(&mut self.internal_mut(parent).keys[i], up);
            let l = self.internal_mut(lid);
            l.keys.push(down);
            l.children.push(child);
        }
    }

    /// Merges child `i + 1` of `parent` into child `i` and releases it.
    fn merge_children(&mut self, parent: u32, i: usize) {
        let (lid, rid, sep) = {
            let p = self.internal_mut(parent);
            let sep = p.keys.remove(i);
            let rid = p.children.remove(i + 1);
            (p.children[i], rid, sep)
        };
        let right = mem::replace(&mut self.nodes[rid as usize], Node::Free);
        self.free.push(rid);
        match right {
            Node::Leaf(r) => {
                let l = self.leaf_mut(lid);
                l.keys.extend(r.keys);
                l.vals.extend(r.vals);
                l.next = r.next;
            }
            Node::Internal(r) => {
                let l = self.internal_mut(lid);
                l.keys.push(sep);
                l.keys.extend(r.keys);
                l.children.extend(r.children);
            }
            Node::Free => unreachable!("free node {rid} reachable"),
        }
    }

    /// Makes children `i` and `i + 1` of `parent` both satisfy the non-root
    /// minimum, given that at least one of them does or that together they
    /// fit in one node: merges them if they fit in one node, otherwise moves
    /// items towards the underfull one.
    fn fix_pair(&mut self, parent: u32, i: usize) {
        let min = self.min_occupancy();
        let (lid, rid) = {
            let p = self.internal(parent);
            (p.children[i], p.children[i + 1])
        };
        let (a, b) = (self.occupancy(lid), self.occupancy(rid));
        if a >= min && b >= min {
            return;
        }
        if a + b <= self.fanout {
            self.merge_children(parent, i);
            return;
        }
        // a + b >= fanout + 1 >= 2 * min, so the lender stays at or above min.
        while self.occupancy(lid) < min {
            self.move_right_to_left(parent, i);
        }
        while self.occupancy(rid) < min {
            self.move_left_to_right(parent, i);
        }
    }

    /// Moves all nodes of `other` into this arena (remapping ids); returns the
    /// new ids of its root and head leaf.
    fn import(&mut self, other: BPlusTree<K, V>) -> (u32, u32) {
        let mut map = vec![NIL; other.nodes.len()];
        for (i, node) in other.nodes.iter().enumerate() {
            if !matches!(node, Node::Free) {
                map[i] = self.alloc(Node::Free);
            }
        }
        let (root, head) = (map[other.root as usize], map[other.head as usize]);
        for (i, node) in other.nodes.into_iter().enumerate() {
            let node = match node {
                Node::Free => continue,
                Node::Leaf(mut l) => {
                    if l.next != NIL {
                        l.next = map[l.next as usize];
                    }
                    Node::Leaf(l)
                }
                Node::Internal(mut n) => {
                    for c in &mut n.children {
                        *c = map[*c as usize];
                    }
                    Node::Internal(n)
                }
            };
            self.nodes[map[i] as usize] = node;
        }
        (root, head)
    }

    /// Concatenates `other` (same fanout, both non-empty, all keys of `other`
    /// greater) onto this tree.
    fn join(&mut self, other: BPlusTree<K, V>) {
        let sep = other.first_key().expect("other is non-empty").clone();
        let (r_height, r_len) = (other.height, other.len);
        let tail = self.last_leaf();
        let (r_root, r_head) = self.import(other);
        self.leaf_mut(tail).next = r_head;
        self.len += r_len;
        let cap = self.node_cap();
        let l_height = self.height;
        match l_height.cmp(&r_height) {
            Ordering::Equal => {
                let mut keys = Vec::with_capacity(cap);
                keys.push(sep);
                let mut children = Vec::with_capacity(cap);
                children.push(self.root);
                children.push(r_root);
                let root = self.alloc(Node::Internal(Internal { keys, children }));
                self.root = root;
                self.height += 1;
                self.fix_pair(root, 0);
                self.collapse_root();
            }
            Ordering::Greater => {
                // Walk down the right spine to the node whose children have
                // the height of the other tree, and append its root there.
                let mut path = Vec::new();
                let mut id = self.root;
                for _ in 0..(l_height - r_height - 1) {
                    let n = self.internal(id);
                    let idx = n.children.len() - 1;
                    path.push((id, idx));
                    id = n.children[idx];
                }
                let n = self.internal_mut(id);
                n.keys.push(sep);
                n.children.push(r_root);
                let i = n.children.len() - 2;
                self.fix_pair(id, i);
                self.split_upwards(path, id);
            }
            Ordering::Less => {
                // Symmetric: prepend this tree's root on the other tree's left
                // spine.
                let l_root = self.root;
                let mut path = Vec::new();
                let mut id = r_root;
                for _ in 0..(r_height - l_height - 1) {
                    path.push((id, 0));
                    id = self.internal(id).children[0];
                }
                let n = self.internal_mut(id);
                n.keys.insert(0, sep);
                n.children.insert(0, l_root);
                self.root = r_root;
                self.height = r_height;
                self.fix_pair(id, 0);
                self.split_upwards(path, id);
            }
        }
    }

    /// Splits `id` if it is overfull and propagates the split through `path`
    /// (ancestors with the index of the child taken), growing a new root if
    /// the split reaches the top.
    fn split_upwards(&mut self, mut path: Vec<(u32, usize)>, mut id: u32) {
        while self.occupancy(id) > self.fanout {
            let (sep, right) = self.split_internal(id);
            match path.pop() {
                Some((parent, idx)) => {
                    let p = self.internal_mut(parent);
                    p.keys.insert(idx, sep);
                    p.children.insert(idx + 1, right);
                    id = parent;
                }
                None => {
                    let cap = self.node_cap();
                    let mut keys = Vec::with_capacity(cap);
                    keys.push(sep);
                    let mut children = Vec::with_capacity(cap);
                    children.push(id);
                    children.push(right);
                    self.root = self.alloc(Node::Internal(Internal { keys, children }));
                    self.height += 1;
                    return;
                }
            }
        }
    }

    /// Moves all entries out (in key order) and leaves an empty tree.
    fn take_entries(&mut self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.len);
        let mut id = self.head;
        while id != NIL {
            let leaf = self.leaf_mut(id);
            let keys = mem::take(&mut leaf.keys);
            let vals = mem::take(&mut leaf.vals);
            id = leaf.next;
            out.extend(keys.into_iter().zip(vals));
        }
        self.reset();
        out
    }

    /// Replaces the contents with `entries` (strictly increasing keys),
    /// building bottom-up with nodes filled to about 3/4.
    fn build(&mut self, entries: Vec<(K, V)>) {
        self.reset();
        let n = entries.len();
        if n == 0 {
            return;
        }
        self.nodes.clear();
        self.free.clear();
        let min = self.min_occupancy();
        let target = (self.fanout * 3).div_ceil(4).max(min);
        let cap = self.node_cap();

        // Leaves.
        let groups = group_count(n, min, target);
        let (base, extra) = (n / groups, n % groups);
        let mut level: Vec<(u32, K)> = Vec::with_capacity(groups);
        let mut it = entries.into_iter();
        let mut prev = NIL;
        for g in 0..groups {
            let size = base + usize::from(g < extra);
            let mut keys = Vec::with_capacity(cap.max(size));
            let mut vals = Vec::with_capacity(cap.max(size));
            for (k, v) in it.by_ref().take(size) {
                keys.push(k);
                vals.push(v);
            }
            let first = keys[0].clone();
            let id = self.alloc(Node::Leaf(Leaf {
                keys,
                vals,
                next: NIL,
            }));
            if prev == NIL {
                self.head = id;
            } else {
                self.leaf_mut(prev).next = id;
            }
            prev = id;
            level.push((id, first));
        }
        self.height = 1;
        self.len = n;

        // Internal levels, until a single node remains.
        while level.len() > 1 {
            let n = level.len();
            let groups = group_count(n, min, target);
            let (base, extra) = (n / groups, n % groups);
            let mut next_level = Vec::with_capacity(groups);
            let mut it = level.into_iter();
            for g in 0..groups {
                let size = base + usize::from(g < extra);
                let mut keys = Vec::with_capacity(cap.max(size));
                let mut children = Vec::with_capacity(cap.max(size));
                let mut first = None;
                for (id, key) in it.by_ref().take(size) {
                    if first.is_none() {
                        first = Some(key);
                    } else {
                        keys.push(key);
                    }
                    children.push(id);
                }
                let id = self.alloc(Node::Internal(Internal { keys, children }));
                next_level.push((id, first.expect("group is not empty")));
            }
            level = next_level;
            self.height += 1;
        }
        self.root = level[0].0;
    }

    fn check_node(
        &self,
        id: u32,
        lo: Option<&K>,
        hi: Option<&K>,
        depth: usize,
        is_root: bool,
        ctx: &mut CheckCtx,
    ) -> Result<(), String> {
        let idu = id as usize;
        if idu >= self.nodes.len() {
            return Err(format!("child id {id} outside the arena"));
        }
        if ctx.seen[idu] {
            return Err(format!("node {id} reachable twice"));
        }
        ctx.seen[idu] = true;
        let min = self.min_occupancy();
        let in_bounds = |k: &K| lo.is_none_or(|lo| lo <= k) && hi.is_none_or(|hi| k < hi);
        match &self.nodes[idu] {
            Node::Free => Err(format!("free node {id} is reachable")),
            Node::Leaf(leaf) => {
                if depth != self.height {
                    return Err(format!(
                        "leaf {id} at depth {depth}, height is {}",
                        self.height
                    ));
                }
                let len = leaf.keys.len();
                if leaf.vals.len() != len {
                    return Err(format!(
                        "leaf {id} has {len} keys but {} values",
                        leaf.vals.len()
                    ));
                }
                if len > self.fanout {
                    return Err(format!(
                        "leaf {id} has {len} entries > fanout {}",
                        self.fanout
                    ));
                }
                if !is_root && len < min {
                    return Err(format!("non-root leaf {id} has {len} entries < {min}"));
                }
                if leaf.keys.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("keys of leaf {id} not strictly increasing"));
                }
                if !leaf.keys.iter().all(in_bounds) {
                    return Err(format!("leaf {id} has a key outside its separator bounds"));
                }
                ctx.entries += len;
                ctx.leaves.push(id);
                Ok(())
            }
            Node::Internal(n) => {
                if depth >= self.height {
                    return Err(format!(
                        "internal node {id} at depth {depth}, height is {}",
                        self.height
                    ));
                }
                let c = n.children.len();
                if n.keys.len() + 1 != c {
                    return Err(format!(
                        "internal node {id} has {c} children and {} separators",
                        n.keys.len()
                    ));
                }
                if c > self.fanout {
                    return Err(format!("internal node {id} has {c} children > fanout"));
                }
                if is_root && c < 2 {
                    return Err(format!("internal root {id} has {c} children"));
                }
                if !is_root && c < min {
                    return Err(format!("internal node {id} has {c} children < {min}"));
                }
                if n.keys.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("separators of node {id} not strictly increasing"));
                }
                let strictly_inside =
                    |k: &K| lo.is_none_or(|lo| lo < k) && hi.is_none_or(|hi| k < hi);
                if !n.keys.iter().all(strictly_inside) {
                    return Err(format!("node {id} has a separator outside its bounds"));
                }
                for (i, &child) in n.children.iter().enumerate() {
                    let clo = if i == 0 { lo } else { Some(&n.keys[i - 1]) };
                    let chi = if i + 1 == c { hi } else { Some(&n.keys[i]) };
                    self.check_node(child, clo, chi, depth + 1, false, ctx)?;
                }
                Ok(())
            }
        }
    }
}

struct CheckCtx {
    seen: Vec<bool>,
    leaves: Vec<u32>,
    entries: usize,
}

impl<K, V> fmt::Debug for BPlusTree<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BPlusTree")
            .field("len", &self.len)
            .field("height", &self.height)
            .field("fanout", &self.fanout)
            .field("nodes", &(self.nodes.len() - self.free.len()))
            .finish()
    }
}

/// Equal iff both hold the same entries (shape and fanout do not matter).
impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for BPlusTree<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<K: Ord + Clone, V: Clone + Eq> Eq for BPlusTree<K, V> {}

impl<'a, K: Ord + Clone, V: Clone> IntoIterator for &'a BPlusTree<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Range<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a key range of a [`BPlusTree`], walking the leaf chain from
/// a precomputed start position to a precomputed end position.
pub struct Range<'a, K, V> {
    nodes: &'a [Node<K, V>],
    leaf: u32,
    idx: usize,
    end_leaf: u32,
    end_idx: usize,
}

impl<'a, K, V> Iterator for Range<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.leaf == self.end_leaf && self.idx == self.end_idx {
            return None;
        }
        let nodes: &'a [Node<K, V>] = self.nodes;
        let leaf = match &nodes[self.leaf as usize] {
            Node::Leaf(l) => l,
            _ => unreachable!("range cursor on a non-leaf"),
        };
        let item = (&leaf.keys[self.idx], &leaf.vals[self.idx]);
        self.idx += 1;
        if self.idx == leaf.keys.len() {
            self.leaf = leaf.next;
            self.idx = 0;
        }
        Some(item)
    }
}

impl<K, V> FusedIterator for Range<'_, K, V> {}

impl<K, V> Clone for Range<'_, K, V> {
    fn clone(&self) -> Self {
        Range {
            nodes: self.nodes,
            leaf: self.leaf,
            idx: self.idx,
            end_leaf: self.end_leaf,
            end_idx: self.end_idx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::TestCaseError;
    use std::collections::{BTreeMap, BTreeSet};

    /// Small deterministic PRNG (xorshift64*) for the non-proptest tests.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }

        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
        /// Removes the model's n-th key, so removals hit in large domains.
        RemoveNth(Index),
        Get(u32),
        GetMut(u32, u32),
        Range(Bound<u32>, Bound<u32>),
        Scan(u32, u32, usize),
        Len,
    }

    fn bound_strategy(domain: u32) -> impl Strategy<Value = Bound<u32>> {
        prop_oneof![
            Just(Bound::Unbounded),
            (0..domain).prop_map(Bound::Included),
            (0..domain).prop_map(Bound::Excluded),
        ]
    }

    fn op_strategy(domain: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..domain, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0..domain).prop_map(Op::Remove),
            2 => any::<Index>().prop_map(Op::RemoveNth),
            1 => (0..domain).prop_map(Op::Get),
            1 => (0..domain, any::<u32>()).prop_map(|(k, v)| Op::GetMut(k, v)),
            1 => (bound_strategy(domain), bound_strategy(domain))
                .prop_map(|(lo, hi)| Op::Range(lo, hi)),
            1 => (0..domain, 0..domain, 0..40usize).prop_map(|(lo, hi, n)| Op::Scan(lo, hi, n)),
            1 => Just(Op::Len),
        ]
    }

    fn in_bounds(k: u32, lo: Bound<u32>, hi: Bound<u32>) -> bool {
        let above = match lo {
            Bound::Unbounded => true,
            Bound::Included(l) => k >= l,
            Bound::Excluded(l) => k > l,
        };
        let below = match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => k <= h,
            Bound::Excluded(h) => k < h,
        };
        above && below
    }

    fn check(tree: &BPlusTree<u32, u32>, what: &dyn fmt::Debug) -> Result<(), TestCaseError> {
        tree.check_invariants()
            .map_err(|e| TestCaseError::fail(format!("invariant broken after {what:?}: {e}")))
    }

    fn run_model(fanout: usize, ops: &[Op]) -> Result<(), TestCaseError> {
        let mut tree = BPlusTree::new(fanout).unwrap();
        let mut model: BTreeMap<u32, u32> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(tree.insert(*k, *v), model.insert(*k, *v)),
                Op::Remove(k) => prop_assert_eq!(tree.remove(k), model.remove(k)),
                Op::RemoveNth(ix) => {
                    if !model.is_empty() {
                        let k = *model.keys().nth(ix.index(model.len())).unwrap();
                        prop_assert_eq!(tree.remove(&k), model.remove(&k));
                        prop_assert!(!tree.contains_key(&k));
                    }
                }
                Op::Get(k) => {
                    prop_assert_eq!(tree.get(k), model.get(k));
                    prop_assert_eq!(tree.contains_key(k), model.contains_key(k));
                }
                Op::GetMut(k, v) => match (tree.get_mut(k), model.get_mut(k)) {
                    (Some(a), Some(b)) => {
                        *a = *v;
                        *b = *v;
                    }
                    (None, None) => {}
                    (a, b) => prop_assert!(false, "get_mut({}) gave {:?}, model {:?}", k, a, b),
                },
                Op::Range(lo, hi) => {
                    let got: Vec<(u32, u32)> = tree
                        .range(lo.as_ref(), hi.as_ref())
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    let want: Vec<(u32, u32)> = model
                        .iter()
                        .filter(|(k, _)| in_bounds(**k, *lo, *hi))
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Scan(lo, hi, limit) => {
                    let got = tree.scan(lo, hi, *limit);
                    let want: Vec<(u32, u32)> = model
                        .iter()
                        .filter(|(k, _)| *lo <= **k && **k < *hi)
                        .take(*limit)
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Len => {
                    prop_assert_eq!(tree.len(), model.len());
                    prop_assert_eq!(tree.is_empty(), model.is_empty());
                    prop_assert_eq!(tree.first_key(), model.keys().next());
                    prop_assert_eq!(tree.last_key(), model.keys().next_back());
                }
            }
            check(&tree, op)?;
            prop_assert_eq!(tree.len(), model.len());
        }
        let got: Vec<(u32, u32)> = tree.iter().map(|(k, v)| (*k, *v)).collect();
        let want: Vec<(u32, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(&got, &want);
        let rebuilt = BPlusTree::from_sorted(fanout, want).unwrap();
        prop_assert_eq!(tree.content_hash(), rebuilt.content_hash());
        prop_assert!(tree == rebuilt);
        Ok(())
    }

    proptest! {
        #[test]
        fn model_fanout_4_small_keys(ops in prop::collection::vec(op_strategy(200), 0..500)) {
            run_model(4, &ops)?;
        }

        #[test]
        fn model_fanout_5_small_keys(ops in prop::collection::vec(op_strategy(200), 0..500)) {
            run_model(5, &ops)?;
        }

        #[test]
        fn model_fanout_8_small_keys(ops in prop::collection::vec(op_strategy(200), 0..500)) {
            run_model(8, &ops)?;
        }

        #[test]
        fn model_fanout_64_small_keys(ops in prop::collection::vec(op_strategy(200), 0..500)) {
            run_model(64, &ops)?;
        }

        #[test]
        fn model_fanout_4_large_keys(ops in prop::collection::vec(op_strategy(u32::MAX), 0..500)) {
            run_model(4, &ops)?;
        }

        #[test]
        fn model_fanout_5_large_keys(ops in prop::collection::vec(op_strategy(u32::MAX), 0..500)) {
            run_model(5, &ops)?;
        }

        #[test]
        fn model_fanout_8_large_keys(ops in prop::collection::vec(op_strategy(u32::MAX), 0..500)) {
            run_model(8, &ops)?;
        }
    }

    proptest! {
        // Long sequences so that fanout 64 reaches height 3.
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn model_fanout_64_large_keys(ops in prop::collection::vec(op_strategy(u32::MAX), 0..6000)) {
            run_model(64, &ops)?;
        }
    }

    // ----- predicates ------------------------------------------------------

    #[derive(Debug, Clone)]
    enum PredOp {
        Insert(u32),
        Remove(u32),
    }

    fn pred_op_strategy(domain: u32) -> impl Strategy<Value = PredOp> {
        prop_oneof![
            (0..domain).prop_map(PredOp::Insert),
            (0..domain).prop_map(PredOp::Remove),
        ]
    }

    /// Applies one operation, checking the matching predicate against what
    /// the operation really does to the root. Returns whether the root changed.
    fn apply_checking_predicates(
        tree: &mut BPlusTree<u32, u32>,
        op: &PredOp,
    ) -> Result<bool, String> {
        let (root, height, len) = (tree.root, tree.height(), tree.len());
        match op {
            PredOp::Insert(k) => {
                let predicted = tree.insert_would_split_root(k);
                let before = tree.content_hash();
                if before != tree.content_hash() {
                    return Err("predicate modified the tree".into());
                }
                tree.insert(*k, k.wrapping_mul(7));
                let split = tree.height() == height + 1;
                if split != (tree.root != root) {
                    return Err(format!("root identity/height disagree after insert {k}"));
                }
                if predicted != split {
                    return Err(format!(
                        "insert_would_split_root({k}) = {predicted} but split = {split} (len {len}, height {height})"
                    ));
                }
                Ok(split)
            }
            PredOp::Remove(k) => {
                let predicted = tree.remove_would_shrink_root(k);
                let removed = tree.remove(k).is_some();
                let shrank = tree.height() + 1 == height;
                if shrank != (tree.root != root) {
                    return Err(format!("root identity/height disagree after remove {k}"));
                }
                let changed = shrank || (removed && tree.is_empty());
                if predicted != changed {
                    return Err(format!(
                        "remove_would_shrink_root({k}) = {predicted} but changed = {changed} (len {len}, height {height})"
                    ));
                }
                Ok(changed)
            }
        }
    }

    fn run_predicates(fanout: usize, ops: &[PredOp]) -> Result<(), TestCaseError> {
        let mut tree = BPlusTree::new(fanout).unwrap();
        for op in ops {
            apply_checking_predicates(&mut tree, op).map_err(TestCaseError::fail)?;
            check(&tree, op)?;
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn predicates_match_root_changes_fanout_4(ops in prop::collection::vec(pred_op_strategy(60), 0..400)) {
            run_predicates(4, &ops)?;
        }

        #[test]
        fn predicates_match_root_changes_fanout_5(ops in prop::collection::vec(pred_op_strategy(80), 0..400)) {
            run_predicates(5, &ops)?;
        }

        #[test]
        fn predicates_match_root_changes_fanout_8(ops in prop::collection::vec(pred_op_strategy(150), 0..400)) {
            run_predicates(8, &ops)?;
        }
    }

    #[test]
    fn predicates_match_root_changes_on_long_random_runs_and_both_outcomes_occur() {
        for (fanout, domain) in [
            (4usize, 40u64),
            (4, 300),
            (5, 100),
            (6, 200),
            (8, 500),
            (16, 800),
            (64, 600),
        ] {
            let mut rng = Rng::new(fanout as u64 * 1000 + domain);
            let mut tree = BPlusTree::new(fanout).unwrap();
            let (mut splits, mut shrinks) = (0usize, 0usize);
            for step in 0..60_000 {
                // Phases biased towards growth, then shrinkage, so the height
                // moves up and down repeatedly.
                let grow = (step / 5_000) % 2 == 0;
                let k = rng.below(domain) as u32;
                let insert = rng.below(100) < if grow { 75 } else { 5 };
                let op = if insert {
                    PredOp::Insert(k)
                } else {
                    PredOp::Remove(k)
                };
                let changed = apply_checking_predicates(&mut tree, &op)
                    .unwrap_or_else(|e| panic!("fanout {fanout} step {step}: {e}"));
                if changed {
                    if insert {
                        splits += 1;
                    } else {
                        shrinks += 1;
                    }
                }
                if step % 997 == 0 {
                    tree.check_invariants().unwrap();
                }
            }
            tree.check_invariants().unwrap();
            assert!(splits > 0, "fanout {fanout}: no root split observed");
            assert!(shrinks > 0, "fanout {fanout}: no root shrink observed");
        }
    }

    #[test]
    fn predicates_on_empty_and_single_leaf_trees() {
        let mut tree: BPlusTree<u32, u32> = BPlusTree::new(4).unwrap();
        assert!(!tree.remove_would_shrink_root(&1));
        assert!(!tree.insert_would_split_root(&1));
        tree.insert(1, 1);
        assert!(tree.remove_would_shrink_root(&1));
        assert!(!tree.remove_would_shrink_root(&2));
        for k in 2..=4 {
            tree.insert(k, k);
        }
        // Root leaf is full: a new key splits it, an existing one does not.
        assert!(tree.insert_would_split_root(&5));
        assert!(!tree.insert_would_split_root(&3));
        tree.insert(5, 5);
        assert_eq!(tree.height(), 2);
    }

    // ----- split_off_upper / absorb ----------------------------------------

    /// Builds a tree by inserting `keys` in a scrambled order and removing a
    /// few, so shapes are not those of the bulk builder.
    fn messy_tree(fanout: usize, keys: &BTreeSet<u32>, seed: u64) -> BPlusTree<u32, u32> {
        let mut order: Vec<u32> = keys.iter().copied().collect();
        let mut rng = Rng::new(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut tree = BPlusTree::new(fanout).unwrap();
        for &k in &order {
            tree.insert(k, k ^ 0x5555);
        }
        // Insert and remove some extra keys (not in `keys`) to leave stale
        // separators behind.
        for &k in order.iter().take(order.len() / 3) {
            let extra = k.wrapping_add(1);
            if !keys.contains(&extra) && tree.insert(extra, 0).is_none() {
                tree.remove(&extra);
            }
        }
        tree.check_invariants().unwrap();
        tree
    }

    fn entries(tree: &BPlusTree<u32, u32>) -> Vec<(u32, u32)> {
        tree.iter().map(|(k, v)| (*k, *v)).collect()
    }

    proptest! {
        #[test]
        fn split_off_upper_then_absorb_round_trips(
            fanout in prop::sample::select(vec![4usize, 5, 8, 64]),
            keys in prop::collection::btree_set(any::<u32>(), 0..700),
            seed in any::<u64>(),
        ) {
            let mut tree = messy_tree(fanout, &keys, seed);
            let original = entries(&tree);
            let hash = tree.content_hash();
            match tree.split_off_upper() {
                None => prop_assert!(original.len() < 2),
                Some((key, upper)) => {
                    check(&tree, &"split_off_upper (lower)")?;
                    check(&upper, &"split_off_upper (upper)")?;
                    prop_assert_eq!(upper.fanout(), fanout);
                    prop_assert_eq!(upper.first_key(), Some(&key));
                    prop_assert!(tree.last_key().unwrap() < &key);
                    prop_assert_eq!(tree.len() + upper.len(), original.len());
                    prop_assert_eq!(tree.len(), original.len() / 2);
                    let mut both = entries(&tree);
                    both.extend(entries(&upper));
                    prop_assert_eq!(&both, &original);
                    tree.absorb(upper).unwrap();
                    check(&tree, &"absorb")?;
                    prop_assert_eq!(entries(&tree), original);
                    prop_assert_eq!(tree.content_hash(), hash);
                }
            }
        }

        #[test]
        fn split_off_at_divides_at_the_key(
            fanout in prop::sample::select(vec![4usize, 5, 8, 64]),
            keys in prop::collection::btree_set(0u32..5000, 0..700),
            at in 0u32..5200,
            seed in any::<u64>(),
        ) {
            let mut tree = messy_tree(fanout, &keys, seed);
            let original = entries(&tree);
            let upper = tree.split_off_at(&at);
            check(&tree, &"split_off_at (lower)")?;
            check(&upper, &"split_off_at (upper)")?;
            prop_assert_eq!(upper.fanout(), fanout);
            prop_assert!(entries(&tree).iter().all(|(k, _)| *k < at));
            prop_assert!(entries(&upper).iter().all(|(k, _)| *k >= at));
            let mut both = entries(&tree);
            both.extend(entries(&upper));
            prop_assert_eq!(both, original);
        }

        #[test]
        fn absorb_joins_trees_of_any_heights(
            fanout in prop::sample::select(vec![4usize, 5, 6, 8, 64]),
            keys in prop::collection::btree_set(0u32..100_000, 0..1500),
            pivot in 0u32..100_000,
            seed in any::<u64>(),
        ) {
            let lower: BTreeSet<u32> = keys.range(..pivot).copied().collect();
            let upper: BTreeSet<u32> = keys.range(pivot..).copied().collect();
            let mut left = messy_tree(fanout, &lower, seed);
            let right = messy_tree(fanout, &upper, seed ^ 1);
            let mut right_clone = right.clone();
            prop_assert!(left.can_absorb(&right));
            left.absorb(right).unwrap();
            check(&left, &"absorb")?;
            let want: Vec<(u32, u32)> = keys.iter().map(|&k| (k, k ^ 0x5555)).collect();
            prop_assert_eq!(entries(&left), want);
            // The joined tree keeps working as a normal tree.
            for k in keys.iter().step_by(3) {
                prop_assert!(left.remove(k).is_some());
                check(&left, &"remove after absorb")?;
            }
            for k in (0..100_000u32).step_by(997) {
                left.insert(k, 1);
                right_clone.insert(k, 1);
            }
            check(&left, &"insert after absorb")?;
            check(&right_clone, &"insert into absorbed clone")?;
        }
    }

    #[test]
    fn absorb_rejects_overlapping_keys_and_leaves_self_unchanged() {
        let mut a = BPlusTree::from_sorted(4, (0..100u32).map(|k| (k, k))).unwrap();
        let hash = a.content_hash();
        let b = BPlusTree::from_sorted(4, (99..200u32).map(|k| (k, k))).unwrap();
        assert!(!a.can_absorb(&b));
        assert_eq!(a.absorb(b), Err(TreeError::AbsorbOverlap));
        assert_eq!(a.content_hash(), hash);
        assert_eq!(a.len(), 100);
        a.check_invariants().unwrap();
        // Interleaved key ranges are rejected as well.
        let c = BPlusTree::from_sorted(4, [(50u32, 0u32), (500, 0)]).unwrap();
        assert_eq!(a.absorb(c), Err(TreeError::AbsorbOverlap));
        assert_eq!(a.content_hash(), hash);
    }

    #[test]
    fn absorb_handles_empty_trees_and_different_fanouts() {
        let mut empty: BPlusTree<u32, u32> = BPlusTree::new(5).unwrap();
        empty.absorb(BPlusTree::new(5).unwrap()).unwrap();
        assert!(empty.is_empty());
        empty.check_invariants().unwrap();

        let upper = BPlusTree::from_sorted(5, (10..60u32).map(|k| (k, k))).unwrap();
        empty.absorb(upper).unwrap();
        empty.check_invariants().unwrap();
        assert_eq!(empty.len(), 50);

        empty.absorb(BPlusTree::new(5).unwrap()).unwrap();
        assert_eq!(empty.len(), 50);

        let other_fanout = BPlusTree::from_sorted(16, (60..400u32).map(|k| (k, k))).unwrap();
        empty.absorb(other_fanout).unwrap();
        empty.check_invariants().unwrap();
        assert_eq!(empty.fanout(), 5);
        assert!(empty.iter().map(|(k, _)| *k).eq(10..400));
    }

    #[test]
    fn split_off_upper_needs_two_entries() {
        let mut t: BPlusTree<u32, u32> = BPlusTree::new(4).unwrap();
        assert!(t.split_off_upper().is_none());
        t.insert(1, 1);
        assert!(t.split_off_upper().is_none());
        t.insert(2, 2);
        let (k, upper) = t.split_off_upper().unwrap();
        assert_eq!(k, 2);
        assert_eq!(entries(&t), vec![(1, 1)]);
        assert_eq!(entries(&upper), vec![(2, 2)]);
        t.check_invariants().unwrap();
        upper.check_invariants().unwrap();
    }

    // ----- bulk building ----------------------------------------------------

    #[test]
    fn from_sorted_builds_valid_trees_at_boundary_sizes() {
        for fanout in [4usize, 5, 6, 7, 8, 64] {
            let mut sizes = vec![0, 1, fanout - 1, fanout, fanout + 1, 10_000];
            sizes.extend(0..(4 * fanout * fanout).min(1200));
            for n in sizes {
                let tree =
                    BPlusTree::from_sorted(fanout, (0..n as u64).map(|k| (k * 3, k))).unwrap();
                tree.check_invariants()
                    .unwrap_or_else(|e| panic!("fanout {fanout}, n {n}: {e}"));
                assert_eq!(tree.len(), n);
                assert!(tree
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .eq((0..n as u64).map(|k| (k * 3, k))));
                assert_eq!(tree.first_key().copied(), (n > 0).then_some(0));
                assert_eq!(
                    tree.last_key().copied(),
                    n.checked_sub(1).map(|k| k as u64 * 3)
                );
            }
        }
    }

    #[test]
    fn from_sorted_tree_supports_updates() {
        for fanout in [4usize, 5, 64] {
            let mut tree =
                BPlusTree::from_sorted(fanout, (0..5_000u32).map(|k| (k * 2, k))).unwrap();
            let mut model: BTreeMap<u32, u32> = (0..5_000u32).map(|k| (k * 2, k)).collect();
            let mut rng = Rng::new(fanout as u64);
            for i in 0..20_000 {
                let k = rng.below(10_000) as u32;
                if rng.below(2) == 0 {
                    assert_eq!(tree.insert(k, i), model.insert(k, i));
                } else {
                    assert_eq!(tree.remove(&k), model.remove(&k));
                }
                if i % 499 == 0 {
                    tree.check_invariants().unwrap();
                }
            }
            tree.check_invariants().unwrap();
            assert!(tree.iter().map(|(k, v)| (*k, *v)).eq(model.into_iter()));
        }
    }

    #[test]
    fn from_sorted_rejects_unsorted_or_duplicate_keys() {
        let err = BPlusTree::from_sorted(4, [(1u32, ()), (3, ()), (2, ())]).unwrap_err();
        assert_eq!(err, TreeError::UnsortedInput { index: 2 });
        let err = BPlusTree::from_sorted(8, [(1u32, ()), (1, ())]).unwrap_err();
        assert_eq!(err, TreeError::UnsortedInput { index: 1 });
        assert!(err.to_string().contains("entry 1"));
    }

    #[test]
    fn new_rejects_fanout_below_four() {
        for fanout in 0..4 {
            let err = BPlusTree::<u32, u32>::new(fanout).unwrap_err();
            assert_eq!(err, TreeError::FanoutTooSmall { fanout });
            let dyn_err: &dyn std::error::Error = &err;
            assert!(dyn_err.to_string().contains("too small"));
        }
        assert!(BPlusTree::<u32, u32>::from_sorted(3, std::iter::empty()).is_err());
        assert_eq!(BPlusTree::<u32, u32>::new(4).unwrap().fanout(), 4);
    }

    #[test]
    fn from_sorted_million_keys_then_100k_random_gets() {
        let n = 1_000_000u64;
        let start = std::time::Instant::now();
        let tree = BPlusTree::from_sorted(64, (0..n).map(|k| (k * 2, k))).unwrap();
        let built = start.elapsed();
        assert_eq!(tree.len(), n as usize);
        let mut rng = Rng::new(42);
        let mut hits = 0usize;
        let start = std::time::Instant::now();
        for _ in 0..100_000 {
            let k = rng.below(2 * n);
            match tree.get(&k) {
                Some(v) => {
                    assert_eq!(k % 2, 0);
                    assert_eq!(*v, k / 2);
                    hits += 1;
                }
                None => assert_eq!(k % 2, 1),
            }
        }
        let looked_up = start.elapsed();
        assert!(hits > 40_000 && hits < 60_000);
        eprintln!(
            "1M from_sorted: {built:?}, 100k gets: {looked_up:?}, height {}",
            tree.height()
        );
        tree.check_invariants().unwrap();
    }

    // ----- misc -------------------------------------------------------------

    #[test]
    fn content_hash_ignores_shape_and_fanout() {
        let keys: BTreeSet<u32> = (0..2000u32)
            .map(|k| k.wrapping_mul(2_654_435_761) % 50_000)
            .collect();
        let a = messy_tree(4, &keys, 1);
        let b = messy_tree(64, &keys, 2);
        let c = BPlusTree::from_sorted(7, keys.iter().map(|&k| (k, k ^ 0x5555))).unwrap();
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash(), c.content_hash());
        let mut d = c.clone();
        d.insert(*keys.iter().next().unwrap(), 0);
        assert_ne!(d.content_hash(), c.content_hash());
        let empty: BPlusTree<u32, u32> = BPlusTree::new(4).unwrap();
        assert_eq!(
            empty.content_hash(),
            BPlusTree::<u32, u32>::new(9).unwrap().content_hash()
        );
        // Pinned values: FNV-1a over len, then each key and value, all as
        // little-endian u64 here; stable across runs and platforms.
        let small = BPlusTree::from_sorted(4, [(1u64, 2u64)]).unwrap();
        assert_eq!(small.content_hash(), 0xe81e_3a75_6bc5_e527);
        assert_eq!(
            BPlusTree::<u64, u64>::new(4).unwrap().content_hash(),
            0xa8c7_f832_281a_39c5
        );
    }

    #[test]
    fn clone_is_independent_of_original() {
        let mut a = BPlusTree::from_sorted(4, (0..500u32).map(|k| (k, k))).unwrap();
        let b = a.clone();
        for k in 0..250 {
            a.remove(&k);
        }
        a.insert(1000, 1);
        assert_eq!(b.len(), 500);
        assert!(b.iter().map(|(k, _)| *k).eq(0..500));
        b.check_invariants().unwrap();
        a.check_invariants().unwrap();
    }

    #[test]
    fn debug_shows_summary() {
        let t = BPlusTree::from_sorted(4, (0..10u32).map(|k| (k, k))).unwrap();
        let s = format!("{t:?}");
        assert!(
            s.contains("len: 10") && s.contains("fanout: 4") && s.contains("height"),
            "{s}"
        );
    }

    #[test]
    fn range_with_empty_or_inverted_bounds_yields_nothing() {
        let t = BPlusTree::from_sorted(4, (0..100u32).map(|k| (k, k))).unwrap();
        let count = |lo: Bound<&u32>, hi: Bound<&u32>| t.range(lo, hi).count();
        assert_eq!(count(Bound::Included(&50), Bound::Included(&40)), 0);
        assert_eq!(count(Bound::Excluded(&50), Bound::Excluded(&50)), 0);
        assert_eq!(count(Bound::Excluded(&50), Bound::Included(&50)), 0);
        assert_eq!(count(Bound::Included(&50), Bound::Excluded(&50)), 0);
        assert_eq!(count(Bound::Included(&50), Bound::Included(&50)), 1);
        assert_eq!(count(Bound::Excluded(&49), Bound::Excluded(&51)), 1);
        assert_eq!(count(Bound::Unbounded, Bound::Unbounded), 100);
        assert_eq!(count(Bound::Included(&200), Bound::Unbounded), 0);
        assert_eq!(t.scan(&10, &20, 3), vec![(10, 10), (11, 11), (12, 12)]);
        assert!(t.scan(&20, &10, 3).is_empty());
        assert!(t.scan(&10, &20, 0).is_empty());
        assert_eq!((&t).into_iter().count(), 100);
    }

    #[test]
    fn remove_everything_returns_to_single_empty_leaf_and_reuses_nodes() {
        let mut t = BPlusTree::new(4).unwrap();
        for k in 0..1000u32 {
            t.insert(k, k);
        }
        let arena = t.nodes.len();
        for k in (0..1000u32).rev().step_by(2).chain((0..1000u32).step_by(2)) {
            assert_eq!(t.remove(&k), Some(k));
            t.check_invariants().unwrap();
        }
        assert!(t.is_empty());
        assert_eq!(t.height(), 1);
        assert_eq!(t.first_key(), None);
        assert_eq!(t.last_key(), None);
        for k in 0..1000u32 {
            t.insert(k, k);
        }
        t.check_invariants().unwrap();
        assert_eq!(t.nodes.len(), arena, "freed nodes were not reused");
        t.clear();
        assert!(t.is_empty());
        t.check_invariants().unwrap();
    }

    #[test]
    fn check_invariants_detects_corruption() {
        let base = BPlusTree::from_sorted(4, (0..100u32).map(|k| (k, k))).unwrap();
        let mut t = base.clone();
        t.len += 1;
        assert!(t.check_invariants().is_err());

        let mut t = base.clone();
        let head = t.head;
        t.leaf_mut(head).keys.swap(0, 1);
        assert!(t.check_invariants().is_err());

        let mut t = base.clone();
        let head = t.head;
        t.leaf_mut(head).next = NIL;
        assert!(t.check_invariants().is_err());

        let mut t = base.clone();
        t.free.push(t.root);
        assert!(t.check_invariants().is_err());

        let mut t = base.clone();
        t.nodes.push(Node::Free);
        assert!(t.check_invariants().is_err());

        let mut t = base.clone();
        let root = t.root;
        t.internal_mut(root).keys[0] = 0;
        assert!(t.check_invariants().is_err());

        let mut t = base;
        let head = t.head;
        t.leaf_mut(head).keys.pop();
        t.leaf_mut(head).vals.pop();
        t.len -= 1;
        t.leaf_mut(head).keys.pop();
        t.leaf_mut(head).vals.pop();
        t.len -= 1;
        assert!(t.check_invariants().is_err(), "underfull leaf not detected");
    }
}
