//! The deterministic simulator: many [`RawNode`]s, a simulated clock, a
//! network that delays, drops, duplicates and reorders, (asymmetric)
//! partitions, crashes that lose everything not reported persisted (and
//! tear what was written but not synced, at seeded bytes), and a client workload
//! of puts and gets checked for linearizability.
//!
//! A node persists through the node's own `storage::LogStore` into the
//! real WAL over a fault-injecting `MemDisk` (`disk`: record codec,
//! `GroupLog` LSN tracking, segments, release, the WAL's recovery and the
//! node's replay at restart) and its state machine is the node's `kv::Kv`;
//! each restart is checked against what the core had been told was
//! durable.
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
//! A node hosts a replica of each of the run's groups (`SimConfig::groups`,
//! issue #17) over its one WAL, as a shard does: their Readies are
//! group-committed together, the WAL is released below the lowest LSN any
//! of them needs and replayed for all of them at restart, and a crash, a
//! pause or a cut link hits all of them at once. Keys go to group
//! `key % groups`; every checker runs per group.
//!
//! Ranges split (`SimConfig::splits`, issue #18; `splits`): a split entry
//! proposed at a range's leader makes the new range on every node whose
//! replica applies it, as the shard makes it; clients route by range and
//! follow `KeyNotInRange`, and every write is checked to take effect once
//! across splits.
//!
//! The meta group and the balancer run too (`SimConfig::balancer`, issue
//! #17; `balancer`): the map fed by the ranges' leaders' reports, the
//! node's planner on the meta leader's node, its operations stepped at
//! the ranges' leaders, and the run checked to settle.
//!
//! Each node runs the node's own `group::Replica` (issue #15): its Ready
//! pipeline (`take_ready`, `restore`, `finish_ready`), its client intake
//! (`group::requests`: writes proposed with waiters, reads by ReadIndex or
//! lease), its read batching and its deadlines; clients are its
//! connections, answered by its own apply. What the simulator adds is
//! around it: the disk (`disk`), the network (`network`), the faults
//! (`nemesis`, `identity`) and the checkers (`checks`, `state_machine`).

mod balancer;
mod checks;
mod config;
mod disk;
mod identity;
mod nemesis;
mod network;
mod splits;
mod state_machine;
mod workload;

use std::collections::{BTreeMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;

use crate::check::linearizability::{self, Op, OpKind};
use crate::group::{Answer, GroupId, Replica};
use crate::raft::*;
use crate::rng::Rng;

pub use config::{SimConfig, SimFailure, SimReport};
use disk::{PendingWrite, SimNode, SimReplica};
pub use network::PEER_SILENCE_MS;

/// Read contexts with this bit set are a test's probe reads, not clients'.
const PROBE_BIT: u64 = 1 << 63;

/// The group the test API (`Sim::node`, `Sim::propose`, ...) acts on: the
/// first of the run's groups.
const SIM_GROUP: GroupId = 0;

/// The key of the admin writes a test proposes (`Sim::propose`); never a
/// workload key (those are 8 bytes).
pub const TEST_KEY: &[u8] = b"sim-test/";

/// A probe read served at `node` at `served_ms`, when that node had applied
/// through `applied` (see [`Sim::probe_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRead {
    pub ctx: u64,
    pub node: usize,
    pub served_ms: u64,
    pub applied: Index,
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
    /// A message from node `from` (index) to node `to` (index), for the
    /// replica of `group` there.
    Deliver {
        from: usize,
        to: usize,
        group: GroupId,
        m: Message,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    /// A snapshot's file is written: the core compacts to it
    /// (`state_machine::snapshot_written`).
    SnapshotWritten(SnapshotWrite),
    ClientNext(usize),
    ClientRetry(usize, u64),
    ClientTimeout(usize, u64),
    Fault,
    Restart(usize),
    /// Crash the node if its replica of the group still leads in this term
    /// (leaders that die young leave partly replicated backlogs: the
    /// Figure 8 situations).
    CrashLeader(usize, GroupId, Term),
    /// Restore the links of a node isolated at its election.
    Unisolate(usize),
    /// Check log matching across every pair of live nodes.
    CheckLogs,
    /// Node `at`'s transport reports node `node` reachable again (a link
    /// came up) or not (its connections closed).
    PeerReport {
        at: usize,
        node: usize,
        reachable: bool,
    },
    /// Node `.0`'s transport looks for silent peers (`network::watch_peers`).
    WatchPeers(usize),
    /// A round of the meta leader's node (`SimConfig::balancer`).
    MetaRound,
    Heal,
}

/// A snapshot taken by node `node` (of `replica`, in that incarnation and
/// on that store), its file being written.
#[derive(Debug, Clone, Hash)]
struct SnapshotWrite {
    node: usize,
    group: GroupId,
    incarnation: u64,
    store: u64,
    replica: crate::group::ReplicaId,
    snap: crate::raft::Snapshot,
}

fn entry_digest(e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    (e.term, e.index, e.kind, &e.data[..]).hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy)]
enum ClientOp {
    Put {
        key: u64,
        value: u64,
    },
    /// A linearizable read at the believed leader: by ReadIndex (which
    /// the core serves by its lease when the group has lease reads), or
    /// with `lease`, the node's lease mode (served at once while the
    /// lease holds).
    Get {
        key: u64,
        lease: bool,
    },
}

impl ClientOp {
    fn key(&self) -> u64 {
        match *self {
            ClientOp::Put { key, .. } | ClientOp::Get { key, .. } => key,
        }
    }
}

struct Client {
    op_id: u64,
    op: Option<ClientOp>,
    call_ms: u64,
    leader_guess: usize,
    /// Proposed as (node, group, incarnation, index, term).
    proposed: Option<(usize, GroupId, u64, Index, Term)>,
    /// A read queued for a read index at (node, incarnation).
    reading: Option<(usize, u64)>,
    history_idx: usize,
    /// When the client stops waiting for its op (ms).
    timeout_at: u64,
    /// Attempts at ops sent so far: the request id of the latest.
    attempt: u64,
    /// The answer to this put's attempt is lost (a split was asked for in
    /// its range while it was in flight): it is asked again.
    lose_answer: bool,
}

/// What the checkers know of one group.
#[derive(Debug, Default)]
struct GroupChecks {
    /// The index the group's log starts after: 0, or for a range a split
    /// made, its parent's split entry (issue #18).
    base: Index,
    /// Every entry applied anywhere, by index (from `base + 1`): (term,
    /// digest).
    applied_history: Vec<(Term, u64)>,
    /// Digest of the state machine after applying each index.
    state_digests: BTreeMap<Index, u64>,
    /// The leader of each term (node index).
    leaders: BTreeMap<Term, usize>,
    /// Puts acknowledged to clients: (index, term, digest).
    acked: Vec<(Index, Term, u64)>,
    /// The voters went up to five since the last 3 -> 5 -> 3 cycle.
    seen_five_voters: bool,
}

impl GroupChecks {
    /// The (term, digest) of the entry applied at `index`, if any was.
    fn at(&self, index: Index) -> Option<&(Term, u64)> {
        let k = index.checked_sub(self.base + 1)?;
        self.applied_history.get(k as usize)
    }
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
    /// silent_since[a][b]: since when node `b` has been silent to node
    /// `a`, and whether `a` reported it (`network::watch_peers`).
    silent_since: Vec<Vec<Option<(u64, bool)>>>,
    /// unreachable[a][b]: node `a`'s transport reported node `b`
    /// unreachable and not reachable since (the shard's
    /// `nodes_unreachable`): told again to a replica of `a` that becomes
    /// leader. Cleared when `a` restarts.
    unreachable: Vec<Vec<bool>>,
    /// known_store[a][b]: the store incarnation node `a` recorded for `b`
    /// (0: never met), as the shard's peer book does (`identity`).
    known_store: Vec<Vec<u64>>,
    drop_per_mille: u64,
    dup_per_mille: u64,
    delay_ms: (u64, u64),
    disk_ms: (u64, u64),
    clients: Vec<Client>,
    history: Vec<Op>,
    /// What the checkers know of each group.
    checks: BTreeMap<GroupId, GroupChecks>,
    healed: bool,
    probes_waiting: Vec<(usize, u64, u64, Index)>,
    probes_served: Vec<ProbeRead>,
    probe_seq: u64,
    /// The nodes' election timeout in ticks (all nodes share it).
    election_ticks: u32,
    trace: DefaultHasher,
    report: SimReport,
    failure: Option<SimFailure>,
    next_value: u64,
    /// What simulated time 0 is on the clock of client deadlines
    /// (`group::Waiter::deadline`); only differences are ever used.
    base: std::time::Instant,
    /// The ranges, by their first key: every split applied anywhere
    /// (committed, so in force), as the meta group's map would hold them.
    ranges: BTreeMap<Bytes, GroupId>,
    /// The ranges as the clients know them: learned from `ranges` when a
    /// node refuses an op `KeyNotInRange` (as a client asks the meta
    /// group then), so clients route to a range's parent after a split.
    client_ranges: BTreeMap<Bytes, GroupId>,
    /// Splits the nemesis may still ask for.
    splits_left: u32,
    /// Client writes (session, seq) that took effect, at (range, index)
    /// (`splits::check_exactly_once`).
    writes_applied: std::collections::HashMap<(u64, u64), (GroupId, Index)>,
    /// The id the next split names for its new range (ids are not
    /// reused, as the meta group's `AllocIds`).
    next_group: GroupId,
    /// The meta leader's balancer (`SimConfig::balancer`).
    balancer: balancer::SimBalancer,
    /// The node the operator decommissions and from when (simulated ms;
    /// `SimConfig::decommission`).
    decommission: Option<(NodeId, u64)>,
    /// The nodes that join after the bootstrap, each from when (simulated
    /// ms; `SimConfig::joins`).
    joins: Vec<(NodeId, u64)>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.nodes;
        assert!(
            cfg.splits == 0 || cfg.groups <= 1,
            "SimConfig::splits needs one group to start (keys go to groups by range then)"
        );
        // The exactly-once check (`splits::check_exactly_once`) holds only
        // while no session is dropped: a client asking again after its
        // session went may apply a write a second time, as documented.
        assert!(
            cfg.splits == 0 || cfg.clients < state_machine::kv_limits().sessions_max,
            "SimConfig::splits needs fewer clients ({}) than the sessions a range keeps ({})",
            cfg.clients,
            state_machine::kv_limits().sessions_max
        );
        let ids: Vec<NodeId> = (1..=n as u64).collect();
        let decommission = balancer::decommission_plan(&cfg, &ids);
        let joins = balancer::join_plan(&cfg, &ids);
        let mut rng = Rng(cfg.seed ^ 0x005E_ED0F_5141);
        assert!(
            !cfg.balancer
                || (cfg.initial_voters == 3 && !cfg.membership_changes && cfg.groups <= 1),
            "SimConfig::balancer needs 3 founders (the replication factor), one founding range (its descriptor holds every key) and no membership changes of the nemesis"
        );
        let mut groups: Vec<GroupId> = (0..cfg.groups.max(1)).collect();
        let next_group = groups.len() as GroupId;
        if cfg.balancer {
            groups.push(crate::route::META_GROUP);
        }
        let nodes = (0..n)
            .map(|i| SimNode {
                groups: groups
                    .iter()
                    .map(|&g| {
                        let slot = if i < cfg.initial_voters {
                            SimReplica::new(ids[i], true)
                        } else {
                            SimReplica::new(PLACEHOLDER_REPLICA - i as u64, false)
                        };
                        (g, slot)
                    })
                    .collect(),
                incarnation: 0,
                store: 1,
                lost: false,
                held: false,
                disk: ringraft_wal::MemDisk::new(),
                log: None,
                writes: VecDeque::new(),
                batch_len: 0,
                next_ctx: 1,
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
                timeout_at: 0,
                attempt: 0,
                lose_answer: false,
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
            silent_since: vec![vec![None; n]; n],
            unreachable: vec![vec![false; n]; n],
            // Every node dials every other at start (a shard links to all
            // its peers at once): they all met their first stores.
            known_store: vec![vec![1; n]; n],
            drop_per_mille: 0,
            dup_per_mille: 0,
            delay_ms: (1, 5),
            disk_ms: (1, 3),
            clients,
            history: Vec::new(),
            checks: groups
                .iter()
                .map(|&g| (g, GroupChecks::default()))
                .collect(),
            healed: false,
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
            base: std::time::Instant::now(),
            ranges: BTreeMap::from([(Bytes::new(), SIM_GROUP)]),
            client_ranges: BTreeMap::from([(Bytes::new(), SIM_GROUP)]),
            splits_left: cfg.splits,
            writes_applied: Default::default(),
            next_group,
            balancer: Default::default(),
            decommission,
            joins,
            cfg,
        };
        sim.election_ticks = sim.node_cfg(0, SIM_GROUP).election_ticks;
        for i in 0..n {
            sim.start_node(i);
            sim.catalog_founders(i);
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
        if sim.cfg.balancer {
            sim.schedule(balancer::SIM_META_ROUND_MS, Event::MetaRound);
        }
        // The transport's reports are modelled with quiescence only (see
        // `SimConfig::quiesce`): with them on and quiescence off, seed
        // 2166 (3 nodes) loses an entry a node reported persisted, as
        // seed 171 (5 nodes) does with quiescence on (issue #16).
        if sim.cfg.quiesce {
            for i in 0..n {
                sim.schedule(network::PEER_PING_MS, Event::WatchPeers(i));
            }
        }
        let heal_at = sim.cfg.fault_ms;
        sim.schedule(heal_at, Event::Heal);
        sim
    }

    /// One line per node and group: role, term, commit, last index,
    /// applied.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.up() {
                out.push_str(&format!("\n  node {}: down", self.ids[i]));
                continue;
            }
            for (g, slot) in &n.groups {
                let Some(r) = slot.raft() else { continue };
                out.push_str(&format!(
                    "\n  node {}{} group {g}: replica {} {:?} term {} leader {:?} commit {} last {} persisted {} applied {} voters {:?}/{:?} learners {:?} placements {:?}",
                    self.ids[i],
                    if n.lost { " (disk wiped)" } else { "" },
                    if slot.hosted { slot.replica.to_string() } else { "none".into() },
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    r.last_index(),
                    r.persisted_index(),
                    slot.applied(),
                    r.conf().voters,
                    r.conf().voters_outgoing,
                    r.conf().learners,
                    r.conf().placements.iter().map(|p| (p.replica, p.node)).collect::<Vec<_>>()
                ));
            }
            out.push_str(&format!(
                "\n  node {}: writes queued {}",
                self.ids[i],
                n.writes.len()
            ));
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

    fn node_cfg(&self, i: usize, g: GroupId) -> ValidRaftConfig {
        let initial: Vec<NodeId> = self.ids[..self.cfg.initial_voters].to_vec();
        // A founding replica has its node's id; any other starts empty and
        // learns the membership from its leader's snapshot.
        let replica = self.nodes[i].group(g).replica;
        // (A range a split made has its parent's members, from its first
        // snapshot.)
        let founding = i < self.cfg.initial_voters
            && replica == self.ids[i]
            && (g < self.cfg.groups.max(1) || g == crate::route::META_GROUP);
        // The founders' first candidate, as the shard names one per new
        // group (`RaftConfig::first_candidate`), another node's for each
        // group.
        let first = match initial.len() {
            0 => 0,
            n => initial[(self.cfg.seed.wrapping_add(g) % n as u64) as usize],
        };
        let voters = if founding { initial } else { Vec::new() };
        let mut c = RaftConfig::new(replica, voters);
        if founding {
            c.first_candidate = first;
        }
        c.seed = self.cfg.seed;
        c.pre_vote = self.cfg.pre_vote;
        c.check_quorum = self.cfg.check_quorum;
        c.inflight_msgs_max = self.cfg.inflight_msgs_max;
        c.msg_bytes_max = self.cfg.msg_bytes_max;
        c.lease_reads = self.cfg.lease_reads;
        c.compact_keep_entries = self.cfg.compact_keep_entries;
        c.snapshot_chunk_bytes = self.cfg.snapshot_chunk_bytes;
        c.quiesce = self.cfg.quiesce;
        c.validate().expect("sim raft config is valid")
    }

    /// Writes the creates of node `i`'s founding replicas to its WAL's
    /// catalog, with the founding voters, as a bootstrapped shard does.
    fn catalog_founders(&mut self, i: usize) {
        let voters: Vec<ReplicaId> = self.ids[..self.cfg.initial_voters].to_vec();
        for g in self.nodes[i].group_ids() {
            let slot = self.nodes[i].group(g);
            if !slot.hosted {
                continue;
            }
            // Balancer runs found their range with a descriptor (its
            // keys), as a bootstrapped shard does; the meta group has none.
            let descriptor = if self.cfg.balancer && g != crate::route::META_GROUP {
                self.founding_descriptor(g).to_bytes()
            } else {
                Bytes::new()
            };
            let d = crate::storage::ReplicaDesc {
                group: g,
                replica: slot.replica,
                voters: voters.clone(),
                descriptor,
            };
            let log = self.nodes[i].log.as_ref().expect("up");
            let checked = log.catalog().check_create(&d);
            let bounds = (!d.descriptor.is_empty()).then(|| self.founding_descriptor(g));
            if self.catalog_write(i, checked.map(|()| crate::storage::CatalogOp::Create(d))) {
                let slot = self.nodes[i].group_mut(g);
                slot.cataloged = true;
                if let (Some(d), Some(rep)) = (bounds, slot.rep.as_mut()) {
                    rep.kv.set_bounds(crate::kv::KeyBounds::of_descriptor(&d));
                }
            }
        }
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
        self.report.least_committed_by_a_group = self
            .checks
            .values()
            .map(|c| c.applied_history.len() as u64)
            .min()
            .unwrap_or(0);
        match self.failure {
            Some(f) => Err(f),
            None => Ok(self.report),
        }
    }

    /// One election timeout (the nodes' `RaftConfig::election_ticks` of
    /// `SimConfig::tick_ms`), in ms.
    pub fn election_timeout_ms(&self) -> u64 {
        u64::from(self.election_ticks) * self.cfg.tick_ms
    }

    /// Simulated time now, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The node at position `i` (node id `i + 1`), if it is up.
    pub fn node(&self, i: usize) -> Option<&RawNode> {
        self.nodes[i].raft(SIM_GROUP)
    }

    /// The highest-term leader among the nodes that are up.
    pub fn leader(&self) -> Option<usize> {
        self.current_leader(SIM_GROUP)
    }

    /// Every entry applied anywhere, by index: (term, digest).
    pub fn applied_history(&self) -> &[(Term, u64)] {
        &self.checks[&SIM_GROUP].applied_history
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
    /// `group::clock`: a pause ages the lease by the whole pause), each
    /// group's replica in turn.
    fn tick_due(&mut self, i: usize) {
        if !self.nodes[i].up() {
            return;
        }
        // First tick of this incarnation: due now (the cadence of its
        // tick events is kept).
        let now_us = self.now * 1000;
        let due = self.clock(i, now_us).due(now_us);
        for g in self.nodes[i].group_ids() {
            let Some(rep) = self.nodes[i].group_mut(g).rep.as_mut() else {
                continue;
            };
            // As the shard does (`shard::work`): the clock moves on, and
            // the core acts only if an event of its came due; the ticks
            // between are counted at its next input (`raft::clock`).
            rep.raft.clock().advance(due);
            if rep.raft.due_at() <= rep.raft.clock().now() {
                rep.raft.advance(true);
            }
            // Requests past their deadline are answered `Timeout`, as the
            // shard does at its ticks.
            let mut late = Vec::new();
            rep.expire(
                self.base + std::time::Duration::from_millis(self.now),
                &mut late,
            );
            let mut answers: Vec<Answer> = late
                .into_iter()
                .map(|(conn, id)| (conn, id, Err(crate::wire::ClientError::Timeout)))
                .collect();
            self.on_answers(i, g, &mut answers);
            self.trim_split_leftovers(i, g);
            self.drive(i, g);
        }
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
        if !self.nodes[i].up() || self.nodes[i].paused_until.is_some() {
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
        let r = self.nodes[i].raft_mut(SIM_GROUP).map(f);
        self.drive(i, SIM_GROUP);
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
        self.nodes[i].group(SIM_GROUP).applied()
    }

    /// Proposes `data` at node `i`, as the value of an admin write (client
    /// 0, no session) of key `TEST_KEY` (the node applies only commands).
    pub fn propose(&mut self, i: usize, data: Bytes) -> Result<(Index, Term), ProposeError> {
        if self.nodes[i].paused_until.is_some() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        let r = self.nodes[i]
            .raft_mut(SIM_GROUP)
            .ok_or(ProposeError::NotLeader { leader: None })?;
        let cmd = crate::kv::Command {
            client: 0,
            seq: 0,
            ack: 0,
            op: crate::kv::WriteOp::Put {
                key: Bytes::from_static(TEST_KEY),
                value: data,
            },
        };
        let res = r.propose(cmd.encode());
        self.drive(i, SIM_GROUP);
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
            Event::Deliver {
                from,
                to: i,
                group,
                m,
            } => {
                if let Some(wait) = self.paused_for(i) {
                    // In the socket until the process runs again.
                    let ev = Event::Deliver {
                        from,
                        to: i,
                        group,
                        m,
                    };
                    self.schedule(wait, ev);
                } else if !self.identities_admit(from, i) {
                    // Sent to or by a store that is gone.
                } else if self.nodes[i].up() {
                    self.deliver(from, i, group, m);
                }
            }
            Event::PersistDone { node, incarnation } => match self.paused_for(node) {
                Some(wait) => self.schedule(wait, Event::PersistDone { node, incarnation }),
                None => self.persist_done(node, incarnation),
            },
            Event::SnapshotWritten(w) => match self.paused_for(w.node) {
                Some(wait) => self.schedule(wait, Event::SnapshotWritten(w)),
                None => self.snapshot_written(w),
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
            Event::CrashLeader(i, g, term) => {
                let leads = self.nodes[i]
                    .raft(g)
                    .is_some_and(|r| r.role() == Role::Leader && r.term() == term);
                if leads && !self.healed {
                    self.crash(i);
                }
            }
            Event::PeerReport {
                at,
                node,
                reachable,
            } => self.report_peer(at, node, reachable),
            Event::WatchPeers(i) => {
                self.watch_peers(i);
                self.schedule(network::PEER_PING_MS, Event::WatchPeers(i));
            }
            Event::MetaRound => {
                self.meta_round();
                self.schedule(balancer::SIM_META_ROUND_MS, Event::MetaRound);
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
                if !self.nodes[i].up() && !self.nodes[i].held {
                    self.start_node(i);
                    self.notice(i, true);
                    self.drive_all(i);
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
                    if !self.nodes[i].up() {
                        self.start_node(i);
                        self.notice(i, true);
                        self.drive_all(i);
                    }
                }
            }
        }
    }

    /// [`Sim::drive`] for each group's replica on node `i`, in order.
    fn drive_all(&mut self, i: usize) {
        for g in self.nodes[i].group_ids() {
            self.drive(i, g);
        }
    }

    /// Pulls every Ready of node `i`'s replica of group `g` and carries it
    /// out through the node's own pipeline (`group::Replica::take_ready`,
    /// `restore`, `finish_ready`), the checkers looking at what it
    /// applies.
    fn drive(&mut self, i: usize, g: GroupId) {
        let mut answers = Vec::new();
        for round in 0.. {
            let Some(rep) = self.nodes[i].group_mut(g).rep.as_mut() else {
                break;
            };
            if !rep.raft.has_ready() {
                break;
            }
            if round == DRIVE_READIES_MAX {
                // A core that always has a Ready would spin a real shard.
                let msg = format!(
                    "node {} group {g} still has a Ready after {round} in a row",
                    self.ids[i]
                );
                self.fail(msg);
                return;
            }
            let (mut io, rest) = rep.take_ready();
            if let Some(ss) = io.soft_state {
                if ss.role == Role::Leader {
                    self.on_new_leader(i, g, ss.term);
                    self.report_unreachable_to_leader(i, g);
                }
            }
            for m in std::mem::take(&mut io.messages) {
                self.send(i, g, m);
            }
            for rd in std::mem::take(&mut io.snapshot_reads) {
                match self.nodes[i].group_mut(g).read_snapshot_chunk(&rd) {
                    Some(chunk) => {
                        self.report.snapshot_chunks_read += 1;
                        self.send(i, g, rd.fill(chunk));
                    }
                    None => {
                        let (index, offset) = rd.at();
                        let msg = format!(
                            "snapshot storage: node {} group {g} was asked for {} bytes at {offset} of snapshot {index}, which it no longer stores",
                            self.ids[i], rd.len
                        );
                        self.fail(msg);
                        return;
                    }
                }
            }
            // A snapshot from the leader is durable first (the node writes
            // its file before the records that follow it), then the state
            // machine restarts from it.
            if let Some(snap) = io.snapshot.take() {
                self.nodes[i].group_mut(g).store_snapshot(snap.clone());
                self.restore(i, g, &snap, io.snapshot_dropped_log, &mut answers);
            }
            // Queued in the WAL; reported durable when its batch's
            // PersistDone fires.
            let lsn = match self.nodes[i].submit(g, io.hard_state, &io.entries) {
                Ok(l) => l,
                Err(msg) => {
                    self.fail(msg);
                    return;
                }
            };
            self.note_applied(i, g, rest.committed());
            self.check_exactly_once(i, g, rest.committed());
            if g == SIM_GROUP {
                self.note_probes(i, rest.read_states(), rest.reads_failed());
            }
            let rep = self.nodes[i].group_mut(g).rep.as_mut().expect("up");
            let before = rep.kv.applied();
            let mut done = rep.finish_ready(rest, u32::MAX, &mut answers);
            let splits = std::mem::take(&mut done.applied.splits);
            let applied = rep.kv.applied();
            if applied > before {
                self.check_state(i, g, applied);
                self.check_voter_floor(i, g);
            }
            let replica = self.nodes[i].group(g).replica;
            self.nodes[i].writes.push_back(PendingWrite {
                group: g,
                replica,
                token: done.token,
                hs: io.hard_state,
                lsn,
                after: done.persisted_messages,
            });
            self.start_disk_batch(i);
            if g == SIM_GROUP {
                self.serve_probes(i);
            }
            self.on_answers(i, g, &mut answers);
            if !splits.is_empty() {
                self.make_splits(i, g, splits);
            }
            self.maybe_snapshot(i, g);
        }
    }
}

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Result<SimReport, SimFailure> {
    Sim::new(cfg).run()
}
