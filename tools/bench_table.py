"""The markdown table of tools/bench.sh: medians [min-max] over the
repetitions, ratios to etcd (driven by the same generator) and to a raw
fdatasync taken per repetition."""
import json, re
import os
import platform
import statistics
import subprocess
import sys

d, out, shapes, sizes, ratios, with_etcd, duration, runs, open_rate, open_share = sys.argv[1:]
shapes, sizes, ratios, runs = shapes.split(), sizes.split(), ratios.split(), int(runs)
reps = range(1, runs + 1)


def spread(xs, f):
    """median [min-max]"""
    xs = sorted(xs)
    return f"{f(statistics.median(xs))} [{f(xs[0])}-{f(xs[-1])}]"


def whole(x):
    """ops/s, µs"""
    return f"{x:.0f}"


def ms(us):
    return f"{us / 1000:.2f}"


def one_place(x):
    """µs of CPU per operation"""
    return f"{x:.1f}"


def rat(x):
    """ratios, cores"""
    return f"{x:.2f}"


# etcd through ringraft-load --target etcd: (shape, size, ratio, rep) -> its
# JSON summary, the same shape as ringraft's.
etcd = {}
# The cross-check with etcd's own client (ETCD_RUNNER), if it ran:
# (clients, size, ratio, rep) -> its JSON line.
etcd_own = {}
if with_etcd == "1":
    for shape in shapes:
        for size in sizes:
            for ratio in ratios:
                for r in reps:
                    etcd[(shape, size, ratio, r)] = json.load(
                        open(f"{d}/etcd-{shape}-{size}-{ratio}-{r}.json")
                    )
    for size in sizes:
        for ratio in ratios:
            for r in reps:
                path = f"{d}/etcd-own-{size}-{ratio}-{r}.jsonl"
                if os.path.exists(path):
                    for line in open(path):
                        j = json.loads(line)
                        etcd_own[(j["clients"], size, ratio, r)] = j
fsync_us = {}
for r in reps:
    w = json.load(open(f"{d}/fsync-{r}.json"))["jobs"][0]
    # One op is a 4 KiB write and its fdatasync: the mean time of both.
    fsync_us[r] = 1e6 / max(w["write"]["iops"], 1)
# Loopback round trips, p50: blocking sockets (ringraft-rtt), and through
# the generator's client and executor (ringraft-load --calibrate, 1 x 1).
raw_rtt_us = {r: json.load(open(f"{d}/rtt-{r}.json"))["p50_us"] for r in reps}
rtt_us = {r: json.load(open(f"{d}/tcp-{r}.json"))["write"]["p50_us"] for r in reps}
# No 1 x 1 write can beat two round trips (client-leader, leader-follower)
# and one write + fdatasync on this machine.
floor_us = {r: 2 * raw_rtt_us[r] + fsync_us[r] for r in reps}
cpu = subprocess.run(
    ["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
    capture_output=True,
    text=True,
).stdout.strip()
hdr = "| conns x depth | value | read ratio | ops/s | write p50 ms | write p99 ms | read p50 ms | read p99 ms | errors |"
sep = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
if etcd:
    hdr += " etcd ops/s | etcd p50 ms | ops/s ÷ etcd | p50 ÷ etcd | etcd CPU µs/op | etcd ctx sw/op |"
    sep += " --- | --- | --- | --- | --- | --- |"
    if etcd_own:
        hdr += " etcd ops/s, its own client |"
        sep += " --- |"
hdr += " p50 ÷ fsync | node CPU µs/op | node ctx sw/op | gen CPU µs/op |"
sep += " --- | --- | --- | --- |"
rows = []
for shape in shapes:
    c, dep = map(int, shape.split("x"))
    for size in sizes:
        for ratio in ratios:
            js = {r: json.load(open(f"{d}/rr-{shape}-{size}-{ratio}-{r}.json")) for r in reps}
            main = "read" if float(ratio) >= 0.5 else "write"
            row = f"| {shape} | {size} | {ratio} | {spread([j['ops_per_sec'] for j in js.values()], whole)}"
            for op in ("write", "read"):
                for q in ("p50_us", "p99_us"):
                    if js[1][op]["count"]:
                        row += f" | {spread([j[op][q] for j in js.values()], ms)}"
                    else:
                        row += " | -"
            row += f" | {sum(j['errors'] for j in js.values())} |"
            if etcd:
                es = {r: etcd[(shape, size, ratio, r)] for r in reps}
                row += f" {spread([e['ops_per_sec'] for e in es.values()], whole)}"
                row += f" | {spread([e[main]['p50_us'] for e in es.values()], ms)}"
                row += f" | {spread([js[r]['ops_per_sec'] / max(es[r]['ops_per_sec'], 1) for r in reps], rat)}"
                row += f" | {spread([js[r][main]['p50_us'] / max(es[r][main]['p50_us'], 1) for r in reps], rat)} |"
                for key, f in (("node_cpu_us_per_op", one_place), ("node_ctx_switches_per_op", rat)):
                    xs = [(e.get("cost") or {}).get(key) for e in es.values()]
                    row += f" {spread(xs, f)} |" if all(x is not None for x in xs) else " - |"
                if etcd_own:
                    os_ = [etcd_own.get((c * dep, size, ratio, r)) for r in reps]
                    row += f" {spread([e['ops_per_sec'] for e in os_], whole)} |" if all(os_) else " - |"
            row += f" {spread([js[r][main]['p50_us'] / fsync_us[r] for r in reps], rat)} |"
            # What one operation cost (ringraft-load's "cost"): CPU of
            # the nodes together, their context switches, the generator's CPU.
            for key, f in (
                ("node_cpu_us_per_op", one_place),
                ("node_ctx_switches_per_op", rat),
                ("generator_cpu_us_per_op", one_place),
            ):
                xs = [(j.get("cost") or {}).get(key) for j in js.values()]
                row += f" {spread(xs, f)} |" if all(x is not None for x in xs) else " - |"
            rows.append(row)
o = {r: json.load(open(f"{d}/rr-open-16-0-{r}.json")) for r in reps}
# The cluster as ringraft-load described it, e.g. "local(3 nodes x 1 shards, 8 groups)".
m = re.search(r"cluster=(\S+\([^)]*\))", o[1].get("settings", ""))
cluster = m.group(1) if m else "local cluster (settings not reported)"
with open(out, "w") as f:
    f.write(
        f"Machine: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}; {cluster}, "
        f"every node fsyncing; the generator on the same machine; "
        f"{duration} s per run, {runs} repetitions: median [min-max].\n\n"
    )
    f.write(
        "Raw 4 KiB write + fdatasync (fio, same filesystem, each repetition): "
        f"{spread(list(fsync_us.values()), whole)} µs.\n\n"
    )
    f.write(
        "Loopback TCP round trip, p50, each repetition: blocking sockets (`ringraft-rtt`) "
        f"{spread(list(raw_rtt_us.values()), whole)} µs; through the generator's client "
        "against a do-nothing responder (`ringraft-load --calibrate --connections 1 --depth 1`) "
        f"{spread(list(rtt_us.values()), whole)} µs. "
        "Floor of a 1 x 1 write (two raw round trips + one write and fdatasync): "
        f"{spread(list(floor_us.values()), whole)} µs.\n\n"
    )
    f.write(hdr + "\n" + sep + "\n" + "\n".join(rows) + "\n\n")
    if "1x1" in shapes and "0" in ratios:
        one = {r: json.load(open(f"{d}/rr-1x1-{sizes[0]}-0-{r}.json")) for r in reps}
        line = (
            f"1 x 1 writes of {sizes[0]} B: p50 ÷ floor "
            f"{spread([one[r]['write']['p50_us'] / floor_us[r] for r in reps], rat)}"
        )
        if etcd:
            es = {r: etcd[("1x1", sizes[0], "0", r)] for r in reps}
            line += (
                f"; half of etcd's p50 {spread([es[r]['write']['p50_us'] / 2 for r in reps], whole)} µs"
                f" ÷ floor {spread([es[r]['write']['p50_us'] / 2 / floor_us[r] for r in reps], rat)}"
            )
        f.write(line + ".\n\n")
    f.write(
        f"Open loop at {float(open_share):.0%} of the median peak 16 B write throughput ({open_rate} ops/s offered): "
        f"{spread([j['ops_per_sec'] for j in o.values()], whole)} ops/s, "
        f"write p50 {spread([j['write']['p50_us'] for j in o.values()], ms)} ms, "
        f"p99 {spread([j['write']['p99_us'] for j in o.values()], ms)} ms, "
        f"p99.9 {spread([j['write']['p999_us'] for j in o.values()], ms)} ms, "
        f"errors {sum(j['errors'] for j in o.values())}"
    )
    cpus = [j.get("cpu") for j in o.values()]
    if all(c and c.get("machine_busy_cores") is not None for c in cpus):
        f.write(
            f"; CPUs busy {spread([c['machine_busy_cores'] for c in cpus], rat)} "
            f"of {spread([c['machine_cores'] for c in cpus], rat)}, "
            f"the generator's share {spread([c['generator_cores'] for c in cpus], rat)}"
        )
    f.write(".\n")
print(open(out).read())
