//! The nemesis: faults, leader transfers and membership changes.

use super::*;

impl Sim {
    /// A membership step at the leader: add a non-member as learner, promote
    /// a learner, swap a learner for a voter (`replace_voter`, a move's
    /// step), or remove a voter (never below 3) or a learner.
    pub(super) fn change_membership(&mut self, l: usize, g: GroupId) {
        let r = self.nodes[l].raft(g).expect("leader is up");
        let conf = r.conf().clone();
        // Nodes without a replica in the group (a node removed earlier is
        // added again as a new replica, with a new id).
        let outside: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|&node| conf.replica_on(node).is_none())
            .collect();
        let pick = |v: &[u64], rng: &mut Rng| v[rng.below(v.len() as u64) as usize];
        fn raft(s: &mut Sim, l: usize, g: GroupId) -> &mut RawNode {
            s.nodes[l].raft_mut(g).expect("up")
        }
        let res = match self.rng.below(3) {
            0 if !outside.is_empty() => {
                let node = pick(&outside, &mut self.rng);
                raft(self, l, g).add_learner(node).map(|(_, i, t)| (i, t))
            }
            1 if !conf.learners.is_empty() => {
                let id = pick(&conf.learners, &mut self.rng);
                if self.rng.chance(500) {
                    // A move's membership step: the learner in, a voter
                    // (the leader, at times) out, in one joint change.
                    let out = pick(&conf.voters, &mut self.rng);
                    let r = raft(self, l, g).replace_voter(id, out);
                    if r.is_ok() {
                        self.report.voter_swaps += 1;
                    }
                    r
                } else {
                    raft(self, l, g).promote_learner(id)
                }
            }
            _ if conf.voters.len() > 3 => {
                let id = pick(&conf.voters, &mut self.rng);
                raft(self, l, g).remove_replica(id)
            }
            _ if !conf.learners.is_empty() && self.rng.chance(300) => {
                let id = pick(&conf.learners, &mut self.rng);
                raft(self, l, g).remove_replica(id)
            }
            _ => return,
        };
        if res.is_ok() {
            self.report.conf_changes += 1;
        }
        self.drive(l, g);
    }

    /// Members of group `g` as its current leader sees it (all nodes if
    /// none), but a node whose disk was wiped: refused by its peers, it
    /// never catches up (until an operator removes it; ids are not reused).
    pub(super) fn members(&self, g: GroupId) -> Vec<usize> {
        match self.current_leader(g) {
            Some(l) => {
                let c = self.nodes[l].raft(g).expect("up").conf();
                // The node hosts the member placed on it (not yet: its
                // replica waits to be created by the leader's snapshot).
                (0..self.nodes.len())
                    .filter(|&i| {
                        let n = self.nodes[i].group(g);
                        n.hosted && c.node_of(n.replica) == Some(self.ids[i])
                    })
                    .filter(|&i| !self.nodes[i].lost)
                    .collect()
            }
            None => (0..self.nodes.len())
                .filter(|&i| !self.nodes[i].lost)
                .collect(),
        }
    }

    pub(super) fn inject_fault(&mut self) {
        let n = self.nodes.len();
        // The group whose leader the fault aims at, if it aims at one.
        let groups = self.checks.len() as u64;
        let g = if groups > 1 {
            let k = self.rng.below(groups) as usize;
            *self.checks.keys().nth(k).expect("k < groups")
        } else {
            SIM_GROUP
        };
        let leader = self.current_leader(g);
        if let Some(l) = leader {
            // Track 3 -> 5 -> 3 voter cycles (membership seeds).
            let v = self.nodes[l].raft(g).expect("up").conf().voters.len();
            let c = self.checks.get_mut(&g).expect("checked group");
            if v >= 5 {
                c.seen_five_voters = true;
            } else if v == 3 && c.seen_five_voters {
                c.seen_five_voters = false;
                self.report.voter_cycles_3_5_3 += 1;
            }
        }
        if self.cfg.membership_changes && self.rng.chance(600) {
            if groups > 1 {
                // A step in every group with a leader: each sees the pace
                // of a one-group run.
                for g in self.checks.keys().copied().collect::<Vec<_>>() {
                    if let Some(l) = self.current_leader(g) {
                        self.change_membership(l, g);
                    }
                }
                return;
            }
            if let Some(l) = leader {
                self.change_membership(l, g);
                return;
            }
        }
        if self.splits_left > 0 && self.rng.chance(500) {
            // Beside this turn's fault, not instead of it.
            self.split_fault();
        }
        if self.cfg.pauses && self.rng.chance(300) {
            self.pause_fault(leader);
            return;
        }
        if self.cfg.disk_loss && self.report.disks_lost == 0 && self.rng.chance(100) {
            // Once per run: a quorum without it stays possible.
            let i = match leader {
                Some(l) if self.rng.chance(500) => l,
                _ => self.rng.below(n as u64) as usize,
            };
            self.wipe(i);
            return;
        }
        match self.rng.below(10) {
            0 | 1 => {
                let i = self.rng.below(n as u64) as usize;
                self.crash(i);
            }
            2 => {
                if let Some(l) = leader {
                    self.crash(l);
                }
            }
            3 => {
                // Random split into two sides.
                let mut side = vec![false; n];
                for s in side.iter_mut() {
                    *s = self.rng.chance(500);
                }
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = side[a] != side[b];
                    }
                }
                self.report.partitions += 1;
            }
            4 => {
                // Isolate the leader (both directions).
                if let Some(l) = leader {
                    for x in 0..n {
                        if x != l {
                            self.blocked[l][x] = true;
                            self.blocked[x][l] = true;
                        }
                    }
                    self.report.partitions += 1;
                }
            }
            5 => {
                // One-way link failure.
                let a = self.rng.below(n as u64) as usize;
                let b = self.rng.below(n as u64) as usize;
                if a != b {
                    self.blocked[a][b] = true;
                    self.report.partitions += 1;
                }
            }
            6 => {
                for row in &mut self.blocked {
                    row.fill(false);
                }
            }
            7 => {
                self.drop_per_mille = self.rng.below(200);
                self.dup_per_mille = self.rng.below(100);
            }
            8 => {
                let hi = self.rng.range(2, 60);
                self.delay_ms = (1, hi);
                let dhi = self.rng.range(1, 30);
                self.disk_ms = (0, dhi);
            }
            _ => {
                // Leadership transfer to a random other node.
                if let Some(l) = leader {
                    let t = self.rng.below(n as u64) as usize;
                    if t != l {
                        let r = self.nodes[l].raft_mut(g).expect("leader is up");
                        let target = r.conf().replica_on(self.ids[t]).unwrap_or(0);
                        if target != 0 && r.transfer_leader(target).is_ok() {
                            self.report.transfers += 1;
                        }
                        self.drive(l, g);
                    }
                }
            }
        }
    }

    /// Pauses a node (the leader two times in three) for one to four
    /// election timeouts; half the time it is also cut off from every peer
    /// until a little after it resumes, so that it resumes believing it
    /// leads while another leader has written: what a lease must survive.
    fn pause_fault(&mut self, leader: Option<usize>) {
        let n = self.nodes.len();
        let i = match leader {
            Some(l) if self.rng.below(3) < 2 => l,
            _ => self.rng.below(n as u64) as usize,
        };
        let election_ms = u64::from(self.election_ticks) * self.cfg.tick_ms;
        let ms = self.rng.range(election_ms, 4 * election_ms);
        if self.rng.chance(500) {
            for x in 0..n {
                if x != i {
                    self.blocked[i][x] = true;
                    self.blocked[x][i] = true;
                }
            }
            let extra = self.rng.range(1, 200);
            self.schedule(ms + extra, Event::Unisolate(i));
        }
        self.pause(i, ms);
    }

    /// Crashes node `i` and keeps it down until [`start`](Self::start) or
    /// the heal phase (scripted scenarios).
    pub fn kill(&mut self, i: usize) {
        self.crash(i);
        self.nodes[i].held = true;
    }

    /// Starts node `i` now if it is down (from what its disk holds).
    pub fn start(&mut self, i: usize) {
        self.nodes[i].held = false;
        if !self.nodes[i].up() {
            self.start_node(i);
            self.notice(i, true);
            self.drive_all(i);
        }
    }

    /// The highest-term leader of group `g` among the nodes that are up.
    pub(super) fn current_leader(&self, g: GroupId) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = n.raft(g) {
                if r.role() == Role::Leader && best.is_none_or(|(t, _)| r.term() > t) {
                    best = Some((r.term(), i));
                }
            }
        }
        best.map(|b| b.1)
    }
}
