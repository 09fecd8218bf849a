//! Workloads and closed-loop load for the B+-tree service.

use crate::keys::{Distribution, ItemChooser, KeyDistribution};
use crate::rebalance::RebalancePolicy;
use crate::service::{RebalanceReport, TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        engine::load::by_name(s, Workload::ALL, Workload::name, "workload")
    }
}

/// Where a client's sequential keys go: keys `key_space + base + j * slots + slot` for its
/// `j`-th insert, so the clients of a run interleave into one increasing sequence (ids handed
/// out in time order, as a shared counter would, without sharing one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub base: u64,
    pub slot: u64,
    pub slots: u64,
}

impl Sequence {
    /// Client `slot` of `slots` clients in one process.
    pub fn slot(slot: u64, slots: u64) -> Self {
        Sequence {
            base: 0,
            slot,
            slots: slots.max(1),
        }
    }
}

/// Draws commands of a workload, with keys from a distribution ([`crate::keys`]):
///
/// | distribution | reads, updates, scans (existing keys) | inserts (new keys) |
/// |---|---|---|
/// | uniform | any pre-filled key | any key not pre-filled |
/// | zipf, zipf-unscrambled | Zipfian over the pre-filled keys | a key in the gap after a Zipfian pre-filled key |
/// | latest | Zipfian counted back from the newest key (this client's inserts, then the pre-filled keys from the top) | the next key of the client's sequence |
/// | sequential | the pre-filled keys in order, cycling | the next key of the client's sequence |
///
/// Sequential keys ([`Sequence`]) lie above the pre-filled key space, so they all land on the
/// last range unless the rebalancer spreads them.
pub struct Generator {
    rng: ChaCha8Rng,
    workload: Workload,
    config: TreeConfig,
    value: Bytes,
    distribution: Distribution,
    chooser: ItemChooser,
    sequence: Sequence,
    /// Keys this client inserted from its sequence.
    appended: u64,
}

impl Generator {
    /// Uniform keys.
    pub fn new(workload: Workload, config: TreeConfig, seed: u64) -> Self {
        Self::with_keys(
            workload,
            config,
            KeyDistribution::default(),
            Sequence::slot(0, 1),
            seed,
        )
    }

    pub fn with_keys(
        workload: Workload,
        config: TreeConfig,
        keys: KeyDistribution,
        sequence: Sequence,
        seed: u64,
    ) -> Self {
        let value = Bytes::from(vec![7u8; config.value_bytes]);
        let items = config.prefill.max(1);
        // Sequential readers start spread over the keys, one slot apart.
        let start = items / sequence.slots.max(1) * sequence.slot;
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            workload,
            value,
            distribution: keys.distribution,
            chooser: ItemChooser::new(keys, items, start),
            sequence,
            appended: 0,
            config,
        }
    }

    fn sequence_key(&self, j: u64) -> u64 {
        let s = self.sequence;
        self.config
            .key_space
            .saturating_add(s.base)
            .saturating_add(j.saturating_mul(s.slots))
            .saturating_add(s.slot)
    }

    /// A key that exists (unless deleted): pre-filled, or (latest) inserted by this client.
    fn existing(&mut self) -> u64 {
        let i = self.chooser.next(&mut self.rng);
        let prefill = self.config.prefill.max(1);
        if i < prefill {
            self.config.prefill_key(i)
        } else {
            self.sequence_key(i - prefill)
        }
    }

    /// A key that was not pre-filled (it may have been inserted by an earlier command).
    fn fresh(&mut self) -> u64 {
        match self.distribution {
            Distribution::Uniform => loop {
                let k = self.rng.random_range(0..self.config.key_space);
                if !self.config.is_prefilled(k) {
                    return k;
                }
            },
            Distribution::Zipf | Distribution::ZipfUnscrambled => {
                let i = self.chooser.next(&mut self.rng);
                let lo = self.config.prefill_key(i);
                let hi = if i + 1 < self.config.prefill {
                    self.config.prefill_key(i + 1)
                } else {
                    self.config.key_space
                };
                if hi > lo + 1 {
                    self.rng.random_range(lo + 1..hi)
                } else {
                    lo
                }
            }
            Distribution::Latest | Distribution::Sequential => {
                let k = self.sequence_key(self.appended);
                self.appended += 1;
                if self.distribution == Distribution::Latest {
                    self.chooser
                        .set_items(self.config.prefill.max(1) + self.appended);
                }
                k
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

use engine::host::client::{Completion, Driver};
use engine::load::{histogram, quantile_us, ClosedLoop, Source};
pub use engine::load::{DONE, MEASURE, WARMUP};

impl Source<TreeCommand> for Generator {
    fn next_command(&mut self) -> TreeCommand {
        Generator::next_command(self)
    }
}

/// The closed-loop load of B+-tree clients.
pub type LoadDriver = ClosedLoop<TreeCommand, Generator>;

/// A driver for `clients` clients running `workload` with uniform keys.
pub fn driver(
    clients: usize,
    workload: Workload,
    config: &TreeConfig,
    seed: u64,
    phase: Arc<AtomicU8>,
) -> LoadDriver {
    load_driver(
        clients,
        workload,
        config,
        KeyDistribution::default(),
        Sequence::slot(0, 1),
        seed,
        phase,
    )
}

/// A driver for `clients` clients running `workload` with keys from `keys`; client `c` takes
/// slot `first.slot + c` of the sequence.
pub fn load_driver(
    clients: usize,
    workload: Workload,
    config: &TreeConfig,
    keys: KeyDistribution,
    first: Sequence,
    seed: u64,
    phase: Arc<AtomicU8>,
) -> LoadDriver {
    let sources = (0..clients)
        .map(|c| {
            Generator::with_keys(
                workload,
                config.clone(),
                keys,
                Sequence {
                    slot: first.slot + c as u64,
                    ..first
                },
                seed.wrapping_mul(7919).wrapping_add(c as u64),
            )
        })
        .collect();
    ClosedLoop::new(sources, phase)
}

/// When and how a client asks for rebalancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebalanceSpec {
    pub every: Duration,
    pub policy: RebalancePolicy,
}

impl RebalanceSpec {
    /// A rebalancer every `every` with the default policy.
    pub fn every(every: Duration) -> Self {
        RebalanceSpec {
            every,
            policy: RebalancePolicy::default(),
        }
    }

    /// Rounds that only read (and decay) the load counters and never act: what a run without
    /// rebalancing uses to measure its balance, at the same cost per round.
    pub fn probe(every: Duration) -> Self {
        RebalanceSpec {
            every,
            policy: RebalancePolicy {
                tolerance_pct: u32::MAX,
                ..RebalancePolicy::default()
            },
        }
    }
}

/// What the rebalancing rounds of a run answered: when (seconds since the rebalancer
/// started) and what.
#[derive(Clone, Debug, Default)]
pub struct RebalanceLog {
    pub rounds: Vec<(f64, RebalanceReport)>,
}

impl RebalanceLog {
    /// The time of the last round that changed something, if any.
    pub fn last_action_s(&self) -> Option<f64> {
        self.rounds
            .iter()
            .rev()
            .find(|(_, r)| r.actions() > 0)
            .map(|(t, _)| *t)
    }
}

/// A client that multicasts `Rebalance` every period (one outstanding at a time). It is only
/// the trigger: what to split, move or stripe is computed by the replicas from replicated
/// state when the command executes, so all of them switch at the same point of the stream.
pub struct Rebalancer {
    spec: RebalanceSpec,
    started: Instant,
    next_at: Instant,
    outstanding: bool,
    pub log: Arc<parking_lot::Mutex<RebalanceLog>>,
}

impl Rebalancer {
    pub fn new(spec: RebalanceSpec) -> Self {
        let now = Instant::now();
        Rebalancer {
            spec,
            started: now,
            next_at: now + spec.every,
            outstanding: false,
            log: Arc::default(),
        }
    }

    /// The next `Rebalance`, if one is due.
    pub fn due(&mut self) -> Option<TreeCommand> {
        let now = Instant::now();
        if self.outstanding || now < self.next_at {
            return None;
        }
        self.outstanding = true;
        self.next_at = now + self.spec.every;
        Some(TreeCommand::Rebalance(self.spec.policy))
    }

    pub fn complete(&mut self, result: Result<TreeReply, engine::host::client::ClientError>) {
        self.outstanding = false;
        if let Ok(TreeReply::Rebalanced(r)) = result {
            let t = self.started.elapsed().as_secs_f64();
            self.log.lock().rounds.push((t, r));
        }
    }
}

/// A closed-loop load and, as one more client after the load's, an optional rebalancer.
pub struct TreeDriver {
    pub load: LoadDriver,
    clients: usize,
    pub rebalancer: Option<Rebalancer>,
}

impl TreeDriver {
    /// `load` drives clients `0..clients`; the rebalancer (if any) is client `clients`.
    pub fn new(load: LoadDriver, clients: usize, rebalancer: Option<Rebalancer>) -> Self {
        TreeDriver {
            load,
            clients,
            rebalancer,
        }
    }

    /// Logical clients the driver needs.
    pub fn clients(&self) -> usize {
        self.clients + usize::from(self.rebalancer.is_some())
    }
}

impl Driver<TreeCommand, TreeReply> for TreeDriver {
    fn next(&mut self, client: usize, now_us: u64) -> Option<TreeCommand> {
        if client < self.clients {
            return Driver::<TreeCommand, TreeReply>::next(&mut self.load, client, now_us);
        }
        self.rebalancer.as_mut()?.due()
    }

    fn complete(
        &mut self,
        client: usize,
        done: Completion<TreeCommand, TreeReply>,
        latency: Duration,
    ) {
        if client < self.clients {
            self.load.complete(client, done, latency);
        } else if let Some(r) = self.rebalancer.as_mut() {
            r.complete(done.result);
        }
    }
}

/// How a measured run is set up.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// `None`: the unreplicated baseline.
    pub mode: Option<engine::psmr::proxy::Mode>,
    pub workers: usize,
    pub workload: Workload,
    pub keys: KeyDistribution,
    /// Rebalancing rounds (sent by a client of the first client node), or none.
    pub rebalance: Option<RebalanceSpec>,
    pub tree: TreeConfig,
    pub warmup: Duration,
    pub measure: Duration,
    pub replicas: usize,
    pub client_nodes: usize,
    pub clients_per_node: usize,
    /// Commands each client keeps outstanding.
    pub window: usize,
    pub pin_cores: bool,
    /// Serve single-worker reads off the log, after a read index (see [`InProcess`]).
    pub fast_reads: bool,
    pub seed: u64,
}

/// What the rebalancing rounds of a run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RebalanceStats {
    pub rounds: usize,
    pub moves: u32,
    pub splits: u32,
    pub stripes: u32,
    /// Seconds from the start of the load to the last round that changed something.
    pub settled_after_s: Option<f64>,
    /// Whether some round in the measured window still changed something.
    pub acted_while_measuring: bool,
    /// The busiest worker's share of the counted load, averaged over the rounds in the
    /// measured window (0.5 is even with two workers).
    pub busiest_share: f64,
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
    /// Tries refused as misrouted (stale routes after a move), whole run.
    pub misroutes: u64,
    pub errors: u64,
    pub rebalance: Option<RebalanceStats>,
    /// CPU microseconds per completed command in the measured window, in total and by thread
    /// role (replicated: workers, replica nodes, client nodes, acceptors, other; unreplicated:
    /// workers and client nodes), where the platform tells (Linux).
    pub cpu: Option<engine::load::cpu::Breakdown>,
}

/// Runs one measurement: an in-process deployment (or the unreplicated server), closed-loop
/// clients, warm-up, then the measured window.
pub fn run(spec: &RunSpec) -> RunResult {
    match spec.mode {
        Some(mode) => run_replicated(spec, mode),
        None => run_unreplicated(spec),
    }
}

/// The rounds of `log` summed up, the measured window being `[from_s, to_s)` after the start.
fn rebalance_stats(log: &RebalanceLog, from_s: f64, to_s: f64) -> RebalanceStats {
    let mut s = RebalanceStats {
        rounds: log.rounds.len(),
        settled_after_s: log.last_action_s(),
        ..RebalanceStats::default()
    };
    let mut shares = Vec::new();
    for (t, r) in &log.rounds {
        s.moves += r.moves;
        s.splits += r.splits;
        s.stripes += r.stripes;
        if (from_s..to_s).contains(t) {
            s.acted_while_measuring |= r.actions() > 0;
            let total: u64 = r.loads.iter().sum();
            if total > 0 {
                shares.push(*r.loads.iter().max().expect("loads") as f64 / total as f64);
            }
        }
    }
    s.busiest_share = if shares.is_empty() {
        f64::NAN
    } else {
        shares.iter().sum::<f64>() / shares.len() as f64
    };
    s
}

/// An in-process deployment for a measured run: what [`run_in_process`] needs.
pub struct InProcess<'a> {
    pub mode: engine::psmr::proxy::Mode,
    pub workers: usize,
    pub replicas: usize,
    pub client_nodes: usize,
    pub window: usize,
    pub tree: &'a TreeConfig,
    pub warmup: Duration,
    pub measure: Duration,
    pub pin_cores: bool,
    /// Serve single-worker reads off the log, after a read index
    /// ([`engine::psmr::proxy::ClientProxy::with_fast_reads`]).
    pub fast_reads: bool,
}

/// What [`run_in_process`] hands back: each client node's driver, its clients' counters, the
/// measured window (seconds since the start) and its length.
pub struct Measured<D> {
    pub drivers: Vec<(D, engine::host::client::ClientStats)>,
    pub window_s: (f64, f64),
    pub elapsed: Duration,
    /// CPU nanoseconds of the measured window by thread role
    /// ([`Deployment::thread_role`](engine::psmr::deployment::Deployment::thread_role)), where
    /// the platform tells.
    pub cpu_ns_by_role: Option<std::collections::BTreeMap<String, u64>>,
}

/// Runs an in-process deployment with the client nodes' drivers from `make_driver(node
/// index, node id)` (each with the logical clients it asks for: `make_driver` returns the
/// driver and that count), warm-up, then the measured window; `phase` is the shared phase the
/// drivers read.
pub fn run_in_process<D: Driver<TreeCommand, TreeReply>>(
    p: &InProcess<'_>,
    phase: &Arc<AtomicU8>,
    mut make_driver: impl FnMut(u64, groups::ids::NodeId) -> (D, usize),
) -> Measured<D> {
    use engine::psmr::deployment::Deployment;
    use engine::psmr::proxy::ClientOptions;
    use engine::psmr::replica::ReplicaOptions;
    let workers = if p.mode == engine::psmr::proxy::Mode::Smr {
        1
    } else {
        p.workers
    };
    let d = Deployment::new(
        p.replicas,
        1,
        workers,
        p.client_nodes,
        groups::config::Tuning::default(),
    )
    .expect("valid deployment");
    let service = Arc::new(TreeService::new(p.tree.clone()));
    let options = ReplicaOptions {
        pin_cores: p.pin_cores,
        ..ReplicaOptions::new(workers)
    };
    let mut node = 0u64;
    let started = Instant::now();
    let cluster = engine::inproc::start(&d, service.clone(), options, |id| {
        let (driver, clients) = make_driver(node, id);
        node += 1;
        let options = ClientOptions {
            clients,
            window: p.window,
            mode: p.mode,
            workers,
            resend_ticks: 2000,
            first_index: 0,
            fast_reads: p.fast_reads,
        };
        engine::psmr::proxy::client_app(id, service.clone(), options, driver)
    });
    std::thread::sleep(p.warmup);
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = engine::load::cpu::Snapshot::take();
    std::thread::sleep(p.measure);
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu_ns_by_role = engine::load::cpu::Snapshot::take()
        .zip(cpu0)
        .map(|(after, before)| after.since_by_role(&before, |n| d.thread_role(n).to_string()));
    let window_s = (
        (t0 - started).as_secs_f64(),
        (t0 - started + elapsed).as_secs_f64(),
    );
    let apps = cluster.stop();
    let drivers = apps
        .into_values()
        .filter_map(|app| match app {
            engine::inproc::EngineApp::Client(c) => {
                let stats = c.host.stats();
                Some((c.host.driver, stats))
            }
            _ => None,
        })
        .collect();
    Measured {
        drivers,
        window_s,
        elapsed,
        cpu_ns_by_role,
    }
}

fn run_replicated(spec: &RunSpec, mode: engine::psmr::proxy::Mode) -> RunResult {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let slots = (spec.client_nodes * spec.clients_per_node) as u64;
    let mut log = None;
    let p = InProcess {
        mode,
        workers: spec.workers,
        replicas: spec.replicas,
        client_nodes: spec.client_nodes,
        window: spec.window,
        tree: &spec.tree,
        warmup: spec.warmup,
        measure: spec.measure,
        pin_cores: spec.pin_cores,
        fast_reads: spec.fast_reads,
    };
    let m = run_in_process(&p, &phase, |node, id| {
        let load = load_driver(
            spec.clients_per_node,
            spec.workload,
            &spec.tree,
            spec.keys,
            Sequence::slot(node * spec.clients_per_node as u64, slots),
            spec.seed ^ u64::from(id.0),
            phase.clone(),
        );
        let rebalancer = (node == 0).then_some(spec.rebalance).flatten().map(|r| {
            let r = Rebalancer::new(r);
            log = Some(r.log.clone());
            r
        });
        let driver = TreeDriver::new(load, spec.clients_per_node, rebalancer);
        let clients = driver.clients();
        (driver, clients)
    });
    let mut hist = histogram();
    let (mut completed, mut errors, mut aborts, mut all_completed, mut misroutes) = (0, 0, 0, 0, 0);
    for (d, s) in &m.drivers {
        hist.add(&d.load.latency_ns).expect("same bounds");
        completed += d.load.completed;
        errors += d.load.errors;
        aborts += s.aborts;
        misroutes += s.misroutes;
        all_completed += s.completed;
    }
    RunResult {
        throughput_ops_s: completed as f64 / m.elapsed.as_secs_f64(),
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        completed,
        abort_rate: aborts as f64 / all_completed.max(1) as f64,
        misroutes,
        errors,
        rebalance: log.map(|l| rebalance_stats(&l.lock(), m.window_s.0, m.window_s.1)),
        cpu: m
            .cpu_ns_by_role
            .and_then(|roles| engine::load::cpu::Breakdown::of(roles, completed)),
    }
}

fn run_unreplicated(spec: &RunSpec) -> RunResult {
    use engine::unreplicated::UnreplicatedServer;
    let service = Arc::new(TreeService::new(spec.tree.clone()));
    let server = UnreplicatedServer::start(service, spec.workers, spec.pin_cores);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let slots = (spec.client_nodes * spec.clients_per_node) as u64;
    let loaders: Vec<_> = (0..spec.client_nodes)
        .map(|n| {
            let tx = server.sender();
            let phase = phase.clone();
            let spec = spec.clone();
            std::thread::Builder::new()
                .name(format!("load-{n}"))
                .spawn(move || {
                    let clients = spec.clients_per_node;
                    let mut gens: Vec<Generator> = (0..clients)
                        .map(|c| {
                            Generator::with_keys(
                                spec.workload,
                                spec.tree.clone(),
                                spec.keys,
                                Sequence::slot((n * clients + c) as u64, slots),
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
                                let _ =
                                    hist.record(((now - started[slot]).as_nanos() as u64).max(1));
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
                .expect("spawn load thread")
        })
        .collect();
    std::thread::sleep(spec.warmup);
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    let cpu0 = engine::load::cpu::Snapshot::take();
    std::thread::sleep(spec.measure);
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu_ns = engine::load::cpu::Snapshot::take()
        .zip(cpu0)
        .map(|(after, before)| {
            after.since_by_role(&before, |n| {
                if n.starts_with("unreplicated-") {
                    "workers"
                } else if n.starts_with("load-") {
                    "client nodes"
                } else {
                    "other"
                }
                .to_string()
            })
        });
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
        misroutes: 0,
        errors: 0,
        rebalance: None,
        cpu: cpu_ns.and_then(|roles| engine::load::cpu::Breakdown::of(roles, completed)),
    }
}
