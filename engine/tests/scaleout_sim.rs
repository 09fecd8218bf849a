//! Goal: S-SMR and DS-SMR deployments of a key-value service stay linearizable under faults
//! and concurrent moves; no object is ever owned by two partitions; the oracle and every
//! partition agree on the partition's objects; replicas of a partition end identical.
//!
//! Method: 100 seeds by default, even ones S-SMR and odd ones DS-SMR. Each draws 2 to 4
//! partitions of 2 or 3 replicas (groups of 2 get an acceptor-only node), an oracle of the
//! same size (DS-SMR), 2 client nodes of 2 clients, a DS-SMR retry threshold of 1 to 4, a
//! cache on or off, moves on cached locations or only after a consult, placement guesses on
//! cache misses or not, and a workload of gets, puts, transfers and sums across partitions,
//! bumps (which need an object the client did not name: `retry(gamma)`), creates and deletes,
//! on 16 preloaded keys out of 24. A fault campaign (crashes and restarts of replicas,
//! oracle replicas and acceptors, pauses, partitions, loss, duplication, reordering) runs; then the
//! run must get quiet. The linearizability checker, the replicas' state hashes and
//! `check_ownership` (views recorded at every move, create and delete) judge it.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ClientOptions;
use engine::partitioned::{Scheme, ServerOptions};
use engine::sim::{faulty_network, verdict, EngineSim, SimSetup};
use engine::testing::scaleout::{drawn_deployment, workload, Cmd, Drawn, ObjectKv, ObjectKvModel};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PRELOAD: u64 = 16;
const KEYS: u64 = 24;

static MOVES: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);
static GATHERS: AtomicU64 = AtomicU64::new(0);
static MULTI: AtomicU64 = AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Drawn {
        scheme,
        partitions,
        replicas,
        layout,
        client,
        server,
    } = drawn_deployment(seed, &mut rng);
    let service = Arc::new(ObjectKv { preload: PRELOAD });
    let setup = SimSetup::two_by_two(seed, faulty_network(&mut rng), 25, 20_000, workload(KEYS));
    let mut sim = EngineSim::new(
        ScaleOut::new(service, layout, client, server.clone()),
        setup,
    );
    let label = format!(
        "{scheme:?}, {partitions} partitions x {replicas}, retry_max {}, cache {}, move_on_cached {}, guess_placement {}",
        client.retry_max, client.cache, client.move_on_cached, client.guess_placement
    );
    let (report, mut problems) = sim.default_campaign(seed, verbose, &label);
    if !report.quiet && verbose {
        for (id, r) in sim.replicas() {
            eprintln!("  {id}: backlog {} handled {}", r.backlog(), r.handled());
            if let Some(p) = r.partition() {
                eprintln!("    {:?}", p.stats);
            }
        }
    }
    problems.extend(check_ownership(&sim));
    let stats = sim.client_stats();
    let history = sim.history();
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    for (_, r) in sim.replicas() {
        if let Some(p) = r.partition() {
            MULTI.fetch_add(p.stats.multi, Ordering::Relaxed);
            GATHERS.fetch_add(p.stats.gathers, Ordering::Relaxed);
        }
    }
    MOVES.fetch_add(stats.moves, Ordering::Relaxed);
    FALLBACKS.fetch_add(stats.fallbacks, Ordering::Relaxed);
    if verbose {
        eprintln!("clients: {stats:?}");
    }
    verdict(
        problems,
        || format!("{scheme:?}, {partitions} partitions x {replicas}"),
        || format!("{} ops, {stats:?}", history.len()),
    )
}

#[test]
fn ssmr_and_dssmr_key_value_histories_are_linearizable_under_faults() {
    groups::sim::seeds::campaign(
        "scaleout_sim",
        "cargo test --release -p engine --test scaleout_sim -- --nocapture",
        100,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let (moves, fallbacks) = (
            MOVES.load(Ordering::Relaxed),
            FALLBACKS.load(Ordering::Relaxed),
        );
        let (multi, gathers) = (
            MULTI.load(Ordering::Relaxed),
            GATHERS.load(Ordering::Relaxed),
        );
        eprintln!("scaleout_sim: {moves} moves, {fallbacks} fallbacks, {multi} multi-partition executions, {gathers} gathers");
        assert!(moves > 0, "DS-SMR seeds moved objects");
        assert!(fallbacks > 0, "some DS-SMR commands fell back to S-SMR");
        assert!(
            multi > 0 && gathers > 0,
            "multi-partition commands and retry(gamma) ran"
        );
    }
}

/// Negative control: with the oracle of the seed's Algorithm 4 as printed (no map update on
/// create and delete), the invariant checks must catch the divergence.
#[test]
fn the_checks_catch_the_published_oracle_bug() {
    let caught = (1..40u64)
        .step_by(2)
        .filter(|&seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let layout = ScaleOutLayout::new(Scheme::Dssmr, 2, 3, 1, 2, layout::tuning()).unwrap();
            let service = Arc::new(ObjectKv { preload: PRELOAD });
            let client = ClientOptions::new(Scheme::Dssmr, 2);
            let server = ServerOptions {
                record_views: true,
                oracle_as_published: true,
                ..ServerOptions::new(Scheme::Dssmr)
            };
            let setup = SimSetup {
                seed,
                net: faulty_network(&mut rng),
                clients_per_node: 2,
                window: 2,
                ops_per_client: 20,
                workload: Arc::new(|rng: &mut ChaCha8Rng, _| {
                    let k = rng.random_range(0..KEYS);
                    match rng.random_range(0..3) {
                        0 => Cmd::Create(k, 1),
                        1 => Cmd::Delete(k),
                        _ => Cmd::Get(k),
                    }
                }),
                think_us: 10_000,
            };
            let mut sim = EngineSim::new(ScaleOut::new(service, layout, client, server), setup);
            sim.run_until_quiet(30_000_000);
            !check_ownership(&sim).is_empty()
        })
        .count();
    assert!(
        caught > 10,
        "the published oracle was caught in only {caught} of 20 seeds"
    );
}
