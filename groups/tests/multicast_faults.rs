//! Goal: atomic and reliable multicast keep their properties (reference notes, sections 1.2 and
//! 1.3) under every fault the simulator can inject, and make progress once faults stop.
//!
//! Method: each seed draws a cluster (2 to 8 groups, f = 1 or 2, a log per group plus a
//! global log and sometimes a log for a pair of groups, acceptors drawn from a pool,
//! subscribers with one or two subscriptions), tuning values, a workload of single- and
//! multi-group multicasts and reliable multicasts, and a fault plan: crashes of up to f
//! acceptors per log at a time (most restart, recovering their acceptor state from the
//! simulated disk; about half of them hit in the middle of a step, losing the step's last
//! writes, as a torn record, and every message the step produced; about 30 % wipe the disk
//! instead, as a deleted data directory or a restart in memory mode does, and the restarted
//! node copies its acceptor state from its peers before it votes, `groups::log::recovery`),
//! symmetric partitions, one-way cuts, and message loss, duplication and delay spikes
//! (reordering) throughout. After the fault phase the network heals, every node
//! restarts, and the run must get quiet: every message from a correct sender, and every
//! message anyone delivered, reaches every correct subscriber it is addressed to. Then the
//! checker runs on every delivery stream of every incarnation. A second campaign runs the
//! same plans in memory mode: the cluster starts without state, every crash loses the node's
//! state (at most f acceptors of a log down or recovering at once; a crash beyond that is not
//! done), so every restart recovers from its peers or bootstraps with them. With recovery
//! disabled (every log votes at once) 29 of the memory campaign's 150 seeds break atomic
//! multicast.
//!
//! `CHORUS_SEED=n` replays one seed with a trace of its plan; `CHORUS_SEEDS=k` runs k seeds
//! (default 300) from `CHORUS_SEED_BASE` (default 0).

use groups::config::{ClusterConfig, LogConfig, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};
use groups::sim::{GroupsSim, NetFaults, SimOptions, StepCrash};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

struct Scenario {
    cfg: ClusterConfig,
    net: NetFaults,
    plan: Vec<(u64, Action)>,
    fault_phase_us: u64,
}

#[derive(Debug, Clone)]
enum Action {
    Multicast {
        from: NodeId,
        dests: GroupSet,
    },
    Rmcast {
        from: NodeId,
        dests: GroupSet,
    },
    Crash(NodeId),
    /// Crash in the middle of the node's next step that writes to its storage.
    CrashMidStep(NodeId),
    /// Crash and lose everything stored (a deleted data directory); restarted, the node
    /// recovers its acceptor state from its peers before it votes. Done as a plain crash if
    /// f other acceptors of one of its logs have not recovered from a wipe yet (at most f
    /// acceptors of a log without state at once: the fault model of `groups::log::recovery`).
    Wipe(NodeId),
    Restart(NodeId),
    Partition(Vec<NodeId>, Vec<NodeId>),
    CutOneWay(NodeId, NodeId),
    Heal,
    /// Asks `from` for a read index of `logs` (`groups::readindex`).
    ReadIndex {
        from: NodeId,
        logs: Vec<LogId>,
    },
    /// Cuts whoever leads `log` now off from every other node (a deposed leader that goes on
    /// believing it leads, and takes submissions, until the cut heals).
    Depose(LogId),
}

fn random_set(rng: &mut ChaCha8Rng, groups: u32, size: u32) -> GroupSet {
    let mut s = GroupSet::new();
    while s.len() < size.min(groups) as usize {
        s.insert(GroupId(rng.random_range(0..groups)));
    }
    s
}

fn draw(seed: u64, reads: bool) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_cafe);
    let groups = rng.random_range(2..=8u32);
    let f = if rng.random_bool(0.2) { 2 } else { 1 };
    let per_log = 2 * f + 1;
    let pool = per_log + rng.random_range(0..=2u32);
    let extra = rng.random_range(1..=3u32);
    let total = pool + extra;
    let pick_acceptors = |rng: &mut ChaCha8Rng| -> Vec<NodeId> {
        let mut all: Vec<u32> = (1..=pool).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, rng.random_range(0..=i));
        }
        all.truncate(per_log as usize);
        all.sort();
        all.into_iter().map(NodeId).collect()
    };
    let mut logs: Vec<LogConfig> = (0..groups)
        .map(|g| LogConfig {
            id: LogId(g),
            covers: GroupSet::singleton(GroupId(g)),
            acceptors: pick_acceptors(&mut rng),
        })
        .collect();
    if rng.random_bool(0.3) {
        logs.push(LogConfig {
            id: LogId(groups + 1),
            covers: [GroupId(0), GroupId(1)].into_iter().collect(),
            acceptors: pick_acceptors(&mut rng),
        });
    }
    logs.push(LogConfig {
        id: LogId(groups),
        covers: GroupSet::all(groups),
        acceptors: pick_acceptors(&mut rng),
    });
    let mut nodes: Vec<NodeConfig> = (1..=total)
        .map(|id| NodeConfig {
            id: NodeId(id),
            addr: None,
            subscriptions: Vec::new(),
        })
        .collect();
    for n in nodes.iter_mut() {
        let subscribes = n.id.0 > pool || rng.random_bool(0.5);
        if subscribes {
            let count = if rng.random_bool(0.25) { 2 } else { 1 };
            for _ in 0..count {
                let size = rng.random_range(1..=3);
                n.subscriptions.push(random_set(&mut rng, groups, size));
            }
        }
    }
    // every group has a subscriber
    for g in 0..groups {
        if !nodes
            .iter()
            .any(|n| n.subscriptions.iter().any(|s| s.contains(GroupId(g))))
        {
            let i = rng.random_range(0..nodes.len());
            nodes[i].subscriptions.push(GroupSet::singleton(GroupId(g)));
        }
    }
    let skip_hints = rng.random_bool(0.7);
    let tuning = Tuning {
        tick_us: 1000,
        batch_delay_ticks: rng.random_range(0..=2),
        batch_bytes_max: rng.random_range(64..=4096),
        inflight_entries_max: rng.random_range(2..=64),
        merge_m: rng.random_range(1..=8),
        skip_lambda_per_delta: rng.random_range(u64::from(!skip_hints)..=200),
        skip_delta_ticks: rng.random_range(2..=10),
        skip_hints,
        election_ticks: rng.random_range(15..=50),
        resend_ticks: rng.random_range(10..=30),
        sender_window: rng.random_range(4..=128),
        fetch_poll_ticks: rng.random_range(10..=40),
        progress_ticks: 10,
        trim: false,
        rm_resend_ticks: rng.random_range(5..=20),
        rm_relay: rng.random_bool(0.8),
        ..Tuning::default()
    };
    let cfg = ClusterConfig::new(seed, groups, nodes, logs, tuning).expect("valid layout");

    let net = NetFaults {
        latency_us: (50, rng.random_range(100..=600)),
        spike_prob: rng.random_range(0.0..0.15),
        spike_us: rng.random_range(1000..=8000),
        loss: rng.random_range(0.0..0.05),
        dup: rng.random_range(0.0..0.05),
    };

    let fault_phase_us: u64 = 1_500_000;
    let ids: Vec<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
    let subscribers: Vec<NodeId> = cfg
        .nodes
        .iter()
        .filter(|n| !n.subscriptions.is_empty())
        .map(|n| n.id)
        .collect();
    let mut plan = Vec::new();
    let messages = rng.random_range(80..=200);
    for _ in 0..messages {
        let at = rng.random_range(0..fault_phase_us);
        let from = ids[rng.random_range(0..ids.len())];
        let size = if rng.random_bool(0.6) {
            1
        } else {
            rng.random_range(2..=4)
        };
        plan.push((
            at,
            Action::Multicast {
                from,
                dests: random_set(&mut rng, groups, size),
            },
        ));
    }
    for _ in 0..rng.random_range(0..=20) {
        let at = rng.random_range(0..fault_phase_us);
        let from = subscribers[rng.random_range(0..subscribers.len())];
        let size = rng.random_range(1..=3);
        plan.push((
            at,
            Action::Rmcast {
                from,
                dests: random_set(&mut rng, groups, size),
            },
        ));
    }
    // Crashes, respecting at most f crashed acceptors per log at any time. Which of them hit
    // mid-step is drawn from a stream of its own, so the rest of the plan is unchanged by it.
    let mut mid_step = ChaCha8Rng::seed_from_u64(seed ^ 0x6d1d_57e9);
    let mut wipes = ChaCha8Rng::seed_from_u64(seed ^ 0x3719_e5a1);
    let mut down: BTreeMap<NodeId, (u64, Option<u64>)> = BTreeMap::new();
    amnesia_trap(seed, &cfg, &ids, fault_phase_us, &mut plan, &mut down);
    for _ in 0..rng.random_range(0..=4) {
        let at = rng.random_range(0..fault_phase_us);
        let victim = ids[rng.random_range(0..ids.len())];
        let restart = rng
            .random_bool(0.8)
            .then(|| at + rng.random_range(50_000..=600_000))
            .filter(|&t| t < fault_phase_us);
        let overlaps = |(s, e): (u64, Option<u64>)| {
            at < e.unwrap_or(u64::MAX) && s < restart.unwrap_or(u64::MAX)
        };
        if down.contains_key(&victim) {
            continue;
        }
        let ok = cfg.logs.iter().all(|l| {
            !l.acceptors.contains(&victim)
                || l.acceptors
                    .iter()
                    .filter(|a| down.get(a).is_some_and(|&w| overlaps(w)))
                    .count()
                    < f as usize
        });
        if ok {
            down.insert(victim, (at, restart));
            if wipes.random_bool(WIPES) {
                plan.push((at, Action::Wipe(victim)));
            } else if mid_step.random_bool(MID_STEP_CRASHES) {
                plan.push((at, Action::CrashMidStep(victim)));
            } else {
                plan.push((at, Action::Crash(victim)));
            }
            if let Some(r) = restart {
                plan.push((r, Action::Restart(victim)));
            }
        }
    }
    for _ in 0..rng.random_range(0..=3) {
        let at = rng.random_range(0..fault_phase_us);
        let until = (at + rng.random_range(50_000..=400_000)).min(fault_phase_us);
        let action = match groups::sim::Cut::draw(&mut rng, &ids) {
            groups::sim::Cut::Partition(a, b) => Action::Partition(a, b),
            groups::sim::Cut::OneWay(x, y) => Action::CutOneWay(x, y),
        };
        plan.push((at, action));
        plan.push((until, Action::Heal));
    }
    if reads {
        draw_reads(seed, &cfg, &ids, fault_phase_us, &mut plan);
    }
    // Stable: actions drawn for one instant keep their order (the trap's wipe, crashes, heal).
    plan.sort_by_key(|(t, _)| *t);
    Scenario {
        cfg,
        net,
        plan,
        fault_phase_us,
    }
}

/// Read indexes for the read-index campaign, from a stream of their own (the rest of the plan
/// is the one the other campaigns run): 30 to 120 requests from random nodes for one to three
/// random logs, half of them in bursts around a deposed leader (its log's leader cut off from
/// everyone for 50 to 400 ms while multicasts go on), asked from both sides of the cut.
fn draw_reads(
    seed: u64,
    cfg: &ClusterConfig,
    ids: &[NodeId],
    fault_phase_us: u64,
    plan: &mut Vec<(u64, Action)>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4ead_1dec);
    let logs: Vec<LogId> = cfg.logs.iter().map(|l| l.id).collect();
    let pick_logs = |rng: &mut ChaCha8Rng| -> Vec<LogId> {
        let k = rng.random_range(1..=3usize.min(logs.len()));
        (0..k)
            .map(|_| logs[rng.random_range(0..logs.len())])
            .collect()
    };
    for _ in 0..rng.random_range(15..=60) {
        let at = rng.random_range(0..fault_phase_us);
        let from = ids[rng.random_range(0..ids.len())];
        plan.push((
            at,
            Action::ReadIndex {
                from,
                logs: pick_logs(&mut rng),
            },
        ));
    }
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..fault_phase_us * 3 / 4);
        let until = at + rng.random_range(50_000..=400_000);
        let log = logs[rng.random_range(0..logs.len())];
        plan.push((at, Action::Depose(log)));
        for _ in 0..rng.random_range(5..=20) {
            let t = rng.random_range(at..until + 100_000);
            let from = ids[rng.random_range(0..ids.len())];
            let mut ls = pick_logs(&mut rng);
            ls.push(log);
            plan.push((t, Action::ReadIndex { from, logs: ls }));
        }
        plan.push((until.min(fault_phase_us), Action::Heal));
    }
}

/// The share of seeds that set the issue-16 trap (see [`amnesia_trap`]).
const AMNESIA_TRAPS: f64 = 0.4;

/// The interleaving of the Paxos amnesia hazard (issue 16), on a drawn log with acceptors
/// split into f *lagging*, f *keepers* and a *victim*: the lagging ones are cut off for 150 to
/// 300 ms, so the log goes on with the keepers and the victim alone (a quorum); then the
/// victim's storage is wiped and the keepers crash together, the cut heals and the victim
/// restarts at once, the keepers 200 to 400 ms later. An acceptor that voted without its state
/// would give the lagging ones a quorum that never saw the entries decided meanwhile; a
/// recovering one waits for the keepers. Drawn from a stream of its own (the rest of the plan
/// is unchanged by it); its nodes count as down for the other crashes, the victim until 300 ms
/// after the keepers are back.
fn amnesia_trap(
    seed: u64,
    cfg: &ClusterConfig,
    ids: &[NodeId],
    fault_phase_us: u64,
    plan: &mut Vec<(u64, Action)>,
    down: &mut BTreeMap<NodeId, (u64, Option<u64>)>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa3e5_1a00);
    if !rng.random_bool(AMNESIA_TRAPS) {
        return;
    }
    let log = &cfg.logs[rng.random_range(0..cfg.logs.len())];
    let mut acceptors = log.acceptors.clone();
    for i in (1..acceptors.len()).rev() {
        acceptors.swap(i, rng.random_range(0..=i));
    }
    let f = (acceptors.len() - 1) / 2;
    let (lagging, rest) = acceptors.split_at(f);
    let (keepers, victim) = (&rest[..f], rest[f]);
    let cut_at = rng.random_range(50_000..fault_phase_us / 2);
    let strike = cut_at + rng.random_range(150_000..=300_000);
    let back = strike + rng.random_range(200_000..=400_000);
    let others: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|n| !lagging.contains(n))
        .collect();
    plan.push((cut_at, Action::Partition(lagging.to_vec(), others)));
    plan.push((strike, Action::Wipe(victim)));
    for &k in keepers {
        plan.push((strike, Action::Crash(k)));
        plan.push((back, Action::Restart(k)));
        down.insert(k, (strike, Some(back)));
    }
    plan.push((strike, Action::Heal));
    plan.push((strike + 1000, Action::Restart(victim)));
    down.insert(victim, (strike, Some(back + 300_000)));
}

/// The share of crashes that hit in the middle of a step.
const MID_STEP_CRASHES: f64 = 0.5;
/// The share of crashes that also wipe the node's storage.
const WIPES: f64 = 0.3;

/// Whether wiping `victim` now keeps every log it accepts for within the fault model: fewer
/// than f of its other acceptors without state (wiped and not recovered yet). Acceptors that
/// are merely down keep their state; a recovering node waits for them.
fn may_wipe(s: &GroupsSim, cfg: &ClusterConfig, victim: NodeId) -> bool {
    cfg.logs
        .iter()
        .filter(|l| l.acceptors.contains(&victim))
        .all(|l| {
            let f = (l.acceptors.len() - 1) / 2;
            let out = l
                .acceptors
                .iter()
                .filter(|&&a| a != victim && s.is_wiped(a))
                .count();
            out < f
        })
}

struct Outcome {
    sent: usize,
    reads: usize,
    reads_answered: usize,
    deposed: usize,
    crashes: u64,
    wipes: usize,
    mid_step_crashes: usize,
    lost_writes: usize,
}

/// How the nodes keep their acceptor state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// On a simulated disk that survives crashes (wipes lose it: a deleted data directory,
    /// restarted with `--recover`).
    Disk,
    /// In memory (`GroupsSim::with_lost_state`): the cluster starts without state and every
    /// crash loses it. A crash (of any kind) is a wipe; one that would leave f other
    /// acceptors of a log without state at once (down or still recovering) is not done.
    Memory,
}

fn run(seed: u64, verbose: bool, mode: Mode, reads: bool) -> Result<Outcome, String> {
    let sc = draw(seed, reads);
    if verbose {
        eprintln!(
            "seed {seed}: {} groups, {} nodes, logs:",
            sc.cfg.groups,
            sc.cfg.nodes.len()
        );
        for l in &sc.cfg.logs {
            eprintln!(
                "  {:?} covers {:?} acceptors {:?}",
                l.id, l.covers, l.acceptors
            );
        }
        for n in &sc.cfg.nodes {
            eprintln!("  {} subscribes {:?}", n.id, n.subscriptions);
        }
        eprintln!("  net {:?}\n  tuning {:?}", sc.net, sc.cfg.tuning);
    }
    let opts = SimOptions {
        seed,
        net: sc.net.clone(),
    };
    let mut s = match mode {
        Mode::Disk => GroupsSim::new(sc.cfg.clone(), opts),
        Mode::Memory => GroupsSim::with_lost_state(sc.cfg.clone(), opts),
    };
    if verbose {
        // Every copy of a log entry that travels must be identical (consensus safety).
        let mut seen: BTreeMap<(u32, u64), (groups::LogEntry, u64, NodeId)> = BTreeMap::new();
        // CHORUS_TRACE_WINDOW=log:from_us:to_us prints that log's consensus messages.
        let window: Option<(u32, u64, u64)> = std::env::var("CHORUS_TRACE_WINDOW").ok().map(|w| {
            let v: Vec<u64> = w
                .split(':')
                .map(|x| x.parse().expect("log:from:to"))
                .collect();
            (v[0] as u32, v[1], v[2])
        });
        s.sim.trace = Some(Box::new(move |(sent, t), from, to, m| {
            if let (Some((wl, a, b)), groups::NetMsg::Log { log, msg }) = (window, m) {
                if log.0 == wl && (a..=b).contains(&t) {
                    let text = format!("{msg:?}");
                    if !text.contains("BLE") {
                        eprintln!(
                            "  trace t={t} {from}->{to} {}",
                            &text[..text.len().min(400)]
                        );
                    }
                }
            }
            if let groups::NetMsg::Entries {
                log,
                start,
                entries,
            } = m
            {
                for (i, e) in entries.iter().enumerate() {
                    let key = (log.0, start + i as u64);
                    match seen.get(&key) {
                        Some((prev, pt, pf)) if prev != e => eprintln!(
                            "  DIVERGENCE t={t} (sent {sent}) {from}->{to} {log:?}[{}]: {:?} vs {:?} sent by {pf} at t={pt}",
                            key.1, e, prev
                        ),
                        Some(_) => {}
                        None => {
                            seen.insert(key, (e.clone(), t, from));
                        }
                    }
                }
            }
        }));
    }
    let mut payload = 0u32;
    let mut reported = 0;
    let mut deposed = 0;
    let mut wipes = 0;
    // CHORUS_WATCH=node:log:from_us:to_us prints that acceptor's log indexes after every step.
    let watch: Option<(u32, u32, u64, u64)> = std::env::var("CHORUS_WATCH").ok().map(|w| {
        let v: Vec<u64> = w
            .split(':')
            .map(|x| x.parse().expect("node:log:from:to"))
            .collect();
        (v[0] as u32, v[1] as u32, v[2], v[3])
    });
    for (at, action) in &sc.plan {
        if let Some((wn, wl, a, b)) = watch {
            let mut last = None;
            while s.sim.next_at().is_some_and(|t| t <= *at) {
                let t = s.sim.next_at().unwrap();
                s.step();
                let mm = s.storage_mismatches();
                if !mm.is_empty() {
                    panic!("t={t}: stored log length differs from the accepted index: {mm:?}");
                }
                if (a..=b).contains(&t) {
                    let st = s
                        .sim
                        .actor(NodeId(wn))
                        .and_then(|n| n.log_status(LogId(wl)));
                    if st != last {
                        let tail: Vec<String> = s
                            .sim
                            .actor(NodeId(wn))
                            .map(|n| {
                                n.log_entries(LogId(wl), st.map_or(0, |x| x.2.saturating_sub(6)), 6)
                            })
                            .unwrap_or_default()
                            .iter()
                            .map(|e| match e {
                                groups::LogEntry::Skip(n) => format!("S{n}"),
                                groups::LogEntry::Batch(m) => format!("B{}", m[0].id),
                            })
                            .collect();
                        eprintln!("  watch t={t} n{wn} L{wl} (first, decided, accepted) = {st:?} tail {tail:?}");
                        last = st;
                    }
                }
            }
        }
        s.run_until(*at);
        if verbose {
            for c in &s.step_crashes()[reported..] {
                eprintln!(
                    "  t={}us crashed mid-step: {} ({:?}), lost {} of the step's {} writes",
                    c.at_us, c.node, c.mode, c.lost, c.writes
                );
            }
        }
        reported = s.step_crashes().len();
        let mm = s.storage_mismatches();
        if !mm.is_empty() {
            return Err(format!(
                "seed {seed}: t={at}us: stored log length differs from the accepted index: {mm:?}"
            ));
        }
        if verbose && !matches!(action, Action::Multicast { .. }) {
            eprintln!("  t={at}us {action:?}");
        }
        match action {
            Action::Crash(n) | Action::CrashMidStep(n) | Action::Wipe(n)
                if mode == Mode::Memory =>
            {
                if s.sim.is_up(*n) && may_wipe(&s, &sc.cfg, *n) {
                    wipes += 1;
                    s.wipe(*n)
                }
            }
            Action::Multicast { from, dests } => {
                payload += 1;
                s.multicast(*from, dests.clone(), payload.to_le_bytes().to_vec().into());
            }
            Action::Rmcast { from, dests } => {
                s.rmcast(*from, dests.clone(), bytes::Bytes::from_static(b"r"));
            }
            Action::Crash(n) => s.crash(*n),
            Action::Wipe(n) if may_wipe(&s, &sc.cfg, *n) => {
                wipes += 1;
                s.wipe(*n)
            }
            Action::Wipe(n) => s.crash(*n),
            Action::CrashMidStep(n) => s.arm_step_crash(*n, StepCrash::MidStep),
            Action::Restart(n) => {
                s.disarm_step_crash(*n);
                s.restart(*n)
            }
            Action::Partition(a, b) => s.sim.net.partition(a, b),
            Action::CutOneWay(a, b) => s.sim.net.cut_one_way(*a, *b),
            Action::Heal => {
                s.sim.net.heal_all();
                s.sim.reconnect_all();
            }
            Action::ReadIndex { from, logs } => {
                s.read_index(*from, logs);
            }
            Action::Depose(log) => {
                let leader = s
                    .sim
                    .up_nodes()
                    .into_iter()
                    .find(|&n| s.sim.actor(n).is_some_and(|a| a.leads(*log)));
                if let Some(l) = leader {
                    let others: Vec<NodeId> = sc
                        .cfg
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|&n| n != l)
                        .collect();
                    if verbose {
                        eprintln!("  deposing {l}, leader of {log}");
                    }
                    deposed += 1;
                    s.sim.net.partition(&[l], &others);
                }
            }
        }
    }
    s.run_until(sc.fault_phase_us);
    if verbose {
        for c in &s.step_crashes()[reported..] {
            eprintln!(
                "  t={}us crashed mid-step: {} ({:?}), lost {} of the step's {} writes",
                c.at_us, c.node, c.mode, c.lost, c.writes
            );
        }
    }
    // Liveness phase: a healed, reliable network and every node up; a mid-step crash still
    // armed is dropped.
    for n in sc.cfg.nodes.iter().map(|n| n.id) {
        s.disarm_step_crash(n);
    }
    s.sim.net.heal_all();
    s.sim.net.faults = NetFaults::calm();
    for n in sc.cfg.nodes.iter().map(|n| n.id) {
        s.restart(n);
    }
    s.sim.reconnect_all();
    let quiet = s.run_until_quiet(30_000_000);
    if verbose {
        eprintln!("end state (t={}us):\n{}", s.sim.now_us(), s.describe());
        if let Ok(log) = std::env::var("CHORUS_TRACE_LOG") {
            let log: u32 = log.parse().expect("log id");
            s.sim.trace = Some(Box::new(move |(_, t), from, to, m| {
                if let groups::NetMsg::Log { log: l, msg } = m {
                    if l.0 == log {
                        eprintln!("  trace t={t} {from}->{to} {msg:?}");
                    }
                }
            }));
            let until = s.sim.now_us() + 200_000;
            s.run_until(until);
        }
    }
    let atomic = s.check();
    if verbose {
        if let Err(v) = &atomic {
            for x in v.iter().take(2) {
                if let groups::checker::Violation::Prefix { a, b, position, .. } = x {
                    for sid in [a, b] {
                        let d = s.stream_detail(*sid);
                        let other = if sid == a { b } else { a };
                        let groups_other =
                            &sc.cfg.node(other.node).unwrap().subscriptions[other.subscription];
                        let (sent, _) = s.history();
                        let dests: BTreeMap<_, _> =
                            sent.iter().map(|m| (m.id, m.dests.clone())).collect();
                        let common: Vec<_> = d
                            .iter()
                            .filter(|(m, _, _)| dests[m].intersects(groups_other))
                            .collect();
                        let lo = position.saturating_sub(3);
                        eprintln!(
                            "  {sid} around {position}: {:?}",
                            &common[lo..(position + 3).min(common.len())]
                        );
                    }
                }
            }
        }
    }
    let reliable = s.check_reliable();
    let read_check = s.check_reads(quiet);
    if verbose {
        for r in s.reads() {
            eprintln!(
                "  read {}#{} (incarnation {}) at {}us: floor {:?} -> {:?} at {:?}us",
                r.node, r.seq, r.incarnation, r.asked_at_us, r.floor, r.positions, r.done_at_us
            );
        }
    }
    let mut problems = Vec::new();
    if !quiet {
        problems
            .push("liveness: not quiet 30 virtual seconds after the faults stopped".to_string());
    }
    for n in sc.cfg.nodes.iter().map(|n| n.id) {
        if s.is_wiped(n) {
            problems.push(format!("liveness: {n} did not recover from its wipe"));
        }
    }
    if let Err(v) = atomic {
        problems.extend(v.iter().map(|x| format!("atomic multicast {x}")));
    }
    if let Err(v) = reliable {
        problems.extend(v.iter().map(|x| format!("reliable multicast {x}")));
    }
    if let Err(v) = read_check {
        problems.extend(v.into_iter().map(|x| format!("read index: {x}")));
    }
    if problems.is_empty() {
        Ok(Outcome {
            sent: s.sent_count(),
            reads: s.reads().len(),
            reads_answered: s.reads().iter().filter(|r| r.positions.is_some()).count(),
            deposed,
            crashes: s.sim.stats.crashes,
            wipes,
            mid_step_crashes: s.step_crashes().len(),
            lost_writes: s.lost_writes(),
        })
    } else {
        Err(problems.join("\n  "))
    }
}

#[test]
fn multicast_properties_hold_under_faults() {
    let passed = groups::sim::seeds::campaign(
        "multicast_faults",
        "cargo test --release -p groups --test multicast_faults -- --nocapture multicast_properties_hold_under_faults",
        300,
        |seed, verbose| run(seed, verbose, Mode::Disk, false),
    );
    let sent: usize = passed.iter().map(|o| o.sent).sum();
    let crashes: u64 = passed.iter().map(|o| o.crashes).sum();
    let mid_step: usize = passed.iter().map(|o| o.mid_step_crashes).sum();
    let mid_step_seeds = passed.iter().filter(|o| o.mid_step_crashes > 0).count();
    let lost: usize = passed.iter().map(|o| o.lost_writes).sum();
    let wipes: usize = passed.iter().map(|o| o.wipes).sum();
    let wipe_seeds = passed.iter().filter(|o| o.wipes > 0).count();
    eprintln!(
        "multicast_faults: {} seeds passed: {sent} multicasts, {crashes} crashes ({mid_step} mid-step, in {mid_step_seeds} seeds, losing {lost} writes; {wipes} wiped their storage, in {wipe_seeds} seeds)",
        passed.len()
    );
    assert!(
        passed.len() < 20 || wipe_seeds > 0,
        "no seed wiped a node's storage"
    );
    // A single replayed seed may have none; a campaign must have some.
    assert!(
        passed.len() < 20 || (mid_step_seeds > 0 && lost > 0),
        "no seed crashed a node mid-step losing a write"
    );
}

/// Memory mode: every node starts without state and loses it at every crash, so every
/// restart recovers from its peers or bootstraps with them (`Policy::InMemory`), with at most
/// f acceptors of a log down or recovering at once.
#[test]
fn multicast_properties_hold_in_memory_mode() {
    let passed = groups::sim::seeds::campaign(
        "multicast_faults (memory)",
        "cargo test --release -p groups --test multicast_faults -- --nocapture multicast_properties_hold_in_memory_mode",
        150,
        |seed, verbose| run(seed, verbose, Mode::Memory, false),
    );
    let sent: usize = passed.iter().map(|o| o.sent).sum();
    let wipes: usize = passed.iter().map(|o| o.wipes).sum();
    let wipe_seeds = passed.iter().filter(|o| o.wipes > 0).count();
    eprintln!(
        "multicast_faults (memory): {} seeds passed: {sent} multicasts, {wipes} crashes losing the node's state, in {wipe_seeds} seeds",
        passed.len()
    );
    assert!(
        passed.len() < 20 || wipe_seeds > passed.len() / 4,
        "too few seeds crashed a node in memory mode"
    );
}

/// The read-index campaign (`groups::readindex`): the plans of the campaigns above (even
/// seeds on disk, odd seeds in memory mode) with read indexes asked throughout and leaders
/// deposed (cut off while they go on taking submissions). Every answered read index must
/// cover everything decided or delivered anywhere before it was asked, and once the faults
/// stop every read of a live incarnation must be answered and its node's feeds must reach
/// the positions it named.
#[test]
fn read_indexes_cover_every_decided_entry_under_faults() {
    let passed = groups::sim::seeds::campaign(
        "read_index_faults",
        "cargo test --release -p groups --test multicast_faults -- --nocapture read_indexes_cover_every_decided_entry_under_faults",
        120,
        |seed, verbose| {
            let mode = if seed % 2 == 0 { Mode::Disk } else { Mode::Memory };
            run(seed, verbose, mode, true)
        },
    );
    let reads: usize = passed.iter().map(|o| o.reads).sum();
    let answered: usize = passed.iter().map(|o| o.reads_answered).sum();
    let deposed: usize = passed.iter().map(|o| o.deposed).sum();
    let depose_seeds = passed.iter().filter(|o| o.deposed > 0).count();
    eprintln!(
        "read_index_faults: {} seeds passed: {reads} read indexes ({answered} answered), {deposed} leaders deposed in {depose_seeds} seeds",
        passed.len()
    );
    assert!(
        passed.len() < 20 || depose_seeds > passed.len() / 2,
        "too few seeds deposed a leader"
    );
    assert!(
        passed.len() < 20 || answered > reads / 2,
        "too few read indexes were answered"
    );
}
