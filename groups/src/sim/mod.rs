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
mod storage;

pub use groups::{GroupsSim, SimOptions, StepCrash, StepCrashRecord};
pub use net::{NetFaults, Network};
pub use storage::{SimStorage, StepClock};

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
    /// The size of a message on the wire, for the [`CpuModel`] (0 if unknown).
    fn msg_bytes(_msg: &Self::Msg) -> usize {
        0
    }
    /// Application work done since the last call, in microseconds of CPU, for the
    /// [`CpuModel`] (executing commands, say). Default none.
    fn take_work_us(&mut self) -> f64 {
        0.0
    }
    /// Work the step handed to other cores of the node's machine (a combined-mode replica's
    /// workers), for the [`CpuModel`]: given that the node's own handling ends at `end_us`,
    /// the time at which that work is done. The node is free again at `end_us`; what the step
    /// sends leaves when both are done. Default: none.
    fn take_offloaded_until(&mut self, _end_us: u64) -> Option<u64> {
        None
    }
}

/// A cost model for simulated performance experiments: every node is a machine with one CPU
/// that handles its messages and ticks one at a time, each taking virtual time; messages leave
/// a node when the handling that produced them ends, and take the network's latency plus their
/// size over the link's bandwidth. Without it (the fault tests) handling takes no time.
///
/// Not modelled: contention on links and switches, multi-core nodes, disk.
#[derive(Clone, Debug)]
pub struct CpuModel {
    /// CPU time to handle one message, plus per byte of it.
    pub per_message_us: f64,
    pub per_byte_ns: f64,
    /// CPU time to handle one tick.
    pub per_tick_us: f64,
    /// Link transmission time per byte (the inverse of bandwidth), added to the latency.
    pub wire_ns_per_byte: f64,
    /// Nodes that take no CPU time (clients, so that they are never the bottleneck).
    pub free: BTreeSet<NodeId>,
}

enum Work<M> {
    Msg {
        from: NodeId,
        msg: M,
        sent_us: u64,
        bytes: usize,
    },
    Tick {
        incarnation: u32,
    },
}

struct Cpu<M> {
    model: CpuModel,
    busy_until: BTreeMap<NodeId, u64>,
    backlog: BTreeMap<NodeId, std::collections::VecDeque<Work<M>>>,
    /// Time at which messages being sent leave (the end of the current handling).
    depart_us: Option<u64>,
    /// Virtual CPU time used per node.
    pub used_us: BTreeMap<NodeId, f64>,
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
    fn msg_bytes(msg: &crate::NetMsg) -> usize {
        wire_bytes(msg)
    }
}

/// A network fault that fault campaigns draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The nodes split into two sides that cannot reach each other.
    Partition(Vec<NodeId>, Vec<NodeId>),
    /// Messages from the first node to the second are dropped (none if it is the same node).
    OneWay(NodeId, NodeId),
}

impl Cut {
    /// Draws a cut over `nodes` from `rng`: half the time a partition (each node on a side by
    /// a coin), otherwise a one-way cut between two nodes drawn independently.
    pub fn draw(rng: &mut ChaCha8Rng, nodes: &[NodeId]) -> Cut {
        if rng.random_bool(0.5) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for &n in nodes {
                if rng.random_bool(0.5) {
                    a.push(n)
                } else {
                    b.push(n)
                }
            }
            Cut::Partition(a, b)
        } else {
            let x = nodes[rng.random_range(0..nodes.len())];
            let y = nodes[rng.random_range(0..nodes.len())];
            Cut::OneWay(x, y)
        }
    }
}

/// The encoded size of a message (what the TCP runtime would send, without framing).
pub fn wire_bytes(msg: &crate::NetMsg) -> usize {
    use crate::codec::Codec;
    crate::codec::Postcard.encode(msg).map_or(0, |b| b.len())
}

/// Asked after a node handled an event or a tick and before what it produced is sent: `true`
/// crashes the node right there (see [`Sim::step_with`]).
pub type CrashMidStep<'a> = &'a mut dyn FnMut(NodeId) -> bool;

/// A delivery observer: `(sent, delivered)` times, sender, receiver, message.
pub type TraceFn<M> = Box<dyn FnMut((u64, u64), NodeId, NodeId, &M)>;

enum Event<M> {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: M,
        sent_us: u64,
        /// Its size (cost model only; 0 otherwise).
        bytes: usize,
    },
    Tick {
        node: NodeId,
        incarnation: u32,
    },
    /// A busy node becomes free (cost model only).
    Resume {
        node: NodeId,
    },
}

struct Slot<A> {
    actor: Option<A>,
    incarnation: u32,
}

/// A paused node (as by SIGSTOP): what reaches it is held, in arrival order, until it resumes.
struct Paused<M> {
    held: Vec<Event<M>>,
    /// Its tick chain was interrupted (a tick fell due while it was paused).
    tick_due: bool,
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
    cpu: Option<Cpu<A::Msg>>,
    paused: BTreeMap<NodeId, Paused<A::Msg>>,
}

#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delivered: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
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
            cpu: None,
            paused: BTreeMap::new(),
        }
    }

    /// Turns the cost model on (see [`CpuModel`]).
    pub fn set_cpu_model(&mut self, model: CpuModel) {
        self.cpu = Some(Cpu {
            model,
            busy_until: BTreeMap::new(),
            backlog: BTreeMap::new(),
            depart_us: None,
            used_us: BTreeMap::new(),
        });
    }

    /// Virtual CPU time each node has used, in microseconds (cost model only).
    pub fn cpu_used_us(&self) -> BTreeMap<NodeId, f64> {
        self.cpu
            .as_ref()
            .map(|c| c.used_us.clone())
            .unwrap_or_default()
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
        if let Some(cpu) = self.cpu.as_mut() {
            cpu.backlog.remove(&id);
        }
        // What a stopped process had not read yet dies with it.
        self.paused.remove(&id);
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

    /// Pauses a live node, as SIGSTOP does: it keeps its state but takes no step (no ticks, no
    /// messages) until [`Sim::resume`]; messages that reach it meanwhile are held in arrival
    /// order, as a stopped process's socket buffers would hold them, and handed over when it
    /// resumes. Its peers see nothing but silence. Returns false if the node is down or
    /// already paused.
    pub fn pause(&mut self, id: NodeId) -> bool {
        if !self.is_up(id) || self.paused.contains_key(&id) {
            return false;
        }
        self.paused.insert(
            id,
            Paused {
                held: Vec::new(),
                tick_due: false,
            },
        );
        self.stats.pauses += 1;
        true
    }

    /// Resumes a paused node (SIGCONT): what was held is delivered now, in order, and its ticks
    /// start again (its clock jumps to the present, as a stopped process's does). Returns false
    /// if it was not paused.
    pub fn resume(&mut self, id: NodeId) -> bool {
        let Some(p) = self.paused.remove(&id) else {
            return false;
        };
        let now = self.now_us;
        for e in p.held {
            self.schedule(now, e);
        }
        if p.tick_due {
            let incarnation = self.incarnation(id);
            self.schedule(
                now,
                Event::Tick {
                    node: id,
                    incarnation,
                },
            );
        }
        true
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.paused.contains_key(&id)
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

    /// Crashes `id` in the middle of a step: what it produced is never sent.
    fn crash_dropping_outputs(&mut self, id: NodeId) {
        if let Some(actor) = self.slots.get_mut(&id).and_then(|s| s.actor.as_mut()) {
            actor.take_outgoing(&mut self.scratch);
            self.scratch.clear();
        }
        self.crash(id);
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
        let (depart, bytes, wire) = match self.cpu.as_ref() {
            Some(cpu) => {
                let bytes = A::msg_bytes(&msg);
                (
                    cpu.depart_us.unwrap_or(self.now_us),
                    bytes,
                    (bytes as f64 * cpu.model.wire_ns_per_byte / 1000.0) as u64,
                )
            }
            None => (self.now_us, 0, 0),
        };
        match self.net.fate(&mut self.rng, from, to) {
            None => self.stats.lost += 1,
            Some((delay, dup)) => {
                let (delay, dup) = (
                    delay + wire + (depart - self.now_us),
                    dup.map(|d| d + wire + (depart - self.now_us)),
                );
                if let Some(d2) = dup {
                    self.stats.duplicated += 1;
                    self.schedule(
                        self.now_us + d2,
                        Event::Deliver {
                            from,
                            to,
                            msg: msg.clone(),
                            sent_us: self.now_us,
                            bytes,
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
                        bytes,
                    },
                );
            }
        }
    }

    /// With the cost model: queues `work` behind what `node` is doing, or starts it now.
    /// Returns the work to do now, if the node is free.
    fn admit(&mut self, node: NodeId, work: Work<A::Msg>) -> Option<Work<A::Msg>> {
        let now = self.now_us;
        let cpu = self.cpu.as_mut()?;
        let free_at = cpu.busy_until.get(&node).copied().unwrap_or(0);
        let q = cpu.backlog.entry(node).or_default();
        if free_at <= now && q.is_empty() {
            return Some(work);
        }
        let first = q.is_empty();
        q.push_back(work);
        if first {
            let at = free_at.max(now);
            self.schedule(at, Event::Resume { node });
        }
        None
    }

    /// With the cost model: does `work` on `node` now and occupies its CPU.
    fn perform(
        &mut self,
        node: NodeId,
        work: Work<A::Msg>,
        crash_mid_step: CrashMidStep<'_>,
    ) -> Option<NodeId> {
        let now = self.now_us;
        let (per_message, per_byte, per_tick, free) = match &self.cpu {
            Some(c) => (
                c.model.per_message_us,
                c.model.per_byte_ns,
                c.model.per_tick_us,
                c.model.free.contains(&node),
            ),
            None => (0.0, 0.0, 0.0, true),
        };
        let slot = self.slots.get_mut(&node)?;
        let incarnation = slot.incarnation;
        let actor = slot.actor.as_mut()?;
        actor.set_time(now);
        let mut cost = match work {
            Work::Msg {
                from,
                msg,
                sent_us,
                bytes,
            } => {
                if !self.net.connected(from, node) {
                    self.stats.lost += 1;
                    return None;
                }
                self.stats.delivered += 1;
                let bytes = bytes as f64;
                if let Some(t) = self.trace.as_mut() {
                    t((sent_us, now), from, node, &msg);
                }
                actor.handle(from, msg);
                per_message + bytes * per_byte / 1000.0
            }
            Work::Tick { incarnation: inc } => {
                if inc != incarnation {
                    return None;
                }
                actor.tick();
                let next = now + self.tick_us;
                self.schedule(
                    next,
                    Event::Tick {
                        node,
                        incarnation: inc,
                    },
                );
                per_tick
            }
        };
        let actor = self.slots.get_mut(&node)?.actor.as_mut()?;
        cost += actor.take_work_us();
        if free {
            cost = 0.0;
        }
        if crash_mid_step(node) {
            self.crash_dropping_outputs(node);
            return Some(node);
        }
        let end = now + cost.round() as u64;
        let done = if free {
            None
        } else {
            actor.take_offloaded_until(end)
        };
        if let Some(cpu) = self.cpu.as_mut() {
            cpu.busy_until.insert(node, end);
            *cpu.used_us.entry(node).or_default() += cost;
            cpu.depart_us = Some(done.map_or(end, |d| d.max(end)));
        }
        self.flush(node);
        if let Some(cpu) = self.cpu.as_mut() {
            cpu.depart_us = None;
        }
        Some(node)
    }

    /// Processes the next event. Returns the node it touched (if any) and the new time.
    pub fn step(&mut self) -> Option<NodeId> {
        self.step_with(&mut |_| false)
    }

    /// Like [`Sim::step`], but asks `crash_mid_step` about the node once it has handled the
    /// event and before anything it produced is sent; on `true` the node crashes mid-step:
    /// every message of the step is dropped and the node goes down (what it wrote during the
    /// step is the caller's business, as with [`Sim::crash`]). Returns the touched node either
    /// way.
    pub fn step_with(&mut self, crash_mid_step: CrashMidStep<'_>) -> Option<NodeId> {
        let Reverse((at, seq)) = self.queue.pop()?;
        let event = self.events.remove(&seq).expect("scheduled event");
        self.now_us = self.now_us.max(at);
        let target = match &event {
            Event::Deliver { to, .. } => *to,
            Event::Tick { node, .. } | Event::Resume { node } => *node,
        };
        if let Some(p) = self.paused.get_mut(&target) {
            match event {
                Event::Tick { incarnation, .. } => {
                    // The chain of ticks stops here and starts again on resume.
                    if incarnation == self.slots.get(&target).map_or(0, |s| s.incarnation) {
                        p.tick_due = true;
                    }
                }
                e => p.held.push(e),
            }
            return None;
        }
        if self.cpu.is_some() {
            return match event {
                Event::Deliver {
                    from,
                    to,
                    msg,
                    sent_us,
                    bytes,
                } => {
                    if !self.is_up(to) {
                        return None;
                    }
                    let work = self.admit(
                        to,
                        Work::Msg {
                            from,
                            msg,
                            sent_us,
                            bytes,
                        },
                    )?;
                    self.perform(to, work, crash_mid_step)
                }
                Event::Tick { node, incarnation } => {
                    if self.incarnation(node) != incarnation || !self.is_up(node) {
                        return None;
                    }
                    let work = self.admit(node, Work::Tick { incarnation })?;
                    self.perform(node, work, crash_mid_step)
                }
                Event::Resume { node } => {
                    let work = self.cpu.as_mut()?.backlog.get_mut(&node)?.pop_front()?;
                    let touched = self.perform(node, work, crash_mid_step);
                    let cpu = self.cpu.as_mut()?;
                    if cpu.backlog.get(&node).is_some_and(|q| !q.is_empty()) {
                        let at = cpu
                            .busy_until
                            .get(&node)
                            .copied()
                            .unwrap_or(0)
                            .max(self.now_us);
                        self.schedule(at, Event::Resume { node });
                    }
                    touched
                }
            };
        }
        match event {
            Event::Deliver {
                from,
                to,
                msg,
                sent_us,
                ..
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
                if crash_mid_step(to) {
                    self.crash_dropping_outputs(to);
                } else {
                    self.flush(to);
                }
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
                if crash_mid_step(node) {
                    self.crash_dropping_outputs(node);
                    return Some(node);
                }
                self.flush(node);
                let next = self.now_us + self.tick_us;
                self.schedule(next, Event::Tick { node, incarnation });
                Some(node)
            }
            Event::Resume { .. } => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 1 sends a numbered message to node 2 on every tick; node 2 records what it got and
    /// counts its ticks.
    #[derive(Default)]
    struct Echo {
        me: u32,
        next: u64,
        got: Vec<u64>,
        ticks: u64,
        out: Vec<(NodeId, u64)>,
    }

    impl Actor for Echo {
        type Msg = u64;
        fn handle(&mut self, _from: NodeId, msg: u64) {
            self.got.push(msg);
        }
        fn tick(&mut self) {
            self.ticks += 1;
            if self.me == 1 {
                self.out.push((NodeId(2), self.next));
                self.next += 1;
            }
        }
        fn take_outgoing(&mut self, out: &mut Vec<(NodeId, u64)>) {
            out.append(&mut self.out);
        }
    }

    fn pair(seed: u64) -> Sim<Echo> {
        let mut sim = Sim::new(seed, 1000, Network::new(NetFaults::calm()));
        sim.add(
            NodeId(1),
            Echo {
                me: 1,
                ..Echo::default()
            },
        );
        sim.add(
            NodeId(2),
            Echo {
                me: 2,
                ..Echo::default()
            },
        );
        sim
    }

    #[test]
    fn a_paused_node_takes_no_step_and_gets_everything_held_in_order_on_resume() {
        let mut sim = pair(7);
        sim.run_until(20_000, |_, _| {});
        assert!(sim.pause(NodeId(2)));
        assert!(!sim.pause(NodeId(2)), "already paused");
        let (got, ticks) = {
            let a = sim.actor(NodeId(2)).unwrap();
            (a.got.len(), a.ticks)
        };
        sim.run_until(120_000, |_, _| {});
        let a = sim.actor(NodeId(2)).unwrap();
        assert_eq!((a.got.len(), a.ticks), (got, ticks), "no step while paused");
        let sent = sim.actor(NodeId(1)).unwrap().next;
        assert!(sent > got as u64 + 90, "the sender went on: {sent}");
        assert!(sim.resume(NodeId(2)));
        assert!(!sim.resume(NodeId(2)));
        sim.run_until(130_000, |_, _| {});
        let a = sim.actor(NodeId(2)).unwrap();
        assert!(a.ticks > ticks, "ticks start again");
        // Nothing lost, nothing reordered (the network is calm).
        assert_eq!(a.got, (0..a.got.len() as u64).collect::<Vec<_>>());
        assert!(a.got.len() as u64 >= sent, "{} of {sent}", a.got.len());
        assert_eq!(sim.stats.pauses, 1);
    }

    #[test]
    fn a_crash_discards_what_a_paused_node_held() {
        let mut sim = pair(8);
        sim.run_until(10_000, |_, _| {});
        assert!(sim.pause(NodeId(2)));
        sim.run_until(50_000, |_, _| {});
        assert!(sim.crash(NodeId(2)).is_some());
        assert!(!sim.is_paused(NodeId(2)));
        assert!(!sim.resume(NodeId(2)));
        sim.restart(NodeId(2), |_| Echo {
            me: 2,
            ..Echo::default()
        });
        sim.run_until(60_000, |_, _| {});
        let a = sim.actor(NodeId(2)).unwrap();
        // The new incarnation only sees messages sent after it started.
        assert!(a.got.first().is_some_and(|&m| m >= 45), "{:?}", a.got);
        assert!(a.ticks >= 9);
        assert!(!sim.pause(NodeId(3)), "no such node");
    }
}
