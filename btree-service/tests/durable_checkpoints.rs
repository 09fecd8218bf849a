//! Goal: with `durability = "disk"` and trimming on (the default), a replica process that is
//! SIGKILLed restarts from its durable checkpoint and replays only the log suffix after it
//! (no state transfer), reaching its peers' state; a damaged newest checkpoint is set aside
//! and the one before it used; and every node's data directory stays bounded under load
//! (log entries below the checkpoints are trimmed and compacted away on disk).
//!
//! Method: a loopback deployment of three replicas (each also an acceptor of every log), disk
//! mode, a checkpoint every 300 commands, write-ahead files compacted past 256 KiB, loaded by
//! `btree-load` (gets and updates of existing keys, so the state keeps its size). After
//! rounds of load, every log's first index must be past 0 and each node's data directory
//! (logs and checkpoints) below `logs x 2 x wal_compact_bytes + 2 x checkpoint + 64 KiB`, the
//! bound compaction and keeping two checkpoints give. Replica 3 is SIGKILLed and restarted:
//! its metrics must show a checkpoint loaded from disk and none installed from a peer, its
//! feeds must start at the checkpoint's positions, and after more load all replicas must
//! report the same state hash for the same checkpoint round. Then replica 3 is killed again,
//! its newest checkpoint file gets a flipped byte, and it must load the previous round's file
//! (saying so in its log) and again converge.

use engine::checkpoint::disk::KEEP;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{
    checkpoint_hash, free_port, free_ports_from, run_client, run_load, sample, scrape, start_nodes,
};

const SERVER: &str = env!("CARGO_BIN_EXE_btree-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_btree-client");
const LOAD: &str = env!("CARGO_BIN_EXE_btree-load");

const WAL_COMPACT_BYTES: u64 = 256 << 10;
const LOGS: u32 = 3;

fn load(config: &Path, seconds: f64) {
    let args = ["--clients", "8", "--workload", "read-update"];
    run_load(LOAD, config, seconds, &args);
}

fn size(config: &Path) -> Option<String> {
    let (ok, out) = run_client(CLIENT, config, 1001, 10, &["size"]);
    ok.then_some(out)
}

/// The node's metrics, or nothing while it does not listen (starting, killed).
fn metrics(port: u16) -> String {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return String::new();
    }
    scrape(port).1
}

/// A setting of the run, from the environment for measurements (`CHORUS_DURABLE_KEYS=1000000
/// CHORUS_DURABLE_CHECKPOINT_EVERY=20000 cargo test ... -- --nocapture`), else `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Node `n`'s checkpoint files, newest first.
fn checkpoint_files(data: &Path, n: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join(format!("node-{n}.checkpoints")))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "ckpt"));
    files.sort();
    files.reverse();
    files
}

fn round_of(file: &Path) -> u64 {
    let name = file.file_stem().unwrap().to_str().unwrap();
    name.trim_start_matches("checkpoint-").parse().unwrap()
}

/// Starts node 3 with its stderr in `log`.
fn start_replica_3(config: &Path, dir: &Path, extra: &[String], log: &Path) -> Child {
    Command::new(SERVER)
        .current_dir(dir)
        .args(["--config", config.to_str().unwrap(), "--node", "3"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until replica 3 (metrics at `port`) loaded a checkpoint; returns the time it took
/// and its metrics then.
fn wait_loaded(port: u16, started: Instant, log: &Path) -> (Duration, String) {
    let deadline = started + Duration::from_secs(60);
    loop {
        let body = metrics(port);
        if sample(&body, "chorus_checkpoints_total{how=\"loaded\"}") == Some(1.0) {
            return (started.elapsed(), body);
        }
        assert!(
            Instant::now() < deadline,
            "replica 3 never loaded its checkpoint:\n{body}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every replica reports the same state hash for the same checkpoint round,
/// replica 3 having taken one of its own since its restart.
fn wait_agreement(config: &Path, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        load(config, 1.0);
        let bodies: Vec<String> = ports.iter().map(|&p| metrics(p)).collect();
        let hashes: Vec<Option<(u64, u64)>> = bodies.iter().map(|b| checkpoint_hash(b)).collect();
        let own = sample(&bodies[2], "chorus_checkpoints_total{how=\"taken\"}").unwrap_or(0.0);
        if own >= 1.0 && hashes.iter().all(|h| h.is_some() && *h == hashes[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never agreed on a checkpoint's state hash: {hashes:?}, replica 3 took {own}"
        );
    }
}

#[test]
fn a_replica_restarts_from_its_durable_checkpoint_and_the_data_directory_stays_bounded() {
    let keys = setting("CHORUS_DURABLE_KEYS", 5000);
    let rounds = setting("CHORUS_DURABLE_ROUNDS", 8);
    let every = setting("CHORUS_DURABLE_CHECKPOINT_EVERY", 300);
    let dir = std::env::temp_dir().join(format!("chorus-durable-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(24000, 5);
    let status = Command::new(SERVER)
        .args(["--write-config", config.to_str().unwrap()])
        .args(["--replicas", "3", "--workers", "2", "--clients", "2"])
        .args([
            "--prefill",
            &keys.to_string(),
            "--base-port",
            &base.to_string(),
        ])
        .args(["--durability", "disk", "--data-dir", data.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Trimming is on by default with "disk"; compact the write-ahead files early and trim
    // in small steps so a short run shows the bound.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("trim = true"), "{text}");
    let text = text
        .replace(
            "wal_compact_bytes = 67108864",
            &format!("wal_compact_bytes = {WAL_COMPACT_BYTES}"),
        )
        .replace("trim_every_entries = 1024", "trim_every_entries = 16");
    assert!(text.contains(&format!("wal_compact_bytes = {WAL_COMPACT_BYTES}")));
    assert!(text.contains("trim_every_entries = 16"));
    std::fs::write(&config, text).unwrap();

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let extra = |n: u32| {
        vec![
            "--checkpoint-every".to_string(),
            every.to_string(),
            "--metrics-addr".to_string(),
            format!("127.0.0.1:{}", ports[n as usize - 1]),
        ]
    };
    let mut servers = start_nodes(SERVER, &config, &dir, 1..=3, extra);
    let deadline = Instant::now() + Duration::from_secs(30 + keys / 10_000);
    while size(&config).as_deref() != Some(&keys.to_string()) {
        assert!(Instant::now() < deadline, "the deployment never answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Rounds of load; the data directories must stay within the bound.
    let mut sizes = Vec::new();
    for _ in 0..rounds {
        load(&config, 1.5);
        let per_node: Vec<u64> = (1..=3)
            .map(|n| {
                bytes_under(&data.join(format!("node-{n}")))
                    + bytes_under(&data.join(format!("node-{n}.checkpoints")))
            })
            .collect();
        sizes.push(per_node);
    }
    let body = metrics(ports[0]);
    let executed: f64 = testkit::metric_sum(&body, "chorus_commands_executed_total{").unwrap();
    let ckpt_bytes = sample(&body, "chorus_checkpoint_bytes").unwrap() as u64;
    let firsts: Vec<f64> = (0..LOGS)
        .map(|l| sample(&body, &format!("chorus_log_first_index{{log=\"{l}\"}}")).unwrap())
        .collect();
    let decided: Vec<f64> = (0..LOGS)
        .map(|l| sample(&body, &format!("chorus_log_decided_index{{log=\"{l}\"}}")).unwrap_or(0.0))
        .collect();
    let bound = LOGS as u64 * 2 * WAL_COMPACT_BYTES + 2 * ckpt_bytes + (64 << 10);
    let peak = sizes.iter().flatten().copied().max().unwrap();
    eprintln!(
        "data directory bytes per node after each round: {sizes:?}; peak {peak}, bound {bound} \
         (checkpoint {ckpt_bytes} bytes); {executed} commands executed at replica 1; \
         logs' first indexes {firsts:?}, decided {decided:?}"
    );
    assert!(
        firsts.iter().all(|&f| f > 0.0),
        "every log was trimmed: first indexes {firsts:?}"
    );
    assert!(
        peak <= bound,
        "a data directory outgrew the bound: {sizes:?} > {bound}"
    );
    for n in 1..=3 {
        let files = checkpoint_files(&data, n);
        // Two at most, and a third for the moment between a save's rename and its pruning.
        assert!(
            !files.is_empty() && files.len() <= KEEP + 1,
            "node {n} keeps one or two checkpoint files: {files:?}"
        );
    }

    // SIGKILL replica 3 and restart it: it must start from its durable checkpoint.
    servers.0[2].kill().unwrap();
    let _ = servers.0[2].wait();
    let newest = checkpoint_files(&data, 3)[0].clone();
    let log = dir.join("replica-3.log");
    let started = Instant::now();
    servers.0[2] = start_replica_3(&config, &dir, &extra(3), &log);
    let (took, body) = wait_loaded(ports[2], started, &log);
    let round = sample(&body, "chorus_checkpoint_loaded_round").unwrap() as u64;
    eprintln!(
        "replica 3 restarted: checkpoint of round {round} loaded {:.0} ms after the process \
         started (install {:.1} ms)",
        took.as_secs_f64() * 1e3,
        sample(&body, "chorus_checkpoint_load_seconds").unwrap_or(0.0) * 1e3
    );
    assert_eq!(round, round_of(&newest), "the newest file was loaded");
    assert_eq!(
        sample(&body, "chorus_checkpoints_total{how=\"installed\"}"),
        Some(0.0),
        "no state transfer"
    );
    // The node's log positions are published at most every `SNAPSHOT_EVERY` (200 ms), so the
    // body that first shows the load may still carry the feeds' positions from before they
    // restarted at the checkpoint's: read again for a moment before judging.
    let positions_deadline = Instant::now() + Duration::from_secs(3);
    let mut body = body;
    loop {
        let behind: Vec<(u32, Option<f64>, Option<f64>)> = (0..LOGS)
            .map(|l| {
                let from = sample(
                    &body,
                    &format!("chorus_checkpoint_log_position{{log=\"{l}\"}}"),
                );
                let next = sample(&body, &format!("chorus_log_feed_next_index{{log=\"{l}\"}}"));
                (l, from, next)
            })
            .filter(|(_, from, next)| from.is_none() || next < from)
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < positions_deadline,
            "the feeds read on from the checkpoint's positions: (log, checkpoint position, \
             feed's next index) {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        body = metrics(ports[2]);
    }
    wait_agreement(&config, &ports);
    assert_eq!(
        sample(
            &metrics(ports[2]),
            "chorus_checkpoints_total{how=\"installed\"}"
        ),
        Some(0.0),
        "it caught up from its checkpoint and the log suffix alone"
    );

    // Kill it again and flip a byte of its newest checkpoint: the previous one loads.
    servers.0[2].kill().unwrap();
    let _ = servers.0[2].wait();
    // Two, or three where the kill fell between a save's rename and its pruning (the load
    // prunes the oldest then).
    let files = checkpoint_files(&data, 3);
    assert!((KEEP..=KEEP + 1).contains(&files.len()), "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&files[0], bytes).unwrap();
    let log = dir.join("replica-3-damaged.log");
    servers.0[2] = start_replica_3(&config, &dir, &extra(3), &log);
    let (_, body) = wait_loaded(ports[2], Instant::now(), &log);
    assert_eq!(
        sample(&body, "chorus_checkpoint_loaded_round").map(|r| r as u64),
        Some(round_of(&files[1])),
        "the previous checkpoint was loaded"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("checkpoint file damaged") && text.contains("checksum mismatch"),
        "the log says which file was set aside and why:\n{text}"
    );
    assert!(PathBuf::from(format!("{}.damaged", files[0].display())).exists());
    // The previous checkpoint may lie below what the logs still hold (then the replica
    // recovers by state transfer): either way it must converge.
    wait_agreement(&config, &ports);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}
