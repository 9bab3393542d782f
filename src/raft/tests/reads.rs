//! ReadIndex, lease reads and leader transfer.

use super::*;

#[test]
fn read_index_on_the_leader_needs_one_quorum_round() {
    let mut l = committed_leader(false);
    l.read_index(7).unwrap();
    l.read_index(8).unwrap();
    let rd = l.ready();
    assert!(rd.read_states.is_empty(), "not confirmed yet");
    let rounds = heartbeat_rounds(&rd);
    assert_eq!(rounds.len(), 2, "one round for both reads");
    let r = rounds[0].1;
    // An answer to an older round does not confirm them.
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: r - 1 }));
    assert!(l.ready().read_states.is_empty());
    l.step(msg(3, 1, 1, Body::HeartbeatResp { round: r }));
    let rd = l.ready();
    assert_eq!(
        rd.read_states,
        vec![
            ReadState { ctx: 7, index: 1 },
            ReadState { ctx: 8, index: 1 }
        ]
    );
}

#[test]
fn reads_wait_for_the_first_commit_of_the_term() {
    let mut n = node(1, &[1, 2, 3]);
    win_election(&mut n, 2);
    persist(&mut n);
    n.read_index(1).unwrap();
    let rd = n.ready();
    assert!(
        heartbeat_rounds(&rd).is_empty(),
        "no round before the no-op commits"
    );
    ack(&mut n, 2, 1);
    let rd = n.ready();
    let r = heartbeat_rounds(&rd)[0].1;
    n.step(msg(2, 1, 1, Body::HeartbeatResp { round: r }));
    assert_eq!(n.ready().read_states, vec![ReadState { ctx: 1, index: 1 }]);
}

#[test]
fn read_index_on_a_follower_asks_the_leader() {
    let mut f = node(2, &[1, 2, 3]);
    assert_eq!(f.read_index(5), Err(ReadError::NoLeader));
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
    f.read_index(5).unwrap();
    assert_eq!(
        f.ready().messages,
        vec![msg(2, 1, 1, Body::ReadIndex { ctx: 5 })]
    );
    // The leader's side.
    let mut l = committed_leader(false);
    l.step(msg(2, 1, 1, Body::ReadIndex { ctx: 5 }));
    let r = heartbeat_rounds(&l.ready())[0].1;
    l.step(msg(3, 1, 1, Body::HeartbeatResp { round: r }));
    let rd = l.ready();
    assert!(rd.messages.contains(&msg(
        1,
        2,
        1,
        Body::ReadIndexResp {
            ctx: 5,
            index: 1,
            reject: false
        }
    )));
    f.step(msg(
        1,
        2,
        1,
        Body::ReadIndexResp {
            ctx: 5,
            index: 1,
            reject: false,
        },
    ));
    assert_eq!(f.ready().read_states, vec![ReadState { ctx: 5, index: 1 }]);
}

#[test]
fn losing_leadership_fails_pending_reads() {
    let mut l = committed_leader(false);
    l.read_index(9).unwrap();
    l.step(msg(3, 1, 1, Body::ReadIndex { ctx: 10 }));
    l.ready();
    l.step(msg(
        2,
        1,
        5,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
    ));
    let rd = l.ready();
    assert_eq!(rd.reads_failed, vec![9]);
    assert!(rd.messages.contains(&msg(
        1,
        3,
        1,
        Body::ReadIndexResp {
            ctx: 10,
            index: 0,
            reject: true
        }
    )));
}

#[test]
fn lease_reads_are_local_while_the_lease_holds_and_not_after() {
    let mut l = committed_leader(true);
    // No round acknowledged yet: ReadIndex path.
    l.read_index(1).unwrap();
    let r = heartbeat_rounds(&l.ready())[0].1;
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: r }));
    assert_eq!(l.ready().read_states.len(), 1);
    // Now the lease holds: served at once, no heartbeat round.
    assert!(l.lease_valid());
    l.read_index(2).unwrap();
    let rd = l.ready();
    assert_eq!(rd.read_states, vec![ReadState { ctx: 2, index: 1 }]);
    assert!(heartbeat_rounds(&rd).is_empty());
    // Lease = election_ticks - drift - 1 = 7 ticks after the acknowledged
    // round was sent; tick without acknowledgements until it runs out.
    for _ in 0..6 {
        l.tick();
    }
    assert!(l.lease_valid(), "6 ticks in: still valid");
    for _ in 0..1 {
        l.tick();
    }
    assert!(!l.lease_valid(), "lease must expire");
    l.ready();
    l.read_index(3).unwrap();
    assert!(
        l.ready().read_states.is_empty(),
        "expired lease: back to ReadIndex"
    );
}

/// The lease counts the ticks of real time its host has not advanced the
/// clock by yet (`Clock::lag`): a shard advances its clock at the start of
/// a turn only, and a lease read checked late in a long turn must not see
/// the time of the turn's start. Election timers do not count the lag.
#[test]
fn the_lease_counts_the_hosts_uncounted_ticks() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut l = committed_leader(true);
    let lag = Rc::new(Cell::new(0u64));
    let clock = crate::raft::Clock::new();
    let source = lag.clone();
    clock.set_lag_source(move || source.get());
    l.set_clock(clock.clone());
    l.read_index(1).unwrap();
    let r = heartbeat_rounds(&l.ready())[0].1;
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: r }));
    l.ready();
    assert!(l.lease_valid());
    // Lease = 7 ticks from the round: 6 counted and 0 uncounted hold ...
    for _ in 0..6 {
        l.tick();
    }
    assert!(l.lease_valid(), "6 ticks in: still valid");
    // ... but 6 counted and 1 that the host has not counted do not.
    lag.set(1);
    assert!(!l.lease_valid(), "a late check saw the turn's start");
    assert_eq!(l.lease_read_index(), None);
    let due = l.due_at();
    assert_eq!(l.clock().lag(), 1);
    assert_eq!(
        l.due_at(),
        due,
        "election and heartbeat timers ignore the lag"
    );
    lag.set(0);
    assert!(l.lease_valid());
}

#[test]
fn lease_reads_stop_during_a_transfer() {
    let mut l = committed_leader(true);
    l.read_index(1).unwrap();
    let r = heartbeat_rounds(&l.ready())[0].1;
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: r }));
    l.ready();
    assert!(l.lease_valid());
    l.transfer_leader(3).unwrap();
    assert!(!l.lease_valid());
}

#[test]
fn transfer_to_an_up_to_date_target_sends_timeout_now_and_refuses_proposals() {
    let mut l = committed_leader(false);
    assert_eq!(l.transfer_leader(1), Err(TransferError::TargetIsSelf));
    assert_eq!(l.transfer_leader(9), Err(TransferError::UnknownTarget(9)));
    l.transfer_leader(2).unwrap();
    assert!(l.ready().messages.contains(&msg(1, 2, 1, Body::TimeoutNow)));
    assert_eq!(
        l.propose(Bytes::new()),
        Err(ProposeError::TransferInProgress { to: 2 })
    );
}

#[test]
fn transfer_waits_for_the_target_to_catch_up() {
    let mut l = committed_leader(false);
    l.transfer_leader(3).unwrap();
    let rd = l.ready();
    assert!(!rd.messages.iter().any(|m| m.body == Body::TimeoutNow));
    ack(&mut l, 3, 1);
    assert!(l.ready().messages.contains(&msg(1, 3, 1, Body::TimeoutNow)));
}

#[test]
fn transfer_is_abandoned_after_an_election_timeout() {
    let mut l = committed_leader(false);
    l.transfer_leader(3).unwrap();
    for _ in 0..10 {
        l.step(msg(2, 1, 1, Body::HeartbeatResp { round: 0 }));
        l.step(msg(3, 1, 1, Body::HeartbeatResp { round: 0 }));
        l.tick();
    }
    assert_eq!(l.transferee(), None);
    assert_eq!(l.role(), Role::Leader);
    assert!(l.propose(Bytes::new()).is_ok());
}

#[test]
fn timeout_now_starts_an_election_that_followers_in_lease_accept() {
    let mut t = node(2, &[1, 2, 3]);
    t.step(msg(
        1,
        2,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    t.ready();
    t.step(msg(1, 2, 1, Body::TimeoutNow));
    assert_eq!((t.role(), t.term()), (Role::Candidate, 2));
    let rd = t.ready();
    assert!(rd.messages.contains(&msg(
        2,
        3,
        2,
        Body::Vote {
            last_index: 0,
            last_term: 0,
            transfer: true
        }
    )));
    // Node 3 heard from leader 1 just now, yet grants a transfer vote.
    let mut f = node(3, &[1, 2, 3]);
    f.step(msg(
        1,
        3,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    f.ready();
    f.step(msg(
        2,
        3,
        2,
        Body::Vote {
            last_index: 0,
            last_term: 0,
            transfer: true,
        },
    ));
    assert_eq!(
        f.ready().persisted_messages,
        vec![msg(3, 2, 2, Body::VoteResp { reject: false })]
    );
    // TimeoutNow from anyone but the leader is ignored.
    let mut g = node(3, &[1, 2, 3]);
    g.step(msg(
        1,
        3,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    g.step(msg(2, 3, 1, Body::TimeoutNow));
    assert_eq!(g.role(), Role::Follower);
}

#[test]
fn a_restarted_node_refuses_votes_for_an_election_timeout() {
    let c = cfg(2, &[1, 2, 3]).validate().unwrap();
    let mut n = RawNode::restart(
        c,
        HardState {
            term: 3,
            vote: 0,
            commit: 0,
        },
        vec![],
        0,
    );
    n.step(msg(
        3,
        2,
        4,
        Body::Vote {
            last_index: 9,
            last_term: 3,
            transfer: false,
        },
    ));
    let rd = n.ready();
    assert!(
        rd.persisted_messages.is_empty(),
        "it may still be in a live leader's lease"
    );
    assert_eq!(n.term(), 3);
}

#[test]
fn lease_config_is_validated() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.lease_reads = true;
    c.check_quorum = false;
    assert_eq!(
        c.clone().validate().unwrap_err(),
        ConfigError::LeaseWithoutCheckQuorum
    );
    c.check_quorum = true;
    c.lease_drift_ticks = 10;
    assert!(matches!(
        c.validate().unwrap_err(),
        ConfigError::LeaseDrift { .. }
    ));
}

#[test]
fn a_leader_in_lease_ignores_higher_term_vote_requests() {
    // Regression (sim scenario test): a rejoining node's pre-vote was granted
    // by the leader itself, then its vote request deposed that leader.
    let mut l = committed_leader(false);
    l.step(msg(
        3,
        1,
        2,
        Body::PreVote {
            last_index: 9,
            last_term: 1,
        },
    ));
    l.step(msg(
        3,
        1,
        2,
        Body::Vote {
            last_index: 9,
            last_term: 1,
            transfer: false,
        },
    ));
    let rd = l.ready();
    assert!(rd
        .messages
        .iter()
        .all(|m| !matches!(m.body, Body::PreVoteResp { .. })));
    assert!(rd.persisted_messages.is_empty());
    assert_eq!((l.role(), l.term()), (Role::Leader, 1));
}

/// A new leader's lease says no one else leads, not that its commit index
/// is current: until an entry of its term commits, what its predecessor
/// committed (and a client was told) may lie above its commit index, so a
/// lease read must wait as ReadIndex does. (The simulator found the node's
/// lease mode serving such a read, stale, when it first drove the node's
/// own read path.)
#[test]
fn a_new_leader_serves_no_lease_read_before_an_entry_of_its_term_commits() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.lease_reads = true;
    let mut n = RawNode::new(c.validate().unwrap());
    // Follower of 2 in term 1: entries 1 and 2, told only 1 is committed
    // (2 may be committed on 2 and 3 already).
    n.step(msg(
        2,
        1,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 1), ent(2, 1)],
            commit: 1,
        },
    ));
    persist(&mut n);
    win_election(&mut n, 3);
    persist(&mut n);
    assert_eq!((n.role(), n.term(), n.commit_index()), (Role::Leader, 2, 1));
    // Heartbeat rounds acknowledged by a quorum: the lease holds.
    for _ in 0..10 {
        n.tick();
        let rd = persist(&mut n);
        for (to, round) in heartbeat_rounds(&rd) {
            n.step(msg(to, 1, 2, Body::HeartbeatResp { round }));
        }
        if n.lease_valid() {
            break;
        }
    }
    assert!(n.lease_valid(), "the lease never held");
    assert_eq!(
        n.lease_read_index(),
        None,
        "served before its no-op committed"
    );
    // Its no-op (3) commits: entry 2 is committed with it, and reads by
    // lease see it.
    ack(&mut n, 3, 3);
    assert_eq!(n.commit_index(), 3);
    assert_eq!(n.lease_read_index(), Some(3));
}
