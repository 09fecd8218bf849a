//! A P-SMR replica's checkpoint: every worker's part of one round (see [`crate::checkpoint`]
//! for where a checkpoint lies and how it travels).
//!
//! Each worker, when the checkpoint request reaches the head of its stream, records its part
//! ([`WorkerPart`]): its shard ([`super::service::Service::snapshot_shard`]), its client
//! table, its counters, and its merger's position right after the request
//! ([`groups::merge::Merger::poll_until`] stops there). The parts of one round together are the
//! [`Checkpoint`]: a consistent cut, without parking any worker (a multi-worker command after
//! the request is after it at every involved worker, one before it is before it at every
//! involved worker). [`restore`] rebuilds the workers from it.

use super::client_table::ClientTable;
use super::executor::{WorkerState, WorkerStats};
use super::service::Service;
use crate::checkpoint::CheckpointError;
use crate::wire;
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::ids::LogId;
use groups::merge::{Merger, MergerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One worker's part of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPart {
    pub worker: u32,
    /// The merger's position right after the checkpoint request.
    pub merger: MergerState,
    /// The encoded client table.
    pub table: Vec<u8>,
    pub stats: WorkerStats,
    /// [`Service::snapshot_shard`]'s bytes.
    pub shard: Vec<u8>,
}

impl WorkerPart {
    /// Worker `state.id`'s part, taken when the request of `round` is at the head of its
    /// stream (everything before it executed) and its merger was at `merger`.
    pub fn take<S: Service>(
        service: &S,
        state: &WorkerState<S>,
        shard: &S::Shard,
        merger: MergerState,
    ) -> Self {
        WorkerPart {
            worker: state.id as u32,
            merger,
            table: wire::encode(&state.table),
            stats: state.stats.clone(),
            shard: service.snapshot_shard(state.id, shard),
        }
    }
}

/// A replica's checkpoint: every worker's part of one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub round: u64,
    pub parts: Vec<WorkerPart>,
}

impl Checkpoint {
    /// Per log, the first entry the checkpoint does not cover (the lowest over the workers
    /// that read the log; they agree, as they all stopped at the same request).
    pub fn positions(&self) -> Vec<(LogId, u64)> {
        let mut at: BTreeMap<LogId, u64> = BTreeMap::new();
        for p in &self.parts {
            for (log, next) in p.merger.resume_at() {
                at.entry(log)
                    .and_modify(|n| *n = (*n).min(next))
                    .or_insert(next);
            }
        }
        at.into_iter().collect()
    }

    pub fn encode(&self) -> Bytes {
        wire::encode(self).into()
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        wire::decode(bytes).map_err(|e| CheckpointError::Decode(e.to_string()))
    }
}

/// A replica's state rebuilt from a checkpoint.
pub struct Restored<S: Service> {
    pub shards: Vec<S::Shard>,
    pub states: Vec<WorkerState<S>>,
    pub mergers: Vec<Merger>,
}

/// Rebuilds the workers of a replica subscribed to `subs` (one group set per worker) from
/// `ckpt`.
pub fn restore<S: Service>(
    service: &S,
    ckpt: &Checkpoint,
    cfg: &ClusterConfig,
    subs: &[groups::GroupSet],
) -> Result<Restored<S>, CheckpointError> {
    let k = subs.len();
    if ckpt.parts.len() != k {
        return Err(CheckpointError::Workers {
            got: ckpt.parts.len(),
            want: k,
        });
    }
    let mut out = Restored {
        shards: Vec::with_capacity(k),
        states: Vec::with_capacity(k),
        mergers: Vec::with_capacity(k),
    };
    for (i, (part, sub)) in ckpt.parts.iter().zip(subs).enumerate() {
        let bad = |what: String| CheckpointError::Part { worker: i, what };
        if part.worker as usize != i {
            return Err(bad(format!("labelled worker {}", part.worker)));
        }
        let shard = service
            .restore_shard(i, k, &part.shard)
            .map_err(|e| bad(e.to_string()))?;
        let table: ClientTable<S::Reply> =
            wire::decode(&part.table).map_err(|e| bad(format!("client table: {e}")))?;
        let merger = Merger::restore(
            &cfg.logs_for(sub),
            sub.clone(),
            cfg.tuning.merge_m,
            &part.merger,
        )
        .map_err(|e| bad(e.to_string()))?;
        let mut state = WorkerState::new(i);
        state.table = table;
        state.stats = part.stats.clone();
        state.checkpoint_round = ckpt.round;
        out.shards.push(shard);
        out.states.push(state);
        out.mergers.push(merger);
    }
    Ok(out)
}

/// Collects the workers' parts into checkpoints.
#[derive(Default)]
pub struct Assembly {
    rounds: BTreeMap<u64, Vec<Option<WorkerPart>>>,
}

impl Assembly {
    /// Adds worker `part.worker`'s part of `round` (out of `workers`); returns the checkpoint
    /// once every worker's part of the round is in (older incomplete rounds are dropped:
    /// every worker takes part in the same rounds, in order).
    pub fn add(&mut self, round: u64, workers: usize, part: WorkerPart) -> Option<Checkpoint> {
        let slots = self
            .rounds
            .entry(round)
            .or_insert_with(|| vec![None; workers]);
        let w = part.worker as usize;
        if w < slots.len() {
            slots[w] = Some(part);
        }
        if !slots.iter().all(Option::is_some) {
            return None;
        }
        let parts = self.rounds.remove(&round)?.into_iter().flatten().collect();
        self.rounds = self.rounds.split_off(&round);
        Some(Checkpoint { round, parts })
    }
}
