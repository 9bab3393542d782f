//! The logical clock of Raft cores: ticks, shared by every replica of one
//! shard. Not a wall clock — the host advances it (`group::clock` turns
//! elapsed time into ticks).
//!
//! A core counts the ticks its clock advanced since it last looked at it
//! when it is next given an input, before acting on the input; the host
//! calls [`RawNode::advance`](crate::raft::RawNode::advance) only on the
//! replicas whose next timed event ([`RawNode::due_at`](crate::raft::RawNode::due_at))
//! has come: a heartbeat, a check-quorum round, an election timeout. A
//! tick thus costs what is due, not what the shard hosts (issue #16; the
//! same split as etcd/raft's and TiKV's "tick only the groups that need
//! it", here exact because the count happens before any input).

use std::cell::Cell;
use std::rc::Rc;

/// Ticks since the clock was made, shared by the cores that hold a clone
/// (one executor thread: `Rc`, not `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Clock(Rc<Cell<u64>>);

impl Clock {
    /// A clock at tick 0.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// Ticks so far.
    pub fn now(&self) -> u64 {
        self.0.get()
    }

    /// Moves the clock `ticks` ticks on, for every core that shares it.
    pub fn advance(&self, ticks: u64) {
        self.0.set(self.0.get().saturating_add(ticks));
    }
}
