//! The in-process runtime: every node on its own thread, connected by crossbeam channels.
//!
//! Each node thread loops: wait for input or the next tick; handle every message that is
//! waiting (so one batch collects everything that arrived meanwhile); tick if due; let the
//! node's [`App`] run (it takes deliveries and may multicast); drain outgoing messages into the
//! other nodes' channels. Messages travel as values, without encoding.

use crate::config::ClusterConfig;
use crate::ids::NodeId;
use crate::message::NetMsg;
use crate::node::{GroupsNode, NodeOptions};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Application code that runs on a node's thread.
pub trait App: Send + 'static {
    /// Called after each round of input: drain deliveries, submit multicasts.
    fn step(&mut self, node: &mut GroupsNode);
}

/// An [`App`] that does nothing (pure acceptors).
pub struct Idle;
impl App for Idle {
    fn step(&mut self, _: &mut GroupsNode) {}
}

type Job = Box<dyn FnOnce(&mut GroupsNode) + Send>;

enum Input {
    Net(NodeId, NetMsg),
    Run(Job),
    Stop,
}

/// A running node.
pub struct NodeHandle<A> {
    pub id: NodeId,
    tx: Sender<Input>,
    thread: Option<JoinHandle<A>>,
}

impl<A> NodeHandle<A> {
    /// Runs `f` on the node's thread, between two rounds of input.
    pub fn run(&self, f: impl FnOnce(&mut GroupsNode) + Send + 'static) {
        let _ = self.tx.send(Input::Run(Box::new(f)));
    }

    /// Runs `f` on the node's thread and waits for its result (`None` if the node stopped).
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut GroupsNode) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.run(move |n| {
            let _ = tx.send(f(n));
        });
        rx.recv().ok()
    }
}

/// A cluster of node threads in this process.
pub struct InProcCluster<A> {
    nodes: BTreeMap<NodeId, NodeHandle<A>>,
}

impl<A: App> InProcCluster<A> {
    /// Starts every node of `cfg` with the app `make_app(id)` and in-memory logs.
    pub fn start(cfg: ClusterConfig, mut make_app: impl FnMut(NodeId) -> A) -> Self {
        let cfg = Arc::new(cfg);
        let channels: BTreeMap<NodeId, (Sender<Input>, Receiver<Input>)> =
            cfg.nodes.iter().map(|n| (n.id, unbounded())).collect();
        let peers: Arc<BTreeMap<NodeId, Sender<Input>>> = Arc::new(
            channels
                .iter()
                .map(|(&id, (tx, _))| (id, tx.clone()))
                .collect(),
        );
        let mut nodes = BTreeMap::new();
        for (id, (tx, rx)) in channels {
            let node = GroupsNode::in_memory(cfg.clone(), id, NodeOptions::default());
            let app = make_app(id);
            let peers = peers.clone();
            let tick = Duration::from_micros(cfg.tuning.tick_us);
            let thread = std::thread::Builder::new()
                .name(format!("node-{}", id.0))
                .spawn(move || node_loop(node, app, rx, &peers, tick))
                .expect("spawn node thread");
            nodes.insert(
                id,
                NodeHandle {
                    id,
                    tx,
                    thread: Some(thread),
                },
            );
        }
        InProcCluster { nodes }
    }

    pub fn node(&self, id: NodeId) -> &NodeHandle<A> {
        &self.nodes[&id]
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Stops a node abruptly (a crash: its in-memory state is gone; messages to it are
    /// dropped) and returns its app.
    pub fn kill(&mut self, id: NodeId) -> Option<A> {
        let mut h = self.nodes.remove(&id)?;
        let _ = h.tx.send(Input::Stop);
        h.thread.take().and_then(|t| t.join().ok())
    }

    /// Stops every node and returns their apps.
    pub fn stop(mut self) -> BTreeMap<NodeId, A> {
        let ids = self.ids();
        ids.into_iter()
            .filter_map(|id| self.kill(id).map(|a| (id, a)))
            .collect()
    }
}

impl<A> Drop for InProcCluster<A> {
    fn drop(&mut self) {
        for h in self.nodes.values_mut() {
            let _ = h.tx.send(Input::Stop);
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Most inputs handled before the node ticks, runs its app and sends.
const INPUTS_PER_ROUND_MAX: usize = 4096;

fn node_loop<A: App>(
    mut node: GroupsNode,
    mut app: A,
    rx: Receiver<Input>,
    peers: &BTreeMap<NodeId, Sender<Input>>,
    tick: Duration,
) -> A {
    let me = node.id();
    let mut next_tick = Instant::now() + tick;
    let mut out = Vec::new();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return app,
        };
        let mut input = first;
        let mut handled = 0;
        while let Some(i) = input.take() {
            match i {
                Input::Net(from, msg) => node.handle(from, msg),
                Input::Run(job) => job(&mut node),
                Input::Stop => return app,
            }
            handled += 1;
            if handled < INPUTS_PER_ROUND_MAX {
                input = rx.try_recv().ok();
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            node.tick();
            next_tick += tick;
            if next_tick < now {
                // Far behind (a stalled thread): skip the missed ticks instead of bursting.
                next_tick = now + tick;
            }
        }
        app.step(&mut node);
        node.take_outgoing(&mut out);
        for (to, msg) in out.drain(..) {
            if let Some(tx) = peers.get(&to) {
                let _ = tx.send(Input::Net(me, msg));
            }
        }
    }
}
