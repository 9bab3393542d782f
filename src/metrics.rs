//! Metrics in the OpenMetrics text format (Prometheus reads it) over
//! HTTP (`--metrics-addr`), encoded by the `prometheus-client` crate and
//! served by `tiny_http` on a thread of its own, off the executors.
//!
//! Each shard publishes a snapshot of its counters once a second into its
//! own slot (one lock per shard per second, never on the hot path, and
//! never waited for: a slot being rendered is skipped until the next
//! second), with only the groups whose state changed since (a Ready, a
//! creation, a destruction): the slot keeps every group's last state, so a
//! shard of 100,000 quiesced groups publishes none of them. A scrape
//! encodes every slot ([`NodeCollector`], a `prometheus-client`
//! collector), the process's own figures (`process_*`, from `/proc`) and
//! `ringraft_build_info`.
//!
//! Paths: `GET`/`HEAD` `/metrics`; `/health` (200 while the process
//! serves HTTP: liveness); `/ready` (200 once every shard has published,
//! that is runs its loop with its replicas loaded; 503 before, naming the
//! shards not ready).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Counters of a shard (monotonic).
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    pub turns: u64,
    pub readies: u64,
    /// Replicas looked at for a Ready (the work set's size, summed over
    /// turns): what a turn costs, whatever the shard hosts.
    pub ready_checks: u64,
    /// Replicas ticked (the awake set's size, summed over ticks): with
    /// every group quiesced, it stops growing (`shard::work`).
    pub replicas_ticked: u64,
    /// Elections started at ticks: followers' (at most
    /// `campaigns_per_tick_max` per tick, `campaigns_in_flight_max` at
    /// once) and candidates' retries.
    pub campaigns: u64,
    pub wal_records: u64,
    pub proposals: u64,
    pub applied: u64,
    pub reads: u64,
    pub snapshots_taken: u64,
    /// Snapshots not taken when due: `SNAPSHOT_WRITES_MAX` writes were
    /// under way, or the turn had taken `SNAPSHOT_TAKE_BYTES_PER_TURN`
    /// (taken at a later apply or unpinning pass).
    pub snapshots_deferred: u64,
    pub snapshots_installed: u64,
    /// Bytes of snapshot chunks sent (`--snapshot-send-bytes-per-sec`).
    pub snapshot_bytes_sent: u64,
    /// Snapshot chunks held back by that budget (sent again later).
    pub snapshot_chunks_held: u64,
    /// Snapshot chunks read from a snapshot file to send
    /// (`raft::SnapshotRead`), and reads that failed (sent again later).
    pub snapshot_chunks_read: u64,
    pub snapshot_reads_failed: u64,
    pub msgs_unknown_group: u64,
    /// Replicas created by a message (`shard/replicas.rs`: the rule).
    pub replicas_created_by_message: u64,
    /// Ranges this shard created from a split entry its replica of the
    /// parent applied (`shard/splits.rs`).
    pub ranges_split: u64,
    /// Creating heartbeats that did not create a replica yet (its group's
    /// heartbeats came for less than an election timeout).
    pub replica_creations_deferred: u64,
    /// Split entries naming a new range id that another range holds here
    /// (never, with ids from the meta group).
    pub splits_conflicting: u64,
    /// Split entries applied by a replica added to the range after the
    /// split, which does not make the new range
    /// (`group::split_makes_replica`).
    pub splits_not_member: u64,
    /// Keys a split left outside a replica's bounds, trimmed since
    /// (`SPLIT_TRIM_KEYS_PER_TICK` per tick).
    pub split_keys_trimmed: u64,
    /// Splits this shard's leaders asked for because a range passed
    /// `--range-split-bytes`, and because one served `--range-split-qps`
    /// for `--range-split-load-secs` (each at most once per
    /// `RANGE_SPLIT_RETRY_MS`).
    pub splits_asked_by_size: u64,
    pub splits_asked_by_load: u64,
    /// `Removed` answers sent to non-members that asked for votes.
    pub removed_notices_sent: u64,
    /// Replicas destroyed because a member said they were removed, or a
    /// leader seeded a newer replica of their group on this node.
    pub replicas_removed_by_notice: u64,
    /// Peer messages addressed to another replica of a hosted group.
    pub msgs_other_replica: u64,
    /// Peer messages from a member that came from another node than its own.
    pub msgs_misplaced: u64,
    /// Messages to a replica whose node is not known: dropped.
    pub msgs_unplaced: u64,
    /// Hard states written again so that old WAL segments can be released
    /// (idle groups, batched: one sync per batch).
    pub hard_state_rewrites: u64,
    /// Syncs waited for those rewrites (one per batch).
    pub hard_state_rewrite_syncs: u64,
    /// Of those rewrites, the ones that held the group's whole log too
    /// (small logs, instead of a snapshot: `WAL_REWRITE_LOG_BYTES_MAX`).
    pub log_rewrites: u64,
    /// Snapshots the WAL unpinning pass took to release segments a group's
    /// entries pinned.
    pub wal_unpin_snapshots: u64,
    /// Groups still being written that a pass left to their own compaction
    /// (`--wal-pin-bytes-max`), counted at each pass that left them.
    pub wal_pins_left: u64,
    /// Unpinning passes that walked the shard's groups.
    pub wal_unpin_walks: u64,
    pub errors_not_leader: u64,
    pub errors_timeout: u64,
    pub errors_busy: u64,
    pub errors_disk_full: u64,
    /// Times the disk filled up.
    pub disk_full_events: u64,
    /// 1 while the disk is full.
    pub disk_full: u64,
    /// Replicas hosted (a gauge).
    pub groups: u64,
    /// Replicas that tick (not quiesced; a gauge).
    pub groups_awake: u64,
    /// Replicas campaigning (pre-candidates and candidates; a gauge, at
    /// most `campaigns_in_flight_max` but for leader transfers).
    pub candidates: u64,
    /// Nodes this shard dials (a gauge): the members of its groups.
    pub peer_links: u64,
}

use hdrhistogram::Histogram;

use crate::transport::{ClientStats, TransportStats};

/// One group as the metrics show it.
#[derive(Debug, Clone, Default)]
pub struct GroupMetrics {
    pub group: u64,
    /// The `role` label's value ([`role_name`]).
    pub role: &'static str,
    pub term: u64,
    pub leader: u64,
    pub commit: u64,
    pub applied: u64,
    /// Leader only: AppendEntries in flight per follower.
    pub inflight: Vec<(u64, usize)>,
}

/// What one shard publishes besides its groups (`MetricsHub::try_publish`).
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    pub shard: u32,
    pub stats: ShardStats,
    pub transport: TransportStats,
    pub clients: ClientStats,
    pub wal_syncs: u64,
    pub wal_records: u64,
    pub wal_bytes_written: u64,
    /// Bytes of WAL segments flushes took (`WalStats::segment_bytes_used`).
    pub wal_segment_bytes_used: u64,
    /// Nudges of late WAL writes (`ringraft_wal::WRITE_NUDGE_MS`).
    pub wal_write_nudges: u64,
    pub wal_sync_latency_us: Histogram<u64>,
    pub wal_batch_records: Histogram<u64>,
    /// Entries per AppendEntries sent.
    pub append_entries: Histogram<u64>,
}

/// One shard's slot: its last counters and every group's last state.
#[derive(Debug, Default)]
pub struct Slot {
    pub shard: Option<ShardMetrics>,
    pub groups: BTreeMap<u64, GroupMetrics>,
}

/// The slots of every shard.
#[derive(Clone)]
pub struct MetricsHub {
    slots: Arc<Vec<Mutex<Slot>>>,
}

impl MetricsHub {
    pub fn new(shards: u32) -> MetricsHub {
        MetricsHub {
            slots: Arc::new((0..shards).map(|_| Mutex::new(Slot::default())).collect()),
        }
    }

    /// Publishes shard `m.shard`'s counters and the groups that changed
    /// (`None`: no longer hosted), if its slot is free: false when the
    /// metrics thread holds it (a render under way), and nothing changed;
    /// the shard keeps its changes for the next second rather than wait
    /// on an executor thread.
    pub fn try_publish(
        &self,
        m: ShardMetrics,
        changed: impl IntoIterator<Item = (u64, Option<GroupMetrics>)>,
    ) -> bool {
        let Ok(mut slot) = self.slots[m.shard as usize].try_lock() else {
            return false;
        };
        for (g, gm) in changed {
            match gm {
                Some(gm) => slot.groups.insert(g, gm),
                None => slot.groups.remove(&g),
            };
        }
        slot.shard = Some(m);
        true
    }

    /// The shards that have not published yet (`/ready` waits for none).
    pub fn not_ready(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lock().expect("metrics slot").shard.is_none())
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// The OpenMetrics text of every published shard, the process's
    /// figures and the build's, as node `node`'s `/metrics` answers.
    pub fn render(&self, node: u64) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector {
            hub: self.clone(),
            node,
        }));
        registry.register_collector(Box::new(ProcessCollector));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("encoding into a String cannot fail");
        out
    }

    /// Serves `/metrics`, `/health` and `/ready` (see the module docs) on
    /// `addr` from a thread of its own. Returns the address bound.
    ///
    /// # Errors
    /// The address cannot be bound (taken, or not this host's).
    pub fn serve(&self, addr: SocketAddr, node: u64) -> std::io::Result<SocketAddr> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("metrics server bound no IP address"))?;
        let hub = self.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let (status, body, kind) = hub.answer(req.method(), req.url(), node);
                    let header = tiny_http::Header::from_bytes("Content-Type", kind)
                        .expect("a valid header");
                    let r = tiny_http::Response::from_string(body)
                        .with_status_code(status)
                        .with_header(header);
                    // HEAD gets the headers only (tiny_http drops the
                    // body); a client gone mid-answer is its loss.
                    let _ = req.respond(r);
                }
            })?;
        Ok(bound)
    }

    /// Status, body and content type for `method` on `url`.
    fn answer(
        &self,
        method: &tiny_http::Method,
        url: &str,
        node: u64,
    ) -> (u16, String, &'static str) {
        use tiny_http::Method::{Get, Head};
        const TEXT: &str = "text/plain; charset=utf-8";
        if !matches!(method, Get | Head) {
            return (
                405,
                format!("{method} is not served: use GET or HEAD\n"),
                TEXT,
            );
        }
        let path = url.split('?').next().unwrap_or("");
        match path {
            "/metrics" => (200, self.render(node), OPENMETRICS),
            "/health" => (200, "ok\n".into(), TEXT),
            "/ready" => match self.not_ready() {
                waiting if waiting.is_empty() => (200, "ready\n".into(), TEXT),
                waiting => (
                    503,
                    format!("not ready: shards {waiting:?} have not loaded their replicas yet\n"),
                    TEXT,
                ),
            },
            other => (
                404,
                format!("no {other} here: try /metrics, /health or /ready\n"),
                TEXT,
            ),
        }
    }
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes every published slot of a node's [`MetricsHub`] at each scrape
/// (a `prometheus-client` collector: the shards' counters are theirs,
/// published once a second, not the library's own metric objects).
#[derive(Debug)]
pub struct NodeCollector {
    hub: MetricsHub,
    node: u64,
}

impl std::fmt::Debug for MetricsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricsHub({} shards)", self.slots.len())
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let guards: Vec<_> = self
            .hub
            .slots
            .iter()
            .map(|s| s.lock().expect("metrics slot"))
            .collect();
        let slots: Vec<&Slot> = guards.iter().map(|g| &**g).collect();
        encode_slots(&mut enc, self.node, &slots)
    }
}

/// Labels of one series.
type Labels = Vec<(&'static str, String)>;

/// One family of constant values: a counter (`name` given with its
/// `_total`, which the encoder adds back) or a gauge.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl Iterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let base = match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let mut m = enc.encode_descriptor(base, help, None, kind)?;
    for (labels, v) in rows {
        let series = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(series)?,
            _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(series)?,
        }
    }
    Ok(())
}

/// A histogram family: the values of each shard's `hdrhistogram` are in
/// `scale`s of the unit (µs as 1e-6 for seconds), cut at `bounds`. A
/// bucket counts the whole `hdrhistogram` bucket its bound falls in (its
/// precision: 0.1% at 3 significant figures, 1% at 2), so a value just
/// above a bound may count below it.
struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    scale: f64,
}

/// Encodes `fam` from each shard's histogram `h`.
fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    node: u64,
    shards: &[&ShardMetrics],
    fam: HistogramFamily,
    h: impl Fn(&ShardMetrics) -> &Histogram<u64>,
) -> Result<(), std::fmt::Error> {
    let HistogramFamily {
        name,
        help,
        bounds,
        scale,
    } = fam;
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for s in shards {
        let h = h(s);
        let mut buckets = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0u64;
        for &b in bounds {
            let upto = (b / scale).floor() as u64;
            let n = if h.is_empty() {
                0
            } else {
                h.count_between(0, upto)
            };
            buckets.push((b, n.saturating_sub(below)));
            below = below.max(n);
        }
        // The encoder writes `f64::MAX` as "+Inf" (as its own
        // histograms' last bucket).
        buckets.push((f64::MAX, h.len().saturating_sub(below)));
        let sum = if h.is_empty() {
            0.0
        } else {
            h.mean() * h.len() as f64 * scale
        };
        m.encode_family(&shard_labels(node, s.shard))?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum,
                h.len(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

/// A replica's role as the `role` label gives it: a follower that is a
/// non-voting member shows as "learner".
pub fn role_name(role: crate::raft::Role, learner: bool) -> &'static str {
    use crate::raft::Role;
    match role {
        Role::Follower if learner => "learner",
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// The `node` and `shard` labels of a shard's series.
fn shard_labels(node: u64, shard: u32) -> Labels {
    vec![("node", node.to_string()), ("shard", shard.to_string())]
}

/// A metric family: name, help, and how to read it.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Encodes the shards' slots (each family once).
fn encode_slots(
    enc: &mut DescriptorEncoder<'_>,
    node: u64,
    slots: &[&Slot],
) -> Result<(), std::fmt::Error> {
    // Borrowed, not cloned: the slots are locked for the scrape anyway.
    let shards: Vec<&ShardMetrics> = slots.iter().filter_map(|s| s.shard.as_ref()).collect();
    let shards = &shards[..];
    let groups: Vec<(u32, &GroupMetrics)> = slots
        .iter()
        .filter_map(|s| Some((s.shard.as_ref()?.shard, &s.groups)))
        .flat_map(|(shard, gs)| gs.values().map(move |g| (shard, g)))
        .collect();
    let group_labels = |shard: u32, g: &GroupMetrics| -> Labels {
        let mut l = shard_labels(node, shard);
        l.push(("group", g.group.to_string()));
        l
    };
    family(
        enc,
        "ringraft_group_role",
        "1 for the replica's role (role label: leader, follower, learner, candidate, pre-candidate)",
        MetricType::Gauge,
        groups.iter().map(|&(shard, g)| {
            let mut l = group_labels(shard, g);
            l.push(("role", g.role.to_string()));
            (l, 1)
        }),
    )?;
    let per_group: [Family<GroupMetrics>; 4] = [
        ("ringraft_group_term", "current term", |g| g.term),
        (
            "ringraft_group_leader",
            "leader's node id (0: unknown)",
            |g| g.leader,
        ),
        ("ringraft_group_commit_index", "commit index", |g| g.commit),
        ("ringraft_group_applied_index", "applied index", |g| {
            g.applied
        }),
    ];
    for (name, help, f) in per_group {
        family(
            enc,
            name,
            help,
            MetricType::Gauge,
            groups
                .iter()
                .map(|&(shard, g)| (group_labels(shard, g), f(g))),
        )?;
    }
    family(
        enc,
        "ringraft_append_inflight",
        "AppendEntries in flight from a leader to a follower",
        MetricType::Gauge,
        groups.iter().flat_map(|&(shard, g)| {
            g.inflight.iter().map(move |&(peer, n)| {
                let mut l = group_labels(shard, g);
                l.push(("peer", peer.to_string()));
                (l, n as u64)
            })
        }),
    )?;
    let counters: [Family<ShardMetrics>; 59] = [
        (
            "ringraft_errors_disk_full_total",
            "writes refused because the disk is full",
            |s| s.stats.errors_disk_full,
        ),
        (
            "ringraft_disk_full_events_total",
            "times the disk filled up",
            |s| s.stats.disk_full_events,
        ),
        ("ringraft_proposals_total", "writes proposed", |s| {
            s.stats.proposals
        }),
        ("ringraft_reads_total", "reads received", |s| s.stats.reads),
        ("ringraft_applied_entries_total", "entries applied", |s| {
            s.stats.applied
        }),
        ("ringraft_readies_total", "Raft Readies processed", |s| {
            s.stats.readies
        }),
        (
            "ringraft_ready_checks_total",
            "replicas looked at for a Ready (the turns' work sets)",
            |s| s.stats.ready_checks,
        ),
        (
            "ringraft_replicas_ticked_total",
            "replicas ticked (quiesced replicas are not)",
            |s| s.stats.replicas_ticked,
        ),
        (
            "ringraft_campaigns_total",
            "elections started at ticks (new ones: campaigns_per_tick_max per tick, campaigns_in_flight_max at once)",
            |s| s.stats.campaigns,
        ),
        ("ringraft_turns_total", "shard loop turns", |s| {
            s.stats.turns
        }),
        ("ringraft_snapshots_taken_total", "snapshots taken", |s| {
            s.stats.snapshots_taken
        }),
        (
            "ringraft_snapshots_deferred_total",
            "snapshots put off while SNAPSHOT_WRITES_MAX writes were under way or the turn had taken SNAPSHOT_TAKE_BYTES_PER_TURN",
            |s| s.stats.snapshots_deferred,
        ),
        (
            "ringraft_snapshots_installed_total",
            "snapshots installed from a leader",
            |s| s.stats.snapshots_installed,
        ),
        (
            "ringraft_snapshot_bytes_sent_total",
            "bytes of snapshot chunks sent to followers",
            |s| s.stats.snapshot_bytes_sent,
        ),
        (
            "ringraft_snapshot_chunks_held_total",
            "snapshot chunks held back by --snapshot-send-bytes-per-sec (sent again later)",
            |s| s.stats.snapshot_chunks_held,
        ),
        (
            "ringraft_snapshot_chunks_read_total",
            "snapshot chunks read from snapshot files to send to followers",
            |s| s.stats.snapshot_chunks_read,
        ),
        (
            "ringraft_snapshot_reads_failed_total",
            "snapshot chunk reads that failed (the chunk is sent again later)",
            |s| s.stats.snapshot_reads_failed,
        ),
        (
            "ringraft_errors_not_leader_total",
            "requests answered NotLeader",
            |s| s.stats.errors_not_leader,
        ),
        (
            "ringraft_errors_timeout_total",
            "requests answered Timeout",
            |s| s.stats.errors_timeout,
        ),
        (
            "ringraft_errors_busy_total",
            "requests answered Busy",
            |s| s.stats.errors_busy,
        ),
        (
            "ringraft_msgs_unknown_group_total",
            "peer messages for a group this shard does not host",
            |s| s.stats.msgs_unknown_group,
        ),
        (
            "ringraft_replicas_created_by_message_total",
            "replicas created by their leader's snapshot (the rule in shard/replicas.rs)",
            |s| s.stats.replicas_created_by_message,
        ),
        (
            "ringraft_ranges_split_total",
            "ranges created on this shard by a split entry of their parent",
            |s| s.stats.ranges_split,
        ),
        (
            "ringraft_replica_creations_deferred_total",
            "leaders' heartbeats that did not create a replica yet (an election timeout first)",
            |s| s.stats.replica_creations_deferred,
        ),
        (
            "ringraft_splits_conflicting_total",
            "split entries naming a range id another range holds here",
            |s| s.stats.splits_conflicting,
        ),
        (
            "ringraft_splits_not_member_total",
            "split entries applied by a replica added after the split (the new range is not made here)",
            |s| s.stats.splits_not_member,
        ),
        (
            "ringraft_split_keys_trimmed_total",
            "keys a split left outside a replica's bounds, trimmed since",
            |s| s.stats.split_keys_trimmed,
        ),
        (
            "ringraft_splits_asked_by_size_total",
            "times a range this shard leads passed range-split-bytes and its split key was looked for (at most once per RANGE_SPLIT_RETRY_MS; a range of one key is not split)",
            |s| s.stats.splits_asked_by_size,
        ),
        (
            "ringraft_splits_asked_by_load_total",
            "splits this shard's leaders asked for: a range served range-split-qps for range-split-load-secs",
            |s| s.stats.splits_asked_by_load,
        ),
        (
            "ringraft_removed_notices_sent_total",
            "vote requests from non-members answered that they were removed",
            |s| s.stats.removed_notices_sent,
        ),
        (
            "ringraft_replicas_removed_by_notice_total",
            "replicas destroyed because a member said they were removed while down, or a leader seeded a newer replica of the group here",
            |s| s.stats.replicas_removed_by_notice,
        ),
        (
            "ringraft_msgs_other_replica_total",
            "peer messages addressed to another replica id of a group hosted here (a removed or a newer one): dropped",
            |s| s.stats.msgs_other_replica,
        ),
        (
            "ringraft_msgs_misplaced_total",
            "peer messages from a member replica that came from another node than the one it is placed on: dropped",
            |s| s.stats.msgs_misplaced,
        ),
        (
            "ringraft_hard_state_rewrites_total",
            "hard states written again so old WAL segments can be released (idle groups; one sync per batch)",
            |s| s.stats.hard_state_rewrites,
        ),
        (
            "ringraft_hard_state_rewrite_syncs_total",
            "syncs waited for hard-state rewrites (one per batch of idle groups)",
            |s| s.stats.hard_state_rewrite_syncs,
        ),
        (
            "ringraft_log_rewrites_total",
            "of the hard-state rewrites, those that held the group's whole small log too (instead of a snapshot file)",
            |s| s.stats.log_rewrites,
        ),
        (
            "ringraft_wal_unpin_snapshots_total",
            "snapshots taken to release WAL segments a group's entries pinned",
            |s| s.stats.wal_unpin_snapshots,
        ),
        (
            "ringraft_wal_pins_left_total",
            "groups still being written left to their own compaction by a WAL unpinning pass (--wal-pin-bytes-max), per pass",
            |s| s.stats.wal_pins_left,
        ),
        (
            "ringraft_wal_unpin_walks_total",
            "WAL unpinning passes that walked the shard's groups",
            |s| s.stats.wal_unpin_walks,
        ),
        (
            "ringraft_msgs_unplaced_total",
            "messages to a replica whose node is not known (not a member, never heard from): dropped",
            |s| s.stats.msgs_unplaced,
        ),
        (
            "ringraft_wal_syncs_total",
            "WAL flushes (one fdatasync each)",
            |s| s.wal_syncs,
        ),
        (
            "ringraft_wal_records_total",
            "WAL records made durable",
            |s| s.wal_records,
        ),
        (
            "ringraft_wal_bytes_written_total",
            "bytes written to WAL segments",
            |s| s.wal_bytes_written,
        ),
        (
            "ringraft_wal_segment_bytes_used_total",
            "bytes of WAL segments that flushes took (their records and any zero gap before them): what fills segments, against the whole blocks each flush writes",
            |s| s.wal_segment_bytes_used,
        ),
        (
            "ringraft_wal_write_nudges_total",
            "WAL writes outstanding past 50 ms whose io_uring ring was nudged (a one-block read) to post their completion",
            |s| s.wal_write_nudges,
        ),
        (
            "ringraft_peer_msgs_queued_total",
            "Raft messages queued to peers",
            |s| s.transport.msgs_queued,
        ),
        (
            "ringraft_peer_msgs_dropped_total",
            "Raft messages dropped (link down or queue full)",
            |s| s.transport.msgs_dropped,
        ),
        (
            "ringraft_peer_msgs_received_total",
            "Raft messages received",
            |s| s.transport.msgs_received,
        ),
        ("ringraft_peer_disconnects_total", "peer links lost", |s| {
            s.transport.disconnects
        }),
        ("ringraft_peer_pings_total", "pings sent on idle peer links", |s| {
            s.transport.pings_sent
        }),
        (
            "ringraft_heartbeats_coalesced_total",
            "heartbeats and answers sent as records of coalesced frames",
            |s| s.transport.heartbeats_coalesced,
        ),
        (
            "ringraft_heartbeat_frames_total",
            "coalesced heartbeat frames sent (one per link per write, up to 1024 records)",
            |s| s.transport.heartbeat_frames,
        ),
        (
            "ringraft_peers_silent_total",
            "peers reported unreachable for their silence (peer_silence_ms)",
            |s| s.transport.peers_silent,
        ),
        (
            "ringraft_peer_conns_rejected_total",
            "peer connections closed for bad input",
            |s| s.transport.conns_rejected,
        ),
        (
            "ringraft_client_requests_total",
            "client requests received",
            |s| s.clients.requests,
        ),
        (
            "ringraft_client_bad_requests_total",
            "malformed client requests answered",
            |s| s.clients.bad_requests,
        ),
        (
            "ringraft_client_conns_refused_full_total",
            "client connections refused because client-conns-max were open",
            |s| s.clients.conns_refused_full,
        ),
        (
            "ringraft_client_conns_closed_idle_total",
            "client connections closed after client-idle-timeout-ms idle",
            |s| s.clients.conns_closed_idle,
        ),
        (
            "ringraft_peer_handshakes_refused_total",
            "handshakes refused at either end (cluster, version, store incarnation)",
            |s| s.transport.handshakes_refused,
        ),
    ];
    for (name, help, f) in counters {
        let rows = shards.iter().map(|s| (shard_labels(node, s.shard), f(s)));
        family(enc, name, help, MetricType::Counter, rows)?;
    }
    let gauges: [Family<ShardMetrics>; 5] = [
        (
            "ringraft_disk_full",
            "1 while the shard's disk is full",
            |s| s.stats.disk_full,
        ),
        ("ringraft_groups", "replicas hosted", |s| s.stats.groups),
        (
            "ringraft_groups_awake",
            "replicas that tick (the others are quiesced)",
            |s| s.stats.groups_awake,
        ),
        (
            "ringraft_candidates",
            "replicas campaigning (campaigns_in_flight_max at most, but for leader transfers)",
            |s| s.stats.candidates,
        ),
        (
            "ringraft_peer_links",
            "nodes the shard dials: the other members of its groups",
            |s| s.stats.peer_links,
        ),
    ];
    for (name, help, f) in gauges {
        let rows = shards.iter().map(|s| (shard_labels(node, s.shard), f(s)));
        family(enc, name, help, MetricType::Gauge, rows)?;
    }
    type Of = fn(&ShardMetrics) -> &Histogram<u64>;
    let histograms: [(HistogramFamily, Of); 3] = [
        (
            HistogramFamily {
                name: "ringraft_wal_sync_duration_seconds",
                help: "write + fdatasync time per WAL flush",
                bounds: &SECONDS_BUCKETS,
                scale: 1e-6,
            },
            |s| &s.wal_sync_latency_us,
        ),
        (
            HistogramFamily {
                name: "ringraft_wal_batch_records",
                help: "records per WAL flush",
                bounds: &COUNT_BUCKETS,
                scale: 1.0,
            },
            |s| &s.wal_batch_records,
        ),
        (
            HistogramFamily {
                name: "ringraft_append_entries",
                help: "entries per AppendEntries sent",
                bounds: &COUNT_BUCKETS,
                scale: 1.0,
            },
            |s| &s.append_entries,
        ),
    ];
    for (fam, of) in histograms {
        histogram(enc, node, shards, fam, of)?;
    }
    let build: Labels = vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("protocol", crate::wire::PROTOCOL_VERSION.to_string()),
        ("node", node.to_string()),
    ];
    family(
        enc,
        "ringraft_build_info",
        "1, labelled with the build's version and wire protocol version",
        MetricType::Gauge,
        std::iter::once((build, 1)),
    )
}

/// Bucket bounds of durations (s): 50 µs to 2.5 s, about 2.5 per decade
/// (an NVMe fdatasync is tens of µs; a stalled disk, seconds).
pub const SECONDS_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Bucket bounds of counts per batch: powers of two, 1 to 4096.
pub const COUNT_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The process's own figures, as Prometheus's client libraries name them
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...),
/// read from `/proc/self` at each scrape. Figures it cannot read are left
/// out (not Linux, or `/proc` not mounted).
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessFigures::read() else {
            return Ok(());
        };
        let cpu = enc.encode_descriptor(
            "process_cpu_seconds",
            "user and system CPU time spent, seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(p.cpu_seconds).encode(cpu)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "resident memory size, bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "virtual memory size, bytes",
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "the limit on open file descriptors",
                p.max_fds as f64,
            ),
            ("process_threads", "threads", p.threads as f64),
            (
                "process_start_time_seconds",
                "start time since the Unix epoch, seconds",
                p.start_time_seconds,
            ),
        ];
        for (name, help, v) in gauges {
            let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m)?;
        }
        Ok(())
    }
}

/// What [`ProcessCollector`] reads of this process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub threads: u64,
    pub start_time_seconds: f64,
}

impl ProcessFigures {
    /// This process's figures (`proc(5)`: `/proc/self/stat` fields 14-15
    /// utime/stime, 20 num_threads, 22 starttime, 23 vsize, 24 rss; the
    /// boot time from `/proc/stat`'s `btime`), or `None` off Linux.
    pub fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            0
        };
        Self::parse(
            &stat,
            boot,
            tick.max(1) as f64,
            page.max(1) as u64,
            open_fds,
            max_fds,
        )
    }

    /// The figures from a `/proc/<pid>/stat` line (the command name, in
    /// parentheses, may hold spaces and parentheses: fields are counted
    /// from its last `)`).
    pub fn parse(
        stat: &str,
        boot_seconds: f64,
        ticks_per_second: f64,
        page_bytes: u64,
        open_fds: u64,
        max_fds: u64,
    ) -> Option<ProcessFigures> {
        let rest = &stat[stat.rfind(')')? + 1..];
        // Field 3 (state) is the first after the name.
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
        Some(ProcessFigures {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second,
            threads: field(20)?,
            start_time_seconds: boot_seconds + field(22)? as f64 / ticks_per_second,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page_bytes,
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(shard: u32) -> ShardMetrics {
        let h = || Histogram::new(3).expect("histogram");
        ShardMetrics {
            shard,
            stats: ShardStats {
                groups: 3,
                groups_awake: 1,
                candidates: 2,
                ..Default::default()
            },
            transport: Default::default(),
            clients: Default::default(),
            wal_syncs: 0,
            wal_records: 0,
            wal_bytes_written: 0,
            wal_segment_bytes_used: 0,
            wal_write_nudges: 0,
            wal_sync_latency_us: h(),
            wal_batch_records: h(),
            append_entries: h(),
        }
    }

    fn group(group: u64, term: u64) -> GroupMetrics {
        GroupMetrics {
            group,
            role: "leader",
            term,
            ..Default::default()
        }
    }

    /// A slot keeps every group's last state: a publish carries only the
    /// groups that changed (an idle shard publishes none), a group no
    /// longer hosted goes away, and a slot being rendered is not waited
    /// for (the shard keeps its changes for the next try).
    #[test]
    fn a_publish_carries_only_changed_groups_and_never_waits_for_a_render() {
        let hub = MetricsHub::new(1);
        assert!(hub.try_publish(
            shard(0),
            [
                (1, Some(group(1, 1))),
                (2, Some(group(2, 1))),
                (3, Some(group(3, 1)))
            ]
        ));
        // Nothing changed: the groups stay as published.
        assert!(hub.try_publish(shard(0), []));
        let text = hub.render(7);
        assert_eq!(text.matches("ringraft_group_term{").count(), 3);
        assert!(text.contains("ringraft_groups_awake{node=\"7\",shard=\"0\"} 1"));
        assert!(text.contains("ringraft_candidates{node=\"7\",shard=\"0\"} 2"));
        // Group 2 moved to term 5, group 3 is gone.
        assert!(hub.try_publish(shard(0), [(2, Some(group(2, 5))), (3, None)]));
        let text = hub.render(7);
        assert!(text.contains("ringraft_group_term{node=\"7\",shard=\"0\",group=\"2\"} 5"));
        assert!(text.contains("ringraft_group_term{node=\"7\",shard=\"0\",group=\"1\"} 1"));
        assert!(!text.contains("group=\"3\""));
        // A render holds the slot: the publish is refused, nothing applied.
        let held = hub.slots[0].lock().unwrap();
        assert!(!hub.try_publish(shard(0), [(1, None)]));
        drop(held);
        assert!(hub.render(7).contains("group=\"1\""));
    }

    /// The text is OpenMetrics as Prometheus reads it: counters end in
    /// `_total`, a role is a label value, latencies are histograms in
    /// seconds with cumulative buckets, `_sum` and `_count`, and the
    /// process's and the build's figures are there.
    #[test]
    fn the_text_is_openmetrics_with_roles_as_labels_and_histograms_in_seconds() {
        let hub = MetricsHub::new(2);
        assert_eq!(hub.not_ready(), vec![0, 1]);
        let mut m = shard(0);
        m.stats.proposals = 42;
        // WAL flushes of 80 µs, 80 µs, 3 ms.
        for us in [80, 80, 3_000] {
            m.wal_sync_latency_us.record(us).unwrap();
        }
        let mut learner = group(2, 1);
        learner.role = role_name(crate::raft::Role::Follower, true);
        assert!(hub.try_publish(m, [(1, Some(group(1, 1))), (2, Some(learner))]));
        assert_eq!(hub.not_ready(), vec![1], "shard 1 has not published");
        let text = hub.render(7);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has("ringraft_proposals_total{node=\"7\",shard=\"0\"} 42"),
            "{text}"
        );
        assert!(has("# TYPE ringraft_proposals counter"), "{text}");
        assert!(has(
            "ringraft_group_role{node=\"7\",shard=\"0\",group=\"1\",role=\"leader\"} 1"
        ));
        assert!(has(
            "ringraft_group_role{node=\"7\",shard=\"0\",group=\"2\",role=\"learner\"} 1"
        ));
        assert!(
            has("# TYPE ringraft_wal_sync_duration_seconds histogram"),
            "{text}"
        );
        let bucket = |le: &str| {
            let p = format!(
                "ringraft_wal_sync_duration_seconds_bucket{{le=\"{le}\",node=\"7\",shard=\"0\"}} "
            );
            let alt = format!(
                "ringraft_wal_sync_duration_seconds_bucket{{node=\"7\",shard=\"0\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&p).or_else(|| l.strip_prefix(&alt)))
                .unwrap_or_else(|| panic!("no bucket {le}:\n{text}"))
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(bucket("0.00005"), 0);
        assert_eq!(bucket("0.0001"), 2, "cumulative: the two 80 µs flushes");
        assert_eq!(bucket("0.0025"), 2);
        assert_eq!(bucket("0.005"), 3);
        assert_eq!(bucket("+Inf"), 3);
        assert!(text.lines().any(
            |l| l.starts_with("ringraft_wal_sync_duration_seconds_count{node=\"7\",shard=\"0\"} 3")
        ));
        assert!(text.contains("ringraft_build_info{version=\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }

    /// `/proc/<pid>/stat` is read past the last `)` of the command name,
    /// which may hold spaces and parentheses.
    #[test]
    fn process_figures_are_read_from_a_stat_line() {
        let stat = "4242 (ring raft) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 1000 123456789 300 18446744073709551615";
        let f = ProcessFigures::parse(stat, 1_700_000_000.0, 100.0, 4096, 12, 1024).unwrap();
        assert_eq!(
            f,
            ProcessFigures {
                cpu_seconds: 3.0,
                resident_bytes: 300 * 4096,
                virtual_bytes: 123_456_789,
                open_fds: 12,
                max_fds: 1024,
                threads: 7,
                start_time_seconds: 1_700_000_010.0,
            }
        );
        assert_eq!(
            ProcessFigures::parse("4242 (x) S 1", 0.0, 100.0, 4096, 0, 0),
            None
        );
        assert!(ProcessFigures::read().is_some(), "this is Linux");
    }

    /// `/health`, `/ready` (503 naming the shards until each published),
    /// `HEAD`, 404 and 405, over a real socket.
    #[test]
    fn health_ready_head_and_unknown_paths_over_http() {
        use std::io::{Read, Write};
        let hub = MetricsHub::new(1);
        let addr = hub.serve("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ask = |req: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let r = ask("GET /health HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 200") && r.ends_with("ok\n"), "{r}");
        let r = ask("GET /ready HTTP/1.0\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.0 503") && r.contains("shards [0]"),
            "{r}"
        );
        assert!(hub.try_publish(shard(0), []));
        let r = ask("GET /ready HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 200"), "{r}");
        let r = ask("GET /metrics HTTP/1.0\r\n\r\n");
        assert!(r.contains(OPENMETRICS) && r.contains("# EOF"), "{r}");
        let r = ask("HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 200") && !r.contains("# EOF"), "{r}");
        let r = ask("GET /nope HTTP/1.0\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.0 404") && r.contains("/metrics"),
            "{r}"
        );
        let r = ask("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 405"), "{r}");
    }
}
