//! The few blocking primitives the engine uses, from `std` normally and from `shuttle` when
//! the `shuttle` feature model-checks them (the rendezvous tests run under it).

#[cfg(not(feature = "shuttle"))]
pub use std::sync::{Condvar, Mutex};

#[cfg(feature = "shuttle")]
pub use shuttle::sync::{Condvar, Mutex};
