//! Replicas created and destroyed at run time on a real shard (its WAL on
//! disk through io_uring), and what a restart rebuilds from the catalog.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use ringraft::client::{Client, ClientConfig, Error};
use ringraft::config::{NodeSettings, ValidConfig};
use ringraft::identity::{
    lock_data_dir, open_store, Bootstrap, DataDirLock, InitialRanges, StoreIdentity,
};
use ringraft::meta::{Epoch, RangeDesc, RangeReplica, ReplicaRole};
use ringraft::raft::{ConfState, Snapshot, SnapshotMeta};
use ringraft::shard::{ReplicaApiError, Shard};
use ringraft::storage::{snapfile, CatalogError, ReplicaDesc};
use ringraft::wire::{ClientError, Op, Reply};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn settings(dir: &std::path::Path, peer: u16, client: u16) -> ValidConfig {
    node_settings(dir, peer, client)
        .validate()
        .expect("valid settings")
}

/// Node 1 of a new cluster, one shard, two static groups.
fn node_settings(dir: &std::path::Path, peer: u16, client: u16) -> NodeSettings {
    NodeSettings {
        id: Some(1),
        data_dir: Some(dir.to_path_buf()),
        listen_peers: Some(format!("127.0.0.1:{peer}")),
        listen_clients: Some(format!("127.0.0.1:{client}")),
        groups: Some(2),
        shards: Some(1),
        placement: Some("unbound".into()),
        tick_ms: Some(10),
        initial_cluster_state: Some("new".into()),
        ..Default::default()
    }
}

/// The range descriptor of `group` that `desc` stores: keys
/// `[{group}/a, {group}/z)`, its voters (or the replica itself, for one
/// that waits to learn them) each on the node of its own id.
fn range_of(group: u64, replica: u64, voters: &[u64]) -> Bytes {
    let members = if voters.is_empty() {
        vec![replica]
    } else {
        voters.to_vec()
    };
    RangeDesc {
        id: group,
        start: Bytes::from(format!("{group}/a")),
        end: Bytes::from(format!("{group}/z")),
        epoch: Epoch {
            version: 1,
            conf_ver: 0,
        },
        replicas: members
            .into_iter()
            .map(|r| RangeReplica {
                replica: r,
                node: r,
                shard: 0,
                role: ReplicaRole::Voter,
            })
            .collect(),
    }
    .to_bytes()
}

fn desc(group: u64, replica: u64, voters: &[u64]) -> ReplicaDesc {
    ReplicaDesc {
        group,
        replica,
        voters: voters.to_vec(),
        descriptor: range_of(group, replica, voters),
    }
}

/// A snapshot at index 5 of a group whose only voter is node 1.
fn snapshot_of_voter_1(data: &'static [u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta { index: 5, term: 1 },
        conf: ConfState::new(&[1], &[]),
        data: Bytes::from_static(data),
    }
}

/// A new store of node 1 in a temporary directory (removed when the first
/// value drops): its settings, the data directory's lock and identity.
fn fresh_store() -> (tempfile::TempDir, ValidConfig, DataDirLock, StoreIdentity) {
    fresh_store_with(|s| s)
}

/// [`fresh_store`] with node 1's settings changed by `f`.
/// Node 1's new store (one shard) in `dir`.
fn new_store(dir: &std::path::Path, lock: &DataDirLock, ranges: InitialRanges) -> StoreIdentity {
    open_store(dir, lock, 1, 1, 1, Bootstrap::New, ranges)
        .unwrap()
        .0
}

fn fresh_store_with(
    f: impl FnOnce(NodeSettings) -> NodeSettings,
) -> (tempfile::TempDir, ValidConfig, DataDirLock, StoreIdentity) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n1");
    let cfg = f(node_settings(&dir, free_port(), free_port()))
        .validate()
        .expect("valid settings");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(&dir, &lock, InitialRanges::default());
    (t, cfg, lock, store)
}

/// A shard of node 1 on `store`, hosting replica 1 of `group` (voters
/// 1, 2, 3) besides the static groups.
async fn shard_with_group(cfg: &ValidConfig, store: &StoreIdentity, group: u64) -> Shard {
    let mut shard = Shard::open(cfg.shard(0, store), Rc::new(Cell::new(false)), None)
        .await
        .unwrap();
    shard
        .create_replica(desc(group, 1, &[1, 2, 3]))
        .await
        .unwrap();
    shard
}

/// The ranges `shard` hosts (not the meta group, which a founder's shard
/// 0 hosts besides).
/// `--peers` entries for nodes 2 to 5 (node 1 being the one opened).
fn four_peers() -> Vec<String> {
    (2..=5)
        .map(|n| format!("{n}=127.0.0.1:{}", free_port()))
        .collect()
}

fn groups(shard: &Shard) -> Vec<u64> {
    ranges_of(shard).iter().map(|r| r.group).collect()
}

fn ranges_of(shard: &Shard) -> Vec<ringraft::shard::ReplicaInfo> {
    shard
        .replicas()
        .into_iter()
        .filter(|r| r.group != ringraft::route::META_GROUP)
        .collect()
}

/// `shard` running on its listeners at `peer` and `client`, and a
/// client of it.
async fn serve(
    shard: Shard,
    peer: u16,
    client: u16,
) -> (
    glommio::Task<Result<(), ringraft::shard::ShardError>>,
    Client,
) {
    let peer_l = glommio::net::TcpListener::bind(("127.0.0.1", peer)).unwrap();
    let client_l = glommio::net::TcpListener::bind(("127.0.0.1", client)).unwrap();
    let served = glommio::spawn_local(shard.run(peer_l, client_l));
    let addr = format!("127.0.0.1:{client}").parse().unwrap();
    let cl = Client::connect(ClientConfig::new(vec![addr]))
        .await
        .unwrap();
    (served, cl)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f)
}

/// Create, list and destroy on a live store; the catalog's refusals; a
/// restart rebuilds exactly the live replicas (the destroyed static group
/// is not re-created by `--groups`); a snapshot file left by a destroy that
/// a crash interrupted is removed at open; and a created replica serves
/// writes.
#[test]
fn replicas_are_created_destroyed_and_rebuilt_from_the_catalog_after_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n1");
    let (peer, client) = (free_port(), free_port());
    let cfg = settings(&dir, peer, client);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(&dir, &lock, InitialRanges::default());
    let open = |cfg: &ValidConfig, store: &StoreIdentity| {
        let sc = cfg.shard(0, store);
        async move {
            Shard::open(sc, Rc::new(Cell::new(false)), None)
                .await
                .unwrap()
        }
    };

    let (c1, s1) = (cfg.clone(), store);
    run(async move {
        let mut shard = open(&c1, &s1).await;
        assert_eq!(groups(&shard), vec![0, 1], "the static groups");
        shard.create_replica(desc(100, 1, &[1])).await.unwrap();
        let listed = shard.replicas();
        let r = listed.iter().find(|r| r.group == 100).unwrap();
        assert_eq!((r.replica, r.voters.clone()), (1, vec![1]));
        assert_eq!(r.descriptor, range_of(100, r.replica, &r.voters));
        // Refusals: nothing changes.
        match shard.create_replica(desc(100, 1, &[1])).await {
            Err(ReplicaApiError::Catalog {
                err: CatalogError::Exists { group: 100, .. },
                ..
            }) => {}
            other => panic!("a second replica of group 100: {other:?}"),
        }
        // A founding replica has its node's id; a joining one (no voters:
        // its leader's snapshot seeds it) has the id its group gave it.
        let e = shard.create_replica(desc(101, 7, &[7])).await.unwrap_err();
        assert!(
            matches!(e, ReplicaApiError::FoundingIdNotNodeId { replica: 7, .. }),
            "{e}"
        );
        shard.create_replica(desc(102, 7, &[])).await.unwrap();
        shard.destroy_replica(102).await.unwrap();
        shard.destroy_replica(0).await.unwrap();
        assert_eq!(groups(&shard), vec![1, 100]);
        let e = shard.destroy_replica(0).await.unwrap_err();
        assert!(e.to_string().contains("group 0 has no replica"), "{e}");
        let e = shard.create_replica(desc(0, 1, &[1])).await.unwrap_err();
        assert!(
            e.to_string().contains("never comes back"),
            "a destroyed replica is not created again: {e}"
        );
    });

    // A crash between the tombstone and the removal of the snapshot files:
    // a file of group 0 is there at the next open.
    let snap_dir = dir.join("shard-0").join("snapshots");
    let (c2, s2) = (cfg.clone(), store);
    let sd = snap_dir.clone();
    run(async move {
        let snap = snapshot_of_voter_1(b"not read");
        snapfile::write(&sd, 0, &snap, crc32fast::hash(&snap.data))
            .await
            .unwrap();
        assert_eq!(snapfile::list(&sd).unwrap().len(), 1);
        let shard = open(&c2, &s2).await;
        assert_eq!(groups(&shard), vec![1, 100], "rebuilt from the catalog");
        assert!(
            snapfile::list(&sd).unwrap().is_empty(),
            "the destroyed group's snapshot file is removed at open"
        );
    });

    // The created replica serves: a write and a read through the client.
    let (c3, s3) = (cfg.clone(), store);
    run(async move {
        let shard = open(&c3, &s3).await;
        let (served, cl) = serve(shard, peer, client).await;
        let put = Op::Put {
            key: Bytes::from_static(b"100/k"),
            value: Bytes::from_static(b"v"),
        };
        let mut tries = 0;
        loop {
            match cl.call(100, put.clone(), true).await {
                Ok(Reply::Done) => break,
                other if tries < 50 => {
                    tries += 1;
                    let _ = other;
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("a write to the created group: {other:?}"),
            }
        }
        let get = Op::Get {
            key: Bytes::from_static(b"100/k"),
            mode: ringraft::wire::ReadMode::Linearizable,
        };
        let got = cl.call(100, get.clone(), false).await.unwrap();
        assert_eq!(got, Reply::Value(Some(Bytes::from_static(b"v"))));
        // The group holds the keys of its descriptor, [100/a, 100/z).
        let outside = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        match cl.call(100, outside, true).await {
            Err(Error::Server(ClientError::KeyNotInRange { start, end, .. })) => {
                assert_eq!((&start[..], &end[..]), (&b"100/a"[..], &b"100/z"[..]))
            }
            other => panic!("a key outside the group: {other:?}"),
        }
        // The destroyed static group: "ask another node", which a client
        // retries (it was WrongShard, a refusal: a write whose first
        // attempt was in the group's log was reported not applied).
        match cl.admin(1, 0, get).await {
            Err(Error::Server(ClientError::NotHosted { group: 0 })) => {}
            other => panic!("a request for the destroyed group 0: {other:?}"),
        }
        drop(served);
    });
    drop(lock);
}

/// The rule of `shard/replicas.rs`: the first chunk of a leader's
/// snapshot creates the replica it is addressed to (and is stepped into
/// it), as do a heartbeat carrying commit 0 and a vote request once they
/// came for an election timeout; appends, other heartbeats, later chunks,
/// a snapshot whose
/// configuration places the addressee on another node, and stale leaders'
/// snapshots for a destroyed replica create nothing; at most
/// `REPLICAS_CREATED_PER_TURN_MAX` are created per turn.
#[test]
fn a_leaders_snapshot_naming_this_node_creates_its_replica_and_nothing_else_does() {
    use ringraft::raft::{Body, Message};
    use ringraft::shard::REPLICAS_CREATED_PER_TURN_MAX;
    let (_t, cfg, lock, store) = fresh_store();
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let data = Bytes::from_static(b"a snapshot of group 300");
        let snap = |to: u64, offset: u64, learners: &[u64]| Message {
            from: 2,
            to,
            term: 3,
            body: Body::Snapshot {
                index: 5,
                term: 2,
                conf: ConfState::new(&[2], learners),
                offset,
                total: data.len() as u64,
                crc: crc32fast::hash(&data),
                chunk: data.clone(),
            },
        };
        let from_leader = |body| Message {
            from: 2,
            to: 1,
            term: 3,
            body,
        };
        let none_create = [
            from_leader(Body::Append {
                prev_index: 0,
                prev_term: 0,
                entries: Vec::new(),
                commit: 0,
            }),
            from_leader(Body::Heartbeat {
                commit: 3,
                round: 1,
            }),
            snap(1, 8, &[1]),
            snap(7, 0, &[7]),
        ];
        for m in none_create {
            let what = format!("{m:?}");
            shard.on_peer_message(300, 2, m);
            shard.create_from_messages().await.unwrap();
            assert_eq!(groups(&shard), vec![0, 1], "created by {what}");
        }
        shard.on_peer_message(300, 2, snap(1, 0, &[1]));
        shard.create_from_messages().await.unwrap();
        assert_eq!(groups(&shard), vec![0, 1, 300]);
        let r = shard
            .replicas()
            .into_iter()
            .find(|r| r.group == 300)
            .unwrap();
        assert_eq!((r.replica, r.term), (1, 3), "the chunk was stepped into it");
        // Destroyed: a stale leader's snapshot does not bring it back.
        shard.destroy_replica(300).await.unwrap();
        shard.on_peer_message(300, 2, snap(1, 0, &[1]));
        shard.create_from_messages().await.unwrap();
        assert_eq!(groups(&shard), vec![0, 1], "a tombstoned replica came back");
        // A burst: the limit per turn, the rest when the leaders resend.
        for g in 400..420 {
            shard.on_peer_message(g, 2, snap(1, 0, &[1]));
        }
        shard.create_from_messages().await.unwrap();
        let burst = groups(&shard).iter().filter(|&&g| g >= 400).count();
        assert_eq!(burst, REPLICAS_CREATED_PER_TURN_MAX);
        // A snapshot taken before the addressee was added does not name
        // it: its leader's membership does (the leader sends seeds only to
        // its members, on the nodes they are placed on).
        shard.on_peer_message(301, 2, snap(1, 0, &[3]));
        // A heartbeat carrying commit 0: the leader knows the member holds
        // nothing (its seeding snapshot may have been lost). Only once its
        // group's heartbeats came for an election timeout: a range split
        // off on another node is made here from its parent's state an
        // apply later.
        // A vote request likewise: a node whose parent replica installed
        // a snapshot past the split must vote in the new range, or it
        // may lose its quorum (`group::creates_replica`).
        let hb = creating_heartbeat;
        let vote = || {
            from_leader(Body::Vote {
                last_index: 9,
                last_term: 3,
                transfer: false,
            })
        };
        shard.on_peer_message(302, 2, hb());
        shard.on_peer_message(303, 2, vote());
        shard.create_from_messages().await.unwrap();
        assert!(groups(&shard).contains(&301));
        assert!(!groups(&shard).contains(&302) && !groups(&shard).contains(&303));
        assert_eq!(shard.stats().replica_creations_deferred, 2);
        let sc = cfg.shard(0, &store);
        let election = Duration::from_millis(u64::from(sc.raft.election_ticks) * sc.tick_ms);
        glommio::timer::sleep(election).await;
        shard.on_peer_message(302, 2, hb());
        shard.on_peer_message(303, 2, vote());
        shard.create_from_messages().await.unwrap();
        assert!(groups(&shard).contains(&302) && groups(&shard).contains(&303));
    });
    drop(lock);
}

/// A heartbeat from node 2's replica 2 (term 3) to replica 1 carrying
/// commit 0: its leader knows the member holds nothing, so it may create
/// the replica (`Shard::heartbeat_creates`).
fn creating_heartbeat() -> ringraft::raft::Message {
    ringraft::raft::Message {
        from: 2,
        to: 1,
        term: 3,
        body: ringraft::raft::Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    }
}

/// `UNKNOWN_HEARTBEATS_MAX`: a shard notes the first creating heartbeat
/// (commit 0) of at most that many groups it does not host. A flood of
/// heartbeats for more groups leaves the notes at the bound (they grew
/// without one: the prune dropped only expired notes, and under a flood
/// none are); a group noted is still created once its heartbeats came for
/// an election timeout, and one that found no room is noted only later.
#[test]
fn first_heartbeats_of_unknown_groups_are_noted_up_to_unknown_heartbeats_max() {
    use ringraft::shard::UNKNOWN_HEARTBEATS_MAX;
    let (_t, cfg, lock, store) = fresh_store();
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let hb = creating_heartbeat;
        // `first` is the last group noted: its note is fresh when the
        // flood ends, however long the flood took.
        let first = 1000u64;
        let over = first + UNKNOWN_HEARTBEATS_MAX as u64;
        for g in (first + 1..over).chain([first]).chain(over..over + 10) {
            shard.on_peer_message(g, 2, hb());
        }
        assert_eq!(shard.unknown_heartbeats_noted(), UNKNOWN_HEARTBEATS_MAX);
        shard.create_from_messages().await.unwrap();
        assert_eq!(groups(&shard), vec![0, 1], "no heartbeat creates at once");
        let sc = cfg.shard(0, &store);
        let election = Duration::from_millis(u64::from(sc.raft.election_ticks) * sc.tick_ms);
        glommio::timer::sleep(election).await;
        shard.on_peer_message(first, 2, hb());
        shard.on_peer_message(over + 5, 2, hb());
        shard.create_from_messages().await.unwrap();
        assert_eq!(
            groups(&shard),
            vec![0, 1, first],
            "noted first, created first"
        );
        assert!(shard.unknown_heartbeats_noted() <= UNKNOWN_HEARTBEATS_MAX);
    });
    drop(lock);
}

/// Destroying one group's replica removes its snapshot files only: a
/// temporary file of another group is a snapshot write in progress (it
/// used to be swept too, and that write's rename then failed and stopped
/// the node).
#[test]
fn removing_a_groups_snapshot_files_spares_another_groups_write_in_progress() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    run(async move {
        let snap = snapshot_of_voter_1(b"state");
        snapfile::write(&dir, 1, &snap, crc32fast::hash(&snap.data))
            .await
            .unwrap();
        let in_progress = dir.join(format!("{}.tmp", snapfile::file_name(2, 9)));
        std::fs::write(&in_progress, b"half written").unwrap();
        assert_eq!(snapfile::remove_group(&dir, 1).await.unwrap(), 1);
        assert!(snapfile::list(&dir).unwrap().is_empty());
        assert!(
            in_progress.exists(),
            "another group's write in progress is left alone"
        );
    });
}

/// `snapfile::write` removes no other file: the replica's previous file
/// is removed by the shard only once the replica moved to the new one. (It
/// used to unlink the previous file itself, so a snapshot taken here that
/// a leader's install overtook left the group with no file on disk until
/// the install's was written, while its WAL was released through the
/// removed one.)
#[test]
fn writing_a_snapshot_file_leaves_the_previous_one_in_place() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    run(async move {
        let mut snap = snapshot_of_voter_1(b"state");
        let crc = crc32fast::hash(&snap.data);
        snapfile::write(&dir, 1, &snap, crc).await.unwrap();
        snap.meta.index += 4;
        snapfile::write(&dir, 1, &snap, crc).await.unwrap();
        let files = snapfile::list(&dir).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
    });
}

/// A destroyed replica's snapshot files are retired (renamed) in the
/// turn and unlinked in the background (issue #21: unlinking a 400 MiB
/// file held the turn for about 200 ms): a new replica of the same group
/// writing under the same name meanwhile keeps its file, another group's
/// write in progress is untouched, and retired files a crash left are
/// removed at the next start.
#[test]
fn a_destroyed_groups_snapshot_files_are_retired_and_a_new_write_under_their_name_survives() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    run(async move {
        let snap = snapshot_of_voter_1(b"state");
        let crc = crc32fast::hash(&snap.data);
        snapfile::write(&dir, 1, &snap, crc).await.unwrap();
        let in_progress = dir.join(format!("{}.tmp", snapfile::file_name(2, 9)));
        std::fs::write(&in_progress, b"half written").unwrap();
        let retired = snapfile::retire_group(&dir, 1).await.unwrap();
        assert_eq!(retired.len(), 1);
        assert!(snapfile::list(&dir).unwrap().is_empty());
        // The group's new replica writes the same name before the unlink.
        snapfile::write(&dir, 1, &snap, crc).await.unwrap();
        snapfile::remove_files(retired.clone());
        assert!(!retired[0].exists());
        assert_eq!(snapfile::list(&dir).unwrap().len(), 1, "the new file stays");
        assert!(in_progress.exists());
        // A crash between the rename and the unlink: gone at the next start.
        let again = snapfile::retire_group(&dir, 1).await.unwrap();
        assert!(again[0].exists());
        std::fs::remove_file(&in_progress).unwrap();
        assert!(snapfile::load_latest(&dir).await.unwrap().is_empty());
        assert!(!again[0].exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    });
}

/// `Removed`, a member's answer to a vote request from a node outside its
/// membership (`shard/replicas.rs`): a replica is destroyed (and
/// tombstoned) only when the notice is addressed to it and names a
/// membership newer than the one it knows; a replica that knows no
/// membership yet keeps waiting for its snapshot. A vote request or a
/// membership check from a non-member is answered (counted) and still
/// stepped.
#[test]
fn a_removed_notice_destroys_only_a_replica_whose_membership_is_older() {
    use ringraft::raft::{Body, Message};
    let (_t, cfg, lock, store) = fresh_store();
    run(async move {
        let mut shard = shard_with_group(&cfg, &store, 100).await;
        shard.create_replica(desc(200, 1, &[])).await.unwrap();
        let removed = |to: u64, conf_index: u64| Message {
            from: 2,
            to,
            term: 9,
            body: Body::Removed { conf_index },
        };
        // Its membership is in force from index 0 (the initial one).
        for (g, m) in [
            (100, removed(1, 0)), // not newer than what it knows
            (100, removed(7, 5)), // another replica id
            (200, removed(1, 5)), // knows no membership yet
            (300, removed(1, 5)), // not hosted here
        ] {
            let what = format!("group {g}: {m:?}");
            shard.on_peer_message(g, 2, m);
            shard.destroy_removed().await.unwrap();
            assert_eq!(groups(&shard), vec![0, 1, 100, 200], "destroyed by {what}");
        }
        assert_eq!(shard.stats().replicas_removed_by_notice, 0);
        // A non-member's vote request is answered Removed (and stepped:
        // refused by the core, nothing else changes).
        shard.on_peer_message(
            100,
            9,
            Message {
                from: 9,
                to: 1,
                term: 1,
                body: Body::PreVote {
                    last_index: 50,
                    last_term: 1,
                },
            },
        );
        assert_eq!(shard.stats().removed_notices_sent, 1);
        // So is a non-member's membership check (a learner removed before
        // it learned so); a member's is not answered.
        let check = |from: u64| Message {
            from,
            to: 1,
            term: 1,
            body: Body::MemberCheck { conf_index: 0 },
        };
        shard.on_peer_message(100, 9, check(9));
        assert_eq!(shard.stats().removed_notices_sent, 2);
        shard.on_peer_message(100, 2, check(2));
        assert_eq!(shard.stats().removed_notices_sent, 2);
        // Twice, as the transport may deliver it again: destroyed once.
        shard.on_peer_message(100, 2, removed(1, 5));
        shard.on_peer_message(100, 2, removed(1, 5));
        shard.destroy_removed().await.unwrap();
        assert_eq!(groups(&shard), vec![0, 1, 200]);
        assert_eq!(shard.stats().replicas_removed_by_notice, 1);
        let e = shard
            .create_replica(desc(100, 1, &[1, 2, 3]))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("never comes back"),
            "tombstoned: {e}"
        );
    });
    drop(lock);
}

/// `REMOVED_LEADER_GRACE_ELECTIONS`: a replica removed while it led is
/// kept once it stops leading until it learns its successor, and no longer
/// than the grace. Here replica 1 comes to lead group 100 (replica 2 leads,
/// hands over with TimeoutNow, and votes for it), is told it was removed
/// (kept: it leads), is deposed by a transfer's vote request of a later
/// term (no leader known), and is kept until the grace has run from the
/// first check that saw it deposed, then destroyed. The clock is passed
/// in (`destroy_removed_at`): nothing waits for the grace.
#[test]
fn a_removed_leader_that_never_learns_its_successor_is_destroyed_after_the_grace() {
    use ringraft::raft::{Body, Message, Role};
    use ringraft::shard::REMOVED_LEADER_GRACE_ELECTIONS;
    let (_t, cfg, lock, store) = fresh_store();
    let sc = cfg.shard(0, &store);
    run(async move {
        let mut shard = shard_with_group(&cfg, &store, 100).await;
        let msg = |from: u64, term: u64, body| Message {
            from,
            to: 1,
            term,
            body,
        };
        let info = |shard: &Shard| shard.replicas().into_iter().find(|r| r.group == 100);
        // Readies out and durable, until `done` holds (10 s at most: the
        // WAL's writes are real I/O).
        async fn drive(shard: &mut Shard, done: impl Fn(&Shard) -> bool) {
            for _ in 0..10_000 {
                shard.process_readies().await.unwrap();
                shard.complete_durable();
                if done(shard) {
                    return;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            panic!("the shard did not get there");
        }
        shard.on_peer_message(
            100,
            2,
            msg(
                2,
                1,
                Body::Heartbeat {
                    commit: 0,
                    round: 1,
                },
            ),
        );
        drive(&mut shard, |s| info(s).is_some_and(|r| r.leader == 2)).await;
        shard.on_peer_message(100, 2, msg(2, 1, Body::TimeoutNow));
        drive(&mut shard, |s| {
            info(s).is_some_and(|r| r.role == Role::Candidate)
        })
        .await;
        shard.on_peer_message(100, 2, msg(2, 2, Body::VoteResp { reject: false }));
        drive(&mut shard, |s| {
            info(s).is_some_and(|r| r.role == Role::Leader)
        })
        .await;
        // Removed while leading: kept.
        shard.on_peer_message(100, 2, msg(2, 2, Body::Removed { conf_index: 5 }));
        let t0 = std::time::Instant::now();
        shard.destroy_removed_at(t0).await.unwrap();
        assert!(info(&shard).is_some(), "destroyed while it led");
        // Deposed, no successor known.
        let vote = Body::Vote {
            last_index: 10,
            last_term: 2,
            transfer: true,
        };
        shard.on_peer_message(100, 3, msg(3, 3, vote));
        drive(&mut shard, |s| {
            info(s).is_some_and(|r| r.role == Role::Follower && r.leader == 0)
        })
        .await;
        let grace = shard.removed_leader_grace();
        assert_eq!(
            grace,
            Duration::from_millis(
                u64::from(REMOVED_LEADER_GRACE_ELECTIONS)
                    * 2
                    * u64::from(sc.raft.election_ticks)
                    * sc.tick_ms
            )
        );
        let t1 = t0 + Duration::from_secs(1);
        shard.destroy_removed_at(t1).await.unwrap();
        shard
            .destroy_removed_at(t1 + grace - Duration::from_millis(1))
            .await
            .unwrap();
        assert!(info(&shard).is_some(), "destroyed before the grace ran out");
        shard.destroy_removed_at(t1 + grace).await.unwrap();
        assert!(info(&shard).is_none(), "kept past the grace");
        assert_eq!(groups(&shard), vec![0, 1]);
    });
    drop(lock);
}

/// Replica ids are the group's own and never reused (`raft::conf`): node
/// 1's replica 1 of group 100 was removed and node 1 added again as
/// replica 4. Messages for replica 1 no longer reach replica 4 and the
/// other way round; a message from a member that came from another node
/// than its own is dropped; the leader's seeding snapshot for replica 4
/// destroys replica 1 (a node holds one replica of a group), and its
/// resend creates replica 4.
#[test]
fn a_newer_replica_placed_on_this_node_replaces_the_old_one_and_ids_never_mix() {
    use ringraft::raft::{Body, ConfChange, ConfChangeOp, ConfState, Message};
    let (_t, cfg, lock, store) = fresh_store();
    run(async move {
        let mut shard = shard_with_group(&cfg, &store, 100).await;
        let msg = |from: u64, to: u64, body| Message {
            from,
            to,
            term: 1,
            body,
        };
        let heartbeat = || Body::Heartbeat {
            commit: 0,
            round: 1,
        };
        // Member 3 lives on node 3: the same message from node 2 is dropped.
        shard.on_peer_message(100, 2, msg(3, 1, heartbeat()));
        assert_eq!(shard.stats().msgs_misplaced, 1);
        let info = |shard: &Shard| {
            let r = shard.replicas().into_iter().find(|r| r.group == 100);
            r.map(|r| (r.replica, r.term))
        };
        assert_eq!(info(&shard), Some((1, 0)), "not stepped");
        shard.on_peer_message(100, 3, msg(3, 1, heartbeat()));
        assert_eq!(info(&shard), Some((1, 1)), "stepped from its own node");
        // For a newer replica, a message that cannot create it (an append):
        // dropped, counted.
        let append = Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: Vec::new(),
            commit: 0,
        };
        shard.on_peer_message(100, 2, msg(2, 4, append));
        shard.destroy_removed().await.unwrap();
        assert_eq!(shard.stats().msgs_other_replica, 1);
        assert_eq!(info(&shard).map(|i| i.0), Some(1));
        // The membership: 2, 3, and replica 4 on node 1.
        let conf = ConfState::new(&[2, 3], &[])
            .apply(&ConfChange {
                ops: vec![ConfChangeOp::AddLearner {
                    replica: 4,
                    node: 1,
                }],
            })
            .unwrap();
        let data = Bytes::from_static(b"state");
        let seed = || {
            msg(
                2,
                4,
                Body::Snapshot {
                    index: 5,
                    term: 2,
                    conf: conf.clone(),
                    offset: 0,
                    total: data.len() as u64,
                    crc: crc32fast::hash(&data),
                    chunk: data.clone(),
                },
            )
        };
        shard.on_peer_message(100, 2, seed());
        shard.destroy_removed().await.unwrap();
        assert_eq!(info(&shard), None, "replica 1 destroyed");
        assert_eq!(shard.stats().replicas_removed_by_notice, 1);
        shard.on_peer_message(100, 2, seed());
        shard.create_from_messages().await.unwrap();
        assert_eq!(info(&shard).map(|i| i.0), Some(4), "replica 4 created");
        // A late message for replica 1 is not replica 4's.
        let before = shard.stats().msgs_other_replica;
        shard.on_peer_message(100, 3, msg(3, 1, heartbeat()));
        assert_eq!(shard.stats().msgs_other_replica, before + 1);
        // Replica 1 never comes back on this node.
        let e = shard
            .create_replica(desc(100, 1, &[1, 2, 3]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already has replica 4"), "{e}");
    });
    drop(lock);
}

/// A snapshot from the leader is written in the background: the Ready that
/// carries it is parked (the turn goes on with the other groups), the
/// group's later Readies wait behind it, and once the file is written the
/// state machine restarts from it and the rest is carried out; a restart
/// finds the file. (The install used to be awaited inside the turn's loop
/// over Readies, stalling every group of the shard behind one file.)
#[test]
fn a_snapshot_install_is_parked_off_the_turn_and_later_readies_wait_for_it() {
    use ringraft::kv::{Command, Kv, KvLimits, WriteOp};
    use ringraft::raft::{Body, Entry, EntryKind, Message};
    let (_t, cfg, lock, store) = fresh_store();
    let put = |seq: u64, key: &'static [u8]| Command {
        client: 7,
        seq,
        ack: seq - 1,
        op: WriteOp::Put {
            key: Bytes::from_static(key),
            value: Bytes::from_static(b"v"),
        },
    };
    // The leader's state machine at index 5: one write at 5, holding the
    // whole keyspace (as a one-group cluster's range does).
    let mut kv = Kv::new(KvLimits::default());
    kv.set_bounds(ringraft::kv::KeyBounds {
        known: true,
        ..Default::default()
    });
    for i in 1..5 {
        kv.skip(i);
    }
    kv.apply(5, &put(1, b"at-5")).unwrap();
    let data = kv.snapshot();
    let from_leader = |body| Message {
        from: 2,
        to: 1,
        term: 3,
        body,
    };
    let snap = from_leader(Body::Snapshot {
        index: 5,
        term: 2,
        conf: ConfState::new(&[2], &[1]),
        offset: 0,
        total: data.len() as u64,
        crc: crc32fast::hash(&data),
        chunk: data.clone(),
    });
    let entry = |index: u64, seq: u64, key: &'static [u8]| Entry {
        term: 3,
        index,
        kind: EntryKind::Normal,
        data: put(seq, key).encode(),
    };
    let append = from_leader(Body::Append {
        prev_index: 5,
        prev_term: 2,
        entries: vec![entry(6, 2, b"at-6"), entry(7, 3, b"at-7")],
        commit: 7,
    });
    let applied = |shard: &Shard| {
        let r = shard.replicas().into_iter().find(|r| r.group == 300);
        r.map(|r| r.applied)
    };
    let sc = cfg.shard(0, &store);
    let snap_dir = sc.dir.join("snapshots");
    run(async move {
        let mut shard = Shard::open(sc.clone(), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        shard.on_peer_message(300, 2, snap);
        shard.create_from_messages().await.unwrap();
        shard.process_readies().await.unwrap();
        assert_eq!(applied(&shard), Some(0), "restored inside the turn");
        // Entries after the snapshot arrive: their Ready waits.
        shard.on_peer_message(300, 2, append);
        let records = shard.stats().wal_records;
        shard.process_readies().await.unwrap();
        assert_eq!(
            applied(&shard),
            Some(0),
            "a later Ready overtook the install"
        );
        assert_eq!(
            shard.stats().wal_records,
            records,
            "entries after the snapshot were written before its file"
        );
        // The background write finishes: poll for it (the executor reaps
        // its I/O while this task waits on a timer), for 10 s at most.
        for _ in 0..10_000 {
            shard.finish_installs().await.unwrap();
            if applied(&shard) != Some(0) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(applied(&shard), Some(5), "installed from the snapshot");
        assert!(snap_dir.join(snapfile::file_name(300, 5)).exists());
        // Then the entries after it: written, durable, applied.
        for _ in 0..10_000 {
            shard.process_readies().await.unwrap();
            shard.complete_durable();
            if applied(&shard) == Some(7) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(applied(&shard), Some(7), "the entries after it applied");
    });
    // A restart starts from the file (and what the WAL holds after it).
    run(async move {
        let shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let r = shard.replicas().into_iter().find(|r| r.group == 300);
        assert!(
            r.is_some_and(|r| r.applied >= 5),
            "the install was not durable"
        );
    });
    drop(lock);
}

/// A turn looks only at the replicas given work (the work set): with a
/// hundred replicas hosted, a message to one of them makes the next turn
/// look at that one, not at every replica (`ready_checks`). Every shard in
/// the other tests also checks, in debug builds, that no replica with a
/// Ready is left outside the set.
#[test]
fn a_turn_looks_only_at_the_replicas_given_work() {
    use ringraft::raft::{Body, Message};
    let (_t, cfg, lock, store) = fresh_store();
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        for g in 100..200 {
            shard.create_replica(desc(g, 1, &[1, 2, 3])).await.unwrap();
        }
        // The start and the creations gave every replica work once.
        shard.process_readies().await.unwrap();
        shard.complete_durable();
        shard.process_readies().await.unwrap();
        let before = shard.stats().ready_checks;
        let heartbeat = Message {
            from: 2,
            to: 1,
            term: 1,
            body: Body::Heartbeat {
                commit: 0,
                round: 1,
            },
        };
        shard.on_peer_message(150, 2, heartbeat);
        shard.process_readies().await.unwrap();
        let looked_at = shard.stats().ready_checks - before;
        assert!(
            (1..=3).contains(&looked_at),
            "one message made the turn look at {looked_at} of 102 replicas"
        );
        let r = shard.replicas().into_iter().find(|r| r.group == 150);
        assert_eq!(r.map(|r| r.term), Some(1), "the message was stepped");
    });
    drop(lock);
}

/// The unpinning pass (`Shard::unpin_wal`) with more idle groups than
/// `wal-pin-records-max`: each idle group's small log (its leader's no-op)
/// is written again whole with its hard state in one batch
/// (`WAL_REWRITE_LOG_BYTES_MAX`), a group whose log is larger snapshots
/// instead (at the second pass: at the first it was still being written,
/// `--wal-pin-bytes-max`), and the next pass rewrites nothing: the bound is at least
/// `WAL_RECORDS_KEPT_PER_GROUP` records per group hosted. (Below it, each
/// pass's own rewrites put its first ones past the bound again: 100,000
/// idle groups were walked and partly rewritten every second.)
#[test]
fn idle_groups_are_rewritten_once_however_many_they_are() {
    use ringraft::shard::{WAL_RECORDS_KEPT_PER_GROUP, WAL_REWRITE_LOG_BYTES_MAX};
    let (_t, cfg, lock, store) = fresh_store_with(|s| NodeSettings {
        wal_pin_records_max: Some(10),
        ..s
    });
    let idle = 1000..1050u64;
    let busy = 2000u64;
    let busy_entries = 200u64;
    assert!(busy_entries * 200 > WAL_REWRITE_LOG_BYTES_MAX);
    let put = |seq: u64| client_put(seq, 200);
    let sc = cfg.shard(0, &store);
    let idle_ids: Vec<u64> = idle.clone().collect();
    run(async move {
        let mut shard = Shard::open(sc, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        for g in idle.clone() {
            shard.create_replica(desc(g, 1, &[1, 2, 3])).await.unwrap();
            shard.on_peer_message(g, 2, leader_entry(1, Bytes::new()));
        }
        let idle: Vec<u64> = idle.collect();
        settle(&mut shard, &idle, 1).await;
        // The busy group: one record per entry, 40 KB of log.
        shard
            .create_replica(desc(busy, 1, &[1, 2, 3]))
            .await
            .unwrap();
        for i in 1..=busy_entries {
            shard.on_peer_message(busy, 2, leader_entry(i, put(i)));
            settle(&mut shard, &[busy], i).await;
        }
        let before = shard.stats();
        shard.unpin_wal().await.unwrap();
        let first = shard.stats();
        assert_eq!(
            first.log_rewrites - before.log_rewrites,
            idle.len() as u64,
            "every idle group's log written again"
        );
        assert_eq!(
            first.hard_state_rewrite_syncs - before.hard_state_rewrite_syncs,
            1
        );
        assert_eq!(
            (
                first.snapshots_taken - before.snapshots_taken,
                first.wal_pins_left - before.wal_pins_left
            ),
            (0, 1),
            "the busy group, written since it was made, is left to its own compaction"
        );
        settle(&mut shard, &[busy], busy_entries).await;
        shard.unpin_wal().await.unwrap();
        let second = shard.stats();
        assert_eq!(
            second.hard_state_rewrites, first.hard_state_rewrites,
            "the second pass rewrote again ({} groups hosted, {WAL_RECORDS_KEPT_PER_GROUP} records each kept)",
            idle.len() + 1
        );
        assert_eq!(
            second.wal_unpin_snapshots - first.wal_unpin_snapshots,
            1,
            "the busy group, not written since the last pass, snapshots"
        );
    });
    // A restart replays the rewritten records: every entry is there and
    // applies again.
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        settle(&mut shard, &idle_ids, 1).await;
        settle(&mut shard, &[busy], busy_entries).await;
    });
    drop(lock);
}

/// `--wal-pin-bytes-max`: a group still being written whose log is too
/// large to write again is left to its own compaction while the WAL it
/// keeps (whole segments, from the one holding its oldest needed record)
/// is at most the bound, and snapshotted by the pass once it is more. A
/// 400 MiB range under a trickle of writes was written out whole every
/// 7-15 s to release a few segments (issue #21). With the bound at 0 it is
/// snapshotted at the first pass, as before. A pass that only left it
/// does not walk the groups again until the head moved on
/// (`UnpinRest`).
#[test]
fn a_group_still_being_written_is_left_to_its_own_compaction_up_to_wal_pin_bytes_max() {
    let segment = (2u64 << 20) + 4096;
    let bound = 4 * segment;
    let value = 15_000usize;
    let per_segment = segment / value as u64;
    for pinned_max in [bound, 0] {
        let (_t, cfg, lock, store) = fresh_store_with(|s| NodeSettings {
            value_bytes_max: Some(16 << 10),
            wal_segment_bytes: Some(segment),
            wal_pin_records_max: Some(10),
            wal_pin_bytes_max: Some(pinned_max),
            ..s
        });
        let busy = 2000u64;
        let put = |seq: u64| client_put(seq, value);
        run(async move {
            let mut shard = shard_with_group(&cfg, &store, busy).await;
            let mut last = 0u64;
            let mut write = async |shard: &mut Shard, n: u64| {
                for _ in 0..n {
                    last += 1;
                    shard.on_peer_message(busy, 2, leader_entry(last, put(last)));
                    settle(shard, &[busy], last).await;
                }
                last
            };
            // One segment and a half of its entries: the WAL it keeps is
            // at most three segments (the one its first entry is in, the
            // next, the head's).
            let start = shard.stats();
            write(&mut shard, per_segment * 3 / 2).await;
            shard.unpin_wal().await.unwrap();
            let first = shard.stats();
            if pinned_max == 0 {
                assert_eq!(
                    first.wal_unpin_snapshots - start.wal_unpin_snapshots,
                    1,
                    "with --wal-pin-bytes-max 0 the pass snapshots the group at once"
                );
                return;
            }
            assert_eq!(
                (
                    first.wal_unpin_snapshots - start.wal_unpin_snapshots,
                    first.wal_pins_left - start.wal_pins_left
                ),
                (0, 1),
                "left to its own compaction while it keeps 3 segments of {bound} B"
            );
            // Nothing written since: the pass rests (no walk).
            shard.unpin_wal().await.unwrap();
            assert_eq!(shard.stats().wal_unpin_walks, first.wal_unpin_walks);
            // Written on until it keeps more than the bound: snapshotted
            // then, once.
            let mut snapshotted_at = None;
            for round in 0..(per_segment * 5 / 20) {
                let w = write(&mut shard, 20).await;
                let before = shard.stats();
                shard.unpin_wal().await.unwrap();
                let after = shard.stats();
                assert_eq!(
                    after.wal_unpin_walks,
                    before.wal_unpin_walks + 1,
                    "round {round}"
                );
                if after.wal_unpin_snapshots > before.wal_unpin_snapshots {
                    assert!(snapshotted_at.is_none(), "snapshotted twice");
                    snapshotted_at = Some(w);
                    // Its file written, the log compacted.
                    assert!(snapshot_stored(&mut shard, busy).await);
                }
            }
            let at = snapshotted_at.expect("never snapshotted past the bound");
            assert!(
                at > per_segment * 2 && at <= per_segment * 4 + 20,
                "snapshotted after {at} entries of {value} B: a bound of 4 segments of {per_segment}"
            );
        });
        drop(lock);
    }
}

/// `--wal-pin-bytes-max` is never more than the filesystem's free
/// space, less room for the group's state and a segment: on a disk with
/// 16 MiB left, a group still being written is snapshotted once the WAL it
/// keeps passes that (here after a few MiB), not at the default 512 MiB,
/// which would fill the disk first; and its snapshot is written without
/// filling it.
#[test]
fn a_group_still_being_written_keeps_no_more_wal_than_the_disk_has_free() {
    use ringraft::local_cluster::SmallFs;
    let fs = match SmallFs::new(64) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a small filesystem here: {e}");
            return;
        }
    };
    let dir = fs.path().join("n1");
    let segment = (2u64 << 20) + 4096;
    let value = 15_000usize;
    let cfg = NodeSettings {
        value_bytes_max: Some(16 << 10),
        wal_segment_bytes: Some(segment),
        wal_pin_records_max: Some(10),
        ..node_settings(&dir, free_port(), free_port())
    }
    .validate()
    .expect("valid settings");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(&dir, &lock, InitialRanges::default());
    assert!(
        cfg.shard(0, &store).wal_pin_bytes_max > 64 << 20,
        "the default bound is above the disk"
    );
    if let Err(e) = fs.fill(16 << 20) {
        eprintln!("SKIPPED: cannot fill the filesystem: {e}");
        return;
    }
    let busy = 2000u64;
    run(async move {
        let mut shard = shard_with_group(&cfg, &store, busy).await;
        let start = shard.stats();
        let mut last = 0u64;
        while shard.stats().wal_unpin_snapshots == start.wal_unpin_snapshots {
            assert!(
                last * (value as u64) < 10 << 20,
                "{last} entries of {value} B written, not snapshotted with {} B free",
                fs.free_bytes()
            );
            for _ in 0..20 {
                last += 1;
                shard.on_peer_message(busy, 2, leader_entry(last, client_put(last, value)));
                settle(&mut shard, &[busy], last).await;
            }
            shard.unpin_wal().await.unwrap();
        }
        assert!(
            last * (value as u64) > 2 << 20,
            "snapshotted after {last} entries: not left to its own compaction at first"
        );
        // The snapshot that ends it found room: its file written, the core
        // compacted to it, the disk never full.
        assert!(
            snapshot_stored(&mut shard, busy).await,
            "the snapshot was never written ({} B free)",
            fs.free_bytes()
        );
        assert_eq!(shard.stats().disk_full_events, 0);
    });
    drop(lock);
}

/// `WAL_REWRITE_PASS_BYTES_MAX` and `WAL_FLOOR_SEGMENTS_MAX`: 1,500
/// groups of one 15 KB write each fill ~11 segments of 2 MiB. The floor of
/// `WAL_RECORDS_KEPT_PER_GROUP` records per group would keep them all; it
/// keeps at most `WAL_FLOOR_SEGMENTS_MAX` segments more than the one
/// before the head's, so the groups in the older ones pin the WAL and a
/// pass writes their logs again, but no more than
/// `WAL_REWRITE_PASS_BYTES_MAX` of them: the rest wait for the next pass.
#[test]
fn a_pass_rewrites_at_most_wal_rewrite_pass_bytes_max_of_logs() {
    use ringraft::shard::{WAL_FLOOR_SEGMENTS_MAX, WAL_REWRITE_PASS_BYTES_MAX};
    let (_t, cfg, lock, store) = fresh_store_with(|s| NodeSettings {
        value_bytes_max: Some(16 << 10),
        wal_segment_bytes: Some((2 << 20) + 4096),
        ..s
    });
    let groups: Vec<u64> = (1000..2500).collect();
    let value = 15_000usize;
    assert!(groups.len() * value > (WAL_FLOOR_SEGMENTS_MAX as usize + 6) * (2 << 20));
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        for &g in &groups {
            create_with_value(&mut shard, g, value).await;
            shard.process_readies().await.unwrap();
        }
        settle(&mut shard, &groups, 1).await;
        let before = shard.stats();
        shard.unpin_wal().await.unwrap();
        let first = shard.stats();
        let rewritten = first.log_rewrites - before.log_rewrites;
        let most = WAL_REWRITE_PASS_BYTES_MAX / value as u64;
        assert!(
            rewritten > most / 2 && rewritten <= most,
            "{rewritten} logs of {value} B rewritten in one pass (at most {most})"
        );
        shard.unpin_wal().await.unwrap();
        let second = shard.stats();
        assert!(
            second.log_rewrites > first.log_rewrites,
            "the groups left over were not taken at the next pass"
        );
    });
    drop(lock);
}

/// Runs turns (`begin_turn`, `complete_durable`, `process_readies`) until
/// one applies entry 1 of some group of `groups`: the shard's stats
/// before and after that turn, and how many of `groups` had applied it
/// then (panics after 10,000 turns).
async fn turn_that_applies(
    shard: &mut Shard,
    groups: std::ops::Range<u64>,
) -> (
    ringraft::shard::ShardStats,
    ringraft::shard::ShardStats,
    u64,
) {
    let applied = |shard: &Shard| {
        shard
            .replicas()
            .iter()
            .filter(|r| groups.contains(&r.group) && r.applied == 1)
            .count() as u64
    };
    for _ in 0..10_000 {
        shard.begin_turn();
        shard.complete_durable();
        let before = shard.stats();
        shard.process_readies().await.unwrap();
        let after = shard.stats();
        if applied(shard) > 0 {
            return (before, after, applied(shard));
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    panic!("no group of {groups:?} applied entry 1");
}

/// Creates replica 1 of group `g` (voters 1-3) and hands it leader 2's
/// committed entry 1: a put of `value` bytes under key `k`.
async fn create_with_value(shard: &mut Shard, g: u64, value: usize) {
    use ringraft::kv::{Command, WriteOp};
    shard.create_replica(desc(g, 1, &[1, 2, 3])).await.unwrap();
    let put = Command {
        client: 7,
        seq: 1,
        ack: 0,
        op: WriteOp::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![b'v'; value]),
        },
    };
    shard.on_peer_message(g, 2, leader_entry(1, put.encode()));
}

/// Leader 2's entry `index` (term 1; a no-op if `data` is empty) to
/// replica 1, committed with it.
fn leader_entry(index: u64, data: Bytes) -> ringraft::raft::Message {
    use ringraft::raft::{Body, Entry, EntryKind, Message};
    Message {
        from: 2,
        to: 1,
        term: 1,
        body: Body::Append {
            prev_index: index - 1,
            prev_term: u64::from(index > 1),
            entries: vec![Entry {
                term: 1,
                index,
                kind: if data.is_empty() {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                data,
            }],
            commit: index,
        },
    }
}

/// Client 7's write `seq` (its ack `seq - 1`): key `k{seq}`, `value`
/// bytes; an entry's data.
fn client_put(seq: u64, value: usize) -> Bytes {
    use ringraft::kv::{Command, WriteOp};
    Command {
        client: 7,
        seq,
        ack: seq - 1,
        op: WriteOp::Put {
            key: Bytes::from(format!("k{seq}")),
            value: Bytes::from(vec![b'v'; value]),
        },
    }
    .encode()
}

/// Turns (snapshot files finished included) until the Raft core of
/// `group` holds a snapshot, its file durable: false after 10,000.
async fn snapshot_stored(shard: &mut Shard, group: u64) -> bool {
    for _ in 0..10_000 {
        shard.finish_snapshots().await.unwrap();
        shard.process_readies().await.unwrap();
        shard.complete_durable();
        if shard
            .replicas()
            .iter()
            .any(|r| r.group == group && r.snapshot > 0)
        {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Turns until every group named has applied `index` (panics after
/// 10,000).
async fn settle(shard: &mut Shard, groups: &[u64], index: u64) {
    for _ in 0..10_000 {
        shard.process_readies().await.unwrap();
        shard.complete_durable();
        let done = shard
            .replicas()
            .iter()
            .filter(|r| groups.contains(&r.group) && r.applied >= index)
            .count();
        if done == groups.len() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    panic!("groups {groups:?} did not apply {index}");
}

/// `SNAPSHOT_WRITES_MAX`: a shard writes at most that many snapshot files
/// at once; a group whose snapshot comes due meanwhile is put off (counted
/// in `snapshots_deferred`) and taken at a later apply or unpinning pass.
/// Here `SNAPSHOT_WRITES_MAX + 4` groups, snapshotting at every entry,
/// apply their first entry in the same turn: the writes cannot finish
/// before the turn yields, so exactly `SNAPSHOT_WRITES_MAX` start.
/// (100,000 groups starting queued ten thousand writes on io_uring's
/// workers, and turns took seconds.)
#[test]
fn at_most_snapshot_writes_max_snapshot_files_are_written_at_once() {
    use ringraft::shard::SNAPSHOT_WRITES_MAX;
    let (_t, cfg, lock, store) = fresh_store_with(|s| NodeSettings {
        snapshot_entries: Some(1),
        ..s
    });
    let n = SNAPSHOT_WRITES_MAX as u64 + 4;
    let groups = 1000..1000 + n;
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        for g in groups.clone() {
            shard.create_replica(desc(g, 1, &[1, 2, 3])).await.unwrap();
            // Leader 2 replicates its no-op, committed.
            shard.on_peer_message(g, 2, leader_entry(1, Bytes::new()));
        }
        // Written in one turn, durable together, applied in one later turn.
        shard.process_readies().await.unwrap();
        let (before, after, applied) = turn_that_applies(&mut shard, groups).await;
        assert_eq!(applied, n, "every group applied in that turn");
        assert_eq!(
            after.snapshots_taken - before.snapshots_taken,
            SNAPSHOT_WRITES_MAX as u64
        );
        assert_eq!(after.snapshots_deferred - before.snapshots_deferred, 4);
    });
    drop(lock);
}

/// `SNAPSHOT_TAKE_BYTES_PER_TURN`: one turn copies at most that much
/// replica state into snapshots of its own (the turn that reaches it takes
/// no more; the rest are put off, counted in `snapshots_deferred`). Here 6
/// groups holding 8 MiB each, snapshotting at every entry, apply in the
/// same turn: 4 snapshots reach 32 MiB and 2 are put off. Before the
/// budget one unpinning pass took 16 such snapshots in a turn and held it
/// for seconds (`ringraft-rebalance --data-mib 1024`).
#[test]
fn a_turn_takes_at_most_snapshot_take_bytes_per_turn_of_snapshots() {
    use ringraft::shard::SNAPSHOT_TAKE_BYTES_PER_TURN;
    let value = 8usize << 20;
    let (_t, cfg, lock, store) = fresh_store_with(|s| NodeSettings {
        snapshot_entries: Some(1),
        value_bytes_max: Some(value + 1024),
        ..s
    });
    let n = 6u64;
    let fit = SNAPSHOT_TAKE_BYTES_PER_TURN.div_ceil(value as u64);
    assert!(fit < n, "some snapshots must be put off");
    let groups = 1000..1000 + n;
    run(async move {
        let mut shard = Shard::open(cfg.shard(0, &store), Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        for g in groups.clone() {
            create_with_value(&mut shard, g, value).await;
        }
        // Written in one turn; once all of it is durable, applied in one
        // later turn (48 MiB is more than one WAL write).
        shard.process_readies().await.unwrap();
        for _ in 0..10_000 {
            if shard.wal_records_not_durable() == 0 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(shard.wal_records_not_durable(), 0);
        let (before, after, applied) = turn_that_applies(&mut shard, groups).await;
        assert_eq!(applied, n, "every group applied in that turn");
        assert_eq!(after.snapshots_taken - before.snapshots_taken, fit);
        assert_eq!(
            after.snapshots_deferred - before.snapshots_deferred,
            n - fit
        );
    });
    drop(lock);
}

/// A data directory written when keys were placed in groups by a hash (its
/// founding replicas have no range descriptor) is refused at open with a
/// message that says so, in a cluster of more than one group: its keys
/// would be looked for in other groups.
#[test]
fn a_data_dir_written_under_hash_placement_is_refused_at_open() {
    // With one group, a replica without a descriptor holds every key, as
    // under either placement: accepted. Reopened as one of 2 groups, it
    // reads as a hash-placed data dir (what that code wrote for a
    // founding replica: no descriptor).
    let (t, one, lock, store) = fresh_store_with(|s| NodeSettings {
        groups: Some(1),
        ..s
    });
    let (peer, client) = (one.listen_peers.port(), one.listen_clients.port());
    let two = node_settings(&t.path().join("n1"), peer, client)
        .validate()
        .unwrap();
    let (sc1, sc2) = (one.shard(0, &store), two.shard(0, &store));
    run(async move {
        let mut shard = Shard::open(sc1, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let legacy = ReplicaDesc {
            descriptor: Bytes::new(),
            ..desc(100, 1, &[1])
        };
        shard.create_replica(legacy.clone()).await.unwrap();
        drop(shard);
        match Shard::open(sc2, Rc::new(Cell::new(false)), None).await {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("placed keys in groups by hash"), "{e}");
                assert!(e.contains("Start a new cluster"), "{e}");
            }
            Ok(_) => panic!("a hash-placed data dir was opened"),
        }
    });
    drop(lock);
}

/// The cluster's groups are those its store was created with: a restart
/// with a larger `--groups` creates no groups over the existing ranges
/// (it did: groups 4-7 of the new flag's even cuts, overlapping the
/// stored ranges, so keys went missing from the map).
#[test]
fn a_restart_with_another_groups_keeps_the_stored_groups() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n1");
    let (peer, client) = (free_port(), free_port());
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(
        &dir,
        &lock,
        InitialRanges {
            groups: 2,
            ..InitialRanges::default()
        },
    );
    let more = NodeSettings {
        groups: Some(4),
        ..node_settings(&dir, peer, client)
    }
    .validate()
    .unwrap();
    assert_eq!(more.groups, 4);
    let sc = more.shard(0, &store);
    run(async move {
        let shard = Shard::open(sc, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        assert_eq!(groups(&shard), vec![0, 1], "the stored 2 groups only");
    });
    drop(lock);
}

/// Bootstrap places each initial range on `--replication-factor` of the
/// founding nodes (`route::founding_placement`): node 1 of five, RF 3, five
/// groups, hosts ranges 0, 3 and 4, each with the three voters of its
/// ring. The placement is made when the shard first opens, never again: a
/// restart with other --peers and another factor creates nothing where the
/// cluster placed nothing (it did, before the gate: ranges 1 and 2 with
/// three voters, a second set of voters beside the real one).
#[test]
fn founding_ranges_go_on_rf_nodes_once_and_a_restart_with_another_factor_adds_none() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n1");
    let (peer, client) = (free_port(), free_port());
    let peers = four_peers();
    let with_rf = |rf: u32, peers: &[String]| {
        NodeSettings {
            groups: Some(5),
            peers: Some(peers.join(",")),
            replication_factor: Some(rf),
            ..node_settings(&dir, peer, client)
        }
        .validate()
        .unwrap()
    };
    let (three, five) = (with_rf(3, &peers), with_rf(5, &peers));
    assert_ne!(three.cuts, five.cuts, "the factor is in the fingerprint");
    // Restarted with only nodes 2 and 3 as --peers and a factor of 5: by
    // the flags, every range would be on node 1.
    let other = with_rf(5, &peers[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(
        &dir,
        &lock,
        InitialRanges {
            groups: 5,
            cuts: three.cuts,
            replication_factor: 3,
        },
    );
    let (sc3, sc5) = (three.shard(0, &store), other.shard(0, &store));
    run(async move {
        let shard = Shard::open(sc3, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let placed: Vec<(u64, Vec<u64>)> = ranges_of(&shard)
            .into_iter()
            .map(|r| (r.group, r.voters))
            .collect();
        assert_eq!(
            placed,
            vec![(0, vec![1, 2, 3]), (3, vec![1, 4, 5]), (4, vec![1, 2, 5])]
        );
        for r in ranges_of(&shard) {
            let d = RangeDesc::decode(&r.descriptor).unwrap();
            let nodes: Vec<u64> = d.replicas.iter().map(|x| x.node).collect();
            assert_eq!(
                nodes, r.voters,
                "range {}'s descriptor names its voters",
                r.group
            );
        }
        drop(shard);
        let shard = Shard::open(sc5, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        assert_eq!(groups(&shard), vec![0, 3, 4], "no range placed at restart");
    });
    drop(lock);
}

/// A group log written before the replica catalog existed (every group
/// then lived on every node) is restated with every founder as a voter,
/// not with the founding placement of the replication factor: its entries
/// were committed by a majority of all the founders, and a placement of 3
/// of 5 would let 2 of the 3 elect a leader that lacks them. (It was
/// restated with the placement's voters.)
#[test]
fn a_log_from_before_the_catalog_is_restated_with_every_founder() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n1");
    let (peer, client) = (free_port(), free_port());
    let peers = four_peers();
    let cfg = NodeSettings {
        groups: Some(1),
        peers: Some(peers.join(",")),
        replication_factor: Some(3),
        ..node_settings(&dir, peer, client)
    }
    .validate()
    .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(
        &dir,
        &lock,
        InitialRanges {
            groups: 1,
            cuts: cfg.cuts,
            replication_factor: 3,
        },
    );
    let sc = cfg.shard(0, &store);
    let wal_dir = ringraft::identity::shard_dir(&dir, 0).join(ringraft::identity::WAL_DIR);
    let wal_opts = sc.wal.clone();
    run(async move {
        // Group 0's hard state, and no catalog record: what a node wrote
        // before the catalog.
        let disk = ringraft_wal::DmaDisk::new(&wal_dir).unwrap();
        let (wal, _, _) = ringraft::storage::open_wal(disk, wal_opts).await.unwrap();
        let hs = ringraft::raft::HardState {
            term: 2,
            vote: 3,
            commit: 0,
        };
        let mut rec = vec![0u8; ringraft::storage::record_bytes(true, &[])];
        ringraft::storage::encode_record(&mut rec, 0, Some(&hs), &[]);
        wal.append(&rec).await.unwrap();
        wal.close().await.unwrap();
        let shard = Shard::open(sc, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let placed: Vec<(u64, Vec<u64>)> = ranges_of(&shard)
            .into_iter()
            .map(|r| (r.group, r.voters))
            .collect();
        assert_eq!(placed, vec![(0, vec![1, 2, 3, 4, 5])]);
        let d = RangeDesc::decode(&ranges_of(&shard)[0].descriptor).unwrap();
        let nodes: Vec<u64> = d.replicas.iter().map(|x| x.node).collect();
        assert_eq!(nodes, vec![1, 2, 3, 4, 5], "the descriptor says the same");
    });
    drop(lock);
}

/// A snapshot is a view of the state machine taken in the turn that
/// applies its index (issue #21): encoded and written in the background
/// while the group applies more, it holds the state at its own index, not
/// a later one; the core compacts to it only once its file is durable; and
/// a snapshot that comes due meanwhile is not started twice.
#[test]
fn a_snapshot_holds_the_state_at_its_index_while_later_writes_apply() {
    use ringraft::kv::{Command, Kv, KvLimits, WriteOp};
    let (_t, cfg, lock, store) = fresh_store_with(|s| NodeSettings {
        snapshot_entries: Some(1),
        ..s
    });
    let put = |seq: u64, v: &'static [u8]| {
        Command {
            client: 7,
            seq,
            ack: seq,
            op: WriteOp::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(v),
            },
        }
        .encode()
    };
    run(async move {
        let sc = cfg.shard(0, &store);
        let snap_dir = sc.dir.join(ringraft::identity::SNAP_DIR);
        let mut shard = Shard::open(sc, Rc::new(Cell::new(false)), None)
            .await
            .unwrap();
        let g = 1000;
        shard.create_replica(desc(g, 1, &[1, 2, 3])).await.unwrap();
        shard.on_peer_message(g, 2, leader_entry(1, put(1, b"one")));
        let before = shard.stats().snapshots_taken;
        settle(&mut shard, &[g], 1).await;
        assert_eq!(shard.stats().snapshots_taken, before + 1, "due at entry 1");
        // Entry 2 applies before the shard takes the snapshot's file in:
        // due again (every entry), but one is under way.
        shard.on_peer_message(g, 2, leader_entry(2, put(2, b"two")));
        settle(&mut shard, &[g], 2).await;
        assert_eq!(shard.stats().snapshots_taken, before + 1, "started twice");
        let core_snapshot = |shard: &Shard| {
            let r = shard.replicas().into_iter().find(|r| r.group == g);
            r.expect("hosted").snapshot
        };
        assert_eq!(core_snapshot(&shard), 0, "compacted before the file");
        // (`list` touches nothing: `load_latest` would remove the write
        // in progress as a crash's leftover.)
        for _ in 0..10_000 {
            if !snapfile::list(&snap_dir).unwrap().is_empty() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let mut files = snapfile::load_latest(&snap_dir).await.unwrap();
        let (group, snap) = files.pop().expect("the snapshot file is written");
        assert_eq!((group, snap.meta.index), (g, 1));
        let kv = Kv::restore(&snap.data, KvLimits::default()).unwrap();
        assert_eq!(kv.applied(), 1);
        assert_eq!(kv.get(b"k").map(|v| &v[..]), Some(&b"one"[..]));
        // Taken in (once its write reports): the core compacts to it and
        // the next entry's snapshot may start.
        for _ in 0..10_000 {
            shard.finish_snapshots().await.unwrap();
            if core_snapshot(&shard) == 1 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(core_snapshot(&shard), 1);
        shard.on_peer_message(g, 2, leader_entry(3, put(3, b"three")));
        settle(&mut shard, &[g], 3).await;
        assert_eq!(shard.stats().snapshots_taken, before + 2);
    });
    drop(lock);
}

/// Range splits on a real shard (issue #18): `Op::Split` on range 100's
/// leader splits it at `100/m`; range 200 is made on the same shard with
/// the keys at and above it and serves at once; range 100 refuses them;
/// the same split asked again is `Done`, a key outside the range and an
/// id in use are refused; after a crash (the shard's task dropped) the
/// catalog holds both, the parent's log replays the split without making
/// range 200 again, and both serve what they held.
#[test]
fn a_split_makes_the_right_hand_range_on_the_same_shard_and_a_restart_keeps_both() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n1");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = lock_data_dir(&dir).unwrap();
    let store = new_store(&dir, &lock, InitialRanges::default());
    let key = |i: u8| Bytes::from(format!("100/{}", (b'b' + i) as char));
    let get = |k: Bytes| Op::Get {
        key: k,
        mode: ringraft::wire::ReadMode::Linearizable,
    };
    // Asks until the answer is not an election's or a new range's.
    async fn ask(cl: &Client, g: u64, op: Op, write: bool) -> Result<Reply, Error> {
        for _ in 0..100 {
            match cl.call(g, op.clone(), write).await {
                Err(Error::Server(ClientError::NotHosted { .. }))
                | Err(Error::Server(ClientError::NotLeader { .. }))
                | Err(Error::Timeout(_))
                | Err(Error::Unreachable(_)) => {
                    glommio::timer::sleep(Duration::from_millis(50)).await
                }
                r => return r,
            }
        }
        panic!("group {g} never answered {op:?}");
    }
    for round in 0..2 {
        // New ports each run: the first run's listeners may outlive its
        // executor, and a connection to them would go unanswered.
        let (peer, client) = (free_port(), free_port());
        let (c, s) = (settings(&dir, peer, client), store);
        run(async move {
            let mut shard = Shard::open(c.shard(0, &s), Rc::new(Cell::new(false)), None)
                .await
                .unwrap();
            if round == 0 {
                shard.create_replica(desc(100, 1, &[1])).await.unwrap();
            }
            let (served, cl) = serve(shard, peer, client).await;
            if round == 0 {
                for i in 0..24 {
                    let put = Op::Put {
                        key: key(i),
                        value: key(i),
                    };
                    assert_eq!(ask(&cl, 100, put, true).await.unwrap(), Reply::Done);
                }
                let split = Op::Split {
                    key: Bytes::from_static(b"100/m"),
                    right: 200,
                };
                assert_eq!(
                    ask(&cl, 100, split.clone(), false).await.unwrap(),
                    Reply::Done
                );
                // Asked again: in force.
                assert_eq!(ask(&cl, 100, split, false).await.unwrap(), Reply::Done);
                for (bad, right, why) in [
                    (&b"100/n"[..], 200, "in use"),
                    (&b"100/c"[..], 0, "cannot name"),
                    (&b"100/m"[..], 300, "not strictly inside"),
                    (&b"100/a"[..], 300, "not strictly inside"),
                ] {
                    let op = Op::Split {
                        key: Bytes::copy_from_slice(bad),
                        right,
                    };
                    match ask(&cl, 100, op, false).await {
                        Err(Error::Server(ClientError::BadRequest { reason })) => {
                            assert!(reason.contains(why), "{reason}")
                        }
                        r => panic!("split at {bad:?} into {right}: {r:?}"),
                    }
                }
                // The new range takes writes of its keys.
                let put = Op::Put {
                    key: Bytes::from_static(b"100/yy"),
                    value: Bytes::from_static(b"new"),
                };
                assert_eq!(ask(&cl, 200, put, true).await.unwrap(), Reply::Done);
            }
            // Each key is in exactly one of the two ranges, both with the
            // bounds of the split.
            for i in 0..24 {
                let k = key(i);
                let (mine, other) = if k[..] < b"100/m"[..] {
                    (100, 200)
                } else {
                    (200, 100)
                };
                let got = ask(&cl, mine, get(k.clone()), false).await.unwrap();
                assert_eq!(got, Reply::Value(Some(k.clone())), "round {round}");
                match ask(&cl, other, get(k.clone()), false).await {
                    Err(Error::Server(ClientError::KeyNotInRange { start, end, .. })) => {
                        let b = if other == 100 {
                            (&b"100/a"[..], &b"100/m"[..])
                        } else {
                            (&b"100/m"[..], &b"100/z"[..])
                        };
                        assert_eq!((&start[..], &end[..]), b, "round {round}");
                    }
                    r => panic!("round {round}: key {k:?} read from range {other}: {r:?}"),
                }
            }
            let got = ask(&cl, 200, get(Bytes::from_static(b"100/yy")), false).await;
            assert_eq!(got.unwrap(), Reply::Value(Some(Bytes::from_static(b"new"))));
            drop(served);
        });
    }
    // Both in the catalog; the new range's first snapshot file is there.
    let files = snapfile::list(&dir.join("shard-0").join("snapshots")).unwrap();
    assert!(
        files.iter().any(|f| f.0 == 200),
        "range 200's snapshot file: {files:?}"
    );
    drop(lock);
}

/// Two bounds of a split on a real shard (issue #18), driven without its
/// loop: follower replica 1 of range 100 applies 8,292 writes and then a
/// split at `100/m` into range 200 from leader 2.
/// - `SEEDING_HELD_MSGS_MAX`: while range 200 is being made (its first
///   snapshot written in the background), messages for it are held to be
///   stepped into it once it exists, at most that many; the rest are
///   dropped (their senders send again). Once made, none is held.
/// - `SPLIT_TRIM_KEYS_PER_TICK`: the keys each side holds outside its
///   bounds (every key is outside one of the two) are trimmed at most that
///   many per tick: 4,096, 4,096, then the last 100.
#[test]
fn a_split_holds_at_most_seeding_held_msgs_max_and_trims_split_trim_keys_per_tick() {
    use ringraft::kv::{Command, WriteOp};
    use ringraft::raft::{Body, Entry, EntryKind, Message};
    use ringraft::shard::{SEEDING_HELD_MSGS_MAX, SPLIT_TRIM_KEYS_PER_TICK};
    let (_t, cfg, lock, store) = fresh_store();
    let n = 2 * SPLIT_TRIM_KEYS_PER_TICK + 100;
    // Even writes below the split key, odd ones above it.
    let key = |i: usize| {
        Bytes::from(format!(
            "100/{}{i:06}",
            if i.is_multiple_of(2) { 'c' } else { 'p' }
        ))
    };
    // Client 7's write `seq`; client 0 is no client (a split's entry).
    let entry = |index: u64, client: u64, seq: u64, op: WriteOp| Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Command {
            client,
            seq,
            ack: seq.saturating_sub(1),
            op,
        }
        .encode(),
    };
    let append = |entries: Vec<Entry>| {
        let first = entries[0].index;
        let last = entries[entries.len() - 1].index;
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: Body::Append {
                prev_index: first - 1,
                prev_term: u64::from(first > 1),
                entries,
                commit: last,
            },
        }
    };
    run(async move {
        let mut shard = shard_with_group(&cfg, &store, 100).await;
        let mut index = 0u64;
        for chunk in (0..n).collect::<Vec<_>>().chunks(512) {
            let entries = chunk
                .iter()
                .map(|&i| {
                    index += 1;
                    let op = WriteOp::Put {
                        key: key(i),
                        value: Bytes::from_static(b"v"),
                    };
                    entry(index, 7, i as u64 + 1, op)
                })
                .collect();
            shard.on_peer_message(100, 2, append(entries));
            settle(&mut shard, &[100], index).await;
        }
        index += 1;
        let split = WriteOp::Split {
            key: Bytes::from_static(b"100/m"),
            right: 200,
            start: Bytes::from_static(b"100/a"),
            end: Bytes::from_static(b"100/z"),
            version: 1,
        };
        shard.on_peer_message(100, 2, append(vec![entry(index, 0, 0, split)]));
        // The turn that applies it starts making range 200; its first
        // snapshot is encoded and written in the background, so right
        // after that turn the range is still being made.
        for _ in 0..10_000 {
            shard.process_readies().await.unwrap();
            shard.complete_durable();
            if shard
                .replicas()
                .iter()
                .any(|r| r.group == 100 && r.applied >= index)
            {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            !groups(&shard).contains(&200),
            "range 200 was made before this test could send it messages"
        );
        for _ in 0..SEEDING_HELD_MSGS_MAX + 10 {
            shard.on_peer_message(200, 2, creating_heartbeat());
        }
        assert_eq!(shard.held_for_seeding(), SEEDING_HELD_MSGS_MAX);
        for _ in 0..10_000 {
            shard.finish_splits().await.unwrap();
            shard.process_readies().await.unwrap();
            shard.complete_durable();
            if groups(&shard).contains(&200) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert!(groups(&shard).contains(&200), "range 200 never made");
        assert_eq!(shard.held_for_seeding(), 0, "held messages stepped in");
        let mut trimmed = Vec::new();
        loop {
            let before = shard.stats().split_keys_trimmed;
            shard.trim_split_leftovers();
            match shard.stats().split_keys_trimmed - before {
                0 => break,
                k => trimmed.push(k as usize),
            }
            assert!(trimmed.len() <= 4, "trimmed {trimmed:?}");
        }
        assert_eq!(
            trimmed,
            [SPLIT_TRIM_KEYS_PER_TICK, SPLIT_TRIM_KEYS_PER_TICK, 100],
            "keys trimmed per tick"
        );
    });
    drop(lock);
}
