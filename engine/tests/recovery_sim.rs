//! Goal: a replica that lost its state and finds the logs trimmed past it recovers by state
//! transfer and ends identical to its peers, and the history stays linearizable.
//!
//! Method: for each seed, a simulated P-SMR or opt-PSMR deployment (4 replicas of 2 to 4
//! workers, replicas 1-3 also the acceptors, 2 client nodes with 2 clients each, a lossy,
//! duplicating, reordering network) with trimming on and replicas asking for a checkpoint
//! every few commands. Replica 4 (not an acceptor) is crashed (even seeds) or cut off from
//! everyone (odd seeds) while the clients keep loading, until every acceptor trimmed each log
//! past what it had received (trimming below the lowest checkpoint of the live replicas, the
//! silent victim excluded). Then it restarts with empty state, or the network heals and it
//! finds its logs trimmed while its state is old: either way it must get a `Trimmed` answer,
//! fetch a checkpoint from a peer, install it, catch up from the log suffix, and end with its
//! peers' state hash. Every replica must hold a checkpoint, clients must never see two
//! replicas disagree on a state hash, and the history must be linearizable.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::checkpoint::CheckpointPolicy;
use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, EngineSim, SimSetup};
use engine::testing::{KvCommand, KvModel, KvService};
use groups::config::Tuning;
use groups::ids::{LogId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

const KEYS: u64 = 12;

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(2..=4usize);
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
    let service = Arc::new(KvService { split_every: 3 });
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 80,
        workload: Arc::new(|rng: &mut ChaCha8Rng, _| {
            let k = rng.random_range(0..KEYS);
            match rng.random_range(0..100) {
                0..30 => KvCommand::Get(k),
                30..50 => KvCommand::Put(k, rng.random_range(0..100)),
                50..70 => {
                    KvCommand::Insert(KEYS + rng.random_range(0..200), rng.random_range(0..100))
                }
                70..92 => KvCommand::Transfer(k, rng.random_range(0..KEYS), 1),
                92..96 => KvCommand::Sum,
                _ => KvCommand::Len,
            }
        }),
        think_us: 5_000,
    };
    let exec = ExecOptions {
        check_conflicts: false,
        state_hashes: true,
    };
    let mut blueprint = Psmr::new(service, d, mode, exec, 100);
    blueprint.checkpoints = Some(CheckpointPolicy {
        every_commands: rng.random_range(5..=25),
        every_ticks: 100,
        resend_ticks: 50,
    });
    let mut sim = EngineSim::new(blueprint, setup);
    // Replica 4 is not an acceptor: trimming can go past it (an acceptor's log copy cannot
    // be trimmed while it is down: omnipaxos trims what every acceptor holds).
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
    // Keep loading until every live acceptor trimmed every log past what the victim held.
    let mut t = crash_at;
    let trimmed_past = |sim: &EngineSim<Psmr<KvService>>| {
        sim.replicas().filter(|(r, _)| r.0 <= 3).all(|(_, x)| {
            held.iter()
                .all(|&(l, next)| x.node().first_idx(l).is_some_and(|f| f > next))
        })
    };
    while !trimmed_past(&sim) {
        t += 10_000;
        if t > crash_at + 3_000_000 {
            let firsts: Vec<_> = sim
                .replicas()
                .map(|(r, x)| {
                    (
                        r,
                        logs.iter()
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
                "logs not trimmed past the victim {victim} (held {held:?}) 3 s after the crash: first indexes {firsts:?}"
            ));
        }
        sim.run_until(t);
    }
    if verbose {
        let what = if crash { "crashed" } else { "cut off" };
        eprintln!("seed {seed}: {mode:?}, {workers} workers, victim {victim} {what} at {crash_at} us holding {held:?}, trimmed past by {t} us");
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
    let stats: Vec<(NodeId, _)> = sim
        .replicas()
        .map(|(r, x)| (r, x.checkpoint_stats()))
        .collect();
    if verbose {
        for (r, s) in &stats {
            eprintln!("  {r}: {s:?}");
        }
    }
    match stats.iter().find(|(r, _)| *r == victim) {
        Some((_, s)) if s.installed >= 1 => {}
        other => problems.push(format!(
            "the victim did not recover by state transfer: {other:?}"
        )),
    }
    if stats.iter().any(|(_, s)| s.taken == 0) {
        problems.push(format!("a replica holds no checkpoint: {stats:?}"));
    }
    if sim.replicas().count() != 4 {
        problems.push("a replica is down at the end".into());
    }
    let history = sim.history();
    if history.iter().any(|o| o.ret.is_none()) {
        problems.push("a command never completed".into());
    }
    problems.extend(sim.outcome_problems(&KvModel, Budget::new(2_000_000)));
    let victim_stats = stats
        .iter()
        .find(|(r, _)| *r == victim)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    if problems.is_empty() {
        Ok(format!(
            "{} ops, victim installed round {} ({} bytes)",
            history.len(),
            victim_stats.round,
            victim_stats.bytes
        ))
    } else {
        Err(format!(
            "{mode:?}, {workers} workers, victim {victim}:\n  {}",
            problems.join("\n  ")
        ))
    }
}

#[test]
fn a_replica_behind_the_trimmed_logs_recovers_by_state_transfer() {
    let passed = groups::sim::seeds::campaign(
        "recovery_sim",
        "cargo test --release -p engine --test recovery_sim -- --nocapture",
        40,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        eprintln!("recovery_sim: {} seeds passed", passed.len());
    }
}
