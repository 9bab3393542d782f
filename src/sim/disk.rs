//! A node's simulated disk and lifecycle: the WAL records and snapshot it
//! holds (written through the node's own `storage` codec and `GroupLog`),
//! writes completing in batches with a seeded latency, crashes that tear
//! the batch under way, and restarts through the node's own recovery
//! (`group::Replica::recover`), checked against what the core had been
//! told was durable.

use super::*;

impl SimNode {
    /// Forgets everything on its disk for the group: snapshot, WAL records,
    /// what the group needed of them and what was durable (a wiped disk,
    /// or a replica destroyed to make room for a newer one).
    pub(super) fn erase_storage(&mut self) {
        debug_assert!(self.rep.is_none(), "storage erased under a live replica");
        self.disk_snapshot = None;
        self.wal.clear();
        self.durable_hs = HardState::default();
        self.crash_persisted = None;
    }

    /// Makes snapshot `s` durable (the latest on disk wins).
    pub(super) fn store_snapshot(&mut self, s: Snapshot) {
        if self
            .disk_snapshot
            .as_ref()
            .is_none_or(|d| d.meta.index < s.meta.index)
        {
            self.disk_snapshot = Some(s);
        }
    }

    /// Drops the durable records before the lowest LSN the replica needs
    /// (`GroupLog::needed_lsn`; the WAL drops whole segments, here whole
    /// records: finer, so a wrong release point shows sooner).
    pub(super) fn release_wal(&mut self) {
        let Some(rep) = &self.rep else { return };
        let needed = rep.lsns.needed_lsn();
        let n = self.wal.partition_point(|(l, _)| *l < needed);
        self.wal.drain(..n);
    }

    /// The core of the replica, if the node is up.
    pub(super) fn raft(&self) -> Option<&RawNode> {
        self.rep.as_ref().map(|r| &r.raft)
    }

    pub(super) fn raft_mut(&mut self) -> Option<&mut RawNode> {
        self.rep.as_mut().map(|r| &mut r.raft)
    }

    /// The replica's state machine (the node must be up).
    pub(super) fn kv(&self) -> &crate::kv::Kv {
        &self.rep.as_ref().expect("up").kv
    }

    /// The index the state machine applied through (0 when down).
    pub(super) fn applied(&self) -> Index {
        self.rep.as_ref().map_or(0, |r| r.kv.applied())
    }

    /// After a restart from disk: what the core had been told was durable
    /// before the crash and is not there now (entries it reported
    /// persisted, its hard state), if anything.
    pub(super) fn durability_lost(&mut self, hs: &HardState, snap_index: Index) -> Option<String> {
        let crash_persisted = self.crash_persisted.take();
        let r = self.raft().expect("just restarted");
        if let Some((p, t)) = crash_persisted {
            let kept = p <= snap_index || t.is_some_and(|t| r.log().term(p) == Some(t));
            if !kept {
                return Some(format!(
                    "restarted without entry {p} (term {t:?}) that it had reported persisted: \
                     its log ends at {} (snapshot {snap_index})",
                    r.last_index()
                ));
            }
        }
        let d = self.durable_hs;
        if hs.term < d.term || (hs.term == d.term && hs.vote != d.vote) {
            return Some(format!(
                "restarted with term {} vote {} but term {} vote {} was durable",
                hs.term, hs.vote, d.term, d.vote
            ));
        }
        None
    }

    /// The WAL records of one Ready, as the shard writes them: the hard
    /// state and entries split by `storage::split_records`,
    /// encoded by `storage::encode_record` (group 0), each noted in `lsns`
    /// at submit.
    pub(super) fn encode_records(
        &mut self,
        hs: Option<HardState>,
        entries: &[Entry],
        record_bytes_max: usize,
    ) -> Vec<(u64, Bytes)> {
        use crate::storage::{encode_record, record_bytes, split_records};
        let mut out = Vec::new();
        for (hs, chunk) in split_records(hs, entries, record_bytes_max) {
            let mut b = vec![0u8; record_bytes(hs.is_some(), chunk)];
            encode_record(&mut b, 0, hs.as_ref(), chunk);
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            let rep = self.rep.as_mut().expect("up");
            rep.lsns.note_record(lsn, hs, chunk);
            out.push((lsn, Bytes::from(b)));
        }
        out
    }

    /// The durable records replayed as the node does at start
    /// (`storage::decode_record`, `GroupLog::apply`, then
    /// `GroupLog::take_restart`): (hard state, entries, applied index) and
    /// the log that tracks what the WAL must keep.
    pub(super) fn replay(&self) -> (crate::storage::Restart, GroupLog) {
        let mut log = GroupLog::default();
        for (lsn, b) in &self.wal {
            let r = crate::storage::decode_record(*lsn, b)
                .unwrap_or_else(|e| panic!("sim disk: a record written here does not decode: {e}"));
            log.apply(*lsn, r);
        }
        let snap = self
            .disk_snapshot
            .as_ref()
            .map(|s| (s.meta.index, s.meta.term));
        let restart = log.take_restart(snap);
        (restart, log)
    }
}

/// A write not yet durable: the WAL records of what the Ready asked for
/// (encoded by `storage::encode_record`, LSNs handed out at submit).
pub(super) struct PendingWrite {
    pub(super) token: PersistToken,
    /// The hard state in the first record, if any.
    pub(super) hs: Option<HardState>,
    pub(super) records: Vec<(u64, Bytes)>,
    pub(super) after: Vec<Message>,
}

pub(super) struct SimNode {
    /// The node's own `group::Replica` (Raft core, state machine, client
    /// waiters, read queues, routes, what it needs of the WAL), while up.
    pub(super) rep: Option<Replica>,
    /// The id of the replica this node hosts (`hosted`), or a placeholder
    /// no group ever allocates (`PLACEHOLDER_REPLICA - i`) for a node
    /// outside the group that hosts none yet. Durable, like the catalog:
    /// a replica is created (from its leader's seeding snapshot,
    /// `group::creates_replica`) before anything is stepped into it.
    pub(super) replica: ReplicaId,
    pub(super) hosted: bool,
    pub(super) incarnation: u64,
    /// The store incarnation (1, then one more per wiped disk).
    pub(super) store: u64,
    /// Whether its disk was wiped in this run.
    pub(super) lost: bool,
    /// Kept down by a scripted scenario until `Sim::start`.
    pub(super) held: bool,
    /// The durable state, which survives crashes: the latest snapshot and
    /// the WAL's records (LSN, payload) after the release point.
    pub(super) disk_snapshot: Option<Snapshot>,
    pub(super) wal: Vec<(u64, Bytes)>,
    /// The LSN the next record gets (after a crash: the one after the last
    /// durable record, as the WAL's open does).
    pub(super) next_lsn: u64,
    /// The latest hard state in a durable record (what a restart must
    /// find again, or a later one).
    pub(super) durable_hs: HardState,
    /// At a crash: the core's persisted index and its term, checked
    /// against the log replayed at restart.
    pub(super) crash_persisted: Option<(Index, Option<Term>)>,
    pub(super) writes: VecDeque<PendingWrite>,
    /// Writes in the batch under way (0: the disk is idle). Like the WAL,
    /// the disk takes every queued write as one batch with one latency.
    pub(super) batch_len: usize,
    /// Read contexts handed out (one per read index asked).
    pub(super) next_ctx: u64,
    /// This incarnation's tick period (clock drift between nodes).
    pub(super) tick_ms: u64,
    /// Ticks from the node's clock (None until its first tick event of
    /// this incarnation, so the cadence of its tick events is kept).
    pub(super) clock: Option<crate::group::clock::TickClock>,
    /// Paused until this time (ms): the process runs nothing meanwhile.
    pub(super) paused_until: Option<u64>,
}

impl Sim {
    /// Starts node `i` from what its disk holds, through the node's own
    /// recovery (`group::Replica::recover`).
    pub(super) fn start_node(&mut self, i: usize) {
        let cfg = self.node_cfg(i);
        let n = &mut self.nodes[i];
        let (restart, log) = n.replay();
        let (hs, snap_index) = (restart.hs, restart.applied);
        let rep = Replica::recover(
            SIM_GROUP,
            cfg,
            restart,
            log,
            n.disk_snapshot.clone(),
            state_machine::kv_limits(),
        )
        .unwrap_or_else(|e| panic!("sim disk: a durable snapshot does not restore: {}", e.0));
        n.rep = Some(rep);
        n.next_lsn = n.wal.last().map_or(n.next_lsn, |(l, _)| l + 1);
        let lost = n.durability_lost(&hs, snap_index);
        n.durable_hs = hs;
        let j = self.cfg.tick_jitter_ms;
        n.tick_ms = self.cfg.tick_ms - j + self.rng.below(2 * j + 1);
        n.writes.clear();
        n.batch_len = 0;
        n.clock = None;
        n.paused_until = None;
        if let Some(what) = lost {
            let msg = format!("durability: node {} {what}", self.ids[i]);
            self.fail(msg);
        }
    }

    pub(super) fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.rep.is_none() {
            return;
        }
        // What was not reported persisted is lost, except a prefix of the
        // batch being written (the WAL makes records durable in LSN order;
        // the crash tears the batch at a seeded record).
        let batch = n.batch_len;
        let writes: Vec<PendingWrite> = n.writes.drain(..batch).collect();
        // What the core was told is durable must survive: checked at restart.
        let r = n.raft().expect("checked");
        let p = r.persisted_index();
        n.crash_persisted = Some((p, r.log().term(p)));
        let total: usize = writes.iter().map(|w| w.records.len()).sum();
        let mut keep = self.rng.below(total as u64 + 1) as usize;
        let n = &mut self.nodes[i];
        for w in writes {
            let k = keep.min(w.records.len());
            if k > 0 {
                if let Some(h) = w.hs {
                    n.durable_hs = h;
                }
            }
            n.wal.extend(w.records.into_iter().take(k));
            keep -= k;
        }
        n.rep = None;
        n.incarnation += 1;
        n.writes.clear();
        n.batch_len = 0;
        self.report.crashes += 1;
        let after = self.rng.range(50, 1500);
        self.schedule(after, Event::Restart(i));
    }

    pub(super) fn start_disk_batch(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.batch_len > 0 || n.writes.is_empty() {
            return;
        }
        n.batch_len = n.writes.len();
        let inc = n.incarnation;
        let lat = self.rng.range(self.disk_ms.0, self.disk_ms.1);
        self.schedule(
            lat,
            Event::PersistDone {
                node: i,
                incarnation: inc,
            },
        );
    }

    pub(super) fn persist_done(&mut self, i: usize, incarnation: u64) {
        if self.nodes[i].incarnation != incarnation || self.nodes[i].rep.is_none() {
            return;
        }
        let k = std::mem::take(&mut self.nodes[i].batch_len);
        let mut last_token = None;
        let mut after = Vec::new();
        for _ in 0..k {
            let w = self.nodes[i]
                .writes
                .pop_front()
                .expect("batch within queue");
            let n = &mut self.nodes[i];
            if let Some(&(lsn, _)) = w.records.last() {
                n.rep.as_mut().expect("checked").lsns.note_durable(lsn);
            }
            if let Some(h) = w.hs {
                n.durable_hs = h;
            }
            n.wal.extend(w.records);
            last_token = Some(w.token);
            after.extend(w.after);
        }
        if let Some(t) = last_token {
            let rep = self.nodes[i].rep.as_mut().expect("checked");
            rep.raft.on_persisted(t);
        }
        // The node releases its WAL now and then (and after snapshots):
        // here after every batch, so a wrong release point shows sooner.
        self.nodes[i].release_wal();
        for m in after {
            self.send(i, m);
        }
        self.start_disk_batch(i);
        self.drive(i);
    }
}
