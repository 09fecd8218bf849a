//! The service kit: a replicated service's binaries in a few lines.
//!
//! A service implements the engine's contract ([`crate::Service`] for P-SMR / opt-PSMR,
//! [`crate::partitioned::service::PartitionedService`] for S-SMR / DS-SMR) and a small kit
//! trait ([`psmr::ScaleUpApp`], [`partitioned::ScaleOutApp`]: its names, its own flags, its
//! deployment file, its command language). The kit turns it into
//!
//! - a server binary ([`psmr::server`], [`partitioned::server`]): with no deployment file an
//!   in-process cluster that reads commands on stdin; `--write-config FILE` writes a loopback
//!   deployment file; `--config FILE --node N` runs node `N` of it over TCP (a replica or an
//!   acceptor), with `--metrics-addr` serving Prometheus metrics;
//! - a client binary ([`psmr::client`], [`partitioned::client`]): `--config FILE --node C
//!   COMMAND...` runs one command from client node `C` and prints the reply.
//!
//! The standard flags ([`ServerFlags`]): `--config`, `--node`, `--write-config`, `--mode`,
//! `--replicas`, `--clients`, `--base-port`, `--durability`, `--data-dir`, `--metrics-addr`,
//! `--checkpoint-every`; P-SMR adds `--workers` and `--pin`, scale-out `--partitions`. The
//! service adds its own. A deployment file is a `groups` cluster file plus the service's
//! `[service]` table ([`ConfigFile`]).

pub mod partitioned;
pub mod psmr;

use crate::calls::handle_app;
use crate::checkpoint::CheckpointPolicy;
use crate::host::client::{ClientError, Proxy};
use groups::config::{ClusterConfig, Durability, Tuning};
use groups::ids::NodeId;
use groups::metrics::{render_node, Exposition, Observed};
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::inproc::App;
use groups::runtime::metrics_http::MetricsServer;
use groups::runtime::tcp::TcpNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Where a replica with durable logs writes its checkpoints (`--checkpoint-writer`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointWriter {
    /// On a writer thread of its own ([`crate::checkpoint::saver::Saver::background`]).
    #[default]
    Background,
    /// On the node's thread, which waits for the write and its syncs.
    Inline,
}

/// The flags every server binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerFlags {
    /// Deployment file (run one node of it over TCP).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id in the deployment file.
    #[arg(long)]
    pub node: Option<u32>,
    /// Write a loopback deployment file and exit.
    #[arg(long)]
    pub write_config: Option<PathBuf>,
    /// How commands are replicated (in-process or --write-config): smr, psmr or opt-psmr for
    /// a P-SMR service, s-smr or ds-smr (also --scheme) for a scale-out one.
    #[arg(long, visible_alias = "scheme")]
    pub mode: Option<String>,
    /// Replicas (of every partition, and of the oracle).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Client nodes of a written deployment file.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// The first port of a written deployment file (default: the service's).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// memory or disk: where the acceptors keep their logs and the replicas their
    /// checkpoints (--write-config; disk needs --data-dir).
    #[arg(long, value_name = "memory|disk")]
    pub durability: Option<String>,
    /// Directory of the durable logs and checkpoints, node N in DIR/node-N/ and
    /// DIR/node-N.checkpoints/ (--write-config with --durability disk; a relative path is
    /// resolved against each node's working directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (with --config).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Take a checkpoint every N commands (and at least every 10 s while commands run), so
    /// logs are trimmed below the replicas' checkpoints and a replica that lost its state
    /// recovers by state transfer (with --config; 0: none asked for; a P-SMR replica still
    /// takes part in those others ask for). Default: 0 in memory; with durability = "disk"
    /// 100000, and the checkpoints are written to the data directory, so a restarted replica
    /// replays only the logs after its latest one.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// With durability = "disk" (with --config): write each checkpoint on a thread of its
    /// own (background, the default) or on the node's thread (inline: every client waits
    /// for the write and its three syncs; kept to measure the difference, `bench
    /// checkpoint-stall`).
    #[arg(long, value_enum, value_name = "background|inline")]
    pub checkpoint_writer: Option<CheckpointWriter>,
    /// With durability = "disk" (with --config): if this node's data directory is missing
    /// while its peers hold state (it lost its data), copy that state from them before voting
    /// instead of refusing to start. A node in memory always does this.
    #[arg(long)]
    pub recover: bool,
    /// With --write-config: also write a cluster CA and a certificate and key per node (in
    /// FILE's stem .tls/) and turn on mutual TLS between the nodes.
    #[arg(long)]
    pub tls: bool,
    /// Run without authentication when the deployment file names no secret_file (a TCP node
    /// refuses to start without one otherwise): any process that can reach the ports can join.
    #[arg(long)]
    pub insecure: bool,
    /// In-process: the REPL's client serves read-only commands off the log, after a read
    /// index at one replica (P-SMR: single-worker reads; S-SMR and DS-SMR: single-partition
    /// reads). A TCP client binary takes --fast-reads itself.
    #[arg(long)]
    pub fast_reads: bool,
}

/// The flags of every client binary.
#[derive(clap::Parser, Debug)]
pub struct ClientArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// A client node of the deployment (a node with no subscriptions that accepts no log).
    #[arg(long)]
    pub node: u32,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 10.0)]
    pub timeout_s: f64,
    /// Run without authentication when the deployment file names no secret_file (a TCP node
    /// refuses to start without one otherwise): any process that can reach the ports can join.
    #[arg(long)]
    pub insecure: bool,
    /// Send a read-only command whose objects one replica holds (P-SMR: one worker; S-SMR and
    /// DS-SMR: one partition) to one replica, which answers it after a read index instead of
    /// ordering it through the logs.
    #[arg(long)]
    pub fast_reads: bool,
    /// The command.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// What a server binary was asked to do.
pub enum Task<'a> {
    WriteConfig(&'a Path),
    Node(&'a Path, NodeId),
    InProcess,
}

impl ServerFlags {
    /// Refuses flags that do not fit the task: metrics and checkpoints need a TCP node, the
    /// durability flags are written by `--write-config` (a TCP node reads them from its
    /// deployment file).
    pub fn task(&self) -> Result<Task<'_>, String> {
        let node = self.config.is_some() && self.write_config.is_none();
        if self.metrics_addr.is_some() && !node {
            return Err(
                "--metrics-addr needs --config and --node (a node of a TCP deployment)".into(),
            );
        }
        if self.fast_reads && (self.config.is_some() || self.write_config.is_some()) {
            return Err(
                "--fast-reads goes with the in-process REPL (no --config); a TCP \
                        client binary takes --fast-reads itself"
                    .into(),
            );
        }
        if self.recover && !node {
            return Err("--recover needs --config and --node (a node of a TCP deployment)".into());
        }
        if self.checkpoint_every.is_some() && !node {
            return Err(
                "--checkpoint-every needs --config and --node (a node of a TCP deployment)".into(),
            );
        }
        if self.checkpoint_writer.is_some() && !node {
            return Err(
                "--checkpoint-writer needs --config and --node (a node of a TCP deployment)".into(),
            );
        }
        if self.tls && self.write_config.is_none() {
            return Err(
                "--tls goes with --write-config (it writes the deployment's certificates; \
                        a TCP node reads its [tls] table from its deployment file)"
                    .into(),
            );
        }
        if (self.durability.is_some() || self.data_dir.is_some()) && self.write_config.is_none() {
            return Err(
                "--durability and --data-dir go with --write-config (a TCP node reads \
                        them from its deployment file)"
                    .into(),
            );
        }
        Ok(match (&self.write_config, &self.config) {
            (Some(path), _) => Task::WriteConfig(path),
            (None, Some(path)) => {
                Task::Node(path, NodeId(self.node.ok_or("--config needs --node")?))
            }
            (None, None) => Task::InProcess,
        })
    }

    /// The durability of a written deployment, and its tuning (trimming on either way: with
    /// "disk" the logs are trimmed below the replicas' durable checkpoints only).
    pub fn durability(&self, base: Tuning) -> Result<(Durability, Tuning), String> {
        let word = self.durability.as_deref().unwrap_or("memory");
        let durability = Durability::from_words(word, self.data_dir.as_deref())
            .map_err(|e| format!("--durability {word}: {e}"))?;
        Ok((durability, base))
    }

    /// The metrics endpoint's address, if asked for.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        self.metrics_addr
            .as_deref()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|e| {
                    format!("--metrics-addr {a:?}: {e} (expected e.g. 127.0.0.1:9100)")
                })
            })
            .transpose()
    }

    /// The checkpoint policy of `--checkpoint-every` (every N commands and at least every
    /// 10 s while commands run; requests resent after 0.5 s) for a node of `cluster`; without
    /// the flag, none in memory and every [`DISK_CHECKPOINT_EVERY`] commands with durable
    /// logs.
    pub fn checkpoints(&self, cluster: &ClusterConfig) -> Option<CheckpointPolicy> {
        let tick_us = cluster.tuning.tick_us.max(1);
        let every = self.checkpoint_every.unwrap_or(match cluster.durability {
            Durability::Memory => 0,
            Durability::Disk { .. } => DISK_CHECKPOINT_EVERY,
        });
        (every > 0).then(|| CheckpointPolicy {
            every_commands: every,
            every_ticks: 10_000_000 / tick_us,
            resend_ticks: 500_000 / tick_us,
        })
    }
}

/// Commands between checkpoints of a replica with durable logs when `--checkpoint-every` is
/// not given: each checkpoint is encoded whole on the node's thread (and written by a
/// writer thread), so fewer of them keep the log's throughput; the logs hold at most about this many commands more than the
/// oldest live replica's checkpoint.
pub const DISK_CHECKPOINT_EVERY: u64 = 100_000;

/// A replica's durable checkpoints, if its cluster keeps its state on disk: its checkpoint
/// directory ([`crate::checkpoint::disk::checkpoint_dir`]) and the newest valid checkpoint in
/// it. A directory that holds another cluster's or node's checkpoint, or that cannot be read
/// or created, is an error (the node must not start).
pub fn durable_checkpoints(
    cluster: &ClusterConfig,
    me: NodeId,
    writer: CheckpointWriter,
) -> Result<Option<DurableStart>, String> {
    use crate::checkpoint::disk::{checkpoint_dir, CheckpointDir};
    let Durability::Disk { data_dir } = &cluster.durability else {
        return Ok(None);
    };
    let path = checkpoint_dir(Path::new(data_dir), me);
    let mut dir = CheckpointDir::open(path, cluster.cluster_id, me)
        .map_err(|e| format!("node {me}: checkpoints: {e}"))?;
    let loaded = dir
        .load()
        .map_err(|e| format!("node {me}: checkpoints: {e}"))?;
    match &loaded {
        Some(f) => {
            tracing::info!(node = %me, round = f.round, bytes = f.bytes.len(), dir = %dir.path().display(), "found a durable checkpoint")
        }
        None => {
            tracing::info!(node = %me, dir = %dir.path().display(), "no durable checkpoint yet")
        }
    }
    // Written on a thread of their own by default: a checkpoint of a large state takes its
    // write and three syncs, which must not stall the node's loop.
    use crate::checkpoint::saver::Saver;
    let saver = match writer {
        CheckpointWriter::Background => Saver::background(Box::new(dir), &format!("ckpt-{me}"))
            .map_err(|e| format!("node {me}: checkpoint writer thread: {e}"))?,
        CheckpointWriter::Inline => Saver::inline(Box::new(dir)),
    };
    Ok(Some((saver, loaded)))
}

/// What [`durable_checkpoints`] found: the writer of checkpoints, and the one to start from.
pub type DurableStart = (
    crate::checkpoint::saver::Saver,
    Option<crate::checkpoint::disk::CheckpointFile>,
);

/// A deployment file: a `groups` cluster file plus a service's `[service]` table, with the
/// checks that tie them together.
pub trait ConfigFile: Sized {
    fn parse(text: &str) -> Result<Self, String>;
    fn render(&self) -> Result<String, String>;
    fn cluster(&self) -> &ClusterConfig;
    fn cluster_mut(&mut self) -> &mut ClusterConfig;

    fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Splits a deployment file's text into its `[service]` table and its cluster part.
pub fn split_file<T: DeserializeOwned>(text: &str) -> Result<(T, ClusterConfig), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let section = table.remove("service").ok_or("missing [service] table")?;
    let section: T = section
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let cluster = ClusterConfig::from_toml(&toml::to_string(&table).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok((section, cluster))
}

/// The text of a deployment file; an error if a value cannot be written in TOML (integers
/// above `i64::MAX`).
pub fn join_file<T: Serialize>(section: &T, cluster: &ClusterConfig) -> Result<String, String> {
    let mut table = toml::Table::new();
    table.insert(
        "service".into(),
        toml::Value::try_from(section)
            .map_err(|e| format!("the [service] section cannot be written: {e}"))?,
    );
    // Top-level keys first: in TOML, keys after a `[table]` header belong to that table.
    Ok(format!(
        "{}\n{}",
        cluster.to_toml(),
        toml::to_string(&table).map_err(|e| format!("the deployment cannot be written: {e}"))?
    ))
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Exit status 0, or 2 with `name: error` on stderr.
pub fn exit(name: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// A random 128-bit cluster id for a deployment file written now (`--write-config`): two
/// deployments generated with the same parameters then differ, and a data directory of one is
/// refused by the other (see `groups::log::identity`).
pub fn random_cluster_id() -> groups::ids::ClusterId {
    groups::ids::ClusterId(rand::random())
}

/// The credentials of a new deployment file written to `config_path` (`--write-config`): a
/// fresh random cluster secret beside it (`d.toml` -> `d.secret`, mode 0600), named as the
/// returned configuration's `secret_file`, so nodes of the deployment authenticate their links
/// by default; with `tls` (`--write-config --tls`) also a cluster CA and one certificate and key
/// per node, clients included, in `d.tls/` (mode 0600 each), named in its `[tls]` table, so
/// links are mutual TLS and each member proves which member it is. Says on stderr what it
/// wrote.
pub fn with_credentials(
    cluster: ClusterConfig,
    config_path: &Path,
    tls: bool,
) -> Result<ClusterConfig, String> {
    use groups::credentials;
    let secret = credentials::beside(config_path, "secret");
    let mut cluster = credentials::with_new_secret(cluster, &secret).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} (the cluster secret, mode 0600; keep it with the deployment file)",
        secret.display()
    );
    if tls {
        let dir = credentials::beside(config_path, "tls");
        cluster = credentials::with_new_tls(cluster, &dir).map_err(|e| e.to_string())?;
        eprintln!(
            "wrote {}/: a cluster CA (ca.crt) and a certificate and key per node \
             (node-N.crt, node-N.key), mode 0600; give each node its own key",
            dir.display()
        );
    }
    Ok(cluster)
}

/// Writes a deployment file and says what is in it.
fn write_file(path: &Path, text: &str, summary: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}: {summary}", path.display());
    Ok(())
}

/// Runs node `me` of `cluster` over TCP with `app` (a replica, or an acceptor-only node),
/// serving `render` at `metrics` if asked, until the process is stopped.
fn run_node<A: App>(
    name: &str,
    what: &str,
    path: &Path,
    node: GroupsNode,
    app: A,
    metrics: Option<SocketAddr>,
    render: impl Fn(&mut Exposition) + Send + Sync + 'static,
) -> Result<(), String> {
    let me = node.id();
    let app = Observed::new(app);
    let server = match metrics {
        None => None,
        Some(addr) => {
            let snapshot = app.snapshot();
            let render = Arc::new(move || {
                let node = snapshot.lock().clone();
                let mut e = Exposition::new();
                render_node(&node, &mut e);
                render(&mut e);
                e.finish()
            });
            let server = MetricsServer::start(addr, render)
                .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
            tracing::info!(node = %me, addr = %server.local_addr(), "serving metrics at http://{}/metrics", server.local_addr());
            Some(server)
        }
    };
    eprintln!(
        "{name}: node {me} ({what}) of {} serving{}",
        path.display(),
        match &server {
            Some(m) => format!(", metrics at http://{}/metrics", m.local_addr()),
            None => String::new(),
        }
    );
    TcpNode::bind(node, app)
        .map_err(|e| e.to_string())?
        .run(None)
        .map_err(|e| e.to_string())?;
    drop(server);
    Ok(())
}

/// The node of a TCP deployment, with durable logs if its file says so.
fn tcp_node(
    cluster: &ClusterConfig,
    me: NodeId,
    reads_entries: bool,
    recover: bool,
) -> Result<GroupsNode, String> {
    GroupsNode::from_config(
        Arc::new(cluster.clone()),
        me,
        NodeOptions {
            merge_locally: !reads_entries,
            recover,
            ..NodeOptions::fresh()
        },
    )
    .map_err(|e| format!("node {me}: durable logs: {e}"))
}

/// Reads commands from stdin until `quit` or the end, runs each through `call` and prints its
/// reply (or the error).
fn repl<C, R>(
    mut parse: impl FnMut(&[&str]) -> Result<C, String>,
    call: impl Fn(C) -> Option<Result<R, ClientError>>,
    render: impl Fn(&R) -> String,
) -> Result<(), String> {
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => continue,
            Some("quit") | Some("exit") => break,
            _ => {}
        }
        match parse(&words) {
            Err(e) => println!("error: {e}"),
            Ok(cmd) => match call(cmd) {
                Some(Ok(r)) => println!("{}", render(&r)),
                Some(Err(e)) => println!("error: {e}"),
                None => println!("error: no reply within 10 s"),
            },
        }
    }
    Ok(())
}

/// How long the REPL waits for a reply.
const REPL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one command through `proxy` as node `me` of a TCP deployment: starts the node, waits
/// up to `timeout` for the reply, stops the node. `Ok(None)` means no reply in time.
pub fn call_once<P: Proxy>(
    cluster: &ClusterConfig,
    me: NodeId,
    proxy: P,
    command: P::Command,
    timeout: Duration,
) -> Result<Option<Result<P::Reply, ClientError>>, String> {
    let (app, handle) = handle_app(vec![proxy]);
    let node = GroupsNode::in_memory(Arc::new(cluster.clone()), me, NodeOptions::fresh());
    let tcp = TcpNode::bind(node, app).map_err(|e| e.to_string())?;
    let stop = tcp.stop_flag();
    let thread = std::thread::spawn(move || tcp.run(None).map(|_| ()));
    let reply = handle.call(0, command, timeout);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = thread.join();
    Ok(reply)
}

/// A client binary's run: checks that `--node` is a client node of the file, runs the
/// command through the proxy `make` builds, prints the reply.
fn client_main<F: ConfigFile, P: Proxy>(
    name: &str,
    parse: impl FnOnce(&[&str], u64) -> Result<P::Command, String>,
    make: impl FnOnce(&F, NodeId, &ClientArgs) -> Result<P, String>,
    render: impl FnOnce(&P::Reply) -> String,
) -> ExitCode {
    use clap::Parser;
    let args = ClientArgs::parse();
    let run = || -> Result<String, String> {
        let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
        let fresh = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let cmd = parse(&words, fresh)?;
        let mut file = F::read(&args.config)?;
        file.cluster_mut().insecure = args.insecure;
        let me = NodeId(args.node);
        let cluster = file.cluster();
        let n = cluster
            .node(me)
            .ok_or_else(|| format!("node {me} is not in {}", args.config.display()))?;
        if !n.subscriptions.is_empty() || cluster.logs.iter().any(|l| l.acceptors.contains(&me)) {
            return Err(format!(
                "node {me} is a replica or acceptor, not a client node"
            ));
        }
        let proxy = make(&file, me, &args)?;
        let timeout = Duration::from_secs_f64(args.timeout_s);
        match call_once(cluster, me, proxy, cmd, timeout)? {
            Some(Ok(r)) => Ok(render(&r)),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("no reply within {} s", args.timeout_s)),
        }
    };
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parses a server binary's command line: the standard flags, the protocol's and the
/// service's.
fn parse_server_args<P: clap::Args, F: clap::Args>(
    name: &'static str,
    about: &'static str,
) -> (ServerFlags, P, F) {
    use clap::{CommandFactory, FromArgMatches};
    #[derive(clap::Parser)]
    struct Args<P: clap::Args, F: clap::Args> {
        #[command(flatten)]
        common: ServerFlags,
        #[command(flatten)]
        protocol: P,
        #[command(flatten)]
        service: F,
    }
    let cmd = Args::<P, F>::command().name(name).about(about);
    let matches = cmd.get_matches();
    match Args::<P, F>::from_arg_matches(&matches) {
        Ok(a) => (a.common, a.protocol, a.service),
        Err(e) => e.exit(),
    }
}

/// The flags (and settings) of a service that has none of its own.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct NoFlags {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        f: ServerFlags,
    }

    fn task(args: &[&str]) -> Result<&'static str, String> {
        let a = Args::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        a.f.task().map(|t| match t {
            Task::WriteConfig(_) => "write",
            Task::Node(..) => "node",
            Task::InProcess => "in-process",
        })
    }

    #[test]
    fn flags_that_do_not_fit_the_task_are_refused() {
        assert_eq!(task(&[]), Ok("in-process"));
        assert_eq!(
            task(&["--config", "f", "--node", "1", "--metrics-addr", "a"]),
            Ok("node")
        );
        assert_eq!(
            task(&["--write-config", "f", "--durability", "disk"]),
            Ok("write")
        );
        assert!(task(&["--metrics-addr", "a"])
            .unwrap_err()
            .contains("--metrics-addr needs --config"));
        assert!(task(&[
            "--write-config",
            "f",
            "--config",
            "g",
            "--metrics-addr",
            "a"
        ])
        .is_err());
        assert!(
            task(&["--config", "f", "--node", "1", "--durability", "disk"])
                .unwrap_err()
                .contains("go with --write-config")
        );
        assert!(task(&["--checkpoint-every", "5"])
            .unwrap_err()
            .contains("--checkpoint-every needs"));
        assert!(task(&["--config", "f"])
            .unwrap_err()
            .contains("--config needs --node"));
        assert!(task(&["--scheme", "s-smr"]).is_ok(), "--scheme is --mode");
        assert_eq!(task(&["--write-config", "f", "--tls"]), Ok("write"));
        assert!(task(&["--config", "f", "--node", "1", "--tls"])
            .unwrap_err()
            .contains("--tls goes with --write-config"));
        assert_eq!(
            task(&["--config", "f", "--node", "1", "--insecure"]),
            Ok("node")
        );
    }
}
