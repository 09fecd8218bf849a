//! A small sharded key-value service for testing the engine without a real application.
//!
//! Keys are `u64`, owned by worker `key % workers`. `Get`/`Put` go to the owner; `Transfer`
//! moves an amount between two keys (their owners, possibly two workers); `Sum` and `Len` read
//! everything (all workers). `Insert` is what makes opt-PSMR interesting: conservatively it is
//! an all-worker command (think of a B+-tree insert that may restructure shared nodes);
//! optimistically it goes to the owner, which refuses it when its shard would reach a multiple
//! of `split_every` entries (the "structural change" that would need the other workers).

use crate::psmr::service::{Access, Service, Shards, SnapshotError, Target, Unsafe};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Get(u64),
    Put(u64, i64),
    /// Inserts a key if absent (returns whether it was inserted).
    Insert(u64, i64),
    /// Moves `amount` from the first key to the second (missing keys count as 0).
    Transfer(u64, u64, i64),
    Sum,
    Len,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    Value(Option<i64>),
    Ok,
    Inserted(bool),
    Total(i64),
    Len(u64),
}

/// See the module docs.
pub struct KvService {
    /// An optimistic insert that would make its shard's length a multiple of this is refused.
    pub split_every: usize,
}

impl Default for KvService {
    fn default() -> Self {
        KvService { split_every: 16 }
    }
}

/// The worker that owns `k`.
pub fn owner(k: u64, workers: usize) -> usize {
    (k % workers as u64) as usize
}

impl Service for KvService {
    type Command = KvCommand;
    type Reply = KvReply;
    type Shard = BTreeMap<u64, i64>;

    fn name(&self) -> &'static str {
        "test-kv"
    }

    fn shards(&self, workers: usize) -> Vec<Self::Shard> {
        (0..workers).map(|_| BTreeMap::new()).collect()
    }

    fn conservative(&self, cmd: &KvCommand, workers: usize) -> Target {
        match *cmd {
            KvCommand::Get(k) | KvCommand::Put(k, _) => Target::One(owner(k, workers)),
            KvCommand::Transfer(a, b, _) => Target::of(vec![owner(a, workers), owner(b, workers)]),
            KvCommand::Insert(..) | KvCommand::Sum | KvCommand::Len => Target::All,
        }
    }

    fn read_only(&self, cmd: &KvCommand) -> bool {
        matches!(cmd, KvCommand::Get(_) | KvCommand::Sum | KvCommand::Len)
    }

    fn optimistic(&self, cmd: &KvCommand, workers: usize) -> Target {
        match *cmd {
            KvCommand::Insert(k, _) => Target::One(owner(k, workers)),
            ref other => self.conservative(other, workers),
        }
    }

    fn execute(
        &self,
        shards: &mut Shards<'_, '_, Self::Shard>,
        cmd: &KvCommand,
        access: &mut Access,
    ) -> KvReply {
        let n = shards.total();
        match *cmd {
            KvCommand::Get(k) => {
                access.read(k);
                KvReply::Value(shards.get(owner(k, n)).get(&k).copied())
            }
            KvCommand::Put(k, v) => {
                access.write(k);
                shards.get(owner(k, n)).insert(k, v);
                KvReply::Ok
            }
            KvCommand::Insert(k, v) => {
                access.write(k);
                match shards.get(owner(k, n)).entry(k) {
                    std::collections::btree_map::Entry::Occupied(_) => KvReply::Inserted(false),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(v);
                        KvReply::Inserted(true)
                    }
                }
            }
            KvCommand::Transfer(a, b, amount) => {
                access.write(a);
                access.write(b);
                *shards.get(owner(a, n)).entry(a).or_insert(0) -= amount;
                *shards.get(owner(b, n)).entry(b).or_insert(0) += amount;
                KvReply::Ok
            }
            KvCommand::Sum => {
                let mut total = 0;
                for (_, s) in shards.iter_mut() {
                    for (k, v) in s.iter() {
                        access.read(*k);
                        total += v;
                    }
                }
                KvReply::Total(total)
            }
            KvCommand::Len => KvReply::Len(shards.iter_mut().map(|(_, s)| s.len() as u64).sum()),
        }
    }

    fn execute_optimistic(
        &self,
        shards: &mut Shards<'_, '_, Self::Shard>,
        cmd: &KvCommand,
        access: &mut Access,
    ) -> Result<KvReply, Unsafe> {
        if let KvCommand::Insert(k, _) = *cmd {
            let s = shards.get(owner(k, shards.total()));
            if !s.contains_key(&k) && (s.len() + 1) % self.split_every == 0 {
                return Err(Unsafe);
            }
        }
        Ok(self.execute(shards, cmd, access))
    }

    fn state_hash(&self, shards: &[&Self::Shard]) -> u64 {
        let mut h = crate::hash::Fnv64::new();
        for s in shards {
            for (k, v) in s.iter() {
                h.word(*k).word(*v as u64);
            }
            h.word(0xff);
        }
        h.get()
    }

    fn snapshot_shard(&self, _worker: usize, shard: &Self::Shard) -> Vec<u8> {
        crate::wire::encode(shard)
    }

    fn restore_shard(
        &self,
        worker: usize,
        workers: usize,
        bytes: &[u8],
    ) -> Result<Self::Shard, SnapshotError> {
        let shard: Self::Shard =
            crate::wire::decode(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        if let Some(k) = shard.keys().find(|&&k| owner(k, workers) != worker) {
            return Err(SnapshotError(format!(
                "key {k} is not worker {worker}'s (of {workers})"
            )));
        }
        Ok(shard)
    }
}

/// The P-SMR campaigns' mix over keys `0..keys`: gets and puts (one worker), inserts of new
/// keys above `keys` (all workers conservatively, refused now and then optimistically),
/// transfers (two workers), sums and lengths (all workers).
pub fn kv_workload(keys: u64) -> crate::sim::Workload<KvCommand> {
    use rand::RngExt;
    std::sync::Arc::new(move |rng: &mut rand_chacha::ChaCha8Rng, _| {
        let k = rng.random_range(0..keys);
        match rng.random_range(0..100) {
            0..30 => KvCommand::Get(k),
            30..50 => KvCommand::Put(k, rng.random_range(0..100)),
            50..70 => KvCommand::Insert(keys + rng.random_range(0..200), rng.random_range(0..100)),
            70..92 => KvCommand::Transfer(k, rng.random_range(0..keys), 1),
            92..96 => KvCommand::Sum,
            _ => KvCommand::Len,
        }
    })
}

/// The sequential specification of [`KvService`] for the linearizability checker.
pub struct KvModel;

impl crate::lincheck::Model for KvModel {
    type State = BTreeMap<u64, i64>;
    type Input = KvCommand;
    type Output = KvReply;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(
        &self,
        s: &Self::State,
        input: &KvCommand,
        output: Option<&KvReply>,
    ) -> Option<Self::State> {
        let mut next = s.clone();
        let reply = match *input {
            KvCommand::Get(k) => KvReply::Value(s.get(&k).copied()),
            KvCommand::Put(k, v) => {
                next.insert(k, v);
                KvReply::Ok
            }
            KvCommand::Insert(k, v) => match s.get(&k) {
                Some(_) => KvReply::Inserted(false),
                None => {
                    next.insert(k, v);
                    KvReply::Inserted(true)
                }
            },
            KvCommand::Transfer(a, b, x) => {
                *next.entry(a).or_insert(0) -= x;
                *next.entry(b).or_insert(0) += x;
                KvReply::Ok
            }
            KvCommand::Sum => KvReply::Total(s.values().sum()),
            KvCommand::Len => KvReply::Len(s.len() as u64),
        };
        match output {
            Some(o) if *o != reply => None,
            _ => Some(next),
        }
    }

    fn keys(&self, input: &KvCommand) -> crate::lincheck::Keys {
        use crate::lincheck::Keys;
        match *input {
            KvCommand::Get(k) | KvCommand::Put(k, _) | KvCommand::Insert(k, _) => {
                Keys::Some(vec![k])
            }
            KvCommand::Transfer(a, b, _) => Keys::Some(vec![a, b]),
            KvCommand::Sum | KvCommand::Len => Keys::All,
        }
    }
}

/// A partitioned key-value service for testing scale-out (S-SMR and DS-SMR), with its
/// sequential specification for the linearizability checker.
///
/// Every key is an object holding an `i64`. `Get`/`Put` touch one key, `Transfer` two, `Sum`
/// any number (multi-partition commands), `Create`/`Delete` make and remove keys. `Bump(k)`
/// adds 1 to `k` and to its partner `k ^ 1`, a key the client does not name: the first attempt
/// is answered `retry(gamma)` and the client gathers the partner too. Keys `0..preload` exist
/// from the start with value 100; key `k` is placed in partition `k % partitions`.
pub mod scaleout {
    use crate::lincheck::{Keys, Model};
    use crate::partitioned::msg::Response;
    use crate::partitioned::service::{
        Kind, Need, ObjectId, Objects, PartitionId, PartitionedService,
    };
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    /// The simulated campaigns' mix over keys `0..keys`: gets, puts, transfers and sums across
    /// partitions, bumps (`retry(gamma)`), creates and deletes.
    pub fn workload(keys: u64) -> crate::sim::Workload<Cmd> {
        use rand::RngExt;
        use rand_chacha::ChaCha8Rng;
        std::sync::Arc::new(move |rng: &mut ChaCha8Rng, _| {
            let k = |rng: &mut ChaCha8Rng| rng.random_range(0..keys);
            match rng.random_range(0..100) {
                0..25 => Cmd::Get(k(rng)),
                25..40 => Cmd::Put(k(rng), rng.random_range(0..1000)),
                40..60 => Cmd::Transfer(k(rng), k(rng), rng.random_range(1..10)),
                60..68 => Cmd::Sum((0..rng.random_range(2..=3)).map(|_| k(rng)).collect()),
                68..80 => Cmd::Bump(k(rng)),
                80..93 => Cmd::Create(k(rng), rng.random_range(0..1000)),
                _ => Cmd::Delete(k(rng)),
            }
        })
    }

    /// The scale-out campaigns' convention: even seeds S-SMR, odd ones DS-SMR.
    pub fn scheme_for(seed: u64) -> crate::partitioned::Scheme {
        if seed.is_multiple_of(2) {
            crate::partitioned::Scheme::Ssmr
        } else {
            crate::partitioned::Scheme::Dssmr
        }
    }

    /// A simulated campaign's deployment, drawn from `rng`: `scheme_for(seed)`, 2 to 4
    /// partitions of 2 or 3 replicas (and an oracle of as many with DS-SMR), 2 client nodes,
    /// no log trimming, the client options of [`drawn_client_options`], replicas that record
    /// their views (for [`crate::partitioned::blueprint::check_ownership`]).
    pub struct Drawn {
        pub scheme: crate::partitioned::Scheme,
        pub partitions: u32,
        pub replicas: usize,
        pub layout: crate::partitioned::layout::ScaleOutLayout,
        pub client: crate::partitioned::proxy::ClientOptions,
        pub server: crate::partitioned::ServerOptions,
    }

    pub fn drawn_deployment(seed: u64, rng: &mut rand_chacha::ChaCha8Rng) -> Drawn {
        use crate::partitioned::layout;
        use rand::RngExt;
        let scheme = scheme_for(seed);
        let partitions = rng.random_range(2..=4u32);
        let replicas = rng.random_range(2..=3usize);
        let tuning = groups::config::Tuning {
            trim: false,
            ..layout::tuning()
        };
        let layout = layout::ScaleOutLayout::new(scheme, partitions, replicas, 1, 2, tuning)
            .expect("a valid layout");
        let client = drawn_client_options(scheme, partitions, seed, rng);
        let server = crate::partitioned::ServerOptions {
            record_views: true,
            ..crate::partitioned::ServerOptions::new(scheme)
        };
        Drawn {
            scheme,
            partitions,
            replicas,
            layout,
            client,
            server,
        }
    }

    /// Client options drawn from `rng` for a simulated campaign: retry threshold 1-4, a cache
    /// or not, moves on cached locations or only after a consult, placement guesses or not.
    pub fn drawn_client_options(
        scheme: crate::partitioned::Scheme,
        partitions: u32,
        seed: u64,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> crate::partitioned::proxy::ClientOptions {
        use rand::RngExt;
        let mut client = crate::partitioned::proxy::ClientOptions::new(scheme, partitions);
        client.retry_max = rng.random_range(1..=4);
        client.cache = rng.random_bool(0.7);
        client.move_on_cached = rng.random_bool(0.5);
        client.guess_placement = rng.random_bool(0.5);
        client.resend_ticks = 100;
        client.seed = seed;
        client
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum Cmd {
        Create(u64, i64),
        Delete(u64),
        Get(u64),
        Put(u64, i64),
        Transfer(u64, u64, i64),
        Sum(Vec<u64>),
        Bump(u64),
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum Reply {
        Value(i64),
        Ok,
        Total(i64),
    }

    /// See the module docs.
    pub struct ObjectKv {
        pub preload: u64,
    }

    /// The initial value of preloaded keys.
    pub const INITIAL: i64 = 100;

    impl PartitionedService for ObjectKv {
        type Command = Cmd;
        type Reply = Reply;
        type Value = i64;

        fn name(&self) -> &'static str {
            "object-kv"
        }

        fn kind(&self, cmd: &Cmd) -> Kind {
            match cmd {
                Cmd::Create(k, _) => Kind::Create(*k),
                Cmd::Delete(k) => Kind::Delete(*k),
                Cmd::Get(k) | Cmd::Put(k, _) | Cmd::Bump(k) => Kind::Access(vec![*k]),
                Cmd::Transfer(a, b, _) => Kind::access(vec![*a, *b]),
                Cmd::Sum(ks) => Kind::access(ks.clone()),
            }
        }

        fn initial(&self, cmd: &Cmd) -> i64 {
            match cmd {
                Cmd::Create(_, v) => *v,
                _ => 0,
            }
        }

        fn read_only(&self, cmd: &Cmd) -> bool {
            matches!(cmd, Cmd::Get(_) | Cmd::Sum(_))
        }

        fn execute(&self, cmd: &Cmd, objects: &mut Objects<'_, i64>) -> Result<Reply, Need> {
            Ok(match cmd {
                Cmd::Get(k) => Reply::Value(*objects.get(*k).ok_or(Need(vec![*k]))?),
                Cmd::Put(k, v) => {
                    *objects.get_mut(*k).ok_or(Need(vec![*k]))? = *v;
                    Reply::Ok
                }
                Cmd::Transfer(a, b, x) if a != b => {
                    let (va, vb) = objects.pair_mut(*a, *b).ok_or(Need(vec![*a, *b]))?;
                    *va -= x;
                    *vb += x;
                    Reply::Ok
                }
                Cmd::Transfer(..) => Reply::Ok,
                Cmd::Sum(ks) => {
                    let mut total = 0;
                    for k in ks {
                        total += objects.get(*k).ok_or(Need(vec![*k]))?;
                    }
                    Reply::Total(total)
                }
                Cmd::Bump(k) => {
                    let partner = k ^ 1;
                    let (a, b) = objects.pair_mut(*k, partner).ok_or(Need(vec![partner]))?;
                    *a += 1;
                    *b += 1;
                    Reply::Ok
                }
                Cmd::Create(..) | Cmd::Delete(_) => Reply::Ok,
            })
        }

        fn place(&self, object: ObjectId, partitions: u32) -> PartitionId {
            (object % u64::from(partitions)) as PartitionId
        }

        fn preload(&self) -> Vec<(ObjectId, i64)> {
            (0..self.preload).map(|k| (k, INITIAL)).collect()
        }
    }

    /// The sequential specification: a map from keys to values, keys `0..preload` present.
    pub struct ObjectKvModel {
        pub preload: u64,
    }

    impl Model for ObjectKvModel {
        type State = BTreeMap<u64, i64>;
        type Input = Cmd;
        type Output = Response<Reply>;

        fn init(&self) -> Self::State {
            (0..self.preload).map(|k| (k, INITIAL)).collect()
        }

        fn step(
            &self,
            state: &Self::State,
            input: &Cmd,
            output: Option<&Response<Reply>>,
        ) -> Option<Self::State> {
            let mut next = state.clone();
            let has = |k: &u64| state.contains_key(k);
            let expected = match input {
                Cmd::Create(k, v) => {
                    if has(k) {
                        Response::AlreadyExists
                    } else {
                        next.insert(*k, *v);
                        Response::Created
                    }
                }
                Cmd::Delete(k) => {
                    next.remove(k);
                    Response::Deleted
                }
                Cmd::Get(k) => match state.get(k) {
                    Some(v) => Response::Done(Reply::Value(*v)),
                    None => Response::NotFound,
                },
                Cmd::Put(k, v) => {
                    if has(k) {
                        next.insert(*k, *v);
                        Response::Done(Reply::Ok)
                    } else {
                        Response::NotFound
                    }
                }
                Cmd::Transfer(a, b, x) => {
                    if has(a) && has(b) {
                        if a != b {
                            *next.get_mut(a).expect("has") -= x;
                            *next.get_mut(b).expect("has") += x;
                        }
                        Response::Done(Reply::Ok)
                    } else {
                        Response::NotFound
                    }
                }
                Cmd::Sum(ks) => {
                    if ks.iter().all(has) {
                        Response::Done(Reply::Total(ks.iter().map(|k| state[k]).sum()))
                    } else {
                        Response::NotFound
                    }
                }
                Cmd::Bump(k) => {
                    let partner = k ^ 1;
                    if has(k) && has(&partner) {
                        *next.get_mut(k).expect("has") += 1;
                        *next.get_mut(&partner).expect("has") += 1;
                        Response::Done(Reply::Ok)
                    } else {
                        Response::NotFound
                    }
                }
            };
            match output {
                Some(o) if *o != expected => None,
                _ => Some(next),
            }
        }

        fn keys(&self, input: &Cmd) -> Keys {
            Keys::Some(match input {
                Cmd::Create(k, _) | Cmd::Delete(k) | Cmd::Get(k) | Cmd::Put(k, _) => vec![*k],
                Cmd::Transfer(a, b, _) => vec![*a, *b],
                Cmd::Sum(ks) => ks.clone(),
                Cmd::Bump(k) => vec![*k, k ^ 1],
            })
        }
    }
}
