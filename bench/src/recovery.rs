//! Recovery time of a replica as a function of its state size.
//!
//! For each size (keys pre-filled into the B+-tree), a loopback deployment of four
//! `btree-server` processes (replicas 1-3 also the acceptors, replica 4 only a replica)
//! taking checkpoints every `checkpoint_every` commands, loaded by `btree-load`. Replica 4 is
//! SIGKILLed, the load goes on until every log's first index at replica 1 is past what
//! replica 4 had received, and replica 4 is restarted with empty state. Measured (from the
//! replicas' `/metrics`):
//! - the checkpoint's encoded size, the longest worker pause to record its part, and the
//!   time to encode it (replica 1, latest checkpoint);
//! - at replica 4: the time to fetch the checkpoint from a peer and to install it, the time
//!   from its process start to the checkpoint installed (includes building the initial
//!   tree, which a restarted process does before anything), and the time from installed to
//!   caught up (its feeds at replica 1's decided indexes of the install moment).
//!
//! Needs the service binaries next to the bench binary (`cargo build --release -p
//! btree-service`).

use crate::report::{self, Table};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
pub struct Plan {
    pub sizes: Vec<u64>,
    pub workers: usize,
    pub checkpoint_every: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct Row {
    pub keys: u64,
    pub checkpoint_bytes: u64,
    pub take_ms: f64,
    pub encode_ms: f64,
    pub transfer_ms: f64,
    pub install_ms: f64,
    /// Process start to checkpoint installed.
    pub start_to_installed_ms: f64,
    /// Checkpoint installed to caught up.
    pub catch_up_ms: f64,
    /// Whether replica 4's state hash matched the others' at a common checkpoint round.
    pub hashes_agree: bool,
}

pub(crate) struct Procs(pub(crate) Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn binary(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no directory of the bench binary")?;
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build the service binaries first (cargo build --release -p btree-service)",
            p.display()
        ))
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) fn free_ports(n: u16) -> u16 {
    for base in (24000..60000).step_by(97) {
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} free consecutive ports");
}

pub(crate) fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

pub(crate) fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn per_log(body: &str, metric: &str, logs: u32) -> Vec<Option<f64>> {
    (0..logs)
        .map(|l| sample(body, &format!("{metric}{{log=\"{l}\"}}")))
        .collect()
}

fn checkpoint_hash(body: &str) -> Option<(u64, u64)> {
    let round = sample(body, "chorus_checkpoint_round")? as u64;
    let half = |h: &str| {
        sample(
            body,
            &format!("chorus_checkpoint_state_hash{{round=\"{round}\",half=\"{h}\"}}"),
        )
    };
    Some((round, ((half("high")? as u64) << 32) | half("low")? as u64))
}

/// Starts node `n` of the deployment `config` (`btree-server` at `server`), its metrics at
/// `metrics_port`, with the flags `extra`.
pub(crate) fn start_server(
    server: &Path,
    config: &Path,
    n: u32,
    metrics_port: u16,
    extra: &[&str],
) -> Result<Child, String> {
    Command::new(server)
        .args(["--config", config.to_str().unwrap_or_default()])
        .args(["--node", &n.to_string()])
        .args(extra)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())
}

/// Waits (up to 2 minutes) until the deployment `config` answers `btree-client size` with
/// `keys`.
pub(crate) fn wait_size(client: &Path, config: &Path, keys: u64) -> Result<(), String> {
    wait_for("the deployment to answer", Duration::from_secs(120), || {
        let out = Command::new(client)
            .args(["--config", config.to_str().unwrap_or_default()])
            .args(["--node", "1001", "--timeout-s", "10", "size"])
            .output()
            .ok()?;
        (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == keys.to_string())
            .then_some(())
    })
}

pub(crate) fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return Ok(t);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one(plan: &Plan, keys: u64, dir: &Path) -> Result<Row, String> {
    let server = binary("btree-server")?;
    let load = binary("btree-load")?;
    let client = binary("btree-client")?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let config = dir.join("deployment.toml");
    let base = free_ports(7);
    let ok = Command::new(&server)
        .args(["--write-config", config.to_str().unwrap_or_default()])
        .args(["--replicas", "4", "--clients", "2"])
        .args(["--workers", &plan.workers.to_string()])
        .args(["--prefill", &keys.to_string()])
        .args(["--base-port", &base.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok {
        return Err("btree-server --write-config failed".into());
    }
    let logs = plan.workers as u32 + 1;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let every = plan.checkpoint_every.to_string();
    let start = |n: u32| {
        start_server(
            &server,
            &config,
            n,
            ports[n as usize - 1],
            &["--checkpoint-every", &every],
        )
    };
    let mut procs = Procs(Vec::new());
    for n in 1..=4 {
        procs.0.push(start(n)?);
    }
    wait_size(&client, &config, keys)?;
    let run_load = |seconds: f64| -> Result<(), String> {
        let ok = Command::new(&load)
            .args(["--config", config.to_str().unwrap_or_default()])
            .args(["--node", "1000", "--seconds", &seconds.to_string()])
            .args([
                "--warmup-s",
                "0",
                "--clients",
                "8",
                "--workload",
                "read-update",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?
            .success();
        ok.then_some(()).ok_or("btree-load failed".into())
    };
    run_load(2.0)?;
    let body = scrape(ports[3]).ok_or("replica 4 has no metrics")?;
    let held: Vec<f64> = per_log(&body, "chorus_log_feed_next_index", logs)
        .into_iter()
        .collect::<Option<_>>()
        .ok_or("replica 4 shows no feeds")?;
    let _ = procs.0[3].kill();
    let _ = procs.0[3].wait();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        run_load(1.0)?;
        let body = scrape(ports[0]).ok_or("replica 1 has no metrics")?;
        let firsts = per_log(&body, "chorus_log_first_index", logs);
        if firsts
            .iter()
            .zip(&held)
            .all(|(f, h)| f.is_some_and(|f| f > *h))
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "logs never trimmed past replica 4: {firsts:?} vs {held:?}"
            ));
        }
    }
    let r1 = scrape(ports[0]).ok_or("replica 1 has no metrics")?;
    let started = Instant::now();
    procs.0[3] = start(4)?;
    let body = wait_for("replica 4 to install", Duration::from_secs(600), || {
        let b = scrape(ports[3])?;
        (sample(&b, "chorus_checkpoints_total{how=\"installed\"}")? >= 1.0).then_some(b)
    })?;
    let installed_at = Instant::now();
    let start_to_installed = started.elapsed();
    let decided: Vec<f64> = per_log(
        &scrape(ports[0]).ok_or("replica 1 has no metrics")?,
        "chorus_log_decided_index",
        logs,
    )
    .into_iter()
    .collect::<Option<_>>()
    .ok_or("replica 1 shows no decided indexes")?;
    wait_for("replica 4 to catch up", Duration::from_secs(600), || {
        let b = scrape(ports[3])?;
        per_log(&b, "chorus_log_feed_next_index", logs)
            .iter()
            .zip(&decided)
            .all(|(n, d)| n.is_some_and(|n| n >= *d))
            .then_some(())
    })?;
    let catch_up = installed_at.elapsed();
    // A little more load, then every replica's latest checkpoint must carry one hash.
    run_load(1.0)?;
    let hashes_agree = wait_for("a common checkpoint hash", Duration::from_secs(60), || {
        let hs: Vec<Option<(u64, u64)>> = ports
            .iter()
            .map(|&p| scrape(p).and_then(|b| checkpoint_hash(&b)))
            .collect();
        (hs.iter().all(|h| h.is_some() && *h == hs[0])).then_some(true)
    })
    .unwrap_or(false);
    let secs = |b: &str, m: &str| sample(b, m).unwrap_or(0.0) * 1e3;
    drop(procs);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Row {
        keys,
        checkpoint_bytes: sample(&r1, "chorus_checkpoint_bytes").unwrap_or(0.0) as u64,
        take_ms: secs(&r1, "chorus_checkpoint_take_seconds"),
        encode_ms: secs(&r1, "chorus_checkpoint_encode_seconds"),
        transfer_ms: secs(&body, "chorus_checkpoint_transfer_seconds"),
        install_ms: secs(&body, "chorus_checkpoint_install_seconds"),
        start_to_installed_ms: start_to_installed.as_secs_f64() * 1e3,
        catch_up_ms: catch_up.as_secs_f64() * 1e3,
        hashes_agree,
    })
}

/// Runs the plan, prints the table, writes `recovery.json`.
pub fn run(plan: &Plan, out: &Path, machine: &crate::machine::Machine) {
    let mut rows = Vec::new();
    for &keys in &plan.sizes {
        let dir = std::env::temp_dir().join(format!("chorus-bench-recovery-{keys}"));
        match one(plan, keys, &dir) {
            Ok(r) => {
                println!("{keys} keys: {r:?}");
                rows.push(r);
            }
            Err(e) => eprintln!("recovery: {keys} keys: {e}"),
        }
    }
    let mut t = Table::new(&[
        "keys",
        "checkpoint",
        "take (worker pause)",
        "encode",
        "transfer",
        "install",
        "start to installed",
        "catch up",
        "hashes agree",
    ]);
    for r in &rows {
        t.row(vec![
            r.keys.to_string(),
            format!("{} B", report::human(r.checkpoint_bytes as f64)),
            format!("{:.1} ms", r.take_ms),
            format!("{:.1} ms", r.encode_ms),
            format!("{:.1} ms", r.transfer_ms),
            format!("{:.1} ms", r.install_ms),
            format!("{:.0} ms", r.start_to_installed_ms),
            format!("{:.0} ms", r.catch_up_ms),
            r.hashes_agree.to_string(),
        ]);
    }
    let text = t.render();
    println!("{text}");
    #[derive(Serialize)]
    struct Out<'a> {
        machine: String,
        workers: usize,
        checkpoint_every: u64,
        rows: &'a [Row],
    }
    let value = Out {
        machine: machine.describe(),
        workers: plan.workers,
        checkpoint_every: plan.checkpoint_every,
        rows: &rows,
    };
    match report::write_json(out, "recovery.json", &value) {
        Ok(p) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("recovery: writing results: {e}"),
    }
    let _ = std::fs::create_dir_all(out);
    let _ = std::fs::write(out.join("recovery.txt"), text);
}
