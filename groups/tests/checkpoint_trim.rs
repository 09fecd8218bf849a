//! Goal: a log is trimmed below what every subscriber needs: for a subscriber that reports
//! checkpoints, the position its latest checkpoint covers (not what it received); for one
//! that does not, what it received; and a checkpointing subscriber that went silent no longer
//! holds the log back (it will recover by state transfer), while a silent plain subscriber
//! does (it has no other way to recover).
//!
//! Method: one acceptor (a single-acceptor log trims at once) and two subscribers, driven by
//! hand step by step (every node ticks, then messages move until none is left; a node that
//! is "down" neither ticks nor receives). Subscriber 2 multicasts all the time and reports
//! checkpoints at chosen positions; subscriber 3 never checkpoints.
//!
//! With durable logs (`durability = "disk"`) a subscriber that never reported a checkpoint
//! holds the whole log (it replays it from index 0 after a restart): the second test.

use bytes::Bytes;
use groups::config::{ClusterConfig, Durability, NodeConfig, Tuning};
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, NodeId};
use groups::node::{GroupsNode, NodeOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const ACCEPTOR: NodeId = NodeId(1);
const CHECKPOINTS: NodeId = NodeId(2);
const PLAIN: NodeId = NodeId(3);
const LOG: LogId = LogId(0);

struct Cluster {
    nodes: BTreeMap<NodeId, GroupsNode>,
    down: BTreeSet<NodeId>,
}

impl Cluster {
    fn new() -> Self {
        Self::with(Durability::Memory)
    }

    /// The cluster, its configuration saying `durability` (the single-acceptor log keeps its
    /// state in memory either way; only the trim rule reads it).
    fn with(durability: Durability) -> Self {
        let node = |id: u32, subs: &[u32]| NodeConfig {
            id: NodeId(id),
            addr: None,
            subscriptions: if subs.is_empty() {
                vec![]
            } else {
                vec![subs.iter().map(|&g| GroupId(g)).collect()]
            },
        };
        let tuning = Tuning {
            trim: true,
            trim_every_entries: 1,
            ..Tuning::default()
        };
        let cfg = Arc::new(
            ClusterConfig::per_group_plus_global(
                7,
                1,
                vec![node(1, &[]), node(2, &[0]), node(3, &[0])],
                vec![ACCEPTOR],
                tuning,
            )
            .and_then(|c| c.with_durability(durability))
            .unwrap(),
        );
        let nodes = [ACCEPTOR, CHECKPOINTS, PLAIN]
            .into_iter()
            .map(|id| {
                (
                    id,
                    GroupsNode::in_memory(cfg.clone(), id, NodeOptions::default()),
                )
            })
            .collect();
        Cluster {
            nodes,
            down: BTreeSet::new(),
        }
    }

    /// One tick: subscriber 2 multicasts one message (if up), every up node ticks, messages
    /// move until none is left.
    fn step(&mut self) {
        if !self.down.contains(&CHECKPOINTS) {
            let n = self.nodes.get_mut(&CHECKPOINTS).unwrap();
            let _ = n.multicast(GroupSet::singleton(GroupId(0)), Bytes::from_static(b"x"));
        }
        for (id, n) in &mut self.nodes {
            if !self.down.contains(id) {
                n.tick();
            }
        }
        loop {
            let mut moving = Vec::new();
            for (id, n) in &mut self.nodes {
                if self.down.contains(id) {
                    continue;
                }
                let mut out = Vec::new();
                n.take_outgoing(&mut out);
                moving.extend(out.into_iter().map(|(to, m)| (*id, to, m)));
            }
            if moving.is_empty() {
                break;
            }
            for (from, to, m) in moving {
                if !self.down.contains(&to) {
                    self.nodes.get_mut(&to).unwrap().handle(from, m);
                }
            }
        }
        for n in self.nodes.values_mut() {
            let mut d = Vec::new();
            n.take_delivered(&mut d);
        }
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }

    fn first(&self) -> u64 {
        self.nodes[&ACCEPTOR].first_idx(LOG).unwrap()
    }

    fn received(&self, n: NodeId) -> u64 {
        self.nodes[&n].feed_next(LOG).unwrap()
    }

    fn checkpoint(&mut self, at: u64) {
        self.checkpoint_of(CHECKPOINTS, at);
    }

    fn checkpoint_of(&mut self, n: NodeId, at: u64) {
        self.nodes
            .get_mut(&n)
            .unwrap()
            .set_checkpointed(&[(LOG, at)]);
    }
}

#[test]
fn logs_are_trimmed_below_the_lowest_checkpoint_only() {
    let mut c = Cluster::new();
    // Before any checkpoint report, both subscribers count by what they received.
    c.run(100);
    let received = c.received(CHECKPOINTS).min(c.received(PLAIN));
    assert!(received > 50, "the log moved: {received}");
    assert!(c.first() > 0 && c.first() <= received);

    // Subscriber 2 now checkpoints: the log is held at its checkpoint, not what it received.
    c.checkpoint(c.first() + 10);
    let ckpt = c.first() + 10;
    c.run(200);
    assert!(c.received(CHECKPOINTS) > ckpt + 150);
    assert_eq!(
        c.first(),
        ckpt,
        "trimmed exactly up to the checkpoint, never past it"
    );

    // A later checkpoint lets the log go further, up to it.
    let ckpt = c.received(CHECKPOINTS) - 20;
    c.checkpoint(ckpt);
    c.run(50);
    assert_eq!(c.first(), ckpt);

    // The plain subscriber goes silent: it holds the log at what it received, however long.
    c.down.insert(PLAIN);
    let plain_had = c.received(PLAIN);
    c.run(300);
    let ckpt = c.received(CHECKPOINTS) - 5;
    c.checkpoint(ckpt);
    c.run(300);
    assert!(ckpt > plain_had + 100);
    // (At what it last reported, which may lag what it received by a few entries.)
    assert!(
        c.first() <= plain_had && c.first() + 64 > plain_had,
        "a silent plain subscriber still counts: first {} received {plain_had}",
        c.first()
    );
    c.down.remove(&PLAIN);
    c.run(100);
    assert_eq!(
        c.received(PLAIN),
        c.nodes[&ACCEPTOR].decided_idx(LOG).unwrap()
    );
    assert_eq!(c.first(), ckpt, "back at the checkpoint's bound");

    // The checkpointing subscriber goes silent: after 20 progress periods it no longer
    // counts, and the log is trimmed past its checkpoint, to what the plain one received.
    c.down.insert(CHECKPOINTS);
    let period = c.nodes[&ACCEPTOR].config().tuning.progress_ticks as usize;
    c.run(10 * period);
    assert_eq!(c.first(), ckpt, "not silent long enough yet");
    c.run(15 * period);
    assert!(
        c.first() > ckpt,
        "a silent checkpointing subscriber does not hold the log: first {} ckpt {ckpt}",
        c.first()
    );
    assert!(c.first() <= c.received(PLAIN));
}

#[test]
fn with_durable_logs_only_reported_checkpoints_let_a_log_be_trimmed() {
    let mut c = Cluster::with(Durability::Disk {
        data_dir: "unused".into(),
    });
    c.run(100);
    assert!(c.received(PLAIN) > 50, "the log moved");
    assert_eq!(
        c.first(),
        0,
        "no subscriber reported a checkpoint: nothing trimmed"
    );

    // One checkpointing subscriber is not enough: the plain one still needs index 0.
    let ckpt2 = c.received(CHECKPOINTS) - 10;
    c.checkpoint(ckpt2);
    c.run(100);
    assert_eq!(
        c.first(),
        0,
        "a subscriber without checkpoints holds the whole log"
    );

    // Once it reports a checkpoint too, the log goes to the lower of the two.
    let ckpt3 = ckpt2 - 20;
    c.checkpoint_of(PLAIN, ckpt3);
    c.run(100);
    assert_eq!(c.first(), ckpt3);

    // A checkpointing subscriber silent for 20 progress periods no longer counts (it
    // restarts from its durable checkpoint and recovers by state transfer if need be).
    c.down.insert(PLAIN);
    let period = c.nodes[&ACCEPTOR].config().tuning.progress_ticks as usize;
    c.run(25 * period);
    assert_eq!(c.first(), ckpt2);
}
