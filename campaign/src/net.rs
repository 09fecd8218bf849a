//! Network faults with the kernel: network namespaces joined by veth pairs on a bridge (a
//! partition takes a node's link down), packet loss and delay with `tc netem` where the kernel
//! has it, and loss with an nftables `numgen random` rule where it does not.
//!
//! Every fabric and rule is removed when its guard drops, also when a run fails.

use std::process::{Command, Stdio};

/// Runs `program args`; its stdout, or an error naming the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

/// [`run`] with `input` on stdin.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if let Some(text) = input {
        use std::io::Write;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| format!("{program}: writing stdin: {e}"))?;
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What this machine offers for network faults, each `Err` saying why not.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Network namespaces, veth pairs and a bridge (needs root and iproute2).
    pub netns: Result<(), String>,
    /// `tc qdisc ... netem` (the kernel's sch_netem).
    pub netem: Result<(), String>,
    /// nftables with `numgen random` (the `nft` tool and the kernel's nf_tables).
    pub nft: Result<(), String>,
}

impl Capabilities {
    /// Probes the machine in a throw-away namespace.
    pub fn probe() -> Capabilities {
        let ns = format!("chorus-probe-{}", std::process::id());
        if let Err(e) = run("ip", &["netns", "add", &ns]) {
            let why = format!("no network namespaces: {e}");
            return Capabilities {
                netns: Err(why.clone()),
                netem: Err(why.clone()),
                nft: Err(why),
            };
        }
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        let netns = in_ns(&["ip", "link", "set", "lo", "up"]).map(|_| ());
        let netem = in_ns(&[
            "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ])
        .map(|_| ())
        .map_err(|e| format!("tc netem unavailable: {e}"));
        let nft = run_with_input(
            "ip",
            &["netns", "exec", &ns, "nft", "-f", "-"],
            Some(
                "table inet chorus_probe {\n chain c {\n  type filter hook input priority 0;\n  \
                 numgen random mod 100 < 1 counter drop\n }\n}\n",
            ),
        )
        .map(|_| ())
        .map_err(|e| format!("nftables unavailable: {e}"));
        let _ = run("ip", &["netns", "del", &ns]);
        Capabilities { netns, netem, nft }
    }
}

/// Namespaces `chorus-<tag>-n<node>` with one veth each (`eth0` inside), all on one bridge
/// whose address is the host's side of the subnet. Removed on drop.
pub struct Fabric {
    bridge: String,
    subnet: u8,
    nodes: Vec<FabricNode>,
}

struct FabricNode {
    node: u32,
    ns: String,
    host_veth: String,
    ip: String,
}

impl Fabric {
    /// Builds the fabric for `nodes`; `tag` (up to 5 digits) keeps concurrent fabrics apart.
    pub fn new(tag: u32, nodes: &[u32]) -> Result<Fabric, String> {
        let tag = tag % 100_000;
        // A 10.213.X.0/24 no interface of this namespace uses yet (a concurrent campaign's).
        let used = run("ip", &["-o", "-4", "addr", "show"]).unwrap_or_default();
        let subnet = (0..200u32)
            .map(|i| ((tag + i) % 200) as u8 + 20)
            .find(|x| !used.contains(&format!("10.213.{x}.")))
            .ok_or("no free 10.213.X.0/24 subnet for the fabric")?;
        let mut f = Fabric {
            bridge: format!("chb{tag}"),
            subnet,
            nodes: Vec::new(),
        };
        let _ = run("ip", &["link", "del", &f.bridge]);
        run("ip", &["link", "add", &f.bridge, "type", "bridge"])?;
        let host = format!("{}/24", f.host_ip());
        run("ip", &["addr", "add", &host, "dev", &f.bridge])?;
        run("ip", &["link", "set", &f.bridge, "up"])?;
        for (i, &node) in nodes.iter().enumerate() {
            let n = FabricNode {
                node,
                ns: format!("chorus-{tag}-n{node}"),
                host_veth: format!("chv{tag}n{i}"),
                ip: format!("10.213.{subnet}.{}", 10 + i),
            };
            let _ = run("ip", &["netns", "del", &n.ns]);
            run("ip", &["netns", "add", &n.ns])?;
            f.nodes.push(n);
            let n = f.nodes.last().expect("just pushed");
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &n.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &n.ns,
                ],
            )?;
            run("ip", &["link", "set", &n.host_veth, "master", &f.bridge])?;
            run("ip", &["link", "set", &n.host_veth, "up"])?;
            let addr = format!("{}/24", n.ip);
            run("ip", &["-n", &n.ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &n.ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &n.ns, "link", "set", "lo", "up"])?;
        }
        Ok(f)
    }

    /// The host's (bridge's) address: where the campaign's client node listens.
    pub fn host_ip(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    fn get(&self, node: u32) -> Result<&FabricNode, String> {
        self.nodes
            .iter()
            .find(|n| n.node == node)
            .ok_or_else(|| format!("node {node} is not in the fabric"))
    }

    /// Node `node`'s address.
    pub fn ip(&self, node: u32) -> Result<String, String> {
        Ok(self.get(node)?.ip.clone())
    }

    /// Node `node`'s namespace.
    pub fn ns(&self, node: u32) -> Result<String, String> {
        Ok(self.get(node)?.ns.clone())
    }

    /// Cuts `node` off from every other node and the clients (its link goes down), or heals it.
    pub fn set_isolated(&self, node: u32, isolated: bool) -> Result<(), String> {
        let n = self.get(node)?;
        let state = if isolated { "down" } else { "up" };
        run("ip", &["link", "set", &n.host_veth, state])?;
        Ok(())
    }

    /// Adds `netem ARGS` on both directions of `node`'s link (its `eth0` and the host's side).
    pub fn netem(&self, node: u32, args: &[&str]) -> Result<(), String> {
        let n = self.get(node)?;
        let mut inside = vec!["-n", &n.ns, "qdisc", "add", "dev", "eth0", "root", "netem"];
        inside.extend_from_slice(args);
        run("tc", &inside)?;
        let mut outside = vec!["qdisc", "add", "dev", &n.host_veth, "root", "netem"];
        outside.extend_from_slice(args);
        run("tc", &outside)?;
        Ok(())
    }

    /// Removes what [`Fabric::netem`] added.
    pub fn clear_netem(&self, node: u32) -> Result<(), String> {
        let n = self.get(node)?;
        let a = run("tc", &["-n", &n.ns, "qdisc", "del", "dev", "eth0", "root"]);
        let b = run("tc", &["qdisc", "del", "dev", &n.host_veth, "root"]);
        a.and(b).map(|_| ())
    }

    /// Drops `percent` % of the packets in and out of `node`'s `eth0` with an nftables rule
    /// (`numgen random mod 100 < percent`) in its namespace.
    pub fn nft_loss(&self, node: u32, percent: u32) -> Result<(), String> {
        let n = self.get(node)?;
        let rules = format!(
            "table inet chorus_fault {{\n\
             \x20chain in {{\n  type filter hook input priority 0;\n  \
             iifname \"eth0\" numgen random mod 100 < {percent} counter drop\n }}\n\
             \x20chain out {{\n  type filter hook output priority 0;\n  \
             oifname \"eth0\" numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
        );
        run_with_input(
            "ip",
            &["netns", "exec", &n.ns, "nft", "-f", "-"],
            Some(&rules),
        )?;
        Ok(())
    }

    /// Removes the loss rule of [`Fabric::nft_loss`]; returns the packets it dropped.
    pub fn clear_nft_loss(&self, node: u32) -> Result<u64, String> {
        let n = self.get(node)?;
        let listing = run(
            "ip",
            &[
                "netns",
                "exec",
                &n.ns,
                "nft",
                "list",
                "table",
                "inet",
                "chorus_fault",
            ],
        )?;
        let dropped = dropped_packets(&listing);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &n.ns,
                "nft",
                "delete",
                "table",
                "inet",
                "chorus_fault",
            ],
        )?;
        Ok(dropped)
    }
}

/// The sum of the `counter packets N` of an `nft list` output.
pub fn dropped_packets(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = run("ip", &["link", "del", &n.host_veth]);
            let _ = run("ip", &["netns", "del", &n.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_an_nft_listing_are_summed() {
        let listing = "table inet chorus_fault {\n chain in {\n  iifname \"eth0\" numgen random \
                       mod 100 < 10 counter packets 12 bytes 900 drop\n }\n chain out {\n  \
                       oifname \"eth0\" numgen random mod 100 < 10 counter packets 3 bytes 10 \
                       drop\n }\n}\n";
        assert_eq!(dropped_packets(listing), 15);
        assert_eq!(dropped_packets("nothing here"), 0);
    }

    #[test]
    fn a_failing_command_names_itself() {
        let e = run("ip", &["link", "show", "no-such-interface-xyz"]).unwrap_err();
        assert!(e.contains("no-such-interface-xyz"), "{e}");
        assert!(run("no-such-program-xyz", &[]).is_err());
    }
}
