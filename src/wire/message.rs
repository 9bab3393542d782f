//! Raft messages on the wire, in frames of kind [`KIND_RAFT`]:
//!
//! ```text
//! payload = group u64 LE | 8 zero bytes | rkyv archive of raft::Message
//! ```
//!
//! The core's own types are archived (no mirror types, no conversion copy on
//! send); received archives are validated (bytecheck), never trusted. Entry
//! payloads and snapshot chunks of a decoded message are `Bytes` slices of
//! the receive buffer, not copies.

use bytes::Bytes;
use rkyv::rancor::Error as RkyvError;

use super::frame::{begin_frame, finish_frame, FRAME_ALIGN};
use crate::raft::{
    ArchivedBody, ArchivedEntryKind, ArchivedMessage, Body, ConfState, Entry, EntryKind, Message,
    Placement,
};

/// Frame kind of a Raft message between shards.
pub const KIND_RAFT: u8 = 1;
/// Frame kind of a link's keepalive: no payload. A link with nothing to
/// send for `peer_ping_ms` sends one, so that its peer can tell a silent
/// link from a dead, hung or cut-off node (`TransportConfig::peer_silence_ms`).
pub const KIND_PING: u8 = 6;

/// Appends a ping frame (kind [`KIND_PING`], empty payload) to `out`.
pub fn encode_ping(out: &mut Vec<u8>) {
    let start = begin_frame(out);
    finish_frame(out, start, KIND_PING);
}

/// Frame kind of coalesced heartbeats: the `Heartbeat` and
/// `HeartbeatResp` messages of many groups between two nodes, in one frame
/// per link per write (CockroachDB's coalesced heartbeats), each a fixed
/// record instead of a Raft frame of its own:
///
/// ```text
/// payload = count u32 LE | 4 zero bytes | count x record
/// record  = group u64 | from u64 | to u64 | term u64 | commit u64
///         | round u64 | kind u8 (0 Heartbeat, 1 HeartbeatResp) | 7 zero bytes
/// ```
/// (all LE; a response's commit is 0). The receiver steps each as the
/// message it stands for; the Raft core is unchanged.
pub const KIND_HEARTBEATS: u8 = 7;
/// Bytes of one record of a [`KIND_HEARTBEATS`] frame.
pub const HEARTBEAT_RECORD_BYTES: usize = 56;
/// Records in one [`KIND_HEARTBEATS`] frame at most (56 KiB of payload,
/// far under any `frame_bytes_max`); more make more frames.
pub const HEARTBEATS_PER_FRAME_MAX: usize = 1024;
const HEARTBEATS_HEAD_BYTES: usize = 8;

/// Whether `m` travels in a [`KIND_HEARTBEATS`] frame rather than a Raft
/// frame of its own.
pub fn coalesced(m: &Message) -> bool {
    matches!(m.body, Body::Heartbeat { .. } | Body::HeartbeatResp { .. })
}

/// Appends the record of `m` (of `group`, [`coalesced`]) to `records`:
/// exactly [`HEARTBEAT_RECORD_BYTES`]. A link keeps a batch's records so,
/// 56 bytes each, until [`encode_heartbeat_frames`]. Panics on a message
/// that is not a heartbeat or its answer.
pub fn encode_heartbeat_record(records: &mut Vec<u8>, group: u64, m: &Message) {
    let (commit, round, kind) = match m.body {
        Body::Heartbeat { commit, round } => (commit, round, 0u8),
        Body::HeartbeatResp { round } => (0, round, 1),
        _ => panic!("encode_heartbeat_record: {:?} is not a heartbeat", m.body),
    };
    for v in [group, m.from, m.to, m.term, commit, round] {
        records.extend_from_slice(&v.to_le_bytes());
    }
    records.push(kind);
    records.extend_from_slice(&[0; 7]);
}

/// Appends to `out` the frames of `records` (whole records of
/// [`encode_heartbeat_record`]): [`HEARTBEATS_PER_FRAME_MAX`] per frame.
pub fn encode_heartbeat_frames(out: &mut Vec<u8>, records: &[u8]) {
    debug_assert!(records.len().is_multiple_of(HEARTBEAT_RECORD_BYTES));
    for chunk in records.chunks(HEARTBEATS_PER_FRAME_MAX * HEARTBEAT_RECORD_BYTES) {
        let start = begin_frame(out);
        let n = (chunk.len() / HEARTBEAT_RECORD_BYTES) as u32;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(chunk);
        finish_frame(out, start, KIND_HEARTBEATS);
    }
}

/// The frames of `beats` ((group, message), every message [`coalesced`]):
/// [`encode_heartbeat_record`] then [`encode_heartbeat_frames`].
pub fn encode_heartbeats(out: &mut Vec<u8>, beats: &[(u64, Message)]) {
    let mut records = Vec::with_capacity(beats.len() * HEARTBEAT_RECORD_BYTES);
    for (group, m) in beats {
        encode_heartbeat_record(&mut records, *group, m);
    }
    encode_heartbeat_frames(out, &records);
}

/// Validates the payload of a [`KIND_HEARTBEATS`] frame and hands each
/// record to `each` as (group, message); the number of records. Nothing
/// is handed out unless the whole payload is valid.
pub fn decode_heartbeats(
    payload: &[u8],
    mut each: impl FnMut(u64, Message),
) -> Result<usize, MessageError> {
    let bad = |why: &str| MessageError::Invalid(format!("heartbeats frame: {why}"));
    if payload.len() < HEARTBEATS_HEAD_BYTES {
        return Err(MessageError::Short(payload.len()));
    }
    let count = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")) as usize;
    if payload[4..8] != [0; 4] {
        return Err(bad("nonzero header padding"));
    }
    if count > HEARTBEATS_PER_FRAME_MAX {
        return Err(bad(&format!(
            "{count} records, more than {HEARTBEATS_PER_FRAME_MAX}"
        )));
    }
    let records = &payload[HEARTBEATS_HEAD_BYTES..];
    if records.len() != count * HEARTBEAT_RECORD_BYTES {
        return Err(bad(&format!("{} bytes for {count} records", records.len())));
    }
    let u64at = |r: &[u8], i: usize| u64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().expect("8"));
    for r in records.chunks_exact(HEARTBEAT_RECORD_BYTES) {
        let commit = u64at(r, 4);
        if r[49..] != [0; 7] || r[48] > 1 || (r[48] == 1 && commit != 0) {
            return Err(bad("bad record kind or padding"));
        }
    }
    for r in records.chunks_exact(HEARTBEAT_RECORD_BYTES) {
        let round = u64at(r, 5);
        let body = if r[48] == 0 {
            Body::Heartbeat {
                commit: u64at(r, 4),
                round,
            }
        } else {
            Body::HeartbeatResp { round }
        };
        let m = Message {
            from: u64at(r, 1),
            to: u64at(r, 2),
            term: u64at(r, 3),
            body,
        };
        each(u64at(r, 0), m);
    }
    Ok(count)
}

/// Bytes before the archive in a Raft payload (the group id, padded so the
/// archive stays 16-byte aligned).
const GROUP_PREFIX_BYTES: usize = 16;
const _: () = assert!(GROUP_PREFIX_BYTES.is_multiple_of(FRAME_ALIGN));

/// Why a received frame is not a valid message. The connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("frame kind {0} is not a message this node knows")]
    UnknownKind(u8),
    #[error("message of {0} bytes is shorter than its group prefix")]
    Short(usize),
    #[error("message failed validation: {0}")]
    Invalid(String),
}

/// Appends the frame of message `m` of group `group` to `out`. The archive
/// is serialized straight into `out` (rkyv's scratch arena is reused per
/// thread), so a message costs no allocation once `out` has grown.
pub fn encode_raft(out: &mut Vec<u8>, group: u64, m: &Message) {
    let start = begin_frame(out);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&[0u8; GROUP_PREFIX_BYTES - 8]);
    serialize_into(out, m);
    finish_frame(out, start, KIND_RAFT);
}

/// Serializes `value` at the end of `out`, whose length is a multiple of 16
/// (rkyv pads relative to the writer's position, so the archive's internal
/// alignment holds when it is later read from a 16-aligned address).
pub(crate) fn serialize_into<'w, T>(out: &'w mut Vec<u8>, value: &T)
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            &'w mut Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            RkyvError,
        >,
    >,
{
    debug_assert!(out.len().is_multiple_of(FRAME_ALIGN));
    rkyv::api::high::to_bytes_in::<_, RkyvError>(value, out)
        .expect("serializing into memory cannot fail");
}

/// `buf` itself if it starts 16-byte aligned (a payload of an aligned
/// receive buffer always does), else a copy of it in aligned memory: rkyv
/// needs its root aligned.
pub(crate) fn aligned(buf: Bytes) -> Bytes {
    if (buf.as_ptr() as usize).is_multiple_of(FRAME_ALIGN) {
        buf
    } else {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(buf.len());
        v.extend_from_slice(&buf);
        Bytes::from_owner(v)
    }
}

/// Validates the payload of a frame of kind [`KIND_RAFT`] and turns it into
/// (group, message). `buf` holds the payload (16-byte aligned when it comes
/// from a frame of an aligned receive buffer); entry payloads and snapshot
/// chunks are slices of it, not copies.
pub fn decode_raft(payload: &Bytes) -> Result<(u64, Message), MessageError> {
    if payload.len() < GROUP_PREFIX_BYTES || payload[8..GROUP_PREFIX_BYTES].iter().any(|&b| b != 0)
    {
        return Err(MessageError::Short(payload.len()));
    }
    let group = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let buf = aligned(payload.slice(GROUP_PREFIX_BYTES..));
    let a = rkyv::access::<ArchivedMessage, RkyvError>(&buf)
        .map_err(|e| MessageError::Invalid(e.to_string()))?;
    // Entry payloads and chunks: slices of `buf`, not copies.
    let share = |s: &[u8]| buf.slice_ref(s);
    let body = match &a.body {
        ArchivedBody::PreVote {
            last_index,
            last_term,
        } => Body::PreVote {
            last_index: last_index.to_native(),
            last_term: last_term.to_native(),
        },
        ArchivedBody::PreVoteResp { reject } => Body::PreVoteResp { reject: *reject },
        ArchivedBody::Vote {
            last_index,
            last_term,
            transfer,
        } => Body::Vote {
            last_index: last_index.to_native(),
            last_term: last_term.to_native(),
            transfer: *transfer,
        },
        ArchivedBody::VoteResp { reject } => Body::VoteResp { reject: *reject },
        ArchivedBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => Body::Append {
            prev_index: prev_index.to_native(),
            prev_term: prev_term.to_native(),
            entries: entries
                .iter()
                .map(|e| Entry {
                    term: e.term.to_native(),
                    index: e.index.to_native(),
                    kind: match e.kind {
                        ArchivedEntryKind::Normal => EntryKind::Normal,
                        ArchivedEntryKind::Noop => EntryKind::Noop,
                        ArchivedEntryKind::ConfChange => EntryKind::ConfChange,
                    },
                    data: share(e.data.as_slice()),
                })
                .collect(),
            commit: commit.to_native(),
        },
        ArchivedBody::AppendResp {
            reject,
            index,
            hint_index,
            hint_term,
        } => Body::AppendResp {
            reject: *reject,
            index: index.to_native(),
            hint_index: hint_index.to_native(),
            hint_term: hint_term.to_native(),
        },
        ArchivedBody::Heartbeat { commit, round } => Body::Heartbeat {
            commit: commit.to_native(),
            round: round.to_native(),
        },
        ArchivedBody::HeartbeatResp { round } => Body::HeartbeatResp {
            round: round.to_native(),
        },
        ArchivedBody::Snapshot {
            index,
            term,
            conf,
            offset,
            total,
            crc,
            chunk,
        } => {
            let ids = |v: &rkyv::vec::ArchivedVec<rkyv::rend::u64_le>| {
                v.iter().map(|x| x.to_native()).collect::<Vec<u64>>()
            };
            let conf = ConfState {
                voters: ids(&conf.voters),
                voters_outgoing: ids(&conf.voters_outgoing),
                learners: ids(&conf.learners),
                placements: conf
                    .placements
                    .iter()
                    .map(|p| Placement {
                        replica: p.replica.to_native(),
                        node: p.node.to_native(),
                    })
                    .collect(),
                next_replica_id: conf.next_replica_id.to_native(),
            };
            // Routing trusts placements (`group::routes`): validated here,
            // on receipt, like every other field.
            if !conf.placements_consistent() {
                return Err(MessageError::Invalid(format!(
                    "snapshot membership with inconsistent placements: {conf:?}"
                )));
            }
            Body::Snapshot {
                index: index.to_native(),
                term: term.to_native(),
                conf,
                offset: offset.to_native(),
                total: total.to_native(),
                crc: crc.to_native(),
                chunk: share(chunk.as_slice()),
            }
        }
        ArchivedBody::SnapshotAck { index, next_offset } => Body::SnapshotAck {
            index: index.to_native(),
            next_offset: next_offset.to_native(),
        },
        ArchivedBody::TimeoutNow => Body::TimeoutNow,
        ArchivedBody::ReadIndex { ctx } => Body::ReadIndex {
            ctx: ctx.to_native(),
        },
        ArchivedBody::ReadIndexResp { ctx, index, reject } => Body::ReadIndexResp {
            ctx: ctx.to_native(),
            index: index.to_native(),
            reject: *reject,
        },
        ArchivedBody::Removed { conf_index } => Body::Removed {
            conf_index: conf_index.to_native(),
        },
        ArchivedBody::MemberCheck { conf_index } => Body::MemberCheck {
            conf_index: conf_index.to_native(),
        },
        ArchivedBody::Quiesce { commit } => Body::Quiesce {
            commit: commit.to_native(),
        },
    };
    Ok((
        group,
        Message {
            from: a.from.to_native(),
            to: a.to.to_native(),
            term: a.term.to_native(),
            body,
        },
    ))
}
