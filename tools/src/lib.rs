//! ringraft's load generator (`ringraft-load`) and the pieces it is made
//! of: the workload (keys, values, the open-loop schedule) and the report
//! (percentiles, JSON, `.hgrm`), and the CPU it used.

pub mod cpu;
pub mod probe;
pub mod report;
pub mod target;
pub mod workload;

use std::path::PathBuf;

/// The `ringraft` node binary a tool starts its local cluster with:
/// `given` (its `--node-bin`), else the one next to the tool's own binary.
/// An error naming the path and how to get one if it does not exist.
pub fn node_bin(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    let bin = match given {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("ringraft"),
    };
    if !bin.exists() {
        return Err(format!(
            "the node binary {} does not exist: build it (cargo build --release --workspace) or pass --node-bin",
            bin.display()
        ));
    }
    Ok(bin)
}

/// A client of the cluster at `addrs` (30 s per operation), asked again
/// for up to a minute: right after a large fill a node's turn can stall
/// for seconds (its WAL unpinning pass waits for a sync), past one
/// connect's handshake timeout.
pub async fn connect_patiently(
    addrs: Vec<std::net::SocketAddr>,
) -> Result<ringraft::client::Client, String> {
    use ringraft::client::{Client, ClientConfig};
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut cfg = ClientConfig::new(addrs.clone());
        cfg.op_timeout_ms = 30_000;
        match Client::connect(cfg).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("connecting to {addrs:?} for a minute: {e}"))
            }
            Err(_) => glommio::timer::sleep(Duration::from_millis(200)).await,
        }
    }
}
