//! The node's settings: from the command line, from a TOML file
//! (`--config`), or both (the command line wins); every setting has a
//! default and is validated once, at start, into a [`ValidConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::identity::Bootstrap;
use crate::kv::KvLimits;
use crate::raft::RaftConfig;
use crate::transport::TransportConfig;
use ringraft_wal::WalOptions;

/// Settings of `ringraft node`. On the command line as `--name value`; in
/// the TOML file as `name = value` (kebab-case names, e.g.
/// `data-dir = "/var/lib/ringraft"`).
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSettings {
    /// This node's id (a positive integer, unique in the cluster). Required.
    #[arg(long)]
    pub id: Option<u64>,
    /// Cluster id: nodes of different clusters refuse each other. Default 1.
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Directory of the node's WAL and snapshots. Required.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Peer address of shard 0; shard s listens on its port + s.
    /// Default 127.0.0.1:7100.
    #[arg(long)]
    pub listen_peers: Option<String>,
    /// Client address of shard 0; shard s listens on its port + s.
    /// Default 127.0.0.1:7200.
    #[arg(long)]
    pub listen_clients: Option<String>,
    /// The other voters: `ID=PEER_ADDR,...` (their --listen-peers). Default
    /// none (a single-node cluster).
    #[arg(long)]
    pub peers: Option<String>,
    /// Shards (executors) per node; every node of a cluster runs the same
    /// number. Default 1.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Raft groups in the cluster (group g lives on shard g % shards).
    /// Default 8.
    #[arg(long)]
    pub groups: Option<u64>,
    /// The keys that cut the keyspace into the --groups ranges when the
    /// cluster is bootstrapped: --groups minus 1 keys, comma-separated,
    /// in increasing order (`\xNN` writes any byte, `\,` a comma, `\\` a
    /// backslash). Range 0 holds the keys below the first, range g those
    /// from key g-1 up to key g. Default: even cuts of the 64-bit
    /// big-endian key space (for 8 groups: 0x20, 0x40, ...). Read only
    /// when the data directory is new: the ranges are stored with the
    /// replicas. Every node of a new cluster must be given the same ones.
    #[arg(long)]
    pub initial_split_keys: Option<String>,
    /// Replicas of each range: when a cluster is bootstrapped, range g is
    /// placed on this many of the founding nodes (this node and --peers),
    /// taken in a ring from the (g mod N)-th by id, so N nodes hold about
    /// RF / N of the ranges each. 1..=7; default 3 (all nodes, if fewer).
    /// Read only when the data directory is new; every node of a new
    /// cluster must be given the same.
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// `pinned`: shard s of node n runs on CPU (n * shards + s) mod CPUs;
    /// `unbound`: the OS places them. Default pinned.
    #[arg(long)]
    pub placement: Option<String>,
    /// Length of a Raft tick in ms. Default 20.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Election timeout in ticks (randomized in [t, 2t)). Default 10.
    #[arg(long)]
    pub election_ticks: Option<u32>,
    /// Heartbeat interval in ticks. Default 2.
    #[arg(long)]
    pub heartbeat_ticks: Option<u32>,
    /// Quiescence: an idle group's leader and followers stop ticking and
    /// heartbeating until a message, a request or an unreachable leader
    /// wakes them (issue #16; `raft::RaftConfig::quiesce`). Default true
    /// (`--quiesce false` turns it off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub quiesce: Option<bool>,
    /// Elections a shard starts per tick at most; the others wait for the
    /// next ticks (`ShardConfig::campaigns_per_tick_max`). Default 64.
    #[arg(long)]
    pub campaigns_per_tick_max: Option<u64>,
    /// Replicas of a shard campaigning at once at most; further elections
    /// wait until some end (`ShardConfig::campaigns_in_flight_max`).
    /// Default 256.
    #[arg(long)]
    pub campaigns_in_flight_max: Option<u64>,
    /// `linearizable` (ReadIndex only) or `lease` (leaders may serve reads
    /// that ask for it from their lease). Default linearizable.
    #[arg(long)]
    pub read_mode: Option<String>,
    /// Largest key in bytes. Default 4096.
    #[arg(long)]
    pub key_bytes_max: Option<usize>,
    /// Largest value in bytes (1 B to 32 MiB); a larger one is refused.
    /// Default 1 MiB.
    #[arg(long)]
    pub value_bytes_max: Option<usize>,
    /// A request not answered within this is answered `Timeout`. Default 5000.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// A group snapshots after this many applied entries. Default 100000.
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// A group also snapshots after this many bytes of applied entries.
    /// Default 64 MiB.
    #[arg(long)]
    pub snapshot_log_bytes: Option<u64>,
    /// A range whose keys and values pass this many bytes is split in two
    /// halves by bytes (issue #18; TiKV's `region-split-size`,
    /// CockroachDB's `range_max_bytes`). 0: ranges split only by hand
    /// (`ctl split`). Default 64 MiB.
    #[arg(long)]
    pub range_split_bytes: Option<u64>,
    /// A range whose leader serves at least this many requests a second
    /// (reads and writes of its keys), every second for
    /// `--range-split-load-secs` in a row, is split at a key that halves
    /// its sampled load (issue #18; CockroachDB's
    /// `kv.range_split.load_qps_threshold`, TiKV's `split.qps-threshold`).
    /// 0: never by load. Default 0 (CockroachDB uses 2500; measured here
    /// to cost a one-shard-per-node cluster throughput: README).
    #[arg(long)]
    pub range_split_qps: Option<u64>,
    /// Seconds in a row a range must stay at `--range-split-qps` before it
    /// is split by load (1 to 3600; TiKV's `split.detect-times`).
    /// Default 10.
    #[arg(long)]
    pub range_split_load_secs: Option<u32>,
    /// Bytes per second of snapshots this node sends at most (seeding a
    /// replica a move added, catching up one that fell behind the log),
    /// shared evenly by its shards: a snapshot chunk over the budget is
    /// held and goes at a later heartbeat round, so moves do not crowd
    /// out the writes of the ranges they leave (CockroachDB's
    /// `kv.snapshot_rebalance.max_rate`, 32 MiB/s; TiKV's
    /// `snap-io-max-bytes-per-sec`, 100 MB/s). Default 64 MiB/s
    /// (`SNAPSHOT_SEND_BYTES_PER_SEC_DEFAULT`), at least 64 KiB/s per shard.
    #[arg(long)]
    pub snapshot_send_bytes_per_sec: Option<u64>,
    /// Entries a snapshot leaves in the log (for slow followers to catch up
    /// without a snapshot). Default 1000.
    #[arg(long)]
    pub compact_keep_entries: Option<u64>,
    /// An idle group whose oldest WAL record is this many records behind
    /// rewrites its state so old segments can be released (its log too if
    /// small, else it snapshots; a group still being written is left up
    /// to `wal-pin-bytes-max`); at least
    /// `shard::WAL_RECORDS_KEPT_PER_GROUP` records per group hosted.
    /// Default 100000.
    #[arg(long)]
    pub wal_pin_records_max: Option<u64>,
    /// WAL a group still being written may keep, in bytes (whole segments
    /// from the one holding its oldest needed record to the head), before
    /// the unpinning pass snapshots it; below it the group's own
    /// compaction (`snapshot-entries`, `snapshot-log-bytes`) releases them,
    /// so a large range under steady writes is not written out whole every
    /// few segments. Never more than the filesystem's free space less the
    /// group's state and a segment (room for the snapshot that ends it). 0:
    /// every group is snapshotted once it pins. Default 512 MiB (TiKV's
    /// raft-engine `purge-threshold` plays this part).
    #[arg(long)]
    pub wal_pin_bytes_max: Option<u64>,
    /// WAL segment size in bytes. Default 64 MiB, grown to hold one batch
    /// of the largest entry (about 2 × value-bytes-max + 1 MiB).
    #[arg(long)]
    pub wal_segment_bytes: Option<u64>,
    /// Write zeros over each new WAL segment before it is used, so a
    /// flush's fdatasync has no extent metadata to journal (faster syncs,
    /// one extra sequential write of each segment). Default true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub wal_zero_segments: Option<bool>,
    /// A WAL flush whose first write (the records already in the segment's
    /// last, partly filled 4 KiB block, then its own) holds at most this
    /// many bytes writes that block again instead of starting a fresh one,
    /// so a small flush does not take a block of its own (with one write a
    /// flush, segments filled 22-27 times faster than the log grew).
    /// Rests on a crash leaving each sector either old or new, as every
    /// buffered-I/O log does; 0: every flush starts a fresh block. At most
    /// one WAL write chunk (1 MiB). Default 65536
    /// (`ringraft_wal::TAIL_REWRITE_BYTES_MAX`).
    #[arg(long)]
    pub wal_tail_rewrite_bytes_max: Option<usize>,
    /// Bytes queued per peer before Raft messages are dropped. Default 16 MiB.
    #[arg(long)]
    pub peer_queue_bytes_max: Option<usize>,
    /// Requests in flight per client connection. Default 4096.
    #[arg(long)]
    pub client_inflight_max: Option<usize>,
    /// Client connections the node keeps open (divided over its shards,
    /// rounded up); one more is refused with an error naming this setting.
    /// Bounds the file descriptors clients can take. Default 1024.
    #[arg(long)]
    pub client_conns_max: Option<usize>,
    /// A client connection with nothing in flight and no traffic for this
    /// long is closed (0: never). Default 600000 (10 minutes).
    #[arg(long)]
    pub client_idle_timeout_ms: Option<u64>,
    /// Client sessions kept per group. Default 100000.
    #[arg(long)]
    pub sessions_max: Option<usize>,
    /// Most pairs one scan returns (a larger limit is cut to it; the reply
    /// says more remain). Default 10000.
    #[arg(long)]
    pub scan_limit_max: Option<u32>,
    /// Join an existing cluster: the node founds no range; the balancer
    /// (or `ringraft ctl move-replica`) moves replicas to it. Either
    /// `--join ADDR[,ADDR...]`, the client address of any member: at its
    /// first start the node asks the cluster's meta group for its map, an
    /// id (unless `--id` is given), the cluster-wide settings and its
    /// peers, then registers itself, so `--peers` and `--shards` are not
    /// needed; or a bare `--join` (`true`), with `--id` and `--peers` to
    /// reach. Default false.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub join: Option<Join>,
    /// How a node with an empty data dir starts: `new` (one of the first
    /// nodes of a new cluster; its --peers are the initial voters) or
    /// `existing` (the same as --join). Ignored once the data dir holds a
    /// store. Without it (and without --join) an empty data dir is refused:
    /// a node that lost its data must not come back as its old self
    /// (etcd's convention). Default none.
    #[arg(long)]
    pub initial_cluster_state: Option<String>,
    /// Accept fault-injection requests (network isolation) from clients:
    /// for tests and drills, never in production. Default false.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub fault_injection: Option<bool>,
    /// Serve Prometheus metrics on `GET /metrics` at this address. Default
    /// none.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Serve Redis's protocol (RESP2 and RESP3) on this address: shard s
    /// listens on its port + s; any Redis client or `redis-benchmark`
    /// can use the cluster through any node. Default none (off).
    #[arg(long)]
    pub listen_resp: Option<String>,
    /// RESP connections the node keeps open (divided over its shards,
    /// rounded up); one more is answered Redis's `ERR max number of
    /// clients reached` and closed. Bounds the file descriptors RESP
    /// clients can take. Default 1024.
    #[arg(long)]
    pub resp_conns_max: Option<usize>,
    /// A file holding the password RESP clients must give (`AUTH PASS`,
    /// `AUTH default PASS`, or `HELLO 3 AUTH default PASS`) before any
    /// other command, as Redis's `requirepass`: read at start, one
    /// trailing newline dropped, at most `resp::RESP_PASSWORD_BYTES_MAX`
    /// bytes. In a file so that it is not in the process list. Default
    /// none: no password. The native client port never asks for one:
    /// keep it on a trusted network.
    #[arg(long)]
    pub resp_password_file: Option<String>,
    /// Run the balancer where this node's meta replica leads: re-create
    /// the replicas of a dead node elsewhere, even out replicas and
    /// leaders over the nodes. Default true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub balancer: Option<bool>,
    /// A node not heard from for this long (ms) is dead: the balancer
    /// moves its replicas to live nodes. At least
    /// `DEAD_NODE_TIMEOUT_MS_MIN`. Default 300000 (5 minutes, as
    /// CockroachDB's `server.time_until_store_dead`).
    #[arg(long)]
    pub dead_node_timeout_ms: Option<u64>,
    /// A learner left unpromoted this long (ms) is removed by the balancer
    /// (a move whose driver died; the balancer's own moves are never cut
    /// short by it). At least `STRAY_LEARNER_TIMEOUT_MS_MIN`; an
    /// operator's move of a range that takes longer than this to seed may
    /// lose its learner, and below 120000 (what a move waits for a learner
    /// that makes no progress, `client::MOVE_CATCH_UP_WAIT_MS`) a slow
    /// one may too: lower values are for tests.
    /// Default 240000 (`meta::planner::STRAY_LEARNER_TIMEOUT_MS_DEFAULT`:
    /// twice `MOVE_CATCH_UP_WAIT_MS`).
    #[arg(long)]
    pub stray_learner_timeout_ms: Option<u64>,
}

/// How a node with an empty data dir joins (`--join`): a flag (`true`:
/// with `--id` and `--peers`; `false`: it does not join), or the client
/// addresses of members to ask for the map (`crate::join`). In a TOML
/// file: `join = true` or `join = "10.0.0.1:7200"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum Join {
    Flag(bool),
    Via(String),
}

impl Join {
    /// Whether the node joins (rather than founds) a cluster.
    pub fn is_set(&self) -> bool {
        !matches!(self, Join::Flag(false))
    }

    /// The members' client addresses given, as written (empty for a flag).
    pub fn via(&self) -> Vec<&str> {
        match self {
            Join::Flag(_) => Vec::new(),
            Join::Via(v) => v
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect(),
        }
    }
}

impl std::str::FromStr for Join {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Join, Self::Err> {
        Ok(match s {
            "true" => Join::Flag(true),
            "false" => Join::Flag(false),
            other => Join::Via(other.to_string()),
        })
    }
}

/// The shortest `dead-node-timeout-ms`: two balancer rounds
/// (`shard::BALANCE_INTERVAL_MS_DEFAULT`), so a node is pinged at least
/// twice before it is declared dead. Production wants minutes: a node
/// restarting must not be declared dead (each would cost a snapshot's
/// worth of copying per replica).
pub const DEAD_NODE_TIMEOUT_MS_MIN: u64 = 10_000;

/// `--range-split-bytes` by default: 64 MiB of keys and values, TiKV's
/// and CockroachDB's order of size (a range's snapshot and a move stay
/// well under a second of a disk's bandwidth).
pub const RANGE_SPLIT_BYTES_DEFAULT: u64 = 64 << 20;

/// The longest `--range-split-load-secs`: an hour (a range hot for longer
/// than that before it splits would not be split by load at all).
pub const RANGE_SPLIT_LOAD_SECS_MAX: u32 = 3600;

macro_rules! merge_fields {
    ($a:expr, $b:expr, $($f:ident),*) => {
        NodeSettings { $($f: $a.$f.or($b.$f)),* }
    };
}

impl NodeSettings {
    /// `self` where set, else `other`.
    pub fn or(self, other: NodeSettings) -> NodeSettings {
        merge_fields!(
            self,
            other,
            id,
            cluster_id,
            data_dir,
            listen_peers,
            listen_clients,
            peers,
            shards,
            groups,
            initial_split_keys,
            replication_factor,
            placement,
            tick_ms,
            election_ticks,
            heartbeat_ticks,
            quiesce,
            campaigns_per_tick_max,
            campaigns_in_flight_max,
            read_mode,
            key_bytes_max,
            value_bytes_max,
            request_timeout_ms,
            snapshot_entries,
            snapshot_log_bytes,
            range_split_bytes,
            range_split_qps,
            range_split_load_secs,
            snapshot_send_bytes_per_sec,
            compact_keep_entries,
            wal_pin_records_max,
            wal_pin_bytes_max,
            wal_segment_bytes,
            wal_zero_segments,
            wal_tail_rewrite_bytes_max,
            peer_queue_bytes_max,
            client_inflight_max,
            client_conns_max,
            client_idle_timeout_ms,
            sessions_max,
            scan_limit_max,
            join,
            initial_cluster_state,
            fault_injection,
            metrics_addr,
            listen_resp,
            resp_conns_max,
            resp_password_file,
            balancer,
            dead_node_timeout_ms,
            stray_learner_timeout_ms
        )
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &std::path::Path) -> Result<NodeSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--{0} is required")]
    Missing(&'static str),
    #[error("--{name} = {value}: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
}

/// The password in file `path` (`--resp-password-file`, of the node and
/// of `ringraft-load`): its bytes less one trailing newline (LF or CRLF).
///
/// # Errors
/// The file cannot be read, holds nothing, spans lines, or passes
/// `resp::RESP_PASSWORD_BYTES_MAX`: each names the file and the fix.
pub fn read_password_file(path: &str) -> Result<bytes::Bytes, ConfigError> {
    let name = "resp-password-file";
    let max = crate::resp::RESP_PASSWORD_BYTES_MAX;
    let mut b =
        std::fs::read(path).map_err(|e| invalid(name, path, format!("cannot read it: {e}")))?;
    if b.ends_with(b"\n") {
        b.pop();
        if b.ends_with(b"\r") {
            b.pop();
        }
    }
    if b.is_empty() {
        return Err(invalid(
            name,
            path,
            "it holds no password: write one in it, or leave the setting out for none",
        ));
    }
    if b.len() > max {
        return Err(invalid(
            name,
            path,
            format!(
                "its password is {} bytes, above resp::RESP_PASSWORD_BYTES_MAX ({max})",
                b.len()
            ),
        ));
    }
    if b.iter().any(|&c| c == b'\n' || c == b'\r') {
        return Err(invalid(
            name,
            path,
            "its password spans lines: a password is one line (a trailing newline is dropped)",
        ));
    }
    Ok(bytes::Bytes::from(b))
}

fn invalid(
    name: &'static str,
    value: impl std::fmt::Display,
    why: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_string(),
        why: why.into(),
    }
}

/// The top of `value-bytes-max`'s range (32 MiB). Measured on the
/// development VM with the tests' 10 ms tick: 32 MiB values are stored and
/// read back; 64 MiB ones keep the group re-electing, because heartbeats
/// queue behind the entry longer than an election timeout.
pub const VALUE_BYTES_MAX_LIMIT: usize = 32 << 20;

/// `value-bytes-max` when not given: 1 MiB.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Pinned,
    Unbound,
}

/// Settings that passed validation (construct with [`NodeSettings::validate`]).
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub id: u64,
    pub cluster_id: u64,
    pub data_dir: PathBuf,
    pub listen_peers: SocketAddr,
    pub listen_clients: SocketAddr,
    pub peers: Vec<(u64, SocketAddr)>,
    pub shards: u32,
    pub groups: u64,
    pub placement: Placement,
    pub lease_reads: bool,
    pub metrics_addr: Option<SocketAddr>,
    /// The RESP port of shard 0 (`--listen-resp`); shard s listens on its
    /// port + s. `None`: off.
    pub listen_resp: Option<SocketAddr>,
    /// RESP connections per shard (`resp-conns-max` over the shards,
    /// rounded up).
    pub resp_conns_max: usize,
    /// The password RESP clients must give (`--resp-password-file`);
    /// `None`: none asked.
    pub resp_password: Option<bytes::Bytes>,
    /// Client connections of the whole node (`client-conns-max`).
    pub client_conns_max: usize,
    /// How an empty data dir may be initialised.
    pub bootstrap: Bootstrap,
    /// Fingerprint of the initial ranges these settings give
    /// (`route::cuts_fingerprint`): stored by a new cluster's node.
    pub cuts: u32,
    /// `--replication-factor`: stored by a new cluster's node.
    pub replication_factor: u32,
    shard_template: ShardConfig,
}

/// Parses `--initial-split-keys`: comma-separated keys with `\xNN`, `\,`
/// and `\\` escapes.
pub fn parse_split_keys(text: &str) -> Result<Vec<bytes::Bytes>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = Vec::new();
    let mut key = Vec::new();
    let mut it = text.bytes();
    while let Some(b) = it.next() {
        match b {
            b',' => keys.push(bytes::Bytes::from(std::mem::take(&mut key))),
            b'\\' => match it.next() {
                Some(b'x') => {
                    let hex: Vec<u8> = it.by_ref().take(2).collect();
                    let byte = std::str::from_utf8(&hex)
                        .ok()
                        .filter(|h| h.len() == 2 && h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            format!("`\\x` takes two hex digits (key {})", keys.len() + 1)
                        })?;
                    key.push(byte);
                }
                Some(c @ (b',' | b'\\')) => key.push(c),
                None => {
                    return Err(format!(
                        "key {} ends in an unfinished escape (a lone \\ at the end)",
                        keys.len() + 1
                    ))
                }
                _ => {
                    return Err(format!(
                        "unknown escape in key {} (use \\xNN, \\, or \\\\)",
                        keys.len() + 1
                    ))
                }
            },
            _ => key.push(b),
        }
    }
    keys.push(bytes::Bytes::from(key));
    Ok(keys)
}

/// Writes split keys as `--initial-split-keys` reads them
/// ([`parse_split_keys`]): printable ASCII as is, `\\` and `,` escaped,
/// any other byte as `\xNN`.
pub fn format_split_keys(keys: &[bytes::Bytes]) -> String {
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for &b in k.iter() {
            match b {
                b'\\' => out.push_str("\\\\"),
                b',' => out.push_str("\\,"),
                0x21..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\x{b:02x}")),
            }
        }
    }
    out
}

/// Checks split keys for `groups` ranges: `groups - 1` of them, non-empty,
/// increasing, each at most `meta::RANGE_BOUNDARY_BYTES_MAX`.
fn check_split_keys(keys: Vec<bytes::Bytes>, groups: u64) -> Result<Vec<bytes::Bytes>, String> {
    use crate::meta::{show_key, RANGE_BOUNDARY_BYTES_MAX};
    if keys.len() as u64 != groups - 1 {
        return Err(format!(
            "{} key(s) given; {groups} group(s) need {} (one fewer than --groups)",
            keys.len(),
            groups - 1
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        if k.is_empty() {
            return Err(format!(
                "key {} is empty (range 0 starts at the empty key)",
                i + 1
            ));
        }
        if k.len() > RANGE_BOUNDARY_BYTES_MAX {
            return Err(format!(
                "key {} is {} bytes, above {RANGE_BOUNDARY_BYTES_MAX} (meta::RANGE_BOUNDARY_BYTES_MAX)",
                i + 1,
                k.len()
            ));
        }
        if i > 0 && keys[i - 1] >= *k {
            return Err(format!(
                "key {} ({}) does not sort after key {} ({}): give them in increasing order",
                i + 1,
                show_key(k),
                i,
                show_key(&keys[i - 1])
            ));
        }
    }
    Ok(keys)
}

fn addr(name: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.to_socket_addrs()
        .map_err(|e| invalid(name, s, e.to_string()))?
        .next()
        .ok_or_else(|| invalid(name, s, "resolves to no address"))
}

pub use crate::route::shard_addr;

/// `--listen-peers` when not given.
pub const LISTEN_PEERS_DEFAULT: &str = "127.0.0.1:7100";
/// `--listen-clients` when not given.
pub const LISTEN_CLIENTS_DEFAULT: &str = "127.0.0.1:7200";
/// `--resp-conns-max` when not given (per node).
pub const RESP_CONNS_MAX_DEFAULT: usize = 1024;

impl NodeSettings {
    /// Shard 0's peer and client addresses (`--listen-peers`,
    /// `--listen-clients`, or their defaults), resolved.
    pub fn listen_addrs(&self) -> Result<(SocketAddr, SocketAddr), ConfigError> {
        let lp = addr(
            "listen-peers",
            self.listen_peers.as_deref().unwrap_or(LISTEN_PEERS_DEFAULT),
        )?;
        let lc = addr(
            "listen-clients",
            self.listen_clients
                .as_deref()
                .unwrap_or(LISTEN_CLIENTS_DEFAULT),
        )?;
        Ok((lp, lc))
    }

    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let id = self.id.ok_or(ConfigError::Missing("id"))?;
        if id == 0 {
            return Err(invalid("id", id, "must be positive"));
        }
        let data_dir = self
            .data_dir
            .clone()
            .ok_or(ConfigError::Missing("data-dir"))?;
        // Absolute: glommio's directory sync fails on relative paths.
        let data_dir = std::path::absolute(&data_dir)
            .map_err(|e| invalid("data-dir", data_dir.display(), e.to_string()))?;
        let shards = self.shards.unwrap_or(1);
        if !(1..=256).contains(&shards) {
            return Err(invalid("shards", shards, "must be in 1..=256"));
        }
        let groups = self.groups.unwrap_or(8);
        if groups < u64::from(shards) || groups > 1 << 20 {
            return Err(invalid(
                "groups",
                groups,
                format!("must be at least --shards ({shards}) and at most 2^20"),
            ));
        }
        let split_keys = match &self.initial_split_keys {
            Some(text) => parse_split_keys(text)
                .and_then(|keys| check_split_keys(keys, groups))
                .map_err(|why| invalid("initial-split-keys", text, why))?,
            None => crate::route::even_split_keys(groups),
        };
        let rf_max = crate::route::REPLICATION_FACTOR_MAX;
        let replication_factor = self
            .replication_factor
            .unwrap_or(crate::route::REPLICATION_FACTOR_DEFAULT);
        if !(1..=rf_max).contains(&replication_factor) {
            return Err(invalid(
                "replication-factor",
                replication_factor,
                format!("must be in 1..={rf_max} (REPLICATION_FACTOR_MAX)"),
            ));
        }
        let (lp, lc) = self.listen_addrs()?;
        let listen_resp = match &self.listen_resp {
            Some(a) => Some(addr("listen-resp", a)?),
            None => None,
        };
        // Every listener takes one port per shard: each range fits, and
        // none overlaps one named before it.
        let listeners: Vec<(&str, SocketAddr)> = [
            ("listen-peers", Some(lp)),
            ("listen-clients", Some(lc)),
            ("listen-resp", listen_resp),
        ]
        .into_iter()
        .filter_map(|(n, a)| Some((n, a?)))
        .collect();
        for (i, &(name, a)) in listeners.iter().enumerate() {
            if a.port() == 0 || u32::from(a.port()) + shards > 65536 {
                return Err(invalid(
                    name,
                    a,
                    format!("needs ports port..port+{shards} (one per shard), port > 0"),
                ));
            }
            for &(other, b) in &listeners[..i] {
                if a.ip() == b.ip() && a.port().abs_diff(b.port()) < shards as u16 {
                    return Err(invalid(
                        name,
                        a,
                        format!("its port range (one port per shard) overlaps --{other}"),
                    ));
                }
            }
        }
        let mut peers = Vec::new();
        for part in self
            .peers
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|p| !p.trim().is_empty())
        {
            let (pid, paddr) = part
                .split_once('=')
                .ok_or_else(|| invalid("peers", part, "expected ID=ADDR"))?;
            let pid: u64 = pid
                .trim()
                .parse()
                .map_err(|_| invalid("peers", part, "the id is not a positive integer"))?;
            if pid == 0 || pid == id || peers.iter().any(|&(p, _)| p == pid) {
                return Err(invalid(
                    "peers",
                    part,
                    "ids must be positive, distinct, and not this node's --id",
                ));
            }
            peers.push((pid, addr("peers", paddr.trim())?));
        }
        let placement = match self.placement.as_deref().unwrap_or("pinned") {
            "pinned" => Placement::Pinned,
            "unbound" => Placement::Unbound,
            other => return Err(invalid("placement", other, "expected pinned or unbound")),
        };
        let lease_reads = match self.read_mode.as_deref().unwrap_or("linearizable") {
            "linearizable" => false,
            "lease" => true,
            other => {
                return Err(invalid(
                    "read-mode",
                    other,
                    "expected linearizable or lease",
                ))
            }
        };
        let tick_ms = self.tick_ms.unwrap_or(20);
        if !(1..=10_000).contains(&tick_ms) {
            return Err(invalid("tick-ms", tick_ms, "must be in 1..=10000"));
        }
        let key_bytes_max = self.key_bytes_max.unwrap_or(4096);
        let value_bytes_max = self.value_bytes_max.unwrap_or(1 << 20);
        if !(1..=64 << 10).contains(&key_bytes_max) {
            return Err(invalid(
                "key-bytes-max",
                key_bytes_max,
                "must be in 1..=65536",
            ));
        }
        if !(1..=VALUE_BYTES_MAX_LIMIT).contains(&value_bytes_max) {
            return Err(invalid(
                "value-bytes-max",
                value_bytes_max,
                "must be in 1..=33554432 (32 MiB: one entry must replicate well within an election timeout; 64 MiB entries were measured to keep a group electing)",
            ));
        }
        let bootstrap = match (
            self.initial_cluster_state.as_deref(),
            self.join.as_ref().is_some_and(Join::is_set),
        ) {
            (None, false) => Bootstrap::Unset,
            (None | Some("existing"), _) => Bootstrap::Join,
            (Some("new"), false) => Bootstrap::New,
            (Some("new"), true) => {
                return Err(invalid(
                    "initial-cluster-state",
                    "new",
                    "contradicts --join (a joining node starts as `existing`)",
                ))
            }
            (Some(other), _) => {
                return Err(invalid(
                    "initial-cluster-state",
                    other,
                    "expected new or existing",
                ))
            }
        };
        let join = bootstrap == Bootstrap::Join;
        // Joining through a member (`--join ADDR`): the peers come from
        // the cluster's map (`crate::join::resolve`), or at a restart with
        // the cluster unreachable, from the replicas' address books.
        let via = self.join.as_ref().is_some_and(|j| !j.via().is_empty());
        if join && peers.is_empty() && !via {
            return Err(invalid(
                "join",
                "true",
                "a joining node needs --peers to reach",
            ));
        }
        // The initial voters of a node that starts a new cluster; a joined
        // node's groups start with none (see `shard`), whatever this start's
        // flags say: the store records how the node first started.
        let mut voters: Vec<u64> = peers.iter().map(|&(p, _)| p).collect();
        voters.push(id);
        voters.sort_unstable();
        let mut raft = RaftConfig::new(id, voters.clone());
        raft.election_ticks = self.election_ticks.unwrap_or(10);
        raft.heartbeat_ticks = self.heartbeat_ticks.unwrap_or(2);
        raft.quiesce = self.quiesce.unwrap_or(true);
        raft.lease_reads = lease_reads;
        raft.compact_keep_entries = self.compact_keep_entries.unwrap_or(1000);
        raft.seed = id.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // One entry must fit in a frame and in a WAL record.
        let entry_max = key_bytes_max + value_bytes_max + 256;
        raft.msg_bytes_max = raft.msg_bytes_max.max(entry_max as u64);
        // A follower's in-flight window must admit one message of the
        // largest entry, whatever value-bytes-max in its range asks for.
        raft.inflight_bytes_max = raft.inflight_bytes_max.max(raft.msg_bytes_max);
        raft.clone()
            .validate()
            .map_err(|e| invalid("election-ticks", raft.election_ticks, e.to_string()))?;
        let record_bytes_max = (entry_max * 2).max(1 << 20);
        let batch_bytes_max = (record_bytes_max + (1 << 20)).next_multiple_of(4096);
        // A segment holds its header block and one whole batch: the
        // default grows with value-bytes-max; a size the user gave must fit.
        let segment_bytes_min = (batch_bytes_max + 4096) as u64;
        let segment_bytes = match self.wal_segment_bytes {
            Some(s) if s < segment_bytes_min => {
                return Err(invalid(
                    "wal-segment-bytes",
                    s,
                    format!(
                        "segments must hold one batch of the largest entry: with --value-bytes-max {value_bytes_max} and --key-bytes-max {key_bytes_max}, at least {segment_bytes_min}; raise it or lower --value-bytes-max"
                    ),
                ))
            }
            Some(s) => s,
            None => (64u64 << 20).max(segment_bytes_min.next_multiple_of(1 << 20)),
        };
        let wal = WalOptions {
            segment_bytes,
            zero_segments: self.wal_zero_segments.unwrap_or(true),
            tail_rewrite_bytes_max: self
                .wal_tail_rewrite_bytes_max
                .unwrap_or(ringraft_wal::TAIL_REWRITE_BYTES_MAX),
            record_bytes_max,
            batch_bytes_max,
            ..WalOptions::default()
        };
        let mut wal = wal;
        wal.write_chunk_bytes = wal.write_chunk_bytes.min(wal.batch_bytes_max);
        wal.queue_bytes_max = wal.queue_bytes_max.max(2 * wal.batch_bytes_max);
        wal.clone()
            .validate()
            .map_err(|e| invalid("wal-segment-bytes", wal.segment_bytes, e.to_string()))?;
        let mut transport = TransportConfig::default();
        if let Some(p) = self.peer_queue_bytes_max {
            transport.peer_queue_bytes_max = p;
        }
        if let Some(c) = self.client_inflight_max {
            transport.client_inflight_max = c;
        }
        let client_conns_max = self.client_conns_max.unwrap_or(1024);
        if client_conns_max == 0 || client_conns_max > 1 << 20 {
            return Err(invalid(
                "client-conns-max",
                client_conns_max,
                "must be in 1..=1048576",
            ));
        }
        transport.client_conns_max = client_conns_max.div_ceil(shards as usize);
        if let Some(t) = self.client_idle_timeout_ms {
            transport.client_idle_timeout_ms = t;
        }
        transport.frame_bytes_max = transport
            .frame_bytes_max
            .max((raft.msg_bytes_max as usize) * 2 + (1 << 20));
        transport.validate().map_err(|e| {
            invalid(
                "peer-queue-bytes-max",
                transport.peer_queue_bytes_max,
                e.to_string(),
            )
        })?;
        let kv = KvLimits {
            sessions_max: self.sessions_max.unwrap_or(100_000),
            ..KvLimits::default()
        };
        if kv.sessions_max == 0 {
            return Err(invalid("sessions-max", 0, "must be positive"));
        }
        let scan_limit_max = self.scan_limit_max.unwrap_or(10_000);
        if scan_limit_max == 0 {
            return Err(invalid("scan-limit-max", 0, "must be positive"));
        }
        let request_timeout_ms = self.request_timeout_ms.unwrap_or(5000);
        if request_timeout_ms == 0 {
            return Err(invalid("request-timeout-ms", 0, "must be positive"));
        }
        let dead_node_timeout_ms = self
            .dead_node_timeout_ms
            .unwrap_or(crate::meta::planner::DEAD_NODE_TIMEOUT_MS_DEFAULT);
        if dead_node_timeout_ms < DEAD_NODE_TIMEOUT_MS_MIN {
            return Err(invalid(
                "dead-node-timeout-ms",
                dead_node_timeout_ms,
                format!("must be at least {DEAD_NODE_TIMEOUT_MS_MIN} (DEAD_NODE_TIMEOUT_MS_MIN)"),
            ));
        }
        let stray_learner_timeout_ms = self
            .stray_learner_timeout_ms
            .unwrap_or(crate::meta::planner::STRAY_LEARNER_TIMEOUT_MS_DEFAULT);
        if stray_learner_timeout_ms < STRAY_LEARNER_TIMEOUT_MS_MIN {
            return Err(invalid(
                "stray-learner-timeout-ms",
                stray_learner_timeout_ms,
                format!(
                    "must be at least {STRAY_LEARNER_TIMEOUT_MS_MIN} \
                     (STRAY_LEARNER_TIMEOUT_MS_MIN); keep it above {} (a move waits \
                     that long for a learner that makes no progress, \
                     MOVE_CATCH_UP_WAIT_MS) outside tests",
                    crate::client::MOVE_CATCH_UP_WAIT_MS
                ),
            ));
        }
        let snapshot_send = self
            .snapshot_send_bytes_per_sec
            .unwrap_or(SNAPSHOT_SEND_BYTES_PER_SEC_DEFAULT);
        let shard_min = SNAPSHOT_SEND_BYTES_PER_SEC_MIN * u64::from(shards);
        if snapshot_send < shard_min {
            return Err(invalid(
                "snapshot-send-bytes-per-sec",
                snapshot_send,
                format!(
                    "must be at least {shard_min} ({SNAPSHOT_SEND_BYTES_PER_SEC_MIN} per shard, \
                     SNAPSHOT_SEND_BYTES_PER_SEC_MIN, times {shards} shards): a slower \
                     stream would take hours to seed one replica"
                ),
            ));
        }
        let snapshot_send_bytes_per_sec = snapshot_send / u64::from(shards);
        let campaigns_per_tick_max = self
            .campaigns_per_tick_max
            .unwrap_or(CAMPAIGNS_PER_TICK_MAX_DEFAULT);
        if campaigns_per_tick_max == 0 {
            return Err(invalid(
                "campaigns-per-tick-max",
                0,
                "must be at least 1 (no group could ever elect a leader)",
            ));
        }
        let campaigns_in_flight_max = self
            .campaigns_in_flight_max
            .unwrap_or(CAMPAIGNS_IN_FLIGHT_MAX_DEFAULT);
        if campaigns_in_flight_max == 0 {
            return Err(invalid(
                "campaigns-in-flight-max",
                0,
                "must be at least 1 (no group could ever elect a leader)",
            ));
        }
        let range_split_load_secs = self
            .range_split_load_secs
            .unwrap_or(crate::shard::RANGE_SPLIT_LOAD_SECS_DEFAULT);
        if !(1..=RANGE_SPLIT_LOAD_SECS_MAX).contains(&range_split_load_secs) {
            return Err(invalid(
                "range-split-load-secs",
                range_split_load_secs,
                format!(
                    "must be 1 to {RANGE_SPLIT_LOAD_SECS_MAX} (RANGE_SPLIT_LOAD_SECS_MAX); \
                     to never split by load, set range-split-qps to 0"
                ),
            ));
        }
        let shard_template = ShardConfig {
            cluster: self.cluster_id.unwrap_or(1),
            node: id,
            incarnation: 0,
            shard: 0,
            shards,
            groups,
            cuts: 0,
            joined: false,
            split_keys,
            voters,
            replication_factor,
            replication_factor_known: false,
            dir: PathBuf::new(),
            peers: Vec::new(),
            raft,
            tick_ms,
            kv,
            key_bytes_max,
            value_bytes_max,
            request_timeout_ms,
            snapshot_entries: self.snapshot_entries.unwrap_or(100_000),
            snapshot_log_bytes: self.snapshot_log_bytes.unwrap_or(64 << 20).max(1),
            range_split_bytes: self.range_split_bytes.unwrap_or(RANGE_SPLIT_BYTES_DEFAULT),
            range_split_qps: self
                .range_split_qps
                .unwrap_or(crate::shard::RANGE_SPLIT_QPS_DEFAULT),
            range_split_load_secs,
            snapshot_send_bytes_per_sec,
            wal_pin_records_max: self.wal_pin_records_max.unwrap_or(100_000).max(1),
            wal_pin_bytes_max: self
                .wal_pin_bytes_max
                .unwrap_or(crate::shard::WAL_PIN_BYTES_MAX_DEFAULT),
            wal,
            transport,
            scan_limit_max,
            fault_injection: self.fault_injection.unwrap_or(false),
            balancer: self.balancer.unwrap_or(true),
            dead_node_timeout_ms,
            stray_learner_timeout_ms,
            campaigns_per_tick_max,
            campaigns_in_flight_max,
            client_addr: if lc.ip().is_unspecified() {
                String::new()
            } else {
                lc.to_string()
            },
            peer_addr: if lp.ip().is_unspecified() {
                String::new()
            } else {
                lp.to_string()
            },
        };
        let metrics_addr = match &self.metrics_addr {
            Some(a) => Some(addr("metrics-addr", a)?),
            None => None,
        };
        let resp_conns_max = self.resp_conns_max.unwrap_or(RESP_CONNS_MAX_DEFAULT);
        if resp_conns_max == 0 || resp_conns_max > 1 << 20 {
            return Err(invalid(
                "resp-conns-max",
                resp_conns_max,
                "must be in 1..=1048576",
            ));
        }
        let resp_conns_max = resp_conns_max.div_ceil(shards as usize);
        let resp_password = match &self.resp_password_file {
            Some(f) => Some(read_password_file(f)?),
            None => None,
        };
        let cuts = crate::route::cuts_fingerprint(
            groups,
            &shard_template.split_keys,
            &shard_template.voters,
            replication_factor,
        );
        Ok(ValidConfig {
            cuts,
            replication_factor,
            metrics_addr,
            listen_resp,
            resp_conns_max,
            resp_password,
            id,
            cluster_id: shard_template.cluster,
            data_dir,
            listen_peers: lp,
            listen_clients: lc,
            peers,
            shards,
            groups,
            placement,
            lease_reads,
            client_conns_max,
            bootstrap,
            shard_template,
        })
    }
}

impl ValidConfig {
    /// The configuration of shard `s` of the store `store` (opened with
    /// [`crate::identity::open_store`]).
    pub fn shard(&self, s: u32, store: &crate::identity::StoreIdentity) -> ShardConfig {
        debug_assert_eq!((store.node, store.cluster), (self.id, self.cluster_id));
        let mut c = self.shard_template.clone();
        c.shard = s;
        c.cuts = store.cuts;
        // The factor the cluster was bootstrapped with, where the store
        // knows it (a joined node, which founds no range, does not).
        c.replication_factor_known = store.replication_factor != 0;
        if c.replication_factor_known {
            c.replication_factor = store.replication_factor;
        }
        // The groups are the cluster's, fixed at bootstrap: a restart with
        // another --groups must not create groups over existing ranges.
        if store.groups != 0 && u64::from(store.groups) != c.groups {
            c.groups = store.groups.into();
            c.split_keys = crate::route::even_split_keys(c.groups);
        }
        c.incarnation = store.incarnation;
        c.joined = store.joined;
        if store.joined {
            // Members come from the leader's snapshot once added.
            c.voters.clear();
        }
        c.dir = crate::identity::shard_dir(&self.data_dir, s);
        c.peers = self
            .peers
            .iter()
            .map(|&(id, a)| (id, shard_addr(a, s)))
            .collect();
        c
    }

    /// File descriptors this node may need at once: every client
    /// connection its shards admit, two connections per peer per shard (one
    /// each way) and handshakes in progress, the refusals in flight, and per
    /// shard its WAL (open segments, the one being prepared, the
    /// directory), snapshot files, listeners and the executor's own
    /// (io_uring rings, eventfds), and its stop socket pair with the
    /// signal handlers' two copies of its writing end; plus the process's
    /// (stdio, metrics).
    pub fn fd_budget(&self) -> usize {
        const PER_SHARD_FIXED: usize = 52;
        const PROCESS_FIXED: usize = 32;
        let shards = self.shards as usize;
        let mut clients = self.shard_template.transport.client_conns_max * shards;
        if self.listen_resp.is_some() {
            // RESP connections, and the shard's own client's links to
            // every node's shards (the RESP commands' way in).
            clients += (self.resp_conns_max + 2 * self.peers.len() + 2) * shards;
        }
        let refusals = crate::transport::CLIENT_REFUSALS_INFLIGHT_MAX * shards;
        let peers = (2 * self.peers.len() + 8) * shards;
        clients + refusals + peers + PER_SHARD_FIXED * shards + PROCESS_FIXED
    }

    /// The CPU shard `s` runs on when pinned, given `cpus` CPUs: (id + s)
    /// mod CPUs. A node's shards take distinct CPUs (as many as there
    /// are), and when several nodes share a machine the replicas of a
    /// group (shard s of every node) land on different CPUs, so a leader
    /// and its followers run in parallel instead of queueing on one CPU.
    pub fn cpu_of(&self, s: u32, cpus: usize) -> usize {
        (self.id as usize + s as usize) % cpus.max(1)
    }
}

/// Everything one shard needs to run (built from the node's validated
/// configuration).
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub cluster: u64,
    pub node: u64,
    /// This node's store incarnation (`crate::identity`), sent in every
    /// handshake; 0 until the store is opened.
    pub incarnation: u64,
    pub shard: u32,
    pub shards: u32,
    /// Groups in the cluster; this shard hosts those with `g % shards == shard`.
    pub groups: u64,
    /// The keys that cut the keyspace into `groups` initial ranges
    /// (`groups - 1` of them, increasing; `route::initial_bounds`). Used
    /// when a founding replica is created; stored in its descriptor.
    pub split_keys: Vec<bytes::Bytes>,
    /// The store's fingerprint of the cluster's initial ranges
    /// (`StoreIdentity::cuts`; 0: not known), sent in every handshake.
    pub cuts: u32,
    /// The node joined rather than founded the cluster (`StoreIdentity::
    /// joined`): `groups` is what the meta group had handed out when it
    /// joined, not a bound it may refuse a group id by.
    pub joined: bool,
    /// Every node of the initial cluster (this node included), sorted: the
    /// founders that initial ranges are placed on.
    pub voters: Vec<u64>,
    /// Replicas of each initial range (`route::founding_placement`): as
    /// the store recorded it, else the flag's.
    pub replication_factor: u32,
    /// Whether the store recorded `replication_factor` (not for a joined
    /// node, nor a store written before it): only then is it the
    /// cluster's, and told to clients.
    pub replication_factor_known: bool,
    /// This shard's directory (WAL and snapshots).
    pub dir: PathBuf,
    /// Address of this shard's index on each peer node.
    pub peers: Vec<(u64, SocketAddr)>,
    /// Raft settings (id and voters are filled per group).
    pub raft: RaftConfig,
    pub tick_ms: u64,
    pub kv: crate::kv::KvLimits,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub request_timeout_ms: u64,
    /// A group snapshots once this many entries were applied since its last.
    pub snapshot_entries: u64,
    /// ... or once this many bytes of entries were applied since its last.
    pub snapshot_log_bytes: u64,
    /// A range this shard leads is split once its keys and values pass
    /// this many bytes (0: never by size). `--range-split-bytes`.
    pub range_split_bytes: u64,
    /// A range this shard leads is split by load once it served this many
    /// requests a second (0: never), `range_split_load_secs` seconds in a
    /// row (`shard::load_splits`). `--range-split-qps`.
    pub range_split_qps: u64,
    /// `--range-split-load-secs` (1 to [`RANGE_SPLIT_LOAD_SECS_MAX`]).
    pub range_split_load_secs: u32,
    /// Bytes per second of snapshot chunks this shard sends at most (the
    /// node's `--snapshot-send-bytes-per-sec` over its shards): a token
    /// bucket holding at most one second's worth, or one chunk if more
    /// (`SnapshotBudget`). A chunk it refuses is not sent; the leader sends
    /// it again after the next heartbeat round, as a lost one.
    pub snapshot_send_bytes_per_sec: u64,
    /// A group whose oldest needed WAL record is more than this many
    /// records behind the head rewrites its hard state (with its log if
    /// small, else it snapshots, but for a group still being written:
    /// `wal_pin_bytes_max`), so idle groups do not pin old segments.
    /// The shard uses at least `WAL_RECORDS_KEPT_PER_GROUP` records per
    /// group it hosts (`Shard::unpin_wal`).
    pub wal_pin_records_max: u64,
    /// Bytes of WAL a group still being written may keep before the
    /// unpinning pass snapshots it (`--wal-pin-bytes-max`; never more
    /// than the filesystem's free space less the group's state and a
    /// segment: `shard::disk::pin_allowance`; 0: it is snapshotted at
    /// once).
    pub wal_pin_bytes_max: u64,
    pub wal: WalOptions,
    pub transport: TransportConfig,
    /// Bound on a scan's pairs.
    pub scan_limit_max: u32,
    /// Serve `Op::Isolate` (tests and drills only).
    pub fault_injection: bool,
    /// Elections a shard starts per tick at most; replicas whose timers
    /// ran out beyond it campaign at the next ticks (`RawNode::advance`),
    /// starting where the last tick's budget ran out. Thousands of groups
    /// whose timers run out together (a start, a dead node's leaders)
    /// would otherwise flood the node with votes faster than it answers
    /// them, and each late answer starts another election (10,000 groups
    /// per node never elected, issue #16). Default
    /// [`CAMPAIGNS_PER_TICK_MAX_DEFAULT`].
    pub campaigns_per_tick_max: u64,
    /// Replicas campaigning at once (pre-candidates and candidates) at
    /// most: a follower's election that comes due beyond it waits, oldest
    /// due first, until one ends (a candidate's own retries are never
    /// held). Each round of votes costs the node messages and WAL writes;
    /// with more rounds in flight than a turn answers within an election
    /// timeout, the answers come late, each late answer starts another
    /// election, and the turns grow longer still: 100,000 groups per node
    /// went on campaigning (600,000 campaigns, turns of 0.6 s, two thirds
    /// of the groups led after 40 s) in one start of three (issue #16).
    /// Bounding the rounds in flight bounds the messages a turn answers.
    /// A campaign holds its slot for `shard::CAMPAIGN_COUNTED_TIMEOUTS`
    /// election timeouts at most, so campaigns that cannot win (quorum
    /// gone) do not block those that can. Leader transfers (`TimeoutNow`)
    /// are not held. Default
    /// [`CAMPAIGNS_IN_FLIGHT_MAX_DEFAULT`].
    pub campaigns_in_flight_max: u64,
    /// This node's client address (shard 0), as the cluster map tells
    /// clients; empty when it listens on an unspecified address.
    pub client_addr: String,
    /// This node's peer address (shard 0, its `--listen-peers`), as it
    /// registers in the meta group; empty when it listens on an
    /// unspecified address.
    pub peer_addr: String,
    /// Run the balancer where the meta replica leads (`--balancer`).
    pub balancer: bool,
    /// `--dead-node-timeout-ms`.
    pub dead_node_timeout_ms: u64,
    /// `--stray-learner-timeout-ms`.
    pub stray_learner_timeout_ms: u64,
}

impl ShardConfig {
    /// Node `node`'s peer address of shard 0, from `--peers` (which names
    /// this shard's port of each node: shard 0's is `shard` below it).
    pub fn founder_peer_addr(&self, node: u64) -> Option<String> {
        let (_, a) = self.peers.iter().find(|(n, _)| *n == node)?;
        let port = a.port().checked_sub(self.shard as u16)?;
        Some(SocketAddr::new(a.ip(), port).to_string())
    }
}

/// Least `--stray-learner-timeout-ms`: 1 s, for tests. Below 120 s (a
/// move's catch-up wait) a live move's learner may be removed; production
/// wants the default (`meta::planner::STRAY_LEARNER_TIMEOUT_MS_DEFAULT`).
pub const STRAY_LEARNER_TIMEOUT_MS_MIN: u64 = 1_000;

/// Default of `--snapshot-send-bytes-per-sec` (a node's, shared by its
/// shards): 64 MiB/s, between CockroachDB's 32 MiB/s and TiKV's 100 MB/s.
pub const SNAPSHOT_SEND_BYTES_PER_SEC_DEFAULT: u64 = 64 << 20;

/// Least `--snapshot-send-bytes-per-sec` per shard: 64 KiB/s (a 1 MiB
/// chunk each 16 s).
pub const SNAPSHOT_SEND_BYTES_PER_SEC_MIN: u64 = 64 << 10;

/// Default of [`ShardConfig::campaigns_per_tick_max`]: 10,000 groups
/// campaign within about 160 ticks of a start.
pub const CAMPAIGNS_PER_TICK_MAX_DEFAULT: u64 = 64;

/// Default of [`ShardConfig::campaigns_in_flight_max`]: four ticks'
/// worth of [`CAMPAIGNS_PER_TICK_MAX_DEFAULT`], enough for a round trip of
/// a few turns.
pub const CAMPAIGNS_IN_FLIGHT_MAX_DEFAULT: u64 = 256;

#[cfg(test)]
mod tests;
