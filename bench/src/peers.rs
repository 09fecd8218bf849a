//! `bench peers`: Chorus against etcd and ZooKeeper on the same machine, in the same run.
//!
//! Each system runs as three server processes on loopback and gets the same closed-loop load:
//! `clients` client sessions, each keeping `outstanding` requests in flight, writes and reads
//! of `value_bytes`-byte values over `keys` keys (all written before measuring), in the
//! write shares asked for (default 100%, 50% and 5% writes). Systems run one after another, so
//! they never share the CPU with each other; the load generator runs in this process for all.
//!
//! * `chorus-memory`, `chorus-disk`: the replicated B+-tree (`btree-server` processes, logs in
//!   memory or in fsynced write-ahead files), clients over the groups TCP runtime; reads are
//!   `Get` commands ordered through the logs like writes (linearizable). Needs nothing else.
//!   Every deployment authenticates its links with a generated secret.
//! * `chorus-memory-tls` (not in the default list): `chorus-memory` with mutual TLS on every
//!   link, to measure what TLS costs.
//! * `chorus-memory-ri`: `chorus-memory` with reads served off the log: a client sends a
//!   `Get` to one replica, which answers after a read index (every log's acceptors asked for
//!   their accepted index, a majority's largest kept), the way etcd serves its default
//!   linearizable Range with ReadIndex.
//! * `etcd`, `zookeeper`: the Debian packages `etcd-server` and `zookeeper` (installed with
//!   apt-get when missing, unless `--no-install`), driven with the `etcd-client` and
//!   `zookeeper-client` crates. These need bench's `peers` cargo feature (etcd-client's build
//!   runs `protoc`).
//!
//! Output: a table (throughput, p50/p99 latency, Chorus's throughput as a multiple of each
//! peer's), `peers.json` and SVG plots of throughput against offered load (clients x
//! outstanding).
//!
//! YCSB: the core workloads A-F ([`btree_service::ycsb`], published parameters: 1000 records
//! of 10 x 100 bytes, Zipfian 0.99 or latest) on Chorus (memory and disk) and, for the
//! workloads that map onto a key-value API (A, B, C, D, F: no scans), on etcd; each workload
//! on a freshly loaded cluster, `clients` sessions x `ycsb_outstanding` requests in flight;
//! reported as YCSB does (throughput, per-operation p50/p95/p99) in a second table and
//! `peers-ycsb.json`. ZooKeeper is not run on YCSB (its znodes are not a key-value store with
//! YCSB's records; the mixes above cover it).

mod chorus;
mod procs;

#[cfg(feature = "peers")]
mod etcd;
#[cfg(feature = "peers")]
mod tokio_load;
#[cfg(feature = "peers")]
mod zk;

use crate::machine::Machine;
use crate::report::{self, Series, Table};
use btree_service::ycsb::{OpStats, YcsbParams, YcsbResult, YcsbWorkload};
use engine::psmr::proxy::Mode;
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    ChorusMemory,
    ChorusDisk,
    /// `chorus-disk` with one sync per storage call instead of group commit
    /// (`wal_group_commit = false`): what group commit is measured against.
    ChorusDiskSyncEach,
    /// `chorus-memory` with mutual TLS on every link (`--write-config --tls` certificates):
    /// the cost of TLS, measured against `chorus-memory`.
    ChorusMemoryTls,
    /// `chorus-memory` with reads served off the log: one replica answers a `Get` after a
    /// read index (a quorum round of accepted indexes), as etcd answers a linearizable Range.
    ChorusMemoryRi,
    Etcd,
    Zookeeper,
}

impl System {
    pub const ALL: [System; 7] = [
        System::ChorusMemory,
        System::ChorusDisk,
        System::ChorusDiskSyncEach,
        System::ChorusMemoryTls,
        System::ChorusMemoryRi,
        System::Etcd,
        System::Zookeeper,
    ];

    /// What `peers` measures when `--systems` is not given.
    pub const DEFAULT: [System; 5] = [
        System::ChorusMemory,
        System::ChorusMemoryRi,
        System::ChorusDisk,
        System::Etcd,
        System::Zookeeper,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::ChorusMemory => "chorus-memory",
            System::ChorusDisk => "chorus-disk",
            System::ChorusDiskSyncEach => "chorus-disk-sync-each",
            System::ChorusMemoryTls => "chorus-memory-tls",
            System::ChorusMemoryRi => "chorus-memory-ri",
            System::Etcd => "etcd",
            System::Zookeeper => "zookeeper",
        }
    }

    /// Whether a write is on disk (fsynced) at a majority before it is acknowledged.
    pub fn durability(self) -> &'static str {
        match self {
            System::ChorusMemory | System::ChorusMemoryTls | System::ChorusMemoryRi => {
                "memory (logs in RAM, no fsync)"
            }
            System::ChorusDisk => "fsync (write-ahead log per acceptor, group commit)",
            System::ChorusDiskSyncEach => "fsync (write-ahead log per acceptor, a sync per call)",
            System::Etcd => "fsync (WAL, snapshot every 100000 entries)",
            System::Zookeeper => "fsync (forceSync=yes, snapCount=100000)",
        }
    }

    pub fn client_library(self) -> &'static str {
        match self {
            System::ChorusMemory
            | System::ChorusDisk
            | System::ChorusDiskSyncEach
            | System::ChorusMemoryRi => "engine::psmr::proxy over groups TCP",
            System::ChorusMemoryTls => {
                "engine::psmr::proxy over groups TCP, mutual TLS 1.3 (rustls)"
            }
            System::Etcd => "etcd-client 0.21 (tonic gRPC)",
            System::Zookeeper => "zookeeper-client 0.11 (kezhuw, tokio)",
        }
    }

    pub fn read_path(self) -> &'static str {
        match self {
            System::ChorusMemory
            | System::ChorusDisk
            | System::ChorusDiskSyncEach
            | System::ChorusMemoryTls => "Get ordered through the consensus log like writes",
            System::ChorusMemoryRi => {
                "Get off the log after a read index (quorum of accepted indexes)"
            }
            System::Etcd => "Range, default linearizable (ReadIndex)",
            System::Zookeeper => "sync + getData, pipelined on one session",
        }
    }

    fn is_chorus(self) -> bool {
        matches!(
            self,
            System::ChorusMemory
                | System::ChorusDisk
                | System::ChorusDiskSyncEach
                | System::ChorusMemoryTls
                | System::ChorusMemoryRi
        )
    }
}

impl FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        engine::load::by_name(s, System::ALL, System::name, "system")
    }
}

/// What one `peers` run measures.
#[derive(Clone, Debug)]
pub struct Plan {
    pub systems: Vec<System>,
    /// Write shares in percent (the rest are reads).
    pub write_pcts: Vec<u32>,
    /// Requests each client keeps outstanding.
    pub outstanding: Vec<usize>,
    /// Client sessions (connections) per point.
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub keys: u64,
    pub value_bytes: usize,
    pub chorus_mode: Mode,
    pub chorus_workers: usize,
    /// Install missing Debian packages with apt-get (etcd and ZooKeeper only).
    pub install: bool,
    /// Runs of the whole plan (each system restarted per run); rows show medians.
    pub runs: usize,
    /// YCSB workloads (etcd runs those without scans).
    pub ycsb: Vec<YcsbWorkload>,
    pub ycsb_params: YcsbParams,
    /// Requests each client keeps outstanding in the YCSB runs.
    pub ycsb_outstanding: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            systems: System::DEFAULT.to_vec(),
            write_pcts: vec![100, 50, 5],
            outstanding: vec![1, 4, 16, 64],
            clients: 4,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(2),
            keys: 100_000,
            value_bytes: 100,
            chorus_mode: Mode::Smr,
            chorus_workers: 2,
            install: true,
            runs: 3,
            ycsb: YcsbWorkload::ALL.to_vec(),
            ycsb_params: YcsbParams::default(),
            ycsb_outstanding: 16,
        }
    }
}

/// Clients above this would overflow the client-index space one bench process reserves.
const MAX_CLIENTS: usize = 256;

impl Plan {
    /// Checks the plan, saying what is wrong (before anything is started).
    pub fn validate(&self) -> Result<(), String> {
        if self.systems.is_empty() {
            return Err("no systems to measure".into());
        }
        if let Some(p) = self.write_pcts.iter().find(|&&p| p > 100) {
            return Err(format!("write share {p}% is above 100%"));
        }
        if (self.write_pcts.is_empty() || self.outstanding.is_empty()) && self.ycsb.is_empty() {
            return Err(
                "no loads to measure (--writes and --outstanding, or --ycsb, need values)".into(),
            );
        }
        if self.ycsb_outstanding == 0 {
            return Err("YCSB outstanding requests per client must be at least 1".into());
        }
        if !self.ycsb.is_empty() {
            self.ycsb_params.validate()?;
        }
        if self.outstanding.contains(&0) {
            return Err("outstanding requests per client must be at least 1".into());
        }
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return Err(format!("clients must be 1 to {MAX_CLIENTS}"));
        }
        if self.keys == 0 || self.value_bytes == 0 {
            return Err("keys and value bytes must be at least 1".into());
        }
        if self.measure.is_zero() {
            return Err("the measured window must be longer than 0 s".into());
        }
        if self.runs == 0 {
            return Err("runs must be at least 1".into());
        }
        if self.chorus_workers == 0 {
            return Err("Chorus needs at least one worker".into());
        }
        check_built_for(&self.systems)
    }

    /// Workers per Chorus replica (smr runs exactly one).
    pub fn effective_chorus_workers(&self) -> usize {
        match self.chorus_mode {
            Mode::Smr => 1,
            _ => self.chorus_workers.max(1),
        }
    }

    fn points(&self) -> Vec<Point> {
        let mut v = Vec::new();
        for &write_pct in &self.write_pcts {
            for &outstanding in &self.outstanding {
                v.push(Point {
                    write_pct,
                    outstanding,
                });
            }
        }
        v
    }
}

/// etcd and ZooKeeper need the `peers` feature; say how to get it.
pub fn check_built_for(systems: &[System]) -> Result<(), String> {
    let peers: Vec<&str> = systems
        .iter()
        .filter(|s| !s.is_chorus())
        .map(|s| s.name())
        .collect();
    if cfg!(feature = "peers") || peers.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} need(s) bench's `peers` cargo feature (the etcd and ZooKeeper clients; etcd-client's \
         build needs protoc: apt-get install protobuf-compiler). Run\n  \
         cargo run --release -p bench --features peers -- peers\nor measure Chorus alone with \
         --systems chorus-memory,chorus-disk",
        peers.join(" and ")
    ))
}

/// Run by `cargo run` without the `peers` feature but asked for etcd or ZooKeeper: installs
/// protoc if missing (unless `--no-install`) and replaces this process with
/// `cargo run -p bench --features peers` on the same arguments. Returns only on failure, with
/// `why` (the missing feature) and what went wrong.
fn rebuild_with_feature(plan: &Plan, why: String) -> String {
    const GUARD: &str = "CHORUS_PEERS_REBUILT";
    let Ok(cargo) = std::env::var("CARGO") else {
        return why;
    };
    if std::env::var_os(GUARD).is_some() || !plan.install {
        return why;
    }
    if let Err(e) = procs::ensure(&procs::PROTOC, true) {
        return format!(
            "{why}
(could not install protoc: {e})"
        );
    }
    let release = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.ends_with("release")))
        .unwrap_or(true);
    eprintln!(
        "peers: this bench was built without the `peers` feature (the etcd and ZooKeeper \
         clients); rebuilding: cargo run{} -p bench --features peers -- ...",
        if release { " --release" } else { "" }
    );
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("run");
    if release {
        cmd.arg("--release");
    }
    cmd.args(["-p", "bench", "--features", "peers", "--"])
        .args(std::env::args_os().skip(1))
        .env(GUARD, "1");
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    format!(
        "{why}
(running cargo failed: {e})"
    )
}

/// One load: a write share and the requests each client keeps outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub write_pct: u32,
    pub outstanding: usize,
}

/// What one point measured.
#[derive(Clone, Debug)]
pub struct Measured {
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub completed: u64,
    pub errors: u64,
}

/// A row of `peers.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub system: &'static str,
    pub durability: &'static str,
    pub client_library: &'static str,
    pub read_path: &'static str,
    /// Chorus rows: the replication mode and workers per replica.
    pub chorus_mode: Option<String>,
    pub write_pct: u32,
    pub read_pct: u32,
    pub clients: usize,
    pub outstanding_per_client: usize,
    /// clients x outstanding: requests in flight.
    pub offered_load: usize,
    pub keys: u64,
    pub value_bytes: usize,
    pub measure_s: f64,
    pub throughput_ops_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Summed over the runs.
    pub completed: u64,
    pub errors: u64,
    /// Every run's throughput (the row's figures are medians over the runs).
    pub runs_throughput_ops_s: Vec<f64>,
    /// Chorus rows: throughput / etcd's at the same load.
    pub vs_etcd: Option<f64>,
    /// Chorus rows: throughput / ZooKeeper's at the same load.
    pub vs_zookeeper: Option<f64>,
}

fn load_name(write_pct: u32) -> String {
    match write_pct {
        100 => "100% writes".into(),
        0 => "100% reads".into(),
        50 => "50/50".into(),
        w if w < 50 => format!("{}% reads", 100 - w),
        w => format!("{w}% writes"),
    }
}

fn row(plan: &Plan, system: System, p: Point, m: &Measured) -> Row {
    Row {
        system: system.name(),
        durability: system.durability(),
        client_library: system.client_library(),
        read_path: system.read_path(),
        chorus_mode: system.is_chorus().then(|| {
            format!(
                "{}, {} worker(s)",
                plan.chorus_mode.name(),
                plan.effective_chorus_workers()
            )
        }),
        write_pct: p.write_pct,
        read_pct: 100 - p.write_pct,
        clients: plan.clients,
        outstanding_per_client: p.outstanding,
        offered_load: plan.clients * p.outstanding,
        keys: plan.keys,
        value_bytes: plan.value_bytes,
        measure_s: plan.measure.as_secs_f64(),
        throughput_ops_s: m.throughput_ops_s,
        p50_us: m.p50_us,
        p99_us: m.p99_us,
        completed: m.completed,
        errors: m.errors,
        runs_throughput_ops_s: vec![m.throughput_ops_s],
        vs_etcd: None,
        vs_zookeeper: None,
    }
}

/// Fills in the Chorus rows' ratios to the peers' rows at the same load.
pub fn add_ratios(rows: &mut [Row]) {
    let find = |rows: &[Row], system: &str, r: &Row| {
        rows.iter()
            .find(|x| {
                x.system == system
                    && x.write_pct == r.write_pct
                    && x.outstanding_per_client == r.outstanding_per_client
                    && x.clients == r.clients
            })
            .map(|x| x.throughput_ops_s)
    };
    let ratio = |a: f64, b: Option<f64>| b.filter(|&b| b > 0.0 && a.is_finite()).map(|b| a / b);
    for i in 0..rows.len() {
        if !rows[i].system.starts_with("chorus") {
            continue;
        }
        let e = find(rows, "etcd", &rows[i]);
        let z = find(rows, "zookeeper", &rows[i]);
        rows[i].vs_etcd = ratio(rows[i].throughput_ops_s, e);
        rows[i].vs_zookeeper = ratio(rows[i].throughput_ops_s, z);
    }
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "system", "load", "clients", "outst", "ops/s", "p50 us", "p99 us", "errors", "vs etcd",
        "vs zk",
    ]);
    let x = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
    for r in rows {
        t.row(vec![
            r.system.into(),
            load_name(r.write_pct),
            r.clients.to_string(),
            r.outstanding_per_client.to_string(),
            format!("{:.0}", r.throughput_ops_s),
            format!("{:.0}", r.p50_us),
            format!("{:.0}", r.p99_us),
            r.errors.to_string(),
            x(r.vs_etcd),
            x(r.vs_zookeeper),
        ]);
    }
    t
}

/// Measures every system of the plan at every point, one system at a time.
fn measure_system(
    plan: &Plan,
    system: System,
    report: &mut dyn FnMut(Point, Result<Measured, String>),
    report_ycsb: &mut dyn FnMut(YcsbWorkload, Result<YcsbResult, String>),
) -> Result<(), String> {
    let points = plan.points();
    match system {
        System::ChorusMemory
        | System::ChorusDisk
        | System::ChorusDiskSyncEach
        | System::ChorusMemoryTls
        | System::ChorusMemoryRi => {
            let logs = match system {
                System::ChorusDisk => chorus::Logs::Disk,
                System::ChorusDiskSyncEach => chorus::Logs::DiskSyncEach,
                _ => chorus::Logs::Memory,
            };
            let durable = logs != chorus::Logs::Memory;
            let tls = system == System::ChorusMemoryTls;
            if !points.is_empty() {
                let mut cluster = chorus::Cluster::start(plan, logs, tls)?;
                cluster.fast_reads = system == System::ChorusMemoryRi;
                eprintln!(
                    "peers: {} up ({} btree-server processes)",
                    system.name(),
                    cluster.processes()
                );
                for p in points {
                    let m = cluster.measure(plan, p);
                    report(p, m);
                }
                if durable {
                    eprintln!(
                        "peers: {} wrote {:.1} MiB of log files",
                        system.name(),
                        cluster.disk_bytes() as f64 / (1 << 20) as f64
                    );
                }
            }
            for &w in &plan.ycsb {
                let m = chorus::Cluster::start_ycsb(plan, logs, tls).and_then(|mut c| {
                    c.fast_reads = system == System::ChorusMemoryRi;
                    c.measure_ycsb(plan, w)
                });
                report_ycsb(w, m);
            }
            Ok(())
        }
        #[cfg(feature = "peers")]
        System::Etcd => etcd::run_system(plan, &points, report)
            .and_then(|()| etcd::run_ycsb(plan, &plan.ycsb, report_ycsb)),
        #[cfg(feature = "peers")]
        System::Zookeeper => zk::run_system(plan, &points, report),
        #[cfg(not(feature = "peers"))]
        System::Etcd | System::Zookeeper => check_built_for(&[system]),
    }
}

/// Runs the plan, prints the table, writes `peers.json` and the plots into `out`. Errors of
/// single systems or points are reported and the rest goes on; the result is an error if any
/// happened (after the files are written).
pub fn run(plan: &Plan, out: &Path, machine: &Machine) -> Result<Vec<Row>, String> {
    if let Err(e) = check_built_for(&plan.systems) {
        return Err(rebuild_with_feature(plan, e));
    }
    plan.validate()?;
    procs::install_signal_handler()?;
    let mut samples: Vec<(System, Point, Measured)> = Vec::new();
    let mut ycsb_samples: Vec<(System, YcsbResult)> = Vec::new();
    let mut failures = Vec::new();
    #[cfg_attr(not(feature = "peers"), allow(unused_mut))]
    let mut versions: Vec<String> = Vec::new();
    for r in 0..plan.runs {
        for &system in &plan.systems {
            eprintln!(
                "peers: run {}/{}: starting {}",
                r + 1,
                plan.runs,
                system.name()
            );
            let mut report = |p: Point, m: Result<Measured, String>| match m {
                Ok(m) => {
                    eprintln!(
                        "peers: {} {} x{}: {:.0} ops/s, p50 {:.0} us, p99 {:.0} us{}",
                        system.name(),
                        load_name(p.write_pct),
                        p.outstanding,
                        m.throughput_ops_s,
                        m.p50_us,
                        m.p99_us,
                        if m.errors > 0 {
                            format!(", {} errors", m.errors)
                        } else {
                            String::new()
                        }
                    );
                    samples.push((system, p, m));
                }
                Err(e) => {
                    procs::stop_if_interrupted();
                    eprintln!("peers: {} {p:?}: {e}", system.name());
                    failures.push(format!("{} {p:?}: {e}", system.name()));
                }
            };
            let mut ycsb_failures = Vec::new();
            let mut report_ycsb = |w: YcsbWorkload, m: Result<YcsbResult, String>| match m {
                Ok(m) => {
                    eprintln!(
                        "peers: {} {}: {:.0} ops/s{}",
                        system.name(),
                        w.name(),
                        m.throughput_ops_s,
                        if m.errors > 0 {
                            format!(", {} errors", m.errors)
                        } else {
                            String::new()
                        }
                    );
                    ycsb_samples.push((system, m));
                }
                Err(e) => {
                    procs::stop_if_interrupted();
                    eprintln!("peers: {} {}: {e}", system.name(), w.name());
                    ycsb_failures.push(format!("{} {}: {e}", system.name(), w.name()));
                }
            };
            let result = measure_system(plan, system, &mut report, &mut report_ycsb);
            failures.extend(ycsb_failures);
            procs::stop_if_interrupted();
            if let Err(e) = result {
                eprintln!("peers: {}: {e}", system.name());
                failures.push(format!("{}: {e}", system.name()));
            }
            #[cfg(feature = "peers")]
            if r == 0 {
                match system {
                    System::Etcd => versions.push(etcd::version()),
                    System::Zookeeper => versions.push(zk::version()),
                    _ => {}
                }
            }
        }
    }
    let mut rows = medians(plan, &samples);
    add_ratios(&mut rows);
    if !rows.is_empty() {
        println!("{}", table(&rows).render());
        write_outputs(plan, &rows, &versions, out, machine);
    }
    let ycsb_rows = ycsb_medians(plan, &ycsb_samples);
    if !ycsb_rows.is_empty() {
        println!("{}", ycsb_table(&ycsb_rows).render());
        write_ycsb(plan, &ycsb_rows, &versions, out, machine);
    }
    if failures.is_empty() {
        Ok(rows)
    } else {
        Err(format!(
            "{} failure(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

/// One row per system and point: medians over the runs of throughput, p50 and p99 (each its
/// own median), completions and errors summed, every run's throughput kept.
fn medians(plan: &Plan, samples: &[(System, Point, Measured)]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &system in &plan.systems {
        for p in plan.points() {
            let runs: Vec<&Measured> = samples
                .iter()
                .filter(|(s, q, _)| *s == system && *q == p)
                .map(|(_, _, m)| m)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let med = |f: fn(&Measured) -> f64| {
                report::median(&runs.iter().map(|m| f(m)).collect::<Vec<_>>())
            };
            let m = Measured {
                throughput_ops_s: med(|m| m.throughput_ops_s),
                p50_us: med(|m| m.p50_us),
                p99_us: med(|m| m.p99_us),
                completed: runs.iter().map(|m| m.completed).sum(),
                errors: runs.iter().map(|m| m.errors).sum(),
            };
            let mut r = row(plan, system, p, &m);
            r.runs_throughput_ops_s = runs.iter().map(|m| m.throughput_ops_s).collect();
            rows.push(r);
        }
    }
    rows
}

fn write_outputs(plan: &Plan, rows: &[Row], versions: &[String], out: &Path, machine: &Machine) {
    let mut notes = vec![
        format!(
            "every system: 3 server processes on loopback; {} client sessions x outstanding \
             requests, closed loop, from one bench process; {} keys written before measuring, \
             values of {} bytes; uniform keys; warm-up {:.1} s, measured {:.1} s per point; \
             medians of {} runs (every system restarted per run, systems interleaved)",
            plan.clients,
            plan.keys,
            plan.value_bytes,
            plan.warmup.as_secs_f64(),
            plan.measure.as_secs_f64(),
            plan.runs
        ),
        format!(
            "Chorus: replicated B+-tree, mode {}, {} worker(s) per replica, each replica also an \
             acceptor (f = 1); writes are Update, reads Get, both ordered through the logs",
            plan.chorus_mode.name(),
            plan.effective_chorus_workers()
        ),
        "etcd: Put and linearizable Range (default); ZooKeeper: setData and sync+getData \
         pipelined on the session (sync is not quorum-acknowledged: see ZOOKEEPER-1675)"
            .into(),
    ];
    notes.extend(versions.iter().cloned());
    let results = report::Results {
        experiment: "peers",
        machine,
        notes,
        rows,
    };
    results.save(out);
    let mut all = Vec::new();
    for &w in &plan.write_pcts {
        let mut series = Vec::new();
        for s in &plan.systems {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.system == s.name() && r.write_pct == w)
                .map(|r| (r.offered_load as f64, r.throughput_ops_s))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{} {}", s.name(), load_name(w)),
                    points,
                });
            }
        }
        let path = out.join(format!("peers-writes-{w}.svg"));
        let title = format!("{}: throughput vs requests in flight", load_name(w));
        report::draw_chart(
            &path,
            &title,
            "requests in flight (clients x outstanding)",
            "operations / s",
            &series,
        );
        all.extend(series);
    }
    let path = out.join("peers.svg");
    report::draw_chart(
        &path,
        "Chorus vs etcd vs ZooKeeper: throughput vs requests in flight",
        "requests in flight (clients x outstanding)",
        "operations / s",
        &all,
    );
}

/// A row of `peers-ycsb.json`: one system on one YCSB workload, medians over the runs.
#[derive(Clone, Debug, Serialize)]
pub struct YcsbRow {
    pub system: &'static str,
    pub workload: &'static str,
    pub records: u64,
    pub record_bytes: usize,
    pub clients: usize,
    pub outstanding_per_client: usize,
    pub throughput_ops_s: f64,
    /// Per operation type (medians of each figure over the runs).
    pub operations: Vec<OpStats>,
    pub errors: u64,
    pub runs_throughput_ops_s: Vec<f64>,
    /// Chorus rows: throughput / etcd's on the same workload.
    pub vs_etcd: Option<f64>,
}

fn ycsb_medians(plan: &Plan, samples: &[(System, YcsbResult)]) -> Vec<YcsbRow> {
    let mut rows = Vec::new();
    for &system in &plan.systems {
        for &w in &plan.ycsb {
            let runs: Vec<&YcsbResult> = samples
                .iter()
                .filter(|(s, r)| *s == system && r.workload == w)
                .map(|(_, r)| r)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let tp: Vec<f64> = runs.iter().map(|r| r.throughput_ops_s).collect();
            let mut operations: Vec<OpStats> = Vec::new();
            for name in btree_service::ycsb::OpKind::ALL.map(|k| k.name()) {
                let per: Vec<&OpStats> = runs
                    .iter()
                    .filter_map(|r| r.operations.iter().find(|o| o.operation == name))
                    .collect();
                if per.is_empty() {
                    continue;
                }
                let med = |f: fn(&OpStats) -> f64| {
                    report::median(&per.iter().map(|o| f(o)).collect::<Vec<_>>())
                };
                operations.push(OpStats {
                    operation: name,
                    count: per.iter().map(|o| o.count).sum(),
                    ops_s: med(|o| o.ops_s),
                    p50_us: med(|o| o.p50_us),
                    p95_us: med(|o| o.p95_us),
                    p99_us: med(|o| o.p99_us),
                });
            }
            rows.push(YcsbRow {
                system: system.name(),
                workload: w.name(),
                records: plan.ycsb_params.records,
                record_bytes: plan.ycsb_params.record_bytes(),
                clients: plan.clients,
                outstanding_per_client: plan.ycsb_outstanding,
                throughput_ops_s: report::median(&tp),
                operations,
                errors: runs.iter().map(|r| r.errors).sum(),
                runs_throughput_ops_s: tp,
                vs_etcd: None,
            });
        }
    }
    let snapshot = rows.clone();
    for r in rows.iter_mut().filter(|r| r.system.starts_with("chorus")) {
        r.vs_etcd = snapshot
            .iter()
            .find(|e| e.system == "etcd" && e.workload == r.workload)
            .filter(|e| e.throughput_ops_s > 0.0)
            .map(|e| r.throughput_ops_s / e.throughput_ops_s);
    }
    rows
}

pub fn ycsb_table(rows: &[YcsbRow]) -> Table {
    let mut t = Table::new(&[
        "workload",
        "system",
        "ops/s",
        "vs etcd",
        "operation",
        "p50 us",
        "p95 us",
        "p99 us",
        "errors",
    ]);
    for r in rows {
        for (i, o) in r.operations.iter().enumerate() {
            let first = i == 0;
            t.row(vec![
                if first {
                    r.workload.into()
                } else {
                    String::new()
                },
                if first {
                    r.system.into()
                } else {
                    String::new()
                },
                if first {
                    format!("{:.0}", r.throughput_ops_s)
                } else {
                    String::new()
                },
                match (first, r.vs_etcd) {
                    (true, Some(x)) => format!("{x:.2}x"),
                    (true, None) => "-".into(),
                    _ => String::new(),
                },
                o.operation.into(),
                format!("{:.0}", o.p50_us),
                format!("{:.0}", o.p95_us),
                format!("{:.0}", o.p99_us),
                if first {
                    r.errors.to_string()
                } else {
                    String::new()
                },
            ]);
        }
    }
    t
}

fn write_ycsb(plan: &Plan, rows: &[YcsbRow], versions: &[String], out: &Path, machine: &Machine) {
    let p = &plan.ycsb_params;
    let mut notes = vec![
        format!(
            "YCSB core workloads, published parameters: {} records of {} fields x {} bytes (one value of {} bytes per key: updates and inserts write the whole record), Zipfian constant {} (scrambled) or latest, scans of 1..={} records (uniform), insertorder ordered",
            p.records, p.fields, p.field_bytes, p.record_bytes(), p.theta, p.max_scan_len
        ),
        format!(
            "each workload on a freshly loaded cluster (3 server processes on loopback); {} sessions x {} requests in flight from one bench process; warm-up {:.1} s, measured {:.1} s; medians of {} runs",
            plan.clients,
            plan.ycsb_outstanding,
            plan.warmup.as_secs_f64(),
            plan.measure.as_secs_f64(),
            plan.runs
        ),
        format!(
            "Chorus: mode {}, {} worker(s) per replica; reads are Get ordered through the logs; read-modify-write: Get then Update; etcd: Range (linearizable) and Put, read-modify-write a Range then a Put; etcd runs A, B, C, D, F (no scans in a key-value API)",
            plan.chorus_mode.name(),
            plan.effective_chorus_workers()
        ),
    ];
    notes.extend(versions.iter().cloned());
    let results = report::Results {
        experiment: "peers-ycsb",
        machine,
        notes,
        rows,
    };
    results.save(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_parse_and_plans_are_checked() {
        assert_eq!("chorus-disk".parse::<System>(), Ok(System::ChorusDisk));
        assert!("mongo".parse::<System>().unwrap_err().contains("one of"));
        assert!(Plan::default().points().len() == 12);
        let bad = |f: fn(&mut Plan)| {
            let mut p = Plan {
                systems: vec![System::ChorusMemory],
                ..Plan::default()
            };
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.write_pcts = vec![101]).contains("above 100%"));
        assert!(bad(|p| p.outstanding = vec![0]).contains("at least 1"));
        assert!(bad(|p| p.clients = 0).contains("clients"));
        assert!(bad(|p| p.systems.clear()).contains("no systems"));
        let chorus_only = Plan {
            systems: vec![System::ChorusMemory, System::ChorusDisk],
            ..Plan::default()
        };
        assert!(chorus_only.validate().is_ok());
        let with_etcd = Plan {
            systems: vec![System::Etcd],
            ..Plan::default()
        };
        assert_eq!(with_etcd.validate().is_ok(), cfg!(feature = "peers"));
        if !cfg!(feature = "peers") {
            assert!(with_etcd
                .validate()
                .unwrap_err()
                .contains("--features peers"));
        }
    }

    #[test]
    fn ratios_pair_rows_of_the_same_load() {
        let plan = Plan::default();
        let m = |t: f64| Measured {
            throughput_ops_s: t,
            p50_us: 1.0,
            p99_us: 2.0,
            completed: 1,
            errors: 0,
        };
        let p = |w, o| Point {
            write_pct: w,
            outstanding: o,
        };
        let mut rows = vec![
            row(&plan, System::ChorusMemory, p(100, 4), &m(3000.0)),
            row(&plan, System::ChorusMemory, p(50, 4), &m(5000.0)),
            row(&plan, System::Etcd, p(100, 4), &m(1000.0)),
            row(&plan, System::Zookeeper, p(100, 4), &m(1500.0)),
            row(&plan, System::Zookeeper, p(50, 4), &m(0.0)),
        ];
        add_ratios(&mut rows);
        assert_eq!(rows[0].vs_etcd, Some(3.0));
        assert_eq!(rows[0].vs_zookeeper, Some(2.0));
        assert_eq!(rows[1].vs_etcd, None);
        assert_eq!(rows[1].vs_zookeeper, None, "no ratio to a zero");
        assert_eq!(rows[2].vs_etcd, None, "peers get no ratio");
        let text = table(&rows).render();
        assert!(text.contains("3.00x") && text.contains("2.00x"), "{text}");
        assert_eq!(load_name(5), "95% reads");
        assert_eq!(load_name(50), "50/50");
    }

    /// The Chorus side end to end on a tiny configuration: three `btree-server` processes, a
    /// second of closed-loop load, rows with a throughput, files written, processes gone.
    #[test]
    fn chorus_side_measures_a_tiny_cluster() {
        let plan = Plan {
            systems: vec![System::ChorusMemory],
            write_pcts: vec![50],
            outstanding: vec![2],
            clients: 2,
            warmup: Duration::from_millis(300),
            measure: Duration::from_millis(700),
            keys: 1000,
            value_bytes: 100,
            runs: 2,
            ycsb: vec![YcsbWorkload::F],
            ycsb_params: YcsbParams {
                records: 200,
                ..YcsbParams::default()
            },
            ycsb_outstanding: 2,
            ..Plan::default()
        };
        let out = procs::TempDir::new("test-out").unwrap();
        let machine = Machine::detect();
        let rows = run(&plan, out.path(), &machine).unwrap();
        let ycsb: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("peers-ycsb.json")).unwrap(),
        )
        .unwrap();
        let y = &ycsb["rows"][0];
        assert_eq!(y["workload"], "ycsb-f", "{y}");
        assert_eq!(y["errors"], 0, "{y}");
        let ops: Vec<&str> = y["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["operation"].as_str().unwrap())
            .collect();
        assert_eq!(ops, ["READ", "READ-MODIFY-WRITE"], "{y}");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert!(r.completed > 10, "{r:?}");
        assert_eq!(r.runs_throughput_ops_s.len(), 2, "{r:?}");
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{r:?}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("peers.json")).unwrap())
                .unwrap();
        let row = &json["rows"][0];
        assert_eq!(row["system"], "chorus-memory");
        for field in [
            "throughput_ops_s",
            "p50_us",
            "p99_us",
            "write_pct",
            "clients",
        ] {
            assert!(row[field].is_number(), "{field} in {row}");
        }
        assert!(out.path().join("peers.svg").exists());
        assert!(out.path().join("peers-writes-50.svg").exists());
    }
}
