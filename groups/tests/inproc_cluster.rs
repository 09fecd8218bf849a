//! Goal: the in-process runtime delivers, and a group keeps delivering after its leader's node
//! is killed.
//!
//! Method: three acceptor nodes (two of them subscribers of group 0) and a fourth node that
//! subscribes to both groups and multicasts. Multicast a first batch, kill the node leading
//! group 0's log, multicast a second batch, and require every surviving subscriber to deliver
//! all of it; then run the property checker over the survivors' streams.

use groups::checker::{check_atomic, Sent, Stream, StreamId};
use groups::config::{ClusterConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::node::GroupsNode;
use groups::runtime::inproc::{App, InProcCluster};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<MsgId>>>);

impl App for Recorder {
    fn step(&mut self, node: &mut GroupsNode) {
        let mut out = Vec::new();
        node.take_delivered(&mut out);
        if !out.is_empty() {
            self.0.lock().extend(out.into_iter().map(|(_, d)| d.msg.id));
        }
    }
}

fn groups(g: &[u32]) -> GroupSet {
    g.iter().map(|&x| GroupId(x)).collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn group_keeps_delivering_after_its_leader_is_killed() {
    let subs = [&[0u32][..], &[0], &[], &[0, 1]];
    let nodes = (1..=4)
        .map(|n| NodeConfig {
            id: NodeId(n),
            addr: None,
            subscriptions: if subs[n as usize - 1].is_empty() {
                vec![]
            } else {
                vec![groups(subs[n as usize - 1])]
            },
        })
        .collect();
    let cfg = ClusterConfig::per_group_plus_global(
        3,
        2,
        nodes,
        vec![NodeId(1), NodeId(2), NodeId(3)],
        Tuning::default(),
    )
    .unwrap();
    let recorders: Vec<Recorder> = (0..4).map(|_| Recorder::default()).collect();
    let rec = recorders.clone();
    let mut cluster = InProcCluster::start(cfg.clone(), move |id| rec[id.0 as usize - 1].clone());

    let leader = || {
        cluster
            .node(NodeId(3))
            .call(|n| n.leader_of(LogId(0)))
            .flatten()
    };
    wait_for("a leader of log 0", || leader().is_some());
    let old_leader = leader().unwrap();

    let mut sent = Vec::new();
    let sender = NodeId(4);
    let send = |cluster: &InProcCluster<Recorder>, sent: &mut Vec<Sent>, count: usize| {
        for i in 0..count {
            let dests = if i % 5 == 0 {
                groups(&[0, 1])
            } else {
                groups(&[0])
            };
            let d = dests.clone();
            let id = cluster
                .node(sender)
                .call(move |n| n.multicast(d, bytes::Bytes::from_static(b"x")))
                .unwrap()
                .unwrap();
            sent.push(Sent {
                id,
                dests,
                sender_correct: true,
                sent_at: 0,
            });
        }
    };
    send(&cluster, &mut sent, 200);
    wait_for("the first batch at node 4", || {
        recorders[3].0.lock().len() == 200
    });

    cluster.kill(old_leader);
    send(&cluster, &mut sent, 200);
    let survivors: Vec<NodeId> = [1, 2, 4]
        .into_iter()
        .map(NodeId)
        .filter(|&n| n != old_leader)
        .collect();
    for &n in &survivors {
        wait_for("the second batch at every surviving subscriber", || {
            recorders[n.0 as usize - 1].0.lock().len() == 400
        });
    }
    let new_leader = (1..=3)
        .map(NodeId)
        .find(|&n| n != old_leader)
        .and_then(|n| cluster.node(n).call(|x| x.leader_of(LogId(0))).flatten());
    assert!(
        new_leader.is_some_and(|l| l != old_leader),
        "log 0 elected a new leader (old {old_leader}, now {new_leader:?})"
    );
    drop(cluster);

    let streams: Vec<Stream> = (1..=4u32)
        .filter(|&n| !subs[n as usize - 1].is_empty())
        .map(|n| Stream {
            id: StreamId {
                node: NodeId(n),
                incarnation: 0,
                subscription: 0,
            },
            groups: groups(subs[n as usize - 1]),
            correct: NodeId(n) != old_leader,
            started_at: 0,
            delivered: recorders[n as usize - 1].0.lock().clone(),
        })
        .collect();
    check_atomic(&sent, &streams).unwrap();
}
