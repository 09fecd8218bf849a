//! Goal: the campaign's checks fail when the cluster really loses acknowledged writes, so a
//! passing campaign means something.
//!
//! Method: one run of the negative control `control-wipe-all` (SIGKILL all three servers,
//! delete their durable logs, restart them) must be reported as failed: acknowledged writes
//! missing from the final state, or a history that is not linearizable. About 10 s.

use campaign::{runner, Fault, Options};

#[test]
fn a_wiped_cluster_fails_the_checks() {
    let mut o = Options::new(1, 3);
    o.faults = vec![Fault::ControlWipeAll];
    o.work_dir = std::env::temp_dir().join(format!("chorus-control-test-{}", std::process::id()));
    let s = runner::run(&o).expect("the campaign starts");
    let r = &s.runs[0];
    assert!(!r.skipped, "{r:?}");
    assert_eq!(s.failed, 1, "{r:?}");
    // Writes acknowledged before the wipe are gone: either no later write to their key hid
    // that (a lost acknowledged write), or a later command saw the wiped state (not
    // linearizable); with thousands of operations on 128 keys both happen in practice.
    assert!(
        r.lost_acks > 0 || r.linearizable.starts_with("not linearizable"),
        "{r:?}"
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.starts_with("acknowledged write lost") || p.starts_with("history: not")),
        "{:?}",
        r.problems
    );
    // The failing run keeps its files for inspection; this test removes them.
    let _ = std::fs::remove_dir_all(&o.work_dir);
}
