//! Goal: Chirper on S-SMR and on DS-SMR stays linearizable under faults and concurrent moves;
//! no user is ever owned by two partitions; the oracle and every partition agree on the
//! partition's users; replicas of a partition end identical.
//!
//! Method: 100 seeds by default, even ones S-SMR and odd ones DS-SMR. Each generates a small
//! social graph (12 users in 3 communities, power-law popularity), places it by community
//! with a random placement quality, and runs 2 to 3 partitions of 2 or 3 replicas, 2 client
//! nodes of 2 clients, posts (which gather every follower: `retry(gamma)`, then moves or
//! value exchange), follows, unfollows, timelines and user creations (DS-SMR clients move on
//! cached locations or only after a consult, and guess placements on cache misses or not, by
//! draw), under a fault campaign
//! (crashes and restarts, pauses, partitions, loss, duplication, reordering). Then the run must get
//! quiet, and the history must satisfy Chirper's specification.
//!
//! A second test runs 100 seeds of the same campaign on DynaStar, with repartitions every 2 to
//! 6 hint batches (placement method drawn: incremental, METIS, the cheaper).
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use bytes::Bytes;
use chirper::graph::{generate, place_by_community, shard_over_workers, GraphSpec};
use chirper::model::{ChirperModel, SpecUser};
use chirper::service::{Chirper, ChirperConfig, Command};
use engine::lincheck::Budget;
use engine::partitioned::blueprint::{check_ownership, ScaleOut};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ClientOptions;
use engine::partitioned::{Scheme, ServerOptions};
use engine::sim::{faulty_network, verdict, EngineSim, SimSetup};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const USERS: u32 = 12;
const TIMELINE: usize = 4;

static MOVES: AtomicU64 = AtomicU64::new(0);
static GATHERS: AtomicU64 = AtomicU64::new(0);
static POSTS: AtomicU64 = AtomicU64::new(0);
static PAUSES: AtomicU64 = AtomicU64::new(0);
static PLAN_MOVES: AtomicU64 = AtomicU64::new(0);
static LENT: AtomicU64 = AtomicU64::new(0);

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let scheme = if seed.is_multiple_of(2) {
        Scheme::Ssmr
    } else {
        Scheme::Dssmr
    };
    run_scheme(seed, verbose, scheme, 1)
}

/// One seed of `scheme` with `workers` workers per partition replica (combined mode when
/// above 1: users sharded over a partition's workers by id).
fn run_scheme(seed: u64, verbose: bool, scheme: Scheme, workers: u32) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let partitions = if workers > 1 {
        rng.random_range(1..=3u32)
    } else {
        rng.random_range(2..=3u32)
    };
    let replicas = rng.random_range(2..=3usize);
    let graph = Arc::new(
        generate(&GraphSpec {
            users: USERS,
            communities: 3,
            mean_followees: 2.5,
            locality: 0.8,
            popularity_exponent: 1.0,
            seed,
        })
        .map_err(|e| e.to_string())?,
    );
    let quality = rng.random_range(0.0..=1.0);
    let placement = shard_over_workers(
        &place_by_community(&graph, partitions, quality, seed).map_err(|e| e.to_string())?,
        workers,
    );
    let cells = partitions * workers;
    let config = ChirperConfig {
        timeline_len: TIMELINE,
    };
    let service = Arc::new(Chirper::with_graph(
        config,
        graph.clone(),
        cells,
        placement,
    )?);
    let tuning = groups::config::Tuning {
        trim: false,
        ..layout::tuning()
    };
    let layout =
        ScaleOutLayout::combined(scheme, partitions, workers, replicas, 1, 2, tuning).unwrap();
    let mut client = ClientOptions::new(scheme, cells);
    client.retry_max = rng.random_range(2..=5);
    client.move_on_cached = rng.random_bool(0.5);
    client.guess_placement = rng.random_bool(0.5);
    client.resend_ticks = 100;
    client.seed = seed;
    let mut server = ServerOptions {
        record_views: true,
        ..ServerOptions::new(scheme)
    };
    if scheme == Scheme::Dynastar {
        use engine::partitioned::dynastar::placement::Method;
        let d = &mut server.dynastar;
        d.hint_ticks = rng.random_range(10..=40);
        d.repartition_hints = rng.random_range(2..=6);
        d.plan_chunk_moves = rng.random_range(1..=8);
        d.placement.method =
            [Method::Incremental, Method::Metis, Method::Best][rng.random_range(0..3)];
        d.placement.min_gain = 1;
        d.placement.move_cost = 0;
        d.placement.seed = seed;
        client.cache = rng.random_bool(0.7);
    }
    let setup = SimSetup::two_by_two(
        seed,
        faulty_network(&mut rng),
        25,
        20_000,
        Arc::new(|rng: &mut ChaCha8Rng, _| {
            let u = |rng: &mut ChaCha8Rng| rng.random_range(0..USERS + 2);
            match rng.random_range(0..100) {
                0..35 => Command::GetTimeline(u(rng)),
                35..60 => Command::Post {
                    user: u(rng),
                    id: rng.random::<u64>(),
                    text: Bytes::from_static(b"chirp"),
                },
                60..75 => Command::Follow {
                    follower: u(rng),
                    followee: u(rng),
                },
                75..90 => Command::Unfollow {
                    follower: u(rng),
                    followee: u(rng),
                },
                _ => Command::CreateUser(USERS + rng.random_range(0..2)),
            }
        }),
    );
    let mut sim = EngineSim::new(ScaleOut::new(service, layout, client, server), setup);
    let label = format!(
        "{scheme:?}, {partitions} partitions x {replicas} x {workers} workers, quality {quality:.2}, retry_max {}, move_on_cached {}, guess_placement {}",
        client.retry_max, client.move_on_cached, client.guess_placement
    );
    let (report, mut problems) = sim.default_campaign(seed, verbose, &label);
    problems.extend(check_ownership(&sim));
    let model = ChirperModel {
        initial: (0..USERS)
            .map(|u| {
                (
                    u,
                    SpecUser {
                        followers: graph.followers(u).iter().copied().collect(),
                        followees: graph.followees(u).iter().copied().collect(),
                        timeline: Default::default(),
                    },
                )
            })
            .collect(),
        timeline_len: TIMELINE,
    };
    problems.extend(sim.outcome_problems(&model, Budget::new(5_000_000)));
    let history = engine::sim::lincheck_history(&sim.history());
    let stats = sim.client_stats();
    MOVES.fetch_add(stats.moves, Ordering::Relaxed);
    PAUSES.fetch_add(report.pauses as u64, Ordering::Relaxed);
    for (_, r) in sim.replicas() {
        if let Some(p) = r.server_stats() {
            GATHERS.fetch_add(p.gathers, Ordering::Relaxed);
            PLAN_MOVES.fetch_add(
                p.moves_in * u64::from(scheme == Scheme::Dynastar),
                Ordering::Relaxed,
            );
            LENT.fetch_add(p.lent, Ordering::Relaxed);
        }
    }
    POSTS.fetch_add(
        history
            .iter()
            .filter(|o| matches!(o.input, Command::Post { .. }) && o.output().is_some())
            .count() as u64,
        Ordering::Relaxed,
    );
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
fn chirper_on_ssmr_and_dssmr_is_linearizable_under_faults() {
    groups::sim::seeds::campaign(
        "chirper sim_faults",
        "cargo test --release -p chirper --test sim_faults -- --nocapture",
        100,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let (moves, gathers, posts) = (
            MOVES.load(Ordering::Relaxed),
            GATHERS.load(Ordering::Relaxed),
            POSTS.load(Ordering::Relaxed),
        );
        eprintln!("chirper sim_faults: {posts} posts completed, {gathers} gathers, {moves} moves");
        assert!(moves > 0 && gathers > 0 && posts > 0);
        assert!(
            PAUSES.load(Ordering::Relaxed) > 0,
            "some replicas were paused"
        );
    }
}

/// DynaStar: the same campaign while the oracle repartitions every few hint batches (reference
/// notes, e.7): users change partitions many times during the faults, posts borrow their
/// followers and return them.
#[test]
fn chirper_on_dynastar_is_linearizable_while_repartitioning_under_faults() {
    groups::sim::seeds::campaign(
        "chirper sim_faults dynastar",
        "cargo test --release -p chirper --test sim_faults dynastar -- --nocapture",
        100,
        |seed, verbose| run_scheme(seed, verbose, Scheme::Dynastar, 1),
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let (moved, lent) = (
            PLAN_MOVES.load(Ordering::Relaxed),
            LENT.load(Ordering::Relaxed),
        );
        eprintln!("chirper sim_faults dynastar: {moved} users moved by placements, {lent} lent");
        assert!(moved > 0 && lent > 0);
    }
}

/// Combined mode: S-SMR (even seeds) and DS-SMR partitions whose replicas run 2 to 4
/// workers each, users sharded over a partition's workers by id; posts gather followers
/// across workers and partitions.
#[test]
fn chirper_in_combined_mode_is_linearizable_under_faults() {
    groups::sim::seeds::campaign(
        "chirper sim_faults combined",
        "cargo test --release -p chirper --test sim_faults combined -- --nocapture",
        50,
        |seed, verbose| {
            let scheme = if seed.is_multiple_of(2) {
                Scheme::Ssmr
            } else {
                Scheme::Dssmr
            };
            run_scheme(seed, verbose, scheme, 2 + (seed / 2 % 3) as u32)
        },
    );
}
