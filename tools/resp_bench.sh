#!/usr/bin/env bash
# Issue #20's benchmark with somebody else's client: in the same run,
# writes (SET, 16-byte values) at each shape (connections x pipeline),
#   - on ringraft's local 3-node cluster (ringraft-load --serve-only):
#     redis-benchmark on one node's RESP port, ringraft-load --target resp
#     on the same port, and ringraft-load through the native client;
#   - on a Redis server with appendonly yes and appendfsync always (the
#     single-node durable ceiling): redis-benchmark and ringraft-load
#     --target resp;
# and the ratios: do the two generators agree (on Redis, and on ringraft),
# what the RESP hop costs against the native client, and ringraft over
# durable Redis. Next to each speed on ringraft, the CPU its nodes spent
# per operation (µs, /proc).
#
#   tools/resp_bench.sh [--out FILE]
#   Env: SHAPES ("CONNECTIONSxPIPELINE ...", default "16x1 16x4 64x1"),
#   REQUESTS (writes per run on ringraft, default 100000), REDIS_REQUESTS
#   (writes per run on Redis, default 500000), RUNS (default 3).
#
# Both generators make the same number of writes per run (redis-benchmark
# -n, ringraft-load --ops), connections and the first write included, so
# neither is favoured by a shorter or longer window.
#
# The machine is shared and noisy: each figure is the median of RUNS
# repetitions with [min-max]; every ratio is taken within a repetition.
# redis-benchmark without -r writes one key ("key:__rand_int__"), so
# every ringraft-load run here writes one key too (--keys 1), and the
# cluster has one range: both load one range, one leader. (Keys spread over the ranges cost ringraft more
# CPU per write at these rates: smaller batches per group.)
# ringraft's RESP connection carries out its commands one at a time
# (Redis's order), so redis-benchmark's -P N on it is set against the
# native client's --depth 1 and --depth N both.
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
REQUESTS=${REQUESTS:-100000}
REDIS_REQUESTS=${REDIS_REQUESTS:-500000}
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
bench_rps() { # port connections pipeline requests
  redis-benchmark -p "$1" -t set -n "$4" -c "$2" -P "$3" -d 16 -q 2>/dev/null \
    | tr '\r' '\n' | awk '/^SET: .*requests per second/ { print $2 }' | tail -1
}

# One range: redis-benchmark's key ("key:__rand_int__") and ringraft-load's
# ("key000000000000") then have the same leader. With the local cluster's
# 8 ranges they fell in different ranges, led by different nodes, and one
# generator's writes took an extra hop from the RESP node to the leader
# that the other's did not.
"$load" --serve-only --ranges 1 >"$dir/serve.out" 2>&1 &
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
# One ringraft-load run: its ops/s and the ringraft nodes' CPU µs per op
# (no warmup: the nodes' CPU over the whole run is set against every
# operation of it, as for redis-benchmark).
load_run() { # rep shape name args...
  local rep=$1 shape=$2 name=$3 before after
  shift 3
  before=$(node_cpu)
  "$load" "$@" --keys 1 --ops "$REQUESTS" --warmup 0 --json "$dir/l.json" >/dev/null 2>"$dir/l.err" \
    || { tail -5 "$dir/l.err" >&2; exit 1; }
  after=$(node_cpu)
  python3 "$dir/row.py" "$dir/l.json" "$rep" "$shape" "$name" "$before" "$after" >>"$dir/rows"
}
cat >"$dir/row.py" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ops, total = d["ops_per_sec"], d["ops"]
before, after = sys.argv[5], sys.argv[6]
us = f"{(float(after) - float(before)) * 1e6 / total:.1f}" if total and before != "-" else "-"
print(sys.argv[2], sys.argv[3], sys.argv[4], f"{ops:.0f}", us)
EOF
for rep in $(seq 1 "$RUNS"); do
  for shape in $SHAPES; do
    c=${shape%x*}
    p=${shape#*x}
    echo "== run $rep, $c connections x pipeline $p" >&2
    before=$(node_cpu)
    rps=$(bench_rps "$resp_port" "$c" "$p" "$REQUESTS")
    after=$(node_cpu)
    us=$(awk -v a="$after" -v b="$before" -v n="$REQUESTS" 'BEGIN { printf "%.1f", (a - b) * 1e6 / n }')
    echo "$rep $shape redis-benchmark@ringraft $rps $us" >>"$dir/rows"
    load_run "$rep" "$shape" ringraft-load-resp@ringraft --target resp \
      --cluster "127.0.0.1:$resp_port" --connections "$c" --depth "$p"
    for depth in $(printf '%s\n' 1 "$p" | sort -un); do
      load_run "$rep" "$shape" "ringraft-load-native-d$depth@ringraft" --cluster "$cluster" \
        --connections "$c" --depth "$depth"
    done
    rps=$(bench_rps "$redis_port" "$c" "$p" "$REDIS_REQUESTS")
    echo "$rep $shape redis-benchmark@redis $rps -" >>"$dir/rows"
    "$load" --target resp --cluster "127.0.0.1:$redis_port" --connections "$c" --depth "$p" --keys 1 \
      --ops "$REDIS_REQUESTS" --warmup 0 --json "$dir/r.json" >/dev/null 2>"$dir/r.err" \
      || { tail -5 "$dir/r.err" >&2; exit 1; }
    python3 "$dir/row.py" "$dir/r.json" "$rep" "$shape" ringraft-load-resp@redis - - >>"$dir/rows"
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
def mmm(xs, fmt="{:,.0f}"):
    xs = sorted(xs)
    f = lambda x: fmt.format(x)
    return f"{f(statistics.median(xs))} [{f(xs[0])}-{f(xs[-1])}]" if xs else "-"
def ratio(a, b, shape):
    xs = []
    for rep, (x, _) in by[(shape, a)].items():
        y = by[(shape, b)].get(rep)
        if y and y[0]:
            xs.append(x / y[0])
    return mmm(xs, "{:.2f}")
shapes = []
for (shape, _) in by:
    if shape not in shapes:
        shapes.append(shape)
lines = [f"SET of one key, 16-byte values, 3 local nodes (redis-benchmark and ringraft-load --target resp on one node's RESP port, ringraft-load native on the client ports); median [min-max] of {runs} runs; ratios within a run.", "",
         "| connections x pipeline | driver @ system | ops/s | ringraft node CPU µs/op |", "|---|---|---|---|"]
for shape in shapes:
    for (s, driver) in by:
        if s != shape:
            continue
        v = by[(shape, driver)]
        us = [float(u) for (_, u) in v.values() if u != "-"]
        lines.append(f"| {shape} | {driver} | {mmm([o for (o, _) in v.values()])} | {mmm(us, '{:.0f}') if us else '-'} |")
lines += ["", "| connections x pipeline | redis-benchmark / ringraft-load --target resp, on Redis | the same, on ringraft | redis-benchmark on ringraft / ringraft-load native, depth 1 | the same, depth P | ringraft / durable Redis (redis-benchmark) |", "|---|---|---|---|---|---|"]
for shape in shapes:
    p = shape.split("x")[1]
    lines.append(" | ".join([f"| {shape}",
        ratio("redis-benchmark@redis", "ringraft-load-resp@redis", shape),
        ratio("redis-benchmark@ringraft", "ringraft-load-resp@ringraft", shape),
        ratio("redis-benchmark@ringraft", "ringraft-load-native-d1@ringraft", shape),
        ratio("redis-benchmark@ringraft", f"ringraft-load-native-d{p}@ringraft", shape),
        ratio("redis-benchmark@ringraft", "redis-benchmark@redis", shape)]) + " |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
