//! Unit tests: step one input into the core, assert the exact messages out.

use bytes::Bytes;

use super::*;

fn cfg(id: NodeId, voters: &[NodeId]) -> RaftConfig {
    let mut c = RaftConfig::new(id, voters.to_vec());
    c.seed = 7;
    c
}

fn node(id: NodeId, voters: &[NodeId]) -> RawNode {
    RawNode::new(cfg(id, voters).validate().unwrap())
}

fn msg(from: NodeId, to: NodeId, term: Term, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn ent(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

/// Takes a Ready and reports it persisted at once.
fn persist(n: &mut RawNode) -> Ready {
    let rd = n.ready();
    n.on_persisted(rd.token());
    rd
}

fn tick_until_campaign(n: &mut RawNode) {
    for _ in 0..100 {
        n.tick();
        if n.role() != Role::Follower {
            return;
        }
    }
    panic!("no campaign after 100 ticks");
}

/// Node 1 of [1,2,3] elected leader in term 1, its no-op appended, and the
/// Ready carrying the no-op persisted; followers not yet acked.
fn leader() -> RawNode {
    let mut n = node(1, &[1, 2, 3]);
    tick_until_campaign(&mut n);
    assert_eq!(n.role(), Role::PreCandidate);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    assert_eq!(n.role(), Role::Candidate);
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    assert_eq!(n.role(), Role::Leader);
    persist(&mut n);
    n
}

/// (to, prev_index, prev_term, [(index, term)], commit) of an Append.
type AppendSummary = (NodeId, Index, Term, Vec<(Index, Term)>, Index);

fn appends(rd: &Ready) -> Vec<AppendSummary> {
    rd.messages
        .iter()
        .filter_map(|m| match &m.body {
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => Some((
                m.to,
                *prev_index,
                *prev_term,
                entries.iter().map(|e| (e.index, e.term)).collect(),
                *commit,
            )),
            _ => None,
        })
        .collect()
}

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
    tick_until_campaign(&mut n);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
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
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    tick_until_campaign(&mut l);
    l.step(msg(2, 1, 3, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(2, 1, 3, Body::VoteResp { reject: false }));
    assert_eq!((l.role(), l.term()), (Role::Leader, 3));
    // Follower 2 acks index 2 (the term-2 entry) but not yet the no-op.
    l.step(msg(
        2,
        1,
        3,
        Body::AppendResp {
            reject: false,
            index: 2,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    persist(&mut l); // leader's own no-op (index 3) durable
    assert_eq!(
        l.commit_index(),
        1,
        "a term-2 entry on a quorum is not committed by counting"
    );
    l.step(msg(
        2,
        1,
        3,
        Body::AppendResp {
            reject: false,
            index: 3,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    assert_eq!(l.commit_index(), 3);
}

#[test]
fn leaders_own_match_advances_only_when_its_write_is_reported() {
    let mut n = node(1, &[1, 2, 3]);
    tick_until_campaign(&mut n);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    let rd = n.ready(); // carries the no-op; not persisted yet
    n.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    tick_until_campaign(&mut l);
    l.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 4,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    tick_until_campaign(&mut l);
    l.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    tick_until_campaign(&mut l);
    l.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
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
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 11,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    l.step(msg(
        9,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 99,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    tick_until_campaign(&mut l);
    l.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
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

// ---- reads ----

/// Leader of [1,2,3] whose no-op is committed (follower 2 acked it).
fn committed_leader(lease: bool) -> RawNode {
    let mut c = cfg(1, &[1, 2, 3]);
    c.lease_reads = lease;
    let mut n = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut n);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    persist(&mut n);
    n.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    assert_eq!(n.commit_index(), 1);
    persist(&mut n);
    n
}

fn heartbeat_rounds(rd: &Ready) -> Vec<(NodeId, u64)> {
    rd.messages
        .iter()
        .filter_map(|m| match m.body {
            Body::Heartbeat { round, .. } => Some((m.to, round)),
            _ => None,
        })
        .collect()
}

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
    tick_until_campaign(&mut n);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    persist(&mut n);
    n.read_index(1).unwrap();
    let rd = n.ready();
    assert!(
        heartbeat_rounds(&rd).is_empty(),
        "no round before the no-op commits"
    );
    n.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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

// ---- leader transfer ----

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
    l.step(msg(
        3,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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

// ---- snapshots ----

/// Single-voter-style leader of [1,2] (2 is far behind) with entries 1..=n
/// applied, and a snapshot taken at `snap` keeping `keep` entries.
fn compacted_leader(n: u64, snap: u64, keep: u64, chunk: u64) -> RawNode {
    let mut c = cfg(1, &[1, 2, 3]);
    c.compact_keep_entries = keep;
    c.snapshot_chunk_bytes = chunk;
    let mut l = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut l);
    l.step(msg(3, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(3, 1, 1, Body::VoteResp { reject: false }));
    persist(&mut l);
    for _ in 1..n {
        l.propose(Bytes::from_static(b"e")).unwrap();
    }
    persist(&mut l);
    // Node 3 acks everything; node 2 stays behind (probing, no answer).
    l.step(msg(
        3,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: n,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    let rd = persist(&mut l);
    let last = rd.committed.last().unwrap().index;
    assert_eq!(last, n);
    l.on_applied(n);
    l.compact(snap, Bytes::from(vec![0xAB; 1000])).unwrap();
    l
}

fn snapshot_chunks(rd: &Ready, to: NodeId) -> Vec<(u64, u64, usize)> {
    rd.messages
        .iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            Body::Snapshot {
                index,
                offset,
                chunk,
                ..
            } => Some((*index, *offset, chunk.len())),
            _ => None,
        })
        .collect()
}

#[test]
fn compaction_is_bounded_by_applied_and_keeps_a_tail() {
    let mut l = compacted_leader(20, 15, 5, 400);
    assert_eq!(l.first_index(), 11, "15 - keep 5 = compacted through 10");
    assert_eq!(
        l.compact(21, Bytes::new()),
        Err(CompactError::NotApplied {
            index: 21,
            applied: 20
        })
    );
    assert_eq!(
        l.compact(15, Bytes::new()),
        Err(CompactError::Stale {
            index: 15,
            current: 15
        })
    );
}

#[test]
fn a_lagging_follower_gets_the_snapshot_in_chunks_stop_and_wait() {
    let mut l = compacted_leader(20, 15, 0, 400);
    // Follower 2 rejects the probe at prev 1 (it has nothing): the leader
    // needs index 1, compacted away.
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: true,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    let rd = l.ready();
    assert_eq!(
        snapshot_chunks(&rd, 2),
        vec![(15, 0, 400)],
        "one chunk at a time"
    );
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Snapshot);
    assert!(
        snapshot_chunks(&l.ready(), 2).is_empty(),
        "wait for the ack"
    );
    l.step(msg(
        2,
        1,
        1,
        Body::SnapshotAck {
            index: 15,
            next_offset: 400,
        },
    ));
    assert_eq!(snapshot_chunks(&l.ready(), 2), vec![(15, 400, 400)]);
    // That chunk is lost; a heartbeat answer makes the leader resend it.
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert_eq!(snapshot_chunks(&l.ready(), 2), vec![(15, 400, 400)]);
    l.step(msg(
        2,
        1,
        1,
        Body::SnapshotAck {
            index: 15,
            next_offset: 800,
        },
    ));
    assert_eq!(snapshot_chunks(&l.ready(), 2), vec![(15, 800, 200)]);
    l.step(msg(
        2,
        1,
        1,
        Body::SnapshotAck {
            index: 15,
            next_offset: 1000,
        },
    ));
    assert!(snapshot_chunks(&l.ready(), 2).is_empty());
    // Installed and durable: replication resumes after the snapshot.
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: false,
            index: 15,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Probe);
    assert_eq!(l.progress(2).unwrap().match_, 15);
    let a = appends(&l.ready());
    assert_eq!(
        a.iter().find(|x| x.0 == 2).map(|x| (x.1, x.3.len())),
        Some((15, 5))
    );
}

fn chunk_msg(
    from: NodeId,
    term: Term,
    index: Index,
    data: &[u8],
    offset: usize,
    len: usize,
) -> Message {
    msg(
        from,
        2,
        term,
        Body::Snapshot {
            index,
            term: 1,
            conf: ConfState::new(&[1, 2, 3], &[]),
            offset: offset as u64,
            total: data.len() as u64,
            crc: crc32fast::hash(data),
            chunk: Bytes::copy_from_slice(&data[offset..offset + len]),
        },
    )
}

#[test]
fn follower_installs_a_complete_intact_snapshot_atomically() {
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut f = node(2, &[1, 2, 3]);
    f.step(chunk_msg(1, 1, 15, &data, 0, 600));
    let rd = f.ready();
    assert!(rd.snapshot.is_none(), "half a snapshot is never applied");
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            1,
            Body::SnapshotAck {
                index: 15,
                next_offset: 600
            }
        )]
    );
    // A duplicate of the first chunk changes nothing.
    f.step(chunk_msg(1, 1, 15, &data, 0, 600));
    assert_eq!(
        f.ready().messages,
        vec![msg(
            2,
            1,
            1,
            Body::SnapshotAck {
                index: 15,
                next_offset: 600
            }
        )]
    );
    f.step(chunk_msg(1, 1, 15, &data, 600, 400));
    let rd = f.ready();
    let snap = rd.snapshot.clone().expect("installed");
    assert_eq!((snap.meta.index, &snap.data[..]), (15, &data[..]));
    assert_eq!(f.commit_index(), 15);
    assert_eq!(f.first_index(), 16);
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            2,
            1,
            1,
            Body::AppendResp {
                reject: false,
                index: 15,
                hint_index: 0,
                hint_term: 0
            }
        )]
    );
    f.on_persisted(rd.token());
    assert_eq!(f.persisted_index(), 15);
}

#[test]
fn damaged_snapshot_is_received_again_from_the_start() {
    let data = vec![7u8; 100];
    let mut f = node(2, &[1, 2, 3]);
    let mut m = chunk_msg(1, 1, 15, &data, 0, 100);
    if let Body::Snapshot { crc, .. } = &mut m.body {
        *crc ^= 1;
    }
    f.step(m);
    let rd = f.ready();
    assert!(rd.snapshot.is_none());
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            1,
            Body::SnapshotAck {
                index: 15,
                next_offset: 0
            }
        )]
    );
}

#[test]
fn older_snapshot_than_what_the_follower_holds_is_ignored() {
    let mut f = node(2, &[1, 2, 3]);
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=20).map(|i| ent(i, 1)).collect(),
            commit: 20,
        },
    ));
    persist(&mut f);
    f.step(chunk_msg(1, 1, 15, &[1, 2, 3], 0, 3));
    let rd = f.ready();
    assert!(rd.snapshot.is_none());
    assert_eq!(f.last_index(), 20);
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            2,
            1,
            1,
            Body::AppendResp {
                reject: false,
                index: 20,
                hint_index: 0,
                hint_term: 0
            }
        )]
    );
}

#[test]
fn snapshot_keeps_the_matching_tail_and_drops_a_conflicting_log() {
    // Follower holds 1..=20 at term 1, commit 10; the snapshot at (15, 1) matches.
    let mut f = node(2, &[1, 2, 3]);
    f.step(msg(
        1,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=20).map(|i| ent(i, 1)).collect(),
            commit: 10,
        },
    ));
    persist(&mut f);
    f.step(chunk_msg(1, 1, 15, &[9; 10], 0, 10));
    f.ready();
    assert_eq!(
        (f.first_index(), f.last_index()),
        (16, 20),
        "entries after the snapshot kept"
    );
    // Another follower whose log diverges at the snapshot point drops everything.
    let mut g = node(2, &[1, 2, 3]);
    g.step(msg(
        3,
        2,
        1,
        Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=20).map(|i| ent(i, 1)).collect(),
            commit: 0,
        },
    ));
    persist(&mut g);
    let mut m = chunk_msg(1, 2, 15, &[9; 10], 0, 10);
    if let Body::Snapshot { term, .. } = &mut m.body {
        *term = 2;
    }
    g.step(m);
    g.ready();
    assert_eq!(
        (g.first_index(), g.last_index()),
        (16, 15),
        "conflicting log dropped"
    );
}

#[test]
fn a_new_leader_mid_transfer_restarts_the_snapshot() {
    let data = vec![5u8; 100];
    let mut f = node(2, &[1, 2, 3]);
    f.step(chunk_msg(1, 1, 15, &data, 0, 50));
    f.ready();
    // Leader 3 of term 2 takes over; its chunk at offset 50 is refused.
    f.step(chunk_msg(3, 2, 15, &data, 50, 50));
    assert_eq!(
        f.ready().messages,
        vec![msg(
            2,
            3,
            2,
            Body::SnapshotAck {
                index: 15,
                next_offset: 0
            }
        )]
    );
    f.step(chunk_msg(3, 2, 15, &data, 0, 100));
    assert!(f.ready().snapshot.is_some());
}

#[test]
fn two_snapshots_close_together_the_newer_replaces_the_partial_one() {
    let a = vec![1u8; 100];
    let b = vec![2u8; 60];
    let mut f = node(2, &[1, 2, 3]);
    f.step(chunk_msg(1, 1, 15, &a, 0, 50));
    f.step(chunk_msg(1, 1, 30, &b, 0, 60));
    let rd = f.ready();
    assert_eq!(rd.snapshot.unwrap().meta.index, 30);
    // The rest of the older one arrives late: it is not applied.
    f.step(chunk_msg(1, 1, 15, &a, 50, 50));
    assert!(f.ready().snapshot.is_none());
}

#[test]
fn restart_from_a_snapshot() {
    let c = cfg(2, &[1, 2, 3]).validate().unwrap();
    let snap = Snapshot {
        meta: SnapshotMeta { index: 10, term: 2 },
        conf: ConfState::new(&[1, 2, 3], &[]),
        data: Bytes::from_static(b"s"),
    };
    let n = RawNode::restart_from(
        c,
        HardState {
            term: 3,
            vote: 0,
            commit: 10,
        },
        Some(snap),
        vec![ent(11, 3), ent(12, 3)],
        10,
    );
    assert_eq!(
        (n.first_index(), n.last_index(), n.commit_index()),
        (11, 12, 10)
    );
    assert_eq!(n.log().term(10), Some(2));
    assert_eq!(n.snapshot().unwrap().meta.index, 10);
}

#[test]
fn a_fully_acknowledged_snapshot_does_not_keep_the_leader_busy() {
    // Regression (sim seeds 0 and 7 spun forever): once a follower held the
    // whole snapshot, has_ready() stayed true while ready() sent nothing.
    let mut l = compacted_leader(20, 15, 0, 4096);
    l.step(msg(
        2,
        1,
        1,
        Body::AppendResp {
            reject: true,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    assert_eq!(snapshot_chunks(&l.ready(), 2).len(), 1);
    l.step(msg(
        2,
        1,
        1,
        Body::SnapshotAck {
            index: 15,
            next_offset: 1000,
        },
    ));
    l.ready();
    assert!(!l.has_ready(), "waiting for the install ack is idle");
    // A heartbeat round without that ack sends a probe chunk at the end.
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert_eq!(snapshot_chunks(&l.ready(), 2), vec![(15, 1000, 0)]);
    assert!(!l.has_ready());
}

// ---- membership ----

/// Leader 1 of voters [1,2,3] (+ learners), no-op committed via node 2.
fn leader_with(voters: &[NodeId], learners: &[NodeId]) -> RawNode {
    let mut c = cfg(1, voters);
    c.learners = learners.to_vec();
    let mut n = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut n);
    for &v in voters.iter().filter(|&&v| v != 1) {
        n.step(msg(v, 1, 1, Body::PreVoteResp { reject: false }));
    }
    persist(&mut n);
    for &v in voters.iter().filter(|&&v| v != 1) {
        n.step(msg(v, 1, 1, Body::VoteResp { reject: false }));
    }
    assert_eq!(n.role(), Role::Leader);
    persist(&mut n);
    for &v in voters.iter().filter(|&&v| v != 1) {
        n.step(msg(
            v,
            1,
            1,
            Body::AppendResp {
                reject: false,
                index: 1,
                hint_index: 0,
                hint_term: 0,
            },
        ));
    }
    assert_eq!(n.commit_index(), 1);
    persist(&mut n);
    // New members are seeded with a snapshot: have one.
    n.on_applied(1);
    n.compact(1, Bytes::from_static(b"state")).unwrap();
    n
}

fn ack(n: &mut RawNode, from: NodeId, index: Index) {
    n.step(msg(
        from,
        1,
        n.term(),
        Body::AppendResp {
            reject: false,
            index,
            hint_index: 0,
            hint_term: 0,
        },
    ));
}

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
    for _ in 0..100 {
        learner.tick();
    }
    assert_eq!(learner.role(), Role::Follower);
    assert!(learner.ready().messages.is_empty());
}

#[test]
fn joint_configuration_needs_a_quorum_of_both_old_and_new_voters() {
    let mut l = leader_with(&[1, 2, 3], &[]);
    // 1,2,3 -> 1,4,5: joint (old {1,2,3}, new {1,4,5}).
    let cc = ConfChange {
        ops: vec![
            ConfChangeOp::AddVoter(4),
            ConfChangeOp::AddVoter(5),
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
        ops: vec![ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(3)],
    };
    // Adding three voters never heard from: the new six could not reach a quorum.
    let three = ConfChange {
        ops: vec![
            ConfChangeOp::AddVoter(4),
            ConfChangeOp::AddVoter(5),
            ConfChangeOp::AddVoter(6),
        ],
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
    let (i, _) = l.add_learner(4).unwrap();
    persist(&mut l);
    ack(&mut l, 2, i);
    persist(&mut l);
    assert!(l.conf().is_learner(4));
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
}

#[test]
fn joint_quorum_in_the_new_voters_alone_cannot_commit() {
    let mut l = leader_with(&[1, 2, 3], &[4]);
    ack(&mut l, 4, 1);
    l.step(msg(4, 1, 1, Body::HeartbeatResp { round: 0 }));
    let (j, _) = l
        .propose_conf_change(ConfChange {
            ops: vec![ConfChangeOp::AddVoter(4), ConfChangeOp::Remove(3)],
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
fn removing_the_leader_it_leads_until_the_change_commits_then_steps_down() {
    let mut l = leader_with(&[1, 2, 3], &[]);
    let (j, _) = l.remove_node(1).unwrap();
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
    persist(&mut l);
    assert_eq!(
        l.role(),
        Role::Follower,
        "removed: steps down once the change applied"
    );
    assert!(!l.promotable());
    for _ in 0..100 {
        l.tick();
    }
    assert_eq!(l.role(), Role::Follower, "a removed node never campaigns");
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
    tick_until_campaign(&mut n);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    assert_eq!(n.add_learner(4), Err(ConfChangeError::NotReady));
    // One at a time.
    let mut l = leader_with(&[1, 2, 3], &[]);
    let (i, _) = l.add_learner(4).unwrap();
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
        l.remove_node(9),
        Err(ConfChangeError::NotMember(9))
    ));
    l.transfer_leader(2).unwrap();
    assert_eq!(l.remove_node(3), Err(ConfChangeError::TransferInProgress));
}

#[test]
fn promotion_waits_until_the_learner_is_caught_up() {
    let mut c = cfg(1, &[1, 2, 3]);
    c.learners = vec![4];
    c.promote_lag_entries_max = 3;
    let mut l = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut l);
    l.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    persist(&mut l);
    l.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
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
    let (i, _) = l.add_learner(4).unwrap();
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
