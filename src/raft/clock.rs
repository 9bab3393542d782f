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

use std::cell::{Cell, OnceCell};
use std::rc::Rc;

/// Ticks since the clock was made, shared by the cores that hold a clone
/// (one executor thread: `Rc`, not `Arc`).
#[derive(Clone, Default)]
pub struct Clock(Rc<State>);

#[derive(Default)]
struct State {
    now: Cell<u64>,
    lag: OnceCell<Box<dyn Fn() -> u64>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("now", &self.now())
            .field("lag", &self.lag())
            .finish()
    }
}

impl Clock {
    /// A clock at tick 0.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// Ticks so far.
    pub fn now(&self) -> u64 {
        self.0.now.get()
    }

    /// Moves the clock `ticks` ticks on, for every core that shares it.
    pub fn advance(&self, ticks: u64) {
        self.0.now.set(self.0.now.get().saturating_add(ticks));
    }

    /// Sets where [`Clock::lag`] comes from (once; later calls are
    /// ignored): the ticks that real time has passed since the host last
    /// advanced the clock.
    pub fn set_lag_source(&self, f: impl Fn() -> u64 + 'static) {
        let _ = self.0.lag.set(Box::new(f));
    }

    /// Ticks due on the host's real clock that it has not advanced this
    /// clock by yet (0 without a source: a simulated clock). A host
    /// advances the clock at the start of its turn only, so a check made
    /// late in a long turn would see the time of the turn's start; the
    /// leader lease counts these ticks too (`RawNode::lease_valid`),
    /// election timers do not (a follower must not count time from before
    /// it heard its leader as time after).
    pub fn lag(&self) -> u64 {
        self.0.lag.get().map_or(0, |f| f())
    }
}
