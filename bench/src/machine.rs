//! What the results were measured on.

use serde::Serialize;

/// The machine an experiment ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs available to this process.
    pub cores: usize,
    pub numa_nodes: usize,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let numa_nodes = std::fs::read_dir("/sys/devices/system/node")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("node") && n[4..].chars().all(|c| c.is_ascii_digit())
                    })
                    .count()
            })
            .unwrap_or(1)
            .max(1);
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / (1024.0 * 1024.0) * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            numa_nodes,
            memory_gib,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({} cores, {} NUMA node(s), {} GiB, {})",
            self.cpu_model, self.cores, self.numa_nodes, self.memory_gib, self.os
        )
    }
}
