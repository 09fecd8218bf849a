//! Experiment `codec`: the cost of encoding and decoding the messages on a replicated
//! command's path, with the engine's wire encoding (`postcard`, [`engine::wire`]) and with
//! `bitcode`'s serde mode (the groups layer's frame codec, and the engine's before), side by
//! side in one run. Messages: a B+-tree `Get` and `Insert` request as a client multicasts it
//! (the service command encoded inside the engine's `Request`), and the replies to them.
//! Each figure is the median of `runs` timed loops of `iterations` encode+decode round trips.

use crate::machine::Machine;
use crate::report::{self, decimals, median, Table};
use btree_service::service::{TreeCommand, TreeReply};
use engine::psmr::msg::{Attempt, Outcome, Reply, Request};
use engine::wire::ClientId;
use groups::codec::{Bitcode, Codec, Postcard};
use groups::frame::{self, Frame};
use groups::groupset::GroupSet;
use groups::ids::NodeId;
use groups::ids::{GroupId, LogId, MsgId};
use groups::message::{LogEntry, Message, NetMsg};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A row of `codec.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub message: &'static str,
    pub codec: &'static str,
    pub bytes: usize,
    /// Nanoseconds per encode, per decode (medians of the runs).
    pub encode_ns: f64,
    pub decode_ns: f64,
    /// bitcode's encode + decode time over this codec's (1.0 for bitcode itself).
    pub speedup_over_bitcode: f64,
}

fn time<T: Serialize + DeserializeOwned>(
    value: &T,
    encode: &dyn Fn(&T) -> Vec<u8>,
    decode: &dyn Fn(&[u8]) -> T,
    iterations: u32,
    runs: usize,
) -> (usize, f64, f64) {
    let bytes = encode(value);
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(encode(std::hint::black_box(value)));
        }
        enc.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));
        let t = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(decode(std::hint::black_box(&bytes)));
        }
        dec.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    (bytes.len(), median(&enc), median(&dec))
}

fn request(command: &TreeCommand) -> Request {
    Request {
        client: ClientId::new(NodeId(1000), 7),
        seq: 123_456,
        attempt: Attempt::Conservative,
        round: 0,
        floor: 123_400,
        command: engine::wire::encode(command).into(),
    }
}

fn reply(r: TreeReply) -> Reply<TreeReply> {
    Reply {
        client: ClientId::new(NodeId(1000), 7),
        seq: 123_456,
        attempt: Attempt::Conservative,
        round: 0,
        replica: NodeId(1),
        outcome: Outcome::Done(r),
        state_hash: None,
    }
}

fn both<T: Serialize + DeserializeOwned>(
    rows: &mut Vec<Row>,
    message: &'static str,
    value: &T,
    iterations: u32,
    runs: usize,
) {
    let (b_len, b_enc, b_dec) = time(
        value,
        &|v| Bitcode.encode(v).expect("encodes"),
        &|b| Bitcode.decode(b).expect("decodes"),
        iterations,
        runs,
    );
    let (p_len, p_enc, p_dec) = time(
        value,
        &|v| engine::wire::encode(v),
        &|b| engine::wire::decode(b).expect("decodes"),
        iterations,
        runs,
    );
    pair(
        rows,
        message,
        ["bitcode (serde)", "postcard (engine wire)"],
        (b_len, b_enc, b_dec),
        (p_len, p_enc, p_dec),
    );
}

/// The two rows of one message: bitcode, then the other codec with its speed-up.
fn pair(
    rows: &mut Vec<Row>,
    message: &'static str,
    codecs: [&'static str; 2],
    (b_len, b_enc, b_dec): (usize, f64, f64),
    (p_len, p_enc, p_dec): (usize, f64, f64),
) {
    rows.push(Row {
        message,
        codec: codecs[0],
        bytes: b_len,
        encode_ns: b_enc,
        decode_ns: b_dec,
        speedup_over_bitcode: 1.0,
    });
    rows.push(Row {
        message,
        codec: codecs[1],
        bytes: p_len,
        encode_ns: p_enc,
        decode_ns: p_dec,
        speedup_over_bitcode: (b_enc + b_dec) / (p_enc + p_dec),
    });
}

/// What a log leader sends its acceptors (and a learner its subscribers) for one batch of
/// `n` client multicasts, each an engine request in its feed envelope.
fn batch_frame(command: &TreeCommand, n: u64) -> NetMsg {
    let messages: Vec<Message> = (0..n)
        .map(|i| Message {
            log_seq: i,
            id: MsgId {
                sender: NodeId(1000),
                epoch: 1,
                seq: 50_000 + i,
            },
            dests: [GroupId(0)].into_iter().collect::<GroupSet>(),
            payload: engine::wire::FeedMsg::command(&request(command)),
        })
        .collect();
    NetMsg::Entries {
        log: LogId(0),
        start: 1_000_000,
        entries: vec![LogEntry::Batch(Arc::from(messages))],
    }
}

/// A frame as the TCP runtime writes and reads it: encoded into a connection's write buffer
/// (kept between frames, as the runtime keeps it), decoded from the frame's body.
fn frames(rows: &mut Vec<Row>, message: &'static str, msg: NetMsg, iterations: u32, runs: usize) {
    fn timed<C: Codec>(codec: C, msg: &NetMsg, iterations: u32, runs: usize) -> (usize, f64, f64) {
        let frame = Frame::Msg(msg.clone());
        let mut buf = Vec::new();
        frame::encode(&codec, 1, &frame, &mut buf).expect("encodes");
        let body = buf[14..].to_vec();
        let (mut enc, mut dec) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            for _ in 0..iterations {
                buf.clear();
                frame::encode(&codec, 1, std::hint::black_box(&frame), &mut buf).expect("encodes");
                std::hint::black_box(&buf);
            }
            enc.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));
            let t = Instant::now();
            for _ in 0..iterations {
                std::hint::black_box(
                    codec
                        .decode::<NetMsg>(std::hint::black_box(&body))
                        .expect("decodes"),
                );
            }
            dec.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));
        }
        (body.len(), median(&enc), median(&dec))
    }
    pair(
        rows,
        message,
        [
            "bitcode (serde; groups frames before)",
            "postcard (groups frames, in place)",
        ],
        timed(Bitcode, &msg, iterations, runs),
        timed(Postcard, &msg, iterations, runs),
    );
}

pub fn run(out: &Path, machine: &Machine, iterations: u32, runs: usize) -> Vec<Row> {
    let value = bytes::Bytes::from(vec![0xAB; 16]);
    let mut rows = Vec::new();
    both(
        &mut rows,
        "request: get",
        &request(&TreeCommand::Get(987_654)),
        iterations,
        runs,
    );
    both(
        &mut rows,
        "request: insert, 16-byte value",
        &request(&TreeCommand::Insert(987_654, value.clone())),
        iterations,
        runs,
    );
    both(
        &mut rows,
        "reply: a 16-byte value",
        &reply(TreeReply::Value(Some(value.clone()))),
        iterations,
        runs,
    );
    let entries = (0..100u64).map(|k| (k, value.clone())).collect();
    both(
        &mut rows,
        "reply: a scan of 100 entries",
        &reply(TreeReply::Entries(entries)),
        iterations / 20,
        runs,
    );
    frames(
        &mut rows,
        "frame: a batch of 1 update (100-byte value)",
        batch_frame(
            &TreeCommand::Update(987_654, bytes::Bytes::from(vec![0xCD; 100])),
            1,
        ),
        iterations,
        runs,
    );
    frames(
        &mut rows,
        "frame: a batch of 64 updates (100-byte values)",
        batch_frame(
            &TreeCommand::Update(987_654, bytes::Bytes::from(vec![0xCD; 100])),
            64,
        ),
        iterations / 20,
        runs,
    );
    let mut t = Table::new(&[
        "message",
        "codec",
        "bytes",
        "encode ns",
        "decode ns",
        "speed-up",
    ]);
    for r in &rows {
        t.row(vec![
            r.message.to_string(),
            r.codec.to_string(),
            r.bytes.to_string(),
            decimals(r.encode_ns, 0),
            decimals(r.decode_ns, 0),
            decimals(r.speedup_over_bitcode, 2),
        ]);
    }
    println!("{}", t.render());
    report::Results {
        experiment: "codec",
        machine,
        notes: vec![
            format!("medians of {runs} timed loops of {iterations} encodes and {iterations} decodes each (scan replies and 64-update batches: a twentieth), one thread"),
            "frame rows: a NetMsg::Entries of one batch as a log leader sends it, encoded with its frame header into a reused write buffer (as the TCP runtime does) and its body decoded; bytes are the body's".into(),
            "speed-up: bitcode's encode + decode time over the codec's, measured side by side in this run".into(),
        ],
        rows: &rows,
    }
    .save(out);
    rows
}
