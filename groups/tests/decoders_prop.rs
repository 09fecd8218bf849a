//! Property-based runs over every decoder of network and operator input in `groups`: the frame
//! stream ([`FrameDecoder`]), the codec's [`NetMsg`] bodies and the handshake frames, the wire
//! form of [`GroupSet`], and [`ClusterConfig::from_toml`].
//!
//! The same inputs are fuzzed without bounds by the cargo-fuzz targets in `fuzz/` (see
//! `fuzz/README.md`); these runs are bounded (a few seconds in release mode) so they run with
//! the normal tests.
//!
//! Each property asserts no panic, typed errors with the fields the input implies, exact round
//! trips for valid encodings, and (through the tracking allocator below) that a length field
//! never makes the decoder allocate what it claims.

use groups::codec::{Codec, CodecError, Postcard};
use groups::config::{ClusterConfig, ConfigError, NodeConfig, Tuning};
use groups::frame::{
    encode, Challenge, Frame, FrameDecoder, FrameError, FrameKind, Hello, Proof, FRAME_BYTES_MAX,
    NONCE_BYTES, PROTOCOL_VERSION,
};
use groups::groupset::MAX_GROUP_ID;
use groups::message::{Attempt, LogMsg, PeerStatus, RecoveryMsg, Summary};
use groups::readindex::ReadToken;
use groups::{GroupId, GroupSet, LogEntry, LogId, Message, MsgId, NetMsg, NodeId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use std::sync::Arc;
use testkit::{boundary, bytes_up_to, config};

/// A global allocator that measures, per thread, the peak of live bytes and the largest single
/// request, and refuses any single request over [`alloc_track::HARD_CAP`] (the process then
/// aborts with "memory allocation of N bytes failed" instead of exhausting the machine, or a
/// fallible reservation such as `try_reserve` fails).
mod alloc_track {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub const HARD_CAP: usize = 1 << 30;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn grew(by: isize, request: usize) {
        let _ = LIVE.try_with(|l| {
            let now = l.get() + by;
            l.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        let _ = LARGEST.try_with(|m| m.set(m.get().max(request)));
    }

    /// Records a request over the cap (so `measure` reports it) and refuses it.
    fn refused(size: usize) -> bool {
        if size > HARD_CAP {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
            return true;
        }
        false
    }

    pub struct Tracking;

    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if refused(layout.size()) {
                return std::ptr::null_mut();
            }
            grew(layout.size() as isize, layout.size());
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if refused(layout.size()) {
                return std::ptr::null_mut();
            }
            grew(layout.size() as isize, layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            grew(-(layout.size() as isize), 0);
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if refused(new_size) {
                return std::ptr::null_mut();
            }
            grew(new_size as isize - layout.size() as isize, new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// What `f` allocated on this thread: (result, peak live bytes above the start, largest
    /// single request).
    pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
        let start = LIVE.with(Cell::get);
        let (old_peak, old_largest) = (PEAK.with(Cell::get), LARGEST.with(Cell::get));
        PEAK.with(|p| p.set(start));
        LARGEST.with(|m| m.set(0));
        let r = f();
        let peak = (PEAK.with(Cell::get) - start).max(0) as usize;
        let largest = LARGEST.with(Cell::get);
        PEAK.with(|p| p.set(old_peak.max(p.get())));
        LARGEST.with(|m| m.set(old_largest.max(m.get())));
        (r, peak, largest)
    }
}

#[global_allocator]
static ALLOC: alloc_track::Tracking = alloc_track::Tracking;

const CLUSTER: u64 = 5;
const HEADER: usize = 10;

// ---------------------------------------------------------------------------------------------
// Strategies for valid values.

fn msg_id() -> impl Strategy<Value = MsgId> {
    (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(s, epoch, seq)| MsgId {
        sender: NodeId(s),
        epoch,
        seq,
    })
}

/// Sparse and dense sets, small ids and ids near the wire limit.
fn group_set() -> impl Strategy<Value = GroupSet> {
    prop_oneof![
        vec(0u32..64, 0..8).prop_map(|v| v.into_iter().map(GroupId).collect()),
        vec(0u32..=MAX_GROUP_ID, 0..8).prop_map(|v| v.into_iter().map(GroupId).collect()),
        vec(0u32..200, 0..160).prop_map(|v| v.into_iter().map(GroupId).collect()),
        (0u32..300).prop_map(GroupSet::all),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (msg_id(), any::<u64>(), group_set(), bytes_up_to(48)).prop_map(
        |(id, log_seq, dests, payload)| Message {
            id,
            log_seq,
            dests,
            payload,
        },
    )
}

fn log_entry() -> impl Strategy<Value = LogEntry> {
    prop_oneof![
        (1u64..).prop_map(LogEntry::Skip),
        vec(message(), 1..4).prop_map(|m| LogEntry::Batch(Arc::from(m))),
    ]
}

fn ballot() -> impl Strategy<Value = omnipaxos::ballot_leader_election::Ballot> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(config_id, n, priority, pid)| omnipaxos::ballot_leader_election::Ballot {
            config_id,
            n,
            priority,
            pid,
        },
    )
}

fn log_msg() -> impl Strategy<Value = LogMsg> {
    use omnipaxos::messages::ballot_leader_election::{
        BLEMessage, HeartbeatMsg, HeartbeatReply, HeartbeatRequest,
    };
    use omnipaxos::messages::sequence_paxos::{
        AcceptDecide, Accepted, Decide, PaxosMessage, PaxosMsg,
    };
    use omnipaxos::messages::Message as OpMessage;
    use omnipaxos::util::SequenceNumber;
    let seq = (any::<u64>(), any::<u64>())
        .prop_map(|(session, counter)| SequenceNumber { session, counter });
    let paxos = prop_oneof![
        (ballot(), seq.clone(), any::<usize>()).prop_map(|(n, seq_num, decided_idx)| {
            PaxosMsg::Decide(Decide {
                n,
                seq_num,
                decided_idx,
            })
        }),
        (ballot(), seq, any::<usize>(), vec(log_entry(), 0..3)).prop_map(
            |(n, seq_num, decided_idx, entries)| PaxosMsg::AcceptDecide(AcceptDecide {
                n,
                seq_num,
                decided_idx,
                entries,
            })
        ),
        (ballot(), any::<usize>())
            .prop_map(|(n, accepted_idx)| PaxosMsg::Accepted(Accepted { n, accepted_idx })),
        vec(log_entry(), 0..3).prop_map(PaxosMsg::ProposalForward),
    ];
    let ble = prop_oneof![
        any::<u32>().prop_map(|round| HeartbeatMsg::Request(HeartbeatRequest { round })),
        (any::<u32>(), ballot(), ballot(), any::<bool>()).prop_map(
            |(round, ballot, leader, happy)| HeartbeatMsg::Reply(HeartbeatReply {
                round,
                ballot,
                leader,
                happy,
            })
        ),
    ];
    let omni =
        prop_oneof![
            (any::<u64>(), any::<u64>(), paxos).prop_map(|(from, to, msg)| {
                OpMessage::SequencePaxos(PaxosMessage { from, to, msg })
            }),
            (any::<u64>(), any::<u64>(), ble)
                .prop_map(|(from, to, msg)| OpMessage::BLE(BLEMessage { from, to, msg })),
        ];
    let attempt = (any::<u64>(), any::<u32>()).prop_map(|(incarnation, attempt)| Attempt {
        incarnation,
        attempt,
    });
    let summary = (
        proptest::option::of(ballot()),
        proptest::option::of(ballot()),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(promise, accepted_round, accepted_idx, decided_idx, first_idx)| Summary {
                promise,
                accepted_round,
                accepted_idx,
                decided_idx,
                first_idx,
            },
        );
    let status = prop_oneof![
        (
            summary,
            vec((any::<u32>(), any::<u64>()), 0..5),
            vec((any::<u32>(), any::<u64>()), 0..3)
        )
            .prop_map(|(summary, floors, with)| PeerStatus::Voting {
                summary,
                floors: floors.into_iter().map(|(n, i)| (NodeId(n), i)).collect(),
                bootstrapped: with.into_iter().map(|(n, i)| (NodeId(n), i)).collect(),
            }),
        any::<u64>().prop_map(|incarnation| PeerStatus::Recovering { incarnation }),
        any::<u64>().prop_map(|floor| PeerStatus::Stale { floor }),
    ];
    let recovery = prop_oneof![
        attempt
            .clone()
            .prop_map(|attempt| RecoveryMsg::Query { attempt }),
        (attempt.clone(), status)
            .prop_map(|(attempt, status)| RecoveryMsg::Status { attempt, status }),
        (attempt.clone(), any::<u64>(), any::<u32>())
            .prop_map(|(attempt, from, max)| RecoveryMsg::Fetch { attempt, from, max }),
        (
            attempt,
            proptest::option::of(ballot()),
            any::<u64>(),
            any::<u64>(),
            vec(log_entry(), 0..4)
        )
            .prop_map(
                |(attempt, round, first_idx, from, entries)| RecoveryMsg::Chunk {
                    attempt,
                    round,
                    first_idx,
                    from,
                    entries
                }
            ),
    ];
    prop_oneof![
        (any::<u64>(), omni).prop_map(|(incarnation, msg)| LogMsg::OmniPaxos { incarnation, msg }),
        recovery.prop_map(LogMsg::Recovery),
    ]
}

fn net_msg() -> impl Strategy<Value = NetMsg> {
    let log = any::<u32>().prop_map(LogId);
    prop_oneof![
        (log.clone(), log_msg()).prop_map(|(log, m)| NetMsg::Log {
            log,
            msg: Box::new(m)
        }),
        (log.clone(), vec(message(), 0..4)).prop_map(|(log, msgs)| NetMsg::Submit { log, msgs }),
        (
            log.clone(),
            proptest::option::of(any::<u32>().prop_map(NodeId))
        )
            .prop_map(|(log, leader)| NetMsg::NotLeader { log, leader }),
        (log.clone(), vec(any::<(u32, u64)>(), 0..16))
            .prop_map(|(log, ids)| NetMsg::Ack { log, ids }),
        (log.clone(), any::<u64>(), vec(log_entry(), 0..4)).prop_map(|(log, start, entries)| {
            NetMsg::Entries {
                log,
                start,
                entries,
            }
        }),
        (log.clone(), any::<u64>()).prop_map(|(log, from)| NetMsg::Fetch { log, from }),
        (log.clone(), any::<u64>()).prop_map(|(log, first)| NetMsg::Trimmed { log, first }),
        (log.clone(), any::<u64>()).prop_map(|(log, next)| NetMsg::Progress { log, next }),
        (log.clone(), any::<u64>()).prop_map(|(log, next)| NetMsg::Checkpointed { log, next }),
        (log.clone(), any::<(u32, u64)>()).prop_map(|(log, (epoch, seq))| NetMsg::IndexQuery {
            log,
            read: ReadToken { epoch, seq }
        }),
        (log.clone(), any::<(u32, u64, u64)>()).prop_map(|(log, (epoch, seq, accepted))| {
            NetMsg::IndexReply {
                log,
                read: ReadToken { epoch, seq },
                accepted,
            }
        }),
        (log, any::<u64>(), any::<u64>()).prop_map(|(log, index, slots)| NetMsg::SkipHint {
            log,
            index,
            slots
        }),
        (msg_id(), group_set(), bytes_up_to(64)).prop_map(|(id, dests, payload)| NetMsg::RData {
            id,
            dests,
            payload
        }),
        msg_id().prop_map(|id| NetMsg::RAck { id }),
        bytes_up_to(64).prop_map(|payload| NetMsg::App { payload }),
    ]
}

/// A frame to encode (`Frame` itself is not `Clone`, which strategies need).
#[derive(Clone, Debug)]
enum Spec {
    Hello(Hello),
    Msg(NetMsg),
    Challenge(Challenge),
    Proof(Proof),
}

impl Spec {
    fn frame(&self) -> Frame {
        match self {
            Spec::Hello(h) => Frame::Hello(h.clone()),
            Spec::Msg(m) => Frame::Msg(m.clone()),
            Spec::Challenge(c) => Frame::Challenge(c.clone()),
            Spec::Proof(p) => Frame::Proof(p.clone()),
        }
    }
    fn kind(&self) -> FrameKind {
        self.frame().kind()
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        1 => (any::<u32>(), proptest::option::of(any::<[u8; NONCE_BYTES]>())).prop_map(
            |(n, nonce)| Spec::Hello(Hello {
                node: NodeId(n),
                nonce
            })
        ),
        3 => net_msg().prop_map(Spec::Msg),
        1 => (any::<[u8; NONCE_BYTES]>(), any::<[u8; NONCE_BYTES]>())
            .prop_map(|(nonce, proof)| Spec::Challenge(Challenge { nonce, proof })),
        1 => any::<[u8; NONCE_BYTES]>().prop_map(|proof| Spec::Proof(Proof { proof })),
    ]
}

fn encoded(cluster: u64, s: &Spec) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&Postcard, cluster, &s.frame(), &mut out).expect("a generated frame encodes");
    out
}

/// A frame's identity for comparisons: its kind, its debug form and its re-encoding.
fn fingerprint(f: &Frame) -> (FrameKind, String, Vec<u8>) {
    let mut out = Vec::new();
    encode(&Postcard, CLUSTER, f, &mut out).expect("a decoded frame re-encodes");
    (f.kind(), format!("{f:?}"), out)
}

fn spec_fingerprint(s: &Spec) -> (FrameKind, String, Vec<u8>) {
    fingerprint(&s.frame())
}

/// Splits `bytes` into chunks whose sizes cycle through `sizes` (each at least 1).
fn chunks<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let end = (at + n).min(bytes.len());
        out.push(&bytes[at..end]);
        at = end;
        i += 1;
    }
    out
}

/// What a connection sees: every frame in order, then the error that closes it, or the
/// verdict of `finish` at end of stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<(FrameKind, String, Vec<u8>)>,
    end: Result<(), FrameError>,
}

/// Feeds the chunks one by one, pulling every complete frame after each, stopping at the
/// first error (the runtime closes the connection there), and checks every error against
/// the decoder's settings.
fn run_stream(parts: &[&[u8]], max: usize) -> Outcome {
    let mut d = FrameDecoder::with_max(Postcard, CLUSTER, max);
    let mut frames = Vec::new();
    let mut total = 0;
    for part in parts {
        d.extend(part);
        total += part.len();
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(fingerprint(&f)),
                Ok(None) => break,
                Err(e) => {
                    check_error(&e, max);
                    return Outcome {
                        frames,
                        end: Err(e),
                    };
                }
            }
        }
        assert!(d.buffered() <= total);
    }
    let end = d.finish();
    match &end {
        Ok(()) => assert_eq!(d.buffered(), 0),
        Err(FrameError::Truncated { have, need }) => {
            assert_eq!(*have, d.buffered());
            assert!(have < need, "a complete frame was left in the buffer");
        }
        Err(other) => panic!("finish gave {other:?}"),
    }
    Outcome { frames, end }
}

fn check_error(e: &FrameError, max: usize) {
    match e {
        FrameError::Oversized { len, max: m } => assert!(*m == max && len > m, "{e:?}"),
        FrameError::TooShort { len } => assert!(*len < HEADER, "{e:?}"),
        FrameError::BadVersion { got } => assert_ne!(*got, PROTOCOL_VERSION),
        FrameError::UnknownKind(k) => assert!(!(1..=4).contains(k), "{e:?}"),
        FrameError::WrongCluster { got, want } => assert!(*want == CLUSTER && got != want),
        FrameError::Malformed(CodecError(why)) => assert!(!why.is_empty()),
        FrameError::Truncated { .. } => panic!("next_frame gave {e:?}"),
    }
}

/// Bytes that look like frames often enough to reach the codec: a plausible header (mostly
/// the right version, kind and cluster) around a random body, or plain noise.
fn framed_noise() -> impl Strategy<Value = Vec<u8>> {
    let header = (
        prop_oneof![4 => Just(PROTOCOL_VERSION), 1 => any::<u8>()],
        prop_oneof![4 => 1u8..=4, 1 => any::<u8>()],
        prop_oneof![4 => Just(CLUSTER), 1 => any::<u64>()],
        vec(any::<u8>(), 0..96),
        prop_oneof![6 => Just(0i64), 1 => -12i64..12],
    )
        .prop_map(|(version, kind, cluster, body, skew)| {
            let len = ((HEADER + body.len()) as i64 + skew).max(0) as u32;
            let mut v = len.to_le_bytes().to_vec();
            v.push(version);
            v.push(kind);
            v.extend_from_slice(&cluster.to_le_bytes());
            v.extend_from_slice(&body);
            v
        });
    vec(prop_oneof![4 => header, 1 => vec(any::<u8>(), 0..64)], 0..6)
        .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(2000))]

    /// Random bytes (and frame-shaped noise) in random chunks: no panic, only typed errors whose
    /// fields match the input, and the same outcome however the stream is chunked.
    #[test]
    fn frame_stream_noise_in_any_chunking(
        bytes in prop_oneof![vec(any::<u8>(), 0..512), framed_noise()],
        sizes in vec(1usize..40, 1..8),
        small_cap in any::<bool>(),
    ) {
        let max = if small_cap { 64 } else { FRAME_BYTES_MAX };
        let whole = run_stream(&[&bytes], max);
        let chunked = run_stream(&chunks(&bytes, &sizes), max);
        prop_assert_eq!(&whole, &chunked);
        let byte_by_byte = run_stream(&chunks(&bytes, &[1]), max);
        prop_assert_eq!(&whole, &byte_by_byte);
    }

    /// Valid frames of every kind, concatenated and fed in random chunks, decode to exactly what
    /// was encoded (same debug form, same re-encoding) and leave nothing behind.
    #[test]
    fn valid_frames_round_trip_in_any_chunking(
        specs in vec(spec(), 1..6),
        sizes in vec(1usize..200, 1..8),
    ) {
        let bytes: Vec<u8> = specs.iter().flat_map(|s| encoded(CLUSTER, s)).collect();
        let out = run_stream(&chunks(&bytes, &sizes), FRAME_BYTES_MAX);
        let want: Vec<_> = specs.iter().map(spec_fingerprint).collect();
        prop_assert_eq!(out.frames, want);
        prop_assert_eq!(out.end, Ok(()));
    }

    /// A valid stream cut anywhere: the complete frames before the cut decode, then the decoder
    /// waits for more, and at end of stream reports exactly how much of which frame it has.
    #[test]
    fn truncated_streams_report_exactly_what_is_missing(
        specs in vec(spec(), 1..4),
        cut in any::<Index>(),
        sizes in vec(1usize..64, 1..6),
    ) {
        let encodings: Vec<Vec<u8>> = specs.iter().map(|s| encoded(CLUSTER, s)).collect();
        let bytes = encodings.concat();
        let cut = cut.index(bytes.len());
        let out = run_stream(&chunks(&bytes[..cut], &sizes), FRAME_BYTES_MAX);
        // Frames wholly before the cut, and where the cut frame starts.
        let (mut complete, mut start) = (0, 0);
        while complete < encodings.len() && start + encodings[complete].len() <= cut {
            start += encodings[complete].len();
            complete += 1;
        }
        let want: Vec<_> = specs[..complete].iter().map(spec_fingerprint).collect();
        prop_assert_eq!(out.frames, want);
        let have = cut - start;
        let want_end = if have == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                have,
                need: if have >= 4 { encodings[complete].len() } else { 4 },
            })
        };
        prop_assert_eq!(out.end, want_end);
    }

    /// One byte of a valid frame changed: the error names exactly the field that was hit
    /// (length, version, kind, cluster) or the body is refused by the codec, or the frame
    /// still decodes, as a frame of the kind the header says.
    #[test]
    fn a_corrupted_byte_gives_the_error_of_its_field(
        s in spec(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let good = encoded(CLUSTER, &s);
        let at = at.index(good.len());
        let mut bad = good.clone();
        bad[at] ^= mask;
        let mut d = FrameDecoder::new(Postcard, CLUSTER);
        d.extend(&bad);
        let got = d.next_frame();
        let body_len = good.len() - 4;
        match at {
            0..=3 => {
                let len = u32::from_le_bytes(bad[..4].try_into().unwrap()) as usize;
                if len > FRAME_BYTES_MAX {
                    prop_assert_eq!(got.map(|_| ()), Err(FrameError::Oversized { len, max: FRAME_BYTES_MAX }));
                } else if len < HEADER {
                    prop_assert_eq!(got.map(|_| ()), Err(FrameError::TooShort { len }));
                } else if len > body_len {
                    prop_assert!(matches!(got, Ok(None)));
                    prop_assert_eq!(d.finish(), Err(FrameError::Truncated { have: bad.len(), need: 4 + len }));
                } else {
                    // A shorter frame: its body is a prefix of the real one.
                    prop_assert!(matches!(got, Ok(Some(_)) | Err(FrameError::Malformed(_))), "{:?}", got);
                }
            }
            4 => prop_assert_eq!(got.map(|_| ()), Err(FrameError::BadVersion { got: PROTOCOL_VERSION ^ mask })),
            5 => {
                let kind = s.kind() as u8 ^ mask;
                match got {
                    Ok(Some(f)) => prop_assert_eq!(f.kind() as u8, kind),
                    Err(FrameError::Malformed(_)) => prop_assert!((1..=4).contains(&kind)),
                    other => prop_assert_eq!(other.map(|_| ()), Err(FrameError::UnknownKind(kind))),
                }
            }
            6..=13 => {
                let flipped = CLUSTER ^ (u64::from(mask) << (8 * (at - 6)));
                prop_assert_eq!(got.map(|_| ()), Err(FrameError::WrongCluster { got: flipped, want: CLUSTER }));
            }
            _ => match got {
                Ok(Some(f)) => {
                    prop_assert_eq!(f.kind(), s.kind());
                    prop_assert!(matches!(d.next_frame(), Ok(None)));
                    prop_assert_eq!(d.finish(), Ok(()));
                }
                other => prop_assert!(matches!(other, Err(FrameError::Malformed(_))), "{:?}", other),
            },
        }
    }

    /// Valid frames followed by garbage: the frames decode intact; the garbage gives a typed
    /// error or a wait for more bytes, never a panic.
    #[test]
    fn garbage_after_valid_frames_leaves_them_intact(
        specs in vec(spec(), 1..4),
        garbage in prop_oneof![vec(any::<u8>(), 1..256), framed_noise()],
        sizes in vec(1usize..64, 1..6),
    ) {
        let mut bytes: Vec<u8> = specs.iter().flat_map(|s| encoded(CLUSTER, s)).collect();
        bytes.extend_from_slice(&garbage);
        let out = run_stream(&chunks(&bytes, &sizes), FRAME_BYTES_MAX);
        let want: Vec<_> = specs.iter().map(spec_fingerprint).collect();
        prop_assert!(out.frames.len() >= want.len());
        prop_assert_eq!(&out.frames[..want.len()], &want[..]);
    }

    /// A length field over the cap is refused with `Oversized` as soon as its four bytes are
    /// in, whatever follows, without allocating anything near the claimed size.
    #[test]
    fn oversized_length_fields_are_refused_without_allocating(
        max in prop_oneof![Just(FRAME_BYTES_MAX), 14usize..1 << 20],
        over in any::<Index>(),
        tail in vec(any::<u8>(), 0..64),
        sizes in vec(1usize..8, 1..4),
    ) {
        let len = max + 1 + over.index(u32::MAX as usize - max);
        let mut bytes = (len as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let (result, peak, largest) = alloc_track::measure(|| {
            let mut d = FrameDecoder::with_max(Postcard, CLUSTER, max);
            for part in chunks(&bytes, &sizes) {
                d.extend(part);
                match d.next_frame() {
                    Ok(None) => continue,
                    other => return other.map(|_| ()),
                }
            }
            Ok(())
        });
        prop_assert_eq!(result, Err(FrameError::Oversized { len, max }));
        prop_assert!(peak < 4096 && largest < 4096, "peak {} largest {} for a claimed {}", peak, largest, len);
    }

    /// A length field within the cap but with no body behind it: the decoder waits for the
    /// body without reserving room for it.
    #[test]
    fn a_claimed_length_is_not_reserved_before_the_bytes_arrive(
        len in HEADER..=FRAME_BYTES_MAX,
        filler in vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = (len as u32).to_le_bytes().to_vec();
        bytes.push(PROTOCOL_VERSION);
        bytes.extend_from_slice(&filler[..filler.len().min(len - 1)]);
        let (result, peak, _) = alloc_track::measure(|| {
            let mut d = FrameDecoder::new(Postcard, CLUSTER);
            d.extend(&bytes);
            let r = d.next_frame().map(|f| f.is_some());
            (r, d.finish())
        });
        prop_assert_eq!(result.0, Ok(false));
        prop_assert_eq!(result.1, Err(FrameError::Truncated { have: bytes.len(), need: 4 + len }));
        prop_assert!(peak < 4096, "peak {} for a claimed {}", peak, len);
    }

    /// NetMsg bodies (and the handshake bodies) straight through the codec: random bytes give a
    /// `CodecError` or a value; valid encodings round-trip; any strict prefix and any
    /// extension with garbage is refused; a corrupted encoding that still decodes decodes to a
    /// value that round-trips itself.
    #[test]
    fn net_msg_bodies_round_trip_and_refuse_damage(
        m in net_msg(),
        noise in vec(any::<u8>(), 0..256),
        cut in any::<Index>(),
        flips in vec((any::<Index>(), 1u8..), 1..4),
        garbage in vec(any::<u8>(), 1..32),
    ) {
        let dbg = |m: &NetMsg| format!("{m:?}");
        for bytes in [&noise[..], &noise[..noise.len() / 2]] {
            if let Ok(m) = Postcard.decode::<NetMsg>(bytes) {
                let again = Postcard.encode(&m).unwrap();
                prop_assert_eq!(dbg(&Postcard.decode::<NetMsg>(&again).unwrap()), dbg(&m));
            }
            let _ = Postcard.decode::<Hello>(bytes);
            let _ = Postcard.decode::<Challenge>(bytes);
            let _ = Postcard.decode::<Proof>(bytes);
        }
        let good = Postcard.encode(&m).unwrap();
        let back: NetMsg = Postcard.decode(&good).unwrap();
        prop_assert_eq!(dbg(&back), dbg(&m));
        prop_assert_eq!(Postcard.encode(&back).unwrap(), good.clone());

        let cut = cut.index(good.len());
        prop_assert!(Postcard.decode::<NetMsg>(&good[..cut]).is_err(), "prefix of {} bytes decoded", cut);
        let mut longer = good.clone();
        longer.extend_from_slice(&garbage);
        prop_assert!(Postcard.decode::<NetMsg>(&longer).is_err());

        let mut bad = good.clone();
        for (i, mask) in flips {
            let at = i.index(bad.len());
            bad[at] ^= mask;
        }
        if let Ok(m2) = Postcard.decode::<NetMsg>(&bad) {
            let again = Postcard.encode(&m2).unwrap();
            prop_assert_eq!(dbg(&Postcard.decode::<NetMsg>(&again).unwrap()), dbg(&m2));
        }
    }

    /// Any group set that decodes from the wire is well formed: ids strictly increasing and
    /// within `MAX_GROUP_ID`, and it round-trips.
    #[test]
    fn decoded_group_sets_are_well_formed(
        noise in vec(any::<u8>(), 0..128),
        set in group_set(),
        flips in vec((any::<Index>(), 1u8..), 0..3),
    ) {
        let mut inputs = vec![noise];
        let mut enc = Postcard.encode(&set).unwrap();
        let back: GroupSet = Postcard.decode(&enc).unwrap();
        prop_assert_eq!(&back, &set);
        for (i, mask) in flips {
            let at = i.index(enc.len());
            enc[at] ^= mask;
        }
        inputs.push(enc);
        for bytes in inputs {
            if let Ok(s) = Postcard.decode::<GroupSet>(&bytes) {
                let ids: Vec<u32> = s.iter().map(|g| g.0).collect();
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(ids.last().is_none_or(|&g| g <= MAX_GROUP_ID));
                prop_assert_eq!(s.len(), ids.len());
                let again: GroupSet = Postcard.decode(&Postcard.encode(&s).unwrap()).unwrap();
                prop_assert_eq!(again, s);
            }
        }
    }
}

/// A typical amplification check, not a property: the largest frame a peer may send cannot
/// make the decoder hold more than a bounded multiple of its size.
#[test]
fn decoding_a_frame_allocates_a_bounded_multiple_of_its_size() {
    // One byte per field: the densest encoding postcard has (bitcode, the frame codec before
    // version 3, packed these to one bit each).
    let m = NetMsg::Ack {
        log: LogId(0),
        ids: vec![(0, 0); 1 << 16],
    };
    let body = Postcard.encode(&m).unwrap();
    let (back, peak, _) = alloc_track::measure(|| Postcard.decode::<NetMsg>(&body).unwrap());
    assert!(matches!(back, NetMsg::Ack { ref ids, .. } if ids.len() == 1 << 16));
    let ratio = peak / body.len();
    eprintln!(
        "NetMsg::Ack of {} ids: {} encoded bytes, {} bytes peak while decoding ({ratio}x)",
        1 << 16,
        body.len(),
        peak
    );
    // Linear in the input (about 8x here; about 110x under bitcode): see "Allocation bounds"
    // in fuzz/README.md.
    assert!(ratio <= 32, "{ratio}x");
}

// ---------------------------------------------------------------------------------------------
// Cluster files: operator input.

fn valid_cluster() -> impl Strategy<Value = ClusterConfig> {
    (1u32..5, 1usize..4, 0usize..3, any::<u64>(), any::<bool>()).prop_map(
        |(groups, acceptors, clients, cluster_id, addrs)| {
            let mut nodes: Vec<NodeConfig> = (0..groups)
                .map(|g| NodeConfig {
                    id: NodeId(g + 1),
                    addr: addrs.then(|| format!("127.0.0.1:{}", 7001 + g)),
                    subscriptions: vec![GroupSet::singleton(GroupId(g))],
                })
                .collect();
            let acceptor_ids: Vec<NodeId> = (0..acceptors * 2 - 1)
                .map(|i| NodeId(100 + i as u32))
                .collect();
            for a in &acceptor_ids {
                nodes.push(NodeConfig {
                    id: *a,
                    addr: None,
                    subscriptions: vec![],
                });
            }
            for c in 0..clients {
                nodes.push(NodeConfig {
                    id: NodeId(1000 + c as u32),
                    addr: None,
                    subscriptions: vec![GroupSet::all(groups)],
                });
            }
            ClusterConfig::per_group_plus_global(
                cluster_id,
                groups,
                nodes,
                acceptor_ids,
                Tuning::default(),
            )
            .expect("a valid layout")
        },
    )
}

/// TOML-ish fragments that reach deeper than random text.
fn toml_noise() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("cluster_id"),
        Just("groups"),
        Just("secret_file"),
        Just("id"),
        Just("addr"),
        Just("subscribe"),
        Just("covers"),
        Just("acceptors"),
        Just("tick_us"),
        Just("payload_bytes_max"),
        Just("unknown"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..8).prop_map(|v| v.to_string()),
        Just("\"all\"".to_string()),
        Just("\"\"".to_string()),
        vec(0u32..8, 0..5).prop_map(|v| format!("{v:?}")),
        Just("[\"all\", [0, 1]]".to_string()),
        "[a-z\"\\[\\]0-9, ]{0,12}",
    ];
    let line = prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        Just("[[node]]".to_string()),
        Just("[[log]]".to_string()),
        Just("[tuning]".to_string()),
        "\\PC{0,16}",
    ];
    vec(line, 0..16).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary text and TOML-shaped noise: `from_toml` returns a typed error or a config,
    /// never panics. A config it accepts renders and parses back to itself.
    #[test]
    fn cluster_toml_noise_never_panics(text in prop_oneof![any::<String>(), toml_noise()]) {
        if let Ok(c) = ClusterConfig::from_toml(&text) {
            prop_assert_eq!(ClusterConfig::from_toml(&c.to_toml()), Ok(c));
        }
    }

    /// Valid configurations round-trip through their TOML text; cut, with a line dropped or
    /// duplicated, or with a byte changed, they give an error or another valid config.
    #[test]
    fn cluster_toml_round_trips_and_survives_damage(
        c in valid_cluster(),
        cut in any::<Index>(),
        line in any::<Index>(),
        at in any::<Index>(),
        replacement in any::<char>(),
    ) {
        let text = c.to_toml();
        prop_assert_eq!(ClusterConfig::from_toml(&text), Ok(c.clone()));
        let mut damaged = vec![text[..boundary(&text, cut)].to_string()];
        let lines: Vec<&str> = text.lines().collect();
        let l = line.index(lines.len());
        let mut dropped = lines.clone();
        dropped.remove(l);
        damaged.push(dropped.join("\n"));
        let mut doubled = lines.clone();
        doubled.insert(l, lines[l]);
        damaged.push(doubled.join("\n"));
        let i = boundary(&text, at).min(text.len().saturating_sub(1));
        let mut changed = text.clone();
        if let Some(ch) = changed[i..].chars().next() {
            changed.replace_range(i..i + ch.len_utf8(), &replacement.to_string());
        }
        damaged.push(changed);
        for d in damaged {
            if let Ok(c2) = ClusterConfig::from_toml(&d) {
                prop_assert_eq!(ClusterConfig::from_toml(&c2.to_toml()), Ok(c2));
            }
        }
    }
}

/// A cluster file whose `groups` is far above `MAX_GROUP_ID` and that subscribes a node to
/// `"all"` must be refused with `TooManyGroups` before anything of the size of `groups` is
/// built. (Found by fuzzing: `toml_form::Groups::resolve` expanded `"all"` before
/// `ClusterConfig::new` checked `groups`; 50 million groups allocated 200 MB, and
/// `groups = 4294967295` asked for a single 16 GiB vector.)
#[test]
fn all_groups_of_a_huge_cluster_is_refused_before_it_is_built() {
    let text = "cluster_id = 1\ngroups = 50000000\n\n[[node]]\nid = 1\nsubscribe = [\"all\"]\n\n\
                [[log]]\nid = 0\ncovers = [0]\nacceptors = [1]\n";
    let (result, peak, largest) = alloc_track::measure(|| ClusterConfig::from_toml(text));
    assert_eq!(result, Err(ConfigError::TooManyGroups(50_000_000)));
    assert!(
        largest < 16 << 20,
        "parsing a {}-byte file allocated {largest} bytes at once (peak {peak})",
        text.len()
    );
}

/// A `GroupSet` whose length field claims billions of ids must not make the decoder reserve
/// that much before the ids arrive. (Found by `cargo fuzz run net_msg`: smallvec's serde
/// visitor reserved the claimed length, 16 GiB from 7 bytes, reachable from any peer before
/// authentication; the sparse form now decodes into a `Vec`, whose reservation serde bounds.)
/// The bytes are the frame codec's (postcard): the sparse form's tag, a varint length, ids.
#[test]
fn a_group_set_length_is_not_reserved_before_its_elements_arrive() {
    // Tag 0 (sparse), 4 294 967 295 ids claimed, two present.
    let group_set: &[u8] = &[0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02];
    // NetMsg::RData (variant 9), MsgId { sender 2, epoch 1, seq 9 }, then that group set.
    let mut net_msg = vec![0x09, 0x02, 0x01, 0x09];
    net_msg.extend_from_slice(group_set);
    net_msg.extend_from_slice(&[0xad; 8]);
    // The same bytes with an honest length decode: the claimed length is what is refused.
    let honest: &[u8] = &[0x00, 0x02, 0x01, 0x02];
    assert_eq!(
        Postcard.decode::<GroupSet>(honest).unwrap(),
        [GroupId(1), GroupId(2)].into_iter().collect::<GroupSet>()
    );
    let mut honest_msg = vec![0x09, 0x02, 0x01, 0x09];
    honest_msg.extend_from_slice(honest);
    honest_msg.extend_from_slice(&[0x01, 0x78]);
    assert!(matches!(
        Postcard.decode::<NetMsg>(&honest_msg),
        Ok(NetMsg::RData { .. })
    ));
    let (r, _, largest) = alloc_track::measure(|| Postcard.decode::<GroupSet>(group_set));
    assert!(r.is_err());
    let (r2, _, largest2) = alloc_track::measure(|| Postcard.decode::<NetMsg>(&net_msg));
    assert!(r2.is_err());
    assert!(
        largest < 16 << 20 && largest2 < 16 << 20,
        "a {}-byte GroupSet asked for {largest} bytes at once, a {}-byte NetMsg for {largest2}",
        group_set.len(),
        net_msg.len()
    );
}

/// The fuzz targets' seed inputs (`fuzz/seeds/net_msg`, `fuzz/seeds/frame_stream`) are valid
/// encodings in the current frame format, so the fuzzer starts from frames a node accepts.
/// `CHORUS_REWRITE=1` writes them.
#[test]
fn fuzz_seeds_are_current_encodings() {
    let id = MsgId {
        sender: NodeId(2),
        epoch: 1,
        seq: 9,
    };
    let dests: GroupSet = [GroupId(0), GroupId(4)].into_iter().collect();
    let message = Message {
        log_seq: 4,
        id,
        dests: dests.clone(),
        payload: bytes::Bytes::from_static(b"payload"),
    };
    let entries = NetMsg::Entries {
        log: LogId(3),
        start: 17,
        entries: vec![
            LogEntry::Skip(5),
            LogEntry::Batch(Arc::from(vec![message.clone()])),
        ],
    };
    let hello = Hello {
        node: NodeId(1),
        nonce: None,
    };
    let dense: GroupSet = (0..200).step_by(3).map(GroupId).collect();
    let rdata = NetMsg::RData {
        id,
        dests,
        payload: bytes::Bytes::from_static(b"x"),
    };
    let with = |which: u8, body: Vec<u8>| [vec![which], body].concat();
    let mut stream = vec![0x01, 7, 30];
    for f in [
        Frame::Hello(Hello {
            node: NodeId(5),
            nonce: Some([7; NONCE_BYTES]),
        }),
        Frame::Challenge(Challenge {
            nonce: [1; NONCE_BYTES],
            proof: [2; NONCE_BYTES],
        }),
        Frame::Proof(Proof {
            proof: [3; NONCE_BYTES],
        }),
        Frame::Msg(entries.clone()),
        Frame::Msg(rdata.clone()),
    ] {
        encode(&Postcard, CLUSTER, &f, &mut stream).unwrap();
    }
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "net_msg/entries",
            with(0, Postcard.encode(&entries).unwrap()),
        ),
        ("net_msg/hello", with(2, Postcard.encode(&hello).unwrap())),
        (
            "net_msg/groupset",
            with(5, Postcard.encode(&dense).unwrap()),
        ),
        (
            "net_msg/message",
            with(6, Postcard.encode(&message).unwrap()),
        ),
        ("net_msg/rdata", with(0, Postcard.encode(&rdata).unwrap())),
        ("frame_stream/handshake_and_msgs", stream),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let rewrite = std::env::var_os("CHORUS_REWRITE").is_some();
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if rewrite {
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            on_disk == bytes,
            "{} is not the current encoding (CHORUS_REWRITE=1 writes it)",
            path.display()
        );
    }
}
