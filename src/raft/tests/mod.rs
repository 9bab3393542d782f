//! Unit tests: step one input into the core, assert the exact messages out.

use bytes::Bytes;

use super::*;

mod clock;
mod core;
mod membership;
mod quiesce;
mod reads;
mod snapshots;

pub(super) fn cfg(id: ReplicaId, voters: &[ReplicaId]) -> RaftConfig {
    let mut c = RaftConfig::new(id, voters.to_vec());
    c.seed = 7;
    c
}

pub(super) fn node(id: ReplicaId, voters: &[ReplicaId]) -> RawNode {
    RawNode::new(cfg(id, voters).validate().unwrap())
}

/// Adds voter `id` on the node of the same id.
pub(super) fn voter(id: ReplicaId) -> ConfChangeOp {
    ConfChangeOp::AddVoter {
        replica: id,
        node: id,
    }
}

pub(super) fn msg(from: ReplicaId, to: ReplicaId, term: Term, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

pub(super) fn ent(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

/// Takes a Ready and reports it persisted at once.
pub(super) fn persist(n: &mut RawNode) -> Ready {
    let rd = n.ready();
    n.on_persisted(rd.token());
    rd
}

pub(super) fn tick_until_campaign(n: &mut RawNode) {
    for _ in 0..100 {
        n.tick();
        if n.role() != Role::Follower {
            return;
        }
    }
    panic!("no campaign after 100 ticks");
}

/// Node 1 of [1,2,3] elected leader in term 1, its no-op appended, and the
/// Ready carrying the no-op persisted; followers not yet acked.
pub(super) fn leader() -> RawNode {
    let mut n = node(1, &[1, 2, 3]);
    tick_until_campaign(&mut n);
    assert_eq!(n.role(), Role::PreCandidate);
    n.step(msg(2, 1, 1, Body::PreVoteResp { reject: false }));
    assert_eq!(n.role(), Role::Candidate);
    persist(&mut n);
    n.step(msg(2, 1, 1, Body::VoteResp { reject: false }));
    assert_eq!(n.role(), Role::Leader);
    persist(&mut n);
    n
}

/// (to, prev_index, prev_term, [(index, term)], commit) of an Append.
pub(super) type AppendSummary = (ReplicaId, Index, Term, Vec<(Index, Term)>, Index);

pub(super) fn appends(rd: &Ready) -> Vec<AppendSummary> {
    rd.messages
        .iter()
        .filter_map(|m| match &m.body {
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => Some((
                m.to,
                *prev_index,
                *prev_term,
                entries.iter().map(|e| (e.index, e.term)).collect(),
                *commit,
            )),
            _ => None,
        })
        .collect()
}

/// Leader of [1,2,3] whose no-op is committed (follower 2 acked it).
pub(super) fn committed_leader(lease: bool) -> RawNode {
    let mut c = cfg(1, &[1, 2, 3]);
    c.lease_reads = lease;
    let mut n = RawNode::new(c.validate().unwrap());
    win_election(&mut n, 2);
    persist(&mut n);
    ack(&mut n, 2, 1);
    assert_eq!(n.commit_index(), 1);
    persist(&mut n);
    n
}

pub(super) fn heartbeat_rounds(rd: &Ready) -> Vec<(ReplicaId, u64)> {
    rd.messages
        .iter()
        .filter_map(|m| match m.body {
            Body::Heartbeat { round, .. } => Some((m.to, round)),
            _ => None,
        })
        .collect()
}

/// Single-voter-style leader of [1,2] (2 is far behind) with entries 1..=n
/// applied, and a snapshot taken at `snap` keeping `keep` entries.
pub(super) fn compacted_leader(n: u64, snap: u64, keep: u64, chunk: u64) -> RawNode {
    let mut c = cfg(1, &[1, 2, 3]);
    c.compact_keep_entries = keep;
    c.snapshot_chunk_bytes = chunk;
    let mut l = RawNode::new(c.validate().unwrap());
    win_election(&mut l, 3);
    persist(&mut l);
    for _ in 1..n {
        l.propose(Bytes::from_static(b"e")).unwrap();
    }
    persist(&mut l);
    // Node 3 acks everything; node 2 stays behind (probing, no answer).
    ack(&mut l, 3, n);
    let rd = persist(&mut l);
    let last = rd.committed.last().unwrap().index;
    assert_eq!(last, n);
    l.on_applied(n);
    l.compact(snap, Bytes::from(vec![0xAB; 1000])).unwrap();
    l
}

pub(super) fn snapshot_chunks(rd: &Ready, to: ReplicaId) -> Vec<(u64, u64, usize)> {
    rd.messages
        .iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            Body::Snapshot {
                index,
                offset,
                chunk,
                ..
            } => Some((*index, *offset, chunk.len())),
            _ => None,
        })
        .collect()
}

pub(super) fn chunk_msg(
    from: ReplicaId,
    term: Term,
    index: Index,
    data: &[u8],
    offset: usize,
    len: usize,
) -> Message {
    msg(
        from,
        2,
        term,
        Body::Snapshot {
            index,
            term: 1,
            conf: ConfState::new(&[1, 2, 3], &[]),
            offset: offset as u64,
            total: data.len() as u64,
            crc: crc32fast::hash(data),
            chunk: Bytes::copy_from_slice(&data[offset..offset + len]),
        },
    )
}

/// Leader 1 of voters [1,2,3] (+ learners), no-op committed via node 2.
pub(super) fn leader_with(voters: &[ReplicaId], learners: &[ReplicaId]) -> RawNode {
    let mut c = cfg(1, voters);
    c.learners = learners.to_vec();
    let mut n = RawNode::new(c.validate().unwrap());
    tick_until_campaign(&mut n);
    for &v in voters.iter().filter(|&&v| v != 1) {
        n.step(msg(v, 1, 1, Body::PreVoteResp { reject: false }));
    }
    persist(&mut n);
    for &v in voters.iter().filter(|&&v| v != 1) {
        n.step(msg(v, 1, 1, Body::VoteResp { reject: false }));
    }
    assert_eq!(n.role(), Role::Leader);
    persist(&mut n);
    for &v in voters.iter().filter(|&&v| v != 1) {
        n.step(msg(
            v,
            1,
            1,
            Body::AppendResp {
                reject: false,
                index: 1,
                hint_index: 0,
                hint_term: 0,
            },
        ));
    }
    assert_eq!(n.commit_index(), 1);
    persist(&mut n);
    // New members are seeded with a snapshot: have one.
    n.on_applied(1);
    n.compact(1, Bytes::from_static(b"state")).unwrap();
    n
}

/// A successful AppendResp from `from` to node 1 for `index`, in its term.
pub(super) fn ack(n: &mut RawNode, from: ReplicaId, index: Index) {
    n.step(msg(
        from,
        1,
        n.term(),
        Body::AppendResp {
            reject: false,
            index,
            hint_index: 0,
            hint_term: 0,
        },
    ));
}

/// Campaigns until node `n` wins with `peer`'s pre-vote and vote (its own
/// vote counted once durable); the Ready that makes it leader is not taken.
pub(super) fn win_election(n: &mut RawNode, peer: ReplicaId) {
    tick_until_campaign(n);
    let (me, t) = (n.id(), n.term() + 1);
    n.step(msg(peer, me, t, Body::PreVoteResp { reject: false }));
    persist(n);
    n.step(msg(peer, me, t, Body::VoteResp { reject: false }));
}
