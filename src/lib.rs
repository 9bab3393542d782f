//! ringraft: a thread-per-core, multi-Raft replicated key-value node.
//!
//! The public surface so far: the sans-I/O Raft core ([`raft`]) and the
//! deterministic simulator that proves it ([`sim`]).

pub mod buffers;
pub mod check;
pub mod client;
pub mod config;
pub mod group;
pub mod identity;
pub mod join;
pub mod kv;
pub mod local_cluster;
pub mod meta;
pub mod metrics;
pub mod raft;
pub mod resp;
pub mod rng;
pub mod route;
pub mod shard;
pub mod sim;
pub mod storage;
pub mod transport;
pub mod wire;
