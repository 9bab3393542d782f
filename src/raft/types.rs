//! The values the core takes in and hands out.

use bytes::Bytes;

pub use super::conf::ConfState;

/// A replica's id, the core's peer id: allocated by its group once and
/// never reused (`ConfState::next_replica_id`), so a vote or an
/// acknowledgement sent to a removed replica can never count for a newer
/// replica on the same node (CockroachDB's `ReplicaID`, TiKV's peer id).
pub type ReplicaId = u64;
/// A node's id: where a replica lives (`ConfState::placements`). The core
/// never addresses nodes; the host maps replicas to nodes to send.
pub type NodeId = u64;
pub type Term = u64;
pub type Index = u64;

/// What an entry is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum EntryKind {
    /// A command for the state machine.
    Normal,
    /// Appended by a new leader at the start of its term (Raft §8): it lets
    /// the leader commit entries of earlier terms through one of its own.
    Noop,
    /// A membership change (`ConfChange::encode`); takes effect when applied.
    ConfChange,
}

/// A log entry. `data` is reference-counted: the same bytes go to the WAL
/// batch, to every follower's AppendEntries and to the state machine without
/// being copied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in size bounds (payload plus a fixed overhead).
    #[inline]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Per-entry overhead counted against byte bounds (term, index, kind, length).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// What a snapshot covers: the state machine after applying `index`, the
/// entry at `index` having `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
}

/// A snapshot of the state machine; `data` is opaque to the core. `conf`
/// is the membership as of `meta.index`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub conf: ConfState,
    pub data: Bytes,
}

/// A chunk of a snapshot whose data the application stores
/// ([`crate::raft::RawNode::snapshot_stored`]) and the core no longer holds:
/// `message` is a `Body::Snapshot` whose `chunk` is empty. The application
/// reads `len` bytes at the message's `offset` into the data of snapshot
/// `index` (the bytes it was given with `compact`, or the leader's it
/// installed), puts them in with [`SnapshotRead::fill`] and sends the
/// message; or drops it if it cannot read them: the leader sends the chunk
/// again after a heartbeat round without its ack, as for a lost message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRead {
    pub message: Message,
    /// Bytes to read (at most `RaftConfig::snapshot_chunk_bytes`, and
    /// never past the snapshot's end).
    pub len: u64,
}

impl SnapshotRead {
    /// (snapshot index, offset into its data) of the chunk to read.
    pub fn at(&self) -> (Index, u64) {
        match &self.message.body {
            Body::Snapshot { index, offset, .. } => (*index, *offset),
            other => unreachable!("a snapshot read carries a snapshot chunk, not {other:?}"),
        }
    }

    /// The message to send, with `chunk` (the `len` bytes read) in it.
    pub fn fill(self, chunk: Bytes) -> Message {
        debug_assert_eq!(chunk.len() as u64, self.len);
        let mut m = self.message;
        if let Body::Snapshot { chunk: c, .. } = &mut m.body {
            *c = chunk;
        }
        m
    }
}

/// The state that must be durable before the node acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    pub term: Term,
    /// Who this node voted for in `term` (0 = nobody).
    pub vote: ReplicaId,
    pub commit: Index,
}

impl HardState {
    /// The hard state to write with a Ready, given the one last written
    /// (or queued) `written`, the one the Ready reports (`reported`, if it
    /// changed), the node's current one (`now`) and whether entries are
    /// written with it. A change of the commit index alone is not written
    /// on its own: safety does not need it durable (a restarted node never
    /// applies past what its log and the leader say is committed), and a
    /// sync for it makes the next write wait. It rides along with the next
    /// record. A term or vote change is always written.
    pub fn to_write(
        written: &HardState,
        reported: Option<HardState>,
        now: HardState,
        with_entries: bool,
    ) -> Option<HardState> {
        if with_entries {
            (now != *written).then_some(now)
        } else {
            reported.filter(|hs| hs.term != written.term || hs.vote != written.vote)
        }
    }
}

/// A message between the cores of one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Message {
    pub from: ReplicaId,
    pub to: ReplicaId,
    /// The sender's term (for PreVote: the term it would campaign in).
    pub term: Term,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Body {
    /// "Would you vote for me in `term`?" — changes no state (thesis §9.6).
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResp {
        reject: bool,
    },
    Vote {
        last_index: Index,
        last_term: Term,
        /// Sent after a TimeoutNow: a leader transfer, not a disruption.
        transfer: bool,
    },
    VoteResp {
        reject: bool,
    },
    /// AppendEntries: `entries` follow (`prev_index`, `prev_term`).
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Success: the follower's log matches the leader's through `index` and
    /// that is durable. Reject: `index` is the rejected `prev_index`, and
    /// (`hint_index`, `hint_term`) say where the follower's log may match.
    AppendResp {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Carries `min(commit, follower's match)`: never more than it
    /// verifiably holds. `round` numbers the leader's heartbeat rounds: an
    /// answer to round r confirms leadership as of when r was sent (for
    /// ReadIndex and for the lease).
    Heartbeat {
        commit: Index,
        round: u64,
    },
    /// `round`: the round answered (0 when answering a stale leader).
    HeartbeatResp {
        round: u64,
    },
    /// A chunk of the leader's snapshot (`offset` into its `total` bytes;
    /// `crc` is the CRC32 of the whole).
    Snapshot {
        index: Index,
        term: Term,
        conf: ConfState,
        offset: u64,
        total: u64,
        crc: u32,
        chunk: Bytes,
    },
    /// The follower holds the first `next_offset` bytes of snapshot `index`
    /// (installing it is acknowledged with an AppendResp once durable).
    SnapshotAck {
        index: Index,
        next_offset: u64,
    },
    /// Leader transfer: "campaign now" (the target skips pre-vote, and its
    /// vote requests say `transfer` so that followers in lease answer them).
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of a read `ctx`.
    ReadIndex {
        ctx: u64,
    },
    /// The leader's answer: serve read `ctx` once applied through `index`;
    /// `reject` if the receiver was not (or no longer) the leader.
    ReadIndexResp {
        ctx: u64,
        index: Index,
        reject: bool,
    },
    /// Not a Raft message: the host's answer to a vote request from a node
    /// that is not in the membership it applied at `conf_index` (committed:
    /// a membership takes effect when applied). Sent by the shard
    /// (`shard::replicas`), never by the core, which ignores it. The
    /// receiver, a replica removed while it was down and campaigning since,
    /// destroys itself if the membership it knows is older than
    /// `conf_index` (TiKV sends a stale peer a tombstone message alike).
    Removed {
        conf_index: Index,
    },
    /// A replica that may not campaign (a learner, or one outside the
    /// membership it applied at `conf_index`) and has heard from no leader
    /// for [`MEMBER_CHECK_ELECTIONS`](crate::raft::MEMBER_CHECK_ELECTIONS)
    /// election timeouts asks the voters it knows (and its leader, if
    /// another) whether it is still a member. The core of a member receiving it
    /// wakes if quiesced (its heartbeats then reach the asker again) and
    /// does nothing else; its host answers an asker outside the membership
    /// with [`Body::Removed`] (`shard::replicas`). A learner removed after
    /// it had appended, but before it learned the commit of, the change
    /// that removes it otherwise never hears of it: learners never
    /// campaign, and the leader sends non-members nothing (chaos test of
    /// the balancer, seed 2). CockroachDB's replica GC queue checks such
    /// replicas against the range descriptor alike.
    MemberCheck {
        conf_index: Index,
    },
    /// The leader of `term` stops ticking and heartbeating: its log ends at
    /// `commit`, committed, applied, and held by this follower (its match).
    /// A follower whose own log ends there, durable, stops ticking too
    /// (`RawNode::quiesced`); any other message, a proposal, a read or its
    /// leader's node reported unreachable wakes it. CockroachDB's
    /// quiescence (`MsgHeartbeat` with `Quiesce`), TiKV's hibernate regions.
    Quiesce {
        commit: Index,
    },
}

/// The role of a node in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}
