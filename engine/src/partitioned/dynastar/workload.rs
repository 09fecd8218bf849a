//! The oracle's workload graph (reference notes, e.2): objects are vertices, an edge joins two
//! objects some command accessed together, and weights count accesses and co-accesses, decayed
//! over time so that the graph follows the workload as it changes.
//!
//! Weights are fixed-point integers ([`UNIT`] per access), so every oracle replica that applies
//! the same hints in the same order holds the same graph, bit for bit, and computes the same
//! placement from it. Memory is bounded: past `edges_max` edges the lightest ones are dropped
//! (the graph keeps what matters for placement: the heavy co-accesses).

use super::super::service::ObjectId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The weight of one access (or co-access).
pub const UNIT: u64 = 1 << 10;

/// How the graph is bounded and decayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphOptions {
    /// Edges kept at most; past this the lightest go (down to three quarters of it).
    pub edges_max: usize,
    /// Per cent of every weight kept at each [`WorkloadGraph::decay`] step (0-100).
    pub keep_percent: u32,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            edges_max: 4_000_000,
            keep_percent: 50,
        }
    }
}

impl GraphOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.edges_max < 16 {
            return Err(format!(
                "graph edges_max must be at least 16 (got {})",
                self.edges_max
            ));
        }
        if self.keep_percent > 100 {
            return Err(format!(
                "graph keep_percent must be 0-100 (got {})",
                self.keep_percent
            ));
        }
        Ok(())
    }
}

/// What a partition observed while executing: accesses per object and co-accesses per pair,
/// summed over a hint period (the paper's `hint(V_h, E_h)`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hints {
    /// `(object, accesses)`.
    pub vertices: Vec<(ObjectId, u32)>,
    /// `(a, b, co-accesses)` with `a < b`.
    pub edges: Vec<(ObjectId, ObjectId, u32)>,
}

impl Hints {
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty() && self.edges.is_empty()
    }
}

/// A partition's hint accumulator: bounded, drained into a [`Hints`] batch per period.
#[derive(Clone, Debug, Default)]
pub struct HintBuffer {
    vertices: FxHashMap<ObjectId, u32>,
    edges: FxHashMap<(ObjectId, ObjectId), u32>,
    entries_max: usize,
    /// Pairs not recorded because the buffer was full.
    pub dropped: u64,
}

impl HintBuffer {
    pub fn new(entries_max: usize) -> Self {
        HintBuffer {
            entries_max: entries_max.max(1),
            ..HintBuffer::default()
        }
    }

    /// One command accessed `objects`, co-accessing the pairs `edges`.
    pub fn record(&mut self, objects: &[ObjectId], edges: &[(ObjectId, ObjectId)]) {
        for &o in objects {
            if self.vertices.len() < self.entries_max || self.vertices.contains_key(&o) {
                *self.vertices.entry(o).or_default() += 1;
            }
        }
        for &(a, b) in edges {
            if a == b {
                continue;
            }
            let key = (a.min(b), a.max(b));
            if self.edges.len() < self.entries_max || self.edges.contains_key(&key) {
                *self.edges.entry(key).or_default() += 1;
            } else {
                self.dropped += 1;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty() && self.edges.is_empty()
    }

    /// Everything recorded since the last drain, sorted (a deterministic message).
    pub fn drain(&mut self) -> Hints {
        let mut vertices: Vec<(ObjectId, u32)> = self.vertices.drain().collect();
        let mut edges: Vec<(ObjectId, ObjectId, u32)> =
            self.edges.drain().map(|((a, b), w)| (a, b, w)).collect();
        vertices.sort_unstable();
        edges.sort_unstable();
        Hints { vertices, edges }
    }
}

/// The workload graph (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadGraph {
    opts: GraphOptions,
    vertices: FxHashMap<ObjectId, u64>,
    edges: FxHashMap<(ObjectId, ObjectId), u64>,
    /// Hint batches applied since the last [`WorkloadGraph::take_changes`].
    changes: u64,
    /// Edges dropped to stay within the bound, in all.
    pub pruned: u64,
}

impl WorkloadGraph {
    pub fn new(opts: GraphOptions) -> Self {
        WorkloadGraph {
            opts,
            vertices: FxHashMap::default(),
            edges: FxHashMap::default(),
            changes: 0,
            pruned: 0,
        }
    }

    pub fn options(&self) -> &GraphOptions {
        &self.opts
    }

    /// Adds a batch of hints; objects in `exists` only (hints about objects deleted since are
    /// dropped).
    pub fn apply(&mut self, hints: &Hints, exists: impl Fn(ObjectId) -> bool) {
        for &(o, n) in &hints.vertices {
            if exists(o) {
                *self.vertices.entry(o).or_default() += u64::from(n) * UNIT;
            }
        }
        for &(a, b, n) in &hints.edges {
            if a == b || !exists(a) || !exists(b) {
                continue;
            }
            *self.edges.entry((a.min(b), a.max(b))).or_default() += u64::from(n) * UNIT;
        }
        self.changes += 1;
        if self.edges.len() > self.opts.edges_max {
            self.prune();
        }
    }

    /// Forgets a deleted object (its vertex; its edges go at the next prune or build).
    pub fn remove(&mut self, o: ObjectId) {
        self.vertices.remove(&o);
    }

    /// Multiplies every weight by `keep_percent`; weights that reach 0 go.
    pub fn decay(&mut self) {
        let keep = u64::from(self.opts.keep_percent);
        self.vertices.retain(|_, w| {
            *w = *w * keep / 100;
            *w > 0
        });
        self.edges.retain(|_, w| {
            *w = *w * keep / 100;
            *w > 0
        });
    }

    /// Drops the lightest edges (ties by id: deterministic) down to three quarters of the
    /// bound.
    fn prune(&mut self) {
        let target = self.opts.edges_max / 4 * 3;
        let mut all: Vec<(u64, (ObjectId, ObjectId))> =
            self.edges.iter().map(|(k, w)| (*w, *k)).collect();
        let cut = all.len() - target;
        all.select_nth_unstable(cut);
        for (_, k) in &all[..cut] {
            self.edges.remove(k);
        }
        self.pruned += cut as u64;
    }

    /// Hint batches applied since the last call.
    pub fn take_changes(&mut self) -> u64 {
        std::mem::take(&mut self.changes)
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn vertex_weight(&self, o: ObjectId) -> u64 {
        self.vertices.get(&o).copied().unwrap_or(0)
    }

    pub fn edge_weight(&self, a: ObjectId, b: ObjectId) -> u64 {
        self.edges.get(&(a.min(b), a.max(b))).copied().unwrap_or(0)
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub fn vertex_count(&self) -> usize {
        self.vertices.len()
    }

    /// Bytes the graph's tables hold, roughly (entries times their size, plus the tables'
    /// spare capacity).
    pub fn memory_bytes(&self) -> usize {
        let v = std::mem::size_of::<(ObjectId, u64)>() + 1;
        let e = std::mem::size_of::<((ObjectId, ObjectId), u64)>() + 1;
        self.vertices.capacity() * v + self.edges.capacity() * e
    }

    /// The graph over `objects` (sorted, distinct: every object that exists) in compressed
    /// form, for a partitioner: vertex `i` is `objects[i]`.
    pub fn build(&self, objects: &[ObjectId]) -> Csr {
        debug_assert!(objects.windows(2).all(|w| w[0] < w[1]));
        let index = |o: ObjectId| objects.binary_search(&o).ok();
        let n = objects.len();
        let mut pairs: Vec<(u32, u32, u64)> = Vec::with_capacity(self.edges.len() * 2);
        for (&(a, b), &w) in &self.edges {
            if let (Some(i), Some(j)) = (index(a), index(b)) {
                pairs.push((i as u32, j as u32, w));
                pairs.push((j as u32, i as u32, w));
            }
        }
        pairs.sort_unstable();
        let mut xadj = Vec::with_capacity(n + 1);
        let mut adj = Vec::with_capacity(pairs.len());
        let mut weight = Vec::with_capacity(pairs.len());
        xadj.push(0u32);
        let mut at = 0;
        for i in 0..n as u32 {
            while at < pairs.len() && pairs[at].0 == i {
                adj.push(pairs[at].1);
                weight.push(pairs[at].2);
                at += 1;
            }
            xadj.push(adj.len() as u32);
        }
        let vweight = objects.iter().map(|o| self.vertex_weight(*o)).collect();
        Csr {
            xadj,
            adj,
            weight,
            vweight,
        }
    }
}

/// A graph in compressed sparse row form: the neighbours of vertex `i` are
/// `adj[xadj[i]..xadj[i + 1]]`, with weights `weight[..]`; symmetric, no self-loops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Csr {
    pub xadj: Vec<u32>,
    pub adj: Vec<u32>,
    pub weight: Vec<u64>,
    /// Each vertex's load (accesses).
    pub vweight: Vec<u64>,
}

impl Csr {
    pub fn vertices(&self) -> usize {
        self.xadj.len().saturating_sub(1)
    }

    pub fn neighbours(&self, v: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (a, b) = (self.xadj[v] as usize, self.xadj[v + 1] as usize);
        self.adj[a..b]
            .iter()
            .zip(&self.weight[a..b])
            .map(|(u, w)| (*u as usize, *w))
    }

    /// The total weight of edges whose ends `part` puts in different partitions.
    pub fn cut(&self, part: &[u32]) -> u64 {
        let mut cut = 0;
        for v in 0..self.vertices() {
            for (u, w) in self.neighbours(v) {
                if u > v && part[u] != part[v] {
                    cut += w;
                }
            }
        }
        cut
    }

    /// The total edge weight.
    pub fn total_weight(&self) -> u64 {
        self.weight.iter().sum::<u64>() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_accumulate_decay_and_stay_within_the_bound() {
        let mut g = WorkloadGraph::new(GraphOptions {
            edges_max: 16,
            keep_percent: 50,
        });
        let mut buf = HintBuffer::new(1000);
        buf.record(&[1, 2], &[(2, 1)]);
        buf.record(&[1, 2], &[(1, 2)]);
        let h = buf.drain();
        assert_eq!(h.edges, vec![(1, 2, 2)]);
        g.apply(&h, |_| true);
        assert_eq!(g.edge_weight(2, 1), 2 * UNIT);
        assert_eq!(g.vertex_weight(1), 2 * UNIT);
        g.decay();
        assert_eq!(g.edge_weight(1, 2), UNIT);
        // 40 distinct edges: the bound holds, and the heavy edge survives the pruning.
        let many = Hints {
            vertices: vec![],
            edges: (10..50).map(|i| (i, i + 100, 1)).collect(),
        };
        let heavy = Hints {
            vertices: vec![],
            edges: vec![(1, 2, 100)],
        };
        g.apply(&heavy, |_| true);
        g.apply(&many, |_| true);
        assert!(g.edge_count() <= 16, "{} edges", g.edge_count());
        assert!(g.edge_weight(1, 2) > 100 * UNIT);
        assert!(g.pruned > 0);
        assert_eq!(g.take_changes(), 3);
        // Hints about objects that no longer exist are dropped.
        g.apply(&heavy, |o| o != 2);
        assert_eq!(g.edge_weight(1, 2), 101 * UNIT);
    }

    #[test]
    fn the_compressed_graph_is_symmetric_and_counts_the_cut() {
        let mut g = WorkloadGraph::new(GraphOptions::default());
        g.apply(
            &Hints {
                vertices: vec![(5, 1), (7, 3)],
                edges: vec![(5, 7, 2), (7, 9, 1), (5, 11, 1)],
            },
            |_| true,
        );
        // 11 is not an object (deleted): its edge is left out.
        let csr = g.build(&[5, 7, 9]);
        assert_eq!(csr.vertices(), 3);
        assert_eq!(csr.xadj, vec![0, 1, 3, 4]);
        assert_eq!(csr.total_weight(), 3 * UNIT);
        assert_eq!(csr.cut(&[0, 0, 1]), UNIT);
        assert_eq!(csr.cut(&[0, 1, 1]), 2 * UNIT);
        assert_eq!(csr.vweight, vec![UNIT, 3 * UNIT, 0]);
    }
}
