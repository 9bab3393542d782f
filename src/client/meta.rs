//! The meta group through the client: commands to its leader, and its
//! state (the cluster map it replicates: settings, nodes, ranges).
//!
//! The meta group's leader is found from the cluster map
//! (`ClusterMap::meta_leader`), from a `NotLeader` hint, or by asking the
//! nodes in turn; its replicas live on shard 0 (`route::META_GROUP`).

use std::time::{Duration, Instant};

use super::{Client, Error};
use crate::meta::{MetaCmd, MetaReply, MetaState, ReplicaRole};
use crate::route::META_GROUP;
use crate::wire::{ClientError, Op, Reply};

impl Client {
    /// The meta group's leader as last learned (0: not known).
    pub fn meta_leader(&self) -> u64 {
        self.inner.meta_leader.get()
    }

    /// `cmd` applied by the meta group; its answer, or why it was refused
    /// (`Error::Server(ClientError::Failed)` with the state machine's
    /// reason). Sent outside any session: asked again after a lost answer,
    /// it is applied again (every meta command is safe to repeat).
    pub async fn meta(&self, cmd: &MetaCmd) -> Result<MetaReply, Error> {
        let op = Op::Meta { cmd: cmd.encode() };
        match self.on_meta_leader(op).await? {
            Reply::Meta { ok: true, body } => MetaReply::decode(&body).map_err(|e| {
                Error::Server(ClientError::Failed {
                    reason: e.to_string(),
                })
            }),
            Reply::Meta { ok: false, body } => Err(Error::Server(ClientError::Failed {
                reason: String::from_utf8_lossy(&body).into_owned(),
            })),
            r => Err(super::unexpected(r)),
        }
    }

    /// Whether node `node` answers (`Op::Ping` on its shard 0), within one
    /// attempt.
    pub async fn ping(&self, node: u64) -> Result<(), Error> {
        match self.attempt(node, 0, super::sessionless(0, Op::Ping)).await {
            Some(Ok(Ok(_))) => Ok(()),
            Some(Ok(Err(e))) => Err(Error::Server(e)),
            Some(Err(e)) => Err(Error::Unreachable(e.0)),
            None => Err(Error::Unreachable(format!(
                "node {node} did not answer within {} ms",
                self.attempt_timeout_ms()
            ))),
        }
    }

    /// The meta leader's balancer's view of the nodes (`Op::Liveness`):
    /// live, suspect or dead, and how long each has been silent.
    pub async fn liveness(&self) -> Result<crate::wire::client::LivenessView, Error> {
        match self.on_meta_leader(Op::Liveness).await? {
            Reply::Liveness(v) => Ok(v),
            r => Err(super::unexpected(r)),
        }
    }

    /// The nodes of the meta group's members (voters and learners), as
    /// its leader has them.
    pub async fn meta_members(&self) -> Result<Vec<u64>, Error> {
        Ok(self.meta_roster().await?.nodes())
    }

    /// The meta group's members with their roles, as its leader has them
    /// (`Op::Progress` on the meta group: its leader's view, no digest).
    pub async fn meta_roster(&self) -> Result<MetaRoster, Error> {
        match self.on_meta_leader(Op::Progress).await? {
            Reply::Status(v) => {
                let mut roster = MetaRoster::default();
                for r in v
                    .into_iter()
                    .filter(|g| g.group == META_GROUP)
                    .flat_map(|g| g.replicas)
                {
                    // A role this client does not know counts as a voter:
                    // never taken for a learner to remove.
                    match ReplicaRole::from_name(&r.role) {
                        Some(ReplicaRole::Learner) => roster.learners.push((r.node, r.replica)),
                        _ => roster.voters.push(r.node),
                    }
                }
                Ok(roster)
            }
            r => Err(super::unexpected(r)),
        }
    }

    /// Moves the meta group's replica on node `from` to node `to` (peer
    /// address `peer_addr`, empty: the leader's): `to` added as a learner,
    /// promoted once caught up, the leadership handed over if `from`
    /// leads, `from` removed. Done at once if `from` holds none and `to`
    /// does. How `ctl replace-node` keeps the meta group's voters alive
    /// when founders are replaced.
    pub async fn move_meta_replica(
        &self,
        from: u64,
        to: u64,
        peer_addr: &str,
    ) -> Result<super::MoveOutcome, Error> {
        if from == to || from == 0 || to == 0 {
            return Err(Error::Server(ClientError::BadRequest {
                reason: format!("a move of the meta group's replica from node {from} to node {to}: two distinct nonzero node ids are needed"),
            }));
        }
        let roster = self.meta_roster().await?;
        let voters = &roster.voters;
        if voters.is_empty() {
            return Err(Error::Unreachable(
                "the meta group's leader reported no members".into(),
            ));
        }
        if roster.is_learner(from) {
            return Err(Error::Server(ClientError::BadRequest {
                reason: format!("node {from} holds a learner of the meta group, not a voter (voters {voters:?}): moving it would add a voter; remove it instead"),
            }));
        }
        if !voters.contains(&from) {
            return Ok(super::MoveOutcome::AlreadyDone);
        }
        if voters.contains(&to) {
            // Removing `from` would shrink the group: refused.
            return Err(Error::Server(ClientError::BadRequest {
                reason: format!("node {to} is in the meta group already (voters {voters:?}): removing node {from} would shrink it"),
            }));
        }
        if voters.len() == 1 {
            return Err(Error::Server(ClientError::BadRequest {
                reason: format!("the meta group has one voter (node {from}): a move through two voters cannot remove one (a majority); add a voter first"),
            }));
        }
        let patient = |op: Op| async move {
            let wait = super::moves::MOVE_CATCH_UP_WAIT_MS;
            super::moves::retrying(wait, || self.on_meta_leader(op.clone())).await
        };
        // A learner on `to` already (a move cut short) is taken as it is:
        // the move resumes instead of seeding another. Only a learner this
        // call added is removed if the move fails: one taken over may be
        // another mover's, promoted by it meanwhile.
        let adds = !roster.is_learner(to);
        if adds {
            patient(Op::AddLearner {
                node: to,
                peer_addr: peer_addr.to_string(),
                client_addr: String::new(),
            })
            .await?;
        }
        // One joint configuration: `to` in, `from` out (its leader moves
        // leadership off `from` first). A retry after an unanswered
        // attempt that started it is told to ask again until the group has
        // left it, then answered `Done`.
        if let Err(e) = patient(Op::ReplaceVoter {
            add: to,
            remove: from,
        })
        .await
        {
            // A learner left behind would be sent the group forever (the
            // meta group refuses this removal if `to` votes by now).
            if adds {
                let _ = patient(Op::RemoveNode {
                    node: to,
                    below_replication_factor: false,
                })
                .await;
            }
            return Err(e);
        }
        Ok(super::MoveOutcome::Moved)
    }

    /// The peer address (of its shard 0) node `node` registered in the
    /// cluster map; empty if the map cannot be read or does not name it
    /// (a shard then falls back on what it knows, or says it knows none).
    pub async fn registered_peer_addr(&self, node: u64) -> String {
        match self.meta_state().await {
            Ok(m) => m.node(node).map(|n| n.peer_addr.clone()),
            Err(_) => None,
        }
        .unwrap_or_default()
    }

    /// `op` (a membership change, a transfer) on the meta group's leader.
    pub async fn meta_admin(&self, op: Op) -> Result<Reply, Error> {
        self.on_meta_leader(op).await
    }

    /// The meta group's state, as its leader applied it.
    pub async fn meta_state(&self) -> Result<MetaState, Error> {
        match self.on_meta_leader(Op::MetaState).await? {
            Reply::Meta { ok: true, body } => MetaState::restore(&body).map_err(|e| {
                Error::Server(ClientError::Failed {
                    reason: e.to_string(),
                })
            }),
            r => Err(super::unexpected(r)),
        }
    }

    /// `op` on the meta group's leader: the one known, else each node in
    /// turn (following `NotLeader` hints), for up to `op_timeout_ms`.
    pub(super) async fn on_meta_leader(&self, op: Op) -> Result<Reply, Error> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.op_timeout_ms);
        let mut last = String::from("no node hosts it");
        let mut refreshed = false;
        loop {
            let mut order: Vec<u64> = self.nodes().into_iter().map(|(n, _)| n).collect();
            order.sort_unstable();
            let known = self.meta_leader();
            if known != 0 {
                order.retain(|&n| n != known);
                order.insert(0, known);
            }
            for n in order {
                match self.admin(n, META_GROUP, op.clone()).await {
                    Ok(r) => {
                        self.inner.meta_leader.set(n);
                        return Ok(r);
                    }
                    Err(Error::Server(ClientError::NotLeader { leader })) => {
                        last = format!("node {n} does not lead it (hint: node {leader})");
                        if leader != 0 && leader != n {
                            self.inner.meta_leader.set(leader);
                            match self.admin(leader, META_GROUP, op.clone()).await {
                                Ok(r) => return Ok(r),
                                Err(
                                    e @ Error::Server(
                                        ClientError::Failed { .. } | ClientError::BadRequest { .. },
                                    ),
                                ) => return Err(e),
                                Err(_) => {}
                            }
                        }
                    }
                    Err(Error::Server(
                        ClientError::NotHosted { .. } | ClientError::UnknownGroup { .. },
                    )) => {}
                    Err(
                        e @ Error::Server(
                            ClientError::Failed { .. } | ClientError::BadRequest { .. },
                        ),
                    ) => return Err(e),
                    Err(e) => last = format!("node {n}: {e}"),
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unreachable(format!(
                    "no leader of the meta group answered within {} ms (last: {last}); a cluster bootstrapped by an older version has no meta group",
                    self.inner.cfg.op_timeout_ms
                )));
            }
            self.inner.meta_leader.set(0);
            // The map once per call (it asks every shard of every node);
            // then the nodes again after a pause.
            if !refreshed {
                refreshed = true;
                let _ = self.refresh_map().await;
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The meta group's members as its leader has them
/// (`Client::meta_roster`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaRoster {
    /// The nodes of its voters (of either configuration while joint).
    pub voters: Vec<u64>,
    /// (node, replica id) of its learners: a move's target not promoted
    /// yet, or one a move cut short left behind.
    pub learners: Vec<(u64, u64)>,
}

impl MetaRoster {
    /// The nodes of every member, voters first.
    pub fn nodes(&self) -> Vec<u64> {
        let learners = self.learners.iter().map(|&(n, _)| n);
        self.voters.iter().copied().chain(learners).collect()
    }

    /// Whether node `node` holds a learner of the meta group.
    pub fn is_learner(&self, node: u64) -> bool {
        self.learners.iter().any(|&(n, _)| n == node)
    }
}
