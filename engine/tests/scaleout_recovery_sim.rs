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

use engine::checkpoint::CheckpointPolicy;
use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ClientOptions;
use engine::partitioned::{Scheme, ServerOptions};
use engine::sim::{faulty_network, Campaign, EngineSim, SimSetup};
use engine::testing::scaleout::{drawn_client_options, workload, ObjectKv, ObjectKvModel};
use groups::ids::{LogId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

const PRELOAD: u64 = 16;
const KEYS: u64 = 24;

type Sim = EngineSim<ScaleOut<ObjectKv>>;

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scheme = if seed.is_multiple_of(2) {
        Scheme::Ssmr
    } else {
        Scheme::Dssmr
    };
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
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 70,
        workload: workload(KEYS),
        think_us: 5_000,
    };
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    blueprint.checkpoints = Some(CheckpointPolicy {
        every_commands: rng.random_range(5..=20),
        every_ticks: 100,
        resend_ticks: 50,
    });
    let mut sim = EngineSim::new(blueprint, setup);
    let crash = (seed / 4).is_multiple_of(2);
    let crash_at = rng.random_range(60_000..=150_000);
    sim.run_until(crash_at);
    let held: Vec<(LogId, u64)> = {
        let (_, x) = sim
            .replicas()
            .find(|(r, _)| *r == victim)
            .ok_or("victim not up")?;
        victim_logs
            .iter()
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
    // Keep loading until every acceptor of the victim's logs trimmed them past what it held.
    let trimmed_past = |sim: &Sim| {
        held.iter().all(|&(l, next)| {
            let acceptors = &sim.roles().config.log(l).expect("a log").acceptors;
            sim.replicas()
                .filter(|(r, _)| acceptors.contains(r))
                .all(|(_, x)| x.node().first_idx(l).is_some_and(|f| f > next))
        })
    };
    let mut t = crash_at;
    while !trimmed_past(&sim) {
        t += 10_000;
        if t > crash_at + 3_000_000 {
            let firsts: Vec<_> = sim
                .replicas()
                .map(|(r, x)| {
                    (
                        r,
                        victim_logs
                            .iter()
                            .map(|&l| x.node().first_idx(l))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            if verbose {
                for (r, x) in sim.replicas() {
                    eprintln!("{r}: {:?}\n{}", x.checkpoint_stats(), x.node().describe());
                }
            }
            return Err(format!(
                "{scheme:?}: logs not trimmed past the victim {victim} (held {held:?}) 3 s after the crash: first indexes {firsts:?}"
            ));
        }
        sim.run_until(t);
    }
    if verbose {
        let what = if crash { "crashed" } else { "cut off" };
        eprintln!("seed {seed}: {scheme:?}, {partitions} partitions x 4, victim {victim} {what} at {crash_at} us holding {held:?}, trimmed past by {t} us");
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
        if verbose {
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
    let victim_stats = match stats.iter().find(|(r, _)| *r == victim) {
        Some((_, s)) if s.installed >= 1 => s.clone(),
        other => {
            problems.push(format!(
                "the victim did not recover by state transfer: {other:?}"
            ));
            Default::default()
        }
    };
    if stats.iter().any(|(_, s)| s.refused > 0) {
        problems.push(format!("a checkpoint was refused: {stats:?}"));
    }
    if stats.iter().any(|(_, s)| s.taken == 0) {
        problems.push(format!("a replica holds no checkpoint: {stats:?}"));
    }
    if sim.replicas().count() != sim.roles().replicas().count() {
        problems.push("a replica is down at the end".into());
    }
    problems.extend(check_ownership(&sim));
    let history = sim.history();
    if history.iter().any(|o| o.ret.is_none()) {
        problems.push("a command never completed".into());
    }
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    if problems.is_empty() {
        Ok(format!(
            "{scheme:?}, {} ops, victim {victim} installed round {} ({} bytes)",
            history.len(),
            victim_stats.round,
            victim_stats.bytes
        ))
    } else {
        Err(format!(
            "{scheme:?}, {partitions} partitions x 4, victim {victim} {}:\n  {}",
            if crash { "crashed" } else { "cut off" },
            problems.join("\n  ")
        ))
    }
}

#[test]
fn a_partition_or_oracle_replica_behind_the_trimmed_logs_recovers_by_state_transfer() {
    let passed = groups::sim::seeds::campaign(
        "scaleout_recovery_sim",
        "cargo test --release -p engine --test scaleout_recovery_sim -- --nocapture",
        40,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        eprintln!("scaleout_recovery_sim: {} seeds passed", passed.len());
    }
}

/// `scaleout_sim`'s fault campaign with checkpoints and trimming on.
fn run_campaign(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee);
    let scheme = if seed.is_multiple_of(2) {
        Scheme::Ssmr
    } else {
        Scheme::Dssmr
    };
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
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 40,
        workload: workload(KEYS),
        think_us: 10_000,
    };
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    blueprint.checkpoints = Some(CheckpointPolicy {
        every_commands: rng.random_range(5..=20),
        every_ticks: 100,
        resend_ticks: 50,
    });
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
    let history = sim.history();
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    let installed: u64 = stats.iter().map(|(_, s)| s.installed).sum();
    if problems.is_empty() {
        Ok(format!(
            "{scheme:?}, {} ops, {} crashes, {installed} checkpoints installed",
            history.len(),
            report.crashes
        ))
    } else {
        Err(format!(
            "{scheme:?}, {partitions} partitions x {replicas}:\n  {}",
            problems.join("\n  ")
        ))
    }
}

#[test]
fn scaleout_replicas_with_checkpoints_and_trimming_survive_a_fault_campaign() {
    let passed = groups::sim::seeds::campaign(
        "scaleout_recovery_campaign",
        "cargo test --release -p engine --test scaleout_recovery_sim scaleout_replicas_with_checkpoints -- --nocapture",
        24,
        run_campaign,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        eprintln!("scaleout_recovery_campaign: {} seeds passed", passed.len());
    }
}
