//! Workloads and closed-loop load for the B+-tree service.

use crate::service::{TreeCommand, TreeConfig, TreeService};
use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A command mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 100% gets.
    ReadOnly,
    /// 50% gets, 50% updates of existing keys.
    ReadUpdate,
    /// 50% inserts of fresh keys, 50% gets: where P-SMR must serialize every insert.
    InsertHeavy,
    /// 45% gets, 25% updates, 25% inserts, 5% range scans of ~100 keys.
    MixedScans,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::ReadOnly,
        Workload::ReadUpdate,
        Workload::InsertHeavy,
        Workload::MixedScans,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::ReadOnly => "read-only",
            Workload::ReadUpdate => "read-update",
            Workload::InsertHeavy => "insert-heavy",
            Workload::MixedScans => "mixed-scans",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workload {s:?}; one of {}",
                    Workload::ALL.map(Workload::name).join(", ")
                )
            })
    }
}

/// Draws commands of a workload.
pub struct Generator {
    rng: ChaCha8Rng,
    workload: Workload,
    config: TreeConfig,
    value: Bytes,
}

impl Generator {
    pub fn new(workload: Workload, config: TreeConfig, seed: u64) -> Self {
        let value = Bytes::from(vec![7u8; config.value_bytes]);
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            workload,
            config,
            value,
        }
    }

    /// A key that was prefilled (present unless deleted).
    fn existing(&mut self) -> u64 {
        let i = self.rng.random_range(0..self.config.prefill.max(1));
        self.config.prefill_key(i)
    }

    /// A key that was not prefilled (it may have been inserted by an earlier command).
    fn fresh(&mut self) -> u64 {
        loop {
            let k = self.rng.random_range(0..self.config.key_space);
            if !self.config.is_prefilled(k) {
                return k;
            }
        }
    }

    pub fn next_command(&mut self) -> TreeCommand {
        let p = self.rng.random_range(0..100u32);
        match self.workload {
            Workload::ReadOnly => TreeCommand::Get(self.existing()),
            Workload::ReadUpdate if p < 50 => TreeCommand::Get(self.existing()),
            Workload::ReadUpdate => TreeCommand::Update(self.existing(), self.value.clone()),
            Workload::InsertHeavy if p < 50 => {
                TreeCommand::Insert(self.fresh(), self.value.clone())
            }
            Workload::InsertHeavy => TreeCommand::Get(self.existing()),
            Workload::MixedScans if p < 45 => TreeCommand::Get(self.existing()),
            Workload::MixedScans if p < 70 => {
                TreeCommand::Update(self.existing(), self.value.clone())
            }
            Workload::MixedScans if p < 95 => TreeCommand::Insert(self.fresh(), self.value.clone()),
            Workload::MixedScans => {
                let lo = self.existing();
                let width = self.config.key_space / self.config.prefill.max(1) * 100;
                TreeCommand::Scan {
                    lo,
                    hi: lo.saturating_add(width.max(1)),
                    limit: 100,
                }
            }
        }
    }
}

use engine::load::{histogram, quantile_us, ClosedLoop, Source};
pub use engine::load::{DONE, MEASURE, WARMUP};

impl Source<TreeCommand> for Generator {
    fn next_command(&mut self) -> TreeCommand {
        Generator::next_command(self)
    }
}

/// The closed-loop driver of B+-tree clients.
pub type LoadDriver = ClosedLoop<TreeCommand, Generator>;

/// A driver for `clients` clients running `workload`.
pub fn driver(
    clients: usize,
    workload: Workload,
    config: &TreeConfig,
    seed: u64,
    phase: Arc<AtomicU8>,
) -> LoadDriver {
    let sources = (0..clients)
        .map(|c| {
            Generator::new(
                workload,
                config.clone(),
                seed.wrapping_mul(7919).wrapping_add(c as u64),
            )
        })
        .collect();
    ClosedLoop::new(sources, phase)
}

/// How a measured run is set up.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// `None`: the unreplicated baseline.
    pub mode: Option<engine::psmr::proxy::Mode>,
    pub workers: usize,
    pub workload: Workload,
    pub tree: TreeConfig,
    pub warmup: Duration,
    pub measure: Duration,
    pub replicas: usize,
    pub client_nodes: usize,
    pub clients_per_node: usize,
    /// Commands each client keeps outstanding.
    pub window: usize,
    pub pin_cores: bool,
    pub seed: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunResult {
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Commands completed in the measured window.
    pub completed: u64,
    /// opt-PSMR attempts refused per completed command (whole run).
    pub abort_rate: f64,
    pub errors: u64,
}

/// Runs one measurement: an in-process deployment (or the unreplicated server), closed-loop
/// clients, warm-up, then the measured window.
pub fn run(spec: &RunSpec) -> RunResult {
    match spec.mode {
        Some(mode) => run_replicated(spec, mode),
        None => run_unreplicated(spec),
    }
}

fn run_replicated(spec: &RunSpec, mode: engine::psmr::proxy::Mode) -> RunResult {
    use engine::psmr::deployment::Deployment;
    use engine::psmr::proxy::ClientOptions;
    use engine::psmr::replica::ReplicaOptions;
    let workers = if mode == engine::psmr::proxy::Mode::Smr {
        1
    } else {
        spec.workers
    };
    let d = Deployment::new(
        spec.replicas,
        1,
        workers,
        spec.client_nodes,
        groups::config::Tuning::default(),
    )
    .expect("valid deployment");
    let service = Arc::new(TreeService::new(spec.tree.clone()));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let options = ReplicaOptions {
        pin_cores: spec.pin_cores,
        ..ReplicaOptions::new(workers)
    };
    let cluster = engine::inproc::start(&d, service.clone(), options, |id| {
        let driver = driver(
            spec.clients_per_node,
            spec.workload,
            &spec.tree,
            spec.seed ^ u64::from(id.0),
            phase.clone(),
        );
        let options = ClientOptions {
            clients: spec.clients_per_node,
            window: spec.window,
            mode,
            workers,
            resend_ticks: 2000,
            first_index: 0,
        };
        engine::psmr::proxy::client_app(id, service.clone(), options, driver)
    });
    std::thread::sleep(spec.warmup);
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    std::thread::sleep(spec.measure);
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let apps = cluster.stop();
    let mut hist = histogram();
    let (mut completed, mut errors, mut aborts, mut all_completed) = (0, 0, 0, 0);
    for app in apps.values() {
        if let Some(c) = app.as_client() {
            hist.add(&c.host.driver.latency_ns).expect("same bounds");
            completed += c.host.driver.completed;
            errors += c.host.driver.errors;
            let s = c.host.stats();
            aborts += s.aborts;
            all_completed += s.completed;
        }
    }
    RunResult {
        throughput_ops_s: completed as f64 / elapsed.as_secs_f64(),
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        completed,
        abort_rate: aborts as f64 / all_completed.max(1) as f64,
        errors,
    }
}

fn run_unreplicated(spec: &RunSpec) -> RunResult {
    use engine::unreplicated::UnreplicatedServer;
    use std::time::Instant;
    let service = Arc::new(TreeService::new(spec.tree.clone()));
    let server = UnreplicatedServer::start(service, spec.workers, spec.pin_cores);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let loaders: Vec<_> = (0..spec.client_nodes)
        .map(|n| {
            let tx = server.sender();
            let phase = phase.clone();
            let spec = spec.clone();
            std::thread::spawn(move || {
                let clients = spec.clients_per_node;
                let mut gens: Vec<Generator> = (0..clients)
                    .map(|c| {
                        Generator::new(
                            spec.workload,
                            spec.tree.clone(),
                            spec.seed ^ (n * 1000 + c) as u64,
                        )
                    })
                    .collect();
                let mut hist = histogram();
                let (rtx, rrx) = crossbeam_channel::unbounded();
                let mut started = vec![Instant::now(); clients * spec.window];
                let mut completed = 0u64;
                for (slot, t) in started.iter_mut().enumerate() {
                    *t = Instant::now();
                    let _ = tx.send((
                        gens[slot % clients].next_command(),
                        slot as u64,
                        rtx.clone(),
                    ));
                }
                while let Ok((slot, _reply)) = rrx.recv() {
                    let slot = slot as usize;
                    let now = Instant::now();
                    match phase.load(Ordering::Relaxed) {
                        MEASURE => {
                            completed += 1;
                            let _ = hist.record(((now - started[slot]).as_nanos() as u64).max(1));
                        }
                        DONE => break,
                        _ => {}
                    }
                    started[slot] = now;
                    let _ = tx.send((
                        gens[slot % clients].next_command(),
                        slot as u64,
                        rtx.clone(),
                    ));
                }
                (hist, completed)
            })
        })
        .collect();
    std::thread::sleep(spec.warmup);
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    std::thread::sleep(spec.measure);
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut hist = histogram();
    let mut completed = 0;
    for l in loaders {
        let (h, c) = l.join().expect("load thread");
        hist.add(&h).expect("same bounds");
        completed += c;
    }
    server.stop();
    RunResult {
        throughput_ops_s: completed as f64 / elapsed.as_secs_f64(),
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        completed,
        abort_rate: 0.0,
        errors: 0,
    }
}
