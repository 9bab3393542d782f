//! Snapshots of a shard's replicas: taken when enough was applied (the
//! file written in the background), installed from a leader (durable
//! before anything after it), and the WAL released once they are durable.

use super::*;

impl Shard {
    pub(super) fn maybe_snapshot(&mut self, gid: GroupId) {
        let every = self.cfg.snapshot_entries;
        let Some(g) = self.replicas.get(&gid) else {
            return;
        };
        let applied = g.kv.applied();
        let current = g.raft.snapshot().map_or(0, |s| s.meta.index);
        let by_entries = every > 0 && applied >= current + every;
        let by_bytes = g.bytes_since_snapshot >= self.cfg.snapshot_log_bytes;
        if g.snap_writing || !(by_entries || by_bytes) {
            return;
        }
        self.snapshot_now(gid, true);
    }

    /// Takes a snapshot of the group at its applied index: a view of its
    /// state machine, O(1) on this executor whatever its size (the map is
    /// persistent, `kv::Kv`); the view is encoded and checksummed on the
    /// shard's helper thread and its file written in the background,
    /// while this executor goes on. Once the file is durable the core
    /// compacts to it and the WAL is released (`finish_snapshots`).
    /// `limited`: not if `SNAPSHOT_WRITES_MAX` writes are under way, nor
    /// once this turn took `SNAPSHOT_TAKE_BYTES_PER_TURN` (the shard's own
    /// compaction and unpinning, which come back to it); an operator's
    /// snapshot and the one seeding a new learner are taken whatever the
    /// count.
    pub(super) fn snapshot_now(&mut self, gid: GroupId, limited: bool) {
        self.take_snapshot(gid, limited, false);
    }

    /// The snapshot a new learner is seeded with, which the core must hold
    /// before it adds one (`raft::ConfChangeError::NeedsSnapshot`): if it
    /// holds none yet, the replica's first is encoded and compacted to at
    /// once, on this executor. Such a state machine is small: a replica
    /// is snapshotted once `snapshot-log-bytes` (64 MiB by default) or
    /// `snapshot-entries` were applied, so one that never was holds less
    /// than that. Otherwise as `snapshot_now(gid, false)`. False if the
    /// core still holds no snapshot (its first one is being encoded:
    /// ask again).
    pub(super) fn snapshot_to_seed(&mut self, gid: GroupId) -> bool {
        let first = self
            .replicas
            .get(&gid)
            .is_some_and(|g| g.raft.snapshot().is_none());
        self.take_snapshot(gid, false, first);
        self.replicas
            .get(&gid)
            .is_some_and(|g| g.raft.snapshot().is_some())
    }

    /// `snapshot_now`; `at_once`: encoded and compacted to on this
    /// executor (`snapshot_to_seed`), only its file written in the
    /// background.
    fn take_snapshot(&mut self, gid: GroupId, limited: bool, at_once: bool) {
        if self.disk_full || self.splitting(gid) {
            return;
        }
        let Some(g) = self.replicas.get_mut(&gid) else {
            return;
        };
        let applied = g.kv.applied();
        if g.snap_writing || applied <= g.raft.snapshot().map_or(0, |s| s.meta.index) {
            return;
        }
        if limited
            && (self.snaps_writing.get() >= SNAPSHOT_WRITES_MAX
                || self.snap_bytes_turn >= SNAPSHOT_TAKE_BYTES_PER_TURN)
        {
            self.stats.snapshots_deferred += 1;
            return;
        }
        let Some((meta, conf)) = g.raft.snapshot_meta_at(applied) else {
            return;
        };
        let view = g.kv.clone();
        if limited {
            self.snap_bytes_turn += view.data_bytes();
        }
        // (data, its CRC32), if encoded here.
        let mut encoded = None;
        if at_once {
            let data = view.snapshot();
            let crc = crc32fast::hash(&data);
            if g.raft.compact_with_crc(applied, data.clone(), crc).is_err() {
                return;
            }
            self.work.mark(gid);
            encoded = Some((data, crc));
        }
        let compacted = at_once;
        g.snap_writing = true;
        g.bytes_since_snapshot = 0;
        self.stats.snapshots_taken += 1;
        let dir = self.snap_dir.clone();
        let (gid, replica) = (g.id, g.replica);
        let done = self.snaps_done.clone();
        let failed = self.snaps_failed.clone();
        let writing = self.snaps_writing.clone();
        let wake = self.background_done.clone();
        writing.set(writing.get() + 1);
        glommio::spawn_local(async move {
            let (data, crc) = match encoded {
                Some(e) => e,
                None => encode_on_helper(view).await,
            };
            let snap = Snapshot { meta, conf, data };
            let r = snapfile::write(&dir, gid, &snap, crc).await;
            writing.set(writing.get() - 1);
            match r {
                Ok(_) => done.borrow_mut().push(Taken {
                    group: gid,
                    replica,
                    snap,
                    crc,
                    compacted,
                }),
                Err(e) => failed.borrow_mut().push(e),
            }
            wake.wake_all();
        })
        .detach();
    }

    /// A Ready carrying a snapshot from the leader: its state machine is
    /// decoded (and its data checksummed) on the shard's helper thread,
    /// its file written in the background, and the rest of the Ready (its records,
    /// its committed entries, its acknowledgements) waits for it in
    /// `installing`, as the group's later Readies do; the shard's other
    /// groups go on meanwhile (`finish_installs` takes it up again).
    pub(super) fn park_for_install(
        &mut self,
        gid: GroupId,
        snap: Snapshot,
        io: crate::group::ReadyIo,
        rest: crate::group::ReadyRest,
    ) {
        let g = hosted(&mut self.replicas, gid);
        let replica = g.replica;
        let dir = self.snap_dir.clone();
        let done = self.installs_done.clone();
        let wake = self.background_done.clone();
        let limits = self.cfg.kv.clone();
        glommio::spawn_local(async move {
            let data = snap.data.clone();
            let (kv, crc) = on_helper(move || {
                (
                    crate::kv::Kv::restore(&data, limits),
                    crc32fast::hash(&data),
                )
            })
            .await;
            let result = match kv {
                Err(e) => Err(InstallError::Decode(e)),
                Ok(kv) => match snapfile::write(&dir, gid, &snap, crc).await {
                    Ok(_) => Ok(kv),
                    Err(e) => Err(InstallError::File(e)),
                },
            };
            done.borrow_mut().push(InstallDone {
                group: gid,
                replica,
                snap,
                result,
            });
            wake.wake_all();
        })
        .detach();
        self.installing.insert(gid, Parked { replica, io, rest });
    }

    /// Takes up the Readies whose snapshot file is now written: the state
    /// machine restarts from the snapshot, then the rest of the Ready is
    /// carried out. A write for a replica destroyed meanwhile leaves no
    /// file behind. The shard loop calls it every turn; public so that
    /// tests can drive a shard without its loop.
    pub async fn finish_installs(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let done = std::mem::take(&mut *self.installs_done.borrow_mut());
        for d in done {
            let index = d.snap.meta.index;
            let parked = match self.installing.remove(&d.group) {
                Some(p) if p.replica == d.replica => p,
                other => {
                    if let Some(p) = other {
                        self.installing.insert(d.group, p);
                    }
                    let current = self.replicas.get(&d.group).map(|g| g.snap_file_index);
                    if d.result.is_ok() && current != Some(index) {
                        let path = self.snap_dir.join(snapfile::file_name(d.group, index));
                        let _ = glommio::io::remove(path).await;
                    }
                    // The decoded state and the snapshot are freed there.
                    drop_on_helper(d);
                    continue;
                }
            };
            let (kv, durable) = match d.result {
                Ok(kv) => (kv, true),
                Err(InstallError::File(err)) if snap_err_is_disk_full(&err) => {
                    self.enter_disk_full(&err);
                    (
                        decode_snapshot(shard, d.group, &d.snap, &self.cfg.kv)?,
                        false,
                    )
                }
                Err(InstallError::File(err)) => return Err(ShardError::Snapshot { shard, err }),
                Err(InstallError::Decode(e)) => {
                    return Err(ShardError::Group {
                        shard,
                        group: d.group,
                        what: e.to_string(),
                    })
                }
            };
            let dropped = parked.io.snapshot_dropped_log;
            self.restore(d.group, &d.snap, kv, dropped, durable)?;
            // Its file is durable: chunks are read from it from now on,
            // and its bytes are freed on the helper thread (the core's
            // reference and this one both handed over).
            let held = durable
                .then(|| {
                    hosted(&mut self.replicas, d.group)
                        .raft
                        .snapshot_stored(index)
                })
                .flatten();
            drop_on_helper((d.snap, held));
            self.continue_ready(d.group, parked.io, parked.rest).await?;
            // Its later Readies may be taken now.
            self.mark(d.group);
        }
        Ok(())
    }

    /// Group `gid`'s state machine restarts from `snap`, a snapshot from
    /// its leader, decoded as `kv` (`durable`: its file is written).
    pub(super) fn restore(
        &mut self,
        gid: GroupId,
        snap: &Snapshot,
        kv: crate::kv::Kv,
        dropped_log: bool,
        durable: bool,
    ) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let g = hosted(&mut self.replicas, gid);
        let mut answers = Vec::new();
        let prev = g.snap_file_index;
        let (removed, before) =
            g.restore_decoded(snap.meta, kv, dropped_log, durable, &mut answers);
        drop_state_on_helper(before).detach();
        let book: Vec<(u64, String)> = g.address_book().collect();
        if durable {
            self.supersede_snapshot_file(gid, prev, snap.meta.index);
        }
        if removed {
            // A snapshot of a membership without this replica.
            self.removed.push(gid);
        }
        for (n, a) in book {
            self.learn_peer(n, &a);
        }
        if let Some(r) = self.replicas.get(&gid) {
            self.link_members(r);
        }
        for (conn, id, answer) in answers {
            self.respond(conn, id, answer);
        }
        self.stats.snapshots_installed += 1;
        tracing::info!(
            shard,
            group = gid,
            index = snap.meta.index,
            bytes = snap.data.len(),
            durable,
            "installed snapshot from the leader"
        );
        Ok(())
    }

    /// Takes in finished snapshot writes and releases the WAL below the
    /// lowest LSN any group still needs. The shard loop calls it every
    /// turn; public so that tests can drive a shard without its loop.
    pub async fn finish_snapshots(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let failed = self.snaps_failed.borrow_mut().pop();
        if let Some(err) = failed {
            if !snap_err_is_disk_full(&err) {
                return Err(ShardError::Snapshot { shard, err });
            }
            self.enter_disk_full(&err);
            // The snapshot stays in memory; its write is retried later.
            for r in self.replicas.values_mut() {
                r.snap_writing = false;
            }
        }
        let done = std::mem::take(&mut *self.snaps_done.borrow_mut());
        if done.is_empty() {
            return Ok(());
        }
        for t in done {
            let (gid, index) = (t.group, t.snap.meta.index);
            let path = self.snap_dir.join(snapfile::file_name(gid, index));
            let g = match self.replicas.get_mut(&gid) {
                Some(g) if g.replica == t.replica => g,
                other => {
                    // Its replica was destroyed while the file was written:
                    // the file goes too (unless a new replica of the group
                    // wrote one under the same name since).
                    if other.is_none_or(|g| g.snap_file_index != index) {
                        let _ = glommio::io::remove(path).await;
                    }
                    drop_on_helper(t.snap);
                    continue;
                }
            };
            g.snap_writing = false;
            let bytes = t.snap.data.len();
            // The snapshot it replaces is freed on the helper thread, handed
            // over once the core let it go.
            let old = g.raft.snapshot().map(|s| s.data.clone());
            // Taken at once (`snapshot_to_seed`): still the core's only if
            // no leader's snapshot was installed since.
            // This write's own reference to the bytes goes to the helper
            // thread whatever happens (the last one frees them).
            let compacted = if t.compacted {
                g.raft.snapshot().map(|s| s.meta.index) == Some(index)
            } else {
                g.raft
                    .compact_with_crc(index, t.snap.data.clone(), t.crc)
                    .is_ok()
            };
            let ours = t.snap.data;
            drop_on_helper(old);
            if !compacted {
                drop_on_helper(ours);
                // A newer snapshot from the leader was installed while
                // this one was written: its file is the replica's, this
                // one goes.
                if g.snap_file_index != index {
                    let _ = glommio::io::remove(path).await;
                }
                continue;
            }
            let prev = std::mem::replace(&mut g.snap_file_index, index);
            g.lsns.release_through(index);
            // Durable: chunks for followers are read from the file, and
            // the bytes are freed on the helper thread.
            drop_on_helper((g.raft.snapshot_stored(index), ours));
            tracing::info!(shard, group = g.id, index, bytes, "snapshot taken");
            self.supersede_snapshot_file(gid, prev, index);
            // Followers that need it, and the compacted log, are seen to.
            self.work.mark(gid);
        }
        self.release_wal().await
    }
}

impl Shard {
    /// Group `gid`'s durable snapshot file is now the one at `now`: its
    /// file at `prev` (0: none) is unlinked in the background. Never
    /// earlier: a file is removed only when a newer one replaced it, so a
    /// crash always finds the file the WAL was released through. A file a
    /// follower is being sent (`RawNode::snapshot_in_use`) stays until the
    /// transfer ends (`sweep_retained_snapshots`): a newer snapshot every
    /// few seconds under load must not restart a transfer that takes
    /// longer than that.
    pub(super) fn supersede_snapshot_file(&mut self, gid: GroupId, prev: u64, now: u64) {
        if prev == 0 || prev == now {
            return;
        }
        if let Some(g) = self.replicas.get(&gid) {
            if g.raft.snapshot_in_use(prev) {
                self.snaps_retained.push((gid, g.replica, prev));
                return;
            }
        }
        unlink_in_background(vec![self.snap_dir.join(snapfile::file_name(gid, prev))]);
    }

    /// Unlinks the retained snapshot files no transfer uses any more
    /// (`supersede_snapshot_file`). Those of a destroyed replica were
    /// retired with it (`snapfile::retire_group`). Once a second.
    pub(super) fn sweep_retained_snapshots(&mut self) {
        let (replicas, dir) = (&self.replicas, &self.snap_dir);
        self.snaps_retained
            .retain(|&(gid, replica, index)| match replicas.get(&gid) {
                Some(g) if g.replica == replica => {
                    let keep = g.raft.snapshot_in_use(index);
                    if !keep {
                        unlink_in_background(vec![dir.join(snapfile::file_name(gid, index))]);
                    }
                    keep
                }
                _ => false,
            });
    }

    /// Sends the snapshot chunks read since the last turn
    /// (`start_snapshot_reads`). A chunk that could not be read is sent
    /// again by the core after a heartbeat round, as a lost one.
    pub(super) fn send_read_chunks(&mut self) {
        let done = std::mem::take(&mut *self.chunks_read.borrow_mut());
        for c in done {
            match c.result {
                Ok(m) => {
                    self.stats.snapshot_chunks_read += 1;
                    send_charged(
                        &self.transport,
                        &mut self.stats,
                        &mut self.snapshot_budget,
                        c.node,
                        c.group,
                        &m,
                        c.bytes,
                    );
                }
                Err(err) => {
                    self.snapshot_budget.refund(c.bytes);
                    self.stats.snapshot_reads_failed += 1;
                    tracing::warn!(
                        shard = self.cfg.shard,
                        group = c.group,
                        to = c.to,
                        index = c.index,
                        "snapshot chunk not sent ({err}); the follower's transfer starts over"
                    );
                    // Its file is gone or damaged: asking again for the
                    // same chunk would fail again.
                    if let Some(g) = self.replicas.get_mut(&c.group) {
                        g.raft.snapshot_read_failed(c.to, c.index);
                        self.work.mark(c.group);
                    }
                }
            }
        }
    }
}

/// Unlinks (large) files on the helper, as a long job (`on_helper`;
/// errors ignored, the next start removes what is left): unlinking a
/// 400 MiB file took about 200 ms, and through glommio's own `remove` it
/// would take the pool's thread kept for renames.
pub(super) fn unlink_in_background(paths: Vec<std::path::PathBuf>) {
    glommio::spawn_local(on_helper(move || snapfile::remove_files(paths))).detach();
}

/// A snapshot chunk read from its file for node `node` (`bytes` long,
/// drawn from the send budget), or why it could not be.
pub(super) struct ChunkRead {
    node: u64,
    group: GroupId,
    /// The follower it is for, and the snapshot's index.
    to: ReplicaId,
    index: u64,
    bytes: u64,
    result: Result<crate::raft::Message, snapfile::SnapFileError>,
}

/// Starts reading the chunks `reads` of replica `r`'s stored snapshots
/// from their files, in the background (`snapfile::read_chunk`); each is
/// sent once read (`Shard::send_read_chunks`). Each chunk draws on the
/// send budget first (`--snapshot-send-bytes-per-sec`), so no read starts
/// that could not be sent; one is in flight per follower at most (the
/// core sends the next once the last is acknowledged).
pub(super) fn start_snapshot_reads(
    dir: &std::path::Path,
    budget: &mut SnapshotBudget,
    stats: &mut ShardStats,
    done: &Rc<RefCell<Vec<ChunkRead>>>,
    wake: &Rc<crate::transport::sync::WaitList>,
    r: &Replica,
    reads: Vec<crate::raft::SnapshotRead>,
) {
    for rd in reads {
        let Some(node) = r.node_of(rd.message.to) else {
            stats.msgs_unplaced += 1;
            continue;
        };
        let bytes = rd.len;
        if !budget.take(bytes, Instant::now()) {
            stats.snapshot_chunks_held += 1;
            continue;
        }
        let (index, offset) = rd.at();
        let to = rd.message.to;
        let (dir, group, done, wake) = (dir.to_path_buf(), r.id, done.clone(), wake.clone());
        glommio::spawn_local(async move {
            let result = snapfile::read_chunk(&dir, group, index, offset, bytes as usize)
                .await
                .map(|chunk| rd.fill(chunk));
            done.borrow_mut().push(ChunkRead {
                node,
                group,
                to,
                index,
                bytes,
                result,
            });
            wake.wake_all();
        })
        .detach();
    }
}

/// Drops `x` on the shard's helper thread: freeing a large state machine
/// (an allocation per key and value) or snapshot (an unmap of hundreds
/// of MiB) costs the executor nothing. Shared data is freed by whichever
/// reference goes last: a caller hands over a clone only after the
/// executor's own reference is gone, or the free may still land here.
/// `view`'s snapshot bytes and their CRC32, encoded on the shard's helper
/// thread (O(n) in its keys: never on the executor).
pub(super) async fn encode_on_helper(view: crate::kv::Kv) -> (bytes::Bytes, u32) {
    on_helper(move || {
        let data = view.snapshot();
        let crc = crc32fast::hash(&data);
        (data, crc)
    })
    .await
}

pub(super) fn drop_on_helper<T: Send + 'static>(x: T) {
    glommio::spawn_local(on_helper(move || drop(x))).detach();
}

/// Threads in a shard's blocking pool (`glommio::PoolPlacement`): the
/// shard's own long jobs (`on_helper`) and glommio's file operations
/// (rename, remove and truncate go through that pool too) share it. One
/// thread is kept for glommio's: a WAL segment's rename, queued behind
/// the encoding of a 400 MiB snapshot on a pool of one, held the shard's
/// acknowledgements for up to 1.4 s.
pub const HELPER_THREADS: usize = 2;

/// The shard's long jobs on its blocking pool at once (`on_helper`): one
/// thread fewer than `HELPER_THREADS`, so a file operation always finds
/// a free thread.
pub const HELPER_JOBS_MAX: usize = HELPER_THREADS - 1;

thread_local! {
    /// This executor's slots for long jobs (`HELPER_JOBS_MAX`).
    static HELPER_SLOTS: Rc<glommio::sync::Semaphore> =
        Rc::new(glommio::sync::Semaphore::new(HELPER_JOBS_MAX as u64));
}

/// Runs `f` (encoding, decoding or freeing something large) on the
/// shard's blocking pool once one of its `HELPER_JOBS_MAX` slots is free;
/// the executor goes on meanwhile.
pub(super) async fn on_helper<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let slots = HELPER_SLOTS.with(Rc::clone);
    let _slot = slots
        .acquire_static_permit(1)
        .await
        .expect("the helper slots are never closed");
    glommio::executor().spawn_blocking(f).await
}

/// A state machine this large, freed, is followed by a trim of the
/// allocator's free memory (`drop_state_on_helper`), in bytes of keys and
/// values.
pub const TRIM_AFTER_FREE_BYTES: u64 = 64 << 20;

/// Drops a replica's state machine on the helper thread
/// (`drop_on_helper`); if it held at least `TRIM_AFTER_FREE_BYTES`, the
/// allocator then gives the pages it freed back to the OS. glibc keeps
/// what is freed in its arenas, and a state machine is an allocation per
/// key and value spread through them: measured, a node whose 400 MiB
/// replica was destroyed and added back stayed at 1,060 MiB resident
/// (2.6 x what it stored) until a `malloc_trim`, then 520 MiB.
/// The returned task may be detached.
pub(super) fn drop_state_on_helper(kv: crate::kv::Kv) -> glommio::Task<()> {
    let big = kv.data_bytes() >= TRIM_AFTER_FREE_BYTES;
    glommio::spawn_local(on_helper(move || {
        drop(kv);
        if big {
            trim_allocator();
        }
    }))
}

/// Trims done by this process (`trim_allocator`).
static ALLOCATOR_TRIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process trimmed its allocator.
pub fn allocator_trims() -> u64 {
    ALLOCATOR_TRIMS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Returns the allocator's free pages to the OS (glibc's `malloc_trim`;
/// nothing elsewhere). Blocking: walks every arena, so on a helper thread.
/// It holds each arena while it walks it: measured, the shard whose
/// arena held a freed 400 MiB state stalled about 50 ms longer than
/// without the trim, once.
pub fn trim_allocator() {
    ALLOCATOR_TRIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and may be called at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `snap`'s state machine, decoded here (the rare path of a full disk;
/// the usual one decodes on the helper thread).
pub(super) fn decode_snapshot(
    shard: u32,
    group: GroupId,
    snap: &Snapshot,
    limits: &crate::kv::KvLimits,
) -> Result<crate::kv::Kv, ShardError> {
    crate::kv::Kv::restore(&snap.data, limits.clone()).map_err(|e| ShardError::Group {
        shard,
        group,
        what: e.to_string(),
    })
}

pub(super) fn snap_err_is_disk_full(e: &snapfile::SnapFileError) -> bool {
    matches!(e, snapfile::SnapFileError::Io { err, .. }
        if err.raw_os_error() == Some(28) || err.kind() == std::io::ErrorKind::StorageFull)
}

/// The shard's budget of snapshot bytes sent (`ShardConfig::
/// snapshot_send_bytes_per_sec`): a token bucket that fills at the rate and
/// holds one second's worth, or one chunk if that is more (a chunk larger
/// than a second's worth goes once the bucket is full, so it is never held
/// for ever). Only snapshot chunks draw on it; they are the bulk of a
/// move's traffic (CockroachDB and TiKV limit the same stream).
#[derive(Debug)]
pub(super) struct SnapshotBudget {
    /// Bytes per second.
    rate: u64,
    /// Most the bucket holds, in bytes.
    capacity: u64,
    /// Bytes that may be sent now.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl SnapshotBudget {
    /// A full bucket at `now` for `rate` bytes per second and chunks of
    /// up to `chunk_bytes`.
    pub(super) fn new(rate: u64, chunk_bytes: u64, now: Instant) -> SnapshotBudget {
        let rate = rate.max(1);
        let capacity = rate.max(chunk_bytes);
        SnapshotBudget {
            rate,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    /// Gives back `bytes` taken for a chunk that was not sent after all.
    pub(super) fn refund(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_add(bytes).min(self.capacity);
    }

    /// Takes `bytes` from the bucket at `now` if it holds them (or is full);
    /// false if the chunk must wait.
    pub(super) fn take(&mut self, bytes: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        let earned = u64::try_from(earned).unwrap_or(u64::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.capacity);
            // The time worth the bytes earned; the remainder keeps counting.
            let spent = Duration::from_nanos(
                (u128::from(earned) * 1_000_000_000 / u128::from(self.rate)) as u64,
            );
            self.at += spent;
        }
        debug_assert!(self.tokens <= self.capacity, "{self:?}");
        if self.tokens == self.capacity || self.tokens >= bytes {
            self.tokens = self.tokens.saturating_sub(bytes);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// `HELPER_JOBS_MAX`: while a long job holds the helper, the next one
    /// waits for its slot, and glommio's own file operations (a rename,
    /// as a WAL segment's) still complete on the thread kept for them.
    #[test]
    fn a_long_helper_job_leaves_a_thread_for_file_operations() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(HELPER_THREADS))
            .make()
            .expect("executor")
            .run(async move {
                let (release, held) = std::sync::mpsc::channel::<()>();
                let first = glommio::spawn_local(on_helper(move || held.recv().unwrap()));
                let second_ran = Arc::new(AtomicBool::new(false));
                let ran = second_ran.clone();
                let second =
                    glommio::spawn_local(on_helper(move || ran.store(true, Ordering::SeqCst)));
                // Bounded: with no thread kept, the renames would wait for
                // the long job, which waits for them.
                let renames = glommio::timer::timeout(Duration::from_secs(20), async {
                    for i in 0..3 {
                        let (a, b) = (d.join(format!("{i}.prep")), d.join(format!("{i}.wal")));
                        std::fs::write(&a, b"x").unwrap();
                        glommio::io::rename(&a, &b)
                            .await
                            .expect("rename beside a long job");
                        assert!(b.exists());
                    }
                    Ok(())
                })
                .await;
                if renames.is_err() {
                    release.send(()).unwrap();
                    panic!("a rename waited behind a long helper job");
                }
                assert!(
                    !second_ran.load(Ordering::SeqCst),
                    "a second long job started while the first held the only slot"
                );
                release.send(()).unwrap();
                first.await;
                second.await;
                assert!(second_ran.load(Ordering::SeqCst));
            });
    }

    /// `TRIM_AFTER_FREE_BYTES`: freeing a state machine that large trims
    /// the allocator; a smaller one does not.
    #[test]
    fn freeing_a_state_of_trim_after_free_bytes_trims_the_allocator() {
        use crate::kv::{Command, Kv, KvLimits, WriteOp};
        use bytes::Bytes;
        let state = |bytes: u64| {
            let mut kv = Kv::new(KvLimits::default());
            let value = Bytes::from(vec![7u8; 64 << 10]);
            let mut i = 0u64;
            while kv.data_bytes() < bytes {
                i += 1;
                let cmd = Command {
                    client: 1,
                    seq: i,
                    ack: i - 1,
                    op: WriteOp::Put {
                        key: Bytes::from(i.to_be_bytes().to_vec()),
                        value: value.clone(),
                    },
                };
                kv.apply(i, &cmd).unwrap();
            }
            kv
        };
        let (small, big) = (state(1 << 20), state(TRIM_AFTER_FREE_BYTES));
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(async move {
                let before = allocator_trims();
                drop_state_on_helper(small).await;
                assert_eq!(allocator_trims(), before, "a small state: no trim");
                drop_state_on_helper(big).await;
                assert!(allocator_trims() > before, "a large state: trimmed");
            });
    }
}

#[cfg(test)]
mod budget_tests {
    use super::SnapshotBudget;
    use std::time::{Duration, Instant};

    /// One second's worth goes at once; then chunks go only as fast as
    /// the rate refills the bucket, and the bucket never holds more than
    /// its capacity however long it waits.
    #[test]
    fn snapshot_chunks_go_at_the_rate_after_a_second_of_burst() {
        let t0 = Instant::now();
        let mut b = SnapshotBudget::new(1000, 100, t0);
        for _ in 0..10 {
            assert!(b.take(100, t0));
        }
        assert!(!b.take(100, t0), "the burst is one second's worth");
        assert!(!b.take(100, t0 + Duration::from_millis(99)));
        assert!(b.take(100, t0 + Duration::from_millis(100)));
        assert!(!b.take(100, t0 + Duration::from_millis(150)));
        assert!(b.take(100, t0 + Duration::from_millis(200)));
        // Over a long run: no more than rate x time + one burst.
        let mut sent = 0u64;
        for ms in 201..=10_200u64 {
            if b.take(100, t0 + Duration::from_millis(ms)) {
                sent += 100;
            }
        }
        assert!(
            (9_900..=10_000).contains(&sent),
            "{sent} bytes in 10 s at 1000/s"
        );
        // A long idle time fills it to its capacity, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(b.take(100, later));
        }
        assert!(!b.take(100, later));
    }

    /// A chunk larger than a second's worth goes when the bucket is full
    /// (its capacity is one chunk), then the next waits for a refill.
    #[test]
    fn a_chunk_larger_than_a_seconds_worth_goes_when_the_bucket_is_full() {
        let t0 = Instant::now();
        let mut b = SnapshotBudget::new(100, 1000, t0);
        assert!(b.take(1000, t0));
        assert!(!b.take(1000, t0 + Duration::from_secs(9)));
        assert!(b.take(1000, t0 + Duration::from_secs(10)));
        // A chunk the transport refused gives its bytes back.
        b.refund(1000);
        assert!(b.take(1000, t0 + Duration::from_secs(10)));
        assert!(!b.take(1000, t0 + Duration::from_secs(10)));
    }
}
