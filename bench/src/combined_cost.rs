//! Experiment `combined-cost`: what the combined mode costs over plain P-SMR, on the same
//! work. Issue 12 asks that one partition of 2 workers spend within 15 % of the CPU per
//! command of plain P-SMR with 2 workers; the B+-tree does not run in combined mode, so both
//! sides run the engine's reference key-value services, which do the same work per command
//! (one `BTreeMap` lookup or update of an `i64`):
//!
//! - `psmr-2`: P-SMR, 2 workers per replica (`engine::testing::KvService`, keys sharded
//!   `k % 2`; a group per worker and one covering both);
//! - `combined-1x2`: S-SMR with 1 partition x 2 workers on threads
//!   (`engine::testing::scaleout::ObjectKv`, keys placed `k % 2` over the two cells; the
//!   partition's log covers both cells);
//! - `ssmr-1x1`: a plain S-SMR partition of one worker, for reference.
//!
//! Each: 3 replicas (also the acceptors), one client node of closed-loop clients, in this
//! process; gets and puts on uniform keys, plus a share of transfers between a key of each
//! worker (cross-worker commands: P-SMR's rendezvous, the combined mode's in-memory
//! exchange). CPU per command: every thread of this process, user + system as the scheduler
//! accounts it (`engine::load::cpu`), over the measured window, per command completed in
//! it. The systems run in turn within each run, so the ratios compare neighbours in time;
//! medians of the runs.

use crate::machine::Machine;
use crate::report::{self, median, Table};
use engine::host::client::ClientHost;
use engine::host::OnNode;
use engine::load::{ClosedLoop, Source, DONE, MEASURE, WARMUP};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::ScaleOutClient;
use engine::partitioned::{Scheme, ServerOptions};
use engine::testing::scaleout::{Cmd, ObjectKv};
use engine::testing::{KvCommand, KvService};
use engine::wire::ClientId;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The systems compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Psmr2,
    Combined1x2,
    Ssmr1x1,
}

impl System {
    pub const ALL: [System; 3] = [System::Psmr2, System::Combined1x2, System::Ssmr1x1];

    pub fn name(self) -> &'static str {
        match self {
            System::Psmr2 => "psmr-2",
            System::Combined1x2 => "combined-1x2",
            System::Ssmr1x1 => "ssmr-1x1",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub runs: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Keys `0..keys` (all preloaded for the scale-out side; P-SMR's map fills as it goes).
    pub keys: u64,
    /// Shares of cross-worker transfers to run, each a point.
    pub cross: Vec<f64>,
    pub clients: usize,
    pub window: usize,
    pub systems: Vec<System>,
}

impl Plan {
    pub fn full() -> Self {
        Plan {
            runs: 3,
            warmup: Duration::from_millis(700),
            measure: Duration::from_secs(2),
            keys: 10_000,
            cross: vec![0.0, 0.05],
            clients: 64,
            window: 1,
            systems: System::ALL.to_vec(),
        }
    }

    /// The default suite's: one run of each system, independent commands only.
    pub fn quick() -> Self {
        Plan {
            runs: 1,
            measure: Duration::from_millis(800),
            warmup: Duration::from_millis(400),
            cross: vec![0.0],
            ..Plan::full()
        }
    }
}

/// A row of `combined-cost.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub mode: &'static str,
    pub system: &'static str,
    /// Share of cross-worker transfers among the commands.
    pub cross: f64,
    pub runs: usize,
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU time of every thread of this process per completed command, microseconds.
    pub cpu_us_per_cmd: f64,
    /// `cpu_us_per_cmd` over `psmr-2`'s at the same share (medians' ratio).
    pub cpu_vs_psmr2: Option<f64>,
}

/// One measured run.
struct Measured {
    throughput: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

/// The commands one client issues: gets and puts on uniform keys, a share of transfers
/// between an even and an odd key (different workers on both sides).
struct Mix<C> {
    rng: ChaCha8Rng,
    keys: u64,
    cross: f64,
    make: fn(Op) -> C,
}

#[derive(Clone, Copy)]
enum Op {
    Get(u64),
    Put(u64, i64),
    Transfer(u64, u64),
}

impl<C: Send + 'static> Source<C> for Mix<C> {
    fn next_command(&mut self) -> C {
        let op = if self.cross > 0.0 && self.rng.random_bool(self.cross) {
            let a = self.rng.random_range(0..self.keys / 2) * 2;
            let b = self.rng.random_range(0..self.keys / 2) * 2 + 1;
            Op::Transfer(a, b)
        } else {
            let k = self.rng.random_range(0..self.keys);
            if self.rng.random_bool(0.5) {
                Op::Get(k)
            } else {
                Op::Put(k, self.rng.random_range(0..1000))
            }
        };
        (self.make)(op)
    }
}

fn kv(op: Op) -> KvCommand {
    match op {
        Op::Get(k) => KvCommand::Get(k),
        Op::Put(k, v) => KvCommand::Put(k, v),
        Op::Transfer(a, b) => KvCommand::Transfer(a, b, 1),
    }
}

fn object(op: Op) -> Cmd {
    match op {
        Op::Get(k) => Cmd::Get(k),
        Op::Put(k, v) => Cmd::Put(k, v),
        Op::Transfer(a, b) => Cmd::Transfer(a, b, 1),
    }
}

fn sources<C>(plan: &Plan, cross: f64, seed: u64, make: fn(Op) -> C) -> Vec<Mix<C>> {
    (0..plan.clients)
        .map(|i| Mix {
            rng: ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ i as u64),
            keys: plan.keys.max(2),
            cross,
            make,
        })
        .collect()
}

/// The CPU nanoseconds of every thread of this process.
fn cpu_ns() -> Option<engine::load::cpu::Snapshot> {
    engine::load::cpu::Snapshot::take()
}

fn total_since(
    after: Option<engine::load::cpu::Snapshot>,
    before: Option<engine::load::cpu::Snapshot>,
) -> f64 {
    after
        .zip(before)
        .map(|(a, b)| a.since_by_role(&b, |_| String::new()).values().sum::<u64>() as f64)
        .unwrap_or(f64::NAN)
}

/// Warm-up, then the measured window; the CPU of every thread over the window.
fn window(plan: &Plan, phase: &AtomicU8) -> (Duration, f64) {
    std::thread::sleep(plan.warmup);
    phase.store(MEASURE, Ordering::Relaxed);
    let before = cpu_ns();
    let t0 = Instant::now();
    std::thread::sleep(plan.measure);
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    (elapsed, total_since(cpu_ns(), before))
}

/// The run's figures from its client drivers' `(latencies, completed)`.
fn finish<'a>(
    drivers: impl Iterator<Item = (&'a hdrhistogram::Histogram<u64>, u64)>,
    elapsed: Duration,
    cpu: f64,
) -> Result<Measured, String> {
    let mut hist = engine::load::histogram();
    let mut completed = 0;
    for (h, n) in drivers {
        hist.add(h).map_err(|e| e.to_string())?;
        completed += n;
    }
    Ok(Measured {
        throughput: completed as f64 / elapsed.as_secs_f64(),
        p50_us: engine::load::quantile_us(&hist, 0.5),
        p99_us: engine::load::quantile_us(&hist, 0.99),
        cpu_us: cpu / 1000.0 / completed.max(1) as f64,
    })
}

fn run_psmr(plan: &Plan, cross: f64, seed: u64) -> Result<Measured, String> {
    use engine::psmr::deployment::Deployment;
    use engine::psmr::proxy::{client_app, ClientOptions, Mode};
    use engine::psmr::replica::ReplicaOptions;
    let workers = 2;
    let d = Deployment::new(3, 1, workers, 1, groups::config::Tuning::default())
        .map_err(|e| e.to_string())?;
    let service = Arc::new(KvService::default());
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let cluster = engine::inproc::start(&d, service.clone(), ReplicaOptions::new(workers), |id| {
        let options = ClientOptions {
            clients: plan.clients,
            window: plan.window,
            mode: Mode::Psmr,
            workers,
            resend_ticks: 2000,
            first_index: 0,
            fast_reads: false,
        };
        let driver = ClosedLoop::new(sources(plan, cross, seed, kv), phase.clone());
        client_app(id, service.clone(), options, driver)
    });
    let (elapsed, cpu) = window(plan, &phase);
    let apps = cluster.stop();
    let drivers = apps
        .values()
        .filter_map(|a| a.as_client())
        .map(|c| (&c.host.driver.latency_ns, c.host.driver.completed));
    finish(drivers, elapsed, cpu)
}

fn run_scaleout(plan: &Plan, workers: u32, cross: f64, seed: u64) -> Result<Measured, String> {
    let lay = ScaleOutLayout::combined(Scheme::Ssmr, 1, workers, 3, 1, 1, layout::tuning())
        .map_err(|e| e.to_string())?;
    let service = Arc::new(ObjectKv { preload: plan.keys });
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let options = ServerOptions {
        workers,
        worker_threads: true,
        ..ServerOptions::new(Scheme::Ssmr)
    };
    let cells = workers;
    let cluster = engine::inproc::start_scaleout(&lay, service.clone(), options, |id| {
        let client = engine::partitioned::proxy::ClientOptions {
            resend_ticks: 2000,
            seed,
            ..engine::partitioned::proxy::ClientOptions::new(Scheme::Ssmr, cells)
        };
        let proxies = (0..plan.clients)
            .map(|i| ScaleOutClient::new(ClientId::new(id, i as u32), service.clone(), client))
            .collect();
        let driver = ClosedLoop::new(sources(plan, cross, seed, object), phase.clone());
        OnNode::new(ClientHost::new(proxies, plan.window, driver))
    });
    let (elapsed, cpu) = window(plan, &phase);
    let apps = cluster.stop();
    let drivers = apps
        .values()
        .filter_map(|a| a.as_client())
        .map(|c| (&c.host.driver.latency_ns, c.host.driver.completed));
    finish(drivers, elapsed, cpu)
}

fn run_one(plan: &Plan, system: System, cross: f64, seed: u64) -> Result<Measured, String> {
    match system {
        System::Psmr2 => run_psmr(plan, cross, seed),
        System::Combined1x2 => run_scaleout(plan, 2, cross, seed),
        System::Ssmr1x1 => run_scaleout(plan, 1, cross, seed),
    }
}

pub fn run_plan(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let mut rows = Vec::new();
    for &cross in &plan.cross {
        let mut by: Vec<Vec<Measured>> = plan.systems.iter().map(|_| Vec::new()).collect();
        for r in 0..plan.runs.max(1) {
            // Each run rotates the order, so no system always runs first (or last).
            for j in 0..plan.systems.len() {
                let i = (j + r) % plan.systems.len();
                let s = plan.systems[i];
                match run_one(plan, s, cross, 1 + r as u64) {
                    Ok(m) => by[i].push(m),
                    Err(e) => eprintln!("combined-cost {} cross {cross}: {e}", s.name()),
                }
            }
        }
        let first = rows.len();
        for (i, &s) in plan.systems.iter().enumerate() {
            let ms = &by[i];
            if ms.is_empty() {
                continue;
            }
            let med = |f: fn(&Measured) -> f64| median(&ms.iter().map(f).collect::<Vec<_>>());
            rows.push(Row {
                mode: "measured",
                system: s.name(),
                cross,
                runs: ms.len(),
                throughput_ops_s: med(|m| m.throughput),
                p50_us: med(|m| m.p50_us),
                p99_us: med(|m| m.p99_us),
                cpu_us_per_cmd: med(|m| m.cpu_us),
                cpu_vs_psmr2: None,
            });
        }
        let base = rows[first..]
            .iter()
            .find(|r| r.system == System::Psmr2.name())
            .map(|r| r.cpu_us_per_cmd);
        for r in &mut rows[first..] {
            r.cpu_vs_psmr2 = base.map(|b| r.cpu_us_per_cmd / b);
        }
    }
    let mut table = Table::new(&[
        "mode",
        "system",
        "cross",
        "cmd/s",
        "p50 us",
        "p99 us",
        "cpu us/cmd",
        "vs psmr-2",
    ]);
    for r in &rows {
        table.row(vec![
            r.mode.into(),
            r.system.into(),
            report::decimals(r.cross, 2),
            report::human(r.throughput_ops_s),
            report::decimals(r.p50_us, 0),
            report::decimals(r.p99_us, 0),
            report::decimals(r.cpu_us_per_cmd, 1),
            r.cpu_vs_psmr2
                .map_or("-".into(), |x| report::decimals(x, 2)),
        ]);
    }
    println!("{}", table.render());
    let notes = vec![
        "psmr-2: P-SMR with 2 workers per replica (engine::testing::KvService, keys k % 2); combined-1x2: S-SMR with 1 partition x 2 worker threads (engine::testing::scaleout::ObjectKv, keys k % 2 over the cells); ssmr-1x1: one plain S-SMR partition. 3 replicas each (the acceptors too), one client node, all in this process".into(),
        format!(
            "measured rows: medians of {} run(s) of {:?} after {:?} warm-up, {} closed-loop clients (window {}), keys uniform over {} (gets and puts half each), `cross` the share of transfers between an even and an odd key (two workers); the systems run in turn in each run, rotating the order",
            plan.runs.max(1), plan.measure, plan.warmup, plan.clients, plan.window, plan.keys
        ),
        "cpu us/cmd: every thread of this process (replicas, acceptors, client node), on-CPU time from /proc/self/task/*/schedstat over the measured window, per command completed in it; vs psmr-2: that over psmr-2's at the same cross share".into(),
    ];
    report::Results {
        experiment: "combined-cost",
        machine,
        notes,
        rows: &rows,
    }
    .save(out);
    rows
}
