//! ZooKeeper for `peers`: a 3-server ensemble of the Debian `zookeeper` package
//! (`QuorumPeerMain` run directly with java) on loopback, driven through its native protocol
//! with the `zookeeper-client` crate (kezhuw; async, on tokio). Every key is a persistent znode
//! `/chorus-peers/kNNNNNN`; writes are `setData`; reads are `sync` followed by `getData` on the
//! same session (pipelined: the session's FIFO order puts the read after the sync). This is the
//! usual "linearizable read" recipe; as the client's documentation notes (ZOOKEEPER-1675,
//! ZOOKEEPER-2136), `sync` is not quorum-acknowledged, so a read right after a leader change
//! may still be stale.
//!
//! Each client session connects to one server (client `i` to server `i mod 3`).
//!
//! Durability: `forceSync=yes` (the default: the transaction log is fsynced before a write is
//! acknowledged, group-committed), `snapCount=100000` (the default), autopurge off.

use super::procs::{self, Group, TempDir};
use super::tokio_load::{closed_loop, key_name, retry, Op, Session};
use super::{Measured, Plan, Point};
use std::process::Command;
use std::time::Duration;
use zookeeper_client::{Acls, Client, CreateMode};

const ROOT: &str = "/chorus-peers";
/// Creates per prefill `multi` request.
const PREFILL_BATCH: u64 = 500;

fn path(k: u64) -> String {
    format!("{ROOT}/{}", key_name(k))
}

#[derive(Clone)]
struct ZkSession {
    client: Client,
    value: Vec<u8>,
}

impl Session for ZkSession {
    async fn run(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Write(k) => self
                .client
                .set_data(&path(k), &self.value, None)
                .await
                .map(|_| ())
                .map_err(|e| format!("setData: {e}")),
            Op::Read(k) => {
                let p = path(k);
                // Both requests leave now, in this order; the session answers in order.
                let sync = self.client.sync(&p);
                let get = self.client.get_data(&p);
                sync.await.map_err(|e| format!("sync: {e}"))?;
                let (data, _) = get.await.map_err(|e| format!("getData: {e}"))?;
                if data.len() == self.value.len() {
                    Ok(())
                } else {
                    Err(format!(
                        "getData {p}: {} bytes, expected {}",
                        data.len(),
                        self.value.len()
                    ))
                }
            }
        }
    }
}

pub fn version() -> String {
    "ZooKeeper 3.8 (Debian package zookeeper)".into()
}

async fn connect(server: &str) -> Result<Client, String> {
    Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(server)
        .await
        .map_err(|e| format!("connect {server}: {e}"))
}

/// Starts the ensemble, pre-fills the keys, measures every point, stops the ensemble.
pub fn run_system(
    plan: &Plan,
    points: &[Point],
    report: &mut dyn FnMut(Point, Result<Measured, String>),
) -> Result<(), String> {
    procs::ensure(&procs::ZOOKEEPER, plan.install)?;
    let dir = TempDir::new("zookeeper")?;
    // Per server: client port, quorum port, election port.
    let base = procs::free_port_range(9)?;
    let client_port = |i: u16| base + i;
    let servers: Vec<String> = (0..3u16)
        .map(|i| {
            format!(
                "server.{}=127.0.0.1:{}:{}",
                i + 1,
                base + 3 + i,
                base + 6 + i
            )
        })
        .collect();
    let mut group = Group::default();
    for i in 0..3u16 {
        let data = dir.path().join(format!("z{i}"));
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        std::fs::write(data.join("myid"), format!("{}\n", i + 1)).map_err(|e| e.to_string())?;
        let cfg = format!(
            "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
             clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nforceSync=yes\nsnapCount=100000\n\
             autopurge.purgeInterval=0\nadmin.enableServer=false\n{}\n",
            data.display(),
            client_port(i),
            servers.join("\n")
        );
        let cfg_path = dir.path().join(format!("z{i}.cfg"));
        std::fs::write(&cfg_path, cfg).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms512m",
            "-Xmx512m",
            "-Dzookeeper.admin.enableServer=false",
            "-cp",
            procs::ZOOKEEPER.probe,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        ])
        .arg(&cfg_path);
        group.spawn(&format!("z{i}"), cmd, &dir.path().join(format!("z{i}.log")))?;
    }
    let addr = |i: u16| format!("127.0.0.1:{}", client_port(i));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let value = vec![b'v'; plan.value_bytes];
    let logs = dir.path().to_path_buf();
    rt.block_on(async {
        // The ensemble serves once a leader is elected and every server has joined it.
        for i in 0..3 {
            retry(
                "ZooKeeper ensemble start",
                Duration::from_secs(60),
                || group.check_alive(&logs),
                || async {
                    let c = connect(&addr(i)).await?;
                    c.sync("/").await.map_err(|e| e.to_string())?;
                    Ok(())
                },
            )
            .await?;
        }
        let admin = connect(&addr(0)).await?;
        prefill(&admin, plan.keys, &value).await?;
        for &p in points {
            let mut sessions = Vec::new();
            for c in 0..plan.clients.max(1) {
                sessions.push(ZkSession {
                    client: connect(&addr((c % 3) as u16)).await?,
                    value: value.clone(),
                });
            }
            let m = closed_loop(&sessions, plan, p).await;
            drop(sessions);
            let alive = group.check_alive(&logs);
            report(p, alive.map(|()| m));
        }
        Ok::<(), String>(())
    })?;
    drop(rt);
    drop(group);
    Ok(())
}

/// Creates the parent and every key's znode, in `multi` requests of [`PREFILL_BATCH`] creates,
/// 8 at a time.
async fn prefill(client: &Client, keys: u64, value: &[u8]) -> Result<(), String> {
    let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client
        .create(ROOT, b"", &options)
        .await
        .map_err(|e| format!("create {ROOT}: {e}"))?;
    let batches: Vec<(u64, u64)> = (0..keys)
        .step_by(PREFILL_BATCH as usize)
        .map(|lo| (lo, (lo + PREFILL_BATCH).min(keys)))
        .collect();
    for chunk in batches.chunks(8) {
        let mut commits = Vec::new();
        for &(lo, hi) in chunk {
            let mut w = client.new_multi_writer();
            for k in lo..hi {
                w.add_create(&path(k), value, &options)
                    .map_err(|e| format!("prefill {}: {e}", path(k)))?;
            }
            commits.push(w.commit());
        }
        for c in commits {
            c.await.map_err(|e| format!("ZooKeeper prefill: {e}"))?;
        }
    }
    Ok(())
}
