//! Experiment `scaleout`: Chirper on S-SMR against DS-SMR (the DS-SMR paper's Table 1).
//!
//! Workloads Timeline, Post, Follow/unfollow (50/50) and Mix (85% getTimeline, 7.5% post,
//! 3.75% follow, 3.75% unfollow) on 1, 2, 4 and 8 partitions of 3 replicas (DS-SMR adds an
//! oracle of 3 replicas), with a social graph of strong locality placed by community.
//! Measured in-process by default (every replica, acceptor and client node a thread of this
//! process), or with `--tcp` every replica and acceptor a process on loopback. A simulated
//! mode extends the curves to 16, 32 and 64 partitions with a stated cost model (see
//! [`crate::costmodel`]); every row says whether it was measured or simulated.

use crate::machine::Machine;
use crate::report::{self, median, Series, Table};
use chirper::cli::ServiceSection;
use chirper::graph::GraphSpec;
use chirper::load::{run, run_tcp, RunResult, RunSpec, Workload};
use engine::partitioned::Scheme;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The paper's DS-SMR / S-SMR throughput ratios (Table 1), by workload, for 1/2/4/8 partitions.
pub fn paper_ratio(w: Workload, partitions: u32) -> Option<f64> {
    let i = match partitions {
        1 => 0,
        2 => 1,
        4 => 2,
        8 => 3,
        _ => return None,
    };
    let r = match w {
        Workload::Timeline => [0.91, 0.92, 0.81, 1.03],
        Workload::Post => [0.46, 8.08, 18.48, 45.00],
        Workload::FollowUnfollow => [0.93, 4.27, 6.30, 24.88],
        Workload::Mix => [0.84, 2.00, 3.01, 6.97],
        Workload::Mix15 => return None,
    };
    Some(r[i])
}

/// A scheme as the experiment runs it: S-SMR with the community placement, S-SMR with a
/// placement METIS precomputed from the follow graph (the DynaStar paper's S-SMR*), DS-SMR,
/// DynaStar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Ssmr,
    SsmrStar,
    Dssmr,
    Dynastar,
}

impl Variant {
    pub fn scheme(self) -> Scheme {
        match self {
            Variant::Ssmr | Variant::SsmrStar => Scheme::Ssmr,
            Variant::Dssmr => Scheme::Dssmr,
            Variant::Dynastar => Scheme::Dynastar,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Ssmr => "s-smr",
            Variant::SsmrStar => "s-smr*",
            Variant::Dssmr => "ds-smr",
            Variant::Dynastar => "dynastar",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Variant::Ssmr,
            Variant::SsmrStar,
            Variant::Dssmr,
            Variant::Dynastar,
        ]
        .into_iter()
        .find(|v| v.name() == s || (s == "s-smr-metis" && *v == Variant::SsmrStar))
        .ok_or_else(|| {
            format!("unknown scheme {s:?}: s-smr, s-smr* (or s-smr-metis), ds-smr, dynastar")
        })
    }
}

/// DynaStar's settings in the experiment.
#[derive(Clone, Copy, Debug)]
pub struct DynaPlan {
    /// Hints every this many ms from each partition.
    pub hint_ms: u64,
    /// A repartition every this many ms (as hint batches).
    pub repartition_ms: u64,
    pub method: engine::partitioned::dynastar::placement::Method,
    /// Simulated runs: a celebrity appears this far into the run (the dynamic phase).
    pub celebrity_at: Option<Duration>,
}

impl DynaPlan {
    pub fn server(&self, partitions: u32) -> engine::partitioned::ServerOptions {
        let mut o = engine::partitioned::ServerOptions::new(Scheme::Dynastar);
        o.dynastar.hint_ticks = self.hint_ms.max(1);
        o.dynastar.repartition_hints =
            (self.repartition_ms / self.hint_ms.max(1)).max(1) * u64::from(partitions);
        o.dynastar.placement.method = self.method;
        o
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub schemes: Vec<Variant>,
    /// Acting users drawn by a Zipf law of this exponent (else uniformly).
    pub active_zipf: Option<f64>,
    pub dynastar: DynaPlan,
    pub partitions: Vec<u32>,
    pub simulated: Vec<u32>,
    /// Workers per partition replica (combined mode above 1; the `combined` experiment).
    pub workers: u32,
    pub workloads: Vec<Workload>,
    pub graph: GraphSpec,
    pub placement_quality: f64,
    pub replicas: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub runs: usize,
    pub tcp: bool,
    pub client_nodes: usize,
    pub clients_per_node: usize,
    pub window: usize,
    pub post_bytes: usize,
    pub retry_max: u32,
    /// Virtual warm-up of a simulated run; `None`: 300 ms or 40 ms per partition, whichever
    /// is longer (DS-SMR's initial moves and fallbacks take longer to settle with more
    /// partitions: about 1 s virtual at 32).
    pub simulated_warmup: Option<Duration>,
    /// Closed-loop clients per client node of a simulated run; `None`: 8 per partition,
    /// between 16 and 256.
    pub simulated_clients_per_node: Option<usize>,
    /// Without `simulated_clients_per_node`: closed-loop clients per client node and cell
    /// (partition x worker), and the clamp on their number.
    pub simulated_clients_per_cell: (usize, usize, usize),
    /// Senders' batching delay of simulated runs, in ticks (`Tuning::submit_delay_ticks`).
    pub simulated_submit_delay_ticks: u32,
    /// Whether simulated replicas execute on cores of their own, one per worker, besides
    /// the node's thread (`WorkCosts::own_cores`).
    pub simulated_worker_cores: bool,
    /// Virtual measured time of a simulated run.
    pub simulated_measure: Duration,
    /// Simulated runs per point (the tables show medians).
    pub simulated_runs: usize,
    /// The dynamic phase: commands in 10,000 that follow the celebrity, and its posts.
    pub celebrity_follow_per_10k: u32,
    pub celebrity_post_per_10k: u32,
    /// Partition counts of the dynamic phase (simulated).
    pub celebrity_partitions: Vec<u32>,
}

impl Plan {
    pub fn full() -> Self {
        Plan {
            schemes: vec![Variant::Ssmr, Variant::Dssmr],
            active_zipf: None,
            dynastar: DynaPlan {
                hint_ms: 50,
                repartition_ms: 400,
                method: engine::partitioned::dynastar::placement::Method::Best,
                celebrity_at: None,
            },
            partitions: vec![1, 2, 4, 8],
            simulated: vec![16, 32, 64],
            workers: 1,
            workloads: Workload::ALL.to_vec(),
            graph: GraphSpec {
                users: 10_000,
                communities: 64,
                mean_followees: 10.0,
                locality: 1.0,
                popularity_exponent: 1.0,
                seed: 42,
            },
            placement_quality: 0.5,
            replicas: 3,
            warmup: Duration::from_millis(1500),
            measure: Duration::from_secs(2),
            runs: 3,
            tcp: false,
            client_nodes: 2,
            clients_per_node: 16,
            window: 4,
            post_bytes: 140,
            retry_max: 3,
            simulated_warmup: None,
            simulated_clients_per_node: None,
            simulated_clients_per_cell: (8, 16, 256),
            simulated_submit_delay_ticks: 0,
            simulated_worker_cores: false,
            simulated_measure: Duration::from_millis(300),
            simulated_runs: 1,
            celebrity_follow_per_10k: 200,
            celebrity_post_per_10k: 100,
            celebrity_partitions: vec![8],
        }
    }

    /// The DynaStar paper's social-network experiment: Mix 85/15 (85 % timeline, 15 % post)
    /// and Post on the paper-sized graph (456,631 users, about 14 M follows), Zipf 0.95
    /// active users, a random initial placement (DS-SMR and DynaStar move from it; S-SMR*
    /// starts from METIS's), 2/4/8 partitions measured and 2 to 64 simulated, S-SMR, S-SMR*,
    /// DS-SMR and DynaStar side by side, three simulated runs per point, and the dynamic phase
    /// (a celebrity appears 2 s into a simulated run at 8 partitions).
    pub fn dynastar() -> Self {
        Plan {
            schemes: vec![
                Variant::Ssmr,
                Variant::SsmrStar,
                Variant::Dssmr,
                Variant::Dynastar,
            ],
            active_zipf: Some(0.95),
            dynastar: DynaPlan {
                celebrity_at: Some(Duration::from_secs(2)),
                ..Plan::full().dynastar
            },
            partitions: vec![2, 4, 8],
            simulated: vec![2, 4, 8, 16, 32, 64],
            workloads: vec![Workload::Mix15, Workload::Post],
            graph: GraphSpec::paper(42),
            placement_quality: 0.0,
            simulated_runs: 3,
            // DynaStar's first placement from the random one takes a repartition period and
            // its plan's delivery.
            simulated_warmup: Some(Duration::from_millis(1500)),
            ..Plan::full()
        }
    }

    /// [`Plan::dynastar`] on a graph with weak locality: follows drawn uniformly from
    /// everyone, no communities, so that no placement keeps most posts local; every scheme
    /// should degrade gracefully and none may livelock. No dynamic phase.
    pub fn dynastar_weak() -> Self {
        let mut p = Plan::dynastar();
        p.graph = GraphSpec::weak_locality(p.graph.users, p.graph.mean_followees, 42);
        p.dynastar.celebrity_at = None;
        p
    }

    /// The default suite's short version.
    pub fn quick() -> Self {
        Plan {
            partitions: vec![1, 2],
            simulated: vec![],
            workloads: vec![Workload::Post, Workload::Mix],
            warmup: Duration::from_millis(800),
            measure: Duration::from_millis(800),
            runs: 1,
            ..Plan::full()
        }
    }
}

/// A row of `scaleout.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scheme: &'static str,
    #[serde(skip)]
    pub variant: Variant,
    pub workload: Workload,
    pub partitions: u32,
    /// `measured` (in-process threads), `measured-tcp` (processes on loopback) or
    /// `simulated` (the cost model).
    pub source: &'static str,
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub moves_per_s: f64,
    pub retries_per_cmd: f64,
    pub fallbacks_per_cmd: f64,
    pub consults_per_cmd: f64,
    /// DynaStar (simulated rows): the oracle and the repartitions.
    pub dynastar: Option<crate::costmodel::DynaReport>,
    pub runs: Vec<RunResult>,
}

/// The METIS placement of the plan's graph over `partitions` partitions (S-SMR*), computed
/// once per partition count.
pub fn metis_placement(plan: &Plan, partitions: u32) -> Result<std::sync::Arc<Vec<u32>>, String> {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Cache = Mutex<BTreeMap<(u32, u32, u64), Arc<Vec<u32>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (partitions, plan.graph.users, plan.graph.seed);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().expect("cache").get(&key) {
        return Ok(p.clone());
    }
    let graph = chirper::graph::generate(&plan.graph).map_err(|e| e.to_string())?;
    let p = Arc::new(
        chirper::graph::place_by_metis(&graph, partitions, 5, plan.graph.seed)
            .map_err(|e| e.to_string())?,
    );
    cache.lock().expect("cache").insert(key, p.clone());
    Ok(p)
}

pub(crate) fn spec(
    plan: &Plan,
    variant: Variant,
    workload: Workload,
    partitions: u32,
    seed: u64,
) -> RunSpec {
    let scheme = variant.scheme();
    let mut section =
        ServiceSection::generated(scheme, partitions, &plan.graph, plan.placement_quality);
    section.retry_max = plan.retry_max;
    section.workers = plan.workers.max(1);
    RunSpec {
        section,
        replicas: plan.replicas,
        workload,
        post_bytes: plan.post_bytes,
        warmup: plan.warmup,
        measure: plan.measure,
        client_nodes: plan.client_nodes,
        clients_per_node: plan.clients_per_node,
        window: plan.window,
        cache: true,
        seed,
        sample_every: Duration::from_millis(100),
        placement: (variant == Variant::SsmrStar)
            .then(|| metis_placement(plan, partitions).ok())
            .flatten(),
        active_zipf: plan.active_zipf,
        server: (variant == Variant::Dynastar).then(|| plan.dynastar.server(partitions)),
        fast_reads: false,
    }
}

/// One point of `bench scaleout-reads`: a scheme with timelines ordered through the logs and
/// served off the log (fast reads), runs interleaved.
#[derive(Clone, Debug, Serialize)]
pub struct ReadsRow {
    pub workload: Workload,
    pub partitions: u32,
    pub scheme: &'static str,
    pub source: &'static str,
    pub ordered_ops_s: f64,
    pub fast_ops_s: f64,
    /// fast / ordered, of the medians.
    pub ratio: f64,
    pub ordered_p50_us: f64,
    pub ordered_p99_us: f64,
    pub fast_p50_us: f64,
    pub fast_p99_us: f64,
    pub ordered_runs: Vec<RunResult>,
    pub fast_runs: Vec<RunResult>,
}

/// S-SMR and DS-SMR with reads through the logs against reads off the log (in-process,
/// measured): per workload, partition count and scheme, `plan.runs` runs of each, interleaved.
pub fn reads(plan: &Plan, out: &Path, machine: &Machine) -> Vec<ReadsRow> {
    let mut rows = Vec::new();
    let mut t = Table::new(&[
        "workload",
        "parts",
        "scheme",
        "ordered cmds/s",
        "fast reads cmds/s",
        "fast/ordered",
        "ordered p50/p99 ms",
        "fast p50/p99 ms",
    ]);
    let ms = |x: f64| x / 1000.0;
    for &w in &plan.workloads {
        for &k in &plan.partitions {
            for (i, &v) in plan.schemes.iter().enumerate() {
                if !matches!(v, Variant::Ssmr | Variant::Dssmr) {
                    eprintln!("scaleout-reads: {} has no fast reads; skipped", v.name());
                    continue;
                }
                let (mut ordered, mut fast) = (Vec::new(), Vec::new());
                for r in 0..plan.runs {
                    for on in [false, true] {
                        let mut s = spec(plan, v, w, k, (i * 10 + r) as u64 + 1);
                        s.fast_reads = on;
                        match run(&s) {
                            Ok(x) if on => fast.push(x),
                            Ok(x) => ordered.push(x),
                            Err(e) => {
                                eprintln!("scaleout-reads: {} {} {k}: {e}", v.name(), w.name())
                            }
                        }
                    }
                }
                let m = |runs: &[RunResult], f: fn(&RunResult) -> f64| {
                    median(&runs.iter().map(f).collect::<Vec<_>>())
                };
                let row = ReadsRow {
                    workload: w,
                    partitions: k,
                    scheme: v.name(),
                    source: "measured",
                    ordered_ops_s: m(&ordered, |r| r.throughput_ops_s),
                    fast_ops_s: m(&fast, |r| r.throughput_ops_s),
                    ratio: m(&fast, |r| r.throughput_ops_s) / m(&ordered, |r| r.throughput_ops_s),
                    ordered_p50_us: m(&ordered, |r| r.p50_us),
                    ordered_p99_us: m(&ordered, |r| r.p99_us),
                    fast_p50_us: m(&fast, |r| r.p50_us),
                    fast_p99_us: m(&fast, |r| r.p99_us),
                    ordered_runs: ordered,
                    fast_runs: fast,
                };
                t.row(vec![
                    w.name().to_string(),
                    k.to_string(),
                    v.name().to_string(),
                    report::human(row.ordered_ops_s),
                    report::human(row.fast_ops_s),
                    format!("{:.2}", row.ratio),
                    format!(
                        "{:.2} / {:.2}",
                        ms(row.ordered_p50_us),
                        ms(row.ordered_p99_us)
                    ),
                    format!("{:.2} / {:.2}", ms(row.fast_p50_us), ms(row.fast_p99_us)),
                ]);
                rows.push(row);
            }
        }
    }
    println!("{}", t.render());
    let results = report::Results {
        experiment: "scaleout-reads",
        machine,
        notes: vec![
            format!(
                "Chirper in-process (measured), {} replicas per partition (DS-SMR: plus an oracle of {}), {} client nodes x {} closed-loop clients (window {}), {} users",
                plan.replicas, plan.replicas, plan.client_nodes, plan.clients_per_node, plan.window, plan.graph.users
            ),
            format!(
                "medians of {} run(s) each of {:?} after {:?} warm-up; ordered and fast-reads runs interleaved",
                plan.runs, plan.measure, plan.warmup
            ),
            "fast reads: a timeline whose user one partition holds goes to one replica of it, which answers after a read index (engine::partitioned::reads); every other command is ordered".into(),
        ],
        rows: &rows,
    };
    match report::write_json(out, "scaleout-reads.json", &results) {
        Ok(p) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
    rows
}

/// The `chirper-server` binary next to this one, built if missing.
fn server_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no executable directory")?;
    let bin = dir.join("chirper-server");
    if !bin.exists() {
        eprintln!("building chirper-server for --tcp");
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-p", "chirper", "--bin", "chirper-server"])
                .args(profile)
                .status()
                .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() || !bin.exists() {
            return Err(format!("could not build {}", bin.display()));
        }
    }
    Ok(bin)
}

pub fn run_plan(plan: &Plan, out: &Path, machine: &Machine) -> Vec<Row> {
    let mut points = Vec::new();
    for &w in &plan.workloads {
        for &k in &plan.partitions {
            for &s in &plan.schemes {
                points.push((w, k, s));
            }
        }
    }
    let server = if plan.tcp {
        match server_binary() {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("scaleout --tcp: {e}");
                return Vec::new();
            }
        }
    } else {
        None
    };
    let bar = indicatif::ProgressBar::new((points.len() * plan.runs) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scaleout {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("template"),
    );
    let mut rows = Vec::new();
    let mut port = 17_000u16;
    for (i, &(workload, partitions, variant)) in points.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..plan.runs {
            bar.set_message(format!(
                "{} {} {} partitions",
                variant.name(),
                workload.name(),
                partitions
            ));
            let s = spec(plan, variant, workload, partitions, (i * 10 + r) as u64 + 1);
            let result = match &server {
                Some(bin) => {
                    port = if port > 60_000 { 17_000 } else { port + 100 };
                    let dir = std::env::temp_dir()
                        .join(format!("chorus-scaleout-{}", std::process::id()));
                    run_tcp(&s, bin, port, &dir)
                }
                None => run(&s),
            };
            match result {
                Ok(x) => runs.push(x),
                Err(e) => eprintln!(
                    "scaleout: {} {} {partitions}: {e}",
                    variant.name(),
                    workload.name()
                ),
            }
            bar.inc(1);
        }
        let m = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        rows.push(Row {
            scheme: variant.name(),
            variant,
            workload,
            partitions,
            source: if plan.tcp { "measured-tcp" } else { "measured" },
            throughput_ops_s: m(|r| r.throughput_ops_s),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            moves_per_s: m(|r| r.moves_per_s),
            retries_per_cmd: m(|r| r.retries_per_cmd),
            fallbacks_per_cmd: m(|r| r.fallbacks_per_cmd),
            consults_per_cmd: m(|r| r.consults_per_cmd),
            dynastar: None,
            runs,
        });
    }
    bar.finish_and_clear();
    rows.extend(crate::costmodel::run_plan(plan));
    if plan.schemes.contains(&Variant::Ssmr) && plan.schemes.contains(&Variant::Dssmr) {
        println!("{}", table(&rows).render());
    }
    println!("{}", schemes_table(&rows).render());
    let results = report::Results {
        experiment: "scaleout",
        machine,
        notes: vec![
            format!(
                "Chirper, {} replicas per partition (DS-SMR: plus an oracle of {}), {} client nodes x {} closed-loop clients (window {})",
                plan.replicas, plan.replicas, plan.client_nodes, plan.clients_per_node, plan.window
            ),
            format!(
                "social graph: {} users, {} communities, {} mean followees, locality {}, popularity exponent {}; placement by community, quality {}",
                plan.graph.users, plan.graph.communities, plan.graph.mean_followees, plan.graph.locality, plan.graph.popularity_exponent, plan.placement_quality
            ),
            format!(
                "measured rows: medians of {} run(s) of {:?} after {:?} warm-up, {}",
                plan.runs,
                plan.measure,
                plan.warmup,
                if plan.tcp { "every replica and acceptor a process on loopback" } else { "in-process (threads)" }
            ),
            crate::costmodel::describe(),
            format!(
                "simulated rows: medians of {} run(s) per point, {} virtual warm-up, {:?} measured; 4 client nodes x {} clients, window 2, placement guessed on a cache miss; DS-SMR retry_max {}",
                plan.simulated_runs.max(1),
                plan.simulated
                    .iter()
                    .map(|&k| format!("{k} partitions {:?}", crate::costmodel::warmup(plan, k)))
                    .collect::<Vec<_>>()
                    .join(", "),
                plan.simulated_measure,
                plan.simulated_clients_per_node
                    .map_or("min(8 x partitions, 256)".to_string(), |c| c.to_string()),
                plan.retry_max
            ),
            "paper_ratio: DS-SMR / S-SMR throughput in the DS-SMR paper's Table 1".into(),
            format!(
                "acting users: {}; schemes {}; s-smr*: S-SMR with a METIS placement of the follow graph (5 % imbalance); dynastar: hints every {} ms, a repartition every {} ms, placement method {}",
                plan.active_zipf.map_or("uniform".to_string(), |z| format!("Zipf {z}")),
                plan.schemes.iter().map(|v| v.name()).collect::<Vec<_>>().join(", "),
                plan.dynastar.hint_ms,
                plan.dynastar.repartition_ms,
                plan.dynastar.method.name()
            ),
        ],
        rows: &rows,
    };
    match report::write_json(out, "scaleout.json", &results) {
        Ok(p) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
    plots(plan, &rows, out);
    if plan.dynastar.celebrity_at.is_some() {
        celebrity(plan, out, machine);
    }
    rows
}

/// The dynamic phase at one partition count and scheme (simulated).
#[derive(Clone, Debug, Serialize)]
pub struct CelebrityRow {
    pub scheme: &'static str,
    pub partitions: u32,
    pub source: &'static str,
    pub celebrity_at_s: f64,
    pub repartition_period_s: f64,
    /// Mean throughput over the period before the celebrity appears.
    pub before_ops_s: f64,
    /// The lowest window after it.
    pub lowest_ops_s: f64,
    /// Mean throughput in each of the first repartition periods after it.
    pub periods_ops_s: Vec<f64>,
    /// Periods until a period's mean is back to 80 % of `before_ops_s` (`None`: not within
    /// the run).
    pub recovered_in_periods: Option<u32>,
    /// Medians over the runs of each window: `(virtual seconds, commands / s)`.
    pub series: Vec<(f64, f64)>,
    /// Virtual seconds of the placements computed (first run).
    pub repartitions_at: Vec<f64>,
    pub runs: usize,
}

/// The dynamic phase: a celebrity appears mid-run (simulated, DynaStar and S-SMR*), the
/// throughput over time as an SVG, and how many repartition periods DynaStar takes to come
/// back to 80 % of its earlier throughput.
pub fn celebrity(plan: &Plan, out: &Path, machine: &Machine) -> Vec<CelebrityRow> {
    let Some(at) = plan.dynastar.celebrity_at else {
        return Vec::new();
    };
    let period = Duration::from_millis(plan.dynastar.repartition_ms.max(1));
    let every = (period / 4).max(Duration::from_millis(10));
    let phase = crate::costmodel::Phase {
        celebrity_at: at,
        total: at + period * 6,
        series_every: every,
    };
    let workload = if plan.workloads.contains(&Workload::Mix15) {
        Workload::Mix15
    } else {
        plan.workloads.first().copied().unwrap_or(Workload::Mix15)
    };
    let variants: Vec<Variant> = [Variant::Dynastar, Variant::SsmrStar]
        .into_iter()
        .filter(|v| plan.schemes.contains(v))
        .collect();
    let mut rows = Vec::new();
    for &k in &plan.celebrity_partitions {
        for &v in &variants {
            eprintln!(
                "scaleout (simulated): dynamic phase, {} {} partitions",
                v.name(),
                k
            );
            let runs: Vec<crate::costmodel::SimRun> = (0..plan.simulated_runs.max(1))
                .filter_map(|r| {
                    crate::costmodel::simulate_with(
                        plan,
                        v,
                        workload,
                        k,
                        900 + r as u64,
                        Some(phase),
                    )
                    .map_err(|e| eprintln!("scaleout (simulated) dynamic phase: {e}"))
                    .ok()
                })
                .collect();
            if runs.is_empty() {
                continue;
            }
            let windows = runs
                .iter()
                .map(|r| r.throughput_series.len())
                .min()
                .unwrap_or(0);
            let series: Vec<(f64, f64)> = (0..windows)
                .map(|i| {
                    let t = runs[0].throughput_series[i].0;
                    let y: Vec<f64> = runs.iter().map(|r| r.throughput_series[i].1).collect();
                    (t, median(&y))
                })
                .collect();
            let c = at.as_secs_f64();
            let p = period.as_secs_f64();
            // Windows end at their time stamp.
            let mean = |from: f64, to: f64| {
                let y: Vec<f64> = series
                    .iter()
                    .filter(|(t, _)| *t > from + 1e-9 && *t <= to + 1e-9)
                    .map(|(_, y)| *y)
                    .collect();
                y.iter().sum::<f64>() / y.len().max(1) as f64
            };
            let before = mean(c - p, c);
            let periods: Vec<f64> = (0..6)
                .map(|i| mean(c + p * i as f64, c + p * (i + 1) as f64))
                .collect();
            let recovered = periods
                .iter()
                .position(|x| *x >= 0.8 * before)
                .map(|i| i as u32 + 1);
            rows.push(CelebrityRow {
                scheme: v.name(),
                partitions: k,
                source: "simulated",
                celebrity_at_s: c,
                repartition_period_s: p,
                before_ops_s: before,
                lowest_ops_s: series
                    .iter()
                    .filter(|(t, _)| *t > c)
                    .map(|(_, y)| *y)
                    .fold(f64::INFINITY, f64::min),
                periods_ops_s: periods,
                recovered_in_periods: recovered,
                series,
                repartitions_at: runs[0].repartitions_at.clone(),
                runs: runs.len(),
            });
        }
    }
    let mut t = Table::new(&[
        "scheme",
        "parts",
        "source",
        "before",
        "lowest",
        "periods 1..6 after",
        "back to 80 % in",
    ]);
    for r in &rows {
        t.row(vec![
            r.scheme.into(),
            r.partitions.to_string(),
            r.source.into(),
            report::human(r.before_ops_s),
            report::human(r.lowest_ops_s),
            r.periods_ops_s
                .iter()
                .map(|x| report::human(*x))
                .collect::<Vec<_>>()
                .join(" "),
            r.recovered_in_periods
                .map_or("not within 6 periods".into(), |n| format!("{n} period(s)")),
        ]);
    }
    println!(
        "dynamic phase (simulated): a celebrity appears at {:.1} s; repartition period {:.1} s",
        at.as_secs_f64(),
        period.as_secs_f64()
    );
    println!("{}", t.render());
    let results = report::Results {
        experiment: "scaleout-celebrity",
        machine,
        notes: vec![
            crate::costmodel::describe(),
            format!(
                "dynamic phase: from {:.1} s (virtual), {} in 10,000 commands follow a new celebrity (a user with the fewest followers near a seeded start; followers drawn like acting users) and {} are its posts; workload {}; medians of {} simulated runs per window",
                at.as_secs_f64(),
                plan.celebrity_follow_per_10k,
                plan.celebrity_post_per_10k,
                workload.name(),
                plan.simulated_runs.max(1)
            ),
        ],
        rows: &rows,
    };
    match report::write_json(out, "scaleout-celebrity.json", &results) {
        Ok(p) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
    let series: Vec<Series> = rows
        .iter()
        .map(|r| Series {
            label: format!("{} {} partitions (simulated)", r.scheme, r.partitions),
            points: r.series.clone(),
        })
        .collect();
    let path = out.join("scaleout-celebrity.svg");
    let title = format!(
        "Chirper {}, a celebrity appears at {:.1} s (simulated)",
        workload.name(),
        at.as_secs_f64()
    );
    match report::line_chart(&path, &title, "virtual seconds", "commands / s", &series) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not draw {}: {e}", path.display()),
    }
    rows
}

fn plots(plan: &Plan, rows: &[Row], out: &Path) {
    for &w in &plan.workloads {
        let path = out.join(format!("scaleout-{}.svg", w.name()));
        let mut series = Vec::new();
        for scheme in plan.schemes.iter().map(|v| v.name()) {
            for source in ["measured", "measured-tcp", "simulated"] {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.scheme == scheme && r.workload == w && r.source == source)
                    .map(|r| (f64::from(r.partitions), r.throughput_ops_s))
                    .collect();
                if !points.is_empty() {
                    series.push(Series {
                        label: format!("{scheme} ({source})"),
                        points,
                    });
                }
            }
        }
        let title = format!("Chirper, {} workload", w.name());
        match report::line_chart(&path, &title, "partitions", "commands / s", &series) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("could not draw {}: {e}", path.display()),
        }
    }
    // Moves per second over time, Post workload, DS-SMR.
    let series: Vec<Series> = rows
        .iter()
        .filter(|r| r.scheme == "ds-smr" && r.workload == Workload::Post && r.source != "simulated")
        .filter_map(|r| {
            r.runs.first().map(|run| Series {
                label: format!("{} partitions", r.partitions),
                points: run.moves_series.clone(),
            })
        })
        .collect();
    if !series.is_empty() {
        let path = out.join("scaleout-post-moves.svg");
        match report::line_chart(
            &path,
            "DS-SMR moves per second, Post workload",
            "seconds",
            "moves / s",
            &series,
        ) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("could not draw {}: {e}", path.display()),
        }
    }
}

/// Every scheme side by side per point, with DynaStar's ratios to DS-SMR and S-SMR* and its
/// oracle's figures.
pub fn schemes_table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "workload",
        "parts",
        "source",
        "s-smr",
        "s-smr*",
        "ds-smr",
        "dynastar",
        "dyn/ds",
        "dyn/s*",
        "dyn consults/cmd",
        "repartitions",
        "moved (last / metis)",
        "oracle MiB",
    ]);
    let mut seen: Vec<(Workload, u32, &str)> = Vec::new();
    for r in rows {
        let key = (r.workload, r.partitions, r.source);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let find = |v: Variant| {
            rows.iter().find(|x| {
                x.workload == key.0 && x.partitions == key.1 && x.source == key.2 && x.variant == v
            })
        };
        let tput = |v| find(v).map_or("-".into(), |r: &Row| report::human(r.throughput_ops_s));
        let ratio = |v| match (find(Variant::Dynastar), find(v)) {
            (Some(d), Some(o)) if o.throughput_ops_s > 0.0 => {
                format!("{:.2}", d.throughput_ops_s / o.throughput_ops_s)
            }
            _ => "-".into(),
        };
        let d = find(Variant::Dynastar);
        let dr = d.and_then(|d| d.dynastar.as_ref());
        t.row(vec![
            key.0.name().to_string(),
            key.1.to_string(),
            key.2.to_string(),
            tput(Variant::Ssmr),
            tput(Variant::SsmrStar),
            tput(Variant::Dssmr),
            tput(Variant::Dynastar),
            ratio(Variant::Dssmr),
            ratio(Variant::SsmrStar),
            d.map_or("-".into(), |d| format!("{:.3}", d.consults_per_cmd)),
            dr.map_or("-".into(), |r| r.plans_completed.to_string()),
            dr.map_or("-".into(), |r| {
                format!(
                    "{} / {}",
                    r.last_moved,
                    r.last_metis_moved.map_or("-".into(), |m| m.to_string())
                )
            }),
            dr.map_or("-".into(), |r| {
                format!("{:.1}", r.oracle_bytes as f64 / 1048576.0)
            }),
        ]);
    }
    t
}

/// Table 1 side by side: S-SMR and DS-SMR throughput, their ratio, and the paper's ratio.
pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "workload",
        "parts",
        "source",
        "S-SMR cmds/s",
        "DS-SMR cmds/s",
        "DS/S",
        "paper DS/S",
        "S p50/p99 ms",
        "DS p50/p99 ms",
        "DS moves/s",
        "DS retries/cmd",
    ]);
    let f = |x: f64, d: usize| {
        if x.is_finite() {
            format!("{x:.d$}")
        } else {
            "-".into()
        }
    };
    let mut keys: Vec<(Workload, u32, &str)> = rows
        .iter()
        .map(|r| (r.workload, r.partitions, r.source))
        .collect();
    keys.dedup();
    let mut seen = Vec::new();
    for (w, k, source) in keys {
        if seen.contains(&(w, k, source)) {
            continue;
        }
        seen.push((w, k, source));
        let find = |s: &str| {
            rows.iter().find(|r| {
                r.workload == w && r.partitions == k && r.source == source && r.scheme == s
            })
        };
        let (ss, ds) = (find("s-smr"), find("ds-smr"));
        let tput = |r: Option<&Row>| r.map_or("-".into(), |r| report::human(r.throughput_ops_s));
        let lat = |r: Option<&Row>| {
            r.map_or("-".into(), |r| {
                format!("{}/{}", f(r.p50_us / 1000.0, 1), f(r.p99_us / 1000.0, 1))
            })
        };
        let ratio = match (ss, ds) {
            (Some(a), Some(b)) => f(b.throughput_ops_s / a.throughput_ops_s, 2),
            _ => "-".into(),
        };
        t.row(vec![
            w.name().to_string(),
            k.to_string(),
            source.to_string(),
            tput(ss),
            tput(ds),
            ratio,
            paper_ratio(w, k).map_or("-".into(), |x| f(x, 2)),
            lat(ss),
            lat(ds),
            ds.map_or("-".into(), |r| report::human(r.moves_per_s)),
            ds.map_or("-".into(), |r| f(r.retries_per_cmd, 3)),
        ]);
    }
    t
}
