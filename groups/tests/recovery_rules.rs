//! Goal: the decision rules of a recovering acceptor (`groups::log::recovery`, "The protocol"
//! and "Why it is safe"), one story each: it waits for every other acceptor, it waits until
//! the voting answers fenced the recovering peers' dead incarnations, it copies the most
//! advanced log and starts over when the source's round moves, a fresh cluster bootstraps only
//! after confirming the recovering peers, a stale `Recovering` answer cannot make it
//! bootstrap over a peer with state (the f = 2 counterexample of the module docs), and a
//! durable node without `--recover` stops when a peer holds state.
//!
//! Method: one `RecoveringLog` driven by hand-made answers, as its peers would send them; its
//! queries and fetches are read back from `take_outgoing`.

use groups::ids::{ClusterId, LogId, NodeId};
use groups::log::recovery::{
    Completion, LogName, Policy, RecoveringLog, RecoverySettings, RecoveryState,
};
use groups::log::OrderedLog;
use groups::message::{Attempt, LogMsg, PeerStatus, RecoveryMsg, Summary};
use groups::LogEntry;
use omnipaxos::ballot_leader_election::Ballot;

const ME: NodeId = NodeId(1);
const INC: u64 = 7;

fn log(acceptors: u32, policy: Policy) -> RecoveringLog {
    RecoveringLog::recovering(
        LogName {
            cluster: ClusterId(1),
            log: LogId(0),
            me: ME,
        },
        (1..=acceptors).map(NodeId).collect(),
        INC,
        RecoverySettings {
            resend_ticks: 5,
            chunk_entries: 2,
        },
        policy,
        Completion::Hold,
    )
}

fn ballot(n: u32, pid: u64) -> Ballot {
    Ballot::with(0, n, 0, pid)
}

/// The recovery messages `l` sends, by destination.
fn sent(l: &mut RecoveringLog) -> Vec<(NodeId, RecoveryMsg)> {
    let mut out = Vec::new();
    l.take_outgoing(&mut out);
    out.into_iter()
        .filter_map(|(to, m)| match m {
            LogMsg::Recovery(r) => Some((to, r)),
            LogMsg::OmniPaxos { .. } => None,
        })
        .collect()
}

/// The attempt of the queries `l` sent last, and to whom.
fn queries(l: &mut RecoveringLog) -> (Option<Attempt>, Vec<NodeId>) {
    let mut attempt = None;
    let mut to = Vec::new();
    for (n, m) in sent(l) {
        if let RecoveryMsg::Query { attempt: a } = m {
            attempt = Some(a);
            to.push(n);
        }
    }
    (attempt, to)
}

fn answer(l: &mut RecoveringLog, from: u32, attempt: Attempt, status: PeerStatus) {
    l.handle(
        NodeId(from),
        LogMsg::Recovery(RecoveryMsg::Status { attempt, status }),
    )
    .expect("a peer of the log");
}

fn voting(summary: Summary, floors: &[(u32, u64)]) -> PeerStatus {
    PeerStatus::Voting {
        summary,
        floors: floors.iter().map(|&(n, i)| (NodeId(n), i)).collect(),
        bootstrapped: Vec::new(),
    }
}

fn empty() -> Summary {
    Summary::default()
}

fn holding(round: Ballot, end: u64, decided: u64) -> Summary {
    Summary {
        promise: Some(round),
        accepted_round: Some(round),
        accepted_idx: end,
        decided_idx: decided,
        first_idx: 0,
    }
}

fn batch(i: u8) -> LogEntry {
    LogEntry::Skip(u64::from(i) + 1)
}

#[test]
fn it_waits_for_every_other_acceptor_before_copying() {
    // f = 2: three of the four others hold state and vote; that is f + 1 of the others, and
    // still not enough (the fourth could be the leader of a ballot the lost incarnation
    // promised).
    let mut l = log(5, Policy::InMemory);
    let (attempt, to) = queries(&mut l);
    let attempt = attempt.expect("it queries at once");
    assert_eq!(to, vec![NodeId(2), NodeId(3), NodeId(4), NodeId(5)]);
    for n in 2..=4 {
        answer(&mut l, n, attempt, voting(holding(ballot(3, 2), 4, 2), &[]));
    }
    assert_eq!(l.recovery(), RecoveryState::Recovering);
    assert!(sent(&mut l).is_empty(), "no fetch before the last answer");
    // The fifth holds a higher promise, nothing more: it raises the copied promise.
    let mut fifth = holding(ballot(3, 2), 4, 2);
    fifth.promise = Some(ballot(9, 5));
    answer(&mut l, 5, attempt, voting(fifth, &[]));
    let fetches: Vec<_> = sent(&mut l)
        .into_iter()
        .filter(|(_, m)| matches!(m, RecoveryMsg::Fetch { .. }))
        .collect();
    assert_eq!(fetches.len(), 1, "it copies from one source");
    let (source, RecoveryMsg::Fetch { from, .. }) = &fetches[0] else {
        unreachable!()
    };
    assert_eq!((*source, *from), (NodeId(2), 0), "ties go to the lowest id");
    for (from, entries) in [(0, vec![batch(0), batch(1)]), (2, vec![batch(2), batch(3)])] {
        l.handle(
            NodeId(2),
            LogMsg::Recovery(RecoveryMsg::Chunk {
                attempt,
                round: Some(ballot(3, 2)),
                first_idx: 0,
                from,
                entries,
            }),
        )
        .unwrap();
    }
    assert_eq!(l.recovery(), RecoveryState::Recovered);
    let image = l.take_recovered().expect("the recovered state");
    assert_eq!(image.entries.len(), 4);
    assert_eq!(image.promise, Some(ballot(9, 5)));
    assert_eq!(image.accepted_round, Some(ballot(3, 2)));
    assert_eq!(image.decided, 2);
}

#[test]
fn the_copy_starts_over_when_the_source_changes_round() {
    let mut l = log(3, Policy::InMemory);
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    answer(&mut l, 2, attempt, voting(holding(ballot(2, 2), 3, 3), &[]));
    answer(&mut l, 3, attempt, voting(holding(ballot(4, 3), 5, 1), &[]));
    let fetch = sent(&mut l);
    assert!(
        matches!(fetch[..], [(NodeId(3), RecoveryMsg::Fetch { from: 0, .. })]),
        "the highest round is the source: {fetch:?}"
    );
    l.handle(
        NodeId(3),
        LogMsg::Recovery(RecoveryMsg::Chunk {
            attempt,
            round: Some(ballot(5, 2)),
            first_idx: 0,
            from: 0,
            entries: vec![batch(0)],
        }),
    )
    .unwrap();
    assert_eq!(l.recovery(), RecoveryState::Recovering);
    let (again, to) = queries(&mut l);
    assert_eq!(to.len(), 2, "a new attempt asks everyone again");
    assert_ne!(again, Some(attempt));
}

#[test]
fn voting_answers_must_fence_the_recovering_peers() {
    // f = 2: peer 3 is recovering too (incarnation 40). Peer 2 answered before it saw 3's
    // query (floor 30 for node 3): a dead leader 3' could still land accepts at 2 after that
    // answer, so it does not count until 2 answers again with a floor of at least 40.
    let mut l = log(5, Policy::InMemory);
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    answer(
        &mut l,
        3,
        attempt,
        PeerStatus::Recovering { incarnation: 40 },
    );
    for n in [2, 4] {
        answer(
            &mut l,
            n,
            attempt,
            voting(holding(ballot(2, 2), 1, 1), &[(3, 30)]),
        );
    }
    answer(
        &mut l,
        5,
        attempt,
        voting(holding(ballot(2, 2), 1, 1), &[(3, 40)]),
    );
    assert!(
        sent(&mut l).is_empty(),
        "no copy while 2 and 4 may handle 3's dead incarnation"
    );
    for _ in 0..5 {
        l.tick();
    }
    let (_, to) = queries(&mut l);
    assert_eq!(
        to,
        vec![NodeId(2), NodeId(3), NodeId(4), NodeId(5)],
        "it asks everyone again"
    );
    for n in [2, 4] {
        answer(
            &mut l,
            n,
            attempt,
            voting(holding(ballot(2, 2), 1, 1), &[(3, 41)]),
        );
    }
    assert!(
        sent(&mut l)
            .iter()
            .any(|(_, m)| matches!(m, RecoveryMsg::Fetch { .. })),
        "fenced, with f + 1 voting: it copies"
    );
}

#[test]
fn a_fresh_cluster_bootstraps_after_confirming_the_recovering_peers() {
    let mut l = log(3, Policy::InMemory);
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    answer(
        &mut l,
        2,
        attempt,
        PeerStatus::Recovering { incarnation: 5 },
    );
    assert_eq!(
        l.recovery(),
        RecoveryState::Recovering,
        "3 has not answered"
    );
    answer(
        &mut l,
        3,
        attempt,
        PeerStatus::Recovering { incarnation: 6 },
    );
    assert_eq!(
        l.recovery(),
        RecoveryState::Recovering,
        "a Recovering answer may be stale: it asks again first"
    );
    let (second, to) = queries(&mut l);
    let second = second.expect("a confirming attempt");
    assert_ne!(second, attempt);
    assert_eq!(to.len(), 2);
    // Meanwhile 2 bootstrapped (with 3): it votes, with nothing yet. 3 is still recovering
    // in the same incarnation: 3 and this node were both recovering when the first attempt
    // ended, a majority, so the log had no state.
    answer(&mut l, 2, second, voting(empty(), &[(1, INC), (3, 6)]));
    answer(&mut l, 3, second, PeerStatus::Recovering { incarnation: 6 });
    assert_eq!(l.recovery(), RecoveryState::Recovered);
    assert_eq!(l.take_recovered(), Some(Default::default()));
}

#[test]
fn in_memory_a_confirmed_majority_starts_without_the_last_acceptor() {
    // Node 3 never answers (down, or a stranger with the wrong secret). 1 and 2 are a
    // majority recovering at once: the log had no state, they may start.
    let mut l = log(3, Policy::InMemory);
    let (attempt, _) = queries(&mut l);
    answer(
        &mut l,
        2,
        attempt.unwrap(),
        PeerStatus::Recovering { incarnation: 5 },
    );
    for _ in 0..5 {
        l.tick();
    }
    let (second, to) = queries(&mut l);
    assert_ne!(second, attempt, "the resend confirms in a new attempt");
    assert_eq!(to.len(), 2);
    answer(
        &mut l,
        2,
        second.unwrap(),
        PeerStatus::Recovering { incarnation: 5 },
    );
    assert_eq!(l.recovery(), RecoveryState::Recovered);
    // A durable node without a directory waits for everyone: two empty directories may
    // be two wiped ones while the third node, with the data, is down.
    let mut d = log(3, Policy::Durable { recover: true });
    let (attempt, _) = queries(&mut d);
    answer(
        &mut d,
        2,
        attempt.unwrap(),
        PeerStatus::Recovering { incarnation: 5 },
    );
    for _ in 0..20 {
        d.tick();
        if let (Some(a), _) = queries(&mut d) {
            answer(&mut d, 2, a, PeerStatus::Recovering { incarnation: 5 });
        }
    }
    assert_eq!(d.recovery(), RecoveryState::Recovering);
}

#[test]
fn a_peer_that_started_with_this_node_lets_it_start_empty() {
    // 2 started the log empty with 1 and 3 recovering at once, and holds state by now (it
    // elected a leader with 3). 1, still recovering in the same incarnation, starts empty
    // too (it never voted after that instant), even without `--recover` and without 3.
    let mut l = log(3, Policy::Durable { recover: false });
    let (attempt, _) = queries(&mut l);
    let with = vec![(NodeId(1), INC), (NodeId(2), 4), (NodeId(3), 9)];
    let status = PeerStatus::Voting {
        summary: holding(ballot(1, 2), 0, 0),
        floors: vec![(NodeId(1), INC), (NodeId(3), 9)],
        bootstrapped: with.clone(),
    };
    answer(&mut l, 2, attempt.unwrap(), status);
    assert_eq!(l.recovery(), RecoveryState::Recovered);
    // Another incarnation of 1 may have voted since: it must not.
    let mut later = RecoveringLog::recovering(
        LogName {
            cluster: ClusterId(1),
            log: LogId(0),
            me: ME,
        },
        (1..=3).map(NodeId).collect(),
        INC + 1,
        RecoverySettings {
            resend_ticks: 5,
            chunk_entries: 2,
        },
        Policy::Durable { recover: false },
        Completion::Hold,
    );
    let (attempt, _) = queries(&mut later);
    answer(
        &mut later,
        2,
        attempt.unwrap(),
        PeerStatus::Voting {
            summary: holding(ballot(1, 2), 0, 0),
            floors: vec![],
            bootstrapped: with,
        },
    );
    assert!(matches!(later.recovery(), RecoveryState::Stopped(_)));
}

#[test]
fn a_stale_recovering_answer_does_not_bootstrap_over_a_peer_with_state() {
    // The f = 2 counterexample of the module docs: 4 and 5 never saw the log's entries; q1 = 2
    // recovered them from q2 = 3 after answering Recovering, then 3 lost its state. Without
    // the confirmation, {1, 4, 5} would bootstrap and form a quorum that never saw them.
    let mut l = log(5, Policy::InMemory);
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    let fences = [(2, 20), (3, 30), (1, INC)];
    answer(
        &mut l,
        2,
        attempt,
        PeerStatus::Recovering { incarnation: 20 },
    );
    answer(
        &mut l,
        3,
        attempt,
        PeerStatus::Recovering { incarnation: 30 },
    );
    answer(&mut l, 4, attempt, voting(empty(), &fences));
    answer(&mut l, 5, attempt, voting(empty(), &fences));
    assert_eq!(l.recovery(), RecoveryState::Recovering);
    let (second, _) = queries(&mut l);
    let second = second.unwrap();
    answer(
        &mut l,
        2,
        second,
        voting(holding(ballot(6, 3), 3, 3), &[(3, 31)]),
    );
    answer(
        &mut l,
        3,
        second,
        PeerStatus::Recovering { incarnation: 31 },
    );
    answer(&mut l, 4, second, voting(empty(), &[(2, 20), (3, 31)]));
    answer(&mut l, 5, second, voting(empty(), &[(2, 20), (3, 31)]));
    assert_eq!(l.recovery(), RecoveryState::Recovering, "not bootstrapped");
    let fetch = sent(&mut l);
    assert!(
        fetch
            .iter()
            .any(|(n, m)| *n == NodeId(2) && matches!(m, RecoveryMsg::Fetch { .. })),
        "it copies what 2 holds: {fetch:?}"
    );
}

#[test]
fn without_recover_a_node_without_data_stops_when_a_peer_holds_state() {
    let mut l = log(3, Policy::Durable { recover: false });
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    answer(&mut l, 2, attempt, voting(holding(ballot(2, 2), 9, 8), &[]));
    match l.recovery() {
        RecoveryState::Stopped(why) => {
            assert!(why.contains("lost its data"), "{why}");
            assert!(why.contains("--recover"), "{why}");
            assert!(why.contains("up to index 9"), "{why}");
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    // The same answers let a fresh cluster's node bootstrap: nobody holds state.
    let mut l = log(3, Policy::Durable { recover: false });
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    answer(&mut l, 2, attempt, voting(empty(), &[]));
    answer(&mut l, 3, attempt, voting(empty(), &[]));
    assert_eq!(l.recovery(), RecoveryState::Recovered);
}

#[test]
fn a_recovering_acceptor_answers_recovering_and_ignores_consensus() {
    let mut l = log(3, Policy::InMemory);
    sent(&mut l);
    let query = Attempt {
        incarnation: 3,
        attempt: 0,
    };
    l.handle(
        NodeId(2),
        LogMsg::Recovery(RecoveryMsg::Query { attempt: query }),
    )
    .unwrap();
    let out = sent(&mut l);
    assert!(
        matches!(
            out[..],
            [(
                NodeId(2),
                RecoveryMsg::Status {
                    status: PeerStatus::Recovering { incarnation: INC },
                    ..
                }
            )]
        ),
        "{out:?}"
    );
    // A query from an older incarnation of 2 than one already seen is answered Stale.
    l.handle(
        NodeId(2),
        LogMsg::Recovery(RecoveryMsg::Query {
            attempt: Attempt {
                incarnation: 2,
                attempt: 0,
            },
        }),
    )
    .unwrap();
    assert!(matches!(
        sent(&mut l)[..],
        [(
            NodeId(2),
            RecoveryMsg::Status {
                status: PeerStatus::Stale { floor: 3 },
                ..
            }
        )]
    ));
    assert_eq!(l.decided_idx(), 0);
    assert!(
        l.propose(batch(0)).is_err(),
        "a recovering acceptor takes no proposals"
    );
}

#[test]
fn the_copy_starts_over_when_the_source_no_longer_votes() {
    // The source lost its state in the middle of the copy: its new incarnation answers the
    // next fetch with `Recovering`, and the copy starts over (it would wait forever for
    // chunks otherwise).
    let mut l = log(3, Policy::InMemory);
    let (attempt, _) = queries(&mut l);
    let attempt = attempt.unwrap();
    answer(&mut l, 2, attempt, voting(holding(ballot(2, 2), 3, 3), &[]));
    answer(&mut l, 3, attempt, voting(holding(ballot(2, 2), 1, 1), &[]));
    assert!(matches!(
        sent(&mut l)[..],
        [(NodeId(2), RecoveryMsg::Fetch { .. })]
    ));
    answer(
        &mut l,
        2,
        attempt,
        PeerStatus::Recovering { incarnation: 12 },
    );
    let (again, to) = queries(&mut l);
    assert_ne!(again, Some(attempt), "a new attempt");
    assert_eq!(to, vec![NodeId(2), NodeId(3)]);
}
