//! Scale-up: P-SMR and opt-PSMR replicas (reference notes, sections a and b).

pub mod core;
pub mod rendezvous;
pub mod replica;
