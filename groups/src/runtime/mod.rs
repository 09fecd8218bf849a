//! Runtimes that drive [`crate::GroupsNode`]: threads and channels in one process, or one
//! process per node over TCP. (The third, the deterministic simulator, is [`crate::sim`].)

pub mod inproc;
pub mod tcp;
