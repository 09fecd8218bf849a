//! The contract between a replicated service and the engine (scale-up: P-SMR and opt-PSMR).
//!
//! A service splits its state into one *shard* per worker thread. Worker `i` delivers the
//! commands multicast to group `i` and owns shard `i` outright: a command that maps to one
//! worker runs on that worker's shard with no lock. A command that maps to several workers
//! runs on the lowest-numbered of them while the others are parked at the same command, and
//! gets all their shards ([`Shards`]); a command for all workers sees the whole state.
//!
//! The one safety obligation (reference notes, P-SMR M1): **two dependent commands map to at
//! least one common worker**. The debug mode ([`Access`]) records what each command actually
//! reads and writes and fails loudly when two commands running at once conflict.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// The workers (groups) a command is multicast to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    One(usize),
    /// Several workers, sorted and distinct.
    Many(Vec<usize>),
    All,
}

impl Target {
    /// A target for the given workers (sorted, deduplicated; one worker gives `One`).
    pub fn of(mut workers: Vec<usize>) -> Target {
        workers.sort_unstable();
        workers.dedup();
        match workers.len() {
            0 => Target::All,
            1 => Target::One(workers[0]),
            _ => Target::Many(workers),
        }
    }

    /// The workers, out of `n`.
    pub fn workers(&self, n: usize) -> Vec<usize> {
        match self {
            Target::One(w) => vec![*w],
            Target::Many(v) => v.clone(),
            Target::All => (0..n).collect(),
        }
    }
}

/// An optimistic command that would reach beyond its worker's shard. Returned only before
/// anything was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsafe;

/// A replicated service.
pub trait Service: Send + Sync + 'static {
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    type Reply: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static;
    /// The state one worker owns.
    type Shard: Send + 'static;

    /// A short name for logs and results.
    fn name(&self) -> &'static str;

    /// The initial state, as one shard per worker. Must be the same at every replica.
    fn shards(&self, workers: usize) -> Vec<Self::Shard>;

    /// P-SMR's conservative map: any command this one may conflict with maps to a common worker.
    fn conservative(&self, cmd: &Self::Command, workers: usize) -> Target;

    /// opt-PSMR's optimistic map. A command it maps to a single worker is executed with
    /// [`Service::execute_optimistic`], which may refuse it. Defaults to the conservative map.
    fn optimistic(&self, cmd: &Self::Command, workers: usize) -> Target {
        self.conservative(cmd, workers)
    }

    /// Executes `cmd` on the shards it maps to.
    fn execute(
        &self,
        shards: &mut Shards<'_, '_, Self::Shard>,
        cmd: &Self::Command,
        access: &mut Access,
    ) -> Self::Reply;

    /// Executes an optimistically single-worker command on that worker's shard (`shards`
    /// holds just that one), or refuses it with [`Unsafe`], changing nothing, if it would reach
    /// beyond the shard. The verdict may depend only on state written by this worker or by
    /// commands for all workers, so every replica reaches the same one. The default runs it
    /// like any command.
    fn execute_optimistic(
        &self,
        shards: &mut Shards<'_, '_, Self::Shard>,
        cmd: &Self::Command,
        access: &mut Access,
    ) -> Result<Self::Reply, Unsafe> {
        Ok(self.execute(shards, cmd, access))
    }

    /// Whether `cmd` changes nothing: no shard state, no shared state, whatever the state it
    /// runs on. Such a command, when its conservative map is one worker, may be served by a
    /// single replica without going through the logs (clients with fast reads,
    /// [`super::proxy::ClientProxy::with_fast_reads`]): the replica takes a read index of
    /// its logs and runs it on the worker once that worker has executed everything the index
    /// covers ([`super::workers`], "Reads"). A command declared read-only that writes would
    /// make that replica diverge; with the debug mode on ([`Access`]) such a write is caught
    /// and the read is refused. The default: none is.
    fn read_only(&self, _cmd: &Self::Command) -> bool {
        false
    }

    /// Executes a read-only command served off the log, on the shard of its one worker. It
    /// must change nothing replicated (a service that counts commands in its state, for load
    /// statistics say, must not count this one: only one replica runs it). The default runs
    /// it like any command, which is right for a service whose read-only commands change
    /// nothing.
    fn execute_read(
        &self,
        shards: &mut Shards<'_, '_, Self::Shard>,
        cmd: &Self::Command,
        access: &mut Access,
    ) -> Self::Reply {
        self.execute(shards, cmd, access)
    }

    /// For a service whose command map follows replicated state that changes (key ranges
    /// that move between workers): whether `cmd`, multicast to the workers whose shards are
    /// in `shards`, must not run here because under the shards' state it needs a worker that
    /// is not here (the client mapped it with stale routes). Called before
    /// [`Service::execute`] or [`Service::execute_optimistic`] on every try, with the shards
    /// of every involved worker. The verdict may depend only on state written by commands
    /// for all workers (every involved worker holds a copy of it), so every replica reaches
    /// the same one. `Some(routes)` refuses the try, changing nothing: the client learns
    /// `routes` (the service's current routing state, possibly empty;
    /// [`Service::learn_routes`]) and multicasts the command again. A command for every
    /// worker must never be refused. The default: never.
    fn misrouted(
        &self,
        _shards: &mut Shards<'_, '_, Self::Shard>,
        _cmd: &Self::Command,
    ) -> Option<Vec<u8>> {
        None
    }

    /// Client side: the routes of a [`Service::misrouted`] refusal, so later command maps use
    /// them. They come from a replica over the network: anything malformed must be ignored,
    /// never a panic. The default ignores them.
    fn learn_routes(&self, _routes: &[u8]) {}

    /// A hash of the whole state, equal at every replica that executed the same commands.
    fn state_hash(&self, shards: &[&Self::Shard]) -> u64;

    /// Encodes worker `worker`'s shard for a checkpoint, with whatever shared state the shard
    /// holds a copy of. Called by the worker itself at the checkpoint's point in its stream,
    /// while it owns the shard (so no other worker runs a command on it). A shard restored
    /// from it ([`Service::restore_shard`]) must behave exactly like this one from then on,
    /// not only hash equal: later verdicts (optimistic refusals, structural changes) may
    /// depend on more than the contents.
    fn snapshot_shard(&self, worker: usize, shard: &Self::Shard) -> Vec<u8>;

    /// Rebuilds worker `worker`'s shard (out of `workers`) from [`Service::snapshot_shard`]'s
    /// bytes. The bytes come from a peer replica over the network: anything malformed is a
    /// [`SnapshotError`], never a panic.
    fn restore_shard(
        &self,
        worker: usize,
        workers: usize,
        bytes: &[u8],
    ) -> Result<Self::Shard, SnapshotError>;
}

/// A shard snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad shard snapshot: {0}")]
pub struct SnapshotError(pub String);

/// The shards a command runs on, by worker.
pub struct Shards<'s, 'a, S> {
    items: &'s mut [(usize, &'a mut S)],
    total: usize,
}

impl<'s, 'a, S> Shards<'s, 'a, S> {
    /// `items` sorted by worker, out of `total` workers in the replica.
    pub fn new(items: &'s mut [(usize, &'a mut S)], total: usize) -> Self {
        debug_assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(items.last().is_none_or(|(w, _)| *w < total));
        Shards { items, total }
    }

    /// How many workers the replica runs (not just those here): the `workers` the command
    /// map was computed with.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The shard of `worker`. Asking for a worker the command does not map to is a bug in the
    /// service's command map, and panics with that message.
    pub fn get(&mut self, worker: usize) -> &mut S {
        match self.items.binary_search_by_key(&worker, |(w, _)| *w) {
            Ok(i) => self.items[i].1,
            Err(_) => panic!(
                "command map bug: the command touches worker {worker}'s shard but was mapped to {:?}",
                self.workers().collect::<Vec<_>>()
            ),
        }
    }

    /// Whether the command has `worker`'s shard.
    pub fn has(&self, worker: usize) -> bool {
        self.items
            .binary_search_by_key(&worker, |(w, _)| *w)
            .is_ok()
    }

    /// The workers whose shards are here, in order.
    pub fn workers(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().map(|(w, _)| *w)
    }

    /// Every shard here, in worker order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut S)> + use<'_, 's, 'a, S> {
        self.items.iter_mut().map(|(w, s)| (*w, &mut **s))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What a command read and wrote, recorded when the debug mode is on (otherwise recording is
/// a branch on a flag). Objects are service-defined `u64` ids (keys, node ids, structure ids).
#[derive(Debug, Default, Clone)]
pub struct Access {
    on: bool,
    pub reads: Vec<u64>,
    pub writes: Vec<u64>,
}

impl Access {
    pub fn recording(on: bool) -> Self {
        Access {
            on,
            ..Access::default()
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    #[inline]
    pub fn read(&mut self, object: u64) {
        if self.on {
            self.reads.push(object);
        }
    }

    #[inline]
    pub fn write(&mut self, object: u64) {
        if self.on {
            self.writes.push(object);
        }
    }

    /// An object both touched with at least one write, if any.
    pub fn conflict_with(&self, other: &Access) -> Option<u64> {
        let hit = |ws: &[u64], any: &[u64]| ws.iter().find(|o| any.contains(o)).copied();
        hit(&self.writes, &other.writes)
            .or_else(|| hit(&self.writes, &other.reads))
            .or_else(|| hit(&other.writes, &self.reads))
    }

    pub fn clear(&mut self) {
        self.reads.clear();
        self.writes.clear();
    }
}
