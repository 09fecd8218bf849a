//! Process hygiene for `peers`: every server it starts runs in its own process group and is
//! killed (the whole group) when its [`Group`] is dropped (normal end, error, panic), and on
//! Ctrl-C / SIGTERM / SIGHUP by a signal handler; temporary data directories are removed in
//! the same places. Also: free loopback ports and the optional Debian packages.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};

/// Process groups and directories alive now, for the signal handler.
static LIVE: Mutex<Live> = Mutex::new(Live {
    groups: Vec::new(),
    dirs: Vec::new(),
});

struct Live {
    groups: Vec<i32>,
    dirs: Vec<PathBuf>,
}

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group `pgid`; it touches no
    // memory of ours. Our children are group leaders (`process_group(0)`), so pgid = pid > 0.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// If a signal arrived, waits for the handler to clean up and end the process (so that the
/// failures the killed servers caused are not reported as results).
pub fn stop_if_interrupted() {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Installs (once) the handler that kills every live group and removes every live directory on
/// Ctrl-C, SIGTERM or SIGHUP, then exits with 130.
pub fn install_signal_handler() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("\npeers: interrupted; stopping every server started");
            let (groups, dirs) = {
                let l = live();
                (l.groups.clone(), l.dirs.clone())
            };
            for g in &groups {
                kill_group(*g);
            }
            for d in &dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            eprintln!(
                "peers: killed {} server process group(s), removed {} data dir(s)",
                groups.len(),
                dirs.len()
            );
            std::process::exit(130);
        })
        .map_err(|e| format!("installing the signal handler: {e}"));
    });
    result
}

/// A temporary directory, removed when dropped (and by the signal handler).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!(
            "chorus-peers-{}-{label}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        live().dirs.push(path.clone());
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        live().dirs.retain(|d| d != &self.path);
    }
}

/// Server processes, each the leader of its own process group (so Ctrl-C at the terminal does
/// not reach them half-way and a JVM's threads or helpers die with it); all killed and reaped
/// when dropped.
#[derive(Default)]
pub struct Group {
    children: Vec<(String, Child)>,
}

impl Group {
    /// Starts `cmd` with stdout and stderr appended to `log`, in a new process group.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<(), String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        // Register under the lock, so a signal between spawn and push cannot miss the child.
        let mut l = live();
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", cmd.get_program()))?;
        l.groups.push(child.id() as i32);
        drop(l);
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// An error naming any child that has exited, with the tail of its log.
    pub fn check_alive(&mut self, logs: &Path) -> Result<(), String> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{name} exited ({status}); last lines of its log:\n{}",
                    tail.join("\n")
                ));
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            kill_group(c.id() as i32);
            let _ = c.wait();
        }
        let ids: Vec<i32> = self.children.iter().map(|(_, c)| c.id() as i32).collect();
        live().groups.retain(|g| !ids.contains(g));
    }
}

/// A base port `p` such that `p..p+n` are all free on loopback now (scanning from a start that
/// depends on the process id, so concurrent runs rarely collide).
pub fn free_port_range(n: u16) -> Result<u16, String> {
    let start = 20_000 + (std::process::id() % 200) as u16 * 97;
    let candidates = (start..60_000).chain(20_000..start);
    for base in candidates.step_by(n.max(1) as usize + 3) {
        if base.checked_add(n).is_none() {
            continue;
        }
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    Err(format!("no {n} free consecutive loopback ports"))
}

/// Where an optional system comes from.
pub struct Package {
    /// Debian package name.
    pub debian: &'static str,
    /// A file the package installs, whose presence means it is installed.
    pub probe: &'static str,
}

#[cfg(feature = "peers")]
pub const ETCD: Package = Package {
    debian: "etcd-server",
    probe: "/usr/bin/etcd",
};

#[cfg(feature = "peers")]
pub const ZOOKEEPER: Package = Package {
    debian: "zookeeper",
    probe: "/usr/share/java/zookeeper.jar",
};

/// The protobuf compiler that building with the `peers` feature needs.
pub const PROTOC: Package = Package {
    debian: "protobuf-compiler",
    probe: "/usr/bin/protoc",
};

/// Makes sure `pkg` is installed: present already, or installed now with apt-get (with
/// `apt-get update` first if the plain install fails) when `install` allows it.
pub fn ensure(pkg: &Package, install: bool) -> Result<(), String> {
    if Path::new(pkg.probe).exists() {
        return Ok(());
    }
    if !install {
        return Err(format!(
            "{} is not installed ({} is missing) and --no-install was given: apt-get install {}",
            pkg.debian, pkg.probe, pkg.debian
        ));
    }
    eprintln!(
        "peers: {} is missing; installing the Debian package {} with apt-get",
        pkg.probe, pkg.debian
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = |args: &[&str]| -> Result<bool, String> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd.status()
            .map(|s| s.success())
            .map_err(|e| format!("running apt-get: {e}"))
    };
    if !apt(&["install", "-y", "-q", pkg.debian])? {
        apt(&["update", "-q"])?;
        if !apt(&["install", "-y", "-q", pkg.debian])? {
            return Err(format!("apt-get install {} failed", pkg.debian));
        }
    }
    if Path::new(pkg.probe).exists() {
        Ok(())
    } else {
        Err(format!(
            "installed {} but {} is still missing",
            pkg.debian, pkg.probe
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_are_free_and_groups_are_killed_on_drop() {
        let base = free_port_range(5).unwrap();
        for i in 0..5 {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).unwrap();
        }
        let dir = TempDir::new("test").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        let mut g = Group::default();
        // A shell whose own child would outlive a plain kill of the shell.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 600 & echo $!; wait"]);
        g.spawn("sleeper", cmd, &path.join("sleeper.log")).unwrap();
        let pid = g.children[0].1.id() as i32;
        let log = path.join("sleeper.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let grandchild: u32 = loop {
            if let Ok(n) = std::fs::read_to_string(&log).unwrap().trim().parse() {
                break n;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the shell wrote no pid"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(g.check_alive(&path).is_ok());
        assert!(live().groups.contains(&pid));
        drop(g);
        assert!(!live().groups.contains(&pid));
        // The grandchild died with the group: gone, or a zombie waiting for its reaper.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
            .flatten();
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "the sleeper's child {grandchild} survived in state {state:?}"
        );
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_dead_child_is_reported_with_its_log() {
        let dir = TempDir::new("test-dead").unwrap();
        let mut g = Group::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom; exit 3"]);
        g.spawn("broken", cmd, &dir.path().join("broken.log"))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let e = g.check_alive(dir.path()).unwrap_err();
        assert!(e.contains("broken exited") && e.contains("boom"), "{e}");
    }
}
