//! The steps of a range's membership changes as its leader takes them
//! (issue #17's move primitive), shared by the shard's request handler
//! (`shard::requests`, for `ctl move-replica` and the balancer's moves)
//! and the simulator's balancer (`sim::balancer`), so that the code the
//! simulator proves under faults is the code a node runs.

use bytes::Bytes;

use crate::kv::{Command, WriteOp};
use crate::raft::{ConfState, Index, NodeId, RawNode, Term};
use crate::wire::ClientError;

use super::GroupId;

/// The members of `conf` as an error message names them: "node 1
/// (voter), node 4 (learner)".
pub fn describe_members(conf: &ConfState) -> String {
    let v: Vec<String> = conf
        .placements
        .iter()
        .map(|p| {
            let role = if conf.is_voter(p.replica) {
                "voter"
            } else {
                "learner"
            };
            format!("node {} ({role})", p.node)
        })
        .collect();
    v.join(", ")
}

/// The address-book entry (`kv::WriteOp::Member`, an admin command) that
/// forgets `node`: an empty peer address.
pub fn forget_member(node: NodeId) -> Bytes {
    Command {
        client: 0,
        seq: 0,
        ack: 0,
        op: WriteOp::Member {
            node,
            peer_addr: Bytes::new(),
            client_addr: Bytes::new(),
        },
    }
    .encode()
}

/// Why group `gid` takes no membership change now, if it does not: one
/// proposed and not applied yet, or a joint configuration not left yet
/// (the core refuses another, `ConfChangeError::InProgress`, and a step
/// judged against a membership in transition may be refused for the
/// wrong reason). The caller asks again once it settles.
pub fn change_under_way(raft: &RawNode, gid: GroupId) -> Option<String> {
    let conf = raft.conf();
    (raft.conf_change_pending() || conf.is_joint()).then(|| {
        format!(
            "group {gid}'s membership change is under way (members now: {}): ask again",
            describe_members(conf)
        )
    })
}

/// Whether removing `node`'s replica from the meta group keeps its voters:
/// the meta group's size is not the ranges' factor (it is 1, 3 or 5 of the
/// founders), so a voter of it (of either configuration while joint) is
/// only ever moved (a joint change: `Client::move_meta_replica`), never
/// removed, unless asked on purpose. So a removal meant for a learner (a
/// stray one, a move's cleanup) that was promoted meanwhile takes no
/// voter with it. Used by the shard's request handler and the simulator.
pub fn meta_removal_keeps_voters(conf: &ConfState, node: NodeId) -> Result<(), String> {
    let voter = conf
        .replica_on(node)
        .is_some_and(|r| conf.voters.contains(&r) || conf.voters_outgoing.contains(&r));
    if voter {
        return Err(format!(
            "node {node} is a voter of the meta group: move it instead (ctl decommission {node} moves it to another node), or ask with --below-replication-factor to shrink the meta group on purpose"
        ));
    }
    Ok(())
}

/// Whether removing `node`'s replica leaves range `gid` at least `rf`
/// voters (the floor a move keeps: cockroachdb/cockroach#12768 lost
/// quorum below it). A node that holds no voter removes none.
pub fn removal_keeps_voters(
    conf: &ConfState,
    gid: GroupId,
    node: NodeId,
    rf: usize,
) -> Result<(), String> {
    let Some(replica) = conf.replica_on(node) else {
        return Ok(());
    };
    let left = conf.voters.iter().filter(|&&v| v != replica).count();
    if conf.voters.contains(&replica) && left < rf {
        return Err(format!(
            "removing node {node} from range {gid} would leave {left} voters, fewer than the replication factor {rf}: move the replica instead (ctl move-replica {gid} {node} <another node>), or ask with --below-replication-factor to shrink the range on purpose"
        ));
    }
    Ok(())
}

/// The move's membership step at group `gid`'s leader `raft`: one joint
/// configuration that promotes the learner on node `add` and removes the
/// voter on node `remove` (`RawNode::replace_voter`), then the address
/// book's entry forgetting `remove` (best effort: asking again proposes
/// it). Where the voter leaving is this leader, leadership leaves it
/// first, once the learner is ready (not while it catches up): to the
/// staying voter a removed leader would pick (`RawNode::successor`), and
/// the step is refused `Failed` so that the mover asks the new leader.
///
/// Errors: `BadRequest` where there is no learner on `add` or no voter on
/// `remove`; `Failed` (ask again) while the learner is not caught up or
/// leadership moves.
pub fn swap_voter(
    raft: &mut RawNode,
    gid: GroupId,
    add: NodeId,
    remove: NodeId,
) -> Result<(Index, Term), ClientError> {
    let conf = raft.conf();
    let learner = conf.replica_on(add).filter(|&r| conf.is_learner(r));
    let voter = conf.replica_on(remove).filter(|&r| conf.is_voter(r));
    let (Some(learner), Some(voter)) = (learner, voter) else {
        let reason = format!(
            "group {gid} has no learner on node {add} and voter on node {remove} to swap (its members: {}): add node {add} as a learner first",
            describe_members(conf)
        );
        return Err(ClientError::BadRequest { reason });
    };
    let failed = |reason: String| ClientError::Failed { reason };
    if voter == raft.id() {
        raft.ready_learner(learner)
            .map_err(|e| failed(e.to_string()))?;
        let to = raft.successor(0);
        let reason = match to.map(|t| (t, raft.transfer_leader(t))) {
            Some((t, Ok(()))) => format!(
                "node {remove} leads group {gid}: its leadership moves to replica {t} first; ask again"
            ),
            Some((_, Err(e))) => e.to_string(),
            None => format!("node {remove} is group {gid}'s only voter"),
        };
        return Err(failed(reason));
    }
    let r = raft
        .replace_voter(learner, voter)
        .map_err(|e| failed(e.to_string()))?;
    let _ = raft.propose(forget_member(remove));
    Ok(r)
}
