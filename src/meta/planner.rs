//! The balancer's planner: the cluster map and what the meta leader knows
//! of the nodes in, the operations that bring the map where it should be
//! out. Sans-I/O and deterministic (ranges in key order, ties broken by
//! node id), so its decisions are table-tested and replayable.
//!
//! Priorities, as CockroachDB's allocator orders them (repair before
//! rebalance), each range getting at most one operation at a time:
//! 0. **The meta group first**: a member of the meta group on a dead,
//!    decommissioning or decommissioned node moves to a live active node
//!    outside it (fewest replicas first), one at a time. The map outlives
//!    its nodes the way the ranges do; with a quorum of its members gone
//!    there is no meta leader to plan anything (an operator's recovery).
//!    Its learners follow the ranges' rule below: a move takes one over
//!    as its target; one on a leaving node, or left unpromoted for
//!    `stray_learner_timeout_ms` (a `move_meta_replica` cut short), is
//!    removed.
//! 1. **Repair**: a learner that no operation has promoted for
//!    `stray_learner_timeout_ms` (a move or an addition whose driver died:
//!    a killed `ctl move-replica`, a meta leader that lost its leadership
//!    mid-move) is removed, as CockroachDB's replicate queue removes the
//!    learners of an aborted change. Before that, a move or addition the
//!    planner wants onto the learner's node takes it over: the move is
//!    resumed where it stopped, not seeded again from scratch elsewhere
//!    (`Round::target_for`). A replica on a dead, decommissioning or decommissioned
//!    node moves to a live active node (a decommissioning node's
//!    leadership moves first, so its leaders drain before its replicas); a
//!    range with fewer voters than the replication factor gains one; one
//!    with more loses one (never its leader's).
//! 2. **Replica balance**: a node holding more than `mean * (1 + tolerance)`
//!    replicas moves one to the node holding fewest, when the two differ by
//!    at least 2 (the hysteresis: a move that would only swap which node is
//!    above is not made; tikv/pd#4659 is the flip-flop this prevents).
//! 3. **Leader balance**: a node leading more than `ceil(mean)` ranges hands
//!    one to a voter on the node leading fewest, when they differ by 2 or
//!    more (so leaders end within ±1 of the mean); where none of its
//!    ranges has a voter there, through a node in between (two transfers:
//!    one of its ranges to a voter on X, one of X's to its voter there).
//!
//! A **move** is one primitive: add the target as a learner, catch it up,
//! then one joint configuration that promotes it and removes the source,
//! the range's leader handing its leadership off the source first if it
//! leads (run from the meta leader through the client's moves,
//! `client::moves`). The range never
//! has fewer than RF voters in any configuration of a move
//! (cockroachdb/cockroach#12768 lost quorum exactly there), which is why
//! the planner never plans a removal that would go below RF.
//!
//! Concurrency is bounded: at most `moves_per_node_max` operations that add
//! or remove a replica touch one node at a time (in flight and planned),
//! and at most `ops_per_round_max` are planned per call.

use std::collections::{BTreeMap, BTreeSet};

use super::range::{RangeDesc, RangeId, ReplicaRole};
use super::state::{MetaState, NodeState};
use crate::raft::NodeId;

/// How long a node may go without a heartbeat before its replicas are
/// re-created elsewhere: CockroachDB's `server.time_until_store_dead`
/// default (5 minutes); seconds in tests.
pub const DEAD_NODE_TIMEOUT_MS_DEFAULT: u64 = 300_000;

/// How long a node may go without a heartbeat before it is suspect: it
/// takes no new replica, and keeps the ones it has (CockroachDB's
/// "suspect" store). Below one balancer round (5 s), so a node that missed
/// the ping of the round being planned is suspect in that round.
pub const SUSPECT_NODE_TIMEOUT_MS_DEFAULT: u64 = 3_000;

/// How long a learner may stay unpromoted before the balancer removes it
/// (ms): twice what a move waits for a learner that makes no progress
/// (`client::MOVE_CATCH_UP_WAIT_MS`, 120 s). The balancer's own moves are
/// never cut short by it (a range with an operation in flight is not
/// repaired); an operator's `ctl move-replica` of a range whose seeding
/// takes longer than this is, unless the planner resumes its learner
/// first (`Round::target_for`) or the timeout is raised.
pub const STRAY_LEARNER_TIMEOUT_MS_DEFAULT: u64 = 2 * crate::client::MOVE_CATCH_UP_WAIT_MS;

/// Operations adding or removing a replica on one node at a time, in
/// flight and planned (each seeds or drops a snapshot's worth of data).
pub const MOVES_PER_NODE_MAX_DEFAULT: usize = 2;

/// Operations one planning round returns at most.
pub const OPS_PER_ROUND_MAX_DEFAULT: usize = 16;

/// Replica counts within this fraction of the mean (in percent) count as
/// balanced.
pub const BALANCE_TOLERANCE_PCT_DEFAULT: u64 = 10;

/// The planner's knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerConfig {
    /// `dead-node-timeout`, ms (see [`DEAD_NODE_TIMEOUT_MS_DEFAULT`]).
    pub dead_node_timeout_ms: u64,
    /// See [`SUSPECT_NODE_TIMEOUT_MS_DEFAULT`].
    pub suspect_node_timeout_ms: u64,
    /// See [`STRAY_LEARNER_TIMEOUT_MS_DEFAULT`].
    pub stray_learner_timeout_ms: u64,
    pub moves_per_node_max: usize,
    pub ops_per_round_max: usize,
    pub balance_tolerance_pct: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            dead_node_timeout_ms: DEAD_NODE_TIMEOUT_MS_DEFAULT,
            suspect_node_timeout_ms: SUSPECT_NODE_TIMEOUT_MS_DEFAULT,
            stray_learner_timeout_ms: STRAY_LEARNER_TIMEOUT_MS_DEFAULT,
            moves_per_node_max: MOVES_PER_NODE_MAX_DEFAULT,
            ops_per_round_max: OPS_PER_ROUND_MAX_DEFAULT,
            balance_tolerance_pct: BALANCE_TOLERANCE_PCT_DEFAULT,
        }
    }
}

/// What the meta leader knows beyond the replicated map: when each node
/// last reported, which node leads each range, and which operations are
/// under way. Not replicated (a new meta leader starts with none, and
/// counts every node as heard from when it started: PD's grace).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The planner's clock, ms (any origin; only differences matter).
    pub now_ms: u64,
    /// When this meta leader started: a node not heard from since then
    /// has been silent that long at most.
    pub since_ms: u64,
    /// Node → when its last heartbeat arrived, ms.
    pub heartbeat_ms: BTreeMap<NodeId, u64>,
    /// Range → the node its leader is on (as its last report said).
    pub leaders: BTreeMap<RangeId, NodeId>,
    /// Operations under way (planned earlier, not finished), and finished
    /// ones the map does not show yet (see [`shown`]): their ranges get
    /// no other, their nodes count against `moves_per_node_max`, and the
    /// replica and leader counts are planned as if they were done (where
    /// the map does not show them done already). Planned from counts that
    /// do not, a round undoes the moves of the last: a node is still
    /// counted with the replica it gave away (the simulator's balancer
    /// sweep never settled, 5-node seeds 4 and 6).
    pub in_flight: Vec<Op>,
    /// The nodes of the meta group's members (voters and learners), as
    /// its leader has them (empty: not known, and the meta group is left
    /// alone).
    pub meta_members: Vec<NodeId>,
    /// (node, replica id) of the meta group's learners, among
    /// `meta_members`.
    pub meta_learners: Vec<(NodeId, u64)>,
    /// (range, replica id) of each learner in the map, and (`META_GROUP`,
    /// replica id) of each of the meta group's → when this meta leader
    /// first saw it, ms (`note_learners`). By replica id: a learner
    /// removed and added again is a new one, with a new age.
    pub learners_since: BTreeMap<(RangeId, u64), u64>,
}

/// Keeps `since` to the learners of `map`'s ranges and the meta group's
/// `meta_learners` ((node, replica id)): one not listed yet is first seen
/// at `now_ms`; one no longer there (promoted, removed) leaves.
pub fn note_learners(
    map: &MetaState,
    meta_learners: &[(NodeId, u64)],
    since: &mut BTreeMap<(RangeId, u64), u64>,
    now_ms: u64,
) {
    let mut now = BTreeSet::new();
    for d in map.ranges().iter() {
        for r in d.replicas.iter().filter(|r| r.role == ReplicaRole::Learner) {
            now.insert((d.id, r.replica));
        }
    }
    for &(_, replica) in meta_learners {
        now.insert((crate::route::META_GROUP, replica));
    }
    since.retain(|k, _| now.contains(k));
    for k in now {
        since.entry(k).or_insert(now_ms);
    }
}

/// Whether `node` holds a learner of `d` (one a planned move or addition
/// onto `node` resumes: see `Round::target_for`).
fn adopts(d: &RangeDesc, node: NodeId) -> bool {
    d.replica_on(node)
        .is_some_and(|r| r.role == ReplicaRole::Learner)
}

/// One operation for a range's leader to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add a replica on `node` (as a learner, then promoted): the range
    /// has fewer voters than the replication factor.
    AddReplica { range: RangeId, node: NodeId },
    /// The move primitive (see the module docs).
    MoveReplica {
        range: RangeId,
        from: NodeId,
        to: NodeId,
    },
    /// Remove the replica on `node`: the range has more voters than the
    /// replication factor.
    RemoveReplica { range: RangeId, node: NodeId },
    /// Hand the range's leadership to its voter on `to`.
    TransferLeader { range: RangeId, to: NodeId },
    /// Move the meta group's member on `from` to `to` (the same
    /// primitive, on the meta group: `Client::move_meta_replica`).
    MoveMetaReplica { from: NodeId, to: NodeId },
    /// Remove the meta group's learner on `node`: no move promotes it.
    RemoveMetaLearner { node: NodeId },
}

impl Op {
    pub fn range(&self) -> RangeId {
        match *self {
            Op::AddReplica { range, .. }
            | Op::MoveReplica { range, .. }
            | Op::RemoveReplica { range, .. }
            | Op::TransferLeader { range, .. } => range,
            Op::MoveMetaReplica { .. } | Op::RemoveMetaLearner { .. } => crate::route::META_GROUP,
        }
    }

    /// Whether the operation changes a range's replicas (all but a
    /// leader transfer, whose outcome the next round sees at once in the
    /// leaders it asks for: only these are kept in flight until the map
    /// shows them).
    pub fn changes_replicas(&self) -> bool {
        !matches!(self, Op::TransferLeader { .. })
    }

    /// Nodes whose replica set the operation changes.
    fn moving_nodes(&self) -> Vec<NodeId> {
        match *self {
            Op::AddReplica { node, .. }
            | Op::RemoveReplica { node, .. }
            | Op::RemoveMetaLearner { node } => vec![node],
            Op::MoveReplica { from, to, .. } | Op::MoveMetaReplica { from, to } => vec![from, to],
            Op::TransferLeader { .. } => Vec::new(),
        }
    }
}

/// How the planner sees a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heard from within `suspect_node_timeout_ms`.
    Live,
    /// Silent for longer, but not dead: it takes no new replica.
    Suspect,
    /// Silent for longer than `dead_node_timeout_ms`: its replicas are
    /// re-created elsewhere.
    Dead,
}

/// As `Op::Liveness` reports it.
impl From<Health> for crate::wire::client::LivenessState {
    fn from(h: Health) -> Self {
        match h {
            Health::Live => Self::Live,
            Health::Suspect => Self::Suspect,
            Health::Dead => Self::Dead,
        }
    }
}

/// The working state of one planning round.
struct Round<'a> {
    cfg: &'a PlannerConfig,
    obs: &'a Observed,
    rf: usize,
    /// Live, active nodes: the ones that take replicas.
    targets: BTreeSet<NodeId>,
    /// Node → replicas it holds (as if the planned operations were done).
    replicas: BTreeMap<NodeId, usize>,
    /// Node → ranges it leads (likewise).
    leading: BTreeMap<NodeId, usize>,
    /// Node → operations touching it (in flight and planned).
    busy: BTreeMap<NodeId, usize>,
    /// Ranges with an operation (in flight or planned).
    taken: BTreeSet<RangeId>,
    out: Vec<Op>,
}

/// How `node` looks at `obs.now_ms`.
pub fn health(cfg: &PlannerConfig, obs: &Observed, node: NodeId) -> Health {
    let last = obs
        .heartbeat_ms
        .get(&node)
        .copied()
        .unwrap_or(obs.since_ms)
        .max(obs.since_ms);
    let silent = obs.now_ms.saturating_sub(last);
    if silent > cfg.dead_node_timeout_ms {
        Health::Dead
    } else if silent > cfg.suspect_node_timeout_ms {
        Health::Suspect
    } else {
        Health::Live
    }
}

/// The operations to start now, at most `cfg.ops_per_round_max`, in
/// priority order (see the module docs). Empty when the map is where it
/// should be, or when what remains cannot be done now (no node to place a
/// replica on, every candidate busy).
pub fn plan(map: &MetaState, obs: &Observed, cfg: &PlannerConfig) -> Vec<Op> {
    let Some(settings) = map.settings() else {
        return Vec::new();
    };
    let mut round = Round {
        cfg,
        obs,
        rf: settings.replication_factor as usize,
        targets: map
            .nodes()
            .filter(|n| n.state == NodeState::Active && health(cfg, obs, n.id) == Health::Live)
            .map(|n| n.id)
            .collect(),
        replicas: BTreeMap::new(),
        leading: BTreeMap::new(),
        busy: BTreeMap::new(),
        taken: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in map.nodes() {
        round.replicas.insert(n.id, 0);
        round.leading.insert(n.id, 0);
    }
    for d in map.ranges().iter() {
        for r in &d.replicas {
            *round.replicas.entry(r.node).or_default() += 1;
        }
        if let Some(&l) = obs.leaders.get(&d.id) {
            *round.leading.entry(l).or_default() += 1;
        }
    }
    // A range inside a joint configuration is mid-change (a move under
    // way, by the balancer or an operator): its voter count says RF + 1
    // for a moment, and a removal planned on it could leave it short.
    for d in map.ranges().iter() {
        let joint = d.replicas.iter().any(|r| {
            matches!(
                r.role,
                ReplicaRole::IncomingVoter | ReplicaRole::DemotingVoter
            )
        });
        if joint {
            round.taken.insert(d.id);
        }
    }
    for op in &obs.in_flight {
        round.taken.insert(op.range());
        for n in op.moving_nodes() {
            *round.busy.entry(n).or_default() += 1;
        }
        round.count_as_done(map, op);
    }
    let draining = |n: NodeId| {
        map.node(n).is_none_or(|x| x.state != NodeState::Active)
            || health(cfg, obs, n) == Health::Dead
    };
    // 0. The meta group's members.
    round.repair_meta(&draining);
    // 1. Repair.
    for d in map.ranges().iter() {
        if round.full() {
            return round.out;
        }
        if round.taken.contains(&d.id) {
            continue;
        }
        round.repair(d, &draining);
    }
    // 2. Replica balance, one move per round per pair of nodes.
    while !round.full() && round.rebalance_one(map) {}
    // 3. Leader balance.
    while !round.full() && round.balance_leader_one(map) {}
    round.out
}

/// Whether `map` (and `leaders`, range → its leader's node) shows
/// operation `op` done: a move's source holds no replica and its target a
/// voter, an addition's node a voter, a removal's node none, a transfer's
/// target the leadership. A range the map no longer holds (merged) shows
/// every operation of it. The meta group's operations are not in the
/// map: shown. A balancer keeps a finished operation in
/// [`Observed::in_flight`] until this holds (or for
/// `shard::OP_UNSEEN_WAIT_MS` at most).
pub fn shown(op: &Op, map: &MetaState, leaders: &BTreeMap<RangeId, NodeId>) -> bool {
    let Some(d) = map.ranges().get(op.range()) else {
        return true;
    };
    let voter = |n: NodeId| {
        d.replica_on(n)
            .is_some_and(|r| r.role == ReplicaRole::Voter)
    };
    match *op {
        Op::AddReplica { node, .. } => voter(node),
        Op::RemoveReplica { node, .. } => d.replica_on(node).is_none(),
        Op::MoveReplica { from, to, .. } => d.replica_on(from).is_none() && voter(to),
        Op::TransferLeader { range, to } => leaders.get(&range) == Some(&to),
        Op::MoveMetaReplica { .. } | Op::RemoveMetaLearner { .. } => true,
    }
}

/// One less in `counts` for node `n`, which the map counted at least
/// once: each operation in flight has a range of its own (no other is
/// planned on it), whose replica (or leadership) on `n` the count holds.
fn one_less(counts: &mut BTreeMap<NodeId, usize>, n: NodeId) {
    let c = counts.entry(n).or_default();
    debug_assert!(*c > 0, "node {n} counted below 0 by an operation in flight");
    *c = c.saturating_sub(1);
}

impl Round<'_> {
    /// Counts in-flight operation `op` as done where `map` does not show
    /// it done yet: a replica still on a node it leaves, none yet on a
    /// node it goes to (a learner already there counts as one), a leader
    /// not yet where it moves.
    fn count_as_done(&mut self, map: &MetaState, op: &Op) {
        let Some(d) = map.ranges().get(op.range()) else {
            return;
        };
        let leaves = |n: NodeId, replicas: &mut BTreeMap<NodeId, usize>| {
            if d.replica_on(n).is_some() {
                one_less(replicas, n);
            }
        };
        match *op {
            Op::AddReplica { node, .. } => {
                if d.replica_on(node).is_none() {
                    *self.replicas.entry(node).or_default() += 1;
                }
            }
            Op::RemoveReplica { node, .. } => leaves(node, &mut self.replicas),
            Op::MoveReplica { range, from, to } => {
                leaves(from, &mut self.replicas);
                if d.replica_on(to).is_none() {
                    *self.replicas.entry(to).or_default() += 1;
                }
                if self.obs.leaders.get(&range) == Some(&from) {
                    one_less(&mut self.leading, from);
                }
            }
            Op::TransferLeader { range, to } => {
                if let Some(&from) = self.obs.leaders.get(&range).filter(|&&l| l != to) {
                    one_less(&mut self.leading, from);
                    *self.leading.entry(to).or_default() += 1;
                }
            }
            Op::MoveMetaReplica { .. } | Op::RemoveMetaLearner { .. } => {}
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= self.cfg.ops_per_round_max
    }

    fn free(&self, n: NodeId) -> bool {
        self.busy.get(&n).copied().unwrap_or(0) < self.cfg.moves_per_node_max
    }

    fn push(&mut self, op: Op) {
        self.taken.insert(op.range());
        for n in op.moving_nodes() {
            *self.busy.entry(n).or_default() += 1;
        }
        match op {
            Op::AddReplica { node, .. } => *self.replicas.entry(node).or_default() += 1,
            Op::RemoveReplica { node, .. } => *self.replicas.entry(node).or_default() -= 1,
            Op::MoveReplica { from, to, range } => {
                *self.replicas.entry(from).or_default() -= 1;
                *self.replicas.entry(to).or_default() += 1;
                if self.obs.leaders.get(&range) == Some(&from) {
                    // The leader leaves: its range is led elsewhere after.
                    *self.leading.entry(from).or_default() -= 1;
                }
            }
            Op::TransferLeader { range, to } => {
                if let Some(&from) = self.obs.leaders.get(&range) {
                    *self.leading.entry(from).or_default() -= 1;
                }
                *self.leading.entry(to).or_default() += 1;
            }
            // Not a range's replica: the counts stay.
            Op::MoveMetaReplica { .. } | Op::RemoveMetaLearner { .. } => {}
        }
        self.out.push(op);
    }

    /// The node to place a replica of `d` on: a live active node without
    /// one, not busy, holding fewest replicas (then lowest id) — or first
    /// of all, a node holding a learner of `d` that no operation drives
    /// (one left by a move cut short: its driver died, or the meta leader
    /// that ran it lost its leadership). The move or addition planned onto
    /// it resumes that learner (the move primitive skips adding one where
    /// one is) instead of seeding a second replica from scratch while the
    /// first waits for `stray_learner_timeout_ms`.
    fn target_for(&self, d: &RangeDesc) -> Option<NodeId> {
        self.targets
            .iter()
            .copied()
            .filter(|&n| (d.replica_on(n).is_none() || adopts(d, n)) && self.free(n))
            .min_by_key(|&n| {
                (
                    !adopts(d, n),
                    self.replicas.get(&n).copied().unwrap_or(0),
                    n,
                )
            })
    }

    /// Plans `op`, which adds a replica of `d` on `to`: where a learner of
    /// `d` is already on `to`, the counts hold it already.
    fn push_onto(&mut self, d: &RangeDesc, to: NodeId, op: Op) {
        self.push(op);
        if adopts(d, to) {
            *self.replicas.entry(to).or_default() -= 1;
        }
    }

    /// Plans moving a member of the meta group off a draining node (the
    /// lowest id first), to the live active non-member holding fewest
    /// replicas (then lowest id); one at a time.
    fn repair_meta(&mut self, draining: &dyn Fn(NodeId) -> bool) {
        use crate::route::META_GROUP;
        if self.taken.contains(&META_GROUP) {
            return;
        }
        let obs = self.obs;
        let learner = |n: NodeId| obs.meta_learners.iter().any(|&(l, _)| l == n);
        // A learner no move promotes: on a leaving node at once, else
        // once it has waited `stray_learner_timeout_ms`.
        let stray = obs
            .meta_learners
            .iter()
            .find(|&&(node, replica)| {
                draining(node)
                    || obs
                        .learners_since
                        .get(&(META_GROUP, replica))
                        .is_some_and(|&t| {
                            obs.now_ms.saturating_sub(t) > self.cfg.stray_learner_timeout_ms
                        })
            })
            .map(|&(node, _)| node);
        if let Some(node) = stray {
            if self.free(node) {
                self.push(Op::RemoveMetaLearner { node });
            }
            return;
        }
        let voters: Vec<NodeId> = obs
            .meta_members
            .iter()
            .copied()
            .filter(|&n| !learner(n))
            .collect();
        let Some(from) = voters.iter().copied().filter(|&n| draining(n)).min() else {
            return;
        };
        if !self.free(from) {
            return;
        }
        // A node holding a learner first: the move takes it over.
        let to = self
            .targets
            .iter()
            .copied()
            .filter(|&n| !voters.contains(&n) && self.free(n))
            .min_by_key(|&n| (!learner(n), self.replicas.get(&n).copied().unwrap_or(0), n));
        if let Some(to) = to {
            self.push(Op::MoveMetaReplica { from, to });
        }
    }

    fn repair(&mut self, d: &RangeDesc, draining: &dyn Fn(NodeId) -> bool) {
        // (A range with an operation in flight is not here: its learner is
        // that operation's.)
        let stray = d
            .replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Learner)
            .find(|r| {
                self.obs
                    .learners_since
                    .get(&(d.id, r.replica))
                    .is_some_and(|&t| {
                        self.obs.now_ms.saturating_sub(t) > self.cfg.stray_learner_timeout_ms
                    })
            })
            .map(|r| r.node);
        // Its node busy: the range's other repairs go on meanwhile.
        if let Some(node) = stray.filter(|&n| self.free(n)) {
            self.push(Op::RemoveReplica { range: d.id, node });
            return;
        }
        let leader = self.obs.leaders.get(&d.id).copied();
        let voters: Vec<NodeId> = d.voters().map(|r| r.node).collect();
        // A replica to move off: the leader's last (it moves its
        // leadership first, below).
        let mut leaving: Vec<NodeId> = d
            .replicas
            .iter()
            .map(|r| r.node)
            .filter(|&n| draining(n))
            .collect();
        leaving.sort_by_key(|&n| (Some(n) == leader, n));
        if let Some(&from) = leaving.first() {
            if Some(from) == leader && health(self.cfg, self.obs, from) == Health::Dead {
                // A dead leader hands nothing over: the range elects
                // another (if a quorum is left) and its report says so.
                return;
            }
            if Some(from) == leader {
                // Leaders first: hand it to a voter that stays. With none
                // (a range of one voter), the move itself carries the
                // leadership over once the new voter is in (the move
                // primitive moves a leaving leader's leadership first).
                if let Some(to) = voters.iter().copied().find(|&v| !draining(v)) {
                    self.push(Op::TransferLeader { range: d.id, to });
                    return;
                }
            }
            if !self.free(from) {
                return;
            }
            let learner = d.replica_on(from).is_some_and(|r| !r.role.votes());
            if learner || voters.len() > self.rf {
                // A learner (no voter lost: the move primitive would
                // refuse to move one), or one too many anyway: the leaving
                // replica just goes.
                self.push(Op::RemoveReplica {
                    range: d.id,
                    node: from,
                });
            } else if let Some(to) = self.target_for(d) {
                let range = d.id;
                self.push_onto(d, to, Op::MoveReplica { range, from, to });
            }
            return;
        }
        if voters.len() < self.rf {
            if let Some(node) = self.target_for(d) {
                let range = d.id;
                self.push_onto(d, node, Op::AddReplica { range, node });
            }
        } else if voters.len() > self.rf {
            // The most loaded voter that does not lead.
            if let Some(node) = voters
                .iter()
                .copied()
                .filter(|&v| Some(v) != leader && self.free(v))
                .max_by_key(|&v| (self.replicas.get(&v).copied().unwrap_or(0), v))
            {
                self.push(Op::RemoveReplica { range: d.id, node });
            }
        }
    }

    /// Plans one move from the most loaded target node to the least
    /// loaded one, if the two are out of balance; `false` if none.
    fn rebalance_one(&mut self, map: &MetaState) -> bool {
        if self.targets.len() < 2 {
            return false;
        }
        let count = |s: &Self, n: NodeId| s.replicas.get(&n).copied().unwrap_or(0);
        let total: usize = self.targets.iter().map(|&n| count(self, n)).sum();
        let mean_x100 = total as u64 * 100 / self.targets.len() as u64;
        let over = mean_x100 * (100 + self.cfg.balance_tolerance_pct) / 100;
        // Sources from most loaded; for each, the least loaded target that
        // is free and lacks one of the source's ranges.
        let mut sources: Vec<NodeId> = self.targets.iter().copied().collect();
        sources.sort_by_key(|&n| (std::cmp::Reverse(count(self, n)), n));
        for from in sources {
            let have = count(self, from);
            if (have as u64) * 100 <= over || !self.free(from) {
                continue;
            }
            let mut sinks: Vec<NodeId> = self
                .targets
                .iter()
                .copied()
                .filter(|&n| n != from && self.free(n) && count(self, n) + 2 <= have)
                .collect();
            sinks.sort_by_key(|&n| (count(self, n), n));
            for to in sinks {
                let leader_of = |id| self.obs.leaders.get(&id).copied();
                // A range on `from` but not `to` (or with a learner on
                // `to` that no operation drives: that one first, resumed);
                // then one not led from `from` if there is one (moving a
                // follower does not disturb the leader; with one voter,
                // every range is led).
                let movable = |d: &&RangeDesc| {
                    !self.taken.contains(&d.id)
                        && d.replica_on(from).is_some_and(|r| r.role.votes())
                        && (d.replica_on(to).is_none() || adopts(d, to))
                };
                let pick = map
                    .ranges()
                    .iter()
                    .filter(movable)
                    .find(|d| adopts(d, to))
                    .or_else(|| {
                        map.ranges()
                            .iter()
                            .filter(movable)
                            .find(|d| leader_of(d.id) != Some(from))
                    })
                    .or_else(|| map.ranges().iter().find(movable));
                if let Some(d) = pick {
                    let range = d.id;
                    self.push_onto(d, to, Op::MoveReplica { range, from, to });
                    return true;
                }
            }
        }
        false
    }

    /// Plans one leadership transfer from the node leading most to a voter
    /// on the node leading fewest, if they differ by 2 or more.
    fn balance_leader_one(&mut self, map: &MetaState) -> bool {
        let lead = |s: &Self, n: NodeId| s.leading.get(&n).copied().unwrap_or(0);
        let mut from_most: Vec<NodeId> = self.targets.iter().copied().collect();
        from_most.sort_by_key(|&n| (std::cmp::Reverse(lead(self, n)), n));
        let mut to_fewest = from_most.clone();
        to_fewest.sort_by_key(|&n| (lead(self, n), n));
        for &from in &from_most {
            for &to in &to_fewest {
                if lead(self, to) + 2 > lead(self, from) {
                    break;
                }
                let pick = map.ranges().iter().find(|d| {
                    !self.taken.contains(&d.id)
                        && self.obs.leaders.get(&d.id) == Some(&from)
                        && d.voters().any(|r| r.node == to)
                });
                if let Some(d) = pick {
                    let range = d.id;
                    self.push(Op::TransferLeader { range, to });
                    return true;
                }
                if let Some((first, second)) = self.leader_chain(map, from, to) {
                    self.push(first);
                    self.push(second);
                    return true;
                }
            }
        }
        false
    }

    /// Two transfers that move one leader from `from` to `to` where no
    /// range led from `from` has a voter on `to`: a range led from
    /// `from` to its voter on some node X, and a range X leads to its
    /// voter on `to` (X leads as many after as before). Ranges in map
    /// order, X in its voters' order.
    fn leader_chain(&self, map: &MetaState, from: NodeId, to: NodeId) -> Option<(Op, Op)> {
        let free = |d: &&RangeDesc| !self.taken.contains(&d.id);
        let led_by = |n: NodeId| {
            map.ranges()
                .iter()
                .filter(free)
                .filter(move |d| self.obs.leaders.get(&d.id) == Some(&n))
        };
        for first in led_by(from) {
            for x in first.voters().map(|r| r.node) {
                if x == from || x == to || !self.targets.contains(&x) {
                    continue;
                }
                let second =
                    led_by(x).find(|d| d.id != first.id && d.voters().any(|r| r.node == to));
                if let Some(second) = second {
                    return Some((
                        Op::TransferLeader {
                            range: first.id,
                            to: x,
                        },
                        Op::TransferLeader {
                            range: second.id,
                            to,
                        },
                    ));
                }
            }
        }
        None
    }
}
