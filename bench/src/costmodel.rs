//! The simulated scale-out mode: Chirper deployments in the deterministic simulator with a
//! cost model, for partition counts no machine here can host (each replica a machine).
//!
//! The code under test is the real one (the same partition, oracle and client cores, logs and
//! merges as the measured runs); only time is simulated. The cost model ([`MODEL`]):
//!
//! - every replica and acceptor is a machine with one CPU that handles its messages and timer
//!   ticks one at a time: [`PER_MESSAGE_US`] per message plus [`PER_BYTE_NS`] per byte of it
//!   (decoding, bookkeeping), [`PER_TICK_US`] per 1 ms tick, plus application work:
//!   [`PER_COMMAND_US`] per delivered command and [`PER_OBJECT_US`] per object a command
//!   executes on (a post writes every follower's timeline); a combined-mode replica's `k`
//!   workers are `k` cores: the node's thread is charged the busiest worker's work per
//!   step, or, with `Plan::simulated_worker_cores` (`bench combined`), each worker's work
//!   queues on a core of its own while the node's thread, which merges and dispatches,
//!   handles messages, and what a step sends leaves when its workers are done;
//! - messages leave when the handling that produced them ends and arrive after a one-way
//!   latency of [`LATENCY_US`] (uniform, a switched LAN) plus [`WIRE_NS_PER_BYTE`] per byte
//!   (1 Gbit/s); no loss;
//! - clients are free (never the bottleneck) and closed-loop, enough of them to saturate
//!   every partition;
//! - diagnostics: `CHORUS_BENCH_CPU=1` prints, per simulated run, the busiest nodes' share
//!   of the measured window spent busy (how the bottleneck of a point is found);
//!   `CHORUS_SIM_DEBUG=1` prints progress every step;
//! - not modelled: link and switch contention, multi-core machines other than combined
//!   mode's workers, memory bandwidth shared by workers, disks, garbage
//!   collection.

use crate::report::median;
use crate::scaleout::{Plan, Row, Variant};
use bytes::Bytes;
use chirper::load::{draw, Celebrity, RunResult, Workload};
use chirper::service::Chirper;
use engine::load::{histogram, quantile_us};
use engine::partitioned::blueprint::{ScaleOut, WorkCosts};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ClientOptions;
use engine::partitioned::ServerOptions;
use engine::sim::{EngineSim, SimSetup};
use groups::sim::{CpuModel, NetFaults};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const PER_MESSAGE_US: f64 = 5.0;
pub const PER_BYTE_NS: f64 = 2.0;
pub const PER_TICK_US: f64 = 2.0;
pub const PER_COMMAND_US: f64 = 5.0;
pub const PER_OBJECT_US: f64 = 1.0;
pub const LATENCY_US: (u64, u64) = (40, 60);
pub const WIRE_NS_PER_BYTE: f64 = 8.0;

/// The cost model, as the results file states it.
pub fn describe() -> String {
    format!(
        "simulated rows: the real cores in the deterministic simulator with a cost model: one CPU per replica or acceptor, {PER_MESSAGE_US} us per message + {PER_BYTE_NS} ns per byte, {PER_TICK_US} us per 1 ms tick, {PER_COMMAND_US} us per delivered command + {PER_OBJECT_US} us per object executed on; one-way latency {}-{} us + {WIRE_NS_PER_BYTE} ns per byte (1 Gbit/s), no loss, no link contention; clients free and closed-loop; virtual time",
        LATENCY_US.0, LATENCY_US.1
    )
}

fn model() -> CpuModel {
    CpuModel {
        per_message_us: PER_MESSAGE_US,
        per_byte_ns: PER_BYTE_NS,
        per_tick_us: PER_TICK_US,
        wire_ns_per_byte: WIRE_NS_PER_BYTE,
        free: Default::default(),
    }
}

/// The virtual warm-up of a simulated run on `partitions` partitions.
pub fn warmup(plan: &Plan, partitions: u32) -> std::time::Duration {
    plan.simulated_warmup.unwrap_or_else(|| {
        std::time::Duration::from_millis(300)
            .max(std::time::Duration::from_millis(40 * partitions as u64))
    })
}

/// DynaStar's oracle and repartitions in a simulated run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DynaReport {
    /// Messages the oracle's first replica handled per completed command (consults, hints,
    /// plan chunks, creates): the oracle's load.
    pub oracle_msgs_per_cmd: f64,
    /// Clients' oracle consultations per completed command (cache misses).
    pub consults_per_cmd: f64,
    /// Placements computed, of which moved nothing, plans fully delivered.
    pub repartitions: u64,
    pub repartitions_empty: u64,
    pub plans_completed: u64,
    /// Objects the latest plan moved, what METIS from scratch would have moved for the same
    /// graph, and the incremental refinement.
    pub last_moved: usize,
    pub last_metis_moved: Option<usize>,
    pub last_incremental_moved: Option<usize>,
    pub last_method: String,
    /// The latest plan's graph: vertices, edges, cut before and after.
    pub graph_vertices: usize,
    pub graph_edges: usize,
    pub cut_before: u64,
    pub cut_after: u64,
    /// Objects moved by plans over the whole run (at one replica per partition).
    pub moved_total: u64,
    /// The oracle's map and graph, roughly.
    pub oracle_bytes: usize,
    /// Wall time on this machine of one repartition of the final graph (outside the
    /// simulation, which does not charge it): METIS from scratch and the incremental
    /// refinement, with the objects each would move.
    pub repartition_metis_ms: f64,
    pub repartition_incremental_ms: f64,
    pub metis_moved_now: usize,
    pub incremental_moved_now: usize,
    /// Virtual ms from a plan computed to its last chunk delivered at the oracle, mean.
    pub plan_apply_ms: f64,
    /// Share of executed accesses that involved more than one partition (lent objects).
    pub multi_share: f64,
    /// Objects lent per completed command.
    pub lent_per_cmd: f64,
}

/// What one simulated run measured.
pub struct SimRun {
    pub run: RunResult,
    pub dynastar: Option<DynaReport>,
    /// `(virtual seconds, commands per second)` in windows of `series_every`.
    pub throughput_series: Vec<(f64, f64)>,
    /// Virtual seconds at which placements were computed.
    pub repartitions_at: Vec<f64>,
}

/// One simulated run of `variant`; with `celebrity`, the dynamic phase starts this far into
/// the run (virtual time), and the run lasts `celebrity_total` in all.
pub fn simulate(
    plan: &Plan,
    variant: Variant,
    workload: Workload,
    partitions: u32,
    seed: u64,
) -> Result<SimRun, String> {
    simulate_with(plan, variant, workload, partitions, seed, None)
}

/// The dynamic phase: when the celebrity appears and how long the run lasts (virtual).
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub celebrity_at: std::time::Duration,
    pub total: std::time::Duration,
    pub series_every: std::time::Duration,
}

pub fn simulate_with(
    plan: &Plan,
    variant: Variant,
    workload: Workload,
    partitions: u32,
    seed: u64,
    phase: Option<Phase>,
) -> Result<SimRun, String> {
    let scheme = variant.scheme();
    let spec = crate::scaleout::spec(plan, variant, workload, partitions, seed);
    let service: Arc<Chirper> = Arc::new(spec.service()?);
    let mut population = spec.population(service.graph().expect("a graph").clone());
    let switch = Arc::new(AtomicBool::new(false));
    if phase.is_some() {
        population.celebrity = Some(Celebrity {
            user: celebrity_user(&population.graph, seed),
            follow_per_10k: plan.celebrity_follow_per_10k,
            post_per_10k: plan.celebrity_post_per_10k,
            on: switch.clone(),
        });
    }
    if std::env::var("CHORUS_SIM_DEBUG").is_ok() {
        let (mean, top) = population.post_fanout();
        eprintln!("post fan-out: mean {mean:.1} followers, top-100 active max {top}");
    }
    let population = Arc::new(population);
    let client_nodes = 4;
    // Enough outstanding commands to saturate every partition.
    let clients_per_node = plan.simulated_clients_per_node.unwrap_or({
        let (per_cell, least, most) = plan.simulated_clients_per_cell;
        (per_cell * (partitions * plan.workers.max(1)) as usize).clamp(least, most)
    });
    let tuning = groups::config::Tuning {
        trim: true,
        submit_delay_ticks: plan.simulated_submit_delay_ticks,
        ..layout::tuning()
    };
    let workers = spec.section.workers.max(1);
    let layout = ScaleOutLayout::combined(
        scheme,
        partitions,
        workers,
        plan.replicas,
        1,
        client_nodes,
        tuning,
    )
    .map_err(|e| e.to_string())?;
    let mut client = ClientOptions::new(scheme, partitions * workers);
    client.retry_max = plan.retry_max;
    client.resend_ticks = 5_000;
    client.seed = seed;
    client.guess_placement = true;
    let text = Bytes::from(vec![b'x'; plan.post_bytes]);
    let setup = SimSetup {
        seed,
        net: NetFaults {
            latency_us: LATENCY_US,
            spike_prob: 0.0,
            spike_us: 0,
            loss: 0.0,
            dup: 0.0,
        },
        clients_per_node,
        window: 2,
        ops_per_client: usize::MAX,
        workload: Arc::new(move |rng: &mut ChaCha8Rng, _| draw(workload, &population, rng, &text)),
        think_us: 0,
    };
    let server = spec
        .server
        .clone()
        .unwrap_or_else(|| ServerOptions::new(scheme));
    let mut blueprint = ScaleOut::new(service, layout, client, server);
    blueprint.work = WorkCosts {
        per_command_us: PER_COMMAND_US,
        per_object_us: PER_OBJECT_US,
        own_cores: plan.simulated_worker_cores,
    };
    let mut sim = EngineSim::new(blueprint, setup);
    sim.set_cpu_model(model());
    let (warmup, measure) = match phase {
        // The dynamic phase: the whole run is measured, in windows.
        Some(p) => (1, (p.total.as_micros() as u64).max(2) - 1),
        None => (
            (warmup(plan, partitions).as_micros() as u64).max(1),
            (plan.simulated_measure.as_micros() as u64).max(1),
        ),
    };
    // Per replica: objects moved in (one replica per partition counts).
    let moved = |sim: &EngineSim<ScaleOut<Chirper>>| -> u64 {
        sim.replicas()
            .filter_map(|(_, r)| r.server_stats().map(|s| s.moves_in))
            .sum::<u64>()
            / plan.replicas as u64
    };
    let oracle = |sim: &EngineSim<ScaleOut<Chirper>>| -> Option<(u64, u64, u64)> {
        sim.replicas().find_map(|(_, r)| {
            r.dyna_oracle().map(|o| {
                (
                    o.stats.repartitions,
                    o.stats.plans_completed,
                    o.stats.handled,
                )
            })
        })
    };
    let step = match phase {
        Some(p) => (p.series_every.as_micros() as u64).max(1),
        None => warmup.clamp(1, 50_000),
    };
    let mut series = Vec::new();
    let mut tput = Vec::new();
    let mut repartitions_at = Vec::new();
    let mut plan_started: Option<u64> = None;
    let mut plan_apply = Vec::new();
    let mut last = (0u64, 0u64, 0u64);
    let mut oracle_last = (0u64, 0u64);
    let mut at_measure = (0u64, 0u64);
    let end = warmup + measure;
    let mut t = 0;
    let mut used_at_measure = std::collections::BTreeMap::new();
    while t < end {
        let mut next = (t + step).min(end);
        if let Some(p) = phase {
            let at = p.celebrity_at.as_micros() as u64;
            if t < at && next > at {
                next = at;
            }
        }
        t = next;
        sim.run_until(t);
        if let Some(p) = phase {
            if t >= p.celebrity_at.as_micros() as u64 {
                switch.store(true, Ordering::Relaxed);
            }
        }
        let m = moved(&sim);
        let done = sim.client_stats().completed;
        let secs = (t - last.0) as f64 / 1e6;
        series.push((t as f64 / 1e6, (m - last.1) as f64 / secs));
        tput.push((t as f64 / 1e6, (done - last.2) as f64 / secs));
        last = (t, m, done);
        if let Some((reps, plans, _)) = oracle(&sim) {
            if reps > oracle_last.0 {
                repartitions_at.push(t as f64 / 1e6);
                plan_started.get_or_insert(t);
            }
            if plans > oracle_last.1 {
                if let Some(s) = plan_started.take() {
                    plan_apply.push((t - s) as f64 / 1e3);
                }
            }
            oracle_last = (reps, plans);
        }
        if std::env::var("CHORUS_SIM_DEBUG").is_ok() {
            let backlog: usize = sim.replicas().map(|(_, r)| r.backlog()).sum();
            let waiting = sim
                .replicas()
                .filter_map(|(id, r)| r.dyna_partition().map(|p| (id, p)))
                .max_by_key(|(_, p)| p.backlog())
                .map(|(id, p)| {
                    format!("{id} backlog {} waiting {:?}", p.backlog(), p.waiting_on())
                });
            eprintln!(
                "t={t}us completed {done} backlog {backlog} moved {m} oracle {:?} {}",
                oracle(&sim),
                waiting.unwrap_or_default()
            );
        }
        if t == warmup {
            at_measure = (m, oracle(&sim).map_or(0, |o| o.2));
            used_at_measure = sim.sim.cpu_used_us();
        }
    }
    let moves = moved(&sim) - at_measure.0;
    if std::env::var_os("CHORUS_BENCH_CPU").is_some() {
        let mut used: Vec<(f64, u32)> = sim
            .sim
            .cpu_used_us()
            .into_iter()
            .map(|(n, us)| {
                let before = used_at_measure.get(&n).copied().unwrap_or(0.0);
                ((us - before) / (end - warmup) as f64, n.0)
            })
            .collect();
        used.sort_by(|a, b| b.0.total_cmp(&a.0));
        eprintln!(
            "busiest nodes (share of virtual time busy, node): {:?}",
            &used[..used.len().min(6)]
        );
    }
    let mut hist = histogram();
    let (mut completed, mut errors) = (0u64, 0u64);
    let stats = sim.client_stats();
    for op in sim.history() {
        if let Some((ret, result)) = &op.ret {
            if op.call_us >= warmup && *ret <= end {
                completed += 1;
                if result.is_err() {
                    errors += 1;
                }
                let _ = hist.record(((ret - op.call_us) * 1000).max(1));
            }
        }
    }
    let secs = measure as f64 / 1e6;
    let per = |x: u64| x as f64 / stats.completed.max(1) as f64;
    let run = RunResult {
        throughput_ops_s: completed as f64 / secs,
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        completed,
        errors,
        moves_per_s: moves as f64 / secs,
        consults_per_cmd: per(stats.consults),
        retries_per_cmd: per(stats.retries),
        fallbacks_per_cmd: per(stats.fallbacks),
        moves_series: series,
    };
    let dynastar = (variant == Variant::Dynastar)
        .then(|| {
            let o = sim.replicas().find_map(|(_, r)| r.dyna_oracle())?;
            let (mut single, mut multi, mut lent) = (0u64, 0u64, 0u64);
            for (_, r) in sim.replicas() {
                if r.dyna_partition().is_some() {
                    let s = r.server_stats().expect("a partition");
                    single += s.single;
                    multi += s.multi;
                    lent += s.lent;
                }
            }
            let rep = o.report().cloned().unwrap_or_default();
            let (metis_ms, inc_ms, metis_now, inc_now) = time_repartition(o, partitions, &spec);
            let oracle_msgs = o.stats.handled - at_measure.1;
            Some(DynaReport {
                oracle_msgs_per_cmd: oracle_msgs as f64 / completed.max(1) as f64,
                consults_per_cmd: per(stats.consults),
                repartitions: o.stats.repartitions,
                repartitions_empty: o.stats.repartitions_empty,
                plans_completed: o.stats.plans_completed,
                last_moved: rep.moved,
                last_metis_moved: rep.metis.map(|m| m.1),
                last_incremental_moved: rep.incremental.map(|m| m.1),
                last_method: rep.method.clone(),
                graph_vertices: rep.vertices,
                graph_edges: rep.edges,
                cut_before: rep.cut_before,
                cut_after: rep.cut_after,
                moved_total: o.stats.moves,
                oracle_bytes: o.memory_bytes(),
                repartition_metis_ms: metis_ms,
                repartition_incremental_ms: inc_ms,
                metis_moved_now: metis_now,
                incremental_moved_now: inc_now,
                plan_apply_ms: median(&plan_apply),
                multi_share: multi as f64 / (single + multi).max(1) as f64,
                lent_per_cmd: lent as f64 / plan.replicas as f64 / stats.completed.max(1) as f64,
            })
        })
        .flatten();
    Ok(SimRun {
        run,
        dynastar,
        throughput_series: tput,
        repartitions_at,
    })
}

/// A user with the fewest followers near a seeded start (a newcomer who becomes a celebrity).
fn celebrity_user(graph: &chirper::graph::SocialGraph, seed: u64) -> chirper::service::UserId {
    let n = graph.users().max(1);
    let start = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) % u64::from(n)) as u32;
    (0..n.min(1000))
        .map(|i| (start + i) % n)
        .min_by_key(|u| graph.followers(*u).len())
        .unwrap_or(0)
}

/// Times one repartition of the oracle's final graph on this machine, METIS from scratch and
/// the incremental refinement; returns their ms and the objects each moves.
fn time_repartition(
    o: &engine::partitioned::dynastar::oracle::DynaOracle<Chirper>,
    partitions: u32,
    spec: &chirper::load::RunSpec,
) -> (f64, f64, usize, usize) {
    use engine::partitioned::dynastar::placement::{place, Method};
    let objects: Vec<_> = o.locations().map(|(id, _)| id).collect();
    let current: Vec<u32> = o.locations().map(|(_, p)| p).collect();
    let csr = o.graph().build(&objects);
    let mut opts = spec
        .server
        .as_ref()
        .map(|s| s.dynastar.placement)
        .unwrap_or_default();
    let mut one = |m: Method| {
        opts.method = m;
        let t = std::time::Instant::now();
        let p = place(&csr, &current, partitions, &opts);
        (t.elapsed().as_secs_f64() * 1e3, p.moved)
    };
    let (mm, mn) = one(Method::Metis);
    let (im, inn) = one(Method::Incremental);
    (mm, im, mn, inn)
}

/// The simulated rows of a plan.
pub fn run_plan(plan: &Plan) -> Vec<Row> {
    if plan.simulated.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for &w in &plan.workloads {
        for &k in &plan.simulated {
            for &s in &plan.schemes {
                points.push((w, k, s));
            }
        }
    }
    let bar = indicatif::ProgressBar::new((points.len() * plan.simulated_runs) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scaleout (simulated) {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut rows = Vec::new();
    for (i, &(workload, partitions, variant)) in points.iter().enumerate() {
        bar.set_message(format!(
            "{} {} {} partitions",
            variant.name(),
            workload.name(),
            partitions
        ));
        let mut runs = Vec::new();
        let mut reports = Vec::new();
        for r in 0..plan.simulated_runs.max(1) {
            match simulate(plan, variant, workload, partitions, (i * 10 + r) as u64 + 1) {
                Ok(s) => {
                    runs.push(s.run);
                    reports.extend(s.dynastar);
                }
                Err(e) => eprintln!("scaleout (simulated): {e}"),
            }
            bar.inc(1);
        }
        let m = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        // The report of the run with the median throughput.
        let dynastar = median_report(&runs, reports);
        rows.push(Row {
            scheme: variant.name(),
            variant,
            workload,
            partitions,
            source: "simulated",
            throughput_ops_s: m(|r| r.throughput_ops_s),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            moves_per_s: m(|r| r.moves_per_s),
            retries_per_cmd: m(|r| r.retries_per_cmd),
            fallbacks_per_cmd: m(|r| r.fallbacks_per_cmd),
            consults_per_cmd: m(|r| r.consults_per_cmd),
            dynastar,
            runs,
        });
    }
    bar.finish_and_clear();
    rows
}

/// The report of the run whose throughput is the median (reports in run order).
fn median_report(runs: &[RunResult], reports: Vec<DynaReport>) -> Option<DynaReport> {
    if reports.len() != runs.len() || runs.is_empty() {
        return reports.into_iter().next();
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|a, b| {
        runs[*a]
            .throughput_ops_s
            .total_cmp(&runs[*b].throughput_ops_s)
    });
    let mid = order[(runs.len() - 1) / 2];
    reports.into_iter().nth(mid)
}
