//! The replica catalog: which replicas a shard hosts, kept as records in the
//! shard's WAL next to the replicas' logs.
//!
//! Two operations, each one record made durable before anything depends
//! on it:
//! - **create** a replica (group id, replica id, initial voters, an opaque
//!   descriptor that placement fills with a key range). Replay starts the
//!   group's log afresh at a create: records of the group before it belong
//!   to an earlier replica that was destroyed.
//! - **tombstone** it: the destroy. From the record on, the replica is
//!   gone; its WAL records stop counting for the release point and its
//!   snapshot files are removed (again at the next open if a crash came
//!   first). The tombstone stays, so that a replica id at or below it is
//!   never created again on this shard (a stale message or a stale plan
//!   cannot resurrect it); a re-added replica comes with a newer id.
//!
//! A crash between any two steps recovers to one of two states: before the
//! record is durable, nothing happened; after it, everything did (a create
//! with an empty log, or a destroy whose files the next open removes).
//!
//! Like a hard state, a catalog entry must outlive the WAL segment that
//! holds it: the shard writes old entries again (a **restate**, flagged so
//! replay changes no log) before it releases their segments. Replay's
//! result does not depend on the order of the records: a replica is live
//! if some create names it and no tombstone of its group is at or above
//! its replica id.
//!
//! ```text
//! record = kind u8 = 2 | flags u8 (bit 0: restate) | pad u16 | count u32
//!          | { op u8 (1 create, 2 tombstone) | pad [3] | voters u32
//!              | group u64 | replica u64 | descriptor_len u32 | pad u32
//!              | voter u64 * voters | descriptor, zero-padded to 8 }*
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

use super::RecordError;
use crate::group::{GroupId, ReplicaId};

pub(super) const REC_CATALOG: u8 = 2;
const REC_HEAD_BYTES: usize = 8;
const OP_HEAD_BYTES: usize = 32;
const OP_CREATE: u8 = 1;
const OP_TOMBSTONE: u8 = 2;
const _: () = assert!(REC_HEAD_BYTES.is_multiple_of(8) && OP_HEAD_BYTES.is_multiple_of(8));

/// Voters a catalog entry may name. Raft groups run 3 or 5 voters; joint
/// consensus briefly doubles that; 64 leaves room and bounds a record.
pub const CATALOG_VOTERS_MAX: usize = 64;

/// Bytes of a replica's descriptor (a key range and its epoch, from
/// placement). Keys are bounded by `key-bytes-max` (default 4 KiB), and
/// a descriptor holds two of them.
pub const CATALOG_DESCRIPTOR_BYTES_MAX: usize = 16 * 1024;

/// What a create names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDesc {
    pub group: GroupId,
    pub replica: ReplicaId,
    /// The group's voters when this replica was created (replica ids):
    /// either including this replica, or empty for a replica that waits
    /// for its leader's snapshot to learn the membership (a node joining
    /// an existing cluster; TiKV's uninitialized peer).
    pub voters: Vec<ReplicaId>,
    /// Opaque to this layer (placement's key range and epoch).
    pub descriptor: Bytes,
}

/// One catalog operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogOp {
    Create(ReplicaDesc),
    Tombstone { group: GroupId, replica: ReplicaId },
}

impl CatalogOp {
    /// The group the operation concerns.
    pub fn group(&self) -> GroupId {
        match self {
            CatalogOp::Create(d) => d.group,
            CatalogOp::Tombstone { group, .. } => *group,
        }
    }

    fn bytes(&self) -> usize {
        OP_HEAD_BYTES
            + match self {
                CatalogOp::Create(d) => d.voters.len() * 8 + d.descriptor.len().next_multiple_of(8),
                CatalogOp::Tombstone { .. } => 0,
            }
    }
}

/// Why a create or a destroy is refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("group {group} already has replica {replica} on this shard; destroy it first")]
    Exists { group: GroupId, replica: ReplicaId },
    #[error(
        "group {group}: replica {replica} is at or below tombstone {tombstone} on this shard \
         (a destroyed replica never comes back; add it under a new replica id)"
    )]
    Tombstoned {
        group: GroupId,
        replica: ReplicaId,
        tombstone: ReplicaId,
    },
    #[error("group {group} has no replica on this shard")]
    NotHosted { group: GroupId },
    #[error("group {group}: {what} is {len}, above {max} (storage::catalog::{limit})")]
    TooLarge {
        group: GroupId,
        what: &'static str,
        len: usize,
        max: usize,
        limit: &'static str,
    },
    #[error(
        "group {group}: replica {replica} is not among the voters {voters:?} it is created with"
    )]
    NotAVoter {
        group: GroupId,
        replica: ReplicaId,
        voters: Vec<ReplicaId>,
    },
}

/// Bytes of a catalog record holding `ops`.
pub fn catalog_record_bytes(ops: &[CatalogOp]) -> usize {
    REC_HEAD_BYTES + ops.iter().map(CatalogOp::bytes).sum::<usize>()
}

/// Writes a catalog record of `ops` into `out` (exactly
/// [`catalog_record_bytes`] long).
pub fn encode_catalog(out: &mut [u8], restate: bool, ops: &[CatalogOp]) {
    debug_assert_eq!(out.len(), catalog_record_bytes(ops));
    out[0] = REC_CATALOG;
    out[1] = u8::from(restate);
    out[2..4].fill(0);
    out[4..8].copy_from_slice(&(ops.len() as u32).to_le_bytes());
    let mut at = REC_HEAD_BYTES;
    for op in ops {
        let head = &mut out[at..at + OP_HEAD_BYTES];
        head.fill(0);
        let (code, group, replica, voters, desc): (u8, u64, u64, &[u64], &[u8]) = match op {
            CatalogOp::Create(d) => (OP_CREATE, d.group, d.replica, &d.voters, &d.descriptor),
            CatalogOp::Tombstone { group, replica } => (OP_TOMBSTONE, *group, *replica, &[], &[]),
        };
        head[0] = code;
        head[4..8].copy_from_slice(&(voters.len() as u32).to_le_bytes());
        head[8..16].copy_from_slice(&group.to_le_bytes());
        head[16..24].copy_from_slice(&replica.to_le_bytes());
        head[24..28].copy_from_slice(&(desc.len() as u32).to_le_bytes());
        at += OP_HEAD_BYTES;
        for v in voters {
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
            at += 8;
        }
        out[at..at + desc.len()].copy_from_slice(desc);
        let padded = desc.len().next_multiple_of(8);
        out[at + desc.len()..at + padded].fill(0);
        at += padded;
    }
    debug_assert_eq!(at, out.len());
}

/// Decodes a catalog record: (restate, ops). Descriptors are slices of `b`.
pub fn decode_catalog(lsn: u64, b: &Bytes) -> Result<(bool, Vec<CatalogOp>), RecordError> {
    let err = |why| RecordError { lsn, why };
    if b.len() < REC_HEAD_BYTES || b[0] != REC_CATALOG || b[1] > 1 {
        return Err(err("bad catalog header"));
    }
    let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as usize;
    let count = u32at(4);
    let mut at = REC_HEAD_BYTES;
    let mut ops = Vec::with_capacity(count.min(b.len() / OP_HEAD_BYTES));
    for _ in 0..count {
        if b.len() < at + OP_HEAD_BYTES {
            return Err(err("truncated catalog entry"));
        }
        let (code, nvoters) = (b[at], u32at(at + 4));
        let (group, replica, dlen) = (u64at(at + 8), u64at(at + 16), u32at(at + 24));
        if nvoters > CATALOG_VOTERS_MAX || dlen > CATALOG_DESCRIPTOR_BYTES_MAX {
            return Err(err("catalog entry above its limits"));
        }
        at += OP_HEAD_BYTES;
        if b.len() < at + nvoters * 8 + dlen.next_multiple_of(8) {
            return Err(err("truncated catalog entry"));
        }
        let voters = (0..nvoters).map(|i| u64at(at + i * 8)).collect();
        at += nvoters * 8;
        let descriptor = b.slice(at..at + dlen);
        at += dlen.next_multiple_of(8);
        ops.push(match code {
            OP_CREATE => CatalogOp::Create(ReplicaDesc {
                group,
                replica,
                voters,
                descriptor,
            }),
            OP_TOMBSTONE if nvoters == 0 && dlen == 0 => CatalogOp::Tombstone { group, replica },
            _ => return Err(err("bad catalog entry")),
        });
    }
    if at != b.len() {
        return Err(err("trailing bytes"));
    }
    Ok((b[1] == 1, ops))
}

/// What a catalog operation does to the group's replayed log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEffect {
    /// Nothing (a restate, or an operation that changed nothing).
    Keep,
    /// Records of the group so far belong to a replica that is gone.
    Discard,
}

/// The catalog of one shard: live replicas and tombstones, each with the
/// LSN of the newest record that states it (the WAL must keep that record
/// until the entry is restated).
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    live: BTreeMap<GroupId, (ReplicaDesc, u64)>,
    /// Per group: the highest replica id destroyed here, and its LSN.
    tombstones: BTreeMap<GroupId, (ReplicaId, u64)>,
}

impl Catalog {
    /// Refuses a create that the catalog would not take: the group already
    /// has a replica here, the replica id is at or below the group's
    /// tombstone, the entry is above the limits, or the voters are given
    /// and do not include the replica.
    pub fn check_create(&self, d: &ReplicaDesc) -> Result<(), CatalogError> {
        if let Some((cur, _)) = self.live.get(&d.group) {
            return Err(CatalogError::Exists {
                group: d.group,
                replica: cur.replica,
            });
        }
        if let Some(&(tombstone, _)) = self.tombstones.get(&d.group) {
            if d.replica <= tombstone {
                return Err(CatalogError::Tombstoned {
                    group: d.group,
                    replica: d.replica,
                    tombstone,
                });
            }
        }
        let too_large = |what, len, max, limit| CatalogError::TooLarge {
            group: d.group,
            what,
            len,
            max,
            limit,
        };
        if d.voters.len() > CATALOG_VOTERS_MAX {
            let n = d.voters.len();
            return Err(too_large(
                "voters",
                n,
                CATALOG_VOTERS_MAX,
                "CATALOG_VOTERS_MAX",
            ));
        }
        if d.descriptor.len() > CATALOG_DESCRIPTOR_BYTES_MAX {
            let (n, max) = (d.descriptor.len(), CATALOG_DESCRIPTOR_BYTES_MAX);
            return Err(too_large(
                "descriptor bytes",
                n,
                max,
                "CATALOG_DESCRIPTOR_BYTES_MAX",
            ));
        }
        if !d.voters.is_empty() && !d.voters.contains(&d.replica) {
            return Err(CatalogError::NotAVoter {
                group: d.group,
                replica: d.replica,
                voters: d.voters.clone(),
            });
        }
        Ok(())
    }

    /// The tombstone for destroying the live replica of `group`.
    pub fn tombstone_for(&self, group: GroupId) -> Result<CatalogOp, CatalogError> {
        match self.live.get(&group) {
            Some((d, _)) => Ok(CatalogOp::Tombstone {
                group,
                replica: d.replica,
            }),
            None => Err(CatalogError::NotHosted { group }),
        }
    }

    /// Applies an operation durable at `lsn` (in replay, or once written).
    pub fn apply(&mut self, lsn: u64, restate: bool, op: CatalogOp) -> LogEffect {
        let group = op.group();
        match op {
            CatalogOp::Create(d) => {
                let dead = self.tombstones.get(&group).map(|&(t, _)| t);
                let current = self.live.get(&group).map(|(cur, _)| cur.replica);
                // Stale: destroyed here, or a newer replica already lives.
                if dead.is_some_and(|t| d.replica <= t) || current.is_some_and(|c| c > d.replica) {
                    return LogEffect::Keep;
                }
                let fresh = current != Some(d.replica);
                self.live.insert(group, (d, lsn));
                if fresh && !restate {
                    LogEffect::Discard
                } else {
                    LogEffect::Keep
                }
            }
            CatalogOp::Tombstone { replica, .. } => {
                let t = self.tombstones.entry(group).or_insert((replica, lsn));
                if replica >= t.0 {
                    *t = (replica, lsn);
                }
                let kills = self
                    .live
                    .get(&group)
                    .is_some_and(|(cur, _)| cur.replica <= replica);
                if kills {
                    self.live.remove(&group);
                }
                if kills && !restate {
                    LogEffect::Discard
                } else {
                    LogEffect::Keep
                }
            }
        }
    }

    /// The live replicas, by group id.
    pub fn live(&self) -> impl Iterator<Item = &ReplicaDesc> {
        self.live.values().map(|(d, _)| d)
    }

    /// The live replica of `group`, if any.
    pub fn get(&self, group: GroupId) -> Option<&ReplicaDesc> {
        self.live.get(&group).map(|(d, _)| d)
    }

    /// Whether a replica of `group` was destroyed here.
    pub fn is_tombstoned(&self, group: GroupId) -> bool {
        self.tombstones.contains_key(&group)
    }

    /// Groups with a tombstone here: (group, highest destroyed replica id).
    pub fn tombstones(&self) -> impl Iterator<Item = (GroupId, ReplicaId)> + '_ {
        self.tombstones.iter().map(|(&g, &(r, _))| (g, r))
    }

    /// True when the catalog holds nothing (a new store, or one written
    /// before the catalog existed).
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.tombstones.is_empty()
    }

    /// The lowest LSN a catalog entry still needs (`u64::MAX`: none).
    pub fn needed_lsn(&self) -> u64 {
        let live = self.live.values().map(|(_, l)| *l);
        let dead = self.tombstones.values().map(|(_, l)| *l);
        live.chain(dead).min().unwrap_or(u64::MAX)
    }

    /// The entries stated at or below `lsn`, to restate before the WAL
    /// releases their records: tombstones first, then creates.
    pub fn stated_at_or_below(&self, lsn: u64) -> Vec<CatalogOp> {
        let dead = self
            .tombstones
            .iter()
            .filter(|(_, &(_, l))| l <= lsn)
            .map(|(&group, &(replica, _))| CatalogOp::Tombstone { group, replica });
        let live = self
            .live
            .values()
            .filter(|(_, l)| *l <= lsn)
            .map(|(d, _)| CatalogOp::Create(d.clone()));
        dead.chain(live).collect()
    }
}

/// Splits `ops` into consecutive chunks whose records fit in
/// `record_bytes_max` (each chunk holds at least one op).
pub fn chunk_ops(ops: &[CatalogOp], record_bytes_max: usize) -> Vec<&[CatalogOp]> {
    let mut out = Vec::new();
    let mut rest = ops;
    while !rest.is_empty() {
        let mut n = 0;
        let mut bytes = REC_HEAD_BYTES;
        while n < rest.len() && (n == 0 || bytes + rest[n].bytes() <= record_bytes_max) {
            bytes += rest[n].bytes();
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Writes `ops` as catalog records (as many as `record_bytes_max` needs),
/// waits until they are durable, then applies each to `catalog` with the
/// LSN of the record that holds it. Nothing is applied on error, so the
/// catalog never names an operation a crash could still undo.
pub async fn append_catalog<D: ringraft_wal::Disk>(
    wal: &ringraft_wal::Wal<D>,
    catalog: &mut Catalog,
    restate: bool,
    ops: &[CatalogOp],
    record_bytes_max: usize,
) -> Result<(), ringraft_wal::WalError> {
    let mut written = Vec::new();
    for chunk in chunk_ops(ops, record_bytes_max) {
        let mut b = vec![0u8; catalog_record_bytes(chunk)];
        encode_catalog(&mut b, restate, chunk);
        written.push((wal.submit(&b).await?, chunk));
    }
    if let Some(&(last, _)) = written.last() {
        wal.wait_durable(last).await?;
    }
    for (lsn, chunk) in written {
        for op in chunk {
            catalog.apply(lsn, restate, op.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
