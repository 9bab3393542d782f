//! Linearizable reads without a log entry: ReadIndex and the leader lease.
//!
//! ReadIndex (thesis §6.4): the leader notes its commit index for the read,
//! then confirms it still leads by a round of heartbeats acknowledged by a
//! quorum; the read is served once the state machine has applied through the
//! noted index. A leader that has not committed an entry of its own term yet
//! does not know the latest commit index: reads wait for that first commit.
//!
//! Heartbeats are numbered in rounds. A read registered while round R was
//! the latest needs acknowledgements of round R+1 or later, which the leader
//! sends at once (all reads registered in one turn share that round).
//!
//! The lease: the tick at which each round was sent is kept; a quorum that
//! acknowledged rounds sent at tick t or later had all heard from this leader
//! at t, and with check-quorum none of them votes for another candidate
//! before `election_ticks` of its own ticks have passed (the first of which
//! may come right after it heard from us). So the leader may serve reads
//! locally until tick `t + election_ticks - lease_drift_ticks - 1`.

use std::collections::VecDeque;

use super::types::{Index, ReplicaId};

/// A read that may be served once the state machine has applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// A read waiting for its heartbeat round to be acknowledged by a quorum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRead {
    pub ctx: u64,
    pub index: Index,
    /// Who asked: this node, or a follower to answer with ReadIndexResp.
    pub from: ReplicaId,
    /// Acknowledgements of this round or later confirm it.
    pub round: u64,
}

/// Rounds remembered for the lease (older acknowledgements no longer help).
pub(crate) const ROUND_HISTORY: usize = 64;

/// Leader-side read bookkeeping. Reset whenever leadership changes.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// Confirmed in order: a later read never overtakes an earlier one.
    pub queue: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    pub waiting_for_commit: Vec<(u64, ReplicaId)>,
    /// The latest heartbeat round sent.
    pub round: u64,
    /// A round must be sent at the next Ready (reads are waiting for it).
    pub round_wanted: bool,
    /// (round, tick sent), ascending, at most ROUND_HISTORY long.
    pub sent: VecDeque<(u64, u64)>,
    /// Per peer (aligned with the node's `peers`): highest round acknowledged.
    pub acked: Vec<u64>,
    /// Per peer: the tick at which the latest acknowledged round was sent.
    pub acked_tick: Vec<u64>,
}

impl ReadOnly {
    pub fn reset(&mut self, peers: usize) {
        self.queue.clear();
        self.waiting_for_commit.clear();
        self.round_wanted = false;
        self.sent.clear();
        self.acked.clear();
        self.acked.resize(peers, 0);
        self.acked_tick.clear();
        self.acked_tick.resize(peers, 0);
        // Rounds keep increasing across terms: an old answer never counts.
    }

    /// Drops the capacity of the queues that are empty.
    pub fn release_memory(&mut self) {
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
        if self.waiting_for_commit.is_empty() {
            self.waiting_for_commit = Vec::new();
        }
        if self.sent.is_empty() {
            self.sent = VecDeque::new();
        }
    }

    /// Starts a new round at `tick`; returns its number.
    pub fn start_round(&mut self, tick: u64) -> u64 {
        self.round += 1;
        self.round_wanted = false;
        if self.sent.len() == ROUND_HISTORY {
            self.sent.pop_front();
        }
        self.sent.push_back((self.round, tick));
        self.round
    }

    /// The tick at which `round` was sent, if still remembered.
    pub fn sent_tick(&self, round: u64) -> Option<u64> {
        self.sent
            .binary_search_by_key(&round, |&(r, _)| r)
            .ok()
            .map(|i| self.sent[i].1)
    }
}
