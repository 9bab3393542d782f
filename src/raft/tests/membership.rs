//! Membership changes, learners, joint consensus.

use super::*;

#[test]
fn a_learner_never_counts_toward_commit_and_never_campaigns() {
    let mut l = leader_with(&[1, 2, 3], &[4]);
    let (idx, _) = l.propose(Bytes::from_static(b"x")).unwrap();
    persist(&mut l);
    ack(&mut l, 4, idx);
    assert_eq!(
        l.commit_index(),
        1,
        "leader + learner is not a quorum of 3 voters"
    );
    ack(&mut l, 2, idx);
    assert_eq!(l.commit_index(), idx);
    // The learner itself: no campaign however long it waits, and its own
    // vote request never goes out.
    let mut c = cfg(4, &[1, 2, 3]);
    c.learners = vec![4];
    let mut learner = RawNode::new(c.validate().unwrap());
    for _ in 0..1000 {
        learner.tick();
    }
    assert_eq!(learner.role(), Role::Follower);
    assert!(learner
        .ready()
        .messages
        .iter()
        .all(|m| matches!(m.body, Body::MemberCheck { .. })));
}

/// `MEMBER_CHECK_ELECTIONS`: a learner that hears from no leader for that
/// many election timeouts asks the voters (and its leader, if another)
/// whether it is still a member, and again after as many (one check
/// however many intervals a stalled host skipped); one that hears its leader's heartbeats never asks. A
/// learner forgotten by its group (removed after it appended the change
/// but before it learned its commit) otherwise waits forever: the chaos
/// test of the balancer, seed 2, found one still holding its replica.
#[test]
fn a_learner_left_without_word_from_its_leader_asks_whether_it_is_a_member() {
    let mut c = cfg(4, &[1, 2, 3]);
    c.learners = vec![4];
    let interval = c.election_ticks * MEMBER_CHECK_ELECTIONS;
    let mut learner = RawNode::new(c.validate().unwrap());
    let checks = |n: &mut RawNode| -> Vec<(ReplicaId, Index)> {
        persist(n)
            .messages
            .iter()
            .filter_map(|m| match m.body {
                Body::MemberCheck { conf_index } => Some((m.to, conf_index)),
                _ => None,
            })
            .collect()
    };
    for _ in 1..interval {
        learner.tick();
    }
    assert_eq!(checks(&mut learner), vec![]);
    learner.tick();
    assert_eq!(checks(&mut learner), vec![(1, 0), (2, 0), (3, 0)]);
    // Its leader heard once: the next check comes an interval later, to
    // the voters still (the leader it remembers may be gone for good).
    learner.step(msg(
        1,
        4,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    for _ in 1..interval {
        learner.tick();
    }
    assert_eq!(checks(&mut learner), vec![]);
    learner.tick();
    assert_eq!(checks(&mut learner), vec![(1, 0), (2, 0), (3, 0)]);
    assert_eq!(learner.stats().member_checks_sent, 6);
    // Ten intervals at once (a stalled host): one check, not ten.
    learner.clock().advance(10 * u64::from(interval));
    learner.advance(true);
    assert_eq!(checks(&mut learner).len(), 3);
    // Heartbeats every other tick: it never asks.
    for i in 0..3 * interval {
        learner.tick();
        if i % 2 == 0 {
            let round = 2 + u64::from(i);
            learner.step(msg(1, 4, 1, Body::Heartbeat { commit: 0, round }));
        }
    }
    assert_eq!(checks(&mut learner), vec![]);
    // A voter never asks: it campaigns.
    let mut v = node(2, &[1, 2, 3]);
    for _ in 0..3 * interval {
        v.tick();
    }
    assert_eq!(checks(&mut v), vec![]);
    assert_eq!(v.stats().member_checks_sent, 0);
}

#[test]
fn joint_configuration_needs_a_quorum_of_both_old_and_new_voters() {
    let mut l = leader_with(&[1, 2, 3], &[]);
    // 1,2,3 -> 1,4,5: joint (old {1,2,3}, new {1,4,5}).
    let cc = ConfChange {
        ops: vec![
            voter(4),
            voter(5),
            ConfChangeOp::Remove(2),
            ConfChangeOp::Remove(3),
        ],
    };
    // Removing 2 of 3 old voters at once is refused...
    assert!(matches!(
        l.propose_conf_change(cc),
        Err(ConfChangeError::RemovesMajority {
            removed: 2,
            voters: 3
        })
    ));
    // ...one at a time is fine: 1,2,3 -> 1,2,4 (joint).
    let cc = ConfChange {
        ops: vec![voter(4), ConfChangeOp::Remove(3)],
    };
    // Adding three voters never heard from: the new six could not reach a quorum.
    let three = ConfChange {
        ops: vec![voter(4), voter(5), voter(6)],
    };
    assert_eq!(
        l.propose_conf_change(three),
        Err(ConfChangeError::QuorumUnreachable {
            active: 3,
            voters: 6
        })
    );
    // An answer from a non-member is ignored.
    l.step(msg(4, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert!(l.progress(4).is_none());
    // Add 4 as a learner, catch it up, then swap.
    assert_eq!(l.conf_index(), 0, "the initial membership");
    let (r, i, _) = l.add_learner(4).unwrap();
    assert_eq!(r, 4, "the group's next replica id");
    persist(&mut l);
    assert_eq!(l.conf_index(), 0, "appended, not applied: not in force");
    ack(&mut l, 2, i);
    persist(&mut l);
    assert!(l.conf().is_learner(4));
    assert_eq!(l.conf_index(), i, "in force from its entry's index");
    ack(&mut l, 4, i);
    let (j, _) = l.propose_conf_change(cc).unwrap();
    persist(&mut l);
    // Node 3 acks: {1,3} is a majority of the old voters {1,2,3}, but of the
    // new voters {1,2,4} only 1 holds it: the joint entry must not commit.
    // (The joint configuration takes effect when applied; its own entry is
    // committed under the old one, as in etcd/raft.)
    ack(&mut l, 3, j);
    assert_eq!(
        l.commit_index(),
        j,
        "entering joint commits under the old voters"
    );
    persist(&mut l);
    assert!(l.conf().is_joint(), "the joint entry applied");
    // The leader proposed leaving the joint configuration by itself.
    let leave = l.last_index();
    persist(&mut l);
    // Old-only quorum {1,3}: not enough while joint.
    ack(&mut l, 3, leave);
    assert!(
        l.commit_index() < leave,
        "a quorum of the old voters alone cannot commit while joint"
    );
    ack(&mut l, 4, leave);
    assert_eq!(
        l.commit_index(),
        leave,
        "old 1+3 and new 1+4: both majorities"
    );
    persist(&mut l);
    assert!(!l.conf().is_joint());
    assert_eq!(l.conf().voters, vec![1, 2, 4]);
    assert_eq!(l.conf_index(), leave);
}

#[test]
fn joint_quorum_in_the_new_voters_alone_cannot_commit() {
    let mut l = leader_with(&[1, 2, 3], &[4]);
    ack(&mut l, 4, 1);
    l.step(msg(4, 1, 1, Body::HeartbeatResp { round: 0 }));
    let (j, _) = l
        .propose_conf_change(ConfChange {
            ops: vec![voter(4), ConfChangeOp::Remove(3)],
        })
        .unwrap();
    persist(&mut l);
    ack(&mut l, 2, j);
    persist(&mut l);
    assert!(l.conf().is_joint());
    let leave = l.last_index();
    persist(&mut l);
    ack(&mut l, 4, leave);
    // New {1,2,4}: 1 and 4 hold it; old {1,2,3}: only 1. No commit.
    assert!(l.commit_index() < leave);
    ack(&mut l, 2, leave);
    assert_eq!(l.commit_index(), leave);
}

#[test]
fn removing_the_leader_it_leads_until_the_change_commits_then_hands_over() {
    let mut l = leader_with(&[1, 2, 3], &[]);
    let (j, _) = l.remove_replica(1).unwrap();
    persist(&mut l);
    ack(&mut l, 2, j);
    persist(&mut l);
    assert!(l.conf().is_joint());
    assert_eq!(
        l.role(),
        Role::Leader,
        "still leads while joint (counts in the old configuration)"
    );
    let leave = l.last_index();
    persist(&mut l);
    // New voters {2,3} must both ack; the leader does not count in the new set.
    ack(&mut l, 2, leave);
    assert!(l.commit_index() < leave);
    ack(&mut l, 3, leave);
    assert_eq!(l.commit_index(), leave);
    let rd = persist(&mut l);
    assert!(!l.promotable());
    // Removed: it hands over to the most caught-up voter (3, by id among
    // equals) and takes no proposal meanwhile.
    assert_eq!(l.role(), Role::Leader);
    assert_eq!(l.transferee(), Some(3));
    assert!(rd
        .messages
        .iter()
        .any(|m| m.to == 3 && m.body == Body::TimeoutNow));
    assert!(l.propose(Bytes::from_static(b"x")).is_err());
    // The successor's higher term ends it; a removed node never campaigns.
    l.step(msg(
        3,
        1,
        l.term() + 1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    assert_eq!(l.role(), Role::Follower);
    for _ in 0..100 {
        l.tick();
    }
    assert_eq!(l.role(), Role::Follower, "a removed node never campaigns");
}

/// A removed leader whose chosen successor never takes over (crashed: its
/// match stays where it was) tries another voter after the transfer times
/// out, instead of the same one forever (found by review).
#[test]
fn a_removed_leader_tries_another_successor_when_one_does_not_take_over() {
    let mut l = leader_with(&[1, 2, 3, 4], &[]);
    let (j, _) = l.remove_replica(1).unwrap();
    persist(&mut l);
    for v in [2, 3, 4] {
        ack(&mut l, v, j);
    }
    persist(&mut l);
    let leave = l.last_index();
    persist(&mut l);
    for v in [2, 3, 4] {
        ack(&mut l, v, leave);
    }
    persist(&mut l);
    assert_eq!(l.role(), Role::Leader);
    let first = l.transferee().expect("handing over");
    let mut next = first;
    for _ in 0..200 {
        l.tick();
        persist(&mut l);
        // Voters other than the first keep answering heartbeats.
        for v in [2, 3, 4].into_iter().filter(|&v| v != first) {
            l.step(msg(v, 1, l.term(), Body::HeartbeatResp { round: 0 }));
        }
        if let Some(t) = l.transferee() {
            if t != first {
                next = t;
                break;
            }
        }
    }
    assert_ne!(next, first, "still handing over to {first} only");
    assert_eq!(l.role(), Role::Leader);
}

/// Found by the simulator (wiped-disk sweep, 5 nodes, seed 166): leader 1
/// removed itself from {1,2,3,4} while voter 4 was gone for good. Voters 2
/// and 3 acknowledged the entry that leaves the joint configuration, and
/// 1 had appended one more entry they lacked. It stepped down at once
/// when the leave applied: 2 and 3, not told it committed, still counted
/// the joint configuration and needed 1's vote (or 4's), which 1 refused
/// for its longer log, and 1 never campaigns. Now it leads until a
/// successor does: it brings one voter up to date and tells it to
/// campaign, and its heartbeats tell the others the leave committed.
#[test]
fn a_removed_leader_hands_over_so_the_group_never_waits_for_its_vote() {
    let mut l = leader_with(&[1, 2, 3, 4], &[]);
    let (j, _) = l.remove_replica(1).unwrap();
    persist(&mut l);
    ack(&mut l, 2, j);
    ack(&mut l, 3, j);
    persist(&mut l);
    let leave = l.last_index();
    assert!(l.conf().is_joint());
    // Still a voter (outgoing): it takes this one.
    let (extra, _) = l.propose(Bytes::from_static(b"late")).unwrap();
    assert_eq!(extra, leave + 1);
    persist(&mut l);
    ack(&mut l, 2, leave);
    ack(&mut l, 3, leave);
    assert_eq!(l.commit_index(), leave);
    let rd = persist(&mut l);
    assert!(!l.conf().is_joint() && !l.promotable());
    assert_eq!(l.role(), Role::Leader, "leads until a successor does");
    // 3 lacks the extra entry: no TimeoutNow before it has it.
    assert_eq!(l.transferee(), Some(3));
    assert!(!rd.messages.iter().any(|m| m.body == Body::TimeoutNow));
    ack(&mut l, 3, extra);
    let rd = persist(&mut l);
    assert!(rd
        .messages
        .iter()
        .any(|m| m.to == 3 && m.body == Body::TimeoutNow));
    // Meanwhile its heartbeats tell 2 that the leave committed.
    let mut told = false;
    for _ in 0..10 {
        l.tick();
        let rd = persist(&mut l);
        told |= rd.messages.iter().any(|m| {
            m.to == 2 && matches!(m.body, Body::Heartbeat { commit, .. } if commit >= leave)
        });
    }
    assert!(told, "voter 2 learns the leave committed");
    // 3 campaigns (a transfer) with 1's log: 1 votes for it.
    l.step(msg(
        3,
        1,
        l.term() + 1,
        Body::Vote {
            last_index: extra,
            last_term: l.term(),
            transfer: true,
        },
    ));
    let rd = persist(&mut l);
    assert_eq!(l.role(), Role::Follower);
    assert!(rd
        .persisted_messages
        .iter()
        .chain(&rd.messages)
        .any(|m| m.to == 3 && m.body == Body::VoteResp { reject: false }));
}

#[test]
fn membership_change_refusals() {
    // Adding a node needs a snapshot to seed it with.
    let mut l = committed_leader(false);
    assert_eq!(l.add_learner(4), Err(ConfChangeError::NoSnapshot(4)));
    let mut f = node(2, &[1, 2, 3]);
    assert!(matches!(
        f.add_learner(4),
        Err(ConfChangeError::NotLeader { .. })
    ));
    // A new leader before its first commit.
    let mut n = node(1, &[1, 2, 3]);
    win_election(&mut n, 2);
    assert_eq!(n.add_learner(4), Err(ConfChangeError::NotReady));
    // One at a time.
    let mut l = leader_with(&[1, 2, 3], &[]);
    let (r, i, _) = l.add_learner(4).unwrap();
    assert_eq!(r, 4, "the group's next replica id");
    assert_eq!(
        l.add_learner(5),
        Err(ConfChangeError::InProgress { pending: i })
    );
    persist(&mut l);
    ack(&mut l, 2, i);
    persist(&mut l);
    // A learner far behind cannot be promoted.
    let mut c = cfg(1, &[1, 2, 3]);
    c.promote_lag_entries_max = 2;
    let _ = c;
    assert!(matches!(
        l.promote_learner(5),
        Err(ConfChangeError::NotMember(5))
    ));
    assert!(matches!(
        l.remove_replica(9),
        Err(ConfChangeError::NotMember(9))
    ));
    l.transfer_leader(2).unwrap();
    assert_eq!(
        l.remove_replica(3),
        Err(ConfChangeError::TransferInProgress)
    );
}

#[test]
fn promotion_waits_until_the_learner_is_caught_up() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.learners = vec![4];
    c.promote_lag_entries_max = 3;
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 2);
    persist(&mut l);
    for _ in 0..10 {
        l.propose(Bytes::from_static(b"e")).unwrap();
    }
    persist(&mut l);
    ack(&mut l, 2, 11);
    persist(&mut l);
    assert!(matches!(
        l.promote_learner(4),
        Err(ConfChangeError::NotCaughtUp {
            id: 4,
            behind: 11,
            max: 3
        })
    ));
    ack(&mut l, 4, 9);
    l.step(msg(4, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert!(l.promote_learner(4).is_ok());
}

/// A learner that has acknowledged nothing (its seeding snapshot not yet
/// applied) is not promoted, however short the log: with a voter lost, the
/// joint quorum would need it. (Sim seed 219 with a wiped disk: learner 4
/// of a 12-entry log, never created on its node, was promoted while voter
/// 3's disk was wiped; no quorum of [1, 2, 3, 4] was left.)
#[test]
fn a_learner_that_acknowledged_nothing_is_not_promoted() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.learners = vec![4];
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 2);
    persist(&mut l);
    ack(&mut l, 2, 1);
    persist(&mut l);
    assert_eq!(l.promote_learner(4), Err(ConfChangeError::NotSeeded(4)));
    ack(&mut l, 4, 1);
    assert!(l.promote_learner(4).is_ok());
}

#[test]
fn a_joining_node_learns_the_membership_from_a_snapshot() {
    let mut c = RaftConfig::new(4, vec![]);
    c.seed = 1;
    let mut j = RawNode::new(c.validate().unwrap());
    assert!(!j.promotable());
    let conf = ConfState::new(&[1, 2, 3], &[4]);
    let data = [1u8, 2, 3];
    j.step(msg(
        1,
        4,
        3,
        Body::Snapshot {
            index: 50,
            term: 3,
            conf: conf.clone(),
            offset: 0,
            total: 3,
            crc: crc32fast::hash(&data),
            chunk: Bytes::copy_from_slice(&data),
        },
    ));
    let rd = j.ready();
    assert_eq!(rd.snapshot.unwrap().conf, conf);
    assert_eq!(j.conf(), &conf);
    assert!(!j.promotable(), "a learner");
}

#[test]
fn a_joining_node_waits_for_its_seed_snapshot_and_the_leader_sends_it() {
    // The joining node refuses entries: without the group's first
    // membership it could not apply the membership changes in them.
    let mut j = RawNode::new(RaftConfig::new(4, vec![]).validate().unwrap());
    j.step(msg(
        1,
        4,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 1)],
            commit: 1,
        },
    ));
    let rd = j.ready();
    assert!(rd.entries.is_empty());
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            4,
            1,
            1,
            Body::AppendResp {
                reject: true,
                index: 0,
                hint_index: 0,
                hint_term: 0
            }
        )]
    );
    // The leader adds it and seeds it with its snapshot, not the log.
    let mut l = leader_with(&[1, 2, 3], &[]);
    let (r, i, _) = l.add_learner(4).unwrap();
    assert_eq!(r, 4, "the group's next replica id");
    persist(&mut l);
    ack(&mut l, 2, i);
    persist(&mut l); // hands out the change: 4 becomes a learner
    assert!(l.conf().is_learner(4));
    let rd = l.ready();
    assert_eq!(
        snapshot_chunks(&rd, 4),
        vec![(1, 0, 5)],
        "seeded with the snapshot at 1: {:?} {:?}",
        rd.messages,
        l.progress(4)
    );
    assert!(
        appends(&rd).iter().all(|a| a.0 != 4),
        "no entries before the seed"
    );
}

#[test]
fn a_learners_vote_never_counts() {
    // A candidate counts only the voters of its membership: a learner's
    // grant (it may answer: its own view of the membership may be stale)
    // does not help it win.
    let mut c = cfg(1, &[1, 2, 3]);
    c.learners = vec![4];
    let mut n = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut n);
    assert_eq!(n.role(), Role::PreCandidate);
    let rd = n.ready();
    assert!(
        rd.messages.iter().all(|m| m.to != 4),
        "no vote request to a learner"
    );
    n.step(msg(4, 1, 1, Body::PreVoteResp { reject: false }));
    assert_eq!(
        n.role(),
        Role::PreCandidate,
        "a learner's grant does not count"
    );
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    assert_eq!(n.role(), Role::Candidate);
}

#[test]
fn a_node_that_is_a_learner_in_its_stale_view_still_answers_votes() {
    // Regression (sim seed 4683, 5 nodes): node 4, promoted in a joint
    // configuration it had not applied yet, ignored vote requests as a
    // "learner"; with the removed old leader refusing (longer log), the
    // outgoing majority could never form and the group stayed leaderless.
    let mut c = cfg(4, &[1, 2, 3]);
    c.learners = vec![4];
    let mut stale = RawNode::new(c.validate().unwrap());
    stale.step(msg(
        1,
        4,
        6,
        Body::Vote {
            last_index: 9,
            last_term: 5,
            transfer: false,
        },
    ));
    let rd = stale.ready();
    assert_eq!(
        rd.persisted_messages,
        vec![msg(4, 1, 6, Body::VoteResp { reject: false })]
    );
}

/// A membership change asked just after a check-quorum round, when every
/// follower's "heard from this round" flag has just been cleared, is not
/// refused as unreachable: activity counts over the last one to two
/// election timeouts. (Refused before: found by the simulator's
/// adding-a-node scenario once its schedule put the request right there.)
#[test]
fn a_change_right_after_a_check_quorum_round_sees_the_voters_that_answered() {
    let mut l = leader_with(&[1, 2, 3], &[]);
    for _ in 0..cfg(1, &[1, 2, 3]).election_ticks {
        l.tick();
    }
    assert_eq!(l.role(), Role::Leader, "the followers answered this round");
    assert!(
        l.progress(2).is_some_and(|p| !p.recent_active),
        "the round just ended"
    );
    l.add_learner(4)
        .expect("both followers answered within the last election timeout");
}

/// A leader elected in a joint configuration it applied as a follower
/// leaves it by itself once everything before its term applied (etcd's
/// auto-leave does the same). Before, only the leader that applied the
/// joint entry left it: a crash of that leader between applying the joint
/// entry and appending the leave left the group joint for good, and every
/// later membership change refused (`InJoint`): a replica move cut short
/// by a crash could never be finished. The simulator finds it too once
/// its final checks refuse a joint configuration after the heal phase
/// (5-node sweep, seed 860: voters [1,2,3], outgoing [1,2,3,6]).
#[test]
fn a_leader_elected_in_a_joint_configuration_leaves_it() {
    let mut f = node(2, &[1, 2, 3]);
    // Leader 1 swaps voter 3 for a new voter 4 in one joint change, and
    // the entry commits; then 1 is gone before it appends the leave.
    let swap = ConfChange {
        ops: vec![voter(4), ConfChangeOp::Remove(3)],
    };
    let e = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::ConfChange,
        data: Bytes::from(swap.encode()),
    };
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![e],
            commit: 1,
        },
    ));
    persist(&mut f);
    persist(&mut f);
    assert!(f.conf().is_joint(), "applied as a follower: {:?}", f.conf());
    // 2 wins with the grants of 3 and 4: a majority of {1,2,4} and of
    // {1,2,3}.
    tick_until_campaign(&mut f);
    let t = f.term() + 1;
    for p in [3, 4] {
        f.step(msg(p, 2, t, Body::PreVoteResp { reject: false }));
    }
    persist(&mut f);
    for p in [3, 4] {
        f.step(msg(p, 2, t, Body::VoteResp { reject: false }));
    }
    assert_eq!(f.role(), Role::Leader);
    persist(&mut f);
    let noop = f.last_index();
    // The no-op commits under both majorities, and applies.
    for p in [3, 4] {
        f.step(msg(
            p,
            2,
            f.term(),
            Body::AppendResp {
                reject: false,
                index: noop,
                hint_index: 0,
                hint_term: 0,
            },
        ));
    }
    assert_eq!(f.commit_index(), noop);
    persist(&mut f);
    assert_eq!(
        f.last_index(),
        noop + 1,
        "the new leader appended the entry that leaves the joint configuration"
    );
    persist(&mut f);
    for p in [3, 4] {
        f.step(msg(
            p,
            2,
            f.term(),
            Body::AppendResp {
                reject: false,
                index: noop + 1,
                hint_index: 0,
                hint_term: 0,
            },
        ));
    }
    persist(&mut f);
    assert!(!f.conf().is_joint(), "left: {:?}", f.conf());
    assert_eq!(f.conf().voters, vec![1, 2, 4]);
    assert_eq!(f.last_index(), noop + 1, "left once, not again");
}

/// A move's membership step: the learner promoted and the source removed
/// in one joint configuration, both halves of three voters, left at once.
#[test]
fn replace_voter_swaps_a_caught_up_learner_for_a_voter_through_one_joint_configuration() {
    let mut l = leader_with(&[1, 2, 3], &[4]);
    assert_eq!(l.replace_voter(4, 3), Err(ConfChangeError::NotSeeded(4)));
    assert_eq!(l.replace_voter(2, 3), Err(ConfChangeError::NotMember(2)));
    assert_eq!(l.replace_voter(4, 5), Err(ConfChangeError::NotMember(5)));
    let (idx, _) = l.propose(Bytes::from_static(b"x")).unwrap();
    persist(&mut l);
    for p in [2, 4] {
        ack(&mut l, p, idx);
    }
    persist(&mut l);
    let (j, _) = l.replace_voter(4, 3).unwrap();
    persist(&mut l);
    // Entering commits under the old voters alone ({1,2} of {1,2,3}).
    ack(&mut l, 2, j);
    persist(&mut l);
    let c = l.conf().clone();
    assert_eq!(
        (c.voters.clone(), c.voters_outgoing.clone()),
        (vec![1, 2, 4], vec![1, 2, 3])
    );
    assert!(c.learners.is_empty(), "{c:?}");
    let leave = l.last_index();
    assert_eq!(leave, j + 1, "left at once");
    persist(&mut l);
    ack(&mut l, 4, leave);
    ack(&mut l, 2, leave);
    persist(&mut l);
    assert!(!l.conf().is_joint());
    assert_eq!(l.conf().voters, vec![1, 2, 4]);
    assert_eq!(l.conf().node_of(3), None, "the source is out");
}
