//! The social graph of Chirper: who follows whom, and which users form communities.
//!
//! Users are dense ids `0..n` (`u32`). "`a` follows `b`" means `b`'s posts go to `a`'s
//! timeline: `a` is a *follower* of `b`, `b` is a *followee* of `a`. A [`SocialGraph`] holds
//! both directions as sorted adjacency arrays, plus a community label per user, which is what
//! placement works from.
//!
//! # The generator model ([`generate`])
//!
//! 1. **Communities.** The users are split over [`GraphSpec::communities`] communities. Every
//!    community has at least one member; the sizes vary by up to ±25 % around `users /
//!    communities` (seeded weights, exact integer apportionment). Members are picked by a
//!    seeded permutation, so a community is *not* a contiguous id range: a range or hash
//!    placement of ids is a random placement with respect to communities.
//! 2. **Popularity.** A second seeded permutation gives every user a global popularity rank.
//!    Inside a community, members are ranked in the same order. The rank-`r` user of a pool
//!    (the community, or everyone) is drawn with probability proportional to
//!    `(r + 1)^-popularity_exponent` (Zipf). Popular users are spread evenly over the
//!    communities, and each community has its own local celebrities. With exponent 1 the
//!    follower counts follow a power law with density exponent about 2, close to what was
//!    measured on Twitter; exponent 0 makes every draw uniform.
//! 3. **Follows.** User `u` draws how many users it follows from a geometric distribution on
//!    `0, 1, 2, ...` with mean [`GraphSpec::mean_followees`] (so some users follow nobody and a
//!    few follow many), capped at `users - 1`. For each followee it flips a coin: with
//!    probability [`GraphSpec::locality`] it draws from its own community, otherwise from the
//!    whole population. A draw that hits `u` itself or a user it already follows is retried
//!    from the same pool, at most 32 times; after that (or right away, once the pool has no
//!    candidate left) the followee is given up. A user in a small community therefore simply
//!    follows fewer users; the generator never loops forever.
//!
//! Defaults ([`GraphSpec::default`]): 10 000 users, 100 communities (about 100 users each), a
//! mean of 20 followees, locality 0.9, popularity exponent 1.0, seed 42.
//!
//! The graph is a pure function of the spec (seed included): all randomness comes from one
//! `ChaCha8Rng`, nothing iterates a hash map. (Weights use `f64::powf` and `f64::ln`, so the
//! result is reproducible on one platform and math library; it is in practice everywhere.)
//!
//! # Placement
//!
//! [`place_by_community`] puts each community on one of `partitions` partitions, balancing
//! users (longest-processing-time greedy), then keeps each user on its community's partition
//! with probability `quality`, else sends it to a uniformly random partition. Quality 1 is a
//! perfect community placement, 0 a random one. [`edge_locality`] measures the result: the
//! fraction of follow edges whose two ends share a partition.
//!
//! # Edge lists
//!
//! [`read_edge_list`] loads a SNAP-style text file (`follower followee` per line, `#` and `%`
//! comments); its communities come from label propagation. [`write_edge_list`] writes one that
//! reads back with the same ids and edges. See [`read_edge_list`] for the exact format.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::{BufRead, BufWriter, Write};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Draws of one followee slot before it is given up (a draw of self or of a user already
/// followed is retried).
const DRAW_TRIES_MAX: u32 = 32;

/// Range of the seeded community weights, in thousandths of the mean community size.
const COMMUNITY_WEIGHT_MIN_PERMILLE: u64 = 750;
const COMMUNITY_WEIGHT_MAX_PERMILLE: u64 = 1250;

/// Users of the DynaStar paper's social graph (Higgs Twitter).
pub const PAPER_USERS: u32 = 456_631;

/// Rounds of label propagation when computing the communities of a loaded graph (fewer when
/// the labels stop changing).
pub const LABEL_PROPAGATION_ROUNDS: u32 = 10;

/// Why a graph could not be generated, placed, built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A [`GraphSpec`] field is out of its range.
    #[error("invalid graph spec: `{field}` {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    /// An argument of [`place_by_community`] is out of its range.
    #[error("invalid placement argument: `{field}` {reason}")]
    InvalidPlacement { field: &'static str, reason: String },
    /// The parts given to [`SocialGraph::from_edges`] do not form a graph.
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
    /// A line of an edge list is malformed (`line` counts from 1, comments included).
    #[error("edge list line {line}: {reason}")]
    Parse { line: usize, reason: String },
    /// The edge list names no user at all.
    #[error("edge list has no users")]
    Empty,
    /// Reading the edge list failed.
    #[error("reading edge list: {0}")]
    Io(#[from] std::io::Error),
}

fn spec_error(field: &'static str, reason: String) -> GraphError {
    GraphError::InvalidSpec { field, reason }
}

fn parse_error(line: usize, reason: impl Into<String>) -> GraphError {
    GraphError::Parse {
        line,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The graph
// ---------------------------------------------------------------------------------------------

/// A directed follow graph over users `0..users()` with a community label per user.
///
/// Invariants (checked by the constructors): at least one user; no self-loop; no duplicate
/// edge; every adjacency list sorted ascending; [`followers`](Self::followers) and
/// [`followees`](Self::followees) mirror each other exactly; every community in
/// `0..communities()` has at least one member.
#[derive(Clone, PartialEq)]
pub struct SocialGraph {
    /// `followee_ids[followee_start[u]..followee_start[u + 1]]`: whom `u` follows, ascending.
    followee_start: Vec<usize>,
    followee_ids: Vec<u32>,
    /// `follower_ids[follower_start[u]..follower_start[u + 1]]`: who follows `u`, ascending.
    follower_start: Vec<usize>,
    follower_ids: Vec<u32>,
    /// Community of every user; `community.len() == users`, labels dense in `0..communities`.
    community: Vec<u32>,
    communities: u32,
    /// How the graph was loaded, for graphs from [`read_edge_list`].
    load_report: Option<LoadReport>,
}

impl SocialGraph {
    /// Builds a graph from explicit edges `(follower, followee)` and community labels.
    ///
    /// `community[u]` is the community of user `u`; the labels used must be exactly
    /// `0..c` for some `c`. Duplicate edges are merged; a self-loop, an id `>= users`, a
    /// `community` of the wrong length or labels with a gap are an
    /// [`GraphError::InvalidGraph`].
    pub fn from_edges(
        users: u32,
        edges: impl IntoIterator<Item = (u32, u32)>,
        community: Vec<u32>,
    ) -> Result<Self, GraphError> {
        if users == 0 {
            return Err(GraphError::InvalidGraph(
                "a graph needs at least one user".into(),
            ));
        }
        if community.len() != users as usize {
            return Err(GraphError::InvalidGraph(format!(
                "{} community labels for {users} users",
                community.len()
            )));
        }
        let communities = dense_label_count(&community).ok_or_else(|| {
            GraphError::InvalidGraph("community labels must be exactly 0..c, with no gap".into())
        })?;
        let mut pairs = Vec::new();
        for (follower, followee) in edges {
            if follower >= users || followee >= users {
                return Err(GraphError::InvalidGraph(format!(
                    "edge ({follower}, {followee}) names a user outside 0..{users}"
                )));
            }
            if follower == followee {
                return Err(GraphError::InvalidGraph(format!(
                    "self-loop on user {follower}"
                )));
            }
            pairs.push((follower, followee));
        }
        pairs.sort_unstable();
        pairs.dedup();
        Ok(Self::from_sorted_pairs(
            &pairs,
            community,
            communities,
            None,
        ))
    }

    /// Number of users; ids are `0..users()`.
    pub fn users(&self) -> u32 {
        self.community.len() as u32
    }

    /// Number of follow edges.
    pub fn edges(&self) -> u64 {
        self.followee_ids.len() as u64
    }

    /// Users following `u` (whose timelines receive `u`'s posts), ascending.
    pub fn followers(&self, u: u32) -> &[u32] {
        let u = u as usize;
        &self.follower_ids[self.follower_start[u]..self.follower_start[u + 1]]
    }

    /// Users `u` follows (whose posts appear on `u`'s timeline), ascending.
    pub fn followees(&self, u: u32) -> &[u32] {
        let u = u as usize;
        &self.followee_ids[self.followee_start[u]..self.followee_start[u + 1]]
    }

    /// Community of user `u`, in `0..communities()`.
    pub fn community(&self, u: u32) -> u32 {
        self.community[u as usize]
    }

    /// Number of communities; each has at least one member.
    pub fn communities(&self) -> u32 {
        self.communities
    }

    /// The community of every user, indexed by user (usable as a placement over
    /// `communities()` partitions, e.g. with [`edge_locality`]).
    pub fn community_labels(&self) -> &[u32] {
        &self.community
    }

    /// All edges `(follower, followee)`, ordered by follower, then followee.
    pub fn iter_edges(&self) -> EdgeIter<'_> {
        EdgeIter {
            graph: self,
            follower: 0,
            position: 0,
        }
    }

    /// How the graph was read, for a graph from [`read_edge_list`]; `None` otherwise.
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.load_report.as_ref()
    }

    /// Builds the graph from edges sorted by `(follower, followee)`, distinct, loop-free.
    fn from_sorted_pairs(
        pairs: &[(u32, u32)],
        community: Vec<u32>,
        communities: u32,
        load_report: Option<LoadReport>,
    ) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0] < w[1]));
        let users = community.len();
        let mut followee_start = vec![0usize; users + 1];
        for &(follower, _) in pairs {
            followee_start[follower as usize + 1] += 1;
        }
        for u in 0..users {
            followee_start[u + 1] += followee_start[u];
        }
        let followee_ids = pairs.iter().map(|&(_, followee)| followee).collect();
        Self::from_followee_lists(
            followee_start,
            followee_ids,
            community,
            communities,
            load_report,
        )
    }

    /// Builds the graph from its followee lists (each sorted, distinct, loop-free) by
    /// mirroring them into follower lists.
    fn from_followee_lists(
        followee_start: Vec<usize>,
        followee_ids: Vec<u32>,
        community: Vec<u32>,
        communities: u32,
        load_report: Option<LoadReport>,
    ) -> Self {
        let users = community.len();
        assert!(users >= 1, "a graph needs at least one user");
        assert_eq!(followee_start.len(), users + 1);
        assert_eq!(followee_start[users], followee_ids.len());
        let mut follower_start = vec![0usize; users + 1];
        for &followee in &followee_ids {
            follower_start[followee as usize + 1] += 1;
        }
        for u in 0..users {
            follower_start[u + 1] += follower_start[u];
        }
        // Followers are filled in ascending follower order, so each list comes out sorted.
        let mut cursor = follower_start[..users].to_vec();
        let mut follower_ids = vec![0u32; followee_ids.len()];
        for follower in 0..users {
            let followees = &followee_ids[followee_start[follower]..followee_start[follower + 1]];
            debug_assert!(followees.windows(2).all(|w| w[0] < w[1]));
            for &followee in followees {
                debug_assert_ne!(followee as usize, follower, "self-loop");
                let slot = &mut cursor[followee as usize];
                follower_ids[*slot] = follower as u32;
                *slot += 1;
            }
        }
        Self {
            followee_start,
            followee_ids,
            follower_start,
            follower_ids,
            community,
            communities,
            load_report,
        }
    }
}

impl fmt::Debug for SocialGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocialGraph")
            .field("users", &self.users())
            .field("edges", &self.edges())
            .field("communities", &self.communities)
            .finish_non_exhaustive()
    }
}

/// The number of labels when `labels` uses exactly `0..c`; `None` when there is a gap.
fn dense_label_count(labels: &[u32]) -> Option<u32> {
    let count = labels.iter().max().map_or(0, |&max| max as usize + 1);
    let mut used = vec![false; count];
    for &label in labels {
        used[label as usize] = true;
    }
    used.iter().all(|&u| u).then_some(count as u32)
}

/// Iterator over a graph's edges `(follower, followee)`, see [`SocialGraph::iter_edges`].
#[derive(Debug, Clone)]
pub struct EdgeIter<'a> {
    graph: &'a SocialGraph,
    follower: usize,
    /// Index of the next edge in `graph.followee_ids`.
    position: usize,
}

impl Iterator for EdgeIter<'_> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        let graph = self.graph;
        let followee = *graph.followee_ids.get(self.position)?;
        while graph.followee_start[self.follower + 1] <= self.position {
            self.follower += 1;
        }
        self.position += 1;
        Some((self.follower as u32, followee))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.graph.followee_ids.len() - self.position;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EdgeIter<'_> {}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// The knobs of the generator; see the module documentation for the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphSpec {
    /// Number of users, at least 1. Default 10 000.
    pub users: u32,
    /// Number of communities, in `1..=users`. Default 100.
    pub communities: u32,
    /// Mean number of users each user follows (geometric, capped at `users - 1`), in
    /// `[0, users)`. Default 20.
    pub mean_followees: f64,
    /// Probability that a followee is drawn from the follower's own community rather than
    /// from everyone, in `[0, 1]`. Default 0.9.
    pub locality: f64,
    /// Zipf exponent of popularity: the rank-`r` user of a pool is drawn with weight
    /// `(r + 1)^-popularity_exponent`; 0 is uniform; finite and `>= 0`. Default 1.0.
    pub popularity_exponent: f64,
    /// Seed of every random choice. Default 42.
    pub seed: u64,
}

impl Default for GraphSpec {
    fn default() -> Self {
        Self {
            users: 10_000,
            communities: 100,
            mean_followees: 20.0,
            locality: 0.9,
            popularity_exponent: 1.0,
            seed: 42,
        }
    }
}

impl GraphSpec {
    /// A graph the size of the DynaStar paper's (the Higgs Twitter graph: 456,631 users and
    /// about 14 M follow edges): 3,000 communities of about 150 users, a mean of 31 followees,
    /// locality 0.85, popularity exponent 1.0 (power-law follower counts).
    pub fn paper(seed: u64) -> Self {
        GraphSpec {
            users: PAPER_USERS,
            communities: 3_000,
            mean_followees: 31.0,
            locality: 0.85,
            popularity_exponent: 1.0,
            seed,
        }
    }

    /// A graph with weak locality: followees drawn from everyone (no communities to find),
    /// uniformly, so no placement keeps most follows inside a partition.
    pub fn weak_locality(users: u32, mean_followees: f64, seed: u64) -> Self {
        GraphSpec {
            users,
            communities: 1,
            mean_followees,
            locality: 0.0,
            popularity_exponent: 0.0,
            seed,
        }
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), GraphError> {
        if self.users == 0 {
            return Err(spec_error("users", "must be at least 1".into()));
        }
        if !(1..=self.users).contains(&self.communities) {
            return Err(spec_error(
                "communities",
                format!("must be in 1..={}, got {}", self.users, self.communities),
            ));
        }
        if !(0.0..f64::from(self.users)).contains(&self.mean_followees) {
            return Err(spec_error(
                "mean_followees",
                format!(
                    "must be in [0, {}) (below users), got {}",
                    self.users, self.mean_followees
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.locality) {
            return Err(spec_error(
                "locality",
                format!("must be in [0, 1], got {}", self.locality),
            ));
        }
        if !(self.popularity_exponent.is_finite() && self.popularity_exponent >= 0.0) {
            return Err(spec_error(
                "popularity_exponent",
                format!("must be finite and >= 0, got {}", self.popularity_exponent),
            ));
        }
        Ok(())
    }
}

/// Generates the graph described by `spec` (deterministic in `spec`, seed included).
pub fn generate(spec: &GraphSpec) -> Result<SocialGraph, GraphError> {
    spec.validate()?;
    let users = spec.users as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);

    // Communities: seeded sizes, members taken from a seeded permutation.
    let sizes = community_sizes(spec.users, spec.communities, &mut rng);
    let mut permutation: Vec<u32> = (0..spec.users).collect();
    permutation.shuffle(&mut rng);
    let mut community = vec![0u32; users];
    let mut pool_start = Vec::with_capacity(sizes.len() + 1);
    pool_start.push(0usize);
    for (label, &size) in sizes.iter().enumerate() {
        let start = *pool_start.last().expect("starts with 0");
        for &u in &permutation[start..start + size] {
            community[u as usize] = label as u32;
        }
        pool_start.push(start + size);
    }

    // Popularity: `by_rank[r]` is the user of global rank `r`; each community's pool lists
    // its members in the same order, so `pools[pool_start[c]..]` is ranked too.
    permutation.shuffle(&mut rng);
    let by_rank = permutation;
    let mut pools = vec![0u32; users];
    let mut cursor = pool_start[..sizes.len()].to_vec();
    for &u in &by_rank {
        let slot = &mut cursor[community[u as usize] as usize];
        pools[*slot] = u;
        *slot += 1;
    }
    let popularity = Popularity::new(users, spec.popularity_exponent);

    // Follows.
    let mut followee_start = Vec::with_capacity(users + 1);
    followee_start.push(0usize);
    let mut followee_ids = Vec::with_capacity((spec.mean_followees * users as f64) as usize);
    // `chosen_by[v] == u` while drawing for `u` means `v` is `u` itself or already followed.
    let mut chosen_by = vec![u32::MAX; users];
    let mut chosen = Vec::new();
    for u in 0..spec.users {
        let own = community[u as usize] as usize;
        let own_pool = &pools[pool_start[own]..pool_start[own + 1]];
        let wanted = draw_followee_count(spec.mean_followees, users - 1, &mut rng);
        chosen.clear();
        chosen_by[u as usize] = u;
        // Members of the own pool that are taken (`u` itself included).
        let mut own_taken = 1;
        for _ in 0..wanted {
            let local = rng.random_bool(spec.locality);
            let pool: &[u32] = if local { own_pool } else { &by_rank };
            if local && own_taken >= own_pool.len() {
                continue; // nobody left to follow in the community
            }
            for _ in 0..DRAW_TRIES_MAX {
                let v = pool[popularity.sample(pool.len(), &mut rng)];
                if chosen_by[v as usize] != u {
                    chosen_by[v as usize] = u;
                    chosen.push(v);
                    if community[v as usize] as usize == own {
                        own_taken += 1;
                    }
                    break;
                }
            }
        }
        chosen.sort_unstable();
        followee_ids.extend_from_slice(&chosen);
        followee_start.push(followee_ids.len());
    }
    Ok(SocialGraph::from_followee_lists(
        followee_start,
        followee_ids,
        community,
        spec.communities,
        None,
    ))
}

/// Sizes of `communities` communities over `users` users: each has one member plus a share
/// of the rest proportional to a seeded weight in `[0.75, 1.25]` (largest-remainder
/// apportionment, exact in integers).
fn community_sizes(users: u32, communities: u32, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let extra = u64::from(users - communities);
    let weights: Vec<u64> = (0..communities)
        .map(|_| rng.random_range(COMMUNITY_WEIGHT_MIN_PERMILLE..=COMMUNITY_WEIGHT_MAX_PERMILLE))
        .collect();
    let total: u64 = weights.iter().sum();
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|&w| 1 + (extra * w / total) as usize)
        .collect();
    let assigned: usize = sizes.iter().sum();
    let left = users as usize - assigned;
    let mut by_remainder: Vec<usize> = (0..sizes.len()).collect();
    by_remainder.sort_by_key(|&c| (Reverse(extra * weights[c] % total), c));
    for &c in &by_remainder[..left] {
        sizes[c] += 1;
    }
    debug_assert_eq!(sizes.iter().sum::<usize>(), users as usize);
    sizes
}

/// Geometric on `0, 1, 2, ...` with the given mean, capped at `cap`.
fn draw_followee_count(mean: f64, cap: usize, rng: &mut ChaCha8Rng) -> usize {
    if mean <= 0.0 {
        return 0;
    }
    let continue_probability = mean / (1.0 + mean);
    let uniform = 1.0 - rng.random::<f64>(); // in (0, 1]
    let count = (uniform.ln() / continue_probability.ln()).floor();
    (count as usize).min(cap) // `as` saturates
}

/// Zipf sampler over ranks: `cumulative[r]` is the weight of ranks `0..=r`. A pool of `len`
/// users uses the prefix `cumulative[..len]`, so one table serves every pool.
struct Popularity {
    cumulative: Vec<f64>,
}

impl Popularity {
    fn new(ranks: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..ranks)
            .map(|r| {
                total += ((r + 1) as f64).powf(-exponent);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// A rank in `0..len`, drawn with weight `(rank + 1)^-exponent`.
    fn sample(&self, len: usize, rng: &mut ChaCha8Rng) -> usize {
        let cumulative = &self.cumulative[..len];
        let target = rng.random::<f64>() * cumulative[len - 1];
        cumulative.partition_point(|&w| w <= target).min(len - 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------------

/// The partition of every community: largest community first (ties: smaller label) onto the
/// partition with the fewest users so far (ties: smaller partition).
pub fn assign_communities(graph: &SocialGraph, partitions: u32) -> Result<Vec<u32>, GraphError> {
    if partitions == 0 {
        return Err(GraphError::InvalidPlacement {
            field: "partitions",
            reason: "must be at least 1".into(),
        });
    }
    let mut sizes = vec![0u64; graph.communities() as usize];
    for &c in graph.community_labels() {
        sizes[c as usize] += 1;
    }
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&c| (Reverse(sizes[c]), c));
    let mut load: BinaryHeap<Reverse<(u64, u32)>> =
        (0..partitions).map(|p| Reverse((0, p))).collect();
    let mut home = vec![0u32; sizes.len()];
    for c in order {
        let Reverse((users, partition)) = load.pop().expect("partitions >= 1");
        home[c] = partition;
        load.push(Reverse((users + sizes[c], partition)));
    }
    Ok(home)
}

/// Shards a placement over `workers` workers per partition (combined mode): user `u` of
/// partition `p` goes to cell `p * workers + u % workers`.
pub fn shard_over_workers(placement: &[u32], workers: u32) -> Vec<u32> {
    let k = workers.max(1);
    placement
        .iter()
        .enumerate()
        .map(|(u, p)| p * k + (u as u32) % k)
        .collect()
}

/// The partition of every user: each stays on its community's partition (see
/// [`assign_communities`]) with probability `quality`, else goes to a uniformly random one.
///
/// `partitions >= 1` and `quality` in `[0, 1]`, else [`GraphError::InvalidPlacement`].
pub fn place_by_community(
    graph: &SocialGraph,
    partitions: u32,
    quality: f64,
    seed: u64,
) -> Result<Vec<u32>, GraphError> {
    if !(0.0..=1.0).contains(&quality) {
        return Err(GraphError::InvalidPlacement {
            field: "quality",
            reason: format!("must be in [0, 1], got {quality}"),
        });
    }
    let home = assign_communities(graph, partitions)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok(graph
        .community_labels()
        .iter()
        .map(|&c| {
            if rng.random_bool(quality) {
                home[c as usize]
            } else {
                rng.random_range(0..partitions)
            }
        })
        .collect())
}

/// A static placement computed by METIS from the follow graph (S-SMR with a precomputed
/// partitioning, the DynaStar paper's S-SMR* baseline): the undirected follow graph, every
/// edge of weight one, users balanced by count within `imbalance_percent`.
pub fn place_by_metis(
    graph: &SocialGraph,
    partitions: u32,
    imbalance_percent: u32,
    seed: u64,
) -> Result<Vec<u32>, GraphError> {
    use engine::partitioned::dynastar::placement::{metis, PlacementOptions};
    use engine::partitioned::dynastar::workload::{Csr, UNIT};
    if partitions == 0 {
        return Err(GraphError::InvalidGraph("zero partitions".into()));
    }
    let n = graph.users() as usize;
    let mut xadj = Vec::with_capacity(n + 1);
    let mut adj = Vec::new();
    xadj.push(0u32);
    for u in 0..graph.users() {
        // Followers and followees, merged (both sorted), without duplicates.
        let (a, b) = (graph.followers(u), graph.followees(u));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x == y => {
                    i += 1;
                    j += 1;
                    *x
                }
                (Some(x), Some(y)) if x < y => {
                    i += 1;
                    *x
                }
                (Some(x), None) => {
                    i += 1;
                    *x
                }
                (_, Some(y)) => {
                    j += 1;
                    *y
                }
                (None, None) => unreachable!(),
            };
            adj.push(next);
        }
        xadj.push(adj.len() as u32);
    }
    let csr = Csr {
        weight: vec![UNIT; adj.len()],
        xadj,
        adj,
        vweight: vec![0; n],
    };
    let o = PlacementOptions {
        imbalance_percent,
        seed,
        ..PlacementOptions::default()
    };
    metis(&csr, partitions, &o).map_err(GraphError::InvalidGraph)
}

/// Fraction of follow edges whose follower and followee are on the same partition; 1.0 for
/// a graph without edges (nothing crosses partitions).
///
/// # Panics
/// If `placement` does not have one entry per user.
pub fn edge_locality(graph: &SocialGraph, placement: &[u32]) -> f64 {
    assert_eq!(
        placement.len(),
        graph.users() as usize,
        "placement needs one partition per user"
    );
    if graph.edges() == 0 {
        return 1.0;
    }
    let local = graph
        .iter_edges()
        .filter(|&(a, b)| placement[a as usize] == placement[b as usize])
        .count();
    local as f64 / graph.edges() as f64
}

/// Number of users on each partition `0..partitions`.
///
/// # Panics
/// If a user is placed on a partition `>= partitions`.
pub fn partition_sizes(placement: &[u32], partitions: u32) -> Vec<u32> {
    let mut sizes = vec![0u32; partitions as usize];
    for &p in placement {
        assert!(p < partitions, "partition {p} outside 0..{partitions}");
        sizes[p as usize] += 1;
    }
    sizes
}

// ---------------------------------------------------------------------------------------------
// Edge lists
// ---------------------------------------------------------------------------------------------

/// What [`read_edge_list`] read and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Lines in the input, comments and blank lines included.
    pub lines: usize,
    /// Lines holding an edge (`edges() + self_loops + duplicates`).
    pub edge_lines: u64,
    /// Edge lines dropped because follower and followee are the same.
    pub self_loops: u64,
    /// Edge lines dropped because they repeat an earlier edge.
    pub duplicates: u64,
    ids: IdMapping,
}

impl LoadReport {
    /// The id user `u` had in the file.
    pub fn original_id(&self, u: u32) -> u64 {
        match &self.ids {
            IdMapping::Identity => u64::from(u),
            IdMapping::Remapped(original) => original[u as usize],
        }
    }

    /// Whether the file's ids are the user ids (the file had a `# users N edges M` header).
    pub fn identity_ids(&self) -> bool {
        self.ids == IdMapping::Identity
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IdMapping {
    Identity,
    /// Original id of every user, in order of first appearance.
    Remapped(Vec<u64>),
}

/// The `# users N edges M` header of [`write_edge_list`].
#[derive(Debug, Clone, Copy)]
struct Header {
    users: u32,
    edges: u64,
    line: usize,
}

/// Maps file ids to dense user ids.
enum IdMap {
    /// Header present: ids are already `0..users`.
    Declared(Header),
    /// No header: ids numbered by first appearance.
    FirstSeen {
        dense: HashMap<u64, u32>, // lookups only, never iterated
        original: Vec<u64>,
    },
}

impl IdMap {
    fn dense(&mut self, id: u64, line: usize) -> Result<u32, GraphError> {
        match self {
            IdMap::Declared(header) => {
                if id < u64::from(header.users) {
                    Ok(id as u32)
                } else {
                    Err(parse_error(
                        line,
                        format!(
                            "id {id} is outside 0..{} declared on line {}",
                            header.users, header.line
                        ),
                    ))
                }
            }
            IdMap::FirstSeen { dense, original } => {
                if let Some(&u) = dense.get(&id) {
                    return Ok(u);
                }
                let u = u32::try_from(original.len())
                    .ok()
                    .filter(|&u| u < u32::MAX)
                    .ok_or_else(|| parse_error(line, "more than 2^32 - 1 distinct ids"))?;
                dense.insert(id, u);
                original.push(id);
                Ok(u)
            }
        }
    }
}

/// Reads a SNAP-style edge list and computes its communities by label propagation.
///
/// Format, one edge per line: `follower followee`, two unsigned decimal integers (any `u64`)
/// separated by spaces or tabs. Further columns (SNAP files sometimes carry a weight or a
/// timestamp) are ignored. Blank lines and lines whose first non-blank character is `#` or
/// `%` are comments. Ids are renumbered densely in order of first appearance (the follower
/// before the followee), and every id that appears becomes a user, even one seen only in a
/// dropped self-loop. Self-loops and repeated edges are dropped and counted in the
/// [`LoadReport`] ([`SocialGraph::load_report`]).
///
/// If the first non-blank line is exactly `# users N edges M` (as [`write_edge_list`]
/// writes), ids are taken as they are: the graph has users `0..N` (isolated ones included),
/// an id `>= N` is an error, and so is a number of edge lines other than `M` (a truncated
/// file).
///
/// Communities: label propagation over the edges taken as undirected (a mutual follow counts
/// twice), every user starting with its own label; for at most
/// [`LABEL_PROPAGATION_ROUNDS`] rounds, users in ascending order each take the label most
/// frequent among their neighbours (ties: the smallest label; isolated users keep theirs).
/// Labels are then renumbered `0..c` in order of their smallest member.
///
/// Errors: [`GraphError::Parse`] (1-based line) for a line with fewer than two columns, an
/// id that is not an unsigned decimal integer (`-1`, `+1`, `x`) or does not fit `u64`;
/// [`GraphError::Io`] when reading fails; [`GraphError::Empty`] when no id appears.
pub fn read_edge_list(mut reader: impl BufRead) -> Result<SocialGraph, GraphError> {
    let mut ids: Option<IdMap> = None; // decided at the first non-blank line
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let mut lines = 0usize;
    let mut edge_lines = 0u64;
    let mut self_loops = 0u64;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            break;
        }
        lines += 1;
        let mut fields = buffer
            .split(|b| b.is_ascii_whitespace())
            .filter(|field| !field.is_empty());
        let Some(first) = fields.next() else {
            continue; // blank
        };
        let ids = ids.get_or_insert_with(|| match parse_header(&buffer, lines) {
            Some(header) => IdMap::Declared(header),
            None => IdMap::FirstSeen {
                dense: HashMap::new(),
                original: Vec::new(),
            },
        });
        if first[0] == b'#' || first[0] == b'%' {
            continue; // comment (or the header, handled above)
        }
        let Some(second) = fields.next() else {
            return Err(parse_error(
                lines,
                "expected `follower followee`, found a single field",
            ));
        };
        let follower = ids.dense(parse_id(first, lines)?, lines)?;
        let followee = ids.dense(parse_id(second, lines)?, lines)?;
        edge_lines += 1;
        if follower == followee {
            self_loops += 1;
        } else {
            pairs.push((follower, followee));
        }
    }

    let (users, mapping) = match ids {
        None => return Err(GraphError::Empty),
        Some(IdMap::Declared(header)) => {
            if header.edges != edge_lines {
                return Err(parse_error(
                    header.line,
                    format!(
                        "header declares {} edges but {edge_lines} edge lines follow",
                        header.edges
                    ),
                ));
            }
            (header.users, IdMapping::Identity)
        }
        Some(IdMap::FirstSeen { original, .. }) => {
            (original.len() as u32, IdMapping::Remapped(original))
        }
    };
    if users == 0 {
        return Err(GraphError::Empty);
    }
    pairs.sort_unstable();
    let before = pairs.len() as u64;
    pairs.dedup();
    let report = LoadReport {
        lines,
        edge_lines,
        self_loops,
        duplicates: before - pairs.len() as u64,
        ids: mapping,
    };
    let mut graph =
        SocialGraph::from_sorted_pairs(&pairs, vec![0; users as usize], 1, Some(report));
    let (community, communities) = label_propagation(&graph);
    graph.community = community;
    graph.communities = communities;
    Ok(graph)
}

/// `Some` when `line` is exactly `# users N edges M`.
fn parse_header(line: &[u8], line_number: usize) -> Option<Header> {
    let fields: Vec<&[u8]> = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|field| !field.is_empty())
        .collect();
    match fields[..] {
        [b"#", b"users", users, b"edges", edges] => Some(Header {
            users: u32::try_from(parse_decimal(users)?).ok()?,
            edges: parse_decimal(edges)?,
            line: line_number,
        }),
        _ => None,
    }
}

fn parse_id(field: &[u8], line: usize) -> Result<u64, GraphError> {
    parse_decimal(field).ok_or_else(|| {
        parse_error(
            line,
            format!(
                "`{}` is not an unsigned integer id below 2^64",
                String::from_utf8_lossy(field)
            ),
        )
    })
}

/// Digits only (no sign), fitting `u64`.
fn parse_decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |value, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        value.checked_mul(10)?.checked_add(digit)
    })
}

/// Communities by label propagation (see [`read_edge_list`]): labels dense in `0..c`, and c.
fn label_propagation(graph: &SocialGraph) -> (Vec<u32>, u32) {
    let users = graph.users() as usize;
    let mut label: Vec<u32> = (0..graph.users()).collect();
    let mut count = vec![0u32; users]; // per label, reset after each user
    let mut seen: Vec<u32> = Vec::new();
    for _ in 0..LABEL_PROPAGATION_ROUNDS {
        let mut changed = false;
        for u in 0..graph.users() {
            for &v in graph.followers(u).iter().chain(graph.followees(u)) {
                let l = label[v as usize];
                if count[l as usize] == 0 {
                    seen.push(l);
                }
                count[l as usize] += 1;
            }
            let best = seen
                .iter()
                .map(|&l| (Reverse(count[l as usize]), l))
                .min()
                .map(|(_, l)| l);
            for &l in &seen {
                count[l as usize] = 0;
            }
            seen.clear();
            if let Some(best) = best {
                if best != label[u as usize] {
                    label[u as usize] = best;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Renumber in order of first appearance by user id.
    let mut dense = vec![u32::MAX; users];
    let mut next = 0u32;
    for l in &mut label {
        if dense[*l as usize] == u32::MAX {
            dense[*l as usize] = next;
            next += 1;
        }
        *l = dense[*l as usize];
    }
    (label, next)
}

/// Writes `graph` as an edge list: a `# users N edges M` header, then `follower followee`
/// per line in [`SocialGraph::iter_edges`] order. [`read_edge_list`] reads it back with the
/// same ids and edges (communities are recomputed, not stored).
pub fn write_edge_list(graph: &SocialGraph, w: impl Write) -> std::io::Result<()> {
    let mut w = BufWriter::new(w);
    writeln!(w, "# users {} edges {}", graph.users(), graph.edges())?;
    for (follower, followee) in graph.iter_edges() {
        writeln!(w, "{follower} {followee}")?;
    }
    w.flush()
}

// ---------------------------------------------------------------------------------------------
// Degrees
// ---------------------------------------------------------------------------------------------

/// Distribution of one kind of degree over all users (percentiles by nearest rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DegreeStats {
    pub mean: f64,
    pub p50: u32,
    pub p99: u32,
    pub max: u32,
}

/// Follower and followee degree distributions of a graph, see [`degree_summary`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DegreeSummary {
    /// Followers per user (how many timelines a post reaches).
    pub followers: DegreeStats,
    /// Followees per user (how many users' posts a timeline merges).
    pub followees: DegreeStats,
}

impl fmt::Display for DegreeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mean {:.2} p50 {} p99 {} max {}",
            self.mean, self.p50, self.p99, self.max
        )
    }
}

impl fmt::Display for DegreeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "followers: {}; followees: {}",
            self.followers, self.followees
        )
    }
}

/// Mean, median, 99th percentile and maximum of follower and followee counts.
pub fn degree_summary(graph: &SocialGraph) -> DegreeSummary {
    let users = 0..graph.users();
    DegreeSummary {
        followers: degree_stats(users.clone().map(|u| graph.followers(u).len() as u32)),
        followees: degree_stats(users.map(|u| graph.followees(u).len() as u32)),
    }
}

fn degree_stats(degrees: impl Iterator<Item = u32>) -> DegreeStats {
    let mut degrees: Vec<u32> = degrees.collect();
    degrees.sort_unstable();
    let Some(&max) = degrees.last() else {
        return DegreeStats {
            mean: 0.0,
            p50: 0,
            p99: 0,
            max: 0,
        };
    };
    let sum: u64 = degrees.iter().map(|&d| u64::from(d)).sum();
    let nearest_rank = |q: f64| {
        let rank = (q * degrees.len() as f64).ceil() as usize;
        degrees[rank.clamp(1, degrees.len()) - 1]
    };
    DegreeStats {
        mean: sum as f64 / degrees.len() as f64,
        p50: nearest_rank(0.50),
        p99: nearest_rank(0.99),
        max,
    }
}

#[cfg(test)]
mod paper_tests {
    use super::*;

    /// The paper-sized graph generates in seconds in a release build (tests run with
    /// `--release`), within its memory (two `u32` adjacency arrays), deterministically.
    #[test]
    fn the_paper_sized_graph_has_the_papers_size_and_a_power_law() {
        let g = generate(&GraphSpec::paper(7)).unwrap();
        assert_eq!(g.users(), PAPER_USERS);
        let edges = g.edges();
        assert!((13_000_000..=15_000_000).contains(&edges), "{edges} edges");
        let max_followers = (0..g.users()).map(|u| g.followers(u).len()).max().unwrap();
        assert!(
            max_followers > 5_000,
            "most followed user has {max_followers}"
        );
        let placement = place_by_community(&g, 8, 1.0, 7).unwrap();
        assert!(edge_locality(&g, &placement) > 0.8);
        // Weak locality: a balanced placement keeps about 1/partitions of the edges.
        let w = generate(&GraphSpec::weak_locality(20_000, 20.0, 7)).unwrap();
        let p: Vec<u32> = (0..w.users()).map(|u| u % 8).collect();
        assert!(edge_locality(&w, &p) < 0.2);
    }
}

#[cfg(test)]
mod tests {
    //! Each test states the property of the model (module docs) it checks.

    use super::*;
    use proptest::prelude::*;

    fn spec(users: u32, communities: u32) -> GraphSpec {
        GraphSpec {
            users,
            communities,
            ..GraphSpec::default()
        }
    }

    fn edge_list(graph: &SocialGraph) -> Vec<(u32, u32)> {
        graph.iter_edges().collect()
    }

    /// The structural invariants of [`SocialGraph`], checked through the public API only.
    fn assert_well_formed(graph: &SocialGraph) {
        let users = graph.users();
        assert!(users >= 1);
        let (mut followee_sum, mut follower_sum) = (0u64, 0u64);
        for u in 0..users {
            let followees = graph.followees(u);
            let followers = graph.followers(u);
            assert!(
                followees.windows(2).all(|w| w[0] < w[1]),
                "followees of {u}"
            );
            assert!(
                followers.windows(2).all(|w| w[0] < w[1]),
                "followers of {u}"
            );
            assert!(
                !followees.contains(&u) && !followers.contains(&u),
                "loop on {u}"
            );
            for &v in followees {
                assert!(v < users);
                assert!(graph.followers(v).binary_search(&u).is_ok(), "{u}->{v}");
            }
            for &v in followers {
                assert!(v < users);
                assert!(graph.followees(v).binary_search(&u).is_ok(), "{v}->{u}");
            }
            followee_sum += followees.len() as u64;
            follower_sum += followers.len() as u64;
        }
        assert_eq!(followee_sum, graph.edges());
        assert_eq!(follower_sum, graph.edges());
        let edges = edge_list(graph);
        assert_eq!(edges.len() as u64, graph.edges());
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "edge order");
        let mut members = vec![0u32; graph.communities() as usize];
        for u in 0..users {
            members[graph.community(u) as usize] += 1;
        }
        assert!(members.iter().all(|&m| m > 0), "empty community");
    }

    /// Fraction of edges inside a community.
    fn community_locality(graph: &SocialGraph) -> f64 {
        edge_locality(graph, graph.community_labels())
    }

    fn community_sizes_of(graph: &SocialGraph) -> Vec<u32> {
        partition_sizes(graph.community_labels(), graph.communities())
    }

    // --- generation -------------------------------------------------------------------------

    #[test]
    fn same_seed_same_graph_other_seed_other_graph() {
        let a = generate(&spec(3_000, 30)).unwrap();
        let b = generate(&spec(3_000, 30)).unwrap();
        assert_eq!(edge_list(&a), edge_list(&b));
        assert_eq!(a.community_labels(), b.community_labels());
        let c = generate(&GraphSpec {
            seed: 43,
            ..spec(3_000, 30)
        })
        .unwrap();
        assert_ne!(edge_list(&a), edge_list(&c));
        assert_ne!(a.community_labels(), c.community_labels());
    }

    #[test]
    fn generated_graph_is_well_formed_with_the_requested_mean() {
        let spec = spec(20_000, 100);
        let graph = generate(&spec).unwrap();
        assert_well_formed(&graph);
        assert_eq!(graph.users(), 20_000);
        assert_eq!(graph.communities(), 100);
        let mean = graph.edges() as f64 / f64::from(graph.users());
        assert!(
            (mean - spec.mean_followees).abs() < 0.15 * spec.mean_followees,
            "mean followees {mean}"
        );
        // Geometric spread: some users follow nobody, some several times the mean.
        let summary = degree_summary(&graph);
        assert!(summary.followees.max > 3 * 20, "{summary}");
        assert!(
            (0..graph.users()).any(|u| graph.followees(u).is_empty()),
            "no user follows nobody"
        );
    }

    #[test]
    fn communities_are_non_empty_and_vary_a_little() {
        let graph = generate(&GraphSpec {
            mean_followees: 0.0,
            ..spec(20_000, 100)
        })
        .unwrap();
        let sizes = community_sizes_of(&graph);
        assert_eq!(sizes.iter().sum::<u32>(), 20_000);
        assert!(sizes.iter().all(|&s| (140..=260).contains(&s)), "{sizes:?}");
        assert!(sizes.iter().max() > sizes.iter().min(), "sizes do not vary");
        // Members are scattered over the ids, not contiguous ranges.
        let first = (0..100).filter(|&u| graph.community(u) == graph.community(0));
        assert!(first.count() < 20);
        // As many communities as users: all singletons.
        let singletons = generate(&GraphSpec {
            mean_followees: 0.0,
            ..spec(50, 50)
        })
        .unwrap();
        assert!(community_sizes_of(&singletons).iter().all(|&s| s == 1));
    }

    #[test]
    fn locality_knob_sets_the_fraction_of_in_community_edges() {
        let mut measured = Vec::new();
        for locality in [0.9, 0.2] {
            let graph = generate(&GraphSpec {
                locality,
                ..spec(20_000, 100)
            })
            .unwrap();
            // A global draw lands in the follower's community with probability ~ size / users.
            let n = f64::from(graph.users());
            let chance: f64 = community_sizes_of(&graph)
                .iter()
                .map(|&s| (f64::from(s) / n).powi(2))
                .sum();
            let expected = locality + (1.0 - locality) * chance;
            let fraction = community_locality(&graph);
            assert!(
                (fraction - expected).abs() < 0.05,
                "locality {locality}: {fraction} in-community, expected {expected}"
            );
            measured.push(fraction);
        }
        assert!(measured[0] > measured[1] + 0.5, "{measured:?}");
        let all_local = generate(&GraphSpec {
            locality: 1.0,
            ..spec(5_000, 50)
        })
        .unwrap();
        assert!(all_local.edges() > 0);
        assert_eq!(community_locality(&all_local), 1.0);
    }

    #[test]
    fn popularity_exponent_makes_follower_counts_heavy_tailed() {
        let skewed = degree_summary(&generate(&spec(10_000, 100)).unwrap()).followers;
        assert!(
            skewed.max as f64 > 10.0 * skewed.mean,
            "exponent 1: {skewed}"
        );
        assert!(skewed.p50 as f64 <= skewed.mean, "exponent 1: {skewed}");
        let uniform = degree_summary(
            &generate(&GraphSpec {
                popularity_exponent: 0.0,
                ..spec(10_000, 100)
            })
            .unwrap(),
        )
        .followers;
        assert!(
            (uniform.max as f64) < 4.0 * uniform.mean,
            "exponent 0: {uniform}"
        );
    }

    #[test]
    fn tiny_communities_give_fewer_followees_and_terminate() {
        // Every community is a single user: nobody can be followed locally.
        let lonely = generate(&GraphSpec {
            locality: 1.0,
            mean_followees: 50.0,
            ..spec(2_000, 2_000)
        })
        .unwrap();
        assert_eq!(lonely.edges(), 0);
        let single = generate(&GraphSpec {
            mean_followees: 0.5,
            ..spec(1, 1)
        })
        .unwrap();
        assert_eq!((single.users(), single.edges()), (1, 0));
        // Two users who each want many followees get at most one.
        let pair = generate(&GraphSpec {
            mean_followees: 1.9,
            ..spec(2, 1)
        })
        .unwrap();
        assert_well_formed(&pair);
        assert!(pair.edges() <= 2);
    }

    #[test]
    fn invalid_specs_are_typed_errors() {
        let good = GraphSpec::default();
        assert!(good.validate().is_ok());
        let cases = [
            ("users", GraphSpec { users: 0, ..good }),
            (
                "communities",
                GraphSpec {
                    communities: 0,
                    ..good
                },
            ),
            (
                "communities",
                GraphSpec {
                    users: 5,
                    communities: 6,
                    ..good
                },
            ),
            (
                "locality",
                GraphSpec {
                    locality: 1.5,
                    ..good
                },
            ),
            (
                "locality",
                GraphSpec {
                    locality: -0.1,
                    ..good
                },
            ),
            (
                "locality",
                GraphSpec {
                    locality: f64::NAN,
                    ..good
                },
            ),
            (
                "mean_followees",
                GraphSpec {
                    mean_followees: -1.0,
                    ..good
                },
            ),
            (
                "mean_followees",
                GraphSpec {
                    mean_followees: 10_000.0,
                    ..good
                },
            ),
            (
                "mean_followees",
                GraphSpec {
                    mean_followees: f64::NAN,
                    ..good
                },
            ),
            (
                "popularity_exponent",
                GraphSpec {
                    popularity_exponent: -0.5,
                    ..good
                },
            ),
            (
                "popularity_exponent",
                GraphSpec {
                    popularity_exponent: f64::INFINITY,
                    ..good
                },
            ),
        ];
        for (field, bad) in cases {
            match generate(&bad) {
                Err(GraphError::InvalidSpec { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{bad:?}: expected InvalidSpec({field}), got {other:?}"),
            }
        }
    }

    // --- placement --------------------------------------------------------------------------

    #[test]
    fn perfect_placement_keeps_communities_whole_and_balanced() {
        let graph = generate(&spec(20_000, 100)).unwrap();
        let partitions = 8;
        let placement = place_by_community(&graph, partitions, 1.0, 7).unwrap();
        let home = assign_communities(&graph, partitions).unwrap();
        for u in 0..graph.users() {
            assert_eq!(placement[u as usize], home[graph.community(u) as usize]);
        }
        let sizes = partition_sizes(&placement, partitions);
        let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
        assert!(
            f64::from(max) < 1.1 * f64::from(min),
            "unbalanced: {sizes:?}"
        );
        let perfect = edge_locality(&graph, &placement);
        let random = edge_locality(
            &graph,
            &place_by_community(&graph, partitions, 0.0, 7).unwrap(),
        );
        assert!(perfect > community_locality(&graph), "{perfect}");
        assert!(perfect > 0.85, "{perfect}");
        assert!((random - 1.0 / 8.0).abs() < 0.02, "{random}");
        let half = edge_locality(
            &graph,
            &place_by_community(&graph, partitions, 0.5, 7).unwrap(),
        );
        assert!(random < half && half < perfect, "{random} {half} {perfect}");
    }

    #[test]
    fn random_placement_is_uniform_and_seeded() {
        let graph = generate(&GraphSpec {
            mean_followees: 0.0,
            ..spec(8_000, 10)
        })
        .unwrap();
        let placement = place_by_community(&graph, 4, 0.0, 1).unwrap();
        for size in partition_sizes(&placement, 4) {
            assert!((1_850..=2_150).contains(&size), "{size}");
        }
        assert_eq!(placement, place_by_community(&graph, 4, 0.0, 1).unwrap());
        assert_ne!(placement, place_by_community(&graph, 4, 0.0, 2).unwrap());
    }

    #[test]
    fn communities_go_largest_first_to_the_least_loaded_partition() {
        // Communities of sizes 3, 2, 2, 1 on 2 partitions: 3 -> p0, 2 -> p1, 2 -> p1, 1 -> p0.
        let labels = vec![0, 0, 0, 1, 1, 2, 2, 3];
        let graph = SocialGraph::from_edges(8, [], labels).unwrap();
        assert_eq!(assign_communities(&graph, 2).unwrap(), vec![0, 1, 1, 0]);
        assert_eq!(assign_communities(&graph, 1).unwrap(), vec![0; 4]);
    }

    #[test]
    fn invalid_placement_arguments_are_typed_errors() {
        let graph = generate(&spec(100, 5)).unwrap();
        for (partitions, quality, field) in [
            (0, 1.0, "partitions"),
            (4, 1.1, "quality"),
            (4, -0.1, "quality"),
            (4, f64::NAN, "quality"),
        ] {
            match place_by_community(&graph, partitions, quality, 0) {
                Err(GraphError::InvalidPlacement { field: got, .. }) => assert_eq!(got, field),
                other => panic!("({partitions}, {quality}): got {other:?}"),
            }
        }
    }

    // --- edge lists -------------------------------------------------------------------------

    fn read(text: &str) -> Result<SocialGraph, GraphError> {
        read_edge_list(text.as_bytes())
    }

    fn parse_error_line(text: &str) -> usize {
        match read(text) {
            Err(GraphError::Parse { line, .. }) => line,
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn write_then_read_round_trips_ids_and_edges() {
        let graph = generate(&spec(2_000, 20)).unwrap();
        let mut text = Vec::new();
        write_edge_list(&graph, &mut text).unwrap();
        let back = read_edge_list(&text[..]).unwrap();
        assert_eq!(back.users(), graph.users());
        assert_eq!(edge_list(&back), edge_list(&graph));
        let report = back.load_report().unwrap();
        assert!(report.identity_ids());
        assert_eq!(report.original_id(1_234), 1_234);
        assert_eq!((report.self_loops, report.duplicates), (0, 0));
        assert_eq!(report.edge_lines, graph.edges());
        assert_well_formed(&back);
    }

    #[test]
    fn round_trip_keeps_isolated_users() {
        // User 3 follows nobody and nobody follows it; user 0 appears only as a followee.
        let graph = SocialGraph::from_edges(5, [(1, 0), (2, 4)], vec![0; 5]).unwrap();
        let mut text = Vec::new();
        write_edge_list(&graph, &mut text).unwrap();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            "# users 5 edges 2\n1 0\n2 4\n"
        );
        let back = read_edge_list(&text[..]).unwrap();
        assert_eq!(back.users(), 5);
        assert_eq!(edge_list(&back), vec![(1, 0), (2, 4)]);
    }

    #[test]
    fn reads_comments_blanks_tabs_extra_columns_and_sparse_ids() {
        let text = "# a SNAP comment\n% a Matrix Market comment\n\n1000000\t7\n\
                    7 1000000 0.5\n  3   1000000 \r\n7 7\n1000000 7\n";
        let graph = read(text).unwrap();
        // Dense ids in order of first appearance: 1000000 -> 0, 7 -> 1, 3 -> 2.
        assert_eq!(graph.users(), 3);
        let report = graph.load_report().unwrap();
        assert!(!report.identity_ids());
        let original: Vec<u64> = (0..3).map(|u| report.original_id(u)).collect();
        assert_eq!(original, vec![1_000_000, 7, 3]);
        assert_eq!(edge_list(&graph), vec![(0, 1), (1, 0), (2, 0)]);
        assert_eq!(report.lines, 8);
        assert_eq!(report.edge_lines, 5);
        assert_eq!(report.self_loops, 1);
        assert_eq!(report.duplicates, 1);
        assert_well_formed(&graph);
    }

    #[test]
    fn malformed_lines_are_parse_errors_with_their_line_number() {
        assert_eq!(parse_error_line("1 2\n1 x\n"), 2);
        assert_eq!(parse_error_line("# comment\n\n1\n"), 3);
        assert_eq!(parse_error_line("-1 2\n"), 1);
        assert_eq!(parse_error_line("1 2\n+1 2\n"), 2);
        assert_eq!(parse_error_line("18446744073709551616 1\n"), 1);
        assert_eq!(parse_error_line("1 2\n3 4\n5 0x6\n"), 3);
        // Extra columns are allowed (SNAP weights, timestamps).
        assert_eq!(read("1 2 3\n").unwrap().edges(), 1);
        assert_eq!(read("18446744073709551615 0\n").unwrap().edges(), 1);
        // Our header is a contract: ids below N, exactly M edge lines.
        assert_eq!(parse_error_line("# users 3 edges 2\n0 1\n"), 1);
        assert_eq!(parse_error_line("\n# users 2 edges 1\n0 5\n"), 3);
        // A header-like comment that is not first is only a comment.
        assert_eq!(read("5 9\n# users 1 edges 7\n").unwrap().users(), 2);
    }

    #[test]
    fn empty_input_and_io_failures_are_errors() {
        assert!(matches!(read(""), Err(GraphError::Empty)));
        assert!(matches!(read("# nothing\n\n"), Err(GraphError::Empty)));
        assert!(matches!(
            read("# users 0 edges 0\n"),
            Err(GraphError::Empty)
        ));
        // A file of self-loops still names users.
        let loops = read("4 4\n").unwrap();
        assert_eq!((loops.users(), loops.edges()), (1, 0));

        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let result = read_edge_list(std::io::BufReader::new(Failing));
        assert!(matches!(result, Err(GraphError::Io(_))), "{result:?}");
    }

    /// Every ordered pair of `ids` as edge-list lines.
    fn clique(ids: std::ops::Range<u64>) -> String {
        let mut text = String::new();
        for a in ids.clone() {
            for b in ids.clone() {
                if a != b {
                    text.push_str(&format!("{a} {b}\n"));
                }
            }
        }
        text
    }

    #[test]
    fn label_propagation_finds_two_cliques() {
        let text = format!("{}{}99 99\n", clique(10..16), clique(20..25));
        let graph = read(&text).unwrap();
        assert_eq!(graph.users(), 12);
        assert_eq!(graph.communities(), 3, "two cliques and an isolated user");
        assert!((0..6).all(|u| graph.community(u) == 0));
        assert!((6..11).all(|u| graph.community(u) == 1));
        assert_eq!(graph.community(11), 2);
        // One bridge edge does not merge them.
        let bridged = read(&format!("{}{}15 20\n", clique(10..16), clique(20..25))).unwrap();
        assert_eq!(bridged.communities(), 2);
        assert_eq!(community_locality(&bridged), 50.0 / 51.0);
    }

    #[test]
    fn from_edges_rejects_what_is_not_a_graph() {
        let ok = SocialGraph::from_edges(3, [(0, 1), (0, 1), (2, 1)], vec![0, 1, 0]).unwrap();
        assert_eq!(edge_list(&ok), vec![(0, 1), (2, 1)]);
        assert_eq!(ok.communities(), 2);
        for (users, edges, labels) in [
            (0, vec![], vec![]),
            (3, vec![(0, 0)], vec![0; 3]),
            (3, vec![(0, 3)], vec![0; 3]),
            (3, vec![], vec![0; 2]),
            (3, vec![], vec![0, 2, 2]),
        ] {
            let result = SocialGraph::from_edges(users, edges.clone(), labels);
            assert!(
                matches!(result, Err(GraphError::InvalidGraph(_))),
                "{users} {edges:?}: {result:?}"
            );
        }
    }

    #[test]
    fn degree_summary_of_a_star() {
        // Users 1..=4 follow user 0.
        let star = SocialGraph::from_edges(5, (1..5).map(|u| (u, 0)), vec![0; 5]).unwrap();
        let summary = degree_summary(&star);
        let followers = DegreeStats {
            mean: 0.8,
            p50: 0,
            p99: 4,
            max: 4,
        };
        let followees = DegreeStats {
            mean: 0.8,
            p50: 1,
            p99: 1,
            max: 1,
        };
        assert_eq!(
            summary,
            DegreeSummary {
                followers,
                followees
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any valid small spec yields a well-formed graph, the same one twice, and a
        /// placement of every user.
        #[test]
        fn small_specs_give_well_formed_graphs(
            users in 1u32..60,
            communities_raw in 0u32..60,
            mean_fraction in 0.0f64..1.0,
            locality in 0.0f64..=1.0,
            popularity_exponent in 0.0f64..3.0,
            seed in any::<u64>(),
            partitions in 1u32..6,
        ) {
            let spec = GraphSpec {
                users,
                communities: 1 + communities_raw % users,
                mean_followees: mean_fraction * f64::from(users - 1),
                locality,
                popularity_exponent,
                seed,
            };
            let graph = generate(&spec).unwrap();
            assert_well_formed(&graph);
            prop_assert_eq!(graph.users(), users);
            prop_assert_eq!(graph.communities(), spec.communities);
            prop_assert_eq!(edge_list(&graph), edge_list(&generate(&spec).unwrap()));
            let placement = place_by_community(&graph, partitions, locality, seed).unwrap();
            prop_assert_eq!(placement.len(), users as usize);
            prop_assert!(placement.iter().all(|&p| p < partitions));
            let mut text = Vec::new();
            write_edge_list(&graph, &mut text).unwrap();
            prop_assert_eq!(edge_list(&read_edge_list(&text[..]).unwrap()), edge_list(&graph));
        }
    }
}
