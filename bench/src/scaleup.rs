//! Experiment `scaleup`: the replicated B+-tree as workers are added, in-process.
//!
//! Modes `smr` (one worker: classical SMR), `psmr`, `opt-psmr` and `unreplicated` (the same
//! service on the same number of threads with locks and no replication). Workers from 1 to
//! every core of the machine. Workloads: read-only, 50/50 read/update, insert-heavy (50%
//! inserts of fresh keys, 50% reads) and mixed with 5% range scans, on a tree pre-filled with
//! 1 M keys. Replicated modes run 2 replicas (f + 1 with f = 1) and 3 acceptors; closed-loop
//! clients keep enough commands outstanding to saturate. Each point is the median of several
//! runs; speed-up is over 1 worker of the same mode and workload, and the ratio is against
//! `unreplicated` with the same number of workers. Keys are uniform unless `--distribution`
//! asks for others (zipf, zipf-unscrambled, latest, sequential: every row says which), with
//! rebalancing rounds when `--rebalance-every-ms` is given.

use crate::machine::Machine;
use crate::report::{self, decimals, median, Series, Table};
use btree_service::keys::KeyDistribution;
use btree_service::load::{run, RebalanceSpec, RunResult, RunSpec, Workload};
use btree_service::service::TreeConfig;
use engine::psmr::proxy::Mode;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// A mode of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunMode {
    Replicated(Mode),
    /// Replicated, with single-worker reads served off the log by one replica after a read
    /// index (`ClientProxy::with_fast_reads`); named `<mode>+ri`.
    FastReads(Mode),
    Unreplicated,
}

impl RunMode {
    pub const ALL: [RunMode; 6] = [
        RunMode::Replicated(Mode::Smr),
        RunMode::FastReads(Mode::Smr),
        RunMode::Replicated(Mode::Psmr),
        RunMode::FastReads(Mode::Psmr),
        RunMode::Replicated(Mode::OptPsmr),
        RunMode::Unreplicated,
    ];
    /// Every mode `--modes` knows (the default suite runs [`RunMode::ALL`]).
    pub const KNOWN: [RunMode; 7] = [
        RunMode::Replicated(Mode::Smr),
        RunMode::FastReads(Mode::Smr),
        RunMode::Replicated(Mode::Psmr),
        RunMode::FastReads(Mode::Psmr),
        RunMode::Replicated(Mode::OptPsmr),
        RunMode::FastReads(Mode::OptPsmr),
        RunMode::Unreplicated,
    ];
    /// Modes by name, in the order given; an unknown name is an error that lists the known ones.
    pub fn parse_list(names: &[String]) -> Result<Vec<RunMode>, String> {
        names
            .iter()
            .map(|n| {
                RunMode::KNOWN
                    .into_iter()
                    .find(|m| m.name() == n.trim())
                    .ok_or_else(|| {
                        format!(
                            "unknown mode {n:?} (known: {})",
                            RunMode::KNOWN.map(RunMode::name).join(", ")
                        )
                    })
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            RunMode::Replicated(m) => m.name(),
            RunMode::FastReads(Mode::Smr) => "smr+ri",
            RunMode::FastReads(Mode::Psmr) => "psmr+ri",
            RunMode::FastReads(Mode::OptPsmr) => "opt-psmr+ri",
            RunMode::Unreplicated => "unreplicated",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub workers: Vec<usize>,
    pub workloads: Vec<Workload>,
    pub distributions: Vec<KeyDistribution>,
    /// Rebalancing rounds in the replicated modes (none: the initial even split throughout).
    pub rebalance: Option<RebalanceSpec>,
    pub modes: Vec<RunMode>,
    pub tree: TreeConfig,
    pub warmup: Duration,
    pub measure: Duration,
    pub runs: usize,
    pub pin_cores: bool,
}

/// 1, 2, 4, ... up to the core count, and the core count itself.
pub fn worker_counts(cores: usize) -> Vec<usize> {
    let mut v = vec![1];
    let mut w = 2;
    while w < cores {
        v.push(w);
        w *= 2;
    }
    if cores > 1 {
        v.push(cores);
    }
    v
}

impl Plan {
    pub fn full(machine: &Machine) -> Self {
        Plan {
            workers: worker_counts(machine.cores),
            workloads: Workload::ALL.to_vec(),
            distributions: vec![KeyDistribution::default()],
            rebalance: None,
            modes: RunMode::ALL.to_vec(),
            tree: TreeConfig::default(),
            warmup: Duration::from_millis(700),
            measure: Duration::from_secs(2),
            runs: 3,
            pin_cores: true,
        }
    }

    /// The default suite's short version: 1 worker and every core, two workloads, one run.
    pub fn quick(machine: &Machine) -> Self {
        let mut workers = vec![1];
        if machine.cores > 1 {
            workers.push(machine.cores);
        }
        Plan {
            workers,
            workloads: vec![Workload::InsertHeavy, Workload::ReadOnly],
            warmup: Duration::from_millis(400),
            measure: Duration::from_millis(800),
            runs: 1,
            ..Plan::full(machine)
        }
    }

    /// Points to measure: `smr` only at 1 worker (it has one by definition).
    fn points(&self) -> Vec<(RunMode, Workload, KeyDistribution, usize)> {
        let mut v = Vec::new();
        for &d in &self.distributions {
            for &w in &self.workloads {
                for &m in &self.modes {
                    for &k in &self.workers {
                        let smr = matches!(
                            m,
                            RunMode::Replicated(Mode::Smr) | RunMode::FastReads(Mode::Smr)
                        );
                        if smr && k != 1 {
                            continue;
                        }
                        v.push((m, w, d, k));
                    }
                }
            }
        }
        v
    }
}

/// A row of `scaleup.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub mode: &'static str,
    pub workload: Workload,
    /// The key distribution, e.g. `uniform`, `zipf(0.99)`.
    pub distribution: String,
    pub workers: usize,
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub abort_rate: f64,
    /// Tries refused as misrouted (after ranges moved), per run (median).
    pub misroutes: f64,
    /// The busiest worker's share of the load (replicated modes with rebalancing rounds).
    pub busiest_share: f64,
    /// CPU microseconds per command in the measured window, every thread of the process
    /// (median of the runs; NaN where the platform does not tell).
    pub cpu_us_per_cmd: f64,
    /// The same by thread role (medians): workers, replica nodes, client nodes, acceptors, other.
    pub cpu_us_per_cmd_by_role: std::collections::BTreeMap<String, f64>,
    /// Throughput over this mode's and workload's 1-worker throughput.
    pub speedup: f64,
    /// Throughput over `unreplicated` with the same workers and workload.
    pub ratio_to_unreplicated: f64,
    pub runs: Vec<RunResult>,
}

fn spec(
    plan: &Plan,
    mode: RunMode,
    workload: Workload,
    keys: KeyDistribution,
    workers: usize,
    seed: u64,
) -> RunSpec {
    // Enough outstanding commands to keep every worker busy, without flooding two cores.
    let clients = (4 * workers).clamp(8, 64);
    RunSpec {
        mode: match mode {
            RunMode::Replicated(m) | RunMode::FastReads(m) => Some(m),
            RunMode::Unreplicated => None,
        },
        fast_reads: matches!(mode, RunMode::FastReads(_)),
        workers,
        workload,
        keys,
        rebalance: match mode {
            RunMode::Replicated(Mode::Psmr | Mode::OptPsmr)
            | RunMode::FastReads(Mode::Psmr | Mode::OptPsmr) => plan.rebalance,
            _ => None,
        },
        tree: plan.tree.clone(),
        warmup: plan.warmup,
        measure: plan.measure,
        replicas: 2,
        client_nodes: 2,
        clients_per_node: clients / 2,
        window: 16,
        pin_cores: plan.pin_cores,
        seed,
    }
}

pub fn run_plan(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let points = plan.points();
    let bar = indicatif::ProgressBar::new((points.len() * plan.runs) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scaleup {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut rows: Vec<Row> = Vec::new();
    for (i, &(mode, workload, keys, workers)) in points.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..plan.runs {
            bar.set_message(format!(
                "{} {} {} {} workers",
                mode.name(),
                workload.name(),
                keys.label(),
                workers
            ));
            runs.push(run(&spec(
                plan,
                mode,
                workload,
                keys,
                workers,
                (i * 10 + r) as u64 + 1,
            )));
            bar.inc(1);
        }
        let m = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        rows.push(Row {
            mode: mode.name(),
            workload,
            distribution: keys.label(),
            workers,
            throughput_ops_s: m(|r| r.throughput_ops_s),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            abort_rate: m(|r| r.abort_rate),
            misroutes: m(|r| r.misroutes as f64),
            busiest_share: m(|r| r.rebalance.as_ref().map_or(f64::NAN, |b| b.busiest_share)),
            cpu_us_per_cmd: m(|r| r.cpu.as_ref().map_or(f64::NAN, |c| c.total_us_per_cmd)),
            cpu_us_per_cmd_by_role: cpu_by_role(&runs),
            speedup: f64::NAN,
            ratio_to_unreplicated: f64::NAN,
            runs,
        });
    }
    bar.finish_and_clear();
    // Derived columns, from points measured in this same run.
    let lookup = |rows: &[Row], mode: &str, workload: Workload, dist: &str, workers: usize| {
        rows.iter()
            .find(|r| {
                r.mode == mode
                    && r.workload == workload
                    && r.distribution == dist
                    && r.workers == workers
            })
            .map(|r| r.throughput_ops_s)
    };
    let snapshot = rows.clone();
    for r in rows.iter_mut() {
        if let Some(base) = lookup(&snapshot, r.mode, r.workload, &r.distribution, 1) {
            r.speedup = r.throughput_ops_s / base;
        }
        if let Some(u) = lookup(
            &snapshot,
            "unreplicated",
            r.workload,
            &r.distribution,
            r.workers,
        ) {
            r.ratio_to_unreplicated = r.throughput_ops_s / u;
        }
    }
    println!("{}", table(&rows).render());
    let results = report::Results {
        experiment: "scaleup",
        machine,
        notes: vec![
            "in-process replicated B+-tree: 2 replicas, 3 acceptors, 2 client nodes with closed-loop clients (window 16)".into(),
            format!(
                "tree: fan-out {}, {} keys pre-filled over a key space of {}, {}-byte values",
                plan.tree.fanout, plan.tree.prefill, plan.tree.key_space, plan.tree.value_bytes
            ),
            format!("medians of {} run(s) of {:?} after {:?} warm-up; workers pinned: {}", plan.runs, plan.measure, plan.warmup, plan.pin_cores),
            "abort_rate: opt-PSMR attempts refused per completed command".into(),
            "cpu_us_per_cmd: CPU time of every thread of the process in the measured window (from /proc/self/task/*/schedstat) over the commands completed in it; by role: workers (replicas' worker threads, or the unreplicated server's), replica nodes (each replica's node thread: multicast, its acceptor, merge, dispatch, replies out), client nodes (client proxies), acceptors (the acceptor-only node), other".into(),
            match plan.rebalance {
                Some(r) => format!("psmr and opt-psmr: a Rebalance every {:?} ({:?}); busiest_share: the busiest worker's share of the counted load in the measured window", r.every, r.policy),
                None => "no rebalancing: the key space stays split evenly over the workers".into(),
            },
        ],
        rows: &rows,
    };
    results.save(out);
    for (&w, d) in plan
        .workloads
        .iter()
        .flat_map(|w| plan.distributions.iter().map(move |d| (w, d)))
    {
        let label = d.label();
        let uniform = d.distribution == btree_service::keys::Distribution::Uniform;
        let path = if uniform {
            out.join(format!("scaleup-{}.svg", w.name()))
        } else {
            out.join(format!(
                "scaleup-{}-{}.svg",
                w.name(),
                d.distribution.name()
            ))
        };
        let series: Vec<Series> = plan
            .modes
            .iter()
            .map(|m| Series {
                label: m.name().to_string(),
                points: rows
                    .iter()
                    .filter(|r| r.mode == m.name() && r.workload == w && r.distribution == label)
                    .map(|r| (r.workers as f64, r.throughput_ops_s))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let title = format!("Replicated B+-tree, {} workload, {label} keys", w.name());
        report::draw_chart(&path, &title, "workers", "commands / s", &series);
    }
    rows
}

/// Per role, the median over the runs that measured it.
fn cpu_by_role(runs: &[RunResult]) -> std::collections::BTreeMap<String, f64> {
    let mut all: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for c in runs.iter().filter_map(|r| r.cpu.as_ref()) {
        for (role, us) in &c.by_role_us_per_cmd {
            all.entry(role.clone()).or_default().push(*us);
        }
    }
    all.into_iter().map(|(r, v)| (r, median(&v))).collect()
}

/// The CPU split of a row in words: `workers 3.1, replica nodes 2.0, ...` (roles under
/// 0.05 us left out).
fn split(r: &Row) -> String {
    r.cpu_us_per_cmd_by_role
        .iter()
        .filter(|(_, us)| **us >= 0.05)
        .map(|(role, us)| format!("{role} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "workload",
        "keys",
        "mode",
        "workers",
        "cmds/s",
        "p50 us",
        "p99 us",
        "aborts",
        "speed-up",
        "vs unrepl.",
        "cpu us/cmd",
        "cpu split (us/cmd)",
    ]);
    for r in rows {
        t.row(vec![
            r.workload.name().to_string(),
            r.distribution.clone(),
            r.mode.to_string(),
            r.workers.to_string(),
            report::human(r.throughput_ops_s),
            decimals(r.p50_us, 0),
            decimals(r.p99_us, 0),
            format!("{:.2}%", r.abort_rate * 100.0),
            decimals(r.speedup, 2),
            decimals(r.ratio_to_unreplicated, 2),
            decimals(r.cpu_us_per_cmd, 1),
            split(r),
        ]);
    }
    t
}
