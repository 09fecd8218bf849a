//! # DynaStar (reference notes, e)
//!
//! The oracle keeps a workload graph of the objects ([`workload`]) from the hints partitions
//! send, and periodically computes a better placement ([`placement`]).
pub mod placement;
pub mod workload;
