//! The fault campaign runner with real processes (see the `campaign` crate's documentation).
//!
//! ```text
//! chorus-campaign [--runs 12] [--seed S] [--faults kill-leader,kill-follower,kill-oracle,pause,partition,loss,delay,partial-frames,fd-exhaust,wipe-data]
//!                 [--services btree,chirper,chirper-dynastar,chirper-combined] [--json FILE] [--verbose]
//! ```
//!
//! Exit status 0 when every run passed (skipped runs are listed with their reason), 1 when a
//! run failed, 2 on bad flags or when the campaign could not start.

use campaign::{Fault, Options, ServiceKind};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "Fault campaigns against the replicated services as real processes")]
struct Args {
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

fn options(a: &Args) -> Result<Options, String> {
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
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
