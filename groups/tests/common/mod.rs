//! Test support shared by the TCP runtime's tests (`tcp_auth`, `tcp_limits`, `tcp_tls`,
//! `tcp_fd_exhaustion`): one-log loopback clusters, nodes on threads of the test process
//! running a recording app, raw-socket strangers, and waiting.
#![allow(dead_code)]

use bytes::Bytes;
use groups::codec::Postcard;
use groups::config::{ClusterConfig, LogConfig, NodeConfig, Tuning};
use groups::frame::{self, Frame, FrameDecoder};
use groups::runtime::inproc::App;
use groups::runtime::tcp::{LinkCounts, LinkStats, Secret, TcpNode};
use groups::{GroupId, GroupSet, GroupsNode, LogId, MsgId, NetMsg, NodeId, NodeOptions};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The cluster id of every test cluster.
pub const CLUSTER: u64 = 0xA17;

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

pub use testkit::free_port;

/// The simulated clusters' tuning of the storage tests (`storage_faults`, `foreign_state`):
/// 1 ms ticks, quick elections, resends and fetches, no trimming.
pub fn quick_tuning() -> Tuning {
    Tuning {
        tick_us: 1000,
        skip_lambda_per_delta: 200,
        election_ticks: 20,
        resend_ticks: 10,
        fetch_poll_ticks: 10,
        trim: false,
        ..Tuning::default()
    }
}

/// An empty directory for test `name` of the test binary `binary`.
pub fn temp_dir(binary: &str, name: &str) -> std::path::PathBuf {
    testkit::fresh_dir(&format!("{binary}-{name}"))
}

/// `n` nodes on loopback, one group that every node subscribes to, one log run by `acceptors`,
/// the cluster id `cluster`.
pub fn one_log_cluster(cluster: u64, n: u32, acceptors: &[u32]) -> ClusterConfig {
    let nodes = (1..=n)
        .map(|id| NodeConfig {
            id: NodeId(id),
            addr: Some(format!("127.0.0.1:{}", free_port())),
            subscriptions: vec![GroupSet::singleton(GroupId(0))],
        })
        .collect();
    let logs = vec![LogConfig {
        id: LogId(0),
        covers: GroupSet::singleton(GroupId(0)),
        acceptors: acceptors.iter().map(|&a| NodeId(a)).collect(),
    }];
    ClusterConfig::new(cluster, 1, nodes, logs, Tuning::default()).unwrap()
}

#[derive(Default)]
pub struct Seen {
    delivered: Vec<MsgId>,
    app: Vec<(NodeId, Bytes)>,
}

/// Multicasts `total` messages to group 0 (at most `rate_per_s` a second when set) and records
/// deliveries and application messages.
pub struct Recorder {
    total: u64,
    sent: u64,
    rate_per_s: Option<f64>,
    started: Instant,
    seen: Arc<Mutex<Seen>>,
    deliveries: Vec<(usize, groups::merge::Delivery)>,
    app: Vec<(NodeId, Bytes)>,
}

impl App for Recorder {
    fn step(&mut self, node: &mut GroupsNode) {
        node.take_delivered(&mut self.deliveries);
        node.take_app(&mut self.app);
        if !self.deliveries.is_empty() || !self.app.is_empty() {
            let mut seen = self.seen.lock().unwrap();
            seen.delivered
                .extend(self.deliveries.drain(..).map(|(_, d)| d.msg.id));
            seen.app.append(&mut self.app);
        }
        let due = match self.rate_per_s {
            Some(r) => ((self.started.elapsed().as_secs_f64() * r) as u64).min(self.total),
            None => self.total,
        };
        while self.sent < due && node.multicasts_in_flight() < 64 {
            let payload = Bytes::from(format!("{}:{}", node.id().0, self.sent));
            if node
                .multicast(GroupSet::singleton(GroupId(0)), payload)
                .is_err()
            {
                break;
            }
            self.sent += 1;
        }
    }
}

pub struct Running {
    seen: Arc<Mutex<Seen>>,
    pub stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub fn delivered(&self) -> Vec<MsgId> {
        self.seen.lock().unwrap().delivered.clone()
    }
    pub fn app(&self) -> Vec<(NodeId, Bytes)> {
        self.seen.lock().unwrap().app.clone()
    }
    pub fn counts(&self) -> LinkCounts {
        self.stats.get()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub enum Key {
    /// `TcpNode::bind`: whatever the configuration's `secret_file` says.
    FromConfig,
    /// `TcpNode::bind_with_secret`.
    Given(Option<Secret>),
}

/// Starts node `id` of `cfg` on a thread: it multicasts `messages` as fast as its window allows
/// (`timeout`: the handshake deadline, if not the configuration's).
pub fn start(
    cfg: &ClusterConfig,
    id: u32,
    key: Key,
    messages: u64,
    timeout: Option<Duration>,
) -> Running {
    start_paced(cfg, id, key, messages, None, timeout)
}

/// [`start`], multicasting at most `rate_per_s` messages a second.
pub fn start_paced(
    cfg: &ClusterConfig,
    id: u32,
    key: Key,
    messages: u64,
    rate_per_s: Option<f64>,
    timeout: Option<Duration>,
) -> Running {
    let node = GroupsNode::in_memory(Arc::new(cfg.clone()), NodeId(id), NodeOptions::fresh());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Recorder {
        total: messages,
        sent: 0,
        rate_per_s,
        started: Instant::now(),
        seen: seen.clone(),
        deliveries: Vec::new(),
        app: Vec::new(),
    };
    let mut tcp = match key {
        Key::FromConfig => TcpNode::bind(node, app),
        Key::Given(s) => TcpNode::bind_with_secret(node, app, s),
    }
    .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
    if let Some(t) = timeout {
        tcp.set_handshake_timeout(t);
    }
    let stats = tcp.stats();
    let stop = tcp.stop_flag();
    let thread = std::thread::spawn(move || {
        tcp.run(None).expect("node loop");
    });
    Running {
        seen,
        stats,
        stop,
        thread: Some(thread),
    }
}

/// Polls `done` every 20 ms until it holds or `within` passes; returns whether it held.
pub fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn encode(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    frame::encode(&Postcard, CLUSTER, f, &mut v).unwrap();
    v
}

pub fn forged_app_msg(text: &'static str) -> Vec<u8> {
    encode(&Frame::Msg(NetMsg::App {
        payload: Bytes::from_static(text.as_bytes()),
    }))
}

/// Reads until the peer closes the connection (read returns 0 or an error) or `within`
/// passes. Returns the frames received and whether the connection was closed.
pub fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<Frame>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + within;
    let mut d = FrameDecoder::new(Postcard, CLUSTER);
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                d.extend(&buf[..n]);
                while let Some(f) = d.next_frame().expect("the node writes valid frames") {
                    frames.push(f);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() > deadline {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    (frames, closed)
}

pub fn addr(cfg: &ClusterConfig, id: u32) -> String {
    cfg.node(NodeId(id)).unwrap().addr.clone().unwrap()
}

pub fn connect(cfg: &ClusterConfig, id: u32) -> TcpStream {
    let a = addr(cfg, id);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match TcpStream::connect(&a) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {a}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Whether the peer closes the stream `s` (end of stream, an error, a TLS alert) within
/// `within`; `s` must have a short read timeout so that the wait can end.
pub fn closed_within(s: &mut impl Read, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}
