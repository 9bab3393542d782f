//! The cluster map: range descriptors and their epochs, and the meta
//! group's state machine over them (nodes, id allocators, cluster-wide
//! settings: [`MetaState`]); the balancer's planner as the meta group
//! arrives (`ARCHITECTURE.md`, "Where we are going").
//!
//! Sans-I/O like `raft/`: types, codecs and pure decisions; the shard
//! hosts them, the simulator drives them.

pub mod planner;
mod range;
mod state;

pub use range::{
    key_in, show_key, split_key_between, Epoch, RangeDesc, RangeError, RangeId, RangeReplica,
    ReplicaRole, RANGE_BOUNDARY_BYTES_MAX, RANGE_DESC_BYTES_MAX, RANGE_REPLICAS_MAX,
};

pub use state::{
    ClusterSettings, IdKind, MetaCmd, MetaCodecError, MetaError, MetaReply, MetaState, NodeRecord,
    NodeState, META_ADDR_BYTES_MAX, META_ALLOC_IDS_MAX, META_CMD_BYTES_MAX, META_ID_MAX,
    META_NODES_MAX, META_RANGES_MAX, META_REPORT_RANGES_MAX,
};

#[cfg(test)]
mod planner_tests;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;
