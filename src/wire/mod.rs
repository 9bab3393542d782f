//! The wire format: frames on raw TCP ([`frame`]), the handshake that opens
//! every connection ([`hello`]), Raft messages between shards ([`message`])
//! and the client protocol ([`client`]). Everything received is validated
//! before use; nothing received can panic the node.

pub mod client;
pub mod frame;
pub mod hello;
pub mod message;

pub use client::{
    decode_request, decode_response, encode_request, encode_response, ClientError, ClusterMap,
    GroupStatus, KeyValue, NodeInfo, Op, ReadMode, ReplicaStatus, Reply, Request, Response,
    KIND_REQUEST, KIND_RESPONSE, RANGES_REPLY_MAX,
};
pub use frame::{
    begin_frame, decode_frame, encode_frame, encode_frame_parts, finish_frame, Frame, FrameError,
    FRAME_BYTES_MAX_DEFAULT, PROTOCOL_VERSION,
};
pub use hello::{Hello, HelloError, KIND_HELLO, KIND_HELLO_REPLY};
pub use message::{
    coalesced, decode_heartbeats, decode_raft, encode_heartbeat_frames, encode_heartbeat_record,
    encode_heartbeats, encode_ping, encode_raft, MessageError, HEARTBEATS_PER_FRAME_MAX,
    HEARTBEAT_RECORD_BYTES, KIND_HEARTBEATS, KIND_PING, KIND_RAFT,
};
