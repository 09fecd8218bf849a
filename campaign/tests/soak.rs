//! Goal (issue 15): durable mode as deployed (logs trimmed below durable checkpoints) keeps
//! every data directory below a fixed bound under steady load and repeated SIGKILLs (of a
//! random server, of a server writing a checkpoint, of the whole cluster), and loses no
//! acknowledged write.
//!
//! Method: the CI version of `chorus-campaign soak` (30 minutes by default): one minute of
//! load, write-ahead files compacted past 256 KiB so that the minute exercises compaction, the
//! seed printed (`CHORUS_SEED=s` picks another). The soak's own checks (history linearizable,
//! no acknowledged write lost, equal replicas, every log trimmed, peak below the bound, every
//! restart loading its state) must all pass, and every kind of kill must have happened.

mod common;

use campaign::soak::{soak, CameBack, SoakOptions};
use std::time::Duration;

#[test]
fn a_one_minute_durable_soak_stays_bounded_and_loses_nothing() {
    let seed = common::seed();
    println!("soak seed {seed} (CHORUS_SEED={seed} replays the same kill plan)");
    let mut o = SoakOptions::new(Duration::from_secs(60), seed);
    o.wal_compact_bytes = 256 << 10;
    let s = soak(&o).expect("the soak starts");
    println!("{}", s.summary());
    assert!(s.passed(), "{:?}", s.run.problems);
    assert!(
        s.kills.iter().any(|k| k.nodes.len() == 3),
        "a whole-cluster kill"
    );
    assert!(
        s.kills.iter().any(|k| k.at_checkpoint_write),
        "a checkpoint-write kill"
    );
    assert!(s.kills.iter().all(|k| k.restarts.len() == k.nodes.len()));
    assert!(s
        .peak_bytes
        .iter()
        .all(|&(_, p)| p > 0 && p <= s.bound_bytes));
    assert!(s.samples >= 60, "measured every half second: {}", s.samples);
    assert_eq!(s.run.lost_acks, 0);
    assert!(
        s.kills
            .iter()
            .flat_map(|k| &k.restarts)
            .any(|x| x.from == CameBack::Checkpoint && x.round.is_some()),
        "a restart loaded a durable checkpoint"
    );
}
