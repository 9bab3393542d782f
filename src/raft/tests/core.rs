//! Elections, replication, persistence, flow control.
//!
//! Over 800 lines: one test per rule of the core's common path, each a
//! few lines of input and exact output; the other topics have files of
//! their own.

use super::*;

#[test]
fn election_timeout_sends_pre_votes_without_changing_term() {
    let mut n = node(1, &[1, 2, 3]);
    tick_until_campaign(&mut n);
    let rd = n.ready();
    assert_eq!(n.term(), 0, "pre-vote changes no term");
    assert!(rd.hard_state.is_none());
    assert_eq!(
        rd.messages,
        vec![
            msg(
                1,
                2,
                1,
                Body::PreVote {
                    last_index: 0,
                    last_term: 0
                }
            ),
            msg(
                1,
                3,
                1,
                Body::PreVote {
                    last_index: 0,
                    last_term: 0
                }
            ),
        ]
    );
}

#[test]
fn pre_vote_quorum_starts_a_real_election_and_self_vote_waits_for_persistence() {
    let mut n = node(1, &[1, 2, 3]);
    tick_until_campaign(&mut n);
    n.ready();
    n.step(msg(3, 1, 1, Body::PreVoteResp { reject: false }));
    assert_eq!(n.role(), Role::Candidate);
    assert_eq!(n.term(), 1);
    // A peer's vote arrives before our own vote is durable: not yet a quorum.
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    assert_eq!(n.role(), Role::Candidate, "own vote not durable yet");
    let rd = n.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 1,
            vote: 1,
            commit: 0
        })
    );
    assert_eq!(
        rd.messages,
        vec![
            msg(
                1,
                2,
                1,
                Body::Vote {
                    last_index: 0,
                    last_term: 0,
                    transfer: false
                }
            ),
            msg(
                1,
                3,
                1,
                Body::Vote {
                    last_index: 0,
                    last_term: 0,
                    transfer: false
                }
            ),
        ]
    );
    n.on_persisted(rd.token());
    assert_eq!(n.role(), Role::Leader);
}

#[test]
fn vote_is_sent_only_after_persistence_and_once_per_term() {
    let mut n = node(2, &[1, 2, 3]);
    n.step(msg(
        1,
        2,
        5,
        Body::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let rd = n.ready();
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages,
        vec![msg(2, 1, 5, Body::VoteResp { reject: false })]
    );
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 5,
            vote: 1,
            commit: 0
        })
    );
    n.on_persisted(rd.token());
    // Another candidate of the same term is refused.
    n.step(msg(
        3,
        2,
        5,
        Body::Vote {
            last_index: 9,
            last_term: 4,
            transfer: false,
        },
    ));
    let rd = n.ready();
    assert_eq!(
        rd.persisted_messages,
        vec![msg(2, 3, 5, Body::VoteResp { reject: true })]
    );
}

#[test]
fn a_longer_but_stale_log_cannot_win_a_vote() {
    let mut c = cfg(2, &[1, 2, 3]);
    c.check_quorum = false; // no post-restart quiet period: answer at once
    let mut n = RawNode::restart(
        c.validate().unwrap(),
        HardState {
            term: 3,
            vote: 0,
            commit: 0,
        },
        vec![ent(1, 1), ent(2, 3)],
        0,
    );
    // Candidate with 5 entries of term 2 < our last term 3.
    n.step(msg(
        1,
        2,
        4,
        Body::Vote {
            last_index: 5,
            last_term: 2,
            transfer: false,
        },
    ));
    let rd = n.ready();
    assert_eq!(
        rd.persisted_messages,
        vec![msg(2, 1, 4, Body::VoteResp { reject: true })]
    );
}

#[test]
fn new_leader_sends_its_noop_to_every_follower_before_its_own_write_is_durable() {
    let mut n = node(1, &[1, 2, 3]);
    win_election(&mut n, 2);
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(rd.entries[0].kind, EntryKind::Noop);
    assert_eq!(
        appends(&rd),
        vec![(2, 0, 0, vec![(1, 1)], 0), (3, 0, 0, vec![(1, 1)], 0)]
    );
    assert_eq!(rd.soft_state.unwrap().role, Role::Leader);
}

#[test]
fn follower_acks_only_after_persistence_and_commits_only_what_it_holds() {
    let mut n = node(2, &[1, 2, 3]);
    n.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 1), ent(2, 1)],
            commit: 9,
        },
    ));
    let rd = n.ready();
    assert!(rd.messages.is_empty(), "no ack before durability");
    assert_eq!(rd.entries.len(), 2);
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            2,
            1,
            1,
            Body::AppendResp {
                reject: false,
                index: 2,
                hint_index: 0,
                hint_term: 0
            }
        )]
    );
    assert_eq!(
        n.commit_index(),
        2,
        "commit capped at the last entry the message proved"
    );
    assert!(rd.committed.is_empty(), "not applied before it is durable");
    n.on_persisted(rd.token());
    let rd = n.ready();
    assert_eq!(rd.committed.len(), 2);
}

#[test]
fn delayed_or_duplicated_append_never_truncates() {
    let mut n = node(2, &[1, 2, 3]);
    let full = Body::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![ent(1, 1), ent(2, 1), ent(3, 1)],
        commit: 0,
    };
    n.step(msg(1, 2, 1, full));
    persist(&mut n);
    let old = Body::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![ent(1, 1)],
        commit: 0,
    };
    n.step(msg(1, 2, 1, old));
    let rd = persist(&mut n);
    assert_eq!(n.last_index(), 3);
    assert!(rd.entries.is_empty());
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            2,
            1,
            1,
            Body::AppendResp {
                reject: false,
                index: 1,
                hint_index: 0,
                hint_term: 0
            }
        )]
    );
}

#[test]
fn rejection_carries_a_hint_and_the_leader_skips_a_whole_term() {
    // Follower: terms [1,1,2,2,2]; leader probes at prev (7, 3).
    let mut f = RawNode::restart(
        cfg(2, &[1, 2, 3]).validate().unwrap(),
        HardState {
            term: 3,
            vote: 0,
            commit: 0,
        },
        vec![ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 2)],
        0,
    );
    f.step(msg(
        1,
        2,
        3,
        Body::Append {
            prev_index: 7,
            prev_term: 3,
            entries: vec![],
            commit: 0,
        },
    ));
    let rd = f.ready();
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            2,
            1,
            3,
            Body::AppendResp {
                reject: true,
                index: 7,
                hint_index: 5,
                hint_term: 2
            }
        )]
    );
}

#[test]
fn leader_backtracks_with_the_hint_then_pipelines() {
    let mut l = leader();
    // Follower 2 rejects the probe at prev 0? It cannot; make it accept.
    let rd = l.ready();
    assert!(appends(&rd).is_empty(), "probes are out; wait for answers");
    ack(&mut l, 2, 1);
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Replicate);
    assert_eq!(
        l.commit_index(),
        1,
        "leader durable + one follower = quorum of 3"
    );
    for _ in 0..3 {
        l.propose(Bytes::from_static(b"abc")).unwrap();
    }
    let rd = l.ready();
    let a = appends(&rd);
    // One batched append to the replicating follower; none to the probing one.
    assert_eq!(a, vec![(2, 1, 1, vec![(2, 1), (3, 1), (4, 1)], 1)]);
}

#[test]
fn figure_8_old_term_entries_commit_only_through_a_current_term_entry() {
    // Leader of term 3 whose log has an uncommitted entry of term 2 at index 2.
    let c = cfg(1, &[1, 2, 3]).validate().unwrap();
    let mut l = RawNode::restart(
        c,
        HardState {
            term: 2,
            vote: 1,
            commit: 1,
        },
        vec![ent(1, 1), ent(2, 2)],
        0,
    );
    win_election(&mut l, 2);
    assert_eq!((l.role(), l.term()), (Role::Leader, 3));
    // Follower 2 acks index 2 (the term-2 entry) but not yet the no-op.
    ack(&mut l, 2, 2);
    persist(&mut l); // leader's own no-op (index 3) durable
    assert_eq!(
        l.commit_index(),
        1,
        "a term-2 entry on a quorum is not committed by counting"
    );
    ack(&mut l, 2, 3);
    assert_eq!(l.commit_index(), 3);
}

#[test]
fn leaders_own_match_advances_only_when_its_write_is_reported() {
    let mut n = node(1, &[1, 2, 3]);
    win_election(&mut n, 2);
    let rd = n.ready(); // carries the no-op; not persisted yet
    ack(&mut n, 2, 1);
    assert_eq!(
        n.commit_index(),
        0,
        "one follower's ack alone is not a quorum of 3"
    );
    n.on_persisted(rd.token());
    assert_eq!(
        n.commit_index(),
        1,
        "leader's durable copy + follower 2 = quorum"
    );
}

#[test]
fn batching_and_the_inflight_window() {
    let mut c = cfg(1, &[1, 2]);
    c.msg_bytes_max = 100;
    c.inflight_msgs_max = 3;
    c.inflight_bytes_max = 1 << 20;
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 2);
    persist(&mut l);
    ack(&mut l, 2, 1);
    // 20 proposals of 26 bytes each (2 + overhead 24): 3 per message of 100 bytes.
    for _ in 0..20 {
        l.propose(Bytes::from_static(b"ab")).unwrap();
    }
    let rd = persist(&mut l);
    let a = appends(&rd);
    assert_eq!(a.len(), 3, "window of 3 messages");
    assert_eq!(
        a.iter().map(|x| x.3.len()).collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
    assert!(
        appends(&l.ready()).is_empty(),
        "paused while the window is full"
    );
    // An ack for the first message frees one slot: exactly one more goes.
    ack(&mut l, 2, 4);
    let a = appends(&l.ready());
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].1, 10, "continues after the last sent index");
}

#[test]
fn inflight_bytes_bound_pauses_too() {
    let mut c = cfg(1, &[1, 2]);
    c.msg_bytes_max = 1000;
    c.inflight_msgs_max = 100;
    c.inflight_bytes_max = 2000;
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 2);
    persist(&mut l);
    ack(&mut l, 2, 1);
    for _ in 0..10 {
        l.propose(Bytes::from(vec![0u8; 476])).unwrap(); // 500 bytes each
    }
    let a = appends(&persist(&mut l));
    assert_eq!(a.len(), 2, "2 x 1000 bytes fill the 2000-byte window");
}

#[test]
fn persistence_report_for_overwritten_entries_does_not_mark_new_ones_durable() {
    // The ABA race of asynchronous storage writes.
    let mut f = node(2, &[1, 2, 3]);
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 1), ent(2, 1), ent(3, 1)],
            commit: 1,
        },
    ));
    let rd1 = f.ready(); // write of 1..3 @ term 1 in flight
                         // A new leader of term 2 overwrites index 2.. before that write completes.
    f.step(msg(
        3,
        2,
        2,
        Body::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![ent(2, 2), ent(3, 2)],
            commit: 1,
        },
    ));
    let rd2 = f.ready();
    assert_eq!(
        rd2.entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect::<Vec<_>>(),
        vec![(2, 2), (3, 2)]
    );
    f.on_persisted(rd1.token()); // reports (3, term 1): must not cover (3, term 2)
    assert_eq!(
        f.persisted_index(),
        0,
        "index 3 holds term 2 now; report names term 1"
    );
    f.on_persisted(rd2.token());
    assert_eq!(f.persisted_index(), 3);
}

#[test]
fn proposals_on_a_follower_get_the_leader_hint() {
    let mut f = node(2, &[1, 2, 3]);
    assert_eq!(
        f.propose(Bytes::new()),
        Err(ProposeError::NotLeader { leader: None })
    );
    f.step(msg(
        1,
        2,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    assert_eq!(
        f.propose(Bytes::new()),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
}

#[test]
fn uncommitted_bytes_bound_refuses_proposals_at_once() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.uncommitted_bytes_max = 1000;
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 2);
    let mut ok = 0;
    let err = loop {
        match l.propose(Bytes::from(vec![0u8; 76])) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(ok, 10);
    assert_eq!(
        err,
        ProposeError::Backpressure {
            uncommitted_bytes: 1000,
            max: 1000
        }
    );
    // Committing frees room.
    persist(&mut l);
    ack(&mut l, 2, 11);
    assert_eq!(l.uncommitted_bytes(), 0);
    assert!(l.propose(Bytes::from(vec![0u8; 76])).is_ok());
}

#[test]
fn check_quorum_leader_steps_down_without_a_quorum() {
    let mut l = leader();
    for _ in 0..2 * 10 + 1 {
        l.tick();
        l.ready();
    }
    assert_eq!(l.role(), Role::Follower);
    assert_eq!(l.leader(), None);
}

#[test]
fn heartbeat_carries_at_most_the_followers_match() {
    let mut l = leader();
    ack(&mut l, 2, 1);
    assert_eq!(l.commit_index(), 1);
    l.ready();
    l.tick();
    let rd = l.ready();
    let hb: Vec<_> = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, Body::Heartbeat { .. }))
        .cloned()
        .collect();
    assert_eq!(
        hb,
        vec![
            msg(
                1,
                2,
                1,
                Body::Heartbeat {
                    commit: 1,
                    round: 1
                }
            ),
            msg(
                1,
                3,
                1,
                Body::Heartbeat {
                    commit: 0,
                    round: 1
                }
            )
        ]
    );
}

#[test]
fn follower_in_lease_ignores_a_disruptive_candidate() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(msg(
        1,
        2,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    f.ready();
    f.step(msg(
        3,
        2,
        7,
        Body::PreVote {
            last_index: 5,
            last_term: 6,
        },
    ));
    f.step(msg(
        3,
        2,
        7,
        Body::Vote {
            last_index: 5,
            last_term: 6,
            transfer: false,
        },
    ));
    let rd = f.ready();
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    assert_eq!(f.term(), 1);
}

#[test]
fn stale_leader_learns_the_new_term_from_a_heartbeat_reply() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(msg(
        3,
        2,
        5,
        Body::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    f.ready();
    f.step(msg(
        1,
        2,
        4,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
    ));
    assert_eq!(
        f.ready().messages,
        vec![msg(2, 1, 5, Body::HeartbeatResp { round: 0 })]
    );
}

#[test]
fn single_node_group_elects_itself_and_commits() {
    let mut n = node(1, &[1]);
    tick_until_campaign(&mut n);
    assert_eq!(n.role(), Role::Candidate);
    persist(&mut n);
    assert_eq!(n.role(), Role::Leader);
    n.propose(Bytes::from_static(b"v")).unwrap();
    persist(&mut n);
    let rd = n.ready();
    assert_eq!(
        rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn answers_from_strangers_and_misaddressed_messages_are_ignored() {
    // A leader ignores answers from nodes outside its membership; anyone
    // ignores messages addressed to another node. (A leader or candidate
    // unknown to a node is heard: the node may be joining or lagging.)
    let mut l = committed_leader(false);
    let commit = l.commit_index();
    ack(&mut l, 9, 99);
    l.step(msg(9, 1, 1, Body::HeartbeatResp { round: 1 }));
    l.step(msg(
        9,
        1,
        1,
        Body::SnapshotAck {
            index: 1,
            next_offset: 0,
        },
    ));
    l.step(msg(
        2,
        7,
        5,
        Body::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    assert_eq!(
        (l.role(), l.term(), l.commit_index()),
        (Role::Leader, 1, commit)
    );
    assert_eq!(l.stats().messages_ignored, 4);
}

#[test]
fn a_removed_notice_is_for_the_host_and_moves_nothing_in_the_core() {
    // `Removed` is the shard's business (it destroys the replica); a
    // higher term on it must not make a leader step down, nor a member's
    // notice count as a message from a leader.
    let mut l = committed_leader(false);
    let (term, commit) = (l.term(), l.commit_index());
    l.step(msg(2, 1, term + 5, Body::Removed { conf_index: 99 }));
    assert_eq!(
        (l.role(), l.term(), l.commit_index()),
        (Role::Leader, term, commit)
    );
    assert_eq!(l.stats().messages_ignored, 1);
    assert!(l.ready().messages.is_empty());
}

#[test]
fn config_validation_names_each_problem() {
    let bad = |f: fn(&mut RaftConfig)| {
        let mut c = cfg(1, &[1, 2, 3]);
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert_eq!(bad(|c| c.id = 0), ConfigError::ZeroId);
    assert_eq!(
        bad(|c| c.voters = vec![1, 2, 2]),
        ConfigError::DuplicateVoter
    );
    assert_eq!(bad(|c| c.voters = vec![2, 3]), ConfigError::NotAVoter(1));
    assert!(matches!(
        bad(|c| c.heartbeat_ticks = 10),
        ConfigError::Ticks { .. }
    ));
    assert!(matches!(
        bad(|c| c.heartbeat_ticks = 0),
        ConfigError::Ticks { .. }
    ));
    assert_eq!(
        bad(|c| c.inflight_msgs_max = 0),
        ConfigError::Zero("inflight_msgs_max")
    );
    assert_eq!(
        bad(|c| c.msg_bytes_max = 0),
        ConfigError::Zero("msg_bytes_max")
    );
    assert!(matches!(
        bad(|c| c.msg_bytes_max = c.inflight_bytes_max + 1),
        ConfigError::MsgLargerThanWindow { .. }
    ));
    assert!(bad(|c| c.id = 0).to_string().contains("non-zero"));
}

#[test]
fn lost_tail_appends_are_resent_after_a_stalled_heartbeat_round() {
    // Regression (sim seed 179, 5 nodes): the last AppendEntries to a
    // replicating follower was lost and no later proposal exposed the gap;
    // heartbeats carry only min(commit, match), so it stayed behind forever.
    let mut l = leader();
    ack(&mut l, 2, 1);
    l.propose(Bytes::from_static(b"lost")).unwrap();
    let a = appends(&persist(&mut l));
    assert_eq!(a.iter().filter(|x| x.0 == 2).count(), 1); // sent... and lost
                                                          // Heartbeat round 1: match (1) < last (2); remember it.
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert!(
        appends(&l.ready()).iter().all(|x| x.0 != 2),
        "in flight: no resend yet"
    );
    // Round 2: still no progress: probe again from the match.
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Probe);
    let a = appends(&l.ready());
    assert_eq!(
        a.iter().find(|x| x.0 == 2).map(|x| (x.1, x.3.clone())),
        Some((1, vec![(2, 1)]))
    );
}

#[test]
fn pipelined_appends_delivered_out_of_order_and_duplicated() {
    let mut c = cfg(1, &[1, 2]);
    c.msg_bytes_max = 30; // one entry per message
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 2);
    let probe = persist(&mut l).messages;
    let mut f = node(2, &[1, 2]);
    for m in probe {
        f.step(m);
    }
    for m in persist(&mut f).persisted_messages {
        l.step(m);
    }
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Replicate);
    for k in 0..5u8 {
        l.propose(Bytes::from(vec![k])).unwrap();
    }
    let mut out: Vec<Message> = persist(&mut l).messages;
    assert_eq!(out.len(), 5, "five pipelined appends");
    // Deliver in reverse, each twice.
    out.reverse();
    let mut acks = Vec::new();
    for m in out.iter().chain(out.iter()) {
        f.step(m.clone());
        acks.extend(persist(&mut f).persisted_messages);
    }
    assert_eq!(
        f.last_index(),
        3,
        "only the in-order prefix was accepted; the rest rejected"
    );
    // Rejections and acks go back; the leader recovers by probing.
    let mut to_leader = acks;
    for _round in 0..10 {
        for a in to_leader.drain(..) {
            l.step(a);
        }
        for m in persist(&mut l).messages {
            if matches!(m.body, Body::Append { .. }) {
                f.step(m);
            }
        }
        to_leader.extend(persist(&mut f).persisted_messages);
        if to_leader.is_empty() {
            break;
        }
    }
    assert_eq!(f.last_index(), 6, "follower holds noop + 5 entries");
    for k in 0..5u8 {
        assert_eq!(&f.log().entry(k as u64 + 2).unwrap().data[..], &[k]);
    }
    assert_eq!(l.progress(2).unwrap().match_, 6);
    assert_eq!(l.commit_index(), 6);
}

#[test]
fn a_follower_cannot_restart_with_less_than_it_acked() {
    // Acks are only in `persisted_messages`: a crash before the write is
    // durable loses the entries *and* the ack together.
    let cfgv = cfg(2, &[1, 2, 3]).validate().unwrap();
    let mut f = RawNode::new(cfgv.clone());
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 1), ent(2, 1)],
            commit: 0,
        },
    ));
    let rd = f.ready();
    assert!(rd
        .messages
        .iter()
        .all(|m| !matches!(m.body, Body::AppendResp { .. })));
    assert!(matches!(
        rd.persisted_messages[0].body,
        Body::AppendResp {
            reject: false,
            index: 2,
            ..
        }
    ));
    // Crash before the write: restart from the (empty) durable state.
    let mut f = RawNode::restart(cfgv, HardState::default(), vec![], 0);
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 2,
            prev_term: 1,
            entries: vec![],
            commit: 0,
        },
    ));
    let rd = f.ready();
    assert!(
        matches!(
            rd.persisted_messages[0].body,
            Body::AppendResp { reject: true, .. }
        ),
        "a restarted follower never acks what it lost"
    );
}

#[test]
fn apply_bytes_max_bounds_committed_entries_per_ready() {
    let mut c = cfg(1, &[1]);
    c.apply_bytes_max = 100;
    let mut n = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut n);
    persist(&mut n);
    for _ in 0..10 {
        n.propose(Bytes::from(vec![1u8; 26])).unwrap(); // 50 bytes each
    }
    persist(&mut n); // entries durable, committed (single node)
    let mut sizes = Vec::new();
    loop {
        let rd = persist(&mut n);
        if rd.committed.is_empty() {
            break;
        }
        sizes.push(rd.committed.len());
    }
    // The no-op (24 bytes) + 1 entry, then 2 per Ready (100 bytes), at least one each.
    assert_eq!(sizes.iter().sum::<usize>(), 11);
    assert!(sizes.iter().all(|&k| k <= 2), "{sizes:?}");
}

#[test]
fn applied_index_follows_reports_and_cannot_pass_what_was_handed_out() {
    let mut n = node(1, &[1]);
    tick_until_campaign(&mut n);
    persist(&mut n); // leader; its no-op goes out
    persist(&mut n); // the no-op is durable and committed
    let rd = persist(&mut n);
    let last = rd.committed.last().expect("the no-op").index;
    assert_eq!(n.applied_index(), 0);
    n.on_applied(last);
    assert_eq!(n.applied_index(), last);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| n.on_applied(last + 1)));
    assert!(r.is_err());
}
