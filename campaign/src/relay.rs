//! A userspace TCP relay that can delay what it forwards: the delay fault where the kernel has
//! no `netem`.
//!
//! Chorus nodes dial every peer and send only on their own outbound connections, so a relay
//! per (dialer, peer) pair sees every byte one node sends another. [`Relay`] listens on a
//! loopback port and forwards each accepted connection to its target, both directions; every
//! chunk read is released to the other side `delay` after it was read (in order, so a delay
//! that shrinks never reorders bytes). With the delay at zero it is a plain forwarder.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes read, and when they may be written.
type Chunk = (Instant, Vec<u8>);

const POLL: Duration = Duration::from_millis(50);

/// One relay; stops (and closes its connections) when dropped.
pub struct Relay {
    addr: SocketAddr,
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
}

impl Relay {
    /// Listens on a free loopback port and forwards connections to `target`.
    pub fn start(target: SocketAddr) -> Result<Relay, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("relay listener: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("relay listener: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("relay listener: {e}"))?;
        let relay = Relay {
            addr,
            delay_us: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            forwarded: Arc::new(AtomicU64::new(0)),
        };
        let (delay, stop, forwarded) = (
            relay.delay_us.clone(),
            relay.stop.clone(),
            relay.forwarded.clone(),
        );
        std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, target, delay, stop, forwarded))
            .map_err(|e| format!("relay thread: {e}"))?;
        Ok(relay)
    }

    /// Where peers dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every chunk read from now on by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_us.store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Bytes forwarded so far (both directions).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((inbound, _)) => {
                let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                else {
                    continue; // the target is down: the dialer sees a closed connection
                };
                let _ = inbound.set_nonblocking(false);
                for (from, to) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ] {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        pump(from, to, delay.clone(), stop.clone(), forwarded.clone());
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Forwards `from` to `to` through a reader and a writer thread.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
) {
    let (tx, rx): (Sender<Chunk>, Receiver<Chunk>) = crossbeam_channel::unbounded();
    let stop_r = stop.clone();
    let _ = from.set_read_timeout(Some(POLL));
    let reader = std::thread::Builder::new()
        .name("relay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while !stop_r.load(Ordering::Relaxed) {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let due =
                            Instant::now() + Duration::from_micros(delay.load(Ordering::Relaxed));
                        if tx.send((due, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
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
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if to.write_all(&bytes).is_err() {
                            break;
                        }
                        forwarded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
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
        let relay = Relay::start(target).unwrap();
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
}
