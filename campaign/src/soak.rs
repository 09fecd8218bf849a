//! # Durable soak
//!
//! A long run of the replicated B+-tree in durable mode as it is deployed (`durability =
//! "disk"`, logs trimmed below durable checkpoints, a checkpoint every
//! [`SoakOptions::checkpoint_every`] commands): three `btree-server` processes under steady
//! load from recording clients, SIGKILLed again and again while the data directories are
//! measured, then checked as a campaign run is.
//!
//! Kills, one after another at random times ([`SoakOptions::kill_every`]): a random server at a
//! random moment; every third kill a server at the moment a checkpoint file of its is being
//! written (its `.tmp` file seen in its checkpoint directory; the kill records whether the
//! file was still unfinished when the process died); every
//! [`SoakOptions::whole_cluster_every`]-th kill all three servers at once. A killed server is
//! restarted from its data directory after [`SoakOptions::down`]; the soak records how it came
//! back (from which checkpoint round, by state transfer, or by replaying the logs) and when it
//! served its metrics again having done so.
//!
//! Each node's data directory (its write-ahead logs and its checkpoint files) is measured every
//! [`SAMPLE_EVERY`]; its peak must stay below the bound
//! `logs x 2 x wal_compact_bytes + (KEEP + 1) x checkpoint bytes + 64 KiB`: a write-ahead file
//! is compacted once it passes `wal_compact_bytes`, leaving what is not yet trimmed, and a
//! checkpoint directory holds `KEEP` files plus the one being written (the checkpoint size is
//! the largest any node reported).
//!
//! At the end: the history (single-key commands, so the checker splits it per key whatever
//! its length) must be linearizable, no acknowledged write may be lost, every replica's answer
//! to a final full scan must be the same, every log must have been trimmed (its first index
//! past 0 on every node) and no server may have died but by the soak's kills.

use crate::btree::{check_history, final_scan, start_servers, TreeClient, SERVERS, WORKERS};
use crate::chirper::{counter, labelled};
use crate::procs::{per_log, scrape, Scratch, Servers};
use crate::run::{self, Clients, NetKind, Network, Plan};
use crate::{Fault, Options, RunReport};
use btree_service::service::{TreeCommand, TreeConfig};
use bytes::Bytes;
use engine::checkpoint::disk::KEEP;
use engine::lincheck::Budget;
use engine::psmr::deployment::Deployment;
use engine::psmr::proxy::Mode;
use groups::config::Tuning;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Proxies per client thread (a command without a reply moves its thread to the next one).
const SLOTS_PER_THREAD: usize = 64;
/// How often the data directories are measured.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How long a restarted server has to load its state and serve its metrics.
const SERVE_PATIENCE: Duration = Duration::from_secs(60);
/// How long a checkpoint-write kill waits for a checkpoint file to be written before it
/// kills anyway (and says so).
const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);

/// The soak's tree: no pre-filled keys (the checker's state per key stays small), single-key
/// commands over a fixed key space, so the state, and with it a checkpoint, keeps a bounded
/// size.
fn tree() -> TreeConfig {
    TreeConfig {
        fanout: 16,
        key_space: 1024,
        prefill: 0,
        value_bytes: 8,
    }
}

/// How a soak runs.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long the load runs (the soak's own set-up and checks come on top).
    pub duration: Duration,
    pub seed: u64,
    /// Client threads, each with one command outstanding.
    pub clients: usize,
    /// Time between kills, drawn uniformly (seconds).
    pub kill_every: (f64, f64),
    /// How long a killed server stays down, drawn uniformly (seconds).
    pub down: (f64, f64),
    /// Every this many kills, all servers are killed at once (0: never).
    pub whole_cluster_every: usize,
    /// `--checkpoint-every` of the servers (commands).
    pub checkpoint_every: u64,
    /// The cluster's `wal_compact_bytes`.
    pub wal_compact_bytes: u64,
    /// Scratch space (removed after a passing soak, kept after a failing one).
    pub work_dir: PathBuf,
    /// Where the JSON report goes.
    pub json: Option<PathBuf>,
    pub verbose: bool,
}

impl SoakOptions {
    pub fn new(duration: Duration, seed: u64) -> SoakOptions {
        SoakOptions {
            duration,
            seed,
            clients: 4,
            kill_every: (6.0, 14.0),
            down: (0.5, 3.0),
            whole_cluster_every: 5,
            checkpoint_every: 500,
            wal_compact_bytes: 2 << 20,
            work_dir: std::env::temp_dir().join(format!("chorus-soak-{}", std::process::id())),
            json: None,
            verbose: false,
        }
    }

    /// Checks the options (a clear error for each bad one).
    pub fn validate(&self) -> Result<(), String> {
        let range = |(lo, hi): (f64, f64)| lo > 0.0 && lo <= hi && hi <= 600.0;
        if self.duration < Duration::from_secs(10) {
            return Err(format!(
                "a soak of {:?} is too short (10 s at least)",
                self.duration
            ));
        }
        if self.clients == 0 || self.clients > 16 {
            return Err(format!("{} clients (1 to 16)", self.clients));
        }
        if !range(self.kill_every) || !range(self.down) {
            return Err(format!(
                "kill every {:?} s, down {:?} s: each range must satisfy 0 < min <= max <= 600",
                self.kill_every, self.down
            ));
        }
        if self.checkpoint_every == 0 {
            return Err("checkpoint every 0 commands".into());
        }
        if self.wal_compact_bytes < 64 << 10 {
            return Err(format!(
                "wal_compact_bytes {} (64 KiB at least)",
                self.wal_compact_bytes
            ));
        }
        Ok(())
    }
}

/// One kill of the soak.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Kill {
    /// Seconds into the load.
    pub at_s: f64,
    pub nodes: Vec<u32>,
    /// Aimed at a checkpoint write (the victim killed as soon as its `.tmp` file appeared).
    pub at_checkpoint_write: bool,
    /// The victim's checkpoint `.tmp` file still existed after it died: killed mid-write.
    pub mid_write: bool,
    pub down_ms: f64,
    pub restarts: Vec<Restart>,
}

/// How a killed server came back.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    pub node: u32,
    pub from: CameBack,
    /// The checkpoint round it loaded (`from` = checkpoint).
    pub round: Option<u64>,
    /// From the process start to its metrics showing it had loaded its state.
    pub serving_ms: Option<f64>,
}

/// Where a restarted server's state came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameBack {
    /// Its newest valid checkpoint, loaded from its data directory.
    Checkpoint,
    /// A peer's checkpoint, installed by state transfer.
    StateTransfer,
    /// Its logs replayed (no checkpoint loaded or installed).
    LogReplay,
    /// It exited after its restart.
    Exited,
    /// It did not load its state in time.
    #[default]
    Never,
}

/// One measurement of the data directories.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at_s: f64,
    /// Bytes per node (logs and checkpoints).
    pub bytes: Vec<u64>,
}

/// What the soak did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    /// The checks, as a campaign run reports them (`problems` empty: passed).
    pub run: RunReport,
    pub load_seconds: f64,
    pub checkpoint_every: u64,
    pub wal_compact_bytes: u64,
    pub kills: Vec<Kill>,
    /// The data directory bound (see the module documentation).
    pub bound_bytes: u64,
    /// The largest checkpoint any node reported (bytes).
    pub checkpoint_bytes_max: u64,
    /// Each node's largest data directory.
    pub peak_bytes: Vec<(u32, u64)>,
    /// When the largest sample was taken (seconds into the load).
    pub peak_at_s: f64,
    pub samples: usize,
    /// A sample every 10 s (for a plot of size over time).
    pub series: Vec<Sample>,
    /// Every node's logs' first indexes at the end (log, index).
    pub first_indexes: Vec<(u32, Vec<(u32, f64)>)>,
    /// Checkpoint files each node wrote since its last start, at the end.
    pub checkpoints_written: Vec<(u32, u64)>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.run.passed()
    }

    /// One line per figure, for the terminal and the results files.
    pub fn summary(&self) -> String {
        let r = &self.run;
        let by = |p: &dyn Fn(&Kill) -> bool| self.kills.iter().filter(|k| p(k)).count();
        let mut froms: BTreeMap<CameBack, usize> = BTreeMap::new();
        for x in self.kills.iter().flat_map(|k| &k.restarts) {
            *froms.entry(x.from).or_default() += 1;
        }
        let mut serving: Vec<f64> = self
            .kills
            .iter()
            .flat_map(|k| &k.restarts)
            .filter_map(|x| x.serving_ms)
            .collect();
        serving.sort_by(f64::total_cmp);
        let median = serving.get(serving.len() / 2).copied().unwrap_or(f64::NAN);
        let worst = serving.last().copied().unwrap_or(f64::NAN);
        let peak = self.peak_bytes.iter().map(|p| p.1).max().unwrap_or(0);
        format!(
            "soak {}: {:.0} s of load (seed {}, {}), {} commands completed, {} unknown; {} kills \
             ({} of the whole cluster, {} at a checkpoint write, {} mid-write); restarts from: \
             {froms:?}, start to serving median {median:.0} ms, worst {worst:.0} ms; data \
             directory peak {} bytes ({:.1} MiB, at {:.0} s) against the bound {} bytes \
             ({:.1} MiB; checkpoints up to {} bytes, wal_compact_bytes {}); history {}; \
             {} acknowledged writes lost; replica states equal: {}{}",
            if self.passed() { "passed" } else { "FAILED" },
            self.load_seconds,
            r.seed,
            r.mode,
            r.completed_ops,
            r.unknown_ops,
            self.kills.len(),
            by(&|k| k.nodes.len() > 1),
            by(&|k| k.at_checkpoint_write),
            by(&|k| k.mid_write),
            peak,
            peak as f64 / (1 << 20) as f64,
            self.peak_at_s,
            self.bound_bytes,
            self.bound_bytes as f64 / (1 << 20) as f64,
            self.checkpoint_bytes_max,
            self.wal_compact_bytes,
            r.linearizable,
            r.lost_acks,
            r.states_equal,
            if r.problems.is_empty() {
                String::new()
            } else {
                format!("; problems: {:?}", r.problems)
            }
        )
    }
}

/// Bytes of the files under `path`, recursively (0 for a missing directory).
pub fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Whether node `n`'s checkpoint directory holds a file being written.
fn writing_checkpoint(data: &Path, n: u32) -> bool {
    std::fs::read_dir(data.join(format!("node-{n}.checkpoints")))
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        })
        .unwrap_or(false)
}

/// Runs the soak. `Err` only when it could not start; what it found is in the report.
pub fn soak(o: &SoakOptions) -> Result<SoakReport, String> {
    o.validate()?;
    let binary = crate::btree_server_binary()?;
    let dir = o.work_dir.clone();
    let _ = std::fs::remove_dir_all(&dir);
    let mut scratch = Scratch::new(&dir)?;
    let mut s = SoakReport {
        checkpoint_every: o.checkpoint_every,
        wal_compact_bytes: o.wal_compact_bytes,
        run: RunReport {
            seed: o.seed,
            service: "btree".into(),
            fault: "soak".into(),
            mechanism: "SIGKILL of random servers, of a server writing a checkpoint and of the \
                        whole cluster, each restarted from its data directory"
                .into(),
            ..RunReport::default()
        },
        ..SoakReport::default()
    };
    let started = Instant::now();
    if let Err(e) = drive(o, &binary, &dir, &mut s) {
        s.run.problems.push(e);
    }
    s.run.seconds = started.elapsed().as_secs_f64();
    if !s.passed() {
        scratch.keep();
        s.run
            .problems
            .push(format!("files and server logs kept in {}", dir.display()));
    }
    if let Some(path) = &o.json {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let text = serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(s)
}

fn drive(o: &SoakOptions, binary: &Path, dir: &Path, s: &mut SoakReport) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let mode = if rng.random_bool(0.5) {
        Mode::Psmr
    } else {
        Mode::OptPsmr
    };
    s.run.mode = mode.name().into();
    let tuning = Tuning {
        trim: true,
        wal_compact_bytes: o.wal_compact_bytes,
        ..Tuning::default()
    };
    let d = Deployment::new(SERVERS.len(), 1, WORKERS, 1, tuning).map_err(|e| e.to_string())?;
    let me = d.clients[0];
    let client_ids: Vec<u32> = d.clients.iter().map(|c| c.0).collect();
    let base = run::durable(&d.config, dir, Fault::KillFollower)?;
    let logs = base.logs.len() as u64;
    let plan = Plan {
        mechanism: s.run.mechanism.clone(),
        net_kind: NetKind::Loopback,
    };
    let network = Network::new(&plan, 0, o.seed, &SERVERS, &client_ids)?;
    let mut flags = run::server_flags(&base);
    flags.extend(["--checkpoint-every".into(), o.checkpoint_every.to_string()]);
    let mut servers = start_servers(&network, &d, &base, mode, tree(), binary, &flags, dir)?;

    // The client node.
    let slots = o.clients * SLOTS_PER_THREAD + 1;
    let TreeClient {
        node: client,
        tap,
        ids,
        ..
    } = TreeClient::start(&network, &base, me, mode, tree(), slots)?;
    let final_slot = slots - 1;
    let t0 = Instant::now();
    client.await_answer(
        final_slot,
        TreeCommand::Get(0),
        Duration::from_secs(30),
        &servers,
    )?;
    let campaign_options = Options::new(0, o.seed);
    let history_start = run::all_up(&campaign_options, &s.run, &mut servers, &SERVERS, t0)?;
    let mut workload = campaign_options.clone();
    workload.clients = o.clients;
    let clients = Clients::workload(
        &workload,
        o.seed,
        &client.handle,
        SLOTS_PER_THREAD,
        Duration::ZERO,
        command,
    );

    // The load, the kills, the measurements.
    let data = dir.join("data");
    let load_start = Instant::now();
    let end = load_start + o.duration;
    let mut meter = Meter::new(&data, load_start);
    let draw = |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| {
        Duration::from_secs_f64(if hi > lo {
            rng.random_range(lo..hi)
        } else {
            lo
        })
    };
    let mut next_kill = load_start + draw(&mut rng, o.kill_every);
    let mut kills = 0usize;
    while Instant::now() < end {
        meter.until(next_kill.min(end), &servers);
        if Instant::now() >= end {
            break;
        }
        kills += 1;
        let whole = o.whole_cluster_every > 0 && kills.is_multiple_of(o.whole_cluster_every);
        let at_write = !whole && kills.is_multiple_of(3);
        let mut k = Kill {
            at_checkpoint_write: at_write,
            ..Kill::default()
        };
        k.nodes = if whole {
            SERVERS.to_vec()
        } else {
            vec![SERVERS[rng.random_range(0..SERVERS.len())]]
        };
        if at_write {
            let by = Instant::now() + CHECKPOINT_WAIT;
            while !writing_checkpoint(&data, k.nodes[0]) && Instant::now() < by {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        k.at_s = load_start.elapsed().as_secs_f64();
        for &n in &k.nodes {
            servers.kill(n)?;
        }
        k.mid_write = k.nodes.iter().any(|&n| writing_checkpoint(&data, n));
        let down = draw(&mut rng, o.down);
        meter.until(Instant::now() + down, &servers);
        k.down_ms = down.as_secs_f64() * 1e3;
        let restarted = Instant::now();
        for &n in &k.nodes {
            servers.restart(n)?;
        }
        for &n in &k.nodes {
            k.restarts.push(came_back(
                &mut servers,
                n,
                restarted,
                &mut meter,
                &mut s.run,
            ));
        }
        if o.verbose {
            eprintln!("  soak: {k:?}");
        }
        s.kills.push(k);
        next_kill = Instant::now() + draw(&mut rng, o.kill_every);
    }
    s.load_seconds = load_start.elapsed().as_secs_f64();
    let recs = clients.stop(&mut s.run)?;
    meter.sample(&servers);

    // The final state and the logs' trimming. The final scan is not part of the history: a
    // scan of every key would join the checker's per-key parts into one.
    let (fin, _) = final_scan(
        &client,
        &tap,
        ids[final_slot],
        final_slot,
        tree().key_space,
        &mut s.run,
    )?;
    for &n in &SERVERS {
        let body = servers
            .metrics_addr(n)
            .and_then(|a| scrape(a).ok())
            .unwrap_or_default();
        let firsts = per_log(&body, "chorus_log_first_index");
        if firsts.len() as u64 != logs || firsts.iter().any(|&(_, f)| f <= 0.0) {
            s.run.problems.push(format!(
                "node {n}'s logs were not all trimmed: first indexes {firsts:?}"
            ));
        }
        s.first_indexes.push((n, firsts));
        let written = labelled(&body, "chorus_checkpoints_written_total", ("result", "ok"));
        s.checkpoints_written.push((n, written.unwrap_or(0)));
    }
    run::finish(&mut s.run, servers, client, network);

    // The data directories against their bound.
    s.samples = meter.samples;
    s.series = meter.series;
    s.checkpoint_bytes_max = meter.checkpoint_bytes_max;
    s.peak_bytes = SERVERS.iter().copied().zip(meter.peak).collect();
    s.peak_at_s = meter.peak_at_s;
    s.bound_bytes =
        logs * 2 * o.wal_compact_bytes + (KEEP as u64 + 1) * s.checkpoint_bytes_max + (64 << 10);
    if s.checkpoint_bytes_max == 0 {
        s.run
            .problems
            .push("no node reported a checkpoint's size".into());
    }
    for &(n, peak) in &s.peak_bytes {
        if peak > s.bound_bytes {
            s.run.problems.push(format!(
                "node {n}'s data directory reached {peak} bytes, over the bound {}",
                s.bound_bytes
            ));
        }
    }
    if s.kills.is_empty() {
        s.run.problems.push("the soak killed nothing".into());
    }

    // The history (its length decides the checker's budget: single-key parts, a few steps per
    // operation).
    let budget = Budget::new(Budget::DEFAULT_STATES_MAX.max(64 * recs.len() as u64));
    check_history(&mut s.run, &recs, history_start, &tree(), &fin, budget);
    Ok(())
}

/// Waits until restarted node `n` (its process started at `started`) serves its metrics
/// having loaded its state, measuring meanwhile; how it came back.
fn came_back(
    servers: &mut Servers,
    n: u32,
    started: Instant,
    meter: &mut Meter,
    r: &mut RunReport,
) -> Restart {
    let mut x = Restart {
        node: n,
        ..Restart::default()
    };
    let by = started + SERVE_PATIENCE;
    loop {
        let body = servers
            .metrics_addr(n)
            .and_then(|a| scrape(a).ok())
            .unwrap_or_default();
        let how = |w| labelled(&body, "chorus_checkpoints_total", ("how", w)).unwrap_or(0);
        let executed = body
            .lines()
            .filter(|l| l.starts_with("chorus_commands_executed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        let from = if how("loaded") > 0 {
            x.round = counter(&body, "chorus_checkpoint_loaded_round");
            x.round.map(|_| CameBack::Checkpoint)
        } else if how("installed") > 0 {
            Some(CameBack::StateTransfer)
        } else if executed > 0.0 {
            Some(CameBack::LogReplay)
        } else {
            None
        };
        if let Some(from) = from {
            x.from = from;
            x.serving_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            return x;
        }
        if let Some((_, status)) = servers.exited().into_iter().find(|e| e.0 == n) {
            r.problems.push(format!(
                "node {n} exited after its restart ({status}): {}",
                servers.log_tail(n, 10)
            ));
            x.from = CameBack::Exited;
            return x;
        }
        if Instant::now() > by {
            r.problems.push(format!(
                "node {n} did not load its state within {SERVE_PATIENCE:?} of its restart: {}",
                servers.log_tail(n, 10)
            ));
            return x;
        }
        meter.until(Instant::now() + Duration::from_millis(20), servers);
    }
}

/// Measures the data directories every [`SAMPLE_EVERY`].
struct Meter {
    data: PathBuf,
    start: Instant,
    next: Instant,
    samples: usize,
    peak: Vec<u64>,
    peak_at_s: f64,
    series: Vec<Sample>,
    checkpoint_bytes_max: u64,
}

impl Meter {
    fn new(data: &Path, start: Instant) -> Meter {
        Meter {
            data: data.to_path_buf(),
            start,
            next: start,
            samples: 0,
            peak: vec![0; SERVERS.len()],
            peak_at_s: 0.0,
            series: Vec::new(),
            checkpoint_bytes_max: 0,
        }
    }

    /// Sleeps until `t`, measuring when due.
    fn until(&mut self, t: Instant, servers: &Servers) {
        loop {
            let now = Instant::now();
            if now >= self.next {
                self.sample(servers);
            }
            let now = Instant::now();
            if now >= t {
                return;
            }
            std::thread::sleep((t.min(self.next) - now).max(Duration::from_millis(1)));
        }
    }

    fn sample(&mut self, servers: &Servers) {
        let at_s = self.start.elapsed().as_secs_f64();
        let bytes: Vec<u64> = SERVERS
            .iter()
            .map(|n| {
                bytes_under(&self.data.join(format!("node-{n}")))
                    + bytes_under(&self.data.join(format!("node-{n}.checkpoints")))
            })
            .collect();
        if bytes.iter().max() > self.peak.iter().max() {
            self.peak_at_s = at_s;
        }
        for (p, b) in self.peak.iter_mut().zip(&bytes) {
            *p = (*p).max(*b);
        }
        for n in servers.nodes() {
            if let Some(b) = servers
                .metrics_addr(n)
                .and_then(|a| scrape(a).ok())
                .and_then(|body| counter(&body, "chorus_checkpoint_bytes"))
            {
                self.checkpoint_bytes_max = self.checkpoint_bytes_max.max(b);
            }
        }
        if self.samples.is_multiple_of(20) {
            self.series.push(Sample { at_s, bytes });
        }
        self.samples += 1;
        self.next = Instant::now() + SAMPLE_EVERY;
    }
}

/// A random single-key command for client thread `t` (its `n`-th); written values are unique.
fn command(rng: &mut ChaCha8Rng, t: usize, n: u64) -> TreeCommand {
    let k = rng.random_range(0..tree().key_space);
    let v = || Bytes::from(((t as u64) << 40 | n).to_le_bytes().to_vec());
    match rng.random_range(0..100) {
        0..40 => TreeCommand::Get(k),
        40..65 => TreeCommand::Insert(k, v()),
        65..85 => TreeCommand::Update(k, v()),
        _ => TreeCommand::Delete(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TreeModel;

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        let ok = SoakOptions::new(Duration::from_secs(60), 1);
        assert!(ok.validate().is_ok());
        let mut o = ok.clone();
        o.duration = Duration::from_secs(3);
        assert!(o.validate().unwrap_err().contains("too short"));
        let mut o = ok.clone();
        o.kill_every = (5.0, 1.0);
        assert!(o.validate().unwrap_err().contains("kill every"));
        let mut o = ok.clone();
        o.clients = 0;
        assert!(o.validate().is_err());
        let mut o = ok;
        o.wal_compact_bytes = 10;
        assert!(o.validate().unwrap_err().contains("wal_compact_bytes"));
    }

    #[test]
    fn the_soak_writes_only_single_key_commands() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let model = TreeModel::for_config(&tree());
        for n in 0..1000 {
            let c = command(&mut rng, 1, n);
            match engine::lincheck::Model::keys(&model, &c) {
                engine::lincheck::Keys::Some(k) => assert_eq!(k.len(), 1, "{c:?}"),
                engine::lincheck::Keys::All => panic!("{c:?} spans every key"),
            }
        }
    }

    #[test]
    fn data_directories_are_measured_recursively() {
        let d = std::env::temp_dir().join(format!("chorus-soak-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("x"), [0u8; 10]).unwrap();
        std::fs::write(d.join("a/b/y"), [0u8; 32]).unwrap();
        assert_eq!(bytes_under(&d), 42);
        assert_eq!(bytes_under(&d.join("missing")), 0);
        std::fs::create_dir_all(d.join("node-1.checkpoints")).unwrap();
        assert!(!writing_checkpoint(&d, 1));
        std::fs::write(d.join("node-1.checkpoints/checkpoint-1.tmp"), b"half").unwrap();
        assert!(writing_checkpoint(&d, 1));
        let _ = std::fs::remove_dir_all(&d);
    }
}
