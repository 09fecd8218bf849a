//! Goal: the DS-SMR corner cases of the reference notes (d'.9), and S-SMR signals, value
//! exchange and the fallback, behave as analysed, each
//! scripted deterministically: the test decides in which order every partition and the oracle
//! deliver every multicast (any order atomic multicast allows), and checks results, retries,
//! blocking and ownership.
//!
//! Method: one replica per partition and for the oracle, the real sans-IO cores
//! (`PartitionServer`, `OracleServer`) and client proxies (`ScaleOutClient`), connected by a
//! hand-driven "network": exchanges and client messages are delivered at once, multicasts
//! only when the test says so. The service is the test key-value service with a steerable
//! gathering target.

use bytes::Bytes;
use engine::host::client::{ClientError, Proxy};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::msg::{Multicast, Response};
use engine::partitioned::oracle::OracleServer;
use engine::partitioned::proxy::{ClientOptions, ScaleOutClient};
use engine::partitioned::server::PartitionServer;
use engine::partitioned::service::{
    Kind, Need, ObjectId, Objects, PartitionId, PartitionedService,
};
use engine::partitioned::{Output, Scheme, ServerOptions};
use engine::testing::scaleout::{Cmd, ObjectKv, Reply};
use engine::wire::{self, AppMsg, ClientId, FeedMsg};
use groups::ids::{GroupId, MsgId, NodeId};
use groups::GroupSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The multicast a client sent.
fn multicast(payload: &[u8]) -> Multicast {
    match FeedMsg::parse(payload) {
        Ok(FeedMsg::Command(body)) => wire::decode(body).expect("a multicast"),
        other => panic!("not a command: {other:?}"),
    }
}

/// The key-value service with a gathering target the test can force.
struct Steer {
    kv: ObjectKv,
    target: AtomicU32,
}

impl PartitionedService for Steer {
    type Command = Cmd;
    type Reply = Reply;
    type Value = i64;
    fn name(&self) -> &'static str {
        "steer"
    }
    fn kind(&self, cmd: &Cmd) -> Kind {
        self.kv.kind(cmd)
    }
    fn initial(&self, cmd: &Cmd) -> i64 {
        self.kv.initial(cmd)
    }
    fn execute(&self, cmd: &Cmd, objects: &mut Objects<'_, i64>) -> Result<Reply, Need> {
        self.kv.execute(cmd, objects)
    }
    fn place(&self, object: ObjectId, partitions: u32) -> PartitionId {
        self.kv.place(object, partitions)
    }
    fn preload(&self) -> Vec<(ObjectId, i64)> {
        self.kv.preload()
    }
    fn target(&self, _: &Cmd, _: &[(ObjectId, PartitionId)], _: u64) -> PartitionId {
        self.target.load(Ordering::Relaxed)
    }
}

type Done = (usize, u64, Result<Response<Reply>, ClientError>);

struct World {
    k: u32,
    service: Arc<Steer>,
    oracle: OracleServer<Steer>,
    scheme: Scheme,
    parts: Vec<PartitionServer<Steer>>,
    clients: Vec<ScaleOutClient<Steer>>,
    /// Every multicast, in the order the clients sent it.
    sent: Vec<(MsgId, GroupSet, Bytes)>,
    done: Vec<Done>,
}

impl World {
    /// `k` partitions of one replica, keys `0..preload` at partition `key % k`, `clients`
    /// clients with location caches.
    fn new(k: u32, preload: u64, clients: u32) -> World {
        World::with(Scheme::Dssmr, k, preload, clients, 3)
    }

    /// With S-SMR, the oracle exists but nothing is sent to it.
    fn with(scheme: Scheme, k: u32, preload: u64, clients: u32, retry_max: u32) -> World {
        let layout = ScaleOutLayout::new(Scheme::Dssmr, k, 1, 0, 1, layout::tuning()).unwrap();
        let cfg = Arc::new(layout.config.clone());
        let service = Arc::new(Steer {
            kv: ObjectKv { preload },
            target: AtomicU32::new(0),
        });
        let opts = ServerOptions {
            record_views: true,
            ..ServerOptions::new(scheme)
        };
        World {
            k,
            scheme,
            oracle: OracleServer::new(
                service.clone(),
                cfg.clone(),
                layout.oracle_replicas[0],
                k,
                opts.clone(),
            ),
            parts: (0..k)
                .map(|p| {
                    PartitionServer::new(
                        service.clone(),
                        cfg.clone(),
                        layout.partition_replicas[p as usize][0],
                        p,
                        k,
                        opts.clone(),
                    )
                })
                .collect(),
            clients: (0..clients)
                .map(|i| {
                    let mut o = ClientOptions::new(scheme, k);
                    o.retry_max = retry_max;
                    // Stale caches drive moves here (the corner cases are about them).
                    o.move_on_cached = true;
                    ScaleOutClient::new(ClientId::new(NodeId(1000), i), service.clone(), o)
                })
                .collect(),
            service,
            sent: Vec::new(),
            done: Vec::new(),
        }
    }

    fn submit(&mut self, client: usize, cmd: Cmd) -> u64 {
        let seq = self.clients[client].submit(cmd);
        self.pump();
        seq
    }

    /// Index of the first multicast after `after` that `pred` accepts.
    fn find(&self, after: usize, pred: impl Fn(&Multicast) -> bool) -> usize {
        (after..self.sent.len())
            .find(|&i| pred(&multicast(&self.sent[i].2)))
            .unwrap_or_else(|| panic!("no such multicast after {after}: {:?}", self.kinds()))
    }

    fn kinds(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|(_, d, p)| format!("{d:?} {:?}", multicast(p)))
            .collect()
    }

    /// Group `g` (a partition, or `k` for the oracle) delivers multicast `m`.
    fn deliver(&mut self, m: usize, g: u32) {
        let (id, dests, payload) = self.sent[m].clone();
        assert!(
            dests.contains(GroupId(g)),
            "multicast {m} is not for group {g}"
        );
        let Ok(FeedMsg::Command(body)) = FeedMsg::parse(&payload) else {
            panic!("clients multicast commands");
        };
        if g == self.k {
            self.oracle.deliver(id, body);
        } else {
            self.parts[g as usize].deliver(id, body);
        }
        self.pump();
    }

    /// Every destination delivers `m`, in the order given.
    fn deliver_all(&mut self, m: usize, order: &[u32]) {
        for &g in order {
            self.deliver(m, g);
        }
    }

    fn pump(&mut self) {
        loop {
            let mut outs = Vec::new();
            for p in &mut self.parts {
                p.run();
                p.take_outputs(&mut outs);
            }
            self.oracle.take_outputs(&mut outs);
            let mut progress = !outs.is_empty();
            for o in outs {
                match o {
                    Output::Rmcast(dests, payload) => {
                        for g in dests.iter() {
                            self.parts[g.0 as usize].exchange(&payload);
                        }
                    }
                    Output::Send(NodeId(1000), payload) => {
                        let Ok(AppMsg::ToClient { client, body }) = AppMsg::parse(&payload) else {
                            panic!("a message for a client");
                        };
                        let i = client.index() as usize;
                        if let Some(c) = self.clients[i].on_message(body) {
                            self.done.push((i, c.seq, c.result));
                        }
                    }
                    // DS-SMR cores never multicast (only DynaStar's do).
                    Output::Send(..) | Output::Multicast(..) => {}
                }
            }
            for c in &mut self.clients {
                let mut ms = Vec::new();
                c.take_multicasts(&mut ms);
                progress |= !ms.is_empty();
                for (dests, payload) in ms {
                    let id = MsgId {
                        sender: NodeId(1000),
                        epoch: 0,
                        seq: self.sent.len() as u64,
                    };
                    self.sent.push((id, dests, payload));
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn result(&self, client: usize, seq: u64) -> Option<&Result<Response<Reply>, ClientError>> {
        self.done
            .iter()
            .find(|(c, s, _)| *c == client && *s == seq)
            .map(|(_, _, r)| r)
    }

    fn owner(&self, object: ObjectId) -> Vec<PartitionId> {
        (0..self.k)
            .filter(|p| self.parts[*p as usize].owns(object))
            .collect()
    }

    /// Ownership: each object in at most one partition, and the oracle agrees.
    fn check(&self) {
        let mut owned: Vec<(ObjectId, PartitionId)> = Vec::new();
        for (p, s) in self.parts.iter().enumerate() {
            for (o, _) in s.objects() {
                assert!(
                    !owned.iter().any(|(x, _)| *x == o),
                    "object {o} owned twice"
                );
                owned.push((o, p as PartitionId));
                assert_eq!(s.stats.double_owned, 0);
            }
        }
        owned.sort();
        if self.scheme == Scheme::Dssmr {
            let map: Vec<(ObjectId, PartitionId)> = self.oracle.locations().collect();
            assert_eq!(map, owned, "oracle map and partitions differ");
        }
    }

    fn is_consult(m: &Multicast, client: usize) -> bool {
        matches!(m, Multicast::Consult { client: c, .. } if c.index() as usize == client)
    }

    fn is_command(m: &Multicast, client: usize) -> bool {
        matches!(m, Multicast::Command(c) if c.client.index() as usize == client)
    }

    fn is_move(m: &Multicast, object: ObjectId) -> bool {
        matches!(m, Multicast::Move { object: o, .. } if *o == object)
    }
}

fn done(v: Reply) -> Result<Response<Reply>, ClientError> {
    Ok(Response::Done(v))
}

/// Runs a consult of `client` (the next one after `after`) at the oracle.
fn consult(w: &mut World, client: usize, after: usize) -> usize {
    let c = w.find(after, |m| World::is_consult(m, client));
    w.deliver(c, w.k);
    c
}

#[test]
fn an_access_delivered_before_its_own_moves_is_retried() {
    // Keys 0 (partition 0) and 1 (partition 1); the transfer gathers them in partition 1.
    let mut w = World::new(2, 2, 1);
    w.service.target.store(1, Ordering::Relaxed);
    let seq = w.submit(0, Cmd::Transfer(0, 1, 5));
    let c1 = consult(&mut w, 0, 0);
    let mv = w.find(c1, |m| World::is_move(m, 0));
    let access = w.find(c1, |m| World::is_command(m, 0));
    // Partition 1 delivers the access before the move: key 0 is not there yet.
    w.deliver(access, 1);
    assert_eq!(
        w.parts[1].stats.retries, 1,
        "the early access was answered retry"
    );
    assert!(w.result(0, seq).is_none());
    // The move arrives everywhere; the client's second consult finds both keys in 1.
    w.deliver_all(mv, &[2, 0, 1]);
    assert_eq!(w.owner(0), vec![1]);
    let c2 = consult(&mut w, 0, access);
    let access2 = w.find(c2, |m| World::is_command(m, 0));
    w.deliver(access2, 1);
    assert_eq!(w.result(0, seq), Some(&done(Reply::Ok)));
    assert_eq!(w.clients[0].stats().retries, 1);
    assert_eq!(w.clients[0].stats().moves, 1);
    w.check();
}

#[test]
fn a_move_of_an_object_already_gone_does_not_block_its_destination() {
    // Client 0 learns where keys 0 and 1 are; client 1 deletes key 0; client 0 then gathers
    // {0, 1} into partition 1 from its stale cache.
    let mut w = World::new(2, 2, 2);
    w.service.target.store(1, Ordering::Relaxed);
    let mut last = 0;
    for key in [0, 1] {
        let g = w.submit(0, Cmd::Get(key));
        let c = consult(&mut w, 0, last);
        last = w.find(c, |m| World::is_command(m, 0));
        w.deliver(last, key as u32);
        assert_eq!(w.result(0, g), Some(&done(Reply::Value(100))));
    }
    let del = w.submit(1, Cmd::Delete(0));
    let c = consult(&mut w, 1, last);
    let d = w.find(c, |m| World::is_command(m, 1));
    w.deliver_all(d, &[2, 0]);
    assert_eq!(w.result(1, del), Some(&Ok(Response::Deleted)));
    assert!(w.owner(0).is_empty());
    let t = w.submit(0, Cmd::Transfer(0, 1, 1));
    let mv = w.find(d, |m| World::is_move(m, 0));
    let acc = w.find(d, |m| World::is_command(m, 0));
    assert_eq!(
        w.clients[0].stats().consults,
        2,
        "the cache answered, no consult"
    );
    // The destination delivers the move first: it waits for the source's value...
    w.deliver(mv, 1);
    assert_eq!(w.parts[1].backlog(), 1, "partition 1 waits for the value");
    // ...which is null: the source no longer has key 0. The oracle ignores the move.
    w.deliver(mv, 0);
    w.deliver(mv, 2);
    assert_eq!(
        w.parts[1].backlog(),
        0,
        "a null value releases the destination"
    );
    assert_eq!(w.parts[0].stats.moves_null, 1);
    assert_eq!(w.oracle.stats.moves_ignored, 1);
    assert!(w.owner(0).is_empty());
    // The access is retried; the oracle then says the key does not exist.
    w.deliver(acc, 1);
    assert!(w.result(0, t).is_none());
    consult(&mut w, 0, acc);
    assert_eq!(w.result(0, t), Some(&Ok(Response::NotFound)));
    assert_eq!(w.clients[0].stats().retries, 1);
    w.check();
}

#[test]
fn by_default_cached_locations_that_span_partitions_are_checked_with_the_oracle() {
    // Client 0 knows where keys 0 and 1 are (partitions 0 and 1). With `move_on_cached` off
    // (the default) it does not move on that knowledge: it consults the oracle first, and
    // moves on the prophecy.
    let mut w = World::new(2, 2, 1);
    w.service.target.store(1, Ordering::Relaxed);
    let mut o = ClientOptions::new(Scheme::Dssmr, 2);
    o.move_on_cached = false;
    w.clients[0] = ScaleOutClient::new(ClientId::new(NodeId(1000), 0), w.service.clone(), o);
    let mut last = 0;
    for key in [0, 1] {
        let g = w.submit(0, Cmd::Get(key));
        let c = consult(&mut w, 0, last);
        last = w.find(c, |m| World::is_command(m, 0));
        w.deliver(last, key as u32);
        assert_eq!(w.result(0, g), Some(&done(Reply::Value(100))));
    }
    let before = w.sent.len();
    let t = w.submit(0, Cmd::Transfer(0, 1, 1));
    let first = multicast(&w.sent[before].2);
    assert!(World::is_consult(&first, 0), "consulted first: {first:?}");
    assert_eq!(w.clients[0].stats().consults, 3);
    consult(&mut w, 0, before);
    let mv = w.find(before, |m| World::is_move(m, 0));
    let acc = w.find(before, |m| World::is_command(m, 0));
    w.deliver_all(mv, &[2, 0, 1]);
    w.deliver(acc, 1);
    assert_eq!(w.result(0, t), Some(&done(Reply::Ok)));
    assert_eq!(w.clients[0].stats().moves, 1);
    w.check();
}

#[test]
fn two_clients_moving_the_same_object_one_wins_the_other_retries() {
    // Keys 0, 1, 2 in partitions 0, 1, 2. Client 0 gathers {0, 1} in 1; client 1 gathers
    // {0, 2} in 2. Both moves of key 0 leave partition 0; the first one ordered wins.
    let mut w = World::new(3, 3, 2);
    w.service.target.store(1, Ordering::Relaxed);
    let a = w.submit(0, Cmd::Transfer(0, 1, 1));
    let ca = consult(&mut w, 0, 0);
    w.service.target.store(2, Ordering::Relaxed);
    let b = w.submit(1, Cmd::Transfer(0, 2, 1));
    let cb = consult(&mut w, 1, 0);
    let mva = w.find(ca, |m| World::is_move(m, 0) && w_from_to(m) == (0, 1));
    let mvb = w.find(cb, |m| World::is_move(m, 0) && w_from_to(m) == (0, 2));
    let acc_a = w.find(ca, |m| World::is_command(m, 0));
    let acc_b = w.find(cb, |m| World::is_command(m, 1));
    // Oracle and partition 0 order client 0's move first (they must agree: both deliver
    // both moves).
    w.deliver_all(mva, &[3, 0, 1]);
    w.deliver_all(mvb, &[3, 0, 2]);
    assert_eq!(w.owner(0), vec![1]);
    assert_eq!(w.oracle.location(0), Some(1));
    assert_eq!(
        w.oracle.stats.moves_ignored, 1,
        "the second move is a no-op"
    );
    w.deliver(acc_a, 1);
    assert_eq!(w.result(0, a), Some(&done(Reply::Ok)));
    w.deliver(acc_b, 2);
    assert!(w.result(1, b).is_none(), "client 1's access is retried");
    // Client 1 re-consults: 0 is now in 1; it moves it again, to 2.
    let c2 = consult(&mut w, 1, acc_b);
    let mv2 = w.find(c2, |m| World::is_move(m, 0));
    let acc_b2 = w.find(c2, |m| World::is_command(m, 1));
    w.deliver_all(mv2, &[3, 1, 2]);
    w.deliver(acc_b2, 2);
    assert_eq!(w.result(1, b), Some(&done(Reply::Ok)));
    assert_eq!(w.owner(0), vec![2]);
    assert_eq!(w.clients[1].stats().retries, 1);
    w.check();
}

fn w_from_to(m: &Multicast) -> (u32, u32) {
    match m {
        Multicast::Move { from, to, .. } => (*from, *to),
        _ => (u32::MAX, u32::MAX),
    }
}

#[test]
fn a_create_racing_a_move_is_installed_before_the_move_leaves() {
    // Client 0 creates key 3 (placed in partition 1); client 1 gathers {0, 3} into partition
    // 0 right after the oracle learned of the create, before partition 1 delivered it.
    let mut w = World::new(2, 2, 2);
    let cr = w.submit(0, Cmd::Create(3, 7));
    let c = consult(&mut w, 0, 0);
    let create = w.find(c, |m| World::is_command(m, 0));
    w.deliver(create, 2);
    assert_eq!(
        w.result(0, cr),
        Some(&Ok(Response::Created)),
        "the oracle answers at once"
    );
    w.service.target.store(0, Ordering::Relaxed);
    let t = w.submit(1, Cmd::Transfer(3, 0, 2));
    let c = consult(&mut w, 1, create);
    let mv = w.find(c, |m| World::is_move(m, 3));
    let acc = w.find(c, |m| World::is_command(m, 1));
    // The destination delivers the move first and waits; partition 1 must deliver the create
    // before the move (both go to partition 1 and the oracle, which ordered create first).
    w.deliver(mv, 0);
    assert_eq!(w.parts[0].backlog(), 1);
    w.deliver(mv, 2);
    w.deliver(create, 1);
    assert!(w.parts[1].owns(3), "the create installed key 3");
    w.deliver(mv, 1);
    assert_eq!(w.owner(3), vec![0], "the move carried the created value");
    w.deliver(acc, 0);
    assert_eq!(w.result(1, t), Some(&done(Reply::Ok)));
    w.check();
    // The created value moved intact: 7 - 2.
    let g = w.submit(1, Cmd::Get(3));
    let a = w.find(acc + 1, |m| World::is_command(m, 1));
    w.deliver(a, 0);
    assert_eq!(w.result(1, g), Some(&done(Reply::Value(5))));
}

#[test]
fn a_delete_sent_to_the_wrong_partition_is_retried_at_the_right_one() {
    // Client 0 caches key 0 in partition 0; client 1 moves it to partition 1; client 0's
    // delete goes (from its cache) to partition 0.
    let mut w = World::new(2, 2, 2);
    let g = w.submit(0, Cmd::Get(0));
    let c = consult(&mut w, 0, 0);
    let a = w.find(c, |m| World::is_command(m, 0));
    w.deliver(a, 0);
    assert_eq!(w.result(0, g), Some(&done(Reply::Value(100))));
    w.service.target.store(1, Ordering::Relaxed);
    let t = w.submit(1, Cmd::Transfer(0, 1, 1));
    let c = consult(&mut w, 1, a);
    let mv = w.find(c, |m| World::is_move(m, 0));
    let acc = w.find(c, |m| World::is_command(m, 1));
    w.deliver_all(mv, &[2, 0, 1]);
    w.deliver(acc, 1);
    assert_eq!(w.result(1, t), Some(&done(Reply::Ok)));
    let d = w.submit(0, Cmd::Delete(0));
    let del = w.find(acc + 1, |m| World::is_command(m, 0));
    assert!(
        w.sent[del].1.contains(GroupId(0)),
        "the cache sent the delete to partition 0"
    );
    w.deliver_all(del, &[0, 2]);
    assert_eq!(w.owner(0), vec![1], "the wrong partition deleted nothing");
    assert_eq!(w.oracle.stats.retries, 1);
    let c = consult(&mut w, 0, del);
    let del2 = w.find(c, |m| World::is_command(m, 0));
    w.deliver_all(del2, &[1, 2]);
    assert_eq!(w.result(0, d), Some(&Ok(Response::Deleted)));
    assert!(w.owner(0).is_empty());
    w.check();
}

#[test]
fn deleting_a_missing_object_succeeds_and_creating_an_existing_one_fails() {
    let mut w = World::new(2, 2, 1);
    let d = w.submit(0, Cmd::Delete(9));
    consult(&mut w, 0, 0);
    assert_eq!(w.result(0, d), Some(&Ok(Response::Deleted)));
    let c = w.submit(0, Cmd::Create(1, 0));
    consult(&mut w, 0, 1);
    assert_eq!(w.result(0, c), Some(&Ok(Response::AlreadyExists)));
    w.check();
}

#[test]
fn the_published_oracle_loses_created_objects() {
    // With the fix, a created object can be read; as printed in the seed (no map update on
    // create), the oracle answers nok for it and disagrees with the partition.
    for published in [false, true] {
        let layout = ScaleOutLayout::new(Scheme::Dssmr, 2, 1, 0, 1, layout::tuning()).unwrap();
        let cfg = Arc::new(layout.config.clone());
        let service = Arc::new(ObjectKv { preload: 0 });
        let opts = ServerOptions {
            oracle_as_published: published,
            ..ServerOptions::new(Scheme::Dssmr)
        };
        let mut oracle =
            OracleServer::new(service.clone(), cfg, layout.oracle_replicas[0], 2, opts);
        let create = Multicast::Command(engine::partitioned::msg::CommandMsg {
            client: ClientId::new(NodeId(1000), 0),
            seq: 0,
            attempt: 1,
            floor: 0,
            kind: Kind::Create(4),
            partitions: vec![0],
            fallback: false,
            command: Bytes::from(wire::encode(&Cmd::Create(4, 1))),
        });
        let id = MsgId {
            sender: NodeId(1000),
            epoch: 0,
            seq: 0,
        };
        oracle.deliver(id, &wire::encode(&create));
        assert_eq!(oracle.location(4).is_some(), !published);
    }
}

#[test]
fn ssmr_partitions_wait_for_each_others_signal_and_exchange_values() {
    // Transfer between key 0 (partition 0) and key 1 (partition 1): each partition sends the
    // other its object (the signal) and neither finishes before it has the other's.
    let mut w = World::with(Scheme::Ssmr, 2, 2, 1, 3);
    let t = w.submit(0, Cmd::Transfer(0, 1, 30));
    let m = w.find(0, |m| World::is_command(m, 0));
    assert_eq!(w.sent[m].1, [GroupId(0), GroupId(1)].into_iter().collect());
    w.deliver(m, 0);
    assert_eq!(
        w.parts[0].backlog(),
        1,
        "partition 0 waits for partition 1's signal"
    );
    assert!(w.result(0, t).is_none());
    w.deliver(m, 1);
    assert_eq!((w.parts[0].backlog(), w.parts[1].backlog()), (0, 0));
    assert_eq!(w.result(0, t), Some(&done(Reply::Ok)));
    assert_eq!(w.parts[0].stats.multi + w.parts[1].stats.multi, 2);
    // Each partition kept only its own object's new value.
    let s = w.submit(0, Cmd::Sum(vec![0, 1]));
    let m = w.find(m + 1, |m| World::is_command(m, 0));
    w.deliver_all(m, &[1, 0]);
    assert_eq!(w.result(0, s), Some(&done(Reply::Total(200))));
    let g = w.submit(0, Cmd::Get(0));
    let m = w.find(m + 1, |m| World::is_command(m, 0));
    w.deliver(m, 0);
    assert_eq!(w.result(0, g), Some(&done(Reply::Value(70))));
    w.check();
}

#[test]
fn ssmr_gathers_an_object_the_client_did_not_name() {
    // Bump(0) also needs key 1 (partition 1): the first attempt goes to partition 0 alone and
    // is answered retry(gamma); the second goes to both.
    let mut w = World::with(Scheme::Ssmr, 2, 2, 1, 3);
    let b = w.submit(0, Cmd::Bump(0));
    let m = w.find(0, |m| World::is_command(m, 0));
    w.deliver(m, 0);
    assert_eq!(w.parts[0].stats.gathers, 1);
    let m2 = w.find(m + 1, |m| World::is_command(m, 0));
    w.deliver_all(m2, &[0, 1]);
    assert_eq!(w.result(0, b), Some(&done(Reply::Ok)));
    w.check();
}

#[test]
fn a_fallback_on_an_object_that_exists_nowhere_answers_not_found_without_blocking() {
    // retry_max 1: the first retry falls back to S-SMR on every partition. Key 0 is deleted
    // between the consult and the fallback, so no partition holds it.
    let mut w = World::with(Scheme::Dssmr, 2, 2, 2, 1);
    w.service.target.store(1, Ordering::Relaxed);
    let t = w.submit(0, Cmd::Transfer(0, 1, 1));
    let c = consult(&mut w, 0, 0);
    let mv = w.find(c, |m| World::is_move(m, 0));
    let acc = w.find(c, |m| World::is_command(m, 0));
    w.deliver(acc, 1); // before its move: retry, and with retry_max 1, the fallback
    let fb = w.find(
        acc + 1,
        |m| matches!(m, Multicast::Command(c) if c.fallback),
    );
    let del = w.submit(1, Cmd::Delete(0));
    let c = consult(&mut w, 1, fb);
    let d = w.find(c, |m| World::is_command(m, 1));
    w.deliver_all(d, &[2, 0]);
    assert_eq!(w.result(1, del), Some(&Ok(Response::Deleted)));
    w.deliver_all(mv, &[2, 0, 1]); // a null move: key 0 is gone
    w.deliver_all(fb, &[1, 0]);
    assert_eq!((w.parts[0].backlog(), w.parts[1].backlog()), (0, 0));
    assert_eq!(w.result(0, t), Some(&Ok(Response::NotFound)));
    assert_eq!(w.clients[0].stats().fallbacks, 1);
    assert_eq!(w.parts[0].stats.fallbacks + w.parts[1].stats.fallbacks, 2);
    w.check();
}

#[test]
fn a_command_over_the_payload_limit_ends_with_too_large_and_is_not_sent() {
    let too_large = |w: &mut World, seq: u64, max: usize| {
        let mut refused = Vec::new();
        w.clients[0].take_refused(&mut refused);
        assert!(
            matches!(&refused[..], [c] if c.seq == seq
                && matches!(c.result, Err(ClientError::TooLarge { max: m, bytes }) if m == max && bytes > max)),
            "{refused:?}"
        );
        assert_eq!(w.clients[0].outstanding(), 0);
        assert_eq!(w.clients[0].stats().too_large, 1);
    };
    // A sum over 500 keys is over a 256-byte limit before anything is sent (DS-SMR: its
    // consult already is).
    for scheme in [Scheme::Ssmr, Scheme::Dssmr] {
        let mut w = World::with(scheme, 2, 2, 1, 3);
        w.clients[0].set_payload_limit(256);
        let s = w.submit(0, Cmd::Sum((0..500).collect()));
        assert!(w.sent.is_empty(), "{:?}", w.kinds());
        too_large(&mut w, s, 256);
    }
    // Bump(0) fits at first; its second attempt, after retry(gamma) added key 1 and partition
    // 1, does not: it ends there, and nothing more is sent.
    let mut probe = World::with(Scheme::Ssmr, 2, 2, 1, 3);
    probe.submit(0, Cmd::Bump(0));
    let first = probe.sent[0].2.len();
    let mut w = World::with(Scheme::Ssmr, 2, 2, 1, 3);
    w.clients[0].set_payload_limit(first);
    let b = w.submit(0, Cmd::Bump(0));
    assert_eq!(w.sent.len(), 1);
    w.deliver(0, 0);
    assert_eq!(w.parts[0].stats.gathers, 1);
    assert_eq!(w.sent.len(), 1, "{:?}", w.kinds());
    too_large(&mut w, b, first);
    w.check();
}
