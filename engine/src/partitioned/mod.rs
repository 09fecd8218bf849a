//! # Scale-out: partitioned state (S-SMR and DS-SMR)
//!
//! The state of a [`service::PartitionedService`] is a set of objects spread over
//! partitions; each partition is a group of replicas ordered by its own log.
//!
//! - **S-SMR** (reference notes, d): objects stay where the placement rule puts them. A
//!   command is multicast to every partition holding its objects; the partitions exchange the
//!   objects (each exchange doubles as a signal, for execution atomicity) and each executes the
//!   whole command, keeping the new values of its own objects.
//! - **DS-SMR** (d'): an *oracle* partition tracks where each object is. Clients ask it (or
//!   their location cache), move the objects of a multi-partition access into one partition,
//!   and send the access there. After `retry_max` attempts a command falls back to S-SMR.
//!
//! Modules: [`service`] (the contract), [`msg`], [`attempts`] (at-most-once across attempts),
//! [`server`] (a partition replica), [`oracle`], [`proxy`] (the client), [`reads`] (reads
//! served off the log), [`replica`] (hosting
//! the cores on a node, with checkpoints and state transfer), [`layout`], [`blueprint`]
//! (simulated deployments and their invariants).
//!
//! The partition logic ([`server`]) is a sans-IO core apart from how it is executed
//! ([`replica`] runs it on one thread), so a partition replica can later run several P-SMR
//! workers.

pub mod attempts;
pub mod blueprint;
pub mod combined;
mod common;
pub mod dynastar;
pub mod layout;
pub mod msg;
pub mod oracle;
pub mod proxy;
pub mod reads;
pub mod replica;
pub mod server;
pub mod service;

pub use common::Output;

/// How objects are located.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Static placement, multi-partition commands with signals and value exchange.
    Ssmr,
    /// An oracle, moves, a client location cache, and the S-SMR fallback.
    Dssmr,
    /// An oracle with a workload graph that repartitions; multi-partition commands borrow
    /// the objects they need and return them.
    Dynastar,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ssmr => "s-smr",
            Scheme::Dssmr => "ds-smr",
            Scheme::Dynastar => "dynastar",
        }
    }

    /// Parses a scheme's name.
    pub fn parse(s: &str) -> Result<Scheme, String> {
        match s {
            "s-smr" => Ok(Scheme::Ssmr),
            "ds-smr" => Ok(Scheme::Dssmr),
            "dynastar" => Ok(Scheme::Dynastar),
            other => Err(format!(
                "unknown scheme {other:?} (s-smr, ds-smr, dynastar)"
            )),
        }
    }

    /// Whether the scheme has an oracle (group `partitions`).
    pub fn has_oracle(self) -> bool {
        self != Scheme::Ssmr
    }
}

/// How partition and oracle replicas run.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub scheme: Scheme,
    /// Ticks a replica waits for a missing exchange before asking every replica of the
    /// partition it waits for (a restarted replica, or a crashed designated sender).
    pub pull_ticks: u64,
    /// Exchanges each replica keeps for such pulls.
    pub outbox_max: usize,
    /// Record every membership change's digest (tests compare oracle and partitions).
    pub record_views: bool,
    /// Run the oracle as the seed's Algorithm 4 is printed: it answers creates and deletes
    /// but never adds the object to its map or removes it (reference notes, d'.9). Only for
    /// demonstrating that the fix is needed; never enable it otherwise.
    pub oracle_as_published: bool,
    /// DynaStar: hints, repartitioning and placement.
    pub dynastar: dynastar::DynaOptions,
    /// Combined mode (S-SMR and DS-SMR): workers per partition replica, each owning one
    /// cell of the partition ([`combined`]); 1 (the default) is a plain partition.
    pub workers: u32,
    /// Combined mode: run each worker on its own thread (production); otherwise the
    /// replica's thread steps them in turn (the simulator).
    pub worker_threads: bool,
    /// Combined mode with `worker_threads`: pin the thread of worker `w` of partition `p`
    /// (cell `c = p * workers + w`) to logical CPU `pin_cpus[c % len]`. A list of `workers`
    /// CPUs (e.g. [`crate::topology::Topology::placement`]`(workers)`, what a server process
    /// holding one replica wants) places by worker; a list of `partitions x workers` places
    /// every cell apart (one process holding a replica of every partition). A CPU the
    /// process may not run on is warned about and left unpinned. `None` (the default)
    /// leaves the threads to the scheduler.
    pub pin_cpus: Option<Vec<usize>>,
    /// Partition replicas merge their logs themselves, so they serve reads off the log
    /// ([`reads`]; a replica whose node merges for it refuses them, and the client orders
    /// them). TCP nodes always do.
    pub fast_reads: bool,
}

impl ServerOptions {
    pub fn new(scheme: Scheme) -> Self {
        ServerOptions {
            scheme,
            pull_ticks: 20,
            outbox_max: 100_000,
            record_views: false,
            oracle_as_published: false,
            dynastar: dynastar::DynaOptions::default(),
            workers: 1,
            worker_threads: false,
            pin_cpus: None,
            fast_reads: false,
        }
    }
}
