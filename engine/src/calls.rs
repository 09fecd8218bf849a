//! Blocking calls into a client host from other threads: a [`ChannelDriver`] feeds the host's
//! clients with commands sent through [`ClientHandle`]s and sends each result back.

use crate::host::client::{ClientError, ClientHost, Completion, Driver, Proxy};
use crate::host::OnNode;
use groups::runtime::Waker;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Where a blocking call's result goes.
type ResultTx<R> = crossbeam_channel::Sender<Result<R, ClientError>>;
/// A blocking call: client, command, result channel.
type Call<C, R> = (usize, C, ResultTx<R>);

/// A [`Driver`] fed by other threads through [`ClientHandle`]s.
pub struct ChannelDriver<C, R> {
    rx: crossbeam_channel::Receiver<Call<C, R>>,
    queued: Vec<VecDeque<(C, ResultTx<R>)>>,
    waiting: Vec<VecDeque<ResultTx<R>>>,
    waker: Arc<parking_lot::Mutex<Option<Waker>>>,
}

/// Submits commands to a node's clients and waits for their results.
pub struct ClientHandle<C, R> {
    tx: crossbeam_channel::Sender<Call<C, R>>,
    waker: Arc<parking_lot::Mutex<Option<Waker>>>,
}

impl<C, R> Clone for ClientHandle<C, R> {
    fn clone(&self) -> Self {
        ClientHandle {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<C, R> ChannelDriver<C, R> {
    /// A driver for `clients` clients and the handle that feeds it.
    pub fn new(clients: usize) -> (Self, ClientHandle<C, R>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Arc::new(parking_lot::Mutex::new(None));
        (
            ChannelDriver {
                rx,
                queued: (0..clients).map(|_| VecDeque::new()).collect(),
                waiting: (0..clients).map(|_| VecDeque::new()).collect(),
                waker: waker.clone(),
            },
            ClientHandle { tx, waker },
        )
    }
}

impl<C: Send + 'static, R: Send + 'static> Driver<C, R> for ChannelDriver<C, R> {
    fn attach(&mut self, waker: &Waker) {
        *self.waker.lock() = Some(waker.clone());
    }

    fn next(&mut self, client: usize, _now_us: u64) -> Option<C> {
        while let Ok((c, cmd, reply)) = self.rx.try_recv() {
            if let Some(q) = self.queued.get_mut(c) {
                q.push_back((cmd, reply));
            }
        }
        let (cmd, reply) = self.queued.get_mut(client)?.pop_front()?;
        self.waiting[client].push_back(reply);
        Some(cmd)
    }

    fn complete(&mut self, client: usize, done: Completion<C, R>, _latency: Duration) {
        // One command outstanding per client when used through handles: results arrive in
        // submission order.
        if let Some(tx) = self.waiting[client].pop_front() {
            let _ = tx.send(done.result);
        }
    }
}

impl<C, R> ClientHandle<C, R> {
    /// Runs `command` as client `client` and waits up to `timeout` for its result.
    pub fn call(
        &self,
        client: usize,
        command: C,
        timeout: Duration,
    ) -> Option<Result<R, ClientError>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.send((client, command, tx)).ok()?;
        if let Some(w) = self.waker.lock().as_ref() {
            w.wake();
        }
        rx.recv_timeout(timeout).ok()
    }
}

/// The handle of a host of proxies `P` fed by a [`ChannelDriver`].
pub type HandleOf<P> = ClientHandle<<P as Proxy>::Command, <P as Proxy>::Reply>;

/// A node's client host for blocking calls, as its runtime runs it.
pub type HandleApp<P> =
    OnNode<ClientHost<P, ChannelDriver<<P as Proxy>::Command, <P as Proxy>::Reply>>>;

/// A client host for blocking calls through `proxies` (one command outstanding each), and the
/// handle that calls through it.
pub fn handle_app<P: Proxy>(proxies: Vec<P>) -> (HandleApp<P>, HandleOf<P>) {
    let (driver, handle) = ChannelDriver::new(proxies.len());
    (OnNode::new(ClientHost::new(proxies, 1, driver)), handle)
}
