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
use std::time::Duration;
use testkit::{
    check_metrics_addr_flag, free_port, free_ports_from, fresh_dir, metric_sum, poll, run_client,
    scrape, start_nodes, wait_for, write_config,
};

const SERVER: &str = env!("CARGO_BIN_EXE_chirper-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_chirper-client");

fn client(config: &Path, args: &[&str]) -> (bool, String) {
    run_client(CLIENT, config, 1000, 20, args)
}

/// Creates users 7000 and 7001, has 7001 follow 7000 and 7000 post `words`.
fn first_post(config: &Path, words: &[&str]) {
    for user in ["7000", "7001"] {
        assert_eq!(client(config, &["create", user]), (true, "created".into()));
    }
    assert_eq!(
        client(config, &["follow", "7001", "7000"]),
        (true, "following".into())
    );
    assert_eq!(
        client(config, &[&["post", "7000"], words].concat()),
        (true, "posted to 1 followers".into())
    );
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
    let dir = fresh_dir("chirper");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(23000, 11).to_string();
    let mut args = vec!["--scheme", "ds-smr", "--partitions", "2", "--replicas", "3"];
    args.extend(["--clients", "2", "--users", "300", "--base-port", &base]);
    write_config(SERVER, &config, &args);
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
    let answered = || client(&config, &["timeline", "1"]).0.then_some(());
    let (secs_40, ms_300) = (Duration::from_secs(40), Duration::from_millis(300));
    wait_for(secs_40, ms_300, "the deployment never answered", answered);
    first_post(&config, &["first", "post"]);
    assert_eq!(
        client(&config, &["timeline", "7001"]),
        (true, "@7000: first post".into())
    );

    // SIGKILL one replica of the oracle and of each partition (every group keeps a majority).
    for i in [2, 4, 8] {
        servers.kill(i);
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
    poll(Duration::from_secs(5), Duration::from_millis(200), || {
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
        ok.then_some(())
            .ok_or_else(|| format!("metrics never showed the commands:\n{bodies:#?}"))
    })
}

#[test]
fn metrics_addr_needs_a_tcp_node_and_a_valid_address() {
    check_metrics_addr_flag(SERVER, "999.1.1.1:80");
}

/// Polls `timeline user` until the deployment answers, and returns its first answer.
fn first_timeline(config: &Path, user: &str) -> String {
    let answer = || Some(client(config, &["timeline", user])).filter(|(ok, _)| *ok);
    let (secs_40, ms_100) = (Duration::from_secs(40), Duration::from_millis(100));
    wait_for(secs_40, ms_100, "the deployment never answered", answer).1
}

#[test]
fn durable_deployment_keeps_users_follows_and_posts_across_a_whole_cluster_restart() {
    let dir = fresh_dir("chirper-disk");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(33000, 11).to_string();
    let mut args = vec!["--scheme", "ds-smr", "--partitions", "2", "--replicas", "3"];
    args.extend(["--clients", "1", "--users", "100"]);
    args.extend([
        "--durability",
        "disk",
        "--data-dir",
        "data",
        "--base-port",
        &base,
    ]);
    write_config(SERVER, &config, &args);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("durability = \"disk\""), "{text}");
    assert!(text.contains("trim = true"), "{text}");

    let mut servers = start_nodes(SERVER, &config, &dir, 1..=9, |_| vec![]);
    first_timeline(&config, "1");
    first_post(&config, &["before", "the", "crash"]);
    // SIGKILL all nine processes: every replica and acceptor of every group.
    servers.kill_all();
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
