//! Property-based runs over Chirper's decoders of client, replica and operator input: the
//! command, reply and object types replicas and clients decode ([`Command`], [`Reply`],
//! [`User`], inside the scale-out [`Exchange`], [`Peer`] and [`ToClient`] messages), the text
//! command language of the binaries ([`parse_command`], [`parse_scheme`]) and deployment
//! files ([`DeploymentFile::parse`]).
//!
//! The same inputs are fuzzed without bounds by the cargo-fuzz targets in `fuzz/` (see
//! `fuzz/README.md`); these runs are bounded (a few seconds in release mode).

use bytes::Bytes;
use chirper::cli::{parse_command, parse_scheme, ConfigFile, DeploymentFile, ServiceSection};
use chirper::graph::GraphSpec;
use chirper::service::{Command, Post, Reply, User};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::msg::{Exchange, Outcome, Peer, Prophecy, Response, ToClient};
use engine::partitioned::Scheme;
use engine::wire;
use groups::{MsgId, NodeId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Debug;
use testkit::{bytes_up_to, config, damaged};

#[global_allocator]
static ALLOC: testkit::Capped = testkit::Capped;

fn msg_id() -> impl Strategy<Value = MsgId> {
    (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(s, epoch, seq)| MsgId {
        sender: NodeId(s),
        epoch,
        seq,
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        any::<u32>().prop_map(Command::CreateUser),
        (any::<u32>(), any::<u64>(), bytes_up_to(40)).prop_map(|(user, id, text)| Command::Post {
            user,
            id,
            text
        }),
        any::<(u32, u32)>().prop_map(|(follower, followee)| Command::Follow { follower, followee }),
        any::<(u32, u32)>()
            .prop_map(|(follower, followee)| Command::Unfollow { follower, followee }),
        any::<u32>().prop_map(Command::GetTimeline),
    ]
}

fn post() -> impl Strategy<Value = Post> {
    (any::<u32>(), any::<u64>(), bytes_up_to(24)).prop_map(|(author, id, text)| Post {
        author,
        id,
        text,
    })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        any::<u32>().prop_map(|followers| Reply::Posted { followers }),
        any::<bool>().prop_map(Reply::Followed),
        any::<bool>().prop_map(Reply::Unfollowed),
        vec(post(), 0..4).prop_map(Reply::Timeline),
    ]
}

fn user() -> impl Strategy<Value = User> {
    (
        vec(any::<u32>(), 0..8),
        vec(any::<u32>(), 0..8),
        vec(post(), 0..4),
    )
        .prop_map(|(mut followers, mut followees, timeline)| {
            followers.sort_unstable();
            followers.dedup();
            followees.sort_unstable();
            followees.dedup();
            User {
                followers,
                followees,
                timeline: VecDeque::from(timeline),
            }
        })
}

fn exchange() -> impl Strategy<Value = Exchange<User>> {
    prop_oneof![
        (msg_id(), any::<u32>(), vec((any::<u64>(), user()), 0..3))
            .prop_map(|(msg, from, values)| Exchange::Values { msg, from, values }),
        (msg_id(), proptest::option::of(user()))
            .prop_map(|(msg, value)| Exchange::MoveValue { msg, value }),
        (msg_id(), any::<bool>()).prop_map(|(msg, apply)| Exchange::Verdict { msg, apply }),
    ]
}

fn to_client_msg() -> impl Strategy<Value = ToClient<Reply>> {
    let outcome = prop_oneof![
        reply().prop_map(Outcome::Done),
        Just(Outcome::Created),
        Just(Outcome::NotFound),
        Just(Outcome::Retry),
        vec(any::<u64>(), 0..6).prop_map(Outcome::Gather),
        "\\PC{0,20}".prop_map(Outcome::Rejected),
    ];
    let prophecy = prop_oneof![
        Just(Prophecy::Ok),
        Just(Prophecy::Nok),
        vec(any::<(u64, u32)>(), 0..6).prop_map(Prophecy::Locations),
    ];
    prop_oneof![
        (any::<u64>(), any::<u32>(), outcome).prop_map(|(seq, attempt, outcome)| {
            ToClient::Reply {
                seq,
                attempt,
                outcome,
            }
        }),
        (any::<u64>(), any::<u32>(), prophecy).prop_map(|(seq, attempt, prophecy)| {
            ToClient::Prophecy {
                seq,
                attempt,
                prophecy,
            }
        }),
    ]
}

/// `value` round-trips exactly (debug form and bytes); random bytes, a strict prefix,
/// trailing garbage and flipped bytes give a typed error or a value that re-encodes to itself.
fn check_codec<T: Serialize + DeserializeOwned + Debug>(
    value: &T,
    noise: &[u8],
    cut: Index,
    flips: &[(Index, u8)],
    garbage: &[u8],
) -> Result<(), TestCaseError> {
    let stable = |bytes: &[u8]| -> Result<(), TestCaseError> {
        if let Ok(v) = wire::decode::<T>(bytes) {
            let back: T = wire::decode(&wire::encode(&v)).expect("a re-encoding decodes");
            prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
        Ok(())
    };
    stable(noise)?;
    let good = wire::encode(value);
    let back: T = wire::decode(&good).expect("a valid encoding decodes");
    prop_assert_eq!(format!("{back:?}"), format!("{value:?}"));
    prop_assert_eq!(wire::encode(&back), good.clone());
    let cut = cut.index(good.len());
    prop_assert!(
        wire::decode::<T>(&good[..cut]).is_err(),
        "{}-byte prefix decoded",
        cut
    );
    let mut longer = good.clone();
    longer.extend_from_slice(garbage);
    prop_assert!(
        wire::decode::<T>(&longer).is_err(),
        "trailing garbage accepted"
    );
    let mut bad = good;
    for (i, mask) in flips {
        let at = i.index(bad.len());
        bad[at] ^= mask;
    }
    stable(&bad)
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A command as a user types it.
fn command_line() -> impl Strategy<Value = (Command, String, u64)> {
    (
        prop_oneof![
            any::<u32>().prop_map(|u| (Command::CreateUser(u), format!("create {u}"))),
            (any::<u32>(), vec("[!-~]{1,8}", 1..5)).prop_map(|(u, text)| (
                Command::Post {
                    user: u,
                    id: 0,
                    text: Bytes::from(text.join(" "))
                },
                format!("post {u}  {}", text.join("\t"))
            )),
            any::<(u32, u32)>().prop_map(|(a, b)| (
                Command::Follow {
                    follower: a,
                    followee: b
                },
                format!("follow {a} {b}")
            )),
            any::<(u32, u32)>().prop_map(|(a, b)| (
                Command::Unfollow {
                    follower: a,
                    followee: b
                },
                format!(" unfollow {a} {b} ")
            )),
            any::<u32>().prop_map(|u| (Command::GetTimeline(u), format!("timeline {u}"))),
        ],
        any::<u64>(),
    )
        .prop_map(|((cmd, line), next_id)| {
            let cmd = match cmd {
                Command::Post { user, text, .. } => Command::Post {
                    user,
                    id: next_id,
                    text,
                },
                other => other,
            };
            (cmd, line, next_id)
        })
}

fn command_noise() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("create".to_string()),
        Just("post".to_string()),
        Just("follow".to_string()),
        Just("unfollow".to_string()),
        Just("timeline".to_string()),
        any::<u32>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        "\\PC{0,8}",
    ];
    prop_oneof![vec(word, 0..6).prop_map(|w| w.join(" ")), any::<String>(),]
}

fn deployment_file() -> impl Strategy<Value = DeploymentFile> {
    (
        prop_oneof![Just(Scheme::Ssmr), Just(Scheme::Dssmr)],
        1u32..4,
        1usize..3,
        0usize..2,
        0usize..2,
        // TOML integers are i64: a larger seed cannot be rendered (see `rendering_a_seed_above_i64_max_is_an_error` below).
        (
            1u32..5000,
            1u32..50,
            0.0f64..10.0,
            0.0f64..=1.0,
            0.0f64..3.0,
            0..=i64::MAX as u64,
        ),
        0.0f64..=1.0,
    )
        .prop_map(|(scheme, partitions, replicas, f, clients, g, quality)| {
            let l = ScaleOutLayout::new(
                scheme,
                partitions,
                replicas.max(2 * f + 1),
                f,
                clients,
                layout::tuning(),
            )
            .expect("a valid layout")
            .with_loopback_addresses(7400)
            .expect("addresses");
            let spec = GraphSpec {
                users: g.0,
                communities: g.1,
                mean_followees: g.2,
                locality: g.3,
                popularity_exponent: g.4,
                seed: g.5,
            };
            DeploymentFile {
                section: ServiceSection::generated(scheme, partitions, &spec, quality),
                scheme,
                cluster: l.config,
            }
        })
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551615".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-0.0".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..10).prop_map(|v| v.to_string()),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Commands, replies and users as replicas and clients decode them, alone and inside the
    /// scale-out messages that carry them.
    #[test]
    fn chirper_types_round_trip_and_refuse_damage(
        c in command(),
        r in reply(),
        u in user(),
        ex in exchange(),
        tc in to_client_msg(),
        noise in vec(any::<u8>(), 0..96),
        cut in any::<Index>(),
        flips in vec((any::<Index>(), 1u8..), 1..4),
        garbage in vec(any::<u8>(), 1..16),
    ) {
        check_codec(&c, &noise, cut, &flips, &garbage)?;
        prop_assert_eq!(wire::decode::<Command>(&wire::encode(&c)), Ok(c));
        check_codec(&r, &noise, cut, &flips, &garbage)?;
        check_codec(&u, &noise, cut, &flips, &garbage)?;
        prop_assert_eq!(wire::decode::<User>(&wire::encode(&u)), Ok(u));
        check_codec(&ex, &noise, cut, &flips, &garbage)?;
        let pull: Peer<User> = Peer::Answer(ex.clone());
        check_codec(&pull, &noise, cut, &flips, &garbage)?;
        prop_assert_eq!(wire::decode::<Exchange<User>>(&wire::encode(&ex)), Ok(ex));
        check_codec(&tc, &noise, cut, &flips, &garbage)?;
        let resp = Response::Done(r);
        check_codec(&resp, &noise, cut, &flips, &garbage)?;
    }

    /// Valid command lines parse to their command; any line parses or says why.
    #[test]
    fn command_lines_parse_or_say_why(
        (cmd, line, next_id) in command_line(),
        noise in command_noise(),
    ) {
        prop_assert_eq!(parse_command(&words(&line), next_id), Ok(cmd));
        match parse_command(&words(&noise), next_id) {
            Ok(c) => prop_assert!(!words(&noise).is_empty(), "{:?} from nothing", c),
            Err(why) => prop_assert!(!why.is_empty()),
        }
        let _ = parse_scheme(&noise);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Deployment files round-trip through their text and give every node its role; damaged
    /// or random text gives an error or a file, never a panic.
    #[test]
    fn deployment_files_round_trip_and_survive_damage(
        f in deployment_file(),
        noise in prop_oneof![any::<String>(), "[a-z_\\[\\]=\" 0-9.\n]{0,80}"],
        cut in any::<Index>(),
        line in any::<Index>(),
        at in any::<Index>(),
        ch in any::<char>(),
        number in number(),
    ) {
        let text = f.render().map_err(TestCaseError::fail)?;
        let back = DeploymentFile::parse(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&back.section, &f.section);
        prop_assert_eq!(back.scheme, f.scheme);
        prop_assert_eq!(&back.cluster, &f.cluster);
        for n in &f.cluster.nodes {
            prop_assert_eq!(back.role(n.id), f.role(n.id));
        }
        let _ = DeploymentFile::parse(&noise);
        for d in damaged(&text, cut, line, at, ch, &number, |v| v.parse::<f64>().is_ok()) {
            if let Ok(g) = DeploymentFile::parse(&d) {
                prop_assert!(g.section.partitions >= 1);
                for n in &g.cluster.nodes {
                    let _ = g.role(n.id);
                }
            }
        }
    }
}

/// `partitions = 4294967295` with DS-SMR: the group count `partitions + 1` does not fit; the
/// file is refused with a clear error. (Found by fuzzing: it used to overflow, a panic with
/// overflow checks and a misleading "needs 0" without.)
#[test]
fn a_huge_partition_count_is_refused_without_overflow() {
    let l = ScaleOutLayout::new(Scheme::Dssmr, 1, 1, 0, 0, layout::tuning()).unwrap();
    let f = DeploymentFile {
        section: ServiceSection::generated(Scheme::Dssmr, 1, &GraphSpec::default(), 1.0),
        scheme: Scheme::Dssmr,
        cluster: l.config,
    };
    let text = f
        .render()
        .unwrap()
        .replace("partitions = 1", "partitions = 4294967295");
    assert!(text.contains("partitions = 4294967295"));
    let err = DeploymentFile::parse(&text).unwrap_err();
    assert!(err.contains("groups"), "{err}");
}

/// A section whose `graph_seed` is above `i64::MAX` (TOML integers are i64) cannot be written:
/// `render` says so. (Found by fuzzing: it used to panic on an `expect`.)
#[test]
fn rendering_a_seed_above_i64_max_is_an_error() {
    let l = ScaleOutLayout::new(Scheme::Ssmr, 1, 1, 0, 0, layout::tuning()).unwrap();
    let spec = GraphSpec {
        seed: u64::MAX,
        ..GraphSpec::default()
    };
    let f = DeploymentFile {
        section: ServiceSection::generated(Scheme::Ssmr, 1, &spec, 1.0),
        scheme: Scheme::Ssmr,
        cluster: l.config,
    };
    let err = f.render().unwrap_err();
    assert!(err.contains("cannot be written"), "{err}");
}
