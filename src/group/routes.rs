//! Where a replica's messages go: replicas are addressed by replica id
//! (`raft::ReplicaId`), nodes by node id, and the membership says where
//! each member lives (`ConfState::placements`). The shard and the
//! simulator route through this one module.
//!
//! Rules:
//! - A message goes to the node of its addressee: from the membership, or
//!   for a non-member, from the messages it sent ([`Routes::seen`]). None
//!   known: it is dropped (Raft resends what matters).
//! - An inbound message is stepped only if it is addressed to the replica
//!   hosted here, and a member sender lives on the node it came from.
//! - A message for a group not hosted here creates the replica only as
//!   [`creates_replica`] says (the rule in `shard/replicas.rs`).

use crate::raft::{Body, ConfState, Message, NodeId, Placement, ReplicaId};

/// Bound on [`Routes::seen`]: the non-members a replica answers at once (a
/// handful in practice: a new leader, a removed replica or two).
pub const ROUTES_SEEN_MAX: usize = 8;

/// Why a message from a peer is not stepped into its replica
/// ([`Routes::accept`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misrouted {
    /// Addressed to another replica of the group (a removed one that lived
    /// on this node, or a newer one not created here yet).
    OtherReplica,
    /// The sender is a member placed on another node than the one the
    /// message came from.
    WrongNode,
}

/// The nodes of non-members a replica heard from.
#[derive(Debug, Default, Clone)]
pub struct Routes {
    /// Replicas outside the membership this replica knows that sent it a
    /// message (a leader seeding it before it knows any membership, a
    /// candidate of a membership it has not applied, a removed replica to
    /// be told so), oldest first; at most [`ROUTES_SEEN_MAX`] (CockroachDB
    /// keeps a cache of replica descriptors from incoming messages alike).
    pub seen: Vec<Placement>,
}

impl Routes {
    /// The node replica `to` lives on, given membership `conf`.
    pub fn node_of(&self, conf: &ConfState, to: ReplicaId) -> Option<NodeId> {
        conf.node_of(to)
            .or_else(|| self.seen.iter().find(|p| p.replica == to).map(|p| p.node))
    }

    /// Checks message `m`, which came from node `from_node`, for replica
    /// `me` whose membership is `conf` (the rules at the top); a
    /// non-member sender's node is remembered to answer it.
    pub fn accept(
        &mut self,
        conf: &ConfState,
        me: ReplicaId,
        from_node: NodeId,
        m: &Message,
    ) -> Result<(), Misrouted> {
        if m.to != me {
            return Err(Misrouted::OtherReplica);
        }
        match conf.node_of(m.from) {
            Some(n) if n == from_node => Ok(()),
            Some(_) => Err(Misrouted::WrongNode),
            None => {
                let seen = Placement {
                    replica: m.from,
                    node: from_node,
                };
                match self.seen.iter().position(|p| p.replica == m.from) {
                    Some(i) => self.seen[i] = seen,
                    None => {
                        if self.seen.len() == ROUTES_SEEN_MAX {
                            self.seen.remove(0);
                        }
                        self.seen.push(seen);
                    }
                }
                Ok(())
            }
        }
    }
}

/// Whether message `m`, for a group not hosted on node `node` (or hosted
/// with an older replica id), may create the replica it is addressed to.
/// A leader's message to a member it knows holds nothing does: the first
/// chunk of a snapshot (a leader seeds every new member with one), or a
/// heartbeat carrying commit 0 (a heartbeat carries `min(commit, match)`:
/// 0 for a member that acknowledged nothing; the seeding snapshot may
/// have been lost, and the new replica's answer is what makes the leader
/// send it again). A leader sends either only to a member of its applied
/// — committed — membership, on the node that membership places it on. A
/// snapshot's own membership may predate the addition; if it names the
/// addressee, it must place it on `node`.
///
/// A vote request (PreVote or Vote) does too, and the empty replica it
/// makes votes (issue #18): a range split off its parent has no leader
/// yet, and a node whose parent replica installed a snapshot past the
/// split never makes the range from it; without its vote, the range has
/// no quorum once another of its replicas is lost (simulator: 3-node
/// split seeds 55 and 115 with a wiped disk). Safe because the replica
/// id was never used on this node (ids are never reused; a destroyed
/// replica leaves a tombstone the catalog checks; a wiped disk comes back
/// as a new store its peers refuse): it acknowledged nothing, so it is in
/// no quorum that committed an entry, and any voting quorum meets every
/// committing quorum in a replica with a real log, which votes only for a
/// candidate whose log is up to date (Raft §5.4.1). Its vote is durable
/// before it is sent, as every vote is. TiKV creates a peer from a vote
/// or a heartbeat with commit 0 (`is_initial_msg`), and its
/// uninitialized peers vote; CockroachDB creates one from any message to
/// a replica id above its tombstone, and lets uninitialized replicas vote
/// (cockroachdb/cockroach#95513). Appends and other heartbeats never
/// create one. The catalog (tombstones: a removed replica never comes
/// back) and the disk are checked when creating.
pub fn creates_replica(node: NodeId, m: &Message) -> bool {
    match &m.body {
        Body::Snapshot {
            offset: 0, conf, ..
        } => conf.node_of(m.to).is_none_or(|n| n == node),
        Body::Heartbeat { commit: 0, .. } | Body::PreVote { .. } | Body::Vote { .. } => true,
        _ => false,
    }
}

/// Whether a message that [`creates_replica`] waits an election timeout
/// of such messages before it creates one (a heartbeat with commit 0, a
/// vote request), rather than at once (a seeding snapshot): a node an
/// apply behind its range's split makes the new range from its own state
/// meanwhile, instead of empty (the shard's `heartbeat_creates`).
pub fn creation_waits(m: &Message) -> bool {
    matches!(
        m.body,
        Body::Heartbeat { .. } | Body::PreVote { .. } | Body::Vote { .. }
    )
}

/// Whether a split entry applied by `replica` on `node` makes the new
/// range here: only if `conf`, the parent's membership at the split's
/// index (the new range's first membership), places `replica` on `node`.
/// A replica added to the parent after the split (a learner seeded with
/// a snapshot from before it, replaying the split entry) is no member of
/// the new range: a replica made from it would hold an id the new
/// range's membership never gave (the range later gives that id, which
/// is at or above its `next_replica_id`, to a replica on another node),
/// hear from no leader, and block the replica the range adds on this
/// node (found by the simulator: 5-node balancer seed 429). The range's
/// leader adds one here, as any member, if the balancer wants one.
pub fn split_makes_replica(conf: &ConfState, node: NodeId, replica: ReplicaId) -> bool {
    conf.replica_on(node) == Some(replica)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_makes_the_new_range_only_on_the_members_of_its_index() {
        // A learner at the split's index is a member: it gets the range.
        let at_split = ConfState::new(&[1, 2, 3], &[4]);
        assert!(split_makes_replica(&at_split, 1, 1));
        assert!(split_makes_replica(&at_split, 4, 4));
        // Replica 5 on node 5, added after the split, replays it.
        assert!(!split_makes_replica(&at_split, 5, 5));
        // An id the membership places elsewhere.
        assert!(!split_makes_replica(&at_split, 2, 3));
    }

    fn msg(from: ReplicaId, to: ReplicaId) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: Body::HeartbeatResp { round: 0 },
        }
    }

    #[test]
    fn members_route_by_placement_and_strangers_by_what_they_sent() {
        // Replica 4 lives on node 1 (node 1's replica 1 was removed).
        let mut conf = ConfState::new(&[2, 3], &[]);
        conf.placements.push(Placement {
            replica: 4,
            node: 1,
        });
        conf.voters.push(4);
        let mut r = Routes::default();
        assert_eq!(r.node_of(&conf, 4), Some(1));
        assert_eq!(r.node_of(&conf, 9), None);
        // A message for the old replica 1 is not replica 4's.
        assert_eq!(
            r.accept(&conf, 4, 2, &msg(2, 1)),
            Err(Misrouted::OtherReplica)
        );
        // Member 2 lives on node 2, not 3.
        assert_eq!(r.accept(&conf, 4, 3, &msg(2, 4)), Err(Misrouted::WrongNode));
        assert_eq!(r.accept(&conf, 4, 2, &msg(2, 4)), Ok(()));
        // A non-member is answered where it came from; the oldest of more
        // than ROUTES_SEEN_MAX is forgotten.
        for k in 0..=ROUTES_SEEN_MAX as u64 {
            assert_eq!(r.accept(&conf, 4, 100 + k, &msg(10 + k, 4)), Ok(()));
        }
        assert_eq!(r.seen.len(), ROUTES_SEEN_MAX);
        assert_eq!(r.node_of(&conf, 10), None);
        assert_eq!(r.node_of(&conf, 11), Some(101));
    }

    #[test]
    fn votes_seeding_snapshots_and_empty_heartbeats_create_a_replica_and_nothing_else_does() {
        let with = |body: Body| Message {
            from: 2,
            to: 4,
            term: 3,
            body,
        };
        let creates = |body: Body| creates_replica(1, &with(body));
        // A range split off its parent must get the vote of a node that
        // never made it from the split (issue #18).
        assert!(creates(Body::PreVote {
            last_index: 9,
            last_term: 2
        }));
        assert!(creates(Body::Vote {
            last_index: 9,
            last_term: 2,
            transfer: false
        }));
        assert!(creates(Body::Heartbeat {
            commit: 0,
            round: 1
        }));
        assert!(!creates(Body::Heartbeat {
            commit: 5,
            round: 1
        }));
        assert!(!creates(Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: Vec::new(),
            commit: 0
        }));
        assert!(!creates(Body::TimeoutNow));
        // A snapshot's first chunk, unless its membership places the
        // addressee on another node; later chunks never.
        let mut conf = ConfState::new(&[2, 3], &[]);
        let snap = |conf: &ConfState, offset| Body::Snapshot {
            index: 9,
            term: 2,
            conf: conf.clone(),
            offset,
            total: 10,
            crc: 0,
            chunk: bytes::Bytes::new(),
        };
        assert!(creates(snap(&conf, 0)));
        assert!(!creates(snap(&conf, 5)));
        conf.voters.push(4);
        conf.placements.push(Placement {
            replica: 4,
            node: 7,
        });
        assert!(!creates(snap(&conf, 0)));
    }
}
