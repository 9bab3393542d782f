//! Buffers that give back what a burst grew.
//!
//! A shard's queues (its inbox, its Readies in flight, a link's write
//! buffer) grow to whatever one burst needed: a cluster start, where every
//! group elects at once, queues hundreds of thousands of items. Kept, that
//! capacity is resident memory for the rest of the process's life, which
//! an idle node with many groups cannot afford (issue #16: memory per idle
//! group). [`shrink_after_burst`] gives it back once the burst is over and
//! leaves a buffer in steady use alone, so the hot path does not allocate
//! per turn.

use std::collections::VecDeque;

/// A buffer holds at least this many times what it last carried before it
/// is shrunk: steady use (one turn's worth, give or take half) never is.
pub const BURST_SLACK_FACTOR: usize = 8;

/// A growable buffer ([`Vec`], [`VecDeque`]).
pub trait Buffer {
    fn capacity(&self) -> usize;
    fn shrink_to(&mut self, min_capacity: usize);
}

impl<T> Buffer for Vec<T> {
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
    fn shrink_to(&mut self, min_capacity: usize) {
        Vec::shrink_to(self, min_capacity)
    }
}

impl<T> Buffer for VecDeque<T> {
    fn capacity(&self) -> usize {
        VecDeque::capacity(self)
    }
    fn shrink_to(&mut self, min_capacity: usize) {
        VecDeque::shrink_to(self, min_capacity)
    }
}

/// Called on a buffer `b` just emptied after carrying `used` items: if it
/// holds more than `retained` items of capacity and more than
/// [`BURST_SLACK_FACTOR`] times `used`, the burst that grew it is over and
/// it shrinks to `retained` (or twice `used`, if more). Returns whether it
/// shrank. At most one reallocation per call, and none in steady use.
pub fn shrink_after_burst<B: Buffer>(b: &mut B, used: usize, retained: usize) -> bool {
    let cap = b.capacity();
    if cap <= retained || cap / BURST_SLACK_FACTOR <= used {
        return false;
    }
    b.shrink_to(retained.max(used.saturating_mul(2)));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_given_back_once_the_use_drops() {
        let mut v: Vec<u64> = Vec::with_capacity(100_000);
        // The burst itself: used ~ capacity, kept.
        assert!(!shrink_after_burst(&mut v, 90_000, 1024));
        assert!(v.capacity() >= 100_000);
        // Back to small turns: given back down to what is retained.
        assert!(shrink_after_burst(&mut v, 10, 1024));
        assert!(
            v.capacity() >= 1024 && v.capacity() < 100_000 / 8,
            "{}",
            v.capacity()
        );
        // Nothing more to give back.
        assert!(!shrink_after_burst(&mut v, 10, 1024));
    }

    #[test]
    fn steady_use_keeps_its_capacity() {
        let mut q: VecDeque<u64> = VecDeque::with_capacity(64 * 1024);
        let cap = q.capacity();
        // Turns that use an eighth or more of the buffer: no reallocation.
        for used in [cap / 8, cap / 2, cap] {
            assert!(!shrink_after_burst(&mut q, used, 16));
            assert_eq!(q.capacity(), cap);
        }
        // Below the retained size nothing shrinks, whatever the use.
        let mut small: Vec<u8> = Vec::with_capacity(512);
        assert!(!shrink_after_burst(&mut small, 0, 4096));
        assert_eq!(small.capacity(), 512);
    }

    #[test]
    fn a_shrunk_buffer_keeps_room_for_twice_its_last_use() {
        let mut v: Vec<u8> = Vec::with_capacity(1 << 20);
        assert!(shrink_after_burst(&mut v, 50_000, 4096));
        assert!(v.capacity() >= 100_000 && v.capacity() < 1 << 20);
    }
}
