//! # Fault campaigns with real processes
//!
//! Starts the replicated B+-tree as a cluster of three `btree-server` processes (each a replica
//! and an acceptor of every log, with durable logs so a killed node restarts and replays),
//! drives it from several clients of one in-process TCP client node that record every
//! invocation and response with wall-clock times, injects one fault per run and checks:
//!
//! 1. the history is linearizable (`engine::lincheck` against [`model::TreeModel`]);
//! 2. the final replica states are equal: every replica's answer to a final full scan (the
//!    tree's whole content at one point of the total order) is the same, from all three;
//! 3. no acknowledged write is lost ([`model::lost_acks`] against the final scan);
//! 4. no server process died except the one the fault killed;
//!
//! and measures, when the fault took out a leader, the time from the fault to the first reply
//! to a command submitted after it, on every log the victim led (the failover time; a probe
//! client per such log reads through it without pause), and the time until the other nodes'
//! metrics show a new leader for those logs.
//!
//! Faults ([`Fault`]): SIGKILL of the leader of the global log (the log covering every group,
//! which every worker of every replica reads) or of a follower of a random log (restarted from
//! its durable logs after a few seconds; in this layout every node leads one of the three
//! logs, so the follower leads another), SIGSTOP then SIGCONT of the global log's leader, a
//! partition of a random node in a network namespace (its veth link down for a few seconds),
//! packet loss on the global log leader's link (`tc netem`, or an nftables `numgen random`
//! drop rule where the kernel has no netem) and delay (`tc netem`). Where the machine has no
//! namespaces (no root, no iproute2), no netem or no nftables, the partition, loss and delay
//! go through a userspace relay per link ([`relay`]) instead, so every fault runs with
//! nothing but the toolchain installed. Then the hostile ones: `partial-frames` (raw
//! connections pinning 16 MiB partial frames on the leader; its resident set must stay
//! bounded), `fd-exhaust` (the leader's open-file limit lowered and exhausted by idle
//! connections; its listener must recover and serve a new client), and `wipe-data` (a node's
//! data directory deleted under it: it must refuse to restart without [`RECOVER_FLAG`] and
//! rejoin with it; a default fault since [`WIPE_DATA_IN_DEFAULT`]). Every run says which
//! mechanism it used. `kill-oracle` needs Chirper on DS-SMR: B+-tree runs report it as
//! skipped, the only skip there is.
//!
//! The same runs against Chirper on DS-SMR ([`chirper`]): nine `chirper-server` processes
//! (2 partitions x 3 replicas and an oracle of 3, durable logs), scale-out clients on a small
//! generated social graph, and the same checks: the history against
//! `chirper::model::ChirperModel`, every group's replicas with one state hash (from their
//! metrics), every acknowledged post in its author's final timeline, no collateral death.
//! `chirper-combined` runs the same deployment in combined mode (every partition replica runs
//! two worker threads, the users sharded over them by id: 2 partitions x 3 replicas x 2
//! workers), so commands of one worker, of two workers of one partition and of two
//! partitions all run under the fault.
//!
//! [`soak`] runs the B+-tree in durable mode as deployed (logs trimmed below durable
//! checkpoints) for a long time under repeated SIGKILLs (of a random server, of a server
//! writing a checkpoint, of the whole cluster), keeping every data directory below a stated
//! bound and every acknowledged write (`chorus-campaign soak --minutes 30`).

pub mod btree;
pub mod chirper;
pub mod model;
pub mod net;
pub mod procs;
pub mod relay;
mod run;
pub mod runner;
pub mod soak;
pub mod tap;

use serde::Serialize;
use std::path::PathBuf;

/// The one fault of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    KillLeader,
    KillFollower,
    KillOracle,
    Pause,
    Partition,
    Loss,
    Delay,
    /// Hostile peers: many raw connections to the global log leader's peer port, each sending
    /// a 16 MiB frame but its last byte (before or after a `Hello`), held, then closed.
    PartialFrames,
    /// The global log's leader, its open-file limit lowered, flooded with idle connections
    /// until its `accept` fails and its listen backlog is full; held, then closed.
    FdExhaust,
    /// SIGKILL a server, delete its data directory, restart it: refused without
    /// [`RECOVER_FLAG`], then restarted with it (it must rejoin).
    WipeData,
    /// Negative control, not a fault the system must survive: SIGKILL every server, delete
    /// their durable logs, restart them. Acknowledged writes are lost; the checks must fail.
    ControlWipeAll,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillOracle,
        Fault::Pause,
        Fault::Partition,
        Fault::Loss,
        Fault::Delay,
        Fault::PartialFrames,
        Fault::FdExhaust,
        Fault::WipeData,
        Fault::ControlWipeAll,
    ];

    /// The faults a campaign injects by default, in turn (what the CI tests run): every fault
    /// the system must survive but `kill-oracle` (Chirper only) and, unless
    /// [`WIPE_DATA_IN_DEFAULT`], `wipe-data`.
    pub fn defaults() -> Vec<Fault> {
        let mut v = vec![
            Fault::KillLeader,
            Fault::KillFollower,
            Fault::Pause,
            Fault::Partition,
            Fault::Loss,
            Fault::Delay,
            Fault::PartialFrames,
            Fault::FdExhaust,
        ];
        if WIPE_DATA_IN_DEFAULT {
            v.push(Fault::WipeData);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::KillOracle => "kill-oracle",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Loss => "loss",
            Fault::Delay => "delay",
            Fault::PartialFrames => "partial-frames",
            Fault::FdExhaust => "fd-exhaust",
            Fault::WipeData => "wipe-data",
            Fault::ControlWipeAll => "control-wipe-all",
        }
    }

    pub fn parse(s: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a fault (one of {})",
                    Fault::ALL.map(Fault::name).join(", ")
                )
            })
    }

    /// Parses a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
        let v: Vec<Fault> = s
            .split(',')
            .filter(|w| !w.trim().is_empty())
            .map(|w| Fault::parse(w.trim()))
            .collect::<Result<_, _>>()?;
        if v.is_empty() {
            return Err("no fault given".into());
        }
        Ok(v)
    }
}

/// Whether `wipe-data` is among the default faults (and so in the CI tests). On since the
/// servers refuse to start on a wiped data directory and rejoin with [`RECOVER_FLAG`]
/// (`groups::log::recovery`); on code without that, the run fails (by design: it reports the
/// missing refusal).
pub const WIPE_DATA_IN_DEFAULT: bool = true;

/// The server flag that restarts a node whose data directory is gone: it catches up from a
/// majority before it votes again. `wipe-data` first restarts the node without it (and expects
/// a refusal), then with it.
pub const RECOVER_FLAG: &str = "--recover";

/// The service a run deploys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    Btree,
    Chirper,
    /// Chirper on DynaStar (the same deployment, a random initial placement that the oracle
    /// repartitions during the run).
    ChirperDynastar,
    /// Chirper on DS-SMR in combined mode: two worker threads in every partition replica
    /// (2 partitions x 3 replicas x 2 workers, users sharded over the workers by id).
    ChirperCombined,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Btree => "btree",
            ServiceKind::Chirper => "chirper",
            ServiceKind::ChirperDynastar => "chirper-dynastar",
            ServiceKind::ChirperCombined => "chirper-combined",
        }
    }

    /// Whether the service has an oracle (Chirper on DS-SMR or DynaStar).
    pub fn is_chirper(self) -> bool {
        matches!(
            self,
            ServiceKind::Chirper | ServiceKind::ChirperDynastar | ServiceKind::ChirperCombined
        )
    }

    pub fn parse_list(s: &str) -> Result<Vec<ServiceKind>, String> {
        let v: Vec<ServiceKind> = s
            .split(',')
            .filter(|w| !w.trim().is_empty())
            .map(|w| match w.trim() {
                "btree" => Ok(ServiceKind::Btree),
                "chirper" => Ok(ServiceKind::Chirper),
                "chirper-dynastar" => Ok(ServiceKind::ChirperDynastar),
                "chirper-combined" => Ok(ServiceKind::ChirperCombined),
                other => Err(format!(
                    "{other:?} is not a service (btree, chirper, chirper-dynastar or chirper-combined)"
                )),
            })
            .collect::<Result<_, _>>()?;
        if v.is_empty() {
            return Err("no service given".into());
        }
        Ok(v)
    }
}

/// How a campaign runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub runs: usize,
    /// Index of the first run (runs `first_run..first_run + runs`; run `i` has seed
    /// `seed * 1000003 + i` and the `i`-th fault and service in turn): replays one run.
    pub first_run: usize,
    pub seed: u64,
    pub faults: Vec<Fault>,
    pub services: Vec<ServiceKind>,
    /// Scratch space for deployment files, durable logs and server logs (a directory per run,
    /// removed after a passing run, kept after a failing one).
    pub work_dir: PathBuf,
    /// Client threads (each with one command outstanding).
    pub clients: usize,
    /// The fault lasts this long (seconds; a killed node stays down this long).
    pub fault_secs: (f64, f64),
    /// Packet loss in percent (loss fault).
    pub loss_percent: u32,
    /// One-way delay (delay fault).
    pub delay_ms: u64,
    /// Where the JSON summary goes.
    pub json: Option<PathBuf>,
    /// Print progress within runs.
    pub verbose: bool,
}

impl Options {
    pub fn new(runs: usize, seed: u64) -> Options {
        Options {
            runs,
            first_run: 0,
            seed,
            faults: Fault::defaults(),
            services: vec![ServiceKind::Btree],
            work_dir: std::env::temp_dir().join(format!("chorus-campaign-{}", std::process::id())),
            clients: 3,
            fault_secs: (2.0, 3.5),
            loss_percent: 10,
            delay_ms: 40,
            json: None,
            verbose: false,
        }
    }
}

/// What one run did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub index: usize,
    pub seed: u64,
    pub service: String,
    pub fault: String,
    /// How the fault was injected (or why it was skipped).
    pub mechanism: String,
    pub skipped: bool,
    pub mode: String,
    pub victim: Option<u32>,
    /// Logs the victim led when the fault hit.
    pub victim_led_logs: Vec<u32>,
    pub completed_ops: usize,
    pub unknown_ops: usize,
    pub linearizable: String,
    /// Replica -> hash of its answer to the final full scan.
    pub final_hashes: Vec<(u32, String)>,
    pub states_equal: bool,
    pub lost_acks: usize,
    /// Fault to the first reply to a command submitted after it, on every log the victim led.
    pub failover_ms: Option<f64>,
    /// Fault to every log the victim led having a leader among the other nodes, as their
    /// metrics show it (the metrics refresh every 200 ms).
    pub new_leader_ms: Option<f64>,
    /// Operations completed while the fault was on (between its start and its healing).
    pub ops_during_fault: Option<usize>,
    /// The victim's resident set (`VmRSS` of /proc/PID/status) before the fault and its
    /// largest sample during it, in KiB (`partial-frames`).
    pub victim_rss_kib: Option<(u64, u64)>,
    /// The victim's open descriptors at most during the fault, and its open-file limit
    /// (`fd-exhaust`).
    pub victim_fds: Option<(u64, u64)>,
    /// From the end of the pressure to the victim's first reply to a client that connected
    /// after it (`fd-exhaust`), or to the restarted node serving again (`wipe-data`).
    pub recovery_ms: Option<f64>,
    /// DynaStar: placement chunks every partition replica applied by the end, summed (a
    /// repartition moved users during the run iff above 0).
    pub placement_chunks: Option<u64>,
    /// DynaStar: per oracle replica at the end, from its metrics: hint batches applied,
    /// placements computed, of which moved nothing, plans fully delivered.
    pub oracle_placements: Option<Vec<OraclePlacements>>,
    /// Combined mode: every partition replica's counts at the end, from its metrics.
    pub worker_handled: Option<Vec<CombinedCounts>>,
    pub seconds: f64,
    pub problems: Vec<String>,
}

/// A DynaStar oracle replica's repartitioning counts at the end of a run (`None`: its
/// metrics could not be read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OraclePlacements {
    pub node: u32,
    pub hint_batches: Option<u64>,
    pub placements: Option<u64>,
    pub empty: Option<u64>,
    pub plans: Option<u64>,
}

/// A combined-mode partition replica's counts at the end of a run (each worker must have
/// handled commands and be pinned, and commands must have crossed cells: executed over
/// several, or, DS-SMR's way, moved their objects into one).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CombinedCounts {
    pub node: u32,
    /// Delivered multicasts handled, by worker.
    pub handled: Vec<u64>,
    /// Commands executed over several cells (counted by each worker taking part).
    pub multi: u64,
    /// Objects moved into the partition's cells.
    pub moved_in: u64,
    /// Workers pinned to a CPU.
    pub pinned: usize,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The `btree-server` binary: `CHORUS_BTREE_SERVER`, or next to this executable (or its
/// parent, for test binaries under `deps/`), built with cargo if missing.
pub fn btree_server_binary() -> Result<PathBuf, String> {
    server_binary("CHORUS_BTREE_SERVER", "btree-service", "btree-server")
}

/// The `chirper-server` binary: `CHORUS_CHIRPER_SERVER`, or found (or built) as
/// [`btree_server_binary`] finds its binary.
pub fn chirper_server_binary() -> Result<PathBuf, String> {
    server_binary("CHORUS_CHIRPER_SERVER", "chirper", "chirper-server")
}

fn server_binary(env: &str, package: &str, name: &str) -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut dir = exe.parent().ok_or("no executable directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    if !bin.exists() {
        eprintln!("campaign: building {name} ({} is missing)", bin.display());
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", package, "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() || !bin.exists() {
            return Err(format!("could not build {}", bin.display()));
        }
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_refuse_unknown_words() {
        assert_eq!(
            Fault::parse_list("kill-leader, loss").unwrap(),
            vec![Fault::KillLeader, Fault::Loss]
        );
        assert!(Fault::parse_list("kill-leader,teleport")
            .unwrap_err()
            .contains("teleport"));
        assert!(Fault::parse_list("").is_err());
        assert_eq!(
            ServiceKind::parse_list("btree,chirper").unwrap(),
            vec![ServiceKind::Btree, ServiceKind::Chirper]
        );
        assert!(ServiceKind::parse_list("redis").is_err());
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.name()), Ok(f));
        }
    }
}
