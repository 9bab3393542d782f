//! Range splits on a shard (issue #18): the split request on a range's
//! leader, and the new range each replica makes when it applies the split
//! entry.
//!
//! Rules, and why:
//! - **A split is an entry of the parent's log** (`kv::WriteOp::Split`),
//!   proposed by its leader on an operator's or the balancer's request
//!   (`Op::Split`). Every replica that applies it and was a member of
//!   the parent at the split entry's index makes the new (right-hand)
//!   range on its own (node, shard), with the parent's members as of the
//!   split entry (same replica ids, same placements),
//!   and the state machine the entry left it: the parent's keys at and
//!   above the split key, and all of its client sessions, so a write
//!   retried across the split is applied once (its session's results
//!   travel with it). As TiKV's `exec_batch_split` and CockroachDB's
//!   `splitTrigger`. A replica added to the parent after the split (seeded
//!   with a snapshot from before it, it replays the entry) makes nothing:
//!   the new range's membership does not hold it
//!   (`group::split_makes_replica`).
//! - **Durable before it exists**: the new range's first snapshot (at the
//!   split entry's index and term, the parent's membership) is encoded on
//!   the helper thread and its file written in the background; then its
//!   catalog create is fsynced, then the replica is hosted, restarted
//!   from that snapshot as after a crash. Until then the parent takes no
//!   snapshot of its own (its log keeps the split entry, so a crash
//!   before the create replays the split and makes the range again; a
//!   snapshot file with no catalog entry is removed at open). A
//!   follower's parent that installs its leader's snapshot past the split
//!   meanwhile no longer holds the entry: after a crash there, the range
//!   comes as it does to a node that missed the split (below). Applying
//!   the entry again once the range exists (a replay after a restart)
//!   changes nothing.
//! - **One split of a range in flight**, proposed by its leader with the
//!   bounds it had (`WriteOp::Split` carries them: every replica adopts
//!   them, and refuses a split proposed for bounds a split has changed
//!   since), none while its membership changes.
//! - **No conflicting replica**: while the range is being made here, a
//!   message from its leader does not create it from a snapshot instead
//!   (`Shard::on_peer_message`); once it exists, the split entry is not
//!   applied to it again. A replica that never applies the split entry
//!   (its parent installed a later snapshot from the leader) gets the new
//!   range the way a replica added to a group does: its leader's
//!   heartbeat creates it empty and a snapshot seeds it
//!   (`group::creates_replica`).
//! - **A leader within a round trip**: the new range's replica on the node
//!   whose parent replica leads campaigns at the next tick; the others
//!   vote at once (they were in no leader's lease: `RawNode::split_born`).
//!   That leader reports both descriptors to the meta group in one batch
//!   (`MetaLink::report`), so the map has no gap between them.
//! - **Keys left behind are trimmed off the turn's critical path**: both
//!   sides share the parent's persistent map (the split is O(1)); keys
//!   outside a side's bounds are invisible to reads, snapshots and the
//!   digest, and each tick removes at most [`SPLIT_TRIM_KEYS_PER_TICK`]
//!   of them.

use super::meta_sync::SplitCause;
use super::snapshots::{drop_on_helper, drop_state_on_helper, encode_on_helper, on_helper};
use super::*;
use crate::group::SplitApplied;
use crate::storage::{CatalogOp, ReplicaDesc};
use crate::wire::Request;

/// Keys a shard removes per tick from state machines that a split left
/// holding keys outside their bounds (each O(log n) on the persistent
/// map): at the default 10 ms tick, 400 000 keys a second, so a range
/// split at `range-split-bytes` (64 MiB of small keys: about 1 M keys)
/// is trimmed in a few seconds, in steps of well under a millisecond.
pub const SPLIT_TRIM_KEYS_PER_TICK: usize = 4096;

/// A range is not started towards a split by size more often than this
/// (ms): the time for one to be asked for, applied and its leftovers
/// trimmed, so a range over `--range-split-bytes` that keeps growing
/// splits again, while a refused split (its leadership moved, the meta
/// group unreachable) is not asked for at every apply.
pub const RANGE_SPLIT_RETRY_MS: u64 = 2000;

/// A new range's first snapshot file, written in the background.
pub(super) struct SplitSeeded {
    parent: GroupId,
    right: GroupId,
    replica: ReplicaId,
    snap: Snapshot,
    crc: u32,
    kv: crate::kv::Kv,
    result: Result<(), snapfile::SnapFileError>,
}

/// Whether a trigger (size or load) may ask for a split of `g`: this
/// replica leads, its bounds are known, and no keys of an earlier split
/// are left to trim (they are counted in its size and load until then).
pub(super) fn may_split(g: &Replica) -> bool {
    g.raft.role() == Role::Leader && g.kv.bounds().known && !g.kv.has_keys_outside_bounds()
}

impl Shard {
    /// `Op::Split` on range `gid`: refused unless this replica leads and
    /// the new id is free and on this shard; proposed as a split entry
    /// and answered once it applies (its refusals come from the state
    /// machine: `kv::Kv::apply`).
    pub(super) fn split_request(
        &mut self,
        gid: GroupId,
        conn: ClientConnId,
        req: &Request,
        key: &bytes::Bytes,
        right: GroupId,
        deadline: Instant,
    ) {
        let refuse = |reason: String| Err(ClientError::BadRequest { reason });
        let shard = self.cfg.shard;
        let on = crate::route::shard_of(right, self.cfg.shards);
        let r = if gid == crate::route::META_GROUP {
            refuse("the meta group does not split".into())
        } else if right == 0 || right == gid || right == crate::route::META_GROUP {
            refuse(format!(
                "range id {right} cannot name the new range (ask the meta group for one: AllocIds)"
            ))
        } else if on != shard {
            refuse(format!(
                "range id {right} lives on shard {on}, range {gid} on shard {shard}: the new range \
                 is made on its parent's shard (pick an id with id % shards == {shard})"
            ))
        } else if self.split_in_force(gid, key, right) {
            // Asked again (a lost answer): in force, as a membership
            // change already made is.
            return self.respond(conn, req.id, Ok(Reply::Done));
        } else if self.replicas.contains_key(&right)
            || self.seeding.contains_key(&right)
            || self.store.catalog().is_tombstoned(right)
        {
            refuse(format!(
                "range id {right} is in use on this node (ask the meta group for a new one)"
            ))
        } else if self.disk_full {
            self.stats.errors_disk_full += 1;
            Err(ClientError::DiskFull)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            return self.respond(conn, req.id, Err(e));
        }
        let g = self.replica_mut(gid);
        if g.raft.role() != Role::Leader {
            let leader = g.leader_node();
            return self.respond(conn, req.id, Err(ClientError::NotLeader { leader }));
        }
        if !g.raft.conf().voters_outgoing.is_empty() || g.raft.conf_change_pending() {
            // The new range would be born with a change half made (a
            // learner a move added, a voter it is taking out), that only
            // the move's driver knows to finish.
            let reason = format!(
                "range {gid} is changing its membership: ask again once the change is done"
            );
            return self.respond(conn, req.id, Err(ClientError::Failed { reason }));
        }
        let applied = g.kv.applied();
        if self.splits_proposed.get(&gid).is_some_and(|&i| applied < i) {
            // One split of a range in flight at a time: a second one,
            // proposed before the first applied, would be refused as stale
            // anyway (the bounds change); `Busy` is asked again, and then
            // answered `Done` if it was this one.
            return self.respond(conn, req.id, Err(ClientError::Busy));
        }
        let g = self.replica_mut(gid);
        let b = g.kv.bounds();
        let entry = crate::kv::Command {
            client: 0,
            seq: 0,
            ack: 0,
            op: crate::kv::WriteOp::Split {
                key: key.clone(),
                right,
                start: b.start.clone(),
                end: b.end.clone(),
                version: b.version,
            },
        };
        match g.raft.propose(entry.encode()) {
            Ok((index, term)) => {
                self.stats.proposals += 1;
                self.splits_proposed.insert(gid, index);
                tracing::info!(
                    shard,
                    group = gid,
                    right,
                    key = %crate::meta::show_key(key),
                    index,
                    "split proposed"
                );
                self.replica_mut(gid)
                    .await_entry(index, term, conn, req.id, deadline)
            }
            Err(crate::raft::ProposeError::Backpressure { .. }) => {
                self.respond(conn, req.id, Err(ClientError::Busy))
            }
            Err(_) => {
                let leader = self.replica_mut(gid).leader_node();
                self.respond(conn, req.id, Err(ClientError::NotLeader { leader }))
            }
        }
    }

    /// Whether range `gid` was split at `key` into range `right` here
    /// already (applied; the new range made or being made).
    fn split_in_force(&self, gid: GroupId, key: &bytes::Bytes, right: GroupId) -> bool {
        let ends_at_key = self
            .replicas
            .get(&gid)
            .is_some_and(|p| p.kv.bounds().from_log && p.kv.bounds().end == *key);
        let made = match self.replicas.get(&right) {
            Some(r) => r.kv.bounds().start == *key,
            None => self.seeding.get(&right) == Some(&gid),
        };
        ends_at_key && made
    }

    /// Group `parent` applied split entries: each new range is made here
    /// (its first snapshot written in the background, `finish_splits`),
    /// unless it exists already, was destroyed here, or is being made, or
    /// this replica was no member of the parent at the split's index.
    pub(super) fn start_splits(&mut self, parent: GroupId, splits: Vec<SplitApplied>) {
        let shard = self.cfg.shard;
        self.trim_later(parent);
        self.splits_proposed.remove(&parent);
        // Its load so far was over keys it may no longer hold.
        self.load_samplers.remove(&parent);
        for s in splits {
            let right = s.right;
            // Hosted (a replay after a restart), being made, or destroyed
            // here since: the range this split made, unless its bounds say
            // it is another range's (ids come from the meta group, once).
            let start = &s.kv.bounds().start;
            let (exists, ours) = match (self.replicas.get(&right), self.seeding.get(&right)) {
                (Some(r), _) => (true, !r.kv.bounds().known || r.kv.bounds().start == *start),
                (None, Some(&p)) => (true, p == parent),
                (None, None) => (self.store.catalog().is_tombstoned(right), true),
            };
            if !ours {
                tracing::error!(
                    shard,
                    group = parent,
                    right,
                    "a split names a range id that another range holds here: this node does not \
                     serve the split's new range (range ids come from the meta group, once)"
                );
                self.stats.splits_conflicting += 1;
            }
            if exists || self.disk_full {
                // A replay of a split whose range exists (or was moved
                // away since); with the disk full, the range's leader
                // seeds it later as it would a new member.
                tracing::info!(
                    shard,
                    group = parent,
                    right,
                    index = s.index,
                    disk_full = self.disk_full,
                    "split applied; its new range is not made here"
                );
                drop_state_on_helper(s.kv).detach();
                continue;
            }
            let g = hosted(&mut self.replicas, parent);
            let Some((meta, conf)) = g.raft.snapshot_meta_at(s.index) else {
                // Only if a snapshot at or past the split was taken since
                // it applied, which `take_snapshot` does not do.
                tracing::error!(shard, group = parent, right, "split's membership unknown");
                drop_state_on_helper(s.kv).detach();
                continue;
            };
            debug_assert_eq!(meta.term, s.term);
            let replica = g.replica;
            if !crate::group::split_makes_replica(&conf, self.cfg.node, replica) {
                // Added to the parent after the split: no member of the
                // new range (its leader adds one here if it wants one).
                tracing::info!(
                    shard,
                    group = parent,
                    right,
                    index = s.index,
                    replica,
                    "split applied by a replica added after it; its new range is not made here"
                );
                self.stats.splits_not_member += 1;
                drop_state_on_helper(s.kv).detach();
                continue;
            }
            self.seeding.insert(right, parent);
            let dir = self.snap_dir.clone();
            let done = self.splits_done.clone();
            let wake = self.background_done.clone();
            let kv = s.kv;
            glommio::spawn_local(async move {
                let (data, crc) = encode_on_helper(kv.clone()).await;
                let snap = Snapshot { meta, conf, data };
                let result = snapfile::write(&dir, right, &snap, crc).await.map(|_| ());
                done.borrow_mut().push(SplitSeeded {
                    parent,
                    right,
                    replica,
                    snap,
                    crc,
                    kv,
                    result,
                });
                wake.wake_all();
            })
            .detach();
        }
    }

    /// Hosts the new ranges whose first snapshot file is written: catalog
    /// create (durable), then the replica, restarted from that snapshot.
    /// The shard loop calls it every turn; public so that tests can drive
    /// a shard without its loop.
    pub async fn finish_splits(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let done = std::mem::take(&mut *self.splits_done.borrow_mut());
        for d in done {
            self.seeding.remove(&d.right);
            let held_msgs = self.take_held(d.right);
            let (index, right) = (d.snap.meta.index, d.right);
            let path = self.snap_dir.join(snapfile::file_name(right, index));
            if let Err(err) = d.result {
                drop_state_on_helper(d.kv).detach();
                drop_on_helper(d.snap);
                if !snap_err_is_disk_full(&err) {
                    return Err(ShardError::Snapshot { shard, err });
                }
                // The range's leader seeds it later, as a new member.
                tracing::warn!(shard, right, "a split's new range is not made here: {err}");
                self.enter_disk_full(&err);
                continue;
            }
            let desc = ReplicaDesc {
                group: right,
                replica: d.replica,
                voters: Vec::new(),
                descriptor: bytes::Bytes::new(),
            };
            let refused = self.disk_full || self.store.catalog().check_create(&desc).is_err();
            if refused {
                tracing::info!(
                    shard,
                    right,
                    "a split's new range is not made here after all"
                );
                let _ = glommio::io::remove(path).await;
                drop_state_on_helper(d.kv).detach();
                drop_on_helper(d.snap);
                continue;
            }
            let rc = replica_config(&self.cfg, &desc)?;
            let parent_leads = self
                .replicas
                .get(&d.parent)
                .is_some_and(|p| p.raft.role() == Role::Leader);
            let (mut r, held) =
                Replica::from_split(right, d.replica, rc, d.snap.clone(), d.kv, parent_leads);
            let desc = ReplicaDesc {
                descriptor: r
                    .range_descriptor(shard)
                    .map(|x| x.to_bytes())
                    .unwrap_or_default(),
                ..desc
            };
            match self
                .store
                .append_catalog(false, &[CatalogOp::Create(desc)])
                .await
            {
                Ok(_) => {}
                Err(err) if err.is_disk_full() => {
                    // The parent's log keeps the split entry (it takes no
                    // snapshot meanwhile), so the rebuild once space is
                    // back applies it again and makes the range then.
                    tracing::warn!(shard, right, "a split's new range waits for disk space");
                    let _ = glommio::io::remove(path).await;
                    drop_on_helper((d.snap, held));
                    drop_state_on_helper(std::mem::take(&mut r.kv)).detach();
                    self.enter_disk_full(&err);
                    continue;
                }
                Err(err) => return Err(ShardError::Wal { shard, err }),
            }
            drop_on_helper((d.snap, held));
            let b = r.kv.bounds();
            tracing::info!(
                shard,
                parent = d.parent,
                group = right,
                replica = r.replica,
                index,
                crc = d.crc,
                start = %crate::meta::show_key(&b.start),
                end = %crate::meta::show_key(&b.end),
                campaigns = parent_leads,
                "range split: new range made from its parent's split entry"
            );
            self.stats.ranges_split += 1;
            if parent_leads {
                // Both sides in one report (the map has no gap).
                if let Some(p) = self.replicas.get(&d.parent) {
                    self.meta_link.report(p, shard);
                }
                self.meta_link.report(&r, shard);
            }
            self.host(r);
            self.trim_later(right);
            for (g, from_node, m) in held_msgs {
                self.on_peer_message(g, from_node, m);
            }
        }
        Ok(())
    }

    /// The messages held for range `right` while it was being made.
    fn take_held(&mut self, right: GroupId) -> Vec<(GroupId, u64, crate::raft::Message)> {
        if self.held_for_seeding.is_empty() {
            return Vec::new();
        }
        let (mine, rest) = std::mem::take(&mut self.held_for_seeding)
            .into_iter()
            .partition(|(g, _, _)| *g == right);
        self.held_for_seeding = rest;
        mine
    }

    /// Starts towards a split of range `gid` by size if it leads it, holds
    /// `--range-split-bytes` or more, has no keys of an earlier split left
    /// to trim (they are counted until then) and did not start one within
    /// [`RANGE_SPLIT_RETRY_MS`]: its split key is found on the helper
    /// thread (`Kv::split_key_by_bytes`, O(n) on a copy) and handed to the
    /// reporter task, which asks the meta group for the new range's id
    /// and this leader for the split. Called after each apply; O(1)
    /// unless it starts one.
    pub(super) fn maybe_split(&mut self, gid: GroupId) {
        let limit = self.cfg.range_split_bytes;
        if limit == 0 || gid == crate::route::META_GROUP {
            return;
        }
        let Some(g) = self.replicas.get(&gid) else {
            return;
        };
        if g.kv.data_bytes() < limit || !may_split(g) {
            return;
        }
        if !self.split_clock(gid) {
            return;
        }
        let view = self.replicas[&gid].kv.clone();
        self.stats.splits_asked_by_size += 1;
        let bytes = view.data_bytes();
        let link = self.meta_link.clone();
        let shard = self.cfg.shard;
        glommio::spawn_local(async move {
            let (key, view) = on_helper(move || (view.split_key_by_bytes(), view)).await;
            drop_state_on_helper(view).detach();
            match key {
                Some(key) => {
                    tracing::info!(
                        shard,
                        group = gid,
                        bytes,
                        key = %crate::meta::show_key(&key),
                        "range is over range-split-bytes: splitting it"
                    );
                    link.splits_wanted
                        .borrow_mut()
                        .push((gid, key, SplitCause::Size));
                }
                None => tracing::warn!(
                    shard,
                    group = gid,
                    bytes,
                    "range is over range-split-bytes but holds one key: not split"
                ),
            }
        })
        .detach();
    }

    /// Starts range `gid`'s clock towards a split (by size or by load)
    /// unless it started within [`RANGE_SPLIT_RETRY_MS`]: whether it did
    /// (the caller then asks for the split).
    pub(super) fn split_clock(&mut self, gid: GroupId) -> bool {
        let now = Instant::now();
        let retry = Duration::from_millis(RANGE_SPLIT_RETRY_MS);
        let started = &mut self.splits_started;
        if started.get(&gid).is_some_and(|&t| now < t + retry) {
            return false;
        }
        started.retain(|_, t| now < *t + retry);
        started.insert(gid, now);
        true
    }

    /// Whether group `gid` may not take a snapshot now: a range it split
    /// off is still being made here (its log must keep the split entry).
    pub(super) fn splitting(&self, gid: GroupId) -> bool {
        !self.seeding.is_empty() && self.seeding.values().any(|&p| p == gid)
    }

    /// Queues `gid` for trimming, if a split left it keys outside its
    /// bounds.
    fn trim_later(&mut self, gid: GroupId) {
        let outside = self
            .replicas
            .get(&gid)
            .is_some_and(|r| r.kv.has_keys_outside_bounds());
        if outside && !self.trimming.contains(&gid) {
            self.trimming.push_back(gid);
        }
    }

    /// Removes at most [`SPLIT_TRIM_KEYS_PER_TICK`] keys that splits left
    /// outside replicas' bounds, oldest split first. The shard loop calls
    /// it once per tick; public so that tests can drive a shard without
    /// its loop.
    pub fn trim_split_leftovers(&mut self) {
        let mut budget = SPLIT_TRIM_KEYS_PER_TICK;
        while budget > 0 {
            let Some(&gid) = self.trimming.front() else {
                return;
            };
            let Some(r) = self.replicas.get_mut(&gid) else {
                self.trimming.pop_front();
                continue;
            };
            let n = r.kv.trim_outside_bounds(budget);
            budget -= n.min(budget);
            self.stats.split_keys_trimmed += n as u64;
            if n == 0 || !r.kv.has_keys_outside_bounds() {
                self.trimming.pop_front();
                self.metrics_dirty.insert(gid);
            }
        }
    }
}
