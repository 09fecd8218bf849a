//! Running a seeded test campaign: one seed replayed verbosely, or many in parallel.
//!
//! `CHORUS_SEED=n` runs only seed `n`, verbosely. Otherwise `CHORUS_SEEDS` seeds (default: the
//! campaign's own count) from `CHORUS_SEED_BASE` (default 0) run on every core; the first
//! failure is reported with the command that replays it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `run(seed, verbose)` for the campaign's seeds and returns the results of the seeds that
/// passed, in seed order (saying how many on stderr). Panics if any seed failed, with the first
/// failure (by seed) and `replay`, the command that reruns a seed (after `CHORUS_SEED=n`).
pub fn campaign<T: Send>(
    name: &str,
    replay: &str,
    default_count: u64,
    run: impl Fn(u64, bool) -> Result<T, String> + Sync,
) -> Vec<T> {
    if let Some(seed) = env("CHORUS_SEED") {
        return match run(seed, true) {
            Ok(t) => {
                eprintln!("{name}: seed {seed} passed");
                vec![t]
            }
            Err(e) => panic!("{name}: seed {seed} failed:\n  {e}"),
        };
    }
    let base = env("CHORUS_SEED_BASE").unwrap_or(0);
    let count = env("CHORUS_SEEDS").unwrap_or(default_count);
    eprintln!("{name}: seeds {base}..{}", base + count);
    let next = AtomicU64::new(base);
    let results: Mutex<Vec<(u64, Result<T, String>)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= base + count {
                    break;
                }
                let r = run(seed, false);
                results.lock().expect("results").push((seed, r));
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(s, _)| *s);
    let failed: Vec<(u64, String)> = results
        .iter()
        .filter_map(|(s, r)| r.as_ref().err().map(|e| (*s, e.clone())))
        .collect();
    if let Some((seed, e)) = failed.first() {
        let seeds: Vec<u64> = failed.iter().map(|(s, _)| *s).collect();
        panic!(
            "{name}: {} of {count} seeds failed ({seeds:?}); first, seed {seed} (replay: CHORUS_SEED={seed} {replay}):\n  {e}",
            failed.len()
        );
    }
    eprintln!("{name}: {count} seeds passed");
    results.into_iter().filter_map(|(_, r)| r.ok()).collect()
}
