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

use engine::lincheck::{Budget, Keys, Model};
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{faulty_network, Campaign, EngineSim, SimSetup};
use engine::testing::{KvCommand, KvReply, KvService};
use groups::config::Tuning;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

const KEYS: u64 = 12;

/// opt-PSMR refusals seen over all seeds of this run.
fn exec() -> ExecOptions {
    ExecOptions {
        check_conflicts: false,
        state_hashes: true,
    }
}

static ABORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PAUSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sequential specification of the test service.
struct KvModel;

impl Model for KvModel {
    type State = BTreeMap<u64, i64>;
    type Input = KvCommand;
    type Output = KvReply;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(
        &self,
        s: &Self::State,
        input: &KvCommand,
        output: Option<&KvReply>,
    ) -> Option<Self::State> {
        let mut next = s.clone();
        let reply = match *input {
            KvCommand::Get(k) => KvReply::Value(s.get(&k).copied()),
            KvCommand::Put(k, v) => {
                next.insert(k, v);
                KvReply::Ok
            }
            KvCommand::Insert(k, v) => KvReply::Inserted(
                next.insert(k, v).is_none() || {
                    next.insert(k, s[&k]);
                    false
                },
            ),
            KvCommand::Transfer(a, b, x) => {
                *next.entry(a).or_insert(0) -= x;
                *next.entry(b).or_insert(0) += x;
                KvReply::Ok
            }
            KvCommand::Sum => KvReply::Total(s.values().sum()),
            KvCommand::Len => KvReply::Len(s.len() as u64),
        };
        match output {
            Some(o) if *o != reply => None,
            _ => Some(next),
        }
    }

    fn keys(&self, input: &KvCommand) -> Keys {
        match *input {
            KvCommand::Get(k) | KvCommand::Put(k, _) | KvCommand::Insert(k, _) => {
                Keys::Some(vec![k])
            }
            KvCommand::Transfer(a, b, _) => Keys::Some(vec![a, b]),
            KvCommand::Sum | KvCommand::Len => Keys::All,
        }
    }
}

fn run(seed: u64, verbose: bool) -> Result<String, String> {
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
    let service = Arc::new(KvService { split_every: 3 });
    let setup = SimSetup {
        seed,
        net: faulty_network(&mut rng),
        clients_per_node: 2,
        window: 2,
        ops_per_client: 30,
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
        think_us: 20_000,
    };
    let mut sim = EngineSim::new(Psmr::new(service, d, mode, exec(), 100), setup);
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
    if problems.is_empty() {
        Ok(format!(
            "{} ops, {} aborts, {} crashes, {} pauses",
            history.len(),
            stats.aborts,
            report.crashes,
            report.pauses
        ))
    } else {
        Err(format!(
            "{mode:?}, {workers} workers:\n  {}",
            problems.join("\n  ")
        ))
    }
}

#[test]
fn psmr_and_opt_psmr_are_linearizable_under_faults() {
    let passed = groups::sim::seeds::campaign(
        "psmr_sim",
        "cargo test --release -p engine --test psmr_sim -- --nocapture",
        60,
        run,
    );
    if std::env::var("CHORUS_SEED").is_err() {
        eprintln!("psmr_sim: {} seeds passed", passed.len());
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
