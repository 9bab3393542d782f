//! A node starts whole or not at all: any shard that cannot start stops
//! the node at once, with the reason and a non-zero exit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringraft::local_cluster::free_ports;

/// Shard 1's client port is taken: before, shard 0 ran on alone (half of
/// the groups missing) and nothing was said until the node was stopped.
#[test]
fn a_shard_that_cannot_start_stops_the_whole_node() {
    let t = tempfile::tempdir().unwrap();
    let port = free_ports(4).unwrap();
    let (peers, clients) = (port, port + 2);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", clients + 1)).unwrap();
    let started = Instant::now();
    let mut node = Command::new(env!("CARGO_BIN_EXE_ringraft"))
        .args(["node", "--id", "1", "--shards", "2", "--groups", "2"])
        .args(["--placement", "unbound", "--initial-cluster-state", "new"])
        .arg("--data-dir")
        .arg(t.path().join("n1"))
        .args(["--listen-peers", &format!("127.0.0.1:{peers}")])
        .args(["--listen-clients", &format!("127.0.0.1:{clients}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = node.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            node.kill().unwrap();
            node.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(node.stderr.as_mut().unwrap(), &mut err).unwrap();
    drop(squatter);
    let status = status.unwrap_or_else(|| panic!("the node ran on half started:\n{err}"));
    assert_eq!(status.code(), Some(1), "{err}");
    // It waited BIND_IN_USE_WAIT_MS (3 s) for the port first: a killed
    // incarnation of itself may hold it briefly.
    assert!(
        started.elapsed() >= Duration::from_millis(3_000),
        "gave up on a port in use after {:?}",
        started.elapsed()
    );
    let want = format!(
        "shard 1: listening for clients on 127.0.0.1:{}",
        clients + 1
    );
    assert!(
        err.contains(&want),
        "the reason names the shard and address:\n{err}"
    );
}

/// `ringraft node` with its descriptor limit (soft and hard) set to `fds`.
fn node_with_fd_limit(fds: u64, dir: &std::path::Path, port: u16, extra: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringraft"));
    cmd.args(["node", "--id", "1", "--placement", "unbound"])
        .args(["--initial-cluster-state", "new"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen-peers", &format!("127.0.0.1:{port}")])
        .args(["--listen-clients", &format!("127.0.0.1:{}", port + 1)])
        .args(extra)
        .stdin(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: fds,
                rlim_max: fds,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn a_descriptor_limit_below_the_settings_is_refused_at_start() {
    let t = tempfile::tempdir().unwrap();
    let port = free_ports(2).unwrap();
    let o = node_with_fd_limit(64, &t.path().join("n1"), port, &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("limit is 64") && err.contains("--client-conns-max"),
        "{err}"
    );
}

/// The case: a node with few descriptors and small WAL segments,
/// a write load running, and a client that opens many connections, holds
/// them, closes them, again and again. Before, the node accepted until
/// `EMFILE`, and the WAL (which needs descriptors for new segments and
/// directory syncs) was poisoned: the node exited. Now connections past
/// `client-conns-max` are refused with a reason, and writes go on.
#[test]
fn a_flood_of_client_connections_never_reaches_the_storage_path() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let t = tempfile::tempdir().unwrap();
    let port = free_ports(2).unwrap();
    let client_addr: std::net::SocketAddr = format!("127.0.0.1:{}", port + 1).parse().unwrap();
    let log = std::fs::File::create(t.path().join("node.log")).unwrap();
    let mut node = node_with_fd_limit(
        256,
        &t.path().join("n1"),
        port,
        &[
            "--groups",
            "1",
            "--client-conns-max",
            "16",
            "--wal-segment-bytes",
            "4194304",
            "--wal-zero-segments",
            "false",
        ],
    )
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .unwrap();
    let node_log = || std::fs::read_to_string(t.path().join("node.log")).unwrap_or_default();
    // The load: 16 KiB writes, so WAL segments roll over during the flood.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
        std::thread::spawn(move || {
            ringraft::local_cluster::run_on_executor(move || async move {
                let mut cfg = ringraft::client::ClientConfig::new(vec![client_addr]);
                cfg.op_timeout_ms = 10_000;
                let deadline = Instant::now() + Duration::from_secs(20);
                let cl = loop {
                    match ringraft::client::Client::connect(cfg.clone()).await {
                        Ok(c) => break c,
                        Err(e) if Instant::now() > deadline => panic!("no node: {e}"),
                        Err(_) => glommio::timer::sleep(Duration::from_millis(50)).await,
                    }
                };
                let value = vec![7u8; 16 << 10];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match cl.put(format!("k{}", i % 64).as_bytes(), &value).await {
                        Ok(()) => acked.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no write before the flood:\n{}",
            node_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut hello = Vec::new();
    ringraft::wire::Hello::client(1, 0).encode(&mut hello);
    let mut refusals_named = 0;
    for round in 0..4 {
        let before = acked.load(Ordering::Relaxed);
        let mut held = Vec::new();
        for _ in 0..300 {
            if let Ok(s) =
                std::net::TcpStream::connect_timeout(&client_addr, Duration::from_millis(100))
            {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = (&s).write_all(&hello);
                held.push(s);
            }
        }
        for s in held.iter_mut().rev().take(8) {
            let mut b = [0u8; 1024];
            if let Ok(n) = s.read(&mut b) {
                if String::from_utf8_lossy(&b[..n]).contains("client-conns-max") {
                    refusals_named += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
        assert!(
            node.try_wait().unwrap().is_none(),
            "the node died in flood round {round}:\n{}",
            node_log()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.load(Ordering::Relaxed) == before {
            assert!(
                Instant::now() < deadline,
                "no write acknowledged after flood round {round}:\n{}",
                node_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert!(
        refusals_named > 0,
        "refused clients hear which setting:\n{}",
        node_log()
    );
    let log = node_log();
    assert!(!log.contains("Too many open files"), "{log}");
    eprintln!(
        "{} writes acknowledged, {} failed; {refusals_named} refusals read",
        acked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}
