//! Membership changes: proposing them, applying them, and the helpers users
//! expect (add a learner, promote it once caught up, remove a node).

use super::*;
use crate::raft::conf::{ConfChangeError, ConfChangeOp};

impl RawNode {
    /// Proposes a membership change (see `raft::conf`). Refused with a clear
    /// error when another change is in progress, when this leader has not
    /// committed an entry of its term yet, during a leader transfer, when it
    /// would remove a majority of the voters at once, or when the new voters
    /// could not reach a quorum now.
    pub fn propose_conf_change(
        &mut self,
        cc: ConfChange,
    ) -> Result<(Index, Term), ConfChangeError> {
        self.catch_up();
        self.wake();
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.transferee != 0 || !self.promotable() {
            return Err(ConfChangeError::TransferInProgress);
        }
        if !self.committed_in_term() {
            return Err(ConfChangeError::NotReady);
        }
        if self.pending_conf_index > self.log.applied {
            return Err(ConfChangeError::InProgress {
                pending: self.pending_conf_index,
            });
        }
        let new = self.conf.apply(&cc)?;
        for op in &cc.ops {
            if let ConfChangeOp::AddVoter { replica, .. }
            | ConfChangeOp::AddLearner { replica, .. } = *op
            {
                let member = self.conf.is_voter(replica) || self.conf.is_learner(replica);
                if !member && self.snapshot.is_none() {
                    return Err(ConfChangeError::NoSnapshot(replica));
                }
            }
        }
        if !cc.ops.is_empty() {
            let removed = self
                .conf
                .voters
                .iter()
                .filter(|v| !new.voters.contains(v))
                .count();
            if removed > 0 && removed > (self.conf.voters.len() - 1) / 2 {
                return Err(ConfChangeError::RemovesMajority {
                    removed,
                    voters: self.conf.voters.len(),
                });
            }
            // Heard from within the last one to two election timeouts:
            // `recent_active` alone is cleared at each check-quorum round,
            // and a change asked right after one was refused although
            // every voter was answering (found by a simulator scenario).
            let active = |id: ReplicaId| {
                id == self.id
                    || self.peer_idx(id).is_some_and(|i| {
                        let p = &self.prs[i];
                        p.recent_active || p.active_last_round
                    })
            };
            if !new.quorum(active) {
                return Err(ConfChangeError::QuorumUnreachable {
                    active: new.voters.iter().filter(|&&v| active(v)).count(),
                    voters: new.voters.len(),
                });
            }
        }
        Ok(self.append_conf_change(&cc))
    }

    fn append_conf_change(&mut self, cc: &ConfChange) -> (Index, Term) {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            term: self.term,
            index,
            kind: EntryKind::ConfChange,
            data: Bytes::from(cc.encode()),
        });
        self.pending_conf_index = index;
        (index, self.term)
    }

    /// Adds a learner on `node`: a new replica, whose id (returned) is the
    /// group's `next_replica_id`. It receives the log, never votes.
    pub fn add_learner(
        &mut self,
        node: NodeId,
    ) -> Result<(ReplicaId, Index, Term), ConfChangeError> {
        self.catch_up();
        // The membership in force is the newest one: a change not applied
        // yet is refused (`InProgress`), so the id is not handed out twice;
        // one proposed but never committed is never placed anywhere.
        let replica = self.conf.next_replica_id.max(1);
        self.propose_conf_change(ConfChange {
            ops: vec![ConfChangeOp::AddLearner { replica, node }],
        })
        .map(|(index, term)| (replica, index, term))
    }

    /// Promotes learner `id` to voter, if it has acknowledged entries
    /// (`NotSeeded` otherwise: however short the log, a voter holding
    /// nothing weakens every quorum it joins) and is within
    /// `promote_lag_entries_max` entries of the leader's log (as etcd
    /// promotes only a learner that is ready).
    pub fn promote_learner(&mut self, id: ReplicaId) -> Result<(Index, Term), ConfChangeError> {
        self.catch_up();
        let node = self.ready_learner(id)?;
        self.propose_conf_change(ConfChange {
            ops: vec![ConfChangeOp::AddVoter { replica: id, node }],
        })
    }

    /// Promotes learner `learner` and removes voter `voter` in one joint
    /// configuration (old voters and new, each of the same size: a range
    /// of RF voters never has fewer in either half), left at once by the
    /// leader: the move's membership step. This is CockroachDB's atomic
    /// replication change and the Raft thesis's §4.3 joint consensus,
    /// rather than promote-then-remove, which passes through RF + 1
    /// voters (an even count, with a larger quorum). Refused as
    /// [`promote_learner`](Self::promote_learner) is for a learner that
    /// has not caught up; `NotMember` if `voter` is not a voter. `voter`
    /// may be this leader: it hands leadership over once the change is in
    /// force (`hand_over`), though a mover moves leadership first.
    pub fn replace_voter(
        &mut self,
        learner: ReplicaId,
        voter: ReplicaId,
    ) -> Result<(Index, Term), ConfChangeError> {
        self.catch_up();
        if !self.conf.is_voter(voter) {
            return Err(ConfChangeError::NotMember(voter));
        }
        let node = self.ready_learner(learner)?;
        self.propose_conf_change(ConfChange {
            ops: vec![
                ConfChangeOp::AddVoter {
                    replica: learner,
                    node,
                },
                ConfChangeOp::Remove(voter),
            ],
        })
    }

    /// `id`'s node, if `id` is a learner this leader may promote: seeded
    /// and within `promote_lag_entries_max` entries of its log
    /// (`NotMember`, `NotSeeded`, `NotCaughtUp` otherwise).
    pub fn ready_learner(&self, id: ReplicaId) -> Result<NodeId, ConfChangeError> {
        if !self.conf.is_learner(id) {
            return Err(ConfChangeError::NotMember(id));
        }
        if self.role == Role::Leader {
            let m = self.peer_idx(id).map_or(0, |i| self.prs[i].match_);
            let behind = self.log.last_index().saturating_sub(m);
            if behind > self.cfg.promote_lag_entries_max {
                return Err(ConfChangeError::NotCaughtUp {
                    id,
                    behind,
                    max: self.cfg.promote_lag_entries_max,
                });
            }
            if m == 0 {
                return Err(ConfChangeError::NotSeeded(id));
            }
        }
        Ok(self.conf.node_of(id).expect("a learner has a placement"))
    }

    /// Removes voter or learner replica `id`.
    pub fn remove_replica(&mut self, id: ReplicaId) -> Result<(Index, Term), ConfChangeError> {
        self.catch_up();
        self.propose_conf_change(ConfChange {
            ops: vec![ConfChangeOp::Remove(id)],
        })
    }

    /// Joining, with no membership known yet: it waits for a snapshot.
    /// Whether a membership change this leader proposed is not applied
    /// yet (another is refused until it is: `ConfChangeError::InProgress`).
    pub fn conf_change_pending(&self) -> bool {
        self.pending_conf_index > self.log.applied
    }

    pub(super) fn unseeded(&self) -> bool {
        self.conf.is_empty() && self.snapshot.is_none()
    }

    /// The membership in force after applying `index`.
    pub(super) fn conf_at(&self, index: Index) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.conf_history[0].1.clone(), |(_, c)| c.clone())
    }

    /// A committed membership change is handed out: it takes effect now.
    pub(super) fn apply_conf_entry(&mut self, index: Index, data: &[u8]) {
        // Validated when proposed, one change at a time, and a new leader
        // waits for everything in its log to apply: it applies (an entry
        // of version 1 as it did when it committed: `apply_legacy`).
        let new = self
            .conf
            .apply_entry(data)
            .expect("a committed membership change applies to the membership in force");
        self.set_conf(new);
        self.conf_history.push((index, self.conf.clone()));
        if self.role == Role::Leader {
            if self.conf.is_joint() {
                // Leave the joint configuration at once.
                self.append_conf_change(&ConfChange::default());
            } else if !self.promotable() {
                self.hand_over();
            }
        }
    }

    /// A leader whose membership is joint with no change pending (it
    /// applied the joint entry as a follower, or from a snapshot, and the
    /// leader that entered it fell before leaving it) leaves it once
    /// everything of earlier terms applied: `pending_conf_index` is its
    /// no-op then, so a leave already in its log has applied first (etcd
    /// raft's auto-leave, checked on apply the same way). Otherwise the
    /// group would stay joint for good and refuse every later change.
    pub(super) fn leave_joint_if_stranded(&mut self) {
        if self.role == Role::Leader
            && self.conf.is_joint()
            && self.log.applied >= self.pending_conf_index
        {
            self.append_conf_change(&ConfChange::default());
        }
    }

    /// A leader that applied its own removal (or demotion) hands its
    /// leadership to the voter with the most of its log, and leads until
    /// that one takes over (a higher term reaches it) or check-quorum
    /// stops it; meanwhile it takes no proposal (etcd drops a removed
    /// leader's proposals) and keeps replicating and heartbeating, so the
    /// new voters learn that the change committed. Stepping down at once
    /// can block the group for good: voters that have not learned the
    /// commit still count it in the joint configuration, while entries
    /// only it holds make it refuse them its vote, and it never campaigns
    /// (found by the simulator with one new voter's disk lost). The
    /// thesis (§4.2.2) has a removed leader manage the cluster until the
    /// new configuration is committed; here until a successor leads.
    /// Called again on each tick while no transfer is under way.
    pub(super) fn hand_over(&mut self) {
        debug_assert!(self.role == Role::Leader && !self.promotable());
        if self.transferee != 0 {
            return;
        }
        // The target of the attempt that just timed out is tried last.
        if let Some(to) = self.successor(self.hand_over_last) {
            // Refused only for a target that is not a voter: it is one.
            let _ = self.transfer_leader(to);
            self.hand_over_last = to;
        }
    }

    /// The voter (not this replica) to hand leadership to: one heard from
    /// lately first (a crashed one keeps its match and would be picked
    /// again and again); among those, any but `avoid` (0: none); then the
    /// most of the log. `None` without another voter.
    pub fn successor(&self, avoid: ReplicaId) -> Option<ReplicaId> {
        self.conf
            .voters
            .iter()
            .copied()
            .filter_map(|v| {
                let p = &self.prs[self.peer_idx(v)?];
                let active = p.recent_active || p.active_last_round;
                Some(((active, v != avoid, p.match_), v))
            })
            .max()
            .map(|(_, v)| v)
    }

    /// Installs a membership and realigns per-peer state with it.
    pub(super) fn set_conf(&mut self, conf: ConfState) {
        self.conf = conf;
        let new_peers: Vec<ReplicaId> = self
            .conf
            .members()
            .into_iter()
            .filter(|&v| v != self.id)
            .collect();
        let next = self.log.last_index() + 1;
        let mut prs = Vec::with_capacity(new_peers.len());
        let mut acked = Vec::with_capacity(new_peers.len());
        let mut acked_tick = Vec::with_capacity(new_peers.len());
        for &p in &new_peers {
            match self.peer_idx(p) {
                Some(i) => {
                    prs.push(self.prs[i].clone());
                    acked.push(self.read.acked[i]);
                    acked_tick.push(self.read.acked_tick[i]);
                }
                None => {
                    // A new member knows nothing of the group: seed it.
                    let mut pr = Progress::new(
                        next,
                        self.cfg.inflight_msgs_max,
                        self.cfg.inflight_bytes_max,
                    );
                    pr.seed = true;
                    prs.push(pr);
                    acked.push(0);
                    acked_tick.push(0);
                }
            }
        }
        self.peers = new_peers;
        self.prs = prs;
        self.read.acked = acked;
        self.read.acked_tick = acked_tick;
    }
}
