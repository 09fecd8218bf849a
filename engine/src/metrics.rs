//! Metrics of a running replica in the Prometheus text exposition format: the node's part
//! (exposition, HTTP endpoint, node snapshots) is [`groups::metrics`], re-exported here; this
//! module adds the engine's renderers.
//!
//! - [`render_workers`] and [`render_partition`] / [`render_oracle`] render the live counters
//!   of a P-SMR replica ([`crate::psmr::threaded::Threads::share_worker_stats`]) and of a
//!   scale-out replica ([`crate::partitioned::replica::ScaleOutReplica::share_stats`]).
//!
//! Counters are totals since the process started (names end in `_total`); commands per second
//! are a rate that Prometheus computes over them, e.g.
//! `sum(rate(chorus_commands_executed_total[1m]))`.

pub use groups::metrics::*;

use crate::partitioned::replica::OracleCounters;
use crate::partitioned::server::ServerStats;
use crate::psmr::executor::WorkerStats;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::sync::Arc;

/// Bounds of the request-service-time histogram, in microseconds (exported in seconds).
pub const SERVICE_TIME_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A P-SMR worker's counters and service times, published by the worker while it runs.
pub struct WorkerLive {
    pub stats: WorkerStats,
    /// Microseconds from the worker receiving a request's log entries to its reply being
    /// queued for the node's thread (includes waiting for the other workers of a
    /// multi-worker command).
    pub service_us: Histogram<u64>,
}

impl Default for WorkerLive {
    fn default() -> Self {
        WorkerLive {
            stats: WorkerStats::default(),
            service_us: service_histogram(),
        }
    }
}

/// An empty histogram of service times in microseconds (1 µs to 1 h, 2 significant digits).
pub fn service_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// A worker's live counters, readable from other threads.
pub type SharedWorkerStats = Arc<Mutex<WorkerLive>>;

/// Renders the live counters of a P-SMR replica's workers.
pub fn render_workers(workers: &[SharedWorkerStats], e: &mut Exposition) {
    let snap: Vec<(String, WorkerStats)> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| (i.to_string(), w.lock().stats.clone()))
        .collect();
    for (w, s) in &snap {
        for (kind, v) in [("single", s.single), ("multi", s.multi)] {
            e.counter(
                "chorus_commands_executed_total",
                "Commands executed, by worker and kind (single: on the worker's shard alone; multi: for several workers).",
                &[("worker", w), ("kind", kind)],
                v,
            );
        }
    }
    type Pick = fn(&WorkerStats) -> u64;
    let counters: [(&str, &str, Pick); 5] = [
        (
            "chorus_worker_parked_total",
            "Multi-worker commands this worker parked for.",
            |s| s.parked,
        ),
        (
            "chorus_optpsmr_aborts_total",
            "Optimistic attempts refused (opt-PSMR aborts).",
            |s| s.aborts,
        ),
        (
            "chorus_misrouted_total",
            "Tries refused as misrouted (mapped with stale routes after ranges moved).",
            |s| s.misrouted,
        ),
        (
            "chorus_duplicates_total",
            "Retried requests answered from the client table.",
            |s| s.duplicates,
        ),
        (
            "chorus_rejected_requests_total",
            "Requests that could not be decoded.",
            |s| s.rejected,
        ),
    ];
    for (name, help, pick) in counters {
        for (w, s) in &snap {
            e.counter(name, help, &[("worker", w)], pick(s));
        }
    }
    for (i, w) in workers.iter().enumerate() {
        let h = w.lock().service_us.clone();
        e.histogram(
            "chorus_request_service_seconds",
            "Time from a worker receiving a request's log entries to its reply being queued for the node's thread.",
            &[("worker", &i.to_string())],
            &h,
            &SERVICE_TIME_BOUNDS_US,
            1e6,
        );
    }
}

/// Renders a scale-out partition replica's counters (`chorus_partition_*_total`).
pub fn render_partition(s: &ServerStats, e: &mut Exposition) {
    let counters: [(&str, &str, u64); 19] = [
        (
            "chorus_partition_handled_total",
            "Delivered multicasts fully handled.",
            s.handled,
        ),
        (
            "chorus_partition_single_total",
            "Accesses executed on this partition alone.",
            s.single,
        ),
        (
            "chorus_partition_multi_total",
            "Multi-partition accesses executed.",
            s.multi,
        ),
        (
            "chorus_partition_fallbacks_total",
            "DS-SMR fallbacks to a multi-partition execution.",
            s.fallbacks,
        ),
        (
            "chorus_partition_retries_total",
            "Accesses answered retry (an object was elsewhere).",
            s.retries,
        ),
        (
            "chorus_partition_gathers_total",
            "Accesses answered retry(gamma).",
            s.gathers,
        ),
        (
            "chorus_partition_objects_total",
            "Objects given to the service's execute.",
            s.objects,
        ),
        (
            "chorus_partition_moves_in_total",
            "Objects moved into this partition.",
            s.moves_in,
        ),
        (
            "chorus_partition_moves_out_total",
            "Objects moved out of this partition.",
            s.moves_out,
        ),
        (
            "chorus_partition_moves_null_total",
            "Moves of an object the source did not own.",
            s.moves_null,
        ),
        (
            "chorus_partition_created_total",
            "Objects created.",
            s.created,
        ),
        (
            "chorus_partition_deleted_total",
            "Objects deleted.",
            s.deleted,
        ),
        (
            "chorus_partition_duplicates_total",
            "Resent attempts answered from the client table.",
            s.duplicates,
        ),
        (
            "chorus_partition_rejected_total",
            "Requests that could not be decoded.",
            s.rejected,
        ),
        (
            "chorus_partition_pulls_sent_total",
            "Pulls of missed exchanges sent.",
            s.pulls_sent,
        ),
        (
            "chorus_partition_pulls_answered_total",
            "Pulls of exchanges answered.",
            s.pulls_answered,
        ),
        (
            "chorus_partition_double_owned_total",
            "Broken single-ownership events (must stay 0).",
            s.double_owned,
        ),
        (
            "chorus_partition_lent_total",
            "DynaStar: objects lent to a command's target.",
            s.lent,
        ),
        (
            "chorus_partition_plan_chunks_total",
            "DynaStar: placement chunks applied (a repartition's moves).",
            s.plan_chunks,
        ),
    ];
    e.counters(&counters);
    for (w, handled) in s.worker_handled.iter().enumerate() {
        e.counter(
            "chorus_partition_worker_handled_total",
            "Combined mode: delivered multicasts fully handled by each worker of the replica.",
            &[("worker", &w.to_string())],
            *handled,
        );
    }
    for (w, cpu) in s.worker_cpus.iter().enumerate() {
        if let Some(cpu) = cpu {
            e.gauge(
                "chorus_partition_worker_cpu",
                "Combined mode: the logical CPU each worker thread is pinned to (--pin; absent when not pinned).",
                &[("worker", &w.to_string())],
                *cpu as f64,
            );
        }
    }
}

/// Renders an oracle replica's counters (`chorus_oracle_*_total`; a DynaStar oracle also
/// its hint batches, repartitions and plans).
pub fn render_oracle(s: &OracleCounters, e: &mut Exposition) {
    let (base, dyna) = match s {
        OracleCounters::DsSmr(s) => (s.clone(), None),
        OracleCounters::Dynastar(d) => (d.common(), Some(d)),
    };
    let s = &base;
    let counters: [(&str, &str, u64); 10] = [
        (
            "chorus_oracle_handled_total",
            "Delivered multicasts handled.",
            s.handled,
        ),
        (
            "chorus_oracle_consults_total",
            "Location consults answered.",
            s.consults,
        ),
        ("chorus_oracle_moves_total", "Moves applied.", s.moves),
        (
            "chorus_oracle_moves_ignored_total",
            "Moves of objects that were not in their source.",
            s.moves_ignored,
        ),
        ("chorus_oracle_created_total", "Objects created.", s.created),
        ("chorus_oracle_deleted_total", "Objects deleted.", s.deleted),
        (
            "chorus_oracle_retries_total",
            "Deletes answered retry.",
            s.retries,
        ),
        (
            "chorus_oracle_duplicates_total",
            "Resent attempts answered from the client table.",
            s.duplicates,
        ),
        (
            "chorus_oracle_rejected_total",
            "Requests that could not be decoded.",
            s.rejected,
        ),
        (
            "chorus_oracle_pulls_answered_total",
            "Pulls of exchanges answered.",
            s.pulls_answered,
        ),
    ];
    e.counters(&counters);
    if let Some(d) = dyna {
        e.counters(&[
            (
                "chorus_oracle_hint_batches_total",
                "DynaStar: partitions' hint batches applied to the workload graph.",
                d.hints,
            ),
            (
                "chorus_oracle_repartitions_total",
                "DynaStar: placements computed from the workload graph.",
                d.repartitions,
            ),
            (
                "chorus_oracle_repartitions_empty_total",
                "DynaStar: placements computed that moved nothing (no plan).",
                d.repartitions_empty,
            ),
            (
                "chorus_oracle_plans_completed_total",
                "DynaStar: plans whose every chunk was delivered.",
                d.plans_completed,
            ),
        ]);
    }
}

const WRITTEN_HELP: &str = "Checkpoints written to the data directory (durable logs), writes that failed (a checkpoint not written is not reported, so the logs are not trimmed below it), and checkpoints skipped because a newer one reached the background writer first.";

/// Renders a P-SMR replica's checkpoint counters
/// ([`crate::host::ReplicaHost::share_checkpoints`]): checkpoints taken and installed,
/// the latest round, its size, the log positions it covers, and its state hash once known.
pub fn render_checkpoints(c: &crate::host::replica::SharedCheckpoints, e: &mut Exposition) {
    let c = c.lock().clone();
    e.counter(
        "chorus_checkpoints_total",
        "Checkpoints completed at this replica, by how (taken: from its own workers; installed: received from a peer by state transfer; loaded: from the data directory at start).",
        &[("how", "taken")],
        c.taken - c.installed,
    );
    e.counter(
        "chorus_checkpoints_total",
        "Checkpoints completed at this replica, by how (taken: from its own workers; installed: received from a peer by state transfer; loaded: from the data directory at start).",
        &[("how", "installed")],
        c.installed,
    );
    e.counter(
        "chorus_checkpoints_total",
        "Checkpoints completed at this replica, by how (taken: from its own workers; installed: received from a peer by state transfer; loaded: from the data directory at start).",
        &[("how", "loaded")],
        c.loaded,
    );
    e.counter(
        "chorus_checkpoints_written_total",
        WRITTEN_HELP,
        &[("result", "ok")],
        c.saved,
    );
    e.counter(
        "chorus_checkpoints_written_total",
        WRITTEN_HELP,
        &[("result", "failed")],
        c.save_errors,
    );
    e.counter(
        "chorus_checkpoints_written_total",
        WRITTEN_HELP,
        &[("result", "superseded")],
        c.save_superseded,
    );
    e.counter(
        "chorus_checkpoints_refused_total",
        "Checkpoints received from a peer that could not be installed.",
        &[],
        c.refused,
    );
    e.counter(
        "chorus_checkpoint_chunks_sent_total",
        "Checkpoint chunks sent to recovering peers.",
        &[],
        c.chunks_sent,
    );
    e.gauge(
        "chorus_checkpoint_round",
        "Round of the latest checkpoint (equal rounds are the same point of every replica's stream).",
        &[],
        c.round as f64,
    );
    e.gauge(
        "chorus_checkpoint_loaded_round",
        "Round of the checkpoint this replica loaded from its data directory at start (0: none).",
        &[],
        c.loaded_round as f64,
    );
    e.gauge(
        "chorus_checkpoint_bytes",
        "Encoded size of the latest checkpoint.",
        &[],
        c.bytes as f64,
    );
    for (log, next) in &c.positions {
        e.gauge(
            "chorus_checkpoint_log_position",
            "Per log, the first entry the latest checkpoint does not cover (the log may be trimmed below it).",
            &[("log", &log.0.to_string())],
            *next as f64,
        );
    }
    if let Some((round, hash)) = c.state_hash {
        e.gauge(
            "chorus_checkpoint_state_hash",
            "State hash of a checkpoint (the round is a label), equal at every replica for the same round. The hash is split into two 32-bit halves so it survives a float.",
            &[("round", &round.to_string()), ("half", "high")],
            (hash >> 32) as f64,
        );
        e.gauge(
            "chorus_checkpoint_state_hash",
            "State hash of a checkpoint (the round is a label), equal at every replica for the same round. The hash is split into two 32-bit halves so it survives a float.",
            &[("round", &round.to_string()), ("half", "low")],
            (hash & 0xffff_ffff) as f64,
        );
    }
    for (name, help, us) in [
        (
            "chorus_checkpoint_take_seconds",
            "Latest checkpoint taken here: the longest a worker paused to record its part.",
            c.take_us,
        ),
        (
            "chorus_checkpoint_encode_seconds",
            "Latest checkpoint taken here: the node thread's time to encode it.",
            c.assemble_us,
        ),
        (
            "chorus_checkpoint_transfer_seconds",
            "Time the latest state transfer took to fetch the checkpoint.",
            c.transfer_us,
        ),
        (
            "chorus_checkpoint_install_seconds",
            "Time the latest state transfer took to install the checkpoint.",
            c.install_us,
        ),
        (
            "chorus_checkpoint_write_seconds",
            "Time the latest checkpoint took to be written and synced to the data directory.",
            c.save_us,
        ),
        (
            "chorus_checkpoint_load_seconds",
            "Time the checkpoint loaded from the data directory at start took to install.",
            c.load_us,
        ),
    ] {
        e.gauge(name, help, &[], us as f64 / 1e6);
    }
}
