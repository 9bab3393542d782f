//! The replicated state machine of each node: the node's own `kv::Kv`
//! inside its `group::Replica` (commands with exactly-once sessions, its
//! snapshot codec and digest), fed the committed entries by the node's own
//! apply; the checkers look at every entry before it is applied.

use super::*;

use crate::kv::KvLimits;

/// The key bytes of simulated key `k`.
pub(super) fn key_bytes(k: u64) -> [u8; 8] {
    k.to_le_bytes()
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
    /// Node `i` made a snapshot from its leader durable: its state machine
    /// restarts from it (`group::Replica::restore`); proposals it covers
    /// are answered into `answers`.
    pub(super) fn restore(
        &mut self,
        i: usize,
        snap: &Snapshot,
        dropped_log: bool,
        answers: &mut Vec<Answer>,
    ) {
        let n = &mut self.nodes[i];
        let rep = n.rep.as_mut().expect("up");
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
        self.check_state(i, snap.meta.index);
    }

    /// Takes a snapshot every `snapshot_every` applied entries.
    pub(super) fn maybe_snapshot(&mut self, i: usize) {
        let every = self.cfg.snapshot_every;
        let n = &mut self.nodes[i];
        let Some(rep) = n.rep.as_mut() else { return };
        let applied = rep.kv.applied();
        let current = rep.raft.snapshot().map_or(0, |s| s.meta.index);
        if every == 0 || applied < current + every {
            return;
        }
        let data = rep.kv.snapshot();
        rep.raft
            .compact(applied, data)
            .expect("applied index above the last snapshot");
        // Written and synced at once here; a real node writes it in the
        // background and then drops the covered log (`shard/snapshots.rs`).
        let snap = rep.raft.snapshot().cloned().expect("just taken");
        rep.snap_file_index = snap.meta.index;
        rep.lsns.release_through(snap.meta.index);
        n.store_snapshot(snap);
        if let Err(msg) = n.release_wal() {
            self.fail(msg);
        }
        self.report.snapshots_taken += 1;
    }

    /// State machine safety: node `i` is about to apply `committed`; one
    /// history of (term, digest) by index for every node.
    pub(super) fn note_applied(&mut self, i: usize, committed: &[Entry]) {
        for e in committed {
            let d = entry_digest(e);
            let k = (e.index - 1) as usize;
            if k < self.applied_history.len() {
                if self.applied_history[k] != (e.term, d) {
                    let msg = format!(
                        "state machine safety: node {} applied index {} term {} but another node applied term {}",
                        self.ids[i], e.index, e.term, self.applied_history[k].0
                    );
                    self.fail(msg);
                    return;
                }
            } else {
                debug_assert_eq!(k, self.applied_history.len());
                self.applied_history.push((e.term, d));
                self.report.committed += 1;
            }
        }
    }
}
