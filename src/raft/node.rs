//! `RawNode`: the consensus state machine of one group member.

use std::collections::VecDeque;

use bytes::Bytes;

use super::config::ValidRaftConfig;
use super::log::RaftLog;
use super::progress::{Progress, ProgressState};
use super::read::{PendingRead, ReadOnly, ReadState};
use super::types::*;

/// Why a proposal was not accepted. The proposal is dropped; nothing of it
/// was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("backpressure: {uncommitted_bytes} bytes uncommitted, uncommitted_bytes_max = {max}")]
    Backpressure { uncommitted_bytes: u64, max: u64 },
    #[error(
        "leadership is being transferred to node {to}; proposals are refused until it is done"
    )]
    TransferInProgress { to: NodeId },
}

/// Why a read could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no known leader to ask for a read index")]
    NoLeader,
}

/// Why a compaction request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("snapshot index {index} is beyond the applied index {applied}")]
    NotApplied { index: Index, applied: Index },
    #[error("snapshot index {index} is not newer than the current snapshot at {current}")]
    Stale { index: Index, current: Index },
}

/// Why a leadership transfer could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter of this group")]
    UnknownTarget(NodeId),
    #[error("this node already leads")]
    TargetIsSelf,
}

/// Role and leader, handed out in a Ready when they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: Term,
}

/// Names a Ready for [`RawNode::on_persisted`]: its number and the (index,
/// term) of the last entry it carried, so that a report arriving after those
/// entries were overwritten by a newer term cannot mark the new ones durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistToken {
    pub number: u64,
    pub last_entry: Option<(Index, Term)>,
}

/// What the node hands out after a batch of inputs.
///
/// The caller must, in this order per Ready (several Readies may be in
/// progress; their persistence must complete in the order they were taken):
/// 1. send `messages` right away (they depend on nothing unpersisted: the
///    leader's AppendEntries go out while its own write is in flight);
/// 2. make `hard_state` (if any) and `entries` durable — `entries[0]` may
///    overwrite what storage holds at that index and after (drop the rest);
/// 3. once that write and all earlier ones are durable, send
///    `persisted_messages` (votes and follower acks) and call
///    [`RawNode::on_persisted`] with [`Ready::token`] — also for a Ready
///    that had nothing to write;
/// 4. apply `committed` in order (they are committed and locally durable),
///    then report it with [`RawNode::on_applied`].
#[derive(Debug, Default)]
pub struct Ready {
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it (atomically) before
    /// `entries`, and restore the state machine from it before applying
    /// `committed`. Storage drops its entries up to the snapshot, and keeps
    /// those after it only if it holds the snapshot's (index, term).
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed: Vec<Entry>,
    /// Reads confirmed: serve each once applied through its index.
    pub read_states: Vec<ReadState>,
    /// Reads that failed (leadership lost or the leader refused): retry them.
    pub reads_failed: Vec<u64>,
}

impl Ready {
    pub fn token(&self) -> PersistToken {
        PersistToken {
            number: self.number,
            last_entry: self.entries.last().map(|e| (e.index, e.term)),
        }
    }

    /// Whether this Ready has anything to write.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}

#[derive(Debug)]
struct Incoming {
    meta: SnapshotMeta,
    total: u64,
    crc: u32,
    leader_term: Term,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Pending {
    number: u64,
    last_entry: Option<(Index, Term)>,
    /// The candidate's vote for itself in this term becomes countable once
    /// the hard state carrying it is durable.
    self_vote: Option<Term>,
    /// A received snapshot this Ready carries.
    snapshot: Option<SnapshotMeta>,
}

/// SplitMix64: small, seeded, deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Counters a node keeps about itself.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    pub messages_ignored: u64,
    pub proposals_refused: u64,
    pub elections_started: u64,
}

/// One member of a Raft group. A pure function of its inputs: `tick`,
/// `step`, `propose`, `on_persisted`; outputs are pulled with `ready`.
#[derive(Debug)]
pub struct RawNode {
    cfg: ValidRaftConfig,
    id: NodeId,
    /// Voters other than this node, sorted; `prs[i]` belongs to `peers[i]`.
    peers: Vec<NodeId>,
    prs: Vec<Progress>,
    term: Term,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    log: RaftLog,
    /// Votes received in the current (pre-)election: (peer, granted).
    votes: Vec<(NodeId, bool)>,
    self_vote_pending: Option<Term>,
    self_vote_counted: bool,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    election_timeout: u32,
    rng: Rng,
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    /// Leader: bytes of entries proposed in this term and not yet committed.
    uncommitted_bytes: u64,
    ready_number: u64,
    pending: VecDeque<Pending>,
    /// Highest index the caller reported applied to its state machine.
    /// Invariant: applied_reported <= log.applied (handed out).
    applied_reported: Index,
    /// Ticks since this node started (the lease is measured in them).
    ticks: u64,
    read: ReadOnly,
    read_states: Vec<ReadState>,
    reads_failed: Vec<u64>,
    /// Leader transfer under way to this node (0: none).
    transferee: NodeId,
    transfer_elapsed: u32,
    /// The latest snapshot (taken here or installed): sent to followers
    /// that need compacted entries.
    snapshot: Option<Snapshot>,
    /// An installed snapshot for the next Ready.
    snapshot_to_persist: Option<Snapshot>,
    /// Chunks of a snapshot being received: (meta, total, crc, term of its
    /// leader, bytes so far).
    incoming: Option<Incoming>,
    /// Just restarted: it may have been a follower in some leader's lease,
    /// so it refuses votes for an election timeout (lease reads rely on it).
    quiet: bool,
    prev_hard: HardState,
    prev_soft: SoftState,
    stats: NodeStats,
}

impl RawNode {
    /// A member of a new group, with an empty log.
    pub fn new(cfg: ValidRaftConfig) -> Self {
        Self::restart(cfg, HardState::default(), Vec::new(), 0)
    }

    /// A member restarting from storage: the durable hard state, every
    /// durable entry (from index 1), and the index the state machine has
    /// already applied (0 if it is rebuilt from scratch).
    pub fn restart(
        cfg: ValidRaftConfig,
        hs: HardState,
        entries: Vec<Entry>,
        applied: Index,
    ) -> Self {
        Self::restart_from(cfg, hs, None, entries, applied)
    }

    /// A member restarting from storage that holds a snapshot: the durable
    /// hard state, the latest durable snapshot, the durable entries after
    /// it, and the index the state machine has applied (at least the
    /// snapshot's, once restored from it).
    pub fn restart_from(
        cfg: ValidRaftConfig,
        hs: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        applied: Index,
    ) -> Self {
        let id = cfg.id;
        let mut peers: Vec<NodeId> = cfg.voters.iter().copied().filter(|&v| v != id).collect();
        peers.sort_unstable();
        let log = RaftLog::restored(
            snapshot.as_ref().map(|s| s.meta),
            entries,
            hs.commit,
            applied,
        );
        let applied = applied.max(snapshot.as_ref().map_or(0, |s| s.meta.index));
        let prs = peers
            .iter()
            .map(|_| Progress::new(1, cfg.inflight_msgs_max, cfg.inflight_bytes_max))
            .collect();
        let seed = cfg.seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407);
        let mut n = RawNode {
            id,
            peers,
            prs,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: 0,
            log,
            votes: Vec::new(),
            self_vote_pending: None,
            self_vote_counted: false,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout: 0,
            rng: Rng(seed),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            uncommitted_bytes: 0,
            ready_number: 0,
            pending: VecDeque::new(),
            applied_reported: applied,
            ticks: 0,
            read: ReadOnly::default(),
            read_states: Vec::new(),
            reads_failed: Vec::new(),
            transferee: 0,
            transfer_elapsed: 0,
            snapshot,
            snapshot_to_persist: None,
            incoming: None,
            quiet: false,
            prev_hard: hs,
            prev_soft: SoftState {
                role: Role::Follower,
                leader: None,
                term: hs.term,
            },
            stats: NodeStats::default(),
            cfg,
        };
        // A node that has seen a term may have been in some leader's lease.
        n.quiet = n.cfg.check_quorum && hs.term > 0;
        n.read.reset(n.peers.len());
        n.reset_election_timeout();
        n
    }

    // ---- accessors ----

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> Option<NodeId> {
        (self.leader != 0).then_some(self.leader)
    }
    pub fn commit_index(&self) -> Index {
        self.log.commit
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn persisted_index(&self) -> Index {
        self.log.persisted
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }
    /// The leader's view of `peer`, if this node leads.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        if self.role != Role::Leader {
            return None;
        }
        self.peer_idx(peer).map(|i| &self.prs[i])
    }
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }

    fn peer_idx(&self, id: NodeId) -> Option<usize> {
        self.peers.binary_search(&id).ok()
    }

    fn quorum(&self) -> usize {
        let voters = self.peers.len() + 1;
        voters / 2 + 1
    }

    fn reset_election_timeout(&mut self) {
        let e = self.cfg.election_ticks as u64;
        self.election_timeout = (e + self.rng.next() % e) as u32;
    }

    fn send(&mut self, to: NodeId, term: Term, body: Body) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn send_after_persist(&mut self, to: NodeId, body: Body) {
        self.msgs_after_persist.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    // ---- role changes ----

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        if self.role == Role::Leader {
            self.fail_pending_reads();
        }
        self.transferee = 0;
        if term > self.term {
            self.term = term;
            self.vote = 0;
            // A half-received snapshot of the old leader is never applied.
            self.incoming = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.self_vote_pending = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = 0;
        self.votes.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
        // The pre-vote changes no durable state: its own grant counts at once.
        self.self_vote_counted = true;
        let (li, lt) = (self.log.last_index(), self.log.last_term());
        for i in 0..self.peers.len() {
            let to = self.peers[i];
            self.send(
                to,
                self.term + 1,
                Body::PreVote {
                    last_index: li,
                    last_term: lt,
                },
            );
        }
        self.tally_pre_votes();
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.stats.elections_started += 1;
        self.term += 1;
        self.vote = self.id;
        self.role = Role::Candidate;
        self.leader = 0;
        self.votes.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
        // Our own vote counts once the hard state carrying it is durable.
        self.self_vote_pending = Some(self.term);
        self.self_vote_counted = false;
        let (li, lt) = (self.log.last_index(), self.log.last_term());
        for i in 0..self.peers.len() {
            let to = self.peers[i];
            self.send(
                to,
                self.term,
                Body::Vote {
                    last_index: li,
                    last_term: lt,
                    transfer,
                },
            );
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = self.id;
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.uncommitted_bytes = 0;
        self.transferee = 0;
        self.read.reset(self.peers.len());
        let next = self.log.last_index() + 1;
        for p in &mut self.prs {
            *p = Progress::new(
                next,
                self.cfg.inflight_msgs_max,
                self.cfg.inflight_bytes_max,
            );
        }
        // The no-op of the new term (Raft §8): committing it commits every
        // earlier entry the leader holds.
        let e = Entry {
            term: self.term,
            index: next,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        };
        self.log.append(e);
    }

    fn campaign(&mut self) {
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
            self.tally_votes();
        }
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        if !self.votes.iter().any(|(id, _)| *id == from) {
            self.votes.push((from, granted));
        }
    }

    /// (granted, rejected), counting our own grant when it counts.
    fn vote_counts(&self) -> (usize, usize) {
        let g = self.votes.iter().filter(|v| v.1).count() + self.self_vote_counted as usize;
        let r = self.votes.iter().filter(|v| !v.1).count();
        (g, r)
    }

    fn tally_pre_votes(&mut self) {
        let (g, r) = self.vote_counts();
        if g >= self.quorum() {
            self.become_candidate(false);
            self.tally_votes();
        } else if r >= self.quorum() {
            self.become_follower(self.term, 0);
        }
    }

    fn tally_votes(&mut self) {
        let (g, r) = self.vote_counts();
        if g >= self.quorum() {
            self.become_leader();
        } else if r >= self.quorum() {
            self.become_follower(self.term, 0);
        }
    }

    // ---- inputs ----

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.election_elapsed += 1;
        if self.quiet && self.election_elapsed >= self.cfg.election_ticks {
            self.quiet = false;
        }
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.transferee != 0 {
                self.transfer_elapsed += 1;
                if self.transfer_elapsed >= self.cfg.election_ticks {
                    // The target did not take over within an election timeout.
                    self.transferee = 0;
                }
            }
            if self.election_elapsed >= self.cfg.election_ticks {
                self.election_elapsed = 0;
                if self.cfg.check_quorum {
                    let active = 1 + self.prs.iter().filter(|p| p.recent_active).count();
                    for p in &mut self.prs {
                        p.recent_active = false;
                    }
                    if active < self.quorum() {
                        // Not heard from a quorum for an election timeout:
                        // another leader may exist; stop serving.
                        self.become_follower(self.term, 0);
                        return;
                    }
                }
            }
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat();
            }
        } else if self.election_elapsed >= self.election_timeout {
            self.campaign();
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let round = self.read.start_round(self.ticks);
        for i in 0..self.peers.len() {
            let commit = self.log.commit.min(self.prs[i].match_);
            let to = self.peers[i];
            self.send(to, self.term, Body::Heartbeat { commit, round });
        }
    }

    // ---- reads ----

    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    /// Starts a linearizable read named `ctx`. It comes out in
    /// `Ready::read_states` with the index to serve it at (or in
    /// `Ready::reads_failed`). On a follower the leader is asked.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        if self.role == Role::Leader {
            self.register_read(ctx, self.id);
            return Ok(());
        }
        if self.leader == 0 {
            return Err(ReadError::NoLeader);
        }
        let to = self.leader;
        self.send(to, self.term, Body::ReadIndex { ctx });
        Ok(())
    }

    /// Whether the leader lease holds now (see `read`).
    pub fn lease_valid(&self) -> bool {
        if !self.cfg.lease_reads || self.role != Role::Leader || self.transferee != 0 {
            return false;
        }
        let mut bases: Vec<u64> = Vec::with_capacity(self.peers.len() + 1);
        bases.push(self.ticks);
        bases.extend(self.read.acked_tick.iter().copied());
        bases.sort_unstable_by(|a, b| b.cmp(a));
        let base = bases[self.quorum() - 1];
        // One tick less for the follower's tick phase: its election timer
        // may count a tick right after it heard from us.
        let lease = (self.cfg.election_ticks - self.cfg.lease_drift_ticks - 1) as u64;
        base > 0 && self.ticks < base + lease
    }

    fn register_read(&mut self, ctx: u64, from: NodeId) {
        if !self.committed_in_term() {
            // The commit index of earlier terms may be stale: wait for the
            // first commit of this term (the no-op).
            self.read.waiting_for_commit.push((ctx, from));
            return;
        }
        let index = self.log.commit;
        if self.peers.is_empty() || self.lease_valid() {
            self.deliver_read(ctx, index, from);
            return;
        }
        let round = self.read.round + 1;
        self.read.queue.push_back(PendingRead {
            ctx,
            index,
            from,
            round,
        });
        self.read.round_wanted = true;
    }

    fn deliver_read(&mut self, ctx: u64, index: Index, from: NodeId) {
        if from == self.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(
                from,
                self.term,
                Body::ReadIndexResp {
                    ctx,
                    index,
                    reject: false,
                },
            );
        }
    }

    /// Serves, in order, every queued read whose round a quorum acknowledged.
    fn release_reads(&mut self) {
        while let Some(r) = self.read.queue.front().copied() {
            let acks = 1 + self.read.acked.iter().filter(|&&a| a >= r.round).count();
            if acks < self.quorum() {
                break;
            }
            self.read.queue.pop_front();
            self.deliver_read(r.ctx, r.index, r.from);
        }
    }

    fn fail_pending_reads(&mut self) {
        let q: Vec<(u64, NodeId)> = self
            .read
            .queue
            .drain(..)
            .map(|r| (r.ctx, r.from))
            .chain(self.read.waiting_for_commit.drain(..))
            .collect();
        for (ctx, from) in q {
            if from == self.id {
                self.reads_failed.push(ctx);
            } else {
                self.send(
                    from,
                    self.term,
                    Body::ReadIndexResp {
                        ctx,
                        index: 0,
                        reject: true,
                    },
                );
            }
        }
    }

    // ---- snapshots ----

    /// The application took a snapshot of its state machine at `index`
    /// (applied, see `on_applied`): the log is compacted up to
    /// `index - compact_keep_entries`, and followers that need what was
    /// compacted get this snapshot.
    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<(), CompactError> {
        if index > self.applied_reported {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied_reported,
            });
        }
        let current = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if index <= current {
            return Err(CompactError::Stale { index, current });
        }
        let term = self
            .log
            .term(index)
            .expect("an applied index above the snapshot is in the log");
        self.snapshot = Some(Snapshot {
            meta: SnapshotMeta { index, term },
            data,
        });
        let upto = index.saturating_sub(self.cfg.compact_keep_entries);
        self.log.compact_to(upto);
        Ok(())
    }

    /// The lowest log index still held: storage may drop what is below it
    /// (the latest snapshot covers it).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The latest snapshot this node holds, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        crc: u32,
        chunk: Bytes,
    ) {
        if meta.index <= self.log.commit {
            // Older than what we hold: tell the leader where we are.
            self.incoming = None;
            let commit = self.log.commit;
            self.send_after_persist(
                from,
                Body::AppendResp {
                    reject: false,
                    index: commit,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        if total > self.cfg.snapshot_bytes_max {
            self.stats.messages_ignored += 1;
            return;
        }
        let fresh = self.incoming.as_ref().is_none_or(|inc| {
            inc.meta != meta || inc.leader_term != self.term || inc.total != total || inc.crc != crc
        });
        if fresh {
            // A newer snapshot (or another leader's) replaces a partial one;
            // it must be received from its start.
            if offset != 0 {
                self.incoming = None;
                self.send(
                    from,
                    self.term,
                    Body::SnapshotAck {
                        index: meta.index,
                        next_offset: 0,
                    },
                );
                return;
            }
            self.incoming = Some(Incoming {
                meta,
                total,
                crc,
                leader_term: self.term,
                buf: Vec::with_capacity(total.min(self.cfg.snapshot_chunk_bytes * 4) as usize),
            });
        }
        let inc = self.incoming.as_mut().expect("ensured above");
        if offset == inc.buf.len() as u64 && offset + chunk.len() as u64 <= total {
            inc.buf.extend_from_slice(&chunk);
        }
        let have = inc.buf.len() as u64;
        if have < total {
            self.send(
                from,
                self.term,
                Body::SnapshotAck {
                    index: meta.index,
                    next_offset: have,
                },
            );
            return;
        }
        let inc = self.incoming.take().expect("ensured above");
        if crc32fast::hash(&inc.buf) != inc.crc {
            // Damaged in transit: start over.
            self.send(
                from,
                self.term,
                Body::SnapshotAck {
                    index: meta.index,
                    next_offset: 0,
                },
            );
            return;
        }
        // Complete and intact: install it atomically.
        self.log.install(meta);
        let snap = Snapshot {
            meta,
            data: Bytes::from(inc.buf),
        };
        self.snapshot = Some(snap.clone());
        self.snapshot_to_persist = Some(snap);
        self.send(
            from,
            self.term,
            Body::SnapshotAck {
                index: meta.index,
                next_offset: total,
            },
        );
        // The install is acknowledged once durable, like appended entries.
        self.send_after_persist(
            from,
            Body::AppendResp {
                reject: false,
                index: meta.index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    // ---- leader transfer ----

    /// Hands leadership to `target`: brings it up to date, then tells it to
    /// campaign at once. Proposals are refused meanwhile; the transfer is
    /// abandoned after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader(),
            });
        }
        if target == self.id {
            return Err(TransferError::TargetIsSelf);
        }
        let i = self
            .peer_idx(target)
            .ok_or(TransferError::UnknownTarget(target))?;
        if self.transferee == target {
            return Ok(());
        }
        self.transferee = target;
        self.transfer_elapsed = 0;
        if self.prs[i].match_ == self.log.last_index() {
            self.send(target, self.term, Body::TimeoutNow);
        }
        Ok(())
    }

    /// The node leadership is being transferred to, if any.
    pub fn transferee(&self) -> Option<NodeId> {
        (self.transferee != 0).then_some(self.transferee)
    }

    /// Proposes a command. On success returns its (index, term): it is
    /// applied iff an entry with that index *and* term comes out committed.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        if self.role != Role::Leader {
            self.stats.proposals_refused += 1;
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.transferee != 0 {
            self.stats.proposals_refused += 1;
            return Err(ProposeError::TransferInProgress {
                to: self.transferee,
            });
        }
        let size = data.len() as u64 + ENTRY_OVERHEAD_BYTES;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.uncommitted_bytes_max
        {
            self.stats.proposals_refused += 1;
            return Err(ProposeError::Backpressure {
                uncommitted_bytes: self.uncommitted_bytes,
                max: self.cfg.uncommitted_bytes_max,
            });
        }
        self.uncommitted_bytes += size;
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            term: self.term,
            index,
            kind: EntryKind::Normal,
            data,
        });
        Ok((index, self.term))
    }

    /// The transport lost its connection to `peer`: replicate to it from a
    /// probe again.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(i) = self.peer_idx(peer) {
            if self.prs[i].state == ProgressState::Replicate {
                self.prs[i].become_probe();
            }
        }
    }

    /// Takes one message from a peer of this group.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || self.peer_idx(m.from).is_none() {
            self.stats.messages_ignored += 1;
            return;
        }
        if m.term > self.term {
            let vote_req = matches!(
                m.body,
                Body::PreVote { .. }
                    | Body::Vote {
                        transfer: false,
                        ..
                    }
            );
            if vote_req && self.in_lease() {
                // We heard from a live leader within the election timeout:
                // this candidate cannot have a quorum; do not let it disrupt.
                self.stats.messages_ignored += 1;
                return;
            }
            match m.body {
                Body::PreVote { .. } => {}
                Body::PreVoteResp { reject: false } => {}
                Body::Append { .. } | Body::Heartbeat { .. } => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            match m.body {
                Body::Append { .. } | Body::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader (e.g. back from a partition): tell it our
                    // term so it steps down.
                    self.send(m.from, self.term, Body::HeartbeatResp { round: 0 });
                }
                Body::ReadIndex { ctx } => {
                    self.send(
                        m.from,
                        self.term,
                        Body::ReadIndexResp {
                            ctx,
                            index: 0,
                            reject: true,
                        },
                    );
                }
                Body::PreVote { .. } => {
                    self.send(m.from, self.term, Body::PreVoteResp { reject: true });
                }
                _ => self.stats.messages_ignored += 1,
            }
            return;
        }

        match m.body {
            Body::PreVote {
                last_index,
                last_term,
            } => {
                // Grant only if we would vote for it in that term.
                let can = m.term > self.term
                    || self.vote == m.from
                    || (self.vote == 0 && self.leader == 0);
                let grant = can && self.log.is_up_to_date(last_index, last_term);
                let term = if grant { m.term } else { self.term };
                self.send(m.from, term, Body::PreVoteResp { reject: !grant });
            }
            Body::Vote {
                last_index,
                last_term,
                ..
            } => {
                let can = self.vote == m.from || (self.vote == 0 && self.leader == 0);
                let grant = can && self.log.is_up_to_date(last_index, last_term);
                if grant {
                    self.vote = m.from;
                    self.election_elapsed = 0;
                }
                // The vote is sent only once the hard state carrying it is durable.
                self.send_after_persist(m.from, Body::VoteResp { reject: !grant });
            }
            Body::PreVoteResp { reject } => {
                if self.role == Role::PreCandidate && (m.term == self.term + 1 || reject) {
                    self.record_vote(m.from, !reject);
                    self.tally_pre_votes();
                }
            }
            Body::VoteResp { reject } => {
                if self.role == Role::Candidate {
                    self.record_vote(m.from, !reject);
                    self.tally_votes();
                }
            }
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.role != Role::Follower {
                    self.become_follower(m.term, m.from);
                }
                self.leader = m.from;
                self.election_elapsed = 0;
                self.quiet = false;
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            Body::Heartbeat { commit, round } => {
                if self.role != Role::Follower {
                    self.become_follower(m.term, m.from);
                }
                self.leader = m.from;
                self.election_elapsed = 0;
                self.quiet = false;
                // The leader sends at most our match: we hold that prefix.
                let c = commit.min(self.log.last_index());
                if c > self.log.commit {
                    self.log.commit = c;
                }
                self.send(m.from, self.term, Body::HeartbeatResp { round });
            }
            Body::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_resp(m.from, reject, index, hint_index, hint_term);
                    let i = self.peer_idx(m.from).expect("checked above");
                    if m.from == self.transferee && self.prs[i].match_ == self.log.last_index() {
                        // The target caught up: let it take over now.
                        self.send(m.from, self.term, Body::TimeoutNow);
                    }
                }
            }
            Body::TimeoutNow => {
                if self.role == Role::Follower && m.from == self.leader {
                    // The leader hands over: campaign at once, no pre-vote.
                    self.become_candidate(true);
                    self.tally_votes();
                } else {
                    self.stats.messages_ignored += 1;
                }
            }
            Body::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.register_read(ctx, m.from);
                } else {
                    self.send(
                        m.from,
                        self.term,
                        Body::ReadIndexResp {
                            ctx,
                            index: 0,
                            reject: true,
                        },
                    );
                }
            }
            Body::Snapshot {
                index,
                term,
                offset,
                total,
                crc,
                chunk,
            } => {
                if self.role != Role::Follower {
                    self.become_follower(m.term, m.from);
                }
                self.leader = m.from;
                self.election_elapsed = 0;
                self.quiet = false;
                self.handle_snapshot_chunk(
                    m.from,
                    SnapshotMeta { index, term },
                    offset,
                    total,
                    crc,
                    chunk,
                );
            }
            Body::SnapshotAck { index, next_offset } => {
                if self.role == Role::Leader {
                    let i = self.peer_idx(m.from).expect("checked above");
                    let p = &mut self.prs[i];
                    p.recent_active = true;
                    if p.state == ProgressState::Snapshot
                        && p.snapshot.as_ref().is_some_and(|s| s.meta.index == index)
                    {
                        let total = p.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
                        p.snap_acked = next_offset;
                        // All held: wait for the install ack (a heartbeat
                        // round without it sends a probe chunk).
                        p.snap_sent = if next_offset >= total {
                            total + 1
                        } else {
                            next_offset
                        };
                    }
                }
            }
            Body::ReadIndexResp { ctx, index, reject } => {
                if reject {
                    self.reads_failed.push(ctx);
                } else {
                    self.read_states.push(ReadState { ctx, index });
                }
            }
            Body::HeartbeatResp { round } => {
                if self.role == Role::Leader {
                    let i = self.peer_idx(m.from).expect("checked above");
                    if round > self.read.acked[i] {
                        self.read.acked[i] = round;
                        if let Some(t) = self.read.sent_tick(round) {
                            self.read.acked_tick[i] = self.read.acked_tick[i].max(t);
                        }
                        self.release_reads();
                    }
                    let last = self.log.last_index();
                    let p = &mut self.prs[i];
                    p.recent_active = true;
                    p.probe_sent = false;
                    let stalled = p.match_ < last && p.match_ == p.match_at_heartbeat;
                    p.match_at_heartbeat = p.match_;
                    if p.state == ProgressState::Snapshot {
                        // A chunk or its ack may have been lost: resend
                        // from what the follower acknowledged.
                        p.snap_sent = p.snap_acked;
                    }
                    if p.state == ProgressState::Replicate && stalled {
                        // Entries are outstanding and nothing was acked for a
                        // whole heartbeat round: AppendEntries were lost (with
                        // no later append to expose the gap). Probe again.
                        p.become_probe();
                    }
                }
            }
        }
    }

    /// Whether a live leader is known (this node, or the one it heard from
    /// within an election timeout): vote requests are then disruptions.
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && (self.leader != 0 || self.quiet)
            && self.election_elapsed < self.cfg.election_ticks
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: Index,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        commit: Index,
    ) {
        // Entries at or below our commit are known to match: skip them.
        if prev_index < self.log.commit {
            let skip = ((self.log.commit - prev_index) as usize).min(entries.len());
            entries.drain(..skip);
            prev_index = self.log.commit;
            prev_term = self.log.term(prev_index).expect("commit within log");
            if let Some(f) = entries.first() {
                debug_assert_eq!(f.index, prev_index + 1);
            }
        }
        if !self.log.matches(prev_index, prev_term) {
            let (hint_index, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term);
            self.send_after_persist(
                from,
                Body::AppendResp {
                    reject: true,
                    index: prev_index,
                    hint_index,
                    hint_term,
                },
            );
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        if !entries.is_empty() {
            self.log.merge(&entries);
        }
        // Only what this message proved we hold may become committed here.
        let c = commit.min(last_new);
        if c > self.log.commit {
            self.log.commit = c;
        }
        // Ack only after persistence: the leader counts this as a replica.
        self.send_after_persist(
            from,
            Body::AppendResp {
                reject: false,
                index: last_new,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let i = self.peer_idx(from).expect("checked in step");
        self.prs[i].recent_active = true;
        if reject {
            let match_hint = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            let p = &mut self.prs[i];
            if p.maybe_decr_to(index, match_hint) && p.state == ProgressState::Replicate {
                p.become_probe();
            }
            return;
        }
        let p = &mut self.prs[i];
        let updated = p.maybe_update(index);
        match p.state {
            // The probe was answered (even if it taught us no new match):
            // the logs agree through `index`; pipeline from here.
            ProgressState::Probe if updated || p.match_ == index => p.become_replicate(),
            ProgressState::Replicate => p.inflight.free_le(index),
            ProgressState::Probe => {}
            ProgressState::Snapshot => {
                let snap_index = p.snapshot.as_ref().map_or(0, |s| s.meta.index);
                if p.match_ >= snap_index {
                    // Installed (or it had caught up otherwise): probe from there.
                    p.become_probe();
                }
            }
        }
        if updated {
            self.maybe_commit();
        }
    }

    /// Leader: commit the highest index replicated on a quorum, if it is of
    /// the current term (Figure 8: earlier-term entries commit only through it).
    fn maybe_commit(&mut self) {
        let mut m: Vec<Index> = Vec::with_capacity(self.peers.len() + 1);
        m.push(self.log.persisted);
        m.extend(self.prs.iter().map(|p| p.match_));
        m.sort_unstable_by(|a, b| b.cmp(a));
        let q = m[self.quorum() - 1];
        if q > self.log.commit && self.log.term(q) == Some(self.term) {
            let old = self.log.commit;
            self.log.commit = q;
            let mut freed = 0;
            for i in old + 1..=q {
                let e = self.log.entry(i).expect("committed within log");
                if e.term == self.term && e.kind == EntryKind::Normal {
                    freed += e.size_bytes();
                }
            }
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
            if !self.read.waiting_for_commit.is_empty() {
                for (ctx, from) in std::mem::take(&mut self.read.waiting_for_commit) {
                    self.register_read(ctx, from);
                }
            }
        }
    }

    /// Reports that the state machine has applied every committed entry up
    /// to `index` (entries are handed out in `Ready::committed`; applying may
    /// lag behind). Linearizable reads are served against this index.
    pub fn on_applied(&mut self, index: Index) {
        assert!(
            index <= self.log.applied,
            "on_applied({index}) beyond the entries handed out for applying ({})",
            self.log.applied
        );
        self.applied_reported = self.applied_reported.max(index);
    }

    /// The highest index reported applied with [`RawNode::on_applied`].
    pub fn applied_index(&self) -> Index {
        self.applied_reported
    }

    /// Reports that the Ready named by `token` (and every earlier one) is durable.
    pub fn on_persisted(&mut self, token: PersistToken) {
        while let Some(p) = self.pending.front() {
            if p.number > token.number {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            if let Some(m) = p.snapshot {
                if self.log.term(m.index) == Some(m.term) && m.index > self.log.persisted {
                    self.log.persisted = m.index;
                }
            }
            if let Some((i, t)) = p.last_entry {
                // ABA guard: if (i, t) was overwritten since, the report says
                // nothing about what is at i now.
                if self.log.matches(i, t) && i > self.log.persisted {
                    self.log.persisted = i;
                }
            }
            if let Some(t) = p.self_vote {
                if self.role == Role::Candidate && self.term == t && !self.self_vote_counted {
                    self.self_vote_counted = true;
                    self.tally_votes();
                }
            }
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ---- output ----

    fn send_appends(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        for i in 0..self.peers.len() {
            if self.prs[i].state != ProgressState::Snapshot
                && self.log.term(self.prs[i].next - 1).is_none()
            {
                // The entries this follower needs were compacted away.
                let snap = self
                    .snapshot
                    .clone()
                    .expect("a compacted log has a snapshot");
                self.prs[i].become_snapshot(snap);
            }
            if self.prs[i].state == ProgressState::Snapshot {
                self.send_snapshot_chunk(i);
                continue;
            }
            loop {
                let p = &self.prs[i];
                if !p.can_send() {
                    break;
                }
                let has_entries = p.next <= last;
                let probe = p.state == ProgressState::Probe;
                let commit_news = p.commit_sent < self.log.commit;
                if !has_entries && !probe && !commit_news {
                    break;
                }
                if !has_entries
                    && probe
                    && p.match_ + 1 == p.next
                    && !commit_news
                    && p.match_ == last
                {
                    // Probe of a follower already known to be up to date.
                    break;
                }
                let prev_index = p.next - 1;
                let prev_term = self
                    .log
                    .term(prev_index)
                    .expect("checked above: prev within log");
                let entries = if has_entries {
                    self.log.slice(p.next, last + 1, self.cfg.msg_bytes_max)
                } else {
                    Vec::new()
                };
                let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
                let commit = self.log.commit;
                let p = &mut self.prs[i];
                p.commit_sent = commit;
                if let Some(l) = entries.last() {
                    if p.state == ProgressState::Replicate {
                        p.next = l.index + 1;
                        p.inflight.add(l.index, bytes);
                    }
                }
                if p.state == ProgressState::Probe {
                    p.probe_sent = true;
                }
                let empty = entries.is_empty();
                let to = self.peers[i];
                self.send(
                    to,
                    self.term,
                    Body::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                    },
                );
                if empty || probe {
                    break;
                }
            }
        }
    }

    /// Snapshot state: sends the next chunk if the previous one was acknowledged.
    fn send_snapshot_chunk(&mut self, i: usize) {
        let chunk_max = self.cfg.snapshot_chunk_bytes;
        let p = &mut self.prs[i];
        if !p.can_send() {
            return;
        }
        let snap = p.snapshot.as_ref().expect("snapshot state has a snapshot");
        let total = snap.data.len() as u64;
        // Once everything is held, this sends an empty chunk at `total`: a
        // probe (after a heartbeat round without the install ack) that the
        // follower answers with where its log stands.
        let from = p.snap_acked.min(total);
        let to = (from + chunk_max).min(total);
        let msg = Body::Snapshot {
            index: snap.meta.index,
            term: snap.meta.term,
            offset: from,
            total,
            crc: p.snap_crc,
            chunk: snap.data.slice(from as usize..to as usize),
        };
        p.snap_sent = to.max(from + 1);
        let peer = self.peers[i];
        self.send(peer, self.term, msg);
    }

    /// Whether `ready` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || !self.reads_failed.is_empty()
            || self.snapshot_to_persist.is_some()
            || (self.role == Role::Leader && self.read.round_wanted)
            || self.log.has_unstable()
            || self.log.has_to_apply()
            || self.hard_state() != self.prev_hard
            || self.soft_state() != self.prev_soft
            || (self.role == Role::Leader && self.has_appends_to_send())
    }

    fn has_appends_to_send(&self) -> bool {
        let last = self.log.last_index();
        self.prs.iter().any(|p| {
            p.can_send()
                && (p.state == ProgressState::Snapshot
                    || p.next <= last
                    || p.commit_sent < self.log.commit
                    || self.log.term(p.next - 1).is_none())
        })
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader(),
            term: self.term,
        }
    }

    /// Hands out everything accumulated since the last Ready: one batch of
    /// AppendEntries per follower for all proposals since then.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader && self.read.round_wanted {
            // One heartbeat round confirms every read registered this turn.
            self.broadcast_heartbeat();
        }
        self.send_appends();
        self.ready_number += 1;
        let number = self.ready_number;
        let hs = self.hard_state();
        let hard_state = (hs != self.prev_hard).then_some(hs);
        self.prev_hard = hs;
        let ss = self.soft_state();
        let soft_state = (ss != self.prev_soft).then_some(ss);
        self.prev_soft = ss;
        let entries = self.log.take_unstable();
        let committed = self.log.next_to_apply(self.cfg.apply_bytes_max);
        let self_vote = match (self.self_vote_pending, hard_state) {
            (Some(t), Some(h)) if h.term == t && h.vote == self.id => self.self_vote_pending.take(),
            _ => None,
        };
        let snapshot = self.snapshot_to_persist.take();
        self.pending.push_back(Pending {
            number,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            self_vote,
            snapshot: snapshot.as_ref().map(|s| s.meta),
        });
        Ready {
            number,
            soft_state,
            hard_state,
            entries,
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.msgs_after_persist),
            committed,
            read_states: std::mem::take(&mut self.read_states),
            reads_failed: std::mem::take(&mut self.reads_failed),
            snapshot,
        }
    }
}
