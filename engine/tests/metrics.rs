//! Goal: the metrics endpoint serves `GET /metrics` and survives bad clients.
//!
//! Method: start a [`MetricsServer`] on an ephemeral loopback port with a render closure that
//! counts its calls, and talk to it with raw `TcpStream`s: a good request, an unknown path, a
//! wrong method, garbage, an oversized head, and a silent client followed by a good request
//! (which must still be served, after the silent one times out).

use engine::metrics::{render_workers, Exposition, SharedWorkerStats};
use groups::runtime::metrics_http::MetricsServer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn server() -> (MetricsServer, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let render = Arc::new(move || {
        let n = c.fetch_add(1, Ordering::Relaxed) + 1;
        let mut e = Exposition::new();
        e.counter("test_renders_total", "Renders.", &[], n);
        e.finish()
    });
    let s = MetricsServer::start("127.0.0.1:0".parse().unwrap(), render).unwrap();
    (s, calls)
}

/// Sends `request` and reads the whole answer (the server closes the connection).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before reading all of an oversized request.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn get_metrics_answers_the_rendered_text() {
    let (s, calls) = server();
    let a = exchange(
        s.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(status(&a), "HTTP/1.1 200 OK", "{a}");
    assert!(
        a.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{a}"
    );
    assert!(a.contains("\r\nConnection: close\r\n"), "{a}");
    let body = "# HELP test_renders_total Renders.\n# TYPE test_renders_total counter\ntest_renders_total 1\n";
    assert!(
        a.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{a}"
    );
    assert!(a.ends_with(&format!("\r\n\r\n{body}")), "{a}");
    // A query string is ignored; each request renders afresh.
    let a = exchange(s.local_addr(), b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert!(a.ends_with("test_renders_total 2\n"), "{a}");
    // HEAD: the headers alone.
    let a = exchange(s.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status(&a), "HTTP/1.1 200 OK", "{a}");
    assert!(a.ends_with("\r\n\r\n"), "{a}");
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

#[test]
fn wrong_paths_methods_and_garbage_are_refused() {
    let (s, calls) = server();
    let addr = s.local_addr();
    let a = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status(&a), "HTTP/1.1 404 Not Found", "{a}");
    let a = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status(&a), "HTTP/1.1 405 Method Not Allowed", "{a}");
    assert!(a.contains("\r\nAllow: GET, HEAD\r\n"), "{a}");
    for garbage in [
        &b"\x00\xff\xfe garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"GET /metrics SMTP\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n", // cut off: the client closes its side
    ] {
        let a = {
            let mut st = TcpStream::connect(addr).unwrap();
            st.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            st.write_all(garbage).unwrap();
            st.shutdown(std::net::Shutdown::Write).unwrap();
            let mut out = Vec::new();
            let _ = st.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        assert_eq!(
            status(&a),
            "HTTP/1.1 400 Bad Request",
            "{:?}: {a}",
            String::from_utf8_lossy(garbage)
        );
    }
    // An oversized head (a header line without end).
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let a = exchange(addr, &big);
    assert_eq!(status(&a), "HTTP/1.1 400 Bad Request", "{a}");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    // Still serving.
    let a = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status(&a), "HTTP/1.1 200 OK", "{a}");
}

#[test]
fn a_silent_client_does_not_block_the_endpoint() {
    let (s, _) = server();
    let addr = s.local_addr();
    let silent = TcpStream::connect(addr).unwrap();
    let half = TcpStream::connect(addr).unwrap();
    (&half).write_all(b"GET /metr").unwrap();
    let start = Instant::now();
    let a = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status(&a), "HTTP/1.1 200 OK", "{a}");
    let took = start.elapsed();
    // Each stalled client is dropped after about 2 s.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    drop((silent, half));
}

#[test]
fn dropping_the_server_stops_it() {
    let (s, _) = server();
    let addr = s.local_addr();
    let start = Instant::now();
    drop(s);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn worker_counters_render() {
    let w: Vec<SharedWorkerStats> = (0..2).map(|_| SharedWorkerStats::default()).collect();
    w[1].lock().stats.single = 7;
    w[1].lock().stats.aborts = 2;
    w[0].lock().service_us.record(300).unwrap();
    let mut e = Exposition::new();
    render_workers(&w, &mut e);
    let text = e.finish();
    for line in [
        "chorus_commands_executed_total{worker=\"1\",kind=\"single\"} 7",
        "chorus_commands_executed_total{worker=\"0\",kind=\"multi\"} 0",
        "chorus_optpsmr_aborts_total{worker=\"1\"} 2",
        "chorus_duplicates_total{worker=\"0\"} 0",
        "chorus_rejected_requests_total{worker=\"1\"} 0",
        "chorus_request_service_seconds_bucket{worker=\"0\",le=\"0.00025\"} 0",
        "chorus_request_service_seconds_bucket{worker=\"0\",le=\"0.0005\"} 1",
        "chorus_request_service_seconds_count{worker=\"0\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE chorus_commands_executed_total counter")
            .count(),
        1
    );
}
