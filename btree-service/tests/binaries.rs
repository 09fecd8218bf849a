//! Goal: the service's binaries work end to end.
//!
//! Method: (1) pipe a session into `btree-server`'s in-process REPL; (2) write a loopback
//! deployment with `btree-server --write-config`, start its three replica processes, run
//! `btree-client` commands (put, get, update, scan, size, delete), kill one replica with
//! SIGKILL and check the survivors still answer; (3) bad input gets a clear error.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_btree-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_btree-client");

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
        .expect("run btree-client");
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    });
    (out.status.success(), text.trim().to_string())
}

/// A base port with `n` free consecutive ports after it.
fn free_ports(n: u16) -> u16 {
    for base in (21000..60000).step_by(97) {
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free ports");
}

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
    let dir = std::env::temp_dir().join(format!("chorus-btree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("deployment.toml");
    let base = free_ports(6);
    let status = Command::new(SERVER)
        .args(["--write-config", config.to_str().unwrap()])
        .args([
            "--replicas",
            "3",
            "--workers",
            "2",
            "--clients",
            "2",
            "--prefill",
            "1000",
        ])
        .args(["--base-port", &base.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut servers = Servers(
        (1..=3)
            .map(|n| {
                Command::new(SERVER)
                    .args([
                        "--config",
                        config.to_str().unwrap(),
                        "--node",
                        &n.to_string(),
                    ])
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    // Wait until the deployment answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client(&config, &["size"]) == (true, "1000".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "the deployment never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        client(&config, &["put", "5", "five"]),
        (true, "ok (new)".into())
    );
    assert_eq!(client(&config, &["get", "5"]), (true, "five".into()));
    assert_eq!(
        client(&config, &["update", "5", "FIVE"]),
        (true, "ok".into())
    );
    assert_eq!(
        client(&config, &["scan", "5", "6"]),
        (true, "5 FIVE".into())
    );
    assert_eq!(client(&config, &["size"]), (true, "1001".into()));

    servers.0[2].kill().unwrap(); // SIGKILL replica 3 (an acceptor too)
    let _ = servers.0[2].wait();
    assert_eq!(
        client(&config, &["del", "5"]),
        (true, "deleted FIVE".into())
    );
    assert_eq!(client(&config, &["get", "5"]), (true, "(absent)".into()));
    assert_eq!(client(&config, &["size"]), (true, "1000".into()));

    let (ok, err) = client(&config, &["get", "x"]);
    assert!(!ok && err.contains("not a key"), "{err}");
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}
