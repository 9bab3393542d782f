//! The meta group and the balancer under the sweep's faults (issue #17,
//! `SimConfig::balancer`).
//!
//! - **The meta group** is a group of the run like any other (its
//!   checkers included), founded on the founders, whose state machine is the
//!   node's own `kv::Kv` applying `meta::MetaCmd`s (`WriteOp::Meta`), as
//!   the meta group's replicas do on a node. Its leader bootstraps the map
//!   (`MetaCmd::Bootstrap`: the settings, the nodes, the founding range).
//! - **Reports**: each round, each range's leader that can reach the meta
//!   leader reports its descriptor (`Replica::range_descriptor`, what
//!   `shard::meta_sync` reports) when the map shows another membership or
//!   keys (`shows`); the map keeps the higher epoch (`MetaState`'s
//!   `ReportRanges`). The shard reports on elections, membership changes
//!   and splits, and in a reconcile pass every 30 s: more often here.
//! - **The balancer** runs on the meta leader's node, from the map that
//!   node applied: a node is heard from when it is up, runs and has a link
//!   to the meta leader both ways (the ping of `shard::Balancer`); the
//!   planner (`meta::planner::plan`, the node's) chooses the operations;
//!   each is carried out in steps at the range's leader, reached over the
//!   meta leader's link (a step is a direct call there: its request and
//!   answer are not lost, as the client's may be). Shared with the shard:
//!   the swap (`group::membership::swap_voter`, leadership leaving the
//!   source first), the voter floor of a removal
//!   (`group::membership::removal_keeps_voters`) and the "change under
//!   way" refusal. Written here, as `client::moves` sequences them: a
//!   learner added (a seeding snapshot taken first where the leader has
//!   none, as `Shard::snapshot_to_seed`), promotions, removals and leader
//!   transfers (calls of `RawNode`), without the shard handler's address
//!   book entries. A finished operation counts as in flight until the map
//!   shows it (`shard::keep_unseen`, the shard balancer's rule); one not
//!   done within [`SIM_MOVE_TIMEOUT_MS`] is given up (a learner it left is
//!   the planner's stray learner to remove). Unlike the shard's balancer,
//!   which finishes a round's operations before it plans the next, this
//!   one plans every round with operations in flight. A new meta leader
//!   starts with none in flight and every node heard from when it started
//!   (PD's grace, as `shard::Balancer`).
//! - **Checked**: no configuration of any range, in force or either half
//!   of a joint one, has fewer voters than the replication factor (the
//!   voter floor, checked at every apply on every node); and the run
//!   settles: no operation in flight or unseen, no learner in the map,
//!   every range's map entry shows the membership and keys its leader has,
//!   the map covers the keyspace exactly once, and the planner has
//!   nothing left to do with every node live (convergence waits for it,
//!   and the liveness bound fails a run that never gets there).
//!
//! - **Decommission** (`SimConfig::decommission`): an operator sets a
//!   node (any node: in 5-node runs a founder about 3 times in 5)
//!   decommissioning at a seeded time, and decommissioned once the map
//!   shows it holding nothing and the meta group has no member on it;
//!   the run settles only with the node decommissioned, no range holding
//!   a replica on it and no meta group member on it. (`ctl decommission`
//!   moves a meta member off the node itself and then waits on the map
//!   alone; here the planner's `MoveMetaReplica` moves it.)
//!
//! - **Joins** (`SimConfig::joins`): the nodes that are not founders are
//!   left out of the bootstrap's map and each joins at a seeded time
//!   (`MetaCmd::JoinNode`, asked again until the map holds it); the run
//!   settles only with every node joined. (Without joins, every node is
//!   in the map from the start; nodes 4 and 5 hold nothing until the
//!   balancer moves replicas there.)
//!
//! - **The meta group's own members move** (the planner's priority 0:
//!   `MoveMetaReplica` off a dead or decommissioning member,
//!   `RemoveMetaLearner` for a stray learner): the same steps on the meta
//!   group, with the shard's two refusals for it (a voter of the meta
//!   group is never removed, only moved; a move onto a node that already
//!   votes in it would shrink it). The balancer then runs wherever the
//!   meta leadership goes.
//!
//! Not simulated: lost requests of a move's steps (a step here is a
//! call at the leader, judged again from its state each round), and the
//! client's `move_replica` checks around these steps.

use super::*;
use crate::client::MetaRoster;
use crate::group::membership;
use crate::kv::{Command, WriteOp};
use crate::meta::planner::{self, note_learners, Op as PlanOp, PlannerConfig};
use crate::meta::{ClusterSettings, MetaCmd, MetaState, NodeRecord, NodeState, RangeDesc};
use crate::route::META_GROUP;

/// How often the meta leader's node runs a round: reports, the balancer's
/// steps and its plan (simulated ms).
pub(super) const SIM_META_ROUND_MS: u64 = 200;

/// An operation of the balancer not done in this long (simulated ms) is
/// given up.
pub(super) const SIM_MOVE_TIMEOUT_MS: u64 = 4_000;

/// The replication factor of the simulated cluster's ranges.
const SIM_RF: u32 = 3;

/// The planner's settings in the simulator: times scaled to the run (a
/// crash lasts 50-1500 ms, so some nodes are declared dead and their
/// replicas re-created elsewhere, and then come back).
fn planner_config() -> PlannerConfig {
    PlannerConfig {
        dead_node_timeout_ms: 1_000,
        suspect_node_timeout_ms: 400,
        stray_learner_timeout_ms: 3 * SIM_MOVE_TIMEOUT_MS,
        ..PlannerConfig::default()
    }
}

/// The node an operator decommissions in this run and from when
/// (simulated ms), if any (`SimConfig::decommission`): drawn from the
/// seed alone (not the run's generator, whose draws other runs share).
pub(super) fn decommission_plan(cfg: &SimConfig, ids: &[NodeId]) -> Option<(NodeId, u64)> {
    let founders = cfg.initial_voters;
    if !(cfg.balancer && cfg.decommission && ids.len() > founders) {
        return None;
    }
    let mut r = crate::rng::Rng(cfg.seed ^ 0xDEC0_0015_5109);
    // Any node: a founder's meta group replica moves off it first (the
    // planner's `MoveMetaReplica`).
    let node = ids[r.below(ids.len() as u64) as usize];
    // From the fault period's second half to the heal phase's first: the
    // balancer has spread replicas onto the node by then.
    let from = cfg.fault_ms / 2;
    Some((node, from + r.below((from + cfg.heal_ms / 2).max(1))))
}

/// The nodes that join after the bootstrap and from when (simulated ms;
/// `SimConfig::joins`): every node that is not a founder, at a time of
/// the fault period drawn from the seed alone.
pub(super) fn join_plan(cfg: &SimConfig, ids: &[NodeId]) -> Vec<(NodeId, u64)> {
    if !(cfg.balancer && cfg.joins) {
        return Vec::new();
    }
    let mut r = crate::rng::Rng(cfg.seed ^ 0x0070_1405_0DE5);
    ids[cfg.initial_voters.min(ids.len())..]
        .iter()
        .map(|&id| (id, r.below(cfg.fault_ms.max(1))))
        .collect()
}

/// The node record node `id` of the run has in the map (the addresses
/// only name it: the simulator's links are by index).
fn node_record(id: NodeId) -> NodeRecord {
    NodeRecord {
        id,
        peer_addr: format!("10.0.0.{id}:7000"),
        client_addr: format!("10.0.0.{id}:7100"),
        shards: 1,
        state: NodeState::Active,
    }
}

/// The meta leader's balancer as the simulator runs it.
#[derive(Debug, Default)]
pub(super) struct SimBalancer {
    /// The meta leader (node index, term) this state belongs to.
    leader: Option<(usize, Term)>,
    /// When it started leading (simulated ms).
    since_ms: u64,
    heartbeat_ms: BTreeMap<NodeId, u64>,
    learners_since: BTreeMap<(u64, u64), u64>,
    /// Operations under way, with when each started.
    in_flight: Vec<(PlanOp, u64)>,
    /// Operations done that the map does not show yet, with when each
    /// finished (`shard::keep_unseen`, the shard's balancer's rule):
    /// planned as still in flight.
    unseen: Vec<(PlanOp, u64)>,
}

/// What a step of an operation found.
enum Step {
    Done,
    /// Asked (or waiting for a change under way): look again next round.
    Wait,
    /// Cannot be done as planned (the range changed meanwhile).
    Gone(String),
}

/// Whether the map's descriptor `held` shows range descriptor `d`: the
/// same keys, version and replicas with their roles. Not `conf_ver`: it
/// is the reporting replica's `RawNode::conf_index`, a snapshot's index on
/// a replica that installed one, so leaders of one membership report it
/// under different ones, and the map keeps the highest (a lower one of
/// the same membership is refused as stale, which is harmless: any later
/// membership comes at a higher index).
fn shows(held: Option<&RangeDesc>, d: &RangeDesc) -> bool {
    held.is_some_and(|h| {
        (&h.start, &h.end, h.epoch.version, &h.replicas)
            == (&d.start, &d.end, d.epoch.version, &d.replicas)
    })
}

impl Sim {
    /// The meta group's founding voters: the founders (the first
    /// `initial_voters` nodes).
    pub(super) fn meta_founders(&self) -> Vec<NodeId> {
        self.ids[..self.cfg.initial_voters].to_vec()
    }

    /// The descriptor founding range `g` starts with in balancer runs
    /// (one range over the whole keyspace, on the founders, epoch 1.0),
    /// as the shard's `founding_descriptor` makes it.
    pub(super) fn founding_descriptor(&self, g: GroupId) -> RangeDesc {
        RangeDesc::founding(g, Bytes::new(), Bytes::new(), &self.meta_founders(), 0)
    }

    /// One round of the meta leader's node (see the module docs).
    pub(super) fn meta_round(&mut self) {
        let Some(m) = self.current_leader(META_GROUP) else {
            return;
        };
        if self.nodes[m].paused_until.is_some() {
            return;
        }
        let term = self.nodes[m].raft(META_GROUP).expect("up").term();
        if self.balancer.leader != Some((m, term)) {
            self.balancer = SimBalancer {
                leader: Some((m, term)),
                since_ms: self.now,
                ..SimBalancer::default()
            };
        }
        let Some(state) = self.nodes[m].group(META_GROUP).kv().meta().cloned() else {
            return self.meta_propose(m, self.bootstrap_cmd());
        };
        if state.settings().is_none() {
            return self.meta_propose(m, self.bootstrap_cmd());
        }
        self.report_ranges(m, &state);
        self.operator(m, &state);
        for j in 0..self.nodes.len() {
            if self.reaches(m, j) {
                self.balancer.heartbeat_ms.insert(self.ids[j], self.now);
            }
        }
        note_learners(
            &state,
            &self.meta_roster(m).learners,
            &mut self.balancer.learners_since,
            self.now,
        );
        // The operations under way, a step each.
        let ops = std::mem::take(&mut self.balancer.in_flight);
        for (op, started) in ops {
            match self.step_op(m, &op) {
                Step::Done => self.op_done(op),
                Step::Gone(why) => {
                    tracing::debug!(?op, why, "sim balancer: operation dropped");
                    self.report.balancer_ops_dropped += 1;
                }
                Step::Wait if self.now >= started + SIM_MOVE_TIMEOUT_MS => {
                    self.report.balancer_ops_timed_out += 1;
                }
                Step::Wait => self.balancer.in_flight.push((op, started)),
            }
            if self.failure.is_some() {
                return;
            }
        }
        // (No two ranges of the map hold a key: `RangeMap` asserts it at
        // every insert.)
        let leaders = self.range_leaders(&state);
        let now = self.now;
        crate::shard::keep_unseen(&mut self.balancer.unseen, &state, &leaders, now);
        let obs = self.observed(m, leaders);
        for op in planner::plan(&state, &obs, &planner_config()) {
            self.report.balancer_ops_planned += 1;
            match self.step_op(m, &op) {
                Step::Done => self.op_done(op),
                Step::Gone(_) => self.report.balancer_ops_dropped += 1,
                Step::Wait => self.balancer.in_flight.push((op, self.now)),
            }
        }
    }

    /// The operator's decommission (`SimConfig::decommission`), asked of
    /// meta leader `m` whose map is `state`, as `ctl decommission` asks
    /// it: the node set decommissioning once its time has come, then
    /// decommissioned once the map covers the keyspace and shows the node
    /// holding no replica (what `ctl` waits for; the map refuses it
    /// before) and no meta group member is on it (`ctl` moves that one
    /// itself first). Asked again each round until the map shows it: a
    /// proposal may be lost with its leader.
    fn operator(&mut self, m: usize, state: &MetaState) {
        self.ask_joins(m, state);
        let Some((node, at)) = self.decommission else {
            return;
        };
        let Some(rec) = state.node(node) else {
            return;
        };
        if self.now < at {
            return;
        }
        let to = match rec.state {
            NodeState::Active => {
                self.report.decommission_replicas = state.ranges().held_by(node) as u64;
                NodeState::Decommissioning
            }
            NodeState::Decommissioning
                if state.ranges().coverage().is_ok()
                    && state.ranges().held_by(node) == 0
                    && !self.meta_roster(m).nodes().contains(&node) =>
            {
                NodeState::Decommissioned
            }
            _ => return,
        };
        self.report.decommission_asks += 1;
        self.meta_propose(m, MetaCmd::SetNodeState { node, state: to });
    }

    /// Joins (`SimConfig::joins`): each node whose time has come, that
    /// reaches meta leader `m` and that the map `state` does not hold yet
    /// asks (as `join::register` does at the node's start).
    fn ask_joins(&mut self, m: usize, state: &MetaState) {
        let due: Vec<NodeId> = self
            .joins
            .iter()
            .filter(|&&(id, at)| {
                let j = self
                    .ids
                    .iter()
                    .position(|&x| x == id)
                    .expect("a node of the run");
                self.now >= at && state.node(id).is_none() && self.reaches(m, j)
            })
            .map(|&(id, _)| id)
            .collect();
        for id in due {
            let r = node_record(id);
            self.report.join_asks += 1;
            self.meta_propose(
                m,
                MetaCmd::JoinNode {
                    node: id,
                    peer_addr: r.peer_addr,
                    client_addr: r.client_addr,
                    shards: r.shards,
                },
            );
        }
    }

    /// Operation `op` is done: planned as in flight until the map shows
    /// it (`shard::keep_unseen`).
    fn op_done(&mut self, op: PlanOp) {
        self.report.balancer_ops_done += 1;
        if matches!(op, PlanOp::MoveMetaReplica { .. }) {
            self.report.balancer_meta_moves += 1;
        }
        if op.changes_replicas() {
            self.balancer.unseen.push((op, self.now));
        }
    }

    /// The node each of `state`'s ranges is led from now.
    fn range_leaders(&self, state: &MetaState) -> BTreeMap<u64, NodeId> {
        state
            .ranges()
            .iter()
            .filter_map(|d| {
                let l = self.current_leader(d.id)?;
                Some((d.id, self.ids[l]))
            })
            .collect()
    }

    /// The meta group's members as its leader on node `m` has them: every
    /// member's node, and (node, replica) of each learner (what
    /// `Client::meta_roster` asks the meta leader for).
    fn meta_roster(&self, m: usize) -> MetaRoster {
        let Some(raft) = self.nodes[m].raft(META_GROUP) else {
            return MetaRoster::default();
        };
        let conf = raft.conf();
        let node = |&r: &ReplicaId| conf.node_of(r);
        MetaRoster {
            voters: conf.all_voters().iter().filter_map(node).collect(),
            learners: conf
                .learners
                .iter()
                .filter_map(|r| Some((node(r)?, *r)))
                .collect(),
        }
    }

    /// What the balancer on meta leader `m` knows beyond the map, with
    /// `leaders` (range → its leader's node).
    fn observed(&self, m: usize, leaders: BTreeMap<u64, NodeId>) -> planner::Observed {
        let roster = self.meta_roster(m);
        planner::Observed {
            now_ms: self.now,
            since_ms: self.balancer.since_ms,
            heartbeat_ms: self.balancer.heartbeat_ms.clone(),
            leaders,
            in_flight: self
                .balancer
                .in_flight
                .iter()
                .chain(&self.balancer.unseen)
                .map(|(o, _)| o.clone())
                .collect(),
            meta_members: roster.nodes(),
            meta_learners: roster.learners,
            learners_since: self.balancer.learners_since.clone(),
        }
    }

    /// Whether node `j` is up, runs and has links both ways with node `m`
    /// (`m` itself if up).
    fn reaches(&self, m: usize, j: usize) -> bool {
        self.nodes[j].up()
            && self.nodes[j].paused_until.is_none()
            && (j == m || (!self.blocked[m][j] && !self.blocked[j][m]))
    }

    fn bootstrap_cmd(&self) -> MetaCmd {
        MetaCmd::Bootstrap {
            settings: ClusterSettings {
                replication_factor: SIM_RF,
                shards: 1,
                // The workload's keys and values are 8 bytes.
                key_bytes_max: 64,
                value_bytes_max: 64,
            },
            // (Nodes that join later are not in it.)
            nodes: self
                .ids
                .iter()
                .filter(|id| !self.joins.iter().any(|(j, _)| j == *id))
                .map(|&id| node_record(id))
                .collect(),
            ranges: vec![self.founding_descriptor(SIM_GROUP)],
        }
    }

    /// Proposes meta command `cmd` at node `m`'s meta replica (an admin
    /// write, as `Op::Meta` is proposed).
    fn meta_propose(&mut self, m: usize, cmd: MetaCmd) {
        let c = Command {
            client: 0,
            seq: 0,
            ack: 0,
            op: WriteOp::Meta { cmd: cmd.encode() },
        };
        if let Some(r) = self.nodes[m].raft_mut(META_GROUP) {
            if r.propose(c.encode()).is_ok() {
                self.report.meta_commands += 1;
            }
        }
        self.drive(m, META_GROUP);
    }

    /// The descriptors of the ranges whose leader reaches the meta leader
    /// `m` and that the map holds otherwise, in one report.
    fn report_ranges(&mut self, m: usize, state: &MetaState) {
        let mut descs = Vec::new();
        for &g in self.checks.keys().filter(|&&g| g != META_GROUP) {
            let Some(l) = self.current_leader(g) else {
                continue;
            };
            if !self.reaches(m, l) {
                continue;
            }
            let rep = self.nodes[l].group(g).rep.as_ref().expect("leader is up");
            let Some(d) = rep.range_descriptor(0) else {
                continue;
            };
            if !shows(state.ranges().get(d.id), &d) {
                descs.push(d);
            }
        }
        if !descs.is_empty() {
            self.meta_propose(m, MetaCmd::ReportRanges(descs));
        }
    }

    /// A step of operation `op` at its range's leader, asked from the meta
    /// leader's node `m` (see the module docs).
    fn step_op(&mut self, m: usize, op: &PlanOp) -> Step {
        let g = op.range();
        // The meta group's member moves are the same primitive on the meta
        // group (`Client::move_meta_replica`: a learner added, one swap;
        // a stray learner removed as `Op::RemoveNode` removes it).
        let op = &match *op {
            PlanOp::MoveMetaReplica { from, to } => PlanOp::MoveReplica {
                range: META_GROUP,
                from,
                to,
            },
            PlanOp::RemoveMetaLearner { node } => PlanOp::RemoveReplica {
                range: META_GROUP,
                node,
            },
            ref o => o.clone(),
        };
        let Some(l) = self.current_leader(g) else {
            return Step::Wait;
        };
        if !self.reaches(m, l) {
            return Step::Wait;
        }
        let leads_on = self.ids[l];
        let raft = self.nodes[l].raft_mut(g).expect("leader is up");
        let conf = raft.conf().clone();
        let voter_on = |n: NodeId| conf.replica_on(n).filter(|&r| conf.is_voter(r));
        let learner_on = |n: NodeId| conf.replica_on(n).filter(|&r| conf.is_learner(r));
        let settled = membership::change_under_way(raft, g).is_none();
        // The leader has no snapshot to seed a learner with yet.
        let mut seed = false;
        let step = match *op {
            PlanOp::TransferLeader { to, .. } => match voter_on(to) {
                Some(_) if leads_on == to => Step::Done,
                Some(r) => {
                    let _ = raft.transfer_leader(r);
                    Step::Wait
                }
                None => Step::Gone(format!("node {to} holds no voter of range {g}")),
            },
            PlanOp::AddReplica { node, .. } => {
                if voter_on(node).is_some() && settled {
                    Step::Done
                } else if !settled {
                    Step::Wait
                } else if let Some(r) = learner_on(node) {
                    let _ = raft.promote_learner(r);
                    Step::Wait
                } else {
                    if let Err(ConfChangeError::NoSnapshot(_)) = raft.add_learner(node) {
                        seed = true;
                    }
                    Step::Wait
                }
            }
            PlanOp::MoveReplica { from, to, .. } => {
                let gone = conf.replica_on(from).is_none();
                if gone && voter_on(to).is_some() && settled {
                    Step::Done
                } else if !settled {
                    Step::Wait
                } else if gone {
                    Step::Gone(format!("node {from} holds no replica of range {g}"))
                } else if learner_on(from).is_some() && g == META_GROUP {
                    // `move_meta_replica` refuses to move a learner (the
                    // planner moves only meta voters).
                    Step::Gone(format!("node {from} holds a learner of the meta group"))
                } else if let Some(r) = learner_on(from) {
                    // A learner leaving is removed, as the shard's
                    // balancer does: a move would add a voter in its place.
                    let _ = raft.remove_replica(r);
                    Step::Wait
                } else if voter_on(to).is_some() && g == META_GROUP {
                    // `move_meta_replica` refuses: removing the source
                    // would shrink the meta group.
                    Step::Gone(format!("node {to} is in the meta group already"))
                } else if voter_on(to).is_some() {
                    // One voter more than the factor (promoted before
                    // its swap): the source goes, never below the floor.
                    let rf = SIM_RF as usize;
                    match membership::removal_keeps_voters(&conf, g, from, rf) {
                        Ok(()) => {
                            let r = voter_on(from).expect("checked");
                            let _ = raft.remove_replica(r);
                            Step::Wait
                        }
                        Err(why) => Step::Gone(why),
                    }
                } else if learner_on(to).is_none() {
                    if let Err(ConfChangeError::NoSnapshot(_)) = raft.add_learner(to) {
                        seed = true;
                    }
                    Step::Wait
                } else {
                    match membership::swap_voter(raft, g, to, from) {
                        Err(crate::wire::ClientError::BadRequest { reason }) => Step::Gone(reason),
                        Ok(_) => {
                            self.report.balancer_swaps += 1;
                            Step::Wait
                        }
                        Err(_) => Step::Wait,
                    }
                }
            }
            PlanOp::RemoveReplica { node, .. } => match conf.replica_on(node) {
                None if settled => Step::Done,
                None => Step::Wait,
                Some(_) if !settled => Step::Wait,
                Some(r) => {
                    // The shard's `voter_floor`: a meta voter is only moved.
                    let kept = if g == META_GROUP {
                        membership::meta_removal_keeps_voters(&conf, node)
                    } else {
                        membership::removal_keeps_voters(&conf, g, node, SIM_RF as usize)
                    };
                    match kept {
                        Ok(()) => {
                            let _ = raft.remove_replica(r);
                            Step::Wait
                        }
                        Err(why) => Step::Gone(why),
                    }
                }
            },
            PlanOp::MoveMetaReplica { .. } | PlanOp::RemoveMetaLearner { .. } => {
                unreachable!("ops of the meta group are mapped above")
            }
        };
        if seed {
            self.snapshot_to_seed(l, g);
        }
        self.drive(l, g);
        step
    }

    /// Whether the balancer has settled: a meta leader whose map holds
    /// every range as its leader has it, covering the keyspace, and whose
    /// planner, every node heard from now, plans nothing. `Err` says what
    /// is not settled yet.
    pub(super) fn balancer_settled(&self) -> Result<(), String> {
        let m = self.current_leader(META_GROUP).ok_or("no meta leader")?;
        let state = self.nodes[m]
            .group(META_GROUP)
            .kv()
            .meta()
            .filter(|s| s.settings().is_some())
            .ok_or("the map is not bootstrapped")?;
        let ranges: Vec<GroupId> = self.ranges.values().copied().collect();
        if state.ranges().len() != ranges.len() {
            return Err(format!(
                "the map holds {} ranges, the run {} ({:?})",
                state.ranges().len(),
                ranges.len(),
                ranges
            ));
        }
        for g in ranges {
            let l = self
                .current_leader(g)
                .ok_or(format!("range {g} has no leader"))?;
            let d = self.nodes[l]
                .group(g)
                .rep
                .as_ref()
                .expect("up")
                .range_descriptor(0);
            if !d.as_ref().is_some_and(|d| shows(state.ranges().get(g), d)) {
                return Err(format!(
                    "range {g}: the map has {:?}, its leader {:?}",
                    state.ranges().get(g).map(|d| d.to_string()),
                    d.map(|d| d.to_string())
                ));
            }
        }
        state
            .ranges()
            .coverage()
            .map_err(|gap| format!("the map does not cover the keyspace: {gap}"))?;
        if !self.balancer.in_flight.is_empty() {
            return Err(format!(
                "operations under way: {:?}",
                self.balancer.in_flight
            ));
        }
        if !self.balancer.unseen.is_empty() {
            return Err(format!(
                "operations the map does not show: {:?}",
                self.balancer.unseen
            ));
        }
        // (A learner left by an operation given up counts as a replica to
        // the planner until `stray_learner_timeout_ms` removes it.)
        let learner = state
            .ranges()
            .iter()
            .find(|d| d.voters().count() != d.replicas.len());
        if let Some(d) = learner {
            return Err(format!("range {d} has a learner"));
        }
        if let Some((node, replica)) = self.meta_roster(m).learners.first() {
            return Err(format!(
                "the meta group has a learner (replica {replica} on node {node})"
            ));
        }
        if let Some((id, _)) = self.joins.iter().find(|(id, _)| state.node(*id).is_none()) {
            return Err(format!("node {id} has not joined"));
        }
        if let Some((node, _)) = self.decommission {
            let rec = state
                .node(node)
                .ok_or(format!("node {node} is not in the map"))?;
            if rec.state != NodeState::Decommissioned {
                return Err(format!(
                    "node {node}, which the operator decommissions, is still {}",
                    rec.state
                ));
            }
            if let Some(d) = state.ranges().iter().find(|d| d.replica_on(node).is_some()) {
                return Err(format!("decommissioned node {node} holds a replica of {d}"));
            }
            if self.meta_roster(m).nodes().contains(&node) {
                return Err(format!(
                    "decommissioned node {node} is a member of the meta group"
                ));
            }
        }
        let mut obs = self.observed(m, self.range_leaders(state));
        for &id in &self.ids {
            obs.heartbeat_ms.insert(id, self.now);
        }
        let left = planner::plan(state, &obs, &planner_config());
        if !left.is_empty() {
            return Err(format!("the planner still plans {left:?}"));
        }
        Ok(())
    }
}
