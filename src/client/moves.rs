//! Moving a replica of a range from one node to another
//! (`ctl move-replica`), as a sequence of the group's own membership
//! changes, each already safe to repeat:
//!
//! 1. add the target as a learner (the leader seeds it with a snapshot);
//! 2. once it has caught up (the leader refuses before), one joint
//!    configuration promotes it and removes the source
//!    (`Op::ReplaceVoter`, `RawNode::replace_voter`): old and new voters,
//!    RF each, and the leader leaves the joint configuration at once. If
//!    the source leads, the range's leader first hands its leadership to
//!    the staying voter with the most of the log and asks to be asked
//!    again. The removed replica is destroyed on its node.
//!
//! The range never has fewer than RF voters in either half of any
//! configuration on the way (cockroachdb/cockroach#12768 lost quorum
//! where a move went below), nor the RF + 1 of promote-then-remove (an
//! even count whose quorum is larger). A move cut short (the client or a
//! node stopped) is resumed by asking for it again: each step already in
//! force answers `Done`, and a leader elected in the joint configuration
//! leaves it itself. The balancer runs the same steps from the meta
//! leader (`shard::Balancer`).

use std::time::{Duration, Instant};

use super::{Client, Error};
use crate::meta::{RangeDesc, ReplicaRole};
use crate::raft::NodeId;
use crate::wire::{ClientError, Op, Reply};

/// How long a move waits for its new learner to catch up (be sent and
/// install the range's snapshot, then the log after it) while the learner
/// makes no progress ([`CatchUpWatch`]: the bytes of its snapshot it
/// acknowledged, its match index on the way to a goal, its lag behind the
/// log), as the range's leader reports them (`ReplicaStatus`, looked at
/// every [`MOVE_PROGRESS_LOOK_MS`]). A
/// learner that keeps receiving is waited for however long its range
/// takes at the snapshot budget (a fixed 120 s once failed every move of a
/// range larger than 120 s × the shard's share of
/// `--snapshot-send-bytes-per-sec`, over and over). Once it gives up, the
/// learner is removed (not left to be sent the range forever), and
/// asking for the move again starts over.
pub const MOVE_CATCH_UP_WAIT_MS: u64 = 120_000;

/// How often a move waiting for its learner asks the range's leader for
/// the learner's progress (one `Op::Progress`).
pub const MOVE_PROGRESS_LOOK_MS: u64 = 1_000;

/// A learner's best progress seen by a move waiting for it (see
/// [`MOVE_CATCH_UP_WAIT_MS`]). A report shows progress when the learner
/// acknowledged more bytes of the snapshot streaming to it than of that
/// snapshot before; or, once no snapshot streams, when its match index
/// passes the highest seen while that is still below the goal (the
/// leader's last index at the first such report after a snapshot, fixed
/// until the next one), or its lag behind the leader's log (last index −
/// match index) reaches a new low above 0. Each rule can fire only
/// finitely often, so a caught-up learner whose promotion keeps failing
/// for another reason (a transfer that does not happen, a busy leader)
/// shows no progress however many writes it replicates, and the move
/// still gives up; a learner applying entries behind a log that grows as
/// fast keeps the move waiting until it reaches the goal. A snapshot sent
/// again from its start, or a newer one replacing it, shows none until it
/// passes where the last report got; a report of match 0 (a new leader
/// probing) shows none.
#[derive(Debug, Clone)]
pub struct CatchUpWatch {
    best_lag: u64,
    best_match: u64,
    /// 0: to be set at the next report without a snapshot streaming.
    goal: u64,
    /// (snapshot index, bytes acknowledged of it).
    snapshot: (u64, u64),
    since: Instant,
}

impl CatchUpWatch {
    /// A watch whose learner is taken as progressing at `now`.
    pub fn new(now: Instant) -> Self {
        CatchUpWatch {
            best_lag: u64::MAX,
            best_match: 0,
            goal: 0,
            snapshot: (0, 0),
            since: now,
        }
    }

    /// Records the leader's report of the learner (`s`; the leader's log
    /// ends at `last_index`) at `now`; whether it showed progress.
    pub fn observe(
        &mut self,
        s: &crate::wire::ReplicaStatus,
        last_index: u64,
        now: Instant,
    ) -> bool {
        let (index, acked) = (s.snapshot_index, s.snapshot_acked_bytes);
        let moved = if index != 0 {
            // Seeding: its bytes; the log's goal is set anew after it.
            self.goal = 0;
            if index == self.snapshot.0 {
                let more = acked > self.snapshot.1;
                self.snapshot.1 = self.snapshot.1.max(acked);
                more
            } else {
                self.snapshot = (index, acked);
                false
            }
        } else {
            if self.goal == 0 {
                self.goal = last_index.max(1);
            }
            let m = s.match_index;
            let lag = last_index.saturating_sub(m);
            let closer = m > self.best_match && self.best_match < self.goal;
            let lower = lag > 0 && lag < self.best_lag;
            self.best_match = self.best_match.max(m);
            self.best_lag = self.best_lag.min(lag.max(1));
            closer || lower
        };
        if moved {
            self.since = now;
        }
        moved
    }

    /// How long, at `now`, since the learner last made progress.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }
}

/// How long a move waits for leadership to leave the source, and for
/// each membership change to be in force (its joint configuration left).
pub const MOVE_LEADER_WAIT_MS: u64 = 10_000;

/// What [`Client::move_replica`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The replica moved.
    Moved,
    /// The target held a voter and the source none already (a move asked
    /// again after it completed).
    AlreadyDone,
}

fn failed(reason: String) -> Error {
    Error::Server(ClientError::Failed { reason })
}

/// Whether `e` may pass by itself (a leader change, a node restarting, a
/// membership change of the range still in progress): a step of a move
/// asks again until its deadline.
pub(super) fn transient(e: &Error) -> bool {
    match e {
        Error::Timeout(_) | Error::Unreachable(_) => true,
        Error::Server(c) => matches!(
            c,
            ClientError::NotLeader { .. }
                | ClientError::Busy
                | ClientError::Failed { .. }
                | ClientError::Timeout
        ),
    }
}

/// `call` asked again while it fails in a way that may pass
/// ([`transient`]), for up to `wait_ms`: the one retry loop of the moves
/// (a range's leader or the meta group's).
pub(super) async fn retrying<F, Fut>(wait_ms: u64, call: F) -> Result<Reply, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, Error>>,
{
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        match call().await {
            Err(e) if transient(&e) && Instant::now() < deadline => {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

impl Client {
    /// Range `range`'s descriptor as its leader has it (its current
    /// membership, not a cached one).
    /// Asked of the leader only (`Op::Descriptor`: a follower answers
    /// `NotLeader`), following hints and retrying through an election for
    /// up to [`MOVE_LEADER_WAIT_MS`].
    pub async fn leader_descriptor(&self, range: u64) -> Result<RangeDesc, Error> {
        let r = retrying(MOVE_LEADER_WAIT_MS, || {
            self.admin_on_leader(range, Op::Descriptor)
        })
        .await?;
        match r {
            Reply::Ranges(v) => v
                .first()
                .and_then(|b| RangeDesc::decode(b).ok())
                .filter(|d| d.id == range)
                .ok_or_else(|| failed(format!("range {range}'s leader did not report it"))),
            r => Err(super::unexpected(r)),
        }
    }

    /// Moves range `range`'s replica on node `from` to node `to` (see the
    /// module docs). `peer_addr`: `to`'s peer address, if the range's
    /// leader may not know it (empty: the leader's). Errors name what is
    /// wrong: the same node twice, a source without a replica, a target
    /// that has one, a learner that made no progress for
    /// [`MOVE_CATCH_UP_WAIT_MS`], leadership that did not leave the source
    /// in [`MOVE_LEADER_WAIT_MS`].
    pub async fn move_replica(
        &self,
        range: u64,
        from: NodeId,
        to: NodeId,
        peer_addr: &str,
    ) -> Result<MoveOutcome, Error> {
        if from == to {
            return Err(failed(format!(
                "the source and the target are both node {from}"
            )));
        }
        if from == 0 || to == 0 {
            return Err(failed("node id 0 is no node".to_string()));
        }
        // A target nobody knows would be a learner that never catches up,
        // dialled forever: it must have joined (the map names it), or its
        // address be given.
        if peer_addr.is_empty() && !self.nodes().iter().any(|&(n, _)| n == to) {
            self.refresh_map().await?;
            let known: Vec<NodeId> = self.nodes().into_iter().map(|(n, _)| n).collect();
            if !known.contains(&to) {
                return Err(failed(format!(
                    "node {to} is not in the cluster map (nodes {known:?}): start it (--join), or give its peer address (--peer-addr)"
                )));
            }
        }
        let d = self.leader_descriptor(range).await?;
        let voter_on = |d: &RangeDesc, n| d.replica_on(n).is_some_and(|r| r.role.votes());
        let nodes = || {
            let v: Vec<String> = d.replicas.iter().map(|r| r.node.to_string()).collect();
            v.join(", ")
        };
        match (d.replica_on(from).is_some(), voter_on(&d, to)) {
            (false, true) => return Ok(MoveOutcome::AlreadyDone),
            (false, false) => {
                return Err(failed(format!(
                    "node {from} holds no replica of range {range} (its replicas are on nodes {})",
                    nodes()
                )))
            }
            (true, true) => {
                // Both vote: a move cut short after its promotion (one
                // voter more than the factor) goes on; otherwise the
                // target had a replica before, and removing the source
                // would leave the range a voter short.
                let voters = d.voters().count();
                let rf = self.replication_factor() as usize;
                if rf == 0 || voters <= rf {
                    return Err(failed(format!(
                        "node {to} holds a voter of range {range} already (its replicas are on nodes {}; {voters} voters, replication factor {}): move to a node without one",
                        nodes(),
                        if rf == 0 { "not known".to_string() } else { rf.to_string() }
                    )));
                }
            }
            (true, false) => {}
        }
        if d.replica_on(from).is_some_and(|r| !r.role.votes()) {
            return Err(failed(format!(
                "node {from} holds a learner of range {range}, not a voter: moving it would add a voter; remove it (ctl remove-node {from} --range {range}) instead"
            )));
        }
        if voter_on(&d, to) {
            // A move cut short after a promotion of the older kind (RF + 1
            // voters): the source goes.
            self.lead_off(range, from, to).await?;
            self.remove_replica(range, from).await?;
        } else {
            // A learner on the target, then one joint configuration that
            // promotes it and removes the source once it has caught up
            // (refused with Failed until then; the range's leader moves
            // its leadership off the source first).
            self.add_learner(range, to, peer_addr).await?;
            let op = Op::ReplaceVoter {
                add: to,
                remove: from,
            };
            self.until_caught_up(range, to, op).await?;
        }
        let settled = |d: &RangeDesc| {
            d.replicas
                .iter()
                .all(|r| matches!(r.role, ReplicaRole::Voter | ReplicaRole::Learner))
        };
        self.await_conf(
            range,
            &format!("the swap of node {from}'s voter for node {to}'s"),
            |d| {
                settled(d)
                    && d.replica_on(from).is_none()
                    && d.replica_on(to)
                        .is_some_and(|r| r.role == ReplicaRole::Voter)
            },
        )
        .await?;
        tracing::info!(range, from, to, "move: done");
        Ok(MoveOutcome::Moved)
    }

    /// Adds a voter of range `range` on node `node` (peer address
    /// `peer_addr`, empty: the leader's): a learner, promoted once caught
    /// up (a learner that makes no progress for [`MOVE_CATCH_UP_WAIT_MS`]
    /// is removed).
    /// The balancer's repair of a range short of voters. Done at once if
    /// `node` holds a voter already.
    pub async fn add_replica(
        &self,
        range: u64,
        node: NodeId,
        peer_addr: &str,
    ) -> Result<(), Error> {
        if self.add_learner(range, node, peer_addr).await? {
            return Ok(());
        }
        self.until_caught_up(range, node, Op::Promote { node })
            .await
    }

    /// Adds a learner of range `range` on node `node` unless `node` holds
    /// a replica already; whether that one is a voter.
    async fn add_learner(&self, range: u64, node: NodeId, peer_addr: &str) -> Result<bool, Error> {
        let d = self.leader_descriptor(range).await?;
        if d.replica_on(node).is_some_and(|r| r.role.votes()) {
            return Ok(true);
        }
        if d.replica_on(node).is_none() {
            // Its client address too, where known: clients find it then.
            let client_addr = self
                .nodes()
                .into_iter()
                .find(|&(n, _)| n == node)
                .map(|(_, a)| a.to_string())
                .unwrap_or_default();
            // Not given: the address the node registered in the cluster
            // map (the range's leader may have no group with it yet).
            let peer_addr = match peer_addr {
                "" => self.registered_peer_addr(node).await,
                given => given.to_string(),
            };
            let op = Op::AddLearner {
                node,
                peer_addr,
                client_addr,
            };
            self.until(range, MOVE_LEADER_WAIT_MS, op).await?;
            tracing::info!(range, node, "learner added");
        }
        Ok(false)
    }

    /// Removes node `node`'s replica of range `range` (never below the
    /// replication factor: the leader refuses that).
    pub async fn remove_replica(&self, range: u64, node: NodeId) -> Result<(), Error> {
        let op = Op::RemoveNode {
            node,
            below_replication_factor: false,
        };
        self.until(range, MOVE_LEADER_WAIT_MS, op).await.map(|_| ())
    }

    /// Asks range `range`'s leader to hand leadership to its replica on
    /// `to` (the transfer ends within an election timeout, or not at all).
    pub async fn transfer_leader(&self, range: u64, to: NodeId) -> Result<(), Error> {
        self.until(range, MOVE_LEADER_WAIT_MS, Op::TransferLeader { to })
            .await
            .map(|_| ())
    }

    /// Node `node`'s member of range `range` as the range's leader reports
    /// it, with the leader's last log index; `None` if the leader cannot
    /// be asked or does not list it (a follower's answer lists none).
    async fn member_status(
        &self,
        range: u64,
        node: NodeId,
    ) -> Option<(crate::wire::ReplicaStatus, u64)> {
        match self.admin_on_leader(range, Op::Progress).await {
            Ok(Reply::Status(groups)) => {
                let g = groups.into_iter().find(|g| g.group == range)?;
                let last = g.last_index;
                let r = g.replicas.into_iter().find(|r| r.node == node)?;
                Some((r, last))
            }
            _ => None,
        }
    }

    /// `op` (`Promote` or `ReplaceVoter` of `to`'s learner of range
    /// `range`), asked until the learner has caught up; one that makes no
    /// progress for [`MOVE_CATCH_UP_WAIT_MS`] ([`CatchUpWatch`]) is removed.
    async fn until_caught_up(&self, range: u64, to: NodeId, op: Op) -> Result<(), Error> {
        let patience = Duration::from_millis(MOVE_CATCH_UP_WAIT_MS);
        let mut watch = CatchUpWatch::new(Instant::now());
        let mut next_look = Instant::now();
        loop {
            match self.admin_on_leader(range, op.clone()).await {
                Ok(_) => return Ok(()),
                // The learner is gone (removed by another hand).
                Err(Error::Server(ClientError::Failed { reason }))
                    if reason.contains("not a member") =>
                {
                    return Err(failed(format!(
                        "node {to}'s learner left range {range} before it was promoted ({reason}); ask again"
                    )));
                }
                Err(e) if transient(&e) => {
                    let now = Instant::now();
                    if now >= next_look {
                        next_look = now + Duration::from_millis(MOVE_PROGRESS_LOOK_MS);
                        if let Some((s, last)) = self.member_status(range, to).await {
                            watch.observe(&s, last, now);
                        }
                    }
                    if watch.stalled_for(now) > patience {
                        // An abandoned learner would be sent the range
                        // forever (CockroachDB removes learners a failed
                        // change left behind, for the same reason).
                        let removed = self.remove_replica(range, to).await;
                        let learner = match removed {
                            Ok(_) => "its learner was removed".to_string(),
                            Err(e) => format!("removing its learner failed too ({e})"),
                        };
                        return Err(failed(format!(
                            "node {to}'s replica of range {range} made no progress catching up for {MOVE_CATCH_UP_WAIT_MS} ms (last: {e}); {learner}. Is node {to} up and reachable from the range's leader?"
                        )));
                    }
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `op` on range `range`'s leader, asked again while it fails in a way
    /// that may pass ([`transient`]) for up to `wait_ms`.
    async fn until(&self, range: u64, wait_ms: u64, op: Op) -> Result<Reply, Error> {
        retrying(wait_ms, || self.admin_on_leader(range, op.clone())).await
    }

    /// Waits until range `range`'s leader has a descriptor that `done`
    /// accepts (a membership change applied and its joint configuration
    /// left), for up to [`MOVE_LEADER_WAIT_MS`]; `what` names the change
    /// in the error.
    async fn await_conf(
        &self,
        range: u64,
        what: &str,
        done: impl Fn(&RangeDesc) -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_millis(MOVE_LEADER_WAIT_MS);
        loop {
            let seen = match self.leader_descriptor(range).await {
                Ok(d) if done(&d) => return Ok(()),
                Ok(d) => format!("its replicas: {:?}", d.replicas),
                Err(e) if transient(&e) => format!("last: {e}"),
                Err(e) => return Err(e),
            };
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "{what} in range {range} was not in force within {MOVE_LEADER_WAIT_MS} ms ({seen}); ask for the move again"
                )));
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Hands range `range`'s leadership from `from` (if it leads) to `to`,
    /// and waits until the nodes report another leader.
    async fn lead_off(&self, range: u64, from: NodeId, to: NodeId) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_millis(MOVE_LEADER_WAIT_MS);
        let mut asked = false;
        loop {
            // A map that cannot be had now may be had in a moment.
            let leader = match self.refresh_map().await {
                Ok(()) => self.leader_of(range),
                Err(_) => 0,
            };
            if leader != 0 && leader != from {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "leadership of range {range} did not leave node {from} within {MOVE_LEADER_WAIT_MS} ms; ask for the move again"
                )));
            }
            if leader == from && !asked {
                match self.admin(from, range, Op::TransferLeader { to }).await {
                    Ok(_) => asked = true,
                    Err(e) if transient(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ReplicaStatus;

    fn report(match_index: u64, snapshot_index: u64, acked: u64) -> ReplicaStatus {
        ReplicaStatus {
            node: 4,
            match_index,
            state: if snapshot_index > 0 {
                "snapshot"
            } else {
                "replicate"
            }
            .into(),
            unreachable: false,
            snapshot_index,
            snapshot_acked_bytes: acked,
            replica: 5,
            role: "learner".into(),
        }
    }

    /// `MOVE_CATCH_UP_WAIT_MS` counts from the learner's last progress: a
    /// snapshot streaming, then the log, keep the move waiting however
    /// long they take (a learner applying entries behind a log that grows
    /// as fast included, up to its goal); a snapshot sent again from its
    /// start, a newer one replacing it, a new leader's report of match 0,
    /// and a caught-up learner replicating new writes are no progress.
    #[test]
    fn a_move_waits_while_its_learner_progresses_and_counts_a_stall_from_the_last_progress() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = CatchUpWatch::new(t0);
        let limit = Duration::from_millis(MOVE_CATCH_UP_WAIT_MS);
        // Ten minutes of snapshot at a trickle (the log grows meanwhile):
        // never stalled.
        assert!(!w.observe(&report(0, 50, 0), 50, at(0)), "nothing yet");
        for i in 1..=600 {
            assert!(w.observe(&report(0, 50, i << 20), 50 + i, at(i)));
            assert!(w.stalled_for(at(i)) < limit);
        }
        // Sent again from its first byte, or replaced by a newer one: not
        // progress until it passes where it got.
        assert!(!w.observe(&report(0, 50, 1 << 20), 700, at(601)));
        assert!(!w.observe(&report(0, 50, 600 << 20), 700, at(602)));
        assert!(w.observe(&report(0, 50, 601 << 20), 700, at(603)));
        assert!(!w.observe(&report(0, 90, 0), 700, at(604)));
        assert!(w.observe(&report(0, 90, 1), 700, at(605)));
        // Installed (goal: 700): applying entries while the log grows as
        // fast (lag 610 each time) is progress, up to the goal.
        assert!(w.observe(&report(90, 0, 0), 700, at(606)));
        assert!(w.observe(&report(390, 0, 0), 1000, at(607)));
        assert!(w.observe(&report(700, 0, 0), 1310, at(608)));
        // A new leader probing reports match 0: nothing.
        assert!(!w.observe(&report(0, 0, 0), 1300, at(609)));
        // Past the goal, only a new low of the lag counts.
        assert!(
            !w.observe(&report(990, 0, 0), 1600, at(610)),
            "lag 610 again"
        );
        assert!(w.observe(&report(1590, 0, 0), 1600, at(611)), "lag 10");
        // Caught up (lag 0) and replicating new writes: no progress.
        assert!(!w.observe(&report(1600, 0, 0), 1600, at(612)));
        assert!(!w.observe(&report(1900, 0, 0), 1900, at(613)));
        assert!(
            !w.observe(&report(1990, 0, 0), 2000, at(614)),
            "lag 10 again"
        );
        assert_eq!(w.stalled_for(at(611) + limit), limit);
        assert!(w.stalled_for(at(612) + limit) > limit);
    }
}
