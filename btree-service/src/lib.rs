//! # btree-service: a replicated in-memory B+-tree
//!
//! [`tree::BPlusTree`] is the data structure (configurable fan-out, splits, merges and
//! redistribution on delete); [`service::TreeService`] makes it an engine service whose key
//! space is range-partitioned across P-SMR workers, with the optimistic (opt-PSMR) check of
//! whether an insert or delete stays inside its worker's subtree.

pub mod cli;
pub mod flags;
pub mod keys;
pub mod load;
pub mod model;
pub mod ranges;
pub mod rebalance;
pub mod service;
pub mod tree;
pub mod ycsb;
