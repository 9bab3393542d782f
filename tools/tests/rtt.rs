//! `ringraft-rtt`, the raw TCP baseline of the benchmark.

use std::process::Command;

fn rtt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringraft-rtt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_summary_counts_the_measured_round_trips_only() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rtt.json");
    let out = rtt(&[
        "--round-trips",
        "300",
        "--warmup",
        "50",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["count"], 300);
    assert_eq!(j["bytes"], 32);
    let p50 = j["p50_us"].as_f64().unwrap();
    let p99 = j["p99_us"].as_f64().unwrap();
    let max = j["max_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{j}");
}

/// `--bytes` is bounded at 1 MiB each way: the bound runs, one more is refused.
#[test]
fn message_size_is_bounded_at_one_mebibyte() {
    let out = rtt(&["--round-trips", "3", "--warmup", "0", "--bytes", "1048576"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1048576 B each way"));
    let out = rtt(&["--round-trips", "3", "--bytes", "1048577"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bytes"));
}
