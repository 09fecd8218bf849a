//! One node of a TCP multicast cluster.
//!
//! ```text
//! groups-node --config cluster.toml --node 2 [--messages 1000 --rate 500 --multi 0.3]
//!             [--record deliveries.log] [--duration-s 10] [--data-dir DIR]
//!             [--metrics-addr 127.0.0.1:9100] [--insecure]
//! ```
//!
//! The node refuses to start when the cluster file names no `secret_file`, unless
//! `--insecure` is given ([`TcpNode::bind`]).
//!
//! With `--metrics-addr`, the node serves Prometheus text at `http://ADDR/metrics`: its
//! counters, per-log positions and leadership ([`groups::metrics::render_node`]) and its link
//! counters ([`groups::metrics::render_links`]).
//!
//! With `--data-dir`, the node's consensus logs keep their acceptor state in write-ahead files
//! under `DIR/node-<id>/` and sync them before acknowledging anything
//! ([`GroupsNode::durable`]); a node restarted on the same directory recovers its logs and
//! replays their decided entries to its subscriptions. Without it, the cluster file decides
//! (`durability = "disk"` with `data_dir`, see [`groups::config::Durability`]; the flag
//! overrides both); by default the state is in memory only.
//!
//! With `--messages`, the node multicasts that many messages at `--rate` per second to random
//! destination sets (a fraction `--multi` of them to several groups). With `--record`, it
//! appends one line per multicast (`S sender epoch seq g,g,...`, written before the message can
//! leave the process) and per delivery (`D subscription sender epoch seq`), flushed every loop
//! iteration, so the record of a killed process is complete up to its last iteration
//! ([`groups::record::Record`] parses it).

use bytes::Bytes;
use clap::Parser;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};
use groups::metrics::{render_links, render_node, Exposition, Observed};
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::inproc::App;
use groups::runtime::metrics_http::MetricsServer;
use groups::runtime::tcp::TcpNode;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Run one node of a Chorus multicast cluster over TCP")]
struct Args {
    /// Cluster file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// This node's id in the cluster file.
    #[arg(long)]
    node: u32,
    /// Messages to multicast (0: none).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// Multicasts per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Fraction of multicasts addressed to several groups.
    #[arg(long, default_value_t = 0.2)]
    multi: f64,
    /// Payload bytes per multicast.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Where to record sends and deliveries.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Keep the consensus logs durably in this directory (default: as the cluster file's
    /// `durability` and `data_dir` say, in memory unless set).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// With durable logs: if this node's data directory is missing while its peers hold
    /// state (it lost its data), copy that state from them before voting instead of refusing
    /// to start.
    #[arg(long)]
    recover: bool,
    /// Run without authentication when the cluster file names no secret_file (by default
    /// such a node refuses to start): any process that can reach the port can join.
    #[arg(long)]
    insecure: bool,
}

struct Workload {
    rng: ChaCha8Rng,
    groups: u32,
    total: u64,
    sent: u64,
    rate: f64,
    multi: f64,
    payload: Bytes,
    start: Instant,
    record: Option<BufWriter<File>>,
    deliveries: Vec<(usize, groups::merge::Delivery)>,
}

impl Workload {
    fn dests(&mut self) -> GroupSet {
        let size = if self.groups > 1 && self.rng.random_bool(self.multi) {
            self.rng.random_range(2..=self.groups.min(3))
        } else {
            1
        };
        let mut s = GroupSet::new();
        while s.len() < size as usize {
            s.insert(GroupId(self.rng.random_range(0..self.groups)));
        }
        s
    }
}

impl App for Workload {
    fn step(&mut self, node: &mut GroupsNode) {
        node.take_delivered(&mut self.deliveries);
        for (sub, d) in self.deliveries.drain(..) {
            if let Some(r) = self.record.as_mut() {
                let id = d.msg.id;
                let _ = writeln!(r, "D {sub} {} {} {}", id.sender.0, id.epoch, id.seq);
            }
        }
        let due = ((self.start.elapsed().as_secs_f64() * self.rate) as u64).min(self.total);
        while self.sent < due && node.multicasts_in_flight() < 1024 {
            let dests = self.dests();
            match node.multicast(dests.clone(), self.payload.clone()) {
                Ok(id) => {
                    self.sent += 1;
                    if let Some(r) = self.record.as_mut() {
                        let gs: Vec<String> = dests.iter().map(|g| g.0.to_string()).collect();
                        let _ = writeln!(
                            r,
                            "S {} {} {} {}",
                            id.sender.0,
                            id.epoch,
                            id.seq,
                            gs.join(",")
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "multicast refused");
                    break;
                }
            }
        }
        if let Some(r) = self.record.as_mut() {
            let _ = r.flush();
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let metrics_addr = match args.metrics_addr.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!(
                "groups-node: --metrics-addr {:?}: {e} (expected e.g. 127.0.0.1:9100)",
                args.metrics_addr.as_deref().unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    let cfg = match ClusterConfig::from_toml_file(&args.config) {
        Ok(c) => c.with_insecure(args.insecure),
        Err(e) => {
            eprintln!("groups-node: {e}");
            return ExitCode::from(2);
        }
    };
    let me = NodeId(args.node);
    if cfg.node(me).is_none() {
        eprintln!(
            "groups-node: node {} is not in {}",
            args.node,
            args.config.display()
        );
        return ExitCode::from(2);
    }
    let record = match &args.record {
        Some(p) => match File::create(p) {
            Ok(f) => Some(BufWriter::new(f)),
            Err(e) => {
                eprintln!("groups-node: cannot create {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let groups = cfg.groups;
    let cfg = std::sync::Arc::new(cfg);
    let opts = NodeOptions {
        recover: args.recover,
        ..NodeOptions::fresh()
    };
    let node = match &args.data_dir {
        Some(dir) => GroupsNode::durable(cfg, me, opts, dir),
        None => GroupsNode::from_config(cfg, me, opts),
    };
    let node = match node {
        Ok(n) => n,
        Err(e) => {
            eprintln!("groups-node: {e}");
            return ExitCode::from(2);
        }
    };
    let app = Workload {
        rng: ChaCha8Rng::seed_from_u64(u64::from(args.node)),
        groups,
        total: args.messages,
        sent: 0,
        rate: args.rate,
        multi: args.multi,
        payload: Bytes::from(vec![0u8; args.payload]),
        start: Instant::now(),
        record,
        deliveries: Vec::new(),
    };
    let app = Observed::new(app);
    let snapshot = app.snapshot();
    let runtime = match TcpNode::bind(node, app) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("groups-node: {e}");
            return ExitCode::from(1);
        }
    };
    let _metrics = match metrics_addr {
        None => None,
        Some(addr) => {
            let links = runtime.stats();
            let render = std::sync::Arc::new(move || {
                let node = snapshot.lock().clone();
                let mut e = Exposition::new();
                render_node(&node, &mut e);
                render_links(&links.get(), &mut e);
                e.finish()
            });
            match MetricsServer::start(addr, render) {
                Ok(server) => {
                    tracing::info!(addr = %server.local_addr(), "serving metrics");
                    Some(server)
                }
                Err(e) => {
                    eprintln!("groups-node: --metrics-addr {addr}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let deadline = args
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    match runtime.run(deadline) {
        Ok(app) => {
            let mut app = app.into_inner();
            if let Some(r) = app.record.as_mut() {
                let _ = r.flush();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("groups-node: {e}");
            ExitCode::from(1)
        }
    }
}
