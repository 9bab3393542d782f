#!/usr/bin/env bash
# The standard benchmark: a local 3-node cluster (every node fsyncing
# before it acknowledges) driven by ringraft-load over a matrix of shapes,
# written as a markdown table; with --with-etcd, the same shapes against a
# 3-member etcd cluster in the same run, and the ratios ringraft / etcd.
#
#   tools/bench.sh [--with-etcd] [--out FILE]
#   Env: DURATION (s per run, default 10), WARMUP (default 2), SHAPES
#   ("CONNxDEPTH ...", default "1x1 16x16 64x64"), SIZES (default "16 1024"),
#   RATIOS (read ratios, default "0 0.5 0.95").
set -euo pipefail
cd "$(dirname "$0")/.."
with_etcd=0
out=bench-results.md
while [ $# -gt 0 ]; do
  case "$1" in
    --with-etcd) with_etcd=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: tools/bench.sh [--with-etcd] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHAPES=${SHAPES:-"1x1 16x16 64x64"}
SIZES=${SIZES:-"16 1024"}
RATIOS=${RATIOS:-"0 0.5 0.95"}
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
cargo build --release --workspace -q
load=target/release/ringraft-load
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

run() { # name args...
  local name=$1; shift
  echo "== $name: $*" >&2
  "$load" --duration "$DURATION" --warmup "$WARMUP" --json "$dir/$name.json" "$@" >"$dir/$name.txt" 2>"$dir/$name.err" \
    || { echo "run $name failed:"; tail -5 "$dir/$name.err"; exit 1; } >&2
}

for shape in $SHAPES; do
  c=${shape%x*}; d=${shape#*x}
  for size in $SIZES; do
    for ratio in $RATIOS; do
      run "rr-$shape-$size-$ratio" --connections "$c" --depth "$d" --value-size "$size" --read-ratio "$ratio"
    done
  done
done
# Open loop at half of the peak write throughput (16 B values).
peak=$(python3 -c "
import json,glob
print(max(json.load(open(f))['ops_per_sec'] for f in glob.glob('$dir/rr-*-16-0.json')))")
half=$(python3 -c "print(int($peak/2))")
run "rr-open-16-0" --connections 64 --depth 64 --value-size 16 --read-ratio 0 --rate "$half"

if [ $with_etcd = 1 ]; then
  command -v etcdctl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client >/dev/null; }
  for size in $SIZES; do
    for ratio in $RATIOS; do
      clients=""
      for shape in $SHAPES; do clients="$clients $(( ${shape%x*} * ${shape#*x} ))"; done
      DURATION=$DURATION VALUE_SIZE=$size READ_RATIO=$ratio bash ../shared/peers/etcd/run.sh $clients \
        >"$dir/etcd-$size-$ratio.jsonl" 2>"$dir/etcd-$size-$ratio.err" \
        || { echo "etcd run failed:"; tail -5 "$dir/etcd-$size-$ratio.err"; exit 1; } >&2
    done
  done
fi

python3 - "$dir" "$out" "$SHAPES" "$SIZES" "$RATIOS" "$with_etcd" "$DURATION" <<'EOF'
import json, sys, os, platform, subprocess
d, out, shapes, sizes, ratios, with_etcd, duration = sys.argv[1:]
shapes, sizes, ratios = shapes.split(), sizes.split(), ratios.split()
etcd = {}
if with_etcd == "1":
    for size in sizes:
        for ratio in ratios:
            for line in open(f"{d}/etcd-{size}-{ratio}.jsonl"):
                j = json.loads(line)
                etcd[(j["clients"], size, ratio)] = j
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
rows = []
hdr = "| conns x depth | value | read ratio | ops/s | write p50 ms | write p99 ms | read p50 ms | read p99 ms | errors |"
sep = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
if etcd:
    hdr += " etcd ops/s | etcd p50 ms | ops/s ÷ etcd | p50 ÷ etcd |"
    sep += " --- | --- | --- | --- |"
def fmt(us): return f"{us/1000:.3f}"
for shape in shapes:
    c, dep = map(int, shape.split("x"))
    for size in sizes:
        for ratio in ratios:
            j = json.load(open(f"{d}/rr-{shape}-{size}-{ratio}.json"))
            r = f"| {shape} | {size} | {ratio} | {j['ops_per_sec']:.0f} | {fmt(j['write']['p50_us'])} | {fmt(j['write']['p99_us'])} | {fmt(j['read']['p50_us'])} | {fmt(j['read']['p99_us'])} | {j['errors']} |"
            e = etcd.get((c * dep, size, ratio))
            if etcd:
                if e:
                    p50 = j['write']['p50_us'] if float(ratio) < 0.5 else j['read']['p50_us']
                    r += f" {e['ops_per_sec']:.0f} | {fmt(e['p50_us'])} | {j['ops_per_sec']/max(e['ops_per_sec'],1):.2f} | {p50/max(e['p50_us'],1):.2f} |"
                else:
                    r += " | | | |"
            rows.append(r)
o = json.load(open(f"{d}/rr-open-16-0.json"))
with open(out, "w") as f:
    f.write(f"Machine: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}; local 3-node cluster, 2 shards x 8 groups, every node fsyncing; {duration} s per run.\n\n")
    f.write(hdr + "\n" + sep + "\n" + "\n".join(rows) + "\n\n")
    f.write(f"Open loop at half the peak 16 B write throughput ({o['settings'].split('rate=')[1].split(' ')[0]}): {o['ops_per_sec']:.0f} ops/s, write p50 {fmt(o['write']['p50_us'])} ms, p99 {fmt(o['write']['p99_us'])} ms, p99.9 {fmt(o['write']['p999_us'])} ms, errors {o['errors']}.\n")
print(open(out).read())
EOF
