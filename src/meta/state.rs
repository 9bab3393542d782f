//! The meta group's state machine: the cluster's map (nodes, range
//! descriptors), its id allocators and its cluster-wide settings.
//!
//! Sans-I/O and deterministic: [`MetaState::apply`] is a pure function of
//! the state and one [`MetaCmd`], so every replica of the meta group that
//! applies the same log holds the same map (its snapshot bytes are equal:
//! tested). The hosting group gives each command exactly-once semantics
//! through its client sessions (`kv`), so a command retried by a node is
//! applied once.
//!
//! The rules, and where they come from:
//! - **Descriptors: the higher epoch wins.** A range's own log is the
//!   authority for its keys and replicas; its leader reports each new
//!   descriptor here ([`MetaCmd::ReportRanges`]), and the map keeps it
//!   unless it holds a newer one of the same keys (`route::RangeMap::insert`,
//!   TiKV PD's region heartbeat rule). No cross-group transaction is
//!   needed. A split is reported as one batch (both sides), so the map has
//!   no gap between the two reports.
//! - **Ids are allocated here, once, never reused** (range, replica and
//!   node ids): a counter that only grows ([`MetaCmd::AllocIds`]); a
//!   reported id at or above a counter moves it past that id.
//! - **Cluster-wide settings live here only**, so nodes cannot disagree on
//!   them: what a node is started with is checked against them when it
//!   registers.
//! - **Node states** an operator sets are replicated (active,
//!   decommissioning, decommissioned: CockroachDB's membership states);
//!   whether a node is live, suspect or dead is the meta leader's reading
//!   of its heartbeats (`meta::Liveness`), not a log entry, as PD keeps
//!   store heartbeats in memory.
//!
//! ```text
//! command (little endian)
//!   0  format   u8 = 1
//!   1  kind     u8        1 bootstrap, 2 register node, 3 set node state,
//!                         4 report ranges, 5 allocate ids, 6 set the
//!                         replication factor
//!   2  pad      [2] = 0
//!   4  body
//!     bootstrap       settings | nodes u32 | node* | ranges u32 | (len u32 | descriptor)*
//!     register node   node u64 | shards u32 | peer_len u32 | peer | client_len u32 | client
//!     set node state  node u64 | state u8 | pad [7]
//!     report ranges   ranges u32 | (len u32 | descriptor)*
//!     allocate ids    kind u8 | pad [3] | count u32
//!     set rf          rf u32
//!   settings = rf u32 | shards u32 | key_bytes_max u32 | value_bytes_max u32
//!   node     = id u64 | shards u32 | state u8 | pad [3] | peer_len u32 | peer
//!              | client_len u32 | client
//!
//! snapshot = magic "RRMETA01" | bootstrapped u8 | pad [7] | settings
//!   | next node u64 | next range u64 | next replica u64
//!   | nodes u32 | node* | ranges u32 | (len u32 | descriptor)*
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

use super::range::{Epoch, RangeDesc, RangeError, RangeId};
use crate::raft::{NodeId, ReplicaId};
use crate::route::{RangeMap, REPLICATION_FACTOR_MAX};

/// Nodes the map holds, decommissioned ones included (their ids are never
/// reused, so their records stay). A register past it is refused.
pub const META_NODES_MAX: usize = 10_000;

/// Ranges the map holds. A report that would pass it is refused (splits
/// stop until merges bring the count down).
pub const META_RANGES_MAX: usize = 1 << 22;

/// Descriptors in one report: a split reports two, a leader reporting its
/// ranges after an election batches them up to this.
pub const META_REPORT_RANGES_MAX: usize = 256;

/// Bytes of one meta command at most (`Op::Meta`): one entry of the meta
/// group's log, well inside a WAL record (`wal::record_bytes_max`, about
/// 2 MiB by default). A bootstrap names no ranges (their leaders report
/// them) and reports go in batches of [`META_REPORT_RANGES_MAX`], so the
/// node's own commands stay far below it.
pub const META_CMD_BYTES_MAX: usize = 1 << 20;

/// Ids one allocation may take (a node allocating ids for many splits at
/// once takes a block).
pub const META_ALLOC_IDS_MAX: u32 = 1 << 16;

/// The largest node, range or replica id the map takes (2^63 - 1): far
/// past any real allocation, and with it a counter's `id + 1` and `next
/// + count` never overflow. An id above it in a command is refused.
pub const META_ID_MAX: u64 = u64::MAX >> 1;

/// Bytes of a node's peer or client address as it is stored (an
/// `ip:port`, or a name a node resolves).
pub const META_ADDR_BYTES_MAX: usize = 256;

const FORMAT: u8 = 1;
const SNAP_MAGIC: &[u8; 8] = b"RRMETA01";
const KIND_BOOTSTRAP: u8 = 1;
const KIND_REGISTER: u8 = 2;
const KIND_SET_STATE: u8 = 3;
const KIND_REPORT: u8 = 4;
const KIND_ALLOC: u8 = 5;
const KIND_SET_RF: u8 = 6;
const KIND_JOIN: u8 = 7;

/// What a snapshot taken before the bootstrap holds for the settings.
const NO_SETTINGS: ClusterSettings = ClusterSettings {
    replication_factor: 0,
    shards: 0,
    key_bytes_max: 0,
    value_bytes_max: 0,
};

/// The settings every node of a cluster shares, fixed at bootstrap
/// (`replication_factor` may change later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Replicas of each range, 1..=`REPLICATION_FACTOR_MAX`.
    pub replication_factor: u32,
    /// Shards (executors) of every node.
    pub shards: u32,
    /// Largest key a client may write, in bytes.
    pub key_bytes_max: u32,
    /// Largest value a client may write, in bytes.
    pub value_bytes_max: u32,
}

/// What an operator made of a node (CockroachDB's membership states).
/// Replicated; liveness is not (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Takes replicas.
    Active,
    /// Takes no new replicas; the balancer moves its replicas away.
    Decommissioning,
    /// Holds no replica and never will; its id is never reused.
    Decommissioned,
}

impl NodeState {
    fn code(self) -> u8 {
        match self {
            NodeState::Active => 1,
            NodeState::Decommissioning => 2,
            NodeState::Decommissioned => 3,
        }
    }

    fn from_code(c: u8) -> Option<NodeState> {
        Some(match c {
            1 => NodeState::Active,
            2 => NodeState::Decommissioning,
            3 => NodeState::Decommissioned,
            _ => return None,
        })
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Active => "active",
            NodeState::Decommissioning => "decommissioning",
            NodeState::Decommissioned => "decommissioned",
        })
    }
}

/// A node as the map has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Peer address of its shard 0 (shard `s`: port + `s`).
    pub peer_addr: String,
    /// Client address of its shard 0; empty: not given.
    pub client_addr: String,
    pub shards: u32,
    pub state: NodeState,
}

/// Which counter [`MetaCmd::AllocIds`] draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Range,
    Replica,
    /// Node ids: a node joining through a member takes one before it
    /// registers (`crate::join`), so an answer lost and asked again wastes
    /// an id rather than registering a node twice.
    Node,
}

/// One entry of the meta group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaCmd {
    /// The cluster's first map: its settings, founding nodes and initial
    /// ranges (covering the keyspace). The first applied wins; a later one
    /// changes nothing and is `Done` if its settings are the same (another
    /// founder's), else refused.
    Bootstrap {
        settings: ClusterSettings,
        nodes: Vec<NodeRecord>,
        ranges: Vec<RangeDesc>,
    },
    /// A node announces itself (`node` 0: a new node, given the next id)
    /// or its new addresses. Answered with its id.
    RegisterNode {
        node: NodeId,
        peer_addr: String,
        client_addr: String,
        shards: u32,
    },
    /// A new node joins under `node` (taken from `AllocIds`, or given by
    /// its operator): refused if another node holds the id, so two nodes
    /// started with one `--id` cannot both join; the same node asking
    /// again (same addresses: a lost answer) is answered with its id.
    JoinNode {
        node: NodeId,
        peer_addr: String,
        client_addr: String,
        shards: u32,
    },
    /// An operator's change of a node's state.
    SetNodeState { node: NodeId, state: NodeState },
    /// Descriptors a range leader reports (a split: both sides at once).
    ReportRanges(Vec<RangeDesc>),
    /// `count` new ids of `kind`; answered with the first.
    AllocIds { kind: IdKind, count: u32 },
    /// A new replication factor (the balancer adds or removes replicas).
    SetReplicationFactor(u32),
}

/// What an applied command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaReply {
    Done,
    /// The registered node's id.
    Node(NodeId),
    /// Ids `first .. first + count` are the caller's.
    Ids {
        first: u64,
        count: u32,
    },
    /// Descriptors the map kept a newer one over: (range, the epoch it
    /// offered, the range and epoch held). The others were taken.
    Reported {
        stale: Vec<(RangeId, Epoch, RangeId, Epoch)>,
    },
}

impl MetaReply {
    /// The reply's bytes: kind u8 (0 Done, 1 Node, 2 Ids, 3 Reported) |
    /// pad [3] | Node: id u64 | Ids: first u64, count u32 | Reported:
    /// count u32, then per stale range: range u64, version u64, conf_ver
    /// u64, held range u64, version u64, conf_ver u64.
    pub fn encode(&self) -> Bytes {
        let mut w = Vec::with_capacity(16);
        match self {
            MetaReply::Done => w.extend_from_slice(&[0, 0, 0, 0]),
            MetaReply::Node(id) => {
                w.extend_from_slice(&[1, 0, 0, 0]);
                w.extend_from_slice(&id.to_le_bytes());
            }
            MetaReply::Ids { first, count } => {
                w.extend_from_slice(&[2, 0, 0, 0]);
                w.extend_from_slice(&first.to_le_bytes());
                w.extend_from_slice(&count.to_le_bytes());
            }
            MetaReply::Reported { stale } => {
                w.extend_from_slice(&[3, 0, 0, 0]);
                w.extend_from_slice(&(stale.len() as u32).to_le_bytes());
                for (r, e, h, he) in stale {
                    for n in [*r, e.version, e.conf_ver, *h, he.version, he.conf_ver] {
                        w.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
        }
        Bytes::from(w)
    }

    /// Reads [`MetaReply::encode`]'s bytes.
    pub fn decode(b: &[u8]) -> Result<MetaReply, MetaCodecError> {
        let what = "reply";
        let mut r = Reader { b, at: 0, what };
        let kind = r.take(1)?[0];
        r.pad(3)?;
        let reply = match kind {
            0 => MetaReply::Done,
            1 => MetaReply::Node(r.u64()?),
            2 => MetaReply::Ids {
                first: r.u64()?,
                count: r.u32()?,
            },
            3 => {
                let n = r.count(
                    "stale ranges",
                    META_REPORT_RANGES_MAX,
                    "META_REPORT_RANGES_MAX",
                )?;
                let mut stale = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut x = [0u64; 6];
                    for v in &mut x {
                        *v = r.u64()?;
                    }
                    let epoch = |version, conf_ver| Epoch { version, conf_ver };
                    stale.push((x[0], epoch(x[1], x[2]), x[3], epoch(x[4], x[5])));
                }
                MetaReply::Reported { stale }
            }
            code => {
                return Err(MetaCodecError::Code {
                    what,
                    field: "reply kind",
                    code,
                })
            }
        };
        r.end()?;
        Ok(reply)
    }
}

/// Why a command changed nothing. Deterministic: every replica answers
/// the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("the cluster is not bootstrapped yet: its founding nodes write the first map")]
    NotBootstrapped,
    #[error("the cluster was bootstrapped already, with other settings")]
    AlreadyBootstrapped,
    #[error("node {node} was decommissioned; node ids are never reused: start the node with an empty data directory to join as a new node")]
    Decommissioned { node: NodeId },
    #[error("no node {node} in the cluster map")]
    UnknownNode { node: NodeId },
    #[error("node id {node} is taken by the node at {peer_addr}: a new node joins under an id of its own (drop --id and the cluster gives it one)")]
    NodeTaken { node: NodeId, peer_addr: String },
    #[error("node {node} is {from}: it cannot become {to} ({why})")]
    StateChange {
        node: NodeId,
        from: NodeState,
        to: NodeState,
        why: String,
    },
    #[error("node {node} runs {got} shards, the cluster's nodes run {want}: start it with --shards {want}")]
    Shards { node: NodeId, got: u32, want: u32 },
    #[error("{what} is {got}, above {max} (meta::{limit})")]
    Limit {
        what: &'static str,
        got: u64,
        max: u64,
        limit: &'static str,
    },
    #[error("{what} is {got}: must be in {min}..={max}")]
    OutOfRange {
        what: &'static str,
        got: u64,
        min: u64,
        max: u64,
    },
    #[error("a range in the report is not valid: {0}")]
    Range(RangeError),
    #[error("the founding ranges leave keys without a range ({gap}; range {range} is the first given): give ranges that cut the whole keyspace, or none")]
    Gap { range: RangeId, gap: String },
}

/// Why bytes are not a meta command or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaCodecError {
    #[error("meta {what}: truncated at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("meta {what}: {extra} bytes after its end (corrupt, or written by a newer version)")]
    Trailing { what: &'static str, extra: usize },
    #[error("meta {what}: format or magic {found}, this build reads {want} (written by a newer version?)")]
    Format {
        what: &'static str,
        found: String,
        want: String,
    },
    #[error("meta {what}: {field} code {code} is not known")]
    Code {
        what: &'static str,
        field: &'static str,
        code: u8,
    },
    #[error("meta {what}: {field} of {len} exceeds {max} (meta::{limit})")]
    TooLarge {
        what: &'static str,
        field: &'static str,
        len: usize,
        max: usize,
        limit: &'static str,
    },
    #[error("meta {what}: {err}")]
    Range { what: &'static str, err: RangeError },
    #[error("meta {what}: an address is not UTF-8")]
    Utf8 { what: &'static str },
    /// Bytes that decode but break a rule the state keeps (nonzero
    /// padding, a node id 0 or twice, settings out of their bounds).
    #[error("meta {what}: {why} (corrupt, or written by a newer version)")]
    Invalid { what: &'static str, why: String },
}

/// The cluster map the meta group replicates. Two states are equal when
/// their snapshots are (the state machine's own test of agreement).
#[derive(Debug, Clone)]
pub struct MetaState {
    /// Set by the first `Bootstrap`; every other command needs it.
    settings: Option<ClusterSettings>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// No two ranges share a key (`RangeMap`'s invariant). A bootstrap
    /// covers the keyspace; a report replaces every range it overlaps, so
    /// a gap opens where a newer range's neighbours have not reported yet
    /// (a split's sides reported apart) and closes when they do: each
    /// range's leader reports its descriptor, so once every current one
    /// arrived every key is in exactly one range (PD's map behaves alike).
    ranges: RangeMap,
    /// `META_RANGES_MAX`, lowered by tests.
    ranges_max: usize,
    /// Invariant: above every node id in `nodes`.
    next_node: NodeId,
    /// Invariant: above every range id in `ranges`.
    next_range: RangeId,
    /// Invariant: above every replica id in `ranges`.
    next_replica: ReplicaId,
}

/// The empty state, as [`MetaState::new`] (a derived default had a
/// ranges limit of 0: every report was refused, found when the meta
/// group's state machine first ran in a cluster).
impl Default for MetaState {
    fn default() -> MetaState {
        MetaState::new()
    }
}

impl MetaState {
    pub fn new() -> MetaState {
        MetaState {
            settings: None,
            nodes: BTreeMap::new(),
            ranges: RangeMap::new(),
            next_node: 1,
            next_range: 1,
            next_replica: 1,
            ranges_max: META_RANGES_MAX,
        }
    }

    /// Lowers the ranges limit, for a test that hits it.
    #[cfg(test)]
    pub(crate) fn set_ranges_max(&mut self, max: usize) {
        self.ranges_max = max;
    }

    /// The settings; `None` until bootstrapped.
    pub fn settings(&self) -> Option<&ClusterSettings> {
        self.settings.as_ref()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&id)
    }

    /// The range descriptors, by key.
    pub fn ranges(&self) -> &RangeMap {
        &self.ranges
    }

    /// The next id of each counter: (node, range, replica).
    pub fn next_ids(&self) -> (NodeId, RangeId, ReplicaId) {
        (self.next_node, self.next_range, self.next_replica)
    }

    /// Applies one command of the log. An `Err` changed nothing.
    pub fn apply(&mut self, cmd: &MetaCmd) -> Result<MetaReply, MetaError> {
        let r = match cmd {
            MetaCmd::Bootstrap {
                settings,
                nodes,
                ranges,
            } => self.bootstrap(settings, nodes, ranges),
            _ if self.settings.is_none() => Err(MetaError::NotBootstrapped),
            MetaCmd::RegisterNode {
                node,
                peer_addr,
                client_addr,
                shards,
            } => self.register(*node, peer_addr, client_addr, *shards),
            MetaCmd::JoinNode {
                node,
                peer_addr,
                client_addr,
                shards,
            } => {
                if *node == 0 {
                    return Err(MetaError::UnknownNode { node: 0 });
                }
                match self.nodes.get(node) {
                    Some(n)
                        if n.peer_addr != *peer_addr
                            || n.client_addr != *client_addr
                            || n.state != NodeState::Active =>
                    {
                        Err(MetaError::NodeTaken {
                            node: *node,
                            peer_addr: n.peer_addr.clone(),
                        })
                    }
                    _ => self.register(*node, peer_addr, client_addr, *shards),
                }
            }
            MetaCmd::SetNodeState { node, state } => self.set_state(*node, *state),
            MetaCmd::ReportRanges(descs) => self.report(descs),
            MetaCmd::AllocIds { kind, count } => self.alloc(*kind, *count),
            MetaCmd::SetReplicationFactor(rf) => {
                check_rf(*rf)?;
                self.settings
                    .as_mut()
                    .expect("bootstrapped")
                    .replication_factor = *rf;
                Ok(MetaReply::Done)
            }
        };
        self.debug_check();
        r
    }

    fn bootstrap(
        &mut self,
        settings: &ClusterSettings,
        nodes: &[NodeRecord],
        ranges: &[RangeDesc],
    ) -> Result<MetaReply, MetaError> {
        if let Some(held) = &self.settings {
            // The first wins; another founder's (same flags: the handshake
            // compares them) changes nothing.
            return if held == settings {
                Ok(MetaReply::Done)
            } else {
                Err(MetaError::AlreadyBootstrapped)
            };
        }
        check_rf(settings.replication_factor)?;
        limit("nodes", nodes.len(), META_NODES_MAX, "META_NODES_MAX")?;
        limit("ranges", ranges.len(), META_RANGES_MAX, "META_RANGES_MAX")?;
        check_range_ids(ranges)?;
        let mut map = RangeMap::new();
        for d in ranges {
            if map
                .insert(d.clone())
                .map_or(true, |displaced| !displaced.is_empty())
            {
                return Err(MetaError::Range(RangeError::Bounds {
                    id: d.id,
                    start: d.start.clone(),
                    end: d.end.clone(),
                }));
            }
        }
        // Founders that give ranges cut the whole keyspace; none given,
        // the ranges' leaders report them.
        if let (Err(gap), Some(d)) = (map.coverage(), ranges.first()) {
            return Err(MetaError::Gap {
                range: d.id,
                gap: gap.to_string(),
            });
        }
        let mut book = BTreeMap::new();
        for n in nodes {
            check_node(n.id, &n.peer_addr, &n.client_addr)?;
            book.insert(n.id, n.clone());
        }
        self.settings = Some(*settings);
        self.nodes = book;
        self.ranges = map;
        self.next_node = self
            .next_node
            .max(self.nodes.keys().max().map_or(1, |m| m + 1));
        self.bump_past_ranges(ranges);
        Ok(MetaReply::Done)
    }

    fn register(
        &mut self,
        node: NodeId,
        peer_addr: &str,
        client_addr: &str,
        shards: u32,
    ) -> Result<MetaReply, MetaError> {
        let want = self.settings.as_ref().expect("bootstrapped").shards;
        if shards != want {
            return Err(MetaError::Shards {
                node,
                got: shards,
                want,
            });
        }
        check_node(node.max(1), peer_addr, client_addr)?;
        let id = if node == 0 { self.next_node } else { node };
        match self.nodes.get_mut(&id) {
            Some(n) if n.state == NodeState::Decommissioned => {
                return Err(MetaError::Decommissioned { node: id })
            }
            Some(n) => {
                n.peer_addr = peer_addr.to_string();
                n.client_addr = client_addr.to_string();
            }
            None => {
                limit(
                    "nodes",
                    self.nodes.len() + 1,
                    META_NODES_MAX,
                    "META_NODES_MAX",
                )?;
                self.nodes.insert(
                    id,
                    NodeRecord {
                        id,
                        peer_addr: peer_addr.to_string(),
                        client_addr: client_addr.to_string(),
                        shards,
                        state: NodeState::Active,
                    },
                );
                self.next_node = self.next_node.max(id + 1);
            }
        }
        Ok(MetaReply::Node(id))
    }

    fn set_state(&mut self, node: NodeId, to: NodeState) -> Result<MetaReply, MetaError> {
        let holding = self.ranges.held_by(node);
        let n = self
            .nodes
            .get_mut(&node)
            .ok_or(MetaError::UnknownNode { node })?;
        let from = n.state;
        let refuse = |why: String| MetaError::StateChange {
            node,
            from,
            to,
            why,
        };
        match (from, to) {
            _ if from == to => {}
            (NodeState::Decommissioned, _) => {
                return Err(refuse("node ids are never reused".into()))
            }
            (NodeState::Active, NodeState::Decommissioned) => {
                return Err(refuse("decommission it first".into()))
            }
            (NodeState::Decommissioning, NodeState::Decommissioned) if holding > 0 => {
                return Err(refuse(format!(
                    "it still holds replicas of {holding} ranges"
                )))
            }
            // A map some range has not been reported to yet (right after
            // a bootstrap it holds none) cannot say the node holds nothing.
            (NodeState::Decommissioning, NodeState::Decommissioned) => {
                if let Err(gap) = self.ranges.coverage() {
                    return Err(refuse(format!(
                        "the map does not hold every range yet ({gap}): their leaders report them within seconds; ask again"
                    )));
                }
            }
            _ => {}
        }
        n.state = to;
        Ok(MetaReply::Done)
    }

    fn report(&mut self, descs: &[RangeDesc]) -> Result<MetaReply, MetaError> {
        limit(
            "ranges in one report",
            descs.len(),
            META_REPORT_RANGES_MAX,
            "META_REPORT_RANGES_MAX",
        )?;
        check_range_ids(descs)?;
        // A report replaces what it overlaps: only the count after it
        // counts against the limit. Near the limit it is tried on a copy
        // (a refusal changes nothing); below it, no copy.
        let near = self.ranges.len() + descs.len() > self.ranges_max;
        let mut trial = near.then(|| self.ranges.clone());
        let map = trial.as_mut().unwrap_or(&mut self.ranges);
        let mut stale = Vec::new();
        for d in descs {
            if let Err(s) = map.insert(d.clone()) {
                stale.push((s.offered, s.offered_epoch, s.held, s.held_epoch));
            }
        }
        if let Some(trial) = trial {
            limit("ranges", trial.len(), self.ranges_max, "META_RANGES_MAX")?;
            self.ranges = trial;
        }
        self.bump_past_ranges(descs);
        Ok(MetaReply::Reported { stale })
    }

    fn alloc(&mut self, kind: IdKind, count: u32) -> Result<MetaReply, MetaError> {
        if count == 0 || count > META_ALLOC_IDS_MAX {
            return Err(MetaError::OutOfRange {
                what: "ids asked for (META_ALLOC_IDS_MAX)",
                got: count.into(),
                min: 1,
                max: META_ALLOC_IDS_MAX.into(),
            });
        }
        let next = match kind {
            IdKind::Range => &mut self.next_range,
            IdKind::Replica => &mut self.next_replica,
            IdKind::Node => &mut self.next_node,
        };
        let first = *next;
        if first + u64::from(count) > META_ID_MAX + 1 {
            return Err(MetaError::Limit {
                what: "the next id",
                got: first + u64::from(count) - 1,
                max: META_ID_MAX,
                limit: "META_ID_MAX",
            });
        }
        *next += u64::from(count);
        Ok(MetaReply::Ids { first, count })
    }

    /// Moves the range and replica counters past every id in `descs`.
    fn bump_past_ranges(&mut self, descs: &[RangeDesc]) {
        for d in descs {
            self.next_range = self.next_range.max(d.id + 1);
            for r in &d.replicas {
                self.next_replica = self.next_replica.max(r.replica + 1);
            }
        }
    }

    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            if let Some(&max) = self.nodes.keys().next_back() {
                assert!(self.next_node > max, "next node id above every node");
            }
            for d in self.ranges.iter() {
                assert!(self.next_range > d.id, "next range id above range {}", d.id);
                for r in &d.replicas {
                    assert!(self.next_replica > r.replica, "next replica id");
                }
            }
        }
    }

    /// The state as snapshot bytes (the layout at the top of the module).
    pub fn snapshot(&self) -> Bytes {
        let mut w = Vec::with_capacity(64 + self.ranges.len() * 96);
        w.extend_from_slice(SNAP_MAGIC);
        w.extend_from_slice(&[u8::from(self.settings.is_some()), 0, 0, 0, 0, 0, 0, 0]);
        put_settings(&mut w, &self.settings.unwrap_or(NO_SETTINGS));
        for n in [self.next_node, self.next_range, self.next_replica] {
            w.extend_from_slice(&n.to_le_bytes());
        }
        put_nodes(&mut w, self.nodes.values());
        put_ranges(&mut w, self.ranges.iter());
        Bytes::from(w)
    }

    /// A state from [`MetaState::snapshot`] bytes, validated as a command is.
    pub fn restore(b: &[u8]) -> Result<MetaState, MetaCodecError> {
        let what = "snapshot";
        let mut r = Reader { b, at: 0, what };
        let magic = r.take(8)?;
        if magic != SNAP_MAGIC {
            return Err(MetaCodecError::Format {
                what,
                found: format!("{magic:?}"),
                want: format!("{SNAP_MAGIC:?}"),
            });
        }
        let bootstrapped = match r.take(1)?[0] {
            0 => false,
            1 => true,
            code => {
                return Err(MetaCodecError::Code {
                    what,
                    field: "bootstrapped flag",
                    code,
                })
            }
        };
        r.pad(7)?;
        let settings = r.settings()?;
        let (next_node, next_range, next_replica) = (r.u64()?, r.u64()?, r.u64()?);
        let nodes = r.nodes()?;
        let descs = r.ranges(META_RANGES_MAX, "META_RANGES_MAX")?;
        r.end()?;
        let invalid = |why: String| MetaCodecError::Invalid { what, why };
        if bootstrapped {
            check_rf(settings.replication_factor).map_err(|e| invalid(e.to_string()))?;
        } else if settings != NO_SETTINGS || !nodes.is_empty() || !descs.is_empty() {
            return Err(invalid("state held before a bootstrap".into()));
        }
        let mut book = BTreeMap::new();
        for n in nodes {
            check_node(n.id, &n.peer_addr, &n.client_addr).map_err(|e| invalid(e.to_string()))?;
            let id = n.id;
            if book.insert(id, n).is_some() {
                return Err(invalid(format!("node {id} listed twice")));
            }
        }
        check_range_ids(&descs).map_err(|e| invalid(e.to_string()))?;
        let mut ranges = RangeMap::new();
        for d in descs {
            if !ranges.insert(d).is_ok_and(|displaced| displaced.is_empty()) {
                return Err(MetaCodecError::Format {
                    what,
                    found: "overlapping ranges".into(),
                    want: "ranges that do not overlap".into(),
                });
            }
        }
        let s = MetaState {
            settings: bootstrapped.then_some(settings),
            nodes: book,
            ranges,
            ranges_max: META_RANGES_MAX,
            next_node,
            next_range,
            next_replica,
        };
        let ids_ok = [next_node, next_range, next_replica]
            .iter()
            .all(|&c| c <= META_ID_MAX + 1)
            && s.nodes.keys().all(|&n| n < next_node)
            && s.ranges
                .iter()
                .all(|d| d.id < next_range && d.replicas.iter().all(|x| x.replica < next_replica));
        if !ids_ok {
            return Err(MetaCodecError::Format {
                what,
                found: "an id at or above its counter".into(),
                want: "counters above every id".into(),
            });
        }
        Ok(s)
    }
}

impl PartialEq for MetaState {
    fn eq(&self, other: &MetaState) -> bool {
        self.snapshot() == other.snapshot()
    }
}

impl Eq for MetaState {}

fn check_rf(rf: u32) -> Result<(), MetaError> {
    if (1..=REPLICATION_FACTOR_MAX).contains(&rf) {
        Ok(())
    } else {
        Err(MetaError::OutOfRange {
            what: "the replication factor",
            got: rf.into(),
            min: 1,
            max: REPLICATION_FACTOR_MAX.into(),
        })
    }
}

fn limit(what: &'static str, got: usize, max: usize, name: &'static str) -> Result<(), MetaError> {
    if got > max {
        return Err(MetaError::Limit {
            what,
            got: got as u64,
            max: max as u64,
            limit: name,
        });
    }
    Ok(())
}

/// Validates each descriptor and bounds its ids by [`META_ID_MAX`].
fn check_range_ids(descs: &[RangeDesc]) -> Result<(), MetaError> {
    for d in descs {
        d.validate().map_err(MetaError::Range)?;
        let top = d.replicas.iter().map(|r| r.replica).fold(d.id, u64::max);
        id_bound("a range or replica id", top)?;
    }
    Ok(())
}

fn id_bound(what: &'static str, id: u64) -> Result<(), MetaError> {
    if id > META_ID_MAX {
        return Err(MetaError::Limit {
            what,
            got: id,
            max: META_ID_MAX,
            limit: "META_ID_MAX",
        });
    }
    Ok(())
}

fn check_node(id: NodeId, peer: &str, client: &str) -> Result<(), MetaError> {
    id_bound("a node id", id)?;
    if id == 0 {
        return Err(MetaError::OutOfRange {
            what: "a node id",
            got: 0,
            min: 1,
            max: u64::MAX,
        });
    }
    for a in [peer, client] {
        limit(
            "an address's bytes",
            a.len(),
            META_ADDR_BYTES_MAX,
            "META_ADDR_BYTES_MAX",
        )?;
    }
    Ok(())
}

impl MetaCmd {
    /// The command's bytes (the layout at the top of the module).
    pub fn encode(&self) -> Bytes {
        let mut w = Vec::with_capacity(64);
        let kind = match self {
            MetaCmd::Bootstrap { .. } => KIND_BOOTSTRAP,
            MetaCmd::RegisterNode { .. } => KIND_REGISTER,
            MetaCmd::JoinNode { .. } => KIND_JOIN,
            MetaCmd::SetNodeState { .. } => KIND_SET_STATE,
            MetaCmd::ReportRanges(_) => KIND_REPORT,
            MetaCmd::AllocIds { .. } => KIND_ALLOC,
            MetaCmd::SetReplicationFactor(_) => KIND_SET_RF,
        };
        w.extend_from_slice(&[FORMAT, kind, 0, 0]);
        match self {
            MetaCmd::Bootstrap {
                settings,
                nodes,
                ranges,
            } => {
                put_settings(&mut w, settings);
                put_nodes(&mut w, nodes.iter());
                put_ranges(&mut w, ranges.iter());
            }
            MetaCmd::RegisterNode {
                node,
                peer_addr,
                client_addr,
                shards,
            }
            | MetaCmd::JoinNode {
                node,
                peer_addr,
                client_addr,
                shards,
            } => {
                w.extend_from_slice(&node.to_le_bytes());
                w.extend_from_slice(&shards.to_le_bytes());
                put_bytes(&mut w, peer_addr.as_bytes());
                put_bytes(&mut w, client_addr.as_bytes());
            }
            MetaCmd::SetNodeState { node, state } => {
                w.extend_from_slice(&node.to_le_bytes());
                w.extend_from_slice(&[state.code(), 0, 0, 0, 0, 0, 0, 0]);
            }
            MetaCmd::ReportRanges(descs) => put_ranges(&mut w, descs.iter()),
            MetaCmd::AllocIds { kind, count } => {
                let k = match kind {
                    IdKind::Range => 1,
                    IdKind::Replica => 2,
                    IdKind::Node => 3,
                };
                w.extend_from_slice(&[k, 0, 0, 0]);
                w.extend_from_slice(&count.to_le_bytes());
            }
            MetaCmd::SetReplicationFactor(rf) => w.extend_from_slice(&rf.to_le_bytes()),
        }
        Bytes::from(w)
    }

    /// Reads a command that fills all of `b`; every count is bounded
    /// before anything is allocated for it.
    pub fn decode(b: &[u8]) -> Result<MetaCmd, MetaCodecError> {
        let what = "command";
        let mut r = Reader { b, at: 0, what };
        let head = r.take(2)?;
        r.pad(2)?;
        if head[0] != FORMAT {
            return Err(MetaCodecError::Format {
                what,
                found: head[0].to_string(),
                want: FORMAT.to_string(),
            });
        }
        let cmd = match head[1] {
            KIND_BOOTSTRAP => MetaCmd::Bootstrap {
                settings: r.settings()?,
                nodes: r.nodes()?,
                ranges: r.ranges(META_RANGES_MAX, "META_RANGES_MAX")?,
            },
            KIND_REGISTER => MetaCmd::RegisterNode {
                node: r.u64()?,
                shards: r.u32()?,
                peer_addr: r.addr()?,
                client_addr: r.addr()?,
            },
            KIND_JOIN => MetaCmd::JoinNode {
                node: r.u64()?,
                shards: r.u32()?,
                peer_addr: r.addr()?,
                client_addr: r.addr()?,
            },
            KIND_SET_STATE => {
                let node = r.u64()?;
                let code = r.take(1)?[0];
                r.pad(7)?;
                let state = NodeState::from_code(code).ok_or(MetaCodecError::Code {
                    what,
                    field: "node state",
                    code,
                })?;
                MetaCmd::SetNodeState { node, state }
            }
            KIND_REPORT => {
                MetaCmd::ReportRanges(r.ranges(META_REPORT_RANGES_MAX, "META_REPORT_RANGES_MAX")?)
            }
            KIND_ALLOC => {
                let code = r.take(1)?[0];
                r.pad(3)?;
                let kind = match code {
                    1 => IdKind::Range,
                    2 => IdKind::Replica,
                    3 => IdKind::Node,
                    _ => {
                        return Err(MetaCodecError::Code {
                            what,
                            field: "id kind",
                            code,
                        })
                    }
                };
                MetaCmd::AllocIds {
                    kind,
                    count: r.u32()?,
                }
            }
            KIND_SET_RF => MetaCmd::SetReplicationFactor(r.u32()?),
            code => {
                return Err(MetaCodecError::Code {
                    what,
                    field: "command kind",
                    code,
                })
            }
        };
        r.end()?;
        Ok(cmd)
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

fn put_settings(w: &mut Vec<u8>, s: &ClusterSettings) {
    for n in [
        s.replication_factor,
        s.shards,
        s.key_bytes_max,
        s.value_bytes_max,
    ] {
        w.extend_from_slice(&n.to_le_bytes());
    }
}

fn put_nodes<'a>(w: &mut Vec<u8>, nodes: impl ExactSizeIterator<Item = &'a NodeRecord>) {
    w.extend_from_slice(&(nodes.len() as u32).to_le_bytes());
    for n in nodes {
        w.extend_from_slice(&n.id.to_le_bytes());
        w.extend_from_slice(&n.shards.to_le_bytes());
        w.extend_from_slice(&[n.state.code(), 0, 0, 0]);
        put_bytes(w, n.peer_addr.as_bytes());
        put_bytes(w, n.client_addr.as_bytes());
    }
}

fn put_ranges<'a>(w: &mut Vec<u8>, ranges: impl Iterator<Item = &'a RangeDesc>) {
    let at = w.len();
    w.extend_from_slice(&0u32.to_le_bytes());
    let mut n = 0u32;
    for d in ranges {
        w.extend_from_slice(&(d.encoded_len() as u32).to_le_bytes());
        d.encode(w);
        n += 1;
    }
    w[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Reads the parts of a command or snapshot, each read bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MetaCodecError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(MetaCodecError::Truncated {
                what: self.what,
                at: self.at,
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, MetaCodecError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, MetaCodecError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// `n` bytes of padding, which must be zero (a newer version may give
    /// them a meaning).
    fn pad(&mut self, n: usize) -> Result<(), MetaCodecError> {
        let at = self.at;
        if self.take(n)?.iter().any(|&b| b != 0) {
            return Err(MetaCodecError::Invalid {
                what: self.what,
                why: format!("nonzero padding at byte {at}"),
            });
        }
        Ok(())
    }

    /// A count, refused above `max` before anything is allocated for it.
    fn count(
        &mut self,
        field: &'static str,
        max: usize,
        limit: &'static str,
    ) -> Result<usize, MetaCodecError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(MetaCodecError::TooLarge {
                what: self.what,
                field,
                len,
                max,
                limit,
            });
        }
        Ok(len)
    }

    fn addr(&mut self) -> Result<String, MetaCodecError> {
        let len = self.count("address", META_ADDR_BYTES_MAX, "META_ADDR_BYTES_MAX")?;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| MetaCodecError::Utf8 { what: self.what })
    }

    fn settings(&mut self) -> Result<ClusterSettings, MetaCodecError> {
        Ok(ClusterSettings {
            replication_factor: self.u32()?,
            shards: self.u32()?,
            key_bytes_max: self.u32()?,
            value_bytes_max: self.u32()?,
        })
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>, MetaCodecError> {
        let n = self.count("nodes", META_NODES_MAX, "META_NODES_MAX")?;
        // Each record is at least 24 bytes: bounds the allocation by the
        // bytes there are.
        let mut out = Vec::with_capacity(n.min((self.b.len() - self.at) / 24));
        for _ in 0..n {
            let id = self.u64()?;
            let shards = self.u32()?;
            let code = self.take(1)?[0];
            self.pad(3)?;
            let state = NodeState::from_code(code).ok_or(MetaCodecError::Code {
                what: self.what,
                field: "node state",
                code,
            })?;
            out.push(NodeRecord {
                id,
                shards,
                state,
                peer_addr: self.addr()?,
                client_addr: self.addr()?,
            });
        }
        Ok(out)
    }

    fn ranges(
        &mut self,
        max: usize,
        limit: &'static str,
    ) -> Result<Vec<RangeDesc>, MetaCodecError> {
        let n = self.count("ranges", max, limit)?;
        // Each descriptor is at least its head: bounds the allocation by
        // the bytes there are.
        let mut out = Vec::with_capacity(n.min((self.b.len() - self.at) / 40));
        for _ in 0..n {
            let len = self.count(
                "descriptor bytes",
                super::RANGE_DESC_BYTES_MAX,
                "RANGE_DESC_BYTES_MAX",
            )?;
            let d = RangeDesc::decode(self.take(len)?).map_err(|err| MetaCodecError::Range {
                what: self.what,
                err,
            })?;
            out.push(d);
        }
        Ok(out)
    }

    fn end(&self) -> Result<(), MetaCodecError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            extra => Err(MetaCodecError::Trailing {
                what: self.what,
                extra,
            }),
        }
    }
}
