//! Goal: a Chirper partition replica process that was SIGKILLed and whose logs were trimmed
//! while it was down comes back in memory, recovers by state transfer, and reaches its peers'
//! state.
//!
//! Method: a loopback DS-SMR deployment of two partitions and an oracle of four replicas
//! each (the first three of each group are the acceptors of its log, and the first of each
//! group the acceptors of the global log, so every group's fourth replica is no acceptor: the
//! logs can be trimmed while it is down), every replica with `--checkpoint-every 5`, the
//! deployment file's `trim_every_entries` lowered to 64 so trimming shows within seconds.
//! Replica 4 (partition 0) is SIGKILLed; `chirper-client` posts and follows go on until the
//! first index of logs 0 and 3 at replica 1 (from its `/metrics`) is past what replica 4 had
//! received. Replica 4 restarts with empty state: its metrics must show an installed
//! checkpoint; after more commands it must take checkpoints of its own, and every replica of
//! partition 0 must report the same latest checkpoint round with the same state hash
//! (`chorus_checkpoint_state_hash`). The users' timelines must still answer.

use std::path::Path;
use std::time::{Duration, Instant};
use testkit::{
    free_port, free_ports_from, fresh_dir, metrics, per_log, poll, run_client, sample, start_nodes,
    trimmed_past, wait_for, write_config, Agreement,
};

const SERVER: &str = env!("CARGO_BIN_EXE_chirper-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_chirper-client");

fn client(config: &Path, args: &[&str]) -> (bool, String) {
    run_client(CLIENT, config, 1000, 20, args)
}

/// Posts and follows for `seconds`, one `chirper-client` at a time; returns how many
/// succeeded.
fn load(config: &Path, seconds: f64, step: &mut u32) -> u32 {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut ok = 0;
    while Instant::now() < until {
        *step += 1;
        let s = *step;
        let (a, b) = ((s * 7) % 100, (s * 13 + 1) % 100);
        let text = format!("chirp-{s}");
        let args: Vec<String> = if s.is_multiple_of(3) {
            vec!["follow".into(), a.to_string(), b.to_string()]
        } else {
            vec!["post".into(), a.to_string(), text]
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if client(config, &args).0 {
            ok += 1;
        }
    }
    ok
}

#[test]
fn a_killed_partition_replica_recovers_by_state_transfer_past_the_trimmed_logs() {
    let dir = fresh_dir("chirper-recovery");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(24000, 14).to_string();
    let mut args = vec!["--scheme", "ds-smr", "--partitions", "2", "--replicas", "4"];
    args.extend(["--clients", "2", "--users", "100", "--base-port", &base]);
    write_config(SERVER, &config, &args);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("trim = true") && text.contains("trim_every_entries = 1024"));
    std::fs::write(
        &config,
        text.replace("trim_every_entries = 1024", "trim_every_entries = 64"),
    )
    .unwrap();
    // Nodes 1-4: partition 0 (log 0); 5-8: partition 1; 9-12: the oracle; log 3 covers all.
    let logs = [0u32, 3];
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let extra = |n: u32| {
        let mut v = vec!["--checkpoint-every".to_string(), "5".to_string()];
        if n <= 4 {
            v.push("--metrics-addr".into());
            v.push(format!("127.0.0.1:{}", ports[n as usize - 1]));
        }
        v
    };
    let mut servers = start_nodes(SERVER, &config, Path::new("."), 1..=12, extra);
    let (secs_40, ms_300) = (Duration::from_secs(40), Duration::from_millis(300));
    wait_for(secs_40, ms_300, "the deployment never answered", || {
        client(&config, &["timeline", "1"]).0.then_some(())
    });
    let mut step = 0;
    assert!(load(&config, 2.0, &mut step) > 0, "commands succeed");

    // SIGKILL replica 4, remembering how far it had received its logs.
    let body = metrics(ports[3]);
    let held: Vec<f64> = per_log(&body, "chorus_log_feed_next_index", logs)
        .into_iter()
        .map(|v| v.expect("replica 4 shows its feeds"))
        .collect();
    servers.kill(3);

    // Load until replica 1 (an acceptor of both logs) trimmed them past that.
    poll(Duration::from_secs(90), Duration::ZERO, || {
        load(&config, 1.0, &mut step);
        let body = metrics(ports[0]);
        let firsts = per_log(&body, "chorus_log_first_index", logs);
        if !trimmed_past(&firsts, &held) {
            return Err(format!("logs never trimmed past the killed replica: first {firsts:?}, it held {held:?}\n{body}"));
        }
        eprintln!("replica 4 held logs {logs:?} up to {held:?}; replica 1 trimmed them to {firsts:?} after {step} commands");
        Ok(())
    });

    // Restart replica 4 in memory: it must install a peer's checkpoint.
    let mut restarted = start_nodes(SERVER, &config, Path::new("."), 4..=4, extra);
    servers.0[3] = restarted.0.pop().unwrap();
    poll(Duration::from_secs(60), Duration::ZERO, || {
        // Scrape only once the restarted process listens (a refused scrape panics).
        let up = std::net::TcpStream::connect(("127.0.0.1", ports[3])).is_ok();
        let body = if up { metrics(ports[3]) } else { String::new() };
        if sample(&body, "chorus_checkpoints_total{how=\"installed\"}").unwrap_or(0.0) >= 1.0 {
            return Ok(());
        }
        load(&config, 0.3, &mut step);
        Err(format!("replica 4 never installed a checkpoint:\n{body}"))
    });

    // More commands: replica 4 takes checkpoints of its own; then every replica of partition
    // 0 must agree on the latest round's state hash.
    load(&config, 2.0, &mut step);
    poll(Duration::from_secs(60), Duration::from_millis(300), || {
        let a = Agreement::scrape(&ports, 3);
        if a.reached() {
            eprintln!("partition 0's replicas agree on (round, state hash) {:?}; replica 4 took {} checkpoints of its own", a.hashes[0], a.taken_by_newcomer);
            return Ok(());
        }
        if a.taken_by_newcomer < 1.0 {
            load(&config, 0.3, &mut step);
        }
        Err(format!(
            "replicas never agreed on a checkpoint's state hash: {a:?}"
        ))
    });
    let refused: f64 = ports
        .iter()
        .map(|&p| sample(&metrics(p), "chorus_checkpoints_refused_total").unwrap_or(0.0))
        .sum();
    assert_eq!(refused, 0.0, "no checkpoint was refused");
    let (ok, timeline) = client(&config, &["timeline", "7"]);
    assert!(ok, "a timeline answers after the recovery: {timeline}");
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoint_every_needs_a_tcp_node() {
    let (code, stderr) = testkit::exit_code_and_stderr(SERVER, &["--checkpoint-every", "5"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--checkpoint-every needs --config"),
        "{stderr}"
    );
}
