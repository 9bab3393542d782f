//! The per-core loop: a shard's replicas (by group id), its WAL, its
//! transport and its clients.
//!
//! One turn: drain inbound messages and client requests → step replicas →
//! tick (one timer for the whole shard, which sleeps until the replicas'
//! first timed event: `TickPlan`) → collect the Readies of all
//! replicas → send their messages (a leader does not wait for its own
//! fsync) → one WAL batch for every replica's entries and hard states →
//! apply what is committed and answer clients → when the WAL reports
//! durable, send acks and votes and report persistence to the replicas. The
//! transport and the WAL write when the turn yields, so everything of a
//! turn is batched.
//!
//! About 800 lines: the loop and the turn's Ready pipeline are one topic;
//! the jobs around them live in the files named below.
//!
//! Where the jobs live: one replica's logic in `crate::group` (its Ready
//! pipeline without I/O, its client intake, its waiters); the record
//! codec, replay and the replica catalog in `crate::storage`; this file
//! keeps the loop and the turn's persistence (WAL batches, durability,
//! apply); `requests.rs` the checks of a request before its replica takes
//! it, and admin requests; `replicas.rs` replicas
//! created and destroyed at run time; `snapshots.rs` snapshot files (taken, and
//! installed from a leader with the Ready parked meanwhile);
//! `disk.rs` WAL retention and the disk-full mode; `load.rs` the rebuild
//! from disk. `ShardConfig` lives in `crate::config`.

mod balancer;
mod disk;
mod load;
mod load_splits;
mod meta_sync;
mod replicas;
mod requests;
mod snapshots;
mod splits;
mod work;

use load::{build_replica, load, replica_config, Loaded};
pub use load_splits::{
    LoadSampler, LOAD_SPLIT_SAMPLES, RANGE_SPLIT_LOAD_SECS_DEFAULT, RANGE_SPLIT_QPS_DEFAULT,
};
pub use snapshots::{
    allocator_trims, trim_allocator, HELPER_JOBS_MAX, HELPER_THREADS, TRIM_AFTER_FREE_BYTES,
};
use snapshots::{snap_err_is_disk_full, SnapshotBudget};
pub use splits::{RANGE_SPLIT_RETRY_MS, SPLIT_TRIM_KEYS_PER_TICK};

pub use replicas::{
    creates_replica, ReplicaApiError, ReplicaInfo, HEARTBEAT_CREATE_WINDOW,
    REMOVED_LEADER_GRACE_ELECTIONS, REPLICAS_CREATED_PER_TURN_MAX, SEEDING_HELD_MSGS_MAX,
    UNKNOWN_HEARTBEATS_MAX,
};

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::TcpListener;
use ringraft_wal::{DmaDisk, Wal, WalError};

use crate::buffers::shrink_after_burst;
pub use crate::config::ShardConfig;
use crate::group::clock::TickClock;
use crate::group::{Gone, GroupId, Replica, ReplicaId};
use crate::identity::PeerBook;
use crate::raft::{Message, PersistToken, Role, Snapshot};
use crate::storage::{self, snapfile, CatalogOp, LogStore, ReplicaDesc};
use crate::transport::{ClientConnId, ClientService, Transport};
use crate::wire::{ClientError, Hello, Reply, Response, PROTOCOL_VERSION};
pub use balancer::{keep_unseen, Balancer, BALANCE_INTERVAL_MS_DEFAULT, OP_UNSEEN_WAIT_MS};
pub use meta_sync::{
    bootstrap_cmd, run_meta_sync, run_range_reporter, MetaLink, META_RECONCILE_INTERVAL_MS_DEFAULT,
    META_SYNC_BACKOFF, META_SYNC_INTERVAL_MS_DEFAULT, RANGE_REPORT_INTERVAL_MS_DEFAULT,
};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {shard}: WAL: {err}")]
    Wal { shard: u32, err: WalError },
    #[error("shard {shard}: {err}")]
    Record {
        shard: u32,
        err: storage::RecordError,
    },
    #[error("shard {shard}: {err}")]
    Snapshot {
        shard: u32,
        err: snapfile::SnapFileError,
    },
    #[error("shard {shard}: group {group}: {what}")]
    Group {
        shard: u32,
        group: u64,
        what: String,
    },
    #[error("shard {shard}: {what}: {err}")]
    Io {
        shard: u32,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("shard {shard}: {err}")]
    Identity {
        shard: u32,
        err: crate::identity::IdentityError,
    },
}

/// A Ready whose persistence is in progress (FIFO across the shard).
struct InFlight {
    group: GroupId,
    token: PersistToken,
    msgs: Vec<Message>,
    /// Durable once the WAL is durable through this LSN (0: nothing written
    /// before it).
    lsn: u64,
}

/// A Ready waiting for its snapshot file (from the leader) to be written
/// (`snapshots.rs`): its I/O beyond the snapshot and the rest of it.
struct Parked {
    replica: ReplicaId,
    io: crate::group::ReadyIo,
    rest: crate::group::ReadyRest,
}

/// A snapshot file from the leader written in the background, and its
/// state machine decoded on the shard's helper thread.
struct InstallDone {
    group: GroupId,
    replica: ReplicaId,
    snap: Snapshot,
    result: Result<crate::kv::Kv, InstallError>,
}

/// Why a leader's snapshot could not be installed.
enum InstallError {
    /// Its file could not be written.
    File(snapfile::SnapFileError),
    /// Its data is not a state machine this code wrote.
    Decode(crate::kv::SnapshotError),
}

/// A snapshot this shard took of one of its replicas, its file durable:
/// the core compacts to it (`finish_snapshots`).
struct Taken {
    group: GroupId,
    replica: ReplicaId,
    snap: Snapshot,
    /// CRC32 of `snap.data`.
    crc: u32,
    /// The core compacted to it when it was taken (`snapshot_to_seed`).
    compacted: bool,
}

pub use crate::metrics::ShardStats;

/// Readies in flight (written, awaiting durability) a shard's queue of
/// them keeps room for once drained ([`shrink_after_burst`]); a cluster
/// start queues one per group and election step, far more.
pub const READIES_IN_FLIGHT_RETAINED: usize = 4096;

/// Peer messages a shard's inbox keeps room for once drained
/// ([`shrink_after_burst`]); up to `TransportConfig::inbox_msgs_max` (~200
/// bytes each) in a burst.
pub const INBOX_RETAINED_MSGS: usize = 4096;

/// A shard's replicas by group id, each boxed: the map's nodes hold
/// pointers, not ~1.8 KB replicas in slots half of which stay empty (ids
/// are inserted in order; 1.5 KiB per idle group, issue #16).
pub(crate) type Replicas = BTreeMap<GroupId, Box<Replica>>;

pub struct Shard {
    cfg: ShardConfig,
    /// What this shard tells the meta group's upkeep tasks on its
    /// executor (`meta_sync`): range descriptors to report, and whether
    /// the meta group's replica here leads.
    meta_link: Rc<MetaLink>,
    /// This shard's replicas by group id. Iterated in id order, so a
    /// turn's work is the same for the same inputs. Invariant: a replica
    /// leaves the map only in `destroy_replica` (which drops its entries
    /// of `inflight`) and in the rebuild after a full disk (which clears
    /// `inflight`), never while a turn processes Readies; so every id in
    /// `inflight` and in a turn's ready list is hosted (`hosted` asserts it).
    replicas: Replicas,
    /// The WAL, the replica catalog in it (invariant: its live entries are
    /// exactly the keys of `replicas`) and the release point.
    store: LogStore<DmaDisk>,
    /// Scratch: ids of the replicas with a Ready this turn.
    ready_ids: Vec<GroupId>,
    /// The work set: replicas to look at for a Ready this turn, and
    /// replicas that tick (`work.rs`).
    work: work::WorkSet,
    /// Replicas that queued reads this turn (`start_reads` asks each one
    /// read index).
    reads_queued: Vec<GroupId>,
    /// Scratch: client answers of one apply.
    answers: Vec<crate::group::Answer>,
    /// Replicas that applied a membership without themselves: destroyed
    /// after the turn's Readies (`replicas.rs`).
    removed: Vec<GroupId>,
    /// Removed replicas that led when removed, with when they stopped
    /// leading (`destroy_removed`).
    handing_over: BTreeMap<GroupId, Option<Instant>>,
    /// Messages that create a replica of a group not hosted here, with the
    /// message itself, stepped once it exists (`replicas.rs`). At most
    /// `REPLICAS_CREATED_PER_TURN_MAX`.
    creating: Vec<(GroupId, u64, crate::raft::Message)>,
    /// When a creating heartbeat of each group not hosted here was first
    /// noted (`replicas::heartbeat_creates`); at most
    /// `UNKNOWN_HEARTBEATS_MAX`.
    unknown_heartbeats: HashMap<GroupId, Instant>,
    /// When `unknown_heartbeats` was last pruned of expired notes (at most
    /// once an election timeout, so a full map costs O(1) per heartbeat).
    unknown_heartbeats_pruned: Instant,
    /// Messages for ranges being made from a split (`seeding`), stepped
    /// into them once made (`replicas::SEEDING_HELD_MSGS_MAX`).
    held_for_seeding: Vec<(GroupId, u64, crate::raft::Message)>,
    transport: Rc<Transport>,
    /// Nodes the transport reported unreachable and not reachable since:
    /// told again to each replica that becomes leader (`report_peers`), so
    /// a leader elected while a node is down may quiesce without it.
    nodes_unreachable: std::collections::BTreeSet<u64>,
    /// Groups whose metrics changed since the last publish (a Ready, a
    /// creation, a destruction): `publish_metrics` sends only those.
    metrics_dirty: std::collections::BTreeSet<GroupId>,
    clients: Rc<ClientService>,
    inflight: VecDeque<InFlight>,
    next_ctx: u64,
    stats: ShardStats,
    /// Snapshot bytes this shard may send now
    /// (`ShardConfig::snapshot_send_bytes_per_sec`).
    snapshot_budget: SnapshotBudget,
    /// Readies parked while their snapshot from the leader is written; no
    /// later Ready of the group is taken meanwhile. Invariant: every key is
    /// hosted (destroying a replica drops its entry).
    installing: BTreeMap<GroupId, Parked>,
    /// Snapshot files from leaders written in the background.
    installs_done: Rc<RefCell<Vec<InstallDone>>>,
    /// Snapshot files written in the background: (group, replica, meta).
    snaps_done: Rc<RefCell<Vec<Taken>>>,
    /// New ranges being made here from split entries their parents
    /// applied (`splits.rs`), by id: their parents (which take no snapshot
    /// meanwhile).
    seeding: BTreeMap<GroupId, GroupId>,
    /// The index of the split each range leading here proposed last
    /// (another is not proposed before it applies).
    splits_proposed: BTreeMap<GroupId, crate::raft::Index>,
    /// When each range leading here last started towards a split by size
    /// (`maybe_split`): not again within `RANGE_SPLIT_RETRY_MS`.
    splits_started: BTreeMap<GroupId, Instant>,
    /// The load of each range that got key requests here since this
    /// shard started (`load_splits`), with the clock its windows count on
    /// (ms since `load_clock`). Entries of ranges no longer hosted are
    /// dropped with them.
    load_samplers: HashMap<GroupId, LoadSampler>,
    load_clock: Instant,
    /// Their first snapshot files, written in the background.
    splits_done: Rc<RefCell<Vec<splits::SplitSeeded>>>,
    /// Replicas a split left holding keys outside their bounds, trimmed
    /// in this order (`trim_split_leftovers`).
    trimming: VecDeque<GroupId>,
    /// Snapshot chunks read from their files in the background, to send
    /// (`snapshots::start_snapshot_reads`).
    chunks_read: Rc<RefCell<Vec<snapshots::ChunkRead>>>,
    /// Superseded snapshot files kept while a follower is being sent them
    /// (`RawNode::snapshot_in_use`): (group, replica, index); unlinked by
    /// `sweep_retained_snapshots` once no transfer uses them.
    snaps_retained: Vec<(GroupId, ReplicaId, u64)>,
    /// A background removal of released WAL segments failed
    /// (`release_wal`): taken up, as a failed release, at the next one.
    wal_release_failed: Rc<RefCell<Option<WalError>>>,
    /// Background removals of released WAL segments under way: a rebuild
    /// from disk (`try_recover_disk`) waits for them, or it would replay
    /// segments they are about to unlink.
    wal_removals: Rc<Cell<usize>>,
    snaps_failed: Rc<RefCell<Vec<snapfile::SnapFileError>>>,
    /// Woken by the background tasks (snapshot files written or failed,
    /// installs decoded, chunks read, split ranges seeded) when they push
    /// their outcome, so the loop takes it up at once, not at a tick.
    background_done: Rc<crate::transport::sync::WaitList>,
    /// Snapshot files being written in the background (taken here, not
    /// installs): at most `SNAPSHOT_WRITES_MAX`.
    snaps_writing: Rc<Cell<usize>>,
    /// Bytes of snapshots taken this turn (`SNAPSHOT_TAKE_BYTES_PER_TURN`).
    snap_bytes_turn: u64,
    /// The last unpinning pass left groups still being written and had
    /// nothing else to do: the next walk waits for this (`unpin_wal`).
    unpin_rest: Option<disk::UnpinRest>,
    snap_dir: PathBuf,
    wal_dir: PathBuf,
    /// The disk filled up: writes are refused, reads served, and the shard
    /// rebuilds itself from disk once the WAL reopens.
    disk_full: bool,
    /// Set from outside (a signal) to stop the shard; whoever sets it
    /// wakes the loop ([`Shard::waker`]).
    stop: Rc<Cell<bool>>,
    /// Fired by the shard's ticker (`TickPlan`), and by [`Shard::waker`].
    ticks: Rc<crate::transport::sync::Ticker>,
    metrics: Option<crate::metrics::MetricsHub>,
    /// Entries per AppendEntries sent.
    append_entries: hdrhistogram::Histogram<u64>,
}

/// Snapshot files a shard writes at once in the background (those it
/// takes to compact a log or to unpin the WAL; not an operator's, nor the
/// one that seeds a new learner). More wait for a later apply or the next
/// unpinning pass (once a second). Each write is several
/// file operations on io_uring's worker threads; ten thousand at once
/// (100,000 groups starting, each pinning the first WAL segment) queued
/// there for seconds, and every io_uring cancellation walks that queue, so
/// the shard's turns took seconds too (issue #16).
pub const SNAPSHOT_WRITES_MAX: usize = 16;

/// Bytes of replica state (`Kv::data_bytes`) one turn puts into
/// snapshots for the shard's own compaction and WAL unpinning, at most:
/// the turn that reaches it takes no further such snapshot (it is put off,
/// counted in `snapshots_deferred`, and taken at a later apply or pass); a
/// turn always takes at least one, whatever its size. Taking one is O(1)
/// on the executor since issue #21 (a view of the persistent map), but
/// encoding it costs the helper thread, and through it the box's CPUs,
/// time in proportion: this spreads that work over turns. (Before views,
/// the copy ran on the executor: 1 GiB in 24 ranges, snapshotted 16 at a
/// time by one unpinning pass, held turns for 0.5-3.7 s.) Snapshots an
/// operator asks for, and those seeding a new learner, are not counted
/// against it.
pub const SNAPSHOT_TAKE_BYTES_PER_TURN: u64 = 32 << 20;

/// Election timeouts from its start that a campaign holds one of the
/// `campaigns_in_flight_max` slots: one that has not ended by then (its
/// quorum is gone, or its vote requests fall in a live leader's lease and
/// go unanswered) campaigns on without a slot, so campaigns that cannot
/// win do not keep those that can from starting.
pub const CAMPAIGN_COUNTED_TIMEOUTS: u64 = 2;

/// Bytes of entries (`Entry::size_bytes`) up to which a group whose
/// entries pin old WAL segments has its log written again whole, with its
/// hard state, in the pass's one batch (`LogStore::rewrite_records`),
/// rather than a snapshot file written for it; a larger log is
/// snapshotted. An idle group's log is its leader's no-op and a few
/// writes: 100,000 groups starting made 100,000 snapshot files, 16 at a
/// time, each pass walking every group (0.08 of a core per node for an
/// hour; issue #16). Far below the WAL's smallest record limit (1 MiB).
pub const WAL_REWRITE_LOG_BYTES_MAX: u64 = 16 << 10;

/// Bytes of logs (`WAL_REWRITE_LOG_BYTES_MAX` each at most) one
/// unpinning pass writes again at most; the groups past it are taken at a
/// later pass (each a second later). The pass waits for its batch inside
/// the shard's turn: 100,000 groups of 16 KiB logs would be 1.6 GB at once.
pub const WAL_REWRITE_PASS_BYTES_MAX: u64 = 8 << 20;

/// `--wal-pin-bytes-max` by default: 512 MiB of WAL (8 segments of the
/// default size) that a group still being written may keep before the
/// unpinning pass snapshots it. A 400 MiB range under a trickle of writes
/// was written out whole every 7-15 s to release a few segments (issue
/// #21); its own compaction (`snapshot-entries`, `snapshot-log-bytes`)
/// comes in minutes. A restart replays at most about this much more.
pub const WAL_PIN_BYTES_MAX_DEFAULT: u64 = 512 << 20;

/// Seconds an unpinning pass that left groups still being written, and
/// found nothing else to do, waits at most before it walks the groups
/// again (it walks sooner once the head moved on a quarter of
/// `wal-pin-records-max` records or into a new segment): a group that
/// stopped being written is then snapshotted, and the shard is not walked
/// every second while a busy group pins the WAL (100,000 groups: ~20 ms).
pub const UNPIN_REST_SECS_MAX: u64 = 10;

/// Segments before the one preceding the head's that the floor of
/// `WAL_RECORDS_KEPT_PER_GROUP` may keep at most: records of one group per
/// group hosted are small (hard states, small logs), but the same count of
/// a busy group's large records would otherwise keep gigabytes.
pub const WAL_FLOOR_SEGMENTS_MAX: u64 = 4;

/// WAL records kept per group hosted, at least, before the unpinning pass
/// (`Shard::unpin_wal`) counts a group's records as pinning the WAL: the
/// effective `wal_pin_records_max` is at least this many times the groups
/// hosted, and the segments kept reach at least that far back. Each group
/// needs one record; with a bound below that, each pass's own rewrites
/// pushed its first ones past the bound, and 100,000 idle groups were
/// walked and partly rewritten every second (issue #16).
pub const WAL_RECORDS_KEPT_PER_GROUP: u64 = 2;

/// A shard turn longer than this, in ms, is logged (WARN) with where its
/// time went: a long turn delays every group's messages and ticks, and
/// past the peers' silence limit they report this node unreachable.
pub const SLOW_TURN_MS: u64 = 500;

/// The longest the shard's ticker sleeps, in ms, when no replica has a
/// timed event sooner (every group quiesced, or followers only, waiting
/// out election timeouts): an idle shard's ticker sleeps this long, in
/// whole ticks and cut at each second's housekeeping (one tick if
/// `tick-ms` is longer), instead of waking it every tick (`tick-ms`): at
/// 20 ms ticks, sleeps of 12, 12, 12, 12 and 2 ticks, 5 a second. It also bounds how late
/// the ticker sees a stuck turn (`StallWatch`): logged by `SLOW_TURN_MS`
/// plus a tick (a stuck turn is looked at every tick once its wanted
/// wake-up has come, which is within this of the turn's start). The ticker never sleeps past the next second's
/// housekeeping nor past one tick short of the ticks `TickClock::due`
/// hands out at once, so idling drops no tick (a timer up to a tick
/// late drops none).
pub const TICKER_SLEEP_MS_MAX: u64 = 250;

/// The most ticks the ticker may sleep after a turn (at least 1): one if
/// the turn left something looked at every tick (`every_tick`: requests
/// waiting for their deadlines, WAL records not yet durable, ...), else
/// [`TICKER_SLEEP_MS_MAX`] in ticks of `tick_ms`, less than
/// `catch_up_max` (`TickClock::catch_up_max`) and no more than `to_second`
/// (ticks to the next second's housekeeping).
fn ticker_sleep_ticks_max(
    every_tick: bool,
    tick_ms: u64,
    catch_up_max: u64,
    to_second: u64,
) -> u64 {
    if every_tick {
        return 1;
    }
    // One tick short of the catch-up bound: a timer that fires late does
    // not push the ticks due past it (`TickClock::due` would drop time).
    (TICKER_SLEEP_MS_MAX / tick_ms.max(1))
        .min(catch_up_max.saturating_sub(1))
        .min(to_second)
        .max(1)
}

/// When the shard loop wants its ticker to wake it next (issue #22: an
/// idle shard woke every tick, ~50 times a second, for nothing). The loop
/// says so at the end of each turn ([`TickPlan::want`]); the ticker sleeps
/// until then, but never less than a tick after it last fired (a loop
/// stuck in a turn says nothing new: the ticker fires when what it last
/// wanted comes, within `TICKER_SLEEP_MS_MAX`, then every tick). It is
/// woken to arm its timer again when the loop wants it earlier than it is
/// armed for, or later for the first time since it fired (after a fire it
/// is armed a tick on, and the turn that fire started says how long it
/// may sleep, while the thread is awake anyway): at most two timers a
/// fire, never one per turn; in steady load the wanted time is the next
/// tick, no later than the ticker's floor, so none is armed again.
#[derive(Default)]
struct TickPlan {
    /// When the loop wants its next wake-up (µs on the shard's clock).
    want_us: Cell<u64>,
    /// No earlier than this: a tick after the ticker last fired.
    floor_us: Cell<u64>,
    /// What the ticker's timer is armed for.
    armed_us: Cell<u64>,
    /// Armed at the floor by a fire, before the turn it started said what
    /// it wants: a later wanted time arms the timer again, once per fire
    /// (more often, a load that flips between waking every tick and at a
    /// heartbeat would arm a timer per turn).
    fresh: Cell<bool>,
    rearm: crate::transport::sync::WaitList,
}

impl TickPlan {
    fn want(&self, at_us: u64) {
        self.want_us.set(at_us);
        if self.moved(self.armed_us.get()) {
            self.rearm.wake_all();
        }
    }

    /// Whether the ticker, armed for `armed`, must arm again: the loop
    /// wants it earlier, or later for the first time since it fired.
    fn moved(&self, armed: u64) -> bool {
        let t = self.target();
        t < armed || (t > armed && self.fresh.get())
    }

    fn target(&self) -> u64 {
        self.want_us.get().max(self.floor_us.get())
    }

    /// The ticker: sleeps until the target, again if the loop wanted
    /// another time meanwhile, then fires `ticks` and checks `watch`.
    async fn run(
        &self,
        tick_us: u64,
        now_us: impl Fn() -> u64,
        ticks: &crate::transport::sync::Ticker,
        watch: &StallWatch,
        stop: &Cell<bool>,
        shard: u32,
    ) {
        self.floor_us.set(now_us() + tick_us);
        while !stop.get() {
            let target = self.target();
            self.armed_us.set(target);
            let now = now_us();
            if target > now {
                let sleep = async {
                    glommio::timer::sleep(Duration::from_micros(target - now)).await;
                    false
                };
                let earlier = async {
                    self.rearm.wait_until(|| self.moved(target)).await;
                    true
                };
                if sleep.or(earlier).await {
                    self.fresh.set(false);
                    continue;
                }
                // What the loop wants moved later while the timer ran
                // out (not yet seen by this task): no turn for nothing.
                if self.target() > now_us() {
                    continue;
                }
            }
            self.floor_us.set(now_us() + tick_us);
            self.fresh.set(true);
            ticks.fire();
            watch.check(shard);
        }
    }
}

/// Watches the shard loop from its tick task: a turn still running
/// after `SLOW_TURN_MS` is logged (WARN) with the step it waits in, again
/// each time its age doubles. The slow-turn log comes only when a turn
/// ends; a turn stuck on an await (a WAL sync the disk holds, a full WAL
/// queue) would otherwise say nothing while its peers, which the
/// transport still answers, see a live node whose groups do not move.
#[derive(Default)]
struct StallWatch {
    /// When the running turn started (none while the loop waits for work).
    since: Cell<Option<Instant>>,
    /// The step of the turn under way (what it awaits, if it is stuck).
    step: Cell<&'static str>,
    /// The turn's age, in ms, past which it is logged next.
    next_ms: Cell<u64>,
}

impl StallWatch {
    fn begin(&self) {
        self.since.set(Some(Instant::now()));
        self.step.set("ticks");
        self.next_ms.set(SLOW_TURN_MS);
    }

    fn step(&self, step: &'static str) {
        self.step.set(step);
    }

    fn idle(&self) {
        self.since.set(None);
    }

    /// Logs the running turn if it is older than the next threshold.
    fn check(&self, shard: u32) {
        let Some(t) = self.since.get() else {
            return;
        };
        let ms = t.elapsed().as_millis() as u64;
        if ms < self.next_ms.get() {
            return;
        }
        self.next_ms.set(ms.saturating_mul(2));
        tracing::warn!(
            shard,
            ms,
            step = self.step.get(),
            "shard turn still running: its groups neither send nor receive until it ends"
        );
    }
}

/// Watches the WAL from the shard loop's ticks: records waiting for
/// durability while the durable LSN has not moved for `SLOW_TURN_MS` are
/// logged (WARN) with the step the WAL's writer awaits, again each time
/// the wait doubles. Every acknowledgement of this shard waits on it: a
/// follower here looks alive to its leaders (the transport answers) but
/// acknowledges nothing, and its leaders' own entries do not commit here.
struct WalWatch {
    durable: u64,
    since: Instant,
    next_ms: u64,
}

impl WalWatch {
    fn new() -> WalWatch {
        WalWatch {
            durable: 0,
            since: Instant::now(),
            next_ms: SLOW_TURN_MS,
        }
    }

    fn check(&mut self, wal: &ringraft_wal::Wal<DmaDisk>, shard: u32) {
        let durable = wal.durable_lsn();
        let waiting = wal.next_lsn().saturating_sub(1).saturating_sub(durable);
        if waiting == 0 || durable != self.durable {
            self.durable = durable;
            self.since = Instant::now();
            self.next_ms = SLOW_TURN_MS;
            return;
        }
        let ms = self.since.elapsed().as_millis() as u64;
        if ms < self.next_ms {
            return;
        }
        self.next_ms = ms.saturating_mul(2);
        tracing::warn!(
            shard,
            ms,
            records = waiting,
            durable_lsn = durable,
            writer = wal.writer_step(),
            nudges = wal.stats().write_nudges,
            "WAL records not durable yet: this shard acknowledges nothing until they are"
        );
    }
}

/// The phases of a shard turn, in order (`Shard::run`).
#[derive(Debug, Clone, Copy)]
enum TurnPhase {
    Ticks,
    /// The once-a-second work: metrics, the peer book, WAL unpinning.
    Housekeeping,
    Messages,
    Requests,
    Readies,
    Durable,
}

/// Where one turn's time went, for the slow-turn log (`SLOW_TURN_MS`).
struct TurnTimes {
    start: Instant,
    last: Instant,
    /// µs spent in each `TurnPhase`.
    us: [u64; 6],
    msgs: usize,
    readies: u64,
}

impl TurnTimes {
    fn begin() -> TurnTimes {
        let now = Instant::now();
        TurnTimes {
            start: now,
            last: now,
            us: [0; 6],
            msgs: 0,
            readies: 0,
        }
    }

    fn end(&mut self, phase: TurnPhase) {
        let now = Instant::now();
        self.us[phase as usize] = (now - self.last).as_micros() as u64;
        self.last = now;
    }

    /// Logs the turn if it took `SLOW_TURN_MS` or more; whether it did.
    fn report(&self, shard: u32) -> bool {
        let ms = (self.last - self.start).as_millis() as u64;
        let slow = ms >= SLOW_TURN_MS;
        if slow {
            let [ticks, housekeeping, messages, requests, readies, durable] =
                self.us.map(|us| us / 1000);
            tracing::warn!(
                shard,
                ms,
                ticks,
                housekeeping,
                messages,
                requests,
                readies,
                durable,
                msgs = self.msgs,
                readies_taken = self.readies,
                "slow turn (ms per phase)"
            );
        }
        slow
    }
}

fn wal_err(shard: u32) -> impl Fn(WalError) -> ShardError {
    move |err| ShardError::Wal { shard, err }
}

impl Shard {
    /// The link this shard keeps with the meta group's upkeep tasks
    /// ([`run_meta_sync`], [`run_range_reporter`]), spawned beside it on
    /// its executor.
    pub fn meta_link(&self) -> Rc<MetaLink> {
        self.meta_link.clone()
    }

    /// Opens the shard: replays its WAL and snapshots and builds its
    /// groups. Must run on the shard's executor.
    pub async fn open(
        cfg: ShardConfig,
        stop: Rc<Cell<bool>>,
        metrics: Option<crate::metrics::MetricsHub>,
    ) -> Result<Shard, ShardError> {
        let started = Instant::now();
        let shard = cfg.shard;
        let wal_dir = cfg.dir.join(crate::identity::WAL_DIR);
        let snap_dir = cfg.dir.join(crate::identity::SNAP_DIR);
        for d in [&wal_dir, &snap_dir] {
            std::fs::create_dir_all(d).map_err(|err| ShardError::Io {
                shard,
                what: "creating the data directory",
                err,
            })?;
        }
        let Loaded {
            wal,
            replicas,
            catalog,
            replayed,
        } = load(&cfg, &wal_dir, &snap_dir).await?;
        crate::identity::mark_shard_opened(&cfg.dir)
            .await
            .map_err(|err| ShardError::Identity { shard, err })?;
        tracing::info!(
            shard,
            replicas = replicas.len(),
            logs_dropped = replayed.logs_dropped,
            wal_records = replayed.records,
            snapshots = replayed.snapshots,
            torn_tail = ?replayed.torn_tail,
            ms = started.elapsed().as_millis() as u64,
            "recovered"
        );
        let me = Hello {
            cluster: cfg.cluster,
            node: cfg.node,
            shard,
            shards: cfg.shards,
            version: PROTOCOL_VERSION as u32,
            incarnation: cfg.incarnation,
            expected: 0,
            cuts: cfg.cuts,
            client_addr: cfg.client_addr.parse().ok(),
        };
        let book = PeerBook::open(cfg.dir.join(crate::identity::PEERS_FILE))
            .await
            .map_err(|err| ShardError::Identity { shard, err })?;
        let transport = Transport::with_peer_book(me, cfg.transport.clone(), book);
        for &(node, addr) in &cfg.peers {
            transport.add_peer(node, addr);
        }
        let clients = ClientService::new(me, cfg.transport.clone());
        let book: Vec<(u64, String)> = replicas.values().flat_map(|r| r.address_book()).collect();
        let meta_link = Rc::new(MetaLink::default());
        let mut shard_value = Shard {
            meta_link,
            replicas,
            store: LogStore::new(wal, catalog, cfg.wal.record_bytes_max),
            ready_ids: Vec::new(),
            work: work::WorkSet::default(),
            reads_queued: Vec::new(),
            answers: Vec::new(),
            removed: Vec::new(),
            handing_over: BTreeMap::new(),
            creating: Vec::new(),
            unknown_heartbeats: HashMap::new(),
            unknown_heartbeats_pruned: Instant::now(),
            held_for_seeding: Vec::new(),
            transport,
            nodes_unreachable: Default::default(),
            metrics_dirty: Default::default(),
            clients,
            inflight: VecDeque::new(),
            next_ctx: first_read_ctx(),
            stats: ShardStats::default(),
            snapshot_budget: SnapshotBudget::new(
                cfg.snapshot_send_bytes_per_sec,
                cfg.raft.snapshot_chunk_bytes,
                Instant::now(),
            ),
            installing: BTreeMap::new(),
            installs_done: Rc::default(),
            snaps_done: Rc::default(),
            seeding: BTreeMap::new(),
            splits_proposed: BTreeMap::new(),
            splits_started: BTreeMap::new(),
            load_samplers: HashMap::new(),
            load_clock: Instant::now(),
            splits_done: Rc::default(),
            trimming: VecDeque::new(),
            chunks_read: Rc::default(),
            snaps_retained: Vec::new(),
            wal_release_failed: Rc::default(),
            wal_removals: Rc::default(),
            snaps_failed: Rc::default(),
            background_done: Rc::default(),
            ticks: Rc::default(),
            snaps_writing: Rc::default(),
            snap_bytes_turn: 0,
            unpin_rest: None,
            snap_dir,
            wal_dir,
            disk_full: false,
            stop,
            metrics,
            append_entries: hdrhistogram::Histogram::new_with_bounds(1, 1 << 20, 2)
                .expect("valid bounds"),
            cfg,
        };
        for (n, a) in book {
            shard_value.learn_peer(n, &a);
        }
        shard_value.mark_all();
        shard_value.sync_peers();
        // Restarted on a full disk: the WAL replayed but cannot append.
        // Serve reads and retry every second, as when it fills while
        // running (a node that could not restart on its full disk was
        // found by a 30-minute chaos soak).
        if let Err(err) = shard_value.store.wal().health() {
            if !err.is_disk_full() {
                return Err(ShardError::Wal { shard, err });
            }
            tracing::warn!(shard, "restarted on a full disk: the WAL opened read-only");
            shard_value.enter_disk_full(&err);
        }
        Ok(shard_value)
    }

    /// Wakes the shard's loop as a tick would: for whoever sets the stop
    /// flag given to [`Shard::open`], so the loop sees it at once, not
    /// when its ticker next fires (up to [`TICKER_SLEEP_MS_MAX`] later on
    /// an idle shard).
    pub fn waker(&self) -> impl Fn() + 'static {
        let ticks = self.ticks.clone();
        move || ticks.fire()
    }

    /// Serves until stopped (`stop` set) or a fatal error.
    pub async fn run(
        mut self,
        peer_listener: TcpListener,
        client_listener: TcpListener,
    ) -> Result<(), ShardError> {
        glommio::spawn_local(self.transport.clone().serve(peer_listener)).detach();
        glommio::spawn_local(self.clients.clone().serve(client_listener)).detach();
        // One timer for the shard, in its own task: the loop itself never
        // arms a timer per turn (each costs io_uring submissions).
        // Its sleep follows the replicas' timed events (`TickPlan`).
        let ticks = self.ticks.clone();
        let watch = Rc::new(StallWatch::default());
        let plan = Rc::new(TickPlan::default());
        // Ticks from the monotonic clock, not from timer wake-ups: after a
        // pause the lease has aged by the whole pause (`group::clock`).
        let origin = Instant::now();
        let now_us = move || origin.elapsed().as_micros() as u64;
        let tick_us = self.cfg.tick_ms * 1000;
        {
            let (ticks, watch, plan) = (ticks.clone(), watch.clone(), plan.clone());
            let stop = self.stop.clone();
            let shard = self.cfg.shard;
            glommio::spawn_local(async move {
                plan.run(tick_us, now_us, &ticks, &watch, &stop, shard)
                    .await
            })
            .detach();
        }
        let ticks_per_second = (1000 / self.cfg.tick_ms).max(1);
        let mut tick_count = 0u64;
        let mut clock = TickClock::new(tick_us, now_us() + tick_us, self.cfg.raft.election_ticks);
        // A lease checked late in a long turn counts the ticks since its
        // start too (`raft::Clock::lag`).
        self.work.clock().set_lag_source(clock.lag_source(now_us));
        let mut msgs = Vec::new();
        let mut reqs = Vec::new();
        let mut down = Vec::new();
        let mut wal_watch = WalWatch::new();
        let result = loop {
            if self.stop.get() {
                break Ok(());
            }
            self.begin_turn();
            let mut times = TurnTimes::begin();
            watch.begin();
            // 1. ticks due on the monotonic clock, batched for the whole
            // shard, before any message or request of this turn. Not after
            // the messages: a follower would count the time a heartbeat
            // waited in the inbox (even from before it was sent) as time
            // since it heard its leader, and could vote for another while
            // that leader's lease lasts (lease reads, `raft::read`).
            ticks.take();
            let due = clock.due(now_us());
            if due > 0 {
                // Quiesced replicas are not ticked (`work.rs`).
                let limits = work::CampaignLimits {
                    per_tick: self.cfg.campaigns_per_tick_max,
                    in_flight: self.cfg.campaigns_in_flight_max,
                    window: CAMPAIGN_COUNTED_TIMEOUTS * u64::from(self.cfg.raft.election_ticks),
                };
                let (ticked, campaigns) = self.work.tick(&mut self.replicas, due, limits);
                self.stats.replicas_ticked += ticked as u64;
                self.stats.campaigns += campaigns;
                self.expire_requests(Instant::now());
                if !self.trimming.is_empty() {
                    self.trim_split_leftovers();
                }
                wal_watch.check(self.store.wal(), self.cfg.shard);
                times.end(TurnPhase::Ticks);
                let before = tick_count;
                tick_count += due;
                if before / ticks_per_second != tick_count / ticks_per_second {
                    if self.disk_full {
                        watch.step("disk recovery");
                        if let Err(e) = self.try_recover_disk().await {
                            break Err(e);
                        }
                        if self.disk_full {
                            self.hand_off_leadership();
                        }
                    }
                    self.publish_metrics();
                    self.sweep_retained_snapshots();
                    watch.step("peer book save");
                    self.transport.save_peer_book().await;
                    watch.step("WAL unpinning");
                    if let Err(e) = self.unpin_wal().await {
                        break Err(e);
                    }
                }
            }
            times.end(TurnPhase::Housekeeping);
            // 2. inbound messages
            self.transport.drain_inbox(&mut msgs);
            let n = msgs.len();
            times.msgs = n;
            for (g, from_node, m) in msgs.drain(..) {
                self.on_peer_message(g, from_node, m);
            }
            // It is swapped with the transport's inbox: both shrink in turn.
            shrink_after_burst(&mut msgs, n, INBOX_RETAINED_MSGS);
            if !self.creating.is_empty() {
                watch.step("replica creation");
                if let Err(e) = self.create_from_messages().await {
                    break Err(e);
                }
            }
            times.end(TurnPhase::Messages);
            // 3. client requests
            self.clients.drain(&mut reqs);
            for (conn, r) in reqs.drain(..) {
                self.on_request(conn, r);
            }
            self.start_reads();
            self.transport.take_unreachable(&mut down);
            self.report_peers(&mut down, false);
            self.transport.take_reachable(&mut down);
            self.report_peers(&mut down, true);
            times.end(TurnPhase::Requests);
            // 4. readies → messages, one WAL batch, apply
            let readies = self.stats.readies;
            watch.step("readies (WAL appends)");
            if let Err(e) = self.process_readies().await {
                break Err(e);
            }
            times.readies = self.stats.readies - readies;
            times.end(TurnPhase::Readies);
            // 5. durability → acks, on_persisted
            self.complete_durable();
            watch.step("removed replicas");
            if let Err(e) = self.destroy_removed().await {
                break Err(e);
            }
            watch.step("snapshot installs");
            if let Err(e) = self.finish_installs().await {
                break Err(e);
            }
            watch.step("snapshot files");
            if let Err(e) = self.finish_snapshots().await {
                break Err(e);
            }
            if !self.splits_done.borrow().is_empty() {
                watch.step("split ranges");
                if let Err(e) = self.finish_splits().await {
                    break Err(e);
                }
            }
            self.send_read_chunks();
            times.end(TurnPhase::Durable);
            let _ = times.report(self.cfg.shard);
            if self.retain_active() {
                watch.idle();
                futures_lite::future::yield_now().await;
                continue;
            }
            watch.idle();
            // The next wake-up the ticks owe this shard: its replicas'
            // first timed event, or sooner for what is looked at every
            // tick or each second.
            let every_tick = !self.work.waiting.is_empty()
                || !self.trimming.is_empty()
                || !self.inflight.is_empty()
                || !self.removed.is_empty();
            let to_second = ticks_per_second - tick_count % ticks_per_second;
            let most = ticker_sleep_ticks_max(
                every_tick,
                self.cfg.tick_ms,
                clock.catch_up_max(),
                to_second,
            );
            plan.want(clock.due_at_us(self.work.ticks_to_next_event(most)));
            // Wait for anything to do.
            let wal = self.store.wal().clone();
            let oldest = self.inflight.front().map(|f| f.lsn);
            let wal_failure: Rc<RefCell<Option<WalError>>> = Rc::default();
            let failure = wal_failure.clone();
            let durable = async move {
                match oldest {
                    Some(lsn) if lsn > wal.durable_lsn() => {
                        if let Err(e) = wal.wait_durable(lsn).await {
                            *failure.borrow_mut() = Some(e);
                        }
                    }
                    Some(_) => {}
                    None => futures_lite::future::pending::<()>().await,
                }
            };
            let transport = self.transport.clone();
            let clients = self.clients.clone();
            let snaps_done = self.snaps_done.clone();
            let snaps_failed = self.snaps_failed.clone();
            let installs_done = self.installs_done.clone();
            let chunks_read = self.chunks_read.clone();
            let splits_done = self.splits_done.clone();
            let background_done = self.background_done.clone();
            let snap_poll = async move {
                // Background snapshot writes and chunk reads report through
                // `snaps_done`, `snaps_failed`, `installs_done`,
                // `chunks_read` and `splits_done`, and wake `background_done`.
                background_done
                    .wait_until(|| {
                        !(snaps_done.borrow().is_empty()
                            && snaps_failed.borrow().is_empty()
                            && installs_done.borrow().is_empty()
                            && chunks_read.borrow().is_empty()
                            && splits_done.borrow().is_empty())
                    })
                    .await
            };
            async { transport.inbox_ready().await }
                .or(async { transport.peer_reports_ready().await })
                .or(async { clients.ready().await })
                .or(durable)
                .or(snap_poll)
                .or(ticks.wait())
                .await;
            // A write that will never be durable: a full disk degrades the
            // shard; anything else (an fsync or write error) stops the node.
            let failed = wal_failure.borrow_mut().take();
            if let Some(err) = failed {
                if err.is_disk_full() {
                    self.enter_disk_full(&err);
                } else {
                    break Err(ShardError::Wal {
                        shard: self.cfg.shard,
                        err,
                    });
                }
            }
        };
        self.shutdown().await;
        result
    }

    async fn shutdown(&mut self) {
        self.clients.close();
        self.transport.close();
        // Answer everything still waiting: the outcome of a proposal is
        // unknown (it may still commit elsewhere).
        let mut waiting = Vec::new();
        for r in self.replicas.values_mut() {
            r.drain_waiters(Gone::ShuttingDown, &mut waiting);
        }
        for (conn, id, answer) in waiting {
            self.respond(conn, id, answer);
        }
        if let Some(l) = self.inflight.back().map(|f| f.lsn).filter(|&l| l > 0) {
            let _ = self.store.wal().wait_durable(l).await;
        }
        // Let the writers flush the last responses.
        futures_lite::future::yield_now().await;
        glommio::timer::sleep(Duration::from_millis(20)).await;
        tracing::info!(shard = self.cfg.shard, "stopped");
    }

    /// Adds `node` (peer address of its shard 0) to this shard's transport,
    /// from the replicated address book.
    fn learn_peer(&self, node: u64, addr: &str) {
        if node == self.cfg.node || addr.is_empty() || self.transport.knows(node) {
            return;
        }
        match addr.parse::<SocketAddr>() {
            Ok(a) => {
                let a = crate::route::shard_addr(a, self.cfg.shard);
                tracing::info!(shard = self.cfg.shard, node, addr = %a, "learned a peer");
                self.transport.add_peer(node, a);
            }
            Err(e) => tracing::warn!(node, addr, "address book entry is not an address: {e}"),
        }
    }

    /// Hands a snapshot of this shard's counters to the metrics server.
    fn publish_metrics(&mut self) {
        self.prune_load_samplers();
        let Some(hub) = &self.metrics else {
            // No metrics server: nothing to keep for it.
            self.metrics_dirty.clear();
            return;
        };
        let wal = self.store.wal().stats();
        let mut stats = self.stats;
        stats.groups = self.replicas.len() as u64;
        stats.groups_awake = self.work.awake() as u64;
        stats.peer_links = self.transport.peer_count() as u64;
        stats.candidates = self.work.candidates() as u64;
        let m = crate::metrics::ShardMetrics {
            shard: self.cfg.shard,
            stats,
            transport: self.transport.stats(),
            clients: self.clients.stats(),
            wal_syncs: wal.syncs,
            wal_records: wal.records,
            wal_bytes_written: wal.bytes_written,
            wal_segment_bytes_used: wal.segment_bytes_used,
            wal_write_nudges: wal.write_nudges,
            wal_sync_latency_us: wal.sync_latency_us,
            wal_batch_records: wal.batch_records,
            append_entries: self.append_entries.clone(),
        };
        // Only the groups that changed since the last publish: those that
        // had a Ready, were created or destroyed, and every awake leader
        // (its followers' in-flight counts move with acknowledgements).
        let replicas = &self.replicas;
        let changed = self
            .metrics_dirty
            .iter()
            .copied()
            .chain(self.work.awake_leaders())
            .map(|g| (g, replicas.get(&g).map(|r| group_metrics(r))));
        if hub.try_publish(m, changed) {
            self.metrics_dirty.clear();
        }
    }

    /// The replica of group `gid`. Panics if this shard does not host it
    /// (callers looked it up in this turn, and nothing between destroys).
    fn replica(&self, gid: GroupId) -> &Replica {
        match self.replicas.get(&gid) {
            Some(r) => r,
            None => panic!("shard {}: group {gid} is not hosted here", self.cfg.shard),
        }
    }

    fn replica_mut(&mut self, gid: GroupId) -> &mut Replica {
        hosted(&mut self.replicas, gid)
    }

    fn respond(&self, conn: ClientConnId, id: u64, result: Result<Reply, ClientError>) {
        self.clients.respond(conn, &Response { id, result });
    }

    /// Takes the Ready of every replica that has one (but those parked
    /// for a snapshot install) and carries it out: messages sent, records
    /// appended, committed entries applied. The shard loop calls it every
    /// turn; public so that tests can drive a shard without its loop.
    pub async fn process_readies(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let mut ids = std::mem::take(&mut self.ready_ids);
        ids.clear();
        self.stats.ready_checks += self.work.active.len() as u64;
        // Looked at: out of the set until given work again, or still with
        // a Ready after this one (below). Each was given an input: its
        // next timed event is filed again.
        let marked = std::mem::take(&mut self.work.active);
        for &g in &marked {
            let Some(r) = self.replicas.get_mut(&g) else {
                continue;
            };
            self.work.schedule(g, r);
            if !self.installing.contains_key(&g) && r.raft.has_ready() {
                ids.push(g);
            }
        }
        self.work.debug_check(&self.replicas);
        let result = self.process_ready_ids(shard, &ids).await;
        // Taking a Ready and applying moved what is due (a membership
        // change applied makes a learner a voter, or a voter a learner).
        for &g in &ids {
            let Some(r) = self.replicas.get_mut(&g) else {
                continue;
            };
            self.work.schedule(g, r);
            if r.raft.has_ready() {
                self.work.mark(g);
            }
        }
        self.ready_ids = ids;
        result
    }

    /// Marks group `g` as given work this turn (see `active`).
    pub(super) fn mark(&mut self, g: GroupId) {
        self.work.mark(g);
    }

    /// Marks every hosted replica (a rebuild, a start), for work and for
    /// the metrics, and makes it count ticks from the shard's clock.
    pub(super) fn mark_all(&mut self) {
        for (&g, r) in self.replicas.iter_mut() {
            self.work.adopt(r);
            self.work.mark(g);
            self.metrics_dirty.insert(g);
        }
    }

    /// Keeps in the work set only the replicas that have a Ready to take
    /// (not parked), filing the next timed event of those it drops (they
    /// were given an input since `process_readies`); whether any is left.
    fn retain_active(&mut self) -> bool {
        let (replicas, installing, work) = (&mut self.replicas, &self.installing, &mut self.work);
        let mut active = std::mem::take(&mut work.active);
        active.retain(|&g| {
            let Some(r) = replicas.get_mut(&g) else {
                return false;
            };
            if !installing.contains_key(&g) && r.raft.has_ready() {
                return true;
            }
            work.schedule(g, r);
            false
        });
        work.active = active;
        debug_assert!(
            self.replicas.iter().all(|(g, r)| !r.raft.has_ready()
                || self.work.active.contains(g)
                || self.installing.contains_key(g)),
            "a replica with a Ready is outside the work set"
        );
        !self.work.active.is_empty()
    }

    async fn process_ready_ids(&mut self, shard: u32, ids: &[GroupId]) -> Result<(), ShardError> {
        for &gid in ids {
            let r = hosted(&mut self.replicas, gid);
            self.stats.readies += 1;
            self.metrics_dirty.insert(gid);
            let (mut io, rest) = r.take_ready();
            if let Some(ss) = io.soft_state {
                log_role_change(shard, gid, ss.role, ss.leader, ss.term);
                if gid == crate::route::META_GROUP {
                    self.meta_link.meta_leading.set(ss.role == Role::Leader);
                } else if ss.role == Role::Leader {
                    // A new leader reports its range: the last leader's
                    // report may not have reached the meta group.
                    self.meta_link.report(r, self.cfg.shard);
                }
                if ss.role == Role::Leader {
                    // A node down since before this election was reported
                    // to no replica of this term (`raft::node::quiesce`).
                    report_known_unreachable(&self.nodes_unreachable, r);
                }
            }
            for m in &io.messages {
                if let crate::raft::Body::Append { entries, .. } = &m.body {
                    self.append_entries
                        .saturating_record(entries.len().max(1) as u64);
                }
                send_placed(
                    &self.transport,
                    &mut self.stats,
                    &mut self.snapshot_budget,
                    r,
                    m,
                );
            }
            snapshots::start_snapshot_reads(
                &self.snap_dir,
                &mut self.snapshot_budget,
                &mut self.stats,
                &self.chunks_read,
                &self.background_done,
                r,
                std::mem::take(&mut io.snapshot_reads),
            );
            if let Some(snap) = io.snapshot.take() {
                if !self.disk_full {
                    // Its file is written in the background; the rest of
                    // the Ready waits for it (`snapshots.rs`), the other
                    // groups do not.
                    self.park_for_install(gid, snap, io, rest);
                    continue;
                }
                // With the disk full the state machine still moves to it
                // (committed state); nothing is written.
                let kv = snapshots::decode_snapshot(self.cfg.shard, gid, &snap, &self.cfg.kv)?;
                self.restore(gid, &snap, kv, io.snapshot_dropped_log, false)?;
            }
            self.continue_ready(gid, io, rest).await?;
        }
        Ok(())
    }

    /// The rest of a Ready once its snapshot (if any) is restored: its
    /// records appended to the WAL, its committed entries applied, its
    /// reads served, and its persistence queued for durability.
    async fn continue_ready(
        &mut self,
        gid: GroupId,
        io: crate::group::ReadyIo,
        rest: crate::group::ReadyRest,
    ) -> Result<(), ShardError> {
        let mut lsn = self.inflight.back().map_or(0, |f| f.lsn);
        // An install marker goes out even with nothing else to write (the
        // map lookup only then: a Ready with records carries it anyway).
        let writes = io.has_records()
            || hosted(&mut self.replicas, gid)
                .lsns
                .install_pending
                .is_some();
        if writes && !self.disk_full {
            match self.write_group(gid, io.hard_state, &io.entries).await {
                Ok(l) => lsn = l,
                Err(ShardError::Wal { err, .. }) if err.is_disk_full() => {
                    self.enter_disk_full(&err)
                }
                Err(e) => return Err(e),
            }
        }
        tracing::trace!(
            group = gid,
            entries = io.entries.len(),
            committed = rest.committed().len(),
            lsn,
            "ready"
        );
        let r = hosted(&mut self.replicas, gid);
        // Reused across Readies: no allocation per Ready in steady state.
        let mut answers = std::mem::take(&mut self.answers);
        let mut done = r.finish_ready(rest, self.cfg.scan_limit_max, &mut answers);
        if !done.applied.splits.is_empty() {
            let splits = std::mem::take(&mut done.applied.splits);
            self.start_splits(gid, splits);
        }
        if done.removed {
            self.removed.push(gid);
        }
        self.stats.applied += done.applied.entries;
        for (node, addr) in &done.applied.new_members {
            self.learn_peer(*node, addr);
        }
        let forgotten = done.applied.new_members.iter().any(|(_, a)| a.is_empty());
        if done.applied.conf_changed || forgotten {
            self.sync_peers();
        }
        if done.applied.conf_changed && gid != crate::route::META_GROUP {
            if let Some(r) = self.replicas.get(&gid) {
                if r.raft.role() == Role::Leader {
                    self.meta_link.report(r, self.cfg.shard);
                }
            }
        }
        for (conn, id, r) in answers.drain(..) {
            if matches!(r, Err(ClientError::NotLeader { .. })) {
                self.stats.errors_not_leader += 1;
            }
            self.respond(conn, id, r);
        }
        self.answers = answers;
        if done.applied.entries > 0 {
            self.maybe_snapshot(gid);
            self.maybe_split(gid);
        }
        if self.disk_full {
            // Nothing of it is durable, nor will be: no ack, no report.
            // The shard rebuilds its groups from disk once space is back.
            return Ok(());
        }
        self.inflight.push_back(InFlight {
            group: gid,
            token: done.token,
            msgs: done.persisted_messages,
            lsn,
        });
        Ok(())
    }

    /// Appends the group's hard state `hs` and `entries` to the WAL (one
    /// record, or several if they exceed `record_bytes_max`); the LSN of
    /// the last.
    async fn write_group(
        &mut self,
        gid: GroupId,
        hs: Option<crate::raft::HardState>,
        entries: &[crate::raft::Entry],
    ) -> Result<u64, ShardError> {
        let log = &mut hosted(&mut self.replicas, gid).lsns;
        let (lsn, records) = self
            .store
            .append_group(gid, hs, entries, log)
            .await
            .map_err(wal_err(self.cfg.shard))?;
        self.stats.wal_records += records;
        Ok(lsn)
    }

    /// Starts a turn: counts it, and gives the turn its snapshot budget
    /// (`SNAPSHOT_TAKE_BYTES_PER_TURN`). The shard loop calls it first
    /// thing every turn; public so that tests can drive a shard without
    /// its loop.
    pub fn begin_turn(&mut self) {
        self.stats.turns += 1;
        self.snap_bytes_turn = 0;
    }

    /// Messages held for ranges being made from a split, to be stepped
    /// into them once they exist (`SEEDING_HELD_MSGS_MAX` at most).
    pub fn held_for_seeding(&self) -> usize {
        self.held_for_seeding.len()
    }

    /// Groups not hosted here whose first creating heartbeat is noted
    /// (`replicas::heartbeat_creates`); at most
    /// [`UNKNOWN_HEARTBEATS_MAX`]. Public for tests.
    pub fn unknown_heartbeats_noted(&self) -> usize {
        self.unknown_heartbeats.len()
    }

    /// WAL records this shard submitted that are not durable yet. Public so
    /// that tests driving a shard without its loop can wait for a write.
    pub fn wal_records_not_durable(&self) -> u64 {
        let wal = self.store.wal();
        wal.next_lsn().saturating_sub(wal.durable_lsn() + 1)
    }

    /// Sends the acks and reports persistence of every Ready durable now.
    /// The shard loop calls it every turn; public so that tests can drive
    /// a shard without its loop.
    pub fn complete_durable(&mut self) {
        let durable = self.store.wal().durable_lsn();
        let was = self.inflight.len();
        while self.inflight.front().is_some_and(|f| f.lsn <= durable) {
            let f = self.inflight.pop_front().expect("checked");
            let r = hosted(&mut self.replicas, f.group);
            tracing::trace!(group = f.group, lsn = f.lsn, acks = f.msgs.len(), "durable");
            for m in &f.msgs {
                send_placed(
                    &self.transport,
                    &mut self.stats,
                    &mut self.snapshot_budget,
                    r,
                    m,
                );
            }
            r.raft.on_persisted(f.token);
            r.lsns.note_durable(durable);
            self.work.mark(f.group);
        }
        if self.inflight.is_empty() {
            shrink_after_burst(&mut self.inflight, was, READIES_IN_FLIGHT_RETAINED);
        }
    }

    /// Tells every replica with a peer on one of `nodes` (drained) that
    /// the transport reaches that node again (`reachable`) or not; those
    /// it left awake are looked at. Walks every replica: reports come with
    /// links going down or up and with silences, not with turns.
    fn report_peers(&mut self, nodes: &mut Vec<u64>, reachable: bool) {
        for node in nodes.drain(..) {
            if reachable {
                self.nodes_unreachable.remove(&node);
            } else {
                self.nodes_unreachable.insert(node);
            }
            for (&g, r) in self.replicas.iter_mut() {
                let Some(peer) = r.raft.conf().replica_on(node) else {
                    continue;
                };
                if reachable {
                    r.raft.report_reachable(peer);
                } else {
                    r.raft.report_unreachable(peer);
                }
                // A leader that stays quiesced may still have a message
                // to send (`Quiesce` again to a node back up).
                if !r.raft.quiesced() || r.raft.has_ready() {
                    self.work.mark(g);
                }
            }
        }
    }

    /// Answers requests past their deadline with `Timeout`. Only the
    /// replicas listed with waiters are looked at (`work::WorkSet::waiting`);
    /// those left with none leave the list.
    fn expire_requests(&mut self, now: Instant) {
        let mut late = Vec::new();
        let replicas = &mut self.replicas;
        self.work.waiting.retain(|g| {
            let Some(r) = replicas.get_mut(g) else {
                return false;
            };
            r.expire(now, &mut late);
            r.has_waiters()
        });
        self.stats.errors_timeout += late.len() as u64;
        for (conn, id) in late {
            self.respond(conn, id, Err(ClientError::Timeout));
        }
    }
}

/// Reports to `r`, a new leader, every node the transport reported
/// unreachable and not reachable since: it was not leading to hear it
/// (`raft::node::quiesce`).
fn report_known_unreachable(nodes: &std::collections::BTreeSet<u64>, r: &mut Replica) {
    for &node in nodes {
        if let Some(peer) = r.raft.conf().replica_on(node) {
            r.raft.report_unreachable(peer);
        }
    }
}

/// The replica of `gid`, which the shard's invariant says is hosted (see
/// `Shard::replicas`); a free function so that it borrows only the map.
fn hosted(replicas: &mut Replicas, gid: GroupId) -> &mut Replica {
    match replicas.get_mut(&gid) {
        Some(r) => r,
        None => panic!("group {gid} is not hosted here: a replica left the map during a turn"),
    }
}

/// What the metrics show of a replica (`ringraft_group_*`).
fn group_metrics(g: &Replica) -> crate::metrics::GroupMetrics {
    let leader = g.raft.role() == Role::Leader;
    crate::metrics::GroupMetrics {
        group: g.id,
        role: crate::metrics::role_name(g.raft.role(), g.raft.conf().is_learner(g.raft.id())),
        term: g.raft.term(),
        leader: g.leader_node(),
        commit: g.raft.commit_index(),
        applied: g.kv.applied(),
        inflight: if leader {
            g.raft
                .conf()
                .placements
                .iter()
                .filter(|p| p.replica != g.replica)
                .filter_map(|p| Some((p.node, g.raft.progress(p.replica)?.inflight.len())))
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn log_role_change(shard: u32, group: u64, role: Role, leader: Option<u64>, term: u64) {
    match role {
        Role::Leader => tracing::info!(shard, group, term, "became leader"),
        Role::Follower => tracing::info!(
            shard,
            group,
            term,
            leader = leader.unwrap_or(0),
            "following"
        ),
        Role::Candidate | Role::PreCandidate => {
            tracing::debug!(shard, group, term, ?role, "campaigning")
        }
    }
}

/// The first ReadIndex context of this incarnation: the wall clock in
/// nanoseconds. The core matches a forwarded read to the leader's answer
/// by context alone, so contexts restarting at 1 would let an answer
/// addressed to a previous incarnation (queued before a kill, delivered
/// after the restart, same term) serve a new read at an old index. The
/// shard answers linearizable reads on the leader only today, so this is
/// a guard for when followers forward reads, not the cause of the chaos
/// soak's violations (that was the client; see `Client::call`). Each
/// incarnation starts past every context an earlier one used (they take
/// far fewer than one per nanosecond).
fn first_read_ctx() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        .max(1)
}

/// Sends `m` of replica `r` to the node its addressee lives on
/// (`Replica::node_of`); counted and dropped if that is not known.
/// A snapshot chunk goes only if the shard's budget holds its bytes
/// (`SnapshotBudget`); one held is dropped, and its leader sends it again
/// after the next heartbeat round, as a lost one. A chunk the transport
/// refuses gives its bytes back.
fn send_placed(
    t: &Transport,
    stats: &mut ShardStats,
    budget: &mut SnapshotBudget,
    r: &Replica,
    m: &crate::raft::Message,
) {
    match r.node_of(m.to) {
        Some(node) => {
            let mut bytes = 0;
            if let crate::raft::Body::Snapshot { chunk, .. } = &m.body {
                bytes = chunk.len() as u64;
                if bytes > 0 && !budget.take(bytes, Instant::now()) {
                    stats.snapshot_chunks_held += 1;
                    return;
                }
            }
            send_charged(t, stats, budget, node, r.id, m, bytes);
        }
        None => {
            stats.msgs_unplaced += 1;
            tracing::debug!(
                group = r.id,
                to = m.to,
                "no node known for the addressee: dropped"
            );
        }
    }
}

/// Sends `m` to `node`, with `bytes` of snapshot chunk already taken from
/// the send budget: counted as sent, or given back if the transport did
/// not take it (the link is down, its queue full).
fn send_charged(
    t: &Transport,
    stats: &mut ShardStats,
    budget: &mut SnapshotBudget,
    node: u64,
    group: GroupId,
    m: &crate::raft::Message,
    bytes: u64,
) {
    if t.send(node, group, m) {
        stats.snapshot_bytes_sent += bytes;
    } else {
        budget.refund(bytes);
    }
}

#[cfg(test)]
mod turn_times_tests {
    use super::*;

    /// `SLOW_TURN_MS`: a turn that long is logged, a shorter one is not.
    #[test]
    fn a_turn_of_slow_turn_ms_is_reported() {
        let mut t = TurnTimes::begin();
        t.end(TurnPhase::Ticks);
        assert!(!t.report(0));
        t.start -= Duration::from_millis(SLOW_TURN_MS);
        t.end(TurnPhase::Durable);
        assert!(t.report(0));
        assert!(t.us[TurnPhase::Ticks as usize] < 1_000_000);
    }
}

#[cfg(test)]
mod ticker_tests {
    use super::*;
    use crate::transport::sync::Ticker;

    /// `TICKER_SLEEP_MS_MAX`, in ticks, bounds an idle shard's sleep, and
    /// so do the catch-up bound, the next second and work looked at every
    /// tick.
    #[test]
    fn an_idle_ticker_sleeps_at_most_ticker_sleep_ms_max() {
        assert_eq!(
            ticker_sleep_ticks_max(false, 20, 21, 50),
            TICKER_SLEEP_MS_MAX / 20
        );
        assert_eq!(
            ticker_sleep_ticks_max(false, 1, 10_000, 10_000),
            TICKER_SLEEP_MS_MAX
        );
        assert_eq!(
            ticker_sleep_ticks_max(false, 20, 5, 50),
            4,
            "under the catch-up bound"
        );
        assert_eq!(ticker_sleep_ticks_max(false, 20, 21, 3), 3, "next second");
        assert_eq!(ticker_sleep_ticks_max(true, 20, 21, 50), 1, "every tick");
        assert_eq!(
            ticker_sleep_ticks_max(false, 1000, 21, 1),
            1,
            "at least one"
        );
    }

    /// The ticker sleeps until the loop wants it (an idle shard is not
    /// woken every tick), and wakes as soon as the loop wants it earlier.
    #[test]
    fn the_ticker_sleeps_until_wanted_and_is_woken_earlier_when_asked() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let tick_us = 1_000;
                let origin = Instant::now();
                let now_us = move || origin.elapsed().as_micros() as u64;
                let (plan, ticks, watch) = (
                    Rc::new(TickPlan::default()),
                    Rc::new(Ticker::default()),
                    Rc::new(StallWatch::default()),
                );
                let stop = Rc::new(Cell::new(false));
                let fired = Rc::new(Cell::new(0u32));
                plan.want(now_us() + 3_600_000_000);
                let ticker = {
                    let (plan, ticks, watch, stop) =
                        (plan.clone(), ticks.clone(), watch.clone(), stop.clone());
                    glommio::spawn_local(async move {
                        plan.run(tick_us, now_us, &ticks, &watch, &stop, 0).await
                    })
                };
                let counter = {
                    let (ticks, fired, stop) = (ticks.clone(), fired.clone(), stop.clone());
                    glommio::spawn_local(async move {
                        while !stop.get() {
                            ticks.wait().await;
                            ticks.take();
                            fired.set(fired.get() + 1);
                        }
                    })
                };
                // Fifty ticks' time: ticking every tick would fire ~50
                // times; an idle ticker, wanted an hour on from its start,
                // not once.
                glommio::timer::sleep(Duration::from_micros(50 * tick_us)).await;
                assert_eq!(fired.get(), 0, "fired while idle");
                let before = fired.get();
                // Wanted now: it fires without waiting out its long sleep.
                plan.want(now_us());
                let deadline = Instant::now() + Duration::from_secs(60);
                while fired.get() == before {
                    assert!(Instant::now() < deadline, "not woken when wanted earlier");
                    glommio::timer::sleep(Duration::from_micros(tick_us)).await;
                }
                // The loop's turn then wants it much later: the ticker,
                // armed for a tick after its fire, does not fire for nothing.
                plan.want(now_us() + 3_600_000_000);
                let after = fired.get();
                glommio::timer::sleep(Duration::from_micros(20 * tick_us)).await;
                assert_eq!(
                    fired.get(),
                    after,
                    "fired again for nothing after a turn wanted later"
                );
                stop.set(true);
                plan.want(0);
                ticks.fire();
                ticker.await;
                counter.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

#[cfg(test)]
mod read_ctx_tests {
    /// A later incarnation starts past the contexts an earlier one used.
    #[test]
    fn a_restarted_shard_does_not_reuse_read_contexts() {
        let first = super::first_read_ctx();
        // An incarnation that used a context per microsecond for a while.
        let t0 = std::time::Instant::now();
        let mut used = first;
        while t0.elapsed() < std::time::Duration::from_millis(20) {
            used += 1;
            std::thread::sleep(std::time::Duration::from_micros(1));
        }
        assert!(super::first_read_ctx() > used);
    }
}
