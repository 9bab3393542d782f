//! ringraft-load: the load generator. With no `--cluster` it starts a
//! local 3-node cluster (child `ringraft node` processes, temporary data
//! directories, free loopback ports, fsync as in production), waits for
//! every group to have a leader, runs the workload, reports, and tears the
//! cluster down.
//!
//! Closed loop by default (`--connections` × `--depth` workers, each with one
//! request in flight); `--rate` makes it open loop: each worker issues on a
//! fixed schedule and latency is measured from the intended send time
//! (coordinated omission corrected, as wrk2 does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use ringraft::check::linearizability::{self as lin, Op as CheckOp, OpKind};
use ringraft::client::{Client, ClientConfig, Error};
use ringraft::local_cluster::{LocalCluster, LocalClusterConfig};
use ringraft::wire::{ClientError, ReadMode};
use ringraft_tools::cpu;
use ringraft_tools::etcd::EtcdConn;
use ringraft_tools::report::{hgrm, new_histogram, table_header, Latency};
use ringraft_tools::target::{RespConn, Target};
use ringraft_tools::workload::{key_bytes, value_bytes, KeyDist, Keys, Rng, ValueSize, Zipf};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ringraft-load",
    version,
    about = "Load generator for ringraft (starts a local 3-node cluster unless --cluster is given)"
)]
struct Args {
    /// Client addresses of an existing cluster (ADDR,...); none: start a
    /// local cluster.
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// The `ringraft` binary for the local cluster (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Local cluster: nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Local cluster: shards per node [default: CPUs / nodes, at least 1 and
    /// at most --groups: the nodes share this box's cores, one executor per
    /// core in all]
    #[arg(long)]
    shards: Option<u32>,
    /// Local cluster: ranges (one Raft group each) the keyspace starts
    /// cut into, at evenly spaced keys of this run's key generator, so a
    /// run starts balanced (`--ranges` is the same). Ranges split further
    /// by size while it runs (the nodes' --range-split-bytes), and by load
    /// if --node-bin's nodes set --range-split-qps (off by default).
    #[arg(long, alias = "ranges", default_value_t = 8)]
    groups: u64,
    /// Local cluster: run the balancer (the nodes' `--balancer`), as a
    /// production cluster does: ranges split during the run then spread
    /// over the nodes (replicas, then leaders, evened out per node; the
    /// end of the run prints where they are). Off by default, so a run
    /// measures a still cluster: its pre-split ranges are placed evenly
    /// from the start.
    #[arg(long)]
    balancer: bool,
    /// Local cluster: replicas of each range (each range on this many of
    /// the --nodes) [default: the node's, 3]
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Reads: linearizable (ReadIndex), lease, or stale.
    #[arg(long, default_value = "linearizable")]
    read_mode: String,
    /// Client connections (each its own client and sockets).
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 16)]
    depth: u32,
    /// Seconds of measurement (after the warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured operations instead of --duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Seconds of warmup, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop at this many operations per second in total.
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// uniform, zipf:THETA (0 < THETA < 1) or sequential.
    #[arg(long, default_value = "uniform")]
    key_dist: KeyDist,
    /// Value size in bytes: N or MIN-MAX.
    #[arg(long, default_value = "16")]
    value_size: ValueSize,
    /// Fraction of operations that are reads.
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generator threads (executors); 0: one per CPU. With `--target
    /// etcd`, half as many more (rounded up) run the gRPC connections.
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Per-operation timeout (retries included), ms.
    #[arg(long, default_value_t = 10_000)]
    op_timeout_ms: u64,
    /// Per-attempt timeout, ms: a node that leaves an attempt unanswered
    /// this long is abandoned for the operation, which is retried on
    /// another node with the same session sequence (a hung node stalls
    /// clients for this long, not for the whole hang). At most
    /// --op-timeout-ms.
    #[arg(long, default_value_t = 500)]
    attempt_timeout_ms: u64,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HdrHistogram percentile distribution (all operations) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write each progress interval's latency histogram (all operations,
    /// microseconds; warmup included) here, as an HdrHistogram interval log
    /// (.hlog, readable by HistogramLogAnalyzer and hdrhistogram's iterator)
    #[arg(long)]
    interval_log: Option<PathBuf>,
    /// Measure the generator's own ceiling: run the workload against a
    /// trivial responder in this process (answers at once, stores nothing)
    /// instead of a cluster.
    #[arg(long, conflicts_with_all = ["cluster", "check", "target"])]
    calibrate: bool,
    /// What to drive: `native` (ringraft's client, which routes each key
    /// to its range's leader) or `resp` (Redis's protocol: any Redis or
    /// Valkey server, or ringraft's RESP port; `--cluster` then lists RESP
    /// addresses, one connection per address in turn; with no --cluster,
    /// the local cluster's RESP ports). `--depth` requests pipeline on
    /// each connection. `etcd`: etcd's v3 KV API over gRPC (`Put`, and
    /// linearizable `Range` of one key); `--cluster` lists members' client
    /// URLs (`http://HOST:PORT` or `HOST:PORT`), one HTTP/2 connection per
    /// URL in turn, `--depth` concurrent requests on each. etcd forwards a
    /// follower's proposals to its leader: name the leader for the
    /// shortest path, as etcd's own `benchmark` tool is run.
    #[arg(long, default_value = "native", value_parser = ["native", "resp", "etcd"])]
    target: String,
    /// Count these processes' CPU and context switches per operation as
    /// the servers' (the report's "nodes"): the members of a cluster
    /// given with --cluster (etcd's, a Redis server, ringraft nodes started
    /// elsewhere), measured over the same window as the local cluster's
    /// nodes are. Comma-separated PIDs.
    #[arg(long, value_delimiter = ',', requires = "cluster")]
    server_pids: Vec<u32>,
    /// The tokio runtime of `--target etcd`'s gRPC connections (by `run`).
    #[arg(skip)]
    etcd_rt: Option<tokio::runtime::Handle>,
    /// With `--target resp`: a file holding the password to give each
    /// connection (`AUTH`; a Redis's `requirepass`, a node's
    /// `--resp-password-file`), one trailing newline dropped. Default none.
    #[arg(long)]
    resp_password_file: Option<String>,
    /// The password read from `resp_password_file` (by `main`).
    #[arg(skip)]
    resp_password: Option<Vec<u8>>,
    /// Start the local cluster, print its client and RESP addresses, and
    /// keep it up until Ctrl-C, running no workload: point `redis-cli`,
    /// `redis-benchmark` or any client at it.
    #[arg(long, conflicts_with_all = ["cluster", "calibrate", "check"])]
    serve_only: bool,
    /// Record every operation (unique value per write, on keys fresh to
    /// this run), read every written key at the end, and check that the
    /// history is linearizable per key; prints PASS or FAIL with a
    /// counter-example (exit 1 on FAIL). Timed-out operations count as
    /// unknown outcomes.
    #[arg(long)]
    check: bool,
    /// Exit 1 when more than this share of operations failed (errors /
    /// (successes + errors)); a run where nothing succeeded always exits 1.
    #[arg(long, default_value_t = 0.01)]
    max_error_share: f64,
}

/// The largest value any node accepts (the top of `value-bytes-max`'s
/// range): a larger `--value-size` is refused before anything is allocated.
const VALUE_BYTES_MAX: usize = ringraft::config::VALUE_BYTES_MAX_LIMIT;
/// The local cluster's nodes run with the default `value-bytes-max`.
const LOCAL_VALUE_BYTES_MAX: usize = ringraft::config::VALUE_BYTES_MAX_DEFAULT;

/// Checks the arguments that need no cluster: a usage error (exit 2) names
/// the flag and what it accepts.
fn check_args(args: &Args) -> Result<(), String> {
    if args.resp_password_file.is_some() && (args.target != "resp" || args.cluster.is_empty()) {
        return Err("--resp-password-file: for a RESP server named with --target resp --cluster ADDR (the native port and the local cluster ask for none)".into());
    }
    if args.keys == 0 {
        return Err("--keys 0: there must be at least one key".into());
    }
    match args.ops {
        Some(0) => return Err("--ops 0: give a positive number of operations".into()),
        None if !(args.duration.is_finite() && args.duration > 0.0) => {
            return Err(format!(
                "--duration {}: must be a positive number of seconds (or give --ops)",
                args.duration
            ))
        }
        _ => {}
    }
    if !(0.0..=1.0).contains(&args.max_error_share) {
        return Err(format!(
            "--max-error-share {}: must be in [0, 1]",
            args.max_error_share
        ));
    }
    if args.attempt_timeout_ms == 0 || args.attempt_timeout_ms > args.op_timeout_ms {
        return Err(format!(
            "--attempt-timeout-ms {}: must be positive and at most --op-timeout-ms ({})",
            args.attempt_timeout_ms, args.op_timeout_ms
        ));
    }
    let local = args.cluster.is_empty() && !args.calibrate;
    if local && args.target == "etcd" {
        return Err("--target etcd: name the etcd members' client URLs with --cluster (ringraft-load starts no etcd of its own; tools/bench.sh --with-etcd does)".into());
    }
    if !local && args.target != "native" {
        // Somebody else's server: its own limits apply.
        return Ok(());
    }
    let (limit, whose) = if local {
        (
            LOCAL_VALUE_BYTES_MAX,
            "the local cluster's nodes run with value-bytes-max",
        )
    } else {
        (VALUE_BYTES_MAX, "no node accepts values above")
    };
    if args.value_size.max > limit {
        return Err(format!(
            "--value-size {}: {whose} {limit} bytes",
            args.value_size
        ));
    }
    Ok(())
}

/// What every worker shares.
struct Shared {
    /// (start, measure_from, measure_until): set once every generator thread has its
    /// connections, so connection setup never lands in a schedule.
    times: std::sync::OnceLock<(Instant, Instant, Instant)>,
    /// Generator threads wait here twice: connected, then times set.
    barrier: std::sync::Barrier,
    stop: AtomicBool,
    measured_ops: AtomicU64,
    ops_max: Option<u64>,
    /// Prefix of every key (fresh per run in `--check` mode).
    key_prefix: String,
    /// Interval histograms for the progress line (merged by threads every
    /// second; swapped out by the main thread).
    interval: Mutex<(Histogram<u64>, u64)>,
}

impl Shared {
    fn start(&self) -> Instant {
        self.times.get().expect("set before workers run").0
    }
    fn measure_from(&self) -> Instant {
        self.times.get().expect("set before workers run").1
    }
    /// Whether an operation issued (or due) at `t0` is measured.
    fn measured(&self, t0: Instant) -> bool {
        let (_, from, until) = *self.times.get().expect("set before workers run");
        t0 >= from && t0 < until
    }
}

struct ThreadResult {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// `--check`: every operation (warmup included).
    history: Vec<CheckOp>,
    /// When this thread's last measured operation ended (`--ops`: the
    /// measured window ends at the latest of every thread's).
    last_done: Option<Instant>,
}

fn error_kind(e: &Error) -> String {
    match e {
        Error::Timeout(_) => "timeout".into(),
        Error::Unreachable(_) => "unreachable".into(),
        Error::Server(s) => match s {
            ClientError::NotLeader { .. } => "not_leader",
            ClientError::Timeout => "timeout",
            ClientError::ValueTooLarge { .. } => "value_too_large",
            ClientError::KeyTooLarge { .. } => "key_too_large",
            ClientError::Busy => "busy",
            ClientError::DiskFull => "disk_full",
            ClientError::ShuttingDown => "shutting_down",
            ClientError::WrongShard { .. } => "wrong_shard",
            ClientError::UnknownGroup { .. } => "unknown_group",
            ClientError::NotHosted { .. } => "not_hosted",
            ClientError::KeyNotInRange { .. } => "key_not_in_range",
            ClientError::SessionExpired => "session_expired",
            ClientError::BadRequest { .. } => "bad_request",
            ClientError::Failed { .. } => "failed",
        }
        .into(),
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Err(e) = check_args(&args) {
        eprintln!("ringraft-load: {e}");
        return ExitCode::from(2);
    }
    if let Some(f) = &args.resp_password_file {
        match ringraft::config::read_password_file(f) {
            Ok(p) => args.resp_password = Some(p.to_vec()),
            Err(e) => {
                eprintln!("ringraft-load: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringraft-load: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(mut args: Args) -> Result<ExitCode, String> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err(format!(
            "--read-ratio {} must be in [0, 1]",
            args.read_ratio
        ));
    }
    if args.connections == 0 || args.depth == 0 {
        return Err("--connections and --depth must be positive".into());
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        return Err("--rate must be a positive number of operations per second".into());
    }
    let read_mode = match args.read_mode.as_str() {
        "linearizable" => ReadMode::Linearizable,
        "lease" => ReadMode::Lease,
        "stale" => ReadMode::Stale,
        o => {
            return Err(format!(
                "--read-mode {o}: expected linearizable, lease or stale"
            ))
        }
    };
    if args.target == "etcd" && read_mode != ReadMode::Linearizable {
        return Err(format!(
            "--read-mode {}: --target etcd reads linearizably (etcd's default Range); leave --read-mode out",
            args.read_mode
        ));
    }
    // Ctrl-C or SIGTERM ends the run early: the partial report is printed
    // and the local cluster torn down (its nodes and temporary directory).
    // A second one exits at once (the nodes still die with the generator).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, interrupted.clone())
            .and_then(|_| signal_hook::flag::register(sig, interrupted.clone()))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    // The cluster: given, or started here.
    let mut local = None;
    // Local cluster only; computed once for the cluster and the report.
    let shards = local_shards(&args);
    let mut responder = None;
    let addrs: Vec<SocketAddr> = if args.calibrate {
        // The generator's own ceiling: a responder in this process that
        // answers every request at once.
        let (addr, stop) = start_responder(args.cluster_id, args.groups)?;
        eprintln!("calibrating against an in-process responder on {addr}");
        responder = Some(stop);
        vec![addr]
    } else if args.cluster.is_empty() {
        let bin = match &args.node_bin {
            Some(b) => b.clone(),
            None => {
                let me = std::env::current_exe().map_err(|e| e.to_string())?;
                me.with_file_name("ringraft")
            }
        };
        if !bin.exists() {
            return Err(format!(
                "the node binary {} does not exist: build it (cargo build --release --workspace) or pass --node-bin",
                bin.display()
            ));
        }
        let mut cfg = LocalClusterConfig::new(bin);
        cfg.die_with_parent = true;
        cfg.nodes = args.nodes;
        cfg.shards = shards;
        cfg.groups = args.groups;
        cfg.split_keys = ringraft_tools::workload::split_keys(args.keys, args.groups);
        cfg.replication_factor = args.replication_factor;
        cfg.balancer = args.balancer;
        // Redis's protocol too, so somebody else's client or benchmark can
        // be pointed at the same cluster (issue #20).
        cfg.resp = true;
        if read_mode == ReadMode::Lease {
            cfg.extra_args = vec!["--read-mode".into(), "lease".into()];
        }
        eprintln!(
            "starting a local cluster: {} nodes x {} shards, {} groups of {} replicas",
            args.nodes,
            shards,
            args.groups,
            args.nodes.min(u64::from(
                args.replication_factor
                    .unwrap_or(ringraft::route::REPLICATION_FACTOR_DEFAULT)
            ))
        );
        let c = LocalCluster::start(cfg).map_err(|e| e.to_string())?;
        eprintln!("local cluster data: {}", c.root().display());
        c.wait_ready(Duration::from_secs(60))
            .map_err(|e| format!("{e}\nnode 1 log:\n{}", c.log_tail(1, 20)))?;
        if interrupted.load(Ordering::SeqCst) {
            return Err("interrupted while the local cluster started".into());
        }
        let show = |v: Vec<SocketAddr>| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let resp: Vec<SocketAddr> = c.nodes.iter().filter_map(|n| n.resp_addr).collect();
        eprintln!("client addresses (--cluster): {}", show(c.client_addrs()));
        eprintln!(
            "RESP addresses (shard s of a node listens on its port + s): {}",
            show(resp.clone())
        );
        if args.serve_only {
            let r = resp.first().copied().ok_or("no RESP address")?;
            eprintln!(
                "serving until Ctrl-C; try: redis-cli -h {} -p {} ping",
                r.ip(),
                r.port()
            );
            while !interrupted.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("stopping the local cluster");
            drop(c);
            return Ok(ExitCode::SUCCESS);
        }
        let a = if args.target == "resp" {
            resp
        } else {
            c.client_addrs()
        };
        local = Some(c);
        a
    } else if args.target == "etcd" {
        args.cluster
            .iter()
            .map(|a| ringraft_tools::etcd::member_addr(a))
            .collect::<Result<_, _>>()?
    } else {
        args.cluster
            .iter()
            .map(|a| {
                std::net::ToSocketAddrs::to_socket_addrs(a.as_str())
                    .ok()
                    .and_then(|mut i| i.next())
                    .ok_or_else(|| format!("--cluster: {a} is not an address"))
            })
            .collect::<Result<_, _>>()?
    };
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get()) as u32
    } else {
        args.threads
    }
    .min(args.connections);
    // `--target etcd`: gRPC's threads beside the generator's executors,
    // half as many (at 4 x 8 against one etcd member on 2 cores, one
    // gRPC thread per two executors cost 29-30 µs of generator CPU per
    // operation and one per executor 34-35, for the same throughput).
    let etcd_rt = if args.target == "etcd" {
        let rt = ringraft_tools::etcd::runtime(threads.div_ceil(2))?;
        args.etcd_rt = Some(rt.handle().clone());
        Some(rt)
    } else {
        None
    };
    let zipf = match args.key_dist {
        KeyDist::Zipf(t) => Some(Zipf::new(args.keys, t)),
        _ => None,
    };
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let shared = Arc::new(Shared {
        times: std::sync::OnceLock::new(),
        barrier: std::sync::Barrier::new(threads as usize + 1),
        stop: AtomicBool::new(false),
        measured_ops: AtomicU64::new(0),
        ops_max: args.ops,
        key_prefix: if args.check {
            // Keys no earlier run wrote: their history starts empty.
            format!("chk{:016x}-", ringraft::client::fresh_client_id())
        } else {
            String::new()
        },
        interval: Mutex::new((new_histogram(), 0)),
    });
    let workers_total = u64::from(args.connections) * u64::from(args.depth);
    let mut handles = Vec::new();
    for t in 0..threads {
        let conns: Vec<u32> = (0..args.connections).filter(|c| c % threads == t).collect();
        let (args, shared, addrs, zipf) =
            (args.clone(), shared.clone(), addrs.clone(), zipf.clone());
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("load-{t}"))
            .spawn(move || async move {
                generator_thread(args, shared, addrs, conns, zipf, workers_total, read_mode).await
            })
            .map_err(|e| e.to_string())?;
        handles.push(h);
    }
    // Every thread connected: fix the schedule, then let them go.
    shared.barrier.wait();
    let start = Instant::now() + Duration::from_millis(50);
    let until = match args.ops {
        // Counted by operations: no time bound on the window.
        Some(_) => start + Duration::from_secs(100 * 365 * 86_400),
        None => start + warmup + Duration::from_secs_f64(args.duration),
    };
    let _ = shared.times.set((start, start + warmup, until));
    shared.barrier.wait();
    // Progress, once a second.
    let end_at = shared.measure_from() + Duration::from_secs_f64(args.duration);
    let mut last = Instant::now();
    let mut tick = 1u64;
    let mut ilog = match &args.interval_log {
        Some(p) => Some(IntervalLog::create(p, shared.start())?),
        None => None,
    };
    // CPU counters at the start and the end of the measured window.
    let pids: Vec<Option<u32>> = match &local {
        Some(c) => (1..=c.nodes.len() as u64).map(|i| c.pid(i)).collect(),
        None => args.server_pids.iter().map(|&p| Some(p)).collect(),
    };
    let mut cpu_start = None;
    loop {
        let next = shared.start() + Duration::from_secs(tick);
        if cpu_start.is_none() && shared.measure_from() <= next {
            let now = Instant::now();
            if shared.measure_from() > now {
                std::thread::sleep(shared.measure_from() - now);
            }
            cpu_start = Some(cpu::Snapshot::take(&pids));
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        tick += 1;
        let (h, errs) = {
            let mut g = shared.interval.lock().unwrap();
            let h = std::mem::replace(&mut g.0, new_histogram());
            let e = std::mem::take(&mut g.1);
            (h, e)
        };
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f64();
        if let Some(l) = &mut ilog {
            l.write(&h, last, now)?;
        }
        last = now;
        let phase = if now < shared.measure_from() {
            " (warmup)"
        } else {
            ""
        };
        eprintln!(
            "[{:>6.1}s] {:>9.0} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms  errors {}{}",
            now.duration_since(shared.start()).as_secs_f64(),
            h.len() as f64 / secs,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            errs,
            phase
        );
        let done_ops = args
            .ops
            .is_some_and(|m| shared.measured_ops.load(Ordering::Relaxed) >= m);
        let cut = interrupted.load(Ordering::SeqCst);
        if cut {
            eprintln!("interrupted: stopping; the report covers the run so far");
        }
        if (args.ops.is_none() && now >= end_at)
            || done_ops
            || cut
            || shared.stop.load(Ordering::SeqCst)
        {
            shared.stop.store(true, Ordering::SeqCst);
            break;
        }
    }
    let cpu_usage = cpu_start.map(|a| cpu::Usage::between(&a, &cpu::Snapshot::take(&pids)));
    let mut reads = new_histogram();
    let mut writes = new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut history = Vec::new();
    let mut last_done: Option<Instant> = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|e| format!("a generator thread failed: {e:?}"))??;
        reads.add(&r.reads).expect("same bounds");
        writes.add(&r.writes).expect("same bounds");
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        history.extend(r.history);
        last_done = last_done.max(r.last_done);
    }
    // The window: [measure_from, until); once the count of --ops was
    // reached, up to the end of the last measured operation (the progress
    // loop above notices the count only at its next tick, up to a second
    // later). A run cut short (Ctrl-C, a failure) ends now, its failing
    // end in the window.
    let until = shared.times.get().expect("set").2;
    let counted = args
        .ops
        .is_some_and(|m| shared.measured_ops.load(Ordering::Relaxed) >= m);
    let end = match last_done {
        Some(t) if counted => t,
        _ => Instant::now(),
    };
    let measured_secs = end
        .min(until)
        .duration_since(shared.measure_from())
        .as_secs_f64()
        .max(1e-6);
    let mut check_failed = false;
    let mut check_summary = None;
    if args.check {
        eprintln!(
            "check: reading back {} ops' keys and checking the history...",
            history.len()
        );
        match check_history(
            &args,
            addrs.clone(),
            read_mode,
            &shared,
            std::mem::take(&mut history),
        ) {
            Ok(s) => check_summary = Some(("pass", s)),
            Err(s) => {
                check_failed = true;
                check_summary = Some(("fail", s));
            }
        }
    }
    // The ranges now (native target): splits by size or load during the
    // run show here.
    let ranges_end = if args.target == "native" {
        placement_at_end(addrs.clone(), args.cluster_id)
    } else {
        None
    };
    let mut all = new_histogram();
    all.add(&reads).expect("same bounds");
    all.add(&writes).expect("same bounds");
    let ops = all.len();
    let err_total: u64 = errors.values().sum();
    let (lr, lw) = (Latency::of(&reads), Latency::of(&writes));
    let settings = format!(
        "target={} cluster={} connections={} depth={} threads={} {} keys={} key-dist={} value-size={} read-ratio={} read-mode={} seed={} warmup={}s",
        args.target,
        if local.is_some() {
            format!("local({} nodes x {} shards, {} groups)", args.nodes, shards, args.groups)
        } else {
            args.cluster.join(",")
        },
        args.connections,
        args.depth,
        threads,
        match args.rate {
            Some(r) => format!("open-loop rate={r}/s"),
            None => "closed-loop".into(),
        },
        args.keys,
        args.key_dist,
        args.value_size,
        args.read_ratio,
        args.read_mode,
        args.seed,
        args.warmup
    );
    println!("settings: {settings}");
    println!(
        "throughput: {:.0} ops/s ({} ops in {:.2} s), errors: {}",
        ops as f64 / measured_secs,
        ops,
        measured_secs,
        err_total
    );
    if let Some(p) = &ranges_end {
        println!("{}", p.line());
    }
    println!("{}", table_header());
    println!("{}", lw.row("write"));
    println!("{}", lr.row("read"));
    for (k, v) in &errors {
        println!("error {k}: {v}");
    }
    let ops_per_sec = ops as f64 / measured_secs;
    let cost = cpu_usage.as_ref().map(|u| u.per_op(ops_per_sec));
    if let Some(u) = &cpu_usage {
        println!("cpu (cores, measured window): {}", u.line());
        if let Some(c) = &cost {
            println!("cost per operation: {}", c.line());
        }
        if let Some(note) = u.saturation_note() {
            println!("{note}");
        }
    }
    if let Some((_, s)) = &check_summary {
        println!("{s}");
    }
    if let Some(p) = &args.json {
        let j = serde_json::json!({
            "ops_per_sec": ops as f64 / measured_secs,
            "ops": ops,
            "errors": err_total,
            "errors_by_kind": errors,
            "duration_s": measured_secs,
            "write": lw.json(),
            "read": lr.json(),
            "settings": settings,
            "check": check_summary.as_ref().map(|(r, _)| *r),
            "cpu": cpu_usage.as_ref().map(|u| u.json()),
            "cost": cost.as_ref().map(|c| c.json()),
            "ranges_end": ranges_end.as_ref().map(|p| p.ranges),
            "placement_end": ranges_end.as_ref().map(|p| p.json()),
        });
        std::fs::write(p, serde_json::to_string_pretty(&j).unwrap() + "\n")
            .map_err(|e| format!("--json {}: {e}", p.display()))?;
    }
    if let Some(p) = &args.hgrm {
        std::fs::write(p, hgrm(&all)).map_err(|e| format!("--hgrm {}: {e}", p.display()))?;
    }
    drop(local);
    if let Some(rt) = etcd_rt {
        rt.shutdown_background();
    }
    if let Some(stop) = responder {
        stop.store(true, Ordering::SeqCst);
        println!(
            "calibration: the generator alone reaches {:.0} ops/s with these settings",
            ops as f64 / measured_secs
        );
    }
    let attempted = ops + err_total;
    let error_share = err_total as f64 / attempted.max(1) as f64;
    let too_many_errors = if interrupted.load(Ordering::SeqCst) {
        eprintln!("ringraft-load: interrupted before the end of the run");
        true
    } else if ops == 0 {
        eprintln!(
            "ringraft-load: no operation succeeded ({err_total} errors): is the cluster at --cluster up, and does it accept these requests?"
        );
        true
    } else if error_share > args.max_error_share {
        eprintln!(
            "ringraft-load: {err_total} of {attempted} operations failed ({:.2}%), above --max-error-share {}",
            error_share * 100.0,
            args.max_error_share
        );
        true
    } else {
        false
    };
    Ok(if check_failed || too_many_errors {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
async fn generator_thread(
    args: Args,
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    conns: Vec<u32>,
    zipf: Option<Zipf>,
    workers_total: u64,
    read_mode: ReadMode,
) -> Result<ThreadResult, String> {
    use std::cell::RefCell;
    use std::rc::Rc;
    let res = Rc::new(RefCell::new(ThreadResult {
        reads: new_histogram(),
        writes: new_histogram(),
        errors: BTreeMap::new(),
        history: Vec::new(),
        last_done: None,
    }));
    let interval = Rc::new(RefCell::new((new_histogram(), 0u64)));
    let mut tasks = Vec::new();
    // Connect first; the schedule starts once every thread is connected.
    let mut clients = Vec::new();
    let mut failed = None;
    for &c in &conns {
        match connect_target(&args, &addrs, c as usize, read_mode).await {
            Ok(t) => clients.push((c, t)),
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    // Blocking here is fine: nothing else of this executor has work yet.
    shared.barrier.wait();
    shared.barrier.wait();
    if let Some(e) = failed {
        shared.stop.store(true, Ordering::SeqCst);
        return Err(e);
    }
    for (c, client) in clients {
        for d in 0..args.depth {
            let w = u64::from(c) * u64::from(args.depth) + u64::from(d);
            let (client, shared, res, interval, zipf, args) = (
                client.clone(),
                shared.clone(),
                res.clone(),
                interval.clone(),
                zipf.clone(),
                args.clone(),
            );
            tasks.push(glommio::spawn_local(async move {
                worker(w, workers_total, args, client, shared, res, interval, zipf).await
            }));
        }
    }
    // Hand the interval histogram to the progress line every 100 ms.
    let flusher = {
        let (shared, interval) = (shared.clone(), interval.clone());
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let (h, e) = std::mem::replace(&mut *interval.borrow_mut(), (new_histogram(), 0));
                {
                    let mut g = shared.interval.lock().unwrap();
                    g.0.add(&h).expect("same bounds");
                    g.1 += e;
                }
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        })
    };
    for t in tasks {
        t.await;
    }
    flusher.await;
    let r = Rc::try_unwrap(res)
        .map_err(|_| "workers still hold the results".to_string())?
        .into_inner();
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    w: u64,
    workers_total: u64,
    args: Args,
    client: Target,
    shared: Arc<Shared>,
    res: std::rc::Rc<std::cell::RefCell<ThreadResult>>,
    interval: std::rc::Rc<std::cell::RefCell<(Histogram<u64>, u64)>>,
    zipf: Option<Zipf>,
) {
    let mut rng = Rng(args.seed ^ w.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut keys = Keys::new(args.key_dist.clone(), args.keys, zipf, w, workers_total);
    let mut key = Vec::new();
    let mut value = Vec::new();
    let mut stamp = 0u64;
    // Open loop: this worker's share of the rate, phase-shifted.
    let period = args
        .rate
        .map(|r| Duration::from_secs_f64(workers_total as f64 / r));
    let mut intended = shared.start()
        + period.map_or(Duration::ZERO, |p| {
            p.mul_f64(w as f64 / workers_total as f64)
        });
    let now = Instant::now();
    if shared.start() > now {
        glommio::timer::sleep(shared.start() - now).await;
    }
    while !shared.stop.load(Ordering::Relaxed) {
        let t0 = match period {
            Some(p) => {
                let now = Instant::now();
                if intended > now {
                    glommio::timer::sleep(intended - now).await;
                    // The run may have ended while this worker slept.
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                let t = intended;
                intended += p;
                t
            }
            None => Instant::now(),
        };
        let k = keys.next(&mut rng);
        key_bytes(k, &mut key);
        if !shared.key_prefix.is_empty() {
            key.splice(0..0, shared.key_prefix.bytes());
        }
        let is_read = rng.unit() < args.read_ratio;
        let mut read_value = None;
        let mut written = 0;
        let r = if is_read {
            client
                .get(&key)
                .await
                .map(|v| read_value = v.map(|b| stamp_of(&b)))
        } else {
            stamp += 1;
            written = pack_stamp(w, stamp);
            value_bytes(args.value_size, (w, stamp), &mut rng, &mut value);
            client.put(&key, &value).await
        };
        if args.check {
            let ret = Some(micros(shared.start(), Instant::now()));
            let op = |kind, ret| CheckOp {
                client: w as usize,
                key: k,
                kind,
                call: micros(shared.start(), t0),
                ret,
            };
            let mut res = res.borrow_mut();
            match (&r, is_read) {
                (Ok(()), true) => res
                    .history
                    .push(op(OpKind::Get { result: read_value }, ret)),
                (Ok(()), false) => res.history.push(op(OpKind::Put { value: written }, ret)),
                // A write that may have happened: it may take effect any
                // time after its call, or never.
                (Err(e), false) if e.outcome_unknown() => {
                    res.history.push(op(OpKind::Put { value: written }, None))
                }
                // A failed read, or a write refused outright: no effect.
                _ => {}
            }
        }
        let done = Instant::now();
        let us = done.duration_since(t0).as_micros().max(1) as u64;
        let mut iv = interval.borrow_mut();
        match r {
            Ok(()) => {
                iv.0.saturating_record(us);
                if shared.measured(t0) {
                    let mut res = res.borrow_mut();
                    let h = if is_read {
                        &mut res.reads
                    } else {
                        &mut res.writes
                    };
                    h.saturating_record(us);
                    res.last_done = Some(done);
                    let n = shared.measured_ops.fetch_add(1, Ordering::Relaxed) + 1;
                    if shared.ops_max.is_some_and(|m| n >= m) {
                        shared.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                iv.1 += 1;
                if shared.measured(t0) {
                    *res.borrow_mut().errors.entry(error_kind(&e)).or_default() += 1;
                }
            }
        }
    }
}

/// `--interval-log`: one histogram per progress interval, timestamps in
/// seconds from the run's start (the StartTime header).
struct IntervalLog {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    ser: hdrhistogram::serialization::V2DeflateSerializer,
    start: Instant,
}

impl IntervalLog {
    fn create(path: &std::path::Path, start: Instant) -> Result<Self, String> {
        let err = |e: &dyn std::fmt::Display| format!("--interval-log {}: {e}", path.display());
        let f = std::fs::File::create(path).map_err(|e| err(&e))?;
        let mut l = IntervalLog {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(f),
            ser: hdrhistogram::serialization::V2DeflateSerializer::new(),
            start,
        };
        let wall = std::time::SystemTime::now() - Instant::now().saturating_duration_since(start);
        hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder::new()
            .add_comment("ringraft-load interval log: latency of all operations in microseconds")
            .with_start_time(wall)
            .with_base_time(wall)
            .begin_log_with(&mut l.out, &mut l.ser)
            .map_err(|e| err(&e))?;
        Ok(l)
    }

    fn write(&mut self, h: &Histogram<u64>, from: Instant, to: Instant) -> Result<(), String> {
        use std::io::Write;
        let path = self.path.display().to_string();
        // A builder without headers writes nothing: this just borrows the
        // file and serializer for one line.
        let mut w = hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.out, &mut self.ser)
            .map_err(|e| format!("--interval-log {path}: {e}"))?;
        w.write_histogram(
            h,
            from.saturating_duration_since(self.start),
            to.saturating_duration_since(from),
            None,
        )
        .map_err(|e| format!("--interval-log {path}: {e:?}"))?;
        self.out
            .flush()
            .map_err(|e| format!("--interval-log {path}: {e}"))
    }
}

/// Shards per node of the local cluster: `--shards`, or the CPUs split
/// between the nodes (thread-per-core: more executors than cores only adds
/// context switches; measured on 2 CPUs, 3 nodes x 1 shard gave 1.2x the
/// write throughput of 3 x 2 and a lower 1x1 latency).
fn local_shards(args: &Args) -> u32 {
    args.shards.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        default_shards(cpus, args.nodes, args.groups)
    })
}

/// CPUs / nodes, at least 1 and at most `groups` (a node refuses more
/// shards than groups: a shard without a group would idle).
fn default_shards(cpus: u64, nodes: u64, groups: u64) -> u32 {
    (cpus / nodes.max(1))
        .min(groups)
        .clamp(1, u64::from(u32::MAX)) as u32
}

/// A write's unique value as the checker sees it: (worker, stamp).
fn pack_stamp(worker: u64, stamp: u64) -> u64 {
    (worker << 32) | (stamp & 0xFFFF_FFFF)
}

/// The stamp a value carries in its first 16 bytes (see `value_bytes`).
fn stamp_of(v: &[u8]) -> u64 {
    if v.len() < 16 {
        return u64::MAX; // not a value of this run
    }
    let w = u64::from_le_bytes(v[0..8].try_into().expect("8 bytes"));
    let s = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
    pack_stamp(w, s)
}

fn micros(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start).as_micros() as u64
}

/// Where the ranges are at the end of a run, as the nodes report them:
/// how many there are, and per node (by id) the replicas it holds and the
/// ranges it leads. Splits during a run make ranges on their parent's
/// nodes; the balancer then spreads them (replicas, then leaders, evened
/// out per node), which this shows.
#[derive(Debug)]
struct RangePlacement {
    ranges: usize,
    /// (node, replicas, leaders), by node id.
    nodes: Vec<(u64, usize, usize)>,
}

impl RangePlacement {
    fn line(&self) -> String {
        let per = |f: fn(&(u64, usize, usize)) -> usize| {
            self.nodes
                .iter()
                .map(|n| format!("{}:{}", n.0, f(n)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "ranges at the end: {} (split during the run by size or load: see the nodes' --range-split-bytes and --range-split-qps); replicas per node {}; leaders per node {}",
            self.ranges,
            per(|n| n.1),
            per(|n| n.2)
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ranges": self.ranges,
            "nodes": self.nodes.iter().map(|n| serde_json::json!({
                "node": n.0, "replicas": n.1, "leaders": n.2,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The ranges of the cluster at `addrs` and where they are (`None` if it
/// cannot be asked).
fn placement_at_end(addrs: Vec<SocketAddr>, cluster_id: u64) -> Option<RangePlacement> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut cfg = ClientConfig::new(addrs);
            cfg.cluster_id = cluster_id;
            cfg.op_timeout_ms = 5_000;
            let cl = ringraft::client::Client::connect(cfg).await.ok()?;
            cl.fetch_whole_map().await;
            let ranges = cl.ranges();
            let mut nodes: BTreeMap<u64, (usize, usize)> =
                cl.nodes().into_iter().map(|(id, _)| (id, (0, 0))).collect();
            for d in &ranges {
                for r in &d.replicas {
                    nodes.entry(r.node).or_default().0 += 1;
                }
                let leader = cl.leader_of(d.id);
                if leader != 0 {
                    nodes.entry(leader).or_default().1 += 1;
                }
            }
            Some(RangePlacement {
                ranges: ranges.len(),
                nodes: nodes.into_iter().map(|(id, (r, l))| (id, r, l)).collect(),
            })
        })
        .ok()?
        .join()
        .ok()?
}

/// Connection `c` to the system under test: for RESP and etcd, to
/// `addrs[c % len]`; the native client is given every address and routes
/// each key to its range's leader itself.
async fn connect_target(
    args: &Args,
    addrs: &[SocketAddr],
    c: usize,
    read_mode: ReadMode,
) -> Result<Target, Error> {
    let addr = addrs[c % addrs.len()];
    match (args.target.as_str(), &args.etcd_rt) {
        ("resp", _) => RespConn::connect(addr, args.op_timeout_ms, args.resp_password.as_deref())
            .await
            .map(Target::Resp),
        ("etcd", Some(rt)) => EtcdConn::connect(addr, args.op_timeout_ms, rt.clone())
            .await
            .map(Target::Etcd),
        _ => {
            let mut cfg = ClientConfig::new(addrs.to_vec());
            cfg.cluster_id = args.cluster_id;
            cfg.op_timeout_ms = args.op_timeout_ms;
            cfg.attempt_timeout_ms = args.attempt_timeout_ms;
            cfg.read_mode = read_mode;
            Client::connect(cfg).await.map(Target::Native)
        }
    }
}

/// `--check`: reads every key written, adds the reads to the history, and
/// checks the history. Ok(summary) on PASS, Err(report) on FAIL.
fn check_history(
    args: &Args,
    addrs: Vec<SocketAddr>,
    read_mode: ReadMode,
    shared: &Arc<Shared>,
    mut history: Vec<CheckOp>,
) -> Result<String, String> {
    let mut keys: Vec<u64> = history.iter().map(|o| o.key).collect();
    keys.sort_unstable();
    keys.dedup();
    let (prefix, start, conn_args) = (shared.key_prefix.clone(), shared.start(), args.clone());
    let finals = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let client = connect_target(&conn_args, &addrs, 0, read_mode)
                .await
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for chunk in keys.chunks(256) {
                let tasks: Vec<_> = chunk
                    .iter()
                    .map(|&k| {
                        let (client, prefix) = (client.clone(), prefix.clone());
                        glommio::spawn_local(async move {
                            let mut key = Vec::new();
                            key_bytes(k, &mut key);
                            key.splice(0..0, prefix.bytes());
                            let call = micros(start, Instant::now());
                            let r = client.get(&key).await;
                            (k, call, micros(start, Instant::now()), r)
                        })
                    })
                    .collect();
                for t in tasks {
                    let (k, call, ret, r) = t.await;
                    let v = r.map_err(|e| format!("final read of key {k}: {e}"))?;
                    out.push(CheckOp {
                        client: usize::MAX,
                        key: k,
                        kind: OpKind::Get {
                            result: v.map(|b| stamp_of(&b)),
                        },
                        call,
                        ret: Some(ret),
                    });
                }
            }
            Ok::<_, String>(out)
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| format!("final reads: {e:?}"))??;
    let reads = finals.len();
    let unknown = history.iter().filter(|o| o.ret.is_none()).count();
    let acked = history
        .iter()
        .filter(|o| o.ret.is_some() && matches!(o.kind, OpKind::Put { .. }))
        .count();
    history.extend(finals);
    let n = history.len();
    match lin::check(&history) {
        Ok(()) => Ok(format!(
            "check: PASS — {n} operations ({acked} acknowledged writes, {unknown} with unknown outcome, {reads} final reads) linearizable per key; every acknowledged write visible"
        )),
        Err(v) => Err(format!("check: FAIL — {v}")),
    }
}

/// Starts the calibration responder on its own executor: a client service
/// that answers every request at once (node 1, one shard, `groups` groups
/// all led by node 1). Returns its address and a stop flag.
fn start_responder(cluster: u64, groups: u64) -> Result<(SocketAddr, Arc<AtomicBool>), String> {
    use ringraft::transport::{ClientService, TransportConfig};
    use ringraft::wire::{ClusterMap, Hello, Op, Reply, Response, PROTOCOL_VERSION};
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("responder")
        .spawn(move || async move {
            let l = match glommio::net::TcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
            let me = Hello {
                cluster,
                node: 1,
                shard: 0,
                shards: 1,
                version: PROTOCOL_VERSION as u32,
                incarnation: 1,
                expected: 0,
                cuts: 0,
                client_addr: None,
            };
            let svc = ClientService::new(me, TransportConfig::default());
            glommio::spawn_local(svc.clone().serve(l)).detach();
            let mut reqs = Vec::new();
            // The keyspace cut into `groups` ranges (the node's default
            // cuts), each led by node 1 on shard 0.
            let splits = ringraft::route::even_split_keys(groups);
            let ranges: Vec<bytes::Bytes> = (0..groups)
                .map(|g| {
                    let (start, end) = ringraft::route::initial_bounds(g, &splits);
                    ringraft::meta::RangeDesc {
                        id: g,
                        start,
                        end,
                        epoch: ringraft::meta::Epoch::default(),
                        replicas: vec![ringraft::meta::RangeReplica {
                            replica: 1,
                            node: 1,
                            shard: 0,
                            role: ringraft::meta::ReplicaRole::Voter,
                        }],
                    }
                    .to_bytes()
                })
                .collect();
            while !stop2.load(Ordering::Relaxed) {
                let tick = glommio::timer::sleep(Duration::from_millis(100));
                futures_lite::FutureExt::or(async { svc.ready().await }, tick).await;
                svc.drain(&mut reqs);
                for (conn, r) in reqs.drain(..) {
                    let result = match r.op {
                        Op::Get { .. } => Ok(Reply::Value(None)),
                        Op::ClusterMap => Ok(Reply::Map(ClusterMap {
                            groups,
                            shards: 1,
                            nodes: Vec::new(),
                            leaders: (0..groups).map(|g| (g, 1)).collect(),
                            replication_factor: 1,
                            meta_leader: 0,
                        })),
                        Op::Ranges { .. } => Ok(Reply::Ranges(ranges.clone())),
                        _ => Ok(Reply::Done),
                    };
                    svc.respond(conn, &Response { id: r.id, result });
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let addr = rx
        .recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("calibration responder: {e}"))?;
    Ok((addr, stop))
}

#[cfg(test)]
mod tests {
    use super::default_shards;

    #[test]
    fn local_shards_split_the_cpus_between_the_nodes() {
        assert_eq!(
            default_shards(2, 3, 8),
            1,
            "fewer cores than nodes: one each"
        );
        assert_eq!(default_shards(8, 3, 8), 2);
        assert_eq!(default_shards(16, 3, 8), 5);
        assert_eq!(default_shards(64, 3, 8), 8, "never more shards than groups");
        assert_eq!(default_shards(16, 1, 64), 16);
        assert_eq!(default_shards(4, 0, 8), 4, "no division by zero");
        assert_eq!(default_shards(4, 1, 0), 1, "at least one");
    }
}
