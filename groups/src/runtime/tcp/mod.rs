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
//! verify, or a handshake not finished within the handshake deadline closes the connection with
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
//! that needs transport security (the `[tls]` below, or a VPN or private network between the
//! nodes). The secret also authenticates *membership*, not individual nodes: any holder of the
//! secret can claim any node id of the cluster.
//!
//! Without a secret (and without TLS), links are not authenticated: a `Hello` without nonce,
//! then messages. [`TcpNode::bind`] refuses to run so unless the configuration allows it
//! ([`ClusterConfig::insecure`], a binary's `--insecure`).
//!
//! # TLS
//!
//! With a `[tls]` table ([`crate::config::TlsFiles`]), every connection is TLS 1.3 (rustls,
//! ring provider) before its first frame, and the frames above ride inside it. Both ends
//! present a certificate and verify the other's chain to the cluster CA; the dialer also
//! verifies that the acceptor's certificate names the member it dialled, and the acceptor that
//! the node its `Hello` claims is the member the dialer's certificate names
//! ([`crate::credentials::member_name`]): a member proves *which* member it is, as etcd's peer
//! TLS does, and traffic is encrypted and integrity-protected. A certificate from another CA,
//! a claim of another member's id (`tls_identity_mismatches`), or plaintext on a TLS port
//! (`tls_failures`) closes the connection with a logged reason. The TLS handshake counts
//! against the handshake deadline; a dialer's frames wait until it is complete. A node whose
//! own certificate does not name it refuses to start. TLS and a secret may be combined (the
//! HMAC handshake then runs inside TLS); TLS alone is enough to start without `--insecure`.

//!
//! # Limits
//!
//! What a remote process can make a node hold is bounded by the cluster file's `[limits]`
//! ([`Limits`], with defaults), whether or not the cluster has a secret:
//!
//! - **Handshake deadline** (`handshake_deadline_ms`, 5 s): a connection that has not
//!   completed its handshake (its `Hello`; with a secret, the `Proof`) in time is closed and
//!   counted (`handshake_timeouts`). Before its handshake completes, a connection may send only
//!   frames of up to [`HANDSHAKE_FRAME_BYTES_MAX`] bytes (the handshake's own frames are
//!   smaller), so an unauthenticated connection never buffers more than a few KiB.
//! - **Frame deadline** (`frame_deadline_ms`, 10 s): a frame whose first byte arrived must be
//!   complete in time, or the connection is closed (`frame_timeouts`): a slow trickle cannot
//!   hold a buffer.
//! - **Inbound byte budget** (`inbound_bytes_max`, 128 MiB): every connection's frame buffer
//!   counts against one budget. Buffers grow with the bytes that arrive, never to a declared
//!   length up front, and a read reserves what it may buffer before it happens. A frame larger
//!   than [`Limits::SMALL_FRAME_BYTES`] reserves its whole length once its length field
//!   arrives, so an admitted frame can always complete. When the budget has no room, the
//!   connection is *not read* until it has (`budget_waits`; its peer's TCP window fills and the
//!   peer waits): the node does not close it, since an honest peer's large frame may merely
//!   have come at a busy moment. Waiting connections are admitted in arrival order as frames
//!   complete and connections close (their bytes stay in the kernel, and since the listener is
//!   edge-triggered the loop reads them itself rather than wait for another event). Time spent
//!   waiting does not count against the frame deadline; the handshake deadline still applies.
//! - **Connection caps** (`inbound_connections_max`, 1024; `inbound_connections_per_ip_max`,
//!   256): a connection beyond a cap evicts the longest-idle inbound connection that has not
//!   completed its handshake (from the same address for the per-address cap), counted as
//!   `connections_evicted`; when every held connection has completed its handshake the new one
//!   is closed (`connections_refused`). A node holds at most one established inbound link per
//!   peer node (a newer one replaces it: a peer that reconnects after a half-open connection is
//!   admitted at once), so strangers can never starve the configured nodes of slots, and with a
//!   secret they cannot establish links at all.
//! - **Accept failures**: when `accept` fails for want of resources (`EMFILE`, `ENFILE`,
//!   `ENOBUFS`, `ENOMEM`), the node keeps serving its connections and accepts again every
//!   `accept_retry_ms` (the listener is edge-triggered, so waiting for another event could
//!   wait forever once its backlog is full). Out of file descriptors, it releases a spare
//!   descriptor it holds for the purpose (an open `/dev/null`), accepts and closes the pending
//!   connections with it (so their dialers fail fast and retry instead of hanging in a full
//!   backlog), and opens the spare again. The failure is logged once per 5 s with the count
//!   meanwhile, and counted (`accept_errors`, `accept_shed`, gauge `accept_paused`).
//!   Transient errors (a connection aborted before it was accepted) are skipped.

mod auth;
mod stats;
mod tls;

pub use auth::Secret;
pub use stats::{LinkCounts, LinkStats};

use crate::codec::Postcard;
use crate::config::{ClusterConfig, ConfigError, Limits};
use crate::frame::{self, Challenge, Frame, FrameDecoder, Hello, Proof, FRAME_BYTES_MAX};
use crate::ids::NodeId;
use crate::node::GroupsNode;
use crate::runtime::inproc::App;
use crate::runtime::Waker;
use auth::{fresh_nonce, LABEL_ACCEPTOR, LABEL_DIALER};
use hmac::Mac;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use stats::{add, bump, set};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Bytes queued for a peer (connected or not) beyond which new messages to it are dropped.
const BACKLOG_BYTES_MAX: usize = 64 << 20;
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// The default handshake deadline ([`Limits::handshake_deadline_ms`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often connections are checked against the handshake and frame deadlines.
const DEADLINE_CHECK_EVERY: Duration = Duration::from_millis(50);
/// Largest frame a connection may send before its handshake is complete (a `Hello`,
/// `Challenge` or `Proof` is under 100 bytes).
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;
/// What one read of an established connection may buffer beyond a frame in progress.
const READ_CHUNK: usize = Limits::SMALL_FRAME_BYTES;
/// The same before the handshake is complete.
const HANDSHAKE_READ_CHUNK: usize = 2 * HANDSHAKE_FRAME_BYTES_MAX;
/// Bytes read from one connection per pass of the loop before the others get their turn.
const READ_QUOTA: usize = 1 << 20;
/// Connections accepted per pass of the loop before the others get their turn.
const ACCEPT_BATCH: usize = 256;
/// Floods (accept failures, evictions) are logged at most once per this period.
const LOG_EVERY: Duration = Duration::from_secs(5);

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
    #[error(
        "the cluster file names no secret_file and no [tls]: refusing to run unauthenticated \
         links, which any process that can reach the node's port could join. Generate a \
         deployment with a secret (`btree-server --write-config` and `chirper-server \
         --write-config` do), or add `secret_file = \"PATH\"` to the cluster file (e.g. \
         `head -c 32 /dev/urandom | base64 > PATH; chmod 600 PATH`), or pass --insecure to \
         run without authentication on a network you trust"
    )]
    Unauthenticated,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The node refused to go on ([`GroupsNode::stopped`]): for example it lost its data.
    #[error("{0}")]
    Stopped(String),
}

/// Why a frame was refused.
enum Refusal {
    /// Out of turn or malformed.
    Protocol(String),
    /// A failed authentication; `kind` is the specific counter to bump, if any.
    Auth {
        why: String,
        kind: Option<fn(&LinkStats) -> &std::sync::atomic::AtomicU64>,
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
        awaiting: Option<[u8; frame::NONCE_BYTES]>,
    },
    Inbound(Inbound),
}

enum Inbound {
    /// Nothing received yet.
    AwaitHello,
    /// Challenge sent; waiting for the dialer's proof.
    AwaitProof {
        peer: NodeId,
        na: [u8; frame::NONCE_BYTES],
        nb: [u8; frame::NONCE_BYTES],
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
    decoder: FrameDecoder<Postcard>,
    wbuf: Vec<u8>,
    wpos: usize,
    opened: Instant,
    /// The remote address of an inbound connection (for the per-address cap).
    ip: Option<IpAddr>,
    /// Bytes of the inbound budget this connection holds; at least its buffer's capacity.
    reserved: usize,
    /// When the frame being received began: its first byte, or its admission by the budget.
    /// `None` while nothing is buffered or while the connection waits for the budget.
    frame_started: Option<Instant>,
    /// The last time bytes arrived (or the accept): eviction takes the longest idle first.
    last_active: Instant,
    /// Not read until the budget has room for [`Conn::want`].
    waiting: bool,
    /// The TLS layer, when the cluster has `[tls]`: frames ride inside it.
    tls: Option<Box<rustls::Connection>>,
    /// Why the TLS layer failed (a bad certificate, plaintext on a TLS port...).
    tls_failed: Option<String>,
}

impl Conn {
    fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Whether the handshake is complete: messages may flow.
    fn established(&self) -> bool {
        match &self.role {
            Role::Outbound {
                connected,
                awaiting,
                ..
            } => *connected && awaiting.is_none() && !self.tls_handshaking(),
            Role::Inbound(Inbound::Ready { .. }) => true,
            Role::Inbound(_) => false,
        }
    }

    fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Whether bytes wait to be written: frames, or TLS records.
    fn wants_write(&self) -> bool {
        self.pending() > 0 || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Reads plaintext: from the socket, or from the TLS layer (feeding it what the socket
    /// has, and sending its handshake answers). `Ok(0)` at the end of the stream.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Conn {
            stream,
            tls,
            tls_failed,
            ..
        } = self;
        let Some(tls) = tls.as_deref_mut() else {
            return stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(stream)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                *tls_failed = Some(e.to_string());
                // The alert that says why.
                let _ = tls.write_tls(stream);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            while tls.wants_write() {
                match tls.write_tls(stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Writes what is pending, through the TLS layer when there is one (frames enter it once
    /// its handshake is complete). `Err` with the reason when the connection failed.
    fn write_pending(&mut self) -> Result<(), String> {
        let Conn {
            stream,
            tls,
            wbuf,
            wpos,
            ..
        } = self;
        let Some(tls) = tls.as_deref_mut() else {
            while *wpos < wbuf.len() {
                match stream.write(&wbuf[*wpos..]) {
                    Ok(0) => return Err("write returned 0".into()),
                    Ok(n) => *wpos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            return Ok(());
        };
        loop {
            if !tls.is_handshaking() && *wpos < wbuf.len() {
                match tls.writer().write(&wbuf[*wpos..]) {
                    Ok(n) => *wpos += n,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if !tls.wants_write() {
                return Ok(());
            }
            match tls.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
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

    /// The budget the next read needs: the whole frame in progress when it is large, else what
    /// is buffered and one read.
    fn want(&self) -> usize {
        let buffered = self.decoder.buffered();
        match self.decoder.head_frame_bytes() {
            Some(total) if total > Limits::SMALL_FRAME_BYTES && total > buffered => total,
            _ => {
                buffered
                    + if self.established() {
                        READ_CHUNK
                    } else {
                        HANDSHAKE_READ_CHUNK
                    }
            }
        }
    }

    /// The budget to keep between reads: the whole frame in progress when it is large (it
    /// was admitted whole), else the buffer's capacity.
    fn keep(&self) -> usize {
        match self.decoder.head_frame_bytes() {
            Some(total) if total > Limits::SMALL_FRAME_BYTES => total.max(self.decoder.capacity()),
            _ => self.decoder.capacity(),
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

/// The bytes all connections' frame buffers may hold, and the connections waiting for room.
struct Budget {
    max: usize,
    used: usize,
    waiting: VecDeque<Token>,
}

/// A log line that may come in floods: at most one per [`LOG_EVERY`], with the count of those
/// held back.
#[derive(Default)]
struct Throttled {
    next: Option<Instant>,
    held_back: u64,
}

impl Throttled {
    /// `Some(held back since the last one)` when a line may be logged now.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.held_back += 1;
            return None;
        }
        self.next = Some(now + LOG_EVERY);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// A node process's event loop.
pub struct TcpNode<A: App> {
    node: GroupsNode,
    app: A,
    cfg: Arc<ClusterConfig>,
    secret: Option<Secret>,
    tls: Option<tls::TlsContext>,
    limits: Limits,
    handshake_deadline: Duration,
    frame_deadline: Duration,
    next_deadline_check: Instant,
    poll: Poll,
    listener: TcpListener,
    conns: BTreeMap<Token, Conn>,
    peers: BTreeMap<NodeId, Peer>,
    next_token: usize,
    stop: Arc<AtomicBool>,
    out: Vec<(NodeId, crate::message::NetMsg)>,
    stats: Arc<LinkStats>,
    budget: Budget,
    /// Connections to read in this pass although no event came for them (admitted by the
    /// budget, or with bytes left after their read quota).
    to_read: Vec<Token>,
    inbound: usize,
    inbound_per_ip: HashMap<IpAddr, usize>,
    /// The established inbound link of each peer (a newer one replaces it).
    inbound_of: BTreeMap<NodeId, Token>,
    /// Held to be released when out of file descriptors (see "Limits").
    spare_fd: Option<std::fs::File>,
    /// Accepting is paused until then after a resource error.
    accept_paused_until: Option<Instant>,
    /// The last accept pass stopped at its batch size; accept again in the next pass.
    accept_more: bool,
    accept_log: Throttled,
    cap_log: Throttled,
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

/// `accept` failed for want of a resource: retry on a timer rather than wait for an event.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) || e.kind() == ErrorKind::OutOfMemory
}

fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// `accept` failed for this one pending connection only (accept(2): network errors already
/// pending on the new socket are reported by accept; treat them like EAGAIN and go on).
fn transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// The soft limit on open file descriptors, if it can be read.
fn fd_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Refuses limits the addresses of the cluster make impossible to honour.
fn check_limits(cfg: &ClusterConfig, me: NodeId) -> Result<(), TcpError> {
    cfg.limits.validate(cfg.nodes.len())?;
    let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
    for n in cfg.nodes.iter().filter(|n| n.id != me) {
        if let Ok(a) = parse_addr(cfg, n.id) {
            *per_ip.entry(a.ip()).or_default() += 1;
        }
    }
    if let Some((ip, count)) = per_ip
        .into_iter()
        .find(|&(_, c)| c >= cfg.limits.inbound_connections_per_ip_max)
    {
        return Err(TcpError::Config(ConfigError::Limit {
            name: "inbound_connections_per_ip_max",
            rule: format!(
                "greater than the {count} other nodes of the cluster file at address {ip} \
                 (each holds a link, and a reconnect needs a handshake slot)"
            ),
        }));
    }
    Ok(())
}

impl<A: App> TcpNode<A> {
    /// Binds this node's address and prepares connections to every peer. If the cluster
    /// configuration names a `secret_file`, the secret is read from it (a relative path against
    /// the current working directory) and every link is authenticated; an unreadable or too
    /// short secret is an error. A configuration with no secret refuses to start
    /// ([`TcpError::Unauthenticated`]) unless it allows insecure links
    /// ([`ClusterConfig::insecure`], a binary's `--insecure`).
    pub fn bind(node: GroupsNode, app: A) -> Result<Self, TcpError> {
        let cfg = node.config();
        let secret = match &cfg.secret_file {
            Some(path) => Some(Secret::from_file(path)?),
            None => None,
        };
        if secret.is_none() && cfg.tls.is_none() && !cfg.insecure {
            return Err(TcpError::Unauthenticated);
        }
        if secret.is_none() && cfg.tls.is_none() {
            tracing::warn!(
                me = %node.id(),
                "running without authentication (--insecure): any process that can reach this \
                 node's port can join the cluster's traffic"
            );
        }
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
        check_limits(&cfg, me)?;
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
        let tls = match &cfg.tls {
            Some(files) => Some(tls::TlsContext::load(files, cfg.cluster_id, me)?),
            None => None,
        };
        let limits = cfg.limits.clone();
        let fds_needed = limits.inbound_connections_max as u64 + peers.len() as u64 + 64;
        if let Some(fds) = fd_limit().filter(|&l| l < fds_needed) {
            tracing::warn!(
                %me,
                fd_limit = fds,
                inbound_connections_max = limits.inbound_connections_max,
                "the open-file limit is below what the connection caps allow; a flood of \
                 connections will exhaust it before the caps apply (the node keeps serving and \
                 recovers, but refuses new connections meanwhile): raise `ulimit -n` or lower \
                 inbound_connections_max"
            );
        }
        let spare_fd = match std::fs::File::open("/dev/null") {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(%me, error = %e, "no spare descriptor (/dev/null) for shedding connections when out of descriptors");
                None
            }
        };
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(TcpNode {
            node,
            app,
            secret,
            tls,
            handshake_deadline: Duration::from_millis(limits.handshake_deadline_ms),
            frame_deadline: Duration::from_millis(limits.frame_deadline_ms),
            budget: Budget {
                max: limits.inbound_bytes_max,
                used: 0,
                waiting: VecDeque::new(),
            },
            limits,
            cfg,
            next_deadline_check: Instant::now(),
            poll,
            listener,
            conns: BTreeMap::new(),
            peers,
            next_token: 2,
            stop: Arc::new(AtomicBool::new(false)),
            out: Vec::new(),
            stats: Arc::default(),
            to_read: Vec::new(),
            inbound: 0,
            inbound_per_ip: HashMap::new(),
            inbound_of: BTreeMap::new(),
            spare_fd,
            accept_paused_until: None,
            accept_more: false,
            accept_log: Throttled::default(),
            cap_log: Throttled::default(),
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

    /// Whether links are authenticated (by the cluster secret, or by TLS certificates).
    pub fn authenticates(&self) -> bool {
        self.secret.is_some() || self.tls.is_some()
    }

    /// Changes the handshake deadline (default: the configuration's
    /// [`Limits::handshake_deadline_ms`]).
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_deadline = timeout;
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
            let busy = !self.to_read.is_empty() || self.accept_more;
            let wait = if busy {
                Duration::ZERO
            } else {
                next_tick
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(10))
            };
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
            for t in std::mem::take(&mut self.to_read) {
                self.on_readable(t);
            }
            let now = Instant::now();
            if self.accept_more || self.accept_paused_until.is_some_and(|u| now >= u) {
                self.accept();
            }
            if now >= next_tick {
                self.node.tick();
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick;
                }
            }
            // The leader's replication messages leave before the application takes its
            // deliveries, which syncs the logs (group commit, pipelined).
            self.send_replication_before_sync();
            self.app.step(&mut self.node);
            self.send_outgoing();
            if let Some(why) = self.node.stopped() {
                self.app.detach(&mut self.node);
                self.send_outgoing();
                return Err(TcpError::Stopped(why));
            }
            self.redial(now);
            self.expire(now);
            self.update_gauges();
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

    fn update_gauges(&self) {
        set(&self.stats.inbound_connections, self.inbound as u64);
        set(&self.stats.inbound_bytes, self.budget.used as u64);
        let waiting = self
            .budget
            .waiting
            .iter()
            .filter(|t| self.conns.get(t).is_some_and(|c| c.waiting))
            .count();
        set(&self.stats.inbound_waiting, waiting as u64);
        set(
            &self.stats.accept_paused,
            u64::from(self.accept_paused_until.is_some()),
        );
    }

    /// Accepts pending connections until none is left (the listener is edge-triggered), at
    /// most [`ACCEPT_BATCH`] per pass; on a resource error, pauses and retries on a timer.
    fn accept(&mut self) {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|u| now < u) {
            return;
        }
        self.accept_paused_until = None;
        self.accept_more = false;
        if self.spare_fd.is_none() {
            self.spare_fd = std::fs::File::open("/dev/null").ok();
        }
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, from)) => self.admit(stream, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if transient_accept_error(&e) => continue,
                Err(e) => {
                    bump(&self.stats.accept_errors);
                    let shed = if out_of_fds(&e) { self.shed() } else { 0 };
                    let retry = Duration::from_millis(self.limits.accept_retry_ms);
                    if let Some(held_back) = self.accept_log.ready(now) {
                        tracing::warn!(
                            me = %self.node.id(),
                            error = %e,
                            resource = out_of_resources(&e),
                            shed,
                            open_connections = self.conns.len(),
                            failures_not_logged = held_back,
                            "accept failed; serving the open connections and accepting again in {retry:?}"
                        );
                    }
                    self.accept_paused_until = Some(now + retry);
                    return;
                }
            }
        }
        self.accept_more = true;
    }

    /// Out of file descriptors: frees the spare one, accepts and closes the pending connections
    /// with it, and takes the spare again. Returns how many were closed.
    fn shed(&mut self) -> u64 {
        let Some(spare) = self.spare_fd.take() else {
            return 0;
        };
        drop(spare);
        let mut shed = 0;
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    drop(stream);
                    shed += 1;
                }
                Err(e) if transient_accept_error(&e) => continue,
                Err(_) => break,
            }
        }
        add(&self.stats.accept_shed, shed);
        self.spare_fd = std::fs::File::open("/dev/null").ok();
        shed
    }

    /// Takes an accepted connection in, within the connection caps.
    fn admit(&mut self, mut stream: TcpStream, from: SocketAddr) {
        let ip = from.ip();
        let from_ip = self.inbound_per_ip.get(&ip).copied().unwrap_or(0);
        let room = (from_ip < self.limits.inbound_connections_per_ip_max || self.evict(Some(ip)))
            && (self.inbound < self.limits.inbound_connections_max || self.evict(None));
        if !room {
            bump(&self.stats.connections_refused);
            if let Some(held_back) = self.cap_log.ready(Instant::now()) {
                tracing::warn!(
                    me = %self.node.id(),
                    %from,
                    inbound = self.inbound,
                    from_this_address = from_ip,
                    refusals_not_logged = held_back,
                    "inbound connection refused: connection caps reached and every held \
                     connection is established ([limits] inbound_connections_max, \
                     inbound_connections_per_ip_max)"
                );
            }
            return;
        }
        let tls = match self.tls.as_ref().map(tls::TlsContext::accept).transpose() {
            Ok(t) => t.map(Box::new),
            Err(why) => {
                tracing::error!(me = %self.node.id(), reason = why, "cannot start TLS on an inbound connection");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let t = self.token();
        if self
            .poll
            .registry()
            .register(&mut stream, t, Interest::READABLE)
            .is_err()
        {
            return;
        }
        let now = Instant::now();
        self.inbound += 1;
        *self.inbound_per_ip.entry(ip).or_default() += 1;
        self.conns.insert(
            t,
            Conn {
                stream,
                role: Role::Inbound(Inbound::AwaitHello),
                decoder: FrameDecoder::with_max(
                    Postcard,
                    self.cfg.cluster_id.frame_tag(),
                    HANDSHAKE_FRAME_BYTES_MAX,
                ),
                wbuf: Vec::new(),
                wpos: 0,
                opened: now,
                ip: Some(ip),
                reserved: 0,
                frame_started: None,
                last_active: now,
                waiting: false,
                tls,
                tls_failed: None,
            },
        );
    }

    /// Closes the longest-idle inbound connection that has not completed its handshake (from
    /// `ip`, if given). Returns whether there was one.
    fn evict(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.role, Role::Inbound(_))
                    && !c.established()
                    && ip.is_none_or(|ip| c.ip == Some(ip))
            })
            .min_by_key(|(_, c)| c.last_active)
            .map(|(&t, _)| t);
        let Some(t) = victim else {
            return false;
        };
        bump(&self.stats.connections_evicted);
        if let Some(held_back) = self.cap_log.ready(Instant::now()) {
            tracing::warn!(
                me = %self.node.id(),
                ip = ?self.conns.get(&t).and_then(|c| c.ip),
                inbound = self.inbound,
                not_logged = held_back,
                "connection cap reached: evicting the longest-idle connection that has not \
                 completed its handshake"
            );
        }
        self.drop_conn(t);
        true
    }

    /// Reads what the connection has, within its budget and read quota, handling each frame as
    /// it completes.
    fn on_readable(&mut self, t: Token) {
        let mut buf = [0u8; READ_CHUNK];
        let mut quota = READ_QUOTA;
        let problem: String = loop {
            match self.handle_buffered(t) {
                Handled::Closed => return,
                Handled::Open => {}
            }
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            if c.waiting {
                return;
            }
            let want = c.want();
            if !self.reserve(t, want) {
                self.wait_for_budget(t);
                return;
            }
            if quota == 0 {
                self.settle(t);
                self.to_read.push(t);
                return;
            }
            let c = self.conns.get_mut(&t).expect("present");
            let room = (want - c.decoder.buffered()).min(quota).min(buf.len());
            match c.read_plain(&mut buf[..room]) {
                Ok(0) => {
                    break match c.decoder.finish() {
                        Err(e) => e.to_string(),
                        Ok(()) => "closed by peer".into(),
                    };
                }
                Ok(n) => {
                    quota -= n;
                    let now = Instant::now();
                    c.last_active = now;
                    c.decoder.extend_bounded(&buf[..n], c.reserved);
                    debug_assert!(c.decoder.capacity() <= c.reserved.max(c.decoder.buffered()));
                    c.frame_started.get_or_insert(now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.settle(t);
                    if self
                        .conns
                        .get(&t)
                        .is_some_and(|c| c.tls.is_some() && c.wants_write())
                    {
                        // A TLS handshake may have answers left to write, or be done and let
                        // the frames waiting for it go.
                        self.flush(t);
                        self.update_interest(t);
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break e.to_string(),
            }
        };
        if let Some(why) = self.conns.get_mut(&t).and_then(|c| c.tls_failed.take()) {
            self.count_auth_failure();
            bump(&self.stats.tls_failures);
            self.refuse(t, &format!("TLS: {why}"));
        } else if self.conns.get(&t).is_some_and(Conn::mid_handshake) {
            self.count_auth_failure();
            self.refuse(
                t,
                &format!(
                    "connection lost during the authentication handshake ({problem}); \
                     does the peer have the same cluster secret?"
                ),
            );
        } else {
            self.close(t, &problem);
        }
    }

    /// Decodes and handles the complete frames the connection has buffered.
    fn handle_buffered(&mut self, t: Token) -> Handled {
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return Handled::Closed;
            };
            let f = match c.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Handled::Open,
                Err(e) => {
                    self.count_frame_error();
                    self.refuse(t, &e.to_string());
                    return Handled::Closed;
                }
            };
            c.frame_started = (c.decoder.buffered() > 0).then(Instant::now);
            match self.on_frame(t, f) {
                Ok(()) => {}
                Err(Refusal::Protocol(why)) => {
                    self.count_frame_error();
                    self.refuse(t, &why);
                    return Handled::Closed;
                }
                Err(Refusal::Auth { why, kind }) => {
                    self.count_frame_error();
                    self.count_auth_failure();
                    if let Some(k) = kind {
                        bump(k(&self.stats));
                    }
                    self.refuse(t, &why);
                    return Handled::Closed;
                }
            }
        }
    }

    /// Raises the connection's reservation to `want` if the budget has room (or it holds that
    /// much already).
    fn reserve(&mut self, t: Token, want: usize) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        if c.reserved >= want {
            return true;
        }
        let extra = want - c.reserved;
        if self.budget.used + extra > self.budget.max {
            return false;
        }
        self.budget.used += extra;
        c.reserved = want;
        true
    }

    /// Stops reading the connection until the budget has room for it.
    fn wait_for_budget(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        c.waiting = true;
        c.frame_started = None;
        bump(&self.stats.budget_waits);
        tracing::debug!(
            me = %self.node.id(),
            want = c.want(),
            used = self.budget.used,
            max = self.budget.max,
            "inbound budget full; connection waits"
        );
        self.budget.waiting.push_back(t);
        self.settle(t);
    }

    /// Gives back buffer memory and budget the connection no longer needs, and admits waiting
    /// connections with it.
    fn settle(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let keep_capacity = if c.decoder.buffered() == 0 && c.established() {
            READ_CHUNK
        } else {
            0
        };
        if c.decoder
            .head_frame_bytes()
            .is_none_or(|n| n <= Limits::SMALL_FRAME_BYTES)
        {
            c.decoder.shrink_to(keep_capacity);
        }
        let keep = c.keep();
        if keep < c.reserved {
            self.budget.used -= c.reserved - keep;
            c.reserved = keep;
            self.admit_waiting();
        }
    }

    /// Admits waiting connections, in arrival order, while the budget has room for the first.
    fn admit_waiting(&mut self) {
        while let Some(&t) = self.budget.waiting.front() {
            let Some(c) = self.conns.get(&t).filter(|c| c.waiting) else {
                self.budget.waiting.pop_front();
                continue;
            };
            let want = c.want();
            if !self.reserve(t, want) {
                return;
            }
            self.budget.waiting.pop_front();
            let c = self.conns.get_mut(&t).expect("present");
            c.waiting = false;
            c.frame_started = (c.decoder.buffered() > 0).then(Instant::now);
            self.to_read.push(t);
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
                    if let (Some(ctx), Some(conn)) = (&self.tls, c.tls.as_deref()) {
                        if let Err(why) = ctx.peer_is(conn, node) {
                            return Err(Refusal::Auth {
                                why: format!("hello claims node {node}, but {why}"),
                                kind: Some(|s| &s.tls_identity_mismatches),
                            });
                        }
                    }
                    match (&self.secret, nonce) {
                        (None, None) => {
                            *state = Inbound::Ready { peer: node };
                            c.decoder.set_max(FRAME_BYTES_MAX);
                            bump(&self.stats.handshakes);
                            self.inbound_ready(t, node);
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
                                &Postcard,
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
                    c.decoder.set_max(FRAME_BYTES_MAX);
                    bump(&self.stats.handshakes);
                    self.inbound_ready(t, peer);
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
                    &Postcard,
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
    fn inbound_ready(&mut self, t: Token, node: NodeId) {
        tracing::debug!(me = %self.node.id(), peer = %node, "inbound link up");
        // One established inbound link per peer: an older one is a half-open leftover of a
        // connection the peer gave up (or, without a secret, a stranger's claim).
        if let Some(old) = self.inbound_of.insert(node, t).filter(|&old| old != t) {
            self.close(old, "replaced by a newer connection from the same node");
        }
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
        if let Err(why) = c.write_pending() {
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
        self.budget.used -= c.reserved;
        if let Some(ip) = c.ip {
            self.inbound -= 1;
            if let Some(n) = self.inbound_per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.inbound_per_ip.remove(&ip);
                }
            }
        }
        if let Role::Inbound(Inbound::Ready { peer }) = c.role {
            if self.inbound_of.get(&peer) == Some(&t) {
                self.inbound_of.remove(&peer);
            }
        }
        if c.reserved > 0 {
            self.admit_waiting();
        }
        if let Role::Outbound { peer, .. } = c.role {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.conn = None;
                p.retry_at = Instant::now() + p.backoff;
                p.backoff = (p.backoff * 2).min(RECONNECT_MAX);
            }
        }
    }

    /// Closes the connections past their handshake or frame deadline.
    fn expire(&mut self, now: Instant) {
        if now < self.next_deadline_check {
            return;
        }
        self.next_deadline_check = now + DEADLINE_CHECK_EVERY;
        let mut late_handshakes = Vec::new();
        let mut late_frames = Vec::new();
        for (&t, c) in &self.conns {
            if !c.established() && now.duration_since(c.opened) >= self.handshake_deadline {
                let connecting = matches!(
                    c.role,
                    Role::Outbound {
                        connected: false,
                        ..
                    }
                );
                late_handshakes.push((t, connecting));
            } else if c
                .frame_started
                .is_some_and(|s| !c.waiting && now.duration_since(s) >= self.frame_deadline)
            {
                late_frames.push((t, c.decoder.buffered(), c.decoder.head_frame_bytes()));
            }
        }
        for (t, connecting) in late_handshakes {
            if connecting {
                // Not an authentication problem: the peer is unreachable. Dial again later.
                self.close(t, "connect timed out");
                continue;
            }
            if self.secret.is_some() {
                self.count_auth_failure();
            }
            bump(&self.stats.handshake_timeouts);
            let why = format!(
                "handshake not completed within {:?} ([limits] handshake_deadline_ms)",
                self.handshake_deadline
            );
            self.refuse(t, &why);
        }
        for (t, have, need) in late_frames {
            bump(&self.stats.frame_timeouts);
            let need = need.map_or("?".to_string(), |n| n.to_string());
            let why = format!(
                "frame not completed within {:?} ({have} of {need} bytes; [limits] \
                 frame_deadline_ms)",
                self.frame_deadline
            );
            self.refuse(t, &why);
        }
    }

    fn send_outgoing(&mut self) {
        self.send_replication_before_sync();
        self.node.take_outgoing(&mut self.out);
        self.send_taken();
    }

    /// Group commit, pipelined: sends the leader's replication messages that may leave
    /// before the logs' sync ([`GroupsNode::take_replication_before_sync`]).
    fn send_replication_before_sync(&mut self) {
        self.node.take_replication_before_sync(&mut self.out);
        if !self.out.is_empty() {
            self.send_taken();
        }
    }

    /// Encodes the messages in `self.out` onto their connections and writes them.
    fn send_taken(&mut self) {
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
            if let Err(e) = frame::encode(&Postcard, cluster, &Frame::Msg(msg), target) {
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
            let interest = if c.wants_write() {
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
            let tls = match self.tls.as_ref().map(|c| c.dial(id)).transpose() {
                Ok(t) => t.map(Box::new),
                Err(why) => {
                    tracing::error!(%me, peer = %id, reason = why, "cannot start TLS to dial");
                    continue;
                }
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
                &Postcard,
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
                    // Acceptors write only a `Challenge` on a link.
                    decoder: FrameDecoder::with_max(Postcard, cluster, HANDSHAKE_FRAME_BYTES_MAX),
                    wbuf,
                    wpos: 0,
                    opened: now,
                    ip: None,
                    reserved: 0,
                    frame_started: None,
                    last_active: now,
                    waiting: false,
                    tls,
                    tls_failed: None,
                },
            );
        }
    }
}

/// Whether a connection is still open after handling its buffered frames.
enum Handled {
    Open,
    Closed,
}
