#!/usr/bin/env bash
# The simulator's speed (issue 8's goals), next to its peer: the same system on
# real processes in real time.
#
#  1. The incident: 3 replicas, 30 s message timeouts, 10 virtual minutes
#     (scenarios/incident.sim run to the end with --no-stop-at-violation, and as
#     shipped, stopping at the first violation). Goal: under 1 s of wall time,
#     a virtual/wall ratio above 600.
#  2. Its peer: `ravel demo --incident` on real processes for DEMO_S seconds
#     (default 20) of real time: its virtual/wall ratio is at most 1.
#  3. A sweep: SEEDS seeds (default 100) of scenarios/all-fixes.sim, split over
#     the machine's cores, in seeds per minute; issue 8's goal is 1000 seeds
#     within a few minutes on 2 cores.
#
# Usage: bench/sim_bench.sh [BUILD_DIR] [SEEDS] [DEMO_S]
set -uo pipefail
build=${1:-build}
seeds=${2:-100}
demo_s=${3:-20}
bin="$build/ravel"
[ -x "$bin" ] || { echo "no $bin: build first (make)" >&2; exit 2; }
work=$(mktemp -d /tmp/ravel-sim-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }

# seed_line OUTPUT: "virtual V s, wall W s, ratio R" of the first seed line.
seed_line() { sed -n 's/^seed [0-9]*: \(virtual [0-9.]* s, wall [0-9.]* s, ratio [0-9]*\).*/\1/p' <<<"$1" | head -1; }

echo "== the incident in the simulator (3 replicas, 30 s timeouts, 600 virtual s) =="
for seed in 1 2 3; do
  out=$("$bin" sim incident --seed "$seed" --no-stop-at-violation 2>&1)
  echo "seed $seed, run to the end:       $(seed_line "$out")"
  out=$("$bin" sim incident --seed "$seed" 2>&1)
  echo "seed $seed, to the first violation: $(seed_line "$out")"
done

echo "== peer: the incident on real processes (ravel demo --incident, $demo_s s) =="
t0=$(now)
"$bin" demo --incident --quiet --no-report --duration "$demo_s" >"$work/demo.out" 2>&1
t1=$(now)
awk -v a="$t0" -v b="$t1" -v d="$demo_s" \
  'BEGIN { w = b - a; printf "demo: %d s of load took %.1f s of wall time (start, drain and diagnosis included): ratio %.2f\n", d, w, d / w }'

echo "== sweep: $seeds seeds of all-fixes over $(nproc) cores =="
cores=$(nproc)
per=$(( (seeds + cores - 1) / cores ))
t0=$(now)
pids=()
for c in $(seq 0 $((cores - 1))); do
  a=$(( 1 + c * per )); b=$(( a + per - 1 )); [ "$b" -gt "$seeds" ] && b=$seeds
  [ "$a" -gt "$b" ] && continue
  "$bin" sim all-fixes --seeds "$a..$b" >"$work/sweep.$c" 2>&1 &
  pids+=($!)
done
bad=0
for p in "${pids[@]}"; do wait "$p" || bad=1; done
t1=$(now)
passed=$(cat "$work"/sweep.* | grep -c '^  properties:')
virt=$(cat "$work"/sweep.* | sed -n 's/^seed [0-9]*: virtual \([0-9.]*\) s.*/\1/p' | awk '{s += $1} END {print s + 0}')
awk -v a="$t0" -v b="$t1" -v n="$seeds" -v p="$passed" -v v="$virt" \
  'BEGIN { w = b - a; printf "sweep: %d seeds (%d passed) in %.1f s wall: %.0f seeds per minute; %.0f virtual s in all, ratio %.0f\n", n, p, w, n * 60 / w, v, v / w }'
[ "$bad" = 0 ] || { echo "some seeds violated a property:"; grep -h -A2 VIOLATION "$work"/sweep.* | head -20; }
