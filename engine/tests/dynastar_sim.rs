//! Goal: DynaStar deployments of a key-value service stay linearizable while the oracle
//! repartitions during crashes, partitions and pauses; every object is owned by exactly one
//! partition at every position of the streams; no acknowledged write is lost; replicas of a
//! group end identical (reference notes, e.7).
//!
//! Method: 100 seeds. Each draws 2 to 4 partitions of 2 or 3 replicas, an oracle of the same
//! size, 2 client nodes of 2 clients, a location cache on or off, placement guesses or not, a
//! placement method (incremental, METIS from scratch, the cheaper of both), hints every 10 to
//! 40 ticks and a repartition every 2 to 6 hint batches (so placements change many times
//! during the faults), and the scale-out campaigns' workload (gets, puts, transfers and sums
//! across partitions, bumps that need `retry(gamma)`, creates and deletes). The fault
//! campaign (crashes and restarts of replicas, oracle replicas and acceptors, pauses,
//! partitions, loss, duplication, reordering) runs, then the run must get quiet. The
//! linearizability checker (a lost acknowledged write is a non-linearizable history: every
//! get sees the latest acknowledged put), the replicas' state hashes and `check_ownership`
//! (per-object ownership changes at the oracle and every partition replica) judge it.
//!
//! A second test runs 24 seeds of the same campaign with checkpoints and trimming on (every
//! replica asks for a checkpoint every few commands, the logs are trimmed below them), so
//! that restarted DynaStar partition and oracle replicas recover by replay or by state
//! transfer, whichever the trimmed logs allow, through the same replica host as S-SMR and
//! DS-SMR; the same checks, and no checkpoint refused.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::dynastar::placement::Method;
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::{Scheme, ServerOptions};
use engine::sim::{checkpoint_every, faulty_network, verdict, EngineSim, SimSetup};
use engine::testing::scaleout::{drawn_client_options, workload, ObjectKv, ObjectKvModel};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PRELOAD: u64 = 16;
const KEYS: u64 = 24;

static PLANS: AtomicU64 = AtomicU64::new(0);
static MOVED: AtomicU64 = AtomicU64::new(0);
static LENT: AtomicU64 = AtomicU64::new(0);
static GATHERS: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicU64 = AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    run_with(seed, verbose, false)
}

/// One seed; with `checkpoints`, replicas checkpoint and the logs are trimmed.
fn run_with(seed: u64, verbose: bool, checkpoints: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(if checkpoints { seed ^ 0xc0ffee } else { seed });
    let scheme = Scheme::Dynastar;
    let partitions = rng.random_range(2..=4u32);
    let replicas = rng.random_range(2..=3usize);
    let tuning = groups::config::Tuning {
        trim: checkpoints,
        trim_every_entries: 8,
        ..layout::tuning()
    };
    let layout = ScaleOutLayout::new(scheme, partitions, replicas, 1, 2, tuning).unwrap();
    let service = Arc::new(ObjectKv { preload: PRELOAD });
    let client = drawn_client_options(scheme, partitions, seed, &mut rng);
    let mut server = ServerOptions {
        record_views: true,
        ..ServerOptions::new(scheme)
    };
    let d = &mut server.dynastar;
    d.hint_ticks = rng.random_range(10..=40);
    d.repartition_hints = rng.random_range(2..=6);
    d.plan_chunk_moves = rng.random_range(1..=8);
    d.plan_resend_ticks = 200;
    d.placement.method = [Method::Incremental, Method::Metis, Method::Best][rng.random_range(0..3)];
    d.placement.min_gain = 1;
    d.placement.move_cost = 0;
    d.placement.seed = seed;
    let setup = SimSetup::two_by_two(seed, faulty_network(&mut rng), 25, 20_000, workload(KEYS));
    let method = server.dynastar.placement.method;
    let mut blueprint = ScaleOut::new(service, layout, client, server.clone());
    if checkpoints {
        blueprint.checkpoints = Some(checkpoint_every(rng.random_range(5..=20)));
    }
    let mut sim = EngineSim::new(blueprint, setup);
    let label = format!(
        "{partitions} partitions x {replicas}, cache {}, guess_placement {}, {method:?}",
        client.cache, client.guess_placement
    );
    let (report, mut problems) = sim.default_campaign(seed, verbose, &label);
    if !report.quiet && verbose {
        for (id, r) in sim.replicas() {
            eprintln!("  {id}: backlog {} handled {}", r.backlog(), r.handled());
            if let Some(p) = r.dyna_partition() {
                eprintln!("    {:?} waiting on {:?}", p.stats, p.waiting_on());
            }
        }
    }
    if checkpoints {
        let stats: Vec<_> = sim
            .replicas()
            .map(|(r, x)| (r, x.checkpoint_stats()))
            .collect();
        if verbose {
            for (r, s) in &stats {
                eprintln!("  {r}: {s:?}");
            }
        }
        if stats.iter().any(|(_, s)| s.refused > 0) {
            problems.push(format!("a checkpoint was refused: {stats:?}"));
        }
        if stats.iter().all(|(_, s)| s.taken == 0) {
            problems.push("no replica took a checkpoint".into());
        }
        INSTALLED.fetch_add(
            stats.iter().map(|(_, s)| s.installed).sum::<u64>(),
            Ordering::Relaxed,
        );
    }
    problems.extend(check_ownership(&sim));
    let stats = sim.client_stats();
    let ops = sim.history().len();
    problems
        .extend(sim.outcome_problems(&ObjectKvModel { preload: PRELOAD }, Budget::new(2_000_000)));
    let mut plans = 0;
    for (_, r) in sim.replicas() {
        // The first test's totals only (the tests run in parallel).
        if let Some(p) = r.dyna_partition().filter(|_| !checkpoints) {
            MOVED.fetch_add(p.stats.moves_in, Ordering::Relaxed);
            LENT.fetch_add(p.stats.lent, Ordering::Relaxed);
            GATHERS.fetch_add(p.stats.gathers, Ordering::Relaxed);
            RETRIES.fetch_add(p.stats.retries, Ordering::Relaxed);
        }
        if let Some(o) = r.dyna_oracle() {
            plans = plans.max(o.stats.plans_completed);
        }
    }
    if !checkpoints {
        PLANS.fetch_add(plans, Ordering::Relaxed);
    }
    if verbose {
        eprintln!("clients: {stats:?}; {plans} plans");
    }
    verdict(
        problems,
        || format!("{partitions} partitions x {replicas}, {method:?}"),
        || format!("{ops} ops, {plans} plans, {stats:?}"),
    )
}

#[test]
fn dynastar_histories_are_linearizable_while_repartitioning_under_faults() {
    groups::sim::seeds::campaign(
        "dynastar_sim",
        "cargo test --release -p engine --test dynastar_sim -- --nocapture",
        100,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let plans = PLANS.load(Ordering::Relaxed);
        let moved = MOVED.load(Ordering::Relaxed);
        let lent = LENT.load(Ordering::Relaxed);
        let gathers = GATHERS.load(Ordering::Relaxed);
        let retries = RETRIES.load(Ordering::Relaxed);
        eprintln!(
            "dynastar_sim: {plans} plans, {moved} objects moved in, {lent} lent, {gathers} gathers, {retries} retries"
        );
        assert!(plans > 0 && moved > 0, "placements changed during the runs");
        assert!(lent > 0, "multi-partition commands borrowed objects");
        assert!(gathers > 0, "retry(gamma) ran");
    }
}

#[test]
fn dynastar_replicas_with_checkpoints_and_trimming_survive_repartitions_under_faults() {
    let passed = groups::sim::seeds::campaign(
        "dynastar_recovery_campaign",
        "cargo test --release -p engine --test dynastar_sim dynastar_replicas_with_checkpoints -- --nocapture",
        24,
        |seed, verbose| run_with(seed, verbose, true),
    );
    if std::env::var("CHORUS_SEED").is_err() {
        eprintln!(
            "dynastar_recovery_campaign: {} seeds passed, {} checkpoints installed",
            passed.len(),
            INSTALLED.load(Ordering::Relaxed)
        );
        assert!(
            INSTALLED.load(Ordering::Relaxed) > 0,
            "some replica recovered by state transfer"
        );
    }
}
