//! Splits by load (issue #18): a range whose leader serves at least
//! `--range-split-qps` requests a second, every second for
//! `--range-split-load-secs` seconds in a row, is split at a key that
//! halves its sampled load (CockroachDB's load-based splitting,
//! `kv.range_split.load_qps_threshold` 2500; TiKV's `split.qps-threshold`
//! with `split.detect-times` 10 s).
//!
//! Each range that receives requests gets a [`LoadSampler`] on its
//! leader's shard: O(1) per request (a counter and one reservoir draw, no
//! allocation once its slots hold keys), nothing per tick and nothing for
//! an idle range (a window is closed by the next request after it ends).
//! The split key is the median of a uniform sample of the keys asked in
//! the last whole second, kept only if each side gets at least a quarter
//! of the sample: a range whose load is one key is not split (a split
//! could not share it), as CockroachDB's decider refuses an unbalanced
//! key.

use bytes::Bytes;

use super::meta_sync::SplitCause;
use super::Shard;
use crate::group::GroupId;
use crate::rng::Rng;

impl Shard {
    /// Drops the load samplers of ranges that got no request for two
    /// seconds (called once a second, with the metrics: O(samplers)).
    pub(super) fn prune_load_samplers(&mut self) {
        if self.load_samplers.is_empty() {
            return;
        }
        let now_ms = self.load_clock.elapsed().as_millis() as u64;
        self.load_samplers.retain(|_, s| !s.idle(now_ms));
    }

    /// Counts a request on `key` to range `gid` if this shard leads it
    /// (`--range-split-qps` > 0), and hands a split at the key its load
    /// sampler found to the reporter task, as a split by size is
    /// (`Shard::maybe_split`): not for the meta group, nor a range whose
    /// bounds are not known or that still holds keys of an earlier split,
    /// nor again within `RANGE_SPLIT_RETRY_MS`. O(1).
    pub(super) fn note_load(&mut self, gid: GroupId, key: &[u8]) {
        if gid == crate::route::META_GROUP {
            return;
        }
        // A key the request's checks will refuse is not sampled (a slot
        // must not grow to a refused key's size).
        if key.len() > self.cfg.key_bytes_max {
            return;
        }
        let Some(g) = self.replicas.get(&gid) else {
            return;
        };
        if !super::splits::may_split(g) {
            return;
        }
        let now_ms = self.load_clock.elapsed().as_millis() as u64;
        let (qps, secs) = (self.cfg.range_split_qps, self.cfg.range_split_load_secs);
        let seed = self.cfg.node.rotate_left(32) ^ gid;
        let bounds = g.kv.bounds();
        let split = self
            .load_samplers
            .entry(gid)
            .or_insert_with(|| LoadSampler::new(now_ms, seed))
            .record(key, now_ms, qps, secs, &bounds.start);
        let Some(split) = split else {
            return;
        };
        if !bounds.contains(&split) {
            return;
        }
        if !self.split_clock(gid) {
            return;
        }
        self.stats.splits_asked_by_load += 1;
        tracing::info!(
            shard = self.cfg.shard,
            group = gid,
            qps,
            secs,
            key = %crate::meta::show_key(&split),
            "range served range-split-qps for range-split-load-secs: splitting it"
        );
        self.meta_link
            .splits_wanted
            .borrow_mut()
            .push((gid, split, SplitCause::Load));
    }
}

/// Keys sampled per second per range (a reservoir, uniform over the
/// second's requests; CockroachDB's decider keeps 20).
pub const LOAD_SPLIT_SAMPLES: usize = 32;

/// `--range-split-qps` by default: 0, never split by load. Measured (the
/// README's "Why splits by load are off by default", with the figures):
/// at CockroachDB's threshold (2500; TiKV's is 3000) one range split into
/// 8 in 30 s, all led from the same node (the balancer evens out leader
/// counts, not load), and the run wrote less than unsplit: here one range
/// carries tens of thousands of requests a second, and a split only adds
/// per-range work until its leaders move to other nodes or shards. Turn
/// it on where ranges are spread over many nodes.
pub const RANGE_SPLIT_QPS_DEFAULT: u64 = 0;

/// `--range-split-load-secs` by default: TiKV's `split.detect-times`
/// (10 one-second windows in a row).
pub const RANGE_SPLIT_LOAD_SECS_DEFAULT: u32 = 10;

/// The load of one range, as its leader sees it (see the module docs).
#[derive(Debug)]
pub struct LoadSampler {
    /// Start of the current one-second window (ms, the caller's clock).
    window_ms: u64,
    /// Requests in the current window.
    count: u64,
    /// Whole windows in a row at or over the threshold.
    hot: u32,
    /// The current window's reservoir: its first `filled` slots hold
    /// keys (slots keep their capacity from window to window).
    slots: Vec<Vec<u8>>,
    filled: usize,
    /// The last closed window's sample, sorted (the split key's source).
    last: Vec<Vec<u8>>,
    rng: Rng,
}

/// One window's length, ms.
const WINDOW_MS: u64 = 1_000;

impl LoadSampler {
    pub fn new(now_ms: u64, seed: u64) -> LoadSampler {
        LoadSampler {
            window_ms: now_ms,
            count: 0,
            hot: 0,
            slots: Vec::new(),
            filled: 0,
            last: Vec::new(),
            rng: Rng(seed),
        }
    }

    /// Whole windows in a row at or over the threshold so far.
    pub fn hot_secs(&self) -> u32 {
        self.hot
    }

    /// Whether no request came for two windows by `now_ms` (its state
    /// says nothing any more: the next request would reset it). The shard
    /// drops such samplers, so a range once busy and idle since holds no
    /// sample memory (`Shard::prune_load_samplers`).
    pub fn idle(&self, now_ms: u64) -> bool {
        now_ms >= self.window_ms + 2 * WINDOW_MS
    }

    /// Counts a request on `key` at `now_ms` (ms, never decreasing).
    /// Returns a split key when this request closed the
    /// `secs`-th window in a row with at least `qps` requests and the last
    /// window's sample has a key that gives each side at least a quarter
    /// of it, strictly above `start` (the range's first key). The sampler
    /// then starts counting afresh.
    pub fn record(
        &mut self,
        key: &[u8],
        now_ms: u64,
        qps: u64,
        secs: u32,
        start: &[u8],
    ) -> Option<Bytes> {
        let mut found = None;
        if now_ms >= self.window_ms + WINDOW_MS {
            let windows = (now_ms - self.window_ms) / WINDOW_MS;
            // A window is hot if it held `qps` requests; a gap of more
            // than one window means the ones after it held none.
            if windows == 1 && self.count >= qps {
                self.hot += 1;
            } else {
                self.hot = 0;
            }
            self.close_window();
            self.window_ms += windows * WINDOW_MS;
            if self.hot >= secs.max(1) {
                found = self.split_key(start);
                self.hot = 0;
            }
        }
        self.count += 1;
        self.offer(key);
        found
    }

    /// Reservoir sampling (Vitter's algorithm R) of the window's keys.
    fn offer(&mut self, key: &[u8]) {
        let slot = if self.filled < LOAD_SPLIT_SAMPLES {
            self.filled += 1;
            self.filled - 1
        } else {
            let j = self.rng.below(self.count) as usize;
            if j >= LOAD_SPLIT_SAMPLES {
                return;
            }
            j
        };
        if slot == self.slots.len() {
            self.slots.push(Vec::new());
        }
        let s = &mut self.slots[slot];
        if s.capacity() > 4 * key.len().max(64) {
            // Once a long key's, kept for short ones: given back.
            *s = Vec::new();
        }
        s.clear();
        s.extend_from_slice(key);
    }

    /// Keeps the window's sample, sorted, and starts the next window.
    fn close_window(&mut self) {
        // Swap the buffers: the last sample's slots become the next
        // window's (no allocation once both hold keys).
        let n = self.filled;
        std::mem::swap(&mut self.slots, &mut self.last);
        // `last` now holds the window's slots; trim to the filled ones
        // and move the rest back.
        while self.last.len() > n {
            let spare = self.last.pop().expect("len > n");
            self.slots.push(spare);
        }
        self.last.sort_unstable();
        self.count = 0;
        self.filled = 0;
    }

    /// The key of the last window's sample that best halves it: its
    /// median, or the next larger sampled key when many requests share
    /// the median (the hot key then goes left). Kept only if each side
    /// holds at least a quarter of the sample and it lies above `start`.
    fn split_key(&self, start: &[u8]) -> Option<Bytes> {
        let s = &self.last;
        if s.len() < 4 {
            return None;
        }
        let median = &s[s.len() / 2];
        let above = s.partition_point(|k| k <= median);
        let candidates = [Some(median), s.get(above)];
        let balance = |key: &Vec<u8>| {
            let left = s.partition_point(|k| k < key);
            left.min(s.len() - left)
        };
        let key = candidates
            .into_iter()
            .flatten()
            .filter(|k| &k[..] > start)
            .max_by_key(|k| balance(k))?;
        (balance(key) >= s.len() / 4).then(|| Bytes::copy_from_slice(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Vec<u8> {
        format!("k{i:06}").into_bytes()
    }

    /// Feeds `per_sec` requests a second for `secs` seconds from `t0`
    /// (keys from `pick`); returns the split keys found and the time
    /// after.
    fn feed(
        s: &mut LoadSampler,
        t0: u64,
        secs: u64,
        per_sec: u64,
        qps: u64,
        need: u32,
        mut pick: impl FnMut(u64) -> Vec<u8>,
    ) -> (Vec<Bytes>, u64) {
        let mut found = Vec::new();
        for i in 0..secs * per_sec {
            let now = t0 + i * 1000 / per_sec;
            if let Some(k) = s.record(&pick(i), now, qps, need, b"") {
                found.push(k);
            }
        }
        (found, t0 + secs * 1000)
    }

    #[test]
    fn a_range_hot_for_the_whole_period_splits_at_its_sampled_median() {
        let mut s = LoadSampler::new(0, 7);
        // 200 requests a second over keys 0..1000 uniformly, threshold
        // 100 for 3 s: the 3rd window closes at 3 s, seen by the first
        // request of the 4th second.
        let (found, _) = feed(&mut s, 0, 4, 200, 100, 3, |i| key(i * 7919 % 1000));
        assert_eq!(found.len(), 1, "{found:?}");
        let k = std::str::from_utf8(&found[0]).unwrap();
        let n: u64 = k[1..].parse().unwrap();
        assert!((200..800).contains(&n), "median of a uniform sample: {k}");
    }

    #[test]
    fn below_the_threshold_or_not_long_enough_it_does_not_split() {
        let mut s = LoadSampler::new(0, 7);
        let (found, t) = feed(&mut s, 0, 10, 99, 100, 3, |i| key(i % 100));
        assert!(found.is_empty());
        assert_eq!(s.hot_secs(), 0);
        // Hot for 2 s, then a pause of 2 s: the count starts again.
        let (found, t) = feed(&mut s, t, 2, 200, 100, 3, |i| key(i % 100));
        assert!(found.is_empty());
        let (found, _) = feed(&mut s, t + 2_000, 2, 200, 100, 3, |i| key(i % 100));
        assert!(found.is_empty(), "{found:?}");
        assert!(s.hot_secs() < 3);
    }

    #[test]
    fn one_hot_key_is_not_split_but_a_hot_key_beside_others_is() {
        let mut s = LoadSampler::new(0, 7);
        let (found, _) = feed(&mut s, 0, 5, 300, 100, 2, |_| key(5));
        assert!(found.is_empty(), "one key: no split shares it");
        // Half the load on one key, half on keys above it: the split
        // goes at the boundary, each side with half.
        let mut s = LoadSampler::new(0, 7);
        let (found, _) = feed(&mut s, 0, 3, 300, 100, 2, |i| {
            if i % 2 == 0 {
                key(5)
            } else {
                key(100 + i % 50)
            }
        });
        assert_eq!(found.len(), 1);
        assert!(found[0].as_ref() > &key(5)[..], "{:?}", found[0]);
    }

    #[test]
    fn the_split_key_is_above_the_ranges_first_key() {
        // Every sampled key at or below `start` (a range whose load is on
        // its first key and below): no split key.
        let mut s = LoadSampler::new(0, 3);
        let mut found = None;
        for i in 0..3_000u64 {
            let k = key(i % 4);
            found = found.or(s.record(&k, i, 100, 1, &key(3)));
        }
        assert_eq!(found, None);
    }

    #[test]
    fn an_idle_sampler_says_so_after_two_windows() {
        let mut s = LoadSampler::new(0, 1);
        s.record(b"k", 500, 100, 1, b"");
        assert!(!s.idle(1_999));
        assert!(s.idle(2_000));
    }

    #[test]
    fn the_sample_holds_at_most_load_split_samples_keys_and_reuses_its_slots() {
        let mut s = LoadSampler::new(0, 1);
        for i in 0..10_000u64 {
            s.record(&key(i), i / 5, u64::MAX, 1, b"");
        }
        assert!(s.slots.len() + s.last.len() <= 2 * LOAD_SPLIT_SAMPLES);
        assert_eq!(s.last.len(), LOAD_SPLIT_SAMPLES, "a full window's sample");
        let bytes = |s: &LoadSampler| -> (usize, usize) {
            let all = s.slots.iter().chain(&s.last);
            (all.clone().count(), all.map(|v| v.capacity()).sum())
        };
        let before = bytes(&s);
        for i in 0..10_000u64 {
            s.record(&key(i), 2_000 + i / 5, u64::MAX, 1, b"");
        }
        assert_eq!(
            bytes(&s),
            before,
            "no slot made or grown: keys of one length"
        );
    }
}
