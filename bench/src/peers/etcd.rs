//! etcd for `peers`: a 3-member cluster of the Debian `etcd-server` binary on loopback, driven
//! through its native gRPC API with the `etcd-client` crate (tonic). Writes are `Put`, reads
//! are `Range` requests with etcd's default linearizable consistency (a ReadIndex round
//! through the leader; no `serializable` option).
//!
//! Durability: etcd's defaults, fsync of the write-ahead log before a proposal is
//! acknowledged; snapshot every 100 000 applied entries (`--snapshot-count`, the 3.4 default).

use super::procs::{self, Group, TempDir};
use super::tokio_load::{closed_loop, key_name, retry, ycsb_key, ycsb_loop, Op, Session};
use super::{Measured, Plan, Point};
use btree_service::ycsb::{YcsbResult, YcsbWorkload};
use etcd_client::{Client, KvClient, Txn, TxnOp};
use std::process::Command;
use std::time::Duration;

/// Keys per prefill transaction (etcd's default `--max-txn-ops` is 128).
const PREFILL_BATCH: u64 = 100;

#[derive(Clone)]
struct EtcdSession {
    kv: KvClient,
    value: Vec<u8>,
}

impl Session for EtcdSession {
    async fn run(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Write(k) => self
                .kv
                .put(key_name(k), self.value.clone(), None)
                .await
                .map(|_| ())
                .map_err(|e| format!("put: {e}")),
            Op::Read(k) => {
                let r = self
                    .kv
                    .get(key_name(k), None)
                    .await
                    .map_err(|e| format!("get: {e}"))?;
                match r.kvs() {
                    [kv] if kv.value().len() == self.value.len() => Ok(()),
                    other => Err(format!(
                        "get {}: {} values, expected one of {} bytes",
                        key_name(k),
                        other.len(),
                        self.value.len()
                    )),
                }
            }
        }
    }
}

/// `etcd --version`'s first line.
pub fn version() -> String {
    Command::new(procs::ETCD.probe)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd (version unknown)".into())
}

/// A 3-member etcd cluster on loopback; its processes and data go away when dropped.
struct EtcdCluster {
    dir: TempDir,
    group: Group,
    endpoints: Vec<String>,
}

impl EtcdCluster {
    fn start() -> Result<Self, String> {
        let dir = TempDir::new("etcd")?;
        let base = procs::free_port_range(6)?;
        let client_url = |i: u16| format!("http://127.0.0.1:{}", base + i);
        let peer_url = |i: u16| format!("http://127.0.0.1:{}", base + 3 + i);
        let initial: Vec<String> = (0..3).map(|i| format!("e{i}={}", peer_url(i))).collect();
        let token = format!("chorus-peers-{}-{base}", std::process::id());
        let mut group = Group::default();
        for i in 0..3u16 {
            let mut cmd = Command::new(procs::ETCD.probe);
            cmd.arg("--name")
                .arg(format!("e{i}"))
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .arg("--listen-client-urls")
                .arg(client_url(i))
                .arg("--advertise-client-urls")
                .arg(client_url(i))
                .arg("--listen-peer-urls")
                .arg(peer_url(i))
                .arg("--initial-advertise-peer-urls")
                .arg(peer_url(i))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-token")
                .arg(&token)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--snapshot-count")
                .arg("100000")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("warn");
            group.spawn(&format!("e{i}"), cmd, &dir.path().join(format!("e{i}.log")))?;
        }
        Ok(EtcdCluster {
            dir,
            group,
            endpoints: (0..3).map(client_url).collect(),
        })
    }

    /// A client once the cluster answers a write.
    async fn ready(&mut self) -> Result<Client, String> {
        let logs = self.dir.path().to_path_buf();
        let endpoints = self.endpoints.clone();
        let group = &mut self.group;
        retry(
            "etcd cluster start",
            Duration::from_secs(30),
            || group.check_alive(&logs),
            || async {
                let mut c = Client::connect(&endpoints, None)
                    .await
                    .map_err(|e| e.to_string())?;
                c.put("peers-ready", "1", None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(c)
            },
        )
        .await
    }

    /// One session per client, each over all three endpoints.
    async fn sessions(&self, plan: &Plan, value: &[u8]) -> Result<Vec<EtcdSession>, String> {
        let mut sessions = Vec::new();
        for _ in 0..plan.clients.max(1) {
            let c = Client::connect(&self.endpoints, None)
                .await
                .map_err(|e| format!("etcd client: {e}"))?;
            sessions.push(EtcdSession {
                kv: c.kv_client(),
                value: value.to_vec(),
            });
        }
        Ok(sessions)
    }

    fn check_alive(&mut self) -> Result<(), String> {
        let logs = self.dir.path().to_path_buf();
        self.group.check_alive(&logs)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Starts the cluster, pre-fills the keys, measures every point, stops the cluster.
pub fn run_system(
    plan: &Plan,
    points: &[Point],
    report: &mut dyn FnMut(Point, Result<Measured, String>),
) -> Result<(), String> {
    if points.is_empty() {
        return Ok(());
    }
    procs::ensure(&procs::ETCD, plan.install)?;
    let mut cluster = EtcdCluster::start()?;
    let rt = runtime()?;
    let value = vec![b'v'; plan.value_bytes];
    rt.block_on(async {
        let client = cluster.ready().await?;
        prefill(&client, 0..plan.keys, &value).await?;
        for &p in points {
            let sessions = cluster.sessions(plan, &value).await?;
            let m = closed_loop(&sessions, plan, p).await;
            let alive = cluster.check_alive();
            report(p, alive.map(|()| m));
        }
        Ok::<(), String>(())
    })?;
    drop(rt);
    drop(cluster);
    Ok(())
}

/// YCSB: for each of `workloads` (key-value ones only), a fresh cluster loaded with the
/// records, one run.
pub fn run_ycsb(
    plan: &Plan,
    workloads: &[YcsbWorkload],
    report: &mut dyn FnMut(YcsbWorkload, Result<YcsbResult, String>),
) -> Result<(), String> {
    if workloads.is_empty() {
        return Ok(());
    }
    procs::ensure(&procs::ETCD, plan.install)?;
    let rt = runtime()?;
    let record = vec![b'r'; plan.ycsb_params.record_bytes()];
    for &w in workloads.iter().filter(|w| w.is_key_value()) {
        let mut cluster = EtcdCluster::start()?;
        let result = rt.block_on(async {
            let client = cluster.ready().await?;
            let records = plan.ycsb_params.records;
            prefill(&client, ycsb_key(0)..ycsb_key(records), &record).await?;
            let sessions = cluster.sessions(plan, &record).await?;
            let m = ycsb_loop(&sessions, plan, w).await;
            cluster.check_alive().map(|()| m)
        });
        report(w, result);
        drop(cluster);
    }
    Ok(())
}

/// Writes every key of `keys` once, in transactions of [`PREFILL_BATCH`] puts, 16 at a time.
async fn prefill(client: &Client, keys: std::ops::Range<u64>, value: &[u8]) -> Result<(), String> {
    let end = keys.end;
    let batches: Vec<(u64, u64)> = keys
        .step_by(PREFILL_BATCH as usize)
        .map(|lo| (lo, (lo + PREFILL_BATCH).min(end)))
        .collect();
    for chunk in batches.chunks(16) {
        let mut tasks = Vec::new();
        for &(lo, hi) in chunk {
            let mut kv = client.kv_client();
            let ops: Vec<TxnOp> = (lo..hi)
                .map(|k| TxnOp::put(key_name(k), value.to_vec(), None))
                .collect();
            tasks.push(tokio::spawn(async move {
                kv.txn(Txn::new().and_then(ops))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("etcd prefill: {e}"))
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
    }
    Ok(())
}
