//! CPU used during a run, from `/proc`: this process (the generator), the
//! local cluster's nodes and the whole machine. On one box the generator and
//! the nodes share the cores; the report says how busy they were, so a user
//! can tell a cluster limit from a saturated machine.

use std::time::Instant;

/// CPU seconds (user + system, all threads) of process `pid` so far.
pub fn process_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&s).map(|t| t as f64 / ticks_per_sec())
}

/// utime + stime, in clock ticks, from a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces or parentheses:
/// the fields are counted from the last `)`.
pub fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Context switches of process `pid` so far: voluntary and involuntary,
/// summed over its threads (`/proc/PID/task/*/status`). A thread that
/// exited took its count with it (the kernel keeps no per-process total
/// that `/proc` shows for another process).
pub fn process_ctx_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    for t in tasks.flatten() {
        // A thread may exit between the listing and the read.
        if let Ok(s) = std::fs::read_to_string(t.path().join("status")) {
            sum += parse_ctx_switches(&s)?;
        }
    }
    Some(sum)
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of a
/// `/proc/PID/status` (or task status) text.
pub fn parse_ctx_switches(status: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().parse().ok()
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// Resident memory of process `pid` now, in bytes (`VmRSS` of
/// `/proc/PID/status`).
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    parse_rss_bytes(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmRSS` (in kB in the file) of a `/proc/PID/status` text, in bytes.
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut f = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = f.next()?.parse().ok()?;
    (f.next() == Some("kB")).then_some(kb * 1024)
}

/// The whole machine's CPU counters so far, from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineTicks {
    /// Busy ticks, all CPUs.
    pub busy: u64,
    /// Busy and idle ticks, all CPUs.
    pub total: u64,
    /// CPUs listed (`cpuN` lines).
    pub cpus: u32,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The counters of `/proc/stat`: its first line sums all CPUs (idle and
/// iowait are not busy; guest time is already counted in user time), then
/// one `cpuN` line per CPU.
pub fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let mut lines = stat.lines();
    let mut f = lines.next()?.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let idle = v[3] + v[4];
    let total: u64 = v.iter().sum();
    let cpus = lines
        .take_while(|l| l.starts_with("cpu"))
        .filter(|l| l[3..].starts_with(|c: char| c.is_ascii_digit()))
        .count() as u32;
    Some(MachineTicks {
        busy: total - idle,
        total,
        cpus: cpus.max(1),
    })
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy share of the machine's CPUs at and above which the report warns
/// that the run was CPU-bound (on one box the generator competes with the
/// cluster). Default 0.9.
pub const SATURATED_SHARE: f64 = 0.9;

/// One reading of the CPU counters.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    generator: Option<f64>,
    nodes: Vec<Option<f64>>,
    machine: Option<MachineTicks>,
    /// Context switches of the generator and of each node so far.
    generator_ctx: Option<u64>,
    nodes_ctx: Vec<Option<u64>>,
}

impl Snapshot {
    /// Reads the counters of this process, of `nodes` (PIDs; None for a node
    /// not running) and of the machine.
    pub fn take(nodes: &[Option<u32>]) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            generator: process_secs(std::process::id()),
            nodes: nodes.iter().map(|p| p.and_then(process_secs)).collect(),
            machine: machine_ticks(),
            generator_ctx: process_ctx_switches(std::process::id()),
            nodes_ctx: nodes
                .iter()
                .map(|p| p.and_then(process_ctx_switches))
                .collect(),
        }
    }
}

/// Cores used on average between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub window_s: f64,
    pub generator: Option<f64>,
    /// Per local node, in node order (None: not running throughout).
    pub nodes: Vec<Option<f64>>,
    /// Busy cores of the whole machine.
    pub machine_busy: Option<f64>,
    /// CPUs of the whole machine (the `cpuN` lines of `/proc/stat`).
    pub machine_cpus: Option<f64>,
    /// Context switches per second of the generator (all its threads).
    pub generator_ctx_per_sec: Option<f64>,
    /// Context switches per second of all local nodes together (None if
    /// a node was not running throughout, or there is none).
    pub nodes_ctx_per_sec: Option<f64>,
}

impl Usage {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Usage {
        let w = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        // A counter of events (context switches) as a rate like CPU seconds.
        let count = |x: Option<u64>| x.map(|x| x as f64);
        let rate = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y >= x => Some((y - x) / w),
            _ => None,
        };
        let (busy, cpus) = match (a.machine, b.machine) {
            (Some(x), Some(y)) if y.total > x.total && y.busy >= x.busy => {
                // The busy share of the ticks counted (robust to when the
                // counters were last updated) times the CPUs.
                let share = (y.busy - x.busy) as f64 / (y.total - x.total) as f64;
                let cpus = f64::from(y.cpus);
                (Some(share * cpus), Some(cpus))
            }
            _ => (None, None),
        };
        Usage {
            window_s: w,
            generator: rate(a.generator, b.generator),
            nodes: a
                .nodes
                .iter()
                .zip(&b.nodes)
                .map(|(x, y)| rate(*x, *y))
                .collect(),
            machine_busy: busy,
            machine_cpus: cpus,
            generator_ctx_per_sec: rate(count(a.generator_ctx), count(b.generator_ctx)),
            nodes_ctx_per_sec: if a.nodes_ctx.is_empty() {
                None
            } else {
                a.nodes_ctx
                    .iter()
                    .zip(&b.nodes_ctx)
                    .map(|(x, y)| rate(count(*x), count(*y)))
                    .sum::<Option<f64>>()
            },
        }
    }

    /// Node cores over all local nodes (None if any was not running
    /// throughout, or there is none).
    pub fn nodes_total(&self) -> Option<f64> {
        if self.nodes.is_empty() {
            return None;
        }
        self.nodes.iter().copied().sum()
    }

    /// What one operation cost at `ops_per_sec` acknowledged operations a
    /// second: CPU in µs and context switches, of the nodes together and
    /// of the generator (issue #22's figures: they carry to bigger
    /// machines where throughput on one shared box does not).
    pub fn per_op(&self, ops_per_sec: f64) -> Cost {
        let per = |x: Option<f64>, scale: f64| {
            x.filter(|_| ops_per_sec > 0.0)
                .map(|x| x * scale / ops_per_sec)
        };
        Cost {
            node_cpu_us: per(self.nodes_total(), 1e6),
            node_ctx_switches: per(self.nodes_ctx_per_sec, 1.0),
            generator_cpu_us: per(self.generator, 1e6),
            generator_ctx_switches: per(self.generator_ctx_per_sec, 1.0),
        }
    }

    /// Fraction of the machine's CPU time that was busy.
    pub fn machine_busy_share(&self) -> Option<f64> {
        match (self.machine_busy, self.machine_cpus) {
            (Some(b), Some(c)) if c > 0.0 => Some(b / c),
            _ => None,
        }
    }

    /// A warning when the machine was at least `SATURATED_SHARE` busy.
    pub fn saturation_note(&self) -> Option<String> {
        let share = self
            .machine_busy_share()
            .filter(|&x| x >= SATURATED_SHARE)?;
        Some(format!(
            "note: this machine's CPUs were {:.0}% busy: whatever shares them with the cluster \
             (this generator, on one box) counts in its latencies",
            share * 100.0
        ))
    }

    /// "generator 0.65, nodes 0.41 0.43 0.41, machine 1.98 of 2 busy".
    pub fn line(&self) -> String {
        let c = |x: Option<f64>| x.map_or("?".to_string(), |v| format!("{v:.2}"));
        let mut s = format!("generator {}", c(self.generator));
        if !self.nodes.is_empty() {
            let n: Vec<String> = self.nodes.iter().map(|x| c(*x)).collect();
            s += &format!(", nodes {}", n.join(" "));
        }
        s += &format!(
            ", machine {} of {} busy",
            c(self.machine_busy),
            self.machine_cpus
                .map_or("?".to_string(), |v| format!("{v:.0}"))
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "window_s": self.window_s,
            "generator_cores": self.generator,
            "node_cores": self.nodes,
            "machine_busy_cores": self.machine_busy,
            "machine_cores": self.machine_cpus,
            "generator_ctx_switches_per_sec": self.generator_ctx_per_sec,
            "node_ctx_switches_per_sec": self.nodes_ctx_per_sec,
        })
    }
}

/// What one acknowledged operation cost ([`Usage::per_op`]); None where a
/// counter could not be read or nothing was acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// CPU of the local nodes together, µs per operation.
    pub node_cpu_us: Option<f64>,
    /// Context switches of the local nodes together per operation.
    pub node_ctx_switches: Option<f64>,
    /// CPU of the generator, µs per operation.
    pub generator_cpu_us: Option<f64>,
    /// Context switches of the generator per operation.
    pub generator_ctx_switches: Option<f64>,
}

impl Cost {
    /// "nodes 42.1 µs CPU, 0.35 context switches; generator 17.0 µs CPU,
    /// 0.02 context switches".
    pub fn line(&self) -> String {
        let f = |x: Option<f64>, d: usize| x.map_or("?".to_string(), |v| format!("{v:.d$}"));
        let mut s = String::new();
        if self.node_cpu_us.is_some() || self.node_ctx_switches.is_some() {
            s += &format!(
                "nodes {} µs CPU, {} context switches; ",
                f(self.node_cpu_us, 1),
                f(self.node_ctx_switches, 2)
            );
        }
        s += &format!(
            "generator {} µs CPU, {} context switches",
            f(self.generator_cpu_us, 1),
            f(self.generator_ctx_switches, 2)
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "node_cpu_us_per_op": self.node_cpu_us,
            "node_ctx_switches_per_op": self.node_ctx_switches,
            "generator_cpu_us_per_op": self.generator_cpu_us,
            "generator_ctx_switches_per_op": self.generator_ctx_switches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as the kernel shows it.
        let line = "4242 (load (x) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_process_ticks(line), Some(325));
        assert_eq!(parse_process_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_process_ticks("no parenthesis"), None);
    }

    #[test]
    fn resident_memory_is_read_from_vmrss_in_kb() {
        let status = "Name:\tringraft\nVmPeak:\t  900 kB\nVmRSS:\t   16384 kB\nThreads:\t4\n";
        assert_eq!(parse_rss_bytes(status), Some(16 << 20));
        assert_eq!(parse_rss_bytes("VmRSS:\t12 MB\n"), None, "unit not kB");
        assert_eq!(parse_rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn machine_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n\
                    cpu1 50 3 25 400 20 2 1 0 0 0\nintr 12345 0 0\n";
        // busy = 100 + 5 + 50 + 3 + 2 + 0; total adds idle 800 and iowait 40.
        assert_eq!(
            parse_machine_ticks(stat),
            Some(MachineTicks {
                busy: 160,
                total: 1000,
                cpus: 2
            })
        );
        assert_eq!(parse_machine_ticks("intr 1 2 3\n"), None);
        assert_eq!(parse_machine_ticks("cpu 1 2\n"), None);
    }

    #[test]
    fn a_machine_busy_from_the_saturated_share_on_gets_a_note() {
        let at = |busy: f64| Usage {
            window_s: 1.0,
            generator: Some(0.5),
            nodes: vec![],
            machine_busy: Some(busy),
            machine_cpus: Some(2.0),
            generator_ctx_per_sec: None,
            nodes_ctx_per_sec: None,
        };
        let note = at(2.0 * SATURATED_SHARE)
            .saturation_note()
            .expect("at the bound");
        assert!(note.contains("90% busy"), "{note}");
        assert_eq!(at(2.0 * SATURATED_SHARE - 0.01).saturation_note(), None);
        let unknown = Usage {
            machine_busy: None,
            ..at(2.0)
        };
        assert_eq!(unknown.saturation_note(), None);
    }

    #[test]
    fn context_switches_are_voluntary_and_involuntary_summed() {
        let status =
            "Name:\tringraft\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_ctx_switches(status), Some(127));
        assert_eq!(parse_ctx_switches("voluntary_ctxt_switches:\t1\n"), None);
        // This thread (other test threads may exit meanwhile and take
        // their counts out of the process's sum): a sleep switches once
        // at least.
        let me = || {
            parse_ctx_switches(&std::fs::read_to_string("/proc/thread-self/status").unwrap())
                .expect("own status has both counts")
        };
        let a = me();
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(me() >= a + 5, "{a} -> {}", me());
        // The process's sum counts this thread too.
        let all = process_ctx_switches(std::process::id()).expect("own /proc is readable");
        assert!(all >= a + 5, "{all}");
    }

    #[test]
    fn the_cost_per_operation_divides_the_rates_by_the_throughput() {
        let u = Usage {
            window_s: 2.0,
            generator: Some(0.2),
            nodes: vec![Some(0.3), Some(0.1), Some(0.2)],
            machine_busy: Some(1.0),
            machine_cpus: Some(2.0),
            generator_ctx_per_sec: Some(1000.0),
            nodes_ctx_per_sec: Some(30_000.0),
        };
        let c = u.per_op(10_000.0);
        let near = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() < 1e-9);
        assert!(near(c.node_cpu_us, 60.0), "{c:?}");
        assert!(near(c.generator_cpu_us, 20.0), "{c:?}");
        assert!(near(c.node_ctx_switches, 3.0), "{c:?}");
        assert!(near(c.generator_ctx_switches, 0.1), "{c:?}");
        assert!(
            c.line()
                .contains("nodes 60.0 µs CPU, 3.00 context switches"),
            "{}",
            c.line()
        );
        // A node not running throughout: no node figure, nothing made up.
        let gone = Usage {
            nodes: vec![Some(0.3), None],
            nodes_ctx_per_sec: None,
            ..u.clone()
        };
        assert_eq!(gone.per_op(10_000.0).node_cpu_us, None);
        assert_eq!(u.per_op(0.0).generator_cpu_us, None, "nothing acknowledged");
    }

    #[test]
    fn a_busy_thread_shows_in_this_process_and_the_machine() {
        let a = Snapshot::take(&[None]);
        // About 300 ms of CPU on this thread.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let b = Snapshot::take(&[None]);
        let u = Usage::between(&a, &b);
        let g = u.generator.expect("own /proc/PID/stat is readable");
        // Clock ticks are 10 ms: at least half a core over the window,
        // and no more than the machine's cores.
        assert!(g > 0.5, "{u:?}");
        let cpus = u.machine_cpus.expect("/proc/stat is readable");
        assert!(g <= cpus + 0.1, "{u:?}");
        assert!(u.machine_busy.unwrap() >= g - 0.1, "{u:?}");
        assert_eq!(u.nodes, vec![None]);
        assert!(u.line().contains("generator"));
    }
}
