//! The rebalancer's decision: which subtrees to split, move between workers or stripe.
//!
//! A pure function of the load counters every replica keeps in its replicated shards (what
//! the commands executed so far touched, counted by the workers that executed them), the top
//! and the policy carried by the `Rebalance` command, so every replica computes the same plan
//! at the same point of the stream. The service applies it inside that command, which runs
//! on every worker's shard at once ([`crate::service`]).
//!
//! Appends (inserts above the largest key a subtree held at the previous round) recur only at the subtree that takes the
//! next ones, one whose range goes on above its last key; elsewhere they are history and do
//! not count. The plan, greedily, at most `actions_max` steps, while the busiest worker carries more
//! than `tolerance_pct` percent above the mean:
//!
//! 1. If the busiest worker's hottest subtree takes *appends* for at least half of its
//!    commands (inserts above the keys it held: keys arriving in increasing order) and can
//!    take more (its range goes on above its last key), **stripe** the keys from its last key
//!    up: they become a striped range whose consecutive keys alternate between all workers.
//!    Moving or splitting it would only move the hot end elsewhere.
//! 2. Else **move** the busiest worker's subtree whose load is closest to half the gap between
//!    it and the least busy worker (any subtree lighter than the gap strictly narrows it).
//! 3. If every subtree of the busiest worker is heavier than the gap, **split** its hottest
//!    one at the median of the keys it was recently asked for (a sample of its commands), so
//!    its halves carry about half the load each and one can move in the next step.
//!
//! Owners are worker indexes; with partitions (the combined mode, not built) an owner would
//! be a (partition, worker) pair and a move between partitions a DS-SMR-style move of a
//! subtree: the decision itself would not change.

use serde::{Deserialize, Serialize};
use std::cmp::Reverse;

/// How the rebalancer decides (carried by every `Rebalance` command, so replicas agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RebalancePolicy {
    /// Act only while the busiest worker carries more than this much above the mean, in
    /// percent of the mean.
    pub tolerance_pct: u32,
    /// Act only on at least this many counted commands (counters halve after every round
    /// that looked at them, so they weigh recent load most).
    pub ops_min: u64,
    /// Splits, moves and stripes per round at most.
    pub actions_max: u32,
    /// Keys per stripe of a striped range (1: consecutive keys alternate).
    pub stripe_keys: u64,
    /// No split or stripe once the top holds this many subtrees.
    pub subtrees_max: u32,
}

impl Default for RebalancePolicy {
    fn default() -> Self {
        RebalancePolicy {
            tolerance_pct: 10,
            ops_min: 2000,
            actions_max: 4,
            stripe_keys: 1,
            subtrees_max: 1024,
        }
    }
}

/// What the counters say about one subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartLoad {
    pub id: u64,
    pub owner: usize,
    /// A part of a striped range (never split or striped again).
    pub striped: bool,
    /// Commands counted (decayed).
    pub ops: u64,
    /// Of them, inserts above the subtree's largest key at the previous round.
    pub appends: u64,
    /// Where to split it, and the estimated load at or above that key.
    pub split: Option<(u64, u64)>,
    /// Where its appends land: the key above its last one, if still inside its range.
    pub append_at: Option<u64>,
}

/// One step of a plan. Ids of new subtrees are chosen by the planner (from the top's next
/// id), so applying a plan is deterministic too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Plain subtree `id` keeps its keys below `at`; new subtree `upper`, same owner, takes
    /// the rest of its range.
    Split { id: u64, at: u64, upper: u64 },
    /// Subtree `id` changes owner.
    Move { id: u64, to: usize },
    /// Plain subtree `id` keeps its keys below `at` (none if `at` is its range's low); the
    /// rest of its range becomes striped: part `i` of `parts` holds the keys `k` with
    /// `(k / stripe_keys) % parts.len() == i`.
    Stripe {
        id: u64,
        at: u64,
        stripe_keys: u64,
        parts: Vec<(u64, usize)>,
    },
}

impl Action {
    /// Whether the step changes who owns some keys (clients' routes go stale).
    pub fn moves_keys(&self) -> bool {
        !matches!(self, Action::Split { .. })
    }
}

/// The load a part will see again: appends recur only where the next ones land (a part
/// whose range goes on above its last key); a part that took appends before it was split or
/// striped keeps only the rest.
fn expected(p: &PartLoad) -> PartLoad {
    let mut p = p.clone();
    if p.append_at.is_none() {
        p.ops -= p.appends.min(p.ops);
        p.appends = 0;
    }
    p
}

/// The load of each of `workers` workers, as the plan sees it.
pub fn worker_loads(parts: &[PartLoad], workers: usize) -> Vec<u64> {
    let mut load = vec![0u64; workers];
    for p in parts {
        if let Some(l) = load.get_mut(p.owner) {
            *l += expected(p).ops;
        }
    }
    load
}

/// The plan for `parts` (every subtree of the top) over `workers` workers; `next_id` is the
/// top's next subtree id, `subtrees` how many it holds.
pub fn plan(
    parts: &[PartLoad],
    workers: usize,
    next_id: u64,
    policy: &RebalancePolicy,
) -> Vec<Action> {
    let mut parts: Vec<PartLoad> = parts.iter().map(expected).collect();
    let mut load = worker_loads(&parts, workers);
    let total: u64 = load.iter().sum();
    let mut actions = Vec::new();
    if workers < 2 || total < policy.ops_min.max(1) {
        return actions;
    }
    let k = workers as u64;
    let mut next = next_id;
    let mut subtrees = parts.len() as u64;
    let room = |subtrees: u64, more: u64| subtrees + more <= u64::from(policy.subtrees_max);
    for _ in 0..policy.actions_max {
        let hot = (0..workers)
            .max_by_key(|&w| (load[w], Reverse(w)))
            .expect("workers");
        let cold = (0..workers).min_by_key(|&w| (load[w], w)).expect("workers");
        let balanced = u128::from(load[hot]) * 100 * u128::from(k)
            <= u128::from(total) * (100 + u128::from(policy.tolerance_pct));
        if balanced {
            break;
        }
        let gap = load[hot] - load[cold];
        let hottest = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.owner == hot && !p.striped)
            .max_by_key(|(_, p)| (p.ops, Reverse(p.id)))
            .map(|(i, p)| (i, p.clone()));
        // Appends first: moving the subtree that takes them would only move the hot end.
        if let Some((i, p, at)) = hottest.clone().and_then(|(i, p)| {
            let at = p.append_at?;
            (2 * p.appends >= p.ops && room(subtrees, k)).then_some((i, p, at))
        }) {
            let new: Vec<(u64, usize)> = (0..workers).map(|w| (next + w as u64, w)).collect();
            next += k;
            subtrees += k;
            actions.push(Action::Stripe {
                id: p.id,
                at,
                stripe_keys: policy.stripe_keys.max(1),
                parts: new.clone(),
            });
            // The appends' load spreads over the parts; the rest stays where it was.
            let spread = p.appends;
            parts[i].ops -= spread;
            parts[i].appends = 0;
            parts[i].append_at = None;
            load[hot] -= spread;
            for (id, w) in new {
                parts.push(PartLoad {
                    id,
                    owner: w,
                    striped: true,
                    ops: spread / k,
                    appends: 0,
                    split: None,
                    append_at: None,
                });
                load[w] += spread / k;
            }
            continue;
        }
        let movable = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.owner == hot && p.ops > 0 && p.ops < gap)
            .min_by_key(|(_, p)| ((2 * p.ops).abs_diff(gap), p.id))
            .map(|(i, _)| i);
        if let Some(j) = movable {
            let p = &mut parts[j];
            actions.push(Action::Move { id: p.id, to: cold });
            load[hot] -= p.ops;
            load[cold] += p.ops;
            p.owner = cold;
            continue;
        }
        let Some((i, p)) = hottest else {
            break;
        };
        if let (Some((at, upper_ops)), true) = (p.split, room(subtrees, 1)) {
            let upper = next;
            next += 1;
            subtrees += 1;
            actions.push(Action::Split {
                id: p.id,
                at,
                upper,
            });
            let upper_ops = upper_ops.min(p.ops);
            parts[i].ops -= upper_ops;
            parts[i].split = None;
            parts[i].appends = 0;
            parts[i].append_at = None;
            parts.push(PartLoad {
                id: upper,
                owner: hot,
                striped: false,
                ops: upper_ops,
                appends: p.appends.min(upper_ops),
                split: None,
                append_at: p.append_at,
            });
            continue;
        }
        break;
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: u64, owner: usize, ops: u64) -> PartLoad {
        PartLoad {
            id,
            owner,
            striped: false,
            ops,
            appends: 0,
            split: None,
            append_at: None,
        }
    }

    fn policy() -> RebalancePolicy {
        RebalancePolicy {
            ops_min: 100,
            ..RebalancePolicy::default()
        }
    }

    #[test]
    fn balanced_or_quiet_load_changes_nothing() {
        let balanced = [part(0, 0, 1000), part(1, 1, 1050)];
        assert!(plan(&balanced, 2, 2, &policy()).is_empty());
        let quiet = [part(0, 0, 90), part(1, 1, 0)];
        assert!(plan(&quiet, 2, 2, &policy()).is_empty(), "below ops_min");
        assert!(plan(&[part(0, 0, 5000)], 1, 1, &policy()).is_empty());
    }

    #[test]
    fn the_subtree_closest_to_half_the_gap_moves() {
        let parts = [
            part(0, 0, 400),
            part(1, 0, 300),
            part(2, 0, 100),
            part(3, 1, 200),
        ];
        // Loads 800 / 200: gap 600, the best move carries 300.
        let p = plan(&parts, 2, 4, &policy());
        assert_eq!(p[0], Action::Move { id: 1, to: 1 });
        assert_eq!(p.len(), 1, "then balanced (500 / 500): {p:?}");
    }

    #[test]
    fn a_subtree_hotter_than_the_gap_is_split_then_half_moves() {
        let mut hot = part(0, 0, 1000);
        hot.split = Some((5000, 500));
        let p = plan(&[hot, part(1, 1, 10)], 2, 2, &policy());
        assert_eq!(
            p,
            vec![
                Action::Split {
                    id: 0,
                    at: 5000,
                    upper: 2
                },
                Action::Move { id: 0, to: 1 }
            ]
        );
    }

    #[test]
    fn appends_at_the_end_are_striped_not_moved() {
        let mut tail = part(1, 1, 1000);
        tail.appends = 800;
        tail.append_at = Some(70_001);
        tail.split = Some((69_000, 600));
        let p = plan(&[part(0, 0, 200), tail], 2, 2, &policy());
        assert_eq!(
            p[0],
            Action::Stripe {
                id: 1,
                at: 70_001,
                stripe_keys: 1,
                parts: vec![(2, 0), (3, 1)]
            }
        );
        assert!(
            p.iter().all(|a| !matches!(a, Action::Split { .. })),
            "{p:?}"
        );
    }

    #[test]
    fn plans_are_deterministic_and_bounded() {
        let parts: Vec<PartLoad> = (0..40)
            .map(|i| {
                let mut p = part(i, (i % 3) as usize, (i * 37) % 500 + 1);
                p.split = Some((i * 1000 + 500, p.ops / 2));
                p
            })
            .collect();
        let a = plan(&parts, 3, 40, &policy());
        assert_eq!(a, plan(&parts, 3, 40, &policy()));
        assert!(a.len() <= policy().actions_max as usize);
        let capped = RebalancePolicy {
            subtrees_max: 40,
            ..policy()
        };
        assert!(plan(&parts, 3, 40, &capped)
            .iter()
            .all(|a| matches!(a, Action::Move { .. })));
    }
}
