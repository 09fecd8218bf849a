//! A userspace TCP relay that can delay, stall (as packet loss does) and cut what it
//! forwards, or forward nothing (a partition): the network faults where the machine has no
//! network namespaces, no `netem` and no nftables, so that they need no system package.
//!
//! Chorus nodes dial every peer and send only on their own outbound connections, so a relay
//! per (dialer, peer) pair sees every byte one node sends another. [`Relay`] listens on a
//! loopback port and forwards each accepted connection to its target, both directions; every
//! chunk read is released to the other side when it is due (in order, so nothing is ever
//! reordered or corrupted). With no fault set it is a plain forwarder.
//!
//! - **Delay** ([`Relay::set_delay`]): a chunk is due `delay` after it was read.
//! - **Loss** ([`Relay::set_loss`]): what packet loss does to TCP as the application sees it.
//!   Bytes are never dropped (that would corrupt the stream); instead a chunk read while the
//!   direction is not already stalled is "lost" with probability `percent`: the direction
//!   stalls for a retransmission timeout ([`LossModel::rto`], Linux's minimum is 200 ms),
//!   doubling for every retransmission lost in turn (at most [`RETRANSMISSIONS_MAX`] times),
//!   and everything read meanwhile waits behind it. A lost chunk is, with probability
//!   `reset_percent`, a connection given up instead: both sides of it are closed, and the
//!   dialer must reconnect (through the relay again).
//! - **Blocked** ([`Relay::set_blocked`]): a partition. Nothing is read or written, new
//!   connections are accepted but carry nothing, until unblocked; TCP keeps the connections
//!   open across it, as it does across a short partition.
//!
//! The draws come from a generator seeded per relay and connection ([`Relay::start`]'s
//! seed), so a run's draws are the same each time; when they happen depends on the traffic.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes read, and when they may be written.
type Chunk = (Instant, Vec<u8>);

const POLL: Duration = Duration::from_millis(50);
/// Retransmissions of one lost chunk that may themselves be lost (each doubles the timeout):
/// a loss event stalls its direction at most `rto * (2^(RETRANSMISSIONS_MAX+1) - 1)`.
pub const RETRANSMISSIONS_MAX: u32 = 3;

/// How the relay imitates packet loss (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossModel {
    /// Probability, in percent, that a chunk read on a direction that is not stalled is lost.
    pub percent: u32,
    /// Probability, in percent, that a loss closes the connection instead of stalling it.
    pub reset_percent: u32,
    /// The first retransmission timeout of a loss.
    pub rto: Duration,
}

impl LossModel {
    /// `percent` % loss, `percent` % of the losses closing their connection, a 200 ms
    /// minimum retransmission timeout (Linux's `TCP_RTO_MIN`).
    pub fn tcp(percent: u32) -> LossModel {
        LossModel {
            percent,
            reset_percent: percent,
            rto: Duration::from_millis(200),
        }
    }
}

/// What the pumps of one relay share.
struct Shared {
    delay_us: AtomicU64,
    loss_percent: AtomicU32,
    reset_percent: AtomicU32,
    rto_us: AtomicU64,
    blocked: AtomicBool,
    stop: AtomicBool,
    forwarded: AtomicU64,
    stalls: AtomicU64,
    resets: AtomicU64,
    seed: u64,
    connections: AtomicU64,
}

/// One relay; stops (and closes its connections) when dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Relay {
    /// Listens on a free loopback port and forwards connections to `target`; the loss draws
    /// of its `i`-th connection come from a generator seeded with `seed` and `i`.
    pub fn start(target: SocketAddr, seed: u64) -> Result<Relay, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("relay listener: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("relay listener: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("relay listener: {e}"))?;
        let shared = Arc::new(Shared {
            delay_us: AtomicU64::new(0),
            loss_percent: AtomicU32::new(0),
            reset_percent: AtomicU32::new(0),
            rto_us: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            seed,
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, target, s))
            .map_err(|e| format!("relay thread: {e}"))?;
        Ok(Relay { addr, shared })
    }

    /// Where peers dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every chunk read from now on by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Imitates packet loss with `model` from now on (`None`: no loss).
    pub fn set_loss(&self, model: Option<LossModel>) {
        let m = model.unwrap_or(LossModel {
            percent: 0,
            reset_percent: 0,
            rto: Duration::ZERO,
        });
        self.shared
            .rto_us
            .store(m.rto.as_micros() as u64, Ordering::Relaxed);
        self.shared
            .reset_percent
            .store(m.reset_percent.min(100), Ordering::Relaxed);
        self.shared
            .loss_percent
            .store(m.percent.min(100), Ordering::Relaxed);
    }

    /// Forwards nothing (a partition) while `blocked`.
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Bytes forwarded so far (both directions).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Losses that stalled a direction so far.
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::Relaxed)
    }

    /// Losses that closed a connection so far.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((inbound, _)) => {
                let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                else {
                    continue; // the target is down: the dialer sees a closed connection
                };
                let _ = inbound.set_nonblocking(false);
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let n = shared.connections.fetch_add(1, Ordering::Relaxed);
                for (d, (from, to)) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ]
                .into_iter()
                .enumerate()
                {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        let seed = shared.seed
                            ^ (n * 2 + d as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        pump(from, to, seed, shared.clone());
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// When a chunk read at `now` is due, given the direction's last due instant: the delay, and
/// a loss drawn from `rng` when the direction is not stalled. `Err(())`: the loss closes the
/// connection.
fn due(
    now: Instant,
    last_due: Instant,
    shared: &Shared,
    rng: &mut ChaCha8Rng,
) -> Result<Instant, ()> {
    let mut due = now + Duration::from_micros(shared.delay_us.load(Ordering::Relaxed));
    let loss = shared.loss_percent.load(Ordering::Relaxed);
    // A direction already waiting for a retransmission draws no new loss: the bytes read
    // meanwhile go out with the retransmission, as TCP's would.
    if loss > 0 && last_due <= now && rng.random_range(0..100) < loss {
        if rng.random_range(0..100) < shared.reset_percent.load(Ordering::Relaxed) {
            shared.resets.fetch_add(1, Ordering::Relaxed);
            return Err(());
        }
        let mut rto = Duration::from_micros(shared.rto_us.load(Ordering::Relaxed));
        let mut stall = rto;
        for _ in 0..RETRANSMISSIONS_MAX {
            if rng.random_range(0..100) >= loss {
                break;
            }
            rto *= 2;
            stall += rto;
        }
        shared.stalls.fetch_add(1, Ordering::Relaxed);
        due += stall;
    }
    Ok(due.max(last_due))
}

/// Forwards `from` to `to` through a reader and a writer thread.
fn pump(mut from: TcpStream, mut to: TcpStream, seed: u64, shared: Arc<Shared>) {
    let (tx, rx): (Sender<Chunk>, Receiver<Chunk>) = crossbeam_channel::unbounded();
    let s = shared.clone();
    let _ = from.set_read_timeout(Some(POLL));
    let to_r = to.try_clone();
    let reader = std::thread::Builder::new()
        .name("relay-read".into())
        .spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut buf = vec![0u8; 64 << 10];
            let mut last_due = Instant::now();
            while !s.stop.load(Ordering::Relaxed) {
                if s.blocked.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL / 5);
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => match due(Instant::now(), last_due, &s, &mut rng) {
                        Ok(d) => {
                            last_due = d;
                            if tx.send((d, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                        Err(()) => {
                            // Given up: both sides of the connection see it closed.
                            if let Ok(to) = &to_r {
                                let _ = to.shutdown(Shutdown::Both);
                            }
                            let _ = from.shutdown(Shutdown::Both);
                            break;
                        }
                    },
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Read);
        });
    let writer = std::thread::Builder::new()
        .name("relay-write".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(POLL) {
                    Ok((due, bytes)) => {
                        loop {
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep((due - now).min(POLL));
                            } else if shared.blocked.load(Ordering::Relaxed)
                                && !shared.stop.load(Ordering::Relaxed)
                            {
                                std::thread::sleep(POLL / 5);
                            } else {
                                break;
                            }
                        }
                        if to.write_all(&bytes).is_err() {
                            break;
                        }
                        shared
                            .forwarded
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Err(RecvTimeoutError::Timeout) if !shared.stop.load(Ordering::Relaxed) => {}
                    Err(_) => break,
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    if reader.is_err() || writer.is_err() {
        eprintln!("campaign relay: could not start a pump thread (connection dropped)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_both_ways_and_delays_when_asked() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 4];
            for _ in 0..2 {
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
            }
        });
        let relay = Relay::start(target, 1).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        let mut buf = [0u8; 4];
        let t0 = Instant::now();
        c.write_all(b"ping").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        let fast = t0.elapsed();
        relay.set_delay(Duration::from_millis(150));
        let t1 = Instant::now();
        c.write_all(b"pong").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        let slow = t1.elapsed();
        // Delayed on the way there and on the way back.
        assert!(slow >= Duration::from_millis(300), "{slow:?}");
        assert!(fast < Duration::from_millis(150), "{fast:?}");
        // The writer counts after its write: give it a moment.
        let by = Instant::now() + Duration::from_secs(2);
        while relay.forwarded() < 16 && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(relay.forwarded(), 16);
        echo.join().unwrap();
    }
    /// An echo server on a free port: echoes every 4-byte message on every connection.
    fn echo_server() -> SocketAddr {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in server.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4];
                    while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
                });
            }
        });
        addr
    }

    fn round_trip(c: &mut TcpStream, msg: &[u8; 4]) -> std::io::Result<Duration> {
        let t = Instant::now();
        c.write_all(msg)?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        assert_eq!(&buf, msg);
        Ok(t.elapsed())
    }

    #[test]
    fn loss_stalls_for_a_retransmission_timeout_and_keeps_the_bytes() {
        let relay = Relay::start(echo_server(), 7).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(round_trip(&mut c, b"ping").unwrap() < Duration::from_millis(100));
        // Every chunk on a direction not already stalled is lost, and so is every
        // retransmission: each way stalls rto * (1 + 2 + 4 + 8).
        relay.set_loss(Some(LossModel {
            percent: 100,
            reset_percent: 0,
            rto: Duration::from_millis(10),
        }));
        let slow = round_trip(&mut c, b"pong").unwrap();
        assert!(slow >= Duration::from_millis(300), "{slow:?}");
        assert_eq!(relay.stalls(), 2);
        assert_eq!(relay.resets(), 0);
        relay.set_loss(None);
        assert!(round_trip(&mut c, b"ping").unwrap() < Duration::from_millis(100));
    }

    #[test]
    fn a_lost_chunk_may_close_the_connection_and_the_dialer_reconnects() {
        let relay = Relay::start(echo_server(), 7).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        round_trip(&mut c, b"ping").unwrap();
        relay.set_loss(Some(LossModel {
            percent: 100,
            reset_percent: 100,
            rto: Duration::from_millis(10),
        }));
        assert!(round_trip(&mut c, b"pong").is_err());
        assert_eq!(relay.resets(), 1);
        relay.set_loss(None);
        let mut again = TcpStream::connect(relay.addr()).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        round_trip(&mut again, b"ping").unwrap();
    }

    #[test]
    fn a_blocked_relay_forwards_nothing_until_unblocked() {
        let relay = Relay::start(echo_server(), 7).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        round_trip(&mut c, b"ping").unwrap();
        relay.set_blocked(true);
        c.write_all(b"pong").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let mut buf = [0u8; 4];
        assert!(
            c.read_exact(&mut buf).is_err(),
            "nothing crosses a partition"
        );
        // A connection opened during the partition carries nothing either.
        let mut late = TcpStream::connect(relay.addr()).unwrap();
        late.write_all(b"late").unwrap();
        late.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(late.read_exact(&mut buf).is_err());
        relay.set_blocked(false);
        late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        late.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        // The old connection survived: its bytes come through after the partition.
        let mut c2 = c.try_clone().unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c2.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}
