//! A client proxy that records what the campaign checks besides the history: which log each
//! command went through and when it was submitted and completed (for the failover time), and
//! every replica's state hash in its reply (for "final replica states are equal"); for the
//! P-SMR proxy ([`Recording`]) and the scale-out one ([`ScaleOutRecording`]).

use bytes::Bytes;
use engine::host::client::{ClientStats, Completion, Proxy};
use engine::partitioned::msg::{Multicast, Response};
use engine::partitioned::proxy::ScaleOutClient;
use engine::partitioned::service::PartitionedService;
use engine::psmr::msg::{Reply, Request};
use engine::psmr::proxy::ClientProxy;
use engine::psmr::service::Service;
use engine::wire::{self, ClientId};
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// One command as the tap saw it.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub submitted: Option<Instant>,
    pub completed: Option<Instant>,
    /// Logs its multicasts were routed through (an opt-PSMR retry may add one).
    pub logs: BTreeSet<u32>,
    /// Replica -> a hash of the outcome in its reply and the state hash it carries (`None`
    /// unless the replicas hash their states). A full scan's outcome is the tree's whole
    /// content at that point of the order: equal hashes mean equal replica states.
    pub replies: BTreeMap<u32, (u64, Option<u64>)>,
}

/// What all the proxies of a client node recorded, by (client id, sequence number).
#[derive(Default)]
pub struct Tap {
    pub seen: Mutex<BTreeMap<(u64, u64), Seen>>,
}

impl Tap {
    /// Client `client`'s command `seq` was submitted now.
    fn submitted(&self, client: u64, seq: u64) {
        self.seen.lock().entry((client, seq)).or_default().submitted = Some(Instant::now());
    }

    /// Client `client`'s command `seq` completed now.
    fn completed(&self, client: u64, seq: u64) {
        self.seen.lock().entry((client, seq)).or_default().completed = Some(Instant::now());
    }
}

/// The client command a multicast payload carries (a [`wire::FeedMsg::Command`]), if it is
/// one: the proxies send their commands in the feed's envelope.
fn command<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Option<T> {
    match wire::FeedMsg::parse(payload) {
        Ok(wire::FeedMsg::Command(body)) => wire::decode::<T>(body).ok(),
        _ => None,
    }
}

/// A hash of a reply's outcome (of its wire encoding).
fn outcome_hash<R: serde::Serialize>(outcome: &engine::psmr::msg::Outcome<R>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    wire::encode(outcome).hash(&mut h);
    h.finish()
}

/// [`ClientProxy`] with a [`Tap`].
pub struct Recording<S: Service> {
    inner: ClientProxy<S>,
    tap: Arc<Tap>,
    cluster: Arc<ClusterConfig>,
    scratch: Vec<(GroupSet, Bytes)>,
}

impl<S: Service> Recording<S> {
    pub fn new(inner: ClientProxy<S>, tap: Arc<Tap>, cluster: Arc<ClusterConfig>) -> Self {
        Recording {
            inner,
            tap,
            cluster,
            scratch: Vec::new(),
        }
    }
}

impl<S: Service> Proxy for Recording<S> {
    type Command = S::Command;
    type Reply = S::Reply;

    fn id(&self) -> ClientId {
        self.inner.id()
    }
    fn submit(&mut self, command: S::Command) -> u64 {
        let seq = self.inner.submit(command);
        self.tap.submitted(self.inner.id().0, seq);
        seq
    }
    fn on_message(&mut self, body: &[u8]) -> Option<Completion<S::Command, S::Reply>> {
        if let Ok(reply) = wire::decode::<Reply<S::Reply>>(body) {
            self.tap
                .seen
                .lock()
                .entry((reply.client.0, reply.seq))
                .or_default()
                .replies
                .insert(
                    reply.replica.0,
                    (outcome_hash(&reply.outcome), reply.state_hash),
                );
        }
        let done = Proxy::on_message(&mut self.inner, body);
        if let Some(c) = &done {
            self.tap.completed(self.inner.id().0, c.seq);
        }
        done
    }
    fn tick(&mut self, now: u64) {
        Proxy::tick(&mut self.inner, now)
    }
    fn take_multicasts(&mut self, out: &mut Vec<(GroupSet, Bytes)>) {
        Proxy::take_multicasts(&mut self.inner, &mut self.scratch);
        if !self.scratch.is_empty() {
            let mut seen = self.tap.seen.lock();
            for (dests, payload) in &self.scratch {
                if let (Some(req), Some(log)) =
                    (command::<Request>(payload), self.cluster.route(dests))
                {
                    seen.entry((req.client.0, req.seq))
                        .or_default()
                        .logs
                        .insert(log.0);
                }
            }
        }
        out.append(&mut self.scratch);
    }
    fn outstanding(&self) -> usize {
        Proxy::outstanding(&self.inner)
    }
    fn stats(&self) -> &ClientStats {
        Proxy::stats(&self.inner)
    }
    fn set_payload_limit(&mut self, max: usize) {
        Proxy::set_payload_limit(&mut self.inner, max)
    }
    fn take_refused(&mut self, out: &mut Vec<Completion<S::Command, S::Reply>>) {
        Proxy::take_refused(&mut self.inner, out)
    }
}

/// [`ScaleOutClient`](engine::partitioned::proxy::ScaleOutClient) with a [`Tap`]: when each
/// command was submitted and completed, and which logs its multicasts went through (its
/// consults, the moves it asked for, its attempts and their resends). Scale-out replies carry
/// no replica id nor state hash: `replies` stays empty (replica states are compared through
/// the servers' metrics instead).
pub struct ScaleOutRecording<S: PartitionedService> {
    inner: ScaleOutClient<S>,
    tap: Arc<Tap>,
    cluster: Arc<ClusterConfig>,
    /// The command outstanding (a handle keeps one per proxy): moves name no command, so they
    /// are counted as this one's.
    current: Option<u64>,
    scratch: Vec<(GroupSet, Bytes)>,
}

impl<S: PartitionedService> ScaleOutRecording<S> {
    pub fn new(inner: ScaleOutClient<S>, tap: Arc<Tap>, cluster: Arc<ClusterConfig>) -> Self {
        ScaleOutRecording {
            inner,
            tap,
            cluster,
            current: None,
            scratch: Vec::new(),
        }
    }
}

impl<S: PartitionedService> Proxy for ScaleOutRecording<S> {
    type Command = S::Command;
    type Reply = Response<S::Reply>;

    fn id(&self) -> ClientId {
        self.inner.id()
    }
    fn submit(&mut self, command: S::Command) -> u64 {
        let seq = self.inner.submit(command);
        self.current = Some(seq);
        self.tap.submitted(self.inner.id().0, seq);
        seq
    }
    fn on_message(&mut self, body: &[u8]) -> Option<Completion<S::Command, Response<S::Reply>>> {
        let done = Proxy::on_message(&mut self.inner, body);
        if let Some(c) = &done {
            if self.current == Some(c.seq) {
                self.current = None;
            }
            self.tap.completed(self.inner.id().0, c.seq);
        }
        done
    }
    fn tick(&mut self, now: u64) {
        Proxy::tick(&mut self.inner, now)
    }
    fn take_multicasts(&mut self, out: &mut Vec<(GroupSet, Bytes)>) {
        Proxy::take_multicasts(&mut self.inner, &mut self.scratch);
        if !self.scratch.is_empty() {
            let me = self.inner.id().0;
            let mut seen = self.tap.seen.lock();
            for (dests, payload) in &self.scratch {
                let seq = match command::<Multicast>(payload) {
                    Some(Multicast::Consult { seq, .. }) => Some(seq),
                    Some(Multicast::Command(m)) | Some(Multicast::Routed { cmd: m, .. }) => {
                        Some(m.seq)
                    }
                    Some(Multicast::Move { .. })
                    | Some(Multicast::Plan(_))
                    | Some(Multicast::Hints { .. })
                    | Some(Multicast::Repartition)
                    | None => self.current,
                };
                if let (Some(seq), Some(log)) = (seq, self.cluster.route(dests)) {
                    seen.entry((me, seq)).or_default().logs.insert(log.0);
                }
            }
        }
        out.append(&mut self.scratch);
    }
    fn outstanding(&self) -> usize {
        Proxy::outstanding(&self.inner)
    }
    fn stats(&self) -> &ClientStats {
        Proxy::stats(&self.inner)
    }
    fn set_payload_limit(&mut self, max: usize) {
        Proxy::set_payload_limit(&mut self.inner, max)
    }
    fn take_refused(&mut self, out: &mut Vec<Completion<S::Command, Response<S::Reply>>>) {
        Proxy::take_refused(&mut self.inner, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::psmr::deployment::Deployment;
    use engine::psmr::proxy::Mode;
    use engine::testing::{KvCommand, KvService};

    /// The tap learns which log a command went through from the proxy's multicasts (in the
    /// feed's envelope): the campaign's failover figure and its kill-leader check rest on it.
    #[test]
    fn a_recorded_command_names_the_log_it_went_through() {
        let d = Deployment::new(2, 1, 2, 1, groups::config::Tuning::default()).unwrap();
        let cluster = Arc::new(d.config.clone());
        let tap = Arc::new(Tap::default());
        let inner = ClientProxy::new(
            ClientId(7),
            Arc::new(KvService::default()),
            Mode::Psmr,
            2,
            100,
        );
        let mut rec = Recording::new(inner, tap.clone(), cluster);
        let seq = rec.submit(KvCommand::Put(1, 10));
        let mut out = Vec::new();
        rec.take_multicasts(&mut out);
        assert_eq!(out.len(), 1);
        let seen = tap.seen.lock();
        let s = &seen[&(7, seq)];
        assert!(s.submitted.is_some());
        assert_eq!(
            s.logs.len(),
            1,
            "the log of the command's multicast: {:?}",
            s.logs
        );
    }
}
