//! The replicated state machine of each node: the node's own `kv::Kv`
//! inside its `group::Replica` (commands with exactly-once sessions, its
//! snapshot codec and digest), fed the committed entries by the node's own
//! apply; the checkers look at every entry before it is applied.

use super::*;

use crate::kv::KvLimits;

/// The key bytes of simulated key `k`.
pub(super) fn key_bytes(k: u64) -> [u8; 8] {
    // Big-endian: keys sort as their numbers, so ranges split at a key
    // hold the numbers below it and above it.
    k.to_be_bytes()
}

/// Small session bounds, so that the sweep reaches them (outcomes
/// forgotten, sessions dropped).
pub(super) fn kv_limits() -> KvLimits {
    KvLimits {
        sessions_max: 64,
        session_idle_entries: 100_000,
        session_results_max: 16,
    }
}

impl Sim {
    /// Node `i`'s replica of group `g` made a snapshot from its leader
    /// durable: its state machine
    /// restarts from it (`group::Replica::restore`); proposals it covers
    /// are answered into `answers`.
    pub(super) fn restore(
        &mut self,
        i: usize,
        g: GroupId,
        snap: &Snapshot,
        dropped_log: bool,
        answers: &mut Vec<Answer>,
    ) {
        let n = &mut self.nodes[i];
        let rep = n.group_mut(g).rep.as_mut().expect("up");
        assert!(
            snap.meta.index > rep.kv.applied(),
            "a snapshot moves the state machine forward"
        );
        // A membership without this replica (removed) changes nothing
        // here: the node keeps it until a newer one replaces it.
        rep.restore(snap, dropped_log, kv_limits(), true, answers)
            .unwrap_or_else(|e| panic!("a snapshot taken by a node does not restore: {}", e.0));
        assert_eq!(
            rep.kv.applied(),
            snap.meta.index,
            "the snapshot's own applied index"
        );
        if let Err(msg) = n.release_wal() {
            self.fail(msg);
        }
        self.report.snapshots_installed += 1;
        self.check_state(i, g, snap.meta.index);
    }

    /// Takes a snapshot every `snapshot_every` applied entries, as a
    /// shard does (`shard/snapshots.rs`): a view of the state machine at
    /// its applied index now, its file written after a disk latency
    /// (`Event::SnapshotWritten`) while the node goes on applying, and
    /// the core compacted only then. One at a time.
    pub(super) fn maybe_snapshot(&mut self, i: usize, g: GroupId) {
        self.take_snapshot(i, g, self.cfg.snapshot_every);
    }

    /// A snapshot of node `i`'s replica of `g` now, if it applied
    /// anything since its last and none is being written: the leader's
    /// seed for a new learner (`RawNode::add_learner` refuses
    /// `NoSnapshot` without one), as the shard's `snapshot_to_seed`.
    pub(super) fn snapshot_to_seed(&mut self, i: usize, g: GroupId) {
        self.take_snapshot(i, g, 1);
    }

    /// A snapshot once `every` entries were applied since the last (0:
    /// never).
    fn take_snapshot(&mut self, i: usize, g: GroupId, every: u64) {
        let n = &mut self.nodes[i];
        let (incarnation, store) = (n.incarnation, n.store);
        let slot = n.group_mut(g);
        let Some(rep) = slot.rep.as_mut() else { return };
        let applied = rep.kv.applied();
        let current = rep.raft.snapshot().map_or(0, |s| s.meta.index);
        if slot.snap_writing || every == 0 || applied < current + every {
            return;
        }
        let Some((meta, conf)) = rep.raft.snapshot_meta_at(applied) else {
            return;
        };
        let snap = Snapshot {
            meta,
            conf,
            data: rep.kv.clone().snapshot(),
        };
        slot.snap_writing = true;
        let replica = slot.replica;
        let lat = self.rng.range(self.disk_ms.0, 4 * self.disk_ms.1);
        self.schedule(
            lat,
            Event::SnapshotWritten(SnapshotWrite {
                node: i,
                group: g,
                incarnation,
                store,
                replica,
                snap,
            }),
        );
    }

    /// Node `i`'s snapshot file is written. If the node crashed meanwhile
    /// (and is still down) the write may have finished first (then its file is on disk, the
    /// core never compacted to it, and the WAL still holds everything
    /// after the snapshot before it: a restart trusts the file's own
    /// index) or not. Otherwise the core compacts to it unless a newer
    /// snapshot from the leader was installed meanwhile (then it is
    /// dropped, as the shard removes its file).
    pub(super) fn snapshot_written(&mut self, w: SnapshotWrite) {
        let SnapshotWrite {
            node: i,
            group: g,
            incarnation,
            store,
            replica,
            snap,
        } = w;
        let n = &mut self.nodes[i];
        if n.store != store || n.group(g).replica != replica {
            // A wiped disk, or another replica of the group since.
            return;
        }
        if n.incarnation != incarnation {
            // Decided while the node is down; a write never lands in a
            // later incarnation.
            if n.incarnation == incarnation + 1 && !n.up() && self.rng.below(2) == 0 {
                self.nodes[i].group_mut(g).store_snapshot(snap);
                self.report.snapshots_written_at_crash += 1;
            }
            return;
        }
        let slot = n.group_mut(g);
        slot.snap_writing = false;
        let Some(rep) = slot.rep.as_mut() else { return };
        let index = snap.meta.index;
        let crc = crc32fast::hash(&snap.data);
        if rep
            .raft
            .compact_with_crc(index, snap.data.clone(), crc)
            .is_err()
        {
            return;
        }
        rep.snap_file_index = index;
        rep.lsns.release_through(index);
        slot.store_snapshot(snap);
        if let Err(msg) = n.release_wal() {
            self.fail(msg);
        }
        self.report.snapshots_taken += 1;
    }

    /// State machine safety: node `i` is about to apply `committed`; one
    /// history of (term, digest) by index for every node.
    pub(super) fn note_applied(&mut self, i: usize, g: GroupId, committed: &[Entry]) {
        let c = self.checks.get_mut(&g).expect("checked group");
        let (base, history) = (c.base, &mut c.applied_history);
        for e in committed {
            let d = entry_digest(e);
            let k = (e.index - base - 1) as usize;
            if k < history.len() {
                if history[k] != (e.term, d) {
                    let msg = format!(
                        "state machine safety: node {} group {g} applied index {} term {} but another node applied term {}",
                        self.ids[i], e.index, e.term, history[k].0
                    );
                    self.fail(msg);
                    return;
                }
            } else {
                debug_assert_eq!(k, history.len());
                history.push((e.term, d));
                self.report.committed += 1;
            }
        }
    }
}
