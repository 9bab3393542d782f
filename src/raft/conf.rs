//! Group membership: voters, learners, and joint consensus (thesis ch. 4).
//!
//! A change of voters goes through a joint configuration: the entry that
//! starts it makes `voters_outgoing` the old voters and `voters` the new ones;
//! while joint, every decision (election, commit, check-quorum, reads) needs
//! a majority of *both*. The leader leaves the joint configuration with an
//! empty change as soon as it applies the entering one. Adding or removing
//! only learners needs no joint step. A configuration takes effect when its
//! entry is applied (handed out committed), as in etcd/raft.
//!
//! Members are replicas, named by replica ids the group allocates once and
//! never reuses (`next_replica_id`, CockroachDB's `NextReplicaID`): a
//! replica removed and its node added again is a new replica with a new id,
//! so nothing sent to or by the old one (a vote, an acknowledgement) can
//! count for the new one. Where each replica lives is part of the
//! membership (`placements`), replicated with it and carried by snapshots.

use super::types::{Index, NodeId, ReplicaId};

/// Where a member replica lives.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Placement {
    pub replica: ReplicaId,
    pub node: NodeId,
}

/// Who is in the group.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ConfState {
    /// Voters (the incoming ones while joint). Sorted.
    pub voters: Vec<ReplicaId>,
    /// The outgoing voters while joint; empty otherwise. Sorted.
    pub voters_outgoing: Vec<ReplicaId>,
    /// Non-voting members: they receive the log, never vote, never count.
    pub learners: Vec<ReplicaId>,
    /// The node of every member (of both configurations while joint),
    /// sorted by replica id; one member per node.
    pub placements: Vec<Placement>,
    /// The id the next added replica gets: above every replica id the group
    /// ever had (0 while no membership is known).
    pub next_replica_id: ReplicaId,
}

/// One step of a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChangeOp {
    /// Add a voter on `node` (a learner `replica` is promoted: `node` must
    /// be where it lives). A new replica's id is at least `next_replica_id`.
    AddVoter { replica: ReplicaId, node: NodeId },
    /// Add a learner on `node` (a new replica id, at least `next_replica_id`).
    AddLearner { replica: ReplicaId, node: NodeId },
    /// Remove a voter or a learner.
    Remove(ReplicaId),
}

/// A membership change; no ops means "leave the joint configuration".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConfChange {
    pub ops: Vec<ConfChangeOp>,
}

/// Why a membership change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("not the leader (leader hint: replica {leader:?})")]
    NotLeader { leader: Option<ReplicaId> },
    #[error("a membership change is already in progress (entry {pending} not applied yet)")]
    InProgress { pending: Index },
    #[error("this leader has not committed an entry of its term yet; retry shortly")]
    NotReady,
    #[error("the group is in a joint configuration; it must leave it first")]
    InJoint,
    #[error("the group is not in a joint configuration")]
    NotJoint,
    #[error("leadership is being transferred; retry after it is done")]
    TransferInProgress,
    #[error("replica {0} is already a voter")]
    AlreadyVoter(ReplicaId),
    #[error("replica {0} is not a member")]
    NotMember(ReplicaId),
    #[error("demoting a voter to learner is not supported (remove it, then add it as a learner)")]
    Demotion(ReplicaId),
    #[error("the change would leave no voters")]
    NoVoters,
    #[error("removing {removed} of {voters} voters at once would remove a majority")]
    RemovesMajority { removed: usize, voters: usize },
    #[error(
        "the new voters could not reach a quorum now (only {active} of {voters} recently active)"
    )]
    QuorumUnreachable { active: usize, voters: usize },
    #[error(
        "learner {0} has acknowledged no entry yet (it waits for its seeding snapshot); promote it once it has caught up"
    )]
    NotSeeded(ReplicaId),
    #[error("learner {id} is {behind} entries behind (promote_lag_entries_max = {max})")]
    NotCaughtUp {
        id: ReplicaId,
        behind: u64,
        max: u64,
    },
    #[error("adding replica {0} needs a snapshot to seed it with: take one first (compact)")]
    NoSnapshot(ReplicaId),
    #[error(
        "replica id {replica} was allocated before (the next one is {next}): ids are never reused"
    )]
    ReplicaIdReused { replica: ReplicaId, next: ReplicaId },
    #[error("node {node} already holds replica {holds} of the group")]
    NodeHostsReplica { node: NodeId, holds: ReplicaId },
    #[error("replica {replica} lives on node {lives}, not on node {node}")]
    WrongNode {
        replica: ReplicaId,
        node: NodeId,
        lives: NodeId,
    },
    #[error("malformed membership change entry: {0}")]
    Malformed(&'static str),
}

/// The value at least a majority of `set` reaches (u64::MAX for an empty set).
fn majority_value(set: &[ReplicaId], value: &impl Fn(ReplicaId) -> u64) -> u64 {
    if set.is_empty() {
        return u64::MAX;
    }
    // Called on every acknowledgement: no allocation for groups of up to
    // SMALL_GROUP voters (all practical ones).
    const SMALL_GROUP: usize = 16;
    if set.len() <= SMALL_GROUP {
        let mut v = [0u64; SMALL_GROUP];
        for (slot, &id) in v.iter_mut().zip(set) {
            *slot = value(id);
        }
        let v = &mut v[..set.len()];
        v.sort_unstable_by(|a, b| b.cmp(a));
        return v[set.len() / 2];
    }
    let mut v: Vec<u64> = set.iter().map(|&id| value(id)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v[set.len() / 2]
}

fn majority_yes(set: &[ReplicaId], yes: &impl Fn(ReplicaId) -> bool) -> bool {
    set.is_empty() || set.iter().filter(|&&id| yes(id)).count() > set.len() / 2
}

impl ConfState {
    /// A founding membership: each founding replica's id is its node's id
    /// (a group's first replicas are placed before any id is allocated);
    /// replicas added later get ids above them all.
    pub fn new(voters: &[ReplicaId], learners: &[ReplicaId]) -> Self {
        Self::on_their_ids(voters, &[], learners)
    }

    /// A membership whose every member lives on the node of its own id: a
    /// founding one ([`new`](Self::new)), or one written when replica ids
    /// were node ids (snapshot files of version 1). `next_replica_id` is
    /// above them all.
    pub fn on_their_ids(
        voters: &[ReplicaId],
        voters_outgoing: &[ReplicaId],
        learners: &[ReplicaId],
    ) -> Self {
        let mut c = ConfState {
            voters: voters.to_vec(),
            voters_outgoing: voters_outgoing.to_vec(),
            learners: learners.to_vec(),
            placements: Vec::new(),
            next_replica_id: 0,
        };
        c.voters.sort_unstable();
        c.voters_outgoing.sort_unstable();
        c.learners.sort_unstable();
        c.placements = c
            .members()
            .into_iter()
            .map(|r| Placement {
                replica: r,
                node: r,
            })
            .collect();
        c.next_replica_id = c.placements.last().map_or(0, |p| p.replica + 1);
        debug_assert!(c.placements_consistent(), "{c:?}");
        c
    }

    /// The invariant of `placements` and `next_replica_id`: exactly one
    /// placement per member, sorted by replica id, no node twice, and
    /// every placed id below `next_replica_id`. Checked after every change
    /// and on a snapshot file read back.
    pub fn placements_consistent(&self) -> bool {
        let sorted = self
            .placements
            .windows(2)
            .all(|w| w[0].replica < w[1].replica);
        let placed: Vec<ReplicaId> = self.placements.iter().map(|p| p.replica).collect();
        let mut nodes: Vec<NodeId> = self.placements.iter().map(|p| p.node).collect();
        nodes.sort_unstable();
        let nodes_unique = nodes.windows(2).all(|w| w[0] != w[1]);
        let below_next = placed.last().is_none_or(|&r| r < self.next_replica_id);
        sorted && nodes_unique && below_next && placed == self.members()
    }

    /// The node replica `replica` lives on, if it is a member.
    pub fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
        self.placements
            .binary_search_by_key(&replica, |p| p.replica)
            .ok()
            .map(|i| self.placements[i].node)
    }

    /// The member replica that lives on `node`, if any.
    pub fn replica_on(&self, node: NodeId) -> Option<ReplicaId> {
        self.placements
            .iter()
            .find(|p| p.node == node)
            .map(|p| p.replica)
    }

    /// The nodes of every member, sorted.
    pub fn member_nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.placements.iter().map(|p| p.node).collect();
        v.sort_unstable();
        v
    }

    /// No voter and no learner: a replica that joined and waits for its
    /// leader's snapshot to learn the membership.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.learners.is_empty()
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// A voter of the incoming or the outgoing configuration.
    pub fn is_voter(&self, id: ReplicaId) -> bool {
        self.voters.binary_search(&id).is_ok() || self.voters_outgoing.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: ReplicaId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Every member, sorted.
    pub fn members(&self) -> Vec<ReplicaId> {
        let mut m: Vec<ReplicaId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// Every voter of either configuration, sorted.
    pub fn all_voters(&self) -> Vec<ReplicaId> {
        let mut m: Vec<ReplicaId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .copied()
            .collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// Does a majority of the voters (of both configurations, while joint) say yes?
    pub fn quorum(&self, yes: impl Fn(ReplicaId) -> bool) -> bool {
        !self.voters.is_empty()
            && majority_yes(&self.voters, &yes)
            && majority_yes(&self.voters_outgoing, &yes)
    }

    /// Does a majority of either configuration say no (so "yes" can no longer win)?
    pub fn quorum_lost(&self, no: impl Fn(ReplicaId) -> bool) -> bool {
        let lost = |set: &[ReplicaId]| {
            !set.is_empty() && set.iter().filter(|&&id| no(id)).count() > set.len() / 2
        };
        lost(&self.voters) || lost(&self.voters_outgoing)
    }

    /// The highest value a quorum has reached (e.g. the commit index from
    /// match indexes): the smaller of the two majorities' while joint.
    pub fn quorum_value(&self, value: impl Fn(ReplicaId) -> u64) -> u64 {
        if self.voters.is_empty() {
            return 0;
        }
        majority_value(&self.voters, &value).min(majority_value(&self.voters_outgoing, &value))
    }

    /// The configuration after `cc`, or why it is not allowed.
    pub fn apply(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        self.apply_with(cc, false)
    }

    /// [`apply`](Self::apply) for a committed entry of version 1, written
    /// when replica ids were node ids and chosen by operators: an id below
    /// `next_replica_id` (a node id added out of order, or a removed node
    /// added back) is taken as it is, and `next_replica_id` moves above it.
    /// A committed entry must apply on replay as it did when it committed.
    pub fn apply_legacy(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        self.apply_with(cc, true)
    }

    /// The configuration after the committed, encoded entry `data`
    /// (either version).
    pub fn apply_entry(&self, data: &[u8]) -> Result<ConfState, ConfChangeError> {
        let cc = ConfChange::decode(data)?;
        self.apply_with(&cc, ConfChange::is_legacy(data))
    }

    fn apply_with(&self, cc: &ConfChange, legacy: bool) -> Result<ConfState, ConfChangeError> {
        if cc.ops.is_empty() {
            if !self.is_joint() {
                return Err(ConfChangeError::NotJoint);
            }
            let mut c = self.clone();
            c.voters_outgoing.clear();
            c.prune_placements();
            debug_assert!(c.placements_consistent(), "{c:?}");
            return Ok(c);
        }
        if self.is_joint() {
            return Err(ConfChangeError::InJoint);
        }
        let mut c = self.clone();
        for op in &cc.ops {
            match *op {
                ConfChangeOp::AddVoter { replica, node } => {
                    if c.voters.contains(&replica) {
                        return Err(ConfChangeError::AlreadyVoter(replica));
                    }
                    if c.learners.contains(&replica) {
                        c.check_lives_on(replica, node)?;
                        c.learners.retain(|&l| l != replica);
                    } else {
                        c.place(replica, node, legacy)?;
                    }
                    c.voters.push(replica);
                }
                ConfChangeOp::AddLearner { replica, node } => {
                    if c.voters.contains(&replica) {
                        return Err(ConfChangeError::Demotion(replica));
                    }
                    if c.learners.contains(&replica) {
                        c.check_lives_on(replica, node)?;
                    } else {
                        c.place(replica, node, legacy)?;
                        c.learners.push(replica);
                    }
                }
                ConfChangeOp::Remove(id) => {
                    if !c.voters.contains(&id) && !c.learners.contains(&id) {
                        return Err(ConfChangeError::NotMember(id));
                    }
                    c.voters.retain(|&v| v != id);
                    c.learners.retain(|&l| l != id);
                }
            }
        }
        c.voters.sort_unstable();
        c.learners.sort_unstable();
        if c.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        if c.voters != self.voters {
            // Voters change: through a joint configuration.
            c.voters_outgoing = self.voters.clone();
        }
        c.prune_placements();
        debug_assert!(c.placements_consistent(), "{c:?}");
        Ok(c)
    }

    fn check_lives_on(&self, replica: ReplicaId, node: NodeId) -> Result<(), ConfChangeError> {
        match self.node_of(replica) {
            Some(lives) if lives != node => Err(ConfChangeError::WrongNode {
                replica,
                node,
                lives,
            }),
            _ => Ok(()),
        }
    }

    /// Places new replica `replica` on `node`: a fresh id, a node without
    /// a replica of the group.
    fn place(
        &mut self,
        replica: ReplicaId,
        node: NodeId,
        legacy: bool,
    ) -> Result<(), ConfChangeError> {
        if (replica < self.next_replica_id && !legacy) || replica == 0 {
            return Err(ConfChangeError::ReplicaIdReused {
                replica,
                next: self.next_replica_id,
            });
        }
        if let Some(holds) = self.replica_on(node) {
            if legacy && holds == replica {
                // Version 1's demotion: Remove(x) then AddLearner(x) in one
                // change (x keeps its place until the change completes).
                return Ok(());
            }
            return Err(ConfChangeError::NodeHostsReplica { node, holds });
        }
        let at = self.placements.partition_point(|p| p.replica < replica);
        self.placements.insert(at, Placement { replica, node });
        self.next_replica_id = self.next_replica_id.max(replica + 1);
        Ok(())
    }

    /// Keeps the placements of members only (a replica removed from both
    /// configurations is forgotten; its id stays used).
    fn prune_placements(&mut self) {
        let members = self.members();
        self.placements
            .retain(|p| members.binary_search(&p.replica).is_ok());
    }
}

const CONF_CHANGE_VERSION: u8 = 2;
/// Entries written before replicas had their own ids: a replica's id was
/// its node's (decoded with `node = replica`).
const CONF_CHANGE_VERSION_NODE_IDS: u8 = 1;

impl ConfChange {
    /// Whether encoded entry `b` is of version 1 (apply it with
    /// [`ConfState::apply_legacy`]).
    pub fn is_legacy(b: &[u8]) -> bool {
        b.first() == Some(&CONF_CHANGE_VERSION_NODE_IDS)
    }

    /// layout = { version u8 = 2 | count u8 | count × (kind u8 | replica u64 LE | node u64 LE) }
    /// (node 0 for a removal). Version 1: `count × (kind u8 | id u64 LE)`.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.ops.len() <= u8::MAX as usize,
            "at most 255 ops in one change"
        );
        let mut b = Vec::with_capacity(2 + 17 * self.ops.len());
        b.push(CONF_CHANGE_VERSION);
        b.push(self.ops.len() as u8);
        for op in &self.ops {
            let (k, replica, node) = match *op {
                ConfChangeOp::AddVoter { replica, node } => (0u8, replica, node),
                ConfChangeOp::AddLearner { replica, node } => (1, replica, node),
                ConfChangeOp::Remove(id) => (2, id, 0),
            };
            b.push(k);
            b.extend_from_slice(&replica.to_le_bytes());
            b.extend_from_slice(&node.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<ConfChange, ConfChangeError> {
        let [v, n, rest @ ..] = b else {
            return Err(ConfChangeError::Malformed("shorter than its header"));
        };
        let op_bytes = match *v {
            CONF_CHANGE_VERSION => 17,
            CONF_CHANGE_VERSION_NODE_IDS => 9,
            _ => return Err(ConfChangeError::Malformed("unknown version")),
        };
        if rest.len() != *n as usize * op_bytes {
            return Err(ConfChangeError::Malformed(
                "length does not match its op count",
            ));
        }
        let u64at = |c: &[u8], at: usize| {
            u64::from_le_bytes(c[at..at + 8].try_into().expect("8-byte field"))
        };
        let ops = rest
            .chunks_exact(op_bytes)
            .map(|c| {
                let replica = u64at(c, 1);
                let node = if op_bytes == 17 { u64at(c, 9) } else { replica };
                match c[0] {
                    0 => Ok(ConfChangeOp::AddVoter { replica, node }),
                    1 => Ok(ConfChangeOp::AddLearner { replica, node }),
                    2 => Ok(ConfChangeOp::Remove(replica)),
                    _ => Err(ConfChangeError::Malformed("unknown op kind")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConfChange { ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joint_quorum_needs_both_majorities() {
        let c = ConfState::new(&[1, 2, 3], &[]).apply(&ConfChange {
            ops: vec![
                ConfChangeOp::AddVoter {
                    replica: 4,
                    node: 4,
                },
                ConfChangeOp::AddVoter {
                    replica: 5,
                    node: 5,
                },
                ConfChangeOp::Remove(1),
            ],
        });
        let c = c.unwrap();
        assert_eq!(c.voters, vec![2, 3, 4, 5]);
        assert_eq!(c.voters_outgoing, vec![1, 2, 3]);
        // {1,2,3} majority of old, but 2 of 4 new: no.
        assert!(!c.quorum(|id| [1, 2, 3].contains(&id)));
        // {4,5,2} majority of new, but only 2 of old: no.
        assert!(!c.quorum(|id| [2, 4, 5].contains(&id)));
        assert!(c.quorum(|id| [2, 3, 4].contains(&id)));
        let m = |id: ReplicaId| [0, 9, 9, 5, 7, 7][id as usize];
        // old majority reaches 9 (1, 2), new majority (2,4,5 reach >= 7): min = 7.
        assert_eq!(c.quorum_value(m), 7);
        let left = c.apply(&ConfChange::default()).unwrap();
        assert!(!left.is_joint());
    }

    #[test]
    fn learner_changes_need_no_joint_step_and_rules_are_enforced() {
        let c = ConfState::new(&[1, 2, 3], &[]);
        let l = c
            .apply(&ConfChange {
                ops: vec![ConfChangeOp::AddLearner {
                    replica: 4,
                    node: 4,
                }],
            })
            .unwrap();
        assert!(!l.is_joint() && l.is_learner(4) && !l.is_voter(4));
        assert_eq!(
            l.apply(&ConfChange {
                ops: vec![ConfChangeOp::AddLearner {
                    replica: 1,
                    node: 1
                }]
            }),
            Err(ConfChangeError::Demotion(1))
        );
        assert_eq!(
            c.apply(&ConfChange::default()),
            Err(ConfChangeError::NotJoint)
        );
        let j = c
            .apply(&ConfChange {
                ops: vec![ConfChangeOp::AddVoter {
                    replica: 4,
                    node: 4,
                }],
            })
            .unwrap();
        assert_eq!(
            j.apply(&ConfChange {
                ops: vec![ConfChangeOp::AddVoter {
                    replica: 5,
                    node: 5
                }]
            }),
            Err(ConfChangeError::InJoint)
        );
        let one = ConfState::new(&[1], &[]);
        assert_eq!(
            one.apply(&ConfChange {
                ops: vec![ConfChangeOp::Remove(1)]
            }),
            Err(ConfChangeError::NoVoters)
        );
    }

    #[test]
    fn quorum_value_is_the_same_for_small_and_large_groups() {
        for n in [1u64, 2, 3, 5, 16, 17, 31] {
            let voters: Vec<ReplicaId> = (1..=n).collect();
            let c = ConfState::new(&voters, &[]);
            // Node i has value i: a majority reaches n - n/2.
            assert_eq!(c.quorum_value(|id| id), n - n / 2, "{n} voters");
        }
    }

    #[test]
    fn replica_ids_are_never_reused_and_a_node_holds_one_replica() {
        let c = ConfState::new(&[1, 2, 3], &[]);
        assert_eq!(c.next_replica_id, 4);
        assert_eq!((c.node_of(2), c.replica_on(3)), (Some(2), Some(3)));
        let add = |c: &ConfState, replica, node| {
            c.apply(&ConfChange {
                ops: vec![ConfChangeOp::AddLearner { replica, node }],
            })
        };
        // Node 1 holds replica 1 already.
        assert_eq!(
            add(&c, 4, 1),
            Err(ConfChangeError::NodeHostsReplica { node: 1, holds: 1 })
        );
        // Remove replica 3 (node 3), then add node 3 back: an id below
        // next_replica_id is refused, a fresh one placed.
        let j = c
            .apply(&ConfChange {
                ops: vec![ConfChangeOp::Remove(3)],
            })
            .unwrap();
        assert_eq!(j.node_of(3), Some(3), "an outgoing voter keeps its place");
        let out = j.apply(&ConfChange::default()).unwrap();
        assert_eq!((out.node_of(3), out.replica_on(3)), (None, None));
        assert_eq!(
            add(&out, 3, 3),
            Err(ConfChangeError::ReplicaIdReused {
                replica: 3,
                next: 4
            })
        );
        let back = add(&out, 4, 3).unwrap();
        assert_eq!((back.node_of(4), back.replica_on(3)), (Some(3), Some(4)));
        assert_eq!(back.next_replica_id, 5);
        // A promotion names the node the learner lives on.
        let promote = |node| {
            back.apply(&ConfChange {
                ops: vec![ConfChangeOp::AddVoter { replica: 4, node }],
            })
        };
        assert_eq!(
            promote(9),
            Err(ConfChangeError::WrongNode {
                replica: 4,
                node: 9,
                lives: 3
            })
        );
        let p = promote(3).unwrap();
        assert_eq!(p.voters, vec![1, 2, 4]);
        assert_eq!(p.member_nodes(), vec![1, 2, 3]);
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let cc = ConfChange {
            ops: vec![
                ConfChangeOp::AddVoter {
                    replica: 7,
                    node: 7,
                },
                ConfChangeOp::Remove(u64::MAX),
            ],
        };
        assert_eq!(ConfChange::decode(&cc.encode()), Ok(cc));
        // Version 1 (before replica ids had their own): node = replica.
        let mut v1 = vec![1, 1, 1];
        v1.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(
            ConfChange::decode(&v1),
            Ok(ConfChange {
                ops: vec![ConfChangeOp::AddLearner {
                    replica: 5,
                    node: 5
                }]
            })
        );
        // Replayed as it committed: an id below next_replica_id is taken.
        let c = ConfState::new(&[1, 2, 3, 7], &[]);
        let cc = ConfChange::decode(&v1).unwrap();
        assert!(ConfChange::is_legacy(&v1));
        assert!(c.apply(&cc).is_err());
        let l = c.apply_legacy(&cc).unwrap();
        assert_eq!((l.node_of(5), l.next_replica_id), (Some(5), 8));
        // Version 1's demotion: remove 3 and add it back as a learner in
        // one change (found by review: it panicked on replay).
        let mut demote = vec![1, 2];
        for (kind, id) in [(2u8, 3u64), (1, 3)] {
            demote.push(kind);
            demote.extend_from_slice(&id.to_le_bytes());
        }
        let d = ConfState::new(&[1, 2, 3], &[])
            .apply_entry(&demote)
            .unwrap();
        assert_eq!(
            (d.voters_outgoing.clone(), d.learners.clone()),
            (vec![1, 2, 3], vec![3])
        );
        assert_eq!(d.node_of(3), Some(3));
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[9, 0]).is_err());
        assert!(ConfChange::decode(&[1, 1, 0]).is_err());
        assert!(ConfChange::decode(&[1, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
