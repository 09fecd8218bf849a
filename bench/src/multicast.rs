//! Experiment `multicast`: throughput and delivery latency of atomic multicast, in-process.
//!
//! Topology: three nodes, each an acceptor of every log (one per group plus a global log when
//! there are several groups) and a subscriber of every group through its own subscription per
//! group (the shape of a P-SMR replica with one worker per group); a fourth node multicasts in
//! a closed loop, keeping `WINDOW` messages in flight. A multi-group message goes to two
//! distinct random groups.
//!
//! Throughput counts each message once, when node 1 delivers it at the subscription of its
//! lowest destination group; latency is measured from the `multicast` call to every delivery
//! at every destination subscription of every node (a shared in-process clock travels in the
//! payload). Each configuration is measured `runs` times; the row reports medians.

use crate::machine::Machine;
use crate::report::{self, median, Series, Table};
use bytes::Bytes;
use groups::config::{ClusterConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};
use groups::node::GroupsNode;
use groups::runtime::inproc::{App, InProcCluster};
use groups::runtime::Waker;
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Multicasts the sender keeps in flight.
const WINDOW: usize = 2048;

/// How leaders batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    /// A batch closes at every drain (whatever arrived since the last one), at most 64 KiB.
    PerDrain,
    /// A batch waits up to one tick (1 ms) or 1 MiB.
    OneTick,
}

impl Batching {
    fn tune(self, t: &mut Tuning) {
        match self {
            Batching::PerDrain => {
                t.batch_delay_ticks = 0;
                t.batch_bytes_max = 64 << 10;
            }
            Batching::OneTick => {
                t.batch_delay_ticks = 1;
                t.batch_bytes_max = 1 << 20;
            }
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Batching::PerDrain => "per-drain",
            Batching::OneTick => "1-tick",
        }
    }
}

/// How the sender offers load.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Load {
    /// Keep [`WINDOW`] multicasts in flight (the peak; latency is queueing-dominated).
    Closed,
    /// Open loop: message `i` is due at `t0 + i / rate` whatever happened to the ones before
    /// it, and its latency is measured from that due time, not from when the sender got to
    /// it (no coordinated omission: a stalled sender or a full window shows as latency).
    Open { rate_msgs_s: f64 },
}

/// One configuration.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Params {
    pub groups: u32,
    pub multi_group_pct: u32,
    pub payload_bytes: usize,
    pub batching: Batching,
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub throughput_msgs_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Multicasts resent after a timeout, and leaderships won, during the whole run
    /// (warm-up included): signs of overload.
    pub resends: u64,
    pub leader_elections: u64,
}

/// A row of the results file: the configuration and the medians of its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub params: Params,
    pub throughput_msgs_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub runs: Vec<Run>,
}

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub groups: Vec<u32>,
    pub multi_group_pct: Vec<u32>,
    pub payload_bytes: Vec<usize>,
    pub batching: Vec<Batching>,
    pub warmup: Duration,
    pub measure: Duration,
    pub runs: usize,
}

impl Plan {
    /// Every combination the issue asks for, 3 runs each.
    pub fn full() -> Self {
        Plan {
            groups: vec![1, 2, 4, 8],
            multi_group_pct: vec![0, 10, 100],
            payload_bytes: vec![64, 1024],
            batching: vec![Batching::PerDrain, Batching::OneTick],
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(2),
            runs: 3,
        }
    }

    /// The same grid, one short run each (the default suite).
    pub fn quick() -> Self {
        Plan {
            warmup: Duration::from_millis(300),
            measure: Duration::from_millis(700),
            runs: 1,
            ..Plan::full()
        }
    }

    /// A tiny plan for smoke tests.
    #[cfg(test)]
    pub fn smoke() -> Self {
        Plan {
            groups: vec![1, 2],
            multi_group_pct: vec![0, 100],
            payload_bytes: vec![64],
            batching: vec![Batching::PerDrain],
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(200),
            runs: 1,
        }
    }

    pub fn configurations(&self) -> Vec<Params> {
        let mut v = Vec::new();
        for &groups in &self.groups {
            for &multi in &self.multi_group_pct {
                if groups == 1 && multi > 0 {
                    continue; // with one group every message is single-group
                }
                for &payload_bytes in &self.payload_bytes {
                    for &batching in &self.batching {
                        v.push(Params {
                            groups,
                            multi_group_pct: multi,
                            payload_bytes,
                            batching,
                        });
                    }
                }
            }
        }
        v
    }
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

enum BenchApp {
    Sender {
        rng: Box<ChaCha8Rng>,
        groups: u32,
        multi_pct: u32,
        filler: Bytes,
        load: Load,
        /// Open loop: the clock reading at which message 0 is due; 0 until the bench sets it
        /// (meanwhile one probe message at a time finds the leaders).
        start: Arc<AtomicU64>,
        /// Open loop: messages multicast since `start`.
        sent: u64,
        /// The node loop's waker, handed to the bench's pacer thread.
        waker: Arc<Mutex<Option<Waker>>>,
    },
    Receiver {
        phase: Arc<AtomicU8>,
        /// Set at the first delivery (the warm-up starts then).
        live: Arc<AtomicBool>,
        counts: bool,
        delivered: u64,
        latency_ns: Histogram<u64>,
        scratch: Vec<(usize, groups::merge::Delivery)>,
    },
}

/// Multicasts one message stamped `stamp` (a [`clock`] reading) to one random group, or two
/// distinct ones for `multi_pct` percent of messages; false if the sender refused it.
fn send_one(
    node: &mut GroupsNode,
    rng: &mut ChaCha8Rng,
    groups: u32,
    multi_pct: u32,
    filler: &[u8],
    stamp: u64,
) -> bool {
    let mut dests = GroupSet::singleton(GroupId(rng.random_range(0..groups)));
    if groups > 1 && rng.random_range(0..100) < multi_pct {
        while dests.len() < 2 {
            dests.insert(GroupId(rng.random_range(0..groups)));
        }
    }
    let mut payload = Vec::with_capacity(filler.len().max(8));
    payload.extend_from_slice(&stamp.to_le_bytes());
    payload.extend_from_slice(&filler[8.min(filler.len())..]);
    node.multicast(dests, payload.into()).is_ok()
}

impl App for BenchApp {
    fn attach(&mut self, _node: &mut GroupsNode, w: Waker) {
        if let BenchApp::Sender { waker, .. } = self {
            *waker.lock().expect("waker slot") = Some(w);
        }
    }

    fn step(&mut self, node: &mut GroupsNode) {
        match self {
            BenchApp::Sender {
                rng,
                groups,
                multi_pct,
                filler,
                load,
                start,
                sent,
                ..
            } => match *load {
                Load::Closed => {
                    while node.multicasts_in_flight() < WINDOW {
                        if !send_one(node, rng, *groups, *multi_pct, filler, clock()) {
                            break;
                        }
                    }
                }
                Load::Open { rate_msgs_s } => {
                    let t0 = start.load(Ordering::Relaxed);
                    if t0 == 0 {
                        if node.multicasts_in_flight() == 0 {
                            send_one(node, rng, *groups, *multi_pct, filler, clock());
                        }
                        return;
                    }
                    let now = clock();
                    let ns_per_msg = 1e9 / rate_msgs_s;
                    // Messages due by now (message 0 is due at t0).
                    let due = (now.saturating_sub(t0) as f64 / ns_per_msg) as u64 + 1;
                    // The sender's own window bounds what is outstanding; a message that
                    // does not fit stays due, and its wait counts as latency.
                    while *sent < due && node.multicasts_in_flight() < 2 * WINDOW {
                        let stamp = t0 + (*sent as f64 * ns_per_msg) as u64;
                        if !send_one(node, rng, *groups, *multi_pct, filler, stamp) {
                            break;
                        }
                        *sent += 1;
                    }
                }
            },
            BenchApp::Receiver {
                phase,
                live,
                counts,
                delivered,
                latency_ns,
                scratch,
            } => {
                node.take_delivered(scratch);
                if !scratch.is_empty() && !live.load(Ordering::Relaxed) {
                    live.store(true, Ordering::Relaxed);
                }
                if phase.load(Ordering::Relaxed) != MEASURE {
                    scratch.clear();
                    return;
                }
                let now = clock();
                for (sub, d) in scratch.drain(..) {
                    let sent =
                        u64::from_le_bytes(d.msg.payload[..8].try_into().expect("timestamp"));
                    let _ = latency_ns.record(now.saturating_sub(sent).max(1));
                    // Subscription i is group i; count a message at its lowest destination.
                    if *counts && d.msg.dests.first() == Some(GroupId(sub as u32)) {
                        *delivered += 1;
                    }
                }
            }
        }
    }
}

/// Runs one configuration once under `load`.
pub fn run_once(p: &Params, load: Load, warmup: Duration, measure: Duration, seed: u64) -> Run {
    let servers: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let all_groups: Vec<GroupSet> = (0..p.groups)
        .map(|g| GroupSet::singleton(GroupId(g)))
        .collect();
    let mut nodes: Vec<NodeConfig> = servers
        .iter()
        .map(|&id| NodeConfig {
            id,
            addr: None,
            subscriptions: all_groups.clone(),
        })
        .collect();
    nodes.push(NodeConfig {
        id: NodeId(4),
        addr: None,
        subscriptions: vec![],
    });
    let mut tuning = Tuning::default();
    p.batching.tune(&mut tuning);
    tuning.sender_window = WINDOW * 2;
    let cfg = ClusterConfig::per_group_plus_global(seed, p.groups, nodes, servers, tuning)
        .expect("valid bench layout");
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let ph = phase.clone();
    let live = Arc::new(AtomicBool::new(false));
    let lv = live.clone();
    let payload_bytes = p.payload_bytes.max(8);
    let (groups, multi_pct) = (p.groups, p.multi_group_pct);
    let start = Arc::new(AtomicU64::new(0));
    let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
    let (st, wk) = (start.clone(), waker.clone());
    let cluster = InProcCluster::start(cfg, move |id| {
        if id == NodeId(4) {
            BenchApp::Sender {
                rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
                groups,
                multi_pct,
                filler: Bytes::from(vec![0xAB; payload_bytes]),
                load,
                start: st.clone(),
                sent: 0,
                waker: wk.clone(),
            }
        } else {
            BenchApp::Receiver {
                phase: ph.clone(),
                live: lv.clone(),
                counts: id == NodeId(1),
                delivered: 0,
                latency_ns: Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("bounds"),
                scratch: Vec::new(),
            }
        }
    });
    // The warm-up starts at the first delivery: electing the first leaders can take a while
    // on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pacer = match load {
        Load::Closed => None,
        Load::Open { rate_msgs_s } => {
            start.store(clock().max(1), Ordering::Relaxed);
            let w = waker.lock().expect("waker slot").clone();
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            // The node loop otherwise runs the sender only when input arrives or at its
            // 1 ms tick; the pacer wakes it once per message gap, but at most every 50 us (a
            // sleep's granularity here; what is due meanwhile goes out as one burst).
            let gap = Duration::from_secs_f64(1.0 / rate_msgs_s)
                .clamp(Duration::from_micros(50), Duration::from_millis(1));
            let t = std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        std::thread::sleep(gap);
                        if let Some(w) = &w {
                            w.wake();
                        }
                    }
                })
                .expect("spawn pacer");
            Some((stop, t))
        }
    };
    std::thread::sleep(warmup);
    phase.store(MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(measure);
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = started.elapsed();
    if let Some((stop, t)) = pacer {
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
    }
    let stats: Vec<groups::NodeStats> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.node(id).call(|n| n.stats()))
        .collect();
    if std::env::var_os("CHORUS_BENCH_STATS").is_some() {
        eprintln!("{p:?}: {stats:#?}");
        for id in cluster.ids() {
            if let Some(d) = cluster.node(id).call(|n| n.describe()) {
                eprintln!("{d}");
            }
        }
    }
    let apps = cluster.stop();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
    let mut delivered = 0;
    for (id, app) in apps {
        if let BenchApp::Receiver {
            delivered: d,
            latency_ns,
            ..
        } = app
        {
            if std::env::var_os("CHORUS_BENCH_STATS").is_some() && !latency_ns.is_empty() {
                eprintln!(
                    "  {id}: p50 {} us p99 {} us max {} us",
                    latency_ns.value_at_quantile(0.5) / 1000,
                    latency_ns.value_at_quantile(0.99) / 1000,
                    latency_ns.max() / 1000
                );
            }
            delivered += d;
            hist.add(&latency_ns).expect("same bounds");
        }
    }
    let q = |q: f64| {
        if hist.is_empty() {
            f64::NAN
        } else {
            hist.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Run {
        throughput_msgs_s: delivered as f64 / elapsed.as_secs_f64(),
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        resends: stats.iter().map(|s| s.resends).sum(),
        leader_elections: stats.iter().map(|s| s.became_leader).sum(),
    }
}

/// Runs the plan, prints the table, writes `multicast.json` and `multicast.svg` into `out`.
pub fn run(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let configs = plan.configurations();
    let bar = indicatif::ProgressBar::new((configs.len() * plan.runs) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "multicast {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut rows = Vec::new();
    for (i, p) in configs.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..plan.runs {
            bar.set_message(format!(
                "{} groups, {}% multi, {} B, {}",
                p.groups,
                p.multi_group_pct,
                p.payload_bytes,
                p.batching.name()
            ));
            runs.push(run_once(
                p,
                Load::Closed,
                plan.warmup,
                plan.measure,
                (i * 100 + r) as u64 + 1,
            ));
            bar.inc(1);
        }
        let m = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        rows.push(Row {
            params: *p,
            throughput_msgs_s: m(|r| r.throughput_msgs_s),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            p999_us: m(|r| r.p999_us),
            runs,
        });
    }
    bar.finish_and_clear();
    println!("{}", table(&rows).render());
    let results = report::Results {
        experiment: "multicast",
        machine,
        notes: vec![
            "in-process: 3 acceptor/subscriber nodes (one subscription per group) + 1 closed-loop sender, window 2048".into(),
            format!("medians of {} run(s) of {:?} after {:?} warm-up", plan.runs, plan.measure, plan.warmup),
            "throughput counts each message once; latency is per delivery, at every destination subscription".into(),
        ],
        rows: &rows,
    };
    results.save(out);
    for &b in &plan.batching {
        let path = out.join(format!("multicast-{}.svg", b.name()));
        let series: Vec<Series> = plan
            .multi_group_pct
            .iter()
            .flat_map(|&multi| plan.payload_bytes.iter().map(move |&pl| (multi, pl)))
            .map(|(multi, pl)| Series {
                label: format!("{multi}% multi-group, {pl} B"),
                points: rows
                    .iter()
                    .filter(|r| {
                        r.params.batching == b
                            && r.params.payload_bytes == pl
                            && (r.params.multi_group_pct == multi || r.params.groups == 1)
                    })
                    .map(|r| (f64::from(r.params.groups), r.throughput_msgs_s))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let title = format!("Atomic multicast throughput ({} batching)", b.name());
        report::draw_chart(&path, &title, "groups", "messages / s", &series);
    }
    rows
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "groups", "multi%", "payload", "batching", "msgs/s", "p50 us", "p99 us", "p99.9 us",
    ]);
    for r in rows {
        t.row(
            vec![
                r.params.groups.to_string(),
                r.params.multi_group_pct.to_string(),
                r.params.payload_bytes.to_string(),
                r.params.batching.name().to_string(),
            ]
            .into_iter()
            .chain(rate_and_latency_cells(
                r.throughput_msgs_s,
                [r.p50_us, r.p99_us, r.p999_us],
            ))
            .collect(),
        );
    }
    t
}

/// Table cells: messages/s, then p50, p99 and p99.9 in whole microseconds.
pub fn rate_and_latency_cells(msgs_s: f64, quantiles_us: [f64; 3]) -> Vec<String> {
    std::iter::once(report::human(msgs_s))
        .chain(quantiles_us.iter().map(|q| format!("{q:.0}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark runs end to end at a tiny size and measures something (it cannot rot).
    #[test]
    fn smoke() {
        let dir = std::env::temp_dir().join(format!("chorus-bench-smoke-{}", std::process::id()));
        let rows = run(&Plan::smoke(), &dir, &Machine::detect());
        assert_eq!(rows.len(), 3);
        for r in &rows {
            assert!(r.throughput_msgs_s > 0.0, "{r:?}");
            assert!(
                r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us,
                "{r:?}"
            );
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("multicast.json")).unwrap())
                .unwrap();
        assert_eq!(json["experiment"], "multicast");
        assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
        assert!(json["rows"][0]["throughput_msgs_s"].as_f64().unwrap() > 0.0);
        assert!(dir.join("multicast-per-drain.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
