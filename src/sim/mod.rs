//! The deterministic simulator: many [`RawNode`]s, a simulated clock, a
//! network that delays, drops, duplicates and reorders, (asymmetric)
//! partitions, crashes that lose everything not reported persisted, and a
//! client workload of puts and gets checked for linearizability.
//!
//! Everything is driven by one seeded RNG and one ordered event queue: the
//! same [`SimConfig`] gives the same run, event for event (the trace hash
//! proves it).

pub mod linearizability;

use std::collections::{BTreeMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;

use crate::raft::*;
use crate::rng::Rng;
use linearizability::{Op, OpKind};

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
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub reads_by_index: u64,
    pub transfers: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub conf_changes: u64,
    pub voter_cycles_3_5_3: u64,
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
/// Period of the log matching check during a run.
const LOG_CHECK_EVERY_MS: u64 = 250;
/// Clients start no new op this long before the end.
const QUIESCE_MS: u64 = 1_500;

#[derive(Debug, Clone, Hash)]
enum Event {
    Tick(usize),
    Deliver(Message),
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

/// A client command in an entry: [kind u8][client u32][op u64][key u64][value u64].
fn encode_cmd(put: bool, client: usize, op: u64, key: u64, value: u64) -> Bytes {
    let mut b = Vec::with_capacity(29);
    b.push(put as u8);
    b.extend_from_slice(&(client as u32).to_le_bytes());
    b.extend_from_slice(&op.to_le_bytes());
    b.extend_from_slice(&key.to_le_bytes());
    b.extend_from_slice(&value.to_le_bytes());
    Bytes::from(b)
}

struct Cmd {
    put: bool,
    client: usize,
    op: u64,
    key: u64,
    value: u64,
}

/// Decodes a client command; other payloads (a test's own) are opaque.
fn decode_cmd(b: &[u8]) -> Option<Cmd> {
    if b.len() != 29 {
        return None;
    }
    let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    Some(Cmd {
        put: b[0] == 1,
        client: u32::from_le_bytes(b[1..5].try_into().unwrap()) as usize,
        op: u64at(5),
        key: u64at(13),
        value: u64at(21),
    })
}

fn entry_digest(e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    (e.term, e.index, e.kind, &e.data[..]).hash(&mut h);
    h.finish()
}

impl SimNode {
    fn disk_first_index(&self) -> Index {
        self.disk_snapshot.as_ref().map_or(1, |s| s.meta.index + 1)
    }

    /// Makes a snapshot durable: entries after it are kept only if the disk
    /// holds its (index, term), as a storage layer must do.
    fn store_snapshot(&mut self, s: Snapshot) {
        let base = self.disk_first_index();
        let matches = s.meta.index >= base
            && self
                .disk_log
                .get((s.meta.index - base) as usize)
                .is_some_and(|e| e.term == s.meta.term);
        if matches {
            self.disk_log.drain(..=(s.meta.index - base) as usize);
        } else if s.meta.index + 1 > base {
            self.disk_log.clear();
        }
        if self
            .disk_snapshot
            .as_ref()
            .is_none_or(|d| d.meta.index < s.meta.index)
        {
            self.disk_snapshot = Some(s);
        }
    }
}

/// Filler in every snapshot, so that snapshots span several chunks.
const SNAPSHOT_FILLER_BYTES: usize = 300;

fn encode_kv(kv: &BTreeMap<u64, u64>) -> Bytes {
    let mut b = Vec::with_capacity(kv.len() * 16 + SNAPSHOT_FILLER_BYTES);
    for (k, v) in kv {
        b.extend_from_slice(&k.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend((0..SNAPSHOT_FILLER_BYTES).map(|i| 0xF0 ^ (i as u8)));
    Bytes::from(b)
}

fn decode_kv(b: &[u8]) -> BTreeMap<u64, u64> {
    let n = (b.len() - SNAPSHOT_FILLER_BYTES) / 16;
    (0..n)
        .map(|i| {
            let k = u64::from_le_bytes(b[i * 16..i * 16 + 8].try_into().unwrap());
            let v = u64::from_le_bytes(b[i * 16 + 8..i * 16 + 16].try_into().unwrap());
            (k, v)
        })
        .collect()
}

fn kv_digest(kv: &BTreeMap<u64, u64>) -> u64 {
    let mut h = DefaultHasher::new();
    kv.hash(&mut h);
    h.finish()
}

/// A write not yet durable: what the Ready asked for.
struct PendingWrite {
    token: PersistToken,
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    after: Vec<Message>,
}

struct SimNode {
    raft: Option<RawNode>,
    incarnation: u64,
    /// The durable state: survives crashes.
    disk_hs: HardState,
    /// The durable snapshot, and the durable entries after it.
    disk_snapshot: Option<Snapshot>,
    disk_log: Vec<Entry>,
    writes: VecDeque<PendingWrite>,
    /// Writes in the batch under way (0: the disk is idle). Like the WAL,
    /// the disk takes every queued write as one batch with one latency.
    batch_len: usize,
    kv: BTreeMap<u64, u64>,
    applied: Index,
    /// This incarnation's tick period (clock drift between nodes).
    tick_ms: u64,
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
            .map(|_| SimNode {
                raft: None,
                incarnation: 0,
                disk_hs: HardState::default(),
                disk_snapshot: None,
                disk_log: Vec::new(),
                writes: VecDeque::new(),
                batch_len: 0,
                kv: BTreeMap::new(),
                applied: 0,
                tick_ms: cfg.tick_ms,
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
            trace: DefaultHasher::new(),
            report: SimReport {
                seed: cfg.seed,
                ..Default::default()
            },
            failure: None,
            next_value: 1,
            cfg,
        };
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
                    "\n  node {}: {:?} term {} leader {:?} commit {} last {} persisted {} applied {} writes queued {} voters {:?}/{:?} learners {:?}",
                    self.ids[i],
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
                    r.conf().learners
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
        let voters = if i < self.cfg.initial_voters {
            initial
        } else {
            Vec::new()
        };
        let mut c = RaftConfig::new(self.ids[i], voters);
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
        let snap_index = n.disk_snapshot.as_ref().map_or(0, |s| s.meta.index);
        n.raft = Some(RawNode::restart_from(
            cfg,
            n.disk_hs,
            n.disk_snapshot.clone(),
            n.disk_log.clone(),
            snap_index,
        ));
        n.kv = n
            .disk_snapshot
            .as_ref()
            .map(|s| decode_kv(&s.data))
            .unwrap_or_default();
        n.applied = snap_index;
        let j = self.cfg.tick_jitter_ms;
        n.tick_ms = self.cfg.tick_ms - j + self.rng.below(2 * j + 1);
        n.writes.clear();
        n.batch_len = 0;
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.raft.is_none() {
            return;
        }
        // Everything not reported persisted is lost: the pending writes.
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

    fn converged(&self) -> bool {
        let Some(l) = self.current_leader() else {
            return false;
        };
        let leader = self.nodes[l].raft.as_ref().expect("up");
        let (lt, last) = (leader.term(), leader.last_index());
        self.members().into_iter().all(|i| {
            let n = &self.nodes[i];
            n.raft
                .as_ref()
                .is_some_and(|r| r.term() == lt && r.commit_index() == last && n.applied == last)
        })
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

    /// Runs `f` on node `i`'s core (if it is up), then carries out its Readies.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut RawNode) -> R) -> Option<R> {
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
                if let Some(r) = self.nodes[i].raft.as_mut() {
                    r.tick();
                    self.drive(i);
                }
                let tick = self.nodes[i].tick_ms;
                self.schedule(tick, Event::Tick(i));
            }
            Event::Deliver(m) => {
                let i = (m.to - 1) as usize;
                if let Some(r) = self.nodes[i].raft.as_mut() {
                    r.step(m);
                    self.drive(i);
                }
            }
            Event::PersistDone { node, incarnation } => self.persist_done(node, incarnation),
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
                if self.nodes[i].raft.is_none() {
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
                    if self.nodes[i].raft.is_none() {
                        self.start_node(i);
                        self.drive(i);
                    }
                }
            }
        }
    }

    /// A membership step at the leader: add a non-member as learner, promote
    /// a learner, or remove a voter (never below 3) or a learner.
    fn change_membership(&mut self, l: usize) {
        let r = self.nodes[l].raft.as_ref().expect("leader is up");
        let conf = r.conf().clone();
        let outside: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|&id| !conf.voters.contains(&id) && !conf.is_learner(id))
            .collect();
        let pick = |v: &[NodeId], rng: &mut Rng| v[rng.below(v.len() as u64) as usize];
        let res = match self.rng.below(3) {
            0 if !outside.is_empty() => {
                let id = pick(&outside, &mut self.rng);
                self.nodes[l].raft.as_mut().expect("up").add_learner(id)
            }
            1 if !conf.learners.is_empty() => {
                let id = pick(&conf.learners, &mut self.rng);
                self.nodes[l].raft.as_mut().expect("up").promote_learner(id)
            }
            _ if conf.voters.len() > 3 => {
                let id = pick(&conf.voters, &mut self.rng);
                self.nodes[l].raft.as_mut().expect("up").remove_node(id)
            }
            _ if !conf.learners.is_empty() && self.rng.chance(300) => {
                let id = pick(&conf.learners, &mut self.rng);
                self.nodes[l].raft.as_mut().expect("up").remove_node(id)
            }
            _ => return,
        };
        if res.is_ok() {
            self.report.conf_changes += 1;
        }
        self.drive(l);
    }

    /// Members of the group as the current leader sees it (all nodes if none).
    fn members(&self) -> Vec<usize> {
        match self.current_leader() {
            Some(l) => {
                let c = self.nodes[l].raft.as_ref().expect("up").conf();
                (0..self.nodes.len())
                    .filter(|&i| {
                        c.voters.contains(&self.ids[i])
                            || c.voters_outgoing.contains(&self.ids[i])
                            || c.is_learner(self.ids[i])
                    })
                    .collect()
            }
            None => (0..self.nodes.len()).collect(),
        }
    }

    fn inject_fault(&mut self) {
        let n = self.nodes.len();
        let leader = self.current_leader();
        if let Some(l) = leader {
            // Track 3 -> 5 -> 3 voter cycles (membership seeds).
            let v = self.nodes[l].raft.as_ref().expect("up").conf().voters.len();
            if v >= 5 {
                self.seen_five_voters = true;
            } else if v == 3 && self.seen_five_voters {
                self.seen_five_voters = false;
                self.report.voter_cycles_3_5_3 += 1;
            }
        }
        if self.cfg.membership_changes && self.rng.chance(600) {
            if let Some(l) = leader {
                self.change_membership(l);
                return;
            }
        }
        match self.rng.below(10) {
            0 | 1 => {
                let i = self.rng.below(n as u64) as usize;
                self.crash(i);
            }
            2 => {
                if let Some(l) = leader {
                    self.crash(l);
                }
            }
            3 => {
                // Random split into two sides.
                let mut side = vec![false; n];
                for s in side.iter_mut() {
                    *s = self.rng.chance(500);
                }
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = side[a] != side[b];
                    }
                }
                self.report.partitions += 1;
            }
            4 => {
                // Isolate the leader (both directions).
                if let Some(l) = leader {
                    for x in 0..n {
                        if x != l {
                            self.blocked[l][x] = true;
                            self.blocked[x][l] = true;
                        }
                    }
                    self.report.partitions += 1;
                }
            }
            5 => {
                // One-way link failure.
                let a = self.rng.below(n as u64) as usize;
                let b = self.rng.below(n as u64) as usize;
                if a != b {
                    self.blocked[a][b] = true;
                    self.report.partitions += 1;
                }
            }
            6 => {
                for row in &mut self.blocked {
                    row.fill(false);
                }
            }
            7 => {
                self.drop_per_mille = self.rng.below(200);
                self.dup_per_mille = self.rng.below(100);
            }
            8 => {
                let hi = self.rng.range(2, 60);
                self.delay_ms = (1, hi);
                let dhi = self.rng.range(1, 30);
                self.disk_ms = (0, dhi);
            }
            _ => {
                // Leadership transfer to a random other node.
                if let Some(l) = leader {
                    let t = self.rng.below(n as u64) as usize;
                    if t != l {
                        let target = self.ids[t];
                        let r = self.nodes[l].raft.as_mut().expect("leader is up");
                        if r.transfer_leader(target).is_ok() {
                            self.report.transfers += 1;
                        }
                        self.drive(l);
                    }
                }
            }
        }
    }

    fn current_leader(&self) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = &n.raft {
                if r.role() == Role::Leader && best.is_none_or(|(t, _)| r.term() > t) {
                    best = Some((r.term(), i));
                }
            }
        }
        best.map(|b| b.1)
    }

    fn send(&mut self, m: Message) {
        self.report.messages_sent += 1;
        let (a, b) = ((m.from - 1) as usize, (m.to - 1) as usize);
        if self.blocked[a][b] || self.rng.chance(self.drop_per_mille) {
            self.report.messages_dropped += 1;
            return;
        }
        if self.rng.chance(self.dup_per_mille) {
            let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
            self.schedule(d, Event::Deliver(m.clone()));
        }
        let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
        self.schedule(d, Event::Deliver(m));
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
            if let Some(ss) = rd.soft_state {
                if ss.role == Role::Leader {
                    self.on_new_leader(i, ss.term);
                }
            }
            let _ = term;
            for m in rd.messages.iter().cloned() {
                self.send(m);
            }
            // Queue the write; it becomes durable when its batch's PersistDone fires.
            let token = rd.token();
            self.nodes[i].writes.push_back(PendingWrite {
                token,
                hard_state: rd.hard_state,
                snapshot: rd.snapshot.clone(),
                entries: rd.entries,
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
            if let Some(hs) = w.hard_state {
                n.disk_hs = hs;
            }
            if let Some(s) = w.snapshot {
                n.store_snapshot(s);
            }
            if let Some(first) = w.entries.first() {
                // A later write for an index supersedes it and drops what follows.
                let base = n.disk_first_index();
                assert!(first.index >= base, "sim disk: entries below the snapshot");
                n.disk_log.truncate((first.index - base) as usize);
                assert_eq!(
                    base + n.disk_log.len() as u64,
                    first.index,
                    "sim disk: entries must be contiguous"
                );
                n.disk_log.extend(w.entries.iter().cloned());
            }
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
        for m in after {
            self.send(m);
        }
        self.start_disk_batch(i);
        self.drive(i);
    }

    fn on_new_leader(&mut self, i: usize, term: Term) {
        self.report.leaders_elected += 1;
        if let Some(&other) = self.leaders.get(&term) {
            if other != i {
                self.fail(format!(
                    "election safety: nodes {} and {} both leaders of term {term}",
                    self.ids[other], self.ids[i]
                ));
            }
        }
        self.leaders.insert(term, i);
        if self.cfg.faults && !self.healed {
            if self.rng.chance(500) {
                let d = self.rng.range(1, 40);
                self.schedule(d, Event::CrashLeader(i, term));
            }
            if self.rng.chance(250) {
                // Cut off before its no-op leaves: its entries of this term
                // stay on it alone (the "S5 in term 3" of Figure 8).
                for x in 0..self.nodes.len() {
                    if x != i {
                        self.blocked[i][x] = true;
                        self.blocked[x][i] = true;
                    }
                }
                let d = self.rng.range(50, 600);
                self.schedule(d, Event::Unisolate(i));
            }
        }
        // Leader completeness: every entry applied anywhere (hence committed)
        // is in the new leader's log.
        let r = self.nodes[i].raft.as_ref().expect("leader is up");
        // (Entries it compacted are covered by its snapshot, checked by
        // the state digests.)
        let first = r.first_index();
        for (k, (t, d)) in self.applied_history.iter().enumerate() {
            let idx = k as u64 + 1;
            if idx < first {
                continue;
            }
            match r.log().entry(idx) {
                Some(e) if e.term == *t && entry_digest(e) == *d => {}
                _ => {
                    let msg = format!(
                        "leader completeness: node {} leads term {term} without committed entry {idx} (term {t})",
                        self.ids[i]
                    );
                    self.fail(msg);
                    return;
                }
            }
        }
    }

    /// State machine safety across snapshots: the state after applying
    /// index i is the same everywhere, however a node got there.
    fn check_state(&mut self, i: usize, index: Index) {
        let d = kv_digest(&self.nodes[i].kv);
        match self.state_digests.get(&index) {
            Some(&known) if known != d => {
                let msg = format!(
                    "state machine safety: node {} state after index {index} differs from another node's",
                    self.ids[i]
                );
                self.fail(msg);
            }
            Some(_) => {}
            None => {
                self.state_digests.insert(index, d);
            }
        }
    }

    /// Node `i` installed a snapshot from its leader: restore from it.
    fn restore(&mut self, i: usize, snap: Snapshot) {
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
    fn maybe_snapshot(&mut self, i: usize) {
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

    fn apply(&mut self, i: usize, committed: Vec<Entry>) {
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

    fn client_next(&mut self, c: usize) {
        if self.failure.is_some() || self.now + QUIESCE_MS >= self.cfg.fault_ms + self.cfg.heal_ms {
            // Quiet end: let everything in flight commit before the checks.
            return;
        }
        let cl = &mut self.clients[c];
        cl.op_id += 1;
        let key = self.rng.below(self.cfg.keys);
        let op = if self.rng.chance(500) {
            let value = self.next_value;
            self.next_value += 1;
            ClientOp::Put { key, value }
        } else {
            let mode = self.rng.below(3);
            ClientOp::Get {
                key,
                log: mode == 0,
                anywhere: mode == 2,
            }
        };
        let cl = &mut self.clients[c];
        cl.op = Some(op);
        cl.call_ms = self.now;
        cl.proposed = None;
        cl.reading = None;
        let kind = match op {
            ClientOp::Put { value, .. } => OpKind::Put { value },
            ClientOp::Get { .. } => OpKind::Get { result: None },
        };
        self.report.reads_by_index += matches!(op, ClientOp::Get { log: false, .. }) as u64;
        cl.history_idx = self.history.len();
        self.history.push(Op {
            client: c,
            key,
            kind,
            call: self.now,
            ret: None,
        });
        let (id, timeout) = (cl.op_id, self.cfg.client_timeout_ms);
        self.schedule(timeout, Event::ClientTimeout(c, id));
        self.client_propose(c);
    }

    fn client_propose(&mut self, c: usize) {
        let n = self.nodes.len();
        let cl = &self.clients[c];
        let Some(op) = cl.op else { return };
        let target = cl.leader_guess;
        if let ClientOp::Get {
            log: false,
            anywhere,
            ..
        } = op
        {
            self.client_read(c, anywhere);
            return;
        }
        let (put, key, value) = match op {
            ClientOp::Put { key, value } => (true, key, value),
            ClientOp::Get { key, .. } => (false, key, 0),
        };
        let data = encode_cmd(put, c, cl.op_id, key, value);
        let res = match self.nodes[target].raft.as_mut() {
            None => Err(None),
            Some(r) => r.propose(data).map_err(|e| match e {
                ProposeError::NotLeader { leader } => leader,
                ProposeError::Backpressure { .. } => Some(r.id()),
                ProposeError::TransferInProgress { to } => Some(to),
            }),
        };
        match res {
            Ok((idx, term)) => {
                let inc = self.nodes[target].incarnation;
                self.clients[c].proposed = Some((target, inc, idx, term));
                self.drive(target);
            }
            Err(hint) => {
                let next = match hint {
                    Some(id) if id as usize - 1 != target => id as usize - 1,
                    _ => self.rng.below(n as u64) as usize,
                };
                self.clients[c].leader_guess = next;
                let (id, d) = (self.clients[c].op_id, self.rng.range(5, 30));
                self.schedule(d, Event::ClientRetry(c, id));
            }
        }
    }

    fn client_read(&mut self, c: usize, anywhere: bool) {
        let n = self.nodes.len();
        let target = if anywhere {
            self.rng.below(n as u64) as usize
        } else {
            self.clients[c].leader_guess
        };
        let ctx = ((c as u64) << 32) | (self.clients[c].op_id & 0xFFFF_FFFF);
        let inc = self.nodes[target].incarnation;
        let ok = match self.nodes[target].raft.as_mut() {
            None => false,
            Some(r) => r.read_index(ctx).is_ok(),
        };
        if ok {
            self.clients[c].reading = Some((target, inc, ctx, None));
            self.drive(target);
        } else {
            self.clients[c].leader_guess = self.rng.below(n as u64) as usize;
            let (id, d) = (self.clients[c].op_id, self.rng.range(5, 30));
            self.schedule(d, Event::ClientRetry(c, id));
        }
    }

    /// Read states and failures that came out of node `i`'s Ready.
    fn on_reads(&mut self, i: usize, states: Vec<ReadState>, failed: Vec<u64>) {
        let inc = self.nodes[i].incarnation;
        for rs in states {
            if rs.ctx & PROBE_BIT != 0 {
                self.probes_waiting.push((i, inc, rs.ctx, rs.index));
                continue;
            }
            let c = (rs.ctx >> 32) as usize;
            if let Some((node, ninc, ctx, idx @ None)) = &mut self.clients[c].reading {
                if *node == i && *ninc == inc && *ctx == rs.ctx {
                    *idx = Some(rs.index);
                }
            }
        }
        for ctx in failed.into_iter().filter(|c| c & PROBE_BIT == 0) {
            let c = (ctx >> 32) as usize;
            if let Some((node, ninc, cctx, _)) = self.clients[c].reading {
                if node == i && ninc == inc && cctx == ctx {
                    // The read was never served: no effect; move on.
                    self.client_failed(c);
                }
            }
        }
        self.serve_reads(i);
    }

    /// Answers every read at node `i` whose index the node has applied.
    fn serve_reads(&mut self, i: usize) {
        let inc = self.nodes[i].incarnation;
        let applied = self.nodes[i].applied;
        let now = self.now;
        let mut served = Vec::new();
        self.probes_waiting.retain(|&(node, ninc, ctx, index)| {
            if node == i && ninc == inc && applied >= index {
                served.push(ProbeRead {
                    ctx,
                    node,
                    served_ms: now,
                    applied,
                });
                false
            } else {
                node != i || ninc == inc
            }
        });
        self.probes_served.extend(served);
        for c in 0..self.clients.len() {
            let Some((node, ninc, _, Some(index))) = self.clients[c].reading else {
                continue;
            };
            if node != i || ninc != inc || self.nodes[i].applied < index {
                continue;
            }
            let Some(ClientOp::Get { key, .. }) = self.clients[c].op else {
                continue;
            };
            let value = self.nodes[i].kv.get(&key).copied();
            self.client_done(c, Some(value), (0, 0, 0));
        }
    }

    fn client_done(
        &mut self,
        c: usize,
        get_result: Option<Option<u64>>,
        entry: (Index, Term, u64),
    ) {
        let cl = &mut self.clients[c];
        let h = &mut self.history[cl.history_idx];
        h.ret = Some(self.now);
        match get_result {
            Some(r) => h.kind = OpKind::Get { result: r },
            None => {
                self.acked.push(entry);
                self.report.puts_acked += 1;
            }
        }
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        self.report.ops_ok += 1;
        let d = self.rng.range(0, 20);
        self.schedule(d, Event::ClientNext(c));
    }

    fn client_failed(&mut self, c: usize) {
        // The entry was overwritten: the op never took effect; drop it.
        let cl = &mut self.clients[c];
        let idx = cl.history_idx;
        self.history[idx].ret = Some(u64::MAX); // marker: removed below
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        self.report.ops_failed += 1;
        let d = self.rng.range(0, 20);
        self.schedule(d, Event::ClientNext(c));
    }

    fn client_timeout(&mut self, c: usize, op: u64) {
        let cl = &mut self.clients[c];
        if cl.op_id != op || cl.op.is_none() {
            return;
        }
        // Unknown outcome: it may still take effect; its ret stays None.
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        cl.leader_guess = self.rng.below(self.nodes.len() as u64) as usize;
        self.report.ops_unknown += 1;
        self.schedule(0, Event::ClientNext(c));
    }

    /// Log matching (Raft §5.3): if two logs hold an entry with the same
    /// index and term, they are identical up to that index.
    fn check_log_matching(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (Some(x), Some(y)) = (self.nodes[a].raft.as_ref(), self.nodes[b].raft.as_ref())
                else {
                    continue;
                };
                let (x, y) = (x.log(), y.log());
                // The highest index where both hold the same term.
                let mut i = x.last_index().min(y.last_index());
                while i > 0 && x.term(i) != y.term(i) {
                    i -= 1;
                }
                for k in x.first_index().max(y.first_index())..=i {
                    if x.entry(k) != y.entry(k) {
                        let msg = format!(
                            "log matching: nodes {} and {} agree at index {i} but differ at {k}",
                            self.ids[a], self.ids[b]
                        );
                        self.fail(msg);
                        return;
                    }
                }
            }
        }
    }

    fn final_checks(&mut self) {
        // Liveness: with every fault healed for heal_ms, one leader, all logs
        // committed and applied everywhere, and every client answered.
        let Some(l) = self.current_leader() else {
            self.fail("liveness: no leader after the heal phase".into());
            return;
        };
        let leader = self.nodes[l].raft.as_ref().expect("up");
        let (lt, last) = (leader.term(), leader.last_index());
        let members = self.members();
        for &i in &members {
            let n = &self.nodes[i];
            let r = n.raft.as_ref().expect("all nodes restarted at heal");
            if r.term() != lt || r.commit_index() != last || n.applied != last {
                let msg = format!(
                    "liveness: node {} at term {} commit {} applied {}, leader {} at term {lt} last {last}",
                    self.ids[i],
                    r.term(),
                    r.commit_index(),
                    n.applied,
                    self.ids[l]
                );
                self.fail(msg);
                return;
            }
        }
        // Log matching: all members' logs identical (everything is committed now).
        for &i in &members {
            let a = self.nodes[l].raft.as_ref().expect("up").log();
            let b = self.nodes[i].raft.as_ref().expect("up").log();
            for idx in a.first_index().max(b.first_index())..=last {
                let (x, y) = (
                    a.entry(idx).expect("committed"),
                    b.entry(idx).expect("committed"),
                );
                if x != y {
                    let msg = format!(
                        "log matching: nodes {} and {} differ at index {idx}",
                        self.ids[l], self.ids[i]
                    );
                    self.fail(msg);
                    return;
                }
            }
        }
        // Replicas converge.
        for &i in &members {
            if self.nodes[i].kv != self.nodes[l].kv {
                let msg = format!(
                    "convergence: node {} state differs from leader {}",
                    self.ids[i], self.ids[l]
                );
                self.fail(msg);
                return;
            }
        }
        // No acknowledged write lost.
        for &(idx, term, d) in &self.acked {
            if self.applied_history.get((idx - 1) as usize) != Some(&(term, d)) {
                let msg = format!("acknowledged write at index {idx} term {term} lost");
                self.fail(msg);
                return;
            }
        }
        if self.clients.iter().any(|c| c.op.is_some()) {
            self.fail("liveness: a client op is still pending at the end".into());
            return;
        }
        // Linearizability of the client history.
        let history: Vec<Op> = self
            .history
            .iter()
            .filter(|o| o.ret != Some(u64::MAX))
            .cloned()
            .collect();
        if let Err(v) = linearizability::check(&history) {
            self.fail(format!("linearizability: {v}"));
        }
    }
}

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Result<SimReport, SimFailure> {
    Sim::new(cfg).run()
}
