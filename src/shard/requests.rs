//! Client requests on a shard: writes become proposals, reads are served
//! by the mode they ask for, admin requests act on the group.

use std::time::{Duration, Instant};

use super::Shard;
use crate::group::Intake;
use crate::group::Replica;
use crate::group::{membership, GroupId};
use crate::kv::{Command, WriteOp};
use crate::raft::Role;
use crate::transport::ClientConnId;
use crate::wire::{
    ClientError, ClusterMap, GroupStatus, NodeInfo, Op, ReadMode, ReplicaStatus, Reply, Request,
};

impl Shard {
    pub(super) fn on_request(&mut self, conn: ClientConnId, req: Request) {
        // Requests about the node rather than one group.
        match &req.op {
            Op::ClusterMap => {
                let map = self.cluster_map();
                return self.respond(conn, req.id, Ok(Reply::Map(map)));
            }
            Op::Ping => return self.respond(conn, req.id, Ok(Reply::Done)),
            Op::Status => {
                let meta = req.group == crate::route::META_GROUP;
                if meta {
                    // The meta group's membership, as its leader has it.
                    let e = match self.replicas.get(&req.group) {
                        None => Some(ClientError::NotHosted { group: req.group }),
                        Some(g) if g.raft.role() != Role::Leader => Some(ClientError::NotLeader {
                            leader: g.leader_node(),
                        }),
                        Some(_) => None,
                    };
                    if let Some(e) = e {
                        return self.respond(conn, req.id, Err(e));
                    }
                }
                let st = self.status(meta);
                return self.respond(conn, req.id, Ok(Reply::Status(st)));
            }
            Op::Progress => {
                let r = match self.replicas.get(&req.group) {
                    None => Err(ClientError::NotHosted { group: req.group }),
                    Some(g) if g.raft.role() != Role::Leader => Err(ClientError::NotLeader {
                        leader: g.leader_node(),
                    }),
                    Some(g) => Ok(Reply::Status(vec![group_status(g, false)])),
                };
                return self.respond(conn, req.id, r);
            }
            Op::Ranges { from, limit } => {
                let ranges = self.ranges(from, *limit);
                return self.respond(conn, req.id, Ok(Reply::Ranges(ranges)));
            }
            Op::Isolate { peers } => {
                if !self.cfg.fault_injection {
                    let reason = "fault injection is off (start the node with --fault-injection)";
                    return self.respond(
                        conn,
                        req.id,
                        Err(ClientError::BadRequest {
                            reason: reason.into(),
                        }),
                    );
                }
                tracing::warn!(
                    shard = self.cfg.shard,
                    ?peers,
                    "fault injection: isolating from peers"
                );
                self.transport.set_blocked(peers.clone());
                return self.respond(conn, req.id, Ok(Reply::Done));
            }
            _ => {}
        }
        let gid = req.group;
        if !self.replicas.contains_key(&gid) {
            let shard = crate::route::shard_of(req.group, self.cfg.shards);
            // Destroyed here (removed from the group): the client asks
            // another node; never a refusal of the write, whose earlier
            // attempt may be in the group's log.
            // A range id above the bootstrap's is no sign of a client
            // configured for another cluster any more: ranges split off
            // get new ids, and one is made on each node when that node
            // applies the split (issue #18), so "not here (yet)", which a
            // client asks elsewhere and again.
            let e = if self.store.catalog().is_tombstoned(req.group) {
                ClientError::NotHosted { group: req.group }
            } else if shard != self.cfg.shard {
                ClientError::WrongShard {
                    group: req.group,
                    shard,
                }
            } else {
                // A static group this node does not host (not placed here).
                ClientError::NotHosted { group: req.group }
            };
            return self.respond(conn, req.id, Err(e));
        }
        // Whatever the request does to its replica, it is looked at.
        self.mark(gid);
        let deadline = Instant::now() + Duration::from_millis(self.cfg.request_timeout_ms);
        let (kmax, vmax) = (self.cfg.key_bytes_max, self.cfg.value_bytes_max);
        let meta = gid == crate::route::META_GROUP;
        let refuse = |reason: &str| {
            Err(ClientError::BadRequest {
                reason: reason.to_string(),
            })
        };
        match &req.op {
            Op::Meta { .. } | Op::MetaState | Op::Liveness if !meta => {
                let r = refuse("meta commands go to the meta group (route::META_GROUP)");
                return self.respond(conn, req.id, r);
            }
            Op::Meta { cmd } => return self.meta_command(gid, conn, &req, cmd.clone(), deadline),
            Op::MetaState => return self.meta_state(gid, conn, req.id),
            Op::Liveness => return self.liveness(gid, conn, req.id),
            Op::Put { .. }
            | Op::Get { .. }
            | Op::Delete { .. }
            | Op::Cas { .. }
            | Op::Incr { .. }
            | Op::Append { .. }
            | Op::Scan { .. }
                if meta =>
            {
                let r = refuse("the meta group holds the cluster map, no keys");
                return self.respond(conn, req.id, r);
            }
            _ => {}
        }
        if self.cfg.range_split_qps > 0 {
            if let Some(key) = req.op.key() {
                self.note_load(gid, key);
            }
        }
        let write = match &req.op {
            Op::Put { key, value } => check_len(key, kmax, true)
                .and(check_len(value, vmax, false))
                .map(|()| WriteOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                }),
            Op::Delete { key } => {
                check_len(key, kmax, true).map(|()| WriteOp::Delete { key: key.clone() })
            }
            Op::Cas { key, expect, value } => check_len(key, kmax, true)
                .and(
                    expect
                        .as_ref()
                        .map_or(Ok(()), |v| check_len(v, vmax, false)),
                )
                .and(value.as_ref().map_or(Ok(()), |v| check_len(v, vmax, false)))
                .map(|()| WriteOp::Cas {
                    key: key.clone(),
                    expect: expect.clone(),
                    value: value.clone(),
                }),
            Op::Incr { key, by } => check_len(key, kmax, true).map(|()| WriteOp::Incr {
                key: key.clone(),
                by: *by,
            }),
            Op::Append { key, value } => check_len(key, kmax, true)
                .and(check_len(value, vmax, false))
                .map(|()| WriteOp::Append {
                    key: key.clone(),
                    value: value.clone(),
                    max_len: vmax.min(u32::MAX as usize) as u32,
                }),
            Op::Get { key, mode }
            | Op::Scan {
                start: key, mode, ..
            } => {
                // A scan may start one byte past the key limit: just after
                // a key at the limit (its next page, `key + 0x00`).
                let max = if matches!(req.op, Op::Scan { .. }) {
                    kmax + 1
                } else {
                    kmax
                };
                if let Err(e) = check_len(key, max, true) {
                    return self.respond(conn, req.id, Err(e));
                }
                let mode = *mode;
                return self.read(gid, conn, req, mode, deadline);
            }
            Op::TransferLeader { to } => {
                let g = self.replica_mut(gid);
                use crate::raft::TransferError;
                let r = match g.raft.conf().replica_on(*to) {
                    Some(replica) => match g.raft.transfer_leader(replica) {
                        // Asked of the target itself: in force.
                        Ok(()) | Err(TransferError::TargetIsSelf) => Ok(Reply::Done),
                        Err(TransferError::NotLeader { .. }) => Err(ClientError::NotLeader {
                            leader: g.leader_node(),
                        }),
                        Err(e) => Err(ClientError::BadRequest {
                            reason: e.to_string(),
                        }),
                    },
                    None => Err(ClientError::BadRequest {
                        reason: format!("node {to} holds no replica of group {gid}"),
                    }),
                };
                return self.respond(conn, req.id, r);
            }
            Op::Descriptor => {
                let g = &self.replicas[&gid];
                let r = if g.leader_node() != self.cfg.node {
                    Err(g.not_leader())
                } else {
                    match g.range_descriptor(self.cfg.shard) {
                        Some(d) => Ok(Reply::Ranges(vec![d.to_bytes()])),
                        None => refuse("this group has no range descriptor (the meta group)"),
                    }
                };
                return self.respond(conn, req.id, r);
            }
            Op::Split { key, right } => {
                if let Err(e) = check_len(key, kmax, true) {
                    return self.respond(conn, req.id, Err(e));
                }
                let (key, right) = (key.clone(), *right);
                return self.split_request(gid, conn, &req, &key, right, deadline);
            }
            Op::Snapshot => {
                self.snapshot_now(gid, false);
                return self.respond(conn, req.id, Ok(Reply::Done));
            }
            Op::AddLearner { .. }
            | Op::Promote { .. }
            | Op::ReplaceVoter { .. }
            | Op::RemoveNode { .. } => {
                return self.membership(gid, conn, &req, deadline);
            }
            Op::ClusterMap
            | Op::Ping
            | Op::Status
            | Op::Progress
            | Op::Isolate { .. }
            | Op::Ranges { .. }
            | Op::Meta { .. }
            | Op::MetaState
            | Op::Liveness => {
                unreachable!("answered above")
            }
        };
        let op = match write {
            Ok(op) => op,
            Err(e) => return self.respond(conn, req.id, Err(e)),
        };
        if self.disk_full {
            self.stats.errors_disk_full += 1;
            return self.respond(conn, req.id, Err(ClientError::DiskFull));
        }
        if req.client == 0 {
            let reason = "client id 0 is reserved (no session)".to_string();
            return self.respond(conn, req.id, Err(ClientError::BadRequest { reason }));
        }
        let (conn_id, id) = (conn, req.id);
        let g = self.replica_mut(gid);
        let intake = g.propose_write(req.client, req.seq, req.ack, op, conn_id, id, deadline);
        self.answer_intake(conn, id, intake);
    }

    /// Answers a request the replica answered at once, counting it.
    fn answer_intake(&mut self, conn: ClientConnId, id: u64, intake: Intake) {
        match intake {
            Intake::Proposed { .. } => self.stats.proposals += 1,
            Intake::Queued => {}
            Intake::Answer(r) => {
                match &r {
                    Err(ClientError::NotLeader { .. }) => self.stats.errors_not_leader += 1,
                    Err(ClientError::Busy) => self.stats.errors_busy += 1,
                    _ => {}
                }
                self.respond(conn, id, r);
            }
        }
    }

    /// A membership change of the group, on its leader: the new node's
    /// address goes into the replicated address book first (so every
    /// replica can reach it), and a snapshot exists to seed it. A removed
    /// node leaves the address book right after the change (so maps and
    /// `ctl status` stop naming it, and peers stop dialling it).
    fn membership(&mut self, gid: GroupId, conn: ClientConnId, req: &Request, deadline: Instant) {
        if self.disk_full {
            return self.respond(conn, req.id, Err(ClientError::DiskFull));
        }
        let g = self.replica(gid);
        if g.raft.role() != Role::Leader {
            let leader = g.leader_node();
            return self.respond(conn, req.id, Err(ClientError::NotLeader { leader }));
        }
        // Asking again for what is already in force is answered Done, so
        // an operator (or a client whose answer was lost) can safely retry.
        // Operators name nodes; the group's members are replicas placed on
        // them (`ConfState::placements`).
        let conf = g.raft.conf();
        let out_of_conf = |node: &u64| conf.replica_on(*node).is_none();
        // A voter of the (incoming) configuration.
        let voter = |node: &u64| {
            conf.replica_on(*node)
                .is_some_and(|r| conf.voters.contains(&r))
        };
        let in_force = match &req.op {
            Op::AddLearner { node, .. } => !out_of_conf(node),
            Op::Promote { node } => voter(node),
            Op::RemoveNode { node, .. } => out_of_conf(node) && !g.kv.members().contains_key(node),
            Op::ReplaceVoter { add, remove } => {
                voter(add) && out_of_conf(remove) && !g.kv.members().contains_key(remove)
            }
            _ => false,
        };
        if in_force {
            return self.respond(conn, req.id, Ok(Reply::Done));
        }
        // A membership change under way (proposed and not applied yet,
        // or a joint configuration not left yet): the core refuses another
        // (`ConfChangeError::InProgress`), and the checks below would
        // judge this op against a membership in transition. A swap retried
        // after its answer was lost found its target a voter already, no
        // longer a learner, and was refused for it (a CI run of `ctl
        // decommission`). Asked again once the change settles, an op it
        // already did is answered `Done`.
        if let Some(reason) = membership::change_under_way(&g.raft, gid) {
            return self.respond(conn, req.id, Err(ClientError::Failed { reason }));
        }
        if let Err(reason) = self.voter_floor(gid, &req.op) {
            return self.respond(conn, req.id, Err(ClientError::BadRequest { reason }));
        }
        let leaving = match &req.op {
            Op::RemoveNode { node, .. } => Some(node),
            Op::ReplaceVoter { add, remove }
                if conf.replica_on(*add).is_some_and(|r| conf.is_voter(r)) =>
            {
                Some(remove)
            }
            _ => None,
        };
        if let Some(node) = leaving {
            if out_of_conf(node) {
                // Out of the group, still in its address book (the book
                // entry of an earlier attempt was lost): that entry alone.
                let r = self
                    .replica_mut(gid)
                    .raft
                    .propose(membership::forget_member(*node));
                return match r {
                    Ok((index, term)) => self
                        .replica_mut(gid)
                        .await_entry(index, term, conn, req.id, deadline),
                    Err(e) => {
                        let reason = e.to_string();
                        self.respond(conn, req.id, Err(ClientError::Failed { reason }))
                    }
                };
            }
        }
        let proposed = match &req.op {
            Op::AddLearner {
                node,
                peer_addr,
                client_addr,
            } => {
                // Not given: the address this shard knows for the node.
                let known;
                let peer_addr = if peer_addr.is_empty() {
                    match self.peer_addr_of(*node) {
                        Some(a) => {
                            known = a;
                            &known
                        }
                        None => {
                            let reason = format!("no peer address known here for node {node}: give its --listen-peers address");
                            return self.respond(
                                conn,
                                req.id,
                                Err(ClientError::BadRequest { reason }),
                            );
                        }
                    }
                } else {
                    peer_addr
                };
                if peer_addr.parse::<std::net::SocketAddr>().is_err() {
                    let reason = format!("{peer_addr} is not a peer address (IP:PORT)");
                    return self.respond(conn, req.id, Err(ClientError::BadRequest { reason }));
                }
                if !client_addr.is_empty() && client_addr.parse::<std::net::SocketAddr>().is_err() {
                    let reason = format!("{client_addr} is not a client address (IP:PORT)");
                    return self.respond(conn, req.id, Err(ClientError::BadRequest { reason }));
                }
                if self.replica_mut(gid).raft.snapshot().is_none() && !self.snapshot_to_seed(gid) {
                    let reason = format!(
                        "group {gid}'s first snapshot, to seed node {node}'s replica with, is being written: ask again"
                    );
                    return self.respond(conn, req.id, Err(ClientError::Failed { reason }));
                }
                let book = Command {
                    client: 0,
                    seq: 0,
                    ack: 0,
                    op: WriteOp::Member {
                        node: *node,
                        peer_addr: bytes::Bytes::copy_from_slice(peer_addr.as_bytes()),
                        client_addr: bytes::Bytes::copy_from_slice(client_addr.as_bytes()),
                    },
                };
                let g = self.replica_mut(gid);
                if let Err(e) = g.raft.propose(book.encode()) {
                    let reason = e.to_string();
                    return self.respond(conn, req.id, Err(ClientError::Failed { reason }));
                }
                g.raft
                    .add_learner(*node)
                    .map(|(_, index, term)| (index, term))
            }
            Op::Promote { node } => {
                let g = self.replica_mut(gid);
                match g.raft.conf().replica_on(*node) {
                    Some(r) => g.raft.promote_learner(r),
                    None => {
                        let reason = format!("node {node} is not a member of group {gid}");
                        return self.respond(conn, req.id, Err(ClientError::Failed { reason }));
                    }
                }
            }
            Op::ReplaceVoter { add, remove } => {
                // Leadership leaves the source first (issue #17): see
                // `membership::swap_voter`.
                let g = self.replica_mut(gid);
                match membership::swap_voter(&mut g.raft, gid, *add, *remove) {
                    Ok(r) => Ok(r),
                    Err(e) => return self.respond(conn, req.id, Err(e)),
                }
            }
            Op::RemoveNode { node, .. } => {
                let g = self.replica_mut(gid);
                let replica = g.raft.conf().replica_on(*node).expect("checked: a member");
                let r = g.raft.remove_replica(replica);
                if r.is_ok() {
                    // Best effort: a retry of the removal proposes it again.
                    let _ = g.raft.propose(membership::forget_member(*node));
                }
                r
            }
            _ => unreachable!("membership ops only"),
        };
        match proposed {
            Ok((index, term)) => self
                .replica_mut(gid)
                .await_entry(index, term, conn, req.id, deadline),
            Err(e) => self.respond(
                conn,
                req.id,
                Err(ClientError::Failed {
                    reason: e.to_string(),
                }),
            ),
        }
    }

    /// A meta command, on the meta group's leader: proposed outside any
    /// session (`Op::Meta`), answered once applied.
    fn meta_command(
        &mut self,
        gid: GroupId,
        conn: ClientConnId,
        req: &Request,
        cmd: bytes::Bytes,
        deadline: Instant,
    ) {
        if self.disk_full {
            self.stats.errors_disk_full += 1;
            return self.respond(conn, req.id, Err(ClientError::DiskFull));
        }
        if cmd.len() > crate::meta::META_CMD_BYTES_MAX {
            let reason = format!(
                "a meta command of {} bytes is above META_CMD_BYTES_MAX ({}): send ranges in smaller reports",
                cmd.len(),
                crate::meta::META_CMD_BYTES_MAX
            );
            return self.respond(conn, req.id, Err(ClientError::BadRequest { reason }));
        }
        let g = self.replica_mut(gid);
        if g.raft.role() != Role::Leader {
            let leader = g.leader_node();
            return self.respond(conn, req.id, Err(ClientError::NotLeader { leader }));
        }
        let entry = Command {
            client: 0,
            seq: 0,
            ack: 0,
            op: WriteOp::Meta { cmd },
        };
        match g.raft.propose(entry.encode()) {
            Ok((index, term)) => {
                self.stats.proposals += 1;
                self.replica_mut(gid)
                    .await_entry(index, term, conn, req.id, deadline)
            }
            // As a write's: both pass by themselves.
            Err(crate::raft::ProposeError::Backpressure { .. }) => {
                self.respond(conn, req.id, Err(ClientError::Busy))
            }
            Err(_) => {
                let leader = g.leader_node();
                self.respond(conn, req.id, Err(ClientError::NotLeader { leader }))
            }
        }
    }

    /// The meta group's state as its leader applied it (`Op::MetaState`);
    /// a state not bootstrapped yet reads as an empty one.
    fn meta_state(&mut self, gid: GroupId, conn: ClientConnId, id: u64) {
        let g = self.replica(gid);
        if g.raft.role() != Role::Leader {
            let leader = g.leader_node();
            return self.respond(conn, id, Err(ClientError::NotLeader { leader }));
        }
        let body = match g.kv.meta() {
            Some(m) => m.snapshot(),
            None => crate::meta::MetaState::new().snapshot(),
        };
        self.respond(conn, id, Ok(Reply::Meta { ok: true, body }));
    }

    /// `Op::Liveness` on the meta group's leader: its balancer's last
    /// view of the nodes.
    fn liveness(&mut self, gid: GroupId, conn: ClientConnId, id: u64) {
        use crate::wire::client::{LivenessView, NodeLiveness};
        let g = self.replica(gid);
        if g.raft.role() != Role::Leader {
            let leader = g.leader_node();
            return self.respond(conn, id, Err(ClientError::NotLeader { leader }));
        }
        if !self.cfg.balancer {
            let reason = format!(
                "the balancer is off on the meta leader (node {}): nothing pings the nodes, so no liveness is known (start nodes without --balancer false)",
                self.cfg.node
            );
            return self.respond(conn, id, Err(ClientError::BadRequest { reason }));
        }
        let r = match &*self.meta_link.liveness.borrow() {
            None => Err(ClientError::Failed {
                reason:
                    "the meta leader's balancer has not run a round yet (one every 5 s); ask again"
                        .into(),
            }),
            Some(seen) => {
                let age = seen.at.elapsed().as_millis() as u64;
                let nodes = seen
                    .nodes
                    .iter()
                    .map(|&(node, state, silent)| NodeLiveness {
                        node,
                        state,
                        silent_ms: silent.map_or(u64::MAX, |s| s + age),
                    })
                    .collect();
                Ok(Reply::Liveness(LivenessView {
                    dead_node_timeout_ms: seen.dead_node_timeout_ms,
                    round_age_ms: age,
                    nodes,
                }))
            }
        };
        self.respond(conn, id, r);
    }

    fn read(
        &mut self,
        gid: GroupId,
        conn: ClientConnId,
        req: Request,
        mode: ReadMode,
        deadline: Instant,
    ) {
        self.stats.reads += 1;
        let id = req.id;
        let scan_max = self.cfg.scan_limit_max;
        let intake = self
            .replica_mut(gid)
            .read(conn, req, mode, deadline, scan_max);
        if intake == Intake::Queued {
            self.reads_queued.push(gid);
        }
        self.answer_intake(conn, id, intake);
    }

    /// The floor on a group's voters: a removal that would leave fewer
    /// voters than the cluster's replication factor is refused (the reason
    /// says what to do) unless asked `below_replication_factor`. Counted
    /// on the incoming configuration. A node that does not know the factor
    /// (one that joined rather than founded the cluster) applies none.
    /// CockroachDB refuses the same (a range is never down-replicated
    /// below its zone's factor by a decommission or a move).
    fn voter_floor(&self, gid: GroupId, op: &Op) -> Result<(), String> {
        let Op::RemoveNode {
            node,
            below_replication_factor: false,
        } = op
        else {
            return Ok(());
        };
        if gid == crate::route::META_GROUP {
            let conf = self.replica(gid).raft.conf();
            return membership::meta_removal_keeps_voters(conf, *node);
        }
        // A node that does not know the factor (it joined) applies none.
        if !self.cfg.replication_factor_known {
            return Ok(());
        }
        let conf = self.replica(gid).raft.conf();
        let rf = self.cfg.replication_factor as usize;
        membership::removal_keeps_voters(conf, gid, *node, rf)
    }

    /// The peer address (of its shard 0) this shard knows for `node`: from
    /// the address book of a group it hosts, else from the cluster map of
    /// the meta group's replica here (a node that joined registered its
    /// address there, and may hold no replica of this shard's groups yet),
    /// else from its `--peers`.
    fn peer_addr_of(&self, node: u64) -> Option<String> {
        if let Some(a) = self
            .replicas
            .values()
            .find_map(|g| g.kv.members().get(&node))
        {
            return Some(a.clone());
        }
        if let Some(n) = self
            .replicas
            .values()
            .find_map(|g| g.kv.meta().and_then(|m| m.node(node)))
        {
            return Some(n.peer_addr.clone());
        }
        self.cfg.founder_peer_addr(node)
    }

    /// The map as this shard knows it: the leaders of its own groups
    /// whose leader it knows (a client asks each shard; ranges made by
    /// splits included, the meta group's apart), this node, and every node
    /// whose client address the address books of its groups hold (nodes
    /// added after a client started: it finds them here) or whose
    /// handshake gave one.
    fn cluster_map(&self) -> ClusterMap {
        let mut leaders = Vec::new();
        let mut nodes = std::collections::BTreeMap::new();
        nodes.insert(self.cfg.node, self.cfg.client_addr.clone());
        let mut peer_addrs = std::collections::BTreeMap::new();
        peer_addrs.insert(self.cfg.node, self.cfg.peer_addr.clone());
        let mut members = std::collections::BTreeSet::new();
        let mut books = std::collections::BTreeMap::new();
        for g in self.replicas.values() {
            let leader = g.leader_node();
            if leader != 0 && g.id != crate::route::META_GROUP {
                leaders.push((g.id, leader));
            }
            members.extend(g.raft.conf().placements.iter().map(|p| p.node));
            for (&n, a) in g.kv.client_addrs() {
                books.entry(n).or_insert_with(|| a.clone());
            }
            for (&n, a) in g.kv.members() {
                peer_addrs.entry(n).or_insert_with(|| a.clone());
            }
        }
        for &(n, _) in &self.cfg.peers {
            if let Some(a) = self.cfg.founder_peer_addr(n) {
                peer_addrs.entry(n).or_insert(a);
            }
        }
        // The address a member gave in its handshake (what it says now),
        // else the one its groups' address books hold; a node no group of
        // this shard has as a member is not named (removed nodes leave
        // the map). A shard whose groups name no other node (a founder
        // the bootstrap placed no range on, or whose replicas all moved
        // away) names every peer that gave its address in a handshake:
        // else its node's own meta sync, asking it, never finds the meta
        // group, never registers its client address, and the balancer,
        // unable to ping it, holds it suspect and gives it nothing.
        let alone = members.iter().all(|&n| n == self.cfg.node);
        for (n, a) in self.transport.peer_client_addrs() {
            if alone || members.contains(&n) {
                nodes.entry(n).or_insert_with(|| a.to_string());
            }
        }
        for (n, a) in books {
            nodes.entry(n).or_insert(a);
        }
        ClusterMap {
            groups: self.cfg.groups,
            shards: self.cfg.shards,
            nodes: nodes
                .into_iter()
                .map(|(id, client_addr)| NodeInfo {
                    id,
                    client_addr,
                    peer_addr: peer_addrs.get(&id).cloned().unwrap_or_default(),
                })
                .collect(),
            leaders,
            meta_leader: self
                .replicas
                .get(&crate::route::META_GROUP)
                .map_or(0, |g| g.leader_node()),
            replication_factor: if self.cfg.replication_factor_known {
                self.cfg.replication_factor
            } else {
                0
            },
        }
    }

    /// Descriptors of this shard's ranges holding keys at or above
    /// `from` whose leader it knows, in key order, at most `limit` (and
    /// `RANGES_REPLY_MAX`); a client pages on until an answer is empty.
    /// Goes over every replica of the shard: a client asks at connect and
    /// when its map misses a key, not per request.
    fn ranges(&self, from: &[u8], limit: u32) -> Vec<bytes::Bytes> {
        let limit = limit.clamp(1, crate::wire::RANGES_REPLY_MAX) as usize;
        // The `limit` lowest starts, by a bounded max-heap.
        let mut best: std::collections::BinaryHeap<(bytes::Bytes, crate::group::GroupId)> =
            std::collections::BinaryHeap::new();
        for g in self.replicas.values() {
            let b = g.kv.bounds();
            // A replica that knows no leader is not answered for: its group
            // may not be serving (a node that cannot reach its peers, or
            // that its peers refused), and a client asks every node.
            if !b.known || g.leader_node() == 0 || !(b.end.is_empty() || from < &b.end[..]) {
                continue;
            }
            if best.len() == limit {
                if best.peek().is_some_and(|(s, _)| *s <= b.start) {
                    continue;
                }
                best.pop();
            }
            best.push((b.start.clone(), g.id));
        }
        best.into_sorted_vec()
            .into_iter()
            .filter_map(|(_, gid)| self.replicas[&gid].range_descriptor(self.cfg.shard))
            .map(|d| d.to_bytes())
            .collect()
    }

    /// The ranges' status, or (`meta`: a status request sent to the meta
    /// group) the meta group's alone.
    fn status(&self, meta: bool) -> Vec<GroupStatus> {
        self.replicas
            .values()
            .filter(|g| (g.id == crate::route::META_GROUP) == meta)
            .map(|g| group_status(g, true))
            .collect()
    }
}

/// Group `g`'s status here; its digest only if `digest` (a pass over
/// its whole state), else 0 (`Op::Progress`).
fn group_status(g: &crate::group::Replica, digest: bool) -> GroupStatus {
    let replicas = if g.raft.role() == Role::Leader {
        g.raft
            .conf()
            .placements
            .iter()
            .map(|p| replica_status(g, p))
            .collect()
    } else {
        Vec::new()
    };
    GroupStatus {
        group: g.id,
        leader: g.leader_node(),
        term: g.raft.term(),
        commit: g.raft.commit_index(),
        applied: g.kv.applied(),
        replicas,
        digest: if digest { g.kv.digest() } else { 0 },
        last_index: g.raft.last_index(),
        quiesced: g.raft.quiesced(),
        reads_waiting: g.reads_waiting() as u64,
    }
}

/// Linearizable reads: one read index per replica per turn.
impl Shard {
    /// One read index per group per turn for all reads received in it.
    pub(super) fn start_reads(&mut self) {
        let mut failed = Vec::new();
        for g in self.reads_queued.drain(..) {
            let Some(r) = self.replicas.get_mut(&g) else {
                continue;
            };
            if r.reads_new.is_empty() {
                continue; // its turn's reads were asked (it was queued twice)
            }
            let ctx = self.next_ctx;
            self.next_ctx += 1;
            r.start_reads(ctx, &mut failed);
        }
        self.stats.errors_not_leader += failed.len() as u64;
        for (conn, id, leader) in failed {
            self.respond(conn, id, Err(ClientError::NotLeader { leader }));
        }
    }
}

/// The leader `g`'s view of its member `p` for a status answer.
fn replica_status(g: &Replica, p: &crate::raft::Placement) -> ReplicaStatus {
    use crate::raft::ProgressState;
    let mut snapshot = (0, 0);
    let (match_index, state, unreachable) = if p.replica == g.replica {
        (g.raft.persisted_index(), "leader", false)
    } else {
        match g.raft.progress(p.replica) {
            Some(pr) => {
                let state = match pr.state {
                    ProgressState::Probe => "probe",
                    ProgressState::Replicate => "replicate",
                    ProgressState::Snapshot => "snapshot",
                };
                if let (ProgressState::Snapshot, Some(s)) = (pr.state, &pr.snapshot) {
                    snapshot = (s.meta.index, pr.snap_acked);
                }
                (pr.match_, state, pr.unreachable)
            }
            None => (0, "unknown", false),
        }
    };
    ReplicaStatus {
        node: p.node,
        match_index,
        state: state.to_string(),
        unreachable,
        snapshot_index: snapshot.0,
        snapshot_acked_bytes: snapshot.1,
        replica: p.replica,
        role: crate::group::member_role(g.raft.conf(), p.replica)
            .name()
            .to_string(),
    }
}

/// Bytes of a client payload as a key or value bounded by `max`.
fn check_len(b: &bytes::Bytes, max: usize, key: bool) -> Result<(), ClientError> {
    if b.len() <= max {
        Ok(())
    } else if key {
        Err(ClientError::KeyTooLarge {
            len: b.len() as u64,
            max: max as u64,
        })
    } else {
        Err(ClientError::ValueTooLarge {
            len: b.len() as u64,
            max: max as u64,
        })
    }
}
