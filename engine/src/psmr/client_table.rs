//! The client table: at-most-once execution of retried commands.
//!
//! Each worker keeps its own table, for the requests it executes (as the single worker of a
//! command, or as the executor of a multi-worker one). A retried request goes to the same
//! workers as its first copy (the command map is deterministic), so the same table sees it
//! and answers with the cached reply instead of executing it again. The table is part of the
//! replicated state: every replica's worker `i` sees the same requests in the same order and
//! reaches the same decisions.
//!
//! A try that a worker refused (an optimistic attempt that would reach beyond its shard, or a
//! try the service found misrouted) is recorded with its round, so a late copy of that try,
//! or of an earlier one, is refused again, even if the worker's state would now allow it: the
//! client has already moved on to a later try, which must be the only execution.

use super::msg::Outcome;
use crate::client_records::{ClientRecords, Lookup};
use crate::wire::ClientId;
use serde::{Deserialize, Serialize};

/// What the table knows about a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen<R> {
    /// Not seen: execute it.
    New,
    /// Executed before: resend this outcome.
    Done(Outcome<R>, Option<u64>),
    /// Tries up to this round were refused, the latest as said: refuse later copies of them
    /// the same way (a later try is executed).
    Refused(u32, Refusal),
    /// Below the client's acknowledged floor: the client already has its reply.
    Forgotten,
}

/// Why a try was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// An optimistic attempt that would reach beyond its worker (opt-PSMR's abort).
    Unsafe,
    /// The service found the try mapped to the wrong workers (stale routes).
    Misrouted,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Record<R> {
    Done(Outcome<R>, Option<u64>),
    Refused(u32, Refusal),
}

/// One worker's table. Serializable: it is part of a replica's checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "R: Serialize", deserialize = "R: Deserialize<'de>"))]
pub struct ClientTable<R> {
    records: ClientRecords<Record<R>>,
}

impl<R> Default for ClientTable<R> {
    fn default() -> Self {
        ClientTable {
            records: ClientRecords::default(),
        }
    }
}

impl<R: Clone> ClientTable<R> {
    /// Looks up request `seq` of `client`, first forgetting everything below the client's
    /// acknowledged `floor`.
    pub fn check(&mut self, client: ClientId, seq: u64, floor: u64) -> Seen<R> {
        match self.records.lookup(client, seq, floor) {
            Lookup::Forgotten => Seen::Forgotten,
            Lookup::Absent => Seen::New,
            Lookup::Found(Record::Done(o, h)) => Seen::Done(o.clone(), *h),
            Lookup::Found(Record::Refused(round, why)) => Seen::Refused(*round, *why),
        }
    }

    pub fn record_done(
        &mut self,
        client: ClientId,
        seq: u64,
        outcome: Outcome<R>,
        hash: Option<u64>,
    ) {
        self.records
            .insert(client, seq, Record::Done(outcome, hash));
    }

    /// Try `round` of request `seq` was refused (nothing changed).
    pub fn record_refused(&mut self, client: ClientId, seq: u64, round: u32, why: Refusal) {
        self.records
            .insert(client, seq, Record::Refused(round, why));
    }

    /// Requests remembered (all clients).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A deterministic digest of the table (it is replicated state).
    pub fn digest(&self) -> u64 {
        let mut h = crate::hash::Fnv64::new();
        for (c, f, records) in self.records.sorted() {
            h.word(c.0).word(f).word(records.len() as u64);
        }
        h.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use groups::ids::NodeId;

    #[test]
    fn remembers_replies_and_aborts_until_the_floor_passes() {
        let c = ClientId::new(NodeId(9), 1);
        let mut t: ClientTable<u32> = ClientTable::default();
        assert_eq!(t.check(c, 0, 0), Seen::New);
        t.record_done(c, 0, Outcome::Done(7), None);
        assert_eq!(t.check(c, 0, 0), Seen::Done(Outcome::Done(7), None));
        assert_eq!(t.check(c, 1, 0), Seen::New);
        t.record_refused(c, 1, 2, Refusal::Misrouted);
        assert_eq!(t.check(c, 1, 0), Seen::Refused(2, Refusal::Misrouted));
        t.record_done(c, 1, Outcome::Done(8), None);
        assert_eq!(
            t.check(c, 1, 0),
            Seen::Done(Outcome::Done(8), None),
            "a later try ran"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(c, 2, 1), Seen::New);
        assert_eq!(t.check(c, 0, 1), Seen::Forgotten);
        assert_eq!(t.len(), 1, "seq 0 was forgotten");
    }
}
