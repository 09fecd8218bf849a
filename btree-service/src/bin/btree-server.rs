//! The replicated B+-tree server (the engine's service kit, [`engine::serve::psmr`]).
//!
//! ```text
//! btree-server                                  in-process cluster of 3 replicas, commands on stdin
//! btree-server --config FILE --node N           one node of a TCP deployment (replica or acceptor)
//!              [--metrics-addr 127.0.0.1:9100]  ... serving Prometheus metrics at /metrics
//!              [--checkpoint-every N]           ... checkpointing every N commands
//!              [--insecure]                     ... without authentication (no secret_file)
//! btree-server --write-config FILE [--replicas 3 --workers 4 --clients 2 --base-port 7300]
//!              [--mode smr|psmr|opt-psmr] [--durability memory|disk --data-dir DIR] [--tls]
//! ```
//!
//! `--write-config` also writes a random cluster secret beside FILE (mode 0600), so the nodes
//! authenticate their links; `--tls` adds a cluster CA and a certificate per node for mutual
//! TLS. A node of a file that names no secret refuses to start unless given `--insecure`.
//!
//! A TCP node keeps its consensus logs as the deployment file's `durability` says (see
//! [`groups::config::Durability`]): in memory (the default), or with `durability = "disk"` in
//! write-ahead files under `<data_dir>/node-N/`, synced before acknowledging, so that a whole
//! deployment restarted on the same files still holds every acknowledged command (replicas
//! rebuild the tree by replaying the logs from the start). `--write-config --durability disk`
//! therefore also writes `trim = false`: without durable checkpoints a trimmed log could not be
//! replayed.
//!
//! Commands on stdin: `get K`, `put K V`, `update K V`, `del K`, `scan LO HI [LIMIT]`, `size`,
//! `rebalance`, `quit`.

fn main() -> std::process::ExitCode {
    engine::serve::psmr::server::<btree_service::service::TreeService>()
}
