//! Goal: the replicated B+-tree, run as three real processes, stays linearizable, keeps its
//! replicas equal and loses no acknowledged write under one fault per run: SIGKILL of the
//! global log's leader and of a follower (restarted from durable logs), SIGSTOP/SIGCONT,
//! a network partition (namespaces), packet loss and delay.
//!
//! Method: the CI mode of `chorus-campaign`: 6 runs, each of the six faults once, with the
//! seed printed (`CHORUS_SEED=s` picks another; `CHORUS_CAMPAIGN_RUNS=n` runs more). Each
//! run's line and the aggregate leader failover time are printed (`--nocapture`). Faults this
//! machine cannot inject (no root, no netem and no nftables) are reported as skipped with the
//! reason; every other run must pass, and with network namespaces every run must have run.
//! Takes about 50 s on 2 cores. (`chirper_campaign.rs` runs Chirper on DS-SMR under the same
//! faults and kill-oracle: 13 runs in CI across both services.)

use campaign::{runner, Options};

#[test]
fn ci_campaign_passes_every_run() {
    let seed = std::env::var("CHORUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_122);
    let runs = std::env::var("CHORUS_CAMPAIGN_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    println!("campaign seed {seed} (CHORUS_SEED={seed} replays the same plan)");
    let mut o = Options::new(runs, seed);
    o.work_dir = std::env::temp_dir().join(format!("chorus-campaign-test-{}", std::process::id()));
    o.json = Some(o.work_dir.with_extension("json"));
    let s = runner::run(&o).expect("the campaign starts");
    let _ = std::fs::remove_file(o.work_dir.with_extension("json"));
    assert_eq!(s.failed, 0, "failing runs (see their lines above)");
    assert_eq!(s.passed + s.skipped, runs);
    for r in &s.runs {
        if r.skipped {
            assert!(r.mechanism.starts_with("skipped: "), "{r:?}");
        } else {
            assert!(r.completed_ops >= 20, "{r:?}");
            assert!(r.states_equal, "{r:?}");
            assert_eq!(r.final_hashes.len(), 3, "{r:?}");
        }
    }
    let kills = s.runs.iter().filter(|r| r.fault == "kill-leader").count();
    assert_eq!(
        s.kill_leader_failover.runs, kills,
        "every leader kill is measured"
    );
    if s.netns == "available" {
        assert!(s.passed >= runs.min(10), "{} runs passed", s.passed);
    }
}
