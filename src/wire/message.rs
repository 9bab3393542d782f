//! Raft messages on the wire: rkyv archives inside frames of kind
//! [`KIND_RAFT`], validated (bytecheck) on receipt, never trusted.
//!
//! Receiving borrows: entry payloads and snapshot chunks of a decoded
//! message are `Bytes` slices of the receive buffer, not copies.

use bytes::Bytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::{Archive, Deserialize, Serialize};

use super::frame::{encode_frame, FRAME_ALIGN};
use crate::raft::{Body, ConfState, Entry, EntryKind, Message};

/// Frame kind of a Raft message between shards.
pub const KIND_RAFT: u8 = 1;

/// Why a received frame is not a valid message. The connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("frame kind {0} is not a message this node knows")]
    UnknownKind(u8),
    #[error("message failed validation: {0}")]
    Invalid(String),
    #[error("message has an unknown entry kind {0}")]
    EntryKind(u8),
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireEntry {
    pub term: u64,
    pub index: u64,
    pub kind: u8,
    pub data: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireConf {
    pub voters: Vec<u64>,
    pub outgoing: Vec<u64>,
    pub learners: Vec<u64>,
}

/// Mirrors [`crate::raft::Body`]; see there for the meaning of each field.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WireBody {
    PreVote {
        last_index: u64,
        last_term: u64,
    },
    PreVoteResp {
        reject: bool,
    },
    Vote {
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    VoteResp {
        reject: bool,
    },
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<WireEntry>,
        commit: u64,
    },
    AppendResp {
        reject: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    },
    Heartbeat {
        commit: u64,
        round: u64,
    },
    HeartbeatResp {
        round: u64,
    },
    Snapshot {
        index: u64,
        term: u64,
        conf: WireConf,
        offset: u64,
        total: u64,
        crc: u32,
        chunk: Vec<u8>,
    },
    SnapshotAck {
        index: u64,
        next_offset: u64,
    },
    TimeoutNow,
    ReadIndex {
        ctx: u64,
    },
    ReadIndexResp {
        ctx: u64,
        index: u64,
        reject: bool,
    },
}

/// A Raft message of group `group`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftEnvelope {
    pub group: u64,
    pub from: u64,
    pub to: u64,
    pub term: u64,
    pub body: WireBody,
}

fn kind_code(k: EntryKind) -> u8 {
    match k {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    }
}

fn kind_of(code: u8) -> Result<EntryKind, MessageError> {
    match code {
        0 => Ok(EntryKind::Normal),
        1 => Ok(EntryKind::Noop),
        2 => Ok(EntryKind::ConfChange),
        c => Err(MessageError::EntryKind(c)),
    }
}

impl RaftEnvelope {
    /// The wire form of `m` (payloads are copied into it).
    pub fn from_message(group: u64, m: &Message) -> Self {
        let body = match &m.body {
            Body::PreVote {
                last_index,
                last_term,
            } => WireBody::PreVote {
                last_index: *last_index,
                last_term: *last_term,
            },
            Body::PreVoteResp { reject } => WireBody::PreVoteResp { reject: *reject },
            Body::Vote {
                last_index,
                last_term,
                transfer,
            } => WireBody::Vote {
                last_index: *last_index,
                last_term: *last_term,
                transfer: *transfer,
            },
            Body::VoteResp { reject } => WireBody::VoteResp { reject: *reject },
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => WireBody::Append {
                prev_index: *prev_index,
                prev_term: *prev_term,
                entries: entries
                    .iter()
                    .map(|e| WireEntry {
                        term: e.term,
                        index: e.index,
                        kind: kind_code(e.kind),
                        data: e.data.to_vec(),
                    })
                    .collect(),
                commit: *commit,
            },
            Body::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            } => WireBody::AppendResp {
                reject: *reject,
                index: *index,
                hint_index: *hint_index,
                hint_term: *hint_term,
            },
            Body::Heartbeat { commit, round } => WireBody::Heartbeat {
                commit: *commit,
                round: *round,
            },
            Body::HeartbeatResp { round } => WireBody::HeartbeatResp { round: *round },
            Body::Snapshot {
                index,
                term,
                conf,
                offset,
                total,
                crc,
                chunk,
            } => WireBody::Snapshot {
                index: *index,
                term: *term,
                conf: WireConf {
                    voters: conf.voters.clone(),
                    outgoing: conf.voters_outgoing.clone(),
                    learners: conf.learners.clone(),
                },
                offset: *offset,
                total: *total,
                crc: *crc,
                chunk: chunk.to_vec(),
            },
            Body::SnapshotAck { index, next_offset } => WireBody::SnapshotAck {
                index: *index,
                next_offset: *next_offset,
            },
            Body::TimeoutNow => WireBody::TimeoutNow,
            Body::ReadIndex { ctx } => WireBody::ReadIndex { ctx: *ctx },
            Body::ReadIndexResp { ctx, index, reject } => WireBody::ReadIndexResp {
                ctx: *ctx,
                index: *index,
                reject: *reject,
            },
        };
        RaftEnvelope {
            group,
            from: m.from,
            to: m.to,
            term: m.term,
            body,
        }
    }
}

/// Appends the frame of message `m` of group `group` to `out`.
pub fn encode_raft(out: &mut Vec<u8>, group: u64, m: &Message) {
    let env = RaftEnvelope::from_message(group, m);
    let bytes = rkyv::to_bytes::<RkyvError>(&env).expect("serializing into memory cannot fail");
    encode_frame(out, KIND_RAFT, &bytes);
}

/// Validates the payload of a frame of kind [`KIND_RAFT`] and turns it into
/// (group, message). `buf` holds the payload (16-byte aligned when it comes
/// from a frame of an aligned receive buffer); entry payloads and snapshot
/// chunks are slices of it, not copies.
pub fn decode_raft(buf: &Bytes) -> Result<(u64, Message), MessageError> {
    let aligned_storage;
    // rkyv needs its root aligned; a receive buffer keeps frames aligned,
    // anything else is copied once into aligned memory.
    let (buf, bytes): (Bytes, &[u8]) = if (buf.as_ptr() as usize).is_multiple_of(FRAME_ALIGN) {
        (buf.clone(), &buf[..])
    } else {
        let mut v = rkyv::util::AlignedVec::<16>::new();
        v.extend_from_slice(buf);
        aligned_storage = v;
        let b = Bytes::copy_from_slice(&aligned_storage);
        (b, &aligned_storage[..])
    };
    let a = rkyv::access::<ArchivedRaftEnvelope, RkyvError>(bytes)
        .map_err(|e| MessageError::Invalid(e.to_string()))?;
    // A slice of `buf` for the same bytes as `s` (which lies within `bytes`).
    let base = bytes.as_ptr() as usize;
    let share = |s: &[u8]| -> Bytes {
        if s.is_empty() {
            return Bytes::new();
        }
        let off = s.as_ptr() as usize - base;
        buf.slice(off..off + s.len())
    };
    let body = match &a.body {
        ArchivedWireBody::PreVote {
            last_index,
            last_term,
        } => Body::PreVote {
            last_index: last_index.to_native(),
            last_term: last_term.to_native(),
        },
        ArchivedWireBody::PreVoteResp { reject } => Body::PreVoteResp { reject: *reject },
        ArchivedWireBody::Vote {
            last_index,
            last_term,
            transfer,
        } => Body::Vote {
            last_index: last_index.to_native(),
            last_term: last_term.to_native(),
            transfer: *transfer,
        },
        ArchivedWireBody::VoteResp { reject } => Body::VoteResp { reject: *reject },
        ArchivedWireBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => Body::Append {
            prev_index: prev_index.to_native(),
            prev_term: prev_term.to_native(),
            entries: entries
                .iter()
                .map(|e| {
                    Ok(Entry {
                        term: e.term.to_native(),
                        index: e.index.to_native(),
                        kind: kind_of(e.kind)?,
                        data: share(e.data.as_slice()),
                    })
                })
                .collect::<Result<Vec<_>, MessageError>>()?,
            commit: commit.to_native(),
        },
        ArchivedWireBody::AppendResp {
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
        ArchivedWireBody::Heartbeat { commit, round } => Body::Heartbeat {
            commit: commit.to_native(),
            round: round.to_native(),
        },
        ArchivedWireBody::HeartbeatResp { round } => Body::HeartbeatResp {
            round: round.to_native(),
        },
        ArchivedWireBody::Snapshot {
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
            Body::Snapshot {
                index: index.to_native(),
                term: term.to_native(),
                conf: ConfState {
                    voters: ids(&conf.voters),
                    voters_outgoing: ids(&conf.outgoing),
                    learners: ids(&conf.learners),
                },
                offset: offset.to_native(),
                total: total.to_native(),
                crc: crc.to_native(),
                chunk: share(chunk.as_slice()),
            }
        }
        ArchivedWireBody::SnapshotAck { index, next_offset } => Body::SnapshotAck {
            index: index.to_native(),
            next_offset: next_offset.to_native(),
        },
        ArchivedWireBody::TimeoutNow => Body::TimeoutNow,
        ArchivedWireBody::ReadIndex { ctx } => Body::ReadIndex {
            ctx: ctx.to_native(),
        },
        ArchivedWireBody::ReadIndexResp { ctx, index, reject } => Body::ReadIndexResp {
            ctx: ctx.to_native(),
            index: index.to_native(),
            reject: *reject,
        },
    };
    Ok((
        a.group.to_native(),
        Message {
            from: a.from.to_native(),
            to: a.to.to_native(),
            term: a.term.to_native(),
            body,
        },
    ))
}
