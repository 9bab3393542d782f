//! The meta group through the client: commands to its leader, and its
//! state (the cluster map it replicates: settings, nodes, ranges).
//!
//! The meta group's leader is found from the cluster map
//! (`ClusterMap::meta_leader`), from a `NotLeader` hint, or by asking the
//! nodes in turn; its replicas live on shard 0 (`route::META_GROUP`).

use std::time::{Duration, Instant};

use super::{Client, Error};
use crate::meta::{MetaCmd, MetaReply, MetaState};
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
    async fn on_meta_leader(&self, op: Op) -> Result<Reply, Error> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.op_timeout_ms);
        let mut last = String::from("no node hosts it");
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
                            if let Ok(r) = self.admin(leader, META_GROUP, op.clone()).await {
                                return Ok(r);
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
            let _ = self.refresh_map().await;
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }
}
