//! One run against the replicated B+-tree: three `btree-server` processes, one fault.

use crate::model::{lost_acks, TreeModel};
use crate::net::{Capabilities, Fabric};
use crate::procs::{per_log, scrape, Scratch, Servers, Spec};
use crate::relay::Relay;
use crate::tap::{Recording, Tap};
use crate::{Fault, Options, RunReport};
use btree_service::cli::DeploymentFile;
use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use engine::client::{incarnation_index, ClientHandle, ClientProxy, HandleApp, Mode};
use engine::layout::Deployment;
use engine::lincheck::{self, Budget, Operation};
use groups::config::{ClusterConfig, Durability, Tuning};
use groups::groupset::GroupSet;
use groups::ids::GroupId;
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

const SERVERS: [u32; 3] = [1, 2, 3];
const WORKERS: usize = 2;
/// Proxies per client thread: a thread whose command timed out moves to a fresh one (the
/// old one keeps resending its command, whose outcome stays unknown).
const SLOTS_PER_THREAD: usize = 8;
/// How long a client waits for a reply before recording the outcome as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports the servers use inside their own namespaces.
const NS_PORT: u16 = 7100;
const NS_METRICS_PORT: u16 = 9100;

fn tree() -> TreeConfig {
    TreeConfig {
        fanout: 4,
        key_space: 128,
        prefill: 32,
        value_bytes: 4,
    }
}

/// The prefix of errors setting a deployment up (retried).
pub(crate) const STARTUP: &str = "startup: ";

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

/// How `fault` can be injected on this machine, or why it cannot.
fn plan(fault: Fault, caps: &Capabilities, o: &Options) -> Result<Plan, String> {
    let p = |mechanism: String, net_kind| {
        Ok(Plan {
            mechanism,
            net_kind,
        })
    };
    match fault {
        Fault::KillLeader => p("SIGKILL the global log's leader, restart it from its durable logs".into(), NetKind::Loopback),
        Fault::KillFollower => p("SIGKILL a follower, restart it from its durable logs".into(), NetKind::Loopback),
        Fault::ControlWipeAll => p("negative control: SIGKILL all servers, delete their durable logs, restart them".into(), NetKind::Loopback),
        Fault::KillOracle => Err("kill-oracle: the B+-tree deployment has no oracle (Chirper on DS-SMR is not started by this runner)".into()),
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

/// The in-process client node; stopped when dropped.
struct ClientNode {
    handle: ClientHandle<TreeCommand, TreeReply>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    ids: Vec<u64>,
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
    cmd: TreeCommand,
    call: Instant,
    ret: Option<(Instant, TreeReply)>,
}

/// Runs one campaign run of the B+-tree with `fault`.
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
        service: "btree".into(),
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
    // A deployment that does not come up (a port taken by another process between the
    // check and the bind) is set up again: that is the harness, not the system under test.
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
    let mode = if rng.random_bool(0.5) {
        Mode::Psmr
    } else {
        Mode::OptPsmr
    };
    r.mode = mode.name().into();
    let tuning = Tuning {
        // Replicas rebuild their state from the logs: nothing may be trimmed.
        trim: false,
        ..Tuning::default()
    };
    let d = Deployment::new(SERVERS.len(), 1, WORKERS, 1, tuning).map_err(|e| e.to_string())?;
    let me = d.clients[0];
    let all_groups = d.config.all_groups();
    let global_log = d
        .config
        .logs
        .iter()
        .find(|l| l.covers == all_groups)
        .map(|l| l.id.0)
        .ok_or("the deployment has no log covering every group")?;
    let durability =
        Durability::from_words("disk", Some("data")).map_err(|e| format!("durability: {e}"))?;
    let base = d
        .config
        .clone()
        .with_durability(durability)
        .map_err(|e| e.to_string())?;

    // Addresses: where each node listens, and through what each node reaches each other.
    let tag = std::process::id()
        .wrapping_mul(31)
        .wrapping_add(r.index as u32)
        % 100_000;
    let mut listen: BTreeMap<u32, SocketAddr> = BTreeMap::new();
    let mut metrics: BTreeMap<u32, SocketAddr> = BTreeMap::new();
    let mut all_nodes: Vec<u32> = SERVERS.to_vec();
    all_nodes.push(me.0);
    let net = match plan.net_kind {
        NetKind::Fabric => {
            let f = Fabric::new(tag, &SERVERS)?;
            for n in SERVERS {
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
            for n in SERVERS {
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
    for n in SERVERS {
        let file = DeploymentFile {
            mode,
            workers: WORKERS,
            replicas: d.replicas.clone(),
            tree: tree(),
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
    let service = Arc::new(TreeService::try_new(tree())?);
    let tap = Arc::new(Tap::default());
    let first = incarnation_index();
    let probe_base = o.clients * SLOTS_PER_THREAD;
    let slots = probe_base + (WORKERS + 1) * SLOTS_PER_THREAD + 1;
    let proxies: Vec<Recording<TreeService>> = (0..slots)
        .map(|i| {
            Recording::new(
                ClientProxy::new(
                    engine::wire::ClientId::new(me, first.wrapping_add(i as u32)),
                    service.clone(),
                    mode,
                    WORKERS,
                    500,
                ),
                tap.clone(),
                cluster.clone(),
            )
        })
        .collect();
    let ids: Vec<u64> = (0..slots)
        .map(|i| engine::wire::ClientId::new(me, first.wrapping_add(i as u32)).0)
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
        ids,
    };

    // Wait until the deployment answers and every log has a leader.
    let t0 = Instant::now();
    let ready_by = t0 + Duration::from_secs(30);
    let final_slot = slots - 1;
    loop {
        if let Some(Ok(_)) =
            client
                .handle
                .call(final_slot, TreeCommand::Get(0), Duration::from_secs(2))
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
    leaders(&servers, Duration::from_secs(15))?;
    // Every server must be up: one that failed to start leaves a cluster that tolerates no
    // fault.
    if let Some((n, status)) = servers.exited().into_iter().next() {
        return Err(format!(
            "{STARTUP}node {n} exited ({status}): {}",
            servers.log_tail(n, 3)
        ));
    }
    for n in SERVERS {
        let addr = servers.metrics_addr(n).ok_or("no metrics address")?;
        scrape(addr).map_err(|e| format!("{STARTUP}node {n} does not serve: {e}"))?;
    }
    // The probe above is part of no history: the final slot is then only used for the final scan.
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
            move |n| command(&mut trng, t, n),
        ));
    }

    // The fault.
    let warm = Duration::from_secs_f64(rng.random_range(1.0..2.5));
    let hold = Duration::from_secs_f64(rng.random_range(o.fault_secs.0..o.fault_secs.1));
    std::thread::sleep(warm);
    let led = leaders(&servers, Duration::from_secs(10))?;
    // The global log (covering every group) is the one every worker of every replica reads:
    // its leader is "the leader". Each node leads some log in this layout (omnipaxos spreads
    // the initial leaders), so a follower is a follower of one chosen log.
    let leader = led
        .get(&global_log)
        .copied()
        .ok_or_else(|| format!("the global log {global_log} has no leader: {led:?}"))?;
    let mut fault_at = None;
    let victim = match fault {
        Fault::KillLeader | Fault::Pause | Fault::Loss | Fault::Delay => leader,
        Fault::KillFollower => {
            let logs: Vec<u32> = led.keys().copied().collect();
            let log = logs[rng.random_range(0..logs.len())];
            let followers: Vec<u32> = SERVERS
                .iter()
                .copied()
                .filter(|&n| led[&log] != n)
                .collect();
            let v = followers[rng.random_range(0..followers.len())];
            r.mechanism.push_str(&format!(
                " (a follower of log {log}; it may lead another log)"
            ));
            v
        }
        Fault::Partition => SERVERS[rng.random_range(0..SERVERS.len())],
        Fault::ControlWipeAll => leader,
        Fault::KillOracle => return Err("no oracle".into()),
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
    // Probes: one client per log the victim leads, reading through that log without pause,
    // so that the first reply after the fault on each log comes as soon as the log can
    // order again (the workload alone may route few commands through a log: in opt-PSMR
    // only scans over both workers and conservative retries use the global log).
    for (j, &log) in r.victim_led_logs.iter().enumerate() {
        let probe = probe_command(&d.config, global_log, log)?;
        let t = o.clients + j;
        let first = probe_base + j * SLOTS_PER_THREAD;
        threads.push(spawn_client(
            client.handle.clone(),
            stop.clone(),
            t,
            first..first + SLOTS_PER_THREAD,
            move |_| probe.clone(),
        ));
    }
    let mut note = String::new();
    let mut elected = None;
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
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
            let p = o.loss_percent.to_string();
            if r.mechanism.starts_with("tc netem") {
                fault_at = Some(Instant::now());
                f.netem(victim, &["loss", &format!("{p}%")])?;
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
            for n in SERVERS {
                servers.kill(n)?;
            }
            std::fs::remove_dir_all(dir.join("data")).map_err(|e| format!("wipe: {e}"))?;
            for n in SERVERS {
                servers.restart(n)?;
            }
            elected = watch(&servers, victim, &r.victim_led_logs, hold);
        }
        Fault::KillOracle => {}
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

    // The final full scan, answered by every replica.
    let full = TreeCommand::Scan {
        lo: 0,
        hi: tree().key_space,
        limit: u32::MAX,
    };
    let call = Instant::now();
    let fin = match client
        .handle
        .call(final_slot, full.clone(), Duration::from_secs(30))
    {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => return Err(format!("final scan failed: {e}")),
        None => return Err("the final scan got no reply within 30 s".into()),
    };
    recs.push(Rec {
        thread: usize::MAX,
        cmd: full,
        call,
        ret: Some((Instant::now(), fin.clone())),
    });
    let final_id = client.ids[final_slot];
    let answers_by = Instant::now() + Duration::from_secs(30);
    let answers = loop {
        let answers: BTreeMap<u32, u64> = {
            let seen = tap.seen.lock();
            seen.range((final_id, 0)..=(final_id, u64::MAX))
                .rfind(|(_, s)| s.completed.is_some())
                .map(|(_, s)| s.replies.iter().map(|(&n, &(h, _))| (n, h)).collect())
                .unwrap_or_default()
        };
        if answers.len() == SERVERS.len() || Instant::now() > answers_by {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    r.final_hashes = answers
        .iter()
        .map(|(n, h)| (*n, format!("{h:016x}")))
        .collect();
    let distinct: BTreeSet<u64> = answers.values().copied().collect();
    r.states_equal = answers.len() == SERVERS.len() && distinct.len() == 1;
    if !r.states_equal {
        r.problems.push(format!(
            "final replica states differ or are missing: {:?} (answers to the final full scan \
             from {} of {} replicas)",
            r.final_hashes,
            answers.len(),
            SERVERS.len()
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
    let history: Vec<Operation<TreeCommand, TreeReply>> = recs
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
    let model = TreeModel::for_config(&tree());
    let verdict = lincheck::check(&model, &history, Budget::default());
    r.linearizable = verdict.to_string();
    if !verdict.is_linearizable() {
        r.problems.push(format!("history: {verdict}"));
    }
    match &fin {
        TreeReply::Entries(entries) => {
            let state: BTreeMap<u64, Bytes> = entries.iter().cloned().collect();
            let lost = lost_acks(&model.initial, &history, &state);
            r.lost_acks = lost.len();
            for l in lost.iter().take(5) {
                r.problems.push(format!("acknowledged write lost: {l}"));
            }
        }
        other => r
            .problems
            .push(format!("the final scan answered {other:?}")),
    }
    if r.completed_ops < 20 {
        r.problems.push(format!(
            "only {} operations completed: the clients barely ran",
            r.completed_ops
        ));
    }

    // Failover: for each log the victim led, the first reply to a command submitted after
    // the fault and routed through it.
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

type ClientResult = (Vec<Rec>, Option<String>);

/// A client thread: runs `next(n)` as its `n`-th command until `stop`, recording each; a
/// command without a reply within [`CALL_TIMEOUT`] is recorded with an unknown outcome and
/// the thread goes on with its next slot (proxy).
fn spawn_client(
    handle: ClientHandle<TreeCommand, TreeReply>,
    stop: Arc<AtomicBool>,
    t: usize,
    slots: std::ops::Range<usize>,
    mut next: impl FnMut(u64) -> TreeCommand + Send + 'static,
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
        }
        (recs, None)
    })
}

/// A read that goes through log `log`: a get of worker `g`'s first key for the log of group
/// `g`, a scan across every worker's range for the global log.
fn probe_command(cfg: &ClusterConfig, global_log: u32, log: u32) -> Result<TreeCommand, String> {
    let t = tree();
    if log == global_log {
        let mid = t.range_start(1, WORKERS);
        return Ok(TreeCommand::Scan {
            lo: mid - 1,
            hi: mid + 1,
            limit: 2,
        });
    }
    (0..WORKERS)
        .find(|&g| {
            cfg.route(&GroupSet::singleton(GroupId(g as u32)))
                .is_some_and(|l| l.0 == log)
        })
        .map(|g| TreeCommand::Get(t.range_start(g, WORKERS)))
        .ok_or_else(|| format!("no command goes through log {log} alone"))
}

/// A random command for client thread `t` (its `n`-th); written values are unique.
fn command(rng: &mut ChaCha8Rng, t: usize, n: u64) -> TreeCommand {
    let key_space = tree().key_space;
    let k = rng.random_range(0..key_space);
    let v = || Bytes::from(((t as u64) << 40 | n).to_le_bytes().to_vec());
    match rng.random_range(0..100) {
        0..35 => TreeCommand::Get(k),
        35..60 => TreeCommand::Insert(k, v()),
        60..75 => TreeCommand::Update(k, v()),
        75..90 => TreeCommand::Delete(k),
        _ => TreeCommand::Scan {
            lo: k,
            hi: (k + rng.random_range(1..8)).min(key_space),
            limit: 8,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_go_through_the_log_they_probe() {
        let d = Deployment::new(3, 1, WORKERS, 1, Tuning::default()).unwrap();
        let all = d.config.all_groups();
        let global = d.config.logs.iter().find(|l| l.covers == all).unwrap().id.0;
        let service = TreeService::try_new(tree()).unwrap();
        for log in &d.config.logs {
            let probe = probe_command(&d.config, global, log.id.0).unwrap();
            for mode in [Mode::Psmr, Mode::OptPsmr] {
                let target = match mode {
                    Mode::OptPsmr => {
                        engine::service::Service::optimistic(&service, &probe, WORKERS)
                    }
                    _ => engine::service::Service::conservative(&service, &probe, WORKERS),
                };
                let groups: Vec<u32> = match target {
                    engine::service::Target::One(w) => vec![w as u32],
                    engine::service::Target::All => (0..WORKERS as u32).collect(),
                    engine::service::Target::Many(ws) => ws.iter().map(|&w| w as u32).collect(),
                };
                let dests: GroupSet = groups.iter().map(|&g| GroupId(g)).collect();
                assert_eq!(
                    d.config.route(&dests).map(|l| l.0),
                    Some(log.id.0),
                    "{probe:?}"
                );
            }
        }
        assert!(probe_command(&d.config, global, 99).is_err());
    }
}
