//! CPU topology, for pinning worker threads.
//!
//! Read from Linux sysfs by default (`/sys/devices/system/cpu` and `.../node`); with the cargo
//! feature `hwloc`, from hwloc through the `hwlocality` crate (needs `libhwloc-dev` and
//! `libudev-dev`). Either way the result is a list of logical CPUs with their physical core,
//! package and NUMA node, restricted to the CPUs this process may run on.

use std::collections::BTreeSet;
use std::path::Path;

/// CPUs a `cpu_set_t` can name (glibc's `CPU_SETSIZE`): `core_affinity` asserts (panics)
/// on an id at or above it.
const CPU_SET_SIZE: usize = 1024;

/// Pins the calling thread to logical CPU `cpu`; false (and nothing changed) if the id is out
/// of range or the process may not run there.
pub fn pin_current_thread(cpu: usize) -> bool {
    cpu < CPU_SET_SIZE && core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// One logical CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpu {
    pub id: usize,
    /// Physical core id (unique within its package).
    pub core: usize,
    pub package: usize,
    pub numa: usize,
}

/// The CPUs available to this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub cpus: Vec<Cpu>,
    /// Where the description came from: "sysfs", "hwloc" or "flat" (nothing readable).
    pub source: &'static str,
}

/// Parses a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

impl Topology {
    /// The machine's topology, restricted to the CPUs this process may use.
    pub fn detect() -> Self {
        #[cfg(feature = "hwloc")]
        if let Some(t) = Self::from_hwloc() {
            return t.restricted_to_affinity();
        }
        match Self::from_sysfs(Path::new("/sys/devices/system")) {
            Some(t) if !t.cpus.is_empty() => t.restricted_to_affinity(),
            _ => Self::flat(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// `n` CPUs, each its own core, one package, one NUMA node.
    pub fn flat(n: usize) -> Self {
        Topology {
            cpus: (0..n)
                .map(|id| Cpu {
                    id,
                    core: id,
                    package: 0,
                    numa: 0,
                })
                .collect(),
            source: "flat",
        }
    }

    /// Reads `root/cpu/online`, `root/cpu/cpuN/topology/{core_id,physical_package_id}` and
    /// `root/node/nodeM/cpulist`.
    pub fn from_sysfs(root: &Path) -> Option<Self> {
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let online = parse_cpu_list(&read(&root.join("cpu/online"))?)?;
        let mut numa_of = std::collections::BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(root.join("node")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let Some(n) = name
                    .strip_prefix("node")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                if let Some(list) = read(&e.path().join("cpulist")).and_then(|s| parse_cpu_list(&s))
                {
                    for c in list {
                        numa_of.insert(c, n);
                    }
                }
            }
        }
        let num = |p: &Path| read(p).and_then(|s| s.trim().parse::<usize>().ok());
        let cpus = online
            .into_iter()
            .map(|id| {
                let t = root.join(format!("cpu/cpu{id}/topology"));
                Cpu {
                    id,
                    core: num(&t.join("core_id")).unwrap_or(id),
                    package: num(&t.join("physical_package_id")).unwrap_or(0),
                    numa: numa_of.get(&id).copied().unwrap_or(0),
                }
            })
            .collect();
        Some(Topology {
            cpus,
            source: "sysfs",
        })
    }

    #[cfg(feature = "hwloc")]
    fn from_hwloc() -> Option<Self> {
        use hwlocality::object::types::ObjectType;
        let topo = hwlocality::Topology::new().ok()?;
        let mut cpus = Vec::new();
        for pu in topo.objects_with_type(ObjectType::PU) {
            let id = pu.os_index()?;
            let mut core = id;
            let mut package = 0;
            let mut ancestor = pu.parent();
            while let Some(a) = ancestor {
                match a.object_type() {
                    ObjectType::Core => core = a.logical_index(),
                    ObjectType::Package => package = a.logical_index(),
                    _ => {}
                }
                ancestor = a.parent();
            }
            let numa = topo
                .objects_with_type(ObjectType::NUMANode)
                .find(|n| n.cpuset().is_some_and(|s| s.is_set(id)))
                .map_or(0, |n| n.logical_index());
            cpus.push(Cpu {
                id,
                core,
                package,
                numa,
            });
        }
        cpus.sort();
        (!cpus.is_empty()).then_some(Topology {
            cpus,
            source: "hwloc",
        })
    }

    fn restricted_to_affinity(mut self) -> Self {
        if let Some(allowed) = core_affinity::get_core_ids() {
            let allowed: BTreeSet<usize> = allowed.into_iter().map(|c| c.id).collect();
            if !allowed.is_empty() {
                self.cpus.retain(|c| allowed.contains(&c.id));
            }
        }
        self
    }

    /// Distinct physical cores.
    pub fn physical_cores(&self) -> usize {
        self.cpus
            .iter()
            .map(|c| (c.package, c.core))
            .collect::<BTreeSet<_>>()
            .len()
    }

    pub fn numa_nodes(&self) -> usize {
        self.cpus
            .iter()
            .map(|c| c.numa)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// CPUs for `k` workers: first one logical CPU on each physical core, NUMA node by NUMA
    /// node (so a few workers share a node's caches), then the hyperthread siblings, then
    /// around again if there are more workers than CPUs.
    pub fn placement(&self, k: usize) -> Vec<usize> {
        let mut order: Vec<Cpu> = self.cpus.clone();
        // Rank of each CPU among the CPUs of its physical core (0 for the first sibling).
        let mut seen = std::collections::BTreeMap::new();
        let mut ranked: Vec<(usize, Cpu)> = Vec::new();
        order.sort_by_key(|c| (c.numa, c.package, c.core, c.id));
        for c in order {
            let r = seen.entry((c.package, c.core)).or_insert(0usize);
            ranked.push((*r, c));
            *r += 1;
        }
        ranked.sort_by_key(|(r, c)| (*r, c.numa, c.package, c.core, c.id));
        let ids: Vec<usize> = ranked.into_iter().map(|(_, c)| c.id).collect();
        if ids.is_empty() {
            return vec![0; k];
        }
        (0..k).map(|i| ids[i % ids.len()]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    /// Two NUMA nodes, two cores each, two hyperthreads per core: cpus 0-3 on node 0 (cores
    /// 0,1 with siblings 4,5... here laid out as sysfs numbers them).
    fn fake_sysfs() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("chorus-topo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = |p: &str, s: &str| {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        };
        w("cpu/online", "0-7\n");
        // cpu -> (core, package): 0,4 core0 pkg0; 1,5 core1 pkg0; 2,6 core0 pkg1; 3,7 core1 pkg1
        for cpu in 0..8 {
            let core = cpu % 2;
            let pkg = (cpu / 2) % 2;
            w(
                &format!("cpu/cpu{cpu}/topology/core_id"),
                &format!("{core}\n"),
            );
            w(
                &format!("cpu/cpu{cpu}/topology/physical_package_id"),
                &format!("{pkg}\n"),
            );
        }
        w("node/node0/cpulist", "0-1,4-5\n");
        w("node/node1/cpulist", "2-3,6-7\n");
        root
    }

    #[test]
    fn reads_sysfs_and_places_workers_on_distinct_cores_first() {
        let root = fake_sysfs();
        let t = Topology::from_sysfs(&root).unwrap();
        assert_eq!(t.cpus.len(), 8);
        assert_eq!(t.physical_cores(), 4);
        assert_eq!(t.numa_nodes(), 2);
        let p = t.placement(6);
        // four distinct physical cores, node 0 first, then siblings
        assert_eq!(&p[..4], &[0, 1, 2, 3]);
        assert_eq!(&p[4..], &[4, 5]);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// With the `hwloc` feature, the topology comes from hwloc and agrees with sysfs on what
    /// this process can use.
    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_agrees_with_sysfs() {
        let hw = Topology::detect();
        assert_eq!(hw.source, "hwloc");
        let fs = Topology::from_sysfs(Path::new("/sys/devices/system"))
            .unwrap()
            .restricted_to_affinity();
        let ids = |t: &Topology| t.cpus.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(&hw), ids(&fs));
        assert_eq!(hw.physical_cores(), fs.physical_cores());
    }

    #[test]
    fn this_machine_has_a_topology() {
        let t = Topology::detect();
        assert!(!t.cpus.is_empty());
        assert_eq!(t.placement(3).len(), 3);
    }
}
