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
use crate::runtime::Waker;
use crossbeam_channel::{unbounded, Receiver, Select, Sender};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Application code that runs on a node's thread.
pub trait App: Send + 'static {
    /// Called once, on the node's thread, before the first step: `waker` makes the node's loop
    /// run a round (and so call [`App::step`]) as soon as possible, from any thread.
    fn attach(&mut self, _node: &mut GroupsNode, _waker: Waker) {}
    /// Called after each round of input: drain deliveries, submit multicasts.
    fn step(&mut self, node: &mut GroupsNode);
    /// Called once when the node stops.
    fn detach(&mut self, _node: &mut GroupsNode) {}
}

/// An [`App`] that does nothing (pure acceptors).
pub struct Idle;
impl App for Idle {
    fn step(&mut self, _: &mut GroupsNode) {}
}

type Job = Box<dyn FnOnce(&mut GroupsNode) + Send>;

enum Input {
    /// Everything one node sent this node in one round.
    Net(NodeId, Vec<NetMsg>),
    Run(Job),
    Wake,
    Stop,
}

/// The two inboxes of a node: leader-election traffic is read before everything else.
#[derive(Clone)]
struct Inbox {
    control: Sender<Input>,
    data: Sender<Input>,
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
    pub fn start(cfg: ClusterConfig, make_app: impl FnMut(NodeId) -> A) -> Self {
        Self::start_with(cfg, |_| NodeOptions::default(), make_app)
    }

    /// Like [`InProcCluster::start`], with per-node options.
    pub fn start_with(
        cfg: ClusterConfig,
        options: impl Fn(NodeId) -> NodeOptions,
        mut make_app: impl FnMut(NodeId) -> A,
    ) -> Self {
        let cfg = Arc::new(cfg);
        type Pair = (Sender<Input>, Receiver<Input>);
        let channels: BTreeMap<NodeId, (Pair, Pair)> = cfg
            .nodes
            .iter()
            .map(|n| (n.id, (unbounded(), unbounded())))
            .collect();
        let peers: Arc<BTreeMap<NodeId, Inbox>> = Arc::new(
            channels
                .iter()
                .map(|(&id, ((ctl, _), (data, _)))| {
                    (
                        id,
                        Inbox {
                            control: ctl.clone(),
                            data: data.clone(),
                        },
                    )
                })
                .collect(),
        );
        let mut nodes = BTreeMap::new();
        for (id, ((_, control_rx), (tx, rx))) in channels {
            let node = GroupsNode::in_memory(cfg.clone(), id, options(id));
            let app = make_app(id);
            let peers = peers.clone();
            let tick = Duration::from_micros(cfg.tuning.tick_us);
            let thread = std::thread::Builder::new()
                .name(format!("node-{}", id.0))
                .spawn(move || {
                    let me = peers[&id].control.clone();
                    let waker = Waker::new(move || {
                        let _ = me.send(Input::Wake);
                    });
                    node_loop(node, app, waker, control_rx, rx, &peers, tick)
                })
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

/// Most messages handled before the node ticks, runs its app and sends.
const MESSAGES_PER_ROUND_MAX: usize = 4096;

fn node_loop<A: App>(
    mut node: GroupsNode,
    mut app: A,
    waker: Waker,
    control: Receiver<Input>,
    data: Receiver<Input>,
    peers: &BTreeMap<NodeId, Inbox>,
    tick: Duration,
) -> A {
    let me = node.id();
    let mut next_tick = Instant::now() + tick;
    let mut out = Vec::new();
    app.attach(&mut node, waker);
    loop {
        // Wait for either inbox or the next tick.
        let wait = next_tick.saturating_duration_since(Instant::now());
        if control.is_empty() && data.is_empty() && !wait.is_zero() {
            let mut sel = Select::new();
            sel.recv(&control);
            sel.recv(&data);
            let _ = sel.ready_timeout(wait);
        }
        let mut handled = 0;
        while handled < MESSAGES_PER_ROUND_MAX {
            // Control traffic first, every time round.
            let input = match control.try_recv() {
                Ok(i) => i,
                Err(_) => match data.try_recv() {
                    Ok(i) => i,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        app.detach(&mut node);
                        return app;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                },
            };
            match input {
                Input::Net(from, msgs) => {
                    handled += msgs.len();
                    for msg in msgs {
                        node.handle(from, msg);
                    }
                }
                Input::Run(job) => {
                    handled += 1;
                    job(&mut node)
                }
                Input::Wake => {}
                Input::Stop => {
                    app.detach(&mut node);
                    return app;
                }
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
        // One channel send (one wake-up) per destination and kind per round; the sort is
        // stable, so each destination still sees this node's messages in order.
        out.sort_by_key(|(to, m)| (*to, !m.is_control()));
        let mut batch: Vec<NetMsg> = Vec::new();
        let mut it = out.drain(..).peekable();
        while let Some((to, msg)) = it.next() {
            let control = msg.is_control();
            batch.push(msg);
            if it
                .peek()
                .is_none_or(|(next, m)| *next != to || m.is_control() != control)
            {
                if let Some(inbox) = peers.get(&to) {
                    let ch = if control { &inbox.control } else { &inbox.data };
                    let _ = ch.send(Input::Net(me, std::mem::take(&mut batch)));
                }
                batch.clear();
            }
        }
    }
}
