//! One replica (`ringraft::group::Replica`) driven by hand: what it answers
//! the clients waiting on it when it goes away, and how it tells that it
//! was removed. Out of `src/group` because the tests need a clock and the
//! group module takes time only as arguments.

use std::time::{Duration, Instant};

use ringraft::group::{Gone, PendingRead, Replica, Waiter};
use ringraft::kv::{Kv, KvLimits};
use ringraft::raft::{ConfState, RaftConfig, RawNode, Snapshot, SnapshotMeta};
use ringraft::storage::GroupLog;
use ringraft::wire::ClientError;

fn replica(me: u64, voters: &[u64], snap_voters: Option<&[u64]>) -> Replica {
    let cfg = RaftConfig::new(me, voters.to_vec()).validate().unwrap();
    let snap = snap_voters.map(|v| Snapshot {
        meta: SnapshotMeta { index: 10, term: 1 },
        conf: ConfState::new(v, &[]),
        data: bytes::Bytes::new(),
    });
    let raft = RawNode::restart_from(cfg, Default::default(), snap, Vec::new(), 0);
    let kv = Kv::new(KvLimits::default());
    Replica::new(1, me, raft, kv, 0, GroupLog::default())
}

/// A replica that joins is seeded with a snapshot whose membership
/// predates its own addition: not named, yet never taken for removed
/// (it would destroy itself, and its id could never come back). One
/// that was named and is not any more was removed.
#[test]
fn only_a_replica_that_was_named_is_taken_for_removed() {
    // Joined: no membership, then a snapshot of {1, 2, 3}.
    let mut joiner = replica(5, &[], Some(&[1, 2, 3]));
    assert!(!joiner.is_named());
    assert!(!joiner.note_membership(), "a joiner is not removed");
    // An initial voter is named and stays so.
    let mut voter = replica(1, &[1, 2, 3], None);
    assert!(voter.is_named() && !voter.note_membership());
    // Named before, not in the membership now: removed, once.
    voter.was_named = true;
    let mut removed = replica(1, &[1, 2, 3], Some(&[2, 3, 4]));
    removed.was_named = voter.was_named;
    assert!(removed.note_membership());
    assert!(!removed.note_membership(), "reported once");
}

/// A replica that goes away answers its waiting writes "outcome
/// unknown", never a refusal: the entry may commit through the other
/// replicas. (Destroying a removed replica answered `NotLeader`; the
/// client took it for "not applied", reported the write refused, and
/// the chaos test then read a value no write had produced.) Reads are
/// sent elsewhere with the leader hint.
#[test]
fn a_replica_that_goes_away_never_refuses_a_write_it_may_have_logged() {
    use ringraft::wire::{Op, ReadMode, Request};
    let at = Instant::now() + Duration::from_secs(5);
    for why in [Gone::Destroyed, Gone::Rebuilt, Gone::ShuttingDown] {
        let mut r = replica(1, &[1, 2, 3], None);
        for (i, idx) in [7u64, 8].iter().enumerate() {
            let w = Waiter {
                term: 1,
                conn: 3,
                id: i as u64,
                deadline: at,
            };
            r.proposals.insert(*idx, w);
        }
        let read = |id| PendingRead {
            conn: 4,
            req: Request {
                id,
                group: 1,
                client: 0,
                seq: 0,
                ack: 0,
                op: Op::Get {
                    key: bytes::Bytes::from_static(b"k"),
                    mode: ReadMode::Linearizable,
                },
            },
            deadline: at,
        };
        r.reads_new.push(read(10));
        r.reads_asked.insert(1, vec![read(11)]);
        r.reads_ready.push((9, read(12)));
        let mut out = Vec::new();
        r.drain_waiters(why, &mut out);
        assert_eq!(out.len(), 5, "{why:?}: every waiter is answered");
        for (conn, id, answer) in &out {
            let e = answer.clone().expect_err("an error");
            if *conn == 3 {
                assert!(
                    e.outcome_unknown(),
                    "{why:?}: write {id} answered {e:?}, a refusal"
                );
            } else {
                assert!(
                    matches!(e, ClientError::NotLeader { .. }),
                    "{why:?}: read {id} answered {e:?}"
                );
            }
        }
        assert!(r.proposals.is_empty() && r.reads_new.is_empty());
        assert!(r.reads_asked.is_empty() && r.reads_ready.is_empty());
    }
}

/// A snapshot that covers a waiting write may hold it: the write is
/// answered "outcome unknown", never `NotLeader` (a refusal); writes
/// above the snapshot keep waiting. (Found in review: they were left
/// for `apply`, which answered every index it skipped `NotLeader`.)
#[test]
fn a_snapshot_over_a_waiting_write_leaves_its_outcome_unknown() {
    let at = Instant::now() + Duration::from_secs(5);
    let mut r = replica(1, &[1, 2, 3], None);
    for idx in [7u64, 8, 12] {
        let w = Waiter {
            term: 1,
            conn: 3,
            id: idx,
            deadline: at,
        };
        r.proposals.insert(idx, w);
    }
    let mut out = Vec::new();
    r.skip_to_snapshot(8, &mut out);
    let ids: Vec<u64> = out.iter().map(|a| a.1).collect();
    assert_eq!(ids, vec![7, 8]);
    assert!(out
        .iter()
        .all(|a| a.2.as_ref().is_err_and(|e| e.outcome_unknown())));
    assert_eq!(r.proposals.keys().copied().collect::<Vec<_>>(), vec![12]);
}
