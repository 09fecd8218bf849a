//! Goal: a TCP node bounds what hostile connections can make it hold (issue 18, part 1):
//! partial frames stay within the inbound byte budget and are cut at the frame deadline, a
//! connection that never completes its hello is cut at the handshake deadline (with or without
//! a cluster secret), idle connections are capped per address with the longest-idle stranger
//! evicted first, and the real peers keep being served throughout.
//!
//! Method: `TcpNode`s on threads of this process on loopback, without a secret (the worst
//! case: a stranger's `Hello` naming a configured node is believed), in a cluster whose file
//! names twelve nodes that never run, so strangers can claim distinct ids. Strangers are raw
//! sockets. Checks are on observable effects: sockets closed by the node and when, the
//! process's resident memory (`VmRSS`), the node's link counters and inbound-bytes gauge, and
//! the real nodes' deliveries. The tests of this file run one at a time (they measure memory).

mod common;

use common::*;
use groups::config::{ClusterConfig, Limits, LogConfig, NodeConfig, Tuning};
use groups::frame::{Frame, Hello, FRAME_BYTES_MAX, PROTOCOL_VERSION};
use groups::{GroupId, GroupSet, LogId, NodeId};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Nodes 1 and 2 subscribe to group 0, whose log node 1 runs alone; nodes 3 to 14 are in the
/// file but never run.
fn cluster(limits: Limits) -> ClusterConfig {
    let nodes = (1..=14)
        .map(|id| NodeConfig {
            id: NodeId(id),
            addr: Some(format!("127.0.0.1:{}", free_port())),
            subscriptions: if id <= 2 {
                vec![GroupSet::singleton(GroupId(0))]
            } else {
                vec![]
            },
        })
        .collect();
    let logs = vec![LogConfig {
        id: LogId(0),
        covers: GroupSet::singleton(GroupId(0)),
        acceptors: vec![NodeId(1)],
    }];
    ClusterConfig::new(CLUSTER, 1, nodes, logs, Tuning::default())
        .unwrap()
        .with_limits(limits)
        .unwrap()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn hello(node: u32) -> Vec<u8> {
    encode(&Frame::Hello(Hello {
        node: NodeId(node),
        nonce: None,
    }))
}

/// The header of a `Msg` frame declaring `len` bytes after its length field.
fn frame_header(len: usize) -> Vec<u8> {
    let mut v = (len as u32).to_le_bytes().to_vec();
    v.push(PROTOCOL_VERSION);
    v.push(2); // FrameKind::Msg
    v.extend_from_slice(&CLUSTER.to_le_bytes());
    v
}

/// Whether the node has closed `s` (a read sees the end of the stream or an error), waiting at
/// most `within`.
fn closed(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    closed_within(s, within)
}

/// Samples the process's resident memory and node 1's inbound-bytes gauge until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    rss_max: Arc<AtomicU64>,
    gauge_max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(stats: Arc<groups::runtime::tcp::LinkStats>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rss_max = Arc::new(AtomicU64::new(0));
        let gauge_max = Arc::new(AtomicU64::new(0));
        let (s, r, g) = (stop.clone(), rss_max.clone(), gauge_max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                r.fetch_max(rss_bytes(), Ordering::Relaxed);
                g.fetch_max(stats.get().inbound_bytes, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            rss_max,
            gauge_max,
            thread: Some(thread),
        }
    }

    /// (peak RSS, peak gauge)
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.rss_max.load(Ordering::Relaxed),
            self.gauge_max.load(Ordering::Relaxed),
        )
    }
}

/// Twelve connections each send a frame header declaring the largest frame and all of its
/// bytes but one: four before any hello, eight after a hello naming a configured node. The
/// first four are refused at once (no large frame before the handshake), the eight are read
/// only as the 40 MiB budget allows (two at a time) and each is cut at the 1.5 s frame
/// deadline; the process never holds much more than the budget, and node 2 keeps multicasting
/// through node 1 and delivering. On the code before the limits, the node buffered all twelve
/// (about 200 MiB) and held the connections open for good.
#[test]
fn partial_frames_stay_within_the_budget_and_are_cut_at_the_deadline() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    const BUDGET: usize = 40 << 20;
    let limits = Limits {
        inbound_bytes_max: BUDGET,
        frame_deadline_ms: 1500,
        ..Limits::default()
    };
    let cfg = cluster(limits);
    let n1 = start_paced(&cfg, 1, Key::Given(None), 0, None, None);
    const EACH: u64 = 1500;
    let n2 = start_paced(&cfg, 2, Key::Given(None), EACH, Some(150.0), None);
    assert!(
        wait_for(Duration::from_secs(5), || n2.delivered().len() >= 10),
        "node 2 does not deliver before the attack"
    );

    let len = FRAME_BYTES_MAX;
    let mut partial = frame_header(len);
    partial.resize(4 + len - 1, 0xAB);
    let partial = Arc::new(partial);
    let rss_before = rss_bytes();
    let sampler = Sampler::start(n1.stats.clone());
    let started = Instant::now();
    let attackers: Vec<_> = (0..12u32)
        .map(|i| {
            let partial = partial.clone();
            let to = addr(&cfg, 1);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&to).unwrap();
                let before_hello = i < 4;
                if !before_hello {
                    s.write_all(&hello(3 + i - 4)).unwrap();
                }
                // Fails once the node closes the connection.
                let _ = s.write_all(&partial);
                let closed = closed(&mut s, Duration::from_secs(20));
                (before_hello, closed, started.elapsed())
            })
        })
        .collect();
    let delivered_at_start = n2.delivered().len();
    let outcomes: Vec<(bool, bool, Duration)> =
        attackers.into_iter().map(|a| a.join().unwrap()).collect();
    let delivered_during = n2.delivered().len() - delivered_at_start;
    let (rss_peak, gauge_peak) = sampler.finish();
    let all_delivered = wait_for(Duration::from_secs(20), || {
        n1.delivered().len() as u64 == EACH && n2.delivered().len() as u64 == EACH
    });
    let c = n1.counts();
    let (d1, d2) = (n1.delivered(), n2.delivered());
    drop(n2);
    drop(n1);
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "tcp_limits: RSS {} MiB before, peak growth {} MiB, gauge peak {} MiB (budget {} MiB); \
         attackers closed after {:?}; node 2 delivered {delivered_during} during the attack; {c:?}",
        rss_before >> 20,
        growth >> 20,
        gauge_peak >> 20,
        BUDGET >> 20,
        outcomes.iter().map(|o| o.2).collect::<Vec<_>>()
    );
    for (i, (before_hello, closed, at)) in outcomes.iter().enumerate() {
        assert!(closed, "attacker {i} was never closed");
        if *before_hello {
            assert!(
                *at < Duration::from_secs(2),
                "attacker {i} (large frame before its hello) closed only after {at:?}"
            );
        } else {
            // Four rounds of two admitted frames, each cut at 1.5 s.
            assert!(
                *at < Duration::from_secs(12),
                "attacker {i} closed only after {at:?}"
            );
        }
    }
    assert!(
        gauge_peak as usize <= BUDGET,
        "gauge peak {gauge_peak} > {BUDGET}"
    );
    assert!(
        growth < (BUDGET + (48 << 20)) as u64,
        "resident memory grew by {} MiB under a {} MiB budget",
        growth >> 20,
        BUDGET >> 20
    );
    assert_eq!(c.frame_timeouts, 8, "{c:?}");
    assert!(c.budget_waits >= 1, "{c:?}");
    assert!(c.frame_errors >= 4, "{c:?}");
    assert!(
        delivered_during > 0,
        "node 2 delivered nothing during the attack"
    );
    assert!(all_delivered, "deliveries {} and {}", d1.len(), d2.len());
    assert_eq!(d1, d2, "nodes 1 and 2 delivered different orders");
}

/// A frame trickled one byte every 100 ms after a valid hello is cut at the frame deadline
/// (1 s), and a hello trickled the same way is cut at the handshake deadline (0.6 s), with no secret in the
/// cluster. On the code before the limits, both stayed open as long as the bytes came.
#[test]
fn trickled_frames_and_hellos_are_cut_at_their_deadlines() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    let limits = Limits {
        frame_deadline_ms: 1000,
        handshake_deadline_ms: 600,
        ..Limits::default()
    };
    let cfg = cluster(limits);
    let n1 = start_paced(&cfg, 1, Key::Given(None), 0, None, None);
    let trickle = |prefix: Vec<u8>, slow: Vec<u8>| {
        let to = addr(&cfg, 1);
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&to).unwrap();
            s.write_all(&prefix).unwrap();
            let started = Instant::now();
            for b in slow {
                if s.write_all(&[b]).is_err() {
                    break;
                }
                if closed(&mut s, Duration::from_millis(100)) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(6) {
                    break;
                }
            }
            let closed = closed(&mut s, Duration::from_millis(100));
            (closed, started.elapsed())
        })
    };
    let mut frame = frame_header(1000);
    frame.resize(1004, 0);
    let frame_trickle = trickle(hello(3), frame);
    let hello_trickle = trickle(Vec::new(), hello(4));
    let (frame_closed, frame_at) = frame_trickle.join().unwrap();
    let (hello_closed, hello_at) = hello_trickle.join().unwrap();
    let c = n1.counts();
    drop(n1);
    eprintln!("tcp_limits: trickled frame closed after {frame_at:?}, hello after {hello_at:?}");
    assert!(
        frame_closed,
        "a trickled frame held its connection {frame_at:?}"
    );
    assert!(
        hello_closed,
        "a trickled hello held its connection {hello_at:?}"
    );
    assert!(
        frame_at >= Duration::from_millis(900) && frame_at < Duration::from_millis(2700),
        "{frame_at:?}"
    );
    assert!(
        hello_at >= Duration::from_millis(500) && hello_at < Duration::from_millis(2300),
        "{hello_at:?}"
    );
    assert_eq!(c.frame_timeouts, 1, "{c:?}");
    assert_eq!(c.handshake_timeouts, 1, "{c:?}");
}

/// 400 idle connections from one address: the node holds at most the per-address cap (32),
/// evicting the longest idle, and a real peer that connects while strangers keep flooding is
/// admitted and served (its established link is never evicted). The strangers it still holds
/// are cut at the handshake deadline. On the code before the limits, the node held all 400.
#[test]
fn idle_connections_are_capped_and_peers_still_get_in() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    const PER_IP: usize = 32;
    let limits = Limits {
        inbound_connections_max: 64,
        inbound_connections_per_ip_max: PER_IP,
        handshake_deadline_ms: 3000,
        ..Limits::default()
    };
    let cfg = cluster(limits);
    let n1 = start_paced(&cfg, 1, Key::Given(None), 0, None, None);
    let mut idle: Vec<TcpStream> = (0..400).map(|_| connect(&cfg, 1)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let open = idle
        .iter_mut()
        .map(|s| closed(s, Duration::from_millis(1)))
        .filter(|&closed| !closed)
        .count();
    let after_flood = n1.counts();
    assert!(
        open <= PER_IP,
        "the node holds {open} of 400 idle connections (cap {PER_IP}): {after_flood:?}"
    );
    assert!(after_flood.connections_evicted >= (400 - PER_IP) as u64);

    // Strangers keep connecting while the real node 2 joins.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        let to = addr(&cfg, 1);
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u64;
            while flooding.load(Ordering::Relaxed) {
                if let Ok(s) = TcpStream::connect(&to) {
                    held.push_back(s);
                    opened += 1;
                }
                if held.len() > 200 {
                    held.pop_front();
                }
                if opened.is_multiple_of(20) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            opened
        })
    };
    const EACH: u64 = 100;
    let n2 = start_paced(&cfg, 2, Key::Given(None), EACH, None, None);
    let served = wait_for(Duration::from_secs(5), || {
        n2.delivered().len() as u64 == EACH && n1.delivered().len() as u64 == EACH
    });
    flooding.store(false, Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    let mid = n1.counts();
    // Whatever is left of the first 400 is evicted or cut at the handshake deadline, and so are
    // new idle connections once the flood is over.
    let late_started = Instant::now();
    let mut late: Vec<TcpStream> = (0..5).map(|_| connect(&cfg, 1)).collect();
    let all_closed = idle
        .iter_mut()
        .chain(late.iter_mut())
        .all(|s| closed(s, Duration::from_secs(5)));
    let late_closed_after = late_started.elapsed();
    let c = n1.counts();
    drop(n2);
    drop(n1);
    eprintln!("tcp_limits: {open} of 400 idle held; {flooded} more opened during the join; {c:?}");
    assert!(
        served,
        "node 2 was not served while strangers flooded: {mid:?}"
    );
    assert!(
        all_closed,
        "idle connections outlived the handshake deadline"
    );
    assert!(
        late_closed_after >= Duration::from_millis(2900),
        "idle connections closed after {late_closed_after:?}, before the deadline"
    );
    assert!(c.handshake_timeouts >= 5, "{c:?}");
    assert_eq!(c.connections_refused, 0, "{c:?}");
}
