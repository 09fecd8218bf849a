//! Goal: reads served off the log by S-SMR and DS-SMR partitions (one replica of the
//! partition answers a single-partition read-only access after a read index,
//! `engine::partitioned::reads`) stay linearizable under faults, concurrent moves and deposed
//! leaders, and change nothing replicated.
//!
//! Method: 120 seeds, even ones S-SMR and odd ones DS-SMR. Each draws 2 to 4 partitions of 2
//! or 3 replicas, an oracle of the same size (DS-SMR), 2 client nodes of 2 clients with fast
//! reads on, and the scale-out campaigns' client options (retry threshold, cache, moves on
//! cached locations, placement guesses). The workload is read-heavy: gets and sums (read-only;
//! off the log when their keys are in one partition) beside puts, transfers across
//! partitions (DS-SMR moves), bumps (`retry(gamma)`), creates and deletes. The default fault
//! campaign runs (crashes and restarts, pauses, partitions, loss, duplication, reordering)
//! plus one to three deposed leaders: whoever leads a log is paused while the others elect a
//! new leader, and resumes believing it still leads. After the network heals the run must get
//! quiet; the history must be linearizable, no object owned twice, every partition's replicas
//! identical, and reads must really have been served off the log.
//!
//! Negative control, by hand (it needs a broken engine): a partition replica that serves a
//! read as soon as it arrives, without waiting for its read index, fails this campaign (see
//! the closing note of the change that added it).
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::Scheme;
use engine::sim::{faulty_network, verdict, Campaign, EngineSim, SimSetup, Workload};
use engine::testing::scaleout::{drawn_deployment, Cmd, Drawn, ObjectKv, ObjectKvModel};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PRELOAD: u64 = 16;
const KEYS: u64 = 24;

static SENT: AtomicU64 = AtomicU64::new(0);
static SERVED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static DEPOSED: AtomicU64 = AtomicU64::new(0);

fn read_heavy(keys: u64) -> Workload<Cmd> {
    Arc::new(move |rng: &mut ChaCha8Rng, _| {
        let k = |rng: &mut ChaCha8Rng| rng.random_range(0..keys);
        match rng.random_range(0..100) {
            0..45 => Cmd::Get(k(rng)),
            45..53 => Cmd::Sum((0..rng.random_range(1..=2)).map(|_| k(rng)).collect()),
            53..70 => Cmd::Put(k(rng), rng.random_range(0..1000)),
            70..84 => Cmd::Transfer(k(rng), k(rng), rng.random_range(1..10)),
            84..90 => Cmd::Bump(k(rng)),
            90..96 => Cmd::Create(k(rng), rng.random_range(0..1000)),
            _ => Cmd::Delete(k(rng)),
        }
    })
}

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ca1_ea75);
    let Drawn {
        scheme,
        partitions,
        replicas,
        layout,
        mut client,
        server,
    } = drawn_deployment(seed, &mut rng);
    client.fast_reads = true;
    let service = Arc::new(ObjectKv { preload: PRELOAD });
    let setup = SimSetup::two_by_two(seed, faulty_network(&mut rng), 60, 20_000, read_heavy(KEYS));
    let mut sim = EngineSim::new(ScaleOut::new(service, layout, client, server), setup);
    let label = format!(
        "{scheme:?}, {partitions} partitions x {replicas}, retry_max {}, cache {}, move_on_cached {}, guess_placement {}",
        client.retry_max, client.cache, client.move_on_cached, client.guess_placement
    );
    let campaign = Campaign {
        deposes_max: 3,
        ..Campaign::default()
    };
    let (report, mut problems) = sim.judged_campaign(seed, &campaign, verbose, &label);
    problems.extend(check_ownership(&sim));
    let stats = sim.client_stats();
    let history = sim.history();
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    let served: u64 = sim.replicas().map(|(_, r)| r.reads_served()).sum();
    if verbose {
        eprintln!(
            "{} ops, {} reads sent off the log, {served} served by the replicas' current incarnations; clients: {stats:?}",
            history.len(),
            stats.reads_off_log
        );
    }
    SENT.fetch_add(stats.reads_off_log, Ordering::Relaxed);
    SERVED[usize::from(scheme == Scheme::Dssmr)].fetch_add(served, Ordering::Relaxed);
    DEPOSED.fetch_add(report.deposed as u64, Ordering::Relaxed);
    verdict(
        problems,
        || label,
        || {
            format!(
                "{} ops, {} reads off the log ({served} served), {}",
                history.len(),
                stats.reads_off_log,
                report.faults()
            )
        },
    )
}

#[test]
fn partition_fast_reads_are_linearizable_under_faults_moves_and_deposed_leaders() {
    groups::sim::seeds::campaign(
        "scaleout_fast_reads_sim",
        "cargo test --release -p engine --test scaleout_fast_reads_sim -- --nocapture",
        120,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let (ssmr, dssmr) = (
            SERVED[0].load(Ordering::Relaxed),
            SERVED[1].load(Ordering::Relaxed),
        );
        eprintln!(
            "scaleout_fast_reads_sim: {} reads sent off the log; served: {ssmr} S-SMR, {dssmr} DS-SMR",
            SENT.load(Ordering::Relaxed)
        );
        assert!(
            ssmr > 0 && dssmr > 0,
            "both schemes served reads off the log"
        );
        assert!(
            DEPOSED.load(Ordering::Relaxed) > 0,
            "some leaders were deposed"
        );
    }
}
