//! The meta group's upkeep, run beside the shards of every node:
//! - each node registers its addresses (`RegisterNode`) once the meta
//!   group answers;
//! - each shard pushes the descriptors of the ranges it leads when one is
//!   elected there or its membership changes (`ReportRanges`; the higher
//!   epoch wins: TiKV's region heartbeat rule): [`run_range_reporter`];
//! - where this node's meta replica leads, the first map is written
//!   (`Bootstrap`, by a founder: settings and nodes; the ranges come from
//!   their leaders' reports), the map is reconciled with what the nodes
//!   report now and then, and the balancer runs: [`run_meta_sync`].
//!
//! It talks to the cluster as a client does (through this node's client
//! port), so everything it writes goes through the meta group's log like
//! an operator's command; nothing on the shard's turn waits for it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig};
use crate::config::ShardConfig;
use crate::group::{GroupId, Replica};
use crate::meta::{ClusterSettings, MetaCmd, MetaState, NodeRecord, NodeState, RangeDesc};
use crate::route::META_GROUP;
use crate::wire::{Op, Reply};

use super::balancer::{Balancer, LivenessSeen, BALANCE_AGAIN_MS, BALANCE_INTERVAL_MS_DEFAULT};
use crate::meta::planner::{Op as PlanOp, PlannerConfig};

/// How often the upkeep looks whether this node's meta replica leads
/// (ms; a flag the shard sets, free to look at).
pub const META_SYNC_INTERVAL_MS_DEFAULT: u64 = 1000;

/// How often the meta leader reconciles the whole map with what the
/// nodes report (ms): every node's map and ranges are read, and what the
/// meta state lacks or holds older is written. Range leaders push their
/// changes as they happen ([`run_range_reporter`]); this catches a report
/// lost with a leader that failed. After a pass that took `t`, the next
/// waits `META_SYNC_BACKOFF × t` if that is longer: a large cluster's
/// pass (it pages every node's ranges) costs the meta leader's node at
/// most 1 / (1 + META_SYNC_BACKOFF) of one client's time.
pub const META_RECONCILE_INTERVAL_MS_DEFAULT: u64 = 30_000;

/// See [`META_RECONCILE_INTERVAL_MS_DEFAULT`].
pub const META_SYNC_BACKOFF: u32 = 10;

/// How often a shard sends the range descriptors its leaders queued
/// (ms), at most [`crate::meta::META_REPORT_RANGES_MAX`] per command.
pub const RANGE_REPORT_INTERVAL_MS_DEFAULT: u64 = 100;

/// What a shard shares with the upkeep tasks on its executor (one
/// thread: `Rc`, no locks).
#[derive(Debug, Default)]
pub struct MetaLink {
    /// Descriptors of ranges this shard leads whose membership changed or
    /// whose leader was elected here, not yet reported (the latest per
    /// range).
    pub(super) reports: RefCell<BTreeMap<GroupId, RangeDesc>>,
    /// Whether this shard's meta replica leads.
    pub(super) meta_leading: Cell<bool>,
    /// The balancer's last view of the nodes, while this node leads the
    /// meta group and balances (`Op::Liveness`).
    pub(super) liveness: RefCell<Option<LivenessSeen>>,
    /// Splits this shard's leaders want (range, split key, why), not yet
    /// asked for: the reporter task takes a new range id from the meta
    /// group and sends `Op::Split` (`shard::splits`,
    /// `--range-split-bytes`, `--range-split-qps`).
    pub(super) splits_wanted: RefCell<Vec<(GroupId, bytes::Bytes, SplitCause)>>,
}

/// Why a range's leader wants it split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitCause {
    /// Its keys and values passed `--range-split-bytes`.
    Size,
    /// It served `--range-split-qps` for `--range-split-load-secs`.
    Load,
}

impl std::fmt::Display for SplitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitCause::Size => "size",
            SplitCause::Load => "load",
        })
    }
}

impl MetaLink {
    /// Queues replica `r`'s descriptor (a leader's) for the meta group.
    pub(super) fn report(&self, r: &Replica, shard: u32) {
        if let Some(d) = r.range_descriptor(shard) {
            self.reports.borrow_mut().insert(r.id, d);
        }
    }

    /// Descriptors queued and not yet reported.
    pub fn queued(&self) -> usize {
        self.reports.borrow().len()
    }

    /// Whether this shard's meta replica leads.
    pub fn meta_leading(&self) -> bool {
        self.meta_leading.get()
    }
}

/// A client of this node, reaching it through `client_addr`.
async fn connect(cluster: u64, client_addr: SocketAddr) -> Option<Client> {
    let mut cc = ClientConfig::new(vec![client_addr]);
    cc.cluster_id = cluster;
    cc.op_timeout_ms = 5_000;
    cc.fetch_ranges_at_connect = false;
    Client::connect(cc).await.ok()
}

/// Runs until `stop`, beside shard 0 of node `cfg.node`: registers the
/// node (its addresses) in the meta group once it answers, and where this
/// node's meta replica leads (`link`), writes the first map (a founder)
/// and reconciles the map every `reconcile_ms`.
pub async fn run_meta_sync(
    cfg: ShardConfig,
    client_addr: SocketAddr,
    link: Rc<MetaLink>,
    reconcile_ms: u64,
    stop: Rc<Cell<bool>>,
) {
    let interval = Duration::from_millis(META_SYNC_INTERVAL_MS_DEFAULT);
    let reconcile = Duration::from_millis(reconcile_ms.max(1));
    let mut client = None;
    let mut registered = false;
    let mut register_at = Instant::now();
    let mut register_wait = interval;
    let mut next_pass: Option<Instant> = None;
    let mut next_round: Option<Instant> = None;
    let mut balancer: Option<Balancer> = None;
    while !stop.get() {
        glommio::timer::sleep(interval).await;
        let c = match &client {
            Some(c) => c,
            None => match connect(cfg.cluster, client_addr).await {
                Some(c) => client.insert(c),
                None => continue,
            },
        };
        if !registered && Instant::now() >= register_at {
            registered = register_self(c, &cfg).await;
            // Not yet (the meta group electing, or not bootstrapped):
            // again later, less often each time.
            register_wait = (register_wait * 2).min(interval * META_SYNC_BACKOFF * 3);
            register_at = Instant::now() + register_wait;
        }
        if !link.meta_leading() {
            next_pass = None;
            next_round = None;
            balancer = None;
            link.liveness.replace(None);
            continue;
        }
        let due = |t: Option<Instant>| t.is_none_or(|t| Instant::now() >= t);
        let balancing = cfg.balancer && due(next_round);
        if !due(next_pass) && !balancing {
            continue;
        }
        let state = match c.admin(cfg.node, META_GROUP, Op::MetaState).await {
            Ok(Reply::Meta { ok: true, body }) => match MetaState::restore(&body) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("the meta group's state does not decode: {e}");
                    continue;
                }
            },
            _ => continue,
        };
        if state.settings().is_none() {
            if cfg.voters.is_empty() {
                continue;
            }
            match c.meta(&bootstrap_cmd(&cfg)).await {
                Ok(_) => {
                    tracing::info!("meta group bootstrapped: the cluster's first map is written")
                }
                Err(e) => tracing::debug!("meta bootstrap: {e}"),
            }
            continue;
        }
        if due(next_pass) {
            let t = Instant::now();
            if let Err(e) = sync_once(c, &state).await {
                tracing::debug!("meta upkeep: {e}");
            }
            next_pass = Some(Instant::now() + reconcile.max(t.elapsed() * META_SYNC_BACKOFF));
        }
        if balancing {
            // A balancer per term of leadership: what it heard of the
            // nodes is not replicated (see `balancer`).
            let b = balancer.get_or_insert_with(|| {
                Balancer::new(PlannerConfig {
                    dead_node_timeout_ms: cfg.dead_node_timeout_ms,
                    stray_learner_timeout_ms: cfg.stray_learner_timeout_ms,
                    ..PlannerConfig::default()
                })
            });
            let leading = || link.meta_leading();
            let seen = |s| {
                link.liveness.replace(Some(s));
            };
            let done = b.round(c, &state, &leading, &stop, &seen).await;
            // A leader transfer is only asked for when it returns: the
            // next round would still see the old leader and ask again.
            let changed = done
                .iter()
                .any(|(op, r)| r.is_ok() && !matches!(op, PlanOp::TransferLeader { .. }));
            let wait = if changed {
                BALANCE_AGAIN_MS
            } else {
                BALANCE_INTERVAL_MS_DEFAULT
            };
            next_round = Some(Instant::now() + Duration::from_millis(wait));
        }
    }
}

/// This node's addresses into the meta group (`RegisterNode`); whether
/// it was taken (or refused for good, said in the log).
async fn register_self(c: &Client, cfg: &ShardConfig) -> bool {
    let cmd = MetaCmd::RegisterNode {
        node: cfg.node,
        peer_addr: cfg.peer_addr.clone(),
        client_addr: cfg.client_addr.clone(),
        shards: cfg.shards,
    };
    match c.meta(&cmd).await {
        Ok(_) => {
            tracing::info!("registered in the meta group");
            true
        }
        Err(crate::client::Error::Server(crate::wire::ClientError::Failed { reason }))
            if !reason.contains("not bootstrapped") =>
        {
            tracing::error!("the meta group refused this node: {reason}");
            true
        }
        Err(_) => false,
    }
}

/// Runs until `stop`, beside every shard: sends the range descriptors the
/// shard's leaders queued (`link`) to the meta group, at most
/// [`crate::meta::META_REPORT_RANGES_MAX`] per command, every
/// `interval_ms`; a batch that fails stays queued (unless a newer
/// descriptor of its range was queued meanwhile) and is sent again.
pub async fn run_range_reporter(
    cluster: u64,
    client_addr: SocketAddr,
    link: Rc<MetaLink>,
    interval_ms: u64,
    stop: Rc<Cell<bool>>,
) {
    let interval = Duration::from_millis(interval_ms.max(1));
    let mut client = None;
    let mut wait = interval;
    let mut failing = interval;
    while !stop.get() {
        glommio::timer::sleep(wait).await;
        wait = interval;
        if link.queued() == 0 && link.splits_wanted.borrow().is_empty() {
            continue;
        }
        let c = match &client {
            Some(c) => c,
            None => match connect(cluster, client_addr).await {
                Some(c) => client.insert(c),
                None => {
                    failing = (failing * 2).min(REPORT_BACKOFF_MAX);
                    wait = failing;
                    continue;
                }
            },
        };
        let wanted = std::mem::take(&mut *link.splits_wanted.borrow_mut());
        for (range, key, cause) in wanted {
            match c.split_range(range, &key).await {
                Ok(d) => tracing::info!(
                    range,
                    new_range = d.right,
                    key = %crate::meta::show_key(&key),
                    "range split by {cause}"
                ),
                // Asked again once it is still too large or too busy
                // (`RANGE_SPLIT_RETRY_MS`): its leadership may have moved,
                // the key may be another range's now.
                Err(e) => tracing::warn!(
                    range,
                    key = %crate::meta::show_key(&key),
                    "range not split by {cause}: {e}"
                ),
            }
        }
        if link.queued() == 0 {
            continue;
        }
        let batch: Vec<RangeDesc> = {
            let mut q = link.reports.borrow_mut();
            let first = report_batch(q.values()).len();
            let ids: Vec<GroupId> = q.keys().take(first).copied().collect();
            ids.iter().filter_map(|g| q.remove(g)).collect()
        };
        match c.meta(&MetaCmd::ReportRanges(batch.clone())).await {
            Ok(_) => failing = interval,
            // Refused by the state machine for good (every replica would
            // refuse it alike): dropped, said; the reconcile pass and the
            // next change report the range again.
            Err(crate::client::Error::Server(
                crate::wire::ClientError::Failed { reason }
                | crate::wire::ClientError::BadRequest { reason },
            )) if !reason.contains("not bootstrapped") => {
                tracing::warn!(ranges = batch.len(), "range report refused: {reason}");
            }
            Err(e) => {
                tracing::debug!(ranges = batch.len(), "range report not taken yet: {e}");
                let mut q = link.reports.borrow_mut();
                for d in batch {
                    q.entry(d.id).or_insert(d);
                }
                // The meta group may be electing, or not bootstrapped
                // yet, or gone (a cluster from before it): less often.
                failing = (failing * 2).min(REPORT_BACKOFF_MAX);
                wait = failing;
            }
        }
    }
}

/// The longest pause between a shard's attempts to report while the meta
/// group does not take reports.
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One pass: every node the cluster maps name that the meta state lacks,
/// or knows at other addresses, is registered; every range descriptor the
/// nodes report that is newer than the state's is reported.
async fn sync_once(c: &Client, state: &MetaState) -> Result<(), crate::client::Error> {
    c.refresh_map().await?;
    let shards = state.settings().map_or(0, |s| s.shards);
    for (id, addr) in c.nodes() {
        let client_addr = addr.to_string();
        let peer_addr = c.peer_addr(id).unwrap_or_default();
        // Only what the map lacks: a node registers its own addresses,
        // and this client's view of them may be older.
        let (peer, client) = match state.node(id) {
            Some(n) if n.state == NodeState::Decommissioned => continue,
            Some(n) => {
                let fill = |held: &str, seen: String| {
                    if held.is_empty() {
                        seen
                    } else {
                        held.to_string()
                    }
                };
                let peer = fill(&n.peer_addr, peer_addr);
                let client = fill(&n.client_addr, client_addr);
                if peer == n.peer_addr && client == n.client_addr {
                    continue;
                }
                (peer, client)
            }
            None => (peer_addr, client_addr),
        };
        let cmd = MetaCmd::RegisterNode {
            node: id,
            peer_addr: peer,
            client_addr: client,
            shards,
        };
        c.meta(&cmd).await?;
        tracing::info!(node = id, "meta: node registered");
    }
    c.fetch_ranges(b"", true).await;
    let newer: Vec<_> = c
        .ranges()
        .into_iter()
        .filter(|d| {
            state
                .ranges()
                .get(d.id)
                .is_none_or(|held| held.epoch.is_stale_against(&d.epoch))
        })
        .collect();
    let mut rest = &newer[..];
    while !rest.is_empty() {
        let n = report_batch(rest.iter()).len();
        c.meta(&MetaCmd::ReportRanges(rest[..n].to_vec())).await?;
        tracing::info!(ranges = n, "meta: range descriptors reported");
        rest = &rest[n..];
    }
    Ok(())
}

/// The first descriptors of `descs` that go in one report: at most
/// [`crate::meta::META_REPORT_RANGES_MAX`] of them and half of
/// [`crate::meta::META_CMD_BYTES_MAX`] in bytes (descriptors with long
/// keys are large), at least one.
fn report_batch<'a>(descs: impl Iterator<Item = &'a RangeDesc>) -> Vec<&'a RangeDesc> {
    let mut bytes = 0;
    let mut out = Vec::new();
    for d in descs.take(crate::meta::META_REPORT_RANGES_MAX) {
        bytes += d.encoded_len() + 4;
        if !out.is_empty() && bytes > crate::meta::META_CMD_BYTES_MAX / 2 {
            break;
        }
        out.push(d);
    }
    out
}

/// The cluster's first map, as a founder has it: the settings it was
/// started with and the founding nodes (their peer addresses from
/// `--peers`; each node registers its client address itself). No ranges:
/// their leaders report them (one entry for every initial range would
/// outgrow a WAL record with enough groups). Every founder writes the
/// same (their flags agree: the handshake's fingerprint), so whichever
/// leads first wins and the others' are `Done`.
pub fn bootstrap_cmd(cfg: &ShardConfig) -> MetaCmd {
    let settings = ClusterSettings {
        replication_factor: cfg.replication_factor,
        shards: cfg.shards,
        key_bytes_max: cfg.key_bytes_max as u32,
        value_bytes_max: cfg.value_bytes_max as u32,
    };
    let nodes = cfg
        .voters
        .iter()
        .map(|&id| {
            let (peer_addr, client_addr) = if id == cfg.node {
                (cfg.peer_addr.clone(), cfg.client_addr.clone())
            } else {
                let peer = cfg.founder_peer_addr(id).unwrap_or_default();
                (peer, String::new())
            };
            NodeRecord {
                id,
                peer_addr,
                client_addr,
                shards: cfg.shards,
                state: NodeState::Active,
            }
        })
        .collect();
    MetaCmd::Bootstrap {
        settings,
        nodes,
        ranges: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Epoch, RangeReplica, ReplicaRole};

    fn desc(id: u64, key_bytes: usize) -> RangeDesc {
        let key = |b: u8| bytes::Bytes::from(vec![b; key_bytes]);
        RangeDesc {
            id,
            start: key(1),
            end: key(2),
            epoch: Epoch {
                version: 1,
                conf_ver: 0,
            },
            replicas: vec![RangeReplica {
                replica: 1,
                node: 1,
                shard: 0,
                role: ReplicaRole::Voter,
            }],
        }
    }

    /// A report holds at most META_REPORT_RANGES_MAX descriptors and half
    /// of META_CMD_BYTES_MAX (256 descriptors with 4 KiB keys are 2 MiB,
    /// above the command limit: the reporter re-sent the same refused
    /// batch forever), and at least one.
    #[test]
    fn report_batches_are_bounded_by_count_and_bytes() {
        let small: Vec<_> = (0..300).map(|i| desc(i, 8)).collect();
        assert_eq!(
            report_batch(small.iter()).len(),
            crate::meta::META_REPORT_RANGES_MAX
        );
        let big: Vec<_> = (0..300).map(|i| desc(i, 4096)).collect();
        let n = report_batch(big.iter()).len();
        let bytes: usize = big[..n].iter().map(|d| d.encoded_len() + 4).sum();
        assert!(
            n > 1 && bytes <= crate::meta::META_CMD_BYTES_MAX / 2,
            "{n} {bytes}"
        );
        let huge = [desc(0, 600_000)];
        assert_eq!(report_batch(huge.iter()).len(), 1, "at least one");
        let cmd = MetaCmd::ReportRanges(big[..n].to_vec()).encode();
        assert!(cmd.len() <= crate::meta::META_CMD_BYTES_MAX);
    }
}
