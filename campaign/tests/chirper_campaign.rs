//! Goal: Chirper on DS-SMR, run as nine real processes (2 partitions x 3 replicas and an
//! oracle of 3, durable logs), stays linearizable, keeps every group's replicas equal and
//! loses no acknowledged post under one fault per run: SIGKILL of a log's leader, of a
//! follower and of an oracle replica (restarted from durable logs), SIGSTOP/SIGCONT, a
//! network partition (namespaces), packet loss and delay.
//!
//! Method: `chorus-campaign --services chirper` in CI form: 7 runs, each fault once, with the
//! seed printed (`CHORUS_SEED=s` picks another; `CHORUS_CAMPAIGN_RUNS=n` runs more). Each
//! run's line and the aggregate leader failover time are printed (`--nocapture`). Faults this
//! machine cannot inject are reported as skipped with the reason; every other run must pass.
//! Takes about 1.5 minutes on 2 cores (each run also checks a history of about a thousand
//! operations as one part: a post touches any follower).

use campaign::{runner, Fault, Options, ServiceKind};

#[test]
fn ci_chirper_campaign_passes_every_run() {
    let seed = std::env::var("CHORUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_122);
    let runs = std::env::var("CHORUS_CAMPAIGN_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("chirper campaign seed {seed} (CHORUS_SEED={seed} replays the same plan)");
    let mut o = Options::new(runs, seed);
    o.services = vec![ServiceKind::Chirper];
    o.faults = vec![
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillOracle,
        Fault::Pause,
        Fault::Partition,
        Fault::Loss,
        Fault::Delay,
    ];
    o.work_dir = std::env::temp_dir().join(format!("chorus-chirper-test-{}", std::process::id()));
    o.json = Some(o.work_dir.with_extension("json"));
    let s = runner::run(&o).expect("the campaign starts");
    let _ = std::fs::remove_file(o.work_dir.with_extension("json"));
    assert_eq!(s.failed, 0, "failing runs (see their lines above)");
    assert_eq!(s.passed + s.skipped, runs);
    for r in &s.runs {
        assert_eq!(r.service, "chirper");
        if r.skipped {
            assert!(r.mechanism.starts_with("skipped: "), "{r:?}");
        } else {
            assert!(r.completed_ops >= 20, "{r:?}");
            assert!(r.states_equal, "{r:?}");
            assert_eq!(r.lost_acks, 0, "{r:?}");
            // Two partitions and the oracle, three replicas each.
            assert_eq!(r.final_hashes.len(), 9, "{r:?}");
        }
    }
    // Loopback faults (kills, pause) never skip.
    for r in &s.runs {
        if ["kill-leader", "kill-follower", "kill-oracle", "pause"].contains(&r.fault.as_str()) {
            assert!(!r.skipped, "{r:?}");
        }
    }
    let kills = s.runs.iter().filter(|r| r.fault == "kill-leader").count();
    assert_eq!(
        s.kill_leader_failover.runs, kills,
        "every leader kill is measured"
    );
}
