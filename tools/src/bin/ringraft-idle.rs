//! `ringraft-idle`: what idle groups cost. For each group count it starts
//! a local cluster (3 `ringraft node` processes on this box, every group on
//! every node), waits until every group has a leader, lets it settle, then
//! measures each node process over a window: CPU (user + system, from
//! `/proc/PID/stat`, in cores) and resident memory (`VmRSS`). The first
//! row is the baseline, a cluster of `--baseline-groups` measured in the
//! same run; each row's CPU is also given as a ratio to it. Prints a table
//! and, per count, a JSON line (issue #16: the targets are at most 0.05 of
//! a core per node and 4 KiB per idle group at 10,000 groups per node).
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/ringraft-idle --groups 1000,10000
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ringraft::local_cluster::{LocalCluster, LocalClusterConfig};
use ringraft_tools::cpu::{process_rss_bytes, process_secs};

#[derive(Parser, Debug)]
#[command(about = "CPU and memory of idle groups on a local cluster")]
struct Args {
    /// Group counts to measure, one cluster each (3 nodes, replication factor 3: every group on each of them).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    groups: Vec<u64>,
    /// The baseline cluster's group count, measured first.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    baseline_groups: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
    nodes: u64,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Seconds from "every group has a leader" to the window's start.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// The measured window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    window_secs: u64,
    /// Longest wait for every group to have a leader, in seconds.
    #[arg(long, default_value_t = 120)]
    ready_timeout_secs: u64,
    /// Run the nodes with quiescence (`--quiesce`: idle groups stop
    /// ticking); false measures them awake.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    quiesce: bool,
    /// More arguments for every node, after the tool's own (repeat it:
    /// `--node-arg=--wal-segment-bytes=16777216`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// The `ringraft` binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
}

/// One cluster's figures.
struct Row {
    groups: u64,
    ready_secs: f64,
    /// Per node: (cores over the window, resident bytes at its end).
    nodes: Vec<(f64, u64)>,
}

impl Row {
    fn cores_max(&self) -> f64 {
        self.nodes.iter().map(|n| n.0).fold(0.0, f64::max)
    }
    fn cores_total(&self) -> f64 {
        self.nodes.iter().map(|n| n.0).sum()
    }
    fn rss_max(&self) -> u64 {
        self.nodes.iter().map(|n| n.1).max().unwrap_or(0)
    }
}

fn measure(args: &Args, bin: &std::path::Path, groups: u64) -> Result<Row, String> {
    let mut cfg = LocalClusterConfig::new(bin);
    cfg.die_with_parent = true;
    cfg.nodes = args.nodes;
    cfg.shards = args.shards;
    cfg.groups = groups;
    cfg.extra_args.push(format!("--quiesce={}", args.quiesce));
    cfg.extra_args.extend(args.node_args.iter().cloned());
    eprintln!(
        "{groups} groups: starting {} nodes x {} shards",
        args.nodes, args.shards
    );
    let started = Instant::now();
    let c = LocalCluster::start(cfg).map_err(|e| format!("starting the cluster: {e}"))?;
    c.wait_ready(Duration::from_secs(args.ready_timeout_secs))
        .map_err(|e| format!("{groups} groups: {e}\nnode 1 log:\n{}", c.log_tail(1, 20)))?;
    let ready_secs = started.elapsed().as_secs_f64();
    eprintln!("{groups} groups: every group has a leader after {ready_secs:.1} s; settling");
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let pids: Vec<u32> = (1..=args.nodes)
        .map(|id| c.pid(id).ok_or(format!("node {id} is not running")))
        .collect::<Result<_, _>>()?;
    let cpu = |pid: u32| process_secs(pid).ok_or(format!("cannot read /proc/{pid}/stat"));
    let before: Vec<f64> = pids.iter().map(|&p| cpu(p)).collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.window_secs));
    let wall = t0.elapsed().as_secs_f64();
    let mut nodes = Vec::new();
    for (&pid, b) in pids.iter().zip(before) {
        let cores = (cpu(pid)? - b) / wall;
        let rss = process_rss_bytes(pid).ok_or(format!("cannot read /proc/{pid}/status"))?;
        nodes.push((cores, rss));
    }
    Ok(Row {
        groups,
        ready_secs,
        nodes,
    })
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("ringraft-idle: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let bin = ringraft_tools::node_bin(args.node_bin.as_ref())?;
    let base = measure(args, &bin, args.baseline_groups)?;
    let mut rows = vec![];
    let mut failed = None;
    for &g in &args.groups {
        match measure(args, &bin, g) {
            Ok(r) => rows.push(r),
            // The counts measured so far are still reported.
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    println!(
        "{:>8} {:>9} {:>12} {:>12} {:>10} {:>10} {:>14}",
        "groups", "ready s", "cores/node", "cores (all)", "x base", "RSS MiB", "KiB/group"
    );
    for r in std::iter::once(&base).chain(&rows) {
        let per_group =
            (r.rss_max().saturating_sub(base.rss_max())) as f64 / 1024.0 / r.groups as f64;
        let ratio = r.cores_total() / base.cores_total().max(1e-9);
        println!(
            "{:>8} {:>9.1} {:>12.3} {:>12.3} {:>10.1} {:>10.1} {:>14.2}",
            r.groups,
            r.ready_secs,
            r.cores_max(),
            r.cores_total(),
            ratio,
            r.rss_max() as f64 / (1 << 20) as f64,
            per_group
        );
    }
    for r in std::iter::once(&base).chain(&rows) {
        let j = serde_json::json!({
            "groups": r.groups,
            "nodes": args.nodes,
            "shards": args.shards,
            "ready_secs": r.ready_secs,
            "window_secs": args.window_secs,
            "cores_per_node": r.nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
            "rss_bytes_per_node": r.nodes.iter().map(|n| n.1).collect::<Vec<_>>(),
            "baseline_groups": base.groups,
            "baseline_cores_total": base.cores_total(),
            "rss_bytes_per_group_over_baseline":
                r.rss_max().saturating_sub(base.rss_max()) as f64 / r.groups as f64,
        });
        println!("{j}");
    }
    failed.map_or(Ok(()), Err)
}
