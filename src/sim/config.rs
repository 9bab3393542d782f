//! A run's settings, its report and its failure.

use super::*;

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
    /// `record_bytes_max` (the simulated WAL takes records of up to 16 KiB,
    /// so a lone entry above this bound still fits: `disk::wal_options`).
    pub record_bytes_max: usize,
    /// Whether the nemesis wipes one node's whole disk, once (`identity`):
    /// it comes back empty, as a new store, refused by its peers.
    pub disk_loss: bool,
    /// Whether peers refuse a node whose store incarnation changed, as
    /// real nodes do. Off only to show what the checkers catch without it.
    pub identity_check: bool,
    /// Quiescence (`RaftConfig::quiesce`), as the node runs. Peers are
    /// reported unreachable as the transport reports them: a crashed node
    /// at once (its connections close), a node paused or cut off after
    /// `PEER_SILENCE_MS` of silence (`network::watch_peers`). Default on,
    /// as the node's (the sweeps turn it off with `SIM_QUIESCE=0`).
    pub quiesce: bool,
    /// Raft groups (ranges) every node hosts a replica of, over its one
    /// WAL (group-committed, released at the lowest LSN any replica
    /// needs, replayed for every group at restart, as a shard's); keys go
    /// to group `key % groups`. Faults aimed at a leader, membership
    /// changes included, pick a group.
    pub groups: u64,
    /// Splits the nemesis asks for in a run (issue #18; 0: none). Needs
    /// `groups == 1`: the run starts with one range over every key, and
    /// each split is an entry of a range's log proposed by its leader
    /// (`kv::WriteOp::Split`, at a workload key inside the range), applied
    /// by every replica as the shard applies it (`shard::splits`): the new
    /// range made on the same node with the parent's members and the state
    /// the entry left. Clients route by the ranges they know and learn
    /// new ones from `KeyNotInRange`; a put whose outcome is unknown is
    /// asked again with its session sequence half the time (exactly once
    /// across splits).
    pub splits: u32,
    /// Whether the run has a meta group (founded on the founders, the
    /// first `initial_voters` nodes; its members move off dead or
    /// decommissioning nodes) and its balancer moves ranges' replicas
    /// and leaders across every node (issue #17, `sim::balancer`). Takes
    /// `initial_voters == 3` (the replication factor) and no membership
    /// changes of the nemesis (the balancer makes them).
    pub balancer: bool,
    /// Whether, in a balancer run with more nodes than founders, an
    /// operator decommissions one node (any node, a founder among them),
    /// chosen by the seed, at a time chosen by the seed (from the fault
    /// period's second half to the heal phase's first): the node set
    /// decommissioning in the map, its replicas and any meta group member
    /// on it moved off by the balancer, then set decommissioned once the
    /// map shows it holding none and the meta group has no member on it
    /// (`MetaState` refuses it before while it holds replicas). The run
    /// settles only with the node decommissioned, holding no replica and
    /// no meta group member. (`ctl decommission` moves a meta member
    /// itself, then waits on the map alone; here the planner's
    /// `MoveMetaReplica` moves it.) Since 2026-12-08 the node is drawn
    /// from all nodes: replay commands recorded before then decommission
    /// another node.
    pub decommission: bool,
    /// Whether, in a balancer run, the nodes that are not founders are
    /// left out of the bootstrap's map and each joins at a time of the
    /// fault period chosen by the seed (`MetaCmd::JoinNode`, as a node
    /// started with `--join` registers; asked again each round until the
    /// map holds it): the balancer places nothing on a node before it
    /// joins. The run settles only with every node joined.
    pub joins: bool,
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
        let record_bytes_max = [96, 512, 16 << 10][r.below(3) as usize];
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
            quiesce: true,
            groups: 1,
            splits: 0,
            balancer: false,
            decommission: false,
            joins: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    /// Entries committed by the group that committed the fewest
    /// (`SimConfig::groups`).
    pub least_committed_by_a_group: u64,
    pub trace_hash: u64,
    pub events: u64,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    /// Ops asked again after a `NotLeader` or `Busy` answer (the same
    /// session sequence: exactly once).
    pub ops_retried: u64,
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
    /// Snapshot chunks read from the node's stored snapshots to send
    /// (`raft::SnapshotRead`).
    pub snapshot_chunks_read: u64,
    /// Snapshot files whose write finished as their node crashed: on disk,
    /// never compacted to (a restart starts from them).
    pub snapshots_written_at_crash: u64,
    pub conf_changes: u64,
    /// Learners promoted and voters removed in one joint change (a move's
    /// step, `RawNode::replace_voter`).
    pub voter_swaps: u64,
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
    /// Heartbeats that would have created a replica, before the group's
    /// heartbeats had come for an election timeout (`Sim::heartbeat_creates`).
    pub replica_creations_deferred: u64,
    /// `Quiesce` messages sent (leaders that quiesced, times followers).
    pub quiesce_msgs: u64,
    /// Peers reported unreachable to a replica (crashes, silence).
    pub unreachable_reports: u64,
    /// Split entries proposed by a range's leader (`SimConfig::splits`).
    pub splits_proposed: u64,
    /// Ranges at the end of the run (1 + the splits that applied).
    pub ranges: u64,
    /// New ranges a node made from a split entry its replica applied
    /// (`shard::splits`); split entries applied where the new range was
    /// already (a replay after a restart, or created empty by its
    /// leader's heartbeat before).
    pub ranges_made_by_split: u64,
    pub splits_applied_again: u64,
    /// Split entries applied by a replica added to the range after the
    /// split: the new range is not made there
    /// (`group::split_makes_replica`).
    pub splits_not_member: u64,
    /// Ops refused `KeyNotInRange` (a split moved their key) and asked
    /// again at the range the client then found.
    pub ops_rerouted: u64,
    /// Puts whose outcome was unknown asked again with the same session
    /// sequence (instead of given up).
    pub ops_retried_unknown: u64,
    /// Answers to puts lost on purpose because a split of their range was
    /// asked for while they were in flight (each asked again: the case
    /// the sessions a split copies are for).
    pub answers_lost_at_split: u64,
    /// Keys a split left outside a replica's bounds, trimmed at ticks.
    pub split_keys_trimmed: u64,
    /// Meta commands proposed at the meta leader (`SimConfig::balancer`):
    /// the bootstrap and the ranges' reports.
    pub meta_commands: u64,
    /// The balancer's operations: planned, done, dropped as no longer
    /// possible (the range changed meanwhile), given up after
    /// `SIM_MOVE_TIMEOUT_MS`; and its moves' joint swaps proposed.
    pub balancer_ops_planned: u64,
    pub balancer_ops_done: u64,
    pub balancer_ops_dropped: u64,
    pub balancer_ops_timed_out: u64,
    pub balancer_swaps: u64,
    /// Moves of the meta group's own members done (the planner's
    /// `MoveMetaReplica`: off a dead or decommissioning node), as the
    /// meta leader that started each saw it finish (one whose source led
    /// the meta group finishes under the next leader, uncounted).
    pub balancer_meta_moves: u64,
    /// The operator's asks of the meta group (`SimConfig::decommission`):
    /// set a node decommissioning, then decommissioned (asked again each
    /// round until the map shows it).
    pub decommission_asks: u64,
    /// Joins asked of the meta group (`SimConfig::joins`; asked again
    /// each round until the map holds the node).
    pub join_asks: u64,
    /// Nodes the run ended with decommissioned (and holding nothing).
    pub nodes_decommissioned: u64,
    /// Replicas the map showed on the operator's node when it was last
    /// asked to set it decommissioning (what the balancer drained).
    pub decommission_replicas: u64,
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
