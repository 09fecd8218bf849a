//! Server processes of one run: started (in a network namespace or not), signalled by pid, and
//! always killed and reaped when the guard drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How to start one server node.
#[derive(Clone, Debug)]
pub struct Spec {
    pub node: u32,
    pub binary: PathBuf,
    pub config: PathBuf,
    /// Run inside this network namespace (`ip netns exec`, which execs the binary: the pid is
    /// the server's).
    pub netns: Option<String>,
    pub metrics: SocketAddr,
    /// Working directory (the deployment's relative `data_dir` resolves here).
    pub cwd: PathBuf,
    /// Where stderr goes (appended, so a restart keeps the first life's log).
    pub log: PathBuf,
    /// More flags, at every start.
    pub flags: Vec<String>,
}

struct Running {
    spec: Spec,
    child: Option<Child>,
    stopped: bool,
}

/// The servers of a run.
#[derive(Default)]
pub struct Servers {
    list: Vec<Running>,
}

impl Servers {
    pub fn start(&mut self, spec: Spec) -> Result<(), String> {
        let child = spawn(&spec, &[])?;
        self.list.push(Running {
            spec,
            child: Some(child),
            stopped: false,
        });
        Ok(())
    }

    fn get(&mut self, node: u32) -> Result<&mut Running, String> {
        self.list
            .iter_mut()
            .find(|r| r.spec.node == node)
            .ok_or_else(|| format!("no server process for node {node}"))
    }

    pub fn nodes(&self) -> Vec<u32> {
        self.list.iter().map(|r| r.spec.node).collect()
    }

    pub fn metrics_addr(&self, node: u32) -> Option<SocketAddr> {
        self.list
            .iter()
            .find(|r| r.spec.node == node)
            .map(|r| r.spec.metrics)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, node: u32) -> Result<(), String> {
        let r = self.get(node)?;
        let mut child = r
            .child
            .take()
            .ok_or(format!("node {node} is not running"))?;
        child
            .kill()
            .map_err(|e| format!("SIGKILL node {node}: {e}"))?;
        let _ = child.wait();
        Ok(())
    }

    /// Starts a killed node again from the same files.
    pub fn restart(&mut self, node: u32) -> Result<(), String> {
        self.restart_with(node, &[])
    }

    /// Starts a killed node again from the same files, with `extra` arguments.
    pub fn restart_with(&mut self, node: u32, extra: &[&str]) -> Result<(), String> {
        let r = self.get(node)?;
        if r.child.is_some() {
            return Err(format!("node {node} is still running"));
        }
        r.child = Some(spawn(&r.spec, extra)?);
        r.stopped = false;
        Ok(())
    }

    /// Waits up to `patience` for node `node`'s process to exit on its own: its status, or
    /// `None` if it is still running (or was not).
    pub fn wait_exit(&mut self, node: u32, patience: Duration) -> Option<std::process::ExitStatus> {
        let by = std::time::Instant::now() + patience;
        let r = self.get(node).ok()?;
        loop {
            let c = r.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                r.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= by {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of node `node`'s running process.
    pub fn pid(&self, node: u32) -> Option<u32> {
        self.list
            .iter()
            .find(|r| r.spec.node == node)
            .and_then(|r| r.child.as_ref())
            .map(Child::id)
    }

    /// Node `node`'s resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self, node: u32) -> Result<u64, String> {
        let pid = self
            .pid(node)
            .ok_or(format!("node {node} is not running"))?;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        vm_rss_kib(&status).ok_or_else(|| format!("{path} has no VmRSS line"))
    }

    /// How many descriptors node `node`'s process has open (the entries of /proc/PID/fd).
    pub fn open_fds(&self, node: u32) -> Result<u64, String> {
        let pid = self
            .pid(node)
            .ok_or(format!("node {node} is not running"))?;
        let path = format!("/proc/{pid}/fd");
        let dir = std::fs::read_dir(&path).map_err(|e| format!("{path}: {e}"))?;
        Ok(dir.count() as u64)
    }

    /// Lowers node `node`'s soft open-file limit (`RLIMIT_NOFILE`) to `limit`, now, with
    /// prlimit(2) (its hard limit stays): descriptors it holds stay open, opening more fails
    /// with `EMFILE` once it holds `limit`.
    pub fn set_open_file_limit(&self, node: u32, limit: u64) -> Result<(), String> {
        let pid = self
            .pid(node)
            .ok_or(format!("node {node} is not running"))?;
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit(2) with a null new limit only reads into `old`.
        if unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                std::ptr::null(),
                &mut old,
            )
        } != 0
        {
            return Err(format!(
                "prlimit node {node}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let new = libc::rlimit {
            rlim_cur: limit.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: prlimit(2) on the pid of a child this guard owns, with a valid new limit.
        if unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &new,
                std::ptr::null_mut(),
            )
        } != 0
        {
            return Err(format!(
                "prlimit node {node} RLIMIT_NOFILE {limit}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// SIGSTOP (`stop`) or SIGCONT.
    pub fn pause(&mut self, node: u32, stop: bool) -> Result<(), String> {
        let r = self.get(node)?;
        let pid = r
            .child
            .as_ref()
            .ok_or(format!("node {node} is not running"))?
            .id() as libc::pid_t;
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on the pid of a child this guard owns and has not reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!(
                "signal {sig} to node {node}: {}",
                std::io::Error::last_os_error()
            ));
        }
        r.stopped = stop;
        Ok(())
    }

    /// Nodes whose process has exited on its own (with its status): a crash is a failure.
    pub fn exited(&mut self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for r in &mut self.list {
            if let Some(c) = &mut r.child {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((r.spec.node, status.to_string()));
                    r.child = None;
                }
            }
        }
        out
    }

    /// The last `lines` lines of node `node`'s stderr log.
    pub fn log_tail(&self, node: u32, lines: usize) -> String {
        let text = self.log_since(node, 0);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The bytes of node `node`'s stderr log so far (where [`Servers::log_since`] starts to
    /// read what comes after).
    pub fn log_len(&self, node: u32) -> u64 {
        self.list
            .iter()
            .find(|r| r.spec.node == node)
            .and_then(|r| std::fs::metadata(&r.spec.log).ok())
            .map_or(0, |m| m.len())
    }

    /// Node `node`'s stderr log from byte `offset` on.
    pub fn log_since(&self, node: u32, offset: u64) -> String {
        let Some(r) = self.list.iter().find(|r| r.spec.node == node) else {
            return String::new();
        };
        let bytes = std::fs::read(&r.spec.log).unwrap_or_default();
        let from = (offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for r in &mut self.list {
            if let Some(mut c) = r.child.take() {
                if r.stopped {
                    // SAFETY: as in `pause`; a stopped process also dies of SIGKILL, this
                    // only keeps `wait` from depending on it.
                    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn spawn(spec: &Spec, extra: &[&str]) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("{}: {e}", spec.log.display()))?;
    let mut cmd = match &spec.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&spec.binary);
            c
        }
        None => Command::new(&spec.binary),
    };
    cmd.current_dir(&spec.cwd)
        .arg("--config")
        .arg(&spec.config)
        .args(["--node", &spec.node.to_string()])
        .args(["--metrics-addr", &spec.metrics.to_string()])
        .args(&spec.flags)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn()
        .map_err(|e| format!("start node {}: {e}", spec.node))
}

/// `GET /metrics` at `addr`: the body, or why not.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: campaign\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("metrics {addr}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "metrics {addr}: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_string())
}

/// The `VmRSS` of a /proc/PID/status text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let v: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(v)
}

/// `name{log="L"} V` samples of a Prometheus text body: log -> value.
pub fn per_log(body: &str, name: &str) -> Vec<(u32, f64)> {
    let prefix = format!("{name}{{log=\"");
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (log, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.parse().ok()?;
            Some((log.parse().ok()?, value))
        })
        .collect()
}

/// A scratch directory removed when dropped unless [`Scratch::keep`] was called.
pub struct Scratch {
    pub path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(path: &Path) -> Result<Scratch, String> {
        let _ = std::fs::remove_dir_all(path);
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Scratch {
            path: path.to_path_buf(),
            keep: false,
        })
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_log_samples_are_parsed() {
        let body =
            "# HELP x\nchorus_log_is_leader{log=\"0\"} 1\nchorus_log_is_leader{log=\"2\"} 0\n\
                    chorus_log_decided_index{log=\"0\"} 17\nbogus{log=\"x\"} 1\n";
        assert_eq!(
            per_log(body, "chorus_log_is_leader"),
            vec![(0, 1.0), (2, 0.0)]
        );
        assert_eq!(per_log(body, "chorus_log_decided_index"), vec![(0, 17.0)]);
        assert!(per_log(body, "bogus").is_empty());
    }

    #[test]
    fn the_resident_set_is_read_from_proc_status() {
        let status = "Name:\tbtree-server\nVmPeak:\t  999 kB\nVmRSS:\t   6140 kB\nThreads:\t9\n";
        assert_eq!(vm_rss_kib(status), Some(6140));
        assert_eq!(vm_rss_kib("VmRSS: 12 MB\n"), None);
        assert_eq!(vm_rss_kib("Name: x\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(vm_rss_kib(&own).unwrap() > 0);
    }
}
