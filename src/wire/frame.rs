//! Frames: how messages are cut on a TCP stream.
//!
//! ```text
//! frame = header (16 bytes) | payload | zero padding to a multiple of 16
//!   0  magic    u32 LE = FRAME_MAGIC ("RRFW")
//!   4  version  u8     = PROTOCOL_VERSION
//!   5  kind     u8     message kind (the message layer validates it)
//!   6  flags    u16 LE = 0 (reserved: a non-zero value is refused)
//!   8  len      u32 LE payload length, unpadded
//!  12  crc      u32 LE CRC32 (crc32fast) of header bytes 4..12 and the payload
//! ```
//!
//! The checksum covers the kind and the length as well as the payload, so a
//! flipped kind cannot make one message pass for another.
//!
//! Every frame is a multiple of 16 bytes long, so in a receive buffer that
//! starts 16-byte aligned every payload starts 16-byte aligned too: archived
//! messages can be accessed in place, without copying them out.

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Alignment of every frame (and so of every payload in a receive buffer).
pub const FRAME_ALIGN: usize = 16;
/// "RRFW" as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RRFW");
/// Version of the wire protocol; a peer of another version is refused.
/// 2: the handshake carries store incarnations (`crate::identity`).
/// 4: `Body::Quiesce` (issue #16).
/// 5: coalesced heartbeats (`message::KIND_HEARTBEATS`, issue #16).
/// 6: ordered key ranges: range descriptors in the cluster map, a scan's
///    range end, `ClientError::KeyNotInRange` (issue #17).
/// 7: the replication factor in the cluster map.
/// 8: `Op::RemoveNode::below_replication_factor` (the floor on voters).
/// 9: `Op::Descriptor` (a range's descriptor from its leader only).
/// 10: `Op::ReplaceVoter` (a move's one joint membership step).
/// 11: `GroupStatus`: each replica's progress state, the log's last
///     index, quiesced, reads waiting.
/// 12: `Body::MemberCheck` (a learner asks whether it is still a member);
///     `ReplicaStatus`: the snapshot streaming to a member and its bytes acked.
/// 13: `Op::Progress` (one range's status from its leader, no digest).
/// 14: `ReplicaStatus`: the member's replica id and role; `Op::Incr` and
///     `Op::Append` (atomic read-modify-writes, for the RESP port);
///     `Op::Scan::keys_only`.
/// 15: `Op::Split` (a range split through its own log, issue #18); a
///     node of an older version could not apply its entry, and version
///     15 refuses to talk to it.
/// 16: `ClientError::KeyNotInRange::version` (a client narrows its cached
///     descriptor and refuses stale reports of the range's old bounds).
/// 17: `ClusterMap::leaders` as (group, leader) pairs, ranges made by
///     splits included.
pub const PROTOCOL_VERSION: u8 = 17;
/// Default bound on a frame's payload (`frame_bytes_max`).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 << 20;

const _: () = assert!(FRAME_HEADER_BYTES == 16 && FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN));

/// What is wrong with bytes received as a frame. The connection that sent
/// them is closed; nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:#010x}")]
    Magic(u32),
    #[error("protocol version {got}, this node speaks {PROTOCOL_VERSION}")]
    Version { got: u8 },
    #[error("reserved frame flags set ({0:#06x})")]
    Flags(u16),
    #[error("frame payload of {len} bytes exceeds frame_bytes_max = {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch (payload of {len} bytes)")]
    Checksum { len: usize },
    #[error("frame padding is not zero")]
    Padding,
}

/// A decoded frame, borrowing its payload from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

fn frame_crc(header_fields: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_fields);
    h.update(payload);
    h.finalize()
}

/// Total bytes a frame with a payload of `len` bytes takes.
#[inline]
pub const fn frame_bytes(len: usize) -> usize {
    FRAME_HEADER_BYTES + len.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Appends one frame to `out` (whose length must be a multiple of 16, so
/// that frames stay aligned). Panics if `payload` exceeds `u32::MAX` bytes:
/// callers bound their messages far below that.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    encode_frame_parts(out, kind, &[payload]);
}

/// Like [`encode_frame`], with the payload given in parts that are written
/// one after the other (no intermediate buffer to assemble them).
pub fn encode_frame_parts(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let start = begin_frame(out);
    for p in parts {
        out.extend_from_slice(p);
    }
    finish_frame(out, start, kind);
}

/// Starts a frame at the end of `out` (whose length must be a multiple of
/// 16, so that frames stay aligned): reserves its header and returns where
/// it starts. The caller appends the payload directly to `out` (no
/// intermediate buffer), then calls [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    debug_assert!(
        out.len().is_multiple_of(FRAME_ALIGN),
        "frames are appended on 16-byte boundaries"
    );
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    start
}

/// Completes the frame begun at `start` by [`begin_frame`]: everything after
/// its header is the payload. Writes the header, checksums, pads. Panics if
/// the payload exceeds `u32::MAX` bytes: callers bound messages far below.
pub fn finish_frame(out: &mut Vec<u8>, start: usize, kind: u8) {
    let plen = out.len() - start - FRAME_HEADER_BYTES;
    let len = u32::try_from(plen).expect("a frame payload fits in u32");
    let h = &mut out[start..start + FRAME_HEADER_BYTES];
    h[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[4] = PROTOCOL_VERSION;
    h[5] = kind;
    h[6..8].copy_from_slice(&0u16.to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    let crc = frame_crc(
        &out[start + 4..start + 12],
        &out[start + FRAME_HEADER_BYTES..],
    );
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + frame_bytes(plen), 0);
    debug_assert!(
        matches!(decode_frame(&out[start..], plen), Ok(Some((f, n))) if f.kind == kind && n == out.len() - start),
        "a frame decodes right after it is encoded"
    );
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if `buf` holds only
/// part of it (read more), `Ok(Some((frame, bytes consumed)))`, or why the
/// bytes are not a frame. Checks the header before waiting for a payload,
/// so an oversized length is refused without buffering it.
pub fn decode_frame(
    buf: &[u8],
    frame_bytes_max: usize,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        // A wrong magic is reported as early as it can be seen.
        if buf.len() >= 4 {
            let magic = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
            if magic != FRAME_MAGIC {
                return Err(FrameError::Magic(magic));
            }
        }
        return Ok(None);
    }
    let u32at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let magic = u32at(0);
    if magic != FRAME_MAGIC {
        return Err(FrameError::Magic(magic));
    }
    if buf[4] != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: buf[4] });
    }
    let kind = buf[5];
    let flags = u16::from_le_bytes([buf[6], buf[7]]);
    if flags != 0 {
        return Err(FrameError::Flags(flags));
    }
    let len = u32at(8) as usize;
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    let total = frame_bytes(len);
    if buf.len() < total {
        return Ok(None);
    }
    let payload = &buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    if frame_crc(&buf[4..12], payload) != u32at(12) {
        return Err(FrameError::Checksum { len });
    }
    if buf[FRAME_HEADER_BYTES + len..total].iter().any(|&b| b != 0) {
        return Err(FrameError::Padding);
    }
    Ok(Some((Frame { kind, payload }, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_payloads_aligned() {
        let mut out = Vec::new();
        encode_frame(&mut out, 7, b"hello");
        encode_frame(&mut out, 9, &[]);
        encode_frame(&mut out, 1, &[0xAB; 33]);
        assert!(out.len().is_multiple_of(FRAME_ALIGN));
        let (f, n) = decode_frame(&out, 1 << 20).unwrap().unwrap();
        assert_eq!((f.kind, f.payload, n), (7, &b"hello"[..], 32));
        let (f, m) = decode_frame(&out[n..], 1 << 20).unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len(), m), (9, 0, 16));
        let (f, _) = decode_frame(&out[n + m..], 1 << 20).unwrap().unwrap();
        assert_eq!(f.payload, &[0xAB; 33][..]);
        assert_eq!(
            (n + m + FRAME_HEADER_BYTES) % FRAME_ALIGN,
            0,
            "third payload starts aligned"
        );
    }

    #[test]
    fn every_truncation_asks_for_more() {
        let mut out = Vec::new();
        encode_frame(&mut out, 3, &[5; 40]);
        for cut in 0..out.len() {
            assert_eq!(decode_frame(&out[..cut], 1 << 20), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn each_kind_of_damage_is_a_typed_error() {
        let mut good = Vec::new();
        encode_frame(&mut good, 3, b"payload!");
        let bad = |i: usize, x: u8| {
            let mut b = good.clone();
            b[i] ^= x;
            decode_frame(&b, 1 << 20).map(|o| o.map(|(f, n)| (f.kind, n)))
        };
        assert!(matches!(bad(0, 1), Err(FrameError::Magic(_))));
        assert_eq!(
            bad(4, 1),
            Err(FrameError::Version {
                got: PROTOCOL_VERSION ^ 1
            })
        );
        assert_eq!(
            bad(5, 1),
            Err(FrameError::Checksum { len: 8 }),
            "a flipped kind is caught"
        );
        assert_eq!(bad(6, 1), Err(FrameError::Flags(1)));
        assert_eq!(bad(16, 1), Err(FrameError::Checksum { len: 8 }));
        assert_eq!(bad(30, 1), Err(FrameError::Padding));
        assert_eq!(
            decode_frame(&good, 7),
            Err(FrameError::TooLarge { len: 8, max: 7 })
        );
        // An oversized length is refused from the header alone.
        let mut huge = good[..16].to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(&huge, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_frame(b"GET / HTTP/1.1", 1 << 20),
            Err(FrameError::Magic(_))
        ));
    }
}
