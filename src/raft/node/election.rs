//! Elections, role changes, ticks, heartbeats and leader transfer.

use super::*;

/// Election timeouts a replica that may not campaign (a learner, or one
/// outside the membership it applied) waits without hearing from a
/// leader before it asks whether it is still a member
/// (`Body::MemberCheck`); then again after as many. A learner catching up
/// hears from its leader at every heartbeat, so it never asks; one
/// forgotten by its group asks about once every 2 s at the default 20 ms
/// tick and 10-tick election timeout.
pub const MEMBER_CHECK_ELECTIONS: u32 = 10;

/// What one tick did, as far as `RawNode::advance` cares: a campaign or
/// a membership check ends the call (one per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Counted, perhaps acted on (a heartbeat, a check-quorum round).
    Counted,
    Campaigned,
    /// A `Body::MemberCheck` went out.
    Checked,
}

impl RawNode {
    // ---- role changes ----

    pub(super) fn become_follower(&mut self, term: Term, leader: ReplicaId) {
        self.quiesced = false;
        if self.role == Role::Leader {
            self.fail_pending_reads();
            for p in &mut self.prs {
                p.inflight.release_memory();
            }
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

    /// Sends `body` (a vote request) to every other voter, in either
    /// configuration while joint; learners are never asked.
    fn request_votes(&mut self, term: Term, body: Body) {
        for i in 0..self.peers.len() {
            let to = self.peers[i];
            if self.conf.is_voter(to) {
                self.send(to, term, body.clone());
            }
        }
    }

    pub(super) fn become_pre_candidate(&mut self) {
        self.quiesced = false;
        self.role = Role::PreCandidate;
        self.leader = 0;
        self.votes.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
        // The pre-vote changes no durable state: its own grant counts at once.
        self.self_vote_counted = true;
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        self.request_votes(
            self.term + 1,
            Body::PreVote {
                last_index,
                last_term,
            },
        );
        self.tally_pre_votes();
    }

    pub(super) fn become_candidate(&mut self, transfer: bool) {
        self.quiesced = false;
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
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        self.request_votes(
            self.term,
            Body::Vote {
                last_index,
                last_term,
                transfer,
            },
        );
    }

    pub(super) fn become_leader(&mut self) {
        self.quiesced = false;
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
        // No membership change until everything in the log so far applied.
        self.pending_conf_index = self.log.last_index();
    }

    /// This node was just made from a split of another group (issue #18):
    /// it has no earlier life in this group, so it was in no leader's
    /// lease and votes at once (a restarted node refuses votes for an
    /// election timeout: `quiet`). `campaign`: the replica on the node
    /// whose replica of the parent leads campaigns at the next tick, as a
    /// new group's first candidate does (`RaftConfig::first_candidate`),
    /// so the new group has a leader within a round trip (TiKV's split
    /// peers campaign the same way). A learner never campaigns.
    pub fn split_born(&mut self, campaign: bool) {
        self.quiet = false;
        if campaign && self.promotable() {
            self.election_elapsed = 0;
            self.election_timeout = 1;
        }
    }

    pub(super) fn campaign(&mut self) {
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
            self.tally_votes();
        }
    }

    pub(super) fn record_vote(&mut self, from: ReplicaId, granted: bool) {
        if !self.votes.iter().any(|(id, _)| *id == from) {
            self.votes.push((from, granted));
        }
    }

    /// (won, lost) under the membership in force (both majorities while
    /// joint), counting our own grant when it counts.
    pub(super) fn vote_outcome(&self) -> (bool, bool) {
        let granted = |id: ReplicaId| {
            if id == self.id {
                self.self_vote_counted
            } else {
                self.votes.iter().any(|&(v, g)| v == id && g)
            }
        };
        let rejected = |id: ReplicaId| self.votes.iter().any(|&(v, g)| v == id && !g);
        (self.conf.quorum(granted), self.conf.quorum_lost(rejected))
    }

    pub(super) fn tally_pre_votes(&mut self) {
        let (won, lost) = self.vote_outcome();
        if won {
            self.become_candidate(false);
            self.tally_votes();
        } else if lost {
            self.become_follower(self.term, 0);
        }
    }

    pub(super) fn tally_votes(&mut self) {
        let (won, lost) = self.vote_outcome();
        if won {
            self.become_leader();
        } else if lost {
            self.become_follower(self.term, 0);
        }
    }

    // ---- inputs ----

    /// Moves this node's clock one tick on and acts on it. For a node
    /// with a clock of its own (tests, the simulator's one-group nodes): a
    /// clock shared with other replicas (`set_clock`) is advanced by its
    /// host, which then calls [`advance`](Self::advance) on the due ones.
    pub fn tick(&mut self) {
        self.clock.advance(1);
        self.advance(true);
    }

    /// Shares `clock` with this node: from now on it counts that clock's
    /// ticks (from its reading now) instead of its own.
    pub fn set_clock(&mut self, clock: Clock) {
        self.catch_up();
        self.clock_seen = clock.now();
        self.clock = clock;
    }

    /// The clock this node counts ticks from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The clock reading at which this node next does more than count a
    /// tick — a heartbeat or check-quorum round (leader), a leader transfer
    /// given up, an election timeout (a voter not leading) — if nothing
    /// reaches it first; `u64::MAX` if none comes without an input
    /// (quiesced; a learner). Any input may move it, earlier or later: the
    /// host asks again after each (`shard::work`).
    pub fn due_at(&self) -> u64 {
        self.clock_seen.saturating_add(self.ticks_to_event())
    }

    /// Catches up with the clock: counts every tick it advanced since this
    /// node last looked, acting at each one that does more than count, as
    /// ticking once per tick would have. A follower whose election timer
    /// ran out campaigns only if `may_campaign`; otherwise it stays due
    /// (`due_at`: the next tick) and campaigns at the first later tick
    /// counted by a call that allows it. The host spreads many groups'
    /// elections over its ticks with it (`ShardConfig::campaigns_per_tick_max`).
    /// At most one campaign starts (or one membership check goes out) per
    /// call: the ticks after it are counted only towards the lease clock,
    /// and the new election timeout runs from now. Returns whether a
    /// campaign started.
    pub fn advance(&mut self, may_campaign: bool) -> bool {
        let now = self.clock.now();
        while self.clock_seen < now {
            // The ticks before the next event only count: at once.
            let quiet = (self.ticks_to_event() - 1).min(now - self.clock_seen);
            if quiet > 0 {
                self.count_ticks(quiet);
                self.clock_seen += quiet;
            } else {
                self.clock_seen += 1;
                let done = self.tick_once(may_campaign);
                if done != Tick::Counted {
                    // One campaign (or membership check) per call: after a
                    // stall, the timeouts that fell in it would only start
                    // elections that the next one supersedes at once (each
                    // a round of messages). The ticks left still age the
                    // lease.
                    self.ticks += now - self.clock_seen;
                    self.clock_seen = now;
                    return done == Tick::Campaigned;
                }
            }
        }
        false
    }

    /// Counts the ticks the clock advanced before an input is acted on:
    /// every input starts with it, so the input sees the time it arrives at
    /// (a lease, a follower's "heard from its leader" window) whether or not
    /// the host ticked this node. An election due meanwhile waits for
    /// `advance` (the host's campaign budget).
    pub(super) fn catch_up(&mut self) {
        if self.clock_seen < self.clock.now() {
            self.advance(false);
        }
    }

    /// Ticks from `clock_seen` to the next that does more than count (see
    /// `tick_once`); at least 1; `u64::MAX` if none.
    fn ticks_to_event(&self) -> u64 {
        if self.quiesced {
            return u64::MAX;
        }
        let left = |limit: u32, elapsed: u32| u64::from(limit.saturating_sub(elapsed)).max(1);
        if self.role == Role::Leader {
            if self.transferee == 0 && !self.promotable() {
                return 1;
            }
            let mut t = left(self.cfg.election_ticks, self.election_elapsed)
                .min(left(self.cfg.heartbeat_ticks, self.heartbeat_elapsed));
            if self.transferee != 0 {
                t = t.min(left(self.cfg.election_ticks, self.transfer_elapsed));
            }
            t
        } else if self.promotable() {
            left(self.election_timeout, self.election_elapsed)
        } else if self.conf.is_empty() {
            // Waiting for its seeding snapshot: nobody to ask.
            u64::MAX
        } else {
            left(self.member_check_ticks(), self.election_elapsed)
        }
    }

    /// Ticks without a leader's message after which a replica that may not
    /// campaign sends a `Body::MemberCheck`.
    fn member_check_ticks(&self) -> u32 {
        self.cfg
            .election_ticks
            .saturating_mul(MEMBER_CHECK_ELECTIONS)
    }

    /// Asks the voters it knows, and its leader if that is not one of
    /// them, whether this replica is still a member (`Body::MemberCheck`).
    /// All of them, not the leader alone: the leader it remembers may be
    /// gone for good (a drained node's replica is destroyed, the node
    /// stopped), and any member that applied its removal can answer.
    fn check_membership(&mut self) {
        self.election_elapsed = 0;
        let conf_index = self.conf_index();
        let mut to: Vec<ReplicaId> = self
            .conf
            .voters
            .iter()
            .chain(&self.conf.voters_outgoing)
            .copied()
            .collect();
        to.push(self.leader);
        to.sort_unstable();
        to.dedup();
        to.retain(|&v| v != 0 && v != self.id);
        for v in to {
            self.stats.member_checks_sent += 1;
            self.send(v, self.term, Body::MemberCheck { conf_index });
        }
    }

    /// `n` ticks before the next event (`ticks_to_event`): they only count.
    fn count_ticks(&mut self, n: u64) {
        if self.quiesced {
            return;
        }
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.ticks += n;
        self.election_elapsed = self.election_elapsed.saturating_add(n32);
        if self.quiet && self.election_elapsed >= self.cfg.election_ticks {
            self.quiet = false;
        }
        if self.role == Role::Leader {
            self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(n32);
            if self.transferee != 0 {
                self.transfer_elapsed = self.transfer_elapsed.saturating_add(n32);
            }
        }
    }

    /// One tick, acted on: what it did that ends an `advance`.
    fn tick_once(&mut self, may_campaign: bool) -> Tick {
        if self.quiesced {
            return Tick::Counted;
        }
        self.ticks += 1;
        // Saturating: a learner's count runs until its membership check
        // (which resets it), and it may be promoted with it.
        self.election_elapsed = self.election_elapsed.saturating_add(1);
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
            if self.transferee == 0 && !self.promotable() {
                // Removed while leading: try again (`hand_over`).
                self.hand_over();
            }
            if self.election_elapsed >= self.cfg.election_ticks {
                self.election_elapsed = 0;
                if self.cfg.check_quorum {
                    let ok = self.conf.quorum(|id| {
                        id == self.id
                            || self.peer_idx(id).is_some_and(|i| self.prs[i].recent_active)
                    });
                    for p in &mut self.prs {
                        p.active_last_round = p.recent_active;
                        p.recent_active = false;
                    }
                    if !ok {
                        // Not heard from a quorum for an election timeout:
                        // another leader may exist; stop serving.
                        self.become_follower(self.term, 0);
                        return Tick::Counted;
                    }
                }
            }
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                if self.can_quiesce() {
                    self.quiesce_leader();
                } else {
                    self.broadcast_heartbeat();
                }
            }
        } else if self.election_elapsed >= self.election_timeout && self.promotable() {
            if may_campaign {
                self.campaign();
                return Tick::Campaigned;
            }
            self.stats.campaigns_deferred += 1;
        } else if !self.promotable()
            && !self.conf.is_empty()
            && self.election_elapsed >= self.member_check_ticks()
        {
            self.check_membership();
            return Tick::Checked;
        }
        Tick::Counted
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.read.start_round(self.ticks);
        for i in 0..self.peers.len() {
            let commit = self.log.commit.min(self.prs[i].match_);
            let to = self.peers[i];
            self.send(to, self.term, Body::Heartbeat { commit, round });
        }
    }

    // ---- leader transfer ----

    /// Hands leadership to `target`: brings it up to date, then tells it to
    /// campaign at once. Proposals are refused meanwhile; the transfer is
    /// abandoned after an election timeout.
    pub fn transfer_leader(&mut self, target: ReplicaId) -> Result<(), TransferError> {
        self.catch_up();
        self.wake();
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
            .filter(|_| self.conf.is_voter(target))
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
    pub fn transferee(&self) -> Option<ReplicaId> {
        (self.transferee != 0).then_some(self.transferee)
    }
}
