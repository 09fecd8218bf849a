//! Checkpoints and state transfer, whatever the protocol (sans-IO parts).
//!
//! **Where a checkpoint lies.** A replica asks for a checkpoint by multicasting a checkpoint
//! request ([`request`]) to *every* group, so it has one place in every stream that
//! the replica's workers (P-SMR) or partitions (S-SMR, DS-SMR) read, and, the streams being
//! projections of one total order, a command before it in one stream is before it in every
//! stream that has both. What each protocol records at that point is its own business
//! ([`crate::psmr::snapshot`], [`crate::partitioned::replica`]).
//!
//! Every replica may ask (each on its own trigger, see [`CheckpointPolicy`]); the requests
//! carry the round the asker wants next, and a replica takes part only in a round above the
//! last one it took, so duplicates are ignored the same way everywhere.
//!
//! **Positions and trimming.** A checkpoint covers, per log, the entries below the one its
//! mergers read next; the replica reports that to the log's acceptors
//! ([`groups::node::GroupsNode::set_checkpointed`]), which trim below the lowest position of
//! the live checkpointing subscribers.
//!
//! **State transfer.** A replica whose log was trimmed past what it holds (or that starts
//! empty after the logs were trimmed) asks a peer of the same role (same subscriptions) for
//! its latest checkpoint with application messages ([`Transfer`]): the checkpoint travels in
//! chunks of [`CHUNK_BYTES`] (well below the frame cap), a few in flight at a time
//! ([`Recovery`] asks, [`Store`] answers). A peer without a checkpoint says so and the
//! requester tries the next peer. The requester installs the checkpoint and restarts its
//! feeds at the checkpoint's positions ([`groups::node::GroupsNode::restart_feeds`]).

pub mod disk;
pub mod saver;

use crate::wire::{self, AppMsg, FeedMsg};
use bytes::Bytes;
use groups::config::ClusterConfig;
use groups::ids::NodeId;
use groups::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A chunk of a checkpoint in transfer (frames are capped at 16 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Chunks a requester keeps asked for and not yet received.
const WINDOW: u64 = 4;

/// When replicas ask for checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Ask after this many commands executed since the latest checkpoint (0: never by count).
    pub every_commands: u64,
    /// Ask after this many ticks since the latest checkpoint if any command ran (0: never
    /// by time).
    pub every_ticks: u64,
    /// Ask again if the request was not delivered after this many ticks; also the
    /// transfer's timeout.
    pub resend_ticks: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_commands: 10_000,
            every_ticks: 10_000,
            resend_ticks: 500,
        }
    }
}

/// The multicast payload of a checkpoint request for `round` (multicast to every group).
pub fn request(round: u64) -> Bytes {
    FeedMsg::checkpoint(round)
}

/// The round of a delivered checkpoint request, if `msg` is one. A request must be addressed
/// to all the cluster's `groups` groups (only then does it lie in every stream); one that is
/// not is no checkpoint request.
pub fn round_of(msg: &Message, groups: usize) -> Option<u64> {
    if msg.dests.len() < groups {
        return None;
    }
    match FeedMsg::parse(&msg.payload) {
        Ok(FeedMsg::Checkpoint { round }) => Some(round),
        _ => None,
    }
}

/// Why a checkpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint does not decode: {0}")]
    Decode(String),
    #[error("checkpoint has {got} worker parts, this replica runs {want} workers")]
    Workers { got: usize, want: usize },
    #[error("worker {worker}'s part: {what}")]
    Part { worker: usize, what: String },
    /// A scale-out replica's checkpoint that does not fit the replica (another group, a
    /// state that does not restore to its own hash; see `crate::partitioned::replica`).
    #[error("checkpoint does not fit this replica: {0}")]
    Mismatch(String),
}

/// When to ask for the next checkpoint.
#[derive(Debug)]
pub struct Trigger {
    policy: CheckpointPolicy,
    /// Commands executed at the latest checkpoint, and when it was taken (ticks).
    base: (u64, u64),
    /// The round last asked for, and when.
    asked: Option<(u64, u64)>,
}

impl Trigger {
    pub fn new(policy: CheckpointPolicy) -> Self {
        Trigger {
            policy,
            base: (0, 0),
            asked: None,
        }
    }

    /// A checkpoint of `round` was taken when `executed` commands had run.
    pub fn taken(&mut self, executed: u64, now: u64) {
        self.base = (executed, now);
        self.asked = None;
    }

    /// The round to ask for now, if any: `latest` is the latest round taken, `executed`
    /// the commands run so far.
    pub fn poll(&mut self, latest: u64, executed: u64, now: u64) -> Option<u64> {
        let p = &self.policy;
        let since = executed.saturating_sub(self.base.0);
        let due = (p.every_commands > 0 && since >= p.every_commands)
            || (p.every_ticks > 0 && since > 0 && now >= self.base.1 + p.every_ticks);
        if !due {
            return None;
        }
        let round = latest + 1;
        if self
            .asked
            .is_some_and(|(r, at)| r == round && now < at + p.resend_ticks)
        {
            return None;
        }
        self.asked = Some((round, now));
        Some(round)
    }
}

/// What replicas send each other to transfer a checkpoint (application messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// Asks for the chunk at `offset` of checkpoint `round` (`None`: the latest one).
    Get { round: Option<u64>, offset: u64 },
    /// A chunk of checkpoint `round`, `total` bytes long.
    Chunk {
        round: u64,
        total: u64,
        offset: u64,
        data: Bytes,
    },
    /// The peer has no checkpoint (or no longer the asked round).
    NoCheckpoint,
}

impl Transfer {
    /// The message, in its envelope ([`AppMsg::Transfer`]).
    pub fn encode(&self) -> Bytes {
        AppMsg::transfer(self)
    }

    /// The message in the body of an [`AppMsg::Transfer`].
    pub fn decode(body: &[u8]) -> Result<Transfer, groups::codec::CodecError> {
        wire::decode(body)
    }
}

/// A replica's latest checkpoint, encoded, and answers to peers' [`Transfer::Get`]s.
#[derive(Default)]
pub struct Store {
    latest: Option<(u64, Bytes)>,
    /// The one before, kept so a transfer in progress survives one new checkpoint.
    previous: Option<(u64, Bytes)>,
    /// Chunks sent to peers.
    pub chunks_sent: u64,
}

impl Store {
    pub fn set(&mut self, round: u64, bytes: Bytes) {
        if self.latest.as_ref().is_some_and(|(r, _)| *r >= round) {
            return;
        }
        self.previous = self.latest.replace((round, bytes));
    }

    /// The latest checkpoint's round and encoded size.
    pub fn latest(&self) -> Option<(u64, usize)> {
        self.latest.as_ref().map(|(r, b)| (*r, b.len()))
    }

    /// The latest checkpoint's bytes.
    pub fn latest_bytes(&self) -> Option<&Bytes> {
        self.latest.as_ref().map(|(_, b)| b)
    }

    /// The answer to a peer's `Get`.
    pub fn answer(&mut self, round: Option<u64>, offset: u64) -> Transfer {
        let found = match round {
            None => self.latest.as_ref(),
            Some(r) => [self.latest.as_ref(), self.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|(x, _)| *x == r),
        };
        let Some((round, bytes)) = found else {
            return Transfer::NoCheckpoint;
        };
        let total = bytes.len() as u64;
        let start = offset.min(total) as usize;
        let end = (start + CHUNK_BYTES).min(bytes.len());
        self.chunks_sent += 1;
        Transfer::Chunk {
            round: *round,
            total,
            offset: start as u64,
            data: bytes.slice(start..end),
        }
    }
}

/// The requester's side of a state transfer: asks peers in turn until one sends a whole
/// checkpoint.
#[derive(Debug)]
pub struct Recovery {
    peers: Vec<NodeId>,
    turn: usize,
    round: Option<u64>,
    total: u64,
    chunks: BTreeMap<u64, Bytes>,
    /// The next offset not asked for yet.
    asked_to: u64,
    heard_at: u64,
    timeout: u64,
    /// Peers asked so far (for reports).
    pub attempts: u64,
}

impl Recovery {
    /// Starts asking `peers` (replicas with the same subscriptions), from the first.
    pub fn start(
        peers: Vec<NodeId>,
        timeout_ticks: u64,
        now: u64,
        out: &mut Vec<(NodeId, Bytes)>,
    ) -> Self {
        let mut r = Recovery {
            peers,
            turn: 0,
            round: None,
            total: 0,
            chunks: BTreeMap::new(),
            asked_to: 0,
            heard_at: now,
            timeout: timeout_ticks.max(1),
            attempts: 0,
        };
        r.ask_first(now, out);
        r
    }

    fn peer(&self) -> Option<NodeId> {
        (!self.peers.is_empty()).then(|| self.peers[self.turn % self.peers.len()])
    }

    fn ask_first(&mut self, now: u64, out: &mut Vec<(NodeId, Bytes)>) {
        self.round = None;
        self.total = 0;
        self.chunks.clear();
        self.asked_to = 0;
        self.heard_at = now;
        self.attempts += 1;
        if let Some(p) = self.peer() {
            out.push((
                p,
                Transfer::Get {
                    round: None,
                    offset: 0,
                }
                .encode(),
            ));
        }
    }

    /// Gives up on the current peer (say, its checkpoint did not install) and asks the next.
    pub fn next_peer(&mut self, now: u64, out: &mut Vec<(NodeId, Bytes)>) {
        self.turn += 1;
        self.ask_first(now, out);
    }

    /// Bytes received so far, of the total (0 before the first chunk).
    pub fn progress(&self) -> (u64, u64) {
        (
            self.chunks.values().map(|c| c.len() as u64).sum(),
            self.total,
        )
    }

    /// Handles a peer's message; returns the whole encoded checkpoint once it is in.
    pub fn on_message(
        &mut self,
        from: NodeId,
        msg: Transfer,
        now: u64,
        out: &mut Vec<(NodeId, Bytes)>,
    ) -> Option<Bytes> {
        if Some(from) != self.peer() {
            return None;
        }
        match msg {
            Transfer::Get { .. } => None,
            Transfer::NoCheckpoint => {
                // Wait for the timeout before the next peer: a cluster where no replica has a
                // checkpoint yet must not be flooded.
                self.round = None;
                self.heard_at = now;
                None
            }
            Transfer::Chunk {
                round,
                total,
                offset,
                data,
            } => {
                match self.round {
                    None => {
                        self.round = Some(round);
                        self.total = total;
                        self.asked_to = 0;
                    }
                    Some(r) if r != round || total != self.total => return None,
                    Some(_) => {}
                }
                let fits = offset < total && offset + data.len() as u64 <= total;
                let aligned = offset.is_multiple_of(CHUNK_BYTES as u64);
                let full = data.len() == CHUNK_BYTES || offset + data.len() as u64 == total;
                if total > 0 && !(fits && aligned && full) {
                    return None;
                }
                self.heard_at = now;
                if total > 0 {
                    self.chunks.entry(offset).or_insert(data);
                }
                if self.asked_to <= offset {
                    self.asked_to = offset + CHUNK_BYTES as u64;
                }
                let received = self.chunks.len() as u64 * CHUNK_BYTES as u64;
                if total == 0 || self.progress().0 == total {
                    let mut whole = Vec::with_capacity(total as usize);
                    for c in self.chunks.values() {
                        whole.extend_from_slice(c);
                    }
                    return Some(whole.into());
                }
                // Keep up to WINDOW chunks in flight.
                let in_flight_to = received.max(offset) + WINDOW * CHUNK_BYTES as u64;
                let peer = self.peer()?;
                while self.asked_to < total && self.asked_to < in_flight_to {
                    out.push((
                        peer,
                        Transfer::Get {
                            round: Some(round),
                            offset: self.asked_to,
                        }
                        .encode(),
                    ));
                    self.asked_to += CHUNK_BYTES as u64;
                }
                None
            }
        }
    }

    /// Re-asks for what is missing after a silence of the timeout; after two silent
    /// timeouts (or a `NoCheckpoint`) tries the next peer.
    pub fn tick(&mut self, now: u64, out: &mut Vec<(NodeId, Bytes)>) {
        if now < self.heard_at + self.timeout {
            return;
        }
        let Some(round) = self.round else {
            self.next_peer(now, out);
            return;
        };
        if now >= self.heard_at + 2 * self.timeout {
            self.next_peer(now, out);
            return;
        }
        let Some(peer) = self.peer() else {
            return;
        };
        let mut offset = 0;
        while offset < self.asked_to.min(self.total) {
            if !self.chunks.contains_key(&offset) {
                out.push((
                    peer,
                    Transfer::Get {
                        round: Some(round),
                        offset,
                    }
                    .encode(),
                ));
            }
            offset += CHUNK_BYTES as u64;
        }
    }

    /// The peer being asked now.
    pub fn asking(&self) -> Option<NodeId> {
        self.peer()
    }
}

/// The peers a replica can recover from: the other nodes with the same subscriptions.
pub fn peers_of(cfg: &ClusterConfig, me: NodeId) -> Vec<NodeId> {
    let Some(mine) = cfg.node(me).map(|n| n.subscriptions.clone()) else {
        return Vec::new();
    };
    cfg.nodes
        .iter()
        .filter(|n| n.id != me && !mine.is_empty() && n.subscriptions == mine)
        .map(|n| n.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_transfer(store: &mut Store, drop_every: usize) -> Option<Bytes> {
        let me = NodeId(9);
        let peer = NodeId(1);
        let mut out = Vec::new();
        let mut rec = Recovery::start(vec![NodeId(2), peer], 10, 0, &mut out);
        let mut empty = Store::default();
        let mut n = 0;
        for now in 0..10_000u64 {
            rec.tick(now, &mut out);
            let mut back = Vec::new();
            for (to, bytes) in out.drain(..) {
                n += 1;
                if drop_every > 0 && n % drop_every == 0 {
                    continue;
                }
                let Ok(AppMsg::Transfer(body)) = AppMsg::parse(&bytes) else {
                    panic!("requester sends transfer messages");
                };
                let Ok(Transfer::Get { round, offset }) = Transfer::decode(body) else {
                    panic!("requester sends gets");
                };
                let s = if to == peer { &mut *store } else { &mut empty };
                back.push((to, s.answer(round, offset)));
            }
            for (from, t) in back {
                if let Some(done) = rec.on_message(from, t, now, &mut out) {
                    return Some(done);
                }
            }
            let _ = me;
        }
        None
    }

    #[test]
    fn a_checkpoint_travels_in_chunks_from_the_peer_that_has_one() {
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 12345)).map(|i| i as u8).collect();
        let mut store = Store::default();
        store.set(3, Bytes::from(data.clone()));
        assert_eq!(run_transfer(&mut store, 0).as_deref(), Some(&data[..]));
        // Lossy: every third message is lost; the requester asks again.
        assert_eq!(run_transfer(&mut store, 3).as_deref(), Some(&data[..]));
    }

    #[test]
    fn a_peer_without_a_checkpoint_is_passed_over_and_garbage_is_refused() {
        let mut store = Store::default();
        assert_eq!(store.answer(None, 0), Transfer::NoCheckpoint);
        store.set(1, Bytes::from_static(b"x"));
        assert_eq!(run_transfer(&mut store, 0).as_deref(), Some(&b"x"[..]));
        assert!(Transfer::decode(b"\xff\xff\xff").is_err());
        assert!(crate::psmr::snapshot::Checkpoint::decode(b"\x01\x02").is_err());
    }

    #[test]
    fn triggers_by_count_and_time_and_resends() {
        let mut t = Trigger::new(CheckpointPolicy {
            every_commands: 10,
            every_ticks: 100,
            resend_ticks: 5,
        });
        assert_eq!(t.poll(0, 0, 1000), None, "nothing ran");
        assert_eq!(t.poll(0, 9, 1), None);
        assert_eq!(t.poll(0, 10, 2), Some(1));
        assert_eq!(t.poll(0, 11, 3), None, "asked recently");
        assert_eq!(t.poll(0, 11, 7), Some(1), "asked again");
        t.taken(11, 8);
        assert_eq!(t.poll(1, 12, 50), None);
        assert_eq!(t.poll(1, 12, 108), Some(2), "by time");
    }
}
