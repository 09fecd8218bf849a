//! Goal: the service's binaries work end to end.
//!
//! Method: (1) pipe a session into `btree-server`'s in-process REPL; (2) write a loopback
//! deployment with `btree-server --write-config`, start its three replica processes, run
//! `btree-client` commands (put, get, update, scan, size, delete, and `--fast-reads get`: a read
//! off the log), kill one replica with SIGKILL and check the survivors still answer; (3) bad
//! input gets a clear error.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::{
    check_metrics_addr_flag, free_port, free_ports_from, fresh_dir, metric_sum, poll, run_client,
    scrape, start_nodes, wait_for, write_config, Processes,
};

const SERVER: &str = env!("CARGO_BIN_EXE_btree-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_btree-client");

fn client(config: &Path, args: &[&str]) -> (bool, String) {
    run_client(CLIENT, config, 1000, 20, args)
}

const SECS_30: Duration = Duration::from_secs(30);
const MS_200: Duration = Duration::from_millis(200);
const MS_100: Duration = Duration::from_millis(100);

/// A deployment of 3 replicas of 1 worker, 1 client node, 10 keys, ports from `base`.
fn small_deployment(base: &str) -> [&str; 10] {
    [
        "--replicas",
        "3",
        "--workers",
        "1",
        "--clients",
        "1",
        "--prefill",
        "10",
        "--base-port",
        base,
    ]
}

#[test]
fn in_process_repl_answers_commands() {
    let mut child = Command::new(SERVER)
        .args(["--prefill", "100", "--workers", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"put 7 seven\nget 7\nget 8\nsize\nbogus\nquit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok (new)", "{text}");
    assert_eq!(lines[1], "seven");
    assert_eq!(lines[2], "(absent)");
    assert_eq!(lines[3], "101");
    assert!(lines[4].starts_with("error: unknown command"), "{text}");
}

#[test]
fn tcp_deployment_serves_clients_and_survives_a_killed_replica() {
    let dir = fresh_dir("btree");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(21000, 6).to_string();
    let deployment = ["--replicas", "3", "--workers", "2", "--clients", "2"];
    let size = ["--prefill", "1000", "--base-port", &base];
    write_config(SERVER, &config, &[&deployment[..], &size].concat());
    // Replica 1 serves its metrics (checked after the commands).
    let metrics_port = free_port();
    let mut servers = start_nodes(SERVER, &config, Path::new("."), 1..=3, |n| {
        if n == 1 {
            vec!["--metrics-addr".into(), format!("127.0.0.1:{metrics_port}")]
        } else {
            vec![]
        }
    });
    // Wait until the deployment answers.
    wait_for(SECS_30, MS_200, "the deployment never answered", || {
        (client(&config, &["size"]) == (true, "1000".to_string())).then_some(())
    });
    assert_eq!(
        client(&config, &["put", "5", "five"]),
        (true, "ok (new)".into())
    );
    assert_eq!(client(&config, &["get", "5"]), (true, "five".into()));
    assert_eq!(
        client(&config, &["update", "5", "FIVE"]),
        (true, "ok".into())
    );
    // A read off the log (one replica, after a read index) sees the acknowledged update.
    assert_eq!(
        client(&config, &["--fast-reads", "get", "5"]),
        (true, "FIVE".into())
    );
    assert_eq!(
        client(&config, &["scan", "5", "6"]),
        (true, "5 FIVE".into())
    );
    assert_eq!(client(&config, &["size"]), (true, "1001".into()));

    servers.kill(2); // SIGKILL replica 3 (an acceptor too)
    assert_eq!(
        client(&config, &["del", "5"]),
        (true, "deleted FIVE".into())
    );
    assert_eq!(client(&config, &["get", "5"]), (true, "(absent)".into()));
    assert_eq!(client(&config, &["size"]), (true, "1000".into()));
    // With a replica down, a read off the log that went to it moves on to another.
    assert_eq!(
        client(&config, &["--fast-reads", "get", "5"]),
        (true, "(absent)".into())
    );

    let (ok, err) = client(&config, &["get", "x"]);
    assert!(!ok && err.contains("not a key"), "{err}");
    check_replica_metrics(metrics_port);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replica 1's `/metrics` shows the commands it executed and its logs' positions (the
/// workers publish after each batch: retried briefly).
fn check_replica_metrics(port: u16) {
    poll(Duration::from_secs(5), MS_200, || {
        let (status, body) = scrape(port);
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let executed = metric_sum(&body, "chorus_commands_executed_total{").unwrap_or(0.0);
        let decided = metric_sum(&body, "chorus_log_decided_index{").unwrap_or(0.0);
        let ok = executed >= 8.0
            && decided > 0.0
            && metric_sum(&body, "chorus_node_became_leader_total").is_some()
            && body.contains("chorus_commands_executed_total{worker=\"1\",kind=\"single\"}")
            && body.contains("# TYPE chorus_request_service_seconds histogram")
            && metric_sum(&body, "chorus_request_service_seconds_count").unwrap_or(0.0) > 0.0
            && metric_sum(&body, "chorus_optpsmr_aborts_total{").is_some();
        ok.then_some(())
            .ok_or_else(|| format!("metrics never showed the commands:\n{body}"))
    })
}

#[test]
fn metrics_addr_needs_a_tcp_node_and_a_valid_address() {
    check_metrics_addr_flag(SERVER, "localhost:nope");
}

/// Polls `size` until the deployment answers, and returns its first answer.
fn first_size(config: &Path) -> String {
    let answer = || Some(client(config, &["size"])).filter(|(ok, _)| *ok);
    wait_for(SECS_30, MS_100, "the deployment never answered", answer).1
}

/// Writes a 3-replica deployment with `durability` (and a relative `data_dir` for "disk"),
/// puts keys 1-4, SIGKILLs all three replicas, restarts them from the same files and
/// returns the deployment's first answer to `size`, the values of keys 1-4 and the
/// configuration, with the restarted replicas.
fn whole_cluster_restart(durability: &str, ports_from: u16) -> (String, Vec<String>, Scenario) {
    let dir = fresh_dir(&format!("btree-{durability}"));
    let config = dir.join("deployment.toml");
    let base = free_ports_from(ports_from, 5).to_string();
    let mut args = vec!["--replicas", "3", "--workers", "2", "--clients", "1"];
    args.extend(["--prefill", "10", "--durability", durability]);
    args.extend(["--base-port", &base]);
    if durability == "disk" {
        args.extend(["--data-dir", "data"]);
    }
    write_config(SERVER, &config, &args);
    let text = std::fs::read_to_string(&config).unwrap();
    if durability == "disk" {
        assert!(text.contains("durability = \"disk\""), "{text}");
        assert!(text.contains("data_dir = \"data\""), "{text}");
    } else {
        assert!(!text.contains("durability"), "{text}");
    }
    // Trimmed either way (with "disk", below the replicas' durable checkpoints).
    assert!(text.contains("trim = true"), "{text}");

    let mut servers = start_nodes(SERVER, &config, &dir, 1..=3, |_| vec![]);
    assert_eq!(first_size(&config), "10");
    for k in 1..=4 {
        assert_eq!(
            client(&config, &["put", &k.to_string(), &format!("v{k}")]),
            (true, "ok (new)".into())
        );
    }
    assert_eq!(client(&config, &["update", "4", "V4"]), (true, "ok".into()));
    // SIGKILL every replica (each is also an acceptor of every log).
    servers.kill_all();
    drop(servers);
    let servers = start_nodes(SERVER, &config, &dir, 1..=3, |_| vec![]);
    let size = first_size(&config);
    let values = (1..=4)
        .map(|k| client(&config, &["get", &k.to_string()]).1)
        .collect();
    (
        size,
        values,
        Scenario {
            config,
            dir,
            servers,
        },
    )
}

/// A running deployment of [`whole_cluster_restart`]; removes its directory when dropped.
struct Scenario {
    config: std::path::PathBuf,
    dir: std::path::PathBuf,
    servers: Processes,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for c in &mut self.servers.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn durable_deployment_keeps_every_acknowledged_put_across_a_whole_cluster_restart() {
    let (size, values, s) = whole_cluster_restart("disk", 31000);
    assert!(s.dir.join("data/node-1/log-0.wal").is_file());
    assert!(s.dir.join("data/node-3/log-2.wal").is_file());
    assert_eq!(size, "14");
    assert_eq!(values, ["v1", "v2", "v3", "V4"]);
    // The restarted deployment takes new commands.
    assert_eq!(
        client(&s.config, &["put", "5", "v5"]),
        (true, "ok (new)".into())
    );
    assert_eq!(
        client(&s.config, &["del", "1"]),
        (true, "deleted v1".into())
    );
    assert_eq!(client(&s.config, &["get", "5"]), (true, "v5".into()));
    assert_eq!(client(&s.config, &["size"]), (true, "14".into()));
}

/// The control: the same scenario with the logs in memory loses every put, so the durable
/// test above can tell the difference.
#[test]
fn in_memory_deployment_loses_its_puts_in_a_whole_cluster_restart() {
    let (size, values, s) = whole_cluster_restart("memory", 41000);
    assert!(!s.dir.join("data").exists());
    assert_eq!(size, "10");
    assert_eq!(values, ["(absent)"; 4]);
}

#[test]
fn write_config_refuses_bad_durability_flags() {
    let dir = fresh_dir("btree-flags");
    let config = dir.join("deployment.toml");
    let run = |args: &[&str]| {
        let out = Command::new(SERVER)
            .args(["--write-config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--durability", "disk"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs data_dir"), "{err}");
    let (code, err) = run(&["--durability", "tape", "--data-dir", "d"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a durability mode"), "{err}");
    let (code, err) = run(&["--data-dir", "d"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("durability is \"memory\""), "{err}");
    assert!(!config.exists());
    let out = Command::new(SERVER)
        .args(["--config", config.to_str().unwrap(), "--node", "1"])
        .args(["--durability", "disk"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("go with --write-config"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secure by default (issue 16, part 3): `--write-config` writes a fresh random secret beside
/// the deployment file (mode 0600) and names it; a server whose deployment names no secret
/// refuses to start with a clear error unless given `--insecure`, and so does a client.
#[test]
fn write_config_writes_a_secret_and_nodes_refuse_to_run_without_one() {
    let dir = fresh_dir("btree-secure");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(43000, 6).to_string();
    let write = |path: &Path| write_config(SERVER, path, &small_deployment(&base));
    let said = write(&config);
    let secret = dir.join("deployment.secret");
    assert!(said.contains("deployment.secret"), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("secret_file = \"{}\"", secret.display())),
        "{text}"
    );
    let first = std::fs::read_to_string(&secret).unwrap();
    assert!(first.trim().len() >= 32, "{first:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "secret file mode {mode:o}");
    }
    write(&config);
    assert_ne!(
        std::fs::read_to_string(&secret).unwrap(),
        first,
        "a second deployment got the same secret"
    );

    // The same deployment without its secret_file line.
    let bare = dir.join("bare.toml");
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("secret_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&bare, without).unwrap();
    let out = Command::new(SERVER)
        .args(["--config", bare.to_str().unwrap(), "--node", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no secret_file") && err.contains("--insecure"),
        "{err}"
    );
    let (ok, err) = client(&bare, &["get", "1"]);
    assert!(!ok && err.contains("no secret_file"), "{err}");

    // With --insecure the servers run and a client (also --insecure) gets its answer.
    let insecure = |_| vec!["--insecure".to_string()];
    let servers = start_nodes(SERVER, &bare, Path::new("."), 1..=3, insecure);
    let (ok, answer) = client(&bare, &["--insecure", "size"]);
    drop(servers);
    assert!(ok, "{answer}");
    assert_eq!(answer, "10");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--write-config --tls`: a cluster CA and a certificate per node (clients included) are
/// written beside the deployment, the servers run mutual TLS between each other and with the
/// client, and the client's commands are answered.
#[test]
fn write_config_tls_deployment_serves_clients() {
    let dir = fresh_dir("btree-tls");
    let config = dir.join("deployment.toml");
    let base = free_ports_from(44000, 6).to_string();
    write_config(
        SERVER,
        &config,
        &[&["--tls"], &small_deployment(&base)[..]].concat(),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[tls]"), "{text}");
    for f in [
        "ca.crt",
        "node-1.crt",
        "node-3.key",
        "node-1000.crt",
        "node-1000.key",
    ] {
        assert!(dir.join("deployment.tls").join(f).exists(), "{f} missing");
    }
    let servers = start_nodes(SERVER, &config, Path::new("."), 1..=3, |_| vec![]);
    let (ok, put) = client(&config, &["put", "42", "over-tls"]);
    assert!(ok, "{put}");
    let (ok, got) = client(&config, &["get", "42"]);
    drop(servers);
    assert!(ok, "{got}");
    assert_eq!(got, "over-tls");
    let _ = std::fs::remove_dir_all(&dir);
}
