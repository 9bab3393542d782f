//! Rebuilding a shard from disk: the WAL replayed into the replica catalog
//! and per-replica logs, the snapshot files, and a replica built from each.

use super::*;
use crate::kv::KeyBounds;
use crate::meta::{Epoch, RangeDesc, RangeReplica, ReplicaRole};

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
/// The static deployment (`--groups G`: every group on every node) is one
/// way to create replicas: on a node that started the cluster, each group
/// of this shard that the catalog does not hold, and that was never
/// destroyed here, is created with its founding replica (a restate, so a
/// data dir written before the catalog existed keeps its logs). A node
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
    let boot: Vec<CatalogOp> = crate::route::groups_of_shard(shard, cfg.shards, cfg.groups)
        .filter(|_| founding)
        .map(|g| ReplicaDesc {
            group: g,
            replica: cfg.node,
            voters: cfg.voters.clone(),
            descriptor: bytes::Bytes::new(),
        })
        // Not hosted here yet, never destroyed here (`check_create`).
        .filter(|d| replay.catalog.check_create(d).is_ok())
        .map(|mut d| {
            d.descriptor = founding_descriptor(cfg, d.group).to_bytes();
            CatalogOp::Create(d)
        })
        .collect();
    // A group with a log but no catalog entry was written before the
    // catalog existed, when keys were placed by a hash: not one to cut
    // into ranges now.
    if cfg.groups > 1 {
        if let Some(g) = boot
            .iter()
            .map(CatalogOp::group)
            .find(|g| replay.groups.contains_key(g))
        {
            return Err(ShardError::Group {
                shard,
                group: g,
                what: HASH_PLACED.to_string(),
            });
        }
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
    for d in replay.catalog.live() {
        let log = replay.groups.remove(&d.group).unwrap_or_default();
        let r = build_replica(cfg, d, log, snaps.get(&d.group).cloned())?;
        replicas.insert(d.group, Box::new(r));
    }
    let replayed = Replayed {
        records: replay.records,
        snapshots: snaps.len(),
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
    let mut rc = cfg.raft.clone();
    rc.id = d.replica;
    rc.voters = d.voters.clone();
    rc.seed = cfg.raft.seed ^ g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // One voter of a new group campaigns at once, spread over the voters
    // by group id (`RaftConfig::first_candidate`).
    rc.first_candidate = first_candidate(g, &d.voters);
    let rc = rc.validate().map_err(|e| group_err(e.to_string()))?;
    let mut r =
        Replica::recover(g, rc, restart, log, snap, cfg.kv.clone()).map_err(|e| group_err(e.0))?;
    if !r.kv.bounds().known {
        // No snapshot that carries the bounds yet: those the replica was
        // created with.
        if !d.descriptor.is_empty() {
            let desc = RangeDesc::decode(&d.descriptor).map_err(|e| group_err(e.to_string()))?;
            r.kv.set_bounds(KeyBounds {
                start: desc.start,
                end: desc.end,
                version: desc.epoch.version,
                known: true,
            });
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

/// Why a replica without a key range is refused in a cluster of more than
/// one group.
const HASH_PLACED: &str = "this replica has no key range (no range descriptor, no snapshot that \
     carries one): a data directory written by a version of ringraft that placed keys in groups \
     by hash, whose keys this version would look for in the wrong groups (or a replica created \
     without a descriptor). Start a new cluster in an empty data directory and write the data \
     again";

/// The descriptor a founding replica of initial range `g` is created
/// with: the range's keys from the split keys, every initial voter as a
/// voter on `g`'s shard of its node (a founding replica's id is its node's
/// id), epoch 1.0.
fn founding_descriptor(cfg: &ShardConfig, g: GroupId) -> RangeDesc {
    let (start, end) = crate::route::initial_bounds(g, &cfg.split_keys);
    let shard = crate::route::shard_of(g, cfg.shards);
    RangeDesc {
        id: g,
        start,
        end,
        epoch: Epoch {
            version: 1,
            conf_ver: 0,
        },
        replicas: cfg
            .voters
            .iter()
            .map(|&v| RangeReplica {
                replica: v,
                node: v,
                shard,
                role: ReplicaRole::Voter,
            })
            .collect(),
    }
}

/// The voter of new group `g` that campaigns first
/// (`RaftConfig::first_candidate`): spread over the voters by group id, so
/// each node leads its share of new groups. 0 for a group without voters.
fn first_candidate(g: GroupId, voters: &[ReplicaId]) -> ReplicaId {
    match voters.len() {
        0 => 0,
        n => voters[(g % n as u64) as usize],
    }
}
