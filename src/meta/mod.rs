//! The cluster map: range descriptors and their epochs today; nodes, id
//! allocators, cluster-wide settings and the balancer's planner as the
//! meta group arrives (`ARCHITECTURE.md`, "Where we are going").
//!
//! Sans-I/O like `raft/`: types, codecs and pure decisions; the shard
//! hosts them, the simulator drives them.

mod range;

pub use range::{
    key_in, show_key, split_key_between, Epoch, RangeDesc, RangeError, RangeId, RangeReplica,
    ReplicaRole, RANGE_BOUNDARY_BYTES_MAX, RANGE_DESC_BYTES_MAX, RANGE_REPLICAS_MAX,
};

#[cfg(test)]
mod tests;
