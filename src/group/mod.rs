//! One replica of a group, without I/O: the Raft core, the replicated
//! state machine, the client requests waiting on it and its read queues.
//!
//! The shard (`crate::shard`) owns the I/O: it feeds a replica messages,
//! proposals and ticks, persists what its Ready asks for, and sends the
//! answers this module hands back. Nothing here calls back into the shard,
//! and nothing in flight outside refers to a replica by anything but its
//! [`GroupId`] (positions in a container may move as replicas are created
//! and destroyed).
//!
//! `ready` is the replica's Ready pipeline in two steps around the I/O,
//! `requests` its client intake; the shard and the simulator (`crate::sim`)
//! both drive a replica through them, so the simulator's checkers test the
//! code the node runs.

pub mod clock;
pub mod membership;
pub mod ready;
pub mod requests;
pub mod routes;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::kv::{Command, Kv, WriteOp};
use crate::raft::{Entry, EntryKind, Index, Message, RawNode, ReadState};
use crate::storage::GroupLog;
use crate::transport::ClientConnId;
use crate::wire::{ClientError, Reply, Request};

/// A group's id: allocated once in the cluster, never reused.
pub type GroupId = u64;

pub use crate::raft::ReplicaId;
pub use ready::{Finished, ReadyIo, ReadyRest, RestoreError};
pub use requests::Intake;
pub use routes::{creates_replica, creation_waits, split_makes_replica, Misrouted, Routes};

/// A client request waiting for its entry to be applied.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    pub term: u64,
    pub conn: ClientConnId,
    pub id: u64,
    pub deadline: Instant,
}

/// A read waiting for its read index, then for the apply to reach it.
#[derive(Debug, Clone)]
pub struct PendingRead {
    pub conn: ClientConnId,
    pub req: Request,
    pub deadline: Instant,
}

/// An answer for a client: (connection, request id, result).
pub type Answer = (ClientConnId, u64, Result<Reply, ClientError>);

/// One replica of a group on this shard.
pub struct Replica {
    pub id: GroupId,
    pub replica: ReplicaId,
    pub raft: RawNode,
    pub kv: Kv,
    /// Index of the replica's durable snapshot file (0: none).
    pub snap_file_index: Index,
    /// A snapshot file write is in flight.
    pub snap_writing: bool,
    /// Bytes of entries applied since the last snapshot.
    pub bytes_since_snapshot: u64,
    /// Which WAL records the replica still needs.
    pub lsns: GroupLog,
    /// The log's last index when the WAL unpinning pass last looked at
    /// this replica (at first, when it was made): one whose log grew
    /// since is still being written (`Shard::unpin_wal`).
    pub unpin_seen_last: Index,
    /// Waiting proposals by log index. Invariant: every key is above the
    /// applied index (`apply` answers them in order; `skip_to_snapshot`
    /// those a snapshot covers).
    pub proposals: BTreeMap<Index, Waiter>,
    /// Linearizable reads received this turn (one read index per turn).
    pub reads_new: Vec<PendingRead>,
    /// Reads waiting for read index `ctx`.
    pub reads_asked: HashMap<u64, Vec<PendingRead>>,
    /// Reads confirmed at an index, served once applied through it.
    pub reads_ready: Vec<(Index, PendingRead)>,
    /// Whether the membership named this replica when last looked at
    /// (`note_membership`).
    pub was_named: bool,
    /// Where answers to non-members go (`routes`).
    pub routes: Routes,
    /// The host's timer entry for this replica: (due tick, kind) as last
    /// scheduled (`shard::work`).
    pub timer: Option<(u64, TimerKind)>,
}

/// What a replica's next timed event is, as the host files it
/// (`shard::work`): each kind has its own queue and budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// A leader's heartbeat, check-quorum round or transfer timeout.
    Leader,
    /// A (pre-)candidate's election timeout: it campaigns again.
    Retry,
    /// A follower's election timeout: it would start a new election.
    Election,
}

/// Why a replica's waiting requests are abandoned ([`Replica::drain_waiters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The replica was destroyed (removed from the group).
    Destroyed,
    /// The shard rebuilds its replicas from disk (after a full disk).
    Rebuilt,
    /// The node stops.
    ShuttingDown,
}

/// What applying committed entries produced besides client answers.
#[derive(Debug, Default)]
pub struct Applied {
    /// (node, peer address) written to the replicated address book; an
    /// empty address forgets the node.
    pub new_members: Vec<(u64, String)>,
    /// Entries applied.
    pub entries: u64,
    /// A membership change was among them.
    pub conf_changed: bool,
    /// The ranges split off by split entries among them (issue #18), in
    /// log order: the host creates each on its (node, shard).
    pub splits: Vec<SplitApplied>,
}

/// A split entry applied: the new (right-hand) range's id and state
/// machine as of the split entry, `index` and `term` (its log starts
/// after them; its members are the parent's as of `index`).
#[derive(Debug)]
pub struct SplitApplied {
    pub right: GroupId,
    pub kv: Kv,
    pub index: Index,
    pub term: u64,
}

impl Replica {
    /// A replica over its Raft core, state machine and replayed log.
    pub fn new(
        id: GroupId,
        replica: ReplicaId,
        raft: RawNode,
        kv: Kv,
        snap_file_index: Index,
        lsns: GroupLog,
    ) -> Replica {
        let unpin_seen_last = raft.log().last_index();
        let mut r = Replica {
            id,
            replica,
            raft,
            kv,
            snap_file_index,
            snap_writing: false,
            bytes_since_snapshot: 0,
            unpin_seen_last,
            lsns,
            proposals: BTreeMap::new(),
            reads_new: Vec::new(),
            reads_asked: HashMap::new(),
            reads_ready: Vec::new(),
            was_named: false,
            routes: Routes::default(),
            timer: None,
        };
        r.was_named = r.is_named();
        r
    }

    /// The replica of range `right` made from split entry `index` (term
    /// `snap.meta.term`) of its parent (issue #18): its core restarts from
    /// `snap`, the parent's membership at `index` over the new range's
    /// state machine `kv`, which the caller made durable first; nothing
    /// is voted and `index` is committed and applied. `parent_leads`: this
    /// node's replica of the parent leads, so this one campaigns at its
    /// next tick (`RawNode::split_born`). Returns the replica and the
    /// snapshot data its core let go, being durable (`snapshot_stored`),
    /// for the caller to free where it costs nothing. The shard and the
    /// simulator both make split ranges with it.
    pub fn from_split(
        right: GroupId,
        replica: ReplicaId,
        cfg: crate::raft::ValidRaftConfig,
        snap: crate::raft::Snapshot,
        kv: Kv,
        parent_leads: bool,
    ) -> (Replica, Option<bytes::Bytes>) {
        let index = snap.meta.index;
        let hs = crate::raft::HardState {
            term: snap.meta.term,
            vote: 0,
            commit: index,
        };
        let raft = RawNode::restart_from(cfg, hs, Some(snap), Vec::new(), index);
        let mut r = Replica::new(right, replica, raft, kv, index, GroupLog::default());
        let held = r.raft.snapshot_stored(index);
        r.raft.split_born(parent_leads);
        (r, held)
    }

    /// A replica recovered from storage: its log replayed (`restart`, taken
    /// from `log` by `GroupLog::take_restart`) over its latest durable
    /// snapshot `snap`, its core configured by `raft` (id and founding
    /// voters set). The shard calls it at start and the simulator at each
    /// restart.
    ///
    /// Errors: the snapshot's data is not a state machine this code wrote.
    pub fn recover(
        id: GroupId,
        raft: crate::raft::ValidRaftConfig,
        restart: crate::storage::Restart,
        log: GroupLog,
        snap: Option<crate::raft::Snapshot>,
        limits: crate::kv::KvLimits,
    ) -> Result<Replica, RestoreError> {
        let kv = match &snap {
            Some(s) => Kv::restore(&s.data, limits).map_err(|e| RestoreError(e.to_string()))?,
            None => Kv::new(limits),
        };
        let snap_index = snap.as_ref().map_or(0, |s| s.meta.index);
        let replica = raft.id;
        let raft = RawNode::restart_from(raft, restart.hs, snap, restart.entries, restart.applied);
        Ok(Replica::new(id, replica, raft, kv, snap_index, log))
    }

    /// Applies `committed` (consecutive, from the next index to apply) to
    /// the state machine, answering the proposals they settle into
    /// `answers`. A proposal whose index was taken by another entry (a
    /// new leader overwrote it) is answered `NotLeader`: the client retries
    /// with the same session sequence, so exactly-once holds.
    ///
    /// Panics if a committed normal entry is not a command (the log holds
    /// only what this code proposed).
    pub fn apply(&mut self, committed: &[Entry], answers: &mut Vec<Answer>) -> Applied {
        let mut out = Applied::default();
        let Some(last) = committed.last().map(|e| e.index) else {
            return out;
        };
        for e in committed {
            self.bytes_since_snapshot += e.size_bytes();
            let result = match e.kind {
                EntryKind::Normal => match Command::decode(&e.data) {
                    Some(cmd) => {
                        if let WriteOp::Member {
                            node, peer_addr, ..
                        } = &cmd.op
                        {
                            out.new_members
                                .push((*node, String::from_utf8_lossy(peer_addr).into_owned()));
                        }
                        let r = self.kv.apply(e.index, &cmd);
                        if let Some(s) = self.kv.take_split() {
                            out.splits.push(SplitApplied {
                                right: s.right,
                                kv: s.kv,
                                index: e.index,
                                term: e.term,
                            });
                        }
                        r
                    }
                    None => panic!(
                        "group {}: committed entry {} is not a command",
                        self.id, e.index
                    ),
                },
                EntryKind::ConfChange => {
                    out.conf_changed = true;
                    self.kv.skip(e.index);
                    tracing::info!(
                        group = self.id,
                        index = e.index,
                        conf = ?self.raft.conf(),
                        "membership change applied"
                    );
                    Ok(Reply::Done)
                }
                EntryKind::Noop => {
                    self.kv.skip(e.index);
                    Err(self.not_leader())
                }
            };
            while let Some((&i, w)) = self.proposals.first_key_value() {
                if i > e.index {
                    break;
                }
                let w = *w;
                self.proposals.pop_first();
                if i == e.index && w.term == e.term {
                    answers.push((w.conn, w.id, result.clone()));
                } else if i == e.index {
                    // Another entry took its index: it is not applied, nor
                    // ever will be.
                    answers.push((w.conn, w.id, Err(self.not_leader())));
                } else {
                    // Below the first entry applied here: a snapshot
                    // covered it, which may hold it (outcome unknown).
                    answers.push((w.conn, w.id, Err(ClientError::Timeout)));
                }
            }
        }
        self.raft.on_applied(last);
        out.entries = committed.len() as u64;
        out
    }

    /// The state machine jumped to a snapshot at `index`: proposals at or
    /// below it are answered "outcome unknown" (the snapshot may hold
    /// them; only a different entry at their index would say they are not
    /// applied). Keeps the invariant of `proposals`.
    pub fn skip_to_snapshot(&mut self, index: Index, answers: &mut Vec<Answer>) {
        while let Some((&i, w)) = self.proposals.first_key_value() {
            if i > index {
                break;
            }
            answers.push((w.conn, w.id, Err(ClientError::Timeout)));
            self.proposals.pop_first();
        }
    }

    /// Whether the membership in force (committed: the core applies a
    /// change when it commits) names this replica.
    pub fn is_named(&self) -> bool {
        let c = self.raft.conf();
        let me = self.replica;
        c.voters.contains(&me) || c.voters_outgoing.contains(&me) || c.is_learner(me)
    }

    /// Records whether the membership names this replica now; true when it
    /// did before and does not any more: the replica was removed. A
    /// replica that joins (seeded by a snapshot whose membership predates
    /// its own addition, then applying changes that add others) was never
    /// named, so it is not taken for removed.
    pub fn note_membership(&mut self) -> bool {
        let now = self.is_named();
        let removed = self.was_named && !now;
        self.was_named = now;
        removed
    }

    /// `NotLeader` naming the node of the leader this replica knows (0:
    /// none).
    pub fn not_leader(&self) -> ClientError {
        ClientError::NotLeader {
            leader: self.leader_node(),
        }
    }

    /// The node of the leader this replica knows (0: none, or not placed).
    pub fn leader_node(&self) -> u64 {
        self.raft
            .leader()
            .and_then(|l| self.node_of(l))
            .unwrap_or(0)
    }

    /// This replica's view of its range: the keys and version its state
    /// machine applied, the membership in force (`conf_ver` is the index
    /// it took force at, so a later membership has a higher one), each
    /// member on `shard` of its node. `None` while the keys are not known
    /// (a joining replica before its first snapshot) or no member is.
    pub fn range_descriptor(&self, shard: u32) -> Option<crate::meta::RangeDesc> {
        use crate::meta::{Epoch, RangeDesc, RangeReplica};
        let b = self.kv.bounds();
        if !b.known {
            return None;
        }
        let conf = self.raft.conf();
        let replicas = conf
            .placements
            .iter()
            .map(|p| RangeReplica {
                replica: p.replica,
                node: p.node,
                shard,
                role: member_role(conf, p.replica),
            })
            .collect();
        let desc = RangeDesc {
            id: self.id,
            start: b.start.clone(),
            end: b.end.clone(),
            epoch: Epoch {
                version: b.version,
                conf_ver: self.raft.conf_index(),
            },
            replicas,
        };
        desc.validate().is_ok().then_some(desc)
    }

    /// The node replica `to` lives on (`routes`). `None`: nowhere known.
    pub fn node_of(&self, to: ReplicaId) -> Option<u64> {
        self.routes.node_of(self.raft.conf(), to)
    }

    /// Checks message `m`, which came from node `from_node`, before it is
    /// stepped (`Routes::accept`).
    pub fn accept_from(&mut self, from_node: u64, m: &Message) -> Result<(), Misrouted> {
        self.routes
            .accept(self.raft.conf(), self.replica, from_node, m)
    }

    /// Whether any client request waits on this replica (it keeps the
    /// replica ticking, for its deadline, even when its core is quiesced).
    pub fn has_waiters(&self) -> bool {
        !self.proposals.is_empty()
            || !self.reads_new.is_empty()
            || !self.reads_ready.is_empty()
            || self.reads_asked.values().any(|v| !v.is_empty())
    }

    /// Linearizable reads waiting here: for this turn's read index, for
    /// an answer to one, or for the apply to reach it.
    pub fn reads_waiting(&self) -> usize {
        self.reads_new.len()
            + self.reads_asked.values().map(Vec::len).sum::<usize>()
            + self.reads_ready.len()
    }

    /// Removes every request whose deadline is at or before `now`, pushing
    /// (connection, request id) of each to `late`.
    pub fn expire(&mut self, now: Instant, late: &mut Vec<(ClientConnId, u64)>) {
        self.proposals.retain(|_, w| {
            let keep = w.deadline > now;
            if !keep {
                late.push((w.conn, w.id));
            }
            keep
        });
        let mut expire = |r: &PendingRead| {
            let keep = r.deadline > now;
            if !keep {
                late.push((r.conn, r.req.id));
            }
            keep
        };
        self.reads_new.retain(&mut expire);
        for v in self.reads_asked.values_mut() {
            v.retain(&mut expire);
        }
        self.reads_ready.retain(|(_, r)| expire(r));
    }

    /// Removes every waiting request and answers it in `out`, because the
    /// replica goes away (`why`). A proposal gets an outcome-unknown error
    /// (`ClientError::outcome_unknown`): its entry may be in other
    /// replicas' logs and commit there, so a refusal would tell the client
    /// "not applied" about a write that may be (the chaos test caught it as
    /// a read of a value never written). A read changes nothing: it gets
    /// `NotLeader` with the leader this replica knows, and is asked again
    /// elsewhere.
    pub fn drain_waiters(&mut self, why: Gone, out: &mut Vec<Answer>) {
        let unknown = match why {
            Gone::Destroyed | Gone::Rebuilt => ClientError::Timeout,
            Gone::ShuttingDown => ClientError::ShuttingDown,
        };
        debug_assert!(unknown.outcome_unknown());
        let hint = self
            .raft
            .leader()
            .filter(|&l| l != self.replica)
            .and_then(|l| self.node_of(l))
            .unwrap_or(0);
        let retry = ClientError::NotLeader { leader: hint };
        out.extend(
            std::mem::take(&mut self.proposals)
                .into_values()
                .map(|w| (w.conn, w.id, Err(unknown.clone()))),
        );
        let reads = self
            .reads_new
            .drain(..)
            .chain(self.reads_asked.drain().flat_map(|(_, v)| v))
            .chain(self.reads_ready.drain(..).map(|(_, r)| r));
        out.extend(reads.map(|r| (r.conn, r.req.id, Err(retry.clone()))));
    }

    /// Asks one read index (context `ctx`) for every read received this
    /// turn. On refusal (not the leader) the reads are handed back in
    /// `failed` with the leader this replica knows.
    pub fn start_reads(&mut self, ctx: u64, failed: &mut Vec<(ClientConnId, u64, u64)>) {
        if self.reads_new.is_empty() {
            return;
        }
        match self.raft.read_index(ctx) {
            Ok(()) => {
                let batch = std::mem::take(&mut self.reads_new);
                self.reads_asked.insert(ctx, batch);
            }
            Err(_) => {
                let leader = self.leader_node();
                for r in self.reads_new.drain(..) {
                    failed.push((r.conn, r.req.id, leader));
                }
            }
        }
    }

    /// The read index of context `rs.ctx` is known: its reads wait for the
    /// apply to reach it.
    pub fn on_read_state(&mut self, rs: ReadState) {
        if let Some(batch) = self.reads_asked.remove(&rs.ctx) {
            self.reads_ready
                .extend(batch.into_iter().map(|r| (rs.index, r)));
        }
    }

    /// The reads of context `ctx` failed (leadership lost): they are
    /// returned for a `NotLeader` answer.
    pub fn on_read_failed(&mut self, ctx: u64) -> Vec<PendingRead> {
        self.reads_asked.remove(&ctx).unwrap_or_default()
    }

    /// (node, peer address) of every member in the replicated address book.
    pub fn address_book(&self) -> impl Iterator<Item = (u64, String)> + '_ {
        self.kv.members().iter().map(|(n, a)| (*n, a.clone()))
    }
}

/// Member `replica`'s role in `conf`: a voter of both configurations (or
/// of the only one), of the incoming or the outgoing one only while
/// joint (Raft thesis §4.3), or a learner (also a replica `conf` does not
/// name).
pub fn member_role(conf: &crate::raft::ConfState, replica: ReplicaId) -> crate::meta::ReplicaRole {
    use crate::meta::ReplicaRole;
    let joint = !conf.voters_outgoing.is_empty();
    let incoming = conf.voters.contains(&replica);
    let outgoing = conf.voters_outgoing.contains(&replica);
    match (incoming, outgoing) {
        (true, true) => ReplicaRole::Voter,
        (true, false) if joint => ReplicaRole::IncomingVoter,
        (true, false) => ReplicaRole::Voter,
        (false, true) => ReplicaRole::DemotingVoter,
        (false, false) => ReplicaRole::Learner,
    }
}
