//! Read indexes (`groups::readindex`) in small scenarios, each small enough to read: a read
//! index covers what was decided before it, and a position raised by a deposed leader's
//! unchosen entries is still reached on a log without traffic or periodic skips. The seeded
//! fault campaign is `read_indexes_cover_every_decided_entry_under_faults` in
//! `multicast_faults.rs`.

use groups::config::{ClusterConfig, LogConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};
use groups::sim::{GroupsSim, SimOptions};

const L: LogId = LogId(0);

/// One group, ordered by one log with acceptors n1..n3; n4 subscribes and is no acceptor.
/// No periodic skips (only skips a blocked merge asks for): an idle log stays as it is.
fn one_log() -> ClusterConfig {
    let nodes = (1..=4)
        .map(|id| NodeConfig {
            id: NodeId(id),
            addr: None,
            subscriptions: if id == 4 {
                vec![GroupSet::singleton(GroupId(0))]
            } else {
                Vec::new()
            },
        })
        .collect();
    let logs = vec![LogConfig {
        id: L,
        covers: GroupSet::singleton(GroupId(0)),
        acceptors: vec![NodeId(1), NodeId(2), NodeId(3)],
    }];
    let tuning = Tuning {
        skip_lambda_per_delta: 0,
        skip_hints: true,
        ..Tuning::default()
    };
    ClusterConfig::new(1, 1, nodes, logs, tuning).unwrap()
}

fn leader(s: &GroupsSim) -> NodeId {
    (1..=3)
        .map(NodeId)
        .find(|&n| s.sim.actor(n).is_some_and(|a| a.leads(L)))
        .expect("a leader")
}

#[test]
fn a_read_index_covers_what_was_decided_before_it() {
    let mut s = GroupsSim::new(one_log(), SimOptions::calm(3));
    s.run_until(200_000);
    for i in 0..20u8 {
        s.multicast(NodeId(4), GroupSet::singleton(GroupId(0)), vec![i].into())
            .expect("accepted");
    }
    assert!(s.run_until_quiet(5_000_000));
    let decided = s.sim.actor(leader(&s)).unwrap().decided_idx(L).unwrap();
    assert!(decided > 0);
    s.read_index(NodeId(4), &[L]).expect("asked");
    assert!(s.run_until_quiet(1_000_000));
    let r = &s.reads()[0];
    let pos = r.positions.as_ref().expect("answered")[0];
    assert_eq!(pos, (L, decided), "an idle log: exactly its length");
    s.check_reads(true).unwrap();
}

/// The old leader is cut off from the other acceptors (not from n4) and takes submissions: it
/// accepts entries nobody else has. The others elect a new leader, whose log is shorter, and
/// the log then has no traffic. n4's read index asks the old leader too and gets its longer
/// log as the position; n4 then asks the new leader for padding until its feed reaches it.
#[test]
fn a_position_raised_by_a_deposed_leader_is_reached_on_an_idle_log() {
    let mut s = GroupsSim::new(one_log(), SimOptions::calm(5));
    s.run_until(200_000);
    for i in 0..5u8 {
        s.multicast(NodeId(4), GroupSet::singleton(GroupId(0)), vec![i].into());
    }
    assert!(s.run_until_quiet(5_000_000));
    let old = leader(&s);
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|&n| n != old).collect();
    s.sim.net.partition(&[old], &others);
    for i in 0..8u8 {
        s.multicast(
            NodeId(4),
            GroupSet::singleton(GroupId(0)),
            vec![100 + i].into(),
        );
        let t = s.sim.now_us() + 2_000;
        s.run_until(t);
    }
    let t = s.sim.now_us() + 500_000;
    s.run_until(t);
    let (_, decided_old, accepted_old) = s.sim.actor(old).unwrap().log_status(L).unwrap();
    let new = others
        .iter()
        .copied()
        .find(|&n| s.sim.actor(n).is_some_and(|a| a.leads(L)))
        .expect("the others elected a leader");
    let (_, _, accepted_new) = s.sim.actor(new).unwrap().log_status(L).unwrap();
    assert!(
        accepted_old > accepted_new,
        "the deposed leader holds unchosen entries ({decided_old}/{accepted_old} vs {accepted_new})"
    );
    // n4 reaches the old leader and at least one of the others; the old leader answers first
    // only if asked before the others, so drop n4's link to one of them.
    s.sim.net.cut_one_way(others[1], NodeId(4));
    s.read_index(NodeId(4), &[L]).expect("asked");
    let t = s.sim.now_us() + 200_000;
    s.run_until(t);
    let pos = s.reads()[0].positions.as_ref().expect("answered")[0].1;
    assert_eq!(
        pos, accepted_old,
        "the position is the deposed leader's log length"
    );
    // Heal everything; the log has no traffic of its own from here on.
    s.sim.net.heal_all();
    s.sim.reconnect_all();
    assert!(
        s.run_until_quiet(10_000_000),
        "n4's feed never reached the position"
    );
    let next = s.sim.actor(NodeId(4)).unwrap().feed_next(L).unwrap();
    assert!(next >= pos, "feed at {next}, position {pos}");
    s.check_reads(true).unwrap();
    s.check().unwrap();
}
