//! Goal: combined-mode deployments (S-SMR and DS-SMR partitions whose replicas each run 2 to
//! 4 workers, one per cell) stay linearizable under faults, moves and checkpoints; no object
//! is ever owned by two cells; the oracle and every worker agree on the worker's objects;
//! replicas of a partition end identical; a combined replica whose logs were trimmed past it
//! recovers by state transfer of every worker's part.
//!
//! Method: `combined_sim`, 100 seeds by default, even ones S-SMR and odd ones DS-SMR. Each
//! draws 1 to 3 partitions of 2 or 3 replicas running 2 to 4 workers, an oracle (DS-SMR),
//! 2 client nodes of 2 clients with drawn DS-SMR options (retry threshold, cache, moves on
//! cached locations, placement guesses), and a workload of gets, puts, transfers and sums
//! (across workers and partitions), bumps (`retry(gamma)`), creates and deletes on 16
//! preloaded keys out of 24. Every other seed checkpoints every few commands with trimming
//! on. The fault campaign (crashes and restarts, pauses, partitions, loss, duplication,
//! reordering) runs, then the run must get quiet; the linearizability checker, the replicas'
//! state hashes and `check_ownership` (views recorded at every move, create and delete, per
//! cell) judge it. `combined_recovery_sim`: 12 seeds of 2 partitions of 4 replicas x 2 or 3
//! workers; the 4th replica of a partition (no acceptor) is crashed or cut off until its
//! logs are trimmed past it, then must install a peer's checkpoint and end with its peers'
//! hash.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::ServerOptions;
use engine::sim::{checkpoint_every, faulty_network, verdict, EngineSim, SimSetup};
use engine::testing::scaleout::{
    drawn_client_options, scheme_for, workload, ObjectKv, ObjectKvModel,
};
use groups::ids::{LogId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PRELOAD: u64 = 16;
const KEYS: u64 = 24;

static MULTI: AtomicU64 = AtomicU64::new(0);
static MOVES: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicU64 = AtomicU64::new(0);
static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0c0b_14ed);
    let scheme = scheme_for(seed);
    let partitions = rng.random_range(1..=3u32);
    let workers = rng.random_range(2..=4u32);
    let replicas = rng.random_range(2..=3usize);
    let checkpoints = (seed / 2).is_multiple_of(2);
    // A third of the seeds batch every node's submissions per tick (the benchmark's clients).
    let submit_delay_ticks = u32::from(seed.is_multiple_of(3));
    let tuning = groups::config::Tuning {
        trim: checkpoints,
        trim_every_entries: 8,
        submit_delay_ticks,
        ..layout::tuning()
    };
    let layout =
        ScaleOutLayout::combined(scheme, partitions, workers, replicas, 1, 2, tuning).unwrap();
    let cells = layout.partitions;
    let service = Arc::new(ObjectKv { preload: PRELOAD });
    let client = drawn_client_options(scheme, cells, seed, &mut rng);
    let server = ServerOptions {
        record_views: true,
        ..ServerOptions::new(scheme)
    };
    let setup = SimSetup::two_by_two(seed, faulty_network(&mut rng), 25, 20_000, workload(KEYS));
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    if checkpoints {
        blueprint.checkpoints = Some(checkpoint_every(rng.random_range(5..=20)));
    }
    let mut sim = EngineSim::new(blueprint, setup);
    let label = format!(
        "{scheme:?}, {partitions} partitions x {replicas} replicas x {workers} workers, checkpoints {checkpoints}, submit delay {submit_delay_ticks} ticks, retry_max {}, cache {}",
        client.retry_max, client.cache
    );
    let (report, mut problems) = sim.default_campaign(seed, verbose, &label);
    if !report.quiet && verbose {
        for (id, r) in sim.replicas() {
            eprintln!("  {id}: backlog {} handled {}", r.backlog(), r.handled());
            if let Some(c) = r.combined() {
                for w in c.workers().unwrap_or_default() {
                    eprintln!(
                        "    cell {}: head {:?} waits {:?}",
                        w.partition(),
                        w.head(),
                        w.waiting_on()
                    );
                }
            }
        }
    }
    problems.extend(check_ownership(&sim));
    let refused: u64 = sim
        .replicas()
        .map(|(_, r)| r.checkpoint_stats().refused)
        .sum();
    if refused > 0 {
        problems.push(format!("{refused} checkpoints refused"));
    }
    let taken: u64 = sim
        .replicas()
        .map(|(_, r)| r.checkpoint_stats().taken)
        .sum();
    let installed: u64 = sim
        .replicas()
        .map(|(_, r)| r.checkpoint_stats().installed)
        .sum();
    let stats = sim.client_stats();
    let history = sim.history();
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    let mut multi = 0;
    for (_, r) in sim.replicas() {
        if let Some(c) = r.combined() {
            multi += c.stats().multi;
        } else if r.partition().is_some() {
            return Err("a partition replica runs no workers".into());
        }
    }
    MULTI.fetch_add(multi, Ordering::Relaxed);
    MOVES.fetch_add(stats.moves, Ordering::Relaxed);
    CHECKPOINTS.fetch_add(taken, Ordering::Relaxed);
    INSTALLED.fetch_add(installed, Ordering::Relaxed);
    verdict(
        problems,
        || label.clone(),
        || {
            format!("{} ops, {multi} multi-cell executions, {taken} checkpoints, {installed} installed, {stats:?}", history.len())
        },
    )
}

#[test]
fn combined_key_value_histories_are_linearizable_under_faults() {
    groups::sim::seeds::campaign(
        "combined_sim",
        "cargo test --release -p engine --test combined_sim -- --nocapture",
        100,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let (multi, moves) = (MULTI.load(Ordering::Relaxed), MOVES.load(Ordering::Relaxed));
        let (taken, installed) = (
            CHECKPOINTS.load(Ordering::Relaxed),
            INSTALLED.load(Ordering::Relaxed),
        );
        eprintln!("combined_sim: {multi} multi-cell executions, {moves} moves, {taken} checkpoints taken, {installed} installed");
        assert!(multi > 0, "commands of several workers ran");
        assert!(moves > 0, "DS-SMR seeds moved objects between cells");
        assert!(taken > 0, "combined replicas took checkpoints");
    }
}

fn run_recovery(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7e57);
    let scheme = scheme_for(seed);
    let workers = rng.random_range(2..=3u32);
    let tuning = groups::config::Tuning {
        trim: true,
        trim_every_entries: 8,
        ..layout::tuning()
    };
    let layout = ScaleOutLayout::combined(scheme, 2, workers, 4, 1, 2, tuning).unwrap();
    let victim = layout.partition_replicas[rng.random_range(0..2usize)][3];
    let victim_logs: Vec<LogId> = layout.config.logs_for(
        &layout
            .config
            .node(victim)
            .ok_or("victim not configured")?
            .subscriptions[0],
    );
    if layout
        .config
        .logs
        .iter()
        .any(|l| l.acceptors.contains(&victim))
    {
        return Err(format!("victim {victim} is an acceptor"));
    }
    let service = Arc::new(ObjectKv { preload: PRELOAD });
    let client = drawn_client_options(scheme, layout.partitions, seed, &mut rng);
    let server = ServerOptions {
        record_views: true,
        ..ServerOptions::new(scheme)
    };
    let setup = SimSetup::two_by_two(seed, faulty_network(&mut rng), 70, 5_000, workload(KEYS));
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    blueprint.checkpoints = Some(checkpoint_every(rng.random_range(5..=20)));
    let mut sim = EngineSim::new(blueprint, setup);
    let crash = (seed / 2).is_multiple_of(2);
    let crash_at = rng.random_range(60_000..=150_000);
    let label = format!("seed {seed}: {scheme:?}, 2 partitions x 4 x {workers} workers");
    sim.isolate_until_trimmed(
        victim,
        &victim_logs,
        crash,
        crash_at,
        3_000_000,
        verbose,
        &label,
    )
    .map_err(|e| format!("{scheme:?}: {e}"))?;
    let mut problems = sim.rejoin(victim, crash, 30_000_000);
    let (recovery, victim_stats) = sim.recovery_problems(victim);
    problems.extend(recovery);
    let stats: Vec<(NodeId, _)> = sim
        .replicas()
        .map(|(r, x)| (r, x.checkpoint_stats()))
        .collect();
    if stats.iter().any(|(_, s)| s.refused > 0) {
        problems.push(format!("a checkpoint was refused: {stats:?}"));
    }
    problems.extend(check_ownership(&sim));
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    verdict(
        problems,
        || label.clone(),
        || {
            format!(
                "{} ops, victim {victim} installed round {} ({} bytes)",
                sim.history().len(),
                victim_stats.round,
                victim_stats.bytes
            )
        },
    )
}

#[test]
fn a_combined_replica_behind_the_trimmed_logs_recovers_by_state_transfer() {
    groups::sim::seeds::campaign(
        "combined_recovery_sim",
        "cargo test --release -p engine --test combined_sim a_combined_replica -- --nocapture",
        12,
        run_recovery,
    );
}
