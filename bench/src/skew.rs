//! Experiment `skew`: skewed keys on the replicated B+-tree, with and without rebalancing.
//!
//! opt-PSMR with 2 workers (by default) on the insert-heavy mix, keys uniform, Zipfian 0.99
//! scrambled (YCSB's default: hot keys scattered), Zipfian unscrambled (hot keys at the bottom
//! of the key space, all in the first worker's range) and sequential (inserts of increasing
//! keys above the pre-filled space, all in the last range). Every point runs twice: with
//! rebalancing rounds (a `Rebalance` every `every`, the replicas split, move and stripe ranges
//! from their replicated load counters) and without (the same rounds with a policy that never
//! acts, so both pay the same for them and both measure the balance). The warm-up is long
//! enough for the rebalancer to settle; the table reports throughput as a fraction of uniform
//! keys' with the same setting, when the last change happened, what moved, and the busiest
//! worker's share of the counted load in the measured window. Points are interleaved run by
//! run, so a burst of other work on the machine does not land on one point only.

use crate::machine::Machine;
use crate::report::{self, decimals, median, Table};
use btree_service::keys::{Distribution, KeyDistribution};
use btree_service::load::{self, RebalanceSpec, RunResult, RunSpec, Workload};
use btree_service::service::TreeConfig;
use engine::psmr::proxy::Mode;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Plan {
    pub distributions: Vec<KeyDistribution>,
    pub workload: Workload,
    pub workers: usize,
    pub prefill: u64,
    pub every: Duration,
    pub warmup: Duration,
    pub measure: Duration,
    pub runs: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            distributions: [
                Distribution::Uniform,
                Distribution::Zipf,
                Distribution::ZipfUnscrambled,
                Distribution::Sequential,
            ]
            .map(KeyDistribution::of)
            .to_vec(),
            workload: Workload::InsertHeavy,
            workers: 2,
            prefill: 1_000_000,
            every: Duration::from_millis(250),
            warmup: Duration::from_secs(4),
            measure: Duration::from_secs(2),
            runs: 3,
        }
    }
}

/// A row of `skew.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub distribution: String,
    pub rebalancing: bool,
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Throughput over uniform keys' with the same rebalancing setting.
    pub vs_uniform: f64,
    /// Seconds from the start of the load to the last rebalancing change (median; none
    /// without changes).
    pub settled_after_s: Option<f64>,
    /// Runs in which a round still changed something during the measured window.
    pub unsettled_runs: usize,
    pub moves: f64,
    pub splits: f64,
    pub stripes: f64,
    /// The busiest worker's share of the counted load in the measured window (median).
    pub busiest_share: f64,
    pub misroutes: f64,
    pub abort_rate: f64,
    pub runs: Vec<RunResult>,
}

fn spec(plan: &Plan, keys: KeyDistribution, rebalancing: bool, seed: u64) -> RunSpec {
    let clients = (4 * plan.workers).clamp(8, 64);
    RunSpec {
        mode: Some(Mode::OptPsmr),
        workers: plan.workers,
        workload: plan.workload,
        keys,
        rebalance: Some(if rebalancing {
            RebalanceSpec::every(plan.every)
        } else {
            RebalanceSpec::probe(plan.every)
        }),
        tree: TreeConfig {
            prefill: plan.prefill,
            ..TreeConfig::default()
        },
        warmup: plan.warmup,
        measure: plan.measure,
        replicas: 2,
        client_nodes: 2,
        clients_per_node: clients / 2,
        window: 16,
        pin_cores: true,
        fast_reads: false,
        seed,
    }
}

pub fn run(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let points: Vec<(KeyDistribution, bool)> = plan
        .distributions
        .iter()
        .flat_map(|&d| [(d, false), (d, true)])
        .collect();
    let bar = indicatif::ProgressBar::new((points.len() * plan.runs) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "skew {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); points.len()];
    for r in 0..plan.runs {
        for (i, &(keys, rebalancing)) in points.iter().enumerate() {
            bar.set_message(format!(
                "{}{}",
                keys.label(),
                if rebalancing { " rebalancing" } else { "" }
            ));
            results[i].push(load::run(&spec(
                plan,
                keys,
                rebalancing,
                (r * 100 + i) as u64 + 1,
            )));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut rows: Vec<Row> = points
        .iter()
        .zip(results)
        .map(|(&(keys, rebalancing), runs)| {
            let m = |f: &dyn Fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let reb = |f: &dyn Fn(&btree_service::load::RebalanceStats) -> f64| {
                m(&|r: &RunResult| r.rebalance.as_ref().map_or(f64::NAN, f))
            };
            let settled: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.rebalance.as_ref().and_then(|b| b.settled_after_s))
                .collect();
            Row {
                distribution: keys.label(),
                rebalancing,
                throughput_ops_s: m(&|r| r.throughput_ops_s),
                p50_us: m(&|r| r.p50_us),
                p99_us: m(&|r| r.p99_us),
                vs_uniform: f64::NAN,
                settled_after_s: (!settled.is_empty()).then(|| median(&settled)),
                unsettled_runs: runs
                    .iter()
                    .filter(|r| {
                        r.rebalance
                            .as_ref()
                            .is_some_and(|b| b.acted_while_measuring)
                    })
                    .count(),
                moves: reb(&|b| f64::from(b.moves)),
                splits: reb(&|b| f64::from(b.splits)),
                stripes: reb(&|b| f64::from(b.stripes)),
                busiest_share: reb(&|b| b.busiest_share),
                misroutes: m(&|r| r.misroutes as f64),
                abort_rate: m(&|r| r.abort_rate),
                runs,
            }
        })
        .collect();
    let snapshot = rows.clone();
    for r in rows.iter_mut() {
        let base = snapshot
            .iter()
            .find(|u| u.distribution == "uniform" && u.rebalancing == r.rebalancing);
        if let Some(u) = base {
            r.vs_uniform = r.throughput_ops_s / u.throughput_ops_s;
        }
    }
    println!("{}", table(&rows).render());
    let results = report::Results {
        experiment: "skew",
        machine,
        notes: vec![
            format!(
                "opt-psmr, {} workers, {} workload; in-process: 2 replicas, 3 acceptors, 2 client nodes x {} closed-loop clients (window 16)",
                plan.workers,
                plan.workload.name(),
                (4 * plan.workers).clamp(8, 64) / 2
            ),
            format!(
                "tree: fan-out 64, {} keys pre-filled over a key space of 2^24, 16-byte values; sequential inserts go above the key space, interleaved over all clients",
                plan.prefill
            ),
            format!(
                "a Rebalance every {:?}: rebalancing rows with the default policy ({:?}), the others with a policy that never acts (same rounds, same cost)",
                plan.every,
                btree_service::rebalance::RebalancePolicy::default()
            ),
            format!(
                "medians of {} runs, interleaved; {:?} warm-up (the rebalancer settles in it), {:?} measured",
                plan.runs, plan.warmup, plan.measure
            ),
            "busiest_share: the busiest worker's share of the load counted by the replicas (decayed per round), averaged over the rounds of the measured window; 0.5 is even with 2 workers".into(),
        ],
        rows: &rows,
    };
    results.save(out);
    rows
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "keys",
        "rebalancing",
        "cmds/s",
        "vs uniform",
        "p50 us",
        "p99 us",
        "busiest",
        "settled s",
        "moves",
        "splits",
        "stripes",
        "misroutes",
    ]);
    for r in rows {
        t.row(vec![
            r.distribution.clone(),
            if r.rebalancing { "on" } else { "off" }.into(),
            report::human(r.throughput_ops_s),
            format!("{}x", decimals(r.vs_uniform, 2)),
            decimals(r.p50_us, 0),
            decimals(r.p99_us, 0),
            format!("{}%", decimals(r.busiest_share * 100.0, 0)),
            match (r.settled_after_s, r.unsettled_runs) {
                (_, n) if n > 0 => format!("no ({n} runs)"),
                (Some(s), _) => decimals(s, 1),
                (None, _) => "-".into(),
            },
            decimals(r.moves, 0),
            decimals(r.splits, 0),
            decimals(r.stripes, 0),
            decimals(r.misroutes, 0),
        ]);
    }
    t
}
