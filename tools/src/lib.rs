//! ringraft's load generator (`ringraft-load`) and the pieces it is made
//! of: the workload (keys, values, the open-loop schedule) and the report
//! (percentiles, JSON, `.hgrm`), and the CPU it used.

pub mod cpu;
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
