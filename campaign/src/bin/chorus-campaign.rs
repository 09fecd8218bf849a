//! The fault campaign runner with real processes (see the `campaign` crate's documentation).
//!
//! ```text
//! chorus-campaign [--runs 12] [--seed S] [--faults kill-leader,kill-follower,kill-oracle,pause,partition,loss,delay,partial-frames,fd-exhaust,wipe-data]
//!                 [--services btree,chirper,chirper-dynastar,chirper-combined] [--json FILE] [--verbose]
//! chorus-campaign soak [--minutes 30] [--seed S] [--clients 4] [--kill-min-s 6] [--kill-max-s 14]
//!                      [--down-min-s 0.5] [--down-max-s 3] [--whole-cluster-every 5]
//!                      [--checkpoint-every 500] [--wal-compact-bytes 2097152] [--json FILE] [--verbose]
//! ```
//!
//! `soak` is the durable soak (`campaign::soak`): the B+-tree in durable mode with trimmed logs,
//! SIGKILLed again and again, its data directories measured against their bound.
//!
//! Exit status 0 when every run passed (skipped runs are listed with their reason), 1 when a
//! run failed, 2 on bad flags or when the campaign could not start.

use campaign::soak::SoakOptions;
use campaign::{Fault, Options, ServiceKind};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    about = "Fault campaigns against the replicated services as real processes",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Number of runs (one fault each).
    #[arg(long, default_value_t = 12)]
    runs: usize,
    /// Index of the first run: `--seed S --first-run I --runs 1` replays run I of seed S.
    #[arg(long, default_value_t = 0)]
    first_run: usize,
    /// Campaign seed (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Faults, in turn: kill-leader, kill-follower, kill-oracle, pause, partition, loss, delay,
    /// partial-frames, fd-exhaust, wipe-data (and control-wipe-all, a negative control the
    /// checks must flag). Default: all but kill-oracle, which is added when chirper is among
    /// the services (the B+-tree has no oracle: its kill-oracle runs are reported as skipped).
    #[arg(long)]
    faults: Option<String>,
    /// Services, in turn: btree (three btree-server processes), chirper (Chirper on DS-SMR:
    /// 2 partitions x 3 replicas and an oracle of 3, nine chirper-server processes),
    /// chirper-dynastar (the same on DynaStar, repartitioning from a random placement),
    /// chirper-combined (the same on DS-SMR with two worker threads in every partition
    /// replica).
    #[arg(long, default_value = "btree")]
    services: String,
    /// Client threads per run.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Packet loss of the loss fault, in percent.
    #[arg(long, default_value_t = 10)]
    loss_percent: u32,
    /// One-way delay of the delay fault, in milliseconds.
    #[arg(long, default_value_t = 40)]
    delay_ms: u64,
    /// Shortest and longest time a fault lasts, in seconds.
    #[arg(long, default_value_t = 2.0)]
    fault_min_s: f64,
    #[arg(long, default_value_t = 3.5)]
    fault_max_s: f64,
    /// Scratch directory (default: the system's temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where to write the JSON summary.
    #[arg(long, default_value = "target/chorus-campaign/summary.json")]
    json: PathBuf,
    #[arg(long)]
    verbose: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The durable soak: the B+-tree in durable mode (logs trimmed below durable checkpoints)
    /// under steady load and repeated SIGKILLs; data directories measured against their bound.
    Soak(SoakArgs),
}

#[derive(clap::Args, Debug)]
struct SoakArgs {
    /// How long the load runs, in minutes (fractions allowed: 1.5).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seed (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Client threads, each with one command outstanding.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Shortest and longest time between kills, in seconds.
    #[arg(long, default_value_t = 6.0)]
    kill_min_s: f64,
    #[arg(long, default_value_t = 14.0)]
    kill_max_s: f64,
    /// Shortest and longest time a killed server stays down, in seconds.
    #[arg(long, default_value_t = 0.5)]
    down_min_s: f64,
    #[arg(long, default_value_t = 3.0)]
    down_max_s: f64,
    /// Every this many kills, all servers are killed at once (0: never).
    #[arg(long, default_value_t = 5)]
    whole_cluster_every: usize,
    /// The servers' `--checkpoint-every` (commands).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// The cluster's `wal_compact_bytes`.
    #[arg(long, default_value_t = 2 << 20)]
    wal_compact_bytes: u64,
    /// Scratch directory (default: the system's temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/chorus-campaign/soak.json")]
    json: PathBuf,
    #[arg(long)]
    verbose: bool,
}

fn soak_options(a: &SoakArgs) -> Result<SoakOptions, String> {
    if !(a.minutes.is_finite() && a.minutes > 0.0 && a.minutes <= 24.0 * 60.0) {
        return Err(format!("--minutes {} (above 0, at most a day)", a.minutes));
    }
    let seed = a.seed.unwrap_or_else(clock_seed);
    let mut o = SoakOptions::new(std::time::Duration::from_secs_f64(a.minutes * 60.0), seed);
    o.clients = a.clients;
    o.kill_every = (a.kill_min_s, a.kill_max_s);
    o.down = (a.down_min_s, a.down_max_s);
    o.whole_cluster_every = a.whole_cluster_every;
    o.checkpoint_every = a.checkpoint_every;
    o.wal_compact_bytes = a.wal_compact_bytes;
    if let Some(w) = &a.work_dir {
        o.work_dir = w.clone();
    }
    o.json = Some(a.json.clone());
    o.verbose = a.verbose;
    o.validate()?;
    Ok(o)
}

fn soak(a: &SoakArgs) -> ExitCode {
    let o = match soak_options(a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chorus-campaign soak: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "soak seed {} ({:.1} minutes; --seed {} replays the same kill plan)",
        o.seed,
        o.duration.as_secs_f64() / 60.0,
        o.seed
    );
    match campaign::soak::soak(&o) {
        Ok(s) => {
            println!("{}", s.summary());
            if s.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("chorus-campaign soak: {e}");
            ExitCode::from(2)
        }
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

fn options(a: &Args) -> Result<Options, String> {
    let seed = a.seed.unwrap_or_else(clock_seed);
    let mut o = Options::new(a.runs, seed);
    o.first_run = a.first_run;
    o.services = ServiceKind::parse_list(&a.services)?;
    match &a.faults {
        Some(f) => o.faults = Fault::parse_list(f)?,
        None if o.services.iter().any(|s| s.is_chirper()) => {
            o.faults.insert(2, Fault::KillOracle);
        }
        None => {}
    }
    if a.clients == 0 || a.clients > 16 {
        return Err(format!("--clients {} (1 to 16)", a.clients));
    }
    o.clients = a.clients;
    if a.loss_percent == 0 || a.loss_percent > 90 {
        return Err(format!("--loss-percent {} (1 to 90)", a.loss_percent));
    }
    o.loss_percent = a.loss_percent;
    if a.delay_ms == 0 || a.delay_ms > 5_000 {
        return Err(format!("--delay-ms {} (1 to 5000)", a.delay_ms));
    }
    o.delay_ms = a.delay_ms;
    if !(a.fault_min_s > 0.0 && a.fault_min_s < a.fault_max_s && a.fault_max_s <= 60.0) {
        return Err(format!(
            "--fault-min-s {} --fault-max-s {} (0 < min < max <= 60)",
            a.fault_min_s, a.fault_max_s
        ));
    }
    o.fault_secs = (a.fault_min_s, a.fault_max_s);
    if let Some(w) = &a.work_dir {
        o.work_dir = w.clone();
    }
    o.json = Some(a.json.clone());
    o.verbose = a.verbose;
    Ok(o)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::Soak(a)) = &args.command {
        return soak(a);
    }
    let o = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chorus-campaign: {e}");
            return ExitCode::from(2);
        }
    };
    match campaign::runner::run(&o) {
        Ok(s) if s.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chorus-campaign: {e}");
            ExitCode::from(2)
        }
    }
}
