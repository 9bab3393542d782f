//! `ringraft node ...`: run a node. `ringraft ctl ...`: talk to a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use glommio::{LocalExecutorBuilder, Placement as GPlacement};
use ringraft::client::{Client, ClientConfig};
use ringraft::config::{shard_addr, NodeSettings, Placement, ValidConfig};
use ringraft::identity;
use ringraft::shard::Shard;
use ringraft::wire::{Op, ReadMode, Reply};

#[derive(Parser)]
#[command(
    name = "ringraft",
    version,
    about = "A thread-per-core multi-Raft replicated key-value node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (logs: RUST_LOG, default info).
    Node {
        /// A TOML file with the same settings (command-line values win).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log lines as text, or as one JSON object per line (for log
        /// pipelines: timestamp, level, target, fields).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        #[command(flatten)]
        settings: Box<NodeSettings>,
    },
    /// Talk to a cluster.
    Ctl {
        /// Client addresses of the nodes (their --listen-clients); one
        /// reachable node is enough.
        #[arg(
            long,
            value_delimiter = ',',
            env = "RINGRAFT_ENDPOINTS",
            default_value = ringraft::config::LISTEN_CLIENTS_DEFAULT
        )]
        cluster: Vec<String>,
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// Read mode of `get`: linearizable, lease or stale.
        #[arg(long, default_value = "linearizable")]
        read_mode: String,
        /// How long one command may take, retries included, in
        /// milliseconds (a write not answered by then has an unknown
        /// outcome).
        #[arg(long, default_value_t = 10_000)]
        op_timeout_ms: u64,
        /// Output: `table` (lines for people) or `json` (one JSON document
        /// for scripts, as etcdctl's `-w json`), for every command; bytes
        /// that are not UTF-8 come as `{"hex": "..."}`. Commands that
        /// report steps as they go (snapshot, moves, decommission, ...)
        /// print `{"exit", "error", "steps": [{"ok", "message", ...}]}`
        /// once they end. Exit codes are the same for both.
        #[arg(short = 'w', long = "write-out", default_value = "table", value_parser = ["table", "json"])]
        write_out: String,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell): `ringraft completions bash > /etc/bash_completion.d/ringraft`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `ringraft man > ringraft.1 && man ./ringraft.1`.
    Man,
}

/// `ctl cas`'s arguments.
#[derive(clap::Args)]
struct CasArgs {
    key: String,
    /// The new value (not with --delete).
    value: Option<String>,
    /// The value KEY must hold.
    #[arg(long, conflicts_with = "absent")]
    expect: Option<String>,
    /// KEY must hold nothing.
    #[arg(long)]
    absent: bool,
    /// Remove KEY instead of setting it.
    #[arg(long, conflicts_with = "value")]
    delete: bool,
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Ask every node of the cluster map whether it answers (a ping to
    /// its shard 0, asked again until --op-timeout-ms): one line per
    /// node, `healthy` with the time it took or `unhealthy` with why.
    /// Exit 1 if any node did not answer.
    Health,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Store VALUE under KEY (`-`: the value is read from stdin, bytes
    /// as they are).
    Put { key: String, value: String },
    /// `put KEY -` once its value was read from stdin.
    #[command(skip)]
    PutBytes { key: String, value: Vec<u8> },
    /// Compare-and-swap, atomically: set KEY to VALUE (or, with
    /// --delete, remove it) only if it holds --expect OLD (or, with
    /// --absent, nothing). Prints `swapped`, or what KEY holds instead
    /// and exits 1.
    Cas(CasArgs),
    /// The nodes as endpoints (etcdctl's `endpoint`).
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    /// Print the value of KEY, its bytes as they are, then a newline
    /// (exit 1 if absent; `-w json` for values that are not text).
    Get { key: String },
    /// Remove KEY.
    Delete { key: String },
    /// Print the pairs with START <= key < END (END empty: to the last
    /// key), one `key<TAB>value` per line (bytes as they are), in key
    /// order across every range
    /// (each range read in turn). Exit 0; if --limit cut it, a line on
    /// stderr says so (scan again from the last key printed, which comes
    /// again first).
    Scan {
        start: String,
        #[arg(default_value = "")]
        end: String,
        /// Pairs printed at most (at least 1).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// The ranges: id, start, end, epoch, replicas (replica@node/shard,
    /// role), as the nodes report them.
    Ranges,
    /// The cluster map the meta group holds: its settings, and each node
    /// (id, state, addresses, replicas and leaders it holds). Exit 1 if
    /// no leader of the meta group answers.
    Nodes,
    /// A table of groups: leader, term, commit, applied, replicas' match.
    Status,
    /// Split the range holding KEY at KEY: the range keeps the keys
    /// below KEY, a new range (its id from the meta group) holds KEY and
    /// above, with the same replicas; it serves within a round trip.
    /// Prints both ranges. Asked again, the same split is done already.
    Split { key: String },
    /// Ask GROUP's leader to hand leadership to NODE.
    TransferLeader { group: u64, node: u64 },
    /// Snapshot GROUP now on every node that has a replica of it.
    Snapshot { group: u64 },
    /// Add NODE (peer address ADDR) as a learner of one range (--range),
    /// or of every range; with --client-addr, clients find the node
    /// through the cluster map. To place a range on another node, prefer
    /// move-replica (it keeps the replication factor).
    AddLearner {
        node: u64,
        addr: String,
        /// The node's client address (shard 0), e.g. 127.0.0.1:7203.
        #[arg(long, default_value = "")]
        client_addr: String,
        /// Only this range (default: every range).
        #[arg(long)]
        range: Option<u64>,
    },
    /// Promote learner NODE to voter, in one range (--range) or every
    /// range.
    Promote {
        node: u64,
        /// Only this range (default: every range).
        #[arg(long)]
        range: Option<u64>,
    },
    /// Move RANGE's replica on node FROM to node TO: TO is added as a
    /// learner, promoted once caught up, given the leadership if FROM
    /// leads, then FROM is removed. The range never has fewer voters than
    /// the replication factor; asking again resumes a move cut short.
    MoveReplica {
        range: u64,
        from: u64,
        to: u64,
        /// TO's peer address (its --listen-peers), if the range's leader
        /// may not know it (a node that joined).
        #[arg(long, default_value = "")]
        peer_addr: String,
    },
    /// Move every replica on node OLD to node NEW (move-replica for each
    /// range OLD has a replica of): how a dead or wiped node is replaced
    /// by a new one started with --join. Exit 1 if a move failed (asking
    /// again goes on).
    ReplaceNode {
        old: u64,
        new: u64,
        /// NEW's peer address (its --listen-peers), if the ranges' leaders
        /// may not know it.
        #[arg(long, default_value = "")]
        peer_addr: String,
    },
    /// Drain NODE for good: mark it decommissioning in the cluster map, so
    /// the balancer moves its leaders and then its replicas to active nodes
    /// (and this command its meta group replica, if it has one); wait
    /// until it holds none, then mark it decommissioned (its id is never
    /// used again) and say it may be stopped. Exit 1 if it still holds
    /// replicas after --wait-secs (asking again goes on waiting).
    Decommission {
        node: u64,
        /// How long to wait for the drain, in seconds (0: mark it and
        /// return).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Remove NODE from one range (--range) or every range that has a
    /// replica on it. A range that would be left with fewer voters than
    /// the replication factor refuses (use move-replica or replace-node),
    /// unless --below-replication-factor.
    RemoveNode {
        node: u64,
        /// Only this range (default: every range).
        #[arg(long)]
        range: Option<u64>,
        /// Shrink ranges below the replication factor on purpose (a dead
        /// node, and no other node to move its replicas to).
        #[arg(long)]
        below_replication_factor: bool,
    },
    /// Fault injection (nodes started with --fault-injection): NODE drops
    /// every Raft message to and from the given peers, on every shard,
    /// until `ctl heal NODE`. Exit 1 if a shard refused.
    Isolate {
        node: u64,
        /// Peer node ids, comma-separated (default: every other node the
        /// cluster map names).
        #[arg(long, value_delimiter = ',')]
        from: Vec<u64>,
    },
    /// Fault injection: NODE's traffic flows again (undoes `ctl isolate`).
    Heal { node: u64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Node {
            config,
            log_format,
            settings,
        } => run_node(config, &log_format, *settings),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ringraft", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                // A reader that went away (`ringraft man | head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringraft man: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Ctl {
            cluster,
            cluster_id,
            read_mode,
            op_timeout_ms,
            write_out,
            cmd,
        } => run_ctl(
            cluster,
            cluster_id,
            &read_mode,
            op_timeout_ms,
            write_out == "json",
            cmd,
        ),
    }
}

/// Lines of log a node buffers for its writer thread; past it, the
/// logging thread waits (no line is dropped).
pub const LOG_LINES_BUFFERED_MAX: usize = 128_000;

/// Logs go to stderr through a writer thread (`tracing_appender`): a shard
/// formats a line and queues it, and never waits on the write itself (a
/// blocking syscall on an executor thread). 100,000 groups starting log
/// ~3 lines each per node; written from the shards, they stalled the
/// turns until elections timed out over and over (issue #16). The guard
/// flushes what is queued when dropped.
fn init_logs(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = log_writer(std::io::stderr(), LOG_LINES_BUFFERED_MAX);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    guard
}

/// The writer thread in front of `out`: at most `lines_max` lines queued,
/// then the logging thread waits (lossless).
fn log_writer<W: std::io::Write + Send + 'static>(
    out: W,
    lines_max: usize,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(lines_max)
        .thread_name("ringraft-log")
        .finish(out)
}

fn run_node(config: Option<PathBuf>, log_format: &str, settings: NodeSettings) -> ExitCode {
    let _logs = init_logs(log_format == "json");
    let settings = match config {
        Some(p) => match NodeSettings::from_file(&p) {
            Ok(file) => settings.or(file),
            Err(e) => {
                eprintln!("ringraft: {e}");
                return ExitCode::from(2);
            }
        },
        None => settings,
    };
    // `--join ADDR`: ask the cluster for this node's id, peers and the
    // cluster-wide settings (a restart: its peers' addresses).
    let settings = match ringraft::join::resolve(settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringraft: {e}");
            let usage = matches!(e, ringraft::join::JoinError::Usage(_));
            return ExitCode::from(if usage { 2 } else { 1 });
        }
    };
    let cfg = match settings.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringraft: {e}");
            return ExitCode::from(2);
        }
    };
    let (stop, mut stop_sockets) = match NodeStop::new(cfg.shards) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringraft: cannot handle SIGTERM and SIGINT: {e}");
            return ExitCode::from(1);
        }
    };
    let fds = match ensure_fd_budget(cfg.fd_budget()) {
        Ok(f) => f,
        Err((limit, hard)) => {
            eprintln!(
                "ringraft: this node may need {} file descriptors at once ({} client connections by \
                 --client-conns-max, {} shards, {} peers, the WAL and snapshots), but its limit is \
                 {limit} (hard limit {hard}; `ulimit -n`): raise the limit, or lower --client-conns-max",
                cfg.fd_budget(),
                cfg.client_conns_max,
                cfg.shards,
                cfg.peers.len()
            );
            return ExitCode::from(2);
        }
    };
    // Held until the process exits: one process per data dir.
    let lock = match identity::lock_data_dir(&cfg.data_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ringraft: {e}");
            return ExitCode::from(1);
        }
    };
    let (store, created) = match identity::open_store(
        &cfg.data_dir,
        &lock,
        cfg.cluster_id,
        cfg.id,
        cfg.shards,
        cfg.bootstrap,
        identity::InitialRanges {
            groups: cfg.groups as u32,
            cuts: cfg.cuts,
            replication_factor: cfg.replication_factor,
        },
    ) {
        Ok((store, created)) => {
            if created {
                tracing::info!(
                    incarnation = format_args!("{:#x}", store.incarnation),
                    bootstrap = ?cfg.bootstrap,
                    "initialised a new store in the data dir"
                );
            }
            (store, created)
        }
        Err(e) => {
            eprintln!("ringraft: {e}");
            let usage = matches!(
                e,
                identity::IdentityError::Empty { .. }
                    | identity::IdentityError::Mismatch { .. }
                    | identity::IdentityError::Refounded { .. }
            );
            return ExitCode::from(if usage { 2 } else { 1 });
        }
    };
    let founders = cfg.peers.len() + 1;
    if created && !store.joined && cfg.replication_factor as usize > founders {
        tracing::warn!(
            replication_factor = cfg.replication_factor,
            founders,
            "--replication-factor {} is more than the {founders} founding nodes (this node and its --peers): each range starts with {founders} replicas; once nodes join, the balancer adds replicas up to the factor (or by hand: ctl add-learner NODE ADDR --range R, then ctl promote NODE --range R)",
            cfg.replication_factor
        );
    }
    if !created {
        let stored = u64::from(store.groups);
        if stored != 0 && stored != cfg.groups {
            tracing::warn!(
                stored,
                given = cfg.groups,
                "this data dir's cluster was bootstrapped with {stored} groups; --groups is ignored"
            );
        } else if store.cuts != 0 && store.cuts != cfg.cuts {
            tracing::warn!("this data dir's key ranges and their placement were fixed when its cluster was bootstrapped (or by an older version): --initial-split-keys and --replication-factor given now are ignored, and --peers only gives addresses");
        }
    }
    tracing::info!(
        node = cfg.id,
        shards = cfg.shards,
        groups = if store.groups != 0 { u64::from(store.groups) } else { cfg.groups },
        peers = ?cfg.peers,
        data_dir = %cfg.data_dir.display(),
        incarnation = format_args!("{:#x}", store.incarnation),
        fd_budget = cfg.fd_budget(),
        fd_limit = fds,
        "starting"
    );
    let hub = match cfg.metrics_addr {
        Some(a) => {
            let hub = ringraft::metrics::MetricsHub::new(cfg.shards);
            match hub.serve(a, cfg.id) {
                Ok(bound) => tracing::info!(addr = %bound, "metrics on GET /metrics"),
                Err(e) => {
                    eprintln!("ringraft: --metrics-addr {a}: {e}");
                    return ExitCode::from(2);
                }
            }
            Some(hub)
        }
        None => None,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for s in 0..cfg.shards {
        let placement = match cfg.placement {
            Placement::Pinned => GPlacement::Fixed(cfg.cpu_of(s, cpus)),
            Placement::Unbound => GPlacement::Unbound,
        };
        let cfg = cfg.clone();
        let shard_stop = stop.clone();
        let stop_socket = stop_sockets.remove(0);
        let hub = hub.clone();
        // No spin before parking: measured on 2 CPUs (3 nodes, 1x1 writes),
        // spinning 20-100 us raised p50 from 0.56 ms to 0.63-0.71 ms.
        // The shard's helper threads (encoding and decoding snapshots,
        // and glommio's renames and removals: `HELPER_THREADS`) run on
        // any CPU, not on the shard's own, where they would take turns
        // with the executor they unburden.
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{s}"))
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(
                ringraft::shard::HELPER_THREADS,
            ))
            .spawn(move || async move {
                let mut guard = StopUnlessClean(shard_stop.clone(), false);
                let r = run_shard(cfg, s, store, (shard_stop, stop_socket), hub).await;
                guard.1 = r.is_ok();
                r
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("ringraft: cannot start shard {s}: {e}");
                stop.stop();
                return ExitCode::from(1);
            }
        }
    }
    let mut ok = true;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("{e}");
                eprintln!("ringraft: {e}");
                ok = false;
            }
            Err(e) => {
                eprintln!("ringraft: a shard panicked: {e:?}");
                ok = false;
            }
        }
    }
    drop(lock);
    if ok {
        tracing::info!("exited cleanly");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// How a node stops: a flag every shard reads, set by SIGTERM or SIGINT
/// or by a shard that failed, and per shard a socket written to at the
/// same time (by the signal handler itself: `signal_hook::low_level::pipe`)
/// that wakes the shard's stop task. The shards polled the flag every
/// 50 ms before, 20 wake-ups a second of an idle node for nothing
/// (issue #22).
struct NodeStop {
    flag: Arc<AtomicBool>,
    /// Per shard, the writing end of its wake-up socket (non-blocking).
    wake: Vec<std::os::unix::net::UnixStream>,
}

impl NodeStop {
    /// The stop of a node of `shards` shards, its signal handlers
    /// registered, and each shard's reading end of its socket (in shard
    /// order).
    fn new(shards: u32) -> std::io::Result<(Arc<NodeStop>, Vec<std::os::unix::net::UnixStream>)> {
        let flag = Arc::new(AtomicBool::new(false));
        let (mut wake, mut read) = (Vec::new(), Vec::new());
        for _ in 0..shards {
            let (w, r) = std::os::unix::net::UnixStream::pair()?;
            w.set_nonblocking(true)?;
            r.set_nonblocking(true)?;
            wake.push(w);
            read.push(r);
        }
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // The flag first: a shard woken by its socket finds it set.
            signal_hook::flag::register(sig, flag.clone())?;
            for w in &wake {
                signal_hook::low_level::pipe::register(sig, w.try_clone()?)?;
            }
        }
        Ok((Arc::new(NodeStop { flag, wake }), read))
    }

    fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        for w in &self.wake {
            // Full (already woken) or closed (that shard ended: EPIPE, no
            // SIGPIPE, which Rust programs ignore): either way nothing
            // more to do.
            let _ = std::io::Write::write(&mut &*w, &[1]);
        }
    }

    fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// How often a shard polls the node's stop flag, in ms, if its stop socket
/// failed (never otherwise: the socket wakes it).
const STOP_POLL_MS: u64 = 50;

/// Resolves once `stop` is set: woken by the shard's socket (`socket`, the
/// reading end [`NodeStop::new`] gave), polling the flag every
/// [`STOP_POLL_MS`] only if that socket fails.
async fn wait_for_stop(stop: &NodeStop, socket: std::os::unix::net::UnixStream) {
    use futures_lite::AsyncReadExt;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is an open socket this takes over.
    let mut rx = unsafe { glommio::net::UnixStream::from_raw_fd(socket.into_raw_fd()) };
    let mut buf = [0u8; 64];
    while !stop.stopped() {
        match rx.read(&mut buf).await {
            Ok(n) if n > 0 => {}
            other => {
                tracing::warn!(?other, "the stop socket failed: polling the stop flag");
                while !stop.stopped() {
                    glommio::timer::sleep(std::time::Duration::from_millis(STOP_POLL_MS)).await;
                }
            }
        }
    }
}

/// Fail-stop, also while starting: every shard stops when the shard that
/// holds this ends with an error or a panic (dropped while unwinding), so a
/// node never runs on with some of its groups missing. `.1`: ended cleanly.
struct StopUnlessClean(Arc<NodeStop>, bool);

impl Drop for StopUnlessClean {
    fn drop(&mut self) {
        if !self.1 {
            self.0.stop();
        }
    }
}

/// Makes sure the process may open `needed` file descriptors, raising its
/// soft limit up to the hard one if needed: the limit now in force, or
/// (soft, hard) when even the hard limit is too low.
fn ensure_fd_budget(needed: usize) -> Result<u64, (u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct this function owns.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(0); // unknown: nothing to check against
    }
    let needed = needed as u64;
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < needed {
        return Err((lim.rlim_cur, lim.rlim_max));
    }
    // Some headroom, but not an unbounded hard limit (the kernel caps
    // descriptors at fs.nr_open anyway).
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max.min(needed.max(65_536)),
        rlim_max: lim.rlim_max,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err((lim.rlim_cur, lim.rlim_max));
    }
    Ok(raised.rlim_cur)
}

/// How long a shard keeps trying to bind a port that is in use, in ms: a
/// previous incarnation of this node, just killed, may hold its listening
/// sockets a little past its exit while the kernel tears its io_uring
/// down (seen restarting a node at once: "Address already in use" for a
/// port that nothing else uses). A port held longer is another process's:
/// the node then stops with the error.
const BIND_IN_USE_WAIT_MS: u64 = 3_000;

/// Between two tries to bind a port in use, in ms ([`BIND_IN_USE_WAIT_MS`]).
const BIND_RETRY_MS: u64 = 50;

/// Binds without SO_REUSEPORT (glommio's own bind sets it, which would let
/// a second, misconfigured node silently share the port), retrying a port
/// in use for up to [`BIND_IN_USE_WAIT_MS`].
async fn bind(a: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::time::Duration;
    let started = std::time::Instant::now();
    let l = loop {
        match std::net::TcpListener::bind(a) {
            Ok(l) => break l,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < Duration::from_millis(BIND_IN_USE_WAIT_MS) =>
            {
                glommio::timer::sleep(Duration::from_millis(BIND_RETRY_MS)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if started.elapsed() >= Duration::from_millis(BIND_RETRY_MS) {
        tracing::info!(addr = %a, ms = started.elapsed().as_millis() as u64, "bound after waiting for the port to be released");
    }
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(l.into_raw_fd()) })
}

async fn run_shard(
    cfg: ValidConfig,
    s: u32,
    store: identity::StoreIdentity,
    (stop, stop_socket): (Arc<NodeStop>, std::os::unix::net::UnixStream),
    hub: Option<ringraft::metrics::MetricsHub>,
) -> Result<(), String> {
    let pa = shard_addr(cfg.listen_peers, s);
    let ca = shard_addr(cfg.listen_clients, s);
    let peer_l = bind(pa)
        .await
        .map_err(|e| format!("shard {s}: listening for peers on {pa}: {e}"))?;
    let client_l = bind(ca)
        .await
        .map_err(|e| format!("shard {s}: listening for clients on {ca}: {e}"))?;
    let resp_l = match cfg.listen_resp {
        Some(r) => {
            let ra = shard_addr(r, s);
            let l = bind(ra).await.map_err(|e| {
                format!("shard {s}: listening for RESP clients on {ra} (--listen-resp): {e}")
            })?;
            Some((l, ra))
        }
        None => None,
    };
    let stop_local = std::rc::Rc::new(std::cell::Cell::new(false));
    let sc = cfg.shard(s, &store);
    let shard = Shard::open(sc.clone(), stop_local.clone(), hub)
        .await
        .map_err(|e| e.to_string())?;
    // The node's stop is shared across threads; this task sets the
    // shard's own and wakes its loop.
    let local = stop_local.clone();
    let wake = shard.waker();
    glommio::spawn_local(async move {
        wait_for_stop(&stop, stop_socket).await;
        tracing::info!(shard = s, "stopping (a signal, or another shard failed)");
        local.set(true);
        wake();
    })
    .detach();
    // The meta group's upkeep beside the shard, through this node's own
    // client port (as a client: nothing on the turn waits for it).
    let c0 = cfg.listen_clients;
    let own = if c0.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), c0.port())
    } else {
        c0
    };
    let report = ringraft::shard::run_range_reporter(
        sc.cluster,
        own,
        shard.meta_link(),
        ringraft::shard::RANGE_REPORT_INTERVAL_MS_DEFAULT,
        stop_local.clone(),
    );
    glommio::spawn_local(report).detach();
    if let Some((l, ra)) = resp_l {
        let rc = ringraft::resp::RespConfig {
            node: cfg.id,
            shard: s,
            cluster_id: cfg.cluster_id,
            own_client_addr: own,
            listen: ra,
            key_bytes_max: sc.key_bytes_max,
            value_bytes_max: sc.value_bytes_max,
            conns_max: cfg.resp_conns_max,
            password: cfg.resp_password.clone(),
        };
        tracing::info!(shard = s, resp = %ra, "serving RESP");
        glommio::spawn_local(ringraft::resp::serve(l, rc, stop_local.clone())).detach();
    }
    if s == 0 {
        let sync = ringraft::shard::run_meta_sync(
            sc,
            own,
            shard.meta_link(),
            ringraft::shard::META_RECONCILE_INTERVAL_MS_DEFAULT,
            stop_local,
        );
        glommio::spawn_local(sync).detach();
    }
    tracing::info!(shard = s, peers = %pa, clients = %ca, "serving");
    shard.run(peer_l, client_l).await.map_err(|e| e.to_string())
}

/// `println!` for ctl's output: a reader that went away (`ctl status |
/// head -3`) ends ctl quietly with exit 0 instead of a panic.
macro_rules! say {
    ($($t:tt)*) => {
        say_raw(&[format!($($t)*).as_bytes()])
    };
}

/// One line on stdout: `parts` as they are (bytes that are not UTF-8
/// too: `ctl get` prints a value as it was put), then a newline. A closed
/// pipe (`| head`) ends the process quietly; another write error ends it
/// with exit 1.
fn say_raw(parts: &[&[u8]]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = parts
        .iter()
        .try_for_each(|p| out.write_all(p))
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ringraft ctl: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Where the steps of a progress command go (the `ctl` commands that act
/// and report as they go: snapshot, transfer-leader, add-learner, promote,
/// remove-node, move-replica, replace-node, decommission, isolate, heal).
/// With `-w table`, one line each as it happens. With `-w json`, gathered
/// and printed at the end as one document:
/// `{"exit": CODE, "error": MESSAGE or null, "steps": [STEP, ...]}`, each
/// STEP `{"ok": bool, "message": the table's line, ...}` with fields naming
/// what it is about (`node`, `range`, `group`, `shard`, `from`, `to`, ...),
/// so a script can select the failed steps (`.steps[] | select(.ok |
/// not)`). The exit code is the table's.
struct Progress {
    /// `None`: lines, printed at once.
    steps: Option<std::cell::RefCell<Vec<serde_json::Value>>>,
}

impl Progress {
    fn new(json: bool) -> Progress {
        Progress {
            steps: json.then(Default::default),
        }
    }

    /// One step: `ok` (whether it went as asked), `fields` (a JSON object
    /// of what it is about) and its line for people.
    fn step(&self, ok: bool, fields: serde_json::Value, line: String) {
        let Some(steps) = &self.steps else {
            say!("{line}");
            return;
        };
        let serde_json::Value::Object(mut doc) = fields else {
            unreachable!("a step's fields are a JSON object: {fields}");
        };
        doc.insert("ok".into(), ok.into());
        doc.insert("message".into(), line.into());
        steps.borrow_mut().push(doc.into());
    }

    /// With `-w json`, the document of every step and how the command
    /// ended (the error is also said on stderr, as for `-w table`).
    fn finish(&self, outcome: &Result<u8, String>) {
        let Some(steps) = &self.steps else { return };
        let (exit, error) = match outcome {
            Ok(code) => (*code, None),
            Err(e) => (1, Some(e.as_str())),
        };
        let doc = serde_json::json!({ "exit": exit, "error": error, "steps": steps.take() });
        say!("{doc}");
    }
}

fn run_ctl(
    cluster: Vec<String>,
    cluster_id: u64,
    read_mode: &str,
    op_timeout_ms: u64,
    json: bool,
    cmd: CtlCmd,
) -> ExitCode {
    if op_timeout_ms == 0 {
        eprintln!("ringraft ctl: --op-timeout-ms 0: must be positive");
        return ExitCode::from(2);
    }
    let mut addrs = Vec::new();
    for a in &cluster {
        match std::net::ToSocketAddrs::to_socket_addrs(a.as_str()).map(|mut i| i.next()) {
            Ok(Some(x)) => addrs.push(x),
            _ => {
                eprintln!("ringraft ctl: --cluster: {a} is not an address");
                return ExitCode::from(2);
            }
        }
    }
    let mode = match read_mode {
        "linearizable" => ReadMode::Linearizable,
        "lease" => ReadMode::Lease,
        "stale" => ReadMode::Stale,
        other => {
            eprintln!("ringraft ctl: --read-mode {other}: expected linearizable, lease or stale");
            return ExitCode::from(2);
        }
    };
    // `put KEY -`: the value from stdin, read here (a blocking read has
    // no place on the executor).
    let cmd = match cmd {
        CtlCmd::Put { key, value } if value == "-" => {
            let mut v = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut v) {
                eprintln!("ringraft ctl: put {key} -: reading the value from stdin: {e}");
                return ExitCode::from(1);
            }
            CtlCmd::PutBytes { key, value: v }
        }
        cmd => cmd,
    };
    let ex = LocalExecutorBuilder::new(GPlacement::Unbound)
        .spawn(move || async move {
            let mut cfg = ClientConfig::new(addrs);
            cfg.cluster_id = cluster_id;
            cfg.read_mode = mode;
            cfg.op_timeout_ms = op_timeout_ms;
            // With -w json, a command that fails still prints a document
            // (its error), never nothing: `Progress` for the progress
            // commands, `{"exit", "error"}` for the others.
            let progress = json && !speaks_json(&cmd);
            let steps = Progress::new(progress);
            let outcome = match Client::connect(cfg).await {
                Err(e) => Err(format!("{e} (is a node running there? give its client address with --cluster or RINGRAFT_ENDPOINTS)")),
                Ok(c) if json && !progress => ctl_json(&c, cmd).await,
                Ok(c) => ctl(&c, cmd, &steps).await,
            };
            match &outcome {
                _ if progress => steps.finish(&outcome),
                Err(e) if json => say!("{}", serde_json::json!({ "exit": 1, "error": e })),
                _ => {}
            }
            outcome
        })
        .expect("an executor for ctl");
    match ex.join() {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            eprintln!("ringraft ctl: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ringraft ctl: {e:?}");
            ExitCode::from(1)
        }
    }
}

/// Whether `ctl_json` answers `cmd` (one document made for the command);
/// the others are progress commands, whose `-w json` is [`Progress`]'s.
fn speaks_json(cmd: &CtlCmd) -> bool {
    matches!(
        cmd,
        CtlCmd::Get { .. }
            | CtlCmd::Put { .. }
            | CtlCmd::PutBytes { .. }
            | CtlCmd::Delete { .. }
            | CtlCmd::Cas(_)
            | CtlCmd::Scan { .. }
            | CtlCmd::Ranges
            | CtlCmd::Nodes
            | CtlCmd::Status
            | CtlCmd::Endpoint { .. }
            | CtlCmd::Split { .. }
    )
}

/// Bytes in a JSON answer: a string if they are UTF-8, else
/// `{"hex": "..."}` (nothing lost either way).
fn json_bytes(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// A range descriptor as `ctl -w json ranges` shows it.
fn range_json(d: &ringraft::meta::RangeDesc) -> serde_json::Value {
    let replicas: Vec<_> = d
        .replicas
        .iter()
        .map(|r| {
            serde_json::json!({
                "replica": r.replica,
                "node": r.node,
                "shard": r.shard,
                "role": r.role.name(),
            })
        })
        .collect();
    serde_json::json!({
        "id": d.id,
        "start": json_bytes(&d.start),
        "end": json_bytes(&d.end),
        "version": d.epoch.version,
        "conf_ver": d.epoch.conf_ver,
        "replicas": replicas,
    })
}

/// Group `g` as node `node` answered it, as `ctl -w json status` shows it.
fn group_json(node: u64, g: &ringraft::wire::GroupStatus) -> serde_json::Value {
    let replicas: Vec<_> = g
        .replicas
        .iter()
        .map(|r| {
            serde_json::json!({
                "replica": r.replica,
                "node": r.node,
                "match": r.match_index,
                "role": r.role,
                "state": r.state,
                "unreachable": r.unreachable,
            })
        })
        .collect();
    serde_json::json!({
        "node": node,
        "group": g.group,
        "leader": g.leader,
        "term": g.term,
        "commit": g.commit,
        "applied": g.applied,
        "last_index": g.last_index,
        "quiesced": g.quiesced,
        "replicas": replicas,
    })
}

/// `ctl -w json`: the commands of [`speaks_json`], each answered with one
/// JSON document on stdout (errors still on stderr, exit codes as with
/// tables).
async fn ctl_json(c: &Client, cmd: CtlCmd) -> Result<u8, String> {
    use serde_json::json;
    let e = |e: ringraft::client::Error| e.to_string();
    let (doc, code) = match cmd {
        CtlCmd::Put { key, value } => {
            c.put(key.as_bytes(), value.as_bytes()).await.map_err(e)?;
            (json!({ "key": key, "done": true }), 0)
        }
        CtlCmd::Split { key } => {
            let d = c.split(key.as_bytes()).await.map_err(e)?;
            (
                json!({ "key": key, "range": d.parent, "new_range": d.right }),
                0,
            )
        }
        CtlCmd::PutBytes { key, value } => {
            c.put(key.as_bytes(), &value).await.map_err(e)?;
            (json!({ "key": key, "done": true }), 0)
        }
        CtlCmd::Delete { key } => {
            c.delete(key.as_bytes()).await.map_err(e)?;
            (json!({ "key": key, "done": true }), 0)
        }
        CtlCmd::Get { key } => match c.get(key.as_bytes()).await.map_err(e)? {
            Some(v) => (
                json!({ "key": key, "found": true, "value": json_bytes(&v) }),
                0,
            ),
            None => (json!({ "key": key, "found": false }), 1),
        },
        CtlCmd::Cas(a) => {
            let (swapped, now) = ctl_cas(c, &a).await?;
            let key = a.key;
            let holds = now.as_deref().map(json_bytes);
            (
                json!({ "key": key, "swapped": swapped, "holds": holds }),
                u8::from(!swapped),
            )
        }
        CtlCmd::Scan { start, end, limit } => {
            let (pairs, more) = c
                .scan(start.as_bytes(), end.as_bytes(), limit)
                .await
                .map_err(e)?;
            let pairs: Vec<_> = pairs
                .iter()
                .map(|(k, v)| json!({ "key": json_bytes(k), "value": json_bytes(v) }))
                .collect();
            (json!({ "pairs": pairs, "more": more }), 0)
        }
        CtlCmd::Ranges => {
            let gaps = c.fetch_whole_map().await;
            let ranges: Vec<_> = c.ranges().iter().map(range_json).collect();
            let gaps: Vec<_> = gaps
                .iter()
                .map(|(from, to)| json!({ "start": json_bytes(from), "end": json_bytes(to) }))
                .collect();
            let code = u8::from(!gaps.is_empty());
            (json!({ "ranges": ranges, "gaps": gaps }), code)
        }
        CtlCmd::Status => {
            let mut groups = Vec::new();
            let mut unreachable = Vec::new();
            for (node, r) in c.status().await {
                match r {
                    Ok(v) => groups.extend(v.iter().map(|g| group_json(node, g))),
                    Err(err) => unreachable.push(json!({ "node": node, "error": err.to_string() })),
                }
            }
            (json!({ "groups": groups, "unreachable": unreachable }), 0)
        }
        CtlCmd::Endpoint {
            cmd: EndpointCmd::Health,
        } => {
            let mut code = 0;
            let mut out = Vec::new();
            let mut nodes = c.nodes();
            nodes.sort_unstable();
            for (n, addr) in nodes {
                let t0 = std::time::Instant::now();
                let r = ping_until_deadline(c, n).await;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                out.push(match r {
                    Ok(()) => json!({ "node": n, "addr": addr.to_string(), "healthy": true, "ms": ms }),
                    Err(err) => {
                        code = 1;
                        json!({ "node": n, "addr": addr.to_string(), "healthy": false, "error": err.to_string() })
                    }
                });
            }
            (json!({ "endpoints": out }), code)
        }
        CtlCmd::Nodes => {
            let m = c
                .meta_state()
                .await
                .map_err(|e| format!("the cluster map: {e}"))?;
            let Some(set) = m.settings() else {
                return Err(format!("the meta group (leader: node {}) holds no map yet: its founders write it once one leads", c.meta_leader()));
            };
            let leaders = c.leaders();
            // Liveness is the meta leader's balancer's (not replicated):
            // null where it has none.
            let live = c.liveness().await.ok();
            let nodes: Vec<_> = m
                .nodes()
                .map(|n| {
                    let l = live
                        .as_ref()
                        .and_then(|v| v.nodes.iter().find(|l| l.node == n.id));
                    json!({
                        "id": n.id,
                        "state": n.state.to_string(),
                        "peer_addr": n.peer_addr,
                        "client_addr": n.client_addr,
                        "shards": n.shards,
                        "replicas": m.ranges().iter().filter(|d| d.replica_on(n.id).is_some()).count(),
                        "leaders": leaders.iter().filter(|&&x| x == n.id).count(),
                        "liveness": l.map(|l| l.state.to_string()),
                        "silent_ms": l.and_then(|l| (l.silent_ms != u64::MAX).then_some(l.silent_ms)),
                    })
                })
                .collect();
            let doc = json!({
                "meta_leader": c.meta_leader(),
                "settings": {
                    "replication_factor": set.replication_factor,
                    "shards": set.shards,
                    "key_bytes_max": set.key_bytes_max,
                    "value_bytes_max": set.value_bytes_max,
                },
                "ranges": m.ranges().len(),
                "liveness": live.as_ref().map(|v| json!({
                    "round_age_ms": v.round_age_ms,
                    "dead_node_timeout_ms": v.dead_node_timeout_ms,
                })),
                "nodes": nodes,
            });
            (doc, 0)
        }
        _ => unreachable!("run_ctl answers the others with Progress (speaks_json)"),
    };
    say!("{doc}");
    Ok(code)
}

/// `ctl cas`'s swap, for both outputs: (swapped, what KEY holds).
async fn ctl_cas(c: &Client, a: &CasArgs) -> Result<(bool, Option<bytes::Bytes>), String> {
    let (key, value, expect) = (&a.key, &a.value, &a.expect);
    let (absent, delete) = (a.absent, a.delete);
    if expect.is_none() && !absent {
        return Err(format!(
            "cas {key}: say what it must hold: --expect OLD, or --absent"
        ));
    }
    if value.is_none() && !delete {
        return Err(format!(
            "cas {key}: give the new value, or --delete to remove it"
        ));
    }
    c.cas(
        key.as_bytes(),
        expect.as_deref().map(str::as_bytes),
        value.as_deref().map(str::as_bytes),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Pings node `n` until it answers or `--op-timeout-ms` passes: a busy
/// node that misses one attempt is slow, not down.
async fn ping_until_deadline(c: &Client, n: u64) -> Result<(), ringraft::client::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(c.op_timeout_ms());
    loop {
        match c.ping(n).await {
            Err(_) if std::time::Instant::now() < deadline => {
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await
            }
            r => return r,
        }
    }
}

/// `ctl` with `-w table` (every command), and the progress commands with
/// `-w json` (their steps go to `p`).
async fn ctl(c: &Client, cmd: CtlCmd, p: &Progress) -> Result<u8, String> {
    use serde_json::json;
    let e = |e: ringraft::client::Error| e.to_string();
    match cmd {
        CtlCmd::Put { key, value } => {
            c.put(key.as_bytes(), value.as_bytes()).await.map_err(e)?;
            Ok(0)
        }
        CtlCmd::PutBytes { key, value } => {
            c.put(key.as_bytes(), &value).await.map_err(e)?;
            Ok(0)
        }
        CtlCmd::Cas(a) => {
            let (swapped, now) = ctl_cas(c, &a).await?;
            let key = a.key;
            if swapped {
                say!("swapped");
                Ok(0)
            } else {
                match now {
                    Some(v) => say!("not swapped: {key} holds {}", String::from_utf8_lossy(&v)),
                    None => say!("not swapped: {key} holds nothing"),
                }
                Ok(1)
            }
        }
        CtlCmd::Endpoint {
            cmd: EndpointCmd::Health,
        } => {
            let mut code = 0;
            let mut nodes = c.nodes();
            nodes.sort_unstable();
            for (n, addr) in nodes {
                let t0 = std::time::Instant::now();
                let r = ping_until_deadline(c, n).await;
                match r {
                    Ok(()) => say!(
                        "node {n} {addr}: healthy, answered in {:.1} ms",
                        t0.elapsed().as_secs_f64() * 1e3
                    ),
                    Err(err) => {
                        say!("node {n} {addr}: unhealthy: {err}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        CtlCmd::Get { key } => match c.get(key.as_bytes()).await.map_err(e)? {
            Some(v) => {
                say_raw(&[&v]);
                Ok(0)
            }
            None => {
                eprintln!("ringraft ctl: {key}: no such key");
                Ok(1)
            }
        },
        CtlCmd::Delete { key } => {
            c.delete(key.as_bytes()).await.map_err(e)?;
            Ok(0)
        }
        CtlCmd::Scan { start, end, limit } => {
            let (pairs, more) = c
                .scan(start.as_bytes(), end.as_bytes(), limit)
                .await
                .map_err(e)?;
            for (k, v) in pairs {
                say_raw(&[&k, b"\t", &v]);
            }
            if more {
                eprintln!("(more: raise --limit, or scan again from the last key printed)");
            }
            Ok(0)
        }
        CtlCmd::Ranges => {
            // Keys no node reports a serving range for (a range is reported
            // only by replicas that know a leader), after waiting up to
            // --op-timeout-ms for elections under way: exit 1, naming them.
            let gaps = c.fetch_whole_map().await;
            for d in c.ranges() {
                say!("{d}");
            }
            if gaps.is_empty() {
                return Ok(0);
            }
            eprintln!(
                "no serving range reported for keys {} (no leader, or its nodes unreachable or refused by their peers: see their logs and `ctl status`)",
                show_gaps(&gaps)
            );
            Ok(1)
        }
        CtlCmd::Nodes => {
            let m = match c.meta_state().await {
                Ok(m) => m,
                Err(e) => {
                    say!("the cluster map: {e}");
                    return Ok(1);
                }
            };
            let Some(set) = m.settings() else {
                say!("the meta group (leader: node {}) holds no map yet: its founders write it once one leads", c.meta_leader());
                return Ok(1);
            };
            say!(
                "meta leader: node {}; replication factor {}, {} shards per node, keys up to {} B, values up to {} B; {} ranges",
                c.meta_leader(),
                set.replication_factor,
                set.shards,
                set.key_bytes_max,
                set.value_bytes_max,
                m.ranges().len()
            );
            let leaders = c.leaders();
            // Liveness is the meta leader's balancer's (not replicated):
            // a note instead of the columns where it has none.
            let live = match c.liveness().await {
                Ok(v) => {
                    say!(
                        "liveness as of the balancer's round {:.1} s ago (dead after {} s silent)",
                        v.round_age_ms as f64 / 1000.0,
                        v.dead_node_timeout_ms / 1000
                    );
                    v.nodes
                }
                Err(e) => {
                    say!("liveness not known: {e}");
                    Vec::new()
                }
            };
            say!(
                "{:>6} {:>16} {:>8} {:>12} {:>8} {:>8}  {:<22} {:<22}",
                "node",
                "state",
                "liveness",
                "heartbeat",
                "replicas",
                "leaders",
                "peer address",
                "client address"
            );
            for n in m.nodes() {
                let replicas = m
                    .ranges()
                    .iter()
                    .filter(|d| d.replica_on(n.id).is_some())
                    .count();
                let led = leaders.iter().filter(|&&l| l == n.id).count();
                let or_dash = |a: &str| {
                    if a.is_empty() {
                        "-".to_string()
                    } else {
                        a.to_string()
                    }
                };
                let (liveness, heard) = match live.iter().find(|l| l.node == n.id) {
                    Some(l) if l.silent_ms == u64::MAX => (l.state.to_string(), "never".into()),
                    Some(l) => (
                        l.state.to_string(),
                        format!("{:.1} s ago", l.silent_ms as f64 / 1000.0),
                    ),
                    None => ("-".to_string(), "-".to_string()),
                };
                say!(
                    "{:>6} {:>16} {:>8} {:>12} {:>8} {:>8}  {:<22} {:<22}",
                    n.id,
                    n.state.to_string(),
                    liveness,
                    heard,
                    replicas,
                    led,
                    or_dash(&n.peer_addr),
                    or_dash(&n.client_addr)
                );
            }
            Ok(0)
        }
        CtlCmd::Status => {
            say!(
                "{:>6} {:>6} {:>7} {:>10} {:>10}  replicas (node:match (lag, state))",
                "group",
                "leader",
                "term",
                "commit",
                "applied"
            );
            let mut rows = std::collections::BTreeMap::new();
            for (node, r) in c.status().await {
                match r {
                    Ok(v) => {
                        for g in v {
                            // The leader's view wins; else the first seen.
                            let is_leader = g.leader == node;
                            let e = rows.entry(g.group).or_insert((false, g.clone()));
                            if is_leader && !e.0 {
                                *e = (true, g);
                            }
                        }
                    }
                    Err(err) => eprintln!("node {node}: {err}"),
                }
            }
            for (_, (_, g)) in rows {
                let reps: Vec<String> = g
                    .replicas
                    .iter()
                    .map(|r| {
                        let lag = g.commit.saturating_sub(r.match_index);
                        let down = if r.unreachable { ", unreachable" } else { "" };
                        format!(
                            "{}:{} ({}, lag {lag}, {}{down})",
                            r.node, r.match_index, r.role, r.state
                        )
                    })
                    .collect();
                let quiet = if g.quiesced { " [quiesced]" } else { "" };
                say!(
                    "{:>6} {:>6} {:>7} {:>10} {:>10}  {}{quiet}",
                    g.group,
                    g.leader,
                    g.term,
                    g.commit,
                    g.applied,
                    reps.join(", ")
                );
            }
            Ok(0)
        }
        CtlCmd::TransferLeader { group, node } => transfer_leader(c, p, group, node).await,
        CtlCmd::Split { key } => {
            let d = c.split(key.as_bytes()).await.map_err(e)?;
            say!(
                "range {} split at {key}: range {} holds {key} and above",
                d.parent,
                d.right
            );
            Ok(0)
        }
        CtlCmd::Snapshot { group } => {
            let mut code = 0;
            let mut taken = 0;
            for (n, _) in c.nodes() {
                match c.admin(n, group, Op::Snapshot).await {
                    Ok(Reply::Done) => {
                        taken += 1;
                        let doc = json!({ "node": n, "range": group, "taken": true });
                        p.step(true, doc, format!("node {n}: snapshot taken"))
                    }
                    // Ranges live on some of the nodes.
                    Err(ringraft::client::Error::Server(
                        ringraft::wire::ClientError::NotHosted { .. },
                    )) => {
                        let doc =
                            json!({ "node": n, "range": group, "taken": false, "hosted": false });
                        p.step(
                            true,
                            doc,
                            format!("node {n}: no replica of range {group} here"),
                        )
                    }
                    Ok(r) => {
                        let doc = json!({ "node": n, "range": group, "taken": false });
                        p.step(false, doc, format!("node {n}: {r:?}"));
                        code = 1;
                    }
                    Err(err) => {
                        let doc = json!({ "node": n, "range": group, "taken": false });
                        p.step(false, doc, format!("node {n}: {err}"));
                        code = 1;
                    }
                }
            }
            if taken == 0 {
                // No node hosts it: no such range.
                return Err(format!(
                    "no node has a replica of range {group} (`ctl ranges` lists them)"
                ));
            }
            Ok(code)
        }
        CtlCmd::AddLearner {
            node,
            addr,
            client_addr,
            range,
        } => {
            let op = Op::AddLearner {
                node,
                peer_addr: addr,
                client_addr,
            };
            admin_all(c, p, range, op).await
        }
        CtlCmd::Promote { node, range } => admin_all(c, p, range, Op::Promote { node }).await,
        CtlCmd::ReplaceNode {
            old,
            new,
            peer_addr,
        } => replace_node(c, p, old, new, &peer_addr).await,
        CtlCmd::Decommission { node, wait_secs } => decommission(c, p, node, wait_secs).await,
        CtlCmd::MoveReplica {
            range,
            from,
            to,
            peer_addr,
        } => {
            let doc =
                |moved: bool| json!({ "range": range, "from": from, "to": to, "moved": moved });
            match c.move_replica(range, from, to, &peer_addr).await {
                Ok(ringraft::client::MoveOutcome::Moved) => {
                    let line = format!("range {range}: moved from node {from} to node {to}");
                    p.step(true, doc(true), line);
                    Ok(0)
                }
                Ok(ringraft::client::MoveOutcome::AlreadyDone) => {
                    let line =
                        format!("range {range}: already on node {to} and not on node {from}");
                    p.step(true, doc(false), line);
                    Ok(0)
                }
                Err(e) => {
                    p.step(false, doc(false), format!("range {range}: {e}"));
                    Ok(1)
                }
            }
        }
        CtlCmd::RemoveNode {
            node,
            range,
            below_replication_factor,
        } => {
            let op = Op::RemoveNode {
                node,
                below_replication_factor,
            };
            admin_all(c, p, range, op).await
        }
        CtlCmd::Isolate { node, from } => {
            let peers = if from.is_empty() {
                c.nodes()
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|&n| n != node)
                    .collect()
            } else {
                from
            };
            isolate(c, p, node, peers).await
        }
        CtlCmd::Heal { node } => isolate(c, p, node, Vec::new()).await,
    }
}

/// `ctl replace-node OLD NEW`: every range with a replica on `old` moved
/// to `new`, one after the other (a move seeds a learner with a snapshot:
/// one at a time keeps the leaders' shards responsive).
async fn replace_node(
    c: &Client,
    p: &Progress,
    old: u64,
    new: u64,
    peer_addr: &str,
) -> Result<u8, String> {
    use serde_json::json;
    // Every range, not only those whose leader is known right now: a
    // range the dead node led is reported once it has elected another.
    let gaps = c.fetch_whole_map().await;
    if !gaps.is_empty() {
        return Err(format!(
            "no serving range reported for keys {}: a range there has no leader (fewer than a majority of its replicas up?) or its nodes are unreachable; nothing was moved. See `ctl status` and try again",
            show_gaps(&gaps)
        ));
    }
    let ranges: Vec<u64> = c
        .ranges()
        .into_iter()
        .filter(|d| d.replica_on(old).is_some())
        .map(|d| d.id)
        .collect();
    let mut code = 0;
    // The meta group first: its voters are few, and a dead one of them
    // counts against its quorum until replaced.
    match c.move_meta_replica(old, new, peer_addr).await {
        Ok(ringraft::client::MoveOutcome::Moved) => p.step(
            true,
            json!({ "meta": true, "from": old, "to": new, "moved": true }),
            format!("meta group: on node {new}, not on node {old}"),
        ),
        Ok(_) => {}
        Err(e) => {
            let doc = json!({ "meta": true, "from": old, "to": new, "moved": false });
            p.step(false, doc, format!("meta group: {e}"));
            code = 1;
        }
    }
    if ranges.is_empty() {
        p.step(
            true,
            json!({ "from": old, "to": new }),
            format!("node {old} holds no replica of any range the nodes report: nothing to move"),
        );
        return Ok(code);
    }
    for r in ranges {
        let doc = |moved: bool| json!({ "range": r, "from": old, "to": new, "moved": moved });
        match c.move_replica(r, old, new, peer_addr).await {
            Ok(_) => p.step(
                true,
                doc(true),
                format!("range {r}: on node {new}, not on node {old}"),
            ),
            Err(e) => {
                p.step(false, doc(false), format!("range {r}: {e}"));
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `ctl decommission NODE` (see `CtlCmd::Decommission`). CockroachDB's
/// `node decommission`: the state change is the operator's, the moves the
/// balancer's (src/meta/planner.rs drains a decommissioning node, leaders
/// first).
async fn decommission(c: &Client, p: &Progress, node: u64, wait_secs: u64) -> Result<u8, String> {
    use ringraft::meta::{MetaCmd, NodeState};
    use serde_json::json;
    let set = |state| MetaCmd::SetNodeState { node, state };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    // A cluster just started: its founders write the first map once the
    // meta group has a leader.
    let map = loop {
        match c.meta_state().await {
            Ok(m) if m.settings().is_some() => break m,
            _ if std::time::Instant::now() >= deadline => {
                p.step(false, json!({ "node": node }), "the cluster map: none yet (the meta group has no leader, or its founders have not written it); see `ctl status`".to_string());
                return Ok(1);
            }
            _ => glommio::timer::sleep(std::time::Duration::from_millis(200)).await,
        }
    };
    if map
        .node(node)
        .is_some_and(|n| n.state == NodeState::Decommissioned)
    {
        p.step(
            true,
            json!({ "node": node, "state": "decommissioned" }),
            format!("node {node}: decommissioned already"),
        );
        return Ok(0);
    }
    if let Err(e) = c.meta(&set(NodeState::Decommissioning)).await {
        p.step(false, json!({ "node": node }), format!("node {node}: {e}"));
        return Ok(1);
    }
    p.step(
        true,
        json!({ "node": node, "state": "decommissioning" }),
        format!("node {node}: decommissioning; the balancer moves its replicas away"),
    );
    // The meta group's replica is not the balancer's to move: hand it to
    // the active node holding fewest replicas that is not a voter (one
    // holding a learner first: the move takes that learner over). A
    // learner of it here is removed.
    let roster = c.meta_roster().await.map_err(|e| e.to_string())?;
    if roster.is_learner(node) {
        let rm = Op::RemoveNode {
            node,
            below_replication_factor: false,
        };
        if let Err(e) = c.meta_admin(rm).await {
            p.step(
                false,
                json!({ "node": node, "meta": true }),
                format!("meta group: its learner on node {node}: {e}"),
            );
            return Ok(1);
        }
        p.step(
            true,
            json!({ "node": node, "meta": true }),
            format!("meta group: its learner on node {node} removed"),
        );
    }
    let voters = &roster.voters;
    if voters.contains(&node) {
        let m = c.meta_state().await.map_err(|e| e.to_string())?;
        let to = m
            .nodes()
            .filter(|n| n.state == NodeState::Active && !voters.contains(&n.id))
            .min_by_key(|n| {
                let held = m
                    .ranges()
                    .iter()
                    .filter(|d| d.replica_on(n.id).is_some())
                    .count();
                (!roster.is_learner(n.id), held, n.id)
            })
            .map(|n| n.id);
        match to {
            Some(to) => match c.move_meta_replica(node, to, "").await {
                Ok(_) => p.step(
                    true,
                    json!({ "meta": true, "from": node, "to": to, "moved": true }),
                    format!("meta group: on node {to}, not on node {node}"),
                ),
                Err(e) => {
                    p.step(
                        false,
                        json!({ "meta": true, "from": node, "to": to, "moved": false }),
                        format!("meta group: {e}"),
                    );
                    return Ok(1);
                }
            },
            None => {
                p.step(false, json!({ "node": node, "meta": true }), format!("meta group: node {node} is one of its voters and no active node outside it can take its place; add a node (--join) and ask again"));
                return Ok(1);
            }
        }
    }
    let mut last = usize::MAX;
    loop {
        // Both views: the meta map's (which may not have every range
        // reported yet: right after a bootstrap it holds none) and the
        // ranges' own leaders' (the whole keyspace, or keep waiting).
        let gaps = c.fetch_whole_map().await;
        let on_ranges = c
            .ranges()
            .iter()
            .filter(|d| d.replica_on(node).is_some())
            .count();
        let held = match c.meta_state().await {
            Ok(m) if gaps.is_empty() && m.ranges().coverage().is_ok() => {
                m.ranges().held_by(node).max(on_ranges)
            }
            Ok(_) => usize::MAX,
            Err(e) => {
                p.step(
                    false,
                    json!({ "node": node }),
                    format!("the cluster map: {e}"),
                );
                usize::MAX
            }
        };
        if held == 0 {
            break;
        }
        if held != last && held != usize::MAX {
            p.step(
                true,
                json!({ "node": node, "replicas": held }),
                format!("node {node}: {held} ranges still have a replica on it"),
            );
            last = held;
        }
        if std::time::Instant::now() >= deadline {
            if wait_secs > 0 {
                p.step(false, json!({ "node": node, "state": "decommissioning" }), format!("node {node}: still holds replicas after {wait_secs} s; ask again to go on waiting (see `ctl nodes` and the meta leader's log)"));
            }
            return Ok(if wait_secs == 0 { 0 } else { 1 });
        }
        glommio::timer::sleep(std::time::Duration::from_millis(500)).await;
    }
    match c.meta(&set(NodeState::Decommissioned)).await {
        Ok(_) => {
            p.step(true, json!({ "node": node, "state": "decommissioned" }), format!("node {node}: decommissioned, holds no replica; it may be stopped (its id is never used again)"));
            Ok(0)
        }
        Err(e) => {
            p.step(false, json!({ "node": node }), format!("node {node}: {e}"));
            Ok(1)
        }
    }
}

/// Key intervals as `[start, end), ...` for a person (`end`: the end of
/// the keyspace).
fn show_gaps(gaps: &[(bytes::Bytes, bytes::Bytes)]) -> String {
    let show = ringraft::meta::show_key;
    gaps.iter()
        .map(|(s, e)| {
            if e.is_empty() {
                format!("[{}, end)", show(s))
            } else {
                format!("[{}, {})", show(s), show(e))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ctl isolate` / `ctl heal`: `Op::Isolate` on every shard of `node`
/// (an empty `peers` heals).
async fn isolate(c: &Client, p: &Progress, node: u64, peers: Vec<u64>) -> Result<u8, String> {
    use serde_json::json;
    if !c.nodes().iter().any(|&(n, _)| n == node) {
        let known: Vec<u64> = c.nodes().into_iter().map(|(n, _)| n).collect();
        return Err(format!(
            "node {node} is not in the cluster map (nodes {known:?})"
        ));
    }
    for s in 0..c.shards() {
        // Group s lives on shard s (there are never more shards than groups).
        let op = Op::Isolate {
            peers: peers.clone(),
        };
        match c.admin(node, u64::from(s), op).await {
            Ok(Reply::Done) => {}
            Ok(r) => {
                let doc = json!({ "node": node, "shard": s, "peers": &peers });
                p.step(false, doc, format!("node {node}, shard {s}: {r:?}"));
                return Ok(1);
            }
            Err(err) => {
                let doc = json!({ "node": node, "shard": s, "peers": &peers });
                p.step(false, doc, format!("node {node}, shard {s}: {err}"));
                return Ok(1);
            }
        }
    }
    let line = if peers.is_empty() {
        format!("node {node}: healed")
    } else {
        format!("node {node}: isolated from {peers:?}")
    };
    p.step(true, json!({ "node": node, "peers": peers }), line);
    Ok(0)
}

/// How long `ctl transfer-leader` waits for the transfer's outcome: a
/// transfer ends within an election timeout (the Raft thesis §3.10), so
/// this covers slow settings and a busy machine.
const TRANSFER_WAIT_MS: u64 = 10_000;

/// Asks `group`'s leader to hand over to `node`, then waits until the nodes
/// report `node` as the leader (exit 0) or [`TRANSFER_WAIT_MS`] pass (exit
/// 1, naming the leader then): the request only starts a transfer.
async fn transfer_leader(c: &Client, p: &Progress, group: u64, node: u64) -> Result<u8, String> {
    use serde_json::json;
    // On the group's leader, following NotLeader hints and retrying
    // through an election (the connect-time map may name a dead leader).
    if let Err(err) = c.transfer_leader(group, node).await {
        let doc = json!({ "group": group, "to": node, "leader": null });
        p.step(false, doc, format!("group {group}: {err}"));
        return Ok(1);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(TRANSFER_WAIT_MS);
    let mut seen = 0;
    loop {
        for (n, r) in c.status().await {
            let claims = r
                .iter()
                .flatten()
                .find(|g| g.group == group && g.leader == n);
            if let Some(g) = claims {
                seen = n;
                if n == node {
                    let doc = json!({ "group": group, "to": node, "leader": n, "term": g.term });
                    p.step(
                        true,
                        doc,
                        format!("group {group}: node {node} leads (term {})", g.term),
                    );
                    return Ok(0);
                }
            }
        }
        if std::time::Instant::now() > deadline {
            let now = match seen {
                0 => "no node claims to lead".to_string(),
                n => format!("node {n} leads"),
            };
            let leader = (seen != 0).then_some(seen);
            p.step(
                false,
                json!({ "group": group, "to": node, "leader": leader }),
                format!("group {group}: the transfer to node {node} did not complete within {TRANSFER_WAIT_MS} ms; {now}"),
            );
            return Ok(1);
        }
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Range ids as runs: "0..8, 9, 11".
fn show_ids(ids: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == id => *end = id,
            _ => runs.push((id, id)),
        }
    }
    runs.iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            1 => format!("{a}, {b}"),
            _ => format!("{a}..={b}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long `ctl`'s operations over every range (add-learner, promote,
/// remove-node without --range) go on: their first listing waits this long
/// for a map with no gap (a range electing), and they go on listing
/// ranges split off while they run until then; past it they stop, exit 1,
/// and name the ranges left.
const EVERY_RANGE_PATIENCE_MS: u64 = 30_000;

/// `op` on range `only`'s leader, or on every range's in turn: the ranges
/// are listed again after each pass, and those split off meanwhile are
/// asked too (`Client::ranges_left`, up to [`EVERY_RANGE_PATIENCE_MS`]).
/// A step per range, exit 1 if one failed.
async fn admin_all(c: &Client, p: &Progress, only: Option<u64>, op: Op) -> Result<u8, String> {
    // One step; whether it went as asked.
    let said = |g: u64, r: Result<Reply, ringraft::client::Error>| {
        let ok = r.is_ok();
        let doc = serde_json::json!({ "group": g });
        match r {
            Ok(_) => p.step(true, doc, format!("group {g}: done")),
            Err(err) => p.step(false, doc, format!("group {g}: {err}")),
        }
        ok
    };
    if let Some(r) = only {
        // One range named: asked even if the map has a gap elsewhere.
        if let Ok(ids) = c.range_ids().await {
            if !ids.contains(&r) {
                return Err(format!(
                    "there is no range {r}: the ranges are {} (ctl ranges)",
                    show_ids(&ids)
                ));
            }
        }
        return Ok(if said(r, c.admin_on_leader(r, op).await) {
            0
        } else {
            1
        });
    }
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(EVERY_RANGE_PATIENCE_MS);
    let mut asked = std::collections::BTreeSet::new();
    let mut code = 0;
    loop {
        let todo = match c.ranges_left(&asked, deadline).await {
            Ok(todo) => todo,
            Err(e) if asked.is_empty() => return Err(format!("listing the ranges: {e}")),
            Err(e) => {
                p.step(
                    false,
                    serde_json::json!({}),
                    format!("listing the ranges again: {e}"),
                );
                return Ok(1);
            }
        };
        if todo.is_empty() {
            return Ok(code);
        }
        for g in todo {
            if !said(g, c.admin_on_leader(g, op.clone()).await) {
                code = 1;
            }
            asked.insert(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Condvar, Mutex};

    /// (opened, bytes written)
    type GateState = Mutex<(bool, Vec<u8>)>;

    /// A sink that takes nothing until opened, then keeps every line.
    #[derive(Clone, Default)]
    struct Gate(Arc<(GateState, Condvar)>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut g = cv.wait_while(m.lock().unwrap(), |g| !g.0).unwrap();
            g.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `LOG_LINES_BUFFERED_MAX`: past that many lines queued for a writer
    /// that does not keep up, the logging thread waits; no line is
    /// dropped (a lossy queue would drop all but the first few here).
    #[test]
    fn a_full_log_queue_makes_the_logger_wait_and_loses_no_line() {
        let gate = Gate::default();
        let (writer, guard) = super::log_writer(gate.clone(), 4);
        let logger = std::thread::spawn(move || {
            let mut w = writer;
            for i in 0..200 {
                w.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
        });
        // The writer thread holds one line in the closed gate, at most 4
        // more are queued: the logger cannot have finished.
        assert!(!logger.is_finished());
        {
            let (m, cv) = &*gate.0;
            m.lock().unwrap().0 = true;
            cv.notify_all();
        }
        logger.join().unwrap();
        drop(guard);
        let text = String::from_utf8(gate.0 .0.lock().unwrap().1.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200, "lines lost");
        assert_eq!(lines[199], "line 199");
        const { assert!(super::LOG_LINES_BUFFERED_MAX >= 100_000) };
    }
}

#[cfg(test)]
mod ids_tests {
    /// Range ids print as runs, so a cluster of many ranges names them in
    /// one line.
    #[test]
    fn range_ids_print_as_runs() {
        assert_eq!(super::show_ids(&[]), "");
        assert_eq!(super::show_ids(&[0, 1, 2, 3, 5, 7, 8]), "0..=3, 5, 7, 8");
        assert_eq!(super::show_ids(&[4]), "4");
    }
}
