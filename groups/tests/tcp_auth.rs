//! Goal: with a cluster secret, the TCP runtime only lets nodes that know the secret into the
//! cluster, and refuses everything else loudly and quickly, without hurting the honest nodes.
//!
//! Method: `TcpNode`s on threads of this process, on loopback ports, each running a small app
//! that multicasts to the one group every node subscribes to and records what it delivers and
//! the application messages it receives. Strangers are raw `std::net::TcpStream`s that write
//! well-formed frames (`groups::frame::encode`) but do not know the secret. The checks are on
//! observable effects: deliveries, application messages, closed sockets and the nodes' link
//! counters (`LinkStats`), never on log text.

mod common;

use common::*;
use groups::codec::Postcard;
use groups::config::ClusterConfig;
use groups::frame::{Frame, FrameDecoder, Hello, Proof};
use groups::runtime::tcp::{LinkCounts, Secret, TcpError, TcpNode};
use groups::{GroupsNode, MsgId, NodeId, NodeOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "c2VjcmV0IHNoYXJlZCBieSB0aGUgaG9uZXN0IG5vZGVz";
const OTHER_SECRET: &str = "YSBkaWZmZXJlbnQgc2VjcmV0LCBzYW1lIGxlbmd0aA==";

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("auth", name)
}

fn cluster(n: u32, acceptors: &[u32]) -> ClusterConfig {
    one_log_cluster(CLUSTER, n, acceptors)
}

fn secret(s: &str) -> Option<Secret> {
    Some(Secret::new(s).unwrap())
}

/// (a) Three nodes sharing a secret, read from the file that the cluster file names, form a
/// cluster: every link authenticates, and every node delivers every message in one order.
#[test]
fn nodes_sharing_a_secret_deliver_in_agreement() {
    init_logs();
    let dir = temp_dir("shared");
    let secret_path = dir.join("cluster.secret");
    std::fs::write(&secret_path, format!("{SECRET}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Through the TOML text, as a deployed binary would load it.
    let text = cluster(3, &[1, 2, 3])
        .with_secret_file(secret_path.to_str().unwrap())
        .to_toml();
    assert!(text.contains("secret_file"), "{text}");
    let cfg = ClusterConfig::from_toml(&text).unwrap();
    const EACH: u64 = 100;
    let started = Instant::now();
    let nodes: Vec<Running> = (1..=3)
        .map(|id| start(&cfg, id, Key::FromConfig, EACH, None))
        .collect();
    let all_delivered = wait_for(Duration::from_secs(10), || {
        nodes.iter().all(|n| n.delivered().len() as u64 == 3 * EACH)
    });
    let took = started.elapsed();
    let delivered: Vec<Vec<MsgId>> = nodes.iter().map(Running::delivered).collect();
    let counts: Vec<LinkCounts> = nodes.iter().map(Running::counts).collect();
    drop(nodes);
    assert!(
        all_delivered,
        "not every node delivered {} messages within 10 s: {:?}; link counters {counts:#?}",
        3 * EACH,
        delivered.iter().map(Vec::len).collect::<Vec<_>>()
    );
    for (i, d) in delivered.iter().enumerate() {
        assert_eq!(d, &delivered[0], "node {} delivered another order", i + 1);
        for sender in 1..=3 {
            assert_eq!(
                d.iter().filter(|m| m.sender == NodeId(sender)).count() as u64,
                EACH,
                "node {} misses messages of node {sender}",
                i + 1
            );
        }
    }
    for (i, c) in counts.iter().enumerate() {
        assert!(
            c.handshakes >= 4,
            "node {} completed {} handshakes, expected 2 as dialer and 2 as acceptor",
            i + 1,
            c.handshakes
        );
        assert_eq!(c.auth_failures, 0, "node {}: {c:?}", i + 1);
        assert_eq!(c.frame_errors, 0, "node {}: {c:?}", i + 1);
    }
    eprintln!(
        "tcp_auth: 3 nodes delivered {} messages each in {:.2} s",
        3 * EACH,
        took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// (b) A node with the wrong secret: the honest nodes refuse its links (its proofs do not
/// verify) and count it, it learns nothing and delivers nothing, and the honest majority of the
/// log's acceptors keeps ordering and delivering.
#[test]
fn node_with_a_wrong_secret_is_shut_out_and_the_majority_delivers() {
    init_logs();
    let cfg = cluster(3, &[1, 2, 3]);
    const EACH: u64 = 100;
    let honest: Vec<Running> = (1..=2)
        .map(|id| start(&cfg, id, Key::Given(secret(SECRET)), EACH, None))
        .collect();
    let intruder = start(&cfg, 3, Key::Given(secret(OTHER_SECRET)), EACH, None);
    let ok = wait_for(Duration::from_secs(10), || {
        honest
            .iter()
            .all(|n| n.delivered().len() as u64 >= 2 * EACH)
            && honest.iter().all(|n| n.counts().bad_proofs > 0)
            && intruder.counts().bad_proofs > 0
    });
    // Leave the intruder time to (fail to) get anything through.
    std::thread::sleep(Duration::from_millis(300));
    let delivered: Vec<Vec<MsgId>> = honest.iter().map(Running::delivered).collect();
    let counts: Vec<LinkCounts> = honest.iter().map(Running::counts).collect();
    let intruder_counts = intruder.counts();
    let intruder_delivered = intruder.delivered();
    drop(intruder);
    drop(honest);
    assert!(
        ok,
        "honest deliveries {:?}, honest counters {counts:#?}, intruder counters {intruder_counts:#?}",
        delivered.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(delivered[0], delivered[1], "the honest nodes disagree");
    assert_eq!(delivered[0].len() as u64, 2 * EACH);
    assert!(
        delivered[0].iter().all(|m| m.sender != NodeId(3)),
        "a message of the intruder was ordered"
    );
    assert!(
        intruder_delivered.is_empty(),
        "the intruder delivered {} messages",
        intruder_delivered.len()
    );
    for (i, c) in counts.iter().enumerate() {
        assert!(
            c.auth_failures > 0 && c.frame_errors > 0,
            "node {}: {c:?}",
            i + 1
        );
        assert!(
            c.handshakes >= 2,
            "node {} did not authenticate its honest peer: {c:?}",
            i + 1
        );
    }
    assert_eq!(intruder_counts.handshakes, 0, "{intruder_counts:?}");
}

/// (c) A raw socket that names a real node in a correctly framed `Hello` but does not know the
/// secret is closed, however it goes about it, and its message never reaches the application.
#[test]
fn stranger_without_the_secret_is_closed_and_not_believed() {
    init_logs();
    let cfg = cluster(2, &[1]);
    let node = start(&cfg, 1, Key::Given(secret(SECRET)), 0, None);
    let hello = |nonce| {
        encode(&Frame::Hello(Hello {
            node: NodeId(2),
            nonce,
        }))
    };
    let started = Instant::now();

    // 1. An authenticating hello followed at once by a message: the node answers the hello
    //    with a challenge, then closes on the message.
    let mut s = connect(&cfg, 1);
    s.write_all(&hello(Some([7; 32]))).unwrap();
    s.write_all(&forged_app_msg("forged before the proof"))
        .unwrap();
    let (frames, closed) = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(closed, "the node kept a stranger's connection open");
    assert!(
        matches!(frames.as_slice(), [Frame::Challenge(_)]),
        "expected exactly one challenge, got {frames:?}"
    );

    // 2. A hello without nonce, as a node without secret would send.
    let mut s = connect(&cfg, 1);
    s.write_all(&hello(None)).unwrap();
    s.write_all(&forged_app_msg("forged without hello nonce"))
        .unwrap();
    let (frames, closed) = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(closed && frames.is_empty(), "{frames:?}, closed {closed}");

    // 3. A made-up proof after the challenge.
    let mut s = connect(&cfg, 1);
    s.write_all(&hello(Some([9; 32]))).unwrap();
    let mut d = FrameDecoder::new(Postcard, CLUSTER);
    let mut buf = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let challenge = loop {
        let n = s.read(&mut buf).expect("a challenge");
        assert!(n > 0, "closed before the challenge");
        d.extend(&buf[..n]);
        if let Some(f) = d.next_frame().unwrap() {
            break f;
        }
    };
    assert!(matches!(challenge, Frame::Challenge(_)), "{challenge:?}");
    s.write_all(&encode(&Frame::Proof(Proof { proof: [0; 32] })))
        .unwrap();
    s.write_all(&forged_app_msg("forged after a bad proof"))
        .unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(closed, "a wrong proof was accepted");

    // 4. Out of turn: a proof first, and a hello naming the node itself.
    let mut s = connect(&cfg, 1);
    s.write_all(&encode(&Frame::Proof(Proof { proof: [1; 32] })))
        .unwrap();
    assert!(read_until_closed(&mut s, Duration::from_secs(3)).1);
    let mut s = connect(&cfg, 1);
    s.write_all(&encode(&Frame::Hello(Hello {
        node: NodeId(1),
        nonce: Some([3; 32]),
    })))
    .unwrap();
    assert!(read_until_closed(&mut s, Duration::from_secs(3)).1);
    let took = started.elapsed();

    // Give the node a moment in case anything slipped through, then look.
    std::thread::sleep(Duration::from_millis(200));
    let app = node.app();
    let c = node.counts();
    drop(node);
    assert!(app.is_empty(), "forged messages reached the app: {app:?}");
    assert_eq!(c.handshakes, 0, "{c:?}");
    assert_eq!(c.bad_proofs, 1, "{c:?}");
    assert_eq!(c.plain_hellos_refused, 1, "{c:?}");
    assert!(c.frame_errors >= 5, "{c:?}");
    assert!(
        took < Duration::from_secs(2),
        "refusals should be immediate, took {took:?}"
    );
}

/// Control for (c): without a secret, the same stranger *is* believed. This is the attack the
/// secret prevents, and it shows the test above observes the right thing.
#[test]
fn without_a_secret_a_stranger_is_believed() {
    init_logs();
    let cfg = cluster(2, &[1]);
    let node = start(&cfg, 1, Key::Given(None), 0, None);
    let mut s = connect(&cfg, 1);
    s.write_all(&encode(&Frame::Hello(Hello {
        node: NodeId(2),
        nonce: None,
    })))
    .unwrap();
    s.write_all(&forged_app_msg("forged")).unwrap();
    let believed = wait_for(Duration::from_secs(3), || {
        node.app()
            .iter()
            .any(|(from, p)| *from == NodeId(2) && &p[..] == b"forged")
    });
    drop(node);
    assert!(
        believed,
        "the unauthenticated stranger's message was not delivered"
    );
}

/// (d) A node without a secret and a node with one refuse each other's links, each for its own
/// reason, and nothing passes between them.
#[test]
fn secret_and_no_secret_refuse_each_other() {
    init_logs();
    let cfg = cluster(2, &[1]);
    let with = start(&cfg, 1, Key::Given(secret(SECRET)), 0, None);
    let without = start(&cfg, 2, Key::Given(None), 20, None);
    let refused = wait_for(Duration::from_secs(5), || {
        with.counts().plain_hellos_refused > 0 && without.counts().auth_hellos_refused > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    let (cw, cn) = (with.counts(), without.counts());
    let (dw, dn) = (with.delivered(), without.delivered());
    drop(with);
    drop(without);
    assert!(refused, "with secret: {cw:#?}\nwithout: {cn:#?}");
    for c in [&cw, &cn] {
        assert!(c.auth_failures > 0 && c.frame_errors > 0, "{c:?}");
        assert_eq!(c.handshakes, 0, "{c:?}");
    }
    assert!(
        dw.is_empty() && dn.is_empty(),
        "messages crossed a refused link: {} and {}",
        dw.len(),
        dn.len()
    );
}

/// A connection that says nothing, or stops after its hello, is closed at the handshake
/// timeout rather than held open.
#[test]
fn unfinished_handshakes_time_out() {
    init_logs();
    let cfg = cluster(2, &[1]);
    let timeout = Duration::from_millis(300);
    let node = start(&cfg, 1, Key::Given(secret(SECRET)), 0, Some(timeout));
    let started = Instant::now();
    let mut silent = connect(&cfg, 1);
    let mut halfway = connect(&cfg, 1);
    halfway
        .write_all(&encode(&Frame::Hello(Hello {
            node: NodeId(2),
            nonce: Some([5; 32]),
        })))
        .unwrap();
    let (_, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(3));
    let (frames, halfway_closed) = read_until_closed(&mut halfway, Duration::from_secs(3));
    let took = started.elapsed();
    let c = node.counts();
    drop(node);
    assert!(
        silent_closed && halfway_closed,
        "silent closed {silent_closed}, halfway closed {halfway_closed}"
    );
    assert!(
        matches!(frames.as_slice(), [Frame::Challenge(_)]),
        "{frames:?}"
    );
    assert!(
        took >= timeout - Duration::from_millis(50) && took < Duration::from_secs(2),
        "closed after {took:?}, timeout {timeout:?}"
    );
    assert_eq!(c.handshake_timeouts, 2, "{c:?}");
}

/// (e) A missing, unreadable or too short secret is a typed error from `bind`, never a panic.
#[test]
fn bad_secrets_are_typed_errors() {
    let dir = temp_dir("files");
    let cfg = cluster(1, &[1]);
    let bind = |cfg: &ClusterConfig| {
        let node = GroupsNode::in_memory(Arc::new(cfg.clone()), NodeId(1), NodeOptions::fresh());
        TcpNode::bind(node, groups::runtime::inproc::Idle).map(|_| ())
    };

    let missing = dir.join("missing.secret");
    match bind(&cfg.clone().with_secret_file(missing.to_str().unwrap())) {
        Err(e @ TcpError::SecretFile { .. }) => {
            assert!(e.to_string().contains("missing.secret"), "{e}")
        }
        other => panic!("missing file: {other:?}"),
    }

    match bind(&cfg.clone().with_secret_file("no-such-dir/chorus.secret")) {
        Err(e @ TcpError::SecretFile { .. }) => {
            assert!(e.to_string().contains("working directory"), "{e}")
        }
        other => panic!("missing relative file: {other:?}"),
    }

    // A directory cannot be read as a file.
    match bind(&cfg.clone().with_secret_file(dir.to_str().unwrap())) {
        Err(TcpError::SecretFile { .. }) => {}
        other => panic!("directory: {other:?}"),
    }

    // 15 bytes once the trailing newlines and spaces are trimmed.
    let short = dir.join("short.secret");
    std::fs::write(&short, "0123456789abcde\n \n").unwrap();
    match bind(&cfg.clone().with_secret_file(short.to_str().unwrap())) {
        Err(e @ TcpError::SecretTooShort { len: 15, .. }) => {
            assert!(e.to_string().contains("at least 16"), "{e}")
        }
        other => panic!("short secret: {other:?}"),
    }

    let empty = dir.join("empty.secret");
    std::fs::write(&empty, "\n").unwrap();
    assert!(matches!(
        bind(&cfg.clone().with_secret_file(empty.to_str().unwrap())),
        Err(TcpError::SecretTooShort { len: 0, .. })
    ));

    // 16 bytes and a newline is enough.
    let good = dir.join("good.secret");
    std::fs::write(&good, "0123456789abcdef\n").unwrap();
    bind(&cfg.clone().with_secret_file(good.to_str().unwrap())).expect("a 16-byte secret");

    assert!(matches!(
        Secret::new("too short"),
        Err(TcpError::SecretTooShort { len: 9, .. })
    ));
    let s = Secret::new(SECRET).unwrap();
    assert!(!format!("{s:?}").contains(SECRET), "Debug shows the secret");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secure by default: `bind` refuses a configuration with no secret (a typed error that says
/// how to get one), unless the configuration allows insecure links (`--insecure`).
#[test]
fn no_secret_is_refused_unless_insecure() {
    let cfg = cluster(1, &[1]);
    let bind = |cfg: ClusterConfig| {
        let node = GroupsNode::in_memory(Arc::new(cfg), NodeId(1), NodeOptions::fresh());
        TcpNode::bind(node, groups::runtime::inproc::Idle).map(|t| t.authenticates())
    };
    match bind(cfg.clone()) {
        Err(e @ TcpError::Unauthenticated) => {
            let text = e.to_string();
            assert!(
                text.contains("--write-config") && text.contains("--insecure"),
                "{text}"
            );
        }
        other => panic!("no secret: {other:?}"),
    }
    assert!(!bind(cfg.with_insecure(true)).expect("--insecure"));
}
