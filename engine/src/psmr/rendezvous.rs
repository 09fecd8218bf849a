//! The multi-worker rendezvous of P-SMR (reference notes, section a.6), by lending shards.
//!
//! When workers reach a command that involves several of them, the lowest-numbered one (the
//! *executor*) runs it. Each other involved worker *lends* its shard to the executor and parks
//! until the shard comes back; the executor waits until every lender has arrived, runs the
//! command on all the shards, and gives each one back. Moving the shards (ownership, not
//! references) makes the isolation the notes require visible to the compiler: while a worker
//! is parked it owns nothing, so it cannot run anything; while the executor runs the command it
//! holds every involved shard exclusively.
//!
//! Deadlock freedom comes from the multicast order (section a.7): every worker meets the
//! multi-worker commands it is involved in in one consistent order, so the minimal pending
//! command always gathers all its workers. Lent shards are keyed by command, so a lender that
//! arrives before its executor reached the command simply waits in the executor's slot.
//!
//! **One state, two drivers.** The state of the rendezvous is data: one [`Slot`] per worker
//! (what was lent to it as executor, what was given back to it as lender). [`Lending`] is the
//! seam a worker uses ([`super::workers::Worker::step`]); it has two implementations over the
//! same slots: [`Slots`], plain data for a single-threaded scheduler (the simulator), where
//! `collect` and `reclaim` answer "not yet" instead of waiting; and [`Rendezvous`], each slot
//! behind a mutex and a condition variable, for one thread per worker, where they wait. The
//! shuttle model check (`tests/rendezvous_shuttle.rs`) explores the threaded one.

use crate::sync::{Condvar, Mutex};

/// The replica is shutting down; the caller must stop.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// One worker's part of the rendezvous.
#[derive(Debug)]
pub struct Slot<K, T> {
    /// Lent to this worker as executor: (command, lender, value).
    lent: Vec<(K, usize, T)>,
    /// Given back to this worker as lender.
    returned: Option<(K, T)>,
    /// The worker waits on this slot (threaded driver only) and was handed nothing since it
    /// started waiting (see [`Rendezvous::stuck`]).
    waiting: bool,
    closed: bool,
}

impl<K, T> Default for Slot<K, T> {
    fn default() -> Self {
        Slot {
            lent: Vec::new(),
            returned: None,
            waiting: false,
            closed: false,
        }
    }
}

impl<K: PartialEq + Copy, T> Slot<K, T> {
    /// Lenders that have lent for `key` so far.
    pub fn arrived(&self, key: K) -> usize {
        self.lent.iter().filter(|(k, _, _)| *k == key).count()
    }

    /// Whether `key`'s value was given back.
    pub fn is_returned(&self, key: K) -> bool {
        self.returned.as_ref().is_some_and(|(k, _)| *k == key)
    }

    fn take_lent(&mut self, key: K, lenders: usize) -> Option<Vec<(usize, T)>> {
        if self.arrived(key) != lenders {
            return None;
        }
        let mut got = Vec::with_capacity(lenders);
        let mut i = 0;
        while i < self.lent.len() {
            if self.lent[i].0 == key {
                let (_, w, v) = self.lent.swap_remove(i);
                got.push((w, v));
            } else {
                i += 1;
            }
        }
        got.sort_by_key(|(w, _)| *w);
        Some(got)
    }

    fn take_returned(&mut self, key: K) -> Option<T> {
        if self.is_returned(key) {
            self.returned.take().map(|(_, v)| v)
        } else {
            None
        }
    }

    fn give(&mut self, key: K, value: T) {
        debug_assert!(
            self.returned.is_none(),
            "a lender waits for one command at a time"
        );
        self.returned = Some((key, value));
    }
}

/// How a worker meets the others at a multi-worker command (see the module docs).
pub trait Lending<K, T> {
    /// Worker `me` lends `value` to `executor` for command `key`.
    fn lend(&mut self, me: usize, executor: usize, key: K, value: T) -> Result<(), Closed>;
    /// Executor `me` takes the values of the `lenders` workers that lent for `key`, sorted by
    /// worker; `None` while some have not lent yet (a waiting implementation never says so).
    fn collect(
        &mut self,
        me: usize,
        key: K,
        lenders: usize,
    ) -> Result<Option<Vec<(usize, T)>>, Closed>;
    /// The executor gives `value` back to lender `to` for command `key`.
    fn give_back(&mut self, to: usize, key: K, value: T);
    /// Lender `me` takes back what it lent for `key`; `None` while the executor still holds it
    /// (a waiting implementation never says so).
    fn reclaim(&mut self, me: usize, key: K) -> Result<Option<T>, Closed>;
}

/// The rendezvous as plain data, for a scheduler that runs every worker on one thread and
/// steps only workers that can move ([`Slots::slot`]).
#[derive(Debug)]
pub struct Slots<K, T> {
    slots: Vec<Slot<K, T>>,
}

impl<K: PartialEq + Copy, T> Slots<K, T> {
    pub fn new(workers: usize) -> Self {
        Slots {
            slots: (0..workers).map(|_| Slot::default()).collect(),
        }
    }

    pub fn slot(&self, worker: usize) -> &Slot<K, T> {
        &self.slots[worker]
    }
}

impl<K: PartialEq + Copy, T> Lending<K, T> for Slots<K, T> {
    fn lend(&mut self, me: usize, executor: usize, key: K, value: T) -> Result<(), Closed> {
        self.slots[executor].lent.push((key, me, value));
        Ok(())
    }
    fn collect(
        &mut self,
        me: usize,
        key: K,
        lenders: usize,
    ) -> Result<Option<Vec<(usize, T)>>, Closed> {
        Ok(self.slots[me].take_lent(key, lenders))
    }
    fn give_back(&mut self, to: usize, key: K, value: T) {
        self.slots[to].give(key, value);
    }
    fn reclaim(&mut self, me: usize, key: K) -> Result<Option<T>, Closed> {
        Ok(self.slots[me].take_returned(key))
    }
}

/// The rendezvous of one replica's worker threads: every slot behind a lock and a condition
/// variable; `collect` and `reclaim` wait.
pub struct Rendezvous<K, T> {
    slots: Vec<Locked<K, T>>,
    /// Counts hand-offs (lends and give-backs), so that [`Rendezvous::stuck`] can tell a
    /// consistent view of the waiting flags from one taken across a hand-off.
    handoffs: Mutex<u64>,
}

struct Locked<K, T> {
    state: Mutex<Slot<K, T>>,
    cv: Condvar,
}

impl<K: PartialEq + Copy, T> Rendezvous<K, T> {
    pub fn new(workers: usize) -> Self {
        Rendezvous {
            slots: (0..workers)
                .map(|_| Locked {
                    state: Mutex::new(Slot::default()),
                    cv: Condvar::new(),
                })
                .collect(),
            handoffs: Mutex::new(0),
        }
    }

    /// Worker `me` lends `value` to `executor` for command `key` and waits until it is given
    /// back.
    pub fn lend(&self, me: usize, executor: usize, key: K, value: T) -> Result<T, Closed> {
        self.deposit(me, executor, key, value)?;
        self.wait_returned(me, key)
    }

    fn deposit(&self, me: usize, executor: usize, key: K, value: T) -> Result<(), Closed> {
        let slot = &self.slots[executor];
        let mut st = slot.state.lock().expect("rendezvous lock");
        if st.closed {
            return Err(Closed);
        }
        st.lent.push((key, me, value));
        st.waiting = false;
        *self.handoffs.lock().expect("rendezvous lock") += 1;
        slot.cv.notify_all();
        Ok(())
    }

    fn wait_returned(&self, me: usize, key: K) -> Result<T, Closed> {
        let slot = &self.slots[me];
        let mut st = slot.state.lock().expect("rendezvous lock");
        loop {
            if let Some(v) = st.take_returned(key) {
                st.waiting = false;
                return Ok(v);
            }
            if st.closed {
                st.waiting = false;
                return Err(Closed);
            }
            st.waiting = true;
            st = slot.cv.wait(st).expect("rendezvous lock");
        }
    }

    /// Executor `me` waits until `lenders` workers have lent for command `key`, and takes
    /// their values, sorted by worker.
    pub fn collect(&self, me: usize, key: K, lenders: usize) -> Result<Vec<(usize, T)>, Closed> {
        let slot = &self.slots[me];
        let mut st = slot.state.lock().expect("rendezvous lock");
        loop {
            if let Some(got) = st.take_lent(key, lenders) {
                st.waiting = false;
                return Ok(got);
            }
            if st.closed {
                st.waiting = false;
                return Err(Closed);
            }
            st.waiting = true;
            st = slot.cv.wait(st).expect("rendezvous lock");
        }
    }

    /// The executor gives `value` back to lender `to` for command `key`.
    pub fn give_back(&self, to: usize, key: K, value: T) {
        let slot = &self.slots[to];
        let mut st = slot.state.lock().expect("rendezvous lock");
        st.give(key, value);
        st.waiting = false;
        *self.handoffs.lock().expect("rendezvous lock") += 1;
        slot.cv.notify_all();
    }

    /// Whether every worker either is done (`done(worker)`) or waits here (to lend or to
    /// collect) with nothing lent or given back to it since it started waiting: then none can
    /// go on, since only a worker reaching a waiter's command releases it. A replica that
    /// stops closes the rendezvous once this holds. The flags are read between two equal
    /// hand-off counts, so no hand-off happened while they were read.
    pub fn stuck(&self, done: impl Fn(usize) -> bool) -> bool {
        let before = *self.handoffs.lock().expect("rendezvous lock");
        let all = (0..self.slots.len())
            .all(|w| done(w) || self.slots[w].state.lock().expect("rendezvous lock").waiting);
        all && *self.handoffs.lock().expect("rendezvous lock") == before
    }

    /// Wakes everyone and makes every call fail from now on (shutdown).
    pub fn close(&self) {
        for slot in &self.slots {
            slot.state.lock().expect("rendezvous lock").closed = true;
            slot.cv.notify_all();
        }
    }
}

/// A worker thread's view of the shared rendezvous.
impl<K: PartialEq + Copy, T> Lending<K, T> for &Rendezvous<K, T> {
    fn lend(&mut self, me: usize, executor: usize, key: K, value: T) -> Result<(), Closed> {
        self.deposit(me, executor, key, value)
    }
    fn collect(
        &mut self,
        me: usize,
        key: K,
        lenders: usize,
    ) -> Result<Option<Vec<(usize, T)>>, Closed> {
        Rendezvous::collect(self, me, key, lenders).map(Some)
    }
    fn give_back(&mut self, to: usize, key: K, value: T) {
        Rendezvous::give_back(self, to, key, value)
    }
    fn reclaim(&mut self, me: usize, key: K) -> Result<Option<T>, Closed> {
        self.wait_returned(me, key).map(Some)
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn executor_gets_lent_values_and_gives_them_back() {
        let r = Arc::new(Rendezvous::<u64, String>::new(3));
        let lenders: Vec<_> = [1, 2]
            .into_iter()
            .map(|w| {
                let r = r.clone();
                std::thread::spawn(move || r.lend(w, 0, 7, format!("shard{w}")).unwrap())
            })
            .collect();
        let got = r.collect(0, 7, 2).unwrap();
        assert_eq!(
            got,
            vec![(1, "shard1".to_string()), (2, "shard2".to_string())]
        );
        for (w, v) in got {
            r.give_back(w, 7, v + "!");
        }
        let back: Vec<String> = lenders.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(back, vec!["shard1!".to_string(), "shard2!".to_string()]);
    }

    #[test]
    fn close_releases_parked_workers() {
        let r = Arc::new(Rendezvous::<u64, u8>::new(2));
        let r2 = r.clone();
        let h = std::thread::spawn(move || r2.lend(1, 0, 1, 5));
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.close();
        assert_eq!(h.join().unwrap(), Err(Closed));
        assert_eq!(r.collect(0, 9, 1), Err(Closed));
    }

    #[test]
    fn polled_slots_answer_not_yet_instead_of_waiting() {
        let mut s = Slots::<u64, &str>::new(3);
        assert_eq!(s.collect(0, 4, 2), Ok(None));
        s.lend(2, 0, 4, "b").unwrap();
        assert_eq!(s.slot(0).arrived(4), 1);
        assert_eq!(s.collect(0, 4, 2), Ok(None), "one lender of two");
        s.lend(1, 0, 4, "a").unwrap();
        assert_eq!(s.reclaim(1, 4), Ok(None), "the executor holds it");
        assert_eq!(s.collect(0, 4, 2), Ok(Some(vec![(1, "a"), (2, "b")])));
        s.give_back(1, 4, "a'");
        assert!(s.slot(1).is_returned(4));
        assert_eq!(s.reclaim(1, 4), Ok(Some("a'")));
        assert_eq!(s.reclaim(1, 4), Ok(None));
    }
}
