//! The disk side of a shard beyond the turn's batch: the full-disk mode
//! (writes refused, reads served, leadership handed off, rebuilt from disk
//! once space is back) and WAL retention (idle replicas' hard states and
//! old catalog entries written again so their segments can be released).

use super::*;

impl Shard {
    pub(super) fn enter_disk_full(&mut self, err: &dyn std::fmt::Display) {
        if self.disk_full {
            return;
        }
        self.disk_full = true;
        // Never durable now: no acks, no reports; the rebuild starts over.
        self.inflight.clear();
        self.stats.disk_full = 1;
        self.stats.disk_full_events += 1;
        tracing::error!(
            shard = self.cfg.shard,
            "disk full ({err}): writes are refused with DiskFull, reads are served; retrying every second"
        );
        self.hand_off_leadership();
    }

    /// A leader that cannot persist cannot commit its own entries: hand
    /// each group it leads to its most caught-up follower. (It cannot win
    /// an election meanwhile: its own vote never becomes durable.)
    pub(super) fn hand_off_leadership(&mut self) {
        for g in self.replicas.values_mut() {
            let me = g.replica;
            if g.raft.role() != Role::Leader || g.raft.transferee().is_some() {
                continue;
            }
            let best = g
                .raft
                .conf()
                .voters
                .iter()
                .copied()
                .filter(|&p| p != me)
                .max_by_key(|&p| g.raft.progress(p).map_or(0, |pr| pr.match_));
            if let Some(to) = best {
                self.work.mark(g.id);
                match g.raft.transfer_leader(to) {
                    Ok(()) => tracing::info!(
                        shard = self.cfg.shard,
                        group = g.id,
                        to,
                        "disk full: handing leadership over"
                    ),
                    Err(e) => tracing::debug!(group = g.id, "leadership hand-off: {e}"),
                }
            }
        }
    }

    /// With the disk full: tries to reopen the WAL; once it opens, rebuilds
    /// every group from disk (as after a restart) and serves writes again.
    /// Requests waiting on the old groups get `Timeout` (outcome unknown:
    /// their entries may still commit through the other replicas).
    pub(super) async fn try_recover_disk(&mut self) -> Result<(), ShardError> {
        // Background writes and unlinks finish first: the rebuild would
        // remove a snapshot write's temporary file as a crash's leftover
        // (a split's new range's too, and that one's finished file, which
        // no catalog entry names yet), and replay WAL segments about to
        // be unlinked.
        if self.snaps_writing.get() > 0 || self.wal_removals.get() > 0 || !self.seeding.is_empty() {
            return Ok(());
        }
        let loaded = match load(&self.cfg, &self.wal_dir, &self.snap_dir).await {
            Ok(x) => x,
            Err(ShardError::Wal { err, .. }) if err.is_disk_full() => {
                tracing::debug!(shard = self.cfg.shard, "still full: {err}");
                return Ok(());
            }
            Err(ShardError::Snapshot { err, .. }) if snap_err_is_disk_full(&err) => {
                tracing::debug!(shard = self.cfg.shard, "still full: {err}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Err(err) = loaded.wal.health() {
            // Opened read-only: no room for a new segment yet.
            tracing::debug!(shard = self.cfg.shard, "still full: {err}");
            return Ok(());
        }
        let mut waiting = Vec::new();
        for r in self.replicas.values_mut() {
            r.drain_waiters(Gone::Rebuilt, &mut waiting);
        }
        for (conn, id, answer) in waiting {
            self.respond(conn, id, answer);
        }
        let Loaded {
            wal,
            replicas,
            catalog,
            replayed,
        } = loaded;
        self.replicas = replicas;
        self.work.forget_all();
        self.load_samplers.clear();
        self.mark_all();
        self.store = LogStore::new(wal, catalog, self.cfg.wal.record_bytes_max);
        // A removal failure of the old WAL is not the new one's.
        self.wal_release_failed.borrow_mut().take();
        self.inflight.clear();
        // Their snapshot writes, still under way, find no parked Ready
        // and remove their files (`finish_installs`).
        self.installing.clear();
        self.disk_full = false;
        self.stats.disk_full = 0;
        self.unpin_rest = None;
        let book: Vec<(u64, String)> = self
            .replicas
            .values()
            .flat_map(|r| r.address_book())
            .collect();
        for (n, a) in book {
            self.learn_peer(n, &a);
        }
        self.sync_peers();
        tracing::info!(
            shard = self.cfg.shard,
            wal_records = replayed.records,
            "disk space is back: groups rebuilt from disk, writes served again"
        );
        Ok(())
    }

    /// A WAL error of housekeeping the shard can do without (restating,
    /// releasing, destroying a removed replica): a full disk degrades the
    /// shard like a full disk anywhere (`enter_disk_full`); any other
    /// error stops it. (A full disk met while restating stopped the node:
    /// found by the 30-minute chaos soak.)
    pub(super) fn degrade_if_full(&mut self, r: Result<(), ShardError>) -> Result<(), ShardError> {
        match r {
            Err(ShardError::Wal { err, .. }) if err.is_disk_full() => {
                self.enter_disk_full(&err);
                Ok(())
            }
            r => r,
        }
    }

    /// Moves groups that hold the WAL's release point far back forward: one
    /// whose only old record is its hard state writes it again; one whose
    /// entries are old writes its whole log again if it is small
    /// (`WAL_REWRITE_LOG_BYTES_MAX`); one still being written is left to
    /// its own compaction while the WAL it keeps is within
    /// `--wal-pin-bytes-max` and the disk's free space; else it
    /// snapshots. Then releases what that freed. A full disk degrades the shard (`degrade_if_full`).
    /// The shard's loop calls it once a second; public so that tests can
    /// drive a shard without its loop.
    pub async fn unpin_wal(&mut self) -> Result<(), ShardError> {
        let r = self.unpin_wal_inner().await;
        self.degrade_if_full(r)
    }

    async fn unpin_wal_inner(&mut self) -> Result<(), ShardError> {
        if self.disk_full {
            return Ok(());
        }
        let head = self.store.wal().next_lsn();
        // Every group needs one record at least: a bound below
        // `WAL_RECORDS_KEPT_PER_GROUP` records per group hosted could
        // never hold, and a pass would rewrite groups every second for
        // ever (100,000 groups over `wal_pin_records_max`, or over two
        // segments: each pass's own records pushed its first ones past it).
        let floor = WAL_RECORDS_KEPT_PER_GROUP.saturating_mul(self.replicas.len() as u64);
        let max = self.cfg.wal_pin_records_max.max(floor);
        // A record pins the WAL too long once it is `max` records behind
        // the head, or lies before the segment preceding the head's (and
        // before the last `floor` records, but never more than
        // `WAL_FLOOR_SEGMENTS_MAX` segments further back): the bound in
        // records alone let a follower, whose records are few and large
        // (big append batches), keep five 4 MiB segments for idle groups
        // past 30 s (CI); the bound in segments holds whatever the
        // records' size, as the catalog's does.
        let wal = self.store.wal();
        let prev_segment = wal.segment_start(head).saturating_sub(1);
        let mut oldest_kept = wal.segment_start(prev_segment);
        for _ in 0..WAL_FLOOR_SEGMENTS_MAX {
            oldest_kept = wal.segment_start(oldest_kept.saturating_sub(1));
        }
        let keep_from = wal
            .segment_start(prev_segment.min(head.saturating_sub(floor)))
            .max(oldest_kept);
        let behind = |lsn: u64| lsn.saturating_add(max) < head || lsn < keep_from;
        // Every record a replica or the catalog needs is at or past the
        // release point; if that is not behind, nothing is, and the walks
        // below (every group, twice) are skipped: at 10,000 idle groups
        // they took ~2 ms each second, in the p99 of writes (issue #16).
        if !behind(self.store.released_lsn()) {
            self.unpin_rest = None;
            return Ok(());
        }
        // The last pass only left groups still being written: walk again
        // once the head moved on or the rest is over (`UnpinRest`).
        if self
            .unpin_rest
            .as_ref()
            .is_some_and(|r| r.holds(head, wal.segment_start(head)))
        {
            return Ok(());
        }
        self.unpin_rest = None;
        self.stats.wal_unpin_walks += 1;
        // Free bytes of the WAL's filesystem now (`statvfs` may block:
        // on the blocking pool, awaited; only in a pass that walks).
        let free = self.wal_fs_free().await;
        let segment = self.cfg.wal.segment_bytes;
        // Groups left to their own compaction, and groups the pass
        // snapshots or would have (a snapshot may be put off: a later
        // pass takes it, so this one does not rest).
        let mut left = 0u64;
        let mut snapshots = 0u64;
        let mut wanted = 0u64;
        let mut rewrote = false;
        // Where a slow pass spent its time (ms), logged past SLOW_TURN_MS:
        // taking snapshots, rewriting records, restating the catalog,
        // releasing segments.
        let started = std::time::Instant::now();
        let mut split = [0u128; 4];
        let mut lap = started;
        let mut lap_ms = |at: usize| {
            split[at] = lap.elapsed().as_millis();
            lap = std::time::Instant::now();
        };
        // (group, the index its log is written again from, if it is)
        let mut stale = Vec::new();
        // Log bytes this pass may still write (`WAL_REWRITE_PASS_BYTES_MAX`).
        let mut budget = WAL_REWRITE_PASS_BYTES_MAX;
        let ids: Vec<GroupId> = self.replicas.keys().copied().collect();
        for gid in ids {
            let Some(g) = self.replicas.get_mut(&gid) else {
                continue;
            };
            if g.snap_writing || !behind(g.lsns.needed_lsn()) {
                continue;
            }
            let entries_pinned = g
                .lsns
                .record_lsns
                .values()
                .next()
                .is_some_and(|&l| behind(l));
            // Still being written: its log grew since the last look.
            let last = g.raft.log().last_index();
            let written = last > g.unpin_seen_last;
            g.unpin_seen_last = last;
            if !entries_pinned {
                stale.push((gid, None));
            } else if let Some((from, bytes)) = rewritable_log(g) {
                // Past the pass's budget: at a later pass.
                if bytes <= budget {
                    budget -= bytes;
                    stale.push((gid, Some(from)));
                }
            } else if written
                && self.store.wal().bytes_from(g.lsns.needed_lsn())
                    <= pin_allowance(g, free, segment, self.cfg.wal_pin_bytes_max)
            {
                // Its own compaction (`maybe_snapshot`) releases what it
                // pins, as it goes on being written; a snapshot now would
                // write its whole state for a few segments (issue #21).
                left += 1;
            } else {
                // Nothing new applied since its snapshot: `snapshot_now`
                // leaves it.
                wanted += 1;
                self.snapshot_now(gid, true);
                if self.replicas.get(&gid).is_some_and(|g| g.snap_writing) {
                    snapshots += 1;
                }
            }
        }
        self.stats.wal_pins_left += left;
        self.stats.wal_unpin_snapshots += snapshots;
        lap_ms(0);
        if !stale.is_empty() {
            self.rewrite_records(&stale).await?;
            rewrote = true;
        }
        lap_ms(1);
        // Catalog entries are restated like hard states (an old create or
        // tombstone must not be released with its segment), by segments
        // (`LogStore::restate_stale_catalog`).
        let replicas_need = self.replicas_need();
        if self
            .store
            .restate_stale_catalog(replicas_need)
            .await
            .map_err(wal_err(self.cfg.shard))?
        {
            rewrote = true;
        }
        lap_ms(2);
        if rewrote {
            self.release_wal().await?;
        } else if left > 0 && wanted == 0 {
            self.unpin_rest = Some(UnpinRest {
                head: head.saturating_add((max / 4).max(1)),
                segment: self.store.wal().segment_start(head),
                until: std::time::Instant::now()
                    + std::time::Duration::from_secs(super::UNPIN_REST_SECS_MAX),
            });
        }
        lap_ms(3);
        if started.elapsed().as_millis() >= u128::from(super::SLOW_TURN_MS) {
            let [snapshots, rewrite, catalog, release] = split;
            tracing::warn!(
                shard = self.cfg.shard,
                snapshots,
                rewrite,
                catalog,
                release,
                groups = stale.len(),
                "slow WAL unpinning pass (ms per step)"
            );
        }
        Ok(())
    }

    /// Free bytes of the WAL's filesystem for an unprivileged writer,
    /// asked on the shard's blocking pool (`statvfs` may block); `u64::MAX`
    /// where it cannot be asked (no bound then but the setting's).
    async fn wal_fs_free(&self) -> u64 {
        let dir = self.wal_dir.clone();
        glommio::executor()
            .spawn_blocking(move || storage::fs_free_bytes(&dir))
            .await
            .unwrap_or(u64::MAX)
    }

    /// The lowest LSN any replica still needs (`u64::MAX` for none).
    fn replicas_need(&self) -> u64 {
        self.replicas
            .values()
            .map(|g| g.lsns.needed_lsn())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Writes the current hard state of each group in `stale` again (and
    /// its log from the index given, if one is: `rewritable_log`), as one WAL batch
    /// with one sync (`LogStore::rewrite_records`): idle groups pinning old
    /// segments cost one sync together, not one each. Returns the number
    /// of records written.
    pub(super) async fn rewrite_records(
        &mut self,
        stale: &[(GroupId, Option<crate::raft::Index>)],
    ) -> Result<usize, ShardError> {
        debug_assert!(
            stale.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted group ids"
        );
        let mut logs = 0;
        let mut batch: Vec<storage::RecordRewrite> = self
            .replicas
            .iter_mut()
            .filter_map(|(g, r)| {
                let at = stale.binary_search_by_key(g, |s| s.0).ok()?;
                Some((*g, stale[at].1, r))
            })
            .map(|(g, from, r)| {
                let log = r.raft.log();
                let entries = from.map_or_else(Vec::new, |from| {
                    log.slice(from, log.last_index() + 1, u64::MAX)
                });
                logs += usize::from(!entries.is_empty());
                storage::RecordRewrite {
                    group: g,
                    hs: r.raft.hard_state(),
                    entries,
                    log: &mut r.lsns,
                }
            })
            .collect();
        let n = self
            .store
            .rewrite_records(&mut batch)
            .await
            .map_err(wal_err(self.cfg.shard))?;
        if n > 0 {
            self.stats.hard_state_rewrites += n as u64;
            self.stats.log_rewrites += logs as u64;
            self.stats.hard_state_rewrite_syncs += 1;
            self.stats.wal_records += n as u64;
        }
        Ok(n)
    }

    pub(super) async fn release_wal(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        if self.disk_full {
            // What replicas noted may never become durable; the rebuild
            // from disk once space is back starts from what is there.
            return Ok(());
        }
        let before = self.store.released_lsn();
        let failed = self.wal_release_failed.borrow_mut().take();
        let detached = match failed {
            Some(err) => Err(err),
            None => self.store.detach_released(self.replicas_need()),
        };
        match detached {
            Ok(victims) if !victims.is_empty() => {
                tracing::debug!(
                    shard,
                    segments = victims.len(),
                    from_lsn = before,
                    before_lsn = self.store.released_lsn(),
                    "WAL released"
                );
                // Unlinked in the background: under a busy disk, unlinking
                // the segments a large snapshot freed held the turn for
                // 0.6-1.6 s. A failure is taken up at the next release.
                let wal = self.store.wal().clone();
                let failed = self.wal_release_failed.clone();
                let removals = self.wal_removals.clone();
                removals.set(removals.get() + 1);
                glommio::spawn_local(async move {
                    if let Err(e) = wal.remove_detached(&victims).await {
                        *failed.borrow_mut() = Some(e);
                    }
                    removals.set(removals.get() - 1);
                })
                .detach();
            }
            Ok(_) => {}
            Err(err) if err.is_disk_full() => self.enter_disk_full(&err),
            Err(err) => return Err(ShardError::Wal { shard, err }),
        }
        Ok(())
    }
}

/// Why the unpinning pass does not walk the groups again yet: the last
/// one left groups still being written to their own compaction and had
/// nothing else to do. Groups that were not behind then can only fall
/// behind as the head moves on (by records, or into a new segment), and a
/// group left can only stop being written: the rest ends at the first of
/// `head`, a new `segment`, or `until` (`UNPIN_REST_SECS_MAX`). The bound
/// in records is then kept to within a quarter of itself.
pub(super) struct UnpinRest {
    head: u64,
    segment: u64,
    until: std::time::Instant,
}

impl UnpinRest {
    fn holds(&self, head: u64, segment: u64) -> bool {
        head < self.head && segment == self.segment && std::time::Instant::now() < self.until
    }
}

/// The WAL that `g`, still being written, may keep (bytes): the
/// setting `max`, but never past what is `free` less room for the
/// snapshot that ends it (its state) and the next `segment`: that
/// snapshot must not fill the disk itself.
fn pin_allowance(g: &crate::group::Replica, free: u64, segment: u64, max: u64) -> u64 {
    max.min(free.saturating_sub(g.kv.data_bytes().saturating_add(segment)))
}

/// Where `g`'s log may be written again from instead of snapshotted, and
/// its bytes (`WAL_REWRITE_LOG_BYTES_MAX`): what its Raft log holds past
/// its durable snapshot file is every entry it wrote, all durable (none in
/// flight, no snapshot being written or installed), and small. One record
/// then holds all the log that the snapshot file does not. The entries
/// the log keeps below the snapshot (`compact_keep_entries`) are not
/// written: the snapshot covers them.
fn rewritable_log(g: &crate::group::Replica) -> Option<(crate::raft::Index, u64)> {
    let log = g.raft.log();
    let snap = g.raft.snapshot().map_or(0, |s| s.meta.index);
    let from = log.first_index().max(snap + 1);
    if g.snap_writing
        || g.lsns.install_pending.is_some()
        || snap != g.snap_file_index
        || log.first_index() > snap + 1
        || from > log.last_index()
        || g.raft.persisted_index() != log.last_index()
        || g.lsns.last_index != log.last_index()
    {
        return None;
    }
    let mut bytes = 0u64;
    for i in from..=log.last_index() {
        bytes = bytes.saturating_add(log.entry(i).map_or(u64::MAX, |e| e.size_bytes()));
        if bytes > super::WAL_REWRITE_LOG_BYTES_MAX {
            return None;
        }
    }
    Some((from, bytes))
}

#[cfg(test)]
mod tests {
    use super::UnpinRest;
    use std::time::{Duration, Instant};

    /// `UNPIN_REST_SECS_MAX` and the other two ends of a rest: the head
    /// reaching the LSN it waits for, or moving into a new segment.
    #[test]
    fn a_rest_ends_at_its_head_its_segment_or_its_deadline() {
        let rest = |until: Instant| UnpinRest {
            head: 100,
            segment: 50,
            until,
        };
        let later = Instant::now() + Duration::from_secs(crate::shard::UNPIN_REST_SECS_MAX);
        assert!(rest(later).holds(99, 50));
        assert!(!rest(later).holds(100, 50), "the head moved on");
        assert!(!rest(later).holds(99, 60), "a new segment");
        assert!(!rest(Instant::now()).holds(99, 50), "the rest is over");
    }
}
