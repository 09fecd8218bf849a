//! Goal: a partition or oracle replica that lost its state (or fell behind) and finds its
//! logs trimmed past it recovers by state transfer and ends identical to its peers; the
//! history stays linearizable and single ownership holds.
//!
//! Method: for each seed, a simulated S-SMR (even seeds) or DS-SMR (odd seeds) deployment of
//! 2 or 3 partitions of 4 replicas (plus an oracle of 4 in DS-SMR), logs tolerating one
//! crashed acceptor (so every group's 4th replica is no acceptor of any log), 2 client nodes
//! of 2 clients, a lossy, duplicating, reordering network, trimming on and every replica
//! asking for a checkpoint every few commands. The victim, the 4th replica of a partition
//! (or, in every other DS-SMR seed, of the oracle), is crashed or cut off from everyone while
//! the clients keep loading, until every acceptor of its logs trimmed them past what it had
//! received. Then it restarts empty, or the network heals and it finds its logs trimmed while
//! its state is old: either way it must fetch a checkpoint from a peer, install it, catch up
//! from the log suffix (pulling the exchanges it misses), and end with its peers' state hash.
//! Every replica must hold a checkpoint, `check_ownership` must pass (with views recorded at
//! every move, create and delete: the restored views included), and the history must be
//! linearizable.
//!
//! A second test runs `scaleout_sim`'s fault campaign (crashes and restarts of replicas,
//! oracle replicas and acceptors, pauses, partitions) on deployments of 2 to 4 replicas per
//! group with checkpoints and trimming on: restarted replicas recover by replay or by
//! transfer, whichever the trimmed logs allow, and the same checks must pass.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ClientOptions;
use engine::partitioned::{Scheme, ServerOptions};
use engine::sim::{checkpoint_every, faulty_network, verdict, Campaign, EngineSim, SimSetup};
use engine::testing::scaleout::{
    drawn_client_options, scheme_for, workload, ObjectKv, ObjectKvModel,
};
use groups::ids::{LogId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

const PRELOAD: u64 = 16;
const KEYS: u64 = 24;

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scheme = scheme_for(seed);
    let partitions = rng.random_range(2..=3u32);
    let tuning = groups::config::Tuning {
        trim: true,
        trim_every_entries: 8,
        ..layout::tuning()
    };
    let layout = ScaleOutLayout::new(scheme, partitions, 4, 1, 2, tuning).unwrap();
    let oracle_victim = scheme == Scheme::Dssmr && (seed / 2).is_multiple_of(2);
    let victim = if oracle_victim {
        layout.oracle_replicas[3]
    } else {
        layout.partition_replicas[rng.random_range(0..partitions as usize)][3]
    };
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
    let client = drawn_client_options(scheme, partitions, seed, &mut rng);
    let server = ServerOptions {
        record_views: true,
        ..ServerOptions::new(scheme)
    };
    let net = faulty_network(&mut rng);
    let setup = SimSetup::two_by_two(seed, net, 70, 5_000, workload(KEYS));
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    blueprint.checkpoints = Some(checkpoint_every(rng.random_range(5..=20)));
    let mut sim = EngineSim::new(blueprint, setup);
    let crash = (seed / 4).is_multiple_of(2);
    let crash_at = rng.random_range(60_000..=150_000);
    // Keep loading until every acceptor of the victim's logs trimmed them past what it held.
    let label = format!("seed {seed}: {scheme:?}, {partitions} partitions x 4");
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
    if verbose && !problems.is_empty() {
        for (id, r) in sim.replicas() {
            eprintln!(
                "  {id}: backlog {} handled {} recovering {} head {:?}",
                r.backlog(),
                r.handled(),
                r.recovering(),
                r.partition().and_then(|p| p.head())
            );
        }
    }
    let stats: Vec<(NodeId, _)> = sim
        .replicas()
        .map(|(r, x)| (r, x.checkpoint_stats()))
        .collect();
    if verbose {
        for (r, s) in &stats {
            eprintln!("  {r}: {s:?}");
        }
    }
    let (recovery, victim_stats) = sim.recovery_problems(victim);
    problems.extend(recovery);
    if stats.iter().any(|(_, s)| s.refused > 0) {
        problems.push(format!("a checkpoint was refused: {stats:?}"));
    }
    problems.extend(check_ownership(&sim));
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    verdict(
        problems,
        || {
            let what = if crash { "crashed" } else { "cut off" };
            format!("{scheme:?}, {partitions} partitions x 4, victim {victim} {what}")
        },
        || {
            format!(
                "{scheme:?}, {} ops, victim {victim} installed round {} ({} bytes)",
                sim.history().len(),
                victim_stats.round,
                victim_stats.bytes
            )
        },
    )
}

#[test]
fn a_partition_or_oracle_replica_behind_the_trimmed_logs_recovers_by_state_transfer() {
    groups::sim::seeds::campaign(
        "scaleout_recovery_sim",
        "cargo test --release -p engine --test scaleout_recovery_sim -- --nocapture",
        40,
        run,
    );
}

/// `scaleout_sim`'s fault campaign with checkpoints and trimming on.
fn run_campaign(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee);
    let scheme = scheme_for(seed);
    let partitions = rng.random_range(2..=3u32);
    let replicas = rng.random_range(2..=4usize);
    let tuning = groups::config::Tuning {
        trim: true,
        trim_every_entries: 8,
        ..layout::tuning()
    };
    let layout = ScaleOutLayout::new(scheme, partitions, replicas, 1, 2, tuning).unwrap();
    let service = Arc::new(ObjectKv { preload: PRELOAD });
    let mut client = ClientOptions::new(scheme, partitions);
    client.retry_max = rng.random_range(1..=4);
    client.cache = rng.random_bool(0.7);
    client.resend_ticks = 100;
    client.seed = seed;
    let server = ServerOptions {
        record_views: true,
        ..ServerOptions::new(scheme)
    };
    let net = faulty_network(&mut rng);
    let setup = SimSetup::two_by_two(seed, net, 40, 10_000, workload(KEYS));
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    blueprint.checkpoints = Some(checkpoint_every(rng.random_range(5..=20)));
    let mut sim = EngineSim::new(blueprint, setup);
    let report = sim.campaign(seed, &Campaign::default());
    let stats: Vec<(NodeId, _)> = sim
        .replicas()
        .map(|(r, x)| (r, x.checkpoint_stats()))
        .collect();
    if verbose {
        eprintln!(
            "seed {seed}: {scheme:?}, {partitions} partitions x {replicas}, {:?}",
            report.events
        );
        for (r, s) in &stats {
            eprintln!("  {r}: {s:?}");
        }
    }
    let mut problems = Vec::new();
    if !report.quiet {
        problems.push("liveness: not quiet after the faults stopped".to_string());
    }
    if stats.iter().any(|(_, s)| s.refused > 0) {
        problems.push(format!("a checkpoint was refused: {stats:?}"));
    }
    problems.extend(check_ownership(&sim));
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    let installed: u64 = stats.iter().map(|(_, s)| s.installed).sum();
    verdict(
        problems,
        || format!("{scheme:?}, {partitions} partitions x {replicas}"),
        || {
            format!(
                "{scheme:?}, {} ops, {} crashes, {installed} checkpoints installed",
                sim.history().len(),
                report.crashes
            )
        },
    )
}

#[test]
fn scaleout_replicas_with_checkpoints_and_trimming_survive_a_fault_campaign() {
    groups::sim::seeds::campaign(
        "scaleout_recovery_campaign",
        "cargo test --release -p engine --test scaleout_recovery_sim scaleout_replicas_with_checkpoints -- --nocapture",
        24,
        run_campaign,
    );
}
