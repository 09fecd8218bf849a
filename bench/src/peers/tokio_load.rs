//! Closed-loop load on a peer system through its async Rust client: `clients` sessions, each
//! with `outstanding` tasks that issue one operation after another, so every session always has
//! `outstanding` requests in flight. Latencies are recorded while the phase is `MEASURE`, as in
//! the Chorus driver (`engine::load`).

use super::{Measured, Plan, Point};
use btree_service::load::Sequence;
use btree_service::ycsb::{OpGenerator, OpKind, OpLatencies, YcsbResult, YcsbWorkload};
use engine::load::{histogram, quantile_us, DONE, MEASURE, WARMUP};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One operation of the mix.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Read(u64),
    Write(u64),
}

/// The operations of one task on one client session.
pub trait Session: Clone + Send + 'static {
    /// Runs `op`; an answer that is not what it must be (a missing key, a wrong size) is an
    /// error.
    fn run(&mut self, op: Op) -> impl Future<Output = Result<(), String>> + Send;
}

/// The name of key `k` (etcd keys, ZooKeeper znodes under a parent).
pub fn key_name(k: u64) -> String {
    format!("k{k:06}")
}

/// How long one operation may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Drives `sessions` (one per client) at `point`, warm-up then the measured window.
pub async fn closed_loop<S: Session>(sessions: &[S], plan: &Plan, point: Point) -> Measured {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut tasks = Vec::new();
    for (c, s) in sessions.iter().enumerate() {
        for t in 0..point.outstanding.max(1) {
            let mut s = s.clone();
            let phase = phase.clone();
            let keys = plan.keys.max(1);
            let write_pct = point.write_pct;
            let seed = ((c as u64) << 32) ^ (t as u64) ^ 0x5EED;
            tasks.push(tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut hist = histogram();
                let (mut completed, mut errors) = (0u64, 0u64);
                let mut first_error = None;
                while phase.load(Ordering::Relaxed) != DONE {
                    let key = rng.random_range(0..keys);
                    let op = if rng.random_range(0..100u32) < write_pct {
                        Op::Write(key)
                    } else {
                        Op::Read(key)
                    };
                    let t0 = Instant::now();
                    let r = match tokio::time::timeout(OP_TIMEOUT, s.run(op)).await {
                        Ok(r) => r,
                        Err(_) => Err(format!("{op:?}: no answer within {OP_TIMEOUT:?}")),
                    };
                    let latency = t0.elapsed();
                    if phase.load(Ordering::Relaxed) == MEASURE {
                        completed += 1;
                        let _ = hist.record((latency.as_nanos() as u64).max(1));
                        if let Err(e) = r {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (hist, completed, errors, first_error)
            }));
        }
    }
    tokio::time::sleep(plan.warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(plan.measure).await;
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut hist = histogram();
    let (mut completed, mut errors) = (0, 0);
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((h, c, e, f)) => {
                let _ = hist.add(&h);
                completed += c;
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("load task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("peers: {errors} failed operations, the first: {e}");
    }
    Measured {
        throughput_ops_s: completed as f64 / elapsed.as_secs_f64(),
        p50_us: quantile_us(&hist, 0.5),
        p99_us: quantile_us(&hist, 0.99),
        completed,
        errors,
    }
}

/// Runs `make()` until it succeeds or `limit` passes (servers starting up), checking between
/// tries that the servers are still alive.
pub async fn retry<T, F, Fut>(
    what: &str,
    limit: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
    mut make: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        alive()?;
        match tokio::time::timeout(Duration::from_secs(3), make()).await {
            Ok(Ok(x)) => return Ok(x),
            Ok(Err(e)) if Instant::now() >= deadline => {
                return Err(format!("{what}: still failing after {limit:?}: {e}"))
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(format!("{what}: no answer within {limit:?}"))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The key of YCSB record `n` on a peer: above every key of the mixes, so one cluster can
/// hold both.
pub fn ycsb_key(n: u64) -> u64 {
    YCSB_KEY_BASE + n
}

const YCSB_KEY_BASE: u64 = 1_000_000_000;

/// Drives `sessions` with YCSB `workload` (no scans: the peers' key-value API has none),
/// `plan.ycsb_outstanding` tasks per session, each with its own operation generator and slot
/// of the insert sequence; warm-up then the measured window. A read-modify-write is a read
/// then a write of the same key, timed together.
pub async fn ycsb_loop<S: Session>(
    sessions: &[S],
    plan: &Plan,
    workload: YcsbWorkload,
) -> YcsbResult {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let outstanding = plan.ycsb_outstanding.max(1);
    let slots = (sessions.len() * outstanding) as u64;
    let mut tasks = Vec::new();
    for (c, s) in sessions.iter().enumerate() {
        for t in 0..outstanding {
            let mut s = s.clone();
            let phase = phase.clone();
            let slot = (c * outstanding + t) as u64;
            let mut gen = OpGenerator::new(
                workload,
                plan.ycsb_params,
                Sequence::slot(slot, slots),
                ((c as u64) << 32) ^ (t as u64) ^ 0x5EED,
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = OpLatencies::default();
                let mut errors = 0u64;
                let mut first_error = None;
                while phase.load(Ordering::Relaxed) != DONE {
                    let op = gen.next_op();
                    let key = ycsb_key(op.key);
                    let t0 = Instant::now();
                    let r = match op.kind {
                        OpKind::Read => timed(s.run(Op::Read(key))).await,
                        OpKind::Update | OpKind::Insert => timed(s.run(Op::Write(key))).await,
                        OpKind::ReadModifyWrite => match timed(s.run(Op::Read(key))).await {
                            Ok(()) => timed(s.run(Op::Write(key))).await,
                            e => e,
                        },
                        OpKind::Scan => Err("scans are not part of the key-value API".into()),
                    };
                    if op.kind == OpKind::Insert && r.is_ok() {
                        gen.acknowledge(op.key);
                    }
                    if phase.load(Ordering::Relaxed) == MEASURE {
                        lat.record(op.kind, t0.elapsed());
                        if let Err(e) = r {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (lat, errors, first_error)
            }));
        }
    }
    tokio::time::sleep(plan.warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(plan.measure).await;
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut lat = OpLatencies::default();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((l, e, f)) => {
                lat.add(&l);
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("load task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("peers: {errors} failed YCSB operations, the first: {e}");
    }
    YcsbResult::from_latencies(workload, &lat, elapsed.as_secs_f64(), errors)
}

async fn timed(f: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {OP_TIMEOUT:?}")),
    }
}
