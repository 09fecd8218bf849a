//! At-most-once execution for scale-out commands, which may be attempted several times.
//!
//! A client retries a command (a new *attempt*, possibly to other partitions) only after the
//! current attempt was answered `retry` or `retry(gamma)`, i.e. after no replica executed it.
//! A copy of an attempt can still be delivered later (the client resent it after a timeout),
//! so each partition and the oracle remember, per client and sequence number, the latest
//! attempt they handled and its outcome: a copy of that attempt gets the same answer again, a
//! copy of an older attempt is ignored, and a newer attempt is new. Every replica of a
//! partition sees the same copies in the same order, so all reach the same verdicts; the
//! partitions of a multi-partition command all deliver all its copies (same destinations), so
//! they agree with each other too.

use crate::wire::ClientId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the table knows about a copy of an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen<O> {
    /// Not handled yet: handle it.
    New,
    /// This attempt was handled; its outcome (if this replica answers it).
    Again(Option<O>),
    /// An older attempt than one already handled: the client has moved on.
    Stale,
    /// Below the client's acknowledged floor: the client already has its reply.
    Forgotten,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry<O> {
    floor: u64,
    records: BTreeMap<u64, (u32, Option<O>)>,
}

/// One replica's table (part of a replica's checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptTable<O> {
    clients: FxHashMap<ClientId, Entry<O>>,
}

impl<O> Default for AttemptTable<O> {
    fn default() -> Self {
        AttemptTable {
            clients: FxHashMap::default(),
        }
    }
}

impl<O: Clone> AttemptTable<O> {
    /// Looks up attempt `attempt` of request `seq` of `client`, first forgetting everything
    /// below the client's acknowledged `floor`.
    pub fn check(&mut self, client: ClientId, seq: u64, attempt: u32, floor: u64) -> Seen<O> {
        let e = self.clients.entry(client).or_insert_with(|| Entry {
            floor: 0,
            records: BTreeMap::new(),
        });
        if floor > e.floor {
            e.floor = floor;
            e.records = e.records.split_off(&floor);
        }
        if seq < e.floor {
            return Seen::Forgotten;
        }
        match e.records.get(&seq) {
            None => Seen::New,
            Some((a, _)) if attempt < *a => Seen::Stale,
            Some((a, o)) if attempt == *a => Seen::Again(o.clone()),
            Some(_) => Seen::New,
        }
    }

    /// Records how attempt `attempt` of `seq` was handled (`None`: this replica does not
    /// answer it).
    pub fn record(&mut self, client: ClientId, seq: u64, attempt: u32, outcome: Option<O>) {
        if let Some(e) = self.clients.get_mut(&client) {
            if seq >= e.floor {
                e.records.insert(seq, (attempt, outcome));
            }
        }
    }

    /// Requests remembered (all clients).
    pub fn len(&self) -> usize {
        self.clients.values().map(|e| e.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A deterministic digest of what the table holds (it is replicated state).
    pub fn digest(&self) -> u64 {
        type Records = Vec<(u64, u32)>;
        let mut keys: Vec<(ClientId, u64, Records)> = self
            .clients
            .iter()
            .map(|(c, e)| {
                (
                    *c,
                    e.floor,
                    e.records.iter().map(|(s, (a, _))| (*s, *a)).collect(),
                )
            })
            .collect();
        keys.sort();
        let mut h = crate::hash::Fnv64::new();
        for (c, f, rs) in keys {
            h.word(c.0).word(f);
            h.words(rs.into_iter().flat_map(|(s, a)| [s, u64::from(a)]));
        }
        h.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use groups::ids::NodeId;

    #[test]
    fn copies_of_the_latest_attempt_get_its_answer_and_older_ones_are_stale() {
        let c = ClientId::new(NodeId(1000), 0);
        let mut t: AttemptTable<&str> = AttemptTable::default();
        assert_eq!(t.check(c, 0, 1, 0), Seen::New);
        t.record(c, 0, 1, Some("retry"));
        assert_eq!(t.check(c, 0, 1, 0), Seen::Again(Some("retry")));
        assert_eq!(t.check(c, 0, 2, 0), Seen::New);
        t.record(c, 0, 2, Some("done"));
        assert_eq!(t.check(c, 0, 1, 0), Seen::Stale, "a late copy of attempt 1");
        assert_eq!(t.check(c, 0, 2, 0), Seen::Again(Some("done")));
        assert_eq!(t.check(c, 1, 1, 1), Seen::New);
        t.record(c, 1, 1, None);
        assert_eq!(t.check(c, 1, 1, 1), Seen::Again(None));
        assert_eq!(t.check(c, 0, 2, 1), Seen::Forgotten);
        assert_eq!(t.len(), 1);
    }
}
