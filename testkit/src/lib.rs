//! Test support shared by Chorus's crates (a dev-dependency only): proptest settings, an
//! allocator that refuses absurd allocations, damage of well-formed text inputs for decoder
//! property tests, and helpers for tests that start server processes (ports, a kill-on-drop
//! process guard, deployment writers, client runs, waiting, scraping `/metrics`), and
//! data-driven test scripts ([`script`]).

pub mod script;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Refuses any single allocation over 1 GiB, so a decoder that trusts a size taken from its
/// input fails the test binary ("memory allocation of N bytes failed") instead of exhausting
/// the machine. Install it in a test binary with
/// `#[global_allocator] static ALLOC: testkit::Capped = testkit::Capped;`.
pub struct Capped;

pub const ALLOCATION_CAP: usize = 1 << 30;

unsafe impl std::alloc::GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// `cases` cases each; a failure is reported shrunk, not persisted to a regressions file.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Up to `n` arbitrary bytes.
pub fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

/// The char-boundary offset of `text` chosen by `i` (at most `text.len()`).
pub fn boundary(text: &str, i: Index) -> usize {
    let mut at = i.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Damaged versions of a configuration file's text: cut at `cut`, the line `line` dropped or
/// duplicated, the character at `at` replaced by `ch`, and the value of line `line` replaced
/// by `number` if it is `key = <a number>` (`is_number` says what counts as one).
pub fn damaged(
    text: &str,
    cut: Index,
    line: Index,
    at: Index,
    ch: char,
    number: &str,
    is_number: fn(&str) -> bool,
) -> Vec<String> {
    let mut out = vec![text[..boundary(text, cut)].to_string()];
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return out;
    }
    let l = line.index(lines.len());
    let mut v = lines.clone();
    v.remove(l);
    out.push(v.join("\n"));
    let mut v = lines.clone();
    v.insert(l, lines[l]);
    out.push(v.join("\n"));
    let i = boundary(text, at).min(text.len().saturating_sub(1));
    let mut changed = text.to_string();
    if let Some(c) = changed[i..].chars().next() {
        changed.replace_range(i..i + c.len_utf8(), &ch.to_string());
    }
    out.push(changed);
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    if let Some((key, value)) = lines[l].split_once(" = ") {
        if is_number(value) {
            v[l] = format!("{key} = {number}");
        }
    }
    out.push(v.join("\n"));
    out
}

/// Integers worth trying in a configuration value: zero, negatives, and the edges of `u32`,
/// `u64` and `i64` (TOML integers are `i64`).
pub fn integer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..10).prop_map(|v| v.to_string()),
    ]
}

/// A base port with `n` free consecutive loopback ports after it, searched from `lo` (give each
/// test its own range, so that tests running in parallel do not pick the same ports).
pub fn free_ports_from(lo: u16, n: u16) -> u16 {
    for base in (lo..60000).step_by(97) {
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} free consecutive ports above {lo}");
}

/// A free loopback port (bound, read and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Child processes killed (SIGKILL) and reaped when dropped, so a failing test leaves no
/// servers behind.
pub struct Processes(pub Vec<std::process::Child>);

impl Processes {
    /// SIGKILLs process `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let c = &mut self.0[i];
        c.kill().expect("kill a server process");
        let _ = c.wait();
    }

    /// SIGKILLs every process and reaps them.
    pub fn kill_all(&mut self) {
        for i in 0..self.0.len() {
            self.kill(i);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `binary --config CONFIG --node N [extra(N)...]` for every node in `nodes`, in the
/// working directory `cwd` (where relative paths of the deployment file resolve), stdout and
/// stderr discarded; killed when the guard drops.
pub fn start_nodes(
    binary: &str,
    config: &std::path::Path,
    cwd: &std::path::Path,
    nodes: impl IntoIterator<Item = u32>,
    extra: impl Fn(u32) -> Vec<String>,
) -> Processes {
    Processes(
        nodes
            .into_iter()
            .map(|n| {
                std::process::Command::new(binary)
                    .current_dir(cwd)
                    .arg("--config")
                    .arg(config)
                    .args(["--node", &n.to_string()])
                    .args(extra(n))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start a server process")
            })
            .collect(),
    )
}

/// An empty directory `chorus-{name}-{pid}` under the system's temporary directory (what an
/// earlier run left there removed).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// An empty directory `chorus-{name}-{pid}-{n}` under the system's temporary directory, `n`
/// counting the calls (for tests, or property-test cases, that each need their own).
pub fn unique_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    fresh_dir(&format!("{name}-{}-{n}", std::process::id()))
}

/// Runs `server --write-config CONFIG args...` (a service's deployment writer) and checks that
/// it succeeded: its stderr, where it names what it wrote.
pub fn write_config(server: &str, config: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(server)
        .arg("--write-config")
        .arg(config)
        .args(args)
        .output()
        .expect("run the deployment writer");
    assert!(out.status.success(), "--write-config failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a service's client binary once, `client --config CONFIG --node NODE --timeout-s
/// TIMEOUT args...`: whether it succeeded, and its stdout (or, if it failed, its stderr),
/// trimmed.
pub fn run_client(
    client: &str,
    config: &std::path::Path,
    node: u32,
    timeout_s: u32,
    args: &[&str],
) -> (bool, String) {
    let out = std::process::Command::new(client)
        .arg("--config")
        .arg(config)
        .args(["--node", &node.to_string()])
        .args(["--timeout-s", &timeout_s.to_string()])
        .args(args)
        .output()
        .expect("run the client binary");
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    });
    (out.status.success(), text.trim().to_string())
}

/// Runs a service's load generator once from node 1000, `load --config CONFIG --node 1000
/// --seconds SECONDS --warmup-s 0 args...` (its stdout dropped), and panics with its stderr if
/// it fails.
pub fn run_load(load: &str, config: &std::path::Path, seconds: f64, args: &[&str]) {
    let out = std::process::Command::new(load)
        .arg("--config")
        .arg(config)
        .args(["--node", "1000"])
        .args(["--seconds", &seconds.to_string(), "--warmup-s", "0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the load generator");
    assert!(
        out.status.success(),
        "{load} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Calls `probe` every `every` until it returns something, and returns that; panics with the
/// message `failure` if `limit` passes first.
pub fn wait_for<T>(
    limit: std::time::Duration,
    every: std::time::Duration,
    failure: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    poll(limit, every, || probe().ok_or_else(|| failure.to_string()))
}

/// Calls `probe` every `every` until it returns `Ok`, and returns what it holds; panics with
/// the last `Err`'s message if `limit` passes first.
pub fn poll<T>(
    limit: std::time::Duration,
    every: std::time::Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match probe() {
            Ok(x) => return x,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(every);
    }
}

/// Runs `binary args` to completion: its exit code and its stderr.
pub fn exit_code_and_stderr(binary: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(binary)
        .args(args)
        .output()
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The service kit's `--metrics-addr` flag on `server`: without `--config` (an in-process
/// run) it is refused, and so is the address `bad_addr`, each with exit code 2, a message
/// naming the flag and no panic.
pub fn check_metrics_addr_flag(server: &str, bad_addr: &str) {
    let (code, err) = exit_code_and_stderr(server, &["--metrics-addr", "127.0.0.1:9100"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--metrics-addr needs --config"), "{err}");
    let (code, err) = exit_code_and_stderr(
        server,
        &[
            "--config",
            "/nonexistent/deployment.toml",
            "--node",
            "1",
            "--metrics-addr",
            bad_addr,
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("--metrics-addr \"{bad_addr}\"")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The body of `GET /metrics` on `127.0.0.1:port` (see [`scrape`]).
pub fn metrics(port: u16) -> String {
    scrape(port).1
}

/// `GET /metrics` on `127.0.0.1:port` over a raw connection: the status line and the body.
pub fn scrape(port: u16) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The sum of the Prometheus samples whose name (with labels) starts with `prefix`, if any.
pub fn metric_sum(text: &str, prefix: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The value of the one Prometheus sample named exactly `name_and_labels` (e.g.
/// `chorus_log_first_index{log="0"}`), if present.
pub fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The latest checkpoint round a replica's `/metrics` body shows and that round's state hash
/// (exported as two 32-bit halves), if known.
pub fn checkpoint_hash(body: &str) -> Option<(u64, u64)> {
    let round = sample(body, "chorus_checkpoint_round")? as u64;
    let half = |h: &str| {
        sample(
            body,
            &format!("chorus_checkpoint_state_hash{{round=\"{round}\",half=\"{h}\"}}"),
        )
    };
    Some((round, ((half("high")? as u64) << 32) | half("low")? as u64))
}

/// Per log id in `logs`, the value of the sample `metric{log="id"}` in a `/metrics` body.
pub fn per_log(body: &str, metric: &str, logs: impl IntoIterator<Item = u32>) -> Vec<Option<f64>> {
    logs.into_iter()
        .map(|l| sample(body, &format!("{metric}{{log=\"{l}\"}}")))
        .collect()
}

/// Whether every log's first index (`firsts`, as [`per_log`] reads
/// `chorus_log_first_index`) is past the position `held` of it: the log was trimmed past
/// what a replica had received.
pub fn trimmed_past(firsts: &[Option<f64>], held: &[f64]) -> bool {
    firsts
        .iter()
        .zip(held)
        .all(|(f, h)| f.is_some_and(|f| f > *h))
}

/// What the replicas serving `/metrics` at some ports say of their latest checkpoints.
#[derive(Debug)]
pub struct Agreement {
    /// Each replica's latest checkpoint round and state hash, if known.
    pub hashes: Vec<Option<(u64, u64)>>,
    /// Checkpoints the replica at `ports[newcomer]` took itself.
    pub taken_by_newcomer: f64,
}

impl Agreement {
    /// Scrapes the replicas at `ports`.
    pub fn scrape(ports: &[u16], newcomer: usize) -> Agreement {
        let bodies: Vec<String> = ports.iter().map(|&p| scrape(p).1).collect();
        Agreement {
            hashes: bodies.iter().map(|b| checkpoint_hash(b)).collect(),
            taken_by_newcomer: sample(&bodies[newcomer], "chorus_checkpoints_total{how=\"taken\"}")
                .unwrap_or(0.0),
        }
    }

    /// Every replica's latest checkpoint is known and the same (round and state hash), and
    /// the newcomer took one of its own.
    pub fn reached(&self) -> bool {
        let agree = self
            .hashes
            .iter()
            .all(|h| h.is_some() && *h == self.hashes[0]);
        agree && self.taken_by_newcomer >= 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #![proptest_config(config(500))]

        #[test]
        fn damage_cuts_drops_duplicates_replaces_and_renumbers(
            a in 0i64..1000,
            cut in any::<Index>(),
            at in any::<Index>(),
            ch in any::<char>(),
        ) {
            let text = format!("a = {a}\nb = \"x\"");
            // `line` picks one of the two lines; use both to see the number replaced once.
            let out = damaged(&text, cut, at, at, ch, "99", |v| v.parse::<i64>().is_ok());
            prop_assert_eq!(out.len(), 5);
            prop_assert!(text.starts_with(&out[0]));
            prop_assert_eq!(out[1].lines().count(), 1);
            prop_assert_eq!(out[2].lines().count(), 3);
            prop_assert_eq!(out[3].chars().count(), text.chars().count());
            let renumbered = out[4] == "a = 99\nb = \"x\"";
            let untouched = out[4] == text;
            prop_assert!(renumbered || untouched, "{:?}", out[4]);
        }
    }
}
