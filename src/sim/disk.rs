//! A node's simulated disk and lifecycle. Each node writes through the
//! node's own `storage::LogStore` into the real WAL (`ringraft_wal::Wal`)
//! over a fault-injecting `MemDisk`: records encoded and split as the
//! shard writes them, segments, group commit, release, and at restart the
//! WAL's own recovery (torn tails cut, checksums) and the node's replay
//! (`storage::open_wal`, `GroupLog::take_restart`, `group::Replica::recover`),
//! checked against what the core had been told was durable.
//!
//! The WAL's writer is a glommio task: it runs only when the simulator
//! runs the executor (`block_on`), at the points the event queue decides
//! (a batch's latency has elapsed, a release, a crash, a restart), so a run
//! stays deterministic. A crash lets the writer put what was queued on the
//! device without its sync (half the time), then keeps each of those
//! writes whole, torn at a byte, or not at all (`CrashMode::Random`).
//!
//! Snapshot files are kept in memory here (the node's are files beside the
//! WAL, `storage::snapfile`).

use ringraft_wal::{CrashMode, MemDisk};

use super::*;
use crate::storage::LogStore;

thread_local! {
    /// The executor the simulated WALs' writers run on (one per thread,
    /// reused across runs; never running between two `block_on`s). `None`
    /// until the first `block_on`, and again after a panic unwound out of
    /// one (see there).
    static EXECUTOR: std::cell::RefCell<Option<std::rc::Rc<glommio::LocalExecutor>>> =
        const { std::cell::RefCell::new(None) };
}

/// The preemption timer of the simulator's executor: an hour, so that it
/// never fires inside a `block_on` (each runs for microseconds).
///
/// glommio 0.9's `LocalExecutor::run` parks when a pass over its task
/// queues runs nothing, and a pass that finds the preemption timer
/// already fired runs nothing, although tasks are runnable: the executor
/// then sleeps until an I/O or timer event, and the simulated WALs have
/// none (their disk is in memory), so `block_on` never returns. With
/// glommio's default (100 ms) that needs the thread to be held off the CPU
/// at the wrong moment, which a loaded CI box did once (session 43: the
/// 5-node sweep asleep in `Reactor::link_rings_and_sleep` under
/// `block_on`); with the timer at 20 µs two sweeps of two hung within
/// minutes, and with it at an hour all seven sweeps passed with the WAL
/// nudging every write (`WRITE_NUDGE_MS` at 0). Which tasks run before
/// `f` completes also no longer depends on the machine's speed.
/// (The node's shards keep the default: there the next tick or packet
/// wakes a shard parked this way.)
const SIM_EXECUTOR_PREEMPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The I/O memory of the simulator's executor (bytes): its disks are in
/// memory, so it needs next to none (glommio's default is 10 MiB, kept by
/// every executor a panic leaks).
const SIM_EXECUTOR_IO_MEMORY: usize = 64 << 10;

/// The depth of the simulator's executor's io_uring rings: no I/O goes
/// through them but its own timers and wake-ups.
const SIM_EXECUTOR_RING_DEPTH: usize = 32;

/// Runs the executor until `f` completes: the WAL writers' tasks move only
/// inside this call.
///
/// A panic inside (an assertion of the WAL's or of the code under test)
/// leaves glommio's executor in a state where its next `run` parks forever:
/// the panicking task stays marked as running. The sweeps catch a seed's
/// panic and go on to the next seed on the same thread, so the executor a
/// panic unwinds through is dropped from the thread and leaked, and the
/// next call makes a fresh one. Leaked, never dropped nor run again: its
/// own drop would touch that state, and the task `run` made of `f` (glommio
/// needs no `'static` future there) still borrows from the caller being
/// unwound. A leak holds the executor's I/O memory and rings (kept small
/// for it: `SIM_EXECUTOR_IO_MEMORY`, `SIM_EXECUTOR_RING_DEPTH`) and the
/// failed run's simulated disks. Without
/// this a failing seed hung its sweep instead of being reported with its
/// replay command (test `a_panic_inside_block_on_leaves_the_next_one_working`).
pub(super) fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    /// Leaks the thread's executor if dropped during a panic.
    struct Unwound;
    impl Drop for Unwound {
        fn drop(&mut self) {
            if std::thread::panicking() {
                if let Some(ex) = EXECUTOR.with(|e| e.borrow_mut().take()) {
                    std::mem::forget(ex);
                }
            }
        }
    }
    let ex = EXECUTOR.with(|e| {
        e.borrow_mut()
            .get_or_insert_with(|| {
                std::rc::Rc::new(
                    glommio::LocalExecutorBuilder::default()
                        .preempt_timer(SIM_EXECUTOR_PREEMPT)
                        .io_memory(SIM_EXECUTOR_IO_MEMORY)
                        .ring_depth(SIM_EXECUTOR_RING_DEPTH)
                        .make()
                        .expect("sim: cannot make a glommio executor for the simulated WALs"),
                )
            })
            .clone()
    });
    let guard = Unwound;
    let out = ex.run(f);
    drop(guard);
    out
}

/// The largest record the simulated WAL takes: above any record a run
/// writes (a Ready's entries come from a message of at most 4 KiB or
/// from a few clients' proposals of a few dozen bytes each).
const WAL_RECORD_BYTES_MAX: usize = 16 << 10;

/// The WAL settings of a run: segments small enough that rolling over and
/// releasing happen often; the zeroing of new segments, the cut of a
/// flush into several writes and whether a small flush writes again the
/// block the previous one ended in vary with the seed.
/// Records are cut at `SimConfig::record_bytes_max` before they reach the
/// WAL (`LogStore`), which takes any record up to the largest the cut
/// allows (a single entry is never cut).
pub(super) fn wal_options(cfg: &SimConfig) -> ringraft_wal::WalOptions {
    let block = 4096;
    let record_bytes_max = WAL_RECORD_BYTES_MAX.max(cfg.record_bytes_max);
    let batch = (record_bytes_max + 64).div_ceil(block) * block * 2;
    ringraft_wal::WalOptions {
        segment_bytes: (batch * 2 + block) as u64,
        record_bytes_max,
        batch_bytes_max: batch,
        write_chunk_bytes: if cfg.seed & 2 == 0 { block } else { batch },
        // Never reached: the simulator fails the run if it is.
        queue_bytes_max: 64 << 20,
        recovery: ringraft_wal::RecoveryMode::Strict,
        zero_segments: cfg.seed & 1 == 0,
        // Half the seeds start each small flush in the block the previous
        // one ended in (the default), half on a fresh block.
        tail_rewrite_bytes_max: if cfg.seed & 4 == 0 {
            ringraft_wal::TAIL_REWRITE_BYTES_MAX
        } else {
            0
        },
    }
}

impl SimReplica {
    /// A replica slot of group `replica`'s on a node, nothing durable yet.
    pub(super) fn new(replica: ReplicaId, hosted: bool) -> SimReplica {
        SimReplica {
            rep: None,
            replica,
            hosted,
            disk_snapshot: None,
            retained_snapshots: Vec::new(),
            snap_writing: false,
            durable_hs: HardState::default(),
            crash_persisted: None,
            cataloged: false,
            first_heartbeat_ms: None,
        }
    }

    /// Makes snapshot `s` durable (the latest on disk wins), and the
    /// core reads its chunks from here from then on, as a node's from its
    /// file (`RawNode::snapshot_stored`). The one it replaces is kept
    /// while a follower is being sent it (`RawNode::snapshot_in_use`), as
    /// the shard keeps the file.
    pub(super) fn store_snapshot(&mut self, s: Snapshot) {
        let index = s.meta.index;
        if self
            .disk_snapshot
            .as_ref()
            .is_none_or(|d| d.meta.index < index)
        {
            let old = self.disk_snapshot.replace(s);
            let rep = self.rep.as_mut();
            if let (Some(old), Some(rep)) = (old, rep) {
                if rep.raft.snapshot_in_use(old.meta.index) {
                    self.retained_snapshots.push(old);
                }
            }
        }
        if let Some(rep) = self.rep.as_mut() {
            rep.raft.snapshot_stored(index);
        }
    }

    /// The chunk `rd` asks for, from the stored snapshots; `None` if the
    /// snapshot it names is no longer stored (a bug: the core asks only
    /// for its latest or one in use). Retained snapshots no transfer uses
    /// any more are let go after (a Ready asks for its reads before the
    /// membership changes it applies may drop the follower they are for).
    pub(super) fn read_snapshot_chunk(
        &mut self,
        rd: &crate::raft::SnapshotRead,
    ) -> Option<bytes::Bytes> {
        let (index, offset) = rd.at();
        let chunk = self
            .disk_snapshot
            .iter()
            .chain(&self.retained_snapshots)
            .find(|s| s.meta.index == index)
            .and_then(|s| {
                let end = offset.checked_add(rd.len)?;
                (end <= s.data.len() as u64).then(|| s.data.slice(offset as usize..end as usize))
            });
        if let Some(rep) = &self.rep {
            self.retained_snapshots
                .retain(|s| rep.raft.snapshot_in_use(s.meta.index));
        }
        chunk
    }

    /// The core of the replica, if its node is up.
    pub(super) fn raft(&self) -> Option<&RawNode> {
        self.rep.as_ref().map(|r| &r.raft)
    }

    pub(super) fn raft_mut(&mut self) -> Option<&mut RawNode> {
        self.rep.as_mut().map(|r| &mut r.raft)
    }

    /// The replica's state machine (its node must be up).
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
        // A later hard state may be found (writes after the last one
        // reported can land): in the same term, a vote cast then, never
        // another than the durable one.
        if hs.term < d.term || (hs.term == d.term && d.vote != 0 && hs.vote != d.vote) {
            return Some(format!(
                "restarted with term {} vote {} but term {} vote {} was durable",
                hs.term, hs.vote, d.term, d.vote
            ));
        }
        None
    }
}

impl SimNode {
    /// Whether the node's process runs (its WAL is open).
    pub(super) fn up(&self) -> bool {
        self.log.is_some()
    }

    /// Its slot of group `g` (a node has one for every group it may host).
    pub(super) fn group(&self, g: GroupId) -> &SimReplica {
        self.groups.get(&g).expect("a slot for every group")
    }

    pub(super) fn group_mut(&mut self, g: GroupId) -> &mut SimReplica {
        self.groups.get_mut(&g).expect("a slot for every group")
    }

    /// The core of its replica of group `g`, if the node is up.
    pub(super) fn raft(&self, g: GroupId) -> Option<&RawNode> {
        self.group(g).raft()
    }

    pub(super) fn raft_mut(&mut self, g: GroupId) -> Option<&mut RawNode> {
        self.group_mut(g).raft_mut()
    }

    /// The groups it has a slot for, in order.
    pub(super) fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    /// Forgets everything on its disk: snapshots, WAL, what was durable (a
    /// wiped disk).
    pub(super) fn erase_storage(&mut self) {
        debug_assert!(
            self.groups.values().all(|r| r.rep.is_none()),
            "storage erased under a live replica"
        );
        self.stop_wal();
        for r in self.groups.values_mut() {
            r.disk_snapshot = None;
            r.retained_snapshots.clear();
            r.durable_hs = HardState::default();
            r.crash_persisted = None;
            r.cataloged = false;
        }
        self.disk = MemDisk::new();
    }

    /// Stops the WAL (if open): its writer writes out what is queued and
    /// exits.
    pub(super) fn stop_wal(&mut self) {
        if let Some(store) = self.log.take() {
            let wal = store.into_wal();
            // Failing (a sync refused under a crash) is what a crash is.
            let _ = block_on(wal.close());
        }
    }

    /// Releases the WAL below the lowest LSN any of its replicas needs
    /// (`GroupLog::needed_lsn`), as the shard does (`LogStore::release`:
    /// whole segments).
    pub(super) fn release_wal(&mut self) -> Result<(), String> {
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        let Some(needed) = self
            .groups
            .values()
            .filter_map(|r| r.rep.as_ref())
            .map(|rep| rep.lsns.needed_lsn())
            .min()
        else {
            return Ok(());
        };
        // Catalog entries are restated before their segments go, as the
        // shard does (`LogStore::restate_stale_catalog`).
        if log.catalog_restate_due(needed) {
            block_on(log.restate_stale_catalog(needed))
                .map_err(|e| format!("sim WAL: catalog restate failed: {e}"))?;
        }
        if !log.release_due(needed) {
            return Ok(());
        }
        block_on(log.release(needed))
            .map(|_| ())
            .map_err(|e| format!("sim WAL: release failed: {e}"))
    }

    /// Submits the records of one Ready of group `g`, as the shard writes
    /// them (`LogStore::append_group`, each noted in the replica's
    /// `GroupLog`, an install marker first if one is pending): the LSN of
    /// the last (0: nothing to write). Polled once, without running the
    /// executor: it completes unless the WAL's queue is full, which the
    /// simulator's settings never let happen (the run fails if it does).
    pub(super) fn submit(
        &mut self,
        g: GroupId,
        hs: Option<HardState>,
        entries: &[Entry],
    ) -> Result<u64, String> {
        use futures_lite::future::{block_on as poll, poll_once};
        let log = self.log.as_ref().expect("up");
        let rep = self
            .groups
            .get_mut(&g)
            .and_then(|r| r.rep.as_mut())
            .expect("up");
        match poll(poll_once(log.append_group(g, hs, entries, &mut rep.lsns))) {
            Some(Ok((lsn, _))) => Ok(lsn),
            Some(Err(e)) => Err(format!("sim WAL: submit failed: {e}")),
            None => {
                Err("sim WAL: the queue is full (queue_bytes_max too small for the run)".into())
            }
        }
    }
}

/// A write not yet reported durable.
pub(super) struct PendingWrite {
    /// The group whose Ready it is.
    pub(super) group: GroupId,
    /// The replica of the group that wrote it: a replica destroyed since
    /// (`Sim::replace_replica`) is not told, and its successor neither.
    pub(super) replica: ReplicaId,
    pub(super) token: PersistToken,
    /// The hard state in its records, if any.
    pub(super) hs: Option<HardState>,
    /// The LSN of its last record (0: it wrote none).
    pub(super) lsn: u64,
    pub(super) after: Vec<Message>,
}

/// A node's slot of one group: the replica it hosts there (or will:
/// `hosted` false), and what of it is durable.
pub(super) struct SimReplica {
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
    /// The durable state, which survives crashes: the latest snapshot (the
    /// WAL is the node's).
    pub(super) disk_snapshot: Option<Snapshot>,
    /// Older snapshots kept while a follower is sent them (cleared at a
    /// restart, as the node removes superseded files then).
    pub(super) retained_snapshots: Vec<Snapshot>,
    /// A snapshot it took is being written (`Event::SnapshotWritten`).
    pub(super) snap_writing: bool,
    /// The latest hard state in a durable record (what a restart must
    /// find again, or a later one).
    pub(super) durable_hs: HardState,
    /// At a crash: the core's persisted index and its term, checked
    /// against the log replayed at restart.
    pub(super) crash_persisted: Option<(Index, Option<Term>)>,
    /// Whether the node's WAL catalog names this replica (a founder, or
    /// created there by `Sim::replace_replica`; not after a wiped disk):
    /// what replay must find again.
    pub(super) cataloged: bool,
    /// When the node first noted a heartbeat of this group's leader that
    /// would create its replica here (`Sim::heartbeat_creates`); in
    /// memory only.
    pub(super) first_heartbeat_ms: Option<u64>,
}

/// A node: a process with one WAL (shared by its replicas, group-committed
/// as a shard's) and a slot per group.
pub(super) struct SimNode {
    /// Its slot of each group, by group id.
    pub(super) groups: BTreeMap<GroupId, SimReplica>,
    pub(super) incarnation: u64,
    /// The store incarnation (1, then one more per wiped disk).
    pub(super) store: u64,
    /// Whether its disk was wiped in this run.
    pub(super) lost: bool,
    /// Kept down by a scripted scenario until `Sim::start`.
    pub(super) held: bool,
    /// The disk the WAL lives on (survives crashes).
    pub(super) disk: MemDisk,
    /// The WAL, open while the node is up.
    pub(super) log: Option<LogStore<MemDisk>>,
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
    /// Starts node `i` from what its disk holds: the WAL opened and
    /// replayed as the node does (`storage::open_wal`,
    /// `GroupLog::take_restart`), then the node's own recovery of each
    /// group's replica (`group::Replica::recover`).
    pub(super) fn start_node(&mut self, i: usize) {
        let opts = wal_options(&self.cfg);
        // A new process: its transport has reported nothing yet, and
        // reports a peer it cannot reach afresh.
        self.unreachable[i].fill(false);
        self.silent_since[i].fill(None);
        let cfgs: Vec<(GroupId, ValidRaftConfig)> = self.nodes[i]
            .group_ids()
            .into_iter()
            .map(|g| (g, self.node_cfg(i, g)))
            .collect();
        let n = &mut self.nodes[i];
        let opened = block_on(crate::storage::open_wal(n.disk.clone(), opts));
        let (wal, mut replay, _report) = match opened {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("durability: node {} cannot open its WAL: {e}", self.ids[i]);
                self.fail(msg);
                return;
            }
        };
        if let Some(e) = replay.error.take() {
            let msg = format!("durability: node {} WAL record: {e}", self.ids[i]);
            self.fail(msg);
            return;
        }
        let mut lost = Vec::new();
        for (g, cfg) in cfgs {
            let slot = n.groups.get_mut(&g).expect("a slot for every group");
            // The catalog names the replica the node hosts, if it was
            // created on this store, and no other.
            let named = replay.catalog.get(g).map(|d| d.replica);
            // The keys it was created with (as the shard's
            // `recover_replica`), until a snapshot carries its own.
            let created_with = replay
                .catalog
                .get(g)
                .filter(|d| !d.descriptor.is_empty())
                .map(|d| {
                    crate::meta::RangeDesc::decode(&d.descriptor)
                        .expect("a descriptor the sim wrote")
                });
            if named != slot.cataloged.then_some(slot.replica) {
                lost.push(format!(
                    "replays a catalog naming replica {named:?} of group {g}, but it hosts replica {} ({})",
                    slot.replica,
                    if slot.cataloged { "created on this store" } else { "not created on this store" }
                ));
            }
            slot.retained_snapshots.clear();
            slot.first_heartbeat_ms = None;
            let mut log = replay.groups.remove(&g).unwrap_or_default();
            let snap = slot
                .disk_snapshot
                .as_ref()
                .map(|s| (s.meta.index, s.meta.term));
            let restart = log.take_restart(snap);
            let (hs, snap_index) = (restart.hs, restart.applied);
            let mut rep = Replica::recover(
                g,
                cfg,
                restart,
                log,
                slot.disk_snapshot.clone(),
                state_machine::kv_limits(),
            )
            .unwrap_or_else(|e| panic!("sim disk: a durable snapshot does not restore: {}", e.0));
            if let Some(d) = created_with.filter(|_| !rep.kv.bounds().known) {
                rep.kv.set_bounds(crate::kv::KeyBounds::of_descriptor(&d));
            }
            slot.rep = Some(rep);
            // Its snapshot is on its disk: read from there, as a node's.
            if let (Some(rep), Some(i)) = (slot.rep.as_mut(), snap.map(|s| s.0)) {
                rep.raft.snapshot_stored(i);
            }
            lost.extend(slot.durability_lost(&hs, snap_index));
            slot.durable_hs = hs;
            slot.snap_writing = false;
        }
        n.log = Some(LogStore::new(
            wal,
            replay.catalog,
            self.cfg.record_bytes_max,
        ));
        let j = self.cfg.tick_jitter_ms;
        n.tick_ms = self.cfg.tick_ms - j + self.rng.below(2 * j + 1);
        n.writes.clear();
        n.batch_len = 0;
        n.clock = None;
        n.paused_until = None;
        if let Some(what) = lost.into_iter().next() {
            let msg = format!("durability: node {} {what}", self.ids[i]);
            self.fail(msg);
        }
    }

    pub(super) fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if !n.up() {
            return;
        }
        // What the core was told is durable must survive: checked at restart.
        for slot in n.groups.values_mut() {
            if let Some(r) = slot.raft() {
                let p = r.persisted_index();
                slot.crash_persisted = Some((p, r.log().term(p)));
            }
        }
        // What was not reported persisted may be lost. Half the time the
        // writes queued reached the device, unsynced, and each is kept
        // whole, torn, or not at all; otherwise only what was synced stays.
        let tear = self.rng.below(2) == 0;
        let seed = self.rng.next();
        let n = &mut self.nodes[i];
        n.disk.fail_syncs(true);
        n.stop_wal();
        n.disk.crash(if tear {
            CrashMode::Random(seed)
        } else {
            CrashMode::DropUnsynced
        });
        n.disk.fail_syncs(false);
        for slot in n.groups.values_mut() {
            slot.rep = None;
        }
        n.incarnation += 1;
        n.writes.clear();
        n.batch_len = 0;
        self.notice(i, false);
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

    /// The batch's latency has elapsed: the WAL's writer runs until its
    /// records are durable (those queued after it may land too, unreported
    /// until their own batch), then each group's core hears of its writes.
    pub(super) fn persist_done(&mut self, i: usize, incarnation: u64) {
        if self.nodes[i].incarnation != incarnation || !self.nodes[i].up() {
            return;
        }
        let k = std::mem::take(&mut self.nodes[i].batch_len);
        let n = &mut self.nodes[i];
        let target = n.writes.iter().take(k).map(|w| w.lsn).max().unwrap_or(0);
        if target > 0 {
            let wal = n.log.as_ref().expect("up").wal().clone();
            if let Err(e) = block_on(wal.wait_durable(target)) {
                let msg = format!("sim WAL: node {} write failed: {e}", self.ids[i]);
                self.fail(msg);
                return;
            }
        }
        // The last token of each group (its writes are reported in order).
        let mut last_token: BTreeMap<GroupId, PersistToken> = BTreeMap::new();
        let mut after = Vec::new();
        for w in n.writes.drain(..k) {
            let slot = n.groups.get_mut(&w.group).expect("a slot for every group");
            if slot.replica != w.replica {
                continue;
            }
            if w.lsn > 0 {
                slot.rep.as_mut().expect("checked").lsns.note_durable(w.lsn);
            }
            if let Some(h) = w.hs {
                slot.durable_hs = h;
            }
            last_token.insert(w.group, w.token);
            after.extend(w.after.into_iter().map(|m| (w.group, m)));
        }
        for (g, t) in last_token {
            n.raft_mut(g).expect("checked").on_persisted(t);
        }
        // The node releases its WAL now and then (and after snapshots):
        // here after every batch, so a wrong release point shows sooner.
        if let Err(msg) = self.nodes[i].release_wal() {
            self.fail(msg);
            return;
        }
        for (g, m) in after {
            self.send(i, g, m);
        }
        self.start_disk_batch(i);
        self.drive_all(i);
    }
}

#[cfg(test)]
mod tests {
    use super::block_on;

    /// A seed that panics inside the executor (caught by the sweep) must not
    /// hang the seeds after it: glommio's executor does not survive a panic
    /// unwinding out of its `run`. Before the fix the second `block_on`
    /// parked forever; the deadline turns that into a failure.
    #[test]
    fn a_panic_inside_block_on_leaves_the_next_one_working() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let caught = std::panic::catch_unwind(|| {
                block_on(async {
                    let t = glommio::spawn_local(async {
                        futures_lite::future::yield_now().await;
                        panic!("a seed's assertion");
                    });
                    t.await
                })
            });
            assert!(caught.is_err());
            let mut got = Vec::new();
            for i in 0..3u32 {
                got.push(block_on(async move {
                    glommio::spawn_local(async move {
                        futures_lite::future::yield_now().await;
                        i * 2
                    })
                    .await
                }));
            }
            let _ = tx.send(got);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("block_on hung after a panic inside the previous one");
        assert_eq!(got, vec![0, 2, 4]);
    }
}
