//! The shard's work set (issue #16): which replicas a turn looks at, and
//! which ones tick. A turn costs what its replicas were given, not what
//! the shard hosts.

use std::collections::BTreeSet;

use crate::group::GroupId;

#[derive(Debug, Default)]
pub(super) struct WorkSet {
    /// Replicas given something since their last Ready (a message, a
    /// request, a tick that left a Ready, a durable write, an install
    /// done). Only these are looked at for a Ready. Invariant (debug-asserted each turn): a
    /// hosted replica with a Ready is in it or parked in `installing`.
    pub active: BTreeSet<GroupId>,
    /// Replicas that tick: every replica given something since the tick
    /// found it quiesced (`RawNode::quiesced`) with no client request
    /// waiting (`Replica::has_waiters`). Ticks, deadlines and the rest of
    /// the tick's work walk this set only, so quiesced groups cost nothing
    /// per tick. Invariant (debug-asserted at each tick): a hosted replica
    /// that is awake or has waiters is in it.
    pub awake: BTreeSet<GroupId>,
    /// Where the next tick's walk of `awake` starts: after the replica
    /// that spent the last campaign budget.
    cursor: GroupId,
    /// Scratch: replicas leaving `awake` this tick.
    scratch: Vec<GroupId>,
    /// Replicas the last tick found with client requests waiting: the
    /// only ones whose deadlines are looked at (`Shard::expire_requests`).
    pub waiting: Vec<GroupId>,
}

impl WorkSet {
    /// Group `g` was given something: look at it this turn, and tick it
    /// (whatever it was may have woken it).
    pub fn mark(&mut self, g: GroupId) {
        self.active.insert(g);
        self.awake.insert(g);
    }

    /// Ticks every awake replica `due` times; those quiesced with nothing
    /// waiting leave the awake set. The ticked replicas that have a Ready
    /// are looked at this turn; those with requests waiting are listed in
    /// `waiting`. At most `campaigns_max` elections start per tick (`due`
    /// ticks: `due` times as many); the walk starts where the last budget ran out,
    /// so no group waits behind lower ids for ever. Returns (replicas
    /// ticked, campaigns started).
    pub fn tick(
        &mut self,
        replicas: &mut super::Replicas,
        due: u64,
        campaigns_max: u64,
    ) -> (usize, u64) {
        let mut budget = campaigns_max.saturating_mul(due);
        let mut started = 0;
        let mut asleep = std::mem::take(&mut self.scratch);
        let start = self.cursor;
        let WorkSet {
            active,
            awake,
            cursor,
            waiting,
            ..
        } = self;
        waiting.clear();
        for &g in awake.range(start..).chain(awake.range(..start)) {
            let Some(r) = replicas.get_mut(&g) else {
                asleep.push(g);
                continue;
            };
            for _ in 0..due {
                if r.raft.tick_with(budget > 0) {
                    budget -= 1;
                    started += 1;
                    if budget == 0 {
                        *cursor = g.wrapping_add(1);
                    }
                }
            }
            if r.raft.has_ready() {
                active.insert(g);
            }
            if r.has_waiters() {
                waiting.push(g);
            } else if r.raft.quiesced() {
                asleep.push(g);
            }
        }
        let ticked = awake.len();
        for g in asleep.drain(..) {
            awake.remove(&g);
        }
        self.scratch = asleep;
        debug_assert!(
            replicas
                .iter()
                .all(|(g, r)| (r.raft.quiesced() && !r.has_waiters()) || self.awake.contains(g)),
            "an awake replica is outside the awake set"
        );
        (ticked, started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Replica;
    use crate::raft::{RaftConfig, RawNode, Role};
    use std::collections::BTreeMap;

    /// Replica 1 of a new group `g` of voters [1, 2, 3] (its peers never answer).
    fn replica(g: GroupId, quiesce: bool) -> Replica {
        let mut c = RaftConfig::new(1, vec![1, 2, 3]);
        c.seed = g;
        c.quiesce = quiesce;
        let raft = RawNode::new(c.validate().unwrap());
        let kv = crate::kv::Kv::new(crate::kv::KvLimits::default());
        Replica::new(g, 1, raft, kv, 0, crate::storage::GroupLog::default())
    }

    #[test]
    fn a_tick_starts_at_most_the_campaign_budget_and_every_group_gets_its_turn() {
        let mut replicas: crate::shard::Replicas =
            (1..=10).map(|g| (g, Box::new(replica(g, false)))).collect();
        let mut w = WorkSet::default();
        for g in 1..=10 {
            w.mark(g);
        }
        let mut started = 0;
        for _ in 0..40 {
            let (ticked, s) = w.tick(&mut replicas, 1, 1);
            assert_eq!(ticked, 10, "none quiesced: all tick");
            assert!(s <= 1, "{s} elections started in one tick, budget 1");
            started += s;
        }
        let deferred: u64 = replicas
            .values()
            .map(|r| r.raft.stats().campaigns_deferred)
            .sum();
        assert!(deferred > 0, "the budget never held an election back");
        assert!(started >= 10);
        for (g, r) in &replicas {
            assert_ne!(r.raft.role(), Role::Follower, "group {g} never campaigned");
        }
        // Two ticks' worth at once: twice the budget.
        let (_, s) = w.tick(&mut replicas, 2, 1);
        assert!(s <= 2);
    }

    #[test]
    fn quiesced_replicas_leave_the_awake_set_and_a_mark_brings_them_back() {
        let mut r = replica(1, true);
        // A follower told to quiesce by its leader (replica 2).
        r.raft.step(crate::raft::Message {
            from: 2,
            to: 1,
            term: 1,
            body: crate::raft::Body::Quiesce { commit: 0 },
        });
        assert!(r.raft.quiesced());
        let mut replicas = BTreeMap::from([(1, Box::new(r)), (2, Box::new(replica(2, true)))]);
        let mut w = WorkSet::default();
        w.mark(1);
        w.mark(2);
        assert_eq!(w.tick(&mut replicas, 1, 8).0, 2);
        assert_eq!(w.awake.iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            w.tick(&mut replicas, 1, 8).0,
            1,
            "the quiesced one is not ticked"
        );
        w.mark(1);
        assert_eq!(w.tick(&mut replicas, 1, 8).0, 2);
    }
}
