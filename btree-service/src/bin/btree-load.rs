//! Closed-loop load on the replicated B+-tree.
//!
//! ```text
//! btree-load [--mode opt-psmr] [--workers 2] [--workload insert-heavy] [--seconds 5]
//!            [--distribution uniform|zipf|zipf-unscrambled|latest|sequential] [--zipf-theta 0.99]
//!            [--rebalance-every-ms 250] [--ycsb a|b|c|d|e|f [--ycsb-records 1000]]
//! btree-load --config FILE --node C [--workload ...] [--seconds 5]    (one TCP client node)
//! ```
//!
//! In-process by default (a whole deployment, or the `unreplicated` baseline with
//! `--mode unreplicated`); prints throughput, latency percentiles and the opt-PSMR abort rate.

use btree_service::cli::{parse_mode, ConfigFile, DeploymentFile};
use btree_service::flags::{KeyFlags, RebalanceFlags};
use btree_service::load::{
    load_driver, run, Rebalancer, RunSpec, Sequence, TreeDriver, Workload, DONE, MEASURE, WARMUP,
};
use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use btree_service::ycsb::{YcsbDriver, YcsbParams, YcsbResult, YcsbWorkload};
use clap::Parser;
use engine::host::client::Driver;
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
    #[command(flatten)]
    keys: KeyFlags,
    #[command(flatten)]
    rebalance: RebalanceFlags,
    /// Run a YCSB core workload (a to f) instead of --workload, reported as YCSB does.
    #[arg(long)]
    ycsb: Option<YcsbWorkload>,
    /// YCSB records loaded before the run (in-process; over TCP the deployment's pre-filled
    /// keys are the records).
    #[arg(long, default_value_t = YcsbParams::default().records)]
    ycsb_records: u64,
    /// Run without authentication when the deployment file names no secret_file (a TCP node
    /// refuses to start without one otherwise): any process that can reach the ports can join.
    #[arg(long)]
    insecure: bool,
    /// Serve single-worker reads (Get, and a Scan within one worker) off the log: one replica
    /// answers after a read index instead of every replica executing them in order.
    #[arg(long)]
    fast_reads: bool,
}

fn in_process(args: &Args) -> Result<String, String> {
    let mode = match args.mode.as_str() {
        "unreplicated" => None,
        m => Some(parse_mode(m)?),
    };
    if let Some(w) = args.ycsb {
        let mode = mode.ok_or("--ycsb runs on a replicated mode")?;
        let params = YcsbParams {
            records: args.ycsb_records,
            ..YcsbParams::default()
        };
        params.validate()?;
        let p = btree_service::load::InProcess {
            mode,
            workers: args.workers,
            replicas: 2,
            client_nodes: 2,
            window: args.window,
            tree: &params.tree(),
            warmup: Duration::from_secs_f64(args.warmup_s),
            measure: Duration::from_secs_f64(args.seconds),
            pin_cores: true,
            fast_reads: args.fast_reads,
        };
        let r = btree_service::ycsb::run_in_process(&p, w, params, args.clients.div_ceil(2), 1);
        return Ok(format!("{} on {}:\n{}", w.name(), args.mode, r.render()));
    }
    let spec = RunSpec {
        mode,
        workers: args.workers,
        workload: args.workload,
        keys: args.keys.spec()?,
        rebalance: args.rebalance.spec()?,
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
        fast_reads: args.fast_reads,
        seed: 1,
    };
    let r = run(&spec);
    let rebalanced = r.rebalance.map_or(String::new(), |b| {
        format!(
            "; rebalancing: {} rounds, {} moves, {} splits, {} stripes, last change at {}, busiest worker {:.0}% of the load",
            b.rounds,
            b.moves,
            b.splits,
            b.stripes,
            b.settled_after_s.map_or("-".into(), |t| format!("{t:.1} s")),
            b.busiest_share * 100.0
        )
    });
    Ok(format!(
        "{} {} workers {} {}: {:.0} commands/s, p50 {:.0} us, p99 {:.0} us, aborts {:.3}%, misroutes {}{rebalanced}",
        args.mode,
        args.workers,
        args.workload.name(),
        spec.keys.label(),
        r.throughput_ops_s,
        r.p50_us,
        r.p99_us,
        r.abort_rate * 100.0,
        r.misroutes
    ))
}

fn over_tcp(args: &Args, path: &std::path::Path) -> Result<String, String> {
    let mut file = DeploymentFile::read(path)?;
    file.cluster.insecure = args.insecure;
    let me = NodeId(args.node.ok_or("--config needs --node (a client node)")?);
    if file.cluster.node(me).is_none() {
        return Err(format!("node {me} is not in {}", path.display()));
    }
    let service = Arc::new(TreeService::try_new(file.tree.clone())?);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    // This node's sequential keys get a region of their own above the key space.
    let sequence = Sequence {
        base: u64::from(me.0) << 40,
        slot: 0,
        slots: args.clients as u64,
    };
    let seed = u64::from(me.0);
    let load = load_driver(
        args.clients,
        args.workload,
        &file.tree,
        args.keys.spec()?,
        sequence,
        seed,
        phase.clone(),
    );
    if let Some(w) = args.ycsb {
        let params = YcsbParams {
            records: file.tree.prefill,
            fields: 1,
            field_bytes: file.tree.value_bytes,
            ..YcsbParams::default()
        };
        params.validate()?;
        let driver = YcsbDriver::on_tree(
            args.clients,
            w,
            params,
            &file.tree,
            sequence,
            seed,
            phase.clone(),
        );
        let (d, secs) = drive(args, &file, me, service, driver, &phase, args.clients)?;
        let r = YcsbResult::from_latencies(w, &d.latencies, secs, d.errors);
        return Ok(format!("node {me}, {}:\n{}", w.name(), r.render()));
    }
    let rebalancer = args.rebalance.spec()?.map(Rebalancer::new);
    let driver = TreeDriver::new(load, args.clients, rebalancer);
    let clients = driver.clients();
    let (driver, secs) = drive(args, &file, me, service, driver, &phase, clients)?;
    let d = &driver.load;
    let elapsed = Duration::from_secs_f64(secs);
    let q = |x: f64| d.latency_ns.value_at_quantile(x) as f64 / 1000.0;
    Ok(format!(
        "node {me}, {}: {:.0} commands/s, p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us, {} errors",
        args.workload.name(),
        d.completed as f64 / elapsed.as_secs_f64(),
        q(0.5),
        q(0.99),
        q(0.999),
        d.latency_ns.max() as f64 / 1000.0,
        d.errors
    ))
}

/// Runs `driver`'s clients as client node `me` of the deployment over TCP: warm-up, the
/// measured window; the driver back, and the measured seconds.
fn drive<D: Driver<TreeCommand, TreeReply>>(
    args: &Args,
    file: &DeploymentFile,
    me: NodeId,
    service: Arc<TreeService>,
    driver: D,
    phase: &Arc<AtomicU8>,
    clients: usize,
) -> Result<(D, f64), String> {
    let options = ClientOptions {
        clients,
        window: args.window,
        mode: file.mode,
        workers: file.workers,
        resend_ticks: 2000,
        first_index: engine::host::client::incarnation_index(),
        fast_reads: args.fast_reads,
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
    Ok((app.host.driver, elapsed.as_secs_f64()))
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
