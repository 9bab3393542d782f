"""The markdown table of tools/scale.sh: node CPU per acknowledged write,
median [min-max] over the repetitions, and its ratio to the 3-node figure
of the same placement."""
import json
import statistics
import sys

d, out, nodes, runs, rate, groups, duration = sys.argv[1:]
nodes, runs = [int(n) for n in nodes.split()], int(runs)


def spread(xs, fmt):
    xs = sorted(xs)
    return f"{fmt(statistics.median(xs))} [{fmt(xs[0])}-{fmt(xs[-1])}]"


def run(placement, n, rep):
    with open(f"{d}/{placement}-{n}-{rep}.json") as f:
        j = json.load(f)
    ops = j["ops_per_sec"]
    cpu = j.get("cpu") or {}
    # Cores each node process used over the measured window (None: its
    # /proc entry could not be read).
    per_node = cpu.get("node_cores") or []
    if not ops or len(per_node) != n or any(c is None for c in per_node):
        sys.exit(f"{placement}-{n}-{rep}: no writes or no CPU figure for every node in {j}")
    node_cores = sum(per_node)
    return {
        "us_per_write": node_cores * 1e6 / ops,
        "ops": ops,
        "busy": cpu.get("machine_busy_cores", 0.0),
        "errors": j.get("errors", 0),
    }


lines = [
    f"Node CPU per acknowledged write, {rate} writes/s offered to {groups} ranges, "
    f"{duration} s per run, median [min-max] of {runs} runs; ratio: to the 3-node "
    "figure of the same placement, run by run.",
    "",
    "| placement | nodes | µs CPU / write | ratio to 3 nodes | writes/s | machine busy cores | errors |",
    "|---|---|---|---|---|---|---|",
]
for placement, label in (("rf3", "RF 3 (ranges on 3 nodes)"), ("all", "every range on every node")):
    base = [run(placement, nodes[0], r)["us_per_write"] for r in range(1, runs + 1)]
    for n in nodes:
        if placement == "all" and n > 7:
            lines.append(f"| {label} | {n} | n/a: ranges of at most 7 replicas (REPLICATION_FACTOR_MAX) | | | | |")
            continue
        rs = [run(placement, n, r) for r in range(1, runs + 1)]
        ratio = [x["us_per_write"] / b for x, b in zip(rs, base)]
        lines.append(
            f"| {label} | {n} | {spread([x['us_per_write'] for x in rs], lambda v: f'{v:.0f}')} "
            f"| {spread(ratio, lambda v: f'{v:.2f}')} "
            f"| {spread([x['ops'] for x in rs], lambda v: f'{v:.0f}')} "
            f"| {spread([x['busy'] for x in rs], lambda v: f'{v:.2f}')} "
            f"| {sum(x['errors'] for x in rs)} |"
        )
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
