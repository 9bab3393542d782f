//! Replicas created and destroyed at run time: the API placement uses (and
//! tests use now), over the replica catalog in the shard's WAL
//! (`crate::storage::catalog`).
//!
//! Rules, written down here because the next steps lean on them:
//! - A create is durable before the replica exists: the catalog record is
//!   fsynced, then the replica is built (empty log; with no voters it waits
//!   for its leader's snapshot, like a node that joined).
//! - A destroy is durable before anything is released: the tombstone is
//!   fsynced, the replica's waiting writes are answered `Timeout` (their
//!   outcome is unknown: the entry may commit through the other replicas;
//!   the client retries elsewhere with the same session sequence) and its
//!   reads `NotLeader`, its snapshot files are removed and the WAL
//!   released below what the remaining replicas need.
//! - A request for a group this shard does not host (any more) is answered
//!   `NotHosted`: the client asks another node.
//! - A replica id at or below a group's tombstone is never created again on
//!   this shard; a re-added replica comes with a newer id.
//! - A message for a group this shard does not host is counted
//!   (`msgs_unknown_group`). It creates the replica it is addressed to
//!   (empty, no membership: it installs the snapshot, as a joining node
//!   does) only when all of these hold ([`creates_replica`]): it is a
//!   leader's message to a member it knows holds nothing — the first chunk
//!   of a seeding snapshot, or a heartbeat carrying commit 0 — which a
//!   leader sends only to a member of its applied (committed) membership,
//!   on the node that membership places it on, or a candidate's vote
//!   request (the empty replica votes: safe because its id acknowledged
//!   nothing here, see [`creates_replica`]); a snapshot's own
//!   membership, if it names the addressee (it may predate the addition),
//!   places it on this node; the catalog allows the id (not at or below
//!   the group's tombstone: a removed replica never comes back from a
//!   stale leader's message); the disk is not full; a heartbeat's or a
//!   vote request's group sent such messages here for an election
//!   timeout already (a range split off its parent is made from the
//!   parent's state when the split applies here, an apply after its
//!   leader's first heartbeat or its first campaign:
//!   `Shard::heartbeat_creates`); fewer than
//!   `REPLICAS_CREATED_PER_TURN_MAX` were created this turn (the others
//!   wait for the leader's resend). Appends and other heartbeats never
//!   create one. The
//!   message is stepped into the new replica at once. As TiKV's
//!   `maybe_create_peer` (`is_initial_msg`) and CockroachDB's
//!   `getOrCreateReplica` do on a Raft message; their stale-peer
//!   collection (a replica created by a deposed leader's message for a
//!   membership since changed, which never hears from a leader again)
//!   comes with the cluster map (#17).
//! - A vote request (PreVote or Vote) or a membership check
//!   (`Body::MemberCheck`) from a node outside the membership a replica
//!   applied is answered `Removed { conf_index }` (the index from
//!   which that membership is in force; committed). A replica that gets
//!   one addressed to it is destroyed, as if it had applied its removal,
//!   only if it knows a membership (it is not waiting for its first
//!   snapshot) and its own `conf_index` is lower: committed memberships
//!   form one history, so one in force from a later index that omits it
//!   means it was removed in between (a re-added replica has a new id).
//!   This is how a replica removed while its node was down learns it:
//!   nobody sends it the change, and its campaign is what reaches the
//!   members (over the transport's back channel: nobody dials a node that
//!   is in no group any more). Like TiKV's tombstone message to a stale
//!   peer. A removed learner never campaigns: it asks instead, once it has
//!   heard from no leader for `raft::MEMBER_CHECK_ELECTIONS` election
//!   timeouts (`Body::MemberCheck`, to the voters it knows), or learns it
//!   when its node is added again (below). A node
//!   removed while down and added again before it returns gets a new
//!   replica: a `Removed` notice for the old one never touches it.
//! - Replica ids are the group's own (`raft::ConfState::next_replica_id`,
//!   never reused); where each lives is in the membership
//!   (`ConfState::placements`). A group's founding replicas have their
//!   nodes' ids: a create with voters naming another id is refused. The
//!   shard sends each message to the node of its addressee
//!   (`Replica::node_of`) and steps an inbound one only if it is addressed
//!   to the replica it hosts and a member sender lives on the node it came
//!   from (`Replica::accept_from`).
//! - A message to a newer replica id of a hosted group, one that may
//!   create it ([`creates_replica`]), means the hosted replica was
//!   removed (a node holds one replica of a group in any membership): it
//!   is destroyed as on a `Removed` notice, and the leader's resend creates
//!   the new one. This is how a removed learner (which never campaigns)
//!   learns it once its node is added again.

use super::{build_replica, wal_err, Shard, ShardError};
pub use crate::group::creates_replica;
use crate::group::{Gone, GroupId, Misrouted, ReplicaId};
use crate::raft::{Body, Message, Role};
use crate::storage::{snapfile, CatalogError, CatalogOp, GroupLog, ReplicaDesc};

/// A replica as [`Shard::replicas`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub group: GroupId,
    pub replica: ReplicaId,
    /// Its Raft role now.
    pub role: Role,
    pub term: u64,
    /// The leader it knows (replica id; 0: none).
    pub leader: u64,
    /// That leader's node (0: none or not placed).
    pub leader_node: u64,
    /// Current voters (replica ids).
    pub voters: Vec<ReplicaId>,
    pub applied: u64,
    /// Index of the latest snapshot its Raft core holds (compacted to
    /// once the snapshot's file is durable; 0: none).
    pub snapshot: u64,
    /// The descriptor it was created with (opaque).
    pub descriptor: bytes::Bytes,
}

/// Why a create or a destroy did not happen (nothing changed, except for
/// [`ReplicaApiError::Shard`], which stops the shard).
#[derive(Debug, thiserror::Error)]
pub enum ReplicaApiError {
    #[error("shard {shard}: {err}")]
    Catalog { shard: u32, err: CatalogError },
    #[error(
        "shard {shard}: the disk is full; replicas are created and destroyed once space is back"
    )]
    DiskFull { shard: u32 },
    #[error(
        "shard {shard}: group {group}: founding replica id {replica} differs from this node's id \
         {node}; a group's founding replicas have their nodes' ids (later ones are allocated by \
         the group and join empty, with no voters given)"
    )]
    FoundingIdNotNodeId {
        shard: u32,
        group: GroupId,
        replica: ReplicaId,
        node: u64,
    },
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// A replica removed while it led is kept after it stops leading until it
/// knows its successor, at most this many election timeouts (the longest,
/// twice the base): voters still in the joint configuration may need its
/// vote (`RawNode::hand_over`).
pub const REMOVED_LEADER_GRACE_ELECTIONS: u32 = 5;

/// A heartbeat creates a replica only within this many election timeouts
/// of the first heartbeat of its group noted here
/// (`Shard::heartbeat_creates`); after that, the sighting starts anew.
pub const HEARTBEAT_CREATE_WINDOW: u32 = 4;

/// Messages a shard holds for ranges it is making from a split, stepped
/// into them once they exist (`shard::splits`); past it, dropped (their
/// senders send again).
pub const SEEDING_HELD_MSGS_MAX: usize = 256;

/// Groups whose first heartbeat a shard notes at most. When full, the
/// notes older than [`HEARTBEAT_CREATE_WINDOW`] election timeouts are
/// dropped (at most once an election timeout); a group that still finds
/// no room is not noted, so its heartbeat creates nothing yet, and it is
/// noted at one its leader sends later.
pub const UNKNOWN_HEARTBEATS_MAX: usize = 4096;

/// Replicas a shard creates from messages in one turn; creating one costs a
/// catalog record and an fsync, so a burst (a node added to thousands of
/// groups at once) is spread over turns, the leaders resending.
pub const REPLICAS_CREATED_PER_TURN_MAX: usize = 16;

impl Shard {
    /// One message from a peer, received from node `from_node`: stepped
    /// into its replica, or, for a group not hosted here, counted and
    /// perhaps queued to create the replica ([`creates_replica`]). A
    /// message addressed to another replica of a hosted group is dropped
    /// and counted (`msgs_other_replica`): ids are never reused, so it is
    /// for a removed replica, or for a newer one, in which case the hosted
    /// replica was removed (a node holds one replica of a group) and is
    /// destroyed when a leader's seeding snapshot says so (TiKV destroys a
    /// peer that sees a message for a newer peer id of its region). One
    /// from a member placed on another node is dropped and counted
    /// (`msgs_misplaced`). The shard loop calls it for every inbound
    /// message; public so that tests can feed a shard without a transport.
    pub fn on_peer_message(&mut self, g: GroupId, from_node: u64, m: Message) {
        tracing::trace!(group = g, from = m.from, from_node, "step");
        if let Some(r) = self.replicas.get_mut(&g) {
            match r.accept_from(from_node, &m) {
                Ok(()) => {}
                Err(Misrouted::OtherReplica) => {
                    self.stats.msgs_other_replica += 1;
                    if m.to > r.replica
                        && creates_replica(self.cfg.node, &m)
                        && !self.removed.contains(&g)
                    {
                        tracing::info!(
                            shard = self.cfg.shard,
                            group = g,
                            replica = r.replica,
                            newer = m.to,
                            "a leader seeds a newer replica of this group on this node: this one was removed"
                        );
                        self.stats.replicas_removed_by_notice += 1;
                        self.removed.push(g);
                    }
                    return;
                }
                Err(Misrouted::WrongNode) => {
                    self.stats.msgs_misplaced += 1;
                    tracing::debug!(
                        group = g,
                        from = m.from,
                        from_node,
                        "sender is placed elsewhere"
                    );
                    return;
                }
            }
            let conf = r.raft.conf();
            let known = !conf.is_empty();
            match m.body {
                Body::Removed { conf_index } => {
                    // Destroyed only if the membership this replica knows
                    // is older than the one without it (see the top).
                    let mine = r.raft.conf_index();
                    if known && mine < conf_index && !self.removed.contains(&g) {
                        tracing::info!(
                            shard = self.cfg.shard,
                            group = g,
                            from = m.from,
                            conf_index,
                            known_conf_index = mine,
                            "a member says this replica was removed (its membership at that index omits it)"
                        );
                        self.stats.replicas_removed_by_notice += 1;
                        self.removed.push(g);
                    }
                    return;
                }
                Body::PreVote { .. } | Body::Vote { .. } | Body::MemberCheck { .. }
                    if known && !conf.is_voter(m.from) && !conf.is_learner(m.from) =>
                {
                    // A replica outside the membership in force campaigns
                    // (one removed while it was down: nobody sends it the
                    // change) or asks whether it is a member (a learner
                    // removed before it learned so). Tell it, on the node
                    // it came from; the message is still stepped (the core
                    // refuses or ignores it).
                    let reply = Message {
                        from: r.replica,
                        to: m.from,
                        term: r.raft.term(),
                        body: Body::Removed {
                            conf_index: r.raft.conf_index(),
                        },
                    };
                    tracing::debug!(group = g, to = m.from, "told a non-member it was removed");
                    self.stats.removed_notices_sent += 1;
                    self.transport.send(from_node, g, &reply);
                }
                _ => {}
            }
            r.raft.step(m);
            self.work.mark(g);
            return;
        }
        self.stats.msgs_unknown_group += 1;
        if self.seeding.contains_key(&g) {
            // Being made here from a split its parent applied: not created
            // from its leader's message meanwhile (both would write its
            // first snapshot file under one name); the message is stepped
            // into it once it exists (a dropped vote request would cost
            // its candidate an election timeout).
            if self.held_for_seeding.len() < SEEDING_HELD_MSGS_MAX {
                self.held_for_seeding.push((g, from_node, m));
            }
            return;
        }
        if creates_replica(self.cfg.node, &m)
            && self.creating.len() < REPLICAS_CREATED_PER_TURN_MAX
            && !self.creating.iter().any(|(c, _, _)| *c == g)
        {
            if crate::group::creation_waits(&m) && !self.heartbeat_creates(g) {
                self.stats.replica_creations_deferred += 1;
                return;
            }
            self.creating.push((g, from_node, m));
        }
    }

    /// Whether a leader's heartbeat carrying commit 0, or a candidate's
    /// vote request, may create group `g`'s replica now: only once such
    /// messages have come for at least an election timeout (and at most
    /// [`HEARTBEAT_CREATE_WINDOW`] of them since the first one noted). A
    /// range split off its parent campaigns at once on the node whose
    /// parent replica leads, before the other nodes' parent replicas apply
    /// the split; created at its first vote request or heartbeat, their
    /// replicas would be empty and need the whole range as a snapshot,
    /// instead of being made from the parent's state an apply later
    /// (`shard::splits`). A replica added by a move waits
    /// one election timeout longer. O(1), but for a prune of the notes
    /// once an election timeout while they are full
    /// ([`UNKNOWN_HEARTBEATS_MAX`]).
    fn heartbeat_creates(&mut self, g: GroupId) -> bool {
        let now = std::time::Instant::now();
        let grace = std::time::Duration::from_millis(
            u64::from(self.cfg.raft.election_ticks) * self.cfg.tick_ms,
        );
        let window = grace * HEARTBEAT_CREATE_WINDOW;
        if self.unknown_heartbeats.len() >= UNKNOWN_HEARTBEATS_MAX
            && !self.unknown_heartbeats.contains_key(&g)
        {
            if now >= self.unknown_heartbeats_pruned + grace {
                self.unknown_heartbeats.retain(|_, t| now < *t + window);
                self.unknown_heartbeats_pruned = now;
            }
            if self.unknown_heartbeats.len() >= UNKNOWN_HEARTBEATS_MAX {
                return false;
            }
        }
        let first = self.unknown_heartbeats.entry(g).or_insert(now);
        if now >= *first + window {
            // A sighting from long ago (the group went quiet): anew.
            *first = now;
        }
        let due = now >= *first + grace;
        if due {
            self.unknown_heartbeats.remove(&g);
        }
        due
    }

    /// Creates the replicas that this turn's messages asked for and steps
    /// each its message. A refusal (tombstoned id, full disk) drops the
    /// message; a WAL failure stops the shard (a full disk degrades it).
    pub async fn create_from_messages(&mut self) -> Result<(), ShardError> {
        for (g, from_node, m) in std::mem::take(&mut self.creating) {
            let d = ReplicaDesc {
                group: g,
                replica: m.to,
                voters: Vec::new(),
                descriptor: bytes::Bytes::new(),
            };
            match self.create_replica(d).await {
                Ok(()) => {
                    self.stats.replicas_created_by_message += 1;
                    tracing::info!(
                        shard = self.cfg.shard,
                        group = g,
                        replica = m.to,
                        from = m.from,
                        "replica created by its leader's snapshot"
                    );
                    self.on_peer_message(g, from_node, m);
                }
                Err(ReplicaApiError::Shard(e)) => self.degrade_if_full(Err(e))?,
                Err(e) => tracing::debug!(group = g, from = m.from, "no replica created: {e}"),
            }
        }
        Ok(())
    }

    /// Creates replica `d.replica` of group `d.group` on this shard,
    /// durably, before returning. Errors: the catalog refuses it (the group
    /// is hosted here already, the id is at or below its tombstone, above
    /// the limits, or not among its voters); the disk is full; the replica
    /// id is not this node's id; a WAL failure (which stops the shard).
    pub async fn create_replica(&mut self, d: ReplicaDesc) -> Result<(), ReplicaApiError> {
        let shard = self.cfg.shard;
        if self.disk_full {
            return Err(ReplicaApiError::DiskFull { shard });
        }
        self.store
            .catalog()
            .check_create(&d)
            .map_err(|err| ReplicaApiError::Catalog { shard, err })?;
        if !d.voters.is_empty() && d.replica != self.cfg.node {
            return Err(ReplicaApiError::FoundingIdNotNodeId {
                shard,
                group: d.group,
                replica: d.replica,
                node: self.cfg.node,
            });
        }
        // Built first: a configuration the core refuses writes nothing.
        let replica = build_replica(&self.cfg, &d, GroupLog::default(), None)?;
        let op = CatalogOp::Create(d);
        self.store
            .append_catalog(false, &[op])
            .await
            .map_err(wal_err(shard))?;
        tracing::info!(
            shard,
            group = replica.id,
            replica = replica.replica,
            voters = ?replica.raft.conf().voters,
            "replica created"
        );
        self.host(replica);
        Ok(())
    }

    /// Hosts `replica`, whose catalog create is durable: its members
    /// dialled, its work and metrics looked at this turn.
    pub(super) fn host(&mut self, mut replica: crate::group::Replica) {
        self.work.adopt(&mut replica);
        self.work.mark(replica.id);
        self.metrics_dirty.insert(replica.id);
        self.link_members(&replica);
        self.replicas.insert(replica.id, Box::new(replica));
        self.debug_check_catalog();
    }

    /// Destroys this shard's replica of `group`: the tombstone is durable
    /// before returning; waiting writes are answered `Timeout` (outcome
    /// unknown), reads `NotLeader` (`Replica::drain_waiters`); its
    /// snapshot files are removed and the WAL released. Errors: the group
    /// is not hosted here; the disk is full; a WAL or file failure (which
    /// stops the shard).
    pub async fn destroy_replica(&mut self, group: GroupId) -> Result<(), ReplicaApiError> {
        let shard = self.cfg.shard;
        if group == crate::route::META_GROUP {
            self.meta_link.meta_leading.set(false);
        }
        let op = self
            .store
            .catalog()
            .tombstone_for(group)
            .map_err(|err| ReplicaApiError::Catalog { shard, err })?;
        if self.disk_full {
            return Err(ReplicaApiError::DiskFull { shard });
        }
        self.store
            .append_catalog(false, &[op])
            .await
            .map_err(wal_err(shard))?;
        let mut r = self
            .replicas
            .remove(&group)
            .unwrap_or_else(|| panic!("shard {shard}: group {group} in the catalog, not hosted"));
        self.work.forget(group);
        self.load_samplers.remove(&group);
        self.metrics_dirty.insert(group);
        // Its state and snapshot are freed on the helper thread (handed
        // over once the replica, which holds the snapshot too, is gone).
        let kv = std::mem::take(&mut r.kv);
        let snap = r.raft.snapshot().map(|s| s.data.clone());
        let mut waiting = Vec::new();
        r.drain_waiters(Gone::Destroyed, &mut waiting);
        for (conn, id, answer) in waiting {
            self.respond(conn, id, answer);
        }
        self.inflight.retain(|f| f.group != group);
        self.installing.remove(&group);
        let retired = snapfile::retire_group(&self.snap_dir, group)
            .await
            .map_err(|err| ShardError::Snapshot { shard, err })?;
        super::snapshots::unlink_in_background(retired);
        tracing::info!(shard, group, replica = r.replica, "replica destroyed");
        drop(r);
        super::snapshots::drop_on_helper(snap);
        super::snapshots::drop_state_on_helper(kv).detach();
        self.debug_check_catalog();
        self.release_wal().await?;
        Ok(())
    }

    /// Destroys the replicas that applied a membership without themselves
    /// (removed from their group: the change is committed, the group goes
    /// on without them) or that a member said were removed (`Removed`),
    /// saying so. A removed replica that still leads is kept until it has
    /// handed its leadership over (`RawNode::hand_over`: destroying it at
    /// once could leave the group waiting for its vote). The shard loop
    /// calls it every turn; public so that tests can drive a shard without
    /// its loop.
    pub async fn destroy_removed(&mut self) -> Result<(), ShardError> {
        if self.removed.is_empty() {
            return Ok(()); // every turn: nothing to read, not even the clock
        }
        self.destroy_removed_at(std::time::Instant::now()).await
    }

    /// How long a removed replica that led is kept, once it no longer
    /// leads, waiting to learn its successor:
    /// [`REMOVED_LEADER_GRACE_ELECTIONS`] of the longest election timeout
    /// (twice `election_ticks` × `tick_ms`).
    pub fn removed_leader_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            REMOVED_LEADER_GRACE_ELECTIONS as u64
                * 2
                * u64::from(self.cfg.raft.election_ticks)
                * self.cfg.tick_ms,
        )
    }

    /// [`Shard::destroy_removed`] with the clock read at `now` (tests
    /// drive the grace without waiting for it).
    pub async fn destroy_removed_at(&mut self, now: std::time::Instant) -> Result<(), ShardError> {
        let mut kept = Vec::new();
        let grace = self.removed_leader_grace();
        for group in std::mem::take(&mut self.removed) {
            let Some(r) = self.replicas.get(&group) else {
                self.handing_over.remove(&group);
                continue;
            };
            if r.raft.role() == Role::Leader {
                self.handing_over.entry(group).or_insert(None);
                kept.push(group);
                continue;
            }
            if let Some(since) = self.handing_over.get_mut(&group) {
                // It led when removed: voters that campaign before they
                // learn the removal committed may need its vote (and its
                // answers may still wait for their sync). Kept until it
                // knows its successor and has nothing in flight, or the
                // grace ends (whichever comes first).
                let since = *since.get_or_insert(now);
                let pending = self.inflight.iter().any(|f| f.group == group)
                    || self.installing.contains_key(&group);
                let successor = r.raft.leader().is_some_and(|l| l != r.replica);
                let waiting = pending || !successor;
                if waiting && now < since + grace {
                    kept.push(group);
                    continue;
                }
                self.handing_over.remove(&group);
            }
            tracing::warn!(
                shard = self.cfg.shard,
                group,
                replica = r.replica,
                conf = ?r.raft.conf(),
                "this replica was removed from its group: destroying it"
            );
            match self.destroy_replica(group).await {
                Ok(()) => {}
                Err(ReplicaApiError::Shard(e)) => {
                    // A full disk met writing the tombstone: the shard
                    // degrades (the replica stays until space is back).
                    self.degrade_if_full(Err(e))?;
                    tracing::warn!(group, "removed replica not destroyed yet: the disk is full");
                }
                // The disk is full: kept (idle) until the next removal
                // check after space is back; nothing depends on it.
                Err(e) => tracing::warn!(group, "removed replica not destroyed yet: {e}"),
            }
            if self.replicas.is_empty() {
                tracing::warn!(
                    shard = self.cfg.shard,
                    "this shard hosts no replica any more (removed from every group)"
                );
            }
        }
        // Kept leaders hand their leadership over (the core's transfer).
        for &g in &kept {
            self.work.mark(g);
        }
        self.removed.extend(kept);
        Ok(())
    }

    /// Dials every node that a replica of this shard has as a member and
    /// no link reaches yet (`link_members`), then stops dialling nodes that
    /// no replica here has as a member or in its address book any more
    /// (they were removed from every group here; a node being added is in
    /// a book before it is in a membership). The pruning is skipped while a
    /// replica waits for its first snapshot (it knows no membership yet).
    /// Walks every replica: called at a start and on membership changes.
    pub(super) fn sync_peers(&self) {
        let mut known = std::collections::BTreeSet::<u64>::new();
        let mut prune = true;
        for r in self.replicas.values() {
            self.link_members(r);
            let c = r.raft.conf();
            prune &= !c.is_empty();
            known.extend(c.member_nodes());
            known.extend(r.kv.members().keys());
        }
        if !prune {
            return;
        }
        for node in self.transport.peer_ids() {
            if !known.contains(&node) {
                tracing::info!(
                    shard = self.cfg.shard,
                    node,
                    "node is no longer a member of any group on this shard: not dialling it any more"
                );
                self.transport.remove_peer(node);
            }
        }
    }

    /// Dials the members of `r`'s group that no link of this shard reaches,
    /// at the address its address book holds, else the one this shard
    /// started with (`--peers`, or the cluster map at a join). A node with
    /// no link is reached only on the connections it dials here (the back
    /// channel): no pings go to it, so once its groups quiesce its peers
    /// hear nothing, report it unreachable, and leaders quiesce without
    /// its replicas for good. A node that joined with no replica (every
    /// link pruned at its start) had only those for the founders, whose
    /// addresses no address book holds (the chaos test: a replaced node's
    /// replica left behind in a group that quiesced). O(members).
    pub(super) fn link_members(&self, r: &crate::group::Replica) {
        for p in &r.raft.conf().placements {
            let node = p.node;
            if node == self.cfg.node || self.transport.knows(node) {
                continue;
            }
            let book = r.kv.members().get(&node).filter(|a| !a.is_empty());
            match book.cloned().or_else(|| self.cfg.founder_peer_addr(node)) {
                Some(a) => self.learn_peer(node, &a),
                None => tracing::warn!(
                    shard = self.cfg.shard,
                    group = r.id,
                    node,
                    "no address known for a member: it is reached only on the connections it makes here"
                ),
            }
        }
    }

    /// The shard's counters so far.
    pub fn stats(&self) -> super::ShardStats {
        self.stats
    }

    /// This shard's replicas, by group id.
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.replicas
            .values()
            .map(|r| ReplicaInfo {
                group: r.id,
                replica: r.replica,
                role: r.raft.role(),
                term: r.raft.term(),
                leader: r.raft.leader().unwrap_or(0),
                leader_node: r.leader_node(),
                voters: r.raft.conf().voters.to_vec(),
                applied: r.kv.applied(),
                snapshot: r.raft.snapshot().map_or(0, |s| s.meta.index),
                descriptor: self
                    .store
                    .catalog()
                    .get(r.id)
                    .map(|d| d.descriptor.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The catalog's live entries are the hosted replicas.
    pub(super) fn debug_check_catalog(&self) {
        debug_assert!(
            self.store
                .catalog()
                .live()
                .map(|d| (d.group, d.replica))
                .eq(self.replicas.values().map(|r| (r.id, r.replica))),
            "shard {}: catalog and replicas disagree",
            self.cfg.shard
        );
    }
}
