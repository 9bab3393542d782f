//! The WAL on real files through glommio DMA (O_DIRECT, io_uring).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::LocalExecutorBuilder;
use ringraft_wal::{DmaDisk, RecoveryMode, Wal, WalOptions};

fn tmpdir() -> tempfile::TempDir {
    // Not /tmp: it may be tmpfs, and we want the real filesystem's O_DIRECT path.
    tempfile::Builder::new()
        .prefix("wal-dma-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 1 << 20,
        record_bytes_max: 64 << 10,
        batch_bytes_max: 256 << 10,
        write_chunk_bytes: 64 << 10,
        queue_bytes_max: 1 << 20,
        recovery: RecoveryMode::Strict,
        zero_segments: true,
        ..WalOptions::default()
    }
}

fn read_back(dir: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move {
            let mut got = Vec::new();
            let (wal, _) = Wal::open(DmaDisk::new(&dir).unwrap(), opts(), |l, p| {
                got.push((l, p.to_vec()))
            })
            .await
            .unwrap();
            wal.close().await.unwrap();
            got
        })
}

#[test]
fn concurrent_appenders_share_syncs_and_survive_reopen() {
    let dir = tmpdir();
    let path = dir.path().to_path_buf();
    let (records, syncs) = LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move {
            let (wal, rep) = Wal::open(DmaDisk::new(&path).unwrap(), opts(), |_, _| {})
                .await
                .unwrap();
            assert_eq!(rep.records, 0);
            let wal = Rc::new(wal);
            let tasks: Vec<_> = (0..128u32)
                .map(|t| {
                    let wal = wal.clone();
                    glommio::spawn_local(async move {
                        for i in 0..40u32 {
                            let mut p = [0u8; 128];
                            p[..4].copy_from_slice(&t.to_le_bytes());
                            p[4..8].copy_from_slice(&i.to_le_bytes());
                            wal.append(&p).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let s = wal.stats();
            Rc::try_unwrap(wal).ok().unwrap().close().await.unwrap();
            (s.records, s.syncs)
        });
    assert_eq!(records, 128 * 40);
    assert!(
        syncs * 4 < records,
        "{syncs} syncs for {records} appends: no group commit"
    );
    let got = read_back(dir.path());
    assert_eq!(got.len(), 128 * 40);
    for (i, (l, _)) in got.iter().enumerate() {
        assert_eq!(*l, i as u64 + 1);
    }
    // Every (task, i) pair exactly once.
    let mut seen = std::collections::HashSet::new();
    for (_, p) in &got {
        assert!(seen.insert(p[..8].to_vec()));
    }
}

#[test]
fn reopen_after_the_writer_is_dropped_mid_batch() {
    let dir = tmpdir();
    let path = dir.path().to_path_buf();
    let submitted: Rc<RefCell<BTreeMap<u64, Vec<u8>>>> = Default::default();
    let acked: Rc<RefCell<Vec<u64>>> = Default::default();
    {
        let (sub, ack) = (submitted.clone(), acked.clone());
        let ex = LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let (wal, _) = Wal::open(DmaDisk::new(&path).unwrap(), opts(), |_, _| {})
                .await
                .unwrap();
            let wal = Rc::new(wal);
            for t in 0..16u64 {
                let (wal, sub, ack) = (wal.clone(), sub.clone(), ack.clone());
                glommio::spawn_local(async move {
                    for i in 0.. {
                        let p = vec![(t * 31 + i) as u8; 1000 + (i as usize % 3000)];
                        let Ok(l) = wal.submit(&p).await else { return };
                        sub.borrow_mut().insert(l, p);
                        if wal.wait_durable(l).await.is_ok() {
                            ack.borrow_mut().push(l);
                        }
                    }
                })
                .detach();
            }
            // Return while appenders and the writer are mid-batch: the
            // executor and every task are dropped with I/O under way.
            while ack.borrow().len() < 500 {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
    }
    let got = read_back(dir.path());
    let sub = submitted.borrow();
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
    }
    for (l, p) in &got {
        assert_eq!(
            sub.get(l),
            Some(p),
            "LSN {l} recovered with other bytes than submitted"
        );
    }
    let last = got.last().map_or(0, |r| r.0);
    let max_acked = *acked.borrow().iter().max().unwrap();
    assert!(
        max_acked <= last,
        "acknowledged {max_acked} but recovered only up to {last}"
    );
    // And the log keeps working after that recovery.
    let again = read_back(dir.path());
    assert_eq!(again, got);
}

/// Small flushes, one record each, written again into the block the
/// previous one ended in (format version 2), read back whole from the
/// real file; the sealed segment is as long as its records, not a block
/// per flush.
#[test]
fn small_flushes_written_into_one_block_read_back_from_a_real_file() {
    let dir = tmpdir();
    let path = dir.path().to_path_buf();
    let rewrites = LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move {
            let (wal, _) = Wal::open(DmaDisk::new(&path).unwrap(), opts(), |_, _| {})
                .await
                .unwrap();
            for i in 0..300u32 {
                let p = vec![i as u8; (i % 97) as usize];
                wal.append(&p).await.unwrap();
            }
            let rewrites = wal.stats().tail_rewrites;
            wal.close().await.unwrap();
            rewrites
        });
    assert!(rewrites > 250, "{rewrites} flushes wrote a block again");
    let got = read_back(dir.path());
    assert_eq!(got.len(), 300);
    for (l, p) in &got {
        let i = (*l - 1) as u32;
        assert_eq!(p, &vec![i as u8; (i % 97) as usize], "record {l}");
    }
    let seg = dir.path().join(ringraft_wal::format::segment_name(1));
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    let records: usize = (0..300u32)
        .map(|i| ringraft_wal::format::record_bytes((i % 97) as usize))
        .sum();
    assert!(
        len <= 4096 + records + 16 * 4096,
        "sealed segment {len} bytes for {records} bytes of records"
    );
}

/// Regression: a WAL directory given as a relative path failed its first
/// directory sync (glommio returns EBADF for a relative directory open);
/// the node hit it with `--data-dir rr/n1`.
#[test]
fn a_relative_directory_works() {
    let base = tmpdir();
    // Other tests of this binary use absolute paths: changing the working
    // directory does not affect them.
    std::env::set_current_dir(base.path()).unwrap();
    LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move {
            let (wal, _) = Wal::open(DmaDisk::new("rel/wal").unwrap(), opts(), |_, _| {})
                .await
                .unwrap();
            wal.append(b"first").await.unwrap();
            wal.close().await.unwrap();
        });
    assert_eq!(read_back(&base.path().join("rel/wal")).len(), 1);
}

/// `zero_segments`: the live segment has no unwritten extents left (a flush's fdatasync has no extent conversion to
/// journal); without it, they are preallocated only. Read with
/// `filefrag -v` (e2fsprogs), which flags unwritten extents.
#[test]
fn zero_segments_leaves_no_unwritten_extents() {
    // The file system must report unwritten extents at all (ext4, xfs do;
    // tmpfs and some overlays do not): probe with a preallocated file.
    let probe_dir = tmpdir();
    let probe = probe_dir.path().join("probe");
    let f = std::fs::File::create(&probe).unwrap();
    let flagged = std::process::Command::new("fallocate")
        .args(["-l", "1M"])
        .arg(&probe)
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new("filefrag")
            .arg("-v")
            .arg(&probe)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("unwritten"));
    drop(f);
    if !flagged {
        eprintln!("SKIPPED: this file system (or a missing filefrag/fallocate) does not show unwritten extents");
        return;
    }
    let unwritten = |zero: bool| -> Vec<(String, bool)> {
        let dir = tmpdir();
        let path = dir.path().to_path_buf();
        LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let o = WalOptions {
                    zero_segments: zero,
                    ..opts()
                };
                let (wal, _) = Wal::open(DmaDisk::new(&path).unwrap(), o, |_, _| {})
                    .await
                    .unwrap();
                wal.append(b"one record").await.unwrap();
                wal.close().await.unwrap();
            });
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "wal") {
                continue; // the next segment, prepared in the background
            }
            let o = std::process::Command::new("filefrag")
                .arg("-v")
                .arg(&p)
                .output()
                .expect("filefrag (e2fsprogs) is installed");
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(o.status.success(), "filefrag {}: {text}", p.display());
            out.push((text.clone(), text.contains("unwritten")));
        }
        out
    };
    let zeroed = unwritten(true);
    assert!(zeroed.len() == 1 && !zeroed[0].1, "{zeroed:#?}");
    let plain = unwritten(false);
    assert!(plain.iter().any(|(_, u)| *u), "{plain:#?}");
}
