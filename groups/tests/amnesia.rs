//! Goal (issue 16.2): an acceptor that lost its state must not vote until it has safely
//! recovered it. The interleaving: an entry accepted by acceptors {1, 3} and
//! acknowledged, then 3 wiped and 1 lost, leaves {2, 3} a quorum that never saw it. If 3 votes
//! at once with nothing, 2 and 3 decide another message at the entry's index, and the
//! subscribers that delivered the acknowledged message disagree with those that deliver the
//! new one (Paxos's amnesia hazard; see `groups::log::recovery`).
//!
//! Method: three acceptors of one log (group 0), all subscribing, and a client node 4 that
//! subscribes and multicasts, on a calm simulated network. Node 1 (the log's preferred leader)
//! leads. Node 2 is cut off; node 4 multicasts `acked`, which 1 and 3 accept and decide and 4
//! delivers. Then node 3's storage is wiped (a deleted data directory, or any restart in memory
//! mode), node 1 crashes, the cut heals and node 3 restarts; node 4 multicasts `later`. For two
//! virtual seconds 2 and 3 must decide nothing else at `acked`'s index (3 must still be
//! recovering: it waits for 1). Then node 1 restarts from its storage: 3 recovers from 1 and 2,
//! `acked` keeps its index everywhere, `later` is delivered, and the atomic multicast checker
//! passes over every delivery stream. Deterministic; 20 seeds (the story must hold for every
//! seed); `CHORUS_SEED=n` replays one verbosely.

use groups::config::{ClusterConfig, LogConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::sim::{GroupsSim, SimOptions};
use groups::LogEntry;

const LOG: LogId = LogId(0);
const CLIENT: NodeId = NodeId(4);
const ONE: NodeId = NodeId(1);
const TWO: NodeId = NodeId(2);
const THREE: NodeId = NodeId(3);

fn cluster() -> ClusterConfig {
    let g0 = GroupSet::singleton(GroupId(0));
    let nodes = (1..=4)
        .map(|id| NodeConfig {
            id: NodeId(id),
            addr: None,
            subscriptions: vec![g0.clone()],
        })
        .collect();
    let logs = vec![LogConfig {
        id: LOG,
        covers: g0,
        acceptors: vec![ONE, TWO, THREE],
    }];
    let tuning = Tuning {
        tick_us: 1000,
        election_ticks: 20,
        resend_ticks: 10,
        fetch_poll_ticks: 10,
        trim: false,
        ..Tuning::default()
    };
    ClusterConfig::new(16, 1, nodes, logs, tuning).expect("valid layout")
}

/// The index of `id` in acceptor `node`'s copy of the log, if it holds it.
fn index_of(s: &GroupsSim, node: NodeId, id: MsgId) -> Option<u64> {
    let n = s.sim.actor(node)?;
    let entries = n.log_entries(LOG, 0, 10_000);
    entries
        .iter()
        .position(|e| match e {
            LogEntry::Batch(ms) => ms.iter().any(|m| m.id == id),
            LogEntry::Skip(_) => false,
        })
        .map(|i| i as u64)
}

/// The ids in the decided entry at `idx` of acceptor `node`'s log (empty for a skip, `None`
/// if it has not decided that far).
fn decided_at(s: &GroupsSim, node: NodeId, idx: u64) -> Option<Vec<MsgId>> {
    let n = s.sim.actor(node)?;
    if n.decided_idx(LOG)? <= idx {
        return None;
    }
    n.log_entries(LOG, idx, 1).first().map(|e| match e {
        LogEntry::Batch(ms) => ms.iter().map(|m| m.id).collect(),
        LogEntry::Skip(_) => Vec::new(),
    })
}

/// Runs until `cond` holds, at most `max_us` more virtual time.
fn run_until(s: &mut GroupsSim, max_us: u64, mut cond: impl FnMut(&GroupsSim) -> bool) -> bool {
    let until = s.sim.now_us() + max_us;
    while s.sim.now_us() < until {
        if cond(s) {
            return true;
        }
        let next = s.sim.now_us() + 1000;
        s.run_until(next);
    }
    cond(s)
}

fn scenario(seed: u64, verbose: bool) -> Result<(), String> {
    let mut s = GroupsSim::new(cluster(), SimOptions::calm(seed));
    let warm = s
        .multicast(CLIENT, GroupSet::singleton(GroupId(0)), "warm".into())
        .expect("client up");
    if !run_until(&mut s, 3_000_000, |s| {
        (1..=4).all(|n| s.delivered(NodeId(n)).contains(&warm))
    }) {
        return Err("the warm-up message was not delivered".into());
    }
    let leader = [ONE, TWO, THREE]
        .into_iter()
        .find(|&a| s.sim.actor(a).is_some_and(|n| n.leads(LOG)));
    if leader != Some(ONE) {
        return Err(format!("the story needs node 1 to lead; {leader:?} does"));
    }

    // An entry accepted by {1, 3} and acknowledged (decided, delivered by the client).
    s.sim.net.partition(&[TWO], &[ONE, THREE, CLIENT]);
    let acked = s
        .multicast(CLIENT, GroupSet::singleton(GroupId(0)), "acked".into())
        .expect("client up");
    if !run_until(&mut s, 2_000_000, |s| s.delivered(CLIENT).contains(&acked)) {
        return Err("the acknowledged message was not delivered".into());
    }
    let idx = index_of(&s, ONE, acked).expect("the leader holds what it decided");
    if index_of(&s, THREE, acked) != Some(idx) || index_of(&s, TWO, acked).is_some() {
        return Err("acked must be accepted by exactly 1 and 3".into());
    }
    if verbose {
        eprintln!("acked {acked:?} decided at index {idx} by {{1, 3}}; node 2 never saw it");
    }

    // 3 wiped, 1 lost; {2, 3} could now be a quorum that never saw `acked`.
    s.wipe(THREE);
    s.crash(ONE);
    s.sim.net.heal_all();
    s.sim.reconnect_all();
    s.restart(THREE);
    let later = s
        .multicast(CLIENT, GroupSet::singleton(GroupId(0)), "later".into())
        .expect("client up");
    let until = s.sim.now_us() + 2_000_000;
    while s.sim.now_us() < until {
        let next = s.sim.now_us() + 1000;
        s.run_until(next);
        for a in [TWO, THREE] {
            if let Some(ids) = decided_at(&s, a, idx) {
                if !ids.contains(&acked) {
                    return Err(format!(
                        "t={}us: node {a} decided {ids:?} at index {idx}, where {acked:?} was \
                         decided and acknowledged (amnesia: node 3 voted without its state)",
                        s.sim.now_us()
                    ));
                }
            }
        }
    }
    let recovering = s.sim.actor(THREE).map(|n| n.recovering());
    if recovering != Some(vec![LOG]) {
        return Err(format!(
            "with node 1 down, node 3 must still be recovering the log; it reports {recovering:?}"
        ));
    }

    // 1 comes back with its disk: 3 recovers from 1 and 2, and the entry survives.
    s.restart(ONE);
    if !run_until(&mut s, 10_000_000, |s| {
        (1..=4).all(|n| s.delivered(NodeId(n)).contains(&later))
    }) {
        return Err(format!(
            "`later` was not delivered everywhere after node 1 came back:\n{}",
            s.describe()
        ));
    }
    for a in [ONE, TWO, THREE] {
        match decided_at(&s, a, idx) {
            Some(ids) if ids.contains(&acked) => {}
            other => return Err(format!("node {a} holds {other:?} at index {idx}")),
        }
    }
    if !s.run_until_quiet(10_000_000) {
        return Err("not quiet after the recovery".into());
    }
    s.check()
        .map_err(|v| format!("atomic multicast violated: {v:?}"))
}

#[test]
fn an_acceptor_that_lost_its_state_does_not_vote_until_it_recovered() {
    groups::sim::seeds::campaign(
        "amnesia",
        "cargo test --release -p groups --test amnesia -- --nocapture",
        20,
        scenario,
    );
}
