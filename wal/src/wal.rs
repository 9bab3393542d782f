//! The log: open (recovery), submit, group commit, durability, release.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::io::DmaBuffer;
use hdrhistogram::Histogram;

use crate::disk::{Disk, SegmentFile};
use crate::error::{Result, WalError};
use crate::format::*;
use crate::recovery::{later_flush_start, nonzero_extent, scan_segment, Stop};

/// What `open` does when it finds damage that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// A torn tail in the last segment is truncated and reported; any other
    /// damage fails `open` with [`WalError::Corruption`] naming file and offset.
    #[default]
    Strict,
    /// Like `Strict` for torn tails; on corruption, keeps the valid records
    /// before the damage, drops everything from it on (later segments
    /// included), and reports it. Acknowledged records after the damage are
    /// lost: choose this only to salvage a node whose peers can refill it.
    PointInTime,
}

/// WAL settings. Every limit has a name and a default.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of a segment file, preallocated. Default 64 MiB; a multiple of 4096.
    pub segment_bytes: u64,
    /// Largest payload `submit` accepts. Default 1 MiB.
    pub record_bytes_max: usize,
    /// Largest flush (one fdatasync), in bytes on disk. Default 4 MiB.
    pub batch_bytes_max: usize,
    /// Largest DMA write: a flush above it is cut into writes of at most
    /// this size, issued concurrently (a record is never split; a larger
    /// record gets a write of its own). Default 1 MiB; a multiple of 4096.
    pub write_chunk_bytes: usize,
    /// Bytes submitted but not yet durable; past it `submit` waits and
    /// `try_submit` fails with `QueueFull`. Default 16 MiB.
    pub queue_bytes_max: usize,
    pub recovery: RecoveryMode,
    /// Write zeros over a new segment (in the background, before it is
    /// needed) so that later flushes overwrite initialized blocks: their
    /// fdatasync then has no extent metadata to journal. Default true
    /// (4 KiB write+fdatasync on ext4/virtio: ~3,200/s into preallocated
    /// unwritten extents, ~5,800/s into zeroed ones; see the README).
    pub zero_segments: bool,
    /// A flush whose first write, with the records already in the active
    /// segment's last partly filled block, holds at most this many bytes
    /// starts in that block and writes it again (the earlier records'
    /// bytes unchanged); a larger one, or any with 0 here, starts on the
    /// next block boundary. Default [`TAIL_REWRITE_BYTES_MAX`] (see there:
    /// why, and the assumption about the disk it rests on); capped at
    /// `write_chunk_bytes`.
    pub tail_rewrite_bytes_max: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            record_bytes_max: 1 << 20,
            batch_bytes_max: 4 << 20,
            write_chunk_bytes: 1 << 20,
            queue_bytes_max: 16 << 20,
            recovery: RecoveryMode::Strict,
            zero_segments: true,
            tail_rewrite_bytes_max: TAIL_REWRITE_BYTES_MAX,
        }
    }
}

/// Options that passed [`WalOptions::validate`].
#[derive(Debug, Clone)]
pub struct ValidWalOptions(WalOptions);

impl std::ops::Deref for ValidWalOptions {
    type Target = WalOptions;
    fn deref(&self) -> &WalOptions {
        &self.0
    }
}

impl WalOptions {
    pub fn validate(self) -> Result<ValidWalOptions> {
        let bad = |m: String| Err(WalError::InvalidOptions(m));
        let b = BLOCK_BYTES as u64;
        if !self.segment_bytes.is_multiple_of(b) || self.segment_bytes < 2 * b {
            return bad(format!(
                "segment_bytes = {} must be a multiple of {b} and at least {}",
                self.segment_bytes,
                2 * b
            ));
        }
        if !self.batch_bytes_max.is_multiple_of(BLOCK_BYTES) || self.batch_bytes_max == 0 {
            return bad(format!(
                "batch_bytes_max = {} must be a positive multiple of {BLOCK_BYTES}",
                self.batch_bytes_max
            ));
        }
        if self.batch_bytes_max as u64 > self.segment_bytes - b {
            return bad(format!(
                "batch_bytes_max = {} must fit in a segment after its header (segment_bytes - {b} = {})",
                self.batch_bytes_max,
                self.segment_bytes - b
            ));
        }
        if self.record_bytes_max == 0 || record_bytes(self.record_bytes_max) > self.batch_bytes_max
        {
            return bad(format!(
                "record_bytes_max = {} must be positive and a record of that size ({} bytes with header) must fit in batch_bytes_max = {}",
                self.record_bytes_max,
                record_bytes(self.record_bytes_max),
                self.batch_bytes_max
            ));
        }
        if self.write_chunk_bytes == 0
            || !self.write_chunk_bytes.is_multiple_of(BLOCK_BYTES)
            || self.write_chunk_bytes > self.batch_bytes_max
        {
            return bad(format!(
                "write_chunk_bytes = {} must be a positive multiple of {BLOCK_BYTES} and at most batch_bytes_max = {}",
                self.write_chunk_bytes, self.batch_bytes_max
            ));
        }
        if self.queue_bytes_max < self.batch_bytes_max {
            return bad(format!(
                "queue_bytes_max = {} must be at least batch_bytes_max = {}",
                self.queue_bytes_max, self.batch_bytes_max
            ));
        }
        Ok(ValidWalOptions(self))
    }
}

/// A torn tail found and dropped at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    pub offset: u64,
    pub bytes_dropped: u64,
}

/// What `open` found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Valid records handed to the callback.
    pub records: u64,
    /// LSN of the first record kept, if any.
    pub first_lsn: Option<u64>,
    /// LSN the next submitted record gets.
    pub next_lsn: u64,
    /// Segment files read.
    pub segments: usize,
    pub torn_tail: Option<TornTail>,
    /// Corruption dropped in `RecoveryMode::PointInTime` (the message names file and offset).
    pub corruption_dropped: Option<String>,
}

/// Counters and histograms.
#[derive(Debug, Clone)]
pub struct WalStats {
    pub next_lsn: u64,
    pub durable_lsn: u64,
    /// Records made durable.
    pub records: u64,
    /// Payload bytes made durable.
    pub payload_bytes: u64,
    /// Bytes written to segments (headers, padding included).
    pub bytes_written: u64,
    /// `fdatasync` calls on segments (one per flush).
    pub syncs: u64,
    pub segments_created: u64,
    pub segments_removed: u64,
    pub segments_live: usize,
    /// Records per flush.
    pub batch_records: Histogram<u64>,
    /// Write + fdatasync time per flush, in microseconds.
    pub sync_latency_us: Histogram<u64>,
    /// Nudges of a flush's late writes (`WRITE_NUDGE_MS`).
    pub write_nudges: u64,
    /// Flushes that began by writing again the active segment's last,
    /// partly filled block (see [`TAIL_REWRITE_BYTES_MAX`]).
    pub tail_rewrites: u64,
    /// Bytes of segments that flushes took: from where the previous
    /// flush's records ended (a new segment's header) to where theirs end,
    /// any zero gap between included. What fills segments, against
    /// `payload_bytes`; a segment's unused end at a roll is not counted.
    pub segment_bytes_used: u64,
}

/// The default of [`WalOptions::tail_rewrite_bytes_max`]: a flush whose
/// first write would hold at most this many bytes (the
/// records already in the active segment's last, partly filled block,
/// then the flush's own) starts in that block: it writes the block again,
/// the earlier records' bytes unchanged, and its records follow them with
/// no gap. A larger one starts on the next block boundary, the gap left
/// zero (at most 4 KiB - 8 bytes per flush: about 6 % of one this large).
/// A small flush writes one 4 KiB block either way (two when the earlier
/// bytes and its own cross a boundary); what changes is how fast segments
/// fill: with one small write per flush (a 1 x 1 load), a flush of 100-150
/// bytes took a block of its own, so segments filled 22-27 times faster
/// than the log grew (measured), each new one was zeroed (`zero_segments`),
/// and the WAL a lagging group pins reached `wal-pin-bytes-max` (and a
/// snapshot of the group) about as much sooner. The bound keeps the copy
/// this costs (the flush's first write is assembled again behind the
/// block's earlier bytes) small.
///
/// Safe under the assumption every buffered-I/O log makes (etcd's WAL,
/// PostgreSQL's, RocksDB's: each fsync writes the file's last partial page
/// again): a write that a crash interrupts, or that fails with an I/O
/// error, leaves each sector either old or new, and the earlier records'
/// bytes are the same in both. (A failed rewrite poisons the log; had it
/// left a sector half-written, recovery would see damage with no later
/// write to prove it acknowledged, and cut it as a torn tail.) Two writes
/// to one block are never in flight at once: a flush is issued only after
/// the previous flush's writes completed.
pub const TAIL_REWRITE_BYTES_MAX: usize = 64 << 10;

/// How long, in ms, a flush's writes may be outstanding before the writer
/// nudges the ring they went to (`SegmentFile::nudge`), and again after
/// each such wait while they are. The chaos test of moves saw writes stay
/// in flight for 33 s and more, on every node at once, the moment the
/// load stopped (their WALs on one virtio disk without poll queues). The
/// likely cause: glommio's poll ring (IOPOLL) posts a write's completion
/// only when the ring is entered, and an idle shard submitted nothing.
/// Not proven: a reading of glommio 0.9's reactor says it does not sleep
/// while a poll-ring operation is in flight, and 34 passes after the fix
/// against about 1 failure in 9 before is evidence, not proof. A healthy
/// write takes well under this; a nudge costs one block read.
pub const WRITE_NUDGE_MS: u64 = 50;

/// Nudges of one flush's writes in flight at most: a nudge goes to the
/// same ring as the writes, so one that does not come back either must not
/// stop the next (each submission enters the ring), and a hung device must
/// not pile reads up without bound.
pub const WRITE_NUDGES_IN_FLIGHT_MAX: usize = 4;

/// Initial capacity of a chunk buffer; it doubles up to `write_chunk_bytes`.
const CHUNK_BUF_BYTES_MIN: usize = 64 << 10;

enum Place {
    LastChunk,
    NewChunk,
    NewBatch,
}

/// The bytes of one DMA write: records packed from offset 0.
struct Chunk {
    buf: DmaBuffer,
    used: usize,
}

/// One flush: its chunks are written concurrently at consecutive block
/// boundaries, then one fdatasync makes them all durable.
struct Batch {
    chunks: Vec<Chunk>,
    /// Record bytes in all chunks.
    used: usize,
    /// Block-aligned bytes of every chunk but the last.
    sealed_bytes: usize,
    first_lsn: u64,
    last_lsn: u64,
    records: u64,
    payload_bytes: u64,
}

struct State {
    /// Invariant: durable_lsn < next_lsn; every LSN in (durable_lsn, next_lsn)
    /// is in `pending` or in the flush under way.
    next_lsn: u64,
    durable_lsn: u64,
    /// Batches assembled and not yet handed to the writer; front is oldest.
    pending: VecDeque<Batch>,
    /// Record bytes submitted and not yet durable. Invariant: <= queue_bytes_max
    /// unless a single record was admitted into an empty queue.
    queued_bytes: usize,
    /// Why the log is poisoned, and whether that was a full disk.
    poison: Option<(String, bool)>,
    closed: bool,
    writer_done: bool,
    durable_waiters: Vec<Waker>,
    space_waiters: Vec<Waker>,
    writer_waker: Option<Waker>,
    /// Live segments, sorted by first LSN; the last one is the active one.
    segments: Vec<(u64, String)>,
    stats: WalStats,
    /// What the writer awaits now (`Wal::writer_step`).
    writer_step: &'static str,
}

impl State {
    /// A log whose next record gets `next_lsn`, nothing pending.
    fn new(next_lsn: u64, segments: Vec<(u64, String)>, segments_created: u64) -> State {
        State {
            next_lsn,
            durable_lsn: next_lsn - 1,
            pending: VecDeque::new(),
            queued_bytes: 0,
            poison: None,
            closed: false,
            writer_done: false,
            durable_waiters: Vec::new(),
            space_waiters: Vec::new(),
            writer_waker: None,
            writer_step: "starting",
            stats: WalStats {
                next_lsn,
                durable_lsn: next_lsn - 1,
                records: 0,
                payload_bytes: 0,
                bytes_written: 0,
                syncs: 0,
                segments_created,
                segments_removed: 0,
                segments_live: segments.len(),
                batch_records: new_histogram(),
                sync_latency_us: new_histogram(),
                write_nudges: 0,
                tail_rewrites: 0,
                segment_bytes_used: 0,
            },
            segments,
        }
    }
}

struct Inner<D: Disk> {
    disk: D,
    opts: ValidWalOptions,
    st: RefCell<State>,
}

/// A write-ahead log on one shard. Not `Send`: it lives on one executor and
/// its writer task runs there. Share it between tasks with `Rc`.
pub struct Wal<D: Disk> {
    inner: Rc<Inner<D>>,
}

struct Active<F> {
    file: Rc<F>,
    name: String,
    /// Where the next record goes: just past the last record written
    /// (the segment header block's end in a new segment).
    offset: u64,
    /// The bytes of the block holding `offset` before it (`offset % 4096`
    /// of them): records already written there, which a flush that starts
    /// in that block writes again unchanged.
    tail: Vec<u8>,
}

impl<F> Active<F> {
    /// A new segment's active state: nothing written after its header.
    fn new(file: F, name: String) -> Active<F> {
        Active {
            file: Rc::new(file),
            name,
            offset: BLOCK_BYTES as u64,
            tail: Vec::with_capacity(BLOCK_BYTES),
        }
    }
}

fn wake_all(ws: &mut Vec<Waker>) {
    for w in ws.drain(..) {
        w.wake();
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

async fn read_all<F: SegmentFile>(f: &F) -> std::io::Result<Vec<u8>> {
    const CHUNK: usize = 4 << 20;
    let size = f.size().await? as usize;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        let want = align_up((size - data.len()).min(CHUNK), BLOCK_BYTES);
        let got = f.read_at(data.len() as u64, want).await?;
        if got.is_empty() {
            break;
        }
        data.extend_from_slice(&got);
    }
    data.truncate(size);
    Ok(data)
}

/// Zero writes of a new segment in flight at once.
const ZERO_WRITES_INFLIGHT: usize = 4;

/// Creates a segment under a temporary name: preallocated (zeroed if the
/// options say so), header written and synced. It becomes a live segment
/// by `rename` + `sync_dir`.
async fn prepare<D: Disk>(disk: D, seq: u64, opts: ValidWalOptions) -> Result<(String, D::File)> {
    let segment_bytes = opts.segment_bytes;
    let name = format!("{seq:020}{PREPARED_SUFFIX}");
    let err = |op, e| WalError::io(op, disk.describe(&name), e);
    let f = disk.create(&name).await.map_err(|e| err("create", e))?;
    f.preallocate(segment_bytes)
        .await
        .map_err(|e| err("preallocate", e))?;
    if opts.zero_segments {
        let chunk = opts.write_chunk_bytes as u64;
        let mut zeros = disk.alloc_buf(opts.write_chunk_bytes);
        zeros.as_bytes_mut().fill(0);
        let zeros = Rc::new(zeros);
        let mut pos = BLOCK_BYTES as u64;
        while pos < segment_bytes {
            let mut writes = Vec::with_capacity(ZERO_WRITES_INFLIGHT);
            for _ in 0..ZERO_WRITES_INFLIGHT {
                if pos >= segment_bytes {
                    break;
                }
                let len = chunk.min(segment_bytes - pos) as usize;
                let buf = if len == zeros.len() {
                    zeros.clone()
                } else {
                    let mut b = disk.alloc_buf(len);
                    b.as_bytes_mut().fill(0);
                    Rc::new(b)
                };
                writes.push(f.write_at(buf, pos));
                pos += len as u64;
            }
            join_all(writes).await.map_err(|e| err("write zeros", e))?;
        }
    }
    let mut buf = disk.alloc_buf(BLOCK_BYTES);
    encode_segment_header(buf.as_bytes_mut(), segment_bytes);
    f.write_at(Rc::new(buf), 0)
        .await
        .map_err(|e| err("write header", e))?;
    f.fdatasync()
        .await
        .map_err(|e| err("fdatasync header", e))?;
    Ok((name, f))
}

/// Gives a prepared segment its live name, durably.
async fn install<D: Disk>(disk: &D, prep: &str, first_lsn: u64) -> Result<String> {
    let name = segment_name(first_lsn);
    disk.rename(prep, &name)
        .await
        .map_err(|e| WalError::io("rename", disk.describe(prep), e))?;
    disk.sync_dir()
        .await
        .map_err(|e| WalError::io("sync dir", disk.describe(&name), e))?;
    Ok(name)
}

impl<D: Disk> Wal<D> {
    /// Opens (or creates) the log in `disk`, handing every valid record to
    /// `on_record` in LSN order, then starts the writer task on the current
    /// glommio executor. The last segment is sealed (truncated to its last
    /// valid record) and appends go to a fresh segment, so no byte written
    /// before the crash is ever reinterpreted.
    pub async fn open(
        disk: D,
        opts: WalOptions,
        mut on_record: impl FnMut(u64, &[u8]),
    ) -> Result<(Wal<D>, RecoveryReport)> {
        let opts = opts.validate()?;
        let names = disk
            .list()
            .await
            .map_err(|e| WalError::io("list", disk.describe(""), e))?;
        let mut segs: Vec<(u64, String)> = Vec::new();
        for n in names {
            if n.ends_with(PREPARED_SUFFIX) {
                disk.remove(&n)
                    .await
                    .map_err(|e| WalError::io("remove", disk.describe(&n), e))?;
            } else if let Some(lsn) = parse_segment_name(&n) {
                segs.push((lsn, n));
            }
        }
        segs.sort();

        let mut report = RecoveryReport {
            segments: segs.len(),
            ..Default::default()
        };
        let mut expected: Option<u64> = None;
        // (index into segs, valid_end, records) of the last segment kept.
        let mut last_kept: Option<(usize, usize, u64)> = None;
        let mut drop_from = segs.len();
        for (i, (first, name)) in segs.iter().enumerate() {
            let is_last = i + 1 == segs.len();
            let file_desc = disk.describe(name);
            let corruption = |offset: usize, reason: String| WalError::Corruption {
                file: file_desc.clone(),
                offset: offset as u64,
                reason,
            };
            let mut found: Option<WalError> = None;
            if let Some(e) = expected {
                if *first != e {
                    found = Some(corruption(
                        0,
                        format!(
                            "segment starts at LSN {first}, the previous one ends before LSN {e}"
                        ),
                    ));
                }
            }
            if found.is_none() {
                let f = disk
                    .open(name)
                    .await
                    .map_err(|e| WalError::io("open", file_desc.clone(), e))?;
                let data = read_all(&f)
                    .await
                    .map_err(|e| WalError::io("read", file_desc.clone(), e))?;
                f.close()
                    .await
                    .map_err(|e| WalError::io("close", file_desc.clone(), e))?;
                if let Err(p) = decode_segment_header(&data) {
                    found = Some(corruption(0, p.to_string()));
                } else {
                    let scan =
                        scan_segment(&data, *first, opts.record_bytes_max, |l, p| on_record(l, p));
                    if scan.records > 0 && report.first_lsn.is_none() {
                        report.first_lsn = Some(*first);
                    }
                    report.records += scan.records;
                    expected = Some(scan.next_lsn);
                    last_kept = Some((i, scan.valid_end, scan.records));
                    let junk = nonzero_extent(&data, scan.valid_end);
                    if let Some(off) = later_flush_start(
                        &data,
                        scan.stop_offset,
                        scan.next_lsn,
                        opts.record_bytes_max,
                    ) {
                        found = Some(corruption(
                            scan.stop_offset,
                            format!(
                                "damaged record (expected LSN {}); the write at offset {off} was issued after it was durable",
                                scan.next_lsn
                            ),
                        ));
                    } else if !is_last && (scan.stop == Stop::Damage || junk > 0) {
                        found = Some(corruption(
                            scan.stop_offset,
                            format!(
                                "damaged record (expected LSN {}) in a segment that is not the last",
                                scan.next_lsn
                            ),
                        ));
                    } else if is_last && junk > 0 {
                        let t = TornTail {
                            file: file_desc.clone(),
                            offset: scan.valid_end as u64,
                            bytes_dropped: junk as u64,
                        };
                        tracing::warn!(file = %t.file, offset = t.offset, bytes_dropped = t.bytes_dropped,
                            "wal: torn tail truncated");
                        report.torn_tail = Some(t);
                    }
                }
            }
            if let Some(err) = found {
                match opts.recovery {
                    RecoveryMode::Strict => return Err(err),
                    RecoveryMode::PointInTime => {
                        tracing::error!(%err, "wal: corruption dropped (point-in-time recovery)");
                        report.corruption_dropped = Some(err.to_string());
                        // Keep this segment up to its valid end, unless the
                        // damage is its header or its position in the chain.
                        drop_from = match last_kept {
                            Some((k, _, _)) if k == i => i + 1,
                            _ => i,
                        };
                        break;
                    }
                }
            }
        }

        // Drop what point-in-time recovery cut off, newest first.
        for (_, name) in segs[drop_from..].iter().rev() {
            disk.remove(name)
                .await
                .map_err(|e| WalError::io("remove", disk.describe(name), e))?;
        }
        segs.truncate(drop_from);
        let next_lsn = expected.unwrap_or(1);
        report.next_lsn = next_lsn;

        // Seal the last segment: cut it at its last valid record. An empty one
        // is replaced (atomically, by the rename below) by the new active one.
        let mut replace_empty = false;
        if let Some((k, valid_end, records)) = last_kept {
            let name = &segs[k].1;
            if records == 0 {
                replace_empty = true;
            } else {
                let desc = disk.describe(name);
                let f = disk
                    .open(name)
                    .await
                    .map_err(|e| WalError::io("open", desc.clone(), e))?;
                f.truncate(valid_end as u64)
                    .await
                    .map_err(|e| WalError::io("truncate", desc.clone(), e))?;
                f.fdatasync()
                    .await
                    .map_err(|e| WalError::io("fdatasync", desc.clone(), e))?;
                f.close()
                    .await
                    .map_err(|e| WalError::io("close", desc, e))?;
            }
        }
        if replace_empty {
            segs.pop();
        }
        let (prep, file) = match prepare(disk.clone(), 0, opts.clone()).await {
            Ok(x) => x,
            // A full disk: no new segment. The log opens poisoned (every
            // append fails with a disk-full error) so that the caller can
            // serve what it replayed and reopen once space is freed; a node
            // whose disk filled up must be able to restart (found by a
            // chaos soak: it could not, as open failed here).
            Err(e) if e.is_disk_full() => {
                let prep = format!("{:020}{PREPARED_SUFFIX}", 0);
                if let Err(rm) = disk.remove(&prep).await {
                    tracing::warn!(file = %disk.describe(&prep), "wal: cannot remove a prepared segment: {rm}");
                }
                let mut st = State::new(next_lsn, segs, 0);
                st.poison = Some((e.to_string(), true));
                st.writer_done = true;
                let inner = Rc::new(Inner {
                    disk,
                    opts,
                    st: RefCell::new(st),
                });
                return Ok((Wal { inner }, report));
            }
            Err(e) => return Err(e),
        };
        let name = install(&disk, &prep, next_lsn).await?;
        segs.push((next_lsn, name.clone()));
        let st = State::new(next_lsn, segs, 1);
        let inner = Rc::new(Inner {
            disk,
            opts,
            st: RefCell::new(st),
        });
        let active = Active::new(file, name);
        glommio::spawn_local(writer(inner.clone(), active)).detach();
        Ok((Wal { inner }, report))
    }

    /// Queues a record without waiting; returns its LSN. Fails with
    /// `QueueFull` when `queue_bytes_max` would be exceeded.
    pub fn try_submit(&self, payload: &[u8]) -> Result<u64> {
        self.try_submit_with(payload.len(), |p| p.copy_from_slice(payload))
    }

    /// Like `try_submit`, but `fill` writes the `len` payload bytes straight
    /// into the write buffer.
    pub fn try_submit_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<u64> {
        let opts = &self.inner.opts;
        if len > opts.record_bytes_max {
            return Err(WalError::RecordTooLarge {
                len,
                max: opts.record_bytes_max,
            });
        }
        let mut st = self.inner.st.borrow_mut();
        if let Some((c, full)) = &st.poison {
            return Err(WalError::Poisoned {
                cause: c.clone(),
                disk_full: *full,
            });
        }
        if st.closed {
            return Err(WalError::Closed);
        }
        let rb = record_bytes(len);
        if st.queued_bytes > 0 && st.queued_bytes + rb > opts.queue_bytes_max {
            return Err(WalError::QueueFull {
                queued: st.queued_bytes,
                max: opts.queue_bytes_max,
            });
        }
        let lsn = st.next_lsn;
        let chunk_max = opts.write_chunk_bytes.max(align_up(rb, BLOCK_BYTES));
        // Where does the record go: the last chunk, a new chunk of the last
        // batch, or a new batch?
        let place = match st.pending.back() {
            None => Place::NewBatch,
            Some(b) => {
                let last = b.chunks.last().expect("a batch has a chunk");
                let footprint = b.sealed_bytes + align_up(last.used + rb, BLOCK_BYTES);
                if last.used + rb <= chunk_max && footprint <= opts.batch_bytes_max {
                    Place::LastChunk
                } else if b.sealed_bytes
                    + align_up(last.used, BLOCK_BYTES)
                    + align_up(rb, BLOCK_BYTES)
                    <= opts.batch_bytes_max
                {
                    Place::NewChunk
                } else {
                    Place::NewBatch
                }
            }
        };
        // Start buffers small (most flushes are far below the bounds, and a
        // small buffer comes from glommio's registered pool); large records
        // get room for several at once.
        let initial = align_up(rb * 8, BLOCK_BYTES)
            .max(CHUNK_BUF_BYTES_MIN)
            .min(chunk_max);
        match place {
            Place::NewBatch => {
                let buf = self.inner.disk.alloc_buf(initial);
                st.pending.push_back(Batch {
                    chunks: vec![Chunk { buf, used: 0 }],
                    used: 0,
                    sealed_bytes: 0,
                    first_lsn: lsn,
                    last_lsn: lsn,
                    records: 0,
                    payload_bytes: 0,
                });
            }
            Place::NewChunk => {
                let buf = self.inner.disk.alloc_buf(initial);
                let b = st.pending.back_mut().expect("matched Some");
                let last = b.chunks.last().expect("a batch has a chunk");
                b.sealed_bytes += align_up(last.used, BLOCK_BYTES);
                b.chunks.push(Chunk { buf, used: 0 });
            }
            Place::LastChunk => {
                // Grow the chunk's buffer (doubling, amortized) if needed.
                let b = st.pending.back_mut().expect("matched Some");
                let c = b.chunks.last_mut().expect("a batch has a chunk");
                if c.used + rb > c.buf.len() {
                    let cap = (c.buf.len() * 2)
                        .max(align_up(c.used + rb, BLOCK_BYTES))
                        .min(chunk_max);
                    let mut bigger = self.inner.disk.alloc_buf(cap);
                    bigger.as_bytes_mut()[..c.used].copy_from_slice(&c.buf.as_bytes()[..c.used]);
                    c.buf = bigger;
                }
            }
        }
        let b = st.pending.back_mut().expect("a batch was just ensured");
        let batch_first = b.first_lsn;
        let c = b.chunks.last_mut().expect("a batch has a chunk");
        // The first record of each write says what was durable when it was
        // issued: everything before this batch (flushes are made durable one
        // after the other, and a batch is written only once the previous one
        // is durable).
        let first_delta = (c.used == 0).then(|| {
            u32::try_from(lsn - (batch_first - 1)).expect("a batch holds fewer than 2^32 records")
        });
        let at = c.used;
        let n = encode_record_with(&mut c.buf.as_bytes_mut()[at..], lsn, first_delta, len, fill);
        debug_assert!(
            matches!(decode_record(&c.buf.as_bytes()[at..at + n], opts.record_bytes_max),
                Slot::Record(r) if r.lsn == lsn && r.payload.len() == len),
            "record must decode right after it is encoded"
        );
        c.used += n;
        b.used += n;
        b.last_lsn = lsn;
        b.records += 1;
        b.payload_bytes += len as u64;
        st.next_lsn += 1;
        st.stats.next_lsn = st.next_lsn;
        st.queued_bytes += rb;
        if let Some(w) = st.writer_waker.take() {
            w.wake();
        }
        Ok(lsn)
    }

    /// Queues a record, waiting while the queue is full (backpressure);
    /// returns its LSN as soon as it is queued.
    pub async fn submit(&self, payload: &[u8]) -> Result<u64> {
        poll_fn(|cx| match self.try_submit(payload) {
            Err(WalError::QueueFull { .. }) => {
                self.inner
                    .st
                    .borrow_mut()
                    .space_waiters
                    .push(cx.waker().clone());
                Poll::Pending
            }
            r => Poll::Ready(r),
        })
        .await
    }

    /// Waits until every record up to `lsn` is durable.
    pub async fn wait_durable(&self, lsn: u64) -> Result<()> {
        poll_fn(|cx| {
            let mut st = self.inner.st.borrow_mut();
            if st.durable_lsn >= lsn {
                return Poll::Ready(Ok(()));
            }
            if let Some((c, full)) = &st.poison {
                return Poll::Ready(Err(WalError::Poisoned {
                    cause: c.clone(),
                    disk_full: *full,
                }));
            }
            assert!(
                lsn < st.next_lsn,
                "wait_durable({lsn}) for an LSN never handed out (next is {})",
                st.next_lsn
            );
            if st.writer_done {
                return Poll::Ready(Err(WalError::Closed));
            }
            st.durable_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Submits and waits for durability.
    pub async fn append(&self, payload: &[u8]) -> Result<u64> {
        let lsn = self.submit(payload).await?;
        self.wait_durable(lsn).await?;
        Ok(lsn)
    }

    /// The highest LSN known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.inner.st.borrow().durable_lsn
    }

    /// `Ok` while appends can succeed; the error every append would get
    /// once the log is poisoned (`Poisoned { disk_full, .. }`). A log opened
    /// on a full disk is poisoned from the start.
    pub fn health(&self) -> Result<()> {
        match &self.inner.st.borrow().poison {
            Some((c, full)) => Err(WalError::Poisoned {
                cause: c.clone(),
                disk_full: *full,
            }),
            None => Ok(()),
        }
    }

    /// The LSN the next record gets.
    pub fn next_lsn(&self) -> u64 {
        self.inner.st.borrow().next_lsn
    }

    pub fn stats(&self) -> WalStats {
        self.inner.st.borrow().stats.clone()
    }

    /// The first LSN of the live segment that holds `lsn`: everything a
    /// caller needs from `lsn` on keeps that whole segment (and every later
    /// one). An `lsn` before the oldest live segment gives `lsn` (already
    /// released); one at or past the head gives the active segment's first
    /// LSN. Callers compare it with what else pins the log: a record older
    /// than `segment_start(x)` costs a segment of its own that `x` does not.
    pub fn segment_start(&self, lsn: u64) -> u64 {
        let st = self.inner.st.borrow();
        match st.segments.partition_point(|(first, _)| *first <= lsn) {
            0 => lsn,
            i => st.segments[i - 1].0,
        }
    }

    /// Bytes of the live segments from the one holding `lsn` through the
    /// active one, counted whole at `segment_bytes` each (segments are
    /// preallocated whole; one opened from an older run with another size
    /// counts at this log's size): the disk that a record at `lsn` keeps.
    /// An `lsn` before the oldest live segment counts every live segment;
    /// one at or past the head, the active segment alone.
    pub fn bytes_from(&self, lsn: u64) -> u64 {
        let st = self.inner.st.borrow();
        let older = st
            .segments
            .partition_point(|(first, _)| *first <= lsn)
            .saturating_sub(1);
        (st.segments.len() - older) as u64 * self.inner.opts.segment_bytes
    }

    /// How many segments [`Wal::release_before`] with `lsn` would delete
    /// now (those all of whose records have LSN < `lsn`, never the active
    /// one).
    pub fn releasable_before(&self, lsn: u64) -> usize {
        let st = self.inner.st.borrow();
        st.segments.windows(2).take_while(|w| w[1].0 <= lsn).count()
    }

    /// Deletes every segment all of whose records have LSN < `lsn` (the
    /// active segment is never deleted). Returns how many were deleted.
    pub async fn release_before(&self, lsn: u64) -> Result<usize> {
        let victims = self.detach_before(lsn)?;
        self.remove_detached(&victims).await?;
        Ok(victims.len())
    }

    /// The first half of [`Wal::release_before`], done at once: the
    /// segments all of whose records have LSN < `lsn` leave the WAL (never
    /// written or read by it again; a segment's name is never reused).
    /// Their files stay until [`Wal::remove_detached`] removes them, which
    /// a caller may run in the background: unlinking many segments under
    /// a busy disk took 0.6-1.6 s. Returns their names.
    pub fn detach_before(&self, lsn: u64) -> Result<Vec<String>> {
        let victims: Vec<String> = {
            if let Some((c, full)) = &self.inner.st.borrow().poison {
                return Err(WalError::Poisoned {
                    cause: c.clone(),
                    disk_full: *full,
                });
            }
            let n = self.releasable_before(lsn);
            let mut st = self.inner.st.borrow_mut();
            let v = st.segments.drain(..n).map(|(_, n)| n).collect();
            st.stats.segments_removed += n as u64;
            st.stats.segments_live = st.segments.len();
            v
        };
        Ok(victims)
    }

    /// Removes the files of segments [`Wal::detach_before`] detached, then
    /// syncs the directory.
    pub async fn remove_detached(&self, victims: &[String]) -> Result<()> {
        if victims.is_empty() {
            return Ok(());
        }
        let disk = &self.inner.disk;
        for v in victims {
            disk.remove(v)
                .await
                .map_err(|e| WalError::io("remove", disk.describe(v), e))?;
        }
        disk.sync_dir()
            .await
            .map_err(|e| WalError::io("sync dir", disk.describe(""), e))
    }

    /// Writes out everything queued, stops the writer and reports whether
    /// all of it became durable.
    pub async fn close(self) -> Result<()> {
        self.inner.st.borrow_mut().closed = true;
        self.wake_writer();
        poll_fn(|cx| {
            let mut st = self.inner.st.borrow_mut();
            if st.writer_done {
                return Poll::Ready(match &st.poison {
                    Some((c, full)) => Err(WalError::Poisoned {
                        cause: c.clone(),
                        disk_full: *full,
                    }),
                    None => Ok(()),
                });
            }
            st.durable_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// What the writer task awaits now: "starting", "waiting for records", "writing",
    /// "fdatasync", "waiting for the next segment", "installing the next
    /// segment", "closing a segment", "stopped". For a caller that sees
    /// records stay not durable: which step the disk holds.
    pub fn writer_step(&self) -> &'static str {
        self.inner.st.borrow().writer_step
    }

    fn wake_writer(&self) {
        if let Some(w) = self.inner.st.borrow_mut().writer_waker.take() {
            w.wake();
        }
    }
}

impl<D: Disk> Drop for Wal<D> {
    fn drop(&mut self) {
        // The writer drains what is queued, then exits.
        self.inner.st.borrow_mut().closed = true;
        self.wake_writer();
    }
}

impl<D: Disk> Inner<D> {
    fn step(&self, step: &'static str) {
        self.st.borrow_mut().writer_step = step;
    }

    fn poison(&self, e: &WalError) {
        let mut st = self.st.borrow_mut();
        let cause = e.to_string();
        tracing::error!(%cause, "wal: poisoned");
        st.poison.get_or_insert((cause, e.is_disk_full()));
        st.pending.clear();
        wake_all(&mut st.durable_waiters);
        wake_all(&mut st.space_waiters);
    }

    fn try_next_batch(&self) -> Option<Batch> {
        let mut st = self.st.borrow_mut();
        if st.poison.is_some() {
            return None;
        }
        st.pending.pop_front()
    }

    async fn next_batch(&self) -> Option<Batch> {
        poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if st.poison.is_some() {
                return Poll::Ready(None);
            }
            if let Some(b) = st.pending.pop_front() {
                return Poll::Ready(Some(b));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.writer_waker = Some(cx.waker().clone());
            st.writer_step = "waiting for records";
            Poll::Pending
        })
        .await
    }
}

/// Runs the writes of one flush concurrently; the first error wins.
async fn join_all<F: std::future::Future<Output = std::io::Result<()>>>(
    futs: Vec<F>,
) -> std::io::Result<()> {
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> =
        futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for slot in futs.iter_mut() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => *slot = None,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await
}

type PrepTask<D> = glommio::Task<Result<(String, <D as Disk>::File)>>;

/// A flush whose writes completed and whose fdatasync is under way.
struct Syncing {
    sync: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>>,
    file_name: String,
    first_lsn: u64,
    last_lsn: u64,
    used: usize,
    records: u64,
    payload_bytes: u64,
    len: usize,
    started: Instant,
}

/// The writer. A flush is its batch's writes (issued concurrently), then one
/// fdatasync. Two flushes overlap: the writes of flush N+1 go out while
/// flush N's fdatasync runs, so the device never idles during a sync.
/// Records are reported durable strictly in LSN order. Submitters keep
/// filling the next batch meanwhile.
async fn writer<D: Disk>(inner: Rc<Inner<D>>, mut active: Active<D::File>) {
    let mut prep_seq = 1u64;
    let mut prep: Option<PrepTask<D>> = Some(glommio::spawn_local(prepare(
        inner.disk.clone(),
        prep_seq,
        inner.opts.clone(),
    )));
    let mut syncing: Option<Syncing> = None;
    loop {
        let batch = match syncing {
            Some(_) => inner.try_next_batch(),
            None => inner.next_batch().await,
        };
        let r = match batch {
            None => match syncing.take() {
                // Nothing new to write: finish the sync under way.
                Some(prev) => complete(&inner, prev).await,
                None => break,
            },
            Some(b) => {
                flush(
                    &inner,
                    &mut active,
                    &mut prep,
                    &mut prep_seq,
                    &mut syncing,
                    b,
                )
                .await
            }
        };
        if let Err(e) = r {
            inner.poison(&e);
            break;
        }
    }
    inner.step("stopped");
    let _ = close_rc(active.file).await;
    if let Some(p) = prep.take() {
        // Let a preparation under way finish; its file is removed at next open.
        let _ = p.await;
    }
    let mut st = inner.st.borrow_mut();
    st.writer_done = true;
    wake_all(&mut st.durable_waiters);
    wake_all(&mut st.space_waiters);
}

/// Awaits `writes` to `file`, nudging the file's ring every
/// `WRITE_NUDGE_MS` while they are outstanding (see there). A nudge runs
/// as a task of its own (the writes never wait on it), at most
/// `WRITE_NUDGES_IN_FLIGHT_MAX` at a time, and the ones still out are
/// cancelled once the writes are done: their references to `file` must
/// not outlive them, or the segment's close would be skipped (`close_rc`).
async fn nudged<D: Disk>(
    inner: &Inner<D>,
    file: &Rc<D::File>,
    writes: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    let mut writes = std::pin::pin!(writes);
    // The nudges in flight: their handles, and whether each is done.
    let mut out: Vec<(glommio::task::JoinHandle<()>, Rc<std::cell::Cell<bool>>)> = Vec::new();
    loop {
        let late = async {
            glommio::timer::sleep(std::time::Duration::from_millis(WRITE_NUDGE_MS)).await;
            None
        };
        if let Some(r) = futures_lite::future::or(async { Some(writes.as_mut().await) }, late).await
        {
            for (n, _) in out.drain(..) {
                n.cancel();
            }
            return r;
        }
        out.retain(|(_, done)| !done.get());
        if out.len() >= WRITE_NUDGES_IN_FLIGHT_MAX {
            continue;
        }
        inner.st.borrow_mut().stats.write_nudges += 1;
        let (f, done) = (file.clone(), Rc::new(std::cell::Cell::new(false)));
        let d = done.clone();
        let task = glommio::spawn_local(async move {
            let _ = f.nudge().await;
            d.set(true);
        })
        .detach();
        out.push((task, done));
    }
}

/// Where a flush goes in the active segment: `(t, start, len)`, with `t`
/// the bytes of the active block's earlier records it writes again (0: it
/// starts on the next block boundary), `start` its first byte's offset and
/// `len` its bytes on disk. It starts in the partly filled block when its
/// first write, those bytes then its first chunk (`first_used` bytes),
/// holds at most `tail_rewrite_bytes_max` (capped at `write_chunk_bytes`)
/// and the flush stays within `batch_bytes_max`; `fresh_len` is its length
/// on fresh blocks.
fn place_flush<F>(
    active: &Active<F>,
    first_used: usize,
    fresh_len: usize,
    opts: &WalOptions,
) -> (usize, u64, usize) {
    let t = active.tail.len();
    debug_assert_eq!(
        t as u64,
        active.offset % BLOCK_BYTES as u64,
        "the tail is the active block's bytes before the offset"
    );
    let rewrite_len =
        fresh_len - align_up(first_used, BLOCK_BYTES) + align_up(t + first_used, BLOCK_BYTES);
    if t > 0
        && t + first_used <= opts.tail_rewrite_bytes_max.min(opts.write_chunk_bytes)
        && rewrite_len <= opts.batch_bytes_max
    {
        (t, active.offset - t as u64, rewrite_len)
    } else {
        (
            0,
            align_up(active.offset as usize, BLOCK_BYTES) as u64,
            fresh_len,
        )
    }
}

/// Closes a file once no write or sync holds it any more.
async fn close_rc<F: SegmentFile>(f: Rc<F>) -> std::io::Result<()> {
    match Rc::try_unwrap(f) {
        Ok(f) => f.close().await,
        // Still referenced by an I/O being cancelled: closed on drop.
        Err(_) => Ok(()),
    }
}

/// Waits for a flush's fdatasync and reports its records durable.
async fn complete<D: Disk>(inner: &Inner<D>, f: Syncing) -> Result<()> {
    // Fail-stop: a failed fdatasync is never retried (the kernel may have
    // dropped the dirty data already); the caller poisons the log.
    inner.step("fdatasync");
    f.sync
        .await
        .map_err(|e| WalError::io("fdatasync", inner.disk.describe(&f.file_name), e))?;
    let us = f.started.elapsed().as_micros() as u64;
    let mut st = inner.st.borrow_mut();
    debug_assert!(
        f.first_lsn == st.durable_lsn + 1,
        "flushes are made durable in LSN order"
    );
    st.durable_lsn = f.last_lsn;
    st.queued_bytes -= f.used;
    let s = &mut st.stats;
    s.durable_lsn = f.last_lsn;
    s.records += f.records;
    s.payload_bytes += f.payload_bytes;
    s.bytes_written += f.len as u64;
    s.syncs += 1;
    s.batch_records.saturating_record(f.records);
    s.sync_latency_us.saturating_record(us.max(1));
    wake_all(&mut st.durable_waiters);
    wake_all(&mut st.space_waiters);
    Ok(())
}

async fn flush<D: Disk>(
    inner: &Inner<D>,
    active: &mut Active<D::File>,
    prep: &mut Option<PrepTask<D>>,
    prep_seq: &mut u64,
    syncing: &mut Option<Syncing>,
    mut batch: Batch,
) -> Result<()> {
    let opts = &inner.opts;
    let disk = &inner.disk;
    let first_used = batch.chunks[0].used;
    // Bytes on disk with every write starting on a fresh block.
    let fresh_len = batch.sealed_bytes
        + align_up(
            batch.chunks.last().expect("a batch has a chunk").used,
            BLOCK_BYTES,
        );
    debug_assert!(
        fresh_len <= opts.batch_bytes_max,
        "flush within batch_bytes_max"
    );
    let (mut t, mut start, mut len) = place_flush(active, first_used, fresh_len, opts);
    if start + len as u64 > opts.segment_bytes {
        // Roll only once the old segment is entirely durable: damage in any
        // segment but the last is then always corruption.
        if let Some(prev) = syncing.take() {
            complete(inner, prev).await?;
        }
        let task = prep.take().expect("a segment is always being prepared");
        inner.step("waiting for the next segment");
        let (prep_name, file) = task.await?;
        inner.step("installing the next segment");
        let name = install(disk, &prep_name, batch.first_lsn).await?;
        let old = std::mem::replace(active, Active::new(file, name.clone()));
        inner.step("closing a segment");
        close_rc(old.file)
            .await
            .map_err(|e| WalError::io("close", disk.describe(&old.name), e))?;
        {
            let mut st = inner.st.borrow_mut();
            st.segments.push((batch.first_lsn, name));
            st.stats.segments_created += 1;
            st.stats.segments_live = st.segments.len();
        }
        *prep_seq += 1;
        *prep = Some(glommio::spawn_local(prepare(
            disk.clone(),
            *prep_seq,
            opts.clone(),
        )));
        (t, start, len) = place_flush(active, first_used, fresh_len, opts);
        debug_assert_eq!(t, 0, "a new segment has no partly filled block");
    }
    // Each write is zero-padded to its block's end; the first may begin
    // with the earlier records of its block (`tail_rewrite_bytes_max`). The
    // first record of each write is stamped with what is durable now (see
    // format).
    let durable = inner.st.borrow().durable_lsn;
    let started = Instant::now();
    let file = active.file.clone();
    let rewrite = t > 0;
    let from = active.offset;
    let mut pos = start;
    let mut end = start;
    let chunks = batch.chunks.len();
    let mut writes = Vec::with_capacity(chunks);
    for (i, mut c) in batch.chunks.drain(..).enumerate() {
        restamp_first_record(c.buf.as_bytes_mut(), durable);
        let (mut buf, used) = if i == 0 && rewrite {
            // The block's earlier bytes go in front: shifted in place when
            // the chunk's buffer has the room (it starts at 64 KiB, the
            // default bound), else in a new buffer.
            let need = align_up(t + c.used, BLOCK_BYTES);
            let mut b = if c.buf.len() >= need {
                c.buf.as_bytes_mut().copy_within(..c.used, t);
                c.buf
            } else {
                let mut b = disk.alloc_buf(need);
                b.as_bytes_mut()[t..t + c.used].copy_from_slice(&c.buf.as_bytes()[..c.used]);
                b
            };
            b.as_bytes_mut()[..t].copy_from_slice(&active.tail);
            (b, t + c.used)
        } else {
            (c.buf, c.used)
        };
        let clen = align_up(used, BLOCK_BYTES);
        let bytes = buf.as_bytes_mut();
        bytes[used..clen].fill(0);
        if i + 1 == chunks {
            // What the next flush may write again.
            active.tail.clear();
            active
                .tail
                .extend_from_slice(&bytes[used / BLOCK_BYTES * BLOCK_BYTES..used]);
            end = pos + used as u64;
        }
        buf.trim_to_size(clen);
        writes.push(file.write_at(Rc::new(buf), pos));
        pos += clen as u64;
    }
    debug_assert_eq!(pos - start, len as u64);
    // While these writes run, the previous flush's fdatasync finishes and
    // its records are reported durable at once: they do not wait for this
    // flush's writes (that made every commit under load cost a write more).
    let prev = syncing.take();
    inner.step("writing");
    let writes = nudged(inner, &file, join_all(writes));
    let (written, synced) = futures_lite::future::zip(writes, async move {
        match prev {
            Some(p) => complete(inner, p).await,
            None => Ok(()),
        }
    })
    .await;
    synced?;
    written.map_err(|e| WalError::io("write", disk.describe(&active.name), e))?;
    active.offset = end;
    {
        let s = &mut inner.st.borrow_mut().stats;
        s.tail_rewrites += rewrite as u64;
        s.segment_bytes_used += end - from;
    }
    let f2 = file.clone();
    let next = Syncing {
        sync: Box::pin(async move { f2.fdatasync().await }),
        file_name: active.name.clone(),
        first_lsn: batch.first_lsn,
        last_lsn: batch.last_lsn,
        used: batch.used,
        records: batch.records,
        payload_bytes: batch.payload_bytes,
        len,
        started,
    };
    *syncing = Some(next);
    Ok(())
}
