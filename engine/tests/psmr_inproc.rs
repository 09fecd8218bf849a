//! Goal: threaded P-SMR and opt-PSMR replicas execute concurrent clients' commands correctly.
//!
//! Method: two replicas of three workers each (three acceptors), the test key-value service,
//! four client threads. Keys get 100 each; then the clients run concurrent transfers (between
//! keys of different workers: multi-worker commands), inserts of fresh keys (all-worker in
//! P-SMR; optimistic single-worker in opt-PSMR, with frequent refusals), reads and sums.
//! Checked: money is conserved (every sum is 100 x keys), every insert succeeds exactly once,
//! both replicas end in the same state, the conflict detector (on) saw no two dependent
//! commands run at once, and opt-PSMR really aborted and retried.

use engine::calls::ClientHandle;
use engine::inproc::{self, EngineApp};
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::psmr::replica::ReplicaOptions;
use engine::testing::{KvCommand, KvReply, KvService};
use groups::config::Tuning;
use std::sync::Arc;
use std::time::Duration;

const KEYS: u64 = 30;
const CLIENTS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(20);

fn run(mode: Mode) {
    let workers = 3;
    let d = Deployment::new(2, 1, workers, 1, Tuning::default()).unwrap();
    let service = Arc::new(KvService { split_every: 4 });
    let options = ReplicaOptions {
        exec: ExecOptions {
            check_conflicts: true,
            state_hashes: true,
        },
        ..ReplicaOptions::new(workers)
    };
    let mut handle: Option<ClientHandle<KvCommand, KvReply>> = None;
    let cluster = inproc::start(&d, service.clone(), options, |id| {
        let (app, h) = engine::psmr::proxy::handle_app(
            id,
            CLIENTS,
            service.clone(),
            mode,
            workers,
            200,
            false,
        );
        handle = Some(h);
        app
    });
    let handle = handle.unwrap();
    let call = |c: usize, cmd: KvCommand| {
        handle
            .call(c, cmd.clone(), TIMEOUT)
            .unwrap_or_else(|| panic!("{cmd:?} timed out"))
            .unwrap()
    };
    for k in 0..KEYS {
        assert_eq!(call(0, KvCommand::Put(k, 100)), KvReply::Ok);
    }
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let h = handle.clone();
            std::thread::spawn(move || {
                let call = |cmd: KvCommand| h.call(c, cmd, TIMEOUT).expect("timed out").unwrap();
                let mut inserted = 0;
                for i in 0..60u64 {
                    let a = (i * 7 + c as u64) % KEYS;
                    let b = (i * 11 + 3 * c as u64 + 1) % KEYS;
                    assert_eq!(call(KvCommand::Transfer(a, b, 5)), KvReply::Ok);
                    let fresh = 1_000 + c as u64 * 1_000 + i;
                    assert_eq!(call(KvCommand::Insert(fresh, 0)), KvReply::Inserted(true));
                    inserted += 1;
                    if i % 10 == 0 {
                        assert_eq!(call(KvCommand::Sum), KvReply::Total(100 * KEYS as i64));
                    }
                    assert!(matches!(call(KvCommand::Get(a)), KvReply::Value(Some(_))));
                }
                inserted
            })
        })
        .collect();
    let inserted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(call(0, KvCommand::Len), KvReply::Len(KEYS + inserted));
    assert_eq!(
        call(0, KvCommand::Insert(1_000, 9)),
        KvReply::Inserted(false)
    );

    inproc::await_level(&cluster, &d.replicas, TIMEOUT).expect("the replicas level up");
    let apps = cluster.stop();
    let reports: Vec<_> = apps
        .values()
        .filter_map(EngineApp::as_replica)
        .map(|r| r.host.core.report.clone().expect("replica reported"))
        .collect();
    assert_eq!(reports.len(), 2);
    let hashes: Vec<_> = reports.iter().map(|r| r.state_hash).collect();
    assert!(
        hashes[0].is_some() && hashes[0] == hashes[1],
        "replicas diverged: {hashes:?}"
    );
    let multi: u64 = reports[0].workers.iter().map(|w| w.multi).sum();
    let aborts: u64 = reports[0].workers.iter().map(|w| w.aborts).sum();
    assert!(multi > 0, "multi-worker commands ran");
    let client = apps
        .values()
        .find_map(EngineApp::as_client)
        .expect("client app")
        .host
        .stats();
    assert_eq!(client.divergences, 0);
    match mode {
        Mode::OptPsmr => {
            assert!(aborts > 0, "opt-PSMR refused some inserts");
            assert_eq!(
                client.aborts, aborts,
                "every refusal was retried conservatively"
            );
        }
        _ => assert_eq!(aborts, 0),
    }
}

#[test]
fn psmr_executes_concurrent_clients_correctly() {
    run(Mode::Psmr);
}

#[test]
fn opt_psmr_executes_concurrent_clients_correctly() {
    run(Mode::OptPsmr);
}
