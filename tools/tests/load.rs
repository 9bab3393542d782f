//! ringraft-load end to end: a local cluster started by the tool, a short
//! run in check mode, the JSON summary, the .hgrm file.
//!
//! Needs the `ringraft` binary next to `ringraft-load` (cargo test
//! --workspace builds both).

use std::path::PathBuf;
use std::process::Command;

fn node_bin() -> PathBuf {
    let load = PathBuf::from(env!("CARGO_BIN_EXE_ringraft-load"));
    let bin = load.with_file_name("ringraft");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace tests (cargo test --workspace)",
        bin.display()
    );
    bin
}

#[test]
fn a_short_checked_run_against_a_local_cluster_passes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let hgrm = dir.path().join("latency.hgrm");
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .arg("--node-bin")
        .arg(node_bin())
        .args(["--duration", "2", "--warmup", "0.5", "--keys", "30"])
        .args(["--read-ratio", "0.5", "--connections", "4", "--depth", "4"])
        .args(["--check", "--seed", "7"])
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("check: PASS"), "{stdout}");
    assert!(
        stderr.contains("ops/s"),
        "a progress line per second: {stderr}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(j["ops"].as_u64().unwrap() > 100, "{j}");
    assert!(j["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(j["errors"].as_u64(), Some(0));
    assert!(j["duration_s"].as_f64().unwrap() >= 1.5);
    for op in ["write", "read"] {
        for f in ["count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            assert!(j[op][f].is_u64(), "{op}.{f} in {j}");
        }
        assert!(j[op]["count"].as_u64().unwrap() > 0);
    }
    assert_eq!(j["check"].as_str(), Some("pass"));
    // The CPU of the measured window: this generator, each of the 3 local
    // nodes (they served traffic), the machine.
    let cpu = &j["cpu"];
    let nodes = cpu["node_cores"].as_array().expect("node_cores");
    assert_eq!(nodes.len(), 3, "{cpu}");
    assert!(nodes.iter().all(|n| n.as_f64().unwrap() > 0.0), "{cpu}");
    assert!(cpu["generator_cores"].as_f64().unwrap() > 0.0, "{cpu}");
    let busy = cpu["machine_busy_cores"].as_f64().unwrap();
    assert!(
        busy > 0.0 && busy <= cpu["machine_cores"].as_f64().unwrap() + 0.05,
        "{cpu}"
    );
    assert!(
        stdout.contains("cpu (cores, measured window): generator"),
        "{stdout}"
    );
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(h.contains("Percentile") && h.contains("#[Max"), "{h}");
}

#[test]
fn bad_settings_get_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .args(["--read-ratio", "2", "--cluster", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--read-ratio"));
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .args(["--key-dist", "zipf:7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("THETA"));
    // Refused up front (usage, exit 2), before any cluster or allocation.
    for (args, named) in [
        (&["--duration", "0"][..], "--duration 0"),
        (&["--keys", "0"][..], "--keys 0"),
        (&["--ops", "0"][..], "--ops 0"),
        (
            &["--attempt-timeout-ms", "20000"][..],
            "--attempt-timeout-ms 20000: must be positive and at most --op-timeout-ms (10000)",
        ),
        (&["--value-size", "2000000"][..], "value-bytes-max 1048576"),
        (
            &["--value-size", "999999999", "--cluster", "127.0.0.1:1"][..],
            "no node accepts values above",
        ),
    ] {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{args:?}"
        );
    }
}

/// Pointed at a port where no node listens: before, 0 ops/s, 0 errors,
/// exit 0; a script must be able to tell that nothing worked.
#[test]
fn a_run_where_nothing_succeeds_exits_non_zero() {
    let port = ringraft::local_cluster::free_ports(1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .args(["--cluster", &format!("127.0.0.1:{port}")])
        .args(["--duration", "1", "--warmup", "0", "--op-timeout-ms", "500"])
        .args(["--connections", "1", "--depth", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
}

#[test]
fn calibration_measures_the_generator_alone() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .args(["--calibrate", "--duration", "1", "--warmup", "0.2"])
        .args(["--connections", "4", "--depth", "8", "--read-ratio", "0.5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("calibration: the generator alone reaches"),
        "{stdout}"
    );
    assert!(stdout.contains("errors: 0"), "{stdout}");
    // No local nodes: the generator and the machine only.
    let cpu = stdout
        .lines()
        .find(|l| l.starts_with("cpu (cores, measured window): generator "))
        .unwrap_or_else(|| panic!("no cpu line: {stdout}"));
    assert!(!cpu.contains("nodes") && cpu.contains("machine"), "{cpu}");
}

/// A calibration run with `args`, writing `flag FILE`; it must succeed.
fn calibrate(args: &[&str], flag: &str, file: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .arg("--calibrate")
        .args(args)
        .arg(flag)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 2-second calibration run (0.5 s warmup) with `args`, writing `flag FILE`.
fn calibrate_2s(args: &[&str], flag: &str, file: &std::path::Path) {
    calibrate(
        &[&["--duration", "2", "--warmup", "0.5"], args].concat(),
        flag,
        file,
    );
}

/// The report `--json FILE` wrote.
fn report(file: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// Regression: connection setup landed in the open-loop schedule and each
/// worker issued one operation after the end, so 5000/s measured 6365/s.
#[test]
fn open_loop_issues_at_the_rate_asked() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    calibrate_2s(
        &["--rate", "3000", "--connections", "32", "--depth", "32"],
        "--json",
        &json,
    );
    let rate = report(&json)["ops_per_sec"].as_f64().unwrap();
    assert!(
        (2850.0..=3150.0).contains(&rate),
        "asked 3000/s, measured {rate}/s"
    );
}

/// Regression: a run counted by operations (`--ops`) ended its measured
/// window when the once-a-second progress loop noticed the count, not when
/// the last operation ended, so its rate came out as ops over whole
/// seconds (100,000 writes in 4.4 s read as 20,002/s over 5 s). 500
/// operations against the do-nothing responder take a few ms; before the
/// fix the window was about 1 s.
#[test]
fn a_run_counted_by_operations_ends_its_window_at_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    let args = [
        "--ops",
        "500",
        "--warmup",
        "0",
        "--connections",
        "1",
        "--depth",
        "1",
    ];
    calibrate(&args, "--json", &json);
    let j = report(&json);
    let (ops, secs) = (
        j["ops"].as_u64().unwrap(),
        j["duration_s"].as_f64().unwrap(),
    );
    assert!(ops >= 500, "{j}");
    assert!(secs < 0.5, "500 ops measured over {secs} s: {j}");
    let rate = j["ops_per_sec"].as_f64().unwrap();
    assert!((rate - ops as f64 / secs).abs() < 1.0, "{j}");
}

#[test]
fn the_interval_log_holds_one_histogram_per_second() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let dir = tempfile::tempdir().unwrap();
    let hlog = dir.path().join("run.hlog");
    calibrate_2s(
        &["--connections", "2", "--depth", "2"],
        "--interval-log",
        &hlog,
    );
    let bytes = std::fs::read(&hlog).unwrap();
    let mut intervals = Vec::new();
    let mut start_time = false;
    for e in IntervalLogIterator::new(&bytes) {
        match e.unwrap_or_else(|e| panic!("unreadable interval log: {e:?}")) {
            LogEntry::StartTime(_) => start_time = true,
            LogEntry::Interval(i) => {
                let raw = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    i.encoded_histogram(),
                )
                .unwrap();
                let h: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut std::io::Cursor::new(raw))
                    .unwrap();
                intervals.push((i.start_timestamp(), i.duration(), h.len()));
            }
            LogEntry::BaseTime(_) => {}
        }
    }
    assert!(start_time, "a StartTime header");
    // 2.5 s of run: at least two whole intervals, each about a second,
    // in order, each with operations in it.
    assert!(intervals.len() >= 2, "{intervals:?}");
    for w in intervals.windows(2) {
        assert!(w[1].0 > w[0].0, "{intervals:?}");
    }
    for (_, d, n) in &intervals[..intervals.len() - 1] {
        assert!((0.5..1.5).contains(&d.as_secs_f64()), "{intervals:?}");
        assert!(*n > 0, "{intervals:?}");
    }
}

/// Processes whose command line mentions `needle` (the local cluster's
/// nodes name their data directories).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// SIGTERM to the generator alone, mid-run: it prints the report so far,
/// exits 1 (the run did not finish), and takes its cluster with it (nodes
/// and temporary directory); before, it died at once and left both. A
/// SIGKILL cannot clean up, but the nodes still die with it.
#[test]
fn a_signalled_run_reports_so_far_and_tears_its_cluster_down() {
    use std::io::{BufRead, BufReader};
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
            .arg("--node-bin")
            .arg(node_bin())
            .args(["--duration", "60", "--warmup", "0", "--connections", "2"])
            .args(["--depth", "2", "--groups", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut root = None;
        let mut seen = String::new();
        // The data directory, then a first progress line.
        loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "ended early:\n{seen}"
            );
            seen.push_str(&line);
            if let Some(r) = line.strip_prefix("local cluster data: ") {
                root = Some(r.trim().to_string());
            }
            if line.contains("ops/s") {
                break;
            }
        }
        let root = root.expect("the tool names its cluster's directory");
        assert!(!processes_mentioning(&root).is_empty(), "nodes run");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let out = child.wait_with_output().unwrap();
        let stderr = seen + &rest.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !processes_mentioning(&root).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "signal {sig}: nodes outlive the generator"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if sig == libc::SIGTERM {
            assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
            assert!(
                stdout.contains("throughput:"),
                "a partial report:\n{stdout}"
            );
            assert!(stderr.contains("interrupted"), "{stderr}");
            assert!(
                !std::path::Path::new(&root).exists(),
                "the temporary directory goes with the cluster"
            );
        } else {
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}

/// `--target resp` (issue #20): the same workload and check through
/// Redis's protocol, against the local cluster's RESP ports, then against
/// a Redis server with `appendfsync always` where `redis-server` is
/// installed (`.ci/run` installs it; skipped, saying so, otherwise),
/// which asks for a password (`--resp-password-file`).
#[test]
fn the_resp_target_drives_the_local_clusters_resp_ports_and_a_redis_server() {
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
            .arg("--node-bin")
            .arg(node_bin())
            .args(["--target", "resp", "--duration", "1.5", "--warmup", "0.2"])
            .args(["--keys", "50", "--read-ratio", "0.5"])
            .args(["--connections", "4", "--depth", "4", "--check"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("check: PASS"), "{stdout}");
        assert!(stdout.contains("errors: 0"), "{stdout}");
        assert!(stdout.contains("settings: target=resp "), "{stdout}");
        stdout
    };
    run(&[]);
    let server = std::process::Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !server {
        eprintln!("the Redis server part skipped: redis-server is not installed (apt-get install redis-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A password asked (`requirepass`), given from a file as
    // `--resp-password-file` reads it.
    let password = dir.path().join("password");
    std::fs::write(&password, "load pass\n").unwrap();
    // Below the ephemeral range (one bound at :0 could be taken by any
    // outgoing connection before the server binds it).
    let port = ringraft::local_cluster::free_ports(1).unwrap();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--requirepass",
            "load pass",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let r = std::panic::catch_unwind(|| {
        assert!(up, "redis-server did not listen on {addr}");
        run(&[
            "--cluster",
            &addr,
            "--resp-password-file",
            password.to_str().unwrap(),
        ])
    });
    let _ = redis.kill();
    let _ = redis.wait();
    r.unwrap();
}

/// `--target etcd` against a real etcd member (Debian's `etcd-server`,
/// which `.ci/run` installs): a checked run with reads passes, and the
/// member's CPU per operation is measured through `--server-pids`.
#[test]
fn the_etcd_target_drives_an_etcd_member_and_measures_its_cpu() {
    let has_etcd = Command::new("sh")
        .args(["-c", "command -v etcd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_etcd {
        eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = ringraft::local_cluster::free_ports(2).unwrap();
    let (client, peer) = (
        format!("http://127.0.0.1:{base}"),
        format!("http://127.0.0.1:{}", base + 1),
    );
    let mut etcd = Command::new("etcd")
        .args(["--name", "m1", "--data-dir"])
        .arg(dir.path().join("m1"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("m1={peer}")])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{base}");
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let json = dir.path().join("etcd.json");
    let r = std::panic::catch_unwind(|| {
        assert!(up, "etcd did not listen on {addr}");
        let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
            .args(["--target", "etcd", "--cluster", &client])
            .args(["--server-pids", &etcd.id().to_string()])
            .args(["--duration", "1.5", "--warmup", "0.3", "--keys", "50"])
            .args(["--read-ratio", "0.5", "--connections", "2", "--depth", "4"])
            .args(["--check", "--op-timeout-ms", "5000"])
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("settings: target=etcd "), "{stdout}");
        assert!(stdout.contains("check: PASS"), "{stdout}");
        assert!(stdout.contains("errors: 0"), "{stdout}");
        let j = report(&json);
        for op in ["write", "read"] {
            assert!(j[op]["count"].as_u64().unwrap() > 0, "{j}");
        }
        // The member served every operation: its CPU per operation is
        // measured (etcd spends tens of µs per write; above 1 µs for sure).
        let cost = &j["cost"];
        assert!(cost["node_cpu_us_per_op"].as_f64().unwrap() > 1.0, "{j}");
        assert!(cost["node_ctx_switches_per_op"].as_f64().is_some(), "{j}");
        assert!(
            cost["generator_cpu_us_per_op"].as_f64().unwrap() > 0.0,
            "{j}"
        );
    });
    let _ = etcd.kill();
    let _ = etcd.wait();
    r.unwrap();
}

#[test]
fn the_etcd_target_refuses_what_it_cannot_drive() {
    for (args, named) in [
        (
            &["--target", "etcd"][..],
            "--target etcd: name the etcd members' client URLs with --cluster",
        ),
        (
            &["--target", "etcd", "--cluster", "https://127.0.0.1:2379"][..],
            "TLS is not supported",
        ),
        (
            &["--target", "etcd", "--cluster", "etcd-host"][..],
            "--cluster etcd-host: not an etcd client address",
        ),
        (
            &[
                "--target",
                "etcd",
                "--cluster",
                "127.0.0.1:2379",
                "--read-mode",
                "lease",
            ][..],
            "--read-mode lease: --target etcd reads linearizably",
        ),
        (&["--server-pids", "1"][..], "--cluster"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    // Nothing listening: the connection error names the address.
    let port = ringraft::local_cluster::free_ports(1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringraft-load"))
        .args([
            "--target",
            "etcd",
            "--cluster",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--duration", "1", "--op-timeout-ms", "500"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}
