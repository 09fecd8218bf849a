//! The campaign: runs, per-run lines, the aggregate and the JSON summary.

use crate::net::Capabilities;
use crate::{btree, chirper, run, Fault, Options, RunReport, ServiceKind};
use serde::Serialize;
use std::path::Path;

/// The whole campaign's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub runs: Vec<RunReport>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// What the machine offered for network faults.
    pub netns: String,
    pub netem: String,
    pub nft: String,
    /// Leader failover (SIGKILL of the leader): runs measured, median and worst, in ms.
    pub kill_leader_failover: Aggregate,
    /// Fault to the first commit on the victim's logs, over every passing run whatever the
    /// fault (for loss and delay this is a commit latency under the fault, not a failover).
    pub fault_to_first_commit_all_runs: Aggregate,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Aggregate {
    pub runs: usize,
    pub median_ms: Option<f64>,
    pub worst_ms: Option<f64>,
}

impl Aggregate {
    fn of(mut v: Vec<f64>) -> Aggregate {
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        };
        Aggregate {
            runs: v.len(),
            median_ms: median,
            worst_ms: v.last().copied(),
        }
    }
}

fn show(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "available".into(),
        Err(e) => e.clone(),
    }
}

/// The (service, fault) of run `i`: faults in turn, then services in turn, so that any `k`
/// consecutive runs cover `min(k, faults)` kinds of fault.
pub fn pick(o: &Options, i: usize) -> (ServiceKind, Fault) {
    let fault = o.faults[i % o.faults.len()];
    let service = o.services[(i / o.faults.len()) % o.services.len()];
    (service, fault)
}

/// Runs the campaign, printing a line per run and the aggregate; writes the JSON summary.
pub fn run(o: &Options) -> Result<Summary, String> {
    let caps = Capabilities::probe();
    println!(
        "campaign seed {} ({} runs): namespaces: {}; netem: {}; nftables: {}",
        o.seed,
        o.runs,
        show(&caps.netns),
        show(&caps.netem),
        show(&caps.nft)
    );
    let needs_btree =
        (o.first_run..o.first_run + o.runs).any(|i| pick(o, i).0 == ServiceKind::Btree);
    let binary = if needs_btree {
        Some(crate::btree_server_binary()?)
    } else {
        None
    };
    let needs_chirper = (o.first_run..o.first_run + o.runs).any(|i| pick(o, i).0.is_chirper());
    let chirper_binary = if needs_chirper {
        Some(crate::chirper_server_binary()?)
    } else {
        None
    };
    std::fs::create_dir_all(&o.work_dir).map_err(|e| format!("{}: {e}", o.work_dir.display()))?;
    let mut runs = Vec::new();
    for i in o.first_run..o.first_run + o.runs {
        let (service, fault) = pick(o, i);
        let seed = o.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let (bin, runs_as) = match (service, &binary, &chirper_binary) {
            (ServiceKind::Btree, Some(bin), _) => (bin, &btree::SERVICE),
            (ServiceKind::Chirper, _, Some(bin)) => (bin, &chirper::SERVICE),
            (ServiceKind::ChirperDynastar, _, Some(bin)) => (bin, &chirper::SERVICE_DYNASTAR),
            (ServiceKind::ChirperCombined, _, Some(bin)) => (bin, &chirper::SERVICE_COMBINED),
            _ => return Err(format!("no server binary for {}", service.name())),
        };
        let report = run::drive(o, &caps, bin, i, seed, fault, runs_as);
        println!("{}", line(&report));
        for p in &report.problems {
            println!("    problem: {p}");
        }
        runs.push(report);
    }
    let kill: Vec<f64> = runs
        .iter()
        .filter(|r| r.fault == Fault::KillLeader.name() && r.passed() && !r.skipped)
        .filter_map(|r| r.failover_ms)
        .collect();
    let any: Vec<f64> = runs
        .iter()
        .filter(|r| r.passed() && !r.skipped)
        .filter_map(|r| r.failover_ms)
        .collect();
    let summary = Summary {
        seed: o.seed,
        passed: runs.iter().filter(|r| !r.skipped && r.passed()).count(),
        failed: runs.iter().filter(|r| !r.passed()).count(),
        skipped: runs.iter().filter(|r| r.skipped).count(),
        netns: show(&caps.netns),
        netem: show(&caps.netem),
        nft: show(&caps.nft),
        kill_leader_failover: Aggregate::of(kill),
        fault_to_first_commit_all_runs: Aggregate::of(any),
        runs,
    };
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
    println!(
        "campaign seed {}: {} passed, {} failed, {} skipped; leader failover after SIGKILL: \
         median {}, worst {} over {} runs (fault to first commit on the victim's logs, all \
         faults: median {}, worst {} over {} runs)",
        summary.seed,
        summary.passed,
        summary.failed,
        summary.skipped,
        ms(summary.kill_leader_failover.median_ms),
        ms(summary.kill_leader_failover.worst_ms),
        summary.kill_leader_failover.runs,
        ms(summary.fault_to_first_commit_all_runs.median_ms),
        ms(summary.fault_to_first_commit_all_runs.worst_ms),
        summary.fault_to_first_commit_all_runs.runs,
    );
    for r in summary.runs.iter().filter(|r| !r.passed()) {
        println!(
            "replay run {}: chorus-campaign --seed {} --first-run {} --runs 1 --faults {} \
             --services {} --verbose (run i uses seed*1000003+i)",
            r.index, o.seed, r.index, r.fault, r.service
        );
    }
    if let Some(path) = &o.json {
        write_json(path, &summary)?;
        println!("summary written to {}", path.display());
    }
    let _ = std::fs::remove_dir(&o.work_dir); // only if empty (no kept failing run)
    Ok(summary)
}

fn write_json(path: &Path, s: &Summary) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(s).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One run as a line.
pub fn line(r: &RunReport) -> String {
    if r.skipped {
        return format!(
            "run {:>3} seed {:>20} {:<7} {:<14} SKIPPED ({})",
            r.index, r.seed, r.service, r.fault, r.mechanism
        );
    }
    let mut extra = String::new();
    if let Some(n) = r.ops_during_fault {
        extra.push_str(&format!(" ops during fault {n}"));
    }
    if let Some((before, peak)) = r.victim_rss_kib {
        extra.push_str(&format!(" victim rss {}->{} MiB", before >> 10, peak >> 10));
    }
    if let Some((peak, limit)) = r.victim_fds {
        extra.push_str(&format!(" victim fds {peak}/{limit}"));
    }
    if let Some(ms) = r.recovery_ms {
        extra.push_str(&format!(" served a new client after {ms:.0} ms"));
    }
    format!(
        "run {:>3} seed {:>20} {:<7} {:<14} {} {:<8} victim {} ops {} (+{} unknown) \
         lin {} states {} lost {} failover {} (new leader seen {}){extra} [{:.1} s] via {}",
        r.index,
        r.seed,
        r.service,
        r.fault,
        if r.passed() { "PASS" } else { "FAIL" },
        r.mode,
        r.victim.map_or("-".into(), |v| v.to_string()),
        r.completed_ops,
        r.unknown_ops,
        if r.linearizable == "linearizable" {
            "ok"
        } else {
            "NO"
        },
        if r.states_equal { "equal" } else { "DIFFER" },
        r.lost_acks,
        r.failover_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
        r.new_leader_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
        r.seconds,
        r.mechanism
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_worst() {
        let a = Aggregate::of(vec![300.0, 100.0, 200.0]);
        assert_eq!(
            (a.median_ms, a.worst_ms, a.runs),
            (Some(200.0), Some(300.0), 3)
        );
        let a = Aggregate::of(vec![100.0, 400.0]);
        assert_eq!(a.median_ms, Some(250.0));
        assert_eq!(Aggregate::of(vec![]).median_ms, None);
    }

    #[test]
    fn runs_cycle_through_faults_then_services() {
        let mut o = Options::new(4, 1);
        o.faults = vec![Fault::KillLeader, Fault::Pause];
        o.services = vec![ServiceKind::Btree, ServiceKind::Chirper];
        let picks: Vec<_> = (0..4).map(|i| pick(&o, i)).collect();
        assert_eq!(
            picks,
            vec![
                (ServiceKind::Btree, Fault::KillLeader),
                (ServiceKind::Btree, Fault::Pause),
                (ServiceKind::Chirper, Fault::KillLeader),
                (ServiceKind::Chirper, Fault::Pause),
            ]
        );
    }
}
