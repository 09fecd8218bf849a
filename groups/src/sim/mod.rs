//! A deterministic simulator: a whole cluster in one thread, on virtual time.
//!
//! One seed drives everything random: message latency and jitter (hence reordering), loss,
//! duplication, partitions (symmetric and one-way), crashes and restarts, and the workload a
//! test builds on top. Nothing reads a clock or an unseeded RNG, and every collection iterated
//! in a decision is ordered, so a seed replays the same run exactly. A failing test prints its
//! seed; re-running with that seed reproduces the failure.
//!
//! [`Sim`] is generic over the [`Actor`] it runs (a [`crate::GroupsNode`] here; replicas and
//! client proxies in the engine); [`GroupsSim`] adds the multicast workload, recording and
//! checking.

mod groups;
mod net;
pub mod seeds;

pub use groups::{GroupsSim, SimOptions};
pub use net::{NetFaults, Network};

use crate::ids::NodeId;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// A sans-IO process the simulator can run.
pub trait Actor {
    type Msg: Clone;
    fn handle(&mut self, from: NodeId, msg: Self::Msg);
    fn tick(&mut self);
    fn take_outgoing(&mut self, out: &mut Vec<(NodeId, Self::Msg)>);
    /// The link to `peer` came back after a partition or a restart.
    fn reconnected(&mut self, _peer: NodeId) {}
    /// The virtual time, in microseconds, given before every `handle` and `tick` (for actors
    /// that record when things happen, such as clients recording histories).
    fn set_time(&mut self, _now_us: u64) {}
}

impl Actor for crate::GroupsNode {
    type Msg = crate::NetMsg;
    fn handle(&mut self, from: NodeId, msg: crate::NetMsg) {
        crate::GroupsNode::handle(self, from, msg)
    }
    fn tick(&mut self) {
        crate::GroupsNode::tick(self)
    }
    fn take_outgoing(&mut self, out: &mut Vec<(NodeId, crate::NetMsg)>) {
        crate::GroupsNode::take_outgoing(self, out)
    }
    fn reconnected(&mut self, peer: NodeId) {
        crate::GroupsNode::reconnected(self, peer)
    }
}

/// A delivery observer: `(sent, delivered)` times, sender, receiver, message.
pub type TraceFn<M> = Box<dyn FnMut((u64, u64), NodeId, NodeId, &M)>;

enum Event<M> {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: M,
        sent_us: u64,
    },
    Tick {
        node: NodeId,
        incarnation: u32,
    },
}

struct Slot<A> {
    actor: Option<A>,
    incarnation: u32,
}

/// The simulated cluster.
pub struct Sim<A: Actor> {
    rng: ChaCha8Rng,
    seed: u64,
    now_us: u64,
    tick_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event<A::Msg>>,
    slots: BTreeMap<NodeId, Slot<A>>,
    pub net: Network,
    scratch: Vec<(NodeId, A::Msg)>,
    /// Messages sent, lost, duplicated (statistics).
    pub stats: SimStats,
    /// Called for every message delivered (debugging aid): (sent, delivered) times, from, to,
    /// message.
    pub trace: Option<TraceFn<A::Msg>>,
}

#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delivered: u64,
    pub crashes: u64,
    pub restarts: u64,
}

impl<A: Actor> Sim<A> {
    pub fn new(seed: u64, tick_us: u64, net: Network) -> Self {
        Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            now_us: 0,
            tick_us,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            slots: BTreeMap::new(),
            net,
            scratch: Vec::new(),
            stats: SimStats::default(),
            trace: None,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The simulation's RNG, for workloads that must replay with the seed.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    fn schedule(&mut self, at: u64, e: Event<A::Msg>) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    /// Adds a running node (incarnation 0) whose ticks start at a random phase.
    pub fn add(&mut self, id: NodeId, actor: A) {
        self.slots.insert(
            id,
            Slot {
                actor: Some(actor),
                incarnation: 0,
            },
        );
        let phase = self.rng.random_range(0..self.tick_us);
        self.schedule(
            self.now_us + phase,
            Event::Tick {
                node: id,
                incarnation: 0,
            },
        );
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots.keys().copied()
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.slots.get(&id).is_some_and(|s| s.actor.is_some())
    }

    pub fn incarnation(&self, id: NodeId) -> u32 {
        self.slots.get(&id).map_or(0, |s| s.incarnation)
    }

    pub fn up_nodes(&self) -> BTreeSet<NodeId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.actor.is_some())
            .map(|(&n, _)| n)
            .collect()
    }

    pub fn actor(&self, id: NodeId) -> Option<&A> {
        self.slots.get(&id).and_then(|s| s.actor.as_ref())
    }

    /// Runs `f` on a live node and sends what it produced.
    pub fn with<R>(&mut self, id: NodeId, f: impl FnOnce(&mut A) -> R) -> Option<R> {
        let now = self.now_us;
        let actor = self.slots.get_mut(&id)?.actor.as_mut()?;
        actor.set_time(now);
        let r = f(actor);
        self.flush(id);
        Some(r)
    }

    /// Crashes a node: it loses its actor (what it persisted is the caller's business) and
    /// every message to it is dropped until it restarts.
    pub fn crash(&mut self, id: NodeId) -> Option<A> {
        let slot = self.slots.get_mut(&id)?;
        let a = slot.actor.take();
        if a.is_some() {
            self.stats.crashes += 1;
        }
        a
    }

    /// Restarts a crashed node with a new incarnation built by `make(incarnation)`.
    pub fn restart(&mut self, id: NodeId, make: impl FnOnce(u32) -> A) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.actor.is_some() {
            return;
        }
        slot.incarnation += 1;
        let inc = slot.incarnation;
        slot.actor = Some(make(inc));
        self.stats.restarts += 1;
        let phase = self.rng.random_range(0..self.tick_us);
        self.schedule(
            self.now_us + phase,
            Event::Tick {
                node: id,
                incarnation: inc,
            },
        );
        let others: Vec<NodeId> = self.up_nodes().into_iter().filter(|&n| n != id).collect();
        for n in others {
            self.with(n, |a| a.reconnected(id));
        }
    }

    /// Tells both ends of each pair that their link is back (after a partition heals).
    pub fn reconnect_all(&mut self) {
        let up: Vec<NodeId> = self.up_nodes().into_iter().collect();
        for &a in &up {
            for &b in &up {
                if a != b {
                    self.with(a, |x| x.reconnected(b));
                }
            }
        }
    }

    fn flush(&mut self, id: NodeId) {
        let Some(actor) = self.slots.get_mut(&id).and_then(|s| s.actor.as_mut()) else {
            return;
        };
        actor.take_outgoing(&mut self.scratch);
        let out = std::mem::take(&mut self.scratch);
        for (to, msg) in out {
            self.send(id, to, msg);
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: A::Msg) {
        self.stats.sent += 1;
        match self.net.fate(&mut self.rng, from, to) {
            None => self.stats.lost += 1,
            Some((delay, dup)) => {
                if let Some(d2) = dup {
                    self.stats.duplicated += 1;
                    self.schedule(
                        self.now_us + d2,
                        Event::Deliver {
                            from,
                            to,
                            msg: msg.clone(),
                            sent_us: self.now_us,
                        },
                    );
                }
                self.schedule(
                    self.now_us + delay,
                    Event::Deliver {
                        from,
                        to,
                        msg,
                        sent_us: self.now_us,
                    },
                );
            }
        }
    }

    /// Processes the next event. Returns the node it touched (if any) and the new time.
    pub fn step(&mut self) -> Option<NodeId> {
        let Reverse((at, seq)) = self.queue.pop()?;
        let event = self.events.remove(&seq).expect("scheduled event");
        self.now_us = self.now_us.max(at);
        match event {
            Event::Deliver {
                from,
                to,
                msg,
                sent_us,
            } => {
                // Partitions also cut messages already in flight when they arrive.
                if !self.net.connected(from, to) {
                    self.stats.lost += 1;
                    return None;
                }
                let actor = self.slots.get_mut(&to)?.actor.as_mut()?;
                self.stats.delivered += 1;
                actor.set_time(self.now_us);
                if let Some(t) = self.trace.as_mut() {
                    t((sent_us, self.now_us), from, to, &msg);
                }
                actor.handle(from, msg);
                self.flush(to);
                Some(to)
            }
            Event::Tick { node, incarnation } => {
                let slot = self.slots.get_mut(&node)?;
                if slot.incarnation != incarnation {
                    return None;
                }
                let actor = slot.actor.as_mut()?;
                actor.set_time(self.now_us);
                actor.tick();
                self.flush(node);
                let next = self.now_us + self.tick_us;
                self.schedule(next, Event::Tick { node, incarnation });
                Some(node)
            }
        }
    }

    /// Time of the next event.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs events until virtual time `until_us`, calling `after` on each touched node.
    pub fn run_until(&mut self, until_us: u64, mut after: impl FnMut(&mut Self, NodeId)) {
        while self.next_at().is_some_and(|t| t <= until_us) {
            if let Some(n) = self.step() {
                after(self, n);
            }
        }
        self.now_us = self.now_us.max(until_us);
    }
}
