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
    let want = format!(
        "shard 1: listening for clients on 127.0.0.1:{}",
        clients + 1
    );
    assert!(
        err.contains(&want),
        "the reason names the shard and address:\n{err}"
    );
}
