//! Goal: a node whose process runs out of file descriptors keeps serving its open links and,
//! once the pressure ends, accepts new connections again within a second (issue 18, part 2).
//! The listener is edge-triggered: when `accept` fails with `EMFILE` and the backlog is full,
//! no new event ever comes, so a node that only accepts on events never recovers.
//!
//! Method: a real `groups-node` process (node 1, the only acceptor of the one log) started with
//! `RLIMIT_NOFILE` = 64 (set in the child before `exec`), node 2 a `groups-node` that
//! multicasts through it all along. The test opens connections to node 1 until its accepts
//! fail with "Too many open files" (in its log) and the backlog is full, holds them, then closes
//! them all. From then on, a probe connection must get node 1's handshake `Challenge` within
//! 1 s, and a node 3 started afterwards must get its multicasts ordered and delivered. Node 2's
//! deliveries must go on during the pressure. The node's metrics then show the accept errors,
//! the connections shed with the spare descriptor, and accepting no longer paused.

mod common;

use common::free_port;
use groups::codec::Postcard;
use groups::frame::{self, Frame, FrameDecoder, Hello};
use groups::record::Record;
use groups::NodeId;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::Processes;

const CLUSTER: u64 = 0xFD5;
const FD_LIMIT: u64 = 64;

fn node(cfg: &Path, id: u32, dir: &Path, extra: &[&str], fd_limit: Option<u64>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groups-node"));
    cmd.args(["--config", cfg.to_str().unwrap(), "--node", &id.to_string()])
        .args(["--record", dir.join(format!("n{id}.log")).to_str().unwrap()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("n{id}.err"))).unwrap());
    if let Some(limit) = fd_limit {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("start groups-node")
}

fn delivered(dir: &Path, id: u32) -> usize {
    Record::read(&dir.join(format!("n{id}.log")))
        .map(|r| r.delivered.len())
        .unwrap_or(0)
}

/// Connects, sends an authenticating hello and waits for the node's `Challenge`: the node
/// accepted the connection and served it. `false` if that does not happen within `within`.
fn probe(addr: SocketAddr, within: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, within) else {
        return false;
    };
    let mut hello = Vec::new();
    frame::encode(
        &Postcard,
        CLUSTER,
        &Frame::Hello(Hello {
            node: NodeId(3),
            nonce: Some([7; 32]),
        }),
        &mut hello,
    )
    .unwrap();
    if s.write_all(&hello).is_err() {
        return false;
    }
    s.set_read_timeout(Some(within)).unwrap();
    let mut d = FrameDecoder::new(Postcard, CLUSTER);
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                d.extend(&buf[..n]);
                match d.next_frame() {
                    Ok(Some(Frame::Challenge(_))) => return true,
                    Ok(None) => {}
                    _ => return false,
                }
            }
        }
    }
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn listener_recovers_within_a_second_after_fd_exhaustion() {
    let dir = testkit::fresh_dir("fd");
    let secret = dir.join("secret");
    std::fs::write(&secret, "c2VjcmV0IGZvciB0aGUgZmQgdGVzdA==\n").unwrap();
    let cfg = common::one_log_cluster(CLUSTER, 3, &[1]).with_secret_file(secret.to_str().unwrap());
    let cfg_path = dir.join("cluster.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let addr1: SocketAddr = cfg
        .node(NodeId(1))
        .unwrap()
        .addr
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    let mut procs = Processes(vec![node(
        &cfg_path,
        1,
        &dir,
        &["--metrics-addr", &metrics.to_string()],
        Some(FD_LIMIT),
    )]);
    let up = Instant::now();
    while !probe(addr1, Duration::from_millis(200)) {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "node 1 does not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.0.push(node(
        &cfg_path,
        2,
        &dir,
        &["--messages", "100000", "--rate", "100"],
        None,
    ));
    let up = Instant::now();
    while delivered(&dir, 2) < 20 {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "node 2 does not deliver"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Pressure: connections until accepts fail and the backlog (128) is full.
    let before = delivered(&dir, 2);
    let mut held = Vec::new();
    let mut timeouts = 0;
    let pressure = Instant::now();
    while held.len() < 600 && timeouts < 5 && pressure.elapsed() < Duration::from_secs(20) {
        match TcpStream::connect_timeout(&addr1, Duration::from_millis(300)) {
            Ok(s) => {
                held.push(s);
                timeouts = 0;
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => timeouts += 1,
            Err(e) => panic!("connect: {e}"),
        }
    }
    let log = std::fs::read_to_string(dir.join("n1.err")).unwrap();
    assert!(
        log.contains("Too many open files"),
        "node 1 never ran out of descriptors ({} connections held); its log:\n{log}",
        held.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let during = delivered(&dir, 2) - before;
    let held_count = held.len();
    drop(held);
    let ended = Instant::now();

    // Within 1 s of the pressure's end, a new connection is accepted and served.
    let mut served = false;
    while ended.elapsed() < Duration::from_secs(1) {
        let left = Duration::from_secs(1).saturating_sub(ended.elapsed());
        if probe(addr1, left.max(Duration::from_millis(50))) {
            served = true;
            break;
        }
    }
    let served_after = ended.elapsed();
    eprintln!(
        "tcp_fd_exhaustion: {held_count} connections held; node 2 delivered {during} during \
         the pressure; a new connection served {served_after:?} after it ended: {served}"
    );
    assert!(
        served,
        "node 1 served no new connection within 1 s of the pressure's end"
    );
    assert!(during > 0, "node 2 delivered nothing during the pressure");

    // A node started now joins and gets its multicasts ordered.
    procs
        .0
        .push(node(&cfg_path, 3, &dir, &["--messages", "20"], None));
    let up = Instant::now();
    while delivered(&dir, 3) < 20 {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "node 3, started after the pressure, delivered {} of its 20 messages",
            delivered(&dir, 3)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let text = scrape(metrics);
    let errors = metric(&text, "chorus_link_accept_errors_total");
    let shed = metric(&text, "chorus_link_accept_shed_total");
    let paused = metric(&text, "chorus_link_accept_paused");
    eprintln!("tcp_fd_exhaustion: accept errors {errors:?}, shed {shed:?}, paused {paused:?}");
    assert!(errors.is_some_and(|e| e >= 1.0), "{text}");
    assert!(shed.is_some_and(|s| s >= 1.0), "{text}");
    assert_eq!(paused, Some(0.0), "{text}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
