//! `cargo run --release -p bench [EXPERIMENT]`: Chorus's experiments.
//!
//! With no experiment, runs the default suite in-process (short versions of every
//! experiment), prints each table, and writes result files (`*.json`, `*.svg`) into
//! `bench-results/`.

mod checkpoint_stall;
mod codec;
mod combined;
mod combined_cost;
mod costmodel;
mod machine;
mod multicast;
mod multicast_latency;
mod peers;
mod recovery;
mod report;
mod scaleout;
mod scaleup;
mod skew;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Chorus experiments: scale-up and scale-out state-machine replication")]
struct Cli {
    /// Directory for result files.
    #[arg(long, global = true, default_value = "bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    experiment: Option<Experiment>,
}

#[derive(Subcommand)]
enum Experiment {
    /// What a durable checkpoint's write costs the clients: three btree-server processes
    /// with durable logs, checkpoints written on a writer thread against on the node's
    /// thread, side by side (build them first: cargo build --release -p btree-service).
    CheckpointStall {
        /// Keys pre-filled into the tree.
        #[arg(long, default_value_t = 200_000)]
        keys: u64,
        /// Commands between checkpoints.
        #[arg(long, default_value_t = 3000)]
        checkpoint_every: u64,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Runs per writer (interleaved; the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Recovery time of a B+-tree replica by state transfer as a function of state size:
    /// checkpoint size, worker pause, transfer, install and catch-up (four btree-server
    /// processes on loopback; build them first: cargo build --release -p btree-service).
    Recovery {
        /// Keys pre-filled into the tree (comma separated; default 10000,100000,1000000).
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<u64>>,
        /// Workers per replica.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Commands between checkpoints.
        #[arg(long, default_value_t = 2000)]
        checkpoint_every: u64,
    },
    /// The cost of encoding and decoding a command's request and reply: the engine's wire
    /// encoding (postcard) against bitcode's serde mode, and the groups TCP frames (postcard,
    /// encoded in place; bitcode before frame version 3), side by side.
    Codec {
        /// Timed loops per message and codec (the table shows medians).
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Round trips per loop.
        #[arg(long, default_value_t = 200_000)]
        iterations: u32,
    },
    /// Atomic multicast throughput and latency: 1/2/4/8 groups, 0/10/100% multi-group
    /// messages, 64 B and 1 KiB payloads, two batch settings.
    Multicast {
        /// Runs per configuration (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Only these group counts (comma separated).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<u32>>,
    },
    /// One-group multicast latency (p50/p99/p99.9) against offered load, open loop: the peak
    /// closed loop first, then fractions of it.
    MulticastLatency {
        /// Runs per point (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Offered loads as fractions of the peak (comma separated).
        #[arg(long, value_delimiter = ',')]
        fractions: Option<Vec<f64>>,
        /// Only per-drain or only 1-tick batching.
        #[arg(long)]
        batching: Option<String>,
    },
    /// The replicated B+-tree as workers are added: smr, psmr, opt-psmr and unreplicated, on
    /// four workloads, 1 to every core.
    Scaleup {
        /// Runs per point (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Only these worker counts (default: 1, 2, 4, ... and every core).
        #[arg(long, value_delimiter = ',')]
        workers: Option<Vec<usize>>,
        /// Only these workloads (read-only, read-update, insert-heavy, mixed-scans).
        #[arg(long, value_delimiter = ',')]
        workloads: Option<Vec<btree_service::load::Workload>>,
        /// Keys pre-filled into the tree.
        #[arg(long, default_value_t = 1_000_000)]
        prefill: u64,
        /// Do not pin worker threads to cores.
        #[arg(long)]
        no_pin: bool,
        /// Key distributions (comma separated: uniform, zipf, zipf-unscrambled, latest,
        /// sequential); every row says which.
        #[arg(long, value_delimiter = ',', default_value = "uniform")]
        distribution: Vec<btree_service::keys::Distribution>,
        /// Zipfian exponent.
        #[arg(long, default_value_t = btree_service::keys::THETA_DEFAULT)]
        zipf_theta: f64,
        /// psmr and opt-psmr: a Rebalance every this many milliseconds (0: none).
        #[arg(long, default_value_t = 0)]
        rebalance_every_ms: u64,
        /// Only these modes (comma separated: smr, smr+ri, psmr, psmr+ri, opt-psmr, opt-psmr+ri, unreplicated; `+ri`: single-worker reads served off the log after a read index).
        #[arg(long, value_delimiter = ',')]
        modes: Option<Vec<String>>,
    },
    /// Skewed keys on opt-PSMR with 2 workers, insert-heavy: Zipf 0.99 (scrambled and not)
    /// and sequential inserts against uniform keys, with and without rebalancing, side by
    /// side; time to settle, ranges moved, the busiest worker's share.
    Skew {
        /// Runs per point (the table shows medians; points interleaved run by run).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Warm-up seconds per run (the rebalancer must settle in it).
        #[arg(long, default_value_t = 4.0)]
        warmup: f64,
        /// Milliseconds between rebalancing rounds.
        #[arg(long, default_value_t = 250)]
        rebalance_every_ms: u64,
        /// Keys pre-filled into the tree.
        #[arg(long, default_value_t = 1_000_000)]
        prefill: u64,
        /// Workers per replica.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Workload.
        #[arg(long, default_value = "insert-heavy")]
        workload: btree_service::load::Workload,
    },
    /// Chorus against etcd and ZooKeeper: three server processes each on loopback, the same
    /// closed-loop load (write shares x outstanding requests), throughput, p50/p99 latency and
    /// Chorus's ratio to each. etcd and ZooKeeper need `--features peers` (and apt-get
    /// installs their Debian packages when missing).
    Peers {
        /// Systems: chorus-memory, chorus-memory-ri, chorus-disk, chorus-memory-tls, etcd, zookeeper (default: all but chorus-memory-tls).
        #[arg(long, value_delimiter = ',')]
        systems: Option<Vec<peers::System>>,
        /// Write shares in percent, the rest reads (default 100,50,5).
        #[arg(long, value_delimiter = ',')]
        writes: Option<Vec<u32>>,
        /// Requests each client keeps outstanding (default 1,4,16,64).
        #[arg(long, value_delimiter = ',')]
        outstanding: Option<Vec<usize>>,
        /// Client sessions (connections).
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Measured seconds per point.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Warm-up seconds per point.
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
        /// Keys, all written before measuring.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// Chorus mode: smr, psmr or opt-psmr (smr: one worker per replica, the fastest on a
        /// 2-core machine for single-key commands).
        #[arg(long, default_value = "smr")]
        chorus_mode: String,
        /// Chorus workers per replica (psmr, opt-psmr).
        #[arg(long, default_value_t = 2)]
        chorus_workers: usize,
        /// Do not apt-get install missing etcd-server / zookeeper packages (fail instead).
        #[arg(long)]
        no_install: bool,
        /// Runs of the whole comparison (every system restarted per run; the table shows
        /// medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// YCSB core workloads (comma separated, a to f, or none; etcd runs those without
        /// scans: a, b, c, d, f).
        #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f")]
        ycsb: Vec<String>,
        /// Requests each client keeps outstanding in the YCSB runs.
        #[arg(long, default_value_t = 16)]
        ycsb_outstanding: usize,
        /// YCSB records loaded before each workload (YCSB's published recordcount is 1000).
        #[arg(long, default_value_t = 1000)]
        ycsb_records: u64,
        /// Skip the write-share mixes (YCSB only).
        #[arg(long)]
        no_mixes: bool,
    },
    /// Combined scale-up and scale-out: Chirper with partitions x workers per partition
    /// (1/2/4/8 x 1/2/4/8), measured in-process where this machine has the cores, simulated
    /// with the scale-out cost model for the whole grid.
    Combined {
        /// Runs per measured point (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Partition counts (default 1,2,4,8).
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<u32>>,
        /// Workers per partition (default 1,2,4,8).
        #[arg(long, value_delimiter = ',')]
        workers: Option<Vec<u32>>,
        /// Workloads (default timeline, mix).
        #[arg(long, value_delimiter = ',')]
        workloads: Option<Vec<chirper::load::Workload>>,
        /// Measure in-process the points of at most this many cores (default: this
        /// machine's CPUs).
        #[arg(long)]
        measured_cores: Option<u32>,
        /// Skip the simulated grid.
        #[arg(long)]
        no_simulate: bool,
        /// Simulated runs per point.
        #[arg(long, default_value_t = 1)]
        sim_runs: usize,
        /// Virtual measured seconds per simulated run.
        #[arg(long, default_value_t = 0.2)]
        sim_seconds: f64,
        /// s-smr or ds-smr.
        #[arg(long, default_value = "s-smr")]
        scheme: scaleout::Variant,
    },
    /// What the combined mode costs: CPU per command of 1 partition x 2 worker threads
    /// against plain P-SMR with 2 workers (and a plain S-SMR partition), on the engine's
    /// reference key-value services, with a share of cross-worker commands.
    CombinedCost {
        /// Runs (the table shows medians; the systems alternate within each run).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Shares of cross-worker transfers, one point each (default 0,0.05).
        #[arg(long, value_delimiter = ',')]
        cross: Option<Vec<f64>>,
        /// Closed-loop clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
    },
    /// Chirper on S-SMR against DS-SMR (the DS-SMR paper's Table 1): Timeline, Post,
    /// Follow/unfollow and Mix on 1/2/4/8 partitions measured, 16/32/64 simulated.
    Scaleout {
        /// Runs per point (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Measured partition counts.
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<u32>>,
        /// Simulated partition counts (default 16, 32, 64).
        #[arg(long, value_delimiter = ',')]
        simulate: Option<Vec<u32>>,
        /// Skip the simulated rows (measured rows only).
        #[arg(long)]
        no_simulate: bool,
        /// Only these workloads (timeline, post, follow-unfollow, mix).
        #[arg(long, value_delimiter = ',')]
        workloads: Option<Vec<chirper::load::Workload>>,
        /// Users of the social graph.
        #[arg(long)]
        users: Option<u32>,
        /// Probability that a follow edge stays inside its community.
        #[arg(long)]
        locality: Option<f64>,
        /// How well the initial placement follows communities (1: perfectly, 0: random).
        #[arg(long)]
        quality: Option<f64>,
        /// Run every replica and acceptor as its own process on loopback.
        #[arg(long)]
        tcp: bool,
        /// Skip the measured runs (simulated rows only).
        #[arg(long)]
        simulated_only: bool,
        /// Virtual warm-up seconds of each simulated run (default: 0.3, or 0.04 per
        /// partition if longer).
        #[arg(long)]
        sim_warmup: Option<f64>,
        /// Closed-loop clients per client node (4 nodes) in simulated runs (default: 8 per
        /// partition, between 16 and 256).
        #[arg(long)]
        sim_clients: Option<usize>,
        /// DS-SMR attempts before the S-SMR fallback (default 3).
        #[arg(long)]
        retry_max: Option<u32>,
        /// Virtual measured seconds of each simulated run (default 0.3).
        #[arg(long)]
        sim_seconds: Option<f64>,
        /// The experiment's preset: `full` (the DS-SMR paper's Table 1: s-smr, ds-smr, four
        /// workloads), `dynastar` (the DynaStar paper's social network: the paper-sized graph,
        /// Zipf 0.95 active users, Mix 85/15 and Post, s-smr, s-smr*, ds-smr, dynastar, the
        /// dynamic celebrity phase) or `dynastar-weak` (the same on a random graph without
        /// communities).
        #[arg(long, default_value = "full")]
        preset: String,
        /// Only these schemes: s-smr, s-smr* (S-SMR with a METIS placement), ds-smr,
        /// dynastar.
        #[arg(long, value_delimiter = ',')]
        schemes: Option<Vec<scaleout::Variant>>,
        /// Simulated runs per point (default 1; the dynastar presets 3).
        #[arg(long)]
        sim_runs: Option<usize>,
        /// DynaStar: a repartition every this many ms (virtual in simulated runs).
        #[arg(long)]
        repartition_ms: Option<u64>,
        /// DynaStar: placement method (incremental, metis, best).
        #[arg(long)]
        placement_method: Option<String>,
        /// The dynamic phase: a celebrity appears this many (virtual) seconds into the run;
        /// 0: no dynamic phase (the dynastar presets default to 2).
        #[arg(long)]
        celebrity_at: Option<f64>,
        /// Partition counts of the dynamic phase (default 8).
        #[arg(long, value_delimiter = ',')]
        celebrity_partitions: Option<Vec<u32>>,
    },
    /// S-SMR and DS-SMR with Chirper's timelines ordered through the logs against served off
    /// the log by one replica after a read index (fast reads), in-process, runs interleaved.
    ScaleoutReads {
        /// Runs per point and setting (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Partition counts (default 1, 2).
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2])]
        partitions: Vec<u32>,
        /// Workloads (default timeline, mix).
        #[arg(long, value_delimiter = ',')]
        workloads: Option<Vec<chirper::load::Workload>>,
        /// Schemes: s-smr, ds-smr.
        #[arg(long, value_delimiter = ',')]
        schemes: Option<Vec<scaleout::Variant>>,
        /// Users of the social graph.
        #[arg(long)]
        users: Option<u32>,
    },
}

fn main() {
    let cli = Cli::parse();
    let machine = machine::Machine::detect();
    println!("machine: {}", machine.describe());
    match cli.experiment {
        None => {
            println!(
                "default suite (in-process, short runs); see --help for the full experiments\n"
            );
            println!("== codec ==");
            codec::run(&cli.out, &machine, 50_000, 3);
            println!("\n== multicast ==");
            multicast::run(&multicast::Plan::quick(), &cli.out, &machine);
            println!("\n== multicast-latency ==");
            multicast_latency::run(&multicast_latency::Plan::quick(), &cli.out, &machine);
            println!("\n== scaleup ==");
            scaleup::run_plan(&scaleup::Plan::quick(&machine), &cli.out, &machine);
            println!("\n== scaleout ==");
            scaleout::run_plan(&scaleout::Plan::quick(), &cli.out, &machine);
            println!("\n== combined ==");
            combined::run_plan(&combined::Plan::quick(), &cli.out, &machine);
            println!("\n== combined-cost ==");
            combined_cost::run_plan(&combined_cost::Plan::quick(), &cli.out, &machine);
        }
        Some(Experiment::CombinedCost {
            runs,
            seconds,
            cross,
            clients,
        }) => {
            let mut plan = combined_cost::Plan::full();
            plan.runs = runs.max(1);
            plan.measure = Duration::from_secs_f64(seconds);
            plan.clients = clients.max(1);
            if let Some(c) = cross {
                if let Some(bad) = c.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                    eprintln!("combined-cost: --cross {bad} is not a share between 0 and 1");
                    std::process::exit(2);
                }
                plan.cross = c;
            }
            combined_cost::run_plan(&plan, &cli.out, &machine);
        }
        Some(Experiment::Scaleup {
            runs,
            seconds,
            workers,
            workloads,
            prefill,
            no_pin,
            distribution,
            zipf_theta,
            rebalance_every_ms,
            modes,
        }) => {
            let mut plan = scaleup::Plan::full(&machine);
            if let Some(names) = modes {
                plan.modes = match scaleup::RunMode::parse_list(&names) {
                    Ok(m) => m,
                    Err(bad) => {
                        eprintln!("scaleup: {bad}");
                        std::process::exit(2);
                    }
                };
            }
            plan.runs = runs.max(1);
            plan.measure = Duration::from_secs_f64(seconds);
            plan.tree.prefill = prefill;
            plan.pin_cores = !no_pin;
            plan.distributions = distribution
                .into_iter()
                .map(|d| btree_service::keys::KeyDistribution {
                    theta: zipf_theta,
                    ..btree_service::keys::KeyDistribution::of(d)
                })
                .collect();
            if let Some(bad) = plan.distributions.iter().find_map(|d| d.validate().err()) {
                eprintln!("scaleup: {bad}");
                std::process::exit(2);
            }
            plan.rebalance = (rebalance_every_ms > 0).then(|| {
                btree_service::load::RebalanceSpec::every(Duration::from_millis(rebalance_every_ms))
            });
            if let Some(w) = workers {
                plan.workers = w;
            }
            if let Some(w) = workloads {
                plan.workloads = w;
            }
            scaleup::run_plan(&plan, &cli.out, &machine);
        }
        Some(Experiment::Combined {
            runs,
            seconds,
            partitions,
            workers,
            workloads,
            measured_cores,
            no_simulate,
            sim_runs,
            sim_seconds,
            scheme,
        }) => {
            if scheme == scaleout::Variant::Dynastar {
                eprintln!(
                    "combined: s-smr, s-smr* or ds-smr (DynaStar runs one worker per partition)"
                );
                std::process::exit(2);
            }
            let mut plan = combined::Plan::full(&machine);
            plan.variant = scheme;
            plan.base.runs = runs.max(1);
            plan.base.measure = Duration::from_secs_f64(seconds);
            plan.base.simulated_runs = sim_runs.max(1);
            plan.base.simulated_measure = Duration::from_secs_f64(sim_seconds);
            plan.simulate = !no_simulate;
            if let Some(p) = partitions {
                plan.partitions = p;
            }
            if let Some(w) = workers {
                plan.workers = w;
            }
            if let Some(w) = workloads {
                plan.base.workloads = w;
            }
            if let Some(c) = measured_cores {
                plan.measured_cores_max = c;
            }
            combined::run_plan(&plan, &cli.out, &machine);
        }
        Some(Experiment::Scaleout {
            runs,
            seconds,
            partitions,
            simulate,
            workloads,
            users,
            locality,
            quality,
            tcp,
            simulated_only,
            no_simulate,
            sim_warmup,
            sim_seconds,
            sim_clients,
            retry_max,
            preset,
            schemes,
            sim_runs,
            repartition_ms,
            placement_method,
            celebrity_at,
            celebrity_partitions,
        }) => {
            let mut plan = match preset.as_str() {
                "full" => scaleout::Plan::full(),
                "dynastar" => scaleout::Plan::dynastar(),
                "dynastar-weak" => scaleout::Plan::dynastar_weak(),
                other => {
                    eprintln!("unknown preset {other:?}: full, dynastar, dynastar-weak");
                    std::process::exit(2);
                }
            };
            if let Some(s) = schemes {
                plan.schemes = s;
            }
            if let Some(r) = sim_runs {
                plan.simulated_runs = r.max(1);
            }
            if let Some(r) = repartition_ms {
                plan.dynastar.repartition_ms = r.max(1);
            }
            if let Some(m) = placement_method {
                match engine::partitioned::dynastar::placement::Method::parse(&m) {
                    Ok(m) => plan.dynastar.method = m,
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(2);
                    }
                }
            }
            if let Some(c) = celebrity_at {
                plan.dynastar.celebrity_at = (c > 0.0).then(|| Duration::from_secs_f64(c));
            }
            if let Some(c) = celebrity_partitions {
                plan.celebrity_partitions = c;
            }
            plan.runs = runs.max(1);
            plan.measure = Duration::from_secs_f64(seconds);
            plan.tcp = tcp;
            if let Some(p) = partitions {
                plan.partitions = p;
            }
            if let Some(s) = simulate {
                plan.simulated = s;
            }
            if let Some(w) = workloads {
                plan.workloads = w;
            }
            if let Some(u) = users {
                plan.graph.users = u;
            }
            if let Some(l) = locality {
                plan.graph.locality = l;
            }
            if let Some(q) = quality {
                plan.placement_quality = q;
            }
            if simulated_only {
                plan.partitions.clear();
            }
            if no_simulate {
                plan.simulated.clear();
            }
            if let Some(w) = sim_warmup {
                plan.simulated_warmup = Some(Duration::from_secs_f64(w));
            }
            plan.simulated_clients_per_node = sim_clients;
            if let Some(r) = retry_max {
                plan.retry_max = r.max(1);
            }
            if let Some(m) = sim_seconds {
                plan.simulated_measure = Duration::from_secs_f64(m);
            }
            scaleout::run_plan(&plan, &cli.out, &machine);
        }
        Some(Experiment::ScaleoutReads {
            runs,
            seconds,
            partitions,
            workloads,
            schemes,
            users,
        }) => {
            let mut plan = scaleout::Plan::full();
            plan.runs = runs.max(1);
            plan.measure = Duration::from_secs_f64(seconds);
            plan.partitions = partitions;
            plan.workloads = workloads.unwrap_or_else(|| {
                vec![
                    chirper::load::Workload::Timeline,
                    chirper::load::Workload::Mix,
                ]
            });
            if let Some(s) = schemes {
                plan.schemes = s;
            }
            if let Some(u) = users {
                plan.graph.users = u;
            }
            scaleout::reads(&plan, &cli.out, &machine);
        }
        Some(Experiment::Peers {
            systems,
            writes,
            outstanding,
            clients,
            seconds,
            warmup,
            keys,
            value_bytes,
            chorus_mode,
            chorus_workers,
            no_install,
            runs,
            ycsb,
            ycsb_outstanding,
            ycsb_records,
            no_mixes,
        }) => {
            let ycsb = if ycsb.iter().any(|w| w == "none") {
                Ok(Vec::new())
            } else {
                ycsb.iter().map(|w| w.parse()).collect()
            };
            let ycsb = ycsb.unwrap_or_else(|e: String| {
                eprintln!("peers: --ycsb: {e}");
                std::process::exit(2);
            });
            let mut plan = peers::Plan {
                clients,
                runs,
                keys,
                value_bytes,
                chorus_workers,
                install: !no_install,
                ycsb,
                ycsb_outstanding,
                ycsb_params: btree_service::ycsb::YcsbParams {
                    records: ycsb_records,
                    ..Default::default()
                },
                ..peers::Plan::default()
            };
            if no_mixes {
                plan.write_pcts.clear();
            }
            if let Some(s) = systems {
                plan.systems = s;
            }
            if let Some(w) = writes {
                plan.write_pcts = w;
            }
            if let Some(o) = outstanding {
                plan.outstanding = o;
            }
            let durations = [("--seconds", seconds), ("--warmup", warmup)];
            let result = durations
                .iter()
                .find(|(_, v)| !v.is_finite() || *v < 0.0 || *v > 3600.0)
                .map_or(Ok(()), |(f, v)| Err(format!("{f} {v}: 0 to 3600 seconds")))
                .and_then(|()| btree_service::cli::parse_mode(&chorus_mode))
                .and_then(|mode| {
                    plan.chorus_mode = mode;
                    plan.measure = Duration::from_secs_f64(seconds);
                    plan.warmup = Duration::from_secs_f64(warmup);
                    peers::run(&plan, &cli.out, &machine).map(|_| ())
                });
            if let Err(e) = result {
                eprintln!("peers: {e}");
                std::process::exit(2);
            }
        }
        Some(Experiment::Codec { runs, iterations }) => {
            codec::run(&cli.out, &machine, iterations.max(20), runs.max(1));
        }
        Some(Experiment::Skew {
            runs,
            seconds,
            warmup,
            rebalance_every_ms,
            prefill,
            workers,
            workload,
        }) => {
            let plan = skew::Plan {
                runs: runs.max(1),
                measure: Duration::from_secs_f64(seconds),
                warmup: Duration::from_secs_f64(warmup),
                every: Duration::from_millis(rebalance_every_ms.max(1)),
                prefill,
                workers: workers.max(2),
                workload,
                ..skew::Plan::default()
            };
            skew::run(&plan, &cli.out, &machine);
        }
        Some(Experiment::CheckpointStall {
            keys,
            checkpoint_every,
            seconds,
            runs,
        }) => {
            let plan = checkpoint_stall::Plan {
                keys,
                checkpoint_every: checkpoint_every.max(1),
                seconds: seconds.max(1.0),
                runs: runs.max(1),
            };
            checkpoint_stall::run(&plan, &cli.out, &machine);
        }
        Some(Experiment::Recovery {
            sizes,
            workers,
            checkpoint_every,
        }) => {
            let plan = recovery::Plan {
                sizes: sizes.unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]),
                workers: workers.max(1),
                checkpoint_every: checkpoint_every.max(1),
            };
            recovery::run(&plan, &cli.out, &machine);
        }
        Some(Experiment::Multicast {
            runs,
            seconds,
            groups,
        }) => {
            let mut plan = multicast::Plan::full();
            plan.runs = runs.max(1);
            plan.measure = Duration::from_secs_f64(seconds);
            if let Some(g) = groups {
                plan.groups = g;
            }
            multicast::run(&plan, &cli.out, &machine);
        }
        Some(Experiment::MulticastLatency {
            runs,
            seconds,
            fractions,
            batching,
        }) => {
            let mut plan = multicast_latency::Plan::full();
            plan.runs = runs.max(1);
            plan.measure = Duration::from_secs_f64(seconds);
            if let Some(f) = fractions {
                if f.iter().any(|&x| !(x > 0.0 && x.is_finite())) {
                    eprintln!("--fractions: each must be a positive number, got {f:?}");
                    std::process::exit(2);
                }
                plan.fractions = f;
            }
            if let Some(b) = batching {
                plan.batching = match b.as_str() {
                    "per-drain" => vec![multicast::Batching::PerDrain],
                    "1-tick" => vec![multicast::Batching::OneTick],
                    other => {
                        eprintln!("--batching: per-drain or 1-tick, got {other:?}");
                        std::process::exit(2);
                    }
                };
            }
            multicast_latency::run(&plan, &cli.out, &machine);
        }
    }
}
