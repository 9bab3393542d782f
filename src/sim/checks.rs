//! The checkers: election safety, leader completeness, state machine safety, log matching, liveness, linearizability.

use super::*;

impl Sim {
    /// Whether every group has a leader whose log every member has
    /// committed and applied.
    pub(super) fn converged(&self) -> bool {
        self.checks.keys().all(|&g| self.group_converged(g))
            && (!self.cfg.balancer || self.balancer_settled().is_ok())
    }

    fn group_converged(&self, g: GroupId) -> bool {
        let Some(l) = self.current_leader(g) else {
            return false;
        };
        let leader = self.nodes[l].raft(g).expect("up");
        let (lt, last) = (leader.term(), leader.last_index());
        if self.unhosted_member(l, g).is_some() {
            return false;
        }
        // (Keys a split left outside a member's bounds are trimmed first:
        // the convergence check compares whole state machines.)
        self.members(g).into_iter().all(|i| {
            let n = self.nodes[i].group(g);
            n.raft()
                .is_some_and(|r| r.term() == lt && r.commit_index() == last && n.applied() == last)
                && !n.kv().has_keys_outside_bounds()
        })
    }

    pub(super) fn on_new_leader(&mut self, i: usize, g: GroupId, term: Term) {
        self.report.leaders_elected += 1;
        let leaders = &mut self.checks.get_mut(&g).expect("checked group").leaders;
        let other = leaders.insert(term, i);
        if let Some(other) = other.filter(|&o| o != i) {
            self.fail(format!(
                "election safety: nodes {} and {} both leaders of group {g} in term {term}",
                self.ids[other], self.ids[i]
            ));
        }
        if self.cfg.faults && !self.healed {
            if self.rng.chance(500) {
                let d = self.rng.range(1, 40);
                self.schedule(d, Event::CrashLeader(i, g, term));
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
        let r = self.nodes[i].raft(g).expect("leader is up");
        // (Entries it compacted are covered by its snapshot, checked by
        // the state digests.)
        let first = r.first_index();
        let c = &self.checks[&g];
        for (k, (t, d)) in c.applied_history.iter().enumerate() {
            let idx = c.base + k as u64 + 1;
            if idx < first {
                continue;
            }
            match r.log().entry(idx) {
                Some(e) if e.term == *t && entry_digest(e) == *d => {}
                _ => {
                    let msg = format!(
                        "leader completeness: node {} leads group {g} in term {term} without committed entry {idx} (term {t})",
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
    pub(super) fn check_state(&mut self, i: usize, g: GroupId, index: Index) {
        let d = self.nodes[i].group(g).kv().digest();
        let digests = &mut self
            .checks
            .get_mut(&g)
            .expect("checked group")
            .state_digests;
        match digests.get(&index) {
            Some(&known) if known != d => {
                let msg = format!(
                    "state machine safety: node {} group {g} state after index {index} differs from another node's",
                    self.ids[i]
                );
                self.fail(msg);
            }
            Some(_) => {}
            None => {
                digests.insert(index, d);
            }
        }
    }

    /// The voter floor (issue #17; cockroachdb/cockroach#12768 lost
    /// quorum where a move went below it): no membership in force, nor
    /// either half of a joint one, has fewer voters than the group
    /// started with (at most 3, the replication factor the nemesis keeps:
    /// it adds before it removes and swaps one for one).
    pub(super) fn check_voter_floor(&mut self, i: usize, g: GroupId) {
        let floor = self.cfg.initial_voters.min(3);
        let Some(c) = self.nodes[i].raft(g).map(|r| r.conf()) else {
            return;
        };
        let short = c.voters.len() < floor || (c.is_joint() && c.voters_outgoing.len() < floor);
        if short {
            let msg = format!(
                "voter floor: node {} group {g} has voters {:?} (outgoing {:?}), fewer than {floor}",
                self.ids[i], c.voters, c.voters_outgoing
            );
            self.fail(msg);
        }
    }

    /// Log matching (Raft §5.3): if two logs hold an entry with the same
    /// index and term, they are identical up to that index.
    pub(super) fn check_log_matching(&mut self) {
        for g in self.checks.keys().copied().collect::<Vec<_>>() {
            self.check_group_log_matching(g);
        }
    }

    fn check_group_log_matching(&mut self, g: GroupId) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (Some(x), Some(y)) = (self.nodes[a].raft(g), self.nodes[b].raft(g)) else {
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
                            "log matching: nodes {} and {} agree at index {i} but differ at {k} in group {g}",
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
        // First: a balancer still at work keeps its ranges from settling.
        if self.cfg.balancer {
            if let Err(why) = self.balancer_settled() {
                let msg =
                    format!("liveness: the balancer did not settle after the heal phase: {why}");
                return self.fail(msg);
            }
            // (Settled: the operator's node is decommissioned.)
            self.report.nodes_decommissioned = u64::from(self.decommission.is_some());
        }
        for g in self.checks.keys().copied().collect::<Vec<_>>() {
            if self.failure.is_none() {
                self.final_group_checks(g);
            }
        }
        if self.failure.is_some() {
            return;
        }
        self.check_ranges();
        if self.failure.is_some() {
            return;
        }

        if self.clients.iter().any(|c| c.op.is_some()) {
            self.fail("liveness: a client op is still pending at the end".into());
            return;
        }
        // Linearizability of the client history (each key in one group).
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

    /// The end-of-run checks of group `g`.
    fn final_group_checks(&mut self, g: GroupId) {
        // Liveness: with every fault healed for heal_ms, one leader, all logs
        // committed and applied everywhere, and every client answered.
        let Some(l) = self.current_leader(g) else {
            self.fail(format!(
                "liveness: no leader of group {g} after the heal phase"
            ));
            return;
        };
        let leader = self.nodes[l].raft(g).expect("up");
        let (lt, last) = (leader.term(), leader.last_index());
        if leader.conf().is_joint() {
            // Left by the leader that applied it, or by the next one
            // (`leave_joint_if_stranded`); joint for good, the group
            // refuses every later membership change.
            let msg = format!(
                "liveness: group {g} still in a joint configuration after the heal phase: voters {:?}, outgoing {:?}",
                leader.conf().voters,
                leader.conf().voters_outgoing
            );
            self.fail(msg);
            return;
        }
        if let Some((j, r)) = self.unhosted_member(l, g) {
            let msg = format!(
                "liveness: group {g}: replica {r} is placed on node {} but not hosted there",
                self.ids[j]
            );
            self.fail(msg);
            return;
        }
        let members = self.members(g);
        for &i in &members {
            let n = self.nodes[i].group(g);
            let r = n.raft().expect("all nodes restarted at heal");
            if r.term() != lt || r.commit_index() != last || n.applied() != last {
                let msg = format!(
                    "liveness: group {g}: node {} at term {} commit {} applied {}, leader {} at term {lt} last {last}",
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
            let a = self.nodes[l].raft(g).expect("up").log();
            let b = self.nodes[i].raft(g).expect("up").log();
            for idx in a.first_index().max(b.first_index())..=last {
                let (x, y) = (
                    a.entry(idx).expect("committed"),
                    b.entry(idx).expect("committed"),
                );
                if x != y {
                    let msg = format!(
                        "log matching: nodes {} and {} differ at index {idx} in group {g}",
                        self.ids[l], self.ids[i]
                    );
                    self.fail(msg);
                    return;
                }
            }
        }
        // Replicas converge.
        for &i in &members {
            if self.nodes[i].group(g).kv() != self.nodes[l].group(g).kv() {
                let msg = format!(
                    "convergence: group {g}: node {} state differs from leader {}",
                    self.ids[i], self.ids[l]
                );
                self.fail(msg);
                return;
            }
        }
        // No acknowledged write lost.
        let c = &self.checks[&g];
        for &(idx, term, d) in &c.acked {
            if c.at(idx) != Some(&(term, d)) {
                let msg =
                    format!("acknowledged write at index {idx} term {term} of group {g} lost");
                self.fail(msg);
                return;
            }
        }
    }
}
