#!/usr/bin/env bash
# A/B of two builds of ringraft-load (each starts its own local cluster
# with the ringraft binary next to it), interleaved in the same run, with
# a raw 4 KiB write+fdatasync measured in every repetition, and etcd too
# when ETCD_RUNNER names the etcd baseline script (without it the etcd
# columns are left out, and the run says so).
#
#   tools/ab.sh OLD/ringraft-load NEW/ringraft-load   (Env: RUNS, default 3;
#   LOAD_ARGS, more flags for every load run, e.g. "--groups 2000")
# Prints medians [min-max] for 1x1 and 64x64 writes and an open loop at
# 20k/s, with ratios to etcd.
set -u
old=${1:?usage: tools/ab.sh OLD_LOAD NEW_LOAD}
new=${2:?usage: tools/ab.sh OLD_LOAD NEW_LOAD}
out=$(mktemp -d)
fdir=$(mktemp -d)
trap 'rm -rf "$out" "$fdir"' EXIT
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
root=$(cd "$(dirname "$0")/.." && pwd)
# The etcd baseline runs through a script outside this repository (README).
ETCD_RUNNER=${ETCD_RUNNER:-}
if [ -n "$ETCD_RUNNER" ] && [ ! -f "$ETCD_RUNNER" ]; then
  echo "tools/ab.sh: ETCD_RUNNER=$ETCD_RUNNER is not a file (unset it to run without etcd)" >&2
  exit 2
fi
if [ -z "$ETCD_RUNNER" ]; then
  echo "tools/ab.sh: ETCD_RUNNER is not set: no etcd baseline in this run (old against new, and fdatasync)" >&2
fi
RUNS=${RUNS:-3}
LOAD_ARGS=${LOAD_ARGS:-}
for rep in $(seq "$RUNS"); do
  fio --name=fsync --directory=$fdir --rw=write --bs=4k --size=16M --runtime=3 --direct=1 --ioengine=psync --fdatasync=1 --output-format=json > $out/fsync-$rep.json 2>/dev/null; rm -f $fdir/*
  for v in old new; do
    bin=$old; [ $v = new ] && bin=$new
    $bin $LOAD_ARGS --connections 1 --depth 1 --duration 5 --warmup 1 --json $out/$v-1x1-$rep.json >/dev/null 2>&1
    $bin $LOAD_ARGS --connections 64 --depth 64 --duration 5 --warmup 1 --json $out/$v-64x64-$rep.json >/dev/null 2>&1
    $bin $LOAD_ARGS --connections 64 --depth 64 --duration 5 --warmup 1 --rate 20000 --json $out/$v-open20k-$rep.json >/dev/null 2>&1
  done
  if [ -n "$ETCD_RUNNER" ]; then
    (cd "$root" && DURATION=5 bash "$ETCD_RUNNER" 1 4096 > $out/etcd-$rep.jsonl 2>/dev/null)
  fi
done
python3 - "$out" "$RUNS" <<'PY'
import json, statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
reps = range(1, runs + 1)
def sp(xs, f):
    xs = sorted(xs); return f"{f(statistics.median(xs))} [{f(xs[0])}-{f(xs[-1])}]"
ms = lambda u: f"{u/1000:.2f}"; o = lambda x: f"{x:.0f}"; r = lambda x: f"{x:.2f}"
fs = [1e6/json.load(open(f"{d}/fsync-{k}.json"))["jobs"][0]["write"]["iops"] for k in reps]
print("raw 4k write+fdatasync us:", sp(fs, o))
import os
et = {}
for k in reps:
    p = f"{d}/etcd-{k}.jsonl"
    if not os.path.exists(p):
        continue
    for line in open(p):
        j = json.loads(line); et[(j["clients"], k)] = j
for shape, cl in [("1x1", 1), ("64x64", 4096), ("open20k", None)]:
    for v in ["old", "new"]:
        js = {k: json.load(open(f"{d}/{v}-{shape}-{k}.json")) for k in reps}
        line = f"{shape:8} {v}: ops/s {sp([j['ops_per_sec'] for j in js.values()], o)}  p50 ms {sp([j['write']['p50_us'] for j in js.values()], ms)}  p99 ms {sp([j['write']['p99_us'] for j in js.values()], ms)}"
        if cl and all((cl, k) in et for k in reps):
            line += f"  | ÷etcd ops {sp([js[k]['ops_per_sec']/et[(cl,k)]['ops_per_sec'] for k in reps], r)} p50 {sp([js[k]['write']['p50_us']/et[(cl,k)]['p50_us'] for k in reps], r)}"
        print(line)
for cl in (1, 4096) if et else ():
    print(f"etcd {cl} clients: ops/s {sp([et[(cl,k)]['ops_per_sec'] for k in reps], o)} p50 ms {sp([et[(cl,k)]['p50_us'] for k in reps], ms)}")
PY
