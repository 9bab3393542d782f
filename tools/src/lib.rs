//! ringraft's load generator (`ringraft-load`) and the pieces it is made
//! of: the workload (keys, values, the open-loop schedule) and the report
//! (percentiles, JSON, `.hgrm`), and the CPU it used.

pub mod cpu;
pub mod etcd;
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

/// What every benchmark that starts its own local clusters takes.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalRuns {
    /// Whole runs, each on a fresh cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub runs: u64,
    /// More arguments for every node (repeat it: `--node-arg=--tick-ms=10`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// Where the nodes' logs go (default: the cluster's temporary directory,
    /// removed at the end).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The `ringraft` binary (default: next to this one).
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
}

impl LocalRuns {
    /// Sets `cfg`'s log directory and appends the node arguments given;
    /// `unsplit`: ranges split neither by size (`--range-split-bytes=0`)
    /// nor by load (`--range-split-qps=0`) unless those arguments say
    /// otherwise (a benchmark that measures a range of a given size, or
    /// splits only where it asks).
    pub fn configure(&self, cfg: &mut ringraft::local_cluster::LocalClusterConfig, unsplit: bool) {
        cfg.log_dir = self.log_dir.clone();
        let given = |flag: &str| self.node_args.iter().any(|a| a.starts_with(flag));
        for flag in ["--range-split-bytes", "--range-split-qps"] {
            if unsplit && !given(flag) {
                cfg.extra_args.push(format!("{flag}=0"));
            }
        }
        cfg.extra_args.extend(self.node_args.iter().cloned());
    }

    /// The benchmark's whole runs (`--runs`), each on a fresh cluster:
    /// `one` gets the node binary (`node_bin`); each run's figures are
    /// printed (`print`, with its number from 1) and, with more than one,
    /// the summary over them. The first error ends the program (exit 1),
    /// named after the tool (`name`).
    pub fn repeat<R>(
        &self,
        name: &str,
        one: impl FnMut(&std::path::Path) -> Result<R, String>,
        print: impl Fn(u64, &R),
        summary: impl Fn(&[R]),
    ) {
        repeat_runs(name, self.node_bin.as_ref(), self.runs, one, print, summary)
    }
}

/// [`LocalRuns::repeat`].
fn repeat_runs<R>(
    name: &str,
    given: Option<&PathBuf>,
    runs: u64,
    mut one: impl FnMut(&std::path::Path) -> Result<R, String>,
    print: impl Fn(u64, &R),
    summary: impl Fn(&[R]),
) {
    let result = node_bin(given).and_then(|bin| {
        let mut out = Vec::new();
        for i in 1..=runs {
            eprintln!("== run {i} of {runs}");
            let r = one(&bin)?;
            print(i, &r);
            out.push(r);
        }
        Ok(out)
    });
    match result {
        Ok(out) if out.len() > 1 => summary(&out),
        Ok(_) => {}
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    }
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
