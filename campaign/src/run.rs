//! What every campaign run shares, whatever the service under test: the plan of how a fault
//! is injected, the per-run scaffolding (skip, scratch directory, setting a deployment up
//! again when it does not come up, keeping files on failure), the network the nodes reach each
//! other through, starting the servers, the in-process client node and its recording client
//! threads, the fault itself and its healing, the history and the failover measurement.
//!
//! The service files (`btree.rs`, `chirper.rs`) keep what is theirs: the deployment and its
//! files, the clients and their commands, the probes, how a victim is chosen and the checks
//! of the final state.

use crate::net::{Capabilities, Fabric};
use crate::procs::{per_log, scrape, Scratch, Servers, Spec};
use crate::relay::{LossModel, Relay};
use crate::tap::Tap;
use crate::{Fault, Options, RunReport, RECOVER_FLAG};
use engine::calls::ClientHandle;
use engine::host::client::Proxy;
use engine::lincheck::Operation;
use groups::codec::Postcard;
use groups::config::{ClusterConfig, Durability};
use groups::frame::{self, Frame, FrameKind, Hello, FRAME_BYTES_MAX, PROTOCOL_VERSION};
use groups::ids::NodeId;
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::tcp::TcpNode;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The prefix of errors setting a deployment up (retried).
pub(crate) const STARTUP: &str = "startup: ";

/// How long a client waits for a reply before recording the outcome as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports the servers use inside their own namespaces.
const NS_PORT: u16 = 7100;
const NS_METRICS_PORT: u16 = 9100;

/// `partial-frames`: the hostile connections.
const PARTIAL_CONNS: usize = 24;
/// `partial-frames`: how much the victim's resident set may grow under the hostile
/// connections: the groups runtime's default inbound byte budget (128 MiB) plus 64 MiB for
/// everything else (the workload goes on meanwhile). Without a budget every partial frame
/// stays buffered: 24 of them are 384 MiB.
pub(crate) const RSS_GROWTH_MAX_KIB: u64 = 192 << 10;
/// `fd-exhaust`: the victim's open-file limit under the flood (a node holds about 30
/// descriptors of its own in these deployments).
pub(crate) const FD_LIMIT: u64 = 128;
/// `fd-exhaust`: the most idle connections opened (enough to exhaust `FD_LIMIT` and fill a
/// listen backlog of 128, which the runtime's listener has).
const FLOOD_CONNS_MAX: usize = 1024;
/// `fd-exhaust`: once the flood is closed, a client connecting afresh must be served by the
/// victim (a reply through a log it leads) within this.
pub(crate) const RECOVERY_BOUND: Duration = Duration::from_secs(2);
/// How long the fresh client waits for that reply (beyond the bound, to report the figure).
const RECOVERY_PATIENCE: Duration = Duration::from_secs(5);
/// `wipe-data`: how long a server restarted on a wiped data directory without
/// [`RECOVER_FLAG`] has to refuse (exit with a message).
const REFUSAL_PATIENCE: Duration = Duration::from_secs(10);
/// Client ids the `partial-frames` and `fd-exhaust` deployments have beyond the workload's
/// client node, unused by it: the hostile `Hello`s claim them (a node keeps one established
/// link per peer id, so several ids) and `fd-exhaust`'s fresh client is the first.
pub(crate) const SPARE_CLIENTS: usize = 8;

/// How the nodes reach each other.
pub(crate) enum Net {
    /// All on 127.0.0.1.
    Loopback,
    /// Servers in namespaces on a bridge; the client node on the bridge's address.
    Fabric(Fabric),
    /// All on 127.0.0.1, each (dialer, peer) link through its own relay.
    Relays(BTreeMap<(u32, u32), Relay>),
}

pub(crate) struct Plan {
    /// What the machine must offer for this fault, and how it will be injected.
    pub(crate) mechanism: String,
    pub(crate) net_kind: NetKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetKind {
    Loopback,
    Fabric,
    Relays,
}

/// The service's words for its process faults (all on the loopback network).
pub(crate) struct Kills {
    pub(crate) leader: &'static str,
    pub(crate) follower: &'static str,
    /// How an oracle replica is killed, or why the service has none.
    pub(crate) oracle: Result<&'static str, &'static str>,
}

/// How `fault` can be injected on this machine, or why it cannot.
fn plan(fault: Fault, caps: &Capabilities, o: &Options, kills: &Kills) -> Result<Plan, String> {
    let p = |mechanism: String, net_kind| {
        Ok(Plan {
            mechanism,
            net_kind,
        })
    };
    match fault {
        Fault::KillLeader => p(kills.leader.into(), NetKind::Loopback),
        Fault::KillFollower => p(kills.follower.into(), NetKind::Loopback),
        Fault::KillOracle => match kills.oracle {
            Ok(m) => p(m.into(), NetKind::Loopback),
            Err(why) => Err(why.into()),
        },
        Fault::ControlWipeAll => p("negative control: SIGKILL all servers, delete their durable logs, restart them".into(), NetKind::Loopback),
        Fault::Pause => p("SIGSTOP the global log's leader, then SIGCONT".into(), NetKind::Loopback),
        Fault::Partition => match &caps.netns {
            Ok(()) => p("network namespace: a random node's veth link down, then up".into(), NetKind::Fabric),
            Err(e) => p(format!(
                "userspace relays: every link to and from a random node forwards nothing, then resumes ({e})"
            ), NetKind::Relays),
        },
        Fault::Loss => {
            let relay = |why: String| p(format!(
                "userspace relays on every link to and from the global log's leader, {}% loss as TCP shows it: stalls of a 200 ms retransmission timeout (doubling per retransmission lost) and {}% of the losses closing the connection ({why})",
                o.loss_percent, o.loss_percent
            ), NetKind::Relays);
            match (&caps.netns, &caps.netem, &caps.nft) {
                (Ok(()), Ok(()), _) => p(format!("tc netem loss {}% on the global log leader's link (both directions)", o.loss_percent), NetKind::Fabric),
                (Ok(()), Err(netem), Ok(())) => p(format!(
                    "nftables `numgen random mod 100 < {}` drop in and out of the global log leader's namespace ({netem})",
                    o.loss_percent
                ), NetKind::Fabric),
                (Ok(()), Err(netem), Err(nft)) => relay(format!("{netem}; {nft}")),
                (Err(netns), _, _) => relay(netns.clone()),
            }
        }
        Fault::Delay => match (&caps.netns, &caps.netem) {
            (Ok(()), Ok(())) => p(format!("tc netem delay {} ms on the global log leader's link (both directions)", o.delay_ms), NetKind::Fabric),
            (_, Err(netem)) => p(format!(
                "userspace relay delaying every byte to and from the global log's leader by {} ms ({netem})",
                o.delay_ms
            ), NetKind::Relays),
            (Err(netns), Ok(())) => p(format!(
                "userspace relay delaying every byte to and from the global log's leader by {} ms (netem present but no namespaces: {netns})",
                o.delay_ms
            ), NetKind::Relays),
        },
        Fault::PartialFrames => p(format!(
            "the cluster run with --insecure (no secret: a stranger gets past the handshake); {PARTIAL_CONNS} connections to the global log leader's peer port, each sending a {} MiB frame but its last byte (half of them after a valid Hello claiming an idle client's id), held, then closed",
            FRAME_BYTES_MAX >> 20
        ), NetKind::Loopback),
        Fault::FdExhaust => p(format!(
            "the global log leader's open-file limit lowered to {FD_LIMIT} (prlimit), idle connections to its peer port until its listen backlog is full (at most {FLOOD_CONNS_MAX}), held, then closed; then a client that connects afresh must be served within {} s",
            RECOVERY_BOUND.as_secs_f64()
        ), NetKind::Loopback),
        Fault::WipeData => p(format!(
            "SIGKILL a random server, delete its data directory, restart it without {RECOVER_FLAG} (it must refuse to start, with a message), then with {RECOVER_FLAG} (it must rejoin)"
        ), NetKind::Loopback),
    }
}

/// The service a run is of: its name in the report, its process faults and how one attempt
/// at a run of it goes.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) kills: Kills,
    pub(crate) attempt: Attempt,
}

/// What an attempt at a run is given: the campaign's options, the server binary, the run's
/// seed and its fault.
#[derive(Clone, Copy)]
pub(crate) struct Run<'a> {
    pub(crate) o: &'a Options,
    pub(crate) binary: &'a Path,
    pub(crate) seed: u64,
    pub(crate) fault: Fault,
}

/// One attempt at a run of a service: with its plan, in its scratch directory.
pub(crate) type Attempt = fn(&Run, &Plan, &Path, &mut RunReport) -> Result<(), String>;

/// Runs one campaign run of `service`: plans its fault (or skips it), gives it a scratch
/// directory, makes an attempt there (again, in a clean directory, up to twice when it fails
/// with a [`STARTUP`] error) and keeps the files when the run did not pass.
pub(crate) fn drive(
    o: &Options,
    caps: &Capabilities,
    binary: &Path,
    index: usize,
    seed: u64,
    fault: Fault,
    service: &Service,
) -> RunReport {
    let run = Run {
        o,
        binary,
        seed,
        fault,
    };
    let started = Instant::now();
    let mut r = RunReport {
        index,
        seed,
        service: service.name.into(),
        fault: fault.name().into(),
        ..RunReport::default()
    };
    let plan = match plan(fault, caps, o, &service.kills) {
        Ok(p) => p,
        Err(why) => {
            r.skipped = true;
            r.mechanism = format!("skipped: {why}");
            return r;
        }
    };
    r.mechanism = plan.mechanism.clone();
    let dir = o.work_dir.join(format!("run-{index}"));
    let mut scratch = match Scratch::new(&dir) {
        Ok(s) => s,
        Err(e) => {
            r.problems.push(e);
            return r;
        }
    };
    // A deployment that does not come up (a port taken by another process between the
    // check and the bind) is set up again: that is the harness, not the system under test.
    for tries in 1.. {
        match (service.attempt)(&run, &plan, &dir, &mut r) {
            Err(e) if e.starts_with(STARTUP) && tries < 3 => {
                r.mechanism.push_str(&format!(" [set up again: {e}]"));
                r.problems.clear();
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::create_dir_all(&dir);
            }
            Err(e) => {
                r.problems.push(e);
                break;
            }
            Ok(()) => break,
        }
    }
    if !r.passed() {
        scratch.keep();
        r.problems
            .push(format!("files and server logs kept in {}", dir.display()));
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// The log covering every group of `config` (the global log).
pub(crate) fn global_log(config: &ClusterConfig) -> Result<u32, String> {
    let all_groups = config.all_groups();
    config
        .logs
        .iter()
        .find(|l| l.covers == all_groups)
        .map(|l| l.id.0)
        .ok_or_else(|| "the deployment has no log covering every group".into())
}

/// `config` with durable logs on disk (in `data` under each server's directory), for a run
/// of `fault`.
///
/// Links are authenticated, as every deployment's are by default (a fresh secret for the run,
/// at an absolute path: the servers run in `dir`, the client node in this process), except
/// for `partial-frames`: it attacks the one case where a stranger gets past the handshake, a
/// cluster run with `--insecure`, where only the inbound byte budget bounds what partial
/// frames pin (with a secret, a stranger's frames are cut at the handshake's few KiB).
pub(crate) fn durable(
    config: &ClusterConfig,
    dir: &Path,
    fault: Fault,
) -> Result<ClusterConfig, String> {
    let durability =
        Durability::from_words("disk", Some("data")).map_err(|e| format!("durability: {e}"))?;
    let config = config
        .clone()
        .with_durability(durability)
        .map_err(|e| e.to_string())?;
    if fault == Fault::PartialFrames {
        return Ok(config.with_insecure(true));
    }
    let secret = std::path::absolute(dir.join("cluster.secret")).map_err(|e| e.to_string())?;
    groups::credentials::with_new_secret(config, &secret).map_err(|e| e.to_string())
}

/// The flags every server of a deployment on `config` gets: `--insecure` when it runs
/// without authentication (see [`durable`]).
pub(crate) fn server_flags(config: &ClusterConfig) -> Vec<String> {
    if config.insecure {
        vec!["--insecure".into()]
    } else {
        Vec::new()
    }
}

/// A port of `ip` free right now, from 12000-19999: below the kernel's ephemeral range, so
/// that no outgoing connection takes it between this check and the server's bind, nor while
/// a killed server is down (and away from the ranges the other process tests scan).
pub(crate) fn free_port(ip: &str) -> Result<u16, String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % 8000;
    for _ in 0..8000 {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 12_000 + ((start + i) % 8000) as u16;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no free port on {ip} in 12000-19999"))
}

pub(crate) fn sock(ip: &str, port: u16) -> Result<SocketAddr, String> {
    format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}:{port}: {e}"))
}

/// The network of a run: where each node listens and serves its metrics, and through what
/// each node reaches each other.
pub(crate) struct Network {
    pub(crate) net: Net,
    listen: BTreeMap<u32, SocketAddr>,
    metrics: BTreeMap<u32, SocketAddr>,
}

impl Network {
    /// Sets up the network `plan` asks for, for the `servers` and the client nodes `clients`
    /// (run `index` of this process, whose relays draw their losses from `seed`).
    pub(crate) fn new(
        plan: &Plan,
        index: usize,
        seed: u64,
        servers: &[u32],
        clients: &[u32],
    ) -> Result<Network, String> {
        let tag = std::process::id()
            .wrapping_mul(31)
            .wrapping_add(index as u32)
            % 100_000;
        let mut listen: BTreeMap<u32, SocketAddr> = BTreeMap::new();
        let mut metrics: BTreeMap<u32, SocketAddr> = BTreeMap::new();
        let mut all_nodes: Vec<u32> = servers.to_vec();
        all_nodes.extend_from_slice(clients);
        let net = match plan.net_kind {
            NetKind::Fabric => {
                let f = Fabric::new(tag, servers)?;
                for &n in servers {
                    let ip = f.ip(n)?;
                    listen.insert(n, sock(&ip, NS_PORT)?);
                    metrics.insert(n, sock(&ip, NS_METRICS_PORT)?);
                }
                let host = f.host_ip();
                for &c in clients {
                    listen.insert(c, sock(&host, free_port(&host)?)?);
                }
                Net::Fabric(f)
            }
            NetKind::Loopback | NetKind::Relays => {
                for &n in &all_nodes {
                    listen.insert(n, sock("127.0.0.1", free_port("127.0.0.1")?)?);
                }
                for &n in servers {
                    metrics.insert(n, sock("127.0.0.1", free_port("127.0.0.1")?)?);
                }
                if plan.net_kind == NetKind::Relays {
                    let mut relays = BTreeMap::new();
                    for &a in &all_nodes {
                        for &b in &all_nodes {
                            if a != b {
                                let link = seed ^ (u64::from(a) << 32 | u64::from(b));
                                relays.insert((a, b), Relay::start(listen[&b], link)?);
                            }
                        }
                    }
                    Net::Relays(relays)
                } else {
                    Net::Loopback
                }
            }
        };
        Ok(Network {
            net,
            listen,
            metrics,
        })
    }

    /// Where node `n` listens for its peers.
    pub(crate) fn listen_addr(&self, n: u32) -> Result<SocketAddr, String> {
        self.listen
            .get(&n)
            .copied()
            .ok_or_else(|| format!("node {n} has no address"))
    }

    /// `base` with the addresses node `viewer` reaches every node at.
    pub(crate) fn view(&self, base: &ClusterConfig, viewer: u32) -> ClusterConfig {
        let mut c = base.clone();
        for n in &mut c.nodes {
            let addr = match &self.net {
                Net::Relays(relays) if n.id.0 != viewer => relays[&(viewer, n.id.0)].addr(),
                _ => self.listen[&n.id.0],
            };
            n.addr = Some(addr.to_string());
        }
        c
    }

    /// Starts a server process of `binary` (with `flags`) for each of `nodes` in `dir`, with
    /// the deployment file `file(n)` renders for node `n`.
    pub(crate) fn start_servers(
        &self,
        nodes: &[u32],
        binary: &Path,
        flags: &[String],
        dir: &Path,
        file: impl Fn(u32) -> Result<String, String>,
    ) -> Result<Servers, String> {
        let mut servers = Servers::default();
        for &n in nodes {
            let config = dir.join(format!("node-{n}.toml"));
            std::fs::write(&config, file(n)?).map_err(|e| format!("{}: {e}", config.display()))?;
            servers.start(Spec {
                node: n,
                binary: binary.to_path_buf(),
                config,
                netns: match &self.net {
                    Net::Fabric(f) => Some(f.ns(n)?),
                    _ => None,
                },
                metrics: self.metrics[&n],
                cwd: dir.to_path_buf(),
                log: dir.join(format!("node-{n}.log")),
                flags: flags.to_vec(),
            })?;
        }
        Ok(servers)
    }
}

/// The in-process client node; stopped when dropped.
pub(crate) struct ClientNode<C, R> {
    pub(crate) handle: ClientHandle<C, R>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<C, R> ClientNode<C, R> {
    /// Starts node `me` of `cluster` over TCP, hosting `proxies` (clients `0..proxies.len()`
    /// of the handle).
    pub(crate) fn start<P>(
        cluster: Arc<ClusterConfig>,
        me: NodeId,
        proxies: Vec<P>,
    ) -> Result<ClientNode<C, R>, String>
    where
        P: Proxy<Command = C, Reply = R>,
        C: Send + 'static,
        R: Send + 'static,
    {
        let (app, handle) = engine::calls::handle_app(proxies);
        let node = GroupsNode::in_memory(cluster, me, NodeOptions::fresh());
        let tcp = TcpNode::bind(node, app).map_err(|e| format!("client node: {e}"))?;
        let stop = tcp.stop_flag();
        Ok(ClientNode {
            handle,
            stop,
            thread: Some(std::thread::spawn(move || {
                let _ = tcp.run(None);
            })),
        })
    }

    /// Waits up to `patience` until the deployment answers `probe` (sent through client
    /// `slot`, which is then part of no history).
    pub(crate) fn await_answer(
        &self,
        slot: usize,
        probe: C,
        patience: Duration,
        servers: &Servers,
    ) -> Result<(), String>
    where
        C: Clone,
    {
        let ready_by = Instant::now() + patience;
        loop {
            if let Some(Ok(_)) = self
                .handle
                .call(slot, probe.clone(), Duration::from_secs(2))
            {
                return Ok(());
            }
            if Instant::now() > ready_by {
                return Err(format!(
                    "{STARTUP}the deployment never answered; node 1 says:\n{}",
                    servers.log_tail(1, 10)
                ));
            }
        }
    }
}

impl<C, R> Drop for ClientNode<C, R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Once the deployment answers: waits until every log has a leader and checks that every one
/// of `nodes` is up and serves its metrics. Returns the start of the history (`t0`: when the
/// run began waiting for the deployment).
pub(crate) fn all_up(
    o: &Options,
    r: &RunReport,
    servers: &mut Servers,
    nodes: &[u32],
    t0: Instant,
) -> Result<Instant, String> {
    leaders(servers, Duration::from_secs(15))?;
    // Every server must be up: one that failed to start leaves a cluster that tolerates no
    // fault.
    if let Some((n, status)) = servers.exited().into_iter().next() {
        return Err(format!(
            "{STARTUP}node {n} exited ({status}): {}",
            servers.log_tail(n, 3)
        ));
    }
    for &n in nodes {
        let addr = servers.metrics_addr(n).ok_or("no metrics address")?;
        scrape(addr).map_err(|e| format!("{STARTUP}node {n} does not serve: {e}"))?;
    }
    // The probes before are part of no history.
    let history_start = Instant::now();
    if o.verbose {
        eprintln!(
            "  run {}: ready after {:.1} s",
            r.index,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(history_start)
}

/// One recorded operation, with instants.
pub(crate) struct Rec<C, R> {
    pub(crate) thread: usize,
    pub(crate) cmd: C,
    pub(crate) call: Instant,
    pub(crate) ret: Option<(Instant, R)>,
}

type ClientResult<C, R> = (Vec<Rec<C, R>>, Option<String>);

/// The client threads of a run and the flag that stops them.
pub(crate) struct Clients<C, R> {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<ClientResult<C, R>>>,
}

impl<C, R> Clients<C, R>
where
    C: Clone + std::fmt::Debug + Send + 'static,
    R: Send + 'static,
{
    /// The workload: `o.clients` threads, thread `t` on proxies `t * per_thread..` with its
    /// own generator (from `seed`) giving its `n`-th command `command(rng, t, n)`.
    pub(crate) fn workload(
        o: &Options,
        seed: u64,
        handle: &ClientHandle<C, R>,
        per_thread: usize,
        think: Duration,
        command: fn(&mut ChaCha8Rng, usize, u64) -> C,
    ) -> Clients<C, R> {
        let mut clients = Clients {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for t in 0..o.clients {
            let mut trng = ChaCha8Rng::seed_from_u64(seed ^ (0x9E37_79B9 * (t as u64 + 1)));
            clients.spawn(
                handle,
                t,
                t * per_thread..(t + 1) * per_thread,
                think,
                move |n| command(&mut trng, t, n),
            );
        }
        clients
    }

    /// A client thread: runs `next(n)` as its `n`-th command until stopped, recording each
    /// and pausing `think` after each (none if zero); a command without a reply within
    /// [`CALL_TIMEOUT`] is recorded with an unknown outcome and the thread goes on with its
    /// next slot (proxy) (the old one keeps resending its command).
    pub(crate) fn spawn(
        &mut self,
        handle: &ClientHandle<C, R>,
        t: usize,
        slots: std::ops::Range<usize>,
        think: Duration,
        mut next: impl FnMut(u64) -> C + Send + 'static,
    ) {
        let handle = handle.clone();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut recs = Vec::new();
            let mut slot = slots.start;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && slot < slots.end {
                let cmd = next(n);
                n += 1;
                let call = Instant::now();
                match handle.call(slot, cmd.clone(), CALL_TIMEOUT) {
                    Some(Ok(reply)) => recs.push(Rec {
                        thread: t,
                        cmd,
                        call,
                        ret: Some((Instant::now(), reply)),
                    }),
                    Some(Err(e)) => {
                        return (
                            recs,
                            Some(format!("client {t}: command {cmd:?} failed: {e}")),
                        );
                    }
                    None => {
                        recs.push(Rec {
                            thread: t,
                            cmd,
                            call,
                            ret: None,
                        });
                        slot += 1;
                    }
                }
                if !think.is_zero() {
                    std::thread::sleep(think);
                }
            }
            (recs, None)
        }));
    }

    /// Lets the run settle, stops the clients and collects what they recorded (their errors
    /// go to `r`'s problems).
    pub(crate) fn stop(self, r: &mut RunReport) -> Result<Vec<Rec<C, R>>, String> {
        std::thread::sleep(Duration::from_millis(2500));
        self.stop.store(true, Ordering::Relaxed);
        let mut recs = Vec::new();
        for t in self.threads {
            let (mut v, err) = t.join().map_err(|_| "a client thread panicked")?;
            recs.append(&mut v);
            if let Some(e) = err {
                r.problems.push(e);
            }
        }
        Ok(recs)
    }
}

/// Before the fault: waits a random while (drawn from `rng`, as is how long the fault then
/// lasts), then reads every log's leader. Returns the fault's duration and the leaders.
pub(crate) fn warm_up(
    o: &Options,
    rng: &mut ChaCha8Rng,
    servers: &Servers,
) -> Result<(Duration, BTreeMap<u32, u32>), String> {
    let warm = Duration::from_secs_f64(rng.random_range(1.0..2.5));
    let hold = Duration::from_secs_f64(rng.random_range(o.fault_secs.0..o.fault_secs.1));
    std::thread::sleep(warm);
    let led = leaders(servers, Duration::from_secs(10))?;
    Ok((hold, led))
}

/// The fault of a run, on whom and for how long.
pub(crate) struct Target {
    pub(crate) fault: Fault,
    pub(crate) victim: u32,
    pub(crate) hold: Duration,
    /// The 64-bit tag of the deployment's cluster id that frames carry (the hostile frames of
    /// `partial-frames` carry it).
    pub(crate) cluster_id: u64,
    /// Configured client ids no process uses (see [`SPARE_CLIENTS`]).
    pub(crate) spare_clients: Vec<u32>,
}

/// Records the victim and the logs it leads (per `led`) in `r`.
pub(crate) fn record_victim(o: &Options, r: &mut RunReport, t: &Target, led: &BTreeMap<u32, u32>) {
    let victim = t.victim;
    r.victim = Some(victim);
    r.victim_led_logs = led
        .iter()
        .filter(|(_, &n)| n == victim)
        .map(|(&l, _)| l)
        .collect();
    if o.verbose {
        eprintln!(
            "  run {}: {} on node {victim} (leads logs {:?}) for {:.1} s",
            r.index,
            t.fault.name(),
            r.victim_led_logs,
            t.hold.as_secs_f64()
        );
    }
}

/// When the fault began (if it did) and when it was healed.
pub(crate) struct Injected {
    pub(crate) fault_at: Option<Instant>,
    pub(crate) healed_at: Instant,
}

/// Injects the fault on its victim (one of the servers `nodes` of `servers`, their files in
/// `dir`) for its time, watching how long until the logs the victim led have another leader,
/// then heals it.
pub(crate) fn inject(
    o: &Options,
    r: &mut RunReport,
    target: &Target,
    network: &Network,
    servers: &mut Servers,
    nodes: &[u32],
    dir: &Path,
) -> Result<Injected, String> {
    let net = &network.net;
    let Target {
        fault,
        victim,
        hold,
        ..
    } = *target;
    let mut note = String::new();
    let fault_at;
    let mut elected = None;
    match fault {
        Fault::KillLeader | Fault::KillFollower | Fault::KillOracle => {
            fault_at = Some(Instant::now());
            servers.kill(victim)?;
            elected = watch(servers, victim, &r.victim_led_logs, hold);
            servers.restart(victim)?;
        }
        Fault::Pause => {
            fault_at = Some(Instant::now());
            servers.pause(victim, true)?;
            elected = watch(servers, victim, &r.victim_led_logs, hold);
            servers.pause(victim, false)?;
        }
        Fault::Partition => match net {
            Net::Fabric(f) => {
                fault_at = Some(Instant::now());
                f.set_isolated(victim, true)?;
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                f.set_isolated(victim, false)?;
            }
            Net::Relays(relays) => {
                let touching = relays_of(relays, victim);
                fault_at = Some(Instant::now());
                for rl in &touching {
                    rl.set_blocked(true);
                }
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                for rl in &touching {
                    rl.set_blocked(false);
                }
            }
            Net::Loopback => return Err("partition without relays or a fabric".into()),
        },
        Fault::Loss => match net {
            Net::Fabric(f) if r.mechanism.starts_with("tc netem") => {
                fault_at = Some(Instant::now());
                f.netem(victim, &["loss", &format!("{}%", o.loss_percent)])?;
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                f.clear_netem(victim)?;
            }
            Net::Fabric(f) => {
                fault_at = Some(Instant::now());
                f.nft_loss(victim, o.loss_percent)?;
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                let dropped = f.clear_nft_loss(victim)?;
                note = format!("; {dropped} packets dropped");
                if dropped == 0 {
                    r.problems
                        .push("the loss rule dropped no packet: the fault was not injected".into());
                }
            }
            Net::Relays(relays) => {
                let touching = relays_of(relays, victim);
                fault_at = Some(Instant::now());
                for rl in &touching {
                    rl.set_loss(Some(LossModel::tcp(o.loss_percent)));
                }
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                for rl in &touching {
                    rl.set_loss(None);
                }
                let stalls: u64 = touching.iter().map(|rl| rl.stalls()).sum();
                let resets: u64 = touching.iter().map(|rl| rl.resets()).sum();
                note = format!("; {stalls} stalls, {resets} connections closed");
                if stalls + resets == 0 {
                    r.problems.push(
                        "the relays imitated no loss (no stall, no closed connection): the fault \
                         was not injected"
                            .into(),
                    );
                }
            }
            Net::Loopback => return Err("loss without relays or a fabric".into()),
        },
        Fault::Delay => match net {
            Net::Fabric(f) => {
                fault_at = Some(Instant::now());
                f.netem(victim, &["delay", &format!("{}ms", o.delay_ms)])?;
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                f.clear_netem(victim)?;
            }
            Net::Relays(relays) => {
                let touching = relays_of(relays, victim);
                let before: u64 = touching.iter().map(|rl| rl.forwarded()).sum();
                fault_at = Some(Instant::now());
                for rl in &touching {
                    rl.set_delay(Duration::from_millis(o.delay_ms));
                }
                elected = watch(servers, victim, &r.victim_led_logs, hold);
                for rl in &touching {
                    rl.set_delay(Duration::ZERO);
                }
                let during: u64 = touching.iter().map(|rl| rl.forwarded()).sum::<u64>() - before;
                note = format!("; {during} bytes relayed while delayed");
                if during == 0 {
                    r.problems.push(
                        "no byte went through the delaying relays: the fault was not injected"
                            .into(),
                    );
                }
            }
            Net::Loopback => return Err("delay without relays or a fabric".into()),
        },
        Fault::PartialFrames => {
            let addr = network.listen_addr(victim)?;
            let before = servers.rss_kib(victim)?;
            let stop = Arc::new(AtomicBool::new(false));
            let hostile = partial_frames(addr, target, stop.clone())?;
            fault_at = Some(Instant::now());
            let mut peak = before;
            while fault_at.is_some_and(|t| t.elapsed() < hold) {
                if let Ok(kib) = servers.rss_kib(victim) {
                    peak = peak.max(kib);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
            let pushed = hostile
                .join()
                .map_err(|_| "the partial-frame thread panicked")??;
            r.victim_rss_kib = Some((before, peak));
            note = format!(
                "; {} connections opened, {} sent all but the last byte, {} closed by node \
                 {victim} before the end, {} MiB sent; node {victim}'s resident set {} -> at \
                 most {} MiB",
                pushed.opened,
                pushed.completed,
                pushed.closed_by_victim,
                pushed.bytes >> 20,
                before >> 10,
                peak >> 10
            );
            if peak.saturating_sub(before) > RSS_GROWTH_MAX_KIB {
                r.problems.push(format!(
                    "node {victim}'s resident set grew from {} to {} MiB under {PARTIAL_CONNS} \
                     partial frames, by more than the bound of {} MiB (the default inbound \
                     byte budget of 128 MiB plus 64 MiB)",
                    before >> 10,
                    peak >> 10,
                    RSS_GROWTH_MAX_KIB >> 10
                ));
            }
        }
        Fault::FdExhaust => {
            let addr = network.listen_addr(victim)?;
            raise_own_open_file_limit(FLOOD_CONNS_MAX as u64 + 1024)?;
            servers.set_open_file_limit(victim, FD_LIMIT)?;
            fault_at = Some(Instant::now());
            let mut flood = Vec::new();
            let (mut timeouts, mut consecutive, mut other) = (0usize, 0usize, None);
            let mut peak = servers.open_fds(victim).unwrap_or(0);
            while flood.len() < FLOOD_CONNS_MAX && consecutive < 3 {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(250)) {
                    Ok(c) => {
                        flood.push(c);
                        consecutive = 0;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        timeouts += 1;
                        consecutive += 1;
                    }
                    Err(e) => {
                        other = Some(e.to_string());
                        break;
                    }
                }
                if flood.len() % 16 == 0 {
                    peak = peak.max(servers.open_fds(victim).unwrap_or(0));
                }
            }
            while fault_at.is_some_and(|t| t.elapsed() < hold) {
                peak = peak.max(servers.open_fds(victim).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            let closed = flood.iter().filter(|c| closed_by_peer(c)).count();
            let opened = flood.len();
            let queued = listen_queue(addr);
            drop(flood);
            // Nothing connects now: the listener must drain its backlog (the closed
            // connections queued in it) on its own.
            let closed_at = Instant::now();
            let drained = loop {
                match listen_queue(addr) {
                    Some(0) => break Some(closed_at.elapsed()),
                    _ if closed_at.elapsed() > RECOVERY_BOUND => break None,
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            r.victim_fds = Some((peak, FD_LIMIT));
            let show = |q: Option<u64>| q.map_or("?".into(), |q| q.to_string());
            note = format!(
                "; {opened} connections opened, {timeouts} connects timed out (a full backlog), \
                 {closed} closed by node {victim} before the end{}; node {victim} held at most \
                 {peak} descriptors of its limit of {FD_LIMIT}; its listen queue held {} \
                 connections at the end, {}",
                other.map_or(String::new(), |e| format!(", then a connect failed: {e}")),
                show(queued),
                match drained {
                    Some(d) => format!("drained {:.0} ms after", d.as_secs_f64() * 1e3),
                    None => format!(
                        "still {} after {:.0} s",
                        show(listen_queue(addr)),
                        RECOVERY_BOUND.as_secs_f64()
                    ),
                }
            );
            if drained.is_none() {
                r.problems.push(format!(
                    "node {victim}'s listener did not drain its backlog within {:.0} s of the \
                     pressure's end ({} connections still queued): it accepts nothing more",
                    RECOVERY_BOUND.as_secs_f64(),
                    show(listen_queue(addr))
                ));
            }
            if peak + 1 < FD_LIMIT {
                r.problems.push(format!(
                    "node {victim} held at most {peak} descriptors, never its limit of \
                     {FD_LIMIT}: the fault was not injected"
                ));
            }
        }
        Fault::WipeData => {
            fault_at = Some(Instant::now());
            servers.kill(victim)?;
            let data = dir.join("data").join(format!("node-{victim}"));
            std::fs::remove_dir_all(&data).map_err(|e| format!("wipe {}: {e}", data.display()))?;
            elected = watch(servers, victim, &r.victim_led_logs, hold);
            note = wipe_and_recover(r, servers, victim)?;
        }
        Fault::ControlWipeAll => {
            fault_at = Some(Instant::now());
            for &n in nodes {
                servers.kill(n)?;
            }
            std::fs::remove_dir_all(dir.join("data")).map_err(|e| format!("wipe: {e}"))?;
            for &n in nodes {
                servers.restart(n)?;
            }
            elected = watch(servers, victim, &r.victim_led_logs, hold);
        }
    }
    r.mechanism.push_str(&note);
    r.new_leader_ms = elected.map(|d: Duration| d.as_secs_f64() * 1e3);
    Ok(Injected {
        fault_at,
        healed_at: Instant::now(),
    })
}

/// The relays of every link to and from `victim`.
fn relays_of(relays: &BTreeMap<(u32, u32), Relay>, victim: u32) -> Vec<&Relay> {
    relays
        .iter()
        .filter(|((a, b), _)| *a == victim || *b == victim)
        .map(|(_, rl)| rl)
        .collect()
}

/// `wipe-data`, once the victim's data directory is gone: restarts it without
/// [`RECOVER_FLAG`] (it must exit with a message within [`REFUSAL_PATIENCE`]), then with it
/// (it must keep running). Problems go to `r`; returns a note for the mechanism.
fn wipe_and_recover(
    r: &mut RunReport,
    servers: &mut Servers,
    victim: u32,
) -> Result<String, String> {
    let mut note = String::new();
    let from = servers.log_len(victim);
    servers.restart(victim)?;
    let started = Instant::now();
    match servers.wait_exit(victim, REFUSAL_PATIENCE) {
        Some(status) if !status.success() => {
            let said = servers.log_since(victim, from);
            let last = said.lines().rev().find(|l| !l.trim().is_empty());
            match last {
                Some(line) => {
                    note = format!(
                        "; without {RECOVER_FLAG} refused after {:.1} s ({status}): {}",
                        started.elapsed().as_secs_f64(),
                        line.trim()
                    );
                }
                None => r.problems.push(format!(
                    "node {victim}, restarted on a wiped data directory without \
                     {RECOVER_FLAG}, exited ({status}) without saying why"
                )),
            }
        }
        Some(status) => r.problems.push(format!(
            "node {victim}, restarted on a wiped data directory without {RECOVER_FLAG}, exited \
             successfully ({status}) instead of refusing with an error"
        )),
        None => {
            r.problems.push(format!(
                "node {victim}, restarted on a wiped data directory without {RECOVER_FLAG}, was \
                 not refused: still running after {:.0} s (an acceptor with no memory of its \
                 promises and accepts voting again: the Paxos amnesia hazard)",
                REFUSAL_PATIENCE.as_secs_f64()
            ));
            servers.kill(victim)?;
        }
    }
    let from = servers.log_len(victim);
    servers.restart_with(victim, &[RECOVER_FLAG])?;
    if let Some(status) = servers.wait_exit(victim, Duration::from_secs(1)) {
        let said = servers.log_since(victim, from);
        let tail: Vec<&str> = said
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(3)
            .collect();
        r.problems.push(format!(
            "node {victim}, restarted with {RECOVER_FLAG}, exited ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(note)
}

/// What the hostile connections of `partial-frames` did.
struct Pushed {
    opened: usize,
    /// Connections that sent their frame but its last byte.
    completed: usize,
    /// Connections the victim closed before the end.
    closed_by_victim: usize,
    bytes: u64,
}

/// One hostile connection of `partial-frames`: what it still has to send.
struct PartialFrame {
    stream: std::net::TcpStream,
    head: Vec<u8>,
    head_sent: usize,
    body_left: usize,
    closed: bool,
}

/// The bytes that open hostile connection `i`: a frame header announcing a frame of
/// [`FRAME_BYTES_MAX`] bytes (a `Hello` on even connections, the first frame; a `Msg` after
/// a real `Hello` claiming one of the spare client ids on odd ones), and how many body bytes
/// follow (all but the frame's last).
fn partial_head(i: usize, t: &Target) -> Result<(Vec<u8>, usize), String> {
    let mut head = Vec::new();
    let kind = if i % 2 == 1 && !t.spare_clients.is_empty() {
        let node = groups::ids::NodeId(t.spare_clients[(i / 2) % t.spare_clients.len()]);
        frame::encode(
            &Postcard,
            t.cluster_id,
            &Frame::Hello(Hello { node, nonce: None }),
            &mut head,
        )
        .map_err(|e| format!("hello: {e}"))?;
        FrameKind::Msg
    } else {
        FrameKind::Hello
    };
    const HEADER: usize = 10;
    head.extend_from_slice(&(FRAME_BYTES_MAX as u32).to_le_bytes());
    head.push(PROTOCOL_VERSION);
    head.push(kind as u8);
    head.extend_from_slice(&t.cluster_id.to_le_bytes());
    Ok((head, FRAME_BYTES_MAX - HEADER - 1))
}

/// Opens the hostile connections of `partial-frames` to `addr` and, in a thread, sends each
/// its partial frame as fast as the victim takes it, holding them until `stop`, then closes
/// them.
fn partial_frames(
    addr: SocketAddr,
    t: &Target,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<Pushed, String>>, String> {
    let mut conns = Vec::new();
    for i in 0..PARTIAL_CONNS {
        let (head, body_left) = partial_head(i, t)?;
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("partial-frames: connect {addr}: {e}"))?;
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("partial-frames: {e}"))?;
        conns.push(PartialFrame {
            stream,
            head,
            head_sent: 0,
            body_left,
            closed: false,
        });
    }
    std::thread::Builder::new()
        .name("partial-frames".into())
        .spawn(move || {
            use std::io::Write;
            let zeros = vec![0u8; 64 << 10];
            let mut bytes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut progress = false;
                for c in conns.iter_mut().filter(|c| !c.closed) {
                    loop {
                        let chunk = if c.head_sent < c.head.len() {
                            &c.head[c.head_sent..]
                        } else if c.body_left > 0 {
                            &zeros[..c.body_left.min(zeros.len())]
                        } else {
                            break;
                        };
                        match c.stream.write(chunk) {
                            Ok(n) => {
                                progress = true;
                                bytes += n as u64;
                                let from_head = n.min(c.head.len() - c.head_sent);
                                c.head_sent += from_head;
                                c.body_left -= n - from_head;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                c.closed = true;
                                break;
                            }
                        }
                    }
                }
                if !progress {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let completed = conns
                .iter()
                .filter(|c| c.head_sent == c.head.len() && c.body_left == 0)
                .count();
            let closed_by_victim = conns
                .iter()
                .filter(|c| c.closed || closed_by_peer(&c.stream))
                .count();
            Ok(Pushed {
                opened: conns.len(),
                completed,
                closed_by_victim,
                bytes,
            })
        })
        .map_err(|e| format!("partial-frames thread: {e}"))
}

/// How many connections wait in the accept queue of the loopback listener at `addr` (the
/// `rx_queue` of its LISTEN line in /proc/net/tcp), if it is there.
fn listen_queue(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(a) = addr else {
        return None;
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.get(1) != Some(&local.as_str()) || w.get(3) != Some(&"0A") {
            return None;
        }
        let (_, rx) = w.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// Whether the other side has closed `c` (a read without blocking sees the end or an error).
fn closed_by_peer(c: &std::net::TcpStream) -> bool {
    use std::io::Read;
    if c.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 64];
    let mut reader: &std::net::TcpStream = c;
    match reader.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Raises this process's soft open-file limit to `want` (or its hard limit, if lower), so
/// that it can hold the connections of `fd-exhaust`.
fn raise_own_open_file_limit(want: u64) -> Result<(), String> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if l.rlim_cur >= want {
        return Ok(());
    }
    l.rlim_cur = want.min(l.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Counts the operations completed while the fault was on in `r`; for the faults that must
/// not stop service (`partial-frames`, `fd-exhaust`), none is a problem.
pub(crate) fn served_during<C, R>(r: &mut RunReport, recs: &[Rec<C, R>], t: &Target, i: &Injected) {
    let Some(at) = i.fault_at else {
        return;
    };
    let n = recs
        .iter()
        .filter_map(|rec| rec.ret.as_ref())
        .filter(|(done, _)| *done >= at && *done <= i.healed_at)
        .count();
    r.ops_during_fault = Some(n);
    if n == 0 && matches!(t.fault, Fault::PartialFrames | Fault::FdExhaust) {
        r.problems.push(format!(
            "no operation completed during the {} fault ({:.1} s): the cluster stopped serving",
            t.fault.name(),
            i.healed_at.duration_since(at).as_secs_f64()
        ));
    }
}

/// `fd-exhaust`, once the flood is closed: a client node that connects only now (the spare
/// client `id` of `cluster`, with `proxy`) sends `probe` through a log the victim leads; the
/// reply must come within [`RECOVERY_BOUND`] of the end of the pressure (`i.healed_at`).
pub(crate) fn probe_fresh_client<P>(
    r: &mut RunReport,
    cluster: Arc<ClusterConfig>,
    id: NodeId,
    proxy: P,
    probe: P::Command,
    t: &Target,
    i: &Injected,
) -> Result<(), String>
where
    P: Proxy,
    P::Command: Clone + Send + 'static,
    P::Reply: Send + 'static,
{
    let fresh = ClientNode::start(cluster, id, vec![proxy])?;
    let by = i.healed_at + RECOVERY_PATIENCE;
    let mut answered = None;
    while Instant::now() < by {
        let left = by.saturating_duration_since(Instant::now());
        if let Some(Ok(_)) = fresh.handle.call(0, probe.clone(), left) {
            answered = Some(i.healed_at.elapsed());
            break;
        }
    }
    drop(fresh);
    r.recovery_ms = answered.map(|d| d.as_secs_f64() * 1e3);
    match answered {
        Some(d) if d <= RECOVERY_BOUND => {}
        Some(d) => r.problems.push(format!(
            "node {} served a client that connected after the pressure only {:.1} s after it \
             ended (bound {:.0} s)",
            t.victim,
            d.as_secs_f64(),
            RECOVERY_BOUND.as_secs_f64()
        )),
        None => r.problems.push(format!(
            "node {} did not serve a client that connected after the pressure (a command \
             through log(s) {:?} it leads): no reply within {:.0} s of the pressure's end \
             (bound {:.0} s)",
            t.victim,
            r.victim_led_logs,
            RECOVERY_PATIENCE.as_secs_f64(),
            RECOVERY_BOUND.as_secs_f64()
        )),
    }
    Ok(())
}

/// Records the final replica state hashes in `r`.
pub(crate) fn record_hashes(r: &mut RunReport, hashes: &BTreeMap<u32, u64>) {
    r.final_hashes = hashes
        .iter()
        .map(|(n, h)| (*n, format!("{h:016x}")))
        .collect();
}

/// A problem for every server that exited on its own.
fn report_exits(r: &mut RunReport, servers: &mut Servers) {
    for (n, status) in servers.exited() {
        r.problems.push(format!(
            "node {n} exited on its own ({status}):\n{}",
            servers.log_tail(n, 15)
        ));
    }
}

/// Reports the servers that exited on their own, then stops the client node, the servers and
/// the network, in that order.
pub(crate) fn finish<C, R>(
    r: &mut RunReport,
    mut servers: Servers,
    client: ClientNode<C, R>,
    network: Network,
) {
    report_exits(r, &mut servers);
    drop(client);
    drop(servers);
    drop(network);
}

/// The recorded operations as a history (instants in µs from `start`); counts the completed
/// and unknown operations in `r`.
pub(crate) fn history<C: Clone, R: Clone>(
    r: &mut RunReport,
    recs: &[Rec<C, R>],
    start: Instant,
) -> Vec<Operation<C, R>> {
    let us = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
    let history: Vec<Operation<C, R>> = recs
        .iter()
        .map(|rec| match &rec.ret {
            Some((at, reply)) => Operation::completed(
                rec.thread as u64,
                rec.cmd.clone(),
                us(rec.call),
                us(*at),
                reply.clone(),
            ),
            None => Operation::unknown(rec.thread as u64, rec.cmd.clone(), us(rec.call)),
        })
        .collect();
    r.completed_ops = history.iter().filter(|h| h.ret.is_some()).count();
    r.unknown_ops = history.len() - r.completed_ops;
    history
}

/// Records the checker's verdict on the history in `r`.
pub(crate) fn record_verdict(r: &mut RunReport, verdict: &engine::lincheck::Verdict) {
    r.linearizable = verdict.to_string();
    if !verdict.is_linearizable() {
        r.problems.push(format!("history: {verdict}"));
    }
}

/// Records the acknowledged writes lost (the first five as problems).
pub(crate) fn record_lost(r: &mut RunReport, lost: &[String]) {
    r.lost_acks = lost.len();
    for l in lost.iter().take(5) {
        r.problems.push(format!("acknowledged write lost: {l}"));
    }
}

/// A problem if too few operations completed for the run to mean anything.
pub(crate) fn check_ran(r: &mut RunReport) {
    if r.completed_ops < 20 {
        r.problems.push(format!(
            "only {} operations completed: the clients barely ran",
            r.completed_ops
        ));
    }
}

/// Failover: for each log the victim led, the first reply to a command submitted after
/// the fault and routed through it.
pub(crate) fn failover(r: &mut RunReport, tap: &Tap, t: &Target, i: &Injected) {
    let (fault, victim) = (t.fault, t.victim);
    if let (Some(at), false) = (i.fault_at, r.victim_led_logs.is_empty()) {
        let seen = tap.seen.lock();
        let mut worst = Some(Duration::ZERO);
        for &log in &r.victim_led_logs {
            let first = seen
                .values()
                .filter(|s| s.logs.contains(&log) && s.submitted.is_some_and(|t| t > at))
                .filter_map(|s| s.completed)
                .min();
            worst = match (worst, first) {
                (Some(w), Some(f)) => Some(w.max(f - at)),
                _ => None,
            };
        }
        r.failover_ms = worst.map(|w| w.as_secs_f64() * 1e3);
        if r.failover_ms.is_none() && fault == Fault::KillLeader {
            r.problems.push(format!(
                "no command submitted after the kill completed on every log node {victim} led \
                 ({:?}) before the run ended ({:.1} s after healing)",
                r.victim_led_logs,
                i.healed_at.elapsed().as_secs_f64()
            ));
        }
    }
}

/// Waits `hold`, watching the servers other than `victim`: how long until every log in `logs`
/// had a leader other than `victim` (as their `chorus_log_is_leader` gauges show; the nodes
/// refresh them every 200 ms), if that happened.
pub(crate) fn watch(
    servers: &Servers,
    victim: u32,
    logs: &[u32],
    hold: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut elected = None;
    while start.elapsed() < hold {
        if elected.is_none() && !logs.is_empty() {
            let mut led = BTreeSet::new();
            for n in servers.nodes().into_iter().filter(|&n| n != victim) {
                let body = servers.metrics_addr(n).and_then(|a| scrape(a).ok());
                for (log, v) in per_log(body.as_deref().unwrap_or(""), "chorus_log_is_leader") {
                    if v == 1.0 {
                        led.insert(log);
                    }
                }
            }
            if logs.iter().all(|l| led.contains(l)) {
                elected = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20).min(hold.saturating_sub(start.elapsed())));
    }
    elected
}

/// Log -> its leader, from the servers' `chorus_log_is_leader` gauges, once every log has one
/// (waits up to `patience`).
pub(crate) fn leaders(servers: &Servers, patience: Duration) -> Result<BTreeMap<u32, u32>, String> {
    let by = Instant::now() + patience;
    loop {
        let mut led = BTreeMap::new();
        let mut logs = BTreeSet::new();
        for n in servers.nodes() {
            let Some(addr) = servers.metrics_addr(n) else {
                continue;
            };
            if let Ok(body) = scrape(addr) {
                for (log, v) in per_log(&body, "chorus_log_is_leader") {
                    logs.insert(log);
                    if v == 1.0 {
                        led.insert(log, n);
                    }
                }
            }
        }
        if !logs.is_empty() && logs.iter().all(|l| led.contains_key(l)) {
            return Ok(led);
        }
        if Instant::now() > by {
            return Err(format!(
                "not every log has a leader after {patience:?}: logs {logs:?}, leaders {led:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
