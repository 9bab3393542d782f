//! WAL behaviour under faults, through the fault-injecting `MemDisk`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use glommio::LocalExecutorBuilder;
use proptest::prelude::*;
use ringraft_wal::format::{decode_record, record_bytes, Slot, BLOCK_BYTES};
use ringraft_wal::{
    CrashMode, MemDisk, RecoveryMode, Wal, WalError, WalOptions, TAIL_REWRITE_BYTES_MAX,
    WRITE_NUDGES_IN_FLIGHT_MAX, WRITE_NUDGE_MS,
};

fn run<T>(f: impl Future<Output = T>) -> T {
    LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f)
}

fn small_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 16 * 1024,
        record_bytes_max: 2048,
        batch_bytes_max: 8 * 1024,
        // Two concurrent writes per full flush: crashes tear them independently.
        write_chunk_bytes: 4096,
        queue_bytes_max: 32 * 1024,
        recovery: RecoveryMode::Strict,
        // The zero writes go through the faulty disk too.
        zero_segments: true,
        ..WalOptions::default()
    }
}

/// Deterministic payload for (seed, i): length 0..=700, bytes from both.
fn payload(seed: u64, i: u64) -> Vec<u8> {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = (next() % 701) as usize;
    (0..len).map(|_| next() as u8).collect()
}

async fn reopen(
    disk: &MemDisk,
    opts: WalOptions,
) -> (
    Vec<(u64, Vec<u8>)>,
    ringraft_wal::RecoveryReport,
    Wal<MemDisk>,
) {
    let mut got = Vec::new();
    let (wal, rep) = Wal::open(disk.clone(), opts, |l, p| got.push((l, p.to_vec())))
        .await
        .unwrap_or_else(|e| panic!("reopen failed: {e}"));
    (got, rep, wal)
}

/// Offset of the record with `lsn` in a segment image (records sit at
/// 8-byte offsets; a flush may start mid-block).
fn record_offset(data: &[u8], lsn: u64) -> usize {
    (BLOCK_BYTES..data.len())
        .step_by(8)
        .find(|&o| matches!(decode_record(&data[o..], 1 << 20), Slot::Record(r) if r.lsn == lsn))
        .unwrap_or_else(|| panic!("no record with LSN {lsn}"))
}

fn assert_consecutive(got: &[(u64, Vec<u8>)]) {
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "recovered LSNs must be consecutive");
    }
}

/// Concurrent appenders, a crash after `crash_after` scheduler yields that
/// keeps a random part of what was not synced, then reopen: the log must hold
/// every acknowledged record, only submitted records, with exact payloads, in
/// LSN order; appending after the reopen and reopening again must keep it all.
fn crash_case(seed: u64, appenders: u64, crash_after: u64) {
    run(async move {
        let disk = MemDisk::new();
        let opts = small_opts();
        let (wal, _, _) = {
            let (w, r) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
                .await
                .unwrap();
            (Rc::new(w), r, ())
        };
        let submitted: Rc<RefCell<BTreeMap<u64, Vec<u8>>>> = Default::default();
        let acked: Rc<RefCell<Vec<u64>>> = Default::default();
        let mut tasks = Vec::new();
        for a in 0..appenders {
            let (wal, submitted, acked) = (wal.clone(), submitted.clone(), acked.clone());
            tasks.push(glommio::spawn_local(async move {
                for i in 0..1000u64 {
                    let p = payload(seed, a * 1_000_000 + i);
                    let lsn = match wal.submit(&p).await {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                    submitted.borrow_mut().insert(lsn, p);
                    if i % 3 == a % 3 {
                        // Sometimes do not wait: several records in flight per task.
                        continue;
                    }
                    match wal.wait_durable(lsn).await {
                        Ok(()) => acked.borrow_mut().push(lsn),
                        Err(_) => return,
                    }
                }
            }));
        }
        let d = disk.clone();
        let crasher = glommio::spawn_local(async move {
            for _ in 0..crash_after {
                futures_lite::future::yield_now().await;
            }
            d.crash(CrashMode::Random(seed));
        });
        crasher.await;
        for t in tasks {
            t.await;
        }
        drop(wal);

        let (got, _, wal2) = reopen(&disk, opts.clone()).await;
        assert_consecutive(&got);
        let last = got.last().map_or(0, |r| r.0);
        {
            let sub = submitted.borrow();
            for (l, p) in &got {
                assert_eq!(
                    sub.get(l),
                    Some(p),
                    "seed {seed}: recovered LSN {l} differs from what was submitted"
                );
            }
            if let Some(first) = got.first() {
                assert_eq!(
                    first.0, 1,
                    "seed {seed}: nothing was released, the log starts at 1"
                );
            }
            for a in acked.borrow().iter() {
                assert!(
                    *a <= last,
                    "seed {seed}: acknowledged LSN {a} lost (recovered up to {last})"
                );
            }
        }

        // Append after recovery, then reopen: old and new records, no stale bytes.
        let mut expect = got.clone();
        for i in 0..20 {
            let p = payload(seed ^ 0xABCD, i);
            let l = wal2.append(&p).await.unwrap();
            assert_eq!(l, last + 1 + i);
            expect.push((l, p));
        }
        wal2.close().await.unwrap();
        let (again, rep, _w) = reopen(&disk, opts).await;
        assert_eq!(again, expect, "seed {seed}: second reopen differs");
        assert!(rep.torn_tail.is_none());
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn crash_keeps_every_acknowledged_record(seed in any::<u64>(), appenders in 1u64..12, crash_after in 0u64..400) {
        crash_case(seed, appenders, crash_after);
    }
}

#[test]
fn crash_regression_seeds() {
    // Fixed cases that exercise rollover during the crash window.
    for seed in 0..8 {
        crash_case(seed, 8, 150 + seed * 17);
    }
}

/// Writes `n` single-record flushes, then one flush of `last_batch` records.
/// Returns the payloads by LSN.
async fn write_log(disk: &MemDisk, opts: WalOptions, n: u64, last_batch: u64) -> Vec<Vec<u8>> {
    let (wal, _) = Wal::open(disk.clone(), opts, |_, _| {}).await.unwrap();
    let mut all = Vec::new();
    for i in 0..n {
        let p = payload(7, i);
        wal.append(&p).await.unwrap();
        all.push(p);
    }
    let mut last = 0;
    for i in 0..last_batch {
        let p = payload(8, i);
        last = wal.try_submit(&p).unwrap();
        all.push(p);
    }
    if last_batch > 0 {
        wal.wait_durable(last).await.unwrap();
    }
    wal.close().await.unwrap();
    all
}

#[test]
fn torn_last_flush_at_every_byte_keeps_exactly_the_whole_records() {
    run(async {
        let opts = WalOptions {
            segment_bytes: 64 * 1024,
            ..small_opts()
        };
        let disk = MemDisk::new();
        let all = write_log(&disk, opts.clone(), 5, 4).await;
        let (file, pos, len) = disk.last_write().unwrap();
        let original = disk.contents(&file).unwrap();
        // The last flush's records start at `t` in its write: before them,
        // the earlier records of the block it starts in, written again
        // unchanged (a tear there leaves the same bytes: not simulated).
        let t = record_offset(&original, 6) - pos as usize;
        assert!(
            0 < t && t < BLOCK_BYTES,
            "the flush starts in its write's first block, after earlier records ({t})"
        );
        // (start, end of payload) of each record within the last flush.
        let mut spans = Vec::new();
        let mut off = t;
        for p in &all[5..] {
            spans.push((off, off + 24 + p.len()));
            off += record_bytes(p.len());
        }
        let used = off;
        assert!(used <= len);
        let flush = &original[pos as usize..pos as usize + len];
        for (fill, tear_name) in [(0u8, "zeros"), (0xA5u8, "garbage")] {
            for k in t..=used {
                let d = disk.fork();
                d.fill_range(&file, pos as usize + k, pos as usize + len, fill);
                let (got, rep, _w) = reopen(&d, opts.clone()).await;
                // A record survives the tear iff none of its checksummed bytes changed.
                let whole = spans
                    .iter()
                    .take_while(|(s, e)| flush[k.max(*s)..(*e).max(k)].iter().all(|&b| b == fill))
                    .count();
                assert_eq!(
                    got.len(),
                    5 + whole,
                    "tear with {tear_name} at byte {k} of the last flush"
                );
                for (l, p) in &got {
                    assert_eq!(&all[*l as usize - 1], p);
                }
                if fill != 0 && k < len {
                    let t = rep
                        .torn_tail
                        .unwrap_or_else(|| panic!("garbage tear at {k} not reported"));
                    assert_eq!(t.file, format!("memdisk:{file}"));
                    assert!(t.bytes_dropped > 0);
                }
            }
        }
    });
}

#[test]
fn bit_flip_before_a_later_flush_is_corruption_not_truncation() {
    run(async {
        let opts = WalOptions {
            segment_bytes: 1 << 20,
            ..small_opts()
        };
        let disk = MemDisk::new();
        let all = write_log(&disk, opts.clone(), 6, 0).await;
        let seg = disk
            .file_names()
            .into_iter()
            .find(|n| n.ends_with(".wal"))
            .unwrap();
        // Flip a payload bit of record 3 (each record was its own flush).
        let rec3 = record_offset(&disk.contents(&seg).unwrap(), 3);
        disk.flip_bit(&seg, rec3 + 30, 2);
        let err = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .err()
            .expect("corruption must fail open");
        match &err {
            WalError::Corruption { file, offset, .. } => {
                assert_eq!(file, &format!("memdisk:{seg}"));
                assert_eq!(*offset, rec3 as u64);
            }
            e => panic!("expected corruption, got {e}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&seg) && msg.contains(&rec3.to_string()),
            "{msg}"
        );

        // The explicitly chosen salvage mode keeps what precedes the damage.
        let pit = WalOptions {
            recovery: RecoveryMode::PointInTime,
            ..opts.clone()
        };
        let (got, rep, wal) = reopen(&disk, pit).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1, all[1]);
        assert!(rep.corruption_dropped.is_some());
        assert_eq!(wal.next_lsn(), 3);
    });
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corruption() {
    run(async {
        let opts = small_opts();
        let disk = MemDisk::new();
        write_log(&disk, opts.clone(), 80, 0).await;
        let segs: Vec<_> = disk
            .file_names()
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .collect();
        assert!(segs.len() >= 3, "expected rollover, got {segs:?}");
        // Zero out the last flush of the first segment: a clean-looking end
        // that the next segment's first LSN exposes as a gap.
        let first = &segs[0];
        let data = disk.contents(first).unwrap();
        let (len, used) = (data.len(), data.iter().rposition(|&b| b != 0).unwrap());
        disk.fill_range(first, used / BLOCK_BYTES * BLOCK_BYTES, len, 0);
        let err = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .err()
            .expect("must fail");
        assert!(matches!(err, WalError::Corruption { .. }), "{err}");
        // Garbage in the header of a middle segment.
        let disk2 = MemDisk::new();
        write_log(&disk2, opts.clone(), 80, 0).await;
        disk2.flip_bit(&segs[1], 3, 0);
        let err = Wal::open(disk2.clone(), opts, |_, _| {})
            .await
            .err()
            .expect("must fail");
        assert!(
            err.to_string().contains("segment header") || err.to_string().contains("magic"),
            "{err}"
        );
    });
}

#[test]
fn rollover_and_release_before() {
    run(async {
        let opts = small_opts();
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .unwrap();
        for i in 0..60u64 {
            assert_eq!(wal.append(&[i as u8; 1000]).await.unwrap(), i + 1);
        }
        let st = wal.stats();
        // Each of a segment's three data blocks holds 4 records of 1,024
        // bytes (the flushes after a block's first write it again): 12 a
        // segment, so 60 records take 5.
        assert!(
            st.segments_created >= 5,
            "segments created: {}",
            st.segments_created
        );
        assert_eq!(st.segments_live as u64, st.segments_created);
        let removed = wal.release_before(31).await.unwrap();
        assert!(removed > 0);
        // Records below 31 may stay only in the segment that also holds 31.
        let live: Vec<u64> = disk
            .file_names()
            .iter()
            .filter_map(|n| ringraft_wal::format::parse_segment_name(n))
            .collect();
        assert!(
            live[0] <= 31 && live.get(1).is_none_or(|&s| s > 31),
            "live segments {live:?}"
        );
        assert_eq!(
            wal.release_before(31).await.unwrap(),
            0,
            "release is idempotent"
        );
        // segment_start maps an LSN to the first LSN of its live segment.
        let starts: Vec<u64> = {
            let mut v: Vec<u64> = live.clone();
            v.sort_unstable();
            v
        };
        for lsn in starts[0]..=61 {
            let want = *starts.iter().rev().find(|&&s| s <= lsn).unwrap();
            assert_eq!(wal.segment_start(lsn), want, "segment_start({lsn})");
        }
        assert_eq!(wal.segment_start(starts[0] - 1), starts[0] - 1);
        assert_eq!(wal.segment_start(u64::MAX), *starts.last().unwrap());
        // bytes_from counts whole segments from the one holding an LSN
        // through the active one.
        let seg = opts.segment_bytes;
        for lsn in starts[0]..=61 {
            let kept = starts.iter().filter(|&&s| s > lsn).count() as u64 + 1;
            assert_eq!(wal.bytes_from(lsn), kept * seg, "bytes_from({lsn})");
        }
        assert_eq!(wal.bytes_from(0), starts.len() as u64 * seg);
        assert_eq!(wal.bytes_from(u64::MAX), seg);
        wal.close().await.unwrap();
        let (got, rep, _w) = reopen(&disk, opts).await;
        assert_eq!(got.first().unwrap().0, live[0]);
        assert_eq!(got.last().unwrap().0, 60);
        assert_consecutive(&got);
        assert_eq!(rep.first_lsn, Some(live[0]));
        assert_eq!(rep.next_lsn, 61);
    });
}

/// A new WAL with `opts` on an empty in-memory disk.
async fn fresh(opts: &WalOptions) -> (MemDisk, Wal<MemDisk>) {
    let disk = MemDisk::new();
    let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
        .await
        .unwrap();
    (disk, wal)
}

/// Length of the one sealed segment after a reopen (it is cut at its
/// last record) and the records read back.
async fn sealed_length(disk: &MemDisk, opts: WalOptions) -> (usize, Vec<(u64, Vec<u8>)>) {
    let seg = disk
        .file_names()
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .unwrap();
    let (got, _, w) = reopen(disk, opts).await;
    w.close().await.unwrap();
    (disk.contents(&seg).unwrap().len(), got)
}

#[test]
fn small_flushes_share_blocks_instead_of_taking_one_each() {
    // A 1 x 1 load: each 16-byte record its own flush. Before version 2,
    // each took a 4 KiB block (100 records: 4096 + 100 blocks).
    run(async {
        let opts = WalOptions {
            segment_bytes: 1 << 20,
            ..small_opts()
        };
        let (disk, wal) = fresh(&opts).await;
        for i in 0..100u64 {
            wal.append(&[i as u8; 16]).await.unwrap();
        }
        let st = wal.stats();
        assert_eq!(st.syncs, 100, "one flush per record");
        // 4096 / 40 = 102 records fit in block 1: every flush but the first
        // starts in it.
        assert_eq!(st.tail_rewrites, 99);
        assert_eq!(st.bytes_written, 100 * BLOCK_BYTES as u64);
        assert_eq!(st.segment_bytes_used, 100 * record_bytes(16) as u64);
        wal.close().await.unwrap();
        let (len, got) = sealed_length(&disk, opts.clone()).await;
        assert_eq!(len, BLOCK_BYTES + 100 * record_bytes(16));
        assert_eq!(got.len(), 100);
        for (l, p) in &got {
            assert_eq!(p, &vec![(*l - 1) as u8; 16]);
        }

        // `tail_rewrite_bytes_max = 0`: each flush on a block of its own.
        let off = WalOptions {
            tail_rewrite_bytes_max: 0,
            ..opts
        };
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), off.clone(), |_, _| {})
            .await
            .unwrap();
        for i in 0..100u64 {
            wal.append(&[i as u8; 16]).await.unwrap();
        }
        let st = wal.stats();
        assert_eq!(st.tail_rewrites, 0);
        assert_eq!(
            st.segment_bytes_used,
            (99 * BLOCK_BYTES + record_bytes(16)) as u64
        );
        wal.close().await.unwrap();
        let (len, got) = sealed_length(&disk, off).await;
        assert_eq!(len, 100 * BLOCK_BYTES + record_bytes(16));
        assert_eq!(got.len(), 100);
    });
}

#[test]
fn a_flush_past_tail_rewrite_bytes_max_starts_on_a_fresh_block() {
    run(async {
        let opts = WalOptions {
            segment_bytes: 4 << 20,
            record_bytes_max: 256 << 10,
            batch_bytes_max: 1 << 20,
            write_chunk_bytes: 1 << 20,
            queue_bytes_max: 4 << 20,
            ..small_opts()
        };
        let (disk, wal) = fresh(&opts).await;
        // Record 2's write (record 1, then record 2) is exactly the bound;
        // record 3 starts a block; record 4 alone is exactly the bound, so
        // its write after record 3's 40 bytes would pass it; record 4 ends
        // on a block boundary, where record 5 starts.
        let fits = TAIL_REWRITE_BYTES_MAX - record_bytes(16) - 24;
        let over = TAIL_REWRITE_BYTES_MAX - 24;
        let sizes = [16, fits, 16, over, 16];
        for (i, n) in sizes.iter().enumerate() {
            wal.append(&vec![i as u8 + 1; *n]).await.unwrap();
        }
        assert_eq!(wal.stats().tail_rewrites, 1, "record 2 alone");
        wal.close().await.unwrap();
        let seg = disk
            .file_names()
            .into_iter()
            .find(|n| n.ends_with(".wal"))
            .unwrap();
        let data = disk.contents(&seg).unwrap();
        let at: Vec<usize> = (1..=5).map(|l| record_offset(&data, l)).collect();
        let r = |n: usize| record_bytes(n);
        assert_eq!(at[0], BLOCK_BYTES);
        assert_eq!(at[1], at[0] + r(16));
        assert_eq!(r(16) + r(fits), TAIL_REWRITE_BYTES_MAX);
        assert_eq!(at[2], at[1] + r(fits));
        assert_eq!(at[2] % BLOCK_BYTES, 0);
        let end3 = at[2] + r(16);
        assert_eq!(r(over), TAIL_REWRITE_BYTES_MAX);
        assert_eq!(at[3], end3.div_ceil(BLOCK_BYTES) * BLOCK_BYTES);
        assert_eq!(at[4], at[3] + r(over));
        let (len, got) = sealed_length(&disk, opts).await;
        assert_eq!(len, at[4] + r(16));
        assert_eq!(got.len(), 5);
        for ((l, p), n) in got.iter().zip(sizes) {
            assert_eq!(p, &vec![*l as u8; n]);
        }
    });
}

/// A rewrite whose first chunk's buffer has no room for the block's
/// earlier bytes in front (a bound above the 64 KiB a buffer starts at)
/// assembles its write in a new buffer; every record reads back.
#[test]
fn a_rewrite_larger_than_its_chunk_buffer_reads_back() {
    run(async {
        let opts = WalOptions {
            segment_bytes: 4 << 20,
            batch_bytes_max: 1 << 20,
            write_chunk_bytes: 1 << 20,
            queue_bytes_max: 4 << 20,
            tail_rewrite_bytes_max: 1 << 20,
            ..small_opts()
        };
        let (disk, wal) = fresh(&opts).await;
        wal.append(&[1u8; 16]).await.unwrap();
        // 1,638 records of 40 bytes: 65,520 bytes in a 64 KiB buffer, with
        // the block's 40 earlier bytes in front, 65,560.
        let mut last = 0;
        for i in 0..1638u64 {
            last = wal.try_submit(&[(i % 251) as u8; 16]).unwrap();
        }
        wal.wait_durable(last).await.unwrap();
        let st = wal.stats();
        assert_eq!((st.syncs, st.tail_rewrites), (2, 1));
        wal.close().await.unwrap();
        let (len, got) = sealed_length(&disk, opts).await;
        assert_eq!(len, BLOCK_BYTES + 1639 * record_bytes(16));
        assert_eq!(got.len(), 1639);
        for (l, p) in &got[1..] {
            assert_eq!(p, &vec![((*l - 2) % 251) as u8; 16], "record {l}");
        }
    });
}

#[test]
fn everything_released_then_reopened_keeps_the_lsn_sequence() {
    run(async {
        let opts = small_opts();
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .unwrap();
        for _ in 0..20 {
            wal.append(&[1; 1000]).await.unwrap();
        }
        wal.release_before(u64::MAX).await.unwrap();
        wal.close().await.unwrap();
        let (_got, rep, wal) = reopen(&disk, opts.clone()).await;
        assert_eq!(rep.next_lsn, 21);
        wal.close().await.unwrap();
        // Reopening a log whose last segment is empty keeps its LSN too.
        let (got, rep, _w) = reopen(&disk, opts).await;
        assert_eq!(rep.next_lsn, 21, "{got:?}");
    });
}

#[test]
fn failed_fdatasync_poisons_for_good() {
    run(async {
        let opts = small_opts();
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .unwrap();
        let a = wal.append(b"durable").await.unwrap();
        disk.fail_syncs(true);
        let err = wal.append(b"doomed").await.unwrap_err();
        assert!(err.to_string().contains("fdatasync"), "{err}");
        disk.fail_syncs(false);
        // Never retried, never pretended: everything fails from now on.
        assert!(matches!(
            wal.try_submit(b"x"),
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.submit(b"x").await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(
            wal.wait_durable(a).await.is_ok(),
            "what was durable stays durable"
        );
        assert!(matches!(
            wal.wait_durable(a + 1).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.release_before(1).await,
            Err(WalError::Poisoned { .. })
        ));
        drop(wal);
        disk.crash(CrashMode::DropUnsynced);
        let (got, _, _w) = reopen(&disk, opts).await;
        assert_eq!(got[0], (1, b"durable".to_vec()));
    });
}

#[test]
fn failed_write_poisons() {
    run(async {
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), small_opts(), |_, _| {})
            .await
            .unwrap();
        disk.fail_next_writes(1);
        assert!(wal.append(b"a").await.is_err());
        assert!(matches!(
            wal.append(b"b").await,
            Err(WalError::Poisoned { .. })
        ));
    });
}

#[test]
fn full_disk_fails_appends_clearly_and_loses_nothing() {
    run(async {
        let opts = small_opts();
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .unwrap();
        // Room for the active segment and the prepared one, not a third.
        disk.set_space_bytes(Some(2 * opts.segment_bytes + 100));
        let mut acked = Vec::new();
        let err = loop {
            match wal.append(&[9u8; 1500]).await {
                Ok(l) => acked.push(l),
                Err(e) => break e,
            }
            assert!(acked.len() < 1000, "the disk never filled up");
        };
        assert!(!acked.is_empty());
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(err.is_disk_full(), "{err:?}");
        let later = wal.append(b"x").await;
        assert!(
            matches!(&later, Err(e @ WalError::Poisoned { disk_full: true, .. }) if e.is_disk_full()),
            "the poison remembers it was a full disk: {later:?}"
        );
        drop(wal);
        disk.crash(CrashMode::DropUnsynced);
        // Reopened while still full (a node restarted on its full disk):
        // every acknowledged record replays, and the log is read-only.
        let (got, _, wal) = reopen(&disk, opts.clone()).await;
        assert_eq!(got.len(), acked.len(), "replayed on a full disk");
        assert!(
            matches!(wal.health(), Err(ref e @ WalError::Poisoned { disk_full: true, .. }) if e.is_disk_full()),
            "{:?}",
            wal.health()
        );
        let refused = wal.append(b"while full").await;
        assert!(
            matches!(&refused, Err(e) if e.is_disk_full()),
            "{refused:?}"
        );
        wal.close().await.unwrap_err();
        disk.set_space_bytes(None);
        let (got, _, wal) = reopen(&disk, opts).await;
        wal.health().unwrap();
        assert_eq!(
            got.len(),
            acked.len(),
            "every acknowledged record, nothing else"
        );
        assert_eq!(got.last().unwrap().0, *acked.last().unwrap());
        wal.append(b"after").await.unwrap();
    });
}

#[test]
fn limits_record_size_and_queue_bytes() {
    run(async {
        let opts = WalOptions {
            queue_bytes_max: 8 * 1024,
            ..small_opts()
        };
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .unwrap();
        let too_big = vec![0u8; opts.record_bytes_max + 1];
        assert!(matches!(
            wal.try_submit(&too_big),
            Err(WalError::RecordTooLarge { len, max }) if len == max + 1
        ));
        wal.try_submit(&too_big[..opts.record_bytes_max]).unwrap();
        // Fill the queue without yielding: the writer cannot drain it.
        let rec = vec![1u8; 1000];
        let last = loop {
            match wal.try_submit(&rec) {
                Ok(_) => {}
                Err(WalError::QueueFull { queued, max }) => {
                    assert_eq!(max, opts.queue_bytes_max);
                    assert!(queued + record_bytes(1000) > max);
                    break wal.next_lsn() - 1;
                }
                Err(e) => panic!("{e}"),
            }
        };
        // The async submit waits for room instead of failing.
        let l = wal.submit(&rec).await.unwrap();
        assert_eq!(l, last + 1);
        wal.wait_durable(l).await.unwrap();
        assert!(wal.stats().syncs >= 2);
    });
}

#[test]
fn invalid_options_are_refused_with_a_reason() {
    let base = small_opts();
    let cases = [
        WalOptions {
            segment_bytes: 5000,
            ..base.clone()
        },
        WalOptions {
            segment_bytes: 4096,
            ..base.clone()
        },
        WalOptions {
            batch_bytes_max: 1000,
            ..base.clone()
        },
        WalOptions {
            batch_bytes_max: 16 * 1024,
            ..base.clone()
        },
        WalOptions {
            record_bytes_max: 8 * 1024,
            ..base.clone()
        },
        WalOptions {
            record_bytes_max: 0,
            ..base.clone()
        },
        WalOptions {
            queue_bytes_max: 4096,
            ..base.clone()
        },
        WalOptions {
            write_chunk_bytes: 1000,
            ..base.clone()
        },
        WalOptions {
            write_chunk_bytes: 16 * 1024,
            ..base.clone()
        },
    ];
    for c in cases {
        let e = c.clone().validate().unwrap_err();
        assert!(matches!(e, WalError::InvalidOptions(_)), "{c:?}");
        assert!(e.to_string().contains("must"), "{e}");
    }
    assert!(base.validate().is_ok());
    assert!(WalOptions::default().validate().is_ok());
}

#[test]
fn group_commit_batches_concurrent_appenders() {
    run(async {
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(
            disk.clone(),
            WalOptions {
                segment_bytes: 1 << 22,
                ..small_opts()
            },
            |_, _| {},
        )
        .await
        .unwrap();
        let wal = Rc::new(wal);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    for j in 0..20u32 {
                        wal.append(&(i * 1000 + j).to_le_bytes()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let s = wal.stats();
        assert_eq!(s.records, 64 * 20);
        assert!(
            s.syncs * 8 < s.records,
            "{} syncs for {} records",
            s.syncs,
            s.records
        );
        assert!(s.batch_records.max() > 32);
    });
}

#[test]
fn batch_bytes_max_splits_flushes() {
    run(async {
        let opts = small_opts(); // batch_bytes_max = 8 KiB
        let disk = MemDisk::new();
        let (wal, _) = Wal::open(disk.clone(), opts.clone(), |_, _| {})
            .await
            .unwrap();
        // 24 KiB queued without yielding: must go out as at least 3 flushes,
        // none larger than the bound.
        let rec = vec![3u8; 1000];
        let mut last = 0;
        for _ in 0..24 {
            last = wal.try_submit(&rec).unwrap();
        }
        wal.wait_durable(last).await.unwrap();
        let s = wal.stats();
        let per_flush = opts.batch_bytes_max / record_bytes(1000);
        assert!(s.syncs >= 3, "{} syncs", s.syncs);
        assert!(s.batch_records.max() as usize <= per_flush);
        assert!(s.bytes_written as usize <= s.syncs as usize * opts.batch_bytes_max);
    });
}

/// A flush's records are reported durable once its fdatasync completes, not
/// once the next flush's writes do: under steady load every commit used to
/// wait for one more write (the sync was issued only after them).
#[test]
fn a_flush_is_reported_durable_while_the_next_flush_is_being_written() {
    run(async {
        let (disk, wal, a) = one_write_held().await;
        // Flush A's write is outstanding; B queues behind it.
        let b = wal.try_submit(b"b").unwrap();
        disk.allow_writes(1);
        let a_durable = glommio::timer::timeout(std::time::Duration::from_secs(5), async {
            wal.wait_durable(a).await.map_err(|e| {
                glommio::GlommioError::<()>::IoError(std::io::Error::other(e.to_string()))
            })
        })
        .await;
        assert!(
            a_durable.is_ok(),
            "record {a} was not reported durable while flush B's write was outstanding: {a_durable:?}"
        );
        assert_eq!(disk.held_writes(), 1, "flush B's write is still held");
        assert_eq!(wal.durable_lsn(), a);
        disk.release_writes();
        wal.wait_durable(b).await.unwrap();
    });
}

/// `Wal::writer_step` names what a stuck writer awaits (the shard logs it
/// when records stay not durable): a held write shows as "writing", and
/// its ring is nudged while it is late; once everything is durable the
/// writer waits for records.
#[test]
fn a_late_write_is_named_and_nudged() {
    run(async {
        let (disk, wal, a) = one_write_held().await;
        assert_eq!(wal.writer_step(), "writing");
        assert!(wal.durable_lsn() < a);
        // A write outstanding for longer than WRITE_NUDGE_MS gets its ring
        // nudged, once per WRITE_NUDGE_MS while it is.
        assert_eq!(disk.nudges(), 0);
        glommio::timer::sleep(std::time::Duration::from_millis(3 * WRITE_NUDGE_MS + 20)).await;
        assert!(
            (2..=4).contains(&disk.nudges()),
            "{} nudges in 3 nudge intervals",
            disk.nudges()
        );
        assert_eq!(wal.stats().write_nudges, disk.nudges());
        disk.release_writes();
        wal.wait_durable(a).await.unwrap();
        for _ in 0..100 {
            futures_lite::future::yield_now().await;
        }
        assert_eq!(wal.writer_step(), "waiting for records");
    });
}

/// `WRITE_NUDGES_IN_FLIGHT_MAX`: nudges that do not come back (a ring
/// that answers neither the writes nor the reads) stop at the cap; once
/// the writes are done no further nudge goes out, and the WAL goes on.
#[test]
fn nudges_that_do_not_come_back_stop_at_the_cap_and_are_cancelled_with_the_writes() {
    run(async {
        let (disk, wal, a) = one_write_held().await;
        disk.hold_nudges();
        let interval = std::time::Duration::from_millis(WRITE_NUDGE_MS);
        glommio::timer::sleep(interval * (2 * WRITE_NUDGES_IN_FLIGHT_MAX as u32 + 2)).await;
        assert_eq!(disk.nudges(), WRITE_NUDGES_IN_FLIGHT_MAX as u64);
        assert_eq!(wal.stats().write_nudges, disk.nudges());
        disk.release_writes();
        wal.wait_durable(a).await.unwrap();
        // The writes are done: no new nudge goes out.
        disk.release_nudges();
        glommio::timer::sleep(interval * 3).await;
        assert_eq!(disk.nudges(), WRITE_NUDGES_IN_FLIGHT_MAX as u64);
        let b = wal.append(b"b").await.unwrap();
        assert!(wal.durable_lsn() >= b);
    });
}

/// A WAL on a MemDisk with one record durable, the writer idle (checked:
/// "waiting for records"), then record `a` submitted and its write held
/// by the disk: (disk, wal, a).
async fn one_write_held() -> (MemDisk, Wal<MemDisk>, u64) {
    let disk = MemDisk::new();
    let opts = WalOptions {
        segment_bytes: 1 << 22,
        zero_segments: false,
        ..small_opts()
    };
    let (wal, _) = Wal::open(disk.clone(), opts, |_, _| {}).await.unwrap();
    wal.append(b"first").await.unwrap();
    // Let the next segment's preparation (its own writes) finish.
    for _ in 0..100 {
        futures_lite::future::yield_now().await;
    }
    assert_eq!(wal.writer_step(), "waiting for records");
    disk.hold_writes_after(0);
    let a = wal.try_submit(b"a").unwrap();
    while disk.held_writes() == 0 {
        futures_lite::future::yield_now().await;
    }
    (disk, wal, a)
}
