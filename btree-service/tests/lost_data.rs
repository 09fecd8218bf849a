//! Goal (issue 16.2, real processes): a durable node that lost its data directory does not
//! rejoin as a voting acceptor with no memory of its promises and accepts. Restarted on a
//! missing directory while its peers hold state, it refuses to start with an error that names
//! `--recover`, and touches nothing; restarted with `--recover`, it copies its acceptor state
//! from its peers before it votes, and what it then acknowledges survives the loss of another
//! node.
//!
//! Method: a 3-replica `btree-server` deployment with `durability = "disk"` (each replica an
//! acceptor of every log), loopback ports checked free. Put 10 keys; SIGKILL replica 3 and
//! delete its `data/node-3`; put 10 more (acknowledged by 1 and 2). Restart 3 without
//! `--recover`: it must exit with a failure within 30 s, saying it lost its data and naming
//! `--recover`, and leave no directory behind. Restart it with `--recover`: its directory
//! reappears (written once every log recovered), and its replica executes at least the 20
//! puts it lost or missed (its `/metrics`). Put 10 more; SIGKILL replica 1 and put 10 more,
//! which only {2, 3} can acknowledge, so 3 votes. Then restart 1 (from its own directory) and
//! SIGKILL 2: the quorum {1, 3} must still return every one of the 40 acknowledged values,
//! including the 10 that only 2 and 3 accepted. On code without recovery, 3 serves at once
//! on the empty directory and the refusal assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{free_port, free_ports_from, metric_sum, scrape, Processes};

const SERVER: &str = env!("CARGO_BIN_EXE_btree-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_btree-client");

fn client(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(CLIENT)
        .args(["--config", config.to_str().unwrap(), "--node", "1000"])
        .args(["--timeout-s", "20"])
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

/// `btree-server --config CONFIG --node N [extra...]` in `dir`, stderr to `dir/node-N.err`.
fn server(dir: &Path, config: &Path, n: u32, extra: &[String]) -> Child {
    let err = std::fs::File::create(dir.join(format!("node-{n}.err"))).unwrap();
    Command::new(SERVER)
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .args(["--node", &n.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start btree-server")
}

fn kill(c: &mut Child) {
    c.kill().unwrap(); // SIGKILL
    let _ = c.wait();
}

fn put_all(config: &Path, keys: std::ops::RangeInclusive<u32>) {
    for k in keys {
        assert_eq!(
            client(config, &["put", &(1000 + k).to_string(), &format!("v{k}")]),
            (true, "ok (new)".into()),
            "put of key {}",
            1000 + k
        );
    }
}

/// Polls until `ready` holds, for at most `patience`.
fn wait_for(what: &str, patience: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {patience:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the deployment's directory when dropped (after its servers are killed).
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_node_that_lost_its_data_directory_refuses_to_vote_until_it_recovers() {
    let dir = Dir(std::env::temp_dir().join(format!("chorus-btree-lost-{}", std::process::id())));
    let dir_path = dir.0.clone();
    let _ = std::fs::remove_dir_all(&dir_path);
    std::fs::create_dir_all(&dir_path).unwrap();
    let config = dir_path.join("deployment.toml");
    let base = free_ports_from(47000, 6);
    let status = Command::new(SERVER)
        .args(["--write-config", config.to_str().unwrap()])
        .args(["--replicas", "3", "--workers", "1", "--clients", "1"])
        .args([
            "--prefill",
            "10",
            "--durability",
            "disk",
            "--data-dir",
            "data",
        ])
        .args(["--base-port", &base.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let node3 = dir_path.join("data/node-3");

    // The cluster's first start creates every directory without any flag.
    let mut servers = Processes(
        (1..=3)
            .map(|n| server(&dir_path, &config, n, &[]))
            .collect(),
    );
    wait_for("the deployment answers", Duration::from_secs(30), || {
        client(&config, &["size"]) == (true, "10".into())
    });
    put_all(&config, 1..=10);
    assert!(node3.join("IDENTITY").is_file());

    // Replica 3 loses its data directory; the others go on.
    kill(&mut servers.0[2]);
    std::fs::remove_dir_all(&node3).unwrap();
    put_all(&config, 11..=20);

    // Without --recover it refuses, says why, and creates nothing.
    let started = Instant::now();
    servers.0[2] = server(&dir_path, &config, 3, &[]);
    let exit = loop {
        if let Some(s) = servers.0[2].try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 3, restarted without its data directory and without --recover, is still \
             running after 30 s (it should refuse to start)"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(dir_path.join("node-3.err")).unwrap();
    assert!(!exit.success(), "{err}");
    assert!(
        err.contains("lost its data") && err.contains("--recover"),
        "node 3's refusal does not say it lost its data and name --recover: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!node3.exists(), "the refused start created {node3:?}");
    eprintln!(
        "refused after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        err.lines().last().unwrap_or("")
    );

    // With --recover it copies its state from 1 and 2, writes its directory, and its replica
    // executes what it lost and missed.
    let metrics = free_port();
    let extra = [
        "--recover".to_string(),
        "--metrics-addr".to_string(),
        format!("127.0.0.1:{metrics}"),
    ];
    servers.0[2] = server(&dir_path, &config, 3, &extra);
    wait_for(
        "node 3 recovers and writes its data directory",
        Duration::from_secs(60),
        || node3.join("IDENTITY").is_file(),
    );
    wait_for(
        "node 3's replica executes the 20 puts",
        Duration::from_secs(30),
        || {
            let (_, body) = scrape(metrics);
            metric_sum(&body, "chorus_commands_executed_total{").unwrap_or(0.0) >= 20.0
        },
    );
    assert!(servers.0[2].try_wait().unwrap().is_none(), "node 3 exited");
    put_all(&config, 21..=30);

    // Without replica 1, only {2, 3} can acknowledge: 3 votes.
    kill(&mut servers.0[0]);
    put_all(&config, 31..=40);

    // Replica 1 back from its own directory, replica 2 gone: {1, 3} still has every
    // acknowledged write, those that only 2 and 3 accepted included.
    servers.0[0] = server(&dir_path, &config, 1, &[]);
    wait_for("replica 1 answers again", Duration::from_secs(30), || {
        client(&config, &["size"]) == (true, "50".into())
    });
    kill(&mut servers.0[1]);
    for k in 1..=40 {
        assert_eq!(
            client(&config, &["get", &(1000 + k).to_string()]),
            (true, format!("v{k}")),
            "acknowledged key {} after replica 2's loss",
            1000 + k
        );
    }
    assert_eq!(client(&config, &["size"]), (true, "50".into()));
    drop(servers);
}
