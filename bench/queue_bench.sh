#!/usr/bin/env bash
# queue_bench.sh: `ravel queue` throughput in both durability modes, next to the
# nsqd v1.3.0 figures of issue 3 (bench/queue_bench.c says what is measured and how).
#
# Builds nothing: it expects an existing build of `ravel` and `queue_bench`.
#
#     cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C build ravel bench/queue_bench
#     bash bench/queue_bench.sh [BUILD_DIR] [queue_bench options...]
#
# BUILD_DIR (default ./build, relative to the repository root) must hold ravel and
# bench/queue_bench.  Further arguments go to queue_bench, e.g.
#     bash bench/queue_bench.sh build-qbench --messages 200000 --rounds 1
# Environment:
#     QUEUE_BENCH_PERF=DIR       also record each server with `perf record -g` into
#                                DIR/perf-always.data and DIR/perf-none.data
#     QUEUE_BENCH_TIMEOUT_S=N    bound on the whole benchmark run (default 1800)
#
# What it does, all on 127.0.0.1:
#   1. starts `ravel queue --sync always` and `ravel queue --sync none` on free
#      ports, each with its own data directory in one new temp dir;
#   2. runs queue_bench against both (each phase is bounded by queue_bench's
#      --phase-timeout-s, 120 s by default; the whole run by QUEUE_BENCH_TIMEOUT_S);
#   3. on exit, however it exits, stops the servers it started by pid and removes
#      the temp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=build
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  build=$1
  shift
fi
case $build in /*) ;; *) build=$root/$build ;; esac
ravel=$build/ravel
bench=$build/bench/queue_bench

readonly HOST=127.0.0.1
readonly READY_TIMEOUT_S=15        # how long a server may take to listen
readonly STOP_TIMEOUT_S=10         # how long a server may take to stop after SIGTERM
readonly PORT_MIN=20000 PORT_SPAN=30000
readonly RUN_TIMEOUT_S=${QUEUE_BENCH_TIMEOUT_S:-1800}

log() { printf 'queue_bench.sh: %s\n' "$*" >&2; }

for f in "$ravel" "$bench"; do
  if [ ! -x "$f" ]; then
    log "$f not found; build first:"
    log "  cmake -S . -B ${build#"$root"/} -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C ${build#"$root"/} ravel bench/queue_bench"
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/queue_bench.XXXXXX")
pids=()
perf_pids=()
port_always="" port_none=""   # set by start_server
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p i
  for p in "${perf_pids[@]}"; do
    kill -INT "$p" 2>/dev/null || true
  done
  for p in "${perf_pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for ((i = 0; i < STOP_TIMEOUT_S * 20; i++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$p" 2>/dev/null; then
      log "server pid $p did not stop within ${STOP_TIMEOUT_S}s of SIGTERM: killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taken=" "
# A port nobody listens on (and not handed out already in this run).
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((PORT_MIN + RANDOM % PORT_SPAN))
    [[ $taken == *" $p "* ]] && continue
    if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
      taken+="$p "
      echo "$p"
      return 0
    fi
  done
  log "no free port found"
  return 1
}

# start_server MODE: start `ravel queue --sync MODE`; sets port_MODE.
start_server() {
  local mode=$1 tcp http pid i
  tcp=$(free_port)
  http=$(free_port)
  "$ravel" queue --host "$HOST" --tcp-port "$tcp" --http-port "$http" --data "$tmp/$mode" \
    --sync "$mode" --log-level warn >"$tmp/$mode.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  # It prints "queue: NSQ TCP on ..." once it listens.
  for ((i = 0; i < READY_TIMEOUT_S * 20; i++)); do
    grep -q '^queue: NSQ TCP on' "$tmp/$mode.log" 2>/dev/null && break
    if ! kill -0 "$pid" 2>/dev/null; then
      log "ravel queue --sync $mode exited at start; its log:"
      tail -n 20 "$tmp/$mode.log" >&2 || true
      return 1
    fi
    sleep 0.05
  done
  if ! grep -q '^queue: NSQ TCP on' "$tmp/$mode.log"; then
    log "ravel queue --sync $mode did not listen within ${READY_TIMEOUT_S}s; its log:"
    tail -n 20 "$tmp/$mode.log" >&2 || true
    return 1
  fi
  if [ -n "${QUEUE_BENCH_PERF:-}" ]; then
    mkdir -p "$QUEUE_BENCH_PERF"
    perf record -g -o "$QUEUE_BENCH_PERF/perf-$mode.data" -p "$pid" >"$tmp/perf-$mode.log" 2>&1 &
    perf_pids+=($!)
    log "perf recording sync $mode (pid $pid) into $QUEUE_BENCH_PERF/perf-$mode.data"
  fi
  printf -v "port_$mode" '%s' "$tcp"
  log "ravel queue --sync $mode: pid $pid, NSQ TCP $HOST:$tcp, HTTP $HOST:$http, data $tmp/$mode"
}

start_server always
start_server none

log "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1))," \
  "data on $(df -PT "$tmp" | awk 'NR == 2 { print $1 " (" $2 ")" }'), kernel $(uname -r)"

rc=0
timeout "$RUN_TIMEOUT_S" "$bench" --host "$HOST" --port-always "$port_always" \
  --port-none "$port_none" "$@" || rc=$?
if [ "$rc" = 124 ]; then
  log "the benchmark did not finish within ${RUN_TIMEOUT_S}s"
fi
for mode in always none; do
  if grep -qv '^queue: NSQ TCP on' "$tmp/$mode.log"; then
    log "ravel queue --sync $mode logged:"
    grep -v '^queue: NSQ TCP on' "$tmp/$mode.log" | tail -n 20 >&2
  fi
  log "data left by sync $mode: $(du -sh "$tmp/$mode" | cut -f1)"
done
exit "$rc"
