//! The shard's work set (issue #16): which replicas a turn looks at, and
//! which ones a tick touches. A turn costs what its replicas were given,
//! and a tick what came due, not what the shard hosts.
//!
//! Ticks: the replicas share one logical clock (`raft::Clock`). A tick
//! moves it on and acts only on the replicas whose next timed event
//! (`RawNode::due_at`: a leader's heartbeat or check-quorum round, an
//! election timeout) has come; every other replica counts the ticks it
//! missed at its next input, before acting on it. So a follower waiting
//! out its election timeout, or a quiesced group, costs no tick at all.
//! An event is looked up again (`schedule`) after every input a replica is
//! given: each input marks it (`mark`), and the turn schedules what it
//! marked before taking Readies (`Shard::process_readies`).

use std::collections::{BTreeMap, BTreeSet};

use crate::group::{GroupId, Replica, TimerKind};
use crate::raft::{Clock, Role};

#[derive(Debug, Default)]
pub(super) struct WorkSet {
    /// Replicas given something since their last Ready (a message, a
    /// request, a tick that left a Ready, a durable write, an install
    /// done). Only these are looked at for a Ready, and their timers
    /// scheduled again. Invariant (debug-asserted each turn): a hosted
    /// replica with a Ready is in it or parked in `installing`.
    pub active: BTreeSet<GroupId>,
    /// The clock every hosted replica counts its ticks from.
    clock: Clock,
    /// Leaders' timed events: (due tick, group). All those due act at a tick.
    events: BTreeSet<(u64, GroupId)>,
    /// Election timeouts of (pre-)candidates: (due tick, group). All
    /// those due campaign again at a tick; there are few
    /// (`campaigns_in_flight_max`).
    retries: BTreeSet<(u64, GroupId)>,
    /// Election timeouts of followers: (due tick, group). A tick starts
    /// at most the campaign budget of elections, and only while fewer
    /// than `campaigns_in_flight_max` replicas campaign, oldest due first;
    /// the rest stay due for the next tick. Invariant (debug-asserted at
    /// each `Shard::process_readies`): a hosted replica's `Replica::timer`
    /// is its `due_at` (none if that is `u64::MAX`), and it is in `events`,
    /// `retries` or here accordingly.
    elections: BTreeSet<(u64, GroupId)>,
    /// Groups whose replica campaigns (a pre-candidate or a candidate) as
    /// of its last schedule → the tick it started.
    candidates: BTreeMap<GroupId, u64>,
    /// Those still counted against `campaigns_in_flight_max`: (start tick,
    /// group), for `CampaignLimits::window` ticks from the start. One that
    /// cannot win (its quorum is gone, its vote requests fall in a live
    /// leader's lease and go unanswered) campaigns on but stops holding a
    /// slot, so it cannot keep a winnable election from starting.
    counted: BTreeSet<(u64, GroupId)>,
    /// Replicas with client requests waiting, as of their last schedule:
    /// the only ones whose deadlines are looked at (`Shard::expire_requests`).
    pub waiting: BTreeSet<GroupId>,
}

impl WorkSet {
    /// Group `g` was given something: look at it this turn, and schedule
    /// its next timed event again (whatever it was may have moved it).
    pub fn mark(&mut self, g: GroupId) {
        self.active.insert(g);
    }

    /// Forgets every replica (a rebuild replaced them all); the clock
    /// goes on.
    pub fn forget_all(&mut self) {
        self.active.clear();
        self.events.clear();
        self.retries.clear();
        self.elections.clear();
        self.candidates.clear();
        self.counted.clear();
        self.waiting.clear();
    }

    /// Makes `r`, about to be hosted, count ticks from this shard's clock.
    pub fn adopt(&self, r: &mut Replica) {
        r.raft.set_clock(self.clock.clone());
    }

    /// The clock every hosted replica counts its ticks from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Replicas with a timed event to come: not quiesced, or leading.
    pub fn awake(&self) -> usize {
        self.events.len() + self.retries.len() + self.elections.len()
    }

    /// Ticks from the clock's now to the first timed event of any hosted
    /// replica (a leader's heartbeat or check-quorum round, a retry, an
    /// election timeout), at least 1 (an election the campaign budget held
    /// back stays due: the next tick) and at most `cap` (also what it is
    /// with no replica awake). The shard loop's ticker sleeps that long
    /// (`Shard::run`): a shard whose groups are all quiesced is not woken
    /// every tick for nothing. Entries a newer schedule replaced may make
    /// it earlier than needed, never later. O(log n).
    pub fn ticks_to_next_event(&self, cap: u64) -> u64 {
        let now = self.clock.now();
        [&self.events, &self.retries, &self.elections]
            .into_iter()
            .filter_map(|set| set.first().map(|&(at, _)| at))
            .min()
            .map_or(cap, |at| at.saturating_sub(now))
            .clamp(1, cap.max(1))
    }

    /// Replicas campaigning, as of their last schedule.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// Group `g`'s replica is gone (destroyed): it campaigns no more.
    /// (Its timer entries are skipped when they come due.)
    pub fn forget(&mut self, g: GroupId) {
        if let Some(t) = self.candidates.remove(&g) {
            self.counted.remove(&(t, g));
        }
    }

    /// The groups whose replicas lead and are awake.
    pub fn awake_leaders(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.events.iter().map(|&(_, g)| g)
    }

    /// Files `r`'s next timed event (`RawNode::due_at`) where the ticks
    /// look, moving it if it changed; lists `r` in `waiting` if it has
    /// client requests waiting.
    pub fn schedule(&mut self, g: GroupId, r: &mut Replica) {
        let want = timer_of(r);
        if r.timer != want && !self.held_back(r.timer, want) {
            if let Some(old) = r.timer {
                self.set(old.1).remove(&(old.0, g));
            }
            if let Some(new) = want {
                self.set(new.1).insert((new.0, g));
            }
            r.timer = want;
        }
        if campaigning(r) {
            if !self.candidates.contains_key(&g) {
                let now = self.clock.now();
                self.candidates.insert(g, now);
                self.counted.insert((now, g));
            }
        } else if let Some(t) = self.candidates.remove(&g) {
            self.counted.remove(&(t, g));
        }
        if r.has_waiters() {
            self.waiting.insert(g);
        }
    }

    /// An election held back by the budget keeps its place (oldest due
    /// first) when an input catches its replica up meanwhile, which makes
    /// it due at the next tick: it fires at the next tick anyway.
    fn held_back(&self, filed: Option<(u64, TimerKind)>, want: Option<(u64, TimerKind)>) -> bool {
        use TimerKind::Election;
        matches!((filed, want), (Some((at, Election)), Some((_, Election))) if at <= self.clock.now())
    }

    fn set_ref(&self, kind: TimerKind) -> &BTreeSet<(u64, GroupId)> {
        match kind {
            TimerKind::Leader => &self.events,
            TimerKind::Retry => &self.retries,
            TimerKind::Election => &self.elections,
        }
    }

    fn set(&mut self, kind: TimerKind) -> &mut BTreeSet<(u64, GroupId)> {
        match kind {
            TimerKind::Leader => &mut self.events,
            TimerKind::Retry => &mut self.retries,
            TimerKind::Election => &mut self.elections,
        }
    }

    /// Whether `limits.in_flight` replicas are in the first
    /// `limits.window` ticks of their campaigns; those past it are no
    /// longer counted.
    fn campaigns_full(&mut self, limits: CampaignLimits) -> bool {
        let now = self.clock.now();
        while let Some(&(t, _)) = self.counted.first() {
            if t.saturating_add(limits.window) > now {
                break;
            }
            self.counted.pop_first();
        }
        self.counted.len() as u64 >= limits.in_flight
    }

    /// Moves the clock `due` ticks on and acts on the replicas whose event
    /// came due: every leader's, every (pre-)candidate's (campaigning
    /// again), and followers' elections under two budgets: at most
    /// `limits.per_tick` per tick (`due` ticks: `due` times as many), and
    /// only while fewer than `limits.in_flight` replicas are in the first
    /// `limits.window` ticks of a campaign (a new election waits for one
    /// to end or to outlast the window). Followers' elections go oldest due
    /// first, so no group waits behind others for ever. Those left with a
    /// Ready are looked at this turn. Returns (replicas acted on,
    /// campaigns started).
    pub fn tick(
        &mut self,
        replicas: &mut super::Replicas,
        due: u64,
        limits: CampaignLimits,
    ) -> (usize, u64) {
        self.clock.advance(due);
        let now = self.clock.now();
        let mut budget = limits.per_tick.saturating_mul(due);
        let (mut ticked, mut started) = (0, 0);
        for kind in [TimerKind::Leader, TimerKind::Retry, TimerKind::Election] {
            loop {
                if kind == TimerKind::Election && (budget == 0 || self.campaigns_full(limits)) {
                    break;
                }
                let Some(&(at, g)) = self.set(kind).first() else {
                    break;
                };
                if at > now {
                    break;
                }
                self.set(kind).remove(&(at, g));
                // Gone, or an entry a newer schedule replaced: nothing to do.
                let Some(r) = replicas.get_mut(&g) else {
                    continue;
                };
                if r.timer != Some((at, kind)) {
                    continue;
                }
                r.timer = None;
                ticked += 1;
                if r.raft.advance(true) {
                    if kind == TimerKind::Election {
                        budget = budget.saturating_sub(1);
                    }
                    started += 1;
                }
                if r.raft.has_ready() {
                    self.active.insert(g);
                }
                self.schedule(g, r);
            }
        }
        (ticked, started)
    }

    /// Checks the invariants of the timer queues and of `candidates`
    /// (debug builds): every hosted replica's timer is its `due_at`, filed
    /// where the ticks look, and it is listed as campaigning if it does.
    pub fn debug_check(&self, replicas: &super::Replicas) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (&g, r) in replicas {
            let want = timer_of(r);
            if let (true, Some((at, _))) = (self.held_back(r.timer, want), r.timer) {
                assert!(self.elections.contains(&(at, g)), "group {g}: not filed");
                continue;
            }
            assert_eq!(
                r.timer, want,
                "group {g}: its timer is not its next event (given an input without `mark`?); now {}, role {:?}, quiesced {}",
                self.clock.now(),
                r.raft.role(),
                r.raft.quiesced()
            );
            if let Some((at, kind)) = want {
                let filed = self.set_ref(kind).contains(&(at, g));
                assert!(filed, "group {g}: its timer is not filed");
            }
            assert_eq!(
                self.candidates.contains_key(&g),
                campaigning(r),
                "group {g}: not listed as campaigning"
            );
        }
    }
}

/// The two budgets of followers' elections ([`WorkSet::tick`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct CampaignLimits {
    /// Elections started per tick at most (`ShardConfig::campaigns_per_tick_max`).
    pub per_tick: u64,
    /// Replicas campaigning at once at most (`ShardConfig::campaigns_in_flight_max`).
    pub in_flight: u64,
    /// Ticks from its start that a campaign counts against `in_flight`
    /// (two election timeouts: `CAMPAIGN_COUNTED_TIMEOUTS`).
    pub window: u64,
}

/// Whether `r` campaigns (a pre-candidate or a candidate).
fn campaigning(r: &Replica) -> bool {
    matches!(r.raft.role(), Role::PreCandidate | Role::Candidate)
}

/// The timer entry `r`'s next timed event calls for: (due tick, kind);
/// none if it has none.
fn timer_of(r: &Replica) -> Option<(u64, TimerKind)> {
    let due = r.raft.due_at();
    let kind = match r.raft.role() {
        Role::Leader => TimerKind::Leader,
        Role::PreCandidate | Role::Candidate => TimerKind::Retry,
        Role::Follower => TimerKind::Election,
    };
    (due != u64::MAX).then_some((due, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Replica;
    use crate::raft::{RaftConfig, RawNode, Role};

    /// Replica 1 of a new group `g` of voters [1, 2, 3] (its peers never answer).
    fn replica(g: GroupId, quiesce: bool) -> Replica {
        let mut c = RaftConfig::new(1, vec![1, 2, 3]);
        c.seed = g;
        c.quiesce = quiesce;
        let raft = RawNode::new(c.validate().unwrap());
        let kv = crate::kv::Kv::new(crate::kv::KvLimits::default());
        Replica::new(g, 1, raft, kv, 0, crate::storage::GroupLog::default())
    }

    /// Hosts groups `ids` on a work set, as `Shard::open` does.
    fn host(
        ids: impl Iterator<Item = GroupId>,
        quiesce: bool,
    ) -> (WorkSet, super::super::Replicas) {
        let mut w = WorkSet::default();
        let mut replicas = super::super::Replicas::new();
        for g in ids {
            let mut r = Box::new(replica(g, quiesce));
            w.adopt(&mut r);
            replicas.insert(g, r);
            w.mark(g);
        }
        schedule_marked(&mut w, &mut replicas);
        (w, replicas)
    }

    /// What `Shard::process_readies` does with the marked replicas.
    fn schedule_marked(w: &mut WorkSet, replicas: &mut super::super::Replicas) {
        for g in std::mem::take(&mut w.active) {
            w.schedule(g, replicas.get_mut(&g).unwrap());
        }
        w.debug_check(replicas);
    }

    #[test]
    fn a_tick_acts_only_on_what_came_due() {
        let (mut w, mut replicas) = host(1..=100, false);
        assert_eq!(w.awake(), 100, "every voter waits out its election timeout");
        let first = replicas.values().map(|r| r.raft.due_at()).min().unwrap();
        // The ticks before the first timeout touch nobody.
        let (ticked, started) = w.tick(&mut replicas, first - 1, per_tick(1000));
        assert_eq!((ticked, started), (0, 0));
        assert!(w.active.is_empty());
        // At it: exactly the replicas due then.
        let due_now = replicas
            .values()
            .filter(|r| r.raft.due_at() == first)
            .count();
        let (ticked, started) = w.tick(&mut replicas, 1, per_tick(1000));
        assert_eq!(ticked, due_now);
        assert_eq!(started as usize, due_now);
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.awake(), 100, "the candidates wait out their timeouts too");
    }

    /// Budgets: the per-tick one only, or both.
    fn per_tick(per_tick: u64) -> CampaignLimits {
        CampaignLimits {
            per_tick,
            in_flight: u64::MAX,
            window: 0,
        }
    }

    fn campaigning(replicas: &super::super::Replicas) -> Vec<GroupId> {
        replicas
            .iter()
            .filter(|(_, r)| r.raft.role() != Role::Follower)
            .map(|(&g, _)| g)
            .collect()
    }

    #[test]
    fn a_tick_starts_at_most_the_campaign_budget_oldest_due_first() {
        let (mut w, mut replicas) = host(1..=10, false);
        let mut order = Vec::new();
        for _ in 0..40 {
            let before = campaigning(&replicas).len();
            w.tick(&mut replicas, 1, per_tick(1));
            let now = campaigning(&replicas);
            // Candidates never become followers here (no answers come).
            assert!(
                now.len() <= before + 1,
                "{now:?}: two new in one tick, budget 1"
            );
            for g in now {
                if !order.contains(&g) {
                    order.push(g);
                }
            }
            schedule_marked(&mut w, &mut replicas);
        }
        assert_eq!(order.len(), 10, "every group got its turn: {order:?}");
        // Oldest due first: the order of their first timeouts.
        let (mut w, mut replicas) = host(1..=10, false);
        let mut by_due: Vec<(u64, GroupId)> = replicas
            .iter()
            .map(|(&g, r)| (r.raft.due_at(), g))
            .collect();
        by_due.sort();
        let last = by_due.last().unwrap().0;
        let now = w.clock.now();
        w.tick(&mut replicas, last - now, per_tick(0));
        for (_, g) in by_due {
            w.tick(&mut replicas, 1, per_tick(1));
            assert_ne!(
                replicas[&g].raft.role(),
                Role::Follower,
                "group {g} skipped"
            );
            schedule_marked(&mut w, &mut replicas);
        }
        // Two ticks' worth at once: twice the budget.
        let (mut w, mut replicas) = host(1..=10, false);
        let now = w.clock.now();
        w.tick(&mut replicas, last - now, per_tick(0));
        w.tick(&mut replicas, 2, per_tick(1));
        assert_eq!(campaigning(&replicas).len(), 2);
    }

    /// At most `in_flight` replicas are in the first `window` ticks of a
    /// campaign; the candidates among them still campaign again at each of
    /// their timeouts (none waits for a slot it holds), an election that
    /// ends frees a slot for the oldest election due, and so does a
    /// replica destroyed.
    #[test]
    fn at_most_campaigns_in_flight_max_replicas_campaign_at_once() {
        let (mut w, mut replicas) = host(1..=10, false);
        let limits = CampaignLimits {
            per_tick: 1000,
            in_flight: 3,
            window: 1000,
        };
        let mut started = 0;
        for _ in 0..200 {
            let (_, s) = w.tick(&mut replicas, 1, limits);
            started += s;
            schedule_marked(&mut w, &mut replicas);
            assert!(campaigning(&replicas).len() <= 3);
            assert_eq!(w.candidates(), campaigning(&replicas).len());
        }
        let held = campaigning(&replicas);
        assert_eq!(held.len(), 3);
        assert!(
            started > 3 * 5,
            "the candidates campaigned again: {started}"
        );
        // One hears of a leader at a higher term: it follows, and the
        // oldest election due takes its slot at the next tick.
        let oldest = w.elections.first().unwrap().1;
        let r = replicas.get_mut(&held[0]).unwrap();
        let term = r.raft.term() + 1;
        r.raft.step(crate::raft::Message {
            from: 2,
            to: 1,
            term,
            body: crate::raft::Body::Heartbeat {
                commit: 0,
                round: 0,
            },
        });
        assert_eq!(r.raft.role(), Role::Follower);
        w.mark(held[0]);
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.candidates(), 2);
        w.tick(&mut replicas, 1, limits);
        assert_ne!(replicas[&oldest].raft.role(), Role::Follower);
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.candidates(), 3);
        // A campaigning replica destroyed (`Shard::destroy_replica`).
        let gone = held[1];
        replicas.remove(&gone);
        w.forget(gone);
        assert_eq!(w.candidates(), 2);
        w.tick(&mut replicas, 1, limits);
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(campaigning(&replicas).len(), 3, "{gone}'s slot not reused");
    }

    /// Campaigns that cannot win (here no vote ever comes back) hold their
    /// slots for `window` ticks only: then the elections waiting start,
    /// so every group campaigns in the end, `in_flight` at a time.
    #[test]
    fn campaigns_that_cannot_win_hold_no_slot_past_the_window() {
        let (mut w, mut replicas) = host(1..=10, false);
        let limits = CampaignLimits {
            per_tick: 1000,
            in_flight: 3,
            window: 40,
        };
        let mut first_seen = std::collections::BTreeMap::new();
        for _ in 0..400 {
            w.tick(&mut replicas, 1, limits);
            schedule_marked(&mut w, &mut replicas);
            let now = w.clock.now();
            for g in campaigning(&replicas) {
                first_seen.entry(g).or_insert(now);
            }
            // Those in their first window: never more than 3.
            let young = first_seen.values().filter(|&&t| t + 40 > now).count();
            assert!(young <= 3, "{young} campaigns in their window at {now}");
        }
        assert_eq!(
            first_seen.len(),
            10,
            "every group campaigned: {first_seen:?}"
        );
        assert_eq!(w.candidates(), 10);
    }

    /// An election the budget held back keeps its place when an input
    /// catches its replica up (which makes it due at the next tick):
    /// oldest due first still.
    #[test]
    fn an_election_held_back_keeps_its_place_when_an_input_catches_it_up() {
        let (mut w, mut replicas) = host(1..=3, false);
        let last = replicas.values().map(|r| r.raft.due_at()).max().unwrap();
        // All three overdue; a budget of 1 starts the oldest.
        let now = w.clock.now();
        w.tick(&mut replicas, last - now - 1, per_tick(0));
        let (_, started) = w.tick(&mut replicas, 1, per_tick(1));
        assert_eq!(started, 1);
        schedule_marked(&mut w, &mut replicas);
        let held: Vec<_> = w
            .elections
            .iter()
            .filter(|e| e.0 <= w.clock.now())
            .copied()
            .collect();
        assert_eq!(held.len(), 2, "two held back: {held:?}");
        // The later of them gets an input, then the clock moves on.
        let (at, g) = held[1];
        w.tick(&mut replicas, 1, per_tick(0));
        assert!(replicas
            .get_mut(&g)
            .unwrap()
            .raft
            .propose(bytes::Bytes::new())
            .is_err());
        w.mark(g);
        schedule_marked(&mut w, &mut replicas);
        assert!(w.elections.contains(&(at, g)), "it lost its place");
        // The next budget of 1 goes to the older one.
        let (older_at, older) = held[0];
        assert!(older_at <= at);
        w.tick(&mut replicas, 1, per_tick(1));
        assert_ne!(replicas[&older].raft.role(), Role::Follower);
        assert_eq!(replicas[&g].raft.role(), Role::Follower);
    }

    #[test]
    fn quiesced_replicas_have_no_timer_and_an_input_files_one_again() {
        let (mut w, mut replicas) = host(1..=2, true);
        assert_eq!(w.awake(), 2);
        // Group 1's follower told to quiesce by its leader (replica 2).
        let r = replicas.get_mut(&1).unwrap();
        r.raft.step(crate::raft::Message {
            from: 2,
            to: 1,
            term: 1,
            body: crate::raft::Body::Quiesce { commit: 0 },
        });
        assert!(r.raft.quiesced());
        assert_eq!(r.raft.due_at(), u64::MAX);
        w.mark(1);
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.awake(), 1, "the quiesced one has no timer");
        for _ in 0..100 {
            w.tick(&mut replicas, 1, per_tick(8));
            schedule_marked(&mut w, &mut replicas);
        }
        assert_eq!(replicas[&1].raft.role(), Role::Follower, "never ticked");
        // Its leader's node reported down: it wakes and has a timer again.
        replicas.get_mut(&1).unwrap().raft.report_unreachable(2);
        w.mark(1);
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.awake(), 2);
    }

    /// The ticker's sleep (`ticks_to_next_event`): the first timed event
    /// of any replica, the next tick for an overdue election, the cap
    /// with every replica quiesced.
    #[test]
    fn the_next_event_is_the_first_timer_of_any_replica_or_the_cap() {
        let (mut w, mut replicas) = host(1..=3, true);
        let first = replicas.values().map(|r| r.raft.due_at()).min().unwrap();
        let now = w.clock.now();
        assert!(first > now + 1, "election timeouts are ticks away");
        assert_eq!(w.ticks_to_next_event(1000), first - now);
        assert_eq!(w.ticks_to_next_event(2), 2, "capped");
        assert_eq!(w.ticks_to_next_event(0), 1, "at least the next tick");
        // Two ticks before it: two; one tick before it: the next tick.
        w.tick(&mut replicas, first - now - 2, per_tick(0));
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.ticks_to_next_event(1000), 2);
        w.tick(&mut replicas, 1, per_tick(0));
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.ticks_to_next_event(1000), 1);
        // Overdue and held back by a budget of 0: still the next tick.
        w.tick(&mut replicas, 5, per_tick(0));
        schedule_marked(&mut w, &mut replicas);
        assert!(w.elections.first().unwrap().0 < w.clock.now());
        assert_eq!(w.ticks_to_next_event(1000), 1);
        // Every replica quiesced by its leader: nothing is due, the cap.
        for (&g, r) in replicas.iter_mut() {
            r.raft.step(crate::raft::Message {
                from: 2,
                to: 1,
                term: 1,
                body: crate::raft::Body::Quiesce { commit: 0 },
            });
            assert!(r.raft.quiesced(), "group {g}");
            w.mark(g);
        }
        schedule_marked(&mut w, &mut replicas);
        assert_eq!(w.awake(), 0);
        assert_eq!(w.ticks_to_next_event(21), 21);
    }
}
