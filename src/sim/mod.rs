//! The deterministic simulator: many [`RawNode`]s, a simulated clock, a
//! network that delays, drops, duplicates and reorders, (asymmetric)
//! partitions, crashes that lose everything not reported persisted (and
//! tear the batch being written at a seeded record), and a client workload
//! of puts and gets checked for linearizability.
//!
//! A node persists through the node's own `storage` code (record codec,
//! `GroupLog` LSN tracking and release point, replay at restart) and its
//! state machine is the node's `kv::Kv`; each restart is checked against
//! what the core had been told was durable.
//!
//! A node's whole disk can be wiped (`identity`): it comes back as a new
//! store, refused by its peers as real nodes refuse it.
//!
//! Replicas have ids of their own (`raft::ConfState::next_replica_id`):
//! messages are routed by the node's own `group::Routes` (the membership's
//! placements, and for non-members the node a message came from), and a
//! node hosts the replica its leader's message created there
//! (`group::creates_replica`): a node outside the group hosts none; a node
//! removed and added again gets a new replica that replaces the old one,
//! as the shard does.
//!
//! Everything is driven by one seeded RNG and one ordered event queue: the
//! same [`SimConfig`] gives the same run, event for event (the trace hash
//! proves it).
//!
//! Over 800 lines: the event loop, the node model (its Ready pipeline, its
//! pauses) and the client plumbing are one topic until the simulator drives
//! the node's own `group::Replica` too (issue #15), which replaces the node
//! model here.

mod checks;
mod identity;
mod nemesis;
mod network;
mod state_machine;
mod workload;

use state_machine::new_kv;
use workload::decode_cmd;

use std::collections::{BTreeMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;

use crate::check::linearizability::{self, Op, OpKind};
use crate::raft::*;
use crate::rng::Rng;
use crate::storage::GroupLog;

/// Read contexts with this bit set are a test's probe reads, not clients'.
const PROBE_BIT: u64 = 1 << 63;

/// A probe read served at `node` at `served_ms`, when that node had applied
/// through `applied` (see [`Sim::probe_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRead {
    pub ctx: u64,
    pub node: usize,
    pub served_ms: u64,
    pub applied: Index,
}

/// One simulation run's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub keys: u64,
    /// Simulated time with faults, then with every fault healed.
    pub fault_ms: u64,
    pub heal_ms: u64,
    pub tick_ms: u64,
    /// Whether to inject faults at all (a fault-free run checks liveness).
    pub faults: bool,
    /// Range of the gap between two faults.
    pub fault_gap_ms: (u64, u64),
    pub client_timeout_ms: u64,
    /// Raft settings applied to every node (id, voters and seed are set per node).
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub inflight_msgs_max: usize,
    pub msg_bytes_max: u64,
    /// Leader lease reads (ReadIndex otherwise).
    pub lease_reads: bool,
    /// Voters of the initial membership (nodes 1..=initial_voters); the
    /// other nodes start outside the group and may be added.
    pub initial_voters: usize,
    /// Whether the nemesis also changes membership (learners added and
    /// promoted, voters removed; e.g. 3 -> 5 -> 3 voters).
    pub membership_changes: bool,
    /// A node snapshots its state machine every this many applied entries
    /// (0: never).
    pub snapshot_every: u64,
    pub compact_keep_entries: u64,
    pub snapshot_chunk_bytes: u64,
    /// Each node ticks every `tick_ms ± tick_jitter_ms` (a fixed rate per
    /// node and incarnation): clock drift, within the lease's bound.
    pub tick_jitter_ms: u64,
    /// Whether the nemesis also pauses nodes (a process stopped, then
    /// resumed with its clock jumped: it ticks what elapsed at once, as the
    /// node's driver does through `group::clock::TickClock`), often a
    /// leader and often cut off from its peers meanwhile.
    pub pauses: bool,
    /// Bound on one WAL record's bytes: a Ready's entries are split into
    /// records of at most this size, as the node splits them by its WAL's
    /// `record_bytes_max`.
    pub record_bytes_max: usize,
    /// Whether the nemesis wipes one node's whole disk, once (`identity`):
    /// it comes back empty, as a new store, refused by its peers.
    pub disk_loss: bool,
    /// Whether peers refuse a node whose store incarnation changed, as
    /// real nodes do. Off only to show what the checkers catch without it.
    pub identity_check: bool,
}

impl SimConfig {
    /// The sweep's configuration for `seed`: flow-control bounds and fault
    /// pace vary with the seed, so that the sweep covers one-entry messages
    /// with a window of one (slow catch-up, where leaders crash mid-backlog)
    /// as well as large pipelined batches.
    pub fn new(nodes: usize, seed: u64) -> Self {
        let mut r = Rng(seed ^ 0xC0F1_6000);
        let msg_bytes_max = [60, 120, 256, 4096][r.below(4) as usize];
        let inflight_msgs_max = [1, 2, 8, 64][r.below(4) as usize];
        let fault_gap_ms = [(50, 300), (200, 900), (500, 1500)][r.below(3) as usize];
        let lease_reads = r.below(2) == 0;
        let snapshot_every = [0, 15, 60, 200][r.below(4) as usize];
        let compact_keep_entries = [0, 5, 50][r.below(3) as usize];
        let snapshot_chunk_bytes = [32, 256, 4096][r.below(3) as usize];
        let membership_changes = nodes >= 4 && r.below(2) == 0;
        // Drawn last: the draws above keep their values per seed.
        let record_bytes_max = [96, 512, 1 << 20][r.below(3) as usize];
        let initial_voters = if membership_changes { 3 } else { nodes };
        // New members are seeded with a snapshot: membership seeds take them.
        let snapshot_every = if membership_changes && snapshot_every == 0 {
            60
        } else {
            snapshot_every
        };
        SimConfig {
            seed,
            nodes,
            clients: 5,
            keys: 4,
            fault_ms: 6_000,
            heal_ms: 4_000,
            tick_ms: 10,
            faults: true,
            fault_gap_ms,
            client_timeout_ms: 800,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max,
            msg_bytes_max,
            lease_reads,
            initial_voters,
            membership_changes,
            snapshot_every,
            compact_keep_entries,
            snapshot_chunk_bytes,
            // 9 to 11 ms: rates differ by at most 11/9, within the lease's
            // bound of 9/7 (RaftConfig::lease_reads).
            tick_jitter_ms: 1,
            pauses: false,
            record_bytes_max,
            disk_loss: false,
            identity_check: true,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub events: u64,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_failed: u64,
    pub puts_acked: u64,
    pub committed: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Nodes paused and resumed.
    pub pauses: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub reads_by_index: u64,
    pub transfers: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub conf_changes: u64,
    pub voter_cycles_3_5_3: u64,
    /// Nodes whose whole disk was wiped.
    pub disks_lost: u64,
    /// Messages dropped because a peer had recorded another incarnation.
    pub messages_refused: u64,
    /// Messages whose addressee's node the sender did not know.
    pub messages_unplaced: u64,
    /// Messages for another replica than the one hosted at the node they
    /// reached (a removed one, or a newer one not created yet).
    pub messages_misrouted: u64,
    /// Replicas created by their leader's seeding snapshot, and replicas
    /// destroyed because a newer one of the group was placed on their node.
    pub replicas_created: u64,
    pub replicas_destroyed: u64,
}

/// A broken guarantee, with what is needed to understand it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub at_ms: u64,
    pub what: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} at {} ms: {}", self.seed, self.at_ms, self.what)
    }
}

/// After the end of the heal phase, the most simulated time allowed for
/// everything to commit and apply everywhere.
const LIVENESS_BOUND_MS: u64 = 20_000;
/// Readies pulled from one node in a row before the run is failed as a spin.
const DRIVE_READIES_MAX: u32 = 10_000;
/// Replica ids of nodes that host no replica yet count down from here
/// (ids a group allocates count up from 1: they never meet).
const PLACEHOLDER_REPLICA: ReplicaId = u64::MAX;
/// Period of the log matching check during a run.
const LOG_CHECK_EVERY_MS: u64 = 250;
/// Clients start no new op this long before the end.
const QUIESCE_MS: u64 = 1_500;

#[derive(Debug, Clone, Hash)]
enum Event {
    Tick(usize),
    /// A paused node runs again.
    Resume(usize),
    /// A message from node `from` (index) to node `to` (index).
    Deliver {
        from: usize,
        to: usize,
        m: Message,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    ClientNext(usize),
    ClientRetry(usize, u64),
    ClientTimeout(usize, u64),
    Fault,
    Restart(usize),
    /// Crash the node if it still leads in this term (leaders that die young
    /// leave partly replicated backlogs: the Figure 8 situations).
    CrashLeader(usize, Term),
    /// Restore the links of a node isolated at its election.
    Unisolate(usize),
    /// Check log matching across every pair of live nodes.
    CheckLogs,
    Heal,
}

fn entry_digest(e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    (e.term, e.index, e.kind, &e.data[..]).hash(&mut h);
    h.finish()
}

impl SimNode {
    /// Forgets everything on its disk for the group: snapshot, WAL records,
    /// what the group needed of them and what was durable (a wiped disk,
    /// or a replica destroyed to make room for a newer one).
    fn erase_storage(&mut self) {
        self.disk_snapshot = None;
        self.wal.clear();
        self.lsns = GroupLog::default();
        self.durable_hs = HardState::default();
        self.crash_persisted = None;
    }

    /// Makes a snapshot durable (the node writes its file before the WAL
    /// records of the Ready that carries it) and releases the WAL records
    /// no longer needed, through `storage::GroupLog` as the shard does.
    fn store_snapshot(&mut self, s: Snapshot) {
        self.lsns.release_through(s.meta.index);
        if self
            .disk_snapshot
            .as_ref()
            .is_none_or(|d| d.meta.index < s.meta.index)
        {
            self.disk_snapshot = Some(s);
        }
        self.release_wal();
    }

    /// Drops the durable records before the lowest LSN the group needs
    /// (`GroupLog::needed_lsn`; the WAL drops whole segments, here whole
    /// records: finer, so a wrong release point shows sooner).
    fn release_wal(&mut self) {
        let needed = self.lsns.needed_lsn();
        let n = self.wal.partition_point(|(l, _)| *l < needed);
        self.wal.drain(..n);
    }

    /// After a restart from disk: what the core had been told was durable
    /// before the crash and is not there now (entries it reported
    /// persisted, its hard state), if anything.
    fn durability_lost(&mut self, hs: &HardState, snap_index: Index) -> Option<String> {
        let r = self.raft.as_ref().expect("just restarted");
        if let Some((p, t)) = self.crash_persisted.take() {
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
        if hs.term < d.term || (hs.term == d.term && hs.vote != d.vote) {
            return Some(format!(
                "restarted with term {} vote {} but term {} vote {} was durable",
                hs.term, hs.vote, d.term, d.vote
            ));
        }
        None
    }

    /// The WAL records of one Ready, as the shard writes them: the hard
    /// state and entries split by `storage::split_records`,
    /// encoded by `storage::encode_record` (group 0), each noted in `lsns`
    /// at submit.
    fn encode_records(
        &mut self,
        hs: Option<HardState>,
        entries: &[Entry],
        record_bytes_max: usize,
    ) -> Vec<(u64, Bytes)> {
        use crate::storage::{encode_record, record_bytes, split_records};
        let mut out = Vec::new();
        for (hs, chunk) in split_records(hs, entries, record_bytes_max) {
            let mut b = vec![0u8; record_bytes(hs.is_some(), chunk)];
            encode_record(&mut b, 0, hs.as_ref(), chunk);
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            self.lsns.note_record(lsn, hs, chunk);
            out.push((lsn, Bytes::from(b)));
        }
        out
    }

    /// The durable records replayed as the node does at start
    /// (`storage::decode_record`, `GroupLog::apply`, then
    /// `GroupLog::take_restart`): (hard state, entries, applied index) and
    /// the log that tracks what the WAL must keep.
    fn replay(&self) -> (crate::storage::Restart, GroupLog) {
        let mut log = GroupLog::default();
        for (lsn, b) in &self.wal {
            let r = crate::storage::decode_record(*lsn, b)
                .unwrap_or_else(|e| panic!("sim disk: a record written here does not decode: {e}"));
            log.apply(*lsn, r);
        }
        let snap = self
            .disk_snapshot
            .as_ref()
            .map(|s| (s.meta.index, s.meta.term));
        let restart = log.take_restart(snap);
        (restart, log)
    }
}

/// A write not yet durable: the WAL records of what the Ready asked for
/// (encoded by `storage::encode_record`, LSNs handed out at submit).
struct PendingWrite {
    token: PersistToken,
    /// The hard state in the first record, if any.
    hs: Option<HardState>,
    records: Vec<(u64, Bytes)>,
    after: Vec<Message>,
}

struct SimNode {
    raft: Option<RawNode>,
    /// The id of the replica this node hosts (`hosted`), or a placeholder
    /// no group ever allocates (`PLACEHOLDER_REPLICA - i`) for a node
    /// outside the group that hosts none yet. Durable, like the catalog:
    /// a replica is created (from its leader's seeding snapshot,
    /// `group::creates_replica`) before anything is stepped into it.
    replica: ReplicaId,
    hosted: bool,
    /// Where answers to non-members go (`group::Routes`, as the node).
    routes: crate::group::Routes,
    incarnation: u64,
    /// The store incarnation (1, then one more per wiped disk).
    store: u64,
    /// Whether its disk was wiped in this run.
    lost: bool,
    /// Kept down by a scripted scenario until `Sim::start`.
    held: bool,
    /// The durable state, which survives crashes: the latest snapshot and
    /// the WAL's records (LSN, payload) after the release point.
    disk_snapshot: Option<Snapshot>,
    wal: Vec<(u64, Bytes)>,
    /// The LSN the next record gets (after a crash: the one after the last
    /// durable record, as the WAL's open does).
    next_lsn: u64,
    /// What the group needs of the WAL, noted at submit; its `hs` is the
    /// hard state last written (what the node's policy compares a new one
    /// with).
    lsns: GroupLog,
    /// The latest hard state in a durable record (what a restart must
    /// find again, or a later one).
    durable_hs: HardState,
    /// At a crash: the core's persisted index and its term, checked
    /// against the log replayed at restart.
    crash_persisted: Option<(Index, Option<Term>)>,
    writes: VecDeque<PendingWrite>,
    /// Writes in the batch under way (0: the disk is idle). Like the WAL,
    /// the disk takes every queued write as one batch with one latency.
    batch_len: usize,
    kv: crate::kv::Kv,
    applied: Index,
    /// This incarnation's tick period (clock drift between nodes).
    tick_ms: u64,
    /// Ticks from the node's clock (None until its first tick event of
    /// this incarnation, so the cadence of its tick events is kept).
    clock: Option<crate::group::clock::TickClock>,
    /// Paused until this time (ms): the process runs nothing meanwhile.
    paused_until: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum ClientOp {
    Put {
        key: u64,
        value: u64,
    },
    /// A read through the log (`log`), or by ReadIndex (lease reads when the
    /// group has them and the lease holds) at the believed leader or, with
    /// `anywhere`, at any node (a follower asks its leader).
    Get {
        key: u64,
        log: bool,
        anywhere: bool,
    },
}

struct Client {
    op_id: u64,
    op: Option<ClientOp>,
    call_ms: u64,
    leader_guess: usize,
    /// Proposed as (node, incarnation, index, term).
    proposed: Option<(usize, u64, Index, Term)>,
    /// A ReadIndex read under way: (node, incarnation, ctx, read index once known).
    reading: Option<(usize, u64, u64, Option<Index>)>,
    history_idx: usize,
}

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    /// blocked[from][to]: messages on that link are dropped.
    blocked: Vec<Vec<bool>>,
    /// known_store[a][b]: the store incarnation node `a` recorded for `b`
    /// (0: never met), as the shard's peer book does (`identity`).
    known_store: Vec<Vec<u64>>,
    drop_per_mille: u64,
    dup_per_mille: u64,
    delay_ms: (u64, u64),
    disk_ms: (u64, u64),
    clients: Vec<Client>,
    history: Vec<Op>,
    /// Every entry applied anywhere, by index: (term, digest).
    applied_history: Vec<(Term, u64)>,
    /// Digest of the state machine after applying each index.
    state_digests: BTreeMap<Index, u64>,
    leaders: BTreeMap<Term, usize>,
    /// Puts acknowledged to clients: (index, term, digest).
    acked: Vec<(Index, Term, u64)>,
    healed: bool,
    seen_five_voters: bool,
    probes_waiting: Vec<(usize, u64, u64, Index)>,
    probes_served: Vec<ProbeRead>,
    probe_seq: u64,
    /// The nodes' election timeout in ticks (all nodes share it).
    election_ticks: u32,
    trace: DefaultHasher,
    report: SimReport,
    failure: Option<SimFailure>,
    next_value: u64,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.nodes;
        let ids: Vec<NodeId> = (1..=n as u64).collect();
        let mut rng = Rng(cfg.seed ^ 0x005E_ED0F_5141);
        let nodes = (0..n)
            .map(|i| SimNode {
                raft: None,
                replica: if i < cfg.initial_voters {
                    ids[i]
                } else {
                    PLACEHOLDER_REPLICA - i as u64
                },
                hosted: i < cfg.initial_voters,
                routes: Default::default(),
                incarnation: 0,
                store: 1,
                lost: false,
                held: false,
                disk_snapshot: None,
                wal: Vec::new(),
                next_lsn: 1,
                lsns: GroupLog::default(),
                durable_hs: HardState::default(),
                crash_persisted: None,
                writes: VecDeque::new(),
                batch_len: 0,
                kv: new_kv(),
                applied: 0,
                tick_ms: cfg.tick_ms,
                clock: None,
                paused_until: None,
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|_| Client {
                op_id: 0,
                op: None,
                call_ms: 0,
                leader_guess: rng.below(n as u64) as usize,
                proposed: None,
                reading: None,
                history_idx: 0,
            })
            .collect();
        let faults = cfg.faults;
        let mut sim = Sim {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            ids,
            blocked: vec![vec![false; n]; n],
            // Every node dials every other at start (a shard links to all
            // its peers at once): they all met their first stores.
            known_store: vec![vec![1; n]; n],
            drop_per_mille: 0,
            dup_per_mille: 0,
            delay_ms: (1, 5),
            disk_ms: (1, 3),
            clients,
            history: Vec::new(),
            applied_history: Vec::new(),
            state_digests: BTreeMap::new(),
            leaders: BTreeMap::new(),
            acked: Vec::new(),
            healed: false,
            seen_five_voters: false,
            probes_waiting: Vec::new(),
            probes_served: Vec::new(),
            probe_seq: 0,
            election_ticks: 0,
            trace: DefaultHasher::new(),
            report: SimReport {
                seed: cfg.seed,
                ..Default::default()
            },
            failure: None,
            next_value: 1,
            cfg,
        };
        sim.election_ticks = sim.node_cfg(0).election_ticks;
        for i in 0..n {
            sim.start_node(i);
            let t = sim.rng.below(sim.cfg.tick_ms);
            sim.schedule(t, Event::Tick(i));
        }
        for c in 0..sim.cfg.clients {
            let t = sim.rng.range(50, 300);
            sim.schedule(t, Event::ClientNext(c));
        }
        if faults {
            let t = sim.rng.range(300, 1000);
            sim.schedule(t, Event::Fault);
        }
        sim.schedule(LOG_CHECK_EVERY_MS, Event::CheckLogs);
        let heal_at = sim.cfg.fault_ms;
        sim.schedule(heal_at, Event::Heal);
        sim
    }

    /// One line per node: role, term, commit, last index, applied.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            match &n.raft {
                None => out.push_str(&format!("\n  node {}: down", self.ids[i])),
                Some(r) => out.push_str(&format!(
                    "\n  node {}{}: replica {} {:?} term {} leader {:?} commit {} last {} persisted {} applied {} writes queued {} voters {:?}/{:?} learners {:?} placements {:?}",
                    self.ids[i],
                    if n.lost { " (disk wiped)" } else { "" },
                    if n.hosted { n.replica.to_string() } else { "none".into() },
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    r.last_index(),
                    r.persisted_index(),
                    n.applied,
                    n.writes.len(),
                    r.conf().voters,
                    r.conf().voters_outgoing,
                    r.conf().learners,
                    r.conf().placements.iter().map(|p| (p.replica, p.node)).collect::<Vec<_>>()
                )),
            }
        }
        for (c, cl) in self.clients.iter().enumerate() {
            out.push_str(&format!(
                "\n  client {c}: op {} {:?} guess node {} proposed {:?}",
                cl.op_id, cl.op, self.ids[cl.leader_guess], cl.proposed
            ));
        }
        out
    }

    fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            let what = format!("{what}{}", self.describe());
            self.failure = Some(SimFailure {
                seed: self.cfg.seed,
                at_ms: self.now,
                what,
            });
        }
    }

    fn schedule(&mut self, after_ms: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after_ms, self.seq), ev);
    }

    fn node_cfg(&self, i: usize) -> ValidRaftConfig {
        let initial: Vec<NodeId> = self.ids[..self.cfg.initial_voters].to_vec();
        // A founding replica has its node's id; any other starts empty and
        // learns the membership from its leader's snapshot.
        let founding = i < self.cfg.initial_voters && self.nodes[i].replica == self.ids[i];
        let voters = if founding { initial } else { Vec::new() };
        let mut c = RaftConfig::new(self.nodes[i].replica, voters);
        c.seed = self.cfg.seed;
        c.pre_vote = self.cfg.pre_vote;
        c.check_quorum = self.cfg.check_quorum;
        c.inflight_msgs_max = self.cfg.inflight_msgs_max;
        c.msg_bytes_max = self.cfg.msg_bytes_max;
        c.lease_reads = self.cfg.lease_reads;
        c.compact_keep_entries = self.cfg.compact_keep_entries;
        c.snapshot_chunk_bytes = self.cfg.snapshot_chunk_bytes;
        c.validate().expect("sim raft config is valid")
    }

    fn start_node(&mut self, i: usize) {
        let cfg = self.node_cfg(i);
        let n = &mut self.nodes[i];
        let (restart, log) = n.replay();
        let snap_index = restart.applied;
        n.raft = Some(RawNode::restart_from(
            cfg,
            restart.hs,
            n.disk_snapshot.clone(),
            restart.entries,
            snap_index,
        ));
        n.lsns = log;
        n.next_lsn = n.wal.last().map_or(n.next_lsn, |(l, _)| l + 1);
        let lost = n.durability_lost(&restart.hs, snap_index);
        n.durable_hs = restart.hs;
        n.kv = match &n.disk_snapshot {
            Some(s) => crate::kv::Kv::restore(&s.data, state_machine::kv_limits())
                .unwrap_or_else(|e| panic!("sim disk: a durable snapshot does not restore: {e}")),
            None => new_kv(),
        };
        n.applied = snap_index;
        let j = self.cfg.tick_jitter_ms;
        n.tick_ms = self.cfg.tick_ms - j + self.rng.below(2 * j + 1);
        n.writes.clear();
        n.batch_len = 0;
        n.clock = None;
        n.paused_until = None;
        if let Some(what) = lost {
            let msg = format!("durability: node {} {what}", self.ids[i]);
            self.fail(msg);
        }
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.raft.is_none() {
            return;
        }
        // What was not reported persisted is lost, except a prefix of the
        // batch being written (the WAL makes records durable in LSN order;
        // the crash tears the batch at a seeded record).
        let batch = n.batch_len;
        let writes: Vec<PendingWrite> = n.writes.drain(..batch).collect();
        // What the core was told is durable must survive: checked at restart.
        let r = n.raft.as_ref().expect("checked");
        let p = r.persisted_index();
        n.crash_persisted = Some((p, r.log().term(p)));
        let total: usize = writes.iter().map(|w| w.records.len()).sum();
        let mut keep = self.rng.below(total as u64 + 1) as usize;
        let n = &mut self.nodes[i];
        for w in writes {
            let k = keep.min(w.records.len());
            if k > 0 {
                if let Some(h) = w.hs {
                    n.durable_hs = h;
                }
            }
            n.wal.extend(w.records.into_iter().take(k));
            keep -= k;
        }
        n.raft = None;
        n.incarnation += 1;
        n.writes.clear();
        n.batch_len = 0;
        self.report.crashes += 1;
        let after = self.rng.range(50, 1500);
        self.schedule(after, Event::Restart(i));
    }

    /// Runs to the end; returns the report or the first broken guarantee.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        let end = self.cfg.fault_ms + self.cfg.heal_ms;
        self.run_until(end);
        // Liveness bound: with every fault healed, everything proposed must
        // be committed and applied everywhere within LIVENESS_BOUND_MS more
        // (small windows catch up a backlog slowly, so convergence is polled).
        while !self.converged() && self.now < end + LIVENESS_BOUND_MS && self.failure.is_none() {
            let t = self.now + 100;
            self.run_until(t);
        }
        self.finish()
    }

    /// Processes every event up to simulated time `t_ms`.
    pub fn run_until(&mut self, t_ms: u64) {
        while let Some((&(t, s), _)) = self.queue.iter().next() {
            if t > t_ms || self.failure.is_some() {
                break;
            }
            let ev = self.queue.remove(&(t, s)).expect("present");
            self.now = t;
            self.report.events += 1;
            (t, &ev).hash(&mut self.trace);
            self.handle(ev);
        }
        self.now = self.now.max(t_ms);
    }

    /// Runs the final checks and returns the outcome.
    pub fn finish(mut self) -> Result<SimReport, SimFailure> {
        if self.failure.is_none() {
            self.final_checks();
        }
        self.report.trace_hash = self.trace.finish();
        match self.failure {
            Some(f) => Err(f),
            None => Ok(self.report),
        }
    }

    /// Simulated time now, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The node at position `i` (node id `i + 1`), if it is up.
    pub fn node(&self, i: usize) -> Option<&RawNode> {
        self.nodes[i].raft.as_ref()
    }

    /// The highest-term leader among the nodes that are up.
    pub fn leader(&self) -> Option<usize> {
        self.current_leader()
    }

    /// Every entry applied anywhere, by index: (term, digest).
    pub fn applied_history(&self) -> &[(Term, u64)] {
        &self.applied_history
    }

    /// Cuts the network into `groups` (node positions); links across groups drop.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let n = self.nodes.len();
        let mut side = vec![usize::MAX; n];
        for (g, members) in groups.iter().enumerate() {
            for &m in *members {
                side[m] = g;
            }
        }
        for a in 0..n {
            for b in 0..n {
                self.blocked[a][b] = side[a] != side[b];
            }
        }
        self.report.partitions += 1;
    }

    /// Restores every link.
    pub fn heal_network(&mut self) {
        for row in &mut self.blocked {
            row.fill(false);
        }
    }

    /// Ticks node `i` by what its clock says elapsed (see
    /// `group::clock`: a pause ages the lease by the whole pause).
    fn tick_due(&mut self, i: usize) {
        if self.nodes[i].raft.is_none() {
            return;
        }
        // First tick of this incarnation: due now (the cadence of its
        // tick events is kept).
        let now_us = self.now * 1000;
        let due = self.clock(i, now_us).due(now_us);
        let r = self.nodes[i].raft.as_mut().expect("checked");
        for _ in 0..due {
            r.tick();
        }
        self.drive(i);
    }

    /// Node `i`'s clock, started with its first tick due at `first_us` if
    /// this incarnation has none yet.
    fn clock(&mut self, i: usize, first_us: u64) -> &mut crate::group::clock::TickClock {
        let election_ticks = self.election_ticks;
        let n = &mut self.nodes[i];
        let tick_us = n.tick_ms * 1000;
        n.clock.get_or_insert_with(|| {
            crate::group::clock::TickClock::new(tick_us, first_us, election_ticks)
        })
    }

    /// How long node `i` stays paused (None: it runs).
    fn paused_for(&self, i: usize) -> Option<u64> {
        self.nodes[i]
            .paused_until
            .map(|until| until.saturating_sub(self.now))
    }

    /// Pauses node `i` for `ms` (a SIGSTOP): it handles nothing meanwhile;
    /// messages and disk completions wait for it, and on resume it ticks
    /// what elapsed before anything else.
    pub fn pause(&mut self, i: usize, ms: u64) {
        if self.nodes[i].raft.is_none() || self.nodes[i].paused_until.is_some() {
            return;
        }
        // The whole pause counts from now.
        let first_us = (self.now + self.nodes[i].tick_ms) * 1000;
        self.clock(i, first_us);
        self.nodes[i].paused_until = Some(self.now + ms);
        self.report.pauses += 1;
        self.schedule(ms, Event::Resume(i));
    }

    /// Runs `f` on node `i`'s core (if it is up and not paused), then
    /// carries out its Readies.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut RawNode) -> R) -> Option<R> {
        if self.nodes[i].paused_until.is_some() {
            return None;
        }
        let r = self.nodes[i].raft.as_mut().map(f);
        self.drive(i);
        r
    }

    /// Starts a linearizable read at node `i` (ReadIndex, or the lease when
    /// the group has lease reads); it shows in `probes_served` once served.
    pub fn probe_read(&mut self, i: usize) -> bool {
        self.probe_seq += 1;
        let ctx = PROBE_BIT | self.probe_seq;
        self.with_node(i, |r| r.read_index(ctx).is_ok())
            .unwrap_or(false)
    }

    pub fn probes_served(&self) -> &[ProbeRead] {
        &self.probes_served
    }

    /// The index node `i`'s state machine has applied through.
    pub fn applied(&self, i: usize) -> Index {
        self.nodes[i].applied
    }

    /// Proposes `data` at node `i` (as a client talking to it would).
    pub fn propose(&mut self, i: usize, data: Bytes) -> Result<(Index, Term), ProposeError> {
        if self.nodes[i].paused_until.is_some() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        let r = self.nodes[i]
            .raft
            .as_mut()
            .ok_or(ProposeError::NotLeader { leader: None })?;
        let res = r.propose(data);
        self.drive(i);
        res
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Tick(i) => {
                if self.nodes[i].paused_until.is_none() {
                    self.tick_due(i);
                }
                let tick = self.nodes[i].tick_ms;
                self.schedule(tick, Event::Tick(i));
            }
            Event::Resume(i) => {
                if self.nodes[i].paused_until.take().is_some() {
                    // Everything that elapsed, before anything else runs.
                    self.tick_due(i);
                }
            }
            Event::Deliver { from, to: i, m } => {
                if let Some(wait) = self.paused_for(i) {
                    // In the socket until the process runs again.
                    self.schedule(wait, Event::Deliver { from, to: i, m });
                } else if !self.identities_admit(from, i) {
                    // Sent to or by a store that is gone.
                } else if self.nodes[i].raft.is_some() {
                    self.deliver(from, i, m);
                }
            }
            Event::PersistDone { node, incarnation } => match self.paused_for(node) {
                Some(wait) => self.schedule(wait, Event::PersistDone { node, incarnation }),
                None => self.persist_done(node, incarnation),
            },
            Event::ClientNext(c) => self.client_next(c),
            Event::ClientRetry(c, op) => {
                let cl = &self.clients[c];
                if cl.op_id == op
                    && cl.op.is_some()
                    && cl.proposed.is_none()
                    && cl.reading.is_none()
                {
                    self.client_propose(c);
                }
            }
            Event::ClientTimeout(c, op) => self.client_timeout(c, op),
            Event::Fault => {
                if !self.healed {
                    self.inject_fault();
                    let t = self
                        .rng
                        .range(self.cfg.fault_gap_ms.0, self.cfg.fault_gap_ms.1);
                    self.schedule(t, Event::Fault);
                }
            }
            Event::CrashLeader(i, term) => {
                let leads = self.nodes[i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader && r.term() == term);
                if leads && !self.healed {
                    self.crash(i);
                }
            }
            Event::CheckLogs => {
                self.check_log_matching();
                self.schedule(LOG_CHECK_EVERY_MS, Event::CheckLogs);
            }
            Event::Unisolate(i) => {
                for x in 0..self.nodes.len() {
                    self.blocked[i][x] = false;
                    self.blocked[x][i] = false;
                }
            }
            Event::Restart(i) => {
                if self.nodes[i].raft.is_none() && !self.nodes[i].held {
                    self.start_node(i);
                    self.drive(i);
                }
            }
            Event::Heal => {
                self.healed = true;
                for row in &mut self.blocked {
                    row.fill(false);
                }
                self.drop_per_mille = 0;
                self.dup_per_mille = 0;
                self.delay_ms = (1, 5);
                self.disk_ms = (1, 3);
                for i in 0..self.nodes.len() {
                    self.nodes[i].held = false;
                    if self.nodes[i].raft.is_none() {
                        self.start_node(i);
                        self.drive(i);
                    }
                }
            }
        }
    }

    /// Pulls every Ready of node `i` and carries it out.
    fn drive(&mut self, i: usize) {
        for round in 0.. {
            let Some(r) = self.nodes[i].raft.as_mut() else {
                return;
            };
            if !r.has_ready() {
                return;
            }
            if round == DRIVE_READIES_MAX {
                // A core that always has a Ready would spin a real shard.
                let msg = format!(
                    "node {} still has a Ready after {round} in a row",
                    self.ids[i]
                );
                self.fail(msg);
                return;
            }
            let rd = r.ready();
            let term = r.term();
            let hs_now = r.hard_state();
            if let Some(ss) = rd.soft_state {
                if ss.role == Role::Leader {
                    self.on_new_leader(i, ss.term);
                }
            }
            let _ = term;
            for m in rd.messages.iter().cloned() {
                self.send(i, m);
            }
            // A snapshot from the leader is made durable first (the node
            // writes its file before the records that follow it).
            if let Some(snap) = &rd.snapshot {
                self.nodes[i].store_snapshot(snap.clone());
            }
            // Queue the write; it becomes durable when its batch's PersistDone fires.
            let token = rd.token();
            // The node's policy: a commit-only change is not written alone.
            let hs = HardState::to_write(
                &self.nodes[i].lsns.hs,
                rd.hard_state,
                hs_now,
                !rd.entries.is_empty(),
            );
            let records = self.nodes[i].encode_records(hs, &rd.entries, self.cfg.record_bytes_max);
            self.nodes[i].writes.push_back(PendingWrite {
                token,
                hs,
                records,
                after: rd.persisted_messages,
            });
            self.start_disk_batch(i);
            if let Some(snap) = rd.snapshot {
                self.restore(i, snap);
            }
            let last_applied = rd.committed.last().map(|e| e.index);
            self.apply(i, rd.committed);
            if let (Some(ix), Some(r)) = (last_applied, self.nodes[i].raft.as_mut()) {
                r.on_applied(ix);
            }
            self.on_reads(i, rd.read_states, rd.reads_failed);
            self.maybe_snapshot(i);
        }
    }

    fn start_disk_batch(&mut self, i: usize) {
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

    fn persist_done(&mut self, i: usize, incarnation: u64) {
        if self.nodes[i].incarnation != incarnation || self.nodes[i].raft.is_none() {
            return;
        }
        let k = std::mem::take(&mut self.nodes[i].batch_len);
        let mut last_token = None;
        let mut after = Vec::new();
        for _ in 0..k {
            let w = self.nodes[i]
                .writes
                .pop_front()
                .expect("batch within queue");
            let n = &mut self.nodes[i];
            if let Some(&(lsn, _)) = w.records.last() {
                n.lsns.note_durable(lsn);
            }
            if let Some(h) = w.hs {
                n.durable_hs = h;
            }
            n.wal.extend(w.records);
            last_token = Some(w.token);
            after.extend(w.after);
        }
        if let Some(t) = last_token {
            self.nodes[i]
                .raft
                .as_mut()
                .expect("checked")
                .on_persisted(t);
        }
        // The node releases its WAL now and then (and after snapshots):
        // here after every batch, so a wrong release point shows sooner.
        self.nodes[i].release_wal();
        for m in after {
            self.send(i, m);
        }
        self.start_disk_batch(i);
        self.drive(i);
    }
}

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Result<SimReport, SimFailure> {
    Sim::new(cfg).run()
}
