//! What the generator asks for: keys by distribution, values of a size,
//! reads or writes by ratio; all from explicit seeds.

use std::fmt;

/// The seeded generator shared with the core and the simulator.
pub use ringraft::rng::Rng;

/// How keys are drawn from `0..keys`.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDist {
    Uniform,
    /// Zipfian with exponent theta in (0, 1) (YCSB's default is 0.99).
    Zipf(f64),
    /// 0, 1, 2, ... (wrapping), interleaved across workers.
    Sequential,
}

impl std::str::FromStr for KeyDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(KeyDist::Uniform),
            "sequential" => Ok(KeyDist::Sequential),
            _ => {
                let t = s
                    .strip_prefix("zipf:")
                    .ok_or_else(|| format!("{s}: expected uniform, sequential or zipf:THETA"))?;
                let theta: f64 = t
                    .parse()
                    .map_err(|_| format!("{s}: THETA is not a number"))?;
                if !(theta > 0.0 && theta < 1.0) {
                    return Err(format!("{s}: THETA must be in (0, 1)"));
                }
                Ok(KeyDist::Zipf(theta))
            }
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => write!(f, "uniform"),
            KeyDist::Zipf(t) => write!(f, "zipf:{t}"),
            KeyDist::Sequential => write!(f, "sequential"),
        }
    }
}

/// Jim Gray's zipfian generator (as in YCSB): rank 0 is the most popular.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

/// Draws keys for one worker.
#[derive(Debug, Clone)]
pub struct Keys {
    dist: KeyDist,
    keys: u64,
    zipf: Option<Zipf>,
    next: u64,
    stride: u64,
}

impl Keys {
    /// Worker `worker` of `workers` (sequential keys interleave).
    pub fn new(dist: KeyDist, keys: u64, zipf: Option<Zipf>, worker: u64, workers: u64) -> Keys {
        Keys {
            dist,
            keys: keys.max(1),
            zipf,
            next: worker,
            stride: workers.max(1),
        }
    }
    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        match self.dist {
            KeyDist::Uniform => rng.below(self.keys),
            KeyDist::Zipf(_) => self.zipf.as_ref().expect("built for zipf").sample(rng),
            KeyDist::Sequential => {
                let k = self.next % self.keys;
                self.next += self.stride;
                k
            }
        }
    }
}

/// The bytes of key number `k`: `key` and `k` in decimal, at least 12
/// digits (`format!("key{k:012}")`, without its allocation and
/// formatter: this runs once per operation).
pub fn key_bytes(k: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"key");
    push_decimal(out, k, 12);
}

/// Appends `n` in decimal, left-padded with zeros to `width` digits.
pub fn push_decimal(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - at;
    out.resize(out.len() + width.saturating_sub(len), b'0');
    out.extend_from_slice(&digits[at..]);
}

/// Keys that cut this generator's keys `0..keys` into `ranges` ranges of
/// equal counts (the local cluster's `--initial-split-keys`, so a run
/// starts balanced over its groups). `None` when there are fewer keys
/// than ranges: the node's default cuts then.
pub fn split_keys(keys: u64, ranges: u64) -> Option<Vec<bytes::Bytes>> {
    if keys < ranges {
        return None;
    }
    let mut k = Vec::new();
    Some(
        (1..ranges)
            .map(|i| {
                key_bytes(
                    (u128::from(i) * u128::from(keys) / u128::from(ranges)) as u64,
                    &mut k,
                );
                bytes::Bytes::copy_from_slice(&k)
            })
            .collect(),
    )
}

/// Value sizes: fixed `N` or a range `MIN-MAX` (uniform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl std::str::FromStr for ValueSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("{s}: expected N or MIN-MAX bytes"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (p(a)?, p(b)?),
            None => (p(s)?, p(s)?),
        };
        if min < 16 || min > max {
            return Err(format!(
                "{s}: sizes must be at least 16 bytes (a value carries a unique stamp) and MIN <= MAX"
            ));
        }
        Ok(ValueSize { min, max })
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// A value of a size drawn from `size`, stamped with `stamp` (unique per
/// write) in its first 16 bytes.
pub fn value_bytes(size: ValueSize, stamp: (u64, u64), rng: &mut Rng, out: &mut Vec<u8>) {
    let n = size.min + rng.below((size.max - size.min + 1) as u64) as usize;
    out.clear();
    out.extend_from_slice(&stamp.0.to_le_bytes());
    out.extend_from_slice(&stamp.1.to_le_bytes());
    out.resize(n, b'v');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_decimals_read_as_the_formatter_writes_them() {
        let mut out = Vec::new();
        for k in [0, 7, 42, 999_999_999_999, 1_000_000_000_000, u64::MAX] {
            key_bytes(k, &mut out);
            assert_eq!(out, format!("key{k:012}").into_bytes());
            out.clear();
            push_decimal(&mut out, k, 0);
            assert_eq!(out, k.to_string().into_bytes());
        }
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(1000, 0.99);
        let mut rng = Rng(7);
        let mut hits = vec![0u32; 1000];
        for _ in 0..100_000 {
            hits[z.sample(&mut rng) as usize] += 1;
        }
        assert!(hits[0] > hits[10] && hits[10] > hits[500]);
        assert!(hits[0] > 5_000, "rank 0 is hot: {}", hits[0]);
    }

    #[test]
    fn settings_parse_with_clear_errors() {
        assert_eq!("zipf:0.9".parse::<KeyDist>(), Ok(KeyDist::Zipf(0.9)));
        assert!("zipf:1.5".parse::<KeyDist>().is_err());
        assert!("gauss".parse::<KeyDist>().is_err());
        assert_eq!(
            "16-1024".parse::<ValueSize>(),
            Ok(ValueSize { min: 16, max: 1024 })
        );
        assert!("8".parse::<ValueSize>().is_err());
    }

    #[test]
    fn sequential_keys_interleave_across_workers() {
        let mut rng = Rng(1);
        let mut a = Keys::new(KeyDist::Sequential, 10, None, 0, 2);
        let mut b = Keys::new(KeyDist::Sequential, 10, None, 1, 2);
        let ka: Vec<u64> = (0..3).map(|_| a.next(&mut rng)).collect();
        let kb: Vec<u64> = (0..3).map(|_| b.next(&mut rng)).collect();
        assert_eq!((ka, kb), (vec![0, 2, 4], vec![1, 3, 5]));
    }
}
