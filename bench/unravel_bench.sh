#!/usr/bin/env bash
# How long `ravel unravel` takes to diagnose a live system of 3 replicas with
# thousands of threads (the budget is 5 s, collection included).
#
# Runs `ravel demo --incident` with a high publish rate and a short message
# timeout, so that after the deadlock every timed-out message gives its
# replica one more stuck handler thread; once the replicas hold at least
# TARGET threads (default 3000) in all, it times `ravel unravel` (live: grab
# collection into a temp dir + analysis) RUNS times and prints the figures.
# There is no peer tool to compare with.
#
# Usage: bench/unravel_bench.sh [BUILD_DIR] [TARGET_THREADS] [RUNS]
set -uo pipefail
build=${1:-build}
target=${2:-3000}
runs=${3:-3}
bin="$build/ravel"
[ -x "$bin" ] || { echo "no $bin: build first (make)" >&2; exit 2; }
work=$(mktemp -d /tmp/ravel-unravel-bench-XXXXXX)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ]; then
    kill "$demo_pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$demo_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" demo --incident --quiet --duration 900 --rate 400 --msg-timeout 1000 --config-at 1 \
  --config-writes 20 --data "$work/demo" >"$work/demo.out" 2>&1 &
demo_pid=$!
line=
for _ in $(seq 1 300); do
  line=$(grep -m1 '^ravel demo: coord ' "$work/demo.out" 2>/dev/null) && break
  sleep 0.1
done
[ -n "$line" ] || { echo "the demo did not start: $(cat "$work/demo.out")" >&2; exit 2; }
coord=$(sed -n 's/^ravel demo: coord \([0-9.]*:[0-9]*\).*/\1/p' <<<"$line")
coord_admin=$(sed -n 's/.*(admin \([0-9]*\)).*/\1/p' <<<"$line")
queue_http=$(sed -n 's/.*queue \([0-9.]*\):[0-9]* (HTTP \([0-9]*\)).*/\1:\2/p' <<<"$line")
args=(--coord "$coord" --queue "$queue_http")
[ -n "$coord_admin" ] && args+=(--coord-admin "$coord_admin")

echo "waiting for the replicas to reach $target threads (demo --incident, 400 events/s, 1 s timeout)"
threads=0
for _ in $(seq 1 240); do
  threads=$("$bin" unravel "${args[@]}" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["threads"])' 2>/dev/null)
  threads=${threads:-0}
  [ "$threads" -ge "$target" ] && break
  sleep 1
done
echo "threads now: $threads"

best=
for i in $(seq 1 "$runs"); do
  t0=$(date +%s%N)
  "$bin" unravel "${args[@]}" >"$work/out.txt"; rc=$?
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  seen=$(sed -n 's/^(analysed \([0-9]*\) threads.*/\1/p' "$work/out.txt")
  analysis=$(sed -n 's/^(analysed .* in \([0-9]*\) ms, .*/\1/p' "$work/out.txt")
  cycles=$(grep -c '^DEADLOCK ' "$work/out.txt")
  blocked=$(sed -n 's/^VERDICT: UNHEALTHY: [0-9]* deadlocks\{0,1\}, \([0-9]*\) threads\{0,1\} blocked.*/\1/p' "$work/out.txt")
  printf 'run %d: %d threads seen, %d deadlock(s), %s blocked, exit %d, %d.%03d s (analysis %s ms)\n' \
    "$i" "$seen" "$cycles" "${blocked:-0}" "$rc" $((ms / 1000)) $((ms % 1000)) "${analysis:-?}"
  [ -z "$best" ] || [ "$ms" -lt "$best" ] && best=$ms
done
printf 'ravel unravel (live, 3 replicas): best %d.%03d s over %d runs, budget 5 s\n' \
  $((best / 1000)) $((best % 1000)) "$runs"
sed -n '/^DEADLOCK 1/,/^$/p' "$work/out.txt" | head -n 20
