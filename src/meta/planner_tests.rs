//! The balancer's planner, table-driven: each rule in a small cluster,
//! then a property: whatever the cluster, planning and carrying the
//! operations out converges, never leaving a range with fewer voters than
//! the replication factor on the way.

use bytes::Bytes;
use proptest::prelude::*;

use super::planner::{self, note_learners, plan, Observed, Op, PlannerConfig};
use super::*;

const NOW: u64 = 1_000_000;

/// A bootstrapped map: `nodes` with their states, replication factor
/// `rf`, and ranges given as (voter nodes, leader node), cut at "r{i}".
/// Every node heard from at `NOW`.
fn world(nodes: &[(u64, NodeState)], rf: u32, ranges: &[(&[u64], u64)]) -> (MetaState, Observed) {
    let n = ranges.len();
    let descs: Vec<RangeDesc> = ranges
        .iter()
        .enumerate()
        .map(|(i, (on, _))| RangeDesc {
            id: i as u64 + 1,
            start: if i == 0 {
                Bytes::new()
            } else {
                Bytes::from(format!("r{i:03}"))
            },
            end: if i + 1 == n {
                Bytes::new()
            } else {
                Bytes::from(format!("r{:03}", i + 1))
            },
            epoch: Epoch {
                version: 1,
                conf_ver: 1,
            },
            replicas: on
                .iter()
                .map(|&node| RangeReplica {
                    replica: 100 * (i as u64 + 1) + node,
                    node,
                    shard: 0,
                    role: ReplicaRole::Voter,
                })
                .collect(),
        })
        .collect();
    let mut m = MetaState::new();
    let cmd = MetaCmd::Bootstrap {
        settings: ClusterSettings {
            replication_factor: rf,
            shards: 1,
            key_bytes_max: 4096,
            value_bytes_max: 4096,
        },
        nodes: nodes
            .iter()
            .map(|&(id, state)| NodeRecord {
                id,
                peer_addr: format!("10.0.0.{id}:7000"),
                client_addr: String::new(),
                shards: 1,
                state,
            })
            .collect(),
        ranges: descs,
    };
    assert_eq!(m.apply(&cmd), Ok(MetaReply::Done));
    let obs = Observed {
        now_ms: NOW,
        since_ms: 0,
        heartbeat_ms: nodes.iter().map(|&(id, _)| (id, NOW)).collect(),
        leaders: ranges
            .iter()
            .enumerate()
            .map(|(i, &(_, l))| (i as u64 + 1, l))
            .collect(),
        in_flight: Vec::new(),
        meta_members: Vec::new(),
        meta_learners: Vec::new(),
        learners_since: Default::default(),
    };
    (m, obs)
}

fn active(ids: std::ops::RangeInclusive<u64>) -> Vec<(u64, NodeState)> {
    ids.map(|id| (id, NodeState::Active)).collect()
}

const ALL3: &[u64] = &[1, 2, 3];

#[test]
fn a_balanced_cluster_gets_no_operation() {
    let (m, obs) = world(
        &active(1..=3),
        3,
        &[
            (ALL3, 1),
            (ALL3, 2),
            (ALL3, 3),
            (ALL3, 1),
            (ALL3, 2),
            (ALL3, 3),
        ],
    );
    assert_eq!(plan(&m, &obs, &PlannerConfig::default()), vec![]);
}

/// An operation in flight, or done and not shown by the map yet, is
/// planned as if done: a round planned while the map still shows node 1
/// with the replica it just moved to node 4 must not move another of its
/// replicas to node 4 (counts 4/3/3/2 → 3/3/3/3 after the first move; a
/// second would leave 2/3/3/4). Found by the simulator's balancer sweep
/// (5-node seeds 4 and 6 never settled).
#[test]
fn operations_in_flight_or_not_shown_yet_are_planned_as_done() {
    let (mut m, mut obs) = world(
        &active(1..=4),
        3,
        &[(ALL3, 1), (ALL3, 2), (&[1, 2, 4], 1), (&[1, 3, 4], 3)],
    );
    let cfg = PlannerConfig::default();
    let ops = plan(&m, &obs, &cfg);
    let first = ops[0].clone();
    assert!(
        matches!(first, Op::MoveReplica { from: 1, to: 4, .. }),
        "{ops:?}"
    );
    let moves = |ops: &[Op]| {
        ops.iter()
            .filter(|o| matches!(o, Op::MoveReplica { .. }))
            .count()
    };
    obs.in_flight = vec![first.clone()];
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(moves(&ops), 0, "the move in flight balances: {ops:?}");
    assert!(!planner::shown(&first, &m, &obs.leaders));
    // Half done (its learner in the map): counted once, not twice.
    with_learner(&mut m, &mut obs, first.range(), 4);
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(moves(&ops), 0, "{ops:?}");
    assert!(!planner::shown(&first, &m, &obs.leaders));
    // Done and shown: out of flight, nothing more to move.
    let mut next = 10_000;
    obs.in_flight.clear();
    carry_out(&mut m, &mut obs, &first, &mut next);
    assert!(planner::shown(&first, &m, &obs.leaders));
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(moves(&ops), 0, "{ops:?}");
    // A transfer in flight counts its leader where it goes.
    let t = Op::TransferLeader { range: 3, to: 4 };
    assert!(!planner::shown(&t, &m, &obs.leaders));
    obs.leaders.insert(3, 4);
    assert!(planner::shown(&t, &m, &obs.leaders));
}

/// A learner that no operation promoted for `stray_learner_timeout_ms`
/// (its move's driver died: a killed `ctl move-replica`, a meta leader
/// deposed mid-move) is removed; a younger one is left to its move. The
/// first sighting is kept across rounds, and a learner promoted or removed
/// leaves the list.
#[test]
fn a_learner_left_unpromoted_past_the_timeout_is_removed() {
    let (mut m, mut obs) = world(&active(1..=4), 3, &[(ALL3, 1)]);
    let mut d = m.ranges().iter().next().unwrap().clone();
    d.epoch.conf_ver += 1;
    d.replicas.push(RangeReplica {
        replica: 999,
        node: 4,
        shard: 0,
        role: ReplicaRole::Learner,
    });
    assert!(m.apply(&MetaCmd::ReportRanges(vec![d])).is_ok());
    let cfg = PlannerConfig::default();
    note_learners(&m, &[], &mut obs.learners_since, NOW);
    assert_eq!(obs.learners_since.get(&(1, 999)), Some(&NOW));
    assert_eq!(plan(&m, &obs, &cfg), vec![]);
    let at = |obs: &mut Observed, t: u64| {
        obs.now_ms = t;
        for h in obs.heartbeat_ms.values_mut() {
            *h = t;
        }
    };
    at(&mut obs, NOW + cfg.stray_learner_timeout_ms);
    note_learners(&m, &[], &mut obs.learners_since, obs.now_ms);
    assert_eq!(obs.learners_since.get(&(1, 999)), Some(&NOW), "first seen");
    assert_eq!(plan(&m, &obs, &cfg), vec![], "not past the timeout yet");
    at(&mut obs, NOW + cfg.stray_learner_timeout_ms + 1);
    assert_eq!(
        plan(&m, &obs, &cfg),
        vec![Op::RemoveReplica { range: 1, node: 4 }]
    );
    // Node 4 busy with as many operations as it may take: not now.
    obs.in_flight = vec![
        Op::AddReplica { range: 7, node: 4 },
        Op::AddReplica { range: 8, node: 4 },
    ];
    assert_eq!(plan(&m, &obs, &cfg), vec![]);
    // Gone from the map (promoted, or removed): gone from the list.
    let (fresh, _) = world(&active(1..=4), 3, &[(ALL3, 1)]);
    note_learners(&fresh, &[], &mut obs.learners_since, obs.now_ms);
    assert!(obs.learners_since.is_empty());
}

/// Adds a learner of range `range` on `node` to the map (as a move cut
/// short leaves one), first seen now.
fn with_learner(m: &mut MetaState, obs: &mut Observed, range: u64, node: u64) {
    let mut d = m.ranges().get(range).unwrap().clone();
    d.epoch.conf_ver += 1;
    d.replicas.push(RangeReplica {
        replica: 900 + node,
        node,
        shard: 0,
        role: ReplicaRole::Learner,
    });
    assert!(m.apply(&MetaCmd::ReportRanges(vec![d])).is_ok());
    note_learners(m, &[], &mut obs.learners_since, obs.now_ms);
}

/// A move cut short (its driver died, or the meta leader running it lost
/// its leadership) leaves a learner no operation drives: the next
/// planner's move or addition onto a node takes that node first, resuming
/// the learner, over a node holding fewer replicas; a learner is never
/// the source of a move; and with the move done, the learner is a voter.
#[test]
fn a_learner_left_by_a_move_cut_short_is_resumed_not_seeded_again() {
    // Drain: node 1 decommissioning, its range 1 half moved to node 5
    // (node 4 holds fewer replicas).
    let nodes = [
        (1, NodeState::Decommissioning),
        (2, NodeState::Active),
        (3, NodeState::Active),
        (4, NodeState::Active),
        (5, NodeState::Active),
    ];
    let (mut m, mut obs) = world(&nodes, 3, &[(ALL3, 2), (&[2, 3, 5], 2)]);
    with_learner(&mut m, &mut obs, 1, 5);
    let cfg = PlannerConfig::default();
    let mv = |range, from, to| Op::MoveReplica { range, from, to };
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(ops.first(), Some(&mv(1, 1, 5)), "{ops:?}");
    // While the move runs (in flight), its learner is its own.
    obs.in_flight = vec![mv(1, 1, 5)];
    let ops = plan(&m, &obs, &cfg);
    assert!(ops.iter().all(|op| op.range() != 1), "{ops:?}");
    obs.in_flight.clear();
    let mut next = 10_000;
    carry_out(&mut m, &mut obs, &mv(1, 1, 5), &mut next);
    let d = m.ranges().get(1).unwrap();
    let mut on: Vec<(u64, ReplicaRole)> = d.replicas.iter().map(|r| (r.node, r.role)).collect();
    on.sort_by_key(|x| x.0);
    let v = ReplicaRole::Voter;
    assert_eq!(on, vec![(2, v), (3, v), (5, v)]);
    // Repair: a range a voter short, with a learner on node 4 (node 5
    // holds fewer): the learner is promoted.
    let (mut m, mut obs) = world(&active(1..=5), 3, &[(&[1, 2], 1), (ALL3, 1), (ALL3, 2)]);
    with_learner(&mut m, &mut obs, 1, 4);
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(
        ops.first(),
        Some(&Op::AddReplica { range: 1, node: 4 }),
        "{ops:?}"
    );
    // Balance: nodes 4-6 joined; range 6's move to node 6 was cut short.
    // That move is planned first, and node 1 is not also sent a second
    // replica on node 6's count (the learner is counted once).
    let ranges: Vec<(&[u64], u64)> = (0..6).map(|i| (ALL3, 1 + i % 3)).collect();
    let (mut m, mut obs) = world(&active(1..=6), 3, &ranges);
    with_learner(&mut m, &mut obs, 6, 6);
    let ops = plan(&m, &obs, &cfg);
    let onto_6: Vec<&Op> = ops
        .iter()
        .filter(|op| matches!(op, Op::MoveReplica { to: 6, .. }))
        .collect();
    assert!(
        matches!(onto_6.first(), Some(Op::MoveReplica { range: 6, .. })),
        "{ops:?}"
    );
    // A learner on a draining node is removed, not moved.
    let nodes = [
        (1, NodeState::Active),
        (2, NodeState::Active),
        (3, NodeState::Active),
        (4, NodeState::Decommissioning),
        (5, NodeState::Active),
    ];
    let (mut m, mut obs) = world(&nodes, 3, &[(ALL3, 1)]);
    with_learner(&mut m, &mut obs, 1, 4);
    assert_eq!(
        plan(&m, &obs, &cfg),
        vec![Op::RemoveReplica { range: 1, node: 4 }]
    );
    // A learner is not a move's source (the move primitive refuses it).
    let (mut m, mut obs) = world(&active(1..=4), 3, &[(ALL3, 1), (ALL3, 2), (ALL3, 3)]);
    with_learner(&mut m, &mut obs, 1, 4);
    for op in plan(&m, &obs, &cfg) {
        assert!(!matches!(op, Op::MoveReplica { from: 4, .. }), "{op:?}");
    }
}

#[test]
fn a_dead_nodes_replicas_move_after_the_timeout_only_and_a_few_at_a_time() {
    // Four nodes, three replicas each, one leader each: balanced.
    let (m, mut obs) = world(
        &active(1..=4),
        3,
        &[
            (&[1, 2, 3], 1),
            (&[2, 3, 4], 2),
            (&[1, 3, 4], 3),
            (&[1, 2, 4], 4),
        ],
    );
    let cfg = PlannerConfig::default();
    assert_eq!(plan(&m, &obs, &cfg), vec![]);
    // Node 3 silent, but for less than the timeout: nothing yet (a
    // restart, a pause).
    obs.heartbeat_ms.insert(3, NOW - cfg.dead_node_timeout_ms);
    assert_eq!(plan(&m, &obs, &cfg), vec![]);
    // Dead: its follower replicas go to the one node without one; range
    // 3, which it led, waits for its election.
    obs.heartbeat_ms
        .insert(3, NOW - cfg.dead_node_timeout_ms - 1);
    let mv = |range, to| Op::MoveReplica { range, from: 3, to };
    assert_eq!(plan(&m, &obs, &cfg), vec![mv(1, 4), mv(2, 1)]);
    // Range 3 elected node 1: now it moves too, two at a time per node
    // (`moves_per_node_max`: node 3 is in two moves already).
    obs.leaders.insert(3, 1);
    obs.in_flight = vec![mv(1, 4)];
    assert_eq!(plan(&m, &obs, &cfg), vec![mv(2, 1)]);
    obs.in_flight = vec![mv(1, 4), mv(2, 1)];
    assert_eq!(plan(&m, &obs, &cfg), vec![]);
    // A new meta leader counts every node as heard from when it started.
    obs.in_flight.clear();
    obs.leaders.insert(3, 3);
    obs.heartbeat_ms.remove(&3);
    obs.since_ms = NOW - 1000;
    assert_eq!(plan(&m, &obs, &cfg), vec![]);
}

#[test]
fn a_decommissioning_node_hands_its_leaders_over_before_its_replicas_move() {
    let nodes = [
        (1, NodeState::Decommissioning),
        (2, NodeState::Active),
        (3, NodeState::Active),
        (4, NodeState::Active),
    ];
    let (m, obs) = world(&nodes, 3, &[(ALL3, 1), (ALL3, 2)]);
    let ops = plan(&m, &obs, &PlannerConfig::default());
    assert_eq!(
        ops,
        vec![
            Op::TransferLeader { range: 1, to: 2 },
            Op::MoveReplica {
                range: 2,
                from: 1,
                to: 4
            },
        ]
    );
}

#[test]
fn the_replication_factor_is_restored_in_both_directions() {
    // Raised to 5 on five nodes: each range gains a voter per round.
    let (m, obs) = world(&active(1..=5), 5, &[(ALL3, 1), (ALL3, 2)]);
    assert_eq!(
        plan(&m, &obs, &PlannerConfig::default()),
        vec![
            Op::AddReplica { range: 1, node: 4 },
            Op::AddReplica { range: 2, node: 5 },
        ]
    );
    // Lowered to 3: a voter that does not lead goes.
    let five: &[u64] = &[1, 2, 3, 4, 5];
    let (m, obs) = world(&active(1..=5), 3, &[(five, 5)]);
    assert_eq!(
        plan(&m, &obs, &PlannerConfig::default()),
        vec![Op::RemoveReplica { range: 1, node: 4 }]
    );
    // Mid-move (a joint configuration: 1 leaving, 4 coming in), four
    // voters are not one too many: nothing until the move ends.
    let four: &[u64] = &[1, 2, 3, 4];
    let (mut m, obs) = world(&active(1..=4), 3, &[(four, 2)]);
    let mut d = m.ranges().get(1).unwrap().clone();
    d.replicas[0].role = ReplicaRole::DemotingVoter;
    d.replicas[3].role = ReplicaRole::IncomingVoter;
    d.epoch.conf_ver += 1;
    m.apply(&MetaCmd::ReportRanges(vec![d])).unwrap();
    assert_eq!(plan(&m, &obs, &PlannerConfig::default()), vec![]);
    // No node to add one on: nothing (the range stays as it is).
    let (m, obs) = world(&active(1..=3), 5, &[(ALL3, 1)]);
    assert_eq!(plan(&m, &obs, &PlannerConfig::default()), vec![]);
}

#[test]
fn new_nodes_take_replicas_from_the_loaded_ones_but_not_leaders() {
    let ranges: Vec<(&[u64], u64)> = (0..6).map(|i| (ALL3, 1 + i % 3)).collect();
    let (m, obs) = world(&active(1..=6), 3, &ranges);
    let ops = plan(&m, &obs, &PlannerConfig::default());
    assert!(!ops.is_empty());
    for op in &ops {
        let Op::MoveReplica { range, from, to } = *op else {
            panic!("{op:?}")
        };
        assert!(from <= 3 && to >= 4, "{op:?}");
        assert_ne!(obs.leaders[&range], from, "a follower moves: {op:?}");
    }
    // At most `moves_per_node_max` per node.
    for n in 1..=6u64 {
        let touching = ops
            .iter()
            .filter(|op| matches!(op, Op::MoveReplica { from, to, .. } if *from == n || *to == n))
            .count();
        assert!(touching <= 2, "node {n}: {ops:?}");
    }
}

#[test]
fn leaders_spread_to_within_one_of_the_mean() {
    let ranges: Vec<(&[u64], u64)> = (0..6).map(|_| (ALL3, 1)).collect();
    let (m, obs) = world(&active(1..=3), 3, &ranges);
    let ops = plan(&m, &obs, &PlannerConfig::default());
    assert_eq!(
        ops,
        vec![
            Op::TransferLeader { range: 1, to: 2 },
            Op::TransferLeader { range: 2, to: 3 },
            Op::TransferLeader { range: 3, to: 2 },
            Op::TransferLeader { range: 4, to: 3 },
        ]
    );
}

/// Leaders at [2,1,1,0,1,1] where no range node 1 leads has a voter on
/// node 4: no direct transfer evens them (the stall the join test saw).
/// Two chained transfers do: one of node 1's ranges to a voter on node 2,
/// and one of node 2's ranges to its voter on node 4.
#[test]
fn leaders_even_out_through_a_chain_when_no_direct_transfer_can() {
    let (m, obs) = world(
        &active(1..=6),
        3,
        &[
            (&[1, 2, 3], 1),
            (&[1, 5, 6], 1),
            (&[2, 4, 6], 2),
            (&[3, 4, 5], 3),
            (&[4, 5, 2], 5),
            (&[6, 1, 3], 6),
        ],
    );
    let ops = plan(&m, &obs, &PlannerConfig::default());
    assert_eq!(
        ops,
        vec![
            Op::TransferLeader { range: 1, to: 2 },
            Op::TransferLeader { range: 3, to: 4 },
        ]
    );
}

#[test]
fn the_meta_groups_member_on_a_dead_or_draining_node_moves_first_one_at_a_time() {
    // Five nodes; the meta group on 1, 2 and 3; ranges on 1-3.
    let (m, mut obs) = world(
        &[
            (1, NodeState::Active),
            (2, NodeState::Decommissioning),
            (3, NodeState::Active),
            (4, NodeState::Active),
            (5, NodeState::Active),
        ],
        3,
        &[(ALL3, 1), (ALL3, 1)],
    );
    let cfg = PlannerConfig::default();
    // Not known: left alone (the ranges' repair alone).
    let ops = plan(&m, &obs, &cfg);
    assert!(
        !ops.iter().any(|o| matches!(o, Op::MoveMetaReplica { .. })),
        "{ops:?}"
    );
    obs.meta_members = vec![1, 2, 3];
    // Node 3 dead too: the lowest draining member first, to the
    // non-member holding fewest replicas (4 and 5 hold none: 4).
    obs.heartbeat_ms.insert(3, 0);
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(ops[0], Op::MoveMetaReplica { from: 2, to: 4 }, "{ops:?}");
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Op::MoveMetaReplica { .. }))
            .count(),
        1,
        "one meta move at a time: {ops:?}"
    );
    // While it is under way, no other.
    obs.in_flight = vec![Op::MoveMetaReplica { from: 2, to: 4 }];
    let ops = plan(&m, &obs, &cfg);
    assert!(
        !ops.iter().any(|o| matches!(o, Op::MoveMetaReplica { .. })),
        "{ops:?}"
    );
    // Done: the dead member next, to the one usable non-member left.
    obs.in_flight.clear();
    obs.meta_members = vec![1, 3, 4];
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(ops[0], Op::MoveMetaReplica { from: 3, to: 5 }, "{ops:?}");
    // No usable non-member: nothing for the meta group.
    obs.meta_members = vec![1, 3, 4, 5];
    let ops = plan(&m, &obs, &cfg);
    assert!(
        !ops.iter().any(|o| matches!(o, Op::MoveMetaReplica { .. })),
        "{ops:?}"
    );
}

/// A `move_meta_replica` cut short (its driver killed between adding the
/// learner and the joint change) leaves a learner in the meta group,
/// which the map's ranges do not show: it is taken over by the next move
/// of a meta member, removed at once from a leaving node, and otherwise
/// removed once it has waited `stray_learner_timeout_ms`.
#[test]
fn the_meta_groups_learner_left_by_a_move_cut_short_is_taken_over_or_removed() {
    use crate::route::META_GROUP;
    let nodes = [
        (1, NodeState::Active),
        (2, NodeState::Active),
        (3, NodeState::Active),
        (4, NodeState::Active),
        (5, NodeState::Active),
    ];
    // Node 4 holds a replica and node 5 none: without the learner on 4,
    // a meta move would go to 5 (fewest replicas first).
    let (m, mut obs) = world(&nodes, 3, &[(ALL3, 1), (&[1, 2, 4], 1)]);
    let cfg = PlannerConfig {
        stray_learner_timeout_ms: 5_000,
        ..PlannerConfig::default()
    };
    obs.meta_members = vec![1, 2, 3, 4];
    obs.meta_learners = vec![(4, 77)];
    note_learners(&m, &obs.meta_learners, &mut obs.learners_since, NOW);
    assert_eq!(obs.learners_since.get(&(META_GROUP, 77)), Some(&NOW));
    let meta_ops = |ops: Vec<Op>| -> Vec<Op> {
        ops.into_iter()
            .filter(|o| o.range() == META_GROUP)
            .collect()
    };
    // Young, and no member leaving: left alone (it may be a live move's).
    assert_eq!(meta_ops(plan(&m, &obs, &cfg)), vec![], "young");
    // Past the timeout: removed.
    obs.now_ms = NOW + cfg.stray_learner_timeout_ms + 1;
    assert_eq!(
        meta_ops(plan(&m, &obs, &cfg)),
        vec![Op::RemoveMetaLearner { node: 4 }]
    );
    // Not while its node is busy with as many moves as it may have.
    obs.in_flight = (0..cfg.moves_per_node_max)
        .map(|_| Op::AddReplica { range: 9, node: 4 })
        .collect();
    assert_eq!(meta_ops(plan(&m, &obs, &cfg)), vec![], "node 4 busy");
    obs.in_flight.clear();
    // Young again, and voter 2 leaving: the move takes the learner's node
    // over (not node 5, which holds fewer replicas).
    obs.now_ms = NOW;
    let mut m2 = m.clone();
    let set = MetaCmd::SetNodeState {
        node: 2,
        state: NodeState::Decommissioning,
    };
    m2.apply(&set).expect("node 2 drains");
    assert_eq!(
        meta_ops(plan(&m2, &obs, &cfg)),
        vec![Op::MoveMetaReplica { from: 2, to: 4 }]
    );
    // The learner's own node leaving: removed at once, however young.
    let mut m4 = m.clone();
    let set = MetaCmd::SetNodeState {
        node: 4,
        state: NodeState::Decommissioning,
    };
    m4.apply(&set).expect("node 4 drains");
    assert_eq!(
        meta_ops(plan(&m4, &obs, &cfg)),
        vec![Op::RemoveMetaLearner { node: 4 }]
    );
    // Gone (removed or promoted): it leaves the ages.
    note_learners(&m, &[], &mut obs.learners_since, NOW + 1);
    assert!(obs.learners_since.is_empty(), "{:?}", obs.learners_since);
}

#[test]
fn a_suspect_node_takes_no_new_replica_and_keeps_its_own() {
    // Range 1 is short a voter; nodes 4 and 5 hold none.
    let (m, mut obs) = world(&active(1..=5), 3, &[(&[1, 2], 1), (ALL3, 2)]);
    let cfg = PlannerConfig::default();
    assert_eq!(
        plan(&m, &obs, &cfg)[0],
        Op::AddReplica { range: 1, node: 4 }
    );
    // Node 4 missed a ping (silent past the suspect timeout, not dead):
    // the replica goes to 5, and nothing moves off 4.
    obs.heartbeat_ms
        .insert(4, NOW - cfg.suspect_node_timeout_ms - 1);
    assert_eq!(
        super::planner::health(&cfg, &obs, 4),
        super::planner::Health::Suspect
    );
    let ops = plan(&m, &obs, &cfg);
    assert_eq!(ops[0], Op::AddReplica { range: 1, node: 5 }, "{ops:?}");
    // Node 2 suspect: its replicas stay (a suspect is not draining).
    obs.heartbeat_ms
        .insert(2, NOW - cfg.suspect_node_timeout_ms - 1);
    let ops = plan(&m, &obs, &cfg);
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::MoveReplica { from: 2, .. })),
        "{ops:?}"
    );
}

#[test]
fn a_round_plans_at_most_ops_per_round_max() {
    let ranges: Vec<(&[u64], u64)> = (0..6).map(|_| (ALL3, 1)).collect();
    let (m, obs) = world(&active(1..=3), 3, &ranges);
    let cfg = PlannerConfig {
        ops_per_round_max: 3,
        ..PlannerConfig::default()
    };
    assert_eq!(plan(&m, &obs, &cfg).len(), 3);
}

/// Carries `op` out at once, as the range's leader would: the new
/// descriptor reported to the map (conf_ver + 1), leadership moved.
fn carry_out(m: &mut MetaState, obs: &mut Observed, op: &Op, next_replica: &mut u64) {
    if let Op::MoveMetaReplica { from, to } = *op {
        obs.meta_members.retain(|&n| n != from && n != to);
        obs.meta_learners.retain(|&(n, _)| n != to);
        obs.meta_members.push(to);
        return;
    }
    if let Op::RemoveMetaLearner { node } = *op {
        obs.meta_members.retain(|&n| n != node);
        obs.meta_learners.retain(|&(n, _)| n != node);
        return;
    }
    let mut d = m
        .ranges()
        .get(op.range())
        .cloned()
        .expect("planned on a held range");
    // Onto a learner: it is promoted (the move primitive adds none).
    let add = |d: &mut RangeDesc, node, next: &mut u64| {
        if let Some(r) = d.replicas.iter_mut().find(|r| r.node == node) {
            assert_eq!(r.role, ReplicaRole::Learner, "{op:?} onto a voter");
            r.role = ReplicaRole::Voter;
            return;
        }
        *next += 1;
        d.replicas.push(RangeReplica {
            replica: *next,
            node,
            shard: 0,
            role: ReplicaRole::Voter,
        });
    };
    match *op {
        Op::AddReplica { node, .. } => add(&mut d, node, next_replica),
        Op::RemoveReplica { node, .. } => d.replicas.retain(|r| r.node != node),
        Op::MoveReplica { from, to, range } => {
            add(&mut d, to, next_replica);
            d.replicas.retain(|r| r.node != from);
            if obs.leaders.get(&range) == Some(&from) {
                obs.leaders.insert(range, to);
            }
        }
        Op::TransferLeader { range, to } => {
            obs.leaders.insert(range, to);
            return;
        }
        Op::MoveMetaReplica { .. } | Op::RemoveMetaLearner { .. } => {
            unreachable!("carried out above")
        }
    }
    d.epoch.conf_ver += 1;
    assert_eq!(
        m.apply(&MetaCmd::ReportRanges(vec![d])),
        Ok(MetaReply::Reported { stale: vec![] })
    );
}

proptest! {
    /// Any cluster (3-8 nodes, some decommissioning or dead, RF 1-5,
    /// ranges on the first nodes with any leaders) converges: once the
    /// planner has nothing left, each range has min(RF, usable nodes)
    /// voters, all on live active nodes, replica counts differ by at most
    /// the tolerance or by 1, and no operation ever took a range below
    /// its voters or RF.
    #[test]
    fn planning_converges_and_never_drops_a_range_below_rf(
        nodes in 3u64..9,
        rf in 1u32..6,
        leaders in proptest::collection::vec(0u64..3, 1..14),
        states in proptest::collection::vec(0u8..6, 9),
    ) {
        let mut list = Vec::new();
        for id in 1..=nodes {
            let state = match states[id as usize] {
                0 => NodeState::Decommissioning,
                _ => NodeState::Active,
            };
            list.push((id, state));
        }
        // Keep at least RF usable nodes among the first three... or not:
        // the planner must also end where it cannot do more.
        let ranges: Vec<(&[u64], u64)> = leaders.iter().map(|&l| (ALL3, l + 1)).collect();
        let (mut m, mut obs) = world(&list, rf, &ranges);
        obs.meta_members = vec![1, 2, 3];
        let cfg = PlannerConfig::default();
        // Node `nodes` is dead when its state draw says 1.
        if states[0] == 1 {
            obs.heartbeat_ms.insert(nodes, 0);
            obs.since_ms = 0;
        }
        let usable: Vec<u64> = list
            .iter()
            .filter(|&&(id, s)| s == NodeState::Active && !(states[0] == 1 && id == nodes))
            .map(|&(id, _)| id)
            .collect();
        let mut next_replica = 10_000;
        let mut rounds = 0;
        loop {
            // A range led from the dead node elects a live voter, and its
            // report says so.
            if states[0] == 1 {
                for d in m.ranges().iter() {
                    if obs.leaders.get(&d.id) == Some(&nodes) {
                        if let Some(v) = d.voters().map(|r| r.node).find(|&n| n != nodes) {
                            obs.leaders.insert(d.id, v);
                        }
                    }
                }
            }
            let ops = plan(&m, &obs, &cfg);
            if ops.is_empty() {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 200, "no fixpoint: {:?}", ops);
            for op in &ops {
                if let Op::MoveMetaReplica { to, .. } = *op {
                    prop_assert!(usable.contains(&to) && !obs.meta_members.contains(&to), "{:?}", op);
                    carry_out(&mut m, &mut obs, op, &mut next_replica);
                    continue;
                }
                let before = m.ranges().get(op.range()).unwrap().voters().count();
                if let Op::RemoveReplica { .. } = op {
                    prop_assert!(before > rf as usize, "{:?} below RF", op);
                }
                carry_out(&mut m, &mut obs, op, &mut next_replica);
                let after = m.ranges().get(op.range()).unwrap().voters().count();
                prop_assert!(after >= before.min(rf as usize), "{:?}: {} -> {}", op, before, after);
            }
        }
        // The meta group's members end on usable nodes, as many as there
        // are usable nodes for (it never shrinks).
        let meta_usable = obs.meta_members.iter().filter(|n| usable.contains(n)).count();
        prop_assert_eq!(meta_usable, usable.len().min(3), "meta members {:?}, usable {:?}", obs.meta_members, usable);
        let want = (rf as usize).min(usable.len());
        let mut count = std::collections::BTreeMap::<u64, usize>::new();
        for d in m.ranges().iter() {
            let on: Vec<u64> = d.replicas.iter().map(|r| r.node).collect();
            if usable.len() >= 3 || rf as usize <= usable.len() {
                prop_assert!(on.iter().all(|n| usable.contains(n)), "range {} on {:?}, usable {:?}", d.id, on, usable);
                prop_assert_eq!(on.len(), want, "range {} on {:?}", d.id, on);
            }
            for n in on {
                *count.entry(n).or_default() += 1;
            }
        }
        if usable.is_empty() {
            return Ok(());
        }
        let counts: Vec<usize> = usable.iter().map(|n| count.get(n).copied().unwrap_or(0)).collect();
        let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        prop_assert!(
            hi - lo <= 1 || (hi as f64) <= mean * 1.1,
            "replica counts {:?} on {:?}", counts, usable
        );
    }
}
