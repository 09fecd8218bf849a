//! Chirper, a Twitter-like service on DS-SMR (scale-out issue).

pub mod graph;
