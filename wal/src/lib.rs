//! # ringraft-wal
//!
//! A segmented, checksummed, group-committed write-ahead log on io_uring
//! (glommio DMA files, O_DIRECT). One log per shard holds the records of all
//! the Raft groups of that shard, so one `fdatasync` makes many groups'
//! writes durable at once. Payloads are opaque bytes to this crate.
//!
//! ## Guarantees
//! - `submit` hands out an LSN at once (strictly increasing by one);
//!   `wait_durable(lsn)` returns once that record and all before it are on
//!   disk (written with O_DIRECT and `fdatasync`ed). `append` does both.
//! - Group commit: whatever is queued when the writer is free becomes one
//!   flush: DMA writes of at most `write_chunk_bytes` issued together, then
//!   one `fdatasync`. The writes of the next flush go out while that sync
//!   runs (two flushes overlap); records become durable strictly in LSN
//!   order; the next batch is assembled meanwhile.
//! - Each DMA write starts on a 4 KiB block boundary and is zero-padded to
//!   the next one. A small flush (`WalOptions::tail_rewrite_bytes_max`)
//!   starts in the block where the previous flush's records end: it writes
//!   those records' bytes again, unchanged, and its own follow them, so a
//!   flush of one small record does not take a block of its own. This
//!   rests on a write that a crash or an I/O error interrupts leaving each
//!   sector old or new (the assumption of every log written through the
//!   page cache); with `tail_rewrite_bytes_max = 0` a block holding
//!   acknowledged records is never written again, at up to 4 KiB - 8 of
//!   padding per flush.
//! - Recovery (`Wal::open`) hands back every valid record in LSN order. A torn
//!   tail of the last segment is truncated and reported (file, offset, bytes
//!   dropped); damage that a later write proves was acknowledged, or damage
//!   in any segment but the last, is corruption: `open` fails naming file and
//!   offset, unless [`RecoveryMode::PointInTime`] was chosen. Damage confined
//!   to the last two flushes cannot be told from a torn write (they may both
//!   have been in flight). See [`recovery`] for why this is sound.
//! - A failed `fdatasync` or write poisons the log: every later call fails;
//!   nothing is retried. A full disk (ENOSPC, typically when preallocating
//!   the next segment) poisons it the same way; everything acknowledged
//!   before stays readable and the log reopens cleanly. `open` on a full
//!   disk replays everything and returns a log poisoned by the full disk
//!   ([`Wal::health`]), so a node can restart and serve what it has.
//! - Stale bytes never pass as records: segments are preallocated fresh
//!   (zeros), a record is accepted only with the exact next LSN, and after a
//!   restart the last segment is cut at its last valid record and appends go
//!   to a new segment, so no byte written before a crash is ever read as new.
//!
//! ## Format (version 2; version 1 is read)
//! Segment files are named by the LSN of their first record
//! (`{lsn:020}.wal`), preallocated to `segment_bytes`. Block 0 holds the
//! segment header (magic `RRWALSEG`, version, block size, segment size,
//! CRC32). Flushes follow from block 1 on; a record is a 24-byte header
//! (CRC32 over header and payload, payload length, LSN, flags, magic) and the
//! payload, padded to 8 bytes. The byte layout is in [`format`].

pub mod disk;
pub mod error;
pub mod format;
pub mod memdisk;
pub mod recovery;
mod wal;

pub use disk::{Disk, DmaDisk, DmaSegment, SegmentFile};
pub use error::{Result, WalError};
pub use memdisk::{CrashMode, MemDisk, MemFile};
pub use wal::{
    RecoveryMode, RecoveryReport, TornTail, ValidWalOptions, Wal, WalOptions, WalStats,
    TAIL_REWRITE_BYTES_MAX, WRITE_NUDGES_IN_FLIGHT_MAX, WRITE_NUDGE_MS,
};
