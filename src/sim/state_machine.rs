//! The replicated state machine of each node: the node's own `kv::Kv`
//! (commands with exactly-once sessions, its snapshot codec and digest),
//! fed the committed entries; the workload's reads through the log are
//! entries of the simulator's own that the map skips.

use super::*;

use crate::kv::{Command, Kv, KvLimits};

/// The key bytes of simulated key `k`.
pub(super) fn key_bytes(k: u64) -> [u8; 8] {
    k.to_le_bytes()
}

/// The simulated value stored under `key` in `kv`.
pub(super) fn value_of(kv: &Kv, key: u64) -> Option<u64> {
    kv.get(&key_bytes(key)).map(|b| {
        u64::from_le_bytes(
            b[..]
                .try_into()
                .expect("the simulator writes 8-byte values"),
        )
    })
}

/// A node's state machine with small session bounds, so that the sweep
/// reaches them (outcomes forgotten, sessions dropped).
pub(super) fn new_kv() -> Kv {
    Kv::new(kv_limits())
}

pub(super) fn kv_limits() -> KvLimits {
    KvLimits {
        sessions_max: 64,
        session_idle_entries: 100_000,
        session_results_max: 16,
    }
}

impl Sim {
    /// Node `i` installed a snapshot from its leader: restore from it.
    pub(super) fn restore(&mut self, i: usize, snap: Snapshot) {
        let n = &mut self.nodes[i];
        assert!(
            snap.meta.index > n.applied,
            "a snapshot moves the state machine forward"
        );
        n.kv = Kv::restore(&snap.data, kv_limits())
            .unwrap_or_else(|e| panic!("a snapshot taken by a node does not restore: {e}"));
        assert_eq!(
            n.kv.applied(),
            snap.meta.index,
            "the snapshot's own applied index"
        );
        n.applied = snap.meta.index;
        self.report.snapshots_installed += 1;
        self.check_state(i, snap.meta.index);
    }

    /// Takes a snapshot every `snapshot_every` applied entries.
    pub(super) fn maybe_snapshot(&mut self, i: usize) {
        let every = self.cfg.snapshot_every;
        let n = &mut self.nodes[i];
        let Some(r) = n.raft.as_mut() else { return };
        let current = r.snapshot().map_or(0, |s| s.meta.index);
        if every == 0 || n.applied < current + every {
            return;
        }
        let data = n.kv.snapshot();
        r.compact(n.applied, data)
            .expect("applied index above the last snapshot");
        // Written and synced at once here; a real node writes it in the
        // background and then drops the covered log.
        let snap = r.snapshot().cloned().expect("just taken");
        n.store_snapshot(snap);
        self.report.snapshots_taken += 1;
    }

    pub(super) fn apply(&mut self, i: usize, committed: Vec<Entry>) {
        for e in committed {
            let n = &mut self.nodes[i];
            assert_eq!(e.index, n.applied + 1, "committed entries come in order");
            n.applied = e.index;
            let d = entry_digest(&e);
            // State machine safety: one history for every node.
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
            let n = &mut self.nodes[i];
            // A write (the node's command), a read through the log (the
            // simulator's own payload), or an entry the map only counts.
            let (cmd, result) = match (e.kind, Command::decode(&e.data)) {
                (EntryKind::Normal, Some(c)) => {
                    // Refused (`SessionExpired`) only for an entry of an
                    // op its client gave up on: never the one it waits for
                    // (checked below).
                    let applied = n.kv.apply(e.index, &c).is_ok();
                    (workload::sim_cmd_of(&c).filter(|_| applied), None)
                }
                (EntryKind::Normal, None) => {
                    n.kv.skip(e.index);
                    match decode_cmd(&e.data) {
                        Some(cmd) => {
                            let v = value_of(&n.kv, cmd.key);
                            (Some(cmd), v)
                        }
                        None => (None, None),
                    }
                }
                _ => {
                    n.kv.skip(e.index);
                    (None, None)
                }
            };
            let Some(cmd) = cmd else {
                continue;
            };
            // Answer the client if it proposed this very entry here.
            let c = &self.clients[cmd.client];
            if c.op_id == cmd.op {
                if let Some((node, inc, idx, term)) = c.proposed {
                    if node == i
                        && inc == self.nodes[i].incarnation
                        && idx == e.index
                        && term == e.term
                    {
                        self.client_done(
                            cmd.client,
                            if cmd.put { None } else { Some(result) },
                            (idx, term, d),
                        );
                    }
                }
            }
        }
        // Entries the client proposed that were overwritten: definitely not applied.
        for c in 0..self.clients.len() {
            if let Some((node, inc, idx, term)) = self.clients[c].proposed {
                if node == i && inc == self.nodes[i].incarnation && self.nodes[i].applied >= idx {
                    let r = self.nodes[i].raft.as_ref().expect("up");
                    if r.log().term(idx).is_some_and(|t| t != term) {
                        self.client_failed(c);
                    }
                }
            }
        }
    }
}
