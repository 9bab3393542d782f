//! `RawNode`: the consensus state machine of one group member.
//!
//! Over 800 lines: the state, `step`'s dispatch and the Ready/persistence
//! handshake are one topic; elections, replication, membership, reads and
//! snapshots already live in the submodules below.

mod election;
pub use election::MEMBER_CHECK_ELECTIONS;
mod membership;
mod quiesce;
mod reads;
mod replication;
mod snapshots;

use std::collections::VecDeque;

use bytes::Bytes;

use super::clock::Clock;
use super::conf::{ConfChange, ConfState};
use super::config::ValidRaftConfig;
use super::log::RaftLog;
use super::progress::{Progress, ProgressState};
use super::read::{PendingRead, ReadOnly, ReadState};
use super::types::*;
use crate::rng::Rng;

/// Why a proposal was not accepted. The proposal is dropped; nothing of it
/// was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<ReplicaId> },
    #[error("backpressure: {uncommitted_bytes} bytes uncommitted, uncommitted_bytes_max = {max}")]
    Backpressure { uncommitted_bytes: u64, max: u64 },
    #[error(
        "leadership is being transferred to node {to}; proposals are refused until it is done"
    )]
    TransferInProgress { to: ReplicaId },
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
    NotLeader { leader: Option<ReplicaId> },
    #[error("node {0} is not a voter of this group")]
    UnknownTarget(ReplicaId),
    #[error("this node already leads")]
    TargetIsSelf,
}

/// Role and leader, handed out in a Ready when they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<ReplicaId>,
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
    /// those after it unless `snapshot_dropped_log`.
    pub snapshot: Option<Snapshot>,
    /// With `snapshot`: an install since the last Ready found a log that
    /// did not hold the snapshot's last entry (index, term) and dropped it
    /// whole (`RaftLog::install`); storage must drop every entry it holds,
    /// not only those up to the snapshot. False when every install kept
    /// the entries after the snapshot. Storage cannot always tell by
    /// itself: the records that held the snapshot's last entry may already
    /// be released from the WAL.
    pub snapshot_dropped_log: bool,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    /// Snapshot chunks to read from storage, then send like `messages`
    /// (only once the application said it stores the snapshot:
    /// [`RawNode::snapshot_stored`]).
    pub snapshot_reads: Vec<SnapshotRead>,
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
    /// CRC32 of `buf` so far: each chunk is summed as it arrives, not the
    /// whole snapshot at its end.
    sum: crc32fast::Hasher,
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

/// Counters a node keeps about itself.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    pub messages_ignored: u64,
    pub proposals_refused: u64,
    pub elections_started: u64,
    /// Ticks at which the election timer had run out but the host did not
    /// let this node campaign (`advance`).
    pub campaigns_deferred: u64,
    /// `Body::MemberCheck` messages sent (a learner or non-member that
    /// heard from no leader for `MEMBER_CHECK_ELECTIONS` election timeouts).
    pub member_checks_sent: u64,
    /// `Body::MemberCheck` messages received from members.
    pub member_checks_received: u64,
}

/// One member of a Raft group. A pure function of its inputs: `tick`,
/// `step`, `propose`, `on_persisted`; outputs are pulled with `ready`.
#[derive(Debug)]
pub struct RawNode {
    cfg: ValidRaftConfig,
    id: ReplicaId,
    /// The membership in force (as of the last entry handed out to apply).
    conf: ConfState,
    /// (index, membership from that index on), ascending; the first one is
    /// the membership at the snapshot (or initial).
    conf_history: Vec<(Index, ConfState)>,
    /// Index of the last membership change this leader appended; no new
    /// change until it is applied.
    pending_conf_index: Index,
    /// Every member other than this node, sorted; `prs[i]` belongs to `peers[i]`.
    peers: Vec<ReplicaId>,
    prs: Vec<Progress>,
    term: Term,
    vote: ReplicaId,
    role: Role,
    leader: ReplicaId,
    log: RaftLog,
    /// Votes received in the current (pre-)election: (peer, granted).
    votes: Vec<(ReplicaId, bool)>,
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
    /// The clock this node counts ticks from (`raft::clock`): its own, or
    /// one shared by its shard's replicas (`set_clock`).
    clock: Clock,
    /// The clock's reading this node has counted up to; every input counts
    /// the ticks since first (`catch_up`).
    clock_seen: u64,
    read: ReadOnly,
    read_states: Vec<ReadState>,
    reads_failed: Vec<u64>,
    /// Leader transfer under way to this node (0: none).
    transferee: ReplicaId,
    transfer_elapsed: u32,
    /// The voter a removed leader last tried to hand over to
    /// (`hand_over`): tried last next time, after the others. 0: none.
    hand_over_last: ReplicaId,
    /// The latest snapshot (taken here or installed): sent to followers
    /// that need compacted entries.
    snapshot: Option<Box<Snapshot>>,
    /// CRC32 of `snapshot`'s data (0: none), sent with its chunks. Given
    /// by whoever made the data (`compact_with_crc`, the leader of an
    /// install), so a large snapshot is never checksummed on the
    /// executor that drives this core.
    snapshot_crc: u32,
    /// Length of `snapshot`'s data, held or not (`snapshot_stored`).
    snapshot_bytes: u64,
    /// Chunks of a stored snapshot for the application to read and send
    /// (`Ready::snapshot_reads`).
    snapshot_reads: Vec<SnapshotRead>,
    /// An installed snapshot for the next Ready.
    snapshot_to_persist: Option<Box<Snapshot>>,
    /// An install since the last Ready dropped the whole log (it did not
    /// hold the snapshot's last entry): `Ready::snapshot_dropped_log`.
    install_dropped_log: bool,
    /// Chunks of a snapshot being received: (meta, total, crc, term of its
    /// leader, bytes so far).
    incoming: Option<Box<Incoming>>,
    /// Just restarted: it may have been a follower in some leader's lease,
    /// so it refuses votes for an election timeout (lease reads rely on it).
    quiet: bool,
    /// Quiesced (`quiesce`): ticks are ignored until something wakes it.
    /// Invariant: only a leader or a follower with a leader is quiesced.
    quiesced: bool,
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
        let log = RaftLog::restored(
            snapshot.as_ref().map(|s| s.meta),
            entries,
            hs.commit,
            applied,
        );
        // Membership: the snapshot's (or the initial one), then every change
        // among the entries the state machine already applied (they are not
        // handed out again).
        let base_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
        let mut conf = snapshot
            .as_ref()
            .map(|s| s.conf.clone())
            .unwrap_or_else(|| ConfState::new(&cfg.voters, &cfg.learners));
        let mut conf_history = vec![(base_index, conf.clone())];
        for i in log.first_index()..=log.applied {
            let e = log
                .entry(i)
                .expect("applied entries are in the restored log");
            if e.kind == EntryKind::ConfChange {
                conf = conf
                    .apply_entry(&e.data)
                    .expect("a committed membership change decodes and applies");
                conf_history.push((i, conf.clone()));
            }
        }
        let peers: Vec<ReplicaId> = conf.members().into_iter().filter(|&v| v != id).collect();
        let prs = peers
            .iter()
            .map(|_| Progress::new(1, cfg.inflight_msgs_max, cfg.inflight_bytes_max))
            .collect();
        let seed = cfg.seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407);
        let mut n = RawNode {
            id,
            conf,
            conf_history,
            pending_conf_index: 0,
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
            clock: Clock::new(),
            clock_seen: 0,
            read: ReadOnly::default(),
            read_states: Vec::new(),
            reads_failed: Vec::new(),
            hand_over_last: 0,
            transferee: 0,
            transfer_elapsed: 0,
            snapshot_crc: snapshot.as_ref().map_or(0, |s| crc32fast::hash(&s.data)),
            snapshot_bytes: snapshot.as_ref().map_or(0, |s| s.data.len() as u64),
            snapshot_reads: Vec::new(),
            snapshot: snapshot.map(Box::new),
            snapshot_to_persist: None,
            install_dropped_log: false,
            incoming: None,
            quiet: false,
            quiesced: false,
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
        if n.cfg.first_candidate == n.id && hs.term == 0 && n.promotable() {
            n.election_timeout = 1;
        }
        n
    }

    // ---- accessors ----

    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> Option<ReplicaId> {
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
    pub fn progress(&self, peer: ReplicaId) -> Option<&Progress> {
        if self.role != Role::Leader {
            return None;
        }
        self.peer_idx(peer).map(|i| &self.prs[i])
    }
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }

    fn peer_idx(&self, id: ReplicaId) -> Option<usize> {
        self.peers.binary_search(&id).ok()
    }

    /// A message from the leader of our term: follow it, restart the
    /// election timer.
    fn heard_from_leader(&mut self, term: Term, from: ReplicaId) {
        if self.role != Role::Follower {
            self.become_follower(term, from);
        }
        self.leader = from;
        self.election_elapsed = 0;
        self.quiet = false;
    }

    /// Whether this node may campaign (a voter of the membership in force).
    pub fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    /// The membership in force.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }

    /// The log index from which [`conf`](Self::conf) is in force: that of
    /// the last membership change applied, or of the snapshot (or 0, the
    /// initial one) if none was applied since. Committed, so a node whose
    /// own `conf_index` is lower has not seen that membership yet.
    pub fn conf_index(&self) -> Index {
        self.conf_history.last().map_or(0, |(i, _)| *i)
    }

    fn reset_election_timeout(&mut self) {
        let e = self.cfg.election_ticks as u64;
        self.election_timeout = (e + self.rng.next() % e) as u32;
    }

    fn send(&mut self, to: ReplicaId, term: Term, body: Body) {
        let m = self.message(to, term, body);
        self.msgs.push(m);
    }

    fn message(&self, to: ReplicaId, term: Term, body: Body) -> Message {
        Message {
            from: self.id,
            to,
            term,
            body,
        }
    }

    fn send_after_persist(&mut self, to: ReplicaId, body: Body) {
        self.msgs_after_persist.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Proposes a command. On success returns its (index, term): it is
    /// applied iff an entry with that index *and* term comes out committed.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        self.catch_up();
        self.wake();
        if self.role != Role::Leader {
            self.stats.proposals_refused += 1;
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.transferee != 0 || !self.promotable() {
            // A removed leader hands over (`hand_over`): no new entries.
            self.stats.proposals_refused += 1;
            return Err(match self.transferee() {
                Some(to) => ProposeError::TransferInProgress { to },
                None => ProposeError::NotLeader { leader: None },
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

    /// The transport lost its connection to `peer`'s node (or hears
    /// nothing from it). A leader replicates to it from a probe again, and
    /// may quiesce without it until it hears from it; a quiesced follower
    /// whose leader it is wakes, to elect another if it is gone, counting
    /// the leader's silence as one election timeout already passed (it
    /// grants pre-votes at once). The voter with the lowest id but the
    /// leader's campaigns at its next tick; the voter of rank r >= 1 among
    /// those left after e / 2 + r ticks (e = `election_ticks`; at most e),
    /// so they are not candidates too when its vote requests come
    /// (randomized timeouts alone split the vote in about 3% of 400
    /// simulated crashes, past two election timeouts), and campaign in turn
    /// if it is gone too. A new leader writes within about two election
    /// timeouts of the report (issue #16; CockroachDB campaigns on unquiesce when
    /// the leader is not live). Safe for leases: a quiesced follower has
    /// acknowledged nothing since its leader quiesced, and a quiesced
    /// leader holds no lease (`quiesce_leader`); a woken leader's new
    /// round reaches this follower only by waking it. An awake follower
    /// keeps its timer (it may be in its leader's lease).
    pub fn report_unreachable(&mut self, peer: ReplicaId) {
        self.catch_up();
        if self.role != Role::Leader {
            if peer == self.leader && self.quiesced {
                self.wake();
                let e = self.cfg.election_ticks;
                self.election_elapsed = e;
                // Rank among the voters left, by id (the voters below this
                // one, either configuration, counted once): 0 campaigns at
                // the next tick, rank r >= 1 after e / 2 + r ticks (at most e).
                let (id, c) = (self.id, &self.conf);
                let below = |v: &&ReplicaId| **v < id && **v != peer;
                let rank = c.voters.iter().filter(below).count()
                    + c.voters_outgoing
                        .iter()
                        .filter(below)
                        .filter(|v| c.voters.binary_search(v).is_err())
                        .count();
                let rank = rank as u32;
                self.election_timeout = e + if rank == 0 { 1 } else { (e / 2 + rank).min(e) };
            }
            return;
        }
        if let Some(i) = self.peer_idx(peer) {
            self.prs[i].unreachable = true;
            if self.prs[i].state == ProgressState::Replicate {
                self.prs[i].become_probe();
            }
        }
    }

    /// The transport reaches `peer`'s node again (a link came up, or the
    /// peer was heard after a silence). A quiesced leader that had
    /// quiesced without it wakes if it is behind: a replica still to be
    /// created there (added while its node was down) would otherwise never
    /// hear from it. One that holds the whole log is sent `Quiesce` again
    /// and the leader stays quiesced: a restarted node learns its leader at
    /// once and quiesces too, instead of every group's replica there
    /// waiting out an election timeout and campaigning to find it (10,000
    /// groups: 3.4 s of pre-votes, at `campaigns_per_tick_max` a tick).
    pub fn report_reachable(&mut self, peer: ReplicaId) {
        self.catch_up();
        if self.role != Role::Leader {
            return;
        }
        if let Some(i) = self.peer_idx(peer) {
            self.prs[i].unreachable = false;
            let match_ = self.prs[i].match_;
            if match_ < self.log.last_index() {
                self.wake();
            } else if self.quiesced {
                let commit = self.log.commit.min(match_);
                self.send(peer, self.term, Body::Quiesce { commit });
            }
        }
    }

    /// Takes one message from a peer of this group.
    pub fn step(&mut self, m: Message) {
        self.catch_up();
        // A node may hear from a leader (or a candidate) that is not in the
        // membership it knows yet (it is joining, or lags behind a change);
        // answers from non-members are ignored.
        let from_leader_or_candidate = matches!(
            m.body,
            Body::Append { .. }
                | Body::Heartbeat { .. }
                | Body::Snapshot { .. }
                | Body::PreVote { .. }
                | Body::Vote { .. }
                | Body::TimeoutNow
                | Body::ReadIndexResp { .. }
                | Body::Quiesce { .. }
        );
        // Note: a node answers vote requests even if it is a learner in the
        // membership it knows: that membership may be stale (it may have
        // been promoted), and a candidate counts only its own voters' votes.
        // Ignoring them can deadlock a joint configuration (sim seed 4683).
        // `Removed` is for the host (it destroys the replica); its term
        // must not move this node's.
        if m.to != self.id
            || m.from == self.id
            || (self.peer_idx(m.from).is_none() && !from_leader_or_candidate)
            || matches!(m.body, Body::Removed { .. })
        {
            self.stats.messages_ignored += 1;
            return;
        }
        if let Body::MemberCheck { .. } = m.body {
            // A member asks (see `Body::MemberCheck`): a quiesced node
            // wakes, so a leader heartbeats it again; its term moves
            // nothing (it may be a learner's stale one).
            self.wake();
            self.stats.member_checks_received += 1;
            return;
        }
        if !matches!(m.body, Body::Quiesce { .. }) {
            self.wake();
        }
        if self.role == Role::Leader {
            if let Some(i) = self.peer_idx(m.from) {
                self.prs[i].unreachable = false;
            }
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
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Quiesce { .. } => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            match m.body {
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Quiesce { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader (e.g. back from a partition): tell it our
                    // term so it steps down.
                    self.send(m.from, self.term, Body::HeartbeatResp { round: 0 });
                }
                Body::ReadIndex { ctx } => {
                    self.refuse_read(m.from, ctx);
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
                self.heard_from_leader(m.term, m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            Body::Heartbeat { commit, round } => {
                self.heard_from_leader(m.term, m.from);
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
                if self.role == Role::Follower && m.from == self.leader && self.promotable() {
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
                    self.refuse_read(m.from, ctx);
                }
            }
            Body::Snapshot {
                index,
                term,
                conf,
                offset,
                total,
                crc,
                chunk,
            } => {
                self.heard_from_leader(m.term, m.from);
                let c = snapshots::SnapshotChunk {
                    meta: SnapshotMeta { index, term },
                    conf,
                    offset,
                    total,
                    crc,
                    chunk,
                };
                self.handle_snapshot_chunk(m.from, c);
            }
            Body::SnapshotAck { index, next_offset } => {
                if self.role == Role::Leader {
                    let i = self.peer_idx(m.from).expect("checked above");
                    let p = &mut self.prs[i];
                    p.recent_active = true;
                    if p.state == ProgressState::Snapshot
                        && p.snapshot.as_ref().is_some_and(|s| s.meta.index == index)
                    {
                        let total = p.snap_total;
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
            // Ignored before the term checks already (see the top).
            Body::Removed { .. } | Body::MemberCheck { .. } => self.stats.messages_ignored += 1,
            Body::Quiesce { commit } => self.handle_quiesce(m.from, m.term, commit),
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

    /// Reports that the state machine has applied every committed entry up
    /// to `index` (entries are handed out in `Ready::committed`; applying may
    /// lag behind). Linearizable reads are served against this index.
    pub fn on_applied(&mut self, index: Index) {
        self.catch_up();
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
        self.catch_up();
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
        self.release_pending_memory();
        self.log.debug_check();
    }

    /// Whether `ready` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.snapshot_reads.is_empty()
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
                    || (p.seed && self.snapshot.is_some())
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
        self.catch_up();
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
        for e in committed.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            self.apply_conf_entry(e.index, &e.data);
        }
        self.leave_joint_if_stranded();
        let self_vote = match (self.self_vote_pending, hard_state) {
            (Some(t), Some(h)) if h.term == t && h.vote == self.id => self.self_vote_pending.take(),
            _ => None,
        };
        let snapshot = self.snapshot_to_persist.take().map(|s| *s);
        let snapshot_dropped_log = std::mem::take(&mut self.install_dropped_log);
        self.log.debug_check();
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
            snapshot_reads: std::mem::take(&mut self.snapshot_reads),
            persisted_messages: std::mem::take(&mut self.msgs_after_persist),
            committed,
            read_states: std::mem::take(&mut self.read_states),
            reads_failed: std::mem::take(&mut self.reads_failed),
            snapshot,
            snapshot_dropped_log,
        }
    }
}
