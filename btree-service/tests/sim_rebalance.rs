//! Goal: rebalancing (ranges split, moved between workers and striped while clients route by
//! stale range maps) keeps the replicated B+-tree linearizable and its replicas identical
//! under faults, in P-SMR and opt-PSMR, and state transfer carries the range map and the load
//! counters.
//!
//! Method, `rebalancing_under_faults_*`: 120 seeds (`CHORUS_SEEDS` changes the count), even
//! ones P-SMR, odd ones opt-PSMR. Each simulates 2 replicas of 2 to 4 workers, 3 acceptors and
//! 2 client nodes with 2 clients each, on a small tree (fan-out 4, 64-key space, 24 keys
//! pre-filled) under `sim_faults`' fault campaign (loss, duplication, reordering, crashes with
//! restarts, pauses, partitions). The keys are skewed: half of the commands go to the 8 lowest
//! keys, a fifth of them are inserts of increasing keys above the key space (one sequence
//! shared by the clients), so the load counters call for splits, moves and stripes; one
//! command in ten is a `Rebalance` with a randomly drawn policy. After healing: the history
//! must be linearizable, every replica must hold the same state (the hash covers the top, its
//! version and every load counter), every subtree must hold only keys of its range and stripe,
//! and clients must never have seen two replicas disagree. Over all seeds the rebalancer must
//! have moved, split and striped, and clients must have been refused as misrouted.
//!
//! `a_replica_recovers_*`: `engine/tests/recovery_sim.rs`' scenario with this tree and this
//! workload: 4 replicas (1-3 also acceptors), trimming on, checkpoints every few commands;
//! replica 4 is crashed or cut off until every log is trimmed past it, then restarts empty or
//! heals and must install a peer's checkpoint (range map and counters included) and end with
//! its peers' state hash.
//!
//! `CHORUS_SEED=n` replays one seed with its fault events.

use btree_service::model::TreeModel;
use btree_service::rebalance::RebalancePolicy;
use btree_service::service::{shard_problems, TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use engine::checkpoint::CheckpointPolicy;
use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, Campaign, EngineSim, SimSetup, Workload};
use groups::config::Tuning;
use groups::ids::{LogId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn config() -> TreeConfig {
    TreeConfig {
        fanout: 4,
        key_space: 64,
        prefill: 24,
        value_bytes: 2,
    }
}

fn exec() -> ExecOptions {
    ExecOptions {
        check_conflicts: false,
        state_hashes: true,
    }
}

/// Skewed keys, increasing inserts above the key space, rebalances.
fn workload() -> Workload<TreeCommand> {
    let next = Arc::new(AtomicU64::new(config().key_space));
    Arc::new(move |rng: &mut ChaCha8Rng, _| {
        let key_space = config().key_space;
        let k = if rng.random_bool(0.5) {
            rng.random_range(0..8)
        } else {
            rng.random_range(0..key_space)
        };
        let v = Bytes::from(vec![rng.random_range(0..=255u8)]);
        match rng.random_range(0..100) {
            0..25 => TreeCommand::Get(k),
            25..40 => TreeCommand::Insert(k, v),
            40..60 => TreeCommand::Insert(next.fetch_add(1, Ordering::Relaxed), v),
            60..70 => TreeCommand::Update(k, v),
            70..78 => TreeCommand::Delete(k),
            78..88 => TreeCommand::Scan {
                lo: k,
                hi: k + rng.random_range(0..80),
                limit: rng.random_range(1..12),
            },
            88..90 => TreeCommand::Size,
            _ => TreeCommand::Rebalance(RebalancePolicy {
                tolerance_pct: rng.random_range(0..30),
                ops_min: rng.random_range(1..12),
                actions_max: rng.random_range(1..5),
                stripe_keys: rng.random_range(1..4),
                subtrees_max: 48,
            }),
        }
    })
}

/// What the rebalances of a history did: moves, splits, stripes.
fn actions(history: &[engine::sim::Op<TreeCommand, TreeReply>]) -> [u64; 3] {
    let mut n = [0; 3];
    for op in history {
        if let Some((_, Ok(TreeReply::Rebalanced(r)))) = &op.ret {
            n[0] += u64::from(r.moves);
            n[1] += u64::from(r.splits);
            n[2] += u64::from(r.stripes);
        }
    }
    n
}

/// The checks every run ends with.
fn check(sim: &EngineSim<Psmr<TreeService>>, problems: &mut Vec<String>) {
    for (r, x) in sim.replicas() {
        problems.extend(shard_problems(r, &x.shards()));
    }
    problems
        .extend(sim.outcome_problems(&TreeModel::for_config(&config()), Budget::new(2_000_000)));
}

static TOTALS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

fn run_faults(seed: u64, verbose: bool) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(2..=4usize);
    let mode = if seed.is_multiple_of(2) {
        Mode::Psmr
    } else {
        Mode::OptPsmr
    };
    let tuning = Tuning {
        trim: false,
        ..Tuning::default()
    };
    let d = Deployment::new(2, 1, workers, 2, tuning).unwrap();
    let service = Arc::new(TreeService::new(config()));
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 40,
        workload: workload(),
        think_us: 15_000,
    };
    // Clients resend after 20 ms (the network's spikes reach 5 ms, pauses 400 ms), so late
    // copies of refused tries are common: a worker must refuse them again even where the range
    // has come back.
    let mut sim = EngineSim::new(Psmr::new(service, d, mode, exec(), 20), setup);
    let report = sim.campaign(seed, &Campaign::default());
    let history = sim.history();
    let [moves, splits, stripes] = actions(&history);
    let misroutes = sim.client_stats().misroutes;
    if verbose {
        eprintln!(
            "seed {seed}: {mode:?}, {workers} workers, {} ops, {moves} moves, {splits} splits, {stripes} stripes, {misroutes} misroutes, {:?}",
            history.len(),
            report.events
        );
    }
    for (t, x) in TOTALS.iter().zip([moves, splits, stripes, misroutes]) {
        t.fetch_add(x, Ordering::Relaxed);
    }
    let mut problems = Vec::new();
    if !report.quiet {
        problems.push("liveness: replicas did not converge after the faults stopped".to_string());
    }
    check(&sim, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{mode:?}, {workers} workers:\n  {}",
            problems.join("\n  ")
        ))
    }
}

#[test]
fn rebalancing_under_faults_stays_linearizable_in_psmr_and_opt_psmr() {
    groups::sim::seeds::campaign(
        "sim_rebalance",
        "cargo test --release -p btree-service --test sim_rebalance rebalancing_under_faults -- --nocapture",
        120,
        run_faults,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let [m, sp, st, mis] = TOTALS.each_ref().map(|t| t.load(Ordering::Relaxed));
        eprintln!("sim_rebalance: {m} moves, {sp} splits, {st} stripes, {mis} misrouted tries");
        assert!(
            m > 0 && sp > 0 && st > 0,
            "the rebalancer acted: {m} / {sp} / {st}"
        );
        assert!(mis > 0, "some clients routed by a stale map");
    }
}

fn run_recovery(seed: u64, verbose: bool) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(2..=3usize);
    let mode = if (seed / 2).is_multiple_of(2) {
        Mode::Psmr
    } else {
        Mode::OptPsmr
    };
    let tuning = Tuning {
        trim: true,
        trim_every_entries: 8,
        ..Tuning::default()
    };
    let d = Deployment::new(4, 1, workers, 2, tuning).map_err(|e| e.to_string())?;
    let logs: Vec<LogId> = d.config.logs.iter().map(|l| l.id).collect();
    let service = Arc::new(TreeService::new(config()));
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 80,
        workload: workload(),
        think_us: 5_000,
    };
    let mut blueprint = Psmr::new(service, d, mode, exec(), 100);
    blueprint.checkpoints = Some(CheckpointPolicy {
        every_commands: rng.random_range(5..=25),
        every_ticks: 100,
        resend_ticks: 50,
    });
    let mut sim = EngineSim::new(blueprint, setup);
    let victim = NodeId(4);
    let crash = seed.is_multiple_of(2);
    let crash_at = rng.random_range(60_000..=150_000);
    sim.run_until(crash_at);
    let held: Vec<(LogId, u64)> = {
        let (_, x) = sim
            .replicas()
            .find(|(r, _)| *r == victim)
            .ok_or("victim not up")?;
        logs.iter()
            .map(|&l| (l, x.node().feed_next(l).unwrap_or(0)))
            .collect()
    };
    let others: Vec<NodeId> = sim
        .roles()
        .config
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&n| n != victim)
        .collect();
    if crash {
        sim.crash(victim);
    } else {
        sim.sim.net.partition(&[victim], &others);
    }
    let mut t = crash_at;
    let trimmed_past = |sim: &EngineSim<Psmr<TreeService>>| {
        sim.replicas().filter(|(r, _)| r.0 <= 3).all(|(_, x)| {
            held.iter()
                .all(|&(l, next)| x.node().first_idx(l).is_some_and(|f| f > next))
        })
    };
    while !trimmed_past(&sim) {
        t += 10_000;
        if t > crash_at + 3_000_000 {
            return Err(format!(
                "logs not trimmed past the victim (held {held:?}) 3 s after the crash"
            ));
        }
        sim.run_until(t);
    }
    if crash {
        sim.restart(victim);
    } else {
        sim.sim.net.heal_all();
        sim.sim.reconnect_all();
    }
    let quiet = sim.run_until_quiet(30_000_000);
    let mut problems = Vec::new();
    if !quiet {
        problems.push("liveness: not quiet after the restart".to_string());
    }
    let installed = sim
        .replicas()
        .find(|(r, _)| *r == victim)
        .map(|(_, x)| x.checkpoint_stats().installed);
    if installed.is_none_or(|n| n == 0) {
        problems.push(format!(
            "the victim did not recover by state transfer: {installed:?}"
        ));
    }
    if sim.replicas().count() != 4 {
        problems.push("a replica is down at the end".into());
    }
    let history = sim.history();
    let [moves, splits, stripes] = actions(&history);
    let version = sim
        .replicas()
        .next()
        .and_then(|(_, x)| x.shards()[0].map(|s| s.top().version()));
    if verbose {
        eprintln!(
            "seed {seed}: {mode:?}, {workers} workers, victim {} at {crash_at} us, {} ops, {moves} moves, {splits} splits, {stripes} stripes, range map version {version:?}",
            if crash { "crashed" } else { "cut off" },
            history.len()
        );
    }
    check(&sim, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{mode:?}, {workers} workers:\n  {}",
            problems.join("\n  ")
        ))
    }
}

#[test]
fn a_replica_recovers_the_range_map_and_load_counters_by_state_transfer() {
    groups::sim::seeds::campaign(
        "sim_rebalance_recovery",
        "cargo test --release -p btree-service --test sim_rebalance a_replica_recovers -- --nocapture",
        24,
        run_recovery,
    );
}
