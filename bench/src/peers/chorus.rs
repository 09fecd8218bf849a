//! The Chorus side of `peers`: a 3-replica B+-tree service as `btree-server` processes on
//! loopback (each replica is also one of the 2f+1 = 3 acceptors of every log, so three
//! processes, as for etcd and ZooKeeper), driven by closed-loop clients in this process over the
//! groups TCP runtime (one client node per client, `outstanding` commands in its window).
//!
//! Reads are `Get` commands multicast and ordered through the consensus logs exactly like
//! writes (`Update`), so both are linearizable; there is no read shortcut.

use super::procs::{Group, TempDir};
use super::{Measured, Plan, Point};
use btree_service::cli::{ConfigFile, DeploymentFile};
use btree_service::load::Sequence;
use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use btree_service::ycsb::{OpLatencies, YcsbDriver, YcsbResult, YcsbWorkload};
use bytes::Bytes;
use engine::host::client::{Completion, Driver};
use engine::load::{histogram, quantile_us, DONE, MEASURE, WARMUP};
use engine::psmr::deployment::Deployment;
use engine::psmr::proxy::{ClientOptions, ClientProxy};
use engine::wire::ClientId;
use groups::config::{Durability, Tuning};
use groups::ids::NodeId;
use groups::node::{GroupsNode, NodeOptions};
use groups::runtime::tcp::TcpNode;
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `btree-server` binary next to this executable (or next to its parent directory, for
/// test executables in `deps/`), built with cargo if missing.
pub fn server_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no executable directory")?;
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let bin = dir.join("btree-server");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "peers: {} is missing; building it (cargo build -p btree-service --bin btree-server)",
        bin.display()
    );
    let release = dir.ends_with("release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "btree-service", "--bin", "btree-server"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() || !bin.exists() {
        return Err(format!(
            "could not build {}: run `cargo build --release -p btree-service` first",
            bin.display()
        ));
    }
    Ok(bin)
}

/// A running Chorus deployment; its processes and data directory go away when dropped.
pub struct Cluster {
    file: DeploymentFile,
    service: Arc<TreeService>,
    clients: Vec<NodeId>,
    /// Client indexes of the next run (never reused: replicas remember clients' sequence
    /// numbers).
    next_index: u32,
    procs: Group,
    dir: TempDir,
    /// Clients serve single-worker reads off the log, after a read index.
    pub fast_reads: bool,
}

/// The tree of a peers run: `keys` keys, all present from the start, values of `value_bytes`.
pub fn tree_config(plan: &Plan) -> TreeConfig {
    TreeConfig {
        fanout: 64,
        key_space: plan.keys,
        prefill: plan.keys,
        value_bytes: plan.value_bytes,
    }
}

/// Where the replicas keep their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logs {
    Memory,
    /// Write-ahead files with group commit (the default).
    Disk,
    /// Write-ahead files, one record and one sync per storage call (`wal_group_commit =
    /// false`): the store as it was first written, to measure group commit against.
    DiskSyncEach,
}

impl Cluster {
    /// Starts three replicas (mutual TLS on every link with `tls`) and waits until one `Get`
    /// is answered.
    pub fn start(plan: &Plan, logs: Logs, tls: bool) -> Result<Cluster, String> {
        Self::start_tree(plan, logs, tls, tree_config(plan))
    }

    /// Like [`Cluster::start`], with the records of a YCSB run loaded.
    pub fn start_ycsb(plan: &Plan, logs: Logs, tls: bool) -> Result<Cluster, String> {
        Self::start_tree(plan, logs, tls, plan.ycsb_params.tree())
    }

    fn start_tree(plan: &Plan, logs: Logs, tls: bool, tree: TreeConfig) -> Result<Cluster, String> {
        let bin = server_binary()?;
        let durable = logs != Logs::Memory;
        let dir = TempDir::new(match (durable, tls) {
            (true, _) => "chorus-disk",
            (false, true) => "chorus-memory-tls",
            (false, false) => "chorus-memory",
        })?;
        let workers = plan.effective_chorus_workers();
        // Trimming on either way: with durable logs, below the replicas' durable checkpoints
        // (the server's default for disk, `engine::serve::DISK_CHECKPOINT_EVERY`).
        let tuning = Tuning {
            wal_group_commit: logs != Logs::DiskSyncEach,
            ..Tuning::default()
        };
        let nodes = 3 + plan.clients.max(1);
        let base = super::procs::free_port_range(nodes as u16)?;
        let d = Deployment::new(3, 1, workers, plan.clients.max(1), tuning)
            .and_then(|d| d.with_loopback_addresses(base))
            .map_err(|e| e.to_string())?;
        let durability = if durable {
            Durability::Disk {
                data_dir: dir.path().join("data").display().to_string(),
            }
        } else {
            Durability::Memory
        };
        let file = DeploymentFile {
            mode: plan.chorus_mode,
            workers,
            replicas: d.replicas.clone(),
            tree,
            cluster: groups::credentials::with_new_secret(
                d.config
                    .clone()
                    .with_durability(durability)
                    .map_err(|e| e.to_string())?,
                &dir.path().join("cluster.secret"),
            )
            .and_then(|c| match tls {
                true => groups::credentials::with_new_tls(c, &dir.path().join("tls")),
                false => Ok(c),
            })
            .map_err(|e| e.to_string())?,
        };
        let path = dir.path().join("deployment.toml");
        std::fs::write(&path, file.render()?).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut procs = Group::default();
        for n in file
            .cluster
            .nodes
            .iter()
            .filter(|n| !d.clients.contains(&n.id))
        {
            let name = format!("node-{}", n.id.0);
            let mut cmd = Command::new(&bin);
            cmd.arg("--config")
                .arg(&path)
                .arg("--node")
                .arg(n.id.0.to_string())
                .env("RUST_LOG", "warn");
            procs.spawn(&name, cmd, &dir.path().join(format!("{name}.log")))?;
        }
        let service = Arc::new(TreeService::try_new(file.tree.clone())?);
        let mut cluster = Cluster {
            file,
            service,
            clients: d.clients.clone(),
            next_index: engine::host::client::incarnation_index(),
            procs,
            dir,
            fast_reads: false,
        };
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn fresh_index(&mut self, n: usize) -> u32 {
        let first = self.next_index;
        self.next_index = self.next_index.wrapping_add(n.max(1) as u32);
        first
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            self.procs.check_alive(self.dir.path())?;
            let index = self.fresh_index(1);
            let proxy = ClientProxy::new(
                ClientId::new(self.clients[0], index),
                self.service.clone(),
                self.file.mode,
                self.file.workers,
                500,
            );
            let reply = engine::serve::call_once(
                &self.file.cluster,
                self.clients[0],
                proxy,
                TreeCommand::Get(0),
                Duration::from_secs(2),
            )?;
            match reply {
                Some(Ok(TreeReply::Value(Some(v)))) if v.len() == self.file.tree.value_bytes => {
                    return Ok(())
                }
                Some(other) => return Err(format!("readiness probe: unexpected reply {other:?}")),
                None if Instant::now() < deadline => {}
                None => {
                    return Err(format!(
                        "the Chorus cluster answered no Get within {limit:?} (logs in {})",
                        self.dir.path().display()
                    ))
                }
            }
        }
    }

    /// The server processes (for the report).
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    /// Runs `plan.clients` client nodes against the servers, each one client with `window`
    /// commands in flight and the driver `driver(i, seed, phase)` makes, through the warm-up
    /// and the measured window: the drivers, stopped, and the measured window's length.
    fn run_clients<D>(
        &mut self,
        plan: &Plan,
        window: usize,
        mut driver: impl FnMut(usize, u64, Arc<AtomicU8>) -> D,
    ) -> Result<(Vec<D>, Duration), String>
    where
        D: Driver<TreeCommand, TreeReply> + Send + 'static,
    {
        self.procs.check_alive(self.dir.path())?;
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let cfg = Arc::new(self.file.cluster.clone());
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        let ids: Vec<NodeId> = self.clients.iter().take(plan.clients).copied().collect();
        for (i, id) in ids.into_iter().enumerate() {
            let seed = 0xC0FFEE ^ ((i as u64) << 16) ^ u64::from(self.next_index);
            let driver = driver(i, seed, phase.clone());
            let options = ClientOptions {
                clients: 1,
                window,
                mode: self.file.mode,
                workers: self.file.workers,
                resend_ticks: 2000,
                first_index: self.fresh_index(1),
                fast_reads: self.fast_reads,
            };
            let app = engine::psmr::proxy::client_app(id, self.service.clone(), options, driver);
            let node = GroupsNode::in_memory(cfg.clone(), id, NodeOptions::fresh());
            let tcp = TcpNode::bind(node, app).map_err(|e| format!("client node {id}: {e}"))?;
            stops.push(tcp.stop_flag());
            threads.push(std::thread::spawn(move || tcp.run(None)));
        }
        std::thread::sleep(plan.warmup);
        phase.store(MEASURE, Ordering::Relaxed);
        let t0 = Instant::now();
        std::thread::sleep(plan.measure);
        phase.store(DONE, Ordering::Relaxed);
        let elapsed = t0.elapsed();
        for s in &stops {
            s.store(true, Ordering::Relaxed);
        }
        let mut drivers = Vec::new();
        for t in threads {
            let app = t
                .join()
                .map_err(|_| "client thread panicked".to_string())?
                .map_err(|e| e.to_string())?;
            drivers.push(app.host.driver);
        }
        self.procs.check_alive(self.dir.path())?;
        Ok((drivers, elapsed))
    }

    /// One measured point: `plan.clients` client nodes, each one client with `outstanding`
    /// commands in flight, warm-up then the measured window.
    pub fn measure(&mut self, plan: &Plan, point: Point) -> Result<Measured, String> {
        let (drivers, elapsed) = self.run_clients(plan, point.outstanding, |_, seed, phase| {
            MixDriver::new(point.write_pct, plan.keys, plan.value_bytes, seed, phase)
        })?;
        let mut hist = histogram();
        let (mut completed, mut errors) = (0, 0);
        for d in drivers {
            hist.add(&d.latency_ns).map_err(|e| e.to_string())?;
            completed += d.completed;
            errors += d.errors;
        }
        Ok(Measured {
            throughput_ops_s: completed as f64 / elapsed.as_secs_f64(),
            p50_us: quantile_us(&hist, 0.5),
            p99_us: quantile_us(&hist, 0.99),
            completed,
            errors,
        })
    }

    /// One YCSB run of `workload`: `plan.clients` client nodes, each one client with
    /// `plan.ycsb_outstanding` commands in flight, warm-up then the measured window.
    pub fn measure_ycsb(
        &mut self,
        plan: &Plan,
        workload: YcsbWorkload,
    ) -> Result<YcsbResult, String> {
        let slots = self.clients.len().min(plan.clients) as u64;
        let (drivers, elapsed) =
            self.run_clients(plan, plan.ycsb_outstanding, |i, seed, phase| {
                let slot = Sequence::slot(i as u64, slots);
                YcsbDriver::new(1, workload, plan.ycsb_params, slot, seed, phase)
            })?;
        let mut lat = OpLatencies::default();
        let mut errors = 0;
        for d in drivers {
            lat.add(&d.latencies);
            errors += d.errors;
        }
        Ok(YcsbResult::from_latencies(
            workload,
            &lat,
            elapsed.as_secs_f64(),
            errors,
        ))
    }

    /// Bytes of durable log files under the data directory (0 in memory mode).
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir.path().join("data"))
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Closed-loop commands of one client: `Update` (a write of an existing key) with probability
/// `write_pct`%, else `Get`, keys uniform over `[0, keys)`. A reply that is not what the
/// command must answer (a missing key, a value of the wrong size) counts as an error.
pub struct MixDriver {
    rng: ChaCha8Rng,
    write_pct: u32,
    keys: u64,
    value: Bytes,
    phase: Arc<AtomicU8>,
    pub latency_ns: Histogram<u64>,
    pub completed: u64,
    pub errors: u64,
}

impl MixDriver {
    pub fn new(
        write_pct: u32,
        keys: u64,
        value_bytes: usize,
        seed: u64,
        phase: Arc<AtomicU8>,
    ) -> Self {
        MixDriver {
            rng: ChaCha8Rng::seed_from_u64(seed),
            write_pct,
            keys: keys.max(1),
            value: Bytes::from(vec![b'v'; value_bytes]),
            phase,
            latency_ns: histogram(),
            completed: 0,
            errors: 0,
        }
    }

    pub fn next_command(&mut self) -> TreeCommand {
        let key = self.rng.random_range(0..self.keys);
        if self.rng.random_range(0..100u32) < self.write_pct {
            TreeCommand::Update(key, self.value.clone())
        } else {
            TreeCommand::Get(key)
        }
    }
}

impl Driver<TreeCommand, TreeReply> for MixDriver {
    fn next(&mut self, _client: usize, _now_us: u64) -> Option<TreeCommand> {
        if self.phase.load(Ordering::Relaxed) == DONE {
            return None;
        }
        Some(self.next_command())
    }

    fn complete(
        &mut self,
        _client: usize,
        done: Completion<TreeCommand, TreeReply>,
        latency: Duration,
    ) {
        let result = done.result;
        if self.phase.load(Ordering::Relaxed) != MEASURE {
            return;
        }
        let ok = match &result {
            Ok(TreeReply::Updated(true)) => true,
            Ok(TreeReply::Value(Some(v))) => v.len() == self.value.len(),
            _ => false,
        };
        if !ok {
            self.errors += 1;
        }
        self.completed += 1;
        let _ = self.latency_ns.record((latency.as_nanos() as u64).max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_the_write_share() {
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let mut d = MixDriver::new(5, 1000, 100, 1, phase);
        let n = 10_000;
        let writes = (0..n)
            .filter(|_| match d.next_command() {
                TreeCommand::Update(k, v) => {
                    assert!(k < 1000 && v.len() == 100);
                    true
                }
                TreeCommand::Get(k) => {
                    assert!(k < 1000);
                    false
                }
                other => panic!("unexpected {other:?}"),
            })
            .count();
        assert!((300..700).contains(&writes), "{writes} writes of {n}");
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let mut all = MixDriver::new(100, 10, 100, 2, phase);
        assert!((0..100).all(|_| matches!(all.next_command(), TreeCommand::Update(..))));
    }
}
