//! Quiescence (`raft::node::quiesce`): one input, the exact outputs.

use super::*;

/// Leader 1 of [1,2,3] (`quiesce`, `lease` reads) whose no-op the
/// followers `acked` acknowledged (committed), reported applied if
/// `apply`; not quiesced yet.
fn leader_acked(quiesce: bool, lease: bool, acked: &[ReplicaId], apply: bool) -> RawNode {
    let mut c = cfg(1, &[1, 2, 3]);
    c.quiesce = quiesce;
    c.lease_reads = lease;
    let mut n = RawNode::new(c.validate().unwrap());
    win_election(&mut n, 2);
    persist(&mut n);
    for &f in acked {
        ack(&mut n, f, 1);
    }
    let rd = persist(&mut n);
    assert_eq!(rd.committed.last().map(|e| e.index), Some(1));
    if apply {
        n.on_applied(1);
    }
    n
}

/// Leader 1 of [1,2,3], quiescence on, its no-op committed through both
/// followers, applied and reported; not quiesced yet.
fn idle_leader(lease: bool) -> RawNode {
    leader_acked(true, lease, &[2, 3], true)
}

/// Leader 1 of [1,2,3], quiescence on, its no-op committed and applied
/// through node 2; node 3 has acknowledged nothing.
fn leader_without_3() -> RawNode {
    leader_acked(true, false, &[2], true)
}

/// (to, commit) of every Quiesce in `rd`.
fn quiesces(rd: &Ready) -> Vec<(ReplicaId, Index)> {
    rd.messages
        .iter()
        .filter_map(|m| match m.body {
            Body::Quiesce { commit } => Some((m.to, commit)),
            _ => None,
        })
        .collect()
}

/// Follower 2 of [1,2,3], quiescence on, holding entry 1 of term 1
/// (durable) from leader 1.
fn follower() -> RawNode {
    follower_of(2, &[1, 2, 3])
}

/// Follower `id` of `voters`, quiescence on, holding entry 1 of term 1
/// (durable) from leader 1.
fn follower_of(id: ReplicaId, voters: &[ReplicaId]) -> RawNode {
    let mut c = cfg(id, voters);
    c.quiesce = true;
    let mut f = RawNode::new(c.validate().unwrap());
    f.step(msg(
        1,
        id,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 1)],
            commit: 0,
        },
    ));
    persist(&mut f);
    f
}

#[test]
fn an_idle_leader_quiesces_at_its_heartbeat_tick_and_then_ignores_ticks() {
    let mut l = idle_leader(false);
    l.tick();
    let rd = l.ready();
    assert_eq!(quiesces(&rd), vec![(2, 1), (3, 1)]);
    assert!(
        heartbeat_rounds(&rd).is_empty(),
        "a quiesce, not a heartbeat"
    );
    assert!(l.quiesced());
    for _ in 0..100 {
        l.tick();
    }
    assert!(!l.has_ready(), "a quiesced leader sends nothing");
    assert_eq!(
        l.role(),
        Role::Leader,
        "and check-quorum does not depose it"
    );
}

/// A member's `Body::MemberCheck` wakes a quiesced leader, which tells
/// its followers again at its next tick (a heartbeat, or, all caught up
/// as here, a new quiesce carrying its commit: a learner left behind
/// hears from it either way); its
/// term, however stale, changes nothing. From a non-member it is ignored
/// (the host answers that one `Removed`).
#[test]
fn a_members_check_wakes_a_quiesced_leader_and_a_non_members_does_not() {
    let mut l = idle_leader(false);
    l.tick();
    assert!(l.quiesced());
    persist(&mut l);
    l.step(msg(9, 1, 0, Body::MemberCheck { conf_index: 0 }));
    assert!(l.quiesced(), "not a member: ignored");
    l.step(msg(3, 1, 0, Body::MemberCheck { conf_index: 0 }));
    assert!(!l.quiesced());
    assert_eq!(l.role(), Role::Leader);
    assert_eq!(l.term(), 1);
    assert_eq!(l.stats().member_checks_received, 1);
    l.tick();
    let rd = persist(&mut l);
    assert_eq!(quiesces(&rd), vec![(2, 1), (3, 1)]);
}

#[test]
fn a_leader_with_a_follower_behind_heartbeats_instead() {
    let mut l = leader_without_3();
    // Node 3 has not acknowledged the no-op.
    l.tick();
    let rd = l.ready();
    assert!(quiesces(&rd).is_empty());
    assert_eq!(heartbeat_rounds(&rd).len(), 2);
    assert!(!l.quiesced());
}

#[test]
fn a_leader_quiesces_without_a_follower_reported_unreachable_until_it_hears_from_it() {
    let mut l = leader_without_3();
    l.report_unreachable(3);
    l.tick();
    let rd = l.ready();
    // Node 3, behind, is told nothing: told the commit it verifiably
    // holds (its match, 0), a node 3 that is in fact up with an empty log
    // quiesced too and nobody woke either side (the chaos test of moves).
    assert_eq!(quiesces(&rd), vec![(2, 1)]);
    assert!(l.quiesced());
    // Node 3 is back (its answer wakes the leader): behind, reachable.
    l.step(msg(3, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert!(!l.quiesced());
    l.tick();
    let rd = l.ready();
    assert!(quiesces(&rd).is_empty(), "node 3 is behind and reachable");
    assert_eq!(heartbeat_rounds(&rd).len(), 2);
}

#[test]
fn unapplied_entries_a_pending_read_or_a_transfer_keep_a_leader_awake() {
    // Not applied yet.
    let mut l = leader_acked(true, false, &[2, 3], false);
    l.tick();
    assert!(!l.quiesced(), "entry 1 not reported applied");
    l.on_applied(1);
    // A read waiting for its round.
    l.read_index(9).unwrap();
    l.ready();
    l.tick();
    assert!(!l.quiesced(), "a read is waiting");
    // A transfer under way.
    let mut l = idle_leader(false);
    l.transfer_leader(2).unwrap();
    l.ready();
    l.tick();
    assert!(!l.quiesced(), "a transfer is under way");
    // Quiescence off.
    let mut l = leader_acked(false, false, &[2, 3], true);
    l.tick();
    assert!(!l.quiesced(), "quiescence is off");
}

#[test]
fn a_follower_holding_the_whole_log_quiesces_and_stops_its_election_timer() {
    let mut f = follower();
    f.step(msg(1, 2, 1, Body::Quiesce { commit: 1 }));
    assert!(f.quiesced());
    assert_eq!(f.commit_index(), 1);
    f.ready();
    for _ in 0..100 {
        f.tick();
    }
    assert_eq!(f.role(), Role::Follower, "no campaign while quiesced");
    assert!(!f.has_ready());
}

#[test]
fn a_follower_whose_log_does_not_end_at_the_commit_stays_awake() {
    let mut f = follower();
    // The leader's log ends at 2; this follower's at 1.
    f.step(msg(1, 2, 1, Body::Quiesce { commit: 2 }));
    assert!(!f.quiesced());
    // Entry 2 received but not durable yet.
    let mut f = follower();
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![ent(2, 1)],
            commit: 1,
        },
    ));
    f.step(msg(1, 2, 1, Body::Quiesce { commit: 2 }));
    assert!(!f.quiesced(), "entry 2 is not durable");
}

#[test]
fn a_quiesced_follower_whose_leader_is_unreachable_wakes_and_campaigns() {
    let mut f = follower();
    f.step(msg(1, 2, 1, Body::Quiesce { commit: 1 }));
    f.ready();
    // Another member's node going away does not wake it.
    f.report_unreachable(3);
    assert!(f.quiesced());
    f.report_unreachable(1);
    assert!(!f.quiesced());
    // The leader's silence counts as one election timeout passed, and 2
    // is the lowest voter left: it campaigns (pre-vote) at its next tick
    // (voter 3 would wait most of a timeout, so the vote does not split).
    f.tick();
    assert_eq!(f.role(), Role::PreCandidate);
}

/// An awake follower whose leader's node is reported unreachable keeps
/// its timer: it may have acknowledged that leader's heartbeats within an
/// election timeout, and a lease counts on it refusing votes until then
/// (a report is only the transport's view: a reset connection, a
/// one-sided cut).
#[test]
fn an_awake_follower_keeps_its_election_timer_when_its_leader_is_reported() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(msg(
        1,
        2,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    f.ready();
    f.report_unreachable(1);
    assert!(!f.quiesced());
    // Another's pre-vote is refused: it is in its leader's lease.
    f.step(msg(
        3,
        2,
        2,
        Body::PreVote {
            last_index: 5,
            last_term: 1,
        },
    ));
    let rd = f.ready();
    assert!(
        rd.messages.is_empty(),
        "a pre-vote granted in the lease: {:?}",
        rd.messages
    );
    for _ in 0..9 {
        f.tick();
        assert_eq!(f.role(), Role::Follower, "in its leader's lease");
    }
}

#[test]
fn any_message_wakes_a_quiesced_leader_and_its_next_tick_tells_the_followers_again() {
    let mut l = idle_leader(false);
    l.tick();
    l.ready();
    assert!(l.quiesced());
    // A follower that woke campaigns: its pre-vote is ignored (the leader
    // is in its lease) but wakes the leader.
    l.step(msg(
        2,
        1,
        2,
        Body::PreVote {
            last_index: 1,
            last_term: 1,
        },
    ));
    assert!(!l.quiesced());
    assert_eq!((l.role(), l.term()), (Role::Leader, 1));
    // Still nothing to do: its next tick (a heartbeat tick) quiesces it
    // again, and the Quiesce tells the woken follower its leader lives.
    l.tick();
    assert_eq!(quiesces(&l.ready()), vec![(2, 1), (3, 1)]);
    assert!(l.quiesced());
}

#[test]
fn a_proposal_wakes_a_quiesced_leader_and_replicates() {
    let mut l = idle_leader(false);
    l.tick();
    l.ready();
    assert!(l.quiesced());
    l.propose(Bytes::from_static(b"w")).unwrap();
    assert!(!l.quiesced());
    let rd = l.ready();
    assert_eq!(
        appends(&rd),
        vec![(2, 1, 1, vec![(2, 1)], 1), (3, 1, 1, vec![(2, 1)], 1)]
    );
}

#[test]
fn a_quiesced_leader_holds_no_lease_and_old_rounds_do_not_restore_it() {
    let mut l = idle_leader(true);
    // A round acknowledged: the lease holds.
    l.read_index(1).unwrap();
    let r = heartbeat_rounds(&persist(&mut l))[0].1;
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: r }));
    assert_eq!(persist(&mut l).read_states.len(), 1);
    assert!(l.lease_valid());
    // The next heartbeat tick quiesces it (the read is served).
    l.tick();
    persist(&mut l);
    assert!(l.quiesced());
    assert!(!l.lease_valid(), "its clock stopped: no lease");
    // Woken (by a late answer to the old round): still no lease.
    l.step(msg(3, 1, 1, Body::HeartbeatResp { round: r }));
    assert!(!l.quiesced());
    assert!(!l.lease_valid(), "a round from before quiescence");
    // A read goes by ReadIndex; a new round restores the lease.
    l.read_index(2).unwrap();
    let rd = l.ready();
    assert!(rd.read_states.is_empty());
    let r2 = heartbeat_rounds(&rd)[0].1;
    assert!(r2 > r);
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: r2 }));
    assert_eq!(l.ready().read_states, vec![ReadState { ctx: 2, index: 1 }]);
    assert!(l.lease_valid());
}

#[test]
fn the_designated_replica_of_a_new_group_campaigns_at_its_first_tick_and_only_then() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.first_candidate = 1;
    let mut n = RawNode::new(c.clone().validate().unwrap());
    n.tick();
    assert_eq!(n.role(), Role::PreCandidate, "campaigns at once");
    // Others wait out an election timeout.
    let mut o = node(2, &[1, 2, 3]);
    o.tick();
    assert_eq!(o.role(), Role::Follower);
    // A group that has seen a term (a restart) does not.
    let hs = HardState {
        term: 3,
        vote: 0,
        commit: 0,
    };
    let mut r = RawNode::restart(c.validate().unwrap(), hs, Vec::new(), 0);
    r.tick();
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn a_leader_stays_awake_for_a_silent_follower_until_its_node_is_reported() {
    let mut l = leader_without_3();
    // Node 3 never answers (a learner, or a replica still to be created
    // there, never campaigns to wake a quiesced leader): silence alone
    // does not let the leader quiesce, through three election timeouts.
    for _ in 0..3 * 10 {
        l.tick();
        let rd = persist(&mut l);
        assert!(quiesces(&rd).is_empty(), "quiesced with node 3 behind");
        // Node 2 answers every heartbeat round.
        for (to, round) in heartbeat_rounds(&rd) {
            if to == 2 {
                l.step(msg(2, 1, 1, Body::HeartbeatResp { round }));
            }
        }
    }
    assert!(!l.quiesced() && l.role() == Role::Leader);
    // Its node reported unreachable: the leader quiesces at its next
    // heartbeat tick.
    l.report_unreachable(3);
    for _ in 0..2 {
        l.tick();
        persist(&mut l);
    }
    assert!(l.quiesced());
}

#[test]
fn a_leader_that_quiesced_without_a_follower_wakes_when_its_node_is_reachable_again() {
    let mut l = leader_without_3();
    l.report_unreachable(3);
    l.tick();
    persist(&mut l);
    assert!(l.quiesced());
    // Node 2 (caught up) reachable again (it may have restarted): told
    // again whom to follow, the leader stays quiesced.
    l.report_reachable(2);
    assert!(l.quiesced());
    assert_eq!(quiesces(&l.ready()), vec![(2, 1)]);
    // Node 3 (behind): wake and catch it up.
    l.report_reachable(3);
    assert!(!l.quiesced());
    l.tick();
    let rd = persist(&mut l);
    assert!(quiesces(&rd).is_empty(), "node 3 is behind and reachable");
    assert!(heartbeat_rounds(&rd).iter().any(|&(to, _)| to == 3));
}

/// An idle group holds no in-flight queue memory: the leader's queues
/// grow with traffic and are released when it quiesces (256 slots
/// reserved per follower at creation were most of an idle group's memory).
#[test]
fn a_quiesced_leader_holds_no_in_flight_queue_memory() {
    let mut l = idle_leader(false);
    let inflight_bytes = |l: &RawNode| -> usize {
        [2, 3]
            .iter()
            .map(|&p| l.progress(p).unwrap().inflight.capacity_bytes())
            .sum()
    };
    // Followers that acknowledged are replicated to through the queues.
    let (idx, _) = l.propose(Bytes::from_static(b"x")).unwrap();
    persist(&mut l);
    assert!(inflight_bytes(&l) > 0, "entry {idx} is in flight");
    for f in [2, 3] {
        ack(&mut l, f, idx);
    }
    persist(&mut l);
    l.on_applied(idx);
    l.tick();
    persist(&mut l);
    assert!(l.quiesced());
    assert_eq!(inflight_bytes(&l), 0);
    // Nor any other spare capacity: the Readies queue, the read rounds
    // (one per heartbeat while awake), the log's slots.
    assert_eq!(l.spare_capacity_bytes(), 0);
}

#[test]
fn a_quiesced_follower_holds_no_spare_queue_memory() {
    let mut f = follower();
    // Traffic grows its queues: more entries, Readies not yet durable.
    for i in 2..=6 {
        f.step(msg(
            1,
            2,
            1,
            Body::Append {
                prev_index: i - 1,
                prev_term: 1,
                entries: vec![ent(i, 1)],
                commit: i - 1,
            },
        ));
        let _ = f.ready();
    }
    persist(&mut f);
    assert!(f.spare_capacity_bytes() > 0, "the queues grew while awake");
    f.step(msg(1, 2, 1, Body::Quiesce { commit: 6 }));
    assert!(f.quiesced());
    persist(&mut f);
    assert_eq!(f.spare_capacity_bytes(), 0);
}

/// Follower `id` of a 5-voter group led by 1, quiesced.
fn quiesced_follower_of_five(id: ReplicaId) -> RawNode {
    let mut f = follower_of(id, &[1, 2, 3, 4, 5]);
    f.step(msg(1, id, 1, Body::Quiesce { commit: 1 }));
    f.ready();
    assert!(f.quiesced());
    f
}

#[test]
fn the_voters_left_after_a_quiesced_leader_campaign_in_turn_by_id() {
    // Leader 1 reported unreachable: 2 at its next tick, then 3, 4, 5 one
    // tick apart from half an election timeout (5 ticks) on.
    let mut at = Vec::new();
    for id in 2..=5 {
        let mut f = quiesced_follower_of_five(id);
        f.report_unreachable(1);
        assert!(!f.quiesced());
        let mut ticks = 0;
        while f.role() == Role::Follower {
            f.tick();
            ticks += 1;
            assert!(
                ticks <= 10,
                "voter {id}: no campaign within an election timeout"
            );
        }
        assert_eq!(f.role(), Role::PreCandidate);
        at.push(ticks);
    }
    assert_eq!(at, vec![1, 6, 7, 8]);
}
