//! A cluster of `ringraft node` processes on loopback, in temporary data
//! directories, on free ports: what `ringraft-load` starts by default and
//! what the integration tests run against. Processes are killed (and the
//! directories removed) when it is dropped. With
//! [`LocalClusterConfig::net_hosts`], each node runs on its own host
//! instead (a network namespace: see [`hosts`]), for partitions made of
//! dropped packets.

pub mod hosts;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{Client, ClientConfig};

#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// The `ringraft` binary.
    pub bin: PathBuf,
    pub nodes: u64,
    pub shards: u32,
    pub groups: u64,
    /// The keys that cut the keyspace into the `groups` initial ranges
    /// (`--initial-split-keys`; `None`: the node's default even cuts).
    pub split_keys: Option<Vec<bytes::Bytes>>,
    /// Replicas of each range (`--replication-factor`; `None`: the node's
    /// default, 3).
    pub replication_factor: Option<u32>,
    /// Extra `ringraft node` arguments for every node.
    pub extra_args: Vec<String>,
    /// Run the balancer (`--balancer`). Off by default here: tests and
    /// benchmarks place ranges themselves and measure a still cluster.
    pub balancer: bool,
    /// Where node logs go (`node-{id}.log` in the data directory if None).
    pub log_dir: Option<PathBuf>,
    /// `RUST_LOG` for the nodes.
    pub rust_log: String,
    /// Give every node a `--metrics-addr`.
    pub metrics: bool,
    /// Data directories for some nodes (e.g. on a small filesystem); the
    /// others get one in the cluster's temporary directory.
    pub data_dirs: std::collections::BTreeMap<u64, PathBuf>,
    /// Nodes are killed when the thread that started them ends, even by
    /// SIGKILL (`PR_SET_PDEATHSIG`): for a tool whose main thread owns the
    /// cluster. Off by default (a test may restart nodes from a thread
    /// that ends first).
    pub die_with_parent: bool,
    /// Each node on its own host ([`hosts::NetHosts`]: a network namespace
    /// with its own address; node `id` on host `id - 1`), partitioned with
    /// [`LocalCluster::hosts`]. Needs root, `ip` and `nft`: otherwise
    /// `start` fails with `ErrorKind::Unsupported` naming what is missing
    /// (a test skips on that kind only). Off by default (loopback).
    pub net_hosts: bool,
    /// RLIMIT_NOFILE (soft and hard) of every node process: descriptor
    /// pressure tests. `None`: inherited.
    pub nofile: Option<u64>,
    /// Give every node a `--listen-resp` (Redis's protocol, issue #20).
    pub resp: bool,
}

impl LocalClusterConfig {
    pub fn new(bin: impl Into<PathBuf>) -> LocalClusterConfig {
        LocalClusterConfig {
            bin: bin.into(),
            nodes: 3,
            shards: 2,
            groups: 8,
            split_keys: None,
            replication_factor: None,
            extra_args: Vec::new(),
            log_dir: None,
            rust_log: "info".into(),
            metrics: false,
            data_dirs: Default::default(),
            die_with_parent: false,
            net_hosts: false,
            nofile: None,
            balancer: false,
            resp: false,
        }
    }
}

pub struct LocalNode {
    pub id: u64,
    pub peer_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
    /// Its RESP address (shard 0's), when the cluster has `resp`.
    pub resp_addr: Option<SocketAddr>,
    /// Started with `--join` (added to a running cluster).
    pub join: bool,
    /// Joined through this member's client address (`--join ADDR`):
    /// started without `--peers`, `--shards` or `--groups`, and without
    /// `--id` unless `give_id` (the meta group allocates one).
    pub join_via: Option<SocketAddr>,
    pub give_id: bool,
    /// Its `--peers`, fixed when the node is made (a bootstrap list, as an
    /// operator would keep it: nodes added later are learned from the
    /// replicated address book, not from a longer list at restart).
    pub peers: Vec<u64>,
    child: Option<Child>,
}

pub struct LocalCluster {
    pub cfg: LocalClusterConfig,
    pub nodes: Vec<LocalNode>,
    root: tempfile::TempDir,
    hosts: Option<hosts::NetHosts>,
}

/// Ports of a node on its own host (the host's address is its own).
const HOST_PEER_PORT: u16 = 7000;
const HOST_CLIENT_PORT: u16 = 7100;
const HOST_METRICS_PORT: u16 = 7200;
/// A node's RESP port on its own host (Redis's port).
const HOST_RESP_PORT: u16 = 6379;

/// (peer, client, metrics, RESP) addresses of a node (each shard 0's):
/// on `host` if given, else on free loopback ports.
fn node_addrs(
    host: Option<std::net::Ipv4Addr>,
    shards: u16,
) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr, SocketAddr)> {
    Ok(match host {
        Some(ip) => (
            SocketAddr::from((ip, HOST_PEER_PORT)),
            SocketAddr::from((ip, HOST_CLIENT_PORT)),
            SocketAddr::from((ip, HOST_METRICS_PORT)),
            SocketAddr::from((ip, HOST_RESP_PORT)),
        ),
        None => {
            let base = free_ports(3 * shards + 1)?;
            let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
            let resp = at(base + 2 * shards + 1);
            (at(base), at(base + shards), at(base + 2 * shards), resp)
        }
    })
}

/// `n` consecutive free loopback ports (checked by binding them all),
/// taken below the kernel's ephemeral range: a port picked from that range
/// can be grabbed by any outgoing connection before the node binds it.
/// Never the same port twice in one process: a node that is down frees
/// its ports, and another cluster of the same test process took them
/// before it restarted (CI: "listening for peers ...: Address already in
/// use" at a restart).
pub fn free_ports(n: u16) -> std::io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, ephemeral_low.saturating_sub(n).max(10_000 + n));
    // A different starting point per process and call.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let salt = std::process::id() as u64 * 7919
        + CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 104_729
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    let span = u64::from(hi - lo);
    for i in 0..2000u64 {
        let base = lo + ((salt + i * 131) % span) as u16;
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed.range(base..base + n).next().is_some() {
            continue;
        }
        let held: Result<Vec<_>, _> = (0..n)
            .map(|k| TcpListener::bind(("127.0.0.1", base + k)))
            .collect();
        if held.is_ok() {
            handed.extend(base..base + n);
            return Ok(base);
        }
    }
    Err(std::io::Error::other("no free port range found"))
}

impl LocalCluster {
    /// Starts the nodes (does not wait for leaders: see [`wait_ready`](Self::wait_ready)).
    pub fn start(cfg: LocalClusterConfig) -> std::io::Result<LocalCluster> {
        let root = tempfile::Builder::new()
            .prefix("ringraft-cluster-")
            .tempdir()?;
        let shards = cfg.shards as u16;
        let hosts = if cfg.net_hosts {
            Some(
                hosts::NetHosts::create(cfg.nodes as usize).map_err(|e| match e {
                    hosts::HostsError::Unavailable(_) => {
                        std::io::Error::new(std::io::ErrorKind::Unsupported, e.to_string())
                    }
                    hosts::HostsError::Failed(_) => std::io::Error::other(e.to_string()),
                })?,
            )
        } else {
            None
        };
        let mut nodes = Vec::new();
        for id in 1..=cfg.nodes {
            let host = hosts.as_ref().map(|h| h.addr((id - 1) as usize));
            let (peer_addr, client_addr, metrics_addr, resp_addr) = node_addrs(host, shards)?;
            let data_dir = cfg
                .data_dirs
                .get(&id)
                .cloned()
                .unwrap_or_else(|| root.path().join(format!("node-{id}")));
            let log = cfg
                .log_dir
                .clone()
                .unwrap_or_else(|| root.path().to_path_buf())
                .join(format!("node-{id}.log"));
            nodes.push(LocalNode {
                id,
                peer_addr,
                client_addr,
                data_dir,
                log,
                metrics_addr: cfg.metrics.then_some(metrics_addr),
                resp_addr: cfg.resp.then_some(resp_addr),
                join: false,
                join_via: None,
                give_id: true,
                peers: (1..=cfg.nodes).filter(|&p| p != id).collect(),
                child: None,
            });
        }
        let mut c = LocalCluster {
            cfg,
            nodes,
            root,
            hosts,
        };
        for i in 0..c.nodes.len() {
            c.spawn(i)?;
        }
        Ok(c)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The hosts the nodes run on (node `id` on host `id - 1`), when
    /// started with `net_hosts`.
    pub fn hosts(&self) -> Option<&hosts::NetHosts> {
        self.hosts.as_ref()
    }

    /// Client addresses of every node.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.client_addr).collect()
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let peers: Vec<String> = self.nodes[i]
            .peers
            .iter()
            .map(|&p| format!("{p}={}", self.nodes[(p - 1) as usize].peer_addr))
            .collect();
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let mut cmd = match &self.hosts {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.ns(i)]).arg(&self.cfg.bin);
                c
            }
            None => Command::new(&self.cfg.bin),
        };
        cmd.arg("node");
        if n.give_id {
            cmd.args(["--id", &n.id.to_string()]);
        }
        cmd.arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--listen-peers", &n.peer_addr.to_string()])
            .args(["--listen-clients", &n.client_addr.to_string()]);
        if n.join_via.is_none() {
            cmd.args(["--shards", &self.cfg.shards.to_string()])
                .args(["--groups", &self.cfg.groups.to_string()]);
            if let Some(keys) = &self.cfg.split_keys {
                cmd.args([
                    "--initial-split-keys",
                    &crate::config::format_split_keys(keys),
                ]);
            }
            if let Some(rf) = self.cfg.replication_factor {
                cmd.args(["--replication-factor", &rf.to_string()]);
            }
        }
        cmd.args(self.cfg.extra_args.iter());
        cmd.args([
            "--balancer",
            if self.cfg.balancer { "true" } else { "false" },
        ]);
        if !peers.is_empty() && n.join_via.is_none() {
            cmd.args(["--peers", &peers.join(",")]);
        }
        if let Some(m) = n.metrics_addr {
            cmd.args(["--metrics-addr", &m.to_string()]);
        }
        if let Some(r) = n.resp_addr {
            cmd.args(["--listen-resp", &r.to_string()]);
        }
        // Every start passes how an empty data dir may be initialised (as
        // an operator's unit file would): ignored once the dir has a store.
        if let Some(via) = n.join_via {
            cmd.args(["--join", &via.to_string()]);
        } else if n.join {
            cmd.arg("--join");
        } else {
            cmd.args(["--initial-cluster-state", "new"]);
        }
        if let Some(n) = self.cfg.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; this runs in the
            // child between fork and exec, on a struct it owns.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.cfg.die_with_parent {
            use std::os::unix::process::CommandExt;
            let parent = std::process::id();
            // SAFETY: prctl and getppid are async-signal-safe; this runs in
            // the child between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before the prctl.
                    if libc::getppid() as u32 != parent {
                        return Err(std::io::Error::other("the parent is gone"));
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .env("RUST_LOG", &self.cfg.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", self.cfg.bin.display()),
                )
            })?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Starts one more node with `--join` (no voters; the cluster adds it
    /// with AddLearner): its id.
    pub fn add_node(&mut self) -> std::io::Result<u64> {
        self.add(None, true)
    }

    /// Starts a new node that joins through node `via`'s client address
    /// (`--join ADDR`, no `--peers`), with `--id` only if `give_id`: the
    /// meta group otherwise allocates it, which must come out as the next
    /// index here (node `id` is `nodes[id - 1]`); the new node's logged id
    /// is checked by the caller through the map. Returns its index + 1.
    pub fn join_node(&mut self, via: u64, give_id: bool) -> std::io::Result<u64> {
        let addr = self.nodes[(via - 1) as usize].client_addr;
        self.add(Some(addr), give_id)
    }

    /// The node id in node `id`'s data dir (`STORE`), once written: what
    /// a node joined without `--id` was given by the meta group.
    pub fn stored_id(&self, id: u64) -> Option<u64> {
        let dir = &self.nodes[(id - 1) as usize].data_dir;
        crate::join::read_store(dir).ok().flatten().map(|s| s.node)
    }

    fn add(&mut self, join_via: Option<SocketAddr>, give_id: bool) -> std::io::Result<u64> {
        let shards = self.cfg.shards as u16;
        let id = self.nodes.len() as u64 + 1;
        let host = match &mut self.hosts {
            Some(h) => {
                let i = h.add_host().map_err(std::io::Error::other)?;
                debug_assert_eq!(i as u64, id - 1, "node id = host + 1");
                Some(h.addr(i))
            }
            None => None,
        };
        let (peer_addr, client_addr, metrics_addr, resp_addr) = node_addrs(host, shards)?;
        let log = self
            .cfg
            .log_dir
            .clone()
            .unwrap_or_else(|| self.root.path().to_path_buf())
            .join(format!("node-{id}.log"));
        self.nodes.push(LocalNode {
            id,
            peer_addr,
            client_addr,
            data_dir: self.root.path().join(format!("node-{id}")),
            log,
            metrics_addr: self.cfg.metrics.then_some(metrics_addr),
            resp_addr: self.cfg.resp.then_some(resp_addr),
            join: true,
            join_via,
            give_id,
            peers: self.nodes.iter().map(|n| n.id).collect(),
            child: None,
        });
        self.spawn(self.nodes.len() - 1)?;
        Ok(id)
    }

    /// The process id of node `id`, if it is running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[(id - 1) as usize].child.as_ref().map(|c| c.id())
    }

    /// SIGKILL node `id` (index `id - 1`).
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes[(id - 1) as usize].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to node `id` (a pause or a graceful stop).
    pub fn signal(&self, id: u64, sig: i32) {
        if let Some(c) = &self.nodes[(id - 1) as usize].child {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc_kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGTERM node `id` and wait for it: its exit status.
    pub fn stop(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        self.signal(id, 15);
        let c = self.nodes[(id - 1) as usize].child.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.nodes[(id - 1) as usize].child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                self.kill(id);
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts node `id` again on its data directory.
    pub fn restart(&mut self, id: u64) -> std::io::Result<()> {
        self.kill(id);
        self.spawn((id - 1) as usize)
    }

    /// Whether node `id` is running (not exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.nodes[(id - 1) as usize].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until every group has a leader and the client knows every
    /// running node, or `timeout`; the leaders. A node that exits meanwhile
    /// (a refused setting, a port in use) ends the wait at once, with the
    /// end of its log.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Vec<u64>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self
                .nodes
                .iter()
                .find(|n| n.child.as_ref().is_some_and(|c| exited(c.id())))
            {
                return Err(format!(
                    "node {} exited before the cluster was ready; the end of its log ({}):\n{}",
                    n.id,
                    n.log.display(),
                    self.log_tail(n.id, 20)
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_ready(left.min(Duration::from_secs(1))) {
                Ok(leaders) => return Ok(leaders),
                Err(last) if left <= Duration::from_secs(1) => {
                    return Err(format!("cluster not ready within {timeout:?}: {last}"))
                }
                Err(_) => {}
            }
        }
    }

    /// Starts the nodes and waits up to `timeout` until they are ready
    /// ([`wait_ready`](Self::wait_ready)); an error says why, with the end
    /// of node 1's log. Tests start their clusters with it.
    pub fn start_ready(cfg: LocalClusterConfig, timeout: Duration) -> Result<LocalCluster, String> {
        let c = LocalCluster::start(cfg).map_err(|e| format!("nodes start: {e}"))?;
        match c.wait_ready(timeout) {
            Ok(_) => Ok(c),
            Err(e) => Err(format!("{e}\nnode 1 log:\n{}", c.log_tail(1, 30))),
        }
    }

    /// One slice of [`LocalCluster::wait_ready`]: the leaders, or what was
    /// seen last.
    fn try_ready(&self, timeout: Duration) -> Result<Vec<u64>, String> {
        let addrs: Vec<SocketAddr> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.client_addr)
            .collect();
        let groups = self.cfg.groups;
        run_on_executor(move || async move {
            let deadline = Instant::now() + timeout;
            let mut last = String::from("no answer yet");
            while Instant::now() < deadline {
                let mut cfg = ClientConfig::new(addrs.clone());
                cfg.op_timeout_ms = 1000;
                match Client::connect(cfg).await {
                    Ok(c) if addrs.iter().all(|a| c.nodes().iter().any(|(_, x)| x == a)) => {
                        // The bootstrap's groups (ranges split off since
                        // come after them).
                        let mut leaders = c.leaders();
                        leaders.truncate(groups as usize);
                        if leaders.len() == groups as usize && leaders.iter().all(|&l| l != 0) {
                            return Ok(leaders);
                        }
                        let led = leaders.iter().filter(|&&l| l != 0).count();
                        last = if leaders.len() <= 16 {
                            format!("leaders so far: {leaders:?}")
                        } else {
                            format!("{led} of {groups} groups have a leader")
                        };
                    }
                    Ok(c) => last = format!("reached {} of {} nodes", c.nodes().len(), addrs.len()),
                    Err(e) => last = e.to_string(),
                }
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            Err(last)
        })
    }

    /// `GET /metrics` of node `id` (empty if it has no metrics address).
    pub fn metrics(&self, id: u64) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let Some(a) = self.nodes[(id - 1) as usize].metrics_addr else {
            return Ok(String::new());
        };
        let mut s = std::net::TcpStream::connect(a)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }

    /// The sum over its series (shards, labels) of node `id`'s metric
    /// `name` (a counter or gauge, e.g. `ringraft_snapshots_taken_total`),
    /// as published last (once a second); 0 if the node publishes no
    /// metrics or none of that name.
    pub fn metric_sum(&self, id: u64, name: &str) -> f64 {
        let text = self.metrics(id).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[(id - 1) as usize].log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Runs `f` on a fresh glommio executor thread and returns its output.
pub fn run_on_executor<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("an executor")
        .join()
        .expect("the executor ran")
}

/// Files [`SmallFs::fill`] writes at most, filling again while a node
/// frees space under it.
const FILL_ATTEMPTS_MAX: usize = 4;

/// A small ext4 image loop-mounted in a temporary directory, for tests of
/// full disks (needs root and loop devices: `new` says why when it cannot).
/// Unmounted on drop.
pub struct SmallFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// An image of `mib` MiB, formatted and mounted.
    pub fn new(mib: u64) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        // -m 0: no blocks reserved for root (the nodes may run as root).
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img))?;
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))?;
        Ok(SmallFs { mnt, _dir: dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Bytes an unprivileged writer can still allocate.
    pub fn free_bytes(&self) -> u64 {
        crate::storage::fs_free_bytes(&self.mnt)
            .unwrap_or_else(|e| panic!("statvfs {}: {e}", self.mnt.display()))
    }

    /// Takes all but `keep` free bytes with a really allocated file (a
    /// sparse one takes no space); `unfill` gives them back.
    pub fn fill(&self, keep: u64) -> Result<(), String> {
        // A node on the file system may free space while it is filled (a
        // WAL segment or snapshot file removed: chaos CI once failed here
        // with "No space left on device" and more than 1 MiB free after):
        // filled again, into another file, until little enough is left.
        let mut last = Ok(());
        for i in 0..FILL_ATTEMPTS_MAX {
            if i > 0 && self.free_bytes() <= keep + (1 << 20) {
                return Ok(());
            }
            let filler = self.mnt.join(format!("filler.{i}"));
            let len = self.free_bytes().saturating_sub(keep).max(4096);
            last = match sh(Command::new("fallocate")
                .args(["-l", &len.to_string()])
                .arg(&filler))
            {
                // The file system's own blocks for the file's extents may
                // make the last few KiB fail: what counts is what is left.
                Err(_) if self.free_bytes() <= keep + (1 << 20) => return Ok(()),
                r => r,
            };
            if last.is_ok() && self.free_bytes() <= keep + (1 << 20) {
                return Ok(());
            }
        }
        last
    }

    pub fn unfill(&self) {
        for i in 0..FILL_ATTEMPTS_MAX {
            let _ = std::fs::remove_file(self.mnt.join(format!("filler.{i}")));
        }
    }

    /// Freezes the filesystem (`fsfreeze -f`): every write and sync to it
    /// waits until [`SmallFs::thaw`]. A disk that hangs without failing.
    pub fn freeze(&self) -> Result<(), String> {
        sh(Command::new("fsfreeze").arg("-f").arg(&self.mnt))
    }

    pub fn thaw(&self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mnt).output();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        self.thaw();
        let _ = Command::new("umount").arg(&self.mnt).output();
    }
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let o = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?}: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Whether child process `pid` has exited (a zombie not yet reaped: its
/// state in `/proc/PID/stat` is `Z`), without reaping it.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}
