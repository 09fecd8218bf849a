//! Where a replica host writes its durable checkpoints: on its own thread (inline, for the
//! deterministic simulator and tests), or on a writer thread of its own, so that a large
//! checkpoint's write, `fsync`, rename and directory `fsync` never stall the event loop that
//! serves clients ([`Saver::background`], what the servers use).
//!
//! Either way the contract is the one [`super::disk`] states: a checkpoint's positions are
//! reported to the log acceptors (which trim below them) only once its file is durable. The
//! host hands a checkpoint over with [`Saver::submit`] and learns which are durable from
//! [`Saver::poll`], in round order. A writer that falls behind writes only the newest
//! checkpoint handed over: an older one waiting behind it is superseded (counted, never
//! reported), since the newer one covers more of every log.

use super::disk::{CheckpointFile, CheckpointFileError, DurableCheckpoints};
use crossbeam_channel::{Receiver, Sender};
use groups::ids::LogId;
use std::thread::JoinHandle;

/// What became of a checkpoint handed to a [`Saver`].
#[derive(Debug)]
pub struct Saved {
    pub round: u64,
    /// Its positions (per log, the first entry it does not cover), to report once durable.
    pub positions: Vec<(LogId, u64)>,
    /// Durable (microseconds the write took), or why not.
    pub result: Result<u64, CheckpointFileError>,
    /// Older checkpoints skipped because this one was handed over before they were written.
    pub superseded: u64,
}

/// A replica's durable checkpoint writer (see the module docs).
pub enum Saver {
    Inline {
        disk: Box<dyn DurableCheckpoints>,
        done: Vec<Saved>,
    },
    Background(Background),
}

/// The writer thread and its two channels.
pub struct Background {
    to: Option<Sender<CheckpointFile>>,
    from: Receiver<Saved>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    /// Writes each checkpoint in [`Saver::submit`] itself.
    pub fn inline(disk: Box<dyn DurableCheckpoints>) -> Self {
        Saver::Inline {
            disk,
            done: Vec::new(),
        }
    }

    /// Writes checkpoints on a thread of its own, named `name`. Fails only if the thread
    /// cannot be started.
    pub fn background(disk: Box<dyn DurableCheckpoints>, name: &str) -> std::io::Result<Self> {
        let (to, jobs) = crossbeam_channel::unbounded::<CheckpointFile>();
        let (done, from) = crossbeam_channel::unbounded::<Saved>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_loop(disk, &jobs, &done))?;
        Ok(Saver::Background(Background {
            to: Some(to),
            from,
            thread: Some(thread),
        }))
    }

    /// Hands `file` over to be made durable.
    pub fn submit(&mut self, file: CheckpointFile) {
        match self {
            Saver::Inline { disk, done } => done.push(save(disk.as_mut(), file, 0)),
            Saver::Background(b) => {
                let sent = b.to.as_ref().is_some_and(|to| to.send(file).is_ok());
                if !sent {
                    // The writer thread is gone (it panicked): nothing more becomes durable,
                    // so nothing more is reported and the logs are not trimmed.
                    tracing::error!(
                        "checkpoint writer thread gone: checkpoint not written, logs not trimmed"
                    );
                }
            }
        }
    }

    /// The checkpoints written (or failed, or superseded) since the last call, in round order.
    pub fn poll(&mut self, out: &mut Vec<Saved>) {
        match self {
            Saver::Inline { done, .. } => out.append(done),
            Saver::Background(b) => out.extend(b.from.try_iter()),
        }
    }
}

impl Drop for Background {
    /// Lets the writer finish what it was handed (a clean stop keeps its last checkpoint),
    /// then joins it.
    fn drop(&mut self) {
        self.to = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn save(disk: &mut dyn DurableCheckpoints, file: CheckpointFile, superseded: u64) -> Saved {
    let t0 = std::time::Instant::now();
    let result = disk.save(&file).map(|()| t0.elapsed().as_micros() as u64);
    Saved {
        round: file.round,
        positions: file.positions,
        result,
        superseded,
    }
}

/// The writer thread: takes the newest of the checkpoints waiting, writes it, reports it.
fn write_loop(
    mut disk: Box<dyn DurableCheckpoints>,
    jobs: &Receiver<CheckpointFile>,
    done: &Sender<Saved>,
) {
    while let Ok(mut file) = jobs.recv() {
        let mut superseded = 0;
        while let Ok(newer) = jobs.try_recv() {
            superseded += 1;
            file = newer;
        }
        if done.send(save(disk.as_mut(), file, superseded)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use groups::ids::{ClusterId, NodeId};
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Duration;

    /// Records the rounds written; blocks each write until `gate` lets it through.
    struct Gated {
        written: Arc<Mutex<Vec<u64>>>,
        gate: Receiver<()>,
        fail_round: Option<u64>,
    }

    impl DurableCheckpoints for Gated {
        fn save(&mut self, file: &CheckpointFile) -> Result<(), CheckpointFileError> {
            self.gate.recv().expect("gate open");
            if Some(file.round) == self.fail_round {
                return Err(CheckpointFileError::Io {
                    path: "x".into(),
                    source: std::io::Error::other("disk full"),
                });
            }
            self.written.lock().push(file.round);
            Ok(())
        }
    }

    fn file(round: u64) -> CheckpointFile {
        CheckpointFile {
            cluster: ClusterId(1),
            node: NodeId(2),
            round,
            positions: vec![(LogId(0), round * 10)],
            bytes: Bytes::from(vec![round as u8; 16]),
        }
    }

    fn poll_until(s: &mut Saver, n: usize) -> Vec<Saved> {
        let mut got = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < n && std::time::Instant::now() < until {
            s.poll(&mut got);
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn background_reports_only_written_checkpoints_newest_superseding_the_waiting() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = crossbeam_channel::unbounded();
        let disk = Gated {
            written: written.clone(),
            gate,
            fail_round: None,
        };
        let mut s = Saver::background(Box::new(disk), "test-saver").unwrap();
        s.submit(file(1));
        // Round 1 is being written (blocked at the gate): nothing is reported yet.
        std::thread::sleep(Duration::from_millis(20));
        let mut got = Vec::new();
        s.poll(&mut got);
        assert!(got.is_empty());
        // Rounds 2 and 3 wait behind it; only 3 is written.
        s.submit(file(2));
        s.submit(file(3));
        open.send(()).unwrap();
        open.send(()).unwrap();
        let got = poll_until(&mut s, 2);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].round, got[0].superseded), (1, 0));
        assert_eq!((got[1].round, got[1].superseded), (3, 1));
        assert_eq!(got[1].positions, vec![(LogId(0), 30)]);
        assert!(got.iter().all(|g| g.result.is_ok()));
        assert_eq!(*written.lock(), vec![1, 3]);
    }

    #[test]
    fn a_failed_write_is_reported_as_failed_and_a_drop_finishes_the_last_write() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = crossbeam_channel::unbounded();
        let disk = Gated {
            written: written.clone(),
            gate,
            fail_round: Some(1),
        };
        let mut s = Saver::background(Box::new(disk), "test-saver").unwrap();
        s.submit(file(1));
        open.send(()).unwrap();
        let got = poll_until(&mut s, 1);
        assert_eq!(got.len(), 1);
        assert!(got[0].result.is_err());
        s.submit(file(2));
        open.send(()).unwrap();
        drop(s);
        assert_eq!(
            *written.lock(),
            vec![2],
            "the drop waited for round 2's write"
        );
    }

    #[test]
    fn inline_writes_at_submit() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = crossbeam_channel::unbounded();
        open.send(()).unwrap();
        let disk = Gated {
            written: written.clone(),
            gate,
            fail_round: None,
        };
        let mut s = Saver::inline(Box::new(disk));
        s.submit(file(4));
        assert_eq!(*written.lock(), vec![4]);
        let mut got = Vec::new();
        s.poll(&mut got);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].round, 4);
    }
}
