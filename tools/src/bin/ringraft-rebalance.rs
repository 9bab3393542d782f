//! `ringraft-rebalance`: how long the balancer takes to spread a loaded
//! cluster over new nodes, and how long any range stops taking writes
//! meanwhile (issue #17's benchmark: "time to rebalance after adding 3
//! nodes to a 3-node cluster holding 1 GiB, and the longest
//! write-unavailability of any range during the moves").
//!
//! Each run:
//! 1. starts a local cluster of `--nodes` nodes (ranges of 3 replicas,
//!    `--ranges` ranges cut at `r001`, `r002`, ..., the balancer on);
//! 2. fills it with `--data-mib` MiB of values (`--value-bytes` each,
//!    spread evenly over the ranges);
//! 3. starts one probe per range: a client writing one key of that range
//!    again and again (each after the last one's answer, at most one per
//!    `--probe-interval-ms`), recording when each was acknowledged;
//! 4. measures the probes for `--baseline-secs` with nothing moving: the
//!    longest gap between two acknowledged writes of a range in a still
//!    cluster, the baseline of the same run;
//! 5. starts `--add` nodes with `--join` and measures the time until the
//!    replicas are balanced and stay so for `--hold-secs` (every node
//!    registered, every range 3 voters and no learner, replicas per node
//!    within the balancer's tolerance of the mean: 10%, and at least one
//!    replica), then until the leaders are too (each node within one of
//!    the mean; the issue's bars), for at most `--leader-wait-secs` more;
//! 6. reports the rebalance time (the replicas'; the leaders' apart), the
//!    longest gap of any range from the first join to the replicas'
//!    balance (and which range), the snapshot bytes the nodes sent
//!    (`ringraft_snapshot_bytes_sent_total`), their rate as a ratio to the
//!    snapshot budget of the sending nodes (`--snapshot-send-bytes-per-sec`,
//!    default 64 MiB/s per node), and the CPU all node processes used from
//!    the first join to the end of the wait.
//!
//! With `--runs N` the whole run repeats on a fresh cluster and the summary
//! gives min / median / max.
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/ringraft-rebalance --data-mib 1024 --runs 3
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ringraft::local_cluster::{run_on_executor, LocalCluster, LocalClusterConfig};
use ringraft::meta::{MetaState, NodeState, ReplicaRole};
use ringraft_tools::cpu::process_secs;

/// Node processes one run starts at most, founders and joiners together
/// (`tools/scale.sh` measures up to 9 on this 2-core box too).
const NODES_MAX: u64 = 9;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Time to rebalance a loaded cluster over new nodes, and the longest write gap of any range meanwhile"
)]
struct Args {
    /// Nodes the cluster starts with.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=7))]
    nodes: u64,
    /// Nodes added with `--join` once the data is in.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
    add: u64,
    /// Ranges (Raft groups) the keyspace is cut into.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(2..=999))]
    ranges: u64,
    /// Shards per node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Data written before the joins, in MiB (values only; each replica
    /// holds all of its range's).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    data_mib: u64,
    /// Bytes per value of the fill.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    value_bytes: u64,
    /// Fill writes in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    fill_concurrency: u64,
    /// Each range's probe writes at most once per this many ms (0: each
    /// write right after the last one's answer, a saturating load). At 10
    /// ms, 24 probes alone kept this 2-core box busy.
    #[arg(long, default_value_t = 100)]
    probe_interval_ms: u64,
    /// Seconds the probes run before the joins (the still cluster's gaps).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    baseline_secs: u64,
    /// Seconds the cluster must stay balanced before the rebalance counts
    /// as done (it ends at the first instant of that stretch).
    #[arg(long, default_value_t = 10)]
    hold_secs: u64,
    /// Longest wait for the leaders' balance once the replicas are
    /// balanced, in seconds (leaders that keep changing, by elections or
    /// transfers, never hold still for `--hold-secs`).
    #[arg(long, default_value_t = 60)]
    leader_wait_secs: u64,
    /// Longest wait for the replicas' balance after the first join, in
    /// seconds.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: u64,
    /// The nodes' snapshot budget, bytes per second per node (passed on as
    /// `--snapshot-send-bytes-per-sec`; the rate's baseline).
    #[arg(long, default_value_t = ringraft::config::SNAPSHOT_SEND_BYTES_PER_SEC_DEFAULT)]
    snapshot_send_bytes_per_sec: u64,
    #[command(flatten)]
    local: ringraft_tools::LocalRuns,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Run {
    fill_secs: f64,
    fill_bytes: u64,
    /// Longest gap of any range's probe with nothing moving, seconds.
    still_gap_secs: f64,
    /// From the first join to the first instant of the held balance of
    /// replicas, and of leaders (None: not within `--leader-wait-secs`).
    rebalance_secs: f64,
    leaders_secs: Option<f64>,
    /// Longest gap of any range's probe over the rebalance, and its range
    /// (the probe's index: keys `r{index:03}/probe`).
    move_gap_secs: f64,
    move_gap_range: u64,
    /// Where that gap starts, seconds after the first join.
    move_gap_from_secs: f64,
    /// Probe writes acknowledged during the rebalance, and failed ones
    /// (each failure is retried by the next write).
    probe_acks: u64,
    probe_errors: u64,
    snapshot_bytes: u64,
    /// CPU seconds of every node process from the first join to the end
    /// of the wait (the hold, and the leaders' wait, included).
    cpu_secs: f64,
    /// Replicas that changed node (counted from the first and last maps).
    replicas_moved: u64,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("ringraft-rebalance: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let bin = ringraft_tools::node_bin(args.local.node_bin.as_ref())?;
    if args.nodes + args.add > NODES_MAX {
        return Err(format!(
            "--nodes {} plus --add {} is {} nodes: at most {NODES_MAX} on one box",
            args.nodes,
            args.add,
            args.nodes + args.add
        ));
    }
    let mut runs = Vec::new();
    for i in 1..=args.local.runs {
        eprintln!("== run {i} of {}", args.local.runs);
        let r = one_run(args, &bin)?;
        print_run(args, i, &r);
        runs.push(r);
    }
    if runs.len() > 1 {
        summary(args, &runs);
    }
    Ok(())
}

fn range_key(r: u64, name: &str) -> Vec<u8> {
    format!("r{r:03}/{name}").into_bytes()
}

fn one_run(args: &Args, bin: &std::path::Path) -> Result<Run, String> {
    let mut cfg = LocalClusterConfig::new(bin);
    cfg.die_with_parent = true;
    cfg.nodes = args.nodes;
    cfg.shards = args.shards;
    cfg.groups = args.ranges;
    cfg.balancer = true;
    cfg.metrics = true;
    cfg.replication_factor = Some(3);

    // Range r holds the keys r{r:03}/...: cut at r001, r002, ...
    cfg.split_keys = Some(
        (1..args.ranges)
            .map(|r| bytes::Bytes::from(format!("r{r:03}")))
            .collect(),
    );
    cfg.extra_args.push(format!(
        "--snapshot-send-bytes-per-sec={}",
        args.snapshot_send_bytes_per_sec
    ));
    // The ranges moved keep the size they were filled to (a split would
    // change what a move carries mid-run).
    args.local.configure(&mut cfg, true);
    let mut c = LocalCluster::start(cfg).map_err(|e| format!("starting the cluster: {e}"))?;
    c.wait_ready(Duration::from_secs(120))
        .map_err(|e| format!("{e}\nnode 1 log:\n{}", c.log_tail(1, 20)))?;

    // Fill.
    let addrs = c.client_addrs();
    let (fill_secs, fill_bytes) = {
        let a = args.clone();
        let addrs = addrs.clone();
        run_on_executor(move || fill(a, addrs))?
    };
    eprintln!(
        "filled {:.0} MiB in {fill_secs:.1} s ({:.1} MiB/s)",
        fill_bytes as f64 / (1 << 20) as f64,
        fill_bytes as f64 / (1 << 20) as f64 / fill_secs
    );

    // Probes, then the still window.
    let stop = Arc::new(AtomicBool::new(false));
    let probes = {
        let stop = stop.clone();
        let addrs = addrs.clone();
        let ranges = args.ranges;
        let every = Duration::from_millis(args.probe_interval_ms);
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || probe_all(addrs, ranges, every, stop))
            .map_err(|e| format!("an executor for the probes: {e}"))?
    };
    let still_from = Instant::now();
    std::thread::sleep(Duration::from_secs(args.baseline_secs));
    let first_map = {
        let addrs = addrs.clone();
        run_on_executor(move || async move {
            let cl = ringraft_tools::connect_patiently(addrs).await?;
            cl.meta_state().await.map_err(|e| e.to_string())
        })?
    };

    // Joins.
    let pids_before: Vec<(u32, f64)> = (1..=args.nodes)
        .filter_map(|id| c.pid(id))
        .filter_map(|p| Some((p, process_secs(p)?)))
        .collect();
    let snap_before = snapshot_bytes(&c);
    let t0 = Instant::now();
    let mut joined = Vec::new();
    for _ in 0..args.add {
        joined.push(
            c.join_node(1, true)
                .map_err(|e| format!("starting a node to join: {e}"))?,
        );
    }
    eprintln!("nodes {joined:?} joining; waiting for the balance");
    let total = (args.nodes + args.add) as usize;
    let hold = Duration::from_secs(args.hold_secs);
    let timeout = Duration::from_secs(args.timeout_secs);
    let balanced = {
        let addrs = addrs.clone();
        let leader_wait = Duration::from_secs(args.leader_wait_secs);
        run_on_executor(move || wait_balanced(addrs, total, t0, hold, timeout, leader_wait))
    };
    let cpu_secs: f64 = pids_before
        .iter()
        .map(|&(p, b)| process_secs(p).unwrap_or(b) - b)
        .chain(
            joined
                .iter()
                .filter_map(|&id| c.pid(id))
                .filter_map(process_secs),
        )
        .sum();
    let snap = snapshot_bytes(&c).saturating_sub(snap_before);
    stop.store(true, Ordering::Relaxed);
    let (acks, errors) = probes
        .join()
        .map_err(|e| format!("the probes' executor: {e:?}"))??;
    let b = match balanced {
        Ok(v) => v,
        Err(e) => {
            return Err(format!(
                "{e}\nnode 1 log:\n{}\nnode {} log:\n{}",
                c.log_tail(1, 20),
                joined[0],
                c.log_tail(joined[0], 20)
            ))
        }
    };
    let rebalance_end = t0 + b.replicas_at;
    let mut still_gap = Duration::ZERO;
    let mut move_gap = (Duration::ZERO, 0, Duration::ZERO);
    let mut probe_acks = 0;
    for (r, a) in acks.iter().enumerate() {
        still_gap = still_gap.max(longest_gap(a, still_from, t0).0);
        let (g, at) = longest_gap(a, t0, rebalance_end);
        if g > move_gap.0 {
            move_gap = (g, r as u64, at.saturating_duration_since(t0));
        }
        probe_acks += a.iter().filter(|&&t| t >= t0 && t <= rebalance_end).count() as u64;
    }
    Ok(Run {
        fill_secs,
        fill_bytes,
        still_gap_secs: still_gap.as_secs_f64(),
        rebalance_secs: b.replicas_at.as_secs_f64(),
        leaders_secs: b.leaders_at.map(|d| d.as_secs_f64()),
        move_gap_secs: move_gap.0.as_secs_f64(),
        move_gap_range: move_gap.1,
        move_gap_from_secs: move_gap.2.as_secs_f64(),
        probe_acks,
        probe_errors: errors,
        snapshot_bytes: snap,
        cpu_secs,
        replicas_moved: replicas_moved(&first_map, &b.map),
    })
}

/// Writes `data_mib` MiB of `value_bytes` values, range by range in turn,
/// `fill_concurrency` at a time. Returns (seconds, bytes).
async fn fill(args: Args, addrs: Vec<std::net::SocketAddr>) -> Result<(f64, u64), String> {
    let cl = Rc::new(ringraft_tools::connect_patiently(addrs).await?);
    let count = (args.data_mib << 20).div_ceil(args.value_bytes);
    // Bytes that differ from value to value would change nothing (nothing
    // compresses); a fixed pattern keeps the fill cheap for the generator.
    let value: Rc<[u8]> = (0..args.value_bytes)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let next = Rc::new(Cell::new(0u64));
    let failed: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.fill_concurrency)
        .map(|_| {
            let (cl, value, next, failed) =
                (cl.clone(), value.clone(), next.clone(), failed.clone());
            let ranges = args.ranges;
            glommio::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= count || failed.borrow().is_some() {
                        return;
                    }
                    next.set(i + 1);
                    let key = range_key(i % ranges, &format!("{:010}", i / ranges));
                    if let Err(e) = cl.put(&key, &value).await {
                        *failed.borrow_mut() = Some(format!(
                            "fill write {} failed: {e}",
                            String::from_utf8_lossy(&key)
                        ));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    if let Some(e) = failed.borrow_mut().take() {
        return Err(e);
    }
    Ok((started.elapsed().as_secs_f64(), count * args.value_bytes))
}

/// One writer per range until `stop`, a write at most every `every`: each
/// acknowledged write's instant, per range, and the count of failed
/// writes; an error if no client connects.
async fn probe_all(
    addrs: Vec<std::net::SocketAddr>,
    ranges: u64,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<Vec<Instant>>, u64), String> {
    let cl = match ringraft_tools::connect_patiently(addrs).await {
        Ok(c) => Rc::new(c),
        Err(e) => return Err(format!("the probes' client: {e}")),
    };
    let errors = Rc::new(Cell::new(0u64));
    let tasks: Vec<_> = (0..ranges)
        .map(|r| {
            let (cl, stop, errors) = (cl.clone(), stop.clone(), errors.clone());
            glommio::spawn_local(async move {
                let key = range_key(r, "probe");
                let mut acks = Vec::new();
                let mut n = 0u64;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        glommio::timer::sleep(next - now).await;
                    }
                    next = Instant::now().max(next + every);
                    n += 1;
                    match cl.put(&key, &n.to_le_bytes()).await {
                        Ok(()) => acks.push(Instant::now()),
                        Err(_) => errors.set(errors.get() + 1),
                    }
                }
                acks
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await);
    }
    Ok((all, errors.get()))
}

/// Longest stretch of `[from, to]` without an acknowledged write, and
/// where it starts (the window's edges count as bounds: a range silent
/// for the whole window has a gap of the whole window).
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> (Duration, Instant) {
    let mut last = from;
    let mut longest = (Duration::ZERO, from);
    for &t in acks.iter().filter(|&&t| t > from && t <= to) {
        if t - last > longest.0 {
            longest = (t - last, last);
        }
        last = t;
    }
    if to.saturating_duration_since(last) > longest.0 {
        longest = (to - last, last);
    }
    longest
}

/// The issue's balance, as (replicas, leaders): replicas when there are
/// `nodes` active nodes, every range has 3 voters on 3 nodes and no
/// learner, and each node holds within 10% of the mean (at least one);
/// leaders when, moreover, each node leads within one of the mean.
fn balanced(m: &MetaState, leaders: &[u64], nodes: usize) -> (bool, bool) {
    let active: Vec<u64> = m
        .nodes()
        .filter(|n| n.state == NodeState::Active)
        .map(|n| n.id)
        .collect();
    if active.len() != nodes || m.ranges().is_empty() {
        return (false, false);
    }
    let ranges = m.ranges();
    if !ranges
        .iter()
        .all(|d| d.replicas.len() == 3 && d.replicas.iter().all(|r| r.role == ReplicaRole::Voter))
    {
        return (false, false);
    }
    let replicas = ranges.len() as f64 * 3.0;
    let mean = replicas / nodes as f64;
    let slack = (mean * 0.10).max(1.0);
    let held_ok = active.iter().all(|&n| {
        let held = ranges.iter().filter(|d| d.replica_on(n).is_some()).count() as f64;
        (held - mean).abs() <= slack
    });
    let led_mean = ranges.len() as f64 / nodes as f64;
    let led_ok = leaders.iter().filter(|&&l| l != 0).count() >= ranges.len()
        && active.iter().all(|&n| {
            let led = leaders.iter().filter(|&&l| l == n).count() as f64;
            (led - led_mean).abs() <= 1.0
        });
    (held_ok, held_ok && led_ok)
}

/// When (after the first join) the replicas were balanced, and the
/// leaders too (`None`: not within `--leader-wait-secs` after the
/// replicas), each the first instant of a stretch that held for
/// `--hold-secs`; the map then.
struct Balance {
    replicas_at: Duration,
    leaders_at: Option<Duration>,
    map: MetaState,
}

/// Polls the map every 250 ms until replicas and leaders have been
/// balanced for `hold`, or the replicas have and `leader_wait` passed
/// since (see [`Balance`]).
async fn wait_balanced(
    addrs: Vec<std::net::SocketAddr>,
    nodes: usize,
    t0: Instant,
    hold: Duration,
    timeout: Duration,
    leader_wait: Duration,
) -> Result<Balance, String> {
    let cl = ringraft_tools::connect_patiently(addrs).await?;
    let (mut since_replicas, mut since_all) = (None::<Instant>, None::<Instant>);
    let mut replicas_at = None;
    let mut last = String::new();
    loop {
        let now = Instant::now();
        if now - t0 > timeout {
            return Err(format!(
                "replicas not balanced {} s after the first join; last map: {last}",
                timeout.as_secs()
            ));
        }
        if let (Ok(m), Ok(())) = (cl.meta_state().await, cl.refresh_map().await) {
            let (replicas, all) = balanced(&m, &cl.leaders(), nodes);
            if !replicas {
                last = format!("{m:?}");
            }
            let held = |since: &mut Option<Instant>, ok: bool| {
                if !ok {
                    *since = None;
                    return None;
                }
                let s = *since.get_or_insert(now);
                (now - s >= hold).then_some(s - t0)
            };
            if let Some(at) = held(&mut since_replicas, replicas) {
                replicas_at.get_or_insert(at);
            }
            if let Some(at) = held(&mut since_all, all) {
                return Ok(Balance {
                    replicas_at: replicas_at.unwrap_or(at).min(at),
                    leaders_at: Some(at),
                    map: m,
                });
            }
            if let Some(r) = replicas_at {
                if now - t0 > r + hold + leader_wait {
                    return Ok(Balance {
                        replicas_at: r,
                        leaders_at: None,
                        map: m,
                    });
                }
            }
        }
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
}

fn replicas_moved(before: &MetaState, after: &MetaState) -> u64 {
    after
        .ranges()
        .iter()
        .map(|d| {
            let was = before.ranges().iter().find(|b| b.id == d.id);
            d.replicas
                .iter()
                .filter(|r| was.is_none_or(|b| b.replica_on(r.node).is_none()))
                .count() as u64
        })
        .sum()
}

fn snapshot_bytes(c: &LocalCluster) -> u64 {
    c.nodes
        .iter()
        .map(|n| c.metric_sum(n.id, "ringraft_snapshot_bytes_sent_total") as u64)
        .sum()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Snapshot MiB/s over the rebalance, as a ratio to the budget of the
/// nodes that held the data (the founders send the snapshots).
fn budget_ratio(args: &Args, r: &Run) -> f64 {
    let rate = r.snapshot_bytes as f64 / r.rebalance_secs.max(1e-9);
    rate / (args.snapshot_send_bytes_per_sec as f64 * args.nodes as f64)
}

fn print_run(args: &Args, i: u64, r: &Run) {
    println!(
        "run {i}: {} -> {} nodes, {} ranges, {:.0} MiB filled in {:.1} s",
        args.nodes,
        args.nodes + args.add,
        args.ranges,
        mib(r.fill_bytes),
        r.fill_secs
    );
    println!(
        "  replicas balanced in {:.1} s: {} replicas moved, {:.0} MiB of snapshots ({:.1} MiB/s, {:.2} of the founders' budget), {:.1} CPU s ({:.0} ms per MiB moved)",
        r.rebalance_secs,
        r.replicas_moved,
        mib(r.snapshot_bytes),
        mib(r.snapshot_bytes) / r.rebalance_secs.max(1e-9),
        budget_ratio(args, r),
        r.cpu_secs,
        r.cpu_secs * 1000.0 / mib(r.snapshot_bytes).max(1e-9)
    );
    match r.leaders_secs {
        Some(l) => println!("  leaders balanced {l:.1} s after the first join"),
        None => println!(
            "  leaders not balanced (each node within one of the mean, held {} s) within {} s of the replicas",
            args.hold_secs, args.leader_wait_secs
        ),
    }
    println!(
        "  longest write gap of any range: {:.3} s during the moves (range r{:03}, from {:.1} s after the first join), {:.3} s with nothing moving ({:.1}x); {} probe writes acknowledged during the moves, {} failed",
        r.move_gap_secs,
        r.move_gap_range,
        r.move_gap_from_secs,
        r.still_gap_secs,
        r.move_gap_secs / r.still_gap_secs.max(1e-9),
        r.probe_acks,
        r.probe_errors
    );
    println!(
        "{}",
        serde_json::json!({
            "run": i,
            "nodes": args.nodes,
            "added": args.add,
            "ranges": args.ranges,
            "shards": args.shards,
            "fill_bytes": r.fill_bytes,
            "fill_secs": r.fill_secs,
            "rebalance_secs": r.rebalance_secs,
            "leaders_balanced_secs": r.leaders_secs,
            "replicas_moved": r.replicas_moved,
            "snapshot_bytes": r.snapshot_bytes,
            "snapshot_budget_ratio": budget_ratio(args, r),
            "cpu_secs": r.cpu_secs,
            "move_gap_secs": r.move_gap_secs,
            "move_gap_range": r.move_gap_range,
            "move_gap_from_secs": r.move_gap_from_secs,
            "still_gap_secs": r.still_gap_secs,
            "probe_acks": r.probe_acks,
            "probe_errors": r.probe_errors,
        })
    );
}

fn summary(args: &Args, runs: &[Run]) {
    let stat = |f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        format!("{:.2} [{:.2}-{:.2}]", v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!("summary of {} runs: median [min-max]", runs.len());
    println!(
        "  rebalance s:                 {}",
        stat(&|r| r.rebalance_secs)
    );
    println!(
        "  snapshot MiB:                {}",
        stat(&|r| mib(r.snapshot_bytes))
    );
    println!(
        "  ratio to the founders' budget: {}",
        stat(&|r| budget_ratio(args, r))
    );
    println!("  CPU s:                       {}", stat(&|r| r.cpu_secs));
    println!(
        "  longest gap, moves s:        {}",
        stat(&|r| r.move_gap_secs)
    );
    println!(
        "  longest gap, still s:        {}",
        stat(&|r| r.still_gap_secs)
    );
    println!(
        "  gap ratio (moves / still):   {}",
        stat(&|r| r.move_gap_secs / r.still_gap_secs.max(1e-9))
    );
}
