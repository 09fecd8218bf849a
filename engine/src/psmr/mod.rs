//! Scale-up: P-SMR and opt-PSMR (reference notes, sections a and b).
//!
//! - [`service`]: the contract a scale-up service implements (shards, command maps, execute).
//! - [`msg`], [`proxy`]: the client's requests and the replicas' replies; the client proxy.
//! - [`client_table`], [`executor`]: at-most-once execution and what a worker does with a
//!   delivered request.
//! - [`rendezvous`]: shard lending between workers for multi-worker commands.
//! - [`replica`]: the threaded replica on a `groups` node; [`snapshot`]: its checkpoints.
//! - [`deployment`]: the cluster layout of a P-SMR deployment.

pub mod client_table;
pub mod deployment;
pub mod executor;
pub mod msg;
pub mod proxy;
pub mod rendezvous;
pub mod replica;
pub mod service;
pub mod snapshot;
