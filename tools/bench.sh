#!/usr/bin/env bash
# The standard benchmark: a local 3-node cluster (every node fsyncing
# before it acknowledges) driven by ringraft-load over a matrix of shapes,
# written as a markdown table; with --with-etcd, the same shapes against a
# 3-member etcd cluster (Debian's etcd-server, every member fsyncing, a
# fresh cluster per run as ringraft's) driven by the same generator
# (ringraft-load --target etcd, to the leader's client URL) in the same
# run: the ratios ringraft / etcd, and etcd's members' CPU and context
# switches per operation (--server-pids). ETCD_RUNNER, if set, names a
# second etcd load script run as a cross-check with its own client
# (the JSON lines of ../shared/peers/etcd/run.sh).
# Then somebody else's client (tools/resp_bench.sh, unless --no-resp):
# redis-benchmark on ringraft's RESP port next to ringraft-load at the same
# shapes, and both on a Redis server with appendfsync always (the
# single-node durable ceiling), as ratios; appended to the same file.
#
#   tools/bench.sh [--with-etcd] [--no-resp] [--out FILE]
#   Env: DURATION (s per run, default 10), WARMUP (default 2), SHAPES
#   ("CONNxDEPTH ...", default "1x1 16x16 64x64"), SIZES (default "16 1024"),
#   RATIOS (read ratios, default "0 0.5 0.95"), RUNS (repetitions, default 3),
#   OPEN_SHARE (the open-loop run's rate, a share of the peak, default 0.35),
#   RESP_SHAPES (the redis-benchmark shapes, default "16x1 16x4 64x1").
#
# The machine is shared and noisy: every figure is the median of RUNS
# repetitions with [min-max], and each repetition measures its baselines
# next to ringraft (etcd with the same shapes; a raw 4 KiB write+fdatasync
# with fio on the same filesystem; a loopback TCP round trip with blocking
# sockets, ringraft-rtt, and one through the generator's client against a
# do-nothing responder), so ratios compare like with like. The 1 x 1 floor
# is two raw round trips (client-leader, leader-follower) plus one write +
# fdatasync.
set -euo pipefail
cd "$(dirname "$0")/.."
with_etcd=0
with_resp=1
out=bench-results.md
while [ $# -gt 0 ]; do
  case "$1" in
    --with-etcd) with_etcd=1 ;;
    --no-resp) with_resp=0 ;;
    --out) out=$2; shift ;;
    *) echo "usage: tools/bench.sh [--with-etcd] [--no-resp] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHAPES=${SHAPES:-"1x1 16x16 64x64"}
SIZES=${SIZES:-"16 1024"}
RATIOS=${RATIOS:-"0 0.5 0.95"}
RUNS=${RUNS:-3}
OPEN_SHARE=${OPEN_SHARE:-0.35}
need() { # command package
  command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}
need python3 python3
need fio fio
cargo build --release --workspace -q
load=target/release/ringraft-load
dir=$(mktemp -d)
# fio's file lives where the nodes keep their data (the temp directory).
fsync_dir=$(mktemp -d)
trap 'etcd_down; rm -rf "$dir" "$fsync_dir"' EXIT

run() { # name args...
  local name=$1; shift
  echo "== $name: $*" >&2
  "$load" --duration "$DURATION" --warmup "$WARMUP" --json "$dir/$name.json" "$@" >"$dir/$name.txt" 2>"$dir/$name.err" \
    || { echo "run $name failed:"; tail -5 "$dir/$name.err"; exit 1; } >&2
}

fsync_baseline() { # rep: 4 KiB sequential writes, each followed by fdatasync
  fio --name=fsync --directory="$fsync_dir" --rw=write --bs=4k --size=16M --runtime=4 \
    --direct=1 --ioengine=psync --fdatasync=1 --output-format=json >"$dir/fsync-$1.json" 2>/dev/null
  rm -f "$fsync_dir"/*
}

tcp_baseline() { # rep: one loopback round trip with plain blocking sockets
  # (ringraft-rtt), then through the generator's client against a responder
  # that does nothing (--calibrate), one request at a time
  target/release/ringraft-rtt --json "$dir/rtt-$1.json" >/dev/null 2>"$dir/rtt-$1.err" \
    || { echo "raw TCP baseline failed:"; tail -5 "$dir/rtt-$1.err"; exit 1; } >&2
  "$load" --calibrate --connections 1 --depth 1 --duration 3 --warmup 1 \
    --json "$dir/tcp-$1.json" >/dev/null 2>"$dir/tcp-$1.err" \
    || { echo "client round-trip baseline failed:"; tail -5 "$dir/tcp-$1.err"; exit 1; } >&2
}

etcd_pids=()
etcd_data=""
etcd_down() { # [failed]: then the members' logs' tails first
  if [ -n "${1:-}" ] && [ -n "$etcd_data" ]; then
    for f in "$etcd_data"/e*.log; do echo "== $f"; tail -5 "$f"; done >&2
  fi
  for p in "${etcd_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${etcd_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  etcd_pids=()
  [ -z "$etcd_data" ] || rm -rf "$etcd_data"
  etcd_data=""
}
etcd_up() { # a fresh 3-member cluster on loopback; sets etcd_leader
  etcd_data=$(mktemp -d)
  local cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$etcd_data/e$i" \
      --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379" \
      --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
      --initial-cluster "$cluster" --initial-cluster-state new --logger zap --log-level error \
      >"$etcd_data/e$i.log" 2>&1 &
    etcd_pids+=($!)
  done
  local eps=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
  etcd_leader=""
  for _ in $(seq 100); do
    # etcdctl fails while a member is not up yet: asked again.
    etcd_leader=$(ETCDCTL_API=3 etcdctl --endpoints=$eps endpoint status 2>/dev/null \
      | awk -F', ' '$5=="true"{print $1}' || true)
    [ -n "$etcd_leader" ] && break
    sleep 0.1
  done
  [ -n "$etcd_leader" ] || { echo "etcd: no leader within 10 s" >&2; etcd_down failed; exit 1; }
}
if [ $with_etcd = 1 ]; then
  need etcd etcd-server
  need etcdctl etcd-client
  # Debian's package starts a member of its own on the default ports.
  (systemctl stop etcd || service etcd stop) >/dev/null 2>&1 || true
  ETCD_RUNNER=${ETCD_RUNNER:-}
  if [ -n "$ETCD_RUNNER" ]; then
    [ -f "$ETCD_RUNNER" ] || { echo "ETCD_RUNNER=$ETCD_RUNNER: no such file" >&2; exit 2; }
    ETCD_RUNNER=$(cd "$(dirname "$ETCD_RUNNER")" && pwd)/$(basename "$ETCD_RUNNER")
  fi
fi
run_etcd() { # name args...: one run against a fresh etcd cluster
  local name=$1; shift
  etcd_up
  run "$name" --target etcd --cluster "http://$etcd_leader" \
    --server-pids "$(IFS=,; echo "${etcd_pids[*]}")" "$@"
  etcd_down
}
for rep in $(seq "$RUNS"); do
  fsync_baseline "$rep"
  tcp_baseline "$rep"
  for shape in $SHAPES; do
    c=${shape%x*}; d=${shape#*x}
    for size in $SIZES; do
      for ratio in $RATIOS; do
        shape_args=(--connections "$c" --depth "$d" --value-size "$size" --read-ratio "$ratio")
        run "rr-$shape-$size-$ratio-$rep" "${shape_args[@]}"
        # etcd right after, at the same shape: the two runs see the same
        # moment of this shared machine.
        if [ $with_etcd = 1 ]; then
          run_etcd "etcd-$shape-$size-$ratio-$rep" "${shape_args[@]}"
        fi
      done
    done
  done
  if [ $with_etcd = 1 ] && [ -n "${ETCD_RUNNER:-}" ]; then
    clients=""
    for shape in $SHAPES; do clients="$clients $(( ${shape%x*} * ${shape#*x} ))"; done
    for size in $SIZES; do
      for ratio in $RATIOS; do
        echo "== etcd cross-check (its own client) $size B, read ratio $ratio, clients$clients (repetition $rep)" >&2
        DURATION=$DURATION VALUE_SIZE=$size READ_RATIO=$ratio bash "$ETCD_RUNNER" $clients \
          >"$dir/etcd-own-$size-$ratio-$rep.jsonl" 2>"$dir/etcd-own-$size-$ratio-$rep.err" \
          || { echo "etcd cross-check failed:"; tail -5 "$dir/etcd-own-$size-$ratio-$rep.err"; exit 1; } >&2
      done
    done
  fi
done
# Open loop at OPEN_SHARE (default 0.35, issue #22's target: p99 <= 5 ms
# there) of the median peak write throughput (16 B values).
open_rate=$(python3 -c "
import json, glob, statistics
peaks = [max(json.load(open(f))['ops_per_sec'] for f in glob.glob('$dir/rr-*-16-0-%d.json' % r)) for r in range(1, $RUNS + 1)]
print(int(statistics.median(peaks) * $OPEN_SHARE))")
for rep in $(seq "$RUNS"); do
  run "rr-open-16-0-$rep" --connections 64 --depth 64 --value-size 16 --read-ratio 0 --rate "$open_rate"
done

python3 tools/bench_table.py "$dir" "$out" "$SHAPES" "$SIZES" "$RATIOS" "$with_etcd" "$DURATION" "$RUNS" "$open_rate" "$OPEN_SHARE"
if [ $with_resp = 1 ]; then
  # Its own shapes (RESP_SHAPES): a RESP connection carries out its
  # pipeline one command at a time, so deep pipelines say little there.
  SHAPES=${RESP_SHAPES:-"16x1 16x4 64x1"} RUNS=$RUNS tools/resp_bench.sh --out "$dir/resp.md"
  { echo; echo "## Somebody else's client: redis-benchmark (tools/resp_bench.sh)"; echo; cat "$dir/resp.md"; } >>"$out"
fi
