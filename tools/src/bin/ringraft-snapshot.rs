//! `ringraft-snapshot`: what a large snapshot costs the writes of the
//! shard that takes it and of the shard that installs it, and the memory
//! a stored byte costs (issue #21's benchmark).
//!
//! Each run:
//! 1. starts 3 local nodes of 1 shard each, with 2 ranges of 3 replicas
//!    (range 0 holds the keys below `r001`, range 1 the rest), so both
//!    ranges are groups of the same shard on every node; snapshots by
//!    entry count are off (`--snapshot-entries 0`), so none is taken by
//!    the probes' writes while they are measured;
//! 2. fills range 0 with `--data-mib` MiB of `--value-bytes` values
//!    (snapshots by bytes, `snapshot-log-bytes`, are taken meanwhile:
//!    the threshold's case, under the fill's own load);
//! 3. starts two probes, each a client writing one 8-byte value again and
//!    again, each write right after the last one's answer (1 x 1): one on
//!    a key of range 0, one on a key of range 1, recording every write's
//!    latency;
//! 4. **still**: `--still-secs` with nothing else going on (the
//!    snapshots each node takes meanwhile are counted: none is due by
//!    entries or bytes, so they are the WAL unpinning pass's);
//! 5. **snapshot**: asks every node for a snapshot of range 0 (as
//!    `ringraft ctl snapshot 0` does) and waits until every node's
//!    snapshot file of range 0 is newer than before the ask (the
//!    snapshot's time), then `--settle-secs` more;
//! 6. the resident memory of each node (`VmRSS`), per byte of keys and
//!    values it stores;
//! 7. **install** (unless `--no-install`): range 1's leadership moves to
//!    node 3 (so the range-1 probe goes through the installing shard),
//!    range 0's away from it; node 3's replica of range 0 is removed, and
//!    added back, empty: the leader seeds it with the whole range's
//!    snapshot; from the add until it is a voter again, then
//!    `--settle-secs` more.
//!
//! It reports, per window and probe, the writes, p50, p99.9 and max
//! latency; a write counts in each window it overlaps. With `--runs N`
//! the whole run repeats on a fresh cluster and a summary gives min /
//! median / max of the figures the issue sets targets for.
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/ringraft-snapshot --data-mib 400 --runs 3
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ringraft::local_cluster::{run_on_executor, LocalCluster, LocalClusterConfig};
use ringraft::wire::{Op, Reply};
use ringraft_tools::connect_patiently;
use ringraft_tools::cpu::process_rss_bytes;
use ringraft_tools::probe::{fill, probe, Window};

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Write latency while a large range is snapshotted and installed, and resident memory per stored byte"
)]
struct Args {
    /// Values written into range 0 before the probes start, in MiB.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=65536))]
    data_mib: u64,
    /// Bytes per value of the fill.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    value_bytes: u64,
    /// Fill writes in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    fill_concurrency: u64,
    /// Seconds the probes are measured with nothing else going on.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    still_secs: u64,
    /// Seconds each window goes on after its event ended (a stall that
    /// follows the event still counts).
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Longest wait for the snapshot files, and for the install, seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: u64,
    /// Skip the install window.
    #[arg(long)]
    no_install: bool,
    #[command(flatten)]
    local: ringraft_tools::LocalRuns,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Run {
    fill_secs: f64,
    fill_bytes: u64,
    /// Per window ("still", "snapshot", "install"), per probe (range 0,
    /// range 1).
    windows: Vec<(&'static str, [Window; 2])>,
    /// From the ask to every node's new snapshot file of range 0.
    snapshot_secs: f64,
    /// The largest of those files, bytes.
    snapshot_file_bytes: u64,
    /// From the add of node 3's empty replica to its promotion.
    install_secs: Option<f64>,
    /// Each node's resident memory after the snapshot, bytes.
    rss: Vec<u64>,
    /// Node 3's resident memory after the install, bytes.
    rss_installed: Option<u64>,
    /// Bytes of keys and values each node stores.
    stored_bytes: u64,
    /// Keys each node stores.
    keys: u64,
    /// Each node's resident memory before the fill (ready, empty), bytes.
    rss_empty: Vec<u64>,
    /// Snapshots each node took in the still window: none is due by
    /// entries (off) or by the probes' few bytes, so these are the WAL
    /// unpinning pass's (`--wal-pin-bytes-max`).
    still_snapshots: Vec<u64>,
    /// Bytes each node wrote to its WAL in the still window (padding to
    /// blocks included).
    still_wal_bytes: Vec<u64>,
    /// Bytes of WAL segments each node's flushes took in the still window
    /// (what fills segments and pins them).
    still_wal_used: Vec<u64>,
}

impl Run {
    /// Resident bytes per key beyond the empty node and the stored bytes,
    /// for a node at `rss` that was at `empty` before the fill.
    fn per_key(&self, rss: u64, empty: u64) -> f64 {
        (rss as f64 - empty as f64 - self.stored_bytes as f64) / self.keys.max(1) as f64
    }
}

fn main() {
    let args = Args::parse();
    let one = |bin: &std::path::Path| one_run(&args, bin);
    args.local
        .repeat("ringraft-snapshot", one, print_run, summary);
}

/// The fill's key number `i` (range 0) and the probes' keys.
fn fill_key(i: u64) -> Vec<u8> {
    format!("r000/{i:010}").into_bytes()
}
const PROBE_KEYS: [&[u8]; 2] = [b"r000/probe", b"r001/probe"];

fn one_run(args: &Args, bin: &Path) -> Result<Run, String> {
    let mut cfg = LocalClusterConfig::new(bin);
    cfg.die_with_parent = true;
    cfg.nodes = 3;
    cfg.shards = 1;
    cfg.groups = 2;
    cfg.replication_factor = Some(3);

    cfg.split_keys = Some(vec![bytes::Bytes::from_static(b"r001")]);
    cfg.extra_args.push("--snapshot-entries=0".into());
    // Snapshots counted in the still window (`ringraft_snapshots_taken_total`).
    cfg.metrics = true;
    // The range measured stays one range whatever its size (give
    // --node-arg=--range-split-bytes=N to measure split ones).
    args.local.configure(&mut cfg, true);
    let c = LocalCluster::start(cfg).map_err(|e| format!("starting the cluster: {e}"))?;
    c.wait_ready(Duration::from_secs(120))
        .map_err(|e| format!("{e}\nnode 1 log:\n{}", c.log_tail(1, 20)))?;
    let addrs = c.client_addrs();
    let rss_empty: Vec<u64> = (1..=3)
        .map(|id| c.pid(id).and_then(process_rss_bytes).unwrap_or(0))
        .collect();

    // `--data-mib` MiB of `--value-bytes` values into range 0.
    let keys = (args.data_mib << 20).div_ceil(args.value_bytes);
    let fill_bytes = keys * args.value_bytes;
    let stored_bytes = fill_bytes + fill_key(0).len() as u64 * keys;
    let fill_secs = {
        let (a, addrs) = (args.clone(), addrs.clone());
        run_on_executor(move || fill(addrs, keys, a.value_bytes, a.fill_concurrency, fill_key))?
    };
    eprintln!(
        "filled range 0 with {:.0} MiB in {fill_secs:.1} s",
        fill_bytes as f64 / (1 << 20) as f64
    );

    // What the fill left behind settles first: its last snapshots by
    // bytes written, its WAL released, its dirty pages on the disk.
    settle_files(&c.nodes, Duration::from_secs(args.settle_secs));
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let stop = Arc::new(AtomicBool::new(false));
    let probes = {
        let (stop, addrs) = (stop.clone(), addrs.clone());
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || probe(addrs, PROBE_KEYS.iter().map(|k| k.to_vec()).collect(), stop))
            .map_err(|e| format!("an executor for the probes: {e}"))?
    };
    // The probes' first writes connect; the still window starts after.
    std::thread::sleep(Duration::from_secs(1));
    let counted =
        |name: &str| -> Vec<u64> { (1..=3).map(|id| c.metric_sum(id, name) as u64).collect() };
    let taken = || counted("ringraft_snapshots_taken_total");
    let wal_written = || counted("ringraft_wal_bytes_written_total");
    let wal_used = || counted("ringraft_wal_segment_bytes_used_total");
    let used_before = wal_used();
    let taken_before = taken();
    let wal_before = wal_written();
    let still_from = Instant::now();
    std::thread::sleep(Duration::from_secs(args.still_secs));
    // Metrics are published once a second: what the window's last
    // second took shows by then.
    std::thread::sleep(Duration::from_millis(1100));
    let since = |now: Vec<u64>, before: &[u64]| -> Vec<u64> {
        now.iter()
            .zip(before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect()
    };
    let still_snapshots = since(taken(), &taken_before);
    let still_wal_bytes = since(wal_written(), &wal_before);
    let still_wal_used = since(wal_used(), &used_before);

    // By hand, on every node.
    let before: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| latest_snapshot(&n.data_dir, 0).0)
        .collect();
    let snap_from = Instant::now();
    {
        let addrs = addrs.clone();
        run_on_executor(move || async move {
            let cl = connect_patiently(addrs).await?;
            for (n, _) in cl.nodes() {
                match cl.admin(n, 0, Op::Snapshot).await {
                    Ok(Reply::Done) => {}
                    other => return Err(format!("node {n}: snapshot of range 0: {other:?}")),
                }
            }
            Ok::<(), String>(())
        })?;
    }
    let deadline = snap_from + Duration::from_secs(args.timeout_secs);
    let snapshot_file_bytes = loop {
        let now: Vec<(u64, u64)> = c
            .nodes
            .iter()
            .map(|n| latest_snapshot(&n.data_dir, 0))
            .collect();
        if now.iter().zip(&before).all(|(a, b)| a.0 > *b) {
            break now.iter().map(|a| a.1).max().unwrap_or(0);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "the snapshot files of range 0 did not appear within {} s: {now:?} (before: {before:?})",
                args.timeout_secs
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let snap_done = Instant::now();
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let snap_to = Instant::now();
    let rss: Vec<u64> = (1..=3)
        .map(|id| c.pid(id).and_then(process_rss_bytes).unwrap_or(0))
        .collect();

    let mut install = None;
    if !args.no_install {
        let addrs = addrs.clone();
        let (from, done) = run_on_executor(move || reseed_on_node_3(addrs))?;
        std::thread::sleep(Duration::from_secs(args.settle_secs));
        install = Some((from, done, Instant::now()));
    }
    let rss_installed = install.map(|_| c.pid(3).and_then(process_rss_bytes).unwrap_or(0));
    stop.store(true, Ordering::Relaxed);
    let samples = probes
        .join()
        .map_err(|e| format!("the probes' executor: {e:?}"))??;
    let window = |from, to| [0, 1].map(|p| Window::of(&samples[p], from, to));
    let mut windows = vec![
        ("still", window(still_from, snap_from)),
        ("snapshot", window(snap_from, snap_to)),
    ];
    if let Some((from, _, to)) = install {
        windows.push(("install", window(from, to)));
    }
    Ok(Run {
        fill_secs,
        fill_bytes,
        windows,
        snapshot_secs: (snap_done - snap_from).as_secs_f64(),
        snapshot_file_bytes,
        install_secs: install.map(|(from, done, _)| (done - from).as_secs_f64()),
        rss,
        rss_installed,
        stored_bytes,
        keys,
        rss_empty,
        still_snapshots,
        still_wal_bytes,
        still_wal_used,
    })
}

/// Waits until no node's data directory has changed (files, sizes) for
/// `quiet`, at most a minute.
fn settle_files(nodes: &[ringraft::local_cluster::LocalNode], quiet: Duration) {
    fn listing(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => listing(&e.path(), out),
                Ok(m) => out.push((e.path(), m.len())),
                Err(_) => {}
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        let mut now = Vec::new();
        for n in nodes {
            listing(&n.data_dir, &mut now);
        }
        now.sort();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The newest snapshot file of `group` under `dir` (any depth): (its
/// index, its size in bytes); (0, 0) if none.
fn latest_snapshot(dir: &Path, group: u64) -> (u64, u64) {
    let mut best = (0, 0);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return best;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            best = best.max(latest_snapshot(&path, group));
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let parsed = name.strip_suffix(".snap").and_then(|stem| {
            let (g, i) = stem.split_once('-')?;
            Some((g.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
        });
        if let Some((g, i)) = parsed {
            if g == group {
                best = best.max((i, meta.len()));
            }
        }
    }
    best
}

/// Range 1's leadership to node 3 and range 0's away from it; node 3's
/// replica of range 0 removed and added back empty. Returns when the add
/// was asked and when it was done (the learner seeded by the leader's
/// snapshot and promoted).
async fn reseed_on_node_3(addrs: Vec<std::net::SocketAddr>) -> Result<(Instant, Instant), String> {
    let cl = connect_patiently(addrs).await?;
    let e = |what: &str| {
        let what = what.to_string();
        move |err: ringraft::client::Error| format!("{what}: {err}")
    };
    cl.transfer_leader(1, 3)
        .await
        .map_err(e("moving range 1's leadership to node 3"))?;
    cl.transfer_leader(0, 1)
        .await
        .map_err(e("moving range 0's leadership to node 1"))?;
    let remove = Op::RemoveNode {
        node: 3,
        below_replication_factor: true,
    };
    // Asked again while the transfers above settle.
    let settle = Instant::now() + Duration::from_secs(30);
    loop {
        match cl.admin_on_leader(0, remove.clone()).await {
            Ok(_) => break,
            Err(err) if Instant::now() < settle => {
                let _ = err;
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(e("removing node 3's replica of range 0")(err)),
        }
    }
    let gone = Instant::now() + Duration::from_secs(60);
    loop {
        let d = cl
            .leader_descriptor(0)
            .await
            .map_err(e("range 0's descriptor"))?;
        if d.replica_on(3).is_none() {
            break;
        }
        if Instant::now() > gone {
            return Err(format!(
                "node 3 is still a replica of range 0 a minute after its removal: {d:?}"
            ));
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let from = Instant::now();
    cl.add_replica(0, 3, "")
        .await
        .map_err(e("adding node 3's replica of range 0 back"))?;
    Ok((from, Instant::now()))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn print_run(i: u64, r: &Run) {
    println!(
        "run {i}: filled {:.0} MiB in {:.1} s; each node stores {:.0} MiB of keys and values",
        mib(r.fill_bytes),
        r.fill_secs,
        mib(r.stored_bytes)
    );
    println!(
        "  {:<9} {:<6} {:>7} {:>6} {:>9} {:>10} {:>10}",
        "window", "probe", "writes", "failed", "p50 us", "p99.9 us", "max us"
    );
    for (name, w) in &r.windows {
        for (p, w) in w.iter().enumerate() {
            println!(
                "  {:<9} {:<6} {:>7} {:>6} {:>9} {:>10} {:>10}",
                name,
                format!("range{p}"),
                w.writes,
                w.failed,
                w.p50_us,
                w.p999_us,
                w.max_us
            );
        }
    }
    println!(
        "  snapshot of range 0 on every node: {:.2} s, file {:.0} MiB",
        r.snapshot_secs,
        mib(r.snapshot_file_bytes)
    );
    if let Some(s) = r.install_secs {
        println!("  install on node 3 (add to promotion): {s:.2} s");
    }
    println!(
        "  in the still window, per node: snapshots taken {:?}, WAL written {:?} MiB, of segments filled {:?} MiB",
        r.still_snapshots,
        r.still_wal_bytes
            .iter()
            .map(|&b| mib(b).round() as u64)
            .collect::<Vec<_>>(),
        r.still_wal_used
            .iter()
            .map(|&b| (mib(b) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let per = |b: u64| b as f64 / r.stored_bytes.max(1) as f64;
    for (n, b) in r.rss.iter().enumerate() {
        let empty = r.rss_empty.get(n).copied().unwrap_or(0);
        println!(
            "  node {} resident after the snapshot: {:.0} MiB = {:.2} x stored; empty {:.0} MiB, then {:.0} B per key beyond the stored bytes",
            n + 1,
            mib(*b),
            per(*b),
            mib(empty),
            r.per_key(*b, empty)
        );
    }
    if let Some(b) = r.rss_installed {
        let empty = r.rss_empty.get(2).copied().unwrap_or(0);
        println!(
            "  node 3 resident after the install: {:.0} MiB = {:.2} x stored; {:.0} B per key beyond the empty node and the stored bytes",
            mib(b),
            per(b),
            r.per_key(b, empty)
        );
    }
}

/// min / median / max of `v`.
fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.2} [{:.2}-{:.2}]", v[v.len() / 2], v[0], v[v.len() - 1])
}

fn summary(runs: &[Run]) {
    println!("summary over {} runs: median [min-max]", runs.len());
    for (wi, (name, _)) in runs[0].windows.iter().enumerate() {
        for p in 0..2 {
            let max: Vec<f64> = runs
                .iter()
                .map(|r| r.windows[wi].1[p].max_us as f64 / 1000.0)
                .collect();
            let p999: Vec<f64> = runs
                .iter()
                .map(|r| r.windows[wi].1[p].p999_us as f64 / 1000.0)
                .collect();
            println!(
                "  {name:<9} range{p}: max {} ms, p99.9 {} ms",
                spread(max),
                spread(p999)
            );
        }
    }
    println!(
        "  snapshots taken in the still window, every node: {}",
        spread(
            runs.iter()
                .flat_map(|r| r.still_snapshots.iter().map(|&n| n as f64))
                .collect()
        )
    );
    println!(
        "  snapshot time: {} s",
        spread(runs.iter().map(|r| r.snapshot_secs).collect())
    );
    let per_node: Vec<f64> = runs
        .iter()
        .flat_map(|r| {
            r.rss
                .iter()
                .map(|&b| b as f64 / r.stored_bytes.max(1) as f64)
        })
        .collect();
    println!("  resident / stored, every node: {}", spread(per_node));
    let per_key: Vec<f64> = runs
        .iter()
        .flat_map(|r| {
            r.rss
                .iter()
                .zip(&r.rss_empty)
                .map(|(&b, &e)| r.per_key(b, e))
        })
        .collect();
    println!(
        "  resident bytes per key beyond the empty node and the stored bytes, every node: {}",
        spread(per_key)
    );
    let installed: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            r.rss_installed
                .map(|b| b as f64 / r.stored_bytes.max(1) as f64)
        })
        .collect();
    if !installed.is_empty() {
        println!(
            "  resident / stored, node 3 after the install: {}",
            spread(installed)
        );
    }
}
