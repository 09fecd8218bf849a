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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{
    checkpoint_hash, free_port, free_ports_from, metric_sum, sample, scrape, start_nodes,
};

const SERVER: &str = env!("CARGO_BIN_EXE_btree-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_btree-client");
const LOAD: &str = env!("CARGO_BIN_EXE_btree-load");

fn load(config: &Path, seconds: f64) {
    let out = Command::new(LOAD)
        .args(["--config", config.to_str().unwrap(), "--node", "1000"])
        .args(["--seconds", &seconds.to_string(), "--warmup-s", "0"])
        .args(["--clients", "8", "--workload", "insert-heavy"])
        .args([
            "--distribution",
            "sequential",
            "--rebalance-every-ms",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run btree-load");
    assert!(
        out.status.success(),
        "btree-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn size(config: &Path) -> Option<String> {
    client(config, "size")
}

fn client(config: &Path, command: &str) -> Option<String> {
    let out = Command::new(CLIENT)
        .args(["--config", config.to_str().unwrap(), "--node", "1001"])
        .args(["--timeout-s", "10", command])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn metrics(port: u16) -> String {
    scrape(port).1
}

/// Per log id (0..logs), the value of `metric{log="i"}` at the node serving `port`.
fn per_log(body: &str, metric: &str, logs: u32) -> Vec<Option<f64>> {
    (0..logs)
        .map(|l| sample(body, &format!("{metric}{{log=\"{l}\"}}")))
        .collect()
}

#[test]
fn a_killed_replica_recovers_by_state_transfer_past_the_trimmed_logs() {
    let dir = std::env::temp_dir().join(format!("chorus-btree-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("deployment.toml");
    let base = free_ports_from(23000, 6);
    let status = Command::new(SERVER)
        .args(["--write-config", config.to_str().unwrap()])
        .args(["--replicas", "4", "--workers", "2", "--clients", "2"])
        .args(["--prefill", "2000", "--base-port", &base.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Two workers: logs 0 and 1 (one per worker) and 2 (all groups).
    let logs = 3;
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while size(&config).as_deref() != Some("2000") {
        assert!(Instant::now() < deadline, "the deployment never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    load(&config, 2.0);

    // SIGKILL replica 4, remembering how far it had received each log.
    let body = metrics(ports[3]);
    let held: Vec<f64> = per_log(&body, "chorus_log_feed_next_index", logs)
        .into_iter()
        .map(|v| v.expect("replica 4 shows its feeds"))
        .collect();
    servers.0[3].kill().unwrap();
    let _ = servers.0[3].wait();

    // Load until replica 1 (an acceptor) trimmed every log past that.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        load(&config, 1.5);
        let firsts = per_log(&metrics(ports[0]), "chorus_log_first_index", logs);
        if firsts
            .iter()
            .zip(&held)
            .all(|(f, h)| f.is_some_and(|f| f > *h))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs never trimmed past the killed replica: first {firsts:?}, it held {held:?}\n{}",
            metrics(ports[0])
        );
    }

    // Restart replica 4 in memory: it must install a peer's checkpoint.
    let mut restarted = start_nodes(SERVER, &config, Path::new("."), 4..=4, extra);
    servers.0[3] = restarted.0.pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = std::panic::catch_unwind(|| metrics(ports[3])).unwrap_or_default();
        if sample(&body, "chorus_checkpoints_total{how=\"installed\"}").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 4 never installed a checkpoint:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // More load: replica 4 takes checkpoints of its own; then every replica must agree on
    // the latest round's state hash.
    load(&config, 2.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bodies: Vec<String> = ports.iter().map(|&p| metrics(p)).collect();
        let hashes: Vec<Option<(u64, u64)>> = bodies.iter().map(|b| checkpoint_hash(b)).collect();
        let own = sample(&bodies[3], "chorus_checkpoints_total{how=\"taken\"}").unwrap_or(0.0);
        let agree = hashes.iter().all(|h| h.is_some() && *h == hashes[0]);
        if agree && own >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never agreed on a checkpoint's state hash: {hashes:?}, replica 4 took {own}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
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
