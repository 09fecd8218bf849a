//! Goal: reads served off the log (P-SMR fast reads: one replica answers a single-worker
//! read-only command after a read index, `groups::readindex`) stay linearizable under faults,
//! deposed leaders included.
//!
//! Method: for each seed, a simulated deployment (2 or 3 replicas of 1 to 4 workers, smr,
//! P-SMR or opt-PSMR, 3 acceptors, 2 client nodes with 2 clients each) runs the test key-value
//! service with fast reads on, under the default fault campaign (loss, duplication,
//! reordering, crashes and restarts, pauses, partitions) plus one to three deposed leaders:
//! whoever leads a log is paused for 50-400 ms while the others elect a new leader, and resumes
//! believing it still leads. The workload is read-heavy (half `Get`s, served off the log;
//! `Put`s, transfers between workers, inserts and all-worker sums through it). After the
//! network heals and everyone restarts, the recorded history must be linearizable, every
//! replica must hold the same state (reads change nothing replicated), and reads must really
//! have gone off the log.
//!
//! Negative control, by hand (it needs a broken engine): a worker that serves a read as soon
//! as it arrives, without waiting for the read index's positions, fails this campaign (see
//! the closing note of the change that added it).
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, verdict, Campaign, EngineSim, SimSetup, Workload};
use engine::testing::{KvCommand, KvModel, KvService};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KEYS: u64 = 10;

static OFF_LOG: AtomicU64 = AtomicU64::new(0);
static DEPOSED: AtomicU64 = AtomicU64::new(0);

fn read_heavy(keys: u64) -> Workload<KvCommand> {
    Arc::new(move |rng: &mut ChaCha8Rng, _| {
        let k = rng.random_range(0..keys);
        match rng.random_range(0..100) {
            0..50 => KvCommand::Get(k),
            50..72 => KvCommand::Put(k, rng.random_range(0..100)),
            72..80 => KvCommand::Insert(keys + rng.random_range(0..200), rng.random_range(0..100)),
            80..96 => KvCommand::Transfer(k, rng.random_range(0..keys), 1),
            _ => KvCommand::Sum,
        }
    })
}

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa57_0ead);
    let mode = match seed % 3 {
        0 => Mode::Smr,
        1 => Mode::Psmr,
        _ => Mode::OptPsmr,
    };
    let workers = if mode == Mode::Smr {
        1
    } else {
        rng.random_range(2..=4usize)
    };
    let replicas = rng.random_range(2..=3usize);
    let d = Deployment::simulated(replicas, workers, None).unwrap();
    let service = Arc::new(KvService { split_every: 3 });
    let net = faulty_network(&mut rng);
    let setup = SimSetup::two_by_two(seed, net, 80, 15_000, read_heavy(KEYS));
    let mut blueprint = Psmr::new(service, d, mode, ExecOptions::hashing(true), 100);
    blueprint.fast_reads = true;
    let mut sim = EngineSim::new(blueprint, setup);
    let label = format!("{mode:?}, {replicas} replicas of {workers} workers");
    let campaign = Campaign {
        deposes_max: 3,
        ..Campaign::default()
    };
    let (report, mut problems) = sim.judged_campaign(seed, &campaign, verbose, &label);
    let stats = sim.client_stats();
    let history = sim.history();
    problems.extend(sim.outcome_problems(&KvModel, Budget::new(2_000_000)));
    let served: u64 = sim
        .replicas()
        .map(|(_, r)| {
            r.core
                .driver
                .workers()
                .iter()
                .map(|w| w.reads_served)
                .sum::<u64>()
        })
        .sum();
    if verbose {
        eprintln!(
            "{} ops, {} reads sent off the log, {served} served by the replicas' current incarnations",
            history.len(),
            stats.reads_off_log
        );
    }
    OFF_LOG.fetch_add(stats.reads_off_log, Ordering::Relaxed);
    DEPOSED.fetch_add(report.deposed as u64, Ordering::Relaxed);
    verdict(
        problems,
        || label,
        || {
            format!(
                "{} ops, {} reads off the log, {}",
                history.len(),
                stats.reads_off_log,
                report.faults()
            )
        },
    )
}

#[test]
fn fast_reads_are_linearizable_under_faults_and_deposed_leaders() {
    groups::sim::seeds::campaign(
        "fast_reads_sim",
        "cargo test --release -p engine --test fast_reads_sim -- --nocapture",
        120,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        assert!(
            OFF_LOG.load(Ordering::Relaxed) > 0,
            "reads went off the log"
        );
        assert!(
            DEPOSED.load(Ordering::Relaxed) > 0,
            "some leaders were deposed"
        );
    }
}
