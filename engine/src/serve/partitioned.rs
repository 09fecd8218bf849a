//! The kit for S-SMR / DS-SMR services (see [`super`]).

use super::{ConfigFile, ServerFlags, Task};
use crate::calls::handle_app;
use crate::host::OnNode;
use crate::inproc::EngineApp;
use crate::metrics::{render_checkpoints, render_oracle, render_partition, Exposition};
use crate::partitioned::layout::{self, ScaleOutLayout};
use crate::partitioned::msg::Response;
use crate::partitioned::proxy::{ClientOptions, ScaleOutClient};
use crate::partitioned::replica::{PartitionCore, Role, ScaleOutReplica, ScaleOutServer};
use crate::partitioned::service::PartitionedService;
use crate::partitioned::{Scheme, ServerOptions};
use crate::wire::ClientId;
use groups::config::ClusterConfig;
use groups::ids::{GroupId, NodeId};
use groups::runtime::inproc::Idle;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The scale-out flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleOutFlags {
    /// Partitions (in-process or --write-config).
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Workers per partition replica (combined mode, S-SMR and DS-SMR: each worker owns one
    /// cell of the partition and runs on its own thread; in-process or --write-config).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Combined mode: pin every worker thread to a core of its own (P-SMR's placement: one
    /// logical CPU per physical core, NUMA node by NUMA node, then the siblings). A server
    /// process places its replica's workers; the in-process deployment places every
    /// partition's workers apart (a partition's replicas share them).
    #[arg(long)]
    pub pin: bool,
}

/// `--pin`'s CPUs for `cells` cells of `workers` workers each (see
/// [`ServerOptions::pin_cpus`]): one per worker for a server process (`cells == workers`),
/// one per cell for an in-process deployment.
pub fn pin_cpus(pin: bool, cells: u32) -> Option<Vec<usize>> {
    pin.then(|| crate::topology::Topology::detect().placement(cells.max(1) as usize))
}

/// How a scale-out deployment replicates: what its file says or what the flags ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub scheme: Scheme,
    pub partitions: u32,
    /// Workers per partition replica (1 unless combined).
    pub workers: u32,
    /// DS-SMR attempts before a command falls back to S-SMR.
    pub retry_max: u32,
}

impl Plan {
    /// The protocol's partitions: partitions x workers (see
    /// [`crate::partitioned::combined`]).
    pub fn cells(&self) -> u32 {
        self.partitions * self.workers.max(1)
    }

    /// How this plan's partition replicas run.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            workers: self.workers.max(1),
            worker_threads: true,
            ..ServerOptions::new(self.scheme)
        }
    }

    /// A client of this plan, with fast reads or not. A binary's client starts with an empty
    /// location cache: with fast reads it guesses the placement rule's partition (a wrong
    /// guess is refused and ordered) rather than consult the oracle, which would order the
    /// read.
    pub fn client_options(&self, fast_reads: bool) -> ClientOptions {
        let mut o = ClientOptions::new(self.scheme, self.cells());
        o.retry_max = self.retry_max;
        o.fast_reads = fast_reads;
        o.guess_placement = fast_reads;
        o
    }
}

/// What a scale-out service tells the kit (see [`super`]).
pub trait ScaleOutApp: PartitionedService + Sized {
    /// The binaries' names and one line about the server.
    const SERVER: &'static str;
    const CLIENT: &'static str;
    const ABOUT: &'static str;
    /// The first port `--write-config` gives out.
    const BASE_PORT: u16;
    /// The default of `--mode` (`--scheme`).
    const SCHEME: Scheme = Scheme::Dssmr;
    /// The commands the REPL and the client take (shown by the REPL).
    const COMMANDS: &'static str;
    /// The service's own flags.
    type Flags: clap::Args + Clone + std::fmt::Debug;
    /// The service's deployment file.
    type File: ConfigFile;
    /// The service an in-process deployment of `plan` runs.
    fn from_flags(flags: &Self::Flags, plan: &Plan) -> Result<Self, String>;
    /// A deployment file for `plan` and `cluster` (`--write-config`).
    fn file(flags: &Self::Flags, plan: &Plan, cluster: ClusterConfig)
        -> Result<Self::File, String>;
    /// What a deployment file says about replication.
    fn plan(file: &Self::File) -> Plan;
    /// The service a node of a deployment runs.
    fn from_file(file: &Self::File) -> Result<Self, String>;
    /// A few words about the in-process service (after the deployment's shape).
    fn describe(_flags: &Self::Flags) -> String {
        String::new()
    }
    /// One command of the command language; `fresh` is a number not used before.
    fn parse(words: &[&str], fresh: u64) -> Result<Self::Command, String>;
    /// A reply as text.
    fn render(reply: &Response<Self::Reply>) -> String;
}

/// Parses a scheme name.
pub fn parse_scheme(s: &str) -> Result<Scheme, String> {
    match s {
        "s-smr" | "ssmr" => Ok(Scheme::Ssmr),
        "ds-smr" | "dssmr" => Ok(Scheme::Dssmr),
        "dynastar" => Ok(Scheme::Dynastar),
        other => Err(format!(
            "unknown scheme {other:?}: s-smr, ds-smr or dynastar"
        )),
    }
}

/// The role of node `id` in a scale-out cluster of `cells` groups of partitions (partitions
/// x workers): a node subscribing to cells `p * k .. p * k + k` is a replica of partition
/// `p` (with `k` workers), one subscribing to group `cells` the oracle; `None` for a node
/// that subscribes to nothing (an acceptor or a client).
pub fn role(cluster: &ClusterConfig, partitions: u32, id: NodeId) -> Result<Option<Role>, String> {
    let n = cluster
        .node(id)
        .ok_or_else(|| format!("node {id} is not in the deployment"))?;
    match n.subscriptions.as_slice() {
        [] => Ok(None),
        [g] if !g.is_empty() => {
            let GroupId(first) = g.first().expect("a group");
            let k = g.len() as u32;
            let contiguous = g.iter().enumerate().all(|(i, x)| x.0 == first + i as u32);
            if first >= partitions {
                return if k == 1 {
                    Ok(Some(Role::Oracle))
                } else {
                    Err(format!(
                        "node {id}: the oracle's replicas subscribe to one group"
                    ))
                };
            }
            if !contiguous || first % k != 0 || first + k > partitions {
                return Err(format!(
                    "node {id}: a partition replica subscribes to its partition's cells (groups p*k .. p*k+k)"
                ));
            }
            Ok(Some(Role::Partition(first / k)))
        }
        _ => Err(format!(
            "node {id}: a scale-out replica has exactly one subscription"
        )),
    }
}

fn plan_of<S: ScaleOutApp>(f: &ServerFlags, p: &ScaleOutFlags) -> Result<Plan, String> {
    let scheme = match &f.mode {
        Some(m) => parse_scheme(m)?,
        None => S::SCHEME,
    };
    if p.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    if p.workers > 1 && scheme == Scheme::Dynastar {
        return Err("--workers above 1 (combined mode) runs s-smr or ds-smr, not dynastar".into());
    }
    Ok(Plan {
        scheme,
        partitions: p.partitions,
        workers: p.workers,
        retry_max: ClientOptions::new(scheme, p.partitions).retry_max,
    })
}

/// The server binary of a scale-out service.
pub fn server<S: ScaleOutApp>() -> ExitCode {
    super::init_logging();
    let (f, p, s) = super::parse_server_args::<ScaleOutFlags, S::Flags>(S::SERVER, S::ABOUT);
    let result = f.task().and_then(|task| match task {
        Task::WriteConfig(path) => write_config::<S>(&f, &p, &s, path),
        Task::Node(path, me) => serve_node::<S>(&f, p.pin, path, me),
        Task::InProcess => in_process::<S>(&f, &p, &s),
    });
    super::exit(S::SERVER, result)
}

fn write_config<S: ScaleOutApp>(
    f: &ServerFlags,
    p: &ScaleOutFlags,
    s: &S::Flags,
    path: &std::path::Path,
) -> Result<(), String> {
    let plan = plan_of::<S>(f, p)?;
    let (durability, tuning) = f.durability(layout::tuning())?;
    let l = ScaleOutLayout::combined(
        plan.scheme,
        plan.partitions,
        plan.workers,
        f.replicas,
        1,
        f.clients,
        tuning,
    )
    .and_then(|l| l.with_loopback_addresses(f.base_port.unwrap_or(S::BASE_PORT)))
    .map_err(|e| e.to_string())?;
    let cluster = l
        .config
        .clone()
        .with_cluster_id(super::random_cluster_id())
        .with_durability(durability)
        .map_err(|e| e.to_string())?;
    let cluster = super::with_credentials(cluster, path, f.tls)?;
    let file = S::file(s, &plan, cluster)?;
    let ids = |ids: &mut dyn Iterator<Item = NodeId>| {
        ids.map(|n| n.0.to_string()).collect::<Vec<_>>().join(" ")
    };
    let servers = ids(&mut l
        .config
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|n| !l.is_client(*n)));
    let summary = format!(
        "server nodes {servers} ({} --config {} --node N), client nodes {}",
        S::SERVER,
        path.display(),
        ids(&mut l.clients.iter().copied())
    );
    super::write_file(path, &file.render()?, &summary)
}

/// A replica's state hash (objects and client table) with the count of delivered multicasts
/// it had handled, published for the metrics endpoint: equal at every replica of a group that
/// handled the same stream, so a fault campaign can check that a group's replicas ended equal.
/// Hashing visits every object: at most every 250 ms while the replica handles commands,
/// every 2 s while it is idle (a hash read 2 s after the last change is of the final state).
type SharedHash = Arc<parking_lot::Mutex<Option<(u64, u64)>>>;

fn publish_state_hash<S: PartitionedService>(r: &mut ScaleOutReplica<S>) -> SharedHash {
    let shared = SharedHash::default();
    let out = shared.clone();
    let mut last: Option<(Instant, u64)> = None;
    r.core.share_with(move |c: &ScaleOutServer<S>| {
        let handled = PartitionCore::handled(c);
        let due = last.is_none_or(|(at, h)| {
            let age = at.elapsed();
            age >= Duration::from_secs(2) || (h != handled && age >= Duration::from_millis(250))
        });
        if due {
            *out.lock() = Some((PartitionCore::state_hash(c), handled));
            last = Some((Instant::now(), handled));
        }
    });
    shared
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

fn serve_node<S: ScaleOutApp>(
    f: &ServerFlags,
    pin: bool,
    path: &std::path::Path,
    me: NodeId,
) -> Result<(), String> {
    let metrics = f.metrics_addr()?;
    let mut file = S::File::read(path)?;
    file.cluster_mut().insecure = f.insecure;
    let plan = S::plan(&file);
    let cluster = file.cluster();
    let role = role(cluster, plan.cells(), me)?;
    let accepts = cluster.logs.iter().any(|l| l.acceptors.contains(&me));
    let Some(role) = role else {
        if !accepts {
            return Err(format!(
                "node {me} is a client node: run {} on it (or a load generator)",
                S::CLIENT
            ));
        }
        let node = super::tcp_node(cluster, me, false, f.recover)?;
        let app: EngineApp<OnNode<ScaleOutReplica<S>>, Idle> = EngineApp::Acceptor;
        return super::run_node(S::SERVER, "acceptor", path, node, app, metrics, |_| {});
    };
    let policy = f.checkpoints(cluster);
    // The replica merges its logs itself: to serve reads off the log, and, with checkpoints,
    // to record and move its merge position.
    let node = super::tcp_node(cluster, me, true, f.recover)?;
    let cfg = Arc::new(cluster.clone());
    let mut r = ScaleOutReplica::scaleout(
        Arc::new(S::from_file(&file)?),
        cfg.clone(),
        me,
        role,
        plan.cells(),
        ServerOptions {
            pin_cpus: pin_cpus(pin, plan.workers),
            ..plan.server_options()
        },
    );
    let checkpointing = policy.is_some();
    r = r.checkpointing(&cfg, me, policy);
    if checkpointing {
        // With durable logs a checkpointing replica writes its checkpoints to disk and
        // starts from the latest one.
        if let Some((disk, loaded)) =
            super::durable_checkpoints(cluster, me, f.checkpoint_writer.unwrap_or_default())?
        {
            r = r.with_durable_checkpoints(disk, loaded);
        }
    }
    let checkpoints = checkpointing.then(|| r.share_checkpoints());
    let (partition, oracle, hash) = if metrics.is_some() {
        let (p, o) = match role {
            Role::Partition(_) => (Some(r.share_stats()), None),
            Role::Oracle => (None, Some(r.share_oracle_stats())),
        };
        (p, o, Some(publish_state_hash(&mut r)))
    } else {
        (None, None, None)
    };
    let app: EngineApp<_, Idle> = EngineApp::Replica(Box::new(OnNode::new(r)));
    super::run_node(
        S::SERVER,
        &format!("{role:?}"),
        path,
        node,
        app,
        metrics,
        move |e| {
            if let Some(p) = &partition {
                render_partition(&p.lock().clone(), e);
            }
            if let Some(o) = &oracle {
                render_oracle(&o.lock().clone(), e);
            }
            if let Some(h) = &hash {
                render_state_hash(*h.lock(), e);
            }
            if let Some(c) = &checkpoints {
                render_checkpoints(c, e);
            }
        },
    )
}

fn in_process<S: ScaleOutApp>(
    f: &ServerFlags,
    p: &ScaleOutFlags,
    s: &S::Flags,
) -> Result<(), String> {
    let plan = plan_of::<S>(f, p)?;
    let service = Arc::new(S::from_flags(s, &plan)?);
    let l = ScaleOutLayout::combined(
        plan.scheme,
        plan.partitions,
        plan.workers,
        f.replicas,
        1,
        1,
        layout::tuning(),
    )
    .map_err(|e| e.to_string())?;
    let mut handle = None;
    let options = ServerOptions {
        fast_reads: f.fast_reads,
        pin_cpus: pin_cpus(p.pin, plan.cells()),
        ..plan.server_options()
    };
    let client = plan.client_options(f.fast_reads);
    let cluster = crate::inproc::start_scaleout(&l, service.clone(), options, |id| {
        let proxy = ScaleOutClient::new(ClientId::new(id, 0), service.clone(), client);
        let (app, h) = handle_app(vec![proxy]);
        handle = Some(h);
        app
    });
    let handle = handle.expect("one client node");
    let about = S::describe(s);
    eprintln!(
        "in-process {} deployment: {} partitions of {} replicas x {} workers{}{about}; commands: {} | quit",
        plan.scheme.name(),
        plan.partitions,
        f.replicas,
        plan.workers,
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
    cluster.stop();
    result
}

/// The client binary of a scale-out service: one command from a client node.
pub fn client<S: ScaleOutApp>() -> ExitCode {
    super::client_main::<S::File, ScaleOutClient<S>>(
        S::CLIENT,
        S::parse,
        |file, me, args| {
            let plan = S::plan(file);
            let client = plan.client_options(args.fast_reads);
            Ok(ScaleOutClient::new(
                ClientId::new(me, crate::host::client::incarnation_index()),
                Arc::new(S::from_file(file)?),
                client,
            ))
        },
        S::render,
    )
}
