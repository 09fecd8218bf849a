//! The Chirper server (the engine's service kit, [`engine::serve::partitioned`]).
//!
//! ```text
//! chirper-server                                  in-process deployment, commands on stdin
//! chirper-server --config FILE --node N           one node of a TCP deployment
//!                [--metrics-addr 127.0.0.1:9100]  ... serving Prometheus metrics at /metrics
//!                [--checkpoint-every N]           ... checkpointing every N commands
//!                [--insecure]                     ... without authentication (no secret_file)
//! chirper-server --write-config FILE [--scheme ds-smr --partitions 2 --replicas 3 ...]
//!                [--durability memory|disk --data-dir DIR] [--tls]
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
//! rebuild their partitions and the oracle by replaying the logs from the start).
//! `--write-config --durability disk` therefore also writes `trim = false`.
//!
//! With `--checkpoint-every N` a replica merges its logs itself, takes part in checkpoints
//! (asking for one every N handled multicasts, and at least every 10 s while it handles
//! any), reports them so that the logs are trimmed below every replica's checkpoint, and,
//! when it finds a log trimmed past it (restarted empty, or cut off too long), recovers by
//! state transfer from a peer (see `engine::partitioned::replica`). Give it to every
//! replica of a deployment; without it nothing changes. With `--metrics-addr` a replica also
//! serves `chorus_replica_state_hash`, equal at the replicas of a group that handled the same
//! stream.
//!
//! Commands on stdin: `create U`, `post U TEXT`, `follow A B`, `unfollow A B`, `timeline U`,
//! `quit`.

fn main() -> std::process::ExitCode {
    engine::serve::partitioned::server::<chirper::service::Chirper>()
}
