//! What the CI campaign tests (`campaign`, `chirper_campaign`) share: the options' seed and run
//! count from the environment, running the plan, and the checks every executed run must pass.
#![allow(dead_code)]

use campaign::runner::{self, Summary};
use campaign::{Options, RunReport};

/// `CHORUS_SEED` if set, else the CI seed.
pub fn seed() -> u64 {
    std::env::var("CHORUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_122)
}

/// Held while a campaign runs: the tests of one binary run their campaigns one at a time.
/// A campaign's checks (a repartition during the run, failover times, progress during the
/// fault) assume a deployment with the machine to itself, as a user runs one: with three
/// nine-process deployments at once on CI's 2 cores, a DynaStar run completed about a
/// quarter of its usual operations (452 against about 1,700 alone) and applied no
/// repartition.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the plan `o` (`CHORUS_CAMPAIGN_RUNS` runs, else one per fault), its work files under
/// `chorus-{tag}-{pid}` (`label` names the campaign in the seed's line), and checks that every
/// planned run is reported with its planned fault. Campaigns of one test binary run one
/// after the other.
pub fn run_plan(o: &mut Options, label: &str, tag: &str) -> Summary {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    o.runs = std::env::var("CHORUS_CAMPAIGN_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(o.faults.len());
    let seed = o.seed;
    println!("{label} seed {seed} (CHORUS_SEED={seed} replays the same plan)");
    o.work_dir = std::env::temp_dir().join(format!("chorus-{tag}-{}", std::process::id()));
    o.json = Some(o.work_dir.with_extension("json"));
    let s = runner::run(o).expect("the campaign starts");
    let _ = std::fs::remove_file(o.work_dir.with_extension("json"));
    assert_eq!(s.runs.len(), o.runs, "every planned run is reported");
    for (i, r) in s.runs.iter().enumerate() {
        let (_, fault) = runner::pick(o, i);
        assert_eq!(r.fault, fault.name(), "run {i} is the planned fault");
    }
    s
}

/// The checks of an executed run `i` of a deployment of `replicas` replicas: it names its
/// mechanism and passed, with at least 20 commands completed, equal final states (one hash
/// per replica) and no acknowledged write lost; a partial-frames run measured the victim's
/// memory and commands during the fault, an fd-exhaust run the victim's descriptors and its
/// recovery.
pub fn check_executed(i: usize, r: &RunReport, replicas: usize) {
    assert!(!r.mechanism.is_empty(), "run {i} names its mechanism");
    assert!(r.passed(), "run {i} failed: {:?}", r.problems);
    assert!(r.completed_ops >= 20, "{r:?}");
    assert!(r.states_equal, "{r:?}");
    assert_eq!(r.final_hashes.len(), replicas, "{r:?}");
    assert_eq!(r.lost_acks, 0, "{r:?}");
    match r.fault.as_str() {
        "partial-frames" => {
            assert!(r.victim_rss_kib.is_some(), "{r:?}");
            assert!(r.ops_during_fault.is_some_and(|n| n > 0), "{r:?}");
        }
        "fd-exhaust" => {
            assert!(r.victim_fds.is_some(), "{r:?}");
            assert!(r.recovery_ms.is_some(), "{r:?}");
        }
        _ => {}
    }
}

/// Every leader kill of the campaign had its failover measured.
pub fn check_failover_measured(s: &Summary) {
    let kills = s.runs.iter().filter(|r| r.fault == "kill-leader").count();
    assert_eq!(
        s.kill_leader_failover.runs, kills,
        "every leader kill is measured"
    );
}
