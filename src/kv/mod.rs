//! The replicated state machine of one group: an ordered map with
//! exactly-once client sessions, its commands as log entries, and its
//! snapshots.
//!
//! ## Exactly once
//! A write carries (client, seq, ack). The group remembers, per client, the
//! outcome of each write it applied whose seq is at least the client's
//! `ack` (the client has not seen its answer yet), and a `floor`: every seq
//! at or below it is forgotten. Applying a write whose seq is remembered
//! returns the remembered outcome and changes nothing; one at or below the
//! floor is refused with `SessionExpired` (its outcome is unknown). The
//! rules depend only on the log, so every replica decides the same.
//!
//! Sessions expire by this documented rule: a client's session in a group
//! is dropped when `session_idle_entries` entries were applied in that
//! group since its last write there, or, past `sessions_max` sessions, the
//! least recently used goes first. A write retried after its session was
//! dropped is applied again; with the defaults that needs millions of
//! writes to that group between a write and its retry. Sessions are part
//! of snapshots, so they survive compaction and restarts.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::meta::{MetaCmd, MetaState};
use crate::raft::Index;
use crate::wire::{ClientError, Reply};

mod datum;
pub use datum::{Datum, DATUM_INLINE_MAX};

/// Bounds of a group's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvLimits {
    /// Sessions kept per group; past it the least recently used is dropped.
    pub sessions_max: usize,
    /// A session is dropped after this many entries applied in its group
    /// without a write from its client.
    pub session_idle_entries: u64,
    /// Outcomes remembered per session (a client's pipelining window);
    /// past it the oldest is forgotten (its seq goes under the floor).
    pub session_results_max: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            sessions_max: 100_000,
            session_idle_entries: 10_000_000,
            session_results_max: 4096,
        }
    }
}

/// A write, as it is stored in a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub client: u64,
    pub seq: u64,
    pub ack: u64,
    pub op: WriteOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    Cas {
        key: Bytes,
        expect: Option<Bytes>,
        value: Option<Bytes>,
    },
    /// Adds `by` to the integer `key` holds (decimal ASCII, as Redis
    /// stores one; absent: 0), in this one entry (Redis's `INCRBY`).
    /// Answered `Reply::Cas`: swapped with the value now; or not swapped,
    /// the value unchanged, with it if the sum leaves `i64`, without it if
    /// it is not such an integer.
    Incr {
        key: Bytes,
        by: i64,
    },
    /// Appends `value` to what `key` holds (absent: empty), in this one
    /// entry (Redis's `APPEND`), unless the result would pass `max_len`
    /// bytes (the leader's value limit, carried in the entry so every
    /// replica decides alike). Answered `Reply::Cas`: swapped with the
    /// value's length now in decimal, or not swapped and nothing.
    Append {
        key: Bytes,
        value: Bytes,
        max_len: u32,
    },
    /// The address book: node `node`'s peer address (shard 0; empty:
    /// forget it) and client address (shard 0; empty: not given).
    /// Written before a node is added, so every replica of the group can
    /// reach it, now and after a restart, and clients can find it.
    Member {
        node: u64,
        peer_addr: Bytes,
        client_addr: Bytes,
    },
    /// A command of the meta group's state machine (`meta::MetaCmd`'s
    /// encoding), applied to the [`MetaState`] this state machine then
    /// holds; answered `Reply::Meta`.
    Meta {
        cmd: Bytes,
    },
    /// Splits the range at `key` (issue #18): this group keeps the keys
    /// below it, a new group `right` takes `key` and every key above it,
    /// with a copy of the client sessions (a write retried across the
    /// split finds its outcome on either side). Both sides' version is
    /// the parent's + 1 (`meta::Epoch`). An admin command (client 0),
    /// proposed by the range's leader; see [`Kv::take_split`] for what the
    /// applier does with the new side, and [`Kv::apply`] for the refusals.
    /// `start`, `end` and `version` are the range's bounds as its leader
    /// had them when it proposed the split: every replica adopts them, so
    /// replicas whose bounds came from their own nodes' descriptors (and
    /// might differ) leave the split with the same ones.
    Split {
        key: Bytes,
        right: u64,
        start: Bytes,
        end: Bytes,
        version: u64,
    },
}

impl WriteOp {
    /// The key a write to the map names (`None` for the address book,
    /// meta commands and splits).
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key }
            | WriteOp::Cas { key, .. }
            | WriteOp::Incr { key, .. }
            | WriteOp::Append { key, .. } => Some(key),
            WriteOp::Member { .. } | WriteOp::Meta { .. } | WriteOp::Split { .. } => None,
        }
    }
}

// cmd = version u8 = 1 | op u8 | flags u8 | pad u8 | key_len u32
//       | client u64 | seq u64 | ack u64 | key
//       | PUT: value_len u32 | value
//       | CAS: expect_len u32 | expect | value_len u32 | value
//         (flags bit 0: expect present, bit 1: value present)
//       | MEMBER: (key = node id, 8 bytes LE) value_len u32 | peer address
//                 | (flags bit 0) len u32 | client address
//         (entries written before client addresses had flags 0)
//       | META: (key empty) value_len u32 | meta command
//       | INCR: len u32 = 8 | by i64
//       | APPEND: value_len u32 | value | len u32 = 4 | max_len u32
//       | SPLIT: (key = split key) len u32 = 8 | right range id u64
const CMD_VERSION: u8 = 1;
const CMD_HEADER_BYTES: usize = 32;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS: u8 = 3;
const OP_MEMBER: u8 = 4;
const OP_META: u8 = 5;
const OP_INCR: u8 = 6;
const OP_APPEND: u8 = 7;
const OP_SPLIT: u8 = 8;

impl Command {
    pub fn encode(&self) -> Bytes {
        let node_key;
        let (op, key) = match &self.op {
            WriteOp::Put { key, .. } => (OP_PUT, key),
            WriteOp::Delete { key } => (OP_DELETE, key),
            WriteOp::Cas { key, .. } => (OP_CAS, key),
            WriteOp::Incr { key, .. } => (OP_INCR, key),
            WriteOp::Append { key, .. } => (OP_APPEND, key),
            WriteOp::Split { key, .. } => (OP_SPLIT, key),
            WriteOp::Member { node, .. } => {
                node_key = Bytes::copy_from_slice(&node.to_le_bytes());
                (OP_MEMBER, &node_key)
            }
            WriteOp::Meta { .. } => {
                node_key = Bytes::new();
                (OP_META, &node_key)
            }
        };
        let mut b = Vec::with_capacity(CMD_HEADER_BYTES + key.len() + 64);
        let flags = match &self.op {
            WriteOp::Cas { expect, value, .. } => {
                u8::from(expect.is_some()) | (u8::from(value.is_some()) << 1)
            }
            WriteOp::Member { .. } => 1,
            _ => 0,
        };
        b.extend_from_slice(&[CMD_VERSION, op, flags, 0]);
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.client.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.ack.to_le_bytes());
        b.extend_from_slice(key);
        let mut field = |v: &[u8]| {
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        };
        match &self.op {
            WriteOp::Put { value, .. } => field(value),
            WriteOp::Member {
                peer_addr,
                client_addr,
                ..
            } => {
                field(peer_addr);
                field(client_addr);
            }
            WriteOp::Delete { .. } => {}
            WriteOp::Meta { cmd } => field(cmd),
            WriteOp::Cas { expect, value, .. } => {
                field(expect.as_deref().unwrap_or_default());
                field(value.as_deref().unwrap_or_default());
            }
            WriteOp::Incr { by, .. } => field(&by.to_le_bytes()),
            WriteOp::Split {
                right,
                start,
                end,
                version,
                ..
            } => {
                field(&right.to_le_bytes());
                field(start);
                field(end);
                field(&version.to_le_bytes());
            }
            WriteOp::Append { value, max_len, .. } => {
                field(value);
                field(&max_len.to_le_bytes());
            }
        }
        Bytes::from(b)
    }

    /// Decodes a command; `None` if the bytes are not one (a committed
    /// entry that fails this was not written by this code: the caller
    /// treats it as corruption).
    pub fn decode(b: &Bytes) -> Option<Command> {
        if b.len() < CMD_HEADER_BYTES || b[0] != CMD_VERSION {
            return None;
        }
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let key_len = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")) as usize;
        let mut at = CMD_HEADER_BYTES;
        let take = |at: &mut usize, n: usize| -> Option<Bytes> {
            let end = at.checked_add(n).filter(|&e| e <= b.len())?;
            let s = b.slice(*at..end);
            *at = end;
            Some(s)
        };
        let key = take(&mut at, key_len)?;
        // A length is read in place, not taken as a `Bytes` of its own
        // (a reference count up and down per field).
        let mut field = || -> Option<Bytes> {
            let len = b.get(at..at.checked_add(4)?)?;
            let n = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            at += 4;
            take(&mut at, n)
        };
        let op = match b[1] {
            OP_PUT => WriteOp::Put {
                key,
                value: field()?,
            },
            OP_DELETE => WriteOp::Delete { key },
            OP_META => WriteOp::Meta { cmd: field()? },
            OP_MEMBER => {
                let node = u64::from_le_bytes(key[..].try_into().ok()?);
                let peer_addr = field()?;
                // Entries written before client addresses existed end here.
                let client_addr = if b[2] & 1 != 0 {
                    field()?
                } else {
                    Bytes::new()
                };
                WriteOp::Member {
                    node,
                    peer_addr,
                    client_addr,
                }
            }
            OP_INCR => WriteOp::Incr {
                key,
                by: i64::from_le_bytes(field()?[..].try_into().ok()?),
            },
            OP_SPLIT => WriteOp::Split {
                key,
                right: u64::from_le_bytes(field()?[..].try_into().ok()?),
                start: field()?,
                end: field()?,
                version: u64::from_le_bytes(field()?[..].try_into().ok()?),
            },
            OP_APPEND => {
                let value = field()?;
                let max_len = u32::from_le_bytes(field()?[..].try_into().ok()?);
                WriteOp::Append {
                    key,
                    value,
                    max_len,
                }
            }
            OP_CAS => {
                let (e, v) = (field()?, field()?);
                WriteOp::Cas {
                    key,
                    expect: (b[2] & 1 != 0).then_some(e),
                    value: (b[2] & 2 != 0).then_some(v),
                }
            }
            _ => return None,
        };
        Some(Command {
            client: u64at(8),
            seq: u64at(16),
            ack: u64at(24),
            op,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Session {
    /// Outcomes of writes whose answer the client may not have seen.
    results: Outcomes,
    /// Every seq at or below this one is forgotten.
    floor: u64,
    /// Index of the entry of the client's last write in this group.
    last_index: Index,
}

/// A session's remembered outcomes by seq, oldest first: a ring kept in
/// seq order. A client's writes to a group apply mostly in seq order and
/// are acknowledged oldest first, so an outcome is added at the back and
/// forgotten at the front, reusing the ring's room (a `BTreeMap` here
/// allocated and freed nodes as it grew and shrank: 6 % of a node's CPU
/// under 64 × 64 writes, issue #22). A retried write whose seq is older
/// than the newest goes into its place (O(n), n at most
/// `session_results_max`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Outcomes(std::collections::VecDeque<(u64, Reply)>);

impl Outcomes {
    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&seq, |(s, _)| *s)
    }

    fn get(&self, seq: u64) -> Option<&Reply> {
        self.find(seq).ok().map(|i| &self.0[i].1)
    }

    /// Records `seq`'s outcome (replacing one already there).
    fn insert(&mut self, seq: u64, reply: Reply) {
        match self.0.back() {
            Some((last, _)) if *last >= seq => match self.find(seq) {
                Ok(i) => self.0[i].1 = reply,
                Err(i) => self.0.insert(i, (seq, reply)),
            },
            _ => self.0.push_back((seq, reply)),
        }
    }

    /// Appends `seq`'s outcome if `seq` is newer than every one held
    /// (false, nothing changed, otherwise): a snapshot's, read in order.
    fn push_newest(&mut self, seq: u64, reply: Reply) -> bool {
        if self.0.back().is_some_and(|(last, _)| *last >= seq) {
            return false;
        }
        self.0.push_back((seq, reply));
        true
    }

    /// Forgets every outcome below `seq`.
    fn forget_below(&mut self, seq: u64) {
        while self.0.front().is_some_and(|(s, _)| *s < seq) {
            self.0.pop_front();
        }
    }

    /// Forgets the oldest outcome; its seq.
    fn pop_oldest(&mut self) -> Option<u64> {
        self.0.pop_front().map(|(s, _)| s)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, Reply)> {
        self.0.iter()
    }
}

/// The state machine of one group.
///
/// Its map and sessions are persistent (structurally shared) collections
/// (`imbl`'s B-tree and HAMT, with `Arc`-shared nodes): `clone` costs
/// O(1) whatever the size, so a snapshot is a view taken on the shard's
/// executor in constant time and encoded elsewhere (issue #21), while
/// writes go on; a write after the view copies only the path it changes.
///
/// A split costs O(1) the same way (issue #18): both sides keep a view of
/// the parent's whole map and narrow their `bounds`. Keys outside the
/// bounds are invisible (reads, scans, snapshots and the digest look only
/// inside; writes outside are refused) and are removed a bounded number
/// at a time by [`Kv::trim_outside_bounds`], off the apply path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kv {
    /// May hold keys outside `bounds` after a split, until trimmed.
    map: imbl::OrdMap<Datum, Datum>,
    sessions: imbl::HashMap<u64, Session>,
    /// Bytes of keys and values in `map`, including keys a split left
    /// outside `bounds` until they are trimmed.
    data_bytes: u64,
    /// Index of the last entry applied.
    applied: Index,
    limits: KvLimits,
    /// The address book: node → peer address of its shard 0.
    members: BTreeMap<u64, String>,
    /// Node → client address of its shard 0, where the operator gave it.
    client_addrs: BTreeMap<u64, String>,
    /// The keys this group holds: reads and the leader's intake of
    /// writes refuse keys outside them (`KeyNotInRange`).
    bounds: KeyBounds,
    /// The cluster map, in the meta group's state machine (created by its
    /// first `WriteOp::Meta`); `None` in a range's.
    meta: Option<Box<MetaState>>,
    /// The new side of the split the last applied entry made, until the
    /// applier takes it ([`Kv::take_split`]). Never in a snapshot.
    split_off: Option<Box<SplitOff>>,
}

/// The parts of a [`Kv`] a write changes, borrowed apart from its
/// sessions: a write's session stays borrowed across its execution, one
/// lookup of the client's session per write.
struct Data<'a> {
    map: &'a mut imbl::OrdMap<Datum, Datum>,
    data_bytes: &'a mut u64,
    members: &'a mut BTreeMap<u64, String>,
    client_addrs: &'a mut BTreeMap<u64, String>,
    meta: &'a mut Option<Box<MetaState>>,
}

impl Data<'_> {
    /// Sets `key` to `value`, keeping `data_bytes`.
    fn put(&mut self, key: Datum, value: Datum) {
        let klen = key.len() as u64;
        let added = klen + value.len() as u64;
        if let Some(old) = self.map.insert(key, value) {
            *self.data_bytes -= klen + old.len() as u64;
        }
        *self.data_bytes += added;
    }

    /// Removes `key`, keeping `data_bytes`.
    fn del(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            *self.data_bytes -= (key.len() + old.len()) as u64;
        }
    }

    /// Applies `op` (not a split: [`Kv::apply`] takes those first) and
    /// answers it.
    fn execute(&mut self, op: &WriteOp) -> Reply {
        match op {
            WriteOp::Put { key, value } => {
                self.put(Datum::copy_from_slice(key), Datum::copy_from_slice(value));
                Reply::Done
            }
            WriteOp::Delete { key } => {
                self.del(key);
                Reply::Done
            }
            WriteOp::Split { .. } => unreachable!("`apply` takes splits before `execute`"),
            WriteOp::Meta { cmd } => {
                let m = self.meta.get_or_insert_with(Default::default);
                let r = MetaCmd::decode(cmd)
                    .map_err(|e| e.to_string())
                    .and_then(|c| m.apply(&c).map_err(|e| e.to_string()));
                match r {
                    Ok(reply) => Reply::Meta {
                        ok: true,
                        body: reply.encode(),
                    },
                    Err(why) => Reply::Meta {
                        ok: false,
                        body: Bytes::from(why),
                    },
                }
            }
            WriteOp::Member {
                node,
                peer_addr,
                client_addr,
            } => {
                if peer_addr.is_empty() {
                    self.members.remove(node);
                    self.client_addrs.remove(node);
                } else {
                    self.members
                        .insert(*node, String::from_utf8_lossy(peer_addr).into_owned());
                    if client_addr.is_empty() {
                        self.client_addrs.remove(node);
                    } else {
                        self.client_addrs
                            .insert(*node, String::from_utf8_lossy(client_addr).into_owned());
                    }
                }
                Reply::Done
            }
            WriteOp::Incr { key, by } => {
                let current = self.map.get(&key[..]);
                let sum = match current {
                    None => Some(*by),
                    Some(v) => redis_integer(v).and_then(|n| n.checked_add(*by)),
                };
                match sum {
                    Some(n) => {
                        let v = Bytes::from(n.to_string());
                        self.put(Datum::copy_from_slice(key), Datum::copy_from_slice(&v));
                        Reply::Cas {
                            swapped: true,
                            current: Some(v),
                        }
                    }
                    // The value only if it is an integer (the sum
                    // overflowed): never a large non-integer copied into
                    // the answer and the session.
                    None => Reply::Cas {
                        swapped: false,
                        current: current
                            .filter(|v| redis_integer(v).is_some())
                            .map(Datum::to_bytes),
                    },
                }
            }
            WriteOp::Append {
                key,
                value,
                max_len,
            } => {
                let current = self.map.get(&key[..]);
                let len = current.map_or(0, |c| c.len()) + value.len();
                if len > *max_len as usize {
                    return Reply::Cas {
                        swapped: false,
                        current: None,
                    };
                }
                let mut v = Vec::with_capacity(len);
                v.extend_from_slice(current.map_or(&[][..], |c| &c[..]));
                v.extend_from_slice(value);
                self.put(Datum::copy_from_slice(key), Datum::from_vec(v));
                // The length, not the value: appends to a large value
                // must not copy it into every answer and session.
                Reply::Cas {
                    swapped: true,
                    current: Some(Bytes::from(len.to_string())),
                }
            }
            WriteOp::Cas { key, expect, value } => {
                let current = self.map.get(&key[..]);
                if current.map(|b| &b[..]) == expect.as_deref() {
                    match value {
                        Some(v) => {
                            self.put(Datum::copy_from_slice(key), Datum::copy_from_slice(v));
                        }
                        None => self.del(key),
                    }
                    Reply::Cas {
                        swapped: true,
                        current: value.clone(),
                    }
                } else {
                    Reply::Cas {
                        swapped: false,
                        current: current.map(Datum::to_bytes),
                    }
                }
            }
        }
    }
}

/// `[start, end)` as text (`∞`: no upper bound).
fn show_bounds(b: &KeyBounds) -> String {
    let end = if b.end.is_empty() {
        "∞".to_string()
    } else {
        crate::meta::show_key(&b.end)
    };
    format!("[{}, {end})", crate::meta::show_key(&b.start))
}

/// The new (right-hand) range a split entry made: its id and its state
/// machine, at the split entry's index (its log starts there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitOff {
    pub right: u64,
    pub kv: Kv,
}

/// The keys `[start, end)` a group's state machine holds (empty `end`: no
/// upper bound), and the range version they are at (`meta::Epoch`).
/// Replicated state: set when the group is created (from its catalog
/// descriptor), carried by snapshots, changed only by entries of the
/// group's log (splits and merges, issue #18).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBounds {
    pub start: Bytes,
    pub end: Bytes,
    pub version: u64,
    /// Whether these bounds were given (by a descriptor or a snapshot that
    /// carries them). A group created before ranges existed, or a joining
    /// replica before its first snapshot, holds the whole keyspace
    /// unknowingly; the shard tells them apart.
    pub known: bool,
    /// Set by a split entry of the group's log ([`WriteOp::Split`]), so
    /// alike on every replica that applied it. Only such bounds hide keys
    /// from snapshots and the digest and refuse writes at apply: bounds
    /// from a descriptor are a node's own (its bootstrap cuts), and
    /// replicas whose nodes disagree on them must still apply the same
    /// writes, which only the leader's intake check guarantees.
    pub from_log: bool,
}

impl KeyBounds {
    /// The bounds a replica created from range descriptor `d` holds
    /// until a snapshot or a split entry says otherwise: `d`'s keys and
    /// version, known, not from the log (a node's own: its bootstrap cuts
    /// or its catalog).
    pub fn of_descriptor(d: &crate::meta::RangeDesc) -> KeyBounds {
        KeyBounds {
            start: d.start.clone(),
            end: d.end.clone(),
            version: d.epoch.version,
            known: true,
            from_log: false,
        }
    }

    /// Whether `key` is in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        crate::meta::key_in(&self.start, &self.end, key)
    }

    /// `[start, end)` clamped to these bounds (empty `end`: no upper
    /// bound); `None` if nothing is left.
    pub fn clamp<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let lo = start.max(&self.start[..]);
        let hi = match (end.is_empty(), self.end.is_empty()) {
            (true, _) => &self.end[..],
            (false, true) => end,
            (false, false) => end.min(&self.end[..]),
        };
        (hi.is_empty() || lo < hi).then_some((lo, hi))
    }
}

impl Kv {
    pub fn new(limits: KvLimits) -> Kv {
        Kv {
            limits,
            ..Kv::default()
        }
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The cluster map this state machine holds (the meta group's).
    pub fn meta(&self) -> Option<&MetaState> {
        self.meta.as_deref()
    }

    /// The keys this group holds.
    pub fn bounds(&self) -> &KeyBounds {
        &self.bounds
    }

    /// Sets the keys this group holds: at creation, from its descriptor.
    pub fn set_bounds(&mut self, bounds: KeyBounds) {
        self.bounds = bounds;
    }

    /// Keys in the map, including keys a split left outside the bounds
    /// until they are trimmed.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// What a write changes, borrowed apart from the sessions.
    fn data(&mut self) -> Data<'_> {
        Data {
            map: &mut self.map,
            data_bytes: &mut self.data_bytes,
            members: &mut self.members,
            client_addrs: &mut self.client_addrs,
            meta: &mut self.meta,
        }
    }

    /// Bytes of the keys and values the map holds (what a snapshot's
    /// pairs take, less 8 bytes of lengths per pair).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// A digest of the map (FNV-1a over every key and value, in order,
    /// then the meta state's snapshot if it holds one): replicas at the
    /// same applied index have the same digest.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in (b.len() as u32).to_le_bytes().iter().chain(b) {
                h ^= u64::from(x);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (k, v) in self.pairs_in_bounds() {
            eat(k);
            eat(v);
        }
        if let Some(m) = &self.meta {
            eat(&m.snapshot());
        }
        h
    }

    /// The address book (node → peer address of its shard 0).
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Client addresses from the address book (node → shard 0's), for
    /// clients to find nodes added after they started.
    pub fn client_addrs(&self) -> &BTreeMap<u64, String> {
        &self.client_addrs
    }

    /// `key`'s value (`Datum::to_bytes` for an answer).
    pub fn get(&self, key: &[u8]) -> Option<&Datum> {
        self.map.get(key)
    }

    /// Pairs with `start <= key < end` (`end` empty: unbounded), at most
    /// `limit`; `true` if more were in range.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<(Bytes, Bytes)>, bool) {
        use std::ops::Bound;
        let hi = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut it = self
            .map
            .range::<_, [u8]>((Bound::Included(start), hi))
            .map(|(k, v)| (k.to_bytes(), v.to_bytes()));
        let out: Vec<_> = it.by_ref().take(limit).collect();
        let more = it.next().is_some();
        (out, more)
    }

    /// The outcome already known for a write, if it was applied (and not
    /// forgotten): lets a retry be answered without proposing it again.
    pub fn known_outcome(&self, client: u64, seq: u64) -> Option<Result<Reply, ClientError>> {
        let s = self.sessions.get(&client)?;
        if let Some(r) = s.results.get(seq) {
            return Some(Ok(r.clone()));
        }
        (seq <= s.floor).then_some(Err(ClientError::SessionExpired))
    }

    /// An entry that is not a write (a no-op, a membership change).
    pub fn skip(&mut self, index: Index) {
        assert_eq!(index, self.applied + 1, "entries are applied in order");
        self.applied = index;
    }

    /// Applies the write of entry `index`. Client id 0 has no session
    /// (admin writes such as the address book): applied as is.
    ///
    /// Refused, the same on every replica (decided by the log alone), with
    /// nothing applied and no session touched:
    /// - a write whose key is outside bounds a split set
    ///   ([`KeyBounds::from_log`]), `KeyNotInRange` (it was admitted before
    ///   a split that applied first; the client retries it at the range
    ///   that holds the key now, with the same seq);
    /// - a split ([`WriteOp::Split`]) that is not an admin command
    ///   (client 0), in the meta group, at a key not strictly inside the
    ///   bounds (`start < key`, `key < end`), longer
    ///   than `meta::RANGE_BOUNDARY_BYTES_MAX`, or naming range 0 as the
    ///   new range: `BadRequest`.
    ///
    /// # Panics
    /// If a split's new side was not taken ([`Kv::take_split`]) before the
    /// next entry.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> Result<Reply, ClientError> {
        assert_eq!(index, self.applied + 1, "entries are applied in order");
        assert!(
            self.split_off.is_none(),
            "the new side of a split is taken before the next entry is applied"
        );
        self.applied = index;
        if let Some(key) = cmd.op.key() {
            if self.bounds.from_log && !self.bounds.contains(key) {
                return Err(self.not_in_range(key));
            }
        }
        if let WriteOp::Split {
            key,
            right,
            start,
            end,
            version,
        } = &cmd.op
        {
            let proposed = KeyBounds {
                start: start.clone(),
                end: end.clone(),
                version: *version,
                known: true,
                from_log: true,
            };
            return self
                .split(cmd.client, key, *right, proposed)
                .map(|()| Reply::Done);
        }
        if cmd.client == 0 {
            let r = self.data().execute(&cmd.op);
            self.expire(index);
            return Ok(r);
        }
        let Kv {
            map,
            sessions,
            data_bytes,
            limits,
            members,
            client_addrs,
            meta,
            ..
        } = self;
        let s = sessions.entry(cmd.client).or_default();
        s.last_index = index;
        // The client has seen every answer below `ack`.
        if cmd.ack > 0 && s.floor < cmd.ack - 1 {
            s.floor = cmd.ack - 1;
            s.results.forget_below(cmd.ack);
        }
        if let Some(r) = s.results.get(cmd.seq) {
            return Ok(r.clone());
        }
        if cmd.seq <= s.floor {
            return Err(ClientError::SessionExpired);
        }
        let reply = Data {
            map,
            data_bytes,
            members,
            client_addrs,
            meta,
        }
        .execute(&cmd.op);
        s.results.insert(cmd.seq, reply.clone());
        if s.results.len() > limits.session_results_max {
            let oldest = s.results.pop_oldest().expect("not empty");
            s.floor = s.floor.max(oldest);
        }
        self.expire(index);
        Ok(reply)
    }

    /// Applies a split at `key` (the entry at `self.applied`): see
    /// [`Kv::apply`] for the refusals. O(1) in the keys and sessions.
    fn split(
        &mut self,
        client: u64,
        key: &Bytes,
        right: u64,
        proposed: KeyBounds,
    ) -> Result<(), ClientError> {
        let refuse = |reason: String| Err(ClientError::BadRequest { reason });
        let b = &proposed;
        let mine = &self.bounds;
        if client != 0 {
            return refuse(format!(
                "a split is an admin command (client 0), not client {client}'s"
            ));
        }
        // Replicated (set by a split entry or a snapshot carrying it), so
        // every replica refuses alike.
        if mine.from_log
            && (mine.start != b.start || mine.end != b.end || mine.version != b.version)
        {
            return refuse(format!(
                "the range changed since this split was proposed (it is {} at version {}, \
                 the split was proposed for {} at version {}): ask again",
                show_bounds(mine),
                mine.version,
                show_bounds(b),
                b.version
            ));
        }
        if self.meta.is_some() {
            return refuse("the meta group does not split".into());
        }
        if key.len() > crate::meta::RANGE_BOUNDARY_BYTES_MAX {
            return refuse(format!(
                "split key of {} bytes, above meta::RANGE_BOUNDARY_BYTES_MAX ({})",
                key.len(),
                crate::meta::RANGE_BOUNDARY_BYTES_MAX
            ));
        }
        if key[..] <= b.start[..] || !b.contains(key) {
            return refuse(format!(
                "split key {} is not strictly inside the range {}",
                crate::meta::show_key(key),
                show_bounds(b)
            ));
        }
        if right == 0 {
            return refuse("a split names range 0 as its new range".into());
        }
        let version = b.version + 1;
        let mut kv = Kv {
            meta: None,
            split_off: None,
            ..self.clone()
        };
        kv.bounds = KeyBounds {
            start: key.clone(),
            end: b.end.clone(),
            version,
            known: true,
            from_log: true,
        };
        self.bounds.start = b.start.clone();
        self.bounds.end = key.clone();
        self.bounds.version = version;
        self.bounds.known = true;
        self.bounds.from_log = true;
        self.split_off = Some(Box::new(SplitOff { right, kv }));
        Ok(())
    }

    /// The new side of the split the last applied entry made, if it made
    /// one: the applier creates range `right` from it (with this range's
    /// members) before it applies the next entry.
    pub fn take_split(&mut self) -> Option<SplitOff> {
        self.split_off.take().map(|b| *b)
    }

    /// Where to split this range so each side holds about half of its
    /// bytes (keys and values, inside its bounds): the shortest key
    /// between the last key of the lower half and the first of the upper
    /// one (`meta::split_key_between`), so a split key stays short
    /// whatever the keys' length. `None` if fewer than two keys are
    /// inside the bounds. O(n): taken on a copy of the state (O(1),
    /// persistent), off the executor.
    pub fn split_key_by_bytes(&self) -> Option<Bytes> {
        let size = |(k, v): (&Datum, &Datum)| (k.len() + v.len()) as u64;
        let total: u64 = self.pairs_in_bounds().map(size).sum();
        let mut below = 0u64;
        // (the key before the last one looked at, the last one)
        let mut last: (Option<&Datum>, Option<&Datum>) = (None, None);
        for (k, v) in self.pairs_in_bounds() {
            if let Some(p) = last.1 {
                if below * 2 >= total {
                    return Some(crate::meta::split_key_between(p, k));
                }
            }
            below += size((k, v));
            last = (last.1, Some(k));
        }
        // The upper half is the last key alone (it holds over half).
        let (lo, hi) = (last.0?, last.1?);
        Some(crate::meta::split_key_between(lo, hi))
    }

    /// Whether the map holds keys outside the bounds (a split left them):
    /// O(log n).
    pub fn has_keys_outside_bounds(&self) -> bool {
        let b = &self.bounds;
        if !b.from_log {
            return false;
        }
        let below = self.map.get_min().is_some_and(|(k, _)| k[..] < b.start[..]);
        let above =
            !b.end.is_empty() && self.map.get_max().is_some_and(|(k, _)| k[..] >= b.end[..]);
        below || above
    }

    /// Removes at most `max` keys outside the bounds (below `start`
    /// first), each O(log n); returns how many. Nothing replicated
    /// changes: those keys are invisible already, so replicas may trim at
    /// their own pace.
    pub fn trim_outside_bounds(&mut self, max: usize) -> usize {
        use std::ops::Bound;
        if !self.bounds.from_log {
            return 0;
        }
        let start = self.bounds.start.clone();
        let end = self.bounds.end.clone();
        let mut doomed: Vec<Datum> = self
            .map
            .range::<_, [u8]>((Bound::Unbounded, Bound::Excluded(&start[..])))
            .take(max)
            .map(|(k, _)| k.clone())
            .collect();
        if doomed.len() < max && !end.is_empty() {
            let left = max - doomed.len();
            doomed.extend(
                self.map
                    .range::<_, [u8]>((Bound::Included(&end[..]), Bound::Unbounded))
                    .take(left)
                    .map(|(k, _)| k.clone()),
            );
        }
        let mut data = self.data();
        for k in &doomed {
            data.del(k);
        }
        doomed.len()
    }

    /// The pairs inside bounds a split set, in key order (every pair if
    /// no split did: [`KeyBounds::from_log`]).
    fn pairs_in_bounds(&self) -> impl Iterator<Item = (&Datum, &Datum)> {
        use std::ops::Bound;
        if !self.bounds.from_log {
            return self
                .map
                .range::<_, [u8]>((Bound::Unbounded, Bound::Unbounded));
        }
        let hi = if self.bounds.end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(&self.bounds.end[..])
        };
        self.map
            .range::<_, [u8]>((Bound::Included(&self.bounds.start[..]), hi))
    }

    /// The refusal of `key`, which these bounds do not hold.
    pub fn not_in_range(&self, key: &[u8]) -> ClientError {
        ClientError::KeyNotInRange {
            key: Bytes::copy_from_slice(key),
            start: self.bounds.start.clone(),
            end: self.bounds.end.clone(),
            version: self.bounds.version,
        }
    }

    /// Drops idle sessions (checked every 1024 entries) and the least
    /// recently used past `sessions_max`.
    fn expire(&mut self, index: Index) {
        let idle = self.limits.session_idle_entries;
        if index.is_multiple_of(1024) {
            self.sessions
                .retain(|_, s| index.saturating_sub(s.last_index) <= idle);
        }
        if self.sessions.len() > self.limits.sessions_max {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(c, s)| (s.last_index, **c))
                .map(|(c, _)| *c)
                .expect("not empty");
            self.sessions.remove(&oldest);
        }
    }

    // snapshot = magic "RRKVSNAP" | version u32 = 3 | pad u32 | applied u64
    //   | pairs u64 | { key_len u32 | value_len u32 | key | value }*
    //   | sessions u64 | { client u64 | floor u64 | last_index u64
    //   | results u32 | pad u32 | { seq u64 | reply }* }*
    //   reply = kind u8 (0 Done, 1 Cas) | swapped u8 | has_current u8 | pad u8
    //           | len u32 | current
    //   | members u64 | { node u64 | addr_len u32 | peer address }*
    //   | clients u64 | { node u64 | addr_len u32 | client address }*
    //     (version 2; version 1 snapshots end after the members)
    //   | flags u32 (bit 0: known, bit 1: set by a split) | start_len u32 | end_len u32 | pad u32
    //   | version u64 | start | end
    //     (version 3: the group's key bounds; older ones hold the whole
    //     keyspace, bounds not known)
    //   | has_meta u32 | pad u32 | meta_len u64 | meta state snapshot
    //     (version 4: the meta group's cluster map)
    /// The state as snapshot bytes.
    pub fn snapshot(&self) -> Bytes {
        let mut b = Vec::with_capacity(64 + self.map.len() * 48);
        b.extend_from_slice(SNAP_MAGIC);
        b.extend_from_slice(&SNAP_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.applied.to_le_bytes());
        let count_at = b.len();
        b.extend_from_slice(&0u64.to_le_bytes());
        let mut pairs = 0u64;
        for (k, v) in self.pairs_in_bounds() {
            pairs += 1;
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        b[count_at..count_at + 8].copy_from_slice(&pairs.to_le_bytes());
        let mut clients: Vec<_> = self.sessions.iter().collect();
        clients.sort_by_key(|(c, _)| **c);
        b.extend_from_slice(&(clients.len() as u64).to_le_bytes());
        for (c, s) in clients {
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&s.floor.to_le_bytes());
            b.extend_from_slice(&s.last_index.to_le_bytes());
            b.extend_from_slice(&(s.results.len() as u32).to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            for (seq, r) in s.results.iter() {
                b.extend_from_slice(&seq.to_le_bytes());
                let (kind, swapped, current) = match r {
                    Reply::Cas { swapped, current } => (1u8, *swapped, current.as_ref()),
                    _ => (0u8, false, None),
                };
                b.extend_from_slice(&[kind, u8::from(swapped), u8::from(current.is_some()), 0]);
                let cur = current.map(|c| &c[..]).unwrap_or_default();
                b.extend_from_slice(&(cur.len() as u32).to_le_bytes());
                b.extend_from_slice(cur);
            }
        }
        for book in [&self.members, &self.client_addrs] {
            b.extend_from_slice(&(book.len() as u64).to_le_bytes());
            for (node, addr) in book {
                b.extend_from_slice(&node.to_le_bytes());
                b.extend_from_slice(&(addr.len() as u32).to_le_bytes());
                b.extend_from_slice(addr.as_bytes());
            }
        }
        let k = &self.bounds;
        b.extend_from_slice(&(u32::from(k.known) | u32::from(k.from_log) << 1).to_le_bytes());
        b.extend_from_slice(&(k.start.len() as u32).to_le_bytes());
        b.extend_from_slice(&(k.end.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&k.version.to_le_bytes());
        b.extend_from_slice(&k.start);
        b.extend_from_slice(&k.end);
        let meta = self.meta.as_ref().map(|m| m.snapshot()).unwrap_or_default();
        b.extend_from_slice(&u32::from(self.meta.is_some()).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        b.extend_from_slice(&meta);
        Bytes::from(b)
    }

    /// Rebuilds the state from snapshot bytes (which passed a checksum).
    pub fn restore(data: &[u8], limits: KvLimits) -> Result<Kv, SnapshotError> {
        let mut r = Cursor { b: data, at: 0 };
        if r.take(8)? != SNAP_MAGIC {
            return Err(SnapshotError("bad magic"));
        }
        let version = r.u32()?;
        if !(1..=SNAP_VERSION).contains(&version) {
            return Err(SnapshotError("unknown version"));
        }
        r.u32()?;
        let applied = r.u64()?;
        let pairs = r.u64()?;
        let mut map = imbl::OrdMap::new();
        let mut data_bytes = 0u64;
        for _ in 0..pairs {
            let (kl, vl) = (r.u32()? as usize, r.u32()? as usize);
            let k = Datum::copy_from_slice(r.take(kl)?);
            let v = Datum::copy_from_slice(r.take(vl)?);
            data_bytes += (kl + vl) as u64;
            if map.insert(k, v).is_some() {
                return Err(SnapshotError("a key twice"));
            }
        }
        let n = r.u64()?;
        let mut sessions = imbl::HashMap::new();
        for _ in 0..n {
            let client = r.u64()?;
            let floor = r.u64()?;
            let last_index = r.u64()?;
            let count = r.u32()?;
            r.u32()?;
            let mut results = Outcomes::default();
            for _ in 0..count {
                let seq = r.u64()?;
                let h = r.take(4)?;
                let (kind, swapped, has) = (h[0], h[1] != 0, h[2] != 0);
                let len = r.u32()? as usize;
                let cur = Bytes::copy_from_slice(r.take(len)?);
                let reply = match kind {
                    0 => Reply::Done,
                    1 => Reply::Cas {
                        swapped,
                        current: has.then_some(cur),
                    },
                    _ => return Err(SnapshotError("bad session reply kind")),
                };
                // Written oldest first, each seq once: anything else is
                // not a snapshot this code wrote (and would cost a shift
                // per outcome to put in order).
                if !results.push_newest(seq, reply) {
                    return Err(SnapshotError("session outcomes out of order"));
                }
            }
            sessions.insert(
                client,
                Session {
                    results,
                    floor,
                    last_index,
                },
            );
        }
        let mut book = || -> Result<BTreeMap<u64, String>, SnapshotError> {
            let n = r.u64()?;
            let mut book = BTreeMap::new();
            for _ in 0..n {
                let node = r.u64()?;
                let len = r.u32()? as usize;
                let addr = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| SnapshotError("member address is not UTF-8"))?;
                book.insert(node, addr.to_string());
            }
            Ok(book)
        };
        let members = book()?;
        let client_addrs = if version >= 2 {
            book()?
        } else {
            BTreeMap::new()
        };
        let bounds = if version >= 3 {
            let flags = r.u32()?;
            if flags > 3 {
                return Err(SnapshotError("unknown key bounds flags"));
            }
            let (sl, el) = (r.u32()? as usize, r.u32()? as usize);
            r.u32()?;
            let v = r.u64()?;
            let start = Bytes::copy_from_slice(r.take(sl)?);
            let end = Bytes::copy_from_slice(r.take(el)?);
            if !end.is_empty() && start >= end {
                return Err(SnapshotError("key bounds out of order"));
            }
            KeyBounds {
                start,
                end,
                version: v,
                known: flags & 1 != 0,
                from_log: flags & 2 != 0,
            }
        } else {
            KeyBounds::default()
        };
        let meta = if version >= 4 {
            let has = r.u32()?;
            r.u32()?;
            let len = usize::try_from(r.u64()?).map_err(|_| SnapshotError("meta length"))?;
            let bytes = r.take(len)?;
            match has {
                0 if len == 0 => None,
                1 => Some(Box::new(
                    MetaState::restore(bytes).map_err(|_| SnapshotError("meta state malformed"))?,
                )),
                _ => return Err(SnapshotError("unknown meta flag")),
            }
        } else {
            None
        };
        if r.at != data.len() {
            return Err(SnapshotError("trailing bytes"));
        }
        let outside = bounds.from_log
            && (map.get_min().is_some_and(|(k, _)| k[..] < bounds.start[..])
                || (!bounds.end.is_empty()
                    && map.get_max().is_some_and(|(k, _)| k[..] >= bounds.end[..])));
        if outside {
            return Err(SnapshotError("a key outside the key bounds"));
        }
        Ok(Kv {
            map,
            sessions,
            data_bytes,
            applied,
            limits,
            members,
            client_addrs,
            bounds,
            meta,
            split_off: None,
        })
    }
}

const SNAP_MAGIC: &[u8; 8] = b"RRKVSNAP";
/// 4 added the meta group's state, 3 the key bounds, 2 client addresses
/// to the address book; 1 and 2 are still read (as holding the whole
/// keyspace, bounds not known).
const SNAP_VERSION: u32 = 4;

/// A snapshot that does not decode (after its checksum passed: a bug or
/// another version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state machine snapshot is malformed: {0}")]
pub struct SnapshotError(&'static str);

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(SnapshotError("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests;

/// `v` as Redis reads an integer value (`string2ll`): decimal ASCII of an
/// `i64`, an optional `-`, no `+`, no spaces, no leading zeros.
pub fn redis_integer(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty()
        || digits.len() > 20
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && v.len() > 1)
    {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}
