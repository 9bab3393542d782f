//! The balancer, run beside shard 0 of the node whose meta replica leads
//! (`meta_sync`): each round it hears from the nodes (a ping each: the
//! heartbeat), reads who leads each range, asks the planner
//! (`meta::planner::plan`) what to do and carries the operations out one
//! after the other through the client's move primitives (each safe to
//! repeat and refused where it would leave a range fewer voters than the
//! replication factor). What it knows of the nodes is not replicated: a
//! new meta leader starts with none and counts every node as heard from
//! when it started (PD's grace), so a leader change never declares the
//! cluster dead.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::client::{Client, Error};
use crate::meta::planner::{
    health, note_learners, plan, shown, Observed, Op as PlanOp, PlannerConfig,
};
use crate::meta::MetaState;
use crate::raft::NodeId;
use crate::wire::client::LivenessState;
use crate::wire::Op;

/// How often the balancer plans a round (ms), when this node leads the
/// meta group and the balancer is on (`--balancer`).
pub const BALANCE_INTERVAL_MS_DEFAULT: u64 = 5_000;

/// After a round that changed replicas (a move, an addition or a
/// removal; not a leader transfer, which is only asked for when it
/// returns), the next one is planned this
/// soon (ms) rather than after [`BALANCE_INTERVAL_MS_DEFAULT`]: a
/// rebalance runs its rounds back to back, each planned from a map that
/// shows the last one's moves (range leaders report a change within
/// `RANGE_REPORT_INTERVAL_MS_DEFAULT`; a move planned on a stale map is
/// refused by the range's leader, whose descriptor it reads). Measured
/// with `ringraft-rebalance` (README): one round per 5 s left a 1 GiB
/// rebalance mostly waiting.
pub const BALANCE_AGAIN_MS: u64 = 1_000;

/// How long an operation the balancer finished is planned as still in
/// flight while the map does not show it (ms; `planner::shown`): the
/// range's leader reports the change within
/// `RANGE_REPORT_INTERVAL_MS_DEFAULT`, and a report lost with a leader
/// that failed is made again by the reconcile pass, within
/// `META_RECONCILE_INTERVAL_MS_DEFAULT`. Meanwhile the range gets no other
/// operation and the counts are planned as if it were done; planned
/// from counts that still show it undone, a round undoes the last one's
/// moves (`planner::Observed::in_flight`).
pub const OP_UNSEEN_WAIT_MS: u64 = super::meta_sync::META_RECONCILE_INTERVAL_MS_DEFAULT;

/// Keeps in `unseen` ((operation, when it finished, ms)) the operations
/// `state` and `leaders` do not show yet (`planner::shown`) and that
/// finished less than [`OP_UNSEEN_WAIT_MS`] before `now_ms`.
pub fn keep_unseen(
    unseen: &mut Vec<(PlanOp, u64)>,
    state: &MetaState,
    leaders: &BTreeMap<u64, NodeId>,
    now_ms: u64,
) {
    unseen.retain(|(op, at)| {
        now_ms.saturating_sub(*at) < OP_UNSEEN_WAIT_MS && !shown(op, state, leaders)
    });
}

/// What the balancer's last round saw of the nodes (`Op::Liveness`).
#[derive(Debug, Clone)]
pub struct LivenessSeen {
    /// When the round started.
    pub at: Instant,
    pub dead_node_timeout_ms: u64,
    /// Node, its health then, and how long it had been silent then (ms;
    /// `None`: not heard from since this balancer started).
    pub nodes: Vec<(NodeId, LivenessState, Option<u64>)>,
}

/// The meta leader's balancer state (see the module docs).
pub struct Balancer {
    cfg: PlannerConfig,
    start: Instant,
    /// When this balancer started leading, on its clock (ms).
    since_ms: u64,
    heartbeat_ms: BTreeMap<NodeId, u64>,
    /// Learners in the map and in the meta group → when this balancer
    /// first saw them
    /// (`planner::note_learners`): one left unpromoted for
    /// `stray_learner_timeout_ms` is removed.
    learners_since: BTreeMap<(u64, u64), u64>,
    /// Operations this balancer finished that the map did not show yet,
    /// with when each finished (ms; [`keep_unseen`]).
    unseen: Vec<(PlanOp, u64)>,
}

impl Balancer {
    /// A balancer that starts leading now.
    pub fn new(cfg: PlannerConfig) -> Balancer {
        Balancer {
            cfg,
            start: Instant::now(),
            since_ms: 0,
            heartbeat_ms: BTreeMap::new(),
            learners_since: BTreeMap::new(),
            unseen: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// One round over `state` (the meta group's map): the operations
    /// carried out, in the plan's order, with their outcome. What it saw
    /// of the nodes goes to `seen` before any operation starts. The
    /// operations run at once and the round ends when all have; none
    /// starts if `leading` is false (this node no longer leads the meta
    /// group) or `stop` is set.
    pub async fn round(
        &mut self,
        c: &Client,
        state: &MetaState,
        leading: &dyn Fn() -> bool,
        stop: &Cell<bool>,
        seen: &dyn Fn(LivenessSeen),
    ) -> Vec<(PlanOp, Result<(), Error>)> {
        let started = Instant::now();
        // Heard from at the round's start: the round's own length (pings
        // that time out, one after the other) must not age the answers.
        let heard = self.now_ms();
        for n in state.nodes() {
            if let Ok(a) = n.client_addr.parse() {
                c.learn_node_addr(n.id, a);
            }
            if c.ping(n.id).await.is_ok() {
                self.heartbeat_ms.insert(n.id, heard);
            }
        }
        let _ = c.refresh_map().await;
        let leaders: BTreeMap<u64, NodeId> = c.known_leaders();
        // Not known (the meta leader did not answer): the meta group is
        // left alone this round.
        let roster = c.meta_roster().await.unwrap_or_default();
        note_learners(state, &roster.learners, &mut self.learners_since, heard);
        // As of the round's start, when every node was asked: however long
        // the pings of silent nodes took, one that answered is live.
        keep_unseen(&mut self.unseen, state, &leaders, heard);
        let obs = Observed {
            now_ms: heard,
            since_ms: self.since_ms,
            heartbeat_ms: self.heartbeat_ms.clone(),
            leaders,
            in_flight: self.unseen.iter().map(|(op, _)| op.clone()).collect(),
            meta_members: roster.nodes(),
            meta_learners: roster.learners,
            learners_since: self.learners_since.clone(),
        };
        seen(LivenessSeen {
            at: started,
            dead_node_timeout_ms: self.cfg.dead_node_timeout_ms,
            nodes: state
                .nodes()
                .map(|n| {
                    let silent = self
                        .heartbeat_ms
                        .get(&n.id)
                        .map(|&t| heard.saturating_sub(t));
                    (n.id, health(&self.cfg, &obs, n.id).into(), silent)
                })
                .collect(),
        });
        if !leading() || stop.get() {
            return Vec::new();
        }
        // The plan's operations touch distinct ranges, and at most
        // `moves_per_node_max` of them change any one node's replicas
        // (`plan`): they run at once, so a rebalance takes as long as
        // its slowest move per node, not the sum of all (PD and
        // CockroachDB's replicate queue also run moves concurrently,
        // limited per store). A round ends when all of them have.
        let ops = plan(state, &obs, &self.cfg);
        let peer = |n: NodeId| {
            state
                .node(n)
                .map(|r| r.peer_addr.clone())
                .unwrap_or_default()
        };
        let runs = ops
            .into_iter()
            .map(|op| {
                let peer = &peer;
                Box::pin(async move {
                    tracing::info!(?op, "balancer: carrying out");
                    let r = match op.clone() {
                        // A learner leaving (on a dead node, say) is
                        // removed: a move would add a voter in its place.
                        PlanOp::MoveReplica { range, from, .. }
                            if state
                                .ranges()
                                .get(range)
                                .and_then(|d| d.replica_on(from))
                                .is_some_and(|r| !r.role.votes()) =>
                        {
                            c.remove_replica(range, from).await
                        }
                        PlanOp::MoveReplica { range, from, to } => {
                            c.move_replica(range, from, to, &peer(to)).await.map(|_| ())
                        }
                        PlanOp::AddReplica { range, node } => {
                            c.add_replica(range, node, &peer(node)).await
                        }
                        PlanOp::RemoveReplica { range, node } => {
                            c.remove_replica(range, node).await
                        }
                        PlanOp::TransferLeader { range, to } => c.transfer_leader(range, to).await,
                        PlanOp::MoveMetaReplica { from, to } => {
                            c.move_meta_replica(from, to, &peer(to)).await.map(|_| ())
                        }
                        PlanOp::RemoveMetaLearner { node } => c
                            .meta_admin(Op::RemoveNode {
                                node,
                                below_replication_factor: false,
                            })
                            .await
                            .map(|_| ()),
                    };
                    match &r {
                        Ok(()) => tracing::info!(?op, "balancer: done"),
                        Err(e) => tracing::warn!(?op, "balancer: {e}"),
                    }
                    (op, r)
                }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>
            })
            .collect();
        let done: Vec<(PlanOp, Result<(), Error>)> = join_all(runs).await;
        let now = self.now_ms();
        for (op, r) in &done {
            if r.is_ok() && op.changes_replicas() {
                self.unseen.push((op.clone(), now));
            }
        }
        done
    }
}

/// Polls every future of `futs` until all are ready; their outputs in
/// `futs`' order.
pub(crate) async fn join_all<'a, T>(
    futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>>,
) -> Vec<T> {
    let mut futs: Vec<_> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{join_all, keep_unseen, OP_UNSEEN_WAIT_MS};
    use crate::meta::planner::Op as PlanOp;
    use crate::meta::{ClusterSettings, Epoch, MetaCmd, MetaState, RangeDesc};

    /// A finished operation stays planned as in flight until the map
    /// shows it, or for `OP_UNSEEN_WAIT_MS` at most.
    #[test]
    fn a_finished_operation_counts_as_in_flight_until_the_map_shows_it() {
        let mut state = MetaState::new();
        let mut d = RangeDesc::founding(1, Default::default(), Default::default(), &[1, 2, 3], 0);
        let cmd = MetaCmd::Bootstrap {
            settings: ClusterSettings {
                replication_factor: 3,
                shards: 1,
                key_bytes_max: 64,
                value_bytes_max: 64,
            },
            nodes: Vec::new(),
            ranges: vec![d.clone()],
        };
        state.apply(&cmd).expect("bootstraps");
        let mv = PlanOp::MoveReplica {
            range: 1,
            from: 3,
            to: 4,
        };
        let leaders = Default::default();
        let mut unseen = vec![(mv.clone(), 1_000), (mv.clone(), 0)];
        keep_unseen(&mut unseen, &state, &leaders, OP_UNSEEN_WAIT_MS);
        assert_eq!(
            unseen,
            vec![(mv.clone(), 1_000)],
            "the one finished too long ago goes"
        );
        keep_unseen(&mut unseen, &state, &leaders, OP_UNSEEN_WAIT_MS);
        assert_eq!(unseen.len(), 1, "not shown yet: kept");
        d.replicas[2].node = 4;
        d.replicas[2].replica = 4;
        d.epoch = Epoch {
            version: 1,
            conf_ver: 7,
        };
        state
            .apply(&MetaCmd::ReportRanges(vec![d]))
            .expect("a newer descriptor");
        keep_unseen(&mut unseen, &state, &leaders, OP_UNSEEN_WAIT_MS);
        assert!(unseen.is_empty(), "shown: gone");
    }
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    /// The round's operations run at once: the first future waits for a
    /// flag only the second sets (one after the other, it never ends), and
    /// the outputs keep the input's order.
    #[test]
    fn join_all_runs_every_future_at_once_and_keeps_their_order() {
        let out = crate::local_cluster::run_on_executor(|| async {
            let flag = Cell::new(false);
            let waits = async {
                while !flag.get() {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                1
            };
            let sets = async {
                flag.set(true);
                2
            };
            let futs: Vec<Pin<Box<dyn Future<Output = u32> + '_>>> =
                vec![Box::pin(waits), Box::pin(sets)];
            glommio::timer::timeout(Duration::from_secs(10), async { Ok(join_all(futs).await) })
                .await
        });
        assert_eq!(out.expect("join_all ran the futures at once"), vec![1, 2]);
    }
}
