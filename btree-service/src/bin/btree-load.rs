//! Closed-loop load on the replicated B+-tree.
//!
//! ```text
//! btree-load [--mode opt-psmr] [--workers 2] [--workload insert-heavy] [--seconds 5]
//! btree-load --config FILE --node C [--workload ...] [--seconds 5]    (one TCP client node)
//! ```
//!
//! In-process by default (a whole deployment, or the `unreplicated` baseline with
//! `--mode unreplicated`); prints throughput, latency percentiles and the opt-PSMR abort rate.

use btree_service::cli::{parse_mode, ConfigFile, DeploymentFile};
use btree_service::load::{driver, run, RunSpec, Workload, DONE, MEASURE, WARMUP};
use btree_service::service::{TreeConfig, TreeService};
use clap::Parser;
use engine::psmr::proxy::ClientOptions;
use groups::ids::NodeId;
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::tcp::TcpNode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Closed-loop load on the replicated B+-tree")]
struct Args {
    /// smr, psmr, opt-psmr or unreplicated (in-process).
    #[arg(long, default_value = "opt-psmr")]
    mode: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "insert-heavy")]
    workload: Workload,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 16)]
    window: usize,
    #[arg(long, default_value_t = 1_000_000)]
    prefill: u64,
    /// Deployment file: drive it as client node `--node` over TCP.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    node: Option<u32>,
}

fn in_process(args: &Args) -> Result<String, String> {
    let mode = match args.mode.as_str() {
        "unreplicated" => None,
        m => Some(parse_mode(m)?),
    };
    let spec = RunSpec {
        mode,
        workers: args.workers,
        workload: args.workload,
        tree: TreeConfig {
            prefill: args.prefill,
            ..TreeConfig::default()
        },
        warmup: Duration::from_secs_f64(args.warmup_s),
        measure: Duration::from_secs_f64(args.seconds),
        replicas: 2,
        client_nodes: 2,
        clients_per_node: args.clients.div_ceil(2),
        window: args.window,
        pin_cores: true,
        seed: 1,
    };
    let r = run(&spec);
    Ok(format!(
        "{} {} workers {}: {:.0} commands/s, p50 {:.0} us, p99 {:.0} us, aborts {:.3}%",
        args.mode,
        args.workers,
        args.workload.name(),
        r.throughput_ops_s,
        r.p50_us,
        r.p99_us,
        r.abort_rate * 100.0
    ))
}

fn over_tcp(args: &Args, path: &std::path::Path) -> Result<String, String> {
    let file = DeploymentFile::read(path)?;
    let me = NodeId(args.node.ok_or("--config needs --node (a client node)")?);
    if file.cluster.node(me).is_none() {
        return Err(format!("node {me} is not in {}", path.display()));
    }
    let service = Arc::new(TreeService::try_new(file.tree.clone())?);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let driver = driver(
        args.clients,
        args.workload,
        &file.tree,
        u64::from(me.0),
        phase.clone(),
    );
    let options = ClientOptions {
        clients: args.clients,
        window: args.window,
        mode: file.mode,
        workers: file.workers,
        resend_ticks: 2000,
        first_index: engine::host::client::incarnation_index(),
    };
    let app = engine::psmr::proxy::client_app(me, service, options, driver);
    let node = GroupsNode::in_memory(Arc::new(file.cluster.clone()), me, NodeOptions::fresh());
    let tcp = TcpNode::bind(node, app).map_err(|e| e.to_string())?;
    let stop = tcp.stop_flag();
    let thread = std::thread::spawn(move || tcp.run(None));
    std::thread::sleep(Duration::from_secs_f64(args.warmup_s));
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let app = thread
        .join()
        .map_err(|_| "client thread panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let d = &app.host.driver;
    let q = |x: f64| d.latency_ns.value_at_quantile(x) as f64 / 1000.0;
    Ok(format!(
        "node {me}, {}: {:.0} commands/s, p50 {:.0} us, p99 {:.0} us, {} errors",
        args.workload.name(),
        d.completed as f64 / elapsed.as_secs_f64(),
        q(0.5),
        q(0.99),
        d.errors
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let out = match &args.config {
        Some(p) => over_tcp(&args, p),
        None => in_process(&args),
    };
    match out {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("btree-load: {e}");
            ExitCode::from(2)
        }
    }
}
