//! Turning HdrHistograms (microseconds) into the report, the JSON summary
//! and the `.hgrm` percentile distribution.

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// The percentiles reported for reads and for writes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "p9999_us": self.p9999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
        })
    }

    /// One table row: `name count p50 p90 p99 p99.9 p99.99 max` in ms.
    pub fn row(&self, name: &str) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "{name:<6} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            self.count,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.p9999_us),
            ms(self.max_us)
        )
    }
}

/// Header of [`Latency::row`].
pub fn table_header() -> String {
    format!(
        "{:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms)",
        "op", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    )
}

/// The percentile distribution in HdrHistogram's `.hgrm` text layout
/// (values in milliseconds, as the HdrHistogram plotter expects).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    ));
    let scale = 1000.0; // µs → ms
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:>12.3} {:>2.12} {:>10} {}\n",
            v.value_iterated_to() as f64 / scale,
            q,
            total,
            inv
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n",
        h.mean() / scale,
        h.stdev() / scale
    ));
    out.push_str(&format!(
        "#[Max     = {:>12.3}, Total count    = {:>12}]\n",
        h.max() as f64 / scale,
        h.len()
    ));
    out.push_str(&format!(
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]\n",
        h.buckets(),
        h.distinct_values()
    ));
    out
}
