//! Scale-up: P-SMR and opt-PSMR (reference notes, sections a and b).
//!
//! - [`service`]: the contract a scale-up service implements (shards, command maps, execute).
//! - [`msg`], [`proxy`]: the client's requests and the replicas' replies; the client proxy.
//! - [`client_table`], [`executor`]: at-most-once execution and what a worker does with a
//!   delivered request.
//! - [`workers`]: the worker set as a sans-IO state machine; [`rendezvous`]: shard lending
//!   between workers for multi-worker commands.
//! - [`replica`]: the replica core (the worker set behind the one replica host), run by one
//!   of two drivers: [`threaded`] (a thread per worker, production) or [`scheduled`] (a
//!   seeded scheduler, the simulator); [`snapshot`]: its checkpoints.
//! - [`deployment`]: the cluster layout of a P-SMR deployment.

pub mod blueprint;
pub mod client_table;
pub mod deployment;
pub mod executor;
pub mod msg;
pub mod proxy;
pub mod rendezvous;
pub mod replica;
pub mod scheduled;
pub mod service;
pub mod snapshot;
pub mod threaded;
pub mod workers;
