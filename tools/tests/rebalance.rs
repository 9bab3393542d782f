//! ringraft-rebalance end to end, small: 3 nodes with 8 MiB, 2 more join,
//! and the balancer spreads the ranges over all 5 within the tool's
//! bounds (every node registered, 3 voters per range, replicas within 10%
//! of the mean, leaders within one). The run's JSON line carries the
//! figures the README's table reports.
//!
//! Needs the `ringraft` binary next to `ringraft-rebalance` (cargo test
//! --workspace builds both).

use std::path::PathBuf;
use std::process::Command;

fn rebalance() -> Command {
    let tool = PathBuf::from(env!("CARGO_BIN_EXE_ringraft-rebalance"));
    let bin = tool.with_file_name("ringraft");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace tests (cargo test --workspace)",
        bin.display()
    );
    let mut c = Command::new(tool);
    c.arg("--node-bin").arg(bin);
    c
}

#[test]
fn a_small_cluster_rebalances_over_joined_nodes_and_reports() {
    let out = rebalance()
        .args([
            "--data-mib",
            "8",
            "--value-bytes",
            "16384",
            "--ranges",
            "10",
        ])
        .args(["--add", "2", "--baseline-secs", "1", "--hold-secs", "2"])
        .args(["--timeout-secs", "240"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("a JSON line in {stdout}"));
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(j["fill_bytes"].as_u64(), Some(8 << 20), "{j}");
    // 30 replicas over 5 nodes: the 2 that joined hold 12 between them,
    // each one moved there.
    assert!(j["replicas_moved"].as_u64().unwrap() >= 10, "{j}");
    assert!(j["snapshot_bytes"].as_u64().unwrap() > 0, "{j}");
    assert!(j["rebalance_secs"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["move_gap_secs"].as_f64().unwrap() > 0.0, "{j}");
    assert!(stdout.contains("replicas balanced in"), "{stdout}");
}

#[test]
fn too_many_nodes_for_one_box_is_refused_with_the_numbers() {
    let out = rebalance()
        .args(["--nodes", "7", "--add", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--nodes 7 plus --add 3 is 10 nodes: at most 9 on one box"),
        "{stderr}"
    );
}
