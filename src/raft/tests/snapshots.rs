//! Compaction and snapshot streaming.

use super::*;

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
    needs_index_1(&mut l);
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
    ack(&mut l, 2, 15);
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Probe);
    assert_eq!(l.progress(2).unwrap().match_, 15);
    let a = appends(&l.ready());
    assert_eq!(
        a.iter().find(|x| x.0 == 2).map(|x| (x.1, x.3.len())),
        Some((15, 5))
    );
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
    let rd = f.ready();
    assert!(
        rd.snapshot.is_some() && !rd.snapshot_dropped_log,
        "storage is told the log was kept"
    );
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
    let rd = g.ready();
    assert!(
        rd.snapshot.is_some() && rd.snapshot_dropped_log,
        "storage is told the log was dropped"
    );
    assert!(!g.ready().snapshot_dropped_log, "told once");
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
    needs_index_1(&mut l);
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

#[test]
fn a_snapshot_larger_than_snapshot_bytes_max_is_refused() {
    let mut c = cfg(2, &[1, 2, 3]);
    c.snapshot_bytes_max = 99;
    let mut f = RawNode::new(c.validate().unwrap());
    let data = vec![1u8; 100];
    f.step(chunk_msg(1, 1, 15, &data, 0, 50));
    let rd = f.ready();
    assert!(rd.messages.is_empty(), "not buffered, not acknowledged");
    assert_eq!(f.stats().messages_ignored, 1);
    // At the bound it is accepted.
    let mut c = cfg(2, &[1, 2, 3]);
    c.snapshot_bytes_max = 100;
    let mut g = RawNode::new(c.validate().unwrap());
    g.step(chunk_msg(1, 1, 15, &data, 0, 100));
    assert!(g.ready().snapshot.is_some());
}

/// The chunks `rd` asks the application to read: (to, index, offset, len).
fn snapshot_reads(rd: &Ready) -> Vec<(ReplicaId, u64, u64, u64)> {
    rd.snapshot_reads
        .iter()
        .map(|r| (r.message.to, r.at().0, r.at().1, r.len))
        .collect()
}

/// Once the application stores the snapshot (`snapshot_stored`), the
/// core lets its bytes go and asks for each chunk to be read
/// (`Ready::snapshot_reads`), one at a time as from memory. A newer
/// snapshot does not cut a transfer short: the follower is sent the one
/// it started with to the end, which is `snapshot_in_use` until then.
#[test]
fn a_stored_snapshot_is_read_chunk_by_chunk_and_in_use_until_its_transfer_ends() {
    let mut l = compacted_leader(20, 15, 0, 400);
    let data = l.snapshot_stored(15).expect("held until stored");
    assert_eq!(data, Bytes::from(vec![0xAB; 1000]));
    assert!(l.snapshot().unwrap().data.is_empty(), "let go");
    assert_eq!(l.snapshot_bytes(), 1000);
    assert_eq!(l.snapshot_stored(15), None, "let go once");
    assert!(!l.snapshot_in_use(15));
    needs_index_1(&mut l);
    let rd = l.ready();
    assert!(snapshot_chunks(&rd, 2).is_empty(), "no chunk from memory");
    assert_eq!(snapshot_reads(&rd), vec![(2, 15, 0, 400)]);
    assert!(l.snapshot_in_use(15));
    let m = rd.snapshot_reads[0].clone().fill(data.slice(0..400));
    match &m.body {
        Body::Snapshot {
            chunk, total, crc, ..
        } => assert_eq!(
            (chunk.len(), *total, *crc),
            (400, 1000, crc32fast::hash(&data))
        ),
        other => panic!("{other:?}"),
    }
    assert!(snapshot_reads(&l.ready()).is_empty(), "wait for the ack");
    // A newer snapshot meanwhile.
    compact_at_22(&mut l);
    assert!(l.snapshot_in_use(15) && !l.snapshot_in_use(22));
    assert!(l.snapshot_stored(22).is_some());
    let next = |l: &mut RawNode, acked: u64| {
        l.step(msg(
            2,
            1,
            1,
            Body::SnapshotAck {
                index: 15,
                next_offset: acked,
            },
        ));
        snapshot_reads(&l.ready())
    };
    assert_eq!(next(&mut l, 400), vec![(2, 15, 400, 400)]);
    // That read could not be done (or its chunk was lost): a heartbeat
    // answer asks for it again.
    l.step(msg(2, 1, 1, Body::HeartbeatResp { round: 0 }));
    assert_eq!(snapshot_reads(&l.ready()), vec![(2, 15, 400, 400)]);
    assert_eq!(next(&mut l, 800), vec![(2, 15, 800, 200)]);
    assert!(next(&mut l, 1000).is_empty());
    assert!(l.snapshot_in_use(15), "held until installed");
    ack(&mut l, 2, 15);
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Probe);
    assert!(!l.snapshot_in_use(15), "the old one may go now");
}

/// Follower 2 rejects the probe at prev 1 (it has nothing): the leader
/// needs index 1 for it, compacted away.
fn needs_index_1(l: &mut RawNode) {
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
}

/// A chunk the application could not read (its file gone) sends the
/// follower back to the probe: the next Ready asks for the latest
/// snapshot from its start, not for the unreadable chunk again after
/// every heartbeat.
#[test]
fn an_unreadable_stored_snapshot_restarts_the_transfer_with_the_latest() {
    let mut l = compacted_leader(20, 15, 0, 400);
    l.snapshot_stored(15).unwrap();
    needs_index_1(&mut l);
    assert_eq!(snapshot_reads(&l.ready()), vec![(2, 15, 0, 400)]);
    compact_at_22(&mut l);
    l.snapshot_stored(22).unwrap();
    // Another follower's or another index's failure changes nothing.
    l.snapshot_read_failed(3, 15);
    l.snapshot_read_failed(2, 14);
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Snapshot);
    l.snapshot_read_failed(2, 15);
    assert_eq!(l.progress(2).unwrap().state, ProgressState::Probe);
    assert!(!l.snapshot_in_use(15));
    // What it needs is compacted: it is sent the latest, from its start.
    assert_eq!(snapshot_reads(&l.ready()), vec![(2, 22, 0, 400)]);
    assert!(l.snapshot_in_use(22));
}

/// Two more entries, committed by node 3 and applied, and a newer
/// snapshot at 22 (500 bytes).
fn compact_at_22(l: &mut RawNode) {
    for _ in 0..2 {
        l.propose(Bytes::from_static(b"e")).unwrap();
    }
    persist(l);
    ack(l, 3, 22);
    persist(l);
    l.on_applied(22);
    l.compact(22, Bytes::from(vec![0xCD; 500])).unwrap();
}
