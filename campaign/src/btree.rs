//! One run against the replicated B+-tree: three `btree-server` processes, one fault.

use crate::model::{lost_acks, TreeModel};
use crate::procs::Servers;
use crate::run::{self, ClientNode, Clients, Kills, Network, Plan, Rec, Run, Service, Target};
use crate::tap::{Recording, Tap};
use crate::{Fault, RunReport};
use btree_service::cli::{ConfigFile, DeploymentFile};
use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use bytes::Bytes;
use engine::host::client::incarnation_index;
use engine::lincheck::{self, Budget, Operation};
use engine::psmr::deployment::Deployment;
use engine::psmr::proxy::{ClientProxy, Mode};
use groups::config::{ClusterConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const SERVERS: [u32; 3] = [1, 2, 3];
pub(crate) const WORKERS: usize = 2;
/// Proxies per client thread: a thread whose command timed out moves to a fresh one (the
/// old one keeps resending its command, whose outcome stays unknown).
const SLOTS_PER_THREAD: usize = 8;

fn tree() -> TreeConfig {
    TreeConfig {
        fanout: 4,
        key_space: 128,
        prefill: 32,
        value_bytes: 4,
    }
}

/// The B+-tree's process faults: it has no oracle.
pub(crate) const SERVICE: Service = Service {
    name: "btree",
    kills: Kills {
        leader: "SIGKILL the global log's leader, restart it from its durable logs",
        follower: "SIGKILL a follower, restart it from its durable logs",
        oracle: Err("kill-oracle: the B+-tree deployment has no oracle (Chirper on DS-SMR is not started by this runner)"),
    },
    attempt,
};

/// One attempt at a run, in `dir`.
fn attempt(run: &Run, plan: &Plan, dir: &Path, r: &mut RunReport) -> Result<(), String> {
    let (o, binary, seed, fault) = (run.o, run.binary, run.seed, run.fault);
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
    // The hostile faults need configured client ids no process uses (see `SPARE_CLIENTS`).
    let spare = match fault {
        Fault::PartialFrames | Fault::FdExhaust => run::SPARE_CLIENTS,
        _ => 0,
    };
    let d =
        Deployment::new(SERVERS.len(), 1, WORKERS, 1 + spare, tuning).map_err(|e| e.to_string())?;
    let me = d.clients[0];
    let client_ids: Vec<u32> = d.clients.iter().map(|c| c.0).collect();
    let global_log = run::global_log(&d.config)?;
    let base = run::durable(&d.config, dir, fault)?;

    // Addresses, servers.
    let network = Network::new(plan, r.index, seed, &SERVERS, &client_ids)?;
    let flags = run::server_flags(&base);
    let mut servers = start_servers(&network, &d, &base, mode, tree(), binary, &flags, dir)?;

    // The client node.
    let probe_base = o.clients * SLOTS_PER_THREAD;
    let slots = probe_base + (WORKERS + 1) * SLOTS_PER_THREAD + 1;
    let TreeClient {
        node: client,
        tap,
        service,
        first,
        ids,
    } = TreeClient::start(&network, &base, me, mode, tree(), slots)?;

    // Wait until the deployment answers and every log has a leader.
    let t0 = Instant::now();
    let final_slot = slots - 1;
    client.await_answer(
        final_slot,
        TreeCommand::Get(0),
        Duration::from_secs(30),
        &servers,
    )?;
    // The probe above is part of no history: the final slot is then only used for the final scan.
    let history_start = run::all_up(o, r, &mut servers, &SERVERS, t0)?;

    // Clients.
    let mut clients = Clients::workload(
        o,
        seed,
        &client.handle,
        SLOTS_PER_THREAD,
        Duration::ZERO,
        command,
    );

    // The fault.
    let (hold, led) = run::warm_up(o, &mut rng, &servers)?;
    // The global log (covering every group) is the one every worker of every replica reads:
    // its leader is "the leader". Each node leads some log in this layout (omnipaxos spreads
    // the initial leaders), so a follower is a follower of one chosen log.
    let leader = led
        .get(&global_log)
        .copied()
        .ok_or_else(|| format!("the global log {global_log} has no leader: {led:?}"))?;
    let victim = match fault {
        Fault::KillLeader
        | Fault::Pause
        | Fault::Loss
        | Fault::Delay
        | Fault::PartialFrames
        | Fault::FdExhaust => leader,
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
        Fault::Partition | Fault::WipeData => SERVERS[rng.random_range(0..SERVERS.len())],
        Fault::ControlWipeAll => leader,
        Fault::KillOracle => return Err("no oracle".into()),
    };
    let target = Target {
        fault,
        victim,
        hold,
        cluster_id: d.config.cluster_id.frame_tag(),
        spare_clients: client_ids[1..].to_vec(),
    };
    run::record_victim(o, r, &target, &led);
    // Probes: one client per log the victim leads, reading through that log without pause,
    // so that the first reply after the fault on each log comes as soon as the log can
    // order again (the workload alone may route few commands through a log: in opt-PSMR
    // only scans over both workers and conservative retries use the global log).
    for (j, &log) in r.victim_led_logs.iter().enumerate() {
        let probe = probe_command(&d.config, global_log, log)?;
        let t = o.clients + j;
        let first = probe_base + j * SLOTS_PER_THREAD;
        clients.spawn(
            &client.handle,
            t,
            first..first + SLOTS_PER_THREAD,
            Duration::ZERO,
            move |_| probe.clone(),
        );
    }
    let injected = run::inject(o, r, &target, &network, &mut servers, &SERVERS, dir)?;
    if fault == Fault::FdExhaust {
        // A client that connects only now, through a log the victim leads.
        let fresh = d.clients[1];
        let log = *r
            .victim_led_logs
            .first()
            .ok_or("fd-exhaust: the victim leads no log")?;
        let proxy = ClientProxy::new(
            engine::wire::ClientId::new(fresh, first.wrapping_add(slots as u32)),
            service.clone(),
            mode,
            WORKERS,
            500,
        );
        let probe = probe_command(&d.config, global_log, log)?;
        let view = Arc::new(network.view(&base, fresh.0));
        run::probe_fresh_client(r, view, fresh, proxy, probe, &target, &injected)?;
    }

    // Settle, stop the clients.
    let mut recs = clients.stop(r)?;
    run::served_during(r, &recs, &target, &injected);

    // The final full scan, answered by every replica.
    let (fin, rec) = final_scan(
        &client,
        &tap,
        ids[final_slot],
        final_slot,
        tree().key_space,
        r,
    )?;
    recs.push(rec);
    run::finish(r, servers, client, network);

    check_history(r, &recs, history_start, &tree(), &fin, Budget::default());
    run::failover(r, &tap, &target, &injected);
    Ok(())
}

/// Starts a `btree-server` (with `flags`) for each of [`SERVERS`] of deployment `d` on
/// `network`, in `mode`, serving `tree`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_servers(
    network: &Network,
    d: &Deployment,
    base: &ClusterConfig,
    mode: Mode,
    tree: TreeConfig,
    binary: &Path,
    flags: &[String],
    dir: &Path,
) -> Result<Servers, String> {
    network.start_servers(&SERVERS, binary, flags, dir, |n| {
        DeploymentFile {
            mode,
            workers: WORKERS,
            replicas: d.replicas.clone(),
            tree: tree.clone(),
            cluster: network.view(base, n),
        }
        .render()
    })
}

/// The in-process client node of a B+-tree run: its recording proxies and what they share.
pub(crate) struct TreeClient {
    pub(crate) node: ClientNode<TreeCommand, TreeReply>,
    pub(crate) tap: Arc<Tap>,
    pub(crate) service: Arc<TreeService>,
    /// The incarnation index of proxy 0 (proxy `i` is `first + i`).
    pub(crate) first: u32,
    /// Proxy `i`'s client id.
    pub(crate) ids: Vec<u64>,
}

impl TreeClient {
    /// Starts node `me` over TCP on `network`, hosting `slots` recording proxies in `mode`.
    pub(crate) fn start(
        network: &Network,
        base: &ClusterConfig,
        me: NodeId,
        mode: Mode,
        tree: TreeConfig,
        slots: usize,
    ) -> Result<TreeClient, String> {
        let cluster = Arc::new(network.view(base, me.0));
        let service = Arc::new(TreeService::try_new(tree)?);
        let tap = Arc::new(Tap::default());
        let first = incarnation_index();
        let id = |i: usize| engine::wire::ClientId::new(me, first.wrapping_add(i as u32));
        let proxies: Vec<Recording<TreeService>> = (0..slots)
            .map(|i| {
                Recording::new(
                    ClientProxy::new(id(i), service.clone(), mode, WORKERS, 500),
                    tap.clone(),
                    cluster.clone(),
                )
            })
            .collect();
        let ids = (0..slots).map(|i| id(i).0).collect();
        Ok(TreeClient {
            node: ClientNode::start(cluster, me, proxies)?,
            tap,
            service,
            first,
            ids,
        })
    }
}

/// The final full scan (keys below `key_space`) through client `slot` (proxy id `id`), answered by every replica:
/// its reply and its record, with each replica's answer hash recorded in `r` (a problem if
/// they differ or some replica did not answer within 30 s).
pub(crate) fn final_scan(
    client: &ClientNode<TreeCommand, TreeReply>,
    tap: &Tap,
    id: u64,
    slot: usize,
    key_space: u64,
    r: &mut RunReport,
) -> Result<(TreeReply, Rec<TreeCommand, TreeReply>), String> {
    let full = TreeCommand::Scan {
        lo: 0,
        hi: key_space,
        limit: u32::MAX,
    };
    let call = Instant::now();
    let fin = match client
        .handle
        .call(slot, full.clone(), Duration::from_secs(30))
    {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => return Err(format!("final scan failed: {e}")),
        None => return Err("the final scan got no reply within 30 s".into()),
    };
    let rec = Rec {
        thread: usize::MAX,
        cmd: full,
        call,
        ret: Some((Instant::now(), fin.clone())),
    };
    let answers_by = Instant::now() + Duration::from_secs(30);
    let answers = loop {
        let answers: BTreeMap<u32, u64> = {
            let seen = tap.seen.lock();
            seen.range((id, 0)..=(id, u64::MAX))
                .rfind(|(_, s)| s.completed.is_some())
                .map(|(_, s)| s.replies.iter().map(|(&n, &(h, _))| (n, h)).collect())
                .unwrap_or_default()
        };
        if answers.len() == SERVERS.len() || Instant::now() > answers_by {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    run::record_hashes(r, &answers);
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
    Ok((fin, rec))
}

/// Checks the recorded operations `recs` (times from `start`) against the model of `tree`
/// (within `budget`) and the final scan's answer `fin` for lost acknowledged writes, and that
/// enough ran; records all of it in `r`.
pub(crate) fn check_history(
    r: &mut RunReport,
    recs: &[Rec<TreeCommand, TreeReply>],
    start: Instant,
    tree: &TreeConfig,
    fin: &TreeReply,
    budget: Budget,
) {
    let history: Vec<Operation<TreeCommand, TreeReply>> = run::history(r, recs, start);
    let model = TreeModel::for_config(tree);
    let verdict = lincheck::check(&model, &history, budget);
    run::record_verdict(r, &verdict);
    match fin {
        TreeReply::Entries(entries) => {
            let state: BTreeMap<u64, Bytes> = entries.iter().cloned().collect();
            run::record_lost(r, &lost_acks(&model.initial, &history, &state));
        }
        other => r
            .problems
            .push(format!("the final scan answered {other:?}")),
    }
    run::check_ran(r);
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
                        engine::psmr::service::Service::optimistic(&service, &probe, WORKERS)
                    }
                    _ => engine::psmr::service::Service::conservative(&service, &probe, WORKERS),
                };
                let groups: Vec<u32> = match target {
                    engine::psmr::service::Target::One(w) => vec![w as u32],
                    engine::psmr::service::Target::All => (0..WORKERS as u32).collect(),
                    engine::psmr::service::Target::Many(ws) => {
                        ws.iter().map(|&w| w as u32).collect()
                    }
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
