//! One run against Chirper on DS-SMR: two partitions of three replicas and an oracle of
//! three, nine `chirper-server` processes (replicas colocated with the acceptors of their
//! group's log; the global log's acceptors are one replica of each group), durable logs, one
//! fault.
//!
//! Clients of one in-process TCP client node post, follow, unfollow and read timelines on a
//! small generated social graph through [`ScaleOutClient`]s, recording every invocation and
//! response. Checks: the history is linearizable against [`ChirperModel`] (timelines are long
//! enough never to drop a post, so the model keeps every post); every replica of each group
//! (partition 0, partition 1, the oracle) ends with the same state hash, as its metrics
//! (`chorus_replica_state_hash`) show; every acknowledged post is in its author's final
//! timeline (read for every user once the clients stopped, part of the history); no server
//! died except the victim.

use crate::btree::{free_port, leaders, sock, watch, Net, NetKind, Plan, STARTUP};
use crate::net::{Capabilities, Fabric};
use crate::procs::{scrape, Scratch, Servers, Spec};
use crate::relay::Relay;
use crate::tap::{ScaleOutRecording, Tap};
use crate::{Fault, Options, RunReport};
use bytes::Bytes;
use chirper::cli::{DeploymentFile, ServiceSection};
use chirper::graph::GraphSpec;
use chirper::model::{ChirperModel, SpecUser};
use chirper::service::{Chirper, Command, Post, Reply, UserId};
use engine::client::{incarnation_index, ClientError, ClientHandle, HandleApp};
use engine::lincheck::{self, Budget, Operation};
use engine::partitioned::client::{ClientOptions, ScaleOutClient};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::replica::Role;
use engine::partitioned::wire::Response;
use engine::partitioned::Scheme;
use groups::config::{ClusterConfig, Durability, Tuning};
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

const PARTITIONS: u32 = 2;
const REPLICAS: usize = 3;
/// Users of the generated graph (ids `0..USERS`), the workload's users.
const USERS: u32 = 16;
/// Probe users, created before the history starts and touched by nothing but the probes:
/// `PROBE_USER + p` is placed on partition `p` (ids beyond the graph go to `id % partitions`)
/// and never moves, so reading its timeline goes through partition `p`'s log alone.
const PROBE_USER: UserId = 1000;
/// Users the global log's probe creates (a create goes to the oracle and a partition).
const FRESH_USERS: UserId = 100_000;
/// Longer than any run's posts: the model and the replicas then keep every post, so an
/// acknowledged post missing from its author's final timeline is a lost post.
const TIMELINE_LEN: usize = 4096;
/// Proxies per client thread (see `btree::SLOTS_PER_THREAD`).
const SLOTS_PER_THREAD: usize = 8;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The workload's pause between commands: keeps the history (checked as one part: a post
/// touches any follower) small enough for the checker.
const THINK: Duration = Duration::from_millis(8);
/// The probes' pause between commands (the failover time's resolution).
const PROBE_THINK: Duration = Duration::from_millis(5);
const NS_PORT: u16 = 7100;
const NS_METRICS_PORT: u16 = 9100;

type Reply2 = Response<Reply>;

/// The `[service]` table every process builds the same graph and placement from.
fn section() -> ServiceSection {
    let spec = GraphSpec {
        users: USERS,
        communities: 2,
        mean_followees: 3.0,
        locality: 0.8,
        popularity_exponent: 1.0,
        seed: 11,
    };
    let mut s = ServiceSection::generated(Scheme::Dssmr, PARTITIONS, &spec, 1.0);
    s.timeline_len = TIMELINE_LEN;
    s
}

fn layout() -> Result<ScaleOutLayout, String> {
    let tuning = Tuning {
        // Replicas rebuild their state from the logs: nothing may be trimmed.
        trim: false,
        ..layout::tuning()
    };
    ScaleOutLayout::new(Scheme::Dssmr, PARTITIONS, REPLICAS, 1, 1, tuning)
        .map_err(|e| e.to_string())
}

/// How `fault` can be injected on this machine, or why it cannot.
fn plan(fault: Fault, caps: &Capabilities, o: &Options) -> Result<Plan, String> {
    let p = |mechanism: String, net_kind| {
        Ok(Plan {
            mechanism,
            net_kind,
        })
    };
    match fault {
        Fault::KillLeader => p("SIGKILL the leader of the global log or of a partition's log, restart it from its durable logs".into(), NetKind::Loopback),
        Fault::KillFollower => p("SIGKILL a follower of a random log, restart it from its durable logs".into(), NetKind::Loopback),
        Fault::KillOracle => p("SIGKILL an oracle replica, restart it from its durable logs".into(), NetKind::Loopback),
        Fault::ControlWipeAll => p("negative control: SIGKILL all servers, delete their durable logs, restart them".into(), NetKind::Loopback),
        Fault::Pause => p("SIGSTOP the global log's leader, then SIGCONT".into(), NetKind::Loopback),
        Fault::Partition => match &caps.netns {
            Ok(()) => p("network namespace: a random node's veth link down, then up".into(), NetKind::Fabric),
            Err(e) => Err(format!("partition needs network namespaces: {e}")),
        },
        Fault::Loss => match (&caps.netns, &caps.netem, &caps.nft) {
            (Err(e), _, _) => Err(format!("loss needs network namespaces: {e}")),
            (Ok(()), Ok(()), _) => p(format!("tc netem loss {}% on the global log leader's link (both directions)", o.loss_percent), NetKind::Fabric),
            (Ok(()), Err(netem), Ok(())) => p(format!(
                "nftables `numgen random mod 100 < {}` drop in and out of the global log leader's namespace ({netem})",
                o.loss_percent
            ), NetKind::Fabric),
            (Ok(()), Err(netem), Err(nft)) => Err(format!("loss: {netem}; {nft}")),
        },
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
    }
}

/// The in-process client node; stopped when dropped.
struct ClientNode {
    handle: ClientHandle<Command, Reply2>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ClientNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One recorded operation, with instants.
struct Rec {
    thread: usize,
    cmd: Command,
    call: Instant,
    ret: Option<(Instant, Reply2)>,
}

/// Runs one campaign run of Chirper on DS-SMR with `fault`.
pub fn run(
    o: &Options,
    caps: &Capabilities,
    binary: &Path,
    index: usize,
    seed: u64,
    fault: Fault,
) -> RunReport {
    let started = Instant::now();
    let mut r = RunReport {
        index,
        seed,
        service: "chirper".into(),
        fault: fault.name().into(),
        ..RunReport::default()
    };
    let plan = match plan(fault, caps, o) {
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
    for attempt in 1.. {
        match run_inner(o, binary, seed, fault, &plan, &dir, &mut r) {
            Err(e) if e.starts_with(STARTUP) && attempt < 3 => {
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

/// The specification's initial state: the graph's users and the probe users.
pub fn model(section: &ServiceSection) -> Result<ChirperModel, String> {
    let graph = section.graph()?;
    let mut initial: BTreeMap<UserId, SpecUser> = (0..graph.users())
        .map(|u| {
            (
                u,
                SpecUser {
                    followers: graph.followers(u).iter().copied().collect(),
                    followees: graph.followees(u).iter().copied().collect(),
                    timeline: Default::default(),
                },
            )
        })
        .collect();
    for p in 0..PARTITIONS {
        initial.insert(PROBE_USER + p, SpecUser::default());
    }
    Ok(ChirperModel {
        initial,
        timeline_len: section.timeline_len,
    })
}

fn run_inner(
    o: &Options,
    binary: &Path,
    seed: u64,
    fault: Fault,
    plan: &Plan,
    dir: &Path,
    r: &mut RunReport,
) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    r.mode = "ds-smr".into();
    let lay = layout()?;
    let servers_ids: Vec<u32> = lay
        .config
        .nodes
        .iter()
        .filter(|n| !lay.is_client(n.id))
        .map(|n| n.id.0)
        .collect();
    let me = lay.clients[0];
    let all_groups = lay.config.all_groups();
    let global_log = lay
        .config
        .logs
        .iter()
        .find(|l| l.covers == all_groups)
        .map(|l| l.id.0)
        .ok_or("the deployment has no log covering every group")?;
    let durability =
        Durability::from_words("disk", Some("data")).map_err(|e| format!("durability: {e}"))?;
    let base = lay
        .config
        .clone()
        .with_durability(durability)
        .map_err(|e| e.to_string())?;
    let section = section();

    let tag = std::process::id()
        .wrapping_mul(31)
        .wrapping_add(r.index as u32)
        % 100_000;
    let mut listen: BTreeMap<u32, SocketAddr> = BTreeMap::new();
    let mut metrics: BTreeMap<u32, SocketAddr> = BTreeMap::new();
    let mut all_nodes: Vec<u32> = servers_ids.clone();
    all_nodes.push(me.0);
    let net = match plan.net_kind {
        NetKind::Fabric => {
            let f = Fabric::new(tag, &servers_ids)?;
            for &n in &servers_ids {
                let ip = f.ip(n)?;
                listen.insert(n, sock(&ip, NS_PORT)?);
                metrics.insert(n, sock(&ip, NS_METRICS_PORT)?);
            }
            let host = f.host_ip();
            listen.insert(me.0, sock(&host, free_port(&host)?)?);
            Net::Fabric(f)
        }
        NetKind::Loopback | NetKind::Relays => {
            for &n in &all_nodes {
                listen.insert(n, sock("127.0.0.1", free_port("127.0.0.1")?)?);
            }
            for &n in &servers_ids {
                metrics.insert(n, sock("127.0.0.1", free_port("127.0.0.1")?)?);
            }
            if plan.net_kind == NetKind::Relays {
                let mut relays = BTreeMap::new();
                for &a in &all_nodes {
                    for &b in &all_nodes {
                        if a != b {
                            relays.insert((a, b), Relay::start(listen[&b])?);
                        }
                    }
                }
                Net::Relays(relays)
            } else {
                Net::Loopback
            }
        }
    };
    let view = |viewer: u32| -> ClusterConfig {
        let mut c = base.clone();
        for n in &mut c.nodes {
            let addr = match &net {
                Net::Relays(relays) if n.id.0 != viewer => relays[&(viewer, n.id.0)].addr(),
                _ => listen[&n.id.0],
            };
            n.addr = Some(addr.to_string());
        }
        c
    };

    // Servers.
    let mut servers = Servers::default();
    for &n in &servers_ids {
        let file = DeploymentFile {
            section: section.clone(),
            scheme: Scheme::Dssmr,
            cluster: view(n),
        };
        let config = dir.join(format!("node-{n}.toml"));
        std::fs::write(&config, file.render()?)
            .map_err(|e| format!("{}: {e}", config.display()))?;
        servers.start(Spec {
            node: n,
            binary: binary.to_path_buf(),
            config,
            netns: match &net {
                Net::Fabric(f) => Some(f.ns(n)?),
                _ => None,
            },
            metrics: metrics[&n],
            cwd: dir.to_path_buf(),
            log: dir.join(format!("node-{n}.log")),
        })?;
    }

    // The client node.
    let cluster = Arc::new(view(me.0));
    let service: Arc<Chirper> = Arc::new(section.service()?);
    let tap = Arc::new(Tap::default());
    let first = incarnation_index();
    let probe_base = o.clients * SLOTS_PER_THREAD;
    let logs_total = lay.config.logs.len();
    let slots = probe_base + logs_total * SLOTS_PER_THREAD + 1;
    let proxies: Vec<ScaleOutRecording<Chirper>> = (0..slots)
        .map(|i| {
            let mut opts = ClientOptions::new(Scheme::Dssmr, PARTITIONS);
            opts.seed = seed;
            ScaleOutRecording::new(
                ScaleOutClient::new(
                    engine::wire::ClientId::new(me, first.wrapping_add(i as u32)),
                    service.clone(),
                    opts,
                ),
                tap.clone(),
                cluster.clone(),
            )
        })
        .collect();
    let (app, handle) = HandleApp::from_proxies(proxies);
    let node = GroupsNode::in_memory(cluster.clone(), me, NodeOptions::fresh());
    let tcp = TcpNode::bind(node, app).map_err(|e| format!("client node: {e}"))?;
    let stop_flag = tcp.stop_flag();
    let client = ClientNode {
        handle,
        stop: stop_flag,
        thread: Some(std::thread::spawn(move || {
            let _ = tcp.run(None);
        })),
    };

    // Wait until the deployment answers, create the probe users, wait for every log's leader.
    let t0 = Instant::now();
    let ready_by = t0 + Duration::from_secs(40);
    let final_slot = slots - 1;
    loop {
        if let Some(Ok(_)) =
            client
                .handle
                .call(final_slot, Command::GetTimeline(0), Duration::from_secs(2))
        {
            break;
        }
        if Instant::now() > ready_by {
            return Err(format!(
                "{STARTUP}the deployment never answered; node 1 says:\n{}",
                servers.log_tail(1, 10)
            ));
        }
    }
    for p in 0..PARTITIONS {
        match client.handle.call(
            final_slot,
            Command::CreateUser(PROBE_USER + p),
            Duration::from_secs(10),
        ) {
            Some(Ok(Response::Created)) => {}
            other => return Err(format!("{STARTUP}creating probe user {p}: {other:?}")),
        }
    }
    leaders(&servers, Duration::from_secs(15))?;
    if let Some((n, status)) = servers.exited().into_iter().next() {
        return Err(format!(
            "{STARTUP}node {n} exited ({status}): {}",
            servers.log_tail(n, 3)
        ));
    }
    for &n in &servers_ids {
        let addr = servers.metrics_addr(n).ok_or("no metrics address")?;
        scrape(addr).map_err(|e| format!("{STARTUP}node {n} does not serve: {e}"))?;
    }
    let history_start = Instant::now();
    if o.verbose {
        eprintln!(
            "  run {}: ready after {:.1} s",
            r.index,
            t0.elapsed().as_secs_f64()
        );
    }

    // Clients.
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..o.clients {
        let mut trng = ChaCha8Rng::seed_from_u64(seed ^ (0x9E37_79B9 * (t as u64 + 1)));
        threads.push(spawn_client(
            client.handle.clone(),
            stop.clone(),
            t,
            t * SLOTS_PER_THREAD..(t + 1) * SLOTS_PER_THREAD,
            THINK,
            move |n| command(&mut trng, t, n),
        ));
    }

    // The fault.
    let warm = Duration::from_secs_f64(rng.random_range(1.0..2.5));
    let hold = Duration::from_secs_f64(rng.random_range(o.fault_secs.0..o.fault_secs.1));
    std::thread::sleep(warm);
    let led = leaders(&servers, Duration::from_secs(10))?;
    let leader_of = |log: u32| {
        led.get(&log)
            .copied()
            .ok_or_else(|| format!("log {log} has no leader: {led:?}"))
    };
    let global_leader = leader_of(global_log)?;
    let fault_at;
    let victim = match fault {
        Fault::KillLeader => {
            let log = if rng.random_bool(0.5) {
                global_log
            } else {
                rng.random_range(0..PARTITIONS)
            };
            r.mechanism.push_str(&format!(" (the leader of log {log})"));
            leader_of(log)?
        }
        Fault::Pause | Fault::Loss | Fault::Delay | Fault::ControlWipeAll => global_leader,
        Fault::KillFollower => {
            let logs: Vec<u32> = led.keys().copied().collect();
            let log = logs[rng.random_range(0..logs.len())];
            let followers: Vec<u32> = lay
                .config
                .logs
                .iter()
                .find(|l| l.id.0 == log)
                .map(|l| l.acceptors.iter().map(|a| a.0).collect::<Vec<u32>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|&n| led[&log] != n)
                .collect();
            if followers.is_empty() {
                return Err(format!("log {log} has no follower"));
            }
            let v = followers[rng.random_range(0..followers.len())];
            r.mechanism.push_str(&format!(
                " (a follower of log {log}; it may lead another log)"
            ));
            v
        }
        Fault::KillOracle => lay.oracle_replicas[rng.random_range(0..lay.oracle_replicas.len())].0,
        Fault::Partition => servers_ids[rng.random_range(0..servers_ids.len())],
    };
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
            fault.name(),
            r.victim_led_logs,
            hold.as_secs_f64()
        );
    }
    // Probes: one client per log the victim leads, going through that log without pause
    // (a partition's log: a timeline read of that partition's probe user; the oracle's and
    // the global log: a create of a fresh user, which consults the oracle and then goes to
    // the oracle and a partition).
    let oracle_log = lay
        .config
        .logs
        .iter()
        .position(|l| {
            l.covers == groups::groupset::GroupSet::singleton(groups::ids::GroupId(PARTITIONS))
        })
        .map(|i| lay.config.logs[i].id.0);
    for (j, &log) in r.victim_led_logs.iter().enumerate() {
        let t = o.clients + j;
        let first = probe_base + j * SLOTS_PER_THREAD;
        let next: Box<dyn FnMut(u64) -> Command + Send> = if log < PARTITIONS {
            Box::new(move |_| Command::GetTimeline(PROBE_USER + log))
        } else if log == global_log || Some(log) == oracle_log {
            let base = FRESH_USERS + 10_000 * j as u32;
            Box::new(move |n| Command::CreateUser(base + n as u32))
        } else {
            return Err(format!("no probe for log {log}"));
        };
        threads.push(spawn_client(
            client.handle.clone(),
            stop.clone(),
            t,
            first..first + SLOTS_PER_THREAD,
            PROBE_THINK,
            next,
        ));
    }
    let mut note = String::new();
    let elected;
    match fault {
        Fault::KillLeader | Fault::KillFollower | Fault::KillOracle => {
            fault_at = Some(Instant::now());
            servers.kill(victim)?;
            elected = watch(&servers, victim, &r.victim_led_logs, hold);
            servers.restart(victim)?;
        }
        Fault::Pause => {
            fault_at = Some(Instant::now());
            servers.pause(victim, true)?;
            elected = watch(&servers, victim, &r.victim_led_logs, hold);
            servers.pause(victim, false)?;
        }
        Fault::Partition => {
            let Net::Fabric(f) = &net else {
                return Err("partition without a fabric".into());
            };
            fault_at = Some(Instant::now());
            f.set_isolated(victim, true)?;
            elected = watch(&servers, victim, &r.victim_led_logs, hold);
            f.set_isolated(victim, false)?;
        }
        Fault::Loss => {
            let Net::Fabric(f) = &net else {
                return Err("loss without a fabric".into());
            };
            if r.mechanism.starts_with("tc netem") {
                fault_at = Some(Instant::now());
                f.netem(victim, &["loss", &format!("{}%", o.loss_percent)])?;
                elected = watch(&servers, victim, &r.victim_led_logs, hold);
                f.clear_netem(victim)?;
            } else {
                fault_at = Some(Instant::now());
                f.nft_loss(victim, o.loss_percent)?;
                elected = watch(&servers, victim, &r.victim_led_logs, hold);
                let dropped = f.clear_nft_loss(victim)?;
                note = format!("; {dropped} packets dropped");
                if dropped == 0 {
                    r.problems
                        .push("the loss rule dropped no packet: the fault was not injected".into());
                }
            }
        }
        Fault::Delay => match &net {
            Net::Fabric(f) => {
                fault_at = Some(Instant::now());
                f.netem(victim, &["delay", &format!("{}ms", o.delay_ms)])?;
                elected = watch(&servers, victim, &r.victim_led_logs, hold);
                f.clear_netem(victim)?;
            }
            Net::Relays(relays) => {
                let touching: Vec<&Relay> = relays
                    .iter()
                    .filter(|((a, b), _)| *a == victim || *b == victim)
                    .map(|(_, rl)| rl)
                    .collect();
                let before: u64 = touching.iter().map(|rl| rl.forwarded()).sum();
                fault_at = Some(Instant::now());
                for rl in &touching {
                    rl.set_delay(Duration::from_millis(o.delay_ms));
                }
                elected = watch(&servers, victim, &r.victim_led_logs, hold);
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
        Fault::ControlWipeAll => {
            fault_at = Some(Instant::now());
            for &n in &servers_ids {
                servers.kill(n)?;
            }
            std::fs::remove_dir_all(dir.join("data")).map_err(|e| format!("wipe: {e}"))?;
            for &n in &servers_ids {
                servers.restart(n)?;
            }
            elected = watch(&servers, victim, &r.victim_led_logs, hold);
        }
    }
    r.mechanism.push_str(&note);
    r.new_leader_ms = elected.map(|d: Duration| d.as_secs_f64() * 1e3);
    let healed_at = Instant::now();

    // Settle, stop the clients.
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let mut recs = Vec::new();
    for t in threads {
        let (mut v, err) = t.join().map_err(|_| "a client thread panicked")?;
        recs.append(&mut v);
        if let Some(e) = err {
            r.problems.push(e);
        }
    }

    // Final reads: every user's timeline, one after the other (part of the history).
    let mut timelines: BTreeMap<UserId, Vec<Post>> = BTreeMap::new();
    let readers = (0..USERS).chain((0..PARTITIONS).map(|p| PROBE_USER + p));
    for u in readers {
        let cmd = Command::GetTimeline(u);
        let call = Instant::now();
        match client
            .handle
            .call(final_slot, cmd.clone(), Duration::from_secs(30))
        {
            Some(Ok(reply)) => {
                if let Response::Done(Reply::Timeline(posts)) = &reply {
                    timelines.insert(u, posts.clone());
                }
                recs.push(Rec {
                    thread: usize::MAX,
                    cmd,
                    call,
                    ret: Some((Instant::now(), reply)),
                });
            }
            Some(Err(e)) => return Err(format!("final read of user {u} failed: {e}")),
            None => {
                return Err(format!(
                    "the final read of user {u} got no reply within 30 s"
                ))
            }
        }
    }

    // Final replica states: every group's replicas report the same state hash.
    let groups: BTreeMap<u32, String> = servers_ids
        .iter()
        .map(|&n| {
            let g = match lay.role(groups::ids::NodeId(n)) {
                Some(Role::Partition(p)) => format!("partition {p}"),
                Some(Role::Oracle) => "oracle".into(),
                None => "acceptor".into(),
            };
            (n, g)
        })
        .collect();
    // A replica recomputes its hash at most 250 ms after it handles something and at least
    // every 2 s: only hashes read 2.3 s after the final reads are of the final states.
    std::thread::sleep(Duration::from_millis(2300));
    let hashes_by = Instant::now() + Duration::from_secs(30);
    let hashes = loop {
        let hashes: BTreeMap<u32, u64> = servers_ids
            .iter()
            .filter_map(|&n| {
                let body = scrape(servers.metrics_addr(n)?).ok()?;
                Some((n, state_hash(&body)?))
            })
            .collect();
        if (hashes.len() == servers_ids.len() && groups_agree(&groups, &hashes))
            || Instant::now() > hashes_by
        {
            break hashes;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if o.verbose {
        eprintln!(
            "  run {}: final reads and state hashes {:.1} s after healing",
            r.index,
            healed_at.elapsed().as_secs_f64()
        );
    }
    r.final_hashes = hashes
        .iter()
        .map(|(n, h)| (*n, format!("{h:016x}")))
        .collect();
    r.states_equal = hashes.len() == servers_ids.len() && groups_agree(&groups, &hashes);
    if !r.states_equal {
        r.problems.push(format!(
            "final replica states differ or are missing within a group: {:?} (groups {:?})",
            r.final_hashes, groups
        ));
    }
    for (n, status) in servers.exited() {
        r.problems.push(format!(
            "node {n} exited on its own ({status}):\n{}",
            servers.log_tail(n, 15)
        ));
    }
    drop(client);
    drop(servers);
    drop(net);

    // The history.
    let us = |t: Instant| t.saturating_duration_since(history_start).as_micros() as u64;
    let history: Vec<Operation<Command, Reply2>> = recs
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
    let model = model(&section)?;
    let checking = Instant::now();
    let verdict = lincheck::check(&model, &history, Budget::default());
    if o.verbose {
        eprintln!(
            "  run {}: {} operations checked in {:.1} s",
            r.index,
            history.len(),
            checking.elapsed().as_secs_f64()
        );
    }
    r.linearizable = verdict.to_string();
    if !verdict.is_linearizable() {
        r.problems.push(format!("history: {verdict}"));
    }
    let lost = lost_posts(&history, &timelines);
    r.lost_acks = lost.len();
    for l in lost.iter().take(5) {
        r.problems.push(format!("acknowledged write lost: {l}"));
    }
    if r.completed_ops < 20 {
        r.problems.push(format!(
            "only {} operations completed: the clients barely ran",
            r.completed_ops
        ));
    }

    // Failover, as for the B+-tree.
    if let (Some(at), false) = (fault_at, r.victim_led_logs.is_empty()) {
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
                healed_at.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// Whether every group's replicas report one hash.
fn groups_agree(groups: &BTreeMap<u32, String>, hashes: &BTreeMap<u32, u64>) -> bool {
    let mut by_group: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (n, h) in hashes {
        if let Some(g) = groups.get(n) {
            by_group.entry(g.as_str()).or_default().insert(*h);
        }
    }
    by_group.values().all(|s| s.len() == 1)
}

/// A replica's `chorus_replica_state_hash` (two 32-bit halves) from its metrics.
pub fn state_hash(body: &str) -> Option<u64> {
    let half = |which: &str| -> Option<u64> {
        let prefix = format!("chorus_replica_state_hash{{half=\"{which}\"}} ");
        let v: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))?
            .trim()
            .parse()
            .ok()?;
        (v >= 0.0 && v <= f64::from(u32::MAX) && v.fract() == 0.0).then_some(v as u64)
    };
    Some(half("high")? << 32 | half("low")?)
}

/// Acknowledged posts missing from their author's final timeline (timelines keep every post
/// of a run: [`TIMELINE_LEN`]).
pub fn lost_posts(
    history: &[Operation<Command, Reply2>],
    timelines: &BTreeMap<UserId, Vec<Post>>,
) -> Vec<String> {
    let mut lost = Vec::new();
    for op in history {
        let (Command::Post { user, id, .. }, Some(Response::Done(Reply::Posted { .. }))) =
            (&op.input, op.output())
        else {
            continue;
        };
        match timelines.get(user) {
            Some(t) if t.len() >= TIMELINE_LEN => {}
            Some(t) if t.iter().any(|p| p.author == *user && p.id == *id) => {}
            Some(_) => lost.push(format!(
                "post {id} by user {user}, acknowledged, is not in its author's final timeline"
            )),
            None => lost.push(format!(
                "post {id} by user {user}, acknowledged: the author's final timeline was not read"
            )),
        }
    }
    lost
}

type ClientResult = (Vec<Rec>, Option<String>);

/// A client thread (see `btree::spawn_client`), pausing `think` between commands.
fn spawn_client(
    handle: ClientHandle<Command, Reply2>,
    stop: Arc<AtomicBool>,
    t: usize,
    slots: std::ops::Range<usize>,
    think: Duration,
    mut next: impl FnMut(u64) -> Command + Send + 'static,
) -> std::thread::JoinHandle<ClientResult> {
    std::thread::spawn(move || {
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
                    return (recs, Some(client_error(t, &cmd, &e)));
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
            std::thread::sleep(think);
        }
        (recs, None)
    })
}

fn client_error(t: usize, cmd: &Command, e: &ClientError) -> String {
    format!("client {t}: command {cmd:?} failed: {e}")
}

/// A random command for client thread `t` (its `n`-th) on the graph's users; post ids are
/// unique.
fn command(rng: &mut ChaCha8Rng, t: usize, n: u64) -> Command {
    let u = rng.random_range(0..USERS);
    match rng.random_range(0..100) {
        0..40 => Command::GetTimeline(u),
        40..65 => Command::Post {
            user: u,
            id: (t as u64) << 40 | n,
            text: Bytes::from(format!("{t}.{n}")),
        },
        65..85 => Command::Follow {
            follower: u,
            followee: rng.random_range(0..USERS),
        },
        _ => Command::Unfollow {
            follower: u,
            followee: rng.random_range(0..USERS),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_hashes_are_read_from_both_halves() {
        let h: u64 = 0xdead_beef_0123_4567;
        let body = format!(
            "# TYPE chorus_replica_state_hash gauge\nchorus_replica_state_hash{{half=\"high\"}} {}\nchorus_replica_state_hash{{half=\"low\"}} {}\n",
            h >> 32,
            h & 0xffff_ffff
        );
        assert_eq!(state_hash(&body), Some(h));
        assert_eq!(
            state_hash("chorus_replica_state_hash{half=\"high\"} 1\n"),
            None
        );
        assert_eq!(
            state_hash("chorus_replica_state_hash{half=\"high\"} 1.5\nchorus_replica_state_hash{half=\"low\"} 2\n"),
            None
        );
    }

    #[test]
    fn a_missing_acknowledged_post_is_reported() {
        let post = |id| Command::Post {
            user: 3,
            id,
            text: Bytes::from_static(b"x"),
        };
        let done = Response::Done(Reply::Posted { followers: 0 });
        let history = vec![
            Operation::completed(0, post(1), 0, 1, done.clone()),
            Operation::completed(0, post(2), 2, 3, done),
            Operation::unknown(1, post(3), 4),
        ];
        let kept = Post {
            author: 3,
            id: 1,
            text: Bytes::from_static(b"x"),
        };
        let timelines: BTreeMap<UserId, Vec<Post>> = [(3, vec![kept])].into_iter().collect();
        let lost = lost_posts(&history, &timelines);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("post 2"), "{lost:?}");
        assert_eq!(lost_posts(&history, &BTreeMap::new()).len(), 2);
    }

    #[test]
    fn the_layout_has_nine_servers_four_logs_and_the_model_knows_the_probe_users() {
        let lay = layout().unwrap();
        let servers = lay
            .config
            .nodes
            .iter()
            .filter(|n| !lay.is_client(n.id))
            .count();
        assert_eq!(servers, 9);
        assert_eq!(lay.config.logs.len(), 4);
        assert_eq!(lay.oracle_replicas.len(), 3);
        let s = section();
        let m = model(&s).unwrap();
        assert!(m.initial.contains_key(&PROBE_USER));
        assert!(m.initial.contains_key(&(PROBE_USER + 1)));
        assert_eq!(m.initial.len(), USERS as usize + 2);
        // Probe users land on their own partition.
        let service = s.service().unwrap();
        for p in 0..PARTITIONS {
            assert_eq!(
                engine::partitioned::service::PartitionedService::place(
                    &service,
                    u64::from(PROBE_USER + p),
                    PARTITIONS
                ),
                p
            );
        }
    }
}
