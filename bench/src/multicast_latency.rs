//! Experiment `multicast-latency`: delivery latency of one-group atomic multicast against
//! offered load, open loop, in-process.
//!
//! The topology is [`crate::multicast`]'s (three acceptor/subscriber nodes and one sender).
//! Per batching setting the peak is measured first, closed loop (the medians of `runs` runs);
//! then the sender offers fixed fractions of that peak, open loop: message `i` is due at
//! `t0 + i / rate`, its latency runs from that due time to each delivery at every node, so a
//! sender that falls behind (a full window, a descheduled thread) shows up as latency instead
//! of silently lowering the load (no coordinated omission). Points are interleaved run by run
//! (round 1 of every fraction, then round 2, ...) so that drift on a shared machine spreads
//! over all of them.

use crate::machine::Machine;
use crate::multicast::{self, Batching, Load, Params};
use crate::report::{self, median, Series, Table};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub batching: Vec<Batching>,
    pub payload_bytes: usize,
    /// Offered loads as fractions of the measured peak.
    pub fractions: Vec<f64>,
    pub warmup: Duration,
    pub measure: Duration,
    pub runs: usize,
}

impl Plan {
    /// The curve the hot-path issue asks for: 64 B messages, both batch settings, 5% to 90%
    /// of the peak, 3 runs per point.
    pub fn full() -> Self {
        Plan {
            batching: vec![Batching::PerDrain, Batching::OneTick],
            payload_bytes: 64,
            fractions: vec![0.05, 0.1, 0.25, 0.5, 0.75, 0.9],
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(2),
            runs: 3,
        }
    }

    /// Three points, one short run each (the default suite).
    pub fn quick() -> Self {
        Plan {
            batching: vec![Batching::PerDrain],
            fractions: vec![0.1, 0.5, 0.9],
            warmup: Duration::from_millis(300),
            measure: Duration::from_millis(500),
            runs: 1,
            ..Plan::full()
        }
    }

    #[cfg(test)]
    fn smoke() -> Self {
        Plan {
            fractions: vec![0.5],
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(200),
            ..Plan::quick()
        }
    }
}

/// One point of the curve: medians of its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub batching: Batching,
    pub payload_bytes: usize,
    /// `closed` for the peak, else the offered fraction of it.
    pub load: String,
    pub offered_msgs_s: Option<f64>,
    pub throughput_msgs_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub runs: Vec<multicast::Run>,
}

fn row(
    b: Batching,
    payload_bytes: usize,
    load: String,
    offered: Option<f64>,
    runs: Vec<multicast::Run>,
) -> Row {
    let m = |f: fn(&multicast::Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Row {
        batching: b,
        payload_bytes,
        load,
        offered_msgs_s: offered,
        throughput_msgs_s: m(|r| r.throughput_msgs_s),
        p50_us: m(|r| r.p50_us),
        p99_us: m(|r| r.p99_us),
        p999_us: m(|r| r.p999_us),
        runs,
    }
}

/// Runs the plan, prints the table, writes `multicast-latency.json` and one SVG per batching.
pub fn run(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let total = plan.batching.len() * plan.runs * (1 + plan.fractions.len());
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "multicast-latency {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut rows = Vec::new();
    for (bi, &b) in plan.batching.iter().enumerate() {
        let p = Params {
            groups: 1,
            multi_group_pct: 0,
            payload_bytes: plan.payload_bytes,
            batching: b,
        };
        let seed = |point: usize, r: usize| (bi * 10_000 + point * 100 + r) as u64 + 1;
        let mut peak_runs = Vec::new();
        for r in 0..plan.runs {
            bar.set_message(format!("{}: peak", b.name()));
            peak_runs.push(multicast::run_once(
                &p,
                Load::Closed,
                plan.warmup,
                plan.measure,
                seed(0, r),
            ));
            bar.inc(1);
        }
        let peak = row(b, plan.payload_bytes, "closed".into(), None, peak_runs);
        let mut points: Vec<Vec<multicast::Run>> = vec![Vec::new(); plan.fractions.len()];
        for r in 0..plan.runs {
            for (fi, &f) in plan.fractions.iter().enumerate() {
                bar.set_message(format!("{}: {:.0}% of peak", b.name(), f * 100.0));
                let load = Load::Open {
                    rate_msgs_s: (f * peak.throughput_msgs_s).max(1.0),
                };
                points[fi].push(multicast::run_once(
                    &p,
                    load,
                    plan.warmup,
                    plan.measure,
                    seed(fi + 1, r),
                ));
                bar.inc(1);
            }
        }
        let peak_tput = peak.throughput_msgs_s;
        rows.push(peak);
        for (fi, runs) in points.into_iter().enumerate() {
            let f = plan.fractions[fi];
            rows.push(row(
                b,
                plan.payload_bytes,
                format!("{f}"),
                Some(f * peak_tput),
                runs,
            ));
        }
    }
    bar.finish_and_clear();
    println!("{}", table(&rows).render());
    for r in rows.iter().filter(|r| r.load == "0.5") {
        println!(
            "{}: p99 at half of the peak ({} msgs/s offered): {:.0} us ({} the 1 ms target)",
            r.batching.name(),
            report::human(r.offered_msgs_s.unwrap_or(f64::NAN)),
            r.p99_us,
            if r.p99_us < 1000.0 { "meets" } else { "misses" }
        );
    }
    let results = report::Results {
        experiment: "multicast-latency",
        machine,
        notes: vec![
            "in-process: 3 acceptor/subscriber nodes + 1 sender; one group, single-group messages".into(),
            "peak: closed loop with 2048 in flight; other points: open loop at a fraction of that peak, latency from each message's due time (no coordinated omission)".into(),
            "a pacer thread wakes the sender's node loop once per message gap, at most every 50 us; messages due meanwhile go out together".into(),
            format!("medians of {} run(s) of {:?} after {:?} warm-up, points interleaved run by run", plan.runs, plan.measure, plan.warmup),
        ],
        rows: &rows,
    };
    results.save(out);
    for &b in &plan.batching {
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| r.batching == b && r.offered_msgs_s.is_some())
            .collect();
        let series = |label: &str, f: fn(&Row) -> f64| Series {
            label: label.into(),
            points: mine
                .iter()
                .map(|r| (r.offered_msgs_s.unwrap_or(0.0), f(r)))
                .collect(),
        };
        let path = out.join(format!("multicast-latency-{}.svg", b.name()));
        report::draw_chart(
            &path,
            &format!(
                "One-group multicast latency vs offered load, open loop ({} batching)",
                b.name()
            ),
            "offered messages / s",
            "latency (us)",
            &[
                series("p50", |r| r.p50_us),
                series("p99", |r| r.p99_us),
                series("p99.9", |r| r.p999_us),
            ],
        );
    }
    rows
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "batching",
        "load",
        "offered/s",
        "msgs/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
    ]);
    for r in rows {
        t.row(
            vec![
                r.batching.name().to_string(),
                if r.load == "closed" {
                    "peak (closed)".into()
                } else {
                    format!("{:.0}%", r.load.parse::<f64>().unwrap_or(f64::NAN) * 100.0)
                },
                r.offered_msgs_s.map_or("-".into(), report::human),
            ]
            .into_iter()
            .chain(multicast::rate_and_latency_cells(
                r.throughput_msgs_s,
                [r.p50_us, r.p99_us, r.p999_us],
            ))
            .collect(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The curve runs end to end: the open-loop point delivers about what it offers (the
    /// pacing works) and its latencies are ordered.
    #[test]
    fn smoke() {
        let dir =
            std::env::temp_dir().join(format!("chorus-bench-mlat-smoke-{}", std::process::id()));
        let rows = run(&Plan::smoke(), &dir, &Machine::detect());
        assert_eq!(rows.len(), 2);
        let (peak, half) = (&rows[0], &rows[1]);
        assert_eq!(peak.load, "closed");
        assert!(peak.throughput_msgs_s > 0.0, "{peak:?}");
        let offered = half.offered_msgs_s.expect("offered");
        assert!(
            half.throughput_msgs_s > 0.5 * offered && half.throughput_msgs_s < 1.5 * offered,
            "an open-loop point delivers what it offers: {half:?}"
        );
        assert!(
            half.p50_us > 0.0 && half.p50_us <= half.p99_us && half.p99_us <= half.p999_us,
            "{half:?}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("multicast-latency.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["experiment"], "multicast-latency");
        assert_eq!(json["rows"][1]["load"], "0.5");
        assert!(dir.join("multicast-latency-per-drain.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
