//! Goal: the Multi-Ring merge (reference notes, c.3 and c.5) told as stories: which message a
//! subscriber delivers next, when it blocks and what padding it asks for, how subscribers of
//! different groups deliver projections of one order, how duplicates are dropped.
//!
//! Method: the scripts in `testdata/merge/` (see `testkit::script`; `CHORUS_REWRITE=1`
//! rewrites their expected output) drive real `Merger`s:
//!
//! - `merger name=A logs=0,2 groups=0 m=2`: a subscriber to `groups` reading `logs`.
//! - `push log=L entries=a:0,b:0.1,skip3`: appends entries to log `L` at every merger that reads
//!   it: a one-message batch `name:dests` (groups joined by `.`) or `skipN`; a name already seen
//!   is the same message again (same id, same per-log sequence: a resend).
//! - `poll`: every merger delivers what it can: `A: a (L0 #0)` per message, then what it is
//!   blocked on.
//! - `state name=A`: where a merger restored from its state would resume.

use bytes::Bytes;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::merge::Merger;
use groups::message::{LogEntry, Message};
use groups::GroupSet;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use testkit::script::{run_file, script_files, Case};

#[derive(Default)]
struct World {
    mergers: BTreeMap<String, Merger>,
    /// Entries pushed so far per log (the next index).
    next: BTreeMap<u32, u64>,
    /// Known messages by name: id, and per log the sequence number it got there.
    ids: BTreeMap<String, MsgId>,
    log_seq: BTreeMap<(u32, String), u64>,
    names: BTreeMap<MsgId, String>,
}

fn list(s: &str) -> Vec<u32> {
    s.split(',').map(|x| x.parse().expect("a number")).collect()
}

impl World {
    fn message(&mut self, log: u32, spec: &str) -> Message {
        let (name, dests) = spec.split_once(':').expect("name:dests");
        let next_id = self.ids.len() as u64;
        let id = *self.ids.entry(name.to_string()).or_insert(MsgId {
            sender: NodeId(1),
            epoch: 0,
            seq: next_id,
        });
        self.names.insert(id, name.to_string());
        let in_log = self.log_seq.keys().filter(|(l, _)| *l == log).count() as u64;
        let log_seq = *self
            .log_seq
            .entry((log, name.to_string()))
            .or_insert(in_log);
        Message {
            id,
            log_seq,
            dests: dests
                .split('.')
                .map(|g| GroupId(g.parse().expect("a group")))
                .collect::<GroupSet>(),
            payload: Bytes::from(name.to_string()),
        }
    }

    fn run(&mut self, c: &Case) -> String {
        let w = c.words();
        match w[0] {
            "merger" => {
                let logs: Vec<LogId> = list(c.arg("logs").expect("logs="))
                    .into_iter()
                    .map(LogId)
                    .collect();
                let groups: GroupSet = list(c.arg("groups").expect("groups="))
                    .into_iter()
                    .map(GroupId)
                    .collect();
                let m = c.arg("m").map_or(1, |m| m.parse().expect("m"));
                let name = c.arg("name").expect("name=").to_string();
                self.mergers.insert(name, Merger::new(&logs, groups, m));
                String::new()
            }
            "push" => {
                let log: u32 = c.arg("log").expect("log=").parse().expect("log");
                let entries: Vec<LogEntry> = c
                    .arg("entries")
                    .expect("entries=")
                    .split(',')
                    .map(|e| match e.strip_prefix("skip") {
                        Some(n) => LogEntry::Skip(n.parse().expect("skip count")),
                        None => LogEntry::Batch(Arc::from(vec![self.message(log, e)])),
                    })
                    .collect();
                let start = self.next.entry(log).or_default();
                let at = *start;
                *start += entries.len() as u64;
                let mut out = Vec::new();
                for (name, m) in &mut self.mergers {
                    if m.next_index(LogId(log)).is_some() {
                        if let Err(gap) = m.push(LogId(log), at, &entries) {
                            out.push(format!("{name}: {gap}"));
                        }
                    }
                }
                out.join("\n")
            }
            "poll" => {
                let mut out = Vec::new();
                for (name, m) in &mut self.mergers {
                    let mut got = Vec::new();
                    m.poll(&mut got);
                    for d in got {
                        out.push(format!(
                            "{name}: {} (L{} #{})",
                            self.names[&d.msg.id], d.log.0, d.index
                        ));
                    }
                    match m.blocked_on() {
                        Some(n) => out.push(format!(
                            "{name}: blocked on L{} at #{} (needs {} slots)",
                            n.log.0, n.index, n.slots
                        )),
                        None => out.push(format!("{name}: not blocked")),
                    }
                }
                out.join("\n")
            }
            "state" => {
                let m = &self.mergers[c.arg("name").expect("name=")];
                let s = m.state();
                let at: Vec<String> = s
                    .resume_at()
                    .map(|(l, i)| format!("L{} #{i}", l.0))
                    .collect();
                format!("resume at {}", at.join(", "))
            }
            other => panic!("line {}: unknown command {other}", c.line),
        }
    }
}

#[test]
fn merge_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/merge");
    for f in script_files(&dir) {
        let mut world = World::default();
        run_file(&f, |c| world.run(c));
    }
}
