//! The simulated network between replicas: routing by the node's own
//! `group::Routes`, faults on the way (drops, duplicates, delays,
//! partitions, refused store incarnations), and delivery into the replica
//! a node hosts, creating or replacing it as the shard does.

use super::*;

/// How often a node's transport looks for silent peers (its pings'
/// period: `TransportConfig::peer_ping_ms`, scaled to the simulator's
/// 10 ms ticks).
pub(super) const PEER_PING_MS: u64 = 100;
/// Silence after which a peer is reported unreachable
/// (`TransportConfig::peer_silence_ms`, scaled alike: 5 to 10 election
/// timeouts, as the node's defaults are).
pub const PEER_SILENCE_MS: u64 = 1_000;

impl Sim {
    /// Node `i` crashed (`reachable` false: each node up hears it at
    /// once, its connections closing) or (re)started (`reachable`: its
    /// links come up), after a network delay.
    pub(super) fn notice(&mut self, i: usize, reachable: bool) {
        if !self.cfg.quiesce {
            return;
        }
        for j in 0..self.nodes.len() {
            if j != i && self.nodes[j].up() {
                let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
                let ev = Event::PeerReport {
                    at: j,
                    node: i,
                    reachable,
                };
                self.schedule(d, ev);
            }
        }
    }

    /// Node `j`'s transport looks at each peer: one that cannot reach it
    /// (down, paused, or its link to `j` cut) for `PEER_SILENCE_MS` is
    /// reported once, until it is heard again, as `Transport::watch_peers`
    /// does with pings.
    pub(super) fn watch_peers(&mut self, j: usize) {
        if !self.nodes[j].up() || self.nodes[j].paused_until.is_some() {
            return;
        }
        for i in 0..self.nodes.len() {
            if i == j {
                continue;
            }
            let heard =
                self.nodes[i].up() && self.nodes[i].paused_until.is_none() && !self.blocked[i][j];
            let now = self.now;
            match (heard, self.silent_since[j][i]) {
                (true, Some((_, true))) => {
                    self.silent_since[j][i] = None;
                    self.report_peer(j, i, true);
                }
                (true, _) => self.silent_since[j][i] = None,
                (false, None) => self.silent_since[j][i] = Some((now, false)),
                (false, Some((since, false))) if now - since >= PEER_SILENCE_MS => {
                    self.silent_since[j][i] = Some((since, true));
                    self.report_peer(j, i, false);
                }
                (false, Some(_)) => {}
            }
        }
    }

    /// Node `at` hears that node `node` is reachable again, or not: each
    /// of its replicas is told about the replica of its group placed
    /// there, as the shard does.
    pub(super) fn report_peer(&mut self, at: usize, node: usize, reachable: bool) {
        if self.nodes[at].paused_until.is_some() || !self.nodes[at].up() {
            return;
        }
        let id = self.ids[node];
        self.unreachable[at][node] = !reachable;
        for slot in self.nodes[at].groups.values_mut() {
            let Some(rep) = slot.rep.as_mut() else {
                continue;
            };
            if let Some(peer) = rep.raft.conf().replica_on(id) {
                if reachable {
                    rep.raft.report_reachable(peer);
                } else {
                    rep.raft.report_unreachable(peer);
                    self.report.unreachable_reports += 1;
                }
            }
        }
        self.drive_all(at);
    }

    /// Node `at`'s replica of group `g` just became leader: the nodes its
    /// transport reported unreachable (and not reachable since) are told
    /// to it, as the shard does (a node down since before the election is
    /// reported to no replica of this term otherwise).
    pub(super) fn report_unreachable_to_leader(&mut self, at: usize, g: GroupId) {
        let Some(rep) = self.nodes[at].group_mut(g).rep.as_mut() else {
            return;
        };
        for (node, &down) in self.unreachable[at].iter().enumerate() {
            if let Some(peer) = down
                .then(|| rep.raft.conf().replica_on(self.ids[node]))
                .flatten()
            {
                rep.raft.report_unreachable(peer);
            }
        }
    }

    /// Sends `m` from node `a`'s replica of group `g` to the node its
    /// addressee lives on, as that replica knows it (`group::Routes`);
    /// unknown: dropped, as the node does.
    pub(super) fn send(&mut self, a: usize, g: GroupId, m: Message) {
        self.report.messages_sent += 1;
        if matches!(m.body, Body::Quiesce { .. }) {
            self.report.quiesce_msgs += 1;
        }
        let Some(rep) = &self.nodes[a].group(g).rep else {
            return;
        };
        let Some(b) = rep.node_of(m.to) else {
            self.report.messages_unplaced += 1;
            return;
        };
        let b = (b - 1) as usize;
        if !self.identities_admit(a, b) {
            return;
        }
        if self.blocked[a][b] || self.rng.chance(self.drop_per_mille) {
            self.report.messages_dropped += 1;
            return;
        }
        if self.rng.chance(self.dup_per_mille) {
            let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
            let m = m.clone();
            let ev = Event::Deliver {
                from: a,
                to: b,
                group: g,
                m,
            };
            self.schedule(d, ev);
        }
        let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
        let ev = Event::Deliver {
            from: a,
            to: b,
            group: g,
            m,
        };
        self.schedule(d, ev);
    }

    /// A message from node `from` at up node `i` for group `g`: stepped
    /// into the replica of `g` it hosts if the routing rules admit it
    /// (`group::Routes::accept`); a leader's seeding snapshot for a newer
    /// replica placed here replaces the hosted one (or creates the
    /// first), as the shard does (`shard/replicas.rs`); anything else is
    /// dropped.
    pub(super) fn deliver(&mut self, from: usize, i: usize, g: GroupId, m: Message) {
        let from_node = self.ids[from];
        let slot = self.nodes[i].group_mut(g);
        let rep = slot.rep.as_mut().expect("up: checked");
        match rep.accept_from(from_node, &m) {
            Ok(()) => rep.raft.step(m),
            Err(crate::group::Misrouted::OtherReplica)
                if crate::group::creates_replica(self.ids[i], &m)
                    && (!slot.hosted || m.to > slot.replica) =>
            {
                if crate::group::creation_waits(&m) && !self.heartbeat_creates(i, g) {
                    self.report.replica_creations_deferred += 1;
                    return;
                }
                self.replace_replica(i, g, m.to);
                self.nodes[i].raft_mut(g).expect("started").step(m);
            }
            Err(_) => {
                self.report.messages_misrouted += 1;
                return;
            }
        }
        self.drive(i, g);
    }

    /// Whether a leader's heartbeat carrying commit 0 may create node
    /// `i`'s replica of group `g` now, as the shard decides
    /// (`Shard::heartbeat_creates`): only once such heartbeats have come
    /// for an election timeout, within `HEARTBEAT_CREATE_WINDOW` of them
    /// since the first one noted (then the sighting starts anew). A node
    /// an apply behind its range's split makes the new range from its
    /// own state meanwhile, instead of empty.
    fn heartbeat_creates(&mut self, i: usize, g: GroupId) -> bool {
        let grace = self.election_timeout_ms();
        let window = grace * u64::from(crate::shard::HEARTBEAT_CREATE_WINDOW);
        let now = self.now;
        let slot = self.nodes[i].group_mut(g);
        let first = slot.first_heartbeat_ms.get_or_insert(now);
        if now >= *first + window {
            *first = now;
        }
        let due = now >= *first + grace;
        if due {
            slot.first_heartbeat_ms = None;
        }
        due
    }

    /// Destroys node `i`'s replica of group `g` (if any) and creates
    /// replica `replica` there, empty: it waits for its leader's snapshot.
    /// As the shard does (`destroy_replica`, then `create_replica`): a
    /// tombstone, then a create, each a catalog record in the node's WAL
    /// checked by the catalog first (`tombstone_for`, `check_create`) and
    /// durable before the next step (replay starts the group's log afresh
    /// at the create); the old replica's snapshots go with it, and its
    /// waiters are answered (`Replica::drain_waiters`). The node's other
    /// replicas go on.
    fn replace_replica(&mut self, i: usize, g: GroupId, replica: ReplicaId) {
        use crate::storage::{CatalogOp, ReplicaDesc};
        let slot = self.nodes[i].group(g);
        if slot.hosted {
            self.report.replicas_destroyed += 1;
        }
        if slot.cataloged {
            let op = self.nodes[i]
                .log
                .as_ref()
                .expect("up")
                .catalog()
                .tombstone_for(g);
            if !self.catalog_write(i, op) {
                return;
            }
        }
        let d = ReplicaDesc {
            group: g,
            replica,
            voters: Vec::new(),
            descriptor: Bytes::new(),
        };
        let checked = self.nodes[i]
            .log
            .as_ref()
            .expect("up")
            .catalog()
            .check_create(&d);
        if !self.catalog_write(i, checked.map(|()| CatalogOp::Create(d))) {
            return;
        }
        // Its waiting requests are answered as the shard's destroy answers
        // them: a write outcome-unknown, a read `NotLeader`.
        let mut answers = Vec::new();
        if let Some(mut old) = self.nodes[i].group_mut(g).rep.take() {
            old.drain_waiters(crate::group::Gone::Destroyed, &mut answers);
        }
        let n = &mut self.nodes[i];
        // Its writes still queued stay in their batches (the disk's timing
        // is the node's), and are never reported to the new replica
        // (`PendingWrite::replica`).
        let slot = n.group_mut(g);
        slot.rep = None;
        slot.disk_snapshot = None;
        slot.retained_snapshots.clear();
        slot.snap_writing = false;
        slot.durable_hs = HardState::default();
        slot.crash_persisted = None;
        slot.replica = replica;
        slot.hosted = true;
        slot.cataloged = true;
        let rep = self.empty_replica(i, g);
        self.nodes[i].group_mut(g).rep = Some(rep);
        self.report.replicas_created += 1;
        self.on_answers(i, g, &mut answers);
    }

    /// Writes catalog operation `op` (as the catalog judged it) to node
    /// `i`'s WAL, durably; a refusal or a failed write fails the run.
    /// Whether it was written.
    pub(super) fn catalog_write(
        &mut self,
        i: usize,
        op: Result<crate::storage::CatalogOp, crate::storage::CatalogError>,
    ) -> bool {
        let log = self.nodes[i].log.as_mut().expect("up");
        let written = op.map_err(|e| e.to_string()).and_then(|op| {
            super::disk::block_on(log.append_catalog(false, &[op])).map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            let msg = format!("catalog: node {}: {e}", self.ids[i]);
            self.fail(msg);
            return false;
        }
        true
    }
}
