//! Goal: a client request over the cluster's payload limit gets a typed error at once, is not
//! sent, and leaves the client and the replicas serving.
//!
//! Method: an in-process P-SMR deployment of the B+-tree (2 replicas of 2 workers, 3
//! acceptors) with `payload_bytes_max` lowered to 4 KiB; a client inserts a value well under
//! the limit, one over it, then reads and inserts again. Checked: the large insert ends with
//! `ClientError::TooLarge` naming both sizes, nothing of it reached the tree, the client's
//! `too_large` counter counts it, and both replicas end in the same state.

use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use engine::host::client::ClientError;
use engine::inproc::{self, EngineApp};
use engine::psmr::deployment::Deployment;
use engine::psmr::executor::ExecOptions;
use engine::psmr::proxy::Mode;
use engine::psmr::replica::ReplicaOptions;
use groups::config::Tuning;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_request_over_the_payload_limit_gets_a_typed_error_and_is_not_sent() {
    let workers = 2;
    let tuning = Tuning {
        payload_bytes_max: LIMIT,
        ..Tuning::default()
    };
    let d = Deployment::new(2, 1, workers, 1, tuning).unwrap();
    let service = Arc::new(TreeService::new(TreeConfig {
        fanout: 8,
        key_space: 1 << 16,
        prefill: 100,
        value_bytes: 8,
    }));
    let options = ReplicaOptions {
        exec: ExecOptions {
            check_conflicts: false,
            state_hashes: true,
        },
        ..ReplicaOptions::new(workers)
    };
    let mut handle = None;
    let cluster = inproc::start(&d, service.clone(), options, |id| {
        let (app, h) = engine::psmr::proxy::handle_app(
            id,
            1,
            service.clone(),
            Mode::Psmr,
            workers,
            200,
            false,
        );
        handle = Some(h);
        app
    });
    let handle = handle.unwrap();
    let call = |cmd: TreeCommand| handle.call(0, cmd, TIMEOUT).expect("a reply in time");

    let small: Bytes = (0..LIMIT as u64 / 2)
        .map(|i| (i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8)
        .collect();
    assert_eq!(
        call(TreeCommand::Insert(5, small.clone())),
        Ok(TreeReply::Inserted(None))
    );
    // Bytes that do not pack (the wire format packs values of a narrow range).
    let large: Bytes = (0..2 * LIMIT as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    match call(TreeCommand::Insert(6, large)) {
        Err(ClientError::TooLarge { bytes, max }) => {
            assert_eq!(max, LIMIT);
            assert!(bytes > 2 * LIMIT, "{bytes}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The large request never ran; the client and the replicas go on serving.
    assert_eq!(call(TreeCommand::Get(6)), Ok(TreeReply::Value(None)));
    assert_eq!(call(TreeCommand::Get(5)), Ok(TreeReply::Value(Some(small))));
    assert_eq!(
        call(TreeCommand::Insert(6, Bytes::from_static(b"fits"))),
        Ok(TreeReply::Inserted(None))
    );

    inproc::await_level(&cluster, &d.replicas, TIMEOUT).expect("the replicas level up");
    let apps = cluster.stop();
    let client = apps
        .values()
        .find_map(EngineApp::as_client)
        .expect("client app")
        .host
        .stats();
    assert_eq!(client.too_large, 1);
    assert_eq!(client.submitted, 5);
    assert_eq!(client.completed, 4, "the refused command was never pending");
    let hashes: Vec<_> = apps
        .values()
        .filter_map(EngineApp::as_replica)
        .map(|r| {
            r.host
                .core
                .report
                .clone()
                .expect("replica reported")
                .state_hash
        })
        .collect();
    assert_eq!(hashes.len(), 2);
    assert!(hashes[0].is_some() && hashes[0] == hashes[1], "{hashes:?}");
}
