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
//!
//! # Peer authentication
//!
//! When the cluster file names a `secret_file` (see [`ClusterConfig::secret_file`]), every link
//! starts with a challenge-response handshake over HMAC-SHA256 keyed with the cluster secret.
//! The dialer D of a connection to the acceptor A:
//!
//! ```text
//! D -> A  Hello     { node: D, nonce: Some(na) }
//! A -> D  Challenge { nonce: nb, proof: HMAC(secret, "chorus-v2 acceptor" | cluster | D | A | na | nb) }
//! D -> A  Proof     { proof: HMAC(secret, "chorus-v2 dialer" | cluster | D | A | na | nb) }
//! ```
//!
//! (`cluster` as 8 bytes and node ids as 4 bytes, little endian; `na` and `nb` are 32 fresh
//! bytes from the operating system's random source, drawn for each connection.) D verifies A's
//! proof before it answers and before it sends anything else: until then its messages for A
//! wait in the backlog, and [`GroupsNode::reconnected`] is called only once the proof checked.
//! A accepts `Msg` frames on the connection only after D's proof checked. Proofs are compared
//! in constant time. Any frame out of turn (a `Msg` before the proof, a second `Hello`, a
//! `Challenge` sent to an acceptor or a `Proof` to a dialer or twice), a proof that does not
//! verify, or a handshake not finished within [`HANDSHAKE_TIMEOUT`] closes the connection with
//! a logged reason and is counted ([`LinkStats`]). A node with a secret refuses a `Hello`
//! without a nonce, and a node without one refuses a `Hello` with a nonce, so a cluster whose
//! nodes disagree on whether there is a secret fails loudly instead of hanging.
//!
//! What this guarantees: both ends of an established link know the cluster secret, and the
//! node ids they claim are authenticated (each proof binds the cluster id and both ids). A
//! recorded handshake cannot be replayed, to either end: each end draws a fresh nonce and the
//! other end's proof must cover it. A proof from one direction cannot be reflected as the
//! other's (the two proofs have different labels).
//!
//! What it does not: frames after the handshake are neither encrypted nor integrity-protected.
//! Anyone who can read the network path sees the traffic, and a man-in-the-middle who relays
//! an honest handshake can then inject, alter or drop messages on that connection. Protecting
//! that needs transport security (mutual TLS, or a VPN or private network between the nodes).
//! The secret also authenticates *membership*, not individual nodes: any holder of the secret
//! can claim any node id of the cluster.
//!
//! Without a secret, links are not authenticated and behave as before the handshake existed:
//! a `Hello` without nonce, then messages.

use crate::codec::Bitcode;
use crate::config::ClusterConfig;
use crate::frame::{self, Challenge, Frame, FrameDecoder, Hello, Proof, NONCE_BYTES};
use crate::ids::NodeId;
use crate::node::GroupsNode;
use crate::runtime::inproc::App;
use crate::runtime::Waker;
use hmac::{Hmac, Mac};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rand::TryRng;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Bytes queued for a peer (connected or not) beyond which new messages to it are dropped.
const BACKLOG_BYTES_MAX: usize = 64 << 20;
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// Default time a connection has to complete the authentication handshake (from the dial on
/// the dialer's side, from the accept on the acceptor's) before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often connections are checked against the handshake timeout.
const HANDSHAKE_CHECK_EVERY: Duration = Duration::from_millis(50);
const LABEL_ACCEPTOR: &[u8] = b"chorus-v2 acceptor";
const LABEL_DIALER: &[u8] = b"chorus-v2 dialer";

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
    #[error("cannot read the cluster secret file {path:?}: {reason}")]
    SecretFile { path: String, reason: String },
    #[error(
        "the cluster secret {origin} is {len} bytes long (after trimming trailing whitespace); \
         it must be at least {min} bytes (e.g. `head -c 32 /dev/urandom | base64`)",
        min = Secret::MIN_BYTES
    )]
    SecretTooShort { origin: String, len: usize },
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The node refused to go on ([`GroupsNode::stopped`]): for example it lost its data.
    #[error("{0}")]
    Stopped(String),
}

/// The cluster secret that authenticates peers (see the module documentation). Its bytes are
/// the HMAC key; its `Debug` form does not show them.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Shortest secret accepted, in bytes.
    pub const MIN_BYTES: usize = 16;

    /// A secret of exactly these bytes (nothing is trimmed).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, TcpError> {
        Self::checked(bytes.as_ref(), "given".into())
    }

    /// Reads a secret file: its content less trailing whitespace and newlines. A relative
    /// path is resolved against the current working directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TcpError> {
        let path = path.as_ref();
        let shown = if path.is_relative() {
            match std::env::current_dir() {
                Ok(cwd) => format!(
                    "{} (relative to the working directory, i.e. {})",
                    path.display(),
                    cwd.join(path).display()
                ),
                Err(_) => path.display().to_string(),
            }
        } else {
            path.display().to_string()
        };
        let bytes = std::fs::read(path).map_err(|e| TcpError::SecretFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %shown,
                        "the cluster secret file is readable by other users; consider chmod 600"
                    );
                }
            }
        }
        Self::checked(bytes.trim_ascii_end(), format!("in file {shown:?}"))
    }

    fn checked(bytes: &[u8], origin: String) -> Result<Self, TcpError> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(TcpError::SecretTooShort {
                origin,
                len: bytes.len(),
            });
        }
        Ok(Secret(Arc::from(bytes)))
    }

    fn mac(
        &self,
        label: &[u8],
        cluster: u64,
        dialer: NodeId,
        acceptor: NodeId,
        na: &[u8; NONCE_BYTES],
        nb: &[u8; NONCE_BYTES],
    ) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        m.update(label);
        m.update(&cluster.to_le_bytes());
        m.update(&dialer.0.to_le_bytes());
        m.update(&acceptor.0.to_le_bytes());
        m.update(na);
        m.update(nb);
        m
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

fn fresh_nonce() -> Result<[u8; NONCE_BYTES], String> {
    let mut n = [0u8; NONCE_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut n)
        .map_err(|e| format!("no randomness for a handshake nonce: {e}"))?;
    Ok(n)
}

/// Counters of a node's links, readable from other threads while the node runs
/// ([`TcpNode::stats`]).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Frames refused: malformed, or out of turn (every refusal below that a frame caused is
    /// counted here too).
    pub frame_errors: AtomicU64,
    /// Handshakes that failed at this node, for any reason below, or because the peer closed
    /// the connection in the middle of one.
    pub auth_failures: AtomicU64,
    /// Peer proofs (in a `Challenge` or a `Proof`) that did not verify: the peer does not know
    /// this node's secret.
    pub bad_proofs: AtomicU64,
    /// `Hello`s without nonce refused because this node has a secret.
    pub plain_hellos_refused: AtomicU64,
    /// `Hello`s with a nonce refused because this node has no secret.
    pub auth_hellos_refused: AtomicU64,
    /// Connections closed because their handshake took longer than the timeout.
    pub handshake_timeouts: AtomicU64,
    /// Handshakes completed, as dialer or as acceptor.
    pub handshakes: AtomicU64,
}

/// A snapshot of [`LinkStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    pub frame_errors: u64,
    pub auth_failures: u64,
    pub bad_proofs: u64,
    pub plain_hellos_refused: u64,
    pub auth_hellos_refused: u64,
    pub handshake_timeouts: u64,
    pub handshakes: u64,
}

impl LinkStats {
    pub fn get(&self) -> LinkCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkCounts {
            frame_errors: g(&self.frame_errors),
            auth_failures: g(&self.auth_failures),
            bad_proofs: g(&self.bad_proofs),
            plain_hellos_refused: g(&self.plain_hellos_refused),
            auth_hellos_refused: g(&self.auth_hellos_refused),
            handshake_timeouts: g(&self.handshake_timeouts),
            handshakes: g(&self.handshakes),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Why a frame was refused.
enum Refusal {
    /// Out of turn or malformed.
    Protocol(String),
    /// A failed authentication; `kind` is the specific counter to bump, if any.
    Auth {
        why: String,
        kind: Option<fn(&LinkStats) -> &AtomicU64>,
    },
}

impl Refusal {
    fn auth(why: impl Into<String>) -> Self {
        Refusal::Auth {
            why: why.into(),
            kind: None,
        }
    }
}

enum Role {
    Outbound {
        peer: NodeId,
        connected: bool,
        /// `Some(na)` while the dialer waits for the acceptor's `Challenge` (the link carries
        /// no message until then).
        awaiting: Option<[u8; NONCE_BYTES]>,
    },
    Inbound(Inbound),
}

enum Inbound {
    /// Nothing received yet.
    AwaitHello,
    /// Challenge sent; waiting for the dialer's proof.
    AwaitProof {
        peer: NodeId,
        na: [u8; NONCE_BYTES],
        nb: [u8; NONCE_BYTES],
    },
    /// Messages from `peer` are accepted.
    Ready { peer: NodeId },
}

impl Inbound {
    fn peer(&self) -> Option<NodeId> {
        match *self {
            Inbound::AwaitHello => None,
            Inbound::AwaitProof { peer, .. } | Inbound::Ready { peer } => Some(peer),
        }
    }
}

struct Conn {
    stream: TcpStream,
    role: Role,
    decoder: FrameDecoder<Bitcode>,
    wbuf: Vec<u8>,
    wpos: usize,
    opened: Instant,
}

impl Conn {
    fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Whether the connection is in an authentication handshake that has gone far enough for
    /// the peer to have judged our credentials (so losing it says something about them).
    fn mid_handshake(&self) -> bool {
        match &self.role {
            Role::Outbound {
                connected,
                awaiting,
                ..
            } => *connected && awaiting.is_some(),
            Role::Inbound(Inbound::AwaitProof { .. }) => true,
            Role::Inbound(_) => false,
        }
    }
}

struct Peer {
    addr: SocketAddr,
    conn: Option<Token>,
    /// Frames written while no connection is up (or, with authentication, while the
    /// connection's handshake is not complete).
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
    secret: Option<Secret>,
    handshake_timeout: Duration,
    next_handshake_check: Instant,
    poll: Poll,
    listener: TcpListener,
    conns: BTreeMap<Token, Conn>,
    peers: BTreeMap<NodeId, Peer>,
    next_token: usize,
    stop: Arc<AtomicBool>,
    out: Vec<(NodeId, crate::message::NetMsg)>,
    stats: Arc<LinkStats>,
    /// Frames refused, by reason (for tests and logs). Also in [`LinkStats::frame_errors`].
    pub frame_errors: u64,
    /// Failed authentication handshakes. Also in [`LinkStats::auth_failures`].
    pub auth_failures: u64,
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
    /// Binds this node's address and prepares connections to every peer. If the cluster
    /// configuration names a `secret_file`, the secret is read from it (a relative path against
    /// the current working directory) and every link is authenticated; an unreadable or too
    /// short secret is an error.
    pub fn bind(node: GroupsNode, app: A) -> Result<Self, TcpError> {
        let secret = match &node.config().secret_file {
            Some(path) => Some(Secret::from_file(path)?),
            None => None,
        };
        Self::bind_with_secret(node, app, secret)
    }

    /// [`TcpNode::bind`] with the cluster secret given directly: `Some` authenticates every
    /// link with it, `None` runs without authentication. The configuration's `secret_file` is
    /// ignored.
    pub fn bind_with_secret(
        node: GroupsNode,
        app: A,
        secret: Option<Secret>,
    ) -> Result<Self, TcpError> {
        let cfg = node.config().clone();
        let me = node.id();
        let addr = parse_addr(&cfg, me)?;
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
        if secret.is_some() {
            // Fail at start rather than at the first connection.
            fresh_nonce().map_err(io::Error::other)?;
        }
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(TcpNode {
            node,
            app,
            cfg,
            secret,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            next_handshake_check: Instant::now(),
            poll,
            listener,
            conns: BTreeMap::new(),
            peers,
            next_token: 2,
            stop: Arc::new(AtomicBool::new(false)),
            out: Vec::new(),
            stats: Arc::default(),
            frame_errors: 0,
            auth_failures: 0,
        })
    }

    /// A flag that stops the loop when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The node's link counters, live while it runs.
    pub fn stats(&self) -> Arc<LinkStats> {
        self.stats.clone()
    }

    /// Whether links are authenticated.
    pub fn authenticates(&self) -> bool {
        self.secret.is_some()
    }

    /// Changes the handshake timeout (default [`HANDSHAKE_TIMEOUT`]).
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
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
            if let Some(why) = self.node.stopped() {
                self.app.detach(&mut self.node);
                self.send_outgoing();
                return Err(TcpError::Stopped(why));
            }
            self.redial(now);
            self.expire_handshakes(now);
        }
        self.app.detach(&mut self.node);
        self.send_outgoing();
        Ok(self.app)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn count_frame_error(&mut self) {
        self.frame_errors += 1;
        bump(&self.stats.frame_errors);
    }

    fn count_auth_failure(&mut self) {
        self.auth_failures += 1;
        bump(&self.stats.auth_failures);
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
                                role: Role::Inbound(Inbound::AwaitHello),
                                decoder: FrameDecoder::new(
                                    Bitcode,
                                    self.cfg.cluster_id.frame_tag(),
                                ),
                                wbuf: Vec::new(),
                                wpos: 0,
                                opened: Instant::now(),
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
        let mut frame_problem = false;
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
                                    frame_problem = true;
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
        if frame_problem {
            self.count_frame_error();
        }
        // Frames decoded before a stream problem are still handled, in order.
        for f in frames {
            match self.on_frame(t, f) {
                Ok(()) => {}
                Err(Refusal::Protocol(why)) => {
                    self.count_frame_error();
                    self.refuse(t, &why);
                    return;
                }
                Err(Refusal::Auth { why, kind }) => {
                    self.count_frame_error();
                    self.count_auth_failure();
                    if let Some(k) = kind {
                        bump(k(&self.stats));
                    }
                    self.refuse(t, &why);
                    return;
                }
            }
        }
        if let Some(why) = problem {
            if !frame_problem && self.conns.get(&t).is_some_and(Conn::mid_handshake) {
                self.count_auth_failure();
                self.refuse(
                    t,
                    &format!(
                        "connection lost during the authentication handshake ({why}); \
                         does the peer have the same cluster secret?"
                    ),
                );
            } else if frame_problem {
                self.refuse(t, &why);
            } else {
                self.close(t, &why);
            }
        }
    }

    fn on_frame(&mut self, t: Token, f: Frame) -> Result<(), Refusal> {
        let me = self.node.id();
        let cluster = self.cfg.cluster_id.frame_tag();
        let Some(c) = self.conns.get_mut(&t) else {
            return Ok(());
        };
        match &mut c.role {
            Role::Inbound(state) => match (&*state, f) {
                (Inbound::AwaitHello, Frame::Hello(Hello { node, nonce })) => {
                    if node == me {
                        return Err(Refusal::Protocol(format!(
                            "hello claiming to be this node ({node})"
                        )));
                    }
                    if self.cfg.node(node).is_none() {
                        return Err(Refusal::Protocol(format!("hello from unknown node {node}")));
                    }
                    match (&self.secret, nonce) {
                        (None, None) => {
                            *state = Inbound::Ready { peer: node };
                            self.inbound_ready(node);
                            Ok(())
                        }
                        (Some(_), None) => Err(Refusal::Auth {
                            why: format!(
                                "unauthenticated hello from node {node}: this cluster requires a secret"
                            ),
                            kind: Some(|s| &s.plain_hellos_refused),
                        }),
                        (None, Some(_)) => Err(Refusal::Auth {
                            why: format!(
                                "node {node} authenticates but this node has no cluster secret"
                            ),
                            kind: Some(|s| &s.auth_hellos_refused),
                        }),
                        (Some(secret), Some(na)) => {
                            let nb = fresh_nonce().map_err(Refusal::auth)?;
                            let proof = secret
                                .mac(LABEL_ACCEPTOR, cluster, node, me, &na, &nb)
                                .finalize()
                                .into_bytes()
                                .into();
                            frame::encode(
                                &Bitcode,
                                cluster,
                                &Frame::Challenge(Challenge { nonce: nb, proof }),
                                &mut c.wbuf,
                            )
                            .expect("challenge encodes");
                            *state = Inbound::AwaitProof { peer: node, na, nb };
                            self.flush(t);
                            self.update_interest(t);
                            Ok(())
                        }
                    }
                }
                (Inbound::AwaitProof { peer, na, nb }, Frame::Proof(Proof { proof })) => {
                    let peer = *peer;
                    let secret = self.secret.as_ref().expect("a challenge was sent");
                    if secret
                        .mac(LABEL_DIALER, cluster, peer, me, na, nb)
                        .verify_slice(&proof)
                        .is_err()
                    {
                        return Err(Refusal::Auth {
                            why: format!("node {peer} failed authentication (wrong proof)"),
                            kind: Some(|s| &s.bad_proofs),
                        });
                    }
                    *state = Inbound::Ready { peer };
                    bump(&self.stats.handshakes);
                    self.inbound_ready(peer);
                    Ok(())
                }
                (Inbound::Ready { peer }, Frame::Msg(m)) => {
                    let p = *peer;
                    self.node.handle(p, m);
                    Ok(())
                }
                (Inbound::AwaitHello, Frame::Msg(_)) => {
                    Err(Refusal::Protocol("message before hello".into()))
                }
                (Inbound::AwaitProof { .. }, Frame::Msg(_)) => Err(Refusal::Protocol(
                    "message before the peer authenticated".into(),
                )),
                (Inbound::AwaitProof { .. } | Inbound::Ready { .. }, Frame::Hello(_)) => {
                    Err(Refusal::Protocol("second hello".into()))
                }
                (_, Frame::Challenge(_)) => Err(Refusal::Protocol(
                    "challenge on an inbound link (challenges go from acceptor to dialer)".into(),
                )),
                (Inbound::AwaitHello, Frame::Proof(_)) => {
                    Err(Refusal::Protocol("proof before hello".into()))
                }
                (Inbound::Ready { .. }, Frame::Proof(_)) => Err(Refusal::Protocol(
                    "proof on a link that is not in a handshake".into(),
                )),
            },
            Role::Outbound {
                peer,
                connected: _,
                awaiting,
            } => {
                let peer = *peer;
                let (Some(na), Frame::Challenge(Challenge { nonce: nb, proof })) = (*awaiting, &f)
                else {
                    return Err(Refusal::Protocol(format!(
                        "peer wrote a {:?} frame on our outbound link",
                        f.kind()
                    )));
                };
                let secret = self.secret.as_ref().expect("awaiting implies a secret");
                if secret
                    .mac(LABEL_ACCEPTOR, cluster, me, peer, &na, nb)
                    .verify_slice(proof)
                    .is_err()
                {
                    return Err(Refusal::Auth {
                        why: format!("peer {peer} failed authentication (wrong challenge proof)"),
                        kind: Some(|s| &s.bad_proofs),
                    });
                }
                let proof = secret
                    .mac(LABEL_DIALER, cluster, me, peer, &na, nb)
                    .finalize()
                    .into_bytes()
                    .into();
                *awaiting = None;
                frame::encode(
                    &Bitcode,
                    cluster,
                    &Frame::Proof(Proof { proof }),
                    &mut c.wbuf,
                )
                .expect("proof encodes");
                if let Some(p) = self.peers.get_mut(&peer) {
                    c.wbuf.append(&mut p.backlog);
                    p.backoff = RECONNECT_MIN;
                }
                bump(&self.stats.handshakes);
                tracing::debug!(%me, %peer, "outbound link up and authenticated");
                self.node.reconnected(peer);
                self.flush(t);
                self.update_interest(t);
                Ok(())
            }
        }
    }

    /// An inbound link from `node` accepts messages from now on.
    fn inbound_ready(&mut self, node: NodeId) {
        tracing::debug!(me = %self.node.id(), peer = %node, "inbound link up");
        // A peer that just dialled us is up: dial it back now rather than after our
        // backoff (a client that starts late would otherwise wait up to a second for
        // its first replies).
        if let Some(p) = self.peers.get_mut(&node) {
            if p.conn.is_none() {
                p.retry_at = Instant::now();
                p.backoff = RECONNECT_MIN;
            }
        }
    }

    fn on_writable(&mut self, t: Token) {
        let mut became_connected = None;
        if let Some(c) = self.conns.get_mut(&t) {
            if let Role::Outbound {
                peer,
                connected,
                awaiting,
            } = &mut c.role
            {
                if !*connected {
                    match c.stream.take_error() {
                        Ok(None) if c.stream.peer_addr().is_ok() => {
                            *connected = true;
                            became_connected = Some((*peer, awaiting.is_none()));
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
        match became_connected {
            Some((p, true)) => {
                if let Some(peer) = self.peers.get_mut(&p) {
                    peer.backoff = RECONNECT_MIN;
                }
                tracing::debug!(me = %self.node.id(), peer = %p, "outbound link up");
                self.node.reconnected(p);
            }
            Some((p, false)) => {
                tracing::debug!(me = %self.node.id(), peer = %p, "outbound link connected; authenticating");
            }
            None => {}
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

    /// Closes a connection this node refuses, logging why at warn level.
    fn refuse(&mut self, t: Token, why: &str) {
        let me = self.node.id();
        match self.conns.get(&t).map(|c| &c.role) {
            Some(Role::Outbound { peer, .. }) => {
                tracing::warn!(%me, %peer, reason = why, "outbound connection refused and closed");
            }
            Some(Role::Inbound(state)) => {
                tracing::warn!(%me, peer = ?state.peer(), reason = why, "inbound connection refused and closed");
            }
            None => return,
        }
        self.drop_conn(t);
    }

    /// Closes a connection; refusals of an inbound connection are logged at warn level.
    fn close(&mut self, t: Token, why: &str) {
        let me = self.node.id();
        match self.conns.get(&t).map(|c| &c.role) {
            Some(Role::Outbound { peer, .. }) => {
                tracing::debug!(%me, %peer, reason = why, "outbound link closed");
            }
            Some(Role::Inbound(state)) => {
                if why != "closed by peer" {
                    tracing::warn!(%me, peer = ?state.peer(), reason = why, "inbound connection refused and closed");
                } else {
                    tracing::debug!(%me, peer = ?state.peer(), "inbound connection closed");
                }
            }
            None => return,
        }
        self.drop_conn(t);
    }

    fn drop_conn(&mut self, t: Token) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if let Role::Outbound { peer, .. } = c.role {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.conn = None;
                p.retry_at = Instant::now() + p.backoff;
                p.backoff = (p.backoff * 2).min(RECONNECT_MAX);
            }
        }
    }

    /// Closes the connections whose authentication handshake has taken too long.
    fn expire_handshakes(&mut self, now: Instant) {
        if self.secret.is_none() || now < self.next_handshake_check {
            return;
        }
        self.next_handshake_check = now + HANDSHAKE_CHECK_EVERY;
        let late: Vec<(Token, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let in_handshake = match &c.role {
                    Role::Outbound { awaiting, .. } => awaiting.is_some(),
                    Role::Inbound(state) => !matches!(state, Inbound::Ready { .. }),
                };
                in_handshake && now.duration_since(c.opened) >= self.handshake_timeout
            })
            .map(|(&t, c)| {
                let connecting = matches!(
                    c.role,
                    Role::Outbound {
                        connected: false,
                        ..
                    }
                );
                (t, connecting)
            })
            .collect();
        for (t, connecting) in late {
            if connecting {
                // Not an authentication problem: the peer is unreachable. Dial again later.
                self.close(t, "connect timed out");
                continue;
            }
            self.count_auth_failure();
            bump(&self.stats.handshake_timeouts);
            let why = format!(
                "authentication handshake not completed within {:?}",
                self.handshake_timeout
            );
            self.refuse(t, &why);
        }
    }

    fn send_outgoing(&mut self) {
        self.node.take_outgoing(&mut self.out);
        let cluster = self.cfg.cluster_id.frame_tag();
        let mut touched = Vec::new();
        for (to, msg) in std::mem::take(&mut self.out) {
            let Some(peer) = self.peers.get_mut(&to) else {
                continue;
            };
            // Messages go on the connection once it may carry them: at once without
            // authentication (they wait in its buffer while it connects), after the
            // handshake with it.
            let live = peer.conn.and_then(|t| self.conns.get_mut(&t)).filter(|c| {
                !matches!(
                    c.role,
                    Role::Outbound {
                        awaiting: Some(_),
                        ..
                    }
                )
            });
            let target = match live {
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
        let cluster = self.cfg.cluster_id.frame_tag();
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
            let nonce = match &self.secret {
                None => None,
                Some(_) => match fresh_nonce() {
                    Ok(n) => Some(n),
                    Err(why) => {
                        tracing::error!(%me, peer = %id, reason = why, "cannot dial");
                        continue;
                    }
                },
            };
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
                &Frame::Hello(Hello { node: me, nonce }),
                &mut wbuf,
            )
            .expect("hello encodes");
            if nonce.is_none() {
                wbuf.append(&mut peer.backlog);
            }
            peer.conn = Some(t);
            self.conns.insert(
                t,
                Conn {
                    stream,
                    role: Role::Outbound {
                        peer: id,
                        connected: false,
                        awaiting: nonce,
                    },
                    decoder: FrameDecoder::new(Bitcode, cluster),
                    wbuf,
                    wpos: 0,
                    opened: now,
                },
            );
        }
    }
}
