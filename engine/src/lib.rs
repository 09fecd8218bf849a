//! # engine: replicas and client proxies
//!
//! Scale-up (P-SMR, opt-PSMR): a replica runs one worker per group; commands that touch one
//! worker's state run there without locks, commands that touch several run on the lowest
//! involved worker while the others lend it their shards. Scale-out (S-SMR, DS-SMR): the state
//! is partitioned over groups of replicas. See [`Service`] for the contract a scale-up service
//! implements, `docs/tutorial.md` for a walk from it to a tested, running service.
//!
//! The generic parts, the same for every protocol and runtime: [`host`] (the one sans-IO
//! replica host and client host), [`wire`] (the typed envelopes), [`checkpoint`], [`calls`]
//! (blocking calls), [`sim`] (the simulator's engine deployments), [`lincheck`], [`metrics`],
//! [`serve`] (the service kit), [`inproc`]. The protocol cores: [`psmr`] (P-SMR and opt-PSMR:
//! executor, worker set, rendezvous, proxy) and [`partitioned`] (S-SMR and DS-SMR).

pub mod calls;
pub mod checkpoint;
pub mod client_records;
pub mod hash;
pub mod host;
pub mod inproc;
pub mod lincheck;
pub mod load;
pub mod metrics;
pub mod partitioned;
pub mod psmr;
pub mod serve;
pub mod sim;
pub mod sync;
pub mod testing;
pub mod topology;
pub mod unreplicated;
pub mod wire;

pub use psmr::service::{Access, Service, Shards, SnapshotError, Target, Unsafe};

/// The tutorial's runnable snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/tutorial.md")]
pub struct Tutorial;
