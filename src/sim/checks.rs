//! The checkers: election safety, leader completeness, state machine safety, log matching, liveness, linearizability.

use super::*;

impl Sim {
    pub(super) fn converged(&self) -> bool {
        let Some(l) = self.current_leader() else {
            return false;
        };
        let leader = self.nodes[l].raft().expect("up");
        let (lt, last) = (leader.term(), leader.last_index());
        self.members().into_iter().all(|i| {
            let n = &self.nodes[i];
            n.raft()
                .is_some_and(|r| r.term() == lt && r.commit_index() == last && n.applied() == last)
        })
    }

    pub(super) fn on_new_leader(&mut self, i: usize, term: Term) {
        self.report.leaders_elected += 1;
        if let Some(&other) = self.leaders.get(&term) {
            if other != i {
                self.fail(format!(
                    "election safety: nodes {} and {} both leaders of term {term}",
                    self.ids[other], self.ids[i]
                ));
            }
        }
        self.leaders.insert(term, i);
        if self.cfg.faults && !self.healed {
            if self.rng.chance(500) {
                let d = self.rng.range(1, 40);
                self.schedule(d, Event::CrashLeader(i, term));
            }
            if self.rng.chance(250) {
                // Cut off before its no-op leaves: its entries of this term
                // stay on it alone (the "S5 in term 3" of Figure 8).
                for x in 0..self.nodes.len() {
                    if x != i {
                        self.blocked[i][x] = true;
                        self.blocked[x][i] = true;
                    }
                }
                let d = self.rng.range(50, 600);
                self.schedule(d, Event::Unisolate(i));
            }
        }
        // Leader completeness: every entry applied anywhere (hence committed)
        // is in the new leader's log.
        let r = self.nodes[i].raft().expect("leader is up");
        // (Entries it compacted are covered by its snapshot, checked by
        // the state digests.)
        let first = r.first_index();
        for (k, (t, d)) in self.applied_history.iter().enumerate() {
            let idx = k as u64 + 1;
            if idx < first {
                continue;
            }
            match r.log().entry(idx) {
                Some(e) if e.term == *t && entry_digest(e) == *d => {}
                _ => {
                    let msg = format!(
                        "leader completeness: node {} leads term {term} without committed entry {idx} (term {t})",
                        self.ids[i]
                    );
                    self.fail(msg);
                    return;
                }
            }
        }
    }

    /// State machine safety across snapshots: the state after applying
    /// index i is the same everywhere, however a node got there.
    pub(super) fn check_state(&mut self, i: usize, index: Index) {
        let d = self.nodes[i].kv().digest();
        match self.state_digests.get(&index) {
            Some(&known) if known != d => {
                let msg = format!(
                    "state machine safety: node {} state after index {index} differs from another node's",
                    self.ids[i]
                );
                self.fail(msg);
            }
            Some(_) => {}
            None => {
                self.state_digests.insert(index, d);
            }
        }
    }

    /// The voter floor (issue #17; cockroachdb/cockroach#12768 lost
    /// quorum where a move went below it): no membership in force, nor
    /// either half of a joint one, has fewer voters than the group
    /// started with (at most 3, the replication factor the nemesis keeps:
    /// it adds before it removes and swaps one for one).
    pub(super) fn check_voter_floor(&mut self, i: usize) {
        let floor = self.cfg.initial_voters.min(3);
        let Some(c) = self.nodes[i].raft().map(|r| r.conf()) else {
            return;
        };
        let short = c.voters.len() < floor || (c.is_joint() && c.voters_outgoing.len() < floor);
        if short {
            let msg = format!(
                "voter floor: node {} has voters {:?} (outgoing {:?}), fewer than {floor}",
                self.ids[i], c.voters, c.voters_outgoing
            );
            self.fail(msg);
        }
    }

    /// Log matching (Raft §5.3): if two logs hold an entry with the same
    /// index and term, they are identical up to that index.
    pub(super) fn check_log_matching(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (Some(x), Some(y)) = (self.nodes[a].raft(), self.nodes[b].raft()) else {
                    continue;
                };
                let (x, y) = (x.log(), y.log());
                // The highest index where both hold the same term.
                let mut i = x.last_index().min(y.last_index());
                while i > 0 && x.term(i) != y.term(i) {
                    i -= 1;
                }
                for k in x.first_index().max(y.first_index())..=i {
                    if x.entry(k) != y.entry(k) {
                        let msg = format!(
                            "log matching: nodes {} and {} agree at index {i} but differ at {k}",
                            self.ids[a], self.ids[b]
                        );
                        self.fail(msg);
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn final_checks(&mut self) {
        // Liveness: with every fault healed for heal_ms, one leader, all logs
        // committed and applied everywhere, and every client answered.
        let Some(l) = self.current_leader() else {
            self.fail("liveness: no leader after the heal phase".into());
            return;
        };
        let leader = self.nodes[l].raft().expect("up");
        let (lt, last) = (leader.term(), leader.last_index());
        if leader.conf().is_joint() {
            // Left by the leader that applied it, or by the next one
            // (`leave_joint_if_stranded`); joint for good, the group
            // refuses every later membership change.
            let msg = format!(
                "liveness: still in a joint configuration after the heal phase: voters {:?}, outgoing {:?}",
                leader.conf().voters,
                leader.conf().voters_outgoing
            );
            self.fail(msg);
            return;
        }
        let members = self.members();
        for &i in &members {
            let n = &self.nodes[i];
            let r = n.raft().expect("all nodes restarted at heal");
            if r.term() != lt || r.commit_index() != last || n.applied() != last {
                let msg = format!(
                    "liveness: node {} at term {} commit {} applied {}, leader {} at term {lt} last {last}",
                    self.ids[i],
                    r.term(),
                    r.commit_index(),
                    n.applied(),
                    self.ids[l]
                );
                self.fail(msg);
                return;
            }
        }
        // Log matching: all members' logs identical (everything is committed now).
        for &i in &members {
            let a = self.nodes[l].raft().expect("up").log();
            let b = self.nodes[i].raft().expect("up").log();
            for idx in a.first_index().max(b.first_index())..=last {
                let (x, y) = (
                    a.entry(idx).expect("committed"),
                    b.entry(idx).expect("committed"),
                );
                if x != y {
                    let msg = format!(
                        "log matching: nodes {} and {} differ at index {idx}",
                        self.ids[l], self.ids[i]
                    );
                    self.fail(msg);
                    return;
                }
            }
        }
        // Replicas converge.
        for &i in &members {
            if self.nodes[i].kv() != self.nodes[l].kv() {
                let msg = format!(
                    "convergence: node {} state differs from leader {}",
                    self.ids[i], self.ids[l]
                );
                self.fail(msg);
                return;
            }
        }
        // No acknowledged write lost.
        for &(idx, term, d) in &self.acked {
            if self.applied_history.get((idx - 1) as usize) != Some(&(term, d)) {
                let msg = format!("acknowledged write at index {idx} term {term} lost");
                self.fail(msg);
                return;
            }
        }
        if self.clients.iter().any(|c| c.op.is_some()) {
            self.fail("liveness: a client op is still pending at the end".into());
            return;
        }
        // Linearizability of the client history.
        let history: Vec<Op> = self
            .history
            .iter()
            .filter(|o| o.ret != Some(u64::MAX))
            .cloned()
            .collect();
        if let Err(v) = linearizability::check(&history) {
            self.fail(format!("linearizability: {v}"));
        }
    }
}
