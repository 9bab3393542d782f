//! Log replication: AppendEntries out and in, progress, commit.

use super::*;

impl RawNode {
    pub(super) fn handle_append(
        &mut self,
        from: ReplicaId,
        mut prev_index: Index,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        commit: Index,
    ) {
        if self.unseeded() {
            // Joining with no membership known yet: entries cannot be
            // applied without it. Ask for the snapshot that seeds us.
            self.send_after_persist(
                from,
                Body::AppendResp {
                    reject: true,
                    index: prev_index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        // Entries at or below our commit are known to match: skip them.
        if prev_index < self.log.commit {
            let skip = ((self.log.commit - prev_index) as usize).min(entries.len());
            entries.drain(..skip);
            prev_index = self.log.commit;
            prev_term = self.log.term(prev_index).expect("commit within log");
            if let Some(f) = entries.first() {
                debug_assert_eq!(f.index, prev_index + 1);
            }
        }
        if !self.log.matches(prev_index, prev_term) {
            let (hint_index, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term);
            self.send_after_persist(
                from,
                Body::AppendResp {
                    reject: true,
                    index: prev_index,
                    hint_index,
                    hint_term,
                },
            );
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        if !entries.is_empty() {
            self.log.merge(&entries);
        }
        // Only what this message proved we hold may become committed here.
        let c = commit.min(last_new);
        if c > self.log.commit {
            self.log.commit = c;
        }
        // Ack only after persistence: the leader counts this as a replica.
        self.send_after_persist(
            from,
            Body::AppendResp {
                reject: false,
                index: last_new,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    pub(super) fn handle_append_resp(
        &mut self,
        from: ReplicaId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let i = self.peer_idx(from).expect("checked in step");
        self.prs[i].recent_active = true;
        if reject {
            let match_hint = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            let has_snapshot = self.snapshot.is_some();
            let p = &mut self.prs[i];
            if hint_index == 0 && has_snapshot && p.state != ProgressState::Snapshot {
                // An empty follower (a joining node among them): seed it
                // with the snapshot rather than the log from its start.
                p.seed = true;
            }
            if p.maybe_decr_to(index, match_hint) && p.state == ProgressState::Replicate {
                p.become_probe();
            }
            return;
        }
        let p = &mut self.prs[i];
        let updated = p.maybe_update(index);
        match p.state {
            // The probe was answered (even if it taught us no new match):
            // the logs agree through `index`; pipeline from here.
            ProgressState::Probe if updated || p.match_ == index => p.become_replicate(),
            ProgressState::Replicate => p.inflight.free_le(index),
            ProgressState::Probe => {}
            ProgressState::Snapshot => {
                let snap_index = p.snapshot.as_ref().map_or(0, |s| s.meta.index);
                if p.match_ >= snap_index {
                    // Installed (or it had caught up otherwise): probe from there.
                    p.become_probe();
                }
            }
        }
        if updated {
            self.maybe_commit();
        }
    }

    /// Leader: commit the highest index replicated on a quorum, if it is of
    /// the current term (Figure 8: earlier-term entries commit only through it).
    pub(super) fn maybe_commit(&mut self) {
        let q = self.conf.quorum_value(|id| {
            if id == self.id {
                self.log.persisted
            } else {
                self.peer_idx(id).map_or(0, |i| self.prs[i].match_)
            }
        });
        if q > self.log.commit && self.log.term(q) == Some(self.term) {
            let old = self.log.commit;
            self.log.commit = q;
            let mut freed = 0;
            for i in old + 1..=q {
                let e = self.log.entry(i).expect("committed within log");
                if e.term == self.term && e.kind == EntryKind::Normal {
                    freed += e.size_bytes();
                }
            }
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
            if !self.read.waiting_for_commit.is_empty() {
                for (ctx, from) in std::mem::take(&mut self.read.waiting_for_commit) {
                    self.register_read(ctx, from);
                }
            }
        }
    }

    // ---- output ----

    pub(super) fn send_appends(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        for i in 0..self.peers.len() {
            let snap_index = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
            if self.prs[i].seed && self.prs[i].match_ >= snap_index {
                self.prs[i].seed = false;
            }
            let needs_snapshot = self.log.term(self.prs[i].next - 1).is_none()
                || (self.prs[i].seed && self.snapshot.is_some());
            if self.prs[i].state != ProgressState::Snapshot && needs_snapshot {
                // The entries this follower needs were compacted away.
                let snap = self
                    .snapshot
                    .clone()
                    .expect("a compacted log has a snapshot");
                self.prs[i].become_snapshot(snap, self.snapshot_crc, self.snapshot_bytes);
            }
            if self.prs[i].state == ProgressState::Snapshot {
                self.send_snapshot_chunk(i);
                continue;
            }
            loop {
                let p = &self.prs[i];
                if !p.can_send() {
                    break;
                }
                let has_entries = p.next <= last;
                let probe = p.state == ProgressState::Probe;
                let commit_news = p.commit_sent < self.log.commit;
                if !has_entries && !probe && !commit_news {
                    break;
                }
                if !has_entries
                    && probe
                    && p.match_ + 1 == p.next
                    && !commit_news
                    && p.match_ == last
                {
                    // Probe of a follower already known to be up to date.
                    break;
                }
                let prev_index = p.next - 1;
                let prev_term = self
                    .log
                    .term(prev_index)
                    .expect("checked above: prev within log");
                let entries = if has_entries {
                    self.log.slice(p.next, last + 1, self.cfg.msg_bytes_max)
                } else {
                    Vec::new()
                };
                let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
                let commit = self.log.commit;
                let p = &mut self.prs[i];
                p.commit_sent = commit;
                if let Some(l) = entries.last() {
                    if p.state == ProgressState::Replicate {
                        p.next = l.index + 1;
                        p.inflight.add(l.index, bytes);
                    }
                }
                if p.state == ProgressState::Probe {
                    p.probe_sent = true;
                }
                let empty = entries.is_empty();
                let to = self.peers[i];
                self.send(
                    to,
                    self.term,
                    Body::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                    },
                );
                if empty || probe {
                    break;
                }
            }
        }
    }

    /// Snapshot state: sends the next chunk if the previous one was acknowledged.
    pub(super) fn send_snapshot_chunk(&mut self, i: usize) {
        let chunk_max = self.cfg.snapshot_chunk_bytes;
        let p = &mut self.prs[i];
        if !p.can_send() {
            return;
        }
        let snap = p.snapshot.as_ref().expect("snapshot state has a snapshot");
        let total = p.snap_total;
        // Once everything is held, this sends an empty chunk at `total`: a
        // probe (after a heartbeat round without the install ack) that the
        // follower answers with where its log stands.
        let from = p.snap_acked.min(total);
        let to = (from + chunk_max).min(total);
        // Held: sliced here. Stored by the application (its bytes let go,
        // `snapshot_stored`): read by it.
        let stored = snap.data.len() as u64 != total;
        debug_assert!(
            !stored || snap.data.is_empty(),
            "a snapshot's bytes are held whole or not at all"
        );
        let msg = Body::Snapshot {
            index: snap.meta.index,
            term: snap.meta.term,
            conf: snap.conf.clone(),
            offset: from,
            total,
            crc: p.snap_crc,
            chunk: if stored {
                Bytes::new()
            } else {
                snap.data.slice(from as usize..to as usize)
            },
        };
        p.snap_sent = to.max(from + 1);
        let peer = self.peers[i];
        if stored && to > from {
            let message = self.message(peer, self.term, msg);
            self.snapshot_reads.push(SnapshotRead {
                message,
                len: to - from,
            });
        } else {
            self.send(peer, self.term, msg);
        }
    }
}
