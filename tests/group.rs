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

/// A follower installs its leader's snapshot over a log that holds the
/// snapshot's last entry: the core keeps the entries after it, and so must
/// a restart once the WAL has released the records up to the snapshot.
/// (The install wrote an install marker; replay then found a log starting
/// right after the snapshot, could not tell it had been kept, and dropped
/// entries the follower had acknowledged: simulator, 5 nodes, seed 171
/// with quiescence.) Real WAL over `MemDisk`, small segments.
#[test]
fn an_install_that_keeps_the_log_keeps_it_across_a_restart_after_a_release() {
    use ringraft::raft::{Body, Entry, EntryKind, Message};
    use ringraft::storage::{open_wal, LogStore};
    use ringraft_wal::{MemDisk, WalOptions};

    /// Writes the replica's Ready to the WAL, waits until it is durable
    /// and reports it: the LSN of its last record (0: none).
    async fn write_ready(r: &mut Replica, store: &LogStore<MemDisk>) -> u64 {
        let (io, rest) = r.take_ready();
        if let Some(snap) = &io.snapshot {
            let mut answers = Vec::new();
            r.restore(
                snap,
                io.snapshot_dropped_log,
                KvLimits::default(),
                true,
                &mut answers,
            )
            .unwrap();
        }
        let (lsn, _) = store
            .append_group(1, io.hard_state, &io.entries, &mut r.lsns)
            .await
            .unwrap();
        let done = r.finish_ready(rest, u32::MAX, &mut Vec::new());
        if lsn > 0 {
            store.wal().wait_durable(lsn).await.unwrap();
            r.lsns.note_durable(lsn);
        }
        r.raft.on_persisted(done.token);
        lsn
    }

    let block = 4096;
    let opts = WalOptions {
        segment_bytes: 16 * block as u64,
        record_bytes_max: block - 64,
        batch_bytes_max: 2 * block,
        write_chunk_bytes: block,
        queue_bytes_max: 1 << 20,
        recovery: ringraft_wal::RecoveryMode::Strict,
        zero_segments: false,
        // Each flush on a block of its own (WAL format v1's layout), so 40
        // one-entry flushes span several 16-block segments.
        tail_rewrite_bytes_max: 0,
    };
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async move {
            let disk = MemDisk::new();
            let (wal, replay, _) = open_wal(disk.clone(), opts.clone()).await.unwrap();
            let mut store = LogStore::new(wal, replay.catalog, block - 64);
            let mut r = replica(2, &[1, 2, 3], None);
            // Entries 1..=40 of term 1 from leader 1, one record (one
            // flush, one block) each: they span several segments.
            let append = |i: u64, commit: u64| Message {
                from: 1,
                to: 2,
                term: 1,
                body: Body::Append {
                    prev_index: i - 1,
                    prev_term: u64::from(i > 1),
                    entries: vec![Entry {
                        index: i,
                        term: 1,
                        kind: EntryKind::Normal,
                        data: bytes::Bytes::from_static(b"v"),
                    }],
                    commit,
                },
            };
            let mut lsn_of = vec![0];
            for i in 1..=40u64 {
                r.raft.step(append(i, 0));
                lsn_of.push(write_ready(&mut r, &store).await);
            }
            // The snapshot ends at the last entry before the newest
            // segment: once released, the log starts right after it.
            let newest = store.wal().segment_start(lsn_of[40]);
            let index = (2..=40)
                .find(|&i| lsn_of[i as usize] == newest)
                .expect("the entries span several segments")
                - 1;
            let data = Kv::new(KvLimits::default()).snapshot();
            r.raft.step(Message {
                from: 1,
                to: 2,
                term: 1,
                body: Body::Snapshot {
                    index,
                    term: 1,
                    conf: ConfState::new(&[1, 2, 3], &[]),
                    offset: 0,
                    total: data.len() as u64,
                    crc: crc32fast::hash(&data),
                    chunk: data.clone(),
                },
            });
            assert!(r.raft.has_ready());
            write_ready(&mut r, &store).await;
            assert_eq!(r.raft.last_index(), 40, "the core kept the log");
            // One more entry: its record carries the hard state with the
            // snapshot's commit, so the first hard state pins nothing.
            r.raft.step(append(41, index));
            write_ready(&mut r, &store).await;
            let released = store.release(r.lsns.needed_lsn()).await.unwrap();
            assert!(released > 0, "the records up to the snapshot are released");

            drop(r);
            store.into_wal().close().await.unwrap();
            let (_wal, mut replay, _) = open_wal(disk, opts).await.unwrap();
            let mut log = replay.groups.remove(&1).expect("group 1 replayed");
            let restart = log.take_restart(Some((index, 1)));
            assert_eq!(
                restart.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
                (index + 1..=41).collect::<Vec<_>>(),
                "every entry after the snapshot survives the restart"
            );
        });
}
