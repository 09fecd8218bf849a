//! Goal (issue 18.3): a data directory knows which cluster, node and logs it belongs to, and a
//! node refuses a directory that is not its own before it touches anything in it.
//!
//! Method: durable nodes are built in-process (`GroupsNode::durable`) on directories prepared
//! by hand: a fresh one, this node's own, another cluster's, another node's, one with log files
//! but no identity, one with an identity of an unknown format or a damaged one, and one written
//! for other logs. Each refused directory must be byte-for-byte what it was before (every
//! file's name and contents, including a torn log tail and a leftover temporary file that
//! opening the stores would have cut off and deleted), and the error must name both
//! identities.

use groups::config::{ClusterConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{ClusterId, NodeId};
use groups::log::disk::{self, DiskError, DiskStorage};
use groups::log::identity::{Identity, IdentityError, IDENTITY_FILE};
use groups::message::LogEntry;
use groups::node::{GroupsNode, NodeOptions};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Storage, StorageOp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const CLUSTER_A: ClusterId = ClusterId(0x1111_2222_3333_4444_5555_6666_7777_8888);
const CLUSTER_B: ClusterId = ClusterId(0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0000);

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "chorus-identity-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Three nodes accepting a log per group (2 groups) and a global log; the same layout for
/// every cluster id, as generated deployments are.
fn cluster(id: ClusterId, groups: u32) -> Arc<ClusterConfig> {
    let nodes = (1..=3)
        .map(|n| NodeConfig {
            id: NodeId(n),
            addr: None,
            subscriptions: vec![GroupSet::all(groups)],
        })
        .collect();
    let tuning = Tuning {
        trim: false,
        ..Tuning::default()
    };
    Arc::new(
        ClusterConfig::per_group_plus_global(
            id,
            groups,
            nodes,
            vec![NodeId(1), NodeId(2), NodeId(3)],
            tuning,
        )
        .unwrap(),
    )
}

fn start(cfg: &Arc<ClusterConfig>, node: u32, data_dir: &Path) -> Result<GroupsNode, DiskError> {
    GroupsNode::durable(cfg.clone(), NodeId(node), NodeOptions::default(), data_dir)
}

/// Starts the three nodes of `cfg` on fresh directories under `data_dir` and passes their
/// messages until every log has bootstrapped, which is when a durable node creates its
/// directory (nobody holds state, so they start empty together).
fn first_start(cfg: &Arc<ClusterConfig>, data_dir: &Path) {
    let mut nodes: Vec<GroupsNode> = (1..=3)
        .map(|n| start(cfg, n, data_dir).expect("fresh directory"))
        .collect();
    for _ in 0..10_000 {
        if nodes.iter().all(|n| n.recovering().is_empty()) {
            return;
        }
        let mut queue = Vec::new();
        for n in nodes.iter_mut() {
            n.tick();
            let mut out = Vec::new();
            n.take_outgoing(&mut out);
            queue.extend(out.into_iter().map(|(to, m)| (n.id(), to, m)));
        }
        for (from, to, msg) in queue {
            nodes[to.0 as usize - 1].handle(from, msg);
        }
    }
    panic!("the nodes did not bootstrap");
}

/// Node `node` of `cfg` creates its directory under `data_dir` (with its peers, see
/// [`first_start`]), and its first log gets some acceptor state, as if it had run.
fn lived_in(cfg: &Arc<ClusterConfig>, node: u32, data_dir: &Path) {
    first_start(cfg, data_dir);
    let path = disk::log_path(data_dir, NodeId(node), cfg.logs[0].id);
    let mut s = DiskStorage::open(&path).unwrap();
    s.write_atomically(vec![
        StorageOp::SetPromise(Ballot::with(1, 40, 0, 2)),
        StorageOp::AppendEntries(vec![LogEntry::Skip(5), LogEntry::Skip(9)]),
        StorageOp::SetAcceptedRound(Ballot::with(1, 40, 0, 2)),
        StorageOp::SetDecidedIndex(2),
    ])
    .unwrap();
}

/// What opening the stores would change if it ran: a torn tail on a log file (it would be cut
/// off) and a leftover compaction file (it would be deleted).
fn add_repairable_damage(dir: &Path) {
    let wal = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a log file");
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes.extend_from_slice(&[7, 0, 0, 0, 1, 2]);
    std::fs::write(&wal, bytes).unwrap();
    let mut tmp = wal.into_os_string();
    tmp.push(".tmp");
    std::fs::write(tmp, b"half a compaction").unwrap();
}

/// Every file under `dir` (recursively) with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn refused(r: Result<GroupsNode, DiskError>) -> IdentityError {
    match r {
        Ok(_) => panic!("the directory was accepted"),
        Err(DiskError::Identity(e)) => *e,
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

#[test]
fn a_fresh_directory_gets_an_identity_and_every_restart_counts_up() {
    let data = temp_dir("fresh");
    let a = cluster(CLUSTER_A, 2);
    // Alone, a node without a directory creates nothing: it must first hear that nobody
    // holds state (or recover it).
    drop(start(&a, 3, &data).unwrap());
    assert!(!data.join("node-3").exists());
    first_start(&a, &data);
    let dir = disk::node_dir(&data, NodeId(3));
    let text = std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
    let id = Identity::parse(&text).unwrap();
    assert_eq!(id.cluster, CLUSTER_A);
    assert_eq!(id.node, NodeId(3));
    assert_eq!(id.logs, a.logs.iter().map(|l| l.id).collect::<Vec<_>>());
    assert_eq!(id.incarnation, 1);
    assert!(!dir.join("IDENTITY.tmp").exists());
    drop(start(&a, 3, &data).unwrap());
    drop(start(&a, 3, &data).unwrap());
    let id = Identity::parse(&std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap()).unwrap();
    assert_eq!(id.incarnation, 3);
    // Creations cut short: a temporary identity alone in the directory, or a half-assembled
    // `node-N.creating`; both count as fresh and are replaced.
    let data2 = temp_dir("fresh-tmp");
    let dir2 = disk::node_dir(&data2, NodeId(1));
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("IDENTITY.tmp"), b"chorus-data-dir").unwrap();
    let half = data2.join("node-2.creating");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("log-0.wal"), b"CHORWAL\x01 half").unwrap();
    first_start(&a, &data2);
    assert!(dir2.join(IDENTITY_FILE).exists());
    assert!(!dir2.join("IDENTITY.tmp").exists());
    assert!(!half.exists());
    assert!(disk::node_dir(&data2, NodeId(2))
        .join(IDENTITY_FILE)
        .exists());
}

#[test]
fn another_clusters_directory_is_refused_and_left_untouched() {
    // Cluster B, same generated layout, another id: its node 3 lived a while.
    let data_b = temp_dir("b");
    let b = cluster(CLUSTER_B, 2);
    lived_in(&b, 3, &data_b);
    // Its directory is put under cluster A's node 3.
    let data_a = temp_dir("a");
    let a = cluster(CLUSTER_A, 2);
    let dir = disk::node_dir(&data_a, NodeId(3));
    std::fs::rename(disk::node_dir(&data_b, NodeId(3)), &dir).unwrap();
    add_repairable_damage(&dir);
    let before = snapshot(&data_a);
    let e = refused(start(&a, 3, &data_a));
    assert_eq!(snapshot(&data_a), before, "the directory was changed");
    assert!(matches!(e, IdentityError::Foreign { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&CLUSTER_A.to_string()), "{msg}");
    assert!(msg.contains(&CLUSTER_B.to_string()), "{msg}");
    assert!(
        msg.contains("nothing in the directory was changed"),
        "{msg}"
    );
    // Refused again at the next attempt, still untouched.
    refused(start(&a, 3, &data_a));
    assert_eq!(snapshot(&data_a), before);
}

#[test]
fn another_nodes_directory_is_refused_and_left_untouched() {
    let data = temp_dir("other-node");
    let a = cluster(CLUSTER_A, 2);
    lived_in(&a, 2, &data);
    let dir = disk::node_dir(&data, NodeId(3));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(disk::node_dir(&data, NodeId(2)), &dir).unwrap();
    add_repairable_damage(&dir);
    let before = snapshot(&data);
    let e = refused(start(&a, 3, &data));
    assert_eq!(snapshot(&data), before);
    let msg = e.to_string();
    assert!(msg.contains("node 2") && msg.contains("node 3"), "{msg}");
}

#[test]
fn a_directory_for_other_logs_is_refused() {
    let data = temp_dir("other-logs");
    lived_in(&cluster(CLUSTER_A, 2), 1, &data);
    let before = snapshot(&data);
    // The same cluster id with three groups: four logs instead of three.
    let e = refused(start(&cluster(CLUSTER_A, 3), 1, &data));
    assert_eq!(snapshot(&data), before);
    assert!(e.to_string().contains("logs [0, 1, 2]"), "{e}");
}

#[test]
fn log_files_without_an_identity_are_refused_and_left_untouched() {
    let data = temp_dir("no-identity");
    let a = cluster(CLUSTER_A, 2);
    lived_in(&a, 1, &data);
    let dir = disk::node_dir(&data, NodeId(1));
    // As a directory written before identity files existed.
    std::fs::remove_file(dir.join(IDENTITY_FILE)).unwrap();
    add_repairable_damage(&dir);
    let before = snapshot(&data);
    let e = refused(start(&a, 1, &data));
    assert_eq!(snapshot(&data), before);
    assert!(matches!(e, IdentityError::Missing { .. }), "{e}");
    assert!(e.to_string().contains(&CLUSTER_A.to_string()), "{e}");
}

#[test]
fn an_unknown_format_or_a_damaged_identity_is_refused_and_left_untouched() {
    let a = cluster(CLUSTER_A, 2);
    let make = |name: &str, edit: &dyn Fn(&str) -> String| {
        let data = temp_dir(name);
        lived_in(&a, 1, &data);
        let path = disk::node_dir(&data, NodeId(1)).join(IDENTITY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(&text)).unwrap();
        data
    };
    // A later format version (the checksum is right: a version this build does not know).
    let future = make("future", &|t: &str| {
        let body = t[..t.rfind("crc32 ").unwrap()].replacen(" 1\n", " 9\n", 1);
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc32 {crc:08x}\n")
    });
    let before = snapshot(&future);
    let e = refused(start(&a, 1, &future));
    assert_eq!(snapshot(&future), before);
    assert!(e.to_string().contains("format version 9"), "{e}");
    // A flipped digit.
    let damaged = make("damaged", &|t: &str| t.replace("node 1", "node 7"));
    let before = snapshot(&damaged);
    let e = refused(start(&a, 1, &damaged));
    assert_eq!(snapshot(&damaged), before);
    assert!(e.to_string().contains("checksum"), "{e}");
}
