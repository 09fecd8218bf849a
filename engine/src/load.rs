//! Closed-loop load for measured runs: a [`Driver`] that keeps every client's window full
//! with commands from a [`Source`], and records latencies while the shared phase says so.

pub mod cpu;

use crate::host::client::{Completion, Driver};
use hdrhistogram::Histogram;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The one of `all` whose `name` is `s`, or an error naming `what` it should be and every
/// name (how the experiments' and services' named choices parse: workloads, distributions,
/// systems, faults).
pub fn by_name<T: Copy, const N: usize>(
    s: &str,
    all: [T; N],
    name: fn(T) -> &'static str,
    what: &str,
) -> Result<T, String> {
    all.into_iter()
        .find(|x| name(*x) == s)
        .ok_or_else(|| format!("unknown {what} {s:?}; one of {}", all.map(name).join(", ")))
}

/// Measurement phases shared by the drivers of one run.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const DONE: u8 = 2;

/// Produces the commands of one client.
pub trait Source<C>: Send + 'static {
    fn next_command(&mut self) -> C;
}

/// A latency histogram in nanoseconds (1 ns to 10 minutes, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("bounds")
}

/// A quantile of a nanosecond histogram, in microseconds (NaN if empty).
pub fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A closed-loop driver: every client always has its window full; latencies and completions
/// are recorded while the shared phase is [`MEASURE`]; no command is issued once it is
/// [`DONE`].
pub struct ClosedLoop<C, G: Source<C>> {
    sources: Vec<G>,
    phase: Arc<AtomicU8>,
    pub latency_ns: Histogram<u64>,
    pub completed: u64,
    pub errors: u64,
    _command: PhantomData<fn() -> C>,
}

impl<C, G: Source<C>> ClosedLoop<C, G> {
    /// One source per client.
    pub fn new(sources: Vec<G>, phase: Arc<AtomicU8>) -> Self {
        ClosedLoop {
            sources,
            phase,
            latency_ns: histogram(),
            completed: 0,
            errors: 0,
            _command: PhantomData,
        }
    }
}

impl<C: 'static, R, G: Source<C>> Driver<C, R> for ClosedLoop<C, G> {
    fn next(&mut self, client: usize, _now_us: u64) -> Option<C> {
        if self.phase.load(Ordering::Relaxed) == DONE {
            return None;
        }
        Some(self.sources[client].next_command())
    }

    fn complete(&mut self, _client: usize, done: Completion<C, R>, latency: Duration) {
        if self.phase.load(Ordering::Relaxed) != MEASURE {
            return;
        }
        if done.result.is_err() {
            self.errors += 1;
        }
        self.completed += 1;
        let _ = self.latency_ns.record((latency.as_nanos() as u64).max(1));
    }
}
