//! Goal: a replica that lost its state and finds the logs trimmed past it recovers by state
//! transfer and ends identical to its peers, and the history stays linearizable.
//!
//! Method: for each seed, a simulated P-SMR or opt-PSMR deployment (4 replicas of 2 to 4
//! workers, replicas 1-3 also the acceptors, 2 client nodes with 2 clients each, a lossy,
//! duplicating, reordering network) with trimming on and replicas asking for a checkpoint
//! every few commands. Replica 4 (not an acceptor) is crashed (even seeds) or cut off from
//! everyone (odd seeds) while the clients keep loading, until every acceptor trimmed each log
//! past what it had received (trimming below the lowest checkpoint of the live replicas, the
//! silent victim excluded). Then it restarts with empty state, or the network heals and it
//! finds its logs trimmed while its state is old: either way it must get a `Trimmed` answer,
//! fetch a checkpoint from a peer, install it, catch up from the log suffix, and end with its
//! peers' state hash. Every replica must hold a checkpoint, clients must never see two
//! replicas disagree on a state hash, and the history must be linearizable.
//!
//! `CHORUS_SEED=n` replays one seed verbosely; `CHORUS_SEEDS=k` runs k seeds.

use engine::lincheck::Budget;
use engine::psmr::blueprint::Psmr;
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::sim::{checkpoint_every, faulty_network, verdict, EngineSim, SimSetup};
use engine::testing::{kv_workload, KvModel, KvService};
use groups::ids::{LogId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

const KEYS: u64 = 12;

fn run(seed: u64, verbose: bool) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers = rng.random_range(2..=4usize);
    let mode = Mode::alternating(seed / 2);
    let d = Deployment::simulated(4, workers, Some(8)).map_err(|e| e.to_string())?;
    let logs: Vec<LogId> = d.config.logs.iter().map(|l| l.id).collect();
    let service = Arc::new(KvService { split_every: 3 });
    let net = faulty_network(&mut rng);
    let setup = SimSetup::two_by_two(seed, net, 80, 5_000, kv_workload(KEYS));
    let mut blueprint = Psmr::new(service, d, mode, ExecOptions::hashing(false), 100);
    blueprint.checkpoints = Some(checkpoint_every(rng.random_range(5..=25)));
    let mut sim = EngineSim::new(blueprint, setup);
    // Replica 4 is not an acceptor: trimming can go past it (an acceptor's log copy cannot
    // be trimmed while it is down: omnipaxos trims what every acceptor holds).
    let victim = NodeId(4);
    let crash = seed.is_multiple_of(2);
    let crash_at = rng.random_range(60_000..=150_000);
    // Keep loading until every live acceptor trimmed every log past what the victim held.
    let label = format!("seed {seed}: {mode:?}, {workers} workers");
    sim.isolate_until_trimmed(victim, &logs, crash, crash_at, 3_000_000, verbose, &label)?;
    let mut problems = sim.rejoin(victim, crash, 30_000_000);
    if verbose {
        for (r, x) in sim.replicas() {
            eprintln!("  {r}: {:?}", x.checkpoint_stats());
        }
    }
    let (recovery, victim_stats) = sim.recovery_problems(victim);
    problems.extend(recovery);
    problems.extend(sim.outcome_problems(&KvModel, Budget::new(2_000_000)));
    verdict(
        problems,
        || format!("{mode:?}, {workers} workers, victim {victim}"),
        || {
            format!(
                "{} ops, victim installed round {} ({} bytes)",
                sim.history().len(),
                victim_stats.round,
                victim_stats.bytes
            )
        },
    )
}

#[test]
fn a_replica_behind_the_trimmed_logs_recovers_by_state_transfer() {
    groups::sim::seeds::campaign(
        "recovery_sim",
        "cargo test --release -p engine --test recovery_sim -- --nocapture",
        40,
        run,
    );
}
