//! The scale-out client proxy (sans-IO): S-SMR and DS-SMR (reference notes, d.4 and d'.4).
//!
//! **S-SMR.** Placement is static ([`PartitionedService::place`]): a command is multicast to
//! the partitions of its objects. A `retry(gamma)` answer adds objects and partitions.
//!
//! **DS-SMR.** The first attempt uses the location cache if it knows every object (the cache
//! only answers "where"; anything else asks the oracle); otherwise the proxy consults the
//! oracle. An access whose objects are in several partitions picks a target
//! ([`PartitionedService::target`]), multicasts a move for every object elsewhere (all at
//! once, without waiting) and then the access to the target alone. A `retry` answer (an object
//! was not there: a stale cache, a concurrent move, or the access overtaking its own moves)
//! forgets the cached locations and consults the oracle again; after `retry_max` attempts the
//! command falls back to S-SMR: it goes to every partition (and the oracle for a delete),
//! which run it with signals and value exchange, without moving anything. Creates and deletes
//! also go to the oracle, which answers them.
//!
//! Many commands may be outstanding; replies of older attempts are ignored; an attempt is
//! resent on timeout (replicas answer a resent attempt from their tables).
//!
//! **Fast reads** ([`ClientOptions::fast_reads`], S-SMR and DS-SMR). A read-only access
//! ([`PartitionedService::read_only`]) whose objects are all in one partition (S-SMR: by the
//! placement rule; DS-SMR: by the location cache, or the placement guess) is not multicast
//! on its first attempt: it goes to one replica of that partition ([`crate::wire::AppMsg::Read`]),
//! which answers it off the log after a read index ([`super::reads`]). Clients spread over the
//! replicas by their index; a read unanswered on time goes to the next replica. A refused read
//! (`retry`: the object was elsewhere, or the replica does not serve reads) is ordered like
//! any command; it does not count towards DS-SMR's retry threshold.

use super::msg::{CommandMsg, Multicast, Outcome, Prophecy, Response, ToClient};
use super::service::{Kind, ObjectId, PartitionId, PartitionedService};
use super::Scheme;
use crate::host::client::{ClientError, ClientStats, Completion, Proxy};
use crate::wire::{self, AppMsg, ClientId, FeedMsg};
use bytes::Bytes;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a scale-out client runs.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    pub scheme: Scheme,
    pub partitions: u32,
    /// DS-SMR: attempts before the S-SMR fallback (the first attempt counts).
    pub retry_max: u32,
    /// First resend timeout, in ticks (doubling per resend of the same attempt).
    pub resend_ticks: u64,
    /// DS-SMR: keep a location cache (the paper's optimization).
    pub cache: bool,
    /// Locations the cache holds before it starts over.
    pub cache_max: usize,
    /// DS-SMR: move objects on the cache's word. The seed's proxy does; by default this one
    /// consults the oracle before moving anything (a cached location is used only when all the
    /// command's objects are in one partition): moves decided on stale locations move objects
    /// away from where they are needed and back again.
    pub move_on_cached: bool,
    /// DS-SMR: on a cache miss, guess the placement rule's partition
    /// ([`PartitionedService::place`], where objects start) instead of consulting the oracle;
    /// a wrong guess is answered `retry` and then the oracle is consulted. This stands in for
    /// caches warmed by a long run (the oracle is then consulted only for objects that moved).
    pub guess_placement: bool,
    /// Seeds the target choice (mixed with the client id).
    pub seed: u64,
    /// S-SMR and DS-SMR: serve single-partition read-only accesses off the log (see the
    /// module docs, "Fast reads").
    pub fast_reads: bool,
}

impl ClientOptions {
    pub fn new(scheme: Scheme, partitions: u32) -> Self {
        ClientOptions {
            scheme,
            partitions,
            retry_max: 3,
            resend_ticks: 500,
            cache: true,
            cache_max: 1 << 20,
            move_on_cached: false,
            guess_placement: false,
            seed: 0,
            fast_reads: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Consulting,
    Executing,
    /// A read off the log sent to a replica of this partition.
    Reading(PartitionId),
}

struct Pending<C> {
    command: C,
    kind: Kind,
    attempt: u32,
    phase: Phase,
    dests: GroupSet,
    payload: Bytes,
    sent_at: u64,
    tries: u32,
    fell_back: bool,
    /// The latest answer was `retry` (a stale location: ask the oracle).
    stale: bool,
    /// The first attempt was a read off the log.
    read_first: bool,
}

/// A location cache: `object -> partition`. Each client has its own unless several share one
/// ([`ScaleOutClient::with_cache`]): the clients of one node (one machine's threads) learning
/// from each other's consults and moves. Only the owning node's thread touches it, so the lock
/// is uncontended.
pub type LocationCache = Arc<parking_lot::Mutex<Locations>>;

/// What a location cache holds: `object -> partition`, and (DynaStar) the placement epoch the
/// entries were learnt under; learning a newer epoch empties the cache.
#[derive(Debug, Default)]
pub struct Locations {
    pub map: FxHashMap<ObjectId, PartitionId>,
    pub epoch: u64,
}

/// One logical scale-out client.
pub struct ScaleOutClient<S: PartitionedService> {
    id: ClientId,
    service: Arc<S>,
    o: ClientOptions,
    cache: LocationCache,
    rng: ChaCha8Rng,
    next_seq: u64,
    pending: BTreeMap<u64, Pending<S::Command>>,
    out: Vec<(GroupSet, Bytes)>,
    now: u64,
    stats: ClientStats,
    /// The largest multicast the cluster accepts, and commands refused for exceeding it.
    payload_max: usize,
    refused: Vec<Completion<S::Command, Response<S::Reply>>>,
    /// Fast reads: each partition's replicas (learnt when the node starts), and reads to send.
    replicas: Vec<Vec<NodeId>>,
    sends: Vec<(NodeId, Bytes)>,
}

impl<S: PartitionedService> ScaleOutClient<S> {
    pub fn new(id: ClientId, service: Arc<S>, o: ClientOptions) -> Self {
        Self::with_cache(id, service, o, LocationCache::default())
    }

    /// A client that shares `cache` with others.
    pub fn with_cache(
        id: ClientId,
        service: Arc<S>,
        o: ClientOptions,
        cache: LocationCache,
    ) -> Self {
        assert!(o.partitions > 0);
        ScaleOutClient {
            id,
            service,
            rng: ChaCha8Rng::seed_from_u64(o.seed ^ id.0.rotate_left(29)),
            o,
            cache,
            next_seq: 0,
            pending: BTreeMap::new(),
            out: Vec::new(),
            now: 0,
            stats: ClientStats::default(),
            payload_max: usize::MAX,
            refused: Vec::new(),
            replicas: Vec::new(),
            sends: Vec::new(),
        }
    }

    fn oracle(&self) -> GroupId {
        GroupId(self.o.partitions)
    }

    /// Where the cache thinks `object` is.
    pub fn cached(&self, object: ObjectId) -> Option<PartitionId> {
        self.cache.lock().map.get(&object).copied()
    }

    fn remember(&mut self, object: ObjectId, p: PartitionId) {
        if !self.o.cache {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.map.len() >= self.o.cache_max {
            cache.map.clear();
        }
        cache.map.insert(object, p);
    }

    fn floor(&self, seq: u64) -> u64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
            .min(seq)
    }

    /// Sends the current attempt of `seq`. A message over the cluster's payload limit is not
    /// sent: the command ends with [`ClientError::TooLarge`] (an attempt whose objects grew
    /// after `retry(gamma)` can get there; earlier attempts were refused, so nothing ran).
    fn send(&mut self, seq: u64, phase: Phase, dests: GroupSet, msg: &Multicast) {
        let payload = FeedMsg::command(msg);
        if payload.len() > self.payload_max {
            let p = self.pending.remove(&seq).expect("pending");
            self.stats.too_large += 1;
            self.refused.push(Completion {
                seq,
                command: p.command,
                result: Err(ClientError::TooLarge {
                    bytes: payload.len(),
                    max: self.payload_max,
                }),
            });
            return;
        }
        self.out.push((dests.clone(), payload.clone()));
        let now = self.now;
        let p = self.pending.get_mut(&seq).expect("pending");
        p.phase = phase;
        p.dests = dests;
        p.payload = payload;
        p.sent_at = now;
        p.tries = 0;
    }

    fn send_command(&mut self, seq: u64, partitions: Vec<PartitionId>, fallback: bool) {
        let p = &self.pending[&seq];
        let mut dests: GroupSet = partitions.iter().map(|q| GroupId(*q)).collect();
        if self.o.scheme.has_oracle() && matches!(p.kind, Kind::Create(_) | Kind::Delete(_)) {
            dests.insert(self.oracle());
        }
        let msg = Multicast::Command(CommandMsg {
            client: self.id,
            seq,
            attempt: p.attempt,
            floor: self.floor(seq),
            kind: p.kind.clone(),
            partitions,
            fallback,
            command: Bytes::from(wire::encode(&p.command)),
        });
        self.send(seq, Phase::Executing, dests, &msg);
    }

    /// The partition a fast read of `seq` goes to, if it is one (see the module docs).
    fn read_partition(&self, seq: u64) -> Option<PartitionId> {
        let p = &self.pending[&seq];
        if !self.o.fast_reads
            || p.attempt != 1
            || self.o.scheme == Scheme::Dynastar
            || self.replicas.is_empty()
            || !self.service.read_only(&p.command)
        {
            return None;
        }
        let Kind::Access(objects) = &p.kind else {
            return None;
        };
        let mut parts = match self.o.scheme {
            Scheme::Ssmr => objects
                .iter()
                .map(|o| self.service.place(*o, self.o.partitions))
                .collect::<Vec<_>>(),
            _ => self
                .cached_locations(objects)?
                .into_iter()
                .map(|(_, q)| q)
                .collect(),
        };
        parts.sort_unstable();
        parts.dedup();
        match parts[..] {
            [q] if self.replicas.get(q as usize).is_some_and(|r| !r.is_empty()) => Some(q),
            _ => None,
        }
    }

    /// The replica of partition `q` that client `id`'s `tries`-th send of a read goes to.
    fn reader(replicas: &[Vec<NodeId>], id: ClientId, q: PartitionId, tries: u32) -> NodeId {
        let r = &replicas[q as usize];
        r[(id.index() as usize).wrapping_add(tries as usize) % r.len()]
    }

    /// Sends the read `seq` to a replica of `q`.
    fn send_read(&mut self, seq: u64, q: PartitionId) {
        let p = &self.pending[&seq];
        let msg = CommandMsg {
            client: self.id,
            seq,
            attempt: p.attempt,
            floor: self.floor(seq),
            kind: p.kind.clone(),
            partitions: vec![q],
            fallback: false,
            command: Bytes::from(wire::encode(&p.command)),
        };
        let payload = AppMsg::read(&msg);
        let to = Self::reader(&self.replicas, self.id, q, 0);
        self.sends.push((to, payload.clone()));
        self.stats.reads_off_log += 1;
        let now = self.now;
        let p = self.pending.get_mut(&seq).expect("pending");
        p.phase = Phase::Reading(q);
        p.payload = payload;
        p.sent_at = now;
        p.tries = 0;
        p.read_first = true;
    }

    /// Starts the current attempt of `seq`.
    fn advance(&mut self, seq: u64) {
        if let Some(q) = self.read_partition(seq) {
            return self.send_read(seq, q);
        }
        let p = &self.pending[&seq];
        let objects = p.kind.objects().to_vec();
        if objects.is_empty() {
            // An access to no object runs on partition 0.
            return self.send_command(seq, vec![0], false);
        }
        match self.o.scheme {
            Scheme::Ssmr => {
                let mut parts: Vec<PartitionId> = objects
                    .iter()
                    .map(|o| self.service.place(*o, self.o.partitions))
                    .collect();
                parts.sort_unstable();
                parts.dedup();
                self.send_command(seq, parts, false);
            }
            Scheme::Dynastar if matches!(p.kind, Kind::Access(_)) => {
                if !p.stale {
                    if let Some(locations) = self.cached_locations(&objects) {
                        return self.route(seq, locations);
                    }
                }
                self.consult(seq);
            }
            Scheme::Dssmr | Scheme::Dynastar => {
                let create = matches!(p.kind, Kind::Create(_));
                let dssmr = self.o.scheme == Scheme::Dssmr;
                let attempts = p.attempt - u32::from(p.read_first);
                if dssmr && attempts > self.o.retry_max && !create {
                    let p = self.pending.get_mut(&seq).expect("pending");
                    if !p.fell_back {
                        p.fell_back = true;
                        self.stats.fallbacks += 1;
                    }
                    return self.send_command(seq, (0..self.o.partitions).collect(), true);
                }
                if p.attempt == 1 && !create {
                    if let Some(locations) = self.cached_locations(&objects) {
                        let spread = locations.windows(2).any(|w| w[0].1 != w[1].1);
                        if !spread || self.o.move_on_cached {
                            return self.execute_at(seq, locations);
                        }
                    }
                }
                self.consult(seq);
            }
        }
    }

    /// Where the cache (or, with `guess_placement`, the placement rule) says every object is.
    fn cached_locations(&self, objects: &[ObjectId]) -> Option<Vec<(ObjectId, PartitionId)>> {
        let cache = self.cache.lock();
        let guess = self.o.guess_placement;
        objects
            .iter()
            .map(|o| {
                cache
                    .map
                    .get(o)
                    .copied()
                    .or_else(|| guess.then(|| self.service.place(*o, self.o.partitions)))
                    .map(|q| (*o, q))
            })
            .collect()
    }

    /// Asks the oracle where the objects of `seq`'s current attempt are.
    fn consult(&mut self, seq: u64) {
        let p = &self.pending[&seq];
        self.stats.consults += 1;
        let msg = Multicast::Consult {
            client: self.id,
            seq,
            attempt: p.attempt,
            query: p.kind.clone(),
        };
        let oracle = GroupSet::singleton(self.oracle());
        self.send(seq, Phase::Consulting, oracle, &msg);
    }

    /// DynaStar: multicasts the access to every partition holding one of its objects, naming
    /// the target: the partition holding most of them (the lowest on a tie), as every client
    /// and the oracle compute it (reference notes, e.5).
    fn route(&mut self, seq: u64, locations: Vec<(ObjectId, PartitionId)>) {
        let mut count: BTreeMap<PartitionId, usize> = BTreeMap::new();
        for (_, q) in &locations {
            *count.entry(*q).or_default() += 1;
        }
        let target = count
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(q, _)| *q)
            .unwrap_or(0);
        let partitions: Vec<PartitionId> = count.keys().copied().collect();
        let p = &self.pending[&seq];
        let dests: GroupSet = partitions.iter().map(|q| GroupId(*q)).collect();
        let msg = Multicast::Routed {
            cmd: CommandMsg {
                client: self.id,
                seq,
                attempt: p.attempt,
                floor: self.floor(seq),
                kind: p.kind.clone(),
                partitions,
                fallback: false,
                command: Bytes::from(wire::encode(&p.command)),
            },
            target,
        };
        self.send(seq, Phase::Executing, dests, &msg);
    }

    /// DS-SMR: sends the command where its objects are, gathering an access's objects first.
    fn execute_at(&mut self, seq: u64, locations: Vec<(ObjectId, PartitionId)>) {
        let p = &self.pending[&seq];
        let mut parts: Vec<PartitionId> = locations.iter().map(|(_, q)| *q).collect();
        parts.sort_unstable();
        parts.dedup();
        if parts.len() > 1 && matches!(p.kind, Kind::Access(_)) {
            let draw = self.rng.random::<u64>();
            let target = self.service.target(&p.command, &locations, draw);
            for (object, from) in locations {
                if from != target {
                    let dests: GroupSet = [self.oracle(), GroupId(from), GroupId(target)]
                        .into_iter()
                        .collect();
                    let m = Multicast::Move {
                        object,
                        from,
                        to: target,
                    };
                    self.out.push((dests, FeedMsg::command(&m)));
                    self.stats.moves += 1;
                    self.remember(object, target);
                }
            }
            parts = vec![target];
        }
        self.send_command(seq, parts, false);
    }

    fn retry(&mut self, seq: u64, more: Vec<ObjectId>) {
        self.stats.retries += 1;
        let p = self.pending.get_mut(&seq).expect("pending");
        p.attempt += 1;
        p.stale = more.is_empty();
        if let Kind::Access(objects) = &mut p.kind {
            if more.is_empty() {
                let mut cache = self.cache.lock();
                for o in objects.iter() {
                    cache.map.remove(o);
                }
            } else {
                objects.extend(more);
                objects.sort_unstable();
                objects.dedup();
            }
        } else if let Kind::Delete(o) = p.kind {
            self.cache.lock().map.remove(&o);
        }
        self.advance(seq);
    }

    fn complete(
        &mut self,
        seq: u64,
        result: Result<Response<S::Reply>, ClientError>,
    ) -> Completion<S::Command, Response<S::Reply>> {
        let p = self.pending.remove(&seq).expect("pending");
        self.stats.completed += 1;
        Completion {
            seq,
            command: p.command,
            result,
        }
    }

    fn on_prophecy(
        &mut self,
        seq: u64,
        prophecy: Prophecy,
    ) -> Option<Completion<S::Command, Response<S::Reply>>> {
        let kind = self.pending[&seq].kind.clone();
        match (prophecy, &kind) {
            (Prophecy::Ok, Kind::Delete(_)) => Some(self.complete(seq, Ok(Response::Deleted))),
            (Prophecy::Nok, Kind::Create(_)) => {
                Some(self.complete(seq, Ok(Response::AlreadyExists)))
            }
            (Prophecy::Nok, _) => Some(self.complete(seq, Ok(Response::NotFound))),
            (Prophecy::Placed { epoch, locations }, Kind::Access(objects))
                if objects.iter().all(|o| {
                    locations
                        .iter()
                        .any(|(x, q)| x == o && *q < self.o.partitions)
                }) =>
            {
                {
                    let mut cache = self.cache.lock();
                    if epoch > cache.epoch {
                        cache.epoch = epoch;
                        cache.map.clear();
                        self.stats.cache_epochs += 1;
                    }
                }
                for (o, q) in &locations {
                    self.remember(*o, *q);
                }
                self.route(seq, locations);
                None
            }
            (Prophecy::Locations(locations), kind)
                if kind.objects().iter().all(|o| {
                    locations
                        .iter()
                        .any(|(x, q)| x == o && *q < self.o.partitions)
                }) =>
            {
                for (o, q) in &locations {
                    self.remember(*o, *q);
                }
                self.execute_at(seq, locations);
                None
            }
            (p, _) => Some(self.complete(
                seq,
                Err(ClientError::Rejected(format!(
                    "the oracle answered {p:?} to {kind:?}"
                ))),
            )),
        }
    }

    /// The answer to a read off the log: a result, or a refusal (the read is then ordered).
    fn on_read(
        &mut self,
        seq: u64,
        outcome: Outcome<S::Reply>,
    ) -> Option<Completion<S::Command, Response<S::Reply>>> {
        match outcome {
            Outcome::Done(_) | Outcome::Rejected(_) => self.on_outcome(seq, outcome),
            Outcome::NotFound if self.o.scheme == Scheme::Ssmr => self.on_outcome(seq, outcome),
            Outcome::Gather(more) => {
                self.retry(seq, more);
                None
            }
            _ => {
                self.retry(seq, Vec::new());
                None
            }
        }
    }

    fn on_outcome(
        &mut self,
        seq: u64,
        outcome: Outcome<S::Reply>,
    ) -> Option<Completion<S::Command, Response<S::Reply>>> {
        let result = match outcome {
            Outcome::Done(r) => Ok(Response::Done(r)),
            Outcome::Created => Ok(Response::Created),
            Outcome::AlreadyExists => Ok(Response::AlreadyExists),
            Outcome::Deleted => Ok(Response::Deleted),
            Outcome::NotFound => Ok(Response::NotFound),
            Outcome::Rejected(e) => Err(ClientError::Rejected(e)),
            Outcome::Retry => {
                self.retry(seq, Vec::new());
                return None;
            }
            Outcome::Gather(more) => {
                self.retry(seq, more);
                return None;
            }
        };
        Some(self.complete(seq, result))
    }
}

impl<S: PartitionedService> Proxy for ScaleOutClient<S> {
    type Command = S::Command;
    type Reply = Response<S::Reply>;

    fn id(&self) -> ClientId {
        self.id
    }

    fn submit(&mut self, command: S::Command) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let kind = self.service.kind(&command);
        self.pending.insert(
            seq,
            Pending {
                command,
                kind,
                attempt: 1,
                phase: Phase::Consulting,
                dests: GroupSet::new(),
                payload: Bytes::new(),
                sent_at: self.now,
                tries: 0,
                fell_back: false,
                stale: false,
                read_first: false,
            },
        );
        self.stats.submitted += 1;
        self.advance(seq);
        seq
    }

    fn on_message(&mut self, body: &[u8]) -> Option<Completion<S::Command, Response<S::Reply>>> {
        let msg = match wire::decode::<ToClient<S::Reply>>(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(client = ?self.id, error = %e, "undecodable message dropped");
                return None;
            }
        };
        match msg {
            ToClient::Prophecy {
                seq,
                attempt,
                prophecy,
            } => {
                let p = self.pending.get(&seq)?;
                if p.attempt != attempt || p.phase != Phase::Consulting {
                    return None;
                }
                self.on_prophecy(seq, prophecy)
            }
            ToClient::Reply {
                seq,
                attempt,
                outcome,
            } => {
                let p = self.pending.get(&seq)?;
                if p.attempt != attempt {
                    return None;
                }
                match p.phase {
                    Phase::Executing => self.on_outcome(seq, outcome),
                    Phase::Reading(_) => self.on_read(seq, outcome),
                    Phase::Consulting => None,
                }
            }
        }
    }

    fn tick(&mut self, now: u64) {
        self.now = now;
        let base = self.o.resend_ticks;
        for p in self.pending.values_mut() {
            if now >= p.sent_at + (base << p.tries.min(5)) {
                p.sent_at = now;
                p.tries += 1;
                match p.phase {
                    // An unanswered read goes to the partition's next replica.
                    Phase::Reading(q) => {
                        let to = Self::reader(&self.replicas, self.id, q, p.tries);
                        self.sends.push((to, p.payload.clone()));
                    }
                    _ => self.out.push((p.dests.clone(), p.payload.clone())),
                }
                self.stats.resends += 1;
            }
        }
    }

    fn take_multicasts(&mut self, out: &mut Vec<(GroupSet, Bytes)>) {
        out.append(&mut self.out);
    }

    fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn stats(&self) -> &ClientStats {
        &self.stats
    }

    fn set_payload_limit(&mut self, max: usize) {
        self.payload_max = max;
    }

    fn take_refused(&mut self, out: &mut Vec<Completion<S::Command, Response<S::Reply>>>) {
        out.append(&mut self.refused);
    }

    fn attach(&mut self, config: &groups::config::ClusterConfig) {
        if self.o.fast_reads {
            self.replicas = (0..self.o.partitions)
                .map(|q| config.members(GroupId(q)).to_vec())
                .collect();
        }
    }

    fn take_sends(&mut self, out: &mut Vec<(NodeId, Bytes)>) {
        out.append(&mut self.sends);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioned::layout::{self, ScaleOutLayout};
    use crate::testing::scaleout::{Cmd, ObjectKv, Reply};

    fn client(scheme: Scheme) -> (ScaleOutClient<ObjectKv>, ScaleOutLayout) {
        let l = ScaleOutLayout::new(scheme, 2, 3, 1, 1, layout::tuning()).unwrap();
        let mut o = ClientOptions::new(scheme, 2);
        o.fast_reads = true;
        o.guess_placement = true;
        o.retry_max = 1;
        let id = ClientId::new(l.clients[0], 1);
        let mut c = ScaleOutClient::new(id, Arc::new(ObjectKv { preload: 4 }), o);
        Proxy::attach(&mut c, &l.config);
        (c, l)
    }

    fn reply(seq: u64, attempt: u32, outcome: Outcome<Reply>) -> Vec<u8> {
        wire::encode(&ToClient::Reply {
            seq,
            attempt,
            outcome,
        })
    }

    #[test]
    fn a_single_partition_read_goes_to_one_replica_and_is_ordered_once_refused() {
        let (mut c, l) = client(Scheme::Dssmr);
        let seq = c.submit(Cmd::Get(3));
        let mut sends = Vec::new();
        Proxy::take_sends(&mut c, &mut sends);
        let mut multicasts = Vec::new();
        c.take_multicasts(&mut multicasts);
        assert!(multicasts.is_empty(), "a read is not multicast");
        assert_eq!(sends.len(), 1);
        assert!(l.config.members(GroupId(1)).contains(&sends[0].0));
        let Ok(AppMsg::Read(body)) = AppMsg::parse(&sends[0].1) else {
            panic!("a read off the log");
        };
        assert_eq!(wire::decode::<CommandMsg>(body).unwrap().partitions, [1]);
        // Unanswered: the next replica of the partition.
        c.tick(c.o.resend_ticks);
        Proxy::take_sends(&mut c, &mut sends);
        assert_eq!(sends.len(), 2);
        assert_ne!(sends[0].0, sends[1].0);
        // Refused (not here): ordered, through the oracle, without using up the one attempt
        // retry_max allows before the S-SMR fallback.
        assert!(c.on_message(&reply(seq, 1, Outcome::Retry)).is_none());
        c.take_multicasts(&mut multicasts);
        assert_eq!(multicasts.len(), 1);
        assert_eq!(
            multicasts[0].0,
            GroupSet::singleton(GroupId(2)),
            "a consult"
        );
        assert_eq!(c.stats.fallbacks, 0);
        // A late answer to the read is ignored.
        let late = reply(seq, 1, Outcome::Done(Reply::Value(7)));
        assert!(c.on_message(&late).is_none());
    }

    #[test]
    fn writes_and_spread_reads_are_multicast_and_fast_reads_are_off_by_default() {
        let (mut c, _) = client(Scheme::Ssmr);
        c.submit(Cmd::Put(3, 1));
        c.submit(Cmd::Sum(vec![0, 1]));
        let seq = c.submit(Cmd::Sum(vec![1, 3]));
        let (mut sends, mut multicasts) = (Vec::new(), Vec::new());
        Proxy::take_sends(&mut c, &mut sends);
        c.take_multicasts(&mut multicasts);
        assert_eq!((sends.len(), multicasts.len()), (1, 2));
        let done = c
            .on_message(&reply(seq, 1, Outcome::Done(Reply::Total(9))))
            .expect("answered off the log");
        assert_eq!(done.result, Ok(Response::Done(Reply::Total(9))));
        let mut plain = ScaleOutClient::new(
            c.id,
            Arc::new(ObjectKv { preload: 4 }),
            ClientOptions::new(Scheme::Ssmr, 2),
        );
        plain.submit(Cmd::Get(3));
        Proxy::take_sends(&mut plain, &mut sends);
        assert_eq!(sends.len(), 1, "nothing more sent point to point");
    }
}
