//! Property-based runs over every decoder of network input in `engine`: the envelopes of
//! [`engine::wire`] ([`FeedMsg`], [`AppMsg`]), the P-SMR requests and replies of
//! [`engine::psmr::msg`], the scale-out messages of [`engine::partitioned::msg`], the command
//! and reply types of the test services ([`engine::testing`]), a P-SMR replica's decoding of
//! a delivery ([`Executor::decode`]), and the sysfs CPU-list parser.
//!
//! The same inputs are fuzzed without bounds by the cargo-fuzz targets in `fuzz/` (see
//! `fuzz/README.md`); these runs are bounded (a few seconds in release mode).
//!
//! Every property asserts no panic, a typed [`CodecError`] for malformed input, and exact
//! round trips for valid encodings (same debug form, same bytes when re-encoded).

use bytes::Bytes;
use engine::partitioned::msg::{
    CommandMsg, Exchange, Multicast, Outcome as POutcome, Peer, Prophecy, Response, ToClient,
};
use engine::partitioned::service::Kind;
use engine::psmr::executor::{ExecOptions, Executor, JobKind};
use engine::psmr::msg::{Attempt, Outcome, Reply, Request};
use engine::testing::scaleout::{Cmd, Reply as SReply};
use engine::testing::{KvCommand, KvReply, KvService};
use engine::topology::parse_cpu_list;
use engine::wire::{self, AppMsg, ClientId, FeedMsg};
use groups::codec::CodecError;
use groups::merge::Delivery;
use groups::{GroupId, GroupSet, LogId, Message, MsgId, NodeId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::sync::Arc;
use testkit::{bytes_up_to, config};

#[global_allocator]
static ALLOC: testkit::Capped = testkit::Capped;

// ---------------------------------------------------------------------------------------------
// Strategies for valid values.

fn client() -> impl Strategy<Value = ClientId> {
    any::<u64>().prop_map(ClientId)
}

fn msg_id() -> impl Strategy<Value = MsgId> {
    (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(s, epoch, seq)| MsgId {
        sender: NodeId(s),
        epoch,
        seq,
    })
}

fn attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![Just(Attempt::Conservative), Just(Attempt::Optimistic)]
}

fn kv_command() -> impl Strategy<Value = KvCommand> {
    prop_oneof![
        any::<u64>().prop_map(KvCommand::Get),
        any::<(u64, i64)>().prop_map(|(k, v)| KvCommand::Put(k, v)),
        any::<(u64, i64)>().prop_map(|(k, v)| KvCommand::Insert(k, v)),
        any::<(u64, u64, i64)>().prop_map(|(a, b, x)| KvCommand::Transfer(a, b, x)),
        Just(KvCommand::Sum),
        Just(KvCommand::Len),
    ]
}

fn kv_reply() -> impl Strategy<Value = KvReply> {
    prop_oneof![
        proptest::option::of(any::<i64>()).prop_map(KvReply::Value),
        Just(KvReply::Ok),
        any::<bool>().prop_map(KvReply::Inserted),
        any::<i64>().prop_map(KvReply::Total),
        any::<u64>().prop_map(KvReply::Len),
    ]
}

/// A command field: a valid command's encoding, or bytes that may not be one.
fn command_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => kv_command().prop_map(|c| Bytes::from(wire::encode(&c))),
        1 => scaleout_cmd().prop_map(|c| Bytes::from(wire::encode(&c))),
        1 => bytes_up_to(24),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        client(),
        any::<u64>(),
        attempt(),
        any::<u32>(),
        any::<u64>(),
        command_bytes(),
    )
        .prop_map(|(client, seq, attempt, round, floor, command)| Request {
            client,
            seq,
            attempt,
            round,
            floor,
            command,
        })
}

fn reply() -> impl Strategy<Value = Reply<KvReply>> {
    let outcome = prop_oneof![
        kv_reply().prop_map(Outcome::Done),
        Just(Outcome::RetryConservative),
        bytes_up_to(24).prop_map(Outcome::Misrouted),
        "\\PC{0,20}".prop_map(Outcome::Rejected),
    ];
    (
        client(),
        any::<u64>(),
        attempt(),
        any::<u32>(),
        any::<u32>(),
        outcome,
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(client, seq, attempt, round, replica, outcome, state_hash)| Reply {
                client,
                seq,
                attempt,
                round,
                replica: NodeId(replica),
                outcome,
                state_hash,
            },
        )
}

fn scaleout_cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        any::<(u64, i64)>().prop_map(|(k, v)| Cmd::Create(k, v)),
        any::<u64>().prop_map(Cmd::Delete),
        any::<u64>().prop_map(Cmd::Get),
        any::<(u64, i64)>().prop_map(|(k, v)| Cmd::Put(k, v)),
        any::<(u64, u64, i64)>().prop_map(|(a, b, x)| Cmd::Transfer(a, b, x)),
        vec(any::<u64>(), 0..8).prop_map(Cmd::Sum),
        any::<u64>().prop_map(Cmd::Bump),
    ]
}

fn scaleout_reply() -> impl Strategy<Value = SReply> {
    prop_oneof![
        any::<i64>().prop_map(SReply::Value),
        Just(SReply::Ok),
        any::<i64>().prop_map(SReply::Total),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        vec(any::<u64>(), 0..6).prop_map(Kind::Access),
        any::<u64>().prop_map(Kind::Create),
        any::<u64>().prop_map(Kind::Delete),
    ]
}

fn multicast() -> impl Strategy<Value = Multicast> {
    let command = (
        client(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        kind(),
        vec(any::<u32>(), 0..5),
        any::<bool>(),
        command_bytes(),
    )
        .prop_map(
            |(client, seq, attempt, floor, kind, partitions, fallback, command)| CommandMsg {
                client,
                seq,
                attempt,
                floor,
                kind,
                partitions,
                fallback,
                command,
            },
        );
    prop_oneof![
        (client(), any::<u64>(), any::<u32>(), kind()).prop_map(|(client, seq, attempt, query)| {
            Multicast::Consult {
                client,
                seq,
                attempt,
                query,
            }
        }),
        any::<(u64, u32, u32)>().prop_map(|(object, from, to)| Multicast::Move {
            object,
            from,
            to
        }),
        command.prop_map(Multicast::Command),
    ]
}

fn exchange() -> impl Strategy<Value = Exchange<i64>> {
    prop_oneof![
        (msg_id(), any::<u32>(), vec(any::<(u64, i64)>(), 0..6))
            .prop_map(|(msg, from, values)| Exchange::Values { msg, from, values }),
        (msg_id(), proptest::option::of(any::<i64>()))
            .prop_map(|(msg, value)| Exchange::MoveValue { msg, value }),
        (msg_id(), any::<bool>()).prop_map(|(msg, apply)| Exchange::Verdict { msg, apply }),
    ]
}

fn peer() -> impl Strategy<Value = Peer<i64>> {
    prop_oneof![
        (msg_id(), any::<u32>()).prop_map(|(msg, r)| Peer::Pull {
            msg,
            requester: NodeId(r)
        }),
        exchange().prop_map(Peer::Answer),
    ]
}

fn prophecy() -> impl Strategy<Value = Prophecy> {
    prop_oneof![
        Just(Prophecy::Ok),
        Just(Prophecy::Nok),
        vec(any::<(u64, u32)>(), 0..6).prop_map(Prophecy::Locations),
    ]
}

fn to_client_msg() -> impl Strategy<Value = ToClient<SReply>> {
    let outcome = prop_oneof![
        scaleout_reply().prop_map(POutcome::Done),
        Just(POutcome::Created),
        Just(POutcome::AlreadyExists),
        Just(POutcome::Deleted),
        Just(POutcome::NotFound),
        Just(POutcome::Retry),
        vec(any::<u64>(), 0..6).prop_map(POutcome::Gather),
        "\\PC{0,20}".prop_map(POutcome::Rejected),
    ];
    prop_oneof![
        (any::<u64>(), any::<u32>(), outcome).prop_map(|(seq, attempt, outcome)| {
            ToClient::Reply {
                seq,
                attempt,
                outcome,
            }
        }),
        (any::<u64>(), any::<u32>(), prophecy()).prop_map(|(seq, attempt, prophecy)| {
            ToClient::Prophecy {
                seq,
                attempt,
                prophecy,
            }
        }),
    ]
}

fn response() -> impl Strategy<Value = Response<SReply>> {
    prop_oneof![
        scaleout_reply().prop_map(Response::Done),
        Just(Response::Created),
        Just(Response::AlreadyExists),
        Just(Response::Deleted),
        Just(Response::NotFound),
    ]
}

// ---------------------------------------------------------------------------------------------
// The common checks.

/// Damage to apply to a valid encoding.
#[derive(Clone, Debug)]
struct Damage {
    noise: Vec<u8>,
    cut: Index,
    flips: Vec<(Index, u8)>,
    garbage: Vec<u8>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        vec(any::<u8>(), 0..96),
        any::<Index>(),
        vec((any::<Index>(), 1u8..), 1..4),
        vec(any::<u8>(), 1..16),
    )
        .prop_map(|(noise, cut, flips, garbage)| Damage {
            noise,
            cut,
            flips,
            garbage,
        })
}

/// If `bytes` decode as a `T`, the value re-encodes and decodes to itself.
fn stable<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    match wire::decode::<T>(bytes) {
        Ok(v) => {
            let again = wire::encode(&v);
            let back: T = wire::decode(&again)
                .map_err(|e| TestCaseError::fail(format!("re-encoding does not decode: {e}")))?;
            prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
        Err(CodecError(why)) => prop_assert!(!why.is_empty()),
    }
    Ok(())
}

/// `value` round-trips exactly; random bytes, a strict prefix, trailing garbage and flipped
/// bits give a `CodecError` or (for noise and flips) a value that is itself stable.
fn check_codec<T: Serialize + DeserializeOwned + Debug>(
    value: &T,
    d: &Damage,
) -> Result<(), TestCaseError> {
    stable::<T>(&d.noise)?;
    let good = wire::encode(value);
    let back: T = wire::decode(&good)
        .map_err(|e| TestCaseError::fail(format!("a valid encoding does not decode: {e}")))?;
    prop_assert_eq!(format!("{back:?}"), format!("{value:?}"));
    prop_assert_eq!(wire::encode(&back), good.clone());

    let cut = d.cut.index(good.len());
    prop_assert!(
        wire::decode::<T>(&good[..cut]).is_err(),
        "a {}-byte prefix of {:?} decoded",
        cut,
        value
    );
    let mut longer = good.clone();
    longer.extend_from_slice(&d.garbage);
    prop_assert!(
        wire::decode::<T>(&longer).is_err(),
        "trailing garbage accepted"
    );

    let mut bad = good;
    for (i, mask) in &d.flips {
        let at = i.index(bad.len());
        bad[at] ^= mask;
    }
    stable::<T>(&bad)
}

proptest! {
    #![proptest_config(config(2000))]

    /// The P-SMR envelopes: requests (whose command field is decoded separately) and replies.
    #[test]
    fn requests_and_replies_round_trip_and_refuse_damage(
        req in request(),
        rep in reply(),
        d in damage(),
    ) {
        check_codec(&req, &d)?;
        check_codec(&rep, &d)?;
        // The command inside a request decodes on its own, to a command or a typed error.
        stable::<KvCommand>(&req.command)?;
        stable::<Cmd>(&req.command)?;
    }

    /// Point-to-point messages: a kind byte, for clients the 8-byte client id, then the body.
    /// Any input parses to an envelope or a typed error; a client message's body is the rest.
    #[test]
    fn app_messages_carry_their_kind_and_addressee(
        c in client(),
        rep in reply(),
        tc in to_client_msg(),
        noise in vec(any::<u8>(), 0..40),
    ) {
        let m = AppMsg::to_client(c, &rep);
        let Ok(AppMsg::ToClient { client: to, body }) = AppMsg::parse(&m) else {
            panic!("a client message has an addressee");
        };
        prop_assert_eq!(to, c);
        let back: Reply<KvReply> = wire::decode(body).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{rep:?}"));

        let m = AppMsg::to_client(c, &tc);
        let Ok(AppMsg::ToClient { client: to, body }) = AppMsg::parse(&m) else {
            panic!("a client message has an addressee");
        };
        prop_assert_eq!(to, c);
        let back: ToClient<SReply> = wire::decode(body).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{tc:?}"));

        match AppMsg::parse(&noise) {
            Err(_) => {}
            Ok(AppMsg::ToClient { client: ClientId(id), body }) => {
                prop_assert!(noise.len() >= 9);
                prop_assert_eq!(id, u64::from_le_bytes(noise[1..9].try_into().unwrap()));
                prop_assert_eq!(body, &noise[9..]);
                stable::<Reply<KvReply>>(body)?;
                stable::<ToClient<SReply>>(body)?;
            }
            Ok(AppMsg::Transfer(body) | AppMsg::Peer(body)) => {
                prop_assert_eq!(body, &noise[1..]);
                stable::<engine::checkpoint::Transfer>(body)?;
            }
            Ok(AppMsg::Read(body)) => {
                prop_assert_eq!(body, &noise[1..]);
                stable::<Request>(body)?;
            }
        }
        match FeedMsg::parse(&noise) {
            Err(_) => {}
            Ok(FeedMsg::Command(body)) => prop_assert_eq!(body, &noise[1..]),
            Ok(FeedMsg::Checkpoint { round }) => {
                prop_assert_eq!(noise.len(), 9);
                prop_assert_eq!(round, u64::from_le_bytes(noise[1..9].try_into().unwrap()));
            }
        }
    }

    /// The scale-out messages: multicasts, exchanges, peer messages, messages to clients.
    #[test]
    fn partitioned_messages_round_trip_and_refuse_damage(
        m in multicast(),
        ex in exchange(),
        p in peer(),
        tc in to_client_msg(),
        r in response(),
        d in damage(),
    ) {
        check_codec(&m, &d)?;
        check_codec(&ex, &d)?;
        let back: Exchange<i64> = wire::decode(&wire::encode(&ex)).unwrap();
        prop_assert_eq!(back, ex);
        check_codec(&p, &d)?;
        check_codec(&tc, &d)?;
        check_codec(&r, &d)?;
        let back: Response<SReply> = wire::decode(&wire::encode(&r)).unwrap();
        prop_assert_eq!(back, r);
    }

    /// State transfer: transfer messages round-trip and refuse damage; a checkpoint (from a
    /// peer) decodes or is refused, and a damaged one that decodes is installed or refused by
    /// `restore` with a typed error, never a panic.
    #[test]
    fn checkpoints_and_transfers_round_trip_and_refuse_damage(
        shard0 in vec((any::<u64>(), any::<i64>()), 0..12),
        round in any::<u64>(),
        offset in any::<u64>(),
        data in bytes_up_to(64),
        which in 0..3u8,
        d in damage(),
    ) {
        use engine::checkpoint::Transfer;
        use engine::psmr::snapshot::{Checkpoint, WorkerPart};
        use engine::psmr::executor::WorkerState;
        use engine::psmr::service::Service;
        let t = match which {
            0 => Transfer::Get { round: (offset % 2 == 0).then_some(round), offset },
            1 => Transfer::Chunk { round, total: offset, offset, data },
            _ => Transfer::NoCheckpoint,
        };
        check_codec(&t, &d)?;
        let _ = Transfer::decode(&d.noise);

        let dep = engine::psmr::deployment::Deployment::new(2, 1, 2, 1, groups::config::Tuning::default())
            .unwrap();
        let subs = dep.config.node(NodeId(1)).unwrap().subscriptions.clone();
        let svc = KvService::default();
        let mut shards = svc.shards(2);
        for (k, v) in shard0 {
            shards[engine::testing::owner(k, 2)].insert(k, v);
        }
        let parts = (0..2)
            .map(|w| {
                let merger = groups::merge::Merger::new(
                    &dep.config.logs_for(&subs[w]),
                    subs[w].clone(),
                    dep.config.tuning.merge_m,
                );
                WorkerPart::take(&svc, &WorkerState::<KvService>::new(w), &shards[w], merger.state())
            })
            .collect();
        let ck = Checkpoint { round, parts };
        check_codec(&ck, &d)?;
        let restored = engine::psmr::snapshot::restore(&svc, &ck, &dep.config, &subs).unwrap();
        prop_assert_eq!(&restored.shards, &shards);
        let mut bad = ck.encode().to_vec();
        for (i, mask) in &d.flips {
            let at = i.index(bad.len());
            bad[at] ^= mask;
        }
        if let Ok(c) = Checkpoint::decode(&bad) {
            let _ = engine::psmr::snapshot::restore(&svc, &c, &dep.config, &subs);
        }
    }

    /// The test services' commands and replies, as replicas and clients decode them.
    #[test]
    fn test_service_commands_round_trip_and_refuse_damage(
        kc in kv_command(),
        kr in kv_reply(),
        sc in scaleout_cmd(),
        sr in scaleout_reply(),
        d in damage(),
    ) {
        check_codec(&kc, &d)?;
        prop_assert_eq!(wire::decode::<KvCommand>(&wire::encode(&kc)), Ok(kc));
        check_codec(&kr, &d)?;
        prop_assert_eq!(wire::decode::<KvReply>(&wire::encode(&kr)), Ok(kr));
        check_codec(&sc, &d)?;
        prop_assert_eq!(wire::decode::<Cmd>(&wire::encode(&sc)), Ok(sc));
        check_codec(&sr, &d)?;
        prop_assert_eq!(wire::decode::<SReply>(&wire::encode(&sr)), Ok(sr));
    }

    /// A P-SMR replica decoding a delivery: a payload that is not a request is dropped; a
    /// request goes to the delivery's groups below `workers` (sorted), and its command is the
    /// decoded command or the reason it did not decode.
    #[test]
    fn a_replica_decodes_any_delivery_without_panicking(
        req in request(),
        noise in vec(any::<u8>(), 0..64),
        flips in vec((any::<Index>(), 1u8..), 0..3),
        which in 0..3u8,
        dests in vec(0u32..12, 0..5),
        workers in 1usize..8,
        id in msg_id(),
    ) {
        let payload = match which {
            0 => FeedMsg::command(&req).to_vec(),
            1 => {
                let mut v = FeedMsg::command(&req).to_vec();
                for (i, mask) in &flips {
                    let at = i.index(v.len());
                    v[at] ^= mask;
                }
                v
            }
            _ => noise,
        };
        let dests: GroupSet = dests.into_iter().map(GroupId).collect();
        let delivery = Delivery {
            msg: Message {
                id,
                log_seq: 0,
                dests: dests.clone(),
                payload: Bytes::from(payload.clone()),
            },
            log: LogId(0),
            index: 0,
        };
        let ex = Executor::new(Arc::new(KvService::default()), workers, NodeId(1), ExecOptions::default());
        let job = ex.decode(&delivery);
        let involved: Vec<usize> = dests
            .iter()
            .map(|g| g.0 as usize)
            .filter(|&g| g < workers)
            .collect();
        let request = match FeedMsg::parse(&payload) {
            Ok(FeedMsg::Command(body)) => wire::decode::<Request>(body).ok(),
            _ => None,
        };
        match request {
            None => prop_assert!(job.is_none() || job.as_ref().is_some_and(|j| j.checkpoint_round().is_some())),
            Some(r) => match job {
                None => prop_assert!(involved.is_empty()),
                Some(job) => {
                    prop_assert_eq!(job.id, id);
                    prop_assert_eq!(&job.involved, &involved);
                    prop_assert_eq!(job.executor(), involved[0]);
                    let JobKind::Command { request, command } = &job.kind else {
                        panic!("a command");
                    };
                    prop_assert_eq!((request.client, request.seq), (r.client, r.seq));
                    match (wire::decode::<KvCommand>(&r.command), command) {
                        (Ok(want), Ok(got)) => prop_assert_eq!(&want, got),
                        (Err(e), Err(why)) => prop_assert_eq!(&e.to_string(), why),
                        (want, got) => prop_assert!(false, "{:?} vs {:?}", want, got),
                    }
                }
            },
        }
    }

    /// CPU lists from sysfs: any text gives a list or `None`; a valid list gives exactly its
    /// CPUs.
    #[test]
    fn cpu_lists_parse_or_are_refused(
        text in prop_oneof!["\\PC{0,24}", "[0-9,\\- \n]{0,24}"],
        parts in vec((0usize..4096, proptest::option::of(0usize..64)), 1..6),
    ) {
        if let Some(cpus) = parse_cpu_list(&text) {
            prop_assert!(cpus.len() <= text.len() * (1 << 16));
        }
        let mut want = Vec::new();
        let items: Vec<String> = parts
            .iter()
            .map(|&(a, span)| match span {
                None => {
                    want.push(a);
                    a.to_string()
                }
                Some(s) => {
                    want.extend(a..=a + s);
                    format!("{a}-{}", a + s)
                }
            })
            .collect();
        prop_assert_eq!(parse_cpu_list(&format!("{}\n", items.join(","))), Some(want));
    }
}
