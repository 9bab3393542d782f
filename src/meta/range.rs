//! Range descriptors: which keys a range holds, where its replicas live,
//! and the epoch that orders two descriptors of the same keys.
//!
//! A **range** is one Raft group holding the keys `[start, end)` (raw
//! bytes, compared lexicographically; an empty `end` means no upper bound,
//! as TiKV's region `end_key`). Its **epoch** is two counters (TiKV's
//! `RegionEpoch`): `version` moves on each split and merge (when the keys
//! change), `conf_ver` on each membership change (when the replicas
//! change). Both only grow, in the range's own log, which stays the
//! authority for its replicas: whoever holds two descriptors keeps the one
//! with the higher epoch (see [`Epoch::is_stale_against`] and
//! `route::RangeMap::insert`).
//!
//! The descriptor has one byte codec, used where it is stored (the replica
//! catalog's opaque descriptor, a snapshot) and where it is sent (inside
//! frames that are checksummed and validated already, so the codec carries
//! a format byte and no checksum of its own). Decoding validates as much
//! as encoding asserts:
//!
//! ```text
//! descriptor (little endian)
//!   0  format     u8 = 1
//!   1  pad        [3] = 0
//!   4  replicas   u32        ≤ RANGE_REPLICAS_MAX
//!   8  start_len  u32        ≤ RANGE_BOUNDARY_BYTES_MAX
//!  12  end_len    u32        ≤ RANGE_BOUNDARY_BYTES_MAX; 0: no upper bound
//!  16  id         u64
//!  24  version    u64
//!  32  conf_ver   u64
//!  40  start      [start_len]
//!      end        [end_len]
//!      replicas × { replica u64 | node u64 | shard u32 | role u8 | pad [3] = 0 }
//! ```

use bytes::Bytes;

use crate::group::GroupId;
use crate::raft::{NodeId, ReplicaId};
use crate::storage::catalog::CATALOG_DESCRIPTOR_BYTES_MAX;

/// A range's id: the id of the Raft group that holds it. Allocated once,
/// never reused.
pub type RangeId = GroupId;

/// Bytes of a range boundary (`start` or `end`). Split keys are chosen as
/// the shortest key that separates two neighbours (LevelDB's
/// `FindShortestSeparator`), so boundaries are short in practice; the
/// bound keeps a descriptor inside one catalog entry
/// (`storage::CATALOG_DESCRIPTOR_BYTES_MAX`) whatever `key-bytes-max` is.
/// A split whose key is longer is refused.
pub const RANGE_BOUNDARY_BYTES_MAX: usize = 4096;

/// Replicas one descriptor may list: RF up to 7, doubled for the moment
/// of a joint configuration, plus learners being seeded.
pub const RANGE_REPLICAS_MAX: usize = 32;

const FORMAT: u8 = 1;
const HEAD_BYTES: usize = 40;
const REPLICA_BYTES: usize = 24;

/// The longest encoded descriptor.
pub const RANGE_DESC_BYTES_MAX: usize =
    HEAD_BYTES + 2 * RANGE_BOUNDARY_BYTES_MAX + RANGE_REPLICAS_MAX * REPLICA_BYTES;
const _: () = assert!(RANGE_DESC_BYTES_MAX <= CATALOG_DESCRIPTOR_BYTES_MAX);

/// The two counters that order descriptors of one range (TiKV's
/// `RegionEpoch`). Along the history of any one key, the version of the
/// range holding it never decreases and grows at each change of that
/// range's keys (a split gives both sides the parent's version + 1, a
/// merge gives the survivor the larger version + 1): that is what lets a
/// cache compare descriptors of different ranges by version alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Epoch {
    /// Moves on each split and merge.
    pub version: u64,
    /// Moves on each membership change.
    pub conf_ver: u64,
}

impl Epoch {
    /// Whether a descriptor at `self` is older than one of the same range
    /// at `other` (either counter behind: TiKV's `is_epoch_stale`).
    pub fn is_stale_against(&self, other: &Epoch) -> bool {
        self.version < other.version || self.conf_ver < other.conf_ver
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.c{}", self.version, self.conf_ver)
    }
}

/// What a replica is in its range's membership (TiKV's `PeerRole`; the two
/// middle roles exist only inside a joint configuration, Raft thesis §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaRole {
    /// Votes in the configuration.
    Voter,
    /// Receives the log, never votes (being seeded or caught up).
    Learner,
    /// Votes in the incoming configuration of a joint one only.
    IncomingVoter,
    /// Votes in the outgoing configuration of a joint one only; a learner
    /// once the joint configuration is left.
    DemotingVoter,
}

impl ReplicaRole {
    fn code(self) -> u8 {
        match self {
            ReplicaRole::Voter => 1,
            ReplicaRole::Learner => 2,
            ReplicaRole::IncomingVoter => 3,
            ReplicaRole::DemotingVoter => 4,
        }
    }

    fn from_code(c: u8) -> Option<ReplicaRole> {
        Some(match c {
            1 => ReplicaRole::Voter,
            2 => ReplicaRole::Learner,
            3 => ReplicaRole::IncomingVoter,
            4 => ReplicaRole::DemotingVoter,
            _ => return None,
        })
    }

    /// Whether the replica votes in some configuration.
    pub fn votes(self) -> bool {
        self != ReplicaRole::Learner
    }

    /// Its name in status answers (`wire::ReplicaStatus::role`) and in
    /// `ctl`'s output: "voter", "learner", "incoming" or "demoting".
    pub fn name(self) -> &'static str {
        match self {
            ReplicaRole::Voter => "voter",
            ReplicaRole::Learner => "learner",
            ReplicaRole::IncomingVoter => "incoming",
            ReplicaRole::DemotingVoter => "demoting",
        }
    }

    /// The role named `name` ([`ReplicaRole::name`]), if any.
    pub fn from_name(name: &str) -> Option<ReplicaRole> {
        [
            ReplicaRole::Voter,
            ReplicaRole::Learner,
            ReplicaRole::IncomingVoter,
            ReplicaRole::DemotingVoter,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }
}

/// One replica of a range: where it lives and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RangeReplica {
    /// Never 0, never reused (0 means "none" in the Raft core).
    pub replica: ReplicaId,
    pub node: NodeId,
    /// The shard of `node` that hosts it.
    pub shard: u32,
    pub role: ReplicaRole,
}

/// A range: its keys, its epoch and its replicas.
///
/// Invariants (checked by [`RangeDesc::validate`], before every encode in
/// debug builds and after every decode): `start < end` unless `end` is
/// empty; boundaries at most [`RANGE_BOUNDARY_BYTES_MAX`]; at most
/// [`RANGE_REPLICAS_MAX`] replicas, at least one of them voting; replica
/// ids non-zero and distinct; at most one replica per node (two replicas
/// of a range on one node would let one machine's loss cost two copies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RangeDesc {
    pub id: RangeId,
    /// First key of the range (inclusive; empty: the smallest key).
    pub start: Bytes,
    /// First key after the range (exclusive; empty: no upper bound).
    pub end: Bytes,
    pub epoch: Epoch,
    /// In the order the range's log made them members.
    pub replicas: Vec<RangeReplica>,
}

/// Why a descriptor is refused, at decode or at validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("range descriptor: {len} bytes, needs {need} (truncated)")]
    Truncated { len: usize, need: usize },
    #[error(
        "range descriptor: {extra} bytes after its end (corrupt, or written by a newer version)"
    )]
    Trailing { extra: usize },
    #[error("range descriptor: format {found}, this build reads format {FORMAT} (written by a newer version?)")]
    Format { found: u8 },
    #[error("range {id}: replica {replica} has role code {code}, not one of 1-4")]
    Role {
        id: RangeId,
        replica: ReplicaId,
        code: u8,
    },
    #[error("range {id}: start {start:?} does not sort before end {end:?}")]
    Bounds {
        id: RangeId,
        start: Bytes,
        end: Bytes,
    },
    #[error("range {id}: {what} is {len}, above {max} (meta::{limit})")]
    TooLarge {
        id: RangeId,
        what: &'static str,
        len: usize,
        max: usize,
        limit: &'static str,
    },
    #[error("range {id}: replica id 0 (replica ids start at 1)")]
    ZeroReplica { id: RangeId },
    #[error("range {id}: replica {replica} is listed twice")]
    DuplicateReplica { id: RangeId, replica: ReplicaId },
    #[error("range {id}: node {node} holds two replicas ({a} and {b}); replicas of a range go on distinct nodes")]
    DuplicateNode {
        id: RangeId,
        node: NodeId,
        a: ReplicaId,
        b: ReplicaId,
    },
    #[error("range {id}: no replica votes")]
    NoVoter { id: RangeId },
    #[error("range {id}: split key {key:?} is not strictly inside [{:?}, {:?}) (empty end: no upper bound)", bounds.0, bounds.1)]
    SplitKey {
        id: RangeId,
        key: Bytes,
        /// The range's (start, end), boxed to keep the error small.
        bounds: Box<(Bytes, Bytes)>,
    },
    #[error("range {id}: cannot split into range {right} (0, or the range itself)")]
    SplitId { id: RangeId, right: RangeId },
}

impl RangeDesc {
    /// A founding range's descriptor: keys `[start, end)`, epoch 1.0, a
    /// voter on `shard` of each founding node of `nodes` (a founding
    /// replica's id is its node's id). What a bootstrapped shard creates
    /// an initial range with (`shard::load`), and the simulator its
    /// founding range.
    pub fn founding(id: RangeId, start: Bytes, end: Bytes, nodes: &[NodeId], shard: u32) -> Self {
        RangeDesc {
            id,
            start,
            end,
            epoch: Epoch {
                version: 1,
                conf_ver: 0,
            },
            replicas: nodes
                .iter()
                .map(|&v| RangeReplica {
                    replica: v,
                    node: v,
                    shard,
                    role: ReplicaRole::Voter,
                })
                .collect(),
        }
    }

    /// Whether `key` is in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key_in(&self.start, &self.end, key)
    }

    /// Whether the range shares a key with `[start, end)` (empty `end`: no
    /// upper bound).
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        (end.is_empty() || &self.start[..] < end) && (self.end.is_empty() || start < &self.end[..])
    }

    /// The replica on `node`, if any.
    pub fn replica_on(&self, node: NodeId) -> Option<&RangeReplica> {
        self.replicas.iter().find(|r| r.node == node)
    }

    /// The replica with id `replica`, if any.
    pub fn replica(&self, replica: ReplicaId) -> Option<&RangeReplica> {
        self.replicas.iter().find(|r| r.replica == replica)
    }

    /// Replicas that vote in some configuration.
    pub fn voters(&self) -> impl Iterator<Item = &RangeReplica> {
        self.replicas.iter().filter(|r| r.role.votes())
    }

    /// The two descriptors a split at `key` makes (issue #18; TiKV's
    /// epoch rule): this range keeps `[start, key)`, range `right` takes
    /// `[key, end)`, both at this version + 1 and this `conf_ver`, with the
    /// same replicas (replica ids are a group's own, so the new group
    /// starts with the parent's: `raft::ConfState::next_replica_id` goes on
    /// from there in each).
    ///
    /// # Errors
    /// `key` not strictly inside (`start < key`, and `key < end` unless
    /// `end` is empty): [`RangeError::SplitKey`]; `right` 0 or this id:
    /// [`RangeError::SplitId`]; `key` longer than
    /// [`RANGE_BOUNDARY_BYTES_MAX`]: [`RangeError::TooLarge`].
    pub fn split(&self, key: &Bytes, right: RangeId) -> Result<(RangeDesc, RangeDesc), RangeError> {
        if key[..] <= self.start[..] || !self.contains(key) {
            return Err(RangeError::SplitKey {
                id: self.id,
                key: key.clone(),
                bounds: Box::new((self.start.clone(), self.end.clone())),
            });
        }
        if right == 0 || right == self.id {
            return Err(RangeError::SplitId { id: self.id, right });
        }
        let epoch = Epoch {
            version: self.epoch.version + 1,
            conf_ver: self.epoch.conf_ver,
        };
        let left = RangeDesc {
            end: key.clone(),
            epoch,
            ..self.clone()
        };
        let right = RangeDesc {
            id: right,
            start: key.clone(),
            epoch,
            ..self.clone()
        };
        left.validate()?;
        right.validate()?;
        Ok((left, right))
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<(), RangeError> {
        let id = self.id;
        for (what, b) in [("start", &self.start), ("end", &self.end)] {
            if b.len() > RANGE_BOUNDARY_BYTES_MAX {
                return Err(RangeError::TooLarge {
                    id,
                    what,
                    len: b.len(),
                    max: RANGE_BOUNDARY_BYTES_MAX,
                    limit: "RANGE_BOUNDARY_BYTES_MAX",
                });
            }
        }
        if !self.end.is_empty() && self.start >= self.end {
            return Err(RangeError::Bounds {
                id,
                start: self.start.clone(),
                end: self.end.clone(),
            });
        }
        if self.replicas.len() > RANGE_REPLICAS_MAX {
            return Err(RangeError::TooLarge {
                id,
                what: "replica count",
                len: self.replicas.len(),
                max: RANGE_REPLICAS_MAX,
                limit: "RANGE_REPLICAS_MAX",
            });
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if r.replica == 0 {
                return Err(RangeError::ZeroReplica { id });
            }
            for o in &self.replicas[..i] {
                if o.replica == r.replica {
                    return Err(RangeError::DuplicateReplica {
                        id,
                        replica: r.replica,
                    });
                }
                if o.node == r.node {
                    return Err(RangeError::DuplicateNode {
                        id,
                        node: r.node,
                        a: o.replica,
                        b: r.replica,
                    });
                }
            }
        }
        if self.voters().next().is_none() {
            return Err(RangeError::NoVoter { id });
        }
        Ok(())
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        HEAD_BYTES + self.start.len() + self.end.len() + self.replicas.len() * REPLICA_BYTES
    }

    /// Appends the encoding (the layout at the top of the module) to `out`.
    ///
    /// # Panics
    /// In debug builds, if the descriptor breaks an invariant: a caller
    /// builds descriptors from validated parts.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert_eq!(self.validate(), Ok(()), "encoding an invalid descriptor");
        let at = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&[FORMAT, 0, 0, 0]);
        for n in [self.replicas.len(), self.start.len(), self.end.len()] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        for n in [self.id, self.epoch.version, self.epoch.conf_ver] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.start);
        out.extend_from_slice(&self.end);
        for r in &self.replicas {
            out.extend_from_slice(&r.replica.to_le_bytes());
            out.extend_from_slice(&r.node.to_le_bytes());
            out.extend_from_slice(&r.shard.to_le_bytes());
            out.extend_from_slice(&[r.role.code(), 0, 0, 0]);
        }
        debug_assert_eq!(out.len() - at, self.encoded_len());
    }

    /// The encoding as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        Bytes::from(out)
    }

    /// Reads a descriptor that fills all of `b`, and validates it.
    pub fn decode(b: &[u8]) -> Result<RangeDesc, RangeError> {
        if b.len() < HEAD_BYTES {
            return Err(RangeError::Truncated {
                len: b.len(),
                need: HEAD_BYTES,
            });
        }
        if b[0] != FORMAT {
            return Err(RangeError::Format { found: b[0] });
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let (replicas, start_len, end_len) = (u32_at(4), u32_at(8), u32_at(12));
        let id = u64_at(16);
        // Bound the counts before any arithmetic on them or allocation.
        for (what, len, max, limit) in [
            (
                "replica count",
                replicas,
                RANGE_REPLICAS_MAX,
                "RANGE_REPLICAS_MAX",
            ),
            (
                "start",
                start_len,
                RANGE_BOUNDARY_BYTES_MAX,
                "RANGE_BOUNDARY_BYTES_MAX",
            ),
            (
                "end",
                end_len,
                RANGE_BOUNDARY_BYTES_MAX,
                "RANGE_BOUNDARY_BYTES_MAX",
            ),
        ] {
            if len > max {
                return Err(RangeError::TooLarge {
                    id,
                    what,
                    len,
                    max,
                    limit,
                });
            }
        }
        let need = HEAD_BYTES + start_len + end_len + replicas * REPLICA_BYTES;
        if b.len() < need {
            return Err(RangeError::Truncated { len: b.len(), need });
        }
        if b.len() > need {
            return Err(RangeError::Trailing {
                extra: b.len() - need,
            });
        }
        let mut at = HEAD_BYTES;
        let start = Bytes::copy_from_slice(&b[at..at + start_len]);
        at += start_len;
        let end = Bytes::copy_from_slice(&b[at..at + end_len]);
        at += end_len;
        let mut list = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let replica = u64_at(at);
            let code = b[at + 20];
            let role =
                ReplicaRole::from_code(code).ok_or(RangeError::Role { id, replica, code })?;
            list.push(RangeReplica {
                replica,
                node: u64_at(at + 8),
                shard: u32_at(at + 16) as u32,
                role,
            });
            at += REPLICA_BYTES;
        }
        let desc = RangeDesc {
            id,
            start,
            end,
            epoch: Epoch {
                version: u64_at(24),
                conf_ver: u64_at(32),
            },
            replicas: list,
        };
        desc.validate()?;
        Ok(desc)
    }
}

impl std::fmt::Display for RangeDesc {
    /// `r7 ["a", "m") v2.c5 [1@n1/s0, 4@n3/s1 (learner)]`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{} [{}, ", self.id, show_key(&self.start))?;
        if self.end.is_empty() {
            write!(f, "+inf)")?;
        } else {
            write!(f, "{})", show_key(&self.end))?;
        }
        write!(f, " {} [", self.epoch)?;
        for (i, r) in self.replicas.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}@n{}/s{}", r.replica, r.node, r.shard)?;
            match r.role {
                ReplicaRole::Voter => {}
                ReplicaRole::Learner => write!(f, " (learner)")?,
                ReplicaRole::IncomingVoter => write!(f, " (incoming)")?,
                ReplicaRole::DemotingVoter => write!(f, " (demoting)")?,
            }
        }
        write!(f, "]")
    }
}

/// Whether `key` is in `[start, end)` (empty `end`: no upper bound): the
/// one reading of range bounds, for descriptors and state machines alike.
pub fn key_in(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// A key for people: quoted text when it is printable ASCII, else hex.
pub fn show_key(k: &[u8]) -> String {
    if k.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(k))
    } else {
        let mut s = String::with_capacity(2 + 2 * k.len());
        s.push_str("0x");
        for b in k {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// The shortest key `s` with `left < s <= right`: a split key that puts
/// `left` and every key below it on the left side, and `right` and every
/// key above it on the right (LevelDB's `FindShortestSeparator`, with the
/// bound on the right). It is `right`'s prefix one byte longer than the
/// prefix `left` and `right` share.
///
/// # Panics
/// If `left >= right`: the caller takes two keys of a range in order.
pub fn split_key_between(left: &[u8], right: &[u8]) -> Bytes {
    assert!(left < right, "split_key_between: keys out of order");
    let shared = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    Bytes::copy_from_slice(&right[..shared + 1])
}
