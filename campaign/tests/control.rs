//! Goal: the campaign's checks fail when the cluster really loses acknowledged writes, so a
//! passing campaign means something: for the B+-tree and for Chirper on DS-SMR.
//!
//! Method: one run of the negative control `control-wipe-all` (SIGKILL all servers, delete
//! their durable logs, restart them) per service must be reported as failed: acknowledged
//! writes (posts) missing from the final state, or a history that is not linearizable. About
//! 10 s (B+-tree) and 15 s (Chirper), one after the other.

use campaign::{runner, Fault, Options, ServiceKind};
use std::sync::Mutex;

/// The two controls run one after the other (twelve server processes at once would only
/// slow a 2-core machine down).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn control(service: ServiceKind, tag: &str) -> campaign::runner::Summary {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut o = Options::new(1, 3);
    o.faults = vec![Fault::ControlWipeAll];
    o.services = vec![service];
    o.work_dir = std::env::temp_dir().join(format!("chorus-control-{tag}-{}", std::process::id()));
    let s = runner::run(&o).expect("the campaign starts");
    // The failing run keeps its files for inspection; this test removes them.
    let _ = std::fs::remove_dir_all(&o.work_dir);
    s
}

fn assert_caught(s: &campaign::runner::Summary) {
    let r = &s.runs[0];
    assert!(!r.skipped, "{r:?}");
    assert_eq!(s.failed, 1, "{r:?}");
    // Writes acknowledged before the wipe are gone: either no later write hid that (a lost
    // acknowledged write), or a later command saw the wiped state (not linearizable); with
    // hundreds of operations on a small state both happen in practice.
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
}

#[test]
fn a_wiped_cluster_fails_the_checks() {
    assert_caught(&control(ServiceKind::Btree, "btree"));
}

#[test]
fn a_wiped_chirper_cluster_fails_the_checks() {
    let s = control(ServiceKind::Chirper, "chirper");
    assert_eq!(s.runs[0].service, "chirper");
    assert_caught(&s);
}
