//! Separate hosts on one machine for tests of what crosses a real network:
//! one network namespace per host, each with its own address on a veth
//! pair whose other end is on a bridge in the caller's namespace (which
//! gets an address on it too, so a test's client reaches every host).
//! Partitions are `nftables` drop rules inside the hosts, so a cut link
//! loses packets silently (no reset, no error): the peers see a hung
//! connection, as across a real switch. Everything is created by
//! [`NetHosts::create`] and removed when the value is dropped.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); `create` says what is
//! missing otherwise, so a test can skip with the reason.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The nftables table every host's rules live in.
const TABLE: &str = "ringraft_partition";

/// Hosts on one bridge, named after this process (several sets may exist
/// at once: each gets its own subnet and names).
#[derive(Debug)]
pub struct NetHosts {
    /// Prefix of every name (namespaces, veths, bridge).
    prefix: String,
    /// The /24 the hosts are in: 10.`subnet.0`.`subnet.1`.0/24.
    subnet: (u8, u8),
    hosts: usize,
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
    /// rule in it. Errors name what is missing (not root, no `ip`, no
    /// `nft`, namespaces not permitted).
    pub fn create(n: usize) -> Result<NetHosts, String> {
        static SETS: AtomicU64 = AtomicU64::new(0);
        let set = SETS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() as u64;
        // Linux interface names hold 15 bytes: "rr" + 6 + "v" + 3 fits.
        let prefix = format!("rr{}{}", pid % 100_000, set % 10);
        let k = pid.wrapping_mul(31).wrapping_add(set);
        let subnet = (100 + (k % 100) as u8, ((k / 100) % 250) as u8);
        for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
            run(Command::new(tool).arg(arg))
                .map_err(|e| format!("`{tool}` is needed for network hosts: {e}"))?;
        }
        let h = NetHosts {
            prefix,
            subnet,
            hosts: 0,
        };
        let bridge = h.bridge();
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]))?;
        let mut h = h;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", h.gateway()),
            "dev",
            &bridge,
        ]))?;
        run(Command::new("ip").args(["link", "set", &bridge, "up"]))?;
        for _ in 0..n {
            h.add_host()?;
        }
        Ok(h)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.prefix)
    }

    /// The caller's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 254)
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
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, host as u8 + 1)
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
        let _ = run(Command::new("ip").args(["link", "del", &self.bridge()]));
    }
}
