//! Range splits (issue #18): the nemesis asks a range's leader for a
//! split, and every replica that applies the split entry (a member of the
//! range at its index) makes the new range on its node as the shard does
//! (`shard::splits`).
//!
//! - **Asked**: a split is proposed at the leader of a range, as
//!   `Shard::split_request` proposes one: an admin command
//!   (`kv::WriteOp::Split`) carrying the bounds the leader has, at a
//!   workload key strictly inside them, naming a range id never used
//!   before (the meta group's `AllocIds`), and not while the range's
//!   membership changes. Unlike the shard (which answers `Busy` to a
//!   second split of a range before the first applied, and proposes one
//!   again only after a leader change), the nemesis may propose a second
//!   at once: every replica refuses it alike (its bounds are stale).
//! - **Made**: a replica that applies the entry gets the new side's state
//!   machine (`group::Applied::splits`); its node makes the range unless
//!   it hosts it already (a replay after a restart, or created empty by
//!   its leader's heartbeat first) or destroyed it, or the replica was
//!   added to the range after the split (`group::split_makes_replica`):
//!   the first snapshot
//!   (at the split entry, with the parent's membership there) durable
//!   first, then its catalog create, then the replica restarted from that
//!   snapshot (`RawNode::restart_from`), campaigning at once on the node
//!   whose parent replica leads (`RawNode::split_born`). The shard writes
//!   the snapshot file in the background; here it is made at once, so no
//!   crash falls between the split's apply and the range's create.
//! - **Checked**: the new range's state after the split entry is the same
//!   on every node that made it (the state digest), its log starts after
//!   the split entry (`GroupChecks::base`), every checker runs on it as
//!   on any group, clients find it by `KeyNotInRange` and their sessions
//!   travel with it (a put asked again across a split takes effect once:
//!   `Sim::check_exactly_once`), and at the end the ranges' leaders'
//!   bounds tile the keyspace, each member placed on a node hosted there.

use super::state_machine::key_bytes;
use super::*;
use crate::group::SplitApplied;
use crate::kv::{Command, WriteOp};
use crate::storage::{CatalogOp, ReplicaDesc};

/// Keys a node trims per tick from a replica a split left holding keys
/// outside its bounds (`kv::Kv::trim_outside_bounds`; the shard's budget
/// is `shard::SPLIT_TRIM_KEYS_PER_TICK`): one, so that replicas part
/// trimmed meet snapshots, restarts and the checkers.
const SPLIT_TRIM_KEYS_PER_TICK: usize = 1;

impl Sim {
    /// Asks the leader of a random range for a split at a workload key
    /// inside its bounds, if splits are left to ask for: whether it
    /// asked.
    pub(super) fn split_fault(&mut self) -> bool {
        if self.splits_left == 0 {
            return false;
        }
        // A range with a leader, from a random one on.
        let groups: Vec<GroupId> = self
            .checks
            .keys()
            .copied()
            .filter(|&g| g != crate::route::META_GROUP)
            .collect();
        let first = self.rng.below(groups.len() as u64) as usize;
        let led = (0..groups.len())
            .map(|k| groups[(first + k) % groups.len()])
            .find_map(|g| Some((g, self.current_leader(g)?)));
        let Some((g, l)) = led else {
            return false;
        };
        if self.nodes[l].paused_until.is_some() {
            // A stopped process proposes nothing.
            return false;
        }
        let rep = self.nodes[l].group(g).rep.as_ref().expect("leader is up");
        if rep.raft.conf().is_joint() || rep.raft.conf_change_pending() {
            // As the shard refuses it: the new range would be born with a
            // change half made.
            return false;
        }
        let b = rep.kv.bounds().clone();
        let inside: Vec<u64> = (1..self.cfg.keys)
            .filter(|&k| {
                let kb = key_bytes(k);
                kb[..] > b.start[..] && b.contains(&kb)
            })
            .collect();
        if inside.is_empty() {
            return false;
        }
        let key = inside[self.rng.below(inside.len() as u64) as usize];
        let right = self.next_group;
        let cmd = Command {
            client: 0,
            seq: 0,
            ack: 0,
            op: WriteOp::Split {
                key: Bytes::copy_from_slice(&key_bytes(key)),
                right,
                start: b.start,
                end: b.end,
                version: b.version,
            },
        };
        let raft = self.nodes[l].raft_mut(g).expect("up");
        if raft.propose(cmd.encode()).is_ok() {
            self.next_group += 1;
            self.splits_left -= 1;
            self.report.splits_proposed += 1;
            // The answers to puts in flight in the range are lost: asked
            // again, each may meet the split (its session must answer it
            // on the new range if it was applied before).
            for cl in &mut self.clients {
                let put = matches!(cl.op, Some(ClientOp::Put { .. }));
                if put && cl.proposed.is_some_and(|p| p.1 == g) {
                    cl.lose_answer = true;
                }
            }
        }
        self.drive(l, g);
        true
    }

    /// Node `i`'s replica of range `parent` applied split entries: each
    /// new range is noted (the first time any node applies its entry) and
    /// made on this node.
    pub(super) fn make_splits(&mut self, i: usize, parent: GroupId, splits: Vec<SplitApplied>) {
        for s in splits {
            self.note_split(&s);
            self.make_split(i, parent, s);
            if self.failure.is_some() {
                return;
            }
        }
    }

    /// The first apply of split entry `s` anywhere: the range goes in the
    /// map and gets its checks (its log starts after the entry) and a slot
    /// on every node (hosting nothing until made or created there).
    fn note_split(&mut self, s: &SplitApplied) {
        let right = s.right;
        if let Some(c) = self.checks.get(&right) {
            if c.base != s.index {
                let msg = format!(
                    "split: range {right} made by split entries at indexes {} and {}",
                    c.base, s.index
                );
                self.fail(msg);
            }
            return;
        }
        self.checks.insert(
            right,
            GroupChecks {
                base: s.index,
                ..GroupChecks::default()
            },
        );
        self.ranges.insert(s.kv.bounds().start.clone(), right);
        for j in 0..self.nodes.len() {
            let slot = SimReplica::new(PLACEHOLDER_REPLICA - j as u64, false);
            self.nodes[j].groups.insert(right, slot);
            if self.nodes[j].up() {
                let rep = self.empty_replica(j, right);
                self.nodes[j].group_mut(right).rep = Some(rep);
            }
        }
    }

    /// Makes range `s.right` on node `i` from split entry `s` its replica
    /// of `parent` applied (see the top), unless the node hosts it already
    /// or destroyed it, or the replica was no member of `parent` at the
    /// split's index.
    fn make_split(&mut self, i: usize, parent: GroupId, s: SplitApplied) {
        let right = s.right;
        let log = self.nodes[i].log.as_ref().expect("up");
        let tombstoned = log.catalog().is_tombstoned(right);
        if self.nodes[i].group(right).hosted || tombstoned {
            self.report.splits_applied_again += 1;
            return;
        }
        let from = self.nodes[i].group_mut(parent);
        let p = from.rep.as_mut().expect("up");
        let Some((meta, conf)) = p.raft.snapshot_meta_at(s.index) else {
            let msg = format!(
                "split: node {} range {parent} applied split entry {} but knows no membership at it",
                self.ids[i], s.index
            );
            return self.fail(msg);
        };
        let (replica, parent_leads) = (from.replica, p.raft.role() == Role::Leader);
        if !crate::group::split_makes_replica(&conf, self.ids[i], replica) {
            // Added to the parent after the split (the shard's rule).
            self.report.splits_not_member += 1;
            return;
        }
        let index = s.index;
        let log = self.nodes[i].log.as_ref().expect("up");
        let desc = ReplicaDesc {
            group: right,
            replica,
            voters: Vec::new(),
            descriptor: Bytes::new(),
        };
        let checked = log.catalog().check_create(&desc);
        // The placeholder goes (it answers what waits on it as a destroy
        // does); the first snapshot is durable first, then the create.
        let mut answers = Vec::new();
        let slot = self.nodes[i].group_mut(right);
        if let Some(mut old) = slot.rep.take() {
            old.drain_waiters(crate::group::Gone::Destroyed, &mut answers);
        }
        let snap = Snapshot {
            meta,
            conf,
            data: s.kv.snapshot(),
        };
        slot.store_snapshot(snap.clone());
        if !self.catalog_write(i, checked.map(|()| CatalogOp::Create(desc))) {
            return;
        }
        let slot = self.nodes[i].group_mut(right);
        slot.replica = replica;
        slot.hosted = true;
        slot.cataloged = true;
        let rc = self.node_cfg(i, right);
        let (r, _) = Replica::from_split(right, replica, rc, snap, s.kv, parent_leads);
        self.nodes[i].group_mut(right).rep = Some(r);
        self.report.ranges_made_by_split += 1;
        self.on_answers(i, right, &mut answers);
        self.check_state(i, right, index);
        self.drive(i, right);
    }

    /// Exactly once across splits: node `i`'s replica of `g` is about to
    /// apply `committed`. Each client write among them that will take
    /// effect (applied on a copy of the state machine, entry by entry: not
    /// settled by its session before, and not refused) is noted with the
    /// (range, index) of the entry; the same write taking effect at
    /// another (range, index) fails the run (a retry across a split that
    /// its session, copied to the new range, did not answer). Only in runs
    /// with splits (it applies every entry twice).
    pub(super) fn check_exactly_once(&mut self, i: usize, g: GroupId, committed: &[Entry]) {
        if self.cfg.splits == 0 || committed.is_empty() {
            return;
        }
        let mut kv = self.nodes[i].group(g).kv().clone();
        for e in committed {
            let cmd = match e.kind {
                EntryKind::Normal => Command::decode(&e.data).expect("a command"),
                _ => {
                    kv.skip(e.index);
                    continue;
                }
            };
            let settled = cmd.client == 0 || kv.known_outcome(cmd.client, cmd.seq).is_some();
            let took_effect = kv.apply(e.index, &cmd).is_ok() && !settled;
            kv.take_split();
            if !took_effect {
                continue;
            }
            let first = *self
                .writes_applied
                .entry((cmd.client, cmd.seq))
                .or_insert((g, e.index));
            if first != (g, e.index) {
                let msg = format!(
                    "exactly once: node {} applies write (session {}, seq {}) at range {g} index {} but it took effect at range {} index {}",
                    self.ids[i], cmd.client, cmd.seq, e.index, first.0, first.1
                );
                return self.fail(msg);
            }
        }
    }

    /// An empty replica of group `g` on node `i` (its slot's id), as a
    /// node starts one with nothing on disk.
    pub(super) fn empty_replica(&self, i: usize, g: GroupId) -> Replica {
        let cfg = self.node_cfg(i, g);
        let mut log = crate::storage::GroupLog::default();
        let restart = log.take_restart(None);
        Replica::recover(g, cfg, restart, log, None, state_machine::kv_limits())
            .expect("an empty replica starts")
    }

    /// Trims keys a split left outside the bounds of node `i`'s replica
    /// of `g`, a few per tick, as the shard does.
    pub(super) fn trim_split_leftovers(&mut self, i: usize, g: GroupId) {
        let Some(rep) = self.nodes[i].group_mut(g).rep.as_mut() else {
            return;
        };
        if rep.kv.has_keys_outside_bounds() {
            let n = rep.kv.trim_outside_bounds(SPLIT_TRIM_KEYS_PER_TICK);
            self.report.split_keys_trimmed += n as u64;
        }
    }

    /// The range that holds simulated key `key` as the clients know it.
    pub(super) fn range_of_key(&self, key: u64) -> GroupId {
        let k = Bytes::copy_from_slice(&key_bytes(key));
        *self
            .client_ranges
            .range(..=k)
            .next_back()
            .expect("the first range starts at the empty key")
            .1
    }

    /// End of run: the ranges' leaders' bounds tile the keyspace as the
    /// map says (each starts where the one before ends, the first at the
    /// empty key, the last unbounded), so every key is in exactly one
    /// range; every member of every range is hosted on the node it is
    /// placed on (the convergence check found their state equal to the
    /// leader's).
    pub(super) fn check_ranges(&mut self) {
        self.report.ranges = self.ranges.len() as u64;
        let ranges: Vec<(Bytes, GroupId)> =
            self.ranges.iter().map(|(k, &g)| (k.clone(), g)).collect();
        for (k, (start, g)) in ranges.iter().enumerate() {
            let end = ranges.get(k + 1).map(|r| r.0.clone()).unwrap_or_default();
            let l = self.current_leader(*g).expect("final group checks passed");
            let b = self.nodes[l].group(*g).kv().bounds();
            // An unsplit range created without bounds holds every key.
            let whole = !b.known && ranges.len() == 1;
            if !whole && (b.start != *start || b.end != end) {
                let msg = format!(
                    "ranges: range {g} holds [{}, {}) at version {} but the map has it at [{}, {})",
                    crate::meta::show_key(&b.start),
                    crate::meta::show_key(&b.end),
                    b.version,
                    crate::meta::show_key(start),
                    crate::meta::show_key(&end)
                );
                return self.fail(msg);
            }
        }
    }

    /// Whether every replica of group `g`'s membership (as node `l`, its
    /// leader, has it) is hosted on the node it is placed on, but on a
    /// node whose disk was wiped (refused for good): the first one that
    /// is not, as (node index, replica).
    pub(super) fn unhosted_member(&self, l: usize, g: GroupId) -> Option<(usize, ReplicaId)> {
        let c = self.nodes[l].raft(g).expect("up").conf();
        c.voters
            .iter()
            .chain(&c.learners)
            .filter_map(|&r| Some((c.node_of(r)?, r)))
            .map(|(node, r)| ((node - 1) as usize, r))
            .find(|&(j, r)| {
                let slot = self.nodes[j].group(g);
                let hosts = slot.hosted && slot.replica == r;
                !(self.nodes[j].lost || hosts)
            })
    }
}
