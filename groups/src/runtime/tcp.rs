//! The TCP runtime: one process per node, a single-threaded mio event loop.
//!
//! Every node dials every peer and sends on that outbound connection; it receives on the
//! connections peers dial to it. An outbound connection starts with a [`Hello`] frame naming
//! the node; an inbound connection whose first frame is not a `Hello` from a known peer, or
//! that carries any malformed, truncated, oversized, unknown-kind or wrong-cluster frame, is
//! logged and closed (see [`crate::frame`]). Lost connections are re-dialled with backoff; what
//! was written meanwhile waits in a bounded backlog, and anything beyond it is dropped (the
//! protocols resend what matters). When a link comes back the node is told
//! ([`GroupsNode::reconnected`]) so consensus can resynchronise.

use crate::codec::Bitcode;
use crate::config::ClusterConfig;
use crate::frame::{self, Frame, FrameDecoder, Hello};
use crate::ids::NodeId;
use crate::node::GroupsNode;
use crate::runtime::inproc::App;
use crate::runtime::Waker;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Bytes queued for a peer (connected or not) beyond which new messages to it are dropped.
const BACKLOG_BYTES_MAX: usize = 64 << 20;
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("node {0} has no address in the cluster file")]
    NoAddress(NodeId),
    #[error("address {addr:?} of node {node}: {reason}")]
    BadAddress {
        node: NodeId,
        addr: String,
        reason: String,
    },
    #[error("io: {0}")]
    Io(#[from] io::Error),
}

enum Role {
    Outbound { peer: NodeId, connected: bool },
    Inbound { peer: Option<NodeId> },
}

struct Conn {
    stream: TcpStream,
    role: Role,
    decoder: FrameDecoder<Bitcode>,
    wbuf: Vec<u8>,
    wpos: usize,
}

impl Conn {
    fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}

struct Peer {
    addr: SocketAddr,
    conn: Option<Token>,
    /// Frames written while no connection is up.
    backlog: Vec<u8>,
    retry_at: Instant,
    backoff: Duration,
    dropped: u64,
}

/// A node process's event loop.
pub struct TcpNode<A: App> {
    node: GroupsNode,
    app: A,
    cfg: Arc<ClusterConfig>,
    poll: Poll,
    listener: TcpListener,
    conns: BTreeMap<Token, Conn>,
    peers: BTreeMap<NodeId, Peer>,
    next_token: usize,
    stop: Arc<AtomicBool>,
    out: Vec<(NodeId, crate::message::NetMsg)>,
    /// Frames refused, by reason (for tests and logs).
    pub frame_errors: u64,
}

fn parse_addr(cfg: &ClusterConfig, id: NodeId) -> Result<SocketAddr, TcpError> {
    let a = cfg
        .node(id)
        .and_then(|n| n.addr.clone())
        .ok_or(TcpError::NoAddress(id))?;
    a.parse()
        .map_err(|e: std::net::AddrParseError| TcpError::BadAddress {
            node: id,
            addr: a.clone(),
            reason: e.to_string(),
        })
}

impl<A: App> TcpNode<A> {
    /// Binds this node's address and prepares connections to every peer.
    pub fn bind(node: GroupsNode, app: A) -> Result<Self, TcpError> {
        let cfg = node.config().clone();
        let me = node.id();
        let addr = parse_addr(&cfg, me)?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut peers = BTreeMap::new();
        for n in cfg.nodes.iter().filter(|n| n.id != me) {
            peers.insert(
                n.id,
                Peer {
                    addr: parse_addr(&cfg, n.id)?,
                    conn: None,
                    backlog: Vec::new(),
                    retry_at: Instant::now(),
                    backoff: RECONNECT_MIN,
                    dropped: 0,
                },
            );
        }
        Ok(TcpNode {
            node,
            app,
            cfg,
            poll,
            listener,
            conns: BTreeMap::new(),
            peers,
            next_token: 2,
            stop: Arc::new(AtomicBool::new(false)),
            out: Vec::new(),
            frame_errors: 0,
        })
    }

    /// A flag that stops the loop when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Runs until the stop flag is set or `deadline` passes; returns the app.
    pub fn run(mut self, deadline: Option<Instant>) -> Result<A, TcpError> {
        let tick = Duration::from_micros(self.cfg.tuning.tick_us);
        let mut next_tick = Instant::now() + tick;
        let mut events = Events::with_capacity(1024);
        let mio_waker = Arc::new(mio::Waker::new(self.poll.registry(), WAKER)?);
        self.app.attach(
            &mut self.node,
            Waker::new(move || {
                let _ = mio_waker.wake();
            }),
        );
        while !self.stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    t => {
                        if ev.is_writable() {
                            self.on_writable(t);
                        }
                        if ev.is_readable() || ev.is_read_closed() {
                            self.on_readable(t);
                        }
                        if ev.is_error() {
                            self.close(t, "socket error");
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick;
                }
            }
            self.app.step(&mut self.node);
            self.send_outgoing();
            self.redial(now);
        }
        self.app.detach(&mut self.node);
        self.send_outgoing();
        Ok(self.app)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let t = self.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, t, Interest::READABLE)
                        .is_ok()
                    {
                        self.conns.insert(
                            t,
                            Conn {
                                stream,
                                role: Role::Inbound { peer: None },
                                decoder: FrameDecoder::new(Bitcode, self.cfg.cluster_id),
                                wbuf: Vec::new(),
                                wpos: 0,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn on_readable(&mut self, t: Token) {
        let mut buf = [0u8; 64 * 1024];
        let mut frames = Vec::new();
        let mut problem: Option<String> = None;
        {
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        problem = Some(match c.decoder.finish() {
                            Err(e) => e.to_string(),
                            Ok(()) => "closed by peer".into(),
                        });
                        break;
                    }
                    Ok(n) => {
                        c.decoder.extend(&buf[..n]);
                        loop {
                            match c.decoder.next_frame() {
                                Ok(Some(f)) => frames.push(f),
                                Ok(None) => break,
                                Err(e) => {
                                    problem = Some(e.to_string());
                                    self.frame_errors += 1;
                                    break;
                                }
                            }
                        }
                        if problem.is_some() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        problem = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        for f in frames {
            if let Err(why) = self.on_frame(t, f) {
                self.frame_errors += 1;
                problem = Some(why);
                break;
            }
        }
        if let Some(why) = problem {
            self.close(t, &why);
        }
    }

    fn on_frame(&mut self, t: Token, f: Frame) -> Result<(), String> {
        let me = self.node.id();
        let Some(c) = self.conns.get_mut(&t) else {
            return Ok(());
        };
        match (&mut c.role, f) {
            (Role::Inbound { peer: peer @ None }, Frame::Hello(Hello { node })) => {
                if node == me || self.cfg.node(node).is_none() {
                    return Err(format!("hello from unknown node {node}"));
                }
                *peer = Some(node);
                tracing::debug!(%me, peer = %node, "inbound link up");
                // A peer that just dialled us is up: dial it back now rather than after our
                // backoff (a client that starts late would otherwise wait up to a second for
                // its first replies).
                if let Some(p) = self.peers.get_mut(&node) {
                    if p.conn.is_none() {
                        p.retry_at = Instant::now();
                        p.backoff = RECONNECT_MIN;
                    }
                }
                Ok(())
            }
            (Role::Inbound { peer: None }, Frame::Msg(_)) => Err("message before hello".into()),
            (Role::Inbound { peer: Some(p) }, Frame::Msg(m)) => {
                let p = *p;
                self.node.handle(p, m);
                Ok(())
            }
            (Role::Inbound { peer: Some(_) }, Frame::Hello(_)) => Err("second hello".into()),
            (Role::Outbound { .. }, _) => Err("peer wrote on our outbound link".into()),
        }
    }

    fn on_writable(&mut self, t: Token) {
        let mut became_connected = None;
        if let Some(c) = self.conns.get_mut(&t) {
            if let Role::Outbound { peer, connected } = &mut c.role {
                if !*connected {
                    match c.stream.take_error() {
                        Ok(None) if c.stream.peer_addr().is_ok() => {
                            *connected = true;
                            became_connected = Some(*peer);
                        }
                        Ok(None) => return,
                        _ => {
                            self.close(t, "connect failed");
                            return;
                        }
                    }
                }
            }
        }
        if let Some(p) = became_connected {
            if let Some(peer) = self.peers.get_mut(&p) {
                peer.backoff = RECONNECT_MIN;
            }
            tracing::debug!(me = %self.node.id(), peer = %p, "outbound link up");
            self.node.reconnected(p);
        }
        self.flush(t);
    }

    fn flush(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if let Role::Outbound {
            connected: false, ..
        } = c.role
        {
            return;
        }
        let mut failed = None;
        while c.pending() > 0 {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    failed = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failed {
            self.close(t, &why);
            return;
        }
        if c.pending() == 0 {
            c.wbuf.clear();
            c.wpos = 0;
        } else if c.wpos > (1 << 20) {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
    }

    fn close(&mut self, t: Token, why: &str) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let me = self.node.id();
        match c.role {
            Role::Outbound { peer, .. } => {
                tracing::debug!(%me, %peer, reason = why, "outbound link closed");
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.conn = None;
                    p.retry_at = Instant::now() + p.backoff;
                    p.backoff = (p.backoff * 2).min(RECONNECT_MAX);
                }
            }
            Role::Inbound { peer } => {
                let level_warn = why != "closed by peer";
                if level_warn {
                    tracing::warn!(%me, peer = ?peer, reason = why, "inbound connection refused and closed");
                } else {
                    tracing::debug!(%me, peer = ?peer, "inbound connection closed");
                }
            }
        }
    }

    fn send_outgoing(&mut self) {
        self.node.take_outgoing(&mut self.out);
        let cluster = self.cfg.cluster_id;
        let mut touched = Vec::new();
        for (to, msg) in std::mem::take(&mut self.out) {
            let Some(peer) = self.peers.get_mut(&to) else {
                continue;
            };
            let target = match peer.conn.and_then(|t| self.conns.get_mut(&t)) {
                Some(c) => {
                    touched.push(peer.conn.expect("connected"));
                    &mut c.wbuf
                }
                None => &mut peer.backlog,
            };
            if target.len() >= BACKLOG_BYTES_MAX {
                peer.dropped += 1;
                if peer.dropped.is_power_of_two() {
                    tracing::warn!(%to, dropped = peer.dropped, "backlog full; dropping messages");
                }
                continue;
            }
            if let Err(e) = frame::encode(&Bitcode, cluster, &Frame::Msg(msg), target) {
                tracing::error!(%to, error = %e, "message not sent");
            }
        }
        self.out = Vec::new();
        touched.sort();
        touched.dedup();
        for t in touched {
            self.flush(t);
            self.update_interest(t);
        }
    }

    fn update_interest(&mut self, t: Token) {
        if let Some(c) = self.conns.get_mut(&t) {
            let interest = if c.pending() > 0 {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self.poll.registry().reregister(&mut c.stream, t, interest);
        }
    }

    fn redial(&mut self, now: Instant) {
        let me = self.node.id();
        let cluster = self.cfg.cluster_id;
        let due: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.conn.is_none() && p.retry_at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let t = self.token();
            let peer = self.peers.get_mut(&id).expect("listed");
            peer.retry_at = now + peer.backoff;
            peer.backoff = (peer.backoff * 2).min(RECONNECT_MAX);
            let Ok(mut stream) = TcpStream::connect(peer.addr) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            if self
                .poll
                .registry()
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let mut wbuf = Vec::new();
            frame::encode(
                &Bitcode,
                cluster,
                &Frame::Hello(Hello { node: me }),
                &mut wbuf,
            )
            .expect("hello encodes");
            wbuf.append(&mut peer.backlog);
            peer.conn = Some(t);
            self.conns.insert(
                t,
                Conn {
                    stream,
                    role: Role::Outbound {
                        peer: id,
                        connected: false,
                    },
                    decoder: FrameDecoder::new(Bitcode, cluster),
                    wbuf,
                    wpos: 0,
                },
            );
        }
    }
}
