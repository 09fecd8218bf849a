//! Goal: commands routed by a client's stale view of the range map, after ranges moved
//! between workers, are neither lost nor executed twice, in P-SMR (conservative map) and
//! opt-PSMR (optimistic map, then conservative); and a split, which moves no key, changes no
//! route.
//!
//! Method: the real client proxy (`engine::psmr::proxy::ClientProxy`) and the real executor of a
//! replica's workers (`engine::psmr::executor::Executor`, with each worker's client table), wired
//! by hand: every multicast the proxy makes is delivered to the executor as the worker(s) it
//! names would run it, and every reply goes back to the proxy. A range changes owner between
//! the client's submission and the delivery (`TreeService::apply_action`, the step a
//! `Rebalance` applies at that point of the stream, on every worker's shard at once). Client
//! and replica have their own service objects, so the client's routes are only what it learnt
//! from refusals.

use btree_service::rebalance::Action;
use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService, TreeShard};
use bytes::Bytes;
use engine::host::client::Completion;
use engine::psmr::executor::{ExecOptions, Executor, Job, JobKind, WorkerState};
use engine::psmr::msg::{Attempt, Outcome, Reply, Request};
use engine::psmr::proxy::{ClientProxy, Mode, MISROUTES_MAX};
use engine::psmr::service::Service;
use engine::wire::{self, AppMsg, ClientId, FeedMsg};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, MsgId, NodeId};
use std::sync::Arc;

const WORKERS: usize = 2;

/// The request a client multicast.
fn request(payload: &Bytes) -> Request {
    let Ok(FeedMsg::Command(body)) = FeedMsg::parse(payload) else {
        panic!("a client's multicast is a command");
    };
    wire::decode(body).expect("a request")
}

fn config() -> TreeConfig {
    TreeConfig {
        fanout: 16,
        key_space: 1000,
        prefill: 100,
        value_bytes: 2,
    }
}

/// One replica's workers, run one request at a time.
struct Replica {
    service: Arc<TreeService>,
    exec: Executor<TreeService>,
    states: Vec<WorkerState<TreeService>>,
    shards: Vec<TreeShard>,
    next_msg: u64,
}

impl Replica {
    fn new() -> Self {
        let service = Arc::new(TreeService::new(config()));
        Replica {
            exec: Executor::new(
                service.clone(),
                WORKERS,
                NodeId(1),
                ExecOptions {
                    check_conflicts: true,
                    state_hashes: false,
                },
            ),
            states: (0..WORKERS).map(WorkerState::new).collect(),
            shards: service.shards(WORKERS),
            service,
            next_msg: 0,
        }
    }

    /// A rebalancing step, as a `Rebalance` would apply it here.
    fn apply(&mut self, a: Action) {
        assert!(self.service.apply_action(&mut self.shards, &a), "{a:?}");
    }

    fn hash(&self) -> u64 {
        self.service
            .state_hash(&self.shards.iter().collect::<Vec<_>>())
    }

    /// Delivers a multicast to the workers it names; the reply, if any.
    fn deliver(&mut self, dests: &GroupSet, payload: &Bytes) -> Option<Reply<TreeReply>> {
        let request = request(payload);
        let involved: Vec<usize> = dests.iter().map(|GroupId(g)| g as usize).collect();
        self.next_msg += 1;
        let job = Job {
            id: MsgId {
                sender: NodeId(1000),
                epoch: 0,
                seq: self.next_msg,
            },
            involved: involved.clone(),
            kind: JobKind::Command {
                command: wire::decode(&request.command).map_err(|e| e.to_string()),
                request,
            },
        };
        let w = involved[0];
        let out = if involved.len() == 1 {
            self.exec
                .run_single(&mut self.states[w], &mut self.shards[w], &job)
        } else {
            let mut refs: Vec<(usize, &mut TreeShard)> = self
                .shards
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| involved.contains(i))
                .collect();
            self.exec.run_multi(&mut self.states[w], &mut refs, &job)
        };
        let (_, bytes) = out?;
        let Ok(AppMsg::ToClient { body, .. }) = AppMsg::parse(&bytes) else {
            panic!("a reply is addressed to a client");
        };
        Some(wire::decode(body).expect("a reply"))
    }
}

struct Client {
    proxy: ClientProxy<TreeService>,
    service: Arc<TreeService>,
}

impl Client {
    fn new(mode: Mode) -> Self {
        let service = Arc::new(TreeService::new(config()));
        Client {
            proxy: ClientProxy::new(
                ClientId::new(NodeId(1000), 0),
                service.clone(),
                mode,
                WORKERS,
                1_000_000,
            ),
            service,
        }
    }

    /// The multicasts the proxy wants to make now.
    fn multicasts(&mut self) -> Vec<(GroupSet, Bytes)> {
        let mut out = Vec::new();
        self.proxy.take_multicasts(&mut out);
        out
    }

    fn on_reply(&mut self, r: Reply<TreeReply>) -> Option<Completion<TreeCommand, TreeReply>> {
        self.proxy.on_reply(r)
    }
}

fn groups(ws: &[u32]) -> GroupSet {
    ws.iter().map(|&g| GroupId(g)).collect()
}

fn value(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// Key 705 (not prefilled) is worker 1's at start; the test moves worker 1's only subtree (id 1) to worker 0.
const KEY: u64 = 705;

#[test]
fn opt_psmr_insert_routed_by_a_stale_map_is_refused_then_runs_once_at_the_new_owner() {
    let mut replica = Replica::new();
    let mut client = Client::new(Mode::OptPsmr);
    client.proxy.submit(TreeCommand::Insert(KEY, value("new")));
    let first = client.multicasts();
    assert_eq!(first[0].0, groups(&[1]), "routed to the initial owner");
    // The range moves before the insert is delivered.
    replica.apply(Action::Move { id: 1, to: 0 });
    let hash = replica.hash();
    let refused = replica.deliver(&first[0].0, &first[0].1).unwrap();
    assert!(
        matches!(refused.outcome, Outcome::Misrouted(ref m) if !m.is_empty()),
        "{refused:?}"
    );
    assert_eq!(replica.hash(), hash, "a misrouted try changes nothing");
    assert!(client.on_reply(refused).is_none());
    assert_eq!(client.proxy.stats.misroutes, 1);
    assert_eq!(client.service.learnt_routes().unwrap().version, 1);
    // The next try goes to the new owner, still optimistically, and runs there.
    let second = client.multicasts();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, groups(&[0]));
    let r = request(&second[0].1);
    assert_eq!((r.attempt, r.round), (Attempt::Optimistic, 1));
    let done = replica.deliver(&second[0].0, &second[0].1).unwrap();
    let c = client.on_reply(done).expect("completed");
    assert_eq!(c.result, Ok(TreeReply::Inserted(None)));
    // A late copy of the first try (a resend) is refused again, and the client ignores it ...
    let late = replica.deliver(&first[0].0, &first[0].1).unwrap();
    assert!(matches!(late.outcome, Outcome::Misrouted(_)));
    assert!(client.on_reply(late).is_none());
    // ... even once the range is back at worker 1, where that try would now fit: the
    // worker's table remembers that it refused it, so the insert does not run twice.
    replica.apply(Action::Move { id: 1, to: 1 });
    let hash = replica.hash();
    let late = replica.deliver(&first[0].0, &first[0].1).unwrap();
    assert!(matches!(late.outcome, Outcome::Misrouted(_)), "{late:?}");
    assert_eq!(replica.hash(), hash, "the refused try did not run");
}

#[test]
fn psmr_get_and_update_routed_by_a_stale_map_are_refused_and_run_at_the_new_owner() {
    let mut replica = Replica::new();
    let mut client = Client::new(Mode::Psmr);
    let key = config().prefill_key(80); // worker 1's at start
    replica.apply(Action::Move { id: 1, to: 0 });
    for (cmd, want) in [
        (
            TreeCommand::Update(key, value("u1")),
            TreeReply::Updated(true),
        ),
        (TreeCommand::Get(key), TreeReply::Value(Some(value("u1")))),
    ] {
        client.proxy.submit(cmd);
        let mut completion = None;
        let mut tries = Vec::new();
        while completion.is_none() {
            let m = client.multicasts();
            assert_eq!(m.len(), 1);
            let r = request(&m[0].1);
            assert_eq!(r.attempt, Attempt::Conservative);
            tries.push(m[0].0.clone());
            let reply = replica.deliver(&m[0].0, &m[0].1).unwrap();
            completion = client.on_reply(reply);
        }
        assert_eq!(completion.unwrap().result, Ok(want));
        // The first command misses once and learns; the second is routed right at once.
        assert!(tries.last() == Some(&groups(&[0])), "{tries:?}");
    }
    assert_eq!(client.proxy.stats.misroutes, 1);
    // A resent copy of the executed update is answered from the table, not run again.
    let s = replica.states[0].stats.duplicates;
    client.proxy.submit(TreeCommand::Update(key, value("u2")));
    let m = client.multicasts();
    replica.deliver(&m[0].0, &m[0].1).unwrap();
    let again = replica.deliver(&m[0].0, &m[0].1).unwrap();
    assert_eq!(again.outcome, Outcome::Done(TreeReply::Updated(true)));
    assert_eq!(replica.states[0].stats.duplicates, s + 1);
}

#[test]
fn a_stale_scan_across_a_moved_range_is_refused_then_answers_every_key() {
    let mut replica = Replica::new();
    let mut client = Client::new(Mode::Psmr);
    // Worker 0 owns [0, 500): split it at 250 and give [0, 250) to worker 1.
    replica.apply(Action::Split {
        id: 0,
        at: 250,
        upper: 2,
    });
    replica.apply(Action::Move { id: 0, to: 1 });
    client.proxy.submit(TreeCommand::Scan {
        lo: 100,
        hi: 300,
        limit: 1000,
    });
    let m = client.multicasts();
    assert_eq!(
        m[0].0,
        groups(&[0]),
        "the stale map gives the whole range to worker 0"
    );
    let refused = replica.deliver(&m[0].0, &m[0].1).unwrap();
    assert!(matches!(refused.outcome, Outcome::Misrouted(_)));
    assert!(client.on_reply(refused).is_none());
    let m = client.multicasts();
    assert_eq!(m[0].0, groups(&[0, 1]));
    let done = replica.deliver(&m[0].0, &m[0].1).unwrap();
    let got = client.on_reply(done).unwrap().result.unwrap();
    let want: Vec<u64> = (0..100)
        .map(|i| config().prefill_key(i))
        .filter(|k| (100..300).contains(k))
        .collect();
    match got {
        TreeReply::Entries(es) => assert_eq!(es.iter().map(|e| e.0).collect::<Vec<_>>(), want),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_that_keeps_missing_ends_with_a_command_for_every_worker() {
    let mut replica = Replica::new();
    let mut client = Client::new(Mode::OptPsmr);
    client.proxy.submit(TreeCommand::Insert(KEY, value("x")));
    let mut to = 0;
    let mut tries = 0;
    let done = loop {
        let m = client.multicasts();
        assert_eq!(m.len(), 1);
        // The range moves again before every try arrives: what the client learnt is stale.
        replica.apply(Action::Move { id: 1, to });
        to = 1 - to;
        tries += 1;
        let reply = replica.deliver(&m[0].0, &m[0].1).unwrap();
        if let Some(c) = client.on_reply(reply) {
            assert_eq!(m[0].0, groups(&[0, 1]), "the last try went to every worker");
            break c;
        }
        assert!(
            tries <= MISROUTES_MAX as usize + 1,
            "no end after {tries} tries"
        );
    };
    assert_eq!(done.result, Ok(TreeReply::Inserted(None)));
    assert_eq!(client.proxy.stats.misroutes, u64::from(MISROUTES_MAX) + 1);
    let (got, _) = {
        client.proxy.submit(TreeCommand::Get(KEY));
        let m = client.multicasts();
        let r = replica.deliver(&m[0].0, &m[0].1).unwrap();
        (client.on_reply(r), ())
    };
    // The key may have moved once more under the stale map: the get then misses once.
    let got = match got {
        Some(c) => c.result,
        None => {
            let m = client.multicasts();
            let r = replica.deliver(&m[0].0, &m[0].1).unwrap();
            client.on_reply(r).unwrap().result
        }
    };
    assert_eq!(got, Ok(TreeReply::Value(Some(value("x")))), "inserted once");
}

#[test]
fn a_split_moves_no_key_and_changes_no_route() {
    let mut replica = Replica::new();
    let mut client = Client::new(Mode::OptPsmr);
    replica.apply(Action::Split {
        id: 1,
        at: 800,
        upper: 2,
    });
    assert_eq!(replica.shards[0].top().version(), 0, "no key changed owner");
    for (i, k) in [(0u8, 605u64), (1, 905), (2, 855)] {
        client
            .proxy
            .submit(TreeCommand::Insert(k, Bytes::from(vec![i])));
        let m = client.multicasts();
        assert_eq!(m[0].0, groups(&[1]));
        let r = replica.deliver(&m[0].0, &m[0].1).unwrap();
        assert_eq!(
            client.on_reply(r).unwrap().result,
            Ok(TreeReply::Inserted(None))
        );
    }
    assert_eq!(client.proxy.stats.misroutes, 0);
    assert!(client.service.learnt_routes().is_none());
    for (w, s) in replica.shards.iter().enumerate() {
        s.check(w).unwrap();
    }
}
