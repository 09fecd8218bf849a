//! Goal: Chirper on DS-SMR, run as nine real processes (2 partitions x 3 replicas and an
//! oracle of 3, durable logs), stays linearizable, keeps every group's replicas equal and
//! loses no acknowledged post under one fault per run: SIGKILL of a log's leader, of a
//! follower and of an oracle replica (restarted from durable logs), SIGSTOP/SIGCONT, a
//! network partition, packet loss and delay, hostile partial frames and file-descriptor
//! exhaustion of the global log's leader. The same on DynaStar (repartitioning during the
//! run), and in combined mode (two worker threads in every partition replica).
//!
//! Method: `chorus-campaign --services chirper` in CI form: one run of each default fault and
//! kill-oracle, with the seed printed (`CHORUS_SEED=s` picks another; `CHORUS_CAMPAIGN_RUNS=n`
//! runs more). Each run's line, with its mechanism, and the aggregate leader failover time are
//! printed (`--nocapture`). Every fault has a mechanism that needs no system package, so every
//! planned run must execute and pass. The three campaigns run one after the other (each
//! deployment has the machine to itself): about 4 minutes on 2 cores (each run also checks a
//! history of about a thousand operations as one part: a post touches any follower).

mod common;

use campaign::{Fault, Options, ServiceKind};

#[test]
fn ci_chirper_campaign_passes_every_run() {
    let mut o = Options::new(0, common::seed());
    o.services = vec![ServiceKind::Chirper];
    o.faults.insert(2, Fault::KillOracle);
    let s = common::run_plan(&mut o, "chirper campaign", "chirper-test");
    for (i, r) in s.runs.iter().enumerate() {
        assert_eq!(r.service, "chirper");
        // Chirper has every fault: no skip has a reason here.
        assert!(!r.skipped, "run {i} skipped: {r:?}");
        // Two partitions and the oracle, three replicas each.
        common::check_executed(i, r, 9);
    }
    assert_eq!(s.failed, 0, "failing runs (see their lines above)");
    assert_eq!(s.skipped, 0);
    assert_eq!(s.passed, o.runs);
    common::check_failover_measured(&s);
}

/// Chirper on DynaStar as nine real processes: the users start on a random placement, the
/// oracle repartitions from its workload graph during the run (at least one placement chunk
/// applied, `placement_chunks`), and the history stays linearizable, every group's replicas
/// equal and no acknowledged post lost under a leader kill, an oracle replica kill and a
/// pause. About 1 minute on 2 cores.
#[test]
fn ci_chirper_dynastar_campaign_repartitions_and_passes_every_run() {
    let seed = std::env::var("CHORUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_203);
    let mut o = Options::new(0, seed);
    o.services = vec![ServiceKind::ChirperDynastar];
    o.faults = vec![Fault::KillLeader, Fault::KillOracle, Fault::Pause];
    let s = common::run_plan(&mut o, "chirper dynastar campaign", "chirper-dynastar");
    for (i, r) in s.runs.iter().enumerate() {
        assert_eq!(r.service, "chirper-dynastar");
        assert_eq!(r.mode, "dynastar");
        assert!(!r.skipped, "run {i} skipped: {r:?}");
        // Two partitions and the oracle, three replicas each.
        common::check_executed(i, r, 9);
        assert!(
            r.placement_chunks.is_some_and(|c| c > 0),
            "run {i}: no repartition was applied: {r:?}"
        );
        // The oracle replicas' metrics count hint batches and placements (DynaStar's
        // oracle counters; a restarted replica rebuilds them from its logs).
        let oracle = r.oracle_placements.as_ref().expect("dynastar runs count");
        assert_eq!(oracle.len(), 3, "run {i}: {oracle:?}");
        assert!(
            oracle
                .iter()
                .any(|o| o.placements.is_some_and(|n| n > 0) && o.hint_batches.is_some()),
            "run {i}: {oracle:?}"
        );
        println!(
            "run {i} ({}): {} placement chunks applied over the partitions' replicas; oracle {oracle:?}",
            r.fault,
            r.placement_chunks.unwrap_or(0)
        );
    }
    assert_eq!(s.failed, 0, "failing runs (see their lines above)");
    assert_eq!(s.passed, o.runs);
}

/// Chirper on DS-SMR in combined mode as nine real processes: every partition replica runs
/// two worker threads (2 partitions x 3 replicas x 2 workers, users sharded over the workers
/// by id), so commands of one worker, of two workers of one partition (exchanged in memory)
/// and of two partitions run under a leader kill, an oracle replica kill, a pause and packet
/// loss; the history stays linearizable, every group's replicas equal and no acknowledged
/// post lost, and every worker of every partition replica handled commands (its metrics).
/// About 1 minute on 2 cores.
#[test]
fn ci_chirper_combined_campaign_passes_every_run() {
    let seed = std::env::var("CHORUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_207);
    let mut o = Options::new(0, seed);
    o.services = vec![ServiceKind::ChirperCombined];
    o.faults = vec![
        Fault::KillLeader,
        Fault::KillOracle,
        Fault::Pause,
        Fault::Loss,
    ];
    let s = common::run_plan(&mut o, "chirper combined campaign", "chirper-combined");
    for (i, r) in s.runs.iter().enumerate() {
        assert_eq!(r.service, "chirper-combined");
        assert_eq!(r.mode, "ds-smr x 2 workers");
        assert!(!r.skipped, "run {i} skipped: {r:?}");
        common::check_executed(i, r, 9);
        let workers = r
            .worker_handled
            .as_ref()
            .expect("combined runs count per worker");
        // Six partition replicas, two workers each, every one of them used.
        assert_eq!(workers.len(), 6, "run {i}: {workers:?}");
        for c in workers {
            assert!(
                c.handled.len() == 2 && c.handled.iter().all(|&h| h > 0),
                "run {i}: {c:?}"
            );
            // The servers run with --pin.
            assert_eq!(c.pinned, 2, "run {i}: {c:?}");
        }
        // Commands crossed cells: run over several, or their objects moved into one.
        assert!(
            workers.iter().any(|c| c.multi + c.moved_in > 0),
            "run {i}: {workers:?}"
        );
    }
    assert_eq!(s.failed, 0, "failing runs (see their lines above)");
    assert_eq!(s.passed, o.runs);
}
