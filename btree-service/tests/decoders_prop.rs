//! Property-based runs over the B+-tree service's decoders of client and operator input: the
//! command and reply types replicas and clients decode ([`TreeCommand`], [`TreeReply`]), the
//! text command language of the binaries ([`parse_command`], [`parse_mode`]) and deployment
//! files ([`DeploymentFile::parse`]).
//!
//! The same inputs are fuzzed without bounds by the cargo-fuzz targets in `fuzz/` (see
//! `fuzz/README.md`); these runs are bounded (a few seconds in release mode).

use btree_service::cli::{parse_command, parse_mode, ConfigFile, DeploymentFile};
use btree_service::ranges::{RangeMap, Span};
use btree_service::rebalance::RebalancePolicy;
use btree_service::service::{RebalanceReport, TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use engine::psmr::deployment::Deployment;
use engine::psmr::proxy::Mode;
use engine::psmr::service::{Service, Target};
use engine::wire;
use groups::config::Tuning;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use testkit::{bytes_up_to, config, damaged, integer_text};

#[global_allocator]
static ALLOC: testkit::Capped = testkit::Capped;

fn tree_command() -> impl Strategy<Value = TreeCommand> {
    prop_oneof![
        any::<u64>().prop_map(TreeCommand::Get),
        (any::<u64>(), bytes_up_to(32)).prop_map(|(k, v)| TreeCommand::Insert(k, v)),
        (any::<u64>(), bytes_up_to(32)).prop_map(|(k, v)| TreeCommand::Update(k, v)),
        any::<u64>().prop_map(TreeCommand::Delete),
        any::<(u64, u64, u32)>().prop_map(|(lo, hi, limit)| TreeCommand::Scan { lo, hi, limit }),
        Just(TreeCommand::Size),
        any::<(u32, u64, u32, u64, u32)>().prop_map(|(t, o, a, k, m)| TreeCommand::Rebalance(
            RebalancePolicy {
                tolerance_pct: t,
                ops_min: o,
                actions_max: a,
                stripe_keys: k,
                subtrees_max: m,
            }
        )),
    ]
}

fn range_map() -> impl Strategy<Value = RangeMap> {
    let span =
        (any::<u64>(), 0u64..8, vec(0u32..6, 0..4)).prop_map(|(low, stripe_keys, owners)| Span {
            low,
            stripe_keys,
            owners,
        });
    (any::<u64>(), vec(span, 0..6)).prop_map(|(version, spans)| RangeMap { version, spans })
}

fn tree_reply() -> impl Strategy<Value = TreeReply> {
    let value = proptest::option::of(bytes_up_to(16));
    prop_oneof![
        value.clone().prop_map(TreeReply::Value),
        value.clone().prop_map(TreeReply::Inserted),
        any::<bool>().prop_map(TreeReply::Updated),
        value.prop_map(TreeReply::Deleted),
        vec((any::<u64>(), bytes_up_to(8)), 0..6).prop_map(TreeReply::Entries),
        any::<u64>().prop_map(TreeReply::Size),
        (any::<(u64, u32, u32, u32)>(), vec(any::<u64>(), 0..4)).prop_map(
            |((version, moves, splits, stripes), loads)| TreeReply::Rebalanced(RebalanceReport {
                version,
                moves,
                splits,
                stripes,
                loads,
            })
        ),
    ]
}

/// `value` round-trips exactly; random bytes, a strict prefix, trailing garbage and flipped
/// bytes give a typed error or a value that re-encodes to itself.
fn check_codec<T: Serialize + DeserializeOwned + Debug + PartialEq>(
    value: &T,
    noise: &[u8],
    cut: Index,
    flips: &[(Index, u8)],
    garbage: &[u8],
) -> Result<(), TestCaseError> {
    let stable = |bytes: &[u8]| -> Result<(), TestCaseError> {
        if let Ok(v) = wire::decode::<T>(bytes) {
            prop_assert_eq!(wire::decode::<T>(&wire::encode(&v)), Ok(v));
        }
        Ok(())
    };
    stable(noise)?;
    let good = wire::encode(value);
    let back = wire::decode::<T>(&good);
    prop_assert_eq!(back.as_ref(), Ok(value));
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

/// The words of a command line as the binaries split them.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A command as a user types it (values are single words).
fn command_line() -> impl Strategy<Value = (TreeCommand, String)> {
    let word = "[!-~]{1,12}";
    prop_oneof![
        any::<u64>().prop_map(|k| (TreeCommand::Get(k), format!("get {k}"))),
        (any::<u64>(), word, prop_oneof![Just("put"), Just("insert")]).prop_map(|(k, v, verb)| (
            TreeCommand::Insert(k, Bytes::from(v.clone())),
            format!("{verb} {k} {v}")
        )),
        (any::<u64>(), word).prop_map(|(k, v)| (
            TreeCommand::Update(k, Bytes::from(v.clone())),
            format!("update  {k}\t{v}")
        )),
        (any::<u64>(), prop_oneof![Just("del"), Just("delete")])
            .prop_map(|(k, verb)| (TreeCommand::Delete(k), format!("{verb} {k}"))),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(lo, hi, limit)| {
                let cmd = TreeCommand::Scan {
                    lo,
                    hi,
                    limit: limit.unwrap_or(100),
                };
                match limit {
                    Some(l) => (cmd, format!("scan {lo} {hi} {l}")),
                    None => (cmd, format!("scan {lo} {hi}")),
                }
            }),
        Just((TreeCommand::Size, " size ".to_string())),
        Just((
            TreeCommand::Rebalance(RebalancePolicy::default()),
            "rebalance".to_string()
        )),
    ]
}

/// Lines that look like commands often enough to reach every branch.
fn command_noise() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("get".to_string()),
        Just("put".to_string()),
        Just("insert".to_string()),
        Just("update".to_string()),
        Just("del".to_string()),
        Just("scan".to_string()),
        Just("size".to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        "[0-9]{18,24}",
        "\\PC{0,8}",
    ];
    prop_oneof![vec(word, 0..6).prop_map(|w| w.join(" ")), any::<String>(),]
}

fn deployment_file() -> impl Strategy<Value = DeploymentFile> {
    (
        1usize..4,
        0usize..2,
        1usize..4,
        0usize..3,
        prop_oneof![Just(Mode::Smr), Just(Mode::Psmr), Just(Mode::OptPsmr)],
        (4usize..128, 1u64..1 << 40, any::<Index>(), 0usize..64),
    )
        .prop_map(|(replicas, f, workers, clients, mode, tree)| {
            let workers = if mode == Mode::Smr { 1 } else { workers };
            let d = Deployment::new(
                replicas.max(2 * f + 1),
                f,
                workers,
                clients,
                Tuning::default(),
            )
            .expect("a valid deployment")
            .with_loopback_addresses(7300)
            .expect("addresses");
            let (fanout, key_space, prefill, value_bytes) = tree;
            DeploymentFile {
                mode,
                workers,
                replicas: d.replicas.clone(),
                tree: TreeConfig {
                    fanout,
                    key_space,
                    prefill: prefill.index(key_space.min(1 << 20) as usize + 1) as u64,
                    value_bytes,
                },
                cluster: d.config,
            }
        })
}

proptest! {
    #![proptest_config(config(2000))]

    /// Commands and replies as replicas and clients decode them.
    #[test]
    fn tree_commands_and_replies_round_trip_and_refuse_damage(
        c in tree_command(),
        r in tree_reply(),
        noise in vec(any::<u8>(), 0..96),
        cut in any::<Index>(),
        flips in vec((any::<Index>(), 1u8..), 1..4),
        garbage in vec(any::<u8>(), 1..16),
    ) {
        check_codec(&c, &noise, cut, &flips, &garbage)?;
        check_codec(&r, &noise, cut, &flips, &garbage)?;
    }

    /// Range maps as clients learn them from replicas' refusals: they round-trip, damaged or
    /// random ones are refused or, if they decode into a valid map, routed by without panics;
    /// command maps under any learnt map name only existing workers.
    #[test]
    fn learnt_range_maps_round_trip_and_never_misroute_to_missing_workers(
        m in range_map(),
        noise in vec(any::<u8>(), 0..96),
        cut in any::<Index>(),
        flips in vec((any::<Index>(), 1u8..), 1..4),
        garbage in vec(any::<u8>(), 1..16),
        keys in vec(any::<u64>(), 1..8),
    ) {
        check_codec(&m, &noise, cut, &flips, &garbage)?;
        let service = TreeService::new(TreeConfig::default());
        for bytes in [wire::encode(&m), noise.clone(), [wire::encode(&m), garbage.clone()].concat()] {
            service.learn_routes(&bytes);
        }
        if let Some(l) = service.learnt_routes() {
            prop_assert!(l.validate(u32::MAX as usize + 1).is_ok(), "learnt a malformed map {:?}", l);
        }
        for k in keys {
            for cmd in [TreeCommand::Get(k), TreeCommand::Scan { lo: k, hi: k.saturating_add(50), limit: 5 }] {
                for t in [service.conservative(&cmd, 2), service.optimistic(&cmd, 2)] {
                    let ok = match &t {
                        Target::One(w) => *w < 2,
                        Target::Many(ws) => ws.iter().all(|&w| w < 2),
                        Target::All => true,
                    };
                    prop_assert!(ok, "{:?} mapped to {:?}", cmd, t);
                }
            }
        }
    }

    /// Valid command lines parse to their command; any line parses or says why, never panics.
    #[test]
    fn command_lines_parse_or_say_why(
        (cmd, line) in command_line(),
        noise in command_noise(),
    ) {
        prop_assert_eq!(parse_command(&words(&line)), Ok(cmd));
        match parse_command(&words(&noise)) {
            Ok(c) => prop_assert!(!words(&noise).is_empty(), "{:?} from nothing", c),
            Err(why) => prop_assert!(!why.is_empty()),
        }
        let _ = parse_mode(&noise);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Deployment files round-trip through their text; damaged or random text gives an error
    /// or a file, never a panic.
    #[test]
    fn deployment_files_round_trip_and_survive_damage(
        f in deployment_file(),
        noise in prop_oneof![any::<String>(), "[a-z_\\[\\]=\" 0-9\n]{0,80}"],
        cut in any::<Index>(),
        line in any::<Index>(),
        at in any::<Index>(),
        ch in any::<char>(),
        number in integer_text(),
    ) {
        let text = f.render().map_err(TestCaseError::fail)?;
        let back = DeploymentFile::parse(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back.mode, f.mode);
        prop_assert_eq!(back.workers, f.workers);
        prop_assert_eq!(&back.replicas, &f.replicas);
        prop_assert_eq!(&back.tree, &f.tree);
        prop_assert_eq!(&back.cluster, &f.cluster);
        let _ = DeploymentFile::parse(&noise);
        for d in damaged(&text, cut, line, at, ch, &number, |v| v.parse::<i128>().is_ok()) {
            if let Ok(g) = DeploymentFile::parse(&d) {
                prop_assert!(g.tree.validate().is_ok());
                prop_assert_eq!(g.cluster.groups as usize, g.workers);
            }
        }
    }
}

/// A tree whose `prefill` (or `key_space`) is above `i64::MAX` (TOML integers are i64) cannot
/// be written: `render` says so. (Found by fuzzing: it used to panic on an `expect`, reachable
/// as `btree-server --write-config F --prefill 18446744073709551615`.)
#[test]
fn rendering_values_above_i64_max_is_an_error() {
    let d = Deployment::new(1, 0, 1, 0, Tuning::default()).unwrap();
    let f = DeploymentFile {
        mode: Mode::Psmr,
        workers: 1,
        replicas: d.replicas.clone(),
        tree: TreeConfig {
            key_space: u64::MAX,
            prefill: u64::MAX,
            ..TreeConfig::default()
        },
        cluster: d.config,
    };
    let err = f.render().unwrap_err();
    assert!(err.contains("cannot be written"), "{err}");
}
