//! The kit for P-SMR / opt-PSMR services (see [`super`]).

use super::{ConfigFile, ServerFlags, Task};
use crate::host::OnNode;
use crate::inproc::EngineApp;
use crate::metrics::{render_checkpoints, render_workers};
use crate::psmr::deployment::Deployment as Layout;
use crate::psmr::proxy::{handle_app, ClientProxy, Mode};
use crate::psmr::replica::ReplicaOptions;
use crate::psmr::service::Service;
use crate::psmr::threaded::ThreadedReplica;
use crate::wire::ClientId;
use groups::config::{ClusterConfig, Tuning};
use groups::ids::NodeId;
use groups::runtime::inproc::Idle;
use std::process::ExitCode;
use std::sync::Arc;

/// The P-SMR flags: workers and their placement.
#[derive(clap::Args, Debug, Clone)]
pub struct PsmrFlags {
    /// Workers per replica (in-process or --write-config; default: min(4, cores)).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Pin worker threads to cores.
    #[arg(long)]
    pub pin: bool,
}

/// How a P-SMR deployment replicates: what its file says or what the flags ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    pub workers: usize,
    pub replicas: Vec<NodeId>,
}

impl Plan {
    /// A plan from a deployment file's words.
    pub fn from_words(mode: &str, workers: usize, replicas: &[u32]) -> Result<Plan, String> {
        Ok(Plan {
            mode: parse_mode(mode)?,
            workers,
            replicas: replicas.iter().map(|&r| NodeId(r)).collect(),
        })
    }

    /// Checks the plan against the cluster it runs on: `smr` runs one worker, there is one
    /// group per worker, and every replica subscribes to one group per worker.
    pub fn check(&self, cluster: &ClusterConfig) -> Result<(), String> {
        if self.mode == Mode::Smr && self.workers != 1 {
            return Err("mode smr runs exactly one worker".into());
        }
        if cluster.groups as usize != self.workers {
            return Err(format!(
                "the cluster has {} groups but the service runs {} workers (one group per worker)",
                cluster.groups, self.workers
            ));
        }
        for r in &self.replicas {
            let n = cluster
                .node(*r)
                .ok_or_else(|| format!("replica {r} is not a node of the cluster"))?;
            if n.subscriptions.len() != self.workers {
                return Err(format!(
                    "replica {r} must subscribe to one group per worker ({}), it has {}",
                    self.workers,
                    n.subscriptions.len()
                ));
            }
        }
        Ok(())
    }
}

/// A deployment file for a P-SMR service whose own settings are `T`: `[service]` holds
/// `mode`, `workers` and `replicas`, `[service.settings]` the service's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PsmrFile<T> {
    pub plan: Plan,
    pub settings: T,
    pub cluster: ClusterConfig,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PsmrSection<T> {
    mode: String,
    workers: usize,
    replicas: Vec<u32>,
    settings: T,
}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Clone> ConfigFile for PsmrFile<T> {
    fn parse(text: &str) -> Result<Self, String> {
        let (s, cluster): (PsmrSection<T>, ClusterConfig) = super::split_file(text)?;
        let plan = Plan::from_words(&s.mode, s.workers, &s.replicas)?;
        plan.check(&cluster)?;
        Ok(PsmrFile {
            plan,
            settings: s.settings,
            cluster,
        })
    }

    fn render(&self) -> Result<String, String> {
        let s = PsmrSection {
            mode: self.plan.mode.name().to_string(),
            workers: self.plan.workers,
            replicas: self.plan.replicas.iter().map(|r| r.0).collect(),
            settings: self.settings.clone(),
        };
        super::join_file(&s, &self.cluster)
    }

    fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    fn cluster_mut(&mut self) -> &mut ClusterConfig {
        &mut self.cluster
    }
}

/// What a P-SMR service tells the kit (see [`super`]).
pub trait ScaleUpApp: Service + Sized {
    /// The binaries' names and one line about the server.
    const SERVER: &'static str;
    const CLIENT: &'static str;
    const ABOUT: &'static str;
    /// The first port `--write-config` gives out.
    const BASE_PORT: u16;
    /// The default of `--mode`.
    const MODE: Mode = Mode::OptPsmr;
    /// The commands the REPL and the client take (shown by the REPL).
    const COMMANDS: &'static str;
    /// The service's own flags.
    type Flags: clap::Args + Clone + std::fmt::Debug;
    /// The service's deployment file.
    type File: ConfigFile;
    /// The service an in-process cluster runs.
    fn from_flags(flags: &Self::Flags) -> Result<Self, String>;
    /// A deployment file for `plan` and `cluster` (`--write-config`).
    fn file(flags: &Self::Flags, plan: &Plan, cluster: ClusterConfig)
        -> Result<Self::File, String>;
    /// What a deployment file says about replication.
    fn plan(file: &Self::File) -> Plan;
    /// The service a node of a deployment runs.
    fn from_file(file: &Self::File) -> Result<Self, String>;
    /// A few words about the in-process service (after the cluster's shape in the banner).
    fn describe(_flags: &Self::Flags) -> String {
        String::new()
    }
    /// One command of the command language; `fresh` is a number not used before.
    fn parse(words: &[&str], fresh: u64) -> Result<Self::Command, String>;
    /// A reply as text.
    fn render(reply: &Self::Reply) -> String;
}

/// Parses a mode name.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "smr" => Ok(Mode::Smr),
        "psmr" => Ok(Mode::Psmr),
        "opt-psmr" => Ok(Mode::OptPsmr),
        other => Err(format!(
            "unknown mode {other:?}: one of smr, psmr, opt-psmr"
        )),
    }
}

fn mode_and_workers<S: ScaleUpApp>(
    f: &ServerFlags,
    p: &PsmrFlags,
) -> Result<(Mode, usize), String> {
    let mode = match &f.mode {
        Some(m) => parse_mode(m)?,
        None => S::MODE,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match mode {
        Mode::Smr => 1,
        _ => p.workers.unwrap_or(cores.min(4)).max(1),
    };
    Ok((mode, workers))
}

/// The server binary of a P-SMR service.
pub fn server<S: ScaleUpApp>() -> ExitCode {
    super::init_logging();
    let (f, p, s) = super::parse_server_args::<PsmrFlags, S::Flags>(S::SERVER, S::ABOUT);
    let result = f.task().and_then(|task| match task {
        Task::WriteConfig(path) => write_config::<S>(&f, &p, &s, path),
        Task::Node(path, me) => serve_node::<S>(&f, &p, path, me),
        Task::InProcess => in_process::<S>(&f, &p, &s),
    });
    super::exit(S::SERVER, result)
}

fn write_config<S: ScaleUpApp>(
    f: &ServerFlags,
    p: &PsmrFlags,
    s: &S::Flags,
    path: &std::path::Path,
) -> Result<(), String> {
    let (mode, workers) = mode_and_workers::<S>(f, p)?;
    let (durability, tuning) = f.durability(Tuning::default())?;
    let d = Layout::new(f.replicas, 1, workers, f.clients, tuning)
        .and_then(|d| d.with_loopback_addresses(f.base_port.unwrap_or(S::BASE_PORT)))
        .map_err(|e| e.to_string())?;
    let plan = Plan {
        mode,
        workers,
        replicas: d.replicas.clone(),
    };
    let cluster = d
        .config
        .clone()
        .with_cluster_id(super::random_cluster_id())
        .with_durability(durability)
        .map_err(|e| e.to_string())?;
    let cluster = super::with_credentials(cluster, path, f.tls)?;
    let file = S::file(s, &plan, cluster)?;
    let summary = format!(
        "replicas {:?}, acceptors {:?}, client nodes {:?}",
        d.replicas, d.acceptors, d.clients
    );
    super::write_file(path, &file.render()?, &summary)
}

fn serve_node<S: ScaleUpApp>(
    f: &ServerFlags,
    p: &PsmrFlags,
    path: &std::path::Path,
    me: NodeId,
) -> Result<(), String> {
    let metrics = f.metrics_addr()?;
    let mut file = S::File::read(path)?;
    file.cluster_mut().insecure = f.insecure;
    let cluster = file.cluster();
    let node_cfg = cluster
        .node(me)
        .ok_or_else(|| format!("node {me} is not in {}", path.display()))?;
    let plan = S::plan(&file);
    let replica = plan.replicas.contains(&me);
    let accepts = cluster.logs.iter().any(|l| l.acceptors.contains(&me));
    if !replica && !accepts {
        return Err(format!(
            "node {me} is a client node ({} subscriptions): run {} on it",
            node_cfg.subscriptions.len(),
            S::CLIENT
        ));
    }
    let node = super::tcp_node(cluster, me, replica, f.recover)?;
    if !replica {
        let app: EngineApp<OnNode<ThreadedReplica<S>>, Idle> = EngineApp::Acceptor;
        return super::run_node(S::SERVER, "acceptor", path, node, app, metrics, |_| {});
    }
    let options = ReplicaOptions {
        pin_cores: p.pin,
        ..ReplicaOptions::new(plan.workers)
    };
    let durable = super::durable_checkpoints(cluster, me, f.checkpoint_writer.unwrap_or_default())?;
    let mut r = ThreadedReplica::threaded(Arc::new(S::from_file(&file)?), options);
    if let Some(policy) = f.checkpoints(cluster) {
        r = r.with_checkpoints(policy);
    }
    if let Some((disk, loaded)) = durable {
        r = r.with_durable_checkpoints(disk, loaded);
    }
    let workers = r.share_worker_stats();
    let checkpoints = r.share_checkpoints();
    let app: EngineApp<_, Idle> = EngineApp::Replica(Box::new(OnNode::new(r)));
    super::run_node(S::SERVER, "replica", path, node, app, metrics, move |e| {
        render_workers(&workers, e);
        render_checkpoints(&checkpoints, e);
    })
}

fn in_process<S: ScaleUpApp>(f: &ServerFlags, p: &PsmrFlags, s: &S::Flags) -> Result<(), String> {
    let (mode, workers) = mode_and_workers::<S>(f, p)?;
    let d = Layout::new(f.replicas, 1, workers, 1, Tuning::default()).map_err(|e| e.to_string())?;
    let service = Arc::new(S::from_flags(s)?);
    let options = ReplicaOptions {
        pin_cores: p.pin,
        ..ReplicaOptions::new(workers)
    };
    let mut handle = None;
    let cluster = crate::inproc::start(&d, service.clone(), options, |id| {
        let (app, h) = handle_app(id, 1, service.clone(), mode, workers, 500, f.fast_reads);
        handle = Some(h);
        app
    });
    let handle = handle.expect("one client node");
    let about = S::describe(s);
    eprintln!(
        "in-process cluster: {} replicas x {workers} workers ({}){}{about}; commands: {} | quit",
        f.replicas,
        mode.name(),
        if about.is_empty() { "" } else { ", " },
        S::COMMANDS
    );
    let mut fresh = 1;
    let result = super::repl(
        |words| {
            fresh += 1;
            S::parse(words, fresh)
        },
        |cmd| handle.call(0, cmd, super::REPL_TIMEOUT),
        S::render,
    );
    drop(cluster);
    result
}

/// One binary for both: a client when the command line ends with a command (`--config FILE
/// --node C COMMAND...`), a server otherwise.
pub fn main<S: ScaleUpApp>() -> ExitCode {
    use clap::Parser;
    if super::ClientArgs::try_parse().is_ok() {
        client::<S>()
    } else {
        server::<S>()
    }
}

/// The client binary of a P-SMR service: one command from a client node.
pub fn client<S: ScaleUpApp>() -> ExitCode {
    super::client_main::<S::File, ClientProxy<S>>(
        S::CLIENT,
        S::parse,
        |file, me, args| {
            let plan = S::plan(file);
            Ok(ClientProxy::new(
                ClientId::new(me, crate::host::client::incarnation_index()),
                Arc::new(S::from_file(file)?),
                plan.mode,
                plan.workers,
                500,
            )
            .with_fast_reads(args.fast_reads))
        },
        S::render,
    )
}
