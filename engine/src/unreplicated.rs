//! The `unreplicated` baseline: the same service on the same number of threads, as a plain
//! concurrent server with locks and no ordering and no replication. Every replicated mode is
//! compared with it.
//!
//! Each shard sits behind its own lock. A command first tries the optimistic map: if that maps
//! it to one shard, it runs there under that shard's lock unless the service refuses it;
//! otherwise (or on refusal) it takes the locks of every shard of the conservative map in
//! worker order (so no deadlock) and runs. A command the service finds misrouted under the
//! locks it took (its routes moved: [`Service::misrouted`]) teaches the service the routes and
//! runs under every lock. `workers` server threads take requests from one queue.

use crate::psmr::service::{Access, Service, Shards, Target};
use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A request, a tag chosen by the caller, and where to send the tagged reply.
pub type Call<S> = (
    <S as Service>::Command,
    u64,
    Sender<(u64, <S as Service>::Reply)>,
);

/// The locked state and the executing logic, callable from any thread.
pub struct LockedState<S: Service> {
    service: Arc<S>,
    shards: Vec<Mutex<S::Shard>>,
}

impl<S: Service> LockedState<S> {
    pub fn new(service: Arc<S>, workers: usize) -> Self {
        LockedState {
            shards: service
                .shards(workers)
                .into_iter()
                .map(Mutex::new)
                .collect(),
            service,
        }
    }

    pub fn workers(&self) -> usize {
        self.shards.len()
    }

    /// Executes `cmd` under the locks it needs.
    pub fn execute(&self, cmd: &S::Command) -> S::Reply {
        let k = self.shards.len();
        let mut access = Access::recording(false);
        if let Target::One(w) = self.service.optimistic(cmd, k) {
            let mut guard = self.shards[w].lock();
            let mut one = [(w, &mut *guard)];
            let mut view = Shards::new(&mut one, k);
            match self.service.misrouted(&mut view, cmd) {
                Some(routes) => self.service.learn_routes(&routes),
                None => {
                    if let Ok(r) = self.service.execute_optimistic(&mut view, cmd, &mut access) {
                        return r;
                    }
                }
            }
        }
        let conservative = self.service.conservative(cmd, k).workers(k);
        if let Some(r) = self.run_locked(&conservative, cmd, &mut access) {
            return r;
        }
        let all: Vec<usize> = (0..k).collect();
        self.run_locked(&all, cmd, &mut access)
            .expect("a command for every worker is never misrouted")
    }

    /// Runs `cmd` under the locks of `workers` (in order), unless the service finds it
    /// misrouted there (then it learns the routes and nothing runs).
    fn run_locked(
        &self,
        workers: &[usize],
        cmd: &S::Command,
        access: &mut Access,
    ) -> Option<S::Reply> {
        let k = self.shards.len();
        let mut guards: Vec<_> = workers.iter().map(|&w| self.shards[w].lock()).collect();
        let mut refs: Vec<(usize, &mut S::Shard)> = workers
            .iter()
            .copied()
            .zip(guards.iter_mut().map(|g| &mut **g))
            .collect();
        let mut view = Shards::new(&mut refs, k);
        if let Some(routes) = self.service.misrouted(&mut view, cmd) {
            self.service.learn_routes(&routes);
            return None;
        }
        Some(self.service.execute(&mut view, cmd, access))
    }

    /// Hash of the whole state (takes every lock).
    pub fn state_hash(&self) -> u64 {
        let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let all: Vec<&S::Shard> = guards.iter().map(|g| &**g).collect();
        self.service.state_hash(&all)
    }
}

/// A running unreplicated server.
pub struct UnreplicatedServer<S: Service> {
    tx: Option<Sender<Call<S>>>,
    threads: Vec<JoinHandle<()>>,
    pub state: Arc<LockedState<S>>,
}

impl<S: Service> UnreplicatedServer<S> {
    /// Starts `workers` server threads (pinned to their own cores if `pin`).
    pub fn start(service: Arc<S>, workers: usize, pin: bool) -> Self {
        let state = Arc::new(LockedState::new(service, workers));
        let (tx, rx): (Sender<Call<S>>, Receiver<Call<S>>) = unbounded();
        let placement = pin.then(|| crate::topology::Topology::detect().placement(workers));
        let threads = (0..workers)
            .map(|i| {
                let rx = rx.clone();
                let state = state.clone();
                let cpu = placement.as_ref().map(|p| p[i]);
                std::thread::Builder::new()
                    .name(format!("unreplicated-{i}"))
                    .spawn(move || {
                        if let Some(id) = cpu {
                            core_affinity::set_for_current(core_affinity::CoreId { id });
                        }
                        while let Ok((cmd, tag, reply)) = rx.recv() {
                            let _ = reply.send((tag, state.execute(&cmd)));
                        }
                    })
                    .expect("spawn server thread")
            })
            .collect();
        UnreplicatedServer {
            tx: Some(tx),
            threads,
            state,
        }
    }

    /// A handle to submit requests.
    pub fn sender(&self) -> Sender<Call<S>> {
        self.tx.clone().expect("running")
    }

    /// Stops the server threads once the queue is drained.
    pub fn stop(mut self) -> Arc<LockedState<S>> {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{KvCommand, KvReply, KvService};

    #[test]
    fn concurrent_transfers_conserve_money() {
        let server = UnreplicatedServer::start(Arc::new(KvService::default()), 4, false);
        let tx = server.sender();
        let call = |cmd: KvCommand| {
            let (rtx, rrx) = crossbeam_channel::bounded(1);
            tx.send((cmd, 0, rtx)).unwrap();
            rrx.recv().unwrap().1
        };
        for k in 0..20 {
            call(KvCommand::Put(k, 50));
        }
        let threads: Vec<_> = (0..4u64)
            .map(|c| {
                let tx = server.sender();
                std::thread::spawn(move || {
                    let (rtx, rrx) = crossbeam_channel::unbounded();
                    for i in 0..500u64 {
                        let cmd = KvCommand::Transfer((i + c) % 20, (i * 3 + c + 1) % 20, 1);
                        tx.send((cmd, 2 * i, rtx.clone())).unwrap();
                        tx.send((
                            KvCommand::Insert(1000 + c * 1000 + i, 0),
                            2 * i + 1,
                            rtx.clone(),
                        ))
                        .unwrap();
                        let mut got = [rrx.recv().unwrap(), rrx.recv().unwrap()];
                        got.sort_by_key(|(t, _)| *t);
                        assert_eq!(got[0], (2 * i, KvReply::Ok));
                        assert_eq!(got[1], (2 * i + 1, KvReply::Inserted(true)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(call(KvCommand::Sum), KvReply::Total(1000));
        assert_eq!(call(KvCommand::Len), KvReply::Len(20 + 2000));
        drop(tx);
        server.stop();
    }
}
