//! Chirper, a Twitter-like service on the scale-out engine (S-SMR and DS-SMR): the service,
//! its social-graph generator, its specification, workloads and binaries.

pub mod cli;
pub mod graph;
pub mod load;
pub mod model;
pub mod service;
