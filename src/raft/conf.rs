//! Group membership: voters, learners, and joint consensus (thesis ch. 4).
//!
//! A change of voters goes through a joint configuration: the entry that
//! starts it makes `voters_outgoing` the old voters and `voters` the new ones;
//! while joint, every decision (election, commit, check-quorum, reads) needs
//! a majority of *both*. The leader leaves the joint configuration with an
//! empty change as soon as it applies the entering one. Adding or removing
//! only learners needs no joint step. A configuration takes effect when its
//! entry is applied (handed out committed), as in etcd/raft.

use super::types::{Index, NodeId};

/// Who is in the group.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ConfState {
    /// Voters (the incoming ones while joint). Sorted.
    pub voters: Vec<NodeId>,
    /// The outgoing voters while joint; empty otherwise. Sorted.
    pub voters_outgoing: Vec<NodeId>,
    /// Non-voting members: they receive the log, never vote, never count.
    pub learners: Vec<NodeId>,
}

/// One step of a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChangeOp {
    /// Add a voter (a learner is promoted).
    AddVoter(NodeId),
    /// Add a learner.
    AddLearner(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

/// A membership change; no ops means "leave the joint configuration".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConfChange {
    pub ops: Vec<ConfChangeOp>,
}

/// Why a membership change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
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
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error("demoting a voter to learner is not supported (remove it, then add it as a learner)")]
    Demotion(NodeId),
    #[error("the change would leave no voters")]
    NoVoters,
    #[error("removing {removed} of {voters} voters at once would remove a majority")]
    RemovesMajority { removed: usize, voters: usize },
    #[error(
        "the new voters could not reach a quorum now (only {active} of {voters} recently active)"
    )]
    QuorumUnreachable { active: usize, voters: usize },
    #[error("learner {id} is {behind} entries behind (promote_lag_entries_max = {max})")]
    NotCaughtUp { id: NodeId, behind: u64, max: u64 },
    #[error("adding node {0} needs a snapshot to seed it with: take one first (compact)")]
    NoSnapshot(NodeId),
    #[error("malformed membership change entry: {0}")]
    Malformed(&'static str),
}

/// The value at least a majority of `set` reaches (u64::MAX for an empty set).
fn majority_value(set: &[NodeId], value: &impl Fn(NodeId) -> u64) -> u64 {
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

fn majority_yes(set: &[NodeId], yes: &impl Fn(NodeId) -> bool) -> bool {
    set.is_empty() || set.iter().filter(|&&id| yes(id)).count() > set.len() / 2
}

impl ConfState {
    pub fn new(voters: &[NodeId], learners: &[NodeId]) -> Self {
        let mut c = ConfState {
            voters: voters.to_vec(),
            voters_outgoing: Vec::new(),
            learners: learners.to_vec(),
        };
        c.voters.sort_unstable();
        c.learners.sort_unstable();
        c
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
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok() || self.voters_outgoing.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Every member, sorted.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self
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
    pub fn all_voters(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self
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
    pub fn quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        !self.voters.is_empty()
            && majority_yes(&self.voters, &yes)
            && majority_yes(&self.voters_outgoing, &yes)
    }

    /// Does a majority of either configuration say no (so "yes" can no longer win)?
    pub fn quorum_lost(&self, no: impl Fn(NodeId) -> bool) -> bool {
        let lost = |set: &[NodeId]| {
            !set.is_empty() && set.iter().filter(|&&id| no(id)).count() > set.len() / 2
        };
        lost(&self.voters) || lost(&self.voters_outgoing)
    }

    /// The highest value a quorum has reached (e.g. the commit index from
    /// match indexes): the smaller of the two majorities' while joint.
    pub fn quorum_value(&self, value: impl Fn(NodeId) -> u64) -> u64 {
        if self.voters.is_empty() {
            return 0;
        }
        majority_value(&self.voters, &value).min(majority_value(&self.voters_outgoing, &value))
    }

    /// The configuration after `cc`, or why it is not allowed.
    pub fn apply(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if cc.ops.is_empty() {
            if !self.is_joint() {
                return Err(ConfChangeError::NotJoint);
            }
            let mut c = self.clone();
            c.voters_outgoing.clear();
            return Ok(c);
        }
        if self.is_joint() {
            return Err(ConfChangeError::InJoint);
        }
        let mut c = self.clone();
        for op in &cc.ops {
            match *op {
                ConfChangeOp::AddVoter(id) => {
                    if c.voters.contains(&id) {
                        return Err(ConfChangeError::AlreadyVoter(id));
                    }
                    c.learners.retain(|&l| l != id);
                    c.voters.push(id);
                }
                ConfChangeOp::AddLearner(id) => {
                    if c.voters.contains(&id) {
                        return Err(ConfChangeError::Demotion(id));
                    }
                    if !c.learners.contains(&id) {
                        c.learners.push(id);
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
        Ok(c)
    }
}

const CONF_CHANGE_VERSION: u8 = 1;

impl ConfChange {
    /// layout = { version u8 = 1 | count u8 | count × (kind u8 | id u64 LE) }
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.ops.len() <= u8::MAX as usize,
            "at most 255 ops in one change"
        );
        let mut b = Vec::with_capacity(2 + 9 * self.ops.len());
        b.push(CONF_CHANGE_VERSION);
        b.push(self.ops.len() as u8);
        for op in &self.ops {
            let (k, id) = match *op {
                ConfChangeOp::AddVoter(id) => (0u8, id),
                ConfChangeOp::AddLearner(id) => (1, id),
                ConfChangeOp::Remove(id) => (2, id),
            };
            b.push(k);
            b.extend_from_slice(&id.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<ConfChange, ConfChangeError> {
        let [v, n, rest @ ..] = b else {
            return Err(ConfChangeError::Malformed("shorter than its header"));
        };
        if *v != CONF_CHANGE_VERSION {
            return Err(ConfChangeError::Malformed("unknown version"));
        }
        if rest.len() != *n as usize * 9 {
            return Err(ConfChangeError::Malformed(
                "length does not match its op count",
            ));
        }
        let ops = rest
            .chunks_exact(9)
            .map(|c| {
                let id = u64::from_le_bytes(c[1..9].try_into().expect("9-byte chunk"));
                match c[0] {
                    0 => Ok(ConfChangeOp::AddVoter(id)),
                    1 => Ok(ConfChangeOp::AddLearner(id)),
                    2 => Ok(ConfChangeOp::Remove(id)),
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
                ConfChangeOp::AddVoter(4),
                ConfChangeOp::AddVoter(5),
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
        let m = |id: NodeId| [0, 9, 9, 5, 7, 7][id as usize];
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
                ops: vec![ConfChangeOp::AddLearner(4)],
            })
            .unwrap();
        assert!(!l.is_joint() && l.is_learner(4) && !l.is_voter(4));
        assert_eq!(
            l.apply(&ConfChange {
                ops: vec![ConfChangeOp::AddLearner(1)]
            }),
            Err(ConfChangeError::Demotion(1))
        );
        assert_eq!(
            c.apply(&ConfChange::default()),
            Err(ConfChangeError::NotJoint)
        );
        let j = c
            .apply(&ConfChange {
                ops: vec![ConfChangeOp::AddVoter(4)],
            })
            .unwrap();
        assert_eq!(
            j.apply(&ConfChange {
                ops: vec![ConfChangeOp::AddVoter(5)]
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
            let voters: Vec<NodeId> = (1..=n).collect();
            let c = ConfState::new(&voters, &[]);
            // Node i has value i: a majority reaches n - n/2.
            assert_eq!(c.quorum_value(|id| id), n - n / 2, "{n} voters");
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let cc = ConfChange {
            ops: vec![ConfChangeOp::AddVoter(7), ConfChangeOp::Remove(u64::MAX)],
        };
        assert_eq!(ConfChange::decode(&cc.encode()), Ok(cc));
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[9, 0]).is_err());
        assert!(ConfChange::decode(&[1, 1, 0]).is_err());
        assert!(ConfChange::decode(&[1, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
