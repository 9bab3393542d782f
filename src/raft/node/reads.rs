//! ReadIndex and lease reads (see `raft::read`).

use super::*;

impl RawNode {
    // ---- reads ----

    pub(super) fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    /// Starts a linearizable read named `ctx`. It comes out in
    /// `Ready::read_states` with the index to serve it at (or in
    /// `Ready::reads_failed`). On a follower the leader is asked.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        self.catch_up();
        self.wake();
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

    /// The index a read served now by the leader lease must see applied,
    /// if the lease allows one: this replica leads, its lease holds
    /// (`lease_valid`), and an entry of its own term is committed. Before
    /// that a new leader's commit index may lag what its predecessor
    /// committed and acknowledged (Raft thesis §6.4, step 1; the same wait
    /// as ReadIndex's). `None`: ask a read index instead.
    /// Counts the ticks since this node last looked first (`catch_up`).
    pub fn lease_read_index(&mut self) -> Option<Index> {
        self.catch_up();
        (self.lease_valid() && self.committed_in_term()).then_some(self.log.commit)
    }

    /// Whether the leader lease holds now (see `read`), the ticks since
    /// this node last looked counted first (`catch_up`), and the ticks of
    /// real time its host has not counted yet too (`Clock::lag`: a check
    /// late in a long turn sees the time of the check, not of the turn's
    /// start).
    pub fn lease_valid(&mut self) -> bool {
        self.catch_up();
        if !self.cfg.lease_reads || self.role != Role::Leader || self.transferee != 0 {
            return false;
        }
        let base = self.conf.quorum_value(|id| {
            if id == self.id {
                self.ticks
            } else {
                self.peer_idx(id).map_or(0, |i| self.read.acked_tick[i])
            }
        });
        // One tick less for the follower's tick phase: its election timer
        // may count a tick right after it heard from us.
        let lease = (self.cfg.election_ticks - self.cfg.lease_drift_ticks - 1) as u64;
        base > 0 && self.ticks.saturating_add(self.clock.lag()) < base + lease
    }

    pub(super) fn register_read(&mut self, ctx: u64, from: ReplicaId) {
        if !self.committed_in_term() {
            // The commit index of earlier terms may be stale: wait for the
            // first commit of this term (the no-op).
            self.read.waiting_for_commit.push((ctx, from));
            return;
        }
        let index = self.log.commit;
        if self.conf.quorum(|id| id == self.id) || self.lease_valid() {
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

    /// Tells `to` that its read `ctx` was not served (it retries).
    pub(super) fn refuse_read(&mut self, to: ReplicaId, ctx: u64) {
        self.send(
            to,
            self.term,
            Body::ReadIndexResp {
                ctx,
                index: 0,
                reject: true,
            },
        );
    }

    pub(super) fn deliver_read(&mut self, ctx: u64, index: Index, from: ReplicaId) {
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
    pub(super) fn release_reads(&mut self) {
        while let Some(r) = self.read.queue.front().copied() {
            let confirmed = self.conf.quorum(|id| {
                id == self.id
                    || self
                        .peer_idx(id)
                        .is_some_and(|i| self.read.acked[i] >= r.round)
            });
            if !confirmed {
                break;
            }
            self.read.queue.pop_front();
            self.deliver_read(r.ctx, r.index, r.from);
        }
    }

    pub(super) fn fail_pending_reads(&mut self) {
        let q: Vec<(u64, ReplicaId)> = self
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
                self.refuse_read(from, ctx);
            }
        }
    }
}
