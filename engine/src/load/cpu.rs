//! CPU time per thread of this process, for a measured run's cost breakdown.
//!
//! Linux only: every thread's run time comes from `/proc/self/task/<tid>/schedstat`
//! (nanoseconds on the CPU, as the scheduler accounts it) and its name from `comm`. Threads
//! are grouped by a caller's naming of their roles ([`Snapshot::since_by_role`]), so a run can say
//! "the replicas' workers spent 3.1 us per command, the client nodes 2.4 us". Elsewhere every
//! sample is `None` and the breakdown is left out.

use std::collections::BTreeMap;

/// The CPU time of every live thread at one instant, by thread id.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `(name, nanoseconds on the CPU)` by thread id.
    pub threads: BTreeMap<u64, (String, u64)>,
}

impl Snapshot {
    /// This process's threads now, or `None` where `/proc/self/task` cannot be read.
    pub fn take() -> Option<Snapshot> {
        let mut threads = BTreeMap::new();
        for entry in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            // A thread may end between listing and reading: skip it.
            let Ok(sched) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            let Some(ns) = sched.split_whitespace().next().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default();
            threads.insert(tid, (name, ns));
        }
        Some(Snapshot { threads })
    }

    /// CPU nanoseconds spent since `earlier`, summed per role: `role(name)` names the role of a
    /// thread (threads that started after `earlier` count from zero; threads that ended in
    /// between are lost, so take both snapshots while the measured threads run).
    pub fn since_by_role(
        &self,
        earlier: &Snapshot,
        role: impl Fn(&str) -> String,
    ) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (tid, (name, ns)) in &self.threads {
            let before = earlier
                .threads
                .get(tid)
                .filter(|(n, _)| n == name)
                .map_or(0, |(_, b)| *b);
            *out.entry(role(name)).or_insert(0) += ns.saturating_sub(before);
        }
        out
    }
}

/// CPU microseconds per command by role, and their total, over a window in which `commands`
/// completed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Breakdown {
    /// Every thread of the process.
    pub total_us_per_cmd: f64,
    /// By role, as the caller named them.
    pub by_role_us_per_cmd: BTreeMap<String, f64>,
}

impl Breakdown {
    /// The breakdown of CPU nanoseconds by role over `commands` commands, or `None` if none.
    pub fn of(roles: BTreeMap<String, u64>, commands: u64) -> Option<Breakdown> {
        if commands == 0 {
            return None;
        }
        let per = |ns: u64| ns as f64 / 1000.0 / commands as f64;
        Some(Breakdown {
            total_us_per_cmd: per(roles.values().sum()),
            by_role_us_per_cmd: roles.into_iter().map(|(r, ns)| (r, per(ns))).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_charged_to_its_role() {
        let wall = std::time::Instant::now();
        let Some(before) = Snapshot::take() else {
            return; // not Linux: nothing to measure
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let spin = std::thread::Builder::new()
            .name("spinner".into())
            .spawn(move || {
                let mut x = 0u64;
                for i in 0..20_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                done_tx.send(x).expect("main waits");
                // Stay alive until the second snapshot is taken.
                let _ = go_rx.recv();
            })
            .expect("spawn");
        done_rx.recv().expect("spinner finishes");
        let after = Snapshot::take().expect("read once, readable again");
        let wall_ns = wall.elapsed().as_nanos() as f64;
        go_tx.send(()).expect("spinner waits");
        spin.join().expect("join");
        let roles = after.since_by_role(&before, |n| {
            if n == "spinner" { "spin" } else { "other" }.to_string()
        });
        let b = Breakdown::of(roles.clone(), 1000).expect("commands completed");
        let spin = b.by_role_us_per_cmd["spin"];
        // The spinner ran, and no thread runs longer than the wall time it lived.
        assert!(spin > 0.0, "{b:?}");
        assert!(
            spin * 1000.0 * 1000.0 <= wall_ns * 1.01,
            "{b:?} in {wall_ns} ns"
        );
        assert!(b.total_us_per_cmd >= spin);
        assert!(Breakdown::of(roles, 0).is_none());
    }
}
