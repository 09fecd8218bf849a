//! Goal: a B+-tree replica process that was SIGKILLed and whose logs were trimmed while it
//! was down comes back in memory, recovers by state transfer, and reaches its peers' state.
//!
//! Method: a loopback deployment of four replicas (1-3 also the acceptors; replica 4 only a
//! replica, so the logs can be trimmed while it is down: omnipaxos trims only what every
//! acceptor holds) taking a checkpoint every 200 commands, loaded by `btree-load`. Replica
//! 4 is SIGKILLed; the load (sequential inserts, with a `Rebalance` every 100 ms, so the
//! rebalancer stripes the tail and the range map changes while replica 4 is down) goes on until every log's first index at replica 1 (from its
//! `/metrics`) is past what replica 4 had received. Replica 4 restarts with empty state: its
//! metrics must show an installed checkpoint; after more load, it must take checkpoints of
//! its own, and once the load stops every replica must report the same latest checkpoint
//! round with the same state hash (`chorus_checkpoint_state_hash`, which covers the range map
//! and the load counters), and answer `size` alike; the range map must have changed.

use std::path::Path;
use std::time::Duration;
use testkit::{
    free_port, free_ports_from, fresh_dir, metric_sum, metrics, per_log, poll, run_client,
    run_load, sample, start_nodes, trimmed_past, wait_for, write_config, Agreement,
};

const SERVER: &str = env!("CARGO_BIN_EXE_btree-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_btree-client");
const LOAD: &str = env!("CARGO_BIN_EXE_btree-load");

fn load(config: &Path, seconds: f64) {
    let workload = ["--clients", "8", "--workload", "insert-heavy"];
    let rebalancing = [
        "--distribution",
        "sequential",
        "--rebalance-every-ms",
        "100",
    ];
    run_load(
        LOAD,
        config,
        seconds,
        &[&workload[..], &rebalancing[..]].concat(),
    );
}

fn size(config: &Path) -> Option<String> {
    client(config, "size")
}

fn client(config: &Path, command: &str) -> Option<String> {
    let (ok, out) = run_client(CLIENT, config, 1001, 10, &[command]);
    ok.then_some(out)
}

#[test]
fn a_killed_replica_recovers_by_state_transfer_past_the_trimmed_logs() {
    let dir = fresh_dir("btree-recovery");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(23000, 6).to_string();
    let mut args = vec!["--replicas", "4", "--workers", "2", "--clients", "2"];
    args.extend(["--prefill", "2000", "--base-port", &base]);
    write_config(SERVER, &config, &args);
    // Two workers: logs 0 and 1 (one per worker) and 2 (all groups).
    let logs = 0..3;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let extra = |n: u32| {
        vec![
            "--checkpoint-every".to_string(),
            "200".to_string(),
            "--metrics-addr".to_string(),
            format!("127.0.0.1:{}", ports[n as usize - 1]),
        ]
    };
    let mut servers = start_nodes(SERVER, &config, Path::new("."), 1..=4, extra);
    let (secs_30, ms_200) = (Duration::from_secs(30), Duration::from_millis(200));
    wait_for(secs_30, ms_200, "the deployment never answered", || {
        (size(&config).as_deref() == Some("2000")).then_some(())
    });
    load(&config, 2.0);

    // SIGKILL replica 4, remembering how far it had received each log.
    let body = metrics(ports[3]);
    let held: Vec<f64> = per_log(&body, "chorus_log_feed_next_index", logs.clone())
        .into_iter()
        .map(|v| v.expect("replica 4 shows its feeds"))
        .collect();
    servers.kill(3);

    // Load until replica 1 (an acceptor) trimmed every log past that.
    poll(Duration::from_secs(90), Duration::ZERO, || {
        load(&config, 1.5);
        let body = metrics(ports[0]);
        let firsts = per_log(&body, "chorus_log_first_index", logs.clone());
        trimmed_past(&firsts, &held).then_some(()).ok_or_else(|| {
            format!("logs never trimmed past the killed replica: first {firsts:?}, it held {held:?}\n{body}")
        })
    });

    // Restart replica 4 in memory: it must install a peer's checkpoint.
    let mut restarted = start_nodes(SERVER, &config, Path::new("."), 4..=4, extra);
    servers.0[3] = restarted.0.pop().unwrap();
    poll(Duration::from_secs(60), Duration::from_millis(200), || {
        let body = std::panic::catch_unwind(|| metrics(ports[3])).unwrap_or_default();
        let installed = sample(&body, "chorus_checkpoints_total{how=\"installed\"}");
        (installed.unwrap_or(0.0) >= 1.0)
            .then_some(())
            .ok_or_else(|| format!("replica 4 never installed a checkpoint:\n{body}"))
    });

    // More load: replica 4 takes checkpoints of its own; then every replica must agree on
    // the latest round's state hash.
    load(&config, 2.0);
    poll(Duration::from_secs(60), Duration::from_millis(300), || {
        let a = Agreement::scrape(&ports, 3);
        a.reached()
            .then_some(())
            .ok_or_else(|| format!("replicas never agreed on a checkpoint's state hash: {a:?}"))
    });
    let executed = metric_sum(&metrics(ports[3]), "chorus_commands_executed_total{").unwrap_or(0.0);
    assert!(executed > 0.0, "replica 4 executed the log suffix");
    assert!(size(&config).is_some());
    let report = client(&config, "rebalance").expect("a rebalance answered");
    assert!(
        report.contains("stripes") && !report.contains("version 0;"),
        "the range map changed: {report}"
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}
