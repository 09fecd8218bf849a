//! Goal: the key-value service of `examples/kv.rs` (the tutorial's) stays linearizable and its
//! replicas identical under faults, in P-SMR and opt-PSMR.
//!
//! Method: for each seed, the simulator runs the example's service as it runs in production
//! (the one replica host, the production P-SMR workers under a seeded scheduler): 2 replicas of
//! 2 to 4 workers, 3 acceptors, 2 client nodes of 2 clients, a lossy, duplicating, reordering
//! network and a fault campaign (crashes and restarts, pauses, partitions). Gets, puts, copies
//! across workers and lengths over all workers. The history is checked against the service
//! itself run sequentially (`lincheck::Sequential`), the replicas' state hashes compared. Half
//! the seeds checkpoint every few commands with the logs trimmed below the checkpoints (a
//! replica that crashed recovers by state transfer, through the example's `restore_shard`);
//! over the seeds, checkpoints must be taken.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

#[allow(dead_code)]
#[path = "../examples/kv.rs"]
mod kv;

use engine::checkpoint::CheckpointPolicy;
use engine::lincheck::{Budget, Sequential};
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, Campaign, EngineSim, SimSetup};
use kv::{Cmd, Kv};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KEYS: u64 = 10;

/// Checkpoints completed, and installed by state transfer, over the seeds run.
static TAKEN: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicU64 = AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(2..=4usize);
    let mode = if seed.is_multiple_of(2) {
        Mode::Psmr
    } else {
        Mode::OptPsmr
    };
    // Half the seeds checkpoint (the example's snapshot_shard / restore_shard) with the logs
    // trimmed below the checkpoints, so a replica that crashed and finds its logs trimmed
    // recovers by state transfer; the other half replay the untrimmed logs.
    let checkpoints = rng.random_bool(0.5);
    let tuning = groups::config::Tuning {
        trim: checkpoints,
        ..Default::default()
    };
    let d = Deployment::new(2, 1, workers, 2, tuning).map_err(|e| e.to_string())?;
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 25,
        workload: Arc::new(|rng: &mut ChaCha8Rng, _| {
            let k = rng.random_range(0..KEYS);
            match rng.random_range(0..10) {
                0..4 => Cmd::Get(k),
                4..7 => Cmd::Put(k, format!("v{}", rng.random_range(0..100))),
                7..9 => Cmd::Copy(k, rng.random_range(0..KEYS)),
                _ => Cmd::Len,
            }
        }),
        think_us: 20_000,
    };
    let exec = ExecOptions {
        check_conflicts: true,
        state_hashes: true,
    };
    let service = Arc::new(Kv);
    let mut blueprint = Psmr::new(service.clone(), d, mode, exec, 100);
    if checkpoints {
        blueprint.checkpoints = Some(CheckpointPolicy {
            every_commands: rng.random_range(5..=20),
            every_ticks: 100,
            resend_ticks: 50,
        });
    }
    let mut sim = EngineSim::new(blueprint, setup);
    let report = sim.campaign(seed, &Campaign::default());
    if verbose {
        eprintln!(
            "seed {seed}: {mode:?}, {workers} workers, {:?}",
            report.events
        );
    }
    let mut problems = Vec::new();
    if !report.quiet {
        problems.push("liveness: not quiet after the faults stopped".to_string());
    }
    for (_, x) in sim.replicas() {
        let c = x.checkpoint_stats();
        TAKEN.fetch_add(c.taken, Ordering::Relaxed);
        INSTALLED.fetch_add(c.installed, Ordering::Relaxed);
        if c.refused > 0 {
            problems.push(format!("{} checkpoints from peers refused", c.refused));
        }
    }
    let model = Sequential::new(service, kv::keys);
    problems.extend(sim.outcome_problems(&model, Budget::new(2_000_000)));
    if problems.is_empty() {
        Ok(format!(
            "{} ops, {} crashes",
            sim.history().len(),
            report.crashes
        ))
    } else {
        Err(format!(
            "{mode:?}, {workers} workers:\n  {}",
            problems.join("\n  ")
        ))
    }
}

#[test]
fn the_example_kv_service_is_linearizable_under_faults() {
    let passed = groups::sim::seeds::campaign(
        "kv_example",
        "cargo test --release -p engine --test kv_example -- --nocapture",
        40,
        run,
    );
    let (taken, installed) = (
        TAKEN.load(Ordering::Relaxed),
        INSTALLED.load(Ordering::Relaxed),
    );
    if std::env::var("CHORUS_SEED").is_err() {
        eprintln!(
            "kv_example: {} seeds passed; {taken} checkpoints completed, {installed} installed by state transfer",
            passed.len()
        );
        assert!(taken > 0, "no seed took a checkpoint");
    }
}

/// The example's checkpoint format: a shard restores to itself at its own worker; a shard
/// holding another worker's key, or bytes that are not a shard, are refused with an error.
#[test]
fn the_example_checkpoints_restore_and_refuse_what_is_not_theirs() {
    use engine::Service;
    let kv = Kv;
    let mut shards = kv.shards(2);
    shards[1].insert(3, "three".into());
    shards[1].insert(5, "five".into());
    let bytes = kv.snapshot_shard(1, &shards[1]);
    assert_eq!(kv.restore_shard(1, 2, &bytes), Ok(shards[1].clone()));
    let refused = kv.restore_shard(0, 2, &bytes).unwrap_err();
    assert!(refused.0.contains("key 3 is not worker 0's"), "{refused:?}");
    assert!(kv.restore_shard(1, 2, &[0xff, 0x01]).is_err());
}
