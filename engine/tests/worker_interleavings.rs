//! Goal: the production P-SMR worker set stays correct under every interleaving of its
//! workers that seeds draw, and the simulator really draws different ones.
//!
//! Method: the simulator runs each replica's workers with the production `WorkerSet`
//! (`Worker::step`, the same code the threads run) under a seeded scheduler that picks which
//! worker moves next; every replica of every seed draws its own interleavings. 100 seeds by
//! default of 3 replicas with 3 or 4 workers, a heavy mix of multi-worker transfers, all-worker
//! sums and inserts (opt-PSMR refusals and retries), and checkpoint requests every few commands
//! (each worker records its part at its own point of its stream, without a rendezvous). Checks:
//! the history is linearizable, the replicas' final states are equal, the replicas' checkpoints
//! of the same round have the same state hash (a consistent cut whatever the interleaving), and
//! over the run both races of a rendezvous happen (an executor that arrives before its lenders,
//! and lenders that arrive before their executor) with replicas of one seed meeting in different
//! orders. A negative control runs a service whose workers share state outside the command map
//! (each worker's shard records a per-replica counter at every command): replicas must end in
//! different states for some seeds, which shows the checks would catch an interleaving bug.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::checkpoint::CheckpointPolicy;
use engine::hash::Fnv64;
use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::psmr::workers::Meetings;
use engine::sim::{verdict, EngineSim, SimSetup};
use engine::testing::{KvCommand, KvModel, KvService};
use engine::{wire, Access, Service, Shards, SnapshotError, Target};
use groups::sim::NetFaults;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KEYS: u64 = 9;

static EXECUTOR_FIRST: AtomicU64 = AtomicU64::new(0);
static LENDERS_FIRST: AtomicU64 = AtomicU64::new(0);
static ORDERS_DIFFER: AtomicU64 = AtomicU64::new(0);
static BATCHED: AtomicU64 = AtomicU64::new(0);

fn setup<C: 'static>(seed: u64, workload: engine::sim::Workload<C>) -> SimSetup<C> {
    let net = NetFaults {
        latency_us: (50, 400),
        ..NetFaults::calm()
    };
    SimSetup::two_by_two(seed, net, 25, 8_000, workload)
}

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(3..=4usize);
    let mode = Mode::alternating(seed);
    let d = Deployment::simulated(3, workers, None).map_err(|e| e.to_string())?;
    let workload = Arc::new(|rng: &mut ChaCha8Rng, _| {
        let k = rng.random_range(0..KEYS);
        match rng.random_range(0..100) {
            0..20 => KvCommand::Get(k),
            20..35 => KvCommand::Put(k, rng.random_range(0..100)),
            35..45 => KvCommand::Insert(KEYS + rng.random_range(0..100), 1),
            45..90 => KvCommand::Transfer(k, rng.random_range(0..KEYS), 1),
            90..95 => KvCommand::Sum,
            _ => KvCommand::Len,
        }
    });
    let service = Arc::new(KvService { split_every: 3 });
    let mut blueprint = Psmr::new(service, d, mode, ExecOptions::hashing(true), 200);
    blueprint.checkpoints = Some(CheckpointPolicy {
        every_commands: rng.random_range(3..=10),
        every_ticks: 50,
        resend_ticks: 50,
    });
    let mut sim = EngineSim::new(blueprint, setup(seed, workload));
    let quiet = sim.run_until_quiet(20_000_000);
    let mut problems = Vec::new();
    if !quiet {
        problems.push("liveness: not quiet".to_string());
    }
    problems.extend(sim.outcome_problems(&KvModel, Budget::new(2_000_000)));
    // Checkpoints of the same round hash the same at every replica.
    let mut by_round: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut meetings = Vec::new();
    for (_, r) in sim.replicas() {
        if let Some((round, h)) = r.checkpoint_stats().state_hash {
            by_round.entry(round).or_default().push(h);
        }
        let mut m = Meetings::default();
        for w in r.core.driver.workers() {
            m.executor_first += w.meetings.executor_first;
            m.lenders_first += w.meetings.lenders_first;
            m.batched += w.meetings.batched;
        }
        meetings.push(m);
    }
    if by_round.is_empty() {
        problems.push("no checkpoint was taken".into());
    }
    for (round, hashes) in &by_round {
        if hashes.windows(2).any(|w| w[0] != w[1]) {
            problems.push(format!(
                "checkpoint {round} differs between replicas: {hashes:?}"
            ));
        }
    }
    for m in &meetings {
        EXECUTOR_FIRST.fetch_add(m.executor_first, Ordering::Relaxed);
        LENDERS_FIRST.fetch_add(m.lenders_first, Ordering::Relaxed);
        BATCHED.fetch_add(m.batched, Ordering::Relaxed);
    }
    if meetings.windows(2).any(|w| w[0] != w[1]) {
        ORDERS_DIFFER.fetch_add(1, Ordering::Relaxed);
    }
    if verbose {
        eprintln!("seed {seed}: {mode:?}, {workers} workers, meetings {meetings:?}, checkpoints {by_round:?}");
    }
    verdict(
        problems,
        || format!("{mode:?}, {workers} workers"),
        || format!("{} ops, meetings {meetings:?}", sim.history().len()),
    )
}

#[test]
fn every_drawn_worker_interleaving_is_linearizable_with_equal_replicas_and_checkpoints() {
    let passed = groups::sim::seeds::campaign(
        "worker_interleavings",
        "cargo test --release -p engine --test worker_interleavings -- --nocapture",
        100,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        let (e, l, d, b) = (
            EXECUTOR_FIRST.load(Ordering::Relaxed),
            LENDERS_FIRST.load(Ordering::Relaxed),
            ORDERS_DIFFER.load(Ordering::Relaxed),
            BATCHED.load(Ordering::Relaxed),
        );
        eprintln!(
            "worker_interleavings: {} seeds passed; executor first {e}, lenders first {l}; {b} commands ran under an earlier command's loan; replicas met in different orders in {d} seeds",
            passed.len()
        );
        assert!(e > 0 && l > 0, "both races of the rendezvous happen");
        assert!(b > 0, "runs of multi-worker commands share a loan");
        assert!(
            d > passed.len() as u64 / 2,
            "replicas draw different interleavings"
        );
    }
}

/// Negative control: workers that share a per-replica counter outside their shards.
struct Racy;

type RacyShard = (Arc<AtomicU64>, Vec<u64>);

impl Service for Racy {
    type Command = u64;
    type Reply = u64;
    type Shard = RacyShard;

    fn name(&self) -> &'static str {
        "racy"
    }
    fn shards(&self, workers: usize) -> Vec<RacyShard> {
        let shared = Arc::new(AtomicU64::new(0));
        (0..workers).map(|_| (shared.clone(), Vec::new())).collect()
    }
    fn conservative(&self, k: &u64, workers: usize) -> Target {
        Target::One((*k % workers as u64) as usize)
    }
    fn execute(&self, shards: &mut Shards<'_, '_, RacyShard>, k: &u64, _: &mut Access) -> u64 {
        let w = (*k % shards.total() as u64) as usize;
        let (shared, seen) = shards.get(w);
        let n = shared.fetch_add(1, Ordering::Relaxed);
        seen.push(n);
        n
    }
    fn state_hash(&self, shards: &[&RacyShard]) -> u64 {
        let mut h = Fnv64::new();
        for (_, seen) in shards {
            h.words(seen.iter().copied()).word(u64::MAX);
        }
        h.get()
    }
    fn snapshot_shard(&self, _: usize, shard: &RacyShard) -> Vec<u8> {
        wire::encode(&shard.1)
    }
    fn restore_shard(&self, _: usize, _: usize, b: &[u8]) -> Result<RacyShard, SnapshotError> {
        let seen = wire::decode(b).map_err(|e| SnapshotError(e.to_string()))?;
        Ok((Arc::new(AtomicU64::new(0)), seen))
    }
}

#[test]
fn state_shared_behind_the_command_map_is_caught_by_the_drawn_interleavings() {
    let diverged = |workers: usize| {
        (0..20u64)
            .filter(|&seed| {
                let d = Deployment::new(3, 1, workers, 2, Default::default()).unwrap();
                let blueprint =
                    Psmr::new(Arc::new(Racy), d, Mode::Psmr, ExecOptions::default(), 200);
                let workload = Arc::new(|rng: &mut ChaCha8Rng, _| rng.random_range(0..KEYS));
                let mut sim = EngineSim::new(blueprint, setup(seed, workload));
                assert!(sim.run_until_quiet(20_000_000), "seed {seed}: not quiet");
                sim.divergence().is_some()
            })
            .count()
    };
    let racy = diverged(3);
    assert!(
        racy > 0,
        "the interleavings never exposed the shared counter"
    );
    assert_eq!(diverged(1), 0, "one worker: no interleaving, no divergence");
    eprintln!("negative control: {racy} of 20 seeds diverged with 3 workers");
}
