//! Per-client records of requests above each client's acknowledged floor: the part the two
//! at-most-once tables share ([`crate::psmr::client_table`] for P-SMR workers,
//! [`crate::partitioned::attempts`] for scale-out replicas). A client's requests carry the
//! lowest sequence number it still waits for (its *floor*); everything below it is forgotten,
//! so a table holds only what is in flight. Replicated state: every replica sees the same
//! requests in the same order and holds the same records.

use crate::wire::ClientId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry<V> {
    floor: u64,
    records: BTreeMap<u64, V>,
}

/// What [`ClientRecords::lookup`] found for a request.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a, V> {
    /// Below the client's floor: the client already has its answer.
    Forgotten,
    /// Nothing recorded.
    Absent,
    Found(&'a V),
}

/// Records by client and sequence number (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "V: Serialize", deserialize = "V: Deserialize<'de>"))]
pub struct ClientRecords<V> {
    clients: FxHashMap<ClientId, Entry<V>>,
}

impl<V> Default for ClientRecords<V> {
    fn default() -> Self {
        ClientRecords {
            clients: FxHashMap::default(),
        }
    }
}

impl<V> ClientRecords<V> {
    /// Request `seq` of `client`, first forgetting everything below the client's `floor`.
    pub fn lookup(&mut self, client: ClientId, seq: u64, floor: u64) -> Lookup<'_, V> {
        let e = self.clients.entry(client).or_insert_with(|| Entry {
            floor: 0,
            records: BTreeMap::new(),
        });
        if floor > e.floor {
            e.floor = floor;
            e.records = e.records.split_off(&floor);
        }
        if seq < e.floor {
            return Lookup::Forgotten;
        }
        match e.records.get(&seq) {
            None => Lookup::Absent,
            Some(v) => Lookup::Found(v),
        }
    }

    /// Records `v` for request `seq` of a client looked up before (nothing for an unknown
    /// client, or below its floor).
    pub fn insert(&mut self, client: ClientId, seq: u64, v: V) {
        if let Some(e) = self.clients.get_mut(&client) {
            if seq >= e.floor {
                e.records.insert(seq, v);
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

    /// Every client with its floor and records, in client order (for digests).
    pub fn sorted(&self) -> Vec<(ClientId, u64, &BTreeMap<u64, V>)> {
        let mut all: Vec<_> = self
            .clients
            .iter()
            .map(|(c, e)| (*c, e.floor, &e.records))
            .collect();
        all.sort_by_key(|(c, _, _)| *c);
        all
    }
}
