//! The replicated B+-tree server.
//!
//! ```text
//! btree-server                                  in-process cluster of 3 replicas, commands on stdin
//! btree-server --config FILE --node N           one node of a TCP deployment (replica or acceptor)
//!              [--metrics-addr 127.0.0.1:9100]  ... serving Prometheus metrics at /metrics
//! btree-server --write-config FILE [--replicas 3 --workers 4 --clients 2 --base-port 7300]
//!              [--durability memory|disk --data-dir DIR]
//! ```
//!
//! A TCP node keeps its consensus logs as the deployment file's `durability` says (see
//! [`groups::config::Durability`]): in memory (the default), or with `durability = "disk"` in
//! write-ahead files under `<data_dir>/node-N/`, synced before acknowledging, so that a whole
//! deployment restarted on the same files still holds every acknowledged command (replicas
//! rebuild the tree by replaying the logs from the start). `--write-config --durability disk`
//! therefore also writes `trim = false`: without checkpoints a trimmed log could not be
//! replayed.
//!
//! Commands on stdin: `get K`, `put K V`, `update K V`, `del K`, `scan LO HI [LIMIT]`, `size`,
//! `quit`.

use btree_service::cli::{parse_command, parse_mode, render_reply, DeploymentFile};
use btree_service::service::{TreeConfig, TreeService};
use clap::Parser;
use engine::client::{HandleApp, Mode};
use engine::layout::Deployment;
use engine::metrics::{
    render_checkpoints, render_node, render_workers, Exposition, MetricsServer, Observed,
};
use engine::psmr::replica::{ReplicaApp, ReplicaOptions};
use groups::config::{Durability, Tuning};
use groups::ids::NodeId;
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::inproc::{App, Idle};
use groups::runtime::tcp::TcpNode;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Serve the replicated B+-tree")]
struct Args {
    /// Deployment file (run one node of it over TCP).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id in the deployment file.
    #[arg(long)]
    node: Option<u32>,
    /// Write a loopback deployment file and exit.
    #[arg(long)]
    write_config: Option<PathBuf>,
    /// smr, psmr or opt-psmr (in-process or --write-config).
    #[arg(long, default_value = "opt-psmr")]
    mode: String,
    /// Workers per replica (in-process or --write-config; default: min(4, cores)).
    #[arg(long)]
    workers: Option<usize>,
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    #[arg(long, default_value_t = 2)]
    clients: usize,
    #[arg(long, default_value_t = 7300)]
    base_port: u16,
    /// Keys pre-filled into the tree.
    #[arg(long, default_value_t = 100_000)]
    prefill: u64,
    /// Pin worker threads to cores.
    #[arg(long)]
    pin: bool,
    /// memory or disk: where the acceptors keep their logs (--write-config; disk needs
    /// --data-dir and turns log trimming off).
    #[arg(long, value_name = "memory|disk")]
    durability: Option<String>,
    /// Directory of the durable logs, node N in DIR/node-N/ (--write-config with --durability
    /// disk; a relative path is resolved against each node's working directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (with --config).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Take a checkpoint every N commands (and at least every 10 s while commands run), so
    /// logs are trimmed below the replicas' checkpoints and a replica that lost its state
    /// recovers by state transfer (with --config; 0: no checkpoints are asked for, but the
    /// replica still takes part in those others ask for and recovers by transfer).
    #[arg(long, value_name = "N", default_value_t = 0)]
    checkpoint_every: u64,
    /// With durability = "disk" (with --config): if this node's data directory is missing
    /// while its peers hold state (it lost its data), copy that state from them before voting
    /// instead of refusing to start. A node in memory always does this.
    #[arg(long)]
    recover: bool,
    /// With --write-config: also write a cluster CA and a certificate and key per node (in
    /// FILE's stem .tls/) and turn on mutual TLS between the nodes.
    #[arg(long)]
    tls: bool,
    /// Run without authentication when the deployment file names no secret_file (a TCP node
    /// refuses to start without one otherwise): any process that can reach the ports can join.
    #[arg(long)]
    insecure: bool,
}

fn main() -> ExitCode {
    engine::binary::init_logging();
    let args = Args::parse();
    let flags = engine::binary::ServerFlags {
        write_config: args.write_config.is_some(),
        config: args.config.is_some(),
        metrics_addr: args.metrics_addr.is_some(),
        durability: args.durability.is_some() || args.data_dir.is_some(),
    };
    let result = engine::binary::check_server_flags(&flags).and_then(|()| {
        if args.recover && (args.config.is_none() || args.write_config.is_some()) {
            return Err("--recover needs --config and --node (a node of a TCP deployment)".into());
        }
        match (&args.write_config, &args.config) {
            (Some(path), _) => write_config(&args, path),
            (None, Some(path)) => serve_tcp(&args, path),
            (None, None) => serve_in_process(&args),
        }
    });
    engine::binary::exit("btree-server", result)
}

fn mode_and_workers(args: &Args) -> Result<(Mode, usize), String> {
    let mode = parse_mode(&args.mode)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match mode {
        Mode::Smr => 1,
        _ => args.workers.unwrap_or(cores.min(4)).max(1),
    };
    Ok((mode, workers))
}

fn tree(args: &Args) -> TreeConfig {
    TreeConfig {
        prefill: args.prefill,
        ..TreeConfig::default()
    }
}

fn write_config(args: &Args, path: &std::path::Path) -> Result<(), String> {
    let (mode, workers) = mode_and_workers(args)?;
    let word = args.durability.as_deref().unwrap_or("memory");
    let durability = Durability::from_words(word, args.data_dir.as_deref())
        .map_err(|e| format!("--durability {word}: {e}"))?;
    let tuning = Tuning {
        // Replicas rebuild their state from the start of the logs (no checkpoints yet).
        trim: durability == Durability::Memory,
        ..Tuning::default()
    };
    let d = Deployment::new(args.replicas, 1, workers, args.clients, tuning)
        .and_then(|d| d.with_loopback_addresses(args.base_port))
        .map_err(|e| e.to_string())?;
    let file = DeploymentFile {
        mode,
        workers,
        replicas: d.replicas.clone(),
        tree: tree(args),
        cluster: engine::binary::with_credentials(
            d.config
                .with_cluster_id(engine::binary::random_cluster_id())
                .with_durability(durability)
                .map_err(|e| e.to_string())?,
            path,
            args.tls,
        )?,
    };
    std::fs::write(path, file.render()?).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "wrote {}: replicas {:?}, acceptors {:?}, client nodes {:?}",
        path.display(),
        d.replicas,
        d.acceptors,
        d.clients
    );
    Ok(())
}

/// A node of a TCP deployment: a replica, or an acceptor-only node.
enum NodeApp {
    Replica(Box<ReplicaApp<TreeService>>),
    Acceptor(Idle),
}

impl App for NodeApp {
    fn attach(&mut self, node: &mut GroupsNode, waker: groups::runtime::Waker) {
        if let NodeApp::Replica(r) = self {
            r.attach(node, waker);
        }
    }
    fn step(&mut self, node: &mut GroupsNode) {
        match self {
            NodeApp::Replica(r) => r.step(node),
            NodeApp::Acceptor(i) => i.step(node),
        }
    }
    fn detach(&mut self, node: &mut GroupsNode) {
        if let NodeApp::Replica(r) = self {
            r.detach(node);
        }
    }
}

fn serve_tcp(args: &Args, path: &std::path::Path) -> Result<(), String> {
    let metrics_addr = args
        .metrics_addr
        .as_deref()
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| format!("--metrics-addr {a:?}: {e} (expected e.g. 127.0.0.1:9100)"))
        })
        .transpose()?;
    let mut file = DeploymentFile::read(path)?;
    file.cluster.insecure = args.insecure;
    let me = NodeId(args.node.ok_or("--config needs --node")?);
    let node_cfg = file
        .cluster
        .node(me)
        .ok_or_else(|| format!("node {me} is not in {}", path.display()))?;
    let replica = file.replicas.contains(&me);
    let accepts = file.cluster.logs.iter().any(|l| l.acceptors.contains(&me));
    if !replica && !accepts {
        return Err(format!(
            "node {me} is a client node ({} subscriptions): run btree-client or btree-load on it",
            node_cfg.subscriptions.len()
        ));
    }
    let node = GroupsNode::from_config(
        Arc::new(file.cluster.clone()),
        me,
        NodeOptions {
            merge_locally: !replica,
            recover: args.recover,
            ..NodeOptions::fresh()
        },
    )
    .map_err(|e| format!("node {me}: durable logs: {e}"))?;
    let mut workers = Vec::new();
    let mut checkpoints = None;
    let app = if replica {
        let service = Arc::new(TreeService::try_new(file.tree.clone())?);
        let options = ReplicaOptions {
            pin_cores: args.pin,
            ..ReplicaOptions::new(file.workers)
        };
        let mut r = ReplicaApp::new(service, options);
        if args.checkpoint_every > 0 {
            let tick_us = file.cluster.tuning.tick_us.max(1);
            r = r.with_checkpoints(engine::checkpoint::CheckpointPolicy {
                every_commands: args.checkpoint_every,
                every_ticks: 10_000_000 / tick_us,
                resend_ticks: 500_000 / tick_us,
            });
        }
        workers = r.share_worker_stats();
        checkpoints = Some(r.share_checkpoints());
        NodeApp::Replica(Box::new(r))
    } else {
        NodeApp::Acceptor(Idle)
    };
    let app = Observed::new(app);
    let _metrics = match metrics_addr {
        None => None,
        Some(addr) => {
            let snapshot = app.snapshot();
            let render = Arc::new(move || {
                let node = snapshot.lock().clone();
                let mut e = Exposition::new();
                render_node(&node, &mut e);
                render_workers(&workers, &mut e);
                if let Some(c) = &checkpoints {
                    render_checkpoints(c, &mut e);
                }
                e.finish()
            });
            let server = MetricsServer::start(addr, render)
                .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
            tracing::info!(node = %me, addr = %server.local_addr(), "serving metrics at http://{}/metrics", server.local_addr());
            Some(server)
        }
    };
    eprintln!(
        "btree-server: node {me} ({}) of {} serving",
        if replica { "replica" } else { "acceptor" },
        path.display()
    );
    TcpNode::bind(node, app)
        .map_err(|e| e.to_string())?
        .run(None)
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn serve_in_process(args: &Args) -> Result<(), String> {
    let (mode, workers) = mode_and_workers(args)?;
    let d = Deployment::new(args.replicas, 1, workers, 1, Tuning::default())
        .map_err(|e| e.to_string())?;
    let service = Arc::new(TreeService::try_new(tree(args))?);
    let options = ReplicaOptions {
        pin_cores: args.pin,
        ..ReplicaOptions::new(workers)
    };
    let mut handle = None;
    let cluster = engine::inproc::start(&d, service.clone(), options, |id| {
        let (app, h) = HandleApp::new(id, 1, service.clone(), mode, workers, 500);
        handle = Some(h);
        app
    });
    let handle = handle.expect("one client node");
    eprintln!(
        "in-process cluster: {} replicas x {workers} workers ({}), {} keys pre-filled; commands: get K | put K V | update K V | del K | scan LO HI [LIMIT] | size | quit",
        args.replicas,
        mode.name(),
        args.prefill
    );
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => continue,
            Some("quit") | Some("exit") => break,
            _ => {}
        }
        match parse_command(&words) {
            Err(e) => println!("error: {e}"),
            Ok(cmd) => match handle.call(0, cmd, Duration::from_secs(10)) {
                Some(Ok(r)) => println!("{}", render_reply(&r)),
                Some(Err(e)) => println!("error: {e}"),
                None => println!("error: no reply within 10 s"),
            },
        }
    }
    drop(cluster);
    Ok(())
}
