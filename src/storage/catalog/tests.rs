use super::*;
use crate::raft::{Entry, EntryKind, HardState};
use crate::storage::{encode_record, record_bytes, Replay};

fn create(group: u64, replica: u64) -> CatalogOp {
    CatalogOp::Create(ReplicaDesc {
        group,
        replica,
        voters: vec![replica, replica + 100, replica + 200],
        descriptor: Bytes::from(format!("range of {group}")),
    })
}

fn tomb(group: u64, replica: u64) -> CatalogOp {
    CatalogOp::Tombstone { group, replica }
}

fn cat_rec(restate: bool, ops: &[CatalogOp]) -> Vec<u8> {
    let mut b = vec![0u8; catalog_record_bytes(ops)];
    encode_catalog(&mut b, restate, ops);
    b
}

fn entry(index: u64, data: &str) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn group_rec(group: u64, entries: &[Entry]) -> Vec<u8> {
    let hs = HardState {
        term: 1,
        vote: 0,
        commit: 0,
    };
    let mut b = vec![0u8; record_bytes(true, entries)];
    encode_record(&mut b, group, Some(&hs), entries);
    b
}

fn live_groups(c: &Catalog) -> Vec<(u64, u64)> {
    c.live().map(|d| (d.group, d.replica)).collect()
}

#[test]
fn catalog_records_round_trip_and_damage_is_an_error() {
    let ops = vec![create(1, 3), tomb(2, 9), create(3, 4)];
    for restate in [false, true] {
        let b = Bytes::from(cat_rec(restate, &ops));
        assert_eq!(decode_catalog(7, &b).unwrap(), (restate, ops.clone()));
        for cut in 0..b.len() {
            assert!(decode_catalog(7, &b.slice(..cut)).is_err(), "cut {cut}");
        }
    }
    // A group record is not a catalog record, and the reverse.
    let g = Bytes::from(group_rec(1, &[entry(1, "x")]));
    assert!(decode_catalog(1, &g).is_err());
    assert!(crate::storage::decode_record(1, &Bytes::from(cat_rec(false, &ops))).is_err());
}

#[test]
fn replay_does_not_depend_on_the_order_of_restated_entries() {
    // Any order of the same restated entries: the same live set.
    let ops = [
        create(1, 3),
        tomb(1, 2),
        create(2, 5),
        tomb(2, 5),
        create(3, 1),
        tomb(4, 8),
    ];
    let mut expected = None;
    let n = ops.len();
    // Every rotation and its reverse.
    for start in 0..n {
        for rev in [false, true] {
            let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
            if rev {
                order.reverse();
            }
            let mut c = Catalog::default();
            for (lsn, &i) in order.iter().enumerate() {
                c.apply(lsn as u64 + 1, true, ops[i].clone());
            }
            let got = (live_groups(&c), c.tombstones().collect::<Vec<_>>());
            match &expected {
                None => expected = Some(got),
                Some(e) => assert_eq!(&got, e, "order {order:?}"),
            }
        }
    }
    let (live, tombs) = expected.unwrap();
    assert_eq!(live, vec![(1, 3), (3, 1)]);
    assert_eq!(tombs, vec![(1, 2), (2, 5), (4, 8)]);
}

#[test]
fn a_destroyed_replica_is_never_created_again_and_limits_are_enforced() {
    let mut c = Catalog::default();
    let CatalogOp::Create(d) = create(1, 3) else {
        unreachable!()
    };
    c.check_create(&d).unwrap();
    c.apply(1, false, CatalogOp::Create(d.clone()));
    assert_eq!(
        c.check_create(&d),
        Err(CatalogError::Exists {
            group: 1,
            replica: 3
        })
    );
    let t = c.tombstone_for(1).unwrap();
    assert_eq!(t, tomb(1, 3));
    assert_eq!(c.apply(2, false, t), LogEffect::Discard);
    assert_eq!(
        c.tombstone_for(1),
        Err(CatalogError::NotHosted { group: 1 })
    );
    // The same replica id, or an older one, is refused; a newer one is
    // taken (the group re-added here).
    for r in [1, 3] {
        let CatalogOp::Create(old) = create(1, r) else {
            unreachable!()
        };
        assert!(matches!(
            c.check_create(&old),
            Err(CatalogError::Tombstoned { tombstone: 3, .. })
        ));
        // Replay of a stale create (restated or not) does not revive it.
        assert_eq!(c.apply(3, false, CatalogOp::Create(old)), LogEffect::Keep);
        assert!(c.get(1).is_none());
    }
    let CatalogOp::Create(new) = create(1, 4) else {
        unreachable!()
    };
    c.check_create(&new).unwrap();
    // Limits: one above each is refused, naming the limit.
    let mut big = new.clone();
    big.voters = (4..4 + CATALOG_VOTERS_MAX as u64 + 1).collect();
    let e = c.check_create(&big).unwrap_err();
    assert!(e.to_string().contains("CATALOG_VOTERS_MAX"), "{e}");
    big.voters = (4..4 + CATALOG_VOTERS_MAX as u64).collect();
    c.check_create(&big).unwrap();
    big.descriptor = Bytes::from(vec![7u8; CATALOG_DESCRIPTOR_BYTES_MAX + 1]);
    let e = c.check_create(&big).unwrap_err();
    assert!(
        e.to_string().contains("CATALOG_DESCRIPTOR_BYTES_MAX"),
        "{e}"
    );
    big.descriptor = Bytes::from(vec![7u8; CATALOG_DESCRIPTOR_BYTES_MAX]);
    c.check_create(&big).unwrap();
    // The largest entry round-trips through a record.
    let ops = [CatalogOp::Create(big)];
    let b = Bytes::from(cat_rec(false, &ops));
    assert_eq!(decode_catalog(1, &b).unwrap().1, ops.to_vec());
    let mut notvoter = new;
    notvoter.voters = vec![100, 200];
    assert!(matches!(
        c.check_create(&notvoter),
        Err(CatalogError::NotAVoter { .. })
    ));
    // No voters: a replica that learns its membership from a snapshot.
    notvoter.voters.clear();
    c.check_create(&notvoter).unwrap();
}

#[test]
fn a_recreated_group_does_not_inherit_the_log_of_its_destroyed_replica() {
    let mut r = Replay::default();
    r.on_record(1, &cat_rec(false, &[create(5, 1)]));
    r.on_record(2, &group_rec(5, &[entry(1, "old-a"), entry(2, "old-b")]));
    r.on_record(3, &cat_rec(false, &[tomb(5, 1)]));
    r.on_record(4, &cat_rec(false, &[create(5, 2)]));
    r.on_record(5, &group_rec(5, &[entry(1, "new")]));
    assert_eq!(r.finish(), 0);
    assert!(r.error.is_none());
    assert_eq!(r.catalog.get(5).map(|d| d.replica), Some(2));
    let log = &r.groups[&5];
    assert_eq!(log.entries, vec![entry(1, "new")]);
}

#[test]
fn a_restated_create_keeps_the_log_it_restates_and_finish_drops_unhosted_logs() {
    // What the WAL holds after its head was released: the replica's entry
    // records from LSN 10, the restated create at LSN 20.
    let mut r = Replay::default();
    r.on_record(10, &group_rec(7, &[entry(1, "a"), entry(2, "b")]));
    r.on_record(12, &group_rec(9, &[entry(1, "of a group not hosted")]));
    r.on_record(20, &cat_rec(true, &[tomb(3, 1), create(7, 2)]));
    r.on_record(21, &group_rec(7, &[entry(3, "c")]));
    assert_eq!(r.finish(), 1, "group 9's log is dropped");
    assert_eq!(r.groups[&7].entries.len(), 3);
    assert_eq!(r.catalog.needed_lsn(), 20);
    assert_eq!(r.catalog.stated_at_or_below(19), vec![]);
    assert_eq!(
        r.catalog.stated_at_or_below(20),
        vec![tomb(3, 1), create(7, 2)]
    );
}

#[test]
fn catalog_chunks_fit_the_record_limit() {
    let ops: Vec<CatalogOp> = (0..50).map(|g| create(g, 1)).collect();
    let max = catalog_record_bytes(&ops[..3]);
    let chunks = chunk_ops(&ops, max);
    assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 50);
    assert!(chunks.iter().all(|c| catalog_record_bytes(c) <= max));
    assert!(chunks.iter().all(|c| c.len() == 3 || c.len() == 50 % 3));
}

/// A crash at any point of "create a replica, write its first records,
/// destroy another" recovers each operation to before or after it, never
/// between: through the fault-injecting `MemDisk`, for many crash points
/// and tear patterns.
#[test]
fn a_crash_during_create_or_destroy_recovers_to_one_of_the_two_states() {
    use ringraft_wal::{CrashMode, MemDisk, Wal, WalOptions};
    // Small segments and batches: records tear independently.
    let opts = WalOptions {
        segment_bytes: 16 * 1024,
        record_bytes_max: 2048,
        batch_bytes_max: 8 * 1024,
        write_chunk_bytes: 4096,
        queue_bytes_max: 32 * 1024,
        ..WalOptions::default()
    };
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..120u64 {
        let opts = opts.clone();
        let (created, destroyed) = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(async move {
                let disk = MemDisk::new();
                let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
                    .await
                    .unwrap();
                // Before the crash window: group 5 lives with a durable log.
                append_catalog(&wal, &mut Catalog::default(), false, &[create(5, 1)], 2048)
                    .await
                    .unwrap();
                wal.append(&group_rec(5, &[entry(1, "five")]))
                    .await
                    .unwrap();
                // The window: nothing below is waited for, and the crash
                // comes after a seeded number of scheduler turns.
                let steps: Vec<Vec<u8>> = vec![
                    cat_rec(false, &[create(7, 2)]),
                    group_rec(7, &[entry(1, "seven-a")]),
                    group_rec(7, &[entry(2, "seven-b")]),
                    cat_rec(false, &[tomb(5, 1)]),
                ];
                // Steps before `durable` are waited for; the rest are in
                // flight when the crash tears a seeded part of them.
                let durable = (seed % 5) as usize;
                let turns = seed / 5 % 4;
                let mut submitted = 0;
                for (i, s) in steps.iter().enumerate() {
                    let lsn = wal.try_submit(s).unwrap();
                    submitted += 1;
                    if i < durable {
                        wal.wait_durable(lsn).await.unwrap();
                    }
                }
                for _ in 0..turns {
                    futures_lite::future::yield_now().await;
                }
                assert_eq!(submitted, steps.len());
                disk.crash(CrashMode::Random(seed));
                drop(wal);
                let mut r = Replay::default();
                let (_wal, _) = Wal::open(disk.clone(), opts, |l, p| r.on_record(l, p))
                    .await
                    .unwrap();
                assert!(r.error.is_none(), "seed {seed}");
                r.finish();
                let created = r.catalog.get(7).is_some();
                let destroyed = r.catalog.get(5).is_none();
                // Group 7: either not there (and no log), or there with a
                // prefix of what was written after its create.
                match r.groups.get(&7) {
                    None => {}
                    Some(log) => {
                        assert!(created, "seed {seed}: a log for a group never created");
                        let want = [entry(1, "seven-a"), entry(2, "seven-b")];
                        assert_eq!(log.entries, want[..log.entries.len()], "seed {seed}");
                    }
                }
                // Group 5: live with its whole log, or destroyed with none.
                if destroyed {
                    assert!(!r.groups.contains_key(&5), "seed {seed}");
                    assert!(created, "seed {seed}: the WAL recovers a prefix");
                } else {
                    assert_eq!(r.groups[&5].entries, vec![entry(1, "five")], "seed {seed}");
                }
                (created, destroyed)
            });
        outcomes.insert((created, destroyed));
    }
    // The sweep must reach every state: neither, the create only, both.
    let all = [(false, false), (true, false), (true, true)];
    assert_eq!(outcomes, all.into_iter().collect(), "{outcomes:?}");
}
