//! Basic simulated scenarios, each small enough to read: a calm cluster delivers, a leader
//! crash does not stop a group.

use groups::config::{ClusterConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};
use groups::sim::{GroupsSim, SimOptions};

fn node(id: u32, subs: &[&[u32]]) -> NodeConfig {
    NodeConfig {
        id: NodeId(id),
        addr: None,
        subscriptions: subs
            .iter()
            .map(|s| s.iter().map(|&g| GroupId(g)).collect())
            .collect(),
    }
}

fn set(g: &[u32]) -> GroupSet {
    g.iter().map(|&x| GroupId(x)).collect()
}

fn two_groups() -> ClusterConfig {
    ClusterConfig::per_group_plus_global(
        1,
        2,
        vec![
            node(1, &[&[0]]),
            node(2, &[&[1]]),
            node(3, &[]),
            node(4, &[&[0, 1]]),
        ],
        vec![NodeId(1), NodeId(2), NodeId(3)],
        Tuning::default(),
    )
    .unwrap()
}

#[test]
fn calm_cluster_delivers_everything_in_one_order() {
    let mut s = GroupsSim::new(two_groups(), SimOptions::calm(1));
    s.run_until(200_000);
    for l in 0..3 {
        let leaders: Vec<_> = (1..=3)
            .map(|n| s.sim.actor(NodeId(n)).unwrap().leader_of(LogId(l)))
            .collect();
        eprintln!("log {l}: leaders seen {leaders:?}");
    }
    for i in 0..30u32 {
        let dests = match i % 3 {
            0 => set(&[0]),
            1 => set(&[1]),
            _ => set(&[0, 1]),
        };
        s.multicast(NodeId(1 + i % 4), dests, vec![i as u8].into())
            .expect("multicast accepted");
    }
    assert!(s.run_until_quiet(5_000_000), "did not get quiet");
    s.check().unwrap();
    assert_eq!(s.delivered(NodeId(4)).len(), 30);
    assert_eq!(s.delivered(NodeId(1)).len(), 20);
}

/// Section 1.3 validity under a leader crash: a group whose leader dies keeps delivering, in
/// the simulator.
#[test]
fn group_keeps_delivering_after_its_leader_crashes() {
    let mut s = GroupsSim::new(two_groups(), SimOptions::calm(2));
    s.run_until(300_000);
    let leader = s
        .sim
        .actor(NodeId(1))
        .and_then(|n| n.leader_of(LogId(0)))
        .expect("log 0 has a leader");
    for i in 0..20u8 {
        s.multicast(NodeId(4), set(&[0]), vec![i].into()).unwrap();
    }
    s.run_until(400_000);
    s.crash(leader);
    for i in 20..40u8 {
        s.multicast(NodeId(4), set(&[0]), vec![i].into()).unwrap();
    }
    assert!(s.run_until_quiet(5_000_000), "the group stopped delivering");
    let survivor = (1..=3).map(NodeId).find(|&n| n != leader).unwrap();
    let new_leader = s.sim.actor(survivor).unwrap().leader_of(LogId(0));
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "no new leader: {new_leader:?}"
    );
    assert_eq!(s.delivered(NodeId(4)).len(), 40);
    s.check().unwrap();
}
