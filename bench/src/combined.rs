//! Experiment `combined`: scale-up inside scale-out. Chirper on S-SMR (or DS-SMR) with
//! `partitions x workers` cells (engine `partitioned::combined`): every partition of 3
//! replicas runs `workers` worker threads, users placed by community over the partitions
//! and sharded by id over a partition's workers.
//!
//! Measured rows: in-process (every replica, acceptor and client node a thread of this
//! process) for the grid points whose cores (partitions x workers, one replica of each
//! partition) this machine has, with the process's CPU time per command (user + system,
//! from `/proc/self/stat`, over warm-up and measurement, divided by the commands completed
//! in both at the measured rate). Simulated rows: the real cores in the deterministic
//! simulator under [`crate::costmodel`]'s cost model (one CPU per replica for messages, one
//! core per worker for the application's work, calibrated as the `scaleout` experiment
//! states), for the whole grid. Every row says which it is. The table and `combined.json`
//! give throughput, the ideal (the 1 x 1 figure times the cores) and the efficiency; one SVG
//! per workload plots throughput against cores, a line per partition count, and the ideal.

use crate::machine::Machine;
use crate::report::{self, median, Series, Table};
use crate::scaleout::{self, Variant};
use chirper::load::{run, RunResult, Workload};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub base: scaleout::Plan,
    pub variant: Variant,
    pub partitions: Vec<u32>,
    pub workers: Vec<u32>,
    /// Measure in-process the points of at most this many cores (partitions x workers).
    pub measured_cores_max: u32,
    /// Simulate the grid.
    pub simulate: bool,
}

impl Plan {
    pub fn full(machine: &Machine) -> Self {
        let mut base = scaleout::Plan::full();
        base.workloads = vec![Workload::Timeline, Workload::Mix];
        base.simulated_measure = Duration::from_millis(200);
        // Enough clients to saturate a partition of 8 workers, and client machines that
        // batch their submissions per tick: otherwise every command is one message the
        // partition log's leader handles (5 us each in the model), which caps a partition
        // near 170k commands/s whatever its workers (see the results' README).
        base.simulated_clients_per_cell = (64, 256, 2048);
        base.simulated_submit_delay_ticks = 1;
        // Every point's workers run on cores of their own, the node's thread apart (as
        // `worker_threads` runs them), 1 x 1 included, so the points differ only in workers.
        base.simulated_worker_cores = true;
        Plan {
            base,
            variant: Variant::Ssmr,
            partitions: vec![1, 2, 4, 8],
            workers: vec![1, 2, 4, 8],
            measured_cores_max: (machine.cores as u32).max(2),
            simulate: true,
        }
    }

    /// The default suite's short version: measured 1..2 x 1..2, Mix, one run, no simulation.
    pub fn quick() -> Self {
        let mut base = scaleout::Plan::quick();
        base.workloads = vec![Workload::Mix];
        Plan {
            base,
            variant: Variant::Ssmr,
            partitions: vec![1, 2],
            workers: vec![1, 2],
            measured_cores_max: 4,
            simulate: false,
        }
    }
}

/// A row of `combined.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub mode: &'static str,
    pub scheme: &'static str,
    pub workload: &'static str,
    pub partitions: u32,
    pub workers: u32,
    /// partitions x workers: the cores of one replica of every partition.
    pub cores: u32,
    pub runs: usize,
    pub throughput_ops_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// The 1 x 1 figure of the same mode and workload times `cores`.
    pub ideal_ops_s: f64,
    pub efficiency: f64,
    /// Measured rows: this process's CPU time per completed command (microseconds).
    pub cpu_us_per_cmd: Option<f64>,
}

/// This process's CPU time (user + system) so far, in seconds.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hz > 0.0).then(|| (utime + stime) / hz)
}

fn measured(
    plan: &Plan,
    w: Workload,
    partitions: u32,
    workers: u32,
    seed: u64,
) -> Result<(RunResult, Option<f64>), String> {
    let mut base = plan.base.clone();
    base.workers = workers;
    let spec = scaleout::spec(&base, plan.variant, w, partitions, seed);
    let before = process_cpu_s();
    let r = run(&spec)?;
    let cpu = process_cpu_s().zip(before).map(|(a, b)| a - b);
    let commands = r.throughput_ops_s * (spec.warmup + spec.measure).as_secs_f64();
    let per = cpu.filter(|_| commands > 0.0).map(|c| c / commands * 1e6);
    Ok((r, per))
}

fn simulated(
    plan: &Plan,
    w: Workload,
    partitions: u32,
    workers: u32,
    seed: u64,
) -> Result<RunResult, String> {
    let mut base = plan.base.clone();
    base.workers = workers;
    if w != Workload::Timeline && base.simulated_clients_per_node.is_none() {
        // A post writes every follower's timeline: far fewer commands saturate a cell, and
        // more only queue (the scale-out experiment's number).
        base.simulated_clients_per_cell = (8, 16, 256);
    }
    crate::costmodel::simulate(&base, plan.variant, w, partitions, seed).map(|s| s.run)
}

/// Runs the plan, prints the table, writes `combined.json` and the plots.
pub fn run_plan(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let modes: &[&'static str] = if plan.simulate {
        &["measured", "simulated"]
    } else {
        &["measured"]
    };
    for &mode in modes {
        for &w in &plan.base.workloads {
            for &p in &plan.partitions {
                for &k in &plan.workers {
                    let cores = p * k;
                    if mode == "measured" && cores > plan.measured_cores_max {
                        continue;
                    }
                    let runs = if mode == "measured" {
                        plan.base.runs.max(1)
                    } else {
                        plan.base.simulated_runs.max(1)
                    };
                    let mut results = Vec::new();
                    let mut cpus = Vec::new();
                    for r in 0..runs {
                        let seed = 1 + r as u64;
                        let res = if mode == "measured" {
                            measured(plan, w, p, k, seed).map(|(x, c)| {
                                cpus.extend(c);
                                x
                            })
                        } else {
                            simulated(plan, w, p, k, seed)
                        };
                        match res {
                            Ok(x) => results.push(x),
                            Err(e) => eprintln!("combined {mode} {} {p}x{k}: {e}", w.name()),
                        }
                    }
                    if results.is_empty() {
                        continue;
                    }
                    let t = median(
                        &results
                            .iter()
                            .map(|x| x.throughput_ops_s)
                            .collect::<Vec<_>>(),
                    );
                    let p50 = median(&results.iter().map(|x| x.p50_us).collect::<Vec<_>>());
                    let p99 = median(&results.iter().map(|x| x.p99_us).collect::<Vec<_>>());
                    println!("{mode} {} {p} x {k}: {t:.0} cmd/s", w.name());
                    rows.push(Row {
                        mode,
                        scheme: plan.variant.name(),
                        workload: w.name(),
                        partitions: p,
                        workers: k,
                        cores,
                        runs: results.len(),
                        throughput_ops_s: t,
                        p50_us: p50 as u64,
                        p99_us: p99 as u64,
                        ideal_ops_s: 0.0,
                        efficiency: 0.0,
                        cpu_us_per_cmd: (!cpus.is_empty()).then(|| median(&cpus)),
                    });
                }
            }
        }
    }
    // The ideal: the 1 x 1 figure of the same mode and workload, times the cores.
    let base: Vec<(&str, &str, f64)> = rows
        .iter()
        .filter(|r| r.cores == 1)
        .map(|r| (r.mode, r.workload, r.throughput_ops_s))
        .collect();
    for r in &mut rows {
        if let Some((_, _, b)) = base
            .iter()
            .find(|(m, w, _)| *m == r.mode && *w == r.workload)
        {
            r.ideal_ops_s = b * f64::from(r.cores);
            r.efficiency = r.throughput_ops_s / r.ideal_ops_s.max(1e-9);
        }
    }
    let mut table = Table::new(&[
        "mode",
        "workload",
        "partitions",
        "workers",
        "cores",
        "cmd/s",
        "ideal",
        "efficiency",
        "p50 us",
        "p99 us",
        "cpu us/cmd",
    ]);
    for r in &rows {
        table.row(vec![
            r.mode.into(),
            r.workload.into(),
            r.partitions.to_string(),
            r.workers.to_string(),
            r.cores.to_string(),
            report::human(r.throughput_ops_s),
            report::human(r.ideal_ops_s),
            report::decimals(r.efficiency, 2),
            r.p50_us.to_string(),
            r.p99_us.to_string(),
            r.cpu_us_per_cmd
                .map_or("-".into(), |c| report::decimals(c, 1)),
        ]);
    }
    println!("{}", table.render());
    let cpu = |p: u32, k: u32| {
        rows.iter()
            .find(|r| r.mode == "measured" && r.partitions == p && r.workers == k)
            .and_then(|r| r.cpu_us_per_cmd.map(|c| (r.workload, c)))
    };
    let mut notes = vec![
        format!(
            "Chirper on {} in combined mode: partitions of {} replicas, each replica running `workers` worker threads (one cell each); users placed by community over the partitions (quality {}) and sharded by id over a partition's workers; graph of {} users in {} communities",
            plan.variant.name(), plan.base.replicas, plan.base.placement_quality, plan.base.graph.users, plan.base.graph.communities
        ),
        format!(
            "measured rows: in-process, medians of {} run(s) of {:?} after {:?} warm-up, {} client nodes x {} clients (window {}); cpu us/cmd: this process's user+system CPU over warm-up and measurement per command completed at the measured rate",
            plan.base.runs, plan.base.measure, plan.base.warmup, plan.base.client_nodes, plan.base.clients_per_node, plan.base.window
        ),
        crate::costmodel::describe(),
        format!(
            "simulated rows: {} run(s) per point, {:?} virtual measured; 4 client nodes of {} closed-loop clients (window 2) per cell, between {} and {} ({} for Mix and Post: 8 per cell, 16 to 256); client submissions batched every {} tick(s); {}",
            plan.base.simulated_runs.max(1),
            plan.base.simulated_measure,
            plan.base.simulated_clients_per_cell.0,
            plan.base.simulated_clients_per_cell.1,
            plan.base.simulated_clients_per_cell.2,
            if plan.base.simulated_clients_per_node.is_some() { "as given" } else { "fewer" },
            plan.base.simulated_submit_delay_ticks,
            if plan.base.simulated_worker_cores {
                "each worker is a core of its own for the application's work (queued per worker; what a step sends leaves when its workers are done), the replica's thread one CPU for messages"
            } else {
                "the replica's thread executes (charged the busiest worker's work per step)"
            }
        ),
        "ideal: the 1 x 1 figure of the same mode and workload times partitions x workers; efficiency = throughput / ideal".into(),
    ];
    if let (Some((w, a)), Some((_, b))) = (cpu(1, 2), cpu(1, 1)) {
        notes.push(format!("{w}: CPU per command of 1 partition x 2 workers / 1 partition x 1 worker (plain S-SMR partition): {:.2}", a / b));
    }
    if let (Some((w, a)), Some((_, b))) = (cpu(1, 2), cpu(2, 1)) {
        notes.push(format!("{w}: CPU per command of 1 partition x 2 workers / 2 partitions x 1 worker (the same cells as separate partitions): {:.2}", a / b));
    }
    report::Results {
        experiment: "combined",
        machine,
        notes,
        rows: &rows,
    }
    .save(out);
    for &w in &plan.base.workloads {
        for mode in modes {
            let mut series: Vec<Series> = plan
                .partitions
                .iter()
                .map(|&p| Series {
                    label: format!("{p} partitions"),
                    points: rows
                        .iter()
                        .filter(|r| r.mode == *mode && r.workload == w.name() && r.partitions == p)
                        .map(|r| (f64::from(r.cores), r.throughput_ops_s))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            let mut ideal: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.mode == *mode && r.workload == w.name())
                .map(|r| (f64::from(r.cores), r.ideal_ops_s))
                .collect();
            ideal.sort_by(|a, b| a.0.total_cmp(&b.0));
            ideal.dedup_by(|a, b| a.0 == b.0);
            if series.is_empty() {
                continue;
            }
            series.push(Series {
                label: "ideal".into(),
                points: ideal,
            });
            report::draw_chart(
                &out.join(format!("combined-{}-{mode}.svg", w.name())),
                &format!(
                    "Chirper {} on {} in combined mode ({mode})",
                    w.name(),
                    plan.variant.name()
                ),
                "cores (partitions x workers)",
                "commands per second",
                &series,
            );
        }
    }
    rows
}
