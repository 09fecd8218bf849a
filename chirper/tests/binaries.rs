//! Goal: Chirper's binaries work end to end.
//!
//! Method: (1) pipe a session into `chirper-server`'s in-process REPL (DS-SMR and S-SMR);
//! (2) write a loopback DS-SMR deployment with `chirper-server --write-config` (an oracle and
//! two partitions of three replicas), start its nine processes, run `chirper-client` commands
//! (create, follow, post, timeline, unfollow), kill one replica of each partition and one of the
//! oracle with SIGKILL and check the survivors still answer; (3) bad input gets a clear error.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{exit_code_and_stderr, free_port, free_ports_from, metric_sum, scrape, start_nodes};

const SERVER: &str = env!("CARGO_BIN_EXE_chirper-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_chirper-client");

fn client(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(CLIENT)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--node",
            "1000",
            "--timeout-s",
            "20",
        ])
        .args(args)
        .output()
        .expect("run chirper-client");
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    });
    (out.status.success(), text.trim().to_string())
}

fn repl(scheme: &str) -> Vec<String> {
    let mut child = Command::new(SERVER)
        .args(["--scheme", scheme, "--partitions", "2", "--users", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(
            b"create 5000\ncreate 5001\ncreate 5000\nfollow 5001 5000\npost 5000 hello world\n\
              timeline 5001\ntimeline 9999\nunfollow 5001 5000\nunfollow 5001 5000\nbogus\n\
              post 5000\nfollow 5001\nquit\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn in_process_repl_answers_commands_on_both_schemes() {
    for scheme in ["ds-smr", "s-smr"] {
        let lines = repl(scheme);
        let expect = [
            "created",
            "created",
            "(already exists)",
            "following",
            "posted to 1 followers",
            "@5000: hello world",
            "(no such user)",
            "unfollowed",
            "(was not following)",
        ];
        assert_eq!(&lines[..expect.len()], &expect, "{scheme}: {lines:?}");
        assert!(
            lines[9].starts_with("error: unknown command"),
            "{scheme}: {lines:?}"
        );
        assert!(lines[10].contains("needs a text"), "{scheme}: {lines:?}");
        assert!(lines[11].contains("needs a user id"), "{scheme}: {lines:?}");
    }
}

#[test]
fn tcp_deployment_serves_clients_and_survives_killed_replicas() {
    let dir = std::env::temp_dir().join(format!("chorus-chirper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("deployment.toml");
    let base = free_ports_from(23000, 11);
    let status = Command::new(SERVER)
        .args(["--write-config", config.to_str().unwrap()])
        .args(["--scheme", "ds-smr", "--partitions", "2", "--replicas", "3"])
        .args(["--clients", "2", "--users", "300"])
        .args(["--base-port", &base.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Nodes 1-3: partition 0; 4-6: partition 1; 7-9: the oracle (the last group); 1000, 1001:
    // clients. Nodes 1, 4 and 7 (not killed below) serve their metrics, checked at the end.
    let metrics: Vec<(u32, u16)> = [1, 4, 7].map(|n| (n, free_port())).to_vec();
    let mut servers = start_nodes(SERVER, &config, Path::new("."), 1..=9, |n| {
        metrics
            .iter()
            .filter(|(m, _)| *m == n)
            .flat_map(|(_, port)| ["--metrics-addr".to_string(), format!("127.0.0.1:{port}")])
            .collect()
    });
    // Wait until the deployment answers: a user of the generated graph has a timeline.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (ok, _) = client(&config, &["timeline", "1"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the deployment never answered");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        client(&config, &["create", "7000"]),
        (true, "created".into())
    );
    assert_eq!(
        client(&config, &["create", "7001"]),
        (true, "created".into())
    );
    assert_eq!(
        client(&config, &["follow", "7001", "7000"]),
        (true, "following".into())
    );
    assert_eq!(
        client(&config, &["post", "7000", "first", "post"]),
        (true, "posted to 1 followers".into())
    );
    assert_eq!(
        client(&config, &["timeline", "7001"]),
        (true, "@7000: first post".into())
    );

    // SIGKILL one replica of the oracle and of each partition (every group keeps a majority).
    for i in [2, 4, 8] {
        servers.0[i].kill().unwrap();
        let _ = servers.0[i].wait();
    }
    assert_eq!(
        client(&config, &["post", "7000", "second"]),
        (true, "posted to 1 followers".into())
    );
    assert_eq!(
        client(&config, &["timeline", "7001"]),
        (true, "@7000: second\n@7000: first post".into())
    );
    assert_eq!(
        client(&config, &["unfollow", "7001", "7000"]),
        (true, "unfollowed".into())
    );
    assert_eq!(
        client(&config, &["timeline", "424242"]),
        (true, "(no such user)".into())
    );

    let (ok, err) = client(&config, &["follow", "x", "1"]);
    assert!(!ok && err.contains("not a user id"), "{err}");
    let (ok, err) = client(&config, &["shout", "1"]);
    assert!(!ok && err.contains("unknown command"), "{err}");
    check_metrics(&metrics);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One replica of each partition (nodes 1, 4) and an oracle replica (node 7) show their
/// counters and log positions on `/metrics` (published once per tick: retried briefly).
fn check_metrics(nodes: &[(u32, u16)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bodies: Vec<(u32, String)> = nodes
            .iter()
            .map(|&(n, port)| {
                let (status, body) = scrape(port);
                assert_eq!(status, "HTTP/1.1 200 OK", "node {n}: {body}");
                (n, body)
            })
            .collect();
        let sum = |prefix: &str| -> f64 {
            bodies
                .iter()
                .filter_map(|(_, b)| metric_sum(b, prefix))
                .sum()
        };
        let each_has_logs = bodies
            .iter()
            .all(|(_, b)| metric_sum(b, "chorus_log_decided_index{").is_some_and(|v| v > 0.0));
        let (partitions, oracle) = (&bodies[..2], &bodies[2].1);
        let ok = each_has_logs
            && partitions
                .iter()
                .all(|(_, b)| metric_sum(b, "chorus_partition_handled_total").is_some())
            && sum("chorus_partition_handled_total") > 0.0
            && sum("chorus_partition_single_total") > 0.0
            && sum("chorus_partition_created_total") >= 2.0
            && metric_sum(oracle, "chorus_oracle_handled_total").is_some_and(|v| v > 0.0)
            && metric_sum(oracle, "chorus_oracle_consults_total").is_some_and(|v| v > 0.0)
            && metric_sum(oracle, "chorus_partition_handled_total").is_none()
            // Every replica publishes its state hash (two halves) and the handled count it
            // was taken at (the fault campaign compares them across a group's replicas).
            && bodies.iter().all(|(_, b)| {
                metric_sum(b, "chorus_replica_state_hash{half=\"high\"}").is_some()
                    && metric_sum(b, "chorus_replica_state_hash{half=\"low\"}").is_some()
                    && metric_sum(b, "chorus_replica_state_handled").is_some_and(|v| v > 0.0)
            });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the commands:\n{bodies:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_addr_needs_a_tcp_node_and_a_valid_address() {
    let run = |args: &[&str]| exit_code_and_stderr(SERVER, args);
    let (code, err) = run(&["--metrics-addr", "127.0.0.1:9100"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--metrics-addr needs --config"), "{err}");
    let (code, err) = run(&[
        "--config",
        "/nonexistent/deployment.toml",
        "--node",
        "1",
        "--metrics-addr",
        "999.1.1.1:80",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--metrics-addr \"999.1.1.1:80\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Polls `timeline user` until the deployment answers, and returns its first answer.
fn first_timeline(config: &Path, user: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (ok, out) = client(config, &["timeline", user]);
        if ok {
            return out;
        }
        assert!(Instant::now() < deadline, "the deployment never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn durable_deployment_keeps_users_follows_and_posts_across_a_whole_cluster_restart() {
    let dir = std::env::temp_dir().join(format!("chorus-chirper-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("deployment.toml");
    let base = free_ports_from(33000, 11);
    let status = Command::new(SERVER)
        .args(["--write-config", config.to_str().unwrap()])
        .args(["--scheme", "ds-smr", "--partitions", "2", "--replicas", "3"])
        .args(["--clients", "1", "--users", "100"])
        .args(["--durability", "disk", "--data-dir", "data"])
        .args(["--base-port", &base.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("durability = \"disk\""), "{text}");
    assert!(text.contains("trim = true"), "{text}");

    let mut servers = start_nodes(SERVER, &config, &dir, 1..=9, |_| vec![]);
    first_timeline(&config, "1");
    assert_eq!(
        client(&config, &["create", "7000"]),
        (true, "created".into())
    );
    assert_eq!(
        client(&config, &["create", "7001"]),
        (true, "created".into())
    );
    assert_eq!(
        client(&config, &["follow", "7001", "7000"]),
        (true, "following".into())
    );
    assert_eq!(
        client(&config, &["post", "7000", "before", "the", "crash"]),
        (true, "posted to 1 followers".into())
    );
    // SIGKILL all nine processes: every replica and acceptor of every group.
    for c in &mut servers.0 {
        c.kill().unwrap();
        let _ = c.wait();
    }
    drop(servers);
    assert!(dir.join("data/node-7/log-2.wal").is_file());

    let servers = start_nodes(SERVER, &config, &dir, 1..=9, |_| vec![]);
    assert_eq!(first_timeline(&config, "7001"), "@7000: before the crash");
    assert_eq!(
        client(&config, &["post", "7000", "after"]),
        (true, "posted to 1 followers".into())
    );
    assert_eq!(
        client(&config, &["timeline", "7001"]),
        (true, "@7000: after\n@7000: before the crash".into())
    );
    assert_eq!(
        client(&config, &["create", "7000"]),
        (true, "(already exists)".into())
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}
