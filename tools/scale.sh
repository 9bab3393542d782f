#!/usr/bin/env bash
# Issue #17's scaling benchmark: the CPU of all node processes per
# acknowledged write (µs, from /proc) at 3, 6 and 9 nodes under the same
# offered load, with ranges of 3 replicas (RF 3, placed on a subset of the
# nodes) and, in the same run, with every range on every node (RF = nodes:
# what the cluster was before ranges were placed). With RF 3 it should stay
# flat as nodes are added (the issue's bar: within ±15% of the 3-node
# figure); with every range everywhere it grows with the node count (up
# to 7 nodes: REPLICATION_FACTOR_MAX).
#
#   tools/scale.sh [--out FILE]
#   Env: NODES (default "3 6 9"), RATE (writes/s offered, default 2000),
#   RANGES (default 12), DURATION (s per run, default 10), WARMUP
#   (default 2), RUNS (repetitions, default 3).
#
# The machine is shared and noisy: each figure is the median of RUNS
# repetitions with [min-max]; the repetitions interleave the shapes, so a
# noisy minute hits all of them; every ratio is to the 3-node figure of
# the same placement measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=scale-results.md
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    *) echo "usage: tools/scale.sh [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
NODES=${NODES:-"3 6 9"}
RATE=${RATE:-2000}
RANGES=${RANGES:-12}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RUNS=${RUNS:-3}
command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; }
cargo build --release --workspace -q
load=target/release/ringraft-load
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for rep in $(seq 1 "$RUNS"); do
  for n in $NODES; do
    for placement in rf3 all; do
      rf=3
      if [ "$placement" = all ]; then
        # Ranges of more than REPLICATION_FACTOR_MAX (7) replicas are
        # refused: no "everywhere" figure beyond 7 nodes.
        [ "$n" -gt 7 ] && continue
        rf=$n
      fi
      name="$placement-$n-$rep"
      echo "== $name: $n nodes, ranges of $rf replicas, $RATE writes/s" >&2
      "$load" --nodes "$n" --replication-factor "$rf" --groups "$RANGES" --rate "$RATE" \
        --connections 16 --depth 4 --duration "$DURATION" --warmup "$WARMUP" \
        --json "$dir/$name.json" >"$dir/$name.txt" 2>"$dir/$name.err" \
        || { echo "run $name failed:"; tail -5 "$dir/$name.err"; exit 1; } >&2
    done
  done
done
python3 tools/scale_table.py "$dir" "$out" "$NODES" "$RUNS" "$RATE" "$RANGES" "$DURATION" \
  || { trap - EXIT; echo "the runs are kept in $dir" >&2; exit 1; }
cat "$out"
