//! Compaction, and streaming snapshots to and from followers.

use super::*;

/// One `Body::Snapshot` message, unpacked.
pub(super) struct SnapshotChunk {
    pub meta: SnapshotMeta,
    pub conf: ConfState,
    pub offset: u64,
    pub total: u64,
    pub crc: u32,
    pub chunk: Bytes,
}

impl RawNode {
    // ---- snapshots ----

    /// The application took a snapshot of its state machine at `index`
    /// (applied, see `on_applied`): the log is compacted up to
    /// `index - compact_keep_entries`, and followers that need what was
    /// compacted get this snapshot.
    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<(), CompactError> {
        let crc = crc32fast::hash(&data);
        self.compact_with_crc(index, data, crc)
    }

    /// `compact`, given the CRC32 of `data` (computed off the executor
    /// for a large snapshot: the shard does it on a helper thread).
    pub fn compact_with_crc(
        &mut self,
        index: Index,
        data: Bytes,
        crc: u32,
    ) -> Result<(), CompactError> {
        self.catch_up();
        if index > self.applied_reported {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied_reported,
            });
        }
        let current = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if index <= current {
            return Err(CompactError::Stale { index, current });
        }
        let term = self
            .log
            .term(index)
            .expect("an applied index above the snapshot is in the log");
        let conf = self.conf_at(index);
        self.snapshot_bytes = data.len() as u64;
        self.snapshot = Some(Box::new(Snapshot {
            meta: SnapshotMeta { index, term },
            conf,
            data,
        }));
        self.snapshot_crc = crc;
        let upto = index.saturating_sub(self.cfg.compact_keep_entries);
        self.log.compact_to(upto);
        // Membership history before the compaction point folds into one base.
        let base = self.conf_at(upto);
        self.conf_history.retain(|(i, _)| *i > upto);
        self.conf_history.insert(0, (upto, base));
        Ok(())
    }

    /// What a snapshot of the state machine at `index` covers: its meta
    /// (the term of entry `index`) and the membership as of `index`, for
    /// a snapshot encoded elsewhere and given to `compact_with_crc` later.
    /// `None` if `index` is not applied, or at or below the latest
    /// snapshot (such a snapshot would be refused as stale).
    pub fn snapshot_meta_at(&mut self, index: Index) -> Option<(SnapshotMeta, ConfState)> {
        self.catch_up();
        let current = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if index > self.applied_reported || index <= current {
            return None;
        }
        let term = self.log.term(index)?;
        Some((SnapshotMeta { index, term }, self.conf_at(index)))
    }

    /// The lowest log index still held: storage may drop what is below it
    /// (the latest snapshot covers it).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The latest snapshot this node holds, if any. Its `data` is empty
    /// once the application stores it ([`RawNode::snapshot_stored`]).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref()
    }

    /// Length in bytes of the latest snapshot's data, held or stored.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |_| self.snapshot_bytes)
    }

    /// The application stores the data of snapshot `index`, the latest,
    /// durably and can read any part of it: the core lets its copy go
    /// (returned, for the caller to free where it costs nothing) and asks
    /// for the chunks it sends from then on ([`Ready::snapshot_reads`]).
    /// A large state machine's snapshot then costs no memory between
    /// sends (TiKV and CockroachDB also send snapshots from storage).
    /// `None` if `index` is not the latest snapshot or it was let go
    /// already. Followers being sent it keep their reference until done.
    pub fn snapshot_stored(&mut self, index: Index) -> Option<Bytes> {
        let s = self.snapshot.as_mut()?;
        if s.meta.index != index || s.data.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut s.data))
    }

    /// The application could not read a chunk of snapshot `index` for
    /// follower `to` (`SnapshotRead`): its file is gone or damaged. The
    /// follower's transfer starts over from the probe (it is sent the
    /// latest snapshot, or entries if it no longer needs one), instead of
    /// asking for the same unreadable chunk after every heartbeat.
    pub fn snapshot_read_failed(&mut self, to: ReplicaId, index: Index) {
        if self.role != Role::Leader {
            return;
        }
        let Some(i) = self.peer_idx(to) else { return };
        let p = &mut self.prs[i];
        if p.state == ProgressState::Snapshot
            && p.snapshot.as_ref().is_some_and(|s| s.meta.index == index)
        {
            p.become_probe();
        }
    }

    /// Whether a follower is being sent snapshot `index`: its data must
    /// stay readable (a newer snapshot does not cut a transfer short).
    pub fn snapshot_in_use(&self, index: Index) -> bool {
        self.role == Role::Leader
            && self.prs.iter().any(|p| {
                p.state == ProgressState::Snapshot
                    && p.snapshot.as_ref().is_some_and(|s| s.meta.index == index)
            })
    }

    /// Tells the leader how many bytes of snapshot `index` we hold.
    fn ack_chunk(&mut self, to: ReplicaId, index: Index, next_offset: u64) {
        self.send(to, self.term, Body::SnapshotAck { index, next_offset });
    }

    pub(super) fn handle_snapshot_chunk(&mut self, from: ReplicaId, c: SnapshotChunk) {
        let SnapshotChunk {
            meta,
            conf,
            offset,
            total,
            crc,
            chunk,
        } = c;
        if meta.index <= self.log.commit {
            // Older than what we hold: tell the leader where we are.
            self.incoming = None;
            let commit = self.log.commit;
            self.send_after_persist(
                from,
                Body::AppendResp {
                    reject: false,
                    index: commit,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        if total > self.cfg.snapshot_bytes_max {
            self.stats.messages_ignored += 1;
            return;
        }
        let fresh = self.incoming.as_ref().is_none_or(|inc| {
            inc.meta != meta || inc.leader_term != self.term || inc.total != total || inc.crc != crc
        });
        if fresh {
            // A newer snapshot (or another leader's) replaces a partial one;
            // it must be received from its start.
            if offset != 0 {
                self.incoming = None;
                self.ack_chunk(from, meta.index, 0);
                return;
            }
            self.incoming = Some(Box::new(Incoming {
                meta,
                total,
                crc,
                leader_term: self.term,
                buf: Vec::with_capacity(total.min(self.cfg.snapshot_chunk_bytes * 4) as usize),
                sum: crc32fast::Hasher::new(),
            }));
        }
        let inc = self.incoming.as_mut().expect("ensured above");
        if offset == inc.buf.len() as u64 && offset + chunk.len() as u64 <= total {
            inc.buf.extend_from_slice(&chunk);
            inc.sum.update(&chunk);
        }
        let have = inc.buf.len() as u64;
        if have < total {
            self.ack_chunk(from, meta.index, have);
            return;
        }
        let inc = self.incoming.take().expect("ensured above");
        if inc.sum.clone().finalize() != inc.crc {
            // Damaged in transit: start over.
            self.ack_chunk(from, meta.index, 0);
            return;
        }
        // Complete and intact: install it atomically, membership included.
        if !self.log.install(meta) {
            self.install_dropped_log = true;
        }
        self.set_conf(conf.clone());
        self.conf_history = vec![(meta.index, conf.clone())];
        let snap = Snapshot {
            meta,
            conf,
            data: Bytes::from(inc.buf),
        };
        let snap = Box::new(snap);
        self.snapshot_bytes = snap.data.len() as u64;
        self.snapshot = Some(snap.clone());
        self.snapshot_crc = inc.crc;
        self.snapshot_to_persist = Some(snap);
        self.ack_chunk(from, meta.index, total);
        // The install is acknowledged once durable, like appended entries.
        self.send_after_persist(
            from,
            Body::AppendResp {
                reject: false,
                index: meta.index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }
}
