//! Reading segments back at open: what is valid, what is a torn tail, what is
//! corruption.
//!
//! The policy rests on what each DMA write records: its first record carries
//! `durable_delta`, so `lsn - durable_delta` is the highest LSN that was
//! durable (hence possibly acknowledged) when the write was issued. A new
//! segment is started only after the previous one's last flush was synced.
//! Hence, for damage (bytes that are neither a valid record nor zero
//! padding) where LSN E was expected:
//!
//! - if a later write in the segment (a valid first-in-write record: on a
//!   block boundary, or since version 2 mid-block, where a flush's own
//!   records begin after the earlier bytes it wrote again) was issued when
//!   E was already durable, or the damage lies
//!   in any segment but the last, record E had been made durable: it is
//!   **corruption**;
//! - otherwise it is a **torn tail**: writes in flight at the crash, never
//!   acknowledged (the writes of one flush go out concurrently, so any subset
//!   of them may have reached the disk). It is dropped and reported (file,
//!   offset, bytes dropped). A synced last flush that rots later cannot be
//!   told apart from a torn one; it is treated the same way.

use crate::format::*;

/// Why a segment's scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The data ended (end of file).
    Eof,
    /// A zero header on a block boundary: no more flushes.
    CleanEnd,
    /// Bytes that are not a valid record with the expected LSN.
    Damage,
}

/// The result of scanning one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Offset just past the last valid record (BLOCK_BYTES if none).
    pub valid_end: usize,
    /// LSN the next record must have.
    pub next_lsn: u64,
    /// Number of valid records.
    pub records: u64,
    pub stop: Stop,
    /// Where the scan stopped.
    pub stop_offset: usize,
}

/// Scans the flushes of a segment (`data` is the whole file, header block
/// included), calling `emit` for every valid record in order.
pub fn scan_segment(
    data: &[u8],
    first_lsn: u64,
    record_bytes_max: usize,
    mut emit: impl FnMut(u64, &[u8]),
) -> Scan {
    let mut pos = BLOCK_BYTES;
    let mut lsn = first_lsn;
    let mut records = 0;
    let mut valid_end = BLOCK_BYTES;
    let stop = loop {
        if pos >= data.len() {
            break Stop::Eof;
        }
        let aligned = pos.is_multiple_of(BLOCK_BYTES);
        // Records of one flush follow each other with no gap, headers may
        // straddle blocks; a flush ends with zeros up to the block boundary,
        // or the next flush's first record follows its last one (version 2).
        let slot = decode_record(&data[pos..], record_bytes_max);
        match slot {
            Slot::Record(r) if r.lsn == lsn => {
                emit(r.lsn, r.payload);
                lsn += 1;
                records += 1;
                pos += r.bytes;
                valid_end = pos;
            }
            Slot::Zero if aligned => break Stop::CleanEnd,
            _ if aligned => break Stop::Damage,
            _ => {
                let block_end = align_up(pos, BLOCK_BYTES).min(data.len());
                if data[pos..block_end].iter().any(|&b| b != 0) {
                    break Stop::Damage;
                }
                pos = block_end;
            }
        }
    };
    Scan {
        valid_end,
        next_lsn: lsn,
        records,
        stop,
        stop_offset: pos,
    }
}

/// Offset of the first write after `from` that was issued when LSN
/// `expected` was already durable: proof that the damage at `from` hit an
/// acknowledged record. A flush's first record may sit at any record
/// position (version 2 starts a flush's records mid-block), so every
/// 8-byte offset after `from` is looked at. Before any checksum, the
/// header must have the record magic and the first-in-write flag, prove
/// `expected` durable (`lsn - durable_delta >= expected`), and carry an LSN
/// that the bytes since `from` could hold (the records `expected..lsn` lie
/// between, 24 bytes each at least): payload bytes shaped like headers at
/// every offset then cost no checksum over their claimed length, and a
/// scan of a mostly zero 64 MiB segment costs milliseconds.
pub fn later_flush_start(
    data: &[u8],
    from: usize,
    expected: u64,
    record_bytes_max: usize,
) -> Option<usize> {
    let mut b = align_up(from + 1, RECORD_ALIGN);
    while b + RECORD_HEADER_BYTES <= data.len() {
        if plausible_proof(&data[b..], b - from, expected)
            && matches!(decode_record(&data[b..], record_bytes_max), Slot::Record(_))
        {
            return Some(b);
        }
        b += RECORD_ALIGN;
    }
    None
}

/// The header checks of [`later_flush_start`] before the checksum: the
/// record magic, and a first-in-write record whose delta proves `expected`
/// durable and whose LSN fits the `gap` bytes after the damage.
fn plausible_proof(hdr: &[u8], gap: usize, expected: u64) -> bool {
    if hdr[18..20] != RECORD_MAGIC.to_le_bytes() {
        return false;
    }
    let lsn = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
    let flags = u16::from_le_bytes(hdr[16..18].try_into().unwrap());
    let delta = u32::from_le_bytes(hdr[20..24].try_into().unwrap()) as u64;
    flags & FLAG_FIRST_IN_WRITE != 0
        && lsn.saturating_sub(delta) >= expected
        && lsn <= expected.saturating_add((gap / RECORD_HEADER_BYTES) as u64)
}

/// Bytes from `from` up to and including the last non-zero byte of `data`.
pub fn nonzero_extent(data: &[u8], from: usize) -> usize {
    match data[from.min(data.len())..].iter().rposition(|&b| b != 0) {
        Some(i) => i + 1,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a segment image from flushes (one write each) of payloads.
    fn image(first_lsn: u64, flushes: &[&[&[u8]]], seg: usize) -> Vec<u8> {
        image_with(first_lsn, flushes, seg, false)
    }

    /// Like `image`; `packed`: each flush starts where the previous one's
    /// records end (version 2's tail rewrite), not on a fresh block.
    fn image_with(first_lsn: u64, flushes: &[&[&[u8]]], seg: usize, packed: bool) -> Vec<u8> {
        let mut d = vec![0u8; seg];
        encode_segment_header(&mut d, seg as u64);
        let mut pos = BLOCK_BYTES;
        let mut lsn = first_lsn;
        for f in flushes {
            for (i, p) in f.iter().enumerate() {
                // Each flush was issued once the previous ones were durable.
                let first = (i == 0).then_some(1);
                pos += encode_record(&mut d[pos..], lsn, first, p);
                lsn += 1;
            }
            if !packed {
                pos = align_up(pos, BLOCK_BYTES);
            }
        }
        d
    }

    fn collect(d: &[u8], first: u64) -> (Vec<(u64, Vec<u8>)>, Scan) {
        let mut v = Vec::new();
        let s = scan_segment(d, first, 1 << 20, |l, p| v.push((l, p.to_vec())));
        (v, s)
    }

    #[test]
    fn flushes_that_start_mid_block_are_read_on() {
        let d = image_with(
            5,
            &[&[b"a", b"bb"], &[b"ccc"], &[&[7u8; 5000]], &[b"d"]],
            8 * BLOCK_BYTES,
            true,
        );
        let (v, s) = collect(&d, 5);
        assert_eq!(
            v.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9]
        );
        assert_eq!(v[3].1, vec![7u8; 5000]);
        assert_eq!(s.stop, Stop::CleanEnd);
        let end = BLOCK_BYTES + 3 * 32 + record_bytes(5000) + 32;
        assert_eq!(s.valid_end, end);
        assert_eq!(s.stop_offset, align_up(end, BLOCK_BYTES));
    }

    #[test]
    fn reads_flushes_across_padding_and_stops_clean() {
        let d = image(
            5,
            &[&[b"a", b"bb"], &[b"ccc"], &[&[7u8; 5000]]],
            8 * BLOCK_BYTES,
        );
        let (v, s) = collect(&d, 5);
        assert_eq!(v.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
        assert_eq!(v[3].1, vec![7u8; 5000]);
        assert_eq!(s.stop, Stop::CleanEnd);
        assert_eq!(s.next_lsn, 9);
        assert_eq!(s.stop_offset, 5 * BLOCK_BYTES); // the 5000-byte record spans two blocks
    }

    #[test]
    fn a_flush_that_fills_its_block_to_within_a_header_is_read_on() {
        // 4096 - 24 (header) - 4048 payload = exact fill; then 4032 leaves 16 < header.
        let d = image(
            1,
            &[&[&[1u8; 4048]], &[&[2u8; 4032]], &[b"x"]],
            8 * BLOCK_BYTES,
        );
        let (v, s) = collect(&d, 1);
        assert_eq!(v.len(), 3);
        assert_eq!(s.stop, Stop::CleanEnd);
    }

    #[test]
    fn damage_followed_by_a_later_flush_is_found() {
        // Flush 1: LSNs 1-2; flush 2 (LSN 3, issued once LSN 2 was durable:
        // delta 1) on the next block, or (version 2) right after them.
        for (packed, at) in [(false, 2 * BLOCK_BYTES), (true, BLOCK_BYTES + 2 * 32)] {
            let mut d = image_with(1, &[&[b"a", b"b"], &[b"c"]], 4 * BLOCK_BYTES, packed);
            d[BLOCK_BYTES + 24] ^= 4; // record 1's payload byte
            let (v, s) = collect(&d, 1);
            assert!(v.is_empty());
            assert_eq!(s.stop, Stop::Damage);
            assert_eq!(
                later_flush_start(&d, s.stop_offset, s.next_lsn, 1 << 20),
                Some(at),
                "packed {packed}: the second flush proves record 1 was durable"
            );
            // Issued while nothing was durable yet (delta 3): a torn tail.
            encode_record(&mut d[at..], 3, Some(3), b"c");
            assert_eq!(
                later_flush_start(&d, s.stop_offset, s.next_lsn, 1 << 20),
                None,
                "packed {packed}"
            );
        }
    }

    #[test]
    fn damage_before_a_write_of_the_same_flush_is_a_torn_tail_not_corruption() {
        // One flush of two concurrent writes: LSNs 1-2 at block 1, LSN 3 at
        // block 2 (its first record says LSN 0 was durable at issue: delta 3).
        let mut d = vec![0u8; 4 * BLOCK_BYTES];
        encode_segment_header(&mut d, 4 * BLOCK_BYTES as u64);
        let mut pos = BLOCK_BYTES;
        pos += encode_record(&mut d[pos..], 1, Some(1), b"a");
        encode_record(&mut d[pos..], 2, None, b"b");
        encode_record(&mut d[2 * BLOCK_BYTES..], 3, Some(3), b"c");
        // The first write was torn: record 2 never made it.
        d[pos..pos + 32].fill(0xEE);
        let (v, s) = collect(&d, 1);
        assert_eq!(v.len(), 1);
        assert_eq!(s.stop, Stop::Damage);
        assert_eq!(
            later_flush_start(&d, s.stop_offset, s.next_lsn, 1 << 20),
            None,
            "same flush: torn"
        );
        // Had the second write been issued once LSN 2 was durable (a later
        // flush), the damage would be corruption.
        encode_record(&mut d[2 * BLOCK_BYTES..], 3, Some(1), b"c");
        assert_eq!(
            later_flush_start(&d, s.stop_offset, s.next_lsn, 1 << 20),
            Some(2 * BLOCK_BYTES)
        );
    }

    #[test]
    fn a_record_forged_inside_a_payload_proves_nothing() {
        // A user's value holding a whole first-in-write record that claims
        // LSN 1000 was issued once LSN 999 was durable.
        let mut fake = vec![0u8; 64];
        let n = encode_record(&mut fake, 1000, Some(1), b"forged");
        let value = [&[0u8; 8][..], &fake[..n], &[0u8; 8]].concat();
        let mut d = image(1, &[&[b"a", &value]], 4 * BLOCK_BYTES);
        let forged_at = BLOCK_BYTES + 32 + 24 + 8;
        assert!(matches!(
            decode_record(&d[forged_at..], 1 << 20),
            Slot::Record(r) if r.lsn == 1000
        ));
        d[BLOCK_BYTES + 24] ^= 4; // record 1's payload byte
        let (_, s) = collect(&d, 1);
        assert_eq!((s.stop, s.stop_offset), (Stop::Damage, BLOCK_BYTES));
        // LSNs 1..1000 cannot lie in the 88 bytes before it: a torn tail.
        assert_eq!(
            later_flush_start(&d, s.stop_offset, s.next_lsn, 1 << 20),
            None
        );
    }

    #[test]
    fn wrong_lsn_is_damage() {
        let d = image(1, &[&[b"a"]], 2 * BLOCK_BYTES);
        let (_, s) = collect(&d, 2);
        assert_eq!(s.stop, Stop::Damage);
    }

    #[test]
    fn extent_of_trailing_garbage() {
        let mut d = vec![0u8; 100];
        assert_eq!(nonzero_extent(&d, 10), 0);
        d[50] = 1;
        assert_eq!(nonzero_extent(&d, 10), 41);
    }
}
