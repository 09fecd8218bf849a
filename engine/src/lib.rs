//! # engine: replicas and client proxies
//!
//! Scale-up (P-SMR, opt-PSMR): a replica runs one worker thread per group; commands that touch
//! one worker's state run there without locks, commands that touch several run on the lowest
//! involved worker while the others are parked. See [`Service`] for the contract a service
//! implements, [`psmr`] for the replica, [`client`] for the client proxy.

pub mod calls;
pub mod checkpoint;
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
