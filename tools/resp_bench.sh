#!/usr/bin/env bash
# Issue #20's benchmark with somebody else's client: in the same run, on
# the same local 3-node cluster (ringraft-load --serve-only),
#   - redis-benchmark against ringraft's RESP port,
#   - ringraft-load (the native client) at the same shape,
#   - redis-benchmark against a Redis server with appendonly yes and
#     appendfsync always: the single-node durable ceiling,
# and the ratios: redis-benchmark over ringraft-load on ringraft (do the
# two generators agree?), and ringraft over durable Redis. Writes only
# (SET, 16-byte values) unless TESTS says otherwise. Next to each speed,
# the CPU the ringraft nodes spent per operation (µs, /proc).
#
#   tools/resp_bench.sh [--out FILE]
#   Env: SHAPES ("CONNECTIONSxPIPELINE ...", default "16x1 16x4 64x1"),
#   REQUESTS (per redis-benchmark run, default 50000), DURATION (s per
#   ringraft-load run, default 5), RUNS (default 3).
#
# The machine is shared and noisy: each figure is the median of RUNS
# repetitions with [min-max]; every ratio is taken within a repetition.
# A RESP connection carries out its commands one at a time (Redis's
# order), so redis-benchmark's -P N is set against ringraft-load's
# --depth 1 and --depth N both.
set -euo pipefail
cd "$(dirname "$0")/.."
out=resp-bench-results.md
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    *) echo "usage: tools/resp_bench.sh [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
SHAPES=${SHAPES:-"16x1 16x4 64x1"}
REQUESTS=${REQUESTS:-50000}
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
need() { # command package
  command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}
need redis-benchmark redis-tools
need redis-server redis-server
need python3 python3
cargo build --release --workspace -q
load=target/release/ringraft-load
dir=$(mktemp -d)
serve_pid=""
redis_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill -INT "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# CPU seconds (user + system) of the ringraft node processes so far.
node_cpu() {
  local t=0 hz
  hz=$(getconf CLK_TCK)
  for p in $(pgrep -f "ringraft node" || true); do
    t=$(awk -v t="$t" '{ print t + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo "$t")
  done
  awk -v t="$t" -v hz="$hz" 'BEGIN { printf "%.3f", t / hz }'
}

# rps of one redis-benchmark SET run.
bench_rps() { # port connections pipeline
  redis-benchmark -p "$1" -t set -n "$REQUESTS" -c "$2" -P "$3" -d 16 -q 2>/dev/null \
    | tr '\r' '\n' | awk '/^SET: .*requests per second/ { print $2 }' | tail -1
}

"$load" --serve-only >"$dir/serve.out" 2>&1 &
serve_pid=$!
for _ in $(seq 1 600); do
  grep -q "serving until Ctrl-C" "$dir/serve.out" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$dir/serve.out" >&2; exit 1; }
  sleep 0.1
done
cluster=$(sed -n 's/^client addresses (--cluster): //p' "$dir/serve.out")
resp_port=$(sed -n 's/.*redis-cli -h [^ ]* -p \([0-9]*\) ping/\1/p' "$dir/serve.out")
[ -n "$cluster" ] && [ -n "$resp_port" ] || { cat "$dir/serve.out" >&2; exit 1; }

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$dir/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" --appendonly yes \
  --appendfsync always --save "" --daemonize no >"$dir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "rep shape driver ops_per_sec node_us_per_op" >"$dir/rows"
for rep in $(seq 1 "$RUNS"); do
  for shape in $SHAPES; do
    c=${shape%x*}
    p=${shape#*x}
    echo "== run $rep, $c connections x pipeline $p" >&2
    before=$(node_cpu)
    rps=$(bench_rps "$resp_port" "$c" "$p")
    after=$(node_cpu)
    us=$(awk -v a="$after" -v b="$before" -v n="$REQUESTS" 'BEGIN { printf "%.1f", (a - b) * 1e6 / n }')
    echo "$rep $shape redis-benchmark $rps $us" >>"$dir/rows"
    for depth in $(printf '%s\n' 1 "$p" | sort -un); do
      name="ringraft-load-d$depth"
      # No warmup: the nodes' CPU over the whole run is set against every
      # operation of it, as for redis-benchmark.
      before=$(node_cpu)
      "$load" --cluster "$cluster" --connections "$c" --depth "$depth" --duration "$DURATION" \
        --warmup 0 --json "$dir/l.json" >/dev/null 2>"$dir/l.err" \
        || { tail -5 "$dir/l.err" >&2; exit 1; }
      after=$(node_cpu)
      python3 - "$dir/l.json" "$rep" "$shape" "$name" "$before" "$after" >>"$dir/rows" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ops, total = d["ops_per_sec"], d["ops"]
us = (float(sys.argv[6]) - float(sys.argv[5])) * 1e6 / total if total else 0
print(sys.argv[2], sys.argv[3], sys.argv[4], f"{ops:.0f}", f"{us:.1f}")
EOF
    done
    rps=$(bench_rps "$redis_port" "$c" "$p")
    echo "$rep $shape redis-server-durable $rps -" >>"$dir/rows"
  done
done

python3 - "$dir/rows" "$out" "$RUNS" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
out, runs = sys.argv[2], int(sys.argv[3])
by = defaultdict(dict)  # (shape, driver) -> rep -> (ops, us)
for rep, shape, driver, ops, us in rows:
    by[(shape, driver)][rep] = (float(ops), us)
def mmm(xs):
    xs = sorted(xs)
    return f"{statistics.median(xs):,.0f} [{xs[0]:,.0f}-{xs[-1]:,.0f}]" if xs else "-"
def ratio(a, b, shape):
    xs = []
    for rep, (x, _) in by[(shape, a)].items():
        y = by[(shape, b)].get(rep)
        if y and y[0]:
            xs.append(x / y[0])
    xs.sort()
    return f"{statistics.median(xs):.2f} [{xs[0]:.2f}-{xs[-1]:.2f}]" if xs else "-"
shapes = []
for (shape, _) in by:
    if shape not in shapes:
        shapes.append(shape)
lines = [f"SET, 16-byte values, 3 local nodes; median [min-max] of {runs} runs; ratios within a run.", "",
         "| connections x pipeline | driver | ops/s | ringraft node CPU µs/op |", "|---|---|---|---|"]
for shape in shapes:
    for driver in ["redis-benchmark", "ringraft-load-d1", *sorted({d for (s, d) in by if s == shape and d.startswith("ringraft-load-d") and d != "ringraft-load-d1"}), "redis-server-durable"]:
        if (shape, driver) not in by:
            continue
        v = by[(shape, driver)]
        us = [float(u) for (_, u) in v.values() if u != "-"]
        lines.append(f"| {shape} | {driver} | {mmm([o for (o, _) in v.values()])} | {mmm(us) if us else '-'} |")
lines += ["", "| connections x pipeline | redis-benchmark / ringraft-load --depth 1 | redis-benchmark / ringraft-load --depth P | ringraft (redis-benchmark) / durable Redis |", "|---|---|---|---|"]
for shape in shapes:
    p = shape.split("x")[1]
    deep = f"ringraft-load-d{p}" if p != "1" else "ringraft-load-d1"
    lines.append(f"| {shape} | {ratio('redis-benchmark', 'ringraft-load-d1', shape)} | {ratio('redis-benchmark', deep, shape)} | {ratio('redis-benchmark', 'redis-server-durable', shape)} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
