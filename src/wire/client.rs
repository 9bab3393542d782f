//! The client protocol: requests of the key-value service and their
//! responses, in frames of kind [`KIND_REQUEST`] and [`KIND_RESPONSE`].
//!
//! ```text
//! payload = rkyv archive of Request (or Response)
//! ```
//!
//! A connection carries many requests in flight (pipelining): each request
//! has an `id` chosen by the client, echoed by its response; responses may
//! come back in any order. Received archives are validated like every other
//! network input; keys and values of a decoded request are `Bytes` slices
//! of the receive buffer, so a put's value goes into the proposal uncopied.

use bytes::Bytes;
use rkyv::rancor::Error as RkyvError;

use super::frame::{begin_frame, finish_frame};
use super::message::{aligned, serialize_into, MessageError};

/// Frame kind of a client request.
pub const KIND_REQUEST: u8 = 4;
/// Frame kind of a response to a client.
pub const KIND_RESPONSE: u8 = 5;

/// How a read is served.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum ReadMode {
    /// Linearizable through ReadIndex (a heartbeat round confirms the
    /// leader): the default.
    Linearizable,
    /// Linearizable while the leader's lease holds (no round trip; relies
    /// on bounded clock drift), else like `Linearizable`.
    Lease,
    /// Served by any replica from what it has applied: may be stale.
    Stale,
}

/// A request of the key-value service. `client` and `seq` form the
/// exactly-once session of a write: a retried write carries the same pair
/// and is applied once. `ack`: every write of this client with a lower
/// `seq` has had its answer (the node may forget their outcomes). Reads and
/// admin requests ignore the three.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    pub group: u64,
    pub client: u64,
    pub seq: u64,
    pub ack: u64,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Op {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Get {
        key: Bytes,
        mode: ReadMode,
    },
    Delete {
        key: Bytes,
    },
    /// Sets `key` to `value` (`None`: deletes it) if its current value is
    /// `expect` (`None`: absent).
    Cas {
        key: Bytes,
        expect: Option<Bytes>,
        value: Option<Bytes>,
    },
    /// Adds `by` to the integer `key` holds, atomically (one log entry:
    /// `kv::WriteOp::Incr`); answered `Reply::Cas`: swapped with the value
    /// now, or not swapped, the value unchanged (with it: the sum would
    /// overflow; without: it is not a decimal `i64`).
    Incr {
        key: Bytes,
        by: i64,
    },
    /// Appends `value` to what `key` holds, atomically
    /// (`kv::WriteOp::Append`); answered `Reply::Cas`: swapped with the
    /// length now (decimal), or not swapped (the result would pass the
    /// value limit).
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// Pairs with `start <= key < end` (`end` empty: no upper bound) that
    /// the group holds, at most `limit` of them (the group clamps the
    /// bounds to its own keys and says where they end).
    Scan {
        start: Bytes,
        end: Bytes,
        limit: u32,
        mode: ReadMode,
        /// Keys only: every value in the answer is empty (`DBSIZE`,
        /// `KEYS` and `SCAN` of the RESP port, which need no values).
        keys_only: bool,
    },
    /// The cluster map: groups, shards, nodes and current leaders.
    ClusterMap,
    /// Per-group status of the shard that receives it: its ranges, or,
    /// sent to `route::META_GROUP`, the meta group's replica alone.
    Status,
    /// The addressed range's status as its leader has it (`NotLeader`
    /// from any other replica): one `GroupStatus`, its replicas'
    /// progress included, its `digest` not computed (0). What a move
    /// watches each second while its learner catches up: `Status` hashes
    /// every range of the shard for its digests, and at 1 GiB a shard
    /// (24 ranges) each look held the shard's turn for about 0.6 s
    /// (`ringraft-rebalance`).
    Progress,
    TransferLeader {
        to: u64,
    },
    AddLearner {
        node: u64,
        /// The node's peer address (shard 0); empty: the one the leader's
        /// shard knows (an address book or its `--peers`), refused with
        /// `BadRequest` if it knows none.
        peer_addr: String,
        client_addr: String,
    },
    Promote {
        node: u64,
    },
    /// A move's membership step: `add`'s learner becomes a voter and
    /// `remove`'s voter leaves, in one joint configuration
    /// (`RawNode::replace_voter`; CockroachDB's atomic replication
    /// change): the range never has fewer voters than before, in either
    /// half. Refused `Failed` while the learner has not caught up (ask
    /// again), `BadRequest` if `remove` holds no voter or `add` no
    /// learner. `Done` if already in force (`add` a voter, `remove` gone).
    ReplaceVoter {
        add: u64,
        remove: u64,
    },
    /// Removes `node`'s replica from the group. Refused with `BadRequest`
    /// if the group would be left with fewer voters than the cluster's
    /// replication factor, unless `below_replication_factor` (an operator
    /// shrinking a range on purpose: a dead node and no other to move
    /// to); a move adds before it removes and never needs it.
    RemoveNode {
        node: u64,
        below_replication_factor: bool,
    },
    Snapshot,
    /// Fault injection (nodes started with `--fault-injection` only):
    /// this shard drops all Raft traffic to and from `peers` (empty: heal).
    Isolate {
        peers: Vec<u64>,
    },
    /// Descriptors of the ranges this shard hosts that hold keys at or
    /// above `from`, in key order, at most `limit` (and at most
    /// `RANGES_REPLY_MAX`): answered `Reply::Ranges`. A client pages
    /// through them from the empty key, going on from the end of the last
    /// one, and asks again from a key it finds no range for.
    Ranges {
        from: Bytes,
        limit: u32,
    },
    /// A command of the meta group (`meta::MetaCmd`'s encoding), on its
    /// leader (sent to group `route::META_GROUP`); answered `Reply::Meta`
    /// once applied. Outside any session: every meta command may be
    /// applied twice (a retry allocates ids twice, never the same ids).
    Meta {
        cmd: Bytes,
    },
    /// The meta group's state, from its leader's applied state (it may
    /// miss the last writes of a leader that was just replaced):
    /// `Reply::Meta` with `meta::MetaState::snapshot` bytes.
    MetaState,
    /// The meta leader's view of the nodes' liveness (sent to
    /// `route::META_GROUP`): `Reply::Liveness` from its balancer's last
    /// round; `NotLeader` elsewhere; `BadRequest` if the balancer is off
    /// there (`--balancer false`: nothing pings the nodes); `Failed` before
    /// its first round (ask again in a few seconds).
    Liveness,
    /// Answered `Done` by any node, at once: the meta leader's heartbeat
    /// of a node (it answers, so it is up).
    Ping,
    /// The group's range descriptor as its leader has it (`Reply::Ranges`
    /// with one descriptor); `NotLeader` from any other replica. Where
    /// `Ranges` is answered by any node from its own replica (a follower
    /// may lag, or not know yet that it was removed), this one proves the
    /// current membership, which a move needs.
    Descriptor,
    /// Splits the addressed range at `key` (issue #18): on its leader, a
    /// split entry goes through the range's log; when it applies, every
    /// replica keeps `[start, key)` and creates range `right` with
    /// `[key, end)`, the same members and client sessions, on the same
    /// (node, shard). `right` is a range id the meta group allocated
    /// (`meta::MetaCmd::AllocIds`) on the same shard as the addressed
    /// range (`route::shard_of`). Answered `Done` once applied here (the
    /// new range is being created: it serves within a round trip);
    /// `NotLeader` from a follower; `BadRequest` if `key` is not strictly
    /// inside the range, `right` is 0, in use or on another shard, or the
    /// range is the meta group.
    Split {
        key: Bytes,
        right: u64,
    },
}

impl Op {
    /// The key a data request reads or writes (a scan: its first key);
    /// `None` for every other request. What a range's load is counted by
    /// (`shard::LoadSampler`).
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Op::Put { key, .. }
            | Op::Get { key, .. }
            | Op::Delete { key }
            | Op::Cas { key, .. }
            | Op::Incr { key, .. }
            | Op::Append { key, .. }
            | Op::Scan { start: key, .. } => Some(key),
            // Listed, not `_`: a new data request must say here whether
            // it is counted.
            Op::ClusterMap
            | Op::Status
            | Op::Progress
            | Op::TransferLeader { .. }
            | Op::AddLearner { .. }
            | Op::Promote { .. }
            | Op::ReplaceVoter { .. }
            | Op::RemoveNode { .. }
            | Op::Snapshot
            | Op::Isolate { .. }
            | Op::Ranges { .. }
            | Op::Meta { .. }
            | Op::MetaState
            | Op::Liveness
            | Op::Ping
            | Op::Descriptor
            | Op::Split { .. } => None,
        }
    }
}

/// Most descriptors one `Op::Ranges` answer carries (about 120 bytes each
/// for 3 replicas and short keys).
pub const RANGES_REPLY_MAX: u32 = 1024;

/// A key and its value, as returned by a scan.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
}

/// A node of the cluster, as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    /// Client address of shard 0; shard `s` listens on its port + `s`.
    pub client_addr: String,
    /// Peer address of shard 0 (its `--listen-peers`), where the answering
    /// node knows it (its own; others' from its ranges' address books);
    /// empty: not known.
    pub peer_addr: String,
}

/// What a client needs to route (with the ranges, `Op::Ranges`): group
/// `g` lives on shard `g % shards` of every node; `leaders` holds
/// (group, leader node) for the answering shard's groups whose leader it
/// knows, ranges made by splits included (protocol 17: before, a vector
/// indexed by group covered only the bootstrap's `groups`, so clients
/// and the balancer never learned a split range's leader).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ClusterMap {
    pub groups: u64,
    pub shards: u32,
    pub nodes: Vec<NodeInfo>,
    pub leaders: Vec<(u64, u64)>,
    /// The meta group's leader as this node knows it (0: not known, or no
    /// replica of the meta group here).
    pub meta_leader: u64,
    /// Replicas per range the cluster was bootstrapped with
    /// (`--replication-factor`); 0: this node does not know it (it
    /// joined).
    pub replication_factor: u32,
}

/// How the meta leader's balancer sees a node (`meta::planner::Health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum LivenessState {
    /// Answered the last round's ping.
    Live,
    /// Missed it: takes no new replica, keeps the ones it has.
    Suspect,
    /// Silent for longer than `dead-node-timeout`: its replicas move.
    Dead,
}

impl std::fmt::Display for LivenessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LivenessState::Live => "live",
            LivenessState::Suspect => "suspect",
            LivenessState::Dead => "dead",
        })
    }
}

/// One node in [`Reply::Liveness`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeLiveness {
    pub node: u64,
    /// As of the balancer's last round.
    pub state: LivenessState,
    /// How long ago its last heartbeat (ping answer) arrived, ms, as of
    /// the answer; `u64::MAX` if never since this meta leader took over
    /// (it counts such a node as heard from then: PD's grace).
    pub silent_ms: u64,
}

/// The answer to `Op::Liveness`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LivenessView {
    /// The meta leader's `--dead-node-timeout-ms`.
    pub dead_node_timeout_ms: u64,
    /// How long ago the balancer's last round started, ms.
    pub round_age_ms: u64,
    pub nodes: Vec<NodeLiveness>,
}

/// The state of one group on the node that answers.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GroupStatus {
    pub group: u64,
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    /// For a leader: how far each replica is, itself included.
    pub replicas: Vec<ReplicaStatus>,
    /// Digest of the group's key-value state as applied here (replicas at
    /// the same applied index must agree); 0 in an answer to
    /// `Op::Progress`, which does not compute it.
    pub digest: u64,
    /// The last index of this replica's log.
    pub last_index: u64,
    /// Quiesced: the group is idle and its replica here does not tick
    /// (issue #16).
    pub quiesced: bool,
    /// Linearizable reads waiting here (for a read index or for the
    /// apply to reach it).
    pub reads_waiting: u64,
}

/// A replica as its leader sees it (`GroupStatus::replicas`): the
/// leader's Raft progress for it, as in etcd/raft's `Progress`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReplicaStatus {
    /// The node the member is placed on.
    pub node: u64,
    /// The highest index known replicated there (the leader's own: its
    /// durable index).
    pub match_index: u64,
    /// How the leader sends to it: "leader" (itself), "replicate"
    /// (pipelined appends), "probe" (one append at a time until one
    /// matches), "snapshot" (a snapshot streams to it), "unknown" (a
    /// member the leader keeps no progress for).
    pub state: String,
    /// Reported unreachable by the transport and not heard from since.
    pub unreachable: bool,
    /// In "snapshot" state: the index of the snapshot streaming to it and
    /// the bytes of it the member acknowledged holding (0, 0 otherwise).
    /// What a move watches while its learner is seeded
    /// (`client::MOVE_CATCH_UP_WAIT_MS`).
    pub snapshot_index: u64,
    pub snapshot_acked_bytes: u64,
    /// The member's replica id (a learner removed and added again is a
    /// new one, with a new id).
    pub replica: u64,
    /// Its role in the membership in force: "voter", "learner",
    /// "incoming" or "demoting" (`meta::ReplicaRole::name`). How the
    /// balancer finds a learner of the meta group that no move promotes.
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Reply {
    /// A put, delete or admin request took effect.
    Done,
    Value(Option<Bytes>),
    Cas {
        swapped: bool,
        current: Option<Bytes>,
    },
    Scan {
        pairs: Vec<KeyValue>,
        /// More pairs were in range than `limit`.
        more: bool,
        /// The end of the group's keys (empty: no upper bound): a scan
        /// across groups goes on from here.
        range_end: Bytes,
    },
    Map(ClusterMap),
    Status(Vec<GroupStatus>),
    /// Range descriptors (`meta::RangeDesc`'s encoding), in key order.
    Ranges(Vec<Bytes>),
    /// The meta group's answer: to `Op::Meta`, `ok` with a
    /// `meta::MetaReply`'s encoding or not with the refusal's text; to
    /// `Op::MetaState`, the state as `meta::MetaState::snapshot` bytes.
    Meta {
        ok: bool,
        body: Bytes,
    },
    Liveness(LivenessView),
}

/// Errors a client can act on.
#[derive(
    Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, thiserror::Error,
)]
pub enum ClientError {
    /// Retry at `leader` (0: not known yet; retry after a pause).
    #[error("not the leader of the group (leader hint: node {leader})")]
    NotLeader { leader: u64 },
    /// The outcome is unknown: the write may or may not have been applied.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    #[error("value of {len} bytes exceeds value_bytes_max = {max}")]
    ValueTooLarge { len: u64, max: u64 },
    #[error("key of {len} bytes exceeds key_bytes_max = {max}")]
    KeyTooLarge { len: u64, max: u64 },
    /// Backpressure: too much in flight; retry later.
    #[error("busy: too many requests in flight")]
    Busy,
    #[error("disk full: writes are refused until space returns")]
    DiskFull,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The request reached a shard that does not own its group.
    #[error("group {group} is not on this shard (it is on shard {shard})")]
    WrongShard { group: u64, shard: u32 },
    #[error("no group {group} (the cluster has {groups})")]
    UnknownGroup { group: u64, groups: u64 },
    /// The session's state was dropped (expired): its outcome cannot be
    /// deduplicated any more.
    #[error("client session expired")]
    SessionExpired,
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    #[error("failed: {reason}")]
    Failed { reason: String },
    /// This node has no replica of `group` (it was removed from here, or
    /// was never placed here): ask another node. Like TiKV's
    /// `RegionNotFound`, it says nothing about the request's outcome
    /// elsewhere, so a client retries the same session sequence on another
    /// node. (Last: a new variant goes at the end, so older peers decode
    /// the others unchanged.)
    #[error("group {group} has no replica on this node (removed from here, or not placed here): ask another node")]
    NotHosted { group: u64 },
    /// The key is not in the keys `[start, end)` of the group the request
    /// named (empty `end`: no upper bound): the client's range map is out
    /// of date. Refused before anything was applied; refresh the map and
    /// send it to the group that holds the key (CockroachDB's
    /// `RangeKeyMismatchError`, TiKV's `KeyNotInRegion`). `version` is the
    /// range's version (`meta::Epoch::version`) at those bounds: a client
    /// whose descriptor of the group is older narrows it to them, and so
    /// refuses a report of the old bounds from a replica that has not
    /// applied the split yet.
    #[error("key {} is not in the group's keys [{}, {}) (version {}): refresh the range map", crate::meta::show_key(.key), crate::meta::show_key(.start), if .end.is_empty() { "+inf".to_string() } else { crate::meta::show_key(.end) }, .version)]
    KeyNotInRange {
        key: Bytes,
        start: Bytes,
        end: Bytes,
        version: u64,
    },
}

impl ClientError {
    /// Whether a write answered so may have been applied (or may still
    /// be): the node gave up waiting, is stopping, or its replica went away
    /// while the write was in the group's log. Every other error is a
    /// refusal: the write was not applied and will not be.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout | ClientError::SessionExpired | ClientError::ShuttingDown
        )
    }
}

/// The answer to request `id`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Response {
    pub id: u64,
    pub result: Result<Reply, ClientError>,
}

/// Appends the frame of `r` to `out` (length a multiple of 16).
pub fn encode_request(out: &mut Vec<u8>, r: &Request) {
    let start = begin_frame(out);
    serialize_into(out, r);
    finish_frame(out, start, KIND_REQUEST);
}

/// Appends the frame of `r` to `out` (length a multiple of 16).
pub fn encode_response(out: &mut Vec<u8>, r: &Response) {
    let start = begin_frame(out);
    serialize_into(out, r);
    finish_frame(out, start, KIND_RESPONSE);
}

fn invalid(e: RkyvError) -> MessageError {
    MessageError::Invalid(e.to_string())
}

/// Validates the payload of a [`KIND_REQUEST`] frame. Keys and values are
/// slices of `payload` (no copy when it is 16-byte aligned).
pub fn decode_request(payload: &Bytes) -> Result<Request, MessageError> {
    let buf = aligned(payload.clone());
    let a = rkyv::access::<ArchivedRequest, RkyvError>(&buf).map_err(invalid)?;
    let share = |s: &rkyv::vec::ArchivedVec<u8>| buf.slice_ref(s.as_slice());
    let share_opt = |s: &rkyv::option::ArchivedOption<rkyv::vec::ArchivedVec<u8>>| {
        s.as_ref().map(|v| buf.slice_ref(v.as_slice()))
    };
    let op = match &a.op {
        ArchivedOp::Put { key, value } => Op::Put {
            key: share(key),
            value: share(value),
        },
        ArchivedOp::Get { key, mode } => Op::Get {
            key: share(key),
            mode: rkyv::deserialize::<ReadMode, RkyvError>(mode).map_err(invalid)?,
        },
        ArchivedOp::Delete { key } => Op::Delete { key: share(key) },
        ArchivedOp::Cas { key, expect, value } => Op::Cas {
            key: share(key),
            expect: share_opt(expect),
            value: share_opt(value),
        },
        ArchivedOp::Scan {
            start,
            end,
            limit,
            mode,
            keys_only,
        } => Op::Scan {
            start: share(start),
            end: share(end),
            limit: limit.to_native(),
            mode: rkyv::deserialize::<ReadMode, RkyvError>(mode).map_err(invalid)?,
            keys_only: *keys_only,
        },
        // Rare requests: plain deserialization.
        other => rkyv::deserialize::<Op, RkyvError>(other).map_err(invalid)?,
    };
    Ok(Request {
        id: a.id.to_native(),
        group: a.group.to_native(),
        client: a.client.to_native(),
        seq: a.seq.to_native(),
        ack: a.ack.to_native(),
        op,
    })
}

/// Validates and decodes the payload of a [`KIND_RESPONSE`] frame.
pub fn decode_response(payload: &Bytes) -> Result<Response, MessageError> {
    let buf = aligned(payload.clone());
    let a = rkyv::access::<ArchivedResponse, RkyvError>(&buf).map_err(invalid)?;
    let result = match &a.result {
        rkyv::result::ArchivedResult::Ok(ArchivedReply::Value(v)) => Ok(Reply::Value(
            v.as_ref().map(|v| buf.slice_ref(v.as_slice())),
        )),
        rkyv::result::ArchivedResult::Ok(ArchivedReply::Done) => Ok(Reply::Done),
        other => {
            rkyv::deserialize::<Result<Reply, ClientError>, RkyvError>(other).map_err(invalid)?
        }
    };
    Ok(Response {
        id: a.id.to_native(),
        result,
    })
}
