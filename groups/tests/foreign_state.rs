//! Goal (issue 18.3): no single acceptor's bad state can make the good majority unavailable for
//! good. The issue put cluster B's `node-3` directory under cluster A's node 3: reads returned
//! B's values, node 3 led A's logs, and A stopped answering and stayed wedged even after node 3
//! was removed and nodes 1 and 2 restarted from their own directories.
//!
//! Method: the same simulated layout (three acceptors, two groups and a global log, two more
//! subscribers that multicast) runs as cluster B for 3 virtual seconds (long logs) and as
//! cluster A for 0.9 s with leader crashes (higher ballots). Then A's node 3 is restarted on
//! B's node 3 storage, as the issue did with the directory; A keeps its load, node 1 and then
//! node 2 are crashed and restarted one at a time (as the issue killed node 1). Finally node 3
//! is removed for good and nodes 1 and 2 are restarted from their own storage: every message
//! multicast after that must be delivered by every subscriber within 3 virtual seconds. The
//! foreign state is allowed to break safety (that is what the identity file prevents, see
//! `data_identity.rs`), not liveness.
//!
//! What wedged A: node 3 answered subscribers' fetches with B's decided entries, so their feeds
//! and merge positions ran ahead of A's logs; their skip hints then named indexes beyond the
//! leaders' log ends, which the leaders answered with a new skip every time (the hint's index
//! was never reached, so the same hint came again), and the padding of the other logs followed
//! the inflated frontier: skips of billions of slots, decided and stored. The merge took one
//! loop step per `merge_m` slots of a skip, so merging those entries took hours, at every
//! replay. The test watches for that with a wall-clock bound (the run takes about a second).
//! Seeds: `CHORUS_SEED=n` runs one.

use groups::config::{ClusterConfig, LogConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::log::storage::MemStorage;
use groups::sim::{GroupsSim, NetFaults, SimOptions};
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

const ACCEPTORS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const SENDERS: [NodeId; 2] = [NodeId(4), NodeId(5)];
const LOGS: u32 = 3;
/// How long the whole scenario may take in real time before it counts as wedged.
const WATCHDOG: Duration = Duration::from_secs(120);

fn cluster(id: u64) -> ClusterConfig {
    let g = |i| GroupSet::singleton(GroupId(i));
    let both: GroupSet = [GroupId(0), GroupId(1)].into_iter().collect();
    let logs = (0..LOGS)
        .map(|i| LogConfig {
            id: LogId(i),
            covers: if i < 2 { g(i) } else { both.clone() },
            acceptors: ACCEPTORS.to_vec(),
        })
        .collect();
    let nodes = ACCEPTORS
        .iter()
        .chain(&SENDERS)
        .map(|&id| NodeConfig {
            id,
            addr: None,
            subscriptions: vec![both.clone()],
        })
        .collect();
    let tuning = Tuning {
        tick_us: 1000,
        skip_lambda_per_delta: 200,
        election_ticks: 20,
        resend_ticks: 10,
        fetch_poll_ticks: 10,
        trim: false,
        ..Tuning::default()
    };
    ClusterConfig::new(id, 2, nodes, logs, tuning).unwrap()
}

/// Runs `us` more virtual time with a multicast every 2 ms from a rotating sender (`from`).
fn load(s: &mut GroupsSim, us: u64, from: &[NodeId], k: &mut u32) -> Vec<MsgId> {
    let until = s.sim.now_us() + us;
    let mut sent = Vec::new();
    while s.sim.now_us() < until {
        let next = (s.sim.now_us() + 2000).min(until);
        s.run_until(next);
        *k += 1;
        let dests = match *k % 3 {
            0 => GroupSet::singleton(GroupId(0)),
            1 => GroupSet::singleton(GroupId(1)),
            _ => [GroupId(0), GroupId(1)].into_iter().collect(),
        };
        let sender = from[*k as usize % from.len()];
        sent.extend(s.multicast(sender, dests, k.to_le_bytes().to_vec().into()));
    }
    sent
}

fn leader(s: &GroupsSim, log: LogId) -> Option<NodeId> {
    ACCEPTORS
        .iter()
        .copied()
        .find(|&a| s.sim.actor(a).is_some_and(|n| n.leads(log)))
}

/// The scenario of the module docs; `Err` says what the good majority failed to do.
fn scenario(seed: u64) -> Result<(), String> {
    let senders = [SENDERS[0], SENDERS[1]];
    let mut b = GroupsSim::new(
        cluster(0xB),
        SimOptions {
            seed: seed + 1000,
            net: NetFaults::calm(),
        },
    );
    let mut k = 0;
    load(&mut b, 3_000_000, &senders, &mut k);
    let foreign: Vec<_> = (0..LOGS)
        .map(|l| b.storage(NodeId(3), LogId(l)).unwrap().with(|m| m.image()))
        .collect();

    let mut a = GroupsSim::new(cluster(0xA), SimOptions::calm(seed));
    let mut k = 1_000_000;
    for _ in 0..3 {
        load(&mut a, 200_000, &senders, &mut k);
        if let Some(l) = leader(&a, LogId(0)) {
            a.crash(l);
            load(&mut a, 100_000, &senders, &mut k);
            a.restart(l);
        }
    }
    load(&mut a, 200_000, &senders, &mut k);

    // Node 3 restarts on cluster B's node 3 state.
    a.crash(NodeId(3));
    for (l, image) in foreign.into_iter().enumerate() {
        a.storage(NodeId(3), LogId(l as u32))
            .unwrap()
            .with(|m| *m = MemStorage::from_image(image));
    }
    a.restart(NodeId(3));
    load(&mut a, 300_000, &senders, &mut k);
    for victim in [NodeId(1), NodeId(2)] {
        a.crash(victim);
        load(&mut a, 500_000, &senders, &mut k);
        a.restart(victim);
        load(&mut a, 300_000, &senders, &mut k);
    }

    // Node 3 is removed; nodes 1 and 2 restart from their own storage.
    a.crash(NodeId(3));
    for n in [NodeId(1), NodeId(2)] {
        a.crash(n);
        a.restart(n);
    }
    let all = [NodeId(1), NodeId(2), SENDERS[0], SENDERS[1]];
    let sent = load(&mut a, 500_000, &all, &mut k);
    a.run_until(a.sim.now_us() + 3_000_000);
    for n in all {
        let got: HashSet<MsgId> = a.delivered(n).into_iter().collect();
        let missing = sent.iter().filter(|m| !got.contains(m)).count();
        if missing > 0 {
            return Err(format!(
                "seed {seed}: {n} did not deliver {missing} of the {} messages multicast after \
                 node 3 was removed\n{}",
                sent.len(),
                a.describe()
            ));
        }
    }
    for n in [NodeId(1), NodeId(2)] {
        for l in 0..LOGS {
            let (decided, end) = a
                .storage(n, LogId(l))
                .unwrap()
                .with(|m| (m.image().decided, m.end()));
            if decided > end {
                return Err(format!(
                    "seed {seed}: {n} L{l} stores decided index {decided} beyond its log end {end}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn a_foreign_acceptor_state_cannot_wedge_the_good_majority() {
    let seeds: Vec<u64> = match std::env::var("CHORUS_SEED") {
        Ok(s) => vec![s.parse().expect("CHORUS_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(scenario(seed));
        });
        match rx.recv_timeout(WATCHDOG) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "{e}\nreplay: CHORUS_SEED={seed} cargo test --release -p groups --test foreign_state"
            ),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "seed {seed}: the scenario did not finish in {WATCHDOG:?} of real time (it takes \
                 about a second): the good nodes are wedged (a merge of skips of billions of \
                 slots?)\nreplay: CHORUS_SEED={seed} cargo test --release -p groups --test \
                 foreign_state"
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("seed {seed}: the scenario panicked (see above)")
            }
        }
    }
}
