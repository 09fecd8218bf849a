//! Goal: P-SMR and opt-PSMR replicas stay linearizable and identical under faults.
//!
//! Method: for each seed, a simulated deployment (2 replicas of 2 to 4 workers, 3 acceptors,
//! 2 client nodes with 2 clients each) runs the test key-value service under a random fault
//! campaign: message loss, duplication and reordering, crashes of a replica or acceptor with
//! restarts (a restarted replica rebuilds its state by replaying the logs), pauses of a replica
//! or acceptor (SIGSTOP/SIGCONT: state kept, messages held), partitions. The
//! workload mixes single-worker, multi-worker (transfers) and all-worker commands (inserts,
//! sums), so opt-PSMR refuses and retries. After the network heals and everyone restarts, the
//! recorded history must be linearizable, every replica must hold the same state, and no
//! client may have seen two replicas disagree on a state hash.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, verdict, EngineSim, SimSetup};
use engine::testing::{kv_workload, KvModel, KvService};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

const KEYS: u64 = 12;

/// opt-PSMR refusals, and pauses, seen over all seeds of this run.
static ABORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PAUSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(2..=4usize);
    let mode = Mode::alternating(seed);
    let d = Deployment::simulated(2, workers, None).unwrap();
    let service = Arc::new(KvService { split_every: 3 });
    let net = faulty_network(&mut rng);
    let setup = SimSetup::two_by_two(seed, net, 30, 20_000, kv_workload(KEYS));
    let blueprint = Psmr::new(service, d, mode, ExecOptions::hashing(false), 100);
    let mut sim = EngineSim::new(blueprint, setup);
    let label = format!("{mode:?}, {workers} workers");
    let (report, mut problems) = sim.default_campaign(seed, verbose, &label);
    if verbose && sim.divergence().is_some() {
        for (r, x) in sim.replicas() {
            eprintln!("{r}: {:?} stats {:?}", x.shards(), x.worker_stats());
        }
    }
    let stats = sim.client_stats();
    let history = sim.history();
    if verbose {
        let unknown = history.iter().filter(|o| o.ret.is_none()).count();
        eprintln!(
            "campaign done: {} ops ({unknown} unknown), checking",
            history.len()
        );
    }
    problems.extend(sim.outcome_problems(&KvModel, Budget::new(2_000_000)));
    ABORTS.fetch_add(stats.aborts, std::sync::atomic::Ordering::Relaxed);
    PAUSES.fetch_add(report.pauses as u64, std::sync::atomic::Ordering::Relaxed);
    verdict(
        problems,
        || label,
        || {
            format!(
                "{} ops, {} aborts, {} crashes, {} pauses",
                history.len(),
                stats.aborts,
                report.crashes,
                report.pauses
            )
        },
    )
}

#[test]
fn psmr_and_opt_psmr_are_linearizable_under_faults() {
    groups::sim::seeds::campaign(
        "psmr_sim",
        "cargo test --release -p engine --test psmr_sim -- --nocapture",
        60,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        assert!(
            ABORTS.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "opt-PSMR seeds refused and retried some inserts"
        );
        assert!(
            PAUSES.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "some replicas or acceptors were paused"
        );
    }
}
