//! A replicated key-value store in one file, from the engine's contract to its binaries (the
//! walk-through is docs/tutorial.md).
//!
//! ```text
//! cargo run --release --example kv                                 # 3 replicas in-process
//! cargo run --release --example kv -- --write-config kv.toml       # a 3-process TCP cluster
//! for n in 1 2 3; do target/release/examples/kv --config kv.toml --node $n & done
//! target/release/examples/kv --config kv.toml --node 1000 put 7 seven
//! target/release/examples/kv --config kv.toml --node 1000 get 7
//! ```
//!
//! Its simulated fault campaign with the linearizability checker is `engine/tests/kv_example.rs`.

use engine::hash::Fnv64;
use engine::lincheck::Keys;
use engine::serve::psmr::{Plan, PsmrFile, ScaleUpApp};
use engine::serve::NoFlags;
use engine::{wire, Access, Service, Shards, SnapshotError, Target};
use groups::config::ClusterConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The commands: `Copy` touches two keys, `Len` all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    Get(u64),
    Put(u64, String),
    /// Copies the first key's value (if any) to the second.
    Copy(u64, u64),
    Len,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Value(Option<String>),
    Ok,
    Len(u64),
}

/// Key `k` lives in worker `k % workers`'s shard.
pub struct Kv;

fn owner(k: u64, workers: usize) -> usize {
    (k % workers as u64) as usize
}

impl Service for Kv {
    type Command = Cmd;
    type Reply = Reply;
    type Shard = BTreeMap<u64, String>;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn shards(&self, workers: usize) -> Vec<Self::Shard> {
        vec![BTreeMap::new(); workers]
    }

    /// The command map: dependent commands share a worker (a `Copy` involves both keys' owners,
    /// `Len` every worker); independent ones run in parallel.
    fn conservative(&self, cmd: &Cmd, workers: usize) -> Target {
        match cmd {
            Cmd::Get(k) | Cmd::Put(k, _) => Target::One(owner(*k, workers)),
            Cmd::Copy(a, b) => Target::of(vec![owner(*a, workers), owner(*b, workers)]),
            Cmd::Len => Target::All,
        }
    }

    /// Commands that change nothing: with fast reads, a `Get` is served by one replica off
    /// the log (`Len` needs every worker, so it still goes through the logs).
    fn read_only(&self, cmd: &Cmd) -> bool {
        matches!(cmd, Cmd::Get(_) | Cmd::Len)
    }

    fn execute(
        &self,
        shards: &mut Shards<'_, '_, Self::Shard>,
        cmd: &Cmd,
        a: &mut Access,
    ) -> Reply {
        let n = shards.total();
        match cmd {
            Cmd::Get(k) => {
                a.read(*k);
                Reply::Value(shards.get(owner(*k, n)).get(k).cloned())
            }
            Cmd::Put(k, v) => {
                a.write(*k);
                shards.get(owner(*k, n)).insert(*k, v.clone());
                Reply::Ok
            }
            Cmd::Copy(from, to) => {
                a.read(*from);
                a.write(*to);
                if let Some(v) = shards.get(owner(*from, n)).get(from).cloned() {
                    shards.get(owner(*to, n)).insert(*to, v);
                }
                Reply::Ok
            }
            Cmd::Len => Reply::Len(shards.iter_mut().map(|(_, s)| s.len() as u64).sum()),
        }
    }

    fn state_hash(&self, shards: &[&Self::Shard]) -> u64 {
        let mut h = Fnv64::new();
        for (k, v) in shards.iter().flat_map(|s| s.iter()) {
            h.word(*k).word(engine::hash::fnv1a(v.as_bytes()));
        }
        h.get()
    }

    /// A checkpoint holds every shard; a restored one must be the same (it comes from a peer
    /// over the network: anything malformed is an error, never a panic).
    fn snapshot_shard(&self, _worker: usize, shard: &Self::Shard) -> Vec<u8> {
        wire::encode(shard)
    }

    fn restore_shard(
        &self,
        w: usize,
        workers: usize,
        bytes: &[u8],
    ) -> Result<Self::Shard, SnapshotError> {
        let shard: Self::Shard = wire::decode(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        match shard.keys().find(|&&k| owner(k, workers) != w) {
            Some(k) => Err(SnapshotError(format!("key {k} is not worker {w}'s"))),
            None => Ok(shard),
        }
    }
}

/// The keys a command touches: the linearizability checker checks commands on disjoint keys
/// apart (its sequential specification is the service itself, `lincheck::Sequential`).
pub fn keys(cmd: &Cmd) -> Keys {
    match cmd {
        Cmd::Get(k) | Cmd::Put(k, _) => Keys::Some(vec![*k]),
        Cmd::Copy(a, b) => Keys::Some(vec![*a, *b]),
        Cmd::Len => Keys::All,
    }
}

/// The binaries: names, the deployment file, the command language.
impl ScaleUpApp for Kv {
    const SERVER: &'static str = "kv";
    const CLIENT: &'static str = "kv";
    const ABOUT: &'static str = "A replicated key-value store";
    const BASE_PORT: u16 = 7500;
    const COMMANDS: &'static str = "get K | put K V | copy FROM TO | len";
    type Flags = NoFlags;
    type File = PsmrFile<NoFlags>;

    fn from_flags(_: &NoFlags) -> Result<Kv, String> {
        Ok(Kv)
    }

    fn file(_: &NoFlags, plan: &Plan, cluster: ClusterConfig) -> Result<Self::File, String> {
        let plan = plan.clone();
        Ok(PsmrFile {
            plan,
            settings: NoFlags {},
            cluster,
        })
    }

    fn plan(file: &Self::File) -> Plan {
        file.plan.clone()
    }

    fn from_file(_: &Self::File) -> Result<Kv, String> {
        Ok(Kv)
    }

    fn parse(words: &[&str], _fresh: u64) -> Result<Cmd, String> {
        let key = |i: usize| -> Result<u64, String> {
            let w = words.get(i).ok_or("a key is missing")?;
            w.parse().map_err(|_| format!("{w:?} is not a key"))
        };
        match words {
            ["get", ..] => Ok(Cmd::Get(key(1)?)),
            ["put", _, v, ..] => Ok(Cmd::Put(key(1)?, v.to_string())),
            ["copy", ..] => Ok(Cmd::Copy(key(1)?, key(2)?)),
            ["len"] => Ok(Cmd::Len),
            _ => Err(format!("unknown command: {}", Self::COMMANDS)),
        }
    }

    fn render(reply: &Reply) -> String {
        match reply {
            Reply::Value(Some(v)) => v.clone(),
            Reply::Value(None) => "(absent)".into(),
            Reply::Ok => "ok".into(),
            Reply::Len(n) => n.to_string(),
        }
    }
}

fn main() -> std::process::ExitCode {
    engine::serve::psmr::main::<Kv>()
}
