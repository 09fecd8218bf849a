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
//!   executes on (a post writes every follower's timeline);
//! - messages leave when the handling that produced them ends and arrive after a one-way
//!   latency of [`LATENCY_US`] (uniform, a switched LAN) plus [`WIRE_NS_PER_BYTE`] per byte
//!   (1 Gbit/s); no loss;
//! - clients are free (never the bottleneck) and closed-loop, enough of them to saturate
//!   every partition;
//! - not modelled: link and switch contention, multi-core machines, disks, garbage
//!   collection.

use crate::report::median;
use crate::scaleout::{Plan, Row};
use bytes::Bytes;
use chirper::cli::ServiceSection;
use chirper::load::{draw, Population, RunResult, Workload};
use chirper::service::Chirper;
use engine::load::{histogram, quantile_us};
use engine::partitioned::blueprint::{ScaleOut, WorkCosts};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ClientOptions;
use engine::partitioned::{Scheme, ServerOptions};
use engine::sim::{EngineSim, SimSetup};
use groups::sim::{CpuModel, NetFaults};
use rand_chacha::ChaCha8Rng;
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

/// One simulated run.
pub fn simulate(
    plan: &Plan,
    scheme: Scheme,
    workload: Workload,
    partitions: u32,
    seed: u64,
) -> Result<RunResult, String> {
    let mut section =
        ServiceSection::generated(scheme, partitions, &plan.graph, plan.placement_quality);
    section.retry_max = plan.retry_max;
    let service: Arc<Chirper> = Arc::new(section.service()?);
    let population = Arc::new(Population::new(
        service.graph().expect("a graph").clone(),
        plan.graph.locality,
    ));
    let client_nodes = 4;
    // Enough outstanding commands to saturate every partition.
    let clients_per_node = plan
        .simulated_clients_per_node
        .unwrap_or((8 * partitions as usize).clamp(16, 256));
    let tuning = groups::config::Tuning {
        trim: true,
        ..layout::tuning()
    };
    let layout = ScaleOutLayout::new(scheme, partitions, plan.replicas, 1, client_nodes, tuning)
        .map_err(|e| e.to_string())?;
    let mut client = ClientOptions::new(scheme, partitions);
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
    let mut blueprint = ScaleOut::new(service, layout, client, ServerOptions::new(scheme));
    blueprint.work = WorkCosts {
        per_command_us: PER_COMMAND_US,
        per_object_us: PER_OBJECT_US,
    };
    let mut sim = EngineSim::new(blueprint, setup);
    sim.set_cpu_model(model());
    let warmup = (warmup(plan, partitions).as_micros() as u64).max(1);
    let measure = (plan.simulated_measure.as_micros() as u64).max(1);
    let moved = |sim: &EngineSim<ScaleOut<Chirper>>| -> u64 {
        sim.replicas()
            .filter_map(|(_, r)| r.partition().map(|p| p.stats.moves_in))
            .sum::<u64>()
            / plan.replicas as u64
    };
    let step = warmup.clamp(1, 50_000);
    let mut series = Vec::new();
    let mut last = (0u64, 0u64);
    let mut at_measure = 0;
    let end = warmup + measure;
    let mut t = 0;
    while t < end {
        t = (t + step).min(end);
        sim.run_until(t);
        let m = moved(&sim);
        series.push((
            t as f64 / 1e6,
            (m - last.1) as f64 / ((t - last.0) as f64 / 1e6),
        ));
        last = (t, m);
        if t == warmup {
            at_measure = m;
        }
        if std::env::var("CHORUS_SIM_DEBUG").is_ok() {
            let done = sim.client_stats().completed;
            let backlog: usize = sim.replicas().map(|(_, r)| r.backlog()).sum();
            eprintln!("t={t}us completed {done} backlog {backlog} moved {m}");
            let worst = sim.replicas().max_by_key(|(_, r)| r.backlog());
            if let Some((id, r)) = worst {
                if let Some(p) = r.partition() {
                    eprintln!(
                        "  {id} partition {} backlog {} waiting {:?} head {:?}",
                        p.partition(),
                        p.backlog(),
                        p.waiting_on(),
                        p.head()
                    );
                }
            }
        }
    }
    let moves = moved(&sim) - at_measure;
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
    Ok(RunResult {
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
    })
}

/// The simulated rows of a plan.
pub fn run_plan(plan: &Plan) -> Vec<Row> {
    if plan.simulated.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for &w in &plan.workloads {
        for &k in &plan.simulated {
            for s in [Scheme::Ssmr, Scheme::Dssmr] {
                points.push((w, k, s));
            }
        }
    }
    let bar = indicatif::ProgressBar::new(points.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scaleout (simulated) {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut rows = Vec::new();
    for (i, &(workload, partitions, scheme)) in points.iter().enumerate() {
        bar.set_message(format!(
            "{} {} {} partitions",
            scheme.name(),
            workload.name(),
            partitions
        ));
        let runs: Vec<RunResult> = match simulate(plan, scheme, workload, partitions, i as u64 + 1)
        {
            Ok(r) => vec![r],
            Err(e) => {
                eprintln!("scaleout (simulated): {e}");
                Vec::new()
            }
        };
        bar.inc(1);
        let m = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        rows.push(Row {
            scheme: scheme.name(),
            workload,
            partitions,
            source: "simulated",
            throughput_ops_s: m(|r| r.throughput_ops_s),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            moves_per_s: m(|r| r.moves_per_s),
            retries_per_cmd: m(|r| r.retries_per_cmd),
            fallbacks_per_cmd: m(|r| r.fallbacks_per_cmd),
            runs,
        });
    }
    bar.finish_and_clear();
    rows
}
