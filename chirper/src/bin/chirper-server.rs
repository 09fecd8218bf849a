//! The Chirper server.
//!
//! ```text
//! chirper-server                                  in-process deployment, commands on stdin
//! chirper-server --config FILE --node N           one node of a TCP deployment
//!                [--metrics-addr 127.0.0.1:9100]  ... serving Prometheus metrics at /metrics
//!                [--checkpoint-every N]           ... checkpointing every N commands
//! chirper-server --write-config FILE [--scheme ds-smr --partitions 2 --replicas 3 ...]
//!                [--durability memory|disk --data-dir DIR]
//! ```
//!
//! A TCP node keeps its consensus logs as the deployment file's `durability` says (see
//! [`groups::config::Durability`]): in memory (the default), or with `durability = "disk"` in
//! write-ahead files under `<data_dir>/node-N/`, synced before acknowledging, so that a whole
//! deployment restarted on the same files still holds every acknowledged command (replicas
//! rebuild their partitions and the oracle by replaying the logs from the start).
//! `--write-config --durability disk` therefore also writes `trim = false`: without
//! checkpoints a trimmed log could not be replayed.
//!
//! With `--checkpoint-every N` a replica merges its logs itself, takes part in checkpoints
//! (asking for one every N handled multicasts, and at least every 10 s while it handles
//! any), reports them so that the logs are trimmed below every replica's checkpoint, and,
//! when it finds a log trimmed past it (restarted empty, or cut off too long), recovers by
//! state transfer from a peer (see `engine::partitioned::checkpoint`). Give it to every
//! replica of a deployment; without it nothing changes.
//!
//! Commands on stdin: `create U`, `post U TEXT`, `follow A B`, `unfollow A B`, `timeline U`,
//! `quit`.

use chirper::cli::{parse_command, parse_scheme, render_response, DeploymentFile, ServiceSection};
use chirper::graph::GraphSpec;
use chirper::service::Chirper;
use clap::Parser;
use engine::client::HandleApp;
use engine::metrics::{
    render_checkpoints, render_node, render_oracle, render_partition, Exposition, MetricsServer,
    Observed,
};
use engine::partitioned::client::{ClientOptions, ScaleOutClient};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::replica::{Role, ScaleOutReplica, SharedOracleStats, SharedServerStats};
use engine::partitioned::ServerOptions;
use engine::wire::ClientId;
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
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Serve Chirper on S-SMR or DS-SMR")]
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
    /// s-smr or ds-smr (in-process or --write-config).
    #[arg(long, default_value = "ds-smr")]
    scheme: String,
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Replicas per partition (and of the oracle).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    #[arg(long, default_value_t = 2)]
    clients: usize,
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Users of the generated social graph.
    #[arg(long, default_value_t = 1000)]
    users: u32,
    #[arg(long, default_value_t = 10)]
    communities: u32,
    /// How well the initial placement follows communities (1: perfectly, 0: random).
    #[arg(long, default_value_t = 1.0)]
    placement_quality: f64,
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
    /// Take a checkpoint every N handled multicasts (and at least every 10 s while any are
    /// handled), so logs are trimmed below the replicas' checkpoints and a replica that lost
    /// its state recovers by state transfer (with --config; 0, the default: no checkpoints,
    /// the replica replays the logs).
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

enum NodeApp {
    Replica(Box<ScaleOutReplica<Chirper>>, Option<StateHash>),
    Acceptor(Idle),
}

impl App for NodeApp {
    fn step(&mut self, node: &mut GroupsNode) {
        match self {
            NodeApp::Replica(r, hash) => {
                r.step(node);
                if let Some(h) = hash {
                    h.refresh(r);
                }
            }
            NodeApp::Acceptor(a) => a.step(node),
        }
    }
}

/// The replica's state hash (objects and client table, see
/// `ScaleOutReplica::state_hash`) with the count of delivered multicasts it had handled,
/// published for the metrics endpoint: equal at every replica of a group that handled the
/// same stream, so a fault campaign can check that a group's replicas ended equal.
/// The latest (state hash, handled) of a replica, for the metrics endpoint.
type SharedHash = Arc<parking_lot::Mutex<Option<(u64, u64)>>>;

struct StateHash {
    shared: SharedHash,
    last: Option<(Instant, u64)>,
}

impl StateHash {
    /// Hashing visits every object: at most every 250 ms while the replica handles commands,
    /// every 2 s while it is idle (a state change without a handled multicast is unexpected,
    /// but then shows within 2 s). A hash read 2 s after the last change is of the final
    /// state (the node steps at every tick).
    fn refresh(&mut self, r: &ScaleOutReplica<Chirper>) {
        let handled = r.handled();
        let due = match self.last {
            None => true,
            Some((at, h)) => {
                let age = at.elapsed();
                age >= Duration::from_secs(2) || (h != handled && age >= Duration::from_millis(250))
            }
        };
        if due {
            *self.shared.lock() = Some((r.state_hash(), handled));
            self.last = Some((Instant::now(), handled));
        }
    }
}

/// `chorus_replica_state_hash` in two 32-bit halves (a 64-bit hash does not survive a float)
/// and `chorus_replica_state_handled`.
fn render_state_hash(hash: Option<(u64, u64)>, e: &mut Exposition) {
    let Some((hash, handled)) = hash else {
        return;
    };
    let help = "Hash of this replica's state (objects and client table), equal at every replica of a group that handled the same stream; split into two 32-bit halves so it survives a float.";
    e.gauge(
        "chorus_replica_state_hash",
        help,
        &[("half", "high")],
        (hash >> 32) as f64,
    );
    e.gauge(
        "chorus_replica_state_hash",
        help,
        &[("half", "low")],
        (hash & 0xffff_ffff) as f64,
    );
    e.gauge(
        "chorus_replica_state_handled",
        "Delivered multicasts handled when chorus_replica_state_hash was computed.",
        &[],
        handled as f64,
    );
}

fn section(args: &Args) -> Result<ServiceSection, String> {
    let scheme = parse_scheme(&args.scheme)?;
    let spec = GraphSpec {
        users: args.users,
        communities: args.communities,
        ..GraphSpec::default()
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(ServiceSection::generated(
        scheme,
        args.partitions,
        &spec,
        args.placement_quality,
    ))
}

fn write_config(args: &Args, path: &std::path::Path) -> Result<(), String> {
    let section = section(args)?;
    let scheme = section.scheme()?;
    let word = args.durability.as_deref().unwrap_or("memory");
    let durability = Durability::from_words(word, args.data_dir.as_deref())
        .map_err(|e| format!("--durability {word}: {e}"))?;
    let tuning = Tuning {
        // Durable logs: after a whole-cluster restart replicas rebuild their state from the
        // start of the logs (checkpoints, --checkpoint-every, are in memory only).
        trim: durability == Durability::Memory,
        ..layout::tuning()
    };
    let layout = ScaleOutLayout::new(
        scheme,
        args.partitions,
        args.replicas,
        1,
        args.clients,
        tuning,
    )
    .and_then(|l| l.with_loopback_addresses(args.base_port))
    .map_err(|e| e.to_string())?;
    let file = DeploymentFile {
        section,
        scheme,
        cluster: engine::binary::with_credentials(
            layout
                .config
                .clone()
                .with_cluster_id(engine::binary::random_cluster_id())
                .with_durability(durability)
                .map_err(|e| e.to_string())?,
            path,
            args.tls,
        )?,
    };
    std::fs::write(path, file.render()?).map_err(|e| format!("{}: {e}", path.display()))?;
    let servers: Vec<String> = layout
        .config
        .nodes
        .iter()
        .filter(|n| !layout.is_client(n.id))
        .map(|n| n.id.0.to_string())
        .collect();
    let clients: Vec<String> = layout.clients.iter().map(|c| c.0.to_string()).collect();
    eprintln!(
        "wrote {}: server nodes {} (chirper-server --config {} --node N), client nodes {}",
        path.display(),
        servers.join(" "),
        path.display(),
        clients.join(" ")
    );
    Ok(())
}

fn serve_node(args: &Args, path: &std::path::Path) -> Result<(), String> {
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
    let role = file.role(me)?;
    let accepts = file.cluster.logs.iter().any(|l| l.acceptors.contains(&me));
    if role.is_none() && !accepts {
        return Err(format!(
            "node {me} is a client node: run chirper-client on it (or a load generator)"
        ));
    }
    let cfg = Arc::new(file.cluster.clone());
    let checkpointing = role.is_some() && args.checkpoint_every > 0;
    let node = GroupsNode::from_config(
        cfg.clone(),
        me,
        NodeOptions {
            // A checkpointing replica merges its logs itself (it must record and move its
            // merge position).
            merge_locally: !checkpointing,
            recover: args.recover,
            ..NodeOptions::fresh()
        },
    )
    .map_err(|e| format!("node {me}: durable logs: {e}"))?;
    let tick_us = cfg.tuning.tick_us.max(1);
    let mut checkpoints = None;
    let mut partition: Option<SharedServerStats> = None;
    let mut oracle: Option<SharedOracleStats> = None;
    let mut state_hash: Option<SharedHash> = None;
    let app = match role {
        Some(role) => {
            let service = Arc::new(file.section.service()?);
            let mut r = ScaleOutReplica::new(
                service,
                cfg,
                me,
                role,
                file.section.partitions,
                ServerOptions::new(file.scheme),
            );
            if checkpointing {
                r = r.with_checkpoints(Some(engine::checkpoint::CheckpointPolicy {
                    every_commands: args.checkpoint_every,
                    every_ticks: 10_000_000 / tick_us,
                    resend_ticks: 500_000 / tick_us,
                }));
                checkpoints = r.share_checkpoints();
            }
            let mut hash = None;
            if metrics_addr.is_some() {
                match role {
                    Role::Partition(_) => partition = Some(r.share_stats()),
                    Role::Oracle => oracle = Some(r.share_oracle_stats()),
                }
                let shared = Arc::new(parking_lot::Mutex::new(None));
                state_hash = Some(shared.clone());
                hash = Some(StateHash { shared, last: None });
            }
            NodeApp::Replica(Box::new(r), hash)
        }
        None => NodeApp::Acceptor(Idle),
    };
    let app = Observed::new(app);
    let metrics = match metrics_addr {
        None => None,
        Some(addr) => {
            let snapshot = app.snapshot();
            let render = Arc::new(move || {
                let node = snapshot.lock().clone();
                let mut e = Exposition::new();
                render_node(&node, &mut e);
                if let Some(p) = &partition {
                    let stats = p.lock().clone();
                    render_partition(&stats, &mut e);
                }
                if let Some(o) = &oracle {
                    let stats = o.lock().clone();
                    render_oracle(&stats, &mut e);
                }
                if let Some(h) = &state_hash {
                    let hash = *h.lock();
                    render_state_hash(hash, &mut e);
                }
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
        "chirper-server: node {me} ({}) of {} serving{}",
        match role {
            Some(r) => format!("{r:?}"),
            None => "acceptor".into(),
        },
        path.display(),
        match &metrics {
            Some(m) => format!(", metrics at http://{}/metrics", m.local_addr()),
            None => String::new(),
        }
    );
    TcpNode::bind(node, app)
        .map_err(|e| e.to_string())?
        .run(None)
        .map_err(|e| e.to_string())?;
    drop(metrics);
    Ok(())
}

fn serve_in_process(args: &Args) -> Result<(), String> {
    let section = section(args)?;
    let scheme = section.scheme()?;
    let service = Arc::new(section.service()?);
    let layout = ScaleOutLayout::new(
        scheme,
        args.partitions,
        args.replicas,
        1,
        1,
        layout::tuning(),
    )
    .map_err(|e| e.to_string())?;
    let mut handle = None;
    let cluster = engine::inproc::start_scaleout(
        &layout,
        service.clone(),
        ServerOptions::new(scheme),
        |id| {
            let proxy = ScaleOutClient::new(
                ClientId::new(id, 0),
                service.clone(),
                ClientOptions::new(scheme, args.partitions),
            );
            let (app, h) = HandleApp::from_proxies(vec![proxy]);
            handle = Some(h);
            app
        },
    );
    let handle = handle.expect("one client node");
    eprintln!(
        "in-process Chirper on {} with {} partitions of {} replicas, {} users (ids 0..{}); commands: create U | post U TEXT | follow A B | unfollow A B | timeline U | quit",
        scheme.name(),
        args.partitions,
        args.replicas,
        args.users,
        args.users
    );
    let mut next_id = 1;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => continue,
            Some("quit") | Some("exit") => break,
            _ => {}
        }
        next_id += 1;
        match parse_command(&words, next_id) {
            Err(e) => println!("error: {e}"),
            Ok(cmd) => match handle.call(0, cmd, Duration::from_secs(10)) {
                Some(Ok(r)) => println!("{}", render_response(&r)),
                Some(Err(e)) => println!("error: {e}"),
                None => println!("error: no reply within 10 s"),
            },
        }
    }
    cluster.stop();
    Ok(())
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
    let result = engine::binary::check_server_flags(&flags)
        .and_then(|()| {
            if args.recover && (args.config.is_none() || args.write_config.is_some()) {
                return Err(
                    "--recover needs --config and --node (a node of a TCP deployment)".into(),
                );
            }
            if args.checkpoint_every > 0 && (args.config.is_none() || args.write_config.is_some()) {
                Err(
                    "--checkpoint-every needs --config and --node (a node of a TCP deployment)"
                        .to_string(),
                )
            } else {
                Ok(())
            }
        })
        .and_then(|()| match (&args.write_config, &args.config) {
            (Some(path), _) => write_config(&args, path),
            (None, Some(path)) => serve_node(&args, path),
            (None, None) => serve_in_process(&args),
        });
    engine::binary::exit("chirper-server", result)
}
