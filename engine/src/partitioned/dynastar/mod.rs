//! # DynaStar (reference notes, e)
//!
//! The oracle ([`oracle`]) keeps the objects' locations and a workload graph of them
//! ([`workload`]) built from the hints partitions send, and periodically computes a better
//! placement ([`placement`]), which it multicasts in chunks to itself and every partition; the
//! chunk's position in the streams is where the objects change owner. A partition
//! ([`partition`]) executes a multi-partition command by borrowing the objects it lacks from
//! the other partitions involved and returning them, with per-object ordering so that neither
//! borrowing nor a placement change stops it.

pub mod oracle;
pub mod partition;
pub mod placement;
pub mod workload;

use serde::{Deserialize, Serialize};

/// DynaStar's settings (part of [`super::ServerOptions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynaOptions {
    /// A partition's designated replica multicasts its hints to the oracle this often
    /// (ticks); 0: never (the oracle then repartitions on request only, with no graph).
    pub hint_ticks: u64,
    /// Distinct objects and pairs a partition's hint buffer holds at most per period.
    pub hint_entries_max: usize,
    /// The oracle repartitions after this many hint batches (with hints every `hint_ticks`
    /// from each partition, a timer of about `repartition_hints * hint_ticks / partitions`
    /// ticks); 0: only on a [`super::msg::Multicast::Repartition`] request.
    pub repartition_hints: u64,
    /// Moves per placement chunk at most.
    pub plan_chunk_moves: usize,
    /// An oracle replica multicasts the chunks of a plan the designated replica has not got
    /// delivered within this many ticks (a crashed designated replica).
    pub plan_resend_ticks: u64,
    pub graph: workload::GraphOptions,
    pub placement: placement::PlacementOptions,
}

impl Default for DynaOptions {
    fn default() -> Self {
        DynaOptions {
            hint_ticks: 50,
            hint_entries_max: 20_000,
            repartition_hints: 40,
            plan_chunk_moves: 1024,
            plan_resend_ticks: 500,
            graph: workload::GraphOptions::default(),
            placement: placement::PlacementOptions::default(),
        }
    }
}

impl DynaOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.plan_chunk_moves == 0 {
            return Err("dynastar plan_chunk_moves must be at least 1".into());
        }
        if self.hint_entries_max == 0 {
            return Err("dynastar hint_entries_max must be at least 1".into());
        }
        if self.plan_resend_ticks == 0 {
            return Err("dynastar plan_resend_ticks must be at least 1".into());
        }
        self.graph.validate()?;
        self.placement.validate()
    }
}
