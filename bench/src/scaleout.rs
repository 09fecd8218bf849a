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
    };
    Some(r[i])
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub partitions: Vec<u32>,
    pub simulated: Vec<u32>,
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
    /// Virtual measured time of a simulated run.
    pub simulated_measure: Duration,
}

impl Plan {
    pub fn full() -> Self {
        Plan {
            partitions: vec![1, 2, 4, 8],
            simulated: vec![16, 32, 64],
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
            simulated_measure: Duration::from_millis(300),
        }
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
    pub runs: Vec<RunResult>,
}

fn spec(plan: &Plan, scheme: Scheme, workload: Workload, partitions: u32, seed: u64) -> RunSpec {
    let mut section =
        ServiceSection::generated(scheme, partitions, &plan.graph, plan.placement_quality);
    section.retry_max = plan.retry_max;
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
    }
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
    let schemes = [Scheme::Ssmr, Scheme::Dssmr];
    let mut points = Vec::new();
    for &w in &plan.workloads {
        for &k in &plan.partitions {
            for s in schemes {
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
    for (i, &(workload, partitions, scheme)) in points.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..plan.runs {
            bar.set_message(format!(
                "{} {} {} partitions",
                scheme.name(),
                workload.name(),
                partitions
            ));
            let s = spec(plan, scheme, workload, partitions, (i * 10 + r) as u64 + 1);
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
                    scheme.name(),
                    workload.name()
                ),
            }
            bar.inc(1);
        }
        let m = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        rows.push(Row {
            scheme: scheme.name(),
            workload,
            partitions,
            source: if plan.tcp { "measured-tcp" } else { "measured" },
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
    rows.extend(crate::costmodel::run_plan(plan));
    println!("{}", table(&rows).render());
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
                "simulated rows: one run per point, {} virtual warm-up, {:?} measured; 4 client nodes x {} clients, window 2, placement guessed on a cache miss; DS-SMR retry_max {}",
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
        ],
        rows: &rows,
    };
    match report::write_json(out, "scaleout.json", &results) {
        Ok(p) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("could not write results: {e}"),
    }
    plots(plan, &rows, out);
    rows
}

fn plots(plan: &Plan, rows: &[Row], out: &Path) {
    for &w in &plan.workloads {
        let path = out.join(format!("scaleout-{}.svg", w.name()));
        let mut series = Vec::new();
        for scheme in ["s-smr", "ds-smr"] {
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
