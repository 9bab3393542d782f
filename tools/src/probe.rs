//! Latency probes and fills shared by the benchmarks that watch writes
//! while something happens to a range (`ringraft-snapshot`,
//! `ringraft-split`).

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connect_patiently;

/// One probe write: when it was sent, its latency, whether it failed.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub latency: Duration,
    pub failed: bool,
}

/// Latency figures of one probe over one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub writes: usize,
    pub failed: usize,
    pub p50_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Window {
    /// The writes of `samples` that overlap `[from, to)`.
    pub fn of(samples: &[Sample], from: Instant, to: Instant) -> Window {
        let mut lat: Vec<u64> = Vec::new();
        let mut failed = 0;
        for s in samples {
            if s.at < to && s.at + s.latency > from {
                lat.push(s.latency.as_micros() as u64);
                failed += usize::from(s.failed);
            }
        }
        lat.sort_unstable();
        let q = |p: f64| -> u64 {
            if lat.is_empty() {
                return 0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i]
        };
        Window {
            writes: lat.len(),
            failed,
            p50_us: q(0.5),
            p999_us: q(0.999),
            max_us: lat.last().copied().unwrap_or(0),
        }
    }
}

/// Writes `count` values of `value_bytes` under `key(0..count)`,
/// `concurrency` at a time. Returns the seconds it took.
pub async fn fill(
    addrs: Vec<std::net::SocketAddr>,
    count: u64,
    value_bytes: u64,
    concurrency: u64,
    key: fn(u64) -> Vec<u8>,
) -> Result<f64, String> {
    let cl = Rc::new(connect_patiently(addrs).await?);
    let value: Rc<[u8]> = (0..value_bytes)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let next = Rc::new(std::cell::Cell::new(0u64));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (cl, value, next) = (cl.clone(), value.clone(), next.clone());
            glommio::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= count {
                        return Ok(());
                    }
                    next.set(i + 1);
                    let k = key(i);
                    if let Err(e) = cl.put(&k, &value).await {
                        next.set(count);
                        return Err(format!(
                            "fill write {} failed: {e}",
                            String::from_utf8_lossy(&k)
                        ));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A writer per key until `stop`, each write right after the last one's
/// answer, each on a client of its own (one probe's stalled write holds
/// nothing of another's): every write's sample, per key.
pub async fn probe(
    addrs: Vec<std::net::SocketAddr>,
    keys: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Vec<Sample>>, String> {
    let mut tasks = Vec::new();
    for key in keys {
        let cl = connect_patiently(addrs.clone()).await?;
        let stop = stop.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let at = Instant::now();
                let r = cl.put(&key, &n.to_le_bytes()).await;
                samples.push(Sample {
                    at,
                    latency: at.elapsed(),
                    failed: r.is_err(),
                });
            }
            samples
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    Ok(out)
}
