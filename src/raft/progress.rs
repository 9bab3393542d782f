//! The leader's view of one follower: how far it matches, what to send next,
//! and the flow-control window.

use std::collections::VecDeque;

use super::types::{Index, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Unknown match: one AppendEntries at a time until one is accepted.
    Probe,
    /// Known match: AppendEntries are pipelined, up to the window.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot is being
    /// streamed to it, one chunk at a time.
    Snapshot,
}

/// In-flight AppendEntries to one follower: (last index carried, entry bytes).
/// The queue grows on first use up to `msgs_max` and keeps its capacity
/// while the group is busy (no allocation per message in steady state);
/// a replica that never leads, or a leader that quiesces
/// ([`Inflights::release_memory`]), holds none (`msgs_max` 256 reserved at
/// creation cost every replica 4 KiB per peer: most of an idle group's
/// memory, issue #16).
#[derive(Debug, Clone)]
pub struct Inflights {
    q: VecDeque<(Index, u64)>,
    bytes: u64,
    msgs_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub fn new(msgs_max: usize, bytes_max: u64) -> Self {
        Inflights {
            q: VecDeque::new(),
            bytes: 0,
            msgs_max,
            bytes_max,
        }
    }

    /// Frees the queue's memory if nothing is in flight (an idle group).
    pub fn release_memory(&mut self) {
        if self.q.is_empty() {
            self.q = VecDeque::new();
        }
    }

    /// Bytes of memory the queue holds (its capacity).
    pub fn capacity_bytes(&self) -> usize {
        self.q.capacity() * std::mem::size_of::<(Index, u64)>()
    }

    /// No room for another message (by count or by bytes).
    pub fn full(&self) -> bool {
        self.q.len() >= self.msgs_max || self.bytes >= self.bytes_max
    }

    pub fn add(&mut self, last: Index, bytes: u64) {
        debug_assert!(!self.full(), "inflight window overrun");
        debug_assert!(self.q.back().is_none_or(|b| b.0 < last), "inflights ascend");
        self.q.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries are all at or below `index`.
    pub fn free_le(&mut self, index: Index) {
        while let Some(&(last, b)) = self.q.front() {
            if last > index {
                break;
            }
            self.q.pop_front();
            self.bytes -= b;
        }
    }

    pub fn reset(&mut self) {
        self.q.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to match the leader's log. Invariant: match_ < next.
    pub match_: Index,
    /// Next index to send.
    pub next: Index,
    pub state: ProgressState,
    /// Probe state: an AppendEntries is out and unanswered; wait.
    pub probe_sent: bool,
    pub inflight: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// `recent_active` as it stood when the last round ended: with it, a
    /// question asked just after a round ("is it active now?") looks back
    /// one to two election timeouts, not zero.
    pub active_last_round: bool,
    /// Highest commit index sent to this follower.
    pub commit_sent: Index,
    /// `match_` at the previous heartbeat response: a follower whose match
    /// did not move for a whole heartbeat round while entries are
    /// outstanding lost some AppendEntries; it is probed again.
    pub match_at_heartbeat: Index,
    /// Snapshot state: the snapshot being sent, the bytes the follower
    /// acknowledged, and the bytes sent (a chunk is out when they differ).
    pub snapshot: Option<Box<Snapshot>>,
    pub snap_acked: u64,
    pub snap_sent: u64,
    /// CRC32 of the whole snapshot, computed once.
    pub snap_crc: u32,
    /// Length of the snapshot's data: `snapshot`'s own bytes, or none
    /// when the application stores them (`RawNode::snapshot_stored`:
    /// chunks are then read by it, `SnapshotRead`).
    pub snap_total: u64,
    /// A member added by a membership change: it knows nothing of the group
    /// (not even its first membership), so it is seeded with a snapshot
    /// before it gets any entry.
    pub seed: bool,
    /// Reported unreachable (`RawNode::report_unreachable`) and not heard
    /// from since: the leader may quiesce while it is behind.
    pub unreachable: bool,
}

impl Progress {
    pub fn new(next: Index, msgs_max: usize, bytes_max: u64) -> Self {
        Progress {
            match_: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: Inflights::new(msgs_max, bytes_max),
            recent_active: true,
            active_last_round: true,
            commit_sent: 0,
            match_at_heartbeat: 0,
            snapshot: None,
            snap_acked: 0,
            snap_sent: 0,
            snap_crc: 0,
            snap_total: 0,
            seed: false,
            unreachable: false,
        }
    }

    fn check(&self) {
        debug_assert!(
            self.match_ < self.next,
            "progress invariant 0 <= match ({}) < next ({})",
            self.match_,
            self.next
        );
    }

    /// Sends `s` (whose data, of `total` bytes, has CRC32 `crc`) to this
    /// follower in chunks. `s.data` is empty if the application stores it.
    pub fn become_snapshot(&mut self, s: Box<Snapshot>, crc: u32, total: u64) {
        self.state = ProgressState::Snapshot;
        self.snap_crc = crc;
        self.snap_total = total;
        self.snapshot = Some(s);
        self.snap_acked = 0;
        self.snap_sent = 0;
        self.probe_sent = false;
        self.inflight.reset();
    }

    pub fn become_probe(&mut self) {
        self.snapshot = None;
        self.state = ProgressState::Probe;
        self.next = self.match_ + 1;
        self.probe_sent = false;
        self.inflight.reset();
        self.check();
    }

    pub fn become_replicate(&mut self) {
        self.snapshot = None;
        self.state = ProgressState::Replicate;
        self.next = self.match_ + 1;
        self.probe_sent = false;
        self.inflight.reset();
        self.check();
    }

    /// A successful AppendResp for `index`. Returns whether match advanced.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_;
        if updated {
            self.match_ = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        self.check();
        updated
    }

    /// A rejection of `rejected` (the prev_index sent) with the leader-side
    /// guess `match_hint` of where the logs may match. Returns false for a
    /// stale rejection (one that answers an older AppendEntries).
    pub fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Snapshot {
            // Rejections of appends sent before the snapshot: stale.
            return false;
        }
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_ {
                return false;
            }
            self.next = self.match_ + 1;
            self.check();
            return true;
        }
        if self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.match_ + 1);
        self.probe_sent = false;
        self.check();
        true
    }

    /// May another AppendEntries be sent now?
    pub fn can_send(&self) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => !self.inflight.full(),
            ProgressState::Snapshot => self.snap_sent == self.snap_acked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_by_count_and_by_bytes() {
        let mut w = Inflights::new(2, 100);
        w.add(1, 10);
        w.add(2, 10);
        assert!(w.full());
        w.free_le(1);
        assert!(!w.full());
        w.add(3, 90);
        assert!(w.full(), "bytes bound");
        w.free_le(3);
        assert!(w.is_empty());
        assert_eq!(w.bytes(), 0);
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 8, 1 << 20);
        p.maybe_update(5);
        p.become_replicate();
        assert!(
            !p.maybe_decr_to(4, 0),
            "rejection at or below match is stale"
        );
        assert!(p.maybe_decr_to(7, 3));
        assert_eq!(p.next, 6);
        p.become_probe();
        assert!(!p.maybe_decr_to(9, 3), "probe answers only its own prev");
        assert!(p.maybe_decr_to(5, 9));
        assert_eq!(p.next, 6);
    }
}
