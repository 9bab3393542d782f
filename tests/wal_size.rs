//! How much WAL a node keeps, on real node processes: 20,000 writes, then
//! every node must release its old segments.
//!
//! History: the replica catalog used to be restated only once it lagged
//! 1,000 *records* behind what the replicas need, and group commit packs
//! 20,000 writes into about 1,000 records (8 segments), so one node in
//! three kept all 8 segments for good. The bound is now in segments
//! (`Wal::segment_start`, `src/shard/disk.rs`).

use std::time::{Duration, Instant};

use ringraft::client::{Client, ClientConfig};
use ringraft::local_cluster::{run_on_executor, LocalCluster, LocalClusterConfig};

async fn client(c: Vec<std::net::SocketAddr>) -> Client {
    let mut cfg = ClientConfig::new(c);
    cfg.op_timeout_ms = 20_000;
    Client::connect(cfg).await.expect("client connects")
}

/// `wal-pin-records-max`: idle groups do not hold old WAL segments while
/// another group of their shard writes a lot. Without the rewrite, each
/// idle group's first hard-state record pins the first segment and every
/// later one. The 63 idle groups' hard states are written again in
/// batches, one sync per batch (it was one sync per group, the shard
/// waiting on each). An idle group whose entries pin the WAL writes its
/// small log again in the same batch (`WAL_REWRITE_LOG_BYTES_MAX`); one
/// whose log is larger snapshots first and has its hard state rewritten at
/// a later pass, at most `SNAPSHOT_WRITES_MAX` snapshots at once: the
/// rewrites come in at most one batch per that many groups, and one more.
#[test]
fn idle_groups_do_not_pin_the_wal_and_are_rewritten_in_batches() {
    use ringraft::shard::SNAPSHOT_WRITES_MAX;
    let batches_max = 63u64.div_ceil(SNAPSHOT_WRITES_MAX as u64) + 1;
    let c = wal_stays_small(&["--wal-pin-records-max", "500"], 64, &[0]);
    let metric = |n: u64, name: &str| c.metric_sum(n, name) as u64;
    // Metrics are published once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 1..=3 {
        loop {
            let rewrites = metric(n, "ringraft_hard_state_rewrites_total");
            let syncs = metric(n, "ringraft_hard_state_rewrite_syncs_total");
            if rewrites >= 63 && syncs > 0 {
                assert!(
                    syncs <= batches_max,
                    "node {n}: {rewrites} rewrites in {syncs} syncs (at most {batches_max})"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {n}: {rewrites} hard states rewritten in {syncs} syncs"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The replica catalog does not pin the WAL either, with the default
/// `wal-pin-records-max` (100,000 records) and no idle group: its entries
/// are restated once they lie in a segment older than the one holding what
/// the replicas need. (They were restated only after `wal-pin-records-max`
/// records, so every shard kept up to 100,000 records of WAL it did not
/// need: a 30-minute chaos soak filled node 1's small disk with them; then
/// after 1,000 records, which group commit made 8 segments.)
#[test]
fn the_replica_catalog_does_not_pin_the_wal() {
    wal_stays_small(&[], 2, &[0, 1]);
}

/// 20,000 writes of ~1.6 KB to the keys of `groups` (of `total`; about
/// eight 4 MiB segments): within 30 s of the last acknowledgement every
/// node keeps at most 4 segments. The cluster, still running.
fn wal_stays_small(extra: &[&str], total: u64, groups: &'static [u64]) -> LocalCluster {
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ringraft"));
    cfg.shards = 1;
    cfg.groups = total;
    cfg.metrics = true;
    cfg.extra_args = [
        "--placement",
        "unbound",
        "--tick-ms",
        "10",
        "--value-bytes-max",
        "2048",
        "--wal-segment-bytes",
        "4194304",
        "--snapshot-entries",
        "300",
        "--compact-keep-entries",
        "10",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let c = LocalCluster::start(cfg).unwrap();
    c.wait_ready(Duration::from_secs(30)).unwrap();
    let addrs = c.client_addrs();
    // Keys of `groups` only: inside their ranges (the default even cuts).
    let splits = ringraft::route::even_split_keys(total);
    let keys: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let g = groups[i % groups.len()];
            let (start, _) = ringraft::route::initial_bounds(g, &splits);
            [&start[..], &[1], format!("hot{i}").as_bytes()].concat()
        })
        .collect();
    run_on_executor(move || async move {
        let cl = client(addrs).await;
        // 20000 writes of ~1.6 KB: about eight 4 MiB segments.
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let cl = cl.clone();
                glommio::spawn_local(async move {
                    for _ in 0..400 {
                        cl.put(&k, &[b'v'; 1500]).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
    // The once-a-second unpinning and the snapshot releases run on each
    // node after it has applied the writes; a follower may still be
    // catching up when the client has its last acknowledgement (CI's node
    // 3 was taking snapshots 2.5 s later). So wait for the condition, with
    // a deadline: under the old rule the catalog pins 8 segments for good.
    let count = |n: &ringraft::local_cluster::LocalNode| {
        let wal = n.data_dir.join("shard-0").join("wal");
        std::fs::read_dir(&wal)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts: Vec<(u64, usize)> = c.nodes.iter().map(|n| (n.id, count(n))).collect();
        let Some(&(id, segments)) = counts.iter().find(|(_, s)| *s > 4) else {
            eprintln!("WAL segments per node: {counts:?}");
            break;
        };
        assert!(
            Instant::now() < deadline,
            "node {id}: {segments} WAL segments kept 30 s after the last write \
             (all: {counts:?})\n{}",
            c.log_tail(id, 10)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c
}
