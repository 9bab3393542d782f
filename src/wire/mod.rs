//! The wire format: frames on raw TCP (this module), and the messages they
//! carry (to come: rkyv types for every Raft message and the client
//! protocol, accessed in place with validation).

pub mod frame;

pub use frame::{
    decode_frame, encode_frame, encode_frame_parts, Frame, FrameError, FRAME_BYTES_MAX_DEFAULT,
};
pub mod message;

pub use message::{decode_raft, encode_raft, MessageError, KIND_RAFT};
