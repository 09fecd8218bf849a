//! etcd for `peers`: a 3-member cluster of the Debian `etcd-server` binary on loopback, driven
//! through its native gRPC API with the `etcd-client` crate (tonic). Writes are `Put`, reads
//! are `Range` requests with etcd's default linearizable consistency (a ReadIndex round
//! through the leader; no `serializable` option).
//!
//! Durability: etcd's defaults, fsync of the write-ahead log before a proposal is
//! acknowledged; snapshot every 100 000 applied entries (`--snapshot-count`, the 3.4 default).

use super::procs::{self, Group, TempDir};
use super::tokio_load::{closed_loop, key_name, retry, Op, Session};
use super::{Measured, Plan, Point};
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

/// Starts the cluster, pre-fills the keys, measures every point, stops the cluster.
pub fn run_system(
    plan: &Plan,
    points: &[Point],
    report: &mut dyn FnMut(Point, Result<Measured, String>),
) -> Result<(), String> {
    procs::ensure(&procs::ETCD, plan.install)?;
    let dir = TempDir::new("etcd")?;
    let base = procs::free_port_range(6)?;
    let client_url = |i: u16| format!("http://127.0.0.1:{}", base + i);
    let peer_url = |i: u16| format!("http://127.0.0.1:{}", base + 3 + i);
    let initial: Vec<String> = (0..3).map(|i| format!("e{i}={}", peer_url(i))).collect();
    let token = format!("chorus-peers-{}", std::process::id());
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
    let endpoints: Vec<String> = (0..3).map(client_url).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let value = vec![b'v'; plan.value_bytes];
    let logs = dir.path().to_path_buf();
    rt.block_on(async {
        let client = retry(
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
        .await?;
        prefill(&client, plan.keys, &value).await?;
        for &p in points {
            let mut sessions = Vec::new();
            for _ in 0..plan.clients.max(1) {
                let c = Client::connect(&endpoints, None)
                    .await
                    .map_err(|e| format!("etcd client: {e}"))?;
                sessions.push(EtcdSession {
                    kv: c.kv_client(),
                    value: value.clone(),
                });
            }
            let m = closed_loop(&sessions, plan, p).await;
            let alive = group.check_alive(&logs);
            report(p, alive.map(|()| m));
        }
        Ok::<(), String>(())
    })?;
    drop(rt);
    drop(group);
    Ok(())
}

/// Writes every key once, in transactions of [`PREFILL_BATCH`] puts, 16 at a time.
async fn prefill(client: &Client, keys: u64, value: &[u8]) -> Result<(), String> {
    let batches: Vec<(u64, u64)> = (0..keys)
        .step_by(PREFILL_BATCH as usize)
        .map(|lo| (lo, (lo + PREFILL_BATCH).min(keys)))
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
