//! Metrics in Prometheus text format over HTTP (`--metrics-addr`).
//!
//! Each shard publishes a snapshot of its counters once a second into its
//! own slot (one lock per shard per second, never on the hot path, and
//! never waited for: a slot being rendered is skipped until the next
//! second), with only the groups whose state changed since (a Ready, a
//! creation, a destruction): the slot keeps every group's last state, so a
//! shard of 100,000 quiesced groups publishes none of them. A small HTTP
//! thread, off the executors, renders all slots on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub role: u8,
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

    /// The Prometheus text of every published shard.
    pub fn render(&self, node: u64) -> String {
        let guards: Vec<_> = self
            .slots
            .iter()
            .map(|s| s.lock().expect("metrics slot"))
            .collect();
        let slots: Vec<&Slot> = guards.iter().map(|g| &**g).collect();
        render(node, &slots)
    }

    /// Serves `GET /metrics` on `addr` from a thread of its own.
    pub fn serve(&self, addr: SocketAddr, node: u64) -> std::io::Result<SocketAddr> {
        let l = TcpListener::bind(addr)?;
        let bound = l.local_addr()?;
        let hub = self.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut req = [0u8; 1024];
                    let n = s.read(&mut req).unwrap_or(0);
                    let head = String::from_utf8_lossy(&req[..n]);
                    let (status, body) = if head.starts_with("GET /metrics") {
                        ("200 OK", hub.render(node))
                    } else {
                        ("404 Not Found", "try GET /metrics\n".to_string())
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            })?;
        Ok(bound)
    }
}

/// Families with one value per shard, of Prometheus type `kind`.
fn per_shard(
    out: &mut String,
    node: u64,
    shards: &[ShardMetrics],
    kind: &str,
    families: &[Family<ShardMetrics>],
) {
    for (name, help, f) in families {
        family(out, name, kind, help);
        for s in shards {
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\",shard=\"{}\"}} {}",
                s.shard,
                f(s)
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn quantiles(
    out: &mut String,
    name: &str,
    node: u64,
    shards: &[ShardMetrics],
    h: impl Fn(&ShardMetrics) -> &Histogram<u64>,
) {
    for s in shards {
        let h = h(s);
        for q in [0.5, 0.9, 0.99, 0.999] {
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\",shard=\"{}\",quantile=\"{q}\"}} {}",
                s.shard,
                if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(q)
                }
            );
        }
        let _ = writeln!(
            out,
            "{name}_count{{node=\"{node}\",shard=\"{}\"}} {}",
            s.shard,
            h.len()
        );
    }
}

/// A metric family: name, help, and how to read it.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Renders the shards' slots as Prometheus text (each family once).
pub fn render(node: u64, slots: &[&Slot]) -> String {
    let mut out = String::new();
    let shards: Vec<ShardMetrics> = slots.iter().filter_map(|s| s.shard.clone()).collect();
    let shards = &shards[..];
    let groups: Vec<(u32, &GroupMetrics)> = slots
        .iter()
        .filter_map(|s| Some((s.shard.as_ref()?.shard, &s.groups)))
        .flat_map(|(shard, gs)| gs.values().map(move |g| (shard, g)))
        .collect();
    let per_group: [Family<GroupMetrics>; 5] = [
        (
            "ringraft_group_role",
            "0 follower, 1 pre-candidate, 2 candidate, 3 leader",
            |g| u64::from(g.role),
        ),
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
        family(&mut out, name, "gauge", help);
        for (shard, g) in &groups {
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\",shard=\"{shard}\",group=\"{}\"}} {}",
                g.group,
                f(g)
            );
        }
    }
    family(
        &mut out,
        "ringraft_append_inflight",
        "gauge",
        "AppendEntries in flight from a leader to a follower",
    );
    for (shard, g) in &groups {
        for (peer, n) in &g.inflight {
            let _ = writeln!(
                out,
                "ringraft_append_inflight{{node=\"{node}\",shard=\"{shard}\",group=\"{}\",peer=\"{peer}\"}} {n}",
                g.group
            );
        }
    }
    let counters: [Family<ShardMetrics>; 54] = [
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
            "ringraft_split_keys_trimmed_total",
            "keys a split left outside a replica's bounds, trimmed since",
            |s| s.stats.split_keys_trimmed,
        ),
        (
            "ringraft_splits_asked_by_size_total",
            "splits this shard's leaders asked for: a range passed range-split-bytes",
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
    per_shard(&mut out, node, shards, "counter", &counters);
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
    per_shard(&mut out, node, shards, "gauge", &gauges);
    family(
        &mut out,
        "ringraft_wal_sync_latency_us",
        "summary",
        "write + fdatasync time per WAL flush (µs)",
    );
    quantiles(
        &mut out,
        "ringraft_wal_sync_latency_us",
        node,
        shards,
        |s| &s.wal_sync_latency_us,
    );
    family(
        &mut out,
        "ringraft_wal_batch_records",
        "summary",
        "records per WAL flush",
    );
    quantiles(&mut out, "ringraft_wal_batch_records", node, shards, |s| {
        &s.wal_batch_records
    });
    family(
        &mut out,
        "ringraft_append_entries",
        "summary",
        "entries per AppendEntries sent",
    );
    quantiles(&mut out, "ringraft_append_entries", node, shards, |s| {
        &s.append_entries
    });
    out
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
            wal_write_nudges: 0,
            wal_sync_latency_us: h(),
            wal_batch_records: h(),
            append_entries: h(),
        }
    }

    fn group(group: u64, term: u64) -> GroupMetrics {
        GroupMetrics {
            group,
            role: 3,
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
}
