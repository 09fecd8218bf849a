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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
    /// 85% getTimeline, 15% post (the DynaStar paper's mix).
    Mix15,
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
            Workload::Mix15 => "mix-85-15",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .chain([Workload::Mix15])
            .find(|w| w.name() == s || (s == "follow" && *w == Workload::FollowUnfollow))
            .ok_or_else(|| {
                format!(
                    "unknown workload {s:?}; one of {}, {}",
                    Workload::ALL.map(Workload::name).join(", "),
                    Workload::Mix15.name()
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
    /// Active users by rank (a seeded permutation) and the cumulative Zipf weights of the
    /// ranks; `None`: users are drawn uniformly.
    active: Option<(Vec<UserId>, Vec<f64>)>,
    /// The dynamic phase: once switched on, a share of the commands make a new celebrity.
    pub celebrity: Option<Celebrity>,
}

/// The dynamic phase (the DynaStar paper's "a celebrity appears"): from the moment `on` is
/// set, `follow_per_10k` in 10,000 commands are an acting user (drawn like every other)
/// following `user`, and `post_per_10k` are posts by `user`, which write every follower's
/// timeline, followers gathered from every community.
#[derive(Clone, Debug)]
pub struct Celebrity {
    pub user: UserId,
    pub follow_per_10k: u32,
    pub post_per_10k: u32,
    pub on: Arc<AtomicBool>,
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
            active: None,
            celebrity: None,
        }
    }

    /// Draws the acting user of every command by a Zipf law of `exponent` over a seeded
    /// ranking of the users (the DynaStar paper: Zipf 0.95), independent of popularity.
    pub fn with_active_zipf(mut self, exponent: f64, seed: u64) -> Self {
        use rand::seq::SliceRandom;
        let mut order: Vec<UserId> = (0..self.graph.users()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x2_1bf));
        let mut total = 0.0;
        let cumulative = (0..order.len())
            .map(|r| {
                total += ((r + 1) as f64).powf(-exponent);
                total
            })
            .collect();
        self.active = Some((order, cumulative));
        self
    }

    /// The mean number of followers of an acting user (the timelines a post writes besides
    /// the poster's), weighted by how often each user acts, and the most followed of the 100
    /// most active users.
    pub fn post_fanout(&self) -> (f64, usize) {
        let n = self.graph.users();
        match &self.active {
            None => {
                let total: usize = (0..n).map(|u| self.graph.followers(u).len()).sum();
                let top = (0..n.min(100)).map(|u| self.graph.followers(u).len()).max();
                (total as f64 / f64::from(n.max(1)), top.unwrap_or(0))
            }
            Some((order, cumulative)) => {
                let mut prev = 0.0;
                let mut mean = 0.0;
                for (u, c) in order.iter().zip(cumulative) {
                    mean += (c - prev) * self.graph.followers(*u).len() as f64;
                    prev = *c;
                }
                let top = order
                    .iter()
                    .take(100)
                    .map(|u| self.graph.followers(*u).len());
                (mean / prev.max(f64::MIN_POSITIVE), top.max().unwrap_or(0))
            }
        }
    }

    /// A user acting in a command (uniform, or by the Zipf ranking).
    pub fn user(&self, rng: &mut ChaCha8Rng) -> UserId {
        match &self.active {
            None => rng.random_range(0..self.graph.users().max(1)),
            Some((order, cumulative)) => {
                let target = rng.random::<f64>() * cumulative[cumulative.len() - 1];
                let r = cumulative.partition_point(|&w| w <= target);
                order[r.min(order.len() - 1)]
            }
        }
    }
}

/// Draws one command of `workload`: users uniformly, follows mostly inside the follower's
/// community, unfollows among the follower's original followees, posts of `text`.
pub fn draw(workload: Workload, p: &Population, rng: &mut ChaCha8Rng, text: &Bytes) -> Command {
    let user = |rng: &mut ChaCha8Rng| p.user(rng);
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
    if let Some(c) = p
        .celebrity
        .as_ref()
        .filter(|c| c.on.load(Ordering::Relaxed))
    {
        let x = rng.random_range(0..10_000u32);
        if x < c.follow_per_10k {
            return Command::Follow {
                follower: user(rng),
                followee: c.user,
            };
        }
        if x < c.follow_per_10k + c.post_per_10k {
            return Command::Post {
                user: c.user,
                id: rng.random(),
                text: text.clone(),
            };
        }
    }
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
        Workload::Mix15 => match rng.random_range(0..10_000) {
            0..8500 => Command::GetTimeline(user(rng)),
            _ => post(rng),
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
    /// A static placement instead of the section's (S-SMR with a precomputed partitioning).
    pub placement: Option<Arc<Vec<u32>>>,
    /// Acting users drawn by a Zipf law of this exponent (else uniformly).
    pub active_zipf: Option<f64>,
    /// Replica options instead of the scheme's defaults (DynaStar's repartitioning).
    pub server: Option<ServerOptions>,
    /// Timelines served off the log by one replica after a read index (S-SMR and DS-SMR
    /// fast reads).
    pub fast_reads: bool,
}

impl RunSpec {
    /// The service: the section's, or its graph with [`RunSpec::placement`].
    pub fn service(&self) -> Result<Chirper, String> {
        let service = self.section.service()?;
        match &self.placement {
            None => Ok(service),
            Some(p) => Chirper::with_graph(
                crate::service::ChirperConfig {
                    timeline_len: self.section.timeline_len,
                },
                service.graph().expect("a graph").clone(),
                self.section.cells(),
                crate::graph::shard_over_workers(p, self.section.workers),
            ),
        }
    }

    /// The users commands act on.
    pub fn population(&self, graph: Arc<SocialGraph>) -> Population {
        let p = Population::new(graph, self.section.locality);
        match self.active_zipf {
            Some(e) => p.with_active_zipf(e, self.seed),
            None => p,
        }
    }
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
        fast_reads: spec.fast_reads,
        ..ClientOptions::new(scheme, spec.section.cells())
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
    let service = Arc::new(spec.service()?);
    let population = Arc::new(spec.population(service.graph().expect("a graph").clone()));
    let layout = ScaleOutLayout::combined(
        scheme,
        spec.section.partitions,
        spec.section.workers,
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
        ServerOptions {
            fast_reads: spec.fast_reads,
            ..spec.server.clone().unwrap_or_else(|| ServerOptions {
                workers: spec.section.workers,
                worker_threads: true,
                ..ServerOptions::new(scheme)
            })
        },
        |id| client_app(id, spec, &service, &population, &phase, 0),
        |r| {
            if r.server_stats().is_some() {
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
    if spec.placement.is_some() || spec.server.is_some() {
        return Err(
            "a TCP run takes its placement and replica options from the deployment file".into(),
        );
    }
    let service = Arc::new(spec.section.service()?);
    let population = Arc::new(spec.population(service.graph().expect("a graph").clone()));
    let layout = ScaleOutLayout::combined(
        scheme,
        spec.section.partitions,
        spec.section.workers,
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
