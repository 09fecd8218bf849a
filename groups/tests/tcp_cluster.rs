//! Goal: the TCP runtime keeps the atomic multicast properties across real processes when one
//! of them is killed mid-run.
//!
//! Method: three `groups-node` processes on loopback, each an acceptor of every log (one per
//! group plus a global one) and a subscriber of two of the three groups, each multicasting a
//! paced mix of single- and multi-group messages. Node 3 (which leads log 2 at start) is killed
//! with SIGKILL after about a second. The survivors must deliver every message from a survivor
//! and every message anyone delivered; then the checker runs on the three records (node 3's
//! as a crashed stream and sender).

use groups::checker::{check_atomic, Sent, Stream, StreamId};
use groups::config::{ClusterConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use groups::record::Record;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MESSAGES: u64 = 1500;

struct Cluster {
    children: BTreeMap<u32, Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

use testkit::free_port;

fn subscriptions(n: u32) -> GroupSet {
    [GroupId(n - 1), GroupId(n % 3)].into_iter().collect()
}

/// Nodes 1-3 on loopback, each in groups `subscriptions(n)`, a log per group and a global
/// one, all run by the three.
fn three_nodes() -> ClusterConfig {
    let nodes: Vec<NodeConfig> = (1..=3)
        .map(|n| NodeConfig {
            id: NodeId(n),
            addr: Some(format!("127.0.0.1:{}", free_port())),
            subscriptions: vec![subscriptions(n)],
        })
        .collect();
    let acceptors = vec![NodeId(1), NodeId(2), NodeId(3)];
    ClusterConfig::per_group_plus_global(0xC0FFEE, 3, nodes, acceptors, Tuning::default()).unwrap()
}

#[test]
fn tcp_cluster_survives_a_killed_process() {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "chorus-tcp-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = three_nodes();
    let cfg = groups::credentials::with_new_secret(cfg, &dir.join("cluster.secret")).unwrap();
    let cfg_path = dir.join("cluster.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();

    let mut cluster = Cluster {
        children: BTreeMap::new(),
    };
    for n in 1..=3u32 {
        let child = Command::new(env!("CARGO_BIN_EXE_groups-node"))
            .args(["--config", cfg_path.to_str().unwrap()])
            .args(["--node", &n.to_string()])
            .args(["--messages", &MESSAGES.to_string(), "--rate", "1000"])
            .args(["--multi", "0.3"])
            .args(["--record", dir.join(format!("n{n}.log")).to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start groups-node");
        cluster.children.insert(n, child);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let mut victim = cluster.children.remove(&3).unwrap();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let killed_at = Instant::now();

    // Wait until the survivors have delivered everything they owe.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (sent, streams) = loop {
        let records: BTreeMap<u32, Record> = (1..=3)
            .map(|n| (n, Record::read(&dir.join(format!("n{n}.log"))).unwrap()))
            .collect();
        let sent: Vec<Sent> = records
            .iter()
            .flat_map(|(&n, r)| {
                r.sent.iter().map(move |(id, dests)| Sent {
                    id: *id,
                    dests: dests.clone(),
                    sender_correct: n != 3,
                    sent_at: 0,
                })
            })
            .collect();
        let streams: Vec<Stream> = records
            .iter()
            .map(|(&n, r)| Stream {
                id: StreamId {
                    node: NodeId(n),
                    incarnation: 0,
                    subscription: 0,
                },
                groups: subscriptions(n),
                correct: n != 3,
                started_at: 0,
                delivered: r.delivered_on(0),
            })
            .collect();
        let survivors_sent_all =
            records[&1].sent.len() as u64 == MESSAGES && records[&2].sent.len() as u64 == MESSAGES;
        let anywhere: HashSet<MsgId> = streams
            .iter()
            .flat_map(|s| s.delivered.iter().copied())
            .collect();
        let done = survivors_sent_all
            && streams.iter().filter(|s| s.correct).all(|s| {
                let got: HashSet<&MsgId> = s.delivered.iter().collect();
                sent.iter()
                    .filter(|m| m.dests.intersects(&s.groups))
                    .filter(|m| m.sender_correct || anywhere.contains(&m.id))
                    .all(|m| got.contains(&m.id))
            });
        if done {
            break (sent, streams);
        }
        if Instant::now() > deadline {
            let counts: Vec<(NodeId, usize)> = streams
                .iter()
                .map(|s| (s.id.node, s.delivered.len()))
                .collect();
            panic!(
                "survivors did not catch up within 60 s of the kill (delivered {counts:?}); records in {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let caught_up = killed_at.elapsed();
    drop(cluster);
    if let Err(v) = check_atomic(&sent, &streams) {
        panic!(
            "checker found {} violations, first: {}; records in {}",
            v.len(),
            v[0],
            dir.display()
        );
    }
    let by_victim = sent.iter().filter(|m| !m.sender_correct).count();
    eprintln!(
        "tcp_cluster: {} messages ({} from the killed node), survivors complete {:.1} s after the kill",
        sent.len(),
        by_victim,
        caught_up.as_secs_f64()
    );
    assert!(by_victim > 0, "the killed node never multicast anything");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `groups-node --metrics-addr` serves the node's counters, per-log positions and link counters
/// (authenticated handshakes) while it runs; a bad address is refused before anything starts.
#[test]
fn groups_node_serves_its_metrics() {
    let bin = env!("CARGO_BIN_EXE_groups-node");
    let (code, err) = testkit::exit_code_and_stderr(
        bin,
        &[
            "--config",
            "/nonexistent",
            "--node",
            "1",
            "--metrics-addr",
            "nowhere",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--metrics-addr \"nowhere\""), "{err}");

    let dir: PathBuf =
        std::env::temp_dir().join(format!("chorus-tcp-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = three_nodes();
    // Authenticated links, so the handshake counter has something to count.
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "metrics-test-secret-0123456789abcdef\n").unwrap();
    let cfg = cfg.with_secret_file(secret.to_str().unwrap());
    let cfg_path = dir.join("cluster.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let port = free_port();
    let _nodes = testkit::start_nodes(bin, &cfg_path, &dir, 1..=3, |n| {
        let mut a: Vec<String> = ["--messages", "300", "--rate", "1000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if n == 1 {
            a.extend(["--metrics-addr".to_string(), format!("127.0.0.1:{port}")]);
        }
        a
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| testkit::scrape(port).1);
        if let Some(text) = text {
            let delivered = testkit::metric_sum(&text, "chorus_node_delivered_total");
            let handshakes = testkit::metric_sum(&text, "chorus_link_handshakes_total");
            let leaders = testkit::metric_sum(&text, "chorus_log_is_leader");
            let decided = testkit::metric_sum(&text, "chorus_log_decided_index");
            if delivered.is_some_and(|d| d >= 300.0)
                && handshakes.is_some_and(|h| h >= 2.0)
                && leaders.is_some()
                && decided.is_some_and(|d| d > 0.0)
            {
                assert_eq!(testkit::metric_sum(&text, "chorus_node_id"), Some(1.0));
                assert_eq!(
                    testkit::metric_sum(&text, "chorus_link_frame_errors_total"),
                    Some(0.0)
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "metrics never showed the run:\n{text}"
            );
        }
        assert!(Instant::now() < deadline, "no metrics endpoint on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
