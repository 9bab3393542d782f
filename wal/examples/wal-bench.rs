//! WAL benchmark: the raw device baseline and the WAL, measured in the same run.
//!
//! cargo run --release -p ringraft-wal --example wal-bench -- [--dir DIR] [--runs N]
//!
//! Baselines (same executor, same file system, glommio DMA files):
//! - raw 4 KiB O_DIRECT write + fdatasync latency (p50/p99);
//! - raw sequential O_DIRECT write bandwidth (1 MiB writes, 4 in flight, one
//!   fdatasync at the end, counted in the time).
//!
//! WAL figures:
//! 1. one appender, 128-byte records: commit latency p50/p99 and p50 / raw p50,
//!    and the segment bytes each record took; the same with
//!    `tail_rewrite_bytes_max = 0` (every flush on a fresh block), the two
//!    in alternating order from run to run;
//! 2. 256 concurrent appenders, 128-byte records: durable records per second;
//! 3. 64 KiB records (128 appenders, 4 MiB flushes: two flushes' worth in flight): durable MB/s as a fraction of the raw bandwidth.
//!
//! Each figure is reported as min / median / max over `--runs` runs; the JSON
//! line carries the medians under the documented keys, plus the min and max.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::io::{DmaFile, OpenOptions};
use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;
use ringraft_wal::{DmaDisk, Wal, WalOptions};

#[derive(Parser, Debug)]
struct Args {
    /// Directory for the files (default: a temp dir under the current directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Commits measured per latency run.
    #[arg(long, default_value_t = 2000)]
    latency_ops: usize,
    /// Appenders of 64 KiB records (enough for two full flushes in flight).
    #[arg(long, default_value_t = 128)]
    bulk_appenders: usize,
    /// Flush size (batch_bytes_max) for the 64 KiB records, in MiB.
    #[arg(long, default_value_t = 4)]
    bulk_batch_mib: usize,
    /// MiB written per bandwidth run.
    #[arg(long, default_value_t = 512)]
    bandwidth_mib: usize,
}

#[derive(Default, Debug, Clone)]
struct Run {
    raw_sync_p50_us: f64,
    raw_sync_p99_us: f64,
    raw_seq_mb_s: f64,
    commit_p50_us: f64,
    commit_p99_us: f64,
    seg_bytes_per_record: f64,
    commit_p50_fresh_us: f64,
    seg_bytes_per_record_fresh: f64,
    records_per_s_256: f64,
    wal_64k_mb_s: f64,
    syncs_256: u64,
    batch_p50_256: u64,
}

/// Options for bulk 64 KiB records: flushes of `batch_mib`, two in flight.
fn bulk_opts(batch_mib: usize) -> WalOptions {
    WalOptions {
        batch_bytes_max: batch_mib << 20,
        queue_bytes_max: 4 * (batch_mib << 20),
        ..WalOptions::default()
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

async fn open_file(path: &std::path::Path, bytes: u64) -> DmaFile {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .expect("open");
    f.pre_allocate(bytes, false).await.expect("preallocate");
    f.fdatasync().await.expect("sync");
    f
}

async fn raw_sync_latency(dir: &std::path::Path, ops: usize) -> (f64, f64) {
    let path = dir.join("raw-sync.bin");
    let f = open_file(&path, (ops as u64 + 1) * 4096).await;
    let mut h = hist();
    for i in 0..ops {
        let mut buf = f.alloc_dma_buffer(4096);
        buf.as_bytes_mut().fill(i as u8);
        let t = Instant::now();
        f.write_at(buf, i as u64 * 4096).await.expect("write");
        f.fdatasync().await.expect("fdatasync");
        h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
    }
    f.close().await.unwrap();
    std::fs::remove_file(path).unwrap();
    (
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    )
}

async fn raw_bandwidth(dir: &std::path::Path, mib: usize) -> f64 {
    let path = dir.join("raw-seq.bin");
    let f = Rc::new(open_file(&path, mib as u64 * (1 << 20)).await);
    let t = Instant::now();
    let depth = 4;
    let lanes: Vec<_> = (0..depth)
        .map(|lane| {
            let f = f.clone();
            glommio::spawn_local(async move {
                let mut i = lane;
                while i < mib {
                    let mut buf = f.alloc_dma_buffer(1 << 20);
                    buf.as_bytes_mut().fill(i as u8);
                    f.write_at(buf, (i as u64) << 20).await.expect("write");
                    i += depth;
                }
            })
        })
        .collect();
    for l in lanes {
        l.await;
    }
    f.fdatasync().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    Rc::try_unwrap(f).unwrap().close().await.unwrap();
    std::fs::remove_file(path).unwrap();
    mib as f64 * 1.048576 / secs
}

async fn open_wal(dir: &std::path::Path, opts: WalOptions) -> Wal<DmaDisk> {
    let _ = std::fs::remove_dir_all(dir);
    let disk = DmaDisk::new(dir).unwrap();
    Wal::open(disk, opts, |_, _| {}).await.unwrap().0
}

/// One appender of 128-byte records: commit p50 and p99 (µs), and the
/// segment bytes a record took (`WalStats::segment_bytes_used`).
async fn wal_latency(dir: &std::path::Path, ops: usize, opts: WalOptions) -> (f64, f64, f64) {
    let wal = open_wal(&dir.join("wal-lat"), opts).await;
    let mut h = hist();
    let rec = [7u8; 128];
    for _ in 0..ops {
        let t = Instant::now();
        wal.append(&rec).await.unwrap();
        h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
    }
    let used = wal.stats().segment_bytes_used as f64 / ops as f64;
    wal.close().await.unwrap();
    (
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
        used,
    )
}

/// `appenders` closed-loop tasks appending `size`-byte records for `secs`.
/// Returns (records per second, MB/s, syncs, median records per flush).
async fn wal_throughput(
    dir: &std::path::Path,
    opts: WalOptions,
    appenders: usize,
    size: usize,
    secs: f64,
) -> (f64, f64, u64, u64) {
    let wal = Rc::new(open_wal(dir, opts).await);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let wal = wal.clone();
            glommio::spawn_local(async move {
                let rec = vec![a as u8; size];
                let mut n = 0u64;
                while Instant::now() < deadline {
                    wal.append(&rec).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await;
    }
    let el = t.elapsed().as_secs_f64();
    let s = wal.stats();
    if std::env::var("WAL_BENCH_DEBUG").is_ok() {
        eprintln!(
            "  appenders {appenders} size {size}: {total} records in {el:.2}s, {} flushes, records/flush p50 {}, flush (write+sync) p50 {} us p99 {} us",
            s.syncs,
            s.batch_records.value_at_quantile(0.5),
            s.sync_latency_us.value_at_quantile(0.5),
            s.sync_latency_us.value_at_quantile(0.99)
        );
    }
    Rc::try_unwrap(wal).ok().unwrap().close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (
        total as f64 / el,
        total as f64 * size as f64 / 1e6 / el,
        s.syncs,
        s.batch_records.value_at_quantile(0.5),
    )
}

fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let args = Args::parse();
    let _keep;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix(".wal-bench-")
                .tempdir_in(".")
                .expect("temp dir in the current directory");
            let p = t.path().to_path_buf();
            _keep = t;
            p
        }
    };
    let runs: Vec<Run> = LocalExecutorBuilder::default()
        .name("wal-bench")
        .make()
        .unwrap()
        .run(async move {
            let mut runs = Vec::new();
            for r in 0..args.runs {
                let mut run = Run::default();
                (run.raw_sync_p50_us, run.raw_sync_p99_us) =
                    raw_sync_latency(&dir, args.latency_ops).await;
                run.raw_seq_mb_s = raw_bandwidth(&dir, args.bandwidth_mib).await;
                let fresh = WalOptions {
                    tail_rewrite_bytes_max: 0,
                    ..WalOptions::default()
                };
                for i in 0..2 {
                    if (i + r) % 2 == 0 {
                        (
                            run.commit_p50_us,
                            run.commit_p99_us,
                            run.seg_bytes_per_record,
                        ) = wal_latency(&dir, args.latency_ops, WalOptions::default()).await;
                    } else {
                        (run.commit_p50_fresh_us, _, run.seg_bytes_per_record_fresh) =
                            wal_latency(&dir, args.latency_ops, fresh.clone()).await;
                    }
                }
                let (rps, _, syncs, bp50) = wal_throughput(
                    &dir.join("wal-256"),
                    WalOptions::default(),
                    256,
                    128,
                    args.secs,
                )
                .await;
                run.records_per_s_256 = rps;
                run.syncs_256 = syncs;
                run.batch_p50_256 = bp50;
                let (_, mbs, _, _) = wal_throughput(
                    &dir.join("wal-64k"),
                    bulk_opts(args.bulk_batch_mib),
                    args.bulk_appenders,
                    64 << 10,
                    args.secs,
                )
                .await;
                run.wal_64k_mb_s = mbs;
                eprintln!("run {}/{}: {:?}", r + 1, args.runs, run);
                runs.push(run);
            }
            runs
        });

    let col = |f: fn(&Run) -> f64| stats(&runs.iter().map(f).collect::<Vec<_>>());
    let raw_p50 = col(|r| r.raw_sync_p50_us);
    let raw_p99 = col(|r| r.raw_sync_p99_us);
    let raw_bw = col(|r| r.raw_seq_mb_s);
    let c50 = col(|r| r.commit_p50_us);
    let c99 = col(|r| r.commit_p99_us);
    let x50 = col(|r| r.commit_p50_us / r.raw_sync_p50_us);
    let seg = col(|r| r.seg_bytes_per_record);
    let c50f = col(|r| r.commit_p50_fresh_us);
    let segf = col(|r| r.seg_bytes_per_record_fresh);
    let xf = col(|r| r.commit_p50_us / r.commit_p50_fresh_us);
    let rps = col(|r| r.records_per_s_256);
    let bw = col(|r| r.wal_64k_mb_s);
    let frac = col(|r| r.wal_64k_mb_s / r.raw_seq_mb_s);
    let batch = col(|r| r.batch_p50_256 as f64);

    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "figure (runs: {})".replace("{}", &runs.len().to_string()),
        "min",
        "median",
        "max"
    );
    let row = |name: &str, (a, b, c): (f64, f64, f64)| {
        println!("{name:<44} {a:>12.2} {b:>12.2} {c:>12.2}")
    };
    row("raw 4K write+fdatasync p50 (us)", raw_p50);
    row("raw 4K write+fdatasync p99 (us)", raw_p99);
    row("raw sequential O_DIRECT (MB/s)", raw_bw);
    row("wal commit p50, 1 appender, 128 B (us)", c50);
    row("wal commit p99, 1 appender, 128 B (us)", c99);
    row("wal commit p50 / raw p50 (target <= 1.3)", x50);
    row("  segment bytes per record", seg);
    row("wal commit p50, a fresh block per flush (us)", c50f);
    row("  segment bytes per record", segf);
    row("commit p50 / p50 with a fresh block", xf);
    row("wal records/s, 256 appenders, 128 B", rps);
    row("  records per flush p50", batch);
    row("wal MB/s, 64 KiB records", bw);
    row("wal 64K MB/s / raw MB/s (target >= 0.7)", frac);

    let j = serde_json::json!({
        "runs": runs.len(),
        "raw_sync_p50_us": raw_p50.1, "raw_sync_p99_us": raw_p99.1,
        "commit_p50_us": c50.1, "commit_p99_us": c99.1,
        "commit_p50_x_raw": x50.1, "commit_p50_x_raw_min": x50.0, "commit_p50_x_raw_max": x50.2,
        "segment_bytes_per_record": seg.1, "segment_bytes_per_record_fresh": segf.1,
        "commit_p50_fresh_us": c50f.1, "commit_p50_x_fresh": xf.1, "commit_p50_x_fresh_min": xf.0, "commit_p50_x_fresh_max": xf.2,
        "records_per_s_256": rps.1, "records_per_s_256_min": rps.0, "records_per_s_256_max": rps.2,
        "raw_seq_mb_s": raw_bw.1, "wal_64k_mb_s": bw.1,
        "bandwidth_fraction_64k": frac.1, "bandwidth_fraction_64k_min": frac.0, "bandwidth_fraction_64k_max": frac.2,
    });
    println!("{j}");
}
