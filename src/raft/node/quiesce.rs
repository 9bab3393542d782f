//! Quiescence: an idle group stops ticking (issue #16).
//!
//! The rules, after CockroachDB's quiescence (`Replica.maybeQuiesceRaftMuLocked`)
//! and TiKV's hibernate regions:
//!
//! - **A leader quiesces** at a heartbeat tick, instead of heartbeating,
//!   when nothing is left to do (`can_quiesce`): every entry is committed,
//!   durable here and reported applied; every follower holds the whole log
//!   (its match is the last index, no snapshot in flight), except followers
//!   reported unreachable since the leader last heard from them
//!   (tikv/tikv#19070, cockroachdb/cockroach#9446: else no group would
//!   quiesce with a node down). The host reports a node down since before
//!   this leader was elected again when it becomes leader (the shard and
//!   the simulator keep the set of nodes their transport reported). A
//!   follower merely silent is not enough: a learner, or a replica not yet
//!   created on its node (it waits for its seeding snapshot), never
//!   campaigns, so nothing would ever wake the leader for it (simulator:
//!   `adding_a_node_while_a_partition_heals` with quiescence). No read waits, no transfer or
//!   membership change is pending, the configuration is not joint.
//!   Readies still in progress do not
//!   matter (the entries are durable; a Ready of messages only waits for
//!   the WAL's earlier writes, and under load one always does). It sends
//!   each follower `Quiesce { commit }` and stops ticking.
//! - **A follower quiesces** on `Quiesce` from the leader of its term when
//!   its own log ends at that commit index, durable. Otherwise it keeps
//!   ticking; its election timer then runs out and its pre-vote wakes the
//!   leader, which heartbeats and quiesces again.
//! - **Anything wakes a group**: any message but `Quiesce`, a proposal, a
//!   read, a leader transfer, the host (`wake`), and, on a follower, its
//!   leader reported unreachable (`report_unreachable`): the leader's
//!   silence counts as one election timeout passed, the lowest-id voter
//!   left campaigns at its next tick and the others in turn after it, so a
//!   group whose leader's node died elects a new leader within about two
//!   election timeouts of the report (an awake follower keeps its timer).
//!   Pre-vote stays on: a woken follower cannot disrupt a live leader (the
//!   others are in its lease).
//! - **Leases**: a quiesced leader's clock stops, so its lease would never
//!   run out. It drops the lease when it quiesces and forgets the rounds
//!   sent before: a woken leader serves lease reads only after a quorum
//!   acknowledged a heartbeat round sent after it woke.

use super::*;

impl RawNode {
    /// Whether this replica is quiesced: it ignores ticks until woken.
    pub fn quiesced(&self) -> bool {
        self.quiesced
    }

    /// Wakes a quiesced replica (a no-op otherwise): it ticks again, with
    /// its election timer from zero; a leader heartbeats at its next tick.
    pub fn wake(&mut self) {
        self.catch_up();
        if !self.quiesced {
            return;
        }
        self.quiesced = false;
        self.election_elapsed = 0;
        if self.role == Role::Leader {
            // Heartbeat at the next tick: followers that woke too hear from
            // their leader before their timers run out.
            self.heartbeat_elapsed = self.cfg.heartbeat_ticks.saturating_sub(1);
            // Check-quorum counts from now: nobody could have answered a
            // leader that sent nothing.
            for p in &mut self.prs {
                p.recent_active = true;
                p.active_last_round = true;
            }
        }
    }

    /// Whether this leader may quiesce now (the rules at the top).
    pub(super) fn can_quiesce(&self) -> bool {
        let last = self.log.last_index();
        self.cfg.quiesce
            && self.role == Role::Leader
            && self.transferee == 0
            && self.promotable()
            && self.conf.voters_outgoing.is_empty()
            && self.log.commit == last
            && self.log.persisted == last
            && self.applied_reported == last
            && self.snapshot_to_persist.is_none()
            && self.read.queue.is_empty()
            && self.read.waiting_for_commit.is_empty()
            && !self.read.round_wanted
            && self
                .prs
                .iter()
                .all(|p| p.unreachable || (p.match_ == last && p.state != ProgressState::Snapshot))
    }

    /// Quiesces this leader (`can_quiesce` holds): tells the followers and
    /// stops ticking.
    pub(super) fn quiesce_leader(&mut self) {
        debug_assert!(self.can_quiesce(), "quiescing a leader with work left");
        // Only to the followers holding the whole log. One left out as
        // unreachable gets nothing: told the commit it verifiably holds
        // (its match), a follower that is in fact up and whose log ends
        // there took it for "caught up" and quiesced too, and nothing woke
        // either side again (the chaos test of moves: a restarted node
        // stuck at the snapshot it had just installed, in every range).
        // Unquiesced, it campaigns at its election timeout, and its
        // pre-vote wakes this leader, which then catches it up.
        let last = self.log.last_index();
        for i in 0..self.peers.len() {
            if self.prs[i].match_ != last {
                continue;
            }
            let to = self.peers[i];
            self.send(to, self.term, Body::Quiesce { commit: last });
        }
        self.quiesced = true;
        // Its clock stops: no lease from what was acknowledged before.
        self.read.sent.clear();
        self.read.acked_tick.fill(0);
        self.release_idle_memory();
    }

    /// Gives back the capacity that past traffic grew and an idle group
    /// does not use (issue #16: memory per idle group): the in-flight
    /// queues, the read and vote bookkeeping, the log's spare slots. The
    /// next burst grows them again, once per wake, not per message.
    fn release_idle_memory(&mut self) {
        for p in &mut self.prs {
            p.inflight.release_memory();
        }
        self.read.release_memory();
        self.votes = Vec::new();
        self.log.shrink_to_fit();
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
        }
    }

    /// Bytes of heap this node's queues hold beyond what is in them: the
    /// in-flight windows, the Readies awaiting persistence, the read and
    /// vote bookkeeping, the log's spare slots. Zero for a quiesced node
    /// whose last Ready is durable (issue #16).
    pub fn spare_capacity_bytes(&self) -> usize {
        fn spare<T>(len: usize, cap: usize) -> usize {
            (cap - len) * std::mem::size_of::<T>()
        }
        let r = &self.read;
        self.prs
            .iter()
            .map(|p| p.inflight.capacity_bytes())
            .sum::<usize>()
            + spare::<Pending>(self.pending.len(), self.pending.capacity())
            + spare::<(u64, u64)>(r.sent.len(), r.sent.capacity())
            + spare::<PendingRead>(r.queue.len(), r.queue.capacity())
            + spare::<(u64, ReplicaId)>(r.waiting_for_commit.len(), r.waiting_for_commit.capacity())
            + spare::<(ReplicaId, bool)>(self.votes.len(), self.votes.capacity())
            + self.log.spare_capacity_bytes()
    }

    /// A quiesced node's last outstanding Ready became durable: its queue
    /// of them is empty until the group wakes.
    pub(super) fn release_pending_memory(&mut self) {
        if self.quiesced && self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
    }

    /// `Quiesce { commit }` from the leader of this node's term (terms
    /// already checked): follow it, learn its commit, and quiesce if this
    /// log ends there, durable.
    pub(super) fn handle_quiesce(&mut self, from: ReplicaId, term: Term, commit: Index) {
        self.heard_from_leader(term, from);
        let last = self.log.last_index();
        let c = commit.min(last);
        if c > self.log.commit {
            self.log.commit = c;
        }
        if self.role == Role::Follower
            && self.leader == from
            && last == commit
            && self.log.persisted == last
            && self.incoming.is_none()
        {
            self.quiesced = true;
            self.release_idle_memory();
        }
    }
}
