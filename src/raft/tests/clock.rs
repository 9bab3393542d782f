//! Lazy ticking (`raft::clock`): a node ticked only when `due_at` has come,
//! counting the other ticks at its next input, acts exactly as one ticked
//! at every tick.

use bytes::Bytes;

use super::*;
use crate::rng::Rng;

/// What one tick of a run showed: every node's (role, term, leader,
/// commit, last index) and every message sent, in order.
type Trace = Vec<String>;

/// Runs three nodes of a group for `steps` ticks under faults drawn from
/// `seed` (drops, a node cut off for a while, restarts, proposals, reads,
/// unreachable reports), persisting every Ready at once. `lazy`: each
/// tick advances the nodes' clocks and calls `advance` only on the nodes
/// due; otherwise `tick` on every node.
fn run(seed: u64, steps: usize, lazy: bool, quiesce: bool) -> Trace {
    let mut rng = Rng(seed);
    let config = |id: ReplicaId, incarnation: u64| {
        let mut c = cfg(id, &[1, 2, 3]);
        c.seed = seed * 1000 + incarnation * 10 + id;
        c.quiesce = quiesce;
        c.lease_reads = true;
        c.validate().unwrap()
    };
    let mut nodes: Vec<RawNode> = (1..=3).map(|id| RawNode::new(config(id, 0))).collect();
    // What each node made durable: (hard state, log, applied).
    let mut disks: Vec<(HardState, Vec<Entry>, Index)> = vec![Default::default(); 3];
    let mut trace = Trace::new();
    let mut inflight: Vec<Message> = Vec::new();
    let mut cut: Option<(usize, usize)> = None; // (node index, until step)
    for step in 0..steps {
        if cut.is_some_and(|(_, until)| step >= until) {
            cut = None;
        }
        if cut.is_none() && rng.chance(5) {
            cut = Some((rng.below(3) as usize, step + rng.range(5, 60) as usize));
        }
        if rng.chance(3) {
            // A restart from what is durable (a restarted node that had
            // seen a term counts itself in a lease: `quiet`).
            let i = rng.below(3) as usize;
            let (hs, log, applied) = disks[i].clone();
            nodes[i] = RawNode::restart(config(i as ReplicaId + 1, step as u64), hs, log, applied);
            trace.push(format!("{step} restart n{i}"));
        }
        for n in &mut nodes {
            if lazy {
                n.clock().advance(1);
                if n.due_at() <= n.clock().now() {
                    n.advance(true);
                }
            } else {
                n.tick();
            }
        }
        // Deliver what was sent last step, some dropped, none across the cut.
        for m in std::mem::take(&mut inflight) {
            let (from, to) = (m.from as usize - 1, m.to as usize - 1);
            let cut_off = cut.is_some_and(|(c, _)| c == from || c == to);
            if !cut_off && !rng.chance(50) {
                nodes[to].step(m);
            }
        }
        if let Some((c, _)) = cut {
            if rng.chance(100) {
                let (i, peer) = ((c + 1) % 3, c as ReplicaId + 1);
                nodes[i].report_unreachable(peer);
            }
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.role() == Role::Leader && rng.chance(100) {
                let _ = n.propose(Bytes::from_static(b"v"));
            }
            if rng.chance(30) {
                let _ = n.read_index(step as u64);
            }
            if rng.chance(30) {
                trace.push(format!("{i} lease {:?}", n.lease_read_index()));
            }
            let rd = n.ready();
            let disk = &mut disks[i];
            if let Some(hs) = rd.hard_state {
                disk.0 = hs;
            }
            for e in &rd.entries {
                disk.1.truncate(e.index as usize - 1);
                disk.1.push(e.clone());
            }
            n.on_persisted(rd.token());
            let last = rd.committed.last().map(|e| e.index);
            if let Some(last) = last {
                disk.2 = last;
            }
            for m in rd.messages.into_iter().chain(rd.persisted_messages) {
                trace.push(format!("{step} {m:?}"));
                inflight.push(m);
            }
            if let Some(last) = last {
                n.on_applied(last);
            }
            trace.push(format!(
                "{step} n{i} {:?} t{} l{:?} c{} i{}",
                n.role(),
                n.term(),
                n.leader(),
                n.commit_index(),
                n.last_index()
            ));
        }
    }
    trace
}

#[test]
fn a_node_ticked_only_when_due_acts_as_one_ticked_every_tick() {
    for seed in 0..40 {
        for quiesce in [false, true] {
            let eager = run(seed, 600, false, quiesce);
            let lazy = run(seed, 600, true, quiesce);
            if let Some(k) = (0..eager.len().min(lazy.len())).find(|&k| eager[k] != lazy[k]) {
                panic!(
                    "seed {seed} quiesce {quiesce}: lazy ticking diverged at line {k}:\n eager: {}\n lazy:  {}",
                    eager[k], lazy[k]
                );
            }
            assert_eq!(eager.len(), lazy.len(), "seed {seed}");
            let leaders = eager.iter().filter(|l| l.contains("Leader")).count();
            assert!(
                leaders > 0,
                "seed {seed}: no leader ever: the run tests nothing"
            );
        }
    }
}

#[test]
fn due_at_names_the_next_event_and_nothing_happens_before_it() {
    // A follower: its election timeout.
    let mut n = node(1, &[1, 2, 3]);
    let due = n.due_at();
    assert!(due > 0 && due < u64::MAX);
    n.clock().advance(due - 1);
    assert!(!n.advance(true), "no campaign before the timeout");
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.due_at(), due, "counting does not move the event");
    n.clock().advance(1);
    assert!(n.advance(true), "campaigns at the timeout");
    assert_eq!(n.role(), Role::PreCandidate);
    // A leader: its next heartbeat, `heartbeat_ticks` after it was elected.
    let l = leader();
    let now = l.clock().now();
    assert_eq!(
        l.due_at(),
        now + u64::from(cfg(1, &[1, 2, 3]).heartbeat_ticks)
    );
    // A learner never campaigns: its next event is its membership check,
    // `MEMBER_CHECK_ELECTIONS` election timeouts on.
    let mut c = cfg(4, &[1, 2, 3]);
    c.learners = vec![4];
    let interval = u64::from(c.election_ticks * MEMBER_CHECK_ELECTIONS);
    let mut learner = RawNode::new(c.validate().unwrap());
    let now = learner.clock().now();
    assert_eq!(learner.due_at(), now + interval);
    learner.clock().advance(interval);
    assert!(!learner.advance(true), "a learner never campaigns");
    assert_eq!(learner.due_at(), now + 2 * interval);
    // One waiting for its seeding snapshot (no membership yet) has nobody
    // to ask: no event.
    let waiting = RawNode::new(cfg(4, &[]).validate().unwrap());
    assert!(waiting.conf().is_empty());
    assert_eq!(waiting.due_at(), u64::MAX);
}

#[test]
fn an_input_counts_the_ticks_before_it_and_a_deferred_campaign_waits_for_advance() {
    let mut n = node(1, &[1, 2, 3]);
    let due = n.due_at();
    // Far past the timeout; the next input counts the ticks but does not
    // campaign: that is `advance`'s, under the host's budget, at the next
    // tick it counts.
    n.clock().advance(due + 5);
    assert!(n.propose(Bytes::from_static(b"x")).is_err());
    assert_eq!(n.role(), Role::Follower);
    assert!(n.stats().campaigns_deferred > 0);
    assert!(!n.advance(true), "nothing left to count");
    assert_eq!(
        n.due_at(),
        n.clock().now() + 1,
        "due again at the next tick"
    );
    n.clock().advance(1);
    assert!(n.advance(true));
    assert_eq!(n.role(), Role::PreCandidate);
}

/// After a stall of several election timeouts, one campaign, not one per
/// timeout that fell in it (each a round of PreVotes that the next one
/// supersedes): 100,000 groups starting sent 57 PreVotes per campaign the
/// shard counted. The new timeout runs from now.
#[test]
fn a_stall_of_many_timeouts_starts_one_campaign() {
    let mut n = node(1, &[1, 2, 3]);
    let stall = 10 * u64::from(cfg(1, &[1, 2, 3]).election_ticks);
    n.clock().advance(stall);
    assert!(n.advance(true));
    let rd = n.ready();
    let pre_votes = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, Body::PreVote { .. }))
        .count();
    assert_eq!(pre_votes, 2, "one PreVote per peer: {:?}", rd.messages);
    let now = n.clock().now();
    assert!(n.due_at() >= now + u64::from(cfg(1, &[1, 2, 3]).election_ticks));
}
