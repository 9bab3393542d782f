//! One Ready of a replica, in two steps around the I/O, without I/O.
//!
//! [`Replica::take_ready`] pulls the core's Ready and splits it: what
//! needs I/O ([`ReadyIo`]: messages to send now, a snapshot to make durable
//! before anything after it, the hard state and entries to append) and the
//! rest ([`ReadyRest`]). The caller carries out the I/O (the shard on its
//! WAL and snapshot files, the simulator on its simulated disk), restores
//! the state machine from the snapshot once its file is durable
//! ([`Replica::restore`]), and then finishes the Ready
//! ([`Replica::finish_ready`]): committed entries applied, client waiters
//! answered, read indexes noted and the reads they confirm served. What is
//! left is to report persistence ([`Finished::token`]) and send the
//! messages held for durability ([`Finished::persisted_messages`]) once the
//! appended records are durable.
//!
//! The order is the one raft-rs and etcd/raft ask of a Ready: messages may
//! go at once; a snapshot is durable before the records that follow it;
//! committed entries are applied after the snapshot is restored; a vote or
//! an acknowledgement leaves only once what it promises is durable.

use crate::kv::{Kv, KvLimits};
use crate::raft::{
    Entry, HardState, Message, PersistToken, ReadState, Snapshot, SnapshotMeta, SnapshotRead,
    SoftState,
};
use crate::wire::ClientError;

use super::{Answer, Applied, Replica};

/// The part of a Ready that asks for I/O.
#[derive(Debug)]
pub struct ReadyIo {
    /// Role, leader or term changed (for logging).
    pub soft_state: Option<SoftState>,
    /// Send now (before anything is durable).
    pub messages: Vec<Message>,
    /// Snapshot chunks to read from the snapshot's file, then send now
    /// (`raft::SnapshotRead`).
    pub snapshot_reads: Vec<SnapshotRead>,
    /// From the leader: durable before `hard_state` and `entries`, then
    /// [`Replica::restore`] before [`Replica::finish_ready`].
    pub snapshot: Option<Snapshot>,
    /// With `snapshot`: the install dropped the whole log
    /// (`raft::Ready::snapshot_dropped_log`); pass it to
    /// [`Replica::restore`].
    pub snapshot_dropped_log: bool,
    /// To append, by the node's policy (`HardState::to_write`: a commit
    /// index alone rides along with the next record).
    pub hard_state: Option<HardState>,
    /// To append, after the snapshot if any.
    pub entries: Vec<Entry>,
}

impl ReadyIo {
    /// Whether there are records to append.
    pub fn has_records(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty()
    }
}

/// The rest of a Ready, finished by [`Replica::finish_ready`] once its I/O
/// is submitted (and its snapshot, if any, restored).
#[derive(Debug)]
pub struct ReadyRest {
    token: PersistToken,
    persisted_messages: Vec<Message>,
    committed: Vec<Entry>,
    read_states: Vec<ReadState>,
    reads_failed: Vec<u64>,
}

impl ReadyRest {
    /// The committed entries it applies (consecutive, from the next index
    /// to apply), for a checker that looks at them first.
    pub fn committed(&self) -> &[Entry] {
        &self.committed
    }

    /// The read indexes it confirms, for a checker's own reads.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// The read contexts that failed.
    pub fn reads_failed(&self) -> &[u64] {
        &self.reads_failed
    }
}

/// What finishing a Ready leaves for after its records are durable.
#[derive(Debug)]
pub struct Finished {
    /// Reported to the core (`RawNode::on_persisted`) once durable.
    pub token: PersistToken,
    /// Sent once durable (votes, acknowledgements).
    pub persisted_messages: Vec<Message>,
    /// What applying produced besides client answers.
    pub applied: Applied,
    /// The membership now in force no longer names this replica: it was
    /// removed (`Replica::note_membership`), and is destroyed by its host.
    pub removed: bool,
}

/// Why a snapshot from the leader could not be restored.
#[derive(Debug)]
pub struct RestoreError(pub String);

impl Replica {
    /// Pulls the core's Ready (call only when `raft.has_ready()`), split
    /// into its I/O and the rest.
    pub fn take_ready(&mut self) -> (ReadyIo, ReadyRest) {
        let rd = self.raft.ready();
        let hard_state = HardState::to_write(
            &self.lsns.hs,
            rd.hard_state,
            self.raft.hard_state(),
            !rd.entries.is_empty(),
        );
        let token = rd.token();
        (
            ReadyIo {
                soft_state: rd.soft_state,
                messages: rd.messages,
                snapshot_reads: rd.snapshot_reads,
                snapshot: rd.snapshot,
                snapshot_dropped_log: rd.snapshot_dropped_log,
                hard_state,
                entries: rd.entries,
            },
            ReadyRest {
                token,
                persisted_messages: rd.persisted_messages,
                committed: rd.committed,
                read_states: rd.read_states,
                reads_failed: rd.reads_failed,
            },
        )
    }

    /// The state machine restarts from `snap`, a snapshot from the leader
    /// (a Ready's [`ReadyIo::snapshot`]); `dropped_log`: the install
    /// dropped the whole Raft log ([`ReadyIo::snapshot_dropped_log`]);
    /// `durable`: its file is written (false with a full disk: the state
    /// machine still moves, as the snapshot is committed state, and a
    /// restart starts from what is on disk). Proposals it covers are answered "outcome unknown" into
    /// `answers`. Returns whether its membership no longer names this
    /// replica (removed).
    ///
    /// Errors: the snapshot's data is not a state machine this code wrote.
    pub fn restore(
        &mut self,
        snap: &Snapshot,
        dropped_log: bool,
        limits: KvLimits,
        durable: bool,
        answers: &mut Vec<Answer>,
    ) -> Result<bool, RestoreError> {
        let kv = Kv::restore(&snap.data, limits).map_err(|e| RestoreError(e.to_string()))?;
        Ok(self
            .restore_decoded(snap.meta, kv, dropped_log, durable, answers)
            .0)
    }

    /// [`Replica::restore`] with the snapshot's state machine already
    /// decoded from its data (`kv`; the shard decodes a large one on a
    /// helper thread, so its executor never spends the time). Returns
    /// whether the replica was removed, and the state machine it held
    /// before (the caller may free it elsewhere).
    pub fn restore_decoded(
        &mut self,
        snap_meta: SnapshotMeta,
        kv: Kv,
        dropped_log: bool,
        durable: bool,
        answers: &mut Vec<Answer>,
    ) -> (bool, Kv) {
        let before = std::mem::replace(&mut self.kv, kv);
        if !self.kv.bounds().known && before.bounds().known {
            // A snapshot of a format without key bounds (written before
            // them, by a single-group cluster): the keys are what they were.
            self.kv.set_bounds(before.bounds().clone());
        }
        if durable {
            self.snap_file_index = snap_meta.index;
            self.lsns.release_through(snap_meta.index);
            // Replay must drop what the install dropped: the group's next
            // write starts with an install marker (`storage` format). An
            // install that kept the entries after the snapshot writes none:
            // replay keeps them as the core did, even once the records up
            // to the snapshot are released (a marker there dropped entries
            // acknowledged before the install: simulator, 5 nodes, seed 171
            // with quiescence).
            if dropped_log {
                self.lsns.install_pending = Some((snap_meta.index, snap_meta.term));
            }
        }
        self.skip_to_snapshot(snap_meta.index, answers);
        (self.note_membership(), before)
    }

    /// Finishes a Ready whose I/O is submitted: applies its committed
    /// entries (answers of the proposals they settle into `answers`),
    /// notes its read indexes, answers its failed reads `NotLeader`, and
    /// serves the reads the apply has reached (scans bounded by
    /// `scan_limit_max` pairs).
    pub fn finish_ready(
        &mut self,
        rest: ReadyRest,
        scan_limit_max: u32,
        answers: &mut Vec<Answer>,
    ) -> Finished {
        let ReadyRest {
            token,
            persisted_messages,
            committed,
            read_states,
            reads_failed,
        } = rest;
        let applied = self.apply(&committed, answers);
        let removed = applied.conf_changed && self.note_membership();
        for rs in read_states {
            self.on_read_state(rs);
        }
        if !reads_failed.is_empty() {
            let leader = self.leader_node();
            for ctx in reads_failed {
                for p in self.on_read_failed(ctx) {
                    answers.push((p.conn, p.req.id, Err(ClientError::NotLeader { leader })));
                }
            }
        }
        self.serve_ready_reads(scan_limit_max, answers);
        Finished {
            token,
            persisted_messages,
            applied,
            removed,
        }
    }

    /// Answers the confirmed reads the apply has reached into `answers`.
    pub fn serve_ready_reads(&mut self, scan_limit_max: u32, answers: &mut Vec<Answer>) {
        let applied = self.kv.applied();
        let mut i = 0;
        while i < self.reads_ready.len() {
            if self.reads_ready[i].0 <= applied {
                let p = self.reads_ready.swap_remove(i).1;
                answers.push((p.conn, p.req.id, self.read_now(&p.req, scan_limit_max)));
            } else {
                i += 1;
            }
        }
    }
}
