//! What a durable checkpoint's write costs the clients: a loopback deployment of three
//! `btree-server` processes with durable logs (`durability = "disk"`), the tree pre-filled
//! with `keys` keys, a checkpoint every `checkpoint_every` commands, loaded by `btree-load`
//! (8 closed-loop clients, gets and updates of existing keys). Side by side in one
//! invocation, run by run interleaved: the checkpoint written on a writer thread
//! (`--checkpoint-writer background`, the default) and on the node's thread (`inline`, the
//! engine before; every client waits for the write, its `fsync`, the rename and the
//! directory `fsync`). Measured: throughput, p50/p99/p99.9/max latency (from `btree-load`),
//! and from replica 1's `/metrics` the checkpoints written, the latest one's size, its
//! encoding time (on the node's thread either way) and its write time.
//!
//! Needs the service binaries next to the bench binary (`cargo build --release -p
//! btree-service`).

use crate::recovery::{
    binary, free_port, free_ports, sample, scrape, start_server, wait_size, Procs,
};
use crate::report::{self, median, Table};
use serde::Serialize;
use std::path::Path;
use std::process::{Command, Stdio};

/// What to run.
pub struct Plan {
    pub keys: u64,
    pub checkpoint_every: u64,
    pub seconds: f64,
    pub runs: usize,
}

/// One measured run.
#[derive(Serialize, Debug, Clone)]
pub struct Run {
    pub writer: &'static str,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// At replica 1, during the run.
    pub checkpoints_written: u64,
    pub checkpoint_bytes: u64,
    pub encode_ms: f64,
    pub write_ms: f64,
}

/// The median of each figure over a writer's runs.
#[derive(Serialize, Debug, Clone)]
pub struct Row {
    pub writer: &'static str,
    pub runs: usize,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub checkpoints_written: f64,
    pub checkpoint_bytes: f64,
    pub encode_ms: f64,
    pub write_ms: f64,
}

const WRITERS: [&str; 2] = ["background", "inline"];

/// `name X us` in `btree-load`'s line.
fn figure(line: &str, name: &str) -> Option<f64> {
    let at = line.find(&format!(" {name} "))? + name.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// `X commands/s` in `btree-load`'s line.
fn throughput(line: &str) -> Option<f64> {
    let head = &line[..line.find(" commands/s")?];
    head.rsplit(' ').next()?.parse().ok()
}

fn one(plan: &Plan, writer: &'static str, dir: &Path) -> Result<Run, String> {
    let server = binary("btree-server")?;
    let load = binary("btree-load")?;
    let client = binary("btree-client")?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let config = dir.join("deployment.toml");
    let config_s = config.to_str().unwrap_or_default().to_string();
    let data = dir.join("data");
    let base = free_ports(6);
    let ok = Command::new(&server)
        .args(["--write-config", &config_s])
        .args(["--replicas", "3", "--clients", "2", "--workers", "1"])
        .args(["--prefill", &plan.keys.to_string()])
        .args(["--durability", "disk"])
        .args(["--data-dir", data.to_str().unwrap_or_default()])
        .args(["--base-port", &base.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok {
        return Err("btree-server --write-config failed".into());
    }
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let every = plan.checkpoint_every.to_string();
    let flags = ["--checkpoint-every", &every, "--checkpoint-writer", writer];
    let mut procs = Procs(Vec::new());
    for (n, &port) in (1..=3).zip(&ports) {
        procs
            .0
            .push(start_server(&server, &config, n, port, &flags)?);
    }
    wait_size(&client, &config, plan.keys)?;
    let written = |b: &str| sample(b, "chorus_checkpoints_written_total{result=\"ok\"}");
    let before = scrape(ports[0]).as_deref().and_then(written).unwrap_or(0.0);
    let out = Command::new(&load)
        .args(["--config", &config_s, "--node", "1000"])
        .args(["--seconds", &plan.seconds.to_string(), "--warmup-s", "1"])
        .args(["--clients", "8", "--workload", "read-update"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!("btree-load failed: {line}"));
    }
    let body = scrape(ports[0]).ok_or("replica 1 has no metrics")?;
    drop(procs);
    let _ = std::fs::remove_dir_all(dir);
    let f = |name: &str| figure(&line, name).ok_or(format!("no {name} in {line:?}"));
    let ms = |m: &str| sample(&body, m).unwrap_or(f64::NAN) * 1e3;
    Ok(Run {
        writer,
        ops_per_s: throughput(&line).ok_or(format!("no commands/s in {line:?}"))?,
        p50_us: f("p50")?,
        p99_us: f("p99")?,
        p999_us: f("p99.9")?,
        max_us: f("max")?,
        checkpoints_written: (written(&body).unwrap_or(0.0) - before).max(0.0) as u64,
        checkpoint_bytes: sample(&body, "chorus_checkpoint_bytes").unwrap_or(0.0) as u64,
        encode_ms: ms("chorus_checkpoint_encode_seconds"),
        write_ms: ms("chorus_checkpoint_write_seconds"),
    })
}

/// Runs the plan (the writers interleaved run by run), prints the table, writes
/// `checkpoint-stall.json` and `checkpoint-stall.txt`.
pub fn run(plan: &Plan, out: &Path, machine: &crate::machine::Machine) {
    let mut runs: Vec<Run> = Vec::new();
    for i in 0..plan.runs {
        for writer in WRITERS {
            let dir = std::env::temp_dir().join(format!("chorus-bench-ckpt-stall-{writer}"));
            match one(plan, writer, &dir) {
                Ok(r) => {
                    println!("run {i} {writer}: {r:?}");
                    runs.push(r);
                }
                Err(e) => eprintln!("checkpoint-stall: run {i} {writer}: {e}"),
            }
        }
    }
    let rows: Vec<Row> = WRITERS
        .iter()
        .map(|&w| {
            let of: Vec<&Run> = runs.iter().filter(|r| r.writer == w).collect();
            let m = |f: fn(&Run) -> f64| median(&of.iter().map(|r| f(r)).collect::<Vec<_>>());
            Row {
                writer: w,
                runs: of.len(),
                ops_per_s: m(|r| r.ops_per_s),
                p50_us: m(|r| r.p50_us),
                p99_us: m(|r| r.p99_us),
                p999_us: m(|r| r.p999_us),
                max_us: m(|r| r.max_us),
                checkpoints_written: m(|r| r.checkpoints_written as f64),
                checkpoint_bytes: m(|r| r.checkpoint_bytes as f64),
                encode_ms: m(|r| r.encode_ms),
                write_ms: m(|r| r.write_ms),
            }
        })
        .collect();
    let mut t = Table::new(&[
        "writer",
        "runs",
        "ops/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "checkpoints",
        "size",
        "encode",
        "write",
    ]);
    for r in &rows {
        t.row(vec![
            r.writer.to_string(),
            r.runs.to_string(),
            format!("{:.0}", r.ops_per_s),
            format!("{:.0}", r.p50_us),
            format!("{:.0}", r.p99_us),
            format!("{:.0}", r.p999_us),
            format!("{:.0}", r.max_us),
            format!("{:.0}", r.checkpoints_written),
            format!("{} B", report::human(r.checkpoint_bytes)),
            format!("{:.1} ms", r.encode_ms),
            format!("{:.1} ms", r.write_ms),
        ]);
    }
    let text = format!(
        "checkpoint-stall (measured): {} keys, a checkpoint every {} commands, {} s per run, medians of the runs\n{}",
        plan.keys,
        plan.checkpoint_every,
        plan.seconds,
        t.render()
    );
    println!("{text}");
    #[derive(Serialize)]
    struct Out<'a> {
        machine: String,
        simulated: bool,
        keys: u64,
        checkpoint_every: u64,
        seconds: f64,
        rows: &'a [Row],
        runs: &'a [Run],
    }
    let value = Out {
        machine: machine.describe(),
        simulated: false,
        keys: plan.keys,
        checkpoint_every: plan.checkpoint_every,
        seconds: plan.seconds,
        rows: &rows,
        runs: &runs,
    };
    match report::write_json(out, "checkpoint-stall.json", &value) {
        Ok(p) => println!("wrote {}", p.display()),
        Err(e) => eprintln!("checkpoint-stall: writing results: {e}"),
    }
    let _ = std::fs::create_dir_all(out);
    let _ = std::fs::write(out.join("checkpoint-stall.txt"), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_load_line() {
        let l = "node 1000, read-update: 2904 commands/s, p50 1300 us, p99 2600 us, p99.9 9100 us, max 41000 us, 0 errors";
        assert_eq!(figure(l, "p50"), Some(1300.0));
        assert_eq!(figure(l, "p99"), Some(2600.0));
        assert_eq!(figure(l, "p99.9"), Some(9100.0));
        assert_eq!(figure(l, "max"), Some(41000.0));
        assert_eq!(figure(l, "p75"), None);
        assert_eq!(throughput(l), Some(2904.0));
    }
}
