//! `ringraft-split`: how soon a range split off serves writes, and what
//! a split costs the writes of the range it leaves (issue #18's
//! benchmark).
//!
//! Each run:
//! 1. starts 3 local nodes of 1 shard each with one range of 3 replicas;
//!    splits by size are off (`--range-split-bytes=0`), so the splits
//!    measured are the ones this tool asks for;
//! 2. fills the range with `--data-mib` MiB of `--value-bytes` values
//!    under keys `k/0000000000`, `k/0000000001`, ...;
//! 3. starts a probe: a client writing one key (`a/probe`, below every
//!    split key: it stays in range 0) again and again, each write right
//!    after the last one's answer (1 x 1), recording every latency;
//! 4. **still**: `--still-secs` with nothing else going on;
//! 5. **splits**: `--splits` splits of range 0, one after the other,
//!    `--gap-ms` apart, split `i` at the fill key that leaves range 0
//!    `(splits + 1 - i) / (splits + 1)` of the fill (each new range holds
//!    an equal share): as `ringraft ctl split KEY` does (a new range id
//!    from the meta group, the split entry through range 0's log,
//!    answered once applied on its leader). For each split: the time from
//!    the ask to its answer, and to the first write acknowledged under
//!    the split key (so by the new range), through a client that learns
//!    the new range as any client does (`KeyNotInRange`, then the
//!    ranges read again); then `--settle-secs`.
//!
//! It reports the probe's writes, p50, p99.9 and max latency in both
//! windows (a write counts in each window it overlaps), and each split's
//! times; with `--runs N` a summary gives min / median / max over runs.
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/ringraft-split --data-mib 64 --splits 8 --runs 3
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ringraft::local_cluster::{run_on_executor, LocalCluster, LocalClusterConfig};
use ringraft_tools::connect_patiently;
use ringraft_tools::probe::{fill, probe, Window};

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Time for a split-off range to serve writes, and the parent's write latency during splits"
)]
struct Args {
    /// Values written into the range before the probe starts, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    data_mib: u64,
    /// Bytes per value of the fill.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    value_bytes: u64,
    /// Fill writes in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    fill_concurrency: u64,
    /// Splits per run.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    splits: u64,
    /// Pause between one split serving and the next split, ms.
    #[arg(long, default_value_t = 500)]
    gap_ms: u64,
    /// Seconds the probe is measured with nothing else going on.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    still_secs: u64,
    /// Seconds the splits window goes on after the last split served.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    #[command(flatten)]
    local: ringraft_tools::LocalRuns,
}

/// One split's times, ms: from the ask to its answer, and to the first
/// write acknowledged by the new range.
#[derive(Debug, Clone, Copy)]
struct SplitTimes {
    answered_ms: f64,
    serving_ms: f64,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Run {
    fill_secs: f64,
    still: Window,
    during: Window,
    splits: Vec<SplitTimes>,
}

fn main() {
    let args = Args::parse();
    let one = |bin: &std::path::Path| one_run(&args, bin);
    args.local.repeat("ringraft-split", one, print_run, summary);
}

fn fill_key(i: u64) -> Vec<u8> {
    format!("k/{i:010}").into_bytes()
}

const PROBE_KEY: &[u8] = b"a/probe";

fn one_run(args: &Args, bin: &std::path::Path) -> Result<Run, String> {
    let mut cfg = LocalClusterConfig::new(bin);
    cfg.die_with_parent = true;
    cfg.nodes = 3;
    cfg.shards = 1;
    cfg.groups = 1;
    cfg.replication_factor = Some(3);
    // Only the splits this tool asks for.
    args.local.configure(&mut cfg, true);
    let c = LocalCluster::start(cfg).map_err(|e| format!("starting the cluster: {e}"))?;
    c.wait_ready(Duration::from_secs(120))
        .map_err(|e| format!("{e}\nnode 1 log:\n{}", c.log_tail(1, 20)))?;
    let addrs = c.client_addrs();
    let count = (args.data_mib << 20).div_ceil(args.value_bytes);
    let fill_secs = {
        let (a, addrs) = (args.clone(), addrs.clone());
        run_on_executor(move || fill(addrs, count, a.value_bytes, a.fill_concurrency, fill_key))?
    };
    eprintln!(
        "filled range 0 with {} MiB in {fill_secs:.1} s",
        args.data_mib
    );
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, addrs) = (stop.clone(), addrs.clone());
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || probe(addrs, vec![PROBE_KEY.to_vec()], stop))
            .map_err(|e| format!("an executor for the probe: {e}"))?
    };
    // The probe's first write connects; the still window starts after.
    std::thread::sleep(Duration::from_secs(1));
    let still_from = Instant::now();
    std::thread::sleep(Duration::from_secs(args.still_secs));
    let splits_from = Instant::now();
    let split_times = {
        let (a, addrs) = (args.clone(), addrs.clone());
        run_on_executor(move || split_all(a, addrs, count))
    };
    let split_times = match split_times {
        Ok(t) => t,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("{e}\nnode 1 log:\n{}", c.log_tail(1, 20)));
        }
    };
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let splits_to = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let samples = prober
        .join()
        .map_err(|e| format!("the probe's executor: {e:?}"))??;
    Ok(Run {
        fill_secs,
        still: Window::of(&samples[0], still_from, splits_from),
        during: Window::of(&samples[0], splits_from, splits_to),
        splits: split_times,
    })
}

/// The splits, one after the other: each one's times.
async fn split_all(
    args: Args,
    addrs: Vec<std::net::SocketAddr>,
    count: u64,
) -> Result<Vec<SplitTimes>, String> {
    let cl = connect_patiently(addrs).await?;
    let n = args.splits;
    let mut out = Vec::new();
    for i in 1..=n {
        let key = fill_key(count * (n + 1 - i) / (n + 1));
        let t0 = Instant::now();
        let done = cl
            .split(&key)
            .await
            .map_err(|e| format!("split {i} at {}: {e}", String::from_utf8_lossy(&key)))?;
        let answered = t0.elapsed();
        cl.put(&key, b"first write of the new range")
            .await
            .map_err(|e| format!("the first write of range {}: {e}", done.right))?;
        let serving = t0.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "split {i}: range 0 at {} -> range {}: answered in {:.1} ms, serving in {:.1} ms",
            String::from_utf8_lossy(&key),
            done.right,
            ms(answered),
            ms(serving)
        );
        out.push(SplitTimes {
            answered_ms: ms(answered),
            serving_ms: ms(serving),
        });
        glommio::timer::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    Ok(out)
}

/// (p50, max) of `xs`.
fn p50_max(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let p50 = xs
        .get(xs.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0);
    (p50, xs.last().copied().unwrap_or(0.0))
}

fn print_run(i: u64, r: &Run) {
    println!("run {i}: fill {:.1} s", r.fill_secs);
    for (name, w) in [("still", r.still), ("splits", r.during)] {
        println!(
            "  {name:7} probe (range 0): {} writes, {} failed, p50 {} us, p99.9 {} us, max {} us",
            w.writes, w.failed, w.p50_us, w.p999_us, w.max_us
        );
    }
    let (a50, amax) = p50_max(r.splits.iter().map(|s| s.answered_ms).collect());
    let (s50, smax) = p50_max(r.splits.iter().map(|s| s.serving_ms).collect());
    println!(
        "  {} splits: answered p50 {a50:.1} ms, max {amax:.1} ms; new range serving p50 {s50:.1} ms, max {smax:.1} ms",
        r.splits.len()
    );
    println!(
        "  probe p99.9 during splits / still: {:.2}",
        r.during.p999_us as f64 / r.still.p999_us.max(1) as f64
    );
}

/// min / median / max over runs of each figure.
fn summary(runs: &[Run]) {
    let mmm = |mut xs: Vec<f64>| -> String {
        xs.sort_by(f64::total_cmp);
        format!(
            "{:.1} / {:.1} / {:.1}",
            xs[0],
            xs[xs.len() / 2],
            xs[xs.len() - 1]
        )
    };
    let of = |f: &dyn Fn(&Run) -> f64| mmm(runs.iter().map(f).collect());
    println!("summary over {} runs (min / median / max):", runs.len());
    println!(
        "  new range serving, p50 per run: {} ms",
        of(&|r| p50_max(r.splits.iter().map(|s| s.serving_ms).collect()).0)
    );
    println!(
        "  new range serving, max per run: {} ms",
        of(&|r| p50_max(r.splits.iter().map(|s| s.serving_ms).collect()).1)
    );
    println!(
        "  probe p99.9 still: {} us",
        of(&|r| r.still.p999_us as f64)
    );
    println!(
        "  probe p99.9 during splits: {} us",
        of(&|r| r.during.p999_us as f64)
    );
    println!(
        "  ratio during / still: {}",
        of(&|r| r.during.p999_us as f64 / r.still.p999_us.max(1) as f64)
    );
}
