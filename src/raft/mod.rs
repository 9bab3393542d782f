//! The sans-I/O Raft core: no executor, no sockets, no files, no clocks, no
//! thread RNG. A [`RawNode`] is a pure function of its inputs — `tick`,
//! `step`, `propose`, `on_persisted` — and hands out its effects as a
//! [`Ready`]. Same seed and inputs, same outputs: this is what lets the
//! simulator (`crate::sim`) drive thousands of faulty runs deterministically.
//!
//! Guarantees (proven by the simulator's checkers, see `tests/sim.rs`):
//! - at most one leader per term (votes are persisted before they are sent;
//!   a candidate counts its own vote only once it is durable);
//! - a follower acknowledges entries only once they are durable, so a
//!   quorum's acks are a quorum of durable copies;
//! - a leader commits only by counting replicas of an entry of its own term
//!   (Raft Figure 8); a follower never sets its commit index beyond what the
//!   leader's message proved it holds;
//! - a delayed or duplicated AppendEntries never truncates a matching log;
//! - committed entries are handed out for applying only once locally durable.
//!
//! Throughput is designed in: proposals since the last Ready go out as few
//! AppendEntries as `msg_bytes_max` allows, pipelined up to
//! `inflight_msgs_max` / `inflight_bytes_max` per follower; the leader's own
//! write runs in parallel with replication.

mod clock;
mod conf;
mod config;
mod log;
mod node;
mod progress;
mod read;
mod types;

pub use clock::Clock;
pub use conf::{ConfChange, ConfChangeError, ConfChangeOp, ConfState, Placement};
pub use config::{ConfigError, RaftConfig, ValidRaftConfig};
pub use log::RaftLog;
pub use node::{
    CompactError, NodeStats, PersistToken, ProposeError, RawNode, ReadError, Ready, SoftState,
    TransferError, MEMBER_CHECK_ELECTIONS,
};
pub use progress::{Inflights, Progress, ProgressState};
pub use read::ReadState;
pub use types::*;

#[cfg(test)]
mod tests;
