//! The replicated KV map of each node: applying entries, snapshots of it, restoring from them.

use super::*;

/// Filler in every snapshot, so that snapshots span several chunks.
pub(super) const SNAPSHOT_FILLER_BYTES: usize = 300;

pub(super) fn encode_kv(kv: &BTreeMap<u64, u64>) -> Bytes {
    let mut b = Vec::with_capacity(kv.len() * 16 + SNAPSHOT_FILLER_BYTES);
    for (k, v) in kv {
        b.extend_from_slice(&k.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend((0..SNAPSHOT_FILLER_BYTES).map(|i| 0xF0 ^ (i as u8)));
    Bytes::from(b)
}

pub(super) fn decode_kv(b: &[u8]) -> BTreeMap<u64, u64> {
    let n = (b.len() - SNAPSHOT_FILLER_BYTES) / 16;
    (0..n)
        .map(|i| {
            let k = u64::from_le_bytes(b[i * 16..i * 16 + 8].try_into().unwrap());
            let v = u64::from_le_bytes(b[i * 16 + 8..i * 16 + 16].try_into().unwrap());
            (k, v)
        })
        .collect()
}

pub(super) fn kv_digest(kv: &BTreeMap<u64, u64>) -> u64 {
    let mut h = DefaultHasher::new();
    kv.hash(&mut h);
    h.finish()
}

impl Sim {
    /// Node `i` installed a snapshot from its leader: restore from it.
    pub(super) fn restore(&mut self, i: usize, snap: Snapshot) {
        let n = &mut self.nodes[i];
        assert!(
            snap.meta.index > n.applied,
            "a snapshot moves the state machine forward"
        );
        n.kv = decode_kv(&snap.data);
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
        let data = encode_kv(&n.kv);
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
            if e.kind != EntryKind::Normal {
                continue;
            }
            let Some(cmd) = decode_cmd(&e.data) else {
                continue;
            };
            let result = self.nodes[i].kv.get(&cmd.key).copied();
            if cmd.put {
                self.nodes[i].kv.insert(cmd.key, cmd.value);
            }
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
