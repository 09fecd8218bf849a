//! Chirper workloads (the DS-SMR paper's Table 1) and measured runs, in-process or with every
//! replica a process on loopback.

use crate::cli::{ConfigFile, DeploymentFile, ServiceSection};
use crate::graph::SocialGraph;
use crate::service::{Chirper, Command, UserId};
use bytes::Bytes;
use engine::host::{ClientHost, OnNode};
use engine::load::{histogram, quantile_us, ClosedLoop, Source, DONE, MEASURE, WARMUP};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::proxy::{ClientOptions, LocationCache, ScaleOutClient};
use engine::partitioned::replica::SharedServerStats;
use engine::partitioned::ServerOptions;
use engine::wire::ClientId;
use groups::ids::NodeId;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A command mix (the DS-SMR paper's workloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 100% getTimeline.
    Timeline,
    /// 100% post.
    Post,
    /// 50% follow, 50% unfollow.
    FollowUnfollow,
    /// 85% getTimeline, 7.5% post, 3.75% follow, 3.75% unfollow.
    Mix,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Timeline,
        Workload::Post,
        Workload::FollowUnfollow,
        Workload::Mix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Timeline => "timeline",
            Workload::Post => "post",
            Workload::FollowUnfollow => "follow-unfollow",
            Workload::Mix => "mix",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s || (s == "follow" && *w == Workload::FollowUnfollow))
            .ok_or_else(|| {
                format!(
                    "unknown workload {s:?}; one of {}",
                    Workload::ALL.map(Workload::name).join(", ")
                )
            })
    }
}

/// The users a workload draws from, with each community's members (follows mostly stay in
/// the follower's community, like the generated graph's edges).
pub struct Population {
    pub graph: Arc<SocialGraph>,
    members: Vec<Vec<UserId>>,
    /// Probability that a follow stays in the follower's community.
    pub locality: f64,
}

impl Population {
    pub fn new(graph: Arc<SocialGraph>, locality: f64) -> Self {
        let mut members = vec![Vec::new(); graph.communities() as usize];
        for u in 0..graph.users() {
            members[graph.community(u) as usize].push(u);
        }
        Population {
            graph,
            members,
            locality,
        }
    }
}

/// Draws one command of `workload`: users uniformly, follows mostly inside the follower's
/// community, unfollows among the follower's original followees, posts of `text`.
pub fn draw(workload: Workload, p: &Population, rng: &mut ChaCha8Rng, text: &Bytes) -> Command {
    let users = p.graph.users().max(1);
    let user = |rng: &mut ChaCha8Rng| rng.random_range(0..users);
    let follow = |rng: &mut ChaCha8Rng| {
        let a = user(rng);
        let community = &p.members[p.graph.community(a) as usize];
        let b = if rng.random_bool(p.locality) && community.len() > 1 {
            community[rng.random_range(0..community.len())]
        } else {
            user(rng)
        };
        Command::Follow {
            follower: a,
            followee: b,
        }
    };
    let unfollow = |rng: &mut ChaCha8Rng| {
        let a = user(rng);
        let followees = p.graph.followees(a);
        let b = if followees.is_empty() {
            user(rng)
        } else {
            followees[rng.random_range(0..followees.len())]
        };
        Command::Unfollow {
            follower: a,
            followee: b,
        }
    };
    let post = |rng: &mut ChaCha8Rng| Command::Post {
        user: user(rng),
        id: rng.random(),
        text: text.clone(),
    };
    match workload {
        Workload::Timeline => Command::GetTimeline(user(rng)),
        Workload::Post => post(rng),
        Workload::FollowUnfollow => {
            if rng.random_bool(0.5) {
                follow(rng)
            } else {
                unfollow(rng)
            }
        }
        Workload::Mix => match rng.random_range(0..10_000) {
            0..8500 => Command::GetTimeline(user(rng)),
            8500..9250 => post(rng),
            9250..9625 => follow(rng),
            _ => unfollow(rng),
        },
    }
}

/// One client's commands (see [`draw`]); posts of `post_bytes` bytes.
pub struct Generator {
    rng: ChaCha8Rng,
    workload: Workload,
    population: Arc<Population>,
    text: Bytes,
}

impl Generator {
    pub fn new(
        workload: Workload,
        population: Arc<Population>,
        post_bytes: usize,
        seed: u64,
    ) -> Self {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            workload,
            population,
            text: Bytes::from(vec![b'x'; post_bytes]),
        }
    }
}

impl Source<Command> for Generator {
    fn next_command(&mut self) -> Command {
        draw(self.workload, &self.population, &mut self.rng, &self.text)
    }
}

/// The closed-loop driver of Chirper clients.
pub type LoadDriver = ClosedLoop<Command, Generator>;

/// How a measured run is set up.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub section: ServiceSection,
    /// Replicas per partition (and of the oracle).
    pub replicas: usize,
    pub workload: Workload,
    pub post_bytes: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub client_nodes: usize,
    pub clients_per_node: usize,
    /// Commands each client keeps outstanding.
    pub window: usize,
    /// DS-SMR clients keep a location cache.
    pub cache: bool,
    pub seed: u64,
    /// Interval of the moves-per-second series.
    pub sample_every: Duration,
}

/// What a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunResult {
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub completed: u64,
    pub errors: u64,
    /// Objects moved per second in the measured window (in-process: objects that changed
    /// partition; over TCP: the clients' move requests, some of which are no-ops).
    pub moves_per_s: f64,
    /// Per completed command, whole run: consults, retries, fallbacks.
    pub consults_per_cmd: f64,
    pub retries_per_cmd: f64,
    pub fallbacks_per_cmd: f64,
    /// `(seconds since start, moves per second)` over warm-up and measurement.
    pub moves_series: Vec<(f64, f64)>,
}

fn client_app(
    id: NodeId,
    spec: &RunSpec,
    service: &Arc<Chirper>,
    population: &Arc<Population>,
    phase: &Arc<AtomicU8>,
    first_index: u32,
) -> OnNode<ClientHost<ScaleOutClient<Chirper>, LoadDriver>> {
    let scheme = spec.section.scheme().expect("validated");
    let options = ClientOptions {
        retry_max: spec.section.retry_max,
        resend_ticks: 2000,
        cache: spec.cache,
        guess_placement: spec.cache,
        seed: spec.seed ^ u64::from(id.0),
        ..ClientOptions::new(scheme, spec.section.partitions)
    };
    let cache = LocationCache::default();
    let proxies = (0..spec.clients_per_node)
        .map(|i| {
            ScaleOutClient::with_cache(
                ClientId::new(id, first_index.wrapping_add(i as u32)),
                service.clone(),
                options,
                cache.clone(),
            )
        })
        .collect();
    let sources = (0..spec.clients_per_node)
        .map(|i| {
            Generator::new(
                spec.workload,
                population.clone(),
                spec.post_bytes,
                spec.seed ^ (u64::from(id.0) << 20) ^ i as u64,
            )
        })
        .collect();
    OnNode::new(ClientHost::new(
        proxies,
        spec.window,
        ClosedLoop::new(sources, phase.clone()),
    ))
}

/// Samples a move counter while the run goes through warm-up and measurement; returns the
/// series and the moves in the measured window.
fn sample(
    spec: &RunSpec,
    moves: impl Fn() -> u64,
    phase: &AtomicU8,
) -> (Vec<(f64, f64)>, u64, Duration) {
    let start = Instant::now();
    let step = spec.sample_every.max(Duration::from_millis(10));
    let mut series = Vec::new();
    let mut last = (0.0, moves());
    let mut at_measure = None;
    let mut t_measure = start;
    loop {
        let t = start.elapsed();
        if at_measure.is_none() && t >= spec.warmup {
            phase.store(MEASURE, Ordering::Relaxed);
            t_measure = Instant::now();
            at_measure = Some(moves());
        }
        if t >= spec.warmup + spec.measure {
            break;
        }
        std::thread::sleep(step.min((spec.warmup + spec.measure).saturating_sub(t)));
        let now = (start.elapsed().as_secs_f64(), moves());
        series.push((now.0, (now.1 - last.1) as f64 / (now.0 - last.0).max(1e-9)));
        last = now;
    }
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t_measure.elapsed();
    (series, moves() - at_measure.unwrap_or(0), elapsed)
}

fn result(
    apps: Vec<&OnNode<ClientHost<ScaleOutClient<Chirper>, LoadDriver>>>,
    series: Vec<(f64, f64)>,
    moves: u64,
    elapsed: Duration,
) -> RunResult {
    let mut hist = histogram();
    let (mut completed, mut errors) = (0, 0);
    let mut all = engine::host::client::ClientStats::default();
    for c in apps {
        hist.add(&c.host.driver.latency_ns).expect("same bounds");
        completed += c.host.driver.completed;
        errors += c.host.driver.errors;
        all += &c.host.stats();
    }
    let per = |x: u64| x as f64 / all.completed.max(1) as f64;
    RunResult {
        throughput_ops_s: completed as f64 / elapsed.as_secs_f64(),
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        completed,
        errors,
        moves_per_s: moves as f64 / elapsed.as_secs_f64(),
        consults_per_cmd: per(all.consults),
        retries_per_cmd: per(all.retries),
        fallbacks_per_cmd: per(all.fallbacks),
        moves_series: series,
    }
}

/// Runs one measurement in-process: every replica, acceptor and client node a thread.
pub fn run(spec: &RunSpec) -> Result<RunResult, String> {
    let scheme = spec.section.scheme()?;
    let service = Arc::new(spec.section.service()?);
    let population = Arc::new(Population::new(
        service.graph().expect("a graph").clone(),
        spec.section.locality,
    ));
    let layout = ScaleOutLayout::new(
        scheme,
        spec.section.partitions,
        spec.replicas,
        1,
        spec.client_nodes,
        layout::tuning(),
    )
    .map_err(|e| e.to_string())?;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut servers: Vec<SharedServerStats> = Vec::new();
    let cluster = engine::inproc::start_scaleout_with(
        &layout,
        service.clone(),
        ServerOptions::new(scheme),
        |id| client_app(id, spec, &service, &population, &phase, 0),
        |r| {
            if r.partition().is_some() {
                servers.push(r.share_stats());
            }
        },
    );
    // Objects that changed partition: moves received, over the replicas of a partition.
    let replicas = spec.replicas as u64;
    let moved = || servers.iter().map(|s| s.lock().moves_in).sum::<u64>() / replicas;
    let (series, moves, elapsed) = sample(spec, moved, &phase);
    let apps = cluster.stop();
    Ok(result(
        apps.values().filter_map(|a| a.as_client()).collect(),
        series,
        moves,
        elapsed,
    ))
}

/// Kills the server processes of a TCP run when dropped.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs one measurement with every replica and acceptor a `chirper-server` process on
/// loopback (ports from `base_port`); the client nodes run in this process. Files (the
/// deployment file and the servers' logs) go to `dir`.
pub fn run_tcp(
    spec: &RunSpec,
    server_bin: &Path,
    base_port: u16,
    dir: &Path,
) -> Result<RunResult, String> {
    use groups::node::{GroupsNode, NodeOptions};
    use groups::runtime::tcp::TcpNode;
    let scheme = spec.section.scheme()?;
    let service = Arc::new(spec.section.service()?);
    let population = Arc::new(Population::new(
        service.graph().expect("a graph").clone(),
        spec.section.locality,
    ));
    let layout = ScaleOutLayout::new(
        scheme,
        spec.section.partitions,
        spec.replicas,
        1,
        spec.client_nodes,
        layout::tuning(),
    )
    .and_then(|l| l.with_loopback_addresses(base_port))
    .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret = std::path::absolute(dir.join("cluster.secret")).map_err(|e| e.to_string())?;
    let cluster = groups::credentials::with_new_secret(layout.config.clone(), &secret)
        .map_err(|e| e.to_string())?;
    let file = DeploymentFile {
        section: spec.section.clone(),
        scheme,
        cluster: cluster.clone(),
    };
    let path: PathBuf = dir.join("deployment.toml");
    std::fs::write(&path, file.render()?).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut servers = Servers(Vec::new());
    for n in layout
        .config
        .nodes
        .iter()
        .filter(|n| !layout.is_client(n.id))
    {
        let log = std::fs::File::create(dir.join(format!("node-{}.log", n.id.0)))
            .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(server_bin)
            .arg("--config")
            .arg(&path)
            .arg("--node")
            .arg(n.id.0.to_string())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", server_bin.display()))?;
        servers.0.push(child);
    }
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let cfg = Arc::new(cluster);
    let mut shared = Vec::new();
    let mut threads = Vec::new();
    let mut stops = Vec::new();
    for &id in &layout.clients {
        let mut app = client_app(
            id,
            spec,
            &service,
            &population,
            &phase,
            engine::host::client::incarnation_index(),
        );
        shared.push(app.host.share_stats());
        let node = GroupsNode::in_memory(cfg.clone(), id, NodeOptions::fresh());
        let tcp = TcpNode::bind(node, app).map_err(|e| e.to_string())?;
        stops.push(tcp.stop_flag());
        threads.push(std::thread::spawn(move || tcp.run(None)));
    }
    // Over TCP the servers' counters are in other processes: count the clients' move requests
    // (including those that turn out to be no-ops).
    let requested = || shared.iter().map(|s| s.lock().moves).sum::<u64>();
    let (series, moves, elapsed) = sample(spec, requested, &phase);
    for s in &stops {
        s.store(true, Ordering::Relaxed);
    }
    let mut apps = Vec::new();
    for t in threads {
        let app = t
            .join()
            .map_err(|_| "client thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
        apps.push(app);
    }
    drop(servers);
    Ok(result(apps.iter().collect(), series, moves, elapsed))
}
