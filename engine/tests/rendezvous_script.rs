//! Goal: the P-SMR rendezvous (reference notes, a.6 and a.7) told as stories, step by step:
//! which worker runs a multi-worker command, who lends its shard and when it gets it back,
//! what happens when the executor or its lenders arrive first, where a checkpoint request falls
//! between them, how an optimistic attempt is refused.
//!
//! Method: the scripts in `testdata/rendezvous/` (see `testkit::script`; `CHORUS_REWRITE=1`
//! rewrites their expected output) drive the production worker set ([`WorkerSet`], stepped by
//! `Worker::step` over the polled rendezvous, as the simulator's scheduler does) of one replica
//! of the test key-value service (`engine::testing::KvService`; key `k` lives on worker
//! `k % workers`):
//!
//! - `replica workers=3`: a fresh replica.
//! - `submit name=t1 cmd=transfer:0:1:5 [attempt=optimistic] [retry=t0]`: a client's command
//!   (`get:K`, `put:K:V`, `insert:K:V`, `transfer:A:B:N`, `sum`, `len`), ordered on the log its
//!   command map routes it to and merged by the workers that read that log; the log leaders
//!   pad idle logs until no merge waits. `retry=t0`: the next try of request `t0` (same
//!   sequence number, the try's round one up; replies are named after `t0`).
//! - `checkpoint name=c1 round=1`: a checkpoint request (to every worker).
//! - `step w=N`: one step of worker N: what it did, where it stands after, what it produced.
//! - `run [order=2,0,1]`: steps workers that can move, the first of `order` (default: by id)
//!   first, until none can.
//! - `shards`: every worker's shard (or `lent`) and counters.

use engine::psmr::deployment::Deployment;
use engine::psmr::executor::{ExecOptions, Executor};
use engine::psmr::msg::{Attempt, Outcome, Reply, Request};
use engine::psmr::rendezvous::Slots;
use engine::psmr::workers::{Loan, Progress, Standing, WorkerEvent, WorkerSet};
use engine::testing::{KvCommand, KvReply, KvService};
use engine::wire::{self, AppMsg, ClientId, FeedMsg};
use engine::Service;
use groups::config::ClusterConfig;
use groups::groupset::GroupSet;
use groups::ids::{GroupId, LogId, MsgId, NodeId};
use groups::message::{LogEntry, Message};
use groups::node::LogEntries;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use testkit::script::{run_file, script_files, Case};

struct World {
    cfg: ClusterConfig,
    set: WorkerSet<KvService>,
    slots: Slots<MsgId, Loan<KvService>>,
    next_index: BTreeMap<LogId, u64>,
    names: BTreeMap<MsgId, String>,
    by_seq: BTreeMap<u64, String>,
    /// The latest try of each request.
    tries: BTreeMap<u64, u32>,
}

fn client() -> ClientId {
    ClientId::new(NodeId(1000), 0)
}

fn command(spec: &str) -> KvCommand {
    let parts: Vec<&str> = spec.split(':').collect();
    let n = |i: usize| -> i64 {
        parts
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{spec}: argument {i} is not a number"))
    };
    match parts[0] {
        "get" => KvCommand::Get(n(1) as u64),
        "put" => KvCommand::Put(n(1) as u64, n(2)),
        "insert" => KvCommand::Insert(n(1) as u64, n(2)),
        "transfer" => KvCommand::Transfer(n(1) as u64, n(2) as u64, n(3)),
        "sum" => KvCommand::Sum,
        "len" => KvCommand::Len,
        other => panic!("unknown command {other}"),
    }
}

fn workers_list(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

impl World {
    fn new(workers: usize) -> Self {
        // One slot per log per merge round keeps the padding in the stories short.
        let tuning = groups::config::Tuning {
            merge_m: 1,
            ..Default::default()
        };
        let d = Deployment::new(1, 0, workers, 1, tuning).expect("deployment");
        let service = Arc::new(KvService::default());
        let ex = Arc::new(Executor::new(
            service,
            workers,
            d.replicas[0],
            ExecOptions::default(),
        ));
        let subs = d
            .config
            .node(d.replicas[0])
            .expect("replica")
            .subscriptions
            .clone();
        World {
            set: WorkerSet::new(ex, &d.config, &subs, None),
            cfg: d.config,
            slots: Slots::new(workers),
            next_index: BTreeMap::new(),
            names: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            tries: BTreeMap::new(),
        }
    }

    fn name(&self, id: MsgId) -> &str {
        self.names.get(&id).map_or("?", String::as_str)
    }

    /// Orders `payload` for `dests` on the log that covers them; the workers merge it.
    fn order(&mut self, name: &str, dests: GroupSet, payload: bytes::Bytes) -> String {
        let log = self
            .cfg
            .route(&dests)
            .expect("a log covers the destinations");
        let id = MsgId {
            sender: NodeId(1000),
            epoch: 0,
            seq: self.names.len() as u64,
        };
        self.names.insert(id, name.to_string());
        let at = self.next_index.entry(log).or_default();
        let index = *at;
        *at += 1;
        let m = Message {
            id,
            log_seq: index,
            dests: dests.clone(),
            payload,
        };
        self.set.push(&LogEntries {
            log,
            start: index,
            entries: vec![LogEntry::Batch(Arc::from(vec![m]))],
        });
        let groups: Vec<usize> = dests.iter().map(|GroupId(g)| g as usize).collect();
        let mut out = vec![format!(
            "{name}: workers {} on L{} #{index}",
            workers_list(&groups),
            log.0
        )];
        self.pad(&mut out);
        out.join("\n")
    }

    /// Merges, and pads every log a worker's merge is blocked on, as the log's leader does
    /// when replicas report what they wait for, until no merge is blocked.
    fn pad(&mut self, out: &mut Vec<String>) {
        loop {
            for w in &mut self.set.workers {
                w.poll();
            }
            let mut needs: BTreeMap<LogId, (u64, u64)> = BTreeMap::new();
            for n in self.set.workers.iter().filter_map(|w| w.blocked_on()) {
                let e = needs.entry(n.log).or_insert((n.index, n.slots));
                e.1 = e.1.max(n.slots);
            }
            let Some((&log, &(index, slots))) = needs.iter().next() else {
                return;
            };
            let at = self.next_index.entry(log).or_default();
            assert_eq!(*at, index, "a merge waits at the end of its log");
            *at += 1;
            self.set.push(&LogEntries {
                log,
                start: index,
                entries: vec![LogEntry::Skip(slots)],
            });
            out.push(format!("  padded L{} #{index} with {slots} slots", log.0));
        }
    }

    fn step(&mut self, w: usize) -> Vec<String> {
        let mut events = Vec::new();
        let progress = self.set.workers[w].step(&self.set.executor, &mut self.slots, &mut events);
        let worker = &self.set.workers[w];
        let standing = match worker.standing() {
            Standing::Ready => "ready".to_string(),
            Standing::Collecting(id) => format!(
                "collecting {} ({} lent so far)",
                self.name(id),
                self.slots.slot(w).arrived(id)
            ),
            Standing::Lending(id) => format!("lent its shard for {}", self.name(id)),
        };
        let what = match progress {
            Progress::Stepped => "stepped",
            Progress::Idle => "idle",
            Progress::Waiting => "waits",
            Progress::Closed => "closed",
        };
        let mut out = vec![format!("w{w}: {what}, {standing}")];
        for e in events {
            out.push(match e {
                WorkerEvent::Reply(_, bytes) => {
                    let Ok(AppMsg::ToClient { body, .. }) = AppMsg::parse(&bytes) else {
                        panic!("a reply is a message to a client");
                    };
                    let r: Reply<KvReply> = wire::decode(body).expect("a reply");
                    let outcome = match r.outcome {
                        Outcome::Done(v) => format!("{v:?}"),
                        other => format!("{other:?}"),
                    };
                    format!("  reply {}: {outcome}", self.by_seq[&r.seq])
                }
                WorkerEvent::Part { round, part, .. } => {
                    let ex = &self.set.executor;
                    let shard = ex
                        .service
                        .restore_shard(w, ex.workers, &part.shard)
                        .expect("a part restores");
                    format!("  part of checkpoint {round}: {shard:?}")
                }
            });
        }
        out
    }

    fn run(&mut self, c: &Case) -> String {
        let w = c.words();
        let mut out = Vec::new();
        match w[0] {
            "submit" => {
                let name = c.arg("name").expect("name=");
                let cmd = command(c.arg("cmd").expect("cmd="));
                let workers = self.set.executor.workers;
                let service = &self.set.executor.service;
                let (attempt, target) = match c.arg("attempt") {
                    Some("optimistic") => (Attempt::Optimistic, service.optimistic(&cmd, workers)),
                    None | Some("conservative") => {
                        (Attempt::Conservative, service.conservative(&cmd, workers))
                    }
                    Some(other) => panic!("line {}: attempt={other}", c.line),
                };
                let seq = match c.arg("retry") {
                    // The client's retry of an earlier request: the same sequence number.
                    Some(of) => {
                        *self
                            .by_seq
                            .iter()
                            .find(|(_, n)| n.as_str() == of)
                            .unwrap_or_else(|| panic!("line {}: no request {of}", c.line))
                            .0
                    }
                    None => {
                        let seq = self.by_seq.len() as u64;
                        self.by_seq.insert(seq, name.to_string());
                        seq
                    }
                };
                let round = *self.tries.entry(seq).and_modify(|r| *r += 1).or_insert(0);
                let req = Request {
                    client: client(),
                    seq,
                    attempt,
                    round,
                    floor: 0,
                    command: wire::encode(&cmd).into(),
                };
                let dests: GroupSet = target
                    .workers(workers)
                    .into_iter()
                    .map(|g| GroupId(g as u32))
                    .collect();
                out.push(self.order(name, dests, FeedMsg::command(&req)));
            }
            "checkpoint" => {
                let name = c.arg("name").expect("name=");
                let round: u64 = c.arg("round").expect("round=").parse().expect("round");
                let all = self.cfg.all_groups();
                let payload = FeedMsg::checkpoint(round);
                out.push(self.order(name, all, payload));
            }
            "step" => {
                let w: usize = c.arg("w").expect("w=").parse().expect("worker");
                out.extend(self.step(w));
            }
            "run" => {
                let n = self.set.workers.len();
                let order: Vec<usize> = match c.arg("order") {
                    Some(o) => o.split(',').map(|w| w.parse().expect("worker")).collect(),
                    None => (0..n).collect(),
                };
                while let Some(&w) = order
                    .iter()
                    .find(|&&w| self.set.workers[w].can_step(&self.slots))
                {
                    out.extend(self.step(w));
                }
            }
            "shards" => {
                for wk in &self.set.workers {
                    let shard = match wk.shard() {
                        Some(s) => format!("{s:?}"),
                        None => "lent".to_string(),
                    };
                    let s = wk.stats();
                    out.push(format!(
                        "w{}: {shard}; single {} multi {} parked {} aborts {}",
                        wk.id, s.single, s.multi, s.parked, s.aborts
                    ));
                }
            }
            other => panic!("line {}: unknown command {other}", c.line),
        }
        out.join("\n")
    }
}

#[test]
fn rendezvous_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rendezvous");
    for f in script_files(&dir) {
        let mut world: Option<World> = None;
        run_file(&f, |c| {
            if c.words()[0] == "replica" {
                let k = c
                    .arg("workers")
                    .expect("workers=")
                    .parse()
                    .expect("workers");
                world = Some(World::new(k));
                return String::new();
            }
            world.as_mut().expect("a replica first").run(c)
        });
    }
}
