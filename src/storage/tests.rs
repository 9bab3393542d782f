use super::*;

fn e(index: u64, term: u64, data: &str) -> Entry {
    Entry {
        term,
        index,
        kind: if data.is_empty() {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn rec(group: u64, hs: Option<HardState>, entries: &[Entry]) -> Bytes {
    let mut b = vec![0u8; record_bytes(hs.is_some(), entries)];
    encode_record(&mut b, group, hs.as_ref(), entries);
    Bytes::from(b)
}

#[test]
fn records_round_trip_and_damage_is_an_error() {
    let hs = HardState {
        term: 3,
        vote: 2,
        commit: 1,
    };
    let entries = [e(1, 1, ""), e(2, 3, "hello"), e(3, 3, "a longer payload!")];
    for (h, es) in [
        (Some(hs), &entries[..]),
        (None, &entries[1..]),
        (Some(hs), &[][..]),
    ] {
        let b = rec(9, h, es);
        let r = decode_record(5, &b).unwrap();
        assert_eq!(
            r,
            Record {
                group: 9,
                hs: h,
                installed: None,
                entries: es.to_vec()
            }
        );
        for cut in 0..b.len() {
            assert!(decode_record(5, &b.slice(..cut)).is_err(), "cut {cut}");
        }
    }
}

#[test]
fn replay_overwrites_divergent_tails_and_tracks_lsns() {
    let mut g = GroupLog::default();
    let hs = HardState {
        term: 2,
        vote: 1,
        commit: 0,
    };
    let r = |lsn, h, es: &[Entry]| (lsn, decode_record(lsn, &rec(1, h, es)).unwrap());
    let (l, x) = r(10, Some(hs), &[e(1, 1, "a"), e(2, 1, "b"), e(3, 1, "c")]);
    g.apply(l, x);
    let (l, x) = r(11, None, &[e(4, 1, "d")]);
    g.apply(l, x);
    // A new leader overwrites from index 3.
    let (l, x) = r(12, None, &[e(3, 2, "C")]);
    g.apply(l, x);
    let got: Vec<_> = g.entries.iter().map(|x| (x.index, x.term)).collect();
    assert_eq!(got, vec![(1, 1), (2, 1), (3, 2)]);
    assert_eq!(g.record_lsns, BTreeMap::from([(1, 10), (3, 12)]));
    assert_eq!(g.needed_lsn(), 10);
    // A snapshot at 2 (term 1): entries after it stay, record 10 still
    // holds index 3? no: record 12 does; record 10 holds 1..=2 only.
    g.trim_to_snapshot(2, 1);
    assert_eq!(
        g.entries.iter().map(|x| x.index).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(g.record_lsns, BTreeMap::from([(3, 12)]));
    assert_eq!(
        g.needed_lsn(),
        10,
        "the hard state still lives in record 10"
    );
    let (l, x) = r(13, Some(hs), &[]);
    g.apply(l, x);
    assert_eq!(g.needed_lsn(), 12);
}

#[test]
fn a_snapshot_the_log_does_not_hold_drops_every_entry() {
    let mut g = GroupLog::default();
    g.apply(
        1,
        decode_record(1, &rec(1, None, &[e(1, 1, "a"), e(2, 1, "b")])).unwrap(),
    );
    g.trim_to_snapshot(5, 3);
    assert!(g.entries.is_empty());
    assert_eq!(g.hs.commit, 5);
    // Entries after a snapshot installed later start a new run.
    g.apply(2, decode_record(2, &rec(1, None, &[e(6, 3, "x")])).unwrap());
    assert_eq!(g.entries.len(), 1);
    g.trim_to_snapshot(5, 3);
    assert_eq!(g.entries.len(), 1, "index 6 follows the snapshot");
}

fn install(lsn: u64, group: u64, index: u64, term: u64) -> (u64, Record) {
    let mut b = vec![0u8; INSTALL_RECORD_BYTES];
    encode_install(&mut b, group, index, term);
    let b = Bytes::from(b);
    for cut in 0..b.len() {
        assert!(decode_record(lsn, &b.slice(..cut)).is_err(), "cut {cut}");
    }
    let r = decode_record(lsn, &b).unwrap();
    assert_eq!(r.installed, Some((index, term)));
    assert_eq!((r.group, r.hs, r.entries.len()), (group, None, 0));
    (lsn, r)
}

fn indexes_terms(g: &GroupLog) -> Vec<(u64, u64)> {
    g.entries.iter().map(|x| (x.index, x.term)).collect()
}

/// Found by the simulator once it ran the real WAL (seed 2029, 3 nodes):
/// a follower held 151..=153 of term 4, installed the leader's snapshot
/// (151, term 5) and then appended 152 of term 6, acknowledged. The
/// stale records shared a segment with the new one, so replay saw
/// 151 (term 4) then 152 (term 6): a log that does not hold the
/// snapshot's entry, which restart dropped whole, acknowledged 152 with
/// it. The install marker makes replay drop what the install dropped.
#[test]
fn an_install_marker_drops_the_superseded_log_and_keeps_what_follows() {
    let r = |lsn, es: &[Entry]| (lsn, decode_record(lsn, &rec(1, None, es)).unwrap());
    let mut g = GroupLog::default();
    for (l, x) in [
        r(145, &[e(150, 3, "a")]),
        r(147, &[e(151, 4, "b")]),
        r(148, &[e(152, 4, "c")]),
        r(149, &[e(153, 4, "d")]),
        install(150, 1, 151, 5),
        r(151, &[e(152, 6, "e")]),
    ] {
        g.apply(l, x);
    }
    assert_eq!(indexes_terms(&g), vec![(152, 6)]);
    assert_eq!(g.record_lsns, BTreeMap::from([(152, 151)]));
    let restart = g.take_restart(Some((151, 5)));
    assert_eq!(restart.applied, 151);
    assert_eq!(
        restart
            .entries
            .iter()
            .map(|x| (x.index, x.term))
            .collect::<Vec<_>>(),
        vec![(152, 6)],
        "the entry acknowledged after the install survives a restart"
    );

    // A marker says the core dropped its whole log: replay drops it even
    // where it holds the snapshot's entry (an install that kept the log
    // writes no marker).
    let mut g = GroupLog::default();
    for (l, x) in [
        r(1, &[e(1, 1, "a"), e(2, 2, "b"), e(3, 2, "c")]),
        install(2, 1, 2, 2),
    ] {
        g.apply(l, x);
    }
    assert!(g.entries.is_empty() && g.record_lsns.is_empty());
    assert_eq!(g.last_index, 2);

    // An install that kept the log (no marker), its records up to the
    // snapshot released: the log starts right after the snapshot and the
    // restart keeps it whole.
    let mut g = GroupLog::default();
    for (l, x) in [r(51, &[e(167, 5, "a")]), r(53, &[e(168, 5, "b")])] {
        g.apply(l, x);
    }
    let restart = g.take_restart(Some((166, 5)));
    assert_eq!(
        restart.entries.iter().map(|x| x.index).collect::<Vec<_>>(),
        vec![167, 168]
    );

    // A marker with nothing after it: the superseded entries are gone.
    let mut g = GroupLog::default();
    for (l, x) in [r(1, &[e(1, 1, "a"), e(2, 1, "b")]), install(2, 1, 5, 3)] {
        g.apply(l, x);
    }
    assert!(g.entries.is_empty() && g.record_lsns.is_empty());
    assert_eq!(g.take_restart(Some((5, 3))).applied, 5);
}

#[test]
fn snapshot_files_round_trip_and_damage_is_named() {
    use crate::raft::{ConfChange, ConfChangeOp, ConfState, Snapshot, SnapshotMeta};
    // Replica 5 lives on node 4: placements are kept.
    let conf = ConfState::new(&[1, 2, 3], &[])
        .apply(&ConfChange {
            ops: vec![ConfChangeOp::AddLearner {
                replica: 5,
                node: 4,
            }],
        })
        .unwrap();
    let s = Snapshot {
        meta: SnapshotMeta { index: 42, term: 7 },
        conf,
        data: Bytes::from_static(b"state machine bytes"),
    };
    let b = snapfile::encode(3, &s);
    assert_eq!(snapfile::decode("f", &b).unwrap(), (3, s.clone()));
    for i in 0..b.len() {
        let mut d = b.clone();
        d[i] ^= 0x10;
        assert!(snapfile::decode("f", &d).is_err(), "flip at {i}");
    }
    assert!(matches!(
        snapfile::decode("f", &b[..b.len() - 1]),
        Err(snapfile::SnapFileError::Corrupt { .. })
    ));
    // Intact bytes, but a membership that breaks its invariant (a
    // placement for a non-member): refused as read back.
    let mut wrong = s.clone();
    wrong.conf.placements.push(crate::raft::Placement {
        replica: 9,
        node: 9,
    });
    assert!(!wrong.conf.placements_consistent());
    assert!(matches!(
        snapfile::decode("f", &snapfile::encode(3, &wrong)),
        Err(snapfile::SnapFileError::Corrupt { .. })
    ));
}

/// A snapshot file of version 1 (before replicas had ids of their own)
/// still reads: its members are placed on the nodes of their ids.
#[test]
fn a_version_1_snapshot_file_places_members_on_their_ids() {
    use crate::raft::ConfState;
    let mut body = Vec::new();
    for ids in [&[1u64, 2, 4][..], &[1, 2, 3], &[5]] {
        body.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            body.extend_from_slice(&id.to_le_bytes());
        }
    }
    let conf_len = body.len();
    body.extend_from_slice(b"data");
    let mut f = b"RRSNAP01".to_vec();
    for v in [3u64, 42, 7] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&(conf_len as u32).to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    f.extend_from_slice(&4u64.to_le_bytes());
    f.extend_from_slice(&[0u8; 12]);
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(&body);
    let (g, s) = snapfile::decode("old", &f).unwrap();
    assert_eq!((g, s.meta.index, &s.data[..]), (3, 42, &b"data"[..]));
    let mut want = ConfState::new(&[1, 2, 4], &[5]);
    want.voters_outgoing = vec![1, 2, 3];
    want.placements.insert(
        2,
        crate::raft::Placement {
            replica: 3,
            node: 3,
        },
    );
    want.next_replica_id = 6;
    assert_eq!(s.conf, want);
    // A leader whose latest snapshot is such a file sends chunks of it.
    in_temp_dir(move |d| async move {
        std::fs::write(d.join(snapfile::file_name(3, 42)), &f).unwrap();
        let chunk = snapfile::read_chunk(&d, 3, 42, 1, 3).await.unwrap();
        assert_eq!(&chunk[..], b"ata");
    });
}

/// The WAL keeps a group's latest durable hard state while a newer one is
/// in flight: a crash before the newer one lands recovers the older one.
/// (`needed_lsn` followed the hard state last *written*, so the only
/// durable hard-state record could be released while the new one was
/// still in flight, and a node that had voted restarted with term 0 and no
/// vote.)
/// Term `term`, vote for node 1.
fn hs(term: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit: 0,
    }
}

#[test]
fn the_latest_durable_hard_state_is_kept_while_a_newer_one_is_in_flight() {
    let mut g = GroupLog::default();
    g.note_written(1, Some(hs(2)), Some((1, 1)));
    g.note_durable(1);
    g.note_written(2, None, Some((2, 2)));
    g.note_durable(2);
    // A snapshot through index 1: record 2 holds the live entries.
    g.release_through(1);
    assert_eq!(g.needed_lsn(), 1, "record 1 holds the hard state");
    // A new hard state, written, not durable yet.
    g.note_written(3, Some(hs(3)), None);
    assert_eq!(
        g.needed_lsn(),
        1,
        "record 1 is still the latest durable hard state"
    );
    g.note_durable(2);
    assert_eq!(g.needed_lsn(), 1);
    g.note_durable(3);
    assert_eq!(g.needed_lsn(), 2, "record 3 is durable: record 1 can go");
}

/// Under load a new hard state is written with every Ready while the
/// previous one is still in flight: the durable one must still advance as
/// each lands, or it pins the WAL.
#[test]
fn the_durable_hard_state_advances_while_newer_ones_are_in_flight() {
    let mut g = GroupLog::default();
    for lsn in 1..=100 {
        g.note_written(lsn, Some(hs(lsn)), Some((lsn, lsn)));
        g.note_durable(lsn - 1);
        assert_eq!(g.hs_lsn_durable, lsn - 1);
    }
    assert!(g.hs_lsns_in_flight.len() <= 1);
}

/// At run time a snapshot releases only the records wholly at or below
/// it: the record holding the next entry, and the ones after it, hold
/// entries this replica may have acknowledged. (The runtime path used
/// replay's `trim_to_snapshot`, which, finding no entries in a runtime
/// `GroupLog`, dropped every record's LSN: the WAL could then be released
/// up to the latest hard state, past acknowledged entries, and a restart
/// came back without them.)
#[test]
fn a_snapshot_at_run_time_keeps_the_records_of_later_entries() {
    let hs = HardState {
        term: 1,
        vote: 1,
        commit: 0,
    };
    let mut g = GroupLog::default();
    g.note_written(1, None, Some((1, 5)));
    g.note_written(2, None, Some((6, 10)));
    g.note_written(3, Some(hs), None);
    g.note_durable(3);
    g.release_through(7);
    assert_eq!(g.needed_lsn(), 2, "record 2 holds entries 8..=10");
    g.release_through(3);
    assert_eq!(g.needed_lsn(), 2, "an older snapshot releases nothing more");
    g.note_written(4, None, Some((11, 12)));
    g.release_through(10);
    assert_eq!(g.needed_lsn(), 3, "record 3 holds the hard state");
    // A snapshot of everything written releases every entry record (an
    // idle group's last record must not pin the WAL).
    g.note_written(5, Some(hs), None);
    g.note_durable(5);
    g.release_through(12);
    assert_eq!(g.needed_lsn(), 5, "only the hard state is needed");
    assert!(g.record_lsns.is_empty());
}

/// `split_records`: the hard state rides with the first record only, each
/// record fits `record_bytes_max` (one oversized entry goes alone), and
/// nothing to write is no record.
#[test]
fn records_are_split_at_record_bytes_max_with_the_hard_state_first() {
    let entries: Vec<Entry> = (1..=5).map(|i| e(i, 1, "0123456789abcdef")).collect();
    let max = record_bytes(true, &entries[..2]);
    let split: Vec<_> = split_records(Some(hs(1)), &entries, max).collect();
    let shapes: Vec<(bool, usize)> = split.iter().map(|(h, c)| (h.is_some(), c.len())).collect();
    assert_eq!(shapes, vec![(true, 2), (false, 2), (false, 1)]);
    assert!(split
        .iter()
        .all(|(h, c)| record_bytes(h.is_some(), c) <= max));
    let only_hs: Vec<_> = split_records(Some(hs(1)), &[], max).collect();
    assert_eq!(only_hs.len(), 1);
    assert_eq!(split_records(None, &[], max).count(), 0);
    assert_eq!(
        split_records(None, &entries, 1).count(),
        5,
        "one entry per record at least"
    );
}

/// `LogStore::rewrite_records`: fifty idle groups' hard states are
/// written as one batch that costs one sync (not one each), every group's
/// log counts its new record as durable, and a replay finds them all.
#[test]
fn the_log_store_rewrites_many_hard_states_with_one_sync() {
    use crate::storage::{Catalog, LogStore, Replay};
    use ringraft_wal::{MemDisk, Wal, WalOptions};
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async {
            let disk = MemDisk::new();
            let opts = WalOptions::default();
            let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
                .await
                .unwrap();
            let mut store = LogStore::new(wal, Catalog::default(), 2048);
            // Replay keeps the logs of the replicas in the catalog only.
            let creates: Vec<crate::storage::CatalogOp> = (0..50)
                .map(|g| {
                    crate::storage::CatalogOp::Create(crate::storage::ReplicaDesc {
                        group: g,
                        replica: 1,
                        voters: vec![1],
                        descriptor: Bytes::new(),
                    })
                })
                .collect();
            store.append_catalog(false, &creates).await.unwrap();
            let mut logs: Vec<GroupLog> = (0..50).map(|_| GroupLog::default()).collect();
            let mut batch: Vec<crate::storage::RecordRewrite> = logs
                .iter_mut()
                .enumerate()
                .map(|(g, log)| crate::storage::RecordRewrite {
                    group: g as u64,
                    hs: hs(g as u64 + 1),
                    entries: Vec::new(),
                    log,
                })
                .collect();
            let syncs = store.wal().stats().syncs;
            assert_eq!(store.rewrite_records(&mut batch).await.unwrap(), 50);
            assert_eq!(
                store.wal().stats().syncs - syncs,
                1,
                "one sync for the batch"
            );
            for (g, log) in logs.iter().enumerate() {
                assert_eq!(log.hs, hs(g as u64 + 1));
                assert!(log.needed_lsn() > 0);
            }
            drop(store);
            let mut r = Replay::default();
            Wal::open(disk, opts, |l, p| r.on_record(l, p))
                .await
                .unwrap();
            r.finish();
            for g in 0..50u64 {
                assert_eq!(r.groups[&g].hs, hs(g + 1), "group {g}");
            }
        });
}

/// A WAL of 64 KiB segments and 8 KiB queue and batches.
fn small_wal() -> ringraft_wal::WalOptions {
    ringraft_wal::WalOptions {
        segment_bytes: 64 << 10,
        record_bytes_max: 1024,
        batch_bytes_max: 8192,
        write_chunk_bytes: 4096,
        queue_bytes_max: 8192,
        ..ringraft_wal::WalOptions::default()
    }
}

/// `LogStore::rewrite_records` with entries: an idle group's small log
/// (its only records in the oldest segments) is written again whole with
/// its hard state, its log then needs only the new record, the segments
/// before it are released, and a replay finds every entry and the hard
/// state, as one does before the release (the old records still there).
/// With a snapshot: the entries past it are written, and the records
/// before them are not needed any more either.
#[test]
fn the_log_store_rewrites_a_small_log_whole_and_the_old_segments_go() {
    use crate::storage::{open_wal, Catalog, LogStore, RecordRewrite};
    use ringraft_wal::MemDisk;
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async {
            let disk = MemDisk::new();
            let opts = small_wal();
            let (wal, _, _) = open_wal(disk.clone(), opts.clone()).await.unwrap();
            let mut store = LogStore::new(wal, Catalog::default(), 1024);
            let entries: Vec<Entry> = (1..=3).map(|i| e(i, 2, "v")).collect();
            let (mut log7, mut log9, mut filler) = (
                GroupLog::default(),
                GroupLog::default(),
                GroupLog::default(),
            );
            for x in &entries {
                store
                    .append_group(7, Some(hs(2)), std::slice::from_ref(x), &mut log7)
                    .await
                    .unwrap();
            }
            let five: Vec<Entry> = (1..=5).map(|i| e(i, 2, "w")).collect();
            store
                .append_group(9, Some(hs(2)), &five, &mut log9)
                .await
                .unwrap();
            let payload = "x".repeat(900);
            let mut last = 0;
            for i in 1..=200 {
                last = store
                    .append_group(8, None, &[e(i, 1, &payload)], &mut filler)
                    .await
                    .unwrap()
                    .0;
            }
            store.wal().wait_durable(last).await.unwrap();
            for l in [&mut log7, &mut log9] {
                l.note_durable(last);
            }
            let old = log7.needed_lsn();
            // Group 9 snapshotted through 3: its entries 4 and 5 go again.
            let mut batch = vec![
                RecordRewrite {
                    group: 7,
                    hs: hs(3),
                    entries: entries.clone(),
                    log: &mut log7,
                },
                RecordRewrite {
                    group: 9,
                    hs: hs(3),
                    entries: five[3..].to_vec(),
                    log: &mut log9,
                },
            ];
            assert_eq!(store.rewrite_records(&mut batch).await.unwrap(), 2);
            assert!(log7.needed_lsn() > last, "still needs {old}");
            assert_eq!(log7.record_lsns.len(), 1);
            assert_eq!(log9.record_lsns.keys().copied().collect::<Vec<_>>(), [4]);
            assert!(log9.needed_lsn() > last);
            // A crash now, nothing released: the old records replay first,
            // the new ones over them, to the same logs.
            let (_, mut kept, _) = open_wal(disk.fork(), opts.clone()).await.unwrap();
            assert_eq!(kept.groups[&7].entries, entries);
            assert_eq!(kept.groups[&7].hs, hs(3));
            let g9 = kept.groups.get_mut(&9).unwrap();
            assert_eq!(g9.take_restart(Some((3, 2))).entries, five[3..].to_vec());
            let released = store
                .release(log7.needed_lsn().min(log9.needed_lsn()))
                .await
                .unwrap();
            assert!(released >= 2, "{released} segments released");
            drop(store);
            let (_, mut replay, _) = open_wal(disk, opts).await.unwrap();
            let g = &replay.groups[&7];
            assert_eq!(g.hs, hs(3));
            assert_eq!(g.entries, entries);
            let g9 = replay.groups.get_mut(&9).unwrap();
            assert_eq!(g9.hs, hs(3));
            let restart = g9.take_restart(Some((3, 2)));
            assert_eq!(restart.entries, five[3..].to_vec());
        });
}

/// `LogStore::append_group` past the WAL's `queue_bytes_max`: a write of
/// many records waits for space (the oldest writes landing) and goes on
/// where it stopped; the install marker pending goes first; replay finds
/// every entry once, in order, after the marker.
#[test]
fn the_log_store_waits_for_queue_space_mid_write_and_loses_no_record() {
    use crate::storage::{open_wal, Catalog, LogStore};
    use ringraft_wal::MemDisk;
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async {
            let disk = MemDisk::new();
            let opts = small_wal();
            let (wal, _, _) = open_wal(disk.clone(), opts.clone()).await.unwrap();
            let store = LogStore::new(wal, Catalog::default(), 1024);
            let payload = "x".repeat(900);
            let entries: Vec<Entry> = (1..=60).map(|i| e(i, 2, &payload)).collect();
            let mut log = GroupLog {
                install_pending: Some((0, 1)),
                ..GroupLog::default()
            };
            let (lsn, records) = store
                .append_group(7, Some(hs(3)), &entries, &mut log)
                .await
                .unwrap();
            assert_eq!(records, 61, "the marker, then one entry per record");
            assert!(log.install_pending.is_none());
            assert_eq!(log.record_lsns.len(), 60);
            store.wal().wait_durable(lsn).await.unwrap();
            assert!(
                store.wal().stats().syncs > 5,
                "60 KB through an 8 KB queue waited for space several times"
            );
            drop(store);
            let (_, replay, _) = open_wal(disk, opts).await.unwrap();
            let g = &replay.groups[&7];
            assert_eq!(g.hs, hs(3));
            assert_eq!(
                g.entries.iter().map(|x| x.index).collect::<Vec<_>>(),
                (1..=60).collect::<Vec<_>>()
            );
        });
}

/// `replace_file_direct` writes a file of any length (not a multiple of
/// the block size) from parts, past the page cache: read back, it is the
/// parts' bytes, under its final name only; and it replaces a longer file
/// of the same name whole.
#[test]
fn a_direct_write_of_any_length_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.snap");
    let p = path.clone();
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async move {
            let head: Vec<u8> = (0..77u32).map(|i| i as u8).collect();
            let body: Vec<u8> = (0..(3 << 20) + 4099u32).map(|i| (i % 251) as u8).collect();
            crate::storage::replace_file_direct(&p, &[&head, &body])
                .await
                .unwrap();
            let got = std::fs::read(&p).unwrap();
            assert_eq!(got.len(), head.len() + body.len());
            assert!(got[..77] == head[..] && got[77..] == body[..]);
            crate::storage::replace_file_direct(&p, &[b"short"])
                .await
                .unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"short");
        });
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f.snap")]);
}

/// A chunk read from a snapshot file is the data's bytes at that offset
/// (after a header and membership of any length, at unaligned offsets);
/// a chunk past the data's end, another index's file and a missing file
/// are errors, not bytes.
#[test]
fn a_snapshot_chunk_reads_back_the_datas_bytes_at_its_offset() {
    use crate::raft::{ConfState, Snapshot, SnapshotMeta};
    use crate::storage::snapfile;
    in_temp_dir(|d| async move {
        let data: Vec<u8> = (0..(2 << 20) + 333u32).map(|i| (i % 253) as u8).collect();
        let snap = Snapshot {
            meta: SnapshotMeta { index: 42, term: 3 },
            conf: ConfState::new(&[1, 2, 3], &[4]),
            data: bytes::Bytes::from(data.clone()),
        };
        snapfile::write(&d, 7, &snap, crc32fast::hash(&data))
            .await
            .unwrap();
        for (at, len) in [(0, 1000), (1, 4096), (4095, 1 << 20), (data.len() - 5, 5)] {
            let got = snapfile::read_chunk(&d, 7, 42, at as u64, len)
                .await
                .unwrap();
            assert!(got[..] == data[at..at + len], "chunk at {at}, {len} bytes");
        }
        let past = snapfile::read_chunk(&d, 7, 42, data.len() as u64 - 4, 5).await;
        assert!(
            matches!(past, Err(snapfile::SnapFileError::Corrupt { why, .. }) if why.contains("past the end"))
        );
        // Another index's name with this file's contents.
        std::fs::copy(
            d.join(snapfile::file_name(7, 42)),
            d.join(snapfile::file_name(7, 43)),
        )
        .unwrap();
        let other = snapfile::read_chunk(&d, 7, 43, 0, 10).await;
        assert!(
            matches!(other, Err(snapfile::SnapFileError::Corrupt { why, .. }) if why.contains("disagree"))
        );
        let gone = snapfile::read_chunk(&d, 7, 41, 0, 10).await;
        assert!(matches!(gone, Err(snapfile::SnapFileError::Io { .. })));
        // A file smaller than a block.
        let small = Snapshot {
            meta: SnapshotMeta { index: 5, term: 1 },
            conf: ConfState::new(&[1, 2, 3], &[]),
            data: bytes::Bytes::from(data[..680].to_vec()),
        };
        snapfile::write(&d, 8, &small, crc32fast::hash(&small.data))
            .await
            .unwrap();
        let got = snapfile::read_chunk(&d, 8, 5, 0, 680).await.unwrap();
        assert!(got[..] == data[..680]);
    });
}

/// At start, only each group's latest snapshot file is kept: older ones
/// (kept at run time while a follower was being sent them) are removed.
#[test]
fn loading_snapshots_removes_superseded_files() {
    use crate::raft::{ConfState, Snapshot, SnapshotMeta};
    use crate::storage::snapfile;
    in_temp_dir(|d| async move {
        for index in [5, 9] {
            let snap = Snapshot {
                meta: SnapshotMeta { index, term: 1 },
                conf: ConfState::new(&[1], &[]),
                data: bytes::Bytes::from(vec![index as u8; 100]),
            };
            snapfile::write(&d, 2, &snap, crc32fast::hash(&snap.data))
                .await
                .unwrap();
        }
        assert_eq!(snapfile::list(&d).unwrap().len(), 2);
        let loaded = snapfile::load_latest(&d).await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].1.meta.index, 9);
        let left: Vec<_> = snapfile::list(&d)
            .unwrap()
            .into_iter()
            .map(|(g, i, _)| (g, i))
            .collect();
        assert_eq!(left, vec![(2, 9)]);
    });
}

/// Runs `f` on a glommio executor, given a temporary directory.
fn in_temp_dir<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce(std::path::PathBuf) -> F + Send + 'static,
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async move { f(d).await });
}
