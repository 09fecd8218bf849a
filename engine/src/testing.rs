//! A small sharded key-value service for testing the engine without a real application.
//!
//! Keys are `u64`, owned by worker `key % workers`. `Get`/`Put` go to the owner; `Transfer`
//! moves an amount between two keys (their owners, possibly two workers); `Sum` and `Len` read
//! everything (all workers). `Insert` is what makes opt-PSMR interesting: conservatively it is
//! an all-worker command (think of a B+-tree insert that may restructure shared nodes);
//! optimistically it goes to the owner, which refuses it when its shard would reach a multiple
//! of `split_every` entries (the "structural change" that would need the other workers).

use crate::service::{Access, Service, Shards, Target, Unsafe};
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
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for s in shards {
            for (k, v) in s.iter() {
                for x in [*k, *v as u64] {
                    h = (h ^ x).wrapping_mul(0x0100_0000_01b3);
                }
            }
            h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}
