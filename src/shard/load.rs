//! Rebuilding a shard from disk: the WAL replayed into the replica catalog
//! and per-replica logs, the snapshot files, and a replica built from each.

use super::*;
use crate::kv::KeyBounds;
use crate::meta::RangeDesc;

/// What `load` found.
pub(super) struct Replayed {
    pub(super) records: u64,
    pub(super) snapshots: usize,
    pub(super) torn_tail: Option<ringraft_wal::TornTail>,
    /// Logs of groups without a live replica (destroyed), dropped.
    pub(super) logs_dropped: usize,
}

/// A shard rebuilt from disk.
pub(super) struct Loaded {
    pub(super) wal: Wal<DmaDisk>,
    pub(super) replicas: super::Replicas,
    pub(super) catalog: crate::storage::Catalog,
    pub(super) replayed: Replayed,
}

/// Opens the WAL and rebuilds the shard's replica catalog and every live
/// replica from it and from the snapshot files (at start, and after a full
/// disk has been freed).
///
/// Bootstrap is one way to create replicas: when the shard of a node that
/// started the cluster first opens, each initial range of this shard
/// placed on the node (`route::founding_placement`) is created with its
/// founding replica (after that, only a group log written before the
/// catalog existed is restated). A node
/// that joined creates none: its replicas get the ids their groups
/// allocate when it is added, and the leader's first message creates each
/// (`group::creates_replica`). A
/// destroy that a crash interrupted is finished here: snapshot files of
/// groups without a live replica are removed.
pub(super) async fn load(
    cfg: &ShardConfig,
    wal_dir: &std::path::Path,
    snap_dir: &std::path::Path,
) -> Result<Loaded, ShardError> {
    let shard = cfg.shard;
    let disk = DmaDisk::new(wal_dir).map_err(|err| ShardError::Io {
        shard,
        what: "opening the WAL directory",
        err,
    })?;
    let (wal, mut replay, report) = storage::open_wal(disk, cfg.wal.clone())
        .await
        .map_err(wal_err(shard))?;
    if let Some(err) = replay.error.take() {
        return Err(ShardError::Record { shard, err });
    }
    let founding = !cfg.voters.is_empty();
    // Founding replicas are created when the shard first opens (and again
    // if that start was cut short before it was marked opened: creates are
    // idempotent). Never later: flags given at a restart (--peers,
    // --replication-factor) must not place replicas where the cluster did
    // not, and a replica moved away must not come back.
    let first_open = !cfg.dir.join(crate::identity::OPENED_FILE).exists();
    let orphan =
        |g: GroupId| from_before_catalog(&replay.catalog, replay.groups.contains_key(&g), g);
    let boot: Vec<CatalogOp> = crate::route::groups_of_shard(shard, cfg.shards, cfg.groups)
        .filter(|_| founding)
        .filter_map(|g| {
            let voters = founders_of(cfg, g, orphan(g));
            voters.contains(&cfg.node).then_some(ReplicaDesc {
                group: g,
                replica: cfg.node,
                voters,
                descriptor: bytes::Bytes::new(),
            })
        })
        // Not hosted here yet, never destroyed here (`check_create`); after
        // the first open, only a log from before the catalog is restated.
        .filter(|d| replay.catalog.check_create(d).is_ok())
        .filter(|d| first_open || orphan(d.group))
        .map(|mut d| {
            d.descriptor = founding_descriptor(cfg, d.group, &d.voters).to_bytes();
            CatalogOp::Create(d)
        })
        .chain(founding_meta(cfg, first_open, &replay.catalog))
        .collect();
    // A group with a log but no catalog entry was written before the
    // catalog existed, when keys were placed by a hash: not one to cut
    // into ranges now (nor to drop silently, if it is not placed here).
    let restated = |g: &GroupId| boot.iter().any(|op| op.group() == *g);
    if let Some(&g) = replay
        .groups
        .keys()
        .find(|&&g| orphan(g) && (cfg.groups > 1 || !restated(&g)))
    {
        return Err(ShardError::Group {
            shard,
            group: g,
            what: HASH_PLACED.to_string(),
        });
    }
    storage::catalog::append_catalog(
        &wal,
        &mut replay.catalog,
        true,
        &boot,
        cfg.wal.record_bytes_max,
    )
    .await
    .map_err(wal_err(shard))?;
    let logs_dropped = replay.finish();
    let mut snaps: HashMap<u64, Snapshot> = HashMap::new();
    for (g, snap) in snapfile::load_latest(snap_dir)
        .await
        .map_err(|err| ShardError::Snapshot { shard, err })?
    {
        if replay.catalog.get(g).is_some() {
            snaps.insert(g, snap);
        } else {
            snapfile::remove_group(snap_dir, g)
                .await
                .map_err(|err| ShardError::Snapshot { shard, err })?;
        }
    }
    let mut replicas = BTreeMap::new();
    // Each snapshot is in its file: the core reads chunks from there
    // (`RawNode::snapshot_stored`), and the bytes read are freed.
    let mut held = Vec::new();
    for d in replay.catalog.live() {
        let log = replay.groups.remove(&d.group).unwrap_or_default();
        let snap = snaps.get(&d.group).cloned();
        let index = snap.as_ref().map(|s| s.meta.index);
        let mut r = build_replica(cfg, d, log, snap)?;
        held.extend(index.and_then(|i| r.raft.snapshot_stored(i)));
        replicas.insert(d.group, Box::new(r));
    }
    let snapshots = snaps.len();
    super::snapshots::drop_on_helper((snaps, held));
    let replayed = Replayed {
        records: replay.records,
        snapshots,
        torn_tail: report.torn_tail,
        logs_dropped,
    };
    Ok(Loaded {
        wal,
        replicas,
        catalog: replay.catalog,
        replayed,
    })
}

/// The Raft configuration of replica `d` on this shard: its id, its
/// founding voters, its own random seed and whether it is its new
/// group's first candidate. Errors: the shard's Raft settings refuse it.
pub(super) fn replica_config(
    cfg: &ShardConfig,
    d: &ReplicaDesc,
) -> Result<crate::raft::ValidRaftConfig, ShardError> {
    let g = d.group;
    let mut rc = cfg.raft.clone();
    rc.id = d.replica;
    rc.voters = d.voters.clone();
    rc.seed = cfg.raft.seed ^ g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // One voter of a new group campaigns at once, spread over the nodes
    // (`RaftConfig::first_candidate`).
    rc.first_candidate = first_candidate(cfg, g, &d.voters);
    rc.validate().map_err(|e| ShardError::Group {
        shard: cfg.shard,
        group: g,
        what: e.to_string(),
    })
}

/// A replica of `d` from its replayed log and latest snapshot.
pub(super) fn build_replica(
    cfg: &ShardConfig,
    d: &ReplicaDesc,
    mut log: storage::GroupLog,
    snap: Option<Snapshot>,
) -> Result<Replica, ShardError> {
    let (shard, g) = (cfg.shard, d.group);
    let group_err = |what: String| ShardError::Group {
        shard,
        group: g,
        what,
    };
    let restart = log.take_restart(snap.as_ref().map(|s| (s.meta.index, s.meta.term)));
    let rc = replica_config(cfg, d)?;
    let mut r =
        Replica::recover(g, rc, restart, log, snap, cfg.kv.clone()).map_err(|e| group_err(e.0))?;
    if g == crate::route::META_GROUP {
        // The cluster map, no keys: its bounds stay "not known", so it is
        // never reported as a range.
    } else if !r.kv.bounds().known {
        // No snapshot that carries the bounds yet: those the replica was
        // created with.
        if !d.descriptor.is_empty() {
            let desc = RangeDesc::decode(&d.descriptor).map_err(|e| group_err(e.to_string()))?;
            r.kv.set_bounds(KeyBounds::of_descriptor(&desc));
        } else if cfg.groups > 1 && (!d.voters.is_empty() || r.kv.applied() > 0) {
            // A founding replica without a descriptor, or a joined one with
            // state but no bounds, was created before keys were placed by
            // range: its keys were placed by a hash, and would now be
            // looked for in other groups.
            return Err(group_err(HASH_PLACED.to_string()));
        } else {
            // One group holds every key either way; a joining replica
            // learns its bounds from its first snapshot.
            let whole = KeyBounds {
                known: !d.voters.is_empty(),
                ..KeyBounds::default()
            };
            r.kv.set_bounds(whole);
        }
    }
    Ok(r)
}

/// Whether group `g`'s log (`logged`: the WAL holds records of it) was
/// written before the catalog existed: the catalog has no word of the
/// group, neither a live replica nor a tombstone. It used to ask whether
/// a replica with the node's id could be created, which held for a
/// destroyed replica whose id is below the node's (replica ids are the
/// group's own: replica 4 on node 5): a node restarted after such a
/// destroy, with the group's records still in a segment whose catalog
/// create had been released, refused to start (the chaos test of moves,
/// seed 2).
fn from_before_catalog(catalog: &crate::storage::Catalog, logged: bool, g: GroupId) -> bool {
    logged && catalog.get(g).is_none() && !catalog.is_tombstoned(g)
}

/// Why a replica without a key range is refused in a cluster of more than
/// one group.
const HASH_PLACED: &str = "this replica has no key range (no range descriptor, no snapshot that \
     carries one): a data directory written by a version of ringraft that placed keys in groups \
     by hash, whose keys this version would look for in the wrong groups (or a replica created \
     without a descriptor). Start a new cluster in an empty data directory and write the data \
     again";

/// The meta group's founding replica on this node, if the shard is a
/// founder's shard 0 opening for the first time and the node is among the
/// meta group's voters (`route::meta_voters`). It has no descriptor: it
/// holds no keys.
fn founding_meta(
    cfg: &ShardConfig,
    first_open: bool,
    catalog: &crate::storage::Catalog,
) -> Option<CatalogOp> {
    let voters = crate::route::meta_voters(&cfg.voters);
    let d = ReplicaDesc {
        group: crate::route::META_GROUP,
        replica: cfg.node,
        voters,
        descriptor: bytes::Bytes::new(),
    };
    (first_open
        && cfg.shard == 0
        && d.voters.contains(&cfg.node)
        && catalog.check_create(&d).is_ok())
    .then_some(CatalogOp::Create(d))
}

/// The founding voters of initial range `g`, sorted: its placement
/// (`route::founding_placement`), or, for a log written before the
/// catalog existed (`legacy`), every founder: groups were then on every
/// node, and that log's entries were committed by a majority of them all.
pub(super) fn founders_of(cfg: &ShardConfig, g: GroupId, legacy: bool) -> Vec<ReplicaId> {
    let mut voters = if legacy {
        cfg.voters.clone()
    } else {
        crate::route::founding_placement(g, &cfg.voters, cfg.replication_factor)
    };
    voters.sort_unstable();
    voters
}

/// The descriptor a founding replica of initial range `g` is created
/// with: the range's keys from the split keys, its founding nodes
/// (`nodes`, from [`founders_of`]) as voters on `g`'s shard of each (a
/// founding replica's id is its node's id), epoch 1.0.
pub(super) fn founding_descriptor(cfg: &ShardConfig, g: GroupId, nodes: &[ReplicaId]) -> RangeDesc {
    let (start, end) = crate::route::initial_bounds(g, &cfg.split_keys);
    RangeDesc::founding(g, start, end, nodes, crate::route::shard_of(g, cfg.shards))
}

/// The voter of new group `g` that campaigns first
/// (`RaftConfig::first_candidate`): the head of its founding placement
/// (each founder leads about 1 / N of the initial ranges), else one spread
/// over the voters by group id. 0 for a group without voters.
fn first_candidate(cfg: &ShardConfig, g: GroupId, voters: &[ReplicaId]) -> ReplicaId {
    let head = crate::route::founding_placement(g, &cfg.voters, cfg.replication_factor)
        .first()
        .copied();
    match (head, voters.len()) {
        (_, 0) => 0,
        (Some(h), _) if voters.contains(&h) => h,
        (_, n) => voters[(g % n as u64) as usize],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Catalog, CatalogOp};

    /// The chaos test of moves (seed 2): node 5's replica 4 of group 0
    /// destroyed, its records left in the WAL: not a log from before the
    /// catalog (the probe with the node's id, 5 > tombstone 4, said it
    /// was, and the restart was refused).
    #[test]
    fn a_destroyed_groups_log_is_not_one_from_before_the_catalog() {
        let mut c = Catalog::default();
        assert!(from_before_catalog(&c, true, 0), "no word of group 0");
        assert!(!from_before_catalog(&c, false, 0), "no log of it either");
        let d = ReplicaDesc {
            group: 0,
            replica: 4,
            voters: Vec::new(),
            descriptor: bytes::Bytes::new(),
        };
        c.apply(10, false, CatalogOp::Create(d));
        assert!(!from_before_catalog(&c, true, 0), "live");
        c.apply(
            20,
            false,
            CatalogOp::Tombstone {
                group: 0,
                replica: 4,
            },
        );
        assert!(c.get(0).is_none());
        assert!(!from_before_catalog(&c, true, 0), "destroyed here");
    }
}
