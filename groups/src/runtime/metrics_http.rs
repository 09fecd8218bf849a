//! The metrics endpoint of a running process: a minimal std-only HTTP server answering
//! `GET /metrics` with an exposition ([`crate::metrics::Exposition`]) rendered at that moment.
//! It is a runtime part (a socket and a thread), apart from the protocol code.

use crate::metrics::CONTENT_TYPE;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the metrics endpoint renders on each request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The longest request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head, and to read the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle accept loop checks its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// A minimal HTTP/1.x endpoint serving `GET /metrics` (also `HEAD`) on its own thread; other
/// paths get 404, other methods 405, malformed or oversized (> [`MAX_REQUEST_HEAD`]) requests
/// 400. A client that does not send its request within [`CLIENT_TIMEOUT`] is dropped. One
/// connection at a time, `Connection: close`. Stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, render: Render) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || accept_loop(listener, render, flag))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the actual port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, render: Render, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve_one(stream, &render) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    Bad,
}

/// Reads the request head: `Ok(None)` for a request that was too long, malformed, or cut off.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

/// Where the blank line ending a request head ends in `buf` (`\r\n\r\n`, or a bare `\n\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn parse_head(head: &[u8]) -> Parsed {
    if head.len() > MAX_REQUEST_HEAD {
        return Parsed::Bad;
    }
    let Ok(text) = std::str::from_utf8(head) else {
        return Parsed::Bad;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return Parsed::Bad;
    };
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Parsed::Bad;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(method) || !token(target) || !version.starts_with("HTTP/1.") {
        return Parsed::Bad;
    }
    // Headers: `name: value` lines until the blank one.
    for line in lines {
        if line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((name, _)) if token(name) => {}
            _ => return Parsed::Bad,
        }
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::BadMethod,
    };
    let path = target.split('?').next().unwrap_or_default();
    if path == "/metrics" {
        Parsed::Metrics { head_only }
    } else {
        Parsed::NotFound
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

fn serve_one(mut stream: TcpStream, render: &Render) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let parsed = match read_head(&mut stream)? {
        Some(head) => parse_head(&head),
        None => Parsed::Bad,
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    let bad = parsed == Parsed::Bad;
    let r = match parsed {
        Parsed::Metrics { head_only } => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render())) {
                Ok(body) => respond(
                    &mut stream,
                    "200 OK",
                    CONTENT_TYPE,
                    "",
                    body.as_bytes(),
                    head_only,
                ),
                Err(_) => respond(
                    &mut stream,
                    "500 Internal Server Error",
                    TEXT,
                    "",
                    b"rendering the metrics failed\n",
                    head_only,
                ),
            }
        }
        Parsed::NotFound => respond(
            &mut stream,
            "404 Not Found",
            TEXT,
            "",
            b"not found: try /metrics\n",
            false,
        ),
        Parsed::BadMethod => respond(
            &mut stream,
            "405 Method Not Allowed",
            TEXT,
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
            false,
        ),
        Parsed::Bad => respond(
            &mut stream,
            "400 Bad Request",
            TEXT,
            "",
            b"bad request\n",
            false,
        ),
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if bad {
        // Read what the client still sends for a moment, so that closing with unread input
        // does not reset the connection before the client has read the answer.
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 256 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let p = |s: &str| parse_head(s.as_bytes());
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Metrics { head_only: false }
        );
        assert_eq!(
            p("HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Parsed::Metrics { head_only: true }
        );
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Parsed::NotFound);
        assert_eq!(p("POST /metrics HTTP/1.1\r\n\r\n"), Parsed::BadMethod);
        assert_eq!(p("GET /metrics\r\n\r\n"), Parsed::Bad);
        assert_eq!(p("GET  /metrics HTTP/1.1\r\n\r\n"), Parsed::Bad);
        assert_eq!(p("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n"), Parsed::Bad);
        assert_eq!(p("\r\n\r\n"), Parsed::Bad);
        assert_eq!(find_head_end(b"a\r\n\r\nb"), Some(5));
        assert_eq!(find_head_end(b"a\r\n"), None);
    }
}
