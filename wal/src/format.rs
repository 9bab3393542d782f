//! On-disk format: segment names, the segment header block and records.
//!
//! ```text
//! segment file "{first_lsn:020}.wal", exactly `segment_bytes` long while active
//! (preallocated), truncated to its last valid record once sealed at recovery.
//!
//! block 0 (BLOCK_BYTES = 4096), the segment header, written and synced while
//! the segment is prepared, before it gets its name:
//!   0  magic          [u8; 8] = "RRWALSEG"
//!   8  version        u32 LE  = FORMAT_VERSION
//!  12  block_bytes    u32 LE  = 4096
//!  16  segment_bytes  u64 LE
//!  24  crc            u32 LE  = crc32(bytes 0..24)
//!  28  zero padding to 4096
//!
//! from block 1 on: writes. A flush (one fdatasync) is made of one or more
//! DMA writes issued together; each write starts on a block boundary and is
//! zero-padded to the next one. Since version 2, a flush's first write may
//! start in the block where the previous flush's records end: it writes
//! those records again, unchanged, and its own first record follows them
//! with no gap (mid-block); the others start on block boundaries
//! (`WalOptions::tail_rewrite_bytes_max`). Inside a write, records follow
//! each other with no gap:
//!   0  crc            u32 LE  = crc32(header bytes 4..24 ++ payload)
//!   4  len            u32 LE  payload length in bytes
//!   8  lsn            u64 LE  strictly increasing by one across the whole log
//!  16  flags          u16 LE  bit 0 = FIRST_IN_WRITE
//!  18  magic          u16 LE  = RECORD_MAGIC
//!  20  durable_delta  u32 LE  FIRST_IN_WRITE records: lsn - D >= 1, where D
//!                             is the highest LSN durable when the write was
//!                             issued; other records: 0
//!  24  payload        [u8; len], then zeros up to a multiple of 8
//! ```
//!
//! `durable_delta` is what lets recovery tell a torn write (never
//! acknowledged) from corruption (acknowledged, then damaged): a write issued
//! when LSN D was durable proves every record up to D had been acknowledged.
//!
//! Reading: at a record position, an all-zero header means padding (jump to
//! the next block boundary) or, at a block boundary, the end of the data.
//! Fewer than `RECORD_HEADER_BYTES` left in a block is padding as well.
//!
//! Versions: this build writes version 2 and reads 1 and 2 (version 1 is
//! version 2 without mid-block write starts). A build that reads only
//! version 1 refuses a version-2 segment by its header, instead of taking
//! its first mid-block write start for a torn tail and cutting acknowledged
//! records.

use crc32fast::Hasher;

/// Alignment of every DMA write and size of the segment header block.
pub const BLOCK_BYTES: usize = 4096;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Records (header + payload) are padded to this alignment.
pub const RECORD_ALIGN: usize = 8;
/// Magic of the segment header block.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RRWALSEG";
/// Version of the format this build writes; bumped on any incompatible
/// change.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads.
pub const FORMAT_VERSION_MIN: u32 = 1;
/// Per-record magic: a cheap first filter before the checksum.
pub const RECORD_MAGIC: u16 = 0x5252;
/// Flag: the record is the first of its flush's DMA write (in a write that
/// begins with the earlier records of its block, the first after them).
pub const FLAG_FIRST_IN_WRITE: u16 = 1;
/// Bytes of the segment header that are meaningful (the rest of the block is zero).
pub const SEGMENT_HEADER_BYTES: usize = 28;
/// Suffix of an active or sealed segment.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a prepared segment (preallocated, header synced, not yet in use).
pub const PREPARED_SUFFIX: &str = ".prep";

const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(BLOCK_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_HEADER_BYTES <= BLOCK_BYTES);

/// Bytes a record of `payload_len` takes in a flush.
#[inline]
pub const fn record_bytes(payload_len: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_len, RECORD_ALIGN)
}

/// Rounds `v` up to a multiple of `a` (a power of two).
#[inline]
pub const fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

/// Name of the segment whose first record has `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment name back into its first LSN.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes the segment header into the first bytes of `block`.
pub fn encode_segment_header(block: &mut [u8], segment_bytes: u64) {
    block[..BLOCK_BYTES].fill(0);
    block[0..8].copy_from_slice(&SEGMENT_MAGIC);
    block[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    block[12..16].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
    block[16..24].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&block[0..24]);
    block[24..28].copy_from_slice(&crc.to_le_bytes());
}

/// What is wrong with a segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    Short,
    Magic,
    Checksum,
    Version(u32),
    BlockBytes(u32),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::Short => write!(f, "segment shorter than its header block"),
            HeaderProblem::Magic => write!(f, "bad segment magic"),
            HeaderProblem::Checksum => write!(f, "segment header checksum mismatch"),
            HeaderProblem::Version(v) => {
                write!(
                    f,
                    "unsupported format version {v} (this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION}): written by a newer build? Run that build, or move this WAL directory aside"
                )
            }
            HeaderProblem::BlockBytes(b) => write!(f, "unsupported block size {b}"),
        }
    }
}

/// Checks a segment header; returns the segment size it records.
pub fn decode_segment_header(data: &[u8]) -> Result<u64, HeaderProblem> {
    if data.len() < BLOCK_BYTES {
        return Err(HeaderProblem::Short);
    }
    if data[0..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::Magic);
    }
    let crc = u32::from_le_bytes(data[24..28].try_into().unwrap());
    if crc != crc32fast::hash(&data[0..24]) {
        return Err(HeaderProblem::Checksum);
    }
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap());
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderProblem::Version(version));
    }
    let block = u32::from_le_bytes(data[12..16].try_into().unwrap());
    if block as usize != BLOCK_BYTES {
        return Err(HeaderProblem::BlockBytes(block));
    }
    Ok(u64::from_le_bytes(data[16..24].try_into().unwrap()))
}

/// Writes one record at the start of `out` and returns the bytes used
/// (`record_bytes(payload.len())`). `out` must be at least that long.
/// `first_delta`: `Some(lsn - durable)` for the first record of a write.
#[inline]
pub fn encode_record(out: &mut [u8], lsn: u64, first_delta: Option<u32>, payload: &[u8]) -> usize {
    encode_record_with(out, lsn, first_delta, payload.len(), |p| {
        p.copy_from_slice(payload)
    })
}

/// Like [`encode_record`], but `fill` writes the `len` payload bytes in place
/// (so a caller can serialize straight into the write buffer).
#[inline]
pub fn encode_record_with(
    out: &mut [u8],
    lsn: u64,
    first_delta: Option<u32>,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> usize {
    debug_assert!(
        first_delta != Some(0),
        "durable_delta of a first record is >= 1"
    );
    let total = record_bytes(len);
    let out = &mut out[..total];
    let flags = if first_delta.is_some() {
        FLAG_FIRST_IN_WRITE
    } else {
        0
    };
    out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out[16..18].copy_from_slice(&flags.to_le_bytes());
    out[18..20].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[20..24].copy_from_slice(&first_delta.unwrap_or(0).to_le_bytes());
    fill(&mut out[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len]);
    out[RECORD_HEADER_BYTES + len..].fill(0);
    let mut h = Hasher::new();
    h.update(&out[4..RECORD_HEADER_BYTES + len]);
    out[0..4].copy_from_slice(&h.finalize().to_le_bytes());
    total
}

/// Rewrites the `durable_delta` of the first record of a write buffer to
/// say that `durable` was the highest durable LSN when the write was
/// issued, and recomputes its checksum.
pub fn restamp_first_record(buf: &mut [u8], durable: u64) {
    let lsn = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    debug_assert!(
        u16::from_le_bytes(buf[16..18].try_into().unwrap()) & FLAG_FIRST_IN_WRITE != 0,
        "a write starts with a first-in-write record"
    );
    let delta = u32::try_from(lsn - durable).expect("fewer than 2^32 records in flight");
    debug_assert!(delta >= 1, "a record in flight is above the durable LSN");
    buf[20..24].copy_from_slice(&delta.to_le_bytes());
    let mut h = Hasher::new();
    h.update(&buf[4..RECORD_HEADER_BYTES + len]);
    buf[0..4].copy_from_slice(&h.finalize().to_le_bytes());
}

/// A record read back from a flush, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: u64,
    /// `Some(durable_delta)` if the record starts a DMA write.
    pub first_delta: Option<u32>,
    pub payload: &'a [u8],
    /// Bytes the record takes, padding included.
    pub bytes: usize,
}

/// What is found at a record position.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A record whose checksum, magic and length check out.
    Record(RecordRef<'a>),
    /// An all-zero header: padding, or the end of the data at a block boundary.
    Zero,
    /// Anything else: a torn write, a bit flip, garbage.
    Damaged,
}

/// Decodes the record at the start of `data` (which extends at most to the
/// end of the segment), with `record_bytes_max` as the sanity bound on len.
#[inline]
pub fn decode_record(data: &[u8], record_bytes_max: usize) -> Slot<'_> {
    if data.len() < RECORD_HEADER_BYTES {
        return if data.iter().all(|&b| b == 0) {
            Slot::Zero
        } else {
            Slot::Damaged
        };
    }
    let hdr = &data[..RECORD_HEADER_BYTES];
    if hdr.iter().all(|&b| b == 0) {
        return Slot::Zero;
    }
    let magic = u16::from_le_bytes(hdr[18..20].try_into().unwrap());
    let len = u32::from_le_bytes(hdr[4..8].try_into().unwrap()) as usize;
    let flags = u16::from_le_bytes(hdr[16..18].try_into().unwrap());
    let delta = u32::from_le_bytes(hdr[20..24].try_into().unwrap());
    let first = flags & FLAG_FIRST_IN_WRITE != 0;
    if magic != RECORD_MAGIC
        || len > record_bytes_max
        || flags & !FLAG_FIRST_IN_WRITE != 0
        || first != (delta != 0)
    {
        return Slot::Damaged;
    }
    let total = record_bytes(len);
    if total > data.len() {
        return Slot::Damaged;
    }
    let payload = &data[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    let mut h = Hasher::new();
    h.update(&hdr[4..RECORD_HEADER_BYTES]);
    h.update(payload);
    let crc = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    if crc != h.finalize() {
        return Slot::Damaged;
    }
    Slot::Record(RecordRef {
        lsn: u64::from_le_bytes(hdr[8..16].try_into().unwrap()),
        first_delta: first.then_some(delta),
        payload,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_bit_flip_is_caught() {
        let mut buf = vec![0u8; 256];
        let n = encode_record(&mut buf, 42, Some(3), b"hello wal");
        assert_eq!(n, record_bytes(9));
        match decode_record(&buf[..n], 1 << 20) {
            Slot::Record(r) => {
                assert_eq!(
                    (r.lsn, r.first_delta, r.payload, r.bytes),
                    (42, Some(3), &b"hello wal"[..], n)
                )
            }
            other => panic!("expected a record, got {other:?}"),
        }
        for bit in 0..(RECORD_HEADER_BYTES + 9) * 8 {
            let mut c = buf.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&c[..n], 1 << 20), Slot::Record(r) if r.lsn == 42 && r.payload == b"hello wal"),
                "bit {bit} flipped and still decoded as the original"
            );
        }
    }

    #[test]
    fn zero_header_is_padding_and_short_tail_is_classified() {
        assert_eq!(decode_record(&[0u8; 64], 100), Slot::Zero);
        assert_eq!(decode_record(&[0u8; 5], 100), Slot::Zero);
        assert_eq!(decode_record(&[0, 1, 0], 100), Slot::Damaged);
    }

    #[test]
    fn oversized_length_is_damage_not_a_panic() {
        let mut buf = vec![0u8; 64];
        encode_record(&mut buf, 1, None, b"x");
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&buf, 1 << 20), Slot::Damaged);
    }

    #[test]
    fn segment_names_sort_by_lsn_and_round_trip() {
        let a = segment_name(9);
        let b = segment_name(10);
        assert!(a < b);
        assert_eq!(parse_segment_name(&b), Some(10));
        assert_eq!(parse_segment_name("junk.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000010.prep"), None);
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let mut block = vec![0u8; BLOCK_BYTES];
        encode_segment_header(&mut block, 1 << 26);
        assert_eq!(decode_segment_header(&block), Ok(1 << 26));
        block[17] ^= 1;
        assert_eq!(decode_segment_header(&block), Err(HeaderProblem::Checksum));
        assert_eq!(
            decode_segment_header(&block[..10]),
            Err(HeaderProblem::Short)
        );
    }

    /// Rewrites the version field of a valid header (checksum fixed up).
    fn header_of_version(v: u32) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK_BYTES];
        encode_segment_header(&mut block, 1 << 26);
        block[8..12].copy_from_slice(&v.to_le_bytes());
        let crc = crc32fast::hash(&block[0..24]);
        block[24..28].copy_from_slice(&crc.to_le_bytes());
        block
    }

    #[test]
    fn version_1_segments_are_read_and_a_newer_version_is_refused_by_name() {
        assert_eq!(FORMAT_VERSION, 2);
        assert_eq!(decode_segment_header(&header_of_version(1)), Ok(1 << 26));
        assert_eq!(decode_segment_header(&header_of_version(2)), Ok(1 << 26));
        let e = decode_segment_header(&header_of_version(3)).unwrap_err();
        assert_eq!(e, HeaderProblem::Version(3));
        let msg = e.to_string();
        assert!(msg.contains("version 3") && msg.contains("1 to 2"), "{msg}");
    }
}
