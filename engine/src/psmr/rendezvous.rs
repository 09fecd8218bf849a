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

use crate::sync::{Condvar, Mutex};

/// The rendezvous of one replica's workers. `K` identifies a command, `T` is what is lent.
pub struct Rendezvous<K, T> {
    slots: Vec<Slot<K, T>>,
    /// Counts hand-offs (lends and give-backs), so that [`Rendezvous::stuck`] can tell a
    /// consistent view of the waiting flags from one taken across a hand-off.
    handoffs: Mutex<u64>,
}

struct Slot<K, T> {
    state: Mutex<SlotState<K, T>>,
    cv: Condvar,
}

struct SlotState<K, T> {
    /// Lent to this worker as executor: (command, lender, value).
    lent: Vec<(K, usize, T)>,
    /// Given back to this worker as lender.
    returned: Option<(K, T)>,
    /// The worker waits on this slot and was handed nothing since it started waiting (see
    /// [`Rendezvous::waiting`]).
    waiting: bool,
    closed: bool,
}

/// The replica is shutting down; the caller must stop.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl<K: PartialEq + Copy, T> Rendezvous<K, T> {
    pub fn new(workers: usize) -> Self {
        Rendezvous {
            slots: (0..workers)
                .map(|_| Slot {
                    state: Mutex::new(SlotState {
                        lent: Vec::new(),
                        returned: None,
                        waiting: false,
                        closed: false,
                    }),
                    cv: Condvar::new(),
                })
                .collect(),
            handoffs: Mutex::new(0),
        }
    }

    /// Worker `me` lends `value` to `executor` for command `key` and waits until it is given
    /// back.
    pub fn lend(&self, me: usize, executor: usize, key: K, value: T) -> Result<T, Closed> {
        {
            let slot = &self.slots[executor];
            let mut st = slot.state.lock().expect("rendezvous lock");
            if st.closed {
                return Err(Closed);
            }
            st.lent.push((key, me, value));
            st.waiting = false;
            *self.handoffs.lock().expect("rendezvous lock") += 1;
            slot.cv.notify_all();
        }
        let slot = &self.slots[me];
        let mut st = slot.state.lock().expect("rendezvous lock");
        loop {
            if let Some((k, _)) = &st.returned {
                if *k == key {
                    st.waiting = false;
                    return Ok(st.returned.take().expect("checked").1);
                }
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
            let arrived = st.lent.iter().filter(|(k, _, _)| *k == key).count();
            if arrived == lenders {
                let mut got = Vec::with_capacity(lenders);
                let mut i = 0;
                while i < st.lent.len() {
                    if st.lent[i].0 == key {
                        let (_, w, v) = st.lent.swap_remove(i);
                        got.push((w, v));
                    } else {
                        i += 1;
                    }
                }
                got.sort_by_key(|(w, _)| *w);
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
        debug_assert!(
            st.returned.is_none(),
            "a lender waits for one command at a time"
        );
        st.returned = Some((key, value));
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
}
