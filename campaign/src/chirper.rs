//! One run against Chirper on DS-SMR (or on DynaStar: [`SERVICE_DYNASTAR`]; or combined,
//! two workers in every partition replica: [`SERVICE_COMBINED`]): two partitions of three
//! replicas and an oracle of three, nine `chirper-server` processes (replicas colocated with
//! the acceptors of their group's log; the global log's acceptors are one replica of each
//! group), durable logs, one fault.
//!
//! Clients of one in-process TCP client node post, follow, unfollow and read timelines on a
//! small generated social graph through [`ScaleOutClient`]s, recording every invocation and
//! response. Checks: the history is linearizable against [`ChirperModel`] (timelines are long
//! enough never to drop a post, so the model keeps every post); every replica of each group
//! (partition 0, partition 1, the oracle) ends with the same state hash, as its metrics
//! (`chorus_replica_state_hash`) show; every acknowledged post is in its author's final
//! timeline (read for every user once the clients stopped, part of the history); no server
//! died except the victim.

use crate::procs::scrape;
use crate::run::{
    self, ClientNode, Clients, Kills, Network, Plan, Rec, Run, Service, Target, STARTUP,
};
use crate::tap::{ScaleOutRecording, Tap};
use crate::{CombinedCounts, Fault, OraclePlacements, RunReport};
use bytes::Bytes;
use chirper::cli::{ConfigFile, DeploymentFile, ServiceSection};
use chirper::graph::GraphSpec;
use chirper::model::{ChirperModel, SpecUser};
use chirper::service::{Chirper, Command, Post, Reply, UserId};
use engine::host::client::incarnation_index;
use engine::lincheck::{self, Budget, Operation};
use engine::partitioned::layout::{self, ScaleOutLayout};
use engine::partitioned::msg::Response;
use engine::partitioned::proxy::{ClientOptions, ScaleOutClient};
use engine::partitioned::replica::Role;
use engine::partitioned::Scheme;
use groups::config::Tuning;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 2;
const REPLICAS: usize = 3;
/// Users of the generated graph (ids `0..USERS`), the workload's users.
const USERS: u32 = 16;
/// Probe users, created before the history starts and touched by nothing but the probes:
/// [`Shape::probe_user`]`(p)` is placed on partition `p` (ids beyond the graph go to
/// `id % cells`, and `PROBE_USER` is a multiple of every cell count run here, so
/// `PROBE_USER + p * k` is cell `p * k`, worker 0 of partition `p`) and never moves, so
/// reading its timeline goes through partition `p`'s log alone.
const PROBE_USER: UserId = 1000;
/// Users the global log's probe creates (a create goes to the oracle and a partition).
const FRESH_USERS: UserId = 100_000;
/// Longer than any run's posts: the model and the replicas then keep every post, so an
/// acknowledged post missing from its author's final timeline is a lost post.
const TIMELINE_LEN: usize = 4096;
/// Proxies per client thread (see `btree::SLOTS_PER_THREAD`).
const SLOTS_PER_THREAD: usize = 8;
/// The workload's pause between commands: keeps the history (checked as one part: a post
/// touches any follower) small enough for the checker.
const THINK: Duration = Duration::from_millis(8);
/// The probes' pause between commands (the failover time's resolution).
const PROBE_THINK: Duration = Duration::from_millis(5);

type Reply2 = Response<Reply>;

/// What a run deploys: the scheme and the workers in every partition replica (above 1:
/// combined mode, [`engine::partitioned::combined`]; each a thread of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub scheme: Scheme,
    pub workers: u32,
}

impl Shape {
    const DSSMR: Shape = Shape {
        scheme: Scheme::Dssmr,
        workers: 1,
    };
    /// The combined campaign's: 2 partitions x 3 replicas x 2 workers.
    const COMBINED: Shape = Shape {
        scheme: Scheme::Dssmr,
        workers: 2,
    };
    const DYNASTAR: Shape = Shape {
        scheme: Scheme::Dynastar,
        workers: 1,
    };

    /// The protocol's partitions (partitions x workers).
    fn cells(self) -> u32 {
        PARTITIONS * self.workers
    }

    /// Partition `p`'s probe user (on worker 0 of `p`).
    fn probe_user(self, p: u32) -> UserId {
        PROBE_USER + p * self.workers
    }
}

/// The `[service]` table every process builds the same graph and placement from (DS-SMR:
/// by community, sharded over the workers by id; DynaStar: random, for the oracle to
/// repartition).
fn section(shape: Shape) -> ServiceSection {
    let scheme = shape.scheme;
    let spec = GraphSpec {
        users: USERS,
        communities: 2,
        mean_followees: 3.0,
        locality: 0.8,
        popularity_exponent: 1.0,
        seed: 11,
    };
    let quality = if scheme == Scheme::Dynastar { 0.0 } else { 1.0 };
    let mut s = ServiceSection::generated(scheme, PARTITIONS, &spec, quality);
    s.timeline_len = TIMELINE_LEN;
    s.workers = shape.workers;
    s
}

/// The layout, with `clients` client nodes (the workload's and spare ones).
fn layout(shape: Shape, clients: usize) -> Result<ScaleOutLayout, String> {
    let tuning = Tuning {
        // Replicas rebuild their state from the logs: nothing may be trimmed.
        trim: false,
        ..layout::tuning()
    };
    ScaleOutLayout::combined(
        shape.scheme,
        PARTITIONS,
        shape.workers,
        REPLICAS,
        1,
        clients,
        tuning,
    )
    .map_err(|e| e.to_string())
}

/// Chirper's process faults.
pub(crate) const SERVICE: Service = Service {
    name: "chirper",
    kills: Kills {
        leader: "SIGKILL the leader of the global log or of a partition's log, restart it from its durable logs",
        follower: "SIGKILL a follower of a random log, restart it from its durable logs",
        oracle: Ok("SIGKILL an oracle replica, restart it from its durable logs"),
    },
    attempt: |run, plan, dir, r| attempt(Shape::DSSMR, run, plan, dir, r),
};

/// Chirper on DS-SMR in combined mode (two worker threads in every partition replica, users
/// sharded over them by id): the same faults.
pub(crate) const SERVICE_COMBINED: Service = Service {
    name: "chirper-combined",
    kills: SERVICE.kills,
    attempt: |run, plan, dir, r| attempt(Shape::COMBINED, run, plan, dir, r),
};

/// Chirper on DynaStar's process faults.
pub(crate) const SERVICE_DYNASTAR: Service = Service {
    name: "chirper-dynastar",
    kills: SERVICE.kills,
    attempt: |run, plan, dir, r| attempt(Shape::DYNASTAR, run, plan, dir, r),
};

/// The specification's initial state: the graph's users and the probe users.
pub fn model(section: &ServiceSection) -> Result<ChirperModel, String> {
    let shape = Shape {
        workers: section.workers.max(1),
        ..Shape::DSSMR
    };
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
        initial.insert(shape.probe_user(p), SpecUser::default());
    }
    Ok(ChirperModel {
        initial,
        timeline_len: section.timeline_len,
    })
}

/// One attempt at a run, in `dir`.
fn attempt(
    shape: Shape,
    run: &Run,
    plan: &Plan,
    dir: &Path,
    r: &mut RunReport,
) -> Result<(), String> {
    let (o, binary, seed, fault) = (run.o, run.binary, run.seed, run.fault);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scheme = shape.scheme;
    r.mode = if shape.workers > 1 {
        format!("{} x {} workers", scheme.name(), shape.workers)
    } else {
        scheme.name().into()
    };
    // The hostile faults need configured client ids no process uses (see `SPARE_CLIENTS`).
    let spare = match fault {
        Fault::PartialFrames | Fault::FdExhaust => run::SPARE_CLIENTS,
        _ => 0,
    };
    let lay = layout(shape, 1 + spare)?;
    let servers_ids: Vec<u32> = lay
        .config
        .nodes
        .iter()
        .filter(|n| !lay.is_client(n.id))
        .map(|n| n.id.0)
        .collect();
    let me = lay.clients[0];
    let global_log = run::global_log(&lay.config)?;
    let base = run::durable(&lay.config, dir, fault)?;
    let section = section(shape);

    // Addresses, servers.
    let client_ids: Vec<u32> = lay.clients.iter().map(|c| c.0).collect();
    let network = Network::new(plan, r.index, seed, &servers_ids, &client_ids)?;
    let mut flags = run::server_flags(&base);
    if shape.workers > 1 {
        // Every worker thread pinned (P-SMR's placement; on 2 cores the processes share).
        flags.push("--pin".into());
    }
    let mut servers = network.start_servers(&servers_ids, binary, &flags, dir, |n| {
        DeploymentFile {
            section: section.clone(),
            scheme,
            cluster: network.view(&base, n),
        }
        .render()
    })?;

    // The client node.
    let cluster = Arc::new(network.view(&base, me.0));
    let service: Arc<Chirper> = Arc::new(section.service()?);
    let tap = Arc::new(Tap::default());
    let first = incarnation_index();
    let probe_base = o.clients * SLOTS_PER_THREAD;
    let logs_total = lay.config.logs.len();
    let slots = probe_base + logs_total * SLOTS_PER_THREAD + 1;
    let proxies: Vec<ScaleOutRecording<Chirper>> = (0..slots)
        .map(|i| {
            let mut opts = ClientOptions::new(scheme, shape.cells());
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
    let client = ClientNode::start(cluster.clone(), me, proxies)?;

    // Wait until the deployment answers, create the probe users, wait for every log's leader.
    let t0 = Instant::now();
    let final_slot = slots - 1;
    client.await_answer(
        final_slot,
        Command::GetTimeline(0),
        Duration::from_secs(40),
        &servers,
    )?;
    for p in 0..PARTITIONS {
        match client.handle.call(
            final_slot,
            Command::CreateUser(shape.probe_user(p)),
            Duration::from_secs(10),
        ) {
            Some(Ok(Response::Created)) => {}
            other => return Err(format!("{STARTUP}creating probe user {p}: {other:?}")),
        }
    }
    let history_start = run::all_up(o, r, &mut servers, &servers_ids, t0)?;

    // Clients.
    let mut clients = Clients::workload(o, seed, &client.handle, SLOTS_PER_THREAD, THINK, command);

    // The fault.
    let (hold, led) = run::warm_up(o, &mut rng, &servers)?;
    let leader_of = |log: u32| {
        led.get(&log)
            .copied()
            .ok_or_else(|| format!("log {log} has no leader: {led:?}"))
    };
    let global_leader = leader_of(global_log)?;
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
        Fault::Pause
        | Fault::Loss
        | Fault::Delay
        | Fault::PartialFrames
        | Fault::FdExhaust
        | Fault::ControlWipeAll => global_leader,
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
        Fault::Partition | Fault::WipeData => servers_ids[rng.random_range(0..servers_ids.len())],
    };
    let target = Target {
        fault,
        victim,
        hold,
        cluster_id: lay.config.cluster_id.frame_tag(),
        spare_clients: client_ids[1..].to_vec(),
    };
    run::record_victim(o, r, &target, &led);
    // Probes: one client per log the victim leads, going through that log without pause
    // (a partition's log: a timeline read of that partition's probe user; the oracle's and
    // the global log: a create of a fresh user, which consults the oracle and then goes to
    // the oracle and a partition).
    let oracle_log = lay
        .config
        .logs
        .iter()
        .position(|l| {
            l.covers == groups::groupset::GroupSet::singleton(groups::ids::GroupId(shape.cells()))
        })
        .map(|i| lay.config.logs[i].id.0);
    for (j, &log) in r.victim_led_logs.iter().enumerate() {
        let t = o.clients + j;
        let first = probe_base + j * SLOTS_PER_THREAD;
        let next: Box<dyn FnMut(u64) -> Command + Send> = if log < PARTITIONS {
            let user = shape.probe_user(log);
            Box::new(move |_| Command::GetTimeline(user))
        } else if log == global_log || Some(log) == oracle_log {
            let base = FRESH_USERS + 10_000 * j as u32;
            Box::new(move |n| Command::CreateUser(base + n as u32))
        } else {
            return Err(format!("no probe for log {log}"));
        };
        clients.spawn(
            &client.handle,
            t,
            first..first + SLOTS_PER_THREAD,
            PROBE_THINK,
            next,
        );
    }
    let injected = run::inject(o, r, &target, &network, &mut servers, &servers_ids, dir)?;
    if fault == Fault::FdExhaust {
        // A client that connects only now, through a log the victim leads: a create of a
        // user no other command touches (outside the history: it changes nothing the
        // history reads).
        let fresh = lay.clients[1];
        let log = *r
            .victim_led_logs
            .first()
            .ok_or("fd-exhaust: the victim leads no log")?;
        let probe = if log < PARTITIONS {
            Command::GetTimeline(shape.probe_user(log))
        } else {
            Command::CreateUser(FRESH_USERS - 1)
        };
        let mut opts = ClientOptions::new(scheme, shape.cells());
        opts.seed = seed;
        let proxy = ScaleOutClient::new(
            engine::wire::ClientId::new(fresh, first.wrapping_add(slots as u32)),
            service.clone(),
            opts,
        );
        let view = Arc::new(network.view(&base, fresh.0));
        run::probe_fresh_client(r, view, fresh, proxy, probe, &target, &injected)?;
    }

    // Settle, stop the clients.
    let mut recs = clients.stop(r)?;
    run::served_during(r, &recs, &target, &injected);

    // Final reads: every user's timeline, one after the other (part of the history).
    let mut timelines: BTreeMap<UserId, Vec<Post>> = BTreeMap::new();
    let readers = (0..USERS).chain((0..PARTITIONS).map(|p| shape.probe_user(p)));
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
            injected.healed_at.elapsed().as_secs_f64()
        );
    }
    run::record_hashes(r, &hashes);
    if scheme == Scheme::Dynastar {
        let chunks: u64 = servers_ids
            .iter()
            .filter(|&&n| matches!(lay.role(groups::ids::NodeId(n)), Some(Role::Partition(_))))
            .filter_map(|&n| {
                let body = scrape(servers.metrics_addr(n)?).ok()?;
                counter(&body, "chorus_partition_plan_chunks_total")
            })
            .sum();
        r.placement_chunks = Some(chunks);
        // What the oracle replicas computed, to tell a placement that moved nothing (too
        // little traffic for a better cut) from a plan that never arrived.
        let oracle: Vec<OraclePlacements> = lay
            .oracle_replicas
            .iter()
            .map(|&n| {
                let body = servers.metrics_addr(n.0).and_then(|a| scrape(a).ok());
                let get = |name| body.as_deref().and_then(|b| counter(b, name));
                OraclePlacements {
                    node: n.0,
                    hint_batches: get("chorus_oracle_hint_batches_total"),
                    placements: get("chorus_oracle_repartitions_total"),
                    empty: get("chorus_oracle_repartitions_empty_total"),
                    plans: get("chorus_oracle_plans_completed_total"),
                }
            })
            .collect();
        if chunks == 0 {
            let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
            let each: Vec<String> = oracle
                .iter()
                .map(|o| {
                    format!(
                        "node {}: {} hint batches, {} placements ({} moved nothing), {} plans delivered",
                        o.node,
                        show(o.hint_batches),
                        show(o.placements),
                        show(o.empty),
                        show(o.plans)
                    )
                })
                .collect();
            r.problems.push(format!(
                "DynaStar: no placement chunk was applied during the run (no repartition moved a user); oracle {}",
                each.join("; ")
            ));
        }
        r.oracle_placements = Some(oracle);
    }
    if shape.workers > 1 {
        let k = shape.workers as usize;
        let mut seen = Vec::new();
        for &n in &servers_ids {
            if !matches!(lay.role(groups::ids::NodeId(n)), Some(Role::Partition(_))) {
                continue;
            }
            let Some(body) = servers.metrics_addr(n).and_then(|a| scrape(a).ok()) else {
                r.problems.push(format!(
                    "combined mode: node {n}'s metrics could not be read"
                ));
                continue;
            };
            let by_worker: Vec<u64> = (0..k)
                .map_while(|w| {
                    labelled(
                        &body,
                        "chorus_partition_worker_handled_total",
                        ("worker", &w.to_string()),
                    )
                })
                .collect();
            let multi = counter(&body, "chorus_partition_multi_total").unwrap_or(0);
            let moved_in = counter(&body, "chorus_partition_moves_in_total").unwrap_or(0);
            let pinned = (0..k)
                .filter(|w| {
                    labelled(
                        &body,
                        "chorus_partition_worker_cpu",
                        ("worker", &w.to_string()),
                    )
                    .is_some()
                })
                .count();
            if pinned < k {
                r.problems.push(format!(
                    "combined mode: node {n} runs with --pin but {pinned} of its {k} workers are pinned"
                ));
            }
            if by_worker.len() < k || by_worker.contains(&0) {
                r.problems.push(format!(
                    "combined mode: node {n}'s {k} workers did not all handle commands: {by_worker:?}"
                ));
            }
            seen.push(CombinedCounts {
                node: n,
                handled: by_worker,
                multi,
                moved_in,
                pinned,
            });
        }
        if seen.iter().all(|c| c.multi + c.moved_in == 0) {
            r.problems.push(
                "combined mode: no command crossed cells (none ran over several, no object moved) at any partition replica"
                    .into(),
            );
        }
        if o.verbose {
            eprintln!("  run {}: combined-mode counts: {seen:?}", r.index);
        }
        r.worker_handled = Some(seen);
    }
    r.states_equal = hashes.len() == servers_ids.len() && groups_agree(&groups, &hashes);
    if !r.states_equal {
        r.problems.push(format!(
            "final replica states differ or are missing within a group: {:?} (groups {:?})",
            r.final_hashes, groups
        ));
    }
    run::finish(r, servers, client, network);

    // The history.
    let history: Vec<Operation<Command, Reply2>> = run::history(r, &recs, history_start);
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
    run::record_verdict(r, &verdict);
    run::record_lost(r, &lost_posts(&history, &timelines));
    run::check_ran(r);

    // Failover, as for the B+-tree.
    run::failover(r, &tap, &target, &injected);
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

/// A counter with one label (`name{label="value"}`) from a metrics body.
pub fn labelled(body: &str, name: &str, (label, value): (&str, &str)) -> Option<u64> {
    sample(body, &format!("{name}{{{label}=\"{value}\"}} "))
}

/// A counter without labels from a metrics body.
pub fn counter(body: &str, name: &str) -> Option<u64> {
    sample(body, &format!("{name} "))
}

/// The non-negative integer value of the line starting with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<u64> {
    let v: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix(prefix))?
        .trim()
        .parse()
        .ok()?;
    (v >= 0.0 && v.fract() == 0.0).then_some(v as u64)
}

/// Acknowledged posts missing from their author's final timeline (timelines keep every post
/// of a run: `TIMELINE_LEN`).
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
        let body = "# TYPE chorus_partition_plan_chunks_total counter\nchorus_partition_plan_chunks_total 3\nchorus_partition_plan_chunks_totalx 9\n";
        assert_eq!(counter(body, "chorus_partition_plan_chunks_total"), Some(3));
        assert_eq!(counter(body, "chorus_partition_lent_total"), None);
        let body = "chorus_partition_worker_handled_total{worker=\"0\"} 7\nchorus_partition_worker_handled_total{worker=\"1\"} 0\n";
        let w = |i: &str| labelled(body, "chorus_partition_worker_handled_total", ("worker", i));
        assert_eq!((w("0"), w("1"), w("2")), (Some(7), Some(0), None));
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
        for shape in [Shape::DSSMR, Shape::COMBINED, Shape::DYNASTAR] {
            let lay = layout(shape, 1).unwrap();
            let servers = lay
                .config
                .nodes
                .iter()
                .filter(|n| !lay.is_client(n.id))
                .count();
            assert_eq!(servers, 9, "{shape:?}");
            // A log per partition (covering its cells), the oracle's, the global one.
            assert_eq!(lay.config.logs.len(), 4, "{shape:?}");
            assert_eq!(lay.oracle_replicas.len(), 3);
            assert_eq!(lay.partitions, shape.cells());
            let s = section(shape);
            assert_eq!(s.workers, shape.workers);
            let m = model(&s).unwrap();
            assert_eq!(m.initial.len(), USERS as usize + 2);
            let service = s.service().unwrap();
            let cells = engine::partitioned::combined::Cells::new(PARTITIONS, shape.workers);
            for p in 0..PARTITIONS {
                let u = shape.probe_user(p);
                assert!(m.initial.contains_key(&u));
                // Probe users land on their own partition, on its worker 0.
                let cell = engine::partitioned::service::PartitionedService::place(
                    &service,
                    u64::from(u),
                    shape.cells(),
                );
                assert_eq!(cell, cells.cell(p, 0), "{shape:?} probe {p}");
                assert_eq!(cells.partition_of(cell), p);
                // Partition p's log covers the probe's cell.
                let log = lay.config.logs.iter().find(|l| l.id.0 == p).unwrap();
                assert!(log.covers.contains(groups::ids::GroupId(cell)));
            }
            if shape.workers > 1 {
                // The graph's users are spread over every cell: commands of one worker, of
                // several workers of one partition and of several partitions all occur.
                let used: BTreeSet<u32> = (0..USERS)
                    .map(|u| {
                        engine::partitioned::service::PartitionedService::place(
                            &service,
                            u64::from(u),
                            shape.cells(),
                        )
                    })
                    .collect();
                assert_eq!(used.len() as u32, shape.cells(), "{shape:?}: {used:?}");
            }
        }
    }
}
