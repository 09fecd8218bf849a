//! Goal: the multi-worker rendezvous (reference notes, sections a.6-a.7) never deadlocks and
//! never loses a wake-up when workers meet their commands in one consistent order, and every
//! shard sees the multi-worker commands that involve it in that order.
//!
//! Method: shuttle runs the real `Rendezvous` (its locks and condition variables come from
//! shuttle under the `shuttle` feature) under thousands of randomized and PCT schedules.
//! Each worker walks its stream exactly as a replica worker does: single-worker commands touch
//! only its own shard; for a multi-worker command the lowest worker collects the others'
//! shards, appends the command to each, and gives them back. A negative control gives two
//! workers inconsistent orders and expects shuttle to find the deadlock.
//!
//! Run with `cargo test -p engine --release --features shuttle --test rendezvous_shuttle`.

#![cfg(feature = "shuttle")]

use engine::psmr::rendezvous::Rendezvous;
use shuttle::thread;
use std::sync::Arc;

/// One command: its id and the workers it involves (sorted).
type Cmd = (u64, Vec<usize>);

/// The per-worker streams of a global order of commands: each worker sees, in global order,
/// the commands that involve it.
fn streams(order: &[Cmd], workers: usize) -> Vec<Vec<Cmd>> {
    (0..workers)
        .map(|w| {
            order
                .iter()
                .filter(|(_, inv)| inv.contains(&w))
                .cloned()
                .collect()
        })
        .collect()
}

/// Runs the streams; returns each shard's log of executed command ids.
fn run(streams: Vec<Vec<Cmd>>) -> Vec<Vec<u64>> {
    let workers = streams.len();
    let rv: Arc<Rendezvous<u64, Vec<u64>>> = Arc::new(Rendezvous::new(workers));
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(me, stream)| {
            let rv = rv.clone();
            thread::spawn(move || {
                let mut shard: Option<Vec<u64>> = Some(Vec::new());
                for (id, involved) in stream {
                    if involved.len() == 1 {
                        shard.as_mut().unwrap().push(id);
                    } else if involved[0] == me {
                        let lent = rv.collect(me, id, involved.len() - 1).unwrap();
                        assert_eq!(
                            lent.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
                            involved[1..].to_vec(),
                            "the executor got exactly the involved shards"
                        );
                        shard.as_mut().unwrap().push(id);
                        for (w, mut s) in lent {
                            s.push(id);
                            rv.give_back(w, id, s);
                        }
                    } else {
                        let mine = shard.take().unwrap();
                        shard = Some(rv.lend(me, involved[0], id, mine).unwrap());
                    }
                }
                shard.unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn scenario() -> Vec<Cmd> {
    vec![
        (1, vec![0]),
        (2, vec![0, 1]),
        (3, vec![2]),
        (4, vec![1, 2]),
        (5, vec![0, 1, 2]),
        (6, vec![1]),
        (7, vec![0, 2]),
        (8, vec![0, 1, 2]),
        (9, vec![2]),
        (10, vec![1, 2]),
    ]
}

fn check_consistent() {
    let order = scenario();
    let logs = run(streams(&order, 3));
    for (w, log) in logs.iter().enumerate() {
        let expected: Vec<u64> = order
            .iter()
            .filter(|(_, inv)| inv.contains(&w))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(log, &expected, "shard {w} saw its commands in stream order");
    }
}

#[test]
fn consistent_orders_never_deadlock_random_schedules() {
    shuttle::check_random(check_consistent, 3000);
}

#[test]
fn consistent_orders_never_deadlock_pct_schedules() {
    shuttle::check_pct(check_consistent, 3000, 3);
}

/// Negative control: worker 0 meets A then B, worker 1 meets B then A (both involve 0 and 1).
/// This is exactly what atomic multicast's acyclic order rules out; shuttle must find the
/// deadlock, which shows the tests above could fail.
#[test]
#[should_panic(expected = "deadlock")]
fn inconsistent_orders_deadlock_and_shuttle_finds_it() {
    shuttle::check_random(
        || {
            let a: Cmd = (1, vec![0, 1]);
            let b: Cmd = (2, vec![0, 1]);
            run(vec![vec![a.clone(), b.clone()], vec![b, a]]);
        },
        1000,
    );
}
