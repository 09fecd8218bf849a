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

use crate::client_records::{ClientRecords, Lookup};
use crate::wire::ClientId;
use serde::{Deserialize, Serialize};

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

/// One replica's table (part of a replica's checkpoint): per request, the latest attempt
/// handled and its outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "O: Serialize", deserialize = "O: Deserialize<'de>"))]
pub struct AttemptTable<O> {
    records: ClientRecords<(u32, Option<O>)>,
}

impl<O> Default for AttemptTable<O> {
    fn default() -> Self {
        AttemptTable {
            records: ClientRecords::default(),
        }
    }
}

impl<O: Clone> AttemptTable<O> {
    /// Looks up attempt `attempt` of request `seq` of `client`, first forgetting everything
    /// below the client's acknowledged `floor`.
    pub fn check(&mut self, client: ClientId, seq: u64, attempt: u32, floor: u64) -> Seen<O> {
        match self.records.lookup(client, seq, floor) {
            Lookup::Forgotten => Seen::Forgotten,
            Lookup::Absent => Seen::New,
            Lookup::Found((a, _)) if attempt < *a => Seen::Stale,
            Lookup::Found((a, o)) if attempt == *a => Seen::Again(o.clone()),
            Lookup::Found(_) => Seen::New,
        }
    }

    /// Records how attempt `attempt` of `seq` was handled (`None`: this replica does not
    /// answer it).
    pub fn record(&mut self, client: ClientId, seq: u64, attempt: u32, outcome: Option<O>) {
        self.records.insert(client, seq, (attempt, outcome));
    }

    /// Requests remembered (all clients).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A deterministic digest of what the table holds (it is replicated state).
    pub fn digest(&self) -> u64 {
        let mut h = crate::hash::Fnv64::new();
        for (c, f, rs) in self.records.sorted() {
            h.word(c.0).word(f);
            h.words(rs.iter().flat_map(|(s, (a, _))| [*s, u64::from(*a)]));
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
