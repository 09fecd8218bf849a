//! Goal: with `[tls]` in the cluster file, links are mutual TLS and a member proves *which*
//! member it is (issue 16, part 3): a TLS cluster delivers in agreement; a node whose
//! certificate comes from another CA is refused; a dialer presenting member 2's certificate
//! but claiming to be node 3 is refused (and a control claiming node 2 with it is believed);
//! a plaintext stranger on a TLS port is refused; a node whose own certificate names another
//! member does not start. Everything is counted in `LinkStats`.
//!
//! Method: `TcpNode`s on threads of this process on loopback, certificates from
//! `groups::credentials::write_tls` (a fresh CA and one certificate per node), strangers as
//! raw sockets or a rustls client of the test's own. Checks are on deliveries, application
//! messages, closed sockets and link counters.

mod common;

use common::*;
use groups::config::{ClusterConfig, LogConfig, NodeConfig, TlsFiles, Tuning};
use groups::credentials::{member_name, write_tls};
use groups::frame::{Frame, Hello};
use groups::runtime::tcp::{TcpError, TcpNode};
use groups::{GroupId, GroupSet, GroupsNode, LogId, MsgId, NodeId, NodeOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chorus-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` nodes on loopback, one group every node subscribes to, one log run by `acceptors`.
fn cluster(n: u32, acceptors: &[u32]) -> ClusterConfig {
    let nodes = (1..=n)
        .map(|id| NodeConfig {
            id: NodeId(id),
            addr: Some(format!("127.0.0.1:{}", free_port())),
            subscriptions: vec![GroupSet::singleton(GroupId(0))],
        })
        .collect();
    let logs = vec![LogConfig {
        id: LogId(0),
        covers: GroupSet::singleton(GroupId(0)),
        acceptors: acceptors.iter().map(|&a| NodeId(a)).collect(),
    }];
    ClusterConfig::new(CLUSTER, 1, nodes, logs, Tuning::default()).unwrap()
}

/// A TLS client of the test's own, presenting node `as_node`'s certificate from `files`.
fn tls_stranger(
    cfg: &ClusterConfig,
    files: &TlsFiles,
    as_node: u32,
    to: u32,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&files.ca_file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(files.cert_of(NodeId(as_node)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(files.key_of(NodeId(as_node))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let name = ServerName::try_from(member_name(CLUSTER.into(), NodeId(to))).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = connect(cfg, to);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Whether the peer closes the TLS stream (end, error or alert) within `within`.
fn tls_closed(s: &mut impl Read, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
    }
}

#[test]
fn tls_cluster_delivers_in_agreement() {
    init_logs();
    let dir = temp_dir("agree");
    let cfg = groups::credentials::with_new_tls(cluster(3, &[1, 2, 3]), &dir).unwrap();
    // Through the TOML text, as a deployed binary would load it; no secret: TLS alone.
    let text = cfg.to_toml();
    assert!(
        text.contains("[tls]") && text.contains("node-{node}.crt"),
        "{text}"
    );
    assert!(!text.contains("secret_file"));
    let cfg = ClusterConfig::from_toml(&text).unwrap();
    #[cfg(unix)]
    for f in ["ca.crt", "node-1.crt", "node-1.key", "node-3.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}: {mode:o}");
    }
    const EACH: u64 = 100;
    let nodes: Vec<Running> = (1..=3)
        .map(|id| start(&cfg, id, Key::FromConfig, EACH, None))
        .collect();
    let all = wait_for(Duration::from_secs(15), || {
        nodes.iter().all(|n| n.delivered().len() as u64 == 3 * EACH)
    });
    let delivered: Vec<Vec<MsgId>> = nodes.iter().map(Running::delivered).collect();
    let counts: Vec<_> = nodes.iter().map(Running::counts).collect();
    drop(nodes);
    assert!(
        all,
        "deliveries {:?}; {counts:#?}",
        delivered.iter().map(Vec::len).collect::<Vec<_>>()
    );
    for d in &delivered {
        assert_eq!(d, &delivered[0], "nodes disagree on the order");
    }
    for c in &counts {
        assert_eq!(c.tls_failures, 0, "{c:?}");
        assert_eq!(c.frame_errors, 0, "{c:?}");
        assert!(c.handshakes >= 2, "{c:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused() {
    init_logs();
    let dir = temp_dir("other-ca");
    let cfg = cluster(3, &[1, 2, 3]);
    let honest = write_tls(&cfg, &dir.join("a")).unwrap();
    let foreign = write_tls(&cfg, &dir.join("b")).unwrap();
    const EACH: u64 = 50;
    let good = cfg.clone().with_tls(honest);
    let nodes: Vec<Running> = (1..=2)
        .map(|id| start(&good, id, Key::FromConfig, EACH, None))
        .collect();
    let intruder = start(&cfg.with_tls(foreign), 3, Key::FromConfig, EACH, None);
    let ok = wait_for(Duration::from_secs(15), || {
        nodes.iter().all(|n| n.delivered().len() as u64 >= 2 * EACH)
            && nodes.iter().all(|n| n.counts().tls_failures > 0)
            && intruder.counts().tls_failures > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    let d: Vec<Vec<MsgId>> = nodes.iter().map(Running::delivered).collect();
    let counts: Vec<_> = nodes.iter().map(Running::counts).collect();
    let (ic, id) = (intruder.counts(), intruder.delivered());
    drop(intruder);
    drop(nodes);
    assert!(ok, "honest {counts:#?}, intruder {ic:#?}");
    assert_eq!(d[0], d[1]);
    assert!(
        d[0].iter().all(|m| m.sender != NodeId(3)),
        "the intruder's message was ordered"
    );
    assert!(id.is_empty(), "the intruder delivered {}", id.len());
    assert_eq!(ic.handshakes, 0, "{ic:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_member_claiming_another_members_id_is_refused() {
    init_logs();
    let dir = temp_dir("claim");
    let cfg = groups::credentials::with_new_tls(cluster(3, &[1]), &dir).unwrap();
    let files = cfg.tls.clone().unwrap();
    let node = start(&cfg, 1, Key::FromConfig, 0, None);
    let hello = |n: u32| {
        encode(&Frame::Hello(Hello {
            node: NodeId(n),
            nonce: None,
        }))
    };

    // Member 2's certificate, claiming to be node 3.
    let mut s = tls_stranger(&cfg, &files, 2, 1);
    s.write_all(&hello(3)).unwrap();
    s.write_all(&forged_app_msg("from 3, really 2")).unwrap();
    s.flush().unwrap();
    assert!(
        tls_closed(&mut s, Duration::from_secs(3)),
        "the false claim was kept open"
    );

    // Control: the same certificate claiming its own node is believed.
    let mut s = tls_stranger(&cfg, &files, 2, 1);
    s.write_all(&hello(2)).unwrap();
    s.write_all(&forged_app_msg("from 2")).unwrap();
    s.flush().unwrap();
    let believed = wait_for(Duration::from_secs(3), || {
        node.app()
            .iter()
            .any(|(from, p)| *from == NodeId(2) && &p[..] == b"from 2")
    });
    let app = node.app();
    let c = node.counts();
    drop(s);
    drop(node);
    assert!(believed, "the honest claim was not believed: {c:?}");
    assert!(
        app.iter().all(|(from, _)| *from != NodeId(3)),
        "the false claim reached the app: {app:?}"
    );
    assert_eq!(c.tls_identity_mismatches, 1, "{c:?}");
    assert!(c.auth_failures >= 1, "{c:?}");

    // A node whose own certificate names another member does not start.
    let mut wrong = files.clone();
    wrong.cert_file = files.cert_of(NodeId(2));
    wrong.key_file = files.key_of(NodeId(2));
    let n = GroupsNode::in_memory(
        Arc::new(cfg.clone().with_tls(wrong)),
        NodeId(3),
        NodeOptions::fresh(),
    );
    match TcpNode::bind(n, groups::runtime::inproc::Idle) {
        Err(e @ TcpError::Tls(_)) => assert!(e.to_string().contains("does not name"), "{e}"),
        Err(e) => panic!("wrong certificate: {e}"),
        Ok(_) => panic!("a node started with another member's certificate"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plaintext_stranger_is_refused_on_a_tls_port() {
    init_logs();
    let dir = temp_dir("plain");
    let cfg = groups::credentials::with_new_tls(cluster(2, &[1]), &dir).unwrap();
    let node = start(&cfg, 1, Key::FromConfig, 0, None);
    let mut s: TcpStream = connect(&cfg, 1);
    s.write_all(&encode(&Frame::Hello(Hello {
        node: NodeId(2),
        nonce: None,
    })))
    .unwrap();
    s.write_all(&forged_app_msg("plain")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    // The node may answer with a TLS alert before it closes: not frames.
    let closed = tls_closed(&mut s, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(100));
    let (app, c) = (node.app(), node.counts());
    drop(node);
    assert!(closed, "a plaintext stranger was kept open");
    assert!(app.is_empty(), "{app:?}");
    assert_eq!(c.tls_failures, 1, "{c:?}");
    assert_eq!(c.handshakes, 0, "{c:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
