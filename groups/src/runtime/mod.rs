//! Runtimes that drive [`crate::GroupsNode`]: threads and channels in one process, or one
//! process per node over TCP (the third, the deterministic simulator, is [`crate::sim`]); and
//! the metrics endpoint of a running process ([`metrics_http`]).

pub mod inproc;
pub mod metrics_http;
pub mod tcp;

use std::sync::Arc;

/// Wakes a node's event loop from another thread (for example a worker thread with replies to
/// send), so the loop does not wait for its next tick.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Waker(Arc::new(f))
    }

    /// A waker that does nothing (the simulator steps nodes itself).
    pub fn noop() -> Self {
        Waker::new(|| {})
    }

    pub fn wake(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}
