//! Goal: the replicated B+-tree stays linearizable, and its replicas identical, under faults,
//! in both P-SMR and opt-PSMR.
//!
//! Method: 200 seeds, even ones P-SMR and odd ones opt-PSMR (`CHORUS_SEEDS` changes the count). Each seed simulates 2 replicas of 2
//! to 4 workers, 3 acceptors and 2 client nodes with 2 clients each, on a small tree (fan-out
//! 4, 64-key space, 24 keys pre-filled) so that splits, merges, subtree splits in the top and
//! (in opt-PSMR) refusals happen often, under a random fault campaign: message loss,
//! duplication and reordering, a crash of one replica or acceptor at a time with restart (a
//! restarted replica replays the logs), pauses (SIGSTOP/SIGCONT), partitions. The workload mixes gets, inserts, updates,
//! deletes, short scans (several workers) and sizes (all workers). After healing: the history
//! must be linearizable against a sequential model of the tree, every replica must hold the
//! same state, and clients must never have seen two replicas report different state hashes.
//!
//! `CHORUS_SEED=n` replays one seed (even: P-SMR, odd: opt-PSMR) with its fault events.

use btree_service::model::TreeModel;
use btree_service::service::{shard_problems, TreeCommand, TreeConfig, TreeService};
use bytes::Bytes;
use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, Campaign, EngineSim, SimSetup};
use groups::config::Tuning;
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

static ABORTS: AtomicU64 = AtomicU64::new(0);
static PAUSES: AtomicU64 = AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<(), String> {
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
    let key_space = config().key_space;
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 30,
        workload: Arc::new(move |rng: &mut ChaCha8Rng, _| {
            let k = rng.random_range(0..key_space);
            let v = Bytes::from(vec![rng.random_range(0..=255u8)]);
            match rng.random_range(0..100) {
                0..30 => TreeCommand::Get(k),
                30..55 => TreeCommand::Insert(k, v),
                55..70 => TreeCommand::Update(k, v),
                70..85 => TreeCommand::Delete(k),
                85..95 => TreeCommand::Scan {
                    lo: k,
                    hi: k + rng.random_range(0..12),
                    limit: rng.random_range(1..8),
                },
                _ => TreeCommand::Size,
            }
        }),
        think_us: 20_000,
    };
    let mut sim = EngineSim::new(Psmr::new(service.clone(), d, mode, exec(), 100), setup);
    let report = sim.campaign(seed, &Campaign::default());
    if verbose {
        eprintln!(
            "seed {seed}: {mode:?}, {workers} workers, {:?}",
            report.events
        );
    }
    let mut problems = Vec::new();
    if !report.quiet {
        problems.push("liveness: replicas did not converge after the faults stopped".to_string());
    }
    for (r, x) in sim.replicas() {
        problems.extend(shard_problems(r, &x.shards()));
    }
    let stats = sim.client_stats();
    problems.extend(sim.outcome_problems(&TreeModel::for_config(&config()), Budget::default()));
    ABORTS.fetch_add(stats.aborts, Ordering::Relaxed);
    PAUSES.fetch_add(report.pauses as u64, Ordering::Relaxed);
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
fn replicated_btree_is_linearizable_under_faults_in_psmr_and_opt_psmr() {
    // Even seeds run P-SMR, odd seeds opt-PSMR: 100 of each by default.
    groups::sim::seeds::campaign(
        "sim_faults",
        "cargo test --release -p btree-service --test sim_faults -- --nocapture",
        200,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        assert!(
            ABORTS.load(Ordering::Relaxed) > 0,
            "opt-PSMR refused and retried some commands"
        );
        assert!(
            PAUSES.load(Ordering::Relaxed) > 0,
            "some replicas or acceptors were paused"
        );
    }
}
