#!/usr/bin/env bash
# The cost of rt's runtime dispatch (see bench/rt_dispatch_bench.c): builds the
# benchmark twice from the same sources, with the simulator dispatch and with
# it compiled out (-DRAVEL_NO_SIM_DISPATCH: rv__sim_active() is constant
# false, i.e. rt as it was before the simulator), then alternates runs and
# prints the best figure of each.  On a busy machine compare the minima only.
# Usage: bench/rt_dispatch_bench.sh [ROUNDS] [ITERATIONS]
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-8}
iters=${2:-3000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for v in dispatch nodispatch; do
  def=""
  [ "$v" = nodispatch ] && def="-DRAVEL_NO_SIM_DISPATCH"
  ${CC:-cc} -O2 -std=gnu17 -I"$src/src" $def -o "$tmp/$v" "$src/bench/rt_dispatch_bench.c" \
    "$src"/src/rt/*.c "$src/src/obs/registry.c" "$src/src/obs/waitgraph.c" "$src/src/obs/log.c" \
    -lpthread
done
for ((i = 0; i < rounds; i++)); do
  for v in dispatch nodispatch; do "$tmp/$v" "$iters" | sed "s/^/$v /"; done
done | awk '{ key = $1 " " $2; v = $3 + 0;
              if (!(key in best) || v < best[key]) best[key] = v }
            END { for (k in best) printf "%-40s %7.2f ns (best of runs)\n", k, best[k] }' | sort
