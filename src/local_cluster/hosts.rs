//! Separate hosts on one machine for tests of what crosses a real network:
//! one network namespace per host, each with its own address on a veth
//! pair whose other end is on a bridge in the caller's namespace (which
//! gets an address on it too, so a test's client reaches every host).
//! Partitions are `nftables` drop rules inside the hosts, so a cut link
//! loses packets silently (no reset, no error): the peers see a hung
//! connection, as across a real switch. Everything is created by
//! [`NetHosts::create`] and removed when the value is dropped.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); `create` answers
//! [`HostsError::Unavailable`] naming what is missing, so a test can skip
//! with the reason (any other failure is an error, not a skip). Addresses
//! are taken from 198.18.0.0/15 (RFC 2544's benchmarking range, never a
//! real network's), one /24 per set, avoiding any already in use here.
//! Names carry the creating process's id: a set left behind by a process
//! that died is removed by the next `create`. On a host where bridged
//! traffic goes through iptables (`br_netfilter` loaded) with a FORWARD
//! policy of DROP (Docker sets one), the hosts cannot reach each other:
//! allow the bridge there, or set `net.bridge.bridge-nf-call-iptables=0`.
//!
//! A cut drops IP packets, so it is one way for packets, not for TCP: the
//! side whose packets still arrive gets no acknowledgements back, and its
//! connections stall after about a congestion window. What a one-way cut
//! tests is asymmetric loss as real networks have it (a node that sends
//! and hears nothing, or the reverse, until TCP gives up).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The nftables table every host's rules live in.
const TABLE: &str = "ringraft_partition";

/// Hosts on one bridge, named after this process (several sets may exist
/// at once: each gets its own subnet and names).
#[derive(Debug)]
pub struct NetHosts {
    /// Prefix of every name (namespaces, veths, bridge): `rr{pid}x{set}`.
    prefix: String,
    /// The /24 the hosts are in: 198.`subnet.0`.`subnet.1`.0/24.
    subnet: (u8, u8),
    hosts: usize,
    /// Whether this value made the bridge (and so removes it).
    bridge_made: bool,
}

/// Why hosts could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// This machine cannot make them (not root, a tool missing): skip.
    #[error("separate hosts are unavailable here: {0}")]
    Unavailable(String),
    /// Making them failed: a fault of the harness or of the machine.
    #[error("making separate hosts failed: {0}")]
    Failed(String),
}

/// Runs `cmd`; its stderr as the error.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetHosts {
    /// `n` hosts (host 0 .. n-1), each with the nftables table ready and no
    /// rule in it.
    pub fn create(n: usize) -> Result<NetHosts, HostsError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(HostsError::Unavailable(
                "network namespaces need root".into(),
            ));
        }
        for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
            run(Command::new(tool).arg(arg)).map_err(|e| {
                HostsError::Unavailable(format!("`{tool}` is needed (iproute2, nftables): {e}"))
            })?;
        }
        remove_sets_of_dead_processes();
        static SETS: AtomicU64 = AtomicU64::new(0);
        let set = SETS.fetch_add(1, Ordering::Relaxed) % 10;
        let pid = std::process::id();
        // Interface names hold 15 bytes: "rr" + 7 digits + "x" + 1 + "v"
        // + 3 fits (pid_max is at most 2^22, 7 digits).
        let prefix = format!("rr{pid}x{set}");
        let subnet = free_subnet(u64::from(pid) * 10 + set)?;
        let mut h = NetHosts {
            prefix,
            subnet,
            hosts: 0,
            bridge_made: false,
        };
        let bridge = h.bridge();
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]))
            .map_err(HostsError::Failed)?;
        h.bridge_made = true;
        let gw = format!("{}/24", h.gateway());
        run(Command::new("ip").args(["addr", "add", &gw, "dev", &bridge]))
            .map_err(HostsError::Failed)?;
        run(Command::new("ip").args(["link", "set", &bridge, "up"])).map_err(HostsError::Failed)?;
        for _ in 0..n {
            h.add_host().map_err(HostsError::Failed)?;
        }
        Ok(h)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.prefix)
    }

    /// The caller's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, self.subnet.0, self.subnet.1, 254)
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.hosts == 0
    }

    /// The network namespace of `host`.
    pub fn ns(&self, host: usize) -> String {
        format!("{}n{host}", self.prefix)
    }

    /// The address of `host`.
    pub fn addr(&self, host: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, self.subnet.0, self.subnet.1, host as u8 + 1)
    }

    /// One more host (its index), with loopback up and the table ready.
    pub fn add_host(&mut self) -> Result<usize, String> {
        let host = self.hosts;
        if host >= 250 {
            return Err("at most 250 hosts on one bridge".into());
        }
        let (ns, veth) = (self.ns(host), format!("{}v{host}", self.prefix));
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.hosts += 1; // removed on drop from here on
        run(Command::new("ip").args([
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]))?;
        run(Command::new("ip").args(["link", "set", &veth, "master", &self.bridge(), "up"]))?;
        let ip = |args: &[&str]| run(Command::new("ip").args(["-n", &ns]).args(args));
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.addr(host)),
            "dev",
            "eth0",
        ])?;
        ip(&["link", "set", "eth0", "up"])?;
        ip(&["link", "set", "lo", "up"])?;
        let rules = format!(
            "table inet {TABLE} {{\n\
               chain input {{ type filter hook input priority 0; policy accept; }}\n\
               chain output {{ type filter hook output priority 0; policy accept; }}\n\
             }}\n"
        );
        self.nft(host, &rules)?;
        Ok(host)
    }

    /// Loads `script` into `host`'s nftables.
    fn nft(&self, host: usize, script: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft in {}: {e}", self.ns(host)))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft in {}: {e}", self.ns(host)))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("nft in {}: {e}", self.ns(host)))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft in {}: {}",
                self.ns(host),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Packets from `from` to each of `to` are dropped from now on (one
    /// way: what `to` sends to `from` still arrives). Dropped as they
    /// leave `from` and, should one get through, as they reach `to`.
    pub fn cut(&self, from: usize, to: &[usize]) -> Result<(), String> {
        let mut out = String::new();
        for &t in to {
            out.push_str(&format!(
                "add rule inet {TABLE} output ip daddr {} drop\n",
                self.addr(t)
            ));
        }
        self.nft(from, &out)?;
        for &t in to {
            let rule = format!(
                "add rule inet {TABLE} input ip saddr {} drop\n",
                self.addr(from)
            );
            self.nft(t, &rule)?;
        }
        Ok(())
    }

    /// Both ways between every host of `a` and every host of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<(), String> {
        for &x in a {
            self.cut(x, b)?;
        }
        for &y in b {
            self.cut(y, a)?;
        }
        Ok(())
    }

    /// Removes every drop rule on every host.
    pub fn heal(&self) -> Result<(), String> {
        for h in 0..self.hosts {
            self.nft(
                h,
                &format!("flush chain inet {TABLE} input\nflush chain inet {TABLE} output\n"),
            )?;
        }
        Ok(())
    }
}

impl Drop for NetHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and the pair.
        for h in 0..self.hosts {
            let _ = run(Command::new("ip").args(["netns", "del", &self.ns(h)]));
        }
        if self.bridge_made {
            let _ = run(Command::new("ip").args(["link", "del", &self.bridge()]));
        }
    }
}

/// The pid in a name made by [`NetHosts`] (`rr{pid}x...`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("rr")?;
    let (pid, tail) = rest.split_once('x')?;
    (!tail.is_empty() && tail.as_bytes()[0].is_ascii_digit())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Removes namespaces and bridges left by processes that died without
/// dropping their [`NetHosts`] (killed, timed out).
fn remove_sets_of_dead_processes() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if dead(name) {
                let _ = run(Command::new("ip").args(["netns", "del", name]));
            }
        }
    }
    if let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "7: rr123x0b: <...": the name is the second field.
            let name = line.split(':').nth(1).map_or("", str::trim);
            if dead(name) {
                let _ = run(Command::new("ip").args(["link", "del", name]));
            }
        }
    }
}

/// A /24 of 198.18.0.0/15 that no address of this machine is in, starting
/// from one drawn from `seed` (so concurrent processes spread out).
fn free_subnet(seed: u64) -> Result<(u8, u8), HostsError> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| HostsError::Failed(format!("ip addr: {e}")))?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    for k in 0..512u64 {
        let i = (seed.wrapping_mul(2_654_435_761) + k) % 512;
        let subnet = (18 + (i / 256) as u8, (i % 256) as u8);
        if !used.contains(&format!(" 198.{}.{}.", subnet.0, subnet.1)) {
            return Ok(subnet);
        }
    }
    Err(HostsError::Failed(
        "every /24 of 198.18.0.0/15 is in use on this machine".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn names_made_here_give_back_their_pid_and_others_none() {
        assert_eq!(owner_pid("rr4194303x7b"), Some(4_194_303));
        assert_eq!(owner_pid("rr12x0n3"), Some(12));
        assert_eq!(owner_pid("rrx0b"), None);
        assert_eq!(owner_pid("rr12"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("rr12xb"), None);
    }
}
