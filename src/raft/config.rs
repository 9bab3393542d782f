//! Settings of one Raft group member, validated once.

use super::types::ReplicaId;

/// Settings of a group member. Every bound has a name and a default.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id (non-zero).
    pub id: ReplicaId,
    /// The voters of a new group, this node included; empty for a node that
    /// joins an existing group (it learns the membership from the leader).
    /// Once the log holds membership changes, they decide.
    pub voters: Vec<ReplicaId>,
    /// The learners of a new group.
    pub learners: Vec<ReplicaId>,
    /// Ticks without hearing from a leader before campaigning; the actual
    /// timeout is drawn from [election_ticks, 2 * election_ticks). Default 10.
    pub election_ticks: u32,
    /// Ticks between leader heartbeats. Default 1; must be < election_ticks.
    pub heartbeat_ticks: u32,
    /// Pre-vote (thesis §9.6): a node campaigns only if a quorum would vote
    /// for it, so a rejoining partitioned node does not disrupt. Default on.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an
    /// election timeout, and followers that heard from a leader recently
    /// ignore vote requests. Default on.
    pub check_quorum: bool,
    /// AppendEntries in flight per follower in replicate state. Default 256.
    pub inflight_msgs_max: usize,
    /// Entry bytes in flight per follower. Default 32 MiB.
    pub inflight_bytes_max: u64,
    /// Entry bytes per AppendEntries (a single larger entry goes alone). Default 1 MiB.
    pub msg_bytes_max: u64,
    /// Bytes of proposed but uncommitted entries on a leader; past it
    /// `propose` fails with `ProposeError::Backpressure`. Default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// Bytes of committed entries handed out in one Ready. Default 16 MiB.
    pub apply_bytes_max: u64,
    /// Entries kept in the log behind a snapshot, so that slightly slow
    /// followers catch up from the log rather than by snapshot. Default 1000.
    pub compact_keep_entries: u64,
    /// Bytes per snapshot chunk sent to a follower. Default 1 MiB.
    pub snapshot_chunk_bytes: u64,
    /// Largest snapshot a follower accepts (a bound on its receive buffer).
    /// Default 4 GiB.
    pub snapshot_bytes_max: u64,
    /// A learner is promoted only if it is at most this many entries behind
    /// the leader's last index. Default 1000.
    pub promote_lag_entries_max: u64,
    /// Lease reads: with check-quorum, a leader serves reads from its own
    /// state while a quorum acknowledged a heartbeat round sent less than
    /// `L = election_ticks - lease_drift_ticks - 1` of its ticks ago.
    /// Clock assumption, stated plainly: L leader ticks never last longer
    /// than `election_ticks - 1` ticks of any follower (tick rates differ by
    /// at most a factor (election_ticks - 1) / L; with the defaults 10 and 2,
    /// 9/7), and a paused leader process stops ticking (its lease does not
    /// run out while it is frozen, so a pause longer than the lease followed
    /// by a read before the next tick is outside the assumption; the node
    /// layer ticks from a monotonic clock after every wake-up to close it).
    /// Default off; ReadIndex is used instead.
    pub lease_reads: bool,
    /// The clock-drift bound of lease reads, in ticks per election timeout.
    /// Default 2.
    pub lease_drift_ticks: u32,
    /// Seed of the node's RNG (election timeouts). The node mixes in its id.
    pub seed: u64,
    /// Quiescence (CockroachDB's, TiKV's hibernate regions): an idle leader
    /// whose followers hold its whole log stops ticking and heartbeating,
    /// and so do its followers, until a message, a proposal, a read or an
    /// unreachable leader wakes them (`RawNode::quiesced` has the rules).
    /// Default off here (a bare core heartbeats as Raft does); the node
    /// turns it on (`--quiesce`, default true).
    pub quiesce: bool,
    /// The voter of a new group (term 0) that campaigns first, at its
    /// first tick instead of after an election timeout; the host names the
    /// same one on every replica of the group (the one whose id it is
    /// campaigns; the others wait out their election timeouts as usual).
    /// Thousands of groups created at once that all wait out their
    /// timeouts campaign together, overload their nodes and split their
    /// votes: 10,000 groups per node elected no leader in 120 s (issue
    /// #16). CockroachDB's new ranges campaign eagerly on one replica
    /// alike. 0 (the default): none.
    pub first_candidate: ReplicaId,
}

impl RaftConfig {
    /// Defaults for node `id` among `voters`.
    pub fn new(id: ReplicaId, voters: Vec<ReplicaId>) -> Self {
        RaftConfig {
            id,
            voters,
            learners: Vec::new(),
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: 256,
            inflight_bytes_max: 32 << 20,
            msg_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            apply_bytes_max: 16 << 20,
            compact_keep_entries: 1000,
            promote_lag_entries_max: 1000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 4 << 30,
            lease_reads: false,
            lease_drift_ticks: 2,
            seed: 0,
            quiesce: false,
            first_candidate: 0,
        }
    }

    /// Checks every setting and every combination once.
    pub fn validate(self) -> Result<ValidRaftConfig, ConfigError> {
        use ConfigError::*;
        if self.id == 0 {
            return Err(ZeroId);
        }
        let mut v: Vec<ReplicaId> = self.voters.iter().chain(&self.learners).copied().collect();
        v.sort_unstable();
        if v.windows(2).any(|w| w[0] == w[1]) {
            return Err(DuplicateVoter);
        }
        if v.contains(&0) {
            return Err(ZeroId);
        }
        if !self.voters.is_empty() && !v.contains(&self.id) {
            return Err(NotAVoter(self.id));
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks {
            return Err(Ticks {
                heartbeat: self.heartbeat_ticks,
                election: self.election_ticks,
            });
        }
        if self.inflight_msgs_max == 0 {
            return Err(Zero("inflight_msgs_max"));
        }
        for (name, v) in [
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("msg_bytes_max", self.msg_bytes_max),
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("apply_bytes_max", self.apply_bytes_max),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_bytes_max", self.snapshot_bytes_max),
        ] {
            if v == 0 {
                return Err(Zero(name));
            }
        }
        if self.msg_bytes_max > self.inflight_bytes_max {
            return Err(MsgLargerThanWindow {
                msg: self.msg_bytes_max,
                window: self.inflight_bytes_max,
            });
        }
        if self.lease_reads && !self.check_quorum {
            return Err(LeaseWithoutCheckQuorum);
        }
        if self.lease_drift_ticks + 1 >= self.election_ticks {
            return Err(LeaseDrift {
                drift: self.lease_drift_ticks,
                election: self.election_ticks,
            });
        }
        Ok(ValidRaftConfig(self))
    }
}

/// A config that passed [`RaftConfig::validate`]; it cannot be built otherwise.
#[derive(Debug, Clone)]
pub struct ValidRaftConfig(RaftConfig);

impl std::ops::Deref for ValidRaftConfig {
    type Target = RaftConfig;
    fn deref(&self) -> &RaftConfig {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("raft config: node ids must be non-zero")]
    ZeroId,
    #[error("raft config: a member is listed twice (voters and learners together)")]
    DuplicateVoter,
    #[error("raft config: this node ({0}) is not among the members (leave voters empty to join an existing group)")]
    NotAVoter(ReplicaId),
    #[error("raft config: heartbeat_ticks = {heartbeat} must be at least 1 and below election_ticks = {election}")]
    Ticks { heartbeat: u32, election: u32 },
    #[error("raft config: {0} must be positive")]
    Zero(&'static str),
    #[error("raft config: msg_bytes_max = {msg} must not exceed inflight_bytes_max = {window}")]
    MsgLargerThanWindow { msg: u64, window: u64 },
    #[error(
        "raft config: lease_reads needs check_quorum (the lease is the check-quorum guarantee)"
    )]
    LeaseWithoutCheckQuorum,
    #[error("raft config: lease_drift_ticks = {drift} must be below election_ticks - 1 = {election} - 1")]
    LeaseDrift { drift: u32, election: u32 },
}
